"""Calling a Gradio page's events the way an attacker would: raw HTTP to Gradio's routes,
with any values for the inputs, as the page's JavaScript would send them.

Events that skip the queue are POSTed to ``/gradio_api/run/predict``; queued ones join with
``/gradio_api/queue/join`` and are read from the ``/gradio_api/queue/data`` event stream.
Both take the event's ``fn_index`` (its id in ``/config``) and a session hash, which keeps
the session's gr.State values between calls.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Outcome:
    """What an event answered: its outputs, or the error message the page would show."""

    status: int
    data: list[Any] | None = None
    error: str | None = None


@dataclass
class PageSession:
    """One browser tab, as far as the server can tell: a session hash."""

    url: str  # ends with "/"
    headers: dict[str, str] = field(default_factory=dict)
    session_hash: str = field(default_factory=lambda: secrets.token_hex(6))
    _config: dict | None = None

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = httpx.get(self.url + "config", timeout=10).json()
        return self._config

    def fn_index(self, name: str) -> int:
        """The id of the event whose handler Gradio named ``name`` (in /config)."""
        for dependency in self.config["dependencies"]:
            if dependency.get("api_name") == name:
                return dependency["id"]
        raise KeyError(name)

    def queued(self, name: str) -> bool:
        return next(d for d in self.config["dependencies"] if d.get("api_name") == name)["queue"]

    def call(self, name: str, *data: Any, event_data: Any = None, timeout: float = 60) -> Outcome:
        body = {  # sent as ASCII JSON, so even a lone surrogate arrives as the page sends it
            "data": list(data),
            "fn_index": self.fn_index(name),
            "session_hash": self.session_hash,
            "event_data": event_data,
            "trigger_id": None,
        }
        if not self.queued(name):
            response = httpx.post(
                self.url + "gradio_api/run/predict",
                json=body,
                headers=self.headers,
                timeout=timeout,
            )
            payload = response.json()
            if response.status_code == 200:
                return Outcome(200, data=payload["data"])
            return Outcome(response.status_code, error=str(payload.get("error") or payload))
        return self._through_the_queue(body, timeout)

    @property
    def _json(self) -> dict[str, str]:
        return {**self.headers, "Content-Type": "application/json"}

    def _through_the_queue(self, body: dict, timeout: float) -> Outcome:
        joined = httpx.post(
            self.url + "gradio_api/queue/join",
            content=json.dumps(body),
            headers=self._json,
            timeout=timeout,
        )
        if joined.status_code != 200:
            return Outcome(joined.status_code, error=joined.text)
        event_id = joined.json()["event_id"]
        stream_url = self.url + f"gradio_api/queue/data?session_hash={self.session_hash}"
        with httpx.stream("GET", stream_url, headers=self.headers, timeout=timeout) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return Outcome(200, data=output.get("data"))
                    return Outcome(200, error=str(output.get("error")))
        return Outcome(0, error="the event stream ended without a result")
