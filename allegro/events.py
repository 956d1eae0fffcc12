"""Progress events streamed by the engine to every front end, and the cancel token."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from allegro.errors import Cancelled

if TYPE_CHECKING:
    import numpy as np


class Stage(str, Enum):
    LOADING = "loading model"
    DOWNLOADING = "downloading weights"
    ENCODING = "encoding prompt"
    ENCODING_IMAGES = "encoding images"
    DENOISING = "denoising"
    DECODING = "decoding"
    INTERPOLATING = "interpolating"
    SAVING = "saving"
    DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    """One update. ``fraction`` is the whole job's progress in [0, 1]; it reaches 1.0 only
    with ``Stage.DONE``. ``step``/``total`` count units inside the stage (denoising steps,
    interpolated frames, downloaded bytes). ``preview`` is an RGB uint8 image (H, W, 3)."""

    stage: Stage
    fraction: float
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    message: str = ""
    preview: np.ndarray | None = None


ProgressCallback = Callable[[ProgressEvent], Any]


def ignore_progress(event: ProgressEvent) -> None:
    """Default callback: drop events."""


class CancelToken:
    """Thread-safe cancel flag checked by the engine between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or ``timeout`` seconds pass (False)."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
