"""Generation requests: the dataclass, official defaults, presets and validation.

Pure Python (no torch), so the UI and the CLI can validate and describe requests
without loading anything.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any

from allegro.errors import InvalidRequestError
from allegro.params import (  # noqa: F401 - re-exported: the request's constants
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_OVERLAP_FRAMES,
    GUIDANCE_RANGE,
    MAX_SEED,
    OFFICIAL_GUIDANCE,
    OFFICIAL_STEPS,
    OFFICIAL_TI2V_GUIDANCE,
    REQUIRED,
    STEPS_RANGE,
    Kind,
    Param,
    params,
)

DEFAULT_MODEL = "rhymes-ai/Allegro"
TI2V_MODEL = "rhymes-ai/Allegro-TI2V"
OFFICIAL_MODELS = frozenset(
    {DEFAULT_MODEL, "rhymes-ai/Allegro-T2V-40x720P", "rhymes-ai/Allegro-T2V-40x360P", TI2V_MODEL}
)

# The official inference script's quality template (model card).
PROMPT_TEMPLATE = (
    "(masterpiece), (best quality), (ultra-detailed), (unwatermarked), {} emotional, "
    "harmonious, vignette, 4k epic detailed, shot on kodak, 35mm photo, sharp focus, "
    "high budget, cinemascope, moody, epic, gorgeous"
)

FPS = 15
MAX_PROMPT_TOKENS = 512
# T5 reads 512 tokens, about 2,000 characters of English; twice that refuses nothing the
# model can use, and bounds diffusers' caption cleaning, which is quadratic in the length:
# measured here, 4,000 characters take 0.03 s (prose) to 0.3 s (worst pattern found, "a-"
# repeated), 16,000 take up to 9 s. Applies to the prompt and the negative prompt.
MAX_PROMPT_CHARS = 4000

# Accepted lengths: the VAE decodes 24-frame tiles (6 latent frames) moved by 16 frames, the
# geometry it was trained with, so a length is decodable when it is 24 + 16k frames.
# 88 and 40 are the lengths the released checkpoints were trained for.
ACCEPTED_FRAMES = (24, 40, 56, 72, 88, 104, 120)
# Sides must be multiples of 16: 8x VAE downsampling, then 2x2 transformer patches.
SIZE_MULTIPLE = 16
MIN_SIDE = 128
MAX_SIDE = 1280
MAX_PIXELS = 720 * 1280


@dataclass(frozen=True)
class SizePreset:
    label: str
    height: int
    width: int


SIZE_PRESETS: tuple[SizePreset, ...] = (
    SizePreset("720p landscape (1280x720)", 720, 1280),
    SizePreset("720p portrait (720x1280)", 1280, 720),
    SizePreset("360p landscape (640x368)", 368, 640),
    SizePreset("360p portrait (368x640)", 640, 368),
    SizePreset("square (720x720)", 720, 720),
)

LENGTH_PRESETS: dict[str, int] = {
    f"{frames} frames ({frames / FPS:.1f} s)": frames for frames in ACCEPTED_FRAMES
}


@dataclass(frozen=True)
class ModelPreset:
    """A named model: the base repo plus, for the fast variants, a transformer-only repo."""

    name: str
    model: str
    transformer: str | None
    frames: int
    height: int
    width: int
    description: str


MODEL_PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        ModelPreset(
            "allegro",
            DEFAULT_MODEL,
            None,
            88,
            720,
            1280,
            "Allegro, 88 frames at 720x1280 (best quality, ~20 min on an H100)",
        ),
        ModelPreset(
            "allegro-40x720p",
            DEFAULT_MODEL,
            "rhymes-ai/Allegro-T2V-40x720P",
            40,
            720,
            1280,
            "40-frame 720p variant (about 3x faster)",
        ),
        ModelPreset(
            "allegro-40x360p",
            DEFAULT_MODEL,
            "rhymes-ai/Allegro-T2V-40x360P",
            40,
            368,
            640,
            "40-frame 368x640 variant (a draft in minutes)",
        ),
        ModelPreset(
            "allegro-ti2v",
            TI2V_MODEL,
            None,
            88,
            720,
            1280,
            "Allegro-TI2V: image (first, or first and last frame) + text to video, 88x720x1280",
        ),
    )
}


@dataclass(frozen=True)
class NativeSize:
    """What a loaded model makes by default (from its transformer config)."""

    frames: int
    height: int
    width: int


def _request_field(declared: Param) -> tuple:
    annotation: Any = declared.python_type
    if declared.optional:
        annotation = annotation | None
    if declared.required:
        return (declared.name, annotation)
    return (declared.name, annotation, field(default=declared.default))


class _RequestMethods:
    @property
    def image_to_video(self) -> bool:
        return bool(self.first_image or self.last_image or self.continue_video)


def make_request_class() -> type:
    """GenerationRequest, one field per declared parameter (``allegro.params``), in order."""
    request_class = make_dataclass(
        "GenerationRequest",
        [_request_field(declared) for declared in params()],
        bases=(_RequestMethods,),
        frozen=True,
    )
    request_class.__module__ = __name__  # so that pickle finds it (jobs cross processes)
    request_class.__doc__ = _REQUEST_DOC
    return request_class


_REQUEST_DOC = """One video to make: a field per parameter of ``allegro.params``. ``None`` fields
take defaults when the request is resolved: seed -> random, frames/height/width -> the
model's native size, negative prompt -> the official one, guidance -> the official one of
the task.

