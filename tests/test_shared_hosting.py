"""A shared server tried as an attacker would: raw HTTP to Gradio's routes with made-up,
copied or missing identities, oversized inputs, guessed file names, foreign origins.

One app listens on all addresses (so it is shared) with room for one waiting request; the
tests reach it on loopback. Alice uses the page, Bob the API with his key, Mallory anything.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client

from tests.gradio_http import PageSession
from tests.studio_server import StudioServer, start_studio

BOB_KEY = "bob-" + "b0b" * 12  # 40 characters
NATIVE_SIZE = ("default", "default")


def generation_inputs(prompt: str, token: str, steps: int = 2, seed: int = 7) -> list:
    """submit_page's 18 inputs (Generate): 15 controls (the last three: the task and the
    images), the batch options (one per line, variations), the page token."""
    controls = [prompt, "", seed, steps, 7.5, *NATIVE_SIZE, True, False, None, False, False]
    return [*controls, "Text to video", None, None, False, 1, token]


def make_on_page(server: StudioServer, page: PageSession, prompt: str, token: str) -> Path:
    """Generate on the page: the job is queued at once; its video arrives later."""
    queued = page.call("submit_page", *generation_inputs(prompt, token))
    assert queued.error is None, queued.error
    _wait_for(lambda: _video_of(server, prompt) is not None, timeout=180)
    return _video_of(server, prompt)


def _video_of(server: StudioServer, prompt: str) -> Path | None:
    """The saved video made from ``prompt`` (not a save still under way: a hidden file)."""
    for sidecar in server.output_dir.glob("[!.]*.json"):
        video = sidecar.with_suffix(".mp4")
        if json.loads(sidecar.read_text()).get("prompt") == prompt and video.is_file():
            return video
    return None


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("shared")
    outputs = workdir / "outputs"
    outputs.mkdir()
    # What a save killed half-way leaves behind, and a link planted in the folder.
    (outputs / ".20260101-seed1-x.abcd.partial.mp4").write_bytes(b"half a video")
    (outputs / "20260101-seed1-orphan.json").write_text('{"prompt": "orphan"}')
    (outputs / "20260101-seed1-orphan.jpg").write_bytes(b"poster")
    secret = workdir / "secret.txt"
    secret.write_text("not for visitors")
    (outputs / "linked.mp4").symlink_to(secret)
    studio = start_studio(
        tiny_model, outputs, workdir / "app.log", "--host", "0.0.0.0", "--jobs-total", "2",
    )  # fmt: skip
    yield studio
    studio.stop()


@pytest.fixture(scope="module")
def alice(server) -> dict:
    """Alice opens the page, gets her token and makes one video through the page."""
    page = PageSession(server.url)
    token = page.call("on_page_load", "").data[0]
    _wait_until_ready(page)
    video = make_on_page(server, page, "Alice's fish", token)
    return {"page": page, "token": token, "video": video}


def _wait_until_ready(page: PageSession, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        banner = page.call(
            "poll_status", 2, "default", "default", False, False, 7.5, "Text to video"
        ).data[1]
        if banner.get("interactive"):
            return
        time.sleep(0.5)
    pytest.fail("the model did not load")


def pick(index: int) -> dict:
    """The event data of a click on the gallery's ``index``-th item."""
    return {"index": index, "value": None}


def _gallery_names(outcome) -> list[str]:
    return [] if outcome.data is None else [item["caption"] for item in outcome.data[0]]


def test_a_page_identity_the_server_did_not_issue_is_refused_on_every_event(server, alice):
    sidecar = json.loads(alice["video"].with_suffix(".json").read_text())
    copied = sidecar["labels"]["owner"]  # what anyone handed the files can read
    forged = "p1." + "0" * 32 + "." + "f" * 64
    # Alice's token with its last hex digit changed (replacing it with a fixed "0" left it
    # unchanged whenever it already ended in 0: one run in 16 "saw Alice's gallery").
    tampered = alice["token"][:-1] + ("1" if alice["token"].endswith("0") else "0")
    assert tampered != alice["token"]
    for made_up in (copied, forged, tampered, "x" * 32, ""):
        mallory = PageSession(server.url)
        refreshed = mallory.call("refresh_gallery", made_up)
        assert refreshed.data is None and "not issued by this server" in refreshed.error
        # The page's delete chain: list, select the first, confirm; each step is refused.
        selected = mallory.call("select_entry", None, made_up, event_data=pick(0))
        assert selected.data is None and "not issued by this server" in selected.error
        for event in ("reuse_entry", "delete_entry"):
            refused = mallory.call(event, None, made_up)
            assert refused.data is None and "not issued by this server" in refused.error
        joined = mallory.call("submit_page", *generation_inputs("mine", made_up))
        assert joined.status == 422 and "not issued by this server" in joined.error
        # A page that shows up with it gets a fresh identity and an empty gallery.
        token, items, _ = mallory.call("on_page_load", made_up).data
        assert token != made_up and token.startswith("p1.") and items == []
    assert alice["video"].exists()
    # Alice's own page still works, from any tab that holds her token.
    again = PageSession(server.url).call("refresh_gallery", alice["token"])
    assert [caption for caption in _gallery_names(again) if "Alice's fish" in caption]


