#!/usr/bin/env bash
# The system packages Ferry's sandbox runtime needs on Debian and Ubuntu: bubblewrap
# (sandboxes), mmdebstrap and debian-archive-keyring (Debian root filesystems), uidmap and
# passt (pasta: container networks). Extra packages may be named as arguments (scripts/test.sh
# adds what the tests need). Installs the missing ones when run as root where apt-get exists
# (`apt-get update` first); otherwise prints the one command that installs them. Never fails:
# without these packages Ferry still works, with the process runtime.
#   bash scripts/system-packages.sh [EXTRA_PACKAGE...]
set -uo pipefail

# command or file that shows a package is installed : the package
checks=(bwrap:bubblewrap mmdebstrap:mmdebstrap newuidmap:uidmap pasta:passt
        /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring)
missing=()
for check in "${checks[@]}"; do
    probe="${check%%:*}" package="${check##*:}"
    if [[ "$probe" == /* ]]; then [ -e "$probe" ] && continue; else command -v "$probe" >/dev/null && continue; fi
    missing+=("$package")
done
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "Ferry's sandbox runtime needs: ${missing[*]} (packages of Debian and Ubuntu); install them" \
         "with your package manager to get it, else Ferry uses the process runtime." >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "Ferry's sandbox runtime needs system packages; install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    echo "(until then Ferry uses the process runtime; \`ferry setup\` says which runtime runs)" >&2
    exit 0
fi
echo "Installing the system packages of Ferry's sandbox runtime: ${missing[*]}" >&2
if ! apt-get update -qq; then
    echo "apt-get update failed; install later with: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 0
fi
# one at a time when some do not exist in this release (e.g. passt on older Ubuntu)
available=()
for package in "${missing[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then available+=("$package"); else
        echo "  $package is not available from this machine's apt sources; the sandbox runtime needs it" >&2
    fi
done
if [ ${#available[@]} -gt 0 ] && ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${available[@]}" >/dev/null; then
    echo "apt-get install failed; run: apt-get install -y ${available[*]}" >&2
fi
exit 0
