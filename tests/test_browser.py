"""The page in a real headless Chromium: make a video (progress, result, gallery), cancel one,
reuse settings from the gallery and from a dropped MP4, and look right on a laptop and a
phone. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.studio_server import REPO_ROOT, StudioServer, start_studio

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def studio(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("studio-browser")
    server = start_studio(tiny_model, workdir / "outputs", workdir / "app.log", timeout=240)
    try:
        # A cold start (first imports, the model's load, a first run's one-off work) is
        # waited for here, generously, with a video through the API: not by the first test,
        # whose waits are for the page.
        make_video(server, "a warm-up video", timeout=600)
        yield server
    finally:
        server.stop()


def api_client(studio: StudioServer):
    from gradio_client import Client

    return Client(studio.url, verbose=False, download_files=str(studio.output_dir.parent))


def make_video(studio: StudioServer, prompt: str, timeout: float = 180) -> Path:
    """A video in the gallery, made through the API."""
    job = api_client(studio).submit(prompt=prompt, steps=2, api_name="/generate")
    _video, settings = job.result(timeout=timeout)
    return next(studio.output_dir.glob(f"*-seed{settings['seed']}-*.mp4"))


@pytest.fixture(scope="module")
def made_video(studio) -> Path:
    return make_video(studio, "An astronaut riding a horse")


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(studio.url)
    page.wait_for_selector("#generate:not([disabled])")  # the model is loaded
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_steps(page, steps: int) -> None:
    field = page.locator("#steps input[type=number]")
    if not field.is_visible():  # the accordion is closed
        page.get_by_text("Advanced settings").click()
    field.fill(str(steps))
    field.press("Enter")


def generate(page, prompt: str, steps: int) -> None:
    page.locator("#prompt textarea").fill(prompt)
    set_steps(page, steps)
    page.locator("#generate").click()


def thumbnails(page) -> int:
    return page.locator("#gallery .thumbnail-item").count()


def test_generate_shows_progress_then_the_video_and_the_gallery(page, studio):
    before = thumbnails(page)
    generate(page, "Pink fish swim in the sea", steps=40)
    page.wait_for_selector("#run-status :text('Denoising step')")
    assert page.locator("#live-preview").is_visible()
    screenshot(page, "desktop-running")

    page.wait_for_selector("#result-video video[src]")
    info = page.locator("#result-info").inner_text()
    assert re.search(r"Seed \d+ · made in", info)
    page.wait_for_function(
        f"document.querySelectorAll('#gallery .thumbnail-item').length > {before}"
    )
    assert "Pink fish swim in the sea" in page.locator("#gallery").inner_text()
    screenshot(page, "desktop-result")


def test_cancel_stops_the_video(page, studio):
    before = studio.videos()
    generate(page, "cancel me please", steps=200)
    page.wait_for_selector("#run-status :text('Denoising step')")
    page.locator("#cancel").click()
    page.wait_for_selector("#run-status :text('Cancelled: no video was saved.')")
    client = api_client(studio)
    deadline = time.monotonic() + 60
    while any(job["state"] in ("queued", "running") for job in client.predict(api_name="/jobs")):
        assert time.monotonic() < deadline, "the cancelled job never ended"
        time.sleep(0.1)
    assert studio.videos() == before
    assert page.locator("#generate").is_enabled()


def test_gallery_selection_reuses_settings(page, made_video):
    settings = json.loads(made_video.with_suffix(".json").read_text())
    page.locator(f"#gallery .thumbnail-item:has-text({settings['prompt'][:20]!r})").first.click()
    page.wait_for_selector("#selected video[src]")
    page.locator("#prompt textarea").fill("something else")
    page.locator("#reuse").click()
    page.wait_for_function(
        f"document.querySelector('#prompt textarea').value === {settings['prompt']!r}"
    )


def test_delete_asks_once_more_then_removes_the_files(page, studio):
    doomed = make_video(studio, "Delete me after a look")
    page.locator("#gallery-header button").click()  # refresh: made outside this page
    page.locator("#gallery .thumbnail-item:has-text('Delete me')").first.click()
    page.wait_for_selector("#selected video[src]")
    page.locator("#delete").click()
    assert doomed.exists()  # nothing is removed before the confirmation
    page.get_by_role("button", name="Delete for good").click()
    page.wait_for_selector("#gallery .thumbnail-item:has-text('Delete me')", state="detached")
    assert not list(studio.output_dir.glob(f"{doomed.stem}.*"))


def test_dropping_a_video_loads_its_settings_or_says_why_not(page, made_video, tmp_path):
    settings = json.loads(made_video.with_suffix(".json").read_text())
    page.locator("#drop-video button.label-wrap").click()
    upload = page.locator("#dropped-video input[type=file]")
    upload.set_input_files(str(made_video))
    page.wait_for_function(
        f"document.querySelector('#prompt textarea').value === {settings['prompt']!r}"
    )
    assert page.locator("#seed input").input_value() == str(settings["seed"])

    foreign = tmp_path / "foreign.mp4"
    _write_plain_mp4(foreign)
    page.locator("#dropped-video button[aria-label='Clear']").click()
    upload.set_input_files(str(foreign))
    page.wait_for_selector(":text('carries no Allegro Studio settings')")


def test_layout_on_a_laptop_and_a_phone(browser, studio):
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(studio.url)
        page.wait_for_selector("#generate:not([disabled])")
        assert page.locator("h1").inner_text() == "Allegro Studio"
        assert page.locator("#model-banner").is_visible()
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
        generate_box = page.locator("#generate").bounding_box()
        cancel_box = page.locator("#cancel").bounding_box()
        assert abs(generate_box["y"] - cancel_box["y"]) < 5  # side by side, also on a phone
        screenshot(page, name)
        context.close()


def _write_plain_mp4(path: Path) -> None:
    """A short MP4 that this app did not make (no settings inside)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(15))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for value in (0, 128, 255):
            frame = np.full((64, 64, 3), value, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_plain_start_without_a_gpu_runs_the_preview_model(browser, tmp_path):
    """`python app.py` alone on a machine with no GPU: the built-in preview model is made on
    first run (in the Hugging Face cache folder) and the page says so."""
    plain = start_studio(
        None,
        tmp_path / "outputs",
        tmp_path / "app.log",
        env={"HF_HOME": str(tmp_path / "hf-home")},
    )
    try:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(plain.url)
        page.wait_for_selector("#generate:not([disabled])")
        assert "preview model" in page.locator("body").inner_text()
        screenshot(page, "preview-model-banner")
        context.close()
        assert any((tmp_path / "hf-home").rglob("model_index.json"))
        # No memory profile asked for: torchao is not imported, and none of its warnings
        # ("Failed to load ... _C_mxfp8", "Unable to import `torchao` Tensor objects").
        assert "torchao" not in plain.log_text() and "_pytree" not in plain.log_text()
    finally:
        plain.stop()
