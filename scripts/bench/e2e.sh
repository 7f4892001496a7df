#!/usr/bin/env bash
# The end-to-end benchmark (not a test): the bridge in release mode between a real Synapse and a
# real Prosody, a Matrix client and a python-omemo contact, next to the no-bridge baselines in
# the same run. Prints a table on stderr and one JSON object on stdout.
#
# Usage: bash scripts/bench/e2e.sh [messages]      per-message cost and latency, both ways
#                                                  (tests/bench_e2e.rs; env BENCH_* there)
#        bash scripts/bench/e2e.sh megolm          the same through an encrypted portal
#                                                  (tests/bench_megolm.rs; BENCH_MEGOLM=100)
#        bash scripts/bench/e2e.sh scale [N=1000]  N linked identities: RSS each, cold start,
#                                                  SIGTERM (scripts/bench/e2e_scale.sh)
#        bash scripts/bench/e2e.sh compare A B [R=2] two bridge binaries measured in turn, R
#                                                  rounds (scripts/bench/e2e_compare.sh)
# Env:   CARGO_TARGET_DIR (default <repo>/target), BENCH_OUT (a file for the JSON),
#        WORLD_KEEP=1 (keep the world's state dir, with the bridge's log)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MODE="${1:-messages}"
case "$MODE" in
  scale) shift; exec bash "$HERE/e2e_scale.sh" "$@" ;;
  compare) shift; exec bash "$HERE/e2e_compare.sh" "$@" ;;
  messages) TEST=bench_e2e ;;
  megolm) TEST=bench_megolm ;;
  *) echo "usage: e2e.sh [messages | megolm | scale [N] | compare BIN_A BIN_B [ROUNDS]]" >&2; exit 1 ;;
esac

export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
bash "$ROOT/scripts/world/install.sh" >&2
cd "$ROOT"
echo "[bench] building the bridge and tests/$TEST.rs (release)" >&2
cargo build --quiet --release --bin interop-bridge
cargo test --quiet --release --test "$TEST" --no-run
echo "[bench] $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo test --quiet --release --test "$TEST" -- --ignored --nocapture --test-threads 1 \
  | grep '^{'
