"""ZeroGPU with the real ``spaces`` package in its ZeroGPU mode, driven on this CPU machine.

``spaces`` (0.51.3) emulates CUDA at import: torch ops on "cuda" run on the CPU under a
TorchFunctionMode that exists only on the importing thread (zero/torch/patching.py:301-307),
and the "cuda" weights are packed to disk when the app launches (zero/__init__.py:31,
zero/gradio.py:157-163); its forked GPU worker later moves them onto the lent GPU. So the
app is started as on a Space, in a subprocess (spaces patches torch for the whole process),
and only the accelerator is faked: the CPU wheel has no CUDA build number, no
``torch._C._cuda_init`` and a ``_is_in_bad_fork`` that spaces cannot pickle
(zero/torch/static.py:31, zero/torch/patching.py:56 and 453-456).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = r"""
import json, pickle, sys

import torch

torch.version.cuda = "13.0"


def _no_driver():
    raise RuntimeError("Found no NVIDIA driver on your system.")


def _is_in_bad_fork():
    return False


torch._C._cuda_init = _no_driver
torch.cuda._is_in_bad_fork = _is_in_bad_fork

import gradio as gr

import app
from ui import model_status

loaders = []
real_init = model_status.ModelLoader.__init__


def recording_init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    loaders.append(self)


model_status.ModelLoader.__init__ = recording_init
gr.Blocks.block_thread = lambda self: None  # app.launch returns once the page is served

model, output_dir, port = sys.argv[1:4]
# On a Space (SPACE_ID), launch reports the spaces.GPU functions to the device API, which is
# not reachable here (zero/__init__.py:29-38).
from spaces.zero import client as zero_client

zero_client.startup_report = lambda: None
app.launch(app.parse_config(["--model", model, "--output-dir", output_dir, "--port", port]))

from spaces.zero import torch as zero_torch
from spaces.zero.wrappers import exception_result

from allegro.errors import AllegroError
from ui.studio import BUG_MESSAGE, user_error
from ui.zerogpu import wrap_for_spaces

loader = loaders[0]
status = loader.status()


def worker_error(error):
    # What the ZeroGPU worker does with an exception of the function it runs, and the trip
    # of its result through the worker's queue back to the page (zero/wrappers.py:442-450,
    # 474-484).
    def failing(*args, **kwargs):
        raise error
        yield

    handler = wrap_for_spaces(
        failing, lambda *a: 60, {"SPACE_ID": "a/b", "SPACES_ZERO_GPU": "true"}, user_error
    )
    task = handler.__wrapped__  # what the worker runs (spaces wraps it with functools.wraps)
    try:
        list(task())
    except Exception as raised:
        result = pickle.loads(pickle.dumps(exception_result(raised)))
    gradio_error = result.gradio_error
    return None if gradio_error is None else gradio_error.message


def generate_on_the_page():
    # Generate as a visitor's page sends it: the job is recorded (submit_page), then the
    # page's next event (run_in_page) runs it through the runner inside spaces.GPU. The
    # scheduler is the one thing not reachable here: its call is recorded (what the visitor
    # is billed through: the request's X-IP-Token, zero/client.py:131-132, and the duration)
    # and refused as a full quota would be, before any GPU process is forked.
    from allegro.jobs import JobStore
    from tests.gradio_http import PageSession
    from ui.config import JOBS_DB_NAME
    from ui.estimates import estimate_seconds, request_shape
    from ui.zerogpu import gpu_duration

    scheduled = []

    def schedule(task_id, request=None, duration=None, gpu_size=None, **_):
        headers = getattr(request, "headers", {}) or {}
        scheduled.append({"seconds": duration.total_seconds(), "token": headers.get("x-ip-token")})
        raise gr.Error("No GPU left on this test machine.")

    zero_client.schedule = schedule
    page = PageSession(f"http://127.0.0.1:{port}/", headers={"X-IP-Token": "visitor-token"})
    token = page.call("on_page_load", "").data[0]
    controls = ["a zerogpu fish", "", 7, 2, 7.5, "default", "default", True, False, None]
    inputs = [*controls, False, False, "Text to video", None, None, False, 1, token]
    queued = page.call("submit_page", *inputs)
    store = JobStore(Path(output_dir) / JOBS_DB_NAME)
    recorded = [(job.state.value, job.request.prompt) for job in store.list()]
    ran = page.call("run_in_page", token, timeout=120)
    (job,) = store.list()
    request = job.request
    estimate = estimate_seconds(status.hardware, request_shape(request))
    limit = loader.config.zero_gpu_max_seconds

    # /generate the same way: a job, run by the caller's own call (billed through it).
    from gradio_client import Client

    headers = {"X-Allegro-Key": "k" * 40, "X-IP-Token": "api-token"}
    api = Client(f"http://127.0.0.1:{port}/", headers=headers, verbose=False)
    try:
        api.predict(prompt="an api fish", steps=2, api_name="/generate")
        api_error = None
    except Exception as raised:
        api_error = str(raised)
    api_jobs = [(j.state.value, j.error) for j in store.list() if j.request.prompt == "an api fish"]
    return {
        "api_error": api_error,
        "api_jobs": api_jobs,
        "queued_error": queued.error,
        "recorded": recorded,
        "ran_error": ran.error,
        "scheduled": scheduled,
        "expected_seconds": min(gpu_duration(estimate, limit), limit),
        "job": [job.state.value, job.attempts, job.started is not None, job.error],
    }


