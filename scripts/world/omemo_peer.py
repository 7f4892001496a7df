#!/usr/bin/env python3
"""Small command-line OMEMO peer for tests (slixmpp + slixmpp-omemo + python-omemo).

Connects as a JID to the local XMPP server, publishes its OMEMO device list and
bundles (both eu.siacs.conversations.axolotl and urn:xmpp:omemo:2, access_model
open), trusts every device blindly (BTBV), then:

  send  --to JID --text TEXT [--repeat N]   encrypt with --ns and send
  recv  --count N [--timeout S]             wait for N decrypted messages
  publish                                   only publish keys, then exit
  bundle --of JID                           print the raw device list + bundle XML of JID

Output is JSON lines on stdout: {"event": "ready"|"sent"|"received"|"bundle"|"error"|"timeout", ...}.
Logs go to stderr. --show-xml adds the raw stanza XML to sent/received lines.

--ns oldmemo  : legacy OMEMO 0.3 (eu.siacs.conversations.axolotl), body-only encryption
--ns twomemo  : OMEMO 2 (urn:xmpp:omemo:2) with an XEP-0420 SCE envelope. slixmpp-omemo 2.2.0 cannot
                do SCE itself (it raises NotImplementedError), so this script builds/parses the
                envelope and calls the python-omemo SessionManager directly.
recv accepts both namespaces regardless of --ns (the "ns" field says which one was used).

Example (state in $WORLD_STATE/omemo/<jid>.json; source STATE/world.env first):
  omemo_peer.py --jid bob@xmpp.test --password pw-bob recv --count 1 &
  omemo_peer.py --jid alice@xmpp.test --password pw-alice --ns twomemo send --to bob@xmpp.test --text hi
Exit codes: 0 ok, 1 error, 2 timeout.
"""
import argparse
import asyncio
import base64
import datetime
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape as xml_escape, quoteattr

import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp.clientxmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.plugins import register_plugin
from slixmpp.stanza import Message
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import TrustLevel, XEP_0384

log = logging.getLogger("omemo_peer")

NS = {"oldmemo": oldmemo.oldmemo.NAMESPACE, "twomemo": twomemo.twomemo.NAMESPACE}
SCE_NS = "urn:xmpp:sce:1"
OLD_DEVICELIST_NODE = "eu.siacs.conversations.axolotl.devicelist"
TWO_DEVICELIST_NODE = "urn:xmpp:omemo:2:devices"
TWO_BUNDLES_NODE = "urn:xmpp:omemo:2:bundles"


def world_state() -> str:
    """$WORLD_STATE (set by STATE/world.env), else the default state dir <repo>/.world/state."""
    return os.environ.get("WORLD_STATE") or str(Path(__file__).resolve().parents[2] / ".world" / "state")


