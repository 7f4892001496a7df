#!/usr/bin/env bash
# Restart only the world's Synapse, keeping its data (SQLite database, media, keys) and config.
# SIGTERM to the pid in STATE/pids/synapse.pid (SIGKILL after WORLD_STOP_TIMEOUT s), wait until its
# port is free, optionally stay down PAUSE seconds, start `python -m synapse.app.homeserver -c ...`
# again the way up.sh does (new pid in STATE/pids/synapse.pid, log appended to
# STATE/logs/synapse.log), and wait until /_matrix/client/versions answers. Prosody and world.env
# are not touched. Appservice transactions Synapse had not sent yet stay in its database.
# Usage: bash scripts/world/restart_synapse.sh STATE [PAUSE_SECONDS]
#        (STATE default: $WORLD_STATE; env WORLD_START_TIMEOUT (60), WORLD_STOP_TIMEOUT (20))
# Prints "synapse restarted: pid OLD -> NEW, down X.XXs" on stdout.
set -euo pipefail
STATE="${1:-${WORLD_STATE:-}}"
PAUSE="${2:-0}"
[ -n "$STATE" ] && [ -d "$STATE" ] || { echo "usage: restart_synapse.sh STATE [PAUSE_SECONDS]" >&2; exit 1; }
STATE="$(cd "$STATE" && pwd)"
HS_CFG="$STATE/synapse/homeserver.yaml"
PIDF="$STATE/pids/synapse.pid"
[ -f "$HS_CFG" ] || { echo "[restart] no $HS_CFG; run up.sh first" >&2; exit 1; }
env_value() { sed -n "s/^export $1='\(.*\)'$/\1/p" "$STATE/world.env" 2>/dev/null || true; }
PORT="$(env_value SYNAPSE_PORT)"
VENV="$(env_value WORLD_VENV)"
[ -n "$PORT" ] && [ -n "$VENV" ] || { echo "[restart] no SYNAPSE_PORT/WORLD_VENV in $STATE/world.env" >&2; exit 1; }
PY="$VENV/bin/python"
START_TIMEOUT="${WORLD_START_TIMEOUT:-60}"
STOP_TIMEOUT="${WORLD_STOP_TIMEOUT:-20}"
log() { echo "[restart] $*" >&2; }
ts() { date +%s.%N; }
running() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z ' "/proc/$1/stat" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

T0=$(ts)
OLD="$(cat "$PIDF" 2>/dev/null || true)"
if [ -n "$OLD" ] && running "$OLD" && tr '\0' ' ' < "/proc/$OLD/cmdline" | grep -q -F "$STATE"; then
  kill -TERM "$OLD"
  for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do running "$OLD" || break; sleep 0.05; done
  if running "$OLD"; then log "pid $OLD ignored SIGTERM for ${STOP_TIMEOUT}s, SIGKILL"; kill -KILL "$OLD" 2>/dev/null || true; sleep 0.1; fi
else
  log "synapse was not running (pid file: '${OLD}'); starting it"
  OLD="-"
fi
rm -f "$PIDF"
for ((i = 0; i < 100; i++)); do port_open "$PORT" || break; sleep 0.05; done
port_open "$PORT" && { log "127.0.0.1:$PORT still in use by something else"; exit 1; }
if [ "$PAUSE" != 0 ]; then sleep "$PAUSE"; fi

mkdir -p "$STATE/pids" "$STATE/logs"
nohup "$PY" -m synapse.app.homeserver -c "$HS_CFG" >>"$STATE/logs/synapse.log" 2>&1 </dev/null &
NEW=$!
echo "$NEW" > "$PIDF"
T1=$(ts)
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/_matrix/client/versions"; do
  running "$NEW" || { log "synapse exited; see $STATE/logs/synapse.log"; rm -f "$PIDF"; exit 1; }
  if [ "$(awk -v a="$T1" -v b="$(ts)" -v t="$START_TIMEOUT" 'BEGIN{print (b-a > t)}')" = 1 ]; then
    log "synapse on 127.0.0.1:$PORT not answering after ${START_TIMEOUT}s"; exit 1
  fi
  sleep 0.1
done
echo "synapse restarted: pid $OLD -> $NEW, down $(awk -v a="$T0" -v b="$(ts)" 'BEGIN{printf "%.2f", b-a}')s"
