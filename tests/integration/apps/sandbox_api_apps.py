"""Functions that create and use sandboxes from inside their containers
(tests/integration/test_sandboxes.py). They import only ferry, as container code does."""

from __future__ import annotations

import ferry
from ferry.exception import PermissionDeniedError

app = ferry.App("test-sandbox-api")


@app.function()
def run_in_sandbox(text: str) -> dict:
    """Create a sandbox of this function's own app (no app= inside a container), run a
    command in it, and list the app's sandboxes."""
    sb = ferry.Sandbox.create(tags={"from": "function"})
    p = sb.exec("echo", text)
    out, code = p.stdout.read(), p.wait()
    listed = [s.object_id for s in ferry.Sandbox.list(tags={"from": "function"})]
    sb.terminate()
    return {"out": out, "code": code, "id": sb.object_id, "listed": sb.object_id in listed}


@app.function()
def refusals(other_sandbox_id: str, other_app_id: str) -> dict:
    """What a container may not do: another app's sandbox, another app's list, creating an
    app, the supervisor's own requests, and administrative requests."""
    from ferry._client import Client

    client = Client.from_env_sync()
    attempts = {
        "exec": lambda: ferry.Sandbox.from_id(other_sandbox_id),
        "terminate": lambda: client.request_sync("sandbox.terminate", sandbox_id=other_sandbox_id),
        "list": lambda: client.request_sync("sandbox.list", app_id=other_app_id),
        "create": lambda: client.request_sync("sandbox.create", app_id=other_app_id, definition={}),
        "lookup_create": lambda: ferry.App.lookup("made-in-a-container", create_if_missing=True),
        "attach": lambda: client.request_sync("sandbox.attach"),
        "io": lambda: client.request_sync("sandbox.io", exec_id="ex-x", fd=1, data=b"x"),
        "app_list": lambda: client.request_sync("app.list"),
    }
    refused = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            refused[what] = "allowed"
        except PermissionDeniedError as error:
            refused[what] = str(error)
    return refused
