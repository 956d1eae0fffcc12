"""Saving benchmark: our MP4 writer against imageio's defaults, side by side.

Encodes the same 88 frames at 720x1280 (a synthetic but video-like clip: moving gradients,
texture and a moving disc, not incompressible noise) alternately with
``allegro.video.write_video`` (PyAV, libx264 CRF 17 preset "faster", plus the JSON sidecar and
poster) and ``imageio.v2.mimwrite`` with its defaults (imageio-ffmpeg, libx264 quality 5),
and prints seconds, sizes and the ratio. A third writer is ours as it was before it was made
deterministic (x264's threads left to the machine's cores, with its macroblock tree): the
cost of the same frames always making the same stream (see X264_THREADS in allegro/video.py).

    python bench/saving.py [--frames 88 --height 720 --width 1280 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allegro import video
from allegro.video import read_frames, write_video


def synthetic_clip(frames: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.normal(0, 12, (height, width)).astype(np.float32)
    clip = np.empty((frames, height, width, 3), np.uint8)
    for index in range(frames):
        shift = index * 6.0
        red = 127 + 100 * np.sin((x + shift) / 97.0)
        green = 127 + 100 * np.cos((y - shift) / 71.0)
        blue = 127 + 60 * np.sin((x + y + 2 * shift) / 53.0)
        disc = ((x - (200 + 9 * index)) ** 2 + (y - height / 2) ** 2) < (height / 6) ** 2
        image = np.stack([red, green, blue], axis=-1) + texture[..., None]
        image[disc] = (240, 220, 40)
        clip[index] = np.clip(image, 0, 255)
    return clip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def write_as_before(path: Path, clip: np.ndarray) -> None:
    """write_video with x264's threads and macroblock tree as they were (not reproducible)."""
    deterministic = video.X264_THREADS
    video.X264_THREADS = {}
    try:
        write_video(path, clip, 15, {"prompt": "benchmark"})
    finally:
        video.X264_THREADS = deterministic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=88)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import imageio.v2 as imageio

    clip = synthetic_clip(args.frames, args.height, args.width)
    ours_times, theirs_times, before_times = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        ours_path, theirs_path = Path(folder, "ours.mp4"), Path(folder, "imageio.mp4")
        before_path = Path(folder, "before.mp4")
        for _ in range(args.repeats):
            started = time.perf_counter()
            write_video(ours_path, clip, 15, {"prompt": "benchmark"})
            ours_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            imageio.mimwrite(theirs_path, clip, fps=15)
            theirs_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_as_before(before_path, clip)
            before_times.append(time.perf_counter() - started)
        ours_quality = psnr(read_frames(ours_path)[0], clip)
        theirs_quality = psnr(read_frames(theirs_path)[0], clip)
        before_quality = psnr(read_frames(before_path)[0], clip)
        ours_size, theirs_size = ours_path.stat().st_size, theirs_path.stat().st_size
        before_size = before_path.stat().st_size
    ours, theirs = statistics.median(ours_times), statistics.median(theirs_times)
    before = statistics.median(before_times)
    print(f"clip: {args.frames}x{args.height}x{args.width}, {args.repeats} alternated runs")
    print("| writer | median s | size MB | PSNR dB |")
    print("|---|---:|---:|---:|")
    rows = (
        ("ours (PyAV x264 CRF 17 faster + JSON + poster)", ours, ours_size, ours_quality),
        ("imageio defaults (ffmpeg x264 quality 5)", theirs, theirs_size, theirs_quality),
        ("ours before: x264 threads auto + mb-tree", before, before_size, before_quality),
    )
    for name, seconds, size, quality in rows:
        print(f"| {name} | {seconds:.2f} | {size / 1e6:.1f} | {quality:.1f} |")
    print(f"ratio ours/imageio: {ours / theirs:.2f}x time")
    print(f"ratio ours/ours before: {ours / before:.2f}x time, {ours_size / before_size:.2f}x size")


if __name__ == "__main__":
    main()
