"""`ferry container exec ID -- CMD`: run a command in a running function container, its
output here; `-i` sends this terminal's input, `-t` gives it a TTY (an interactive shell:
`ferry container exec -t ID -- bash`)."""

from __future__ import annotations

import typer

from .._client import Client
from .errors import guard
from .terminal import attach, exit_status, new_exec_id, terminal_size


@guard
def exec_command(container_id: str = typer.Argument(..., metavar="CONTAINER_ID",
                                                    help="Container id (or its start), as `ferry container list` shows."),
                 command: list[str] = typer.Argument(..., metavar="-- CMD...", help="The command and its arguments."),
                 interactive: bool = typer.Option(False, "--interactive", "-i", help="Send this terminal's input to it."),
                 tty: bool = typer.Option(False, "--tty", "-t", help="Run it in a TTY (an interactive shell); implies -i."),
                 ) -> None:
    """Run a command inside a running container; exits with its exit code."""
    client = Client.from_env_sync()
    exec_id = new_exec_id()

    async def start() -> None:
        await client.request("container.exec", container_id=container_id, exec_id=exec_id, argv=list(command),
                             pty=tty, size=terminal_size() if tty else None)

    async def send_stdin(data: bytes, eof: bool) -> None:
        await client.request("container.stdin", exec_id=exec_id, data=data, eof=eof)

    async def resize(size: list[int]) -> None:
        await client.request("container.resize", exec_id=exec_id, size=size)

    code = attach(client, exec_id, start, send_stdin, tty=tty, interactive=interactive, resize=resize)
    raise typer.Exit(exit_status(code))
