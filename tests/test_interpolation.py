"""Frame interpolation: the driver's contract, the flow method's accuracy, the registry."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import allegro.interpolation
import allegro.video
from allegro.cli import main as cli_main
from allegro.engine import interpolate_video
from allegro.errors import Cancelled, InterpolationError
from allegro.events import CancelToken, ProgressEvent
from allegro.interpolation import (
    METHODS,
    Availability,
    create_interpolator,
    method_availability,
)
from allegro.interpolation import flow as flow_module
from allegro.interpolation.blend import BlendInterpolator, blend_pairs
from allegro.interpolation.driver import interpolate_frames, interpolate_stream
from allegro.interpolation.flow import FlowInterpolator
from allegro.video import (
    PipelinedVideoWriter,
    read_frames,
    read_settings,
    stream_frames,
    write_video,
)

HEIGHT, WIDTH = 96, 128
SUPERSAMPLE = 4


class RecordingInterpolator:
    """Returns the inverted earlier frame, so each in-between frame says which pair made it."""

    name = "fake"

    def __init__(self, batch_size: int = 2) -> None:
        self.batch_size = batch_size
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        self.calls.append((before.copy(), after.copy()))
        return 255 - before


def texture(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Smooth random RGB texture with detail at several scales."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for sigma in (1.0, 3.0, 8.0):
        noise = rng.normal(size=(height, width, 3)).astype(np.float32)
        image += cv2.GaussianBlur(noise, (0, 0), sigma) * sigma
    image = (image - image.min()) / (image.max() - image.min()) * 255.0
    return image.astype(np.uint8)


def panning_clip(count: int, step: int = 2) -> np.ndarray:
    """A texture panning ``step`` whole pixels per frame: motion, never a scene cut."""
    base = texture(0, HEIGHT, WIDTH + step * count)
    return np.stack([base[:, step * i : step * i + WIDTH] for i in range(count)])


def shifted_render(big: np.ndarray, shift: float) -> np.ndarray:
    """``big`` (SUPERSAMPLE times the size) moved right by ``shift`` output pixels, then area
    averaged: an exact sub-pixel shift with no interpolation kernel to favour."""
    offset = round(shift * SUPERSAMPLE)
    assert offset == shift * SUPERSAMPLE, "shift must be a multiple of 1 / SUPERSAMPLE"
    moved = big[:, SUPERSAMPLE * 4 - offset : SUPERSAMPLE * (4 + WIDTH) - offset]
    return cv2.resize(moved, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


# --- driver -----------------------------------------------------------------------------


def test_keeps_every_frame_exactly_and_inserts_one_between_each_pair() -> None:
    frames = panning_clip(5)
    fake = RecordingInterpolator(batch_size=2)

    output = interpolate_frames(frames, fake).frames

    assert output.shape == (10, HEIGHT, WIDTH, 3)
    assert output.dtype == np.uint8
    for i in range(5):
        assert np.array_equal(output[2 * i], frames[i])
    for i in range(4):
        assert np.array_equal(output[2 * i + 1], 255 - frames[i])
    # The last frame is held for one more 30 fps frame so the duration stays N / 15 s.
    assert np.array_equal(output[-1], frames[-1])
    seen = [(before, after) for call in fake.calls for before, after in zip(*call, strict=True)]
    assert len(seen) == 4
    for i, (before, after) in enumerate(seen):
        assert np.array_equal(before, frames[i])
        assert np.array_equal(after, frames[i + 1])


def test_batches_pairs_and_reports_progress_after_each_batch() -> None:
    fake = RecordingInterpolator(batch_size=2)
    progress: list[tuple[int, int]] = []

    interpolate_frames(
        panning_clip(6), fake, on_progress=lambda done, total: progress.append((done, total))
    )

    assert [len(before) for before, _ in fake.calls] == [2, 2, 1]
    assert progress == [(2, 5), (4, 5), (5, 5)]


def test_cancel_between_batches_raises_cancelled() -> None:
    fake = RecordingInterpolator(batch_size=2)
    token = CancelToken()

    def cancel_after_first_batch(done: int, total: int) -> None:
        token.cancel()

    with pytest.raises(Cancelled):
        interpolate_frames(
            panning_clip(8), fake, on_progress=cancel_after_first_batch, cancel=token
        )
    assert len(fake.calls) == 1


def test_already_cancelled_token_stops_before_any_work() -> None:
    fake = RecordingInterpolator()
    token = CancelToken()
    token.cancel()

    with pytest.raises(Cancelled):
        interpolate_frames(panning_clip(3), fake, cancel=token)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((1, 8, 8, 3), np.uint8), "at least 2 frames"),
        (np.zeros((0, 8, 8, 3), np.uint8), "at least 2 frames"),
        (np.zeros((3, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((3, 8, 8), np.uint8), "shaped"),
        (np.zeros((3, 8, 8, 4), np.uint8), "shaped"),
        (np.zeros((3, 0, 8, 3), np.uint8), "empty"),
        ([np.zeros((8, 8, 3), np.uint8)] * 3, "array"),
    ],
)
def test_rejects_bad_input_with_a_clear_error(frames: np.ndarray, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate_frames(frames, RecordingInterpolator())


def test_a_method_returning_wrong_frames_is_reported() -> None:
    class HalfSize(RecordingInterpolator):
        def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
            return before[:, ::2]

    with pytest.raises(InterpolationError, match="wrong shape"):
        interpolate_frames(panning_clip(3), HalfSize())


def test_scene_cut_repeats_the_earlier_frame_instead_of_interpolating() -> None:
    bright = np.clip(texture(1).astype(np.int16) // 2 + 128, 0, 255).astype(np.uint8)
    dark = texture(2) // 3
    frames = np.stack([bright, bright, dark])
    fake = RecordingInterpolator(batch_size=4)

    result = interpolate_frames(frames, fake)

    assert result.scene_cuts == 1
    assert result.fallback_pairs == 1
    assert result.pairs == 2
    assert np.array_equal(result.frames[3], bright)  # the cut pair: earlier frame repeated
    assert np.array_equal(result.frames[1], 255 - bright)  # the other pair: interpolated
    assert len(fake.calls) == 1 and len(fake.calls[0][0]) == 1


def test_streaming_emits_the_same_frames_in_order_from_a_generator() -> None:
    frames = panning_clip(6)
    emitted: list[np.ndarray] = []
    progress: list[tuple[int, int]] = []

    counts = interpolate_stream(
        (frame for frame in frames),  # no len(): progress counts against pairs done + 1
        RecordingInterpolator(batch_size=2),
        emitted.append,
        on_progress=lambda done, total: progress.append((done, total)),
    )

    expected = interpolate_frames(frames, RecordingInterpolator(batch_size=2)).frames
    assert counts.pairs == 5 and counts.fallback_pairs == 0
    assert len(emitted) == len(expected) == 12
    assert all(np.array_equal(a, b) for a, b in zip(emitted, expected, strict=True))
    assert progress == [(2, 3), (4, 5), (5, 6)]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([texture(0)], "this one has 1"),
        ([], "this one has 0"),
        ([texture(0), texture(1, HEIGHT, WIDTH + 2)], "change size"),
        ([texture(0), texture(1)[..., 0]], "shaped"),
    ],
)
def test_streaming_rejects_bad_frames_with_a_clear_error(
    frames: list[np.ndarray], message: str
) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate_stream(iter(frames), RecordingInterpolator(), lambda frame: None)


def i420(frames: np.ndarray) -> np.ndarray:
    """RGB frames, (N, H, W, 3) or (H, W, 3), as I420: (N, 3H/2, W), a decoder's layout."""
    if frames.ndim == 3:
        return cv2.cvtColor(frames, cv2.COLOR_RGB2YUV_I420)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420) for frame in frames])


