"""Turn a 15 fps clip into a 30 fps clip with any interpolation method.

The driver owns everything that is not "make the frame between these two": input checks,
frame order, scene cuts, batching, progress and cancel. Methods only see pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from allegro.errors import InterpolationError
from allegro.events import CancelToken
from allegro.interpolation.base import Interpolator

# Scene-cut test. A cut needs BOTH a changed coarse layout (mean absolute difference of grey
# thumbnails about CUT_THUMB_WIDTH cells wide, 0..1) and a changed grey histogram (half the
# L1 distance, 0..1): a pan or a moving object changes the layout but keeps the histogram, an
# exposure change the reverse. Measured at 720x1280: the benchmark's motion scores at most
# 0.04 / 0.01, unrelated shots 0.18-0.21 / 0.25-0.38.
CUT_THUMB_WIDTH = 48
CUT_SAMPLES_PER_CELL = 4
CUT_HISTOGRAM_BINS = 16
CUT_HISTOGRAM_DISTANCE = 0.2
CUT_THUMB_DIFFERENCE = 0.08


@dataclass(frozen=True)
class InterpolationResult:
    """The 30 fps frames and how the in-between frames were made.

    ``pairs``: in-between frames made (N - 1). ``scene_cuts``: pairs across a scene cut,
    filled by repeating the earlier frame. ``blended``: pairs whose motion estimate the
    method rejected, filled by a plain blend (read from the method's optional
    ``blended_pairs`` counter; 0 for methods without one).
    """

    frames: np.ndarray
    pairs: int
    scene_cuts: int
    blended: int

    @property
    def fallback_pairs(self) -> int:
        """In-between frames not made by the method's motion model."""
        return self.scene_cuts + self.blended


def interpolate_frames(
    frames: np.ndarray,
    interpolator: Interpolator,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> InterpolationResult:
    """(N, H, W, 3) uint8 RGB frames at 15 fps -> ``result.frames``, (2N, H, W, 3) at 30 fps.

    Frame i of the input is output frame 2i, bit for bit; output frame 2i + 1 is the method's
    frame halfway between inputs i and i + 1. The last output frame repeats the last input:
    N frames at 15 fps last N/15 s, and so do 2N frames at 30 fps, so the video keeps its
    duration (2N - 1 frames would end 1/30 s early) and the frame count stays a simple 2N.

    Across a scene cut there is no motion to follow and any mix of the two shots is a visible
    ghost, so the in-between frame repeats the earlier frame: the cut lands 1/30 s later.
    The result counts those pairs, and pairs the method itself fell back on, so the caller
    can record them.

    ``on_progress(done, total)`` is called after each batch with frame pairs done so far out
    of N - 1. ``cancel`` is checked before each batch; a cancelled run raises Cancelled.
    Bad input (not uint8 RGB frames, fewer than 2 frames) raises InterpolationError.
    """
    _check_frames(frames)
    count, height, width, _ = frames.shape
    pairs = count - 1
    output = np.empty((2 * count, height, width, 3), np.uint8)
    output[0::2] = frames
    output[-1] = frames[-1]

    signatures = [_cut_signature(frame) for frame in frames]
    blended_before = _blended_pairs(interpolator)
    scene_cuts = 0
    batch_size = max(1, int(interpolator.batch_size))
    for start in range(0, pairs, batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        stop = min(start + batch_size, pairs)
        cuts = [i for i in range(start, stop) if _is_scene_cut(signatures[i], signatures[i + 1])]
        for index in cuts:
            output[2 * index + 1] = frames[index]
        scene_cuts += len(cuts)
        targets: slice | np.ndarray
        if cuts:
            moving = np.setdiff1d(np.arange(start, stop), cuts)
            before, after, targets = frames[moving], frames[moving + 1], 2 * moving + 1
        else:
            # Slices, not index arrays: views instead of copies of 2.7 MB frames.
            before, after = frames[start:stop], frames[start + 1 : stop + 1]
            targets = slice(2 * start + 1, 2 * stop, 2)
        if len(before):
            middles = interpolator.midframes(before, after)
            if middles.shape != before.shape or middles.dtype != np.uint8:
                raise InterpolationError(
                    f"The {interpolator.name} method returned frames of the wrong shape "
                    f"{middles.shape} ({middles.dtype}); this is a bug in that method."
                )
            output[targets] = middles
        if on_progress is not None:
            on_progress(stop, pairs)
    blended = _blended_pairs(interpolator) - blended_before
    return InterpolationResult(output, pairs, scene_cuts, blended)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray):
        raise InterpolationError(f"Expected video frames as an array, got {type(frames)}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InterpolationError(
            "Expected RGB video frames shaped (frames, height, width, 3), "
            f"got an array shaped {frames.shape}."
        )
    if frames.dtype != np.uint8:
        raise InterpolationError(f"Expected 8-bit (uint8) video frames, got {frames.dtype}.")
    if frames.shape[0] < 2:
        raise InterpolationError(
            f"A video needs at least 2 frames to interpolate; this one has {frames.shape[0]}."
        )
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InterpolationError(f"The video frames are empty ({frames.shape[1:3]} pixels).")


def _blended_pairs(interpolator: Interpolator) -> int:
    return int(getattr(interpolator, "blended_pairs", 0))


@dataclass(frozen=True)
class _CutSignature:
    """What the scene-cut test compares: a coarse grey layout and a grey histogram."""

    thumbnail: np.ndarray
    histogram: np.ndarray


def _cut_signature(frame: np.ndarray) -> _CutSignature:
    """Cheap to compute from a strided sample; the block-averaged thumbnail (about
    CUT_THUMB_WIDTH cells wide) is blind to fine motion."""
    width = frame.shape[1]
    step = max(1, width // (CUT_THUMB_WIDTH * CUT_SAMPLES_PER_CELL))
    sample = frame[::step, ::step].astype(np.float32)
    grey = sample @ np.float32([0.299 / 255, 0.587 / 255, 0.114 / 255])
    cell = max(1, min(grey.shape[1] // CUT_THUMB_WIDTH, grey.shape[0]))
    rows, columns = grey.shape[0] // cell, grey.shape[1] // cell
    blocks = grey[: rows * cell, : columns * cell].reshape(rows, cell, columns, cell)
    edges = np.linspace(0.0, 1.0, CUT_HISTOGRAM_BINS + 1)
    histogram = np.histogram(grey, edges)[0] / grey.size
    return _CutSignature(blocks.mean(axis=(1, 3)), histogram)


def _is_scene_cut(before: _CutSignature, after: _CutSignature) -> bool:
    """Whether two frames look like different shots (see the CUT_* constants)."""
    difference = float(np.mean(np.abs(before.thumbnail - after.thumbnail)))
    # Half the L1 distance: 0 for the same distribution, 1 for disjoint ones.
    distance = 0.5 * float(np.abs(before.histogram - after.histogram).sum())
    return difference > CUT_THUMB_DIFFERENCE and distance > CUT_HISTOGRAM_DISTANCE
