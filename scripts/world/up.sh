#!/usr/bin/env bash
# Start the test world: Synapse and/or Prosody, all on 127.0.0.1, all state under one state dir.
# Writes pid files to STATE/pids/ and STATE/world.env (source it, or parse its `export KEY='value'`
# lines). Stop with down.sh STATE. Starts only what isn't already running (re-runs are cheap).
#
# Usage: bash scripts/world/up.sh [STATE_DIR]     (default: $WORLD_STATE or <repo>/.world/state)
# Env:   WORLD_SERVICES ("synapse prosody")  which services to start; "synapse" or "prosody" alone work
#        WORLD_APPSERVICES (none)  colon-separated appservice registration files Synapse loads
#        WORLD_WATCH_PID           when this pid is gone, a detached watcher runs down.sh STATE
#        WORLD_VENV (<repo>/.world/venv)   WORLD_START_TIMEOUT (60 s per service)
#        SYNAPSE_PORT (8008)  MATRIX_SERVER_NAME (localhost)
#        XMPP_DOMAIN (xmpp.test)  XMPP_C2S_PORT (5222)  XMPP_HTTP_PORT (5280)  XMPP_COMPONENT_PORT (5347)
#        XMPP_HTTPS_PORT (5281)  https (test CA cert) where the XEP-0363 upload slots point
#        XMPP_C2S_DIRECT_TLS_PORT (none)  a c2s port with direct TLS (XEP-0368), for SRV tests
#        XMPP_COMPONENT_SECRET (interop-component-secret)
#        WORLD_XMPP_USERS ("alice bob") -> accounts USER@XMPP_DOMAIN with password pw-USER
#        WORLD_NOFILE (65536)  soft open-file limit for Prosody (capped at the hard limit)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${1:-${WORLD_STATE:-$ROOT/.world/state}}"
mkdir -p "$STATE"; STATE="$(cd "$STATE" && pwd)"
VENV="${WORLD_VENV:-$ROOT/.world/venv}"
if [ -d "$(dirname "$VENV")" ]; then VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"; fi
PY="$VENV/bin/python"

SERVICES="${WORLD_SERVICES:-synapse prosody}"
WANT_SYNAPSE=0; WANT_PROSODY=0
for s in $SERVICES; do
  case "$s" in
    synapse) WANT_SYNAPSE=1 ;;
    prosody) WANT_PROSODY=1 ;;
    *) echo "[up] unknown service '$s' in WORLD_SERVICES (known: synapse prosody)" >&2; exit 1 ;;
  esac
done
[ "$WANT_SYNAPSE$WANT_PROSODY" != "00" ] || { echo "[up] WORLD_SERVICES is empty" >&2; exit 1; }

SYNAPSE_PORT="${SYNAPSE_PORT:-8008}"
SERVER_NAME="${MATRIX_SERVER_NAME:-localhost}"
XMPP_DOMAIN="${XMPP_DOMAIN:-xmpp.test}"
C2S_PORT="${XMPP_C2S_PORT:-5222}"
DIRECT_TLS_PORT="${XMPP_C2S_DIRECT_TLS_PORT:-}"
HTTP_PORT="${XMPP_HTTP_PORT:-5280}"
HTTPS_PORT="${XMPP_HTTPS_PORT:-5281}"
COMP_PORT="${XMPP_COMPONENT_PORT:-5347}"
COMP_SECRET="${XMPP_COMPONENT_SECRET:-interop-component-secret}"
USERS="${WORLD_XMPP_USERS-alice bob}"
TIMEOUT="${WORLD_START_TIMEOUT:-60}"
WATCH_PID="${WORLD_WATCH_PID:-}"
PIDS="$STATE/pids"; mkdir -p "$PIDS" "$STATE/logs"

