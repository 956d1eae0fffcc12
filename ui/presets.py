"""The page's controls as plain values: dropdown choices, controls -> request, and a video's
settings -> controls ("reuse settings", a dropped MP4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from allegro.errors import InvalidRequestError
from allegro.params import MISSING, Kind, param, params, saved_raw, saved_value
from allegro.request import (
    ACCEPTED_FRAMES,
    FPS,
    LENGTH_PRESETS,
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


# Page controls that stand for parameters in another form: the length dropdown for the
# frames, the size dropdown for the height and width, and the task switch.
LENGTH, SIZE, TASK = "length", "size", "task"
_COMPOSITE_DEFAULTS = {LENGTH: MODEL_DEFAULT, SIZE: MODEL_DEFAULT, TASK: TEXT_TO_VIDEO}


def control_names() -> tuple[str, ...]:
    """The page's generation controls, by name: one per declared parameter the page shows
    (``Param.page``, several parameters may share one), in the declaration's order, with
    the task switch before the images it turns on (the order of the events' inputs)."""
    names: list[str] = []
    for declared in params():
        if declared.kind is Kind.FILE and TASK not in names:
            names.append(TASK)
        if declared.page is not None and declared.page not in names:
            names.append(declared.page)
    return tuple(names) if TASK in names else (*names, TASK)


def control_default(name: str) -> Any:
    """What control ``name`` shows before anyone touches it."""
    if name in _COMPOSITE_DEFAULTS:
        return _COMPOSITE_DEFAULTS[name]
    declared = param(name)
    return "" if declared.required else declared.shown_default


def control_of(field: str | None) -> str | None:
    """The page control that holds request field ``field`` (None if the page has none)."""
    try:
        return param(field).page if field else None
    except KeyError:
        return None


def _request_fields(values: Any) -> dict[str, Any]:
    """Control values (by name) -> the request's fields, by name; the images only count in
    image-to-video mode, where a first frame is required."""
    from_images = values.task == IMAGE_TO_VIDEO
    if from_images and not values.first_image:
        raise InvalidRequestError(
            "Image to video needs a first frame: drop an image in the First frame box "
            "(or switch to Text to video).",
            field="first_image",
        )
    fields: dict[str, Any] = {}
    for declared in params():
        if declared.page != declared.name:
            continue  # a composite control (below), or not on the page
        value = getattr(values, declared.name)
        if declared.kind is Kind.FILE and not from_images:
            value = None
        fields[declared.name] = value
    fields["frames"] = frames_for(values.length)
    fields["height"], fields["width"] = size_for(values.size)
    if not values.interpolate:
        fields["interpolation_method"] = None
    return fields


class _ControlMethods:
    def to_request(self) -> GenerationRequest:
        """The request the controls ask for."""
        return GenerationRequest(**_request_fields(self))


def make_control_values() -> type:
    """ControlValues: a field per page control (``control_names``), with its default."""
    values = make_dataclass(
        "ControlValues",
        [(name, Any, field(default=control_default(name))) for name in control_names()],
        bases=(_ControlMethods,),
        frozen=True,
    )
    values.__module__ = __name__
    values.__doc__ = "Everything the Generate button sends, as the page's controls hold it."
    return values


ControlValues = make_control_values()


@dataclass(frozen=True)
class LoadedControls:
    values: Any  # ControlValues
    notes: tuple[str, ...]  # what could not be carried over exactly, for a person


def controls_from_settings(
    settings: Mapping[str, Any], native: NativeSize | None
) -> LoadedControls:
    """A video's saved settings -> control values, parameter by parameter (read where the
    declaration says it is saved). Sizes that are not presets fall back to the model
    default (with a note), unless they are the loaded model's native size."""
    notes: list[str] = []
    record = VideoSettings.from_dict(settings).to_dict()  # values of the right type only
    values: dict[str, Any] = {}
    for declared in params():
        if declared.page != declared.name or declared.kind is Kind.FILE:
            continue
        value = saved_value(record, declared)
        values[declared.name] = control_default(declared.name) if value is None else value

    frames, height, width = (record.get(name) for name in ("frames", "height", "width"))
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
    task = IMAGE_TO_VIDEO if record.get("first_image") else TEXT_TO_VIDEO
    return LoadedControls(
        ControlValues(**values, length=length, size=size, task=task), tuple(notes)
    )


def request_from_settings(settings: Mapping[str, Any]) -> GenerationRequest:
    """A video's saved settings as the request that made it, for the same checks as any
    request (check_request): every saved parameter but the files, read where the
    declaration says it is saved; InvalidRequestError (naming the field) for a value that
    is not even the right kind."""
    fields: dict[str, Any] = {}
    for declared in params():
        if declared.saved is None or declared.kind is Kind.FILE:
            continue
        head = declared.saved.split(".")[0]
        parent = settings.get(head)
        if "." in declared.saved and parent is not None and not isinstance(parent, Mapping):
            raise InvalidRequestError(
                f"The video's {head} setting is malformed.", field=declared.name
            )
        raw = saved_raw(settings, declared)
        if raw is MISSING:
            continue
        if declared.kind is Kind.BOOL:
            if declared.record and raw is not None and not isinstance(raw, (bool, Mapping)):
                raise InvalidRequestError(
                    f"The video's {head} setting is malformed.", field=declared.name
                )
            if not declared.record and not isinstance(raw, bool):
                raise InvalidRequestError(
                    f"The video's {declared.name} setting is not yes or no.", field=declared.name
                )
            raw = isinstance(raw, Mapping) or raw is True
        elif declared.kind is Kind.CHOICE and raw is not None and not isinstance(raw, str):
            raise InvalidRequestError(
                f"The video's {declared.label.lower()} is not a name.", field=declared.name
            )
        fields[declared.name] = raw
    fields.setdefault("prompt", settings.get("prompt"))
    return GenerationRequest(**fields)


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
