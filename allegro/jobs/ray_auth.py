"""Joining a Ray cluster that uses token authentication (``RAY_AUTH_MODE=token``).

Ray 2.60 sends its token only in token mode, and a client that joins with an explicit
address never turns that mode on by itself: only a local cluster found automatically does
(ray _private/worker.py:1973-1977). ``ray start --head`` turns it on whenever a token exists
(scripts/scripts.py:1069, _private/authentication/authentication_token_setup.py:92-106), so
a head started beside a token has authentication and the app must send it. Without it,
ray.init logs "InvalidAuthToken" every second for about 20 s and then fails with a bare
ConnectionError.

So before ray.init the app asks the head (its GCS) once, without a token, through Ray's
own GCS client: refused as unauthenticated means the cluster wants a token. Then token mode
is turned on the way ``ray start`` does it (Ray's own
``maybe_enable_token_auth_if_token_available``, which sets RAY_AUTH_MODE=token for this
process and refreshes Ray's config, authentication_token_setup.py:64-68), with the token
Ray's own loader finds (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), and asked once more with it. No token, or a wrong one: one line
that says so and how to fix it, instead of 20 s of retries. An open cluster
is joined as before (no token sent); an explicit ``RAY_AUTH_MODE`` is respected.
"""

from __future__ import annotations

import logging
import os

from allegro.errors import UnsupportedSetupError

logger = logging.getLogger(__name__)

AUTH_MODE = "RAY_AUTH_MODE"  # authentication_token_setup.py:27
PROBE_SECONDS = 10.0
TOKEN_FIX = (
    "copy the head's ~/.ray/auth_token to ~/.ray/auth_token on this machine (or set "
    "RAY_AUTH_TOKEN to its content), then start again (README, 'A Ray cluster')."
)


def token_missing_message(address: str) -> str:
    return f"The Ray cluster at {address} requires an authentication token and none was found: " + (
        TOKEN_FIX
    )


def token_refused_message(address: str) -> str:
    return f"The Ray cluster at {address} refused this machine's authentication token: " + (
        TOKEN_FIX
    )


def _is_head_address(address: str) -> bool:
    """HOST:PORT of a running head ("auto", "local" and ray:// are Ray's own business)."""
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and "://" not in address


def _unauthenticated(address: str) -> bool:
    """Whether the head's GCS refuses this process's calls for want of the right token (sent
    in token mode). Ray's own GCS client asks, with a made-up cluster id so that making it
    asks nothing (with none it fetches the id and retries every second, node.py:996-998);
    an authenticated caller is then refused for that id ("WrongClusterID"), an
    unauthenticated one first for its token ("InvalidAuthToken", the status Ray logs from
    gcs_client.cc while ray.init retries). Any other outcome (answered, unreachable) is left
    to ray.init to report."""
    from ray._raylet import GcsClient

    client = GcsClient(address=address, cluster_id="00" * 28)  # a ClusterID is 28 bytes
    try:
        client.internal_kv_get(b"allegro-probe", None, timeout=PROBE_SECONDS)
    except Exception as error:  # ray.exceptions.AuthenticationError among others
        return "InvalidAuthToken" in str(error)
    return False


def prepare_token(address: str) -> None:
    """Before ``ray.init(address=...)``: turn on token mode if the cluster at ``address``
    wants a token and one is found here; UnsupportedSetupError (one line, with the fix) if
    none is, or the cluster refuses it."""
    mode = os.environ.get(AUTH_MODE)
    if not _is_head_address(address) or (mode is not None and mode.lower() != "token"):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication: nothing to send
        return
    # A retry after the token was copied here reads it again (Ray's loader caches what it
    # found; ensure_token_if_auth_enabled resets it the same way, line 160).
    AuthenticationTokenLoader.instance().reset_cache()
    if mode is None and not _unauthenticated(address):
        return  # an open cluster (or one Ray will report on)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    # The token Ray sends in token mode, from the places its loader reads (the same check
    # as ensure_token_if_auth_enabled, authentication_token_setup.py:154-163).
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise UnsupportedSetupError(token_missing_message(address))
    if _unauthenticated(address):
        raise UnsupportedSetupError(token_refused_message(address))
    logger.info("Joining the Ray cluster at %s with its authentication token", address)
