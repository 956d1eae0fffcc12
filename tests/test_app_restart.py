"""The whole app killed and started again: kill -9 the server while a job runs and another
waits; start it again on the same folder: both finish, in order, with the seeds fixed at
submit; the gallery shows both and no temporary file stays. (tests/test_jobs.py proves the
same for the job runner alone.)"""

from __future__ import annotations

import time
from pathlib import Path

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
