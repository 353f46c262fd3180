"""The image build display: compact in a terminal (a live block that collapses into one line
per step) and in a pipe (one line per step start and end); a failed step's last lines and the
`ferry image logs` hint either way; never the whole of pip's output."""

from __future__ import annotations

import io
import re

from rich.console import Console

from ferry._image_progress import FAILURE_LINES, BuildDisplay

KEY = "3f2a9c01b7d4e5f6a7b8"
PIP_LINES = [f"Collecting package-{n}" for n in range(200)]


def _display(terminal: bool, *, verbose: bool = False) -> tuple[BuildDisplay, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100, highlight=False, soft_wrap=True,
                      color_system=None)
    return BuildDisplay(console=console, verbose=verbose), out


def _build(display: BuildDisplay, *, fail: bool = False) -> None:
    display({"image": "im", "event": "plan", "labels": ["debian_slim()", "pip_install('torch')"], "key": KEY})
    display({"image": "im", "event": "step", "index": 0, "state": "cached"})
    display({"image": "im", "event": "step", "index": 1, "state": "building"})
    for line in PIP_LINES:
        display({"image": "im", "event": "log", "index": 1, "text": line})
    display({"image": "im", "event": "log", "index": 1, "text": "\x1b[31mProgress 10%\rProgress 100%\x1b[0m"})
    display({"image": "im", "event": "step", "index": 1, "state": "failed" if fail else "built", "seconds": 12.34})
    display.close()


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_pipe_prints_one_line_per_step_event_and_no_output():
    display, out = _display(terminal=False)
    _build(display)
    assert out.getvalue().splitlines() == [
        "Building image 3f2a9c01b7d4 (2 steps)",
        "  ✓ [1/2] debian_slim() (cached)",
        "  • [2/2] pip_install('torch')",
        "  ✓ [2/2] pip_install('torch') (12.3 s)",
    ]


def test_terminal_collapses_the_live_block_into_one_line():
    display, out = _display(terminal=True)
    _build(display)
    text = _plain(out.getvalue())
    assert "✓ [2/2] pip_install('torch') (12.3 s)" in text
    assert text.rstrip().endswith("(12.3 s)")  # the live block is gone at the end
    assert "Collecting package-0\n" not in text  # not every line of pip's output


def test_failure_shows_the_last_lines_and_where_the_full_log_is():
    for terminal in (False, True):
        display, out = _display(terminal=terminal)
        _build(display, fail=True)
        text = _plain(out.getvalue())
        assert "✗ [2/2] pip_install('torch') (failed, 12.3 s)" in text
        shown = [line.strip() for line in text.splitlines() if line.strip().startswith(("Collecting", "Progress"))]
        assert shown[-FAILURE_LINES:] == [*PIP_LINES[-(FAILURE_LINES - 1):], "Progress 100%"], shown
        assert "Collecting package-0\n" not in text
        assert text.rstrip().endswith(f"Full output: ferry image logs {KEY[:12]}")


def test_cached_images_print_nothing_unless_verbose():
    for verbose, expected in ((False, ""), (True, "Building image 3f2a9c01b7d4 (1 steps)\n  ✓ [1/1] a (cached)\n")):
        display, out = _display(terminal=False, verbose=verbose)
        display({"image": "im", "event": "plan", "labels": ["a"], "key": KEY})
        display({"image": "im", "event": "step", "index": 0, "state": "cached"})
        display.close()
        assert out.getvalue() == expected


def test_a_node_build_names_its_log_on_the_node_and_a_node_left_out_is_a_warning():
    display, out = _display(False)
    display({"image": "im@1a2b3c4d", "event": "plan", "labels": ["pip_install('six') on node 1a2b3c4d"], "key": KEY})
    display({"image": "im@1a2b3c4d", "event": "step", "index": 0, "state": "building"})
    display({"image": "im@1a2b3c4d", "event": "step", "index": 0, "state": "failed",
             "log": "$FERRY_NODE_CACHE/images/venvs/k.logs/0.log on node 1a2b3c4d"})
    display({"image": "im", "event": "warning", "text": "Image im was not built ahead on node 5e6f7a8b: lost"})
    display.close()
    text = _plain(out.getvalue())
    assert "Full output: $FERRY_NODE_CACHE/images/venvs/k.logs/0.log on node 1a2b3c4d" in text, text
    assert "ferry image logs" not in text
    assert "Warning: Image im was not built ahead on node 5e6f7a8b: lost" in text, text


def test_steps_of_images_building_at_once_name_their_image():
    """A Ray cluster's app start builds its images at once: a step line says whose it is while
    another image builds, and not when only other nodes' builds of the same image do."""
    display, out = _display(terminal=False)
    other = "9c01b7d4e5f6a7b8c9d0"
    for image, key in ((f"{KEY}@node1", "venv1"), (f"{KEY}@node2", "venv2"), (f"{other}@node1", "venv3")):
        display({"image": image, "event": "plan", "labels": ["pip_install('six')"], "key": key})
    display({"image": f"{KEY}@node1", "event": "step", "index": 0, "state": "building"})
    display({"image": f"{KEY}@node2", "event": "step", "index": 0, "state": "building"})
    display({"image": f"{other}@node1", "event": "step", "index": 0, "state": "building"})
    display({"image": f"{KEY}@node1", "event": "step", "index": 0, "state": "built", "seconds": 1.0})
    display({"image": f"{KEY}@node2", "event": "step", "index": 0, "state": "built", "seconds": 1.0})
    display({"image": f"{other}@node1", "event": "step", "index": 0, "state": "built", "seconds": 2.0})
    display.close()
    steps = [line for line in out.getvalue().splitlines() if not line.startswith("Building image")]
    assert steps == [
        "  • [1/1] pip_install('six')",
        "  • [1/1] pip_install('six')",
        f"  • {other[:12]} [1/1] pip_install('six')",
        f"  ✓ {KEY[:12]} [1/1] pip_install('six') (1.0 s)",
        f"  ✓ {KEY[:12]} [1/1] pip_install('six') (1.0 s)",
        "  ✓ [1/1] pip_install('six') (2.0 s)",
    ]
