"""ZeroGPU as an executor of the runner's jobs (ui.zerogpu_jobs): the job is recorded like any
other and run by the visitor's own event, through the GPU stream, in that event's thread;
a closed page puts it back in the queue for its visitor, Cancel cancels it."""

from __future__ import annotations

import asyncio
import threading
import types
from pathlib import Path

from allegro.events import ProgressEvent, Stage
from allegro.jobs import JOB_LABEL, JobRunner, JobState, JobStore
from allegro.request import GenerationRequest
from ui.zerogpu_jobs import LEFT_NOTE, WORKER_NAME, VisitorRuns, VisitorWorker


class GpuStream:
    """A stand-in for the spaces.GPU-wrapped generation: records each call (its thread and
    its arguments), yields ``steps`` progress events, then a result. ``gate``, if given, is
    awaited before each event after the first."""

    def __init__(self, steps: int = 3, gate: threading.Event | None = None) -> None:
        self.steps = steps
        self.gate = gate
        self.calls: list[tuple[str, GenerationRequest, dict, object]] = []
        self.started = threading.Event()
        self.closed = threading.Event()

    def __call__(self, request, labels, cancel):
        self.calls.append((threading.current_thread().name, request, dict(labels), cancel))
        try:
            for step in range(1, self.steps + 1):
                yield ProgressEvent(Stage.DENOISING, step / (self.steps + 1), step, self.steps)
                self.started.set()
                if self.gate is not None:
                    assert self.gate.wait(10)
            yield types.SimpleNamespace(video_path=Path("made.mp4"), warnings=("w",))
        finally:
            self.closed.set()


def _runner(tmp_path) -> JobRunner:
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), [])  # no worker threads at all
    runner.start()
    return runner


def test_the_visitors_event_runs_the_recorded_job_through_the_gpu_stream(tmp_path):
    runner = _runner(tmp_path)
    stream = GpuStream()
    runs = VisitorRuns(runner, VisitorWorker(stream))
    job = runner.submit(GenerationRequest("a fish", seed=5), "alice", {"owner": "alice"})
    assert runner.store.get(job.id).state == JobState.QUEUED  # recorded before it runs
    seen = []
    runner.subscribe(lambda: seen.append(runner.get(job.id).state))

    final = asyncio.run(runs.run(job.id))

    assert final.state == JobState.DONE and final.video == "made.mp4"
    assert final.warnings == ("w",) and final.attempts == 1
    assert runner.store.get(job.id).state == JobState.DONE
    assert JobState.RUNNING in seen  # followed like any job
    ((thread, request, labels, cancel),) = stream.calls
    assert thread.startswith("asyncio")  # the event's own worker thread, not a runner's
    assert request.seed == 5 and labels == {"owner": "alice", JOB_LABEL: job.id}
    assert cancel is None  # ZeroGPU's GPU process cannot take a token
    assert asyncio.run(runs.run(job.id)) is None  # not queued any more: not run twice
    assert WORKER_NAME == "zerogpu"


def test_a_closed_page_puts_the_job_back_for_its_visitor_who_runs_it_next_time(tmp_path):
    runner = _runner(tmp_path)
    gate = threading.Event()
    stream = GpuStream(steps=50, gate=gate)
    runs = VisitorRuns(runner, VisitorWorker(stream))
    job = runner.submit(GenerationRequest("a boat", seed=1), "bob")

    async def close_the_page():
        task = asyncio.create_task(runs.run(job.id))
        await asyncio.to_thread(stream.started.wait, 10)
        task.cancel()  # what Gradio does to a closed page's events
        try:
            await task
        except asyncio.CancelledError:
            return True
        finally:
            gate.set()
        return False

    assert asyncio.run(close_the_page())  # returns once the event's thread has ended
    assert stream.closed.is_set()  # the GPU stream was stopped, not left running
    assert len(stream.calls) == 1
    back = runner.get(job.id)
    assert back.state == JobState.QUEUED and back.note == LEFT_NOTE
    assert runner.store.get(job.id).note == LEFT_NOTE

    later = runner.submit(GenerationRequest("a newer one", seed=2), "bob")
    finals = asyncio.run(runs.run_waiting("bob"))
    assert [f.id for f in finals] == [job.id, later.id]  # the waiting one first
    assert all(f.state == JobState.DONE for f in finals)
    assert runner.get(job.id).attempts == 2


def test_cancel_ends_a_job_the_page_runs(tmp_path):
    runner = _runner(tmp_path)
    gate = threading.Event()
    stream = GpuStream(steps=50, gate=gate)
    runs = VisitorRuns(runner, VisitorWorker(stream))
    job = runner.submit(GenerationRequest("a cat", seed=1), "carol")

    async def run_and_cancel():
        task = asyncio.create_task(runs.run(job.id))
        await asyncio.to_thread(stream.started.wait, 10)
        runner.cancel(job.id, "carol")  # the Cancel button (or the Queue panel)
        gate.set()
        return await task

    final = asyncio.run(run_and_cancel())
    assert final.state == JobState.CANCELLED
    assert runner.store.get(job.id).state == JobState.CANCELLED
