#!/usr/bin/env python3
"""Small command-line OMEMO peer for tests (slixmpp + slixmpp-omemo + python-omemo).

Connects as a JID to the local XMPP server, publishes its OMEMO device list and
bundles (both eu.siacs.conversations.axolotl and urn:xmpp:omemo:2, access_model
open), trusts every device blindly (BTBV), then:

  send  --to JID --text TEXT [--repeat N]   encrypt with --ns and send
  recv  --count N [--timeout S]             wait for N decrypted messages
  publish                                   only publish keys, then exit
  bundle --of JID                           print the raw device list + bundle XML of JID
  serve                                     long-running: JSON-line commands on stdin (see SERVE below)

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

SERVE (a child process a test drives; sends with --ns, default legacy OMEMO; receives both namespaces):
  stdin, one JSON object per line (EOF = quit):
    {"cmd":"send","to":BAREJID,"text":T,"id":OPTIONAL_STANZA_ID}
    {"cmd":"burst","to":BAREJID,"count":N,"prefix":P}  N messages as fast as it can: device lists
                                        fetched once, then texts "P i" with ids "P-i" (i = 0..N-1),
                                        each encrypted and written at once; one "burst_sent" at the end.
                                        Optional: "interval":S paces them (message i at start + i*S),
                                        "stamp":true appends " @<unix time>" (when it was encrypted)
    {"cmd":"devices","of":BAREJID}      legacy device list of BAREJID, fetched from PEP
    {"cmd":"send-file","to":BAREJID,"path":PATH,"name":N,"mime":M,"id":ID}  (name, mime, id optional;
                                        name: the file's base name, mime: guessed from name) as
                                        Conversations shares a file with OMEMO: an XEP-0363 slot
                                        (--upload-jid / $XMPP_UPLOAD_JID, else disco) for the file
                                        AES-256-GCM-encrypted (fresh 32-byte key, 12-byte IV, 16-byte
                                        tag appended), streamed in a PUT over https (trusting
                                        --ca-file), then an OMEMO message whose body is exactly
                                        aesgcm://<get URL without https://>#<24 hex IV><64 hex key>
    {"cmd":"send-file-plain", same fields}  the file as is, then an unencrypted message whose body is
                                        the https get URL with <x xmlns='jabber:x:oob'><url>URL</url></x>
    both answer "file-sent" (or "error" {"cmd","id"?})
    {"cmd":"subscribe","to":BAREJID,"nick":OPTIONAL}  <presence type=subscribe/>, with an XEP-0172
                                        <nick/> when "nick" is given
    {"cmd":"approve","to":BAREJID}      <presence type=subscribed/> (accept or pre-approve a request)
    {"cmd":"presence","show":S,"status":T,"type":"unavailable"}  a broadcast presence (all optional:
                                        show away|chat|dnd|xa, a status text; type unavailable = offline)
    send also takes, all optional (null = absent), written in the clear beside <encrypted> as
    Conversations does (legacy OMEMO encrypts only the body):
      "reply_to":ID    XEP-0461 <reply xmlns='urn:xmpp:reply:0' id=ID [to=JID]/>
      "reply_to_jid":J   its 'to' (the author of ID; omitted when not given; needs reply_to)
      "fallback":QUOTE   (needs reply_to) the encrypted body becomes "> " + each line of QUOTE + "\n",
                       then the text, and an XEP-0428 <fallback xmlns='urn:xmpp:fallback:0'
                       for='urn:xmpp:reply:0'><body start='0' end=N/></fallback> covers the quote
                       (N = its length in code points); "sent" then also has "body" and "fallback" [0,N]
      "replace":ID     XEP-0308 <replace xmlns='urn:xmpp:message-correct:0' id=ID/>
      "markable":true  XEP-0333 <markable xmlns='urn:xmpp:chat-markers:0'/>
      "receipt":true   XEP-0184 <request xmlns='urn:xmpp:receipts'/>
    Every send has a stanza id (random hex when "id" is not given) and an XEP-0359 origin-id equal to it.
    Unencrypted, type chat, to "to" as given (bare or full JID); each answers
    "sent" {"cmd","id","to"} with the stanza id it used ("stanza_id":S, optional, sets it):
    {"cmd":"react","to":J,"id":TARGET,"emojis":[...]}  XEP-0444 <reactions xmlns='urn:xmpp:reactions:0'
                                        id=TARGET><reaction>E</reaction>...</reactions> (the whole set;
                                        [] takes all back) + <store xmlns='urn:xmpp:hints'/>
    {"cmd":"retract","to":J,"id":TARGET}  XEP-0424 v1 <retract xmlns='urn:xmpp:message-retract:1'
                                        id=TARGET/> + a fallback <body> + <fallback xmlns='urn:xmpp:fallback:0'
                                        for='urn:xmpp:message-retract:1'/> + <store/> (as Dino sends it)
    {"cmd":"displayed","to":J,"id":TARGET}  XEP-0333 <displayed xmlns='urn:xmpp:chat-markers:0'
                                        id=TARGET/> + <store/> (Conversations sends it to the full JID)
    {"cmd":"chatstate","to":J,"state":S}  XEP-0085 <S xmlns='http://jabber.org/protocol/chatstates'/>
                                        (active|composing|paused|inactive|gone) + <no-store/>, no body
    {"cmd":"ping"}                      answered with "pong" after all earlier commands are done
    {"cmd":"quit"}
  stdout, one JSON object per line:
    ready     {"jid","device_id","namespaces","identity_key","identity_fingerprint","store"[,"identity_reset"]}
              identity_key: own Ed25519 public key (hex, as python-omemo stores it); identity_fingerprint:
              the same key in Curve25519 form (hex, 64 chars, no 0x05 prefix; SessionManager.format_identity_key)
              identity_reset ("same-device"|"fresh-device") only with --reset-identity
    file-sent {"cmd","id","to","sha256","size","url","name","mime","encrypted","body","prekey"}
              (answer to send-file[-plain]) sha256/size: of the plaintext file; url: the https get URL
              (no fragment); body: what the message says (the aesgcm:// URL with IV and key)
    sent      {"id","to","prekey"}      (answer to send) prekey: some <key> of the stanza has prekey="true"/"1" (python-omemo
                                        also encrypts for our own other devices: their keys count too)
    received  {"from","id","body","device_id","prekey","ns","t_in","t"}  prekey: OUR <key> had
              prekey="true"/"1"; t_in / t: unix times when the stanza came / when it was decrypted
    empty     {"from","id","device_id","prekey","ns"}  an OMEMO message without payload (key transport)
    identity_changed {"from","device_id","old_identity_key","new_identity_key"}  see --strict-identity
    plain     {"from","id","body"}      an unencrypted body
    received and plain also carry "file" when the body shares a file: it is exactly one
              aesgcm://…#<88 or 96 hex> URL (XEP-0454, IV = all but the last 32 bytes of the fragment),
              or exactly the https URL of the message's XEP-0066 <x xmlns='jabber:x:oob'><url/>.
              The peer downloads it over https (trusting --ca-file) and decrypts it before reporting:
              "file" {"url" (https, no fragment),"encrypted","ok":true,"sha256","size","content_type"}
              (plaintext's sha256 hex and size) or {"url","encrypted","ok":false,"error"}
    received and plain also carry, when the stanza has them: "reply_to" {"id"[,"to"]} ("to" when the
              <reply/> has one), "fallback" [start,end] (the reply fallback's <body/>), "replace" (id),
              "markable" true, "receipt_request" true, "chat_state", "origin_id"
    meta      {"from","id",["reactions" {"id","emojis"}],["retract"],["displayed"],["received"],
              ["chat_state"]}  an unencrypted stanza about other messages: always when it has
              <reactions/> or a retraction (XEP-0424 v1, or v0 in <apply-to/>; their body is a
              fallback), and when it has no body but a marker, a receipt or a chat state. Such a
              stanza is never reported as "plain". "received" is the XEP-0184 receipt's id.
    A message with <request xmlns='urn:xmpp:receipts'/> and an id is answered at once, whether it
    decrypts or not, as Conversations answers it: <received xmlns='urn:xmpp:receipts' id=…/> and
    <store/>, type as the original's, to the sender's full JID (not for our own account's
    messages; --no-receipts: never). slixmpp's xep_0184 plugin is not loaded.
    burst_sent {"to","count","prefix","seconds"}  all N of a burst are written (not yet acked)
    devices   {"of","device_ids"}
    ok        {"cmd","to"}              subscribe/approve sent
    subscription {"from","type"[,"nick"]}  a subscribe/subscribed/unsubscribe/unsubscribed presence
    message_error {"from","id","condition"}  a message of ours came back as an error (e.g. blocked)
    pong, error {"error"[,"from","id","cmd"]}, disconnected, reconnected {"jid"}
  Messages are decrypted one at a time in arrival order; encrypt and decrypt never interleave.
  Carbons of our own account are not reported. XEP-0198 is on (the peer answers the server's <r/>).
  After a lost connection it reconnects by itself (every 1 s). If stdout is closed, it exits (code 3).

--backends B        oldmemo | twomemo | both (default): the OMEMO versions the device speaks (slixmpp-omemo
                    loads both; the others are left out of python-omemo's SessionManager). With twomemo,
                    send with --ns twomemo.
--resource R        bind resource R (two instances of one account = two OMEMO devices; give each its
                    own --store-name)
--store-name NAME   state file <store dir>/NAME.json (default: the bare JID)
--reset-identity    before connecting, replace the identity key pair in the state file by a new one and
                    drop every session and pre key, but KEEP the device id (the "identity changed on a
                    known device" case). The bundle is published again with the new identity key.
                    Without a state file it is a plain first start (new device id).
--nick NAME         put an XEP-0172 <nick>NAME</nick> into every message we send
--no-receipts       do not answer XEP-0184 receipt requests
--manual-subscriptions  answer no subscription request by ourselves (slixmpp's default approves
                    every request and subscribes back); use the "approve" command
--strict-identity   report a key exchange whose identity key differs from the one stored for that
                    device as an error (python-omemo's PublicDataInconsistency). Default: forget the
                    stored identity key, report "identity_changed", fetch the bundle and decrypt again
                    (trust on first use of the new key, like BTBV).
"""
import argparse
import asyncio
import base64
import datetime
import hashlib
import json
import logging
import mimetypes
import os
import re
import secrets
import ssl
import sys
import time
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape as xml_escape, quoteattr

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
import omemo
import xeddsa
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp.clientxmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.plugins import register_plugin
from slixmpp.stanza import Message
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import TrustLevel, XEP_0384

