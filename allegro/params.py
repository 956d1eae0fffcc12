"""The generation parameters, declared once.

Every setting a person can give a generation is one ``Param`` below: its type, range or
choices, default, label and help, the tasks that use it and how it is saved with a video.
The request (``allegro.request.GenerationRequest``), the CLI's flags (``allegro.cli``), the
saved settings record (``allegro.settings.VideoSettings``), the API's parameters and the
page's controls (``ui/``) are all made from this list, so a new parameter is one entry here
(plus the engine's use of it, its test and one layout line placing its control).

Pure Python, no Gradio, no torch: it is imported by everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

# Values shared with the checks in allegro.request (which imports them from here).
OFFICIAL_STEPS = 100
OFFICIAL_GUIDANCE = 7.5
OFFICIAL_TI2V_GUIDANCE = 8.0  # single_inference_ti2v.py
DEFAULT_OVERLAP_FRAMES = 8  # frames of an earlier clip that open a continued one
MAX_SEED = 2**32 - 1
STEPS_RANGE = (1, 500)
GUIDANCE_RANGE = (1.0, 20.0)
# The official inference script's negative prompt (model card).
DEFAULT_NEGATIVE_PROMPT = (
    "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
    "fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, "
    "signature, watermark, username, blurry."
)
INTERPOLATION_METHODS = ("flow", "ema-vfi", "blend")


class Kind(Enum):
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"  # one of ``choices`` (text)
    FILE = "file"  # a path on the server (an upload, a video made here)


class Task(Enum):
    TEXT = "text"  # text to video
    IMAGE = "image"  # first (and last) frame + text to video
    EXTEND = "extend"  # continue an earlier clip


ALL_TASKS = frozenset(Task)
# No task takes it from a caller: the server sets it (the original of a prompt it rewrote),
# so no page control, API parameter or CLI flag has it; it is saved and read back.
SET_BY_SERVER: frozenset[Task] = frozenset()
NEW_VIDEO = frozenset({Task.TEXT, Task.IMAGE})

REQUIRED = object()  # the default of a parameter every request must give (the prompt)

_PYTHON_TYPES = {
    Kind.TEXT: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: bool,
    Kind.CHOICE: str,
    Kind.FILE: str,
}


@dataclass(frozen=True)
class Param:
    """One generation parameter.

    ``default`` is the request's default; ``None`` there means "decided when the request is
    resolved" (the model's native size, the task's official guidance, a random seed), and
    ``shown`` is then what a control shows for it. ``saved`` is where the value sits in the
    saved settings (a key, or ``record.key`` inside a nested record), None if it is not
    saved; a BOOL saved as a record (``step_cache``, ``interpolation``) is on when the record
    is there. ``page`` names the page control that holds it (several parameters may share
    one: the length and size dropdowns), None when the page has none. ``cli`` is its flag
    (a BOOL whose default is True gets a flag that turns it off), None when it has none."""

    name: str
    kind: Kind
    default: Any
    label: str
    help: str
    tasks: frozenset[Task] = ALL_TASKS
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    shown: Any = None
    saved: str | None = None
    record: bool = False  # saved inside a record of its own (not a plain value)
    page: str | None = None
    cli: str | None = None
    api_name: str | None = None
    # How the summary line of a saved video shows it: a format of the saved settings
    # (``{name}`` fields), shown when the value is set (a BOOL: when on); None: not shown.
    summary: str | None = None

    @property
    def python_type(self) -> type:
        return _PYTHON_TYPES[self.kind]

    @property
    def optional(self) -> bool:
        """None is a value this parameter accepts (its default is decided later)."""
        return self.default is None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def shown_default(self) -> Any:
        """What a control shows before anyone touches it."""
        return self.shown if self.shown is not None else self.default

    @property
    def api(self) -> str:
        """Its name among the API's parameters."""
        return self.api_name or self.name

    @property
    def plain_saved(self) -> bool:
        """Saved under its own name as the value itself."""
        return self.saved == self.name and not self.record

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


