"""The job runner: a persistent queue in front of one worker per device.

Submit, cancel, list, reorder and watch jobs; each worker thread takes the first queued
job, runs it and records the outcome. Every change is written to the store before the
call that made it returns. On start, the queue left by the last process runs on: queued
jobs in their order, and a job that was running when the process died runs again (its
record says so).

Several devices are a configuration: one ``Worker`` per device (given at construction or
added once the devices are known, ``add_worker``); each takes the first queued job when it
is free. A worker that loses its device or process mid-job raises ``WorkerLost``: the job
goes back to the front of the queue for another worker, and the lost one waits until it is
ready again before it takes another.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from allegro.errors import AllegroError, Cancelled
from allegro.events import CancelToken, ProgressCallback, ProgressEvent
from allegro.jobs.job import (
    ACTIVE_STATES,
    Job,
    JobError,
    JobLimitError,
    JobNotFoundError,
    JobState,
    WorkerLost,
    new_job_id,
    prepare_request,
)
from allegro.jobs.store import JobStore
from allegro.request import GenerationRequest

if TYPE_CHECKING:
    from allegro.engine import Engine, GenerationResult

logger = logging.getLogger(__name__)

JOB_LABEL = "job"  # the label that ties a video's settings to its job
WORKER_LABEL = "worker"  # the worker (device) that made it


@dataclass(frozen=True)
class JobLimits:
    per_owner: int = 10  # queued or running jobs one person may have
    total: int = 100  # queued or running jobs on the server
    # Queued or running jobs from one source (a network address), whatever owners it uses;
    # None: no such limit. The runner asks its ``caller_source`` who is submitting.
    per_source: int | None = None
    max_attempts: int = 3  # a job running at this many crashes is not started again


@dataclass(frozen=True)
class Hold:
    """Why queued jobs do not start now (the model is not ready yet, or failed), and the
    error new jobs are refused with meanwhile (None: they are accepted and wait)."""

    reason: str
    refusal: AllegroError | None = None


def no_hold() -> Hold | None:
    return None


class Worker(abc.ABC):
    """Runs jobs on one device. Subclass per kind of device; the runner gives each worker
    its own thread."""

    name = "worker"

    @abc.abstractmethod
    def run(self, job: Job, on_progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        """Make the job's video; raise WorkerLost if the device itself went away."""

    def recover(self) -> None:
        """Called once at start, before any job runs: clear what a crash left behind."""
        return None  # optional: nothing to clear by default

    def wait_ready(self) -> None:
        """After a ``WorkerLost``: block until this worker can take a job again (e.g. its
        process restarted), so that another worker takes the lost job meanwhile."""
        return None  # optional: ready at once by default


