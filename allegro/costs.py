"""What a video costs: FLOPs, time on a class of GPU, and peak GPU memory per offload mode.

Pure Python (no torch at import), so the CLI, the UI and ``--help`` can quote costs without
loading anything. The transformer is described by its config as a plain mapping
(``pipe.transformer.config`` or a dict); ``ALLEGRO_TRANSFORMER_CONFIG`` is the released model.

How FLOPs are counted
    A multiply-add is 2 FLOPs. Only matrix products are counted: linear layers, the patch
    embedding convolution and attention's two products (QK^T and AV), which are what
    ``torch.utils.flop_counter`` counts; the tests check this model against it on the real
    layer shapes. Norms, softmax, RoPE, GELU, bias and residual adds are left out (under 1%).
    With classifier-free guidance the pipeline runs the transformer on a batch of two, so
    every product runs twice. The released model at 88x720x1280 (79,200 tokens) comes out at
    4.48 PFLOP per step, 448 PFLOP for 100 steps, 82.6% of it in self-attention: the public
    figures.

Time
    FLOPs divided by a GPU's dense peak times an efficiency. 0.38 is what the official
    20 minutes on one H100 implies; other GPUs and sizes will differ. Offload slowdowns are
    rough factors, not measurements.

Memory (all estimates until measured on a GPU)
    Peak = weights on the GPU in the heaviest phase (text encoding, denoising or VAE decode)
    + that phase's activations + a fixed allowance for CUDA workspaces and allocator slack.
    Weights come from parameter counts. Activations come from the diffusers 0.42.1 code,
    traced on the meta device: the transformer peaks at a feed-forward GELU (SDPA never
    materialises the tokens^2 score matrix), the VAE inside one decoded tile plus the buffer
    that keeps every decoded tile. The allowance (0.6 GB) is the one fitted constant: with
    it, no offload in bf16 (VAE fp32) needs 26.5 GB against the published 27.5 GB, and
    sequential offload with everything in bf16 needs 9.6 GB against the published "9.3G
    BF16". With the VAE in fp32 (the default) the tiled decode, about 10.1 GB of
    activations, sets the floor of every offload mode at 88x720x1280.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from allegro.tiling import fit_tiling

GB = 1e9  # decimal gigabytes, as torch.cuda.mem_get_info counts bytes

# The released transformer's config (the values of rhymes-ai/Allegro, which are also
# diffusers' defaults for AllegroTransformer3DModel); only what the cost model reads.
ALLEGRO_TRANSFORMER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "patch_size": 2,
        "patch_size_t": 1,
        "num_attention_heads": 24,
        "attention_head_dim": 96,
        "in_channels": 4,
        "out_channels": 4,
        "num_layers": 32,
        "cross_attention_dim": 2304,
        "attention_bias": True,
        "caption_channels": 4096,
        "norm_elementwise_affine": False,
        "activation_fn": "gelu-approximate",
    }
)

VAE_TEMPORAL_FACTOR = 4
VAE_SPATIAL_FACTOR = 8
VAE_PARAMETERS = 174_955_751  # AutoencoderKLAllegro with the released config
VAE_OUT_CHANNELS = 3
# The VAE decoder is fully convolutional, so its cost and its activation peak grow with the
# pixels x frames ("voxels") of a tile. Both were measured on the meta device for the
# released config (diffusers 0.42.1, eval mode) with 24-frame tiles:
VAE_DECODE_FLOPS_PER_VOXEL = 12.41e6
# The encoder, measured the same way (FlopCounterMode, meta device, 24-frame tiles of 64 and
# 160 pixels: 6.215e6 and 6.218e6); image to video encodes the whole conditioned video once.
VAE_ENCODE_FLOPS_PER_VOXEL = 6.22e6
# At the last up block, alive at once: that block's 256-channel input (held by the caller),
# a 128-channel resnet output and three 128-channel copies padded to 26 frames.
VAE_DECODE_PEAK_ELEMENTS_PER_VOXEL = 802

FF_MULT = 4  # diffusers' FeedForward default; not part of the config
TIMESTEP_CHANNELS = 256  # sinusoidal timestep features entering adaLN-single
DEFAULT_TEXT_TOKENS = 512  # the pipeline pads every prompt to max_sequence_length

PRECISION_BYTES: Mapping[str, int] = MappingProxyType({"bf16": 2, "fp16": 2, "fp32": 4})
PRECISIONS = tuple(PRECISION_BYTES)

OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
# Rough factors on compute time. Model offload moves each component once per video; group
# offload streams transformer blocks every step, overlapped with compute; sequential
# offload moves every layer every step without overlap (users report 40-70 min on an H100
# against the official 20 min, so 2-3.5x).
OFFLOAD_SLOWDOWN: Mapping[str, float] = MappingProxyType(
    {"none": 1.0, "model": 1.05, "group": 1.2, "sequential": 2.75}
)
OVERHEAD_BYTES = int(0.6 * GB)  # CUDA/cuDNN workspaces, allocator rounding and fragmentation
SAFETY_MARGIN = 0.10
DEFAULT_EFFICIENCY = 0.38

OFFICIAL_SIZES: tuple[tuple[int, int, int], ...] = (
    (88, 720, 1280),
    (40, 720, 1280),
    (40, 368, 640),
)


@dataclass(frozen=True)
class T5Geometry:
    vocab: int
    d_model: int
    d_ff: int
    heads: int
    d_kv: int
    layers: int
    relative_buckets: int

    @property
    def inner(self) -> int:
        return self.heads * self.d_kv

    @property
    def block_parameters(self) -> int:
        # q, k, v, o; gated FF (wi_0, wi_1, wo); two RMSNorms. The relative position bias
        # lives in the first block only and is counted once in parameter_count.
        return 4 * self.d_model * self.inner + 3 * self.d_model * self.d_ff + 2 * self.d_model

    @property
    def parameter_count(self) -> int:
        embedding = self.vocab * self.d_model
        bias = self.relative_buckets * self.heads
        return embedding + self.layers * self.block_parameters + bias + self.d_model

    @property
    def fp32_in_fp16_parameters(self) -> int:
        """transformers keeps T5's ``wo`` in fp32 when loading in fp16 (not in bf16)."""
        return self.layers * self.d_ff * self.d_model

    def weight_bytes(self, precision: str) -> int:
        if precision == "fp16":
            kept = self.fp32_in_fp16_parameters
            return (self.parameter_count - kept) * 2 + kept * 4
        return self.parameter_count * PRECISION_BYTES[precision]