PARAMS: tuple[Param, ...] = (
    Param(
        "prompt",
        Kind.TEXT,
        REQUIRED,
        "Prompt",
        "Describe the video: subject, action, setting, camera, light.",
        saved="prompt",
        page="prompt",
        cli="--prompt",
    ),
    Param(
        "negative_prompt",
        Kind.TEXT,
        None,
        "Negative prompt",
        "What to avoid; by default the official negative prompt.",
        shown=DEFAULT_NEGATIVE_PROMPT,
        saved="negative_prompt",
        page="negative_prompt",
    ),
    Param(
        "seed",
        Kind.INT,
        None,
        "Seed",
        f"0..{MAX_SEED}; empty or -1 picks a new random seed each time (the seed used is shown)",
        minimum=-1,
        maximum=MAX_SEED,
        shown=-1,
        saved="seed",
        page="seed",
        summary="Seed {seed}",
    ),
    Param(
        "steps",
        Kind.INT,
        OFFICIAL_STEPS,
        "Steps",
        f"Denoising steps. Official: {OFFICIAL_STEPS}. Fewer is faster but rougher.",
        minimum=STEPS_RANGE[0],
        maximum=STEPS_RANGE[1],
        saved="steps",
        page="steps",
        summary="{steps} steps",
    ),
    Param(
        "guidance_scale",
        Kind.FLOAT,
        None,
        "Guidance scale",
        f"How closely to follow the prompt. Official: {OFFICIAL_GUIDANCE:g} from text, "
        f"{OFFICIAL_TI2V_GUIDANCE:g} from images.",
        minimum=GUIDANCE_RANGE[0],
        maximum=GUIDANCE_RANGE[1],
        shown=OFFICIAL_GUIDANCE,
        saved="guidance_scale",
        page="guidance_scale",
        cli="--guidance",
        summary="guidance {guidance_scale}",
    ),
    Param(
        "frames",
        Kind.INT,
        None,
        "Frames",
        "Length in frames; default: the model's native length (88).",
        saved="frames",
        page="length",
        summary="{frames} frames at {width}x{height}",
    ),
    Param(
        "height",
        Kind.INT,
        None,
        "Height",
        "Default: the model's native height (720).",
        tasks=NEW_VIDEO,
        saved="height",
        page="size",
    ),
    Param(
        "width",
        Kind.INT,
        None,
        "Width",
        "Default: the model's native width (1280).",
        tasks=NEW_VIDEO,
        saved="width",
        page="size",
    ),
    Param(
        "use_template",
        Kind.BOOL,
        True,
        "Official quality template",
        "Wraps the prompt in the model card's quality words.",
        saved="use_template",
        page="use_template",
        cli="--no-template",
    ),
    Param(
        "interpolate",
        Kind.BOOL,
        False,
        "30 fps",
        "Adds a frame between each pair (smoother motion).",
        tasks=NEW_VIDEO,
        saved="interpolation",
        record=True,
        page="interpolate",
    ),
    Param(
        "interpolation_method",
        Kind.CHOICE,
        None,
        "Interpolation method",
        "How the frames in between are made (implies 30 fps).",
        tasks=NEW_VIDEO,
        choices=INTERPOLATION_METHODS,
        shown=INTERPOLATION_METHODS[0],
        saved="interpolation.method",
        record=True,
        page="interpolation_method",
    ),
    Param(
        "fast_mode",
        Kind.BOOL,
        False,
        "Fast mode",
        "About 1.4x faster, slightly less detail (Pyramid Attention Broadcast).",
        saved="fast_mode",
        page="fast_mode",
        cli="--fast",
        summary="fast mode",
    ),
    Param(
        "step_cache",
        Kind.BOOL,
        False,
        "Step cache",
        "Skips later blocks on steps that change little (cache-dit's DBCache; its authors "
        "report 1.36x for Allegro). Instead of fast mode.",
        saved="step_cache",
        record=True,
        page="step_cache",
        summary="step cache",
    ),
    Param(
        "first_image",
        Kind.FILE,
        None,
        "First frame",
        "An image that becomes the first frame (image to video with Allegro-TI2V).",
        tasks=frozenset({Task.IMAGE}),
        saved="first_image",
        record=True,  # the file's name beside the video, not the path given
        page="first_image",
        cli="--image",
        api_name="image",
    ),
    Param(
        "last_image",
        Kind.FILE,
        None,
        "Last frame",
        "An image that becomes the last frame (needs a first frame).",
        tasks=frozenset({Task.IMAGE}),
        saved="last_image",
        record=True,
        page="last_image",
    ),
    Param(
        "continue_video",
        Kind.FILE,
        None,
        "Video to continue",
        "An earlier clip whose last frames open this one.",
        tasks=frozenset({Task.EXTEND}),
        saved="continues.video",
        record=True,
        api_name="video",
    ),
    Param(
        "overlap_frames",
        Kind.INT,
        DEFAULT_OVERLAP_FRAMES,
        "Overlap frames",
        f"Frames the clips share (default {DEFAULT_OVERLAP_FRAMES}).",
        tasks=frozenset({Task.EXTEND}),
        minimum=1,
        saved="continues.overlap_frames",
        record=True,
        cli="--overlap",
    ),
    Param(
        "original_prompt",
        Kind.TEXT,
        None,
        "Original prompt",
        "What the person wrote when the prompt is a prompt model's rewrite of it (prompt "
        "help): kept with the video, never sent to the model.",
        tasks=SET_BY_SERVER,
        saved="original_prompt",
    ),
)


def params() -> tuple[Param, ...]:
    """The declaration (a function, so that everything built from it at call time sees a
    parameter a test adds)."""
    return PARAMS


def param(name: str) -> Param:
    for declared in params():
        if declared.name == name:
            return declared
    raise KeyError(name)


def params_for(*tasks: Task) -> Iterator[Param]:
    """The parameters any of ``tasks`` uses, in declaration order."""
    return (p for p in params() if p.tasks & set(tasks))


MISSING = object()  # a saved value the settings do not have


def summary_parts(settings: Mapping[str, Any]) -> list[str]:
    """The declared parameters' parts of a saved video's summary line, in order."""
    parts = []
    for declared in params():
        value = saved_value(settings, declared)
        if declared.summary is None or value is None or value is False:
            continue
        parts.append(declared.summary.format_map(_Blank(settings)))
    return parts


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def saved_raw(settings: Any, declared: Param) -> Any:
    """The value saved for ``declared`` as it is in ``settings`` (a mapping), unchecked;
    MISSING when the settings lack it (or it is not saved)."""
    if declared.saved is None:
        return MISSING
    value: Any = settings
    for key in declared.saved.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def saved_value(settings: Any, declared: Param) -> Any:
    """The value ``declared`` has in saved settings (a mapping), or None if they lack it.
    A BOOL saved as a record is on when its record is there."""
    value = saved_raw(settings, declared)
    if declared.kind is Kind.BOOL and declared.record:
        return None if value is MISSING else isinstance(value, Mapping) or value is True
    return None if value is MISSING else value
