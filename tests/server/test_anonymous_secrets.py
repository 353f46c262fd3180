"""How long anonymous secrets live: until no live app refers to them, except while a request
that stored them is still in progress."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ferry.server.secrets import KEY_FILE, SecretStore
from ferry.server.store import Store


def _secrets(tmp_path: Path) -> tuple[Store, SecretStore]:
    store = Store(tmp_path / "state.db")
    return store, SecretStore(store, tmp_path / KEY_FILE)


def _anonymous(secrets: SecretStore, values: dict[str, str]) -> str:
    return secrets.resolve([("f", [{"values": values}])])[0][0]["name"]


def test_unreferenced_anonymous_secrets_go_and_referenced_and_named_ones_stay(tmp_path: Path) -> None:
    store, secrets = _secrets(tmp_path)
    used = _anonymous(secrets, {"A": "1"})
    unused = _anonymous(secrets, {"B": "2"})
    secrets.create("named", {"C": "3"})
    assert secrets.drop_unused_anonymous({used}) == 1
    assert store.secret(used) is not None and store.secret(unused) is None
    assert store.secret("named") is not None


def test_a_request_in_progress_holds_what_it_stored(tmp_path: Path) -> None:
    store, secrets = _secrets(tmp_path)

    async def request(stored: asyncio.Event, finish: asyncio.Event) -> str:
        with secrets.holding():
            name = _anonymous(secrets, {"TOKEN": "x"})
            stored.set()
            await finish.wait()  # e.g. an image build before the functions are installed
            return name

    async def scenario() -> None:
        stored, finish = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(request(stored, finish))
        await stored.wait()
        assert secrets.drop_unused_anonymous(set()) == 0  # another app stopped meanwhile
        finish.set()
        name = await task
        assert store.secret(name) is not None
        assert secrets.drop_unused_anonymous(set()) == 1
        assert store.secret(name) is None

    asyncio.run(scenario())
