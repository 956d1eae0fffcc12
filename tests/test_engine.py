"""The engine on the tiny checkpoint: reproducibility, caches, cancel, OOM, saving."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from allegro.engine import Engine
from allegro.errors import AllegroError, Cancelled, GpuOutOfMemoryError
from allegro.events import CancelToken, Stage
from allegro.loading import PipelineCache, PipelineSpec
from allegro.request import DEFAULT_NEGATIVE_PROMPT, GenerationRequest, apply_template
from allegro.video import read_frames, read_settings

STEPS = 2


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache()


@pytest.fixture
def engine(tiny_model, cache, tmp_path) -> Engine:
    return Engine(PipelineSpec(model=str(tiny_model)), tmp_path / "outputs", cache=cache)


def request(**fields) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "pink fish swim in the sea", "seed": 7, "steps": STEPS, **fields}
    )


def test_generate_writes_video_settings_and_poster(engine):
    events = []
    result = engine.generate(request(), on_progress=events.append)
    assert result.video_path.is_file() and result.settings_path.is_file()
    assert result.poster_path.is_file()
    frames, fps = read_frames(result.video_path)
    assert frames.shape == (24, 160, 160, 3) and fps == 15
    settings = read_settings(result.video_path)
    assert settings["seed"] == 7 and settings["steps"] == STEPS
    assert settings["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT
    assert settings["model"] == engine.spec.model and settings["offload"] == "none"

    stages = [event.stage for event in events]
    for stage in (Stage.ENCODING, Stage.DENOISING, Stage.DECODING, Stage.SAVING, Stage.DONE):
        assert stage in stages
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions), "progress never goes backwards"
    assert all(
        f < 1.0 for event, f in zip(events, fractions, strict=True) if event.stage != Stage.DONE
    )
    assert events[-1].fraction == 1.0
    denoise = [e for e in events if e.stage == Stage.DENOISING and e.step]
    assert [e.step for e in denoise] == list(range(1, STEPS + 1))
    assert all(e.eta is not None for e in denoise)
    previews = [e.preview for e in events if e.preview is not None]
    assert previews and previews[0].dtype == np.uint8 and previews[0].shape[2] == 3


def test_same_seed_gives_identical_frames(engine):
    first = engine.generate(request())
    second = engine.generate(request())
    other = engine.generate(request(seed=8))
    frames_a, _ = read_frames(first.video_path)
    frames_b, _ = read_frames(second.video_path)
    frames_c, _ = read_frames(other.video_path)
    assert first.video_path != second.video_path
    np.testing.assert_array_equal(frames_a, frames_b)
    assert np.abs(frames_a.astype(int) - frames_c).mean() > 1


def test_random_seed_is_recorded(engine):
    result = engine.generate(request(seed=None))
    assert read_settings(result.video_path)["seed"] == result.seed


def test_pipeline_is_loaded_once_per_key_and_replaced_for_a_new_key(tiny_model, tmp_path):
    cache = PipelineCache()
    spec = PipelineSpec(model=str(tiny_model))
    threads = [threading.Thread(target=cache.get, args=(spec,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.load_count == 1
    first = cache.loaded
    assert cache.get(spec) is first and cache.load_count == 1
    cache.get(PipelineSpec(model=str(tiny_model), precision="bf16"))
    assert cache.load_count == 2 and cache.loaded is not first
    assert cache.loaded.spec.precision == "bf16"


def test_prompt_embedding_cache_gives_the_frames_of_a_plain_pipeline_call(engine, cache):
    """Cached embeddings must change nothing: compare with diffusers called with strings."""
    from allegro.engine import _clean_caption_available

    engine.generate(request())  # warms the cache with this prompt and the negative prompt
    loaded = cache.loaded
    hits_before = loaded.prompt_cache.hits
    ours = engine._make_frames(
        loaded,
        engine_resolved(loaded),
        _silent_clock(),
        CancelToken(),
        [],
    )
    assert loaded.prompt_cache.hits == hits_before + 2  # both texts came from the cache
    plain = loaded.pipe(
        prompt=apply_template("pink fish swim in the sea"),
        negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        num_frames=24,
        height=160,
        width=160,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
        clean_caption=_clean_caption_available(),
    ).frames[0]
    np.testing.assert_array_equal(ours, np.round(np.clip(plain, 0, 1) * 255).astype(np.uint8))


def engine_resolved(loaded):
    from allegro.request import resolve_request

    return resolve_request(request(), loaded.native)


def _silent_clock():
    from allegro.engine import _ProgressClock

    return _ProgressClock(lambda event: None, interpolate=False)


def test_cancel_mid_run_writes_nothing_and_the_next_run_works(engine):
    cancel = CancelToken()
    steps_seen = []

    def on_progress(event):
        if event.stage == Stage.DENOISING and event.step:
            steps_seen.append(event.step)
            if event.step == 2:
                cancel.cancel()
        assert event.stage != Stage.DECODING or not event.step, "decoded after cancel"

    with pytest.raises(Cancelled):
        engine.generate(request(steps=6), on_progress=on_progress, cancel=cancel)
    assert steps_seen == [1, 2]  # stopped within one step
    assert not list(engine.output_dir.glob("*")) if engine.output_dir.exists() else True
    result = engine.generate(request())
    assert result.video_path.is_file()


def test_gpu_out_of_memory_gives_advice_and_the_next_run_works(engine, cache, monkeypatch):
    engine.load()
    transformer = cache.loaded.pipe.transformer
    real_forward = transformer.forward
    calls = {"n": 0}

    def forward_that_runs_out_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", forward_that_runs_out_once)
    with pytest.raises(GpuOutOfMemoryError) as caught:
        engine.generate(request())
    message = str(caught.value)
    assert "ran out of memory" in message
    assert "--offload model" in message and "--offload sequential" in message
    assert "368x640" in message
    assert not engine.output_dir.exists() or not list(engine.output_dir.glob("*"))
    assert engine.generate(request()).video_path.is_file()


def test_failed_save_leaves_no_file_and_a_clear_error(engine, monkeypatch):
    import allegro.video

    def encode_then_fail(path, *args):
        path.write_bytes(b"\x00" * 1000)  # a half-written file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(allegro.video, "_encode_mp4", encode_then_fail)
    with pytest.raises(AllegroError, match="No space left on device"):
        engine.generate(request())
    assert list(engine.output_dir.iterdir()) == []


def test_prompt_over_the_token_limit_is_cut_with_a_warning(engine):
    long_prompt = "a cat " * 150  # 900 characters; the tiny tokenizer has a token per character
    result = engine.generate(request(prompt=long_prompt, use_template=False))
    assert len(result.warnings) == 1
    assert "Allegro reads at most 512" in result.warnings[0] and "cut before" in result.warnings[0]


def test_transformer_from_a_second_source(tiny_model, tmp_path):
    from allegro.tiny import make_tiny_pipeline

    other = make_tiny_pipeline(seed=123).transformer
    other.save_pretrained(tmp_path / "variant")  # transformer-only repo layout (root)
    cache = PipelineCache()
    loaded = cache.get(PipelineSpec(model=str(tiny_model), transformer=str(tmp_path / "variant")))
    ours = loaded.pipe.transformer.state_dict()
    for name, tensor in other.state_dict().items():
        torch.testing.assert_close(ours[name], tensor)


def test_eta_before_the_first_step_comes_from_the_cost_model():
    """On a GPU (only its name matters) the official request is quoted at about the public
    20 minutes on an H100."""
    from types import SimpleNamespace

    from allegro import costs
    from allegro.engine import estimated_seconds
    from allegro.loading import AppliedOffload
    from allegro.request import NativeSize, resolve_request

    loaded = SimpleNamespace(
        device="cuda",
        device_name="NVIDIA H100 80GB HBM3",
        multiprocessors=132,
        official=True,
        offload=AppliedOffload("none", "chosen by the user"),
        spec=PipelineSpec(precision="bf16"),
        pipe=SimpleNamespace(transformer=SimpleNamespace(config=costs.ALLEGRO_TRANSFORMER_CONFIG)),
        gpu_memory_bytes=80 * 10**9,
        compiled=False,
    )
    official = resolve_request(GenerationRequest(prompt="a cat"), NativeSize(88, 720, 1280))
    assert 18 * 60 < estimated_seconds(loaded, official) < 23 * 60
    # ZeroGPU names the whole card but lends 60 of its 132 multiprocessors (spaces 0.51.3
    # zero/configs.json, zero/torch/static.py:22-29): the estimate is for what was lent.
    loaded.device_name = "NVIDIA H200"
    whole = estimated_seconds(loaded, official)
    loaded.multiprocessors = 60
    assert estimated_seconds(loaded, official) == pytest.approx(whole * 132 / 60)
    loaded.device, loaded.device_name = "cpu", None
    assert estimated_seconds(loaded, official) is None


def test_generate_with_interpolation_to_30_fps(engine):
    events = []
    result = engine.generate(request(interpolate=True), on_progress=events.append)
    frames, fps = read_frames(result.video_path)
    assert fps == 30 and frames.shape[0] == 48
    interpolation = read_settings(result.video_path)["interpolation"]
    assert interpolation["method"] == "flow" and interpolation["fps"] == 30
    steps = [e.step for e in events if e.stage == Stage.INTERPOLATING and e.total]
    assert steps and steps[-1] == 23  # pairs of neighbouring frames


def test_interpolation_keeps_every_frame_the_model_made(engine, monkeypatch):
    import allegro.engine

    saved = {}
    real_save = allegro.engine.save_video

    def capture(path, frames, fps, settings):
        saved[fps] = frames
        real_save(path, frames, fps, settings)

    monkeypatch.setattr(allegro.engine, "save_video", capture)
    engine.generate(request())
    engine.generate(request(interpolate=True))
    np.testing.assert_array_equal(saved[30][0::2], saved[15])
    np.testing.assert_array_equal(saved[30][-1], saved[15][-1])  # last repeated: same length


def test_interpolate_command_keeps_settings_and_rejects_bad_input(engine, tmp_path):
    from allegro.cli import main

    made = engine.generate(request())
    output = tmp_path / "smooth.mp4"
    assert main(["interpolate", str(made.video_path), str(output)]) == 0
    settings = read_settings(output)
    assert settings["seed"] == 7 and settings["interpolation"]["method"] == "flow"
    assert read_frames(output)[0].shape[0] == 48

    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("hello")
    assert main(["interpolate", str(not_a_video), str(tmp_path / "x.mp4")]) == 2
    from allegro.video import write_video

    single = tmp_path / "single.mp4"
    write_video(single, np.zeros((1, 64, 64, 3), np.uint8), 15, {"prompt": "one"})
    assert main(["interpolate", str(single), str(tmp_path / "y.mp4")]) == 2
    assert main(["interpolate", str(tmp_path / "missing.mp4"), str(tmp_path / "z.mp4")]) == 2
    assert not list(tmp_path.glob("[xyz].mp4"))


@pytest.mark.slow
def test_compiled_transformer_blocks(tiny_model, tmp_path):
    """--compile: regional compilation (diffusers' compile_repeated_blocks, inductor, also on
    the CPU) of every transformer block; the compiled pipeline is its own cache entry and
    makes the same video as plain eager code, within float tolerance."""
    cache = PipelineCache()
    compiled = Engine(PipelineSpec(model=str(tiny_model), compile=True), tmp_path, cache=cache)
    loaded = compiled.load()
    assert loaded.pipe.transformer._repeated_blocks == ["AllegroTransformerBlock"]
    assert "_repeated_blocks" not in vars(type(loaded.pipe.transformer))  # diffusers' class
    assert all(
        block._compiled_call_impl is not None
        for block in loaded.pipe.transformer.transformer_blocks
    )
    result = compiled.generate(request())
    assert read_settings(result.video_path)["compiled"] is True
    eager = Engine(PipelineSpec(model=str(tiny_model)), tmp_path, cache=PipelineCache())
    plain = eager.generate(request())
    frames_compiled, _ = read_frames(result.video_path)
    frames_eager, _ = read_frames(plain.video_path)
    assert np.abs(frames_compiled.astype(int) - frames_eager).mean() < 1.0


def test_same_prompt_and_seed_in_one_second_never_overwrite(tmp_path):
    from datetime import datetime

    from allegro.engine import output_path_for

    now = datetime(2026, 11, 25, 3, 15, 0)
    first = output_path_for(tmp_path, request(), now)
    assert first.name == "20261125-031500-seed7-pink-fish-swim-in-the-sea.mp4"
    first.write_bytes(b"video")
    second = output_path_for(tmp_path, request(), now)
    assert second.name == "20261125-031500-seed7-pink-fish-swim-in-the-sea-2.mp4"
    second.with_suffix(".json").write_text("{}")  # a save under way reserves the name too
    assert output_path_for(tmp_path, request(), now).name.endswith("-sea-3.mp4")


def test_the_interpolator_is_made_once_under_the_run_lock(engine, cache, monkeypatch):
    """EMA-VFI reads its checkpoint when made: once per process, never two jobs at once."""
    import allegro.interpolation

    engine.load()
    cache.loaded.interpolators.clear()
    real_create = allegro.interpolation.create_interpolator
    made = []

    def create(name, weights=None, device=None):
        made.append(cache.loaded.run_lock.locked())
        return real_create(name, weights, device)

    monkeypatch.setattr(allegro.interpolation, "create_interpolator", create)
    engine.generate(request(interpolate=True, interpolation_method="blend"))
    engine.generate(request(interpolate=True, interpolation_method="blend"))
    assert made == [True]
    cache.loaded.interpolators.clear()


def test_out_of_memory_is_released_once_its_traceback_is_gone(engine, cache, monkeypatch):
    """The traceback of an OOM holds the failed step's frames and their activations; the
    GPU is released only after it is dropped, or empty_cache would return little. Only the
    accelerator's release is faked (it records whether the activation is still alive)."""
    import gc
    import weakref

    engine.load()
    alive = []

    def forward_that_runs_out(*args, **kwargs):
        activation = torch.ones(1024)  # stands for the activations of the failed step
        alive.append(weakref.ref(activation))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def release_gpu_memory():
        gc.collect()
        freed.append(alive[-1]() is None)

    freed: list[bool] = []
    monkeypatch.setattr(cache.loaded.pipe.transformer, "forward", forward_that_runs_out)
    monkeypatch.setattr("allegro.engine.free_accelerator_memory", release_gpu_memory)
    with pytest.raises(GpuOutOfMemoryError) as caught:
        engine.generate(request())
    assert freed == [True]
    assert "ran out of memory" in str(caught.value)


