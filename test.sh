#!/usr/bin/env bash
# The test suite on a fresh machine: install, then pytest (slow tests excluded; add -m slow).
#   ./test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/install.sh
python -m pytest "$@"
