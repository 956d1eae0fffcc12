"""The model's shape and its FLOPs: the released transformer's config, parameter counts, tokens,
FLOPs per denoising step, and what fast mode and the step cache skip.

A multiply-add is 2 FLOPs. Only matrix products are counted: linear layers, the patch
embedding convolution and attention's two products (QK^T and AV), which are what
``torch.utils.flop_counter`` counts; the tests check this model against it on the real
layer shapes. Norms, softmax, RoPE, GELU, bias and residual adds are left out (under 1%).
With classifier-free guidance the pipeline runs the transformer on a batch of two, so
every product runs twice. The released model at 88x720x1280 (79,200 tokens) comes out at
4.48 PFLOP per step, 448 PFLOP for 100 steps, 82.6% of it in self-attention: the public
figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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
