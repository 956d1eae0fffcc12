"""The app as a process: ``python app.py`` with the tiny checkpoint, driven through its API with
gradio_client (generate, history, errors, cancel, a full queue, restarts, shared galleries).

API callers identify themselves with a key of 32+ characters in the ``X-Allegro-Key``
header; on a shared server a call without one is refused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.studio_server import REPO_ROOT, StudioServer, start_studio

ALICE, BOB = "alice-" + "a1" * 16, "bob-" + "b2" * 16  # keys of 32+ characters


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio-api")


@pytest.fixture(scope="module")
def studio(tiny_model, workdir) -> Iterator[StudioServer]:
    """A local (unshared) app where a person may have two videos queued or running."""
    server = start_studio(
        tiny_model, workdir / "outputs", workdir / "first.log", "--jobs-per-person", "2"
    )
    yield server
    server.stop()


def generate(client: Client, timeout: float = 120, **params):
    return client.submit(api_name="/generate", **params).result(timeout=timeout)


def test_help_explains_every_setting_without_importing_torch():
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "app.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines()}
    assert "torch" not in imported and "gradio" not in imported
    for flag in ("--model", "--transformer", "--precision", "--offload", "--host", "--port"):
        assert flag in run.stdout
    for flag in ("--share", "--output-dir", "--preview", "--public-gallery", "--ema-vfi-weights"):
        assert flag in run.stdout
    assert "--mcp" in run.stdout and "--max-queue" in run.stdout
    for variable in ("ALLEGRO_MODEL", "ALLEGRO_OUTPUT_DIR", "GRADIO_SERVER_NAME", "PORT"):
        assert variable in run.stdout


def test_mcp_without_its_extras_gives_a_clear_message(tmp_path):
    if subprocess.run([sys.executable, "-c", "import mcp"], capture_output=True).returncode == 0:
        pytest.skip("gradio[mcp] is installed here")
    run = subprocess.run(
        [sys.executable, "app.py", "--mcp", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "pip install 'gradio[mcp]'" in run.stderr


def test_generate_returns_the_video_and_its_settings(studio):
    video, settings = generate(
        studio.client(ALICE), prompt="Pink fish swim in the sea", seed=1234, steps=2
    )
    assert Path(video).read_bytes()[4:8] == b"ftyp"  # an MP4
    assert settings["seed"] == 1234 and settings["steps"] == 2
    assert (settings["frames"], settings["height"], settings["width"]) == (24, 160, 160)
    from ui.identity import owner_tag

    assert settings["labels"]["owner"] == owner_tag("key", ALICE)  # one-way: not the key
    assert settings["labels"]["job"]  # made as a job
    assert settings["warnings"] == []
    assert Path(video).name in studio.videos()

    _video, settings = generate(studio.client(ALICE), prompt="An astronaut riding a horse", steps=2)
    assert isinstance(settings["seed"], int)  # a random seed, reported


def test_the_30_fps_toggle_through_the_api(studio):
    from allegro.video import read_frames

    video, settings = generate(
        studio.client(ALICE), prompt="a slow pan over hills", seed=5, steps=2, interpolate=True
    )
    frames, fps = read_frames(video)
    assert fps == 30 and len(frames) == 48  # 24 frames at 15 fps -> 48 at 30 fps
    assert settings["fps"] == 30 and settings["interpolation"]["method"] == "flow"
    # A method that cannot run here says why, and nothing is queued.
    with pytest.raises(Exception, match="EMA-VFI weights were not found"):
        generate(
            studio.client(ALICE),
            prompt="a cat",
            interpolate=True,
            interpolation_method="ema-vfi",
        )


def test_history_lists_videos_newest_first_with_working_links(studio):
    client = studio.client(ALICE)  # its own videos: the test passes alone and in any order
    for prompt in ("a first sunrise", "a second sunrise"):
        generate(client, prompt=prompt, steps=1)
    history = client.predict(api_name="/history")
    assert [record["prompt"] for record in history[:2]] == ["a second sunrise", "a first sunrise"]
    response = httpx.get(studio.url.rstrip("/") + history[0]["video_url"], timeout=10)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt": ""}, "Please write a prompt"),
        ({"prompt": "a cat", "steps": 0}, "Steps must be between 1 and 500, not 0"),
        ({"prompt": "a cat", "frames": 50}, "Allegro cannot make 50 frames"),
        ({"prompt": "a cat", "seed": "x"}, "Seed must be a whole number, not 'x'"),
        ({"prompt": "a cat", "guidance_scale": 99}, "Guidance scale must be between 1 and 20"),
        ({"prompt": "a cat", "interpolation_method": "magic"}, "Unknown interpolation method"),
        ({"prompt": "a cat", "fast_mode": True, "step_cache": True}, "are alternatives"),
    ],
)
def test_bad_input_gets_the_engine_message(studio, params, message):
    with pytest.raises(Exception, match=message):
        generate(studio.client(ALICE), **params)


def test_the_app_keeps_serving_after_bad_input(studio):
    before = studio.videos()
    with pytest.raises(Exception, match="Please write a prompt"):
        generate(studio.client(ALICE), prompt="   ")
    video, _settings = generate(studio.client(ALICE), prompt="still working", steps=2)
    assert studio.videos() - before == {Path(video).name}


def test_only_the_output_folder_is_served(studio, tiny_model):
    base = studio.url.rstrip("/") + "/gradio_api/file="
    for outside in (tiny_model / "model_index.json", Path("/etc/passwd"), REPO_ROOT / "app.py"):
        assert httpx.get(base + str(outside), timeout=10).status_code in (403, 404)


def _job_states(client) -> dict[str, dict]:
    return {job["prompt"]: job for job in client.predict(api_name="/jobs")}


def test_cancel_a_running_and_a_queued_job_and_refuse_a_full_queue(studio):
    """Blocking /generate calls are jobs from the moment they are accepted: the job limits
    (here two per person) are the queue's only limit."""
    client = studio.client(ALICE)
    before = studio.videos()
    running = client.submit(api_name="/generate", prompt="cancel me", steps=500)

    def denoising():
        job = _job_states(client).get("cancel me", {})
        return job.get("state") == "running" and (job.get("progress") or {}).get("step")

    _wait_for(denoising, "the long job to be denoising")
    queued = client.submit(api_name="/generate", prompt="queued then cancelled", steps=2)
    _wait_for(
        lambda: _job_states(client).get("queued then cancelled", {}).get("state") == "queued",
        "the second call to be a queued job",
    )
    with pytest.raises(Exception, match="the limit per person on this server is 2"):
        generate(client, prompt="one too many", steps=2, timeout=30)

    queued.cancel()
    running.cancel()

    def both_cancelled():
        jobs = _job_states(client)
        return all(jobs[p]["state"] == "cancelled" for p in ("cancel me", "queued then cancelled"))

    _wait_for(both_cancelled, "both jobs to be cancelled")
    assert studio.videos() == before
    # The engine really stopped: a new video is made at once, not after 500 steps.
    started = time.monotonic()
    video, _settings = generate(client, prompt="after the cancel", steps=2, timeout=60)
    assert time.monotonic() - started < 20
    assert studio.videos() - before == {Path(video).name}
    assert not [name for name in studio.videos() if "cancel-me" in name or "queued" in name]


