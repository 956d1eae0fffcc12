"""Gradio handlers: the page's events and the API endpoints, on top of the engine.

Handlers validate with the engine's own checks and show ``AllegroError`` messages as they
are (gr.Error); any other exception is a bug: logged with its traceback, shown as a short
generic message, and the app keeps serving.

Every event verifies who is calling (``ui.identity``): the page's server-issued token, or an
API key. Files leave the server only as copies in Gradio's cache, under names derived from
a secret hash of their content (``publish``), handed to their owner; the output folder itself
is never served.
"""

import dataclasses
import functools
import inspect
import logging
import re
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from allegro.errors import AllegroError, Cancelled, InterpolationError, InvalidRequestError
from allegro.events import CancelToken, ProgressEvent
from allegro.jobs import JobRunner, prepare_request
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
from ui.config import AppConfig, job_inputs_dir
from ui.estimates import (
    cost_hint,
    estimate_memory_bytes,
    estimate_seconds,
    fast_mode_notice,
    options_note,
)
from ui.formatting import progress_description, result_markdown
from ui.identity import KEY_HEADER, MAKE_A_KEY, Identities, IdentityError, Owner, key_owner
from ui.jobs import JobItem, iterate_in_thread, stream_generation
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
from ui.uploads import uploaded_file
from ui.zerogpu import check_fits, gpu_duration, wrap_for_spaces

logger = logging.getLogger(__name__)

GENERATION = "generation"  # the concurrency group of every generation, page and API
LOCAL_OWNER = "local"  # the job owner of a key-less caller where the server is not shared
BUG_MESSAGE = (
    "Something went wrong inside Allegro Studio (the details are in the server log). "
    "The app keeps running: please try again."
)


@dataclass
class JobSlot:
    """Per-session state: the running job's cancel token, so Cancel can reach the worker."""

    token: CancelToken | None = None


# A validator's answer names the inputs in the event's order.
PAGE_INPUTS = (*(field.name for field in dataclasses.fields(ControlValues)), "owner_id", "job")
# Which input a validation message is about, from the engine's wording.
_MESSAGE_FIELDS = (
    (re.compile(r"^The negative prompt"), ("negative_prompt",)),
    (re.compile(r"^Seed"), ("seed",)),
    (re.compile(r"^Steps"), ("steps",)),
    (re.compile(r"^Guidance scale"), ("guidance_scale",)),
    (re.compile(r"^Allegro cannot make \d+ frames"), ("length", "frames")),
    (re.compile(r"^Allegro cannot make"), ("size", "height")),
    (re.compile(r"interpolation method"), ("interpolation_method",)),
    (re.compile(r"^The first (image|frame)"), ("image", "first_image")),
    (re.compile(r"^The last (image|frame)|^A last frame"), ("last_image",)),
    (re.compile(r"needs a first frame"), ("first_image",)),
    (re.compile(r"^Overlap frames"), ("overlap_frames",)),
    (re.compile(r"to continue|continued|continuation"), ("video",)),
)
INPUT_LABELS = {"first_image": "First frame", "last_image": "Last frame"}
TEXT_ONLY_MESSAGE = (
    "This server makes videos from text only (it was started with --ti2v-model none): "
    "leave out the images."
)


def _validations(inputs: tuple[str, ...], problem: str | None) -> list[dict]:
    """One gr.validate per input; the problem, if any, on the input it is about (the
    first, the prompt, when the message names none)."""
    field = None
    if problem is not None:
        field = next(
            (
                name
                for pattern, names in _MESSAGE_FIELDS
                if pattern.search(problem)
                for name in names
                if name in inputs
            ),
            inputs[0],
        )
    return [gr.validate(name != field, problem if name == field else "") for name in inputs]


def waiting_generations(request: gr.Request | None) -> int:
    """Generations waiting for the GPU. The queue itself has no size limit, so that page
    loads, the gallery and /history are never turned away; generations are limited here,
    in their validator, before they join. Gradio keeps one waiting list per concurrency
    group (gradio/queueing.py:99-107, 227-237)."""
    http = getattr(request, "request", None)
    app = getattr(http, "app", None)
    if app is None or not hasattr(app, "get_blocks"):
        return 0
    waiting = app.get_blocks()._queue.event_queue_per_concurrency_id.get(GENERATION)
    return len(waiting.queue) if waiting is not None else 0


