#!/usr/bin/env python3
"""End-to-end-encrypting Matrix test client (matrix-nio[e2e], vodozemac) that a test drives as "the
Matrix user": JSON-line commands on stdin, JSON events on stdout, python logging on stderr.

  matrix_peer.py serve --state-dir STATE --user NAME [--password PW] [--device DEVNAME] [--auto-join]

Start-up: registers NAME through Synapse's shared-secret admin API (STATE/synapse/secrets.json:
registration_shared_secret, base_url) unless it exists ("User ID already taken" is fine), then logs in
with the password (default pw-NAME) as the device whose display name is DEVNAME (default "main"). The
nio crypto store and the session (user id, device id, access token; file mode 0600) live in
STATE/nio/NAME/DEVNAME/, so a restart with the same --device is the same device (restore_login, same
Olm account, sync continues from the stored token). Then it uploads its keys, syncs in the background
(long-poll timeout --sync-timeout ms, default 2000) and trusts every device it sees blindly (the tests
check decryption, not verification). "ready" comes once logged in and the first sync is done.

SERVE
  stdin, one JSON object per line (EOF = quit); "id" is optional and copied into the answer:
    {"cmd":"create_dm","invite":USER_ID,"encrypted":BOOL,"id":ID}   a DM the way Element creates one:
        preset trusted_private_chat, is_direct, the invitee in "invite", and with "encrypted" (default
        true) m.room.encryption (m.megolm.v1.aes-sha2) in initial_state. "created" comes once the
        peer's own sync shows the room with the invitee as an invited member, so a "send" right after
        works and shares the Megolm key with the invitee's devices (see KEYS below).
    {"cmd":"send","room":ROOM_ID,"text":T,"id":ID}  m.text message (or "content": a whole
        m.room.message content, or with "type" any other message event's, e.g. m.reaction); encrypted
        in an encrypted room (ignore_unverified_devices)
    {"cmd":"send-file","room":ROOM_ID,"path":PATH,"msgtype":"m.image"|"m.video"|"m.audio"|"m.file",
     "mime":M,"name":N,"voice":BOOL,"info":{...},"id":ID}  uploads PATH (in an encrypted room as an
        encrypted attachment: nio's upload(encrypt=True), AES-256-CTR; else plainly) and sends
        {"msgtype","body":N,"info":{"mimetype":M,"size":bytes,...info},"file":{"url","key","iv","hashes",
        "v":"v2"}} ("url" instead of "file" in a plain room); "voice" adds "org.matrix.msc3245.voice":{}
        and "org.matrix.msc1767.audio":{} (with "duration" when info has one), as Element's voice
        messages have. name: PATH's base name, mime: guessed from name, msgtype m.file by default.
        Answer: "sent" with "sha256" (hex, of the file), "size", "url" (mxc), "msgtype", "content"
    {"cmd":"redact","room":ROOM_ID,"event_id":E,"id":ID}  redact E, then "redacted" {"room_id","event_id"}
    {"cmd":"join","room":ROOM_ID_OR_ALIAS,"id":ID}   "joined" once the peer's sync shows the room
    {"cmd":"leave","room":ROOM_ID,"id":ID}           leave (or reject an invite), then "left"
    {"cmd":"devices","user":USER_ID,"id":ID}         the devices of USER_ID after a fresh key query
    {"cmd":"request_keys","room":ROOM_ID,"id":ID}    m.room_key_request to our own other devices for
        the undecryptable events seen so far (of ROOM_ID, or all rooms without "room"); nio answers such
        requests from our own trusted devices, so the history a new device could not read follows as
        "message" events with "late": true
    {"cmd":"ping","id":ID}                           "pong" (every earlier command is done)
    {"cmd":"quit"}                                   stop syncing, exit 0
  stdout, one JSON object per line:
    ready        {"user_id","device_id","restored"}  restored: an existing session of STATE/nio/... was used
    created      {"room_id","id"}
    sent         {"room_id","event_id","encrypted","id"}  (send-file: + "sha256","size","url","msgtype","content")
    joined       {"room_id","id"}     (no id for an --auto-join)
    left         {"room_id","id"}
    devices      {"user","device_ids","id"}
    keys_requested {"sessions","id"}  how many Megolm sessions the request covered
    pong         {"id"}
    error        {"error","cmd","id"}  a command failed (the peer keeps serving)
    invite       {"room_id","sender","encrypted_invite","is_direct"}  encrypted_invite: the invite's
                 stripped state has m.room.encryption
    message      {"room_id","sender","event_id","body","msgtype","encrypted","sender_device","content"}
                 every m.room.message of the timeline (our own too), in sync order. encrypted: it came
                 as m.room.encrypted and was decrypted; sender_device: the sending device's id when we
                 know its keys (encrypted messages only); content: the (decrypted) content
                 An m.image/m.video/m.audio/m.file message also has "file": the peer downloads the
                 media first with authenticated media (GET /_matrix/client/v1/media/download/{server}/
                 {media_id}, access token) and, for an encrypted attachment, checks the ciphertext's
                 SHA-256 against file.hashes.sha256 and decrypts it (AES-256-CTR):
                 {"ok":true,"sha256" (hex, plaintext),"size","url" (mxc),"msgtype","mimetype" (info's),
                 "info","voice" (has org.matrix.msc3245.voice),"encrypted" (came as "file"),"v"?}
                 or {"ok":false,"error",...}
    undecryptable {"room_id","sender","event_id","session_id","sender_device"}  an m.room.encrypted
                 event nio cannot decrypt (yet). If its key arrives later, the "message" follows then
                 (with "late": true).
    redaction    {"room_id","sender","event_id","redacts"}
    member       {"room_id","user","membership","sender","event_id"}  m.room.member in the timeline
    room_encrypted {"room_id"}  first time the peer sees the room's m.room.encryption
    other        {"room_id","sender","event_id","type","encrypted","content"}  any other non-state
                 timeline event (for example m.reaction)
  Timeline events of a device's very first sync (no stored sync token) carry "initial": true: for a new
  device of an existing account they are the room's recent history.

KEYS: nio shares a room's Megolm session with the devices of every user in MatrixRoom.users, and that
dict holds invited members as well as joined ones (a JoinedMembers refresh keeps the invited ones). So
the first message, sent before the invitee joined, is encrypted for the invitee's devices too (Element
does the same when history visibility allows; trusted_private_chat sets "shared"). The peer only has
to know the room and the invitee's devices first: create_dm waits for its sync to show the invite,
and every send queries the device keys of all room members first (so a device added since the last
send gets the key: nio then rotates the Megolm session), then trusts them all.

--auto-join  join every invite at once (after its "invite" event; "joined" without id follows)
Exit codes: 0 quit/EOF, 1 start-up failed (an "error" event says why), 3 stdout closed.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nio import (
    AsyncClient,
    AsyncClientConfig,
    EncryptionError,
    ForwardedRoomKeyEvent,
    InviteMemberEvent,
    JoinError,
    KeysQueryError,
    LoginResponse,
    MegolmEvent,
    RedactionEvent,
    RoomCreateError,
    RoomEncryptionEvent,
    RoomKeyEvent,
    RoomKeyRequest,
    RoomKeyRequestResponse,
    RoomLeaveError,
    RoomMemberEvent,
    RoomMessage,
    RoomPreset,
    RoomRedactResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

log = logging.getLogger("matrix_peer")

MEGOLM = "m.megolm.v1.aes-sha2"
# Synapse's default timeline limit is 10: a room joined after more messages would come "limited".
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
WAIT_ROOM = 30.0  # seconds create_dm / join / send wait for the peer's sync to show a room
MEDIA_MSGTYPES = ("m.image", "m.video", "m.audio", "m.file")
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)


def unpadded_b64decode(text: str) -> bytes:
    """Matrix's unpadded base64, standard or URL-safe (a JWK's "k" is URL-safe)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def out(obj: Dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the test that read us is gone
        log.warning("stdout closed, exiting")
        os._exit(3)


class CommandError(Exception):
    """A command that failed in an expected way (reported as an "error" event)."""


async def shared_secret_register(base: str, secret: str, user: str, password: str) -> bool:
    """Registers `user` through /_synapse/admin/v1/register; False if it already exists."""
    url = base + "/_synapse/admin/v1/register"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            nonce = (await r.json())["nonce"]
        msg = b"\x00".join(x.encode() for x in (nonce, user, password, "notadmin"))
        mac = hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac}
        async with s.post(url, json=body) as r:
            j = await r.json()
            if r.status == 200:
                return True
            if j.get("errcode") == "M_USER_IN_USE" or "already taken" in str(j.get("error", "")):
                return False
            raise RuntimeError("registering %s: HTTP %d %s" % (user, r.status, j.get("errcode") or j))


