"""Several devices on one machine: --devices, one worker and one pipeline per device, the
offload chosen per device, host RAM checked before loading, and the runner's side (cancel
reaches the right worker, a lost worker's job runs on another, waits count the workers).
GPUs are faked only where torch.cuda is asked; CPU "devices" run the real tiny model."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from allegro import costs
from allegro.devices import Device, check_host_memory, parse_devices, resolve_devices
from allegro.errors import UnsupportedSetupError
from allegro.jobs import JobRunner, JobState, JobStore, WorkerLost, add_device_workers
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest
from tests.test_jobs import FakeWorker, request

GB = 10**9


def test_devices_are_parsed_and_resolved_with_clear_refusals():
    assert resolve_devices("all", 3, 16) == tuple(Device(f"cuda:{i}") for i in range(3))
    assert resolve_devices("all", 0, 16) == (Device("cpu"),)
    assert resolve_devices(" 0, 3 ", 4, 16) == (Device("cuda:0"), Device("cuda:3"))
    assert resolve_devices("cpu,cpu", 0, 2) == (Device("cpu", 1), Device("cpu", 1))
    assert resolve_devices("cpu,cpu,cpu", 0, 16) == (Device("cpu", 5),) * 3
    with pytest.raises(UnsupportedSetupError, match="there is no GPU 2; PyTorch sees 2"):
        resolve_devices("0,2", 2, 16)
    with pytest.raises(UnsupportedSetupError, match="PyTorch sees none"):
        resolve_devices("0", 0, 16)
    for bad, message in [("0,0", "twice"), ("gpu", "not understood"), ("0,", "empty")]:
        with pytest.raises(UnsupportedSetupError, match=message):
            parse_devices(bad)


def test_the_app_refuses_bad_devices_before_starting():
    from ui.config import parse_config

    assert parse_config([], environ={"ALLEGRO_DEVICES": "1, 0"}).devices == "1,0"
    assert parse_config([]).devices == "all"
    with pytest.raises(SystemExit):
        parse_config(["--devices", "0,0"], environ={})
    with pytest.raises(SystemExit):  # ZeroGPU lends one GPU
        parse_config(["--devices", "0,1"], environ={"SPACES_ZERO_GPU": "1"})


def test_offload_is_chosen_from_each_devices_own_free_memory(monkeypatch):
    """Only torch.cuda's answer is faked: cuda:0 has 80 GB free, cuda:1 12 GB."""
    import psutil
    import torch

    from allegro.devices import predicted_offload
    from allegro.loading import choose_offload
    from allegro.request import NativeSize

    free = {0: 80 * GB, 1: 12 * GB}
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return free[torch.device(device).index], 80 * GB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 512 * GB}))
    native = NativeSize(88, 720, 1280)
    big = choose_offload("auto", "cuda:0", "bf16", native)
    small = choose_offload("auto", "cuda:1", "bf16", native)
    assert [str(torch.device(device)) for device in asked] == ["cuda:0", "cuda:1"]
    assert big.mode == "none" and "80.0 GB free" in big.reason
    assert small.mode != "none" and "12.0 GB free" in small.reason
    # The prediction made before loading (for the RAM check) agrees with the load's choice.
    assert predicted_offload(Device("cuda:1"), "auto", "bf16", "fp32", "off") == small.mode
    assert predicted_offload(Device("cuda:1"), "model", "bf16", "fp32", "off") == "model"


def test_workers_that_cannot_fit_in_host_ram_are_refused_before_loading():
    weights = costs.weight_bytes("bf16")
    assert 15 * GB < weights < 17 * GB  # transformer + T5-XXL + VAE in bf16
    devices = [Device(f"cuda:{i}") for i in range(8)]
    # Without offload the weights live on the GPUs: one copy at a time while loading.
    assert check_host_memory(devices, ["none"] * 8, "bf16", "fp32", "off", 32 * GB) == weights
    # With model offload each worker keeps a CPU copy: 8 copies.
    assert costs.workers_host_bytes(["model"] * 8, "bf16") == 8 * weights
    with pytest.raises(UnsupportedSetupError) as refused:
        check_host_memory(devices, ["model"] * 8, "bf16", "fp32", "off", 64 * GB)
    message = str(refused.value)
    assert "8 workers need about 126.1 GB of host RAM but 64.0 GB is available" in message
    assert "cuda:7 (model)" in message and "--devices" in message


def test_a_manager_refuses_too_many_workers_for_the_ram_before_loading(
    tiny_model, tmp_path, monkeypatch
):
    """The check runs in the background load, before any weights are read."""
    import psutil

    import allegro.loading

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 1000}))
    loads = []
    monkeypatch.setattr(allegro.loading, "load_pipeline", lambda *args: loads.append(args))
    settings = ModelSettings(output_dir=tmp_path, model=str(tiny_model), devices="cpu,cpu")
    manager = ModelManager(settings, dict(os.environ), has_cuda=lambda: False)
    manager.load()
    state = manager.state()
    assert state.phase == Phase.FAILED and "2 workers need about" in state.error
    assert loads == [] and [device.device for device in state.devices] == ["cpu", "cpu"]


