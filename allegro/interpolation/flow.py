"""Optical-flow interpolation: the default method, CPU only, no weights to download.

For each pair (frame 0, frame 1):

1. Dense optical flow both ways (OpenCV DIS) on small grey frames (long side FLOW_SIZE px):
   ``flow01`` takes a pixel of frame 0 to where it is in frame 1, ``flow10`` the reverse.
   Video motion is smooth at that scale; the flow is upsampled, which is what makes 720p
   affordable on a CPU. DIS runs its variational refinement longer than its presets: that
   halves the flow error, and sub-pixel flow error is what blurs the result. Warping is
   bicubic for the same reason (bilinear costs 2-4 dB on the benchmark).
2. Fast objects. DIS refines coarse to fine, and an object that moves more than about its
   own size per pair has vanished at the coarse scales where that motion is small enough to
   follow: its flow says "background". Where a flow fails to line the frames up, ORB
   features are matched (no such limit); matches the flow misses are grouped by RANSAC into
   rigid (similarity) motions, each written into both flows where, near its matches, it
   lines the frames up better than DIS did. Background that such an object covers in the
   other frame takes the background's (affine-fitted) motion and is trusted; and where the
   object is at t = 0.5 (its pixels moved half way), both sides show the object, which is
   in front of whatever the background flow says.
3. Midpoint sampling offsets, backward-warp style and splat free: the pixel at ``x`` at
   t = 0.5 came from the point ``p`` of frame 0 with ``p + flow01(p) / 2 = x``, found by the
   fixed-point iteration ``p <- x - flow01(p) / 2`` (likewise from frame 1 with ``flow10``).
4. Per-pixel trust for each side: where ``x`` is hidden in that frame (occlusion), the
   iteration has no consistent solution, so its residual ``|p + flow01(p) / 2 - x|`` is
   large; the flow at ``p`` may also fail the forward-backward check; and ``p`` may fall off
   the picture (camera motion brings in new content at the borders). Each adds to that
   side's error, and the side that actually shows ``x`` wins the per-pixel blend.
5. Motion boundaries: patch-based flow bleeds a moving object's motion into the background
   next to it. Each pixel may take the offsets of a neighbour a few pixels away instead when
   they line the two frames up better (mean absolute grey difference over 3x3), which snaps
   the motion edge back to the object's edge.
6. Both neighbours are warped to the midpoint (bicubic cv2.remap, border replicate) and
   blended with those weights: an RGB frame as one plane, a decoded video's I420 frame
   (``midframes_yuv420p``) plane by plane, Y at full size and U, V at half size with the
   offsets halved. That is half the warping of RGB and no colour conversion at all; the
   flow is found on the luma either way (video Y mapped from 16..235 to 0..255, full-range
   Y as it is).

Failed motion estimates fall back to blending, never to smeared garbage: when most of the
frame fails the forward-backward check both ways, or the two frames warped to the midpoint
disagree as much as the original frames do (the flow explained nothing), the pair is
returned as a plain blend.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import cv2
import numpy as np

from allegro.interpolation.blend import blend_pairs

# Flow is estimated with the long side at most this many pixels (a quarter of 1280). Finer
# flow costs DIS time faster than it improves the result; the boundary step (5.) recovers
# most of what coarse flow loses at motion edges.
FLOW_SIZE = 320
# DIS refuses images under 12 px; smaller frames are just blended.
MIN_FLOW_SIDE = 12
# DIS settings: MEDIUM preset, computed down to the finest scale, with fewer and sparser
# patch descents (no measurable loss) and 2.4x the variational refinement with a stronger
# smoothness term: on a known pan the mean flow error drops from 0.24 to 0.12 px.
DIS_FINEST_SCALE = 0
DIS_PATCH_STRIDE = 4
DIS_DESCENT_ITERATIONS = 12
DIS_REFINEMENT_ITERATIONS = 12
DIS_REFINEMENT_ALPHA = 40.0
FIXED_POINT_ITERATIONS = 2
WARP_INTERPOLATION = cv2.INTER_CUBIC
# Per-side error, in flow pixels, is residual / RESIDUAL_SCALE + round-trip error /
# CONSISTENCY_SCALE + OFF_PICTURE_PENALTY * distance off the picture; weight 1 / (1 + e^2).
RESIDUAL_SCALE = 0.5
CONSISTENCY_SCALE = 1.0
OFF_PICTURE_PENALTY = 30.0
# Keeps both weights positive so a pixel neither side trusts is an even mix, not black.
WEIGHT_FLOOR = 0.01
# Boundary step: neighbours this many flow pixels away (8 directions) are the candidates.
NEIGHBOUR_DISTANCE = 2
NEIGHBOUR_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
# Failure tests. A round trip that misses by more than INCONSISTENT_PIXELS (flow px) plus
# 5 % of the motion is inconsistent; real motion, occlusions included, stays under 1 % of
# the frame, unrelated or noise frames reach 45-100 %. The frames warped to the midpoint
# differ 3-55 % as much as the frames themselves for real motion and 60-95 % for unrelated
# frames, where the flow only overfits.
INCONSISTENT_PIXELS = 1.0
INCONSISTENT_FRACTION = 0.4
WARPED_DIFFERENCE_RATIO = 0.8
# Fast objects. Features are matched with the long side at MATCH_SIZE px, only where a flow
# leaves a local mean absolute grey difference over FAILED_COST (textured background that
# the flow follows stays under 3) and within FEATURE_MARGIN px of there. A match the flow
# misses by more than MOTION_MISSED flow pixels is a lost motion; RANSAC groups those into
# at most MAX_MOTIONS similarity transforms of at least MIN_MOTION_MATCHES matches each,
# within MOTION_TOLERANCE flow px. A motion may apply within REGION_MARGIN flow px of the
# hull of its matches, where it lines the frames up better over MATCH_WINDOW px.
MATCH_SIZE = 640
ORB_FEATURES = 1000
ORB_PATCH = 15
FAILED_COST = 10.0
FEATURE_MARGIN = 12
MOTION_MISSED = 2.0
MOTION_TOLERANCE = 1.5
MIN_MOTION_MATCHES = 8
MAX_MOTIONS = 4
REGION_MARGIN = 6
MATCH_WINDOW = 5
# The background's motion is fitted to every this many flow pixels, both ways.
BACKGROUND_SAMPLE_STEP = 4


class FlowInterpolator:
    """Bidirectional DIS optical flow, fast objects matched, occlusion-aware midpoint warping.

    ``blended_pairs`` counts pairs returned as a plain blend because their motion estimate
    failed (the driver reports it).

    Threads: the pairs of a batch run on ``workers`` threads, one pair each (OpenCV and
    numpy release the GIL, and whole pairs parallelise better than OpenCV's own splitting
    of small flow images). Meanwhile OpenCV's thread count is set to the CPUs per worker,
    so workers x OpenCV threads does not oversubscribe the CPU, and restored afterwards.
    """

    name = "flow"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(4, _usable_cpus())
        self.batch_size = 2 * self.workers
        self.blended_pairs = 0
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._count_lock = threading.Lock()

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return self._midframes(before, after, _rgb_picture)

    def midframes_yuv420p(
        self, before: np.ndarray, after: np.ndarray, full_range: bool = False
    ) -> np.ndarray:
        """``midframes`` for (B, 3H/2, W) I420 frames (a decoded video's own layout): flow
        on Y, Y warped at full size and U, V at half size with the same motion, so neither
        colour conversions nor full-size chroma are paid for. ``full_range``: Y spans
        0..255 (a phone's ``yuvj420p``), not 16..235."""
        picture = _full_range_i420_picture if full_range else _i420_picture
        return self._midframes(before, after, picture)

    def _midframes(
        self, before: np.ndarray, after: np.ndarray, picture: Callable[[np.ndarray], _Picture]
    ) -> np.ndarray:
        def one(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
            return self._midframe(frame0, frame1, picture)

        if len(before) == 1 or self.workers == 1:
            results = [one(a, b) for a, b in zip(before, after, strict=True)]
        else:
            threads_per_worker = max(1, _usable_cpus() // self.workers)
            if self._pool is None:  # kept: its threads keep their DIS and scratch arrays
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="flow")
            with _opencv_threads(threads_per_worker):
                results = list(self._pool.map(one, before, after))
        return np.stack(results)

    def _midframe(
        self, frame0: np.ndarray, frame1: np.ndarray, picture: Callable[[np.ndarray], _Picture]
    ) -> np.ndarray:
        middle = _flow_midframe(picture(frame0), picture(frame1), *self._thread_state())
        if middle is None:
            with self._count_lock:
                self.blended_pairs += 1
            return blend_pairs(frame0, frame1)
        return middle

    def _thread_state(self) -> tuple[cv2.DISOpticalFlow, _Scratch]:
        # A DIS instance keeps per-call buffers, so each worker thread gets its own, and
        # its own scratch arrays.
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            dis.setFinestScale(DIS_FINEST_SCALE)
            dis.setPatchStride(DIS_PATCH_STRIDE)
            dis.setGradientDescentIterations(DIS_DESCENT_ITERATIONS)
            dis.setVariationalRefinementIterations(DIS_REFINEMENT_ITERATIONS)
            dis.setVariationalRefinementAlpha(DIS_REFINEMENT_ALPHA)
            self._local.dis = dis
            self._local.scratch = _Scratch()
        return dis, self._local.scratch


@dataclass(frozen=True)
class _Picture:
    """A frame as the flow method sees it: its luma at full size, for motion, and the
    planes that are warped, each (h, w) or (h, w, c) and views into ``frame``: one RGB
    plane, or Y, U and V (U and V at half size). ``limited_range``: luma spans 16..235
    (video Y), not 0..255 (grey from RGB)."""

    frame: np.ndarray
    luma: np.ndarray
    planes: tuple[np.ndarray, ...]
    limited_range: bool


def _rgb_picture(frame: np.ndarray) -> _Picture:
    return _Picture(frame, cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (frame,), False)


def _i420_picture(frame: np.ndarray) -> _Picture:
    """(3H/2, W) I420, as PyAV lays out yuv420p: all of Y, then all of U, then all of V."""
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    flat = frame.reshape(-1)
    luma_size, chroma_size = height * width, height * width // 4
    luma = flat[:luma_size].reshape(height, width)
    chroma = (height // 2, width // 2)
    u = flat[luma_size : luma_size + chroma_size].reshape(chroma)
    v = flat[luma_size + chroma_size :].reshape(chroma)
    return _Picture(frame, luma, (luma, u, v), True)


def _full_range_i420_picture(frame: np.ndarray) -> _Picture:
    """``_i420_picture`` for full-range I420, whose luma already spans 0..255."""
    return replace(_i420_picture(frame), limited_range=False)


def _flow_midframe(
    picture0: _Picture, picture1: _Picture, dis: cv2.DISOpticalFlow, scratch: _Scratch
) -> np.ndarray | None:
    """The frame at t = 0.5, laid out as the pictures' frames, or None when the motion
    estimate failed."""
    height, width = picture0.luma.shape
    scale = min(1.0, FLOW_SIZE / max(height, width))
    flow_w, flow_h = round(width * scale), round(height * scale)
    if min(flow_w, flow_h) < MIN_FLOW_SIDE:
        return None
    grey0 = _small_grey(picture0, flow_w, flow_h)
    grey1 = _small_grey(picture1, flow_w, flow_h)
    flow01 = dis.calc(grey0, grey1, None)
    flow10 = dis.calc(grey1, grey0, None)
    # Fast objects DIS lost: matched as whole objects and written into both flows.
    motions = _fast_motions(picture0, picture1, grey0, grey1, flow01, flow10)
    owner0 = _fuse_motions(grey0, grey1, flow01, [(m.forward, m.region0) for m in motions])
    owner1 = _fuse_motions(grey1, grey0, flow10, [(m.backward, m.region1) for m in motions])

    mismatch0 = _length(flow01 + _remap(flow10, flow01))
    mismatch1 = _length(flow10 + _remap(flow01, flow10))
    inconsistent0 = mismatch0 > INCONSISTENT_PIXELS + 0.05 * _length(flow01)
    inconsistent1 = mismatch1 > INCONSISTENT_PIXELS + 0.05 * _length(flow10)
    if (np.mean(inconsistent0) + np.mean(inconsistent1)) / 2 > INCONSISTENT_FRACTION:
        return None
    objects0 = (owner0 >= 0) & ~inconsistent0
    objects1 = (owner1 >= 0) & ~inconsistent1
    if motions:
        _hide_behind_objects(flow01, mismatch0, inconsistent0 & (owner0 < 0), objects1)
        _hide_behind_objects(flow10, mismatch1, inconsistent1 & (owner1 < 0), objects0)

    offset0, residual0 = _midpoint_offsets(flow01)
    offset1, residual1 = _midpoint_offsets(flow10)
    error0 = _side_error(offset0, residual0, mismatch0)
    error1 = _side_error(offset1, residual1, mismatch1)
    for index, motion in enumerate(motions):
        present = _midpoint_area(motion, objects0 & (owner0 == index), objects1 & (owner1 == index))
        _place_object(motion, present, offset0, offset1, error0, error1)
    offset0, offset1, error0, error1 = _snap_to_edges(
        grey0.astype(np.float32), grey1.astype(np.float32), offset0, offset1, error0, error1
    )

    # Self-check at flow resolution: if the frames warped to the midpoint disagree nearly as
    # much as the frames themselves, motion compensation explained nothing; blend instead.
    warped_difference = np.mean(cv2.absdiff(_remap(grey0, offset0), _remap(grey1, offset1)))
    if warped_difference >= WARPED_DIFFERENCE_RATIO * np.mean(cv2.absdiff(grey0, grey1)):
        return None
    return _warp_and_blend(picture0, picture1, offset0, offset1, error0, error1, scratch)


def _warp_and_blend(
    picture0: _Picture,
    picture1: _Picture,
    offset0: np.ndarray,
    offset1: np.ndarray,
    error0: np.ndarray,
    error1: np.ndarray,
    scratch: _Scratch,
) -> np.ndarray:
    """Each plane of both neighbours warped to the midpoint and blended, into a new frame
    laid out as theirs. Offsets and weights are resized once per plane size (U and V
    share theirs); full-size intermediates live in ``scratch``, reused pair after pair."""
    middle = np.empty_like(picture0.frame)
    outputs = _i420_picture(middle).planes if len(picture0.planes) == 3 else (middle,)
    maps: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    for plane0, plane1, output in zip(picture0.planes, picture1.planes, outputs, strict=True):
        height, width = size = plane0.shape[:2]
        if size not in maps:
            maps[size] = tuple(
                upsample(field, width, height, scratch.array(f"{name} {size}", upsampled_shape))
                for name, upsample, field, upsampled_shape in (
                    ("offset0", _upsample_offsets, offset0, (*size, 2)),
                    ("offset1", _upsample_offsets, offset1, (*size, 2)),
                    ("weight0", _upsample_weight, error0, size),
                    ("weight1", _upsample_weight, error1, size),
                )
            )
        full0, full1, weight0, weight1 = maps[size]
        middle0 = _remap(plane0, full0, WARP_INTERPOLATION, scratch.like("warp0", plane0))
        middle1 = _remap(plane1, full1, WARP_INTERPOLATION, scratch.like("warp1", plane1))
        cv2.blendLinear(middle0, middle1, weight0, weight1, dst=output)
    return middle


class _Scratch:
    """One thread's full-size work arrays, kept from pair to pair: allocating them anew for
    every pair costs page faults and cache misses worth about a tenth of the warp."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, tuple[int, ...], str], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype)
        return self._arrays[key]

    def like(self, name: str, array: np.ndarray) -> np.ndarray:
        return self.array(name, array.shape, array.dtype.type)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # honours CPU pinning and container limits
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def _opencv_threads(count: int) -> Iterator[None]:
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _small_grey(picture: _Picture, width: int, height: int) -> np.ndarray:
    """The picture's luma at (width, height), spanning 0..255 whichever range it came in."""
    grey = picture.luma
    if grey.shape[:2] != (height, width):
        grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.LUT(grey, _LIMITED_TO_FULL) if picture.limited_range else grey


# Video luma 16..235 -> 0..255, so thresholds on grey differences hold for both inputs.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def _remap(
    image: np.ndarray,
    offsets: np.ndarray,
    interpolation: int = cv2.INTER_LINEAR,
    dst: np.ndarray | None = None,
) -> np.ndarray:
    """Sample ``image`` at each pixel's position plus ``offsets`` (H, W, 2); into ``dst``
    when given (of the right shape and type)."""
    return cv2.remap(
        image,
        offsets,
        None,
        interpolation | cv2.WARP_RELATIVE_MAP,
        dst=dst,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _length(vectors: np.ndarray) -> np.ndarray:
    """Per-pixel length of an (H, W, 2) vector field."""
    return cv2.magnitude(vectors[..., 0], vectors[..., 1])


def _midpoint_offsets(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets d with d(x) = -flow(x + d(x)) / 2, and how far the last step still moved.

    That residual is near zero where the pixel at the midpoint is visible in this frame
    and large where this frame does not show it.
    """
    offsets = -0.5 * flow
    for _ in range(FIXED_POINT_ITERATIONS):
        previous = offsets
        offsets = -0.5 * _remap(flow, previous)
    return offsets, _length(offsets - previous)


def _side_error(offsets: np.ndarray, residual: np.ndarray, mismatch: np.ndarray) -> np.ndarray:
    """How little one side is to be trusted at each midpoint pixel (see the module doc)."""
    # The round-trip error is looked up where this side samples its frame.
    return (
        residual / RESIDUAL_SCALE
        + _remap(mismatch, offsets) / CONSISTENCY_SCALE
        + OFF_PICTURE_PENALTY * _off_picture(_grid(*offsets.shape[:2]) + offsets)
    )


def _grid(height: int, width: int) -> np.ndarray:
    """Each pixel's own (x, y) position, (height, width, 2) float32."""
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)
    return np.dstack(np.meshgrid(x, y))


def _off_picture(points: np.ndarray) -> np.ndarray:
    """How far each (x, y) of an (H, W, 2) field of positions lies outside an H x W picture."""
    height, width = points.shape[:2]
    x, y = points[..., 0], points[..., 1]
    return np.maximum(np.maximum(-x, x - (width - 1)), 0) + np.maximum(
        np.maximum(-y, y - (height - 1)), 0
    )


def _snap_to_edges(
    grey0: np.ndarray,
    grey1: np.ndarray,
    offset0: np.ndarray,
    offset1: np.ndarray,
    error0: np.ndarray,
    error1: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Let each pixel take a neighbour's offsets (and errors) where they match better.

    The match cost is the 3x3 mean absolute difference between the two frames sampled at
    the candidate offsets; candidates are the pixel itself and its 8 neighbours at
    NEIGHBOUR_DISTANCE.
    """
    height, width = grey0.shape
    reach = NEIGHBOUR_DISTANCE

    def cost(candidate0: np.ndarray, candidate1: np.ndarray) -> np.ndarray:
        difference = cv2.absdiff(_remap(grey0, candidate0), _remap(grey1, candidate1))
        return cv2.blur(difference, (3, 3))

    def padded(field: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(field, reach, reach, reach, reach, cv2.BORDER_REPLICATE)

    padded0, padded1 = padded(offset0), padded(offset1)
    best_cost = cost(offset0, offset1)
    # Where each pixel takes its offsets from, relative to itself.
    best_shift = np.zeros((height, width, 2), np.float32)
    for dy, dx in NEIGHBOUR_SHIFTS:
        rows = slice(reach + dy * reach, reach + dy * reach + height)
        columns = slice(reach + dx * reach, reach + dx * reach + width)
        candidate_cost = cost(padded0[rows, columns], padded1[rows, columns])
        better = candidate_cost < best_cost
        best_cost = np.minimum(best_cost, candidate_cost)
        best_shift[better] = (dx * reach, dy * reach)
    offsets = _remap(np.dstack([offset0, offset1]), best_shift, cv2.INTER_NEAREST)
    errors = _remap(np.dstack([error0, error1]), best_shift, cv2.INTER_NEAREST)
    return offsets[..., :2], offsets[..., 2:], errors[..., 0], errors[..., 1]


def _upsample_offsets(
    offsets: np.ndarray, width: int, height: int, dst: np.ndarray | None = None
) -> np.ndarray:
    """Offsets at flow resolution -> (height, width) offsets, in those pixels (into ``dst``
    when given)."""
    flow_h, flow_w = offsets.shape[:2]
    if (flow_h, flow_w) == (height, width):
        return offsets
    # Rescaled before upsampling, where it is 16x cheaper (the two steps commute).
    rescaled = cv2.multiply(offsets, (width / flow_w, height / flow_h, 0.0, 0.0))
    return cv2.resize(rescaled, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)


def _upsample_weight(
    error: np.ndarray, width: int, height: int, dst: np.ndarray | None = None
) -> np.ndarray:
    weight = 1.0 / (1.0 + error * error) + WEIGHT_FLOOR
    if weight.shape[:2] == (height, width):
        return weight
    return cv2.resize(weight, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)


# --- fast objects ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Motion:
    """One object's motion as a similarity transform of flow-resolution positions, and the
    areas (flow resolution, bool) where it may apply in frame 0 and in frame 1."""

    forward: np.ndarray  # 2x3, frame 0 -> frame 1
    backward: np.ndarray  # 2x3, frame 1 -> frame 0
    region0: np.ndarray
    region1: np.ndarray


def _fast_motions(
    picture0: _Picture,
    picture1: _Picture,
    grey0: np.ndarray,
    grey1: np.ndarray,
    flow01: np.ndarray,
    flow10: np.ndarray,
) -> list[_Motion]:
    """Motions of objects DIS lost, found by matching ORB features where its flow fails.

    DIS refines coarse to fine, and an object that moves more than its own size between
    frames is gone at the coarse scales where such motion is small enough to follow; its
    flow then says "background". Feature matching has no such limit. Features are taken
    only where a flow fails to line the frames up, so matching stays cheap; matches the
    flow already explains are dropped, and the rest are split into rigid motions by RANSAC.
    """
    failed0 = _flow_fails(grey0, grey1, flow01)
    failed1 = _flow_fails(grey1, grey0, flow10)
    if not failed0.any() or not failed1.any():
        return []
    height, width = picture0.luma.shape
    scale = min(1.0, MATCH_SIZE / max(height, width))
    size = (round(width * scale), round(height * scale))
    orb = cv2.ORB_create(
        ORB_FEATURES,
        scaleFactor=1.4,
        nlevels=3,
        edgeThreshold=ORB_PATCH,
        patchSize=ORB_PATCH,
        fastThreshold=10,
    )
    found = []
    for picture, failed in ((picture0, failed0), (picture1, failed1)):
        grey = _small_grey(picture, *size)
        keys, descriptors = orb.detectAndCompute(grey, _feature_mask(failed, size))
        found.append((keys, descriptors))
    (keys0, descriptors0), (keys1, descriptors1) = found
    if descriptors0 is None or descriptors1 is None:
        return []
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(descriptors0, descriptors1)
    if len(matches) < MIN_MOTION_MATCHES:
        return []
    flow_h, flow_w = flow01.shape[:2]
    to_flow = flow_w / size[0]
    points0 = np.float32([keys0[m.queryIdx].pt for m in matches]) * to_flow
    points1 = np.float32([keys1[m.trainIdx].pt for m in matches]) * to_flow
    columns = np.clip(np.round(points0[:, 0]).astype(int), 0, flow_w - 1)
    rows = np.clip(np.round(points0[:, 1]).astype(int), 0, flow_h - 1)
    missed = np.linalg.norm(points0 + flow01[rows, columns] - points1, axis=1) > MOTION_MISSED
    points0, points1 = points0[missed], points1[missed]
    motions: list[_Motion] = []
    while len(points0) >= MIN_MOTION_MATCHES and len(motions) < MAX_MOTIONS:
        matrix, inliers = cv2.estimateAffinePartial2D(
            points0, points1, method=cv2.RANSAC, ransacReprojThreshold=MOTION_TOLERANCE
        )
        if matrix is None or inliers.sum() < MIN_MOTION_MATCHES:
            break
        inliers = inliers[:, 0].astype(bool)
        region0 = _hull_region(points0[inliers], (flow_h, flow_w))
        region1 = _hull_region(points1[inliers], (flow_h, flow_w))
        motions.append(_Motion(matrix, cv2.invertAffineTransform(matrix), region0, region1))
        points0, points1 = points0[~inliers], points1[~inliers]
    return motions


def _match_cost(grey0: np.ndarray, grey1: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Local mean absolute difference between frame 0 and frame 1 sampled along ``flow``."""
    difference = cv2.absdiff(grey0, _remap(grey1, flow))
    return cv2.blur(difference, (MATCH_WINDOW, MATCH_WINDOW))


def _flow_fails(grey0: np.ndarray, grey1: np.ndarray, flow: np.ndarray) -> np.ndarray:
    return _match_cost(grey0.astype(np.float32), grey1.astype(np.float32), flow) > FAILED_COST


def _feature_mask(failed: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mask = cv2.resize(failed.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    return cv2.dilate(mask, _disc(FEATURE_MARGIN))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _hull_region(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The convex hull of ``points``, grown by REGION_MARGIN: where their motion may apply."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 255)
    return cv2.dilate(mask, _disc(REGION_MARGIN)) > 0


def _fuse_motions(
    grey0: np.ndarray,
    grey1: np.ndarray,
    flow: np.ndarray,
    motions: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Write each (matrix, region) motion into ``flow`` (in place) where, inside its region,
    it lines the frames up better. Returns which motion each pixel took (-1: none)."""
    owner = np.full(grey0.shape, -1, np.int32)
    if not motions:
        return owner
    grey0, grey1 = grey0.astype(np.float32), grey1.astype(np.float32)
    grid = _grid(*grey0.shape)
    best = _match_cost(grey0, grey1, flow)
    for index, (matrix, region) in enumerate(motions):
        candidate = cv2.transform(grid, matrix) - grid
        cost = _match_cost(grey0, grey1, candidate)
        better = region & (cost < best)
        flow[better] = candidate[better]
        best[better] = cost[better]
        owner[better] = index
    return owner


def _hide_behind_objects(
    flow: np.ndarray, mismatch: np.ndarray, suspects: np.ndarray, objects_other: np.ndarray
) -> None:
    """Background pixels that a fast object covers in the other frame (in place).

    Their flow is meaningless and fails the round trip, yet until the object arrives they
    are what the midpoint shows. They take the background's motion (an affine fit of the
    trusted flow) and their round-trip error is cleared.
    """
    if not suspects.any():
        return
    trusted = ~suspects
    rows, columns = np.nonzero(trusted[::BACKGROUND_SAMPLE_STEP, ::BACKGROUND_SAMPLE_STEP])
    rows, columns = rows * BACKGROUND_SAMPLE_STEP, columns * BACKGROUND_SAMPLE_STEP
    if len(rows) < MIN_MOTION_MATCHES:
        return
    source = np.float32(np.stack([columns, rows], axis=1))
    matrix, _ = cv2.estimateAffine2D(source, source + flow[rows, columns], method=cv2.RANSAC)
    if matrix is None:
        return
    grid = _grid(*flow.shape[:2])
    background = cv2.transform(grid, matrix) - grid
    hidden = suspects & (_remap(objects_other.astype(np.float32), background) > 0.5)
    flow[hidden] = background[hidden]
    mismatch[hidden] = 0.0


def _midpoint_area(motion: _Motion, object0: np.ndarray, object1: np.ndarray) -> np.ndarray:
    """Where the object is at t = 0.5: its pixels in either frame moved half way."""
    height, width = object0.shape
    present = cv2.warpAffine(
        object0.view(np.uint8), _half_way(motion.forward), (width, height), flags=cv2.INTER_NEAREST
    )
    present |= cv2.warpAffine(
        object1.view(np.uint8), _half_way(motion.backward), (width, height), flags=cv2.INTER_NEAREST
    )
    return present > 0


def _half_way(matrix: np.ndarray) -> np.ndarray:
    """The affine map taking a point half way along ``matrix``'s motion: (I + M) / 2."""
    return (np.float32([[1, 0, 0], [0, 1, 0]]) + matrix) / 2


def _place_object(
    motion: _Motion,
    present: np.ndarray,
    offset0: np.ndarray,
    offset1: np.ndarray,
    error0: np.ndarray,
    error1: np.ndarray,
) -> None:
    """Where the object is at the midpoint, both sides show it (in place): an object in
    front of the background wins over it, whatever the background's flow says there."""
    if not present.any():
        return
    grid = _grid(*present.shape)
    source0 = cv2.transform(grid, cv2.invertAffineTransform(_half_way(motion.forward)))
    source1 = cv2.transform(grid, cv2.invertAffineTransform(_half_way(motion.backward)))
    offset0[present] = (source0 - grid)[present]
    offset1[present] = (source1 - grid)[present]
    # Entering or leaving the picture, only one side shows it.
    error0[present] = OFF_PICTURE_PENALTY * _off_picture(source0)[present]
    error1[present] = OFF_PICTURE_PENALTY * _off_picture(source1)[present]