from pathlib import Path

print(json.dumps({
    "page_job": generate_on_the_page(),
    "phase": status.phase.value,
    "error": status.error,
    "device": status.device,
    "gpu_name": status.hardware and status.hardware.gpu_name,
    "multiprocessors": status.hardware and status.hardware.multiprocessors,
    "loader_thread": loader.manager._thread is not None,
    "packed_bytes": zero_torch.size(),
    "message_error": worker_error(AllegroError("No space left on the disk.")),
    "bug_error": worker_error(ValueError("a bug")),
    "bug_message": BUG_MESSAGE,
}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory) -> dict:
    """One app started as on a ZeroGPU Space, and what the script saw there."""
    tmp_path = tmp_path_factory.mktemp("zerogpu")
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",  # never reached: no GPU call
        "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "zerogpu"),
        "ZEROGPU_MMAP_AUTOPRUNE_PATTERN": str(tmp_path / "no-such-cache" / "*"),
        "SPACE_ID": "someone/allegro-studio",  # spaces.GPU wraps generation only on a Space
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model), str(tmp_path / "out"), str(_free_port())],
        env=environ,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_on_zerogpu_the_model_loads_before_launch_and_errors_keep_their_message(report):
    """Loaded on the main thread before launch (not in a thread after it, where CUDA is not
    emulated), so ZeroGPU packs real weights; the slice's multiprocessors reach the
    estimates; and an engine error comes back from the worker as its own message, not as
    "ZeroGPU worker error"."""
    assert report["phase"] == "ready", report["error"]
    assert report["device"] == "cuda" and report["gpu_name"] == "NVIDIA H200"
    assert report["multiprocessors"] == 60  # spaces 0.51.3 zero/configs.json
    assert not report["loader_thread"]
    assert report["packed_bytes"] > 0  # the weights were there to pack at launch
    assert report["message_error"] == "No space left on the disk."
    assert report["bug_error"] == report["bug_message"]


@pytest.mark.slow
def test_on_zerogpu_generate_records_a_job_and_runs_it_in_the_visitors_gpu_call(report):
    """Generate on a ZeroGPU page: a job in the store at once (queued), then run through
    the runner by the page's own event inside spaces.GPU, billed through that event's
    request (its X-IP-Token) for the duration ui.zerogpu.gpu_duration gives; the
    scheduler's refusal is the job's recorded outcome, not a page crash."""
    page = report["page_job"]
    assert page["queued_error"] is None
    assert page["recorded"] == [["queued", "a zerogpu fish"]]
    assert page["ran_error"] is None
    assert page["scheduled"][0] == {"seconds": page["expected_seconds"], "token": "visitor-token"}
    assert page["job"] == ["failed", 1, True, "No GPU left on this test machine."]
    # /generate: a job too, run in the caller's own call, billed through its request.
    assert page["api_jobs"] == [["failed", "No GPU left on this test machine."]]
    assert "No GPU left on this test machine." in page["api_error"]
    assert len(page["scheduled"]) == 2 and page["scheduled"][1]["token"] == "api-token"
