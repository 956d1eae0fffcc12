"""Prompt help on the page and the API (issue 24): Improve prompt, Undo, rewrite before
queueing, /improve_prompt and /write_shots. The model work is allegro.prompting's.

It runs in its own Gradio concurrency group (``prompt_help``), never in the generation slot
nor in the job runner, so it never holds up a video. The person's own prompt is kept beside
the rewrite (``Rewrites``), so a video made from a rewrite records both (``original_prompt``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from allegro.errors import AllegroError
from allegro.events import ProgressEvent
from allegro.prompting.choose import make_helper
from allegro.prompting.helper import PromptHelper
from allegro.prompting.limits import PersonLimits
from allegro.request import GenerationRequest
from ui.config import AppConfig
from ui.identity import Owner
from ui.presets import IMAGE_TO_VIDEO

logger = logging.getLogger(__name__)

CONCURRENCY = {"concurrency_id": "prompt_help", "concurrency_limit": 2}
API_KEY_VARIABLE = "ALLEGRO_PROMPT_API_KEY"
ANONYMOUS = "anonymous"  # key-less API callers on a shared server share one allowance
LOCAL = "local"  # the one person of a server that is not shared, when calling key-less
BUG_MESSAGE = "Prompt help failed (the details are in the server log); the prompt is unchanged."


@dataclass(frozen=True)
class Rewrite:
    """The page's memory of its last rewrite: what the person wrote, and what came back."""

    original: str
    improved: str


class Rewrites:
    """(person, rewritten prompt) -> the person's own prompt, for the requests that use a
    rewrite unchanged. Bounded; an edited rewrite is the person's own prompt again."""

    def __init__(self, size: int = 2000) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], str] = OrderedDict()

    def record(self, person: str, rewrite: Rewrite) -> None:
        with self._lock:
            self._entries[(person, rewrite.improved.strip())] = rewrite.original
            self._entries.move_to_end((person, rewrite.improved.strip()))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def original_of(self, person: str, prompt: str) -> str | None:
        with self._lock:
            return self._entries.get((person, prompt.strip()))


