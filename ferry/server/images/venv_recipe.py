"""An image as the process runtime honours it, planned and built into a venv on one host.

The process runtime has no private filesystem, so an image there is what can be honoured on
the host itself:

    debian_slim(v)         the host's python{v} (`python_version` defaults to the client's
                           version when the host has it, else the host's own Python)
    pip_install, uv_pip_install, pip_install_from_requirements/pyproject
                           installed into the image's venv (the host's pip configuration applies)
    apt_install            verified: every package must already be installed on the host
    env                    set in the container's environment
    workdir                the container's working directory (it must exist on the host)
    add_local_python_source (mounted or copied)   on the container's PYTHONPATH
    dockerfile CMD/ENTRYPOINT                     ignored (functions are what containers run)

Refused with a clear error: from_registry/from_dockerfile, run_commands, run_function and
copied add_local_dir/add_local_file, which need an image filesystem (use the sandbox runtime).
Mounted add_local_dir/add_local_file are refused too, except on a Ray node, whose agent binds
them in the container's private mount namespace (`check_recipe(mounts_at_paths=True)`).

This module holds no server state and imports none: the control plane's `VenvBackend`
(venv_builder.py) builds with it under `$FERRY_HOME/images/venvs`, and the ray runtime's node
agent (runtimes/ray/node_images.py) under the node's cache, with the same key for the same
recipe on the same host: the key chains the host interpreter's path, the runtime packages'
versions and every step (`plan_venv`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ferry

from ..._image_wire import step_key
from ...exception import InvalidError
from .commands import BuildFailed, StepFailure, pip_command, runtime_requirements, uv_command
from .files import materialise_files
from .model import LayerPlan

REFUSED = {
    "from_registry": "Image.from_registry() / from_dockerfile() need an image root filesystem",
    "run_commands": "Image.run_commands() would change the host itself",
    "run_function": "Image.run_function() would run on the host itself",
}
COMPLETE = ".ferry-complete"
"""The file a venv holds once every step of it was built (its text: the build's id, if forced)."""
SecretEnv = Callable[[list[dict[str, Any]], str], dict[str, str]]


def host_pythons() -> dict[str, str]:
    """major.minor -> interpreter path, for the Pythons on the host's PATH (and this process's)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for path in glob.glob(os.path.join(directory, "python3.*")):
            match = re.fullmatch(r"python(3\.\d+)", os.path.basename(path))
            if match and os.access(path, os.X_OK):
                found.setdefault(match.group(1), path)
    return found


def python_version(requested: str | None, client_python: str) -> str:
    """The Python version an image runs on this host, or an InvalidError listing the host's."""
    pythons = host_pythons()
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    version = requested or (client_python if client_python in pythons else own)
    if version not in pythons:
        raise InvalidError(
            f"Python {version} is not available to the process runtime on this host (it runs "
            f"the host's interpreters). Available versions: {', '.join(sorted(pythons))}. "
            "Install it on the host, pass one of them as python_version=, or use the sandbox runtime."
        )
    return version


def check_recipe(wire: dict[str, Any], *, mounts_at_paths: bool = False) -> None:
    """Raise InvalidError for a step the process runtime cannot honour. `mounts_at_paths`:
    add_local_dir/add_local_file mounts are bound at their paths (a Ray node's agent does)."""
    for step in wire["steps"]:
        kind = step["kind"]
        if kind in REFUSED:
            raise InvalidError(f"{REFUSED[kind]}: the process runtime runs containers on the host, "
                               "without an image filesystem. Use the sandbox runtime (run the server "
                               "with FERRY_RUNTIME=sandbox), or remove the step.")
        if kind == "copy" and step["args"]["kind"] != "python":
            raise InvalidError(
                f"{step['label']}: the process runtime shares the host's filesystem, so it cannot "
                "place files at a path of an image. Use add_local_python_source for code, or "
                "the sandbox runtime (FERRY_RUNTIME=sandbox)."
            )
    for mount in wire.get("mounts") or []:
        if mount["kind"] != "python" and not mounts_at_paths:
            raise InvalidError(
                f"add_local_{mount['kind']}(..., {mount['remote_path']!r}): the process runtime shares "
                "the host's filesystem and cannot mount files at a path. Read the files where they "
                "are, or use the sandbox runtime (FERRY_RUNTIME=sandbox)."
            )


def recipe_env(steps: list[dict[str, Any]]) -> tuple[dict[str, str], str | None]:
    """The environment and working directory the image's `env` and `workdir` steps set."""
    env: dict[str, str] = {}
    workdir: str | None = None
    for step in steps:
        if step["kind"] == "env":
            env.update(step["args"]["vars"])
        elif step["kind"] == "workdir":
            workdir = step["args"]["path"]
    return env, workdir


@dataclass(frozen=True)
class VenvPlan:
    """What an image is on this host: `python` the host interpreter (the venv is made from it,
    or it runs as is when `needs_venv` is false), its env and workdir, and the venv's `key`."""

    key: str
    python: str
    version: str
    steps: list[dict[str, Any]] = field(repr=False)
    env: dict[str, str]
    workdir: str | None
    needs_venv: bool

    @property
    def labels(self) -> list[str]:
        return [s["label"] for s in self.steps]

    def pythonpath(self, venv: Path) -> tuple[str, ...]:
        """The copied add_local_python_source directories of the venv at `venv`."""
        return tuple(str(venv / "src" / s["args"]["remote_path"].strip("/"))
                     for s in self.steps if s["kind"] == "copy")


def plan_venv(wire: dict[str, Any], *, mounts_at_paths: bool = False) -> VenvPlan:
    """Check `wire` against this host (its Pythons, workdir, installed apt packages) and key it."""
    check_recipe(wire, mounts_at_paths=mounts_at_paths)
    steps = wire["steps"]
    version = python_version(steps[0]["args"].get("python_version"), wire["client_python"])
    python = host_pythons()[version]
    key = step_key("", "venv", {"python": python, "version": version, "requirements": runtime_requirements()})
    for step in steps[1:]:
        key = step_key(key, step["kind"], step["args"])
        if step["kind"] == "apt_install":
            verify_apt(step["args"]["packages"])
    env, workdir = recipe_env(steps)
    if workdir is not None and not Path(workdir).is_dir():
        raise InvalidError(f"Image.workdir({workdir!r}): the directory does not exist on the host, "
                           "and the process runtime runs in the host's filesystem. Create it "
                           "or use the sandbox runtime.")
    needs_venv = python != sys.executable or any(s["kind"] in ("pip_install", "uv_pip_install", "copy")
                                                 for s in steps)
    return VenvPlan(key=key, python=python, version=version, steps=steps, env=env, workdir=workdir,
                    needs_venv=needs_venv)


class Progress:
    """Build events for one request, delivered from the build thread through `emit` (the
    server's image service; a node's build, whose events the control plane polls)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None] | None) -> None:
        self._emit = emit

    def _send(self, event: dict[str, Any]) -> None:
        if self._emit is not None:
            self._emit(event)

    def plan(self, labels: list[str], key: str = "") -> None:
        self._send({"event": "plan", "labels": labels, "key": key})

    def step(self, index: int, state: str, seconds: float | None = None) -> None:
        self._send({"event": "step", "index": index, "state": state, "seconds": seconds})

    def log(self, index: int, text: str) -> None:
        self._send({"event": "log", "index": index, "text": text})


class NoProgress:
    """Progress events nobody watches (a node's build: its log is kept in files)."""

    def plan(self, labels: list[str], key: str = "") -> None:
        pass

    def step(self, index: int, state: str, seconds: float | None = None) -> None:
        pass

    def log(self, index: int, text: str) -> None:
        pass


class VenvBuilder:
    """Builds a plan's venv step by step, keeping each step's output in `log_path(index)`.

    `get_blob(digest)` reads the files steps need (requirements files, copied sources); Ferry
    itself is made importable in the venv through `ferry_path` (a directory holding a link to
    this Ferry's package, named in a `.pth` file)."""

    def __init__(self, get_blob: Callable[[str], bytes], step_timeout: float, ferry_path: Path) -> None:
        self.get_blob = get_blob
        self.step_timeout = step_timeout
        self.ferry_path = ferry_path

    def build(self, plan: VenvPlan, venv: Path, log_path: Callable[[int], Path], progress: Any,
              secret_env: SecretEnv, build_id: str = "") -> None:
        """Build `venv` from scratch; on failure it is removed and BuildFailed raised (the
        failed step's log kept)."""
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(log_path(0).parent, ignore_errors=True)
        log_path(0).parent.mkdir(parents=True)
        venv_python = str(venv / "bin" / "python")
        steps = plan.steps
        progress.plan(plan.labels, plan.key)
        for index, step in enumerate(steps):
            started = time.monotonic()
            progress.step(index, "building")
            lines: list[str] = []

            def log(line: str, index: int = index, lines: list[str] = lines) -> None:
                lines.append(line)
                progress.log(index, line)

            try:
                if index == 0:
                    self._run([plan.python, "-m", "venv", str(venv)], log)
                    self._run([venv_python, "-m", "pip", "install", *runtime_requirements()], log)
                    self._link_ferry(venv)
                elif step["kind"] in ("pip_install", "uv_pip_install"):
                    self._pip(venv, venv_python, step, log, secret_env)
                elif step["kind"] == "copy":
                    materialise_files(step["args"]["files"], self,
                                      venv / "src" / step["args"]["remote_path"].strip("/"))
            except BaseException as exc:
                log_path(index).write_text("".join(line + "\n" for line in lines))
                progress.step(index, "failed")
                shutil.rmtree(venv, ignore_errors=True)
                failed = LayerPlan(index, plan.key, "", step["kind"], step["args"], step["label"])
                raise BuildFailed(failed, len(steps), exc, plan.key) from exc
            log_path(index).write_text("".join(line + "\n" for line in lines))
            progress.step(index, "built", time.monotonic() - started)
        (venv / COMPLETE).write_text(build_id)

    def get(self, digest: str) -> bytes:
        """(what materialise_files reads blobs with)"""
        return self.get_blob(digest)

    def _pip(self, venv: Path, venv_python: str, step: dict[str, Any], log: Callable[[str], None],
             secret_env: SecretEnv) -> None:
        args = step["args"]
        requirements = []
        for number, digest in enumerate(args.get("requirements") or []):
            path = venv / f"requirements-{number}.txt"
            path.write_bytes(self.get_blob(digest))
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


def verify_apt(packages: list[str]) -> None:
    """InvalidError unless every Debian package is installed on this host."""
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
