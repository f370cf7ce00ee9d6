#!/usr/bin/env bash
# The HTTP load harness in one command (`make bench-load` runs this):
#   1. the criterion micro-benchmarks (`cargo bench --bench protocol`), whose means the budget's
#      "local verification per core" line is computed from;
#   2. `cargo bench --bench load`: builds the sidecar in release mode, starts the devnet (anvil),
#      the stand-in upstream, a seller and a buyer sidecar, drives them on loopback and prints one
#      table, also written to benches/RESULTS.md.
# Load is generated in Rust (benches/load/), not with oha: see benches/RESULTS.md.
# Knobs (see benches/load/main.rs): X402_LOAD_SECS, X402_LOAD_WARMUP, X402_LOAD_CONCURRENCY,
# X402_LOAD_PAID, X402_LOAD_PAID_CONCURRENCY, X402_LOAD_SEQ, X402_LOAD_BUYERS, X402_LOAD_RATE,
# X402_LOAD_NO_WRITE, X402_LOAD_KEEP; X402_LOAD_SKIP_PROTOCOL=1 skips step 1 (the last
# criterion results are used).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"

if [ -z "${X402_ANVIL:-}" ] && [ ! -x devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
    echo "benches/load.sh: anvil is missing: run 'make devnet' first (or set X402_ANVIL)" >&2
    exit 1
fi

if [ -z "${X402_LOAD_SKIP_PROTOCOL:-}" ]; then
    echo "[load] criterion micro-benchmarks: $CARGO bench --bench protocol" >&2
    "$CARGO" bench --bench protocol
fi

echo "[load] building and running the load harness: $CARGO bench --bench load" >&2
exec "$CARGO" bench --bench load "$@"
