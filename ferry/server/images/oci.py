"""OCI images as root filesystems: `from_registry` bases.

References:
    oci-archive:PATH[:TAG]   a tarball of an OCI image layout (e.g. `skopeo copy ... oci-archive:`)
    oci:DIR[:TAG]            an OCI image layout directory
    anything else            a registry image (`python:3.11-slim`, `ghcr.io/org/img:tag`),
                             copied into a local layout with `skopeo` first

The image's layers are applied in order into one directory, honouring whiteouts (`.wh.NAME`
deletes NAME from earlier layers, `.wh..wh..opq` empties a directory). Paths are resolved
inside the root as if it were `/` (symlinks never lead out of it), so a hostile layer cannot
write outside the directory. Owners, modes and times are kept; extended attributes are not.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

from ...exception import ExecutionError, InvalidError

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass
class OciConfig:
    """The parts of an image's config that Ferry uses."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None


def split_ref(ref: str) -> tuple[str, str, str]:
    """(transport, location, tag) of `oci-archive:/p:tag`, `oci:/d`, or a registry ref."""
    for transport in ("oci-archive", "oci"):
        if ref.startswith(transport + ":"):
            location, _, tag = ref[len(transport) + 1:].partition(":")
            if not PurePosixPath(location).is_absolute():
                raise InvalidError(f"{ref}: local OCI references need an absolute path.")
            return transport, location, tag
    return "docker", ref, ""


def registry_ref(ref: str) -> str:
    """`python:3.11` -> `docker://docker.io/library/python:3.11` (skopeo needs full names)."""
    ref = ref.removeprefix("docker://")
    first = ref.split("/")[0]
    if "/" not in ref:
        ref = f"docker.io/library/{ref}"
    elif "." not in first and ":" not in first and first != "localhost":
        ref = f"docker.io/{ref}"
    return f"docker://{ref}"


def identity(ref: str) -> str:
    """What identifies the image's content for caching: a local layout's manifest digest, or
    the reference itself for registries (a moved tag needs force_build=True)."""
    transport, location, tag = split_ref(ref)
    if transport == "docker":
        return registry_ref(ref)
    if transport == "oci":
        index = json.loads((Path(location) / "index.json").read_text())
    else:
        if not Path(location).is_file():
            raise InvalidError(f"{ref}: {location} is not a file.")
        with tarfile.open(location) as archive:
            found = next((m for m in archive if m.name.lstrip("./") == "index.json" and m.isfile()), None)
            member = archive.extractfile(found) if found is not None else None
            if member is None:
                raise InvalidError(f"{location} is not an OCI archive (it has no index.json).")
            index = json.load(member)
    return _select(index, tag, ref)["digest"]


