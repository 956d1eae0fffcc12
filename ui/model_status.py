"""Loading the model in the background while the page already answers, and what the page
shows about it (a status banner, the Generate button's label).

The loader decides which model to run (Allegro with a CUDA GPU, the built-in preview model
without), makes the preview checkpoint on first use, and loads the pipeline through the
engine's process-wide cache. The page polls ``ModelLoader.status()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from allegro.errors import AllegroError, UnsupportedSetupError
from allegro.events import ProgressEvent, Stage
from allegro.request import DEFAULT_MODEL, MODEL_PRESETS, TI2V_MODEL, NativeSize
from ui.config import AppConfig
from ui.estimates import Hardware, format_duration
from ui.presets import MethodChoice

if TYPE_CHECKING:
    from allegro.engine import Engine

logger = logging.getLogger(__name__)

PREVIEW_MODEL_NOTE = (
    "Real videos need an NVIDIA GPU and the Allegro weights (about 25 GB to download): "
    "about 27.5 GB of GPU memory without offload, or about 9.3 GB with "
    "`--offload sequential` (2-3x slower)."
)


class Phase(str, Enum):
    STARTING = "starting"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


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
class ModelStatus:
    phase: Phase = Phase.STARTING
    message: str = "Starting …"
    choice: ModelChoice | None = None
    downloaded: int = 0  # bytes, while downloading
    download_total: int = 0
    started: float = field(default_factory=time.monotonic)
    native: NativeSize | None = None
    hardware: Hardware | None = None
    device: str | None = None
    offload_reason: str | None = None
    interpolation: tuple[MethodChoice, ...] | None = None  # None until the loader checked
    image_to_video: bool = False  # image requests are served (by the TI2V model)
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    @property
    def busy(self) -> bool:
        return self.phase not in (Phase.READY, Phase.FAILED)


def choose_model(config: AppConfig, has_cuda: bool) -> ModelChoice:
    """Which models this run serves: --preview, then --model (a preset name or a source),
    then Allegro with a CUDA GPU or the preview model without one; image to video from
    --ti2v-model, else Allegro-TI2V with a GPU (the preview model's twin in preview)."""
    ti2v = _ti2v_source(config.ti2v_model)
    if config.preview:
        return ModelChoice("", None, True, _preview_ti2v(config.ti2v_model, ti2v))
    if ti2v is None and config.ti2v_model is None and has_cuda:
        ti2v = TI2V_MODEL
    if config.model:
        preset = MODEL_PRESETS.get(config.model)
        if preset is not None:
            model, transformer = preset.model, config.transformer or preset.transformer
        else:
            model, transformer = config.model, config.transformer
        # A TI2V main model serves image requests itself.
        return ModelChoice(model, transformer, False, None if model == ti2v else ti2v)
    if has_cuda:
        return ModelChoice(DEFAULT_MODEL, config.transformer, False, ti2v)
    return ModelChoice("", None, True, _preview_ti2v(config.ti2v_model, ti2v))


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


def banner_markdown(status: ModelStatus) -> str:
    """The status line above the page."""
    choice = status.choice
    if status.phase == Phase.FAILED:
        return f"**The model could not be loaded.** {status.error}"
    if status.phase == Phase.DOWNLOADING and status.download_total:
        done, total = status.downloaded / 1e9, status.download_total / 1e9
        percent = 100 * status.downloaded / status.download_total
        return (
            f"**Downloading {choice.label if choice else 'the model'}:** "
            f"{done:.1f} of {total:.1f} GB ({percent:.0f}%). {status.message}"
        )
    if status.busy:
        elapsed = format_duration(time.monotonic() - status.started)
        return (
            f"**Loading {choice.label if choice else 'the model'} …** {status.message} ({elapsed})"
        )
    if choice is not None and choice.preview:
        return (
            "**Running the preview model: its videos are random noise.** It shows how the "
            "app works on any machine. " + PREVIEW_MODEL_NOTE
        )
    name = choice.label if choice else "The model"
    if status.hardware is None or status.hardware.gpu_name is None:
        return f"**{name}** ready on the CPU: slow, real videos need an NVIDIA GPU."
    offload = f" · offload: {status.offload_reason}" if status.offload_reason else ""
    return f"**{name}** ready on {status.hardware.gpu_label}{offload}"


def generate_button(status: ModelStatus) -> tuple[str, bool]:
    """(label, interactive) for the Generate button."""
    if status.ready:
        return "Generate", True
    if status.phase == Phase.FAILED:
        return "Model unavailable", False
    if status.phase == Phase.DOWNLOADING:
        return "Downloading model…", False
    return "Loading model…", False


def _interpolation_methods(weights: str | None, device: str) -> tuple[MethodChoice, ...]:
    from allegro.interpolation import METHODS, method_availability

    choices = []
    for name in METHODS:
        availability = method_availability(name, weights)
        reason = availability.reason
        if availability.available and name == "ema-vfi" and device != "cuda":
            reason = "slow without a GPU: seconds per frame"
        choices.append(MethodChoice(name, availability.available, reason))
    return tuple(choices)


def _cuda_available() -> bool:
    from allegro.loading import cuda_available

    return cuda_available()


def _visible_gpus() -> list[str]:
    from allegro.loading import visible_nvidia_devices

    return visible_nvidia_devices()


class ModelLoader:
    """Owns the background load and the engine built for the chosen model."""

    def __init__(
        self,
        config: AppConfig,
        environ: Mapping[str, str] | None = None,
        has_cuda: Callable[[], bool] = _cuda_available,
        visible_gpus: Callable[[], list[str]] = _visible_gpus,
    ) -> None:
        self.config = config
        self.environ = os.environ if environ is None else environ
        self._has_cuda = has_cuda
        self._visible_gpus = visible_gpus
        self._lock = threading.Lock()
        self._status = ModelStatus()
        self._engine: Engine | None = None
        self._engine_ready = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> ModelStatus:
        with self._lock:
            return self._status

    def _update(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def start(self) -> None:
        """Start (or, after a failure, retry) loading in a daemon thread."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._status.phase == Phase.FAILED:
                self._status = replace(
                    self._status,
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
        """Load on the calling thread and return when done (or failed: see status()). On
        ZeroGPU the app calls this on the main thread before launch: spaces emulates CUDA
        only on the thread that imported it (its TorchFunctionMode is thread-local, spaces
        0.51.3 zero/torch/patching.py:301-307, zero/wrappers.py:355) and packs the "cuda"
        weights at launch (zero/__init__.py:31, zero/gradio.py:157-163). A finished load
        also means no request can fork the GPU worker while the cache's lock is held."""
        self._run()

    def engine(self, timeout: float = 600.0) -> Engine:
        """The engine, once the model is chosen (loading may still be under way: the
        engine's own load waits for it). Blocks for the seconds that choosing takes."""
        deadline = time.monotonic() + timeout
        while not self._engine_ready.wait(0.2):
            status = self.status()
            if status.phase == Phase.FAILED:
                raise AllegroError(f"The model could not be loaded: {status.error}")
            if time.monotonic() > deadline:
                raise AllegroError("The model is still being prepared; try again in a moment.")
        assert self._engine is not None
        return self._engine

    def _on_progress(self, event: ProgressEvent) -> None:
        if event.stage == Stage.DOWNLOADING:
            self._update(
                phase=Phase.DOWNLOADING,
                message=event.message,
                downloaded=event.step,
                download_total=event.total,
            )
        else:
            self._update(phase=Phase.LOADING, message=event.message or "Loading …")

    def _spec(self, model: str, transformer: str | None):
        from allegro.loading import PipelineSpec

        return PipelineSpec(
            model=model,
            transformer=transformer,
            precision=self.config.precision,
            vae_precision=self.config.vae_precision,
            offload=self.config.offload,
            compile=self.config.compile,
            memory_profile=self.config.memory_profile,
        )

    def _run(self) -> None:
        try:
            self._update(message="Looking for a GPU …")
            has_cuda = self._has_cuda()
            if not has_cuda and not self.config.preview and (devices := self._visible_gpus()):
                from allegro.loading import cuda_unusable_message

                # Loud: silently serving the CPU preview model would hide a broken setup.
                raise UnsupportedSetupError(cuda_unusable_message(devices))
            choice = choose_model(self.config, has_cuda)
            self._update(choice=choice)
            model, ti2v_model = choice.model, choice.ti2v_model
            if self.config.zero_gpu:
                # Weights load only before launch there (see load), and the cache holds one
                # pipeline: image to video would need a second load inside a GPU call.
                ti2v_model = None
            if choice.preview:
                self._update(message="Preparing the preview model …")
                model = str(ensure_preview_model(preview_model_dir(self.environ)))
                if ti2v_model == PREVIEW_TI2V:
                    ti2v_model = str(
                        ensure_preview_model(preview_ti2v_dir(self.environ), ti2v=True)
                    )
            from allegro.engine import Engine

            spec = self._spec(model, choice.transformer)
            # Loaded on the first image request; the text encoder and VAE are shared
            # (allegro/loading.py, SHAREABLE_COMPONENTS).
            ti2v_spec = self._spec(ti2v_model, None) if ti2v_model else None
            self._engine = Engine(
                spec, self.config.output_dir, self.config.ema_vfi_weights, ti2v_spec=ti2v_spec
            )
            self._engine_ready.set()
            loaded = self._engine.load(self._on_progress)
            self._update(
                phase=Phase.READY,
                message="Ready",
                native=loaded.native,
                device=loaded.device,
                hardware=_hardware(loaded),
                offload_reason=None if loaded.device == "cpu" else loaded.offload.reason,
                interpolation=_interpolation_methods(self.config.ema_vfi_weights, loaded.device),
                image_to_video=ti2v_spec is not None or loaded.ti2v,
            )
            logger.info("Model ready: %s on %s", choice.label, loaded.device)
        except AllegroError as error:
            self._update(phase=Phase.FAILED, error=str(error))
            logger.error("Model loading failed: %s", error)
        except Exception as error:  # a bug: keep serving the page, which shows this
            logger.exception("Model loading failed")
            self._update(
                phase=Phase.FAILED,
                error=f"Unexpected {type(error).__name__}: {error} (see the server log).",
            )


def _hardware(loaded) -> Hardware:
    spec = loaded.spec
    return Hardware(
        gpu_name=loaded.device_name,
        offload=loaded.offload.mode,
        precision=spec.precision or "bf16",
        vae_precision=spec.vae_precision,
        transformer_config=dict(loaded.pipe.transformer.config),
        memory_profile=spec.memory_profile,
        gpu_memory_bytes=loaded.gpu_memory_bytes,
        multiprocessors=loaded.multiprocessors,
        compiled=loaded.compiled,
    )
