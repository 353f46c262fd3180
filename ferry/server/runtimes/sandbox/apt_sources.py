"""Where Debian base root filesystems come from: the host's own apt sources, or a mirror the
administrator names (`FERRY_DEBIAN_MIRROR`).

    FERRY_DEBIAN_MIRROR set       deb URL SUITE main, deb URL SUITE-updates main and
                                  deb URL-security SUITE-security main (Debian's layout, which
                                  mirrors and caching proxies keep); rolling suites: SUITE only
    unset, Debian host            the host's Debian entries of /etc/apt/sources.list and
                                  /etc/apt/sources.list.d/*.list / *.sources (deb822), with the
                                  host's release name replaced by SUITE: the user's mirror,
                                  components and signing keys (`signed-by`)
    unset, other host             no source: mmdebstrap's own default (Debian's archive, with
                                  updates and security for stable releases)

The host's apt proxy (`Acquire::http::Proxy`, `Acquire::https::Proxy`, from `apt-config`)
goes to mmdebstrap as `--aptopt`, since mmdebstrap does not read the host's apt configuration.
Ferry's code names no mirror address.

The choice does not enter any cache key: a base root filesystem is built once per suite
(`rootfs-<suite>`); to rebuild one from another mirror, delete it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROLLING_SUITES = frozenset({"sid", "unstable", "experimental"})
_SUFFIXES = ("", "-updates", "-security")  # a base needs these suites; backports, proposed-updates: not
_ALIASES = ("stable", "oldstable", "testing")


@dataclass(frozen=True)
class SourceEntry:
    """One `deb` source of the host: a URI, a suite, its components and options."""

    uri: str
    suite: str
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()   # e.g. (("signed-by", "/usr/share/keyrings/x.gpg"),)

    def line(self, suite: str | None = None) -> str:
        options = " ".join(f"{key}={value}" for key, value in self.options)
        return " ".join(filter(None, ["deb", f"[{options}]" if options else "", self.uri,
                                      suite or self.suite, *self.components]))


def mirror_sources(suite: str, mirror: str) -> list[str]:
    """The sources of `suite` from the mirror `mirror` (FERRY_DEBIAN_MIRROR)."""
    base = mirror.rstrip("/")
    lines = [f"deb {base} {suite} main"]
    if suite not in ROLLING_SUITES:
        lines += [f"deb {base} {suite}-updates main", f"deb {base}-security {suite}-security main"]
    return lines


def host_sources(suite: str, etc: Path = Path("/etc")) -> list[str]:
    """The host's Debian sources, renamed to `suite`; [] on a host that is not Debian or has
    no Debian source (then mmdebstrap picks its default)."""
    codename = _debian_codename(etc)
    if codename is None:
        return []
    # the host's release by name or by alias: either way the URI serves every release
    wanted = {name + suffix: suite + suffix for name in (codename, *_ALIASES) for suffix in _SUFFIXES}
    if suite in ROLLING_SUITES:
        wanted = {name: suite for name in (codename, *_ALIASES)}
    lines: list[str] = []
    for entry in read_host_entries(etc):
        renamed = wanted.get(entry.suite)
        if renamed is not None:
            line = entry.line(renamed)
            if line not in lines:
                lines.append(line)
    return lines


def sources_for(suite: str, mirror: str = "", etc: Path = Path("/etc")) -> list[str]:
    """mmdebstrap's MIRROR arguments for a base of `suite` (see the module docstring)."""
    return mirror_sources(suite, mirror) if mirror else host_sources(suite, etc)


def proxy_options() -> list[str]:
    """`--aptopt` arguments carrying the host's apt proxies (none when there are none)."""
    if shutil.which("apt-config") is None:
        return []
    try:
        done = subprocess.run(["apt-config", "shell", "HTTP", "Acquire::http::Proxy", "HTTPS",
                               "Acquire::https::Proxy"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    found = dict(re.findall(r"^(HTTPS?)='(.*)'$", done.stdout, re.M))
    options = []
    for name, scheme in (("HTTP", "http"), ("HTTPS", "https")):
        value = found.get(name, "").replace("'\\''", "'")
        if value and value.upper() != "DIRECT" and '"' not in value:
            options.append(f'--aptopt=Acquire::{scheme}::Proxy "{value}";')
    return options


# -- reading the host's files -------------------------------------------------------------
def read_host_entries(etc: Path = Path("/etc")) -> list[SourceEntry]:
    """Every enabled `deb` entry of the host's apt sources, in apt's order."""
    apt = etc / "apt"
    entries: list[SourceEntry] = []
    main = apt / "sources.list"
    if main.is_file():
        entries += parse_one_line(_read(main))
    parts = apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.name.endswith(".list"):
                entries += parse_one_line(_read(path))
            elif path.name.endswith(".sources"):
                entries += parse_deb822(_read(path))
    return entries


def parse_one_line(text: str) -> list[SourceEntry]:
    """Entries of the one-line format: `deb [opt=value ...] URI SUITE COMPONENT...`."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        options: list[tuple[str, str]] = []
        if rest.startswith("["):
            inner, _, rest = rest[1:].partition("]")
            for option in inner.split():
                key, _, value = option.partition("=")
                if key and value:
                    options.append((key, value))
        words = rest.split()
        if len(words) >= 2:
            entries.append(SourceEntry(words[0], words[1], tuple(words[2:]), tuple(options)))
    return [e for e in entries if _enabled(dict(e.options))]


def parse_deb822(text: str) -> list[SourceEntry]:
    """Entries of the deb822 format (`Types:`, `URIs:`, `Suites:`, `Components:`, ...)."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = _fields(stanza)
        if "deb" not in fields.get("types", "").split() or not _enabled(fields):
            continue
        options = tuple((key, fields[key]) for key in ("signed-by", "arch", "trusted") if fields.get(key)
                        and "\n" not in fields[key])  # (an inline key block cannot travel as an option)
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append(SourceEntry(uri, suite, components, options))
    return entries


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for raw in stanza.splitlines():
        if raw.startswith("#"):
            continue
        if raw[:1] in (" ", "\t") and key is not None:  # a continuation line
            fields[key] += "\n" + raw.strip()
            continue
        name, colon, value = raw.partition(":")
        if colon and name.strip():
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


def _enabled(fields: dict[str, str]) -> bool:
    return fields.get("enabled", "yes").lower() not in ("no", "false", "0")


def _debian_codename(etc: Path) -> str | None:
    """The host's Debian release name (`bookworm`), or None on another distribution."""
    release = etc / "os-release"
    if not release.is_file():
        release = Path("/usr/lib/os-release") if etc == Path("/etc") else release
    values = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', _read(release), re.M))
    if values.get("ID") != "debian":
        return None
    return values.get("VERSION_CODENAME") or None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def key_hooks(lines: Sequence[str]) -> list[str]:
    """mmdebstrap hooks that copy the `signed-by` keys of `lines` into the new root filesystem
    (so apt inside images still verifies those sources); keys under /usr/share/keyrings come
    with their packages and are left to them."""
    hooks: list[str] = []
    for key in sorted({m for line in lines for m in re.findall(r"signed-by=(/[^\s\]]+)", line)}):
        if key.startswith("/usr/share/keyrings/") or not Path(key).is_file():
            continue
        folder = str(Path(key).parent)
        hooks += [f'--setup-hook=mkdir -p "$1{folder}"', f"--setup-hook=copy-in {key} {folder}"]
    return hooks


def describe(lines: Sequence[str]) -> str:
    """The sources in one line, for logs and error messages."""
    return "; ".join(lines) if lines else "mmdebstrap's default Debian mirror"
