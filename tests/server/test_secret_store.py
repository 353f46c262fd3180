"""The server's secret store on a real SQLite database: the key file, encryption at rest,
named and anonymous secrets, resolution of function references, and environment order."""

from __future__ import annotations

import stat

import pytest

from ferry.exception import InvalidError, NotFoundError
from ferry.server.secrets import KEY_FILE, SecretStore
from ferry.server.store import Store

CANARY = "canary-value-5f1d0c9e"


@pytest.fixture
def home(tmp_path):
    return tmp_path


def open_store(home) -> tuple[Store, SecretStore]:
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "state.db")
    return store, SecretStore(store, home / KEY_FILE)


def test_key_file_is_created_once_with_mode_0600(home):
    store, _ = open_store(home)
    key_path = home / KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = key_path.read_bytes()
    store.close()
    open_store(home)
    assert key_path.read_bytes() == key


def test_a_key_file_readable_by_others_is_restricted(home):
    open_store(home)[0].close()
    (home / KEY_FILE).chmod(0o644)
    open_store(home)
    assert stat.S_IMODE((home / KEY_FILE).stat().st_mode) == 0o600


def test_an_invalid_key_file_is_a_clear_error(home):
    (home / KEY_FILE).write_bytes(b"not a key")
    (home / KEY_FILE).chmod(0o600)
    with pytest.raises(InvalidError, match="not a valid secret key"):
        open_store(home)


def test_values_are_encrypted_at_rest_and_survive_reopening(home):
    store, secrets = open_store(home)
    secrets.create("db", {"PASSWORD": CANARY})
    secrets.resolve([("f", [{"values": {"ANON": CANARY + "-anon"}}])])
    store.close()
    for path in home.iterdir():
        if path.name.startswith("state.db"):
            assert CANARY.encode() not in path.read_bytes(), path
    _, reopened = open_store(home)
    assert reopened.environment([{"name": "db"}], "f") == {"PASSWORD": CANARY}


def test_create_refuses_to_overwrite_without_force(home):
    _, secrets = open_store(home)
    assert secrets.create("api", {"KEY": "1"}) == {"name": "api", "keys": ["KEY"], "replaced": False}
    with pytest.raises(InvalidError, match="already exists.*--force") as raised:
        secrets.create("api", {"KEY": CANARY})
    assert CANARY not in str(raised.value)
    assert secrets.create("api", {"KEY": "2", "OTHER": "3"}, force=True)["replaced"] is True
    assert secrets.environment([{"name": "api"}], "f") == {"KEY": "2", "OTHER": "3"}


@pytest.mark.parametrize("name", ["", "has space", "a" * 65, "-leading-dash", "anon-reserved", "x/y"])
def test_invalid_names_are_rejected(home, name):
    _, secrets = open_store(home)
    with pytest.raises(InvalidError):
        secrets.create(name, {"K": "v"})


@pytest.mark.parametrize("values", [{}, {"": "v"}, {"A=B": "v"}, {"K": 1}, {"K": "nul\0"}])
def test_invalid_values_are_rejected_without_showing_them(home, values):
    _, secrets = open_store(home)
    with pytest.raises(InvalidError) as raised:
        secrets.create("ok", values)
    assert "nul\0" not in str(raised.value)


def test_list_shows_names_and_dates_only_and_not_anonymous_secrets(home):
    _, secrets = open_store(home)
    secrets.create("b-secret", {"K": CANARY})
    secrets.create("a-secret", {"K": CANARY})
    secrets.resolve([("f", [{"values": {"K": CANARY}}])])
    rows = secrets.list()
    assert [r["name"] for r in rows] == ["a-secret", "b-secret"]
    assert set(rows[0]) == {"name", "created", "updated"}
    assert CANARY not in repr(rows)


def test_delete(home):
    _, secrets = open_store(home)
    secrets.create("gone", {"K": "v"})
    secrets.delete("gone")
    assert secrets.list() == []
    with pytest.raises(NotFoundError, match="No secret named 'gone'"):
        secrets.delete("gone")


