"""Gradio handlers: the page's events and the API endpoints, on top of the engine.

Handlers validate with the engine's own checks and show ``AllegroError`` messages as they
are (gr.Error); any other exception is a bug: logged with its traceback, shown as a short
generic message, and the app keeps serving.

Every event verifies who is calling (``ui.identity``): the page's server-issued token, or an
API key. Files leave the server only as copies in Gradio's cache, under names derived from
a secret hash of their content (``publish``), handed to their owner; the output folder itself
is never served.
"""

import functools
import inspect
import logging
import shutil
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from allegro.errors import AllegroError, InterpolationError, InvalidRequestError
from allegro.events import CancelToken
from allegro.jobs import JobRunner, prepare_request
from allegro.params import Kind, params
from allegro.request import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_OVERLAP_FRAMES,
    OFFICIAL_GUIDANCE,
    OFFICIAL_STEPS,
    OFFICIAL_TI2V_GUIDANCE,
    GenerationRequest,
    check_request,
    resolve_request,
)
from ui import gallery
from ui.access import source_of_events
from ui.api_params import (
    api_endpoint,
    api_validations,
    api_validator,
    request_from_api,
)
from ui.config import AppConfig, job_inputs_dir
from ui.controls import api_input, page_validations, validations
from ui.estimates import RequestShape, estimate_seconds, request_hint, request_shape
from ui.gallery_page import GalleryPage
from ui.identity import KEY_HEADER, MAKE_A_KEY, Identities, IdentityError, Owner, key_owner
from ui.job_api import JobApi
from ui.model_status import ModelLoader, ModelStatus, Phase, banner_markdown, generate_button
from ui.page_jobs import PageJobs
from ui.presets import (
    IMAGE_TO_VIDEO,
    ControlValues,
    frames_for,
    interpolation_choices,
    length_choices,
    resolved_shape,
    size_choices,
    size_for,
)
from ui.prompt_help import PromptHelp
from ui.services import (  # noqa: F401 - BUG_MESSAGE, user_error: re-exported for callers
    BUG_MESSAGE,
    LOCAL_OWNER,
    unexpected_refusal,
    user_error,
)
from ui.uploads import uploaded_file
from ui.zerogpu import check_fits, gpu_duration, wrap_for_spaces
from ui.zerogpu_jobs import JobItem, VisitorRuns, VisitorWorker, stream_generation

logger = logging.getLogger(__name__)

GENERATION = "generation"  # the concurrency group of every generation, page and API


GENERATE_DOC = """Make one video. Returns the MP4 and its settings (with the seed used and any
warnings). Sizes left empty take the model's native size; seed empty or -1 is random;
guidance empty is the official one (7.5, or 8 from images). Image to video: ``image``
becomes the first frame and ``last_image`` (optional) the last, each cropped to the video's
shape (send them with gradio_client's handle_file). On a shared server, send your own key
(32+ characters) in the X-Allegro-Key header: your videos and history are those made with
it."""
TEXT_ONLY_MESSAGE = (
    "This server makes videos from text only (it was started with --ti2v-model none): "
    "leave out the images."
)


