"""Which torch build this machine needs, decided from ``nvidia-smi`` and the platform.

Pure functions of text and names, so tests feed them fake ``nvidia-smi`` outputs.

Facts this relies on (checked 2026-12-06 with the search tool; download.pytorch.org is out
of reach from the build machine, so pip could not list its variants):
- torch 2.13 is built for CUDA 12.6 and 13.0 (stable) and 13.2 (experimental):
  pytorch/pytorch RELEASE.md, "Release Compatibility Matrix" row for 2.13 (PR #187075);
  12.6 is the build for pre-Turing GPUs and is dropped in 2.15 (issue #190385). PyPI's
  Linux x86_64 ``torch==2.13.0`` is the CUDA 13.0 build (README "GPU install"); PyPI's
  Windows wheel has no CUDA. We install only the stable builds.
- Minimum drivers: NVIDIA "CUDA Compatibility", minor version compatibility table
  (docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html): CUDA 13.x
  needs driver >= 580, CUDA 12.x runs on >= 525. The 12.6 toolkit itself ships with 560,
  but wheels that bundle their CUDA libraries run on any 12.x driver through minor version
  compatibility (no PTX JIT: a GPU needs a prebuilt kernel, which the 12.6 build has for
  Maxwell to Hopper). The CUDA check after installing catches the rest.
- ``nvidia-smi``'s header says the newest CUDA the driver runs ("CUDA Version: 12.2").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TORCH_VERSION = "2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# (build, CUDA major.minor, minimum driver major, GPU architectures it has kernels for as
# (lowest, highest) compute capability) newest first: the stable CUDA builds of torch 2.13
# (sources in the module docstring; architectures from pytorch RELEASE.md's "PyTorch CUDA
# Support Matrix": 12.6.3 Maxwell 5.0 to Hopper 9.0, 13.0 Turing 7.5 to Blackwell 12.0).
CUDA_BUILDS: tuple[tuple[str, tuple[int, int], int, tuple[float, float]], ...] = (
    ("cu130", (13, 0), 580, (7.5, 12.9)),  # 12.0+PTX: later Blackwell chips (GB10, 12.1)
    ("cu126", (12, 6), 525, (5.0, 9.0)),
)
OLDEST_DRIVER = CUDA_BUILDS[-1][2]
DRIVER_DOWNLOAD = "https://www.nvidia.com/Download/index.aspx"


class LauncherError(Exception):
    """Something the launcher cannot do; the message says what to do, in plain words."""


@dataclass(frozen=True)
class NvidiaSmi:
    """What ``nvidia-smi`` says about the driver and the first GPU."""

    driver: str  # "535.183.01"
    cuda: tuple[int, int] | None  # the newest CUDA the driver runs, from the header
    gpu_name: str | None = None
    memory_total_mib: int | None = None
    memory_free_mib: int | None = None
    compute_capability: float | None = None  # 8.6 for an RTX 3060, 12.0 for an RTX 5090

    @property
    def driver_major(self) -> int:
        return int(self.driver.split(".")[0])


@dataclass(frozen=True)
class TorchChoice:
    build: str  # "cu130", "cu126", "cpu" or "pypi" (PyPI's own wheel)
    index_url: str | None  # None: PyPI
    local_version: str  # what torch.__version__ will be, e.g. "2.13.0+cu126"
    expect_cuda: bool  # after installing, torch.cuda.is_available() must be True
    reason: str  # one sentence for the person installing

    @property
    def spec(self) -> str:
        return f"torch=={TORCH_VERSION}"

    def pip_args(self) -> list[str]:
        """Arguments for ``pip install``."""
        args = [self.spec]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    @property
    def key(self) -> str:
        """What the install stamp records: a different key means reinstall torch."""
        return f"{self.local_version} {self.index_url or 'pypi'}"


_DRIVER = re.compile(r"Driver Version:\s*([0-9]+(?:\.[0-9]+)*)")
_CUDA = re.compile(r"CUDA Version:\s*([0-9]+)\.([0-9]+)")


def parse_nvidia_smi(header: str, query: str = "") -> NvidiaSmi | None:
    """``header``: plain ``nvidia-smi`` output; ``query``: the output of
    ``nvidia-smi --query-gpu=name,memory.total,memory.free,compute_cap --format=csv,noheader,
    nounits`` (an old driver without compute_cap answers nothing: then it stays unknown).
    None when the header names no driver (no NVIDIA GPU, or a broken driver)."""
    driver = _DRIVER.search(header)
    if not driver:
        return None
    cuda = _CUDA.search(header)
    name = total = free = capability = None
    first = next((line for line in query.splitlines() if line.strip()), "")
    fields = [field.strip() for field in first.split(",")]
    if len(fields) >= 3:
        name = fields[0] or None
        total = _int_or_none(fields[1])
        free = _int_or_none(fields[2])
    if len(fields) >= 4:
        capability = _float_or_none(fields[3])
    return NvidiaSmi(
        driver=driver.group(1),
        cuda=(int(cuda.group(1)), int(cuda.group(2))) if cuda else None,
        gpu_name=name,
        memory_total_mib=total,
        memory_free_mib=free,
        compute_capability=capability,
    )


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int_or_none(text: str) -> int | None:
    value = _float_or_none(text)
    return None if value is None else int(value)


def _index(build: str) -> str:
    return f"{PYTORCH_INDEX}/{build}"


def choose_torch(system: str, machine: str, gpu: NvidiaSmi | None) -> TorchChoice:
    """The torch build for ``system`` (platform.system(): Linux, Windows, Darwin) and
    ``machine`` (platform.machine()) with this NVIDIA driver, or LauncherError saying why
    none works and what to do."""
    if system == "Darwin":
        return TorchChoice(
            "pypi",
            None,
            TORCH_VERSION,
            False,
            "macOS: PyPI's torch (no NVIDIA GPU), so the app runs its preview model, whose "
            "videos are noise; real videos need an NVIDIA GPU.",
        )
    if gpu is None:
        return TorchChoice(
            "cpu",
            _index("cpu"),
            f"{TORCH_VERSION}+cpu",
            False,
            "No NVIDIA GPU found (no nvidia-smi): installing the CPU build of "
            "torch. The app will run its preview model, whose videos are noise; real videos "
            "need an NVIDIA GPU.",
        )
    runs = gpu.cuda or _cuda_from_driver(gpu.driver_major)
    # A driver runs its own CUDA major and older ones; within a major, any minor (minor
    # version compatibility). The GPU needs the build's kernels for its architecture.
    capability = gpu.compute_capability
    runnable = [
        (build, cuda, arches)
        for build, cuda, min_driver, arches in CUDA_BUILDS
        if runs[0] >= cuda[0] and gpu.driver_major >= min_driver
    ]
    match = next(
        (
            (build, cuda)
            for build, cuda, arches in runnable
            if capability is None or arches[0] <= capability <= arches[1]
        ),
        None,
    )
    if match is None and runnable and capability is not None:
        newest = CUDA_BUILDS[0]
        if capability > runnable[0][2][1] and newest[3][0] <= capability <= newest[3][1]:
            raise LauncherError(
                f"Your {gpu.gpu_name or 'NVIDIA GPU'} needs PyTorch's CUDA "
                f"{newest[1][0]}.{newest[1][1]} build, and that needs NVIDIA driver "
                f"{newest[2]} or newer; yours is {gpu.driver}. Update the driver from "
                f"{DRIVER_DOWNLOAD}, restart the computer and run this again."
            )
        raise LauncherError(
            f"Your {gpu.gpu_name or 'NVIDIA GPU'} (compute capability {capability}) is not "
            f"supported by any PyTorch {TORCH_VERSION} build: real videos need a newer "
            "NVIDIA GPU (Turing, RTX 20 series, or newer is best)."
        )
    if match is None:
        raise LauncherError(
            f"Your NVIDIA driver {gpu.driver} (CUDA {runs[0]}.{runs[1]}) is too old for "
            f"PyTorch {TORCH_VERSION}: it needs driver {OLDEST_DRIVER} or newer (580 or newer "
            f"is best). Update the driver from {DRIVER_DOWNLOAD} (on Linux, your "
            "distribution's 'Additional Drivers' tool), restart the computer and run this "
            "again."
        )
    build, cuda = match
    where = "the PyTorch index's"
    index: str | None = _index(build)
    local = f"{TORCH_VERSION}+{build}"
    if build == "cu130" and system == "Linux" and machine in ("x86_64", "AMD64"):
        # PyPI's Linux x86_64 wheel is this very build (README "GPU install").
        where, index, local = "PyPI's", None, TORCH_VERSION
    return TorchChoice(
        build,
        index,
        local,
        True,
        f"NVIDIA driver {gpu.driver} runs CUDA {runs[0]}.{runs[1]}: installing {where} "
        f"CUDA {cuda[0]}.{cuda[1]} build of torch {TORCH_VERSION}.",
    )


def _cuda_from_driver(driver_major: int) -> tuple[int, int]:
    """An old ``nvidia-smi`` without the CUDA header: the CUDA major its driver runs."""
    if driver_major >= 580:
        return (13, 0)
    if driver_major >= 525:
        return (12, 0)
    return (11, 0)


def cuda_failure_message(choice: TorchChoice, gpu: NvidiaSmi | None, detail: str) -> str:
    """Why torch sees no GPU after installing a CUDA build, and what to do."""
    driver = f"driver {gpu.driver}" if gpu else "the NVIDIA driver"
    return (
        f"torch {choice.local_version} was installed for your NVIDIA GPU but cannot use it "
        f"({detail.strip() or 'torch.cuda.is_available() is False'}). Usually {driver} is "
        f"too old or broken for this build: update the driver from {DRIVER_DOWNLOAD}, "
        "restart the computer, then run this again with 'update'. If it still fails, "
        "delete the .venv folder and run this again."
    )
