"""The one bridge from a callback to a generator: work that reports through a callback (the
engine's ``on_progress``) runs in a thread, and what it reports comes out of a queue as a
plain iterator, then what it returns; what it raises is raised there. Used inside ZeroGPU's
GPU call (``ui.zerogpu_jobs``) and by the Ray actor (``allegro.jobs.remote``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from allegro.events import CancelToken

Emit = Callable[[Any], None]


@dataclass(frozen=True)
class _Returned:
    value: Any


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def run_streaming(
    work: Callable[[Emit], Any],
    cancel: CancelToken,
    name: str,
    coalesce: Callable[[Any, queue.Queue], Any] | None = None,
    join: bool = False,
) -> Iterator[Any]:
    """Run ``work(emit)`` in a thread named ``name``; yield each item it emits, then the
    value it returns (or raise what it raised). ``coalesce(item, queue)`` may replace an
    item by a newer one already waiting (a slow consumer skips stale progress). Closing the
    iterator before the end cancels ``cancel`` (the work stops within a step), and with
    ``join`` waits for the thread to end."""
    items: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            outcome: Any = _Returned(work(items.put))
        except BaseException as error:  # handed to the consumer, which raises it
            outcome = _Raised(error)
        items.put(outcome)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if coalesce is not None and not isinstance(item, (_Returned, _Raised)):
                item = coalesce(item, items)
            if isinstance(item, _Returned):
                yield item.value
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        if thread.is_alive():
            cancel.cancel()
            if join:
                thread.join()
