"""Container images as recipes of steps, defined in code.

Each method returns a new Image with one more step; nothing is read or built when a method
is called. When an app is published (or `ferry image build` runs) the recipe is resolved into
its wire form (`Image._wire`): local files become blob manifests, `run_function` a pickled
function, a Dockerfile its steps. The server builds it layer by layer; a step's cache key is
the hash of its resolved definition and its parent's key, so an unchanged image is no work.

`add_local_*` without `copy=True` are not steps: they are mounted when a container starts,
so changing those files rebuilds nothing. For that reason they must come last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

from . import _config
from ._image_files import check_ignore
from ._unsupported import unsupported, unsupported_property
from .exception import InvalidError


@dataclass(frozen=True)
class Step:
    """One recipe step as written: `kind` and its arguments (local paths not yet read)."""

    kind: str
    args: dict[str, Any]
    force: bool = False


@dataclass(frozen=True)
class LocalMount:
    """An `add_local_*` without `copy=True`: files mounted at container start."""

    kind: str  # "dir", "file" or "python"
    local: tuple[str, ...]
    remote_path: str
    ignore: Any = None


@dataclass
class WireImage:
    """An image resolved for the server: its definition and the blobs it refers to."""

    definition: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)


class Image:
    """An image recipe. Start from `Image.debian_slim()`, `Image.from_registry()` or
    `Image.from_dockerfile()` and chain steps; each method returns a new Image."""

    def __init__(self, steps: tuple[Step, ...], mounts: tuple[LocalMount, ...] = ()) -> None:
        self._steps = steps
        self._mounts = mounts

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def __repr__(self) -> str:
        parts = [s.kind for s in self._steps] + [f"add_local_{m.kind}" for m in self._mounts]
        return f"Image({' -> '.join(parts)})"

    def _with(self, kind: str, force_build: bool = False, **args: Any) -> "Image":
        if self._mounts:
            raise InvalidError(
                f"Image.{kind}() comes after an add_local_*() call. Files added without copy=True "
                "are mounted when containers start, so they must be the last steps of an image "
                "(changing them then rebuilds nothing). Move the add_local_*() calls to the end, "
                "or pass copy=True to make them a build step."
            )
        return Image(self._steps + (Step(kind, args, bool(force_build)),))

    # -- bases ----------------------------------------------------------------------------
    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> "Image":
        """Debian with Python. `python_version` defaults to your local Python's major.minor;
        the sandbox runtime offers the versions of Debian's own Python (3.11, 3.13)."""
        return Image((Step("debian_slim", {"python_version": _python_version(python_version)},
                           bool(force_build)),))

    @staticmethod
    def from_registry(tag: str, *, secret: Any = None, setup_dockerfile_commands: Sequence[str] = (),
                      force_build: bool = False, add_python: str | None = None, **kwargs: Any) -> "Image":
        """An OCI image: `python:3.11-slim` (pulled with skopeo), or a local `oci-archive:PATH`
        or `oci:DIR[:TAG]`. The image must have Python; Ferry installs its few dependencies."""
        if kwargs:
            raise InvalidError(f"Image.from_registry() got unknown argument(s): {', '.join(kwargs)}.")
        if add_python is not None:
            raise NotImplementedError("Image.from_registry(add_python=...) is not supported by Ferry "
                                      "yet; use an image that has Python, e.g. 'python:3.11-slim'.")
        if secret is not None:
            raise NotImplementedError("Image.from_registry(secret=...) (private registries) is not "
                                      "supported by Ferry yet.")
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidError(f"Image.from_registry() takes an image reference, got {tag!r}.")
        image = Image((Step("from_registry", {"ref": _absolute_oci_ref(tag.strip())}, bool(force_build)),))
        if setup_dockerfile_commands:
            raise NotImplementedError("Image.from_registry(setup_dockerfile_commands=...) is not "
                                      "supported by Ferry; chain .run_commands(...) instead.")
        return image

    @staticmethod
    def from_dockerfile(path: str | Path, *, context_dir: str | Path | None = None,
                        build_args: dict[str, str] | None = None, force_build: bool = False,
                        ignore: Any = None, add_python: str | None = None, secret: Any = None) -> "Image":
        """An image from a Dockerfile (FROM, RUN, ENV, WORKDIR, COPY, ARG, CMD, ENTRYPOINT).
        COPY sources are relative to `context_dir` (default: the Dockerfile's directory)."""
        if add_python is not None or secret is not None:
            raise NotImplementedError("Image.from_dockerfile(add_python=/secret=) is not supported by Ferry yet.")
        if build_args is not None and not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in build_args.items()):
            raise InvalidError("build_args= takes a dict of str to str.")
        args = {"path": str(path), "context_dir": None if context_dir is None else str(context_dir),
                "build_args": dict(build_args or {}), "ignore": check_ignore(ignore)}
        return Image((Step("dockerfile", args, bool(force_build)),))

    # -- Python packages ------------------------------------------------------------------
    def pip_install(self, *packages: str | list[str], find_links: str | None = None,
                    index_url: str | None = None, extra_index_url: str | None = None, pre: bool = False,
                    extra_options: str = "", force_build: bool = False, secrets: Sequence[Any] = (),
                    gpu: Any = None) -> "Image":
        """Install Python packages with pip into the image's Python."""
        _no_gpu(gpu)
        names = _packages(packages, "pip_install")
        if not names:
            return self
        return self._with("pip_install", force_build, packages=names,
                          **_pip_options(find_links, index_url, extra_index_url, pre, extra_options),
                          secrets=_secrets(secrets))

    def uv_pip_install(self, *packages: str | list[str], requirements: Sequence[str] | None = None,
                       find_links: str | None = None, index_url: str | None = None,
                       extra_index_url: str | None = None, pre: bool = False, extra_options: str = "",
                       force_build: bool = False, uv_version: str | None = None,
                       secrets: Sequence[Any] = (), gpu: Any = None) -> "Image":
        """Install Python packages with uv (installed in the image from PyPI if missing)."""
        _no_gpu(gpu)
        names = _packages(packages, "uv_pip_install")
        files = [str(r) for r in (requirements or [])]
        if not names and not files:
            return self
        return self._with("uv_pip_install", force_build, packages=names, requirements=files,
                          uv_version=uv_version,
                          **_pip_options(find_links, index_url, extra_index_url, pre, extra_options),
                          secrets=_secrets(secrets))

    def pip_install_from_requirements(self, requirements_txt: str | Path, find_links: str | None = None, *,
                                      index_url: str | None = None, extra_index_url: str | None = None,
                                      pre: bool = False, extra_options: str = "", force_build: bool = False,
                                      secrets: Sequence[Any] = (), gpu: Any = None) -> "Image":
        """Install the packages of a requirements file (`-r`/`-c` includes are not followed)."""
        _no_gpu(gpu)
        return self._with("pip_install", force_build, packages=[], requirements=[str(requirements_txt)],
                          **_pip_options(find_links, index_url, extra_index_url, pre, extra_options),
                          secrets=_secrets(secrets))

    def pip_install_from_pyproject(self, pyproject_toml: str | Path, optional_dependencies: Sequence[str] = (), *,
                                   find_links: str | None = None, index_url: str | None = None,
                                   extra_index_url: str | None = None, pre: bool = False,
                                   extra_options: str = "", force_build: bool = False,
                                   secrets: Sequence[Any] = (), gpu: Any = None) -> "Image":
        """Install `[project] dependencies` (and the named optional groups) of a pyproject.toml."""
        _no_gpu(gpu)
        return self._with("pip_install", force_build, packages=[], pyproject=str(pyproject_toml),
                          optional_dependencies=list(optional_dependencies),
                          **_pip_options(find_links, index_url, extra_index_url, pre, extra_options),
                          secrets=_secrets(secrets))

    # -- system ---------------------------------------------------------------------------
    def apt_install(self, *packages: str | list[str], force_build: bool = False,
                    secrets: Sequence[Any] = (), gpu: Any = None) -> "Image":
        """Install Debian packages with apt-get."""
        _no_gpu(gpu)
        names = _packages(packages, "apt_install")
        if not names:
            return self
        return self._with("apt_install", force_build, packages=names, secrets=_secrets(secrets))

    def env(self, vars: dict[str, str]) -> "Image":  # noqa: A002 - public API name
        """Set environment variables in the image (later builds steps and containers see them)."""
        if not isinstance(vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in vars.items()):
            raise InvalidError("Image.env() takes a dict of str to str, e.g. {\"PORT\": \"6443\"}.")
        bad = [k for k in vars if not k or "=" in k or "\0" in k]
        if bad:
            raise InvalidError(f"Image.env(): invalid variable name(s) {bad}.")
        return self._with("env", vars=dict(vars))

    def workdir(self, path: str | PurePosixPath) -> "Image":
        """The working directory of later steps and of containers (created if missing)."""
        text = str(path)
        if not PurePosixPath(text).is_absolute():
            raise InvalidError(f"Image.workdir() takes an absolute path, got {text!r}.")
        return self._with("workdir", path=text)

    def run_commands(self, *commands: str | list[str], secrets: Sequence[Any] = (), gpu: Any = None,
                     force_build: bool = False) -> "Image":
        """Run shell commands in the image, in order, each with `sh -c`; stops at the first failure."""
        _no_gpu(gpu)
        return self._with("run_commands", force_build, commands=_packages(commands, "run_commands"),
                          secrets=_secrets(secrets))

    def run_function(self, raw_f: Callable[..., Any], *, secrets: Sequence[Any] = (), volumes: Any = None,
                     gpu: Any = None, cpu: float | None = None, memory: int | None = None,
                     timeout: int = 60 * 60, force_build: bool = False, args: Sequence[Any] = (),
                     kwargs: dict[str, Any] | None = None) -> "Image":
        """Run a Python function in the image at build time (e.g. to download model weights).
        The function is pickled with its arguments; changing either rebuilds the step."""
        _no_gpu(gpu)
        volume_args: dict[str, Any] = {}
        if volumes:  # mounted while it runs, committed when it returns (server/volume_mounts.py)
            from ._volume import check_volumes, volume_references

            volume_args = {"volumes": volume_references(check_volumes(volumes))}
        if cpu is not None or memory is not None:
            raise NotImplementedError("Image.run_function(cpu=/memory=) is not supported by Ferry yet; "
                                      "build steps run without resource limits.")
        raw = getattr(raw_f, "_ferry_raw", None) or raw_f
        if not callable(raw):
            raise InvalidError(f"Image.run_function() takes a function, got {raw_f!r}.")
        return self._with("run_function", force_build, function=raw, args=tuple(args),
                          kwargs=dict(kwargs or {}), timeout=timeout, secrets=_secrets(secrets), **volume_args)

    # -- local files ----------------------------------------------------------------------
    def add_local_dir(self, local_path: str | Path, remote_path: str, *, copy: bool = False,
                      ignore: Any = None) -> "Image":
        """Add a local directory at `remote_path`: mounted at container start, or with
        `copy=True` copied into the image as a build step."""
        ignore = check_ignore(ignore)
        return self._local("dir", (str(local_path),), _remote(remote_path), copy, ignore)

    def add_local_file(self, local_path: str | Path, remote_path: str, *, copy: bool = False) -> "Image":
        """Add a local file at `remote_path` (a trailing '/' keeps the file's name)."""
        remote = str(remote_path)
        if remote.endswith("/"):
            remote += Path(local_path).name
        return self._local("file", (str(local_path),), _remote(remote), copy, None)

    def add_local_python_source(self, *modules: str, copy: bool = False, ignore: Any = None) -> "Image":
        """Add local Python modules or packages (by import name) to /root, which is on the
        containers' sys.path."""
        if not modules:
            raise InvalidError("add_local_python_source() takes module names, e.g. "
                               "add_local_python_source('mypackage').")
        return self._local("python", tuple(modules), "/root", copy, check_ignore(ignore))

    def _local(self, kind: str, local: tuple[str, ...], remote: str, copy: bool, ignore: Any) -> "Image":
        if copy:
            return self._with("copy", source=kind, local=list(local), remote_path=remote, ignore=ignore)
        return Image(self._steps, self._mounts + (LocalMount(kind, local, remote, ignore),))

    # -- imports that exist only in the image ---------------------------------------------
    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """`with image.imports(): import torch` — an ImportError is ignored here, where the
        package may not be installed, and raised in containers running this image."""
        try:
            yield
        except ImportError:
            if os.environ.get("FERRY_IS_CONTAINER") == "1" and \
                    os.environ.get("FERRY_IMAGE_RECIPE") == self._recipe_id():
                raise

    # -- resolution -----------------------------------------------------------------------
    def _recipe_id(self) -> str:
        """Identity of the recipe as written (paths, not file contents): the same here and
        in a container importing the same code."""
        written = [[s.kind, _stable(_without_local_paths(s.kind, s.args))] for s in self._steps]
        written += [[m.kind, [Path(p).name for p in m.local], m.remote_path] for m in self._mounts]
        return hashlib.sha256(json.dumps(written, sort_keys=True).encode()).hexdigest()[:32]

    def _wire(self) -> WireImage:
        """Read the local files and functions the recipe refers to: the server's definition."""
        from ._image_wire import resolve

        return resolve(self, force_all=bool(_config.get("force_build")))

    @property
    def client(self) -> Any:
        """The client images are built with (the configured server's)."""
        from ._client import Client

        return Client.from_env_sync()

    # -- building ahead of a run ------------------------------------------------------------
    def build(self, app: Any = None) -> "Image":
        """Build this image on the server now (as `ferry image build` does), so that a later run
        finds its layers cached. `app` is accepted for the reference's signature."""
        from ._client import Client
        from ._sync import run_sync

        async def build() -> None:
            client = await Client.from_env()
            wire = self._wire()
            if wire.blobs:
                missing = await client.request("blob.missing", hashes=list(wire.blobs))
                for digest in missing:
                    await client.request("blob.put", data=wire.blobs[digest], hash=digest)
            await client.request("image.build", image=wire.definition)

        run_sync(build())
        return self

    from_id = staticmethod(unsupported("Image.from_id", "images have no server-side ids; `ferry image list` "
                                       "shows their cache keys"))
    from_name = staticmethod(unsupported("Image.from_name", "images are not published by name"))
    publish = unsupported("Image.publish", "images are not published by name")
    from_scratch = staticmethod(unsupported("Image.from_scratch", "every image is a Debian root filesystem"))
    from_aws_ecr = staticmethod(unsupported("Image.from_aws_ecr", "use Image.from_registry (skopeo) with the "
                                            "registry's credentials in its environment"))
    from_gcp_artifact_registry = staticmethod(unsupported(
        "Image.from_gcp_artifact_registry", "use Image.from_registry (skopeo)"))
    micromamba = staticmethod(unsupported("Image.micromamba", "conda environments are not built"))
    micromamba_install = unsupported("Image.micromamba_install", "conda environments are not built")
    poetry_install_from_file = unsupported("Image.poetry_install_from_file",
                                           "use pip_install_from_pyproject")
    uv_sync = unsupported("Image.uv_sync", "use uv_pip_install")
    pip_install_private_repos = unsupported("Image.pip_install_private_repos",
                                            "use pip_install(index_url=...) or run_commands with secrets=")
    dockerfile_commands = unsupported("Image.dockerfile_commands",
                                      "use run_commands, env and workdir, or Image.from_dockerfile")
    entrypoint = unsupported("Image.entrypoint", "containers run Ferry's own entrypoint")
    cmd = unsupported("Image.cmd", "containers run Ferry's own entrypoint")
    shell = unsupported("Image.shell", "containers run Ferry's own entrypoint")
    pipe = unsupported("Image.pipe", "compose images by chaining their methods")
    logs = unsupported("Image.logs", "use `ferry image logs KEY`")
    hydrate = unsupported("Image.hydrate", "images are built when an app runs or deploys, or with Image.build()")
    get_dashboard_url = unsupported("Image.get_dashboard_url", "the dashboard has no image pages")
    object_id = unsupported_property("Image.object_id", "images have no server-side ids")