class RecordingI420Interpolator(RecordingInterpolator):
    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        raise AssertionError("I420 frames must go to midframes_yuv420p")

    def midframes_yuv420p(
        self, before: np.ndarray, after: np.ndarray, full_range: bool = False
    ) -> np.ndarray:
        return super().midframes(before, after)


def test_i420_frames_pass_through_and_scene_cuts_are_found_on_luma() -> None:
    bright = np.clip(texture(1).astype(np.int16) // 2 + 128, 0, 255).astype(np.uint8)
    frames = list(i420(np.stack([*panning_clip(3), bright])))
    emitted: list[np.ndarray] = []

    counts = interpolate_stream(
        iter(frames), RecordingI420Interpolator(4), emitted.append, pixel_format="yuv420p"
    )

    assert counts.pairs == 3 and counts.scene_cuts == 1  # the pan is none, the jump is one
    assert all(emitted[2 * i] is frame for i, frame in enumerate(frames))  # not even copied
    assert np.array_equal(emitted[1], 255 - frames[0])
    assert emitted[5] is frames[2]  # across the cut: the earlier frame repeated


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((95, 64), np.uint8), "I420"),  # 95 rows: not 3H/2 of an even H
        (np.zeros((48, 63), np.uint8), "I420"),  # odd width
        (np.zeros((48, 64, 3), np.uint8), "I420"),  # RGB
        (np.zeros((48, 64), np.int16), "uint8"),
    ],
)
def test_streaming_rejects_bad_i420_frames(frame: np.ndarray, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate_stream(
            iter([frame, frame]),
            RecordingI420Interpolator(),
            lambda f: None,
            pixel_format="yuv420p",
        )


def test_a_method_without_i420_support_is_never_handed_i420() -> None:
    with pytest.raises(ValueError, match="does not take yuv420p"):
        interpolate_stream(
            iter(i420(panning_clip(2))),
            RecordingInterpolator(),
            lambda f: None,
            pixel_format="yuv420p",
        )


def test_a_fast_pan_is_not_a_scene_cut() -> None:
    result = interpolate_frames(panning_clip(4, step=12), RecordingInterpolator())
    assert result.scene_cuts == 0


def test_blend_is_the_rounded_mean() -> None:
    before = np.array([[[0, 1, 254]]], np.uint8)
    after = np.array([[[1, 2, 255]]], np.uint8)
    assert blend_pairs(before, after).tolist() == [[[1, 2, 255]]]
    middles = BlendInterpolator().midframes(before[None], after[None])
    assert middles.tolist() == [[[[1, 2, 255]]]]


# --- flow -------------------------------------------------------------------------------


def test_flow_recovers_a_subpixel_shift_far_better_than_blending() -> None:
    big = texture(3, HEIGHT * SUPERSAMPLE, (WIDTH + 8) * SUPERSAMPLE)
    frame0, truth, frame1 = (shifted_render(big, shift) for shift in (0.0, 1.25, 2.5))
    flow = FlowInterpolator(workers=1)

    middle = flow.midframes(frame0[None], frame1[None])[0]
    blended = blend_pairs(frame0, frame1)

    def error(image: np.ndarray) -> float:
        # Inside a margin: at the left edge new content enters that neither frame shows.
        inner = (slice(4, -4), slice(4, -4))
        return float(np.mean(np.abs(image[inner].astype(np.float32) - truth[inner])))

    assert flow.blended_pairs == 0
    assert error(middle) < 0.5 * error(blended)


def test_flow_on_i420_moves_luma_as_the_rgb_path_does_and_colour_with_it() -> None:
    big = texture(3, HEIGHT * SUPERSAMPLE, (WIDTH + 8) * SUPERSAMPLE)
    frame0, truth, frame1 = (i420(shifted_render(big, s)) for s in (0.0, 1.25, 2.5))
    flow = FlowInterpolator(workers=1)

    middle = flow.midframes_yuv420p(frame0[None], frame1[None])[0]
    # The RGB path on the same video frames, decoded to RGB (chroma upsampled) and back.
    decoded = [cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420) for frame in (frame0, frame1)]
    via_rgb = i420(flow.midframes(decoded[0][None], decoded[1][None])[0])
    blended = blend_pairs(frame0, frame1)

    luma = (slice(4, HEIGHT - 4), slice(4, -4))  # inside the edge where new content enters
    chroma = (slice(HEIGHT, None), slice(None))  # U and V, half size, after the luma rows

    def error(image: np.ndarray, part: tuple[slice, slice]) -> float:
        return float(np.mean(np.abs(image[part].astype(np.float32) - truth[part])))

    assert flow.blended_pairs == 0 and middle.shape == truth.shape
    assert error(middle, luma) < 0.25 * error(blended, luma)
    # Same motion as the RGB path: their luma agrees to within the colour maths' rounding.
    assert np.mean(np.abs(middle[luma].astype(np.float32) - via_rgb[luma])) < 1.0
    # Half-size U and V moved by the half-size motion: no worse than through RGB.
    assert error(middle, chroma) < min(0.8 * error(blended, chroma), error(via_rgb, chroma))


