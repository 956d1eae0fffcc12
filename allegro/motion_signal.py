"""Motion signals for Time-to-Move: a crude animation of the first frame and a mask of what
it moves, built three ways (``allegro/ti2v/motion.py`` turns them into denoising guidance):

- ``camera_signal``: pan, tilt, zoom and roll the first frame over the clip; the mask is what
  the warp keeps, so the uncovered border is left to the model (as the authors' camera tool
  does, without its depth model: a flat scene, no parallax);
- ``drag_signal``: cut a painted object out, fill the hole (OpenCV's Telea inpainting, as
  the authors' cut-and-drag GUI does), and paste it along a path, optionally scaled;
- ``load_example``: the authors' example folders (``first_frame.png``,
  ``motion_signal.mp4``, ``mask.mp4``, ``prompt.txt``) as they are.

All pixel work is numpy/OpenCV on uint8 RGB frames (F, H, W, 3) and bool masks (F, H, W).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from allegro.errors import InvalidRequestError
from allegro.ti2v.motion import CLOCK_PRESETS, MotionClocks


@dataclass(frozen=True)
class MotionSignal:
    """What the video should do: ``frames`` (F, H, W, 3) uint8, ``mask`` (F, H, W) bool (True:
    follow the signal), the kind of motion (``camera`` / ``object``: which clock preset
    fits), and a prompt when the source carried one."""

    frames: np.ndarray
    mask: np.ndarray
    kind: str
    prompt: str | None = None


# name -> (what it moves, the sign of the content's motion). Amounts: pan/tilt in fractions
# of the frame's width/height, zoom as the scale reached at the end minus 1, roll in degrees.
CAMERA_MOVES = {
    "pan-left": ("x", +1.0),  # the camera turns left: the picture slides right
    "pan-right": ("x", -1.0),
    "tilt-up": ("y", +1.0),  # the camera tilts up: the picture slides down
    "tilt-down": ("y", -1.0),
    "zoom-in": ("zoom", +1.0),
    "zoom-out": ("zoom", -1.0),
    "roll-left": ("roll", +1.0),  # degrees, counter-clockwise on screen
    "roll-right": ("roll", -1.0),
}
_MOVE = re.compile(r"^\s*([a-z-]+)\s+(-?\d+(?:\.\d+)?)\s*$")
_LIMITS = {"x": 1.0, "y": 1.0, "zoom": 3.0, "roll": 90.0}


@dataclass(frozen=True)
class CameraMove:
    """A camera move over the whole clip (sums of moves combine)."""

    pan_x: float = 0.0  # content shift at the end, fraction of the width (+: right)
    pan_y: float = 0.0  # fraction of the height (+: down)
    zoom: float = 0.0  # scale at the end is 1 + zoom (zoom-out: 1 / (1 + amount))
    roll: float = 0.0  # degrees at the end (+: counter-clockwise)


def parse_camera(spec: str) -> CameraMove:
    """``"zoom-in 0.3"``, ``"pan-right 0.2 + tilt-up 0.1"`` -> a ``CameraMove``."""
    totals = {"x": 0.0, "y": 0.0, "zoom": 0.0, "roll": 0.0}
    if not spec.strip():
        raise InvalidRequestError("Give a camera move, such as 'zoom-in 0.3'.", field="camera")
    for part in spec.split("+"):
        match = _MOVE.match(part.lower())
        if not match or match.group(1) not in CAMERA_MOVES:
            raise InvalidRequestError(
                f"Unknown camera move {part.strip()!r}: use a move and an amount, such as "
                f"'zoom-in 0.3', from {', '.join(CAMERA_MOVES)}, joined with '+'.",
                field="camera",
            )
        axis, sign = CAMERA_MOVES[match.group(1)]
        amount = float(match.group(2))
        if not 0 <= amount <= _LIMITS[axis]:
            raise InvalidRequestError(
                f"Camera move {match.group(1)}: the amount must be between 0 and "
                f"{_LIMITS[axis]:g}, not {amount:g}.",
                field="camera",
            )
        if axis == "zoom" and sign < 0:
            amount = 1.0 / (1.0 + amount) - 1.0
        totals[axis] += sign * amount if axis != "zoom" else amount
    return CameraMove(totals["x"], totals["y"], totals["zoom"], totals["roll"])


def _camera_matrix(move: CameraMove, progress: float, height: int, width: int) -> np.ndarray:
    """The 2x3 affine map from the first frame to the frame at ``progress`` (0..1): zoom and
    roll about the centre, then the pan."""
    scale = (1.0 + move.zoom) ** progress
    matrix = cv2.getRotationMatrix2D(
        ((width - 1) / 2, (height - 1) / 2), move.roll * progress, scale
    )
    matrix[0, 2] += move.pan_x * width * progress
    matrix[1, 2] += move.pan_y * height * progress
    return matrix


def camera_signal(image: np.ndarray, move: CameraMove, frames: int) -> MotionSignal:
    """Warp the first frame (H, W, 3) uint8 along ``move`` over ``frames`` frames."""
    height, width = image.shape[:2]
    ones = np.ones((height, width), np.uint8)
    video, mask = [], []
    for index in range(frames):
        matrix = _camera_matrix(move, index / max(frames - 1, 1), height, width)
        video.append(
            cv2.warpAffine(
                image,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
        mask.append(cv2.warpAffine(ones, matrix, (width, height), flags=cv2.INTER_NEAREST) > 0)
    return MotionSignal(np.stack(video), np.stack(mask), "camera")


def _along(path: np.ndarray, progress: float) -> tuple[np.ndarray, int, float]:
    """The point at ``progress`` (0..1) of the path's length, its segment and the fraction."""
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)
    target = progress * lengths.sum()
    for segment, length in enumerate(lengths):
        if target <= length or segment == len(lengths) - 1:
            fraction = 0.0 if length == 0 else min(target / length, 1.0)
            return path[segment] + fraction * (path[segment + 1] - path[segment]), segment, fraction
        target -= length
    raise AssertionError("unreachable")


