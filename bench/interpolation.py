"""Benchmark 15 -> 30 fps frame interpolation against ground truth.

Renders synthetic 30 fps scenes with known motion, keeps every other frame as the 15 fps
input, and scores each method's in-between frames against the frames that were left out:

    python bench/interpolation.py                       # 88 input frames at 720x1280
    python bench/interpolation.py --frames 16 --height 180 --width 320 --scenes pan
    python bench/interpolation.py --input-formats yuv420p yuvj420p rgb   # phones, screen

Methods are the app's own (``flow``, ``blend``, ``ema-vfi`` when its weights are found), run
through the same driver the app uses, and ffmpeg's ``minterpolate`` (motion-compensated mode)
as an outside reference. PSNR is over RGB; SSIM is on luma. Time is wall seconds per clip
(the driver or ffmpeg alone: rendering and scoring excluded) and CPU seconds (all threads,
ffmpeg included), which a busy shared machine distorts less. The table is Markdown on
stdout; progress and skipped methods go to stderr.

The whole commands (``python -m allegro interpolate``, ffmpeg's minterpolate) also run on
the 15 fps clip saved in each ``--input-formats`` (the app's own 4:2:0 by default; a
phone's full-range ``yuvj420p``, RGB from a screen recorder, 4:2:2, 4:4:4, 10-bit, BT.709
tags), and their output is scored on luma read through its own colour tags: the original
frames against the inputs, the in-between frames against the truth.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allegro.errors import InterpolationError
from allegro.interpolation import METHODS, create_interpolator, method_availability
from allegro.interpolation.driver import interpolate_frames
from allegro.video import write_video

MINTERPOLATE = "minterpolate"
# How the 15 fps clip is saved for the whole commands: ffmpeg encoder arguments, at the
# app's quality. "yuv420p" is the app's own writer (write_video).
INPUT_FORMATS = {
    "yuv420p": [],
    "yuvj420p": ["-c:v", "libx264", "-pix_fmt", "yuvj420p"],
    "yuv422p": ["-c:v", "libx264", "-pix_fmt", "yuv422p"],
    "yuv444p": ["-c:v", "libx264", "-pix_fmt", "yuv444p"],
    "rgb": ["-c:v", "libx264rgb", "-pix_fmt", "rgb24"],
    "yuv420p10le": ["-c:v", "libx264", "-pix_fmt", "yuv420p10le"],
    "bt709": [
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf",
        "scale=out_color_matrix=bt709:out_range=tv,"
        "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709",
    ],
}  # fmt: skip
# Speeds below are in pixels per 30 fps frame at 1280 px wide; smaller renders scale them so
# a quick run at 320 px wide shows the same motion relative to the picture.
REFERENCE_WIDTH = 1280


def noise_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A detailed RGB texture: multi-octave value noise with hard-edged shapes on top."""
    image = np.zeros((height, width, 3), np.float32)
    for cell in (3, 6, 12, 24, 48, 96, 192):
        grid = rng.random((height // cell + 3, width // cell + 3, 3), dtype=np.float32)
        layer = cv2.resize(grid, None, fx=cell, fy=cell, interpolation=cv2.INTER_CUBIC)
        image += layer[:height, :width] * cell**0.7
    image -= image.min()
    image *= 255.0 / image.max()
    texture = np.ascontiguousarray(image.astype(np.uint8))
    # Shapes give sharp edges and flat areas, which noise alone lacks.
    area_scale = height * width / (720 * 1280)
    for _ in range(int(60 * area_scale) + 4):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(rng.integers(8, max(9, min(height, width) // 8)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(texture, centre, size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            corner = (centre[0] + size, centre[1] + int(rng.integers(4, size + 5)))
            cv2.rectangle(texture, centre, corner, colour, -1, cv2.LINE_AA)
        else:
            end = (centre[0] + int(rng.integers(-3, 4)) * size, centre[1] + size)
            cv2.line(texture, centre, end, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
    return texture


# Scenes are drawn at SUPERSAMPLE times the output size and area-averaged down, like a camera
# integrating light over each pixel. Rendering straight at output size would make every
# frame a cubic resampling of the texture, which favours methods that warp with that kernel.
SUPERSAMPLE = 2

# A scene: given (height, width, rng), returns a function drawing 30 fps frame k at that size:
# the RGB frame and the moving objects' coverage (float 0..1, None for scenes without any).
FrameDrawer = Callable[[int], tuple[np.ndarray, np.ndarray | None]]


def translate(texture: np.ndarray, dx: float, dy: float, height: int, width: int) -> np.ndarray:
    """The (height, width) window of ``texture`` whose top-left corner is at (dx, dy)."""
    matrix = np.float32([[1, 0, -dx], [0, 1, -dy]])
    return cv2.warpAffine(
        texture, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def pan_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """Camera pan at a constant, sub-pixel speed: 12.6 px right and 4.2 px down per 15 fps
    step at 1280 px wide."""
    speed = width / REFERENCE_WIDTH
    vx, vy = 6.3 * speed, 2.1 * speed
    # Room for a 175-frame pan (88 frames at 15 fps); longer clips reflect at the border.
    texture = noise_texture(rng, height + int(vy * 176) + 8, width + int(vx * 176) + 8)
    return lambda k: (translate(texture, 2.0 + vx * k, 2.0 + vy * k, height, width), None)


def rotate_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """Camera rolling about the picture centre (0.4 degrees per 30 fps frame, so corners move
    about 10 px per 15 fps step at 720x1280) while slowly zooming in."""
    side = int(np.hypot(height, width) * 1.05) + 8
    texture = noise_texture(rng, side, side)

    def draw(k: int) -> tuple[np.ndarray, None]:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), 0.4 * k, 1.0 + 0.0015 * k)
        # Shift so the texture centre lands on the frame centre.
        matrix[:, 2] += (width / 2 - side / 2, height / 2 - side / 2)
        frame = cv2.warpAffine(
            texture, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        return frame, None

    return draw


@dataclass(frozen=True)
class Sprite:
    """A textured object with a silhouette that is neither a rectangle nor convex."""

    texture: np.ndarray
    mask: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, height: int, width: int) -> Sprite:
        mask = np.zeros((height, width), np.uint8)
        centre = (width // 2, height // 2)
        cv2.ellipse(mask, centre, (width // 2 - 2, height // 3), 0, 0, 360, 255, -1, cv2.LINE_AA)
        cv2.rectangle(mask, (width // 3, 2), (2 * width // 3, height - 3), 255, -1)
        return cls(noise_texture(rng, height, width), mask)

    def paint(
        self, frame: np.ndarray, coverage: np.ndarray, x: float, y: float, angle: float
    ) -> None:
        """Paint the sprite centred at (x, y), turned by ``angle`` degrees, in place."""
        sprite_h, sprite_w = self.mask.shape
        height, width = frame.shape[:2]
        matrix = cv2.getRotationMatrix2D((sprite_w / 2, sprite_h / 2), angle, 1.0)
        matrix[:, 2] += (x - sprite_w / 2, y - sprite_h / 2)
        layer = cv2.warpAffine(self.texture, matrix, (width, height), flags=cv2.INTER_CUBIC)
        alpha = cv2.warpAffine(self.mask, matrix, (width, height), flags=cv2.INTER_LINEAR)
        alpha = alpha.astype(np.float32) / 255.0
        frame[:] = cv2.blendLinear(layer, frame, alpha, 1.0 - alpha)
        np.maximum(coverage, alpha, out=coverage)


def object_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """A textured, spinning object sweeping an elliptical path (about 20 px per 15 fps step
    at 1280 px wide) over a slowly panning background: it covers and uncovers background, the
    case that needs occlusion handling."""
    speed = width / REFERENCE_WIDTH
    background = noise_texture(rng, height + int(1.6 * speed * 176) + 8, width + 8)
    sprite = Sprite.make(rng, int(height * 0.35), int(width * 0.22))
    radius_x, radius_y = width * 0.33, height * 0.25
    # Angular speed for ~10 px per 30 fps frame along the ellipse at 1280 px wide.
    omega = 10.0 * speed / (0.5 * (radius_x + radius_y))

    def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
        frame = translate(background, 4.0, 4.0 + 0.8 * speed * k, height, width)
        coverage = np.zeros((height, width), np.float32)
        x = width / 2 + radius_x * np.cos(omega * k)
        y = height / 2 + radius_y * np.sin(omega * k)
        sprite.paint(frame, coverage, x, y, 0.6 * k)
        return frame, coverage

    return draw


def zooming_camera(
    height: int, width: int, rng: np.random.Generator
) -> Callable[[int], np.ndarray]:
    """Camera panning right and down (9 and 3 px per 15 fps step at 1280 px wide) while
    zooming in 0.15 % per 30 fps frame: background moves 10-20 px per 15 fps step."""
    speed = width / REFERENCE_WIDTH
    vx, vy = 4.5 * speed, 1.5 * speed
    texture = noise_texture(rng, height + int(vy * 176) + 16, width + int(vx * 176) + 16)

    def draw(k: int) -> np.ndarray:
        scale = 1.0 + 0.0015 * k
        centre_x, centre_y = width / 2 + 8 + vx * k, height / 2 + 8 + vy * k
        # Texture point (centre_x, centre_y) lands on the frame centre, magnified by scale.
        matrix = np.float32(
            [[scale, 0, width / 2 - scale * centre_x], [0, scale, height / 2 - scale * centre_y]]
        )
        return cv2.warpAffine(
            texture, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )

    return draw


def zoom_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """The textured camera pan with zoom on its own."""
    camera = zooming_camera(height, width, rng)
    return lambda k: (camera(k), None)


def _wrapped(position: float, width: int, margin: float) -> float:
    """``position`` folded into [-margin, width + margin): an object that leaves one side
    enters again on the other."""
    return (position + margin) % (width + 2 * margin) - margin


def fast_object_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """A 160 px textured object crossing the frame at 100 px per 15 fps step (at 1280 px
    wide), leaving on the right and entering again on the left, over the zooming pan."""
    camera = zooming_camera(height, width, rng)
    speed = width / REFERENCE_WIDTH
    side = int(160 * speed)
    sprite = Sprite.make(rng, side, side)

    def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
        frame = camera(k)
        coverage = np.zeros((height, width), np.float32)
        x = _wrapped(50.0 * speed * k, width, side)
        y = height * (0.55 + 0.1 * np.sin(k / 9))
        sprite.paint(frame, coverage, x, y, 1.0 * k)
        return frame, coverage

    return draw


def crossing_objects_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """Two textured objects over the zooming pan, crossing each other's path: one speeds up
    and slows down between 10 and 120 px per 15 fps step, the other runs diagonally at
    about 90 px; both leave the frame and enter again."""
    camera = zooming_camera(height, width, rng)
    speed = width / REFERENCE_WIDTH
    side = int(160 * speed)
    first = Sprite.make(rng, side, side)
    second = Sprite.make(rng, int(side * 1.2), int(side * 0.8))
    # Position of the first object: integral of a speed of 5..60 px per 30 fps frame.
    period = 24.0
    positions = np.cumsum([32.5 + 27.5 * np.sin(2 * np.pi * k / period) for k in range(400)])

    def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
        frame = camera(k)
        coverage = np.zeros((height, width), np.float32)
        x = _wrapped(speed * positions[k % len(positions)], width, side)
        first.paint(frame, coverage, x, height * 0.5, -0.8 * k)
        x = _wrapped(width - 40.0 * speed * k, width, side)
        y = _wrapped(20.0 * speed * k, height, side)
        second.paint(frame, coverage, x, y, 1.5 * k)
        return frame, coverage

    return draw


SCENE_MAKERS: dict[str, Callable[[int, int, np.random.Generator], FrameDrawer]] = {
    "pan": pan_scene,
    "rotate": rotate_scene,
    "object": object_scene,
    "pan-zoom": zoom_scene,
    "fast-object": fast_object_scene,
    "crossing": crossing_objects_scene,
}
# How far around the objects' silhouettes (in the in-between frame and both neighbours) the
# object area reaches, in pixels at 1280 px wide: errors at the object's edges count there.
OBJECT_MARGIN = 8


@dataclass(frozen=True)
class Clip:
    """30 fps frames and, per frame, where the moving objects are (None: no objects)."""

    frames: np.ndarray
    coverage: np.ndarray | None


def render_clip(scene: str, count: int, height: int, width: int, seed: int) -> Clip:
    """``count`` frames of ``scene`` at 30 fps, (count, height, width, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    draw = SCENE_MAKERS[scene](height * SUPERSAMPLE, width * SUPERSAMPLE, rng)
    frames = np.empty((count, height, width, 3), np.uint8)
    coverage: np.ndarray | None = None
    for k in range(count):
        frame, alpha = draw(k)
        frames[k] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        if alpha is not None:
            if coverage is None:
                coverage = np.zeros((count, height, width), np.float32)
            coverage[k] = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)
    return Clip(frames, coverage)


def object_areas(coverage: np.ndarray, width: int) -> np.ndarray:
    """For each in-between frame 2i + 1: the pixels the objects cover in it or in either
    neighbour, grown by OBJECT_MARGIN. That is the object and the background it covers or
    uncovers, where the motion boundary makes interpolation hard."""
    covered = coverage > 0.02
    union = covered[0:-2:2] | covered[1:-1:2] | covered[2::2]
    reach = max(1, round(OBJECT_MARGIN * width / REFERENCE_WIDTH))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    return np.stack([cv2.dilate(area.view(np.uint8), kernel) > 0 for area in union])


def psnr(result: np.ndarray, truth: np.ndarray) -> float:
    mse = np.mean((result.astype(np.float32) - truth.astype(np.float32)) ** 2)
    return float(10.0 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def ssim(result: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) on the luma channel."""
    x = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY).astype(np.float32)
    y = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY).astype(np.float32)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def smooth(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5)

    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x * mu_x
    var_y = smooth(y * y) - mu_y * mu_y
    cov = smooth(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))


def run_minterpolate(frames: np.ndarray) -> np.ndarray:
    """ffmpeg ``minterpolate=fps=30:mi_mode=mci`` on raw RGB frames piped in at 15 fps.

    Returns one in-between frame per input pair. Alignment: input frame i has timestamp
    i/15 s = 2i/30 s, so output frame 2i shares its timestamp and 2i+1 lies halfway to input
    i+1. This is checked, not assumed: every even output frame must reproduce its input frame
    (up to the RGB -> YUV 4:4:4 -> RGB round trip) or the run is rejected. At the end of the
    stream minterpolate drops the last in-between frame and the last input (2N - 3 frames
    out for N in), so the last frame is fed twice; the extra pair is not scored.
    """
    import imageio_ffmpeg

    count, height, width, _ = frames.shape
    # minterpolate works in YUV; 4:4:4 keeps full colour resolution so chroma subsampling
    # does not cost it PSNR that has nothing to do with motion.
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "15", "-i", "-",
        "-vf", "format=yuv444p,minterpolate=fps=30:mi_mode=mci,format=rgb24",
        "-sws_flags", "accurate_rnd+full_chroma_int",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def feed() -> None:
        # Written from a thread: ffmpeg fills its stdout pipe before it has read all input.
        assert process.stdin is not None
        process.stdin.write(frames.tobytes())
        process.stdin.write(frames[-1].tobytes())
        process.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert process.stdout is not None and process.stderr is not None
    raw = process.stdout.read()
    errors = process.stderr.read()  # "-v error" keeps this short, so it cannot fill up
    writer.join()
    process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {errors.decode(errors='replace')}")
    output = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    if len(output) < 2 * count - 1:
        raise RuntimeError(f"minterpolate returned {len(output)} frames for {count} inputs")
    for index in range(count):
        if psnr(output[2 * index], frames[index]) < 40.0:
            raise RuntimeError(f"minterpolate output frame {2 * index} is not input {index}")
    return output[1 : 2 * count - 1 : 2]


def region_psnr(result: np.ndarray, truth: np.ndarray, area: np.ndarray) -> float | None:
    """PSNR over the pixels of ``area`` (H, W bool); None when the area is empty."""
    if not area.any():
        return None
    difference = result[area].astype(np.float32) - truth[area].astype(np.float32)
    return float(10.0 * np.log10(255.0**2 / max(float(np.mean(difference**2)), 1e-10)))


@dataclass(frozen=True)
class Score:
    """Mean per-frame figures of one method on one scene. ``object_psnr`` and ``rest_psnr``
    split each frame into the moving objects' area and everything else (None: the scene has
    no objects). ``seconds``: the interpolation stage alone, frames in memory, as inside the
    app. ``command_seconds``: the whole command, MP4 in to H.264 MP4 out (None: not run);
    ``command_object_psnr`` and ``command_rest_psnr``: luma PSNR of that command's own
    output file, in-between frames only, against the truth's luma (the same H.264 encode
    for every method, so this compares what people get from each command).
    ``input_format``: how the command's 15 fps input was saved; ``command_originals_psnr``:
    luma PSNR of the command's original frames against the inputs."""

    scene: str
    method: str
    psnr: float
    object_psnr: float | None
    rest_psnr: float | None
    ssim: float
    seconds: float
    cpu_seconds: float
    command_seconds: float | None = None
    command_cpu_seconds: float | None = None
    command_psnr: float | None = None
    command_object_psnr: float | None = None
    command_rest_psnr: float | None = None
    input_format: str = "yuv420p"
    command_originals_psnr: float | None = None


def score_method(
    scene: str,
    method: str,
    inputs: np.ndarray,
    truth: np.ndarray,
    areas: np.ndarray | None,
    weights: str | None,
) -> Score:
    """Interpolate ``inputs`` with ``method`` and score its in-between frames."""
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    if method == MINTERPOLATE:
        middles = run_minterpolate(inputs)
    else:
        interpolator = create_interpolator(method, weights=weights)
        middles = interpolate_frames(inputs, interpolator).frames[1:-1:2]
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    psnrs = [psnr(result, expected) for result, expected in zip(middles, truth, strict=True)]
    ssims = [ssim(result, expected) for result, expected in zip(middles, truth, strict=True)]
    object_psnr, rest_psnr = split_psnr(middles, truth, areas)
    return Score(
        scene,
        method,
        float(np.mean(psnrs)),
        object_psnr,
        rest_psnr,
        float(np.mean(ssims)),
        seconds,
        cpu_seconds,
    )


def split_psnr(
    middles: np.ndarray, truth: np.ndarray, areas: np.ndarray | None
) -> tuple[float | None, float | None]:
    """Mean per-frame PSNR over the objects' areas and over the rest (None, None: no areas)."""
    if areas is None:
        return None, None
    pairs = list(zip(middles, truth, areas, strict=True))
    inside = [region_psnr(result, expected, area) for result, expected, area in pairs]
    outside = [region_psnr(result, expected, ~area) for result, expected, area in pairs]
    return (
        _mean([value for value in inside if value is not None]),
        _mean([value for value in outside if value is not None]),
    )


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def run_command(method: str, source: Path, weights: str | None) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of the whole command a user runs, 15 fps MP4 in, 30 fps H.264
    MP4 out of the quality the app writes (CRF 17, preset faster, yuv420p): a fresh process
    that decodes, interpolates and encodes; and the luma (Y) of its output's frames."""
    destination = source.with_name(f"{method}.mp4")
    if method == MINTERPOLATE:
        import imageio_ffmpeg

        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(source),
            "-vf", "minterpolate=fps=30:mi_mode=mci",
            "-c:v", "libx264", "-crf", "17", "-preset", "faster", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(destination),
        ]  # fmt: skip
    else:
        command = [sys.executable, "-m", "allegro", "interpolate", str(source), str(destination)]
        command += ["--method", method] + (["--weights", weights] if weights else [])
    started, cpu_started = time.perf_counter(), _children_cpu_seconds()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu_seconds() - cpu_started
    lumas = decode_luma(destination)
    destination.unlink()
    return seconds, cpu_seconds, lumas


def decode_luma(path: Path) -> np.ndarray:
    """Every frame's luma as limited-range BT.601 Y, (N, H, W) uint8, as the truth's is
    computed: each frame read with its own matrix and range (a no-op for untagged 4:2:0)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        height = stream.codec_context.height
        return np.stack(
            [
                frame.reformat(
                    format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG"
                ).to_ndarray()[:height]
                for frame in container.decode(stream)
            ]
        )


def save_input(path: Path, frames: np.ndarray, input_format: str, scene: str) -> None:
    """The 15 fps clip as ``input_format`` (see INPUT_FORMATS), CRF 17 like the app's."""
    if input_format == "yuv420p":
        write_video(path, frames, 15, {"source": f"bench scene {scene}"})
        return
    import imageio_ffmpeg

    _, height, width, _ = frames.shape
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "15", "-i", "-",
        *INPUT_FORMATS[input_format], "-crf", "17", "-preset", "faster", str(path),
    ]  # fmt: skip
    subprocess.run(command, input=frames.tobytes(), check=True, capture_output=True)


def score_command_output(
    score: Score,
    seconds: tuple[float, float],
    lumas: np.ndarray,
    inputs: np.ndarray,
    truth: np.ndarray,
    areas: np.ndarray | None,
) -> Score:
    """``score`` with the command's (wall, CPU) seconds and its output's in-between frames
    scored on luma. Output frame 2i + 1 lies between inputs i and i + 1 (checked: frame 2i
    must be input i but for the H.264 round trips); minterpolate's last in-between frame may
    be missing, so the frames every method made are scored."""
    count = min(len(truth), (len(lumas) - 1) // 2)

    def luma(frames: np.ndarray) -> np.ndarray:
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420)[: f.shape[0]] for f in frames])

    originals = []
    for index, expected in enumerate(luma(inputs[: count + 1])):
        originals.append(psnr(lumas[2 * index], expected))
        if originals[-1] < 30.0:
            raise RuntimeError(f"{score.method} output frame {2 * index} is not input {index}")
    truth_luma = luma(truth[:count])
    middles = lumas[1 : 2 * count : 2]
    psnrs = [psnr(result, expected) for result, expected in zip(middles, truth_luma, strict=True)]
    object_psnr, rest_psnr = split_psnr(
        middles, truth_luma, None if areas is None else areas[:count]
    )
    return replace(
        score,
        command_seconds=seconds[0],
        command_cpu_seconds=seconds[1],
        command_psnr=float(np.mean(psnrs)),
        command_object_psnr=object_psnr,
        command_rest_psnr=rest_psnr,
        command_originals_psnr=float(np.mean(originals)),
    )


def _children_cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus finished children (ffmpeg): on a shared
    machine wall time depends on the neighbours, CPU time much less."""
    return time.process_time() + _children_cpu_seconds()


def _decibels(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=88, help="15 fps input frames per clip")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument(
        "--scenes", nargs="+", choices=list(SCENE_MAKERS), default=list(SCENE_MAKERS)
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[*METHODS, MINTERPOLATE],
        help="default: flow, blend, ema-vfi when its weights are found, and minterpolate",
    )
    parser.add_argument("--weights", help="EMA-VFI weights file (default: searched for)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-commands", action="store_true", help="skip timing the whole commands")
    parser.add_argument(
        "--input-formats",
        nargs="+",
        choices=list(INPUT_FORMATS),
        default=["yuv420p"],
        help="how the whole commands' 15 fps input is saved (default: the app's yuv420p)",
    )
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    if args.height % 2 or args.width % 2:
        parser.error("--height and --width must be even (H.264 in yuv420p)")

    methods = args.methods
    if methods is None:
        methods = [m for m in METHODS if method_availability(m, args.weights).available]
        methods.append(MINTERPOLATE)
    skipped = [m for m in METHODS if m not in methods and args.methods is None]
    for method in skipped:
        reason = method_availability(method, args.weights).reason
        print(f"Skipping {method}: {reason}", file=sys.stderr)

    load_before = os.getloadavg()[0]
    scores: list[Score] = []
    with tempfile.TemporaryDirectory() as folder:
        for scene in args.scenes:
            # 2N - 1 frames at 30 fps span exactly the N frames at 15 fps.
            clip = render_clip(scene, 2 * args.frames - 1, args.height, args.width, args.seed)
            inputs, truth = clip.frames[0::2], clip.frames[1::2]
            areas = None if clip.coverage is None else object_areas(clip.coverage, args.width)
            source = Path(folder, "input.mp4")
            scene_scores: list[Score] = []
            for method in methods:
                try:
                    scene_scores.append(
                        score_method(scene, method, inputs, truth, areas, args.weights)
                    )
                except InterpolationError as error:
                    print(f"Skipping {method} on {scene}: {error}", file=sys.stderr)
            for input_format in [None] if args.no_commands else args.input_formats:
                if input_format is not None:
                    save_input(source, inputs, input_format, scene)
                # The whole commands one after the other, so they share the machine's load.
                for score in scene_scores:
                    if input_format is not None:
                        wall, cpu, lumas = run_command(score.method, source, args.weights)
                        score = replace(
                            score_command_output(score, (wall, cpu), lumas, inputs, truth, areas),
                            input_format=input_format,
                        )
                    scores.append(score)
                    _report(score)
            del clip, inputs, truth, areas

    print(
        f"\n{args.frames} input frames at {args.height}x{args.width} -> "
        f"{2 * args.frames} frames; in-between frames scored against ground truth. "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after.\n"
    )
    print(
        "| scene | method | PSNR (dB) | object area | rest | SSIM | interpolation s (CPU s) "
        "| input format | whole command s (CPU s) | x minterpolate's speed (CPU) "
        "| command luma PSNR: originals | in-between all / object / rest |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    reference = {(s.scene, s.input_format): s for s in scores if s.method == MINTERPOLATE}
    for score in scores:
        speedup = "-"
        minterpolate = reference.get((score.scene, score.input_format))
        if minterpolate and minterpolate.command_seconds and score.command_seconds:
            speedup = (
                f"{minterpolate.command_seconds / score.command_seconds:.1f}x "
                f"({minterpolate.command_cpu_seconds / score.command_cpu_seconds:.1f}x)"
            )
        print(
            f"| {score.scene} | {score.method} | {score.psnr:.2f} "
            f"| {_decibels(score.object_psnr)} | {_decibels(score.rest_psnr)} "
            f"| {score.ssim:.4f} | {score.seconds:.2f} ({score.cpu_seconds:.2f}) "
            f"| {score.input_format if score.command_seconds is not None else '-'} "
            f"| {_seconds(score.command_seconds)} ({_seconds(score.command_cpu_seconds)}) "
            f"| {speedup} | {_decibels(score.command_originals_psnr)} "
            f"| {_decibels(score.command_psnr)} / {_decibels(score.command_object_psnr)} / "
            f"{_decibels(score.command_rest_psnr)} |"
        )


def _report(score: Score) -> None:
    """One line of progress on stderr."""
    print(
        f"{score.scene:>11} {score.method:>13}: {score.psnr:6.2f} dB  object "
        f"{_decibels(score.object_psnr):>5}  rest {_decibels(score.rest_psnr):>5}  "
        f"SSIM {score.ssim:.4f}  {score.seconds:6.2f} s (CPU "
        f"{score.cpu_seconds:6.2f} s)  command on {score.input_format} "
        f"{_seconds(score.command_seconds)} s (CPU {_seconds(score.command_cpu_seconds)} s), "
        f"luma originals {_decibels(score.command_originals_psnr)} "
        f"object {_decibels(score.command_object_psnr)} "
        f"rest {_decibels(score.command_rest_psnr)}",
        file=sys.stderr,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
