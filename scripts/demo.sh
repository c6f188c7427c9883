#!/usr/bin/env bash
# The README's demo command: set up (idempotent), then a quick run of the demo suite on the tiny preset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vemi-eval run demo --quick --out "${1:-runs/demo}"
