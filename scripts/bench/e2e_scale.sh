#!/usr/bin/env bash
# Benchmark (not a test): what N linked identities cost the bridge. Runs the ignored test
# tests/bench_scale.rs against a release build: real Synapse and Prosody, N accounts made with
# scripts/world/bulk_accounts.sh and linked through the CLI; reports the idle RSS with none, the
# RSS per idle linked identity (live and after a cold start), the cold start (exec to all
# connected, bridge and Prosody CPU seconds) and the time to exit on SIGTERM.
#
# Usage: bash scripts/bench/e2e_scale.sh [N=1000]
# Env:   CARGO_TARGET_DIR (default <repo>/target)   WORLD_VENV (default <repo>/.world/venv)
#        BENCH_IDLE_SECS (idle time before each RSS reading, 10)
#        BENCH_OUT (optional file for the JSON line)   WORLD_KEEP=1 keeps the world's state dir
#        (bridge/bridge-*.log)   BENCH_HEAPTRACK=<file>: the cold-started bridge runs under
#        heaptrack's preload library (apt install heaptrack) and writes its raw trace there; read it
#        with /usr/lib/heaptrack/libexec/heaptrack_interpret < file | gzip > t.gz; heaptrack_print -f t.gz
# Output: the summary on stderr and one JSON line on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N="${1:-1000}"
case "$N" in ''|*[!0-9]*) echo "usage: e2e_scale.sh [N]" >&2; exit 1 ;; esac

export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
bash "$ROOT/scripts/world/install.sh" >&2

# The bridge and Prosody each hold one socket per login.
WANT_NOFILE=$(( N * 2 + 1024 ))
HARD="$(ulimit -Hn)"
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$WANT_NOFILE" ]; then WANT_NOFILE="$HARD"; fi
[ "$(ulimit -Sn)" -ge "$WANT_NOFILE" ] || ulimit -Sn "$WANT_NOFILE"
[ "$(ulimit -Sn)" -ge $(( N + 256 )) ] || echo "[bench] warning: open-file limit $(ulimit -Sn) is low for $N logins" >&2

cd "$ROOT"
echo "[bench] building the bridge and tests/bench_scale.rs (release)" >&2
cargo build --quiet --release --bin interop-bridge
cargo test --quiet --release --test bench_scale --no-run
echo "[bench] $N identities; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
BENCH_IDENTITIES="$N" \
  cargo test --quiet --release --test bench_scale -- --ignored --nocapture --test-threads 1 \
  | grep '^{'
