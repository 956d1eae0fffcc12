"""Text the page shows while a video is made and once it is done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allegro.events import ProgressEvent, Stage
from allegro.params import summary_parts
from allegro.settings import VideoSettings
from ui.estimates import format_duration


def progress_description(event: ProgressEvent) -> str:
    """One line for the progress bar: stage, step count, elapsed time and ETA."""
    parts = [event.message or event.stage.value.capitalize()]
    if event.stage == Stage.DOWNLOADING and event.total:
        parts = [f"Downloading weights: {event.step / 1e9:.1f} of {event.total / 1e9:.1f} GB"]
    parts.append(f"{format_duration(event.elapsed)} elapsed")
    if event.eta is not None and event.stage != Stage.DONE:
        parts.append(f"about {format_duration(event.eta)} left")
    return " · ".join(parts)


def result_markdown(settings: Mapping[str, Any], seconds: float, file_name: str) -> str:
    """Seed used, time taken and what was made, for the result panel."""
    record = VideoSettings.from_dict(settings)
    line = (
        f"**Seed {record.seed}** · made in {format_duration(seconds)} · "
        f"{record.output_frames} frames at {record.width}x{record.height}, {record.fps:g} fps · "
        f"`{file_name}`"
    )
    if record.step_cache:
        from allegro.step_cache import StepCacheStats

        line += f"\n\n{StepCacheStats.summary_of(record.step_cache).capitalize()}."
    return line


def entry_markdown(settings: Mapping[str, Any], file_name: str) -> str:
    """Summary of a gallery video."""
    record = VideoSettings.from_dict(settings)
    seconds = record.run_seconds
    made = f" · made in {format_duration(seconds)}" if seconds is not None else ""
    parts = summary_parts(record.to_dict())  # as the declaration says (allegro.params)
    return f"**{record.prompt}**\n\n{' · '.join(parts)}{made} · `{file_name}`"
