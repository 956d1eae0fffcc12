"""The declaration of the generation parameters (allegro/params.py) is the one source: every
declared parameter reaches every surface (the page, /generate, /submit, the CLI, the saved
settings, Reuse settings, a dropped MP4) with its value unchanged, and a parameter added to
the declaration appears on the API and the CLI with no other edit."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from allegro import cli, params
from allegro.errors import InvalidRequestError
from allegro.params import Kind, Param, Task
from allegro.request import GenerationRequest, NativeSize, check_request
from allegro.settings import (
    ContinuationRecord,
    InterpolationRecord,
    VideoSettings,
    request_record,
)
from ui import api_params
from ui.controls import make_control, page_validations
from ui.gallery_page import GalleryPage
from ui.presets import ControlValues, control_names, request_from_settings

NATIVE = NativeSize(88, 720, 1280)

# A value for each declared parameter that differs from its default (and, for the page,
# that its control can hold). Two sets: fast mode and the step cache are alternatives.
PROBE = {
    "prompt": "A kite over dunes",
    "negative_prompt": "blurry",
    "seed": 4242,
    "steps": 7,
    "guidance_scale": 5.5,
    "frames": 40,
    "height": 368,
    "width": 640,
    "use_template": False,
    "interpolate": True,
    "interpolation_method": "blend",
    "fast_mode": True,
    "step_cache": False,
    "first_image": "clip.first.png",  # files: names under a folder each test picks
    "last_image": "clip.last.png",
    "continue_video": "earlier.mp4",
    "overlap_frames": 4,
    "original_prompt": "a kite",  # set by the server (prompt help), saved and read back
}
PROBES = (PROBE, {**PROBE, "fast_mode": False, "step_cache": True})


def _declared(*tasks: Task) -> list[Param]:
    return list(params.params_for(*tasks)) if tasks else list(params.params())


def _new_video(probe: dict) -> dict:
    """The probe's values of a new video's parameters (text or images)."""
    return {p.name: probe[p.name] for p in _declared(Task.TEXT, Task.IMAGE)}


def test_every_declared_parameter_has_a_probe_value_unlike_its_default():
    for declared in params.params():
        assert declared.name in PROBE, f"add a probe value for {declared.name} to this test"
        assert any(probe[declared.name] != declared.default for probe in PROBES), declared.name


def test_the_request_is_the_declaration():
    fields = dataclasses.fields(GenerationRequest)
    assert [f.name for f in fields] == [p.name for p in params.params()]
    for f, declared in zip(fields, params.params(), strict=True):
        if not declared.required:
            assert f.default == declared.default


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """Files in Gradio's upload folder (where a caller's uploads are), by probe name."""
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    from gradio.utils import get_upload_folder

    base = Path(get_upload_folder())
    paths = {}
    for declared in params.params():
        if declared.kind is Kind.FILE:
            path = base / "upload" / PROBE[declared.name]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            paths[declared.name] = str(path)
    return paths


@pytest.mark.parametrize("probe", PROBES)
def test_every_parameter_goes_through_generate_and_submit_by_name(probe, uploads):
    """/generate's and /submit's signatures hold every new-video parameter, and the values
    a caller sends (positionally, as Gradio calls) reach the request unchanged."""
    received = []

    async def handler(values, request):
        received.append(api_params.request_from_api(values))

    generate = api_params.api_endpoint(handler, "doc")
    names = list(inspect.signature(generate).parameters)
    expected = {p.name: probe[p.name] for p in _declared(Task.TEXT, Task.IMAGE)}
    sent = {}
    for declared in _declared(Task.TEXT, Task.IMAGE):
        assert declared.api in names, f"/generate lacks {declared.name}"
        value = probe[declared.name]
        if declared.kind is Kind.FILE:
            value = {"path": uploads[declared.name], "meta": {"_type": "gradio.FileData"}}
            expected[declared.name] = uploads[declared.name]
        sent[declared.api] = value
    asyncio.run(generate(*(sent.get(name) for name in names)))
    request = received[0]
    for name, value in expected.items():
        assert getattr(request, name) == value, name

    # The real endpoints: the Studio's /generate and its validator, /submit and its.
    studio = _studio()
    for endpoint in (
        studio.api_generate,
        studio.check_api,
        studio.job_api.submit,
        studio.check_submit_api,
    ):
        assert list(inspect.signature(endpoint).parameters) == names


def _studio():
    from ui.config import parse_config
    from ui.model_status import ModelLoader
    from ui.studio import Studio

    root = Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp"))
    config = parse_config(["--output-dir", str(root / "out"), "--model", str(root / "none")])
    return Studio(config, ModelLoader(config), os.environ, jobs_db=None)


def test_gradio_reads_the_declared_parameters_of_every_endpoint():
    studio = _studio()
    with gr.Blocks() as demo:
        gr.api(studio.api_generate, api_name="generate")
        gr.api(studio.job_api.submit, api_name="submit")
    info = demo.get_api_info()["named_endpoints"]
    for name in ("/generate", "/submit"):
        documented = {p["parameter_name"]: p for p in info[name]["parameters"]}
        for declared in _declared(Task.TEXT, Task.IMAGE):
            assert declared.api in documented, f"{name} lacks {declared.name}"
            if not declared.required:
                assert documented[declared.api]["parameter_default"] == declared.default
        assert "request" not in documented  # Gradio fills it in


@pytest.mark.parametrize("probe", PROBES)
def test_every_parameter_has_a_cli_flag_that_keeps_its_value(probe, tmp_path):
    def flags(task: Task, skip: set) -> list[str]:
        argv = []
        for declared in _declared(task):
            if declared.name in skip:
                continue
            value = probe[declared.name]
            if declared.kind is Kind.BOOL:
                if value != declared.default:
                    argv.append(declared.flag)
            else:
                argv += [declared.flag, str(value)]
        return argv

    new_video = set()
    for task in (Task.TEXT, Task.IMAGE):
        new_video |= {p.name for p in _declared(task)}
    args = cli._build_parser().parse_args(["generate", *flags(Task.TEXT, set())])
    args2 = cli._build_parser().parse_args(
        ["generate", "--prompt", "x", *flags(Task.IMAGE, {"prompt"})]
    )
    values = {**cli._request_values(args2, Task.IMAGE), **cli._request_values(args, Task.TEXT)}
    extend = cli._build_parser().parse_args(
        ["extend", probe["continue_video"], *flags(Task.EXTEND, {"continue_video"})]
    )
    values.update(cli._request_values(extend, Task.EXTEND))
    values["continue_video"] = str(extend.video)
    for declared in params.params():
        if declared.tasks == params.SET_BY_SERVER:
            assert declared.cli is None and declared.name not in values  # no caller sets it
            continue
        value = values.get(declared.name, declared.default)
        # Numbers are read as text and checked by the request (same messages everywhere).
        assert str(value) == str(probe[declared.name]), f"--{declared.name} lost its value"


def _saved(probe: dict) -> dict:
    """Saved settings as the engine writes them for the probe's request: the plain values,
    and the records (interpolation, step cache, continuation, input images)."""
    request = GenerationRequest(**probe)
    settings = VideoSettings(
        **request_record(request),
        step_cache={"hits": 1} if request.step_cache else None,
        interpolation=(
            InterpolationRecord(request.interpolation_method, 30.0, 15.0)
            if request.interpolate
            else None
        ),
        first_image=Path(request.first_image).name,
        last_image=Path(request.last_image).name,
        continues=ContinuationRecord(Path(request.continue_video).name, request.overlap_frames),
    )
    # What travels: JSON (the MP4's comment, the sidecar), read back.
    return VideoSettings.from_dict(settings.to_dict()).to_dict()


@pytest.mark.parametrize("probe", PROBES)
def test_every_parameter_survives_the_saved_settings(probe):
    saved = _saved(probe)
    fields = {f.name for f in dataclasses.fields(VideoSettings)}
    for declared in params.params():
        assert declared.saved is not None, f"{declared.name} is not saved"
        assert declared.saved.split(".")[0] in fields, f"VideoSettings lacks {declared.name}"
        value = params.saved_value(saved, declared)
        if declared.kind is Kind.FILE:
            value = value and Path(value).name
        assert value == probe[declared.name], declared.name
    again = VideoSettings.from_dict(saved).to_request()
    for declared in params.params():
        if declared.kind is not Kind.FILE:
            assert getattr(again, declared.name) == probe[declared.name], declared.name


class _Services:
    """What the gallery's Reuse and drop need: a loaded model's size, and publishing."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.loader = SimpleNamespace(status=lambda: SimpleNamespace(native=NATIVE))

    def publish(self, path: Path) -> str:
        return f"published/{Path(path).name}"

    def check_interpolation(self, method):
        pass

    def gallery_owner(self, owner):
        return None

    def page_owner(self, token):
        return None


