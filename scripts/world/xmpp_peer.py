#!/usr/bin/env python3
"""Plain (unencrypted) XMPP peer for tests, driven by JSON lines on stdin (slixmpp).

Runs as a long-lived child process: it connects as --jid to the world's Prosody, reads one JSON
command per line on stdin and writes one JSON event per line on stdout ({"event": ...}). Logs go
to stderr. It reconnects by itself when the server goes away, and it never drops a message it
was told to send: the message waits until the server has acknowledged it (XEP-0198).

Commands (stdin, one JSON object per line; unknown fields are ignored):
  {"cmd":"send","to":JID,"body":TEXT,"id":ID}   message of type chat (or "type": normal|headline)
                with stanza id ID (default: a generated one). Reply: "sent" once the server
                acked it (XEP-0198), or "queued" first when the peer is offline at the moment.
  {"cmd":"presence"}               available presence; optional "show" (away|chat|dnd|xa),
                                   "status", "priority", "type" (e.g. unavailable), "to" (directed)
  {"cmd":"subscribe","to":JID}     roster add (optional "name") + <presence type=subscribe/>
  {"cmd":"approve","jid":JID}      <presence type=subscribed/> to JID (accept its request)
  {"cmd":"deny","jid":JID}         <presence type=unsubscribed/> to JID
  {"cmd":"roster"}                 fetch the full roster from the server -> "roster" event
  {"cmd":"ping"}                   no network; answers {"event":"pong"} (sync point for tests)
  {"cmd":"drop"}                   abort the TCP connection (tests the reconnect/resume path)
  {"cmd":"quit"}                   wait up to --quit-wait s for unacked messages, then close the
                                   stream and exit 0. EOF on stdin does the same.
  presence/subscribe/approve/deny answer {"event":"ok","cmd":...}; errors {"event":"error",...}.
  Every command may carry "tag": it is copied into the command's reply (ok/sent/queued/roster/
  pong/error).

Events (stdout):
  ready        {"jid","sm"}  after the first session start, the roster fetch and the initial
               presence. "sm": XEP-0198 stream management is on (acks are real).
  message      {"from","to","id","type","body"} (+ "delay" stamp for offline/delayed messages,
               + "error" condition for type=error). Only messages with a body or of type error.
  presence     {"from","type","show","status","priority"}  type: available|unavailable|error|probe
  subscription {"from","type"}  type: subscribe (a request; see --auto-approve) | subscribed |
               unsubscribe | unsubscribed
  approved     {"jid","auto": true}  with --auto-approve, after answering a request
  roster_push  {"items":[...]}   server roster push (an item changed; subscription "remove" = gone)
  roster       {"items":[{"jid","name","subscription","ask","groups"}]}  answer to "roster"
  sent         {"id","to","acked"}  acked=true: the server acknowledged it (XEP-0198);
               acked=false: only written to the socket (server without stream management)
  queued       {"id","to"}   send while offline: held, sent after the reconnect
  echoed       {"id","to"}   --echo queued the echo of a received message (then "sent" follows)
  disconnected {"reason"}    the connection is gone (the peer reconnects unless quitting)
  reconnected  {"jid","resumed","resent"}  online again: resumed=true means the XEP-0198 session
               was resumed (presence/roster state kept); false means a new session (roster
               fetched and presence sent again). resent: queued/unacked messages sent again.
  unacked      {"ids"}  at quit: messages the server never acknowledged
  timeout      {"stage"}  no "ready" within --timeout (exit 2)
  error        {"error"}  fatal (auth failed: exit 1) or a bad command (the peer keeps running)

Delivery: at least once. A message whose ack was lost with the connection is sent again after
the reconnect (same id), so the receiver may see a duplicate; de-duplicate by id.

Options --echo: every received chat/normal message with a body (not our own echoes) is sent
back to its sender with body "echo:"+body and id "echo-"+id. --auto-approve: answer every
subscription request with subscribed (and --subscribe-back: also subscribe to the requester).

Environment: XMPP_SERVER (host:port, default 127.0.0.1:5222), XMPP_CA_FILE (the world's
test CA, trusted for STARTTLS), XMPP_PASSWORD. Source STATE/world.env first.
Without --password: $XMPP_PASSWORD, else the world's convention pw-<localpart>.

Example:
  source /tmp/w/world.env
  python3 xmpp_peer.py --jid bob@xmpp.test --echo          # in one terminal
  python3 xmpp_peer.py --jid alice@xmpp.test               # in another, then type:
  {"cmd":"send","to":"bob@xmpp.test","body":"hi","id":"m1"}
Exit codes: 0 ok (quit or EOF), 1 error (auth, TLS, bad arguments), 2 timeout (no ready).
"""
import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional

from slixmpp.clientxmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.stanza import Iq, Message, Presence
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("xmpp_peer")


def out(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def roster_items(iq: Iq) -> list:
    items = []
    for jid, item in iq["roster"]["items"].items():
        items.append({"jid": str(jid), "name": item["name"] or None, "subscription": item["subscription"],
                      "ask": item["ask"] or None, "groups": sorted(item["groups"])})
    return items


class Peer(ClientXMPP):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__(a.jid, a.password)
        self.a = a
        self.online = False          # stream negotiated (and SM enabled/resumed) and not yet lost
        self.sm_on = False
        self.started = False         # first session done ("ready" sent)
        self.quitting = False
        self.fatal: Optional[str] = None
        self.ready = asyncio.Event()
        # id -> {"to","body","type","written","tag"}: every message not yet acked by the server
        self.pending: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self.acked = asyncio.Event()
        self.auto_authorize = None   # never answer subscription requests by the library itself
        self.auto_subscribe = False
        for ev, h in (("stream_negotiated", self.on_negotiated), ("session_resumed", self.on_resumed),
                      ("disconnected", self.on_disconnected), ("connection_failed", self.on_conn_failed),
                      ("stanza_acked", self.on_acked), ("failed_all_auth", self.on_fatal),
                      ("ssl_invalid_chain", self.on_fatal), ("ssl_invalid_cert", self.on_fatal),
                      ("message", self.on_message), ("roster_update", self.on_roster_update),
                      ("stream_error", self.on_stream_error)):
            self.add_event_handler(ev, h)
        self.register_handler(Callback("peer-presence", MatchXPath("{%s}presence" % self.default_ns), self.on_presence))

    # ---------- connection life cycle ----------
    def on_fatal(self, ev: Any = None) -> None:
        self.fatal = "connection/auth failed: %s" % (ev or "authentication failed (no mechanism left)",)
        log.error("%s", self.fatal)
        self.quitting = True
        self.ready.set()

    def on_stream_error(self, err: Any) -> None:
        log.info("stream error: %s", err["condition"] if err is not None else err)

    def on_conn_failed(self, err: Any) -> None:
        log.info("connect failed: %s", err)
        # slixmpp doubles its retry delay up to 300 s; cap it (next delay = 2*w+1 <= --reconnect-max)
        cap = max(0.0, (self.a.reconnect_max - 1) / 2)
        self._connect_loop_wait = min(self._connect_loop_wait, cap)

    def on_disconnected(self, reason: Any) -> None:
        was_online = self.online
        self.online = False
        self.sm_on = False
        if was_online or not self.quitting:
            out({"event": "disconnected", "reason": str(reason) if reason else None})
        if self.quitting:
            return
        delay = self.a.reconnect_delay
        log.info("disconnected (%s); reconnecting in %.1fs", reason, delay)
        host, port = self.custom_address or (None, None)
        self.loop.call_later(delay, lambda: None if self.quitting or self.transport or self.is_connecting()
                             else self.connect(host, port))

    def on_negotiated(self, _ev: Any) -> None:
        if not self.bound:
            return
        self.sm_on = "stream_management" in self.features
        asyncio.ensure_future(self.session_up(resumed=False))

    def on_resumed(self, _ev: Any) -> None:
        self.sm_on = True
        asyncio.ensure_future(self.session_up(resumed=True))

    async def session_up(self, resumed: bool) -> None:
        if not resumed:
            # new session: whatever was written on the old stream and never acked is lost; send it again
            for p in self.pending.values():
                p["written"] = False
            try:
                await self.get_roster(timeout=self.a.timeout)
            except Exception as e:  # pylint: disable=broad-except
                log.warning("roster fetch failed: %s", e)
            self.send_presence()
        self.online = True
        resent = self.flush()
        if resumed and self.pending and self.sm_on:
            self.request_ack()  # slixmpp re-sent the unacked stanzas without asking for an ack
        if not self.started:
            self.started = True
            out({"event": "ready", "jid": str(self.boundjid), "sm": self.sm_on})
            self.ready.set()
        else:
            out({"event": "reconnected", "jid": str(self.boundjid), "resumed": resumed, "resent": resent})

    # ---------- outgoing messages ----------
    def transmit(self, mid: str, p: Dict[str, Any]) -> None:
        msg = self.make_message(mto=p["to"], mbody=p["body"], mtype=p["type"])
        msg["id"] = mid
        msg.send()
        p["written"] = True
        if self.sm_on:
            self.request_ack()
        if not self.sm_on:  # no acks to wait for: "written" is all we can know
            self.pending.pop(mid, None)
            self.report_sent(mid, p, acked=False)

    def request_ack(self) -> None:
        # slixmpp's own ack request (window) is written *before* the stanza that triggers it, so the
        # ack for a message would only come with the next stanza. Queue <r/> behind the message.
        self.send(str(self.plugin["xep_0198"].stanza.RequestAck(self)), use_filters=False)

    def flush(self) -> int:
        n = 0
        for mid, p in list(self.pending.items()):
            if not p["written"]:
                self.transmit(mid, p)
                n += 1
        return n

    def report_sent(self, mid: str, p: Dict[str, Any], acked: bool) -> None:
        ev = {"event": "sent", "id": mid, "to": p["to"], "acked": acked}
        if p.get("tag") is not None:
            ev["tag"] = p["tag"]
        out(ev)
        if not self.pending:
            self.acked.set()

    def queue_message(self, to: str, body: str, mid: Optional[str], mtype: str = "chat", tag: Any = None) -> str:
        mid = mid or self.new_id()
        if mid in self.pending:
            raise ValueError("id %r is still waiting for its ack" % mid)
        p = {"to": to, "body": body, "type": mtype, "written": False, "tag": tag}
        self.pending[mid] = p
        self.acked.clear()
        if self.online:
            self.transmit(mid, p)
        else:
            ev = {"event": "queued", "id": mid, "to": to}
            if tag is not None:
                ev["tag"] = tag
            out(ev)
        return mid

    def on_acked(self, stanza: Any) -> None:
        if not isinstance(stanza, Message):
            return
        mid = stanza["id"]
        p = self.pending.get(mid)
        if p is not None and p["written"]:
            del self.pending[mid]
            self.report_sent(mid, p, acked=True)

    # ---------- incoming ----------
    def on_message(self, msg: Message) -> None:
        mtype = msg["type"]
        if not msg["body"] and mtype != "error":
            return
        ev: Dict[str, Any] = {"event": "message", "from": str(msg["from"]), "to": str(msg["to"]),
                              "id": msg["id"] or None, "type": mtype, "body": msg["body"]}
        if msg.xml.find("{urn:xmpp:delay}delay") is not None:
            ev["delay"] = msg.xml.find("{urn:xmpp:delay}delay").get("stamp")
        if mtype == "error":
            ev["error"] = msg["error"]["condition"]
        out(ev)
        if (self.a.echo and mtype in ("chat", "normal") and msg["body"]
                and not (msg["id"] or "").startswith("echo-")):
            to = str(msg["from"])
            mid = "echo-" + (msg["id"] or self.new_id())
            if mid in self.pending:
                log.warning("echo %s already pending; not echoing twice", mid)
                return
            out({"event": "echoed", "id": mid, "to": to})
            self.queue_message(to, "echo:" + msg["body"], mid, "chat")

    def on_presence(self, pres: Presence) -> None:
        ptype = pres["type"]
        frm = str(pres["from"])
        if ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            out({"event": "subscription", "from": frm, "type": ptype})
            if ptype == "subscribe" and self.a.auto_approve:
                self.send_presence(pto=pres["from"].bare, ptype="subscribed")
                out({"event": "approved", "jid": pres["from"].bare, "auto": True})
                if self.a.subscribe_back:
                    self.send_presence(pto=pres["from"].bare, ptype="subscribe")
            return
        out({"event": "presence", "from": frm, "type": ptype, "show": pres["show"] or None,
             "status": pres["status"] or None, "priority": pres["priority"] if ptype == "available" else None})

    def on_roster_update(self, iq: Iq) -> None:
        if iq["type"] == "set":
            out({"event": "roster_push", "items": roster_items(iq)})

    # ---------- commands ----------
    async def command(self, c: Dict[str, Any]) -> None:
        cmd = c.get("cmd")
        tag = c.get("tag")

        def reply(ev: Dict[str, Any]) -> None:
            if tag is not None:
                ev["tag"] = tag
            out(ev)

        def need(key: str) -> str:
            v = c.get(key)
            if not isinstance(v, str) or not v:
                raise ValueError("%s needs a string %r" % (cmd, key))
            return v

        if cmd == "send":
            body = c.get("body")
            if not isinstance(body, str):
                raise ValueError("send needs a string 'body'")
            mtype = c.get("type", "chat")
            if mtype not in ("chat", "normal", "headline"):
                raise ValueError("type must be chat, normal or headline")
            self.queue_message(need("to"), body, c.get("id"), mtype, tag)
        elif cmd == "presence":
            self.require_online(cmd)
            kw: Dict[str, Any] = {}
            for k, arg in (("show", "pshow"), ("status", "pstatus"), ("priority", "ppriority"),
                           ("type", "ptype"), ("to", "pto")):
                if c.get(k) is not None:
                    kw[arg] = c[k]
            self.send_presence(**kw)
            reply({"event": "ok", "cmd": cmd})
        elif cmd == "subscribe":
            to = JID(need("to")).bare
            self.require_online(cmd)
            await self.update_roster(to, name=c.get("name"), timeout=self.a.timeout)
            self.send_presence(pto=to, ptype="subscribe")
            reply({"event": "ok", "cmd": cmd})
        elif cmd in ("approve", "deny"):
            jid = JID(need("jid")).bare
            self.require_online(cmd)
            self.send_presence(pto=jid, ptype="subscribed" if cmd == "approve" else "unsubscribed")
            reply({"event": "ok", "cmd": cmd})
        elif cmd == "roster":
            self.require_online(cmd)
            iq = self.Iq()
            iq["type"] = "get"
            iq.enable("roster")  # no ver attribute: the server sends the full roster
            res = await iq.send(timeout=self.a.timeout)
            reply({"event": "roster", "items": roster_items(res)})
        elif cmd == "ping":
            reply({"event": "pong"})
        elif cmd == "drop":
            if self.transport:
                self.transport.abort()
            reply({"event": "ok", "cmd": cmd})
        elif cmd == "quit":
            raise SystemExit(0)
        else:
            raise ValueError("unknown cmd %r" % (cmd,))

    def require_online(self, cmd: str) -> None:
        if not self.online:
            raise RuntimeError("%s: not connected (only send is queued while offline)" % cmd)


def start_stdin_reader(loop: asyncio.AbstractEventLoop, q: "asyncio.Queue[Optional[str]]") -> None:
    """A daemon thread reads stdin lines (works for pipes, ttys and files); None means EOF."""
    def run() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(q.put_nowait, line)
        loop.call_soon_threadsafe(q.put_nowait, None)
    threading.Thread(target=run, name="stdin", daemon=True).start()


async def amain(a: argparse.Namespace) -> int:
    xmpp = Peer(a)
    for p in ("xep_0030", "xep_0199", "xep_0203"):
        xmpp.register_plugin(p)
    if not a.no_sm:
        xmpp.register_plugin("xep_0198", {"window": 1 << 30})  # acks: see Peer.request_ack
    # slixmpp >= 1.9 tries direct TLS (XEP-0368) first on the given port; Prosody's c2s port is STARTTLS.
    xmpp.enable_direct_tls = False
    if a.tls == "plain":
        xmpp.enable_starttls = False
        xmpp.enable_plaintext = True
        xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
    if a.ca_file:
        xmpp.ca_certs = Path(a.ca_file)
    if a.insecure_tls:
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    host, port = a.server.rsplit(":", 1)
    xmpp.connect(host, int(port))

    try:
        await asyncio.wait_for(xmpp.ready.wait(), a.timeout)
    except asyncio.TimeoutError:
        out({"event": "timeout", "stage": "ready"})
        xmpp.quitting = True
        xmpp.cancel_connection_attempt()
        xmpp.abort()
        return 2
    if xmpp.fatal:
        out({"event": "error", "error": xmpp.fatal})
        xmpp.cancel_connection_attempt()
        xmpp.abort()
        return 1

    q: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
    start_stdin_reader(asyncio.get_running_loop(), q)
    rc = 0
    while True:
        line = await q.get()
        if line is None:
            log.info("stdin closed: quitting")
            break
        line = line.strip()
        if not line:
            continue
        c: Any = None
        try:
            c = json.loads(line)
            if not isinstance(c, dict):
                raise ValueError("a command is a JSON object")
            await xmpp.command(c)
        except SystemExit:
            break
        except Exception as e:  # pylint: disable=broad-except
            log.info("command failed", exc_info=True)
            ev = {"event": "error", "error": "%s: %s" % (type(e).__name__, e)}
            if isinstance(c, dict) and c.get("tag") is not None:
                ev["tag"] = c["tag"]
            out(ev)
        if xmpp.fatal:
            out({"event": "error", "error": xmpp.fatal})
            rc = 1
            break

    if xmpp.pending and not xmpp.fatal:
        try:
            await asyncio.wait_for(xmpp.acked.wait(), a.quit_wait)
        except asyncio.TimeoutError:
            pass
    if xmpp.pending:
        out({"event": "unacked", "ids": list(xmpp.pending)})
    xmpp.quitting = True
    xmpp.cancel_connection_attempt()
    if xmpp.transport:
        try:
            await asyncio.wait_for(xmpp.disconnect(wait=2, reason="quit"), 5)
        except Exception:  # pylint: disable=broad-except
            xmpp.abort()
    return rc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jid", required=True, help="bare or full JID (resource: the one given, else --resource)")
    p.add_argument("--password", default=os.environ.get("XMPP_PASSWORD"),
                   help="default $XMPP_PASSWORD, else pw-<localpart> (the world's convention)")
    p.add_argument("--resource", default="peer", help="resource when --jid has none (default: peer)")
    p.add_argument("--server", default=os.environ.get("XMPP_SERVER", "127.0.0.1:5222"),
                   help="host:port (default $XMPP_SERVER or 127.0.0.1:5222)")
    p.add_argument("--ca-file", default=os.environ.get("XMPP_CA_FILE"),
                   help="trust this CA for STARTTLS (default $XMPP_CA_FILE)")
    p.add_argument("--tls", choices=["starttls", "plain"], default=os.environ.get("XMPP_TLS", "starttls"),
                   help="starttls (default) or plain (no TLS; loopback only)")
    p.add_argument("--insecure-tls", action="store_true", help="do not verify the server certificate")
    p.add_argument("--echo", action="store_true", help='send every received chat message back: body "echo:"+body, id "echo-"+id')
    p.add_argument("--auto-approve", action="store_true", help="answer every subscription request with subscribed")
    p.add_argument("--subscribe-back", action="store_true", help="with --auto-approve: also subscribe to the requester")
    p.add_argument("--no-sm", action="store_true", help="no XEP-0198 (then 'sent' means written, not acked)")
    p.add_argument("--timeout", type=float, default=30, help="seconds until ready (exit 2) and for IQs (default 30)")
    p.add_argument("--reconnect-delay", type=float, default=0.2, help="seconds before the first reconnect attempt (0.2)")
    p.add_argument("--reconnect-max", type=float, default=1.0, help="max seconds between reconnect attempts (1)")
    p.add_argument("--quit-wait", type=float, default=5.0, help="at quit/EOF, seconds to wait for unacked messages (5)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug (stderr)")
    a = p.parse_args()
    jid = JID(a.jid)
    if not jid.user or not jid.domain:
        p.error("--jid must be user@domain[/resource]")
    if not jid.resource:
        jid.resource = a.resource
    a.jid = str(jid)
    if not a.password:
        a.password = "pw-" + jid.user
    logging.basicConfig(stream=sys.stderr, level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="%(asctime)s " + jid.user + " %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(amain(a)))


if __name__ == "__main__":
    main()