def test_nothing_written_with_a_video_grants_access(server, alice):
    from allegro.video import read_settings

    embedded = read_settings(alice["video"])
    assert "labels" not in embedded
    for path in (alice["video"], alice["video"].with_suffix(".json")):
        assert alice["token"].split(".")[1].encode() not in path.read_bytes()
    tag = json.loads(alice["video"].with_suffix(".json").read_text())["labels"]["owner"]
    as_key = Client(server.url, headers={"X-Allegro-Key": tag * 2}, verbose=False)
    assert as_key.predict(api_name="/history") == []


def test_api_keys_are_secrets_in_their_own_namespace(server, alice):
    def history(headers):
        return Client(server.url, headers=headers, verbose=False).predict(api_name="/history")

    with pytest.raises(Exception, match="send your own key in the X-Allegro-Key header"):
        history(None)
    address_id = "ip-" + hashlib.sha256(b"127.0.0.1").hexdigest()[:24]
    with pytest.raises(Exception, match="X-Allegro-Key"):
        history({"X-Allegro-Owner": address_id})  # the old address-derived id means nothing
    with pytest.raises(Exception, match="32 to 256"):
        history({"X-Allegro-Key": "my-own-key-123"})
    # A page token is not a key: as a key it opens an empty gallery, not Alice's.
    assert history({"X-Allegro-Key": alice["token"]}) == []
    bob = Client(server.url, headers={"X-Allegro-Key": BOB_KEY}, verbose=False)
    with pytest.raises(Exception, match="X-Allegro-Key"):
        Client(server.url, verbose=False).predict(prompt="a cat", steps=1, api_name="/generate")
    video, _settings = bob.predict(prompt="Bob's boat", steps=1, api_name="/generate")
    assert Path(video).read_bytes()[4:8] == b"ftyp"
    assert [r["prompt"] for r in bob.predict(api_name="/history")] == ["Bob's boat"]


def test_output_files_cannot_be_fetched_or_probed_by_path(server, alice):
    base = server.url + "gradio_api/file="
    real = alice["video"].with_suffix(".json")
    missing = real.with_name("20200101-000000-seed42-pink-fish.json")
    answers = [httpx.get(base + str(path), timeout=10) for path in (real, alice["video"], missing)]
    assert [answer.status_code for answer in answers] == [403, 403, 403]
    # The same answer whether the file exists or not.
    assert answers[0].text.replace(str(real), "") == answers[2].text.replace(str(missing), "")


def test_a_page_image_must_be_an_upload(server, alice, tmp_path):
    """Raw HTTP in place of the page: a path on the server as the first frame is refused
    before Gradio opens it, even when it is an image (gr.Image's data model has no file
    mark, so Gradio's own upload-folder check does not apply: ui/uploads.UploadedImage)."""
    from gradio.utils import get_upload_folder
    from PIL import Image

    secret = tmp_path / "secret-frame.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    cache = Path(get_upload_folder())  # the server's too: it inherits this environment
    before = {path.name for path in cache.rglob("secret-frame*")}
    inputs = generation_inputs("a cat", alice["token"])
    for value in ("/etc/passwd", {"path": "/etc/passwd"}, {"path": str(secret)}):
        inputs[12:15] = ["Image to video", value, None]
        refused = alice["page"].call("submit_page", *inputs)
        assert refused.status in (400, 422), value
        assert "root:" not in refused.error
    assert "not a path on the server" in refused.error
    assert {path.name for path in cache.rglob("secret-frame*")} == before  # never copied


