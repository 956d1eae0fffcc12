"""Fast and small on paper: the cost model's minutes and GB for one official video.

88x720x1280, 100 steps, guidance 7.5, on an H100 SXM at the efficiency the official
20 minutes imply. Side by side: no speed-up, Pyramid Attention Broadcast (fast mode), and the
step cache (cache-dit's DBCache) at the fractions of block computations its authors'
published runs imply, each with every memory profile and offload mode that works with it.

Nothing here is measured on a GPU: these are the cost model's figures (allegro/costs.py). A
step cache skips work depending on the video, so its fraction of block computations kept is
an input, taken from cache-dit's README (commit d2fbb3b):
  - Allegro, F8B0 R0.26, 27 of 100 steps cached (1.36x measured by them): 0.80 kept;
  - Mochi-1, 1.8x, and HunyuanVideo, 2.1x (comparable video DiTs; fraction = 1/speedup).

Run: python bench/fast_and_small.py
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allegro import costs

SIZE = (88, 720, 1280)
STEPS = 100
GPU = costs.GPU_CLASSES["H100 SXM"]
TARGET_MINUTES = 8.0
TARGET_GB = 12.0
MAX_SLOWDOWN = 0.10


def pab_cached_bytes(frames: int, height: int, width: int) -> int:
    """Pyramid Attention Broadcast keeps every hooked attention's last output for the whole
    call: 32 x (2, tokens, 2304) in bf16 (23.4 GB here; ALLEGRO_FACTS.md). The memory model
    gains this term with issue 8; until then this bench adds it itself."""
    config = costs.ALLEGRO_TRANSFORMER_CONFIG
    width_ = config["num_attention_heads"] * config["attention_head_dim"]
    tokens = costs.token_count(frames, height, width, config)
    return config["num_layers"] * 2 * tokens * width_ * 2


@dataclass(frozen=True)
class Row:
    speed: str
    profile: str
    offload: str
    vae: str
    minutes: float
    gb: float


def speed_modes() -> list[tuple[str, float, bool]]:
    """(label, transformer speed-up, step cache on)."""
    modes = [("plain", 1.0, False)]
    modes.append(("PAB (fast mode)", costs.fast_mode_speedup(*SIZE, STEPS), False))
    for run in costs.PUBLISHED_CACHE_RUNS:
        speedup = costs.step_cache_speedup(run.kept_fraction, *SIZE)
        modes.append((f"step cache @{run.kept_fraction:.2f} ({run.model})", speedup, True))
    return modes


def evaluate(speed: str, speedup: float, step_cache: bool, profile, offload, vae) -> Row:
    estimate = costs.estimate_seconds(
        *SIZE, GPU, steps=STEPS, offload=offload, precision="bf16", vae_precision=vae
    )
    seconds = estimate.total_seconds - estimate.transformer_seconds * (1 - 1 / speedup)
    memory = costs.estimate_memory(
        offload, "bf16", *SIZE, vae, profile=profile.name, step_cache=step_cache
    )
    peak = memory.peak_bytes
    if speed.startswith("PAB"):  # its cached outputs live through denoising
        denoise = sum(size for label, size in memory.parts if label != "activations (VAE decode)")
        peak = max(peak, denoise + pab_cached_bytes(*SIZE))
    return Row(speed, profile.name, offload, vae, seconds / 60, peak / costs.GB)


def main() -> None:
    rows = [
        evaluate(label, speedup, cached, profile, offload, vae)
        for (label, speedup, cached), profile, vae in itertools.product(
            speed_modes(), costs.MEMORY_PROFILES.values(), ("fp32", "bf16")
        )
        for offload in profile.offload_modes
    ]
    print(
        f"{SIZE[0]}x{SIZE[1]}x{SIZE[2]}, {STEPS} steps, {GPU.name}, efficiency "
        f"{costs.DEFAULT_EFFICIENCY} (cost model; not measured)\n"
    )
    print("No offload, VAE in fp32 (the official setting):")
    print(f"{'speed-up':<34} " + " ".join(f"{p:>22}" for p in costs.MEMORY_PROFILES))
    for label, _speedup, _cached in speed_modes():
        cells = []
        for name in costs.MEMORY_PROFILES:
            row = next(
                r
                for r in rows
                if (r.speed, r.profile, r.offload, r.vae) == (label, name, "none", "fp32")
            )
            cells.append(f"{row.minutes:5.1f} min {row.gb:5.1f} GB")
        print(f"{label:<34} " + " ".join(f"{cell:>22}" for cell in cells))

    print(
        f"\nEvery combination within {TARGET_GB:.0f} GB, fastest first "
        "(slowdown: against the same speed-up with no offload and no profile):"
    )
    baseline = {
        r.speed: r.minutes for r in rows if (r.profile, r.offload, r.vae) == ("off", "none", "fp32")
    }
    fitting = sorted((r for r in rows if r.gb <= TARGET_GB), key=lambda r: r.minutes)
    for row in fitting[:12]:
        slowdown = row.minutes / baseline[row.speed] - 1
        print(
            f"  {row.minutes:5.1f} min {row.gb:5.1f} GB  {row.speed:<34} profile {row.profile:<18}"
            f" offload {row.offload:<6} VAE {row.vae}  slowdown {slowdown:+.0%}"
        )

    def slowdown(row: Row) -> float:
        return row.minutes / baseline[row.speed] - 1

    print(
        f"\nTarget: <= {TARGET_MINUTES:.0f} min, and <= {TARGET_GB:.0f} GB at < "
        f"{MAX_SLOWDOWN:.0%} slowdown."
    )
    fastest = min(rows, key=lambda r: (r.minutes, r.gb))
    smallest = min((r for r in rows if slowdown(r) < MAX_SLOWDOWN), key=lambda r: r.gb)
    for title, row in (
        ("Fastest", fastest),
        (f"Least memory at < {MAX_SLOWDOWN:.0%} slowdown", smallest),
        (f"Fastest within {TARGET_GB:.0f} GB", fitting[0] if fitting else None),
    ):
        if row is None:
            print(f"{title}: none")
            continue
        print(
            f"{title}: {row.speed}, profile {row.profile}, offload {row.offload}, VAE "
            f"{row.vae}: {row.minutes:.1f} min, {row.gb:.1f} GB (slowdown {slowdown(row):+.0%})"
        )
    print(
        "Why: the step cache is the only option that removes FLOPs at scale (PAB removes fewer "
        "and keeps 23 GB of outputs); memory profiles shrink weights, but at this size the "
        "denoising activations (8.8 GB) and the fp32 VAE decode (10.1 GB) set the floor, so "
        "12 GB needs an offload mode or a bf16 VAE as well."
    )


if __name__ == "__main__":
    main()
