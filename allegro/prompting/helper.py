"""The prompt helper: one interface, two backends (a local model, an OpenAI-style endpoint).

``PromptHelper.improve`` turns a few words into a detailed caption; ``write_shots`` turns a
story into a storyboard's shot list (issue 21's format). Both are bounded in output length
(max tokens) and time (``timeout``: a clear message past it), and cancellable with a
CancelToken. Backends only implement ``chat``; everything the person sees is decided here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from allegro.errors import AllegroError, Cancelled, InvalidRequestError
from allegro.events import CancelToken, ProgressCallback, ignore_progress
from allegro.prompting import instructions as text
from allegro.request import MAX_PROMPT_CHARS

DEFAULT_PROMPT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
DEFAULT_TIMEOUT = 60.0  # seconds for one rewrite or one story, loading aside
MAX_STORY_CHARS = 8000
SHOT_STARTS = ("cut", "continue")
OFF = ("none", "off", "")
CANCELLED_MESSAGE = "Cancelled: the prompt was left as it was."

Message = dict[str, str]
T = TypeVar("T")


class PromptHelpError(AllegroError):
    """The prompt model failed, or its answer could not be used; nothing was changed."""


class PromptTimeoutError(PromptHelpError):
    """The prompt model did not answer in time."""


@dataclass(frozen=True)
class Shot:
    prompt: str
    start: str  # "cut" or "continue"


@dataclass(frozen=True)
class Deadline:
    """When a call must have answered, and how long it was given (for the message)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise self.error()

    def error(self) -> PromptTimeoutError:
        return PromptTimeoutError(
            f"The prompt model did not answer within {self.seconds:.0f} s, so nothing was "
            "changed. Try again, use a shorter text, or allow more time with --prompt-timeout."
        )


class PromptHelper(ABC):
    """Rewrites prompts with a chat model. Thread-safe; one answer at a time per helper."""

    def __init__(self, source: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.source = source
        self.timeout = timeout

    @abstractmethod
    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        deadline: Deadline,
        cancel: CancelToken,
        on_progress: ProgressCallback,
    ) -> str:
        """The model's answer to ``messages``: at most ``max_tokens`` tokens, before
        ``deadline`` (PromptTimeoutError), Cancelled when ``cancel`` is set."""

    def describe(self) -> str:
        return self.source

    # ---- what a person asks for -------------------------------------------------------

    def improve(
        self,
        prompt: str,
        image_to_video: bool = False,
        cancel: CancelToken | None = None,
        on_progress: ProgressCallback = ignore_progress,
    ) -> str:
        """``prompt`` rewritten as one detailed paragraph of at most MAX_WORDS words."""
        words = check_prompt(prompt)
        system, examples = (
            (text.IMAGE_TO_VIDEO_SYSTEM, text.IMAGE_TO_VIDEO_EXAMPLES)
            if image_to_video
            else (text.IMPROVE_SYSTEM, text.IMPROVE_EXAMPLES)
        )
        messages = [{"role": "system", "content": system}]
        for asked, answered in examples:
            messages += [
                {"role": "user", "content": asked},
                {"role": "assistant", "content": answered},
            ]
        messages.append({"role": "user", "content": words})
        answer = self._ask(messages, text.IMPROVE_MAX_TOKENS, cancel, on_progress)
        caption = clean_caption(answer)
        if not caption:
            raise PromptHelpError("The prompt model answered with no text; nothing was changed.")
        return caption

    def write_shots(
        self,
        story: str,
        cancel: CancelToken | None = None,
        on_progress: ProgressCallback = ignore_progress,
    ) -> dict[str, list[dict[str, str]]]:
        """``story`` as a storyboard's shots: ``{"shots": [{"prompt", "start"}, ...]}``.
        A malformed answer is asked for once more; a second one is reported, never used
        in part."""
        story = check_story(story)
        messages = [
            {"role": "system", "content": text.SHOTS_SYSTEM},
            {"role": "user", "content": text.SHOTS_EXAMPLE_STORY},
            {"role": "assistant", "content": text.SHOTS_EXAMPLE_ANSWER},
            {"role": "user", "content": story},
        ]
        problem = ""
        for attempt in range(2):
            answer = self._ask(messages, text.SHOTS_MAX_TOKENS, cancel, on_progress)
            try:
                shots = parse_shots(answer)
            except ShotFormatError as error:
                problem = str(error)
                if attempt == 0:
                    messages += [
                        {"role": "assistant", "content": answer[:4000]},
                        {"role": "user", "content": text.SHOTS_RETRY.format(problem=problem)},
                    ]
                continue
            return {"shots": [{"prompt": s.prompt, "start": s.start} for s in shots]}
        raise PromptHelpError(
            "The prompt model did not return a usable shot list (asked twice; the last "
            f"answer: {problem}). No shots were changed: try again, or shorten the story."
        )

    def _ask(
        self,
        messages: list[Message],
        max_tokens: int,
        cancel: CancelToken | None,
        on_progress: ProgressCallback,
    ) -> str:
        cancel = cancel or CancelToken()
        cancel.raise_if_cancelled()
        answer = self.chat(messages, max_tokens, Deadline.after(self.timeout), cancel, on_progress)
        cancel.raise_if_cancelled()
        return answer


