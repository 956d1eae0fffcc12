"""bench/gpu.py's compile watch: recompilations and graph breaks are counted and logged."""

from __future__ import annotations

import importlib.util
import sys

import torch

from tests.conftest import REPO_ROOT


def _bench_gpu(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_compile_watch_counts_recompilations_and_graph_breaks(monkeypatch):
    """A function whose guarded state changes every call (as fast mode's hook state does)
    and that breaks its graph: dynamo's eager backend, no compiler needed."""
    bench = _bench_gpu(monkeypatch)
    state = {"iteration": 0}

    def step(x):
        y = x * state["iteration"]
        torch._dynamo.graph_break()
        return y + 1

    compiled = torch.compile(step, backend="eager")
    with bench.CompileWatch() as watch:
        for iteration in range(3):
            state["iteration"] = iteration
            compiled(torch.ones(3))
    summary = watch.summary()
    recompiles = len(watch.events["recompiles"])
    assert recompiles >= 1 and len(watch.events["graph_breaks"]) >= 1
    assert f"{recompiles} recompilation(s)" in summary and "Recompiling function step" in summary
    torch._dynamo.reset()
