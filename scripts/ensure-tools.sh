#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks for `make demo` and `make test`:
#   cmake            pingora-core builds zlib-ng (libz-ng-sys)
#   nodejs, npm      anvil and solc-js, pinned in devnet/package-lock.json
#   python3-venv     the real-model test's venv (make test only: pass --llm)
#   libgomp1         llama.cpp's OpenMP runtime (make test only: pass --llm)
#   openssl          the test CA of the buyer's TLS seller test (make test only)
# Nothing happens when everything is there. Without apt-get it says what to install and stops.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${1:-}" = "--llm" ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
  ldconfig -p 2>/dev/null | grep -q 'libgomp\.so\.1' || missing+=(libgomp1)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: missing ${missing[*]}; install them with your package manager and run make again" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "ensure-tools: installing ${missing[*]} (apt-get)" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
