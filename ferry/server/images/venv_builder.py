"""Images for the `process` runtime: one virtual environment per image, on the host.

The process runtime has no private filesystem, so an image there is what can be honoured on
the host itself:

    debian_slim(v)         the host's python{v} (`python_version` defaults to the client's
                           version when the host has it, else the server's Python)
    pip_install, uv_pip_install, pip_install_from_requirements/pyproject
                           installed into the image's venv (the host's pip configuration applies)
    apt_install            verified: every package must already be installed on the host
    env                    set in the container's environment
    workdir                the container's working directory (it must exist on the host)
    add_local_python_source (mounted or copied)   on the container's PYTHONPATH
    dockerfile CMD/ENTRYPOINT                     ignored (functions are what containers run)

Refused with a clear error: from_registry/from_dockerfile, run_commands, run_function and
add_local_dir/add_local_file, which need an image filesystem (use the sandbox runtime).

A plain image (no packages, the server's Python) uses the server's interpreter directly; any
other gets `images/venvs/<key>` with the container's dependencies installed and Ferry itself
on its path (a `.pth` file), built once and reused.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import ferry

from ..._image_wire import step_key
from ...exception import InvalidError
from .files import materialise_files
from .layers import LayerStore
from .model import BuiltImage, LayerPlan
from .sandbox_builder import BuildFailed, runtime_requirements
from .sandbox_steps import StepFailure, pip_command, uv_command

_REFUSED = {
    "from_registry": "Image.from_registry() / from_dockerfile() need an image root filesystem",
    "run_commands": "Image.run_commands() would change the host itself",
    "run_function": "Image.run_function() would run on the host itself",
}
_COMPLETE = ".ferry-complete"


def host_pythons() -> dict[str, str]:
    """major.minor -> interpreter path, for the Pythons on the host's PATH (and the server's)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for path in glob.glob(os.path.join(directory, "python3.*")):
            match = re.fullmatch(r"python(3\.\d+)", os.path.basename(path))
            if match and os.access(path, os.X_OK):
                found.setdefault(match.group(1), path)
    return found