# T5 v1.1 XXL encoder: 4.76B parameters.
T5_XXL = T5Geometry(
    vocab=32128, d_model=4096, d_ff=10240, heads=64, d_kv=64, layers=24, relative_buckets=32
)


@dataclass(frozen=True)
class _TransformerDims:
    width: int  # heads x head_dim
    blocks: int
    ff: int
    cross: int
    caption: int
    in_channels: int
    out_channels: int
    patch: int
    patch_t: int
    attention_bias: bool
    norm_affine: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _TransformerDims:
        if config["activation_fn"] not in ("gelu", "gelu-approximate"):
            # Gated FFs (geglu, swiglu) have a twice-wider first projection: not modelled.
            raise ValueError(f"unsupported activation_fn {config['activation_fn']!r}")
        width = config["num_attention_heads"] * config["attention_head_dim"]
        return cls(
            width=width,
            blocks=config["num_layers"],
            ff=FF_MULT * width,
            cross=config["cross_attention_dim"],
            caption=config["caption_channels"],
            in_channels=config["in_channels"],
            out_channels=config["out_channels"],
            patch=config["patch_size"],
            patch_t=config["patch_size_t"],
            attention_bias=bool(config["attention_bias"]),
            norm_affine=bool(config["norm_elementwise_affine"]),
        )


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def _adaln_linears(dims: _TransformerDims) -> tuple[tuple[int, int], ...]:
    """adaln_single's linear layers as (in, out): the timestep MLP and the 6-way modulation."""
    d = dims.width
    return ((TIMESTEP_CHANNELS, d), (d, d), (d, 6 * d))


def _block_parameters(dims: _TransformerDims) -> int:
    d, qkv_bias = dims.width, dims.attention_bias
    self_attention = 3 * _linear(d, d, qkv_bias) + _linear(d, d)
    cross_attention = _linear(d, d, qkv_bias) + 2 * _linear(dims.cross, d, qkv_bias) + _linear(d, d)
    feed_forward = _linear(d, dims.ff) + _linear(dims.ff, d)
    norms = 3 * 2 * d if dims.norm_affine else 0  # norm1..norm3 (norm3 is built, never used)
    scale_shift_table = 6 * d
    return self_attention + cross_attention + feed_forward + norms + scale_shift_table


def _non_block_parameters(dims: _TransformerDims) -> int:
    d = dims.width
    patch_embed = dims.in_channels * dims.patch**2 * d + d
    proj_out = _linear(d, dims.patch**2 * dims.out_channels)
    adaln_single = sum(_linear(fan_in, fan_out) for fan_in, fan_out in _adaln_linears(dims))
    caption_projection = _linear(dims.caption, d) + _linear(d, d)
    scale_shift_table = 2 * d
    return patch_embed + proj_out + adaln_single + caption_projection + scale_shift_table


def transformer_parameter_count(config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG) -> int:
    dims = _TransformerDims.from_config(config)
    return dims.blocks * _block_parameters(dims) + _non_block_parameters(dims)


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(frames, height, width) of the latent (4 channels), as AllegroPipeline.prepare_latents."""
    if frames % 2 == 0:
        latent_frames = math.ceil(frames / VAE_TEMPORAL_FACTOR)
    else:  # odd lengths keep the first frame on its own
        latent_frames = math.ceil((frames - 1) / VAE_TEMPORAL_FACTOR) + 1
    return latent_frames, height // VAE_SPATIAL_FACTOR, width // VAE_SPATIAL_FACTOR


def token_count(
    frames: int, height: int, width: int, config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG
) -> int:
    latent_frames, latent_height, latent_width = latent_shape(frames, height, width)
    patch, patch_t = config["patch_size"], config["patch_size_t"]
    return (latent_frames // patch_t) * (latent_height // patch) * (latent_width // patch)


@dataclass(frozen=True)
class FlopBreakdown:
    """FLOPs of one transformer forward, i.e. one denoising step (both halves with guidance)."""

    self_attention: int  # QK^T and AV over the video tokens
    cross_attention: int  # QK^T and AV against the text tokens
    attention_projections: int  # Q, K, V and output projections of both attentions
    feed_forward: int
    embeddings: int  # patch embedding, proj_out, timestep/adaLN MLP, caption projection

    @property
    def linear(self) -> int:
        return self.attention_projections + self.feed_forward + self.embeddings

    @property
    def total(self) -> int:
        return self.self_attention + self.cross_attention + self.linear

    @property
    def self_attention_share(self) -> float:
        return self.self_attention / self.total

    def per_video(self, steps: int) -> int:
        return self.total * steps


def transformer_flops(
    config: Mapping[str, Any],
    frames: int,
    height: int,
    width: int,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    guidance: bool = True,
) -> FlopBreakdown:
    dims = _TransformerDims.from_config(config)
    tokens = token_count(frames, height, width, config)
    d, blocks = dims.width, dims.blocks
    fma = 2 * (2 if guidance else 1)  # 2 FLOPs per multiply-add, per batch item
    # Each attention product (QK^T, AV) is tokens x keys x width multiply-adds.
    self_attention = blocks * fma * 2 * tokens * tokens * d
    cross_attention = blocks * fma * 2 * tokens * text_tokens * d
    # Self: Q, K, V, out on the video tokens; cross: Q, out on the video tokens and K, V on
    # the (projected) text tokens.
    projections = 4 * tokens * d * d + 2 * tokens * d * d + 2 * text_tokens * dims.cross * d
    feed_forward = 2 * tokens * d * dims.ff
    embeddings = (
        tokens * dims.in_channels * dims.patch**2 * d  # patch embedding (a strided conv)
        + tokens * d * dims.patch**2 * dims.out_channels  # proj_out
        + (TIMESTEP_CHANNELS * d + d * d + d * 6 * d)  # adaLN-single, once per sample
        + text_tokens * (dims.caption * d + d * d)  # caption projection
    )
    return FlopBreakdown(
        self_attention=self_attention,
        cross_attention=cross_attention,
        attention_projections=blocks * fma * projections,
        feed_forward=blocks * fma * feed_forward,
        embeddings=fma * embeddings,
    )


# Fast mode: Pyramid Attention Broadcast reuses a block's self-attention output on every
# other step while the timestep lies inside this window (the engine configures diffusers
# with these values).
FAST_MODE_BLOCK_SKIP = 2
FAST_MODE_TIMESTEP_WINDOW = (100, 800)
TRAIN_TIMESTEPS = 1000


def fast_mode_skipped_steps(steps: int) -> int:
    """Steps whose self-attention fast mode reuses, following diffusers' rule on the
    scheduler's linspace timesteps (999 .. 0)."""
    low, high = FAST_MODE_TIMESTEP_WINDOW
    last = TRAIN_TIMESTEPS - 1
    skipped = 0
    for index in range(steps):
        timestep = last - index * last / max(steps - 1, 1)
        if index and index % FAST_MODE_BLOCK_SKIP and low < timestep < high:
            skipped += 1
    return skipped


