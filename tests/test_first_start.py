"""The page's "First time here?" panel (ui/first_start.py)."""

from __future__ import annotations

import gradio as gr

from ui.config import parse_config
from ui.first_start import DRAFT_PRESET, first_start_markdown, first_start_panel, first_time


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


def test_panel_is_open_the_first_time_and_folded_after(tmp_path):
    config = parse_config(["--output-dir", str(tmp_path)])
    with gr.Blocks():
        assert first_start_panel(config).open
    (tmp_path / "a.mp4").write_bytes(b"")
    with gr.Blocks():
        panel = first_start_panel(config)
    assert not panel.open and panel.label == "First time here?"
