"""MP4 files that carry their own settings.

Videos are H.264 in yuv420p (plays in every browser), written under a temporary name and
renamed into place, so a crash, a cancel or a full disk never leaves a half-written file.
The settings travel in the MP4's ``comment`` tag as JSON (without the server's labels) and in
a JSON file beside it; a poster image beside it serves galleries.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from allegro.errors import AllegroError

SETTINGS_KEY = "allegro_studio"
RESERVED_SUFFIX = ".reserved"  # an output name taken by a job still running (see reserve_path)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent
    )
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        _fsync(temp)  # the data on disk before the name: a crash never leaves a torn file
        os.replace(temp, final)
        _fsync(final.parent)
    finally:
        temp.unlink(missing_ok=True)


def _reservation(path: Path) -> Path:
    return path.with_name(f".{path.name}{RESERVED_SUFFIX}")


def reserve_path(path: Path) -> bool:
    """Take the name ``path`` for a video still to be made, atomically (``O_EXCL``): False
    if the video or its settings exist, or another worker holds the name."""
    if path.exists() or path.with_suffix(".json").exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(_reservation(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def release_path(path: Path) -> None:
    """Give back a name taken with reserve_path (once its video is saved, or not made)."""
    _reservation(path).unlink(missing_ok=True)


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete what a killed process can leave in ``directory``: a save cut short
    (``.NAME.partial.*``), a reserved name never used (``.NAME.mp4.reserved``), and sidecars,
    posters or input images whose video never arrived. Returns what was removed. Only for a
    folder no other process is writing to at the moment (called once at start)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        hidden = path.name.startswith(".")
        temporary = hidden and (".partial." in path.name or path.name.endswith(RESERVED_SUFFIX))
        if not (temporary or (not hidden and _is_orphan(path))):
            continue
        if path.is_symlink() or path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _is_orphan(path: Path) -> bool:
    """``NAME.json``, ``NAME.jpg``, ``NAME.first.png`` or ``NAME.last.png`` with no
    ``NAME.mp4`` (a link does not count as the video)."""
    if path.suffix in (".json", ".jpg"):
        video = path.with_suffix(".mp4")
    elif path.suffix == ".png" and Path(path.stem).suffix in (".first", ".last"):
        video = path.with_name(f"{Path(path.stem).stem}.mp4")
    else:
        return False
    return video.is_symlink() or not video.is_file()


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)


def _encode_mp4(path: Path, frames: np.ndarray, fps: float, comment: str, title: str) -> None:
    import av

    _count, height, width, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        container.metadata["comment"] = comment
        container.metadata["title"] = title
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # CRF 17 is visually lossless; "faster" keeps a 720p save to a couple of seconds.
        stream.options = {"crf": "17", "preset": "faster", "movflags": "+faststart"}
        stream.thread_type = "AUTO"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    settings: Mapping[str, Any],
    poster_frame: int | None = None,
) -> Path:
    """Write ``frames`` ((N, H, W, 3) uint8 RGB) and its settings; returns the MP4 path.

    Writes ``X.mp4``, ``X.json`` and ``X.jpg``; each appears only complete. The MP4 is
    renamed into place last, so a gallery that lists MP4s never sees one without its JSON."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError("yuv420p needs even frame sizes")
    # Labels (e.g. the owner tag) are the server's bookkeeping: they stay in the sidecar,
    # never in a file that is handed to people.
    portable = {key: value for key, value in settings.items() if key != "labels"}
    text = json.dumps({SETTINGS_KEY: portable}, ensure_ascii=False)
    json_path, poster_path = path.with_suffix(".json"), path.with_suffix(".jpg")
    written: list[Path] = []
    try:
        with atomic_path(json_path) as temp:
            temp.write_text(json.dumps(dict(settings), indent=2, ensure_ascii=False))
        written.append(json_path)
        with atomic_path(poster_path) as temp:
            save_poster(frames[len(frames) // 2 if poster_frame is None else poster_frame], temp)
        written.append(poster_path)
        with atomic_path(path) as temp:
            _encode_mp4(temp, frames, fps, text, str(settings.get("prompt", ""))[:200])
    except BaseException:
        for leftover in written:
            leftover.unlink(missing_ok=True)
        raise
    return path


def save_poster(frame: np.ndarray, path: Path, max_side: int = 640) -> None:
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    image.save(path, format="JPEG", quality=88)


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings embedded in an MP4 made by this app (AllegroError if there are none)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            comment = container.metadata.get("comment", "")
    except (av.FFmpegError, OSError) as error:
        raise AllegroError(f"{path.name} is not a readable video ({error}).") from None
    try:
        settings = json.loads(comment)[SETTINGS_KEY]
    except (ValueError, KeyError, TypeError):
        raise AllegroError(
            f"{path.name} carries no Allegro Studio settings (it was not made by this app)."
        ) from None
    if not isinstance(settings, dict):
        raise AllegroError(f"{path.name} has malformed Allegro Studio settings.")
    return settings


def read_frames(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as (N, H, W, 3) uint8 RGB, and its frame rate."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AllegroError(f"{path.name} has no video stream.")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise AllegroError(f"{path.name} is not a readable video ({error}).") from None
    if not frames:
        raise AllegroError(f"{path.name} contains no frames.")
    return np.stack(frames), fps
