#!/usr/bin/env bash
# Create .venv-interop (gitignored) with the official x402 Python SDK, pinned and hash-checked,
# for the interop suite (tests/interop.rs drives tests/interop/x402_peer.py from it).
# Idempotent: does nothing when the venv already holds exactly these pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-interop
req=scripts/requirements-interop.txt
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
  echo "setup-interop: $py (3.11 to 3.13, with venv and ensurepip) is required; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
echo "setup-interop: creating $venv (x402 2.25.0 with web3, FastAPI and uvicorn from PyPI, about 130 MB)" >&2
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --only-binary :all: --require-hashes -r "$req"
"$venv/bin/python" tests/interop/x402_peer.py check
cp "$req" "$stamp"
