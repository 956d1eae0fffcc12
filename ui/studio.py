"""Gradio handlers: the page's events and the API endpoints, on top of the engine.

Handlers validate with the engine's own checks and show ``AllegroError`` messages as they
are (gr.Error); any other exception is a bug: logged with its traceback, shown as a short
generic message, and the app keeps serving.
"""

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from allegro.errors import AllegroError, Cancelled, InterpolationError
from allegro.events import CancelToken, ProgressEvent
from allegro.jobs import Job, JobRunner, JobState, prepare_request
from allegro.request import (
    DEFAULT_NEGATIVE_PROMPT,
    OFFICIAL_GUIDANCE,
    OFFICIAL_STEPS,
    GenerationRequest,
    check_request,
    resolve_request,
)
from ui import gallery
from ui.config import AppConfig
from ui.estimates import cost_hint, estimate_seconds
from ui.formatting import entry_markdown, progress_description, result_markdown
from ui.jobs import JobItem, iterate_in_thread, stream_generation
from ui.model_status import ModelLoader, ModelStatus, Phase, banner_markdown, generate_button
from ui.presets import (
    MODEL_DEFAULT,
    ControlValues,
    controls_from_settings,
    interpolation_choices,
    length_choices,
    resolved_shape,
    size_choices,
)
from ui.zerogpu import check_fits, gpu_duration, wrap_for_spaces

logger = logging.getLogger(__name__)

OWNER_HEADER = "X-Allegro-Owner"
BUG_MESSAGE = (
    "Something went wrong inside Allegro Studio (the details are in the server log). "
    "The app keeps running: please try again."
)


@dataclass
class JobSlot:
    """Per-session state: the running job's cancel token, so Cancel can reach the worker."""

    token: CancelToken | None = None


def user_error(error: BaseException) -> gr.Error:
    """The gr.Error to show for ``error``: its own message for AllegroError, else generic."""
    if isinstance(error, AllegroError):
        return gr.Error(str(error), print_exception=False)
    logger.error("Unexpected error", exc_info=error)
    return gr.Error(BUG_MESSAGE, print_exception=False)


