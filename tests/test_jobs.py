"""The job runner and its SQLite store: real database files in a temp folder; a fake worker
where only the runner's logic is under test, the real engine on the tiny model elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from allegro.errors import Cancelled, InvalidRequestError
from allegro.events import ProgressEvent, Stage
from allegro.jobs import (
    EngineWorker,
    Job,
    JobError,
    JobLimitError,
    JobLimits,
    JobNotFoundError,
    JobRunner,
    JobState,
    JobStore,
    JobStoreError,
    Worker,
)
from allegro.request import GenerationRequest

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Result:
    def __init__(self, path: Path) -> None:
        self.video_path = path


class FakeWorker(Worker):
    """Runs a job by emitting progress events; ``gate`` holds each job at its first step
    until the test lets it go; ``fail`` makes a job raise."""

    name = "fake"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.gate = threading.Event()
        self.gate.set()
        self.ran: list[str] = []
        self.at_first_step = threading.Event()
        self.fail: BaseException | None = None

    def run(self, job, on_progress, cancel):
        self.ran.append(job.id)
        preview = np.full((4, 4, 3), 7, np.uint8)
        on_progress(ProgressEvent(Stage.DENOISING, 0.1, step=1, total=2, preview=preview))
        self.at_first_step.set()
        while not self.gate.wait(0.01):
            cancel.raise_if_cancelled()
        cancel.raise_if_cancelled()
        if self.fail is not None:
            raise self.fail
        on_progress(ProgressEvent(Stage.DENOISING, 0.5, step=2, total=2))
        path = self.folder / f"{job.id}.mp4"
        path.write_bytes(b"video")
        return _Result(path)


def request(prompt: str = "a red kite", **fields) -> GenerationRequest:
    return GenerationRequest(prompt, steps=2, **fields)


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


@pytest.fixture
def worker(tmp_path):
    return FakeWorker(tmp_path)


@pytest.fixture
def runner(store, worker):
    runner = JobRunner(store, [worker], JobLimits(per_owner=3, total=5))
    yield runner
    worker.gate.set()
    runner.stop(timeout=5)


def test_store_round_trip_and_wal(store, tmp_path):
    job = Job(
        id="j1",
        owner="ann",
        request=request(seed=5),
        position=store.next_position(),
        labels={"owner": "ann"},
        created=time.time(),
        warnings=("The prompt was cut to 512 tokens.",),
    )
    store.add(job)
    again = JobStore(tmp_path / "jobs.sqlite").get("j1")  # a second connection sees it
    assert again == job
    assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.update("j1", expect=JobState.RUNNING, state=JobState.DONE) is False
    assert store.update("j1", expect=JobState.QUEUED, state=JobState.RUNNING) is True
    assert store.get("j1").state == JobState.RUNNING
    assert store.update("j1", warnings=("another",)) and store.get("j1").warnings == ("another",)


def test_store_refuses_a_newer_schema(tmp_path):
    import sqlite3

    path = tmp_path / "jobs.sqlite"
    sqlite3.connect(path).execute("PRAGMA user_version=99")
    with pytest.raises(JobStoreError, match="newer Allegro Studio"):
        JobStore(path)


def test_submit_fixes_the_seed_and_records_before_returning(runner, store):
    job = runner.submit(request(), owner="ann")
    assert isinstance(job.seed, int)
    assert store.get(job.id).request == job.request  # on disk, seed included
    assert job.state == JobState.QUEUED


def test_a_bad_request_is_refused_at_submit(runner, store):
    with pytest.raises(InvalidRequestError, match="prompt"):
        runner.submit(request(prompt="  "), owner="ann")
    with pytest.raises(InvalidRequestError, match="frames"):
        runner.submit(request(frames=25), owner="ann")
    assert store.list() == []


def test_jobs_run_in_order_and_point_at_their_video(runner, worker):
    first = runner.submit(request("one"), owner="ann")
    second = runner.submit(request("two"), owner="bob")
    runner.start()
    assert runner.wait(second.id).state == JobState.DONE
    done = runner.wait(first.id)
    assert worker.ran == [first.id, second.id]
    assert Path(done.video).read_bytes() == b"video"
    assert done.attempts == 1 and done.finished >= done.started


def test_watchers_get_the_latest_state_at_once_then_live_events(runner, worker):
    worker.gate.clear()
    job = runner.submit(request(), owner="ann")
    runner.start()
    assert worker.at_first_step.wait(5)
    late = runner.watch(job.id, owner="ann")
    now = next(late)  # attached late: the current state at once, preview included
    assert now.state == JobState.RUNNING and now.progress.step == 1
    assert now.preview is not None and now.preview[0, 0, 0] == 7
    other = runner.watch(job.id)
    next(other)
    other.close()  # detaching never cancels
    worker.gate.set()
    states = [snapshot.state for snapshot in late]
    assert states[-1] == JobState.DONE
    assert runner.get(job.id).state == JobState.DONE


def test_cancel_a_queued_and_a_running_job(runner, worker, store):
    worker.gate.clear()
    running = runner.submit(request("one"), owner="ann")
    waiting = runner.submit(request("two"), owner="ann")
    runner.start()
    assert worker.at_first_step.wait(5)
    assert runner.cancel(waiting.id, owner="ann").state == JobState.CANCELLED
    assert store.get(waiting.id).state == JobState.CANCELLED
    assert runner.cancel(running.id, owner="ann").cancel_requested
    assert store.get(running.id).cancel_requested  # recorded before acknowledged
    final = runner.wait(running.id)
    assert final.state == JobState.CANCELLED and final.video is None
    assert worker.ran == [running.id]


def test_owners_see_only_their_own_jobs(runner):
    mine = runner.submit(request(), owner="ann")
    with pytest.raises(JobNotFoundError):
        runner.get(mine.id, owner="mallory")
    with pytest.raises(JobNotFoundError):
        runner.cancel(mine.id, owner="mallory")
    with pytest.raises(JobNotFoundError):
        next(runner.watch(mine.id, owner="mallory"))
    assert [job.id for job in runner.list(owner="ann")] == [mine.id]
    assert runner.list(owner="mallory") == []
    assert runner.get(mine.id, owner="ann").state == JobState.QUEUED


def test_limits_refuse_with_the_limit_named(store, worker):
    runner = JobRunner(store, [worker], JobLimits(per_owner=2, total=3))
    runner.submit(request(), owner="ann")
    runner.submit(request(), owner="ann")
    with pytest.raises(JobLimitError, match="limit per person on this server is 2"):
        runner.submit(request(), owner="ann")
    runner.submit(request(), owner="bob")
    with pytest.raises(JobLimitError, match="limit of this server is 3"):
        runner.submit(request(), owner="cyd")


def test_a_batch_is_checked_against_the_limits_as_a_whole(store, worker):
    runner = JobRunner(store, [worker], JobLimits(per_owner=3, total=4))
    runner.submit(request(), owner="ann")
    with pytest.raises(JobLimitError, match=r"These are 3 videos\. You have 1 .* is 3"):
        runner.submit_many([request("x"), request("y"), request("z")], owner="ann")
    assert store.count([JobState.QUEUED]) == 1  # nothing of the refused batch was queued
    batch = runner.submit_many([request("x", seed=5), request("y", seed=6)], owner="ann")
    assert [job.request.prompt for job in runner.list("ann")][1:] == ["x", "y"]
    assert [job.seed for job in batch] == [5, 6]
    with pytest.raises(JobLimitError, match=r"These are 2 videos\. The queue is full: 3 .* is 4"):
        runner.submit_many([request(), request()], owner="bob")


def test_subscribers_hear_every_change_until_they_leave(runner, worker):
    heard = []
    unsubscribe = runner.subscribe(lambda: heard.append(1))
    job = runner.submit(request(), owner="ann")
    assert heard  # the submit
    runner.start()
    runner.wait(job.id)
    count = len(heard)
    assert count >= 4  # started, two progress events, done
    unsubscribe()
    runner.submit(request(), owner="ann")
    assert len(heard) == count


def test_a_job_keeps_its_own_copy_of_its_images_until_it_ends(store, worker, tmp_path):
    upload = tmp_path / "upload.PNG"
    upload.write_bytes(b"image bytes")
    inputs = tmp_path / "job-inputs"
    worker.gate.clear()
    runner = JobRunner(store, [worker], inputs_dir=inputs)
    job = runner.submit(request(first_image=str(upload), last_image=str(upload)), owner="ann")
    upload.unlink()  # Gradio's upload folder does not outlive the server
    kept = Path(job.request.first_image)
    assert kept.parent == inputs / job.id and kept.name == "first_image.png"
    assert kept.read_bytes() == b"image bytes"
    assert store.get(job.id).request.last_image == str(inputs / job.id / "last_image.png")

    restarted = JobRunner(store, [worker], inputs_dir=inputs)  # a restart keeps them
    restarted.start()
    worker.at_first_step.wait(5)
    assert kept.is_file()
    worker.gate.set()
    assert restarted.wait(job.id).state == JobState.DONE
    assert not (inputs / job.id).exists()  # removed when the job ended
    restarted.stop(timeout=5)

    queued = runner.submit(request(first_image=str(tmp_path / f"{job.id}.mp4")), owner="ann")
    runner.cancel(queued.id)
    assert not (inputs / queued.id).exists()
    (inputs / "stray").mkdir()  # e.g. left by a crash during a submit
    JobRunner(store, [worker], inputs_dir=inputs).start()
    assert not (inputs / "stray").exists()


def test_reorder_and_move_only_touch_the_owners_queued_jobs(runner, worker):
    a1 = runner.submit(request("a1"), owner="ann")
    b1 = runner.submit(request("b1"), owner="bob")
    a2 = runner.submit(request("a2"), owner="ann")
    a3 = runner.submit(request("a3"), owner="ann")
    runner.reorder("ann", [a3.id, a1.id, a2.id])
    runner.move(a2.id, "ann", -5)  # to the front of ann's jobs
    with pytest.raises(JobError, match="exactly once"):
        runner.reorder("ann", [a1.id])
    with pytest.raises(JobError, match="exactly once"):
        runner.reorder("ann", [a1.id, a2.id, b1.id])
    runner.start()
    runner.wait(a1.id)
    assert worker.ran == [a2.id, b1.id, a3.id, a1.id]


def test_a_failed_job_keeps_its_reason_and_the_queue_goes_on(runner, worker):
    worker.fail = InvalidRequestError("Allegro cannot make that.")
    failed = runner.submit(request(), owner="ann")
    runner.start()
    assert runner.wait(failed.id).error == "Allegro cannot make that."
    worker.fail = RuntimeError("boom")
    bug = runner.wait(runner.submit(request(), owner="ann").id)
    assert bug.state == JobState.FAILED and "RuntimeError: boom" in bug.error
    worker.fail = None
    assert runner.wait(runner.submit(request(), owner="ann").id).state == JobState.DONE


# The "crashed" runner's thread is ended by a SystemExit, which pytest reports.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_restart_runs_the_queue_again_and_says_so(store, tmp_path):
    worker = FakeWorker(tmp_path)
    worker.gate.clear()
    runner = JobRunner(store, [worker])
    running = runner.submit(request("one"), owner="ann")
    waiting = runner.submit(request("two"), owner="ann")
    runner.start()
    assert worker.at_first_step.wait(5)
    # What a crash leaves: the store as it is (a clean stop would requeue the job).
    crashed_store = JobStore(store.path)
    assert crashed_store.get(running.id).state == JobState.RUNNING

    again = FakeWorker(tmp_path)
    restarted = JobRunner(crashed_store, [again])
    restarted.start()
    assert restarted.wait(waiting.id).state == JobState.DONE
    first = restarted.get(running.id)
    assert first.state == JobState.DONE and first.attempts == 2
    assert "Interrupted while running" in first.note
    assert again.ran == [running.id, waiting.id]
    assert first.seed == running.seed
    restarted.stop(timeout=5)
    worker.fail = SystemExit()  # the "crashed" runner's thread ends without writing
    worker.gate.set()


def test_a_job_that_keeps_crashing_the_server_is_not_started_again(store, tmp_path):
    runner = JobRunner(store, [FakeWorker(tmp_path)], JobLimits(max_attempts=2))
    job = runner.submit(request(), owner="ann")
    store.update(job.id, state=JobState.RUNNING, attempts=2)
    runner.start()
    final = runner.wait(job.id)
    assert final.state == JobState.INTERRUPTED and "stopped 2 times" in final.error
    runner.stop(timeout=5)


def test_stop_puts_the_running_job_back_in_the_queue(store, worker):
    worker.gate.clear()
    runner = JobRunner(store, [worker])
    job = runner.submit(request(), owner="ann")
    runner.start()
    assert worker.at_first_step.wait(5)
    runner.stop(timeout=5)
    assert store.get(job.id).state == JobState.QUEUED


def test_two_workers_share_one_queue(store, tmp_path):
    workers = [FakeWorker(tmp_path), FakeWorker(tmp_path)]
    for worker in workers:
        worker.gate.clear()
    runner = JobRunner(store, workers)
    jobs = [runner.submit(request(f"p{i}"), owner="ann") for i in range(3)]
    runner.start()
    assert workers[0].at_first_step.wait(5) and workers[1].at_first_step.wait(5)
    running = [job for job in runner.list("ann") if job.state == JobState.RUNNING]
    assert len(running) == 2  # one job per device at once
    for worker in workers:
        worker.gate.set()
    assert all(runner.wait(job.id).state == JobState.DONE for job in jobs)
    assert sorted(workers[0].ran + workers[1].ran) == sorted(job.id for job in jobs)
    runner.stop(timeout=5)


def _engine_runner(model: Path, folder: Path) -> tuple[JobRunner, Path]:
    """A runner with the real engine on the tiny model; its output folder."""
    from allegro.engine import Engine
    from allegro.loading import PipelineSpec

    output = folder / "out"
    engine = Engine(PipelineSpec(model=str(model)), output)
    return JobRunner(JobStore(folder / "jobs.sqlite"), [EngineWorker(engine, output)]), output


def test_engine_worker_makes_the_video_with_the_submitted_seed(tiny_model, tmp_path):
    from allegro.video import read_settings

    runner, _output = _engine_runner(tiny_model, tmp_path)
    job = runner.submit(
        request(frames=24, height=160, width=160), owner="ann", labels={"owner": "ann"}
    )
    runner.start()
    events = [snapshot.progress for snapshot in runner.watch(job.id) if snapshot.progress]
    final = runner.get(job.id)
    assert final.state == JobState.DONE, final.error
    settings = read_settings(final.video)
    assert settings["seed"] == job.seed and "labels" not in settings  # never in the MP4
    sidecar = json.loads(Path(final.video).with_suffix(".json").read_text())
    assert sidecar["labels"] == {"owner": "ann", "job": job.id, "worker": "device 0"}
    assert any(event.stage == Stage.DENOISING for event in events)
    runner.stop(timeout=5)


def test_cancel_from_the_engine_is_recorded(tiny_model, tmp_path):
    """A real cancel: the engine raises Cancelled within a step and leaves no file."""
    runner, output = _engine_runner(tiny_model, tmp_path)
    job = runner.submit(
        GenerationRequest("slow", steps=50, frames=24, height=160, width=160), owner="ann"
    )
    runner.start()
    for snapshot in runner.watch(job.id):
        if snapshot.progress is not None and snapshot.progress.step >= 1:
            runner.cancel(job.id, owner="ann")
    final = runner.get(job.id)
    assert final.state == JobState.CANCELLED
    assert final.error == str(Cancelled())
    assert not output.exists() or not any(output.iterdir())
    runner.stop(timeout=5)


def test_restart_removes_what_an_interrupted_save_left(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    leftovers = [output / ".a.x1.partial.mp4", output / ".b.mp4.reserved"]
    for path in leftovers:
        path.write_bytes(b"")
    kept = output / "c.mp4"
    kept.write_bytes(b"video")
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), [EngineWorker(lambda: None, output)])
    runner.start()
    assert sorted(output.iterdir()) == [kept]
    runner.stop(timeout=5)


@pytest.mark.slow
def test_kill_9_while_a_job_runs_then_both_finish_in_order(tiny_model, tmp_path):
    """The crash proof: kill -9 the process while a job runs and another waits; start it
    again: both finish, in order, with the seeds fixed at submit, and no temp file stays."""
    from allegro.video import read_settings

    db, output = tmp_path / "jobs.sqlite", tmp_path / "out"
    command = [sys.executable, "-m", "tests.job_process", str(db), str(output), str(tiny_model)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.Popen(
        [*command, "--steps", "8", "--submit", "first video", "second video"],
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        running = None
        while running is None and time.monotonic() < deadline and first.poll() is None:
            if db.exists():
                with closing(JobStore(db)) as store:
                    running = next(iter(store.list(states=[JobState.RUNNING])), None)
            time.sleep(0.02)
        assert running is not None, "the first job never started"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    with closing(JobStore(db)) as store:
        before = store.list()
    assert [job.state for job in before] == [JobState.RUNNING, JobState.QUEUED]
    seeds = {job.id: job.seed for job in before}

    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, timeout=180)
    with closing(JobStore(db)) as store:
        first_job, second_job = store.list()
    assert first_job.state == second_job.state == JobState.DONE
    assert first_job.attempts == 2 and "Interrupted while running" in first_job.note
    assert second_job.attempts == 1
    assert first_job.finished <= second_job.started  # in order
    for job in (first_job, second_job):
        assert job.seed == seeds[job.id]
        assert read_settings(job.video)["seed"] == seeds[job.id]
        assert json.loads(Path(job.video).with_suffix(".json").read_text())["seed"] == job.seed
    names = sorted(path.name for path in output.iterdir())
    assert len(names) == 6 and not [name for name in names if name.startswith(".")], names