ts() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.2f", b-a}'; }
log() { echo "[up] $*" >&2; }
# alive NAME: its pid file names a running process whose command line still mentions the state dir
alive() {
  local p; p="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 1
  kill -0 "$p" 2>/dev/null && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -F "$STATE"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
STARTED=()
fail() {
  log "FAILED: $*"
  for n in "${STARTED[@]}"; do   # stop only what this run started
    p="$(cat "$PIDS/$n.pid" 2>/dev/null || true)"
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
    rm -f "$PIDS/$n.pid"
  done
  exit 1
}
wait_for() {  # name, check-command...
  local name="$1"; shift; local t0; t0=$(ts)
  while ! "$@"; do
    alive "$name" || fail "$name exited; see $STATE/logs/$name.log and its own log"
    [ "$(awk -v a="$t0" -v b="$(ts)" -v t="$TIMEOUT" 'BEGIN{print (b-a > t)}')" = 1 ] && fail "$name not answering after ${TIMEOUT}s"
    sleep 0.1
  done
}
start() {  # name, command...  (background, own pid recorded; no inherited stdio so callers' pipes close)
  local name="$1"; shift
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! > "$PIDS/$name.pid"; STARTED+=("$name")
}
# raise_nofile: soft open-file limit of this shell (and so of what it starts) up to WORLD_NOFILE
# (default 65536), at most the hard limit. Warns when that leaves fewer than 2048.
raise_nofile() {
  local want="${WORLD_NOFILE:-65536}" hard soft
  hard="$(ulimit -Hn)"; soft="$(ulimit -Sn)"
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want="$hard"; fi
  if [ "$soft" != unlimited ] && [ "$soft" -lt "$want" ]; then ulimit -Sn "$want" 2>/dev/null || true; fi
  soft="$(ulimit -Sn)"
  if [ "$soft" != unlimited ] && [ "$soft" -lt 2048 ]; then
    log "warning: open-file limit $soft (hard $hard): Prosody can serve at most ~$((soft - 50)) clients"
  fi
  return 0
}
q() {  # single-quote a value for world.env; refuse values that would need escaping
  case "$1" in *"'"*|*$'\n'*) log "value with a quote or newline not supported in world.env: $1"; exit 1 ;; esac
  printf "'%s'" "$1"
}
q "$STATE" >/dev/null; q "$VENV" >/dev/null

ENV_LINES=(
  "WORLD_STATE=$(q "$STATE")"
  "WORLD_SERVICES=$(q "$SERVICES")"
)

# ---------- Synapse ----------
if [ "$WANT_SYNAPSE" = 1 ]; then
  [ -x "$PY" ] || { log "no venv at $VENV; run scripts/world/install.sh (same WORLD_VENV) first"; exit 1; }
  AS_ARGS=(); AS_ABS=()
  IFS=':' read -r -a AS_LIST <<< "${WORLD_APPSERVICES:-}"
  for f in "${AS_LIST[@]}"; do
    [ -n "$f" ] || continue
    [ -f "$f" ] || { log "appservice registration $f (from WORLD_APPSERVICES) does not exist"; exit 1; }
    f="$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"; q "$f" >/dev/null
    AS_ARGS+=(--appservice "$f"); AS_ABS+=("$f")
  done
  AS_JOINED="$(IFS=':'; echo "${AS_ABS[*]}")"
  "$PY" "$HERE/gen_synapse.py" --state-dir "$STATE" --server-name "$SERVER_NAME" --port "$SYNAPSE_PORT" \
    "${AS_ARGS[@]}" >/dev/null
  HS_CFG="$STATE/synapse/homeserver.yaml"
  CFG_SUM="$(sha256sum "$HS_CFG" | cut -d' ' -f1)"
  if alive synapse; then
    log "synapse already running (pid $(cat "$PIDS/synapse.pid"))"
    # Synapse reads its config (and the appservice registrations) only at start.
    [ "$(cat "$STATE/synapse/started-config.sha256" 2>/dev/null || true)" = "$CFG_SUM" ] \
      || log "warning: homeserver.yaml changed since Synapse started (ports/appservices?); run down.sh first to apply it"
  else
    rm -f "$PIDS/synapse.pid"
    port_open "$SYNAPSE_PORT" && fail "127.0.0.1:$SYNAPSE_PORT already in use by something else"
    t=$(ts)
    start synapse "$PY" -m synapse.app.homeserver -c "$HS_CFG"
    echo "$CFG_SUM" > "$STATE/synapse/started-config.sha256"
    wait_for synapse curl -sf -o /dev/null "http://127.0.0.1:$SYNAPSE_PORT/_matrix/client/versions"
    log "synapse up on 127.0.0.1:$SYNAPSE_PORT in $(el "$t")s (pid $(cat "$PIDS/synapse.pid"))"
  fi
  SHARED_SECRET="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["registration_shared_secret"])' "$STATE/synapse/secrets.json")"
  ENV_LINES+=(
    "MATRIX_SERVER_NAME=$(q "$SERVER_NAME")"
    "SYNAPSE_PORT=$(q "$SYNAPSE_PORT")"
    "SYNAPSE_URL=$(q "http://127.0.0.1:$SYNAPSE_PORT")"
    "SYNAPSE_CONFIG=$(q "$HS_CFG")"
    "SYNAPSE_SHARED_SECRET=$(q "$SHARED_SECRET")"
    "WORLD_APPSERVICES=$(q "$AS_JOINED")"
  )
