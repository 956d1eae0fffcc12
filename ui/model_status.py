"""What the page shows about the model (a status banner, the Generate button's label): a
thin adapter over ``allegro.models``, which chooses the model, loads it in the background
and keeps its state. The page polls ``ModelLoader.status()``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from allegro.events import Stage
from allegro.jobs.remote import RayCluster
from allegro.models import (
    NO_TI2V,
    PREVIEW_TI2V,
    DeviceStatus,
    ModelChoice,
    ModelManager,
    ModelSettings,
    ModelState,
    Phase,
    ensure_preview_model,
    preview_model_dir,
)
from allegro.models import choose_model as _choose_model
from allegro.request import NativeSize
from ui.config import AppConfig
from ui.estimates import Hardware, format_duration
from ui.presets import MethodChoice

if TYPE_CHECKING:
    from allegro.engine import Engine

__all__ = [
    "NO_TI2V",
    "PREVIEW_TI2V",
    "ModelChoice",
    "ModelLoader",
    "ModelStatus",
    "Phase",
    "banner_markdown",
    "choose_model",
    "ensure_preview_model",
    "generate_button",
    "preview_model_dir",
]

PREVIEW_MODEL_NOTE = (
    "Real videos need an NVIDIA GPU and the Allegro weights (about 25 GB to download): "
    "about 27.5 GB of GPU memory without offload, or about 9.3 GB with "
    "`--offload sequential` (2-3x slower)."
)


@dataclass(frozen=True)
class ModelStatus:
    """The engine's ModelState as the page shows it: the state itself (one source, wherever
    the workers run), and what the page derives from it once the model is ready."""

    state: ModelState = field(default_factory=ModelState)
    hardware: Hardware | None = None  # the model loaded in this process; None elsewhere
    interpolation: tuple[MethodChoice, ...] | None = None  # None until ready

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def message(self) -> str:
        return self.state.message

    @property
    def choice(self) -> ModelChoice | None:
        return self.state.choice

    @property
    def started(self) -> float:
        return self.state.started

    @property
    def native(self) -> NativeSize | None:
        return self.state.native

    @property
    def image_to_video(self) -> bool:
        return self.state.image_to_video

    @property
    def error(self) -> str | None:
        return self.state.error

    @property
    def devices(self) -> tuple[DeviceStatus, ...]:
        return self.state.devices

    @property
    def host_ram_bytes(self) -> int | None:
        return self.state.host_ram_bytes

    @property
    def cluster(self) -> str | None:
        return self.state.cluster

    @property
    def device(self) -> str | None:
        return self.state.loaded.device if self.state.loaded is not None else None

    @property
    def offload_reason(self) -> str | None:
        loaded = self.state.loaded
        return None if loaded is None or loaded.device == "cpu" else loaded.offload.reason

    @property
    def downloaded(self) -> int:
        """Bytes so far, while downloading."""
        return self._download[0]

    @property
    def download_total(self) -> int:
        return self._download[1]

    @property
    def _download(self) -> tuple[int, int]:
        progress = self.state.progress
        if self.phase != Phase.DOWNLOADING or progress is None:
            return 0, 0
        if progress.stage != Stage.DOWNLOADING:
            return 0, 0
        return int(progress.step or 0), int(progress.total or 0)

    @property
    def ready(self) -> bool:
        return self.state.ready

    @property
    def busy(self) -> bool:
        return self.state.busy


def choose_model(config: AppConfig, has_cuda: bool) -> ModelChoice:
    """Which model this run serves (see allegro.models.choose_model)."""
    return _choose_model(
        config.model, config.transformer, config.preview, has_cuda, config.ti2v_model
    )


# An absolute path in a message (not part of a URL): "/tmp/x/tiny" -> "tiny".
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`]+/)+([^\s/'\"`]+)")


def banner_markdown(status: ModelStatus, shared: bool = False) -> str:
    """The status line above the page. ``shared``: every visitor reads it, so it names the
    model and the devices, never a folder on the server or the cluster's address."""
    if not shared:
        return _banner(status)
    if status.cluster is not None:
        status = dataclasses.replace(status, cluster="a private address")
    return _PATH.sub(lambda match: match[1], _banner(status))


def _banner(status: ModelStatus) -> str:
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
    if status.cluster is not None:
        count = len(status.devices)
        return (
            f"**{name}** ready on the Ray cluster at {status.cluster}: {count} workers. "
            + devices_markdown(status)
        )
    if len(status.devices) > 1:
        return f"**{name}** ready on {len(status.devices)} devices. " + devices_markdown(status)
    if status.hardware is None or status.hardware.gpu_name is None:
        return f"**{name}** ready on the CPU: slow, real videos need an NVIDIA GPU."
    offload = f" · offload: {status.offload_reason}" if status.offload_reason else ""
    return f"**{name}** ready on {status.hardware.gpu_label}{offload}"


