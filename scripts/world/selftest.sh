#!/usr/bin/env bash
# Short self check of the test world alone (no bridge): install -> up (synapse + prosody on free
# ports) -> Synapse /versions -> Prosody c2s stream features -> world.env -> one legacy-OMEMO
# message alice -> bob with omemo_peer.py -> omemo_peer.py serve (both ways, SIGKILL + restart) ->
# file transfer: omemo_peer.py send-file (XEP-0454 aesgcm:// over the https upload) and send-file-plain
# (OOB), matrix_peer.py send-file (encrypted attachment, authenticated media download) ->
# plain xmpp_peer.py echo across restart_prosody.sh ->
# bulk_accounts.sh -> down -> no pid files left; then a Synapse-only world
# that loads an appservice registration (WORLD_APPSERVICES) and is torn down by its watcher
# (WORLD_WATCH_PID). Prints "N passed, N failed"; exit code 0 only if nothing failed.
# Usage: bash scripts/world/selftest.sh [STATE_DIR]   (default: a fresh mktemp dir; WORLD_VENV as for install.sh)
# WORLD_WITH_PROFANITY=1 adds a python-omemo <-> profanity (libsignal-protocol-c) legacy-OMEMO cross-check.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${1:-$(mktemp -d "${TMPDIR:-/tmp}/world-selftest.XXXXXX")}"
if compgen -G "$STATE/pids/*.pid" >/dev/null || compgen -G "$STATE/w2/pids/*.pid" >/dev/null; then
  echo "[selftest] $STATE has pid files; use a clean state dir" >&2; exit 1
fi
mkdir -p "$STATE"; STATE="$(cd "$STATE" && pwd)"
S1="$STATE/w1"; S2="$STATE/w2"; L="$STATE/logs"; mkdir -p "$L"
PASS=0; FAIL=0
ok()  { PASS=$((PASS+1)); echo "[selftest] PASS $*"; }
bad() { FAIL=$((FAIL+1)); echo "[selftest] FAIL $*"; }
ts() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.1f", b-a}'; }
check() {  # what, command...  (PASS/FAIL with the command's duration)
  local what="$1" t0; shift; t0=$(ts)
  if "$@"; then ok "$what ($(el "$t0")s)"; else bad "$what ($(el "$t0")s)"; fi
}
summary() { echo "[selftest] state and logs: $STATE"; echo "$PASS passed, $FAIL failed"; }
WATCHED=""
cleanup() {
  if [ -n "$WATCHED" ]; then kill "$WATCHED" 2>/dev/null || true; fi
  bash "$HERE/down.sh" "$S1" >/dev/null 2>&1 || true
  bash "$HERE/down.sh" "$S2" >/dev/null 2>&1 || true
}
trap cleanup EXIT
T0=$(ts)

t=$(ts)
if bash "$HERE/install.sh" > "$L/install.log" 2>&1; then ok "install ($(el "$t")s)"; else
  bad "install"; tail -5 "$L/install.log"; summary; exit 1; fi

# free ports on 127.0.0.1 (the default ones may be in use, e.g. by the demo)
read -r P_SYN P_C2S P_HTTP P_COMP P_SYN2 P_HTTPS < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# ---------- world 1: synapse + prosody ----------
USERS="alice bob"; if [ "${WORLD_WITH_PROFANITY:-0}" = "1" ]; then USERS="alice bob carol"; fi
t=$(ts)
if SYNAPSE_PORT=$P_SYN XMPP_C2S_PORT=$P_C2S XMPP_HTTP_PORT=$P_HTTP XMPP_HTTPS_PORT=$P_HTTPS XMPP_COMPONENT_PORT=$P_COMP \
   WORLD_SERVICES="synapse prosody" WORLD_XMPP_USERS="$USERS" bash "$HERE/up.sh" "$S1" > "$L/up1.log" 2>&1; then ok "up synapse+prosody ($(el "$t")s)"; else
  bad "up synapse+prosody"; tail -5 "$L/up1.log"; summary; exit 1; fi

