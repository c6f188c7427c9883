#!/usr/bin/env bash
# Rebuild every paired experiment of the training-side enhancements (suites/experiments/*.toml): trains
# each arm x seed into runs/experiments/NAME/ (resumable: rerun after a kill) and writes the measuring run
# to reports/experiments/NAME/, where `vemi-eval matrix reports/experiments/*` reads it.
# Usage: bash scripts/run_experiments.sh [NAME ...]   (default: all; extra options via $EXPERIMENT_ARGS,
# e.g. EXPERIMENT_ARGS="--ray --address auto" to train the arms as Ray tasks on a cluster)
set -uo pipefail
cd "$(dirname "$0")/.."
VEMI="${VEMI:-.venv/bin/vemi-eval}"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in suites/experiments/*.toml; do names+=("$(basename "$f" .toml)"); done
fi
failed=0
for n in "${names[@]}"; do
  echo "=== experiment $n"
  # shellcheck disable=SC2086
  "$VEMI" experiment run "$n" ${EXPERIMENT_ARGS:-} || { echo "experiment $n: exit $?"; failed=1; }
done
exit $failed
