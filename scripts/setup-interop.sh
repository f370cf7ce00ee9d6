#!/usr/bin/env bash
# Create .venv-interop (gitignored) with the official x402 Python SDK, pinned and hash-checked,
# for the interop suite (tests/interop.rs drives tests/interop/x402_peer.py from it).
exec "$(dirname "$0")/pinned-venv.sh" .venv-interop scripts/requirements-interop.txt \
  "x402 2.25.0 with web3, FastAPI and uvicorn, about 130 MB" tests/interop/x402_peer.py check
