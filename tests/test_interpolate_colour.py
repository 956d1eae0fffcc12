"""The interpolate command keeps any input's colours (issue 19, part 3).

Each source is made with the bundled ffmpeg, losslessly in its own planes (QP 0), from the
same colourful moving RGB frames: 4:2:0, full-range 4:2:0 as phones record (``yuvj420p``),
4:2:2, 4:4:4, RGB as screen recorders export (``libx264rgb``), 10-bit, and BT.709-tagged.
The output's original frames must be within 0.5 dB luma PSNR of a plain re-encode at the
app's settings (``ffmpeg -i IN -c:v libx264 -crf 17 -preset faster -pix_fmt yuv420p``), both
decoded to RGB as any player would (with their own tags) and scored against the source
decoded the same way; and the output must say what its numbers mean.
"""

from __future__ import annotations

import subprocess
import types
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

import allegro.video
from allegro.engine import interpolate_video
from allegro.interpolation.driver import interpolate_stream
from allegro.interpolation.flow import FlowInterpolator
from allegro.video import PipelinedVideoWriter
from allegro.video_colour import (
    MATRIX_BT601,
    MATRIX_BT709,
    RANGE_FULL,
    RANGE_LIMITED,
    UNSPECIFIED,
    VideoColour,
    i420_colour,
)
from tests.test_interpolation import HEIGHT, SUPERSAMPLE, WIDTH, shifted_render, texture

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# 128 px: at 64 px the H.264 noise of a few frames alone swings the comparison by 0.5 dB.
SIZE, FRAMES = 128, 8
# The re-encode the issue compares against, at the app's own settings (allegro/video.py).
PLAIN_REENCODE = ["-c:v", "libx264", "-crf", "17", "-preset", "faster", "-pix_fmt", "yuv420p"]
TAGGED_BT709 = [
    "-vf",
    "scale=out_color_matrix=bt709:out_range=tv,"
    "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709",
]
# name: (ffmpeg encoder arguments, the output's expected (matrix, range, primaries, transfer))
SOURCES = {
    "yuv420p": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], (UNSPECIFIED, RANGE_LIMITED)),
    "yuvj420p": (["-c:v", "libx264", "-pix_fmt", "yuvj420p"], (UNSPECIFIED, RANGE_FULL)),
    "yuv422p": (["-c:v", "libx264", "-pix_fmt", "yuv422p"], (UNSPECIFIED, RANGE_LIMITED)),
    "yuv444p": (["-c:v", "libx264", "-pix_fmt", "yuv444p"], (UNSPECIFIED, RANGE_LIMITED)),
    # RGB has no YUV matrix of its own: SD video gets BT.601's, and says so.
    "rgb": (["-c:v", "libx264rgb", "-pix_fmt", "rgb24"], (MATRIX_BT601, RANGE_LIMITED)),
    "yuv420p10le": (["-c:v", "libx264", "-pix_fmt", "yuv420p10le"], (UNSPECIFIED, RANGE_LIMITED)),
    "bt709": (
        ["-c:v", "libx264", *TAGGED_BT709, "-pix_fmt", "yuv420p"],
        (MATRIX_BT709, RANGE_LIMITED, MATRIX_BT709, MATRIX_BT709),  # BT.709 is 1 in all three
    ),
}


