"""Past generations, read back from the output folder's JSON sidecars.

Each video is ``NAME.mp4`` with ``NAME.json`` (its settings) and ``NAME.jpg`` (its poster),
written by the engine. Nothing is cached in memory: the folder is the gallery, so it
survives restarts and other processes writing to it. Entries are addressed by NAME only,
every path is checked to stay inside the output folder, and symbolic links are never
followed. The owner label holds a one-way tag (see ``ui.identity``), never a credential.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from allegro.errors import AllegroError

OWNER_LABEL = "owner"
PARTS = (".mp4", ".json", ".jpg")  # the video first: without it an entry no longer lists
# The input images of an image-to-video generation, saved beside it by the engine
# (allegro/ti2v/inputs.py, ConditionInputs.image_paths), keyed as in its settings.
INPUT_IMAGES = {"first_image": ".first.png", "last_image": ".last.png"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Far above the names this app gives (a time stamp, the seed, a few words of the prompt),
# and below the file systems' 255 bytes with the longest suffix (".first.png").
MAX_NAME_CHARS = 200


class GalleryError(AllegroError):
    """A gallery action that cannot be done (missing video, not yours, bad name)."""


@dataclass(frozen=True)
class GalleryEntry:
    name: str  # the shared stem of NAME.mp4 / NAME.json / NAME.jpg
    video: Path
    poster: Path | None
    settings: dict[str, Any]
    created: datetime

    @property
    def owner(self) -> str | None:
        labels = self.settings.get("labels")
        return labels.get(OWNER_LABEL) if isinstance(labels, dict) else None

    @property
    def caption(self) -> str:
        prompt = " ".join(str(self.settings.get("prompt", "")).split())
        short = prompt if len(prompt) <= 60 else prompt[:57].rstrip() + "…"
        return f"{short} · seed {self.settings.get('seed', '?')}"

    @property
    def input_images(self) -> dict[str, Path]:
        """The input images saved beside the video that its settings name, by setting (paths
        derived from the entry's own name, never from the settings' text)."""
        images = {}
        for key, suffix in INPUT_IMAGES.items():
            path = self.video.with_name(self.name + suffix)
            if self.settings.get(key) and _is_plain_file(path):
                images[key] = path
        return images

    @property
    def thumbnail(self) -> Path:
        return self.poster if self.poster is not None else self.video


def _is_plain_file(path: Path) -> bool:
    """A regular file that is not a symbolic link (a link could point anywhere)."""
    return not path.is_symlink() and path.is_file()


def _created(settings: dict[str, Any], video: Path) -> datetime:
    try:
        created = datetime.fromisoformat(str(settings["created"]))
    except (KeyError, ValueError):
        return datetime.fromtimestamp(video.stat().st_mtime, timezone.utc)
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def _read_entry(sidecar: Path) -> GalleryEntry | None:
    """The entry for ``NAME.json``, or None if it is not a complete, readable generation."""
    video = sidecar.with_suffix(".mp4")
    if not _NAME.match(sidecar.stem) or not _is_plain_file(sidecar) or not _is_plain_file(video):
        return None
    try:
        settings = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict) or "prompt" not in settings:
        return None
    poster = sidecar.with_suffix(".jpg")
    try:
        created = _created(settings, video)
    except OSError:  # deleted between the listing and now
        return None
    return GalleryEntry(
        name=sidecar.stem,
        video=video,
        poster=poster if _is_plain_file(poster) else None,
        settings=settings,
        created=created,
    )


def visible_to(entry: GalleryEntry, owner: str | None) -> bool:
    """``owner=None`` means the gallery is shared by everyone who can open the page."""
    return owner is None or entry.owner == owner


def list_entries(output_dir: Path, owner: str | None = None) -> list[GalleryEntry]:
    """Generations in ``output_dir`` that ``owner`` may see, newest first."""
    if not output_dir.is_dir():
        return []
    entries = [
        entry
        for sidecar in output_dir.glob("*.json")
        if (entry := _read_entry(sidecar)) is not None and visible_to(entry, owner)
    ]
    return sorted(entries, key=lambda entry: (entry.created, entry.name), reverse=True)


def entry_path(output_dir: Path, name: str, suffix: str) -> Path:
    """``output_dir/name+suffix``, refusing any name that could leave the folder."""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise GalleryError(
            f"That is not the name of a video in the gallery (names are at most "
            f"{MAX_NAME_CHARS} characters)."
        )
    if not _NAME.match(name) or ".." in name:
        raise GalleryError(f"{name!r} is not the name of a video in the gallery.")
    root = output_dir.resolve()
    path = root / f"{name}{suffix}"
    if path.is_symlink() or path.resolve().parent != root:
        raise GalleryError(f"{name!r} is not inside the output folder.")
    return path


def find_entry(output_dir: Path, name: str, owner: str | None) -> GalleryEntry:
    entry = _read_entry(entry_path(output_dir, name, ".json"))
    if entry is None or not visible_to(entry, owner):
        raise GalleryError("That video is not in your gallery (it may have been deleted).")
    return entry


def delete_entry(output_dir: Path, name: str, owner: str | None) -> GalleryEntry:
    """Remove a generation's MP4, JSON, poster and input images; only its owner may (unless
    shared)."""
    entry = find_entry(output_dir, name, owner)
    # The MP4 first: without it the entry no longer lists, even if a later unlink fails.
    for suffix in (*PARTS, *INPUT_IMAGES.values()):
        entry_path(output_dir, name, suffix).unlink(missing_ok=True)
    return entry


def images_named(output_dir: Path, settings: dict[str, Any], owner: str | None) -> dict[str, Path]:
    """The input images a video's settings name (``NAME.first.png``...), as files of the
    gallery entry NAME that ``owner`` may see; GalleryError for a name that is not one, or
    an image that is not in their gallery (any text may be in a dropped video's settings)."""
    images = {}
    for key, suffix in INPUT_IMAGES.items():
        value = settings.get(key)
        if not value:
            continue
        if not isinstance(value, str) or not value.endswith(suffix):
            raise GalleryError(f"The video's {key} setting is not the name of an input image.")
        entry = find_entry(output_dir, value[: -len(suffix)], owner)
        if key not in entry.input_images:
            raise GalleryError(f"{value} is no longer in your gallery.")
        images[key] = entry.input_images[key]
    return images


def history_record(
    entry: GalleryEntry,
    video_url: str,
    poster_url: str | None,
    image_urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One generation as the /history API reports it (URLs to copies only its owner got;
    ``image_urls``: its input images', by setting name)."""
    settings = entry.settings
    return {
        "name": entry.name,
        "created": entry.created.isoformat(timespec="seconds"),
        "prompt": settings.get("prompt"),
        "seed": settings.get("seed"),
        "video": entry.video.name,
        "video_url": video_url,
        "poster_url": poster_url,
        "image_urls": image_urls or {},
        "settings": settings,
    }
