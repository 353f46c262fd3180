"""`ferry volume create | list | delete | rename | ls | put | get | rm | cp`."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .._client import Client
from .._volume_files import CHUNK_SIZE, DIR, FILE, LINK, clean_path, manifest_from_wire
from .._volume_transfer import fetch_chunks
from .._volume_upload import directory_sources, file_source, upload
from ..exception import InvalidError, NotFoundError
from .errors import guard
from .output import console, json_option, print_json
from .output import size as _size

cli = typer.Typer(help="Manage volumes: persistent files shared by containers.", no_args_is_help=True)
out = console()
err = console(stderr=True)
PROGRESS_FROM_BYTES = 1024 * 1024  # smaller transfers finish before a bar would help


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _client() -> Client:
    return Client.from_env_sync()


def _volume(client: Client, name: str) -> dict[str, Any]:
    return client.request_sync("volume.get", name=name)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A transfer progress bar on stderr; `bar.start(total)` shows it if the transfer is large."""
    bar = _Bar(label)
    try:
        yield bar
    finally:
        bar.stop()


class _Bar:
    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total: int) -> None:
        if total >= PROGRESS_FROM_BYTES:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(), console=err)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total)

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- volumes ----------------------------------------------------------------------------------
@cli.command("create")
@guard
def create(name: str = typer.Argument(..., help="Name of the volume, e.g. model-cache."),
           version: int = typer.Option(1, "--version", help="1 (up to 500,000 files) or 2 (no total limit; "
                                       "32,768 entries per directory, files under 1 TiB).")) -> None:
    """Create a named, persistent volume."""
    _client().request_sync("volume.create", name=name, version=version)
    out.print(f"Created volume {name} (version {version}).", markup=False)
    out.print(f"Mount it with volumes={{\"/data\": ferry.Volume.from_name({name!r})}}.", markup=False)


@cli.command("list")
@guard
def list_volumes(as_json: bool = json_option()) -> None:
    """List volumes with their size and dates."""
    rows = _client().request_sync("volume.list")
    if as_json:  # sizes in bytes, times in seconds since the epoch
        print_json([{key: row.get(key) for key in ("name", "version", "files", "bytes", "created", "updated")}
                    for row in rows])
        return
    table = Table()
    for column in ("name", "version", "files", "size", "created", "last commit"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["version"]), f"{row['files']:,}", _size(row["bytes"]),
                      _when(row["created"]), _when(row["updated"]))
    out.print(table)