def test_flow_on_i420_falls_back_to_the_blend_of_the_planes() -> None:
    rng = np.random.default_rng(5)
    frames = i420(rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8))
    flow = FlowInterpolator(workers=1)
    middle = flow.midframes_yuv420p(frames[:1], frames[1:])[0]
    assert flow.blended_pairs == 1
    assert np.array_equal(middle, blend_pairs(frames[0], frames[1]))


def fast_object_pair(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 28 px textured square crossing a textured background, ``step`` px per 30 fps frame:
    (frame 0, true middle, frame 1, the area it covers in any of them)."""
    background, sprite = texture(10), texture(11, 28, 28)
    frames, area = [], np.zeros((HEIGHT, WIDTH), bool)
    for i in range(3):
        frame = background.copy()
        x = 10 + step * i
        frame[40:68, x : x + 28] = sprite
        area[40:68, x : x + 28] = True
        frames.append(frame)
    return frames[0], frames[1], frames[2], area


def test_flow_follows_an_object_faster_than_its_own_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 32 px per pair for a 28 px object: DIS alone loses it (the pair falls back to a blend).
    frame0, truth, frame1, area = fast_object_pair(16)

    def error(image: np.ndarray) -> float:
        return float(np.mean(np.abs(image[area].astype(np.float32) - truth[area])))

    middle = FlowInterpolator(workers=1).midframes(frame0[None], frame1[None])[0]
    assert error(middle) < 0.25 * error(blend_pairs(frame0, frame1))

    # The same pair without feature matching: proof that the matching is what follows it.
    monkeypatch.setattr(flow_module, "_fast_motions", lambda *args: [])
    without = FlowInterpolator(workers=1).midframes(frame0[None], frame1[None])[0]
    assert error(without) > 4 * error(middle)


def test_flow_returns_a_static_clip_unchanged() -> None:
    frames = np.stack([texture(4)] * 3)
    output = interpolate_frames(frames, FlowInterpolator()).frames
    assert all(np.array_equal(frame, frames[0]) for frame in output)


def test_flow_falls_back_to_a_blend_when_motion_estimation_fails() -> None:
    # Unrelated noise frames: nothing to track, and no scene cut either (same histogram).
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)

    result = interpolate_frames(frames, FlowInterpolator(workers=1))

    assert result.scene_cuts == 0
    assert result.blended == 1
    assert np.array_equal(result.frames[1], blend_pairs(frames[0], frames[1]))


def test_flow_handles_frames_too_small_for_optical_flow() -> None:
    frames = np.stack([texture(6, 8, 8), texture(7, 8, 8)])
    flow = FlowInterpolator(workers=1)
    middle = flow.midframes(frames[:1], frames[1:])[0]
    assert np.array_equal(middle, blend_pairs(frames[0], frames[1]))
    assert flow.blended_pairs == 1


def test_flow_batch_on_threads_matches_one_pair_at_a_time() -> None:
    frames = panning_clip(5, step=3)
    threaded = FlowInterpolator(workers=2).midframes(frames[:-1], frames[1:])
    single = FlowInterpolator(workers=1).midframes(frames[:-1], frames[1:])
    assert np.array_equal(threaded, single)


# --- registry ---------------------------------------------------------------------------


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, allegro.interpolation, allegro.interpolation.driver, "
        "allegro.interpolation.blend; allegro.interpolation.method_availability('ema-vfi'); "
        "print(sorted({'torch', 'cv2'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(InterpolationError) as error:
        create_interpolator("rife")
    for name in METHODS:
        assert name in str(error.value)
    with pytest.raises(InterpolationError):
        method_availability("rife")


@pytest.mark.parametrize(
    ("name", "kind"), [("flow", FlowInterpolator), ("blend", BlendInterpolator)]
)
def test_builtin_methods_are_always_available(name: str, kind: type) -> None:
    assert method_availability(name).available
    interpolator = create_interpolator(name)
    assert isinstance(interpolator, kind)
    assert interpolator.name == name


def fake_ema_vfi(monkeypatch: pytest.MonkeyPatch, availability: Availability) -> list[tuple]:
    """Stand in for the EMA-VFI module (it needs PyTorch and weights); returns the
    constructor calls it receives."""
    from allegro.interpolation import ema_vfi_weights

    created: list[tuple] = []
    monkeypatch.setattr(ema_vfi_weights, "availability", lambda explicit=None: availability)
    monkeypatch.setattr(
        ema_vfi_weights, "find_weights", lambda explicit=None: explicit or "/found/ema-vfi.pkl"
    )
    module = types.ModuleType("allegro.interpolation.ema_vfi")
    module.EmaVfiInterpolator = lambda weights, device=None: created.append((weights, device))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(allegro.interpolation, "ema_vfi", module, raising=False)
    return created


def test_unavailable_ema_vfi_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ema_vfi(monkeypatch, Availability(False, "No EMA-VFI weights found."))

    assert not method_availability("ema-vfi").available
    with pytest.raises(InterpolationError, match="No EMA-VFI weights found"):
        create_interpolator("ema-vfi")


def test_available_ema_vfi_gets_its_weights_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    created = fake_ema_vfi(monkeypatch, Availability(True))

    create_interpolator("ema-vfi", weights="/w.pkl", device="cpu")
    create_interpolator("ema-vfi")

    assert created == [("/w.pkl", "cpu"), ("/found/ema-vfi.pkl", None)]


# --- the interpolate command: decode, interpolate and encode pipelined ------------------


def write_source(path: Path, count: int = 9) -> np.ndarray:
    """A small 15 fps MP4 with settings, as the app writes it; returns its decoded frames."""
    write_video(path, panning_clip(count, step=3)[:, :64, :96], 15, {"prompt": "pan", "seed": 3})
    return read_frames(path)[0]


def test_interpolate_command_writes_30_fps_with_the_settings_carried_over(
    tmp_path: Path,
) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "out" / "smooth.mp4"
    decoded = write_source(source)

    assert cli_main(["interpolate", str(source), str(output), "--method", "flow"]) == 0

    frames, fps = read_frames(output)
    settings = read_settings(output)
    assert fps == 30 and frames.shape == (18, 64, 96, 3)
    assert settings["prompt"] == "pan" and settings["seed"] == 3
    assert settings["interpolation"]["frames"] == 18
    assert settings["interpolation"]["method"] == "flow"
    # Originals come through untouched but for the H.264 round trip.
    mse = np.mean((frames[0::2].astype(np.float32) - decoded) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "smooth.jpg",
        "smooth.json",
        "smooth.mp4",
    ]


def test_interpolate_command_rejects_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("hello")
    assert cli_main(["interpolate", str(not_a_video), str(tmp_path / "x.mp4")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_a_cancelled_interpolate_command_leaves_no_file(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    write_source(source, count=12)
    token = CancelToken()

    def cancel_while_interpolating(event: ProgressEvent) -> None:
        if event.step:
            token.cancel()

    with pytest.raises(Cancelled):
        interpolate_video(
            source, tmp_path / "out.mp4", "blend", None, cancel_while_interpolating, token
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jpg", "in.json", "in.mp4"]


def test_a_failing_encoder_reaches_the_caller_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def encode_then_fail(path: Path, frames: Iterator[np.ndarray], *args: object) -> None:
        next(iter(frames))
        path.write_bytes(b"\x00" * 1000)  # a half-written file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(allegro.video, "_encode_mp4", encode_then_fail)
    writer = PipelinedVideoWriter(tmp_path / "out.mp4", 30)
    with pytest.raises(OSError, match="No space"), writer:
        for frame in panning_clip(20):  # more than the queue holds: put must not hang
            writer.put(frame[:, :64])
        writer.finish({"prompt": "x"})
    assert list(tmp_path.iterdir()) == []


def test_stream_frames_decodes_what_read_frames_does(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    decoded = write_source(source)
    with stream_frames(source) as stream:
        assert stream.fps == 15 and stream.frame_count == len(decoded)
        assert np.array_equal(np.stack(list(stream)), decoded)
    with stream_frames(source) as stream:  # stopped early: the decoder thread ends
        next(iter(stream))


def decode_i420(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def test_stream_frames_hands_over_the_decoders_own_i420_planes(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    decoded = write_source(source)
    with stream_frames(source, pixel_format="yuv420p") as stream:
        assert (stream.width, stream.height) == (96, 64)
        frames = list(stream)
    assert all(np.array_equal(a, b) for a, b in zip(frames, decode_i420(source), strict=True))
    assert np.mean(np.abs(allegro.video.i420_to_rgb(frames[0]).astype(int) - decoded[0])) < 1


def test_interpolate_command_encodes_the_original_frames_bit_for_bit_in_i420(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.mp4"
    write_source(source)
    encoded: list[np.ndarray] = []
    encode = allegro.video._encode_mp4

    def recording_encode(path: Path, frames: Iterator[np.ndarray], *args: object) -> None:
        def record() -> Iterator[np.ndarray]:
            for frame in frames:
                encoded.append(frame.copy())
                yield frame

        encode(path, record(), *args)

    monkeypatch.setattr(allegro.video, "_encode_mp4", recording_encode)
    output = interpolate_video(source, tmp_path / "out.mp4", "flow")

    originals = decode_i420(source)
    assert len(encoded) == 2 * len(originals)
    assert all(np.array_equal(a, b) for a, b in zip(encoded[::2], originals, strict=True))
    assert read_frames(output)[0].shape == (18, 64, 96, 3)
    poster = cv2.imread(str(output.with_suffix(".jpg")))
    assert poster.shape == (64, 96, 3) and poster.std() > 10  # a real RGB picture


def test_interpolate_command_rejects_odd_sizes_clearly(tmp_path: Path) -> None:
    import av

    source = tmp_path / "odd.mkv"
    with av.open(str(source), mode="w") as container:
        stream = container.add_stream("ffv1", rate=15)
        stream.width, stream.height, stream.pix_fmt = 95, 63, "yuv444p"
        for frame in panning_clip(3)[:, :63, :95]:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(image.reformat(format="yuv444p")))
        container.mux(stream.encode())
    with pytest.raises(InterpolationError, match=r"95x63.*even width and height"):
        interpolate_video(source, tmp_path / "out.mp4", "flow")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mkv"]