def fast_mode_speedup(
    frames: int,
    height: int,
    width: int,
    steps: int = 100,
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
) -> float:
    """Transformer time without fast mode over time with it: a skipped self-attention saves
    its two products and its Q, K, V and output projections."""
    step = transformer_flops(config, frames, height, width)
    dims = _TransformerDims.from_config(config)
    tokens = token_count(frames, height, width, config)
    self_projections = dims.blocks * 2 * 2 * 4 * tokens * dims.width * dims.width
    saved = fast_mode_skipped_steps(steps) * (step.self_attention + self_projections)
    total = step.per_video(steps)
    return total / (total - saved)


# Step cache: cache-dit's DBCache with the settings its authors published for Allegro
# (cache-dit README at commit d2fbb3b, "Allegro +cache-dit: 1.36x", run name
# DBCACHE_F8B0_W8M0MC0_T0O2_R0.26_S27: the first 8 blocks always computed, no trailing
# blocks, 8 warm-up steps, residual threshold 0.26, TaylorSeer off; 27 of 100 steps cached).
STEP_CACHE_FIRST_BLOCKS = 8
STEP_CACHE_LAST_BLOCKS = 0
STEP_CACHE_WARMUP_STEPS = 8
STEP_CACHE_THRESHOLD = 0.26


@dataclass(frozen=True)
class PublishedCacheRun:
    """A step-cache result published by cache-dit's authors (their README, commit d2fbb3b)."""

    model: str
    speedup: float  # their measured end-to-end figure
    kept_fraction: float  # of the transformer's block computations, as we apply it to Allegro
    note: str


def step_cache_kept_fraction(
    steps: int,
    cached_steps: int,
    blocks: int = ALLEGRO_TRANSFORMER_CONFIG["num_layers"],
    first_blocks: int = STEP_CACHE_FIRST_BLOCKS,
    last_blocks: int = STEP_CACHE_LAST_BLOCKS,
) -> float:
    """Share of block computations a DBCache run keeps: a cached step still runs its first
    and last blocks, the rest of the blocks reuse the previous step's residual."""
    computed = steps * blocks - cached_steps * (blocks - first_blocks - last_blocks)
    return computed / (steps * blocks)


PUBLISHED_CACHE_RUNS: tuple[PublishedCacheRun, ...] = (
    PublishedCacheRun(
        "Allegro",
        1.36,
        step_cache_kept_fraction(100, 27),
        "F8B0, 27 of 100 steps cached: 80% of block computations kept",
    ),
    PublishedCacheRun(
        "Mochi-1",
        1.8,
        round(1 / 1.8, 2),
        "F8B0 R0.08, 34 steps cached; fraction taken as 1/speedup",
    ),
    PublishedCacheRun(
        "HunyuanVideo",
        2.1,
        round(1 / 2.1, 2),
        "F1B0 R0.12, 27 steps cached; fraction taken as 1/speedup",
    ),
)


def step_cache_speedup(
    kept_fraction: float,
    frames: int,
    height: int,
    width: int,
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
) -> float:
    """Transformer time without the step cache over time with it, when it keeps
    ``kept_fraction`` of the block computations (what it skips depends on the video, so it
    is an input). Embeddings and the output projection always run."""
    if not 0 < kept_fraction <= 1:
        raise ValueError(f"kept_fraction must be in (0, 1], not {kept_fraction}")
    step = transformer_flops(config, frames, height, width)
    in_blocks = step.total - step.embeddings
    return step.total / (step.embeddings + in_blocks * kept_fraction)


def step_cache_buffer_bytes(
    config: Mapping[str, Any],
    frames: int,
    height: int,
    width: int,
    precision: str = "bf16",
    guidance: bool = True,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
) -> int:
    """GPU memory the step cache keeps through a run: cache-dit's Fn and Bn buffers (the
    first blocks' residual and the rest's residual; cache_manager.set_Fn_buffer and
    set_Bn_buffer, cache-dit 1.5.3) for the video tokens and for the text tokens."""
    dims = _TransformerDims.from_config(config)
    batch = 2 if guidance else 1
    tokens = token_count(frames, height, width, config)
    return 2 * batch * (tokens + text_tokens) * dims.width * PRECISION_BYTES[precision]


def text_encoder_flops(
    text_tokens: int = DEFAULT_TEXT_TOKENS, guidance: bool = True, t5: T5Geometry = T5_XXL
) -> int:
    """T5 encoder over the padded prompt, and over the negative prompt with guidance."""
    prompts = 2 if guidance else 1
    linear = 2 * text_tokens * (4 * t5.d_model * t5.inner + 3 * t5.d_model * t5.d_ff)
    attention = 2 * 2 * text_tokens * text_tokens * t5.inner
    return prompts * t5.layers * (linear + attention)


def _tiles(frames: int, height: int, width: int) -> tuple[int, int]:
    """(tile count, voxels per tile) with the geometry the engine fits to each request."""
    geometry = fit_tiling(frames, height, width)
    return geometry.tile_count(frames, height, width), math.prod(geometry.kernel)


def vae_decode_flops(frames: int, height: int, width: int) -> int:
    """Rough: decoder FLOPs per output voxel (measured) x voxels of all tiles decoded.

    Overlapping tiles are decoded in full, so this exceeds the video's own voxels. About
    2.3 PFLOP at 88x720x1280, half a percent of the transformer's 448.
    """
    tiles, tile_voxels = _tiles(frames, height, width)
    return round(tiles * tile_voxels * VAE_DECODE_FLOPS_PER_VOXEL)


