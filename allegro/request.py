"""Generation requests: the dataclass, official defaults, presets and validation.

Pure Python (no torch), so the UI and the CLI can validate and describe requests
without loading anything.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from typing import Any

from allegro.errors import InvalidRequestError

DEFAULT_MODEL = "rhymes-ai/Allegro"
TI2V_MODEL = "rhymes-ai/Allegro-TI2V"
OFFICIAL_MODELS = frozenset(
    {DEFAULT_MODEL, "rhymes-ai/Allegro-T2V-40x720P", "rhymes-ai/Allegro-T2V-40x360P", TI2V_MODEL}
)

# The official inference script's quality template and negative prompt (model card).
PROMPT_TEMPLATE = (
    "(masterpiece), (best quality), (ultra-detailed), (unwatermarked), {} emotional, "
    "harmonious, vignette, 4k epic detailed, shot on kodak, 35mm photo, sharp focus, "
    "high budget, cinemascope, moody, epic, gorgeous"
)
DEFAULT_NEGATIVE_PROMPT = (
    "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
    "fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, "
    "signature, watermark, username, blurry."
)

OFFICIAL_STEPS = 100
OFFICIAL_GUIDANCE = 7.5
OFFICIAL_TI2V_GUIDANCE = 8.0  # single_inference_ti2v.py
# Frames of an earlier clip that open a continued one (training drew 1..all, uniformly).
DEFAULT_OVERLAP_FRAMES = 8
FPS = 15
MAX_PROMPT_TOKENS = 512
# T5 reads 512 tokens, about 2,000 characters of English; twice that refuses nothing the
# model can use, and bounds diffusers' caption cleaning, which is quadratic in the length:
# measured here, 4,000 characters take 0.03 s (prose) to 0.3 s (worst pattern found, "a-"
# repeated), 16,000 take up to 9 s. Applies to the prompt and the negative prompt.
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
STEPS_RANGE = (1, 500)
GUIDANCE_RANGE = (1.0, 20.0)

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


@dataclass(frozen=True)
class GenerationRequest:
    """One video to make. ``None`` fields take defaults when the request is resolved:
    seed -> random, frames/height/width -> the model's native size, negative prompt ->
    the official one, guidance -> the official one of the task.

    Image to video (Allegro-TI2V): ``first_image`` (and optionally ``last_image``) are image
    files that become the first (and last) frame; or ``continue_video``, an earlier clip
    whose last ``overlap_frames`` frames become the first frames of this one."""

    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int = OFFICIAL_STEPS
    guidance_scale: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    use_template: bool = True
    interpolate: bool = False
    interpolation_method: str | None = None
    fast_mode: bool = False  # Pyramid Attention Broadcast
    step_cache: bool = False  # cache-dit's DBCache; an alternative to fast mode, not a stack
    first_image: str | None = None
    last_image: str | None = None
    continue_video: str | None = None
    overlap_frames: int = DEFAULT_OVERLAP_FRAMES
    # Issue 24 (prompt help), one field for params.py to absorb: what the person typed when
    # ``prompt`` is a prompt model's rewrite of it (None when the prompt is their own).
    original_prompt: str | None = None

    @property
    def image_to_video(self) -> bool:
        return bool(self.first_image or self.last_image or self.continue_video)


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


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a whole number, not {value!r}.")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidRequestError(f"{name} must be a whole number, not {value}.")
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidRequestError(f"{name} must be a whole number, not {value!r}.") from None


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a number, not {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidRequestError(f"{name} must be a finite number, not {value!r}.")
    return number


def parse_seed(value: Any) -> int | None:
    """None, "" and -1 mean "pick a random seed"; anything else must be 0..2^32-1."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "-1")):
        return None
    seed = _as_int(value, "Seed")
    if seed == -1:
        return None
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequestError(
            f"Seed must be between 0 and {MAX_SEED} (or empty for a random one), not {seed}."
        )
    return seed


