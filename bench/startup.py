"""Start-up benchmark: Allegro Studio against a bare Gradio page, launched the same way.

Measures the seconds from launching ``python app.py --model <tiny checkpoint> --port N``
until the page answers HTTP 200 on ``/``, and until the model is ready, against a bare
``gr.Blocks()`` page with one Markdown (a script written to a temporary file, run with the
same Python, environment and working directory). The two alternate for ``--rounds`` rounds
(the order flips every round) after an untimed warm-up launch of each, and the medians and
their ratio are printed (target: the app's page within 2x the bare page).

Readiness: the page learns it through a private Gradio event (not callable from outside),
so the benchmark reads the app's log, where ``ui/model_status.py`` writes "Model ready: …"
once the pipeline is loaded ("Model loading failed" otherwise).

Only 127.0.0.1 and free ports are used; every process started here is stopped by its id
(Ctrl-C first, as a person would, then SIGTERM, then SIGKILL).

    python bench/startup.py [--rounds 3] [--timeout 300] [--wait-app 1800]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
HOST = "127.0.0.1"
READY_MARK = "Model ready"  # ui/model_status.py logs this once the pipeline is loaded
FAILED_MARK = "Model loading failed"
TARGET_RATIO = 2.0
POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 10.0

BARE_PAGE = '''"""A bare Gradio page: the baseline for bench/startup.py."""

import argparse

import gradio as gr

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
with gr.Blocks() as demo:
    gr.Markdown("# A bare page")
demo.launch(server_name="127.0.0.1", server_port=args.port)
'''

# Requests to 127.0.0.1 must not go through a proxy set in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed launches of each first (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one launch may take to answer and be ready (default 300)",
    )
    parser.add_argument(
        "--wait-app",
        type=float,
        default=1800.0,
        help="seconds to wait for app.py to appear, if it does not exist yet (default 1800)",
    )
    parser.add_argument(
        "--model", help="checkpoint folder for the app (default: a tiny one made with make-tiny)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    return args


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; it is released straight away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def page_answers(port: int) -> bool:
    try:
        with _OPENER.open(f"http://{HOST}:{port}/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class Launch:
    """One server process, its output timestamped line by line by a reader thread."""

    command: list[str]
    started: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)
    ready_at: float | None = None
    failed_at: float | None = None
    process: subprocess.Popen | None = None
    _event: threading.Event = field(default_factory=threading.Event)

    def start(self, environ: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C in this terminal is ours to pass on
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            now = time.monotonic() - self.started
            self.lines.append((now, line.rstrip()))
            if READY_MARK in line and self.ready_at is None:
                self.ready_at = now
                self._event.set()
            elif FAILED_MARK in line and self.failed_at is None:
                self.failed_at = now
                self._event.set()
        self._event.set()  # the process closed its output: it has exited

    def wait_for_page(self, port: int, timeout: float) -> float:
        """Seconds from launch until ``/`` answers 200."""
        assert self.process is not None
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if page_answers(port):
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with code {self.process.returncode}\n{self.tail()}")
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"no answer on port {port} within {timeout:.0f} s\n{self.tail()}")

    def wait_for_ready(self, timeout: float) -> float:
        """Seconds from launch until the app logged that its model is ready."""
        self._event.wait(max(0.0, self.started + timeout - time.monotonic()))
        if self.ready_at is not None:
            return self.ready_at
        if self.failed_at is not None:
            raise RuntimeError(f"the model failed to load\n{self.tail()}")
        raise RuntimeError(f"the model was not ready within {timeout:.0f} s\n{self.tail()}")

    def tail(self, count: int = 15) -> str:
        return "\n".join(f"    {line}" for _, line in self.lines[-count:])

    def stop(self) -> None:
        """Ctrl-C (Gradio closes its server), then SIGTERM, then SIGKILL: by process id."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(stop_signal)
            try:
                process.wait(STOP_GRACE_SECONDS)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Timing:
    page: float
    ready: float | None = None


def run_once(command: list[str], environ: dict[str, str], timeout: float, app: bool) -> Timing:
    port = free_port()
    launch = Launch([*command, "--port", str(port)])
    try:
        launch.start(environ)
        page = launch.wait_for_page(port, timeout)
        ready = launch.wait_for_ready(timeout) if app else None
        return Timing(page, ready)
    finally:
        launch.stop()


def wait_for_app(seconds: float) -> None:
    """app.py is written by another engineer; poll for it rather than fail at once."""
    deadline = time.monotonic() + seconds
    announced = False
    while not APP.is_file():
        if time.monotonic() > deadline:
            raise SystemExit(f"{APP} did not appear within {seconds:.0f} s")
        if not announced:
            print(f"waiting for {APP} to exist …", file=sys.stderr, flush=True)
            announced = True
        time.sleep(10)


def make_tiny(directory: Path, environ: dict[str, str]) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "allegro", "make-tiny", str(directory)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"make-tiny failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return directory


def fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f}"


def report(app: Sequence[Timing], bare: Sequence[Timing]) -> str:
    app_page = statistics.median(t.page for t in app)
    bare_page = statistics.median(t.page for t in bare)
    app_ready = statistics.median(t.ready for t in app if t.ready is not None)
    ratio = app_page / bare_page
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    rows = [
        "| Server | Page answers 200 (s, median) | Model ready (s, median) | Page per round (s) |",
        "|---|---:|---:|---|",
        f"| app.py (tiny checkpoint) | {fmt(app_page)} | {fmt(app_ready)} | "
        + ", ".join(fmt(t.page) for t in app)
        + " |",
        f"| bare gr.Blocks + Markdown | {fmt(bare_page)} | — | "
        + ", ".join(fmt(t.page) for t in bare)
        + " |",
    ]
    return (
        "\n".join(rows)
        + f"\n\nApp page / bare page: {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x target); "
        f"model ready {app_ready - app_page:.2f} s after the page answers.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wait_for_app(args.wait_app)
    environ = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines arrive when written
    with tempfile.TemporaryDirectory(prefix="allegro-startup-") as folder:
        work = Path(folder)
        model = Path(args.model) if args.model else make_tiny(work / "tiny", environ)
        bare_script = work / "bare_page.py"
        bare_script.write_text(BARE_PAGE)
        commands = {
            "app": [
                sys.executable,
                str(APP),
                "--model",
                str(model),
                "--host",
                HOST,
                "--output-dir",
                str(work / "outputs"),
            ],
            "bare": [sys.executable, str(bare_script)],
        }
        timings: dict[str, list[Timing]] = {"app": [], "bare": []}
        for index in range(args.warmup + args.rounds):
            warm = index < args.warmup
            order = ("app", "bare") if index % 2 == 0 else ("bare", "app")
            for name in order:
                try:
                    timing = run_once(commands[name], environ, args.timeout, app=name == "app")
                except RuntimeError as error:
                    print(f"{name} launch failed: {error}", file=sys.stderr)
                    return 1
                label = "warm-up" if warm else f"round {index - args.warmup + 1}"
                ready = f", model ready {fmt(timing.ready)} s" if timing.ready is not None else ""
                print(f"{label}: {name} page {fmt(timing.page)} s{ready}", file=sys.stderr)
                if not warm:
                    timings[name].append(timing)
    print(f"Start-up, {args.rounds} rounds alternated, Python {sys.version.split()[0]}:\n")
    print(report(timings["app"], timings["bare"]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
