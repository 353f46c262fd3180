"""The Image recipe on the client: resolution to the wire form, cache keys, local files,
run_function pickles, imports(). Builds themselves are tested in tests/integration."""

from __future__ import annotations

import os
from pathlib import Path

import cloudpickle
import pytest

import ferry
from ferry.exception import InvalidError


def _key(image: ferry.Image) -> str:
    return image._wire().definition["key"]


def test_every_method_returns_a_new_image_and_the_key_chains() -> None:
    base = ferry.Image.debian_slim(python_version="3.11")
    a = base.pip_install("six").env({"A": "1"})
    b = base.pip_install("six").env({"A": "2"})
    assert base.steps != a.steps and len(a.steps) == 3
    assert _key(a) != _key(b)
    assert _key(base.pip_install("six").env({"A": "1"})) == _key(a)
    assert a._wire().definition["steps"][1]["label"] == "pip_install six"


def test_empty_package_lists_add_no_step() -> None:
    base = ferry.Image.debian_slim()
    assert base.pip_install() is base and base.apt_install([]) is base and base.uv_pip_install() is base


def test_pip_options_are_part_of_the_step() -> None:
    image = ferry.Image.debian_slim().pip_install(["a", "b"], index_url="https://i/simple",
                                                  extra_index_url="https://x/simple", pre=True,
                                                  extra_options="--no-deps")
    args = image._wire().definition["steps"][1]["args"]
    assert args["packages"] == ["a", "b"] and args["pre"] is True and args["extra_options"] == "--no-deps"
    assert (args["index_url"], args["extra_index_url"]) == ("https://i/simple", "https://x/simple")


