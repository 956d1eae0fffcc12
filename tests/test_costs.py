"""The cost model: public figures, scaling, and agreement with the real diffusers layers.

The real-size checks run the released architecture on the meta device: shapes, no weights,
no arithmetic, so they take about a second each on a CPU.
"""

from __future__ import annotations

import types
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from allegro import costs

OFFICIAL = (88, 720, 1280)
FREE_GB_TO_MODE = ((80, "none"), (24, "model"), (16, "group"), (8, "sequential"))


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created under the mode and still referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {id(t.untyped_storage()) for t in tensors}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self.live or key in inputs:  # a view, not a new allocation
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)
        return out


@pytest.fixture(scope="module")
def meta_transformer():
    from diffusers import AllegroTransformer3DModel

    with torch.device("meta"):
        return (
            AllegroTransformer3DModel(**costs.ALLEGRO_TRANSFORMER_CONFIG).to(torch.bfloat16).eval()
        )


@pytest.fixture(scope="module")
def meta_vae():
    from diffusers import AutoencoderKLAllegro

    with torch.device("meta"):
        return AutoencoderKLAllegro().eval()


def run_transformer(model, frames: int, height: int, width: int) -> None:
    """One guided denoising step on the meta device, with the pipeline's own RoPE inputs."""
    from diffusers import AllegroPipeline

    latent_frames, latent_height, latent_width = costs.latent_shape(frames, height, width)
    batch = 2
    pipe = types.SimpleNamespace(vae_scale_factor_spatial=8, transformer=model)
    rotary = AllegroPipeline._prepare_rotary_positional_embeddings(
        pipe, batch, height, width, latent_frames, torch.device("meta")
    )
    dtype = model.dtype
    with torch.no_grad():
        model(
            torch.empty(
                batch, 4, latent_frames, latent_height, latent_width, dtype=dtype, device="meta"
            ),
            torch.empty(batch, costs.DEFAULT_TEXT_TOKENS, 4096, dtype=dtype, device="meta"),
            torch.empty(batch, device="meta"),
            encoder_attention_mask=torch.ones(batch, costs.DEFAULT_TEXT_TOKENS, device="meta"),
            image_rotary_emb=rotary,
        )


def test_official_video_matches_the_public_figures():
    assert costs.latent_shape(*OFFICIAL) == (22, 90, 160)
    assert costs.token_count(*OFFICIAL) == 79_200
    flops = costs.transformer_flops(costs.ALLEGRO_TRANSFORMER_CONFIG, *OFFICIAL)
    assert flops.per_video(100) == pytest.approx(448e15, rel=0.02)
    assert flops.self_attention_share == pytest.approx(0.83, abs=0.02)
    assert flops.total == flops.self_attention + flops.cross_attention + flops.linear


def test_latent_frames_follow_the_pipeline_for_odd_lengths():
    assert costs.latent_shape(89, 720, 1280) == (23, 90, 160)
    assert costs.latent_shape(40, 368, 640) == (10, 46, 80)


def test_flops_scale_with_guidance_and_tokens():
    config = costs.ALLEGRO_TRANSFORMER_CONFIG
    guided = costs.transformer_flops(config, *OFFICIAL)
    unguided = costs.transformer_flops(config, *OFFICIAL, guidance=False)
    assert guided.total == 2 * unguided.total

    short = costs.transformer_flops(config, 40, 720, 1280)
    ratio = costs.token_count(*OFFICIAL) / costs.token_count(40, 720, 1280)
    assert guided.self_attention / short.self_attention == pytest.approx(ratio**2)
    assert guided.feed_forward / short.feed_forward == pytest.approx(ratio)
    assert guided.self_attention_share > short.self_attention_share


def test_parameter_count_matches_the_diffusers_model(meta_transformer):
    from diffusers import AllegroTransformer3DModel

    real = sum(p.numel() for p in meta_transformer.parameters())
    assert costs.transformer_parameter_count(meta_transformer.config) == real
    assert real == pytest.approx(2.8e9, rel=0.02)

    # A small variant exercises the optional biases and norm weights.
    tiny = dict(
        costs.ALLEGRO_TRANSFORMER_CONFIG,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        cross_attention_dim=16,
        caption_channels=24,
        attention_bias=False,
        norm_elementwise_affine=True,
    )
    with torch.device("meta"):
        model = AllegroTransformer3DModel(**tiny)
    assert costs.transformer_parameter_count(tiny) == sum(p.numel() for p in model.parameters())


