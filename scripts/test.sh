#!/usr/bin/env bash
# Run Ferry's whole test suite on this machine: installs what the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test
export FERRY_HOME="${FERRY_HOME:-$(mktemp -d /tmp/ferry-test-home.XXXXXX)}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
