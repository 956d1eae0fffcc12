"""Any OpenAI-compatible chat endpoint (Ollama, llama.cpp's server, vLLM, a hosted API).

``--prompt-model http://127.0.0.1:11434/v1`` (``#model`` after the URL picks the model;
without it the first one ``GET /models`` lists). The key, if any, is sent as a bearer token.
Plain urllib: no new dependency, and the answer is one small JSON document.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from allegro.events import CancelToken, ProgressCallback
from allegro.prompting.helper import Deadline, Message, PromptHelper, PromptHelpError, run_bounded

MAX_ANSWER_BYTES = 1_000_000  # a chat answer of max_tokens is a few kB


class EndpointHelper(PromptHelper):
    def __init__(self, source: str, timeout: float, api_key: str | None = None) -> None:
        super().__init__(source, timeout)
        base, _, model = source.partition("#")
        self.base_url = base.rstrip("/")
        self.model = model.strip() or None
        self._api_key = api_key

    def describe(self) -> str:
        return f"{self.base_url} ({self.model or 'its first model'})"

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        deadline: Deadline,
        cancel: CancelToken,
        on_progress: ProgressCallback,
    ) -> str:
        def work() -> str:
            model = self.model or self._first_model(deadline)
            body = {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "stream": False,
            }
            answer = self._call("/chat/completions", body, deadline)
            try:
                content = answer["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                content = None
            if not isinstance(content, str):
                raise PromptHelpError(
                    f"The prompt model at {self.base_url} sent an answer that is not an "
                    "OpenAI-style chat completion (no choices[0].message.content)."
                )
            return content

        return run_bounded(work, deadline, cancel, "prompt-endpoint")

    def _first_model(self, deadline: Deadline) -> str:
        listed = self._call("/models", None, deadline)
        models = listed.get("data") if isinstance(listed, dict) else None
        if not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise PromptHelpError(
                f"The prompt model server at {self.base_url} lists no model: name one after "
                "the address, e.g. --prompt-model http://127.0.0.1:11434/v1#qwen2.5:1.5b."
            )
        return str(models[0]["id"])

    def _call(self, path: str, body: dict | None, deadline: Deadline) -> Any:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        deadline.check()
        try:
            with urllib.request.urlopen(request, timeout=max(deadline.left(), 0.1)) as response:
                raw = response.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as error:
            detail = error.read(300).decode("utf-8", "replace").strip()
            raise PromptHelpError(
                f"The prompt model at {self.base_url} answered HTTP {error.code}"
                + (f": {detail}" if detail else "")
                + ". Nothing was changed."
            ) from None
        except TimeoutError:
            raise deadline.error() from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise deadline.error() from None
            raise PromptHelpError(
                f"The prompt model at {self.base_url} cannot be reached ({reason}). Is its "
                "server running? Nothing was changed."
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise PromptHelpError(
                f"The prompt model at {self.base_url} sent something that is not JSON."
            ) from None
