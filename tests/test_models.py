"""The model lifecycle: background load with ProgressEvents, failed stays failed, and jobs
never start a load (nor a download) themselves."""

from __future__ import annotations

import os

import pytest

import allegro.loading
from allegro.errors import ModelUnavailableError
from allegro.events import ProgressEvent, Stage
from allegro.jobs import EngineWorker, JobRunner, JobState, JobStore
from allegro.models import ModelManager, ModelSettings, Phase
from allegro.request import GenerationRequest


def _manager(tmp_path, model: str) -> ModelManager:
    settings = ModelSettings(output_dir=tmp_path / "out", model=model)
    return ModelManager(settings, dict(os.environ), has_cuda=lambda: False)


def test_loads_in_the_background_reporting_progress_events(tiny_model, tmp_path, monkeypatch):
    real_fetch = allegro.loading.fetch_source

    def fetch_with_a_download(source, patterns, on_progress):
        on_progress(ProgressEvent(Stage.DOWNLOADING, 0.0, step=5, total=10, message="5 of 10"))
        return real_fetch(source, patterns, on_progress)

    monkeypatch.setattr(allegro.loading, "fetch_source", fetch_with_a_download)
    allegro.loading.PIPELINE_CACHE.release()  # another test's load of the same model: none
    manager = _manager(tmp_path, str(tiny_model))
    events: list[ProgressEvent] = []
    manager.add_listener(events.append)
    manager.start()
    engine = manager.ready_engine(timeout=300)
    state = manager.state()
    assert state.ready and state.loaded is not None and state.choice.model == str(tiny_model)
    assert engine is manager.engine()
    stages = [event.stage for event in events]
    assert stages[0] == Stage.DOWNLOADING and Stage.LOADING in stages


def test_a_failed_load_stays_failed_and_jobs_never_load(tmp_path, monkeypatch, no_network):
    fetches = []
    real_fetch = allegro.loading.fetch_source

    def counting_fetch(source, patterns, on_progress):
        fetches.append(source)
        return real_fetch(source, patterns, on_progress)

    monkeypatch.setattr(allegro.loading, "fetch_source", counting_fetch)
    manager = _manager(tmp_path, "someone/not-in-the-cache")  # offline in tests
    manager.start()
    with pytest.raises(ModelUnavailableError, match=r"not .*in the Hugging Face cache"):
        manager.ready_engine(timeout=60)
    assert manager.state().phase == Phase.FAILED and fetches == ["someone/not-in-the-cache"]
    with pytest.raises(ModelUnavailableError, match="could not be loaded"):
        manager.engine()

    store = JobStore(tmp_path / "jobs.sqlite")
    runner = JobRunner(store, [EngineWorker(manager.ready_engine, tmp_path / "out")])
    job = runner.submit(GenerationRequest("a fox"), owner="ann")
    runner.start()
    final = runner.wait(job.id)
    assert final.state == JobState.FAILED and "Retry loading" in final.error
    assert len(fetches) == 1  # the job did not start a (down)load of its own
    assert manager.state().phase == Phase.FAILED  # still failed, with its reason
    runner.stop(timeout=5)

    manager.start()  # an explicit retry tries again
    with pytest.raises(ModelUnavailableError):
        manager.ready_engine(timeout=60)
    assert len(fetches) == 2