def test_gated_feed_forward_is_refused():
    config = dict(costs.ALLEGRO_TRANSFORMER_CONFIG, activation_fn="geglu")
    with pytest.raises(ValueError, match="geglu"):
        costs.transformer_flops(config, *OFFICIAL)


def test_flops_match_torch_flop_counter_on_the_real_layers(meta_transformer):
    with FlopCounterMode(display=False) as counter:
        run_transformer(meta_transformer, *OFFICIAL)
    model = costs.transformer_flops(meta_transformer.config, *OFFICIAL)
    assert model.total == pytest.approx(counter.get_total_flops(), rel=1e-4)


def test_transformer_activation_peak_matches_diffusers(meta_transformer, monkeypatch):
    # Flash / memory-efficient SDPA return only the output; the meta device would otherwise
    # take the math path, which builds the tokens^2 score matrix.
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v, **_: torch.empty_like(q))
    size = (40, 368, 640)
    with LiveBytes() as tracker:
        run_transformer(meta_transformer, *size)
    model = costs.transformer_activation_bytes(meta_transformer.config, *size)
    assert model == pytest.approx(tracker.peak, rel=0.02)


def test_vae_constants_match_the_diffusers_decoder(meta_vae):
    assert sum(p.numel() for p in meta_vae.parameters()) == costs.VAE_PARAMETERS
    latent_tile = torch.empty(1, 4, 6, 40, 40, device="meta")  # the default 24x320x320 tile
    voxels = 24 * 320 * 320
    with FlopCounterMode(display=False) as counter, LiveBytes() as tracker, torch.no_grad():
        meta_vae.decoder(latent_tile)
    assert counter.get_total_flops() / voxels == pytest.approx(
        costs.VAE_DECODE_FLOPS_PER_VOXEL, rel=0.005
    )
    assert tracker.peak / voxels / 4 == pytest.approx(
        costs.VAE_DECODE_PEAK_ELEMENTS_PER_VOXEL, rel=0.01
    )


def test_t5_geometry_matches_transformers():
    from transformers import T5Config, T5EncoderModel

    t5 = costs.T5_XXL
    config = T5Config(
        vocab_size=t5.vocab,
        d_model=t5.d_model,
        d_ff=t5.d_ff,
        d_kv=t5.d_kv,
        num_heads=t5.heads,
        num_layers=t5.layers,
        relative_attention_num_buckets=t5.relative_buckets,
        feed_forward_proj="gated-gelu",
    )
    with torch.device("meta"):
        model = T5EncoderModel(config)
    assert sum(p.numel() for p in model.parameters()) == t5.parameter_count
    assert t5.parameter_count == pytest.approx(4.76e9, rel=0.005)
    # fp16 loading keeps exactly the `wo` projections in fp32.
    assert "wo" in model._keep_in_fp32_modules
    kept = sum(p.numel() for name, p in model.named_parameters() if ".wo." in name)
    assert kept == t5.fp32_in_fp16_parameters


def test_time_on_an_h100_matches_the_official_figures():
    h100 = costs.gpu_class_for("NVIDIA H100 80GB HBM3")
    typical = costs.estimate_seconds(*OFFICIAL, h100)
    assert typical.total_seconds / 60 == pytest.approx(20, rel=0.10)
    assert typical.step_seconds * 100 == pytest.approx(typical.transformer_seconds)
    ideal = costs.estimate_seconds(*OFFICIAL, h100, efficiency=1.0)
    assert ideal.transformer_seconds / 60 == pytest.approx(7.5, rel=0.02)
    assert ideal.total_seconds / 60 == pytest.approx(7.5, rel=0.05)
    assert typical.text_encoder_seconds + typical.vae_decode_seconds < 0.02 * typical.total_seconds


def test_time_grows_with_offload_and_slower_precision():
    gpu = costs.GPU_CLASSES["RTX 4090"]
    times = [
        costs.estimate_seconds(*OFFICIAL, gpu, offload=mode).total_seconds
        for mode in costs.OFFLOAD_ORDER
    ]
    assert times == sorted(times) and len(set(times)) == len(times)
    fp32 = costs.estimate_seconds(*OFFICIAL, gpu, precision="fp32")
    assert fp32.total_seconds > times[0]
    fewer_steps = costs.estimate_seconds(*OFFICIAL, gpu, steps=50)
    assert fewer_steps.transformer_seconds == pytest.approx(
        costs.estimate_seconds(*OFFICIAL, gpu).transformer_seconds / 2
    )


