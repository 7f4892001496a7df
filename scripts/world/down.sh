#!/usr/bin/env bash
# Stop exactly the processes whose pids up.sh (and profanity_peer.sh) recorded in STATE/pids/*.pid.
# A pid is only signalled if that process's command line still mentions the state dir or this
# folder (guards against a recycled pid). The watcher goes first (so it cannot start a second
# down.sh); then SIGTERM to all others at once, SIGKILL to whatever is left after 20 s.
# Safe to call twice, concurrently, or from the watcher itself.
# Usage: bash scripts/world/down.sh [STATE_DIR]     (default: $WORLD_STATE or <repo>/.world/state)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${1:-${WORLD_STATE:-$ROOT/.world/state}}"
[ -d "$STATE" ] || { echo "[down] no state dir $STATE" >&2; exit 0; }
STATE="$(cd "$STATE" && pwd)"
GRACE="${WORLD_STOP_TIMEOUT:-20}"
shopt -s nullglob

# running PID: the process exists and is not a zombie (an exited child nobody reaped yet)
running() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z ' "/proc/$1/stat" 2>/dev/null; }

# ours PIDFILE: prints the pid if it is running and still ours; otherwise removes the pid file
ours() {
  local f="$1" name pid cmd
  name="$(basename "$f" .pid)"; pid="$(cat "$f" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! running "$pid"; then
    if [ -n "$pid" ]; then echo "[down] $name (pid $pid) not running" >&2; fi
    rm -f "$f"; return 1
  fi
  if [ "$pid" = "$$" ] || [ "$pid" = "$PPID" ]; then  # never signal ourselves or our caller
    rm -f "$f"; return 1
  fi
  cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
  if [[ "$cmd" != *"$STATE"* && "$cmd" != *"$HERE"* ]]; then
    echo "[down] pid $pid ($name) is not ours any more: '$cmd' - leaving it alone, removing $f" >&2
    rm -f "$f"; return 1
  fi
  echo "$pid"
}

# 1. the watcher: it only sleeps, so SIGTERM ends it at once
if [ -f "$STATE/pids/watcher.pid" ] && pid="$(ours "$STATE/pids/watcher.pid")"; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  echo "[down] stopped watcher (pid $pid)"; rm -f "$STATE/pids/watcher.pid"
fi

# 2. everything else, in parallel
declare -A RUNNING=()
for f in "$STATE"/pids/*.pid; do
  name="$(basename "$f" .pid)"
  pid="$(ours "$f")" || continue
  kill -TERM "$pid" 2>/dev/null || true
  RUNNING[$name]="$pid"
done
rc=0
deadline=$((GRACE * 10))
for ((i = 0; i < deadline && ${#RUNNING[@]} > 0; i++)); do
  for name in "${!RUNNING[@]}"; do
    pid="${RUNNING[$name]}"
    if ! running "$pid"; then
      echo "[down] stopped $name (pid $pid)"; rm -f "$STATE/pids/$name.pid"; unset "RUNNING[$name]"
    fi
  done
  if [ "${#RUNNING[@]}" -gt 0 ]; then sleep 0.1; fi
done
for name in "${!RUNNING[@]}"; do
  pid="${RUNNING[$name]}"
  echo "[down] $name (pid $pid) ignored SIGTERM for ${GRACE}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/pids/$name.pid"; rc=1
done
exit $rc