def test_two_cpu_workers_each_load_their_own_pipeline_and_make_videos(tiny_model, tmp_path):
    """Two CPU "devices": two engines, two pipelines (prompt-embedding caches and preview
    maps apart), two jobs running at once; each video says which worker made it."""
    settings = ModelSettings(output_dir=tmp_path / "out", model=str(tiny_model), devices="cpu,cpu")
    manager = ModelManager(settings, dict(os.environ), has_cuda=lambda: False)
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), [])
    add_device_workers(runner, manager, settings.output_dir)
    manager.start()
    first, second = (manager.ready_engine(timeout=300, slot=slot) for slot in (0, 1))
    assert first.cache is not second.cache
    assert first.cache.loaded.pipe is not second.cache.loaded.pipe
    assert first.cache.loaded.prompt_cache is not second.cache.loaded.prompt_cache
    state = manager.state()
    assert [device.ready for device in state.devices] == [True, True]
    assert [worker.threads for worker in runner.workers] == [max(1, (os.cpu_count() or 1) // 2)] * 2

    started = threading.Barrier(3, timeout=120)
    jobs = [
        runner.submit(
            GenerationRequest(f"kite {i}", steps=2, frames=24, height=128, width=128), "ann"
        )
        for i in range(2)
    ]
    for job in jobs:  # both must be running at once to pass the barrier

        def wait_running(job_id=job.id):
            for snapshot in runner.watch(job_id):
                if snapshot.state == JobState.RUNNING:
                    started.wait()
                    return

        threading.Thread(target=wait_running, daemon=True).start()
    runner.start()
    started.wait()
    finals = [runner.wait(job.id) for job in jobs]
    assert [final.state for final in finals] == [JobState.DONE] * 2, [f.error for f in finals]
    sidecars = [json.loads(Path(f.video).with_suffix(".json").read_text()) for f in finals]
    assert sorted(s["labels"]["worker"] for s in sidecars) == ["cpu 0", "cpu 1"]
    assert all(s["device"] == "cpu" and s["offload_reason"] for s in sidecars)
    runner.stop(timeout=10)

    # The same seeds on one worker with the same thread count: the same frames.
    import numpy as np
    import torch

    from allegro.video import read_frames

    threads = torch.get_num_threads()
    torch.set_num_threads(runner.workers[0].threads)
    try:
        for final in finals:
            again = first.generate(final.request)
            assert np.array_equal(read_frames(again.video_path)[0], read_frames(final.video)[0])
    finally:
        torch.set_num_threads(threads)


def _two_busy_workers(store, tmp_path, count: int):
    """A runner with two fake workers, each held at the first step of one of ``count``
    queued jobs."""
    workers = [FakeWorker(tmp_path) for _ in range(2)]
    for worker in workers:
        worker.gate.clear()
    runner = JobRunner(store, workers)
    jobs = [runner.submit(request(f"p{i}"), owner="ann") for i in range(count)]
    runner.start()
    assert all(worker.at_first_step.wait(5) for worker in workers)
    return runner, workers, jobs


def test_cancel_reaches_the_worker_running_that_job(store, tmp_path):
    runner, workers, jobs = _two_busy_workers(store, tmp_path, 2)
    running_on = {job_id: worker for worker in workers for job_id in worker.ran}
    runner.cancel(jobs[1].id, owner="ann")
    assert runner.wait(jobs[1].id).state == JobState.CANCELLED
    assert runner.get(jobs[0].id).state == JobState.RUNNING  # the other worker goes on
    running_on[jobs[0].id].gate.set()
    assert runner.wait(jobs[0].id).state == JobState.DONE
    runner.stop(timeout=5)


class LosingWorker(FakeWorker):
    """Loses its device at the job's first step, then stays down until ``back`` is set."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.back = threading.Event()

    def run(self, job, on_progress, cancel):
        self.ran.append(job.id)
        self.at_first_step.set()
        raise WorkerLost("its process was killed")

    def wait_ready(self) -> None:
        self.back.wait(10)


def test_a_job_whose_worker_is_lost_runs_again_on_another(store, tmp_path):
    lost, healthy = LosingWorker(tmp_path), FakeWorker(tmp_path)
    healthy.gate.clear()
    runner = JobRunner(store, [lost])
    job = runner.submit(request("p"), owner="ann")
    runner.start()
    assert lost.at_first_step.wait(5)
    runner.add_worker(healthy)  # a second worker, free when the first is lost
    assert healthy.at_first_step.wait(5)
    rerun = store.get(job.id)  # back in the queue, then taken by the other worker
    healthy.gate.set()
    final = runner.wait(job.id)
    assert final.state == JobState.DONE and "worker was lost" in final.note
    assert rerun.attempts == 2 and healthy.ran == [job.id] and lost.ran == [job.id]
    lost.back.set()
    runner.stop(timeout=5)


def test_waits_count_every_worker(store, tmp_path):
    runner, workers, jobs = _two_busy_workers(store, tmp_path, 5)
    # 2 running; job 2 starts after 1 finishes, job 3 after 2, job 4 after 3 (two rounds).
    waits = [runner.estimated_wait(job.id, 100.0) for job in jobs]
    assert waits == [0.0, 0.0, 100.0, 100.0, 200.0]
    assert runner.estimated_wait(jobs[4].id) is None  # no video timed yet
    for worker in workers:
        worker.gate.set()
    assert all(runner.wait(job.id).state == JobState.DONE for job in jobs)
    for worker in workers:
        worker.gate.clear()
        worker.at_first_step.clear()
    later = [runner.submit(request(f"q{i}"), owner="ann") for i in range(4)]
    assert all(worker.at_first_step.wait(5) for worker in workers)
    typical = runner._typical_seconds()  # the median of the 5 runs above
    assert typical is not None and runner.estimated_wait(later[3].id) == typical
    for worker in workers:
        worker.gate.set()
    runner.stop(timeout=5)


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


def test_the_page_status_lists_each_device_with_its_choice_and_the_ram_needed():
    from allegro.models import DeviceStatus, ModelChoice, ModelState
    from ui.model_status import ModelStatus, Phase, banner_markdown

    devices = (
        DeviceStatus("cuda:0", True, "none", "auto: no offload — needs ~27 GB, 79 GB free", "bf16"),
        DeviceStatus("cuda:1", True, "model", "auto: model offload — 20 GB free", "bf16", "L4"),
    )
    choice = ModelChoice("rhymes-ai/Allegro", None, preview=False)
    state = ModelState(Phase.READY, choice=choice, devices=devices, host_ram_bytes=32 * GB)
    status = ModelStatus(state)
    banner = banner_markdown(status)
    assert "ready on 2 devices" in banner
    assert "- cuda:1 (L4): bf16, offload model (auto: model offload — 20 GB free)" in banner
    assert "host RAM for 2 workers: about 32 GB" in banner
    on_ray = banner_markdown(
        ModelStatus(ModelState(Phase.READY, choice=choice, devices=devices[:1], cluster="auto"))
    )
    assert "ready on the Ray cluster at auto: 1 workers" in on_ray and "cuda:0" in on_ray


def test_devices_that_do_not_exist_fail_the_model_and_its_jobs_say_why(tiny_model, tmp_path):
    settings = ModelSettings(output_dir=tmp_path / "out", model=str(tiny_model), devices="5")
    manager = ModelManager(settings, dict(os.environ), has_cuda=lambda: False)
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), [])
    add_device_workers(runner, manager, settings.output_dir)
    manager.load()
    assert manager.state().phase == Phase.FAILED and "PyTorch sees none" in manager.state().error
    assert len(runner.workers) == 1  # so that queued jobs end with the reason, not wait
    job = runner.submit(request("p"), owner="ann")
    runner.start()
    final = runner.wait(job.id)
    assert final.state == JobState.FAILED and "PyTorch sees none" in final.error
    runner.stop(timeout=5)


def test_a_worker_thread_makes_its_gpu_the_current_device():
    """torch.cuda.device only records the index until entered, so no GPU is needed here;
    group offload's stream and empty_cache act on the current device (see device_context)."""
    import contextlib

    import torch

    from allegro.loading import device_context

    context = device_context("cuda:1")
    assert isinstance(context, torch.cuda.device) and context.idx == 1
    for device in ("cpu", "cuda", None):  # the CPU; this process's one GPU as it is
        assert isinstance(device_context(device), contextlib.nullcontext)


def test_after_a_crash_two_workers_run_the_left_queue_again(store, tmp_path):
    """The jobs issue's restart, with 2 workers on both sides of the crash: both jobs that
    were running run again (with their seeds), then the waiting one."""
    _crashed, workers, jobs = _two_busy_workers(store, tmp_path, 3)
    crashed_store = JobStore(store.path)  # what a crash leaves: the store as it is
    assert [crashed_store.get(job.id).state for job in jobs] == [
        JobState.RUNNING,
        JobState.RUNNING,
        JobState.QUEUED,
    ]
    again = [FakeWorker(tmp_path), FakeWorker(tmp_path)]
    restarted = JobRunner(crashed_store, again)
    restarted.start()
    finals = [restarted.wait(job.id) for job in jobs]
    assert [final.state for final in finals] == [JobState.DONE] * 3
    assert [final.attempts for final in finals] == [2, 2, 1]
    assert all("Interrupted while running" in final.note for final in finals[:2])
    assert [final.seed for final in finals] == [job.seed for job in jobs]
    assert sorted(again[0].ran + again[1].ran) == sorted(job.id for job in jobs)
    restarted.stop(timeout=5)
    for worker in workers:  # the "crashed" runner's threads end without writing
        worker.fail = SystemExit()
        worker.gate.set()
