"""Condition inputs from files: images for the first and last frame, or the end of an earlier
clip to continue. Every bad file gets a readable InvalidRequestError, before anything is
queued or loaded (PIL and numpy only: no torch needed to check)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allegro.errors import AllegroError, InvalidRequestError
from allegro.request import FPS, GenerationRequest

if TYPE_CHECKING:
    from allegro.ti2v.pipeline import ConditionFrames

MIN_IMAGE_SIDE = 32
MAX_IMAGE_PIXELS = 40_000_000  # a 7700x5200 photo; bigger is a mistake or a decompression bomb
MAX_IMAGE_BYTES = 64 * 1024 * 1024


@contextlib.contextmanager
def _opened_image(path: str | Path, what: str, field: str | None = None) -> Iterator[Any]:
    """The PIL image at ``path``, opened lazily (header only) and refused by its size on disk
    and its pixel count *before* anything is decoded; errors inside the block (a decode) are
    refused with a readable message too. ``field``: the request parameter it came from,
    named by any error."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name = path.name or str(path)
    if not path.is_file():
        raise InvalidRequestError(f"The {what} {name} does not exist.", field=field)
    size = os.path.getsize(path)
    if size > MAX_IMAGE_BYTES:
        raise InvalidRequestError(
            f"The {what} {name} is {size / 2**20:.0f} MB; images up to "
            f"{MAX_IMAGE_BYTES // 2**20} MB are accepted.",
            field=field,
        )
    try:
        with warnings.catch_warnings():
            # Our pixel limit is below PIL's own: its warning would only repeat ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size  # read from the header, before decoding anything
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidRequestError(
                    f"The {what} {name} is {width}x{height} pixels; images up to "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are accepted. Scale it down.",
                    field=field,
                )
            if min(width, height) < MIN_IMAGE_SIDE:
                raise InvalidRequestError(
                    f"The {what} {name} is only {width}x{height} pixels; each side needs at "
                    f"least {MIN_IMAGE_SIDE}.",
                    field=field,
                )
            yield image
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError:  # PIL refuses to open beyond 2x its own limit
        raise InvalidRequestError(
            f"The {what} {name} has too many pixels; images up to "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are accepted. Scale it down.",
            field=field,
        ) from None
    except UnidentifiedImageError:
        raise InvalidRequestError(
            f"The {what} {name} is not an image Allegro Studio can read (PNG, JPEG, WebP, …).",
            field=field,
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidRequestError(
            f"The {what} {name} is damaged and cannot be read ({error}).", field=field
        ) from None


def check_image_file(path: str | Path, what: str = "image", field: str | None = None) -> None:
    """Refuse an image file by its header alone (size on disk, pixel count): nothing is
    decoded, so a small file that would unpack to gigabytes costs nothing."""
    with _opened_image(path, what, field):
        pass


def load_image(path: str | Path, what: str = "image", field: str | None = None) -> np.ndarray:
    """An image file -> (h, w, 3) uint8 RGB (alpha dropped, palettes and greyscale expanded),
    checked as ``check_image_file`` before it is decoded."""
    with _opened_image(path, what, field) as image:
        pixels = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(pixels)


def last_frames(path: str | Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(the whole clip, its last ``count`` frames) of a video to continue."""
    from allegro.video import read_frames

    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(
            f"The video to continue, {path.name}, does not exist.", field="continue_video"
        )
    try:
        frames, fps = read_frames(path)
    except AllegroError as error:
        raise InvalidRequestError(str(error), field="continue_video") from None
    if round(fps) != FPS:
        raise InvalidRequestError(
            f"{path.name} plays at {fps:g} fps; only {FPS} fps clips (not interpolated ones) "
            "can be continued: continue the original and interpolate the result.",
            field="continue_video",
        )
    if len(frames) <= count:
        raise InvalidRequestError(
            f"{path.name} has {len(frames)} frames; continuing it with {count} shared frames "
            "needs more.",
            field="continue_video",
        )
    return frames, frames[-count:]


def check_condition_files(request: GenerationRequest) -> None:
    """Open every condition file once (cheap: headers and a decode), so bad ones are refused
    before the request is queued."""
    if request.first_image:
        load_image(request.first_image, "first image", "first_image")
    if request.last_image:
        load_image(request.last_image, "last image", "last_image")
    if request.continue_video:
        last_frames(request.continue_video, max(int(request.overlap_frames), 1))


def join_clips(earlier: np.ndarray, later: np.ndarray, overlap: int) -> np.ndarray:
    """The earlier clip, then the later one without the ``overlap`` frames they share."""
    if earlier.shape[1:] != later.shape[1:]:
        raise InvalidRequestError(
            f"Cannot join a {earlier.shape[2]}x{earlier.shape[1]} clip with a "
            f"{later.shape[2]}x{later.shape[1]} one."
        )
    return np.concatenate([earlier, later[overlap:]])


def read_condition(request: GenerationRequest) -> ConditionInputs:
    """The images (or the earlier clip) a resolved image-to-video request names."""
    if request.continue_video:
        earlier, shared = last_frames(request.continue_video, request.overlap_frames)
        if earlier.shape[1:3] != (request.height, request.width):
            raise InvalidRequestError(
                f"{Path(request.continue_video).name} is {earlier.shape[2]}x{earlier.shape[1]}; "
                f"a continuation has the same size, not {request.width}x{request.height}."
            )
        return ConditionInputs(
            images=tuple(shared),
            indices=tuple(range(len(shared))),
            earlier=earlier,
            source=Path(request.continue_video),
        )
    images = [load_image(request.first_image, "first image")]  # type: ignore[arg-type]
    if request.last_image:
        images.append(load_image(request.last_image, "last image"))
    return ConditionInputs(images=tuple(images), indices=(0, -1)[: len(images)])


@dataclass(frozen=True)
class ConditionInputs:
    """What an image-to-video request conditions on: RGB uint8 images at frame indices; for a
    continued clip also the earlier clip (its last frames are the images)."""

    images: tuple[np.ndarray, ...]
    indices: tuple[int, ...]
    earlier: np.ndarray | None = None
    source: Path | None = None

    def frames(self, height: int, width: int) -> ConditionFrames:
        from allegro.ti2v.condition import prepare_image
        from allegro.ti2v.pipeline import ConditionFrames

        prepared = [prepare_image(image, height, width) for image in self.images]
        return ConditionFrames.of(prepared, self.indices)

    def joined(self, frames: np.ndarray) -> np.ndarray:
        """The video to save: a continuation is joined to the clip it continues."""
        if self.earlier is None:
            return frames
        return join_clips(self.earlier, frames, len(self.indices))

    def image_paths(self, video: Path) -> dict[str, Path]:
        if self.earlier is not None:
            return {}
        names = ("first_image", "last_image")[: len(self.images)]
        return {name: video.with_name(f"{video.stem}.{name.split('_')[0]}.png") for name in names}

    def settings(self, video: Path, total_frames: int) -> dict[str, Any]:
        """What the settings record: the input images' file names beside the video, or the
        chain of clips this one continues."""
        if self.earlier is None:
            return {name: path.name for name, path in self.image_paths(video).items()}
        assert self.source is not None
        try:
            from allegro.video import read_settings

            chain = list(read_settings(self.source).get("chain") or [])
        except AllegroError:
            chain = []  # a clip from elsewhere starts a new chain
        return {
            "continues": {
                "video": self.source.name,
                "overlap_frames": len(self.indices),
                "source_frames": len(self.earlier),
            },
            "chain": [*chain, self.source.name],
            "frames": total_frames,
            "generated_frames": total_frames - len(self.earlier) + len(self.indices),
        }

    @contextlib.contextmanager
    def saved_beside(self, video: Path) -> Iterator[None]:
        """Write the input images as PNGs beside the video; remove them again if the video
        is not written (nothing half-made is left behind)."""
        from PIL import Image

        from allegro.video import atomic_path

        written: list[Path] = []
        try:
            for image, path in zip(self.images, self.image_paths(video).values(), strict=False):
                with atomic_path(path) as temp:
                    Image.fromarray(image).save(temp, format="PNG")
                written.append(path)
            yield
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