def _page_values(outputs: tuple) -> dict:
    assert len(outputs) == len(control_names())
    return dict(zip(control_names(), outputs, strict=True))


@pytest.mark.parametrize("probe", PROBES)
def test_every_parameter_comes_back_with_reuse_settings_and_a_dropped_mp4(probe, tmp_path):
    from allegro.video import write_video

    page = GalleryPage(_Services(tmp_path))  # type: ignore[arg-type]
    saved = _saved(probe)
    # A video in the gallery with its input images, as the engine leaves it.
    write_video(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8), 15, saved)
    images = {key: tmp_path / probe[key] for key in ("first_image", "last_image")}
    for path in images.values():
        path.write_bytes(b"png")
    reused = _page_values(page._controls_from(saved, "loaded", images))

    dropped = tmp_path / "upload" / "dropped.mp4"
    dropped.parent.mkdir()
    dropped.write_bytes((tmp_path / "clip.mp4").read_bytes())
    from_mp4 = _page_values(page.load_dropped_video(str(dropped)))

    request = request_from_settings(saved)
    check_request(request)  # the dropped video's settings pass the request's checks
    for values in (reused, from_mp4):
        controls = ControlValues(**values)
        made = controls.to_request()
        for declared in _declared(Task.TEXT, Task.IMAGE):
            assert declared.page in control_names(), f"the page has no control for {declared.name}"
            if declared.kind is Kind.FILE:
                continue
            assert getattr(made, declared.name) == probe[declared.name], declared.name
            assert getattr(request, declared.name) == probe[declared.name], declared.name
    for key in images:  # the input images, as copies served to this caller
        assert reused[key] == from_mp4[key] == f"published/{images[key].name}"