def vae_encode_flops(frames: int, height: int, width: int) -> int:
    """Image to video: the masked video (all frames, mostly grey) through the encoder, with
    the same fitted tiles as the decode. About 1.2 PFLOP at 88x720x1280."""
    tiles, tile_voxels = _tiles(frames, height, width)
    return round(tiles * tile_voxels * VAE_ENCODE_FLOPS_PER_VOXEL)


def ti2v_branch_flops(
    frames: int,
    height: int,
    width: int,
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    guidance: bool = True,
) -> int:
    """Allegro-TI2V's extra work per denoising step: the masked-video and mask branches (a
    patch embedding and a DxD linear per token each) and the first frame's (one frame's
    tokens). About 3.4 TFLOP at 88x720x1280 with guidance: 0.08% of a step."""
    dims = _TransformerDims.from_config(config)
    per_token = 2 * (dims.in_channels * dims.patch**2 * dims.width) + 2 * dims.width**2
    tokens = token_count(frames, height, width, config)
    latent_frames = latent_shape(frames, height, width)[0] // dims.patch_t
    first_frame_tokens = tokens // latent_frames
    return (2 if guidance else 1) * per_token * (2 * tokens + first_frame_tokens)


def ti2v_extra_seconds(
    frames: int,
    height: int,
    width: int,
    gpu: GpuClass,
    steps: int = 100,
    guidance: bool = True,
    efficiency: float = DEFAULT_EFFICIENCY,
    offload: str = "none",
    precision: str = "bf16",
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
) -> float:
    """What image to video adds to ``estimate_seconds``: encoding the condition once, and the
    TI2V branches at every step."""
    _check_offload(offload)
    slowdown = OFFLOAD_SLOWDOWN[offload]
    vae_peak = gpu.tf32_tflops if vae_precision == "fp32" else gpu.half_tflops
    encode = vae_encode_flops(frames, height, width) / (vae_peak * 1e12 * efficiency)
    branches = steps * ti2v_branch_flops(frames, height, width, config, guidance)
    return (encode + branches / (_matmul_flops_per_second(gpu, precision) * efficiency)) * (
        slowdown
    )


@dataclass(frozen=True)
class GpuClass:
    name: str
    half_tflops: float  # dense FP16/BF16 tensor-core peak (no sparsity)
    tf32_tflops: float  # dense TF32 peak: PyTorch lets cuDNN convolutions (the VAE) use it
    fp32_tflops: float  # plain FP32: PyTorch keeps TF32 off for matmuls by default
    memory_gb: float
    source: str


# Dense peaks (vendor sheets often quote twice these, "with sparsity").
GPU_CLASSES: Mapping[str, GpuClass] = MappingProxyType(
    {
        gpu.name: gpu
        for gpu in (
            GpuClass("H100 SXM", 989.4, 494.7, 66.9, 80, "NVIDIA H100 datasheet (SXM5)"),
            GpuClass(
                "H100 PCIe", 756.5, 378.0, 51.2, 80, "NVIDIA H100 datasheet (PCIe); also H100 NVL"
            ),
            GpuClass("H200", 989.4, 494.7, 66.9, 141, "NVIDIA H200 datasheet (SXM)"),
            GpuClass("A100 80GB", 312.0, 156.0, 19.5, 80, "NVIDIA A100 datasheet"),
            GpuClass("A100 40GB", 312.0, 156.0, 19.5, 40, "NVIDIA A100 datasheet"),
            GpuClass("L40S", 362.05, 183.0, 91.6, 48, "NVIDIA L40S datasheet"),
            GpuClass("L40", 181.05, 90.5, 90.5, 48, "NVIDIA L40 datasheet"),
            GpuClass("RTX A6000", 154.8, 77.4, 38.7, 48, "NVIDIA RTX A6000 datasheet"),
            GpuClass("RTX 4090", 165.2, 82.6, 82.6, 24, "NVIDIA Ada whitepaper, FP32 accumulate"),
            GpuClass("A10", 125.0, 62.5, 31.2, 24, "NVIDIA A10 datasheet"),
            GpuClass(
                "A10G", 70.0, 35.0, 35.0, 24, "approximate: AWS publishes none; third-party specs"
            ),
            GpuClass("L4", 121.0, 60.0, 30.3, 24, "NVIDIA L4 datasheet"),
            GpuClass("T4", 65.0, 8.1, 8.1, 16, "NVIDIA T4 datasheet: FP16 only, no BF16 or TF32"),
        )
    }
)
# For a GPU the table does not know: T4-class figures, so estimates err on the slow side.
UNKNOWN_GPU = GpuClass("unknown GPU", 65.0, 8.1, 8.1, 16, "conservative stand-in (T4 figures)")

# Searched in order on the upper-cased torch.cuda.get_device_name(); specific names first.
_GPU_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H200", "H200"),
    (r"H100.*(PCIE|NVL)", "H100 PCIe"),
    (r"H100", "H100 SXM"),
    (r"A100.*80\s?GB", "A100 80GB"),
    (r"A100", "A100 40GB"),
    (r"L40S", "L40S"),
    (r"\bL40\b", "L40"),
    (r"RTX A6000", "RTX A6000"),
    (r"RTX 4090", "RTX 4090"),
    (r"\bA10G\b", "A10G"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
)


# Streaming multiprocessors of each whole card (vendor sheets). A MIG slice or a ZeroGPU
# slice reports the same name with fewer of them (spaces 0.51.3 zero/configs.json: "NVIDIA
# H200" with 60 of 132), so its speed is the class's scaled by the share it got.
FULL_CARD_MULTIPROCESSORS: Mapping[str, int] = MappingProxyType(
    {
        "H100 SXM": 132,
        "H100 PCIe": 114,
        "H200": 132,
        "A100 80GB": 108,
        "A100 40GB": 108,
        "L40S": 142,
        "L40": 142,
        "RTX A6000": 84,
        "RTX 4090": 128,
        "A10": 72,
        "A10G": 80,
        "L4": 58,
        "T4": 40,
    }
)


