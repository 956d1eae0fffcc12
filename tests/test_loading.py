"""Loading: offload modes (GPU faked where only a GPU can answer), missing weights."""

from __future__ import annotations

import shutil

import pytest
import torch

from allegro.errors import ModelUnavailableError, UnsupportedSetupError
from allegro.loading import (
    PipelineCache,
    PipelineSpec,
    apply_offload,
    choose_offload,
    fetch_source,
    load_pipeline,
)
from allegro.request import NativeSize

OFFICIAL = NativeSize(88, 720, 1280)
GB = 1024**3


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_gpu_offload_modes_are_a_clear_error_without_a_gpu(mode):
    with pytest.raises(UnsupportedSetupError, match="no CUDA GPU"):
        choose_offload(mode, "cpu", "fp32", OFFICIAL)


def test_auto_offload_on_cpu_means_none():
    choice = choose_offload("auto", "cpu", "fp32", OFFICIAL)
    assert choice.mode == "none" and "no GPU" in choice.reason


def test_unknown_offload_mode():
    with pytest.raises(UnsupportedSetupError, match="choose one of auto, none"):
        choose_offload("turbo", "cpu", "fp32", OFFICIAL)


@pytest.mark.parametrize(
    ("free_gb", "expected"), [(80, "none"), (24, "model"), (14, "group"), (6, "sequential")]
)
def test_auto_offload_picks_from_free_gpu_memory(monkeypatch, free_gb, expected):
    """Only the GPU's answer is faked: torch.cuda.mem_get_info."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free_gb * GB, 80 * GB))
    choice = choose_offload("auto", "cuda", "bf16", OFFICIAL)
    assert choice.mode == expected
    assert "GB" in choice.reason  # says why, with the numbers


def test_model_and_sequential_offload_use_diffusers_methods(tiny_model, monkeypatch):
    """These two need an accelerator to run at all, so only the calls are recorded."""
    from diffusers import AllegroPipeline

    calls = []
    for name in ("enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        monkeypatch.setattr(
            AllegroPipeline, name, lambda self, *a, _name=name, **k: calls.append((_name, k))
        )
    pipe = AllegroPipeline.from_pretrained(tiny_model)
    apply_offload(pipe, "model", "cuda")
    apply_offload(pipe, "sequential", "cuda")
    assert calls == [
        ("enable_model_cpu_offload", {"device": "cuda"}),
        ("enable_sequential_cpu_offload", {"device": "cuda"}),
    ]


def test_group_offload_really_runs(tiny_model):
    """Group offloading works with the CPU as the onload device too, so the real hooks are
    installed and a generation runs through them (CUDA streams are the only GPU part)."""
    from diffusers import AllegroPipeline
    from diffusers.hooks import HookRegistry

    pipe = AllegroPipeline.from_pretrained(tiny_model)
    pipe.vae.enable_tiling()
    apply_offload(pipe, "group", "cpu")
    transformer_block = pipe.transformer.transformer_blocks[0]  # block level
    t5_layer = pipe.text_encoder.encoder.block[0].layer[0].SelfAttention.q  # leaf level
    for module in (transformer_block, t5_layer):
        registry = HookRegistry.check_if_exists_or_initialize(module)
        assert "group_offloading" in registry.hooks
    frames = pipe("a lighthouse", num_inference_steps=1, output_type="np").frames
    assert frames.shape == (1, 24, 160, 160, 3)


def test_missing_hub_weights_explain_what_to_do(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as caught:
        fetch_source("rhymes-ai/Allegro", ["model_index.json"])
    message = str(caught.value)
    assert "not (fully) in the Hugging Face cache" in message
    assert "hf download rhymes-ai/Allegro --exclude '*.bin'" in message
    assert "--model /path/to/folder" in message


def test_missing_local_folder_is_explained():
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        fetch_source("./no/such/folder", [])


def test_partly_copied_checkpoint_is_explained(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="not a complete Allegro checkpoint"):
        load_pipeline(PipelineSpec(model=str(broken)))


def test_gpu_mode_on_cpu_fails_before_loading(tiny_model):
    cache = PipelineCache()
    with pytest.raises(UnsupportedSetupError):
        cache.get(PipelineSpec(model=str(tiny_model), offload="sequential"))
    assert cache.load_count == 0


def test_download_progress_becomes_events():
    """snapshot_download reports bytes through the tqdm class it is given."""
    from allegro.events import Stage
    from allegro.loading import _progress_tqdm

    events = []
    bar = _progress_tqdm(events.append, started=0.0)(total=4_000_000_000, unit="B")
    bar.update(1_000_000_000)
    bar.close()
    network = _progress_tqdm(events.append, started=0.0)(
        desc="Downloading bytes", total=9_000_000_000, unit="B"
    )
    network.update(5)  # network bytes: a moving total, not shown
    network.close()
    (event,) = events
    assert event.stage == Stage.DOWNLOADING
    assert (event.step, event.total) == (1_000_000_000, 4_000_000_000)
    assert "1.00 of 4.00 GB" in event.message


def test_offline_mode_uses_the_hugging_face_cache(tmp_path, monkeypatch, no_network):
    """With HF_HUB_OFFLINE=1 a cached snapshot is used as is, without any request."""
    cache = tmp_path / "hub"
    repo = cache / "models--rhymes-ai--Allegro"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    (snapshot / "vae").mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert fetch_source("rhymes-ai/Allegro", ["model_index.json"]) == snapshot


def test_auto_offload_counts_the_vae_precision(monkeypatch):
    """The fp32 VAE's tiled decode sets the floor of every mode: at 11 GiB free nothing fits
    with it, while a bf16 VAE lets group offload fit."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (11 * GB, 80 * GB))
    fp32 = choose_offload("auto", "cuda", "bf16", OFFICIAL, vae_precision="fp32")
    bf16 = choose_offload("auto", "cuda", "bf16", OFFICIAL, vae_precision="bf16")
    assert fp32.mode == "sequential" and "may still run out of GPU memory" in fp32.reason
    assert bf16.mode == "group" and "may still run out" not in bf16.reason


