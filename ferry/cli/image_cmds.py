"""`ferry image build | list | rm | logs`: prebuild images and manage the server's image cache."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .._client import Client
from .._image import Image
from .._sync import run_sync
from ..exception import InvalidError
from . import loader
from .errors import guard
from .output import console, json_option, print_json
from .output import size as _size

cli = typer.Typer(help="Build images ahead of time and manage the image cache.", no_args_is_help=True)
out = console()


def _steps(record: dict[str, Any], *, shorten: bool = True) -> str:
    last = record.get("last_step") or ""
    last = last if len(last) <= 40 or not shorten else last[:39] + "…"
    count = record.get("steps") or 1
    return f"{count}, last: {last}" if count > 1 else last


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M") if ts else "-"


# `ferry image list --json`: each image's keys (`key` is the full cache key)
IMAGE_KEYS = ("key", "label", "state", "python_version", "size", "created", "last_used", "steps", "last_step")


def find_image(ref: str) -> Image:
    """The Image object that `FILE::NAME` names (NAME may be omitted if the file has one)."""
    path, name = loader.split_ref(ref)
    module = loader.import_file(path)
    if name is not None:
        value = getattr(module, name, None)
        if not isinstance(value, Image):
            kind = type(value).__name__ if value is not None else "nothing"
            raise InvalidError(f"{name!r} in {path} is {kind}, not a ferry.Image.")
        return value
    images = {n: v for n, v in vars(module).items() if isinstance(v, Image)}
    if len(images) != 1:
        raise InvalidError(f"Name the image to build: {path}::NAME, one of: {', '.join(images) or 'none'}.")
    return next(iter(images.values()))


async def _build(image: Image, force: bool) -> dict[str, Any]:
    from .._image_progress import BuildDisplay

    client = await Client.from_env()
    wire = image._wire()
    if wire.blobs:
        missing = await client.request("blob.missing", hashes=list(wire.blobs))
        for digest in missing:
            await client.request("blob.put", data=wire.blobs[digest], hash=digest)
    display = BuildDisplay(verbose=True)
    progress_id = f"image-build-{time.monotonic_ns()}"
    client.image_handlers[progress_id] = display
    try:
        return await client.request("image.build", image=wire.definition, force=force, progress_id=progress_id)
    finally:
        client.image_handlers.pop(progress_id, None)
        display.close()


@cli.command("build")
@guard
def build(
    ref: str = typer.Argument(..., metavar="FILE::NAME", help="File defining the image, and its variable name."),
    force: bool = typer.Option(False, "--force", help="Rebuild every step, ignoring the cache."),
) -> None:
    """Build an image ahead of time (later runs and deploys find it cached)."""
    started = time.monotonic()
    image = find_image(ref)
    result = run_sync(_build(image, force))
    out.print(f"Image [bold]{result['key'][:12]}[/bold] ready in {time.monotonic() - started:.1f} s "
              f"({_size(result.get('size'))}, Python {result.get('python_version') or '?'}).")


@cli.command("list")
@guard
def list_images(as_json: bool = json_option()) -> None:
    """List the images built on the server, with the disk space they use."""
    info = Client.from_env_sync().request_sync("image.list")
    if as_json:  # sizes in bytes, times in seconds since the epoch
        print_json({"runtime": info["runtime"],
                    "images": [{key: record.get(key) for key in IMAGE_KEYS} for record in info["images"]],
                    "layers_bytes": info["layers_bytes"], "bases": info.get("bases") or {}})
        return
    short = out.is_terminal  # full keys and step labels for scripts
    table = Table(title=f"Images ({info['runtime']} runtime)", title_justify="left")
    for column in ("key", "state", "python", "size", "last used"):
        table.add_column(column, no_wrap=True)
    table.add_column("steps")
    for record in info["images"]:
        table.add_row(record["key"][:12] if short else record["key"], record.get("state", "?"),
                      record.get("python_version") or "-",
                      _size(record.get("size")) if record.get("size") is not None else "-",
                      _when(record.get("last_used")), _steps(record, shorten=short))
    out.print(table)
    bases = info.get("bases") or {}
    out.print(f"Disk use: layers {_size(info['layers_bytes'])}"
              + "".join(f"; base {path} {_size(size)}" for path, size in bases.items()))


@cli.command("rm")
@guard
def remove(
    keys: list[str] = typer.Argument(None, metavar="KEY...", help="Image keys (or unique prefixes) from `ferry image list`."),
    all_images: bool = typer.Option(False, "--all", help="Remove every image not used by a running or deployed app."),
) -> None:
    """Remove images from the cache (layers other images share are kept)."""
    if not keys and not all_images:
        raise InvalidError("Name the images to remove (see `ferry image list`), or pass --all.")
    result = Client.from_env_sync().request_sync("image.rm", keys=list(keys or []), all=all_images)
    for key in result["removed"]:
        out.print(f"Removed image {key[:12]}")
    for key in result["kept_in_use"]:
        out.print(f"Kept image {key[:12]} (used by a running or deployed app)")
    out.print(f"Freed {_size(result['freed_bytes'])}.")


@cli.command("logs")
@guard
def logs(key: str = typer.Argument(..., help="Image key (or a unique prefix) from `ferry image list`."),
         as_json: bool = json_option()) -> None:
    """Show the build output of every step of an image."""
    result = Client.from_env_sync().request_sync("image.logs", key=key)
    if as_json:  # a step's log is null when the step was not built
        print_json({"key": result["key"], "label": result.get("label"), "state": result.get("state"),
                    "error": result.get("error"),
                    "steps": [{"key": layer["key"], "label": layer["label"], "log": layer["log"]}
                              for layer in result["layers"]]})
        return
    out.print(f"[bold]Image {result['key'][:12]}[/bold] ({result.get('state')}): {escape(result.get('label') or '')}",
              markup=True)
    for number, layer in enumerate(result["layers"], 1):
        out.print(f"[bold]── step {number}: {escape(layer['label'] or layer['key'][:12])}[/bold]")
        if layer["log"] is None:
            out.print("  (not built)")
        elif layer["log"]:
            out.print(layer["log"].rstrip("\n"), markup=False)
    if result.get("error"):
        out.print(result["error"], markup=False, style="red")
