"""Workers on a Ray cluster, started by this module on 127.0.0.1 (one cluster for every test
here: Ray's start-up is slow on 2 cores). Two CPU actors play the GPUs (each asks for one
CPU instead of one GPU) and run the real tiny model; the app's side is the job runner with
its store, as in the app. Skipped where the optional extra is not installed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from allegro.errors import Cancelled
from allegro.events import Stage
from allegro.jobs import JobRunner, JobState, JobStore
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest, NativeSize

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def actors(tiny_model, tmp_path_factory):
    """A local cluster with two CPU actors that have loaded the tiny model, started as the
    app starts them (ModelManager with --ray and --devices cpu,cpu); the app's output folder
    they send their videos to."""
    from allegro.jobs.remote import connect

    connect(
        "local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    output = tmp_path_factory.mktemp("ray-app-out")
    settings = ModelSettings(
        output_dir=output, model=str(tiny_model), devices="cpu,cpu", ray_address="auto"
    )
    manager = ModelManager(settings, dict(os.environ))
    manager.load()
    state = manager.state()
    assert state.phase == Phase.READY, state.error
    assert state.cluster == "auto" and len(state.devices) == 2 and state.loaded is None
    assert all(device.ready and device.reason for device in state.devices)
    assert state.native == NativeSize(24, 160, 160)  # the tiny model's, from a worker
    yield manager.job_workers(output), output
    ray.shutdown()


def _request(prompt: str, steps: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt, steps=steps, frames=24, height=128, width=128)


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_progress_preview_cancel_and_the_video_come_back(actors, tmp_path):
    workers, output = actors
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), workers)
    slow = runner.submit(_request("slow", steps=60), owner="ann")
    made = runner.submit(_request("a kite"), owner="ann", labels={"owner": "ann"})
    runner.start()
    previews, last_step = 0, 0
    for snapshot in runner.watch(slow.id):
        event = snapshot.progress
        if event is not None and event.stage == Stage.DENOISING:
            last_step = event.step
            previews += event.preview is not None
            if event.step >= 4:
                runner.cancel(slow.id, owner="ann")
    cancelled = runner.get(slow.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.error == str(Cancelled())
    assert previews >= 1 and 4 <= last_step <= 6  # stopped within a step or two of asking

    done = runner.wait(made.id)
    assert done.state == JobState.DONE, done.error
    video = Path(done.video)
    assert video.parent == output and video.stat().st_size > 0
    stem = video.stem
    assert {f"{stem}.mp4", f"{stem}.json", f"{stem}.jpg"} <= set(_files(output))
    assert not [name for name in _files(output) if name.startswith(".")]  # no temp, no half

    import json

    settings = json.loads(video.with_suffix(".json").read_text())
    assert settings["seed"] == made.seed and settings["device"] == "cpu"
    assert settings["labels"]["job"] == made.id and settings["labels"]["worker"].startswith("ray")
    runner.stop(timeout=10)


def test_a_killed_worker_s_job_is_made_by_the_other(actors, tmp_path):
    workers, output = actors
    before = set(_files(output))
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), workers)
    job = runner.submit(_request("survive", steps=30), owner="ann")
    runner.start()
    killed = None
    for snapshot in runner.watch(job.id):
        event = snapshot.progress
        if killed is None and event is not None and event.step >= 2:
            victim = next(worker for worker in workers if worker.running == job.id)
            pid = ray.get(victim.actor.describe.remote())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed = victim
    final = runner.get(job.id)
    assert final.state == JobState.DONE, final.error
    assert final.attempts == 2 and "worker was lost" in final.note
    sidecar = Path(final.video).with_suffix(".json").read_text()
    assert killed.name not in sidecar  # the other worker made it
    new = set(_files(output)) - before
    stem = Path(final.video).stem
    assert new == {f"{stem}.mp4", f"{stem}.json", f"{stem}.jpg"}  # one video, no half file
    runner.stop(timeout=10)
