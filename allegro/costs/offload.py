"""Offload policy: the fastest offload mode whose memory estimate fits the GPU (and, for group
offload, the host RAM), and whether fast mode's attention cache fits at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from allegro.costs.flops import ALLEGRO_TRANSFORMER_CONFIG, GB
from allegro.costs.memory import (
    estimate_memory,
    fast_mode_cache_bytes,
    memory_profile,
)

SAFETY_MARGIN = 0.10


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
