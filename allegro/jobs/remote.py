"""Workers on a Ray cluster: the app stays the front end (page, job store, gallery) and each
GPU of the cluster runs one actor that loads the model once and makes whole videos.

Ray actors, not Ray Serve: the job runner already queues, persists, orders and assigns
jobs, and knows which job runs where (cancel, a lost worker's job re-queued); Serve would
add a second queue, autoscaling and HTTP routing that a video of minutes does not need.

Each job is one call of an actor's generator method, read as a Ray streaming generator
(ray 2.60 ``ObjectRefGenerator``, python/ray/actor.py:651 "streaming" for an actor
generator task): progress events with their previews come back while it runs, then the
finished files as bytes, written into the app's output folder atomically (no shared file
system). Cancel is a second method call on the same actor (``max_concurrency=2``) that sets
the job's CancelToken, which the engine checks after every denoising step. An actor that
dies mid-job (process killed, node lost) surfaces as ``RayActorError``: the job goes back
to the queue (``WorkerLost``) for another actor, and Ray restarts the dead one
(``max_restarts``), which loads the model again before it takes a job.

``ray`` is an optional extra (requirements-ray.txt): imported only here, when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allegro import errors
from allegro.errors import AllegroError, UnsupportedSetupError
from allegro.events import CancelToken, ProgressCallback, ProgressEvent
from allegro.jobs.job import Job, WorkerLost
from allegro.jobs.ray_auth import prepare_token
from allegro.jobs.runner import JOB_LABEL, WORKER_LABEL, Worker
from allegro.jobs.stream import run_streaming

if TYPE_CHECKING:
    from allegro.engine import GenerationResult
    from allegro.loading import PipelineSpec

logger = logging.getLogger(__name__)

RAY_MISSING = (
    "--ray needs Ray, which is not installed: pip install -r requirements-ray.txt (on this "
    "machine and every node of the cluster), or start without --ray."
)


@dataclass(frozen=True)
class Finished:
    """What an actor sends back for a made video: its files by name, the MP4 among them."""

    video: str  # the MP4's file name
    files: dict[str, bytes]
    seconds: float
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Failed:
    kind: str  # the allegro.errors class name (Cancelled, GpuOutOfMemoryError, …)
    message: str


class VideoActor:
    """One per GPU of the cluster (made a Ray actor by ``start_actors``). Loads the model at
    start, then makes whole videos into a private folder and sends them back as bytes. Ray
    shows an actor with ``num_gpus=1`` only its own GPU (it sets CUDA_VISIBLE_DEVICES, ray
    2.60 _private/accelerators/nvidia_gpu.py:109-117), so the engine's default device
    ("cuda") is that GPU, and its offload is chosen from that GPU's free memory."""

    def __init__(self, spec: PipelineSpec, threads: int | None = None) -> None:
        from allegro.engine import Engine

        if not spec.model:  # the preview model, made on this node (it is not sent over)
            from allegro.models import ensure_preview_model, preview_model_dir

            preview = ensure_preview_model(preview_model_dir(os.environ))
            spec = dataclasses.replace(spec, model=str(preview))
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.threads = threads
        self.output = Path(tempfile.mkdtemp(prefix="allegro-ray-"))
        self.engine = Engine(spec, self.output)
        self.loaded = self.engine.load()  # once: this process's pipeline
        self._tokens: dict[str, CancelToken] = {}

    def describe(self) -> dict[str, Any]:
        """Where it runs and what was chosen there (device, offload and why), and its pid."""
        import socket

        return {
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "device": self.loaded.device,
            "gpu": self.loaded.device_name,
            "offload": self.loaded.offload.mode,
            "reason": self.loaded.offload.reason,
            "precision": self.loaded.spec.precision,
            "native": dataclasses.astuple(self.loaded.native),  # frames, height, width
        }

    def cancel(self, job_id: str) -> None:
        token = self._tokens.get(job_id)
        if token is not None:
            token.cancel()

    def generate(self, job_id: str, request: Any, labels: Mapping[str, str]) -> Iterator[Any]:
        """Progress events as they come, then one Finished or Failed."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)  # this thread's OpenMP team
        token = self._tokens[job_id] = CancelToken()

        def run(emit: Callable[[Any], None]) -> Finished | Failed:
            try:
                return self._collect(self.engine.generate(request, emit, token, labels=labels))
            except AllegroError as error:
                return Failed(type(error).__name__, str(error))
            except Exception as error:  # a bug: the app records it; this actor goes on
                logger.exception("Job %s failed", job_id)
                return Failed("AllegroError", f"Unexpected {type(error).__name__}: {error}")

        # The engine reports through a callback; the one bridge turns it into this generator
        # (if the caller goes away, the engine stops within a step and the thread ends).
        try:
            yield from run_streaming(run, token, f"allegro-ray-{job_id[:8]}", join=True)
        finally:
            self._tokens.pop(job_id, None)

    def _collect(self, result: GenerationResult) -> Finished:
        """The video's files (MP4, settings, poster, input images), read and removed."""
        stem = result.video_path.stem
        paths = [path for path in self.output.iterdir() if path.name.startswith(stem + ".")]
        files = {path.name: path.read_bytes() for path in paths}
        for path in paths:
            path.unlink()
        return Finished(result.video_path.name, files, result.seconds, result.warnings)


