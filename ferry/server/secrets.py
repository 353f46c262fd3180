"""The secret store: named and anonymous secrets, encrypted at rest with Fernet.

The key lives in `$FERRY_HOME/secret.key` (mode 0600, created on first start); the `secrets`
table of state.db holds only ciphertext. Values are decrypted only to build a container's
environment and are never logged, shown or put in a function definition:

    client reference               on arrival (app.create / function.variant)
    {"name": N, "required_keys"}   checked: N exists and has the keys, else NotFoundError
    {"values": {...}}              stored as anonymous secret "anon-<HMAC of the values>"
                                   and replaced by {"name": "anon-..."}
    {"unavailable": msg}           InvalidError (declared inside a container)

Anonymous secrets live as long as something refers to them: `drop_unused_anonymous` (called
when an app stops, at server start and by the maintenance pass) deletes those that no live
app's definition names, except those held by a request in progress (`holding()`: app.create,
function.variant, image.build and sandbox.create store them before what uses them exists).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from cryptography.fernet import Fernet, InvalidToken

from .._secret import ANONYMOUS_PREFIX, check_secret_name, check_values
from ..exception import InvalidError, NotFoundError
from .store import Store, pack, unpack

log = logging.getLogger("ferry.server")

KEY_FILE = "secret.key"
_HELD: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("ferry_held_secrets", default=None)


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key at `path`, created (mode 0600, atomically) when absent."""
    if not path.exists():
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, Fernet.generate_key())
        finally:
            os.close(fd)
        try:
            os.link(temp, path)  # fails if another process created the key meanwhile
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by other users; restricting it to mode 0600", path)
        os.chmod(path, 0o600)
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise InvalidError(f"{path} is not a valid secret key. Restore it from a backup; if it is lost, "
                           "delete it and recreate every secret with `ferry secret create`.") from None
    return key


