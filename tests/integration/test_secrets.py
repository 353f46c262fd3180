"""Secrets end to end against a real server and real containers: every `Secret` constructor
reaches `os.environ` in the container, later secrets override earlier ones (app-level first),
`with_options(secrets=...)`, a missing secret or required key fails `app.run()` / `ferry run` /
`ferry deploy` before any container starts, a secret deleted under a deployed app fails its new
containers with the fix, the `ferry secret` commands, and a canary test that no value shows up
in the server log, the database, `ferry app show`, `ferry secret list` or error messages."""

from __future__ import annotations

import hashlib
import os
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import ferry
from ferry._client import Client
from ferry.exception import NotFoundError

from ..conftest import ServerProcess, run_cli

NAMED = "test-secrets-named"
MISSING = "test-secrets-does-not-exist"

app = ferry.App("test-secrets", secrets=[ferry.Secret.from_dict({"LAYER": "app", "APP_ONLY": "a", "SHARED": "app"})])


@app.function(secrets=[ferry.Secret.from_name(NAMED, required_keys=["TOKEN"]),
                       ferry.Secret.from_dict({"LAYER": "function"})])
def read_env(keys: list[str]) -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in keys}


@app.function()
def read_app_env(keys: list[str]) -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in keys}


@app.cls(secrets=[ferry.Secret.from_name(NAMED)])
class Reader:
    @ferry.enter()
    def load(self) -> None:
        self.token_at_enter = os.environ.get("TOKEN")

    @ferry.method()
    def token(self) -> str | None:
        return self.token_at_enter


missing_app = ferry.App("test-secrets-missing")


@missing_app.function(secrets=[ferry.Secret.from_name(MISSING)])
def never_runs() -> None:
    raise AssertionError("a function whose secret is missing must not run")


lacking_app = ferry.App("test-secrets-lacking")


@lacking_app.function(secrets=[ferry.Secret.from_name(NAMED, required_keys=["TOKEN", "NOT_THERE"])])
def never_runs_either() -> None:
    raise AssertionError("a function whose secret lacks a required key must not run")


def _client(server: ServerProcess) -> Client:
    return Client.for_url(server.url)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def named_secret(server):
    token = _unique("token")
    _client(server).request_sync("secret.create", name=NAMED, force=True,
                                 values={"TOKEN": token, "SHARED": "named", "LAYER": "named"})
    return token


# -- injection ------------------------------------------------------------------------------------
def test_named_secret_and_overrides_app_level_first_then_function_level(server, named_secret):
    with app.run(show_logs=False):
        env = read_env.remote(["TOKEN", "LAYER", "SHARED", "APP_ONLY"])
        only_app = read_app_env.remote(["TOKEN", "LAYER", "APP_ONLY"])
    # function-level secrets come after the app's; within a list, later ones override earlier
    assert env == {"TOKEN": named_secret, "LAYER": "function", "SHARED": "named", "APP_ONLY": "a"}
    assert only_app == {"TOKEN": None, "LAYER": "app", "APP_ONLY": "a"}


def test_class_containers_have_their_secrets_before_enter(server, named_secret):
    with app.run(show_logs=False):
        assert Reader().token.remote() == named_secret


def test_from_dotenv_and_from_local_environ_reach_the_container(server, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DOTENV_KEY=from-dotenv\nexport QUOTED=\"two words\"\n")
    # set after the server started, so only the secret can bring it into the container
    monkeypatch.setenv("TEST_SECRETS_LOCAL_KEY", "from-local")
    local_app = ferry.App("test-secrets-local")

    @local_app.function(secrets=[ferry.Secret.from_dotenv(tmp_path),
                                 ferry.Secret.from_local_environ(["TEST_SECRETS_LOCAL_KEY"])])
    def read(keys: list[str]) -> dict[str, str | None]:
        import os

        return {key: os.environ.get(key) for key in keys}

    with local_app.run(show_logs=False):
        assert read.remote(["DOTENV_KEY", "QUOTED", "TEST_SECRETS_LOCAL_KEY"]) == {
            "DOTENV_KEY": "from-dotenv", "QUOTED": "two words", "TEST_SECRETS_LOCAL_KEY": "from-local"}


