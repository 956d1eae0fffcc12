"""The whole app killed and started again: kill -9 the server while a job runs and another
waits; start it again on the same folder: both finish, in order, with the seeds fixed at
submit; the gallery shows both and no temporary file stays. (tests/test_jobs.py proves the
same for the job runner alone.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.studio_server import start_studio

SMALL = {"frames": 24, "height": 160, "width": 160}
# The first job is long enough (tiny model, seconds) to be caught denoising by polling /job.
LONG, SHORT = {**SMALL, "steps": 60}, {**SMALL, "steps": 4}


def _wait_for(check, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def _is_temporary(name: str) -> bool:
    return ".partial." in name or name.endswith(".reserved")


def test_kill_9_the_app_while_a_job_runs_then_both_finish_in_order(tiny_model, tmp_path):
    output = tmp_path / "outputs"
    output.mkdir()
    log = tmp_path / "app.log"
    server = start_studio(tiny_model, output, log)
    try:
        client = server.client(downloads=tmp_path / "downloads")
        first = client.predict("first video", **LONG, api_name="/submit")
        second = client.predict("second video", **SHORT, api_name="/submit")
        assert first["seed"] is not None and second["seed"] is not None

        def first_is_denoising():
            job = client.predict(first["id"], api_name="/job")
            assert job["state"] in ("queued", "running"), job  # not over before the kill
            progress = job["progress"] or {}
            return job if job["state"] == "running" and progress.get("step") else None

        _wait_for(first_is_denoising, "the first job never reached a denoising step")
    finally:
        server.kill()
    assert len(list(output.glob("*.mp4"))) == 0

    again = start_studio(tiny_model, output, log)
    try:
        client = again.client(downloads=tmp_path / "downloads")

        def both_finished():
            jobs = {job["id"]: job for job in client.predict(api_name="/jobs")}
            states = [jobs[job["id"]]["state"] for job in (first, second)]
            return jobs if all(state == "done" for state in states) else None

        jobs = _wait_for(both_finished, "the two jobs did not finish after the restart")
        history = client.predict(api_name="/history")
    finally:
        again.stop()

    made_first, made_second = jobs[first["id"]], jobs[second["id"]]
    assert made_first["attempts"] == 2 and "Interrupted while running" in made_first["note"]
    assert made_second["attempts"] == 1
    assert made_first["finished"] <= made_second["started"]  # in order
    assert (made_first["seed"], made_second["seed"]) == (first["seed"], second["seed"])
    by_prompt = {entry["prompt"]: entry for entry in history}
    assert by_prompt["first video"]["seed"] == first["seed"]
    assert by_prompt["second video"]["seed"] == second["seed"]
    names = sorted(path.name for path in output.iterdir())
    assert not [name for name in names if _is_temporary(name)], names
    videos = [Path(name) for name in names if name.endswith(".mp4")]
    assert len(videos) == 2
    for video in videos:  # each with its sidecar and poster: no broken gallery entry
        assert {video.stem + ".json", video.stem + ".jpg"} <= set(names)


def _jobs_by_prompt(client) -> dict[str, dict]:
    return {job["prompt"]: job for job in client.predict(api_name="/jobs")}


def test_kill_9_while_a_generate_runs_and_another_waits_then_both_are_made(tiny_model, tmp_path):
    """A blocking /generate is a recorded job from the moment it is accepted, the waiting
    one too (it used to wait for a Gradio slot, in memory, and was lost in a crash)."""
    output = tmp_path / "outputs"
    output.mkdir()
    log = tmp_path / "app.log"
    server = start_studio(tiny_model, output, log, timeout=240)  # a loaded machine: slow start
    try:
        client = server.client(downloads=tmp_path / "downloads")
        client.submit("running call", **LONG, api_name="/generate")
        # Recorded first, so it runs first: the two calls' handlers run side by side.
        _wait_for(lambda: _jobs_by_prompt(client).get("running call"), "the first call's job")
        client.submit("waiting call", **SHORT, api_name="/generate")

        def one_runs_and_one_waits():
            jobs = _jobs_by_prompt(client)
            running, waiting = jobs.get("running call"), jobs.get("waiting call")
            if running is not None:
                assert running["state"] in ("queued", "running"), running  # not over yet
            progress = (running or {}).get("progress") or {}
            if waiting is None or running["state"] != "running" or not progress.get("step"):
                return None
            assert waiting["state"] == "queued", waiting
            return jobs

        made = _wait_for(one_runs_and_one_waits, "both calls recorded, the first denoising", 120)
    finally:
        server.kill()

    again = start_studio(tiny_model, output, log, timeout=240)
    try:
        client = again.client(downloads=tmp_path / "downloads")

        def both_finished():
            jobs = _jobs_by_prompt(client)
            done = all(jobs[prompt]["state"] == "done" for prompt in made)
            return jobs if done else None

        jobs = _wait_for(both_finished, "the two calls' jobs did not finish after the restart")
    finally:
        again.stop()
    for prompt, job in made.items():
        assert jobs[prompt]["id"] == job["id"] and jobs[prompt]["seed"] == job["seed"]
    assert len(list(output.glob("*.mp4"))) == 2


def test_two_blocking_generate_calls_run_at_once_on_two_workers(tiny_model, tmp_path):
    """--devices cpu,cpu: two workers, so two blocking /generate calls are made at the same
    time, as /submit's are (they used to share one Gradio slot)."""
    output = tmp_path / "outputs"
    log = tmp_path / "app.log"
    server = start_studio(tiny_model, output, log, "--devices", "cpu,cpu", timeout=240)
    try:
        client = server.client(downloads=tmp_path / "downloads")
        calls = [
            client.submit(f"call {index}", **{**SMALL, "steps": 400}, api_name="/generate")
            for index in range(2)
        ]

        def both_running():
            jobs = _jobs_by_prompt(client)
            states = [jobs.get(f"call {index}", {}).get("state") for index in range(2)]
            assert "done" not in states, jobs  # 400 steps: never over before both started
            return jobs if states == ["running", "running"] else None

        jobs = _wait_for(both_running, "both calls running at once", 120)
        for job in jobs.values():
            client.predict(job["id"], api_name="/cancel")
        for call in calls:
            with pytest.raises(Exception, match="ancel"):
                call.result(timeout=60)
    finally:
        server.stop()
