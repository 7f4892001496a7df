#!/usr/bin/env python3
"""Captures what a real Prosody sends to XMPP clients and writes it as fuzz seeds.

Each seed is a complete stream prefix exactly as Prosody wrote it: the server's stream header,
then one or more depth-1 elements (stanzas, nonzas, features), byte for byte (decrypted TLS).

Stdlib only. Needs a running test world with Prosody:
    WORLD_SERVICES=prosody bash scripts/world/up.sh /tmp/fuzzworld
    source /tmp/fuzzworld/world.env
    python3 fuzz/capture_seeds.py fuzz/corpus/stream
    bash scripts/world/down.sh /tmp/fuzzworld
"""

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import sys
import time

DOMAIN = os.environ.get("XMPP_DOMAIN", "xmpp.test")
HOST, PORT = os.environ.get("XMPP_SERVER", "127.0.0.1:5222").rsplit(":", 1)
CA = os.environ.get("XMPP_CA_FILE")
AXOLOTL = "eu.siacs.conversations.axolotl"


def split_top(buf, pos, depth):
    """Scans complete markup tokens from buf[pos:]. Yields (kind, start, end, depth_after)."""
    n = len(buf)
    while pos < n:
        if buf[pos:pos + 1] != b"<":
            nxt = buf.find(b"<", pos)
            if nxt < 0:
                return
            yield ("text", pos, nxt, depth)
            pos = nxt
            continue
        # find the end of the tag, honouring quotes
        i, q = pos + 1, None
        while i < n:
            c = buf[i:i + 1]
            if q:
                if c == q:
                    q = None
            elif c in (b"'", b'"'):
                q = c
            elif c == b">":
                break
            i += 1
        if i >= n:
            return
        tag = buf[pos:i + 1]
        if tag.startswith(b"<?") or tag.startswith(b"<!"):
            kind = "other"
        elif tag.startswith(b"</"):
            depth -= 1
            kind = "end"
        elif tag.endswith(b"/>"):
            kind = "empty"
        else:
            depth += 1
            kind = "start"
        yield (kind, pos, i + 1, depth)
        pos = i + 1


class Stream:
    """One XML stream (one side of it): the server's header and its depth-1 elements as bytes."""

    def __init__(self):
        self.buf = b""
        self.pos = 0
        self.depth = 0
        self.header = None
        self.elements = []  # raw bytes of each depth-1 element, with the whitespace before it
        self._el_start = None

    def feed(self, data):
        self.buf += data
        for kind, s, e, d in split_top(self.buf, self.pos, self.depth):
            if self.header is None:
                if kind == "start":
                    self.header = self.buf[:e]
                    self._el_start = e
                self.pos, self.depth = e, d
                continue
            if kind == "start" and d == 2 and self._el_start is None:
                self._el_start = s
            if (kind == "empty" and self.depth == 1) or (kind == "end" and d == 1):
                self.elements.append(self.buf[self._el_start:e])
                self._el_start = e
            if kind == "end" and d == 0:  # </stream:stream>
                self.elements.append(self.buf[self._el_start:e])
            self.pos, self.depth = e, d


