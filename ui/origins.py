"""Cross-origin requests refused: a web page on another site must not drive this server with
its visitors' browsers (their page token, their videos), unless the operator allows it.

Gradio's own CORS layer echoes any ``Origin`` back, with credentials allowed, whenever the
server is reached by a non-loopback host name (gradio/route_utils.py:1140-1149,
``is_valid_origin``), and it answers preflights itself. So this guard has to sit outside it:
``studio_app`` builds Gradio's ``App`` with the guard wrapped around its whole middleware
stack, and ``launch(_app=...)`` uses it (gradio/blocks.py:3395-3397, routes.py:393-401).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ui.access import BodyLimit, HostGuard, SecurityHeaders, security_headers

REFUSED = (
    "Cross-origin request refused: this Allegro Studio server only answers its own page "
    "(an operator can allow other sites with --allowed-origins)."
)


def origin_allowed(origin: str, host: str | None, allowed: Iterable[str]) -> bool:
    """Same origin as the page (the Host the browser asked for), or explicitly allowed."""
    if origin.rstrip("/") in allowed:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == (host or "").lower()


class OriginGuard:
    """ASGI middleware: a request with a foreign ``Origin`` header gets 403 and no CORS
    headers; requests without one (curl, gradio_client, same-origin GETs) pass."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(origin.rstrip("/") for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not origin_allowed(origin, headers.get("host"), self.allowed):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await PlainTextResponse(REFUSED, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def studio_app(
    allowed_origins: Iterable[str],
    allowed_hosts: Iterable[str] | None = None,
    frame_ancestors: Iterable[str] = (),
):
    """Gradio's App, guarded from the outside (see the module docstring): the origin check,
    the host names (``allowed_hosts``; None: any), the size of request bodies and the
    security headers (ui/access.py)."""
    from gradio.routes import App, ORJSONResponse

    allowed = tuple(allowed_origins)
    hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
    headers = security_headers(frame_ancestors)

    class GuardedApp(App):
        def build_middleware_stack(self) -> ASGIApp:
            guarded = OriginGuard(super().build_middleware_stack(), allowed)
            if hosts is not None:
                guarded = HostGuard(guarded, hosts)
            return SecurityHeaders(BodyLimit(guarded), headers)

    # create_app passes this only when it builds the App itself (gradio/routes.py:389).
    return GuardedApp(default_response_class=ORJSONResponse)
