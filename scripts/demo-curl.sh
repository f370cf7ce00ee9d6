#!/usr/bin/env bash
# The raw x402 exchange with curl, on the local devnet: 402 → sign → 200 → replay.
#
#   scripts/demo-curl.sh            (from the repository root)
#
# It starts, in the background and only for the length of the script:
#   1. `x402-sidecar devnet --buyers 1`   anvil (chain id 84532) with the project's EIP-3009 USDC
#                                          at Base Sepolia's USDC address, one funded buyer;
#   2. `x402-sidecar standin`             the labelled stand-in strategy upstream (no model);
#   3. `x402-sidecar run`                 the paywall, POST /x402 at $0.01, with a temporary
#                                          sidecar.yaml written for this devnet;
# then talks to the paywall with curl:
#   (a) POST the seed StrategyRequest without payment → 402, PAYMENT-REQUIRED header (v2) and
#       the v1 JSON body;
#   (b) `x402-sidecar sign --challenge <PAYMENT-REQUIRED>` → a `PAYMENT-SIGNATURE: …` line;
#   (c) POST again with that header → 200, PAYMENT-RESPONSE (settlement receipt), the answer;
#   (d) the same payment again → the stored answer (X-Payment-Replayed: true), no second charge;
# and shows the seller's audit journal for that payment. Everything it started is stopped, and
# every file it wrote deleted, on exit.
#
# Environment (all optional):
#   X402_SIDECAR   the binary (default target/debug/x402-sidecar, built with `cargo build` first)
#   X402_ANVIL     the anvil binary (default: devnet/node_modules/…, installed with `make devnet`)
#   STANDIN_PORT, SIDECAR_PORT   loopback ports (default: free ones)
#
# Needs: bash, curl, base64, python3 (jq is used for pretty JSON when present).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${X402_SIDECAR:-target/debug/x402-sidecar}"

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { printf 'demo-curl: %s\n' "$*" >&2; exit 1; }
pretty() { if command -v jq >/dev/null 2>&1; then jq .; else python3 -m json.tool; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Value of one response header from a `curl -D` dump (case-insensitive name, CR stripped).
header() { grep -i "^$1:" "$2" | head -n1 | cut -d' ' -f2- | tr -d '\r' || true; }

for tool in curl base64 python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [ -z "${X402_SIDECAR:-}" ]; then
  # The default binary is built (or brought up to date: a no-op when it is) from this checkout.
  [ -x "$BIN" ] || say "building x402-sidecar (cargo build)"
  cargo build --quiet --bin x402-sidecar
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
if [ -z "${X402_ANVIL:-}" ] && [ ! -x devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
  say "installing anvil and solc-js (make devnet)"
  make devnet
fi

WORK="$(mktemp -d)"
DEVNET_PID="" STANDIN_PID="" SIDECAR_PID="" ANVIL_PID=""

# Stop one process we started: polite signal, then KILL after 5 s.
stop() {
  local pid="$1" sig="$2"
  [ -n "$pid" ] || return 0
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -s KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
    for log in devnet standin sidecar; do
      [ -s "$WORK/$log.log" ] && { echo "--- last lines of the $log log:" >&2; tail -n 20 "$WORK/$log.log" >&2; }
    done
  fi
  # pingora stops at once on SIGINT (SIGTERM would wait for the grace period); the devnet
  # stops anvil on SIGINT (Ctrl-C); the stand-in has no handler, SIGTERM ends it.
  stop "$SIDECAR_PID" INT
  stop "$STANDIN_PID" TERM
  stop "$DEVNET_PID" INT
  # anvil is the devnet's child; it is gone by now unless the devnet had to be killed.
  stop "$ANVIL_PID" TERM
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for_port() { # port, pid, name
  for _ in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || die "$3 exited early"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 did not listen on 127.0.0.1:$1 within 10 s"
}

# ---------------------------------------------------------------------------------------------
say "1. local devnet: x402-sidecar devnet --buyers 1"
"$BIN" --log-format pretty devnet --buyers 1 >"$WORK/devnet.out" 2>"$WORK/devnet.log" &
DEVNET_PID=$!
for _ in $(seq 1 600); do
  grep -q '^running;' "$WORK/devnet.out" && break
  kill -0 "$DEVNET_PID" 2>/dev/null || { cat "$WORK/devnet.out" >&2; die "the devnet exited early"; }
  sleep 0.1
done
grep -q '^running;' "$WORK/devnet.out" || die "the devnet did not come up within 60 s"
if command -v pgrep >/dev/null 2>&1; then ANVIL_PID="$(pgrep -P "$DEVNET_PID" | head -n1 || true)"; fi

RPC_URL="$(awk '/^devnet RPC/ {print $3}' "$WORK/devnet.out")"
NETWORK="$(awk '/^chain id/ {gsub(/[()]/, "", $4); print $4}' "$WORK/devnet.out")"
USDC="$(awk '/^USDC/ {print $3}' "$WORK/devnet.out")"
PAY_TO="$(awk '/^seller payTo/ {print $3}' "$WORK/devnet.out")"
# The printed `export` lines carry the keys; read them without echoing them.
X402_SETTLER_KEY="$(grep -o 'X402_SETTLER_KEY=0x[0-9a-fA-F]*' "$WORK/devnet.out" | head -n1 | cut -d= -f2)"
X402_BUYER_KEY="$(grep -o 'X402_BUYER_KEY=0x[0-9a-fA-F]*' "$WORK/devnet.out" | head -n1 | cut -d= -f2)"
BUYER="$(awk '/^buyer 0/ {print $3}' "$WORK/devnet.out")"
for v in RPC_URL NETWORK USDC PAY_TO X402_SETTLER_KEY X402_BUYER_KEY BUYER; do
  [ -n "${!v}" ] || die "could not read $v from the devnet's output"
done
export X402_SETTLER_KEY X402_BUYER_KEY
echo "RPC $RPC_URL, network $NETWORK, USDC $USDC"
echo "seller payTo $PAY_TO; buyer $BUYER holds 100 USDC (keys read from the devnet's exports)"

# USDC balance of an address, in atomic units (eth_call balanceOf).
balance() {
  local data="0x70a08231000000000000000000000000${1#0x}"
  curl -sS -X POST -H 'Content-Type: application/json' "$RPC_URL" \
    --data "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_call\",\"params\":[{\"to\":\"$USDC\",\"data\":\"$data\"},\"latest\"]}" |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["result"], 16))'
}

# ---------------------------------------------------------------------------------------------
STANDIN_PORT="${STANDIN_PORT:-$(free_port)}"
say "2. strategy upstream: x402-sidecar standin --listen 127.0.0.1:$STANDIN_PORT"
"$BIN" --log-format pretty standin --listen "127.0.0.1:$STANDIN_PORT" >/dev/null 2>"$WORK/standin.log" &
STANDIN_PID=$!
wait_for_port "$STANDIN_PORT" "$STANDIN_PID" "the stand-in upstream"

# ---------------------------------------------------------------------------------------------
SIDECAR_PORT="${SIDECAR_PORT:-$(free_port)}"
CONFIG="$(mktemp "$WORK/sidecar.XXXXXX.yaml")"
X402_CHALLENGE_SECRET="demo-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export X402_CHALLENGE_SECRET
cat >"$CONFIG" <<EOF
# Written by scripts/demo-curl.sh for the local devnet; deleted on exit.
inbound:
  enabled: true
  listen: 127.0.0.1:$SIDECAR_PORT
  upstream: { url: "http://127.0.0.1:$STANDIN_PORT", timeout_ms: 4000 }
  challenge_secret: \${X402_CHALLENGE_SECRET}
  routes:
    - method: POST
      path: /x402
      description: Trading strategy advice (curl demo)
      price: "\$0.01"
      accepts:
        - network: $NETWORK
          asset: "$USDC"
          pay_to: "$PAY_TO"
          eip712: { name: USDC, version: "2" }
facilitators:
  - network: $NETWORK
    kind: local
    rpc_url: $RPC_URL
    settler: { key_env: X402_SETTLER_KEY }
store: memory
audit: { dir: "$WORK/audit" }
server: { threads: 1, grace_period_seconds: 0 }
EOF
say "3. the sidecar: x402-sidecar run --config <temporary sidecar.yaml>"
"$BIN" check-config --config "$CONFIG" | sed "s|$CONFIG|sidecar.yaml|"
"$BIN" --log-format pretty run --config "$CONFIG" >/dev/null 2>"$WORK/sidecar.log" &
SIDECAR_PID=$!
wait_for_port "$SIDECAR_PORT" "$SIDECAR_PID" "the sidecar"
URL="http://127.0.0.1:$SIDECAR_PORT/x402"
echo "paywall at $URL"

# The seed example StrategyRequest (src/strategy.rs, SEED_EXAMPLE).
REQ="$WORK/request.json"
cat >"$REQ" <<'EOF'
{
  "account": {
"platform": "hyperliquid",
"positions": [
  { "symbol": "ETH-PERP", "size": 1.2, "entryPx": 3150.5 },
  { "symbol": "BTC-PERP", "size": -0.5, "entryPx": 62000 }
],
"balance": { "asset": "USDC", "amount": 2500 }
  },
  "preferences": {
"leverage": 3,
"riskTolerance": "medium",
"timeHorizon": "24h"
  },
  "objectives": "Optimize delta-neutral coverage while preserving upside",
  "symbols": ["ETH-PERP", "BTC-PERP", "BNB-PERP"]
}
EOF

# ---------------------------------------------------------------------------------------------
say "(a) POST /x402 without payment"
echo "\$ curl -si -X POST $URL -H 'Content-Type: application/json' --data-binary @request.json"
status="$(curl -sS -o "$WORK/a.body" -D "$WORK/a.headers" -w '%{http_code}' \
  -X POST "$URL" -H 'Content-Type: application/json' --data-binary @"$REQ")"
echo "HTTP status: $status"
[ "$status" = 402 ] || { cat "$WORK/a.body" >&2; die "expected 402, got $status"; }
echo "Cache-Control: $(header Cache-Control "$WORK/a.headers")"
CHALLENGE="$(header PAYMENT-REQUIRED "$WORK/a.headers")"
[ -n "$CHALLENGE" ] || die "the 402 has no PAYMENT-REQUIRED header"
echo "PAYMENT-REQUIRED header (x402 v2), base64-decoded:"
printf '%s' "$CHALLENGE" | base64 -d | pretty
echo "body (x402 v1 compatible):"
pretty <"$WORK/a.body"

# ---------------------------------------------------------------------------------------------
say "(b) sign it: x402-sidecar sign --challenge \"\$PAYMENT_REQUIRED\"   (buyer key from X402_BUYER_KEY)"
PAYMENT_LINE="$("$BIN" sign --challenge "$CHALLENGE")"
case "$PAYMENT_LINE" in
  "PAYMENT-SIGNATURE: "*) ;;
  *) die "unexpected output from sign: $PAYMENT_LINE" ;;