def _select(index: dict[str, Any], tag: str, ref: str) -> dict[str, Any]:
    manifests = index.get("manifests") or []
    if tag:
        manifests = [m for m in manifests
                     if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if not manifests:
        raise InvalidError(f"{ref}: no image{' tagged ' + repr(tag) if tag else ''} in the layout.")
    if len(manifests) > 1:
        raise InvalidError(f"{ref}: the layout holds {len(manifests)} images; name one with :TAG.")
    return manifests[0]


def fetch_layout(ref: str, work: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """A local OCI layout directory holding `ref`, and the tag to use in it."""
    transport, location, tag = split_ref(ref)
    if transport == "oci":
        return Path(location), tag
    layout = work / "layout"
    if transport == "oci-archive":
        log(f"reading {location}")
        with tarfile.open(location) as archive:
            archive.extractall(layout, filter="data")
        return layout, tag
    if shutil.which("skopeo") is None:
        raise ExecutionError("Pulling registry images needs skopeo: install it with "
                             "`apt-get install -y skopeo`, or use a local oci-archive:PATH.")
    source = registry_ref(ref)
    log(f"skopeo copy {source}")
    result = subprocess.run(
        ["skopeo", "copy", "--retry-times", "2", f"--override-arch={_ARCH}", "--override-os=linux",
         source, f"oci:{layout}:image"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    for line in (result.stdout + result.stderr).splitlines():
        log(line)
    if result.returncode != 0:
        raise ExecutionError(f"Could not pull {ref} with skopeo (exit code {result.returncode}): "
                             f"{result.stderr.strip()[-800:]}. Is the registry reachable from the server?")
    return layout, "image"


def unpack(ref: str, dest: Path, log: Callable[[str], None]) -> OciConfig:
    """Write the root filesystem of `ref` into the empty directory `dest`; return its config."""
    work = Path(tempfile.mkdtemp(prefix=".oci-", dir=dest.parent))
    try:
        layout, tag = fetch_layout(ref, work, log)
        blob = lambda digest: layout / "blobs" / digest.replace(":", "/", 1)  # noqa: E731
        descriptor = _select(json.loads((layout / "index.json").read_text()), tag, ref)
        manifest = json.loads(blob(descriptor["digest"]).read_text())
        if "manifests" in manifest:  # an image index: pick this machine's platform
            found = [m for m in manifest["manifests"]
                     if (m.get("platform") or {}).get("architecture") == _ARCH]
            if not found:
                raise InvalidError(f"{ref} has no image for linux/{_ARCH}.")
            manifest = json.loads(blob(found[0]["digest"]).read_text())
        config = json.loads(blob(manifest["config"]["digest"]).read_text()).get("config") or {}
        layers = manifest.get("layers") or []
        for number, layer in enumerate(layers, 1):
            log(f"applying layer {number}/{len(layers)} {layer['digest'][:19]}")
            apply_layer(blob(layer["digest"]), layer.get("mediaType", ""), dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    return OciConfig(env=env, workdir=config.get("WorkingDir") or None,
                     cmd=config.get("Cmd"), entrypoint=config.get("Entrypoint"))


def _open_layer(path: Path, media_type: str) -> IO[bytes]:
    if "zstd" in media_type:
        raise InvalidError(f"zstd-compressed layers ({media_type}) are not supported yet; "
                           "re-push the image with gzip layers.")
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def apply_layer(path: Path, media_type: str, root: Path) -> None:
    """Apply one layer tarball to `root`: whiteouts first (they act on earlier layers), then files."""
    with _open_layer(path, media_type) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parent, name = _split(member.name)
            if name == _OPAQUE:
                directory = resolve_inside(root, parent)
                if directory.is_dir() and not directory.is_symlink():
                    for child in directory.iterdir():
                        _remove(child)
            elif name.startswith(_WHITEOUT):
                _remove(resolve_inside(root, parent) / name[len(_WHITEOUT):])
    with _open_layer(path, media_type) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parent, name = _split(member.name)
            if not name or name.startswith(_WHITEOUT):
                continue
            _extract(tar, member, resolve_inside(root, parent), name, root)


def _split(name: str) -> tuple[str, str]:
    parts = [p for p in PurePosixPath("/", name).parts[1:] if p not in (".", "")]
    if not parts:
        return "", ""
    return "/".join(parts[:-1]), parts[-1]


def resolve_inside(root: Path, relative: str, _depth: int = 0) -> Path:
    """`relative` inside `root` with every symlink followed as if `root` were `/`."""
    if _depth > 40:
        raise InvalidError(f"Too many levels of symbolic links resolving {relative!r} in the image.")
    current: list[str] = []
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    for index, part in enumerate(parts):
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        if candidate.is_symlink():
            target = os.readlink(candidate)
            base = [] if target.startswith("/") else current
            rest = "/".join([*base, target, *parts[index + 1:]])
            return resolve_inside(root, rest, _depth + 1)
        current.append(part)
    return root.joinpath(*current)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or os.path.lexists(path):
        path.unlink()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, parent: Path, name: str, root: Path) -> None:
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / name
    if member.isdir():
        if os.path.lexists(target) and not (target.is_dir() and not target.is_symlink()):
            _remove(target)
        target.mkdir(exist_ok=True)
    else:
        if os.path.lexists(target):
            _remove(target)
        if member.issym():
            os.symlink(member.linkname, target)
            os.lchown(target, member.uid, member.gid)
            return
        if member.islnk():
            source_parent, source_name = _split(member.linkname)
            os.link(resolve_inside(root, source_parent) / source_name, target)
            return
        if member.isfifo():
            os.mkfifo(target)
        elif member.ischr() or member.isblk():
            return  # device nodes are provided by the sandbox's /dev
        else:
            source = tar.extractfile(member)
            assert source is not None
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    os.chown(target, member.uid, member.gid)
    os.chmod(target, member.mode & 0o7777)
    os.utime(target, (member.mtime, member.mtime))
