"""MP4 files that carry their own settings.

Videos are H.264 in yuv420p (plays in every browser), written under a temporary name and
renamed into place, so a crash, a cancel or a full disk never leaves a half-written file.
The settings travel in the MP4's ``comment`` tag as JSON (without the server's labels) and in
a JSON file beside it; a poster image beside it serves galleries.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from allegro.errors import AllegroError
from allegro.interpolation.base import PixelFormat
from allegro.video_colour import (
    VideoColour,
    frame_to_i420,
    i420_colour,
    i420_frame,
    rgb_to_i420_frame,
    tag,
)

SETTINGS_KEY = "allegro_studio"
# The same frames make the same stream, on any machine, at any load. x264's frame threads
# with its macroblock tree varied from one write to the next in one process (up to 14
# different streams in 40 writes of the tiny model's noise, decoding up to 37 levels apart);
# without the tree 40 writes gave one stream, at 3 threads and at 8. The stream also depends
# on x264's thread count, which by default follows the machine's cores: so a fixed count.
# The tree's cost: about 9 % larger files at CRF 17 for +0.3 dB (bench/saving.py).
X264_THREADS = {"threads": "8", "x264-params": "mbtree=0"}
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
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def _encode_mp4(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float,
    comment: str,
    title: str,
    pixel_format: PixelFormat = "rgb24",
    colour: VideoColour | None = None,
) -> None:
    """H.264 of (H, W, 3) RGB frames, or of (3H/2, W) I420 ones (``pixel_format``
    ``"yuv420p"``), which go to the encoder as they are: no conversion, bit for bit.
    ``colour``: what the I420 frames mean (RGB ones are converted to it), written into the
    stream's tags; None leaves them untagged."""
    import av

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    height, width = _frame_size(first, pixel_format)
    with av.open(str(path), mode="w", format="mp4") as container:
        container.metadata["comment"] = comment
        container.metadata["title"] = title
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        if colour is not None:
            tag(stream.codec_context, colour)
        stream.pix_fmt = "yuv420p"
        # CRF 17 is visually lossless; "faster" keeps a 720p save to a couple of seconds.
        stream.options = {"crf": "17", "preset": "faster", "movflags": "+faststart", **X264_THREADS}
        stream.thread_type = "FRAME"  # libx264's frame threads, counted by X264_THREADS
        for frame in itertools.chain([first], frames):
            for packet in stream.encode(_video_frame(frame, pixel_format, colour)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _video_frame(frame: np.ndarray, pixel_format: PixelFormat, colour: VideoColour | None) -> Any:
    """The PyAV frame the encoder gets: I420 as it is, RGB converted once to ``colour``
    (without one, PyAV's encoder converts it, untagged)."""
    import av

    if pixel_format == "yuv420p":
        return i420_frame(frame, colour)
    if colour is None:
        return av.VideoFrame.from_ndarray(frame, format=pixel_format)
    return rgb_to_i420_frame(frame, colour)


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
    poster = frames[len(frames) // 2 if poster_frame is None else poster_frame]

    def encode(temp: Path, comment: str, title: str) -> None:
        _encode_mp4(temp, frames, fps, comment, title)

    return _write_with_settings(path, settings, poster, encode)


def _write_with_settings(
    path: Path,
    settings: Mapping[str, Any],
    poster: np.ndarray,
    write_mp4: Callable[[Path, str, str], None],
) -> Path:
    """JSON, poster, then ``write_mp4(temp, comment, title)`` renamed into place last; on any
    failure nothing of the three remains."""
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
            save_poster(poster, temp)
        written.append(poster_path)
        with atomic_path(path) as temp:
            write_mp4(temp, text, str(settings.get("prompt", ""))[:200])
    except BaseException:
        for leftover in written:
            leftover.unlink(missing_ok=True)
        raise
    return path


_DONE = object()  # ends a frame queue


class PipelinedVideoWriter:
    """Encodes frames to H.264 on a background thread while the caller makes the next ones.

    ``put`` frames in order, then ``finish`` with the settings, or ``abort``. MP4 metadata
    is fixed when the file's header is written, before the first frame, but a pipelined
    job's settings are complete only after its last frame; so the stream is encoded into
    a scratch file and ``finish`` copies it (stream copy, no re-encoding: milliseconds)
    into the final file with the settings, the way ``write_video`` leaves it.
    ``poster_frame``: the index of the frame kept for the poster image. ``pixel_format``:
    the frames' layout, (H, W, 3) RGB or (3H/2, W) I420 (``"yuv420p"``, encoded as is).
    ``colour``: what the video's YUV means, written into its tags (see ``_encode_mp4``).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        poster_frame: int = 0,
        pixel_format: PixelFormat = "rgb24",
        colour: VideoColour | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(
            prefix=f".{self.path.stem}.",
            suffix=".partial.encoding.mp4",  # a crash leftover: removed at start
            dir=self.path.parent,
        )
        os.close(fd)
        self._scratch = Path(scratch)
        self._frames: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._count = 0
        self._poster_frame = poster_frame
        self._poster: np.ndarray | None = None
        self._pixel_format = pixel_format
        self._colour = colour
        self._thread = threading.Thread(target=self._encode, args=(fps,), daemon=True)
        self._thread.start()

    def _encode(self, fps: float) -> None:
        ended = False

        def frames() -> Iterator[np.ndarray]:
            nonlocal ended
            while (frame := self._frames.get()) is not _DONE:
                yield frame
            ended = True

        try:
            _encode_mp4(self._scratch, frames(), fps, "", "", self._pixel_format, self._colour)
        except BaseException as error:  # handed to the caller in put / finish
            self._error = error
            while not ended and self._frames.get() is not _DONE:  # unblock the producer
                pass

    def put(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        height, width = _frame_size(frame, self._pixel_format)
        if height % 2 or width % 2:
            raise ValueError("yuv420p needs even frame sizes")
        if self._count == self._poster_frame or self._poster is None:
            self._poster = frame.copy()
        self._count += 1
        self._frames.put(frame)

    def _stop(self) -> None:
        self._frames.put(_DONE)
        self._thread.join()

    def finish(self, settings: Mapping[str, Any]) -> Path:
        """Wait for the encoder and write ``X.mp4``, ``X.json`` and ``X.jpg`` (see
        ``write_video``); returns the MP4 path."""
        try:
            self._stop()
            if self._error is not None:
                raise self._error
            if self._poster is None:
                raise ValueError("no frames were written")
            poster = self._poster
            if self._pixel_format == "yuv420p":
                poster = i420_to_rgb(poster, self._colour)

            def copy(temp: Path, comment: str, title: str) -> None:
                _copy_with_metadata(self._scratch, temp, comment, title)

            return _write_with_settings(self.path, settings, poster, copy)
        finally:
            self._scratch.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop encoding and remove everything written so far (nothing after ``finish``)."""
        if self._thread.is_alive():
            self._stop()
        self._scratch.unlink(missing_ok=True)

    def __enter__(self) -> PipelinedVideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


def _frame_size(frame: np.ndarray, pixel_format: PixelFormat) -> tuple[int, int]:
    """(height, width) of one uint8 frame in ``pixel_format``; ValueError if it is not one."""
    if pixel_format == "yuv420p":
        if frame.ndim != 2 or frame.shape[0] % 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"expected (3H/2, W) uint8 I420 frames, got {frame.shape} {frame.dtype}"
            )
        return frame.shape[0] * 2 // 3, frame.shape[1]
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 frames, got {frame.shape} {frame.dtype}")
    return frame.shape[0], frame.shape[1]


def i420_to_rgb(frame: np.ndarray, colour: VideoColour | None = None) -> np.ndarray:
    """A (3H/2, W) I420 frame as (H, W, 3) RGB, converted as the decoder would (with
    ``colour``'s matrix and range; None: untagged)."""
    return i420_frame(frame, colour).to_ndarray(format="rgb24")


def _copy_with_metadata(source: Path, target: Path, comment: str, title: str) -> None:
    """Copy the video stream of ``source`` into a new MP4 with this comment and title."""
    import av

    with (
        av.open(str(source)) as reader,
        av.open(str(target), mode="w", format="mp4", options={"movflags": "+faststart"}) as writer,
    ):
        writer.metadata["comment"] = comment
        writer.metadata["title"] = title
        video = reader.streams.video[0]
        stream = writer.add_stream_from_template(video)
        for packet in reader.demux(video):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = stream
            writer.mux(packet)


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


@dataclass
class FrameStream:
    """A video being decoded on a background thread: iterate for its frames, uint8 in the
    ``pixel_format`` asked for. ``frame_count`` is what the file's header says (0 when it
    does not say). ``colour``: what the I420 frames mean (see ``allegro.video_colour``)."""

    fps: float
    frame_count: int
    width: int
    height: int
    frames: Iterator[np.ndarray]
    close: Callable[[], None]
    colour: VideoColour = field(default_factory=VideoColour)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def stream_frames(
    path: str | Path, prefetch: int = 8, pixel_format: PixelFormat = "rgb24"
) -> FrameStream:
    """Open a video and decode it ahead of the reader, up to ``prefetch`` frames: decoding
    runs while the caller works on earlier frames. Frames are (H, W, 3) RGB, or (3H/2, W)
    I420 for ``"yuv420p"`` (only for even sizes): an 8-bit 4:2:0 video's own planes,
    untouched, any other video converted once with its own matrix and range (the stream's
    ``colour`` says what they mean).
    Unreadable files raise AllegroError, on opening or while iterating."""
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise AllegroError(f"{path.name} is not a readable video ({error}).") from None
    if not container.streams.video:
        container.close()
        raise AllegroError(f"{path.name} has no video stream.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    colour = i420_colour(stream.codec_context)
    ready: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def decode() -> None:
        try:
            with container:
                for frame in container.decode(stream):
                    if stop.is_set():
                        return
                    if pixel_format == "yuv420p":
                        ready.put(frame_to_i420(frame, colour))
                    else:
                        ready.put(frame.to_ndarray(format=pixel_format))
            ready.put(_DONE)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            ready.put(AllegroError(f"{path.name} is not a readable video ({error})."))

    def frames() -> Iterator[np.ndarray]:
        worker = threading.Thread(target=decode, daemon=True)
        worker.start()
        try:
            while (item := ready.get()) is not _DONE:
                if isinstance(item, AllegroError):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # drain so a decoder blocked on a full queue sees stop
                with contextlib.suppress(queue.Empty):
                    ready.get(timeout=0.05)
            worker.join()

    iterator = frames()

    def close() -> None:
        iterator.close()  # stops a running decoder
        container.close()

    context = stream.codec_context
    return FrameStream(
        fps, int(stream.frames or 0), context.width, context.height, iterator, close, colour
    )


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
