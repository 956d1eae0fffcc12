"""Files a caller sends: only what they uploaded, never a path on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from allegro.errors import InvalidRequestError
from allegro.ti2v.inputs import check_image_file

NOT_AN_UPLOAD = (
    "The {what} must be an image file you upload (the page does it; the API: gradio_client's "
    "handle_file), not a data: or web URL."
)


def uploaded_file(value: Any, what: str, field: str | None = None) -> str | None:
    """The path of a file an API caller uploaded (gradio_client's handle_file); None for none.
    Gradio moves uploads into its upload folder before any handler runs, refusing paths
    outside it (gradio/blocks.py:2157-2162, processing_utils.py:576-597) for values marked
    as files; a value sent without the mark is not checked by Gradio, so it is refused here
    unless it too lies in that folder: a caller names only files they uploaded."""
    if value is None or value == "":
        return None
    from gradio.utils import get_upload_folder, is_in_or_equal

    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise InvalidRequestError(
            f"The {what} must be an uploaded file (handle_file).", field=field
        )
    if Path(path).is_symlink() or not is_in_or_equal(path, get_upload_folder()):
        raise InvalidRequestError(
            f"The {what} must be a file you upload with the request (gradio_client's "
            "handle_file), not a path on the server.",
            field=field,
        )
    return path


class UploadedImage(gr.Image):
    """``gr.Image`` that opens only files uploaded to Gradio's upload folder.

    Gradio refuses other paths for values marked as files (gradio 6.31 blocks.py:2157-2162,
    processing_utils.py:576-597), but gr.Image's data model (ImageData) carries no mark:
    a raw request could name any image on the server, and ``Image.preprocess`` would open it
    and copy it into the cache (components/image.py:197-212) before any handler or
    validator runs. Drawn by gr.Image's own frontend (``is_template``, blocks.py:248-258).
    """

    is_template = True

    def preprocess(self, payload):
        """Refused before Gradio decodes anything: a value that is not an uploaded file (a
        ``data:`` or web URL, which ``preprocess_image`` decodes with PIL whatever the
        path, gradio/image_utils.py:277-283), a path outside the upload folder, and an
        image whose header shows too many pixels (Gradio converts any image whose mode is
        not RGB, decoding it whole: image_utils.py:302-317)."""
        if payload is None:
            return None
        what = str(self.label or "image").lower()
        try:
            url = str(getattr(payload, "url", None) or "")
            path = uploaded_file(getattr(payload, "path", None), what)
            if path is None or url.strip().lower().startswith("data:"):
                raise InvalidRequestError(NOT_AN_UPLOAD.format(what=what))
            check_image_file(path, what)
        except InvalidRequestError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return super().preprocess(payload)