def test_with_options_replaces_the_secrets(server, named_secret):
    with app.run(show_logs=False):
        variant = read_env.with_options(secrets=[ferry.Secret.from_dict({"VARIANT": "yes"})])
        assert variant.remote(["VARIANT", "TOKEN", "LAYER"]) == {"VARIANT": "yes", "TOKEN": None, "LAYER": None}
        assert read_env.remote(["VARIANT"]) == {"VARIANT": None}


# -- missing secrets fail before any container starts --------------------------------------------
def _apps_named(server: ServerProcess, name: str) -> list[dict]:
    return [row for row in _client(server).request_sync("app.list", all=True) if row["name"] == name]


def test_missing_secret_fails_app_run_naming_it_and_the_fix(server):
    with pytest.raises(NotFoundError) as raised:
        with missing_app.run(show_logs=False):
            pass
    message = str(raised.value)
    assert f"Secret {MISSING!r} not found (used by never_runs)" in message
    assert f"`ferry secret create {MISSING} KEY=value`" in message
    assert _apps_named(server, "test-secrets-missing") == []  # no app, so no container


def test_missing_required_key_fails_naming_the_key(server, named_secret):
    with pytest.raises(NotFoundError, match=f"{NAMED!r} lacks required key\\(s\\) NOT_THERE"):
        with lacking_app.run(show_logs=False):
            pass
    with pytest.raises(NotFoundError, match="NOT_THERE"):
        lacking_app.deploy(name=_unique("test-secrets-lacking"))
    assert _apps_named(server, "test-secrets-lacking") == []


def test_missing_secret_fails_ferry_run_and_ferry_deploy(server, tmp_path):
    missing = _unique("test-secrets-cli-missing")
    script = _write(tmp_path, "needs_secret.py", f"""
        import ferry

        app = ferry.App("test-secrets-cli-missing")

        @app.function(secrets=[ferry.Secret.from_name({missing!r})])
        def f() -> str:
            return "ran"

        @app.local_entrypoint()
        def main():
            print(f.remote())
    """)
    for command in (["run", str(script)], ["deploy", str(script)]):
        result = run_cli(command, server, cwd=tmp_path, env={"COLUMNS": "300"})
        assert result.returncode == 1, result.stdout
        assert f"Secret {missing!r} not found (used by f)" in result.stderr
        assert f"ferry secret create {missing} KEY=value" in result.stderr
        assert "ran" not in result.stdout
    assert _apps_named(server, "test-secrets-cli-missing") == []


def test_secret_deleted_under_a_deployed_app_fails_new_containers_until_recreated(server):
    name, app_name = _unique("test-secrets-deleted"), _unique("test-secrets-deployed")
    client = _client(server)
    client.request_sync("secret.create", name=name, values={"TOKEN": "before"})
    deleted_app = ferry.App(app_name)
    deleted_app.function(secrets=[ferry.Secret.from_name(name)], serialized=True)(_token)
    deleted_app.deploy()
    try:
        token = ferry.Function.from_name(app_name, "_token")
        assert token.remote() == "before"
        assert client.request_sync("secret.delete", name=name)["used_by"] == [app_name]
        # a new container (here: of a with_options variant) cannot start, and says why
        variant = token.with_options(timeout=60)
        with pytest.raises(ferry.Error, match=f"Secret {name!r} used by _token was deleted.*ferry secret create"):
            variant.remote()
        with pytest.raises(NotFoundError, match=f"Secret {name!r} not found"):
            deleted_app.deploy()  # redeploying checks the secrets again
        assert token.remote() == "before"  # the failed redeploy left the deployment as it was
        client.request_sync("secret.create", name=name, values={"TOKEN": "after"})
        assert variant.remote() == "after"
    finally:
        client.request_sync("app.stop", app=app_name)


def _token() -> str | None:
    import os

    return os.environ.get("TOKEN")


