"""Improve prompt in a real headless Chromium (issue 24), with a tiny random Qwen2 chat
model as the prompt model (its text is nonsense; the page's plumbing is real): the rewrite
fills the box, Undo brings back the original, a video made from a rewrite records both
prompts, and with --prompt-model none there is no button."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.prompt_model import make_tiny_prompt_model
from tests.studio_server import StudioServer, start_studio
from tests.test_browser import DESKTOP, browser, set_steps  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("studio-prompt-help")
    prompt_model = make_tiny_prompt_model(workdir / "tiny-prompt-model")
    server = start_studio(
        tiny_model,
        workdir / "outputs",
        workdir / "app.log",
        "--prompt-model",
        str(prompt_model),
        "--prompt-timeout",
        "300",
    )
    yield server
    server.stop()


def open_page(browser, url: str):  # noqa: F811 - the fixture's value
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.wait_for_selector("#generate:not([disabled])")
    return context, page


@pytest.fixture
def page(browser, studio):  # noqa: F811
    context, page = open_page(browser, studio.url)
    yield page
    context.close()


def box_changes_from(page, text: str) -> str:
    page.wait_for_function(
        "t => { const v = document.querySelector('#prompt textarea').value;"
        " return v.trim() && v !== t; }",
        arg=text,
    )
    return page.locator("#prompt textarea").input_value()


def settings_of_new_video(page, studio: StudioServer, before: set[str]) -> dict:
    page.wait_for_selector("#result-video video[src]")
    (name,) = studio.videos() - before
    return json.loads((studio.output_dir / name).with_suffix(".json").read_text())


def test_improve_fills_the_box_and_undo_brings_back_the_original(page):
    box = page.locator("#prompt textarea")
    box.fill("a cat on a roof")
    assert not page.locator("#undo-prompt").is_visible()
    page.locator("#improve-prompt").click()
    improved = box_changes_from(page, "a cat on a roof")
    assert len(improved.split()) <= 120
    page.locator("#undo-prompt").click()
    page.wait_for_function(
        "() => document.querySelector('#prompt textarea').value === 'a cat on a roof'"
    )
    page.wait_for_selector("#undo-prompt", state="hidden")


def test_a_video_from_an_improved_prompt_records_both_prompts(page, studio):
    before = studio.videos()
    page.locator("#prompt textarea").fill("a boat at dawn")
    page.locator("#improve-prompt").click()
    improved = box_changes_from(page, "a boat at dawn")
    set_steps(page, 2)
    page.locator("#generate").click()
    settings = settings_of_new_video(page, studio, before)
    assert settings["prompt"] == improved
    assert settings["original_prompt"] == "a boat at dawn"


def test_rewrite_automatically_before_queueing(page, studio):
    before = studio.videos()
    page.locator("#auto-improve input").check()
    page.locator("#prompt textarea").fill("a dog in the rain")
    set_steps(page, 2)
    page.locator("#generate").click()
    improved = box_changes_from(page, "a dog in the rain")
    settings = settings_of_new_video(page, studio, before)
    assert settings["prompt"] == improved
    assert settings["original_prompt"] == "a dog in the rain"


def test_prompt_model_none_shows_no_button(browser, tiny_model, tmp_path):  # noqa: F811
    server = start_studio(
        tiny_model, tmp_path / "outputs", tmp_path / "app.log", "--prompt-model", "none"
    )
    try:
        context, page = open_page(browser, server.url)
        assert page.locator("#prompt textarea").is_visible()
        assert page.locator("#improve-prompt").count() == 0
        assert page.locator("#auto-improve").count() == 0
        context.close()
    finally:
        server.stop()