envfile_ok() {  # every non-comment line is export KEY='value'; the needed keys are there
  local f="$1"; shift
  ! grep -v -E "^(#.*|export [A-Z0-9_]+='[^']*')$" "$f" || return 1
  for k in "$@"; do grep -q -E "^export $k='" "$f" || { echo "missing $k in $f"; return 1; }; done
}
check "world.env format and keys" envfile_ok "$S1/world.env" SYNAPSE_URL SYNAPSE_CONFIG SYNAPSE_SHARED_SECRET \
  MATRIX_SERVER_NAME XMPP_DOMAIN XMPP_SERVER XMPP_CA_FILE XMPP_HTTPS_PORT XMPP_HTTPS_URL PROSODY_CONFIG WORLD_VENV WORLD_STATE
# shellcheck disable=SC1091
source "$S1/world.env"
PY="$WORLD_VENV/bin/python"

check "synapse /versions answers" curl -sf -o "$L/versions.json" "$SYNAPSE_URL/_matrix/client/versions"
check "synapse runs without appservices" grep -q '"app_service_config_files": \[\]' "$SYNAPSE_CONFIG"

c2s_features() {  # open a c2s stream, expect <stream:features> offering STARTTLS
  python3 - "$XMPP_SERVER" "$XMPP_DOMAIN" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % sys.argv[2]).encode())
buf = b""
while b"</stream:features>" not in buf:
    d = s.recv(4096)
    if not d: break
    buf += d
sys.exit(0 if b"urn:ietf:params:xml:ns:xmpp-tls" in buf else 1)
EOF
}
check "prosody c2s answers (stream features with STARTTLS)" c2s_features

# one legacy OMEMO (eu.siacs.conversations.axolotl) message alice -> bob
t=$(ts)
PEER=("$PY" -W ignore "$HERE/omemo_peer.py")
"${PEER[@]}" --jid "bob@$XMPP_DOMAIN" --password pw-bob recv --count 1 --timeout 40 > "$L/omemo.recv" 2> "$L/omemo.recv.err" &
RP=$!
for _ in $(seq 1 150); do grep -q '"ready"' "$L/omemo.recv" 2>/dev/null && break; sleep 0.1; done
"${PEER[@]}" --jid "alice@$XMPP_DOMAIN" --password pw-alice --ns oldmemo send --to "bob@$XMPP_DOMAIN" \
  --text "selftest oldmemo alice to bob" > "$L/omemo.send" 2> "$L/omemo.send.err" || bad "omemo_peer send"
wait "$RP" || true
if grep '"received"' "$L/omemo.recv" | grep '"eu.siacs.conversations.axolotl"' | grep -q '"body": "selftest oldmemo alice to bob"'; then
  ok "legacy OMEMO alice -> bob ($(el "$t")s)"
else
  bad "legacy OMEMO alice -> bob"; tail -3 "$L/omemo.recv" "$L/omemo.recv.err"
fi

# omemo_peer.py serve: JSON commands/events, a message each way, a bad line, devices, SIGKILL + restart
omemo_serve() {
  "$PY" -W ignore - "$HERE" "$XMPP_DOMAIN" <<'EOF' > "$L/omemo_serve.log" 2>&1
import json, queue, subprocess, sys, threading
here, dom = sys.argv[1:3]
def peer(user):
    p = subprocess.Popen([sys.executable, "-W", "ignore", here + "/omemo_peer.py", "--jid", "%s@%s" % (user, dom),
                          "--password", "pw-" + user, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(json.loads(l)) or print(user, l, end="", flush=True) for l in p.stdout], daemon=True).start()
    return p, q
def wait(q, ev, **kw):
    while True:
        e = q.get(timeout=20)
        if e["event"] == ev and all(e.get(k) == v for k, v in kw.items()):
            return e
def cmd(p, line):
    p.stdin.write(line + "\n"); p.stdin.flush()
(a, aq), (b, bq) = peer("alice"), peer("bob")
ra, rb = wait(aq, "ready"), wait(bq, "ready")
cmd(a, json.dumps({"cmd": "send", "to": "bob@" + dom, "text": "serve one", "id": "sv1"}))
wait(aq, "sent", id="sv1"); wait(bq, "received", id="sv1", body="serve one", device_id=ra["device_id"])
cmd(b, "not json"); wait(bq, "error")
cmd(b, json.dumps({"cmd": "devices", "of": "alice@" + dom})); assert ra["device_id"] in wait(bq, "devices")["device_ids"]
b.kill(); b.wait()
b, bq = peer("bob")
assert wait(bq, "ready")["device_id"] == rb["device_id"]
cmd(b, json.dumps({"cmd": "send", "to": "alice@" + dom, "text": "serve two", "id": "sv2"}))
wait(aq, "received", id="sv2", body="serve two", device_id=rb["device_id"])
cmd(b, '{"cmd":"ping"}'); wait(bq, "pong")
cmd(a, '{"cmd":"quit"}'); cmd(b, '{"cmd":"quit"}')
sys.exit(a.wait(10) or b.wait(10))
EOF
}
check "omemo_peer.py serve: both ways, bad line, devices, SIGKILL + restart" omemo_serve

