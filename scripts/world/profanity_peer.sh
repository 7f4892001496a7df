#!/usr/bin/env bash
# Drive profanity (Debian 0.13.1, OMEMO via libsignal-protocol-c: legacy eu.siacs.conversations.axolotl
# only) inside tmux, as a second, independent Signal/OMEMO implementation for cross-checks.
# Needs: WORLD_WITH_PROFANITY=1 bash install.sh ; a running world (up.sh) ; source STATE/world.env
#
#   profanity_peer.sh start JID [PASSWORD]     start, auto-connect, generate OMEMO keys, blind trust
#   profanity_peer.sh send  JID TO TEXT        open chat with TO, /omemo start, send TEXT
#   profanity_peer.sh wait  JID FROM TEXT [S]  wait until a line from FROM (bare JID) with TEXT is in the chat log (decrypted)
#   profanity_peer.sh screen JID               print the current tmux screen
#   profanity_peer.sh stop  JID                /quit, then stop its pid if still there
# State: $WORLD_STATE/profanity/JID/ ; pid file: $WORLD_STATE/pids/profanity-JID.pid (down.sh stops it).
set -euo pipefail
: "${WORLD_STATE:?source STATE/world.env first}"
cmd="${1:?usage: see header}"; JID="${2:?JID}"
D="$WORLD_STATE/profanity/$JID"; SOCK="$D/tmux.sock"; PIDF="$WORLD_STATE/pids/profanity-$JID.pid"
TM=(tmux -S "$SOCK")
keys() { "${TM[@]}" send-keys -t prof -l "$1"; "${TM[@]}" send-keys -t prof Enter; sleep "${2:-0.5}"; }
screen() { "${TM[@]}" capture-pane -p -t prof | grep -v '^\s*$' || true; }
until_screen() {  # regex timeout
  for _ in $(seq 1 $(( ${2:-20} * 10 ))); do screen | grep -q -E "$1" && return 0; sleep 0.1; done
  echo "[profanity_peer] timeout waiting for /$1/" >&2; screen | tail -5 >&2; return 1
}

case "$cmd" in
start)
  PASS="${3:-pw-${JID%%@*}}"
  mkdir -p "$D/config/profanity" "$D/data/profanity" "$D/home" "$WORLD_STATE/pids"
  SERVER="${XMPP_SERVER:-127.0.0.1:5222}"
  # profanity 0.13 publishes its OMEMO device list without publish-options and, if the node does
  # not exist yet, gives up ("can't get OMEMO device list"). Pre-create an empty, open device list.
  "$WORLD_VENV/bin/python" -W ignore - "$JID" "$PASS" "$SERVER" "${XMPP_CA_FILE:-}" <<'EOF'
import asyncio, sys
from pathlib import Path
from slixmpp import ClientXMPP
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ET
jid, pw, server, ca = sys.argv[1:5]
async def main():
    x = ClientXMPP(jid, pw); x.enable_direct_tls = False
    if ca: x.ca_certs = Path(ca)
    x.register_plugin("xep_0060")
    ev = asyncio.Event(); x.add_event_handler("session_start", lambda *_: ev.set())
    h, p = server.rsplit(":", 1); x.connect(h, int(p)); await asyncio.wait_for(ev.wait(), 15)
    node = "eu.siacs.conversations.axolotl.devicelist"
    try:
        await x.plugin["xep_0060"].get_items(jid.split("/")[0], node)
    except Exception:
        f = Form(); f["type"] = "submit"
        f.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
        f.add_field(var="pubsub#access_model", value="open")
        await x.plugin["xep_0060"].publish(jid.split("/")[0], node, "current",
              ET.Element("{eu.siacs.conversations.axolotl}list"), f)
    x.disconnect(); await asyncio.sleep(0.3)
asyncio.run(main())
EOF
  cat > "$D/data/profanity/accounts" <<EOF
[$JID]
enabled=true
jid=$JID
server=${SERVER%:*}
port=${SERVER##*:}
resource=profanity
password=$PASS
tls.policy=trust
EOF
  chmod 600 "$D/data/profanity/accounts"
  : > "$D/profrc"
  "${TM[@]}" new-session -d -s prof -x 200 -y 50 \
    "env HOME='$D/home' XDG_CONFIG_HOME='$D/config' XDG_DATA_HOME='$D/data' profanity -a '$JID' -c '$D/profrc' -f '$D/profanity'"
  sleep 0.3
  "${TM[@]}" list-panes -t prof -F '#{pane_pid}' > "$PIDF"
  until_screen "logged in successfully" 20
  keys "/omemo gen" 0.5; until_screen "OMEMO crytographic materials generated|already generated" 60 || true
  keys "/omemo trustmode blind"
  keys "/omemo log on"
  keys "/logging chat on"   # an empty -c profrc starts with chat logging off; `wait` reads the logs
  echo "[profanity_peer] $JID ready (pid $(cat "$PIDF")); OMEMO $(screen | grep -o 'Device ID is [0-9]*' | tail -1)"
  ;;
send)
  TO="${3:?TO}"; TEXT="${4:?TEXT}"
  keys "/msg $TO" 0.8
  keys "/omemo start" 1.5
  keys "$TEXT" 1
  screen | tail -3
  ;;
wait)
  FROM="${3:?FROM}"; TEXT="${4:?TEXT}"; T="${5:-20}"
  # Chat log lines: "<time> - <bare jid>: <text>" for received, "<time> - me: <text>" for sent ones.
  from_lines() { grep -r -h -F -- " - ${FROM%%/*}: " "$D/data/profanity/chatlogs" 2>/dev/null | grep -F -- "$TEXT"; }
  for _ in $(seq 1 $((T * 10))); do
    if from_lines >/dev/null; then from_lines | tail -1; exit 0; fi
    sleep 0.1
  done
  echo "[profanity_peer] timeout: '$TEXT' from $FROM not in chat logs" >&2; screen | tail -5 >&2; exit 2
  ;;
screen) screen ;;
stop)
  "${TM[@]}" send-keys -t prof "/quit" Enter 2>/dev/null || true
  if [ -f "$PIDF" ]; then
    pid="$(cat "$PIDF")"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -F "$D"; then kill "$pid"; fi
    rm -f "$PIDF"
  fi
  echo "[profanity_peer] $JID stopped"
  ;;
*) echo "unknown command $cmd" >&2; exit 1 ;;
esac