def gpu_class_for(device_name: str, multiprocessors: int | None = None) -> GpuClass:
    """Map e.g. "NVIDIA H100 80GB HBM3" to its class; unknown names get UNKNOWN_GPU. With
    ``multiprocessors`` (torch.cuda.get_device_properties().multi_processor_count) below the
    whole card's, the peaks are scaled down to the slice actually got."""
    name = device_name.upper()
    for pattern, gpu in _GPU_NAME_PATTERNS:
        if re.search(pattern, name):
            full = FULL_CARD_MULTIPROCESSORS[gpu]
            if multiprocessors and 0 < multiprocessors < full:
                return scaled_gpu_class(GPU_CLASSES[gpu], multiprocessors / full)
            return GPU_CLASSES[gpu]
    return UNKNOWN_GPU


def scaled_gpu_class(gpu: GpuClass, share: float) -> GpuClass:
    """The same class with ``share`` of its compute (a MIG or ZeroGPU slice)."""
    return replace(
        gpu,
        half_tflops=gpu.half_tflops * share,
        tf32_tflops=gpu.tf32_tflops * share,
        fp32_tflops=gpu.fp32_tflops * share,
    )


@dataclass(frozen=True)
class TimeEstimate:
    gpu: str
    efficiency: float
    offload: str
    offload_slowdown: float
    step_seconds: float  # one denoising step, offload slowdown included
    transformer_seconds: float  # all steps
    text_encoder_seconds: float
    vae_decode_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.transformer_seconds + self.text_encoder_seconds + self.vae_decode_seconds


def _check_offload(offload: str) -> None:
    if offload not in OFFLOAD_ORDER:
        raise ValueError(f"unknown offload mode {offload!r}; choose one of {OFFLOAD_ORDER}")


def _matmul_flops_per_second(gpu: GpuClass, precision: str) -> float:
    if precision not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {precision!r}")
    return (gpu.fp32_tflops if precision == "fp32" else gpu.half_tflops) * 1e12


def estimate_seconds(
    frames: int,
    height: int,
    width: int,
    gpu: GpuClass,
    steps: int = 100,
    guidance: bool = True,
    efficiency: float = DEFAULT_EFFICIENCY,
    offload: str = "none",
    precision: str = "bf16",
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
) -> TimeEstimate:
    """Compute-bound estimate: FLOPs / (dense peak x efficiency) x offload slowdown.

    The VAE in fp32 runs its convolutions in TF32 (PyTorch's cuDNN default). The same
    efficiency is used for every part; the text encoder and VAE figures are rougher still.
    """
    _check_offload(offload)
    slowdown = OFFLOAD_SLOWDOWN[offload]
    matmul = _matmul_flops_per_second(gpu, precision) * efficiency
    vae_peak = gpu.tf32_tflops if vae_precision == "fp32" else gpu.half_tflops
    step = transformer_flops(config, frames, height, width, guidance=guidance).total
    step_seconds = step / matmul * slowdown
    return TimeEstimate(
        gpu=gpu.name,
        efficiency=efficiency,
        offload=offload,
        offload_slowdown=slowdown,
        step_seconds=step_seconds,
        transformer_seconds=step_seconds * steps,
        text_encoder_seconds=text_encoder_flops(guidance=guidance) / matmul * slowdown,
        vae_decode_seconds=(
            vae_decode_flops(frames, height, width) / (vae_peak * 1e12 * efficiency) * slowdown
        ),
    )


def transformer_activation_bytes(
    config: Mapping[str, Any],
    frames: int,
    height: int,
    width: int,
    precision: str = "bf16",
    guidance: bool = True,
) -> int:
    """Peak activations of one transformer forward, at a block's feed-forward GELU: per token
    and sample, the 4x-wide projection and its GELU output plus four width-wide tensors (the
    block's input, still held by the model's loop; the residual stream; the cross-attention
    output, still bound to a local; the modulated norm output)."""
    dims = _TransformerDims.from_config(config)
    batch = 2 if guidance else 1
    tokens = token_count(frames, height, width, config)
    return batch * tokens * (2 * dims.ff + 4 * dims.width) * PRECISION_BYTES[precision]


def fast_mode_cache_bytes(
    config: Mapping[str, Any],
    frames: int,
    height: int,
    width: int,
    precision: str = "bf16",
    guidance: bool = True,
) -> int:
    """GPU memory fast mode holds while denoising: Pyramid Attention Broadcast keeps every
    hooked self-attention's last output (diffusers 0.42.1 hooks/pyramid_attention_broadcast.py
    :172 ``self.state.cache = output``), one (batch, tokens, width) tensor per block, until
    the pipeline's ``maybe_free_model_hooks`` resets it after the call (pipelines/allegro/
    pipeline_allegro.py:931, pipelines/pipeline_utils.py:1283). 23.4 GB at 88x720x1280."""
    dims = _TransformerDims.from_config(config)
    batch = 2 if guidance else 1
    tokens = token_count(frames, height, width, config)
    return dims.blocks * batch * tokens * dims.width * PRECISION_BYTES[precision]


def text_encoder_activation_bytes(
    precision: str = "bf16", text_tokens: int = DEFAULT_TEXT_TOKENS, t5: T5Geometry = T5_XXL
) -> int:
    """Rough: one prompt at a time (the pipeline encodes the negative prompt separately);
    attention scores, position bias and an fp32 softmax for all heads, plus the gated FF."""
    scores = 3 * t5.heads * text_tokens * text_tokens * 4
    feed_forward = 3 * text_tokens * t5.d_ff * PRECISION_BYTES[precision]
    return scores + feed_forward


def vae_decode_activation_bytes(
    frames: int, height: int, width: int, vae_precision: str = "fp32"
) -> int:
    """Tiled decode: every decoded tile is kept until the blend, plus the larger of one
    tile's decoder peak and the assembled video."""
    element = PRECISION_BYTES[vae_precision]
    tiles, tile_voxels = _tiles(frames, height, width)
    decoded_tiles = tiles * VAE_OUT_CHANNELS * tile_voxels * element
    decoder_peak = VAE_DECODE_PEAK_ELEMENTS_PER_VOXEL * tile_voxels * element
    video = VAE_OUT_CHANNELS * frames * height * width * element
    return decoded_tiles + max(decoder_peak, video)


