"""The one small interface every frame-interpolation method implements.

A method gets batches of neighbouring frame pairs and returns the frame halfway between
each pair. Frames are RGB uint8 arrays of shape (B, H, W, 3). A method may also take
frames as a video decoder hands them over, I420 (yuv420p: Y, then U and V at half size,
(B, 3H/2, W)), with ``midframes_yuv420p(before, after, full_range)``: the interpolate
command then goes from decoder to encoder without colour conversions. ``full_range``: luma
spans 0..255 (a phone's ``yuvj420p``) rather than video's 16..235. Scene-cut detection,
frame ordering, progress and cancel live in the driver, not in methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

PixelFormat = Literal["rgb24", "yuv420p"]


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


def takes_yuv420p(interpolator: Interpolator) -> bool:
    """Whether the method has ``midframes_yuv420p``: (B, 3H/2, W) I420 pairs -> I420 frames
    (keyword ``full_range``: whether their luma spans 0..255 rather than 16..235)."""
    return callable(getattr(interpolator, "midframes_yuv420p", None))