log = logging.getLogger("omemo_peer")

NS = {"oldmemo": oldmemo.oldmemo.NAMESPACE, "twomemo": twomemo.twomemo.NAMESPACE}
SCE_NS = "urn:xmpp:sce:1"
OLD_DEVICELIST_NODE = "eu.siacs.conversations.axolotl.devicelist"
TWO_DEVICELIST_NODE = "urn:xmpp:omemo:2:devices"
TWO_BUNDLES_NODE = "urn:xmpp:omemo:2:bundles"
NICK_NS = "http://jabber.org/protocol/nick"
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")
# What Conversations announces in disco#info for replies, corrections, reactions, retractions,
# markers, receipts and chat states.
MESSAGE_FEATURES = ("urn:xmpp:reply:0", "urn:xmpp:message-correct:0", "urn:xmpp:reactions:0",
                    "urn:xmpp:message-retract:1", "urn:xmpp:chat-markers:0", "urn:xmpp:receipts",
                    "http://jabber.org/protocol/chatstates")
# The extensions a chat message carries in the clear beside <encrypted/> (legacy OMEMO encrypts
# only the body), written the way Conversations writes them.
REPLY_NS = "urn:xmpp:reply:0"
FALLBACK_NS = "urn:xmpp:fallback:0"
CORRECT_NS = "urn:xmpp:message-correct:0"
REACTIONS_NS = "urn:xmpp:reactions:0"
RETRACT_NS = "urn:xmpp:message-retract:1"
RETRACT0_NS = "urn:xmpp:message-retract:0"
FASTEN_NS = "urn:xmpp:fasten:0"
MARKERS_NS = "urn:xmpp:chat-markers:0"
RECEIPTS_NS = "urn:xmpp:receipts"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
HINTS_NS = "urn:xmpp:hints"
SID_NS = "urn:xmpp:sid:0"
CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
RETRACT_FALLBACK = "This person attempted to retract a previous message, but it's unsupported by your client."