def devices_markdown(status: ModelStatus) -> str:
    """One line per job worker: its device, and the offload and precision chosen for it
    from its own free memory; then the host RAM they need together."""
    lines = []
    for device in status.devices:
        if not device.ready:
            lines.append(f"- {device.device}: loading …")
            continue
        gpu = f" ({device.gpu_name})" if device.gpu_name else ""
        lines.append(
            f"- {device.device}{gpu}: {device.precision}, offload {device.offload} "
            f"({device.reason})"
        )
    if status.host_ram_bytes:
        lines.append(
            f"- host RAM for {len(status.devices)} workers: about "
            f"{status.host_ram_bytes / 1e9:.0f} GB (each offloading worker keeps a CPU copy "
            "of the weights)"
        )
    return "\n" + "\n".join(lines)


def generate_button(status: ModelStatus) -> tuple[str, bool]:
    """(label, interactive) for the Generate button."""
    if status.ready:
        return "Generate", True
    if status.phase == Phase.FAILED:
        return "Model unavailable", False
    if status.phase == Phase.DOWNLOADING:
        return "Downloading model…", False
    return "Loading model…", False


def _interpolation_methods(weights: str | None, on_gpu: bool) -> tuple[MethodChoice, ...]:
    from allegro.interpolation import METHODS, method_availability

    choices = []
    for name in METHODS:
        availability = method_availability(name, weights)
        reason = availability.reason
        if availability.available and name == "ema-vfi" and not on_gpu:
            reason = "slow without a GPU: seconds per frame"
        choices.append(MethodChoice(name, availability.available, reason))
    return tuple(choices)


def model_settings(config: AppConfig) -> ModelSettings:
    return ModelSettings(
        output_dir=config.output_dir,
        model=config.model,
        transformer=config.transformer,
        preview=config.preview,
        precision=config.precision,
        vae_precision=config.vae_precision,
        offload=config.offload,
        compile=config.compile,
        memory_profile=config.memory_profile,
        ema_vfi_weights=config.ema_vfi_weights,
        ti2v_model=config.ti2v_model,
        zero_gpu=config.zero_gpu,
        devices=config.devices,
        ray_address=config.ray_address,
    )


class ModelLoader:
    """The page's view of the engine's ModelManager."""

    def __init__(
        self,
        config: AppConfig,
        environ: Mapping[str, str] | None = None,
        has_cuda: Callable[[], bool] | None = None,
        visible_gpus: Callable[[], list[str]] | None = None,
    ) -> None:
        self.config = config
        environ = os.environ if environ is None else environ
        probes = {"has_cuda": has_cuda, "visible_gpus": visible_gpus}
        probes = {name: probe for name, probe in probes.items() if probe is not None}
        # With --ray the workers run on the cluster: the manager starts them there, the job
        # runner takes them from it (allegro.jobs.workers).
        self.cluster = RayCluster(config.output_dir) if config.ray_address else None
        self.manager = ModelManager(model_settings(config), environ, **probes, cluster=self.cluster)
        self._last: tuple[ModelState, ModelStatus] | None = None  # the state last shown

    def start(self) -> None:
        """Start (or, after a failure, retry) loading in the background."""
        self.manager.start()

    def load(self) -> None:
        """Load on the calling thread (ZeroGPU: the main thread, before launch; see
        ModelManager.load)."""
        self.manager.load()

    def engine(self, timeout: float = 600.0) -> Engine:
        return self.manager.engine(timeout)

    def status(self) -> ModelStatus:
        state = self.manager.state()
        cached = self._last
        if cached is not None and cached[0] is state:  # a new state is a new object
            return cached[1]
        status = ModelStatus(state)
        if state.ready:
            from allegro.engine import loaded_hardware  # loaded by now; not at page start

            status = ModelStatus(
                state,
                hardware=None if state.loaded is None else loaded_hardware(state.loaded),
                interpolation=_interpolation_methods(self.config.ema_vfi_weights, _on_gpu(state)),
            )
        self._last = (state, status)
        return status


def _on_gpu(state: ModelState) -> bool:
    """Whether the workers run on GPUs: the loaded device here, or the devices a Ray
    cluster's workers report (nothing is loaded in this process then)."""
    if state.loaded is not None:
        return state.loaded.device.startswith("cuda")
    return bool(state.devices) and all(device.gpu_name for device in state.devices)