esac
echo "${PAYMENT_LINE:0:90}…"
echo "decoded payment payload:"
printf '%s' "${PAYMENT_LINE#PAYMENT-SIGNATURE: }" | base64 -d | pretty

seller_before="$(balance "$PAY_TO")"
buyer_before="$(balance "$BUYER")"

# ---------------------------------------------------------------------------------------------
say "(c) POST /x402 again with the payment"
echo "\$ curl -si -X POST $URL -H 'Content-Type: application/json' -H \"\$PAYMENT_LINE\" --data-binary @request.json"
status="$(curl -sS -o "$WORK/c.body" -D "$WORK/c.headers" -w '%{http_code}' \
  -X POST "$URL" -H 'Content-Type: application/json' -H "$PAYMENT_LINE" --data-binary @"$REQ")"
echo "HTTP status: $status"
[ "$status" = 200 ] || { pretty <"$WORK/c.body" >&2 || cat "$WORK/c.body" >&2; die "expected 200, got $status"; }
RECEIPT="$(header PAYMENT-RESPONSE "$WORK/c.headers")"
[ -n "$RECEIPT" ] || die "the 200 has no PAYMENT-RESPONSE header"
echo "X-Request-Id: $(header X-Request-Id "$WORK/c.headers")"
echo "PAYMENT-RESPONSE header (settlement receipt), base64-decoded:"
printf '%s' "$RECEIPT" | base64 -d | pretty
echo "answer:"
pretty <"$WORK/c.body"
seller_paid="$(balance "$PAY_TO")"
buyer_paid="$(balance "$BUYER")"

