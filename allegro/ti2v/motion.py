"""Time-to-Move (TTM, Rotstein et al., ICLR 2026): motion control without training, on
Allegro-TI2V.

The person gives a crude animation of the first frame (the *motion signal*) and a mask of
what moves in it. Denoising starts part-way, from the motion signal's latents noised to that
step (``tweak``: the steps before it are skipped), and inside the mask the latents are held
to the motion signal, noised to each next step, for longer (until ``strong``): "dual-clock
denoising". Everything else is image to video as it is (first-frame conditioning included).

Ported from the authors' CogVideoX image-to-video pipeline (``pipelines/cog_pipeline.py``
in github.com/time-to-move/TTM, Apache-2.0): steps 9 and 10 of its ``__call__``. What
differs, and why:
- the latent mask follows Allegro's VAE, which turns each run of 4 frames into one latent
  frame with no separate first frame (``motion_latent_mask``);
- clocks are fractions of the steps (Allegro samples 100 steps, TTM's examples 50);
- the fixed noise is the pipeline's own initial noise (TTM draws a second one), so a motion
  run draws exactly what a plain run draws and the seed means the same thing;
- ``tweak = strong = 0`` is plain image to video, bit for bit (TTM would still start from
  the motion signal noised to the first step).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MotionClocks:
    """When denoising starts outside (``tweak``) and inside (``strong``) the motion mask,
    as fractions of the steps: 0 <= tweak <= strong <= 1, tweak < 1."""

    tweak: float
    strong: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.tweak <= self.strong <= 1.0:
            raise ValueError(
                f"motion clocks out of order: need 0 <= tweak ({self.tweak:g}) <= strong "
                f"({self.strong:g}) <= 1"
            )
        if self.tweak >= 1.0:
            raise ValueError("motion clock tweak must be below 1: at least one step must run")

    def indices(self, steps: int) -> tuple[int, int]:
        """(tweak index, strong index) for ``steps`` denoising steps; at least one step runs."""
        tweak = min(round(self.tweak * steps), steps - 1)
        return tweak, max(tweak, min(round(self.strong * steps), steps))

    def cost_fraction(self, steps: int) -> float:
        """The share of a plain video's denoising steps a motion video runs."""
        return (steps - self.indices(steps)[0]) / steps


# The authors' starting points for Wan 2.2 (README "Hyperparameters"), as fractions of
# their 50 steps: cut-and-drag tweak 3 / tstrong 7, camera control 2 / 5.
CLOCK_PRESETS: dict[str, MotionClocks] = {
    "object": MotionClocks(3 / 50, 7 / 50),
    "camera": MotionClocks(2 / 50, 5 / 50),
}


@dataclass(frozen=True)
class MotionGuide:
    """A motion signal at the video's size and length, ready for the pipeline.

    ``video``: (F, 3, H, W) in [-1, 1]; ``mask``: (F, H, W), 1 where the video must follow
    the signal (what moves), 0 where the model is free; ``tweak`` / ``strong``: step indices.
    """

    video: torch.Tensor
    mask: torch.Tensor
    tweak: int
    strong: int

    @property
    def active(self) -> bool:
        return self.tweak > 0 or self.strong > 0


def motion_latent_mask(mask: torch.Tensor, temporal_scale: int = 4, spatial_scale: int = 8):
    """Pixel mask (F, H, W) -> latent mask (1, 1, F/4, H/8, W/8).

    Allegro's VAE makes latent frame t from pixel frames 4t .. 4t+3 (checked in
    ``tests/test_motion.py`` by perturbing one frame at a time). As TTM does for CogVideoX's
    groups ([0], [1..4], [5..8], ...: it keeps each group's first frame), latent frame t takes
    the mask of its group's first frame, 4t; space is sampled nearest, as TTM does."""
    frames, height, width = mask.shape
    if frames % temporal_scale:
        raise ValueError(f"{frames} frames: the motion mask needs a multiple of {temporal_scale}")
    sampled = mask[::temporal_scale].float()[None]  # (1, F/4, H, W)
    size = (height // spatial_scale, width // spatial_scale)
    return F.interpolate(sampled, size=size, mode="nearest")[:, None]


def resample_signal(
    frames: np.ndarray, mask: np.ndarray, length: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A motion signal (F, h, w, 3) uint8 and its mask (F', h', w') of any length and size ->
    both at ``length`` x ``height`` x ``width`` (frames picked nearest in time; bicubic for
    the video, nearest for the mask), with a sentence saying what changed, or None."""
    notes = []
    if frames.shape[0] != length or mask.shape[0] != length:
        notes.append(f"{frames.shape[0]} frames (mask {mask.shape[0]}) resampled to {length}")
    if frames.shape[1:3] != (height, width) or mask.shape[1:3] != (height, width):
        notes.append(
            f"{frames.shape[2]}x{frames.shape[1]} (mask {mask.shape[2]}x{mask.shape[1]}) "
            f"resized to {width}x{height}"
        )

    def pick(count: int) -> np.ndarray:
        return np.minimum((np.arange(length) * count) // length, count - 1)

    video = np.stack(
        [
            cv2.resize(frames[i], (width, height), interpolation=cv2.INTER_CUBIC)
            for i in pick(frames.shape[0])
        ]
    )
    held = np.stack(
        [
            cv2.resize(mask[i].astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
            for i in pick(mask.shape[0])
        ]
    ).astype(bool)
    return video, held, ("motion signal: " + ", ".join(notes)) if notes else None


def guide_from_pixels(
    frames: np.ndarray, mask: np.ndarray, clocks: MotionClocks, steps: int
) -> MotionGuide:
    """(F, H, W, 3) uint8 frames and an (F, H, W) bool mask, already at the video's size and
    length -> the pipeline's ``MotionGuide``."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    tweak, strong = clocks.indices(steps)
    return MotionGuide(
        video / 127.5 - 1.0, torch.from_numpy(mask.astype(np.float32)), tweak, strong
    )
