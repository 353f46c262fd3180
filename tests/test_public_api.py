"""The public surface of `ferry`: exactly the expected names, the error hierarchy, a light
`import ferry`, and the `modal` alias that lets code written for the guide run unchanged."""

from __future__ import annotations

import builtins
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ferry
import ferry.exception

REPO = Path(__file__).resolve().parent.parent

EXPECTED_PUBLIC_NAMES = [
    "App",
    "Cls",
    "Cron",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "Image",
    "LocalEntrypoint",
    "Period",
    "Queue",
    "Retries",
    "Sandbox",
    "Secret",
    "Volume",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "gpu",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]

EXPECTED_ERRORS = [
    "AuthError",
    "ConnectionError",
    "ContainerCrashError",
    "DeprecationError",
    "DeserializationError",
    "Error",
    "ExecutionError",
    "FunctionTimeoutError",
    "InputCancellation",
    "InvalidError",
    "NotFoundError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "RemoteError",
    "SandboxTerminatedError",
    "SandboxTimeoutError",
    "SerializationError",
    "ServerError",
    "TimeoutError",
]


def _exception_classes() -> list[type[BaseException]]:
    return [value for value in vars(ferry.exception).values()
            if inspect.isclass(value) and issubclass(value, BaseException)
            and value.__module__ == "ferry.exception"]


def _run_python(code: str, *, cwd: Path = REPO, extra_path: Path | None = None) -> str:
    env = dict(os.environ)
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_all_is_sorted():
    assert ferry.__all__ == sorted(ferry.__all__)


def test_all_is_exactly_the_public_api():
    assert ferry.__all__ == EXPECTED_PUBLIC_NAMES


def test_every_exported_name_exists():
    missing = [name for name in ferry.__all__ if not hasattr(ferry, name)]
    assert missing == []


def test_star_import_gives_exactly_the_public_names():
    namespace: dict[str, object] = {}
    exec("from ferry import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED_PUBLIC_NAMES


def test_version_is_a_string():
    assert isinstance(ferry.__version__, str) and ferry.__version__


def test_exception_all_is_sorted_and_lists_every_error_class():
    assert ferry.exception.__all__ == sorted(ferry.exception.__all__)
    assert ferry.exception.__all__ == EXPECTED_ERRORS
    assert sorted(cls.__name__ for cls in _exception_classes()) == EXPECTED_ERRORS


def test_every_error_class_subclasses_ferry_error():
    for cls in _exception_classes():
        assert issubclass(cls, ferry.Error), cls
    assert ferry.Error is ferry.exception.Error


@pytest.mark.parametrize("child, parent", [
    ("NotFoundError", "InvalidError"),
    ("ContainerCrashError", "ExecutionError"),
    ("OutOfMemoryError", "ExecutionError"),
    ("InputCancellation", "ExecutionError"),
])
def test_error_hierarchy_matches_the_documented_tree(child, parent):
    assert issubclass(getattr(ferry.exception, child), getattr(ferry.exception, parent))


@pytest.mark.parametrize("name", ["TimeoutError", "FunctionTimeoutError"])
def test_timeout_errors_are_also_builtin_timeout_errors(name):
    cls = getattr(ferry.exception, name)
    assert issubclass(cls, builtins.TimeoutError)
    with pytest.raises(builtins.TimeoutError):
        raise cls("took too long")


def test_connection_error_is_also_builtin_connection_error():
    assert issubclass(ferry.exception.ConnectionError, builtins.ConnectionError)


def test_import_ferry_does_not_import_cli_libraries():
    out = _run_python(
        "import ferry, sys; "
        "print(','.join(m for m in ('typer', 'rich', 'click') if m in sys.modules) or 'none')"
    )
    assert out == "none"


def test_import_ferry_does_not_install_the_modal_alias():
    out = _run_python("import ferry, sys; print('modal' in sys.modules)")
    assert out == "False"


def test_install_modal_alias_makes_import_modal_give_ferry():
    out = _run_python(
        "import importlib.util, sys\n"
        "from ferry._compat import real_modal_installed\nif real_modal_installed():\n"
        "    print('real modal installed'); sys.exit(0)\n"
        "from ferry._compat import install_modal_alias\n"
        "assert install_modal_alias() is True\n"
        "import ferry, modal, modal.exception\n"
        "from modal import gpu\n"
        "print(modal is ferry, modal.exception is ferry.exception, gpu is ferry.gpu,\n"
        "      modal.App is ferry.App)\n"
    )
    if out == "real modal installed":
        pytest.skip("the real modal package is installed in this environment")
    assert out == "True True True True"


def test_install_modal_alias_twice_still_reports_the_alias():
    out = _run_python(
        "import importlib.util, sys\n"
        "from ferry._compat import real_modal_installed\nif real_modal_installed():\n"
        "    print('real modal installed'); sys.exit(0)\n"
        "from ferry._compat import install_modal_alias\n"
        "import ferry\n"
        "first, second = install_modal_alias(), install_modal_alias()\n"
        "print(first, second, sys.modules['modal'] is ferry)\n"
    )
    if out == "real modal installed":
        pytest.skip("the real modal package is installed in this environment")
    assert out == "True True True"


def test_install_modal_alias_leaves_a_real_modal_alone(tmp_path):
    fake = tmp_path / "modal"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    out = _run_python(
        "from ferry._compat import install_modal_alias\n"
        "installed = install_modal_alias()\n"
        "import modal\n"
        "print(installed, getattr(modal, 'REAL', False))\n",
        extra_path=tmp_path,
    )
    assert out == "False True"
