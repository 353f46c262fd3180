"""Building images for the sandbox runtime: a base root filesystem, the Ferry runtime layer,
then one overlay layer per step (see `sandbox_steps` for what each step runs).

    debian_slim(v)     base: Debian's root filesystem for Python v (rootfs.PYTHON_SUITES), built
                       once per machine with mmdebstrap under FERRY_BASE_ROOTFS_DIR
    from_registry(r)   base: the OCI image r, unpacked into a layer directory
    standalone_python  only for a version no Debian suite ships: that CPython from a standalone
                       build (uv python install, FERRY_PYTHON_INSTALL_MIRROR), as python3
    ferry_runtime      cloudpickle, msgpack and tzdata (the server's versions) in the image's Python,
                       EXTERNALLY-MANAGED removed so pip installs into the system Python;
                       Ferry itself is bind-mounted into containers, never copied
    pip_install, uv_pip_install, apt_install, run_commands, run_function, copy, workdir
                       commands in the sandbox; their writes are the layer
    env, dockerfile_cmd metadata only (no layer directory)
"""

from __future__ import annotations

import fcntl
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ferry

from ... import _config
from ..._image_wire import step_key
from ...exception import InvalidError
from ..blobs import BlobStore
from ..runtimes.sandbox.bwrap import BindMount
from ..runtimes.sandbox.ids import ensure_shifted, is_shifted, shift_tree
from ..runtimes.sandbox.rootfs import PYTHON_SUITES, build_base_rootfs, python_source
from ..volume_mounts import prepare_build
from . import oci
from .commands import RUNTIME_PACKAGES, BuildFailed, StepFailure, pip_command, runtime_requirements, uv_command
from .files import materialise_files
from .layers import LayerStore, tree_size
from .model import BuiltImage, LayerPlan
from .sandbox_steps import (
    BUILD_DIR, FERRY_PACKAGE_DIR, RUN_FUNCTION, apt_command, build_env, run_sandboxed, runtime_command, scaffold,
    standalone_python_command,
)

