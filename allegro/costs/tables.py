"""The README's and ``--help``'s tables of estimated peak GPU memory."""

from __future__ import annotations

from allegro.costs.flops import ALLEGRO_TRANSFORMER_CONFIG, GB, PRECISIONS
from allegro.costs.memory import (
    MEMORY_PROFILES,
    OFFLOAD_ORDER,
    estimate_memory,
    fast_mode_cache_bytes,
)

OFFICIAL_SIZES: tuple[tuple[int, int, int], ...] = (
    (88, 720, 1280),
    (40, 720, 1280),
    (40, 368, 640),
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
