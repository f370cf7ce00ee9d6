#!/usr/bin/env bash
# Create .venv-roma01 (gitignored) with pydantic and pytest, hash-pinned from PyPI, for the
# roma-01 integration's tests: tests/roma01.rs runs integrations/roma01/tests with it (pydantic
# models of roma-01's StrategyResponse and decisions, the drop-in against a real buyer + seller).
exec "$(dirname "$0")/pinned-venv.sh" .venv-roma01 scripts/requirements-roma01.txt \
  "pydantic + pytest, about 5 MB" -c "import pydantic, pytest"
