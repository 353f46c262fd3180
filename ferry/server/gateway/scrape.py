"""`/metrics`: the control plane's Prometheus metrics (server/metrics.py), served by the web
gateway to requests that name no endpoint label (like the dashboard, it never shadows an
endpoint: `LABEL.localhost/metrics` and `/_/LABEL/metrics` are the endpoint's).

Audience:
    gateway bound to loopback     anyone on this machine (as the dashboard)
    bound beyond loopback         a client credential, as `Authorization: Bearer
                                  <token_id>:<token_secret>` (scrapers cannot fill in the
                                  login form), or a logged-in dashboard session; else 401.
                                  Failed attempts are slowed down per address, as logins are.
"""

from __future__ import annotations

from typing import Any, Callable

from ..metrics import CONTENT_TYPE
from .exchange import Send, respond
from .login import DashboardLogin

METRICS_PATH = "/metrics"


def is_metrics_path(path: str) -> bool:
    return path == METRICS_PATH


class MetricsEndpoint:
    def __init__(self, render: Callable[[], str], login: DashboardLogin) -> None:
        self._render = render
        self._login = login

    async def handle(self, scope: dict[str, Any], send: Send) -> None:
        method = scope.get("method")
        if method not in ("GET", "HEAD"):
            await respond(send, 405, "Use GET.", [(b"allow", b"GET, HEAD")])
            return
        if not await self._allowed(scope):
            await respond(send, 401, (
                "Unauthorized: /metrics on a gateway bound beyond loopback needs a client credential: "
                "send `Authorization: Bearer TOKEN_ID:TOKEN_SECRET` (mint one with `ferry credential "
                "create NAME` on the server's machine)."), [(b"www-authenticate", b'Bearer realm="ferry"')])
            return
        body = self._render().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _allowed(self, scope: dict[str, Any]) -> bool:
        if self._login.allows(scope):  # loopback (no login required), or a dashboard session
            return True
        token_id, token_secret = bearer_credential(scope)
        peer = str((scope.get("client") or ("?",))[0])
        return await self._login.auth.check_login(token_id, token_secret, peer) is not None


def bearer_credential(scope: dict[str, Any]) -> tuple[str, str]:
    """(token id, token secret) of an `Authorization: Bearer ID:SECRET` header, or empty strings."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            kind, _, credential = value.decode("latin-1").strip().partition(" ")
            if kind.lower() == "bearer":
                token_id, _, token_secret = credential.strip().partition(":")
                return token_id, token_secret
            break
    return "", ""
