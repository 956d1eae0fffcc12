"""A job: one requested video, from submit to its file (or its error), owned by one person.

The request is stored resolved as far as it can be before the model is known, with the
seed always fixed at submit time: running a job again makes the same video.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from allegro.errors import AllegroError
from allegro.request import MAX_SEED, GenerationRequest, check_request, parse_seed

if TYPE_CHECKING:
    import numpy as np

    from allegro.events import ProgressEvent


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # was running at too many crashes or restarts: not run again

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


class JobError(AllegroError):
    """A job action that cannot be done (unknown job, not yours, a limit reached)."""


class JobNotFoundError(JobError):
    """No such job for this caller (someone else's job reads the same: ids are not leaked)."""


class WorkerLost(AllegroError):
    """A worker's device or process went away mid-job (a node lost, a process killed): the
    job is not at fault and runs again on another worker."""


class JobLimitError(JobError):
    """Submitting would pass a per-person or a server-wide limit; the message names it."""


@dataclass(frozen=True)
class Job:
    """One job's record. ``progress`` and ``preview`` live in memory only (the latest event
    and the latest preview image of a running job); everything else is in the store."""

    id: str
    owner: str
    request: GenerationRequest
    state: JobState = JobState.QUEUED
    position: int = 0  # queue order: lower runs first
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0  # wall-clock times (time.time())
    started: float | None = None
    finished: float | None = None
    attempts: int = 0  # times a worker started it (more than 1 after a restart)
    cancel_requested: bool = False
    note: str = ""  # what happened to it beyond its state, e.g. a restart
    video: str | None = None  # the finished MP4
    error: str | None = None
    warnings: tuple[str, ...] = ()  # what the finished video should be read with
    progress: ProgressEvent | None = None
    preview: np.ndarray | None = None

    @property
    def seed(self) -> int:
        return int(self.request.seed)  # type: ignore[arg-type] - fixed at submit


def new_job_id() -> str:
    return secrets.token_hex(16)  # unguessable: an id is never enough to reach a job


def prepare_request(request: GenerationRequest) -> GenerationRequest:
    """The default check before queueing: every field the request sets is valid, and the
    seed is fixed now (a random one if none was asked for)."""
    check_request(request)
    seed = parse_seed(request.seed)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    return dataclasses.replace(request, seed=seed)


def request_to_json(request: GenerationRequest) -> str:
    return json.dumps(dataclasses.asdict(request), ensure_ascii=False)


def request_from_json(text: str) -> GenerationRequest:
    """Fields this version does not know are dropped, so a newer record still loads."""
    data: dict[str, Any] = json.loads(text)
    known = {f.name for f in dataclasses.fields(GenerationRequest)}
    return GenerationRequest(**{key: value for key, value in data.items() if key in known})
