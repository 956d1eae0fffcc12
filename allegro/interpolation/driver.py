"""Turn a 15 fps clip into a 30 fps clip with any interpolation method.

The driver owns everything that is not "make the frame between these two": input checks,
frame order, scene cuts, batching, progress and cancel. Methods only see pairs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import numpy as np

from allegro.errors import InterpolationError
from allegro.events import CancelToken
from allegro.interpolation.base import Interpolator, PixelFormat, takes_yuv420p

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
class InterpolationCounts:
    """How the in-between frames were made.

    ``pairs``: in-between frames made (N - 1). ``scene_cuts``: pairs across a scene cut,
    filled by repeating the earlier frame. ``blended``: pairs whose motion estimate the
    method rejected, filled by a plain blend (read from the method's optional
    ``blended_pairs`` counter; 0 for methods without one).
    """

    pairs: int
    scene_cuts: int
    blended: int

    @property
    def fallback_pairs(self) -> int:
        """In-between frames not made by the method's motion model."""
        return self.scene_cuts + self.blended


@dataclass(frozen=True)
class InterpolationResult(InterpolationCounts):
    """The 30 fps frames, and the counts."""

    frames: np.ndarray


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
    output = np.empty((2 * len(frames), *frames.shape[1:]), np.uint8)
    written = 0

    def keep(frame: np.ndarray) -> None:
        nonlocal written
        output[written] = frame
        written += 1

    counts = interpolate_stream(frames, interpolator, keep, on_progress, cancel)
    return InterpolationResult(counts.pairs, counts.scene_cuts, counts.blended, frames=output)


def interpolate_stream(
    frames: Iterable[np.ndarray],
    interpolator: Interpolator,
    emit: Callable[[np.ndarray], None],
    on_progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    total_pairs: int | None = None,
    pixel_format: PixelFormat = "rgb24",
    full_range: bool = False,
) -> InterpolationCounts:
    """``interpolate_frames`` for frames that arrive one by one (a video being decoded):
    each 30 fps frame is handed to ``emit`` in order as soon as it is made (to an encoder
    that runs meanwhile), and only one batch of frames is held at a time.

    ``total_pairs`` is the N - 1 that progress counts against; by default ``len(frames)``
    tells it, and when neither does, progress counts against the pairs done so far plus one.
    ``pixel_format``: ``"rgb24"``, (H, W, 3) frames, or ``"yuv420p"``, (3H/2, W) I420
    frames as a decoder hands them over, for methods that take them (``takes_yuv420p``):
    the frames go from decoder to encoder with no colour conversion. ``full_range``: those
    I420 frames span 0..255 (a phone's ``yuvj420p``), not video's 16..235.
    """
    if total_pairs is None and isinstance(frames, Sized):
        total_pairs = len(frames) - 1
    if pixel_format == "yuv420p":
        if not takes_yuv420p(interpolator):
            raise ValueError(f"the {interpolator.name} method does not take yuv420p frames")
        make_midframes = functools.partial(
            interpolator.midframes_yuv420p,  # type: ignore[attr-defined]
            full_range=full_range,
        )
    else:
        make_midframes = interpolator.midframes
    batch_size = max(1, int(interpolator.batch_size))
    blended_before = _blended_pairs(interpolator)
    incoming = iter(frames)
    window: list[np.ndarray] = []
    signatures: list[_CutSignature] = []
    pairs = scene_cuts = 0
    while True:
        if cancel is not None:
            cancel.raise_if_cancelled()
        # The batch's frames plus the one after it; the last frame carries over.
        for frame in incoming:
            _check_frame(frame, window[0] if window else None, pixel_format)
            window.append(frame)
            signatures.append(_cut_signature(frame, pixel_format, full_range))
            if len(window) > batch_size:
                break
        if len(window) < 2:
            break
        cuts = [
            i for i in range(len(window) - 1) if _is_scene_cut(signatures[i], signatures[i + 1])
        ]
        moving = [i for i in range(len(window) - 1) if i not in cuts]
        middles: dict[int, np.ndarray] = {i: window[i] for i in cuts}
        if moving:
            before = np.stack([window[i] for i in moving])
            after = np.stack([window[i + 1] for i in moving])
            made = make_midframes(before, after)
            if made.shape != before.shape or made.dtype != np.uint8:
                raise InterpolationError(
                    f"The {interpolator.name} method returned frames of the wrong shape "
                    f"{made.shape} ({made.dtype}); this is a bug in that method."
                )
            middles.update(zip(moving, made, strict=True))
        for i in range(len(window) - 1):
            emit(window[i])
            emit(middles[i])
        pairs += len(window) - 1
        scene_cuts += len(cuts)
        window, signatures = window[-1:], signatures[-1:]
        if on_progress is not None:
            total = pairs + 1 if total_pairs is None else max(total_pairs, pairs)
            on_progress(pairs, total)
    if not window:
        raise InterpolationError("A video needs at least 2 frames to interpolate; this one has 0.")
    if pairs == 0:
        raise InterpolationError("A video needs at least 2 frames to interpolate; this one has 1.")
    emit(window[0])
    emit(window[0])
    blended = _blended_pairs(interpolator) - blended_before
    return InterpolationCounts(pairs, scene_cuts, blended)


def _check_frame(
    frame: np.ndarray, first: np.ndarray | None, pixel_format: PixelFormat = "rgb24"
) -> None:
    """One frame of a stream: what ``_check_frames`` checks, and the first frame's size."""
    if not isinstance(frame, np.ndarray):
        raise InterpolationError(f"Expected video frames as arrays, got {type(frame)}.")
    if pixel_format == "yuv420p":
        if frame.ndim != 2 or frame.shape[0] % 3 or frame.shape[1] % 2:  # H = 2 rows / 3
            raise InterpolationError(
                "Expected I420 video frames shaped (3 * height / 2, width) with an even height "
                f"and width, got one shaped {frame.shape}."
            )
    elif frame.ndim != 3 or frame.shape[-1] != 3:
        raise InterpolationError(
            f"Expected RGB video frames shaped (height, width, 3), got one shaped {frame.shape}."
        )
    if frame.dtype != np.uint8:
        raise InterpolationError(f"Expected 8-bit (uint8) video frames, got {frame.dtype}.")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InterpolationError(f"The video frames are empty ({frame.shape[:2]} pixels).")
    if first is not None and frame.shape != first.shape:
        raise InterpolationError(
            f"Video frames change size mid-stream ({first.shape[:2]} then {frame.shape[:2]})."
        )


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


def _cut_signature(
    frame: np.ndarray, pixel_format: PixelFormat = "rgb24", full_range: bool = False
) -> _CutSignature:
    """Cheap to compute from a strided sample of the frame's grey levels (0..1); the
    block-averaged thumbnail (about CUT_THUMB_WIDTH cells wide) is blind to fine motion."""
    width = frame.shape[1]
    step = max(1, width // (CUT_THUMB_WIDTH * CUT_SAMPLES_PER_CELL))
    if pixel_format == "yuv420p":
        luma = frame[: frame.shape[0] * 2 // 3, ::step][::step].astype(np.float32)
        # Video luma spans 16..235, a phone's full-range luma 0..255.
        grey = luma / 255.0 if full_range else np.clip((luma - 16.0) / 219.0, 0.0, 1.0)
    else:
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