class Client:
    def __init__(self, user, password, resource, log):
        self.user, self.password, self.resource = user, password, resource
        self.log = log  # list of finished Stream objects, in order
        self.sock = socket.create_connection((HOST, int(PORT)), timeout=10)
        self.stream = None
        self.seen = 0
        self.jid = None
        self.caps_features = None

    def send(self, xml):
        if isinstance(xml, str):
            xml = xml.encode()
        self.sock.sendall(xml)

    def open(self, to=DOMAIN):
        self.stream = Stream()
        self.log.append(self.stream)
        self.seen = 0
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0' xml:lang='en'>")

    def next(self, pred=lambda e: True, timeout=5.0):
        """Returns the next depth-1 element matching pred (raw bytes, stripped), answering
        disco#info queries on the way."""
        deadline = time.time() + timeout
        while True:
            while self.seen < len(self.stream.elements):
                el = self.stream.elements[self.seen].strip()
                self.seen += 1
                self._auto(el)
                if pred(el):
                    return el
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{self.user}: nothing matched")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"{self.user}: nothing matched")
            if not data:
                raise ConnectionError(f"{self.user}: closed")
            self.stream.feed(data)

    def drain(self, secs=0.5):
        try:
            self.next(lambda e: False, timeout=secs)
        except (TimeoutError, ConnectionError):
            pass

    def _auto(self, el):
        # Answer the server's disco#info (caps) queries so PEP notifications flow.
        if el.startswith(b"<iq") and b"type='get'" in el and b"disco#info" in el and self.caps_features:
            m_id = re.search(rb"id='([^']*)'", el)
            m_from = re.search(rb"from='([^']*)'", el)
            node = re.search(rb"node='([^']*)'", el)
            feats = "".join(f"<feature var='{f}'/>" for f in self.caps_features)
            self.send(f"<iq type='result' id='{m_id.group(1).decode()}' to='{m_from.group(1).decode()}'>"
                      f"<query xmlns='http://jabber.org/protocol/disco#info'"
                      f"{' node=' + repr(node.group(1).decode()) if node else ''}>"
                      f"<identity category='client' type='pc' name='fuzz'/>{feats}</query></iq>")

    def starttls(self):
        self.open()
        self.next(lambda e: b"features" in e)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.next(lambda e: b"proceed" in e)
        ctx = ssl.create_default_context(cafile=CA)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)

    def auth_plain(self, password=None):
        self.open()
        self.next(lambda e: b"features" in e)
        token = base64.b64encode(f"\0{self.user}\0{password or self.password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return self.next(lambda e: b"success" in e or b"failure" in e)

    def auth_scram(self):
        self.open()
        self.next(lambda e: b"features" in e)
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={self.user},r={cnonce}"
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>")
        ch = self.next(lambda e: b"challenge" in e)
        server_first = base64.b64decode(re.search(rb">([^<]*)<", ch).group(1)).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha1", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
        stored = hashlib.sha1(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha1).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        self.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{base64.b64encode((final_bare + ',p=' + proof).encode()).decode()}</response>")
        return self.next(lambda e: b"success" in e or b"failure" in e)

    def bind(self):
        self.open()
        self.next(lambda e: b"features" in e)
        self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{self.resource}</resource></bind></iq>")
        r = self.next(lambda e: b"bind1" in e)
        self.jid = re.search(rb"<jid>([^<]*)</jid>", r).group(1).decode()
        return r

    def login(self, scram=False):
        self.starttls()
        (self.auth_scram if scram else self.auth_plain)()
        self.bind()

    def iq(self, id_, xml, timeout=5.0):
        self.send(xml)
        return self.next(lambda e: f"id='{id_}'".encode() in e or f'id="{id_}"'.encode() in e, timeout)

    def close(self):
        try:
            self.send("</stream:stream>")
            self.next(lambda e: b"</stream:stream>" in e, 2)
        except Exception:
            pass
        self.sock.close()


CAPS_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/caps",
    "urn:xmpp:carbons:2",
    f"{AXOLOTL}.devicelist",
    f"{AXOLOTL}.devicelist+notify",
    "urn:xmpp:omemo:2:devices",
    "urn:xmpp:omemo:2:devices+notify",
]


def caps_ver(features):
    s = "client/pc//fuzz<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def caps(features):
    return f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.org/fuzz' ver='{caps_ver(features)}'/>"