class Peer:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.client: Optional[AsyncClient] = None
        self.lock = asyncio.Lock()  # key query/claim/upload and sends never interleave
        self.synced = asyncio.Event()  # set after each processed sync, cleared before the next
        self.sync_count = 0
        self.announced_encrypted: set = set()
        # undecryptable events, retried after every sync: (room_id, MegolmEvent, initial)
        self.pending: List[Tuple[str, MegolmEvent, bool]] = []
        self.key_requests: Dict[str, Any] = {}  # request_id -> RoomKeyRequest of a not yet known own device
        self.stopping = False

    # ---------- start-up ----------
    async def start(self) -> bool:
        a = self.a
        state = os.path.abspath(a.state_dir)
        with open(os.path.join(state, "synapse", "secrets.json")) as f:
            sec = json.load(f)
        base = a.base_url or sec["base_url"]
        password = a.password or "pw-" + a.user
        store = os.path.join(state, "nio", a.user, a.device)
        os.makedirs(store, exist_ok=True)
        session_file = os.path.join(store, "session.json")
        cfg = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True,
                                max_timeout_retry_wait_time=2, request_timeout=30)
        restored = False
        if os.path.exists(session_file):
            with open(session_file) as f:
                sess = json.load(f)
            c = AsyncClient(base, sess["user_id"], device_id=sess["device_id"], store_path=store, config=cfg)
            c.restore_login(sess["user_id"], sess["device_id"], sess["access_token"])
            restored = True
            log.info("restored session of %s device %s", sess["user_id"], sess["device_id"])
        else:
            created = await shared_secret_register(base, sec["registration_shared_secret"], a.user, password)
            log.info("user %s %s", a.user, "registered" if created else "already exists")
            server_name = sec.get("server_name", "localhost")
            c = AsyncClient(base, "@%s:%s" % (a.user, server_name), store_path=store, config=cfg)
            r = await c.login(password, device_name=a.device)
            if not isinstance(r, LoginResponse):
                await c.close()
                out({"event": "error", "error": "login failed: %s" % r})
                return False
            tmp = session_file + ".tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump({"user_id": r.user_id, "device_id": r.device_id, "access_token": r.access_token}, f)
            os.replace(tmp, session_file)
            log.info("logged in as %s device %s", r.user_id, r.device_id)
        self.client = c
        await self.maintain()  # uploads the device keys and one-time keys
        await self.sync_once(first=True)
        out({"event": "ready", "user_id": c.user_id, "device_id": c.device_id, "restored": restored})
        return True

    # ---------- crypto upkeep ----------
    def trust_all(self) -> None:
        c = self.client
        for uid, devs in c.device_store.items():
            for dev_id, dev in devs.items():
                if uid == c.user_id and dev_id == c.device_id:
                    continue
                if not c.olm.is_device_verified(dev):
                    log.info("trusting %s device %s", uid, dev_id)
                    c.verify_device(dev)

    async def maintain(self) -> None:
        """What sync_forever does between syncs (to-device out, keys up, key query and claim), trust, and
        the key requests of our own other devices."""
        c = self.client
        async with self.lock:
            await c.send_to_device_messages()
            if c.should_upload_keys:
                await c.keys_upload()
            if c.should_query_keys:
                r = await c.keys_query()
                if isinstance(r, KeysQueryError):
                    log.warning("keys_query: %s", r)
            self.trust_all()
            self.continue_key_requests()
            if c.should_claim_keys:  # wedged sessions, and devices whose key request waits for a session
                await c.keys_claim(c.get_users_for_key_claiming())
                self.continue_key_requests()
            if c.outgoing_to_device_messages:
                await c.send_to_device_messages()

    def note_key_requests(self, r: SyncResponse) -> None:
        """nio drops a key request of our own device it does not know yet (a device newer than our last
        key query): keep it, query our keys, and hand it to nio again once the device is known."""
        c = self.client
        known = {d.id for d in c.device_store.active_user_devices(c.user_id)}
        for e in r.to_device_events:
            if (isinstance(e, RoomKeyRequest) and e.sender == c.user_id
                    and e.requesting_device_id != c.device_id and e.requesting_device_id not in known):
                log.info("key request from our unknown device %s: querying our keys", e.requesting_device_id)
                self.key_requests[e.request_id] = e
                c.olm.users_for_key_query.add(c.user_id)

    def continue_key_requests(self) -> None:
        c = self.client
        known = {d.id for d in c.device_store.active_user_devices(c.user_id)}
        again = False
        for rid, e in list(self.key_requests.items()):
            if e.requesting_device_id in known:
                del self.key_requests[rid]
                c.olm.received_key_requests[rid] = e
                again = True
        # nio only collects key requests while it handles a sync response with a new token, so a request
        # that waited for a key claim (no Olm session with that device yet) would wait for the next room
        # event: collect them here (this queues the forwarded keys as to-device messages).
        if again or c.olm.received_key_requests:
            c.olm.collect_key_requests()
        for e in list(c.olm.key_request_from_untrusted.values()):  # asked before we trusted the device
            if e.sender == c.user_id:
                c.continue_key_share(e)

    # ---------- sync ----------
    async def sync_once(self, first: bool = False) -> None:
        c = self.client
        initial = not (c.next_batch or c.loaded_sync_token)
        timeout = 0 if first else self.a.sync_timeout
        r = await c.sync(timeout=timeout, sync_filter=SYNC_FILTER, full_state=True if first else None)
        if not isinstance(r, SyncResponse):
            raise RuntimeError("sync failed: %s" % r)
        self.note_key_requests(r)
        # Keys first: new members' device keys are queried (and trusted) before their events are
        # reported, so "sender_device" is known for a first message too.
        await self.maintain()
        await self.report(r, initial)
        self.sync_count += 1
        self.synced.set()
        self.synced.clear()

    async def sync_loop(self) -> None:
        while not self.stopping:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # pylint: disable=broad-except
                log.warning("sync: %s", e)
                await asyncio.sleep(1)

    async def wait_sync(self, limit: float) -> None:
        try:
            await asyncio.wait_for(self.synced.wait(), limit)
        except asyncio.TimeoutError:
            pass

    async def wait_room(self, room_id: str, ok, what: str) -> Any:
        """Waits until the peer's own sync shows `room_id` (a joined room) and `ok(room)` holds."""
        deadline = time.monotonic() + WAIT_ROOM
        while True:
            room = self.client.rooms.get(room_id)
            if room is not None and ok(room):
                return room
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandError("%s: the sync did not show it within %ds" % (what, WAIT_ROOM))
            await self.wait_sync(min(left, 1.0))

    # ---------- events ----------
    def sender_device(self, sender: str, sender_key: Optional[str]) -> Optional[str]:
        if not sender_key:
            return None
        c = self.client
        if sender == c.user_id and sender_key == c.olm.account.identity_keys["curve25519"]:
            return c.device_id
        for dev in self.client.device_store.active_user_devices(sender):
            if dev.curve25519 == sender_key:
                return dev.id
        return None

    def message_event(self, room_id: str, ev: Any, initial: bool) -> Dict[str, Any]:
        content = ev.source.get("content", {})
        e: Dict[str, Any] = {
            "event": "message", "room_id": room_id, "sender": ev.sender, "event_id": ev.event_id,
            "body": content.get("body"), "msgtype": content.get("msgtype"),
            "encrypted": bool(getattr(ev, "decrypted", False)),
        }
        if e["encrypted"]:
            e["sender_device"] = self.sender_device(ev.sender, getattr(ev, "sender_key", None))
        e["content"] = content
        if initial:
            e["initial"] = True
        return e

    async def report(self, r: SyncResponse, initial: bool) -> None:
        c = self.client
        raw_invites: Dict[str, Any] = {}
        if r.rooms.invite:  # nio drops m.room.encryption from the stripped invite state: read the raw body
            try:
                raw = await r.transport_response.json()
                raw_invites = raw.get("rooms", {}).get("invite", {})
            except Exception:  # pylint: disable=broad-except
                log.warning("could not re-read the sync body", exc_info=True)
        for room_id, info in r.rooms.invite.items():
            me = [e for e in info.invite_state
                  if isinstance(e, InviteMemberEvent) and e.state_key == c.user_id and e.membership == "invite"]
            if not me:
                continue
            stripped = raw_invites.get(room_id, {}).get("invite_state", {}).get("events", [])
            enc = any(s.get("type") == "m.room.encryption" for s in stripped)
            is_direct = bool(me[-1].content.get("is_direct"))
            out({"event": "invite", "room_id": room_id, "sender": me[-1].sender,
                 "encrypted_invite": enc, "is_direct": is_direct})
            if self.a.auto_join:
                asyncio.ensure_future(self.do_join(room_id, None))
        for room_id, info in r.rooms.join.items():
            for ev in info.state:
                if isinstance(ev, RoomEncryptionEvent):
                    self.announce_encrypted(room_id)
            for ev in info.timeline.events:
                await self.report_timeline(room_id, ev, initial)
        new_keys = {e.session_id for e in r.to_device_events if isinstance(e, (RoomKeyEvent, ForwardedRoomKeyEvent))}
        if new_keys and self.pending:
            await self.retry_pending(new_keys)

    def announce_encrypted(self, room_id: str) -> None:
        if room_id not in self.announced_encrypted:
            self.announced_encrypted.add(room_id)
            out({"event": "room_encrypted", "room_id": room_id})

    async def report_timeline(self, room_id: str, ev: Any, initial: bool) -> None:
        flag = {"initial": True} if initial else {}
        if isinstance(ev, MegolmEvent):
            log.info("cannot decrypt %s in %s (session %s)", ev.event_id, room_id, ev.session_id)
            self.pending.append((room_id, ev, initial))
            out({"event": "undecryptable", "room_id": room_id, "sender": ev.sender, "event_id": ev.event_id,
                 "session_id": ev.session_id, "sender_device": ev.device_id, **flag})
        elif isinstance(ev, RoomMessage):
            out(await self.with_file(self.message_event(room_id, ev, initial)))
        elif isinstance(ev, RedactionEvent):
            out({"event": "redaction", "room_id": room_id, "sender": ev.sender, "event_id": ev.event_id,
                 "redacts": ev.redacts, **flag})
        elif isinstance(ev, RoomMemberEvent):
            out({"event": "member", "room_id": room_id, "user": ev.state_key, "membership": ev.membership,
                 "sender": ev.sender, "event_id": ev.event_id, **flag})
        elif isinstance(ev, RoomEncryptionEvent):
            self.announce_encrypted(room_id)
        else:
            src = getattr(ev, "source", None) or {}
            if "state_key" in src or not src.get("type"):
                return
            out({"event": "other", "room_id": room_id, "sender": src.get("sender"), "event_id": src.get("event_id"),
                 "type": src.get("type"), "encrypted": bool(getattr(ev, "decrypted", False)),
                 "content": src.get("content", {}), **flag})

    async def media_bytes(self, mxc: str) -> bytes:
        """The content of `mxc` through authenticated media (MSC3916):
        GET /_matrix/client/v1/media/download/{server}/{media_id} with our access token."""
        if not isinstance(mxc, str) or not mxc.startswith("mxc://") or "/" not in mxc[6:]:
            raise ValueError("not an mxc:// URI: %r" % (mxc,))
        server, media_id = mxc[6:].split("/", 1)
        c = self.client
        url = "%s/_matrix/client/v1/media/download/%s/%s" % (c.homeserver, quote(server, safe=""), quote(media_id, safe=""))
        async with aiohttp.ClientSession(timeout=MEDIA_TIMEOUT) as http:
            async with http.get(url, headers={"Authorization": "Bearer " + c.access_token}) as r:
                if r.status != 200:
                    raise RuntimeError("download %s: HTTP %d %s" % (mxc, r.status, (await r.text())[:200]))
                return await r.read()

    async def with_file(self, e: Dict[str, Any]) -> Dict[str, Any]:
        """For an m.image/m.video/m.audio/m.file message: downloads the media (authenticated media),
        decrypts an encrypted attachment ("file": AES-256-CTR, after checking the SHA-256 of the
        ciphertext against hashes.sha256) and adds "file" to the event."""
        content = e.get("content") or {}
        if content.get("msgtype") not in MEDIA_MSGTYPES or not ("url" in content or "file" in content):
            return e
        info = content.get("info") if isinstance(content.get("info"), dict) else {}
        enc = content.get("file")
        f: Dict[str, Any] = {"msgtype": content.get("msgtype"), "mimetype": info.get("mimetype"), "info": info,
                             "voice": "org.matrix.msc3245.voice" in content, "encrypted": enc is not None}
        try:
            if enc is not None:
                if not isinstance(enc, dict):
                    raise ValueError("\"file\" is not an object")
                f["url"] = enc.get("url")
                f["v"] = enc.get("v")
                data = await self.media_bytes(enc.get("url"))
                want = unpadded_b64decode(enc["hashes"]["sha256"])
                if hashlib.sha256(data).digest() != want:
                    raise ValueError("SHA-256 of the ciphertext does not match hashes.sha256")
                key, iv = enc.get("key") or {}, unpadded_b64decode(enc["iv"])
                if key.get("alg") != "A256CTR" or key.get("kty") != "oct":
                    raise ValueError("unsupported key %s/%s" % (key.get("kty"), key.get("alg")))
                k = unpadded_b64decode(key["k"])
                if len(k) != 32 or len(iv) != 16:
                    raise ValueError("key of %d bytes, iv of %d bytes" % (len(k), len(iv)))
                dec = Cipher(algorithms.AES(k), modes.CTR(iv)).decryptor()
                data = dec.update(data) + dec.finalize()
            else:
                f["url"] = content.get("url")
                data = await self.media_bytes(content.get("url"))
            f.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), ok=True)
        except Exception as ex:  # pylint: disable=broad-except
            log.warning("media of %s: %s", e.get("event_id"), ex)
            f.update(ok=False, error="%s: %s" % (type(ex).__name__, ex))
        e["file"] = f
        return e

    async def retry_pending(self, session_ids: set) -> None:
        """Decrypts the undecryptable events of the Megolm sessions whose keys just arrived."""
        still = []
        for room_id, ev, initial in self.pending:
            if ev.session_id not in session_ids:
                still.append((room_id, ev, initial))
                continue
            try:
                dec = self.client.decrypt_event(ev)
            except EncryptionError:
                still.append((room_id, ev, initial))
                continue
            log.info("decrypted %s late", ev.event_id)
            if isinstance(dec, RoomMessage):
                e = self.message_event(room_id, dec, initial)
                e["late"] = True
                out(await self.with_file(e))
            else:
                await self.report_timeline(room_id, dec, initial)
        self.pending = still

    # ---------- commands ----------
    async def do_join(self, room: str, cid: Optional[str]) -> None:
        c = self.client
        try:
            r = await c.join(room)
            if isinstance(r, JoinError):
                raise CommandError("join %s: %s %s" % (room, r.status_code, r.message))
            await self.wait_room(r.room_id, lambda _r: True, "join %s" % room)
            out({"event": "joined", "room_id": r.room_id, **({"id": cid} if cid is not None else {})})
        except Exception as e:  # pylint: disable=broad-except
            self.command_failed("join", cid, e)

    async def create_dm(self, invite: str, encrypted: bool, cid: Optional[str]) -> None:
        c = self.client
        state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}] if encrypted else []
        r = await c.room_create(preset=RoomPreset.trusted_private_chat, is_direct=True, invite=[invite],
                                initial_state=state)
        if isinstance(r, RoomCreateError):
            raise CommandError("createRoom: %s %s" % (r.status_code, r.message))
        await self.wait_room(r.room_id, lambda room: invite in room.users and (room.encrypted or not encrypted),
                             "created room %s" % r.room_id)
        out({"event": "created", "room_id": r.room_id, "id": cid})

    async def send(self, room_id: str, content: Dict[str, Any], cid: Optional[str],
                   event_type: str = "m.room.message", extra: Optional[Dict[str, Any]] = None) -> None:
        c = self.client
        room = await self.wait_room(room_id, lambda _r: True, "room %s" % room_id)
        async with self.lock:
            if room.encrypted:
                # Fresh device lists of every member (joined and invited) before each send, so a device
                # added since the last send gets the Megolm key (nio rotates the session when a member's
                # device list changed), and trust all of them.
                c.olm.users_for_key_query.update(room.users)
                q = await c.keys_query()
                if isinstance(q, KeysQueryError):
                    log.warning("keys_query before send: %s", q)
                self.trust_all()
            r = await c.room_send(room_id, event_type, content, ignore_unverified_devices=True)
        if not isinstance(r, RoomSendResponse):
            raise CommandError("send: %s" % r)
        out({"event": "sent", "room_id": room_id, "event_id": r.event_id, "encrypted": room.encrypted, "id": cid,
             **(extra or {})})

    async def send_file(self, room_id: str, path: str, msgtype: str, mime: str, name: str, voice: bool,
                        extra_info: Dict[str, Any], cid: Optional[str]) -> None:
        """Uploads `path` (an encrypted attachment in an encrypted room: nio encrypts it with
        AES-256-CTR and gives the key, IV and SHA-256; else plainly) and sends the media message."""
        c = self.client
        room = await self.wait_room(room_id, lambda _r: True, "room %s" % room_id)
        size = os.path.getsize(path)
        sha = file_sha256(path)
        with open(path, "rb") as f:
            r, keys = await c.upload(f, content_type=mime, filename=name, encrypt=room.encrypted, filesize=size)
        if not isinstance(r, UploadResponse):
            raise CommandError("upload: %s" % r)
        info = dict(extra_info, mimetype=mime, size=size)
        content: Dict[str, Any] = {"msgtype": msgtype, "body": name, "info": info}
        if room.encrypted:
            content["file"] = {"url": r.content_uri, "key": keys["key"], "iv": keys["iv"],
                               "hashes": keys["hashes"], "v": keys.get("v", "v2")}
        else:
            content["url"] = r.content_uri
        if voice:  # as Element sends a voice message
            content["org.matrix.msc3245.voice"] = {}
            content["org.matrix.msc1767.audio"] = {"duration": info["duration"]} if "duration" in info else {}
        await self.send(room_id, content, cid, extra={"sha256": sha, "size": size, "url": r.content_uri,
                                                      "msgtype": msgtype, "content": content})

    async def devices(self, user: str, cid: Optional[str]) -> None:
        c = self.client
        async with self.lock:
            c.olm.users_for_key_query.add(user)
            q = await c.keys_query()
            if isinstance(q, KeysQueryError):
                raise CommandError("keys_query: %s" % q)
            self.trust_all()
        ids = sorted(d.id for d in c.device_store.active_user_devices(user))
        out({"event": "devices", "user": user, "device_ids": ids, "id": cid})

    async def request_keys(self, room: Optional[str], cid: Optional[str]) -> None:
        c = self.client
        asked = set()
        for room_id, ev, _initial in self.pending:
            if (room is not None and room_id != room) or ev.session_id in asked:
                continue
            asked.add(ev.session_id)
            if ev.session_id in c.outgoing_key_requests:
                continue
            r = await c.request_room_key(ev)
            if not isinstance(r, RoomKeyRequestResponse):
                raise CommandError("room key request: %s" % r)
        out({"event": "keys_requested", "sessions": len(asked), "id": cid})

    def command_failed(self, name: Optional[str], cid: Optional[str], e: Exception) -> None:
        log.warning("command %s failed", name, exc_info=not isinstance(e, (CommandError, ValueError)))
        ev: Dict[str, Any] = {"event": "error", "error": "%s: %s" % (type(e).__name__, e), "cmd": name}
        if cid is not None:
            ev["id"] = cid
        out(ev)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                out({"event": "error", "error": "command line too long"})
                continue
            if not line:
                return  # EOF
            if not line.strip():
                continue
            cmd: Any = None
            name = cid = None
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                    raise ValueError("expected a JSON object with a string \"cmd\"")
                name, cid = cmd["cmd"], cmd.get("id")
                if name == "quit":
                    return
                if name == "ping":
                    out({"event": "pong", "id": cid})
                elif name == "create_dm":
                    invite = cmd.get("invite")
                    if not isinstance(invite, str):
                        raise ValueError("create_dm needs an \"invite\" user id")
                    await self.create_dm(invite, bool(cmd.get("encrypted", True)), cid)
                elif name == "send":
                    room, text, content = cmd.get("room"), cmd.get("text"), cmd.get("content")
                    if not isinstance(room, str) or not (isinstance(text, str) or isinstance(content, dict)):
                        raise ValueError("send needs \"room\" and a \"text\" string or a \"content\" object")
                    if content is None:
                        content = {"msgtype": "m.text", "body": text}
                    event_type = cmd.get("type", "m.room.message")
                    if not isinstance(event_type, str):
                        raise ValueError("send: \"type\" must be a string")
                    await self.send(room, content, cid, event_type)
                elif name == "send-file":
                    room, path = cmd.get("room"), cmd.get("path")
                    msgtype = cmd.get("msgtype", "m.file")
                    if not isinstance(room, str) or not isinstance(path, str) or msgtype not in MEDIA_MSGTYPES:
                        raise ValueError("send-file needs \"room\", \"path\" and a \"msgtype\" of %s" % ", ".join(MEDIA_MSGTYPES))
                    name = cmd.get("name") or os.path.basename(path)
                    mime = cmd.get("mime") or mimetypes.guess_type(name)[0] or "application/octet-stream"
                    info = cmd.get("info") or {}
                    if not isinstance(name, str) or not isinstance(mime, str) or not isinstance(info, dict):
                        raise ValueError("send-file: \"name\", \"mime\" must be strings, \"info\" an object")
                    await self.send_file(room, path, msgtype, mime, name, bool(cmd.get("voice")), info, cid)
                elif name == "redact":
                    room, event_id = cmd.get("room"), cmd.get("event_id")
                    if not isinstance(room, str) or not isinstance(event_id, str):
                        raise ValueError("redact needs \"room\" and \"event_id\" strings")
                    r = await self.client.room_redact(room, event_id)
                    if not isinstance(r, RoomRedactResponse):
                        raise CommandError("redact: %s" % r)
                    out({"event": "redacted", "room_id": room, "event_id": r.event_id, "id": cid})
                elif name == "join":
                    room = cmd.get("room")
                    if not isinstance(room, str):
                        raise ValueError("join needs a \"room\"")
                    await self.do_join(room, cid)
                elif name == "leave":
                    room = cmd.get("room")
                    if not isinstance(room, str):
                        raise ValueError("leave needs a \"room\"")
                    r = await self.client.room_leave(room)
                    if isinstance(r, RoomLeaveError):
                        raise CommandError("leave %s: %s %s" % (room, r.status_code, r.message))
                    out({"event": "left", "room_id": room, "id": cid})
                elif name == "request_keys":
                    room = cmd.get("room")
                    if not (room is None or isinstance(room, str)):
                        raise ValueError("request_keys takes an optional \"room\" string")
                    await self.request_keys(room, cid)
                elif name == "devices":
                    user = cmd.get("user")
                    if not isinstance(user, str):
                        raise ValueError("devices needs a \"user\"")
                    await self.devices(user, cid)
                else:
                    raise ValueError("unknown cmd %r" % name)
            except Exception as e:  # pylint: disable=broad-except
                self.command_failed(name, cid, e)