@dataclass(frozen=True)
class MemoryProfile:
    """Smaller weights, chosen at load time (``--memory-profile``); every one is off by
    default. fp8 storage: diffusers' layerwise casting keeps the transformer's layers in
    float8_e4m3fn and casts each up to the compute precision for its forward (the timestep
    modulation in int8). 8-bit text encoder: torchao int8 weight-only quantization of T5's
    linear layers and embedding via transformers."""

    name: str
    fp8_transformer: bool
    int8_text_encoder: bool
    description: str
    # Offload modes it is known to work with: diffusers' group offloading handles torchao
    # tensors (hooks/group_offloading.py:39-81) and streams layerwise-cast weights like any
    # other; accelerate's per-layer hooks (sequential) are not known to handle either.
    offload_modes: tuple[str, ...] = ("none", "model", "group")


MEMORY_PROFILES: Mapping[str, MemoryProfile] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            MemoryProfile("off", False, False, "weights in the chosen precision", OFFLOAD_ORDER),
            MemoryProfile(
                "fp8-transformer", True, False, "transformer stored in fp8, computed in bf16"
            ),
            MemoryProfile(
                "int8-text-encoder", False, True, "T5 text encoder with int8 weights (torchao)"
            ),
            MemoryProfile("low-memory", True, True, "both: fp8 transformer and int8 T5"),
        )
    }
)
FP8_BYTES = 1
INT8_BYTES = 1
INT8_ROW_BYTES = 5  # torchao 0.18 Int8Tensor: fp32 scale + int8 zero point per output row


def memory_profile(name: str) -> MemoryProfile:
    try:
        return MEMORY_PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown memory profile {name!r}; choose one of {tuple(MEMORY_PROFILES)}"
        ) from None


def _kept_block_parameters(dims: _TransformerDims) -> int:
    """Block parameters layerwise casting leaves alone: norms (the transformer's
    ``_skip_layerwise_casting_patterns``) and the scale-shift table (a bare parameter, not a
    layer)."""
    return (3 * 2 * dims.width if dims.norm_affine else 0) + 6 * dims.width


def _block_bytes(dims: _TransformerDims, precision: str, fp8: bool) -> int:
    element = PRECISION_BYTES[precision]
    if not fp8:
        return _block_parameters(dims) * element
    kept = _kept_block_parameters(dims)
    return (_block_parameters(dims) - kept) * FP8_BYTES + kept * element


def _int8_weight_bytes(rows: int, columns: int) -> int:
    """A torchao int8 weight-only matrix: one byte a weight, a scale and zero point a row."""
    return rows * columns * INT8_BYTES + rows * INT8_ROW_BYTES


def transformer_weight_bytes(
    config: Mapping[str, Any], precision: str, fp8_storage: bool = False
) -> int:
    """Transformer weights; with fp8 storage every linear layer of the blocks and the
    caption projection in 1 byte, adaln_single's weights in int8
    (``loading.store_transformer_in_fp8`` says why), while pos_embed, proj_out, the biases of
    the int8 layers and bare parameters keep ``precision``."""
    dims = _TransformerDims.from_config(config)
    element = PRECISION_BYTES[precision]
    blocks = dims.blocks * _block_bytes(dims, precision, fp8_storage)
    if not fp8_storage:
        return blocks + _non_block_parameters(dims) * element
    caption = _linear(dims.caption, dims.width) + _linear(dims.width, dims.width)
    adaln = _adaln_linears(dims)
    adaln_weights = sum(fan_in * fan_out for fan_in, fan_out in adaln)
    adaln_int8 = sum(_int8_weight_bytes(fan_out, fan_in) for fan_in, fan_out in adaln)
    kept = _non_block_parameters(dims) - caption - adaln_weights
    return blocks + caption * FP8_BYTES + adaln_int8 + kept * element


def text_encoder_weight_bytes(precision: str, int8: bool = False, t5: T5Geometry = T5_XXL) -> int:
    """T5 weights; int8 weight-only stores each linear weight and the shared embedding in 1
    byte plus, per output row (per token for the embedding), an fp32 scale and an int8 zero
    point; norms and the relative position bias keep ``precision``."""
    if not int8:
        return t5.weight_bytes(precision)
    element = PRECISION_BYTES[precision]
    linear = t5.layers * (t5.block_parameters - 2 * t5.d_model)
    rows = t5.layers * (3 * t5.inner + t5.d_model + 2 * t5.d_ff + t5.d_model)
    embedding = t5.vocab * t5.d_model
    kept = t5.parameter_count - linear - embedding
    return (
        linear * INT8_BYTES
        + rows * INT8_ROW_BYTES
        + _int8_weight_bytes(t5.vocab, t5.d_model)
        + kept * element
    )


