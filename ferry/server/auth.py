"""Authentication of peers: client credentials, container credentials, and the hello check.

Credentials are an id and a secret of 32 random bytes. The server keeps only the secret's
SHA-256 (a plain hash is enough for secrets of that strength) and compares digests in constant
time.

    kind            id / secret        lives                        role
    client          ak-... / as-...    state.db until revoked       ADMIN
    container       ct-... / cs-...    memory, while it runs        CONTAINER

The first start of a server mints the local administrator's credential and writes it to
`$FERRY_HOME/admin-credential.json` (mode 0600), where local clients find it. A revoked
credential stops working at once: the connections that presented it are closed.

Each peer authenticates once, in its `hello`; requests on the connection are never checked
again (so authentication costs nothing per call). A peer address that keeps failing is
answered more and more slowly (up to `MAX_DELAY` seconds per attempt).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from .._credentials import read_admin_credential, write_admin_credential
from ..exception import AuthError, InvalidError, NotFoundError
from .access import Principal, Role
from .store import Store

LOCAL_ADMIN_NAME = "local administrator"
FAILURE_WINDOW = 60.0   # failures older than this are forgotten
FREE_FAILURES = 3       # failures answered at once before slowing down
MAX_DELAY = 5.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Authenticator:
    """Client credentials (durable) and container credentials (in memory), and who is
    connected with which, so that revoking one closes its connections."""

    def __init__(self, store: Store, home: Path) -> None:
        self._store = store
        self._home = home
        self._clients: dict[str, tuple[str, Role, str]] = {
            row["token_id"]: (row["secret_sha256"], Role(row["role"]), row["name"])
            for row in store.credentials() if row["revoked"] is None
        }
        self._containers: dict[str, str] = {}  # container id -> digest of its secret
        self._connections: dict[str, set[Any]] = {}  # credential id -> open connections
        self._failures: dict[str, tuple[int, float]] = {}  # peer address -> (count, last)

    # -- the local administrator -------------------------------------------------------------
    def ensure_local_admin(self) -> Path:
        """Make sure `$FERRY_HOME/admin-credential.json` holds a valid administrator
        credential; mint one if it is missing, unknown or revoked."""
        local = read_admin_credential(self._home)
        if local is not None and self._valid_client(local.token_id, local.token_secret) is not None:
            return self._home / "admin-credential.json"
        token_id, token_secret = self._mint(LOCAL_ADMIN_NAME)
        return write_admin_credential(self._home, token_id, token_secret)

    # -- client credentials ------------------------------------------------------------------
    def _mint(self, name: str, role: Role = Role.ADMIN) -> tuple[str, str]:
        token_id = "ak-" + secrets.token_hex(10)
        token_secret = "as-" + secrets.token_urlsafe(32)
        digest = _digest(token_secret)
        self._store.insert_credential(token_id, digest, name, role.value)
        self._clients[token_id] = (digest, role, name)
        return token_id, token_secret

    def create(self, name: str) -> dict[str, Any]:
        """A new administrator credential; its secret is returned once and never stored."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidError("A credential needs a name (a string of at most 200 characters), "
                               "e.g. the person or machine it is for.")
        token_id, token_secret = self._mint(name.strip())
        return {"token_id": token_id, "token_secret": token_secret, "name": name.strip(),
                "role": Role.ADMIN.value}

    def list(self) -> list[dict[str, Any]]:
        rows = self._store.credentials()
        for row in rows:
            del row["secret_sha256"]
            row["connections"] = len(self._connections.get(row["token_id"], ()))
        return rows

    def revoke(self, token_id: str) -> dict[str, Any]:
        if not isinstance(token_id, str) or not self._store.revoke_credential(token_id):
            raise NotFoundError(f"No active credential {token_id!r}. See `ferry credential list`.")
        self._clients.pop(token_id, None)
        closed = self._close_connections(token_id)
        return {"token_id": token_id, "closed_connections": closed}

    def _valid_client(self, token_id: str, token_secret: str) -> tuple[Role, str] | None:
        entry = self._clients.get(token_id)
        if entry is None:
            hmac.compare_digest(_digest(token_secret), _digest(""))  # same work either way
            return None
        digest, role, name = entry
        return (role, name) if hmac.compare_digest(digest, _digest(token_secret)) else None

    def check_client(self, token_id: str, token_secret: str) -> Principal | None:
        """The administrator a client credential belongs to, or None (the dashboard's login)."""
        found = self._valid_client(token_id, token_secret)
        return Principal(found[0], token_id, found[1]) if found else None

    def is_active(self, token_id: str) -> bool:
        """Whether a client credential exists and is not revoked."""
        return token_id in self._clients

    async def check_login(self, token_id: str, token_secret: str, peer: str) -> Principal | None:
        """A dashboard login: like a hello, slowed down for an address that keeps failing."""
        principal = self.check_client(token_id, token_secret) if token_id and token_secret else None
        if principal is None:
            delay = self._record_failure(peer)
            if delay:
                await asyncio.sleep(delay)
        return principal

    # -- container credentials ---------------------------------------------------------------
    def container_secret(self, container_id: str) -> str:
        """Mint the credential of a container about to start (valid until `forget`)."""
        secret = "cs-" + secrets.token_urlsafe(32)
        self._containers[container_id] = _digest(secret)
        return secret

    def forget_container(self, container_id: str) -> None:
        """The container ended: its credential stops working, its connections close."""
        if self._containers.pop(container_id, None) is not None:
            self._close_connections(container_id)

    # -- the hello -----------------------------------------------------------------------------
    async def authenticate(self, hello: dict[str, Any], peer: str) -> Principal:
        """The principal a hello proves, or AuthError with a one-line reason (delayed for a
        peer that keeps failing)."""
        token_id, token_secret = hello.get("token_id"), hello.get("token_secret")
        if hello.get("role") == "container":  # the container's own uplink names it by id
            token_id = hello.get("container_id")
        principal = None
        reason = "no credential was presented"
        if isinstance(token_id, str) and isinstance(token_secret, str) and token_id and token_secret:
            principal = self._principal(token_id, token_secret)
            reason = "the credential is unknown, revoked or wrong"
        if principal is not None:
            return principal
        delay = self._record_failure(peer)
        if delay:
            await asyncio.sleep(delay)
        raise AuthError(
            f"Authentication failed: {reason}. Clients on the server's machine use "
            "FERRY_HOME/admin-credential.json; others need a credential from `ferry credential "
            "create` (see `ferry profile set`).")

    def _principal(self, token_id: str, token_secret: str) -> Principal | None:
        if token_id.startswith("ct-"):
            digest = self._containers.get(token_id)
            if digest is not None and hmac.compare_digest(digest, _digest(token_secret)):
                return Principal(Role.CONTAINER, token_id)
            return None
        return self.check_client(token_id, token_secret)

    def _record_failure(self, peer: str) -> float:
        now = time.monotonic()
        count, last = self._failures.get(peer, (0, now))
        if now - last > FAILURE_WINDOW:
            count = 0
        count += 1
        self._failures[peer] = (count, now)
        if len(self._failures) > 10_000:  # forget the oldest peers rather than grow forever
            for stale in sorted(self._failures, key=lambda p: self._failures[p][1])[:5_000]:
                del self._failures[stale]
        return 0.0 if count <= FREE_FAILURES else min(MAX_DELAY, 0.25 * 2 ** (count - FREE_FAILURES - 1))

    # -- connections ---------------------------------------------------------------------------
    def track(self, principal: Principal, conn: Any, on_close: list[Callable[[], None]]) -> None:
        """Remember that `conn` presented `principal`'s credential (until it closes)."""
        self._connections.setdefault(principal.credential_id, set()).add(conn)

        def untrack() -> None:
            peers = self._connections.get(principal.credential_id)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self._connections[principal.credential_id]

        on_close.append(untrack)

    def _close_connections(self, credential_id: str) -> int:
        peers = list(self._connections.pop(credential_id, ()))
        for conn in peers:
            conn.close()
        return len(peers)


class StepCredentials:
    """Credentials of image build steps that reach the control plane like a container (an
    `Image.run_function` step with volumes). Steps run in builder threads: minting is a plain
    dict write, and ending one is handed to the server's event loop."""

    def __init__(self, auth: Authenticator, loop: asyncio.AbstractEventLoop) -> None:
        self._auth = auth
        self._loop = loop

    def mint(self, env: dict[str, str]) -> str:
        """Add a fresh credential to a step's environment; returns its id for `forget`."""
        step_id = "ct-build-" + secrets.token_hex(6)
        env["FERRY_CONTAINER_ID"] = step_id
        env["FERRY_CONTAINER_SECRET"] = self._auth.container_secret(step_id)
        return step_id

    def forget(self, step_id: str) -> None:
        self._loop.call_soon_threadsafe(self._auth.forget_container, step_id)
