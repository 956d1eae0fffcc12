"""The page's controls as plain values: dropdown choices, controls -> request, and a video's
settings -> controls ("reuse settings", a dropped MP4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from allegro.errors import InvalidRequestError
from allegro.request import (
    ACCEPTED_FRAMES,
    DEFAULT_NEGATIVE_PROMPT,
    FPS,
    LENGTH_PRESETS,
    OFFICIAL_GUIDANCE,
    OFFICIAL_STEPS,
    SIZE_PRESETS,
    GenerationRequest,
    NativeSize,
)
from allegro.settings import VideoSettings

MODEL_DEFAULT = "default"  # dropdown value: the loaded model's native length or size
TEXT_TO_VIDEO, IMAGE_TO_VIDEO = "Text to video", "Image to video"  # the task switch
TASKS = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO)
RANDOM_SEED = -1


def _length_key(frames: int) -> str:
    return str(frames)


def _size_key(height: int, width: int) -> str:
    return f"{height}x{width}"


def length_choices(native: NativeSize | None) -> list[tuple[str, str]]:
    """(label, value) pairs; the first is the model's own length."""
    default = (
        f"Model default ({native.frames} frames, {native.frames / FPS:.1f} s)"
        if native
        else "Model default"
    )
    return [(default, MODEL_DEFAULT)] + [
        (label, _length_key(frames)) for label, frames in LENGTH_PRESETS.items()
    ]


def size_choices(native: NativeSize | None) -> list[tuple[str, str]]:
    default = f"Model default ({native.width}x{native.height})" if native else "Model default"
    return [(default, MODEL_DEFAULT)] + [
        (preset.label, _size_key(preset.height, preset.width)) for preset in SIZE_PRESETS
    ]


def frames_for(length: str | None) -> int | None:
    """A length value -> frames; None for the model's default."""
    if not length or length == MODEL_DEFAULT:
        return None
    return int(length)


def size_for(size: str | None) -> tuple[int | None, int | None]:
    """A size value -> (height, width); (None, None) for the model's default."""
    if not size or size == MODEL_DEFAULT:
        return None, None
    height, width = size.split("x")
    return int(height), int(width)


def resolved_shape(
    length: str | None, size: str | None, native: NativeSize
) -> tuple[int, int, int]:
    """(frames, height, width) that the controls ask for once the model is known."""
    frames = frames_for(length)
    height, width = size_for(size)
    return (
        native.frames if frames is None else frames,
        native.height if height is None else height,
        native.width if width is None else width,
    )


@dataclass(frozen=True)
class ControlValues:
    """Everything the Generate button sends, as the page's components hold it."""

    prompt: str = ""
    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT
    seed: float | int | None = RANDOM_SEED
    steps: float | int = OFFICIAL_STEPS
    guidance_scale: float = OFFICIAL_GUIDANCE
    length: str = MODEL_DEFAULT
    size: str = MODEL_DEFAULT
    use_template: bool = True
    interpolate: bool = False
    interpolation_method: str | None = None
    fast_mode: bool = False
    step_cache: bool = False
    task: str = TEXT_TO_VIDEO
    first_image: str | None = None  # uploaded files (image to video)
    last_image: str | None = None

    def to_request(self) -> GenerationRequest:
        """The request; the images only count in image-to-video mode, where a first frame
        is required."""
        height, width = size_for(self.size)
        from_images = self.task == IMAGE_TO_VIDEO
        if from_images and not self.first_image:
            raise InvalidRequestError(
                "Image to video needs a first frame: drop an image in the First frame box "
                "(or switch to Text to video)."
            )
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            frames=frames_for(self.length),
            height=height,
            width=width,
            use_template=self.use_template,
            interpolate=self.interpolate,
            interpolation_method=self.interpolation_method if self.interpolate else None,
            fast_mode=self.fast_mode,
            step_cache=self.step_cache,
            first_image=self.first_image if from_images else None,
            last_image=self.last_image if from_images else None,
        )


@dataclass(frozen=True)
class LoadedControls:
    values: ControlValues
    notes: tuple[str, ...]  # what could not be carried over exactly, for a person