fi

# ---------- Prosody ----------
if [ "$WANT_PROSODY" = 1 ]; then
  command -v prosody >/dev/null || { log "prosody not installed; run scripts/world/install.sh"; exit 1; }
  python3 "$HERE/gen_prosody.py" --state-dir "$STATE" --domain "$XMPP_DOMAIN" --c2s-port "$C2S_PORT" \
    --c2s-direct-tls-port "${DIRECT_TLS_PORT:-0}" \
    --http-port "$HTTP_PORT" --https-port "$HTTPS_PORT" --component-port "$COMP_PORT" --component-secret "$COMP_SECRET" >/dev/null
  PCFG="$STATE/prosody/prosody.cfg.lua"
  if alive prosody; then log "prosody already running (pid $(cat "$PIDS/prosody.pid"))"; else
    rm -f "$PIDS/prosody.pid"
    for p in "$C2S_PORT" "$HTTP_PORT" "$HTTPS_PORT" "$COMP_PORT"; do port_open "$p" && fail "127.0.0.1:$p already in use"; done
    t=$(ts)
    raise_nofile  # one fd per c2s client: benchmarks with ~1000 clients need more than the usual 1024
    start prosody prosody --config "$PCFG" -F
    wait_for prosody port_open "$C2S_PORT"
    wait_for prosody port_open "$HTTPS_PORT"   # the upload slots' https (bound at start-up, like c2s)
    if [ -n "$DIRECT_TLS_PORT" ]; then wait_for prosody port_open "$DIRECT_TLS_PORT"; fi
    log "prosody up on 127.0.0.1:$C2S_PORT in $(el "$t")s (pid $(cat "$PIDS/prosody.pid"), open files $(ulimit -Sn))"
  fi
  for u in $USERS; do
    prosodyctl --config "$PCFG" register "$u" "$XMPP_DOMAIN" "pw-$u" >/dev/null 2>&1 \
      || fail "prosodyctl register $u@$XMPP_DOMAIN"
  done
  ENV_LINES+=(
    "XMPP_DOMAIN=$(q "$XMPP_DOMAIN")"
    "XMPP_SERVER=$(q "127.0.0.1:$C2S_PORT")"
    "XMPP_C2S_PORT=$(q "$C2S_PORT")"
    "XMPP_DIRECT_TLS_SERVER=$(q "${DIRECT_TLS_PORT:+127.0.0.1:$DIRECT_TLS_PORT}")"
    "XMPP_CA_FILE=$(q "$STATE/prosody/ca/ca.crt")"
    "XMPP_HTTP_URL=$(q "http://127.0.0.1:$HTTP_PORT/")"
    "XMPP_HTTPS_PORT=$(q "$HTTPS_PORT")"
    "XMPP_HTTPS_URL=$(q "https://127.0.0.1:$HTTPS_PORT/")"
    "XMPP_UPLOAD_JID=$(q "upload.$XMPP_DOMAIN")"
    "XMPP_COMPONENT_JID=$(q "bridge.$XMPP_DOMAIN")"
    "XMPP_COMPONENT_PORT=$(q "$COMP_PORT")"
    "XMPP_COMPONENT_SECRET=$(q "$COMP_SECRET")"
    "PROSODY_CONFIG=$(q "$PCFG")"
    "XMPP_USERS=$(q "$USERS")"
  )