def main(out_dir):
    log = []
    # --- a failed SASL attempt, then stream errors
    bad = Client("alice", "pw-alice", "x", log)
    bad.starttls()
    bad.auth_plain(password="wrong")
    bad.drain(0.3)
    bad.sock.close()

    err = Client("alice", "", "", log)
    err.open(to="no-such-host.example")
    err.drain(0.5)
    err.sock.close()

    err2 = Client("alice", "", "", log)
    err2.open()
    err2.next(lambda e: b"features" in e)
    err2.send("<message><body>not well formed</bdy></message>")
    err2.drain(0.5)
    err2.sock.close()

    # --- bob (PLAIN), with caps so PEP notifications reach him
    bob = Client("bob", "pw-bob", "phone", log)
    bob.login()
    bob.caps_features = CAPS_FEATURES
    bob.iq("sess", "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    bob.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    enabled = bob.next(lambda e: b"enabled" in e or b"failed" in e)
    previd = re.search(rb"id='([^']*)'", enabled)
    enabled_at = bob.seen
    bob.iq("carb1", "<iq type='set' id='carb1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    bob.iq("roster1", "<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")

    # --- alice (SCRAM-SHA-1: challenge, success with additional data), two resources
    alice = Client("alice", "pw-alice", "laptop", log)
    alice.login(scram=True)
    alice.caps_features = CAPS_FEATURES
    alice.iq("carb2", "<iq type='set' id='carb2'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    alice2 = Client("alice", "pw-alice", "tablet", log)
    alice2.login()
    alice2.caps_features = CAPS_FEATURES
    alice2.iq("carb3", "<iq type='set' id='carb3'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    alice2.iq("roster2", "<iq type='get' id='roster2'><query xmlns='jabber:iq:roster'/></iq>")

    # roster set (push to every resource) and a subscription handshake
    alice.iq("rset", "<iq type='set' id='rset'><query xmlns='jabber:iq:roster'><item jid='bob@xmpp.test' name='Bob &amp; Co'><group>Friends</group></item></query></iq>")
    # start from empty rosters (a previous run may have left a subscription)
    alice.iq("clean1", "<iq type='set' id='clean1'><query xmlns='jabber:iq:roster'><item jid='bob@xmpp.test' subscription='remove'/></query></iq>")
    bob.iq("clean2", "<iq type='set' id='clean2'><query xmlns='jabber:iq:roster'><item jid='alice@xmpp.test' subscription='remove'/></query></iq>")
    for c in (alice, alice2, bob):
        c.drain(0.3)
    for c in (alice, alice2, bob):
        c.send(f"<presence>{caps(CAPS_FEATURES)}</presence>")
    for c in (alice, alice2, bob):
        c.drain(0.5)
    alice.send("<presence to='bob@xmpp.test' type='subscribe'/>")
    bob.next(lambda e: b"subscribe" in e)
    bob.send("<presence to='alice@xmpp.test' type='subscribed'/>")
    bob.send("<presence to='alice@xmpp.test' type='subscribe'/>")
    alice.next(lambda e: b"subscribe" in e and b"<presence" in e and b"subscribed" not in e)
    alice.send("<presence to='bob@xmpp.test' type='subscribed'/>")
    for c in (alice, alice2, bob):
        c.send(f"<presence><show>chat</show><status>fuzzing &lt;seeds&gt;</status><priority>5</priority>{caps(CAPS_FEATURES)}</presence>")
    for c in (alice, alice2, bob):
        c.drain(1.0)

    # messages with bodies and entities; carbons to the other resource
    alice.send("<message to='bob@xmpp.test' type='chat' id='m1'><body>Hi Bob &amp; all: 1 &lt; 2 &gt; 0, \"quoted\" 'apos' \u00e9\u00e8 \U0001f600</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='o-1'/></message>")
    bob.next(lambda e: b"m1" in e)
    alice2.next(lambda e: b"sent" in e)
    bob.send("<message to='alice@xmpp.test/laptop' type='chat' id='m2'><body>line one\nline two\ttab &#x26; ref</body><received xmlns='urn:xmpp:receipts' id='m1'/></message>")
    alice.next(lambda e: b"m2" in e)
    alice2.next(lambda e: b"received" in e)
    bob.send("<message to='alice@xmpp.test' type='chat' id='m3'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.drain(0.5)

    # OMEMO (legacy axolotl) device list and bundle on PEP: notifications to contacts
    alice.iq("pub1", f"<iq type='set' id='pub1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{AXOLOTL}.devicelist'><item id='current'><list xmlns='{AXOLOTL}'><device id='1234567'/><device id='7654321'/></list></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>")
    key = lambda n: base64.b64encode(hashlib.sha256(n.encode()).digest() + b"\x05").decode()
    prekeys = "".join(f"<preKeyPublic preKeyId='{i}'>{key('pk' + str(i))}</preKeyPublic>" for i in range(1, 6))
    alice.iq("pub2", f"<iq type='set' id='pub2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{AXOLOTL}.bundles:1234567'><item id='current'><bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>{key('spk')}</signedPreKeyPublic><signedPreKeySignature>{base64.b64encode(os.urandom(64)).decode()}</signedPreKeySignature><identityKey>{key('ik')}</identityKey><prekeys>{prekeys}</prekeys></bundle></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>")
    bob.drain(1.0)
    bob.iq("fetch1", f"<iq type='get' id='fetch1' to='alice@xmpp.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{AXOLOTL}.bundles:1234567'/></pubsub></iq>")
    bob.iq("fetch2", f"<iq type='get' id='fetch2' to='alice@xmpp.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{AXOLOTL}.bundles:999'/></pubsub></iq>")
    # an OMEMO-encrypted message (legacy axolotl), carbon-copied to alice's other resource
    bob.send(f"<message to='alice@xmpp.test' type='chat' id='m4'><encrypted xmlns='{AXOLOTL}'><header sid='7654321'><key rid='1234567' prekey='true'>{key('k1')}</key><key rid='7654321'>{key('k2')}</key><iv>{base64.b64encode(os.urandom(12)).decode()}</iv></header><payload>{base64.b64encode(os.urandom(40)).decode()}</payload></encrypted><encryption xmlns='urn:xmpp:eme:0' namespace='{AXOLOTL}' name='OMEMO'/><store xmlns='urn:xmpp:hints'/><body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body></message>")
    alice.drain(0.5)
    alice2.drain(0.5)

    # disco#info of the server and of an account; iq errors
    bob.iq("disco1", "<iq type='get' id='disco1' to='xmpp.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    bob.iq("disco2", "<iq type='get' id='disco2' to='alice@xmpp.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    bob.iq("disco3", "<iq type='get' id='disco3' to='xmpp.test'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    bob.iq("err1", "<iq type='get' id='err1' to='xmpp.test'><query xmlns='urn:example:unknown'/></iq>")
    bob.iq("err2", "<iq type='get' id='err2' to='nobody@xmpp.test'><query xmlns='jabber:iq:version'/></iq>")
    bob.iq("err3", "<iq type='set' id='err3'><query xmlns='jabber:iq:roster'><item jid='x@xmpp.test'/><item jid='y@xmpp.test'/></query></iq>")
    bob.iq("ping1", "<iq type='get' id='ping1' to='xmpp.test'><ping xmlns='urn:xmpp:ping'/></iq>")
    bob.send("<message to='nobody@no-such-host.example' id='m5' type='chat'><body>x</body></message>")
    bob.drain(1.0)

    # XEP-0198: request, answer, then a dropped connection resumed, and a failed resume
    bob.send("<r xmlns='urn:xmpp:sm:3'/>")
    bob.next(lambda e: e.startswith(b"<a"))
    bob.drain(0.3)
    # h: the stanzas bob has received since <enabled/>
    h = sum(1 for e in bob.stream.elements[enabled_at:] if re.match(rb"\s*<(message|presence|iq)[ />]", e))
    bob.send(f"<a xmlns='urn:xmpp:sm:3' h='{h}'/>")
    bob.drain(0.3)
    bob.sock.close()  # no </stream:stream>: the session hibernates
    time.sleep(0.5)
    alice.send("<message to='bob@xmpp.test' type='chat' id='m6'><body>while you were away</body></message>")
    time.sleep(0.5)
    bob2 = Client("bob", "pw-bob", "phone", log)
    bob2.starttls()
    bob2.auth_plain()
    bob2.open()
    bob2.next(lambda e: b"features" in e)
    if previd:
        bob2.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{previd.group(1).decode()}' h='{h}'/>")
        bob2.next(lambda e: b"resumed" in e or b"failed" in e)
        bob2.drain(1.0)
    bob3 = Client("bob", "pw-bob", "phone2", log)
    bob3.starttls()
    bob3.auth_plain()
    bob3.open()
    bob3.next(lambda e: b"features" in e)
    bob3.send("<resume xmlns='urn:xmpp:sm:3' previd='no-such-session' h='0'/>")
    bob3.next(lambda e: b"failed" in e)
    bob3.close()

    # unsubscribe: roster pushes with subscription changes, unavailable presence
    alice.iq("rdel", "<iq type='set' id='rdel'><query xmlns='jabber:iq:roster'><item jid='bob@xmpp.test' subscription='remove'/></query></iq>")
    alice.drain(1.0)
    alice2.drain(0.5)
    for c in (alice, alice2, bob2):
        c.close()

    # write: every captured stream whole, and each server element alone after its header;
    # structural duplicates (same tags and attribute names, other values) are written once
    os.makedirs(out_dir, exist_ok=True)
    shape = lambda b: re.sub(rb"='[^']*'|>[^<]*<", b"", b)
    seen = set()
    n = 0

    def write(name, data, key):
        nonlocal n
        if key in seen:
            return
        seen.add(key)
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        n += 1

    for i, s in enumerate(log):
        if not s.header:
            continue
        write(f"prosody-stream-{i:02d}.xml", s.header + b"".join(s.elements), shape(b"".join(s.elements)))
        for j, el in enumerate(s.elements):
            name = re.match(rb"\s*<([A-Za-z:]+)", el)
            tag = name.group(1).decode().replace(":", "-") if name else "end"
            write(f"prosody-{i:02d}-{j:02d}-{tag}.xml", s.header + el, shape(el))
    print(f"wrote {n} seeds from {len(log)} streams to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/stream")
