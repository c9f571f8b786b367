#!/usr/bin/env bash
# The main job on a fresh machine: install, reproduce every paper on CPU, write the report.
#   ./run.sh [WORKDIR]        (default runs/cpu; the report is WORKDIR/report.md)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/install.sh
python -m reproduce --workdir="${1:-runs/cpu}"