class EngineWorker(Worker):
    """The engine on one device of this process. ``engine`` may be a function returning it,
    for an app that chooses its model in the background. ``threads``: torch's CPU threads
    for this worker's thread (CPU workers sharing the cores; set per thread: with OpenMP,
    torch.set_num_threads sets the calling thread's team size, aten ParallelOpenMP.cpp)."""

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        output_dir: str | Path,
        name: str = "device 0",
        threads: int | None = None,
    ) -> None:
        self._engine = engine
        self.output_dir = Path(output_dir)
        self.name = name
        self.threads = threads

    def engine(self) -> Engine:
        return self._engine() if callable(self._engine) else self._engine

    def run(self, job: Job, on_progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        labels = {**job.labels, JOB_LABEL: job.id, WORKER_LABEL: self.name}
        return self.engine().generate(job.request, on_progress, cancel, labels=labels)

    def recover(self) -> None:
        from allegro.video import remove_leftovers

        for path in remove_leftovers(self.output_dir):
            logger.info("Removed %s, left by an interrupted save", path.name)


def _interrupted_note(when: float) -> str:
    moment = datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    return (
        f"Interrupted while running (the server stopped; found at its restart on {moment}); "
        "run again from the start with the same seed."
    )


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        workers: Sequence[Worker],
        limits: JobLimits = JobLimits(),
        prepare: Callable[[GenerationRequest], GenerationRequest] = prepare_request,
        inputs_dir: str | Path | None = None,
        caller_source: Callable[[], str | None] | None = None,
    ) -> None:
        """``inputs_dir``: where each job keeps copies of its input images (one folder per
        job, removed when it ends), so a queued job still has them after a restart.
        ``caller_source``: the source (address) of whoever calls submit or check_limits now,
        for ``limits.per_source``; it is kept in memory only (a restart forgets it)."""
        self.store = store
        self.workers: tuple[Worker, ...] = tuple(workers)  # more may come: add_worker
        self.limits = limits
        self._caller_source = caller_source or (lambda: None)
        self._sources: dict[str, str] = {}  # id -> source of the live jobs submitted here
        self._prepare = prepare
        self._changed = threading.Condition()
        # Jobs queued or running in this process, with their latest progress; the store
        # holds everything else. Guarded by _changed, as are the fields below.
        self._live: dict[str, Job] = {}
        self._versions: dict[str, int] = {}
        self._version = 0
        self._tokens: dict[str, CancelToken] = {}
        self._listeners: list[Callable[[], None]] = []
        self._inputs_dir = Path(inputs_dir) if inputs_dir is not None else None
        self._stopping = False
        self._started = False
        self._threads: list[threading.Thread] = []
        self._hold: Callable[[], Hold | None] = no_hold  # hold_while

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Recover the last process's queue, then start one thread per worker."""
        self._recover()
        with self._changed:
            self._started = True
            workers = self.workers
        for worker in workers:
            worker.recover()
        for worker in workers:
            self._start_thread(worker)

    def add_worker(self, worker: Worker) -> None:
        """One more device (e.g. once the model manager knows how many there are); it takes
        jobs at once if the runner has started. Its ``recover`` is not called then: other
        workers may be saving into the same folder (the app clears it before starting)."""
        with self._changed:
            self.workers = (*self.workers, worker)
            started = self._started
        if started:
            self._start_thread(worker)

    def _start_thread(self, worker: Worker) -> None:
        thread = threading.Thread(
            target=self._work, args=(worker,), name=f"allegro-jobs-{worker.name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def hold_while(self, hold: Callable[[], Hold | None]) -> None:
        """Start no job while ``hold()`` says why not (the model is not ready), and refuse
        new ones while its Hold has a refusal. Call ``wake()`` when it may have changed."""
        with self._changed:
            self._hold = hold
            self._changed.notify_all()

    def held(self) -> Hold | None:
        """Why queued jobs wait now, or None when they start as workers are free."""
        return self._hold()

    def wake(self) -> None:
        """The hold may have changed (from any thread): workers look again."""
        with self._changed:
            self._changed.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the workers. A running job is cancelled and queued again: it runs from the
        start at the next start, like a job interrupted by a crash."""
        with self._changed:
            self._stopping = True
            for token in self._tokens.values():
                token.cancel()
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _recover(self) -> None:
        now = time.time()
        for job in self.store.list(states=[JobState.RUNNING]):
            if job.cancel_requested:
                self.store.update(
                    job.id,
                    state=JobState.CANCELLED,
                    finished=now,
                    note="Cancelled (the server stopped before the cancel completed).",
                )
            elif job.attempts >= self.limits.max_attempts:
                self.store.update(
                    job.id,
                    state=JobState.INTERRUPTED,
                    finished=now,
                    error=(
                        f"The server stopped {job.attempts} times while this job ran, so it is "
                        "not started again (it may be what crashes the server). Submit it "
                        "again to retry."
                    ),
                )
            else:
                self.store.update(job.id, state=JobState.QUEUED, note=_interrupted_note(now))
        with self._changed:
            queued = {job.id: job for job in self.store.list(states=[JobState.QUEUED])}
            for job_id in set(self._live) - set(queued):
                self._forget(job_id)
            for job in queued.values():
                self._remember(job)
        if self._inputs_dir is not None and self._inputs_dir.is_dir():
            for folder in self._inputs_dir.iterdir():
                if folder.name not in queued:  # its job ended, or never got recorded
                    shutil.rmtree(folder, ignore_errors=True)

    # ---- the API ------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        owner: str,
        labels: Mapping[str, str] | None = None,
    ) -> Job:
        """Check the request (AllegroError with a readable message), fix its seed, and queue
        it. The job is on disk when this returns."""
        return self.submit_many([request], owner, labels)[0]

    def submit_many(
        self,
        requests: Sequence[GenerationRequest],
        owner: str,
        labels: Mapping[str, str] | None = None,
    ) -> list[Job]:
        """Queue several jobs, in this order (a batch): every request is checked, and the
        limits for all of them together, before the first is queued."""
        prepared = [self._prepare(request) for request in requests]
        jobs: list[Job] = []
        with self._changed:
            self.check_limits(owner, len(prepared))
            source = self._caller_source()
            try:
                for request in prepared:
                    job_id = new_job_id()
                    job = Job(
                        id=job_id,
                        owner=owner,
                        request=self._keep_inputs(job_id, request),
                        position=self.store.next_position(),
                        labels=dict(labels or {}),
                        created=time.time(),
                    )
                    self.store.add(job)
                    jobs.append(job)
                    if source:
                        self._sources[job_id] = source
            except BaseException:
                self._release_inputs(job_id)  # the job that failed to be recorded
                raise
            finally:
                for job in jobs:
                    self._remember(job)
        return jobs

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (no arguments, from any thread, holding the runner's lock: it
        must only take note, e.g. set an event) after every change to any job; returns the
        function that unsubscribes it. For watchers that must not hold a thread each."""
        with self._changed:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._changed:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """One job, with its live progress while it runs. ``owner=None`` sees every job
        (the CLI, an admin); anyone else only their own."""
        with self._changed:
            return self._get_locked(job_id, owner)

    def list(self, owner: str | None = None, finished: int = 50) -> list[Job]:
        """Queued and running jobs in queue order, then the ``finished`` most recent others."""
        with self._changed:
            active = [
                self._live.get(job.id, job)
                for job in self.store.list(owner=owner, states=ACTIVE_STATES)
            ]
        done_states = [state for state in JobState if state.finished]
        return active + self.store.list(
            owner=owner, states=done_states, limit=finished, newest_first=True
        )

    def queue_position(self, job_id: str) -> int:
        """How many jobs run before this one (0: it runs next, or it is running)."""
        with self._changed:
            job = self._live.get(job_id)
            if job is None or job.state != JobState.QUEUED:
                return 0
            return sum(
                1
                for other in self._live.values()
                if other.state == JobState.RUNNING
                or (other.state == JobState.QUEUED and other.position < job.position)
            )

    def estimated_wait(self, job_id: str, seconds_per_job: float | None = None) -> float | None:
        """Seconds until a queued job starts, with every worker taking jobs in parallel:
        it starts once (running + queued ahead - workers + 1) jobs have finished, and the
        workers finish about ``workers`` jobs per ``seconds_per_job`` (None: the median run
        of the last finished videos; None back when there are none yet). 0 when it would
        start now (or runs)."""
        if self.held() is not None:  # it waits for the model first: no telling how long
            return None
        with self._changed:
            workers = max(len(self.workers), 1)
            ahead = self.queue_position(job_id)
        to_finish = ahead - workers + 1
        if to_finish <= 0:
            return 0.0
        if seconds_per_job is None:
            seconds_per_job = self._typical_seconds()
            if seconds_per_job is None:
                return None
        return -(-to_finish // workers) * seconds_per_job  # whole rounds of the workers

    def _typical_seconds(self, recent: int = 9) -> float | None:
        runs = [
            job.finished - job.started
            for job in self.store.list(states=[JobState.DONE], limit=recent, newest_first=True)
            if job.started is not None and job.finished is not None
        ]
        return statistics.median(runs) if runs else None

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a queued job (it leaves the queue at once) or a running one (it stops
        within a denoising step, leaving no file). A finished job is returned as it is."""
        with self._changed:
            job = self._get_locked(job_id, owner)
            if job.state == JobState.QUEUED and self.store.update(
                job_id,
                expect=JobState.QUEUED,
                state=JobState.CANCELLED,
                cancel_requested=True,
                finished=time.time(),
            ):
                self._release_inputs(job_id)
                self._forget(job_id)
            elif job.state == JobState.RUNNING and not job.cancel_requested:
                self.store.update(job_id, cancel_requested=True)
                self._remember(dataclasses.replace(job, cancel_requested=True))
                if job_id in self._tokens:  # else another process runs it: it reads the store
                    self._tokens[job_id].cancel()
            return self._get_locked(job_id, owner)

    def reorder(self, owner: str, job_ids: Sequence[str]) -> list[Job]:
        """Put ``owner``'s queued jobs in this order (the list must name each exactly once).
        They keep the places they hold in the whole queue: other people's jobs don't move."""
        with self._changed:
            queued = self.store.list(owner=owner, states=[JobState.QUEUED])
            if sorted(job_ids) != sorted(job.id for job in queued):
                raise JobError(
                    "The new order must list each of your waiting jobs exactly once (one may "
                    "have started meanwhile): reload the queue and try again."
                )
            positions = dict(zip(job_ids, sorted(job.position for job in queued), strict=True))
            if not self.store.set_positions(positions, expect=JobState.QUEUED):
                raise JobError("A job started while reordering: reload the queue and try again.")
            for job_id, position in positions.items():
                if job_id in self._live:
                    self._remember(dataclasses.replace(self._live[job_id], position=position))
            return [self._get_locked(job_id, owner) for job_id in job_ids]

    def move(self, job_id: str, owner: str, offset: int) -> list[Job]:
        """Move one of ``owner``'s queued jobs ``offset`` places (negative: sooner)."""
        order = [job.id for job in self.store.list(owner=owner, states=[JobState.QUEUED])]
        if job_id not in order:
            raise JobError("Only a waiting job can be moved; this one has started or ended.")
        index = order.index(job_id)
        order.insert(max(0, min(len(order) - 1, index + offset)), order.pop(index))
        return self.reorder(owner, order)

    def watch(self, job_id: str, owner: str | None = None) -> Iterator[Job]:
        """The job now, then again at every change (progress included), ending with its
        final state. Any number of watchers; a slow one skips to the latest state; leaving
        the loop never cancels the job."""
        seen: int | None = None

        def changed() -> bool:
            return self._stopping or self._versions.get(job_id, -1) != seen

        while True:
            with self._changed:
                self._changed.wait_for(changed)
                seen = self._versions.get(job_id, -1)
                job = self._get_locked(job_id, owner)
                stopping = self._stopping
            yield job
            if job.state.finished or stopping:
                return

    def wait(self, job_id: str, owner: str | None = None) -> Job:
        """Block until the job has ended; its final record."""
        *_, final = self.watch(job_id, owner)
        return final

    # ---- internals (callers hold _changed) ----------------------------------------------

    def _get_locked(self, job_id: str, owner: str | None) -> Job:
        job = self._live.get(job_id) or self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFoundError(f"There is no job {job_id!r} of yours on this server.")
        return job

    def check_limits(self, owner: str, adding: int = 1) -> None:
        """JobLimitError, naming the limit, if ``adding`` more jobs of ``owner`` would pass
        one (what submit checks; a page checks it before queueing its request)."""
        hold = self.held()
        if hold is not None and hold.refusal is not None:  # e.g. the model failed to load
            raise hold.refusal
        asked = "" if adding == 1 else f"These are {adding:,} videos. "
        mine = self.store.count(ACTIVE_STATES, owner=owner)
        if mine + adding > self.limits.per_owner:
            raise JobLimitError(
                f"{asked}You have {mine} videos queued or running: the limit per person on "
                f"this server is {self.limits.per_owner}. Wait for one to finish, or cancel one."
            )
        everyone = self.store.count(ACTIVE_STATES)
        if everyone + adding > self.limits.total:
            raise JobLimitError(
                f"{asked}The queue is full: {everyone} videos are queued or running, the limit "
                f"of this server is {self.limits.total}. Try again when some have finished."
            )
        source = self._caller_source() if self.limits.per_source is not None else None
        if source:
            with self._changed:
                theirs = sum(1 for j, s in self._sources.items() if s == source and j in self._live)
            if theirs + adding > self.limits.per_source:
                raise JobLimitError(
                    f"{asked}Your network address has {theirs} videos queued or running: the "
                    f"limit per address on this server is {self.limits.per_source}, whatever "
                    "keys or pages send them. Wait for one to finish, or cancel one."
                )

    def _keep_inputs(self, job_id: str, request: GenerationRequest) -> GenerationRequest:
        """The request with its input images copied into the job's own folder (uploads live
        in a temporary folder that does not outlive the server)."""
        images = {
            name: path
            for name in ("first_image", "last_image")
            if (path := getattr(request, name)) is not None
        }
        if self._inputs_dir is None or not images:
            return request
        folder = self._inputs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        kept = {}
        for name, path in images.items():
            kept[name] = str(folder / f"{name}{Path(path).suffix.lower()}")
            shutil.copyfile(path, kept[name])
        return dataclasses.replace(request, **kept)

    def _release_inputs(self, job_id: str) -> None:
        if self._inputs_dir is not None:
            shutil.rmtree(self._inputs_dir / job_id, ignore_errors=True)

    def _remember(self, job: Job) -> None:
        self._live[job.id] = job
        self._version += 1
        self._versions[job.id] = self._version
        self._notify()

    def _forget(self, job_id: str) -> None:
        self._live.pop(job_id, None)
        self._sources.pop(job_id, None)
        self._versions.pop(job_id, None)
        self._tokens.pop(job_id, None)
        self._notify()

    def _notify(self) -> None:
        self._changed.notify_all()
        for listener in self._listeners:
            listener()

    # ---- the workers --------------------------------------------------------------------

    def _claim(self) -> tuple[Job, CancelToken] | None:
        """The first queued job, marked running (None when stopping)."""
        with self._changed:
            while not self._stopping:
                if self._hold() is not None:  # the model is not ready: the queue waits
                    self._changed.wait(timeout=5.0)
                    continue
                for job in self.store.list(states=[JobState.QUEUED], limit=1):
                    started, attempts = time.time(), job.attempts + 1
                    if self.store.update(
                        job.id,
                        expect=JobState.QUEUED,
                        state=JobState.RUNNING,
                        started=started,
                        attempts=attempts,
                    ):
                        running = dataclasses.replace(
                            self._live.get(job.id, job),
                            state=JobState.RUNNING,
                            started=started,
                            attempts=attempts,
                        )
                        token = self._tokens[job.id] = CancelToken()
                        self._remember(running)
                        return running, token
                    break  # another process took it: look again
                else:
                    self._changed.wait(timeout=5.0)
            return None

    def _on_progress(self, job_id: str, event: ProgressEvent) -> None:
        with self._changed:
            job = self._live.get(job_id)
            if job is not None:
                preview = job.preview if event.preview is None else event.preview
                self._remember(dataclasses.replace(job, progress=event, preview=preview))

    def _requeue(self, job_id: str, note: str) -> None:
        """Back to the queue at its old place (its position is kept), unless it was being
        cancelled: then it is cancelled."""
        with self._changed:
            job = self._live.get(job_id)
            if job is not None and job.cancel_requested:
                self.store.update(job_id, state=JobState.CANCELLED, finished=time.time(), note=note)
                self._forget(job_id)
                return
            self.store.update(job_id, state=JobState.QUEUED, note=note)
            self._tokens.pop(job_id, None)
            if job is not None:
                self._remember(
                    dataclasses.replace(
                        job, state=JobState.QUEUED, progress=None, preview=None, note=note
                    )
                )

    def _finish(self, job_id: str, state: JobState, **changes) -> None:
        with self._changed:
            self.store.update(job_id, state=state, finished=time.time(), **changes)
            self._release_inputs(job_id)  # before watchers hear that it ended
            self._forget(job_id)

    def _work(self, worker: Worker) -> None:
        while (claimed := self._claim()) is not None:
            job, token = claimed
            if self._run_claimed(worker, job, token):
                worker.wait_ready()

    def run_here(
        self, job_id: str, worker: Worker, token: CancelToken, left_note: str
    ) -> Job | None:
        """Run one queued job with ``worker`` in the calling thread (an executor that must
        run it there, e.g. inside a visitor's ZeroGPU call); None if it is not queued (it
        ended or another caller took it). ``token`` is the job's: ``cancel`` reaches it. If
        the caller cancels ``token`` itself (its visitor left), the job is queued again with
        ``left_note``, waiting for its visitor; their ``cancel`` ends it as cancelled."""
        with self._changed:
            job = self._live.get(job_id)
            if job is None or self._stopping or job.state != JobState.QUEUED:
                return None
            started, attempts = time.time(), job.attempts + 1
            if not self.store.update(
                job_id,
                expect=JobState.QUEUED,
                state=JobState.RUNNING,
                started=started,
                attempts=attempts,
            ):
                return None
            running = dataclasses.replace(
                job, state=JobState.RUNNING, started=started, attempts=attempts
            )
            self._tokens[job_id] = token
            self._remember(running)
        self._run_claimed(worker, running, token, left_note)
        return self.get(job_id)

    def _run_claimed(
        self, worker: Worker, job: Job, token: CancelToken, left_note: str | None = None
    ) -> bool:
        """Run a job marked running and record its outcome; True if the worker was lost.
        ``left_note``: a cancel nobody asked for (not a shutdown) puts the job back in the
        queue with this note instead of ending it."""
        try:
            result = worker.run(job, partial(self._on_progress, job.id), token)
        except WorkerLost as lost:
            logger.warning("Worker %s lost job %s: %s", worker.name, job.id, lost)
            self._requeue(job.id, f"Run again: its worker was lost mid-job ({lost}).")
            return True
        except Cancelled as cancelled:
            with self._changed:
                requested = self._live[job.id].cancel_requested
                if self._stopping and not requested:  # a shutdown, not the owner
                    self.store.update(
                        job.id, state=JobState.QUEUED, note=_interrupted_note(time.time())
                    )
                    self._forget(job.id)
                    return False
            if left_note is not None and not requested:
                self._requeue(job.id, left_note)
                return False
            self._finish(job.id, JobState.CANCELLED, error=str(cancelled))
        except AllegroError as error:
            self._finish(job.id, JobState.FAILED, error=str(error))
        except Exception as error:  # a bug: record it, keep serving the queue
            logger.exception("Job %s failed", job.id)
            self._finish(
                job.id,
                JobState.FAILED,
                error=f"Unexpected {type(error).__name__}: {error} (see the server log).",
            )
        else:
            self._finish(
                job.id,
                JobState.DONE,
                video=str(result.video_path),
                warnings=tuple(getattr(result, "warnings", ())),
            )
        return False
