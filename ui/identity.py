"""Who is calling: owner identities the server issues and can verify.

- A browser gets a *page token* from the server on its first visit, kept in its
  localStorage: ``p1.<random id>.<HMAC of the id>``. Only this server can make one, so an
  id copied from anywhere else, or made up, is refused on every event.
- An API caller sends its own *key* in the ``X-Allegro-Key`` header: at least
  ``MIN_KEY_LENGTH`` characters (``secrets.token_urlsafe(32)`` gives 43), so it is a secret
  rather than a name somebody else might pick. Keys and page ids live in separate namespaces.
- A video stores only its owner's *tag*: a one-way hash of the namespace and id. Reading a
  tag (in a sidecar, a downloaded video) grants nothing: a tag cannot be turned back into a
  token or a key.

The HMAC secret comes from ``ALLEGRO_SECRET`` or is made once and kept in a file that is never
served, so page tokens survive restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from allegro.errors import AllegroError

KEY_HEADER = "X-Allegro-Key"
SECRET_ENV = "ALLEGRO_SECRET"
SECRET_FILE = ".allegro-studio-secret"
# 32 characters of a random key are at least 128 bits (hex) and 192 bits (base64url).
MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 256
_KEY = re.compile(r"^[A-Za-z0-9_.~+/=-]+$")
_PAGE_TOKEN = re.compile(r"^p1\.([0-9a-f]{32})\.([0-9a-f]{64})$")
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


class IdentityError(AllegroError):
    """A caller whose identity the server cannot vouch for."""


@dataclass(frozen=True)
class Owner:
    """A verified caller. ``tag`` is what is stored with their videos (one-way)."""

    tag: str
    kind: str  # "page" or "key"


def owner_tag(kind: str, value: str) -> str:
    """The one-way value stored with a video: it identifies, it does not authenticate."""
    return hashlib.sha256(f"allegro-studio/{kind}:{value}".encode()).hexdigest()[:32]


class Identities:
    """Issues page tokens and verifies tokens and keys."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the identity secret must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def load(cls, state_dir: Path, environ: Mapping[str, str]) -> Identities:
        """The secret from ``ALLEGRO_SECRET``, else from (or newly into) ``state_dir``."""
        configured = environ.get(SECRET_ENV, "").strip()
        if configured:
            if len(configured) < MIN_KEY_LENGTH:
                raise IdentityError(
                    f"{SECRET_ENV} must be at least {MIN_KEY_LENGTH} characters; make one "
                    f"with: {MAKE_A_KEY}"
                )
            return cls(configured.encode())
        path = state_dir / SECRET_FILE
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError):
            pass
        state_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        # Readable by this user only; created atomically so two starts never disagree.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as sink:
            sink.write(secret.hex())
        return cls(secret)

    def _mac(self, page_id: str) -> str:
        return hmac.new(self._secret, f"page:{page_id}".encode(), hashlib.sha256).hexdigest()

    def issue_page_token(self) -> str:
        page_id = secrets.token_hex(16)
        return f"p1.{page_id}.{self._mac(page_id)}"

    def page_owner(self, token: object) -> Owner:
        """The owner a page token stands for; IdentityError unless this server issued it."""
        match = _PAGE_TOKEN.match(token) if isinstance(token, str) else None
        if match is None or not hmac.compare_digest(match[2], self._mac(match[1])):
            raise IdentityError(
                "This page's identity was not issued by this server. Reload the page to get "
                "a new one (videos made under an identity that is not yours stay hidden)."
            )
        return Owner(tag=owner_tag("page", match[1]), kind="page")

    def is_page_token(self, token: object) -> bool:
        try:
            self.page_owner(token)
        except IdentityError:
            return False
        return True


def key_owner(key: str | None) -> Owner | None:
    """The owner an API key stands for; None without a key; IdentityError for a weak one."""
    if key is None or not key.strip():
        return None
    key = key.strip()
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or not _KEY.match(key):
        raise IdentityError(
            f"The {KEY_HEADER} header must hold {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} letters, "
            f"digits or -_.~+/= (a secret only you know). Make one with: {MAKE_A_KEY}"
        )
    return Owner(tag=owner_tag("key", key), kind="key")