def test_out_of_memory_while_interpolating_keeps_the_video_at_15_fps(engine, monkeypatch):
    released = []

    def interpolation_that_runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(
        "allegro.interpolation.driver.interpolate_frames", interpolation_that_runs_out
    )
    monkeypatch.setattr("allegro.engine.free_accelerator_memory", lambda: released.append(1))
    result = engine.generate(request(interpolate=True))
    frames, fps = read_frames(result.video_path)
    assert len(frames) == 24 and fps == 15 and result.settings["fps"] == 15
    assert result.settings["interpolation"] is None
    assert any("ran out of memory interpolating" in w for w in result.warnings)
    assert released == [1]


def test_fast_mode_is_switched_off_where_it_cannot_run(engine, monkeypatch):
    """Only the GPU's capacity is faked: far too small for fast mode's attention cache."""
    from allegro.engine import fast_mode_off_reason
    from allegro.request import resolve_request

    loaded = engine.load()
    monkeypatch.setattr(loaded, "gpu_memory_bytes", 1)
    result = engine.generate(request(fast_mode=True))
    assert result.settings["fast_mode"] is False
    assert any(w.startswith("Fast mode was switched off: ") for w in result.warnings)
    fast = resolve_request(request(fast_mode=True), loaded.native)
    monkeypatch.setattr(loaded, "gpu_memory_bytes", 10**12)
    assert fast_mode_off_reason(loaded, fast) is None
    monkeypatch.setattr(loaded, "compiled", True)
    assert "torch.compile" in fast_mode_off_reason(loaded, fast)


