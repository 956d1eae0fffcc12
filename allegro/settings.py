"""The settings saved with every video, as a typed record with a schema version.

They travel as JSON (in the MP4's comment and in ``NAME.json``); ``VideoSettings`` is the
one place that knows their keys. Sidecars written before the schema had a version (schema
0: the same keys, no ``schema``) load unchanged; keys this version does not know (from a
newer app) are kept in ``extra`` and written back as they were.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from allegro.errors import AllegroError
from allegro.params import Kind, Param, param, params, saved_value
from allegro.request import FPS, GenerationRequest

SETTINGS_SCHEMA = 1


@dataclass(frozen=True)
class InterpolationRecord:
    method: str
    fps: float
    source_fps: float
    frames: int | None = None
    layout: str = ""
    fallback_pairs: int = 0


@dataclass(frozen=True)
class ContinuationRecord:
    """The clip an image-to-video continuation extends (its last frames were the input)."""

    video: str
    overlap_frames: int
    source_frames: int | None = None


def _saved_field(declared: Param) -> tuple:
    """A record field for a parameter saved as its plain value: None when an old or foreign
    sidecar lacks it (a yes/no, its default; the prompt, empty)."""
    if declared.required:
        return (declared.name, declared.python_type, field(default=""))
    if declared.kind is Kind.BOOL:
        return (declared.name, bool, field(default=declared.default))
    return (declared.name, declared.python_type | None, field(default=None))


# The parameters saved as their plain value (``allegro.params``), one field each; the
# others are saved in records of their own (interpolation, step cache, continuation).
SavedRequest = make_dataclass(
    "SavedRequest",
    [_saved_field(declared) for declared in params() if declared.plain_saved],
    frozen=True,
)
SavedRequest.__module__ = __name__


@dataclass(frozen=True)
class VideoSettings(SavedRequest):
    """How a video was made. Fields an old or foreign sidecar lacks are None."""

    fps: float = FPS
    # The step cache's statistics when it was on ({} without statistics), None when off;
    # saved as that mapping or false.
    step_cache: dict[str, Any] | None = None
    memory_profile: str | None = None
    interpolation: InterpolationRecord | None = None
    model: str | None = None
    transformer: str | None = None
    precision: str | None = None
    vae_precision: str | None = None
    offload: str | None = None
    offload_reason: str | None = None
    compiled: bool = False
    device: str | None = None
    run_seconds: float | None = None
    created: str | None = None  # ISO 8601 with its UTC offset
    labels: dict[str, str] = field(default_factory=dict)
    # Image to video: the input images' file names beside the video, or the clip this one
    # continues, the chain of clips before it, and how many of ``frames`` were generated.
    first_image: str | None = None
    last_image: str | None = None
    continues: ContinuationRecord | None = None
    chain: tuple[str, ...] = ()
    generated_frames: int | None = None
    app: str = "Allegro Studio"
    app_version: str | None = None
    schema: int = SETTINGS_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output_frames(self) -> int | None:
        """Frames in the saved video (more than made when interpolated)."""
        if self.interpolation is not None and self.interpolation.frames is not None:
            return self.interpolation.frames
        return self.frames

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = data.pop("extra")
        interpolation = data["interpolation"]
        data["interpolation"] = dataclasses.asdict(interpolation) if interpolation else None
        data["labels"] = dict(self.labels)
        data["continues"] = dataclasses.asdict(self.continues) if self.continues else None
        data["chain"] = list(self.chain)
        data["step_cache"] = dict(self.step_cache) if self.step_cache is not None else False
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoSettings:
        """Read saved settings, any schema up to this one; a value of the wrong type is
        dropped (None), never a crash. AllegroError if ``data`` is not settings at all."""
        if not isinstance(data, Mapping):
            raise AllegroError("These video settings are not a JSON object.")
        schema = _as(int, data.get("schema"), 0)  # a newer schema: the keys we know
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        interpolation = data.get("interpolation")
        labels = data.get("labels")
        chain = data.get("chain")
        plain = {
            f.name: _as(param(f.name).python_type, data.get(f.name), f.default)
            for f in dataclasses.fields(SavedRequest)
        }
        return cls(
            **plain,
            fps=_as(float, data.get("fps"), float(FPS)),
            step_cache=_step_cache(data.get("step_cache")),
            memory_profile=_as(str, data.get("memory_profile")),
            interpolation=_interpolation(interpolation),
            model=_as(str, data.get("model")),
            transformer=_as(str, data.get("transformer")),
            precision=_as(str, data.get("precision")),
            vae_precision=_as(str, data.get("vae_precision")),
            offload=_as(str, data.get("offload")),
            offload_reason=_as(str, data.get("offload_reason")),
            compiled=_as(bool, data.get("compiled"), False),
            device=_as(str, data.get("device")),
            run_seconds=_as(float, data.get("run_seconds")),
            created=_as(str, data.get("created")),
            labels=(
                {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
            ),
            first_image=_as(str, data.get("first_image")),
            last_image=_as(str, data.get("last_image")),
            continues=_continuation(data.get("continues")),
            chain=tuple(str(name) for name in chain) if isinstance(chain, list) else (),
            generated_frames=_as(int, data.get("generated_frames")),
            app=_as(str, data.get("app"), "Allegro Studio"),
            app_version=_as(str, data.get("app_version")),
            schema=max(schema, 0),
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_request(self) -> GenerationRequest:
        """The request that makes this video again (same seed, same settings): every saved
        parameter (``allegro.params``), read where it is saved. Files are not set: the record
        holds their names, the caller knows their folder."""
        data = self.to_dict()
        values = {
            declared.name: saved_value(data, declared)
            for declared in params()
            if declared.kind is not Kind.FILE and declared.saved is not None
        }
        if self.generated_frames is not None:  # a continuation: the clip it added
            values["frames"] = self.generated_frames
        return GenerationRequest(**{k: v for k, v in values.items() if v is not None})


def request_record(request: GenerationRequest) -> dict[str, Any]:
    """The request's plainly saved parameters, as VideoSettings' fields."""
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(SavedRequest)}


def _as(kind: type, value: Any, default: Any = None) -> Any:
    """``value`` if it is a ``kind`` (ints accepted as floats, whole floats as ints)."""
    if kind is bool:
        return value if isinstance(value, bool) else default
    if isinstance(value, bool) or value is None:
        return default
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else default
    if kind is float:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        return float(value) if ok else default
    return value if isinstance(value, kind) else default


def _interpolation(value: Any) -> InterpolationRecord | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("method"), str):
        return None
    return InterpolationRecord(
        method=value["method"],
        fps=_as(float, value.get("fps"), 30.0),
        source_fps=_as(float, value.get("source_fps"), float(FPS)),
        frames=_as(int, value.get("frames")),
        layout=_as(str, value.get("layout"), ""),
        fallback_pairs=_as(int, value.get("fallback_pairs"), 0),
    )


def _step_cache(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Mapping):
        return {str(key): item for key, item in value.items()}
    return {} if value is True else None


def _continuation(value: Any) -> ContinuationRecord | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("video"), str):
        return None
    return ContinuationRecord(
        video=value["video"],
        overlap_frames=_as(int, value.get("overlap_frames"), 0),
        source_frames=_as(int, value.get("source_frames")),
    )