def int8_embedding_lookup_bytes(precision: str, t5: T5Geometry = T5_XXL) -> int:
    """Transient of one lookup in the int8 embedding: torchao dequantizes the whole table
    (int8_tensor.py:435-440) as a copy in the compute dtype, the zero point subtracted into a
    second one, then the product with the fp32 row scales while the copy lives
    (quant_primitives.py:864-869): the larger of two copies and a copy plus fp32."""
    element = PRECISION_BYTES[precision]
    return t5.vocab * t5.d_model * max(2 * element, element + 4)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak GPU memory of one video; ``parts`` add up to the peak."""

    offload: str
    phase: str  # where the peak falls: "text encoding", "denoising" or "VAE decode"
    parts: tuple[tuple[str, int], ...]

    @property
    def peak_bytes(self) -> int:
        return sum(size for _, size in self.parts)


def estimate_memory(
    offload: str,
    precision: str,
    frames: int,
    height: int,
    width: int,
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    guidance: bool = True,
    fast_mode: bool = False,
    profile: str = "off",
    step_cache: bool = False,
) -> MemoryEstimate:
    """Peak GPU memory with the engine's offload modes (see loading.apply_offload).

    none: all weights stay on the GPU. model: one component at a time. group: block-level
    groups with stream prefetch, so two transformer blocks plus its small non-block layers;
    the text encoder leaf by leaf without a stream (one layer at a time, the largest being
    its 32128x4096 embedding); the VAE stays on the GPU. sequential: one layer at a time, the
    largest being T5's embedding. Fast mode adds its attention cache to denoising, whatever
    the offload mode (fast_mode_cache_bytes).
    """
    _check_offload(offload)
    dims = _TransformerDims.from_config(config)
    element = PRECISION_BYTES[precision]  # transformer and text encoder
    weights = memory_profile(profile)
    if offload not in weights.offload_modes:
        raise ValueError(f"memory profile {profile!r} does not work with {offload!r} offload")
    transformer = transformer_weight_bytes(config, precision, weights.fp8_transformer)
    text_encoder = text_encoder_weight_bytes(precision, weights.int8_text_encoder)
    vae = VAE_PARAMETERS * PRECISION_BYTES[vae_precision]
    activations = {
        "text encoding": text_encoder_activation_bytes(precision),
        "denoising": transformer_activation_bytes(
            config, frames, height, width, precision, guidance
        ),
        "VAE decode": vae_decode_activation_bytes(frames, height, width, vae_precision),
    }
    transformer_label = (
        "transformer weights (fp8 storage)"
        if weights.fp8_transformer
        else f"transformer weights ({precision})"
    )
    text_label = (
        "text encoder weights (int8)"
        if weights.int8_text_encoder
        else f"text encoder weights ({precision})"
    )
    vae_label = f"VAE weights ({vae_precision})"
    if offload == "none":
        everything = (
            (transformer_label, transformer),
            (text_label, text_encoder),
            (vae_label, vae),
        )
        resident = dict.fromkeys(activations, everything)
    elif offload == "model":
        resident = {
            "text encoding": ((text_label, text_encoder),),
            "denoising": ((transformer_label, transformer),),
            "VAE decode": ((vae_label, vae),),
        }
    elif offload == "group":
        block = _block_bytes(dims, precision, weights.fp8_transformer)
        streamed = 2 * block + transformer - dims.blocks * block  # non-block layers as stored
        t5_layer = (  # the shared embedding is the largest
            _int8_weight_bytes(T5_XXL.vocab, T5_XXL.d_model)
            if weights.int8_text_encoder
            else T5_XXL.vocab * T5_XXL.d_model * element
        )
        resident = {
            "text encoding": ((vae_label, vae), ("largest text encoder layer", t5_layer)),
            "denoising": ((vae_label, vae), ("two transformer blocks + embeddings", streamed)),
            "VAE decode": ((vae_label, vae),),
        }
    else:  # sequential
        largest_layer = T5_XXL.vocab * T5_XXL.d_model * element
        resident = dict.fromkeys(activations, (("largest single layer", largest_layer),))
    extras = _denoising_extras(
        config, frames, height, width, precision, guidance, weights, step_cache, fast_mode
    )
    resident["denoising"] = (*resident["denoising"], *extras)
    if weights.int8_text_encoder:
        lookup = (
            "int8 embedding dequantized for the lookup",
            int8_embedding_lookup_bytes(precision),
        )
        resident["text encoding"] = (*resident["text encoding"], lookup)

    def phase_bytes(phase: str) -> int:
        return sum(size for _, size in resident[phase]) + activations[phase]

    phase = max(activations, key=phase_bytes)
    parts = (
        *resident[phase],
        (f"activations ({phase})", activations[phase]),
        ("CUDA workspaces and allocator slack", OVERHEAD_BYTES),
    )
    return MemoryEstimate(offload=offload, phase=phase, parts=parts)


def _denoising_extras(
    config: Mapping[str, Any],
    frames: int,
    height: int,
    width: int,
    precision: str,
    guidance: bool,
    weights: MemoryProfile,
    step_cache: bool,
    fast_mode: bool,
) -> tuple[tuple[str, int], ...]:
    """What the memory profiles, the step cache and fast mode add while denoising."""
    extras: list[tuple[str, int]] = []
    if weights.fp8_transformer:  # one layer at a time cast up to the compute precision
        dims = _TransformerDims.from_config(config)
        largest = max(dims.width * dims.ff, 6 * dims.width * dims.width)  # FF, modulation
        extras.append(("largest layer cast up from 8 bits", largest * PRECISION_BYTES[precision]))
    if step_cache:
        extras.append(
            (
                "step cache buffers",
                step_cache_buffer_bytes(config, frames, height, width, precision, guidance),
            )
        )
    if fast_mode:
        extras.append(
            (
                "fast mode attention cache",
                fast_mode_cache_bytes(config, frames, height, width, precision, guidance),
            )
        )
    return tuple(extras)


@dataclass(frozen=True)
class OffloadChoice:
    mode: str
    reason: str  # for a person, with the numbers behind the choice
    needed_bytes: int


def _gb(size: float) -> str:
    return f"{size / GB:.1f} GB"


def _mode_label(mode: str) -> str:
    return "no offload" if mode == "none" else f"'{mode}' offload"


def choose_offload(
    free_gpu_bytes: int,
    precision: str,
    frames: int,
    height: int,
    width: int,
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    guidance: bool = True,
    margin: float = SAFETY_MARGIN,
    profile: str = "off",
    step_cache: bool = False,
    available_host_bytes: int | None = None,
    group_host_bytes: int = 0,
) -> OffloadChoice:
    """The fastest offload mode whose estimate, plus ``margin``, fits in the free memory
    (among the modes the memory profile works with).

    Group offload also needs ``group_host_bytes`` of pinned host RAM beyond the weights
    already loaded (pinned_host_bytes); it is passed over when that does not fit in
    ``available_host_bytes`` (None: not known)."""
    modes = memory_profile(profile).offload_modes
    needs = {
        mode: estimate_memory(
            mode,
            precision,
            frames,
            height,
            width,
            vae_precision,
            config,
            guidance,
            profile=profile,
            step_cache=step_cache,
        ).peak_bytes
        for mode in modes
    }
    free = _gb(free_gpu_bytes)
    host_note = ""
    for index, mode in enumerate(modes):
        if (
            mode == "group"
            and available_host_bytes is not None
            and group_host_bytes * (1 + margin) > available_host_bytes
        ):
            host_note = (
                f"; 'group' offload would pin ~{_gb(group_host_bytes)} of host RAM, "
                f"{_gb(available_host_bytes)} available"
            )
            continue
        if needs[mode] * (1 + margin) <= free_gpu_bytes:
            reason = f"auto: {_mode_label(mode)} — needs ~{_gb(needs[mode])}, {free} free"
            if index:
                faster = modes[index - 1]
                reason += f" ({_mode_label(faster)} needs ~{_gb(needs[faster])}{host_note})"
            return OffloadChoice(mode, reason, needs[mode])
    last = modes[-1]
    need = needs[last]
    return OffloadChoice(
        last,
        f"auto: {_mode_label(last)} — needs ~{_gb(need)} but only {free} free, so it may "
        "still run out of GPU memory; a shorter or smaller video needs less" + host_note,
        need,
    )


def pinned_host_bytes(tensor_bytes: Iterable[int]) -> int:
    """Pinned host RAM for copies of tensors of these sizes: PyTorch's caching host allocator
    rounds every pinned allocation up to a power of two (torch 2.13.0
    include/ATen/core/CachingHostAllocator.h:300-305, with the default unlimited thresholds
    of c10/core/AllocatorConfig.h:361-363)."""
    return sum(1 << max(size - 1, 0).bit_length() for size in tensor_bytes if size)


def weight_bytes(
    precision: str,
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    profile: str = "off",
) -> int:
    """All of one pipeline's weights as loaded (transformer, T5, VAE) under ``profile``."""
    weights = memory_profile(profile)
    return (
        transformer_weight_bytes(config, precision, weights.fp8_transformer)
        + text_encoder_weight_bytes(precision, weights.int8_text_encoder)
        + VAE_PARAMETERS * PRECISION_BYTES[vae_precision]
    )


