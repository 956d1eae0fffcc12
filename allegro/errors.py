"""User-facing errors. Every message is written for a person, not a programmer."""

from __future__ import annotations


class AllegroError(Exception):
    """Base class: the message is shown as is in the page, the CLI and the API. ``field``
    names the request parameter it is about (``allegro.params``), if any: the page marks
    that control, the API that parameter."""

    field: str | None = None

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


class InvalidRequestError(AllegroError, ValueError):
    """A request setting is out of range or not a value the model can make."""


class ModelUnavailableError(AllegroError):
    """Weights are missing, partly downloaded or unreachable."""


class UnsupportedSetupError(AllegroError):
    """The machine cannot run what was asked (e.g. a GPU offload mode without a GPU)."""


class GpuOutOfMemoryError(AllegroError):
    """The GPU ran out of memory; the message names settings that would fit."""


class InterpolationError(AllegroError):
    """A video could not be interpolated (not a video, too short, unreadable)."""


class Cancelled(AllegroError):
    """The run was cancelled by the user; nothing was written."""

    def __init__(self, message: str = "Cancelled: no video was saved.") -> None:
        super().__init__(message)
