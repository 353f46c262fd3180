"""Helpers for the web endpoint tests: URLs any HTTP client can use, and polling."""

from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import urlsplit


def path_url(url: str) -> str:
    """`http://LABEL.localhost:PORT` -> `http://127.0.0.1:PORT/_/LABEL/` (the path-based form:
    Python's resolver, unlike browsers and curl, does not map *.localhost to loopback)."""
    parts = urlsplit(url)
    if parts.path.startswith("/_/"):  # already path-based (what get_web_url() returns)
        return url if url.endswith("/") else url + "/"
    label = parts.hostname.split(".")[0]
    return f"http://127.0.0.1:{parts.port}/_/{label}/"


def host_based(url: str) -> tuple[str, dict[str, str]]:
    """The loopback address to send to, and the Host header a browser would send for `url`."""
    parts = urlsplit(url)
    return f"http://127.0.0.1:{parts.port}/", {"host": parts.netloc}


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
