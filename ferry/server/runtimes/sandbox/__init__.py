"""Building blocks of the `sandbox` runtime: Linux namespaces (bubblewrap) over Debian roots.

    rootfs   build a Debian root filesystem with mmdebstrap, atomically (one per Python version)
    bwrap    describe a sandbox (overlay layers, binds, env...) and launch it with bubblewrap
    cgroups  per-container memory/CPU limits, OOM detection and cleanup (cgroup v1 and v2)

Requires, on the host: `bubblewrap`, `mmdebstrap` and `util-linux` (unshare, mount), root, and
a kernel with overlayfs. `bwrap.check_sandbox_support()` says what is missing and how to fix it.
"""