def controls_from_settings(
    settings: Mapping[str, Any], native: NativeSize | None
) -> LoadedControls:
    """A video's saved settings -> control values. Sizes that are not presets fall back to
    the model default (with a note), unless they are the loaded model's native size."""
    notes: list[str] = []
    record = VideoSettings.from_dict(settings)
    frames, height, width = record.frames, record.height, record.width

    if native is not None and (frames, height, width) == (
        native.frames,
        native.height,
        native.width,
    ):
        length, size = MODEL_DEFAULT, MODEL_DEFAULT
    else:
        length = _length_key(frames) if frames in ACCEPTED_FRAMES else MODEL_DEFAULT
        if length == MODEL_DEFAULT and frames is not None:
            notes.append(f"{frames} frames is not an available length; using the model default.")
        preset_keys = {_size_key(p.height, p.width) for p in SIZE_PRESETS}
        size = _size_key(height, width) if height and width else MODEL_DEFAULT
        if size not in preset_keys:
            if height and width:
                notes.append(f"{width}x{height} is not an available size; using the model default.")
            size = MODEL_DEFAULT

    method = record.interpolation.method if record.interpolation else None
    negative = record.negative_prompt
    values = ControlValues(
        prompt=record.prompt,
        negative_prompt=DEFAULT_NEGATIVE_PROMPT if negative is None else negative,
        seed=RANDOM_SEED if record.seed is None else record.seed,
        steps=OFFICIAL_STEPS if record.steps is None else record.steps,
        guidance_scale=(
            OFFICIAL_GUIDANCE if record.guidance_scale is None else record.guidance_scale
        ),
        length=length,
        size=size,
        use_template=record.use_template,
        interpolate=method is not None,
        interpolation_method=method,
        fast_mode=record.fast_mode,
        step_cache=record.step_cache is not None,
        task=IMAGE_TO_VIDEO if record.first_image else TEXT_TO_VIDEO,
    )
    return LoadedControls(values, tuple(notes))


def request_from_settings(settings: Mapping[str, Any]) -> GenerationRequest:
    """A video's saved settings as the request that made it, for the same checks as any
    request (check_request); InvalidRequestError for a field that is not even the right
    kind of value."""
    for name in ("use_template", "fast_mode"):
        if not isinstance(settings.get(name, False), bool):
            raise InvalidRequestError(f"The video's {name} setting is not yes or no.")
    step_cache = settings.get("step_cache", False)  # its statistics when it ran
    if not isinstance(step_cache, (bool, Mapping)):
        raise InvalidRequestError("The video's step_cache setting is not yes or no.")
    interpolation = settings.get("interpolation")
    if interpolation is not None and not isinstance(interpolation, Mapping):
        raise InvalidRequestError("The video's interpolation setting is malformed.")
    method = interpolation.get("method") if interpolation else None
    if method is not None and not isinstance(method, str):
        raise InvalidRequestError("The video's interpolation method is not a name.")
    return GenerationRequest(
        prompt=settings.get("prompt"),
        negative_prompt=settings.get("negative_prompt"),
        seed=settings.get("seed"),
        steps=settings.get("steps", OFFICIAL_STEPS),
        guidance_scale=settings.get("guidance_scale"),  # None: the task's official one
        frames=settings.get("frames"),
        height=settings.get("height"),
        width=settings.get("width"),
        use_template=settings.get("use_template", True),
        interpolate=interpolation is not None,
        interpolation_method=method,
        fast_mode=settings.get("fast_mode", False),
        step_cache=bool(step_cache) or isinstance(step_cache, Mapping),
    )


@dataclass(frozen=True)
class MethodChoice:
    name: str
    available: bool
    reason: str

    @property
    def label(self) -> str:
        if not self.available:
            return f"{self.name} (unavailable: {self.reason})"
        return f"{self.name} ({self.reason})" if self.reason else self.name


def interpolation_choices(methods: list[MethodChoice]) -> list[tuple[str, str]]:
    return [(method.label, method.name) for method in methods]