@pytest.mark.parametrize(
    ("device_name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 3060", "unknown GPU"),
    ],
)
def test_gpu_class_for_device_names(device_name, expected):
    assert costs.gpu_class_for(device_name).name == expected


def test_unknown_gpu_is_the_most_conservative():
    assert all(
        costs.UNKNOWN_GPU.half_tflops <= gpu.half_tflops
        and costs.UNKNOWN_GPU.tf32_tflops <= gpu.tf32_tflops
        for gpu in costs.GPU_CLASSES.values()
    )


def test_memory_matches_the_public_figures():
    none = costs.estimate_memory("none", "bf16", *OFFICIAL)
    assert none.peak_bytes / costs.GB == pytest.approx(27.5, rel=0.05)
    # The published 9.3 GB is "BF16 with cpu_offload": the VAE in bf16 as well.
    sequential = costs.estimate_memory("sequential", "bf16", *OFFICIAL, vae_precision="bf16")
    assert sequential.peak_bytes / costs.GB == pytest.approx(9.3, rel=0.05)


def test_memory_parts_come_from_parameter_counts():
    parts = dict(costs.estimate_memory("none", "bf16", *OFFICIAL).parts)
    transformer_parameters = costs.transformer_parameter_count()
    assert parts["transformer weights (bf16)"] == 2 * transformer_parameters
    assert parts["text encoder weights (bf16)"] == 2 * costs.T5_XXL.parameter_count
    assert parts["VAE weights (fp32)"] == 4 * costs.VAE_PARAMETERS
    fp16 = dict(costs.estimate_memory("none", "fp16", *OFFICIAL).parts)
    assert fp16["text encoder weights (fp16)"] > parts["text encoder weights (bf16)"]


def test_memory_falls_with_offload_and_grows_with_size_and_precision():
    peaks = [
        costs.estimate_memory(mode, "bf16", *OFFICIAL).peak_bytes for mode in costs.OFFLOAD_ORDER
    ]
    assert peaks == sorted(peaks, reverse=True)
    sizes = [
        costs.estimate_memory("none", "bf16", *size).peak_bytes for size in costs.OFFICIAL_SIZES
    ]
    assert sizes == sorted(sizes, reverse=True)
    for mode in costs.OFFLOAD_ORDER:
        bf16 = costs.estimate_memory(mode, "bf16", *OFFICIAL).peak_bytes
        assert costs.estimate_memory(mode, "fp32", *OFFICIAL).peak_bytes > bf16


def test_unknown_offload_mode_and_precision_are_refused():
    gpu = costs.GPU_CLASSES["L4"]
    with pytest.raises(ValueError, match="offload"):
        costs.estimate_memory("auto", "bf16", *OFFICIAL)
    with pytest.raises(ValueError, match="offload"):
        costs.estimate_seconds(*OFFICIAL, gpu, offload="auto")
    with pytest.raises(ValueError, match="precision"):
        costs.estimate_seconds(*OFFICIAL, gpu, precision="int8")


@pytest.mark.parametrize(("free_gb", "expected"), FREE_GB_TO_MODE)
def test_choose_offload_picks_the_fastest_mode_that_fits(free_gb, expected):
    free = int(free_gb * costs.GB)
    choice = costs.choose_offload(free, "bf16", *OFFICIAL)
    assert choice.mode == expected
    needs = {
        mode: costs.estimate_memory(mode, "bf16", *OFFICIAL).peak_bytes
        for mode in costs.OFFLOAD_ORDER
    }
    assert choice.needed_bytes == needs[expected]
    faster = costs.OFFLOAD_ORDER[: costs.OFFLOAD_ORDER.index(expected)]
    assert all(needs[mode] * (1 + costs.SAFETY_MARGIN) > free for mode in faster)
    assert f"{free_gb:.1f} GB free" in choice.reason
    assert f"~{needs[expected] / costs.GB:.1f} GB" in choice.reason
    if expected == "sequential":  # 8 GB is below every estimate
        assert needs[expected] > free
        assert "may still run out" in choice.reason
    else:
        assert needs[expected] * (1 + costs.SAFETY_MARGIN) <= free


