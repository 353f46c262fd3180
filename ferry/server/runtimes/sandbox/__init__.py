"""Building blocks of the `sandbox` runtime: Linux namespaces (bubblewrap) over Debian roots.

    rootfs   build a Debian root filesystem with mmdebstrap, atomically (one per Python version)
    bwrap    describe a sandbox (overlay layers, binds, env...) and launch it with bubblewrap
    ids      the user namespace's id range (root inside = host uid 1,000,000,000) and the
             shifting of image layers into it
    network  the sandbox's network namespace: pasta for outbound access, or loopback only
    cgroups  per-container memory/CPU limits, OOM detection and cleanup (cgroup v1 and v2)

Requires, on the host: `bubblewrap`, `mmdebstrap`, `passt` and `util-linux` (unshare, setpriv,
mount), root, unprivileged user namespaces, and a kernel with overlayfs.
`bwrap.check_sandbox_support()` and `network.pasta_unavailable_reason()` say what is missing
and how to fix it.
"""
