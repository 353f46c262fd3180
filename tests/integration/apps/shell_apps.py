"""Functions for `ferry container exec` and `ferry shell` (tests/integration/test_container_exec.py)."""

from __future__ import annotations

import os

import ferry

app = ferry.App("test-container-exec")


@app.function(secrets=[ferry.Secret.from_dict({"SHELL_TOKEN": "from-the-secret"})],
              volumes={"/mnt/shell": ferry.Volume.from_name("test-shell-volume", create_if_missing=True)},
              scaledown_window=300)
def where() -> str:
    """The id of the container this runs in (it stays up, idle, for the tests to exec into)."""
    with open("/mnt/shell/marker.txt", "w") as handle:
        handle.write("in the volume\n")
    ferry.Volume.from_name("test-shell-volume").commit()
    return os.environ["FERRY_CONTAINER_ID"]


@app.function()
def try_container_exec(container_id: str) -> str:
    """`container.exec` is for administrators: a container's credential is refused."""
    from ferry._client import Client
    from ferry.exception import PermissionDeniedError

    try:
        Client.from_env_sync().request_sync("container.exec", container_id=container_id, exec_id="ex-x", argv=["true"])
    except PermissionDeniedError as error:
        return str(error)
    return "allowed"