def test_choose_offload_uses_sequential_when_only_it_fits():
    needs = {
        mode: costs.estimate_memory(mode, "bf16", *OFFICIAL).peak_bytes
        for mode in ("group", "sequential")
    }
    free = int(needs["sequential"] * (1 + costs.SAFETY_MARGIN)) + 1
    assert needs["group"] * (1 + costs.SAFETY_MARGIN) > free
    choice = costs.choose_offload(free, "bf16", *OFFICIAL)
    assert choice.mode == "sequential"
    assert "may still run out" not in choice.reason
    assert f"'group' offload needs ~{needs['group'] / costs.GB:.1f} GB" in choice.reason


def test_memory_table_lists_every_mode_and_precision():
    table = costs.memory_table_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Offload" not in line]
    assert len(rows) == len(costs.OFFLOAD_ORDER) * len(costs.PRECISIONS)
    assert "| Offload | Precision | 88x720x1280 | 40x720x1280 | 40x368x640 |" in table
    expected = costs.estimate_memory("model", "fp16", 40, 368, 640).peak_bytes / costs.GB
    model_fp16 = next(row for row in rows if row.startswith("| model | fp16 |"))
    assert model_fp16.rstrip(" |").endswith(f"{expected:.1f}")


def test_fast_mode_speedup_matches_the_reported_figure():
    """Pyramid Attention Broadcast is reported at about 1.4-1.5x for this transformer."""
    assert costs.fast_mode_skipped_steps(100) == 35
    assert 1.4 <= costs.fast_mode_speedup(88, 720, 1280) <= 1.5
    # Shorter videos spend less of their time in self-attention, so gain less.
    assert costs.fast_mode_speedup(40, 368, 640) < costs.fast_mode_speedup(88, 720, 1280)


# ---- step cache and memory profiles ------------------------------------------------------


def test_step_cache_kept_fraction_and_speedup():
    # cache-dit's published Allegro run: 27 of 100 steps cached, first 8 of 32 blocks run.
    assert costs.step_cache_kept_fraction(100, 27) == pytest.approx(0.7975)
    assert costs.step_cache_kept_fraction(100, 0) == 1.0
    speedup = costs.step_cache_speedup(0.7975, *OFFICIAL)
    assert 1.25 < speedup < 1.26  # the blocks are nearly all of the FLOPs
    assert costs.step_cache_speedup(1.0, *OFFICIAL) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        costs.step_cache_speedup(0.0, *OFFICIAL)


def test_step_cache_buffers_are_two_hidden_states():
    config = costs.ALLEGRO_TRANSFORMER_CONFIG
    buffers = costs.step_cache_buffer_bytes(config, *OFFICIAL)
    assert buffers == 2 * 2 * (79_200 + 512) * 2304 * 2  # ~1.47 GB
    plain = costs.estimate_memory("none", "bf16", *OFFICIAL, vae_precision="bf16")
    cached = costs.estimate_memory("none", "bf16", *OFFICIAL, "bf16", step_cache=True)
    assert dict(cached.parts)["step cache buffers"] == buffers
    assert plain.phase == cached.phase == "denoising"
    assert cached.peak_bytes == plain.peak_bytes + buffers


def test_memory_profiles_shrink_the_weights():
    bf16 = costs.estimate_memory("none", "bf16", *OFFICIAL)
    low = costs.estimate_memory("none", "bf16", *OFFICIAL, profile="low-memory")
    parts = dict(low.parts)
    assert parts["transformer weights (fp8 storage)"] == pytest.approx(2.81e9, rel=0.01)
    assert parts["text encoder weights (int8)"] == pytest.approx(4.90e9, rel=0.01)
    assert bf16.peak_bytes - low.peak_bytes > 7e9
    with pytest.raises(ValueError, match="sequential"):
        costs.estimate_memory("sequential", "bf16", *OFFICIAL, profile="fp8-transformer")
    with pytest.raises(ValueError, match="unknown memory profile"):
        costs.estimate_memory("none", "bf16", *OFFICIAL, profile="fp4")


