#!/usr/bin/env bash
# Run Ferry's whole test suite on this machine: installs what the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test,ray  # ray: the cluster tests start a real multi-node Ray cluster
# The sandbox runtime's packages (install.sh installed them where it could: scripts/system-packages.sh),
# plus iproute2 (the network tests make a namespace) and chromium (the dashboard's browser tests
# drive Debian's Chromium with Playwright, the `test` extra: Playwright's own browser download is not used).
bash scripts/system-packages.sh iproute2 chromium
# pasta opens /dev/net/tun as the sandbox's unprivileged root: Debian's default mode is 0666.
if [ -c /dev/net/tun ] && [ "$(id -u)" = 0 ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    chmod 0666 /dev/net/tun
fi
# Debian base root filesystems are built once (~20 s each) and shared by every test server.
export FERRY_BASE_ROOTFS_DIR="${FERRY_BASE_ROOTFS_DIR:-/var/cache/ferry-test}"
export FERRY_HOME="${FERRY_HOME:-$(mktemp -d /tmp/ferry-test-home.XXXXXX)}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
