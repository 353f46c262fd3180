"""Every Ferry setting, in one table. Each is read from the environment as `FERRY_<NAME>`.

Settings are read when asked for (never at import time), so tests and the CLI can change the
environment before use. `docs/configuration.md` is generated from this table's docstrings.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {text!r}")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One `FERRY_*` setting: its name, parser, default and meaning."""

    name: str
    parse: Callable[[str], T]
    default: Callable[[], T]
    help: str

    @property
    def env_var(self) -> str:
        return f"FERRY_{self.name.upper()}"

    def get(self) -> T:
        raw = os.environ.get(self.env_var)
        if raw is None or raw == "":
            return self.default()
        try:
            return self.parse(raw)
        except ValueError as exc:
            from .exception import InvalidError

            raise InvalidError(f"{self.env_var}={raw!r} is invalid: {exc}") from None


def _parse_node_runtime(text: str) -> str:
    value = text.strip().lower()
    if value not in ("auto", "sandbox", "process"):
        raise ValueError("expected auto, sandbox or process")
    return value


def _default_home() -> Path:
    return Path.home() / ".ferry"


def _default_node_cache() -> Path:
    return Path(tempfile.gettempdir()) / f"ferry-node-{os.getuid()}"


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("home", lambda v: Path(v).expanduser(), _default_home,
                "Directory holding the server's state (SQLite database, blobs, logs)."),
        Setting("server_url", str, lambda: "",
                "Address of the control plane, `ferry://HOST:PORT`. Empty: the local server "
                "recorded under FERRY_HOME, started on demand."),
        Setting("config_path", lambda v: Path(v).expanduser(), lambda: Path.home() / ".ferry.toml",
                "The client's profiles file (servers and credentials; `ferry profile ...`)."),
        Setting("profile", str, lambda: "",
                "Name of the profile to use. Empty: the profile marked active, else the local server."),
        Setting("token_id", str, lambda: "",
                "Id of the client credential to present (with FERRY_TOKEN_SECRET); overrides profiles."),
        Setting("token_secret", str, lambda: "",
                "Secret of the client credential named by FERRY_TOKEN_ID."),
        Setting("tls_fingerprint", str, lambda: "",
                "SHA-256 fingerprint of the server's TLS certificate that the client pins "
                "(`ferry+tls://` servers with a generated certificate)."),
        Setting("tls_ca", str, lambda: "",
                "CA file the client verifies a `ferry+tls://` server's certificate against, when "
                "no fingerprint is pinned. Empty: the system's CAs."),
        Setting("host", str, lambda: "127.0.0.1",
                "Address `ferry server` binds to. Loopback by default; any other address serves TLS."),
        Setting("tls", str, lambda: "auto",
                "TLS of the server and its gateway: `auto` (on when bound to a non-loopback "
                "address), `on`, or `off` (refused for non-loopback addresses)."),
        Setting("tls_cert", str, lambda: "",
                "Certificate (PEM) the server presents. Empty: one it generates under "
                "FERRY_HOME/tls, whose fingerprint client credentials pin."),
        Setting("tls_key", str, lambda: "", "Private key (PEM) of FERRY_TLS_CERT."),
        Setting("port", int, lambda: 7788, "Port `ferry server` listens on."),
        Setting("autostart", _parse_bool, lambda: True,
                "Start a local server in the background when none is running."),
        Setting("runtime", str, lambda: "auto",
                "Container runtime the server uses: `sandbox` (Linux namespaces over image root "
                "filesystems), `process` (plain subprocesses, one venv per image), `ray` (containers "
                "placed on the nodes of a Ray cluster: FERRY_RAY_ADDRESS, docs/cluster.md), or `auto`: "
                "sandbox where the host supports it, else process."),
        Setting("ray_address", str, lambda: "",
                "`HOST:PORT` of the Ray cluster the `ray` runtime places containers on (the address "
                "`ray start --head` printed). Ray's own settings (RAY_AUTH_MODE, RAY_AUTH_TOKEN...) "
                "apply to the connection."),
        Setting("advertise_url", str, lambda: "",
                "Address of the control plane that containers on other machines connect to "
                "(`ray` runtime), e.g. `ferry+tls://10.0.0.5:7788`. Empty: the server's own URL."),
        Setting("node_runtime", _parse_node_runtime, lambda: "auto",
                "`ray` runtime, on the control plane: how nodes run containers. `auto`: in a sandbox "
                "(as FERRY_RUNTIME=sandbox does on one machine) on nodes where the agent is root and "
                "bubblewrap and pasta are installed, else as a process; `sandbox`: only in sandboxes "
                "(a node that cannot fails the container's start); `process`: always as processes "
                "(steps that need an image root filesystem are refused at app start). docs/cluster.md."),
        Setting("node_cache", lambda v: Path(v).expanduser(), _default_node_cache,
                "On a Ray node (`ray` runtime): the directory where the node keeps the images it built "
                "(venvs, their files and build logs) and containers cache code and volume chunks "
                "fetched from the control plane. Set it in the environment of `ray start`."),
        Setting("node_cache_max_gb", float, lambda: 20.0,
                "On a Ray node (`ray` runtime): the most gigabytes its FERRY_NODE_CACHE may hold. Past it, "
                "the least recently used venvs, image files, code and volume chunks are removed when a "
                "container starts or ends on the node (never one a running container or a build uses). "
                "0: no bound. Set it in the environment of `ray start`."),
        Setting("sandbox_spares", int, lambda: 4,
                "Spare sandboxes the sandbox runtime keeps started ahead of containers (one per kind "
                "of container: image, code, limits), so that the next one starts without waiting for "
                "namespaces, the network and Python. 0: none (every container starts from scratch). "
                "On a sandbox node of the `ray` runtime it bounds that node's spares: set it in the "
                "environment of `ray start`."),
        Setting("zygote", _parse_bool, lambda: True,
                "Process runtime: fork new containers from a template process that has already "
                "imported Ferry (one per interpreter), for faster cold starts. 0: start every "
                "container as a fresh `python -m ferry._container`."),
        Setting("force_build", _parse_bool, lambda: False,
                "Rebuild every image step of the apps this client runs or deploys, ignoring the cache."),
        Setting("base_rootfs_dir", lambda v: Path(v).expanduser(), lambda: get("home") / "images" / "base",
                "Directory of the sandbox runtime's Debian base root filesystems (`rootfs-<suite>`), "
                "built once with mmdebstrap and shared by every image."),
        Setting("debian_mirror", str, lambda: "",
                "Debian mirror URL the sandbox runtime's base root filesystems are built from (its "
                "SUITE, SUITE-updates, and URL-security for SUITE-security). Empty: the host's own "
                "apt sources (mirror, components, signed-by keys) and apt proxy. Changing it does "
                "not rebuild existing bases (delete `rootfs-<suite>` under FERRY_BASE_ROOTFS_DIR)."),
        Setting("python_install_mirror", str, lambda: "",
                "Where `debian_slim(python_version=...)` fetches standalone Python builds for versions "
                "Debian does not ship (uv's UV_PYTHON_INSTALL_MIRROR: a mirror of the "
                "python-build-standalone releases). Empty: uv's default, GitHub's releases."),
        Setting("build_ca_bundle", str, lambda: "/etc/ssl/certs/ca-certificates.crt",
                "Host CA bundle bound read-only into image build steps (SSL_CERT_FILE, PIP_CERT...), "
                "so HTTPS through a TLS-intercepting proxy works while building. Empty: none."),
        Setting("image_build_timeout", float, lambda: 3600.0,
                "Seconds one image build step may run before it is killed."),
        Setting("default_max_containers", int, lambda: max(2, (os.cpu_count() or 1) * 2),
                "Containers per function when `max_containers` is not given."),
        Setting("default_scaledown_window", float, lambda: 60.0,
                "Seconds an idle container is kept when `scaledown_window` is not given."),
        Setting("default_timeout", float, lambda: 300.0,
                "Seconds an input may run when `timeout` is not given."),
        Setting("reconnect_timeout", float, lambda: 60.0,
                "Seconds a client whose connection to the control plane was lost keeps trying to "
                "reconnect (with backoff) before its waiting calls fail; also how long a restarted "
                "server keeps the calls and ephemeral apps of clients that have not come back."),
        Setting("inline_payload_limit", int, lambda: 2 * 1024 * 1024,
                "Payloads up to this many bytes travel inline; larger ones via the blob store."),
        Setting("log_level", str, lambda: "WARNING", "Log level of the server process."),
        Setting("gpus", str, lambda: "",
                "GPU inventory override for the server, e.g. `H100:2,T4:1` (`none`: no GPUs). "
                "Empty: discover the machine's NVIDIA GPUs with NVML, else nvidia-smi."),
        Setting("web_host", str, lambda: "",
                "Address the web gateway binds to. Empty: the same as FERRY_HOST (loopback)."),
        Setting("web_port", int, lambda: 7789,
                "Port of the web gateway (HTTP endpoints). 0 picks a free port. When left at the "
                "default and 7789 is taken, a free port is used (reported by `ferry server status`)."),
        Setting("web_domain", str, lambda: "localhost",
                "Endpoint URLs are `http://LABEL.<web_domain>:PORT/`; browsers resolve `*.localhost` "
                "to loopback."),
        Setting("web_max_body_size", int, lambda: 16 * 1024 * 1024,
                "Largest HTTP request body (and WebSocket message) the gateway accepts, in bytes; "
                "larger requests get 413."),
        Setting("web_request_timeout", float, lambda: 150.0,
                "Seconds the gateway waits for an endpoint to start its response before answering 504."),
        Setting("log_retention_days", float, lambda: 7.0,
                "Days the server keeps an app's log lines (`ferry app logs`); older ones are deleted by "
                "its periodic maintenance pass. 0: no limit by age."),
        Setting("log_retention_mb_per_app", float, lambda: 64.0,
                "MiB of log text the server keeps per app; beyond it the oldest lines are deleted "
                "by its periodic maintenance pass. 0: no limit by size."),
        Setting("gc_grace_seconds", float, lambda: 3600.0,
                "Blobs and volume chunks referenced by nothing are deleted only once this many seconds "
                "have passed since they were last written, uploaded again or reported present to an "
                "uploader (so an upload in progress keeps what it sent)."),
        Setting("maintenance_interval", float, lambda: 600.0,
                "Seconds between the server's maintenance passes (log retention, then garbage collection "
                "of blobs and volume chunks). 0: only on request (`ferry server gc`)."),
        Setting("volume_cache_size", int, lambda: 16 * 1024 ** 3,
                "Bytes of volume file chunks a host keeps in `$FERRY_HOME/volumes/cache` for containers "
                "to fill their volumes from; the least recently used go first beyond it. 0: no limit."),
    ]
}


def is_set(name: str) -> bool:
    """Whether setting `name` was given explicitly in the environment."""
    return bool(os.environ.get(SETTINGS[name].env_var))


def get(name: str):
    """Return the current value of setting `name` (see `SETTINGS`)."""
    return SETTINGS[name].get()


def home() -> Path:
    path: Path = get("home")
    path.mkdir(parents=True, exist_ok=True)
    return path