def test_requirements_and_pyproject_are_read_at_publish_time(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    pyproject = tmp_path / "pyproject.toml"
    image = ferry.Image.debian_slim().pip_install_from_requirements(requirements) \
        .pip_install_from_pyproject(pyproject, optional_dependencies=["dev"])
    requirements.write_text("six\n")
    pyproject.write_text('[project]\nname="x"\ndependencies=["a==1"]\n'
                         '[project.optional-dependencies]\ndev=["b"]\n')
    wire = image._wire()
    req_step, pyproject_step = wire.definition["steps"][1:]
    assert wire.blobs[req_step["args"]["requirements"][0]] == b"six\n"
    assert pyproject_step["args"]["packages"] == ["a==1", "b"]
    key = wire.definition["key"]
    requirements.write_text("six==1.16.0\n")
    assert _key(image) != key
    with pytest.raises(InvalidError, match="no optional dependency group 'docs'"):
        ferry.Image.debian_slim().pip_install_from_pyproject(pyproject, optional_dependencies=["docs"])._wire()


def _setup(value: int, *, scale: int = 1) -> None:
    Path("/x").write_text(str(value * scale))


def test_run_function_pickles_the_function_with_its_arguments() -> None:
    one = ferry.Image.debian_slim().run_function(_setup, args=(1,), kwargs={"scale": 2})
    two = ferry.Image.debian_slim().run_function(_setup, args=(2,), kwargs={"scale": 2})
    wire = one._wire()
    step = wire.definition["steps"][1]
    function, args, kwargs = cloudpickle.loads(wire.blobs[step["args"]["function"]])
    assert (function.__name__, args, kwargs) == ("_setup", (1,), {"scale": 2})
    assert _key(one) != _key(two) and _key(one) == _key(ferry.Image.debian_slim().run_function(
        _setup, args=(1,), kwargs={"scale": 2}))
    with pytest.raises(InvalidError, match="takes a ferry.Volume"):  # (volumes: tests/integration/test_volumes.py)
        ferry.Image.debian_slim().run_function(_setup, volumes={"/v": object()})


def test_run_function_needs_the_local_python_version() -> None:
    other = "3.13" if ferry._image.local_python_version() != "3.13" else "3.11"
    with pytest.raises(InvalidError, match="pickles the function"):
        ferry.Image.debian_slim(python_version=other).run_function(_setup)._wire()


def test_steps_after_mounted_local_files_are_refused(tmp_path: Path) -> None:
    mounted = ferry.Image.debian_slim().add_local_dir(tmp_path, "/data")
    with pytest.raises(InvalidError, match="must be the last steps"):
        mounted.pip_install("six")
    copied = ferry.Image.debian_slim().add_local_dir(tmp_path, "/data", copy=True).pip_install("six")
    assert [s.kind for s in copied.steps] == ["debian_slim", "copy", "pip_install"]


def test_local_files_manifest_ignores_and_modes(tmp_path: Path) -> None:
    (tmp_path / "keep.py").write_text("x")
    (tmp_path / "run.sh").write_text("#!/bin/sh")
    os.chmod(tmp_path / "run.sh", 0o755)
    (tmp_path / "skip.pyc").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("x")
    image = ferry.Image.debian_slim().add_local_dir(tmp_path, "/app", ignore=["*.pyc", ".git"])
    mount = image._wire().definition["mounts"][0]
    assert {k: v[1] for k, v in mount["files"].items()} == {"keep.py": 0o644, "run.sh": 0o755}
    single = ferry.Image.debian_slim().add_local_file(tmp_path / "keep.py", "/etc/")._wire().definition
    assert single["mounts"][0]["remote_path"] == "/etc/keep.py"
    with pytest.raises(InvalidError, match="absolute path"):
        ferry.Image.debian_slim().add_local_dir(tmp_path, "relative/path")
    with pytest.raises(InvalidError, match="is not a directory"):
        ferry.Image.debian_slim().add_local_dir(tmp_path / "nope", "/x")._wire()


def test_imports_swallow_import_errors_outside_the_images_container(monkeypatch) -> None:
    image = ferry.Image.debian_slim().pip_install("package-that-exists-nowhere")
    with image.imports():
        import package_that_exists_nowhere  # noqa: F401
    monkeypatch.setenv("FERRY_IS_CONTAINER", "1")
    monkeypatch.setenv("FERRY_IMAGE_RECIPE", ferry.Image.debian_slim().env({"A": "1"})._recipe_id())
    with image.imports():  # a container of another image
        import package_that_exists_nowhere  # noqa: F401,F811
    monkeypatch.setenv("FERRY_IMAGE_RECIPE", image._recipe_id())
    with pytest.raises(ImportError):
        with image.imports():
            import package_that_exists_nowhere  # noqa: F401,F811


def test_recipe_id_does_not_depend_on_where_local_files_are(tmp_path: Path) -> None:
    a = ferry.Image.debian_slim().add_local_dir(tmp_path / "one" / "src", "/src")
    b = ferry.Image.debian_slim().add_local_dir(tmp_path / "two" / "src", "/src")
    assert a._recipe_id() == b._recipe_id()


def test_force_build_setting_marks_every_step(monkeypatch) -> None:
    image = ferry.Image.debian_slim().pip_install("six", force_build=True).env({"A": "1"})
    assert [s["force"] for s in image._wire().definition["steps"]] == [False, True, False]
    monkeypatch.setenv("FERRY_FORCE_BUILD", "1")
    assert all(s["force"] for s in image._wire().definition["steps"])


@pytest.mark.parametrize("call, words", [
    (lambda: ferry.Image.from_registry("python:3.11", add_python="3.11"), "add_python"),
    (lambda: ferry.Image.debian_slim().pip_install("x", gpu="A10G"), "gpu="),
    (lambda: ferry.Image.debian_slim().run_function(_setup, cpu=2), "cpu="),
])
def test_options_not_built_raise_not_implemented(call, words: str) -> None:
    with pytest.raises(NotImplementedError, match=words):
        call()


def test_local_oci_references_become_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    image = ferry.Image.from_registry("oci-archive:img.tar:v1")
    assert image.steps[0].args["ref"] == f"oci-archive:{tmp_path / 'img.tar'}:v1"
    assert ferry.Image.from_registry("python:3.11-slim").steps[0].args["ref"] == "python:3.11-slim"
