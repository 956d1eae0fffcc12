"""How long a request will take on the machine the model was loaded on, from the engine's cost
model (``allegro.costs``), and the short hint shown next to Generate."""

from __future__ import annotations

from dataclasses import replace

from allegro.costs import Hardware, RequestShape, estimate_request, request_shape

__all__ = [
    "Hardware",
    "RequestShape",
    "estimate_memory_bytes",
    "estimate_seconds",
    "request_hint",
    "request_shape",
]


def estimate_seconds(hardware: Hardware, shape: RequestShape) -> float | None:
    """Seconds for one whole video on ``hardware`` (the cost model's one estimator); None
    where it cannot say (CPU, or a transformer it does not model)."""
    estimate = estimate_request(shape, hardware)
    return None if estimate is None else estimate.total_seconds


def estimate_memory_bytes(hardware: Hardware, shape: RequestShape) -> int | None:
    """The memory model's peak for this request with the loaded offload and profile."""
    if hardware.gpu_name is None:
        return None
    from allegro import costs

    try:
        return costs.estimate_memory(
            hardware.offload,
            hardware.precision,
            *shape.size,
            hardware.vae_precision,
            hardware.config,
            shape.guidance,
            fast_mode=shape.fast_mode,
            profile=hardware.memory_profile,
            step_cache=shape.step_cache,
        ).peak_bytes
    except (KeyError, ValueError):
        return None


# What each option is known to do: the libraries' authors' own figures; nothing of the
# quality is measured here (no real weights).
OPTION_NOTES = {
    "step_cache": "step cache: cache-dit's authors report 1.36x for Allegro with these "
    "settings (27 of 100 steps cached) and show its video beside the plain one; quality "
    "is not measured here",
    "fp8": "fp8 storage: diffusers names norms and modulation as where fp8 degrades "
    "results, so the modulation is int8 with a scale per row; no published quality "
    "figures for Allegro, not measured here",
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


def fast_mode_notice(hardware: Hardware | None, shape: RequestShape) -> str:
    """What the hint says when fast mode cannot run on this machine ("" where it can)."""
    if hardware is None or hardware.gpu_name is None:
        return ""
    from allegro import costs

    reason = costs.fast_mode_blocker(
        hardware.gpu_memory_bytes,
        hardware.compiled,
        hardware.modelled_offload,
        hardware.precision,
        *shape.size,
        hardware.vae_precision,
        hardware.config,
        shape.guidance,
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


def request_hint(hardware: Hardware | None, shape: RequestShape) -> str:
    """The hint next to Generate for ``shape``: time, memory and the options' known effects,
    from the same estimator as the engine's ETA and ZeroGPU's duration."""
    if hardware is None or hardware.gpu_name is None:
        return cost_hint(None, hardware)
    notice = fast_mode_notice(hardware, shape) if shape.fast_mode else ""
    if notice:  # the engine will switch it off
        shape = replace(shape, fast_mode=False)
    seconds = estimate_seconds(hardware, shape)
    memory = estimate_memory_bytes(hardware, shape)
    note = options_note(shape.step_cache, hardware.memory_profile)
    return cost_hint(seconds, hardware, memory, note) + notice