Image to video (Allegro-TI2V): ``first_image`` (and optionally ``last_image``) are image
files that become the first (and last) frame; or ``continue_video``, an earlier clip whose
last ``overlap_frames`` frames become the first frames of this one."""

GenerationRequest = make_request_class()


def apply_template(prompt: str) -> str:
    """The official script lower-cases and strips the user's text before templating."""
    return PROMPT_TEMPLATE.format(prompt.lower().strip())


def positive_prompt(request: GenerationRequest) -> str:
    return apply_template(request.prompt) if request.use_template else request.prompt.strip()


def accepted_sizes_text() -> str:
    lengths = ", ".join(str(f) for f in ACCEPTED_FRAMES)
    return (
        f"lengths of {lengths} frames; heights and widths that are multiples of "
        f"{SIZE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE} pixels, at most "
        f"{MAX_PIXELS:,} pixels per frame (720x1280), e.g. 720x1280, 1280x720, 368x640"
    )


def _as_int(value: Any, name: str, field: str | None = None) -> int:
    def refuse(shown: str) -> InvalidRequestError:
        return InvalidRequestError(f"{name} must be a whole number, not {shown}.", field=field)

    if isinstance(value, bool):
        raise refuse(repr(value))
    if isinstance(value, float):
        if not value.is_integer():
            raise refuse(str(value))
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise refuse(repr(value)) from None


def _as_float(value: Any, name: str, field: str | None = None) -> float:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a number, not {value!r}.", field=field)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, not {value!r}.", field=field) from None
    if not math.isfinite(number):
        raise InvalidRequestError(f"{name} must be a finite number, not {value!r}.", field=field)
    return number


def parse_seed(value: Any) -> int | None:
    """None, "" and -1 mean "pick a random seed"; anything else must be 0..2^32-1."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "-1")):
        return None
    seed = _as_int(value, "Seed", "seed")
    if seed == -1:
        return None
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequestError(
            f"Seed must be between 0 and {MAX_SEED} (or empty for a random one), not {seed}.",
            field="seed",
        )
    return seed


def validate_size(frames: int, height: int, width: int) -> None:
    problems = []  # (text, the field it is about)
    if frames not in ACCEPTED_FRAMES:
        problems.append((f"{frames} frames", "frames"))
    for side_name, side in (("height", height), ("width", width)):
        if side % SIZE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
            problems.append((f"{side_name} {side}", side_name))
    if not problems and height * width > MAX_PIXELS:
        problems.append((f"{height}x{width} ({height * width:,} pixels per frame)", "height"))
    if problems:
        raise InvalidRequestError(
            f"Allegro cannot make {' and '.join(text for text, _ in problems)}. "
            f"Accepted: {accepted_sizes_text()}.",
            field=problems[0][1],
        )


def check_text(text: str, name: str, field: str | None = None) -> None:
    """A prompt's length and characters (InvalidRequestError for a person to read)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The {name} is {len(text):,} characters long; at most {MAX_PROMPT_CHARS:,} are "
            f"accepted (Allegro reads only the first {MAX_PROMPT_TOKENS} tokens, about 2,000 "
            "characters).",
            field=field,
        )
    if any("\ud800" <= char <= "\udfff" or char == "\x00" for char in text):
        raise InvalidRequestError(
            f"The {name} contains characters that are not valid text (a broken emoji or a "
            "null character); please type it again.",
            field=field,
        )


