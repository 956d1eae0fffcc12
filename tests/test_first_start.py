"""The page's "First time here?" panel (ui/first_start.py)."""

from __future__ import annotations

import gradio as gr
import pytest

from tests import test_browser
from tests.studio_server import start_studio
from ui.config import parse_config
from ui.first_start import (
    DRAFT_PRESET,
    draft_button_sets,
    draft_values,
    first_start_markdown,
    first_start_panel,
    first_time,
)
from ui.presets import frames_for, length_choices, size_choices, size_for

browser = test_browser.browser  # the browser tests' Chromium fixture (or a skip outside CI)


def test_open_until_the_first_video_is_saved(tmp_path):
    folder = tmp_path / "outputs"
    assert first_time(folder)  # not made yet
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert first_time(folder)
    (folder / "a.mp4").write_bytes(b"")
    assert not first_time(folder)


def test_says_where_videos_go_how_long_and_the_draft_model(tmp_path):
    text = first_start_markdown(tmp_path)
    assert f"`{tmp_path}`" in text
    assert "about 25 GB" in text and "under Generate" in text
    assert f"./run.sh --model {DRAFT_PRESET}" in text and f"run.bat --model {DRAFT_PRESET}" in text
    assert "logs/launcher.log" in text


def test_the_draft_flag_is_one_the_app_takes(tmp_path):
    config = parse_config(["--model", DRAFT_PRESET, "--output-dir", str(tmp_path)])
    assert config.model == DRAFT_PRESET


def panel_of(config) -> gr.Accordion:
    with gr.Blocks() as demo:
        first_start_panel(config)
    return next(block for block in demo.blocks.values() if isinstance(block, gr.Accordion))


def test_panel_is_open_the_first_time_and_folded_after(tmp_path):
    config = parse_config(["--output-dir", str(tmp_path)])
    assert panel_of(config).open
    (tmp_path / "a.mp4").write_bytes(b"")
    panel = panel_of(config)
    assert not panel.open and panel.label == "First time here?"


def test_draft_button_picks_the_360p_presets_shape_among_the_pages_choices(tmp_path):
    length_value, size_value = draft_values()
    assert length_value in [value for _label, value in length_choices(None)]
    assert size_value in [value for _label, value in size_choices(None)]
    assert (frames_for(length_value), *size_for(size_value)) == (40, 368, 640)
    config = parse_config(["--output-dir", str(tmp_path)])
    with gr.Blocks() as demo:
        draft = first_start_panel(config)
        length = gr.Dropdown(length_choices(None))
        size = gr.Dropdown(size_choices(None))
        draft_button_sets(draft, length, size)
    (event,) = demo.fns.values()
    assert event.fn is draft_values
    assert [block._id for block in event.outputs] == [length._id, size._id]


@pytest.mark.browser
def test_the_page_shows_the_panel_and_its_draft_button_sets_the_shape(
    browser, tiny_model, tmp_path
):
    server = start_studio(tiny_model, tmp_path / "outputs", tmp_path / "app.log")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server.url)
        page.get_by_text("First time here?").wait_for()
        page.get_by_text(str(tmp_path / "outputs")).wait_for()  # open: no video yet
        page.locator("#first-start-draft").click()
        page.wait_for_function(
            "document.querySelector('#length input').value.startsWith('40 frames')"
        )
        assert page.locator("#size input").input_value() == "360p landscape (640x368)"
    finally:
        context.close()
        server.stop()
