#!/usr/bin/env bash
# Create .venv-roma01 (gitignored) with pydantic and pytest, hash-pinned from PyPI, for the
# roma-01 integration's tests: tests/roma01.rs runs integrations/roma01/tests with it (pydantic
# models of roma-01's StrategyResponse and decisions, the drop-in against a real buyer + seller).
# Idempotent: does nothing when the venv already holds exactly these pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-roma01
req=scripts/requirements-roma01.txt
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null; then
  echo "setup-roma01: $py (3.10 to 3.13, with venv and ensurepip) is required; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
echo "setup-roma01: creating $venv (pydantic + pytest, about 5 MB from PyPI)" >&2
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --only-binary :all: --require-hashes -r "$req"
"$venv/bin/python" -c 'import pydantic, pytest'
cp "$req" "$stamp"