def _int_or_none(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def extension_fields(x: ET.Element) -> Dict[str, Any]:
    """What a <message/> says beyond its body, as JSON fields (absent when not there)."""
    f: Dict[str, Any] = {}
    reply = x.find("{%s}reply" % REPLY_NS)
    if reply is not None:
        f["reply_to"] = {"id": reply.get("id")}
        if reply.get("to") is not None:
            f["reply_to"]["to"] = reply.get("to")
    for fb in x.findall("{%s}fallback" % FALLBACK_NS):
        body = fb.find("{%s}body" % FALLBACK_NS)
        if fb.get("for") == REPLY_NS and body is not None:
            # XEP-0428: code point offsets; a missing start/end is the body's start/end (here: null)
            f["fallback"] = [_int_or_none(body.get("start")) or 0, _int_or_none(body.get("end"))]
    replace = x.find("{%s}replace" % CORRECT_NS)
    if replace is not None:
        f["replace"] = replace.get("id")
    if x.find("{%s}markable" % MARKERS_NS) is not None:
        f["markable"] = True
    if x.find("{%s}request" % RECEIPTS_NS) is not None:
        f["receipt_request"] = True
    origin = x.find("{%s}origin-id" % SID_NS)
    if origin is not None:
        f["origin_id"] = origin.get("id")
    return f


def reply_quote(quoted: str) -> str:
    """XEP-0461's compatibility fallback (as Conversations and Dino write it): every quoted line
    behind "> ", each ending in a newline; the answer follows. Its length in code points is the
    XEP-0428 <body end=…/>."""
    return "".join("> %s\n" % line for line in quoted.rstrip("\n").split("\n"))


def meta_fields(x: ET.Element) -> Dict[str, Any]:
    """The signals of a <message/> that is not a message of its own (no "meta" without one)."""
    f: Dict[str, Any] = {}
    reactions = x.find("{%s}reactions" % REACTIONS_NS)
    if reactions is not None:
        f["reactions"] = {"id": reactions.get("id"),
                          "emojis": [(r.text or "") for r in reactions.findall("{%s}reaction" % REACTIONS_NS)]}
    retract = x.find("{%s}retract" % RETRACT_NS)
    if retract is not None:
        f["retract"] = retract.get("id")
    apply_to = x.find("{%s}apply-to" % FASTEN_NS)
    if apply_to is not None and apply_to.find("{%s}retract" % RETRACT0_NS) is not None:
        f["retract"] = apply_to.get("id")
    displayed = x.find("{%s}displayed" % MARKERS_NS)
    if displayed is not None:
        f["displayed"] = displayed.get("id")
    received = x.find("{%s}received" % RECEIPTS_NS)
    if received is not None:
        f["received"] = received.get("id")
    for state in CHAT_STATES:
        if x.find("{%s}%s" % (CHATSTATES_NS, state)) is not None:
            f["chat_state"] = state
    return f


SEND_OPTIONS = {"reply_to": str, "reply_to_jid": str, "fallback": str, "replace": str, "markable": bool, "receipt": bool}
META_COMMANDS = ("react", "retract", "displayed", "chatstate")


def send_options(cmd: Dict[str, Any]) -> Dict[str, Any]:
    """The optional extension fields of a serve "send" command, checked (null = absent)."""
    opts = {k: cmd[k] for k in SEND_OPTIONS if cmd.get(k) is not None}
    for k, v in opts.items():
        if not isinstance(v, SEND_OPTIONS[k]):
            raise ValueError("send: \"%s\" must be a %s" % (k, SEND_OPTIONS[k].__name__))
    if ("fallback" in opts or "reply_to_jid" in opts) and "reply_to" not in opts:
        raise ValueError("send: \"fallback\" and \"reply_to_jid\" need \"reply_to\"")
    return opts


def meta_stanza(cmd: Dict[str, Any]) -> tuple:
    """(children, hint, body) of a react/retract/displayed/chatstate command: the elements
    Conversations (reactions, markers, chat states) and Dino (retractions) send, unencrypted."""
    name = cmd["cmd"]
    if name == "chatstate":
        state = cmd.get("state")
        if state not in CHAT_STATES:
            raise ValueError("chatstate needs a \"state\" of %s" % ", ".join(CHAT_STATES))
        # Conversations adds a misspelt <no-storage/> too; <no-store/> is the one that counts.
        return [ET.Element("{%s}%s" % (CHATSTATES_NS, state))], "no-store", None
    target = cmd.get("id")
    if not isinstance(target, str) or not target:
        raise ValueError("%s needs an \"id\" string (the message it is about)" % name)
    if name == "react":
        emojis = cmd.get("emojis")
        if not isinstance(emojis, list) or not all(isinstance(e, str) for e in emojis):
            raise ValueError("react needs an \"emojis\" list of strings ([] takes all back)")
        el = ET.Element("{%s}reactions" % REACTIONS_NS, {"id": target})
        for emoji in emojis:
            ET.SubElement(el, "{%s}reaction" % REACTIONS_NS).text = emoji
        return [el], "store", None
    if name == "retract":
        return ([ET.Element("{%s}retract" % RETRACT_NS, {"id": target}),
                 ET.Element("{%s}fallback" % FALLBACK_NS, {"for": RETRACT_NS})], "store", RETRACT_FALLBACK)
    # displayed: Conversations' confirm() sends it with a <store/> hint
    return [ET.Element("{%s}displayed" % MARKERS_NS, {"id": target})], "store", None


def world_state() -> str:
    """$WORLD_STATE (set by STATE/world.env), else the default state dir <repo>/.world/state."""
    return os.environ.get("WORLD_STATE") or str(Path(__file__).resolve().parents[2] / ".world" / "state")


def out(obj: Dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the test that read us is gone; the state file is always consistent
        log.warning("stdout closed, exiting")
        os._exit(3)


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

BACKENDS = {
    "oldmemo": frozenset({oldmemo.oldmemo.NAMESPACE}),
    "twomemo": frozenset({twomemo.twomemo.NAMESPACE}),
    "both": frozenset({oldmemo.oldmemo.NAMESPACE, twomemo.twomemo.NAMESPACE}),
}


def limit_backends(namespaces: FrozenSet[str]) -> None:
    """Make slixmpp-omemo's SessionManager load only the backends of `namespaces` (it loads
    Twomemo and Oldmemo). A device list push or refresh for a namespace not loaded is ignored
    (python-omemo would raise UnknownNamespace), so the device speaks only those versions: it
    publishes only their device lists and bundles, and cannot decrypt the others."""
    import slixmpp_omemo.xep_0384 as plugin_module  # pylint: disable=import-outside-toplevel
    make = plugin_module._make_session_manager  # pylint: disable=protected-access

    def limited(xmpp: Any, xep: Any) -> Any:
        base = make(xmpp, xep)

        class Limited(base):  # type: ignore
            @classmethod
            async def create(cls, backends: Any, *args: Any, **kwargs: Any) -> Any:
                return await super().create([b for b in backends if b.namespace in namespaces], *args, **kwargs)

            async def update_device_list(self, namespace: str, bare_jid: str, device_list: Any) -> None:
                if namespace in namespaces:
                    await super().update_device_list(namespace, bare_jid, device_list)

            async def refresh_device_list(self, namespace: str, bare_jid: str) -> None:
                if namespace in namespaces:
                    await super().refresh_device_list(namespace, bare_jid)

        return Limited

    plugin_module._make_session_manager = limited  # pylint: disable=protected-access


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


OMEMO_NAMESPACES = (oldmemo.oldmemo.NAMESPACE, twomemo.twomemo.NAMESPACE)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")  # python-omemo's Storage.store_bytes format


def reset_identity(path: Path, bare_jid: str) -> Dict[str, Any]:
    """Give the state file at `path` a new identity key pair, keeping the device id.

    python-omemo keeps the identity key pair under /ikp/{is_seed,key} and the device id under
    /own_device_id; both backends derive their X3DH state (/<ns>/x3dh: signed pre key, pre keys) and
    their sessions (/<ns>/<jid>/<device>/...) from that identity, so those are dropped. The own device's
    record (/devices/<own>/<id>/identity_key) and its trust entry are rewritten for the new key. The
    record's namespace list is emptied on purpose: on the next start the SessionManager then treats both
    backends as newly added and does what a first run does for them (100 fresh pre keys, a new signed
    pre key, bundle upload, own device list refresh). Device records and trust of other JIDs stay.
    Without a device id in the file there is nothing to keep: the file is removed (fresh first start).
    """
    if not path.exists():
        return {"mode": "fresh-device", "reason": "no state file"}
    data: Dict[str, Any] = json.loads(path.read_text("utf8") or "{}")
    device_id = data.get("/own_device_id")
    if not isinstance(device_id, int):
        path.unlink()
        return {"mode": "fresh-device", "reason": "no device id in the state file"}
    own = "/devices/%s/%d" % (bare_jid, device_id)
    old_key = data.get(own + "/identity_key")
    old_trust = data.get("/trust/%s/%s" % (bare_jid, old_key)) if old_key else None
    keep: Dict[str, Any] = {}
    for k, v in data.items():
        if k.startswith("/ikp/") or k.startswith("/queue/") or k == "/trust/%s/%s" % (bare_jid, old_key):
            continue
        if any(k.startswith("/%s/" % ns) for ns in OMEMO_NAMESPACES):
            continue  # X3DH state, pre key ids, sessions: all bound to the old identity
        keep[k] = v
    seed = secrets.token_bytes(32)
    identity_key = xeddsa.seed_to_ed25519_pub(seed)  # what IdentityKeyPairSeed(seed).identity_key is
    keep["/ikp/is_seed"] = True
    keep["/ikp/key"] = b64(seed)
    keep[own + "/identity_key"] = b64(identity_key)
    keep[own + "/namespaces"] = []
    keep[own + "/active"] = {}
    keep["/trust/%s/%s" % (bare_jid, b64(identity_key))] = old_trust or "undecided"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(keep), "utf8")
    os.replace(tmp, path)
    return {"mode": "same-device", "device_id": device_id}


def key_elements(stanza_xml: ET.Element) -> Any:
    for ns in OMEMO_NAMESPACES:
        yield from stanza_xml.iter("{%s}key" % ns)


def is_prekey(key_elt: ET.Element) -> bool:
    return (key_elt.get("prekey") or key_elt.get("kex") or "").lower() in ("true", "1")


def nick_element(nick: str) -> ET.Element:
    """XEP-0172: <nick xmlns='http://jabber.org/protocol/nick'>nick</nick>."""
    el = ET.Element("{%s}nick" % NICK_NS)
    el.text = nick
    return el


def has_payload(stanza_xml: ET.Element) -> bool:
    """Whether the stanza's legacy or OMEMO 2 <encrypted> carries a <payload> (else: key transport)."""
    return any(el.tag.endswith("}payload") for el in stanza_xml.iter())


def sender_device(stanza_xml: ET.Element) -> Optional[int]:
    for ns in OMEMO_NAMESPACES:
        header = stanza_xml.find("{%s}encrypted/{%s}header" % (ns, ns))
        if header is not None and (header.get("sid") or "").isdigit():
            return int(header.get("sid"))
    return None


# ---------- file transfer: XEP-0363 upload, XEP-0454 aesgcm://, XEP-0066 OOB ----------
HTTP_UPLOAD_NS = "urn:xmpp:http:upload:0"
OOB_NS = "jabber:x:oob"
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
# XEP-0454: aesgcm://host/path#<IV hex><key hex>, a 12-byte IV (Conversations today) or a 16-byte
# one (older clients): 88 or 96 hex digits. The whole (stripped) body must be that one URL.
AESGCM_RE = re.compile(r"aesgcm://([^\s#]+)#([0-9a-fA-F]{88}|[0-9a-fA-F]{96})")
GCM_TAG = 16
FILE_CHUNK = 1 << 16
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)


