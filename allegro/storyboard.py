"""Storyboards: several shots that become one film (pure parts: the format, the script, the
checks, the plan, colour hold and the join; no torch, no Gradio).

A storyboard is shared settings plus an ordered list of shots. A shot either **continues**
the previous one (image to video from its last ``overlap`` decoded frames, as Extend does:
88 frames of which the first ``overlap`` are the previous shot's, so it adds 80) or is a
**cut** (a new shot from text, or from an image). The film is the shots joined: a continued
shot without the frames it shares, a cut whole (or crossfaded over ``crossfade`` frames).

The JSON format (the README has it too)::

    {"settings": {"steps": 2, "seed": 7},
     "shots": [{"prompt": "a ship at dawn"},
               {"prompt": "it sails into the storm", "start": "continue"},
               {"prompt": "a harbour at night", "start": "cut"}]}

``settings`` takes the generation parameters shared by the film (by name: steps,
guidance_scale, frames, height, width, fast_mode, step_cache, interpolate...) and
``colour_hold`` (0..1, default 1) and ``crossfade`` (frames at cuts, default 0). A shot
takes ``prompt``, ``start`` (``cut``/``continue``; the first shot is a cut), ``seed``,
``overlap`` (frames shared with the previous shot, default 8), ``image`` and ``last_image``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from allegro.errors import InvalidRequestError

CUT, CONTINUE = "cut", "continue"
DEFAULT_OVERLAP = 8
DEFAULT_MAX_SHOTS = 20
MAX_PROMPT_CHARS = 4000  # the request's own cap (allegro.request)
MAX_SEED = 2**32 - 1
SCRIPT_CUT = "[cut]"
SHOT_KEYS = {"prompt", "start", "seed", "overlap", "image", "last_image"}
BOARD_SETTINGS = {"colour_hold", "crossfade"}


@dataclass(frozen=True)
class Shot:
    prompt: str
    start: str = CUT
    seed: int | None = None  # None: the film's seed + the shot's index
    overlap: int = DEFAULT_OVERLAP
    image: str | None = None  # a cut from an image: its first frame
    last_image: str | None = None  # the frame the shot should reach


@dataclass(frozen=True)
class Storyboard:
    shots: tuple[Shot, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)  # shared generation settings
    colour_hold: float = 1.0
    crossfade: int = 0

    def to_json(self) -> dict[str, Any]:
        """The board as its JSON format (what a film's settings carry)."""
        settings = dict(self.settings)
        settings.update(colour_hold=self.colour_hold, crossfade=self.crossfade)
        shots = [
            {key: value for key, value in asdict(shot).items() if value is not None}
            for shot in self.shots
        ]
        return {"settings": settings, "shots": shots}


def _refuse(message: str, where: str) -> InvalidRequestError:
    return InvalidRequestError(message, field=where)


def parse_board(data: Any, max_shots: int = DEFAULT_MAX_SHOTS) -> Storyboard:
    """The JSON format (already parsed) -> a checked ``Storyboard``; every refusal names
    where it is (``shots[2].start``)."""
    if not isinstance(data, Mapping):
        raise _refuse("A storyboard is a JSON object with 'shots' (and 'settings').", "storyboard")
    unknown = set(data) - {"settings", "shots"}
    if unknown:
        raise _refuse(f"Unknown storyboard keys: {', '.join(sorted(unknown))}.", "storyboard")
    settings = data.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise _refuse("'settings' must be an object of shared settings.", "settings")
    shots_data = data.get("shots")
    if not isinstance(shots_data, list):
        raise _refuse("'shots' must be a list of shots.", "shots")
    shots = []
    for index, shot in enumerate(shots_data):
        where = f"shots[{index}]"
        if not isinstance(shot, Mapping):
            raise _refuse(f"{where} must be an object with a 'prompt'.", where)
        unknown = set(shot) - SHOT_KEYS
        if unknown:
            raise _refuse(
                f"{where}: unknown keys {', '.join(sorted(unknown))} (a shot takes "
                f"{', '.join(sorted(SHOT_KEYS))}).",
                where,
            )
        start = shot.get("start", CUT if index == 0 else CONTINUE)
        shots.append(
            Shot(
                prompt=_text(shot.get("prompt"), f"{where}.prompt"),
                start=start,
                seed=_integer(shot.get("seed"), f"{where}.seed", 0, MAX_SEED),
                overlap=_integer(shot.get("overlap", DEFAULT_OVERLAP), f"{where}.overlap", 1, 80),
                image=_optional_text(shot.get("image"), f"{where}.image"),
                last_image=_optional_text(shot.get("last_image"), f"{where}.last_image"),
            )
        )
    shared = {key: value for key, value in settings.items() if key not in BOARD_SETTINGS}
    board = Storyboard(
        tuple(shots),
        shared,
        colour_hold=_number(settings.get("colour_hold", 1.0), "settings.colour_hold", 0, 1),
        crossfade=_integer(settings.get("crossfade", 0), "settings.crossfade", 0, 40),
    )
    check_board(board, max_shots)
    return board


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _refuse(f"{where}: every shot needs a prompt.", where)
    return value.strip()


def _optional_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _refuse(f"{where} must be a file name.", where)
    return value


def _integer(value: Any, where: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(f"{where} must be a whole number from {low} to {high}.", where)
    return value


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _refuse(f"{where} must be a number from {low:g} to {high:g}.", where)
    return float(value)


def check_board(board: Storyboard, max_shots: int = DEFAULT_MAX_SHOTS) -> None:
    """The rules a storyboard must keep, before anything is queued."""
    if not board.shots:
        raise _refuse("The storyboard is empty: add at least one shot.", "shots")
    if len(board.shots) > max_shots:
        raise _refuse(
            f"The storyboard has {len(board.shots)} shots; this server makes at most "
            f"{max_shots} per storyboard.",
            "shots",
        )
    for index, shot in enumerate(board.shots):
        where = f"shots[{index}]"
        if shot.start not in (CUT, CONTINUE):
            raise _refuse(f"{where}.start must be 'cut' or 'continue', not {shot.start!r}.", where)
        if len(shot.prompt) > MAX_PROMPT_CHARS:
            raise _refuse(
                f"{where}: the prompt is {len(shot.prompt):,} characters long; at most "
                f"{MAX_PROMPT_CHARS:,} are accepted.",
                f"{where}.prompt",
            )
        if shot.start == CONTINUE:
            if index == 0:
                raise _refuse(
                    "The first shot cannot continue: there is nothing before it. Make it a cut.",
                    f"{where}.start",
                )
            if shot.image:
                raise _refuse(
                    f"{where} continues the previous shot, so it starts from that shot's last "
                    "frames, not an image: make it a cut to start from the image.",
                    f"{where}.image",
                )


def parse_script(text: str, previous: Sequence[Shot] = ()) -> tuple[Shot, ...]:
    """The Script box: one shot per line; a line starting with ``[cut]`` is a new shot, any
    other line continues the shot before (the first line is always a cut). A shot that was
    at the same place before keeps its seed, overlap and images."""
    shots = []
    for line in (line.strip() for line in text.splitlines()):
        if not line:
            continue
        start = CONTINUE
        if line.lower().startswith(SCRIPT_CUT):
            start, line = CUT, line[len(SCRIPT_CUT) :].strip()
        if not shots:
            start = CUT
        if not line:
            raise _refuse(f"Script line {len(shots) + 1}: a [cut] needs a prompt.", "script")
        if len(line) > MAX_PROMPT_CHARS:
            raise _refuse(
                f"Script line {len(shots) + 1} is {len(line):,} characters long; at most "
                f"{MAX_PROMPT_CHARS:,} are accepted.",
                "script",
            )
        kept = previous[len(shots)] if len(shots) < len(previous) else Shot(line)
        image = kept.image if start == CUT else None
        shots.append(replace(kept, prompt=line, start=start, image=image))
    return tuple(shots)


def script_of(shots: Sequence[Shot]) -> str:
    """The Script box's text for ``shots`` (``parse_script``'s inverse)."""
    lines = []
    for index, shot in enumerate(shots):
        cut = shot.start == CUT and index > 0
        lines.append(f"{SCRIPT_CUT} {shot.prompt}" if cut else shot.prompt)
    return "\n".join(lines)


def shot_seed(board: Storyboard, index: int, film_seed: int) -> int:
    """A shot's own seed, or the film's seed + its index (a new seed per shot)."""
    shot = board.shots[index]
    return shot.seed if shot.seed is not None else (film_seed + index) % (MAX_SEED + 1)


def sources(board: Storyboard) -> list[int | None]:
    """For each shot, the shot it continues (None for a cut): the order shots must wait in.
    Cuts have no source and can run at the same time on several workers."""
    return [index - 1 if shot.start == CONTINUE else None for index, shot in enumerate(board.shots)]


def fingerprints(
    board: Storyboard, film_seed: int, files: Mapping[str, str] | None = None
) -> list[str]:
    """For each shot, a hash of everything that makes its frames: its own settings, the
    shared ones, its seed, the content of its files (``files``: path -> content hash) and
    the fingerprint of the shot it continues. A shot whose fingerprint is unchanged can be
    reused; changing shot 3 changes 3 and every shot continuing from it, nothing else."""
    files = files or {}
    prints: list[str] = []
    for index, (shot, source) in enumerate(zip(board.shots, sources(board), strict=True)):
        made_of = {
            "shot": {**asdict(shot), "seed": shot_seed(board, index, film_seed)},
            "settings": dict(board.settings),
            "files": {
                path: files.get(path, path) for path in (shot.image, shot.last_image) if path
            },
            "source": prints[source] if source is not None else None,
        }
        text = json.dumps(made_of, sort_keys=True, default=str)
        prints.append(hashlib.sha256(text.encode()).hexdigest()[:32])
    return prints


def film_length(frames_per_shot: Sequence[int], board: Storyboard) -> int:
    """Frames in the joined film."""
    total = 0
    for index, (shot, frames) in enumerate(zip(board.shots, frames_per_shot, strict=True)):
        if index == 0:
            total = frames
        elif shot.start == CONTINUE:
            total += frames - shot.overlap
        else:
            total += frames - board.crossfade
    return total


# Colour hold ----------------------------------------------------------------------------


def lab(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB frames -> CIELAB (L 0..100): where colour differences are measured."""
    import cv2

    flat = frames.reshape(-1, frames.shape[-2], 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(frames.shape)


def colour_hold(
    shot: np.ndarray, shared: np.ndarray, reference: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Match a continued shot's colours to the frames it continues from.

    ``shot`` (N, H, W, 3) uint8 is the new shot; ``shared`` are its first frames, made from
    the previous shot's last frames ``reference`` (same count). The two show the same
    picture pixel for pixel, so whatever the model changed in colour on them (the VAE round
    trip drifts: saturation grows shot after shot) is measured as one affine colour map,
    fitted by least squares over every shared pixel (ridge-pulled towards no change, so a
    flat picture cannot make it wild), and undone on the whole shot. It is fitted in RGB,
    where a saturation and tint drift is linear: matching only the mean and deviation of
    each CIELAB channel, as Wan2GP does, left a drift that still grew along a chain (4.3 CIELAB
    units after 20 shots in ``tests/test_storyboard.py``, against 0.4 for this map).
    ``strength`` 0..1 blends between none and all of it."""
    if strength <= 0:
        return shot
    source = shared.reshape(-1, 3).astype(np.float64)
    target = reference.reshape(-1, 3).astype(np.float64)
    inputs = np.concatenate([source, np.ones((len(source), 1))], axis=1)
    pull = 1e-3 * len(source)  # towards the identity map
    identity = np.vstack([np.eye(3), np.zeros((1, 3))])
    colour_map = np.linalg.solve(
        inputs.T @ inputs + pull * np.eye(4), inputs.T @ target + pull * identity
    )
    colour_map = identity + strength * (colour_map - identity)
    pixels = shot.reshape(-1, 3).astype(np.float64)
    mapped = pixels @ colour_map[:3] + colour_map[3]
    return np.clip(np.rint(mapped), 0, 255).astype(np.uint8).reshape(shot.shape)


def hold_shot(clip: np.ndarray, source: np.ndarray, overlap: int, strength: float) -> np.ndarray:
    """A continued shot as made -> colour held to the shot it continues (``source``, already
    held itself), so the next shot continues from held frames and drift never accumulates."""
    return colour_hold(clip, clip[:overlap], source[-overlap:], strength)


def join_film(clips: Sequence[np.ndarray], board: Storyboard) -> np.ndarray:
    """The shots (each (N, H, W, 3) uint8; continued ones already colour held) -> the film:
    a continued shot joined without the frames it shares with the one before, a cut joined
    whole, or crossfaded over ``board.crossfade`` frames. Frames of an earlier shot are never
    changed, except those a crossfade blends."""
    if len(clips) != len(board.shots):
        raise ValueError(f"{len(clips)} clips for {len(board.shots)} shots")
    parts: list[np.ndarray] = []
    for index, (shot, clip) in enumerate(zip(board.shots, clips, strict=True)):
        if index and clip.shape[1:] != clips[index - 1].shape[1:]:
            before = clips[index - 1]
            raise InvalidRequestError(
                f"Shots of different sizes cannot be joined ({before.shape[2]}x"
                f"{before.shape[1]} and {clip.shape[2]}x{clip.shape[1]})."
            )
        if index == 0:
            parts.append(clip)
        elif shot.start == CONTINUE:
            parts.append(clip[shot.overlap :])
        elif board.crossfade:
            n = min(board.crossfade, len(clip), len(parts[-1]))
            weights = (np.arange(1, n + 1, dtype=np.float32) / (n + 1))[:, None, None, None]
            tail = parts[-1][-n:].astype(np.float32)
            blend = tail * (1 - weights) + clip[:n].astype(np.float32) * weights
            parts[-1] = parts[-1][:-n]
            parts.append(np.rint(blend).astype(np.uint8))
            parts.append(clip[n:])
        else:
            parts.append(clip)
    return np.concatenate(parts)
