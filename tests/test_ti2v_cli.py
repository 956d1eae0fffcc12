"""The command line for image to video: generate --image/--last-image, extend, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from allegro.cli import main
from allegro.video import read_frames, read_settings


@pytest.fixture
def first_and_last(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name in ("first.png", "last.png"):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


COMMON = ("--prompt", "a boat at dawn", "--seed", "3", "--steps", "1")


def test_generate_from_images_then_extend(tiny_ti2v_model, first_and_last, tmp_path, capsys):
    first, last = first_and_last
    clip = tmp_path / "clip.mp4"
    images = ["--image", str(first), "--last-image", str(last)]
    code = main(["generate", "--model", str(tiny_ti2v_model), *images, *COMMON, "--out", str(clip)])
    assert code == 0, capsys.readouterr().err
    settings = read_settings(clip)
    assert settings["first_image"] == "clip.first.png" and settings["last_image"] == "clip.last.png"
    assert (tmp_path / "clip.first.png").is_file() and (tmp_path / "clip.last.png").is_file()

    longer = tmp_path / "longer.mp4"
    extend = ["--overlap", "4", "--frames", "24", "--out", str(longer)]
    code = main(["extend", str(clip), "--model", str(tiny_ti2v_model), *COMMON, *extend])
    assert code == 0, capsys.readouterr().err
    assert len(read_frames(longer)[0]) == 24 + 20
    assert read_settings(longer)["chain"] == ["clip.mp4"]


def test_bad_images_fail_before_anything_loads(tmp_path, capsys, monkeypatch):
    import allegro.engine

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("the model was loaded for a bad request")

    monkeypatch.setattr(allegro.engine.Engine, "generate", must_not_run)
    (tmp_path / "notes.png").write_text("hello")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "small.png")
    cases = [
        (["generate", "--image", str(tmp_path / "notes.png")], "not an image"),
        (["generate", "--image", str(tmp_path / "small.png")], "only 10x10 pixels"),
        (["generate", "--image", str(tmp_path / "none.png")], "does not exist"),
        (["generate", "--last-image", str(tmp_path / "small.png")], "needs a first frame"),
        (["extend", str(tmp_path / "notes.png")], "not a readable video"),
        (["extend", str(tmp_path / "none.mp4")], "does not exist"),
    ]
    for argv, message in cases:
        assert main([*argv, "--prompt", "x", "--out", str(tmp_path / "o.mp4")]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error, error
        assert "Traceback" not in error
    assert not (tmp_path / "o.mp4").exists()
