"""`ferry shell FILE::fn`: an interactive shell in a function's environment (the hosted
platform's `shell`): a Sandbox with the function's image, secrets, volumes, env and limits,
and its source code importable, in an ephemeral app that ends with this command, running a
shell in a TTY."""

from __future__ import annotations

import sys

import typer

from .._client import Client
from .._sync import run_sync
from .errors import guard
from .loader import find_target, import_file, split_ref
from .terminal import attach, exit_status, new_exec_id, terminal_size

SHELL = ["sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi"]


@guard
def shell(ref: str = typer.Argument(..., metavar="FILE::FUNCTION", help="The function (or Class) whose "
                                    "environment the shell gets."),
          cmd: str = typer.Option(None, "--cmd", "-c", help="Run this command (in `sh -c`) instead of a shell."),
          ) -> None:
    """Start an interactive shell in a function's image, with its volumes and secrets."""
    path, name = split_ref(ref)
    target = find_target(import_file(path), name)
    tag = target.function._tag if target.function is not None else target.cls._tag if target.cls else None
    if tag is None:
        raise typer.BadParameter("FILE::NAME must name a function or a class (not a local entrypoint).")
    specs, mount = target.app._definitions()
    definition = next(spec["definition"] for spec in specs if spec["tag"] == tag)
    blobs = {**(mount.contents if mount is not None else {}), **target.app._image_blobs}
    client = Client.from_env_sync()

    async def create() -> str:
        if blobs:
            missing = await client.request("blob.missing", hashes=list(blobs))
            for digest in missing:
                await client.request("blob.put", data=blobs[digest], hash=digest)
        # an ephemeral app of this connection: the sandbox ends when this command does
        app = await client.request("app.create", name=f"{target.app.name or 'ferry'}-shell", kind="ephemeral",
                                   functions=[])
        sandbox = {"image": definition.get("image"), "config": definition.get("config") or {},
                   "env": definition.get("env") or {}, "mount": definition.get("mount")}
        created = await client.request("sandbox.create", app_id=app["app_id"], definition=sandbox,
                                       timeout=24 * 3600)
        return created["sandbox_id"]

    sandbox_id = run_sync(create())
    exec_id = new_exec_id()
    tty = sys.stdin.isatty()

    async def start() -> None:
        await client.request("sandbox.exec", sandbox_id=sandbox_id, exec_id=exec_id,
                             argv=SHELL if cmd is None else ["sh", "-c", cmd], pty=tty,
                             size=terminal_size() if tty else None)

    async def send_stdin(data: bytes, eof: bool) -> None:
        await client.request("sandbox.stdin", sandbox_id=sandbox_id, exec_id=exec_id, data=data, eof=eof)

    async def resize(size: list[int]) -> None:
        await client.request("sandbox.resize", sandbox_id=sandbox_id, exec_id=exec_id, size=size)

    try:
        code = attach(client, exec_id, start, send_stdin, tty=tty, interactive=True, resize=resize)
    finally:
        run_sync(client.request("sandbox.terminate", sandbox_id=sandbox_id))
    raise typer.Exit(exit_status(code))


def register(cli: typer.Typer) -> None:
    cli.command("shell")(shell)
