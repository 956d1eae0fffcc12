"""The API's job endpoints (/submit, /job, /cancel, /jobs) and /generate's wait for its
job: every caller's owner comes from ``api_owner`` (the server-issued identity)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from allegro.errors import AllegroError, Cancelled, InvalidRequestError
from allegro.jobs import Job, JobRunner, JobState
from allegro.request import GenerationRequest
from ui import gallery
from ui.api_params import api_endpoint, request_from_api
from ui.identity import Owner
from ui.services import LOCAL_OWNER, Services, user_error

SUBMIT_DOC = """Queue one video and return at once with its job (id, state, seed fixed now).
The job goes on if you disconnect and after a server restart (its images are kept with it);
poll /job with its id. Same parameters (and X-Allegro-Key header) as /generate."""


class JobApi:
    def __init__(self, studio: Services, runner: JobRunner | None) -> None:
        self.studio = studio
        self.runner = runner  # None without a jobs database
        # On ZeroGPU: runs a job in the caller's own event (ui.zerogpu_jobs.VisitorRuns)
        self.run_here: Callable[[str], Awaitable[Job | None]] | None = None
        # /submit: /generate's declared parameters (ui.api_params), by name.
        self.submit = api_endpoint(self._submit_values, SUBMIT_DOC, dict)

    def _runner(self) -> JobRunner:
        try:
            return self.runner_or_refuse()
        except AllegroError as error:
            raise user_error(error) from None

    def runner_or_refuse(self) -> JobRunner:
        if self.runner is None:
            raise InvalidRequestError(
                "Queued jobs are not available on this server (it has no jobs database): "
                "use /generate."
            )
        return self.runner

    def _submit(self, generation: GenerationRequest, owner: Owner | None) -> Job:
        """Queue a job for ``owner`` (verified by api_owner): stored under their one-way
        tag, or ``LOCAL_OWNER`` for key-less local use."""
        key = owner.tag if owner is not None else LOCAL_OWNER
        generation = self.studio.prompt_help.with_original(owner, generation)  # issue 24
        return self._runner().submit(generation, key, self.studio.labels(owner))

    async def generate_as_job(
        self, generation: GenerationRequest, owner: Owner | None
    ) -> tuple[FileData, dict]:
        """/generate through the queue: recorded like any job (a restart runs it again);
        the caller waits for it, and cancelling the call cancels the job, as before."""
        runner = self._runner()
        try:
            job = await asyncio.to_thread(self._submit, generation, owner)
        except Exception as error:
            raise user_error(error) from None
        try:
            final = await self.run_here(job.id) if self.run_here is not None else None
            if final is None:  # a worker thread runs it (or another event took it)
                final = await asyncio.to_thread(runner.wait, job.id)
        except BaseException:  # the call was cancelled (a client's cancel, a closed page)
            runner.cancel(job.id)
            raise
        if final.state == JobState.DONE and final.video:
            try:  # the sidecar: the settings with their labels, as a direct run returns them
                entry = gallery.find_entry(self.studio.output_dir, Path(final.video).stem, None)
            except AllegroError as error:  # deleted meanwhile
                raise user_error(error) from None
            settings = {**entry.settings, "warnings": list(final.warnings)}
            return FileData(path=self.studio.publish(entry.video)), settings
        error = Cancelled() if final.state == JobState.CANCELLED else AllegroError(final.error)
        raise user_error(error)

    def _job_viewer(self, request: gr.Request | None) -> str | None:
        """Whose jobs a caller sees: a key's own (key-less callers are refused when shared,
        like /history); a key-less local caller, every job."""
        owner = self.studio.api_owner(request)
        return owner.tag if owner is not None else None

    async def _submit_values(self, values: dict[str, Any], request: gr.Request | None) -> dict:
        try:
            self._runner()
            generation = request_from_api(values)
            owner = self.studio.api_owner(request)
            job = await asyncio.to_thread(self._submit, generation, owner)
            return self.job_record(job)
        except Exception as error:
            raise user_error(error) from None

    def job(self, job_id: str, request: gr.Request = None) -> dict:
        """One of your jobs: state, queue position, progress, and the video once done."""
        try:
            runner = self._runner()
            return self.job_record(runner.get(str(job_id), self._job_viewer(request)))
        except Exception as error:
            raise user_error(error) from None

    def cancel(self, job_id: str, request: gr.Request = None) -> dict:
        """Cancel one of your jobs: a queued one leaves the queue, a running one stops within
        a step (no file is left). Returns the job."""
        try:
            runner = self._runner()
            return self.job_record(runner.cancel(str(job_id), self._job_viewer(request)))
        except Exception as error:
            raise user_error(error) from None

    def jobs(self, request: gr.Request = None) -> list[dict]:
        """Your queued and running jobs in queue order, then your recent finished ones."""
        try:
            runner = self._runner()
            return [self.job_record(job) for job in runner.list(self._job_viewer(request))]
        except Exception as error:
            raise user_error(error) from None

    def job_record(self, job: Job) -> dict[str, Any]:
        """One job as the API reports it; a finished video links to a copy made for this
        answer (the caller is the job's owner: runner.get checked)."""
        runner = self._runner()
        progress = job.progress
        video = Path(job.video) if job.video else None
        hold = runner.held() if job.state == JobState.QUEUED else None
        return {
            "id": job.id,
            "state": job.state.value,
            "queue_position": (
                runner.queue_position(job.id) if job.state == JobState.QUEUED else None
            ),
            # Until it starts, counting every worker (None until a video has been timed).
            "wait_seconds": (
                runner.estimated_wait(job.id) if job.state == JobState.QUEUED else None
            ),
            "prompt": job.request.prompt,
            "seed": job.seed,
            "created": _iso(job.created),
            "started": _iso(job.started),
            "finished": _iso(job.finished),
            "attempts": job.attempts,
            "note": job.note,
            # Why it cannot start yet: "waiting for the model to load: …" or, when loading
            # failed, "waiting for the model: <reason>" (None once the model is ready).
            "waiting": hold.reason if hold is not None else None,
            "error": job.error,
            "progress": None
            if progress is None
            else {
                "stage": progress.stage.value,
                "fraction": round(progress.fraction, 4),
                "step": progress.step,
                "total": progress.total,
                "eta_seconds": None if progress.eta is None else round(progress.eta, 1),
                "message": progress.message,
            },
            "video": video.name if video else None,
            "video_url": self.studio.published_url(video) if video and video.is_file() else None,
        }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
