"""ZeroGPU as an executor of the job runner's jobs.

On ZeroGPU a job is recorded and followed like any other (``allegro.jobs``, ``ui.page_jobs``),
but no worker thread takes it: the visitor's own page event runs it, inside its
``spaces.GPU`` call. spaces 0.51.3 bills a call to the visitor's quota through the
``gr.Request`` of the event it runs in (zero/wrappers.py:189 and 321 read
``LocalContext.request``; zero/client.py:131-132 take the X-IP-Token from its headers):
from a runner thread there is none, and the call would be billed to the Space's own limit
(client.py:174-177). So a job there needs its visitor's open page.

If the page goes (Gradio cancels its events), the running job stops within a step and goes
back to the queue marked as waiting for its visitor (``LEFT_NOTE``); the visitor's next
Generate runs their waiting jobs first. Cancel ends it as cancelled.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Union

import gradio as gr

from allegro.errors import AllegroError
from allegro.events import CancelToken, ProgressCallback, ProgressEvent
from allegro.jobs import JOB_LABEL, Job, JobRunner, JobState, Worker
from allegro.jobs.stream import run_streaming
from allegro.request import GenerationRequest

if TYPE_CHECKING:
    from allegro.engine import Engine, GenerationResult

JobItem = Union[ProgressEvent, "GenerationResult"]
# stream(request, labels, cancel): the spaces.GPU-wrapped generation (ui.zerogpu)
GpuStream = Callable[[GenerationRequest, Mapping[str, str], "CancelToken | None"], Iterator]

LEFT_NOTE = (
    "Waiting for its visitor: on ZeroGPU a video runs on its visitor's GPU quota while their "
    "page is open. Press Generate on the page to run it (or cancel it)."
)
WORKER_NAME = "zerogpu"


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
    """Progress events, then the GenerationResult (what runs inside the GPU call, as a
    generator, which spaces.GPU needs to stream). Engine errors are raised here; closing
    the iterator early cancels the engine."""

    def work(emit) -> GenerationResult:
        return engine.generate(request, emit, cancel, labels=dict(labels))

    return run_streaming(work, cancel, "allegro-generation", coalesce=_latest)


class VisitorWorker(Worker):
    """Runs a job through the GPU stream in the calling thread (the visitor's event), its
    progress into the runner. In ZeroGPU's forked GPU process a token cannot reach the
    engine, so a cancel is seen here, between two progress events (one step apart)."""

    name = WORKER_NAME

    def __init__(self, stream: GpuStream) -> None:
        self._stream = stream

    def run(self, job: Job, on_progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        labels = {**job.labels, JOB_LABEL: job.id}
        items = self._stream(job.request, labels, None)
        try:
            for item in items:
                cancel.raise_if_cancelled()
                if isinstance(item, ProgressEvent):
                    on_progress(item)
                    continue
                return item
        except gr.Error as error:  # from the GPU process (ui.zerogpu.wrap_for_spaces)
            raise AllegroError(error.message) from None
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        raise RuntimeError("the generation ended without a result")


class VisitorRuns:
    """Runs a visitor's queued jobs in their own page (or API) event, one GPU call each."""

    def __init__(self, runner: JobRunner, worker: Worker) -> None:
        self.runner = runner
        self.worker = worker

    async def run(self, job_id: str) -> Job | None:
        """Run one queued job here (in a thread that keeps this event's context, where
        spaces finds the gr.Request: asyncio.to_thread copies contextvars); its final
        record, or None if it was not waiting. If this event is cancelled (a closed page),
        the job stops and waits for its visitor again (``LEFT_NOTE``)."""
        token = CancelToken()
        work = asyncio.ensure_future(
            asyncio.to_thread(self.runner.run_here, job_id, self.worker, token, LEFT_NOTE)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            token.cancel()
            raise

    async def run_waiting(self, owner: str) -> list[Job]:
        """Every queued job of ``owner``, in queue order (jobs a closed page left first);
        their final records."""
        done, tried = [], set()
        while True:
            waiting = [
                job
                for job in self.runner.list(owner, finished=0)
                if job.state == JobState.QUEUED and job.id not in tried
            ]
            if not waiting:
                return done
            tried.add(waiting[0].id)
            final = await self.run(waiting[0].id)
            if final is not None:  # None: taken meanwhile (another tab of the same visitor)
                done.append(final)