# file transfer without the bridge: the peers upload and download the way real clients do
head -c 3000000 /dev/urandom > "$L/file.bin"
FILE_SHA="$(sha256sum "$L/file.bin" | cut -d' ' -f1)"
https_upload() {  # the upload component's https answers with the test CA's cert (curl checks it)
  curl -sf --cacert "$XMPP_CA_FILE" -o /dev/null "${XMPP_HTTPS_URL}file_share/"
}
check "prosody https (test CA cert) on XMPP_HTTPS_PORT" https_upload
omemo_files() {  # alice -> bob: send-file (aesgcm:// in OMEMO) and send-file-plain (https + OOB)
  "$PY" -W ignore - "$HERE" "$XMPP_DOMAIN" "$L/file.bin" "$FILE_SHA" <<'EOF' > "$L/omemo_files.log" 2>&1
import json, queue, subprocess, sys, threading
here, dom, path, sha = sys.argv[1:5]
def peer(user):
    p = subprocess.Popen([sys.executable, "-W", "ignore", here + "/omemo_peer.py", "--jid", "%s@%s" % (user, dom),
                          "--password", "pw-" + user, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(json.loads(l)) or print(user, l, end="", flush=True) for l in p.stdout], daemon=True).start()
    return p, q
def wait(q, ev, **kw):
    while True:
        e = q.get(timeout=60)
        if e["event"] == "error" or (e["event"] == ev and all(e.get(k) == v for k, v in kw.items())):
            return e
def cmd(p, **c):
    p.stdin.write(json.dumps(c) + "\n"); p.stdin.flush()
(a, aq), (b, bq) = peer("alice"), peer("bob")
wait(aq, "ready"); wait(bq, "ready")
cmd(a, cmd="send-file", to="bob@" + dom, path=path, name="photo.jpg", id="fe")
s = wait(aq, "file-sent", id="fe")
assert s["event"] == "file-sent" and s["sha256"] == sha and s["url"].startswith("https://") and s["body"].startswith("aesgcm://"), s
r = wait(bq, "received", id="fe")
assert r["body"] == s["body"] and r["file"]["ok"] and r["file"]["sha256"] == sha and r["file"]["encrypted"], r
cmd(a, cmd="send-file-plain", to="bob@" + dom, path=path, id="fp")
s = wait(aq, "file-sent", id="fp")
r = wait(bq, "plain", id="fp")
assert r["body"] == s["url"] and r["file"]["ok"] and r["file"]["sha256"] == sha and not r["file"]["encrypted"], r
cmd(a, cmd="quit"); cmd(b, cmd="quit")
sys.exit(a.wait(10) or b.wait(10))
EOF
}
check "omemo_peer.py send-file (aesgcm://) and send-file-plain (OOB): sha256 matches" omemo_files
matrix_files() {  # an encrypted DM: an encrypted attachment, downloaded with authenticated media
  "$PY" -W ignore - "$HERE" "$S1" "$L/file.bin" "$FILE_SHA" <<'EOF' > "$L/matrix_files.log" 2>&1
import json, queue, subprocess, sys, threading
here, state, path, sha = sys.argv[1:5]
def peer(user):
    p = subprocess.Popen([sys.executable, "-W", "ignore", here + "/matrix_peer.py", "serve", "--state-dir", state,
                          "--user", user], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(json.loads(l)) or print(user, l, end="", flush=True) for l in p.stdout], daemon=True).start()
    return p, q
