"""Jobs on the page, in a real headless Chromium: a job outlives the page that queued it
(reload, close and reopen), a batch makes one video per line, a bad request is refused at
once while a video runs, the Queue panel moves and removes waiting jobs, and a job that ends
in a background tab calls Notification."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.studio_server import StudioServer, start_studio
from tests.test_browser import DESKTOP, browser, generate, screenshot  # noqa: F401

pytestmark = pytest.mark.browser

LONG_STEPS = 120  # a few tens of seconds on the tiny model: time to reload and look


@pytest.fixture(scope="module")
def studio(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("jobs-browser")
    server = start_studio(tiny_model, workdir / "outputs", workdir / "app.log")
    yield server
    server.stop()


@pytest.fixture
def context(browser):  # noqa: F811 - one person (one browser profile) per test
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(120_000)
    yield context
    context.close()


def open_page(context, studio: StudioServer):
    page = context.new_page()
    page.goto(studio.url)
    page.wait_for_selector("#generate:not([disabled])")
    page.wait_for_selector("#queue-table :text('No videos queued'), #queue-table table")
    return page


def row(page, prompt: str, state: str) -> str:
    return f"#queue-table tr[data-state='{state}']:has-text({prompt!r})"


def in_gallery(page, prompt: str) -> str:
    return f"#gallery .thumbnail-item:has-text({prompt!r})"


def wait_for_video_file(studio: StudioServer, prompt: str, timeout: float = 180) -> None:
    """The job's video is saved (no page is open to say so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sidecar in studio.output_dir.glob("[!.]*.json"):  # not a save under way
            if prompt in sidecar.read_text() and sidecar.with_suffix(".mp4").is_file():
                return
        time.sleep(0.2)
    pytest.fail(f"no video for {prompt!r} within {timeout} s:\n{studio.log_text()[-3000:]}")


def test_reload_reattaches_to_the_running_job_and_its_video_arrives(context, studio):
    page = open_page(context, studio)
    generate(page, "A lighthouse in a storm", LONG_STEPS)
    page.wait_for_selector(row(page, "A lighthouse in a storm", "running"))

    page.reload()  # the job is not the page's: it goes on
    page.wait_for_selector("#run-status :text('Denoising step')")
    assert page.locator(row(page, "A lighthouse in a storm", "running")).is_visible()
    assert page.locator("#live-preview").is_visible()
    assert "%" in page.locator("#run-status").inner_text()
    screenshot(page, "jobs-reattached")

    page.wait_for_selector("#result-video video[src]", timeout=240_000)
    page.wait_for_selector(in_gallery(page, "A lighthouse in a storm"))
    assert page.locator(row(page, "A lighthouse in a storm", "done")).is_visible()


def test_close_the_page_and_come_back_after_the_job_ended(context, studio):
    page = open_page(context, studio)
    generate(page, "A paper boat on a river", 4)
    page.wait_for_selector(row(page, "A paper boat on a river", "queued") + ", "
                           + row(page, "A paper boat on a river", "running"))  # fmt: skip
    page.close()

    wait_for_video_file(studio, "A paper boat on a river")
    page = open_page(context, studio)  # same browser: same person
    page.wait_for_selector(in_gallery(page, "A paper boat on a river"))
    assert page.locator(row(page, "A paper boat on a river", "done")).is_visible()


def test_a_batch_of_three_prompts_makes_three_videos(context, studio):
    page = open_page(context, studio)
    prompts = ["A red kite over a beach", "A snail on a leaf", "A neon city at night"]
    page.locator("#each-line input").check()
    generate(page, "\n".join(prompts), 2)
    for prompt in prompts:
        page.wait_for_selector(in_gallery(page, prompt), timeout=240_000)
    seeds = page.locator("#queue-table tr[data-state='done'] td:nth-child(4)").all_inner_texts()
    assert len(seeds) == 3 and len(set(seeds)) == 1  # one seed, three prompts


def test_while_a_video_runs_bad_requests_are_refused_at_once_and_the_queue_can_be_changed(
    context, studio
):
    page = open_page(context, studio)
    generate(page, "A slow sunrise", LONG_STEPS * 2)
    page.wait_for_selector(row(page, "A slow sunrise", "running"))

    page.locator("#prompt textarea").fill("   ")
    started = time.monotonic()
    page.locator("#generate").click()
    page.wait_for_selector(":text('Please write a prompt')")
    refused_in = time.monotonic() - started
    assert refused_in < 1.0, f"refused after {refused_in:.2f} s"

    page.locator("#each-line input").check()
    generate(page, "First waiting\nSecond waiting", 2)
    page.wait_for_selector(row(page, "Second waiting", "queued"))
    places = page.locator("#queue-table tr[data-state='queued'] td:nth-child(3)")
    assert places.all_inner_texts() == ["First waiting", "Second waiting"]

    page.locator("#queue-choice label:has-text('Second waiting')").click()
    page.locator("#queue-up").click()
    page.wait_for_function(
        "document.querySelector(\"#queue-table tr[data-state='queued'] td:nth-child(3)\")"
        ".innerText === 'Second waiting'"
    )
    page.locator("#queue-cancel").click()
    page.wait_for_selector(row(page, "Second waiting", "cancelled"))
    screenshot(page, "jobs-queue-panel")

    page.locator("#cancel").click()  # the running one
    page.wait_for_selector(row(page, "A slow sunrise", "cancelled"))
    page.wait_for_selector("#run-status :text('Cancelled: no video was saved.')")
    page.wait_for_selector(in_gallery(page, "First waiting"), timeout=240_000)
    assert not list(studio.output_dir.glob("*slow-sunrise*"))


NOTIFICATION_STUB = """
window.__notifications = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ title, ...options }); }
};
Object.defineProperty(document, "hidden", { get: () => window.__hidden === true });
"""


def test_a_job_that_ends_in_a_background_tab_notifies(context, studio):
    context.add_init_script(NOTIFICATION_STUB)
    page = open_page(context, studio)
    generate(page, "A hummingbird at a flower", 2)
    page.evaluate("window.__hidden = true")  # the person switched tabs
    page.wait_for_function("window.__notifications.length > 0", timeout=240_000)
    note = page.evaluate("window.__notifications[0]")
    assert note["title"] == "Allegro Studio: video ready"
    assert note["body"] == "A hummingbird at a flower"
    assert "Video ready" in page.title()
    page.evaluate("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    assert page.title() == "Allegro Studio"