class VenvBackend:
    target = "process"

    def __init__(self, store: LayerStore, blobs: Any, step_timeout: float) -> None:
        self.store = store
        self.blobs = blobs
        self.step_timeout = step_timeout
        self.ferry_path = store.root / "ferry-package"

    def python_for(self, requested: str | None, client_python: str) -> str:
        pythons = host_pythons()
        server = f"{sys.version_info.major}.{sys.version_info.minor}"
        version = requested or (client_python if client_python in pythons else server)
        if version not in pythons:
            raise InvalidError(
                f"Python {version} is not available to the process runtime on this host (it runs "
                f"the host's interpreters). Available versions: {', '.join(sorted(pythons))}. "
                "Install it on the host, pass one of them as python_version=, or use the sandbox runtime."
            )
        return version

    def check(self, wire: dict[str, Any]) -> None:
        for step in wire["steps"]:
            kind = step["kind"]
            if kind in _REFUSED:
                raise InvalidError(f"{_REFUSED[kind]}: the process runtime runs containers on the host, "
                                   "without an image filesystem. Use the sandbox runtime (run the server "
                                   "with FERRY_RUNTIME=sandbox), or remove the step.")
            if kind == "copy" and step["args"]["kind"] != "python":
                raise InvalidError(
                    f"{step['label']}: the process runtime shares the host's filesystem, so it cannot "
                    "place files at a path of an image. Use add_local_python_source for code, or "
                    "the sandbox runtime (FERRY_RUNTIME=sandbox)."
                )
        for mount in wire.get("mounts") or []:
            if mount["kind"] != "python":
                raise InvalidError(
                    f"add_local_{mount['kind']}(..., {mount['remote_path']!r}): the process runtime shares "
                    "the host's filesystem and cannot mount files at a path. Read the files where they "
                    "are, or use the sandbox runtime (FERRY_RUNTIME=sandbox)."
                )

    def build(self, wire: dict[str, Any], force: bool, progress: Any,
              secret_env: Callable[[list[dict[str, Any]], str], dict[str, str]]) -> BuiltImage:
        self.check(wire)
        steps = wire["steps"]
        version = self.python_for(steps[0]["args"].get("python_version"), wire["client_python"])
        python = host_pythons()[version]
        env: dict[str, str] = {}
        workdir: str | None = None
        pythonpath: list[str] = []
        key = step_key("", "venv", {"python": python, "version": version,
                                    "requirements": runtime_requirements()})
        for step in steps[1:]:
            key = step_key(key, step["kind"], step["args"])
            if step["kind"] == "env":
                env.update(step["args"]["vars"])
            elif step["kind"] == "workdir":
                workdir = step["args"]["path"]
                if not Path(workdir).is_dir():
                    raise InvalidError(f"Image.workdir({workdir!r}): the directory does not exist on the host, "
                                       "and the process runtime runs in the host's filesystem. Create it "
                                       "or use the sandbox runtime.")
            elif step["kind"] == "apt_install":
                _verify_apt(step["args"]["packages"])
        needs_venv = python != sys.executable or any(
            s["kind"] in ("pip_install", "uv_pip_install", "copy") for s in steps)
        if not needs_venv:
            progress.plan([s["label"] for s in steps], key)
            for index in range(len(steps)):
                progress.step(index, "cached")
            return BuiltImage(key=key, python=python, env=env, workdir=workdir, recipe=wire.get("recipe", ""),
                              python_version=version)
        venv = self.store.venvs / key
        forced = force or any(s["force"] for s in steps)
        if (venv / _COMPLETE).exists() and not forced:
            progress.plan([s["label"] for s in steps], key)
            for index in range(len(steps)):
                progress.step(index, "cached")
        else:
            self._build_venv(key, venv, python, steps, progress, secret_env)
        for step in steps:
            if step["kind"] == "copy":
                pythonpath.append(str(venv / "src" / step["args"]["remote_path"].strip("/")))
        self.store.put_record(key, {"label": " -> ".join(s["label"] for s in steps), "layers": [],
                                    "step_labels": [s["label"] for s in steps],  # logs: LayerStore.venv_log
                                    "steps": len(steps), "last_step": steps[-1]["label"],
                                    "venv": str(venv), "state": "built", "target": self.target,
                                    "recipe": wire.get("recipe", ""), "python_version": version})
        return BuiltImage(key=key, python=str(venv / "bin" / "python"), env=env, workdir=workdir,
                          recipe=wire.get("recipe", ""), python_version=version, pythonpath=tuple(pythonpath))

    def _build_venv(self, key: str, venv: Path, python: str, steps: list[dict[str, Any]], progress: Any,
                    secret_env: Callable[[list[dict[str, Any]], str], dict[str, str]]) -> None:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(self.store.venv_log(key, 0).parent, ignore_errors=True)
        self.store.venv_log(key, 0).parent.mkdir(parents=True)
        venv_python = str(venv / "bin" / "python")
        progress.plan([s["label"] for s in steps], key)
        for index, step in enumerate(steps):
            started = time.monotonic()
            progress.step(index, "building")
            lines: list[str] = []

            def log(line: str, index: int = index, lines: list[str] = lines) -> None:
                lines.append(line)
                progress.log(index, line)

            try:
                if index == 0:
                    self._run([python, "-m", "venv", str(venv)], log)
                    self._run([venv_python, "-m", "pip", "install", *runtime_requirements()], log)
                    self._link_ferry(venv)
                elif step["kind"] in ("pip_install", "uv_pip_install"):
                    self._pip(venv, venv_python, step, log, secret_env)
                elif step["kind"] == "copy":
                    materialise_files(step["args"]["files"], self.blobs,
                                      venv / "src" / step["args"]["remote_path"].strip("/"))
            except BaseException as exc:
                self._write_log(key, index, lines)
                progress.step(index, "failed")
                shutil.rmtree(venv, ignore_errors=True)
                self.store.put_record(key, {"label": " -> ".join(s["label"] for s in steps), "layers": [],
                                            "step_labels": [s["label"] for s in steps], "steps": len(steps),
                                            "last_step": steps[-1]["label"], "state": "failed",
                                            "failed_step": index, "error": str(exc), "target": self.target})
                plan = LayerPlan(index, key, "", step["kind"], step["args"], step["label"])
                raise BuildFailed(plan, len(steps), exc, key) from exc
            self._write_log(key, index, lines)
            progress.step(index, "built", time.monotonic() - started)
        (venv / _COMPLETE).write_text("")

    def _write_log(self, key: str, index: int, lines: list[str]) -> None:
        self.store.venv_log(key, index).write_text("".join(line + "\n" for line in lines))

    def _pip(self, venv: Path, venv_python: str, step: dict[str, Any], log: Callable[[str], None],
             secret_env: Callable[[list[dict[str, Any]], str], dict[str, str]]) -> None:
        args = step["args"]
        requirements = []
        for number, digest in enumerate(args.get("requirements") or []):
            path = venv / f"requirements-{number}.txt"
            path.write_bytes(self.blobs.get(digest))
            requirements.append(str(path))
        if step["kind"] == "pip_install":
            command = pip_command(venv_python, args, requirements)
        else:
            command = uv_command(venv_python, args, requirements).replace(" --system", "")
        env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               "VIRTUAL_ENV": str(venv), **secret_env(args.get("secrets") or [], step["label"])}
        self._run(["/bin/sh", "-c", command], log, env=env, shown=command)

    def _link_ferry(self, venv: Path) -> None:
        """Ferry's own package, importable in the venv without copying it."""
        self.ferry_path.mkdir(parents=True, exist_ok=True)
        link = self.ferry_path / "ferry"
        if not link.exists():
            link.symlink_to(Path(ferry.__file__).parent, target_is_directory=True)
        for site in venv.glob("lib/python3.*/site-packages"):
            (site / "_ferry.pth").write_text(str(self.ferry_path) + "\n")

    def _run(self, argv: list[str], log: Callable[[str], None], env: dict[str, str] | None = None,
             shown: str | None = None) -> None:
        command = shown or " ".join(argv)
        log(f"$ {command}")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
        tail: list[str] = []
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail = (tail + [line])[-40:]
            log(line)
        try:
            code = process.wait(timeout=self.step_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise StepFailure(command, None, tail, reason="timed out") from None
        if code != 0:
            raise StepFailure(command, code, tail)


def _verify_apt(packages: list[str]) -> None:
    if shutil.which("dpkg-query") is None:
        raise InvalidError("apt_install: this host has no dpkg, so the process runtime cannot check "
                           f"that {', '.join(packages)} are installed. Use the sandbox runtime.")
    missing = []
    for package in packages:
        name = package.split("=")[0]
        result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name],
                                capture_output=True, text=True)
        if result.returncode != 0 or not result.stdout.startswith("ii"):
            missing.append(name)
    if missing:
        raise InvalidError(
            f"apt_install: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed on "
            "this host. The process runtime uses the host's system packages: install them with "
            f"`apt-get install -y {' '.join(missing)}`, or use the sandbox runtime (FERRY_RUNTIME=sandbox)."
        )
