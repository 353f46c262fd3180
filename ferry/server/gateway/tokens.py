"""Proxy auth tokens: what `requires_proxy_auth=True` endpoints ask callers for.

A token is an id (`wk-...`) and a secret (`ws-...`), sent as the `Ferry-Key` and
`Ferry-Secret` headers (`Modal-Key` / `Modal-Secret` are accepted too). Only the secret's
SHA-256 is stored (table `proxy_tokens` of state.db); the secret is shown once, when created.
Secrets are 32 random bytes, so a plain hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Iterable

from ...exception import InvalidError, NotFoundError
from ..store import Store

KEY_HEADERS = (b"ferry-key", b"modal-key")
SECRET_HEADERS = (b"ferry-secret", b"modal-secret")
AUTH_HEADERS = frozenset(KEY_HEADERS + SECRET_HEADERS)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ProxyTokens:
    """Tokens in SQLite, with an in-memory copy for the per-request check."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._digests: dict[str, str] = {row["token_id"]: row["secret_sha256"] for row in store.proxy_tokens()}

    def create(self, name: str = "") -> dict[str, Any]:
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidError("A token name must be a string of at most 200 characters.")
        token_id = "wk-" + secrets.token_hex(10)
        secret = "ws-" + secrets.token_urlsafe(32)
        digest = _digest(secret)
        created = self._store.insert_proxy_token(token_id, digest, name)
        self._digests[token_id] = digest
        return {"token_id": token_id, "token_secret": secret, "name": name, "created": created}

    def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "secret_sha256"} for row in self._store.proxy_tokens()]

    def revoke(self, token_id: str) -> dict[str, Any]:
        if not self._store.delete_proxy_token(token_id):
            raise NotFoundError(f"No proxy token {token_id!r}. See `ferry token list`.")
        self._digests.pop(token_id, None)
        return {"token_id": token_id}

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether the request headers carry a valid token id and secret."""
        key = secret = None
        for name, value in headers:
            if name in KEY_HEADERS:
                key = value.decode("latin-1")
            elif name in SECRET_HEADERS:
                secret = value.decode("latin-1")
        if not key or not secret:
            return False
        expected = self._digests.get(key)
        return expected is not None and hmac.compare_digest(expected, _digest(secret))
