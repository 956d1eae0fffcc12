"""Jobs: requested videos that outlive the page that asked for them (no Gradio here)."""

from allegro.jobs.job import (
    ACTIVE_STATES,
    Job,
    JobError,
    JobLimitError,
    JobNotFoundError,
    JobState,
    WorkerLost,
    prepare_request,
)
from allegro.jobs.runner import (
    JOB_LABEL,
    EngineWorker,
    JobLimits,
    JobRunner,
    Worker,
    add_device_workers,
)
from allegro.jobs.store import JobStore, JobStoreError

__all__ = [
    "ACTIVE_STATES",
    "JOB_LABEL",
    "EngineWorker",
    "Job",
    "JobError",
    "JobLimitError",
    "JobLimits",
    "JobNotFoundError",
    "JobRunner",
    "JobState",
    "JobStore",
    "JobStoreError",
    "Worker",
    "WorkerLost",
    "add_device_workers",
    "prepare_request",
]