Log = Callable[[str], None]
class SandboxBackend:
    """Builds one layer at a time; blocking (the ImageService calls it from a thread)."""

    target = "sandbox"

    def __init__(self, store: LayerStore, blobs: BlobStore, *, base_dir: Path, ca_bundle: str,
                 step_timeout: float, step_credentials: Any = None) -> None:
        # mints and ends the credential of a run_function step that mounts volumes (it talks to
        # the control plane like a container): server/server.py's StepCredentials
        self.step_credentials = step_credentials
        self.store = store
        self.blobs = blobs
        self.base_dir = base_dir
        self.ca_bundle = ca_bundle if ca_bundle and Path(ca_bundle).is_file() else ""
        self.step_timeout = step_timeout
        self.scaffold = scaffold(store.root / "scaffold")

    # -- bases ----------------------------------------------------------------------------
    def python_for(self, requested: str | None, client_python: str) -> str:
        if requested is None:
            return client_python if client_python in PYTHON_SUITES else max(PYTHON_SUITES)
        python_source(requested)  # InvalidError listing the available versions
        return requested

    def base_identity(self, step: dict[str, Any], client_python: str, log: Log) -> dict[str, Any]:
        """The resolved base step (its args decide the base layer's key); builds a Debian
        base root filesystem on first use."""
        if step["kind"] == "debian_slim":
            version = self.python_for(step["args"].get("python_version"), client_python)
            suite, standalone = python_source(version)
            rootfs = self._debian_rootfs(suite, log)
            status = (rootfs / "var/lib/dpkg/status").stat()
            identity = {"suite": suite, "python_version": version,
                        "build": f"{status.st_mtime_ns}-{status.st_size}", "path": str(rootfs)}
            if standalone is not None:  # its own base key: the Debian Python is not the image's
                identity["standalone"] = True
            return identity
        return {"ref": step["args"]["ref"], "digest": oci.identity(step["args"]["ref"])}

    def base_missing(self, step: dict[str, Any], client_python: str) -> bool:
        """Whether `base_identity` will build a Debian root filesystem (minutes, once)."""
        if step["kind"] != "debian_slim":
            return False
        try:
            version = self.python_for(step["args"].get("python_version"), client_python)
            suite, _ = python_source(version)
        except InvalidError:
            return False
        return not (self.base_dir / f"rootfs-{suite}" / "usr/bin/python3").exists()

    def standalone_python(self, step: dict[str, Any], client_python: str) -> str | None:
        """The Python version a `debian_slim` base installs from a standalone build (one no
        Debian suite ships), else None."""
        if step["kind"] != "debian_slim":
            return None
        try:
            return python_source(self.python_for(step["args"].get("python_version"), client_python))[1]
        except InvalidError:
            return None  # base_identity raises it where the build reports failures

    def _debian_rootfs(self, suite: str, log: Log) -> Path:
        dest = self.base_dir / f"rootfs-{suite}"
        if (dest / "usr/bin/python3").exists() and is_shifted(dest):
            return dest
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / f".rootfs-{suite}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per suite, across servers
            if not dest.exists():
                log(f"building the Debian {suite} base root filesystem (once per machine) in {dest}")
                build_base_rootfs(suite, dest, log=log)
            elif ensure_shifted(dest):  # built before sandboxes had user namespaces
                log(f"{dest} is now owned by the sandbox ids (root inside sandboxes)")
        return dest

    def build_base(self, plan: LayerPlan, log: Log) -> dict[str, Any]:
        args = plan.args
        if "path" in args:  # Debian: the root filesystem is shared, not copied
            return self.store.commit(plan.key, None, {
                "parent": "", "kind": "debian_slim", "label": plan.label, "path": args["path"],
                "env": {}, "workdir": None, "python_version": args["python_version"],
                "size": tree_size(Path(args["path"])),
            })
        staging = self.store.new_staging(plan.key)
        try:
            root = staging / "root"
            root.mkdir()
            config = oci.unpack(args["ref"], root, log)
            shift_tree(root)  # its owners become the sandbox ids (runtimes/sandbox/ids.py)
            meta = {"parent": "", "kind": "from_registry", "label": plan.label, "env": config.env,
                    "workdir": config.workdir, "cmd": config.cmd, "entrypoint": config.entrypoint}
            return self.store.commit(plan.key, root, meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- layers ---------------------------------------------------------------------------
    def build_layer(self, plan: LayerPlan, parent: dict[str, Any], chain: list[dict[str, Any]],
                    secret_env: dict[str, str], log: Log) -> dict[str, Any]:
        """Run one step on top of `chain` (base first) and commit its layer."""
        kind, args = plan.kind, plan.args
        meta: dict[str, Any] = {
            key: parent.get(key) for key in ("env", "workdir", "python", "python_version", "cmd", "entrypoint")
        }
        meta.update(parent=plan.parent, kind=kind, label=plan.label)
        meta["env"] = dict(parent.get("env") or {})
        if kind == "env":
            meta["env"].update(args["vars"])
            return self.store.commit(plan.key, None, meta)
        if kind == "dockerfile_cmd":
            meta["cmd" if args["instruction"] == "CMD" else "entrypoint"] = args["value"]
            return self.store.commit(plan.key, None, meta)
        staging = self.store.new_staging(plan.key)
        cleanups: list[Callable[[], None]] = []
        try:
            upper, work, files = staging / "upper", staging / "work", staging / "files"
            for directory in (upper, work, files):
                directory.mkdir()
            commands, binds = self._commands(plan, parent, files, meta)
            layers = [self.layer_path(m) for m in chain if m.get("has_dir") or m.get("path")]
            for layer in layers:  # layers built before sandboxes had user namespaces
                ensure_shifted(layer)
            env = build_env(meta["env"], self.ca_bundle, secret_env)
            if kind == "standalone_python" and _config.get("python_install_mirror"):
                env["UV_PYTHON_INSTALL_MIRROR"] = str(_config.get("python_install_mirror"))
            if kind == "run_function":
                env["PYTHONPATH"] = ":".join(filter(None, [FERRY_PACKAGE_DIR, env.get("PYTHONPATH")]))
                if args.get("volumes"):  # mounted as in containers, committed when it returns
                    volumes = prepare_build(args["volumes"], staging / "volumes")
                    binds += [BindMount(*bind) for bind in volumes.binds]
                    for host, _, read_only in volumes.binds:  # the views and the chunk cache
                        if not read_only:
                            ensure_shifted(host)
                    shift_tree(volumes.scaffold)
                    env.update(volumes.env)
                    layers.append(volumes.scaffold)
                    if self.step_credentials is not None:
                        step_id = self.step_credentials.mint(env)
                        cleanups.append(lambda: self.step_credentials.forget(step_id))
            if self.ca_bundle:
                binds.append(BindMount(Path(self.ca_bundle), f"{BUILD_DIR}/ca-certificates.crt"))
            timeout = float(args.get("timeout") or self.step_timeout)
            output: list[str] = []
            for command in commands:
                shown = command.splitlines()[0] + (" …" if "\n" in command else "")
                log(f"$ {shown}" if len(shown) < 400 else f"$ {shown[:400]}…")
                try:
                    output += run_sandboxed(layers=[*layers, self.scaffold], upper=upper, work=work,
                                            command=command, env=env, cwd=parent.get("workdir") or "/",
                                            binds=binds, log=log, timeout=timeout)
                except StepFailure as failure:
                    if kind == "standalone_python":
                        raise standalone_python_failure(args["version"], failure) from None
                    raise
            if kind == "ferry_runtime":
                found = [line.partition("=")[2].split() for line in output if line.startswith("FERRY_PYTHON=")]
                if not found or len(found[-1]) != 2:
                    raise StepFailure(commands[-1], 0, output[-20:], reason="could not find the image's Python")
                meta["python"], meta["python_version"] = found[-1]
            return self.store.commit(plan.key, upper, meta)
        finally:
            for cleanup in cleanups:
                cleanup()
            shutil.rmtree(staging, ignore_errors=True)

    def layer_path(self, meta: dict[str, Any]) -> Path:
        return Path(meta["path"]) if meta.get("path") else self.store.layer_dir(meta["key"])

    def _commands(self, plan: LayerPlan, parent: dict[str, Any], files: Path,
                  meta: dict[str, Any]) -> tuple[list[str], list[BindMount]]:
        kind, args = plan.kind, plan.args
        python = parent.get("python") or "python3"
        binds: list[BindMount] = []

        def bind_blob(digest: str, name: str) -> str:
            path = files / name
            path.write_bytes(self.blobs.get(digest))
            binds.append(BindMount(path, f"{BUILD_DIR}/{name}"))
            return f"{BUILD_DIR}/{name}"

        if kind == "ferry_runtime":
            return [runtime_command(args["requirements"])], binds
        if kind == "standalone_python":
            return [standalone_python_command(args["version"])], binds
        if kind in ("pip_install", "uv_pip_install"):
            requirements = [bind_blob(d, f"requirements-{n}.txt") for n, d in enumerate(args.get("requirements") or [])]
            make = pip_command if kind == "pip_install" else uv_command
            return [make(python, args, requirements)], binds
        if kind == "apt_install":
            return [apt_command(args["packages"])], binds
        if kind == "run_commands":
            return list(args["commands"]), binds
        if kind == "workdir":
            meta["workdir"] = args["path"]
            return [f"mkdir -p {_quote(args['path'])}"], binds
        if kind == "run_function":
            pickle_path = bind_blob(args["function"], "function.pkl")
            binds.append(BindMount(Path(ferry.__file__).parent, f"{FERRY_PACKAGE_DIR}/ferry"))
            code = RUN_FUNCTION.format(ferry=FERRY_PACKAGE_DIR, path=pickle_path)
            return [f"{_quote(python)} -c {_quote(code)}"], binds
        if kind == "copy":
            source = files / "copy"
            materialise_files(args["files"], self.blobs, source)
            binds.append(BindMount(source, f"{BUILD_DIR}/copy"))
            remote = args["remote_path"]
            if args["kind"] == "file":
                name = next(iter(args["files"]))
                return [f"mkdir -p {_quote(str(Path(remote).parent))} && "
                        f"cp -a {_quote(f'{BUILD_DIR}/copy/{name}')} {_quote(remote)}"], binds
            return [f"mkdir -p {_quote(remote)} && cp -a {BUILD_DIR}/copy/. {_quote(remote)}/"], binds
        raise InvalidError(f"Unknown image step {kind!r}.")


def _quote(text: str) -> str:
    return shlex.quote(text)


def check_packages(packages: list[str]) -> None:
    from ..runtimes.sandbox.rootfs import _PACKAGE_RE

    bad = [p for p in packages if not _PACKAGE_RE.match(p)]
    if bad:
        raise InvalidError(f"apt_install: invalid Debian package name(s) {', '.join(map(repr, bad))}.")



def standalone_python_failure(version: str, failure: StepFailure) -> StepFailure:
    """The failure of installing a standalone Python, saying what was tried and what else works."""
    mirror = _config.get("python_install_mirror") or "GitHub's python-build-standalone releases (uv's default)"
    debian = ", ".join(PYTHON_SUITES)
    return StepFailure(
        f"uv python install {version}", failure.code, failure.tail,
        reason=f"Python {version} is not shipped by Debian, so Ferry tried to install a standalone "
               f"build of it from {mirror}, and that failed (its output is above). Versions that need "
               f"no download: {debian} (`debian_slim(python_version=...)`). Or set "
               f"FERRY_PYTHON_INSTALL_MIRROR on the server to a reachable mirror of those releases",
    )


_LOCKS_GUARD = threading.Lock()
_LAYER_LOCKS: dict[str, threading.Lock] = {}


def _layer_lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LAYER_LOCKS.setdefault(key, threading.Lock())


def build_sandbox_image(backend: SandboxBackend, wire: dict[str, Any], force: bool, progress: Any,
                        secret_env: Callable[[list[dict[str, Any]], str], dict[str, str]]) -> BuiltImage:
    """Find or build every layer of `wire`, base first; returns the built image."""
    store = backend.store
    steps = wire["steps"]
    logs: dict[int, list[str]] = {}

    def logger(index: int) -> Log:
        lines = logs.setdefault(index, [])

        def log(line: str) -> None:
            lines.append(line)
            progress.log(index, line)
        return log

    labels = [steps[0]["label"], "ferry runtime (" + ", ".join(RUNTIME_PACKAGES) + ")",
              *(s["label"] for s in steps[1:])]
    standalone = backend.standalone_python(steps[0], wire["client_python"])
    if standalone is not None:  # a Python no Debian suite ships, installed under the runtime
        labels.insert(1, f"standalone Python {standalone}")
    progress.plan(labels)
    base_key = step_key("", steps[0]["kind"], steps[0]["args"])
    base_started = time.monotonic()
    try:
        if backend.base_missing(steps[0], wire["client_python"]):
            progress.step(0, "building")  # mmdebstrap: its output streams as step 1's log
        identity = backend.base_identity(steps[0], wire["client_python"], logger(0))
    except BaseException as exc:
        progress.step(0, "failed")
        plan = LayerPlan(0, base_key, "", steps[0]["kind"], steps[0]["args"], labels[0])
        raise BuildFailed(plan, len(labels), exc, base_key) from exc
    plans = [LayerPlan(0, step_key("", steps[0]["kind"], identity), "", steps[0]["kind"], identity,
                       labels[0], steps[0]["force"])]
    if standalone is not None:
        standalone_args = {"version": standalone}
        plans.append(LayerPlan(1, step_key(plans[0].key, "standalone_python", standalone_args), plans[0].key,
                               "standalone_python", standalone_args, labels[1]))
    runtime_args = {"requirements": runtime_requirements()}
    plans.append(LayerPlan(len(plans), step_key(plans[-1].key, "ferry_runtime", runtime_args), plans[-1].key,
                           "ferry_runtime", runtime_args, labels[len(plans)]))
    for index, step in enumerate(steps[1:], len(plans)):
        parent = plans[-1].key
        plans.append(LayerPlan(index, step_key(parent, step["kind"], step["args"]), parent, step["kind"],
                               step["args"], step["label"], step["force"]))
    image_key = plans[-1].key
    progress.plan(labels, image_key)
    record = {"label": " -> ".join(s["label"] for s in steps), "layers": [p.key for p in plans],
              "steps": len(labels), "last_step": labels[-1],
              "target": backend.target, "recipe": wire.get("recipe", "")}
    chain: list[dict[str, Any]] = []
    forced = False
    for plan in plans:
        forced = forced or force or plan.force
        with _layer_lock(plan.key):  # two images sharing a layer build it once
            meta = None if forced else store.complete(plan.key)
            if meta is not None:
                progress.step(plan.index, "cached")
                chain.append(meta)
                continue
            progress.step(plan.index, "building")
            started = base_started if plan.index == 0 else time.monotonic()
            log = logger(plan.index)
            try:
                if plan.index == 0:
                    meta = backend.build_base(plan, log)
                else:
                    env = secret_env(plan.args.get("secrets") or [], plan.label)
                    meta = backend.build_layer(plan, chain[-1], chain, env, log)
            except BaseException as exc:
                store.write_log(plan.key, logs.get(plan.index, []))
                progress.step(plan.index, "failed")
                store.put_record(image_key, {**record, "state": "failed", "failed_step": plan.index,
                                             "error": str(exc)})
                raise BuildFailed(plan, len(plans), exc, image_key) from exc
            store.write_log(plan.key, logs.get(plan.index, []))
            progress.step(plan.index, "built", time.monotonic() - started)
            chain.append(meta)
    top = chain[-1]
    store.put_record(image_key, {**record, "state": "built", "python_version": top.get("python_version"),
                                 "size": sum(int(m.get("size") or 0) for m in chain)})
    return BuiltImage(
        key=image_key, python=top.get("python") or "python3",
        layers=tuple(backend.layer_path(m) for m in chain if m.get("has_dir") or m.get("path")),
        env=dict(top.get("env") or {}), workdir=top.get("workdir"), recipe=wire.get("recipe", ""),
        python_version=top.get("python_version") or "",
    )