def test_hub_file_patterns_fetch_only_what_is_used():
    """The filter snapshot_download applies: safetensors only, never the .bin duplicates,
    and for a transformer source nothing but the transformer (even from a whole pipeline)."""
    from huggingface_hub.utils import filter_repo_objects

    from allegro.loading import _NEVER_FETCH, _PIPELINE_FILES, _TRANSFORMER_FILES

    repo = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model-00001-of-00004.safetensors",
        "text_encoder/pytorch_model-00001-of-00004.bin",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "README.md",
    ]

    def fetched(patterns):
        return set(filter_repo_objects(repo, allow_patterns=patterns, ignore_patterns=_NEVER_FETCH))

    assert fetched(_PIPELINE_FILES) == set(repo) - {
        "text_encoder/pytorch_model-00001-of-00004.bin",
        "README.md",
    }
    assert fetched(_TRANSFORMER_FILES) == {
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
    }


def test_group_offload_pins_the_transformer_but_not_t5(tiny_model, monkeypatch):
    """With a CUDA stream diffusers pins a copy of every offloaded weight (0.42.1
    hooks/group_offloading.py:172-194; rounded up to a power of two by torch's host
    allocator): the transformer, prefetched every step, keeps its stream; T5, run once per
    prompt, gets none. Only the calls that need a GPU are recorded."""
    import diffusers.hooks
    from diffusers import AllegroPipeline

    pipe = AllegroPipeline.from_pretrained(tiny_model)
    calls = {}
    monkeypatch.setattr(
        pipe.transformer, "enable_group_offload", lambda **k: calls.setdefault("transformer", k)
    )
    monkeypatch.setattr(
        diffusers.hooks, "apply_group_offloading", lambda m, **k: calls.setdefault("t5", k)
    )
    monkeypatch.setattr(pipe.vae, "to", lambda *a, **k: None)
    apply_offload(pipe, "group", "cuda")
    assert calls["transformer"]["use_stream"] is True
    assert calls["t5"]["use_stream"] is False


def test_auto_offload_counts_the_host_ram_group_offload_pins(tiny_model, monkeypatch):
    """A 16 GB card in a machine with little free RAM: group offload would pin more than is
    available, so auto picks sequential and says why. Only the GPU's answer is faked."""
    import psutil
    from diffusers import AllegroPipeline

    from allegro import costs
    from allegro.loading import group_offload_host_bytes

    pipe = AllegroPipeline.from_pretrained(tiny_model)
    tensors = [*pipe.transformer.parameters(), *pipe.transformer.buffers()]
    expected = costs.pinned_host_bytes(t.numel() * t.element_size() for t in tensors)
    assert group_offload_host_bytes(pipe) == expected > 0

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (14 * 10**9, 16 * 10**9))
    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=6 * 10**9))
    choice = choose_offload("auto", "cuda", "bf16", OFFICIAL, group_host_bytes=25 * 10**9)
    assert choice.mode == "sequential" and "host RAM" in choice.reason
    roomy = choose_offload("auto", "cuda", "bf16", OFFICIAL, group_host_bytes=10**9)
    assert roomy.mode == "group"


def test_compile_is_only_allowed_where_it_stays_clean():
    from allegro.loading import check_compile

    for mode in ("auto", "none", "model"):
        check_compile(True, mode)
    for mode in ("group", "sequential"):
        with pytest.raises(UnsupportedSetupError, match="--compile works with offload none"):
            check_compile(True, mode)
    check_compile(False, "group")


def test_a_visible_gpu_is_found_by_its_device_node(tmp_path):
    from allegro.loading import cuda_unusable_message, visible_nvidia_devices

    assert visible_nvidia_devices(tmp_path) == []
    for name in ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"):
        (tmp_path / name).touch()
    devices = visible_nvidia_devices(tmp_path)
    assert devices == [str(tmp_path / "nvidia0"), str(tmp_path / "nvidia1")]
    message = cuda_unusable_message(devices)
    reason = "CPU-only build" if torch.version.cuda is None else "PyTorch cannot use it"
    assert reason in message and "driver 580" in message
