"""The model's lifecycle in one place: which model to run, loading it in the background,
and its state (starting, downloading, loading, ready, failed) with the same ProgressEvent
stream the jobs use.

A failed load stays failed, with its reason, until ``start()`` is called again; jobs get
the engine only once the model is ready (``ready_engine``), so a job never starts a load,
let alone a silent re-download.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from allegro.errors import AllegroError, ModelUnavailableError, UnsupportedSetupError
from allegro.events import ProgressCallback, ProgressEvent, Stage, ignore_progress
from allegro.request import DEFAULT_MODEL, MODEL_PRESETS, TI2V_MODEL

if TYPE_CHECKING:
    from allegro.engine import Engine
    from allegro.loading import LoadedPipeline

logger = logging.getLogger(__name__)


class Phase(str, Enum):
    STARTING = "starting"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"

    @property
    def busy(self) -> bool:
        return self not in (Phase.READY, Phase.FAILED)


NO_TI2V = "none"  # --ti2v-model none: this server makes videos from text only
PREVIEW_TI2V = "preview"  # the preview model's image-to-video twin, made beside it


@dataclass(frozen=True)
class ModelChoice:
    model: str
    transformer: str | None
    preview: bool  # the built-in tiny model (its output is noise)
    # The image-to-video model (preview: the preview model's own); None: none served.
    ti2v_model: str | None = None

    @property
    def label(self) -> str:
        if self.preview:
            return "built-in preview model"
        return f"{self.model} + {self.transformer}" if self.transformer else self.model


@dataclass(frozen=True)
class ModelSettings:
    """What to run and how (the app's and the CLI's flags)."""

    output_dir: Path
    model: str | None = None  # a preset name or a source; None: choose by the hardware
    transformer: str | None = None
    preview: bool = False
    precision: str | None = None
    vae_precision: str = "fp32"
    offload: str = "auto"
    compile: bool = False
    memory_profile: str = "off"  # costs.MEMORY_PROFILES
    ema_vfi_weights: str | None = None
    # Image to video: a preset name or a source; None: allegro-ti2v with a CUDA GPU, the
    # preview model's image-to-video twin without one; "none": no image to video.
    ti2v_model: str | None = None
    zero_gpu: bool = False  # weights load only before launch there: no second model


@dataclass(frozen=True)
class ModelState:
    phase: Phase = Phase.STARTING
    message: str = "Starting …"
    choice: ModelChoice | None = None
    progress: ProgressEvent | None = None  # the latest downloading or loading event
    started: float = field(default_factory=time.monotonic)
    loaded: LoadedPipeline | None = None  # once ready
    image_to_video: bool = False  # once ready: image requests are served
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    @property
    def busy(self) -> bool:
        return self.phase.busy


def choose_model(
    model: str | None,
    transformer: str | None,
    preview: bool,
    has_cuda: bool,
    ti2v_model: str | None = None,
) -> ModelChoice:
    """Which models this run serves: the preview model if asked, then ``model`` (a preset
    name or a source), then Allegro with a CUDA GPU or the preview model without one; image
    to video from ``ti2v_model``, else Allegro-TI2V with a GPU (the preview model's twin in
    preview)."""
    ti2v = _ti2v_source(ti2v_model)
    if preview:
        return ModelChoice("", None, True, _preview_ti2v(ti2v_model, ti2v))
    if ti2v is None and ti2v_model is None and has_cuda:
        ti2v = TI2V_MODEL
    if model:
        preset = MODEL_PRESETS.get(model)
        if preset is not None:
            model, transformer = preset.model, transformer or preset.transformer
        # A TI2V main model serves image requests itself.
        return ModelChoice(model, transformer, False, None if model == ti2v else ti2v)
    if has_cuda:
        return ModelChoice(DEFAULT_MODEL, transformer, False, ti2v)
    return ModelChoice("", None, True, _preview_ti2v(ti2v_model, ti2v))


def _preview_ti2v(flag: str | None, source: str | None) -> str | None:
    return PREVIEW_TI2V if flag is None else source


def _ti2v_source(name: str | None) -> str | None:
    """--ti2v-model as a source: presets by name; None for unset or "none"."""
    if name is None or name.strip().lower() == NO_TI2V:
        return None
    preset = MODEL_PRESETS.get(name)
    return preset.model if preset is not None else name


def preview_model_dir(environ: Mapping[str, str]) -> Path:
    """Where the preview checkpoint is kept: beside the Hugging Face cache when HF_HOME is
    set (a Docker volume), else in ~/.cache."""
    if environ.get("ALLEGRO_PREVIEW_MODEL_DIR"):
        return Path(environ["ALLEGRO_PREVIEW_MODEL_DIR"]).expanduser()
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser() / "allegro-studio" / "preview-model"
    cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "allegro-studio" / "preview-model"


def preview_ti2v_dir(environ: Mapping[str, str]) -> Path:
    """The preview model's image-to-video twin, beside it."""
    directory = preview_model_dir(environ)
    return directory.with_name(directory.name + "-ti2v")


