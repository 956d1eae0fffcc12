"""The model's lifecycle in one place: which model to run, loading it in the background,
and its state (starting, downloading, loading, ready, failed) with the same ProgressEvent
stream the jobs use.

A failed load stays failed, with its reason, until ``start()`` is called again; jobs get
the engine only once the model is ready (``ready_engine``), so a job never starts a load,
let alone a silent re-download.

Several devices (``--devices``): one engine per device, each with its own pipeline cache
(so its own prompt-embedding cache and preview map, which live on the loaded pipeline),
loaded one after another so that loading holds one extra copy of the weights in RAM at a
time. Host RAM for all of them is checked before the first load.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from allegro.devices import ALL_DEVICES, Device
from allegro.errors import AllegroError, ModelUnavailableError, UnsupportedSetupError
from allegro.events import ProgressCallback, ProgressEvent, Stage, ignore_progress
from allegro.request import DEFAULT_MODEL, MODEL_PRESETS, TI2V_MODEL, NativeSize

if TYPE_CHECKING:
    from allegro.engine import Engine
    from allegro.loading import LoadedPipeline, PipelineSpec

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
    devices: str = ALL_DEVICES  # allegro.devices.parse_devices
    ray_address: str | None = None  # workers on this Ray cluster instead (allegro.jobs.remote)


@dataclass(frozen=True)
class DeviceStatus:
    """One worker's device and what was decided for it (shown per device on the page)."""

    device: str
    ready: bool = False
    offload: str | None = None
    reason: str | None = None  # why that offload (from this device's free memory)
    precision: str | None = None
    gpu_name: str | None = None


@dataclass(frozen=True)
class ModelState:
    phase: Phase = Phase.STARTING
    message: str = "Starting …"
    choice: ModelChoice | None = None
    progress: ProgressEvent | None = None  # the latest downloading or loading event
    started: float = field(default_factory=time.monotonic)
    loaded: LoadedPipeline | None = None  # the first device's, once ready
    image_to_video: bool = False  # once ready: image requests are served
    error: str | None = None
    devices: tuple[DeviceStatus, ...] = ()  # one per worker, once the devices are known
    host_ram_bytes: int | None = None  # what the workers need in RAM (costs model)
    cluster: str | None = None  # the Ray cluster's address when the workers run there
    native: NativeSize | None = None  # what the model makes by default, once ready

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    @property
    def busy(self) -> bool:
        return self.phase.busy


