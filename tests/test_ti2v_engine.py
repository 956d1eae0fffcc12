"""Image to video through the engine on tiny checkpoints: condition at every step, seeds,
saved inputs, clip continuation, cancel, out-of-memory, bad inputs, model switches."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from allegro.engine import Engine
from allegro.errors import Cancelled, GpuOutOfMemoryError, InvalidRequestError
from allegro.events import CancelToken, Stage
from allegro.loading import PipelineCache, PipelineSpec
from allegro.request import GenerationRequest
from allegro.video import read_frames, read_settings

STEPS = 2


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache()


@pytest.fixture
def engine(tiny_ti2v_model, cache, tmp_path) -> Engine:
    return Engine(PipelineSpec(model=str(tiny_ti2v_model)), tmp_path / "outputs", cache=cache)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, size in (("first.png", (200, 300)), ("last.jpg", (120, 100))):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def request(**fields) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "a fox runs", "seed": 11, "steps": STEPS, **fields}  # type: ignore[arg-type]
    )


def _record_transformer_inputs(cache, monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    transformer = cache.loaded.pipe.transformer
    forward = transformer.forward

    def record(*args, **kwargs):  # what the forward receives, after the pipeline's pre-hook
        seen.append(kwargs["hidden_states"].detach().clone())
        return forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", record)
    return seen


def test_first_and_last_image_reach_every_step_and_are_saved(engine, cache, images, monkeypatch):
    engine.load(request=request(first_image=str(images[0])))
    seen = _record_transformer_inputs(cache, monkeypatch)
    events = []
    first = request(first_image=str(images[0]), last_image=str(images[1]))
    result = engine.generate(first, on_progress=events.append)

    assert len(seen) == STEPS
    expected_mask = torch.ones(4, 6, 20, 20)
    expected_mask[0, 0] = 0  # first pixel frame
    expected_mask[3, 5] = 0  # last pixel frame (23 = 3 * 6 + 5)
    for hidden in seen:
        assert hidden.shape == (2, 12, 6, 20, 20)  # guidance halves, 12 channels
        for half in hidden:
            assert torch.equal(half[8:], expected_mask)
            assert torch.equal(half[4:8], seen[0][0, 4:8])
    assert seen[0][0, 4:8].abs().sum() > 0

    stages = [event.stage for event in events]
    assert stages.index(Stage.ENCODING) < stages.index(Stage.ENCODING_IMAGES)
    assert stages.index(Stage.ENCODING_IMAGES) < stages.index(Stage.DENOISING)
    encoding = [e for e in events if e.stage == Stage.ENCODING_IMAGES and e.step]
    assert encoding and encoding[-1].step == encoding[-1].total
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions)

    settings = read_settings(result.video_path)
    assert settings["guidance_scale"] == 8.0  # the official TI2V default
    for key, source in (("first_image", images[0]), ("last_image", images[1])):
        saved = result.video_path.with_name(settings[key])
        assert saved.is_file() and saved.suffix == ".png"
        assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(Image.open(source)))
    frames, _ = read_frames(result.video_path)
    assert frames.shape == (24, 160, 160, 3)

    monkeypatch.undo()
    again = engine.generate(first)
    assert np.array_equal(read_frames(again.video_path)[0], frames)  # same seed, same video


def test_continue_a_clip_joins_without_repeating_shared_frames(engine, images):
    clip = engine.generate(request(first_image=str(images[0])))
    original, _ = read_frames(clip.video_path)
    longer = engine.generate(request(continue_video=str(clip.video_path), overlap_frames=8))
    frames, _ = read_frames(longer.video_path)
    assert len(frames) == 24 + 24 - 8

    # The first part is the original clip frame for frame, up to one more H.264 encode (the
    # tiny model's output is noise, which H.264 keeps worst): far closer than off by one.
    def distance(a, b):
        return np.abs(a.astype(int) - b.astype(int)).mean()

    aligned = distance(frames[:24], original)
    assert aligned < 8 and aligned * 3 < distance(frames[1:24], original[:23])
    settings = read_settings(longer.video_path)
    assert settings["continues"] == {
        "video": clip.video_path.name,
        "overlap_frames": 8,
        "source_frames": 24,
    }
    assert settings["chain"] == [clip.video_path.name]
    assert settings["frames"] == 40 and settings["generated_frames"] == 24
    third = engine.generate(  # fast mode (Pyramid Attention Broadcast) works here too
        request(continue_video=str(longer.video_path), overlap_frames=4, fast_mode=True)
    )
    assert read_settings(third.video_path)["chain"] == [
        clip.video_path.name,
        longer.video_path.name,
    ]
    assert len(read_frames(third.video_path)[0]) == 40 + 20


@pytest.mark.parametrize("at_stage", [Stage.ENCODING_IMAGES, Stage.DENOISING])
def test_cancel_writes_nothing(engine, images, at_stage):
    cancel = CancelToken()

    def on_progress(event):
        if event.stage == at_stage and event.step:
            cancel.cancel()
        assert event.stage != Stage.DECODING or not event.step, "decoded after cancel"

    with pytest.raises(Cancelled):
        engine.generate(
            request(first_image=str(images[0]), steps=4), on_progress=on_progress, cancel=cancel
        )
    assert not engine.output_dir.exists() or not list(engine.output_dir.iterdir())


def test_out_of_memory_gives_advice_and_writes_nothing(engine, cache, images, monkeypatch):
    engine.load(request=request(first_image=str(images[0])))
    transformer = cache.loaded.pipe.transformer
    forward = transformer.forward
    calls = {"n": 0}

    def runs_out_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", runs_out_once)
    with pytest.raises(GpuOutOfMemoryError, match="--offload model"):
        engine.generate(request(first_image=str(images[0])))
    assert not engine.output_dir.exists() or not list(engine.output_dir.iterdir())
    assert engine.generate(request(first_image=str(images[0]))).video_path.is_file()


def _bad_images(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    Image.fromarray(np.zeros((16, 400, 3), np.uint8)).save(tmp_path / "tiny.png")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(good)
    (tmp_path / "broken.png").write_bytes(good.read_bytes()[:60])
    # A header that claims 10000x10000 pixels (100 MP), with almost no data behind it.
    Image.new("1", (10000, 10000)).save(tmp_path / "huge.png")
    Image.new("1", (20000, 10000)).save(tmp_path / "huger.png")  # beyond PIL's own refusal
    return {
        "notes.png": "not an image",
        "tiny.png": "only 400x16 pixels",
        "broken.png": "damaged",
        "huge.png": "megapixels",
        "huger.png": "megapixels",
        "missing.png": "does not exist",
    }


def test_bad_images_are_refused_with_clear_messages(tmp_path):
    from allegro.ti2v.inputs import check_condition_files

    for name, message in _bad_images(tmp_path).items():
        with pytest.raises(InvalidRequestError, match=message):
            check_condition_files(request(first_image=str(tmp_path / name)))
    with pytest.raises(InvalidRequestError, match="not a readable video"):
        check_condition_files(request(continue_video=str(tmp_path / "notes.png")))


def test_request_combinations_are_checked(images):
    from allegro.request import NativeSize, resolve_request

    native = NativeSize(24, 160, 160)
    with pytest.raises(InvalidRequestError, match="needs a first frame"):
        resolve_request(request(last_image=str(images[1])), native)
    with pytest.raises(InvalidRequestError, match="not both"):
        resolve_request(request(first_image="a.png", continue_video="b.mp4"), native)
    with pytest.raises(InvalidRequestError, match="then interpolate"):
        resolve_request(request(continue_video="b.mp4", interpolate=True), native)
    with pytest.raises(InvalidRequestError, match="between 1 and 23"):
        resolve_request(request(continue_video="b.mp4", overlap_frames=24), native)
    assert resolve_request(request(), native).guidance_scale == 7.5
    ti2v = resolve_request(request(first_image="a.png", guidance_scale=None), native)
    assert ti2v.guidance_scale == 8.0


def test_the_wrong_task_for_the_model_is_a_clear_error(engine, tiny_model, cache, images):
    with pytest.raises(InvalidRequestError, match="first image"):
        engine.generate(request())
    text_only = Engine(PipelineSpec(model=str(tiny_model)), engine.output_dir, cache=cache)
    with pytest.raises(InvalidRequestError, match="allegro-ti2v"):
        text_only.generate(request(first_image=str(images[0])))


def _share_weights(source, target) -> None:
    """Make target's text encoder and VAE the very files of source's (as two hub snapshots
    share blobs), keeping target's own transformer."""
    for part in ("text_encoder", "vae"):
        shutil.rmtree(target / part)
        (target / part).mkdir()
        for file in (source / part).iterdir():
            os.symlink(file, target / part / file.name)


