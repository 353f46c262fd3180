"""The ids a sandbox runs as: a user namespace whose root is an unprivileged host id range.

Every sandbox (containers and image build steps) runs in a user namespace of its own whose
map is `0 SANDBOX_IDS.base SANDBOX_IDS.count` for both uids and gids: uid 0 inside is uid
1,000,000,000 on the host, uid 1000 inside is 1,000,001,000, and host ids outside the range
(host root included) are unmapped inside (they show as `nobody`). The range sits above the
ranges `useradd` hands out in /etc/subuid (SUB_UID_MAX defaults to 600,100,000), so it never
collides with a rootless engine's users. The server (root) writes the map itself, so the
range needs no /etc/subuid entry.

For root inside to own its image, files in image layers are owned by the shifted ids on the
host (Docker's `userns-remap` does the same): a base root filesystem or an unpacked OCI image
is shifted once when it is built (`shift_tree`), build steps write shifted files because they
run in the same user namespace, and layers written before user namespaces existed are
shifted on first use (`ensure_shifted`). A tree is shifted once its top directory is owned by
`base`: `shift_tree` changes the top directory last, so an interrupted shift is resumed.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_CAPABILITY_XATTR = "security.capability"


@dataclass(frozen=True)
class IdRange:
    """`count` host ids from `base`, seen inside a sandbox as 0 .. count-1."""

    base: int
    count: int

    def host(self, inner: int) -> int:
        """The host id of id `inner` inside (ids past the range become the range's nobody)."""
        return self.base + (inner if 0 <= inner < self.count else 65534 % self.count)

    def contains(self, host_id: int) -> bool:
        return self.base <= host_id < self.base + self.count

    def map_line(self) -> str:
        """The uid_map / gid_map content of a sandbox's user namespace."""
        return f"0 {self.base} {self.count}\n"


SANDBOX_IDS: Final[IdRange] = IdRange(base=1_000_000_000, count=65536)
"""Root inside every sandbox is host uid/gid 1,000,000,000 (see the module docstring)."""


def is_shifted(root: Path, ids: IdRange = SANDBOX_IDS) -> bool:
    """Whether the tree at `root` is owned by the sandbox ids (its top directory says)."""
    return os.lstat(root).st_uid == ids.base


def ensure_shifted(root: Path, ids: IdRange = SANDBOX_IDS) -> bool:
    """Shift `root` unless it already is; returns whether it had to."""
    if is_shifted(root, ids):
        return False
    shift_tree(root, ids)
    return True


def shift_tree(root: Path, ids: IdRange = SANDBOX_IDS) -> None:
    """Give every entry under `root` the sandbox ids of its owner (host uid 0 -> `base`, ...).

    Entries already in the range are left alone, so a second run changes nothing. Set-id
    bits and file capabilities, which chown clears, are put back. Symbolic links are changed
    themselves, never followed. The top directory is changed last (see `is_shifted`)."""
    for directory, dirnames, filenames in os.walk(root, topdown=False):
        for name in (*filenames, *dirnames):
            _shift(os.path.join(directory, name), ids)
    _shift(str(root), ids)


def chown_to_sandbox_root(path: Path, ids: IdRange = SANDBOX_IDS) -> None:
    """Make `path` (a directory the host created) owned by root inside sandboxes."""
    os.chown(path, ids.base, ids.base)


def _shift(path: str, ids: IdRange) -> None:
    info = os.lstat(path)
    uid = info.st_uid if ids.contains(info.st_uid) else ids.host(info.st_uid)
    gid = info.st_gid if ids.contains(info.st_gid) else ids.host(info.st_gid)
    if (uid, gid) == (info.st_uid, info.st_gid):
        return
    capability = None
    if stat.S_ISREG(info.st_mode):
        try:
            capability = os.getxattr(path, _CAPABILITY_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
    os.lchown(path, uid, gid)
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(info.st_mode))
    if capability is not None:
        os.setxattr(path, _CAPABILITY_XATTR, capability, follow_symlinks=False)
