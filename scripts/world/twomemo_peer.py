#!/usr/bin/env python3
"""An OMEMO 2 device made of python-omemo's twomemo backend alone, driven over stdin/stdout.

No XMPP: the test that runs this (crates/xmpp-omemo/tests/omemo2_interop.rs) carries bundles
and <key>/<payload> bytes itself. This script does what python-omemo's SessionManager does
with the twomemo backend for one peer device (build sessions actively from a bundle and
passively from a key exchange, keep sending the key exchange until the session is confirmed,
treat a repeated key exchange as the existing session, delete the used prekey), calling the
backend's own methods (twomemo.Twomemo, KeyExchangeImpl, EncryptedKeyMaterialImpl, ...), so
every byte of X3DH, the ratchet, the protobufs and the payload is twomemo's.

Options: -v (tracebacks of failed commands on stderr), --identity seed (default: a fresh Ed25519 seed, as python-omemo makes) or priv (a
Curve25519 private key, as an account migrated from legacy OMEMO has).

stdout: one JSON object per line; the first is
  {"event":"ready","bundle":BUNDLE}
stdin: one JSON object per line (EOF = quit). Bytes are base64. The peer device is always
"rust@example.org" device 1.
  {"cmd":"bundle"}                      -> {"event":"bundle","bundle":BUNDLE} (current prekeys)
  {"cmd":"encrypt","text":T|null,"plaintext":B64|null,"bundle":BUNDLE|null}
        encrypt an SCE envelope (built here from T, or the given plaintext bytes), or an empty
        message when both are null; "bundle" builds a new session first (active initiation)
        -> {"event":"encrypted","key":B64,"kex":BOOL,"payload":B64|null,"plaintext":B64|null}
  {"cmd":"decrypt","key":B64,"kex":BOOL,"payload":B64|null}
        -> {"event":"decrypted","plaintext":B64|null,"body":TEXT|null,"from":JID|null,
            "new_session":BOOL,"prekey_deleted":BOOL}
  any failure -> {"event":"error","cmd":...,"error":"ExceptionType: message"}
BUNDLE = {"ik":B64,"spk_id":N,"spk":B64,"spks":B64,"prekeys":[[ID,B64],...]}
"""

import argparse
import asyncio
import base64
import json
import secrets
import sys
import traceback
import xml.etree.ElementTree as ET
from typing import Any, Dict, Optional

import twomemo
import x3dh
from omemo.session import Initiation
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType
from twomemo.twomemo import (
    BundleImpl,
    ContentImpl,
    EncryptedKeyMaterialImpl,
    KeyExchangeImpl,
    PlainKeyMaterialImpl,
)

PEER_JID = "rust@example.org"
PEER_DEVICE = 1
OWN_JID = "python@example.org"
OWN_DEVICE = 2
SCE_NS = "urn:xmpp:sce:1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class MemoryStorage(Storage):
    def __init__(self) -> None:
        super().__init__()
        self.data: Dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


def sce_envelope(text: str) -> bytes:
    rpad = b64(secrets.token_bytes(secrets.randbelow(32) + 1))
    env = ET.Element("envelope", xmlns=SCE_NS)
    content = ET.SubElement(env, "content")
    ET.SubElement(content, "body", xmlns="jabber:client").text = text
    ET.SubElement(env, "rpad").text = rpad
    ET.SubElement(env, "time", stamp="2025-01-01T00:00:00Z")
    ET.SubElement(env, "to", jid=PEER_JID)
    ET.SubElement(env, "from", jid=OWN_JID)
    return ET.tostring(env, encoding="utf-8", xml_declaration=False)


def sce_read(data: bytes) -> Dict[str, Any]:
    env = ET.fromstring(data)
    if env.tag != "{%s}envelope" % SCE_NS:
        raise ValueError("not an SCE envelope")
    body = env.find("{%s}content/{jabber:client}body" % SCE_NS)
    frm = env.find("{%s}from" % SCE_NS)
    return {
        "body": None if body is None else body.text,
        "from": None if frm is None else frm.get("jid"),
    }


def bundle_json(bundle: BundleImpl) -> Dict[str, Any]:
    inner = bundle.bundle
    return {
        "ik": b64(inner.identity_key),
        "spk_id": bundle.signed_pre_key_id,
        "spk": b64(inner.signed_pre_key),
        "spks": b64(inner.signed_pre_key_sig),
        "prekeys": sorted([pid, b64(pub)] for pub, pid in bundle.pre_key_ids.items()),
    }


def bundle_from_json(data: Dict[str, Any]) -> BundleImpl:
    prekeys = {unb64(pub): int(pid) for pid, pub in data["prekeys"]}
    return BundleImpl(
        PEER_JID,
        PEER_DEVICE,
        x3dh.Bundle(
            identity_key=unb64(data["ik"]),
            signed_pre_key=unb64(data["spk"]),
            signed_pre_key_sig=unb64(data["spks"]),
            pre_keys=frozenset(prekeys),
        ),
        int(data["spk_id"]),
        prekeys,
    )