class ShotFormatError(ValueError):
    """The model's shot list is not the JSON asked for (the message says what is wrong)."""


def check_prompt(prompt: Any) -> str:
    words = prompt.strip() if isinstance(prompt, str) else ""
    if not words:
        raise InvalidRequestError(
            "Write a few words in the prompt first: there is nothing to improve."
        )
    if len(words) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The prompt is {len(words):,} characters long; the most that can be improved is "
            f"{MAX_PROMPT_CHARS:,}."
        )
    return words


def check_story(story: Any) -> str:
    words = story.strip() if isinstance(story, str) else ""
    if not words:
        raise InvalidRequestError("Write the story first: there is nothing to turn into shots.")
    if len(words) > MAX_STORY_CHARS:
        raise InvalidRequestError(
            f"The story is {len(words):,} characters long; the most is {MAX_STORY_CHARS:,}."
        )
    return words


_PREAMBLE = re.compile(r"^(here is|here's|sure|caption|prompt|rewritten)[^:\n]{0,60}:\s*", re.I)


def clean_caption(answer: str) -> str:
    """The answer as one paragraph of at most MAX_WORDS words: a preamble ("Here is the
    caption:"), quotes and line breaks removed; a longer answer is cut at the last sentence
    that fits (or at the word limit when no sentence does)."""
    caption = _PREAMBLE.sub("", answer.strip()).strip().strip('"“”').strip()
    words = caption.split()
    if len(words) <= text.MAX_WORDS:
        return " ".join(words)
    kept = " ".join(words[: text.MAX_WORDS])
    end = max(kept.rfind(". "), kept.rfind("! "), kept.rfind("? "), kept.rfind("."))
    return kept[: end + 1] if end > len(kept) // 2 else kept


def parse_shots(answer: str) -> list[Shot]:
    """The shots in ``answer`` (JSON, optionally in a code fence or with words around it),
    checked: 1 to MAX_SHOTS shots, each a non-empty prompt within the prompt limit and a
    start of cut or continue (a missing start: cut for the first shot, continue after; the
    first shot is always a cut, since there is nothing before it to continue)."""
    start, end = answer.find("{"), answer.rfind("}")
    if start < 0 or end <= start:
        raise ShotFormatError("it holds no JSON object")
    try:
        data = json.loads(answer[start : end + 1])
    except ValueError as error:
        raise ShotFormatError(f"its JSON does not parse ({error})") from None
    shots = data.get("shots") if isinstance(data, dict) else None
    if not isinstance(shots, list) or not shots:
        raise ShotFormatError('it has no non-empty "shots" list')
    if len(shots) > text.MAX_SHOTS:
        raise ShotFormatError(f"it has {len(shots)} shots, more than {text.MAX_SHOTS}")
    checked = []
    for number, shot in enumerate(shots, 1):
        prompt = shot.get("prompt") if isinstance(shot, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ShotFormatError(f"shot {number} has no prompt text")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ShotFormatError(f"shot {number}'s prompt is over {MAX_PROMPT_CHARS} characters")
        how = shot.get("start", "cut" if number == 1 else "continue")
        if how not in SHOT_STARTS:
            raise ShotFormatError(f'shot {number} starts with {how!r}, not "cut" or "continue"')
        checked.append(Shot(" ".join(prompt.split()), "cut" if number == 1 else how))
    return checked


def run_bounded(
    work: Callable[[], T], deadline: Deadline, cancel: CancelToken, name: str = "prompt-help"
) -> T:
    """``work()`` in a daemon thread; returns its result, or raises at the deadline or on
    cancel without waiting for it (its answer, if it ever comes, is dropped)."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller as is
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    while not done.wait(min(0.05, max(deadline.left(), 0.0))):
        if cancel.cancelled:
            raise Cancelled(CANCELLED_MESSAGE)
        if deadline.left() <= 0:
            raise deadline.error()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
