"""Reading a Dockerfile into Image steps (`Image.from_dockerfile`).

Supported instructions: FROM (one stage), ARG, ENV, RUN, WORKDIR, COPY, CMD and ENTRYPOINT.
Anything else is an InvalidError naming the instruction and its line, since silently skipping
it would build a different image than Docker would.

    FROM ref [AS name]   the base, as `Image.from_registry(ref)` (ARGs declared before it apply)
    ARG NAME[=default]   a build variable: `build_args` override it; substituted in later
                         instructions and exported to RUN commands, as Docker does
    ENV K=V ... | K V    `Image.env`
    RUN cmd | ["a", "b"] `Image.run_commands`
    WORKDIR path         `Image.workdir` (relative paths are relative to the previous one)
    COPY src... dest     `add_local_dir/add_local_file(copy=True)`, sources relative to the
                         build context; globs are expanded; no flags (--from, --chown...)
    CMD / ENTRYPOINT     recorded in the image's metadata (Ferry containers run functions)
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .exception import InvalidError

if TYPE_CHECKING:
    from ._image import Image

SUPPORTED = ("FROM", "RUN", "ENV", "WORKDIR", "COPY", "ARG", "CMD", "ENTRYPOINT")
_VARIABLE = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    result: list[tuple[int, str, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        word, _, rest = joined.partition(" ")
        result.append((start, word.upper(), rest.strip()))
    if pending:
        joined = " ".join(pending)
        word, _, rest = joined.partition(" ")
        result.append((start, word.upper(), rest.strip()))
    return result


def expand(text: str, variables: dict[str, str]) -> str:
    """Docker's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative}."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = variables.get(name)
        if match.group(2) == "-":
            return value if value else match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value or ""

    return _VARIABLE.sub(replace, text)


def _env_pairs(args: str, where: str) -> dict[str, str]:
    words = shlex.split(args)
    if not words:
        raise InvalidError(f"{where}: ENV needs NAME=value.")
    if "=" not in words[0]:  # legacy form: ENV NAME value with spaces
        name, _, value = args.partition(" ")
        return {name: value.strip()}
    pairs = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise InvalidError(f"{where}: {word!r} is not NAME=value.")
        pairs[name] = value
    return pairs


def _command(args: str) -> str | list[str]:
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            return args
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return args


def image_from_dockerfile(path: Path, context_dir: Path, build_args: dict[str, str], ignore: Any) -> "Image":
    """The Image that the Dockerfile at `path` describes."""
    from ._image import Image

    if not path.is_file():
        raise InvalidError(f"Image.from_dockerfile: {path} is not a file.")
    image: Image | None = None
    variables: dict[str, str] = {}   # ARG and ENV values visible to substitution
    pre_from: dict[str, str] = {}
    args: dict[str, str] = {}        # ARGs of the stage, exported to RUN
    workdir = "/"
    for line, word, rest in instructions(path.read_text()):
        where = f"{path}:{line}"
        if word not in SUPPORTED:
            raise InvalidError(
                f"{where}: the Dockerfile instruction {word} is not supported by Ferry (supported: "
                f"{', '.join(SUPPORTED)}). Remove it, or express it with Image methods."
            )
        if word == "ARG":
            name, sep, default = rest.partition("=")
            name = name.strip()
            value = build_args.get(name, expand(default.strip().strip('"'), variables) if sep else
                                   pre_from.get(name, ""))
            if image is None:
                pre_from[name] = value
            else:
                args[name] = value
            variables[name] = value
            continue
        if word == "FROM":
            if image is not None:
                raise InvalidError(f"{where}: multi-stage Dockerfiles (a second FROM) are not "
                                   "supported by Ferry; build from one stage.")
            words = expand(rest, {**pre_from, **build_args}).split()
            if words and words[0].startswith("--"):
                raise InvalidError(f"{where}: FROM {words[0]} is not supported by Ferry.")
            if not words or words[0] == "scratch":
                raise InvalidError(f"{where}: FROM needs a base image with Python (not scratch).")
            image = Image.from_registry(words[0])
            variables = {}
            continue
        if image is None:
            raise InvalidError(f"{where}: {word} before FROM; a Dockerfile starts with FROM.")
        if word == "ENV":
            pairs = {k: expand(v, variables) for k, v in _env_pairs(rest, where).items()}
            variables.update(pairs)
            image = image.env(pairs)
        elif word == "RUN":
            if rest.startswith("--"):
                raise InvalidError(f"{where}: RUN {rest.split()[0]} is not supported by Ferry.")
            command = _command(rest)
            text = shlex.join(command) if isinstance(command, list) else command
            if args:
                exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in args.items())
                text = f"export {exports}; {text}"
            image = image.run_commands(text)
        elif word == "WORKDIR":
            workdir = str(PurePosixPath(workdir, expand(rest, variables)))
            image = image.workdir(workdir)
        elif word == "COPY":
            image = _copy(image, expand(rest, variables), context_dir, workdir, where, ignore)
        else:  # CMD, ENTRYPOINT
            image = image._with("dockerfile_cmd", instruction=word, value=_command(rest))
    if image is None:
        raise InvalidError(f"{path} has no FROM instruction.")
    return image


def _copy(image: "Image", rest: str, context: Path, workdir: str, where: str, ignore: Any) -> "Image":
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    if any(w.startswith("--") for w in words):
        flag = next(w for w in words if w.startswith("--"))
        raise InvalidError(f"{where}: COPY {flag} is not supported by Ferry; copy from the build context.")
    if len(words) < 2:
        raise InvalidError(f"{where}: COPY needs a source and a destination.")
    *sources, dest = words
    dest_path = str(PurePosixPath(workdir, dest))
    matches: list[Path] = []
    for source in sources:
        found = sorted(context.glob(source)) if any(c in source for c in "*?[") else [context / source]
        if not found or not found[0].exists():
            raise InvalidError(f"{where}: COPY source {source!r} not found in the build context {context}.")
        matches.extend(found)
    into_dir = dest.endswith("/") or len(matches) > 1
    for match in matches:
        if match.is_dir():
            image = image.add_local_dir(match, dest_path, copy=True, ignore=ignore)
        else:
            target = str(PurePosixPath(dest_path, match.name)) if into_dir else dest_path
            image = image.add_local_file(match, target, copy=True)
    return image
