"""Durable control-plane state in SQLite (WAL) under `$FERRY_HOME/state.db`.

What survives a restart: apps and their function definitions, spawned calls with their inputs
and outputs, schedule state (next and last run per scheduled function), secrets (ciphertext
only), volumes and their commits, container records and logs, and the inputs of `.map()` calls with
their outputs until the caller has them (`call_inputs`, written in group commits by
server/journal.py; see docs/reliability.md).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import msgpack

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, stopped REAL, version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS apps_by_name ON apps(name, state);
CREATE TABLE IF NOT EXISTS functions (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, tag TEXT NOT NULL, definition BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS functions_by_app ON functions(app_id);
CREATE TABLE IF NOT EXISTS derived_pools (
    id TEXT PRIMARY KEY, base_id TEXT NOT NULL, params BLOB, overrides BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spawned_calls (
    id TEXT PRIMARY KEY, function_id TEXT NOT NULL, method TEXT, args BLOB NOT NULL,
    state TEXT NOT NULL, output BLOB, created REAL NOT NULL, finished REAL
);
CREATE INDEX IF NOT EXISTS spawned_by_state ON spawned_calls(state);
CREATE TABLE IF NOT EXISTS call_inputs (
    call_id TEXT NOT NULL, idx INTEGER NOT NULL, function_id TEXT NOT NULL, kind TEXT NOT NULL,
    method TEXT, args BLOB NOT NULL, output BLOB, PRIMARY KEY (call_id, idx)
);
CREATE TABLE IF NOT EXISTS input_attempts (
    call_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL, PRIMARY KEY (call_id, idx)
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, function_id TEXT NOT NULL, state TEXT NOT NULL,
    started REAL NOT NULL, stopped REAL, exit_code INTEGER, reason TEXT
);
CREATE INDEX IF NOT EXISTS containers_by_app ON containers(app_id);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, app_id TEXT NOT NULL, function TEXT NOT NULL,
    container_id TEXT NOT NULL, stream TEXT NOT NULL, ts REAL NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_app ON logs(app_id, seq);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY, ciphertext BLOB NOT NULL, anonymous INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL,
    created REAL NOT NULL, revoked REAL
);
CREATE TABLE IF NOT EXISTS schedules (
    function_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, schedule TEXT NOT NULL,
    next_run REAL NOT NULL, last_run REAL, last_status TEXT
);
CREATE TABLE IF NOT EXISTS autoscaler_overrides (
    function_id TEXT PRIMARY KEY, settings BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_commits (
    volume_id TEXT NOT NULL, seq INTEGER NOT NULL, manifest TEXT NOT NULL, files INTEGER NOT NULL,
    bytes INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (volume_id, seq)
);
"""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Store:
    """A thin, synchronous layer over the SQLite database. Called from the server's loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        self._pending_logs: list[tuple] = []

    def close(self) -> None:
        self.flush_logs()
        self._db.close()

    # -- apps -----------------------------------------------------------------------------
    def insert_app(self, app_id: str, name: str, kind: str, state: str) -> None:
        self._db.execute(
            "INSERT INTO apps(id, name, kind, state, created) VALUES (?, ?, ?, ?, ?)",
            (app_id, name, kind, state, time.time()),
        )

    def set_app_state(self, app_id: str, state: str) -> None:
        stopped = time.time() if state == "stopped" else None
        self._db.execute("UPDATE apps SET state=?, stopped=? WHERE id=?", (state, stopped, app_id))

    def bump_app_version(self, app_id: str) -> int:
        self._db.execute("UPDATE apps SET version = version + 1 WHERE id=?", (app_id,))
        return self._db.execute("SELECT version FROM apps WHERE id=?", (app_id,)).fetchone()[0]

    def apps(self, *, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, name, kind, state, created, stopped, version FROM apps ORDER BY created"
        ).fetchall()
        keys = ("id", "name", "kind", "state", "created", "stopped", "version")
        result = [dict(zip(keys, row)) for row in rows]
        if states is not None:
            wanted = set(states)
            result = [a for a in result if a["state"] in wanted]
        return result

    # -- functions ------------------------------------------------------------------------
    def upsert_function(self, function_id: str, app_id: str, tag: str, definition: dict) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO functions(id, app_id, tag, definition, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (function_id, app_id, tag, pack(definition), time.time()),
        )

    def delete_functions(self, app_id: str, keep: Iterable[str]) -> None:
        keep = set(keep)
        for (fid,) in self._db.execute("SELECT id FROM functions WHERE app_id=?", (app_id,)).fetchall():
            if fid not in keep:
                self._db.execute("DELETE FROM functions WHERE id=?", (fid,))

    def delete_app_definitions(self, app_id: str) -> None:
        """An app's function definitions and the pools derived from them (whose ids start with
        their base's), in one transaction: an ephemeral app that stopped needs them no more."""
        with self._db:
            self._db.execute("BEGIN")
            for (fid,) in self._db.execute("SELECT id FROM functions WHERE app_id=?", (app_id,)).fetchall():
                self._db.execute("DELETE FROM derived_pools WHERE substr(id, 1, ?) = ?", (len(fid), fid))
            self._db.execute("DELETE FROM functions WHERE app_id=?", (app_id,))

    def upsert_derived(self, pool_id: str, base_id: str, params: bytes | None, overrides: dict) -> None:
        """A pool derived from a deployed function: a class instance (`params`) or a
        `with_options` variant (`overrides`)."""
        self._db.execute(
            "INSERT OR REPLACE INTO derived_pools(id, base_id, params, overrides) VALUES (?, ?, ?, ?)",
            (pool_id, base_id, params, pack(overrides)),
        )

    def derived(self) -> list[tuple[str, str, bytes | None, dict]]:
        rows = self._db.execute("SELECT id, base_id, params, overrides FROM derived_pools ORDER BY rowid")
        return [(pid, base, params, unpack(overrides)) for pid, base, params, overrides in rows.fetchall()]

    def functions(self, app_id: str) -> list[tuple[str, str, dict]]:
        rows = self._db.execute(
            "SELECT id, tag, definition FROM functions WHERE app_id=? ORDER BY created", (app_id,)
        ).fetchall()
        return [(fid, tag, unpack(d)) for fid, tag, d in rows]

    # -- spawned calls --------------------------------------------------------------------
    def insert_spawned(self, call_id: str, function_id: str, method: str | None, args: Any) -> None:
        self._db.execute(
            "INSERT INTO spawned_calls(id, function_id, method, args, state, created) "
            "VALUES (?, ?, ?, ?, 'pending', ?)",
            (call_id, function_id, method, pack(args), time.time()),
        )

    def finish_spawned(self, call_id: str, output: dict) -> None:
        self._db.execute(
            "UPDATE spawned_calls SET state='done', output=?, finished=? WHERE id=?",
            (pack(output), time.time(), call_id),
        )

    def spawned(self, call_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT function_id, method, args, state, output FROM spawned_calls WHERE id=?",
            (call_id,),
        ).fetchone()
        if row is None:
            return None
        fid, method, args, state, output = row
        return {
            "function_id": fid, "method": method, "args": unpack(args), "state": state,
            "output": unpack(output) if output is not None else None,
        }

    def pending_spawned(self) -> list[tuple[str, str, str | None, Any]]:
        rows = self._db.execute(
            "SELECT id, function_id, method, args FROM spawned_calls WHERE state='pending' "
            "ORDER BY created"
        ).fetchall()
        return [(cid, fid, method, unpack(args)) for cid, fid, method, args in rows]

    # -- inputs and outputs of .map() calls (server/journal.py) ---------------------------
    _JOURNAL_SQL = {
        "input": ("INSERT OR REPLACE INTO call_inputs(call_id, idx, function_id, kind, method, args, output) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",),
        "output": ("UPDATE call_inputs SET output=? WHERE call_id=? AND idx=?",),
        "ack": ("DELETE FROM call_inputs WHERE call_id=? AND idx=?",),
        "drop": ("DELETE FROM call_inputs WHERE call_id=?", "DELETE FROM input_attempts WHERE call_id=?"),
        "attempt": ("INSERT OR REPLACE INTO input_attempts(call_id, idx, attempt) VALUES (?, ?, ?)",),
        "settled": ("DELETE FROM input_attempts WHERE call_id=? AND idx=?",),
    }

    def write_journal(self, runs: list[tuple[str, list[tuple]]]) -> None:
        """Apply runs of journal rows (`input`, `output`, `ack`, `drop`, `attempt`, `settled`),
        in order, in one transaction: a crash keeps all of them or none."""
        with self._db:
            self._db.execute("BEGIN")
            for kind, rows in runs:
                for statement in self._JOURNAL_SQL[kind]:
                    self._db.executemany(statement, rows)

    def journaled_calls(self) -> list[tuple[str, str, str, int, str | None, Any, Any]]:
        """(call id, function id, kind, idx, method, args, output or None) of every stored input,
        by call and index."""
        rows = self._db.execute("SELECT call_id, function_id, kind, idx, method, args, output FROM call_inputs "
                                "ORDER BY call_id, idx").fetchall()
        return [(c, f, k, i, m, unpack(a), unpack(o) if o is not None else None) for c, f, k, i, m, a, o in rows]

    def input_attempts(self) -> dict[tuple[str, int], int]:
        """(call id, idx) -> failures so far, of the inputs that were to be retried."""
        rows = self._db.execute("SELECT call_id, idx, attempt FROM input_attempts").fetchall()
        return {(call_id, idx): attempt for call_id, idx, attempt in rows}

    def forget_input_attempts(self, keys: list[tuple[str, int]]) -> None:
        self._db.executemany("DELETE FROM input_attempts WHERE call_id=? AND idx=?", keys)

    # -- schedules (see server/schedules.py) ----------------------------------------------
    def upsert_schedule(self, function_id: str, app_id: str, schedule: dict, next_run: float,
                        last_run: float | None, last_status: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO schedules(function_id, app_id, schedule, next_run, last_run, "
            "last_status) VALUES (?, ?, ?, ?, ?, ?)",
            (function_id, app_id, json.dumps(schedule, sort_keys=True), next_run, last_run,
             last_status),
        )

    def delete_schedule(self, function_id: str) -> None:
        self._db.execute("DELETE FROM schedules WHERE function_id=?", (function_id,))

    def schedules(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT function_id, app_id, schedule, next_run, last_run, last_status FROM schedules"
        ).fetchall()
        keys = ("function_id", "app_id", "schedule", "next_run", "last_run", "last_status")
        return [dict(zip(keys, (*row[:2], json.loads(row[2]), *row[3:]))) for row in rows]

    # -- update_autoscaler() settings of deployed functions ------------------------------
    def set_autoscaler_overrides(self, function_id: str, settings: dict[str, Any]) -> None:
        if settings:
            self._db.execute("INSERT OR REPLACE INTO autoscaler_overrides(function_id, settings) VALUES (?, ?)",
                             (function_id, pack(settings)))
        else:
            self._db.execute("DELETE FROM autoscaler_overrides WHERE function_id=?", (function_id,))

    def autoscaler_overrides(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT function_id, settings FROM autoscaler_overrides").fetchall()
        return {function_id: unpack(settings) for function_id, settings in rows}

    # -- containers -----------------------------------------------------------------------
    def insert_container(self, container_id: str, app_id: str, function_id: str) -> None:
        self._db.execute(
            "INSERT INTO containers(id, app_id, function_id, state, started) "
            "VALUES (?, ?, ?, 'starting', ?)",
            (container_id, app_id, function_id, time.time()),
        )

    def set_container_state(
        self, container_id: str, state: str, *, exit_code: int | None = None, reason: str = ""
    ) -> None:
        if state == "stopped":
            self._db.execute(
                "UPDATE containers SET state=?, stopped=?, exit_code=?, reason=? WHERE id=?",
                (state, time.time(), exit_code, reason, container_id),
            )
        else:
            self._db.execute("UPDATE containers SET state=? WHERE id=?", (state, container_id))

    def container_records(self, prefix: str) -> list[dict[str, Any]]:
        """Recorded containers (live or stopped) whose id starts with `prefix`, newest last:
        `{id, app_id, function_id, state, started, stopped, exit_code, reason}`."""
        rows = self._db.execute(
            "SELECT id, app_id, function_id, state, started, stopped, exit_code, reason FROM containers "
            "WHERE substr(id, 1, ?)=? ORDER BY started LIMIT 20", (len(prefix), prefix)).fetchall()
        keys = ("id", "app_id", "function_id", "state", "started", "stopped", "exit_code", "reason")
        return [dict(zip(keys, row)) for row in rows]

    def mark_orphaned_containers(self) -> None:
        self._db.execute(
            "UPDATE containers SET state='stopped', stopped=?, reason='server restarted' "
            "WHERE state != 'stopped'",
            (time.time(),),
        )

    # -- secrets (values encrypted by server/secrets.py; never stored in clear) ------------
    def put_secret(self, name: str, ciphertext: bytes, *, anonymous: bool) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO secrets(name, ciphertext, anonymous, created, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET ciphertext=excluded.ciphertext, updated=excluded.updated",
            (name, ciphertext, int(anonymous), now, now),
        )

    def secret(self, name: str) -> tuple[bytes, float, float] | None:
        """(ciphertext, created, updated) of secret `name`, or None."""
        row = self._db.execute("SELECT ciphertext, created, updated FROM secrets WHERE name=?", (name,)).fetchone()
        return (bytes(row[0]), row[1], row[2]) if row else None

    def secrets(self) -> list[dict[str, Any]]:
        """Names and dates of the named (not anonymous) secrets."""
        rows = self._db.execute(
            "SELECT name, created, updated FROM secrets WHERE anonymous=0 ORDER BY name"
        ).fetchall()
        return [{"name": n, "created": c, "updated": u} for n, c, u in rows]

    def delete_secret(self, name: str) -> bool:
        return self._db.execute("DELETE FROM secrets WHERE name=? AND anonymous=0", (name,)).rowcount > 0

    # -- volumes (see server/volumes.py): one row per volume, one per commit ---------------
    _VOLUME_COLUMNS = ("id", "name", "version", "ephemeral", "created")

    def insert_volume(self, volume_id: str, name: str, version: int, ephemeral: bool) -> dict[str, Any]:
        created = time.time()
        self._db.execute("INSERT INTO volumes(id, name, version, ephemeral, created) VALUES (?, ?, ?, ?, ?)",
                         (volume_id, name, version, int(ephemeral), created))
        return dict(zip(self._VOLUME_COLUMNS, (volume_id, name, version, bool(ephemeral), created)))

    def volume(self, *, name: str | None = None, volume_id: str | None = None) -> dict[str, Any] | None:
        column, value = ("name", name) if name is not None else ("id", volume_id)
        row = self._db.execute(f"SELECT id, name, version, ephemeral, created FROM volumes WHERE {column}=?",
                               (value,)).fetchone()
        return dict(zip(self._VOLUME_COLUMNS, (*row[:3], bool(row[3]), row[4]))) if row else None

    def volumes(self) -> list[dict[str, Any]]:
        """Every volume with its head commit's seq, file count, bytes and date (0/None: none)."""
        rows = self._db.execute(
            "SELECT v.id, v.name, v.version, v.ephemeral, v.created, c.seq, c.files, c.bytes, c.created "
            "FROM volumes v LEFT JOIN volume_commits c ON c.volume_id = v.id AND c.seq = "
            "(SELECT MAX(seq) FROM volume_commits WHERE volume_id = v.id) ORDER BY v.name").fetchall()
        keys = (*self._VOLUME_COLUMNS, "seq", "files", "bytes", "updated")
        return [dict(zip(keys, (*r[:3], bool(r[3]), r[4], r[5] or 0, r[6] or 0, r[7] or 0, r[8]))) for r in rows]

    def volume_head(self, volume_id: str) -> tuple[int, str | None]:
        """(seq, manifest digest) of the volume's newest commit; (0, None) before the first."""
        row = self._db.execute("SELECT seq, manifest FROM volume_commits WHERE volume_id=? ORDER BY seq DESC "
                               "LIMIT 1", (volume_id,)).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def insert_volume_commit(self, volume_id: str, seq: int, manifest: str, files: int, size: int) -> bool:
        """Make `manifest` the volume's head: one INSERT, so a crash leaves the old head or the
        new one. False if the volume was deleted meanwhile."""
        cursor = self._db.execute(
            "INSERT INTO volume_commits(volume_id, seq, manifest, files, bytes, created) "
            "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM volumes WHERE id=?)",
            (volume_id, seq, manifest, files, size, time.time(), volume_id))
        return cursor.rowcount > 0

    def rename_volume(self, volume_id: str, new_name: str) -> None:
        self._db.execute("UPDATE volumes SET name=? WHERE id=?", (new_name, volume_id))

    def delete_volume(self, volume_id: str) -> None:
        """The volume and its commits, in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM volume_commits WHERE volume_id=?", (volume_id,))
            self._db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))

    # -- proxy auth tokens of web endpoints (see server/gateway/tokens.py) ------------------
    def insert_proxy_token(self, token_id: str, secret_sha256: str, name: str) -> float:
        created = time.time()
        self._db.execute("INSERT INTO proxy_tokens(id, secret_sha256, name, created) VALUES (?, ?, ?, ?)",
                         (token_id, secret_sha256, name, created))
        return created

    def proxy_tokens(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, secret_sha256, name, created FROM proxy_tokens ORDER BY created")
        return [{"token_id": i, "secret_sha256": h, "name": n, "created": c} for i, h, n, c in rows.fetchall()]

    def delete_proxy_token(self, token_id: str) -> bool:
        return self._db.execute("DELETE FROM proxy_tokens WHERE id=?", (token_id,)).rowcount > 0

    # -- client credentials (server/auth.py) ----------------------------------------------
    def insert_credential(self, credential_id: str, secret_sha256: str, name: str, role: str) -> float:
        created = time.time()
        self._db.execute("INSERT INTO credentials(id, secret_sha256, name, role, created) VALUES (?, ?, ?, ?, ?)",
                         (credential_id, secret_sha256, name, role, created))
        return created

    def credentials(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, secret_sha256, name, role, created, revoked FROM credentials "
                                "ORDER BY created")
        return [{"token_id": i, "secret_sha256": h, "name": n, "role": r, "created": c, "revoked": v}
                for i, h, n, r, c, v in rows.fetchall()]

    def revoke_credential(self, credential_id: str) -> bool:
        return self._db.execute("UPDATE credentials SET revoked=? WHERE id=? AND revoked IS NULL",
                                (time.time(), credential_id)).rowcount > 0

    # -- logs -----------------------------------------------------------------------------
    def add_log(self, app_id: str, function: str, container_id: str, stream: str, ts: float,
                text: str) -> None:
        self._pending_logs.append((app_id, function, container_id, stream, ts, text))

    def flush_logs(self) -> None:
        if not self._pending_logs:
            return
        rows, self._pending_logs = self._pending_logs, []
        self._db.executemany(
            "INSERT INTO logs(app_id, function, container_id, stream, ts, text) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def logs(self, app_id: str, *, after_seq: int = 0, limit: int = 10_000, since: float | None = None,
             function: str | None = None, container: str | None = None) -> list[dict[str, Any]]:
        """An app's log entries after `after_seq`; only those written at `since` or later, by
        `function`, by a container whose id starts with `container`, when given."""
        self.flush_logs()
        where, params = ["app_id=?", "seq>?"], [app_id, after_seq]
        if since is not None:
            where.append("ts>=?")
            params.append(since)
        if function is not None:
            where.append("function=?")
            params.append(function)
        if container is not None:
            where.append("substr(container_id, 1, ?)=?")
            params += [len(container), container]
        rows = self._db.execute(
            "SELECT seq, function, container_id, stream, ts, text FROM logs "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            (*params, limit),
        ).fetchall()
        keys = ("seq", "function", "container_id", "stream", "ts", "text")
        return [dict(zip(keys, row)) for row in rows]

    def log_tail(self, app_id: str, count: int) -> list[dict[str, Any]]:
        """The last `count` log lines of an app, oldest first (the dashboard's log view)."""
        self.flush_logs()
        rows = self._db.execute(
            "SELECT seq, function, container_id, stream, ts, text FROM logs "
            "WHERE app_id=? ORDER BY seq DESC LIMIT ?",
            (app_id, count),
        ).fetchall()
        keys = ("seq", "function", "container_id", "stream", "ts", "text")
        return [dict(zip(keys, row)) for row in reversed(rows)]

    # -- retention and garbage collection (server/maintenance.py, server/blob_gc.py) -----------
    def anonymous_secret_names(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM secrets WHERE anonymous=1").fetchall()]

    def delete_anonymous_secret(self, name: str) -> None:
        self._db.execute("DELETE FROM secrets WHERE name=? AND anonymous=1", (name,))

    def stored_definitions(self) -> list[Any]:
        """The stored function definitions and derived pools' overrides of apps not stopped
        (what they refer to: blob digests, secret names)."""
        rows = self._db.execute("SELECT f.id, f.definition FROM functions f JOIN apps a ON a.id = f.app_id "
                                "WHERE a.state != 'stopped'").fetchall()
        found: list[Any] = [unpack(d) for _, d in rows]
        live = {fid for fid, _ in rows}  # (a derived pool's id starts with its function's id)
        return found + [unpack(o) for pool_id, o in self._db.execute("SELECT id, overrides FROM derived_pools")
                        if pool_id.split("/")[0].split("~")[0] in live]

    def volume_manifests(self) -> list[str]:
        """The manifest digest of every kept commit of every volume."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT manifest FROM volume_commits").fetchall()]
