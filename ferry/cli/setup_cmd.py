"""`ferry setup`: check this machine and start the local control plane. Ferry needs no account."""

from __future__ import annotations

import typer

from .._local_server import (running_server_url, runtime_note, start_background_server, switch_runtime_if_idle,
                             usable_home)
from .errors import guard
from .output import console

out = console()


@guard
def setup() -> None:
    """Check what this machine supports and start the local server (no account needed)."""
    from ..server.runtimes import sandbox_unavailable_reason
    from ..server.runtimes.cgroups import cgroups_unavailable_reason

    home = usable_home()
    out.print(f"State directory: {home}")
    reason = sandbox_unavailable_reason()
    out.print("Sandbox runtime (namespaces + image root filesystems): "
              + ("available" if reason is None else f"unavailable — {reason}; the process runtime is used"))
    from ..server.runtimes.sandbox.network import pasta_unavailable_reason

    network = pasta_unavailable_reason()
    out.print("Sandbox container networks (own namespace, outbound through pasta): "
              + ("available" if network is None else f"unavailable — {network}"))
    limits = cgroups_unavailable_reason()
    out.print("cpu=/memory= limits (cgroups): " + ("available" if limits is None else f"unavailable — {limits}"))
    url = running_server_url(home)
    if url is None:
        url = start_background_server(home)
        out.print(f"Started the local Ferry server at {url}.")
    else:
        url = switch_runtime_if_idle(home, url)  # started before the sandbox could run, and idle
        out.print(f"The local Ferry server is running at {url}.")
    from .._client import Client

    info = Client.for_url(url).request_sync("server.status")
    out.print(f"Runtime in use: {info['runtime']}" + (f" (FERRY_RUNTIME={info['runtime_setting']})"
                                                       if info.get("runtime_setting") not in (None, "auto") else ""))
    note = runtime_note(info)
    if note:
        out.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    out.print("Ferry needs no account or token: try `ferry run examples/hello_world.py`.")


def register(cli: typer.Typer) -> None:
    cli.command()(setup)
