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
)
from allegro.jobs.store import JobStore, JobStoreError
from allegro.jobs.workers import add_device_workers, device_workers

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
    "device_workers",
    "prepare_request",
]