async def amain(a: argparse.Namespace) -> int:
    peer = Peer(a)
    syncer = None
    try:
        try:
            if not await peer.start():
                return 1
        except Exception as e:  # pylint: disable=broad-except
            log.warning("start-up failed", exc_info=True)
            out({"event": "error", "error": "start-up: %s: %s" % (type(e).__name__, e)})
            return 1
        syncer = asyncio.ensure_future(peer.sync_loop())
        await peer.serve()
        return 0
    finally:
        peer.stopping = True
        if syncer is not None:
            syncer.cancel()
            try:
                await syncer
            except BaseException:  # pylint: disable=broad-except
                pass
        if peer.client is not None:
            await peer.client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="long-running peer driven with JSON lines (see above)")
    s.add_argument("--state-dir", default=os.environ.get("WORLD_STATE"), help="the world's state dir (default $WORLD_STATE)")
    s.add_argument("--user", required=True, help="localpart, registered if missing")
    s.add_argument("--password", help="default pw-USER")
    s.add_argument("--device", default="main", help="device display name and store dir (default main)")
    s.add_argument("--auto-join", action="store_true", help="join every invite at once")
    s.add_argument("--base-url", help="default: base_url of STATE/synapse/secrets.json")
    s.add_argument("--sync-timeout", type=int, default=2000, help="long-poll timeout in ms (default 2000)")
    s.add_argument("-v", "--verbose", action="count", default=0, help="-v: nio's INFO logs too, -vv: DEBUG")
    a = p.parse_args()
    if not a.state_dir:
        p.error("--state-dir or WORLD_STATE required")
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if a.verbose >= 2 else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.verbose < 2:
        for noisy in ("peewee", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if a.verbose < 1:
        logging.getLogger("nio").setLevel(logging.WARNING)
    sys.exit(asyncio.run(amain(a)))


if __name__ == "__main__":
    main()
