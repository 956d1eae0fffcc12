"""Who may reach the server, and what its answers let a browser do with them.

- ``HostGuard``: a local server answers only the host names it is reached by (loopback names,
  the ``--host`` address, ``--allowed-hosts``). A web page whose name was rebound to
  127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and the same ``Origin``, so the
  origin check alone lets it read the local user's gallery.
- ``SecurityHeaders``: no framing by other sites (a Space's own page excepted), no MIME
  sniffing, no page address sent to other sites.
- ``caller_source``: the network address a caller's jobs are counted under (the per-address
  job limit), derived by the server, never taken from what a caller claims.
- ``hide_gradio_errors``: Gradio's own error text for a malformed event (the handler's name,
  its whole input list, the working directory) stays in the log, not in the answer.

``ui.origins.studio_app`` wraps these around Gradio's whole middleware stack.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ui.config import AppConfig

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A Space shows the app in an iframe of its page on huggingface.co.
SPACE_EMBEDDER = "https://huggingface.co"
WRONG_HOST = (
    "Misdirected request: this Allegro Studio server does not answer to the host name {host!r} "
    "(its operator can add it with --allowed-hosts)."
)
NOT_UPLOADED = (
    "A file in this request was not uploaded to this server: send files as uploads (the page "
    "does; the API: gradio_client's handle_file), not paths or links."
)
MALFORMED_EVENT = (
    "This request does not fit the event it calls (a missing, extra or malformed value). "
    "Reload the page, or check the API call against the server's /gradio_api/info."
)


def host_name(host_header: str) -> str:
    """``Example.org:7860`` -> ``example.org``; ``[::1]:7860`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def allowed_host_names(listen_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names a local server answers to: loopback, its own address, and ``extra``."""
    names = {*LOOPBACK_NAMES, *(name.lower() for name in extra)}
    own = host_name(listen_host)
    if own not in ("0.0.0.0", "::", ""):
        names.add(own)
    return frozenset(names)


class HostGuard:
    """ASGI middleware: a request whose ``Host`` is not one of ``allowed`` (or a loopback
    address) gets 421 Misdirected Request; a WebSocket is closed. A request without a Host
    header (HTTP/1.0 tools) is no browser's: it passes."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    def accepts(self, host_header: str | None) -> bool:
        if host_header is None:
            return True
        name = host_name(host_header)
        return name in self.allowed or _loopback(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if not self.accepts(host):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                message = WRONG_HOST.format(host=host_name(host or "")[:100])
                await PlainTextResponse(message, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# A request body that is not a file upload is JSON: event values, which hold text and the
# names of uploaded files (a 100,000-line prompt is about 1 MB). Uploads have their own cap.
MAX_BODY_BYTES = 16 * 2**20
TOO_LARGE = "Request too large: send files as uploads (the page does; the API: handle_file)."


class BodyLimit:
    """ASGI middleware: a request body (other than an upload) over ``limit`` bytes is refused
    with 413 when its Content-Length says so, and cut off (a disconnect) when it streams past
    it, so a value such as a data URL cannot bring gigabytes past the upload cap."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await PlainTextResponse(TOO_LARGE, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)


def security_headers(frame_ancestors: Iterable[str] = ()) -> dict[str, str]:
    """The headers every answer carries. ``frame_ancestors``: other origins that may show the
    page in a frame (a Space's page); X-Frame-Options (which cannot name them) only without."""
    ancestors = " ".join(("'self'", *frame_ancestors))
    headers = {
        "Content-Security-Policy": f"frame-ancestors {ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    if ancestors == "'self'":
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return headers


class SecurityHeaders:
    """ASGI middleware: adds ``headers`` to every HTTP answer that does not set them."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def caller_source(request: Any, from_forwarded_header: bool) -> str | None:
    """The address a caller's jobs count under, from a ``gr.Request``: the client address
    (uvicorn already replaced it with the forwarded one when the request came from a
    --trusted-proxies address, uvicorn/middleware/proxy_headers.py). On a Space or a share
    link (``from_forwarded_header``), the platform's proxy is the client: the first address
    of the X-Forwarded-For it sends is taken as the visitor's (assumed set, not appended to,
    by that proxy; if it appends, a caller who forges the header escapes this limit, and the
    per-person and total limits still hold)."""
    if request is None:
        return None
    if from_forwarded_header:
        forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def event_source(from_forwarded_header: bool) -> str | None:
    """``caller_source`` of the event being handled: Gradio sets its ``gr.Request`` around
    every handler and validator call (gradio/utils.py:1124-1146), and it follows into the
    threads they start (asyncio.to_thread copies the context). None outside an event."""
    from gradio.context import LocalContext

    return caller_source(LocalContext.request.get(None), from_forwarded_header)


def source_of_events(config: AppConfig) -> Callable[[], str | None]:
    """The runner's ``caller_source`` for this server. On a Space or behind a --share link
    the app's client is the platform's proxy (or tunnel), which forwards the visitor's
    address; behind your own proxy, uvicorn already believes --trusted-proxies."""
    forwarded = (config.space_id is not None or config.share) and not config.trusted_proxies
    return functools.partial(event_source, forwarded)


def hide_gradio_errors(blocks: Any, detailed: bool) -> None:
    """Wrap ``blocks.preprocess_data`` (gradio/blocks.py:2125), where Gradio checks an
    event's inputs (count, file paths, data models, each component's preprocess), so that its
    own errors reach the caller as ``MALFORMED_EVENT``: the queue's join answers a validator's
    exception with its text (gradio/queueing.py:343-345), which names the handler and every
    input (blocks.py:2039-2071, 2074-2120) or the working directory. gr.Error (our own
    messages) passes as it is. ``detailed`` (a local server): Gradio's text is appended."""
    import gradio as gr
    from gradio.exceptions import InvalidPathError

    original = blocks.preprocess_data

    @functools.wraps(original)
    async def preprocess_data(*args: Any, **kwargs: Any):
        try:
            return await original(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            logger.warning("Malformed event refused: %s", str(error).splitlines()[0][:300])
            # Gradio's refusal of a file that was not uploaded names the path it resolved.
            refusal = NOT_UPLOADED if isinstance(error, InvalidPathError) else MALFORMED_EVENT
            message = f"{refusal} ({error})" if detailed else refusal
            raise gr.Error(message, print_exception=False) from None

    blocks.preprocess_data = preprocess_data
