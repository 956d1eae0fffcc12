"""The one way tests start the app: ``python app.py`` on a free port (with the tiny
checkpoint unless told otherwise), waited for until its page answers. API tests drive it
with gradio_client or raw HTTP, browser tests with Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class StudioServer:
    process: subprocess.Popen
    url: str  # ends with "/"
    output_dir: Path
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no shutdown handler runs, as in a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, owner: str | None = None, downloads: Path | None = None):
        from gradio_client import Client

        headers = {"X-Allegro-Key": owner} if owner else None
        return Client(
            self.url,
            headers=headers,
            verbose=False,
            download_files=str(downloads or self.output_dir.parent / "downloads"),
        )

    def videos(self) -> set[str]:
        return {path.name for path in self.output_dir.glob("*.mp4")}


def wait_for_page(process: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the page did not answer within {timeout} s:\n{log.read_text()}")


def start_studio(
    model: Path | None,
    output_dir: Path,
    log: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> StudioServer:
    """Launch ``python app.py`` on a free port and wait for the page to answer. ``model``
    None: what a plain ``python app.py`` picks."""
    port = free_port()
    command = [sys.executable, "app.py", "--port", str(port)]
    command += ["--model", str(model)] if model else []
    command += ["--output-dir", str(output_dir), *flags]
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, env=environ
        )
    url = f"http://127.0.0.1:{port}/"
    wait_for_page(process, url, log, timeout)
    return StudioServer(process, url, output_dir, log)