class PromptHelp:
    """The handlers. ``page_owner`` and ``api_owner`` are the Studio's identity checks."""

    def __init__(
        self,
        config: AppConfig,
        page_owner: Callable[[Any], Owner],
        api_owner: Callable[[gr.Request | None], Owner | None],
        environ: Mapping[str, str] = os.environ,
        helper: PromptHelper | None = None,
    ) -> None:
        self.config = config
        self._page_owner = page_owner
        self._api_owner = api_owner
        self.helper = helper or make_helper(
            config.prompt_model_source, config.prompt_timeout, environ.get(API_KEY_VARIABLE)
        )
        self.limits = PersonLimits(config.prompt_help_per_hour) if config.shared else None
        self.rewrites = Rewrites()

    @property
    def enabled(self) -> bool:
        return self.helper is not None

    def _person(self, owner: Owner | None) -> str | None:
        """Whose rewrites a caller's requests may use: their own; a key-less API caller's
        only when the server is not shared (there they are all the one local person)."""
        if owner is not None:
            return owner.tag
        return None if self.config.shared else LOCAL

    def with_original(self, owner: Owner | None, request: GenerationRequest) -> GenerationRequest:
        """``request`` with the person's own prompt when its prompt is their rewrite."""
        person = self._person(owner)
        if person is None or request.original_prompt is not None:
            return request
        original = self.rewrites.original_of(person, request.prompt)
        if original is None:
            return request
        return dataclasses.replace(request, original_prompt=original)

    # ---- the work, limited per person ----------------------------------------------------

    def _improve(self, person: str, prompt: str, image_to_video: bool, progress=None) -> str:
        assert self.helper is not None
        on_progress = _progress_reporter(progress)
        if self.limits is None:
            return self.helper.improve(prompt, image_to_video, on_progress=on_progress)
        with self.limits.take(person):
            return self.helper.improve(prompt, image_to_video, on_progress=on_progress)

    def _rewrite(
        self, person: str, prompt: str, last: Rewrite | None, task: str, progress
    ) -> Rewrite:
        """Rewrite the box's text; a rewrite of an unchanged rewrite keeps the first
        original, so Undo always brings back what the person wrote."""
        original = last.original if last is not None and prompt == last.improved else prompt
        improved = self._improve(person, prompt, task == IMAGE_TO_VIDEO, progress)
        rewrite = Rewrite(original, improved)
        self.rewrites.record(person, rewrite)
        return rewrite

    # ---- the page -------------------------------------------------------------------------

    def improve_page(
        self,
        prompt: str,
        last: Rewrite | None,
        task: str,
        owner_id: Any,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        """Improve prompt: (the rewrite in the box, the memory for Undo, Undo shown)."""
        rewrite = _guarded(
            lambda: self._rewrite(self._page_owner(owner_id).tag, prompt, last, task, progress)
        )
        return rewrite.improved, rewrite, gr.update(visible=True)

    @staticmethod
    def undo(last: Rewrite | None):
        """The person's own prompt back in the box."""
        if last is None:
            return gr.skip(), None, gr.update(visible=False)
        return last.original, None, gr.update(visible=False)

    def before_generate(
        self,
        prompt: str,
        last: Rewrite | None,
        automatic: bool,
        task: str,
        owner_id: Any,
        progress=gr.Progress(),  # noqa: B008
    ):
        """With "rewrite automatically" on, the prompt is rewritten before it is queued
        (unless it already is a rewrite, or empty). A failure stops the Generate."""
        already = last is not None and prompt == last.improved
        if not automatic or already or not (prompt or "").strip():
            return gr.skip(), gr.skip(), gr.skip()
        return self.improve_page(prompt, last, task, owner_id, progress)

    # ---- the API ---------------------------------------------------------------------------

    def api_improve_prompt(
        self, prompt: str, image_to_video: bool = False, request: gr.Request = None
    ) -> str:
        """Rewrite ``prompt`` (a few words) into one detailed paragraph in the style Allegro
        was trained on (subject, action, setting, lighting, camera; at most about 120 words).
        ``image_to_video``: the video continues from an image, so the rewrite describes the
        motion, not a new scene. Pass the result to /generate or /submit as the prompt
        (unchanged, with the same key: the video's settings then keep both prompts)."""
        owner = _guarded(lambda: self._api_owner(request))
        improved = _guarded(lambda: self._improve(_limit_key(owner), prompt, bool(image_to_video)))
        if (person := self._person(owner)) is not None:  # /generate and /submit record both
            self.rewrites.record(person, Rewrite(prompt, improved))
        return improved

    def api_write_shots(self, story: str, request: gr.Request = None) -> dict:
        """Turn ``story`` (a paragraph) into a storyboard's shots:
        {"shots": [{"prompt": "...", "start": "cut" | "continue"}, ...]}, the first a cut.
        A malformed answer from the model is asked for once more, then reported."""
        assert self.helper is not None
        person = _limit_key(_guarded(lambda: self._api_owner(request)))

        def write() -> dict:
            if self.limits is None:
                return self.helper.write_shots(story)
            with self.limits.take(person):
                return self.helper.write_shots(story)

        return _guarded(write)


def _limit_key(owner: Owner | None) -> str:
    return owner.tag if owner is not None else ANONYMOUS


def _guarded(work: Callable[[], Any]) -> Any:
    """``work()``, with AllegroError shown as it is and anything else logged as a bug."""
    try:
        return work()
    except AllegroError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except gr.Error:
        raise
    except Exception as error:
        logger.error("Prompt help failed", exc_info=error)
        raise gr.Error(BUG_MESSAGE, print_exception=False) from None


def _progress_reporter(progress):
    """ProgressEvent -> the page's progress bar (a download shows its bytes, as the video
    model's does); nothing without a page."""
    if progress is None:
        return lambda event: None

    def report(event: ProgressEvent) -> None:
        fraction = event.step / event.total if event.total else None
        progress(fraction, desc=event.message or event.stage.value)

    return report


@dataclass
class PromptHelpControls:
    """The page's part: beside the prompt, Improve prompt and Undo; below, the option."""

    improve: gr.Button
    undo: gr.Button
    automatic: gr.Checkbox
    last: gr.State

    @classmethod
    def build(cls, help: PromptHelp) -> PromptHelpControls | None:
        """Inside the prompt's column, under the prompt; None when prompt help is off."""
        if not help.enabled:
            return None
        with gr.Row(elem_id="prompt-help-row"):
            improve = gr.Button(
                "Improve prompt", size="sm", scale=0, min_width=150, elem_id="improve-prompt"
            )
            undo = gr.Button(
                "Undo", size="sm", scale=0, min_width=90, visible=False, elem_id="undo-prompt"
            )
            automatic = gr.Checkbox(
                False,
                label="Rewrite automatically before queueing",
                container=False,
                elem_id="auto-improve",
            )
        return cls(improve, undo, automatic, gr.State(None))

    def wire(self, help: PromptHelp, prompt: gr.Textbox, task: gr.Radio, owner) -> None:
        private = {"api_visibility": "private"}
        outputs = [prompt, self.last, self.undo]
        self.improve.click(
            help.improve_page,
            [prompt, self.last, task, owner],
            outputs,
            # Minimal: the download and the rewrite show their progress on the box without
            # hiding its text, and a failure leaves the box as it was (the message is a toast).
            show_progress="minimal",
            show_progress_on=[prompt],
            **CONCURRENCY,
            **private,
        )
        self.undo.click(help.undo, self.last, outputs, queue=False, **private)

    def generate_click(self, help: PromptHelp, generate: gr.Button, prompt, task, owner):
        """Generate's click, with the automatic rewrite before it: use it like
        ``generate.click`` (the generation runs only if the rewrite step succeeded)."""

        def click(*args, **kwargs):
            return generate.click(
                help.before_generate,
                [prompt, self.last, self.automatic, task, owner],
                [prompt, self.last, self.undo],
                api_visibility="private",
                # Off the queue: with the option off this step answers at once (a bad
                # request is still refused within a second), and a Generate never waits
                # behind someone else's rewrite. The rewrite itself is bounded by its helper
                # (one at a time, --prompt-timeout) and the per-person limits.
                queue=False,
                show_progress="hidden",
            ).success(*args, **kwargs)

        return click


def add_api(help: PromptHelp) -> None:
    """/improve_prompt and /write_shots, in their own concurrency group (inside Blocks)."""
    if not help.enabled:
        return
    gr.api(help.api_improve_prompt, api_name="improve_prompt", **CONCURRENCY)
    gr.api(help.api_write_shots, api_name="write_shots", **CONCURRENCY)
