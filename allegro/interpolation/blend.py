"""Plain average of the two neighbours: the fallback that needs nothing and never fails.

It ghosts on motion (two half-transparent copies of anything that moved), so it is only the
default when nothing better can run, and the flow method returns it for pairs whose motion
estimate failed.
"""

from __future__ import annotations

import numpy as np


def blend_pairs(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel mean of two uint8 arrays of the same shape, rounded half up."""
    # (a + b + 1) // 2 without widening to 16 bits, which would cost two full-size copies:
    # halve each, then add back the 1 that either odd low bit contributes after rounding.
    return (before >> 1) + (after >> 1) + ((before | after) & 1)


class BlendInterpolator:
    """The frame halfway between two frames is their average."""

    name = "blend"
    batch_size = 16

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return blend_pairs(before, after)

    def midframes_yuv420p(
        self, before: np.ndarray, after: np.ndarray, full_range: bool = False
    ) -> np.ndarray:
        # The mean of I420 frames is the mean of each plane, whatever their range.
        return blend_pairs(before, after)