class Studio:
    """The app's behaviour, independent of where each component sits on the page."""

    def __init__(
        self,
        config: AppConfig,
        loader: ModelLoader,
        environ: Mapping[str, str],
        jobs_db: Path | None = None,
        identities: Identities | None = None,
    ):
        self.config = config
        self.loader = loader
        self.output_dir = config.output_dir
        self._environ = environ
        if identities is not None:
            self.identities = identities
        # Jobs that outlive the page, everywhere. On ZeroGPU no worker thread takes them:
        # the visitor's own event runs each inside its spaces.GPU call, on their quota
        # (ui.zerogpu_jobs says why), so a job there needs its visitor's open page.
        self.gallery = GalleryPage(self)
        self.runner: JobRunner | None = None
        self.page_jobs: PageJobs | None = None  # the page's handlers when jobs are on
        self.visitor_runs: VisitorRuns | None = None  # ZeroGPU's executor of the jobs
        if jobs_db is not None:
            from allegro.job_hold import hold_jobs_for_model
            from allegro.jobs import JobLimits, JobStore, add_device_workers

            self.runner = JobRunner(
                JobStore(jobs_db),
                [],
                JobLimits(
                    per_owner=config.jobs_per_person,
                    total=config.jobs_total,
                    per_source=config.jobs_per_address if config.shared else None,
                ),
                prepare=self.prepare_job,
                inputs_dir=job_inputs_dir(jobs_db),
                caller_source=source_of_events(config),
            )
            if config.zero_gpu:  # inside spaces.GPU, with a duration from the cost model
                stream = wrap_for_spaces(self._stream, self._gpu_seconds, environ, user_error)
                worker = VisitorWorker(stream)
                self.visitor_runs = VisitorRuns(self.runner, worker)
            else:  # one worker per device (--devices), added once the loader has found them
                add_device_workers(self.runner, loader.manager, config.output_dir, loader.cluster)
            # No job starts before the model is ready; none is accepted while it failed.
            hold_jobs_for_model(self.runner, loader.manager)
            run_waiting = self.visitor_runs.run_waiting if self.visitor_runs else None
            self.page_jobs = PageJobs(self, self.runner, self.gallery.refresh_gallery, run_waiting)
        # /generate and its validator: the declared parameters (ui.api_params), by name.
        self.api_generate = api_endpoint(self._api_generate, GENERATE_DOC, tuple[FileData, dict])
        self.check_api = api_validator(self._check_api, self._check_api.__doc__)
        self.check_submit_api = api_validator(
            self._check_submit_api, self._check_submit_api.__doc__
        )
        self.job_api = JobApi(self, self.runner)
        if self.visitor_runs is not None:
            self.job_api.run_here = self.visitor_runs.run
        # Issue 24: Improve prompt, its API, and the original prompt kept with a rewrite.
        self.prompt_help = PromptHelp(config, self.page_owner, self.api_owner, environ)

    # ---- who may see what -------------------------------------------------------------

    @functools.cached_property
    def identities(self) -> Identities:
        """Loaded (or its secret made) on first use, beside the videos it protects."""
        return Identities.load(self.output_dir, self._environ)

    def gallery_owner(self, owner: Owner | None) -> str | None:
        """Whose videos a caller sees: their own when shared, everyone's otherwise."""
        if not self.config.per_browser_gallery:
            return None
        if owner is None:  # api_owner refuses key-less callers in this mode
            raise IdentityError("No identity: this server keeps each caller's videos apart.")
        return owner.tag

    def page_owner(self, token: Any) -> Owner:
        """The owner behind a page's token; IdentityError unless this server issued it."""
        return self.identities.page_owner(token)

    def api_owner(self, request: gr.Request | None) -> Owner | None:
        """An API caller: their X-Allegro-Key. Without one: nobody (local use), or refused
        when the server is shared, never an id derived from their address."""
        header = request.headers.get(KEY_HEADER) if request is not None else None
        owner = key_owner(header)
        if owner is None and self.config.per_browser_gallery:
            raise IdentityError(
                f"This server is shared: send your own key in the {KEY_HEADER} header (at "
                f"least 32 characters, a secret only you know). Make one with: {MAKE_A_KEY}"
            )
        return owner

    @staticmethod
    def labels(owner: Owner | None) -> dict[str, str]:
        """What is stored with a video: the owner's one-way tag only."""
        return {gallery.OWNER_LABEL: owner.tag} if owner is not None else {}

    # ---- files --------------------------------------------------------------------------

    @staticmethod
    def publish(path: Path) -> str:
        """A copy of ``path`` in Gradio's cache, named by a hash of its content salted with
        Gradio's secret seed (gradio/processing_utils.py:158-164, 269-277), so only whoever
        is handed the name can fetch it."""
        from gradio.processing_utils import save_file_to_cache
        from gradio.utils import get_upload_folder

        if path.is_symlink():
            raise gallery.GalleryError(f"{path.name} is not a file this server serves.")
        return save_file_to_cache(path, get_upload_folder())

    @staticmethod
    def unpublish(paths: list[Path]) -> None:
        """Remove the cached copies ``publish`` (or Gradio) made of ``paths``."""
        from gradio.processing_utils import hash_file
        from gradio.utils import get_upload_folder

        for path in paths:
            if path.is_file() and not path.is_symlink():
                shutil.rmtree(Path(get_upload_folder()) / hash_file(path), ignore_errors=True)

    def published_url(self, path: Path) -> str:
        return "/gradio_api/file=" + urllib.parse.quote(self.publish(path))

    # ---- generation ---------------------------------------------------------------------

    def _estimator(self, status: ModelStatus):
        def estimate(shape: RequestShape) -> float | None:
            if status.hardware is None:
                return None
            return estimate_seconds(status.hardware, shape)

        return estimate

    def _check_api(self, values: dict[str, Any], request: gr.Request | None) -> list[dict]:
        """/generate's validator (same parameters): the key, every field and the images,
        and room in the queue (the job limits, see _room_problem), before the call is
        queued."""
        return self._check_api_values(values, request)

    def _check_submit_api(self, values: dict[str, Any], request: gr.Request | None) -> list[dict]:
        """/submit's validator (/generate's parameters): the same checks."""
        return self._check_api_values(values, request)

    def _check_api_values(self, values: dict[str, Any], request: gr.Request | None) -> list[dict]:
        def build():
            return self.api_owner(request), request_from_api(values)

        problem, field = self._problem(build, request)
        return api_validations(problem, field)

    def check_extend(
        self,
        video: str,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        seed: int | str | None = None,
        steps: int | float | str = OFFICIAL_STEPS,
        guidance_scale: float | str | None = None,
        frames: int | str | None = None,
        overlap_frames: int | str = DEFAULT_OVERLAP_FRAMES,
        use_template: bool = True,
        fast_mode: bool = False,
        request: gr.Request = None,
    ) -> list[dict]:
        """/extend's validator (same parameters): the key, the video (the caller's own) and
        every field, before the request is queued."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, frames, overlap_frames)

        def build():
            owner = self.api_owner(request)
            return owner, self.extend_request(video, owner, *fields, use_template, fast_mode)

        problem, field = self._problem(build, request)
        inputs = tuple(inspect.signature(self.check_extend).parameters)[:-1]
        return validations(inputs, problem, api_input(field))

    def _problem(self, build, request: gr.Request | None) -> tuple[str | None, str | None]:
        """What is wrong with a caller, their request or the queue, and the request field it
        is about: (None, None) if nothing. ``build`` returns (owner, request) or raises."""
        try:
            owner, generation = build()
            self.prepare(generation)
            return self._room_problem(owner), None
        except AllegroError as error:
            return str(error), error.field
        except Exception as error:  # a bug: refused, never passed on to the queue
            return unexpected_refusal(error), None
        return None, None

    def _room_problem(self, owner: Owner | None) -> None:
        """One queue limit: every generation, page or API (ZeroGPU's too), is a job from the
        moment it is accepted, so the runner's limits (per person, per address, in all) are
        the only ones; JobLimitError names the one passed."""
        if self.runner is not None:
            self.runner.check_limits(owner.tag if owner is not None else LOCAL_OWNER)

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request before it is queued (AllegroError with the engine's message). Once
        the model is known the request is resolved, so the seed is fixed from here on."""
        status = self.loader.status()
        if request.interpolate:
            self.check_interpolation(request.interpolation_method)
        if request.image_to_video:
            from allegro.ti2v.inputs import check_condition_files

            if status.ready and not status.image_to_video:
                raise InvalidRequestError(TEXT_ONLY_MESSAGE, field="first_image")
            check_condition_files(request)
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

    def check_interpolation(self, method: str | None) -> None:
        from allegro.interpolation import DEFAULT_METHOD, method_availability

        name = method or DEFAULT_METHOD
        availability = method_availability(name, self.config.ema_vfi_weights)
        if not availability.available:
            raise InterpolationError(
                f"The {name} interpolation method is not available: {availability.reason}",
                field="interpolation_method",
            )

    def _gpu_seconds(
        self, request: GenerationRequest, labels: Mapping[str, str], cancel=None
    ) -> int:
        """spaces.GPU's duration for a call of _stream (same arguments)."""
        status = self.loader.status()
        limit = self.config.zero_gpu_max_seconds
        if status.native is None or request.frames is None:
            return limit
        estimate = self._estimator(status)(request_shape(request))
        return min(gpu_duration(estimate, limit), limit) if self.config.zero_gpu else limit

    def _stream(
        self,
        request: GenerationRequest,
        labels: Mapping[str, str],
        cancel: CancelToken | None = None,
    ) -> Iterator[JobItem]:
        yield from stream_generation(self.loader.engine(), request, labels, cancel or CancelToken())

    def page_request(
        self, owner_id: Any, controls: ControlValues
    ) -> tuple[Owner, GenerationRequest]:
        """The page's caller and request; its images must be uploads like an API caller's
        (raw HTTP can send any text in their place)."""
        owner = self.page_owner(owner_id)
        uploads = {
            declared.name: uploaded_file(
                getattr(controls, declared.name), declared.label.lower(), declared.name
            )
            for declared in params()
            if declared.kind is Kind.FILE and declared.page == declared.name
        }
        request = replace(controls, **uploads).to_request()
        return owner, self.prompt_help.with_original(owner, request)

    def check_extend_page(
        self,
        name: str | None,
        prompt: str,
        negative_prompt: str,
        seed: float | None,
        steps: float,
        guidance_scale: float,
        length: str,
        use_template: bool,
        fast_mode: bool,
        owner_id: str,
        request: gr.Request = None,
    ) -> list[dict]:
        """Extend's validator: the selected video must be the caller's, the fields good."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, length)

        def build():
            owner = self.page_owner(owner_id)
            return owner, self.page_extension(name, owner, *fields, use_template, fast_mode)

        problem, field = self._problem(build, request)
        inputs = tuple(inspect.signature(self.check_extend_page).parameters)[:-1]
        return page_validations(inputs, problem, field)

    def page_extension(
        self, name, owner, prompt, negative, seed, steps, guidance, length, template, fast
    ) -> GenerationRequest:
        if not name:
            raise gallery.GalleryError("Pick a video in the gallery first.")
        frames = frames_for(length)
        return self.extend_request(
            name, owner, prompt, negative, seed, steps, guidance, frames,
            DEFAULT_OVERLAP_FRAMES, template, fast,
        )  # fmt: skip

    async def _api_generate(
        self, values: dict[str, Any], request: gr.Request | None
    ) -> tuple[FileData, dict]:
        try:
            generation = request_from_api(values)
        except AllegroError as error:
            raise user_error(error) from None
        return await self._api_run(generation, request)

    async def api_extend(
        self,
        video: str,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        seed: int | str | None = None,
        steps: int | float | str = OFFICIAL_STEPS,
        guidance_scale: float | str | None = None,
        frames: int | str | None = None,
        overlap_frames: int | str = DEFAULT_OVERLAP_FRAMES,
        use_template: bool = True,
        fast_mode: bool = False,
        request: gr.Request = None,
    ) -> tuple[FileData, dict]:
        """Continue one of your videos (``video``: its name in /history) where it ends: its
        last ``overlap_frames`` frames start a new clip of ``frames`` frames (empty: the
        model's length) that follows ``prompt``. Returns the whole, longer video (the
        original first, frame for frame) and its settings; the original is kept."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, frames, overlap_frames)
        try:
            owner = self.api_owner(request)
            generation = self.extend_request(video, owner, *fields, use_template, fast_mode)
        except AllegroError as error:
            raise user_error(error) from None
        return await self._api_run(generation, request)

    async def _api_run(
        self, generation: GenerationRequest, request: gr.Request | None
    ) -> tuple[FileData, dict]:
        """Every generation is a job (recorded before it runs); the call waits for it."""
        try:
            owner = self.api_owner(request)
            self.job_api.runner_or_refuse()
        except AllegroError as error:
            raise user_error(error) from None
        return await self.job_api.generate_as_job(generation, owner)

    def extend_request(
        self,
        name: Any,
        owner: Owner | None,
        prompt: str,
        negative_prompt: str | None,
        seed: Any,
        steps: Any,
        guidance_scale: Any,
        frames: Any,
        overlap_frames: Any,
        use_template: bool,
        fast_mode: bool,
    ) -> GenerationRequest:
        """A continuation of ``owner``'s video ``name`` (GalleryError if it is not theirs),
        at the video's own size."""
        entry = gallery.find_entry(self.output_dir, name, self.gallery_owner(owner))
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            frames=frames or None,
            height=entry.settings.get("height"),
            width=entry.settings.get("width"),
            use_template=use_template,
            fast_mode=fast_mode,
            continue_video=str(entry.video),
            overlap_frames=overlap_frames,
        )

    # ---- model status -------------------------------------------------------------------

    def poll_status(
        self,
        steps: float,
        length: str,
        size: str,
        fast_mode: bool,
        step_cache: bool = False,
        guidance_scale: float | None = None,
        task: str | None = None,
    ):
        """Timer tick: (banner, generate button, retry button, timer, length, size,
        interpolate toggle, method, task switch, extend button, cost hint). Choices are sent
        once, when ready; the task switch and Extend show only if image to video is served."""
        status = self.loader.status()
        label, interactive = generate_button(status)
        skip = gr.skip()
        dropdowns: tuple = (skip,) * 6
        if status.ready:
            dropdowns = (
                gr.update(choices=length_choices(status.native)),
                gr.update(choices=size_choices(status.native)),
                gr.update(visible=status.interpolation is not None),
                gr.update(choices=interpolation_choices(list(status.interpolation or ()))),
                gr.update(visible=status.image_to_video),
                gr.update(visible=status.image_to_video),
            )
        return (
            banner_markdown(status, shared=self.config.shared),
            gr.update(value=label, interactive=interactive),
            gr.update(visible=status.phase == Phase.FAILED),
            gr.Timer(active=status.busy),
            *dropdowns,
            self.hint(steps, length, size, fast_mode, step_cache, guidance_scale, task),
        )

    def retry_loading(self):
        self.loader.start()
        return gr.Timer(active=True), gr.update(visible=False)

    def hint(
        self,
        steps: float,
        length: str,
        size: str,
        fast_mode: bool,
        step_cache: bool = False,
        guidance_scale: float | None = None,
        task: str | None = None,
    ) -> str:
        status = self.loader.status()
        if not status.ready or status.native is None:
            return ""
        frames, height, width = resolved_shape(length, size, status.native)
        try:
            step_count = int(steps)
            guidance = guidance_scale is None or float(guidance_scale) > 1
        except (TypeError, ValueError):
            return ""
        shape = RequestShape(
            frames,
            height,
            width,
            step_count,
            guidance,
            bool(fast_mode),
            bool(step_cache),
            image_to_video=task == IMAGE_TO_VIDEO,
        )
        return request_hint(status.hardware, shape)

    # ---- image to video -----------------------------------------------------------------

    def crop_preview(self, image: str | None, size: str):
        """The frame the model will be given for ``image`` at the chosen size (the engine's
        own crop and resize), or None."""
        if not image:
            return None
        from allegro.ti2v.condition import condition_preview
        from allegro.ti2v.inputs import load_image

        native = self.loader.status().native
        height, width = size_for(size)
        if height is None or width is None:
            if native is None:
                return None
            height, width = native.height, native.width
        try:
            return condition_preview(load_image(image), height, width)
        except AllegroError as error:
            raise user_error(error) from None

    def switch_task(self, task: str, guidance: float):
        """(image inputs shown, guidance): the official guidance of the new task replaces
        the other task's."""
        from_images = task == IMAGE_TO_VIDEO
        official = (OFFICIAL_GUIDANCE, OFFICIAL_TI2V_GUIDANCE)
        if guidance in official:
            guidance = official[from_images]
        return gr.update(visible=from_images), guidance
