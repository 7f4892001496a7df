#!/usr/bin/env bash
# Restart only the world's Prosody, keeping its data (accounts, rosters, MAM, PEP) and config.
# SIGTERM to the pid in STATE/pids/prosody.pid (SIGKILL after WORLD_STOP_TIMEOUT s), wait until the
# c2s port is free, optionally stay down PAUSE seconds, start `prosody --config ... -F` again the way
# up.sh does (new pid in STATE/pids/prosody.pid, log appended to STATE/logs/prosody.log), and wait
# until c2s answers a stream header with <stream:features>. Synapse and world.env are not touched.
# Clients see the server go away: their sessions (and XEP-0198 resumption state) are lost.
# Usage: bash scripts/world/restart_prosody.sh STATE [PAUSE_SECONDS]
#        (STATE default: $WORLD_STATE; env WORLD_START_TIMEOUT (60), WORLD_STOP_TIMEOUT (20),
#        WORLD_NOFILE (65536) as in up.sh)
# Prints "prosody restarted: pid OLD -> NEW, down X.XXs" on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${1:-${WORLD_STATE:-}}"
PAUSE="${2:-0}"
[ -n "$STATE" ] && [ -d "$STATE" ] || { echo "usage: restart_prosody.sh STATE [PAUSE_SECONDS]" >&2; exit 1; }
STATE="$(cd "$STATE" && pwd)"
PCFG="$STATE/prosody/prosody.cfg.lua"
PIDF="$STATE/pids/prosody.pid"
[ -f "$PCFG" ] || { echo "[restart] no $PCFG; run up.sh first" >&2; exit 1; }
PORT="$(sed -n "s/^export XMPP_C2S_PORT='\([0-9]*\)'$/\1/p" "$STATE/world.env" 2>/dev/null || true)"
[ -n "$PORT" ] || PORT="$(sed -n 's/^c2s_ports = { \([0-9]*\) }$/\1/p' "$PCFG")"
DOMAIN="$(sed -n "s/^export XMPP_DOMAIN='\(.*\)'$/\1/p" "$STATE/world.env" 2>/dev/null || true)"
DOMAIN="${DOMAIN:-xmpp.test}"
START_TIMEOUT="${WORLD_START_TIMEOUT:-60}"
STOP_TIMEOUT="${WORLD_STOP_TIMEOUT:-20}"
log() { echo "[restart] $*" >&2; }
ts() { date +%s.%N; }
running() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z ' "/proc/$1/stat" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
c2s_answers() {  # a stream header gets <stream:features>
  python3 - "$PORT" "$DOMAIN" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % sys.argv[2]).encode())
buf = b""
while b"</stream:features>" not in buf:
    d = s.recv(4096)
    if not d:
        sys.exit(1)
    buf += d
sys.exit(0)
EOF
}

T0=$(ts)
OLD="$(cat "$PIDF" 2>/dev/null || true)"
if [ -n "$OLD" ] && running "$OLD" && tr '\0' ' ' < "/proc/$OLD/cmdline" | grep -q -F "$STATE"; then
  kill -TERM "$OLD"
  for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do running "$OLD" || break; sleep 0.05; done
  if running "$OLD"; then log "pid $OLD ignored SIGTERM for ${STOP_TIMEOUT}s, SIGKILL"; kill -KILL "$OLD" 2>/dev/null || true; sleep 0.1; fi
else
  log "prosody was not running (pid file: '${OLD}'); starting it"
  OLD="-"
fi
rm -f "$PIDF"
for ((i = 0; i < 100; i++)); do port_open "$PORT" || break; sleep 0.05; done
port_open "$PORT" && { log "127.0.0.1:$PORT still in use by something else"; exit 1; }
if [ "$PAUSE" != 0 ]; then sleep "$PAUSE"; fi

mkdir -p "$STATE/pids" "$STATE/logs"
# same open-file limit as up.sh gives Prosody (WORLD_NOFILE, default 65536, capped at the hard limit)
WANT="${WORLD_NOFILE:-65536}"; HARD="$(ulimit -Hn)"
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$WANT" ]; then WANT="$HARD"; fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$WANT" ]; then ulimit -Sn "$WANT" 2>/dev/null || true; fi
nohup prosody --config "$PCFG" -F >>"$STATE/logs/prosody.log" 2>&1 </dev/null &
NEW=$!
echo "$NEW" > "$PIDF"
T1=$(ts)
until c2s_answers; do
  running "$NEW" || { log "prosody exited; see $STATE/logs/prosody.log and $STATE/prosody/prosody.log"; rm -f "$PIDF"; exit 1; }
  if [ "$(awk -v a="$T1" -v b="$(ts)" -v t="$START_TIMEOUT" 'BEGIN{print (b-a > t)}')" = 1 ]; then
    log "c2s on 127.0.0.1:$PORT not answering after ${START_TIMEOUT}s"; exit 1
  fi
  sleep 0.05
done
echo "prosody restarted: pid $OLD -> $NEW, down $(awk -v a="$T0" -v b="$(ts)" 'BEGIN{printf "%.2f", b-a}')s"