def test_crash_leftovers_are_removed_at_start(server):
    names = {path.name for path in server.output_dir.iterdir()}
    assert not [name for name in names if ".partial." in name or "orphan" in name]
    assert "linked.mp4" in names  # not a leftover: a link is left alone, and never served


def test_a_huge_prompt_is_refused_before_it_is_queued(server, alice):
    started = time.monotonic()
    page = alice["page"].call("submit_page", *generation_inputs("x" * 10**6, alice["token"]))
    assert page.status == 422 and "1,000,000 characters long; at most 4,000" in page.error
    bob = Client(server.url, headers={"X-Allegro-Key": BOB_KEY}, verbose=False)
    with pytest.raises(Exception, match="negative prompt is 4,001 characters"):
        bob.predict(prompt="a cat", negative_prompt="n" * 4001, api_name="/generate")
    as_bob = PageSession(server.url, headers={"X-Allegro-Key": BOB_KEY})
    broken = as_bob.call("generate", "a cat \ud83d", *[None] * 14)  # 15 parameters
    # /generate's check runs first thing in its handler (gr.api has no validator=): refused
    # with the field's message, before any job is recorded.
    assert "not valid text" in broken.error and broken.data is None
    assert time.monotonic() - started < 10


def test_a_full_queue_refuses_only_new_generations(server, alice):
    bob = Client(server.url, headers={"X-Allegro-Key": BOB_KEY}, verbose=False)

    def state(prompt: str) -> str | None:
        jobs = {job["prompt"]: job for job in bob.predict(api_name="/jobs")}
        return jobs.get(prompt, {}).get("state")

    # Blocking /generate calls are jobs from the moment they are accepted: 2 jobs now.
    running = bob.submit(prompt="a long one", steps=500, api_name="/generate")
    _wait_for(lambda: state("a long one") == "running")
    waiting = bob.submit(prompt="waiting", steps=1, api_name="/generate")
    _wait_for(lambda: state("waiting") == "queued")
    try:
        newcomer = PageSession(server.url)
        loaded = newcomer.call("on_page_load", "", timeout=10)
        assert loaded.status == 200 and loaded.data[0].startswith("p1.")
        page = alice["page"]
        listed = _gallery_names(page.call("refresh_gallery", alice["token"]))
        assert any(caption.startswith("Alice's fish") for caption in listed)
        selected = page.call("select_entry", None, alice["token"], event_data=pick(0))
        assert selected.status == 200 and selected.data[1]["path"].endswith(".mp4")
        assert "Bob's boat" in [r["prompt"] for r in bob.predict(api_name="/history")]
        # A generation is refused before it joins, by the one queue limit: the jobs'.
        refused = newcomer.call("submit_page", *generation_inputs("one more", loaded.data[0]))
        assert refused.status == 422
        assert "The queue is full: 2 videos are queued or running" in refused.error
        assert "the limit of this server is 2" in refused.error
        for api_name in ("/generate", "/submit"):
            with pytest.raises(Exception, match="The queue is full: 2 videos are queued"):
                bob.predict(prompt="one more", steps=1, api_name=api_name)
        # Other queued events still run: "Reuse settings" of the video selected above.
        reused = page.call("reuse_entry", None, alice["token"], timeout=10)
        assert reused.error is None and reused.data[0] == "Alice's fish"
    finally:
        waiting.cancel()
        running.cancel()


def test_queue_events_reach_only_the_callers_own_jobs(server, alice):
    """Mallory knows the id of Alice's job (the worst case): her page's queue events, with
    her own token or a made-up one, neither cancel nor move it."""
    queued = alice["page"].call(
        "submit_page", *generation_inputs("Alice's long one", alice["token"], steps=200)
    )
    assert queued.error is None, queued.error
    job_id = _job_row(server, "Alice's long one")[0]
    mallory = PageSession(server.url)
    token = mallory.call("on_page_load", "").data[0]
    # The picker offers a session only its own jobs (Gradio refuses any other value)...
    for event in ("cancel_picked", "move_up"):
        assert "not in your queue" in mallory.call(event, job_id, token).error
    # ... and Cancel stops the caller's own running job: Mallory has none.
    assert mallory.call("cancel_running", token).error is None
    made_up = mallory.call("cancel_running", "p1.made-up.0000")
    assert "not issued by this server" in made_up.error
    assert _job_row(server, "Alice's long one")[1] in ("queued", "running")
    assert alice["page"].call("cancel_running", alice["token"]).error is None
    _wait_for(lambda: _job_row(server, "Alice's long one")[1] == "cancelled")


