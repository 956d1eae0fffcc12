"""Past generations, read back from the output folder's JSON sidecars.

Each video is ``NAME.mp4`` with ``NAME.json`` (its settings) and ``NAME.jpg`` (its poster),
written by the engine. Nothing is cached in memory: the folder is the gallery, so it
survives restarts and other processes writing to it. Entries are addressed by NAME only,
and every path is checked to stay inside the output folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from allegro.errors import AllegroError

OWNER_LABEL = "owner"
# A browser's owner id is a uuid4 hex; API callers may choose theirs (see api_owner_id).
_OWNER_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    def thumbnail(self) -> Path:
        return self.poster if self.poster is not None else self.video


def new_owner_id() -> str:
    return uuid.uuid4().hex


def is_owner_id(value: object) -> bool:
    return isinstance(value, str) and bool(_OWNER_ID.match(value))


def api_owner_id(header_value: str | None, client_host: str | None) -> str:
    """Who an API caller is: the X-Allegro-Owner header when it holds a usable id, else an
    id derived from the caller's address (everyone behind one address shares it)."""
    if header_value and is_owner_id(header_value.strip()):
        return header_value.strip()
    digest = hashlib.sha256((client_host or "unknown").encode()).hexdigest()[:24]
    return f"ip-{digest}"


def _created(settings: dict[str, Any], video: Path) -> datetime:
    try:
        created = datetime.fromisoformat(str(settings["created"]))
    except (KeyError, ValueError):
        return datetime.fromtimestamp(video.stat().st_mtime, timezone.utc)
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def _read_entry(sidecar: Path) -> GalleryEntry | None:
    """The entry for ``NAME.json``, or None if it is not a complete, readable generation."""
    video = sidecar.with_suffix(".mp4")
    if not _NAME.match(sidecar.stem) or not video.is_file():
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
        poster=poster if poster.is_file() else None,
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
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise GalleryError(f"{name!r} is not the name of a video in the gallery.")
    root = output_dir.resolve()
    path = root / f"{name}{suffix}"
    if path.resolve().parent != root:  # e.g. a symbolic link pointing elsewhere
        raise GalleryError(f"{name!r} is not inside the output folder.")
    return path


def find_entry(output_dir: Path, name: str, owner: str | None) -> GalleryEntry:
    entry = _read_entry(entry_path(output_dir, name, ".json"))
    if entry is None or not visible_to(entry, owner):
        raise GalleryError("That video is not in your gallery (it may have been deleted).")
    return entry


def delete_entry(output_dir: Path, name: str, owner: str | None) -> GalleryEntry:
    """Remove a generation's MP4, JSON and poster; only its owner may (unless shared)."""
    entry = find_entry(output_dir, name, owner)
    # The MP4 first: without it the entry no longer lists, even if a later unlink fails.
    for suffix in (".mp4", ".json", ".jpg"):
        entry_path(output_dir, name, suffix).unlink(missing_ok=True)
    return entry


def file_url(path: Path) -> str:
    """The server-relative URL Gradio serves an allowed file under."""
    return "/gradio_api/file=" + urllib.parse.quote(str(path.resolve()))


def history_record(entry: GalleryEntry) -> dict[str, Any]:
    """One generation as the /history API reports it."""
    settings = entry.settings
    return {
        "name": entry.name,
        "created": entry.created.isoformat(timespec="seconds"),
        "prompt": settings.get("prompt"),
        "seed": settings.get("seed"),
        "video": entry.video.name,
        "video_url": file_url(entry.video),
        "poster_url": file_url(entry.poster) if entry.poster else None,
        "settings": settings,
    }
