"""Who may use which request: the roles of authenticated peers and the method table per role.

Every connection authenticates in its `hello` (server/auth.py) and carries a `Principal`:

    ADMIN      a client credential (the local administrator's, or one minted with
               `ferry credential create`): every request
    CONTAINER  the credential the server gives one container for its lifetime: what a function
               body needs (its inputs and outputs, calls to functions, volumes, dicts, queues,
               blobs), nothing administrative

Anonymous peers (HTTP clients of the web gateway) never reach these requests. Each handler
states its audience when it is registered (`ADMIN_ONLY` or `EVERYONE`); a request outside it
is answered with `PermissionDeniedError` before its handler runs. The tables are built once per
role, so the check costs nothing per call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from ..exception import PermissionDeniedError


class Role(enum.Enum):
    ADMIN = "admin"
    CONTAINER = "container"


ADMIN_ONLY: frozenset[Role] = frozenset({Role.ADMIN})
EVERYONE: frozenset[Role] = frozenset({Role.ADMIN, Role.CONTAINER})


@dataclass(frozen=True)
class Principal:
    """An authenticated peer: its role and the id of its credential (a container's id)."""

    role: Role
    credential_id: str
    name: str = ""


Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]


def _refuse(method: str, role: Role) -> Handler:
    async def refused(conn: Any, args: dict[str, Any]) -> Any:
        if role is Role.CONTAINER:
            raise PermissionDeniedError(
                f"{method} is not permitted from inside a container: containers may run and call "
                "functions and use volumes, dicts and queues, but administrative requests need an "
                "administrator's credential (run the command outside the container).")
        raise PermissionDeniedError(f"{method} is not permitted for a {role.value} credential.")

    return refused


def table_for(role: Role, handlers: Mapping[str, Handler],
              audiences: Mapping[str, frozenset[Role]]) -> dict[str, Handler]:
    """The request table of `role`: each method's handler, or a refusal naming the method.
    A method without a declared audience is for administrators only."""
    return {method: handler if role in audiences.get(method, ADMIN_ONLY) else _refuse(method, role)
            for method, handler in handlers.items()}