def check_drag(image: np.ndarray, object_mask: np.ndarray, path, scales=None) -> None:
    """Clear refusals for a drag that cannot be built."""
    height, width = image.shape[:2]
    if object_mask.shape != (height, width):
        raise InvalidRequestError(
            f"The object mask is {object_mask.shape[1]}x{object_mask.shape[0]}, the image "
            f"{width}x{height}.",
            field="motion_mask",
        )
    if not object_mask.any():
        raise InvalidRequestError(
            "Paint the object to move: its mask is empty.", field="motion_mask"
        )
    if object_mask.all():
        raise InvalidRequestError(
            "The object mask covers the whole image: paint only the object to move, or use a "
            "camera move.",
            field="motion_mask",
        )
    if len(path) < 2:
        raise InvalidRequestError(
            "A drag path needs at least two points: where the object is, and where it goes.",
            field="drag_path",
        )
    for x, y in path:
        if not (0 <= x < width and 0 <= y < height):
            raise InvalidRequestError(
                f"The path point ({x:g}, {y:g}) is outside the {width}x{height} image.",
                field="drag_path",
            )
    if scales is not None and (len(scales) != len(path) or any(not 0.1 <= s <= 10 for s in scales)):
        raise InvalidRequestError(
            "Give one scale per path point, each between 0.1 and 10.", field="drag_path"
        )


def drag_signal(
    image: np.ndarray,
    object_mask: np.ndarray,
    path,
    frames: int,
    scales=None,
) -> MotionSignal:
    """Cut the painted object out of the first frame and move it along ``path`` (x, y pixel
    points; the first is where it is grabbed), scaled about that point by ``scales`` (one
    per point) if given. The mask of each frame is where the object is."""
    check_drag(image, object_mask, path, scales)
    points = np.asarray(path, dtype=np.float64)
    sizes = np.ones(len(points)) if scales is None else np.asarray(scales, dtype=np.float64)
    height, width = image.shape[:2]
    cut = object_mask.astype(np.uint8)
    background = cv2.inpaint(image, cut, 3, cv2.INPAINT_TELEA)
    video, mask = [], []
    for index in range(frames):
        where, segment, fraction = _along(points, index / max(frames - 1, 1))
        scale = sizes[segment] + fraction * (sizes[segment + 1] - sizes[segment])
        matrix = np.array(
            [[scale, 0.0, where[0] - scale * points[0, 0]],
             [0.0, scale, where[1] - scale * points[0, 1]]]
        )  # fmt: skip
        layer = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)
        held = cv2.warpAffine(cut, matrix, (width, height), flags=cv2.INTER_NEAREST) > 0
        frame = background.copy()
        frame[held] = layer[held]
        video.append(frame)
        mask.append(held)
    return MotionSignal(np.stack(video), np.stack(mask), "object")


