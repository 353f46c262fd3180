"""A guide-style script for `ferry run` tests of the API breadth: optional parameters
(`T | None`, `Optional[T]`) of functions and entrypoints, and `--detach`."""

from __future__ import annotations

import time
from typing import Optional

import modal

app = modal.App("api-breadth-cli")


@app.function()
def describe(limit: int | None = None, name: Optional[str] = None) -> str:
    return f"limit={limit!r} name={name!r}"


@app.function()
def slow_put(dict_name: str, key: str) -> None:
    time.sleep(3)  # finishes after the local program has exited
    modal.Dict.from_name(dict_name, create_if_missing=True)[key] = "done"


@app.local_entrypoint()
def main(limit: int | None = None, tag: Optional[str] = None, dict_name: str | None = None):
    print("entrypoint got", describe.remote(limit, tag))
    if dict_name:
        slow_put.spawn(dict_name, "detached")
        print("spawned slow_put")