def wait(q, ev, **kw):
    while True:
        e = q.get(timeout=60)
        if e["event"] == "error" or (e["event"] == ev and all(e.get(k) == v for k, v in kw.items())):
            return e
def cmd(p, **c):
    p.stdin.write(json.dumps(c) + "\n"); p.stdin.flush()
(a, aq), (b, bq) = peer("selftest_a"), peer("selftest_b")
wait(aq, "ready"); rb = wait(bq, "ready")
cmd(a, cmd="create_dm", invite=rb["user_id"], id="dm")
room = wait(aq, "created", id="dm")["room_id"]
cmd(b, cmd="join", room=room, id="j"); wait(bq, "joined", id="j")
cmd(a, cmd="send-file", room=room, path=path, msgtype="m.image", mime="image/jpeg", name="photo.jpg", id="f")
s = wait(aq, "sent", id="f")
assert s["event"] == "sent" and s["encrypted"] and s["sha256"] == sha and "file" in s["content"], s
m = wait(bq, "message", event_id=s["event_id"])
f = m["file"]
assert m["encrypted"] and f["ok"] and f["encrypted"] and f["sha256"] == sha and f["mimetype"] == "image/jpeg", m
cmd(a, cmd="quit"); cmd(b, cmd="quit")
sys.exit(a.wait(10) or b.wait(10))
EOF
}
check "matrix_peer.py send-file (encrypted attachment) and download: sha256 matches" matrix_files

if [ "${WORLD_WITH_PROFANITY:-0}" = "1" ]; then  # python-omemo <-> profanity (libsignal-protocol-c), legacy OMEMO
  PP="$HERE/profanity_peer.sh"; C="carol@$XMPP_DOMAIN"
  if bash "$PP" start "$C" > "$L/profanity.out" 2>&1; then
    ok "profanity start (OMEMO keys, blind trust)"
    "${PEER[@]}" --jid "bob@$XMPP_DOMAIN" --password pw-bob --ns oldmemo send --to "$C" --text "python to profanity" >> "$L/profanity.out" 2>&1 || true
    prof_wait() { bash "$PP" wait "$C" "bob@$XMPP_DOMAIN" "python to profanity" 20 >> "$L/profanity.out" 2>&1; }
    check "legacy OMEMO omemo_peer -> profanity" prof_wait
    "${PEER[@]}" --jid "alice@$XMPP_DOMAIN" --password pw-alice recv --count 1 --timeout 30 > "$L/profanity.recv" 2>/dev/null &
    RP=$!
    for _ in $(seq 1 150); do grep -q '"ready"' "$L/profanity.recv" 2>/dev/null && break; sleep 0.1; done
    bash "$PP" send "$C" "alice@$XMPP_DOMAIN" "profanity to python" >> "$L/profanity.out" 2>&1 || true
    wait "$RP" || true
    check "legacy OMEMO profanity -> omemo_peer" grep -q '"body": "profanity to python"' "$L/profanity.recv"
    bash "$PP" stop "$C" >> "$L/profanity.out" 2>&1 || true
  else
    bad "profanity start"; tail -5 "$L/profanity.out"
  fi
fi

