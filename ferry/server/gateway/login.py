"""The dashboard's login, required when the gateway is bound to a non-loopback address.

Bound to loopback, the dashboard is open to whoever can reach it on this machine (as the
control plane's local administrator file is). Bound to any other address, it asks for a
client credential (`ferry credential create`): `POST /_login` with `token_id` and
`token_secret` starts a session (a random cookie, `HttpOnly`, `SameSite=Strict`, `Secure`
over TLS) that lasts `SESSION_SECONDS` and ends at once when its credential is revoked.
Failed logins are slowed down per address, like failed handshakes. Web endpoints are not
affected: they keep their own `requires_proxy_auth` behaviour.
"""

from __future__ import annotations

import secrets
import time
from html import escape
from typing import Any
from urllib.parse import parse_qs

from ..auth import Authenticator
from .exchange import Receive, Send, respond

LOGIN_PATH = "/_login"
LOGOUT_PATH = "/_logout"
COOKIE = "ferry_session"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 4096

_FORM = """<!doctype html><html><head><meta charset='utf-8'><title>Ferry: log in</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:4em auto;max-width:28em;padding:0 1em}}
label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em;font:inherit}}
button{{margin-top:1em;padding:.4em 1.2em;font:inherit}}.err{{color:#b00}}</style></head><body>
<h1>Ferry dashboard</h1><p>Log in with a client credential (<code>ferry credential create NAME</code>
on the server's machine mints one).</p>{error}
<form method='post' action='/_login'><label for='id'>Token id</label>
<input id='id' name='token_id' autocomplete='username' required>
<label for='secret'>Token secret</label>
<input id='secret' name='token_secret' type='password' autocomplete='current-password' required>
<button type='submit'>Log in</button></form></body></html>"""


def is_login_path(path: str) -> bool:
    return path in (LOGIN_PATH, LOGOUT_PATH)


class DashboardLogin:
    """Sessions of people logged in to the dashboard."""

    def __init__(self, auth: Authenticator, *, required: bool, secure: bool) -> None:
        self.auth = auth
        self.required = required
        self.secure = secure
        self._sessions: dict[str, tuple[str, float]] = {}  # cookie -> (credential id, expiry)

    def allows(self, scope: dict[str, Any]) -> bool:
        """Whether this request may see the dashboard."""
        if not self.required:
            return True
        session = _cookie(scope, COOKIE)
        entry = self._sessions.get(session) if session else None
        if entry is None:
            return False
        credential_id, expires = entry
        if time.time() > expires or not self.auth.is_active(credential_id):
            self._sessions.pop(session, None)
            return False
        return True

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """`/_login` (the form, or a login) and `/_logout`."""
        method = scope.get("method")
        if scope["path"] == LOGOUT_PATH:
            session = _cookie(scope, COOKIE)
            if session:
                self._sessions.pop(session, None)
            await self._redirect(send, LOGIN_PATH, self._cookie_header("", 0))
            return
        if method in ("GET", "HEAD"):
            await self.form(send)
            return
        if method != "POST":
            await respond(send, 405, "Use GET or POST.", [(b"allow", b"GET, POST")])
            return
        body = await _read_form(receive)
        if body is None:
            await respond(send, 413, f"A login form is at most {MAX_FORM_BYTES} bytes.")
            return
        fields = parse_qs(body.decode("utf-8", "replace"))
        token_id = (fields.get("token_id") or [""])[0].strip()
        token_secret = (fields.get("token_secret") or [""])[0].strip()
        peer = str((scope.get("client") or ("?",))[0])
        principal = await self.auth.check_login(token_id, token_secret, peer)
        if principal is None:
            await self.form(send, status=401, error="That token id and secret are not a valid credential.")
            return
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (principal.credential_id, time.time() + SESSION_SECONDS)
        await self._redirect(send, "/", self._cookie_header(session, SESSION_SECONDS))

    async def form(self, send: Send, *, status: int = 200, error: str = "") -> None:
        html = _FORM.format(error=f"<p class='err'>{escape(error)}</p>" if error else "").encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(html)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": html})

    async def refuse(self, scope: dict[str, Any], send: Send) -> None:
        """A dashboard request without a session: browsers go to the form."""
        await self._redirect(send, LOGIN_PATH, None)

    def _cookie_header(self, value: str, max_age: int) -> tuple[bytes, bytes]:
        flags = f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if self.secure:
            flags += "; Secure"
        return b"set-cookie", flags.encode()

    @staticmethod
    async def _redirect(send: Send, location: str, cookie: tuple[bytes, bytes] | None) -> None:
        headers = [(b"location", location.encode()), (b"cache-control", b"no-store")]
        if cookie is not None:
            headers.append(cookie)
        await respond(send, 303, f"See {location}", headers)


def _cookie(scope: dict[str, Any], name: str) -> str:
    for header, value in scope.get("headers") or []:
        if header == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, found = part.strip().partition("=")
                if key == name:
                    return found
    return ""


async def _read_form(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
