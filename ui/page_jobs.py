"""The page's side of jobs: Generate queues jobs and returns, and each open page follows its
person's jobs in the runner (progress, preview, results, the Queue panel) without owning
them: closing or reloading the page never cancels a job; a new page picks them up again.

Nothing here runs a generation: the runner's worker does (``allegro.jobs``), or on ZeroGPU
the visitor's own page event, through ``ui.zerogpu_jobs`` (``run_in_page``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr

from allegro.errors import AllegroError, InvalidRequestError
from allegro.jobs import Job, JobRunner, JobState
from allegro.request import MAX_SEED, GenerationRequest, parse_seed
from ui import gallery
from ui.components import JobPicker
from ui.controls import page_validations
from ui.estimates import format_duration
from ui.formatting import progress_description, result_markdown
from ui.presets import ControlValues, control_names
from ui.services import Services, unexpected_refusal, user_error

logger = logging.getLogger(__name__)

MAX_VARIATIONS = 16  # per prompt; the per-person job limit bounds a batch as a whole
MAX_BATCH = 1000  # videos one click may ask for, whatever the limits: counted before building
RECENT_JOBS = 10  # finished jobs the Queue panel lists
UPDATES_PER_SECOND = 4  # a page's follower redraws at most this often

BATCH_FIELDS = ("each_line", "variations")
KEEP_OPEN = (
    "Keep this page open: on ZeroGPU your video runs on your GPU quota while the page is open."
)


def submit_inputs() -> tuple[str, ...]:
    """What Generate sends on a server with jobs, by name: the controls, then the batch
    options, then the page's token."""
    return (*control_names(), *BATCH_FIELDS, "owner_id")


STATE_WORDS = {
    JobState.QUEUED: "waiting",
    JobState.RUNNING: "running",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.INTERRUPTED: "stopped",
}

# Run in the page when one of the person's jobs ends (the hidden #job-ended box changes):
# in a background tab, the title says so and, if the person allowed it, a notification.
NOTIFY_JS = """
(text) => {
  if (!text) return;
  let job;
  try { job = JSON.parse(text); } catch (error) { return; }
  if (!document.hidden) return;
  const word = job.state === "done" ? "ready" : job.state;
  if (!window.allegroEnded) {  // back on the tab, the title is the app's again
    window.allegroTitle = document.title;
    document.addEventListener("visibilitychange", () => {
      window.allegroEnded = 0;
      document.title = window.allegroTitle;
    }, { once: true });
  }
  window.allegroEnded = (window.allegroEnded || 0) + 1;
  document.title = `(${window.allegroEnded}) Video ${word} · ${window.allegroTitle}`;
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification(`Allegro Studio: video ${word}`, { body: job.prompt, tag: job.id });
  }
}
"""
# Asked on Generate (a click: browsers ask for permission only after one).
ASK_PERMISSION_JS = """
() => {
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission();
  }
}
"""


def batch_requests(
    controls: ControlValues,
    each_line: bool,
    variations: Any,
    check_count: Callable[[int], None] | None = None,
) -> list[GenerationRequest]:
    """The jobs one click asks for: one per prompt line (if ``each_line``), each in
    ``variations`` seeds s, s+1, ... (s: the seed asked for, or one random seed for the
    whole batch, so its prompts can be compared). The videos are counted before any request
    is built: ``check_count`` (the job limits) and MAX_BATCH refuse a batch by its size, so
    100,000 lines cost no more than one."""
    try:
        count = 1 if variations in (None, "") else int(variations)
    except (TypeError, ValueError):
        message = f"Variations must be a whole number, not {variations!r}."
        raise InvalidRequestError(message) from None
    if not 1 <= count <= MAX_VARIATIONS:
        raise InvalidRequestError(
            f"Variations must be between 1 and {MAX_VARIATIONS} per prompt, not {count}."
        )
    prompts = [controls.prompt]
    if each_line:
        prompts = [line.strip() for line in (controls.prompt or "").splitlines() if line.strip()]
        if not prompts:
            raise InvalidRequestError("The prompt is empty: write one prompt per line.")
    videos = len(prompts) * count
    if check_count is not None:
        check_count(videos)
    if videos > MAX_BATCH:
        raise InvalidRequestError(
            f"These are {videos:,} videos; one Generate makes at most {MAX_BATCH:,}."
        )
    seed = parse_seed(controls.seed)
    if seed is None and videos > 1:  # one seed for the batch: comparable
        seed = secrets.randbelow(MAX_SEED + 1)
    requests = []
    for prompt in prompts:
        for offset in range(count):
            asked = None if seed is None else (seed + offset) % (MAX_SEED + 1)
            requests.append(replace(controls, prompt=prompt, seed=asked).to_request())
    return requests


