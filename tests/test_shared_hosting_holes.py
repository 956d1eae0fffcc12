"""The second pass at a shared server, as an attacker would: raw HTTP against image bombs sent
as data URLs, batches that blow up, free keys filling the queue from one address, DNS
rebinding against a local server, names that break the checks, and what the answers leak.

One shared app (all addresses, believing X-Forwarded-For from 127.0.0.1, so that tests can
play several addresses) and one local app (127.0.0.1, not shared).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.gradio_http import PageSession
from tests.studio_server import REPO_ROOT, StudioServer, start_studio
from tests.test_shared_hosting import generation_inputs

KEYS = [f"key-{n}-" + "k" * 36 for n in range(5)]  # 42 characters each
ADDRESS, OTHER_ADDRESS = "203.0.113.7", "198.51.100.9"


@pytest.fixture(scope="module")
def shared(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("shared-holes")
    studio = start_studio(
        tiny_model, workdir / "outputs", workdir / "app.log", "--host", "0.0.0.0",
        "--trusted-proxies", "127.0.0.1", "--jobs-per-address", "2", "--jobs-per-person", "5",
        "--jobs-total", "50",
    )  # fmt: skip
    yield studio
    studio.stop()


@pytest.fixture(scope="module")
def local(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("local-holes")
    studio = start_studio(
        tiny_model, workdir / "outputs", workdir / "app.log",
        "--allowed-hosts", "studio.example.org",
    )  # fmt: skip
    yield studio
    studio.stop()


def peak_rss_mb(pid: int) -> float:
    """The process's highest resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def zero_png(width: int, height: int) -> bytes:
    """A greyscale PNG of zeros: a few hundred KB that decode to width x height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    rows = 1000
    idat = b"".join(compressor.compress(row * rows) for _ in range(height // rows))
    idat += compressor.compress(row * (height % rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def upload(server: StudioServer, name: str, data: bytes) -> str:
    response = httpx.post(
        server.url + "gradio_api/upload", files={"files": (name, data, "image/png")}, timeout=30
    )
    return response.json()[0]


def test_an_image_sent_as_a_data_url_is_refused_before_it_is_decoded(shared):
    bomb = "data:image/png;base64," + base64.b64encode(zero_png(13000, 13000)).decode()
    page = PageSession(shared.url)
    token = page.call("on_page_load", "").data[0]
    small = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 10)).save(small, "PNG")
    real = upload(shared, "frame.png", small.getvalue())
    values = (
        {"path": None, "url": bomb},
        {"url": bomb},
        {"path": real, "url": bomb},  # a real upload does not carry a data URL through
        {"path": None, "url": bomb, "meta": {"_type": "gradio.FileData"}},
    )
    before = peak_rss_mb(shared.process.pid)
    for value in values:
        started = time.monotonic()
        preview = page.call("crop_preview", value, "default")
        assert preview.data is None and time.monotonic() - started < 1, value
        inputs = generation_inputs("a cat", token)
        inputs[12:15] = ["Image to video", value, None]
        started = time.monotonic()
        queued = page.call("submit_page", *inputs)
        assert queued.status in (400, 422) and time.monotonic() - started < 1, value
        assert "upload" in queued.error, queued.error
    assert "not a data: or web URL" in queued.error or "must be an image file" in queued.error
    assert peak_rss_mb(shared.process.pid) - before < 100


def test_an_event_body_cannot_carry_more_than_an_upload(shared):
    """A data URL of any size was read whole before any check: bodies other than uploads
    are capped (16 MB) by their Content-Length, or cut off when they stream past it."""
    page = PageSession(shared.url)
    bomb = "data:image/png;base64," + "A" * (20 * 2**20)
    body = {"data": [{"url": bomb}, "default"], "fn_index": page.fn_index("crop_preview")}
    before = peak_rss_mb(shared.process.pid)
    log_start = len(shared.log_text())
    refused = httpx.post(shared.url + "gradio_api/run/predict", json=body, timeout=30)
    assert refused.status_code == 413

    def streamed():
        yield b'{"data": [{"url": "data:image/png;base64,'
        for _ in range(20):
            yield b"A" * 2**20
        yield b'"}, "default"], "fn_index": %d}' % page.fn_index("crop_preview")

    try:
        cut = httpx.post(shared.url + "gradio_api/run/predict", content=streamed(), timeout=30)
        assert cut.status_code != 200
    except httpx.HTTPError:
        pass  # the server hung up: also a refusal
    assert peak_rss_mb(shared.process.pid) - before < 100
    assert "Traceback" not in shared.log_text()[log_start:]


def test_an_uploaded_image_bomb_is_refused_by_its_header(shared):
    """A greyscale upload is converted by Gradio (decoded whole) unless refused first."""
    path = upload(shared, "bomb.png", zero_png(13000, 13000))
    page = PageSession(shared.url)
    token = page.call("on_page_load", "").data[0]
    before = peak_rss_mb(shared.process.pid)
    started = time.monotonic()
    value = {"path": path, "orig_name": "bomb.png", "meta": {"_type": "gradio.FileData"}}
    inputs = generation_inputs("a cat", token)
    inputs[12:15] = ["Image to video", value, None]
    refused = page.call("submit_page", *inputs)
    assert time.monotonic() - started < 1
    assert refused.status in (400, 422) and "13000x13000 pixels" in refused.error
    assert peak_rss_mb(shared.process.pid) - before < 100


def test_a_huge_batch_is_refused_by_its_size_before_it_is_built(shared):
    page = PageSession(shared.url)
    token = page.call("on_page_load", "").data[0]
    inputs = generation_inputs("\n".join(f"prompt {n}" for n in range(100_000)), token)
    inputs[15:17] = [True, 16]  # one video per line, 16 variations
    started = time.monotonic()
    refused = page.call("submit_page", *inputs)
    assert time.monotonic() - started < 1
    assert refused.status == 422 and "These are 1,600,000 videos" in refused.error


def test_one_address_cannot_fill_the_queue_with_free_keys(shared):
    def client(key: str, address: str) -> Client:
        headers = {"X-Allegro-Key": key, "X-Forwarded-For": address}
        return Client(shared.url, headers=headers, verbose=False)

    jobs = []
    try:
        for key in KEYS[:2]:
            jobs.append((key, ADDRESS, client(key, ADDRESS).predict(
                prompt="a long one", steps=500, api_name="/submit"
            )["id"]))  # fmt: skip
        with pytest.raises(Exception, match="limit per address on this server is 2"):
            client(KEYS[2], ADDRESS).predict(prompt="third", steps=1, api_name="/submit")
        # A page from the same address counts with the keys.
        page = PageSession(shared.url, headers={"X-Forwarded-For": ADDRESS})
        token = page.call("on_page_load", "").data[0]
        refused = page.call("submit_page", *generation_inputs("from the page", token))
        assert refused.status == 422 and "limit per address" in refused.error
        # Another address is not held back.
        other = client(KEYS[3], OTHER_ADDRESS)
        jobs.append((KEYS[3], OTHER_ADDRESS, other.predict(
            prompt="elsewhere", steps=500, api_name="/submit"
        )["id"]))  # fmt: skip
    finally:
        for key, address, job_id in jobs:
            client(key, address).predict(job_id, api_name="/cancel")


def test_a_name_the_checks_did_not_expect_is_refused_without_a_traceback(shared):
    bob = Client(shared.url, headers={"X-Allegro-Key": KEYS[4]}, verbose=False)
    started_log = len(shared.log_text())
    for name in ("a" * 5000, "b" * 201):
        with pytest.raises(Exception, match="names are at most 200 characters"):
            bob.predict(video=name, prompt="more", api_name="/extend")
    assert "Traceback" not in shared.log_text()[started_log:]


def test_the_banner_names_the_model_not_its_folder_when_shared(shared, tiny_model):
    page = PageSession(shared.url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        banner = page.call(
            "poll_status", 2, "default", "default", False, False, 7.5, "Text to video"
        ).data[0]
        if "ready" in str(banner):
            break
        time.sleep(0.5)
    assert "ready" in str(banner)
    assert str(tiny_model) not in str(banner) and str(tiny_model.parent) not in str(banner)
    assert tiny_model.name in str(banner)


def test_bad_inputs_get_no_internal_wording(shared):
    page = PageSession(shared.url)
    token = page.call("on_page_load", "").data[0]
    inputs = generation_inputs("a cat", token)
    for value in ("file:///etc/passwd", f"file://{REPO_ROOT}/app.py", "../../etc/passwd"):
        inputs[12:14] = ["Image to video", {"path": value, "meta": {"_type": "gradio.FileData"}}]
        refused = page.call("submit_page", *inputs)
        assert refused.status in (400, 422)
        assert os.getcwd() not in refused.error and str(REPO_ROOT) not in refused.error
    too_few = page.call("submit_page", "a cat")
    assert too_few.status in (400, 422) and too_few.error
    for internal in ("submit_page", "Wanted inputs", "textbox", "handler"):
        assert internal not in too_few.error, too_few.error


def test_security_headers_are_on_the_page(shared, local):
    for server in (shared, local):
        headers = httpx.get(server.url, timeout=10).headers
        assert headers["x-frame-options"] == "SAMEORIGIN"
        assert headers["content-security-policy"] == "frame-ancestors 'self'"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_a_local_server_answers_only_its_own_host_names(local):
    port = local.url.rstrip("/").rsplit(":", 1)[1]
    rebound = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
    for route in ("", "config", "gradio_api/info"):
        refused = httpx.get(local.url + route, headers=rebound, timeout=10)
        assert refused.status_code == 421, route
        assert "access-control-allow-origin" not in refused.headers
    page = PageSession(local.url)
    body = {"data": [], "fn_index": page.fn_index("history"), "session_hash": "rebound"}
    joined = httpx.post(local.url + "gradio_api/queue/join", json=body, headers=rebound)
    assert joined.status_code == 421 and "history" not in joined.text
    for name in ("localhost", "127.0.0.1", "studio.example.org"):
        own = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
        assert httpx.get(local.url + "config", headers=own, timeout=10).status_code == 200
    assert Client(local.url, verbose=False).predict(api_name="/history") == []
