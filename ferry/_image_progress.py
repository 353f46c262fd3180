"""Showing image builds in the terminal: one line per step, a spinner with the latest output
line while a step builds, and the step's full output if it fails.

Events come from the server as `image` pushes (see `ferry/server/images/builder.py`). When
every step is cached nothing is printed unless `verbose` (as for `ferry image build`).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status

_MAX_LINE = 160


class BuildDisplay:
    """Renders the events of one or more image builds on stderr."""

    def __init__(self, *, verbose: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbose = verbose
        self.live = self.console.is_terminal
        self._labels: dict[str, list[str]] = {}
        self._keys: dict[str, str] = {}
        self._logs: dict[tuple[str, int], list[str]] = {}
        self._pending: dict[str, list[str]] = {}  # cached lines, printed once something builds
        self._announced: set[str] = set()
        self._status: Status | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._handle(event)
        except Exception:  # noqa: BLE001 - display problems must not break a build
            pass

    def _handle(self, event: dict[str, Any]) -> None:
        image = event.get("image", "")
        kind = event.get("event")
        if kind == "plan":
            self._labels[image] = list(event["labels"])
            self._keys[image] = event.get("key") or image
            self._pending[image] = []
            if self.verbose:
                self._announce(image)
            return
        labels = self._labels.get(image, [])
        index = int(event.get("index", 0))
        label = labels[index] if index < len(labels) else f"step {index + 1}"
        where = f"[{index + 1}/{len(labels)}]"
        if kind == "log":
            lines = self._logs.setdefault((image, index), [])
            lines.append(event["text"])
            if self._status is not None:
                self._status.update(f"{where} {escape(label[:80])}  [dim]{escape(event['text'][:_MAX_LINE])}[/dim]")
            elif not self.live:
                self.console.print(f"    {event['text']}", markup=False)
            return
        state = event.get("state")
        if state == "cached":
            line = f"  [green]✓[/green] {where} {escape(label)} [dim](cached)[/dim]"
            if image in self._announced:
                self.console.print(line)
            else:
                self._pending.setdefault(image, []).append(line)
        elif state == "building":
            self._announce(image)
            if self.live:
                self._status = self.console.status(f"{where} {escape(label[:80])}")
                self._status.start()
            else:
                self.console.print(f"  • {where} {escape(label)}")
        elif state in ("built", "failed"):
            self._stop_status()
            if state == "built":
                seconds = event.get("seconds") or 0.0
                self.console.print(f"  [green]✓[/green] {where} {escape(label)} [dim]({seconds:.1f} s)[/dim]")
            else:
                self.console.print(f"  [red]✗[/red] {where} {escape(label)} [red](failed)[/red]")
                if self.live:
                    for text in self._logs.get((image, index), []):
                        self.console.print(f"    {text}", markup=False)

    def _announce(self, image: str) -> None:
        if image in self._announced:
            return
        self._announced.add(image)
        steps = len(self._labels.get(image, []))
        self.console.print(f"[bold]Building image[/bold] {self._keys.get(image, image)[:12]} ({steps} steps)")
        for line in self._pending.pop(image, []):
            self.console.print(line)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop_status()
        sys.stderr.flush()
