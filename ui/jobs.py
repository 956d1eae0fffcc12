"""Running one generation off the event loop: the engine works in a worker thread and its
progress events come out of a queue, as a plain iterator (which ``spaces.GPU`` can wrap)
and as an async iterator (which a cancelled Gradio task stops, cancelling the engine)."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Union

from allegro.events import CancelToken, ProgressEvent
from allegro.jobs.stream import run_streaming
from allegro.request import GenerationRequest

if TYPE_CHECKING:
    from allegro.engine import Engine, GenerationResult

JobItem = Union[ProgressEvent, "GenerationResult"]


def _latest(first: object, events: queue.Queue) -> object:
    """``first`` or whatever newer item is already waiting: a slow consumer skips stale
    progress, but never loses the newest preview image nor the final outcome (which is not
    a ProgressEvent, so it ends the skipping)."""
    item = first
    preview = first.preview if isinstance(first, ProgressEvent) else None
    while isinstance(item, ProgressEvent):
        try:
            newer = events.get_nowait()
        except queue.Empty:
            break
        if isinstance(newer, ProgressEvent) and newer.preview is not None:
            preview = newer.preview
        item = newer
    if isinstance(item, ProgressEvent) and item.preview is None and preview is not None:
        item = replace(item, preview=preview)
    return item


def stream_generation(
    engine: Engine,
    request: GenerationRequest,
    labels: Mapping[str, str],
    cancel: CancelToken,
) -> Iterator[JobItem]:
    """Progress events, then the GenerationResult. Engine errors are raised here; closing
    the iterator early cancels the engine."""

    def work(emit) -> GenerationResult:
        return engine.generate(request, emit, cancel, labels=dict(labels))

    return run_streaming(work, cancel, "allegro-generation", coalesce=_latest)


_END = object()


async def iterate_in_thread(items: Iterator[JobItem], cancel: CancelToken) -> AsyncIterator:
    """Consume a blocking iterator without blocking the event loop. If the awaiting task is
    cancelled (Gradio's Cancel, a client's job.cancel(), a closed page), the engine is told
    to stop; it does within one denoising step."""
    try:
        while (item := await asyncio.to_thread(next, items, _END)) is not _END:
            yield item
    except BaseException:
        cancel.cancel()
        raise
