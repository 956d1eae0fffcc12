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