def file_link(body: Optional[str], oob_url: Optional[str]) -> Optional[Dict[str, Any]]:
    """What a message body points to as a shared file, as Conversations recognises it: a body that
    is exactly one aesgcm:// URL (XEP-0454: fetched as https, decrypted with the fragment's IV and
    key), or exactly the https URL of its XEP-0066 <x xmlns='jabber:x:oob'><url/></x>."""
    text = (body or "").strip()
    m = AESGCM_RE.fullmatch(text)
    if m:
        frag = bytes.fromhex(m.group(2))
        return {"url": "https://" + m.group(1), "iv": frag[:-32], "key": frag[-32:]}
    if oob_url and text == oob_url.strip() and text.lower().startswith("https://"):
        return {"url": text, "iv": None, "key": None}
    return None


def oob_url_of(x: ET.Element) -> Optional[str]:
    url = x.find("{%s}x/{%s}url" % (OOB_NS, OOB_NS))
    return url.text if url is not None and url.text else None


def https_context(ca_file: Optional[str]) -> ssl.SSLContext:
    """Trusts the world's test CA (the cert of Prosody's https port is signed by it)."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


async def download_file(url: str, ca_file: Optional[str], iv: Optional[bytes] = None,
                        key: Optional[bytes] = None) -> Dict[str, Any]:
    """GETs `url` in chunks; with a key, AES-256-GCM-decrypts it (the last 16 bytes are the tag).
    Returns the "file" field of a received event: sha256/size of the plaintext, or ok false + error."""
    res: Dict[str, Any] = {"url": url, "encrypted": key is not None}
    try:
        digest, size = hashlib.sha256(), 0
        dec = Cipher(algorithms.AES(key), modes.GCM(iv)).decryptor() if key is not None else None
        held = b""  # encrypted: the last 16 bytes seen so far (maybe the tag)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            async with http.get(url, ssl=https_context(ca_file)) as r:
                if r.status != 200:
                    raise RuntimeError("GET %s: HTTP %d" % (url, r.status))
                res["content_type"] = r.headers.get("Content-Type")
                async for chunk in r.content.iter_chunked(FILE_CHUNK):
                    if dec is not None:
                        chunk = held + chunk
                        held = chunk[-GCM_TAG:]
                        chunk = dec.update(chunk[:-GCM_TAG])
                    digest.update(chunk)
                    size += len(chunk)
        if dec is not None:
            if len(held) < GCM_TAG:
                raise ValueError("shorter than the GCM tag")
            last = dec.finalize_with_tag(held)  # raises InvalidTag on a wrong key or bad data
            digest.update(last)
            size += len(last)
        res.update(sha256=digest.hexdigest(), size=size, ok=True)
    except Exception as e:  # pylint: disable=broad-except
        log.warning("file download %s failed", url, exc_info=True)
        res.update(ok=False, error="%s: %s" % (type(e).__name__, e))
    return res


def guess_mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def aesgcm_chunks(path: str, iv: bytes, key: bytes, digest: Any):
    """The file AES-256-GCM-encrypted the way Conversations does it (tag appended), in chunks;
    `digest` gets the plaintext."""
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(FILE_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            yield enc.update(chunk)
    yield enc.finalize() + enc.tag


async def plain_chunks(path: str, digest: Any):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(FILE_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            yield chunk


class Peer(ClientXMPP):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__(a.jid, a.password)
        self.a = a
        self.ready = asyncio.Event()
        self.failed: Optional[str] = None
        self.received = 0
        self.done = asyncio.Event()
        self.serving = False
        self.quitting = False
        self.omemo_lock = asyncio.Lock()  # python-omemo is not written for interleaved encrypt/decrypt
        self.inbox: "asyncio.Queue[Message]" = asyncio.Queue()
        self.sessions = 0
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("omemo_initialized", lambda *_: self.ready.set())
        self.add_event_handler("failed_auth", self.on_fail)
        self.add_event_handler("ssl_invalid_chain", self.on_fail)
        self.add_event_handler("ssl_invalid_cert", self.on_fail)
        self.add_event_handler("disconnected", self.on_disconnected)
        if a.manual_subscriptions:
            self.auto_authorize = None  # neither approve nor deny by ourselves
            self.auto_subscribe = False
        for ptype in SUBSCRIPTION_TYPES:
            self.add_event_handler("presence_" + ptype, self.on_subscription)
        # A plain callback keeps the arrival order; one worker task decrypts them one by one.
        self.register_handler(Callback("omemo-msgs", MatchXPath("{%s}message" % self.default_ns), self.inbox.put_nowait))

    def on_fail(self, ev: Any = None) -> None:
        self.failed = "connection/auth failed: %s" % (ev,)
        self.ready.set()
        self.done.set()

    def on_subscription(self, pres: Any) -> None:
        ev: Dict[str, Any] = {"event": "subscription", "from": str(pres["from"].bare), "type": pres["type"]}
        nick = pres.xml.find("{%s}nick" % NICK_NS)
        if nick is not None:
            ev["nick"] = nick.text or ""
        out(ev)

    def send_subscription(self, to: str, ptype: str, nick: Optional[str] = None) -> None:
        pres = self.make_presence(pto=JID(to).bare, ptype=ptype)
        if nick is not None:
            pres.xml.append(nick_element(nick))
        pres.send()

    def on_disconnected(self, _ev: Any = None) -> None:
        if self.serving and not self.quitting:
            out({"event": "disconnected"})
            asyncio.get_event_loop().call_later(1.0, self.reconnect)

    def reconnect(self) -> None:
        if not self.quitting:
            host, port = self.a.server.rsplit(":", 1)
            self.connect(host, int(port))

    async def on_start(self, _ev: Any) -> None:
        self.sessions += 1
        # Announced for the bound full JID (disco keeps features per JID), and hashed into the
        # XEP-0115 caps of the presence below.
        for var in MESSAGE_FEATURES:
            if var not in self.a.without_feature:
                await self.plugin["xep_0030"].add_feature(var)
        await self.plugin["xep_0115"].update_caps()
        self.send_presence()
        await self.get_roster()
        await self.plugin["xep_0384"].get_session_manager()  # publishes device list + bundles
        if self.sessions > 1 and self.serving:
            out({"event": "reconnected", "jid": str(self.boundjid)})

    async def inbox_worker(self) -> None:
        while True:
            stanza = await self.inbox.get()
            try:
                await self.on_message(stanza)
            except Exception as e:  # pylint: disable=broad-except
                log.warning("message handling failed", exc_info=True)
                out({"event": "error", "from": str(stanza["from"]), "id": stanza["id"], "error": "%s: %s" % (type(e).__name__, e)})

    async def decrypt(self, stanza: Message, enc: Any, sender: str) -> Dict[str, Any]:
        xep: XEP_0384 = self.plugin["xep_0384"]
        if twomemo.twomemo.NAMESPACE in enc:
            sm = await xep.get_session_manager()
            elt = stanza.xml.find("{%s}encrypted" % twomemo.twomemo.NAMESPACE)
            msg = twomemo.etree.parse_message(elt, sender)
            plaintext, dev, _ = await sm.decrypt(msg)
            rec: Dict[str, Any] = {"ns": twomemo.twomemo.NAMESPACE, "device_id": dev.device_id}
            if plaintext is None:
                return dict(rec, body=None)
            return dict(rec, **sce_parse(plaintext, sender))
        dec, dev = await xep.decrypt_message(stanza)
        return {"ns": oldmemo.oldmemo.NAMESPACE, "device_id": dev.device_id, "body": dec["body"] or None}

    async def forget_identity(self, sender: str, device_id: Optional[int]) -> Optional[Dict[str, Any]]:
        """After a PublicDataInconsistency: drop the stored identity key of the sender's device so the
        next decrypt fetches the bundle again. Returns the identity_changed event, None if not applicable."""
        if device_id is None:
            return None
        storage: Storage = self.plugin["xep_0384"].storage
        key = "/devices/%s/%d/identity_key" % (sender, device_id)
        old = (await storage.load_bytes(key)).maybe(None)
        if old is None:
            return None
        await storage.delete(key)
        return {"event": "identity_changed", "from": sender, "device_id": device_id, "old_identity_key": old.hex()}

    async def on_message(self, stanza: Message) -> None:
        t_in = time.time()
        if stanza["type"] == "error":
            out({"event": "message_error", "from": str(stanza["from"]), "id": stanza["id"],
                 "condition": stanza["error"]["condition"]})
            return
        if stanza["type"] not in ("chat", "normal"):
            return
        xep: XEP_0384 = self.plugin["xep_0384"]
        enc = xep.is_encrypted(stanza)
        own = stanza["from"].bare == self.boundjid.bare  # (carbons come wrapped: nothing here matches them)
        meta = meta_fields(stanza.xml)
        # A reaction or a retraction is always "meta" (its body is only a fallback); a marker, a
        # receipt or a chat state only when the stanza has no body (with one, it is a message).
        if not enc and ("reactions" in meta or "retract" in meta or (meta and not stanza["body"])):
            out(dict({"event": "meta", "from": str(stanza["from"]), "id": stanza["id"]}, **meta))
            return
        ext = extension_fields(stanza.xml)
        if "chat_state" in meta:
            ext["chat_state"] = meta["chat_state"]  # Conversations sends <active/> with its messages
        if ext.get("receipt_request") and stanza["id"] and not own and not self.a.no_receipts:
            self.send_receipt(stanza)
        if not enc:
            if stanza["body"]:
                plain = dict({"event": "plain", "from": str(stanza["from"]), "id": stanza["id"], "body": stanza["body"]}, **ext)
                await self.add_file(plain, stanza)
                out(plain)
            return
        sender = stanza["from"].bare
        if sender == self.boundjid.bare:
            return  # carbon of our own message from another device
        sm = await xep.get_session_manager()
        own_id = (await sm.get_own_device_information())[0].device_id
        prekey = any(is_prekey(k) for k in key_elements(stanza.xml) if (k.get("rid") or "") == str(own_id))
        rec: Dict[str, Any] = dict({"event": "received", "from": str(stanza["from"]), "id": stanza["id"]}, **ext)
        try:
            async with self.omemo_lock:
                try:
                    rec.update(await self.decrypt(stanza, enc, sender))
                except omemo.PublicDataInconsistency:
                    changed = None if self.a.strict_identity else await self.forget_identity(sender, sender_device(stanza.xml))
                    if changed is None:
                        raise
                    rec.update(await self.decrypt(stanza, enc, sender))
                    devs = await sm.get_device_information(sender)
                    new = next((d.identity_key for d in devs if d.device_id == changed["device_id"]), b"")
                    out(dict(changed, new_identity_key=new.hex()))
        except Exception as e:  # pylint: disable=broad-except
            if type(e).__name__ == "MessageNotForUs" and not has_payload(stanza.xml):
                # A key-transport message (session completion or repair) for another device of
                # this account: every resource gets it, only the addressed device can use it.
                log.info("key-transport message for another device from %s", sender)
                out({"event": "not_for_us", "from": str(stanza["from"]), "id": stanza["id"]})
                return
            log.warning("decryption failed", exc_info=True)
            rec.update(event="error", error="%s: %s" % (type(e).__name__, e), device_id=sender_device(stanza.xml))
        if rec["event"] == "received":
            rec["prekey"] = prekey
            rec["t_in"], rec["t"] = round(t_in, 6), round(time.time(), 6)
            if rec.get("body") is None:
                rec.pop("body", None)
                rec["event"] = "empty"
                log.info("OMEMO message without payload (key transport/heartbeat) from %s", sender)
                if self.a.cmd != "serve":
                    return
        if rec["event"] == "received":
            await self.add_file(rec, stanza)
        if self.a.show_xml:
            rec["xml"] = str(stanza)
        out(rec)
        if rec["event"] == "received" and getattr(self.a, "echo", False) and rec.get("body"):
            # The demo's contact: answer every message.
            try:
                await self.encrypt_and_send(sender, "bob heard: " + rec["body"])
            except Exception:  # pylint: disable=broad-except
                log.warning("echo failed", exc_info=True)
        if rec["event"] == "received":
            self.received += 1
            if self.a.cmd == "recv" and self.received >= self.a.count:
                self.done.set()

    def send_receipt(self, stanza: Message) -> None:
        """XEP-0184 as Conversations answers a <request/> (MessageGenerator.received): the
        original's type, to its full JID, <received id=…/> and a <store/> hint, sent on arrival."""
        ack = self.make_message(mto=stanza["from"], mtype=stanza["type"])
        ack["id"] = secrets.token_hex(8)
        ack.xml.append(ET.Element("{%s}received" % RECEIPTS_NS, {"id": stanza["id"]}))
        ack.xml.append(ET.Element("{%s}store" % HINTS_NS))
        ack.send()

    async def encrypt_and_send(self, to: str, text: str, stanza_id: Optional[str] = None, refresh: bool = True,
                               extra: Optional[Dict[str, Any]] = None) -> Message:
        xep: XEP_0384 = self.plugin["xep_0384"]
        sm = await xep.get_session_manager()
        ns = NS[self.a.ns]
        to_jid = JID(to)
        if refresh:
            await xep.refresh_device_lists({to_jid})
        extra = extra or {}
        quote = reply_quote(extra["fallback"]) if isinstance(extra.get("fallback"), str) else None
        if quote is not None:
            text = quote + text  # the quote is encrypted with the answer (legacy OMEMO: the body)
        if ns == twomemo.twomemo.NAMESPACE:
            plaintext = sce_envelope(text, to_jid.bare, self.boundjid.bare)
        else:
            plaintext = text.encode("utf-8")
        async with self.omemo_lock:
            messages, errors = await sm.encrypt(frozenset({to_jid.bare}), {ns: plaintext}, backend_priority_order=[ns])
        if errors:
            log.info("non-critical encryption errors: %s", errors)
        if not messages:
            raise RuntimeError("nothing encrypted: no usable device of %s (%s)" % (to_jid.bare, errors))
        stanza = self.make_message(mto=to_jid, mtype="chat")
        if stanza_id:
            stanza["id"] = stanza_id
        if not stanza["id"]:
            stanza["id"] = secrets.token_hex(8)
        stanza["body"] = xep.fallback_message
        stanza.enable("store")
        stanza.xml.append(ET.Element("{%s}origin-id" % SID_NS, {"id": stanza["id"]}))
        if extra.get("reply_to"):
            attrs = {"id": extra["reply_to"]}
            if extra.get("reply_to_jid"):
                attrs["to"] = extra["reply_to_jid"]
            stanza.xml.append(ET.Element("{%s}reply" % REPLY_NS, attrs))
        if quote is not None:
            # XEP-0428 over the quote; offsets in code points of the (decrypted) body
            fb = ET.Element("{%s}fallback" % FALLBACK_NS, {"for": REPLY_NS})
            fb.append(ET.Element("{%s}body" % FALLBACK_NS, {"start": "0", "end": str(len(quote))}))
            stanza.xml.append(fb)
        if extra.get("replace"):
            stanza.xml.append(ET.Element("{%s}replace" % CORRECT_NS, {"id": extra["replace"]}))
        if extra.get("markable"):
            stanza.xml.append(ET.Element("{%s}markable" % MARKERS_NS))
        if extra.get("receipt"):
            stanza.xml.append(ET.Element("{%s}request" % RECEIPTS_NS))
        if self.a.nick:
            stanza.xml.append(nick_element(self.a.nick))
        for m in messages:
            ser = twomemo.etree.serialize_message(m) if m.namespace == twomemo.twomemo.NAMESPACE else oldmemo.etree.serialize_message(m)
            stanza.append(ser)
        stanza["eme"]["namespace"] = ns
        stanza["eme"]["name"] = "OMEMO"
        stanza.send()
        return stanza

    # ---------- file transfer ----------
    async def upload_service(self) -> JID:
        """--upload-jid / $XMPP_UPLOAD_JID, else the item of our domain whose disco#info has XEP-0363."""
        if getattr(self, "_upload_jid", None) is None:
            if self.a.upload_jid:
                self._upload_jid = JID(self.a.upload_jid)
            else:
                disco = self.plugin["xep_0030"]
                items = await disco.get_items(jid=self.boundjid.domain, timeout=10)
                for item in items.xml.iter("{%s}item" % DISCO_ITEMS_NS):
                    info = await disco.get_info(jid=item.get("jid"), timeout=10)
                    if any(f.get("var") == HTTP_UPLOAD_NS for f in info.xml.iter("{%s}feature" % DISCO_INFO_NS)):
                        self._upload_jid = JID(item.get("jid"))
                        break
                else:
                    raise RuntimeError("no XEP-0363 upload service among the disco items of %s" % self.boundjid.domain)
        return self._upload_jid

    async def upload(self, name: str, size: int, mime: str, chunks: Any) -> str:
        """XEP-0363: a slot for `name` (`size` bytes, `mime`), then a PUT of `chunks` (an async iterator
        of exactly `size` bytes) to its put URL with the slot's headers. Returns the get URL."""
        iq = self.make_iq_get(ito=await self.upload_service())
        iq.xml.append(ET.Element("{%s}request" % HTTP_UPLOAD_NS,
                                 {"filename": name, "size": str(size), "content-type": mime}))
        slot = (await iq.send(timeout=30)).xml.find("{%s}slot" % HTTP_UPLOAD_NS)
        put = slot.find("{%s}put" % HTTP_UPLOAD_NS) if slot is not None else None
        get = slot.find("{%s}get" % HTTP_UPLOAD_NS) if slot is not None else None
        if put is None or get is None:
            raise RuntimeError("slot answer without put/get URLs")
        headers = {h.get("name"): (h.text or "") for h in put.findall("{%s}header" % HTTP_UPLOAD_NS)
                   if h.get("name") in ("Authorization", "Cookie", "Expires")}  # XEP-0363 allows only these
        headers["Content-Type"] = mime
        headers["Content-Length"] = str(size)  # streamed, not chunked: Prosody checks the length
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            async with http.put(put.get("url"), data=chunks, headers=headers, ssl=https_context(self.a.ca_file)) as r:
                if r.status not in (200, 201):
                    raise RuntimeError("PUT %s: HTTP %d %s" % (put.get("url"), r.status, (await r.text())[:200]))
        return get.get("url")

    async def send_file(self, cmd: Dict[str, Any], encrypted: bool) -> Dict[str, Any]:
        """send-file (XEP-0454: AES-256-GCM, fresh key and 12-byte IV, tag appended; the OMEMO-encrypted
        body is aesgcm://…#<iv><key>) or send-file-plain (plain upload; unencrypted body = the https URL
        with an XEP-0066 <x xmlns='jabber:x:oob'/>). Returns the file-sent event."""
        to, path, name, mime, sid = (cmd.get(k) for k in ("to", "path", "name", "mime", "id"))
        if not isinstance(to, str) or not isinstance(path, str) \
                or not all(v is None or isinstance(v, str) for v in (name, mime, sid)):
            raise ValueError("%s needs \"to\" and \"path\" strings (\"name\", \"mime\", \"id\": optional strings)" % cmd["cmd"])
        size = os.path.getsize(path)
        name = name or os.path.basename(path)
        mime = mime or guess_mime(name)
        digest = hashlib.sha256()
        if encrypted:
            key, iv = secrets.token_bytes(32), secrets.token_bytes(12)
            url = await self.upload(name, size + GCM_TAG, mime, aesgcm_chunks(path, iv, key, digest))
            if not url.startswith("https://"):
                raise RuntimeError("slot get URL is not https (XEP-0454 needs it): %s" % url)
            body = "aesgcm://%s#%s%s" % (url[len("https://"):], iv.hex(), key.hex())
            st = await self.encrypt_and_send(to, body, sid)
            prekey = any(is_prekey(k) for k in key_elements(st.xml))
        else:
            url = await self.upload(name, size, mime, plain_chunks(path, digest))
            body = url
            x = ET.Element("{%s}x" % OOB_NS)
            ET.SubElement(x, "{%s}url" % OOB_NS).text = url
            st = self.send_plain(to, body, [x], sid)
            prekey = False
        ev: Dict[str, Any] = {"event": "file-sent", "cmd": cmd["cmd"], "id": st["id"], "to": to,
                              "sha256": digest.hexdigest(), "size": size, "url": url, "name": name,
                              "mime": mime, "encrypted": encrypted, "body": body, "prekey": prekey}
        if self.a.show_xml:
            ev["xml"] = str(st)
        return ev

    def send_plain(self, to: str, body: str, children: list, stanza_id: Optional[str] = None) -> Message:
        """An unencrypted chat message with a body (and `children`), as a client without OMEMO sends it."""
        stanza = self.make_message(mto=JID(to), mtype="chat")
        stanza["id"] = stanza_id or secrets.token_hex(8)
        stanza["body"] = body
        for child in children:
            stanza.xml.append(child)
        stanza.xml.append(ET.Element("{%s}origin-id" % SID_NS, {"id": stanza["id"]}))
        stanza.enable("store")
        if self.a.nick:
            stanza.xml.append(nick_element(self.a.nick))
        stanza.send()
        return stanza

    async def add_file(self, rec: Dict[str, Any], stanza: Message) -> None:
        """If the message shares a file (see file_link), downloads (and decrypts) it into rec["file"]."""
        link = file_link(rec.get("body"), oob_url_of(stanza.xml))
        if link is not None:
            rec["file"] = await download_file(link["url"], self.a.ca_file, link["iv"], link["key"])

    def send_meta(self, to: str, children: list, hint: str, body: Optional[str] = None,
                  stanza_id: Optional[str] = None) -> Message:
        """An unencrypted chat message carrying only `children` (reactions, a retraction, a
        marker, a chat state) and an XEP-0334 `hint`, as Conversations / Dino send them, to `to`
        as given (bare or full JID)."""
        stanza = self.make_message(mto=JID(to), mtype="chat")
        stanza["id"] = stanza_id or secrets.token_hex(8)
        if body is not None:
            stanza["body"] = body
        for child in children:
            stanza.xml.append(child)
        stanza.xml.append(ET.Element("{%s}%s" % (HINTS_NS, hint)))
        stanza.send()
        return stanza

    async def device_ids(self, of: str) -> list:
        try:
            dl = await self.plugin["xep_0060"].get_items(JID(of).bare, OLD_DEVICELIST_NODE, timeout=10)
        except IqError as e:
            if e.condition == "item-not-found":
                return []
            raise
        return [int(d.get("id")) for d in dl.xml.iter("{%s}device" % oldmemo.oldmemo.NAMESPACE)]

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the limit
                out({"event": "error", "error": "command line too long"})
                continue
            if not line:
                if getattr(self.a, "echo", False):
                    await asyncio.Event().wait()  # an echo peer runs until killed
                return  # EOF
            if not line.strip():
                continue
            cmd: Any = None
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                    raise ValueError("expected a JSON object with a string \"cmd\"")
                name = cmd["cmd"]
                if name == "quit":
                    return
                if name == "ping":
                    out({"event": "pong"})
                elif name == "send":
                    to, text, sid = cmd.get("to"), cmd.get("text"), cmd.get("id")
                    if not isinstance(to, str) or not isinstance(text, str) or not (sid is None or isinstance(sid, str)):
                        raise ValueError("send needs \"to\" and \"text\" strings (and an optional string \"id\")")
                    extra = send_options(cmd)
                    st = await self.encrypt_and_send(to, text, sid, extra=extra)
                    sent = {"event": "sent", "id": st["id"], "to": to, "prekey": any(is_prekey(k) for k in key_elements(st.xml))}
                    if "fallback" in extra:
                        quote = reply_quote(extra["fallback"])
                        sent["body"] = quote + text
                        sent["fallback"] = [0, len(quote)]
                    if self.a.show_xml:
                        sent["xml"] = str(st)
                    out(sent)
                elif name in ("send-file", "send-file-plain"):
                    out(await self.send_file(cmd, encrypted=name == "send-file"))
                elif name == "burst":
                    to, count, prefix = cmd.get("to"), cmd.get("count"), cmd.get("prefix")
                    if not isinstance(to, str) or not isinstance(count, int) or count < 0 or not isinstance(prefix, str):
                        raise ValueError("burst needs \"to\", \"prefix\" strings and a \"count\" >= 0")
                    stamp, interval = bool(cmd.get("stamp")), cmd.get("interval") or 0
                    if not isinstance(interval, (int, float)) or interval < 0:
                        raise ValueError("burst's \"interval\" is seconds >= 0")
                    started = time.monotonic()
                    await self.plugin["xep_0384"].refresh_device_lists({JID(to)})
                    paced_from = time.monotonic()
                    for i in range(count):
                        if interval:
                            await asyncio.sleep(max(0.0, paced_from + i * interval - time.monotonic()))
                        text = "%s %d" % (prefix, i)
                        if stamp:
                            text += " @%.6f" % time.time()
                        await self.encrypt_and_send(to, text, "%s-%d" % (prefix, i), refresh=False)
                    out({"event": "burst_sent", "to": to, "count": count, "prefix": prefix,
                         "seconds": round(time.monotonic() - started, 3)})
                elif name in META_COMMANDS:
                    to, sid = cmd.get("to"), cmd.get("stanza_id")
                    if not isinstance(to, str) or not (sid is None or isinstance(sid, str)):
                        raise ValueError("%s needs a \"to\" string (and an optional string \"stanza_id\")" % name)
                    st = self.send_meta(to, *meta_stanza(cmd), stanza_id=sid)
                    ev = {"event": "sent", "cmd": name, "id": st["id"], "to": to}
                    if self.a.show_xml:
                        ev["xml"] = str(st)
                    out(ev)
                elif name in ("subscribe", "approve"):
                    to, nick = cmd.get("to"), cmd.get("nick")
                    if not isinstance(to, str) or not (nick is None or isinstance(nick, str)) or (name == "approve" and nick is not None):
                        raise ValueError("%s needs a \"to\" string (subscribe: and an optional string \"nick\")" % name)
                    self.send_subscription(to, "subscribe" if name == "subscribe" else "subscribed", nick)
                    out({"event": "ok", "cmd": name, "to": to})
                elif name == "presence":
                    show, status, ptype = cmd.get("show"), cmd.get("status"), cmd.get("type")
                    if show not in (None, "away", "chat", "dnd", "xa") or ptype not in (None, "unavailable") \
                            or not (status is None or isinstance(status, str)):
                        raise ValueError("presence takes \"show\" (away|chat|dnd|xa), \"status\" and \"type\" (unavailable)")
                    self.send_presence(pshow=show, pstatus=status, ptype=ptype)
                    out({"event": "ok", "cmd": name})
                elif name == "devices":
                    of = cmd.get("of")
                    if not isinstance(of, str):
                        raise ValueError("devices needs an \"of\" string")
                    out({"event": "devices", "of": of, "device_ids": await self.device_ids(of)})
                else:
                    raise ValueError("unknown cmd %r" % name)
            except Exception as e:  # pylint: disable=broad-except
                log.warning("command failed", exc_info=not isinstance(e, ValueError))
                detail = e.condition if isinstance(e, IqError) else e
                ev: Dict[str, Any] = {"event": "error", "error": "%s: %s" % (type(e).__name__, detail)}
                if isinstance(cmd, dict):
                    ev["cmd"] = cmd.get("cmd")
                    if cmd.get("id") is not None:
                        ev["id"] = cmd.get("id")
                out(ev)

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
    bare = JID(a.jid).bare
    store_file = store_dir / ((a.store_name or bare) + ".json")
    reset: Optional[Dict[str, Any]] = None
    if a.reset_identity:
        reset = reset_identity(store_file, bare)
        log.info("identity reset: %s", reset)
    if a.resource:
        a.jid = "%s/%s" % (bare, a.resource)
    if a.backends != "both":
        limit_backends(BACKENDS[a.backends])
    xmpp = Peer(a)
    for p in ("xep_0030", "xep_0060", "xep_0163", "xep_0199", "xep_0280", "xep_0334", "xep_0380"):
        xmpp.register_plugin(p)
    # XEP-0198: the peer answers the server's ack requests; a SIGKILLed peer leaves a hibernating session.
    xmpp.register_plugin("xep_0198")
    xmpp.register_plugin("xep_0384", {"json_file_path": str(store_file)}, module=sys.modules[__name__])
    # XEP-0184 requests are answered by Peer.send_receipt alone (never with --no-receipts). No plugin
    # above pulls in slixmpp's xep_0184 (auto_ack=True by default); should one ever, it must not ack too.
    # XEP-0115 caps over the features Conversations announces for what the bridge sends besides
    # text (see Peer.on_start; --without-feature leaves one out, for a client that lacks it).
    xmpp.register_plugin("xep_0115")
    if xmpp.plugin.enabled("xep_0184"):
        xmpp.plugin["xep_0184"].auto_ack = False
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
    worker = asyncio.ensure_future(xmpp.inbox_worker())
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
        ready: Dict[str, Any] = {
            "event": "ready", "jid": str(xmpp.boundjid), "device_id": own.device_id,
            "namespaces": sorted(own.namespaces),
            "identity_key": own.identity_key.hex(),  # Ed25519 form, as python-omemo stores it
            "identity_fingerprint": "".join(sm.format_identity_key(own.identity_key)),  # Curve25519 form
            "store": str(store_file),
        }
        if reset is not None:
            ready["identity_reset"] = reset["mode"]
        out(ready)
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
        elif a.cmd == "serve":
            xmpp.serving = True
            await xmpp.serve()
            await asyncio.sleep(a.linger)  # let queued stanzas and heartbeats go out
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
        xmpp.quitting = True
        worker.cancel()
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
    p.add_argument("--backends", choices=sorted(BACKENDS), default="both",
                   help="OMEMO versions this device speaks (default both): oldmemo = legacy only (like Conversations), "
                        "twomemo = OMEMO 2 only; it publishes, follows and decrypts only those")
    p.add_argument("--store", help="dir for <jid>.json OMEMO state (default $WORLD_STATE/omemo)")
    p.add_argument("--store-name", help="state file name in the store dir, without .json (default: the bare JID)")
    p.add_argument("--resource", help="bind this resource (two instances of one account: two devices)")
    p.add_argument("--reset-identity", action="store_true",
                   help="new identity key pair before connecting, same device id (see SERVE above)")
    p.add_argument("--strict-identity", action="store_true",
                   help="a changed identity key of a known device is a decryption error")
    p.add_argument("--nick", help="send this XEP-0172 nickname in every message")
    p.add_argument("--without-feature", action="append", default=[], metavar="VAR",
                   help="do not announce this one of the XEP-0461/0308/0444/0424/0333/0184/0085 disco#info "
                        "features announced (with XEP-0115 caps) by default; repeatable")
    p.add_argument("--no-receipts", action="store_true",
                   help="do not answer XEP-0184 receipt requests (by default a <received/> goes back, as Conversations does)")
    p.add_argument("--manual-subscriptions", action="store_true",
                   help="do not answer subscription requests by ourselves (see the approve command)")
    p.add_argument("--ca-file", default=os.environ.get("XMPP_CA_FILE"),
                   help="trust this CA for STARTTLS and for https uploads/downloads (the world's test CA)")
    p.add_argument("--upload-jid", default=os.environ.get("XMPP_UPLOAD_JID"),
                   help="XEP-0363 upload service (default $XMPP_UPLOAD_JID, else found by disco on our domain)")
    p.add_argument("--tls", choices=["starttls", "plain"], default=os.environ.get("XMPP_TLS", "starttls"),
                   help="starttls (default) or plain (no TLS; loopback only)")
    p.add_argument("--insecure-tls", action="store_true", help="do not verify the server certificate")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--linger", type=float, default=None,
                   help="seconds to stay connected after the work (default 1; serve: 0.3)")
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
    sv = sub.add_parser("serve")
    sv.add_argument("--echo", action="store_true",
                    help="answer every received message with 'bob heard: <text>' and keep running at EOF (the demo's contact)")
    # Allow the common options after the sub-command too (SUPPRESS keeps the main parser's value).
    for sp in (s, r, b, sv, sub.choices["publish"]):
        sp.add_argument("--ns", choices=sorted(NS), default=argparse.SUPPRESS)
        sp.add_argument("--backends", choices=sorted(BACKENDS), default=argparse.SUPPRESS)
        sp.add_argument("--timeout", type=float, default=argparse.SUPPRESS)
        sp.add_argument("--linger", type=float, default=argparse.SUPPRESS)
        sp.add_argument("--show-xml", action="store_true", default=argparse.SUPPRESS)
    for sp in (s, r, b, sv, sub.choices["publish"]):
        sp.add_argument("--store-name", default=argparse.SUPPRESS)
        sp.add_argument("--resource", default=argparse.SUPPRESS)
        sp.add_argument("--reset-identity", action="store_true", default=argparse.SUPPRESS)
        sp.add_argument("--strict-identity", action="store_true", default=argparse.SUPPRESS)
        sp.add_argument("--nick", default=argparse.SUPPRESS)
        sp.add_argument("--manual-subscriptions", action="store_true", default=argparse.SUPPRESS)
        sp.add_argument("--no-receipts", action="store_true", default=argparse.SUPPRESS)
        sp.add_argument("--without-feature", action="append", metavar="VAR", default=argparse.SUPPRESS)
    a = p.parse_args()
    if not a.password:
        p.error("--password or XMPP_PASSWORD required")
    if a.linger is None:
        a.linger = 0.3 if a.cmd == "serve" else 1.0
    logging.basicConfig(stream=sys.stderr, level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(amain(a)))


if __name__ == "__main__":
    main()
