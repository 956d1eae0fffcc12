"""Which prompt helper ``--prompt-model`` names."""

from __future__ import annotations

from allegro.errors import InvalidRequestError
from allegro.prompting.endpoint import EndpointHelper
from allegro.prompting.helper import DEFAULT_TIMEOUT, OFF, PromptHelper
from allegro.prompting.local import LocalHelper


def make_helper(
    source: str | None, timeout: float = DEFAULT_TIMEOUT, api_key: str | None = None
) -> PromptHelper | None:
    """The helper ``source`` names: none/off -> None; an http(s) URL -> an OpenAI-compatible
    endpoint (``URL#model`` picks its model, else the first it lists); anything else -> a
    local transformers model (hub id or folder), loaded on first use."""
    source = (source or "").strip()
    if source.lower() in OFF:
        return None
    if timeout <= 0:
        raise InvalidRequestError("The prompt model's time limit must be more than 0 seconds.")
    if source.startswith(("http://", "https://")):
        return EndpointHelper(source, timeout, api_key)
    return LocalHelper(source, timeout)
