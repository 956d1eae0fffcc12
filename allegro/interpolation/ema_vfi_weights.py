"""Where EMA-VFI weights come from: a local path only, never the network.

Kept apart from the network code so that the app can say whether the method is available
without importing PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path

from allegro.interpolation.base import Availability

WEIGHTS_ENV_VAR = "ALLEGRO_EMA_VFI_WEIGHTS"
WEIGHTS_FLAG = "--weights (CLI) or --ema-vfi-weights (app)"
EMA_VFI_HUB_REPO = "MCG-NJU/EMA-VFI"
EMA_VFI_HUB_FILENAME = "ours_t.pkl"
CHECKPOINT_DOWNLOAD_URL = "https://drive.google.com/drive/folders/16jUa3HkQ85Z5lb5gce1yoaWkP-rdCd0o"


def _hub_cached_weights() -> Path | None:
    """The checkpoint in the local Hugging Face cache, if present (file-system only)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(EMA_VFI_HUB_REPO, EMA_VFI_HUB_FILENAME)
    return Path(found) if isinstance(found, str) else None


def _locate(explicit: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    """The weights file, or None and a reason written for the user."""
    for source, value in (
        ("The EMA-VFI weights path", explicit),
        (f"${WEIGHTS_ENV_VAR}", os.environ.get(WEIGHTS_ENV_VAR)),
    ):
        if value:
            path = Path(value).expanduser()
            if path.is_file():
                return path, ""
            return None, f"{source} points at {path}, which is not a file."
    cached = _hub_cached_weights()
    if cached is not None:
        return cached, ""
    return None, (
        "EMA-VFI weights were not found (they are never downloaded automatically). "
        f"Download {EMA_VFI_HUB_FILENAME} (or ours.pkl, ours_small_t.pkl, ours_small.pkl) by "
        f"hand from the authors' folder {CHECKPOINT_DOWNLOAD_URL} (linked from "
        f"https://github.com/{EMA_VFI_HUB_REPO}), then pass its path with {WEIGHTS_FLAG} "
        f"or set {WEIGHTS_ENV_VAR}=/path/to/{EMA_VFI_HUB_FILENAME}."
    )


def find_weights(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Local EMA-VFI weights: ``explicit``, else ``$ALLEGRO_EMA_VFI_WEIGHTS``, else the
    Hugging Face cache. Never touches the network."""
    return _locate(explicit)[0]


def availability(explicit: str | os.PathLike[str] | None = None) -> Availability:
    path, reason = _locate(explicit)
    return Availability(available=path is not None, reason=reason)