class SecretStore:
    """Encrypts, stores and resolves secrets; the only code that sees their values."""

    def __init__(self, store: Store, key_path: Path) -> None:
        self.store = store
        self.key_path = key_path
        key = load_or_create_key(key_path)
        self._fernet = Fernet(key)
        self._name_key = hashlib.sha256(b"ferry anonymous secret names\0" + key).digest()
        self._held: Counter[str] = Counter()  # anonymous secrets stored by requests in progress

    # -- named secrets (`ferry secret ...`) -----------------------------------------------
    def create(self, name: str, values: dict[str, str], *, force: bool = False) -> dict[str, Any]:
        check_secret_name(name)
        values = check_values(values, f"Secret {name!r}")
        if not values:
            raise InvalidError(f"Secret {name!r} needs at least one KEY=value.")
        replaced = self.store.secret(name) is not None
        if replaced and not force:
            raise InvalidError(f"Secret {name!r} already exists. To replace its values, run "
                               f"`ferry secret create {name} KEY=value ... --force` (or pass force=True).")
        self.store.put_secret(name, self._encrypt(values), anonymous=False)
        return {"name": name, "keys": sorted(values), "replaced": replaced}

    def list(self) -> list[dict[str, Any]]:
        """Names and dates only; never values (anonymous secrets are not listed)."""
        return self.store.secrets()

    def delete(self, name: str) -> None:
        if not self.store.delete_secret(name):
            raise NotFoundError(f"No secret named {name!r}. See `ferry secret list`.")

    # -- resolution of function definitions -----------------------------------------------
    def resolve(self, uses: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[list[dict[str, Any]]]:
        """Check every reference of every user (function tag, references) and return the
        references as stored: names only. Raises before storing anything if one is missing."""
        uses = list(uses)
        missing: dict[str, list[str]] = {}
        lacking: dict[str, tuple[list[str], list[str]]] = {}
        for user, references in uses:
            for ref in references:
                if "unavailable" in ref:
                    raise InvalidError(f"{ref['unavailable']}; declare it where the app is run or deployed.")
                if "values" in ref:
                    check_values(ref["values"], f"A secret of {user}")
                    continue
                name = check_secret_name(ref.get("name"))
                found = self._load(name)
                if found is None:
                    missing.setdefault(name, []).append(user)
                    continue
                absent = [k for k in ref.get("required_keys") or [] if k not in found]
                if absent:
                    keys, users = lacking.setdefault(name, ([], []))
                    keys.extend(k for k in absent if k not in keys)
                    users.append(user)
        if missing or lacking:
            raise NotFoundError(_problems(missing, lacking))
        return [[self._stored_reference(ref) for ref in references] for _, references in uses]

    def resolve_config(self, config: dict[str, Any], user: str) -> dict[str, Any]:
        """`config` with its `secrets` references resolved (a copy; unchanged if none)."""
        if not config.get("secrets"):
            return config
        return {**config, "secrets": self.resolve([(user, config["secrets"])])[0]}

    def environment(self, references: Iterable[dict[str, Any]], user: str) -> dict[str, str]:
        """The environment variables of stored references, later ones overriding earlier."""
        env: dict[str, str] = {}
        for ref in references:
            name = ref["name"]
            values = self._load(name)
            if values is None:
                if name.startswith(ANONYMOUS_PREFIX):
                    raise NotFoundError(f"A secret given by value to {user} is no longer stored on the server; "
                                        "run or deploy the app again.")
                raise NotFoundError(f"Secret {name!r} used by {user} was deleted. Create it again with "
                                    f"`ferry secret create {name} KEY=value`.")
            env.update(values)
        return env

    # -- lifetime of anonymous secrets ----------------------------------------------------
    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Within the block, the anonymous secrets this task stores are kept by
        `drop_unused_anonymous` (their functions are not installed yet)."""
        names: list[str] = []
        token = _HELD.set(names)
        try:
            yield
        finally:
            _HELD.reset(token)
            self._held.subtract(names)
            self._held += Counter()  # (drops the names no request holds any more)

    def held_during(self, handler: Callable[[Any, dict], Awaitable[Any]]) -> Callable[[Any, dict], Awaitable[Any]]:
        """`handler` (of a request) run in `holding()`."""
        async def holding(conn: Any, args: dict) -> Any:
            with self.holding():
                return await handler(conn, args)

        return holding

    def drop_unused_anonymous(self, in_use: set[str]) -> int:
        """Delete the anonymous secrets not in `in_use` (names referred to by live apps) and
        held by no request in progress; returns how many were deleted."""
        unused = [name for name in self.store.anonymous_secret_names() if name not in in_use and not self._held[name]]
        for name in unused:
            self.store.delete_anonymous_secret(name)
        return len(unused)

    # -- internals ------------------------------------------------------------------------
    def _stored_reference(self, ref: dict[str, Any]) -> dict[str, Any]:
        if "values" not in ref:
            return {"name": ref["name"], "required_keys": list(ref.get("required_keys") or [])}
        values = ref["values"]
        digest = hmac.new(self._name_key, pack(sorted(values.items())), hashlib.sha256).hexdigest()
        name = ANONYMOUS_PREFIX + digest[:32]
        held = _HELD.get()
        if held is not None:
            held.append(name)
            self._held[name] += 1
        if self.store.secret(name) is None:
            self.store.put_secret(name, self._encrypt(values), anonymous=True)
        return {"name": name}

    def _encrypt(self, values: dict[str, str]) -> bytes:
        return self._fernet.encrypt(pack(values))

    def _load(self, name: str) -> dict[str, str] | None:
        """The decrypted values of secret `name`, or None if there is no such secret."""
        row = self.store.secret(name)
        if row is None:
            return None
        try:
            return unpack(self._fernet.decrypt(row[0]))
        except InvalidToken:
            raise InvalidError(f"Secret {name!r} cannot be decrypted with {self.key_path} (was the key file "
                               f"replaced?). Restore the original key, or recreate the secret with "
                               f"`ferry secret create {name} KEY=value --force`.") from None


def _problems(missing: dict[str, list[str]], lacking: dict[str, tuple[list[str], list[str]]]) -> str:
    """One line naming every missing secret or key and the command that fixes it."""
    parts = []
    for name, users in missing.items():
        parts.append(f"Secret {name!r} not found (used by {', '.join(users)}): create it with "
                     f"`ferry secret create {name} KEY=value`")
    for name, (keys, users) in lacking.items():
        assignments = " ".join(f"{k}=value" for k in keys)
        parts.append(f"Secret {name!r} lacks required key(s) {', '.join(keys)} (used by {', '.join(users)}): "
                     f"recreate it with them and its other keys: `ferry secret create {name} {assignments} ... --force`")
    return "; ".join(parts) + "."
