"""The same frames make the same MP4, and the same request and seed the same video: x264's
threads must not make a stream depend on timing (see X264_THREADS in allegro/video.py)."""

from __future__ import annotations

import hashlib

import numpy as np

from allegro.engine import Engine
from allegro.loading import PipelineCache, PipelineSpec
from allegro.request import GenerationRequest
from allegro.tiny import make_tiny
from allegro.video import PipelinedVideoWriter, read_frames, write_video

WRITES = 4


def block_noise(frames: int = 24, side: int = 160) -> np.ndarray:
    """Content like the tiny model's: coarse random blocks with fine noise on top. With
    frame threads and x264's macroblock tree, 8 writes of it gave 8 different streams."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (frames, side // 8, side // 8, 3))
    fine = rng.integers(-40, 40, (frames, side, side, 3))
    return np.clip(coarse.repeat(8, 1).repeat(8, 2) + fine, 0, 255).astype(np.uint8)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_frames_written_several_times_make_one_stream(tmp_path):
    clip = block_noise()
    paths = [
        write_video(tmp_path / f"{index}.mp4", clip, 15, {"prompt": "noise"})
        for index in range(WRITES)
    ]
    assert len({digest(path) for path in paths}) == 1
    first = read_frames(paths[0])[0]
    assert first.shape == clip.shape
    # The pipelined writer (the engine's) encodes the same way: the same pictures.
    pipelined = PipelinedVideoWriter(tmp_path / "pipelined.mp4", 15)
    for frame in clip:
        pipelined.put(frame)
    np.testing.assert_array_equal(read_frames(pipelined.finish({"prompt": "noise"}))[0], first)


def test_the_same_request_and_seed_make_the_same_video(tmp_path):
    # Ten blocks and twelve steps: noisy enough that x264's old threading made 3 or 4
    # different videos of 4 (one block and two steps gave smooth frames that hid it).
    model = make_tiny(tmp_path / "tiny-10-blocks", layers=10)
    engine = Engine(PipelineSpec(model=str(model)), tmp_path / "out", cache=PipelineCache())
    request = GenerationRequest(prompt="a red kite", seed=5, steps=12)
    videos = [engine.generate(request).video_path for _ in range(WRITES)]
    assert len(set(videos)) == WRITES
    first = read_frames(videos[0])[0]
    for video in videos[1:]:
        np.testing.assert_array_equal(read_frames(video)[0], first)