def test_secrets_survive_a_server_restart(tmp_path, monkeypatch):
    home = tmp_path / "home"
    first = ServerProcess.start(home)
    try:
        script = _write(tmp_path, "durable_secret.py", """
            import os

            import ferry

            app = ferry.App("test-secrets-durable")

            @app.function(secrets=[ferry.Secret.from_name("durable"), ferry.Secret.from_dict({"ANON": "kept"})])
            def read() -> tuple:
                return os.environ.get("NAMED"), os.environ.get("ANON")
        """)
        assert run_cli(["secret", "create", "durable", "NAMED=kept"], first).returncode == 0
        deployed = run_cli(["deploy", str(script)], first, cwd=tmp_path)
        assert deployed.returncode == 0, deployed.stderr
    finally:
        first.stop()
    second = ServerProcess.start(home)
    try:
        second.use(monkeypatch)
        monkeypatch.setenv("FERRY_HOME", str(home))
        assert ferry.Function.from_name("test-secrets-durable", "read").remote() == ("kept", "kept")
        assert "durable" in run_cli(["secret", "list"], second).stdout
    finally:
        second.stop()


# -- the CLI --------------------------------------------------------------------------------------
def test_secret_cli_create_list_delete(server, tmp_path):
    name = _unique("test-secrets-cli")
    created = run_cli(["secret", "create", name, "A=1", "B=two=2"], server)
    assert created.returncode == 0, created.stderr
    assert f"Created secret {name} with keys: A, B." in created.stdout

    again = run_cli(["secret", "create", name, "A=3"], server, env={"COLUMNS": "300"})
    assert again.returncode == 1
    assert f"Secret {name!r} already exists" in again.stderr and "--force" in again.stderr

    (tmp_path / "extra.env").write_text("C=from-file\nA=from-file\n")
    forced = run_cli(["secret", "create", name, "A=4", "--from-dotenv", str(tmp_path / "extra.env"), "--force"],
                     server)
    assert forced.returncode == 0, forced.stderr
    assert f"Replaced secret {name} with keys: A, C." in forced.stdout

    listed = run_cli(["secret", "list"], server, env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if name in line)
    assert time.strftime("%Y-%m-%d") in row
    assert not [line for line in listed.stdout.splitlines() if "anon-" in line]

    check_app = ferry.App(_unique("test-secrets-cli-check"))
    check = check_app.function(secrets=[ferry.Secret.from_name(name)], serialized=True)(_env_a_c)
    with check_app.run(show_logs=False):
        assert check.remote() == ("4", "from-file")  # arguments override the .env file

    deleted = run_cli(["secret", "delete", name], server)
    assert deleted.returncode == 0, deleted.stderr
    assert name not in run_cli(["secret", "list"], server, env={"COLUMNS": "200"}).stdout
    again = run_cli(["secret", "delete", name], server)
    assert again.returncode == 1 and f"No secret named {name!r}" in again.stderr


def _env_a_c() -> tuple[str | None, str | None]:
    import os

    return os.environ.get("A"), os.environ.get("C")


@pytest.mark.parametrize("args, expected", [
    ([], "needs at least one KEY=VALUE"),
    (["NOT_AN_ASSIGNMENT"], "Argument 1 after the secret name is not KEY=VALUE"),
    (["A=1", "A=2"], "Key 'A' is given twice"),
    (["=v"], "not a valid environment variable name"),
])
def test_secret_cli_create_rejects_bad_arguments(server, args, expected):
    result = run_cli(["secret", "create", _unique("test-secrets-bad"), *args], server, env={"COLUMNS": "300"})
    assert result.returncode == 1
    assert expected in result.stderr


