#!/usr/bin/env bash
# Install Ferry into ./.venv (created if missing). Extra pip "extras" may be passed, e.g.
#   bash scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."

extras="fast${1:+,$1}"
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 cannot create virtual environments: install python3-venv (apt-get install python3-venv)." >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[${extras}]"
# the sandbox runtime's system packages (installed as root with apt-get, else the command is printed)
bash scripts/system-packages.sh
echo "Ferry installed in $(pwd)/.venv: run .venv/bin/ferry --help" >&2
