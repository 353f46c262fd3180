"""Moving volume file chunks to and from the control plane, for the SDK, the CLI and
containers alike: a blocking `request(method, **args)` function (the container's uplink, or
a client's `request_sync`) and a few threads, so several requests are in flight at once.

    upload:   volume.missing_chunks {hashes} -> the ones the server lacks
              volume.put_chunks {chunks: [bytes]} -> their digests (about 16 MiB a request)
    download: volume.get_chunks {hashes} -> [bytes]          (about 16 MiB a request)
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from ._volume_files import TRANSFER_BATCH_BYTES
from .exception import ExecutionError

Request = Callable[..., Any]
Progress = Callable[[int], None]
PARALLEL = 4
_MISSING_BATCH = 20_000


class Chunk(NamedTuple):
    """A chunk to upload: its digest, its size, and how to read its bytes."""

    digest: str
    size: int
    read: Callable[[], bytes]


def _batches(items: Iterable[Any], size_of: Callable[[Any], int]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and total + size > TRANSFER_BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


def missing_chunks(request: Request, digests: list[str]) -> set[str]:
    missing: set[str] = set()
    for start in range(0, len(digests), _MISSING_BATCH):
        missing.update(request("volume.missing_chunks", hashes=digests[start:start + _MISSING_BATCH]))
    return missing


def upload_chunks(request: Request, chunks: Iterable[Chunk], progress: Progress | None = None) -> int:
    """Upload the chunks the server lacks; returns the bytes sent. `progress` is told about
    every chunk's bytes, sent or already present."""
    unique: dict[str, Chunk] = {}
    for chunk in chunks:
        unique.setdefault(chunk.digest, chunk)
    missing = missing_chunks(request, list(unique))
    present = sum(c.size for d, c in unique.items() if d not in missing)
    if progress is not None and present:
        progress(present)
    todo = [unique[d] for d in unique if d in missing]

    def send(batch: list[Chunk]) -> int:
        datas = [c.read() for c in batch]
        digests = request("volume.put_chunks", chunks=datas)
        wrong = [c.digest for c, d in zip(batch, digests) if c.digest != d]
        if wrong:
            raise ExecutionError(f"A local file changed while it was being uploaded (chunk {wrong[0][:12]}); "
                                 "upload it again once it is no longer being written.")
        sent = sum(len(d) for d in datas)
        if progress is not None:
            progress(sent)
        return sent

    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="ferry-upload") as pool:
        return sum(f.result() for f in [pool.submit(send, b) for b in _batches(todo, lambda c: c.size)])


def fetch_chunks(request: Request, wanted: Iterable[tuple[str, int]],
                 progress: Progress | None = None) -> Iterator[tuple[str, bytes]]:
    """`(digest, data)` for each `(digest, size)` of `wanted`, in order, with a few requests
    in flight ahead of the consumer."""
    pending: collections.deque[tuple[list[tuple[str, int]], Future]] = collections.deque()
    batches = _batches(wanted, lambda item: item[1])
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="ferry-download") as pool:

        def refill() -> None:
            while len(pending) < PARALLEL:
                batch = next(batches, None)
                if batch is None:
                    return
                pending.append((batch, pool.submit(request, "volume.get_chunks", hashes=[d for d, _ in batch])))

        refill()
        while pending:
            batch, future = pending.popleft()
            datas = future.result()
            refill()
            for (digest, _), data in zip(batch, datas):
                if progress is not None:
                    progress(len(data))
                yield digest, data