def test_auto_offload_with_a_profile_never_picks_sequential():
    choice = costs.choose_offload(int(8e9), "bf16", *OFFICIAL, profile="low-memory")
    assert choice.mode == "group" and "may still run out" in choice.reason
    roomy = costs.choose_offload(int(22e9), "bf16", *OFFICIAL, profile="low-memory")
    assert roomy.mode == "none"  # 19.1 GB fits in 22 GB with the margin; off would not
    assert costs.choose_offload(int(22e9), "bf16", *OFFICIAL).mode == "model"


def test_memory_profile_table():
    table = costs.memory_profile_table_markdown()
    assert "| low-memory | none | 19.1 |" in table
    assert "sequential" not in table


def test_readme_shows_the_memory_profile_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert costs.memory_profile_table_markdown() in readme


def test_fast_mode_holds_one_attention_output_per_block_while_denoising():
    """diffusers 0.42.1 hooks/pyramid_attention_broadcast.py:172 keeps each hooked
    self-attention's output: 32 blocks x (2, 79,200, 2304) bf16 at 88x720x1280."""
    config = costs.ALLEGRO_TRANSFORMER_CONFIG
    assert costs.fast_mode_cache_bytes(config, *OFFICIAL) == 32 * 2 * 79_200 * 2304 * 2
    for size, gb in (((88, 720, 1280), 23.4), ((40, 720, 1280), 10.6), ((40, 368, 640), 2.7)):
        assert round(costs.fast_mode_cache_bytes(config, *size) / costs.GB, 1) == gb
    for mode in costs.OFFLOAD_ORDER:
        plain = costs.estimate_memory(mode, "bf16", *OFFICIAL)
        fast = costs.estimate_memory(mode, "bf16", *OFFICIAL, fast_mode=True)
        assert fast.phase == "denoising"
        assert dict(fast.parts)["fast mode attention cache"] == 32 * 2 * 79_200 * 2304 * 2
        assert fast.peak_bytes > plain.peak_bytes


def test_fast_mode_blocker_says_why_it_cannot_run():
    gb = 10**9
    reason = costs.fast_mode_blocker(24 * gb, False, "group", "bf16", *OFFICIAL)
    assert "33.9 GB" in reason and "23.4 GB" in reason and "24.0 GB" in reason
    assert costs.fast_mode_blocker(80 * gb, False, "none", "bf16", *OFFICIAL) is None
    assert costs.fast_mode_blocker(24 * gb, False, "group", "bf16", 40, 368, 640) is None
    assert costs.fast_mode_blocker(None, False, "none", "bf16", *OFFICIAL) is None  # CPU
    assert "torch.compile" in costs.fast_mode_blocker(80 * gb, True, "none", "bf16", *OFFICIAL)


def test_the_readme_shows_the_memory_model_for_fast_mode():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert costs.memory_table_markdown() in readme
    assert costs.fast_mode_memory_table_markdown() in readme


def test_pinned_copies_are_rounded_to_a_power_of_two():
    """torch 2.13.0 include/ATen/core/CachingHostAllocator.h:300-305."""
    assert costs.pinned_host_bytes([3, 4, 5, 0]) == 4 + 4 + 8
    ff_weight = 2304 * 9216 * 2  # 42.5 MB -> 64 MiB
    assert costs.pinned_host_bytes([ff_weight]) == 2**26


def test_auto_passes_over_group_offload_without_the_host_ram_it_pins():
    gb = 10**9
    free = int(14 * gb)  # group fits the GPU, model does not
    assert costs.choose_offload(free, "bf16", *OFFICIAL).mode == "group"
    roomy = costs.choose_offload(
        free, "bf16", *OFFICIAL, available_host_bytes=64 * gb, group_host_bytes=8 * gb
    )
    assert roomy.mode == "group"
    tight = costs.choose_offload(
        free, "bf16", *OFFICIAL, available_host_bytes=6 * gb, group_host_bytes=8 * gb
    )
    assert tight.mode == "sequential"
    assert "pin ~8.0 GB of host RAM, 6.0 GB available" in tight.reason


def test_a_slice_of_a_gpu_gets_its_share_of_the_peak():
    whole = costs.gpu_class_for("NVIDIA H200")
    lent = costs.gpu_class_for("NVIDIA H200", multiprocessors=60)
    assert lent.half_tflops == pytest.approx(whole.half_tflops * 60 / 132)
    assert costs.gpu_class_for("NVIDIA H200", multiprocessors=132) is whole