def test_every_page_control_is_placed_on_the_page(tmp_path):
    """build_blocks places a control for every name control_names lists (else KeyError)."""
    from ui.layout import build_blocks

    demo = build_blocks(_studio())
    placed = {getattr(block, "label", None) for block in demo.blocks.values()}
    for declared in _declared(Task.TEXT, Task.IMAGE):
        if declared.page == declared.name and declared.kind is not Kind.FILE:
            assert declared.label in placed, declared.name


def test_an_error_marks_the_control_its_field_names():
    inputs = (*control_names(), "owner_id", "job")
    for field, control in (("frames", "length"), ("width", "size"), ("seed", "seed")):
        answer = page_validations(inputs, "bad", field)
        marked = [name for name, check in zip(inputs, answer, strict=True) if not check["is_valid"]]
        assert marked == [control]
    with pytest.raises(InvalidRequestError) as caught:
        check_request(GenerationRequest("x", height=130))
    assert caught.value.field == "height"
    answer = page_validations(inputs, str(caught.value), caught.value.field)
    assert [n for n, c in zip(inputs, answer, strict=True) if not c["is_valid"]] == ["size"]
    answer = api_params.api_validations(str(caught.value), caught.value.field)
    names = [p.api for p in api_params.api_params()]
    assert [n for n, c in zip(names, answer, strict=True) if not c["is_valid"]] == ["height"]


