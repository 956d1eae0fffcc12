"""Workers on a Ray cluster started as the README says: ``ray get-auth-token --generate``,
then ``RAY_AUTH_MODE=token ray start --head --node-ip-address 127.0.0.1`` (the CLI, in a
temporary HOME and temp dir, two CPUs), stopped with ``ray stop``. One cluster for every
test here: Ray's start-up is slow on 2 cores. CPU actors play the GPUs (each asks for one
CPU instead of one GPU) and run the real tiny model. First ``python app.py --ray ADDRESS``
joins it with the token in its HOME and no other setting, driven through its HTTP API;
then the job runner with its store in this process joins it. Skipped where the optional
extra is not installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError, ValidationError

from allegro.errors import Cancelled
from allegro.events import Stage
from allegro.jobs import JobRunner, JobState, JobStore, device_workers
from allegro.jobs.remote import RayCluster
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest, NativeSize
from tests.studio_server import free_port

ray = pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _environment(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with ``home`` as HOME and none of Ray's settings."""
    kept = {key: value for key, value in os.environ.items() if key not in AUTH_VARIABLES}
    return {**kept, "HOME": str(home), **extra}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, home): a head with token authentication, started with Ray's CLI; its token
    in ``home``/.ray/auth_token, where ``ray get-auth-token --generate`` wrote it."""
    home = tmp_path_factory.mktemp("ray-home")
    # Short: Ray's unix sockets live under it (a socket path has at most 107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    environment = _environment(home)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=environment, check=True)
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port"]
    start += [str(free_port()), "--num-cpus", "2", "--include-dashboard", "false"]
    start += ["--temp-dir", str(temp), "--disable-usage-stats"]
    try:
        subprocess.run(
            start, env={**environment, "RAY_AUTH_MODE": "token"}, check=True, timeout=120
        )
        # Where the head listens: Ray turns 127.0.0.1 into this machine's address
        # (ray _private/services.py:786-803), and writes it here.
        address = (temp / "ray_current_cluster").read_text().strip()
        yield address, home
    finally:
        subprocess.run([RAY, "stop"], env=environment, timeout=120, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def actors(cluster, tiny_model, tmp_path_factory):
    """Two CPU actors on the cluster that have loaded the tiny model, started as the app
    starts them (ModelManager with --ray ADDRESS and --devices cpu,cpu); the app's output
    folder they send their videos to. This process finds the token as the app does, in
    its HOME."""
    address, home = cluster
    with pytest.MonkeyPatch.context() as patch:
        for name in AUTH_VARIABLES:
            patch.delenv(name, raising=False)  # and RAY_AUTH_MODE, which joining sets, goes
        patch.setenv("HOME", str(home))
        output = tmp_path_factory.mktemp("ray-app-out")
        settings = ModelSettings(
            output_dir=output, model=str(tiny_model), devices="cpu,cpu", ray_address=address
        )
        ray_cluster = RayCluster(output)
        manager = ModelManager(settings, dict(os.environ), cluster=ray_cluster)
        manager.load()
        state = manager.state()
        assert state.phase == Phase.READY, state.error
        assert state.cluster == address and len(state.devices) == 2 and state.loaded is None
        assert all(device.ready and device.reason for device in state.devices)
        assert state.native == NativeSize(24, 160, 160)  # the tiny model's, from a worker
        try:
            yield device_workers(manager, output, ray_cluster), output
        finally:
            ray.shutdown()


def _request(prompt: str, steps: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt, steps=steps, frames=24, height=128, width=128)


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _wait_for_log(server, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := server.log_text()):
        assert server.process.poll() is None, log
        assert time.monotonic() < deadline, log
        time.sleep(0.2)
    return log


def test_the_app_joins_a_token_cluster_and_runs_jobs_there(cluster, tiny_model, tmp_path):
    """``python app.py --ray ADDRESS`` with the head's token in its HOME and no Ray setting
    (no RAY_AUTH_MODE): it joins, loads nothing itself; its two workers on the cluster make
    the videos, which arrive in the app's output folder; /submit, /job and /cancel work as
    on one machine."""
    from tests.test_app_api import ALICE, start_studio

    address, home = cluster
    assert not [name for name in AUTH_VARIABLES if name in os.environ]
    server = start_studio(
        tiny_model,
        tmp_path / "outputs",
        tmp_path / "app.log",
        *("--ray", address, "--devices", "cpu,cpu"),
        env=_environment(home),
    )
    try:
        alice = server.client(ALICE)
        params = {"prompt": "a lantern on a lake", "frames": 24, "height": 128, "width": 128}
        slow = alice.predict(api_name="/submit", **params, steps=400)
        made = [alice.predict(api_name="/submit", **params, steps=2) for _ in range(2)]
        job = slow
        while not (job["progress"] and job["progress"]["step"] >= 2):
            assert job["state"] in ("queued", "running"), job
            job = alice.predict(slow["id"], api_name="/job")
        alice.predict(slow["id"], api_name="/cancel")
        for first in made:
            for _ in range(600):
                job = alice.predict(first["id"], api_name="/job")
                if job["state"] not in ("queued", "running"):
                    break
            assert job["state"] == "done", job
            assert job["video"] in server.videos() and job["video_url"].endswith(".mp4")
        assert alice.predict(slow["id"], api_name="/job")["state"] == "cancelled"
        log = server.log_text()
        assert "Model ready: " in log and "on 2 Ray workers" in log
        assert "with its authentication token" in log and "InvalidAuthToken" not in log
    finally:
        server.stop()


def test_the_app_without_the_token_says_so_in_one_line(cluster, tiny_model, tmp_path):
    """No token in HOME: one line naming the fix, at once (not Ray's "InvalidAuthToken"
    every second for 20 s before a bare ConnectionError)."""
    from tests.test_app_api import start_studio

    address, _home = cluster
    empty = tmp_path / "home"
    empty.mkdir()
    server = start_studio(
        tiny_model,
        tmp_path / "outputs",
        tmp_path / "app.log",
        *("--ray", address, "--devices", "cpu"),
        env=_environment(empty),
    )
    try:
        log = _wait_for_log(server, "Model loading failed")
        failed = [line for line in log.splitlines() if "Model loading failed" in line]
        assert len(failed) == 1, log
        assert f"The Ray cluster at {address} requires an authentication token" in failed[0]
        assert "copy the head's ~/.ray/auth_token" in failed[0]
        assert "InvalidAuthToken" not in log and "Traceback" not in log
        # The API refuses jobs at once with that reason, as the page shows it.
        with pytest.raises((AppError, ValidationError)) as refused:
            server.client().submit(prompt="a kite", api_name="/submit").result(timeout=60)
        assert "The model could not be loaded. The Ray cluster at" in str(refused.value)
    finally:
        server.stop()


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