# ---------------------------------------------------------------------------------------------
say "(d) replay: the same payment and body again"
status="$(curl -sS -o "$WORK/d.body" -D "$WORK/d.headers" -w '%{http_code}' \
  -X POST "$URL" -H 'Content-Type: application/json' -H "$PAYMENT_LINE" --data-binary @"$REQ")"
replayed="$(header X-Payment-Replayed "$WORK/d.headers")"
echo "HTTP status: $status, X-Payment-Replayed: ${replayed:-<absent>}"
[ "$status" = 200 ] || { cat "$WORK/d.body" >&2; die "expected 200 for the replay, got $status"; }
[ "$replayed" = true ] || die "the replay was not served from the store"
if cmp -s "$WORK/c.body" "$WORK/d.body"; then
  echo "the body is byte-for-byte the answer of (c)"
else
  die "the replayed body differs from the paid answer"
fi
if [ "$(header PAYMENT-RESPONSE "$WORK/d.headers")" = "$RECEIPT" ]; then
  echo "the PAYMENT-RESPONSE is the receipt of (c): the same transaction"
else
  die "the replay carries a different PAYMENT-RESPONSE"
fi
seller_after="$(balance "$PAY_TO")"
buyer_after="$(balance "$BUYER")"

fmt() { python3 -c 'import sys; v=int(sys.argv[1]); print(f"{v/1e6:.6f}".rstrip("0").rstrip("."))' "$1"; }
say "balances on chain (USDC): before (c) → after (c) → after the replay (d)"
echo "buyer  $(fmt "$buyer_before") → $(fmt "$buyer_paid") → $(fmt "$buyer_after")"
echo "seller $(fmt "$seller_before") → $(fmt "$seller_paid") → $(fmt "$seller_after")"
[ $((seller_paid - seller_before)) -eq 10000 ] || die "the seller did not receive exactly 0.01 USDC"
if [ "$seller_after" != "$seller_paid" ] || [ "$buyer_after" != "$buyer_paid" ]; then
  die "the replay moved money"
