"""The authenticated control plane with a real server and real containers: the local
administrator credential, client credentials and their revocation, what a container's own
credential allows and refuses, and TLS for servers reachable from other machines."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferry._protocol import FrameSocket, hello
from ferry.exception import ConnectionError as FerryConnectionError
from ferry.server.access import EVERYONE, Role
from ferry.server.api import _AUDIENCES
from ferry.server.volume_rpc import VolumeService

from ..conftest import BEYOND_LOOPBACK, REPO, TLS_CLIENT_PRELUDE, ServerProcess, mint_credential, run_cli
from .apps import auth_apps


def _admin_only_methods() -> list[str]:
    """Every request a container must be refused (the audiences declared by the handlers)."""
    audiences = {**_AUDIENCES, **VolumeService.audiences()}
    for module, name in (("ferry.server.dicts", "DictService"), ("ferry.server.queues", "QueueService"),
                         ("ferry.server.container_rpc", "ContainerService"),
                         ("ferry.server.sandboxes", "SandboxService")):
        try:
            service = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        audiences.update(service.audiences())
    return sorted(m for m, allowed in audiences.items() if Role.CONTAINER not in allowed)


def _hello(url: str, **fields: str) -> dict:
    """Send one hello over a raw socket and return the server's answer."""
    sock = FrameSocket.connect(url)
    try:
        sock.send(hello("client", **fields))
        return sock.recv()
    finally:
        sock.close()


def _credential(home: Path) -> dict:
    return json.loads((home / "admin-credential.json").read_text())


# -- the local administrator ------------------------------------------------------------------
def test_first_start_writes_an_owner_only_admin_credential_that_local_clients_use(tmp_path: Path) -> None:
    own = ServerProcess.start(tmp_path / "home")
    try:
        path = own.home / "admin-credential.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = _credential(own.home)
        assert data["token_id"].startswith("ak-") and data["token_secret"].startswith("as-")
        done = run_cli(["credential", "list", "--json"], own)  # no set-up: FERRY_HOME is enough
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert [(r["token_id"], r["name"], r["role"]) for r in rows] == [
            (data["token_id"], "local administrator", "admin")]
        assert "secret" not in done.stdout
    finally:
        own.stop()
    again = ServerProcess.start(tmp_path / "home")  # a restart keeps the same credential
    try:
        assert _credential(again.home) == data
    finally:
        again.stop()