class Peer:
    def __init__(self, backend: twomemo.Twomemo) -> None:
        self.backend = backend

    async def bundle(self) -> Dict[str, Any]:
        return bundle_json(await self.backend.get_bundle(OWN_JID, OWN_DEVICE))

    async def encrypt(self, cmd: Dict[str, Any]) -> Dict[str, Any]:
        plaintext: Optional[bytes] = None
        if cmd.get("text") is not None:
            plaintext = sce_envelope(cmd["text"])
        elif cmd.get("plaintext") is not None:
            plaintext = unb64(cmd["plaintext"])
        if plaintext is None:
            content, key_material = await self.backend.encrypt_empty()
        else:
            content, key_material = await self.backend.encrypt_plaintext(plaintext)
        if cmd.get("bundle") is not None:
            session, encrypted = await self.backend.build_session_active(
                PEER_JID, PEER_DEVICE, bundle_from_json(cmd["bundle"]), key_material
            )
        else:
            session = await self.backend.load_session(PEER_JID, PEER_DEVICE)
            if session is None:
                raise RuntimeError("no session with the Rust device")
            encrypted = await self.backend.encrypt_key_material(session, key_material)
        # As SessionManager: an active session that has not heard back sends the key exchange.
        kex = session.initiation is Initiation.ACTIVE and not session.confirmed
        key = encrypted.serialize()
        if kex:
            key = session.key_exchange.serialize(key)
        await self.backend.store_session(session)
        return {
            "event": "encrypted",
            "key": b64(key),
            "kex": kex,
            "payload": None if content.empty else b64(content.ciphertext),
            "plaintext": None if plaintext is None else b64(plaintext),
        }

    async def decrypt(self, cmd: Dict[str, Any]) -> Dict[str, Any]:
        key = unb64(cmd["key"])
        new_session = False
        prekey_deleted = False
        if cmd["kex"]:
            key_exchange, authenticated = KeyExchangeImpl.parse(key)
            encrypted = EncryptedKeyMaterialImpl.parse(authenticated, PEER_JID, PEER_DEVICE)
            session = await self.backend.load_session(PEER_JID, PEER_DEVICE)
            if session is not None and not (
                session.initiation is Initiation.PASSIVE
                and session.key_exchange.builds_same_session(key_exchange)
            ):
                session = None
            if session is None:
                session, key_material = await self.backend.build_session_passive(
                    PEER_JID, PEER_DEVICE, key_exchange, encrypted
                )
                new_session = True
            else:
                key_material = await self.backend.decrypt_key_material(session, encrypted)
        else:
            encrypted = EncryptedKeyMaterialImpl.parse(key, PEER_JID, PEER_DEVICE)
            session = await self.backend.load_session(PEER_JID, PEER_DEVICE)
            if session is None:
                raise RuntimeError("no session with the Rust device")
            key_material = await self.backend.decrypt_key_material(session, encrypted)
        plaintext = None
        if cmd.get("payload") is not None:
            plaintext = await self.backend.decrypt_plaintext(
                ContentImpl(unb64(cmd["payload"])), key_material
            )
        elif key_material.key != PlainKeyMaterialImpl.make_empty().key or key_material.auth_tag:
            raise ValueError("no payload, but the key material is not the empty message's")
        await self.backend.store_session(session)
        if new_session:
            prekey_deleted = await self.backend.delete_pre_key(session)
        sce = sce_read(plaintext) if plaintext is not None else {"body": None, "from": None}
        return {
            "event": "decrypted",
            "plaintext": None if plaintext is None else b64(plaintext),
            "body": sce["body"],
            "from": sce["from"],
            "new_session": new_session,
            "prekey_deleted": prekey_deleted,
        }


async def setup(identity: str) -> Peer:
    storage = MemoryStorage()
    if identity == "priv":
        priv = bytearray(secrets.token_bytes(32))
        priv[0] &= 248
        priv[31] &= 127
        priv[31] |= 64
        await storage.store("/ikp/is_seed", False)
        await storage.store_bytes("/ikp/key", bytes(priv))
    backend = twomemo.Twomemo(storage)
    await backend.generate_pre_keys(100)
    return Peer(backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", choices=["seed", "priv"], default="seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on stderr")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    peer = loop.run_until_complete(setup(args.identity))

    def emit(obj: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    emit({"event": "ready", "bundle": loop.run_until_complete(peer.bundle())})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "bundle":
                emit({"event": "bundle", "bundle": loop.run_until_complete(peer.bundle())})
            elif cmd["cmd"] == "encrypt":
                emit(loop.run_until_complete(peer.encrypt(cmd)))
            elif cmd["cmd"] == "decrypt":
                emit(loop.run_until_complete(peer.decrypt(cmd)))
            else:
                raise ValueError("unknown command")
        except Exception as e:  # pylint: disable=broad-except
            if args.verbose:
                traceback.print_exc(file=sys.stderr)
            # The exception and its causes, innermost last (twomemo wraps the ratchet's errors).
            chain = []
            cause: Optional[BaseException] = e
            while cause is not None:
                chain.append(f"{type(cause).__name__}: {cause}")
                cause = cause.__cause__ or cause.__context__
            emit({"event": "error", "cmd": cmd.get("cmd"), "error": " <- ".join(chain)})


if __name__ == "__main__":
    main()