def test_out_of_memory_advice_puts_fast_mode_first_and_only_what_fits():
    """A 24 GB card, no offload, fast mode at 88x720x1280: every offload mode still needs
    33-38 GB with fast mode on, so none is proposed; turning fast mode off comes first."""
    from types import SimpleNamespace

    from allegro.engine import oom_advice
    from allegro.loading import AppliedOffload

    loaded = SimpleNamespace(
        offload=AppliedOffload("none", "chosen by the user"),
        spec=PipelineSpec(precision="bf16"),
        gpu_memory_bytes=24 * 10**9,
    )
    fast = GenerationRequest("a cat", frames=88, height=720, width=1280, fast_mode=True)
    advice = oom_advice(loaded, fast)
    assert advice.index("turn fast mode off") < advice.index("smaller video")
    assert "--offload" not in advice
    plain = oom_advice(loaded, GenerationRequest("a cat", frames=88, height=720, width=1280))
    assert "fast mode" not in plain and "--offload model" in plain


def test_caption_cleaning_runs_before_the_gpu_lock_and_can_be_cancelled(engine, cache):
    """A long prompt's cleaning (quadratic in diffusers) must not hold the run lock, and a
    cancel during it stops the job before it ever takes the lock."""
    loaded = engine.load()
    pipe = loaded.pipe
    real = pipe._text_preprocessing
    cancel = CancelToken()
    lock_held: list[bool] = []

    def cleaning(text, clean_caption=False):
        lock_held.append(loaded.run_lock.locked())
        cancel.cancel()  # the user gives up while the text is being cleaned
        return real(text, clean_caption=clean_caption)

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(request(), cancel=cancel)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    pipe._text_preprocessing = cleaning
    try:
        with loaded.run_lock:  # another job on the GPU: cleaning still goes ahead
            worker = threading.Thread(target=run)
            worker.start()
            worker.join(timeout=60)
        assert not worker.is_alive() and lock_held == [True]  # ran while another held it
    finally:
        pipe._text_preprocessing = real
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert not (engine.output_dir.exists() and list(engine.output_dir.glob("*")))


