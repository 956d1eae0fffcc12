"""The command line: the issue's end-to-end run, readable errors, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from allegro.video import read_frames
from tests.conftest import REPO_ROOT


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "allegro", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_generate_twice_then_info(tiny_model, tmp_path):
    """The issue's 'done means': same seed, identical frames; info prints seed 7."""
    outputs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for output in outputs:
        done = run_cli(
            "generate",
            "--model",
            str(tiny_model),
            "--prompt",
            "pink fish swim in the sea",
            "--seed",
            "7",
            "--steps",
            "2",
            "--out",
            str(output),
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    info = run_cli("info", str(outputs[0]))
    assert info.returncode == 0
    settings = json.loads(info.stdout)
    assert settings["seed"] == 7 and settings["prompt"] == "pink fish swim in the sea"
    first, _ = read_frames(outputs[0])
    second, _ = read_frames(outputs[1])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", ""], "Please write a prompt"),
        (["--prompt", "cat", "--seed", "-3"], "Seed must be between 0"),
        (["--prompt", "cat", "--steps", "ten"], "Steps must be a whole number"),
        (["--prompt", "cat", "--frames", "50"], "Allegro cannot make 50 frames"),
        (["--prompt", "cat", "--offload", "sequential"], "no CUDA GPU"),
    ],
)
def test_bad_input_is_one_readable_line_and_no_file(tiny_model, tmp_path, args, message):
    output = tmp_path / "bad.mp4"
    steps = [] if "--steps" in args else ["--steps", "2"]
    done = run_cli("generate", "--model", str(tiny_model), *args, *steps, "--out", str(output))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_info_on_a_foreign_file(tmp_path):
    foreign = tmp_path / "x.mp4"
    foreign.write_bytes(b"not a video")
    done = run_cli("info", str(foreign))
    assert done.returncode == 2 and "not a readable video" in done.stderr


def test_importing_the_cli_stays_light():
    code = (
        "import sys, allegro.cli;"
        "heavy = [m for m in ('torch', 'diffusers', 'av', 'cv2', 'gradio') if m in sys.modules];"
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_memory_profile_combination_refused_before_loading(tmp_path, capsys):
    from allegro.cli import main

    code = main(
        [
            "generate",
            "--model",
            str(tmp_path / "never-loaded"),
            "--prompt",
            "a kite",
            "--memory-profile",
            "low-memory",
            "--compile",
        ]
    )
    assert code == 2
    assert "cannot be combined with --compile" in capsys.readouterr().err
