#!/usr/bin/env bash
# Create a gitignored Python venv from a hash-pinned requirements file:
#   scripts/pinned-venv.sh VENV REQUIREMENTS "WHAT (for the progress line)" CHECK...
# CHECK: the arguments of the venv's python that prove the install (`-c "import a"`, or a
# script with its flags).
# Idempotent: does nothing when the venv already holds exactly these pins. Wheels only,
# --no-deps --require-hashes: nothing but the pinned files is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1 req=$2 what=$3
shift 3
name=$(basename "$venv")
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null; then
  echo "$name: $py (3.11 to 3.13, with venv and ensurepip) is required; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
echo "$name: creating $venv ($what, from PyPI)" >&2
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --only-binary :all: --require-hashes -r "$req"
"$venv/bin/python" "$@"
cp "$req" "$stamp"
