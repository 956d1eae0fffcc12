"""Storyboards, pure parts: the JSON format and the Script box, the refusals before anything
is queued, which shots are reused after an edit, colour hold along a chain of continued
shots, and the join of the film."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from allegro.errors import InvalidRequestError
from allegro.storyboard import (
    CONTINUE,
    CUT,
    Shot,
    Storyboard,
    colour_hold,
    film_length,
    fingerprints,
    hold_shot,
    join_film,
    parse_board,
    parse_script,
    script_of,
    shot_seed,
    sources,
)

ISSUE_EXAMPLE = {
    "settings": {"steps": 2, "seed": 7},
    "shots": [
        {"prompt": "a ship at dawn"},
        {"prompt": "it sails into the storm", "start": "continue"},
        {"prompt": "a harbour at night", "start": "cut"},
    ],
}


def test_the_issue_example_parses_as_written():
    board = parse_board(ISSUE_EXAMPLE)
    assert [shot.start for shot in board.shots] == [CUT, CONTINUE, CUT]
    assert board.settings == {"steps": 2, "seed": 7}
    assert (board.colour_hold, board.crossfade) == (1.0, 0)
    assert sources(board) == [None, 0, None]
    assert [shot_seed(board, i, 7) for i in range(3)] == [7, 8, 9]
    assert parse_board(board.to_json()) == board  # a film's settings bring the cards back


def test_a_shot_after_the_first_continues_unless_it_says_cut():
    board = parse_board({"shots": [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "seed": 3}]})
    assert [shot.start for shot in board.shots] == [CUT, CONTINUE, CONTINUE]
    assert shot_seed(board, 2, 100) == 3  # a locked seed stays


@pytest.mark.parametrize(
    ("data", "where", "words"),
    [
        ({"shots": []}, "shots", "empty"),
        ({"shots": [{"prompt": "a", "start": "continue"}]}, "shots[0].start", "first shot"),
        ({"shots": [{"prompt": "a"}] * 21}, "shots", "at most 20"),
        ({"shots": [{"prompt": "a"}, {"prompt": " "}]}, "shots[1].prompt", "needs a prompt"),
        ({"shots": [{"prompt": "x" * 4001}]}, "shots[0].prompt", "4,000"),
        ({"shots": [{"prompt": "a", "start": "fade"}]}, "shots[0]", "'cut' or 'continue'"),
        ({"shots": [{"prompt": "a"}, {"prompt": "b", "image": "x.png"}]}, "shots[1].image", "cut"),
        ({"shots": [{"prompt": "a", "colour": 1}]}, "shots[0]", "unknown keys colour"),
        ({"shots": [{"prompt": "a", "seed": -2}]}, "shots[0].seed", "whole number"),
        (
            {"settings": {"colour_hold": 2}, "shots": [{"prompt": "a"}]},
            "settings.colour_hold",
            "0 to 1",
        ),
        ([1, 2], "storyboard", "JSON object"),
    ],
)
def test_bad_storyboards_are_refused_with_where(data, where, words):
    with pytest.raises(InvalidRequestError, match=words) as refused:
        parse_board(data)
    assert refused.value.field == where


def test_max_shots_is_the_servers():
    with pytest.raises(InvalidRequestError, match="at most 2 per storyboard"):
        parse_board({"shots": [{"prompt": "a"}] * 3}, max_shots=2)


def test_the_script_fills_the_cards_and_the_cards_fill_it():
    text = "a ship at dawn\nit sails into the storm\n\n[cut] a harbour at night"
    shots = parse_script(text)
    assert [(s.prompt, s.start) for s in shots] == [
        ("a ship at dawn", CUT),
        ("it sails into the storm", CONTINUE),
        ("a harbour at night", CUT),
    ]
    assert parse_script(script_of(shots)) == shots
    # Editing the text keeps what only the cards hold (seed, image) at the same place.
    cards = (Shot("a ship", seed=5, image="ship.png"), Shot("sails", CONTINUE, seed=6))
    edited = parse_script("a big ship\n[cut] a storm", cards)
    assert edited == (Shot("a big ship", seed=5, image="ship.png"), Shot("a storm", CUT, seed=6))
    with pytest.raises(InvalidRequestError, match="line 2"):
        parse_script("a\n" + "x" * 4001)
    with pytest.raises(InvalidRequestError, match="needs a prompt"):
        parse_script("a\n[cut]")


def test_changing_one_shot_remakes_it_and_what_continues_from_it_only():
    board = parse_board(
        {"shots": [{"prompt": p} for p in "abcde"] + [{"prompt": "f", "start": "cut"}]}
    )
    before = fingerprints(board, 7)
    edited = Storyboard(
        tuple(Shot("C!", s.start) if i == 2 else s for i, s in enumerate(board.shots)),
        board.settings,
    )
    after = fingerprints(edited, 7)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [2, 3, 4]  # the cut at 5 does not depend on them
    assert fingerprints(board, 8) != before  # a new film seed changes unlocked shots
    new_image = fingerprints(board, 7, {"x": "other"})
    assert new_image == before  # no shot uses that file


def test_film_length_three_shots_is_88_80_88():
    board = parse_board(ISSUE_EXAMPLE)
    assert film_length([88, 88, 88], board) == 88 + 80 + 88
    clips = [np.full((88, 8, 8, 3), i * 50, np.uint8) for i in range(3)]
    film = join_film(clips, board)
    assert len(film) == 256
    assert np.array_equal(film[:88], clips[0])  # the earlier shot is untouched
    assert np.array_equal(film[88:168], clips[1][8:])  # shared frames are not repeated
    assert np.array_equal(film[168:], clips[2])  # a hard cut by default


def test_crossfade_blends_n_frames_at_cuts_only():
    board = parse_board({"settings": {"crossfade": 4}, "shots": ISSUE_EXAMPLE["shots"]})
    clips = [np.full((88, 8, 8, 3), v, np.uint8) for v in (0, 0, 250)]
    film = join_film(clips, board)
    assert len(film) == film_length([88] * 3, board) == 88 + 80 + 84
    ramp = film[164:168, 0, 0, 0]
    assert list(ramp) == [50, 100, 150, 200]  # 4 blended frames, then the cut's own
    assert (film[168:] == 250).all()


def _scene(frames: int, seed: int) -> np.ndarray:
    """Moving colourful content (what a shot 'shows'), before any drift."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, (4, 4, 3))
    import cv2

    out = []
    for t in range(frames):
        tile = np.roll(base, t % 4, axis=1)
        out.append(cv2.resize(tile, (32, 32), interpolation=cv2.INTER_CUBIC))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _drift(frames: np.ndarray) -> np.ndarray:
    """What one pass through the model does to colours: more saturation (x1.15), a warm
    tint, and a slight gamma change (so the drift is not exactly the map the hold fits)."""
    x = frames.astype(np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    x = mean + (x - mean) * 1.15 + np.array([6.0, 2.0, -4.0])
    x = 255 * (np.clip(x, 0, 255) / 255) ** 0.95
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _imitate(scene: np.ndarray, truth: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The model continues the look of the frames it was given: new content carries the
    colour offset and contrast (per RGB channel) that ``seen`` has against ``truth``."""
    axes = (0, 1, 2)
    gain = seen.std(axes) / np.maximum(truth.std(axes), 1e-3)
    out = (scene - truth.mean(axes)) * gain + seen.mean(axes)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _chain(shots: int, strength: float) -> list[float]:
    """Each continued shot reproduces the previous shot's last 8 frames, makes new content
    in their look, and drifts as a whole (the VAE round trip); returns each shot's colour
    distance (mean CIELAB) from the content it should show."""
    from allegro.storyboard import lab

    truth = _scene(88, 0)
    source = truth
    distances = []
    for index in range(1, shots):
        scene = _scene(80, index)
        content = np.concatenate([source[-8:], _imitate(scene, truth[-8:], source[-8:])])
        held = hold_shot(_drift(content), source, 8, strength)
        distances.append(float(np.abs(lab(held[8:]) - lab(scene)).mean()))
        truth, source = np.concatenate([truth[-8:], scene]), held
    return distances


def test_colour_hold_keeps_drift_bounded_along_the_film():
    without = _chain(20, strength=0.0)
    held = _chain(20, strength=1.0)
    # Without the hold the drift grows with the number of shots (3 CIELAB units after one,
    # over 20 after ten) ...
    assert all(b > a + 1.0 for a, b in itertools.pairwise(without[:5]))
    assert without[-1] > 8 * without[0]
    # ... with it, it stays under 1 CIELAB unit (below a just-noticeable difference, about
    # 2.3) for 20 shots.
    assert max(held) < 1.0, held
    half = _chain(4, strength=0.5)
    assert without[2] > half[2] > held[2]  # the strength slider sits in between


def test_colour_hold_never_changes_the_shared_frames_of_the_film():
    board = parse_board(ISSUE_EXAMPLE)
    first = _scene(88, 0)
    second = hold_shot(_drift(np.concatenate([first[-8:], _scene(80, 1)])), first, 8, 1.0)
    film = join_film([first, second, _scene(88, 2)], board)
    assert np.array_equal(film[:88], first)
    assert colour_hold(second, second[:8], first[-8:], 0.0) is second  # strength 0: untouched
