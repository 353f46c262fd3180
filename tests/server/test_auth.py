"""The authenticator on its own: minting, revoking, container credentials, slowing failures."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from ferry.exception import AuthError, InvalidError, NotFoundError
from ferry.server import auth as auth_module
from ferry.server.access import Role
from ferry.server.auth import Authenticator
from ferry.server.store import Store


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False
        self.on_close: list = []

    def close(self) -> None:
        self.closed = True
        for callback in self.on_close:
            callback()


@pytest.fixture
def authenticator(tmp_path: Path) -> Authenticator:
    return Authenticator(Store(tmp_path / "state.db"), tmp_path)


def _hello(token_id: str, token_secret: str, role: str = "client") -> dict:
    return {"t": "hello", "v": 1, "role": role, "token_id": token_id, "token_secret": token_secret,
            "container_id": token_id}


def test_the_local_admin_file_is_written_once_owner_only_and_replaced_when_revoked(
        authenticator: Authenticator, tmp_path: Path) -> None:
    path = authenticator.ensure_local_admin()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text())
    authenticator.ensure_local_admin()
    assert json.loads(path.read_text()) == first
    authenticator.revoke(first["token_id"])
    authenticator.ensure_local_admin()
    second = json.loads(path.read_text())
    assert second["token_id"] != first["token_id"]
    # a server restarted on the same state finds the same credential
    again = Authenticator(Store(tmp_path / "state.db"), tmp_path)
    assert again.check_client(second["token_id"], second["token_secret"]) is not None
    assert again.check_client(first["token_id"], first["token_secret"]) is None


def test_minted_credentials_authenticate_until_revoked_and_revoking_closes_connections(
        authenticator: Authenticator) -> None:
    created = authenticator.create("ci")
    principal = asyncio.run(authenticator.authenticate(_hello(created["token_id"], created["token_secret"]), "a"))
    assert principal.role is Role.ADMIN and principal.name == "ci"
    conn = FakeConnection()
    authenticator.track(principal, conn, conn.on_close)
    assert [r["connections"] for r in authenticator.list() if r["token_id"] == created["token_id"]] == [1]
    assert "secret_sha256" not in authenticator.list()[0]
    assert authenticator.revoke(created["token_id"])["closed_connections"] == 1
    assert conn.closed
    with pytest.raises(AuthError, match="unknown, revoked or wrong"):
        asyncio.run(authenticator.authenticate(_hello(created["token_id"], created["token_secret"]), "a"))
    with pytest.raises(NotFoundError):
        authenticator.revoke(created["token_id"])


def test_a_credential_needs_a_name(authenticator: Authenticator) -> None:
    with pytest.raises(InvalidError, match="needs a name"):
        authenticator.create("  ")


def test_container_credentials_live_as_long_as_their_container(authenticator: Authenticator) -> None:
    secret = authenticator.container_secret("ct-1")
    principal = asyncio.run(authenticator.authenticate(_hello("ct-1", secret, role="container"), "unix"))
    assert principal.role is Role.CONTAINER and principal.credential_id == "ct-1"
    conn = FakeConnection()
    authenticator.track(principal, conn, conn.on_close)
    with pytest.raises(AuthError):  # another container's id with this secret
        asyncio.run(authenticator.authenticate(_hello("ct-2", secret), "unix"))
    authenticator.forget_container("ct-1")
    assert conn.closed
    with pytest.raises(AuthError):
        asyncio.run(authenticator.authenticate(_hello("ct-1", secret), "unix"))


def test_a_missing_credential_is_refused_with_a_reason(authenticator: Authenticator) -> None:
    with pytest.raises(AuthError, match="no credential was presented"):
        asyncio.run(authenticator.authenticate({"t": "hello", "v": 1, "role": "client"}, "a"))


def test_failures_from_one_address_wait_longer_and_longer(authenticator: Authenticator, monkeypatch) -> None:
    delays = [authenticator._record_failure("10.0.0.1") for _ in range(8)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert authenticator._record_failure("10.0.0.2") == 0.0  # per address
    assert max(authenticator._record_failure("10.0.0.1") for _ in range(5)) == auth_module.MAX_DELAY
    clock = [1e9]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: clock[0])
    authenticator._failures["10.0.0.1"] = (20, clock[0] - auth_module.FAILURE_WINDOW - 1)
    assert authenticator._record_failure("10.0.0.1") == 0.0  # forgotten after a quiet minute
