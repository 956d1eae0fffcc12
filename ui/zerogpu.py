"""Hugging Face Spaces: ``spaces.GPU`` around generation, with a duration from the cost model,
and on ZeroGPU a refusal (with settings that fit) for requests longer than a call may last.

Off Spaces nothing here imports ``spaces`` and the generation function is used as is.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from allegro.costs import RequestShape, request_shape
from allegro.errors import InvalidRequestError
from allegro.request import GenerationRequest
from ui.config import env_bool
from ui.estimates import format_duration

logger = logging.getLogger(__name__)

# A ZeroGPU call also moves the weights onto the lent GPU, decodes, interpolates and saves;
# the cost model's figure gets a margin and a fixed allowance for that.
DURATION_MARGIN = 1.25
DURATION_OVERHEAD_SECONDS = 30

# Fallbacks offered when a request does not fit, cheapest change first.
_FALLBACK_STEPS = (50, 30, 20)
_FALLBACK_SHAPES = ((40, 720, 1280), (40, 368, 640))

Estimator = Callable[[RequestShape], "float | None"]  # the cost model's seconds, if known
F = TypeVar("F", bound=Callable)


def gpu_duration(estimate_seconds: float | None, default: int) -> int:
    """Seconds to ask ZeroGPU for; ``default`` where there is no estimate."""
    if estimate_seconds is None:
        return default
    return math.ceil(estimate_seconds * DURATION_MARGIN + DURATION_OVERHEAD_SECONDS)


@dataclass(frozen=True)
class Option:
    frames: int
    height: int
    width: int
    steps: int
    fast_mode: bool
    seconds: int  # the duration it would ask for

    def describe(self) -> str:
        fast = ", fast mode" if self.fast_mode else ""
        return (
            f"{self.frames} frames at {self.width}x{self.height}, {self.steps} steps{fast} "
            f"(about {format_duration(self.seconds)})"
        )


def _sizes(own: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The request's own (frames, height, width), then smaller fallbacks."""
    smaller = [size for size in _FALLBACK_SHAPES if math.prod(size) < math.prod(own)]
    return [own, *smaller]


def fitting_options(
    request: GenerationRequest, estimate: Estimator, limit: int, default: int, count: int = 3
) -> list[Option]:
    """Up to ``count`` variants of a resolved ``request`` that fit in ``limit`` seconds: for
    each size (its own first, then smaller ones), the most steps that fit, without fast mode
    if possible."""
    found: list[Option] = []
    shape = request_shape(request)
    for frames, height, width in _sizes(shape.size):
        step_counts = (shape.steps, *[s for s in _FALLBACK_STEPS if s < shape.steps])
        for steps in step_counts:
            for fast in sorted({shape.fast_mode, True}):
                # Fast mode and the step cache are alternatives: a fast variant drops the cache.
                variant = replace(
                    shape,
                    frames=frames,
                    height=height,
                    width=width,
                    steps=steps,
                    fast_mode=fast,
                    step_cache=shape.step_cache and not fast,
                )
                seconds = gpu_duration(estimate(variant), default)
                if seconds <= limit:
                    found.append(Option(frames, height, width, steps, fast, seconds))
                    break
            else:
                continue
            break
        if len(found) == count:
            break
    return found


def check_fits(request: GenerationRequest, estimate: Estimator, limit: int, default: int) -> int:
    """The duration to ask for; InvalidRequestError (proposing settings that fit) when it is
    over ``limit``. ``request`` must be resolved (no None sizes)."""
    seconds = gpu_duration(estimate(request_shape(request)), default)
    if seconds <= limit:
        return seconds
    message = (
        f"This video would need about {format_duration(seconds)} of GPU time, but a call on "
        f"this ZeroGPU Space may last at most {format_duration(limit)}."
    )
    options = fitting_options(request, estimate, limit, default)
    if options:
        message += " Settings that fit: " + "; ".join(o.describe() for o in options) + "."
    else:
        message += (
            " No setting of this model fits; run Allegro Studio on a dedicated GPU "
            "(duplicate the Space with GPU hardware, or run it locally)."
        )
    raise InvalidRequestError(message)


def wrap_for_spaces(
    function: F,
    duration: Callable[..., int],
    environ: Mapping[str, str],
    as_user_error: Callable[[BaseException], Exception],
) -> F:
    """``spaces.GPU(duration=...)`` around ``function`` (a generator function) on a Space;
    ``function`` itself elsewhere.

    On ZeroGPU ``function`` runs in a forked worker, and of an exception raised there only a
    ``gr.Error`` comes back as it is; any other becomes "ZeroGPU worker error" and its class
    name (spaces 0.51.3 zero/wrappers.py:392-400, 474-478). So inside the worker every error
    is turned into the gr.Error the page would show (``as_user_error``)."""
    if not environ.get("SPACE_ID"):
        return function
    try:
        import spaces
    except ImportError:
        if environ.get("SPACES_ZERO_GPU"):
            raise RuntimeError(
                "This is a ZeroGPU Space but the 'spaces' package is missing."
            ) from None
        logger.info("Not wrapping generation in spaces.GPU: the spaces package is missing.")
        return function
    if not env_bool(environ, "SPACES_ZERO_GPU"):  # spaces.GPU is a no-op there anyway
        return spaces.GPU(duration=duration)(function)

    @functools.wraps(function)
    def in_gpu_worker(*args, **kwargs):
        try:
            yield from function(*args, **kwargs)
        except Exception as error:
            raise as_user_error(error) from None

    return spaces.GPU(duration=duration)(in_gpu_worker)