@cli.command("delete")
@guard
def delete(name: str = typer.Argument(..., help="Name of the volume."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Delete a volume and all of its files."""
    if not yes and not typer.confirm(f"Delete volume {name} and all of its files? This cannot be undone."):
        raise typer.Exit(1)
    result = _client().request_sync("volume.delete", name=name)
    out.print(f"Deleted volume {name}.", markup=False)
    if result["used_by"]:
        out.print(f"[yellow]Warning:[/yellow] running or deployed app(s) {', '.join(result['used_by'])} mount it; "
                  "their new containers will fail to start.")


@cli.command("rename")
@guard
def rename(old_name: str = typer.Argument(...), new_name: str = typer.Argument(...)) -> None:
    """Rename a volume (deployed apps keep using it; new code must use the new name)."""
    _client().request_sync("volume.rename", name=old_name, new_name=new_name)
    out.print(f"Renamed volume {old_name} to {new_name}.", markup=False)


# -- files ------------------------------------------------------------------------------------
@cli.command("ls")
@guard
def ls(name: str = typer.Argument(..., help="Name of the volume."),
       path: str = typer.Argument("/", help="Directory (or file) in the volume."),
       recursive: bool = typer.Option(False, "--recursive", "-r", help="List everything below PATH."),
       as_json: bool = json_option()) -> None:
    """List files and directories of a volume."""
    client = _client()
    rows = client.request_sync("volume.listdir", id=_volume(client, name)["id"], path=path, recursive=recursive)
    if as_json:  # type: file, directory or symlink; size in bytes; mtime in seconds since the epoch
        print_json([{key: row.get(key) for key in ("path", "type", "size", "mtime")} for row in rows])
        return
    if not sys.stdout.isatty():
        for row in rows:
            out.print(row["path"] + ("/" if row["type"] == "directory" else ""), markup=False)
        return
    table = Table()
    for column in ("path", "type", "size", "modified"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["path"], row["type"], _size(row["size"]) if row["type"] == "file" else "",
                      _when(row["mtime"]))
    out.print(table)


@cli.command("put")
@guard
def put(name: str = typer.Argument(..., help="Name of the volume."),
        local_path: Path = typer.Argument(..., help="Local file or directory."),
        remote_path: str = typer.Argument("/", help="Where in the volume (a trailing '/' keeps the file's name)."),
        force: bool = typer.Option(False, "--force", "-f", help="Replace existing files.")) -> None:
    """Upload a file or directory (its contents go to REMOTE_PATH) in one commit."""
    client = _client()
    info = _volume(client, name)
    if local_path.is_dir():
        sources = directory_sources(local_path, remote_path)
    elif local_path.is_file():
        remote = remote_path + local_path.name if remote_path.endswith("/") else remote_path
        sources = [file_source(local_path, remote)]
    else:
        raise InvalidError(f"{local_path} is neither a file nor a directory.")
    with _progress(f"Uploading to {name}") as bar:
        result = upload(client.request_sync, info, sources, overwrite="files" if force else "never",
                        progress=bar.advance, on_hashed=bar.start)
    files = sum(1 for s in sources if s.kind != DIR)
    out.print(f"Uploaded {files} file(s) to volume {name} (commit {result['seq']}).", markup=False)


@cli.command("get")
@guard
def get(name: str = typer.Argument(..., help="Name of the volume."),
        remote_path: str = typer.Argument(..., help="File or directory in the volume."),
        local_path: str = typer.Argument(".", help="Local destination; '-' writes a file to stdout."),
        force: bool = typer.Option(False, "--force", "-f", help="Replace existing local files.")) -> None:
    """Download a file, or a directory with everything in it."""
    client = _client()
    info = _volume(client, name)
    remote = clean_path(remote_path)
    entries = _manifest(client, info["id"])
    root = entries.get(remote)
    if remote and root is None:
        raise NotFoundError(f"No file or directory {remote!r} in volume {name!r}.")
    if local_path == "-":
        if root is None or root.kind != FILE:
            raise InvalidError("'-' (stdout) takes a single file; give a local directory for a directory.")
        for _, data in fetch_chunks(client.request_sync, _wanted(root)):
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    base = Path(local_path)
    if root is not None and root.kind != DIR:  # one file (or link): into an existing directory, or as that path
        selected = {remote: root}
        targets = {remote: base / remote.rpartition("/")[2] if base.is_dir() else base}
    else:  # a directory's contents: into LOCAL/<its name> if LOCAL is a directory (as `cp -r`), else LOCAL
        selected = {p: e for p, e in entries.items() if not remote or p.startswith(remote + "/")}
        dest = base / remote.rpartition("/")[2] if remote and base.is_dir() else base
        targets = {p: dest / (p[len(remote) + 1:] if remote else p) for p in selected}
        dest.mkdir(parents=True, exist_ok=True)
        base = dest
    clashes = [str(t) for p, t in targets.items() if selected[p].kind != DIR and os.path.lexists(t)]
    if clashes and not force:
        raise InvalidError(f"{clashes[0]} already exists locally" + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1
                           else "") + "; pass --force to replace.")
    total = sum(e.size for e in selected.values() if e.kind == FILE)
    with _progress(f"Downloading from {name}") as bar:
        bar.start(total)
        _write_tree(client, selected, targets, bar)
    files = sum(1 for e in selected.values() if e.kind != DIR)
    out.print(f"Downloaded {files} file(s) to {base}.", markup=False)


def _manifest(client: Client, volume_id: str) -> dict[str, Any]:
    page = client.request_sync("volume.manifest", id=volume_id)
    digest, items = page["hash"], list(page["entries"])
    while page["next"] is not None:
        page = client.request_sync("volume.manifest", id=volume_id, hash=digest, offset=page["next"])
        items.extend(page["entries"])
    return manifest_from_wire(items)


def _wanted(entry: Any) -> list[tuple[str, int]]:
    return [(d, min(CHUNK_SIZE, entry.size - i * CHUNK_SIZE)) for i, d in enumerate(entry.data)]


def _write_tree(client: Client, selected: dict[str, Any], targets: dict[str, Path], bar: _Bar) -> None:
    for path in sorted(p for p, e in selected.items() if e.kind == DIR):
        targets[path].mkdir(parents=True, exist_ok=True)
    files = sorted(p for p, e in selected.items() if e.kind == FILE)
    wanted = [item for p in files for item in _wanted(selected[p])]
    stream = fetch_chunks(client.request_sync, wanted, progress=bar.advance)
    for path in files:
        entry, target = selected[path], targets[path]
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            for _ in entry.data:
                handle.write(next(stream)[1])
        os.chmod(tmp, entry.mode)
        os.utime(tmp, (entry.mtime, entry.mtime))
        os.replace(tmp, target)
    for path, entry in selected.items():
        if entry.kind == LINK:
            target = targets[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(target):
                target.unlink()
            os.symlink(entry.data, target)


@cli.command("rm")
@guard
def rm(name: str = typer.Argument(..., help="Name of the volume."),
       path: str = typer.Argument(..., help="File or directory in the volume."),
       recursive: bool = typer.Option(False, "--recursive", "-r", help="Remove a directory and what it holds.")) -> None:
    """Remove a file or directory from a volume."""
    client = _client()
    client.request_sync("volume.remove", id=_volume(client, name)["id"], path=path, recursive=recursive)
    out.print(f"Removed {path} from volume {name}.", markup=False)


@cli.command("cp")
@guard
def cp(name: str = typer.Argument(..., help="Name of the volume."),
       paths: list[str] = typer.Argument(..., metavar="SOURCE... DESTINATION", help="Paths in the volume."),
       recursive: bool = typer.Option(False, "--recursive", "-r", help="Copy directories.")) -> None:
    """Copy files within a volume (no data is transferred)."""
    if len(paths) < 2:
        raise InvalidError("Give at least one source and a destination: ferry volume cp NAME SOURCE... DESTINATION.")
    client = _client()
    client.request_sync("volume.copy", id=_volume(client, name)["id"], sources=paths[:-1], destination=paths[-1],
                        recursive=recursive)
    out.print(f"Copied {', '.join(paths[:-1])} to {paths[-1]} in volume {name}.", markup=False)
