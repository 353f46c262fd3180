"""`python -m ferry._container.spare`: a spare sandbox, started ahead of the container it will
become (server/runtimes/sandbox/spares.py).

It imports what every container imports, then waits on the descriptor FERRY_SPARE_FD for its
claim: one JSON document `{env, cwd, module}` followed by the end of the pipe. It then takes
that environment (the container's id, credential and secrets arrive only now) and runs the
container's entrypoint. An empty claim (the server discarded the spare) ends it quietly.
"""

from __future__ import annotations

import json
import os

from .become import preload, run_as


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def main() -> None:
    fd = int(os.environ["FERRY_SPARE_FD"])
    preload()
    from .runner import _wait_for_network

    _wait_for_network()  # pasta connects while Python starts (FERRY_NETWORK_READY_FD)
    claim = _read_all(fd)
    os.close(fd)
    if not claim:
        os._exit(0)
    request = json.loads(claim)
    run_as(request["env"], request.get("cwd"), request.get("module"))


if __name__ == "__main__":
    main()
