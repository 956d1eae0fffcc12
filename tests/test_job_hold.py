"""Jobs and a model that is not ready: while it loads, jobs are accepted and wait, saying
so with the loading's progress; while it has failed, new jobs are refused at once with the
reason the page shows, and queued ones stay queued, saying why, until a retry loads it.
First the runner with the model manager in this process, then ``python app.py`` through
its API (a model folder that cannot load; one whose load the test holds up)."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError, ValidationError

from allegro.errors import ModelUnavailableError
from allegro.job_hold import hold_jobs_for_model
from allegro.jobs import JobRunner, JobState, JobStore, add_device_workers
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest
from tests.studio_server import start_studio

PARAMS = {"prompt": "a lantern on a lake", "steps": 2, "frames": 24, "height": 128, "width": 128}
LOADING = "waiting for the model to load: Loading the model into memory …"


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt, steps=2, frames=24, height=128, width=128)


def _broken_model(folder: Path) -> Path:
    """A model folder that cannot load: its pipeline index is not JSON."""
    folder.mkdir()
    (folder / "model_index.json").write_text("{ not json")
    return folder


def test_queued_jobs_wait_for_the_model_and_run_once_a_retry_loads_it(tiny_model, tmp_path):
    model = _broken_model(tmp_path / "model")
    settings = ModelSettings(output_dir=tmp_path / "out", model=str(model))
    manager = ModelManager(settings, dict(os.environ), has_cuda=lambda: False)
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), [])
    add_device_workers(runner, manager, tmp_path / "out")
    hold_jobs_for_model(runner, manager)
    runner.start()
    try:
        # Not loaded yet: accepted, and it says what it waits for.
        job = runner.submit(_request("a kite"), owner="ann")
        assert runner.held().reason == "waiting for the model to load: Starting …"
        assert runner.held().refusal is None and runner.estimated_wait(job.id) is None

        manager.load()  # fails, on this thread
        state = manager.state()
        assert state.phase == Phase.FAILED and state.error
        assert runner.get(job.id).state == JobState.QUEUED  # kept, not failed
        assert runner.held().reason == f"waiting for the model: {state.error}"
        with pytest.raises(ModelUnavailableError) as refused:
            runner.submit(_request("a boat"), owner="ann")
        message = str(refused.value)
        assert message.startswith(f"The model could not be loaded. {state.error}")
        assert "Retry loading" in message
        assert [queued.id for queued in runner.list()] == [job.id]  # nothing was added

        shutil.copytree(tiny_model, model, dirs_exist_ok=True)  # the cause fixed
        reasons: list[str | None] = []
        manager.add_listener(lambda event: reasons.append(getattr(runner.held(), "reason", 0)))
        manager.start()  # the page's Retry loading
        final = runner.wait(job.id)
        assert final.state == JobState.DONE, final.error
        assert Path(final.video).is_file() and final.attempts == 1
        assert LOADING in reasons  # said while it loaded
        assert runner.held() is None
    finally:
        runner.stop(timeout=10)


def _jobs(client) -> list[dict]:
    return client.predict(api_name="/jobs")


def _wait_for_log(server, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := server.log_text()):
        assert server.process.poll() is None, log
        assert time.monotonic() < deadline, log
        time.sleep(0.2)
    return log


def test_the_api_refuses_jobs_at_once_while_the_model_failed(tmp_path):
    """/submit and /generate answer at once with the reason; a job queued before (by the
    last run of the server) stays queued and says why it waits."""
    output = tmp_path / "outputs"
    output.mkdir()
    earlier = JobRunner(JobStore(output / ".jobs.sqlite"), []).submit(_request("x"), "local")
    model = _broken_model(tmp_path / "model")
    server = start_studio(
        model, output, tmp_path / "app.log", "--jobs-db", str(output / ".jobs.sqlite")
    )
    try:
        log = _wait_for_log(server, "Model loading failed: ")
        reason = log.split("Model loading failed: ", 1)[1].splitlines()[0]
        client = server.client()
        started = time.monotonic()
        for endpoint in ("/submit", "/generate"):
            # /submit's validator refuses it, /generate's handler (the queue is not its limit)
            with pytest.raises((AppError, ValidationError)) as refused:
                client.submit(**PARAMS, api_name=endpoint).result(timeout=60)
            message = str(refused.value)
            assert f"The model could not be loaded. {reason}" in message, endpoint
            assert "Retry loading" in message
        assert time.monotonic() - started < 60  # at once, not the caller's own timeout
        (job,) = _jobs(client)
        assert job["id"] == earlier.id and job["state"] == "queued"
        assert job["waiting"] == f"waiting for the model: {reason}"
        assert job["wait_seconds"] is None
    finally:
        server.stop()


def _model_held_at_load(tiny_model: Path, folder: Path) -> tuple[Path, bytes]:
    """A copy of the tiny model whose transformer config is a FIFO: loading blocks on
    reading it (allegro.loading.is_ti2v_checkpoint, after "Loading the model into memory")
    until the test writes it. Returns the FIFO and what it should hold."""
    shutil.copytree(tiny_model, folder)
    config = folder / "transformer" / "config.json"
    content = config.read_bytes()
    config.unlink()
    os.mkfifo(config)
    return config, content


def _wait_for_reader(fifo: Path, server, timeout: float = 120) -> int:
    """Open the FIFO for writing once a reader has it open (the load is blocked there)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it yet
            assert server.process.poll() is None, server.log_text()
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)


def _release(fifo: Path, writer: int, content: bytes) -> None:
    """The real file in the FIFO's place for later reads, then the blocked read's bytes."""
    real = fifo.with_name("config.json.real")
    real.write_bytes(content)
    os.replace(real, fifo)
    os.set_blocking(writer, True)
    os.write(writer, content)
    os.close(writer)


def test_the_api_accepts_jobs_while_the_model_loads(tiny_model, tmp_path):
    """/submit answers at once, its job saying it waits for the model to load (and how far
    that is); /generate waits; both videos are made once the model is loaded."""
    fifo, content = _model_held_at_load(tiny_model, tmp_path / "model")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    server = start_studio(tmp_path / "model", tmp_path / "outputs", tmp_path / "app.log")
    writer = None
    try:
        writer = _wait_for_reader(fifo, server)
        client = server.client()
        job = client.predict(**PARAMS, api_name="/submit")
        assert job["state"] == "queued" and job["waiting"] == LOADING, job
        assert job["wait_seconds"] is None
        assert _jobs(client)[0]["waiting"] == LOADING
        generating = client.submit(**PARAMS, api_name="/generate")
        while len(jobs := _jobs(client)) < 2:  # /generate's job, accepted into the queue
            assert not generating.done(), generating.result()
        assert [queued["waiting"] for queued in jobs] == [LOADING, LOADING]
        _release(fifo, writer, content)
        writer = None
        video, settings = generating.result(timeout=300)
        assert Path(video).is_file() and settings["steps"] == 2
        for _ in range(600):
            job = client.predict(job["id"], api_name="/job")
            if job["state"] not in ("queued", "running"):
                break
        assert job["state"] == "done" and job["waiting"] is None, job
        assert len(server.videos()) == 2
    finally:
        if writer is not None:
            _release(fifo, writer, content)
        server.stop()
