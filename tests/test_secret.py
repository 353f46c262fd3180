"""`ferry.Secret` declarations and what `secrets=` puts in a function's config (no server)."""

from __future__ import annotations

import pytest

import ferry
from ferry.exception import InvalidError

CANARY = "canary-value-9a7b"


def _square(x: int) -> int:
    return x * x


def _config(function: ferry.Function) -> dict:
    return function.definition(None, __name__)["config"]


def test_from_name_is_a_reference_with_its_required_keys():
    secret = ferry.Secret.from_name("openai-secret", required_keys=["OPENAI_API_KEY"])
    assert secret._reference() == {"name": "openai-secret", "required_keys": ["OPENAI_API_KEY"]}
    assert repr(secret) == "Secret.from_name('openai-secret')"


@pytest.mark.parametrize("name", ["", "two words", "anon-x", "a" * 65])
def test_from_name_rejects_bad_names(name):
    with pytest.raises(InvalidError, match="secret name|reserved"):
        ferry.Secret.from_name(name)


def test_from_name_rejects_required_keys_given_as_a_string():
    with pytest.raises(InvalidError, match="required_keys= takes a list"):
        ferry.Secret.from_name("s", required_keys="KEY")


def test_from_name_environment_name_is_not_supported():
    with pytest.raises(NotImplementedError, match="environment_name"):
        ferry.Secret.from_name("s", environment_name="prod")


def test_from_dict_drops_none_values_and_never_shows_values():
    secret = ferry.Secret.from_dict({"API_KEY": CANARY, "UNSET": None})
    assert secret._reference() == {"values": {"API_KEY": CANARY}}
    assert CANARY not in repr(secret) and "API_KEY" in repr(secret)


@pytest.mark.parametrize("bad", [["A"], {"A": 1}, {"": "x"}, {"A=B": "x"}, {"A": "nul\0"}])
def test_from_dict_rejects_what_cannot_be_an_environment(bad):
    with pytest.raises(InvalidError):
        ferry.Secret.from_dict(bad)


def test_from_dotenv_searches_upwards_from_a_directory_or_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"# comment\nAPI_KEY={CANARY}\nexport QUOTED=\"a b\"\nNO_VALUE\n")
    nested = tmp_path / "pkg" / "sub"
    nested.mkdir(parents=True)
    (nested / "main.py").write_text("")
    expected = {"values": {"API_KEY": CANARY, "QUOTED": "a b"}}
    assert ferry.Secret.from_dotenv(nested)._reference() == expected
    assert ferry.Secret.from_dotenv(nested / "main.py")._reference() == expected  # from_dotenv(__file__)
    monkeypatch.chdir(nested)
    assert ferry.Secret.from_dotenv()._reference() == expected


def test_from_dotenv_with_another_filename(tmp_path):
    (tmp_path / "prod.env").write_text("MODE=prod\n")
    assert ferry.Secret.from_dotenv(tmp_path, filename="prod.env")._reference() == {"values": {"MODE": "prod"}}


def test_from_dotenv_without_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidError, match=r"no \.missing-env file in .* or any directory above"):
        ferry.Secret.from_dotenv(tmp_path, filename=".missing-env")


def test_from_local_environ(monkeypatch):
    monkeypatch.setenv("FERRY_TEST_LOCAL_KEY", CANARY)
    secret = ferry.Secret.from_local_environ(["FERRY_TEST_LOCAL_KEY"])
    assert secret._reference() == {"values": {"FERRY_TEST_LOCAL_KEY": CANARY}}
    monkeypatch.delenv("FERRY_TEST_LOCAL_KEY")
    with pytest.raises(InvalidError, match="FERRY_TEST_LOCAL_KEY are not set"):
        ferry.Secret.from_local_environ(["FERRY_TEST_LOCAL_KEY"])
    with pytest.raises(InvalidError, match="takes a list"):
        ferry.Secret.from_local_environ("FERRY_TEST_LOCAL_KEY")


def test_inside_a_container_local_files_and_variables_are_not_read(tmp_path, monkeypatch):
    """Containers re-import the module; there the .env file and local variables are absent and
    the container gets its secrets from the server, so declaring must not fail."""
    monkeypatch.setenv("FERRY_IS_CONTAINER", "1")
    dotenv = ferry.Secret.from_dotenv(tmp_path / "nowhere")
    local = ferry.Secret.from_local_environ(["FERRY_TEST_SURELY_UNSET"])
    assert "declared inside a container" in dotenv._reference()["unavailable"]
    assert "declared inside a container" in local._reference()["unavailable"]


def test_function_config_holds_references_in_order_app_level_first():
    app = ferry.App("test-secret-config", secrets=[ferry.Secret.from_name("app-level")])
    function = app.function(secrets=[ferry.Secret.from_name("fn-level"), ferry.Secret.from_dict({"K": "v"})])(_square)
    assert _config(function)["secrets"] == [
        {"name": "app-level", "required_keys": []},
        {"name": "fn-level", "required_keys": []},
        {"values": {"K": "v"}},
    ]
    plain = ferry.App("test-secret-config-plain").function()(_square)
    assert "secrets" not in _config(plain)


def test_class_gets_app_level_secrets_too():
    app = ferry.App("test-secret-config-cls", secrets=[ferry.Secret.from_name("app-level")])

    class Model:
        @ferry.method()
        def run(self) -> None: ...

    cls = app.cls(secrets=[ferry.Secret.from_name("cls-level")])(Model)
    assert [r["name"] for r in cls.definition(None, __name__)["config"]["secrets"]] == ["app-level", "cls-level"]


@pytest.mark.parametrize("bad", [ferry.Secret.from_name("single"), "my-secret", ["my-secret"], {"K": "v"}])
def test_secrets_option_must_be_a_list_of_secrets(bad):
    with pytest.raises(InvalidError, match="secrets= takes a list"):
        ferry.App("test-secret-bad").function(secrets=bad)
    with pytest.raises(InvalidError, match="secrets= takes a list"):
        ferry.App("test-secret-bad-app", secrets=bad)