@dataclass
class QueuePanel:
    """The Queue panel's components."""

    table: gr.HTML
    choice: JobPicker
    up: gr.Button
    down: gr.Button
    cancel: gr.Button
    ended: gr.Textbox  # hidden: the last job that ended, for the page's notification script


def build_queue_panel() -> QueuePanel:
    with gr.Accordion("Queue", open=True, elem_id="queue"):
        table = gr.HTML("", elem_id="queue-table")
        choice = JobPicker([], label="Pick a waiting or running video", elem_id="queue-choice")
        with gr.Row():
            up = gr.Button("Move up", size="sm", elem_id="queue-up")
            down = gr.Button("Move down", size="sm", elem_id="queue-down")
            cancel = gr.Button("Cancel / remove", size="sm", variant="stop", elem_id="queue-cancel")
    ended = gr.Textbox(visible="hidden", elem_id="job-ended")
    return QueuePanel(table, choice, up, down, cancel, ended)


@dataclass
class ResultPanel:
    """Where the page shows the running job and the last finished one."""

    preview: gr.Image
    run_status: gr.Markdown
    video: gr.Video
    info: gr.Markdown
    settings: gr.JSON
    last_seed: gr.State


@dataclass
class GalleryOutputs:
    view: gr.Gallery
    names: gr.State


@dataclass
class _Shown:
    """What a page was last sent, so a follower sends only what changed."""

    table: str | None = None
    choices: list | None = None
    status: str | None = None
    preview_of: str | None = None  # the job whose preview is shown
    preview: Any = None
    following: set[str] = field(default_factory=set)  # active jobs this page has seen
    note: str = ""  # what became of the last job that ended without a video


def queue_table(jobs: Sequence[Job], position: Callable[[Job], int]) -> str:
    """The person's jobs as an HTML table: place in the whole queue, state, progress, ETA."""
    if not jobs:
        return "<p class='queue-empty'>No videos queued. Generate adds one here.</p>"
    rows = []
    for job in jobs:
        place = f"{position(job) + 1}" if job.state == JobState.QUEUED else ""
        progress, eta = "", ""
        if job.state == JobState.RUNNING and job.progress is not None:
            progress = f"<progress max='1' value='{job.progress.fraction:.3f}'></progress> "
            progress += f"{job.progress.fraction:.0%}"
            if job.progress.eta is not None:
                eta = f"about {format_duration(job.progress.eta)}"
        state = STATE_WORDS[job.state]
        title = html.escape(job.error or job.note or "", quote=True)
        rows.append(
            f"<tr data-job='{job.id}' data-state='{job.state.value}'><td>{place}</td>"
            f"<td title='{title}'>{state}</td><td>{html.escape(job.request.prompt[:80])}</td>"
            f"<td>{job.seed}</td><td>{progress}</td><td>{eta}</td></tr>"
        )
    head = "".join(
        f"<th>{name}</th>" for name in ("#", "State", "Prompt", "Seed", "Progress", "Left")
    )
    return f"<table class='queue-table'><tr>{head}</tr>{''.join(rows)}</table>"


def choice_label(job: Job) -> str:
    return f"{job.request.prompt[:40]} · seed {job.seed} · {job.id[:6]}"


def status_line(running: Job | None, waiting: int, note: str = "") -> str:
    """The running job's progress (percent, stage, elapsed, ETA), what became of the last
    job that ended without a video, and how many wait."""
    lines = [note, f"{waiting} more waiting." if waiting else ""]
    if running is not None:
        event = running.progress
        line = progress_description(event) if event is not None else "Starting …"
        if event is not None:
            line = f"**{event.fraction:.0%}** · {line}"
        lines.insert(0, line)
    return "  \n".join(line for line in lines if line)


