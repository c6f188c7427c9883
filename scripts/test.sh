#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# the README's code blocks keep their aligned comments, so Markdown is not formatted
.venv/bin/ruff format --check --exclude '*.md' .
# -rs: every skipped test is printed with its reason (a skip is never silent)
exec .venv/bin/python -m pytest -q -p no:cacheprovider -rs "$@"