class Studio:
    """The app's behaviour, independent of where each component sits on the page."""

    def __init__(
        self,
        config: AppConfig,
        loader: ModelLoader,
        environ: Mapping[str, str],
        jobs_db: Path | None = None,
    ):
        self.config = config
        self.loader = loader
        self.output_dir = config.output_dir
        # On a Space, generation runs inside spaces.GPU with a duration from the cost model.
        self._gpu_stream = wrap_for_spaces(self._stream, self._gpu_seconds, environ)
        # Jobs that outlive the page. Not on ZeroGPU yet: there the GPU is lent to one call
        # of a spaces.GPU function, not to a background worker thread.
        self.runner: JobRunner | None = None
        if jobs_db is not None and not config.zero_gpu:
            from allegro.jobs import EngineWorker, JobStore

            worker = EngineWorker(loader.manager.ready_engine, config.output_dir)
            self.runner = JobRunner(JobStore(jobs_db), [worker], prepare=self.prepare_job)

    # ---- who may see what -------------------------------------------------------------

    def gallery_owner(self, owner_id: str) -> str | None:
        """Whose videos a caller sees: their own when shared, everyone's otherwise."""
        return owner_id if self.config.per_browser_gallery else None

    @staticmethod
    def page_owner(owner_id: Any, request: gr.Request | None) -> str:
        """A page's owner id from its BrowserState; the address-based id if it is unusable."""
        if gallery.is_owner_id(owner_id):
            return owner_id
        return gallery.api_owner_id(None, _client_host(request))

    @staticmethod
    def api_owner(request: gr.Request | None) -> str:
        """An API caller: the X-Allegro-Owner header, else their address."""
        header = request.headers.get(OWNER_HEADER) if request is not None else None
        return gallery.api_owner_id(header, _client_host(request))

    # ---- generation ---------------------------------------------------------------------

    def _estimator(self, status: ModelStatus):
        def estimate(frames: int, height: int, width: int, steps: int, fast: bool):
            if status.hardware is None:
                return None
            return estimate_seconds(status.hardware, frames, height, width, steps, fast)

        return estimate

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request before it is queued (AllegroError with the engine's message). Once
        the model is known the request is resolved, so the seed is fixed from here on."""
        status = self.loader.status()
        if request.interpolate:
            self._check_interpolation(request.interpolation_method)
        if status.native is None:
            check_request(request)
            return request
        request = resolve_request(request, status.native)
        if self.config.zero_gpu:
            check_fits(
                request,
                self._estimator(status),
                self.config.zero_gpu_max_seconds,
                default=self.config.zero_gpu_max_seconds,
            )
        return request

    def prepare_job(self, request: GenerationRequest) -> GenerationRequest:
        """The checks before a job is queued, with its seed fixed."""
        return prepare_request(self.prepare(request))

    def _check_interpolation(self, method: str | None) -> None:
        from allegro.interpolation import DEFAULT_METHOD, method_availability

        name = method or DEFAULT_METHOD
        availability = method_availability(name, self.config.ema_vfi_weights)
        if not availability.available:
            raise InterpolationError(
                f"The {name} interpolation method is not available: {availability.reason}"
            )

    def _gpu_seconds(
        self, request: GenerationRequest, labels: Mapping[str, str], cancel=None
    ) -> int:
        """spaces.GPU's duration for a call of _stream (same arguments)."""
        status = self.loader.status()
        limit = self.config.zero_gpu_max_seconds
        if status.native is None or request.frames is None:
            return limit
        estimate = self._estimator(status)(
            request.frames, request.height, request.width, request.steps, request.fast_mode
        )
        return min(gpu_duration(estimate, limit), limit) if self.config.zero_gpu else limit

    def _stream(
        self,
        request: GenerationRequest,
        labels: Mapping[str, str],
        cancel: CancelToken | None = None,
    ) -> Iterator[JobItem]:
        yield from stream_generation(self.loader.engine(), request, labels, cancel or CancelToken())

    def run(
        self, request: GenerationRequest, owner: str, cancel: CancelToken
    ) -> AsyncIterator[JobItem]:
        labels = {gallery.OWNER_LABEL: owner}
        # ZeroGPU runs the function in another process: a token cannot travel there.
        items = self._gpu_stream(request, labels, None if self.config.zero_gpu else cancel)
        return iterate_in_thread(items, cancel)

    async def generate_page(
        self,
        prompt: str,
        negative_prompt: str,
        seed: float | None,
        steps: float,
        guidance_scale: float,
        length: str,
        size: str,
        use_template: bool,
        interpolate: bool,
        interpolation_method: str | None,
        fast_mode: bool,
        owner_id: str,
        job: JobSlot,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        """Yields (preview, run status, video, result info, settings, last seed)."""
        controls = ControlValues(
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            length=length,
            size=size,
            use_template=use_template,
            interpolate=interpolate,
            interpolation_method=interpolation_method,
            fast_mode=fast_mode,
        )
        try:
            prepared = self.prepare(controls.to_request())
        except AllegroError as error:
            raise user_error(error) from None
        token = job.token = CancelToken()
        skip = gr.skip()
        progress(0.0, desc="Starting …")
        yield (
            gr.update(value=None, visible=True),
            "",
            gr.update(visible=False),
            skip,
            skip,
            skip,
        )
        try:
            async for item in self.run(prepared, self.page_owner(owner_id, request), token):
                if isinstance(item, ProgressEvent):
                    if item.preview is not None:
                        yield item.preview, skip, skip, skip, skip, skip
                    # After the yield: the page shows the bar until the next yield.
                    progress(item.fraction, desc=progress_description(item))
                    continue
                for warning in item.warnings:
                    gr.Warning(warning)
                yield (
                    gr.update(visible=False),
                    "",
                    gr.update(value=str(item.video_path), visible=True),
                    result_markdown(item.settings, item.seconds, item.video_path.name),
                    item.settings,
                    item.seed,
                )
        except Cancelled as cancelled:
            yield (
                gr.update(visible=False),
                str(cancelled),
                gr.update(visible=True),
                skip,
                skip,
                skip,
            )
        except Exception as error:
            raise user_error(error) from None
        finally:
            if job.token is token:
                job.token = None

    def cancel_page(self, job: JobSlot):
        """The Cancel button: stop the worker (Gradio cancels the event itself)."""
        message = ""
        if job.token is not None:
            job.token.cancel()
            job.token = None
            message = Cancelled().args[0]
        return gr.update(visible=False), message, gr.update(visible=True)

    @staticmethod
    def after_run():
        """Whatever ended the run (error included), show the result area again."""
        return gr.update(visible=False), gr.update(visible=True)

    async def api_generate(
        self,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        seed: int | str | None = None,
        steps: int | float | str = OFFICIAL_STEPS,
        guidance_scale: float | str = OFFICIAL_GUIDANCE,
        frames: int | str | None = None,
        height: int | str | None = None,
        width: int | str | None = None,
        use_template: bool = True,
        interpolate: bool = False,
        interpolation_method: str | None = None,
        fast_mode: bool = False,
        request: gr.Request = None,
    ) -> tuple[FileData, dict]:
        """Make one video. Returns the MP4 and its settings (with the seed used and any
        warnings). Sizes left empty take the model's native size; seed empty or -1 is
        random. Identify yourself with the X-Allegro-Owner header to keep your own history
        on a shared server."""
        generation = api_request(**_arguments(locals()))
        if self.runner is not None:
            return await self._generate_as_job(generation, self.api_owner(request))
        token = CancelToken()
        try:
            prepared = self.prepare(generation)
            async for item in self.run(prepared, self.api_owner(request), token):
                if not isinstance(item, ProgressEvent):
                    settings = {**item.settings, "warnings": list(item.warnings)}
                    return FileData(path=str(item.video_path)), settings
        except Exception as error:
            raise user_error(error) from None
        raise user_error(RuntimeError("the generation ended without a result"))

    # ---- jobs (API) ----------------------------------------------------------------------

    def _runner(self) -> JobRunner:
        if self.runner is None:
            raise gr.Error(
                "Queued jobs are not available on this server (a ZeroGPU Space): use /generate.",
                print_exception=False,
            )
        return self.runner

    async def _generate_as_job(
        self, generation: GenerationRequest, owner: str
    ) -> tuple[FileData, dict]:
        """/generate through the queue: recorded like any job (a restart runs it again);
        the caller waits for it, and cancelling the call cancels the job, as before."""
        runner = self._runner()
        try:
            job = await asyncio.to_thread(
                runner.submit, generation, owner, {gallery.OWNER_LABEL: owner}
            )
        except Exception as error:
            raise user_error(error) from None
        try:
            final = await asyncio.to_thread(runner.wait, job.id)
        except BaseException:  # the call was cancelled (a client's cancel, a closed page)
            runner.cancel(job.id)
            raise
        if final.state == JobState.DONE and final.video:
            from allegro.video import read_settings

            settings = {**read_settings(final.video), "warnings": list(final.warnings)}
            return FileData(path=final.video), settings
        error = Cancelled() if final.state == JobState.CANCELLED else AllegroError(final.error)
        raise user_error(error)

    async def api_submit(
        self,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        seed: int | str | None = None,
        steps: int | float | str = OFFICIAL_STEPS,
        guidance_scale: float | str = OFFICIAL_GUIDANCE,
        frames: int | str | None = None,
        height: int | str | None = None,
        width: int | str | None = None,
        use_template: bool = True,
        interpolate: bool = False,
        interpolation_method: str | None = None,
        fast_mode: bool = False,
        request: gr.Request = None,
    ) -> dict:
        """Queue one video and return at once with its job (id, state, seed fixed now). The
        job goes on if you disconnect and after a server restart; poll /job with its id.
        Same parameters as /generate."""
        runner, owner = self._runner(), self.api_owner(request)
        generation = api_request(**_arguments(locals()))
        try:
            job = await asyncio.to_thread(
                runner.submit, generation, owner, {gallery.OWNER_LABEL: owner}
            )
        except Exception as error:
            raise user_error(error) from None
        return job_record(job, runner)

    def api_job(self, job_id: str, request: gr.Request = None) -> dict:
        """One of your jobs: state, queue position, progress, and the video once done."""
        runner = self._runner()
        try:
            return job_record(runner.get(str(job_id), self.api_owner(request)), runner)
        except Exception as error:
            raise user_error(error) from None

    def api_cancel(self, job_id: str, request: gr.Request = None) -> dict:
        """Cancel one of your jobs: a queued one leaves the queue, a running one stops within
        a step (no file is left). Returns the job."""
        runner = self._runner()
        try:
            return job_record(runner.cancel(str(job_id), self.api_owner(request)), runner)
        except Exception as error:
            raise user_error(error) from None

    def api_jobs(self, request: gr.Request = None) -> list[dict]:
        """Your queued and running jobs in queue order, then your recent finished ones."""
        runner = self._runner()
        return [job_record(job, runner) for job in runner.list(self.api_owner(request))]

    def api_history(self, request: gr.Request = None) -> list[dict]:
        """Past generations visible to the caller, newest first (on a shared server: those
        made with the same X-Allegro-Owner header, or else from the same address)."""
        owner = self.gallery_owner(self.api_owner(request))
        return [gallery.history_record(e) for e in gallery.list_entries(self.output_dir, owner)]

    # ---- model status -------------------------------------------------------------------

    def poll_status(self, steps: float, length: str, size: str, fast_mode: bool):
        """Timer tick: (banner, generate button, retry button, timer, length, size,
        interpolate toggle, method, cost hint). Choices are sent once, when ready."""
        status = self.loader.status()
        label, interactive = generate_button(status)
        skip = gr.skip()
        dropdowns: tuple = (skip, skip, skip, skip)
        if status.ready:
            dropdowns = (
                gr.update(choices=length_choices(status.native)),
                gr.update(choices=size_choices(status.native)),
                gr.update(visible=status.interpolation is not None),
                gr.update(choices=interpolation_choices(list(status.interpolation or ()))),
            )
        return (
            banner_markdown(status),
            gr.update(value=label, interactive=interactive),
            gr.update(visible=status.phase == Phase.FAILED),
            gr.Timer(active=status.busy),
            *dropdowns,
            self.hint(steps, length, size, fast_mode),
        )

    def retry_loading(self):
        self.loader.start()
        return gr.Timer(active=True), gr.update(visible=False)

    def hint(self, steps: float, length: str, size: str, fast_mode: bool) -> str:
        status = self.loader.status()
        if not status.ready or status.native is None:
            return ""
        frames, height, width = resolved_shape(length, size, status.native)
        try:
            step_count = int(steps)
        except (TypeError, ValueError):
            return ""
        seconds = self._estimator(status)(frames, height, width, step_count, bool(fast_mode))
        return cost_hint(seconds, status.hardware)

    # ---- gallery ------------------------------------------------------------------------

    def on_page_load(self, owner_id: Any, request: gr.Request):
        """A new page: keep this browser's owner id (or make one) and list its videos."""
        owner = owner_id if gallery.is_owner_id(owner_id) else gallery.new_owner_id()
        return (owner, *self.refresh_gallery(owner))

    def refresh_gallery(self, owner_id: str):
        """(gallery items, names in display order)."""
        entries = gallery.list_entries(self.output_dir, self.gallery_owner(owner_id))
        items = [(str(entry.thumbnail), entry.caption) for entry in entries]
        return items, [entry.name for entry in entries]

    def select_entry(self, names: list[str], owner_id: str, event: gr.SelectData):
        """(selected name, video, summary, settings, actions row)."""
        try:
            name = names[event.index]
            entry = gallery.find_entry(self.output_dir, name, self.gallery_owner(owner_id))
        except (IndexError, TypeError, gallery.GalleryError) as error:
            gr.Warning(str(error) if isinstance(error, AllegroError) else "Pick a video again.")
            return None, None, "", None, gr.update(visible=False)
        return (
            entry.name,
            str(entry.video),
            entry_markdown(entry.settings, entry.video.name),
            entry.settings,
            gr.update(visible=True),
        )

    def reuse_entry(self, name: str | None, owner_id: str):
        """The selected video's settings into the controls (11 control values)."""
        if not name:
            raise gr.Error("Pick a video in the gallery first.", print_exception=False)
        try:
            entry = gallery.find_entry(self.output_dir, name, self.gallery_owner(owner_id))
        except AllegroError as error:
            raise user_error(error) from None
        return self._controls_from(entry.settings, f"Settings of {entry.name} loaded.")

    def delete_entry(self, name: str | None, owner_id: str):
        """(gallery items, names, selected name, video, summary, settings, actions row)."""
        if not name:
            raise gr.Error("Pick a video in the gallery first.", print_exception=False)
        try:
            gallery.delete_entry(self.output_dir, name, self.gallery_owner(owner_id))
        except AllegroError as error:
            raise user_error(error) from None
        gr.Info("Video deleted.")
        return (*self.refresh_gallery(owner_id), None, None, "", None, gr.update(visible=False))

    def load_dropped_video(self, path: str | None):
        """A dropped MP4 -> its settings in the controls (or a clear message why not)."""
        if not path:
            return tuple(gr.skip() for _ in range(11))
        from allegro.video import read_settings

        try:
            settings = read_settings(path)
        except AllegroError as error:
            gr.Warning(str(error))
            return tuple(gr.skip() for _ in range(11))
        return self._controls_from(settings, "Settings loaded from the video.")

    def _controls_from(self, settings: Mapping[str, Any], message: str):
        loaded = controls_from_settings(settings, self.loader.status().native)
        for note in loaded.notes:
            gr.Warning(note)
        gr.Info(message)
        values = loaded.values
        return (
            values.prompt,
            values.negative_prompt,
            values.seed,
            values.steps,
            values.guidance_scale,
            values.length or MODEL_DEFAULT,
            values.size or MODEL_DEFAULT,
            values.use_template,
            values.interpolate,
            values.interpolation_method or gr.skip(),
            values.fast_mode,
        )


def _client_host(request: gr.Request | None) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def api_request(
    prompt: str,
    negative_prompt: str | None,
    seed: int | str | None,
    steps: int | float | str,
    guidance_scale: float | str,
    frames: int | str | None,
    height: int | str | None,
    width: int | str | None,
    use_template: bool,
    interpolate: bool,
    interpolation_method: str | None,
    fast_mode: bool,
) -> GenerationRequest:
    """An API call's parameters as a request (checked later, with the engine's messages)."""
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        frames=frames,
        height=height,
        width=width,
        use_template=use_template,
        interpolate=interpolate or bool(interpolation_method),
        interpolation_method=interpolation_method,
        fast_mode=fast_mode,
    )


def _arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """An API handler's own parameters, for api_request."""
    return {name: values[name] for name in inspect.signature(api_request).parameters}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def job_record(job: Job, runner: JobRunner) -> dict[str, Any]:
    """One job as the API reports it."""
    progress = job.progress
    video = Path(job.video) if job.video else None
    return {
        "id": job.id,
        "state": job.state.value,
        "queue_position": runner.queue_position(job.id) if job.state == JobState.QUEUED else None,
        "prompt": job.request.prompt,
        "seed": job.seed,
        "created": _iso(job.created),
        "started": _iso(job.started),
        "finished": _iso(job.finished),
        "attempts": job.attempts,
        "note": job.note,
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
        "video_url": gallery.file_url(video) if video else None,
    }