class Cluster(Protocol):
    """Where the workers run instead of this process (``--ray``): it joins the cluster at
    ``address`` and starts one worker per GPU there (``cpu_workers`` CPU workers instead),
    each loading ``spec``, and returns what each worker reports (VideoActor.describe). The
    job runner takes its workers from it (allegro.jobs.workers); the manager only keeps
    the state."""

    def start(
        self, address: str, spec: PipelineSpec, cpu_workers: int
    ) -> Sequence[Mapping[str, Any]]: ...


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
        cluster: Cluster | None = None,
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.cluster = cluster  # needed with settings.ray_address
        self._has_cuda = has_cuda
        self._visible_gpus = visible_gpus
        self._changed = threading.Condition()
        self._state = ModelState()
        self._engines: list[Engine] = []  # one per device
        self._devices: tuple[Device | None, ...] = ()  # None: this process's default device
        self._remote: tuple[Mapping[str, Any], ...] = ()  # the Ray workers' descriptions
        self._device_listeners: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._listeners: list[ProgressCallback] = []
        self._state_listeners: list[Callable[[], None]] = []  # on_change

    def state(self) -> ModelState:
        with self._changed:
            return self._state

    def _update(self, **changes) -> None:
        with self._changed:
            self._state = replace(self._state, **changes)
            self._changed.notify_all()
            listeners = list(self._state_listeners)
        for listener in listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (no arguments, on the loading thread, holding no lock of this
        manager) after every change of ``state()``: e.g. the job runner's ``wake``."""
        with self._changed:
            self._state_listeners.append(listener)

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

    def when_devices_known(self, on_devices: Callable[[], None]) -> None:
        """Call ``on_devices()`` once the devices are resolved (at once if they are): the job
        runner adds its workers then (allegro.jobs.workers). Resolving needs torch (or the
        Ray cluster), which the page does not wait for. Called once per manager."""
        with self._changed:
            if not self._devices and not self._remote:
                self._device_listeners.append(on_devices)
                return
        on_devices()

    def devices(self) -> tuple[Device | None, ...]:
        with self._changed:
            return self._devices

    def engine(self, timeout: float = 600.0, slot: int = 0) -> Engine:
        """The engine of device ``slot`` once the model is chosen (loading may still be under
        way). Raises AllegroError if loading failed or nothing was chosen in ``timeout``
        seconds."""
        with self._changed:
            chosen = self._changed.wait_for(
                lambda: len(self._engines) > slot or self._state.phase == Phase.FAILED, timeout
            )
            if self._state.phase == Phase.FAILED:
                raise ModelUnavailableError(f"The model could not be loaded: {self._state.error}")
            if not chosen or len(self._engines) <= slot:
                raise AllegroError("The model is still being prepared; try again in a moment.")
            return self._engines[slot]

    def ready_engine(
        self,
        on_progress: ProgressCallback = ignore_progress,
        timeout: float | None = None,
        slot: int = 0,
    ) -> Engine:
        """The engine of device ``slot`` once the model is loaded, passing loading events
        on meanwhile. A job calls this, never a load: a failed model stays failed
        (ModelUnavailableError with its reason) until someone retries, and no job
        re-downloads weights behind the page's back."""
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
        if not state.ready or len(self._engines) <= slot:
            raise AllegroError("The model is still loading; try again in a moment.")
        return self._engines[slot]

    def _run_on_ray(self, address: str) -> None:
        """Join the cluster and start one worker per GPU there, each loading the model; this
        process loads nothing. ``--devices cpu,cpu`` asks for CPU workers instead (tests)."""
        from allegro.devices import CPU, parse_devices

        settings = self.settings
        if self.cluster is None:
            raise UnsupportedSetupError("No Ray cluster was given to run the workers on.")
        cpu_workers = sum(entry == CPU for entry in parse_devices(settings.devices))
        choice = choose_model(
            settings.model, settings.transformer, settings.preview, has_cuda=not cpu_workers
        )
        self._update(choice=choice, cluster=address, message=f"Joining Ray at {address} …")
        if not self._remote:
            self._update(message="Starting the cluster's workers (each loads the model) …")
            # The preview model is made by each worker where it runs: model "" says so.
            # Image to video is not served there: its input images are this machine's files.
            spec = self._spec(choice.model, choice.transformer if choice.model else None)
            described = tuple(self.cluster.start(address, spec, cpu_workers))
            with self._changed:
                self._remote = described
                listeners, self._device_listeners = self._device_listeners, []
            for listener in listeners:
                listener()
        statuses = []
        for where in self._remote:
            statuses.append(
                DeviceStatus(
                    device=f"{where['node']} {where['device']}",
                    ready=True,
                    offload=where["offload"],
                    reason=where["reason"],
                    precision=where["precision"],
                    gpu_name=where["gpu"],
                )
            )
        native = NativeSize(*self._remote[0]["native"])
        self._update(phase=Phase.READY, message="Ready", devices=tuple(statuses), native=native)
        logger.info("Model ready: %s on %d Ray workers", choice.label, len(statuses))

    def _spec(self, model: str, transformer: str | None) -> PipelineSpec:
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

    def _settle_devices(self, has_cuda: bool) -> tuple[Device | None, ...]:
        """The workers' devices (first time only: they stay for the process's life). One
        device of 'all' is None: the process's default device and pipeline cache, as
        before several devices existed (and what ZeroGPU's one emulated GPU needs)."""
        with self._changed:
            if self._devices:
                return self._devices
        from allegro.devices import detect_devices

        found = detect_devices(self.settings.devices)
        devices: tuple[Device | None, ...] = found
        if self.settings.devices == ALL_DEVICES and len(found) == 1:
            devices = (None,)
        self._publish_devices(devices)
        return devices

    def _publish_devices(self, devices: tuple[Device | None, ...]) -> None:
        with self._changed:
            self._devices = devices
            listeners, self._device_listeners = self._device_listeners, []
            self._state = replace(
                self._state,
                devices=tuple(DeviceStatus(_device_name(device)) for device in devices),
            )
            self._changed.notify_all()
        for listener in listeners:
            listener()

    def _check_host_memory(self, devices: tuple[Device | None, ...], spec) -> None:
        """Refuse, before loading, workers whose weights cannot fit in host RAM together."""
        if devices == (None,):
            return  # one worker: choose_offload already weighs host RAM for group offload
        import psutil

        from allegro.devices import check_host_memory, checkpoint_weight_bytes, predicted_offload
        from allegro.loading import resolve_precision

        local = Path(spec.model).expanduser()
        # A local checkpoint's files say its size; a hub model is taken to be Allegro-sized.
        weights = checkpoint_weight_bytes(local) if local.is_dir() else None

        named = [device for device in devices if device is not None]
        precision = resolve_precision(spec.precision, named[0].kind)
        vae_precision = resolve_precision(spec.vae_precision, named[0].kind)
        modes = [
            predicted_offload(device, spec.offload, precision, vae_precision, spec.memory_profile)
            for device in named
        ]
        need = check_host_memory(
            named,
            modes,
            precision,
            vae_precision,
            spec.memory_profile,
            psutil.virtual_memory().available,
            weights,
        )
        self._update(host_ram_bytes=need)

    def _make_engines(self, spec, devices: tuple[Device | None, ...], ti2v_spec=None) -> None:
        from allegro.engine import Engine
        from allegro.loading import PIPELINE_CACHE, PipelineCache

        settings = self.settings
        engines = [
            Engine(
                spec,
                settings.output_dir,
                settings.ema_vfi_weights,
                cache=PIPELINE_CACHE if device is None else PipelineCache(device.name),
                ti2v_spec=ti2v_spec,
            )
            for device in devices
        ]
        with self._changed:
            self._engines = engines
            self._changed.notify_all()

    def _load_engines(self) -> None:
        """Load every device's pipeline, one after another."""
        statuses = list(self.state().devices)
        first = None
        for slot, engine in enumerate(self._engines):
            loaded = engine.load(self._on_progress)
            first = first or loaded
            statuses[slot] = DeviceStatus(
                device=loaded.device,
                ready=True,
                offload=loaded.offload.mode,
                reason=loaded.offload.reason,
                precision=loaded.spec.precision,
                gpu_name=loaded.device_name,
            )
            self._update(devices=tuple(statuses))
            logger.info("Loaded on %s: %s", loaded.device, loaded.offload.reason)
        choice = self.state().choice
        self._update(
            phase=Phase.READY,
            message="Ready",
            loaded=first,
            native=first.native,
            image_to_video=self._engines[0].ti2v_spec is not None or first.ti2v,
        )
        logger.info("Model ready: %s on %s", choice.label if choice else "?", first.device)

    def _on_progress(self, event: ProgressEvent) -> None:
        phase = Phase.DOWNLOADING if event.stage == Stage.DOWNLOADING else Phase.LOADING
        self._update(phase=phase, message=event.message or "Loading …", progress=event)
        with self._changed:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def _run(self) -> None:
        settings = self.settings
        try:
            if settings.ray_address:
                self._run_on_ray(settings.ray_address)
                return
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
            spec = self._spec(model, choice.transformer)
            # Loaded on the first image request; the text encoder and VAE are shared
            # (allegro/loading.py, SHAREABLE_COMPONENTS).
            ti2v_spec = self._spec(ti2v_model, None) if ti2v_model else None
            devices = self._settle_devices(has_cuda)
            if not choice.preview:
                self._check_host_memory(devices, spec)
            self._make_engines(spec, devices, ti2v_spec)
            self._load_engines()
        except AllegroError as error:
            self._update(phase=Phase.FAILED, error=str(error))
            logger.error("Model loading failed: %s", error)
        except Exception as error:  # a bug: keep serving, and show this
            logger.exception("Model loading failed")
            self._update(
                phase=Phase.FAILED,
                error=f"Unexpected {type(error).__name__}: {error} (see the server log).",
            )
        if self.state().phase == Phase.FAILED and not settings.ray_address:
            with self._changed:
                found = bool(self._devices)
            if not found:  # failed before the devices were known: one worker tells the jobs
                self._publish_devices((None,))


def _device_name(device: Device | None) -> str:
    from allegro.loading import execution_device

    return execution_device() if device is None else device.name
