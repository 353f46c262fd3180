"""docs/compatibility.md: for App, Function, Cls, Image, Volume, Secret, FunctionCall, Dict, Queue
and Sandbox, every public name of the pinned reference API (modal 1.6.4,
tests/reference/) is listed as supported, partly supported (how),
failing with a clear error, or missing (why). This test checks the table against Ferry's
objects (a name said to work exists; a clear error raises NotImplementedError naming it; a
missing name is really absent) and the page against the table. The reference is pinned in
tests/reference/.

Regenerate the page after changing the table: `python tests/test_compatibility.py`.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "compatibility.md"
REFERENCE_NAME = "modal-1.6.4-public-api.json"
REFERENCES = [REPO / "tests" / "reference" / REFERENCE_NAME]

OK, PARTIAL, ERROR, MISSING = "supported", "partly supported", "clear error", "not supported"
CLIENT = "the ferry Client it uses (the configured server's, or the one passed as `client=`)"
NO_DASHBOARD = "the dashboard has no page for it"

# name -> (status, note). OK and PARTIAL: the name works (PARTIAL says what is missing). ERROR: it
# exists and raises NotImplementedError naming itself. MISSING: absent (AttributeError).
TABLE: dict[str, dict[str, tuple[str, str]]] = {
    "App": {
        "app_id": (OK, ""),
        "cls": (PARTIAL, "`serialized=True`, `region`, `cloud`, `nonpreemptible` and other placement options are "
                         "refused by name; `enable_memory_snapshot` snapshots on the process and sandbox runtimes, not the ray runtime (docs/snapshots.md)"),
        "deploy": (OK, ""),
        "description": (PARTIAL, "the app's name (no separate description)"),
        "function": (PARTIAL, "placement options (`region`, `cloud`, `nonpreemptible`, ...) are refused by name; "
                              "`enable_memory_snapshot` snapshots on the process and sandbox runtimes, not the ray runtime (docs/snapshots.md)"),
        "get_dashboard_url": (OK, "the app's page on Ferry's dashboard"),
        "get_tags": (ERROR, "apps have no tags"),
        "include": (OK, "`inherit_tags` has nothing to inherit (no tags)"),
        "info": (ERROR, "use `ferry app show NAME --json`"),
        "local_entrypoint": (OK, ""),
        "logs": (ERROR, "use `ferry app logs NAME`"),
        "lookup": (PARTIAL, "`create_if_missing=True` creates an empty deployed app (not from inside a container); no `environment_name`"),
        "name": (OK, ""),
        "registered_classes": (OK, ""),
        "registered_entrypoints": (OK, ""),
        "registered_functions": (OK, ""),
        "registered_web_endpoints": (OK, ""),
        "run": (OK, "`detach=True` too"),
        "sandboxes": (ERROR, "use `Sandbox.list(app_id=app.app_id)`"),
        "server": (ERROR, "`@app.server` is not built; use `@web_server` on a function"),
        "set_tags": (ERROR, "apps have no tags"),
        "stats": (ERROR, "use `ferry app show NAME` or the dashboard"),
        "stop": (OK, ""),
    },
    "Function": {
        "app": (OK, ""),
        "autoscaler": (ERROR, "use `update_autoscaler()`"),
        "client": (OK, CLIENT),
        "experimental_spawn_map": (ERROR, "one FunctionCall for many inputs is not built; use `spawn_map()` or `spawn()`"),
        "for_each": (OK, ""),
        "from_id": (PARTIAL, "calls go to that id; `remote_gen` needs `from_name`, which learns the function's kind"),
        "from_name": (PARTIAL, "no `environment_name`"),
        "get_current_stats": (OK, "`backlog`, `num_total_runners` (and `running_inputs`)"),
        "get_dashboard_url": (OK, "its app's page"),
        "get_web_url": (OK, "the path-based URL `http://127.0.0.1:PORT/_/LABEL/`, reachable by any HTTP client"),
        "hydrate": (OK, ""),
        "info": (ERROR, "use `ferry app show APP --json`"),
        "local": (OK, ""),
        "logs": (ERROR, "use `ferry app logs APP --function NAME`"),
        "map": (OK, "ordered or not, `return_exceptions`"),
        "metrics": (ERROR, "see the dashboard and `ferry run --profile`"),
        "object_id": (OK, ""),
        "remote": (OK, ""),
        "remote_gen": (OK, ""),
        "spawn": (OK, "durable across server restarts"),
        "spawn_map": (OK, "each input stored by the server before it returns"),
        "starmap": (OK, ""),
        "stats": (ERROR, "use `get_current_stats()`"),
        "update_autoscaler": (OK, ""),
        "with_batching": (OK, "on `@batched` functions"),
        "with_concurrency": (OK, ""),
        "with_options": (OK, "`image=` too (the server builds it for the variant); `region`/`cloud` are refused"),
    },
    "Cls": {
        "client": (OK, CLIENT),
        "from_name": (PARTIAL, "no `environment_name`"),
        "get_dashboard_url": (OK, "its app's page"),
        "hydrate": (OK, ""),
        "object_id": (OK, ""),
        "with_batching": (OK, "on classes with a `@batched` method"),
        "with_concurrency": (OK, ""),
        "with_options": (OK, "`image=` too"),
    },
    "Image": {
        "add_local_dir": (OK, ""),
        "add_local_file": (OK, ""),
        "add_local_python_source": (OK, ""),
        "apt_install": (OK, ""),
        "build": (OK, "builds on the server now (as `ferry image build`); `app` is not needed"),
        "client": (OK, CLIENT),
        "cmd": (ERROR, "containers run Ferry's own entrypoint"),
        "debian_slim": (PARTIAL, "Python 3.11 (bookworm) and 3.13 (trixie): Debian's own Pythons"),
        "dockerfile_commands": (ERROR, "use `run_commands`, `env`, `workdir`, or `from_dockerfile`"),
        "entrypoint": (ERROR, "containers run Ferry's own entrypoint"),
        "env": (OK, ""),
        "from_aws_ecr": (ERROR, "use `from_registry` (skopeo)"),
        "from_dockerfile": (OK, ""),
        "from_gcp_artifact_registry": (ERROR, "use `from_registry` (skopeo)"),
        "from_id": (ERROR, "images have no server-side ids; `ferry image list` shows their keys"),
        "from_name": (ERROR, "images are not published by name"),
        "from_registry": (PARTIAL, "OCI archives, layouts and registries through skopeo; no `secret=` / `add_python=`"),
        "from_scratch": (ERROR, "every image is a Debian root filesystem"),
        "get_dashboard_url": (ERROR, NO_DASHBOARD),
        "hydrate": (ERROR, "images build when an app runs or deploys, or with `build()`"),
        "imports": (OK, ""),
        "logs": (ERROR, "use `ferry image logs KEY`"),
        "micromamba": (ERROR, "conda environments are not built"),
        "micromamba_install": (ERROR, "conda environments are not built"),
        "object_id": (ERROR, "images have no server-side ids"),
        "pip_install": (OK, ""),
        "pip_install_from_pyproject": (OK, ""),
        "pip_install_from_requirements": (OK, ""),
        "pip_install_private_repos": (ERROR, "use `pip_install(index_url=...)` or `run_commands` with `secrets=`"),
        "pipe": (ERROR, "compose images by chaining their methods"),
        "poetry_install_from_file": (ERROR, "use `pip_install_from_pyproject`"),
        "publish": (ERROR, "images are not published by name"),
        "run_commands": (OK, ""),
        "run_function": (OK, ""),
        "shell": (ERROR, "containers run Ferry's own entrypoint"),
        "uv_pip_install": (OK, ""),
        "uv_sync": (ERROR, "use `uv_pip_install`"),
        "workdir": (OK, ""),
    },
    "Volume": {
        "batch_upload": (OK, ""),
        "client": (OK, CLIENT),
        "commit": (OK, ""),
        "copy_files": (OK, ""),
        "ephemeral": (PARTIAL, "`client=` and `version=`; `environment_name` and `create_options` are refused"),
        "from_id": (OK, ""),
        "from_name": (PARTIAL, "`client=`, `create_if_missing`, `version`; no `environment_name` or `create_options`"),
        "get_dashboard_url": (ERROR, NO_DASHBOARD + "; use `ferry volume ls NAME`"),
        "hydrate": (OK, ""),
        "info": (PARTIAL, "`name` and `created_at` (no `created_by`)"),
        "iterdir": (OK, ""),
        "listdir": (OK, ""),
        "name": (OK, ""),
        "object_id": (OK, ""),
        "objects": (OK, "`create`, `list`, `delete`"),
        "read_file": (OK, ""),
        "read_file_into_fileobj": (OK, ""),
        "read_only": (OK, ""),
        "reload": (OK, ""),
        "remove_file": (OK, ""),
        "rename": (OK, ""),
        "with_mount_options": (PARTIAL, "`read_only`; `sub_path` raises NotImplementedError"),
    },
    "Secret": {
        "client": (OK, CLIENT),
        "from_dict": (OK, ""),
        "from_dotenv": (OK, ""),
        "from_local_environ": (OK, ""),
        "from_name": (PARTIAL, "`required_keys`; no `environment_name`"),
        "get_dashboard_url": (ERROR, NO_DASHBOARD),
        "hydrate": (ERROR, "a missing secret fails `ferry run` / `ferry deploy` before any container starts"),
        "info": (ERROR, "use `ferry secret list`"),
        "name": (OK, ""),
        "object_id": (ERROR, "secrets are referred to by name"),
        "objects": (ERROR, "use `ferry secret create / list / delete`"),
        "update": (ERROR, "use `ferry secret create NAME ... --force`"),
    },
    "FunctionCall": {
        "cancel": (OK, ""),
        "client": (OK, CLIENT),
        "from_id": (OK, ""),
        "gather": (OK, ""),
        "get": (OK, "`index=0` only (one input per call)"),
        "get_call_graph": (ERROR, "the control plane does not record which call started which"),
        "get_dashboard_url": (ERROR, NO_DASHBOARD),
        "hydrate": (OK, ""),
        "iter": (PARTIAL, "the one output of a spawned call"),
        "logs": (ERROR, "use `ferry app logs APP`"),
        "num_inputs": (OK, "1 (a spawned call)"),
        "object_id": (OK, ""),
    },
    "Dict": {},   # complete: filled in below
    "Queue": {},  # complete
    "Sandbox": {
        "client": (ERROR, "a sandbox uses the process's own connection"),
        "create": (PARTIAL, "image, env, secrets, volumes, workdir, timeout (default 5 min, at most 24 h), cpu, memory, "
                            "gpu, block_network, tags, name; ports and tunnels, CIDR/domain allowlists, `pty`, "
                            "`idle_timeout`, readiness probes, snapshots, `region`/`cloud`/`runtime` are refused by name"),
        "create_connect_token": (ERROR, "sandbox HTTP connect tokens are not built"),
        "detach": (ERROR, "a handle holds nothing to detach from"),
        "exec": (PARTIAL, "stdout/stderr as PIPE, DEVNULL or STDOUT, stdin, `workdir`, `env`, `timeout`, `text`, "
                          "`pty`; `secrets=` is refused (pass them to `create`)"),
        "filesystem": (ERROR, "use `exec` or a Volume"),
        "from_id": (OK, "the entrypoint's output so far is readable"),
        "from_name": (PARTIAL, "no `environment_name`"),
        "get_dashboard_url": (ERROR, NO_DASHBOARD),
        "get_tags": (OK, ""),
        "hydrate": (OK, ""),
        "list": (OK, "running sandboxes, newest first"),
        "logs": (ERROR, "read `stdout`/`stderr`"),
        "mount_image": (ERROR, "images are fixed at creation"),
        "object_id": (OK, ""),
        "poll": (OK, ""),
        "reload_volumes": (ERROR, "volumes are filled when a sandbox starts (and committed when it ends)"),
        "returncode": (OK, "124 after a timeout, 137 after terminate, as on the reference platform"),
        "set_tags": (OK, ""),
        "snapshot_directory": (ERROR, "snapshots are not built"),
        "snapshot_filesystem": (ERROR, "snapshots are not built"),
        "stderr": (OK, "the entrypoint's"),
        "stdin": (OK, "the entrypoint's"),
        "stdout": (OK, "the entrypoint's"),
        "terminate": (OK, "`wait=True` too"),
        "tunnels": (ERROR, "tunnels are not built"),
        "unmount_image": (ERROR, "images are fixed at creation"),
        "wait": (OK, "SandboxTimeoutError / SandboxTerminatedError as on the reference platform"),
        "wait_until_ready": (ERROR, "readiness probes are not built"),
    },
}
DESCRIPTIONS = {
    "Dict": "Complete (durable in the control plane; see docs/architecture.md, Dicts and queues).",
    "Queue": "Complete (durable in the control plane; see docs/architecture.md, Dicts and queues).",
    "Sandbox": "Sandboxes run on the server's runtime like function containers (docs/sandboxes.md).",
}


def reference() -> dict[str, Any]:
    for path in REFERENCES:
        if path.exists():
            return json.loads(path.read_text())
    pytest.skip(f"the pinned reference {REFERENCE_NAME} is not available")


def full_table(ref: dict[str, Any]) -> dict[str, dict[str, tuple[str, str]]]:
    table = {cls: dict(rows) for cls, rows in TABLE.items()}
    for cls in ("Dict", "Queue"):
        table[cls] = {name: (OK, "") for name in ref["classes"][cls]["members"]}
    return table


def render(ref: dict[str, Any]) -> str:
    table = full_table(ref)
    lines = [
        "# Compatibility with the reference API",
        "",
        f"Ferry's coverage of the public names of the reference client (modal {ref['version']}) on the",
        "objects real programs use most. **Works** counts names that are supported or partly",
        "supported; **clear error** counts names that exist and raise a `NotImplementedError` naming",
        "themselves and why; the rest are absent (an `AttributeError`). Generated from the table in",
        "`tests/test_compatibility.py`, which checks it against Ferry's objects.",
        "",
        "| object | names | works | clear error | not supported | works or clear error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    totals = [0, 0, 0, 0]
    for cls, rows in table.items():
        counts = [len(rows), sum(s in (OK, PARTIAL) for s, _ in rows.values()),
                  sum(s == ERROR for s, _ in rows.values()), sum(s == MISSING for s, _ in rows.values())]
        totals = [a + b for a, b in zip(totals, counts)]
        lines.append(f"| {cls} | {counts[0]} | {counts[1]} | {counts[2]} | {counts[3]} | "
                     f"{_percent(counts[1] + counts[2], counts[0])} |")
    lines.append(f"| **all** | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]} | "
                 f"**{_percent(totals[1] + totals[2], totals[0])}** |")
    lines += ["", f"Names that work: {_percent(totals[1], totals[0])} of {totals[0]}.", ""]
    for cls, rows in table.items():
        lines += [f"## {cls}", ""]
        if cls in DESCRIPTIONS:
            lines += [DESCRIPTIONS[cls], ""]
            if cls in ("Dict", "Queue"):
                lines += ["Supported: " + ", ".join(f"`{n}`" for n in rows) + ".", ""]
                continue
        for status in (OK, PARTIAL, ERROR, MISSING):
            names = [(n, note) for n, (s, note) in rows.items() if s == status]
            if not names:
                continue
            lines.append(f"**{status.capitalize()}**")
            lines.append("")
            lines += [f"- `{n}`" + (f": {note}" if note else "") for n, note in names]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _objects() -> dict[str, Any]:
    """One Ferry object of each kind, made without a server."""
    import ferry

    app = ferry.App("compatibility")

    @app.function(serialized=True)
    def function() -> None:
        pass

    @app.cls()
    class Model:
        @ferry.method()
        def predict(self) -> None:
            pass

    return {"App": app, "Function": function, "Cls": Model, "Image": ferry.Image.debian_slim(),
            "Volume": ferry.Volume.from_name("compatibility"), "Secret": ferry.Secret.from_dict({}),
            "FunctionCall": ferry.FunctionCall("fc-0"), "Dict": ferry.Dict.from_name("compatibility"),
            "Queue": ferry.Queue.from_name("compatibility"), "Sandbox": ferry.Sandbox}


_ABSENT = object()


def _static(obj: Any, name: str) -> Any:
    """The attribute without running properties (some ask the server)."""
    if obj is None:
        return _ABSENT
    found = inspect.getattr_static(obj, name, _ABSENT)
    return found.__func__ if isinstance(found, (staticmethod, classmethod)) else found


def test_table_lists_exactly_the_reference_names():
    ref = reference()
    for cls, rows in full_table(ref).items():
        assert sorted(rows) == sorted(ref["classes"][cls]["members"]), cls


@pytest.mark.parametrize("cls", list(TABLE))
def test_table_matches_ferry(cls: str):
    ref = reference()
    obj = _objects()[cls]
    for name, (status, _) in full_table(ref)[cls].items():
        found = _static(obj, name)
        if status == MISSING:
            assert found is _ABSENT, f"{cls}.{name} exists now: update its row in TABLE"
            continue
        assert found is not _ABSENT, f"{cls}.{name} is listed as {status} but does not exist"
        marked = getattr(getattr(found, "fget", found), "_ferry_unsupported", False)
        if status == ERROR and not marked:
            with pytest.raises(NotImplementedError, match=name):
                _call(obj, name)
        elif status != ERROR:
            assert not marked, f"{cls}.{name} raises NotImplementedError: list it as {ERROR}"


def _call(obj: Any, name: str) -> Any:
    return getattr(obj, name)()


def test_the_page_is_generated_from_the_table():
    assert PAGE.read_text() == render(reference()), "regenerate it: python tests/test_compatibility.py"


if __name__ == "__main__":
    PAGE.write_text(render(reference()))
    print(f"wrote {PAGE}", file=sys.stderr)
