#!/usr/bin/env bash
# Idempotent set-up: system packages, a virtual environment in .venv, torch==2.13.0 first
# (the CPU wheel on local disk; anything else pulls gigabytes of CUDA wheels), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VEMI_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
# Reference codecs of the codec suite's yardstick rows (vemi_eval/yardsticks.py).
command -v c2enc >/dev/null 2>&1 || need_apt+=(codec2)
command -v opusenc >/dev/null 2>&1 || need_apt+=(opus-tools)
# Speech for the codec and dialogue corpora: festival with its recorded voices, and a word list.
command -v festival >/dev/null 2>&1 || need_apt+=(festival)
for v in festvox-kallpc16k festvox-kdlpc16k festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-czech-krb \
         festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru \
         festvox-ca-ona-hts festvox-hi-nsk festvox-mr-nsk festvox-te-nsk festvox-us-slt-hts; do
  dpkg -s "$v" >/dev/null 2>&1 || need_apt+=("$v")
done
[ -f /usr/share/dict/american-english ] || need_apt+=(wamerican)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp_src=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$VENV/.vemi-stamp" ] && [ "$(cat "$VENV/.vemi-stamp")" = "$stamp_src" ]; then
  exit 0
fi
echo "[setup] creating $VENV (torch 2.13.0 CPU, evaluators, moshi peer) - a few minutes on a fresh machine"
[ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"
$PIP install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
$VENV/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
$PIP install -e ".[eval,test,moshi-peer]" 2>&1 | grep -v "^WARNING: Location" || true
# The public moshi package pins an old torch: install it without its dependencies (tests compare against it).
$PIP install --no-deps "moshi==0.2.13" 2>&1 | grep -v "^WARNING: Location" || true
$VENV/bin/python -c "import torch, moshi, vemi_eval, reference_model; assert torch.__version__.startswith('2.13.0')"
echo "$stamp_src" > "$VENV/.vemi-stamp"
echo "[setup] ready: $VENV"