def check_mask(mask: np.ndarray) -> None:
    """An uploaded motion mask must mark something to follow."""
    if not mask.any():
        raise InvalidRequestError(
            "The motion mask is empty: it must be white where the video should follow the "
            "motion signal.",
            field="motion_mask",
        )


def read_mask(path: str | Path) -> np.ndarray:
    """A mask video (white: follow the signal) -> (F, H, W) bool, thresholded at half."""
    from allegro.video import read_frames

    frames, _fps = read_frames(path)
    return frames.max(axis=-1) > 127


def load_signal(
    video_path: str | Path, mask_path: str | Path, kind: str = "object"
) -> MotionSignal:
    from allegro.video import read_frames

    frames, _fps = read_frames(video_path)
    mask = read_mask(mask_path)
    check_mask(mask)
    return MotionSignal(frames, mask, kind)


def load_example(folder: str | Path) -> tuple[np.ndarray, MotionSignal]:
    """One of the authors' example folders -> (first frame, motion signal with its prompt).
    Folders named ``camcontrol_*`` are camera moves, the rest cut-and-drag."""
    from allegro.ti2v.inputs import load_image

    folder = Path(folder)
    missing = [
        name for name in ("first_frame.png", "motion_signal.mp4", "mask.mp4")
        if not (folder / name).is_file()
    ]  # fmt: skip
    if missing:
        raise InvalidRequestError(
            f"{folder.name} is not a motion example folder: {', '.join(missing)} missing.",
            field="motion_signal",
        )
    kind = "camera" if folder.name.startswith("camcontrol") else "object"
    signal = load_signal(folder / "motion_signal.mp4", folder / "mask.mp4", kind)
    prompt_file = folder / "prompt.txt"
    prompt = prompt_file.read_text(encoding="utf-8").strip() if prompt_file.is_file() else None
    first = load_image(folder / "first_frame.png", "first frame")
    return first, MotionSignal(signal.frames, signal.mask, kind, prompt)


def shift_between(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """How far (dx, dy) the content of ``second`` moved from ``first`` (phase correlation on
    luma): what a pan must measure."""
    a = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY).astype(np.float64)
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_64F)
    (dx, dy), _response = cv2.phaseCorrelate(a, b, window)
    return dx, dy


# From a request's motion fields ----------------------------------------------------------

MOTION_FIELDS = ("camera", "drag", "motion_signal", "motion_mask")
MOTION_CLOCK_FIELDS = ("motion_preset", "motion_tweak", "motion_strong")


