#!/usr/bin/env bash
# Local demo of interop-bridge: a Synapse + Prosody test world on 127.0.0.1 with the bridge
# registered as an appservice, a Matrix user demo/demo linked to the XMPP account alice, and
# bob: an OMEMO client (python-omemo) that answers every message, ready to chat with.
#   1. install the world (apt + venv)          scripts/world/install.sh
#   2. cargo build the bridge                  <target dir>/debug/interop-bridge (honours CARGO_TARGET_DIR)
#   3. config + registration in .world/demo/   the config is rewritten each run, the registration keeps its tokens
#   4. interop-bridge check-config
#   5. start the world with the registration   scripts/world/up.sh .world/demo
#   6. register the Matrix user demo/demo
#   7. run the bridge; link @demo to alice@xmpp.test (CLI `link`); start bob, an OMEMO echo peer;
#      Ctrl-C (or the bridge exiting) stops it all
# Fixed ports: Synapse 8008, bridge appservice 29400, XMPP c2s 5222, HTTP 5280, component 5347.
# Works from any cwd; paths are relative to the repository root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/.world/demo"
CFG="$DEMO/config.toml"
REG="$DEMO/registration.yaml"
WORLD="$ROOT/scripts/world"
SYNAPSE_PORT=8008
AS_PORT=29400
# generate-config settings (dotted key paths, see `interop-bridge generate-config --help`)
CONFIG_SET=(
  --set "homeserver.address=http://127.0.0.1:$SYNAPSE_PORT"
  --set "homeserver.domain=localhost"
  --set "appservice.address=http://127.0.0.1:$AS_PORT"
  --set "appservice.listen=127.0.0.1:$AS_PORT"
  --set "network.server=127.0.0.1:5222"
  --set "network.ca_file=$DEMO/prosody/ca/ca.crt"
  --set 'media.allowed_private_hosts=["127.0.0.1"]'   # the demo Prosody's upload service
)
say() { echo "[demo] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
mkdir -p "$DEMO/pids" "$(dirname "$WORLD_VENV")"
WORLD_VENV="$(cd "$(dirname "$WORLD_VENV")" && pwd)/$(basename "$WORLD_VENV")"

if [ -f "$DEMO/pids/bridge.pid" ] && kill -0 "$(cat "$DEMO/pids/bridge.pid")" 2>/dev/null; then
  die "a demo is already running (bridge pid $(cat "$DEMO/pids/bridge.pid")); stop it first (Ctrl-C there, or: bash scripts/world/down.sh .world/demo)"
fi

# ---------- 1. world dependencies ----------
say "installing the test world (apt + venv at $WORLD_VENV)"
bash "$WORLD/install.sh"

# ---------- 2. build ----------
cd "$ROOT"
command -v cargo >/dev/null || { [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"; } \
  || die "cargo not found: install the Rust toolchain (rustup)"
say "cargo build"
cargo build
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/debug/interop-bridge"
[ -x "$BIN" ] || die "no bridge binary at $BIN after cargo build"

# ---------- 3. config (rewritten each run) + registration (its tokens kept between runs) ----------
"$BIN" generate-config "${CONFIG_SET[@]}" > "$CFG.tmp" || { rm -f "$CFG.tmp"; die "generate-config failed"; }
mv "$CFG.tmp" "$CFG"
say "wrote $CFG"
rm -f "$REG.tmp"
[ -s "$REG" ] && cp "$REG" "$REG.tmp"   # generate-registration keeps the tokens of the file it writes
"$BIN" generate-registration -c "$CFG" -o "$REG.tmp" || { rm -f "$REG.tmp"; die "generate-registration failed"; }
mv "$REG.tmp" "$REG"
say "wrote $REG"

# ---------- 4. check ----------
"$BIN" check-config -c "$CFG" || die "check-config failed for $CFG"

# ---------- 5. world ----------
BRIDGE_PID=""
PEER_PID=""
# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$PEER_PID" ]; then kill "$PEER_PID" 2>/dev/null || true; fi
  if [ -n "$BRIDGE_PID" ] && kill -0 "$BRIDGE_PID" 2>/dev/null; then
    say "stopping the bridge (pid $BRIDGE_PID)"
    kill -INT "$BRIDGE_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BRIDGE_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$BRIDGE_PID" 2>/dev/null; then kill -TERM "$BRIDGE_PID" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do kill -0 "$BRIDGE_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$BRIDGE_PID" 2>/dev/null; then kill -KILL "$BRIDGE_PID" 2>/dev/null || true; fi
  fi
  rm -f "$DEMO/pids/bridge.pid"
  say "stopping the world"
  bash "$WORLD/down.sh" "$DEMO" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# leftovers of an earlier demo that was killed hard (its watcher normally cleans up)
bash "$WORLD/down.sh" "$DEMO" >/dev/null 2>&1 || true
# The world starts fresh each run (new Synapse and Prosody data), so the bridge's database of
# an earlier run would not match it (Synapse numbers its transactions from 1 again).
rm -rf "$DEMO/interop-bridge.db" "$DEMO/interop-bridge.sock"
port_open "$AS_PORT" && die "127.0.0.1:$AS_PORT (the bridge's appservice port) is already in use"
say "starting the world"
# Fixed ports/names (not whatever a sourced world.env left in the environment). The watcher
# stops the world (and the bridge, whose pid file is in the same state dir) if this script dies.
SYNAPSE_PORT=$SYNAPSE_PORT MATRIX_SERVER_NAME=localhost XMPP_DOMAIN=xmpp.test \
  XMPP_C2S_PORT=5222 XMPP_HTTP_PORT=5280 XMPP_COMPONENT_PORT=5347 \
  WORLD_SERVICES="synapse prosody" WORLD_XMPP_USERS="alice bob" \
  WORLD_APPSERVICES="$REG" WORLD_WATCH_PID=$$ \
  bash "$WORLD/up.sh" "$DEMO"
# shellcheck disable=SC1091
source "$DEMO/world.env"

# ---------- 6. Matrix user demo/demo ----------
if out="$("$WORLD_VENV/bin/register_new_matrix_user" -c "$SYNAPSE_CONFIG" -u demo -p demo --no-admin "$SYNAPSE_URL" 2>&1)"; then
  say "registered Matrix user @demo:$MATRIX_SERVER_NAME"
elif grep -qi "already taken" <<< "$out"; then
  say "Matrix user @demo:$MATRIX_SERVER_NAME already exists"
else
  echo "$out" >&2; die "could not register the Matrix user demo"
fi

BOT="$(sed -n -E "s/^sender_localpart:[[:space:]]*['\"]?([^'\"[:space:]]+).*/\1/p" "$REG" | head -1)"
BOT="@${BOT:-interopbot}:$MATRIX_SERVER_NAME"
cat <<EOF

================================ interop-bridge demo ================================
Matrix (any client, e.g. Element Desktop):
  homeserver  $SYNAPSE_URL
  user        demo   password demo      (@demo:$MATRIX_SERVER_NAME)
  @demo is linked to the XMPP account alice@$XMPP_DOMAIN. To chat with bob (an OMEMO
  client that answers every message), start a DM with
      @interop_bob=40${XMPP_DOMAIN}:$MATRIX_SERVER_NAME
  or open a DM with the bot $BOT and say: start-chat bob@$XMPP_DOMAIN  (or: help)

XMPP (any client, e.g. Gajim, Conversations, Dino, profanity):
  server      127.0.0.1:5222   domain $XMPP_DOMAIN
  users       alice@$XMPP_DOMAIN / pw-alice     bob@$XMPP_DOMAIN / pw-bob
  TLS         STARTTLS with a self-signed CA; trust this file: $XMPP_CA_FILE
              (or allow the untrusted certificate in the client)

Files:  config $CFG
        registration $REG
        logs $DEMO/logs/ , Synapse: $DEMO/synapse/homeserver.log , Prosody: $DEMO/prosody/prosody.log
Ctrl-C stops the bridge and the world.
=====================================================================================

EOF

# ---------- 7. bridge, link, echo peer ----------
say "running: $BIN run -c $CFG"
"$BIN" run -c "$CFG" &
BRIDGE_PID=$!
echo "$BRIDGE_PID" > "$DEMO/pids/bridge.pid"
for _ in $(seq 1 100); do [ -S "$DEMO/interop-bridge.sock" ] && break; sleep 0.2; done
PW_FILE="$DEMO/alice.password"
printf 'pw-alice\n' > "$PW_FILE"
"$BIN" link -c "$CFG" "@demo:$MATRIX_SERVER_NAME" "alice@$XMPP_DOMAIN" --password-file "$PW_FILE" \
  || die "could not link @demo to alice@$XMPP_DOMAIN"
XMPP_PASSWORD=pw-bob WORLD_STATE="$DEMO" \
  "$WORLD_VENV/bin/python" "$WORLD/omemo_peer.py" --jid "bob@$XMPP_DOMAIN" serve --echo \
  > "$DEMO/logs/bob.jsonl" 2> "$DEMO/logs/bob.log" < /dev/null &
PEER_PID=$!
say "bob (OMEMO echo peer) is running, log $DEMO/logs/bob.log"
rc=0
wait "$BRIDGE_PID" || rc=$?
BRIDGE_PID=""
rm -f "$DEMO/pids/bridge.pid"
say "the bridge exited (status $rc)"
exit "$rc"
