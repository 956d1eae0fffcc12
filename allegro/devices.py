"""The devices jobs run on: one worker per device (``--devices``), each with its own cached
pipeline, its offload decided from that device's free memory.

No maintained engine splits one Allegro video across GPUs, so several GPUs scale by jobs:
each device makes whole videos. Pure Python until a function needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from allegro.errors import UnsupportedSetupError

ALL_DEVICES = "all"
CPU = "cpu"
DEVICES_HELP = (
    "'all' (every visible CUDA GPU; the CPU without one), a list of CUDA device numbers such "
    "as 0,1,3, or 'cpu' repeated (cpu,cpu: CPU workers sharing the cores, for tests)"
)


@dataclass(frozen=True)
class Device:
    """Where one worker runs. ``name`` is a torch device string: ``cuda:1``, ``cpu``, or
    ``cuda`` (the current GPU, e.g. the one ZeroGPU lends per call)."""

    name: str
    threads: int | None = None  # torch CPU threads for this worker (None: torch's default)

    @property
    def kind(self) -> str:
        return self.name.partition(":")[0]

    @property
    def index(self) -> int | None:
        _, _, number = self.name.partition(":")
        return int(number) if number else None


def parse_devices(text: str) -> tuple[str, ...]:
    """The entries of a ``--devices`` value, checked for form only (no torch needed):
    ``all``, distinct device numbers, or ``cpu`` entries. UnsupportedSetupError otherwise."""
    entries = tuple(entry.strip().lower() for entry in text.split(","))
    if entries == (ALL_DEVICES,):
        return entries
    if not all(entries):
        raise UnsupportedSetupError(f"--devices {text!r} has an empty entry; use e.g. 0,1,3.")
    if all(entry == CPU for entry in entries):
        return entries
    if not all(entry.isdigit() for entry in entries):
        raise UnsupportedSetupError(f"--devices {text!r} is not understood: use {DEVICES_HELP}.")
    if len(set(entries)) != len(entries):
        raise UnsupportedSetupError(
            f"--devices {text!r} names a GPU twice: one worker per GPU, each GPU once."
        )
    return tuple(str(int(entry)) for entry in entries)


def resolve_devices(text: str, cuda_count: int, cpu_cores: int) -> tuple[Device, ...]:
    """The workers' devices for a ``--devices`` value on a machine with ``cuda_count``
    visible CUDA devices. CPU workers split the cores evenly, so that two of them do not
    fight over the same cores (torch's default is every core for each)."""
    entries = parse_devices(text)
    if entries == (ALL_DEVICES,):
        if cuda_count:
            return tuple(Device(f"cuda:{index}") for index in range(cuda_count))
        return (Device(CPU),)
    if entries[0] == CPU:
        threads = max(1, cpu_cores // len(entries))
        return tuple(Device(CPU, threads=threads) for _ in entries)
    if not cuda_count:
        raise UnsupportedSetupError(
            f"--devices {text} names CUDA GPUs, but PyTorch sees none here. Start with "
            "--devices all (the CPU preview model without a GPU)."
        )
    missing = [entry for entry in entries if int(entry) >= cuda_count]
    if missing:
        raise UnsupportedSetupError(
            f"--devices {text}: there is no GPU {', '.join(missing)}; PyTorch sees "
            f"{cuda_count} (numbers 0 to {cuda_count - 1}, after CUDA_VISIBLE_DEVICES)."
        )
    return tuple(Device(f"cuda:{entry}") for entry in entries)


def detect_devices(text: str) -> tuple[Device, ...]:
    import os

    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return resolve_devices(text, cuda_count, os.cpu_count() or 1)


def predicted_offload(
    device: Device, requested: str, precision: str, vae_precision: str, profile: str
) -> str:
    """The offload mode a worker on ``device`` will take, known before loading: the user's,
    or what ``auto`` picks from the device's free memory (loading.choose_offload decides
    the same way, at the model's native size, here assumed to be Allegro's). ``cpu`` for a
    CPU worker, whose weights live in RAM."""
    if device.kind == CPU:
        return CPU
    if requested != "auto":
        return requested
    import torch

    from allegro import costs

    # torch/cuda/memory.py:846 mem_get_info(device): free and total bytes of that device.
    free_bytes, _total = torch.cuda.mem_get_info(device.name)
    native = costs.OFFICIAL_SIZES[0]  # 88x720x1280
    return costs.choose_offload(free_bytes, precision, *native, vae_precision, profile=profile).mode


def checkpoint_weight_bytes(folder: Path) -> tuple[int, int]:
    """(all weights, the transformer's) of a local checkpoint, as its safetensors files
    store them."""
    sizes = {
        part: sum(path.stat().st_size for path in (folder / part).glob("*.safetensors"))
        for part in ("transformer", "text_encoder", "vae")
    }
    return sum(sizes.values()), sizes["transformer"]


def check_host_memory(
    devices: Sequence[Device],
    modes: Sequence[str],
    precision: str,
    vae_precision: str,
    profile: str,
    available_bytes: int,
    weights: tuple[int, int] | None = None,
) -> int:
    """Refuse, before anything loads, a set of workers whose weights cannot all fit in
    host RAM (costs.workers_host_bytes; ``weights`` as there); returns the bytes they
    need."""
    from allegro import costs

    need = costs.workers_host_bytes(
        modes, precision, vae_precision, profile=profile, weights=weights
    )
    if need <= available_bytes:
        return need
    per_worker = (
        weights[0] if weights else costs.weight_bytes(precision, vae_precision, profile=profile)
    )
    held = [
        f"{device.name} ({mode})"
        for device, mode in zip(devices, modes, strict=True)
        if mode != "none"
    ]
    raise UnsupportedSetupError(
        f"{len(devices)} workers need about {need / 1e9:.1f} GB of host RAM but "
        f"{available_bytes / 1e9:.1f} GB is available: each worker that offloads (or runs on "
        f"the CPU) keeps a copy of the weights (~{per_worker / 1e9:.1f} GB): "
        f"{', '.join(held)}. Use fewer "
        "devices (e.g. --devices 0,1), a smaller --memory-profile, or a machine with more "
        "RAM."
    )