# -- values are never shown or stored in clear -------------------------------------------------------
LEAK_APP = """
    import hashlib
    import os

    import ferry

    app = ferry.App("test-secrets-leak")

    @app.function(secrets=[ferry.Secret.from_name("leak-check"), ferry.Secret.from_dotenv(),
                           ferry.Secret.from_local_environ(["LOCAL_TOKEN"]),
                           ferry.Secret.from_dict({"DICT_TOKEN": os.environ.get("DICT_SOURCE")})])
    def digests() -> dict:
        keys = ["NAMED_TOKEN", "DOTENV_TOKEN", "LOCAL_TOKEN", "DICT_TOKEN"]
        print("reading", len(keys), "secrets")
        return {k: hashlib.sha256(os.environ[k].encode()).hexdigest() for k in keys}

    @app.local_entrypoint()
    def main():
        for key, digest in sorted(digests.remote().items()):
            print(key, digest)
"""


def test_secret_values_never_appear_in_logs_database_or_output(tmp_path, monkeypatch):
    """Canary values go in through every route; the function reads them; then the server log
    (at DEBUG), every file under FERRY_HOME, `ferry app show/list/logs`, `ferry secret list`,
    the app.show / function.lookup answers and error messages are searched for them."""
    canaries = {key: f"canary-{key.lower()}-{uuid.uuid4().hex}" for key in
                ("NAMED_TOKEN", "DOTENV_TOKEN", "LOCAL_TOKEN", "DICT_TOKEN")}
    home = tmp_path / "home"
    own = ServerProcess.start(home, extra_env={"FERRY_LOG_LEVEL": "DEBUG"})
    outputs: list[str] = []

    def cli(*args: str, ok: bool = True) -> str:
        result = run_cli(list(args), own, cwd=work, env={"LOCAL_TOKEN": canaries["LOCAL_TOKEN"],
                                                         "DICT_SOURCE": canaries["DICT_TOKEN"], "COLUMNS": "300"})
        assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
        outputs.append(result.stdout + result.stderr)
        return result.stdout + result.stderr

    try:
        work = tmp_path / "work"
        work.mkdir()
        (work / ".env").write_text(f"DOTENV_TOKEN={canaries['DOTENV_TOKEN']}\n")
        script = _write(work, "leaky.py", LEAK_APP)
        cli("secret", "create", "leak-check", f"NAMED_TOKEN={canaries['NAMED_TOKEN']}")
        expected = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in canaries.items()}

        # the function reads every value: through ferry run, and deployed (called in-process)
        ran = cli("run", str(script))
        for key, digest in expected.items():
            assert f"{key} {digest}" in ran
        cli("deploy", str(script))
        own.use(monkeypatch)
        monkeypatch.setenv("FERRY_HOME", str(home))
        assert ferry.Function.from_name("test-secrets-leak", "digests").remote() == expected

        # everything a user can look at
        cli("app", "show", "test-secrets-leak")
        cli("app", "list")
        cli("app", "logs", "test-secrets-leak")
        cli("secret", "list")
        client = Client.for_url(own.url)
        outputs.append(repr(client.request_sync("app.show", app="test-secrets-leak")))
        outputs.append(repr(client.request_sync("function.lookup", app="test-secrets-leak", tag="digests")))
        outputs.append(repr(client.request_sync("secret.list")))
        # error messages that involve the secret or a value
        cli("secret", "create", "leak-check", f"NAMED_TOKEN={canaries['NAMED_TOKEN']}", ok=False)
        cli("secret", "create", "leak-check", canaries["NAMED_TOKEN"], ok=False)
        strict = _write(work, "strict.py", LEAK_APP.replace(
            'from_name("leak-check")', 'from_name("leak-check", required_keys=["NAMED_TOKEN", "ABSENT"])'))
        assert "lacks required key(s) ABSENT" in cli("run", str(strict), ok=False)
        assert "reading 4 secrets" in "".join(outputs)
    finally:
        own.stop()

    for key, value in canaries.items():
        for text in outputs:
            assert value not in text, f"{key} shown in output:\n{text}"
        for path in home.rglob("*"):
            if path.is_file():
                assert value.encode() not in path.read_bytes(), f"{key} stored in clear in {path}"
    assert (home / "server.log").stat().st_size > 0
    assert oct((home / "secret.key").stat().st_mode & 0o777) == "0o600"
