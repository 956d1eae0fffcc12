"""``python -m launcher [run|install|update|check] [--venv DIR] [--no-browser] [app flags]``

run (the default): install what is missing, start the app, open the browser once the page
answers. install: only install. update: ``git pull``, reinstall what changed, then start
(``--no-start`` to stop there). check: say what this machine gets, install nothing. Any
other flag goes to ``app.py`` (``./run.sh --port 7861``).

Installing is idempotent: ``<venv>/allegro-install.json`` records the torch build and the
requirements that are installed, so a later run installs nothing unless one changed.
Everything printed also goes to ``logs/launcher.log``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from launcher.machine import (
    free_bytes,
    hf_cache_dir,
    host_ram_bytes,
    machine_report,
    probe_nvidia,
    weights_downloaded,
)
from launcher.torch_choice import (
    LauncherError,
    NvidiaSmi,
    TorchChoice,
    choose_torch,
    cuda_failure_message,
)

ROOT = Path(__file__).resolve().parent.parent
LOG_PATH = ROOT / "logs" / "launcher.log"
REQUIREMENTS = ROOT / "requirements.txt"
STAMP_NAME = "allegro-install.json"
COMMANDS = ("run", "install", "update", "check")
PYTHONS = ((3, 10), (3, 13))  # the oldest and newest Python the app supports
PAGE_TIMEOUT_S = 900  # the first start after an install compiles a lot of bytecode
TORCH_INDEX_ENV = "ALLEGRO_TORCH_INDEX"  # a mirror's URL, or "pypi"
NO_BROWSER_ENV = "ALLEGRO_NO_BROWSER"
READY = "Allegro Studio is ready at {url}"  # Pinokio's start.js waits for this line


class Log:
    """Prints a line and appends it, time-stamped, to logs/launcher.log."""

    def __init__(self, path: Path, out: TextIO | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.out = out or sys.stdout
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)
            if self._file.closed:  # the app's last lines, after the launcher stopped
                return
            self._file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def venv_python(venv: Path) -> Path:
    if platform.system() == "Windows":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def run_logged(command: Sequence[str | os.PathLike[str]], log: Log, what: str) -> None:
    """Runs ``command`` with its output relayed to the log; LauncherError if it fails."""
    log.say(f"$ {' '.join(str(part) for part in command)}")
    process = subprocess.Popen(
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd=ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        log.say(line.rstrip())
    if process.wait():
        raise LauncherError(f"{what} failed (exit code {process.returncode}); see above.")


def read_stamp(venv: Path) -> dict[str, str]:
    try:
        stamp = json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def write_stamp(venv: Path, stamp: Mapping[str, str]) -> None:
    path = venv / STAMP_NAME
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    os.replace(partial, path)  # never half a stamp


def requirements_hash(path: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_index_override(choice: TorchChoice, environ: Mapping[str, str]) -> TorchChoice:
    """ALLEGRO_TORCH_INDEX: a mirror of PyTorch's index, or ``pypi`` (PyPI and pip's
    configured find-links, e.g. a folder of wheels)."""
    index = environ.get(TORCH_INDEX_ENV, "").strip()
    if not index:
        return choice
    return replace(
        choice,
        index_url=None if index == "pypi" else index,
        local_version="",  # whatever that index has
        reason=f"{choice.reason} Index set by {TORCH_INDEX_ENV}={index}.",
    )


def installed_torch(python: Path) -> str | None:
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


CUDA_CHECK = (
    "import torch\n"
    "if not torch.cuda.is_available():\n"
    "    raise SystemExit('torch ' + torch.__version__ + ': torch.cuda.is_available() is False')\n"
    "x = (torch.ones(1, device='cuda') + 1).item()\n"
    "print('CUDA works:', torch.cuda.get_device_name(0))\n"
)


def install(venv: Path, choice: TorchChoice, gpu: NvidiaSmi | None, log: Log) -> bool:
    """Makes ``venv`` and installs what its stamp says is missing. True if it installed."""
    python = venv_python(venv)
    stamp = read_stamp(venv) if python.exists() else {}
    changed = False
    if not python.exists():
        log.say(f"Making the Python environment in {venv} (once) ...")
        existed = venv.exists()
        try:
            run_logged([sys.executable, "-m", "venv", venv], log, "Making the Python environment")
        except LauncherError as error:
            if not existed:
                shutil.rmtree(venv, ignore_errors=True)  # no half-made environment next time
            raise LauncherError(
                f"{error} On Debian and Ubuntu install python3-venv first "
                "(sudo apt install python3-venv)."
            ) from error
    if stamp.get("torch") != choice.key:
        log.say(choice.reason)
        present = installed_torch(python)
        if present and choice.local_version and present != choice.local_version:
            # torch==2.13.0 is satisfied by any build: remove the wrong one first.
            run_logged([python, "-m", "pip", "uninstall", "-y", "torch"], log, "Removing torch")
        run_logged([python, "-m", "pip", "install", *choice.pip_args()], log, "Installing torch")
        stamp = {**stamp, "torch": choice.key}
        stamp.pop("cuda", None)
        write_stamp(venv, stamp)
        changed = True
    wanted = requirements_hash()
    if stamp.get("requirements") != wanted:
        log.say("Installing the app's requirements (requirements.txt) ...")
        run_logged(
            [python, "-m", "pip", "install", "-r", REQUIREMENTS], log, "Installing requirements"
        )
        stamp = {**stamp, "requirements": wanted}
        write_stamp(venv, stamp)
        changed = True
    if choice.expect_cuda and stamp.get("cuda") != choice.key:
        done = subprocess.run(
            [str(python), "-c", CUDA_CHECK], capture_output=True, text=True, check=False
        )
        if done.returncode:
            detail = (done.stderr.strip().splitlines() or [""])[-1]
            raise LauncherError(cuda_failure_message(choice, gpu, detail))
        log.say(done.stdout.strip())
        write_stamp(venv, {**stamp, "cuda": choice.key})
    if not changed:
        log.say("Everything is installed.")
    return changed


def app_url(app_args: Sequence[str], environ: Mapping[str, str]) -> str:
    """The page's address from app.py's --host/--port (or their environment variables)."""
    host = environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = environ.get("GRADIO_SERVER_PORT") or environ.get("PORT") or "7860"
    args = list(app_args)
    for index, arg in enumerate(args):
        for flag in ("--host", "--port"):
            value = None
            if arg == flag and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value is not None:
                host, port = (value, port) if flag == "--host" else (host, value)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}/"


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def open_browser(url: str, log: Log) -> None:
    """The platform's own opener: what a double click on a link does."""
    system = platform.system()
    try:
        if system == "Windows":
            os.startfile(url)  # type: ignore[attr-defined]
            return
        opener = "open" if system == "Darwin" else shutil.which("xdg-open")
        if opener:
            subprocess.Popen([opener, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return
    except OSError as error:
        log.say(f"Could not open the browser ({error}).")
    log.say(f"Open {url} in your browser.")


def start(venv: Path, app_args: Sequence[str], browser: bool, log: Log) -> int:
    """Starts app.py, waits for its page, opens the browser, relays its output until it
    stops (Ctrl+C stops it)."""
    python = venv_python(venv)
    if not python.exists():
        raise LauncherError("Allegro Studio is not installed yet: run the launcher first.")
    url = app_url(app_args, os.environ)
    log.say(f"Starting Allegro Studio at {url} (Ctrl+C stops it) ...")
    process = subprocess.Popen(
        [str(python), str(ROOT / "app.py"), *app_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    relay = threading.Thread(target=_relay, args=(process, log), daemon=True)
    relay.start()
    try:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not page_answers(url):
            if process.poll() is not None:
                relay.join(5)
                raise LauncherError(
                    f"The app stopped before its page answered (exit code {process.returncode})"
                    "; its messages are above."
                )
            if time.monotonic() > deadline:
                raise LauncherError(f"The page did not answer at {url} in time.")
            time.sleep(0.5)
        log.say(READY.format(url=url))
        if browser:
            open_browser(url, log)
        code = process.wait()
        relay.join(5)
        return code
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def _relay(process: subprocess.Popen[str], log: Log) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        log.say(line.rstrip())


def git_pull(log: Log) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        log.say(
            "This folder is not a git checkout: to update, download the new version, unpack "
            "it over this folder and run update again. Checking what is installed ..."
        )
        return
    run_logged(["git", "-C", ROOT, "pull", "--ff-only"], log, "git pull")


def check_python() -> None:
    if not PYTHONS[0] <= sys.version_info[:2] <= PYTHONS[1]:
        low, high = (".".join(map(str, version)) for version in PYTHONS)
        raise LauncherError(
            f"Python {platform.python_version()} is not supported: Allegro Studio needs "
            f"Python {low} to {high} (https://www.python.org/downloads/)."
        )


def report_machine(gpu: NvidiaSmi | None, venv: Path, log: Log) -> None:
    cache = hf_cache_dir(os.environ)
    report = machine_report(
        gpu,
        host_ram_bytes(),
        free_bytes(venv),
        free_bytes(cache),
        weights_downloaded(cache),
    )
    for line in report.lines:
        log.say(line)
    if report.problem:
        raise LauncherError(report.problem)


def parse(argv: Sequence[str]) -> tuple[str, argparse.Namespace, list[str]]:
    args = list(argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "run"
    parser = argparse.ArgumentParser(prog="launcher", add_help=False)
    parser.add_argument("--venv", default=".venv")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--no-start", action="store_true")
    options, app_args = parser.parse_known_args(args)
    return command, options, app_args


def main(argv: Sequence[str] | None = None) -> int:
    command, options, app_args = parse(sys.argv[1:] if argv is None else argv)
    venv = ROOT / options.venv
    log = Log(LOG_PATH)
    log.say(f"=== Allegro Studio launcher: {command} ({platform.system()}) ===")
    # A terminal closing or Pinokio stopping the script: stop the app too (start's finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        check_python()
        gpu = probe_nvidia()
        choice = with_index_override(
            choose_torch(platform.system(), platform.machine(), gpu), os.environ
        )
        if command == "check":
            log.say(choice.reason)
            report_machine(gpu, venv, log)
            return 0
        if command == "update":
            git_pull(log)
        first_time = read_stamp(venv).get("torch") is None
        if first_time or command != "run":
            report_machine(gpu, venv, log)
        install(venv, choice, gpu, log)
        if command == "install" or options.no_start:
            log.say("Installed. Start Allegro Studio with run.sh / run.bat.")
            return 0
        browser = not options.no_browser and not os.environ.get(NO_BROWSER_ENV)
        return start(venv, app_args, browser, log)
    except LauncherError as error:
        log.say(f"Allegro Studio could not start: {error} (full log: {LOG_PATH})")
        return 1
    except KeyboardInterrupt:
        log.say("Stopped.")
        return 130
    except Exception as error:  # the one line a person needs, the trace for whoever helps
        log._file.write(traceback.format_exc())
        log.say(f"Allegro Studio could not start: {error!r} (full log: {LOG_PATH})")
        return 1
    finally:
        log.close()
