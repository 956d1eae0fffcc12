"""The one small interface every frame-interpolation method implements.

A method gets batches of neighbouring frame pairs and returns the frame halfway between
each pair. Frames are RGB uint8 arrays of shape (B, H, W, 3). Scene-cut detection,
frame ordering, progress and cancel live in the driver, not in methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Availability:
    """Whether a method can run here; ``reason`` says why not (shown in the UI)."""

    available: bool
    reason: str = ""


class Interpolator(Protocol):
    name: str
    batch_size: int

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB pairs -> (B, H, W, 3) uint8 RGB frames at t = 0.5."""
        ...
