"""Time: one request's seconds on a class of GPU, and the one estimator the engine's ETA, the
page's hint and ZeroGPU's duration all call (``estimate_request``).

FLOPs divided by a GPU's dense peak times an efficiency. 0.38 is what the official 20 minutes
on one H100 implies; other GPUs and sizes will differ. Offload slowdowns are rough factors,
not measurements. Fast mode and the step cache take off the transformer time they save
(fast_mode_speedup; step_cache_speedup at the fraction cache-dit's authors published)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from allegro.costs.flops import (
    ALLEGRO_TRANSFORMER_CONFIG,
    PRECISION_BYTES,
    PUBLISHED_CACHE_RUNS,
    fast_mode_speedup,
    step_cache_speedup,
    text_encoder_flops,
    ti2v_branch_flops,
    transformer_flops,
    vae_decode_flops,
    vae_encode_flops,
)
from allegro.costs.gpus import UNKNOWN_GPU, GpuClass, gpu_class_for, lent_gpu_class
from allegro.costs.memory import OFFLOAD_ORDER, _check_offload

if TYPE_CHECKING:
    from allegro.request import GenerationRequest

# Rough factors on compute time. Model offload moves each component once per video; group
# offload streams transformer blocks every step, overlapped with compute; sequential
# offload moves every layer every step without overlap (users report 40-70 min on an H100
# against the official 20 min, so 2-3.5x).
OFFLOAD_SLOWDOWN: Mapping[str, float] = MappingProxyType(
    {"none": 1.0, "model": 1.05, "group": 1.2, "sequential": 2.75}
)
DEFAULT_EFFICIENCY = 0.38


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
    image_seconds: float = 0.0  # image to video: encoding the condition, the TI2V branches

    @property
    def total_seconds(self) -> float:
        return (
            self.transformer_seconds
            + self.text_encoder_seconds
            + self.vae_decode_seconds
            + self.image_seconds
        )

    @property
    def after_text_seconds(self) -> float:
        """What is left once the prompts are encoded (the engine's ETA as denoising starts)."""
        return self.total_seconds - self.text_encoder_seconds


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
class RequestShape:
    """What a request asks that its cost depends on: the one record the time and memory
    estimates take (``request_shape`` makes it from a GenerationRequest)."""

    frames: int
    height: int
    width: int
    steps: int = 100
    guidance: bool = True  # classifier-free guidance (scale above 1): the transformer runs twice
    fast_mode: bool = False
    step_cache: bool = False
    image_to_video: bool = False

    @property
    def size(self) -> tuple[int, int, int]:
        return self.frames, self.height, self.width


def request_shape(request: GenerationRequest) -> RequestShape:
    """The cost-relevant part of a resolved request (frames, height and width set). An
    unset guidance scale is the official one (above 1); diffusers guides when the scale is
    above 1 (pipeline_allegro.py, ``do_classifier_free_guidance``)."""
    if request.frames is None or request.height is None or request.width is None:
        raise ValueError("request_shape needs a resolved request (its size set)")
    scale = request.guidance_scale
    return RequestShape(
        frames=request.frames,
        height=request.height,
        width=request.width,
        steps=int(request.steps),
        guidance=scale is None or scale > 1,
        fast_mode=bool(request.fast_mode),
        step_cache=bool(request.step_cache),
        image_to_video=request.image_to_video,
    )


@dataclass(frozen=True)
class Hardware:
    """What the estimates need about the loaded model and its machine."""

    gpu_name: str | None  # torch.cuda.get_device_name(); None when running on the CPU
    offload: str = "none"
    precision: str = "bf16"
    vae_precision: str = "fp32"
    transformer_config: Mapping[str, Any] | None = None  # None: the released Allegro's
    memory_profile: str = "off"
    gpu_memory_bytes: int | None = None  # the GPU's capacity, where known
    multiprocessors: int | None = None  # SMs of the GPU or slice actually got, where known
    compiled: bool = False

    @property
    def config(self) -> Mapping[str, Any]:
        return self.transformer_config or ALLEGRO_TRANSFORMER_CONFIG

    @property
    def gpu_label(self) -> str:
        if self.gpu_name is None:
            return "CPU"
        gpu = gpu_class_for(self.gpu_name)
        return self.gpu_name if gpu is UNKNOWN_GPU else gpu.name

    @property
    def modelled_offload(self) -> str:
        """The offload mode as the cost model knows it (anything else counts as none)."""
        return self.offload if self.offload in OFFLOAD_ORDER else "none"


def estimate_request(
    shape: RequestShape, hardware: Hardware, efficiency: float = DEFAULT_EFFICIENCY
) -> TimeEstimate | None:
    """The one time estimate: ``shape`` on ``hardware``, guidance, fast mode, the step cache
    and image to video counted. None where the cost model cannot say (the CPU, or a
    transformer it does not model)."""
    if hardware.gpu_name is None:
        return None
    gpu = lent_gpu_class(hardware.gpu_name, hardware.multiprocessors)
    options: dict[str, Any] = {
        "steps": shape.steps,
        "guidance": shape.guidance,
        "efficiency": efficiency,
        "offload": hardware.modelled_offload,
        "precision": hardware.precision,
        "vae_precision": hardware.vae_precision,
        "config": hardware.config,
    }
    try:
        plain = estimate_seconds(*shape.size, gpu, **options)
        image = ti2v_extra_seconds(*shape.size, gpu, **options) if shape.image_to_video else 0.0
        saved = 0.0  # share of the transformer's time skipped
        if shape.fast_mode:
            speedup = fast_mode_speedup(*shape.size, shape.steps, hardware.config)
            saved += 1 - 1 / speedup
        if shape.step_cache:  # at the fraction of block computations cache-dit's authors published
            kept = PUBLISHED_CACHE_RUNS[0].kept_fraction
            saved += 1 - 1 / step_cache_speedup(kept, *shape.size, hardware.config)
    except (KeyError, ValueError):
        return None
    return replace(
        plain,
        step_seconds=plain.step_seconds * (1 - saved),
        transformer_seconds=plain.transformer_seconds * (1 - saved),
        image_seconds=image,
    )
