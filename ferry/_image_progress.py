"""Showing image builds compactly on stderr.

    Building image 3f2a9c01b7d4 (4 steps)
      ✓ [1/4] debian_slim(python_version='3.11') (cached)
      ✓ [2/4] ferry runtime (cloudpickle, msgpack) (cached)
      ⠹ [3/4] pip_install('torch')  41 s                <- live, while the step builds:
          Collecting nvidia-cudnn-cu12                     its last few output lines
          Downloading torch-2.5.1-cp311-...whl (906 MB)

In a terminal the step being built is a live block (spinner, elapsed time, the last lines of
its output) that collapses into one `✓ [3/4] ... (52.1 s)` line when the step ends. Elsewhere
(a pipe, a CI log) a step prints one line when it starts and one when it ends. A failed step
prints the last lines of its output either way. The full output of every step stays on the
server: `ferry image logs KEY`.

Events come from the server as `image` pushes (see `ferry/server/images/builder.py`). When
every step is cached nothing is printed unless `verbose` (as for `ferry image build`). A
`warning` event (a Ray node left out of a build) is printed as a warning line.
"""

from __future__ import annotations

import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text

TAIL_LINES = 4  # output lines under a building step
FAILURE_LINES = 20  # output lines printed for a failed step
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def _clean(text: str) -> str:
    """One displayable line: the last of what a `\\r` progress bar redrew, without escapes."""
    return _CONTROL.sub("", text.rstrip("\r\n").rsplit("\r", 1)[-1]).expandtabs(4)


def _base(image: str) -> str:
    """The image key of an event's `image` (a Ray node's build of it is `<key>@<node>`)."""
    return image.split("@", 1)[0]


@dataclass
class _Step:
    """A step being built, as the live block shows it."""

    where: str
    label: str
    started: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="cyan"))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        elapsed = f"  {time.monotonic() - self.started:.0f} s"
        room = max(10, options.max_width - 2 - len(self.where) - 1 - len(elapsed))
        label = self.label if len(self.label) <= room else self.label[:room - 1] + "…"
        self.spinner.update(text=Text.assemble(f"{self.where} {label}", (elapsed, "dim"), no_wrap=True))
        yield self.spinner
        for line in self.tail:
            yield Text(f"    {line}", style="dim", no_wrap=True, overflow="ellipsis")


class _Steps:
    """Every step building now (several images may build at once)."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, int], _Step] = {}

    def __rich__(self) -> RenderableType:
        return Group(*self.active.values())


class BuildDisplay:
    """Renders the events of one or more image builds on stderr."""

    def __init__(self, *, verbose: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbose = verbose
        self.live = self.console.is_terminal
        self._labels: dict[str, list[str]] = {}
        self._keys: dict[str, str] = {}
        self._logs: dict[tuple[str, int], deque[str]] = {}
        self._pending: dict[str, list[str]] = {}  # cached lines, printed once something builds
        self._announced: set[str] = set()
        self._steps = _Steps()
        self._live: Live | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._handle(event)
        except Exception:  # noqa: BLE001 - display problems must not break a build
            pass

    def _handle(self, event: dict[str, Any]) -> None:
        image = event.get("image", "")
        kind = event.get("event")
        if kind == "warning":  # e.g. a Ray node left out of a build
            self.console.print(f"[yellow]Warning:[/yellow] {escape(str(event.get('text', '')))}")
            return
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
        where = f"[{index + 1}/{len(labels)}]" if labels else f"[{index + 1}]"
        if self._others_building(image):  # several images at once (a Ray cluster's app start): say whose
            where = f"{_base(image)[:12]} {where}"
        if kind == "log":
            line = _clean(str(event.get("text", "")))
            self._logs.setdefault((image, index), deque(maxlen=FAILURE_LINES)).append(line)
            step = self._steps.active.get((image, index))
            if step is not None and line.strip():
                step.tail.append(line)
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
            self._steps.active[(image, index)] = _Step(where, label)
            if self.live:
                if self._live is None:
                    self._live = Live(self._steps, console=self.console, transient=True, refresh_per_second=8,
                                      redirect_stdout=False, redirect_stderr=False)
                    self._live.start()
            else:
                self.console.print(f"  • {where} {escape(label)}")
        elif state in ("built", "failed"):
            step = self._steps.active.pop((image, index), None)
            if not self._steps.active:
                self._stop_live()
            seconds = event.get("seconds")
            if seconds is None and step is not None:
                seconds = time.monotonic() - step.started
            took = f"{seconds:.1f} s" if seconds is not None else ""
            if state == "built":
                self.console.print(f"  [green]✓[/green] {where} {escape(label)} [dim]({took})[/dim]")
            else:
                self.console.print(f"  [red]✗[/red] {where} {escape(label)} [red](failed{', ' + took if took else ''})[/red]")
                for text in self._logs.get((image, index), ()):
                    self.console.print(f"    {text}", markup=False)
                key = self._keys.get(image, image)[:12]
                if event.get("log"):  # a build on a Ray node: its log file there
                    self.console.print(f"  Full output: {event['log']}", markup=False)
                elif key:
                    self.console.print(f"  Full output: ferry image logs {key}", markup=False)

    def _others_building(self, image: str) -> bool:
        """Whether a step of another image (not only another node's build of this one) is building."""
        return any(_base(other) != _base(image) for other, _ in self._steps.active)

    def _announce(self, image: str) -> None:
        if image in self._announced:
            return
        self._announced.add(image)
        steps = len(self._labels.get(image, []))
        self.console.print(f"[bold]Building image[/bold] {self._keys.get(image, image)[:12]} ({steps} steps)")
        for line in self._pending.pop(image, []):
            self.console.print(line)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def close(self) -> None:
        self._steps.active.clear()
        self._stop_live()
        sys.stderr.flush()
