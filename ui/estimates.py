"""How long a request will take on the machine the model was loaded on, from the engine's cost
model (``allegro.costs``), and the short hint shown next to Generate."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# H100/H200 MIG slices: "3g" is 3 of the 7 compute slices (ZeroGPU lends such slices).
_MIG_SLICE = re.compile(r"MIG\s+(\d)g\.", re.IGNORECASE)
MIG_SLICES = 7


@dataclass(frozen=True)
class Hardware:
    """What the estimate needs about the loaded model and its machine."""

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
    def gpu_label(self) -> str:
        if self.gpu_name is None:
            return "CPU"
        from allegro import costs

        gpu = costs.gpu_class_for(self.gpu_name)
        return self.gpu_name if gpu is costs.UNKNOWN_GPU else gpu.name


def _gpu_class(hardware: Hardware):
    """The cost model's class for the GPU, scaled to the share of it this process got: from
    its multiprocessor count where known (ZeroGPU names the whole card), else from a MIG
    profile in its name."""
    from allegro import costs

    gpu_name = hardware.gpu_name or ""
    if hardware.multiprocessors:
        return costs.gpu_class_for(gpu_name, hardware.multiprocessors)
    gpu = costs.gpu_class_for(gpu_name)
    match = _MIG_SLICE.search(gpu_name.upper())
    if match:
        gpu = costs.scaled_gpu_class(gpu, int(match.group(1)) / MIG_SLICES)
    return gpu


def estimate_seconds(
    hardware: Hardware,
    frames: int,
    height: int,
    width: int,
    steps: int,
    fast_mode: bool = False,
    step_cache: bool = False,
) -> float | None:
    """Seconds for one video on ``hardware``; None where the cost model cannot say (CPU,
    or a transformer it does not model)."""
    if hardware.gpu_name is None:
        return None
    from allegro import costs

    config = hardware.transformer_config or costs.ALLEGRO_TRANSFORMER_CONFIG
    try:
        estimate = costs.estimate_seconds(
            frames,
            height,
            width,
            _gpu_class(hardware),
            steps=steps,
            offload=hardware.offload if hardware.offload in costs.OFFLOAD_SLOWDOWN else "none",
            precision=hardware.precision,
            vae_precision=hardware.vae_precision,
            config=config,
        )
    except (KeyError, ValueError):
        return None
    seconds = estimate.total_seconds
    if fast_mode:
        speedup = costs.fast_mode_speedup(frames, height, width, steps, config)
        seconds -= estimate.transformer_seconds * (1 - 1 / speedup)
    if step_cache:  # at the fraction of block computations cache-dit's authors published
        speedup = costs.step_cache_speedup(
            costs.PUBLISHED_CACHE_RUNS[0].kept_fraction, frames, height, width, config
        )
        seconds -= estimate.transformer_seconds * (1 - 1 / speedup)
    return seconds


def estimate_memory_bytes(
    hardware: Hardware,
    frames: int,
    height: int,
    width: int,
    step_cache: bool = False,
    fast_mode: bool = False,
) -> int | None:
    """The memory model's peak for this request with the loaded offload and profile."""
    if hardware.gpu_name is None:
        return None
    from allegro import costs

    try:
        return costs.estimate_memory(
            hardware.offload,
            hardware.precision,
            frames,
            height,
            width,
            hardware.vae_precision,
            hardware.transformer_config or costs.ALLEGRO_TRANSFORMER_CONFIG,
            fast_mode=fast_mode,
            profile=hardware.memory_profile,
            step_cache=step_cache,
        ).peak_bytes
    except (KeyError, ValueError):
        return None


# What each option is known to do: the libraries' authors' own figures; nothing of the
# quality is measured here (no real weights).
OPTION_NOTES = {
    "step_cache": "step cache: cache-dit's authors report 1.36x for Allegro with these "
    "settings (27 of 100 steps cached) and show its video beside the plain one; quality "
    "is not measured here",
    "fp8": "fp8 storage: diffusers keeps norms and modulation in bf16 because fp8 there "
    "degrades results; no published quality figures for Allegro, not measured here",
    "int8": "8-bit T5: int8 weight-only (torchao); on the tiny test model prompt embeddings "
    "stay within 3% (measured); on T5-XXL not measured here",
}


def options_note(step_cache: bool, memory_profile: str) -> str:
    """The known effects of the options in use, for the hint under Generate."""
    from allegro import costs

    notes = []
    if step_cache:
        notes.append(OPTION_NOTES["step_cache"])
    profile = costs.MEMORY_PROFILES.get(memory_profile)
    if profile is not None and profile.fp8_transformer:
        notes.append(OPTION_NOTES["fp8"])
    if profile is not None and profile.int8_text_encoder:
        notes.append(OPTION_NOTES["int8"])
    return "; ".join(notes)


def fast_mode_notice(hardware: Hardware | None, frames: int, height: int, width: int) -> str:
    """What the hint says when fast mode cannot run on this machine ("" where it can)."""
    if hardware is None or hardware.gpu_name is None:
        return ""
    from allegro import costs

    reason = costs.fast_mode_blocker(
        hardware.gpu_memory_bytes,
        hardware.compiled,
        hardware.offload if hardware.offload in costs.OFFLOAD_SLOWDOWN else "none",
        hardware.precision,
        frames,
        height,
        width,
        hardware.vae_precision,
        hardware.transformer_config or costs.ALLEGRO_TRANSFORMER_CONFIG,
        profile=hardware.memory_profile,
    )
    return f" Fast mode will be switched off: {reason}." if reason else ""


def format_duration(seconds: float) -> str:
    """42 s, 3 min 5 s, 21 min, 1 h 5 min: as precise as a person needs."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def cost_hint(
    seconds: float | None,
    hardware: Hardware | None,
    memory_bytes: int | None = None,
    note: str = "",
) -> str:
    """The line next to Generate: "about 21 min on this H100 SXM"."""
    if hardware is None:
        return ""
    if hardware.gpu_name is None:
        return "Runs on the CPU (no NVIDIA GPU found)."
    if seconds is None:
        return f"Runs on this {hardware.gpu_label}."
    rounded = f"about {format_duration(seconds)}" if seconds >= 60 else "under a minute"
    memory = f", about {memory_bytes / 1e9:.1f} GB of GPU memory" if memory_bytes else ""
    line = f"{rounded[0].upper()}{rounded[1:]}{memory} on this {hardware.gpu_label} (estimate)."
    return f"{line} {note[0].upper()}{note[1:]}." if note else line