def workers_host_bytes(
    offload_modes: Iterable[str],
    precision: str,
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    profile: str = "off",
    weights: tuple[int, int] | None = None,
) -> int:
    """Host RAM for one worker per device with these offload modes. Each offloading worker
    keeps a CPU copy of every weight for as long as it runs (group offload also a pinned
    copy of the transformer: at least its size, pinned_host_bytes rounds each tensor up); a
    worker without offload holds its weights in RAM only while loading them. Workers load
    one after another (allegro.models), so those add one copy on top of the resident ones.
    ``weights``: (all weights, the transformer's) in bytes where known otherwise (a local
    checkpoint's files); else Allegro's from ``config``."""
    modes = list(offload_modes)
    if weights is None:
        weights = (
            weight_bytes(precision, vae_precision, config, profile),
            transformer_weight_bytes(config, precision, memory_profile(profile).fp8_transformer),
        )
    total, transformer = weights
    resident = sum(
        total + (transformer if mode == "group" else 0) for mode in modes if mode != "none"
    )
    return resident + (total if "none" in modes else 0)


def fast_mode_blocker(
    gpu_memory_bytes: int | None,
    compiled: bool,
    offload: str,
    precision: str,
    frames: int,
    height: int,
    width: int,
    vae_precision: str = "fp32",
    config: Mapping[str, Any] = ALLEGRO_TRANSFORMER_CONFIG,
    guidance: bool = True,
    margin: float = SAFETY_MARGIN,
    profile: str = "off",
) -> str | None:
    """Why fast mode cannot run here, or None where it can: compiled blocks (its hooks are
    re-armed every run and count iterations, so torch.compile would recompile the blocks past
    its limit), or a GPU of ``gpu_memory_bytes`` too small for its attention cache on top of
    everything else (None: no GPU, nothing to check)."""
    if compiled:
        return (
            "with --compile its hooks, re-armed every run, would make torch.compile recompile "
            "the transformer blocks until it gives up"
        )
    if gpu_memory_bytes is None:
        return None
    try:
        need = estimate_memory(
            offload,
            precision,
            frames,
            height,
            width,
            vae_precision,
            config,
            guidance,
            fast_mode=True,
            profile=profile,
        ).peak_bytes
    except (KeyError, ValueError):  # a transformer the model does not describe
        return None
    if need * (1 + margin) <= gpu_memory_bytes:
        return None
    cache = fast_mode_cache_bytes(config, frames, height, width, precision, guidance)
    return (
        f"at {frames}x{height}x{width} with {_mode_label(offload)} it needs about {_gb(need)} "
        f"of GPU memory (its attention cache alone {_gb(cache)}), more than this GPU's "
        f"{_gb(gpu_memory_bytes)}"
    )


def memory_table_markdown(
    sizes: tuple[tuple[int, int, int], ...] = OFFICIAL_SIZES, vae_precision: str = "fp32"
) -> str:
    """Estimated peak GPU memory per offload mode and precision, as a Markdown table."""
    columns = [f"{frames}x{height}x{width}" for frames, height, width in sizes]
    lines = [
        f"Estimated peak GPU memory in GB (VAE in {vae_precision}; estimates, not measurements):",
        "",
        "| Offload | Precision | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for mode in OFFLOAD_ORDER:
        for precision in PRECISIONS:
            cells = [
                f"{estimate_memory(mode, precision, *size, vae_precision).peak_bytes / GB:.1f}"
                for size in sizes
            ]
            lines.append(f"| {mode} | {precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_profile_table_markdown(
    sizes: tuple[tuple[int, int, int], ...] = OFFICIAL_SIZES,
    precision: str = "bf16",
    vae_precision: str = "fp32",
) -> str:
    """Estimated peak GPU memory per memory profile and the offload modes it works with."""
    columns = [f"{frames}x{height}x{width}" for frames, height, width in sizes]
    lines = [
        f"Memory profiles: estimated peak GPU memory in GB ({precision} compute, VAE in "
        f"{vae_precision}; estimates, not measurements):",
        "",
        "| Memory profile | Offload | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for profile in MEMORY_PROFILES.values():
        for mode in profile.offload_modes:
            if mode == "sequential":
                continue
            cells = [
                f"{estimate_memory(mode, precision, *size, vae_precision, profile=profile.name).peak_bytes / GB:.1f}"  # noqa: E501
                for size in sizes
            ]
            lines.append(f"| {profile.name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fast_mode_memory_table_markdown(
    sizes: tuple[tuple[int, int, int], ...] = OFFICIAL_SIZES, vae_precision: str = "fp32"
) -> str:
    """Estimated peak GPU memory with fast mode on (bf16), as a Markdown table."""
    columns = [f"{frames}x{height}x{width}" for frames, height, width in sizes]
    cache = [f"{fast_mode_cache_bytes(ALLEGRO_TRANSFORMER_CONFIG, *s) / GB:.1f}" for s in sizes]
    lines = [
        "With fast mode on, in GB (bf16, VAE in "
        f"{vae_precision}): its attention cache is held while denoising, whatever the offload:",
        "",
        "| Offload | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        "| (attention cache alone) | " + " | ".join(cache) + " |",
    ]
    for mode in OFFLOAD_ORDER:
        peaks = [
            estimate_memory(mode, "bf16", *size, vae_precision, fast_mode=True).peak_bytes
            for size in sizes
        ]
        cells = [f"{peak / GB:.1f}" for peak in peaks]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
