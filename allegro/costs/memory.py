"""Peak GPU memory per offload mode and memory profile, and host RAM for the workers.

Peak = weights on the GPU in the heaviest phase (text encoding, denoising or VAE decode)
+ that phase's activations + a fixed allowance for CUDA workspaces and allocator slack.
Weights come from parameter counts. Activations come from the diffusers 0.42.1 code,
traced on the meta device: the transformer peaks at a feed-forward GELU (SDPA never
materialises the tokens^2 score matrix), the VAE inside one decoded tile plus the buffer
that keeps every decoded tile. The allowance (0.6 GB) is the one fitted constant: with
it, no offload in bf16 (VAE fp32) needs 26.5 GB against the published 27.5 GB, and
sequential offload with everything in bf16 needs 9.6 GB against the published "9.3G
BF16". With the VAE in fp32 (the default) the tiled decode, about 10.1 GB of
activations, sets the floor of every offload mode at 88x720x1280."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from allegro.costs.flops import (
    ALLEGRO_TRANSFORMER_CONFIG,
    DEFAULT_TEXT_TOKENS,
    GB,
    PRECISION_BYTES,
    T5_XXL,
    VAE_DECODE_PEAK_ELEMENTS_PER_VOXEL,
    VAE_OUT_CHANNELS,
    VAE_PARAMETERS,
    T5Geometry,
    _adaln_linears,
    _block_parameters,
    _linear,
    _non_block_parameters,
    _tiles,
    _TransformerDims,
    token_count,
)

OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
OVERHEAD_BYTES = int(0.6 * GB)  # CUDA/cuDNN workspaces, allocator rounding and fragmentation


def _check_offload(offload: str) -> None:
    if offload not in OFFLOAD_ORDER:
        raise ValueError(f"unknown offload mode {offload!r}; choose one of {OFFLOAD_ORDER}")


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