def resolve_request(request: GenerationRequest, native: NativeSize) -> GenerationRequest:
    """Check every field and fill in the defaults; returns a request with no ``None`` left
    (the seed actually used included). Raises InvalidRequestError with a readable message."""
    prompt = request.prompt if isinstance(request.prompt, str) else ""
    if not prompt.strip():
        raise InvalidRequestError(
            "Please write a prompt: describe the video you want.", field="prompt"
        )
    check_text(prompt, "prompt", "prompt")
    negative = request.negative_prompt
    if negative is None:
        negative = DEFAULT_NEGATIVE_PROMPT
    elif not isinstance(negative, str):
        raise InvalidRequestError("The negative prompt must be text.", field="negative_prompt")
    check_text(negative, "negative prompt", "negative_prompt")
    if request.original_prompt is not None:  # set by the server with a rewrite, kept only
        if not isinstance(request.original_prompt, str):
            raise InvalidRequestError("The original prompt must be text.", field="original_prompt")
        check_text(request.original_prompt, "original prompt", "original_prompt")

    steps = _as_int(request.steps, "Steps", "steps")
    if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
        raise InvalidRequestError(
            f"Steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}, not {steps} "
            f"(the official setting is {OFFICIAL_STEPS}).",
            field="steps",
        )
    official_guidance = OFFICIAL_TI2V_GUIDANCE if request.image_to_video else OFFICIAL_GUIDANCE
    guidance = (
        official_guidance
        if request.guidance_scale is None
        else _as_float(request.guidance_scale, "Guidance scale", "guidance_scale")
    )
    if not GUIDANCE_RANGE[0] <= guidance <= GUIDANCE_RANGE[1]:
        raise InvalidRequestError(
            f"Guidance scale must be between {GUIDANCE_RANGE[0]:g} and {GUIDANCE_RANGE[1]:g}, "
            f"not {guidance:g} (the official setting is {official_guidance:g}).",
            field="guidance_scale",
        )
    frames = _or(request.frames, native.frames, "Frames", "frames")
    height = _or(request.height, native.height, "Height", "height")
    width = _or(request.width, native.width, "Width", "width")
    validate_size(frames, height, width)
    overlap = _check_condition(request, frames)

    if request.fast_mode and request.step_cache:
        raise InvalidRequestError(
            "Fast mode and the step cache are alternatives: both skip work inside the "
            "transformer from one step to the next, and they are not made to be stacked. "
            "Choose one.",
            field="step_cache",
        )
    _check_choices(request)
    seed = parse_seed(request.seed)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    return replace(
        request,
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        guidance_scale=guidance,
        frames=frames,
        height=height,
        width=width,
        use_template=bool(request.use_template),
        interpolate=bool(request.interpolate),
        fast_mode=bool(request.fast_mode),
        step_cache=bool(request.step_cache),
        overlap_frames=overlap,
    )


def _check_condition(request: GenerationRequest, frames: int) -> int:
    """Which condition combinations make sense; returns the checked overlap. (Whether the
    files are good images and videos is checked by ``allegro.ti2v.inputs``.)"""
    if request.last_image and not request.first_image:
        raise InvalidRequestError(
            "A last frame needs a first frame too: add a first image (Allegro-TI2V is trained "
            "with the first frame, or the first and the last).",
            field="last_image",
        )
    if request.continue_video and request.first_image:
        raise InvalidRequestError(
            "Continue a clip, or start from images, not both: a continued clip starts from "
            "the earlier clip's last frames.",
            field="first_image",
        )
    if request.continue_video and request.interpolate:
        raise InvalidRequestError(
            "A continued clip is joined to a 15 fps clip, so it cannot be interpolated on the "
            "way: extend first, then interpolate the whole video.",
            field="interpolate",
        )
    overlap = _as_int(request.overlap_frames, "Overlap frames", "overlap_frames")
    if request.continue_video and not 1 <= overlap < frames:
        raise InvalidRequestError(
            f"Overlap frames must be between 1 and {frames - 1} for a {frames}-frame video, "
            f"not {overlap}.",
            field="overlap_frames",
        )
    return overlap


def _check_choices(request: GenerationRequest) -> None:
    """A parameter with declared choices holds one of them (or None: its default)."""
    for declared in params():
        value = getattr(request, declared.name)
        if declared.kind is Kind.CHOICE and value is not None and value not in declared.choices:
            raise InvalidRequestError(
                f"Unknown {declared.label.lower()} {value!r}. Choose one of: "
                f"{', '.join(declared.choices)}.",
                field=declared.name,
            )


def _or(value: Any, default: int, name: str, field: str) -> int:
    return default if value is None else _as_int(value, name, field)


def check_request(request: GenerationRequest) -> None:
    """Validate the fields a request sets, before any model is loaded (fields left to the
    model's defaults are checked again once it is)."""
    resolve_request(request, NativeSize(ACCEPTED_FRAMES[0], MIN_SIDE, MIN_SIDE))
