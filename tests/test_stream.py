"""The one callback -> generator bridge (allegro/jobs/stream.py), and its two users:
ZeroGPU's GPU call (ui/zerogpu_jobs.py) and the Ray actor (allegro/jobs/remote.py, driven here
without Ray: only its generator is under test)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from allegro.errors import Cancelled, GpuOutOfMemoryError
from allegro.events import CancelToken, ProgressEvent, Stage
from allegro.jobs.remote import Failed, Finished, VideoActor
from allegro.jobs.stream import run_streaming


def test_items_then_the_returned_value_or_the_raised_error():
    def work(emit):
        emit(1)
        emit(2)
        return "done"

    assert list(run_streaming(work, CancelToken(), "t")) == [1, 2, "done"]

    def failing(emit):
        emit(1)
        raise GpuOutOfMemoryError("out of memory")

    items = run_streaming(failing, CancelToken(), "t")
    assert next(items) == 1
    with pytest.raises(GpuOutOfMemoryError):
        next(items)


def test_closing_early_cancels_the_work_and_join_waits_for_it():
    cancel, started, ended = CancelToken(), threading.Event(), threading.Event()

    def work(emit):
        emit("first")
        started.set()
        while not cancel.cancelled:  # a step loop that checks its token
            threading.Event().wait(0.01)
        ended.set()
        raise Cancelled()

    items = run_streaming(work, cancel, "t", join=True)
    assert next(items) == "first"
    started.wait(5)
    items.close()
    assert cancel.cancelled and ended.is_set()  # join: the thread ended before close returned


def test_coalesce_skips_stale_items_but_never_the_outcome():
    gate = threading.Event()

    def work(emit):
        for step in range(5):
            emit(step)
        gate.set()
        return "done"

    def newest(item, waiting):
        gate.wait(5)  # everything is queued by now
        while not waiting.empty():
            newer = waiting.get_nowait()
            if not isinstance(newer, int):
                waiting.put(newer)  # the outcome: put back, it ends the stream
                break
            item = newer
        return item

    assert list(run_streaming(work, CancelToken(), "t", coalesce=newest)) == [4, "done"]


class _Engine:
    def __init__(self, fail: BaseException | None = None):
        self.fail = fail

    def generate(self, request, on_progress, cancel, labels):
        on_progress(ProgressEvent(Stage.DENOISING, 0.5, 1, 2))
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(video_path=Path("/nowhere/v.mp4"), seconds=1.0, warnings=())


def _actor(engine, tmp_path) -> VideoActor:
    actor = VideoActor.__new__(VideoActor)  # no model load: only the generator is tested
    actor.threads, actor.engine, actor.output, actor._tokens = None, engine, tmp_path, {}
    return actor


def test_the_ray_actor_streams_progress_then_its_outcome(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"mp4")
    items = list(_actor(_Engine(), tmp_path).generate("job1", None, {}))
    assert isinstance(items[0], ProgressEvent)
    assert isinstance(items[1], Finished) and items[1].files == {"v.mp4": b"mp4"}
    failed = list(_actor(_Engine(GpuOutOfMemoryError("oom")), tmp_path).generate("j", None, {}))
    assert failed[-1] == Failed("GpuOutOfMemoryError", "oom")
