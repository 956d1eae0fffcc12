"""Benchmark 15 -> 30 fps frame interpolation against ground truth.

Renders synthetic 30 fps scenes with known motion, keeps every other frame as the 15 fps
input, and scores each method's in-between frames against the frames that were left out:

    python bench/interpolation.py                       # 88 input frames at 720x1280
    python bench/interpolation.py --frames 16 --height 180 --width 320 --scenes pan

Methods are the app's own (``flow``, ``blend``, ``ema-vfi`` when its weights are found), run
through the same driver the app uses, and ffmpeg's ``minterpolate`` (motion-compensated mode)
as an outside reference. PSNR is over RGB; SSIM is on luma. Time is wall seconds per clip
(the driver or ffmpeg alone: rendering and scoring excluded) and CPU seconds (all threads,
ffmpeg included), which a busy shared machine distorts less. The table is Markdown on
stdout; progress and skipped methods go to stderr.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allegro.errors import InterpolationError
from allegro.interpolation import METHODS, create_interpolator, method_availability
from allegro.interpolation.driver import interpolate_frames

MINTERPOLATE = "minterpolate"
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

# A scene: given (height, width, rng), returns a function drawing 30 fps frame k at that size.
FrameDrawer = Callable[[int], np.ndarray]


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
    return lambda k: translate(texture, 2.0 + vx * k, 2.0 + vy * k, height, width)


def rotate_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """Camera rolling about the picture centre (0.4 degrees per 30 fps frame, so corners move
    about 10 px per 15 fps step at 720x1280) while slowly zooming in."""
    side = int(np.hypot(height, width) * 1.05) + 8
    texture = noise_texture(rng, side, side)

    def draw(k: int) -> np.ndarray:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), 0.4 * k, 1.0 + 0.0015 * k)
        # Shift so the texture centre lands on the frame centre.
        matrix[:, 2] += (width / 2 - side / 2, height / 2 - side / 2)
        return cv2.warpAffine(
            texture, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )

    return draw


def object_scene(height: int, width: int, rng: np.random.Generator) -> FrameDrawer:
    """A textured, spinning object sweeping an elliptical path (about 20 px per 15 fps step
    at 1280 px wide) over a slowly panning background: it covers and uncovers background, the
    case that needs occlusion handling."""
    speed = width / REFERENCE_WIDTH
    background = noise_texture(rng, height + int(1.6 * speed * 176) + 8, width + 8)
    sprite_h, sprite_w = int(height * 0.35), int(width * 0.22)
    sprite = noise_texture(rng, sprite_h, sprite_w)
    # Anti-aliased ellipse plus a tab, so the silhouette is neither a rectangle nor convex.
    mask = np.zeros((sprite_h, sprite_w), np.uint8)
    centre = (sprite_w // 2, sprite_h // 2)
    cv2.ellipse(mask, centre, (sprite_w // 2 - 2, sprite_h // 3), 0, 0, 360, 255, -1, cv2.LINE_AA)
    cv2.rectangle(mask, (sprite_w // 3, 2), (2 * sprite_w // 3, sprite_h - 3), 255, -1)
    radius_x, radius_y = width * 0.33, height * 0.25
    # Angular speed for ~10 px per 30 fps frame along the ellipse at 1280 px wide.
    omega = 10.0 * speed / (0.5 * (radius_x + radius_y))
    size = (width, height)

    def draw(k: int) -> np.ndarray:
        frame = translate(background, 4.0, 4.0 + 0.8 * speed * k, height, width)
        angle = omega * k
        cx = width / 2 + radius_x * np.cos(angle)
        cy = height / 2 + radius_y * np.sin(angle)
        matrix = cv2.getRotationMatrix2D((sprite_w / 2, sprite_h / 2), 0.6 * k, 1.0)
        matrix[:, 2] += (cx - sprite_w / 2, cy - sprite_h / 2)
        layer = cv2.warpAffine(sprite, matrix, size, flags=cv2.INTER_CUBIC)
        alpha = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        return cv2.blendLinear(layer, frame, alpha, 255.0 - alpha)

    return draw


SCENE_MAKERS: dict[str, Callable[[int, int, np.random.Generator], FrameDrawer]] = {
    "pan": pan_scene,
    "rotate": rotate_scene,
    "object": object_scene,
}


def render_clip(scene: str, count: int, height: int, width: int, seed: int) -> np.ndarray:
    """``count`` frames of ``scene`` at 30 fps, (count, height, width, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    draw = SCENE_MAKERS[scene](height * SUPERSAMPLE, width * SUPERSAMPLE, rng)
    frames = np.empty((count, height, width, 3), np.uint8)
    for k in range(count):
        frames[k] = cv2.resize(draw(k), (width, height), interpolation=cv2.INTER_AREA)
    return frames


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


@dataclass(frozen=True)
class Score:
    scene: str
    method: str
    psnr: float
    ssim: float
    seconds: float
    cpu_seconds: float


def score_method(
    scene: str, method: str, inputs: np.ndarray, truth: np.ndarray, weights: str | None
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
    return Score(scene, method, float(np.mean(psnrs)), float(np.mean(ssims)), seconds, cpu_seconds)


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus finished children (ffmpeg): on a shared
    machine wall time depends on the neighbours, CPU time much less."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


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
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")

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
    for scene in args.scenes:
        # 2N - 1 frames at 30 fps span exactly the N frames at 15 fps.
        clip = render_clip(scene, 2 * args.frames - 1, args.height, args.width, args.seed)
        inputs, truth = clip[0::2], clip[1::2]
        for method in methods:
            try:
                score = score_method(scene, method, inputs, truth, args.weights)
            except InterpolationError as error:
                print(f"Skipping {method} on {scene}: {error}", file=sys.stderr)
                continue
            scores.append(score)
            print(
                f"{scene:>7} {method:>13}: {score.psnr:6.2f} dB  SSIM {score.ssim:.4f}  "
                f"{score.seconds:6.2f} s  (CPU {score.cpu_seconds:6.2f} s)",
                file=sys.stderr,
            )
        del clip, inputs, truth

    print(
        f"\n{args.frames} input frames at {args.height}x{args.width} -> "
        f"{2 * args.frames} frames; in-between frames scored against ground truth. "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after.\n"
    )
    print("| scene | method | PSNR (dB) | SSIM | seconds per clip | CPU seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for score in scores:
        print(
            f"| {score.scene} | {score.method} | {score.psnr:.2f} | {score.ssim:.4f} "
            f"| {score.seconds:.2f} | {score.cpu_seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
