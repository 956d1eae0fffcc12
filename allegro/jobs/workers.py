"""The job runner's workers, built where the devices are known: one EngineWorker per local
device of the model manager, or the Ray cluster's workers (``--ray``). The model manager
knows no workers and the runner knows no model manager; this module joins the two."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from allegro.jobs.runner import EngineWorker, JobRunner, Worker

if TYPE_CHECKING:
    from allegro.jobs.remote import RayCluster
    from allegro.models import ModelManager


def device_workers(
    manager: ModelManager, output_dir: str | Path, cluster: RayCluster | None = None
) -> list[Worker]:
    """One job worker per device: an EngineWorker on each of ``manager``'s local devices
    (its engine once the model is loaded), or ``cluster``'s workers once started."""
    if cluster is not None and cluster.workers:
        return list(cluster.workers)
    return [
        EngineWorker(
            partial(manager.ready_engine, slot=slot),
            output_dir,
            name=f"{device.name} {slot}" if device is not None else "device 0",
            threads=device.threads if device is not None else None,
        )
        for slot, device in enumerate(manager.devices())
    ]


def add_device_workers(
    runner: JobRunner,
    manager: ModelManager,
    output_dir: str | Path,
    cluster: RayCluster | None = None,
) -> None:
    """One job worker per device of ``manager`` (local devices, or ``cluster``'s GPUs with
    --ray), added to ``runner`` as soon as the manager knows them (it finds them in the
    background, with torch or Ray)."""

    def on_devices() -> None:
        for worker in device_workers(manager, output_dir, cluster):
            runner.add_worker(worker)

    manager.when_devices_known(on_devices)
