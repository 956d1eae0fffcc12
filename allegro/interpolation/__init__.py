"""Frame interpolation: 15 fps model output -> 30 fps video.

Methods, best first where they can run:

- ``flow`` (default): dense optical flow both ways (OpenCV DIS), objects too fast for it
  matched by features, both neighbours warped to the midpoint and blended with
  occlusion-aware weights. CPU only, no weights.
- ``ema-vfi``: a learned interpolation network; needs PyTorch and its weights file.
- ``blend``: plain average of the neighbours; ghosts on motion, never fails.

Importing this package is light: OpenCV is imported by the flow module and PyTorch by the
EMA-VFI module, each only when that method is asked for.
"""

from __future__ import annotations

import os

from allegro.errors import InterpolationError
from allegro.interpolation.base import Availability, Interpolator

METHODS = ("flow", "ema-vfi", "blend")
DEFAULT_METHOD = "flow"

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Availability",
    "Interpolator",
    "create_interpolator",
    "method_availability",
    "require_available",
]


def _check_name(name: str) -> None:
    if name not in METHODS:
        choices = ", ".join(METHODS)
        raise InterpolationError(
            f"Unknown interpolation method {name!r}. Choose one of: {choices}.",
            field="interpolation_method",
        )


def method_availability(name: str, weights: str | os.PathLike[str] | None = None) -> Availability:
    """Whether ``name`` can run here; ``weights`` is an explicit EMA-VFI weights path."""
    _check_name(name)
    if name == "ema-vfi":
        from allegro.interpolation import ema_vfi_weights

        return ema_vfi_weights.availability(weights)
    # flow and blend need only what the app already depends on.
    return Availability(True)


def require_available(name: str, weights: str | os.PathLike[str] | None = None) -> None:
    """InterpolationError with the reason if ``name`` cannot run here."""
    availability = method_availability(name, weights)
    if not availability.available:
        raise InterpolationError(
            f"The {name} interpolation method is not available: {availability.reason}"
        )


def create_interpolator(
    name: str, weights: str | os.PathLike[str] | None = None, device: str | None = None
) -> Interpolator:
    """A ready-to-use interpolator for method ``name``.

    ``weights`` and ``device`` only matter for ``ema-vfi``. Raises InterpolationError for an
    unknown name or a method that cannot run here, with the reason.
    """
    _check_name(name)
    if name == "flow":
        from allegro.interpolation.flow import FlowInterpolator

        return FlowInterpolator()
    if name == "blend":
        from allegro.interpolation.blend import BlendInterpolator

        return BlendInterpolator()
    from allegro.interpolation import ema_vfi_weights

    availability = ema_vfi_weights.availability(weights)
    if not availability.available:
        raise InterpolationError(f"EMA-VFI interpolation is not available: {availability.reason}")
    from allegro.interpolation import ema_vfi  # PyTorch, only now

    return ema_vfi.EmaVfiInterpolator(ema_vfi_weights.find_weights(weights), device=device)
