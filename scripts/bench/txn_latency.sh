#!/usr/bin/env bash
# Benchmark (not a test): how long the bridge takes to answer Synapse's appservice transactions
# while a Matrix user writes N messages into a portal as fast as Synapse takes them, and how long
# until the python-omemo contact has all of them. Runs the ignored test
# tests/bench_txn_latency.rs (real Synapse + Prosody, the bridge as a child process, Synapse sent
# through scripts/bench/as_proxy.py, which logs each transaction's answer time).
#
# Usage: bash scripts/bench/txn_latency.sh [N=1000] [SENDERS=4]
# Env:   CARGO_TARGET_DIR (default <repo>/target)   BENCH_PROFILE=debug|release (debug)
#        BENCH_BRIDGE_BIN=<path>: measure another build of the bridge (for example an older
#        commit built in its own worktree); default: this tree's, built here
#        BENCH_OUT (optional file for the JSON line)   WORLD_KEEP=1 keeps the world's state dir
#        (bridge/bridge.log, bridge/txns.jsonl: one line per transaction)
# Output: a summary line on stderr and one JSON line on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N="${1:-1000}"
SENDERS="${2:-4}"
case "$N$SENDERS" in *[!0-9]*) echo "usage: txn_latency.sh [N] [SENDERS]" >&2; exit 1 ;; esac
PROFILE="${BENCH_PROFILE:-debug}"
FLAGS=()
[ "$PROFILE" = release ] && FLAGS+=(--release)

export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
bash "$ROOT/scripts/world/install.sh" >&2

cd "$ROOT"
echo "[bench] building the bridge and tests/bench_txn_latency.rs ($PROFILE)" >&2
cargo build --quiet "${FLAGS[@]}" --bin interop-bridge
cargo test --quiet "${FLAGS[@]}" --test bench_txn_latency --no-run
echo "[bench] bridge: ${BENCH_BRIDGE_BIN:-this tree}; $N messages, $SENDERS senders; $(nproc) cores" >&2
BENCH_MESSAGES="$N" BENCH_SENDERS="$SENDERS" \
  cargo test --quiet "${FLAGS[@]}" --test bench_txn_latency -- --ignored --nocapture --test-threads 1 \
  | grep '^{'
