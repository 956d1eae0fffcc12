"""Time-to-Move on Allegro-TI2V (tiny random checkpoint): the latent mask follows Allegro's
VAE grouping, dual-clock denoising holds the masked region to the motion signal exactly
until ``strong``, the steps before ``tweak`` are skipped, zero clocks are plain image to
video bit for bit; and the camera and drag builders move what they say."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

FRAMES, SIZE, STEPS = 24, 160, 5


@pytest.fixture(scope="module")
def tiny_ti2v():
    from allegro.tiny import make_tiny_pipeline

    pipe = make_tiny_pipeline(seed=0, ti2v=True)
    for model in (pipe.transformer, pipe.vae, pipe.text_encoder):
        model.eval()  # as from_pretrained leaves them: the VAE's dropout off
    return pipe


def _condition():
    from allegro.ti2v.pipeline import ConditionFrames

    torch.manual_seed(3)
    return ConditionFrames(torch.rand(1, 3, SIZE, SIZE) * 2 - 1, (0,))


def _moving_block_mask() -> torch.Tensor:
    """Frame f: one 8x8 block at block (row f // 20, column f % 20)."""
    mask = torch.zeros(FRAMES, SIZE, SIZE)
    for frame in range(FRAMES):
        row, column = divmod(frame, SIZE // 8)
        mask[frame, 8 * row : 8 * row + 8, 8 * column : 8 * column + 8] = 1
    return mask


def _guide(tweak: int, strong: int, mask: torch.Tensor | None = None):
    from allegro.ti2v.motion import MotionGuide

    torch.manual_seed(11)
    video = torch.rand(FRAMES, 3, SIZE, SIZE) * 2 - 1
    if mask is None:
        mask = torch.zeros(FRAMES, SIZE, SIZE)
        mask[:, 40:120, 40:120] = 1
    return MotionGuide(video, mask, tweak, strong)


def _run(pipe, motion=None, seed=5, **kwargs):
    return pipe(
        prompt="a red fox",
        negative_prompt="",
        num_inference_steps=STEPS,
        guidance_scale=8.0,
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        clean_caption=False,
        condition=_condition(),
        motion=motion,
        **kwargs,
    ).frames


def test_latent_frame_t_is_made_from_pixel_frames_4t_to_4t_plus_3(tiny_ti2v):
    """Derive the grouping from the VAE itself: its only temporal down-sampling is a
    (2, ., .) stride-2 convolution twice, beside an identity path that keeps frames ``::2``;
    with every temporal convolution silenced, latent frame t follows pixel frame 4t alone."""
    from allegro.tiling import apply_tiling, fit_tiling

    vae = copy.deepcopy(tiny_ti2v.vae).eval()
    downsamplers = [
        block.temp_convs_down.conv1[-1]
        for block in vae.encoder.down_blocks
        if block.add_temp_downsample
    ]
    assert [(conv.kernel_size[0], conv.stride[0]) for conv in downsamplers] == [(2, 2), (2, 2)]
    for module in vae.encoder.modules():
        if isinstance(module, torch.nn.Conv3d):  # the temporal layers (space is Conv2d)
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    vae.enable_tiling()
    apply_tiling(vae, fit_tiling(FRAMES, SIZE, SIZE, 8))
    torch.manual_seed(0)
    base = torch.rand(1, 3, FRAMES, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        reference = vae.encode(base).latent_dist.mode()
        for frame in range(12):  # three groups, one tile
            changed = base.clone()
            changed[:, :, frame] = -changed[:, :, frame]
            moved = (
                (vae.encode(changed).latent_dist.mode() - reference).abs().amax(dim=(0, 1, 3, 4))
            )
            expected = [frame // 4] if frame % 4 == 0 else []
            assert torch.nonzero(moved > 1e-6).flatten().tolist() == expected, frame


def test_latent_mask_lands_on_the_cells_and_frames_of_each_group():
    from allegro.ti2v.motion import motion_latent_mask

    latent = motion_latent_mask(_moving_block_mask())
    assert latent.shape == (1, 1, FRAMES // 4, SIZE // 8, SIZE // 8)
    for t in range(FRAMES // 4):
        row, column = divmod(4 * t, SIZE // 8)
        expected = torch.zeros(SIZE // 8, SIZE // 8)
        expected[row, column] = 1  # the block of the group's first frame, 4t
        assert torch.equal(latent[0, 0, t], expected), t
    with pytest.raises(ValueError, match="multiple of 4"):
        motion_latent_mask(torch.ones(22, SIZE, SIZE))


def test_dual_clock_holds_the_mask_until_strong_and_skips_steps_before_tweak(
    tiny_ti2v, monkeypatch
):
    from diffusers import EulerAncestralDiscreteScheduler

    from allegro.ti2v.motion import motion_latent_mask

    tweak, strong = 1, 3
    guide = _guide(tweak, strong)
    calls, stepped, seen = [], [], []
    forward = tiny_ti2v.transformer.forward
    step = tiny_ti2v.scheduler.step

    def record_forward(*args, **kwargs):
        calls.append(kwargs["timestep"][0].item())
        return forward(*args, **kwargs)

    def record_step(*args, **kwargs):
        out = step(*args, **kwargs)
        stepped.append(out[0].clone())  # the model's own latents, before any replacement
        return out

    def after_step(_pipe, index, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return {}

    monkeypatch.setattr(tiny_ti2v.transformer, "forward", record_forward)
    monkeypatch.setattr(tiny_ti2v.scheduler, "step", record_step)
    _run(tiny_ti2v, guide, callback_on_step_end=after_step)
    monkeypatch.undo()

    # An independent schedule: the timesteps and sigmas of a plain 5-step run.
    schedule = EulerAncestralDiscreteScheduler.from_config(tiny_ti2v.scheduler.config)
    schedule.set_timesteps(STEPS)
    assert calls == schedule.timesteps[tweak:].tolist()  # steps before tweak never run
    assert len(calls) == STEPS - tweak

    noise = torch.randn(1, 4, FRAMES // 4, SIZE // 8, SIZE // 8,
                        generator=torch.Generator().manual_seed(5))  # fmt: skip
    with torch.no_grad():
        motion = (
            tiny_ti2v._encode_video(guide.video.transpose(0, 1)[None], torch.float32).mode()
            * tiny_ti2v.vae.config.scaling_factor
        )
    inside = motion_latent_mask(guide.mask).bool().expand_as(motion)
    assert inside.any() and (~inside).any()
    for index, (own, after) in enumerate(zip(stepped, seen, strict=True)):
        done = tweak + index + 1
        if done <= strong:
            held = motion + noise * schedule.sigmas[done]
            torch.testing.assert_close(after[inside], held[inside], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(own[inside], held[inside])  # it really was replaced
        else:
            assert torch.equal(after[inside], own[inside])
        assert torch.equal(after[~inside], own[~inside])  # outside: the model's own


def test_denoising_starts_from_the_motion_signal_noised_to_tweak(tiny_ti2v, monkeypatch):
    from diffusers import EulerAncestralDiscreteScheduler

    guide = _guide(2, 2)
    first = []
    forward = tiny_ti2v.transformer.forward

    def record(*args, **kwargs):
        if not first:
            first.append(kwargs["hidden_states"][:1, :4].clone())
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_ti2v.transformer, "forward", record)
    _run(tiny_ti2v, guide)
    monkeypatch.undo()
    schedule = EulerAncestralDiscreteScheduler.from_config(tiny_ti2v.scheduler.config)
    schedule.set_timesteps(STEPS)
    noise = torch.randn(1, 4, FRAMES // 4, SIZE // 8, SIZE // 8,
                        generator=torch.Generator().manual_seed(5))  # fmt: skip
    with torch.no_grad():
        motion = (
            tiny_ti2v._encode_video(guide.video.transpose(0, 1)[None], torch.float32).mode()
            * tiny_ti2v.vae.config.scaling_factor
        )
    sigma = schedule.sigmas[2]
    expected = (motion + noise * sigma) / ((sigma**2 + 1) ** 0.5)  # scale_model_input
    torch.testing.assert_close(first[0], expected, rtol=1e-5, atol=1e-5)


def test_zero_clocks_are_plain_image_to_video_bit_for_bit(tiny_ti2v):
    plain = _run(tiny_ti2v, None)
    assert torch.equal(_run(tiny_ti2v, _guide(0, 0)), plain)
    assert not torch.equal(_run(tiny_ti2v, _guide(1, 2)), plain)
    # The pipeline is left as it was: the class's set_timesteps, no hooks.
    assert "set_timesteps" not in vars(tiny_ti2v.scheduler)
    assert not tiny_ti2v.transformer._forward_pre_hooks


def test_a_signal_of_the_wrong_size_is_refused(tiny_ti2v):
    from allegro.ti2v.motion import MotionGuide

    wrong = MotionGuide(torch.zeros(16, 3, SIZE, SIZE), torch.ones(16, SIZE, SIZE), 1, 2)
    with pytest.raises(ValueError, match="motion signal"):
        _run(tiny_ti2v, wrong)


def test_clocks_are_fractions_in_order_and_set_the_cost():
    from allegro.ti2v.motion import CLOCK_PRESETS, MotionClocks

    assert CLOCK_PRESETS["object"].indices(50) == (3, 7)  # the authors' Wan 2.2 settings
    assert CLOCK_PRESETS["camera"].indices(50) == (2, 5)
    assert CLOCK_PRESETS["object"].indices(100) == (6, 14)
    assert MotionClocks(0.25, 0.5).cost_fraction(100) == 0.75
    with pytest.raises(ValueError, match="out of order"):
        MotionClocks(0.5, 0.25)
    with pytest.raises(ValueError, match="at least one step"):
        MotionClocks(1.0, 1.0)


def _picture(height=96, width=128) -> np.ndarray:
    """Textured content that phase correlation can lock onto."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize(
    ("spec", "dx", "dy"), [("pan-right 0.25", -32, 0), ("tilt-up 0.25", 0, 24)]
)
def test_a_pan_moves_the_content_by_its_amount(spec, dx, dy):
    from allegro.motion_signal import camera_signal, parse_camera, shift_between

    image = _picture()
    signal = camera_signal(image, parse_camera(spec), frames=9)
    measured = shift_between(signal.frames[0], signal.frames[-1])
    assert measured == pytest.approx((dx, dy), abs=0.5)
    half = shift_between(signal.frames[0], signal.frames[4])
    assert half == pytest.approx((dx / 2, dy / 2), abs=0.5)
    # The uncovered border is left to the model: a strip as wide as the pan, at the end.
    assert signal.mask[0].all()
    assert (~signal.mask[-1]).sum() == pytest.approx(abs(dx) * 96 + abs(dy) * 128, rel=0.05)


def test_zoom_scales_about_the_centre():
    from allegro.motion_signal import camera_signal, parse_camera

    image = np.zeros((101, 101, 3), np.uint8)
    image[50, 60] = 255  # a dot 10 px right of the centre
    signal = camera_signal(image, parse_camera("zoom-in 1.0"), frames=3)
    last = signal.frames[-1][..., 0].astype(float)
    ys, xs = np.nonzero(last > 20)
    centre = np.average(xs, weights=last[ys, xs]), np.average(ys, weights=last[ys, xs])
    assert centre == pytest.approx((70.0, 50.0), abs=0.5)  # 10 px -> 20 px from the centre
    assert signal.mask.all()  # zooming in keeps every pixel covered


def test_camera_specs_are_checked():
    from allegro.errors import InvalidRequestError
    from allegro.motion_signal import parse_camera

    move = parse_camera("pan-left 0.1 + zoom-out 1 + roll-right 5")
    assert (move.pan_x, move.zoom, move.roll) == (0.1, -0.5, -5.0)
    for bad in ("", "dolly 0.3", "zoom-in", "pan-left 2"):
        with pytest.raises(InvalidRequestError) as refused:
            parse_camera(bad)
        assert refused.value.field == "camera"


def test_drag_puts_the_object_on_the_path_at_each_frame():
    from allegro.motion_signal import drag_signal

    image = np.full((64, 96, 3), 40, np.uint8)
    image[10:20, 10:20] = (250, 10, 10)  # a red square, grabbed at its centre (15, 15)
    obj = np.zeros((64, 96), bool)
    obj[10:20, 10:20] = True
    path = [(15, 15), (75, 15), (75, 45)]  # right 60, then down 30: 90 px long
    signal = drag_signal(image, obj, path, frames=7)
    for index in range(7):
        travelled = 90 * index / 6
        x, y = (15 + travelled, 15) if travelled <= 60 else (75, 15 + travelled - 60)
        ys, xs = np.nonzero(signal.mask[index])
        assert (xs.mean(), ys.mean()) == pytest.approx((x - 0.5, y - 0.5), abs=1.0)
        red = signal.frames[index][..., 0] > 200
        assert np.array_equal(red, signal.mask[index])  # the object's pixels, where it is
    assert not (signal.frames[-1][10:20, 10:20, 0] > 200).any()  # the hole was filled
    scaled = drag_signal(image, obj, [(15, 15), (60, 30)], frames=3, scales=[1.0, 2.0])
    assert scaled.mask[-1].sum() == pytest.approx(4 * obj.sum(), rel=0.1)


def test_bad_drags_are_refused_with_the_field_named():
    from allegro.errors import InvalidRequestError
    from allegro.motion_signal import check_drag, check_mask

    image = np.zeros((64, 96, 3), np.uint8)
    obj = np.zeros((64, 96), bool)
    obj[5:9, 5:9] = True
    cases = [
        (np.zeros_like(obj), [(6, 6), (20, 20)], "empty", "motion_mask"),
        (np.ones_like(obj), [(6, 6), (20, 20)], "whole image", "motion_mask"),
        (obj, [(6, 6)], "two points", "drag_path"),
        (obj, [(6, 6), (200, 20)], "outside", "drag_path"),
    ]
    for mask, path, words, field in cases:
        with pytest.raises(InvalidRequestError, match=words) as refused:
            check_drag(image, mask, path)
        assert refused.value.field == field
    with pytest.raises(InvalidRequestError, match="empty"):
        check_mask(np.zeros((4, 8, 8), bool))


def test_resampling_says_what_it_changed():
    from allegro.ti2v.motion import resample_signal

    frames = np.zeros((81, 48, 64, 3), np.uint8)
    mask = np.ones((81, 48, 64), bool)
    video, held, note = resample_signal(frames, mask, 24, 32, 32)
    assert video.shape == (24, 32, 32, 3) and held.shape == (24, 32, 32)
    assert (
        note
        == "motion signal: 81 frames (mask 81) resampled to 24, 64x48 (mask 64x48) resized to 32x32"
    )
    assert resample_signal(video, held, 24, 32, 32)[2] is None


def test_an_example_folder_in_the_authors_layout_loads_and_runs(tiny_ti2v, tmp_path):
    """The authors' folders: first_frame.png, motion_signal.mp4, mask.mp4, prompt.txt
    (their files are not ours to ship: this one is made in the same layout)."""
    from PIL import Image

    from allegro.motion_signal import drag_signal, load_example
    from allegro.ti2v.condition import prepare_image
    from allegro.ti2v.motion import CLOCK_PRESETS, guide_from_pixels, resample_signal
    from allegro.ti2v.pipeline import ConditionFrames

    def write_video(path, frames, fps):
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "12"})
            stream.width, stream.height, stream.pix_fmt = (
                frames.shape[2],
                frames.shape[1],
                "yuv420p",
            )
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    folder = tmp_path / "cutdrag_tiny_Square"
    folder.mkdir()
    image = _picture(120, 200)
    obj = np.zeros((120, 200), bool)
    obj[30:60, 30:60] = True
    made = drag_signal(image, obj, [(45, 45), (150, 80)], frames=30)
    Image.fromarray(image).save(folder / "first_frame.png")
    write_video(folder / "motion_signal.mp4", made.frames, fps=16)
    write_video(
        folder / "mask.mp4", np.repeat(made.mask[..., None] * 255, 3, -1).astype(np.uint8), fps=16
    )
    (folder / "prompt.txt").write_text("a square slides to the right\n")

    first, signal = load_example(folder)
    assert signal.kind == "object" and signal.prompt == "a square slides to the right"
    assert signal.frames.shape[0] == 30 and signal.mask[0].sum() == pytest.approx(900, rel=0.1)
    video, mask, note = resample_signal(signal.frames, signal.mask, FRAMES, SIZE, SIZE)
    assert "resampled to 24" in note
    guide = guide_from_pixels(video, mask, CLOCK_PRESETS[signal.kind], STEPS)
    condition = ConditionFrames(prepare_image(first, SIZE, SIZE)[None], (0,))
    frames = tiny_ti2v(
        prompt=signal.prompt, num_inference_steps=STEPS, num_frames=FRAMES, height=SIZE,
        width=SIZE, generator=torch.Generator().manual_seed(1), output_type="np",
        clean_caption=False, condition=condition, motion=guide,
    ).frames  # fmt: skip
    assert frames.shape == (1, FRAMES, SIZE, SIZE, 3) and np.isfinite(frames).all()


def _request(**fields):
    from types import SimpleNamespace

    base = dict.fromkeys(
        ("camera", "drag", "motion_signal", "motion_mask", "motion_preset", "motion_tweak",
         "motion_strong"),
    )  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


def test_a_request_without_motion_fields_asks_for_none():
    from allegro.motion_signal import MotionRequest

    assert MotionRequest.of(_request()) is None
    assert MotionRequest.of(object()) is None  # a request of before motion control


def test_motion_requests_are_checked_before_anything_is_queued():
    from allegro.errors import InvalidRequestError
    from allegro.motion_signal import MotionRequest

    cases = [
        (dict(camera="zoom-in 0.3", drag="[[1, 2], [3, 4]]"), "first.png", "one way", "camera"),
        (dict(camera="zoom-in 0.3"), None, "first image", "camera"),
        (dict(motion_signal="m.mp4"), "first.png", "mask", "motion_mask"),
        (dict(drag="[[1, 2], [3, 4]]"), "first.png", "mask", "motion_mask"),
        (dict(motion_mask="m.png"), "first.png", "goes with", "motion_mask"),
        (dict(drag="[[1, 2]", motion_mask="m.png"), "first.png", "not JSON", "drag"),
        (dict(camera="spin 3"), "first.png", "Unknown camera move", "camera"),
        (
            dict(camera="pan-left 0.2", motion_tweak=0.5, motion_strong=0.2),
            "first.png",
            "out of order",
            "motion_strong",
        ),
    ]
    for fields, first, words, field in cases:
        motion = MotionRequest.of(_request(**fields))
        with pytest.raises(InvalidRequestError, match=words) as refused:
            motion.check(first)
        assert refused.value.field == field, fields
    ok = MotionRequest.of(_request(camera="zoom-in 0.3", motion_tweak=0.1))
    ok.check("first.png")
    assert ok.clocks(100).indices(100) == (10, 10)  # the camera preset's strong, tweak given


def test_motion_builds_from_each_way_in_at_the_videos_size(tmp_path):
    from PIL import Image

    from allegro.motion_signal import MotionRequest, drag_signal, shift_between

    image = _picture(120, 200)  # wider than the 160x160 video: centre-cropped like TI2V
    camera, note = MotionRequest.of(_request(camera="pan-right 0.25")).build(image, 8, 160, 160)
    assert camera.frames.shape == (8, 160, 160, 3) and note is None
    assert shift_between(camera.frames[0], camera.frames[-1])[0] == pytest.approx(-40, abs=0.5)

    obj = np.zeros((120, 200), bool)
    obj[40:60, 100:120] = True  # a square in the middle of the first image
    Image.fromarray((obj * 255).astype(np.uint8)).save(tmp_path / "object.png")
    drag = MotionRequest.of(
        _request(drag="[[110, 50], [110, 90]]", motion_mask=str(tmp_path / "object.png"))
    )
    dragged, _ = drag.build(image, 8, 160, 160)
    # The crop keeps x 40..160 of 200 and scales by 160/120: the square's centre (110, 50)
    # lands at (93.3, 66.7) and moves down by 40 * 4/3.
    ys, xs = np.nonzero(dragged.mask[-1])
    assert (xs.mean(), ys.mean()) == pytest.approx((93.3 - 0.5, 66.7 + 53.3 - 0.5), abs=1.5)

    made = drag_signal(image, obj, [(110, 50), (150, 50)], frames=12)

    def write(path, frames):
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=16, options={"crf": "12"})
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    write(tmp_path / "signal.mp4", made.frames)
    write(tmp_path / "mask.mp4", np.repeat(made.mask[..., None] * 255, 3, -1).astype(np.uint8))
    upload = MotionRequest.of(
        _request(motion_signal=str(tmp_path / "signal.mp4"), motion_mask=str(tmp_path / "mask.mp4"))
    )
    signal, note = upload.build(image, 8, 160, 160)
    assert signal.frames.shape == (8, 160, 160, 3) and signal.mask.shape == (8, 160, 160)
    assert note.startswith("motion signal: 12 frames (mask 12) resampled to 8")
