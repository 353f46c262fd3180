"""Uploading local files into a volume: `Volume.batch_upload()` and `ferry volume put`.

Files are hashed in chunks, only the chunks the server lacks are sent, and then one
`volume.commit` adds every file at once (nothing is visible before it, everything after).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, NamedTuple

from ._volume_files import (
    CHUNK_SIZE, DIR, FILE, LINK, Entry, bytes_chunks, check_file_size, clean_path, file_chunks, read_chunk,
)
from ._volume_transfer import Chunk, Progress, Request, upload_chunks
from .exception import InvalidError


class Source(NamedTuple):
    """One path to add: a local file, bytes, a directory, or a symbolic link."""

    remote: str
    kind: str
    local: Path | None = None
    data: bytes | None = None
    mode: int = 0o644
    mtime: float = 0.0
    target: str = ""


def file_source(local_file: str | os.PathLike[str] | BinaryIO, remote_path: str, mode: int | None = None) -> Source:
    remote = clean_path(str(remote_path), what="remote path", allow_root=False)
    if hasattr(local_file, "read"):
        data = local_file.read()  # type: ignore[union-attr]
        if isinstance(data, str):
            raise InvalidError(f"put_file({remote_path!r}) got a text stream; open the file in binary mode ('rb').")
        return Source(remote, FILE, data=bytes(data), mode=0o644 if mode is None else mode, mtime=time.time())
    path = Path(local_file).expanduser()
    if not path.is_file():
        raise InvalidError(f"put_file(): {path} is not a file.")
    info = path.stat()
    return Source(remote, FILE, local=path, mode=stat.S_IMODE(info.st_mode) if mode is None else mode,
                  mtime=info.st_mtime)


def directory_sources(local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True) -> list[Source]:
    """The directory itself, its files and links (and, with `recursive`, its subdirectories)."""
    root = Path(local_path).expanduser()
    if not root.is_dir():
        raise InvalidError(f"put_directory(): {root} is not a directory.")
    base = clean_path(str(remote_path), what="remote path")
    found: list[Source] = []

    def add(local: Path, remote: str) -> None:
        info = local.lstat()
        if stat.S_ISLNK(info.st_mode):
            found.append(Source(remote, LINK, mode=0o777, mtime=info.st_mtime, target=os.readlink(local)))
        elif stat.S_ISDIR(info.st_mode):
            found.append(Source(remote, DIR, mode=stat.S_IMODE(info.st_mode), mtime=info.st_mtime))
        elif stat.S_ISREG(info.st_mode):
            found.append(Source(remote, FILE, local=local, mode=stat.S_IMODE(info.st_mode), mtime=info.st_mtime))

    if base:
        add(root, base)
    for directory, dirnames, filenames in os.walk(root):  # links to directories are kept as links
        relative = Path(directory).relative_to(root).as_posix()
        prefix = "/".join(p for p in (base, "" if relative == "." else relative) if p)
        linked = [d for d in dirnames if os.path.islink(os.path.join(directory, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in linked) if recursive else []
        for name in sorted(filenames) + linked + dirnames:
            add(Path(directory) / name, f"{prefix}/{name}" if prefix else name)
    return found


def upload(request: Request, volume: dict[str, Any], sources: list[Source], *, overwrite: str,
           progress: Progress | None = None, on_hashed: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Send the chunks the server lacks, then commit every source in one change set.
    `on_hashed(total_bytes)` is called once the files are hashed (e.g. to size a progress bar)."""
    puts: dict[str, Entry] = {}
    chunks: list[Chunk] = []
    for source in sources:
        if source.kind == FILE and source.local is not None:
            digests, size = file_chunks(source.local)
        elif source.kind == FILE:
            data = source.data or b""
            digests, size = bytes_chunks(data), len(data)
        else:
            data_field = source.target if source.kind == LINK else None
            puts[source.remote] = Entry(source.kind, 0, source.mode & 0o7777, source.mtime, data_field)
            continue
        check_file_size(volume["version"], source.remote, size, volume["name"])
        for index, digest in enumerate(digests):
            chunks.append(Chunk(digest, min(CHUNK_SIZE, size - index * CHUNK_SIZE), _reader(source, index)))
        puts[source.remote] = Entry(FILE, size, source.mode & 0o7777, source.mtime, tuple(digests))
    if on_hashed is not None:
        on_hashed(sum(c.size for c in chunks))
    upload_chunks(request, chunks, progress)
    return request("volume.commit", id=volume["id"], puts=[e.wire(p) for p, e in puts.items()], deletes=[],
                   overwrite=overwrite)


def _reader(source: Source, index: int) -> Callable[[], bytes]:
    if source.local is not None:
        local = source.local
        return lambda: read_chunk(local, index)
    data = source.data or b""
    return lambda: data[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
