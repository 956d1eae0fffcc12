"""What this machine has (NVIDIA GPU, host RAM, free disk) and what that means for a
person, in plain words, before the 25 GB download.

The minutes and the offload choice come from the app's own cost model (``allegro.costs``,
pure Python, importable before anything is installed), at the app's default settings: no
table of our own to drift from it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from allegro import costs
from launcher.torch_choice import DRIVER_DOWNLOAD, LauncherError, NvidiaSmi, parse_nvidia_smi

WEIGHTS_BYTES = 25 * 10**9  # rhymes-ai/Allegro's safetensors (README)
# The virtual environment: a CUDA torch with its bundled CUDA libraries and the rest of
# requirements.txt; the CPU build needs about a third of it.
ENV_BYTES_CUDA = 8 * 10**9
ENV_BYTES_CPU = 2 * 10**9
WEIGHTS_REPO_FOLDER = "models--rhymes-ai--Allegro"
DRAFT_PRESET = "allegro-40x360p"  # the 40-frame 368x640 model (README "Model presets")

Runner = Callable[[list[str]], str | None]


def run_quietly(command: list[str]) -> str | None:
    """The command's stdout, or None when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_nvidia(run: Runner = run_quietly) -> NvidiaSmi | None:
    """The driver and first GPU as ``nvidia-smi`` reports them; None without one. On Windows
    too: there the app's /dev/nvidia* check cannot see the GPU, nvidia-smi can. An
    ``nvidia-smi`` that fails means a driver that does not work: LauncherError, never a
    silent CPU install."""
    if shutil.which("nvidia-smi") is None:
        return None
    header = run(["nvidia-smi"])
    gpu = parse_nvidia_smi(header or "")
    if gpu is None:
        raise LauncherError(
            "An NVIDIA driver is installed but nvidia-smi cannot talk to the GPU (the driver "
            f"is broken or half-updated). Reinstall the driver from {DRIVER_DOWNLOAD}, "
            "restart the computer and run this again."
        )
    fields = "name,memory.total,memory.free"
    csv = "--format=csv,noheader,nounits"
    # compute_cap is newer than some drivers: without it, the rest still helps.
    query = run(["nvidia-smi", f"--query-gpu={fields},compute_cap", csv]) or run(
        ["nvidia-smi", f"--query-gpu={fields}", csv]
    )
    return parse_nvidia_smi(header or "", query or "")


def host_ram_bytes() -> int | None:
    """Physical memory, or None where it cannot be read."""
    if platform.system() == "Windows":

        class _Status(ctypes.Structure):
            _fields_ = [
                ("length", ctypes.c_ulong),
                ("load", ctypes.c_ulong),
                ("total", ctypes.c_ulonglong),
                ("available", ctypes.c_ulonglong),
                ("total_page", ctypes.c_ulonglong),
                ("available_page", ctypes.c_ulonglong),
                ("total_virtual", ctypes.c_ulonglong),
                ("available_virtual", ctypes.c_ulonglong),
                ("available_extended", ctypes.c_ulonglong),
            ]

        status = _Status()
        status.length = ctypes.sizeof(status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.total)
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def hf_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where huggingface_hub puts the weights (its HF_HUB_CACHE / HF_HOME defaults)."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"])
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(home) / "hub"


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class Estimate:
    offload: str
    minutes: float


def estimate(free_gpu_bytes: int, gpu_name: str, size: tuple[int, int, int]) -> Estimate:
    """Minutes per video at the app's defaults (100 steps, bf16, guidance) and the offload
    mode the app's ``auto`` picks for this much free GPU memory."""
    choice = costs.choose_offload(free_gpu_bytes, "bf16", *size)
    seconds = costs.estimate_seconds(
        *size, costs.gpu_class_for(gpu_name), offload=choice.mode
    ).total_seconds
    return Estimate(choice.mode, seconds / 60)


def _gb(size: float) -> str:
    return f"{size / 10**9:.0f} GB"


def _duration(minutes: float) -> str:
    if minutes < 1.5:
        return "about 1 minute"
    if minutes < 90:
        return f"about {minutes:.0f} minutes"
    return f"about {minutes / 60:.1f} hours"


def _offload_words(mode: str) -> str:
    return "without offload" if mode == "none" else f"with '{mode}' offload"


@dataclass(frozen=True)
class Report:
    lines: tuple[str, ...]
    problem: str | None  # set: the launcher stops before installing (not enough disk)


def machine_report(
    gpu: NvidiaSmi | None,
    ram: int | None,
    env_free: int,
    cache_free: int,
    weights_present: bool,
) -> Report:
    """Plain sentences about this machine. ``env_free``: free bytes where the virtual
    environment goes; ``cache_free``: where the weights go."""
    lines: list[str] = []
    problem = None
    env_need = ENV_BYTES_CUDA if gpu else ENV_BYTES_CPU
    if env_free < env_need:
        problem = (
            f"Not enough free disk space for the Python environment: it needs about "
            f"{_gb(env_need)}, this folder's disk has {_gb(env_free)} free. Free some space "
            "or move this folder to a bigger disk."
        )
    if gpu is None:
        lines.append(
            "No NVIDIA GPU: the app will start its preview model (its videos are noise) so "
            "you can try the page. Real videos need an NVIDIA GPU with 12 GB or more."
        )
        return Report(tuple(lines), problem)
    name = gpu.gpu_name or "NVIDIA GPU"
    free = (gpu.memory_free_mib or gpu.memory_total_mib or 0) * 2**20
    full = estimate(free, name, costs.OFFICIAL_SIZES[0])
    draft = estimate(free, name, costs.OFFICIAL_SIZES[2])
    # Cards are sold by GiB ("12 GB"); nvidia-smi counts MiB.
    label = f"{(gpu.memory_total_mib or 0) / 1024:.0f} GB"
    lines.append(
        f"{name} {label}: {_duration(full.minutes)} per 720p video (6 s, 88 frames) "
        f"{_offload_words(full.offload)}; the 360p draft model ({DRAFT_PRESET}) takes "
        f"{_duration(draft.minutes)} {_offload_words(draft.offload)}."
    )
    if full.offload != "none" and ram is not None:
        weights = costs.weight_bytes("bf16")
        note = "enough" if ram > weights * 1.5 else "tight: close other programs"
        lines.append(
            f"Offload keeps the model's {_gb(weights)} of weights in RAM: this computer has "
            f"{_gb(ram)} ({note})."
        )
    if weights_present:
        lines.append("The Allegro weights are already downloaded.")
    else:
        lines.append(
            f"The first start downloads the Allegro weights, about {_gb(WEIGHTS_BYTES)} "
            "(an hour or more on a slow connection); the page shows the progress."
        )
        if cache_free < WEIGHTS_BYTES * 1.1:
            problem = problem or (
                f"Not enough free disk space for the Allegro weights: they need about "
                f"{_gb(WEIGHTS_BYTES)}, the download folder's disk has {_gb(cache_free)} "
                "free. Free some space, or set HF_HOME to a folder on a bigger disk."
            )
    return Report(tuple(lines), problem)


def weights_downloaded(cache: Path) -> bool:
    return (cache / WEIGHTS_REPO_FOLDER / "snapshots").is_dir()