def moving_colours(seed: int = 0) -> np.ndarray:
    """(FRAMES, SIZE, SIZE, 3) RGB: a saturated smooth texture panning 2 px a frame, a red
    disc and a green square moving across it."""
    rng = np.random.default_rng(seed)
    cells = rng.random((SIZE // 16 + 4, (SIZE + 2 * FRAMES) // 16 + 4, 3)).astype(np.float32)
    texture = cv2.resize(cells, None, fx=16, fy=16, interpolation=cv2.INTER_CUBIC)
    texture = np.clip(texture * 200 + 28, 0, 255).astype(np.uint8)
    frames = []
    for k in range(FRAMES):
        frame = np.ascontiguousarray(texture[4 : 4 + SIZE, 2 * k : 2 * k + SIZE])
        cv2.circle(frame, (12 + 4 * k, SIZE // 2), 8, (230, 40, 60), -1, cv2.LINE_AA)
        cv2.rectangle(frame, (SIZE - 20 - 2 * k, 6), (SIZE - 8 - 2 * k, 18), (40, 200, 90), -1)
        frames.append(frame)
    return np.stack(frames)


def ffmpeg(*arguments: str, frames: np.ndarray | None = None) -> None:
    command = [FFMPEG, "-v", "error", "-nostdin", "-y"]
    if frames is not None:
        size = f"{frames.shape[2]}x{frames.shape[1]}"
        command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-r", "15", "-i", "-"]
        subprocess.run([*command, *arguments], input=frames.tobytes(), check=True)
    else:
        subprocess.run([*command, *arguments], check=True)


def make_source(path: Path, name: str) -> Path:
    ffmpeg(*SOURCES[name][0], "-qp", "0", str(path), frames=moving_colours())
    return path


def decode(path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Every frame as RGB, read with its own tags as players read it (PyAV 18 hands the
    frame's matrix and range to swscale: av/video/reformatter.py, ``_reformat``), and the
    first frame's (matrix, range, primaries, transfer)."""
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    first = frames[0]
    tags = (first.colorspace, first.color_range, first.color_primaries, first.color_trc)
    return np.stack([frame.to_ndarray(format="rgb24") for frame in frames]), tags


def luma_psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-frame PSNR of BT.601 luma computed from RGB (the same maths for every file)."""
    weights = np.array([0.299, 0.587, 0.114])
    values = []
    for frame, expected in zip(frames, reference, strict=True):
        error = (frame.astype(np.float64) - expected) @ weights
        values.append(10 * np.log10(255**2 / max(float(np.mean(error**2)), 1e-10)))
    return float(np.mean(values))


@pytest.mark.parametrize("name", list(SOURCES))
def test_original_frames_keep_the_quality_of_a_plain_reencode_and_say_what_they_are(
    tmp_path: Path, name: str
) -> None:
    source = make_source(tmp_path / f"{name}.mp4", name)
    plain = tmp_path / "plain.mp4"
    ffmpeg("-i", str(source), *PLAIN_REENCODE, str(plain))

    output = interpolate_video(source, tmp_path / "out.mp4", "flow")

    truth, _ = decode(source)
    reencoded, _ = decode(plain)
    frames, tags = decode(output)
    assert len(frames) == 2 * len(truth)
    ours, theirs = luma_psnr(frames[::2], truth), luma_psnr(reencoded, truth)
    assert ours > theirs - 0.5, f"{name}: originals at {ours:.2f} dB, a re-encode {theirs:.2f}"
    # H.264 with no signal type in its VUI is video (limited) range: Annex E infers
    # video_full_range_flag = 0, and x264 leaves the VUI out when nothing else is stated.
    matrix, colour_range, *rest = tags
    tags = (matrix, colour_range or RANGE_LIMITED, *rest)
    expected = SOURCES[name][1]
    assert tags[: len(expected)] == expected
    if len(expected) == 2:  # the source states no primaries or transfer: neither do we
        assert tags[2:] == (UNSPECIFIED, UNSPECIFIED)
    # The poster is the picture the video shows, read with the video's own tags: about
    # 34 dB for JPEG's and H.264's losses on these saturated colours, under 29 dB when a
    # full-range or BT.709 frame is read as untagged video.
    poster = cv2.cvtColor(cv2.imread(str(output.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
    shown = frames[len(truth)]  # the middle of the 2N frames
    assert 10 * np.log10(255**2 / np.mean((poster.astype(np.float32) - shown) ** 2)) > 32


def test_full_range_frames_reach_the_encoder_unconverted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone's full-range 4:2:0 takes the fast path: no conversion, just tagged right."""
    import av

    source = make_source(tmp_path / "phone.mp4", "yuvj420p")
    encoded: list[np.ndarray] = []
    encode = allegro.video._encode_mp4

    def recording_encode(path: Path, frames: Iterator[np.ndarray], *args: object) -> None:
        def record() -> Iterator[np.ndarray]:
            for frame in frames:
                encoded.append(frame.copy())
                yield frame

        encode(path, record(), *args)

    monkeypatch.setattr(allegro.video, "_encode_mp4", recording_encode)
    interpolate_video(source, tmp_path / "out.mp4", "flow")

    with av.open(str(source)) as container:
        planes = [frame.to_ndarray() for frame in container.decode(video=0)]
    assert all(np.array_equal(a, b) for a, b in zip(encoded[::2], planes, strict=True))


def test_rgb_hd_video_gets_bt709_and_sd_bt601() -> None:
    def context(width: int, height: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            pix_fmt="gbrp",
            colorspace=0,  # AVCOL_SPC_RGB
            color_range=RANGE_FULL,
            color_primaries=UNSPECIFIED,
            color_trc=UNSPECIFIED,
            width=width,
            height=height,
        )

    assert i420_colour(context(1280, 720)).matrix == MATRIX_BT709
    assert i420_colour(context(1920, 1080)).matrix == MATRIX_BT709
    assert i420_colour(context(640, 480)).matrix == MATRIX_BT601
    assert not i420_colour(context(1280, 720)).full_range  # video range, as players expect


def full_range_i420(grey: np.ndarray) -> np.ndarray:
    """A grey picture as full-range I420 (neutral chroma)."""
    chroma = np.full((grey.shape[0] // 2, grey.shape[1]), 128, np.uint8)
    return np.concatenate([grey, chroma])


def test_flow_follows_full_range_luma_in_the_dark() -> None:
    """A night scene from a phone, luma 0..24: read as video range (16..235) most of it is
    black and the flow gives up (a blend); read as what it is, the motion is found."""
    big = texture(3, HEIGHT * SUPERSAMPLE, (WIDTH + 8) * SUPERSAMPLE)[..., 1]
    dark = (big.astype(np.float32) * (24 / 255)).astype(np.uint8)
    frame0, truth, frame1 = (full_range_i420(shifted_render(dark, s)) for s in (0.0, 1.25, 2.5))
    inner = (slice(4, HEIGHT - 4), slice(4, -4))  # inside the edge where new content enters
    errors = {}
    for full_range in (True, False):
        flow = FlowInterpolator(workers=1)
        middle = flow.midframes_yuv420p(frame0[None], frame1[None], full_range=full_range)[0]
        errors[full_range] = float(np.mean(np.abs(middle[inner].astype(float) - truth[inner])))
    assert errors[True] < 0.5 * errors[False]


class RangeRecorder:
    name, batch_size = "recorder", 2

    def __init__(self) -> None:
        self.ranges: list[bool] = []

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        raise AssertionError("I420 frames must go to midframes_yuv420p")

    def midframes_yuv420p(
        self, before: np.ndarray, after: np.ndarray, full_range: bool = False
    ) -> np.ndarray:
        self.ranges.append(full_range)
        return before


@pytest.mark.parametrize("full_range", [True, False])
def test_the_driver_tells_the_method_the_range(full_range: bool) -> None:
    frames = [full_range_i420(np.full((16, 16), 20 * i, np.uint8)) for i in range(4)]
    recorder = RangeRecorder()
    interpolate_stream(
        iter(frames), recorder, lambda f: None, pixel_format="yuv420p", full_range=full_range
    )
    assert recorder.ranges and set(recorder.ranges) == {full_range}


def test_rgb_frames_are_written_in_the_colours_they_are_tagged_with(tmp_path: Path) -> None:
    """Methods that work in RGB hand RGB to the writer, which converts it once to the
    source's own YUV (here a phone's full range with BT.709) and says so."""
    frames = moving_colours()
    writer = PipelinedVideoWriter(
        tmp_path / "out.mp4", 30, colour=VideoColour(MATRIX_BT709, full_range=True)
    )
    with writer:
        for frame in frames:
            writer.put(frame)
        output = writer.finish({"prompt": "x"})

    decoded, tags = decode(output)
    assert tags[:2] == (MATRIX_BT709, RANGE_FULL)
    assert luma_psnr(decoded, frames) > 40
