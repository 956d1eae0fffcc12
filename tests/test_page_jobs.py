"""The page's side of jobs without a browser: batches, the Queue panel's text, and a page's
follower on a real runner (a fake worker: only the following is under test here; the
browser tests drive the whole page)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from allegro.errors import InvalidRequestError
from allegro.events import ProgressEvent, Stage
from allegro.jobs import Job, JobRunner, JobState, JobStore
from allegro.request import MAX_SEED, GenerationRequest
from tests.test_jobs import FakeWorker
from ui.identity import Owner
from ui.page_jobs import (
    GalleryOutputs,
    PageJobs,
    QueuePanel,
    ResultPanel,
    batch_requests,
    queue_table,
    status_line,
)
from ui.presets import ControlValues


def test_a_batch_is_one_job_per_line_times_variations_with_consecutive_seeds():
    controls = ControlValues(prompt="a red kite\n\n  a snail  \n", seed=MAX_SEED, steps=2)
    jobs = batch_requests(controls, each_line=True, variations=2)
    assert [(job.prompt, job.seed) for job in jobs] == [
        ("a red kite", MAX_SEED),
        ("a red kite", 0),  # wraps around
        ("a snail", MAX_SEED),
        ("a snail", 0),
    ]
    assert batch_requests(controls, each_line=False, variations=1)[0].prompt == controls.prompt
    random_seed = batch_requests(ControlValues(prompt="a\nb", seed=-1), True, 1)
    assert random_seed[0].seed == random_seed[1].seed is not None  # one seed for the batch
    assert batch_requests(ControlValues(prompt="a", seed=-1), False, 1)[0].seed is None


@pytest.mark.parametrize(
    ("prompt", "variations", "message"),
    [
        ("a", 0, "between 1 and 16"),
        ("a", 17, "between 1 and 16"),
        ("a", "many", "whole number"),
        (" \n \n", 1, "one prompt per line"),
    ],
)
def test_a_bad_batch_is_refused_with_a_reason(prompt, variations, message):
    with pytest.raises(InvalidRequestError, match=message):
        batch_requests(ControlValues(prompt=prompt), True, variations)


def _job(state: JobState, prompt: str = "a kite", **fields) -> Job:
    return Job(id="j" + state.value, owner="ann", request=GenerationRequest(prompt, seed=5),
               state=state, **fields)  # fmt: skip


def test_the_queue_table_shows_place_progress_and_eta_and_escapes_prompts():
    running = _job(
        JobState.RUNNING,
        progress=ProgressEvent(Stage.DENOISING, 0.25, step=10, total=40, eta=90.0),
    )
    waiting = _job(JobState.QUEUED, "<script>alert(1)</script>")
    failed = _job(JobState.FAILED, error="out of memory")
    table = queue_table([running, waiting, failed], lambda job: 1)
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert "value='0.250'" in table and "25%" in table and "about 1 min" in table
    assert "<td>2</td><td title=''>waiting</td>" in table  # 1 job before it: place 2
    assert "title='out of memory'>failed" in table
    assert "No videos queued" in queue_table([], lambda job: 0)


def test_the_status_line_says_progress_outcome_and_what_waits():
    running = _job(JobState.RUNNING, progress=ProgressEvent(Stage.DENOISING, 0.5, 2, 4))
    line = status_line(running, 2, "Cancelled: no video was saved.")
    assert line.startswith("**50%** · ") and "2 more waiting." in line
    assert "Cancelled" in line
    assert status_line(None, 0) == ""


class _Gallery:
    def refresh_gallery(self, token):
        return ["gallery of " + token], []


class _Studio:
    """What a follower needs from the Studio: who a token is (the gallery is passed apart)."""

    output_dir = Path("/nonexistent")

    def page_owner(self, token):
        return Owner(tag=token, kind="page")


def test_a_follower_shows_its_persons_jobs_live_and_leaves_nothing_behind(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    worker = FakeWorker(tmp_path)
    worker.gate.clear()
    runner = JobRunner(store, [worker])
    page = PageJobs(_Studio(), runner, _Gallery().refresh_gallery)  # type: ignore[arg-type]
    result = ResultPanel("preview", "status", "video", "info", "settings", "seed")  # type: ignore[arg-type]
    queue = QueuePanel("table", "choice", None, None, None, "ended")  # type: ignore[arg-type]
    gallery = GalleryOutputs("gallery", "names")  # type: ignore[arg-type]

    async def follow() -> list[dict]:
        seen = []
        follower = page.follow(result, queue, gallery, "ann")
        mine = runner.submit(GenerationRequest("mine", steps=2), owner="ann")
        runner.submit(GenerationRequest("someone else's", steps=2), owner="bob")
        seen.append(await anext(follower))  # at once: the queued job
        runner.start()
        while not any("preview" in update and update["preview"]["visible"] for update in seen):
            seen.append(await anext(follower))
        worker.gate.set()
        while "ended" not in seen[-1]:
            seen.append(await anext(follower))
        await follower.aclose()  # the page went away
        assert runner.get(mine.id).state == JobState.DONE
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), 30))
    tables = [update["table"] for update in seen if "table" in update]
    assert "mine" in tables[0] and "data-state='queued'" in tables[0]
    assert all("someone else" not in table for table in tables)
    assert any("data-state='running'" in table for table in tables)
    preview = next(
        u["preview"]["value"] for u in seen if u.get("preview", {}).get("value") is not None
    )
    assert isinstance(preview, np.ndarray)
    assert '"state": "done"' in seen[-1]["ended"] and seen[-1]["gallery"] == ["gallery of ann"]
    assert runner._listeners == []  # the closed follower unsubscribed
    runner.stop(timeout=5)
    store.close()


def test_the_public_api_is_the_documented_one(tmp_path):
    from ui.config import parse_config
    from ui.layout import build_blocks
    from ui.model_status import ModelLoader
    from ui.studio import Studio

    config = parse_config(["--output-dir", str(tmp_path), "--model", str(tmp_path / "none")])
    studio = Studio(config, ModelLoader(config), os.environ, jobs_db=config.jobs_db_path)
    demo = build_blocks(studio)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    prompt_help = {"improve_prompt", "write_shots"}  # issue 24, on unless --prompt-model none
    assert (
        public == {"generate", "extend", "history", "submit", "job", "cancel", "jobs"} | prompt_help
    )