def test_values_given_by_value_become_an_anonymous_secret_named_by_a_keyed_hash(home):
    _, secrets = open_store(home)
    first = secrets.resolve([("f", [{"values": {"K": CANARY}}])])[0]
    again = secrets.resolve([("g", [{"values": {"K": CANARY}}])])[0]
    other = secrets.resolve([("f", [{"values": {"K": "other"}}])])[0]
    assert first == again and first != other
    assert first[0]["name"].startswith("anon-") and CANARY not in repr(first)
    assert secrets.environment(first, "f") == {"K": CANARY}
    # the name depends on this server's key, so it reveals nothing about the values elsewhere
    _, elsewhere = open_store(home / "other")
    assert elsewhere.resolve([("f", [{"values": {"K": CANARY}}])])[0] != first


def test_resolve_names_every_missing_secret_and_the_command_that_creates_it(home):
    _, secrets = open_store(home)
    secrets.create("present", {"K": "v"})
    with pytest.raises(NotFoundError) as raised:
        secrets.resolve([("f", [{"name": "present"}, {"name": "absent-one"}]), ("g", [{"name": "absent-two"}]),
                         ("h", [{"values": {"ANON": "x"}}])])
    message = str(raised.value)
    assert "'absent-one' not found (used by f)" in message
    assert "`ferry secret create absent-one KEY=value`" in message
    assert "'absent-two' not found (used by g)" in message
    assert "\n" not in message
    # nothing was stored: the anonymous secret of h is not created when resolution fails
    assert secrets.store._db.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] == 1


def test_resolve_checks_required_keys_without_showing_values(home):
    _, secrets = open_store(home)
    secrets.create("partial", {"HAVE": CANARY})
    assert secrets.resolve([("f", [{"name": "partial", "required_keys": ["HAVE"]}])])
    with pytest.raises(NotFoundError) as raised:
        secrets.resolve([("f", [{"name": "partial", "required_keys": ["HAVE", "WANT", "ALSO"]}])])
    message = str(raised.value)
    assert "'partial' lacks required key(s) WANT, ALSO (used by f)" in message
    assert "ferry secret create partial WANT=value ALSO=value ... --force" in message
    assert CANARY not in message


def test_references_declared_inside_a_container_are_refused(home):
    _, secrets = open_store(home)
    with pytest.raises(InvalidError, match="declared inside a container"):
        secrets.resolve([("f", [{"unavailable": "Secret.from_dotenv() was declared inside a container"}])])


def test_environment_applies_references_in_order_later_overriding_earlier(home):
    _, secrets = open_store(home)
    secrets.create("first", {"A": "first", "B": "first"})
    secrets.create("second", {"B": "second", "C": "second"})
    refs = secrets.resolve([("f", [{"name": "first"}, {"name": "second"}, {"values": {"C": "third"}}])])[0]
    assert secrets.environment(refs, "f") == {"A": "first", "B": "second", "C": "third"}


def test_environment_of_a_deleted_secret_names_it_and_the_fix(home):
    _, secrets = open_store(home)
    secrets.create("temp", {"K": "v"})
    refs = secrets.resolve([("f", [{"name": "temp"}])])[0]
    secrets.delete("temp")
    with pytest.raises(NotFoundError, match=r"'temp' used by f was deleted.*ferry secret create temp"):
        secrets.environment(refs, "f")


def test_a_replaced_key_file_is_a_clear_error_naming_the_secret(home):
    store, secrets = open_store(home)
    secrets.create("locked", {"K": CANARY})
    store.close()
    (home / KEY_FILE).unlink()
    _, rekeyed = open_store(home)
    with pytest.raises(InvalidError, match="'locked' cannot be decrypted") as raised:
        rekeyed.environment([{"name": "locked"}], "f")
    assert CANARY not in str(raised.value)
