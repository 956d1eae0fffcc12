"""The page's logic without a browser or a model: settings, presets, the gallery folder, cost
hints, ZeroGPU durations and refusals, the job runner."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from allegro.errors import InvalidRequestError
from allegro.events import CancelToken, ProgressEvent, Stage
from allegro.models import DeviceStatus, ModelState
from allegro.request import (
    ACCEPTED_FRAMES,
    DEFAULT_NEGATIVE_PROMPT,
    SIZE_PRESETS,
    GenerationRequest,
    NativeSize,
    check_request,
    resolve_request,
)
from allegro.video import remove_leftovers
from ui import gallery
from ui.config import AppConfig, is_loopback, parse_config
from ui.estimates import (
    Hardware,
    RequestShape,
    cost_hint,
    estimate_memory_bytes,
    estimate_seconds,
    format_duration,
    options_note,
)
from ui.formatting import progress_description
from ui.model_status import (
    PREVIEW_TI2V,
    ModelChoice,
    ModelLoader,
    ModelStatus,
    Phase,
    banner_markdown,
    choose_model,
    ensure_preview_model,
    generate_button,
    preview_model_dir,
)
from ui.presets import (
    MODEL_DEFAULT,
    ControlValues,
    controls_from_settings,
    length_choices,
    size_choices,
)
from ui.zerogpu import check_fits, fitting_options, gpu_duration, wrap_for_spaces
from ui.zerogpu_jobs import stream_generation

NATIVE = NativeSize(88, 720, 1280)
H100 = Hardware("NVIDIA H100 80GB HBM3")
ZERO_GPU = Hardware("NVIDIA H200 MIG 3g.71gb")


# ---- settings --------------------------------------------------------------------------


def test_defaults_without_flags_or_environment():
    config = parse_config([], {})
    assert config.model is None and config.offload == "auto"
    assert (config.host, config.port, config.jobs_total) == ("127.0.0.1", 7860, 100)
    assert config.output_dir == Path("outputs").resolve()
    assert not (config.share or config.preview or config.public_gallery or config.mcp)
    assert not config.shared and not config.per_browser_gallery


def test_environment_variables_set_every_setting(tmp_path):
    environ = {
        "ALLEGRO_MODEL": "allegro-40x360p",
        "ALLEGRO_PRECISION": "fp16",
        "ALLEGRO_OFFLOAD": "none",
        "ALLEGRO_OUTPUT_DIR": str(tmp_path / "videos"),
        "ALLEGRO_PREVIEW": "1",
        "ALLEGRO_PUBLIC_GALLERY": "true",
        "ALLEGRO_EMA_VFI_WEIGHTS": "/weights/ema.pkl",
        "ALLEGRO_MAX_QUEUE": "3",
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "PORT": "8080",
        "SPACE_ID": "someone/allegro",
        "SPACES_ZERO_GPU": "true",
        "ALLEGRO_ZERO_GPU_MAX_SECONDS": "120",
    }
    config = parse_config([], environ)
    assert config.model == "allegro-40x360p"
    assert (config.precision, config.offload) == ("fp16", "none")
    assert config.output_dir == tmp_path / "videos"
    assert config.preview and config.public_gallery
    assert config.ema_vfi_weights == "/weights/ema.pkl"
    # ALLEGRO_MAX_QUEUE, kept for older set-ups, is the job limit in all now.
    assert (config.jobs_total, config.host, config.port) == (3, "0.0.0.0", 8080)
    assert parse_config(["--max-queue", "7"], {}).jobs_total == 7
    assert config.space_id == "someone/allegro" and config.zero_gpu
    assert config.zero_gpu_max_seconds == 120
    assert config.shared and not config.per_browser_gallery  # public gallery


@pytest.mark.parametrize("mode", ["model", "group", "sequential"])
def test_zerogpu_refuses_offload_modes_that_move_weights(mode, capsys):
    """spaces moves the packed weights onto the lent GPU itself for each call (spaces 0.51.3
    zero/wrappers.py:147-154): offload hooks have nothing to move there."""
    with pytest.raises(SystemExit):
        parse_config(["--offload", mode], {"SPACES_ZERO_GPU": "true", "SPACE_ID": "a/b"})
    assert f"offload '{mode}' cannot work there" in capsys.readouterr().err


def test_zerogpu_runs_without_offload():
    zero = {"SPACES_ZERO_GPU": "true", "SPACE_ID": "a/b"}
    assert parse_config([], zero).offload == "none"  # auto
    assert parse_config(["--offload", "none"], zero).offload == "none"
    assert parse_config([], {}).offload == "auto"


def test_flags_win_over_environment():
    environ = {"GRADIO_SERVER_PORT": "9000", "PORT": "8080", "ALLEGRO_PREVIEW": "yes"}
    assert parse_config([], environ).port == 9000  # GRADIO_SERVER_PORT before PORT
    config = parse_config(["--port", "7000", "--no-preview", "--model", "/m"], environ)
    assert (config.port, config.preview, config.model) == (7000, False, "/m")


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        ([], {"ALLEGRO_MAX_QUEUE": "many"}),
        ([], {"ALLEGRO_PREVIEW": "perhaps"}),
        ([], {"ALLEGRO_OFFLOAD": "disk"}),
        (["--port", "70000"], {}),
        (["--max-queue", "0"], {}),
        (["--precision", "int4"], {}),
        (["--memory-profile", "int4"], {}),
        ([], {"ALLEGRO_MEMORY_PROFILE": "tiny"}),
        (["--memory-profile", "low-memory", "--offload", "sequential"], {}),
        (["--memory-profile", "fp8-transformer", "--compile"], {}),
        (["--memory-profile", "low-memory"], {"SPACES_ZERO_GPU": "true"}),
    ],
)
def test_bad_values_exit_with_a_usage_error(argv, environ, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv, environ)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("lab", False)],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_gallery_is_per_browser_when_shared_unless_public():
    assert parse_config(["--share"], {}).per_browser_gallery
    assert parse_config(["--host", "0.0.0.0"], {}).per_browser_gallery
    assert parse_config([], {"SPACE_ID": "a/b"}).per_browser_gallery
    assert not parse_config(["--share", "--public-gallery"], {}).per_browser_gallery


# ---- presets and controls ----------------------------------------------------------------


def test_every_length_and_size_choice_is_accepted_by_the_engine():
    for _label, length in length_choices(NATIVE):
        for _label, size in size_choices(NATIVE):
            request = ControlValues(prompt="a cat", length=length, size=size).to_request()
            check_request(request)
            resolved = resolve_request(request, NATIVE)
            assert resolved.frames in ACCEPTED_FRAMES


def test_model_default_labels_name_the_native_size():
    assert length_choices(NATIVE)[0] == ("Model default (88 frames, 5.9 s)", MODEL_DEFAULT)
    assert size_choices(NativeSize(24, 160, 160))[0] == ("Model default (160x160)", MODEL_DEFAULT)
    assert length_choices(None)[0] == ("Model default", MODEL_DEFAULT)


def test_controls_map_to_a_request():
    controls = ControlValues(
        prompt="Pink fish swim in the sea",
        negative_prompt="blurry",
        seed=42,
        steps=30,
        guidance_scale=5.0,
        length="40",
        size="368x640",
        use_template=False,
        interpolate=True,
        interpolation_method="blend",
        fast_mode=True,
    )
    assert controls.to_request() == GenerationRequest(
        prompt="Pink fish swim in the sea",
        negative_prompt="blurry",
        seed=42,
        steps=30,
        guidance_scale=5.0,
        frames=40,
        height=368,
        width=640,
        use_template=False,
        interpolate=True,
        interpolation_method="blend",
        fast_mode=True,
    )
    defaults = ControlValues(prompt="x", interpolation_method="flow").to_request()
    assert (defaults.frames, defaults.height, defaults.width) == (None, None, None)
    assert defaults.interpolation_method is None  # the toggle is off


def _settings_of(controls: ControlValues, native: NativeSize = NATIVE) -> dict:
    """Settings as the engine saves them for a request made from ``controls``."""
    request = resolve_request(controls.to_request(), native)
    settings = {
        key: getattr(request, key)
        for key in (
            "prompt",
            "negative_prompt",
            "seed",
            "steps",
            "guidance_scale",
            "frames",
            "height",
            "width",
            "use_template",
            "fast_mode",
        )
    }
    method = request.interpolation_method
    settings["interpolation"] = {"method": method, "fps": 30} if request.interpolate else None
    return settings


def test_saved_settings_load_back_into_the_same_controls():
    controls = ControlValues(
        prompt="An astronaut riding a horse",
        negative_prompt="",
        seed=7,
        steps=50,
        guidance_scale=9.0,
        length="40",
        size="640x368",
        use_template=False,
        interpolate=True,
        interpolation_method="blend",
        fast_mode=True,
    )
    loaded = controls_from_settings(_settings_of(controls), NATIVE)
    assert loaded.values == controls and loaded.notes == ()


def test_native_size_loads_as_model_default_and_odd_sizes_get_a_note():
    native = NativeSize(24, 160, 160)
    loaded = controls_from_settings(_settings_of(ControlValues(prompt="x", seed=1), native), native)
    assert (loaded.values.length, loaded.values.size) == (MODEL_DEFAULT, MODEL_DEFAULT)
    odd = {"prompt": "x", "seed": 1, "frames": 40, "height": 512, "width": 512}
    loaded = controls_from_settings(odd, NATIVE)
    assert (loaded.values.length, loaded.values.size) == ("40", MODEL_DEFAULT)
    assert loaded.notes == ("512x512 is not an available size; using the model default.",)
    assert loaded.values.negative_prompt == DEFAULT_NEGATIVE_PROMPT  # older files lack it


def test_all_size_presets_are_offered():
    offered = {value for _label, value in size_choices(None)}
    assert {f"{p.height}x{p.width}" for p in SIZE_PRESETS} <= offered


# ---- gallery folder ---------------------------------------------------------------------


def _make_video(folder: Path, name: str, created: datetime, owner: str | None = None) -> Path:
    settings = {"prompt": f"prompt of {name}", "seed": 1, "created": created.isoformat()}
    if owner is not None:
        settings["labels"] = {gallery.OWNER_LABEL: owner}
    (folder / f"{name}.json").write_text(json.dumps(settings))
    (folder / f"{name}.jpg").write_bytes(b"jpeg")
    video = folder / f"{name}.mp4"
    video.write_bytes(b"mp4")
    return video


@pytest.fixture
def videos(tmp_path) -> Path:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    _make_video(tmp_path, "b-middle", start + timedelta(hours=1), owner="alice-owner-1")
    _make_video(tmp_path, "a-newest", start + timedelta(hours=2), owner="bob-owner-22")
    _make_video(tmp_path, "c-oldest", start, owner="alice-owner-1")
    _make_video(tmp_path, "d-cli", start - timedelta(days=1))  # made by the CLI: no owner
    (tmp_path / "no-video.json").write_text(json.dumps({"prompt": "x"}))  # mp4 missing
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.mp4").write_bytes(b"mp4")
    (tmp_path / ".x.partial.json").write_text(json.dumps({"prompt": "x"}))
    (tmp_path / ".x.partial.mp4").write_bytes(b"")
    return tmp_path


def test_gallery_lists_complete_videos_newest_first(videos):
    names = [entry.name for entry in gallery.list_entries(videos)]
    assert names == ["a-newest", "b-middle", "c-oldest", "d-cli"]
    newest = gallery.list_entries(videos)[0]
    assert newest.poster == videos / "a-newest.jpg" and newest.owner == "bob-owner-22"
    assert newest.caption == "prompt of a-newest · seed 1"


def test_gallery_filters_by_owner(videos):
    assert [e.name for e in gallery.list_entries(videos, "alice-owner-1")] == [
        "b-middle",
        "c-oldest",
    ]
    assert gallery.list_entries(videos, "nobody-at-all") == []
    assert gallery.list_entries(videos / "missing") == []


def test_delete_removes_all_three_files_of_ones_own_video(videos):
    gallery.delete_entry(videos, "b-middle", "alice-owner-1")
    assert not any(videos.glob("b-middle.*"))
    with pytest.raises(gallery.GalleryError):
        gallery.delete_entry(videos, "a-newest", "alice-owner-1")  # bob's
    assert len(list(videos.glob("a-newest.*"))) == 3
    gallery.delete_entry(videos, "a-newest", None)  # an unshared gallery: anyone may


@pytest.mark.parametrize(
    "name", ["../outside", "a/b", "/etc/passwd", ".x.partial", "..", "", "x\x00y"]
)
def test_names_that_could_leave_the_folder_are_refused(videos, name):
    with pytest.raises(gallery.GalleryError):
        gallery.delete_entry(videos, name, None)
    with pytest.raises(gallery.GalleryError):
        gallery.find_entry(videos, name, None)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    outside, folder = tmp_path / "outside", tmp_path / "videos"
    outside.mkdir()
    folder.mkdir()
    secret = _make_video(outside, "secret", datetime.now(timezone.utc))
    (folder / "secret.json").symlink_to(secret.with_suffix(".json"))
    (folder / "secret.mp4").symlink_to(secret)
    with pytest.raises(gallery.GalleryError):
        gallery.delete_entry(folder, "secret", None)
    assert secret.exists()


def test_links_in_the_folder_are_never_listed_nor_followed(tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"someone else's file")
    folder = tmp_path / "videos"
    folder.mkdir()
    _make_video(folder, "real", datetime.now(timezone.utc))
    (folder / "linked.mp4").symlink_to(outside)
    (folder / "linked.json").write_text('{"prompt": "linked"}')
    assert [entry.name for entry in gallery.list_entries(folder)] == ["real"]
    with pytest.raises(gallery.GalleryError):
        gallery.find_entry(folder, "linked", None)


def test_crash_leftovers_are_found_and_complete_videos_kept(videos):
    (videos / ".a-newest.x1.partial.mp4").write_bytes(b"half")
    (videos / "lost.json").write_text("{}")
    (videos / "lost.jpg").write_bytes(b"poster")
    (videos / "lost.first.png").write_bytes(b"input image")
    (videos / "lost.last.png").write_bytes(b"input image")
    (videos / "a-newest.first.png").write_bytes(b"input image")  # its video exists: kept
    (videos / ".taken.mp4.reserved").write_bytes(b"")
    removed = remove_leftovers(videos)
    assert sorted(path.name for path in removed) == [
        ".a-newest.x1.partial.mp4",
        ".taken.mp4.reserved",
        ".x.partial.json",
        ".x.partial.mp4",
        "lost.first.png",
        "lost.jpg",
        "lost.json",
        "lost.last.png",
        "no-video.json",
    ]
    assert (videos / "a-newest.first.png").is_file()
    assert len(gallery.list_entries(videos)) == 4
    assert (videos / "a-newest.first.png").is_file()


def test_input_images_belong_to_their_video(videos):
    """Input images are found from the entry's own name (never a path in the settings),
    and deleting the video deletes them."""
    settings = json.loads((videos / "b-middle.json").read_text())
    settings.update(first_image="../../etc/passwd", last_image="b-middle.last.png")
    (videos / "b-middle.json").write_text(json.dumps(settings))
    (videos / "b-middle.first.png").write_bytes(b"png")
    entry = gallery.find_entry(videos, "b-middle", "alice-owner-1")
    assert entry.input_images == {"first_image": videos / "b-middle.first.png"}
    gallery.delete_entry(videos, "b-middle", "alice-owner-1")
    assert not any(videos.glob("b-middle*"))


def test_history_record_uses_the_urls_it_is_given(videos):
    record = gallery.history_record(gallery.list_entries(videos)[0], "/v", None)
    assert record["name"] == "a-newest" and record["video"] == "a-newest.mp4"
    assert (record["video_url"], record["poster_url"]) == ("/v", None)
    assert record["settings"]["prompt"] == "prompt of a-newest"


# ---- estimates and ZeroGPU ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0 s"),
        (42, "42 s"),
        (185, "3 min 5 s"),
        (180, "3 min"),
        (1203, "20 min"),
        (3900, "1 h 5 min"),
        (7200, "2 h"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_official_video_takes_about_20_minutes_on_an_h100():
    seconds = estimate_seconds(H100, RequestShape(88, 720, 1280, steps=100))
    assert 17 * 60 < seconds < 23 * 60
    assert cost_hint(seconds, H100) == "About 20 min on this H100 SXM (estimate)."
    assert estimate_seconds(H100, RequestShape(88, 720, 1280, 100, fast_mode=True)) < seconds
    assert estimate_seconds(H100, RequestShape(40, 368, 640, 100)) < seconds / 10


def test_hint_gives_time_and_memory_for_the_chosen_options():
    plain = estimate_seconds(H100, RequestShape(88, 720, 1280, 100))
    cached = estimate_seconds(H100, RequestShape(88, 720, 1280, 100, step_cache=True))
    assert plain / 1.3 < cached < plain / 1.2  # 80% of the blocks, cache-dit's Allegro run
    low = Hardware("NVIDIA H100 80GB HBM3", memory_profile="low-memory")
    memory = estimate_memory_bytes(low, RequestShape(88, 720, 1280, step_cache=True))
    assert memory < estimate_memory_bytes(H100, RequestShape(88, 720, 1280))
    hint = cost_hint(cached, low, memory, options_note(True, "low-memory"))
    assert hint.startswith("About 16 min, about 19.1 GB of GPU memory on this H100 SXM")
    assert "1.36x" in hint and "not measured here" in hint and "8-bit T5" in hint
    assert options_note(False, "off") == ""
    assert parse_config(["--memory-profile", "int8-text-encoder"], {}).memory_profile == (
        "int8-text-encoder"
    )


def test_a_zerogpu_slice_is_slower_than_the_whole_gpu():
    whole = estimate_seconds(Hardware("NVIDIA H200"), RequestShape(88, 720, 1280, 100))
    assert estimate_seconds(ZERO_GPU, RequestShape(88, 720, 1280, 100)) == pytest.approx(
        whole * 7 / 3
    )


def test_no_estimate_on_the_cpu():
    cpu = Hardware(None)
    assert estimate_seconds(cpu, RequestShape(24, 160, 160, 2)) is None
    assert "CPU" in cost_hint(None, cpu)
    assert cost_hint(None, None) == ""


def _zero_gpu_estimate(shape: RequestShape):
    return estimate_seconds(ZERO_GPU, shape)


def test_gpu_duration_adds_a_margin():
    assert gpu_duration(100, default=300) == 155
    assert gpu_duration(None, default=300) == 300


def test_zerogpu_refuses_a_long_request_and_proposes_settings_that_fit():
    official = resolve_request(GenerationRequest("a cat", seed=1), NATIVE)
    with pytest.raises(InvalidRequestError) as refusal:
        check_fits(official, _zero_gpu_estimate, limit=300, default=300)
    message = str(refusal.value)
    assert "at most 5 min" in message and "Settings that fit:" in message
    options = fitting_options(official, _zero_gpu_estimate, limit=300, default=300)
    assert options, "the 360p draft always fits in five minutes"
    for option in options:
        assert option.describe() in message
        shape = RequestShape(
            option.frames, option.height, option.width, option.steps, fast_mode=option.fast_mode
        )
        seconds = _zero_gpu_estimate(shape)
        assert gpu_duration(seconds, 300) <= 300


def test_zerogpu_accepts_a_request_that_fits():
    draft = resolve_request(
        GenerationRequest("a cat", seed=1, frames=40, height=368, width=640, steps=30), NATIVE
    )
    assert check_fits(draft, _zero_gpu_estimate, limit=300, default=300) <= 300


def test_zerogpu_says_so_when_nothing_fits():
    draft = resolve_request(GenerationRequest("a cat", seed=1), NATIVE)
    with pytest.raises(InvalidRequestError, match="No setting of this model fits"):
        check_fits(draft, _zero_gpu_estimate, limit=10, default=10)


def _generation(request: GenerationRequest, labels, cancel=None):
    yield request


def test_outside_spaces_generation_is_not_wrapped(monkeypatch):
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    assert wrap_for_spaces(_generation, lambda *a: 60, {}, RuntimeError) is _generation
    assert "spaces" not in sys.modules


def test_on_a_space_generation_runs_in_spaces_gpu_with_a_computed_duration(monkeypatch):
    calls = []

    def fake_gpu(duration):
        def decorate(function):
            calls.append((function, duration))
            return function

        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))

    def duration(request, labels, cancel=None):
        return request.steps * 2

    space = {"SPACE_ID": "a/b"}
    assert wrap_for_spaces(_generation, duration, space, RuntimeError) is _generation
    assert calls == [(_generation, duration)]
    # On ZeroGPU what spaces runs in its worker turns every error into the page's error.
    zero = wrap_for_spaces(_generation, duration, {**space, "SPACES_ZERO_GPU": "1"}, RuntimeError)
    assert calls[-1] == (zero, duration) and zero is not _generation


# ---- model choice and status -----------------------------------------------------------------


def _config(**changes) -> AppConfig:
    return AppConfig(**{**parse_config([], {}).__dict__, **changes})


def test_model_choice():
    ti2v = "rhymes-ai/Allegro-TI2V"
    assert choose_model(_config(), has_cuda=True) == ModelChoice(
        "rhymes-ai/Allegro", None, False, ti2v
    )
    assert choose_model(_config(), has_cuda=False) == ModelChoice("", None, True, PREVIEW_TI2V)
    assert choose_model(_config(preview=True), has_cuda=True).ti2v_model == PREVIEW_TI2V
    assert choose_model(_config(model="/models/a"), has_cuda=False) == ModelChoice(
        "/models/a", None, False
    )
    assert choose_model(_config(model="allegro-40x360p"), has_cuda=True) == ModelChoice(
        "rhymes-ai/Allegro", "rhymes-ai/Allegro-T2V-40x360P", False, ti2v
    )
    # The TI2V model as the main one serves image requests itself.
    assert choose_model(_config(model="allegro-ti2v"), has_cuda=True).ti2v_model is None


def test_image_to_video_model_choice():
    """--ti2v-model: a preset, a folder, or none (text to video only)."""
    folder = _config(model="/models/a", ti2v_model="/models/t")
    assert choose_model(folder, has_cuda=False).ti2v_model == "/models/t"
    preset = _config(ti2v_model="allegro-ti2v", preview=True)
    assert choose_model(preset, has_cuda=False).ti2v_model == "rhymes-ai/Allegro-TI2V"
    for has_cuda in (True, False):
        assert choose_model(_config(ti2v_model="none"), has_cuda).ti2v_model is None
    assert parse_config(["--ti2v-model", "none"], {}).ti2v_model == "none"
    assert parse_config([], {"ALLEGRO_TI2V_MODEL": "/m"}).ti2v_model == "/m"


def test_preview_mode_serves_image_to_video(tmp_path, monkeypatch):
    """The preview model's image-to-video twin is made once beside it, and image requests
    are routed to it."""
    made = []

    def fake_make_tiny(directory, ti2v=False):
        made.append(ti2v)
        (Path(directory) / "model_index.json").write_text("{}")

    class FakeEngine:
        def __init__(self, spec, output_dir, weights, cache=None, ti2v_spec=None):
            self.spec, self.ti2v_spec = spec, ti2v_spec

        def load(self, on_progress):  # nothing really loaded
            return SimpleNamespace(
                ti2v=False,
                device="cpu",
                device_name="cpu",
                native=None,
                spec=self.spec,
                offload=SimpleNamespace(mode="none", reason="a test"),
            )

    monkeypatch.setattr("allegro.tiny.make_tiny", fake_make_tiny)
    monkeypatch.setattr("allegro.engine.Engine", FakeEngine)
    environ = {"ALLEGRO_PREVIEW_MODEL_DIR": str(tmp_path / "preview-model")}
    loader = ModelLoader(_config(output_dir=tmp_path), environ, has_cuda=lambda: False)
    loader.load()
    engine = loader.engine()
    assert engine.spec.model == str(tmp_path / "preview-model")
    assert engine.ti2v_spec.model == str(tmp_path / "preview-model-ti2v")
    assert made == [False, True]
    loader.load()  # a retry makes nothing again
    assert made == [False, True]
    zero_gpu = ModelLoader(_config(output_dir=tmp_path, zero_gpu=True), environ, lambda: False)
    zero_gpu.load()
    assert zero_gpu.engine().ti2v_spec is None  # no second load inside a lent GPU call


def test_preview_model_folder(tmp_path):
    assert preview_model_dir({"HF_HOME": "/data/hf"}) == Path(
        "/data/hf/allegro-studio/preview-model"
    )
    assert preview_model_dir({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "allegro-studio" / "preview-model"
    )


def test_preview_model_is_made_once_and_atomically(tmp_path, monkeypatch):
    made = []

    def fake_make_tiny(directory, ti2v=False):
        made.append(directory)
        (Path(directory) / "model_index.json").write_text("{}")

    monkeypatch.setattr("allegro.tiny.make_tiny", fake_make_tiny)
    target = tmp_path / "cache" / "preview-model"
    assert ensure_preview_model(target) == target
    assert ensure_preview_model(target) == target
    assert len(made) == 1 and made[0] != target  # written beside, then renamed
    assert sorted(p.name for p in target.parent.iterdir()) == ["preview-model"]


def test_banner_and_button_follow_the_loading():
    preview = ModelChoice("", None, True)
    loading = ModelStatus(
        ModelState(phase=Phase.LOADING, message="Loading the model …", choice=preview)
    )
    assert generate_button(loading) == ("Loading model…", False)
    bytes_so_far = ProgressEvent(Stage.DOWNLOADING, 0.2, 5_000_000_000, 25_000_000_000)
    downloading = ModelStatus(
        ModelState(
            phase=Phase.DOWNLOADING,
            choice=ModelChoice("rhymes-ai/Allegro", None, False),
            progress=bytes_so_far,
        )
    )
    assert "5.0 of 25.0 GB (20%)" in banner_markdown(downloading)
    assert generate_button(downloading) == ("Downloading model…", False)
    ready = ModelStatus(ModelState(phase=Phase.READY, choice=preview), hardware=Hardware(None))
    banner = banner_markdown(ready)
    assert "preview model" in banner and "noise" in banner
    assert "27.5 GB" in banner and "9.3 GB" in banner and "25 GB" in banner
    assert generate_button(ready) == ("Generate", True)
    failed = ModelStatus(ModelState(phase=Phase.FAILED, error="The weights are not in the cache."))
    assert "The weights are not in the cache." in banner_markdown(failed)
    assert generate_button(failed) == ("Model unavailable", False)


# ---- the job runner ---------------------------------------------------------------------


class FakeEngine:
    """Emits ``steps`` progress events (a preview on even steps), then returns or raises."""

    def __init__(self, steps=6, error=None, delay=0.0, release: threading.Event | None = None):
        self.steps, self.error, self.delay, self.release = steps, error, delay, release
        self.emitted = threading.Event()  # every progress event is out

    def generate(self, request, on_progress, cancel, labels=None):
        for step in range(1, self.steps + 1):
            time.sleep(self.delay)
            cancel.raise_if_cancelled()
            preview = np.full((2, 2, 3), step, np.uint8) if step % 2 == 0 else None
            on_progress(
                ProgressEvent(
                    Stage.DENOISING, step / (self.steps + 1), step, self.steps, preview=preview
                )
            )
        self.emitted.set()
        if self.release is not None:
            self.release.wait(5)
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(labels=labels, seed=request.seed)


def test_stream_yields_progress_then_the_result():
    items = list(
        stream_generation(
            FakeEngine(), GenerationRequest("x", seed=3), {"owner": "o"}, CancelToken()
        )
    )
    *events, result = items
    assert all(isinstance(event, ProgressEvent) for event in events)
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert result.labels == {"owner": "o"} and result.seed == 3


def test_a_slow_consumer_skips_stale_progress_but_keeps_the_latest_preview():
    release = threading.Event()
    engine = FakeEngine(steps=7, release=release)
    stream = stream_generation(engine, GenerationRequest("x", seed=1), {}, CancelToken())
    first = next(stream)
    assert engine.emitted.wait(5)  # every other event is queued meanwhile
    latest = next(stream)
    assert first.step == 1 and latest.step == 7
    assert latest.preview is not None and latest.preview[0, 0, 0] == 6  # from step 6
    release.set()
    assert next(stream).seed == 1  # the result is never skipped


def test_engine_errors_come_out_of_the_stream():
    stream = stream_generation(
        FakeEngine(error=InvalidRequestError("bad")), GenerationRequest("x"), {}, CancelToken()
    )
    with pytest.raises(InvalidRequestError, match="bad"):
        list(stream)


def test_closing_the_stream_early_cancels_the_engine():
    token = CancelToken()
    stream = stream_generation(FakeEngine(steps=100, delay=0.01), GenerationRequest("x"), {}, token)
    next(stream)
    stream.close()
    assert token.cancelled


def test_progress_line_has_stage_step_elapsed_and_eta():
    event = ProgressEvent(
        Stage.DENOISING, 0.4, 12, 100, elapsed=65, eta=200, message="Denoising step 12 of 100"
    )
    assert progress_description(event) == (
        "Denoising step 12 of 100 · 1 min 5 s elapsed · about 3 min 20 s left"
    )
    download = ProgressEvent(Stage.DOWNLOADING, 0.0, 2_500_000_000, 25_000_000_000)
    assert progress_description(download).startswith("Downloading weights: 2.5 of 25.0 GB")


def test_ui_modules_do_not_import_torch():
    modules = "ui.config, ui.presets, ui.gallery, ui.estimates, ui.zerogpu, ui.zerogpu_jobs, "
    modules += "ui.model_status, ui.formatting"
    code = f"import sys, {modules}; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# ---- the handlers' checks, with a stand-in for the loaded model ---------------------------


class LoadedOn:
    """A ModelLoader stand-in: the model is loaded with this native size on this hardware."""

    def __init__(self, hardware: Hardware, native: NativeSize = NATIVE) -> None:
        self._status = ModelStatus(ModelState(phase=Phase.READY, native=native), hardware=hardware)

    def status(self) -> ModelStatus:
        return self._status


def test_zerogpu_requests_are_checked_before_queueing_and_get_a_duration():
    from ui.studio import Studio

    config = _config(zero_gpu=True, space_id="a/b", zero_gpu_max_seconds=300)
    studio = Studio(config, LoadedOn(ZERO_GPU), environ={})
    with pytest.raises(InvalidRequestError, match="Settings that fit"):
        studio.prepare(GenerationRequest("a cat"))
    draft = studio.prepare(GenerationRequest("a cat", frames=40, height=368, width=640, steps=30))
    assert draft.seed is not None  # resolved: the seed is fixed before the run
    expected = gpu_duration(_zero_gpu_estimate(RequestShape(40, 368, 640, 30)), 300)
    assert studio._gpu_seconds(draft, {}) == expected < 300


def test_requests_are_resolved_with_the_loaded_models_native_size():
    from ui.studio import Studio

    studio = Studio(_config(), LoadedOn(Hardware(None), NativeSize(24, 160, 160)), environ={})
    request = studio.prepare(GenerationRequest("a cat", seed=5))
    assert (request.frames, request.height, request.width, request.seed) == (24, 160, 160, 5)
    with pytest.raises(InvalidRequestError, match="Allegro cannot make 50 frames"):
        studio.prepare(GenerationRequest("a cat", frames=50))


def test_method_labels_say_why_a_method_is_unavailable_or_slow(tmp_path):
    from ui.model_status import _interpolation_methods

    weights = tmp_path / "ours_t.pkl"
    weights.write_bytes(b"weights")
    on_cpu = {choice.name: choice.label for choice in _interpolation_methods(str(weights), False)}
    assert on_cpu["flow"] == "flow"
    assert on_cpu["ema-vfi"] == "ema-vfi (slow without a GPU: seconds per frame)"
    on_gpu = {choice.name: choice.label for choice in _interpolation_methods(str(weights), True)}
    assert on_gpu["ema-vfi"] == "ema-vfi"
    missing = {c.name: c.label for c in _interpolation_methods(str(tmp_path / "none.pkl"), False)}
    assert missing["ema-vfi"].startswith("ema-vfi (unavailable: ")


def test_the_jobs_database_defaults_to_a_hidden_file_in_the_output_folder(tmp_path):
    config = parse_config(["--output-dir", str(tmp_path)], {})
    assert config.jobs_db_path == tmp_path.resolve() / ".allegro-jobs.sqlite"
    moved = parse_config(["--jobs-db", str(tmp_path / "q.sqlite")], {})
    assert moved.jobs_db_path == (tmp_path / "q.sqlite").resolve()
    assert (
        parse_config([], {"ALLEGRO_JOBS_DB": str(tmp_path / "e.sqlite")}).jobs_db
        == (tmp_path / "e.sqlite").resolve()
    )


def test_a_zerogpu_slice_is_timed_by_the_multiprocessors_it_got():
    """ZeroGPU reports the whole card's name, "NVIDIA H200", with 60 of its 132 SMs
    (spaces 0.51.3 zero/configs.json, zero/torch/static.py:22-29)."""
    whole = estimate_seconds(Hardware("NVIDIA H200"), RequestShape(88, 720, 1280, 100))
    lent = Hardware("NVIDIA H200", multiprocessors=60)
    assert estimate_seconds(lent, RequestShape(88, 720, 1280, 100)) == pytest.approx(
        whole * 132 / 60
    )


def test_the_hint_says_when_fast_mode_will_be_switched_off():
    """A 24 GB card with group offload: fast mode's 23.4 GB attention cache cannot fit at
    88x720x1280, and can at 40x368x640 (2.7 GB)."""
    from ui.studio import Studio

    card = Hardware("NVIDIA GeForce RTX 4090", offload="group", gpu_memory_bytes=24 * 10**9)
    studio = Studio(_config(), LoadedOn(card), environ={})
    hint = studio.hint(100, MODEL_DEFAULT, MODEL_DEFAULT, True)
    assert "Fast mode will be switched off" in hint and "23.4 GB" in hint
    assert "Fast mode" not in studio.hint(100, MODEL_DEFAULT, MODEL_DEFAULT, False)
    assert "Fast mode" not in studio.hint(100, "40", "368x640", True)


def test_a_gpu_that_torch_cannot_use_fails_loudly(tmp_path):
    """A container started with --gpus on a host whose driver is too old for torch's CUDA
    sees /dev/nvidia0 while torch.cuda.is_available() is False: say so, do not serve the
    preview model as if nothing were wrong."""
    loader = ModelLoader(
        _config(output_dir=tmp_path),
        environ={},
        has_cuda=lambda: False,
        visible_gpus=lambda: ["/dev/nvidia0"],
    )
    loader.load()
    status = loader.status()
    assert status.phase == Phase.FAILED
    assert "/dev/nvidia0" in status.error and "driver 580" in status.error
    assert "--preview" in status.error


# ---- image to video on the page ---------------------------------------------------------------


def test_image_mode_needs_a_first_frame_and_text_mode_ignores_images():
    from ui.presets import IMAGE_TO_VIDEO

    with pytest.raises(InvalidRequestError, match="needs a first frame"):
        ControlValues(prompt="x", task=IMAGE_TO_VIDEO, last_image="/u/b.png").to_request()
    request = ControlValues(prompt="x", task=IMAGE_TO_VIDEO, first_image="/u/a.png").to_request()
    assert request.first_image == "/u/a.png" and request.image_to_video
    assert not ControlValues(prompt="x", first_image="/u/a.png").to_request().image_to_video


def test_switching_task_shows_the_image_inputs_and_the_official_guidance(tmp_path):
    from ui.presets import IMAGE_TO_VIDEO, TEXT_TO_VIDEO
    from ui.studio import Studio

    studio = Studio(_config(output_dir=tmp_path), LoadedOn(Hardware(None)), environ={})
    shown, guidance = studio.switch_task(IMAGE_TO_VIDEO, 7.5)
    assert shown["visible"] and guidance == 8.0
    assert studio.switch_task(TEXT_TO_VIDEO, 8.0)[1] == 7.5
    assert studio.switch_task(IMAGE_TO_VIDEO, 5.0)[1] == 5.0  # the user's own value stays


def test_crop_preview_is_the_engines_crop_at_the_chosen_size(tmp_path):
    import gradio as gr
    from PIL import Image

    from ui.studio import Studio

    studio = Studio(_config(output_dir=tmp_path), LoadedOn(Hardware(None)), environ={})
    wide = np.random.default_rng(0).integers(0, 255, (360, 1280, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    square = studio.crop_preview(str(tmp_path / "wide.png"), "720x720")
    assert square.shape == (720, 720, 3)
    # A centre crop (then a resize): the middle of the wide image, not a squashed whole.
    centre = np.asarray(Image.fromarray(wide[:, 460:820]).resize((720, 720)))
    assert np.abs(square.astype(int) - centre.astype(int)).mean() < 40
    assert studio.crop_preview(str(tmp_path / "wide.png"), "default").shape == (720, 1280, 3)
    assert studio.crop_preview(None, "default") is None
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(gr.Error, match="not an image"):
        studio.crop_preview(str(tmp_path / "bad.png"), "default")


def test_settings_naming_input_images_resolve_only_to_the_callers_own(videos):
    (videos / "b-middle.first.png").write_bytes(b"png")
    settings = json.loads((videos / "b-middle.json").read_text())
    settings["first_image"] = "b-middle.first.png"
    (videos / "b-middle.json").write_text(json.dumps(settings))
    named = {"first_image": "b-middle.first.png"}
    assert gallery.images_named(videos, named, "alice-owner-1") == {
        "first_image": videos / "b-middle.first.png"
    }
    for owner, wrong in (
        ("bob-owner-22", named),  # not his
        (None, {"first_image": "../b-middle.first.png"}),
        (None, {"first_image": "/etc/passwd"}),
        (None, {"last_image": "a-newest.last.png"}),  # no such image
        (None, {"first_image": 7}),
    ):
        with pytest.raises(gallery.GalleryError):
            gallery.images_named(videos, wrong, owner)


@pytest.mark.parametrize(
    "options",
    [
        {"guidance_scale": 7.5, "fast_mode": True},
        {"guidance_scale": 7.5, "step_cache": True},
        {"guidance_scale": 1.0, "step_cache": True},  # no guidance: the transformer runs once
    ],
)
def test_the_engine_eta_the_page_hint_and_the_zerogpu_duration_agree(options):
    """One estimator for the three: the engine's ETA as denoising starts (the whole video
    less the prompts' encoding), the page's hint and ZeroGPU's duration, for the same
    request (guidance, fast mode, the step cache) on the same loaded model."""
    from types import SimpleNamespace

    from allegro import costs
    from allegro.engine import estimated_seconds, loaded_hardware
    from allegro.loading import AppliedOffload, PipelineSpec
    from ui.estimates import request_hint
    from ui.presets import TEXT_TO_VIDEO
    from ui.studio import Studio

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
    request = resolve_request(
        GenerationRequest("a cat", seed=1, frames=40, steps=50, **options), NATIVE
    )
    hardware = loaded_hardware(loaded)
    estimate = costs.estimate_request(costs.request_shape(request), hardware)
    plain = costs.estimate_request(RequestShape(40, 720, 1280, 50), hardware)
    assert estimate.total_seconds < plain.total_seconds  # every option saves time here

    assert estimated_seconds(loaded, request) == pytest.approx(
        estimate.total_seconds - estimate.text_encoder_seconds
    )
    config = _config(zero_gpu=True, space_id="a/b", zero_gpu_max_seconds=10**6)
    studio = Studio(config, LoadedOn(hardware), environ={})
    page = studio.hint(
        request.steps,
        "40",
        MODEL_DEFAULT,
        request.fast_mode,
        request.step_cache,
        request.guidance_scale,
        TEXT_TO_VIDEO,
    )
    assert page == request_hint(hardware, costs.request_shape(request))
    assert f"About {format_duration(estimate.total_seconds)}" in page
    assert studio._gpu_seconds(request, {}) == gpu_duration(estimate.total_seconds, 10**6)


def test_a_model_ready_on_a_ray_cluster_offers_the_interpolation_methods(tmp_path):
    """On a Ray cluster nothing is loaded in this process: the ready state has no pipeline,
    only the workers' devices. It is still ready, so the 30 fps toggle and its methods show."""
    from types import SimpleNamespace

    from ui.studio import Studio

    loader = ModelLoader(_config(output_dir=tmp_path), environ={}, has_cuda=lambda: False)
    worker = DeviceStatus("node-1 cuda", True, "none", "auto: no offload", "bf16", "NVIDIA H100")
    on_ray = ModelState(
        Phase.READY, "Ready", ModelChoice("rhymes-ai/Allegro", None, False), native=NATIVE,
        devices=(worker, worker), cluster="10.0.0.1:6379",
    )  # fmt: skip
    loader.manager = SimpleNamespace(state=lambda: on_ray)
    status = loader.status()
    assert status.ready and status.hardware is None
    methods = {choice.name for choice in status.interpolation or ()}
    assert methods and "ema-vfi" in methods
    outputs = Studio(_config(output_dir=tmp_path), loader, environ={}).poll_status(
        50, MODEL_DEFAULT, MODEL_DEFAULT, False
    )
    interpolation_row = outputs[6]
    assert interpolation_row["visible"] is True
    assert "ready on the Ray cluster at 10.0.0.1:6379: 2 workers" in outputs[0]
