"""The step cache: cache-dit's DBCache (Dual Block Cache) on Allegro's transformer blocks.

On each step the first blocks always run; when their output has changed little since the
previous step (relative L1 distance under a threshold), the remaining blocks are skipped
and their previous residual is reused. The settings are the ones cache-dit's authors
published for Allegro (``allegro.costs.STEP_CACHE_*``).

cache-dit wraps ``AllegroPipeline.__call__`` on the class, not the instance
(cache_dit/caching/cache_adapters/cache_adapter.py:205-222, cache-dit 1.5.3), so the cache
is armed for one run only and released right after it (``armed_step_cache``): between
runs the class and the transformer are the plain diffusers ones, and no cache state can
leak from one video into the next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from allegro.costs import (
    STEP_CACHE_FIRST_BLOCKS,
    STEP_CACHE_LAST_BLOCKS,
    STEP_CACHE_THRESHOLD,
    STEP_CACHE_WARMUP_STEPS,
)


@dataclass(frozen=True)
class StepCacheStats:
    """What the step cache did in one run, from cache-dit's own statistics."""

    steps: int
    cached_steps: tuple[int, ...]  # indices of the steps whose later blocks were reused
    blocks: int
    first_blocks: int = STEP_CACHE_FIRST_BLOCKS
    last_blocks: int = STEP_CACHE_LAST_BLOCKS
    threshold: float = STEP_CACHE_THRESHOLD
    warmup_steps: int = STEP_CACHE_WARMUP_STEPS

    @property
    def computed_blocks(self) -> int:
        """Transformer block computations actually run."""
        skipped_per_step = self.blocks - self.first_blocks - self.last_blocks
        return self.steps * self.blocks - len(self.cached_steps) * max(skipped_per_step, 0)

    @property
    def kept_fraction(self) -> float:
        return self.computed_blocks / max(self.steps * self.blocks, 1)

    def settings(self) -> dict[str, Any]:
        """For the video's settings file."""
        return {
            **asdict(self),
            "cached_steps": list(self.cached_steps),
            "computed_blocks": self.computed_blocks,
            "kept_fraction": round(self.kept_fraction, 4),
            "library": "cache-dit DBCache",
        }

    @staticmethod
    def summary_of(settings: Mapping[str, Any]) -> str:
        """One line for a person, from the statistics saved with a video."""
        steps, blocks = settings["steps"], settings["blocks"]
        return (
            f"step cache: {len(settings['cached_steps'])} of {steps} steps reused the later "
            f"blocks; {settings['computed_blocks']} of {steps * blocks} block computations "
            f"run ({settings['kept_fraction']:.0%})"
        )


def _import_cache_dit():
    # cache-dit logs every arm and release to stdout at INFO/WARNING, with a level read from
    # this variable at import (cache_dit/envs.py, logger.py): keep the console for our events.
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    import cache_dit

    return cache_dit


def _cache_config(steps: int):
    from cache_dit import DBCacheConfig

    return DBCacheConfig(
        Fn_compute_blocks=STEP_CACHE_FIRST_BLOCKS,
        Bn_compute_blocks=STEP_CACHE_LAST_BLOCKS,
        max_warmup_steps=STEP_CACHE_WARMUP_STEPS,
        residual_diff_threshold=STEP_CACHE_THRESHOLD,
        # Allegro runs both guidance halves in one batch (cache-dit's Allegro adapter).
        enable_separate_cfg=False,
        num_inference_steps=steps,
    )


@contextlib.contextmanager
def armed_step_cache(pipe, steps: int) -> Iterator[list[StepCacheStats]]:
    """Arm the step cache for one pipeline call; the list it yields receives the run's
    statistics when the call ends (empty if it failed)."""
    cache_dit = _import_cache_dit()
    stats: list[StepCacheStats] = []
    cache_dit.enable_cache(pipe, cache_config=_cache_config(steps))
    try:
        yield stats
        stats.append(read_stats(pipe, steps))
    finally:
        cache_dit.disable_cache(pipe)


def read_stats(pipe, steps: int) -> StepCacheStats:
    """cache-dit's statistics of the last call: the cached step indices of the blocks."""
    cache_dit = _import_cache_dit()

    block_stats = cache_dit.summary(pipe, logging=False)[0]
    return StepCacheStats(
        steps=steps,
        cached_steps=tuple(int(step) for step in block_stats.cached_steps),
        blocks=len(pipe.transformer.transformer_blocks),
    )
