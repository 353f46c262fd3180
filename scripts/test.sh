#!/usr/bin/env bash
# Run Ferry's whole test suite on this machine: installs what the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test
# The sandbox runtime's tests need bubblewrap, mmdebstrap (Debian root filesystems), uidmap,
# passt (pasta: container networks) and iproute2 (the network tests make a namespace).
missing=""
for tool in bwrap:bubblewrap mmdebstrap:mmdebstrap newuidmap:uidmap pasta:passt ip:iproute2; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
fi
# pasta opens /dev/net/tun as the sandbox's unprivileged root: Debian's default mode is 0666.
if [ -c /dev/net/tun ] && [ "$(id -u)" = 0 ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    chmod 0666 /dev/net/tun
fi
# Debian base root filesystems are built once (~20 s each) and shared by every test server.
export FERRY_BASE_ROOTFS_DIR="${FERRY_BASE_ROOTFS_DIR:-/var/cache/ferry-test}"
export FERRY_HOME="${FERRY_HOME:-$(mktemp -d /tmp/ferry-test-home.XXXXXX)}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