def out(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class JsonStorage(Storage):
    """All OMEMO state of one account in one JSON file (written on every change)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.data: Dict[str, JSONType] = {}
        if path.exists():
            self.data = json.loads(path.read_text("utf8") or "{}")

    def _flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data), "utf8")
        os.replace(tmp, self.path)

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value
        self._flush()

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)
        self._flush()


class XEP_0384Impl(XEP_0384):  # pylint: disable=invalid-name
    default_config = {"fallback_message": "This message is OMEMO encrypted.", "json_file_path": None}

    def plugin_init(self) -> None:
        self._storage = JsonStorage(Path(self.json_file_path))
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True  # blind trust before verification

    async def _devices_blindly_trusted(self, blindly_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]) -> None:
        log.info("blindly trusted: %s", [(d.bare_jid, d.device_id) for d in blindly_trusted])

    async def _prompt_manual_trust(self, manually_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]) -> None:
        sm = await self.get_session_manager()
        for d in manually_trusted:  # tests: trust everything
            await sm.set_trust(d.bare_jid, d.identity_key, TrustLevel.TRUSTED.value)


register_plugin(XEP_0384Impl)


def sce_envelope(body: str, to: str, frm: str) -> bytes:
    """XEP-0420 envelope with the affixes XEP-0384 (OMEMO 2) asks for: rpad, time, to, from."""
    rpad = base64.b64encode(secrets.token_bytes(secrets.randbelow(32) + 1)).decode()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        "<envelope xmlns='%s'><content><body xmlns='jabber:client'>%s</body></content>"
        "<rpad>%s</rpad><time stamp=%s/><to jid=%s/><from jid=%s/></envelope>"
        % (SCE_NS, xml_escape(body), rpad, quoteattr(stamp), quoteattr(to), quoteattr(frm))
    ).encode("utf-8")


def sce_parse(data: bytes, sender_bare: str) -> Dict[str, Any]:
    env = ET.fromstring(data)
    if env.tag != "{%s}envelope" % SCE_NS:
        raise ValueError("not an SCE envelope: %r" % data[:80])
    frm = env.find("{%s}from" % SCE_NS)
    if frm is None or JID(frm.get("jid")).bare != sender_bare:
        raise ValueError("SCE <from/> does not match sender %s" % sender_bare)
    body = env.find("{%s}content/{jabber:client}body" % SCE_NS)
    return {"body": body.text if body is not None else None, "sce": data.decode("utf-8")}


class Peer(ClientXMPP):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__(a.jid, a.password)
        self.a = a
        self.ready = asyncio.Event()
        self.failed: Optional[str] = None
        self.received = 0
        self.done = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("omemo_initialized", lambda *_: self.ready.set())
        self.add_event_handler("failed_auth", self.on_fail)
        self.add_event_handler("ssl_invalid_chain", self.on_fail)
        self.add_event_handler("ssl_invalid_cert", self.on_fail)
        self.register_handler(CoroutineCallback("omemo-msgs", MatchXPath("{%s}message" % self.default_ns), self.on_message))

    def on_fail(self, ev: Any = None) -> None:
        self.failed = "connection/auth failed: %s" % (ev,)
        self.ready.set()
        self.done.set()

    async def on_start(self, _ev: Any) -> None:
        self.send_presence()
        await self.get_roster()
        await self.plugin["xep_0384"].get_session_manager()  # publishes device list + bundles

    async def on_message(self, stanza: Message) -> None:
        if stanza["type"] not in ("chat", "normal"):
            return
        xep: XEP_0384 = self.plugin["xep_0384"]
        enc = xep.is_encrypted(stanza)
        if not enc:
            if stanza["body"]:
                out({"event": "plain", "from": str(stanza["from"]), "body": stanza["body"]})
            return
        sender = stanza["from"].bare
        if sender == self.boundjid.bare:
            return  # carbon of our own message from another device
        rec: Dict[str, Any] = {"event": "received", "from": str(stanza["from"]), "id": stanza["id"]}
        try:
            if twomemo.twomemo.NAMESPACE in enc:
                sm = await xep.get_session_manager()
                elt = stanza.xml.find("{%s}encrypted" % twomemo.twomemo.NAMESPACE)
                msg = twomemo.etree.parse_message(elt, sender)
                plaintext, dev, _ = await sm.decrypt(msg)
                if plaintext is None:
                    log.info("empty OMEMO 2 message (key exchange/heartbeat) from %s", sender)
                    return
                rec.update(ns=twomemo.twomemo.NAMESPACE, device_id=dev.device_id, **sce_parse(plaintext, sender))
            else:
                dec, dev = await xep.decrypt_message(stanza)
                if not dec["body"]:
                    log.info("empty oldmemo message (key transport/heartbeat) from %s", sender)
                    return
                rec.update(ns=oldmemo.oldmemo.NAMESPACE, device_id=dev.device_id, body=dec["body"])
        except Exception as e:  # pylint: disable=broad-except
            log.warning("decryption failed", exc_info=True)
            rec.update(event="error", error="%s: %s" % (type(e).__name__, e))
        if self.a.show_xml:
            rec["xml"] = str(stanza)
        out(rec)
        if rec["event"] == "received":
            self.received += 1
            if self.a.cmd == "recv" and self.received >= self.a.count:
                self.done.set()

    async def encrypt_and_send(self, to: str, text: str) -> Message:
        xep: XEP_0384 = self.plugin["xep_0384"]
        sm = await xep.get_session_manager()
        ns = NS[self.a.ns]
        to_jid = JID(to)
        await xep.refresh_device_lists({to_jid})
        if ns == twomemo.twomemo.NAMESPACE:
            plaintext = sce_envelope(text, to_jid.bare, self.boundjid.bare)
        else:
            plaintext = text.encode("utf-8")
        messages, errors = await sm.encrypt(frozenset({to_jid.bare}), {ns: plaintext}, backend_priority_order=[ns])
        if errors:
            log.info("non-critical encryption errors: %s", errors)
        stanza = self.make_message(mto=to_jid, mtype="chat")
        stanza["body"] = xep.fallback_message
        stanza.enable("store")
        for m in messages:
            ser = twomemo.etree.serialize_message(m) if m.namespace == twomemo.twomemo.NAMESPACE else oldmemo.etree.serialize_message(m)
            stanza.append(ser)
        stanza["eme"]["namespace"] = ns
        stanza["eme"]["name"] = "OMEMO"
        stanza.send()
        return stanza

    async def dump_bundle(self, of: str) -> None:
        pubsub = self.plugin["xep_0060"]
        jid = JID(of)
        res: Dict[str, Any] = {"event": "bundle", "jid": jid.bare}
        if self.a.ns == "oldmemo":
            dl = await pubsub.get_items(jid, OLD_DEVICELIST_NODE)
            res["devicelist_xml"] = str(dl["pubsub"]["items"])
            ids = [int(d.get("id")) for d in dl.xml.iter("{%s}device" % oldmemo.oldmemo.NAMESPACE)]
            res["device_ids"] = ids
            if ids:
                b = await pubsub.get_items(jid, "%s.bundles:%d" % (oldmemo.oldmemo.NAMESPACE, ids[0]))
                res["bundle_xml"] = str(b["pubsub"]["items"])
        else:
            dl = await pubsub.get_items(jid, TWO_DEVICELIST_NODE)
            res["devicelist_xml"] = str(dl["pubsub"]["items"])
            ids = [int(d.get("id")) for d in dl.xml.iter("{%s}device" % twomemo.twomemo.NAMESPACE)]
            res["device_ids"] = ids
            if ids:
                b = await pubsub.get_items(jid, TWO_BUNDLES_NODE, item_ids=[str(ids[0])])
                res["bundle_xml"] = str(b["pubsub"]["items"])
        out(res)


async def amain(a: argparse.Namespace) -> int:
    store_dir = Path(a.store or os.path.join(world_state(), "omemo"))
    store_dir.mkdir(parents=True, exist_ok=True)
    xmpp = Peer(a)
    for p in ("xep_0030", "xep_0060", "xep_0163", "xep_0199", "xep_0280", "xep_0334", "xep_0380"):
        xmpp.register_plugin(p)
    xmpp.register_plugin("xep_0384", {"json_file_path": str(store_dir / (JID(a.jid).bare + ".json"))},
                         module=sys.modules[__name__])
    # slixmpp >= 1.9 tries direct TLS (XEP-0368) first on the given port; Prosody's 5222 is STARTTLS.
    xmpp.enable_direct_tls = False
    if a.tls == "plain":
        xmpp.enable_starttls = False
        xmpp.enable_plaintext = True
        xmpp.plugin["feature_mechanisms"].unencrypted_scram = True  # Prosody offers SCRAM without TLS
    if not a.ca_file:  # default: the world's test CA, if present
        guess = os.path.join(world_state(), "prosody", "ca", "ca.crt")
        if os.path.exists(guess):
            a.ca_file = guess
    if a.ca_file:
        xmpp.ca_certs = Path(a.ca_file)
    if a.insecure_tls:
        import ssl
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    host, port = a.server.rsplit(":", 1)
    xmpp.connect(host, int(port))
    rc = 0
    try:
        await asyncio.wait_for(xmpp.ready.wait(), a.timeout)
        if xmpp.failed:
            out({"event": "error", "error": xmpp.failed})
            return 1
        sm = await xmpp.plugin["xep_0384"].get_session_manager()
        own = (await sm.get_own_device_information())[0]
        out({"event": "ready", "jid": str(xmpp.boundjid), "device_id": own.device_id,
             "namespaces": sorted(own.namespaces)})
        if a.cmd == "send":
            for i in range(a.repeat):
                text = a.text if a.repeat == 1 else "%s #%d" % (a.text, i + 1)
                st = await xmpp.encrypt_and_send(a.to, text)
                rec = {"event": "sent", "to": a.to, "ns": NS[a.ns], "id": st["id"], "text": text}
                if a.show_xml:
                    rec["xml"] = str(st)
                out(rec)
            await asyncio.sleep(a.linger)
        elif a.cmd == "recv":
            try:
                await asyncio.wait_for(xmpp.done.wait(), a.timeout)
            except asyncio.TimeoutError:
                out({"event": "timeout", "received": xmpp.received, "wanted": a.count})
                rc = 2
            await asyncio.sleep(a.linger)  # let the library send session-completing heartbeats
        elif a.cmd == "bundle":
            await xmpp.dump_bundle(a.of)
        elif a.cmd == "publish":
            pass
    except asyncio.TimeoutError:
        out({"event": "timeout", "stage": "connect/ready"})
        rc = 2
    except Exception as e:  # pylint: disable=broad-except
        log.warning("error", exc_info=True)
        out({"event": "error", "error": "%s: %s" % (type(e).__name__, e)})
        rc = 1
    finally:
        xmpp.disconnect()
        try:
            await asyncio.wait_for(xmpp.disconnected, 5)
        except Exception:  # pylint: disable=broad-except
            pass
    return rc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", default=os.environ.get("XMPP_PASSWORD"))
    p.add_argument("--server", default=os.environ.get("XMPP_SERVER", "127.0.0.1:5222"), help="host:port (default 127.0.0.1:5222)")
    p.add_argument("--ns", choices=sorted(NS), default="oldmemo", help="OMEMO version used for sending")
    p.add_argument("--store", help="dir for <jid>.json OMEMO state (default $WORLD_STATE/omemo)")
    p.add_argument("--ca-file", default=os.environ.get("XMPP_CA_FILE"), help="trust this CA for STARTTLS (the world's test CA)")
    p.add_argument("--tls", choices=["starttls", "plain"], default=os.environ.get("XMPP_TLS", "starttls"),
                   help="starttls (default) or plain (no TLS; loopback only)")
    p.add_argument("--insecure-tls", action="store_true", help="do not verify the server certificate")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--linger", type=float, default=1.0, help="seconds to stay connected after the work")
    p.add_argument("--show-xml", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--text", required=True)
    s.add_argument("--repeat", type=int, default=1)
    r = sub.add_parser("recv")
    r.add_argument("--count", type=int, default=1)
    sub.add_parser("publish")
    b = sub.add_parser("bundle")
    b.add_argument("--of", required=True)
    # Allow the common options after the sub-command too (SUPPRESS keeps the main parser's value).
    for sp in (s, r, b, sub.choices["publish"]):
        sp.add_argument("--ns", choices=sorted(NS), default=argparse.SUPPRESS)
        sp.add_argument("--timeout", type=float, default=argparse.SUPPRESS)
        sp.add_argument("--linger", type=float, default=argparse.SUPPRESS)
        sp.add_argument("--show-xml", action="store_true", default=argparse.SUPPRESS)
    a = p.parse_args()
    if not a.password:
        p.error("--password or XMPP_PASSWORD required")
    logging.basicConfig(stream=sys.stderr, level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(amain(a)))


if __name__ == "__main__":
    main()