@dataclass(frozen=True)
class MotionRequest:
    """The motion fields of a generation request, read by name: one way in (a camera move,
    a drag file, or a motion-signal video with its mask) and the clocks."""

    camera: str | None = None
    drag: str | None = None
    motion_signal: str | None = None
    motion_mask: str | None = None
    motion_preset: str | None = None
    motion_tweak: float | None = None
    motion_strong: float | None = None

    @classmethod
    def of(cls, request: Any) -> MotionRequest | None:
        """The request's motion, or None when it asks for none."""
        values = {name: getattr(request, name, None) for name in cls.__dataclass_fields__}
        if not any(values[name] for name in MOTION_FIELDS):
            return None
        return cls(**values)

    @property
    def kind(self) -> str:
        return "camera" if self.camera else "object"

    def clocks(self, steps: int) -> MotionClocks:
        """The preset named (or the one for this kind of motion), with either clock
        replaced by a fraction given."""
        preset = CLOCK_PRESETS[self.motion_preset or self.kind]
        try:
            return MotionClocks(
                preset.tweak if self.motion_tweak is None else float(self.motion_tweak),
                preset.strong if self.motion_strong is None else float(self.motion_strong),
            )
        except ValueError as error:
            raise InvalidRequestError(f"{error}.", field="motion_strong") from None

    def check(self, first_image: str | None) -> None:
        """Refusals before anything is queued (the files are read by ``build``)."""
        ways = [bool(self.camera), bool(self.drag), bool(self.motion_signal)]
        if sum(ways) > 1:
            raise InvalidRequestError(
                "Choose one way to give motion: a camera move, a drag, or a motion-signal video.",
                field="camera" if self.camera else "drag",
            )
        if not first_image:
            field = next(name for name in MOTION_FIELDS if getattr(self, name))
            raise InvalidRequestError(
                "Motion control moves a first frame: add a first image.", field=field
            )
        if (self.motion_signal or self.drag) and not self.motion_mask:
            raise InvalidRequestError(
                "A drag needs the object's mask (an image, white on the object), and a "
                "motion-signal video its mask video (white where the video must follow it).",
                field="motion_mask",
            )
        if self.motion_mask and not (self.motion_signal or self.drag):
            raise InvalidRequestError(
                "A motion mask goes with a drag path or a motion-signal video.",
                field="motion_mask",
            )
        if self.camera:
            parse_camera(self.camera)
        if self.drag:
            parse_drag(self.drag)
        self.clocks(100)

    def build(
        self, first_image: np.ndarray, frames: int, height: int, width: int
    ) -> tuple[MotionSignal, str | None]:
        """The motion signal at the video's length and size (``first_image`` as loaded),
        and a note when an uploaded signal had to be resampled."""
        from allegro.ti2v.condition import condition_preview

        first = condition_preview(first_image, height, width)
        if self.camera:
            return camera_signal(first, parse_camera(self.camera), frames), None
        if self.drag:
            return _drag_from(self.drag, str(self.motion_mask), first_image, first, frames), None
        signal = load_signal(str(self.motion_signal), str(self.motion_mask), self.kind)
        from allegro.ti2v.motion import resample_signal

        video, mask, note = resample_signal(signal.frames, signal.mask, frames, height, width)
        check_mask(mask)
        return MotionSignal(video, mask, "object"), note


MAX_DRAG_CHARS = 20_000  # a path of about a thousand points


def parse_drag(text: str) -> tuple[list[tuple[float, float]], list[float] | None]:
    """A drag path as JSON: ``[[x, y], ...]`` or ``{"path": [[x, y], ...], "scales":
    [...]}``, points in the first image's pixels."""

    def refuse(message: str) -> InvalidRequestError:
        return InvalidRequestError(f"Drag path: {message}", field="drag")

    if len(text) > MAX_DRAG_CHARS:
        raise refuse(f"at most {MAX_DRAG_CHARS:,} characters.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise refuse(f"not JSON ({error.msg} at character {error.pos}).") from None
    if isinstance(data, list):
        data = {"path": data}
    if not isinstance(data, dict) or not isinstance(data.get("path"), list):
        raise refuse('give [[x, y], ...] or {"path": [[x, y], ...], "scales": [...]}.')
    try:
        points = [(float(x), float(y)) for x, y in data["path"]]
        scales = None if data.get("scales") is None else [float(s) for s in data["scales"]]
    except (TypeError, ValueError):
        raise refuse('"path" must be [x, y] pairs and "scales" numbers.') from None
    return points, scales


def _drag_from(
    drag: str, mask_path: str, source: np.ndarray, first: np.ndarray, frames: int
) -> MotionSignal:
    """The path (in the first image's pixels) and the object's mask (an image the size of
    the first image, white on the object), both mapped through the first image's crop and
    resize to the video."""
    from allegro.ti2v.condition import crop_box
    from allegro.ti2v.inputs import load_image

    points, scales = parse_drag(drag)
    object_mask = load_image(mask_path, "object mask").max(axis=-1) > 127
    check_drag(source, object_mask, points, scales)
    height, width = first.shape[:2]
    box = crop_box(source.shape[0], source.shape[1], height, width)
    sx, sy = width / box.width, height / box.height
    mapped = [((x - box.left) * sx, (y - box.top) * sy) for x, y in points]
    cropped = object_mask[box.top : box.top + box.height, box.left : box.left + box.width]
    resized = cv2.resize(cropped.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return drag_signal(first, resized > 0, mapped, frames, scales)
