"""`import modal` on Ferry: the submodules programs import (`modal.functions`, `modal.app`, ...)
through the alias, and plain `python script.py` through the `ferry-modal-alias.pth` hook, which
costs nothing at interpreter start and never shadows a real `modal` installation. Each check runs
in a fresh interpreter."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBMODULES = ["functions", "app", "cls", "image", "volume", "secret", "partial_function", "experimental",
              "exception", "gpu", "container_process", "dict", "queue", "retries", "schedule", "output"]


def _python(args: list[str], *, cwd: Path, extra_path: list[Path] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, extra_path)])
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _site_dir(tmp_path: Path) -> Path:
    """A site directory holding what an installation of Ferry puts at the top of site-packages."""
    target = tmp_path / "site"
    target.mkdir()
    shutil.copy(REPO / "ferry-modal-alias.pth", target / "ferry-modal-alias.pth")
    return target


SCRIPT = """\
import sys
started_with_ferry = "ferry" in sys.modules
import modal
import modal.functions, modal.app, modal.cls, modal.image, modal.volume, modal.secret
import modal.partial_function, modal.experimental
import ferry
print(started_with_ferry, modal is ferry, modal.functions.Function is ferry.Function,
      modal.app.App is ferry.App, modal.cls.Cls is ferry.Cls, modal.image.Image is ferry.Image,
      modal.partial_function.method is ferry.method, ferry.__spec__.name)
"""


def test_submodules_resolve_through_the_alias(tmp_path: Path):
    code = ("from ferry._compat import install_modal_alias; install_modal_alias(force=True)\n"
            "import sys, importlib, ferry\n"
            f"names = {SUBMODULES!r}\n"
            "mods = [importlib.import_module('modal.' + n) for n in names]\n"
            "print(all(m is sys.modules['ferry.' + n] for m, n in zip(mods, names)))\n"
            "from modal.functions import FunctionCall; from modal.experimental import stop_fetching_inputs\n"
            "print(FunctionCall is ferry.FunctionCall)\n")
    ran = _python(["-c", code], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "True"]


def test_plain_python_script_imports_modal_through_the_pth_hook(tmp_path: Path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    boot = f"import site, runpy; site.addsitedir({str(_site_dir(tmp_path))!r}); runpy.run_path({str(script)!r})"
    ran = _python(["-c", boot], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["False", "True", "True", "True", "True", "True", "True", "ferry"]


@pytest.mark.skipif(not any((Path(p) / "ferry-modal-alias.pth").exists() for p in site.getsitepackages()),
                    reason="this Ferry installation predates ferry-modal-alias.pth (reinstall: pip install -e .)")
def test_installed_hook_serves_plain_python_script(tmp_path: Path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    ran = _python([str(script)], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[:2] == ["False", "True"]


def test_the_hook_never_shadows_a_real_modal(tmp_path: Path):
    real = tmp_path / "real" / "modal"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    (real / "functions.py").write_text("REAL_FUNCTIONS = True\n")
    code = (f"import site; site.addsitedir({str(_site_dir(tmp_path))!r})\n"
            "import sys, modal, modal.functions\n"
            "print(modal.REAL, modal.functions.REAL_FUNCTIONS, 'ferry' in sys.modules)\n")
    ran = _python(["-c", code], cwd=tmp_path, extra_path=[tmp_path / "real"])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "True", "False"]


def test_the_hook_costs_nothing_at_interpreter_start(tmp_path: Path):
    """Starting Python with the hook imports nothing: one list append."""
    code = (f"import site, sys; before = set(sys.modules); site.addsitedir({str(_site_dir(tmp_path))!r})\n"
            "print(sorted(set(sys.modules) - before), sys.meta_path[-1].__name__)\n")
    ran = _python(["-S", "-c", code], cwd=tmp_path)  # -S: no site-packages hook ran before this one
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[] FerryModalFallback"


def test_install_modal_alias_with_force_replaces_a_real_modal(tmp_path: Path):
    real = tmp_path / "real" / "modal"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    code = ("from ferry._compat import install_modal_alias, real_modal_installed\n"
            "import modal; was_real = modal.REAL\n"
            "print(real_modal_installed(), install_modal_alias(), install_modal_alias(force=True))\n"
            "import modal, modal.functions, ferry; print(was_real, modal is ferry)\n")
    ran = _python(["-c", code], cwd=tmp_path, extra_path=[tmp_path / "real"])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "False", "True", "True", "True"]


def test_experimental_unsupported_helpers_name_themselves_and_container_process_is_the_exec_process():
    import ferry.experimental as experimental

    for name in ("clustered", "get_cluster_info", "raw_dockerfile_image", "raw_registry_image", "image_delete",
                 "set_local_input_concurrency"):
        with pytest.raises(NotImplementedError, match=name):
            getattr(experimental, name)(1)
    from ferry._sandbox import ContainerProcess as built
    from ferry.container_process import ContainerProcess

    assert ContainerProcess is built  # what Sandbox.exec() returns (test_sandboxes.py)
