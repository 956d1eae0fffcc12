"""Text the page shows while a video is made and once it is done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allegro.events import ProgressEvent, Stage
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
    size = f"{settings.get('width')}x{settings.get('height')}"
    frames = settings.get("frames")
    interpolation = settings.get("interpolation")
    fps = settings.get("fps")
    if isinstance(interpolation, Mapping):
        frames = interpolation.get("frames", frames)
    line = (
        f"**Seed {settings.get('seed')}** · made in {format_duration(seconds)} · "
        f"{frames} frames at {size}, {fps:g} fps · `{file_name}`"
    )
    step_cache = settings.get("step_cache")
    if isinstance(step_cache, Mapping):
        from allegro.step_cache import StepCacheStats

        line += f"\n\n{StepCacheStats.summary_of(step_cache).capitalize()}."
    return line


def entry_markdown(settings: Mapping[str, Any], file_name: str) -> str:
    """Summary of a gallery video."""
    prompt = str(settings.get("prompt", ""))
    seconds = settings.get("run_seconds")
    made = f" · made in {format_duration(float(seconds))}" if seconds is not None else ""
    return (
        f"**{prompt}**\n\nSeed {settings.get('seed')} · {settings.get('steps')} steps · "
        f"guidance {settings.get('guidance_scale')} · {settings.get('frames')} frames at "
        f"{settings.get('width')}x{settings.get('height')}{made} · `{file_name}`"
    )
