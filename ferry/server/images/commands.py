"""What both image builders share, importing no server state (a Ray node's agent builds with
it too): the pip and uv commands of install steps, the runtime packages every image gets, and
how a failed step is described to the caller.

    StepFailure       a build command failed: the command, its exit code, its last lines
    BuildFailed       a step of an image failed (which step, of how many, why)
    describe_failure  the error a caller gets for a BuildFailed (the step, exit code, tail)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from ...exception import ExecutionError, InvalidError
from .model import LayerPlan

RUNTIME_PACKAGES = ("cloudpickle", "msgpack", "tzdata")
"""What containers need besides Ferry: pickles must agree with the server's; tzdata gives
`zoneinfo` its data in images without /usr/share/zoneinfo (Debian's slim bases have none)."""


def runtime_requirements() -> list[str]:
    """The server's own versions of what containers need besides Ferry (pickles must agree)."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]

@dataclass
class StepFailure(Exception):
    """A build command failed: what ran, its exit code, and its last lines of output."""

    command: str
    code: int | None
    tail: list[str]
    reason: str = ""

    def __str__(self) -> str:
        what = self.reason or (f"exit code {self.code}" if self.code is not None else "no exit code")
        return f"`{self.command}` failed ({what})"

class BuildFailed(Exception):
    """A step failed; earlier layers stay cached."""

    def __init__(self, plan: LayerPlan, total: int, failure: BaseException, image_key: str) -> None:
        super().__init__(str(failure))
        self.plan = plan
        self.total = total
        self.failure = failure
        self.image_key = image_key

def pip_command(python: str, args: dict[str, Any], requirement_files: list[str]) -> str:
    words = [python, "-m", "pip", "install"]
    words += _index_options(args)
    if args.get("pre"):
        words.append("--pre")
    for path in requirement_files:
        words += ["-r", path]
    words += args["packages"]
    extra = args.get("extra_options") or ""
    return shlex.join(words) + (f" {extra}" if extra else "")


def uv_command(python: str, args: dict[str, Any], requirement_files: list[str]) -> str:
    version = args.get("uv_version")
    uv = f"uv=={version}" if version else "uv"
    install = f"{shlex.quote(python)} -m pip install {shlex.quote(uv)}"
    ensure = install if version else f"command -v uv >/dev/null 2>&1 || {install}"
    words = ["uv", "pip", "install", "--system", "--python", python]
    words += _index_options(args)
    if args.get("pre"):
        words += ["--prerelease", "allow"]
    for path in requirement_files:
        words += ["-r", path]
    words += args["packages"]
    extra = args.get("extra_options") or ""
    return f"{ensure} && " + shlex.join(words) + (f" {extra}" if extra else "")


def _index_options(args: dict[str, Any]) -> list[str]:
    words = []
    for option in ("index_url", "extra_index_url", "find_links"):
        if args.get(option):
            words += ["--" + option.replace("_", "-"), args[option]]
    return words


def describe_failure(failed: BuildFailed, full_log: str) -> Exception:
    """The caller's error for a failed step: the step, the command and its exit code, the last
    lines of its output, and `full_log` (where the whole log is kept). Refusals keep their
    type (InvalidError, NotImplementedError); anything else is an ExecutionError."""
    error = failed.failure
    where = f"step {failed.plan.index + 1}/{failed.total} ({failed.plan.label})"
    if isinstance(error, StepFailure):
        tail = "\n".join("    " + line for line in error.tail[-20:])
        command = error.command if len(error.command) <= 300 else error.command[:300] + "…"
        outcome = error.reason or f"exit code {error.code}"
        return ExecutionError(
            f"Image build failed at {where}: `{command}` failed ({outcome}). Earlier steps are "
            f"cached; full log: {full_log}.\n"
            f"  command: {error.command}\n  {outcome}\n  last lines of output:\n{tail}"
        )
    if isinstance(error, (InvalidError, NotImplementedError)):
        return type(error)(f"Image build failed at {where}: {error}")
    return ExecutionError(f"Image build failed at {where}: {type(error).__name__}: {error}")
