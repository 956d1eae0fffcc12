"""run.sh end to end on a fresh copy of the repository, on this machine (no GPU): it makes a
new virtual environment, installs torch (the CPU build) and requirements.txt, starts the
app, and opens the browser through the platform's opener (a fake xdg-open that records the
URL) once the page answers. A second run installs nothing and answers within seconds;
``run.sh update`` after a requirements change installs only that.

Slow (a full venv install, several minutes): pip takes torch from the wheels and caches
it is configured with (ALLEGRO_TORCH_INDEX=pypi: PyPI and pip's find-links, as a mirror
would be set), since download.pytorch.org is out of reach here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.studio_server import free_port

REPO = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 1800
IGNORED = (".git", ".venv", "logs", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="run.sh is for Linux and macOS"),
]


def fresh_copy(target: Path) -> Path:
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*IGNORED, "test-artifacts"))
    return target


def fake_opener(folder: Path, record: Path) -> None:
    folder.mkdir()
    opener = folder / "xdg-open"
    opener.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\n')
    opener.chmod(0o755)


def tiny_wheel(folder: Path) -> Path:
    """A one-module wheel, to stand for a new requirement."""
    wheel = folder / "tinypkg-0.1-py3-none-any.whl"
    info = "tinypkg-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinypkg/__init__.py", "VALUE = 1\n")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n")
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(
            f"{info}/RECORD",
            f"tinypkg/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n",
        )
    return wheel


def wait_opened(process: subprocess.Popen, record: Path, count: int, timeout: float) -> str:
    """The URL the launcher had the opener open, the ``count``-th time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = record.read_text().split() if record.exists() else []
        if len(lines) >= count:
            return lines[count - 1]
        assert process.poll() is None, f"the launcher stopped (exit code {process.returncode})"
        time.sleep(0.5)
    raise AssertionError("the browser was never opened")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # the launcher stops the app it started
    process.wait(60)


def new_log(log: Path, start: int) -> str:
    return log.read_text(errors="replace")[start:]


def test_run_sh_installs_starts_opens_and_updates(tmp_path):
    studio = fresh_copy(tmp_path / "studio")
    record = tmp_path / "opened.txt"
    fake_opener(tmp_path / "bin", record)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "ALLEGRO_TORCH_INDEX": "pypi",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    port = free_port()
    command = [str(studio / "run.sh"), "--port", str(port), "--output-dir", str(tmp_path / "out")]
    log = studio / "logs" / "launcher.log"

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = wait_opened(first, record, 1, INSTALL_TIMEOUT_S)
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
            assert "Allegro Studio" in page.read().decode(errors="replace")
        with urllib.request.urlopen(url + "config", timeout=10) as config:
            assert "First time here?" in config.read().decode(errors="replace")
    finally:
        stop(first)
    text = log.read_text()
    assert (studio / ".venv" / "bin" / "python").exists()
    assert "-m pip install torch==2.13.0" in text
    assert "-m pip install -r" in text
    assert f"Allegro Studio is ready at {url}" in text

    # A second run: nothing installed, the page answers within seconds.
    mark = len(log.read_text(errors="replace"))
    began = time.monotonic()
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert wait_opened(second, record, 2, 120) == url
        seconds = time.monotonic() - began
    finally:
        stop(second)
    later = new_log(log, mark)
    assert "pip install" not in later and "Everything is installed." in later
    assert seconds < 90, f"the second start took {seconds:.0f} s"

    # A changed requirements.txt: `run.sh update` installs only the new requirement.
    wheel = tiny_wheel(tmp_path)
    with (studio / "requirements.txt").open("a") as requirements:
        requirements.write(f"tinypkg @ {wheel.as_uri()}\n")
    mark = len(log.read_text(errors="replace"))
    done = subprocess.run(
        [str(studio / "run.sh"), "update", "--no-start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    later = new_log(log, mark)
    assert "pip install torch" not in later
    installed = [line for line in later.splitlines() if "Successfully installed" in line]
    assert len(installed) == 1 and installed[0].split("Successfully installed ")[1] == (
        "tinypkg-0.1"
    ), installed
    assert "not a git checkout" in later