def test_switching_tasks_keeps_the_shared_text_encoder_and_vae(
    tiny_model, tiny_ti2v_model, images, tmp_path
):
    ti2v_folder = tmp_path / "ti2v"
    shutil.copytree(tiny_ti2v_model, ti2v_folder)
    _share_weights(tiny_model, ti2v_folder)
    cache = PipelineCache()
    engine = Engine(
        PipelineSpec(model=str(tiny_model)),
        tmp_path / "outputs",
        cache=cache,
        ti2v_spec=PipelineSpec(model=str(ti2v_folder)),
    )
    t2v = engine.load(request=request())
    assert not t2v.ti2v and t2v.reused == ()
    engine.generate(request(first_image=str(images[0])))  # works with the kept modules
    ti2v = cache.loaded
    assert ti2v.ti2v and ti2v.reused == ("text_encoder", "vae")
    assert ti2v.pipe.text_encoder is t2v.pipe.text_encoder and ti2v.pipe.vae is t2v.pipe.vae
    assert ti2v.pipe.transformer is not t2v.pipe.transformer
    engine.load(request=request())
    assert cache.loaded.reused == ("text_encoder", "vae") and cache.load_count == 3

    # Different weights (the tiny checkpoints' own files) are loaded, not reused.
    other = Engine(PipelineSpec(model=str(tiny_ti2v_model)), tmp_path / "o", cache=cache)
    other.load(request=request(first_image=str(images[0])))
    assert cache.loaded.reused == ()


def test_hub_blobs_identify_weights_by_their_hash(tmp_path):
    from allegro.loading import weights_fingerprint

    blobs = tmp_path / "models--x" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc123").write_bytes(b"weights")
    fingerprints = []
    for snapshot in ("one", "two"):
        folder = tmp_path / snapshot / "vae"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        os.symlink(blobs / "abc123", folder / "model.safetensors")
        fingerprints.append(weights_fingerprint(folder, "fp32"))
    assert fingerprints[0] == fingerprints[1]
    assert weights_fingerprint(tmp_path / "one" / "vae", "bf16") != fingerprints[0]
