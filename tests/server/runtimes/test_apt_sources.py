"""Where Debian base root filesystems come from (runtimes/sandbox/apt_sources.py): the host's
own apt sources (one-line and deb822 files, keys, renamed to the wanted suite), a mirror named
by FERRY_DEBIAN_MIRROR, or mmdebstrap's default on a host without Debian sources. Reads a
fake /etc, never the machine's."""

from __future__ import annotations

from pathlib import Path

from ferry.server.runtimes.sandbox import apt_sources, rootfs
from ferry.server.runtimes.sandbox.apt_sources import (
    SourceEntry, host_sources, key_hooks, mirror_sources, parse_deb822, parse_one_line, sources_for,
)


def _etc(tmp_path: Path, os_id: str = "debian", codename: str = "bookworm") -> Path:
    etc = tmp_path / "etc"
    (etc / "apt" / "sources.list.d").mkdir(parents=True)
    (etc / "os-release").write_text(f'PRETTY_NAME="x"\nID={os_id}\nVERSION_CODENAME={codename}\n')
    return etc


def test_one_line_entries_with_options_comments_and_deb_src() -> None:
    text = """
# a comment
deb [arch=amd64 signed-by=/etc/apt/keyrings/m.gpg] http://mirror.lan/debian bookworm main contrib
deb-src http://mirror.lan/debian bookworm main
deb http://mirror.lan/debian-security bookworm-security main  # trailing
deb [enabled=no] http://off.lan/debian bookworm main
"""
    assert parse_one_line(text) == [
        SourceEntry("http://mirror.lan/debian", "bookworm", ("main", "contrib"),
                    (("arch", "amd64"), ("signed-by", "/etc/apt/keyrings/m.gpg"))),
        SourceEntry("http://mirror.lan/debian-security", "bookworm-security", ("main",)),
    ]


def test_deb822_stanzas_expand_uris_and_suites() -> None:
    text = """Types: deb deb-src
URIs: http://a.lan/debian http://b.lan/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://c.lan/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://d.lan/debian
Suites: bookworm
Components: main
Enabled: no
"""
    entries = parse_deb822(text)
    assert [(e.uri, e.suite) for e in entries] == [
        ("http://a.lan/debian", "bookworm"), ("http://a.lan/debian", "bookworm-updates"),
        ("http://b.lan/debian", "bookworm"), ("http://b.lan/debian", "bookworm-updates")]
    assert entries[0].line("trixie") == \
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://a.lan/debian trixie main"


def test_the_hosts_debian_sources_are_renamed_to_the_wanted_suite(tmp_path: Path) -> None:
    etc = _etc(tmp_path)
    (etc / "apt" / "sources.list").write_text(
        "deb http://proxy.lan:3142/debian bookworm main\n"
        "deb http://proxy.lan:3142/debian bookworm-backports main\n")
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://proxy.lan:3142/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    (etc / "apt" / "sources.list.d" / "vendor.list").write_text(
        "deb https://vendor.example/apt cloud-sdk-bookworm main\n")  # not Debian's: left out
    (etc / "apt" / "sources.list.d" / "node.sources").write_text(
        "Types: deb\nURIs: https://node.example/\nSuites: nodistro\nComponents: main\n")
    assert host_sources("trixie", etc) == [
        "deb http://proxy.lan:3142/debian trixie main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://proxy.lan:3142/debian-security "
        "trixie-security main",
    ]
    assert host_sources("sid", etc) == ["deb http://proxy.lan:3142/debian sid main"]
    assert sources_for("bookworm", "", etc)[0] == "deb http://proxy.lan:3142/debian bookworm main"


def test_a_host_using_suite_aliases(tmp_path: Path) -> None:
    etc = _etc(tmp_path)
    (etc / "apt" / "sources.list").write_text("deb http://m.lan/debian stable main\n"
                                              "deb http://m.lan/debian stable-updates main\n")
    assert host_sources("bookworm", etc) == ["deb http://m.lan/debian bookworm main",
                                             "deb http://m.lan/debian bookworm-updates main"]


def test_a_host_that_is_not_debian_leaves_the_choice_to_mmdebstrap(tmp_path: Path) -> None:
    etc = _etc(tmp_path, os_id="ubuntu", codename="noble")
    (etc / "apt" / "sources.list").write_text("deb http://archive.ubuntu.example/ubuntu noble main\n")
    assert host_sources("bookworm", etc) == []
    assert apt_sources.describe([]) == "mmdebstrap's default Debian mirror"


def test_the_mirror_setting_wins(tmp_path: Path) -> None:
    etc = _etc(tmp_path)
    (etc / "apt" / "sources.list").write_text("deb http://host.lan/debian bookworm main\n")
    assert sources_for("bookworm", "http://mine.lan/debian/", etc) == mirror_sources("bookworm", "http://mine.lan/debian")
    assert mirror_sources("bookworm", "http://mine.lan/debian") == [
        "deb http://mine.lan/debian bookworm main", "deb http://mine.lan/debian bookworm-updates main",
        "deb http://mine.lan/debian-security bookworm-security main"]
    assert mirror_sources("sid", "http://mine.lan/debian") == ["deb http://mine.lan/debian sid main"]


def test_keys_outside_packages_are_copied_into_the_root_filesystem(tmp_path: Path) -> None:
    key = tmp_path / "keyrings" / "mirror.gpg"
    key.parent.mkdir()
    key.write_bytes(b"key")
    lines = [f"deb [signed-by={key}] http://m.lan/debian bookworm main",
             "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m.lan/debian bookworm-updates main"]
    assert key_hooks(lines) == [f'--setup-hook=mkdir -p "$1{key.parent}"', f"--setup-hook=copy-in {key} {key.parent}"]


def test_build_base_rootfs_passes_the_sources_and_proxy_to_mmdebstrap(tmp_path: Path, monkeypatch) -> None:
    seen: list[list[str]] = []

    def fake_run(argv, log, sources=()):
        seen.append(argv)
        raise SystemExit  # stop before anything is written

    monkeypatch.setattr(rootfs, "_run_streaming", fake_run)
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(apt_sources, "proxy_options", lambda: ['--aptopt=Acquire::http::Proxy "http://p.lan:3142";'])
    monkeypatch.setenv("FERRY_DEBIAN_MIRROR", "http://mine.lan/debian")
    try:
        rootfs.build_base_rootfs("bookworm", tmp_path / "rootfs-bookworm")
    except SystemExit:
        pass
    argv = seen[0]
    assert '--aptopt=Acquire::http::Proxy "http://p.lan:3142";' in argv
    assert argv[-3:] == mirror_sources("bookworm", "http://mine.lan/debian")
    assert not (tmp_path / "rootfs-bookworm").exists() and not list(tmp_path.iterdir())
