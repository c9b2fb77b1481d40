#!/usr/bin/env bash
# Set up, then run the main job: synthetic data -> fit -> test -> HTML report (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/trd demo --out "${1:-runs/demo}"
