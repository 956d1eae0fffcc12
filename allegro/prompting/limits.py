"""Per-person limits for prompt help on a shared server: one answer at a time per person,
and at most ``per_hour`` answers in any hour. Kept in memory (a restart forgets them)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from allegro.prompting.helper import PromptHelpError

HOUR = 3600.0


class PersonLimits:
    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._recent: dict[str, deque[float]] = {}

    @contextmanager
    def take(self, person: str) -> Iterator[None]:
        """Hold ``person``'s one slot for the block (PromptHelpError when it is taken, or
        when the hour's allowance is spent). Every try that starts counts."""
        now = self._clock()
        with self._lock:
            if person in self._busy:
                raise PromptHelpError(
                    "Your last prompt is still being rewritten: wait for it to finish."
                )
            recent = self._recent.setdefault(person, deque())
            while recent and now - recent[0] >= HOUR:
                recent.popleft()
            if len(recent) >= self.per_hour:
                wait = max(1, round((HOUR - (now - recent[0])) / 60))
                raise PromptHelpError(
                    f"You have used prompt help {self.per_hour} times in the last hour, the "
                    f"most this shared server allows: try again in about {wait} min."
                )
            recent.append(now)
            self._busy.add(person)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(person)