fi
PAYMENT_ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["payment"]["paymentId"])' "$WORK/c.body")"
say "the seller's audit journal: x402-sidecar audit show $PAYMENT_ID"
"$BIN" audit --dir "$WORK/audit" show "$PAYMENT_ID" | cut -c1-160
"$BIN" audit --dir "$WORK/audit" verify | sed "s|$WORK/audit|audit journal|"
say "done: one payment, one charge, the replay got the stored answer; stopping everything"

# ---------------------------------------------------------------------------------------------
# The same exchange with HTTPie (https://httpie.io), once the devnet, the stand-in and the
# sidecar run as above and X402_BUYER_KEY is exported:
#
#   # (a) the 402; --print=hb shows headers and body
#   http --print=hb POST :$SIDECAR_PORT/x402 < request.json
#   CHALLENGE=$(http --headers POST :$SIDECAR_PORT/x402 < request.json \
#                 | grep -i '^payment-required:' | cut -d' ' -f2 | tr -d '\r')
#   echo "$CHALLENGE" | base64 -d | jq .
#
#   # (b) sign: prints "PAYMENT-SIGNATURE: eyJ4…"; HTTPie takes headers as Name:value
#   PAYMENT_LINE=$(target/debug/x402-sidecar sign --challenge "$CHALLENGE")
#   SIG=${PAYMENT_LINE#PAYMENT-SIGNATURE: }
#
#   # (c) pay, (d) replay (same payment, same body: stored answer, X-Payment-Replayed: true)
#   http --print=hb POST :$SIDECAR_PORT/x402 "PAYMENT-SIGNATURE:$SIG" < request.json
#   http --print=hb POST :$SIDECAR_PORT/x402 "PAYMENT-SIGNATURE:$SIG" < request.json
#
# HTTPie sends stdin as the body with Content-Type: application/json.
