"""Where a client finds its server and credential, and the profiles file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ferry import _credentials
from ferry._protocol import Address, parse_address
from ferry.exception import AuthError, InvalidError


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("FERRY_SERVER_URL", "FERRY_TOKEN_ID", "FERRY_TOKEN_SECRET", "FERRY_PROFILE",
                 "FERRY_CONTAINER_ID", "FERRY_CONTAINER_SECRET", "FERRY_TLS_FINGERPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FERRY_CONFIG_PATH", str(tmp_path / "ferry.toml"))
    (tmp_path / "home").mkdir()
    return tmp_path


def test_the_local_admin_file_is_the_last_resort(clean: Path, monkeypatch) -> None:
    with pytest.raises(AuthError, match="No credential"):
        _credentials.credential_for("ferry://127.0.0.1:1")
    _credentials.write_admin_credential(clean / "home", "ak-local", "as-local")
    assert _credentials.credential_for("ferry://127.0.0.1:1").token_id == "ak-local"
    _credentials.write_profiles({"team": {"server_url": "ferry+tls://h:1", "token_id": "ak-team",
                                          "token_secret": "as-team", "tls_fingerprint": "ab", "active": True}})
    found = _credentials.credential_for("ferry+tls://h:1")
    assert (found.token_id, found.tls_fingerprint) == ("ak-team", "ab")
    assert _credentials.explicit_server_url() == "ferry+tls://h:1"
    # FERRY_SERVER_URL naming another server: the profile's credential is not sent there
    monkeypatch.setenv("FERRY_SERVER_URL", "ferry://127.0.0.1:1")
    assert _credentials.credential_for("ferry://127.0.0.1:1").token_id == "ak-local"
    monkeypatch.setenv("FERRY_TOKEN_ID", "ak-env")
    monkeypatch.setenv("FERRY_TOKEN_SECRET", "as-env")
    assert _credentials.credential_for("ferry://127.0.0.1:1").token_id == "ak-env"
    monkeypatch.setenv("FERRY_CONTAINER_ID", "ct-1")
    monkeypatch.setenv("FERRY_CONTAINER_SECRET", "cs-1")
    assert _credentials.credential_for("ferry://127.0.0.1:1").token_id == "ct-1"


def test_half_a_token_is_an_error(clean: Path, monkeypatch) -> None:
    monkeypatch.setenv("FERRY_TOKEN_ID", "ak-x")
    with pytest.raises(AuthError, match="both FERRY_TOKEN_ID and FERRY_TOKEN_SECRET"):
        _credentials.credential_for("ferry://127.0.0.1:1")


def test_profiles_round_trip_with_mode_0600_and_ferry_profile_picks_one(clean: Path, monkeypatch) -> None:
    profiles = {"a": {"server_url": "ferry://127.0.0.1:5", "token_id": "ak-a", "token_secret": 'as-"quoted"\\'},
                "b b": {"server_url": "ferry+tls://x:1", "token_id": "ak-b", "token_secret": "as-b", "active": True}}
    path = _credentials.write_profiles(profiles)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _credentials.read_profiles() == profiles
    assert _credentials.active_profile()[0] == "b b"
    monkeypatch.setenv("FERRY_PROFILE", "a")
    assert _credentials.active_profile()[0] == "a"
    monkeypatch.setenv("FERRY_PROFILE", "missing")
    with pytest.raises(InvalidError, match="no such profile"):
        _credentials.active_profile()


def test_a_broken_profiles_file_says_where_it_is(clean: Path) -> None:
    (clean / "ferry.toml").write_text("[team\n")
    with pytest.raises(InvalidError, match="not valid TOML"):
        _credentials.read_profiles()


def test_a_profile_without_a_token_is_an_error(clean: Path) -> None:
    _credentials.write_profiles({"t": {"server_url": "ferry://127.0.0.1:1", "active": True}})
    with pytest.raises(AuthError, match="no token_id/token_secret"):
        _credentials.credential_for("ferry://127.0.0.1:1")


@pytest.mark.parametrize("url, address", [
    ("ferry://127.0.0.1:7788", Address("ferry", "127.0.0.1", 7788)),
    ("127.0.0.1:7788", Address("ferry", "127.0.0.1", 7788)),
    ("ferry+tls://ferry.example:443", Address("ferry+tls", "ferry.example", 443)),
    ("ferry+unix:///run/ferry/control.sock", Address("ferry+unix", path="/run/ferry/control.sock")),
])
def test_server_addresses(url: str, address: Address) -> None:
    assert parse_address(url) == address
    assert parse_address(str(address)) == address


@pytest.mark.parametrize("url", ["http://h:1", "ferry://h", "ferry+unix://relative", "ferry://h:notaport"])
def test_bad_server_addresses_say_what_is_expected(url: str) -> None:
    with pytest.raises(InvalidError, match="expected ferry"):
        parse_address(url)