fi
ENV_LINES+=("WORLD_VENV=$(q "$VENV")")

# ---------- watcher: run down.sh once WORLD_WATCH_PID is gone ----------
if [ -n "$WATCH_PID" ]; then
  case "$WATCH_PID" in *[!0-9]*) fail "WORLD_WATCH_PID must be a pid, got '$WATCH_PID'" ;; esac
  if alive watcher; then  # replace an older watcher (it may watch another pid)
    kill "$(cat "$PIDS/watcher.pid")" 2>/dev/null || true
  fi
  rm -f "$PIDS/watcher.pid"
  # Detached (own session: survives Ctrl-C / SIGHUP of the caller's process group). It writes its
  # own pid (setsid may fork). Before it runs down.sh it removes its pid file and execs down.sh,
  # so down.sh never signals the process that is running it.
  # shellcheck disable=SC2016  # $$ and $0/$1.. are expanded by the watcher's own bash
  setsid nohup bash -c '
    echo $$ > "$1/pids/watcher.pid"
    while kill -0 "$3" 2>/dev/null && ! grep -qE "^[0-9]+ \(.*\) Z " "/proc/$3/stat" 2>/dev/null; do sleep 1; done
    echo "[watcher] pid $3 is gone, running down.sh $1 at $(date +%T)"
    rm -f "$1/pids/watcher.pid"
    exec bash "$2/down.sh" "$1"
  ' world-watcher "$STATE" "$HERE" "$WATCH_PID" >"$STATE/logs/watcher.log" 2>&1 </dev/null &
  for _ in $(seq 1 50); do [ -s "$PIDS/watcher.pid" ] && break; sleep 0.02; done
  [ -s "$PIDS/watcher.pid" ] || log "warning: watcher did not report its pid"
  log "watcher (pid $(cat "$PIDS/watcher.pid" 2>/dev/null || echo '?')) runs down.sh when pid $WATCH_PID is gone"
fi

# ---------- env file for tests: `export KEY='value'` lines only ----------
{
  echo "# generated by scripts/world/up.sh; source this file (or parse the export KEY='value' lines)"
  for l in "${ENV_LINES[@]}"; do echo "export $l"; done
} > "$STATE/world.env.tmp"
mv "$STATE/world.env.tmp" "$STATE/world.env"

if [ "$WANT_SYNAPSE" = 1 ]; then
  echo "synapse   http://127.0.0.1:$SYNAPSE_PORT  server_name=$SERVER_NAME  pid=$(cat "$PIDS/synapse.pid")"
  echo "          appservices: ${AS_JOINED:-(none)}"
fi
if [ "$WANT_PROSODY" = 1 ]; then
  echo "prosody   c2s 127.0.0.1:$C2S_PORT  http 127.0.0.1:$HTTP_PORT  https 127.0.0.1:$HTTPS_PORT  component 127.0.0.1:$COMP_PORT  domain=$XMPP_DOMAIN  pid=$(cat "$PIDS/prosody.pid")"
  echo "xmpp users: $(for u in $USERS; do printf '%s@%s/pw-%s ' "$u" "$XMPP_DOMAIN" "$u"; done)"
fi
echo "env: source $STATE/world.env    stop: bash $HERE/down.sh $STATE"