def validate_size(frames: int, height: int, width: int) -> None:
    problems = []
    if frames not in ACCEPTED_FRAMES:
        problems.append(f"{frames} frames")
    for side_name, side in (("height", height), ("width", width)):
        if side % SIZE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
            problems.append(f"{side_name} {side}")
    if not problems and height * width > MAX_PIXELS:
        problems.append(f"{height}x{width} ({height * width:,} pixels per frame)")
    if problems:
        raise InvalidRequestError(
            f"Allegro cannot make {' and '.join(problems)}. Accepted: {accepted_sizes_text()}."
        )


def check_text(text: str, name: str) -> None:
    """A prompt's length and characters (InvalidRequestError for a person to read)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The {name} is {len(text):,} characters long; at most {MAX_PROMPT_CHARS:,} are "
            f"accepted (Allegro reads only the first {MAX_PROMPT_TOKENS} tokens, about 2,000 "
            "characters)."
        )
    if any("\ud800" <= char <= "\udfff" or char == "\x00" for char in text):
        raise InvalidRequestError(
            f"The {name} contains characters that are not valid text (a broken emoji or a "
            "null character); please type it again."
        )


def resolve_request(request: GenerationRequest, native: NativeSize) -> GenerationRequest:
    """Check every field and fill in the defaults; returns a request with no ``None`` left
    (the seed actually used included). Raises InvalidRequestError with a readable message."""
    prompt = request.prompt if isinstance(request.prompt, str) else ""
    if not prompt.strip():
        raise InvalidRequestError("Please write a prompt: describe the video you want.")
    check_text(prompt, "prompt")
    negative = request.negative_prompt
    if negative is None:
        negative = DEFAULT_NEGATIVE_PROMPT
    elif not isinstance(negative, str):
        raise InvalidRequestError("The negative prompt must be text.")
    check_text(negative, "negative prompt")
    if request.original_prompt is not None:  # issue 24: kept with the video, not used
        if not isinstance(request.original_prompt, str):
            raise InvalidRequestError("The original prompt must be text.")
        check_text(request.original_prompt, "original prompt")

    steps = _as_int(request.steps, "Steps")
    if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
        raise InvalidRequestError(
            f"Steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}, not {steps} "
            f"(the official setting is {OFFICIAL_STEPS})."
        )
    official_guidance = OFFICIAL_TI2V_GUIDANCE if request.image_to_video else OFFICIAL_GUIDANCE
    guidance = (
        official_guidance
        if request.guidance_scale is None
        else _as_float(request.guidance_scale, "Guidance scale")
    )
    if not GUIDANCE_RANGE[0] <= guidance <= GUIDANCE_RANGE[1]:
        raise InvalidRequestError(
            f"Guidance scale must be between {GUIDANCE_RANGE[0]:g} and {GUIDANCE_RANGE[1]:g}, "
            f"not {guidance:g} (the official setting is {official_guidance:g})."
        )
    frames = native.frames if request.frames is None else _as_int(request.frames, "Frames")
    height = native.height if request.height is None else _as_int(request.height, "Height")
    width = native.width if request.width is None else _as_int(request.width, "Width")
    validate_size(frames, height, width)
    overlap = _check_condition(request, frames)

    if request.fast_mode and request.step_cache:
        raise InvalidRequestError(
            "Fast mode and the step cache are alternatives: both skip work inside the "
            "transformer from one step to the next, and they are not made to be stacked. "
            "Choose one."
        )
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
            "with the first frame, or the first and the last)."
        )
    if request.continue_video and request.first_image:
        raise InvalidRequestError(
            "Continue a clip, or start from images, not both: a continued clip starts from "
            "the earlier clip's last frames."
        )
    if request.continue_video and request.interpolate:
        raise InvalidRequestError(
            "A continued clip is joined to a 15 fps clip, so it cannot be interpolated on the "
            "way: extend first, then interpolate the whole video."
        )
    overlap = _as_int(request.overlap_frames, "Overlap frames")
    if request.continue_video and not 1 <= overlap < frames:
        raise InvalidRequestError(
            f"Overlap frames must be between 1 and {frames - 1} for a {frames}-frame video, "
            f"not {overlap}."
        )
    return overlap


def check_request(request: GenerationRequest) -> None:
    """Validate the fields a request sets, before any model is loaded (fields left to the
    model's defaults are checked again once it is)."""
    resolve_request(request, NativeSize(ACCEPTED_FRAMES[0], MIN_SIDE, MIN_SIDE))
