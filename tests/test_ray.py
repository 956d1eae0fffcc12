"""Workers on a Ray cluster, started by this module on 127.0.0.1 (one cluster for every test
here: Ray's start-up is slow on 2 cores). CPU actors play the GPUs (each asks for one CPU
instead of one GPU) and run the real tiny model. The app's side is first the job runner with
its store in this process, then ``python app.py --ray`` itself, driven through its HTTP API.
Skipped where the optional extra is not installed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from allegro.errors import Cancelled
from allegro.events import Stage
from allegro.jobs import JobRunner, JobState, JobStore, device_workers
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest, NativeSize

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def actors(tiny_model, tmp_path_factory):
    """A local cluster with two CPU actors that have loaded the tiny model, started as the
    app starts them (ModelManager with --ray and --devices cpu,cpu); the app's output folder
    they send their videos to."""
    from allegro.jobs.remote import RayCluster, connect

    connect(
        "local",
        num_cpus=3,  # two workers here, one for the app's own test below
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    output = tmp_path_factory.mktemp("ray-app-out")
    settings = ModelSettings(
        output_dir=output, model=str(tiny_model), devices="cpu,cpu", ray_address="auto"
    )
    cluster = RayCluster(output)
    manager = ModelManager(settings, dict(os.environ), cluster=cluster)
    manager.load()
    state = manager.state()
    assert state.phase == Phase.READY, state.error
    assert state.cluster == "auto" and len(state.devices) == 2 and state.loaded is None
    assert all(device.ready and device.reason for device in state.devices)
    assert state.native == NativeSize(24, 160, 160)  # the tiny model's, from a worker
    yield device_workers(manager, output, cluster), output
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


def test_the_app_as_a_front_end_to_the_cluster(actors, tiny_model, tmp_path):
    """``python app.py --ray ADDRESS``: it loads nothing itself; its worker on the cluster
    makes the video, which arrives in the app's output folder; /submit, /job and /cancel
    work as on one machine."""
    from tests.test_app_api import ALICE, start_studio

    address = ray.get_runtime_context().gcs_address
    server = start_studio(
        tiny_model, tmp_path / "outputs", tmp_path / "app.log", "--ray", address, "--devices", "cpu"
    )
    try:
        alice = server.client(ALICE)
        params = {"prompt": "a lantern on a lake", "frames": 24, "height": 128, "width": 128}
        slow = alice.predict(api_name="/submit", **params, steps=400)
        made = alice.predict(api_name="/submit", **params, steps=2)
        job = slow
        while not (job["progress"] and job["progress"]["step"] >= 2):
            assert job["state"] in ("queued", "running"), job
            job = alice.predict(slow["id"], api_name="/job")
        alice.predict(slow["id"], api_name="/cancel")
        for _ in range(600):
            job = alice.predict(made["id"], api_name="/job")
            if job["state"] not in ("queued", "running"):
                break
        assert job["state"] == "done", job
        assert alice.predict(slow["id"], api_name="/job")["state"] == "cancelled"
        assert job["video"] in server.videos() and job["video_url"].endswith(".mp4")
        log = server.log_text()
        assert "Model ready: " in log and "on 1 Ray workers" in log
    finally:
        server.stop()