def user_error(error: BaseException) -> gr.Error:
    """The gr.Error to show for ``error``: its own message for AllegroError (or a gr.Error
    already made from one, e.g. in the ZeroGPU worker), else generic."""
    if isinstance(error, gr.Error):
        return error
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
        identities: Identities | None = None,
    ):
        self.config = config
        self.loader = loader
        self.output_dir = config.output_dir
        self._environ = environ
        if identities is not None:
            self.identities = identities
        # On a Space, generation runs inside spaces.GPU with a duration from the cost model.
        self._gpu_stream = wrap_for_spaces(self._stream, self._gpu_seconds, environ, user_error)
        # Jobs that outlive the page. Not on ZeroGPU: there the page runs the generation in
        # its own event (the direct path). spaces.GPU could be called from the runner's
        # thread, but it takes the caller's quota from the gr.Request of the event it runs
        # in (spaces 0.51.3 zero/wrappers.py:189 and 321, LocalContext.request): from a
        # worker there is none, so no X-IP-Token (zero/client.py:131-132) and every job
        # would be billed to the Space's own limit (client.py:174-177), not the visitor's;
        # the token is short-lived, so it cannot be kept with a queued job either. And the
        # GPU process's queue messages need the event's Blocks (zero/gradio.py:70-74).
        self.runner: JobRunner | None = None
        self.page_jobs: PageJobs | None = None  # the page's handlers when jobs are on
        if jobs_db is not None and not config.zero_gpu:
            from allegro.jobs import JobLimits, JobStore, add_device_workers

            # One worker per device (--devices), added once the loader has found them.
            self.runner = JobRunner(
                JobStore(jobs_db),
                [],
                JobLimits(per_owner=config.jobs_per_person, total=config.jobs_total),
                prepare=self.prepare_job,
                inputs_dir=job_inputs_dir(jobs_db),
            )
            add_device_workers(self.runner, loader.manager, config.output_dir)
            self.page_jobs = PageJobs(self, self.runner)
        from ui.job_api import JobApi  # it imports this module

        self.job_api = JobApi(self, self.runner)
        from ui.gallery_page import GalleryPage  # it imports this module

        self.gallery = GalleryPage(self)

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
        def estimate(frames: int, height: int, width: int, steps: int, fast: bool):
            if status.hardware is None:
                return None
            return estimate_seconds(status.hardware, frames, height, width, steps, fast)

        return estimate

    def check_page(
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
        step_cache: bool,
        task: str,
        first_image: str | None,
        last_image: str | None,
        owner_id: str,
        job: JobSlot,
        request: gr.Request = None,
    ) -> list[dict]:
        """Generate's validator: runs when the click arrives, before it joins the queue
        (gradio/queueing.py:308-348), so a bad request (a bad image included) never waits
        for the GPU."""
        controls = ControlValues(  # the page's controls, in the field order
            prompt, negative_prompt, seed, steps, guidance_scale, length, size,
            use_template, interpolate, interpolation_method, fast_mode, step_cache,
            task, first_image, last_image,
        )  # fmt: skip
        problem = self._problem(lambda: self._page_request(owner_id, controls), request)
        return _validations(PAGE_INPUTS, problem)

    def check_api(
        self,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        seed: int | str | None = None,
        steps: int | float | str = OFFICIAL_STEPS,
        guidance_scale: float | str | None = None,
        frames: int | str | None = None,
        height: int | str | None = None,
        width: int | str | None = None,
        use_template: bool = True,
        interpolate: bool = False,
        interpolation_method: str | None = None,
        fast_mode: bool = False,
        step_cache: bool = False,
        image: FileData | None = None,
        last_image: FileData | None = None,
        request: gr.Request = None,
    ) -> list[dict]:
        """/generate's validator (same parameters): the key, every field and the images,
        and room in the queue (see _room_problem), before the call is queued."""
        values = (prompt, negative_prompt, seed, steps, guidance_scale, frames, height, width)
        values += (use_template, interpolate, interpolation_method, fast_mode, step_cache)
        return self._check_api_values((*values, image, last_image), request)

    def check_submit_api(self, request: gr.Request, *values: Any) -> list[dict]:
        """/submit's validator (/generate's parameters): the same checks. ``request`` comes
        first: Gradio inserts it at its parameter's place (gradio/helpers.py special_args)."""
        return self._check_api_values(values, request)

    def _check_api_values(self, values: tuple, request: gr.Request | None) -> list[dict]:
        *fields, image, last_image = values

        def build():
            owner = self.api_owner(request)
            return owner, self.api_request(*fields, image=image, last_image=last_image)

        problem = self._problem(build, request)
        return _validations(tuple(inspect.signature(self.check_api).parameters)[:-1], problem)

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

        problem = self._problem(build, request)
        return _validations(tuple(inspect.signature(self.check_extend).parameters)[:-1], problem)

    def _problem(self, build, request: gr.Request | None) -> str | None:
        """What is wrong with a caller, their request or the queue, or None. ``build``
        returns (owner, request) or raises."""
        try:
            owner, generation = build()
            self.prepare(generation)
            return self._room_problem(owner, request)
        except AllegroError as error:
            return str(error)
        except Exception as error:  # a bug: the handler itself will report it
            logger.error("Unexpected error in a validator", exc_info=error)
        return None

    def _room_problem(self, owner: Owner | None, request: gr.Request | None) -> str | None:
        """One queue limit. With a job runner every generation, page or API, is a job from
        the moment it is accepted, so the runner's limits (per person, in all) are the only
        ones (JobLimitError names the one passed). Without one (ZeroGPU, where a visitor's
        own event runs the generation), the callers waiting for the GPU (--max-queue)."""
        if self.runner is not None:
            self.runner.check_limits(owner.tag if owner is not None else LOCAL_OWNER)
            return None
        waiting = waiting_generations(request)
        if waiting >= self.config.max_queue:
            return (
                f"Queue is full: {waiting} videos are waiting for the GPU. Please try "
                "again in a few minutes."
            )
        return None

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request before it is queued (AllegroError with the engine's message). Once
        the model is known the request is resolved, so the seed is fixed from here on."""
        status = self.loader.status()
        if request.interpolate:
            self.check_interpolation(request.interpolation_method)
        if request.image_to_video:
            from allegro.ti2v.inputs import check_condition_files

            if status.ready and not status.image_to_video:
                raise InvalidRequestError(TEXT_ONLY_MESSAGE)
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
        self, request: GenerationRequest, owner: Owner | None, cancel: CancelToken
    ) -> AsyncIterator[JobItem]:
        labels = self.labels(owner)
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
        step_cache: bool,
        task: str,
        first_image: str | None,
        last_image: str | None,
        owner_id: str,
        job: JobSlot,
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
            step_cache=step_cache,
            task=task,
            first_image=first_image,
            last_image=last_image,
        )
        try:
            owner, generation = self._page_request(owner_id, controls)
            prepared = self.prepare(generation)
        except AllegroError as error:
            raise user_error(error) from None
        async for outputs in self._page_run(prepared, owner, job, progress):
            yield outputs

    def _page_request(
        self, owner_id: Any, controls: ControlValues
    ) -> tuple[Owner, GenerationRequest]:
        """The page's caller and request; its images must be uploads like an API caller's
        (raw HTTP can send any text in their place)."""
        owner = self.page_owner(owner_id)
        uploads = {
            key: uploaded_file(getattr(controls, key), label.lower())
            for key, label in INPUT_LABELS.items()
        }
        return owner, replace(controls, **uploads).to_request()

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
        job: JobSlot,
        request: gr.Request = None,
    ) -> list[dict]:
        """Extend's validator: the selected video must be the caller's, the fields good."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, length)

        def build():
            owner = self.page_owner(owner_id)
            return owner, self._page_extension(name, owner, *fields, use_template, fast_mode)

        problem = self._problem(build, request)
        inputs = tuple(inspect.signature(self.check_extend_page).parameters)[:-1]
        return _validations(inputs, problem)

    async def extend_page(
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
        job: JobSlot,
        progress=gr.Progress(),  # noqa: B008
    ):
        """The selected gallery video, continued with the page's prompt and settings; yields
        as generate_page."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, length)
        try:
            owner = self.page_owner(owner_id)
            extension = self._page_extension(name, owner, *fields, use_template, fast_mode)
            prepared = self.prepare(extension)
        except AllegroError as error:
            raise user_error(error) from None
        async for outputs in self._page_run(prepared, owner, job, progress):
            yield outputs

    def _page_extension(
        self, name, owner, prompt, negative, seed, steps, guidance, length, template, fast
    ) -> GenerationRequest:
        if not name:
            raise gallery.GalleryError("Pick a video in the gallery first.")
        frames = frames_for(length)
        return self.extend_request(
            name, owner, prompt, negative, seed, steps, guidance, frames,
            DEFAULT_OVERLAP_FRAMES, template, fast,
        )  # fmt: skip

    async def _page_run(
        self, prepared: GenerationRequest, owner: Owner, job: JobSlot, progress: gr.Progress
    ):
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
            async for item in self.run(prepared, owner, token):
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
                    gr.update(value=self.publish(item.video_path), visible=True),
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
        guidance_scale: float | str | None = None,
        frames: int | str | None = None,
        height: int | str | None = None,
        width: int | str | None = None,
        use_template: bool = True,
        interpolate: bool = False,
        interpolation_method: str | None = None,
        fast_mode: bool = False,
        step_cache: bool = False,
        image: FileData | None = None,
        last_image: FileData | None = None,
        request: gr.Request = None,
    ) -> tuple[FileData, dict]:
        """Make one video. Returns the MP4 and its settings (with the seed used and any
        warnings). Sizes left empty take the model's native size; seed empty or -1 is
        random; guidance empty is the official one (7.5, or 8 from images). Image to video:
        ``image`` becomes the first frame and ``last_image`` (optional) the last, each
        cropped to the video's shape (send them with gradio_client's handle_file). On a
        shared server, send your own key (32+ characters) in the X-Allegro-Key header: your
        videos and history are those made with it."""
        fields = (prompt, negative_prompt, seed, steps, guidance_scale, frames, height, width)
        options = (use_template, interpolate, interpolation_method, fast_mode, step_cache)
        try:
            generation = self.api_request(*fields, *options, image=image, last_image=last_image)
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
        if self.runner is not None:
            try:
                owner = self.api_owner(request)
            except AllegroError as error:
                raise user_error(error) from None
            return await self.job_api.generate_as_job(generation, owner)
        token = CancelToken()
        try:
            owner = self.api_owner(request)
            prepared = self.prepare(generation)
            async for item in self.run(prepared, owner, token):
                if not isinstance(item, ProgressEvent):
                    settings = {**item.settings, "warnings": list(item.warnings)}
                    return FileData(path=self.publish(item.video_path)), settings
        except Exception as error:
            raise user_error(error) from None
        raise user_error(RuntimeError("the generation ended without a result"))

    @staticmethod
    def api_request(*values: Any, image: Any = None, last_image: Any = None) -> GenerationRequest:
        """/generate's parameters (request aside), which are GenerationRequest's fields in
        order, then the uploaded images; a method alone asks for interpolation."""
        generation = GenerationRequest(
            *values,
            first_image=uploaded_file(image, "first image"),
            last_image=uploaded_file(last_image, "last image"),
        )
        wants_interpolation = generation.interpolate or bool(generation.interpolation_method)
        return replace(generation, interpolate=wants_interpolation)

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
        self, steps: float, length: str, size: str, fast_mode: bool, step_cache: bool = False
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
            banner_markdown(status),
            gr.update(value=label, interactive=interactive),
            gr.update(visible=status.phase == Phase.FAILED),
            gr.Timer(active=status.busy),
            *dropdowns,
            self.hint(steps, length, size, fast_mode, step_cache),
        )

    def retry_loading(self):
        self.loader.start()
        return gr.Timer(active=True), gr.update(visible=False)

    def hint(
        self, steps: float, length: str, size: str, fast_mode: bool, step_cache: bool = False
    ) -> str:
        status = self.loader.status()
        if not status.ready or status.native is None:
            return ""
        frames, height, width = resolved_shape(length, size, status.native)
        try:
            step_count = int(steps)
        except (TypeError, ValueError):
            return ""
        hardware = status.hardware
        if hardware is None or hardware.gpu_name is None:
            return cost_hint(None, hardware)
        notice = fast_mode_notice(hardware, frames, height, width) if fast_mode else ""
        fast = bool(fast_mode) and not notice  # the engine will switch it off
        seconds = estimate_seconds(
            hardware, frames, height, width, step_count, fast, bool(step_cache)
        )
        memory = estimate_memory_bytes(hardware, frames, height, width, bool(step_cache), fast)
        note = options_note(bool(step_cache), hardware.memory_profile)
        return cost_hint(seconds, hardware, memory, note) + notice

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