def test_jobs_api_submit_poll_list_cancel_with_owner_isolation(studio):
    """/submit returns at once; /job polls; /jobs lists only the caller's; /cancel by id;
    another owner cannot see or cancel a job, whatever id they send."""
    alice, bob = studio.client(ALICE), studio.client(BOB)
    params = {"prompt": "a lantern on a lake", "steps": 2, "frames": 24}
    first = alice.predict(api_name="/submit", **params, height=160, width=160)
    assert first["state"] in ("queued", "running") and isinstance(first["seed"], int)
    slow = alice.predict(api_name="/submit", **{**params, "steps": 400}, height=160, width=160)
    with pytest.raises(Exception, match="no job"):
        bob.predict(first["id"], api_name="/job")
    with pytest.raises(Exception, match="no job"):
        bob.predict(slow["id"], api_name="/cancel")
    assert bob.predict(api_name="/jobs") == []
    assert {first["id"], slow["id"]} <= {job["id"] for job in alice.predict(api_name="/jobs")}

    deadline = time.monotonic() + 180
    job = first
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = alice.predict(first["id"], api_name="/job")
    assert job["state"] == "done", job
    assert job["video"] in studio.videos() and job["video_url"].endswith(".mp4")
    cancelled = alice.predict(slow["id"], api_name="/cancel")
    assert cancelled["state"] in ("cancelled", "running")
    while alice.predict(slow["id"], api_name="/job")["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert alice.predict(slow["id"], api_name="/job")["state"] == "cancelled"
    with pytest.raises(Exception, match="prompt"):
        alice.predict(api_name="/submit", prompt="  ")
    database = httpx.get(f"{studio.url}gradio_api/file={studio.output_dir}/.allegro-jobs.sqlite")
    assert database.status_code != 200  # the queue's database is never served


def test_restart_keeps_history_and_shared_galleries_are_per_caller(tiny_model, tmp_path):
    # Its own server (stopping the module's would take it from the tests after this one).
    local = start_studio(tiny_model, tmp_path / "outputs", tmp_path / "first.log")
    try:
        generate(local.client(ALICE), prompt="Alice's video before the restart", steps=1)
        made_before = local.client(ALICE).predict(api_name="/history")
    finally:
        local.stop()
    assert len(made_before) == 1
    # Listening on all addresses: others could connect, so each caller sees only theirs.
    shared = start_studio(
        tiny_model, local.output_dir, tmp_path / "second.log", "--host", "0.0.0.0"
    )
    try:
        alice, bob = shared.client(ALICE), shared.client(BOB)
        assert [r["name"] for r in alice.predict(api_name="/history")] == [
            r["name"] for r in made_before
        ]
        assert bob.predict(api_name="/history") == []
        with pytest.raises(Exception, match="send your own key"):
            shared.client().predict(api_name="/history")  # never a gallery by address
        for name, args in (("/jobs", ()), ("/job", ("x",)), ("/cancel", ("x",))):
            with pytest.raises(Exception, match="send your own key"):
                shared.client().predict(*args, api_name=name)  # nor jobs
        with pytest.raises(Exception, match="send your own key"):
            shared.client().predict(api_name="/submit", prompt="a key-less job")

        bob_video, _settings = generate(bob, prompt="Bob's video", steps=2)
        assert [r["video"] for r in bob.predict(api_name="/history")] == [Path(bob_video).name]
        assert Path(bob_video).name not in {r["video"] for r in alice.predict(api_name="/history")}
    finally:
        shared.stop()
    assert "Traceback" not in shared.log_text() + local.log_text()


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