def ensure_preview_model(directory: Path, ti2v: bool = False) -> Path:
    """Make the tiny checkpoint once (``ti2v``: the Allegro-TI2V one); written beside and
    renamed into place, so a crash or a second process never leaves a half-written model."""
    if (directory / "model_index.json").is_file():
        return directory
    from allegro.tiny import make_tiny

    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".preview-", dir=directory.parent))
    try:
        make_tiny(temporary, ti2v=ti2v)
        try:
            temporary.rename(directory)
        except OSError:
            if not (directory / "model_index.json").is_file():  # not another process's
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory


def _cuda_available() -> bool:
    from allegro.loading import cuda_available

    return cuda_available()


def _visible_gpus() -> list[str]:
    from allegro.loading import visible_nvidia_devices

    return visible_nvidia_devices()


class ModelManager:
    """Owns the background load and the engine built for the chosen model."""

    def __init__(
        self,
        settings: ModelSettings,
        environ: Mapping[str, str],
        has_cuda: Callable[[], bool] = _cuda_available,
        visible_gpus: Callable[[], list[str]] = _visible_gpus,
    ) -> None:
        self.settings = settings
        self.environ = environ
        self._has_cuda = has_cuda
        self._visible_gpus = visible_gpus
        self._changed = threading.Condition()
        self._state = ModelState()
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[ProgressCallback] = []

    def state(self) -> ModelState:
        with self._changed:
            return self._state

    def _update(self, **changes) -> None:
        with self._changed:
            self._state = replace(self._state, **changes)
            self._changed.notify_all()

    def add_listener(self, listener: ProgressCallback) -> None:
        """Receive every loading and downloading event from now on."""
        with self._changed:
            self._listeners.append(listener)

    def remove_listener(self, listener: ProgressCallback) -> None:
        with self._changed:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def start(self) -> None:
        """Start (or, after a failure, retry) loading in a daemon thread."""
        with self._changed:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._state.phase == Phase.FAILED:
                self._state = replace(
                    self._state,
                    phase=Phase.STARTING,
                    message="Retrying …",
                    error=None,
                    started=time.monotonic(),
                )
            self._thread = threading.Thread(
                target=self._run, name="allegro-model-loader", daemon=True
            )
            self._thread.start()

    def load(self) -> None:
        """Load on the calling thread and return when done (or failed: see state()). On
        ZeroGPU the app calls this on the main thread before launch: spaces emulates CUDA
        only on the thread that imported it (its TorchFunctionMode is thread-local, spaces
        0.51.3 zero/torch/patching.py:301-307, zero/wrappers.py:355) and packs the "cuda"
        weights at launch (zero/__init__.py:31, zero/gradio.py:157-163). A finished load
        also means no request can fork the GPU worker while the cache's lock is held."""
        self._run()

    def engine(self, timeout: float = 600.0) -> Engine:
        """The engine once the model is chosen (loading may still be under way). Raises
        AllegroError if loading failed or nothing was chosen in ``timeout`` seconds."""
        with self._changed:
            chosen = self._changed.wait_for(
                lambda: self._engine is not None or self._state.phase == Phase.FAILED, timeout
            )
            if self._state.phase == Phase.FAILED:
                raise ModelUnavailableError(f"The model could not be loaded: {self._state.error}")
            if not chosen or self._engine is None:
                raise AllegroError("The model is still being prepared; try again in a moment.")
            return self._engine

    def ready_engine(
        self, on_progress: ProgressCallback = ignore_progress, timeout: float | None = None
    ) -> Engine:
        """The engine once the model is loaded, passing loading events on meanwhile. A job
        calls this, never a load: a failed model stays failed (ModelUnavailableError with
        its reason) until someone retries, and no job re-downloads weights behind the
        page's back."""
        self.add_listener(on_progress)
        try:
            with self._changed:
                self._changed.wait_for(lambda: not self._state.busy, timeout)
                state = self._state
        finally:
            self.remove_listener(on_progress)
        if state.phase == Phase.FAILED:
            raise ModelUnavailableError(
                f"The model could not be loaded: {state.error} Retry loading, then run the job "
                "again."
            )
        if not state.ready or self._engine is None:
            raise AllegroError("The model is still loading; try again in a moment.")
        return self._engine

    def _on_progress(self, event: ProgressEvent) -> None:
        phase = Phase.DOWNLOADING if event.stage == Stage.DOWNLOADING else Phase.LOADING
        self._update(phase=phase, message=event.message or "Loading …", progress=event)
        with self._changed:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def _spec(self, model: str, transformer: str | None):
        from allegro.loading import PipelineSpec

        settings = self.settings
        return PipelineSpec(
            model=model,
            transformer=transformer,
            precision=settings.precision,
            vae_precision=settings.vae_precision,
            offload=settings.offload,
            compile=settings.compile,
            memory_profile=settings.memory_profile,
        )

    def _run(self) -> None:
        settings = self.settings
        try:
            self._update(message="Looking for a GPU …")
            has_cuda = self._has_cuda()
            if not has_cuda and not settings.preview and (devices := self._visible_gpus()):
                from allegro.loading import cuda_unusable_message

                # Loud: silently serving the CPU preview model would hide a broken setup.
                raise UnsupportedSetupError(cuda_unusable_message(devices))
            choice = choose_model(
                settings.model,
                settings.transformer,
                settings.preview,
                has_cuda,
                settings.ti2v_model,
            )
            self._update(choice=choice)
            model, ti2v_model = choice.model, choice.ti2v_model
            if settings.zero_gpu:
                # Weights load only before launch there (ModelManager.load), and the cache
                # holds one pipeline: image to video would need a second load in a GPU call.
                ti2v_model = None
            if choice.preview:
                self._update(message="Preparing the preview model …")
                model = str(ensure_preview_model(preview_model_dir(self.environ)))
                if ti2v_model == PREVIEW_TI2V:
                    twin = ensure_preview_model(preview_ti2v_dir(self.environ), ti2v=True)
                    ti2v_model = str(twin)
            from allegro.engine import Engine

            spec = self._spec(model, choice.transformer)
            # Loaded on the first image request; the text encoder and VAE are shared
            # (allegro/loading.py, SHAREABLE_COMPONENTS).
            ti2v_spec = self._spec(ti2v_model, None) if ti2v_model else None
            engine = Engine(
                spec, settings.output_dir, settings.ema_vfi_weights, ti2v_spec=ti2v_spec
            )
            with self._changed:
                self._engine = engine
                self._changed.notify_all()
            loaded = engine.load(self._on_progress)
            self._update(
                phase=Phase.READY,
                message="Ready",
                loaded=loaded,
                image_to_video=ti2v_spec is not None or loaded.ti2v,
            )
            logger.info("Model ready: %s on %s", choice.label, loaded.device)
        except AllegroError as error:
            self._update(phase=Phase.FAILED, error=str(error))
            logger.error("Model loading failed: %s", error)
        except Exception as error:  # a bug: keep serving, and show this
            logger.exception("Model loading failed")
            self._update(
                phase=Phase.FAILED,
                error=f"Unexpected {type(error).__name__}: {error} (see the server log).",
            )