def test_the_quick_start_needs_no_new_step(tmp_path: Path) -> None:
    """`ferry run` with a fresh FERRY_HOME starts a local server and authenticates by itself."""
    home = tmp_path / "fresh"
    env = {**os.environ, "FERRY_HOME": str(home), "FERRY_PORT": "0", "FERRY_WEB_PORT": "0",
           "FERRY_RUNTIME": "process"}
    env.pop("FERRY_SERVER_URL", None)
    try:
        done = subprocess.run([sys.executable, "-m", "ferry", "run", "examples/hello_world.py"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Hello World!" in done.stdout
    finally:
        subprocess.run([sys.executable, "-m", "ferry", "server", "stop"], env=env, capture_output=True, timeout=60)


# -- client credentials ---------------------------------------------------------------------------
def test_missing_or_wrong_credentials_are_refused_before_any_request(server: ServerProcess) -> None:
    missing = _hello(server.url)
    assert missing["t"] == "refused" and "no credential was presented" in missing["msg"]
    token_id = _credential(server.home)["token_id"]
    wrong = _hello(server.url, token_id=token_id, token_secret="as-not-the-secret")
    assert wrong["t"] == "refused" and "unknown, revoked or wrong" in wrong["msg"]
    unknown = _hello(server.url, token_id="ak-0000", token_secret="as-x")
    assert unknown["t"] == "refused"
    done = run_cli(["secret", "list"], server, env={"FERRY_TOKEN_ID": token_id, "FERRY_TOKEN_SECRET": "as-wrong"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: AuthError:") and "FERRY_TOKEN_ID/FERRY_TOKEN_SECRET" in last


def test_repeated_failures_from_one_address_are_slowed_down(tmp_path: Path) -> None:
    own = ServerProcess.start(tmp_path / "home")
    try:
        waits = []
        for _ in range(6):
            started = time.monotonic()
            assert _hello(own.url, token_id="ak-guess", token_secret="as-guess")["t"] == "refused"
            waits.append(time.monotonic() - started)
        # the first three are answered at once, then each waits (0.25 s, 0.5 s, 1 s) before the refusal
        assert min(waits[3:]) >= 0.2, waits
        assert waits[5] >= 0.9, waits
    finally:
        own.stop()


def test_minted_credential_works_through_a_profile_and_revoking_it_closes_open_connections(
        server: ServerProcess, tmp_path: Path) -> None:
    created = run_cli(["credential", "create", "ci-runner", "--json"], server)
    assert created.returncode == 0, created.stderr
    minted = json.loads(created.stdout)
    assert minted["token_id"].startswith("ak-") and minted["server_url"] == server.url
    # another "machine": no FERRY_HOME of the server's, a profiles file of its own
    remote = {"FERRY_HOME": str(tmp_path / "elsewhere"), "FERRY_CONFIG_PATH": str(tmp_path / "ferry.toml"),
              "FERRY_SERVER_URL": ""}
    profile = run_cli(["profile", "set", "team", "--server-url", server.url, "--token-id", minted["token_id"],
                       "--token-secret", minted["token_secret"]], server, env=remote)
    assert profile.returncode == 0, profile.stderr
    assert stat.S_IMODE((tmp_path / "ferry.toml").stat().st_mode) == 0o600
    listed = run_cli(["secret", "list", "--json"], server, env=remote)
    assert listed.returncode == 0, listed.stderr
    current = run_cli(["profile", "current"], server, env=remote)
    assert current.stdout.strip() == "team"

    sock = FrameSocket.connect(server.url)  # an open connection authenticated with it
    sock.send(hello("client", token_id=minted["token_id"], token_secret=minted["token_secret"]))
    assert sock.recv()["role"] == "admin"
    sock.send({"t": "req", "id": 1, "m": "secret.list", "a": {}})
    assert sock.recv()["ok"] is True
    revoked = run_cli(["credential", "revoke", minted["token_id"]], server)
    assert revoked.returncode == 0, revoked.stderr
    assert "1 open connection closed" in revoked.stdout
    with pytest.raises(FerryConnectionError):
        sock.recv()  # closed by the server at once
    sock.close()
    after = run_cli(["secret", "list"], server, env=remote)
    assert after.returncode == 1 and "AuthError" in after.stderr and "profile 'team'" in after.stderr
    rows = json.loads(run_cli(["credential", "list", "--json"], server).stdout)
    assert next(r for r in rows if r["token_id"] == minted["token_id"])["revoked"] is not None


def test_credentials_are_not_proxy_auth_tokens(server: ServerProcess) -> None:
    token = run_cli(["token", "create", "--name", "web"], server)
    assert token.returncode == 0, token.stderr
    token_id = next(w for w in token.stdout.split() if w.startswith("wk-"))
    secret = next(w for w in token.stdout.split() if w.startswith("ws-"))
    assert _hello(server.url, token_id=token_id, token_secret=secret)["t"] == "refused"


# -- containers ---------------------------------------------------------------------------------------
def test_a_container_is_refused_every_administrator_request(server: ServerProcess) -> None:
    methods = _admin_only_methods()
    for expected in ("secret.list", "secret.create", "secret.delete", "token.create", "credential.create",
                     "credential.revoke", "app.create", "app.stop", "app.list", "app.show", "app.logs",
                     "image.rm", "server.shutdown", "volume.delete", "volume.list"):
        assert expected in methods
    with auth_apps.app.run(show_logs=False):
        outcomes = auth_apps.try_requests.remote(methods)
    assert set(outcomes) == set(methods)
    for method, (kind, message) in outcomes.items():
        assert kind == "PermissionDeniedError", (method, kind, message)
        assert "not permitted from inside a container" in message, (method, message)
    assert server.process.poll() is None  # server.shutdown was refused


def test_a_sandbox_container_is_refused_every_administrator_request(on_sandbox: ServerProcess) -> None:
    methods = _admin_only_methods()
    with auth_apps.sandbox_app.run(show_logs=False):
        outcomes = auth_apps.try_requests_in_a_sandbox.remote(methods)
    assert {kind for kind, _ in outcomes.values()} == {"PermissionDeniedError"}, outcomes
    assert set(outcomes) == set(methods)


def test_ferry_cli_inside_a_container_fails_with_a_permission_error(server: ServerProcess) -> None:
    with auth_apps.app.run(show_logs=False):
        code, out, err = auth_apps.run_cli.remote(["secret", "list"])
    assert code == 1
    assert "PermissionDeniedError" in err and "not permitted from inside a container" in err
    assert "name" not in out  # no listing


def test_a_container_may_call_functions_and_use_volumes_and_its_credential_dies_with_it(
        server: ServerProcess) -> None:
    with auth_apps.app.run(show_logs=False):
        result = auth_apps.what_a_function_body_may_do.remote("auth-probe-volume")
    assert result["double"] == 42 and result["mapped"] == [2, 4]
    assert result["read"] == "from a container"
    container_id, secret = result["credential"]
    assert container_id.startswith("ct-") and secret.startswith("cs-")
    answer = _hello(server.url, token_id=container_id, token_secret=secret)
    assert answer["t"] == "refused"  # the app stopped, its containers ended, their credentials too


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_credential_in_the_servers_environment_never_reaches_its_containers(tmp_path: Path, monkeypatch,
                                                                               zygote: str) -> None:
    own = ServerProcess.start(tmp_path / "home", extra_env={
        "FERRY_TOKEN_ID": "ak-from-the-shell", "FERRY_TOKEN_SECRET": "as-never-in-a-container",
        "FERRY_ZYGOTE": zygote})
    try:
        own.use(monkeypatch)
        monkeypatch.delenv("FERRY_TOKEN_ID", raising=False)
        with auth_apps.app.run(show_logs=False):
            environ, started_with = auth_apps.environment.remote()
    finally:
        own.stop()
    assert "FERRY_CONTAINER_SECRET" in environ  # its own credential is there
    for leaked in ("as-never-in-a-container", "ak-from-the-shell"):
        assert leaked not in environ and leaked not in started_with


def test_container_roles_need_a_container_credential(server: ServerProcess) -> None:
    admin = _credential(server.home)
    sock = FrameSocket.connect(server.url)
    try:
        sock.send(hello("container", container_id=admin["token_id"], token_secret=admin["token_secret"]))
        assert sock.recv()["t"] == "refused"
    finally:
        sock.close()


def test_every_request_declares_its_audience() -> None:
    """A new request is refused to containers unless its handler says otherwise."""
    assert _AUDIENCES["function.call"] == EVERYONE
    assert _AUDIENCES["secret.list"] == frozenset({Role.ADMIN})
    assert VolumeService.audiences()["volume.delete"] == frozenset({Role.ADMIN})


# -- TLS ----------------------------------------------------------------------------------------------
def test_tls_server_pins_its_certificate_and_refuses_clear_text(tmp_path: Path) -> None:
    own = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_TLS": "on"})
    try:
        assert own.url.startswith("ferry+tls://127.0.0.1:")
        state = json.loads((own.home / "server.json").read_text())
        assert len(state["tls_fingerprint"]) == 64
        assert stat.S_IMODE((own.home / "tls" / "server.key").stat().st_mode) == 0o600
        done = run_cli(["run", "tests/integration/apps/auth_apps.py::double", "--x", "4"], own)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "8"
        # the same address spoken in clear text gets no answer
        plain = socket.create_connection(("127.0.0.1", int(own.url.rsplit(":", 1)[1])), timeout=5)
        try:
            from ferry._protocol import encode

            plain.sendall(encode(hello("client", **_credential(own.home))))
            plain.settimeout(5)
            assert not plain.recv(100).startswith(b"\x00\x00")
        except OSError:
            pass
        finally:
            plain.close()
        wrong = run_cli(["secret", "list"], own, env={"FERRY_TLS_FINGERPRINT": "00" * 32})
        assert wrong.returncode == 1 and "fingerprint" in wrong.stderr
    finally:
        own.stop()


def test_binding_beyond_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "FERRY_HOME": str(tmp_path / "home"), "FERRY_TLS": "off"}
    done = subprocess.run([sys.executable, "-m", "ferry.server", "--host", "0.0.0.0", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "without TLS" in done.stderr and "FERRY_TLS" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr


_REMOTE_CLIENT = TLS_CLIENT_PRELUDE + r"""
from ferry._client import Client
from ferry._sync import run_sync
client = run_sync(Client.from_env())
print(json.dumps({"role": client.role, "secrets": client.request_sync("secret.list")}))
# the gateway: TLS, and a dashboard that asks for a login
web = sys.argv[1]
try:
    opener.open(web + "/")
    print(json.dumps({"dashboard": "open"}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"dashboard": exc.code, "location": exc.headers.get("location")}))
import os, urllib.parse
form = urllib.parse.urlencode({"token_id": os.environ["FERRY_TOKEN_ID"],
                               "token_secret": os.environ["FERRY_TOKEN_SECRET"]}).encode()
try:
    opener.open(web + "/_login", data=form)
except urllib.error.HTTPError as exc:
    cookie = exc.headers.get("set-cookie", "").split(";")[0]
    print(json.dumps({"login": exc.code, "secure": "Secure" in exc.headers.get("set-cookie", "")}))
    page = opener.open(urllib.request.Request(web + "/", headers={"Cookie": cookie}))
    print(json.dumps({"dashboard_after_login": page.status}))
"""


def test_a_server_on_a_non_loopback_address_serves_tls_to_a_remote_client(netns: str, tmp_path: Path) -> None:
    own = ServerProcess.start(tmp_path / "server-home", prefix=("ip", "netns", "exec", netns),
                              args=("--host", BEYOND_LOOPBACK), timeout=30)
    try:
        state = json.loads((own.home / "server.json").read_text())
        assert state["url"].startswith("ferry+tls://198.18.0.1:")
        assert state["web_url"].startswith("https://198.18.0.1:")
        minted = mint_credential(own, netns, "laptop")
        assert minted["tls_fingerprint"] == state["tls_fingerprint"]
        remote = {**os.environ, "FERRY_HOME": str(tmp_path / "laptop"), "FERRY_SERVER_URL": minted["server_url"],
                  "FERRY_TOKEN_ID": minted["token_id"], "FERRY_TOKEN_SECRET": minted["token_secret"],
                  "FERRY_TLS_FINGERPRINT": minted["tls_fingerprint"]}
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _REMOTE_CLIENT, state["web_url"]],
                              env=remote, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[0] == {"role": "admin", "secrets": []}
        assert lines[1] == {"dashboard": 303, "location": "/_login"}
        assert lines[2] == {"login": 303, "secure": True}
        assert lines[3] == {"dashboard_after_login": 200}
    finally:
        own.stop()


def _operator_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for 127.0.0.1 (what an operator would provide)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test operator CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_an_operator_certificate_is_verified_against_its_ca(tmp_path: Path) -> None:
    ca, cert, key = _operator_certificate(tmp_path)
    own = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_TLS": "on", "FERRY_TLS_CERT": str(cert),
                                                            "FERRY_TLS_KEY": str(key)})
    try:
        assert not (own.home / "tls").exists()  # nothing generated
        remote = {**_credential_env(own), "FERRY_HOME": str(tmp_path / "elsewhere"), "FERRY_TLS_CA": str(ca)}
        trusted = run_cli(["secret", "list", "--json"], own, env=remote)
        assert trusted.returncode == 0, trusted.stderr
        remote.pop("FERRY_TLS_CA")  # the system's CAs do not know the operator's CA
        untrusted = run_cli(["secret", "list"], own, env=remote)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    finally:
        own.stop()


def _credential_env(server: ServerProcess) -> dict[str, str]:
    admin = _credential(server.home)
    return {"FERRY_SERVER_URL": server.url, "FERRY_TOKEN_ID": admin["token_id"],
            "FERRY_TOKEN_SECRET": admin["token_secret"]}
