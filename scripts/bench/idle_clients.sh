#!/usr/bin/env bash
# Benchmark (not a test): RSS per idle connected XMPP client and the connect rate, against a local
# Prosody with N accounts. Self-contained: installs the test world, starts a Prosody-only world on
# free ports in a temp state dir, creates bench1..benchN, raises the open-file limit, builds
# crates/xmpp-omemo/examples/idle_clients.rs in release, runs it, prints its results and stops the world again.
#
# Usage: bash scripts/bench/idle_clients.sh [N=1000] [C=50] [-- extra example args, e.g. --idle 10]
# Env:   CARGO_TARGET_DIR (default <repo>/target)   BENCH_OUT (optional file for the JSON line)
#        BENCH_KEEP=1 keeps the state dir (logs) after the run
#        BENCH_GDB_TRIM=0: don't measure again after glibc's malloc_trim(0) (called through gdb,
#        when gdb is installed; safe Rust cannot call it)
# Output: the example's summary (stderr) and one JSON line (stdout); exit 1 if a client failed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N="${1:-1000}"; [ $# -gt 0 ] && shift
C="${1:-50}"; [ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
case "$N$C" in *[!0-9]*) echo "usage: idle_clients.sh [N] [C] [-- example args]" >&2; exit 1 ;; esac
log() { echo "[bench] $*" >&2; }

bash "$ROOT/scripts/world/install.sh" >&2

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
log "building examples/idle_clients (release, target dir $TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet -p xmpp-omemo --example idle_clients)
BIN="$TARGET/release/examples/idle_clients"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/interop-bench-XXXXXX")"
cleanup() {
  bash "$ROOT/scripts/world/down.sh" "$STATE" >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = "1" ]; then log "state kept in $STATE"; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Both the bench process and Prosody hold one socket per client (up.sh warns below 2 x N).
WANT_NOFILE=$(( N + 1024 > 65536 ? N + 1024 : 65536 ))
HARD="$(ulimit -Hn)"
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$WANT_NOFILE" ]; then WANT_NOFILE="$HARD"; fi
ulimit -Sn "$WANT_NOFILE"
[ "$(ulimit -Sn)" -ge $(( N + 64 )) ] || log "warning: open-file limit $(ulimit -Sn) is low for $N clients"

WORLD_SERVICES=prosody WORLD_WATCH_PID=$$ WORLD_NOFILE="$WANT_NOFILE" \
  XMPP_C2S_PORT="$(free_port)" XMPP_HTTP_PORT="$(free_port)" XMPP_COMPONENT_PORT="$(free_port)" \
  bash "$ROOT/scripts/world/up.sh" "$STATE" >/dev/null
# shellcheck disable=SC1091
source "$STATE/world.env"
bash "$ROOT/scripts/world/bulk_accounts.sh" "$STATE" "$N" bench >&2
PROSODY_PID="$(cat "$STATE/pids/prosody.pid")"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
log "Prosody pid $PROSODY_PID, RSS $(rss_kib "$PROSODY_PID") KiB; open files $(ulimit -Sn); $(nproc) cores"
EXTRA=()
if [ "${BENCH_GDB_TRIM:-1}" = "1" ] && command -v gdb >/dev/null; then EXTRA+=(--gdb-trim); fi
log "running: idle_clients $N $C ${EXTRA[*]} $*"

set +e
PROSODY_PID="$PROSODY_PID" "$BIN" "$N" "$C" "${EXTRA[@]}" "$@" > "$STATE/result.json"
RC=$?
set -e
log "Prosody RSS after the run (clients closed): $(rss_kib "$PROSODY_PID") KiB"
cat "$STATE/result.json"
if [ -n "${BENCH_OUT:-}" ]; then cp "$STATE/result.json" "$BENCH_OUT"; fi
exit "$RC"
