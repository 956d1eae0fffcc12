"""A short "first time here?" panel under the model status line: what a person who does
not program needs the first time (where videos go, how long one takes, the draft model
for a small card). Open until the first video is saved, folded after."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.config import AppConfig

DRAFT_PRESET = "allegro-40x360p"  # README "Model presets"
SMALL_CARD_GB = 16
# The draft button's Length and Size values (ui/presets.py keys): the 360p preset's shape.
DRAFT_LENGTH, DRAFT_SIZE = "40", "368x640"


def first_time(output_dir: Path) -> bool:
    """No video saved yet (or no output folder)."""
    return not output_dir.is_dir() or next(output_dir.glob("*.mp4"), None) is None


def first_start_markdown(output_dir: Path) -> str:
    return "\n".join(
        (
            f"- **Your videos** are saved in `{output_dir}`, each MP4 with its settings, and "
            "listed in the gallery.",
            "- **The first start** downloads the Allegro weights once (about 25 GB); the line "
            "above shows the progress. Keep this window and the launcher's window open.",
            "- **How long a video takes on this computer** is shown under Generate before you "
            "press it: about 20 minutes on an H100, an hour or more on a consumer card.",
            f"- **A card under {SMALL_CARD_GB} GB?** Press *Quick draft* below for a short, "
            "small video with this model, or start the 360p draft model, much faster: "
            f"`./run.sh --model {DRAFT_PRESET}` (Windows: `run.bat --model {DRAFT_PRESET}`).",
            "- **Something went wrong?** `logs/launcher.log` holds everything the launcher "
            "printed.",
        )
    )


def first_start_panel(config: AppConfig) -> gr.Button:
    """Builds the panel inside the current Blocks (one call from ui/layout.py); returns its
    draft button, for draft_button_sets."""
    with gr.Accordion(
        "First time here?", open=first_time(config.output_dir), elem_id="first-start"
    ):
        gr.Markdown(first_start_markdown(config.output_dir))
        draft = gr.Button(
            "Quick draft: 40 frames at 368x640", size="sm", elem_id="first-start-draft"
        )
    return draft


def draft_values() -> tuple[str, str]:
    return DRAFT_LENGTH, DRAFT_SIZE


def draft_button_sets(draft: gr.Button, length: gr.Dropdown, size: gr.Dropdown) -> None:
    """The draft button picks the short, small shape in Length and Size (page only)."""
    draft.click(draft_values, None, [length, size], queue=False, api_visibility="private")