# plain peers (xmpp_peer.py): alice -> bob (--echo) -> alice, then across restart_prosody.sh (queued while down)
peers_across_restart() {
  "$PY" - "$HERE" "$S1" "$XMPP_DOMAIN" <<'EOF' > "$L/xmpp_peer.log" 2>&1
import json, queue, subprocess, sys, threading
here, state, dom = sys.argv[1:4]
def peer(user, *args):
    p = subprocess.Popen([sys.executable, here + "/xmpp_peer.py", "--jid", "%s@%s" % (user, dom), *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(json.loads(l)) or print(user, l, end="", flush=True) for l in p.stdout], daemon=True).start()
    return p, q
def wait(q, ev, **kw):
    while True:
        e = q.get(timeout=20)
        if e["event"] == ev and all(e.get(k) == v for k, v in kw.items()):
            return e
def cmd(p, **c):
    p.stdin.write(json.dumps(c) + "\n"); p.stdin.flush()
(a, aq), (b, bq) = peer("alice"), peer("bob", "--echo")
wait(aq, "ready"); wait(bq, "ready")
to = "bob@%s/peer" % dom
cmd(a, cmd="send", to=to, body="one", id="st1")
wait(aq, "sent", id="st1", acked=True); wait(aq, "message", id="echo-st1", body="echo:one")
r = subprocess.Popen(["bash", here + "/restart_prosody.sh", state, "1"], stdout=sys.stderr)
wait(aq, "disconnected")
cmd(a, cmd="send", to=to, body="two", id="st2")
wait(aq, "queued", id="st2")
assert r.wait() == 0
wait(aq, "reconnected"); wait(aq, "sent", id="st2", acked=True)
wait(aq, "message", id="echo-st2", body="echo:two")
cmd(a, cmd="quit"); cmd(b, cmd="quit")
sys.exit(a.wait(10) or b.wait(10))
EOF
}
check "xmpp_peer.py echo and a message queued across restart_prosody.sh" peers_across_restart
bulk_ok() { bash "$HERE/bulk_accounts.sh" "$S1" 50 > "$L/bulk.log" 2>&1 && bash "$HERE/bulk_accounts.sh" "$S1" 50 >> "$L/bulk.log" 2>&1 \
  && grep -q '0 created, 50 existed' "$L/bulk.log"; }
check "bulk_accounts.sh 50 accounts (twice: idempotent)" bulk_ok

check "down" bash "$HERE/down.sh" "$S1"
no_pids_left() {  # no pid files, no process mentioning the state dir
  ! compgen -G "$1/pids/*.pid" >/dev/null && ! pgrep -f "$1/" >/dev/null
}
check "no pid files or processes left" no_pids_left "$S1"

# ---------- world 2: synapse only, with an appservice registration and a watcher ----------
mkdir -p "$S2"
AS_TOKEN="as_selftest_$RANDOM$RANDOM"
cat > "$S2/registration.yaml" <<EOF
id: selftest
url: null
as_token: $AS_TOKEN
hs_token: hs_selftest_$RANDOM$RANDOM
sender_localpart: selftestbot
rate_limited: false
namespaces:
  users: [{regex: '@selftest_.*', exclusive: true}]
  aliases: []
  rooms: []
io.element.msc4190: true
EOF
sleep 600 & WATCHED=$!
t=$(ts)
if SYNAPSE_PORT=$P_SYN2 WORLD_SERVICES=synapse WORLD_APPSERVICES="$S2/registration.yaml" WORLD_WATCH_PID=$WATCHED \
   bash "$HERE/up.sh" "$S2" > "$L/up2.log" 2>&1; then ok "up synapse only + appservice + watcher ($(el "$t")s)"; else
  bad "up synapse only"; tail -5 "$L/up2.log"
fi
only_synapse() { [ -f "$S2/pids/synapse.pid" ] && [ -f "$S2/pids/watcher.pid" ] && [ ! -e "$S2/pids/prosody.pid" ] \
  && ! grep -q XMPP_ "$S2/world.env"; }
check "synapse-only world: no prosody, no XMPP env" only_synapse
as_register() {  # the appservice can register a user in its namespace (msc4190: inhibit_login)
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $AS_TOKEN" -H 'Content-Type: application/json' \
    -d '{"type":"m.login.application_service","username":"selftest_ghost","inhibit_login":true}' \
    "http://127.0.0.1:$P_SYN2/_matrix/client/v3/register"
}
check "synapse loaded the WORLD_APPSERVICES registration" as_register
kill "$WATCHED"; WATCHED=""
watcher_cleaned() {
  for _ in $(seq 1 300); do no_pids_left "$S2" && return 0; sleep 0.1; done; return 1
}
check "watcher ran down.sh when the watched pid exited" watcher_cleaned

trap - EXIT
echo "[selftest] total $(el "$T0")s"
summary
[ "$FAIL" = 0 ]