class ContendedLock:
    """A lock that says when someone asks for it while it is held."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.contended = lock, threading.Event()

    def __enter__(self) -> ContendedLock:
        if self.lock.locked():
            self.contended.set()
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.lock.release()


def test_without_offload_prompts_are_encoded_before_the_gpu_lock(engine, monkeypatch):
    """With offload none the text encoder never moves, so a job encodes its prompts while
    another job holds the GPU; with offload hooks (faked here: only the recorded mode) it
    waits for the lock, since encoding would move modules under the running job."""
    from dataclasses import replace as replace_field

    loaded = engine.load()
    assert loaded.offload.mode == "none"
    results: list = []

    def run(prompt: str) -> None:
        # Both texts new to the embedding cache: two encodings to see.
        results.append(engine.generate(request(prompt=prompt, negative_prompt=f"not {prompt}")))

    def encodes_while_locked(prompt: str) -> bool:
        misses = loaded.prompt_cache.misses
        with loaded.run_lock:  # another job on the GPU
            worker = threading.Thread(target=run, args=(prompt,))
            worker.start()
            deadline = time.monotonic() + 60
            while loaded.prompt_cache.misses < misses + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            encoded = loaded.prompt_cache.misses >= misses + 2
        worker.join(timeout=120)
        assert not worker.is_alive()
        return encoded

    assert encodes_while_locked("a heron lands on a lake")
    monkeypatch.setattr(loaded, "offload", replace_field(loaded.offload, mode="model"))
    misses = loaded.prompt_cache.misses
    watched = ContendedLock(loaded.run_lock)
    monkeypatch.setattr(loaded, "run_lock", watched)
    with watched:
        worker = threading.Thread(target=run, args=("a fox runs through snow",))
        worker.start()
        # The job reached the lock: anything it does before the lock is done, no encoding.
        assert watched.contended.wait(60)
        assert loaded.prompt_cache.misses == misses
    worker.join(timeout=120)
    assert len(results) == 2 and all(result.video_path.exists() for result in results)