def _without_local_paths(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Step arguments with local paths reduced to file names: a container imports the same
    code from another directory, and must compute the same recipe id."""
    names = lambda paths: [Path(p).name for p in paths]  # noqa: E731
    if kind == "copy":
        return {**args, "local": names(args["local"])}
    if kind == "dockerfile":
        return {**args, "path": Path(args["path"]).name, "context_dir": None}
    if kind in ("pip_install", "uv_pip_install"):
        result = {**args, "requirements": names(args.get("requirements") or [])}
        if args.get("pyproject"):
            result["pyproject"] = Path(args["pyproject"]).name
        return result
    return args


def _python_version(version: Any) -> str | None:
    if version is None:
        return None
    parts = str(version).strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]) or parts[0] != "3":
        raise InvalidError(f"python_version={version!r} is not a Python version; use e.g. \"3.11\".")
    return f"{parts[0]}.{parts[1]}"


def local_python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _absolute_oci_ref(ref: str) -> str:
    for transport in ("oci-archive:", "oci:"):
        if ref.startswith(transport):
            rest = ref[len(transport):]
            path, sep, tag = rest.partition(":")
            return f"{transport}{Path(path).expanduser().resolve()}{sep}{tag}"
    return ref


def _packages(items: tuple[Any, ...], method: str) -> list[str]:
    result: list[str] = []
    for item in items:
        values = item if isinstance(item, (list, tuple)) else [item]
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise InvalidError(f"Image.{method}() takes strings, got {value!r}.")
            result.append(value.strip())
    return result


def _pip_options(find_links: Any, index_url: Any, extra_index_url: Any, pre: Any, extra_options: Any) -> dict[str, Any]:
    for name, value in (("find_links", find_links), ("index_url", index_url),
                        ("extra_index_url", extra_index_url)):
        if value is not None and not isinstance(value, str):
            raise InvalidError(f"{name}= takes a URL string, got {value!r}.")
    if not isinstance(extra_options, str):
        raise InvalidError(f"extra_options= takes a string of pip options, got {extra_options!r}.")
    return {"find_links": find_links, "index_url": index_url, "extra_index_url": extra_index_url,
            "pre": bool(pre), "extra_options": extra_options}


def _secrets(secrets: Any) -> list[Any]:
    from ._secret import check_secrets

    return check_secrets(list(secrets) if isinstance(secrets, tuple) else secrets)


def _no_gpu(gpu: Any) -> None:
    if gpu is not None:
        raise NotImplementedError("gpu= on image build steps is not supported by Ferry yet; build "
                                  "steps run on the CPU.")


def _remote(path: Any) -> str:
    text = str(path)
    if not PurePosixPath(text).is_absolute():
        raise InvalidError(f"remote_path must be an absolute path in the container, got {text!r}.")
    return str(PurePosixPath(text))


def _stable(value: Any) -> Any:
    """A JSON-able form of step arguments that is the same in every process."""
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value) if type(value).__repr__ is not object.__repr__ else type(value).__name__