NEW = Param(
    "motion_strength",
    Kind.FLOAT,
    1.0,
    "Motion strength",
    "How much things move.",
    minimum=0.0,
    maximum=2.0,
    saved="motion_strength",
    page="motion_strength",
)


def test_a_parameter_added_to_the_declaration_appears_on_the_api_the_cli_and_the_page(
    monkeypatch,
):
    monkeypatch.setattr(params, "PARAMS", (*params.PARAMS, NEW))

    # The API: Gradio documents it with its default, and a call passes it by name.
    received = {}

    async def handler(values, request):
        received.update(values)

    endpoint = api_params.api_endpoint(handler, "doc")
    with gr.Blocks() as demo:
        gr.api(endpoint, api_name="generate")
    documented = demo.get_api_info()["named_endpoints"]["/generate"]["parameters"]
    new = [p for p in documented if p["parameter_name"] == "motion_strength"]
    assert new and new[0]["parameter_default"] == 1.0
    asyncio.run(endpoint("a cat", motion_strength=1.5))
    assert received["motion_strength"] == 1.5

    # The CLI: a flag named after it, for generate and extend.
    for argv in (["generate", "--prompt", "x"], ["extend", "v.mp4", "--prompt", "x"]):
        args = cli._build_parser().parse_args([*argv, "--motion-strength", "0.5"])
        assert args.motion_strength == "0.5"

    # The page: a control of its own, a slider over its range.
    assert "motion_strength" in control_names()
    with gr.Blocks():
        slider = make_control("motion_strength")
    assert isinstance(slider, gr.Slider)
    assert (slider.minimum, slider.maximum, slider.value) == (0.0, 2.0, 1.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": " "}, "prompt"),
        ({"negative_prompt": "\x00"}, "negative_prompt"),
        ({"seed": -5}, "seed"),
        ({"steps": 0}, "steps"),
        ({"guidance_scale": 99}, "guidance_scale"),
        ({"frames": 50}, "frames"),
        ({"height": 130}, "height"),
        ({"width": 130}, "width"),
        ({"interpolation_method": "magic"}, "interpolation_method"),
        ({"fast_mode": True, "step_cache": True}, "step_cache"),
        ({"last_image": "b.png"}, "last_image"),
        ({"continue_video": "v.mp4", "overlap_frames": 0}, "overlap_frames"),
    ],
)
def test_each_request_error_names_its_field(change, field):
    with pytest.raises(InvalidRequestError) as caught:
        check_request(GenerationRequest(**{"prompt": "a cat", **change}))
    assert caught.value.field == field


def test_an_endpoint_runs_its_validator_first_with_the_same_parameters():
    """gr.api has no validator=: the handler is wrapped (ui.api_params.validated) and keeps
    the declared signature Gradio reads; a problem is refused with the validator's message
    before the handler runs."""
    from ui.api_params import api_endpoint, api_validations, api_validator, validated

    seen = []

    async def handler(values, request):
        seen.append(values["prompt"])
        return "made"

    def check(values, request):
        problem = "Steps must be a whole number." if values["steps"] == "many" else None
        return api_validations(problem, "steps" if problem else None)

    endpoint = api_endpoint(handler, "doc")
    wrapped = validated(endpoint, api_validator(check, "doc"))
    assert inspect.signature(wrapped) == inspect.signature(endpoint)
    assert asyncio.run(wrapped(prompt="a fish")) == "made" and seen == ["a fish"]
    with pytest.raises(gr.Error, match="Steps must be a whole number"):
        asyncio.run(wrapped(prompt="a boat", steps="many"))
    assert seen == ["a fish"]
    with gr.Blocks() as demo:
        gr.api(wrapped, api_name="generate")
    documented = demo.get_api_info()["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in documented][:2] == ["prompt", "negative_prompt"]
