"""What the page's and the API's sections (``ui.gallery_page``, ``ui.job_api``,
``ui.page_jobs``) need from the studio, passed in as one object of this shape, and how any
handler turns an error into what a caller sees. The sections import this, never
``ui.studio`` (which builds them and hands itself in)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import gradio as gr

from allegro.errors import AllegroError
from allegro.request import GenerationRequest
from ui.identity import Identities, Owner

if TYPE_CHECKING:
    from ui.model_status import ModelLoader

logger = logging.getLogger(__name__)

LOCAL_OWNER = "local"  # the job owner of a key-less caller where the server is not shared
BUG_MESSAGE = (
    "Something went wrong inside Allegro Studio (the details are in the server log). "
    "The app keeps running: please try again."
)


def user_error(error: BaseException) -> gr.Error:
    """The gr.Error to show for ``error``: its own message for AllegroError (or a gr.Error
    already made from one, e.g. in the ZeroGPU worker), else generic."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, AllegroError):
        return gr.Error(str(error), print_exception=False)
    logger.error("Unexpected error", exc_info=error)
    return gr.Error(BUG_MESSAGE, print_exception=False)


def unexpected_refusal(error: BaseException) -> str:
    """A validator's answer to an error its checks did not expect: logged in one line (no
    traceback: a caller can cause it at will), and the request is refused, never let through
    to the generation queue."""
    logger.error("Request refused after an unexpected error: %r", error)
    return "This request could not be checked, so it was refused. " + BUG_MESSAGE


class Services(Protocol):
    """Who may see what, the published copies of files, and the checks before a job."""

    output_dir: Path
    identities: Identities
    loader: ModelLoader

    def gallery_owner(self, owner: Owner | None) -> str | None: ...
    def page_owner(self, token: Any) -> Owner: ...
    def api_owner(self, request: gr.Request | None) -> Owner | None: ...
    def labels(self, owner: Owner | None) -> dict[str, str]: ...
    def publish(self, path: Path) -> str: ...
    def unpublish(self, paths: list[Path]) -> None: ...
    def published_url(self, path: Path) -> str: ...
    def prepare(self, request: GenerationRequest) -> GenerationRequest: ...
    def check_interpolation(self, method: str | None) -> None: ...
    def page_request(self, owner_id: Any, controls: Any) -> tuple[Owner, GenerationRequest]: ...
    def page_extension(self, name: Any, owner: Owner, *fields: Any) -> GenerationRequest: ...