def write_files(output_dir: Path, finished: Finished) -> Path:
    """Write a video's files into ``output_dir`` under a name reserved here (``O_EXCL``),
    each atomically, the MP4 last: a gallery never sees an MP4 without its settings, and
    a failure leaves none of them."""
    from allegro.video import atomic_path, release_path, reserve_path

    stem = Path(finished.video).stem
    candidate, number = stem, 1
    while not reserve_path(output_dir / f"{candidate}.mp4"):
        number += 1
        candidate = f"{stem}-{number}"
    video = output_dir / f"{candidate}.mp4"
    order = sorted(finished.files, key=lambda name: name == finished.video)  # MP4 last
    written: list[Path] = []
    try:
        for name in order:
            target = output_dir / (candidate + name[len(stem) :])
            with atomic_path(target) as temp:
                temp.write_bytes(finished.files[name])
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        release_path(video)
    return video


def _error(failed: Failed) -> AllegroError:
    kind = getattr(errors, failed.kind, AllegroError)
    if not (isinstance(kind, type) and issubclass(kind, AllegroError)):
        kind = AllegroError
    return kind(failed.message)


class RayWorker(Worker):
    """The app's side of one actor: runs a job on it, streams its events into the runner,
    forwards a cancel, and writes the video it sends back."""

    def __init__(
        self, actor: Any, output_dir: str | Path, name: str, description: dict[str, Any]
    ) -> None:
        self.actor = actor
        self.output_dir = Path(output_dir)
        self.name = name
        self.description = description  # VideoActor.describe() at start
        self.running: str | None = None  # the job on it now

    def run(self, job: Job, on_progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        import ray

        if job.request.image_to_video:  # its images are files on this machine
            raise errors.InvalidRequestError(
                "Image to video does not run on a Ray cluster yet: start the app without --ray."
            )
        labels = {**job.labels, JOB_LABEL: job.id, WORKER_LABEL: self.name}
        self.running = job.id
        stream = self.actor.generate.options(num_returns="streaming").remote(
            job.id, job.request, labels
        )
        ended = threading.Event()

        def forward_cancel() -> None:
            while not ended.is_set():
                if cancel.wait(0.1):
                    with contextlib.suppress(Exception):  # a dead actor cancels nothing
                        self.actor.cancel.remote(job.id)
                    return

        forwarder = threading.Thread(target=forward_cancel, daemon=True)
        forwarder.start()
        outcome: Any = None
        try:
            for reference in stream:
                item = ray.get(reference)
                if isinstance(item, ProgressEvent):
                    on_progress(item)
                else:
                    outcome = item
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            raise WorkerLost(f"{self.name}: {type(error).__name__}") from None
        finally:
            ended.set()
            self.running = None
        if isinstance(outcome, Failed):
            raise _error(outcome)
        if not isinstance(outcome, Finished):
            raise WorkerLost(f"{self.name} ended the job without a result")
        return self._save(outcome)

    def _save(self, finished: Finished) -> GenerationResult:
        import json

        from allegro.engine import GenerationResult
        from allegro.settings import VideoSettings

        video = write_files(self.output_dir, finished)
        settings = video.with_suffix(".json")
        record = VideoSettings.from_dict(json.loads(settings.read_text()))
        return GenerationResult(
            video_path=video,
            settings_path=settings,
            poster_path=video.with_suffix(".jpg"),
            record=record,
            seconds=finished.seconds,
            warnings=finished.warnings,
        )

    def wait_ready(self) -> None:
        """Until Ray has restarted the actor and it has loaded the model again."""
        import ray

        with contextlib.suppress(Exception):
            ray.get(self.actor.describe.remote(), timeout=600)


def connect(address: str, **init: Any) -> None:
    """Join the cluster at ``address`` (``auto``: the one started on this machine). This
    package travels with the job (Ray's ``py_modules`` runtime environment), so the nodes
    need the requirements installed but not this repository."""
    try:
        import ray
    except ImportError:
        raise UnsupportedSetupError(RAY_MISSING) from None
    if ray.is_initialized():
        return
    import allegro

    package = str(Path(allegro.__file__).parent)
    runtime_env = {
        "py_modules": [package],
        "excludes": ["__pycache__"],
        **init.pop("runtime_env", {}),
    }
    prepare_token(address)  # a cluster with token authentication: send its token
    try:
        ray.init(address=address, runtime_env=runtime_env, **init)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as error:
        raise UnsupportedSetupError(
            f"Could not join the Ray cluster at {address!r}: {error}. Start one with "
            "`ray start --head` (see the README, 'A Ray cluster')."
        ) from None


def start_actors(
    spec: PipelineSpec, output_dir: str | Path, cpu_workers: int = 0
) -> list[RayWorker]:
    """One actor per GPU of the cluster (``num_gpus=1``), or ``cpu_workers`` actors asking
    for one CPU each (tests, and trying it without GPUs). Waits until every actor has
    loaded the model; logs where each runs and the offload it chose."""
    import ray

    if cpu_workers:
        count, resources = cpu_workers, {"num_cpus": 1}
    else:
        count = int(ray.cluster_resources().get("GPU", 0))
        resources = {"num_gpus": 1, "num_cpus": 1}
        if not count:
            raise UnsupportedSetupError(
                "The Ray cluster has no GPUs: start its nodes on GPU machines (`ray start "
                "--address HEAD:6379` picks up their GPUs)."
            )
    actor_class = ray.remote(VideoActor).options(
        max_concurrency=2,  # generate, and the cancel that reaches it meanwhile
        max_restarts=-1,  # a killed actor comes back and loads the model again
        max_task_retries=0,  # the runner re-queues a lost job; Ray must not re-run it
        **resources,
    )
    threads = 1 if cpu_workers else None
    actors = [actor_class.remote(spec, threads) for _ in range(count)]
    workers = []
    for slot, actor in enumerate(actors):
        where = ray.get(actor.describe.remote())
        logger.info("Ray worker %d on %s: %s", slot, where["node"], where["reason"])
        workers.append(RayWorker(actor, output_dir, f"ray {slot} ({where['node']})", where))
    return workers


class RayCluster:
    """The Ray cluster as the model manager sees it (allegro.models.Cluster): ``start``
    joins it and starts the actors; the job runner takes ``workers``."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.workers: list[RayWorker] = []

    def start(self, address: str, spec: PipelineSpec, cpu_workers: int) -> list[dict[str, Any]]:
        connect(address)
        if not self.workers:
            self.workers = start_actors(spec, self.output_dir, cpu_workers)
        return [worker.description for worker in self.workers]