def _job_row(server: StudioServer, prompt: str) -> tuple[str, str]:
    """(id, state) of the job with this prompt, read from the jobs database."""
    with sqlite3.connect(server.output_dir / ".allegro-jobs.sqlite") as database:
        for job_id, request, state in database.execute("SELECT id, request, state FROM jobs"):
            if json.loads(request)["prompt"] == prompt:
                return job_id, state
    raise AssertionError(f"no job {prompt!r}")


def test_delete_also_removes_the_served_copies(server, alice):
    page = PageSession(server.url)
    make_on_page(server, page, "doomed", alice["token"])
    listed = page.call("refresh_gallery", alice["token"])
    index = next(i for i, c in enumerate(_gallery_names(listed)) if c.startswith("doomed"))
    selected = page.call("select_entry", None, alice["token"], event_data=pick(index))
    url = selected.data[1]["url"]
    assert httpx.get(url, timeout=10).status_code == 200
    assert page.call("delete_entry", None, alice["token"]).status == 200
    assert httpx.get(url, timeout=10).status_code in (403, 404)
    assert not list(server.output_dir.glob("*doomed*"))


def test_uploads_are_capped_and_dropped_settings_are_validated(server, alice, tmp_path):
    too_big = httpx.post(
        server.url + "gradio_api/upload",
        files={"files": ("big.mp4", b"\0" * (101 * 1024 * 1024), "video/mp4")},
        timeout=60,
    )
    assert too_big.status_code == 413
    page = PageSession(server.url)
    bad_settings = [
        ({"seed": 2**40}, "Seed must be between 0 and 4294967295"),
        ({"seed": -(10**20)}, "Seed must be between"),
        ({"steps": 100000}, "Steps must be between 1 and 500"),
        ({"guidance_scale": -50}, "Guidance scale must be between 1 and 20"),
        ({"interpolation": {"method": "../../x"}}, "Unknown interpolation method"),
        ({"prompt": "p" * 10**6}, "at most 4,000"),
        ({"prompt": "\ud800"}, "not valid text"),
    ]
    for change, message in bad_settings:
        path = tmp_path / "dropped.mp4"
        _mp4_with_settings(path, {"prompt": "a cat", "seed": 1, "steps": 2, **change})
        uploaded = httpx.post(
            server.url + "gradio_api/upload",
            files={"files": ("dropped.mp4", path.read_bytes(), "video/mp4")},
            timeout=30,
        ).json()[0]
        dropped = {
            "path": uploaded,
            "orig_name": "dropped.mp4",
            "meta": {"_type": "gradio.FileData"},
        }
        outcome = page.call("load_dropped_video", dropped, "")
        assert outcome.data is None and "Nothing was loaded" in outcome.error, change
        assert message in outcome.error
        assert not Path(uploaded).exists()  # only its settings were wanted


def test_cross_origin_requests_are_refused_and_monitoring_is_off(server):
    lan = {"Host": "192.168.1.20:7860"}
    evil = {**lan, "Origin": "http://evil.example"}
    for response in (
        httpx.get(server.url + "config", headers=evil, timeout=10),
        httpx.options(
            server.url + "gradio_api/queue/join",
            headers={**evil, "Access-Control-Request-Method": "POST"},
            timeout=10,
        ),
    ):
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    same = httpx.get(
        server.url + "config", headers={**lan, "Origin": "http://192.168.1.20:7860"}, timeout=10
    )
    assert same.status_code == 200
    for route in ("monitoring", "monitoring/summary"):
        assert httpx.get(server.url + route, timeout=10).status_code == 403
    assert "Monitoring URL" not in server.log_text()
    assert "Traceback" not in server.log_text()


def _mp4_with_settings(path: Path, settings: dict) -> None:
    """An MP4 whose comment holds ``settings`` as this app writes them (ASCII-escaped, so
    even a lone surrogate survives the trip)."""
    from allegro.video import SETTINGS_KEY, _encode_mp4

    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    _encode_mp4(path, frames, 15, json.dumps({SETTINGS_KEY: settings}), "t")


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail("timed out")