class PageJobs:
    """The page's handlers on a server with a job runner."""

    def __init__(
        self,
        studio: Services,
        runner: JobRunner,
        refresh_gallery: Callable[[Any], tuple[list, list[str]]],
        run_waiting: Callable[[str], Awaitable[list[Job]]] | None = None,
    ) -> None:
        self.studio = studio
        self.runner = runner
        self.refresh_gallery = refresh_gallery  # (gallery items, names) for a page's token
        # On ZeroGPU: runs a person's queued jobs in their page's event (ui.zerogpu_jobs)
        self.run_waiting = run_waiting

    # ---- queueing ------------------------------------------------------------------------

    def _owner_tag(self, owner_id: Any) -> str:
        """The job owner behind a page's token (gr.Error if this server did not issue it)."""
        try:
            return self.studio.page_owner(owner_id).tag
        except AllegroError as error:
            raise user_error(error) from None

    def _batch(self, values: Sequence[Any]) -> tuple[str, list[GenerationRequest], dict]:
        """(job owner, requests, labels) from Generate's inputs (``submit_inputs``)."""
        form = dict(zip(submit_inputs(), values, strict=True))
        controls = ControlValues(**{name: form[name] for name in control_names()})
        owner, first = self.studio.page_request(form["owner_id"], controls)
        uploads = {"first_image": first.first_image, "last_image": first.last_image}
        controls = replace(controls, **{key: value for key, value in uploads.items() if value})
        limits = functools.partial(self.runner.check_limits, owner.tag)
        requests = batch_requests(controls, bool(form["each_line"]), form["variations"], limits)
        requests = [self.studio.prompt_help.with_original(owner, r) for r in requests]
        return owner.tag, requests, self.studio.labels(owner)

    def check_submit(self, *values: Any) -> list[dict]:
        """Generate's validator: the caller, every request of the batch and the limits, at
        once, before anything is queued (it waits for nothing: no GPU, no other job)."""
        problem, field = None, None
        try:
            owner, requests, _labels = self._batch(values)
            for generation in requests:
                self.studio.prepare(generation)
            self.runner.check_limits(owner, len(requests))
        except AllegroError as error:
            problem, field = str(error), error.field
        except Exception as error:  # a bug: refused, never queued
            problem = unexpected_refusal(error)
        return page_validations(submit_inputs(), problem, field)

    async def submit_page(self, *values: Any) -> None:
        """Queue the batch and return at once; the page's follower shows the jobs."""
        try:
            owner, requests, labels = self._batch(values)
            prepared = [self.studio.prepare(generation) for generation in requests]
            jobs = await asyncio.to_thread(self.runner.submit_many, prepared, owner, labels)
        except Exception as error:
            raise user_error(error) from None
        gr.Info(f"Queued {len(jobs)} video{'s' if len(jobs) > 1 else ''}.")

    async def submit_page_extension(self, name: Any, *fields: Any) -> None:
        """Extend on a gallery video: the continuation is queued like any job. Its inputs are
        check_extend_page's (the validator): the selected name, the settings, the page's
        token."""
        *settings, owner_id = fields
        try:
            owner = self.studio.page_owner(owner_id)
            extension = self.studio.page_extension(name, owner, *settings)
            prepared = self.studio.prepare(extension)
            await asyncio.to_thread(
                self.runner.submit, prepared, owner.tag, self.studio.labels(owner)
            )
        except Exception as error:
            raise user_error(error) from None
        gr.Info("Queued the continuation.")

    async def run_in_page(self, owner_id: Any) -> None:
        """On ZeroGPU, after Generate or Extend queued: this person's queued jobs run here,
        in their page's event, each inside its own GPU call on their quota; the follower
        shows them as any job. A closed page stops this (its jobs wait for it again)."""
        if self.run_waiting is None:
            return
        tag = self._owner_tag(owner_id)
        gr.Info(KEEP_OPEN)
        await self.run_waiting(tag)

    # ---- acting on queued jobs -------------------------------------------------------------

    def _act(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as error:
            raise user_error(error) from None

    def cancel_picked(self, job_id: str | None, owner_id: Any) -> None:
        """Cancel / remove the picked job (the owner's own: others read as unknown)."""
        if not job_id:
            raise gr.Error("Pick a video in the queue first.", print_exception=False)
        self._act(lambda: self.runner.cancel(str(job_id), self._owner_tag(owner_id)))

    def cancel_running(self, owner_id: Any) -> None:
        """The Cancel button beside Generate: stop this person's running video (or, if none
        runs, their next waiting one)."""
        tag = self._owner_tag(owner_id)
        active = [job for job in self.runner.list(tag, finished=0)]
        target = next((job for job in active if job.state == JobState.RUNNING), None)
        target = target or next(iter(active), None)
        if target is None:
            gr.Info("Nothing of yours is running or waiting.")
            return
        self._act(lambda: self.runner.cancel(target.id, tag))

    def move(self, offset: int):
        def move(job_id: str | None, owner_id: Any) -> None:
            if not job_id:
                raise gr.Error("Pick a waiting video in the queue first.", print_exception=False)
            self._act(lambda: self.runner.move(str(job_id), self._owner_tag(owner_id), offset))

        return move

    # ---- following -------------------------------------------------------------------------

    def follower(self, result: ResultPanel, queue: QueuePanel, gallery_outputs: GalleryOutputs):
        """The page-load handler that follows a page's jobs, writing to these components."""

        async def follow_jobs(owner_id: Any) -> AsyncIterator[dict]:
            async for updates in self.follow(result, queue, gallery_outputs, owner_id):
                yield updates

        return follow_jobs

    async def follow(
        self,
        result: ResultPanel,
        queue: QueuePanel,
        gallery_outputs: GalleryOutputs,
        owner_id: Any,
    ) -> AsyncIterator[dict]:
        """For as long as the page is open: its person's jobs, as they change (redrawn at
        most UPDATES_PER_SECOND). Gradio ends this when the page goes (its session's events
        are cancelled: gradio/routes.py:1829-1830); the jobs go on."""
        tag = self._owner_tag(owner_id)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:  # on the runner's threads, under its lock
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is stopping
                loop.call_soon_threadsafe(changed.set)

        unsubscribe = self.runner.subscribe(wake)
        shown = _Shown()
        first = True
        try:
            while True:
                changed.clear()
                jobs = await asyncio.to_thread(self.runner.list, tag, RECENT_JOBS)
                outputs = (result, queue, gallery_outputs, owner_id)
                updates = self._updates(jobs, shown, *outputs, first)
                first = False
                if updates:
                    yield updates
                await changed.wait()
                await asyncio.sleep(1 / UPDATES_PER_SECOND)
        finally:
            unsubscribe()

    def _updates(
        self,
        jobs: list[Job],
        shown: _Shown,
        result: ResultPanel,
        queue: QueuePanel,
        gallery_outputs: GalleryOutputs,
        owner_id: Any,
        first: bool,
    ) -> dict:
        updates: dict = {}
        active = [job for job in jobs if not job.state.finished]
        running = next((job for job in active if job.state == JobState.RUNNING), None)

        table = queue_table(jobs, lambda job: self.runner.queue_position(job.id))
        if table != shown.table:
            updates[queue.table] = shown.table = table
        choices = [(choice_label(job), job.id) for job in active]
        if choices != shown.choices:
            shown.choices = choices
            updates[queue.choice] = gr.update(choices=choices)

        if running is not None:
            if running.id != shown.preview_of:
                shown.preview_of, shown.preview = running.id, None
                updates[result.preview] = gr.update(value=None, visible=True)
            if running.preview is not None and running.preview is not shown.preview:
                shown.preview = running.preview
                updates[result.preview] = gr.update(value=running.preview, visible=True)
        elif shown.preview_of is not None or first:
            shown.preview_of = shown.preview = None
            updates[result.preview] = gr.update(value=None, visible=False)

        by_id = {job.id: job for job in jobs}
        ended = []
        for job_id in shown.following - {job.id for job in active}:
            job = by_id.get(job_id) or self.runner.get(job_id)
            if job.state.finished:
                ended.append(job)
        ended.sort(key=lambda job: job.finished or 0)
        shown.following = {job.id for job in active}
        if ended:
            shown.note = self._show_ended(ended, updates, result, gallery_outputs, owner_id)
            last = ended[-1]
            updates[queue.ended] = json.dumps(
                {"id": last.id, "state": last.state.value, "prompt": last.request.prompt[:200]}
            )
        status = status_line(running, len(active) - (running is not None), shown.note)
        if status != shown.status:
            updates[result.run_status] = shown.status = status
        return updates

    def _show_ended(
        self,
        ended: list[Job],
        updates: dict,
        result: ResultPanel,
        gallery_outputs: GalleryOutputs,
        owner_id: Any,
    ) -> str:
        """The newest finished video in the result area, the gallery again, and a line for
        a job that did not make one (returned, for the status)."""
        message = ""
        for job in ended:
            if job.state == JobState.DONE and job.video:
                try:
                    entry = gallery.find_entry(self.studio.output_dir, Path(job.video).stem, None)
                except AllegroError:  # deleted meanwhile
                    continue
                for warning in job.warnings:
                    gr.Warning(warning)
                seconds = (job.finished or 0) - (job.started or 0)
                updates[result.video] = gr.update(
                    value=self.studio.publish(entry.video), visible=True
                )
                updates[result.info] = result_markdown(entry.settings, seconds, entry.video.name)
                updates[result.settings] = entry.settings
                updates[result.last_seed] = job.seed
                message = ""
            else:  # named: with a queue, it need not be the one on screen
                outcome = job.error or STATE_WORDS[job.state]
                if job.state != JobState.CANCELLED:
                    outcome = f"**Not made:** {outcome}"
                message = f"“{html.escape(job.request.prompt[:60])}”: {outcome}"
        items, names = self.refresh_gallery(owner_id)
        updates[gallery_outputs.view] = items
        updates[gallery_outputs.names] = names
        return message
