//! Our OMEMO 2 core (`omemo::two`) against python-omemo's twomemo backend
//! (`scripts/world/twomemo_peer.py`, which drives `twomemo.Twomemo` and its message classes
//! directly, without XMPP). Both directions of session set-up, the key exchange repeated until
//! the first answer, ratchet turns, out-of-order and skipped messages, empty messages, replays,
//! and a session restored from its bytes. Needs `WORLD_VENV` (or `.world/venv` in the repo) with
//! python-omemo installed; no server.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use wacore_libsignal::protocol::{IdentityKeyPair, KeyPair};
use xmpp_omemo::omemo::two::{
    self, Bundle, Encrypted, Error, Identity, KeyExchange, PreKeys, Session, payload, sce,
};

const OURS: &str = "rust@example.org";
const THEIRS: &str = "python@example.org";
const WAIT: Duration = Duration::from_secs(60);

type Rng = rand::rngs::StdRng;

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64")
}

fn fixed<const N: usize>(v: &Value) -> [u8; N] {
    unb64(v).try_into().expect("length")
}

/// The python peer: one JSON line in, one JSON line out.
struct Python {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    bundle: Bundle,
}

impl Python {
    fn start(identity: &str) -> Self {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = std::env::var("WORLD_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo.join(".world/venv"));
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "{} is missing: set WORLD_VENV to a venv with python-omemo",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(repo.join("scripts/world/twomemo_peer.py"))
            .args(["--identity", identity])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start twomemo_peer.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut py = Self {
            child,
            stdin,
            lines,
            bundle: Bundle {
                identity_key: [0; 32],
                signed_prekey_id: 0,
                signed_prekey: [0; 32],
                signed_prekey_signature: [0; 64],
                prekeys: Vec::new(),
            },
        };
        let ready = py.read();
        assert_eq!(ready["event"], "ready", "{ready}");
        py.bundle = bundle_from_json(&ready["bundle"]);
        py
    }

    fn read(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("twomemo_peer.py answers within a minute");
        serde_json::from_str(&line).expect("a JSON line")
    }

    fn call(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to twomemo_peer.py");
        self.stdin.flush().expect("flush");
        self.read()
    }

    /// Sends them an encrypted key (and payload); returns their answer, which must not be an
    /// error.
    fn decrypt(&mut self, key: &Encrypted, payload: Option<&[u8]>) -> Value {
        let got = self.try_decrypt(key, payload);
        assert_eq!(got["event"], "decrypted", "{got}");
        got
    }

    fn try_decrypt(&mut self, key: &Encrypted, payload: Option<&[u8]>) -> Value {
        self.call(json!({
            "cmd": "decrypt",
            "key": b64(&key.bytes),
            "kex": key.kex,
            "payload": payload.map(b64),
        }))
    }

    /// They encrypt `text` in an SCE envelope (or an empty message for `None`), starting a
    /// session from `bundle` when given.
    fn encrypt(&mut self, text: Option<&str>, bundle: Option<Value>) -> Value {
        let got = self.call(json!({"cmd": "encrypt", "text": text, "bundle": bundle}));
        assert_eq!(got["event"], "encrypted", "{got}");
        got
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bundle_from_json(v: &Value) -> Bundle {
    Bundle {
        identity_key: fixed(&v["ik"]),
        signed_prekey_id: v["spk_id"].as_u64().expect("spk_id") as u32,
        signed_prekey: fixed(&v["spk"]),
        signed_prekey_signature: fixed(&v["spks"]),
        prekeys: v["prekeys"]
            .as_array()
            .expect("prekeys")
            .iter()
            .map(|p| (p[0].as_u64().expect("id") as u32, fixed(&p[1])))
            .collect(),
    }
}

/// Our device: the account's libsignal identity, a signed prekey and one-time prekeys.
struct Ours {
    identity: Identity,
    signed_prekey: (u32, [u8; 32], [u8; 32]),
    prekeys: HashMap<u32, ([u8; 32], [u8; 32])>,
}

impl PreKeys for Ours {
    fn signed_prekey(&self, id: u32) -> Option<[u8; 32]> {
        (id == self.signed_prekey.0).then_some(self.signed_prekey.1)
    }
    fn prekey(&self, id: u32) -> Option<[u8; 32]> {
        self.prekeys.get(&id).map(|k| k.0)
    }
}

fn x25519_pair(rng: &mut Rng) -> ([u8; 32], [u8; 32]) {
    let pair = KeyPair::generate(rng);
    (
        *pair.private_key.serialize(),
        pair.public_key
            .public_key_bytes()
            .try_into()
            .expect("32 bytes"),
    )
}

impl Ours {
    /// A device whose libsignal identity has the given natural Ed25519 sign bit (libsignal's
    /// XEdDSA signature carries it in its top bit): with 1, our published key and signatures
    /// rely on the sign-bit-0 conversion and the negated scalar.
    fn new(sign_bit: u8, rng: &mut Rng) -> Self {
        let pair = loop {
            let pair = IdentityKeyPair::generate(rng);
            let sig = pair
                .private_key()
                .calculate_signature(b"probe", rng)
                .expect("sign");
            if sig[63] >> 7 == sign_bit {
                break pair;
            }
        };
        let (spk_private, spk_public) = x25519_pair(rng);
        Self {
            identity: Identity::from_libsignal(&pair),
            signed_prekey: (3, spk_private, spk_public),
            prekeys: (1..=30).map(|id| (id, x25519_pair(rng))).collect(),
        }
    }

    fn bundle_json(&self, rng: &mut Rng) -> Value {
        let spk = self.signed_prekey.2;
        let mut prekeys: Vec<_> = self.prekeys.iter().map(|(id, k)| (*id, k.1)).collect();
        prekeys.sort();
        json!({
            "ik": b64(&self.identity.ed25519_public()),
            "spk_id": self.signed_prekey.0,
            "spk": b64(&spk),
            "spks": b64(&self.identity.sign(&spk, rng)),
            "prekeys": prekeys.iter().map(|(id, k)| json!([id, b64(k)])).collect::<Vec<_>>(),
        })
    }
}

/// One message of ours: the SCE envelope, sealed, its key encrypted in `session`.
fn seal(session: &mut Session, text: Option<&str>, rng: &mut Rng) -> (Encrypted, Option<Vec<u8>>) {
    match text {
        Some(text) => {
            let envelope = sce::build(vec![sce::body(text)], OURS, Some(THEIRS), rng);
            let sealed = payload::seal(&envelope, rng);
            (
                session.encrypt(&sealed.key_material.0),
                Some(sealed.payload),
            )
        }
        None => (session.encrypt(&payload::empty_key_material().0), None),
    }
}

/// Sends `text` (or an empty message) to python; checks what they read.
fn send(session: &mut Session, py: &mut Python, text: Option<&str>, rng: &mut Rng) -> Value {
    let (key, payload) = seal(session, text, rng);
    let got = py.decrypt(&key, payload.as_deref());
    assert_eq!(got["body"].as_str(), text);
    if text.is_some() {
        assert_eq!(got["from"], OURS);
    }
    got
}

/// Opens one of python's messages in `session`: the body, or `None` for an empty message.
fn open(session: &mut Session, msg: &Value, rng: &mut Rng) -> Result<Option<String>, Error> {
    let key = unb64(&msg["key"]);
    let material = if msg["kex"] == true {
        let kex = KeyExchange::decode(&key)?;
        assert!(session.built_from(&kex), "a repeated key exchange");
        session.decrypt_repeated(&kex, rng)?
    } else {
        session.decrypt(&key, rng)?
    };
    if msg["payload"].is_null() {
        assert_eq!(material, payload::empty_key_material());
        return Ok(None);
    }
    let plaintext = payload::open(&material, &unb64(&msg["payload"]))?;
    let envelope = sce::parse(&plaintext, THEIRS).expect("their envelope parses");
    assert_eq!(envelope.to.as_deref(), Some(OURS));
    Ok(envelope.body())
}

fn text(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// After set-up: turns, out of order both ways, a skipped run, empty messages, replays, and a
/// restore from bytes.
fn conversation(mut session: Session, py: &mut Python, rng: &mut Rng) {
    for round in 0..4 {
        for i in 0..2 {
            let got = send(
                &mut session,
                py,
                Some(&format!("ours {round}.{i} <&> 👋")),
                rng,
            );
            assert_eq!(got["new_session"], false);
        }
        let theirs = py.encrypt(Some(&format!("theirs {round} \"q\"")), None);
        assert_eq!(theirs["kex"], false);
        assert_eq!(
            open(&mut session, &theirs, rng),
            Ok(text(&format!("theirs {round} \"q\"")))
        );
    }

    // Ours out of order.
    let ours: Vec<_> = (1..=3)
        .map(|i| (i, seal(&mut session, Some(&format!("late {i}")), rng)))
        .collect();
    for &at in &[2usize, 0, 1] {
        let (i, (key, payload)) = &ours[at];
        let got = py.decrypt(key, payload.as_deref());
        assert_eq!(got["body"], format!("late {i}"));
    }
    // A replay of ours is refused by them.
    let (_, (key, payload)) = &ours[0];
    let replayed = py.try_decrypt(key, payload.as_deref());
    assert_eq!(replayed["event"], "error");
    assert!(
        replayed["error"]
            .as_str()
            .is_some_and(|e| e.contains("DuplicateMessageException")),
        "{replayed}"
    );

    // Theirs out of order, over a ratchet turn, with a run of 40 skipped.
    let theirs: Vec<_> = (0..45)
        .map(|i| py.encrypt(Some(&format!("p{i}")), None))
        .collect();
    assert_eq!(open(&mut session, &theirs[44], rng), Ok(text("p44")));
    assert_eq!(session.skipped_keys(), 44);
    assert_eq!(open(&mut session, &theirs[3], rng), Ok(text("p3")));
    let mut session = Session::from_bytes(&session.to_bytes()).expect("restores");
    assert_eq!(open(&mut session, &theirs[0], rng), Ok(text("p0")));
    assert_eq!(open(&mut session, &theirs[0], rng), Err(Error::Duplicate));
    assert_eq!(open(&mut session, &theirs[44], rng), Err(Error::Duplicate));
    send(&mut session, py, Some("answer"), rng);
    let after = py.encrypt(Some("after the turn"), None);
    assert_eq!(open(&mut session, &after, rng), Ok(text("after the turn")));
    assert_eq!(open(&mut session, &theirs[20], rng), Ok(text("p20")));
    assert_eq!(session.skipped_keys(), 41);

    // Empty messages both ways (confirmation, heartbeat).
    let got = send(&mut session, py, None, rng);
    assert!(got["plaintext"].is_null());
    let empty = py.encrypt(None, None);
    assert!(empty["payload"].is_null());
    assert_eq!(open(&mut session, &empty, rng), Ok(None));

    // A tampered key from them is refused and changes nothing.
    let next = py.encrypt(Some("intact"), None);
    let mut forged = next.clone();
    let mut key = unb64(&next["key"]);
    let last = key.len() - 1;
    key[last] ^= 1;
    forged["key"] = json!(b64(&key));
    let before = session.to_bytes();
    assert!(open(&mut session, &forged, rng).is_err());
    assert_eq!(session.to_bytes(), before);
    assert_eq!(open(&mut session, &next, rng), Ok(text("intact")));
}

/// We start the session from their bundle; our messages carry the key exchange until they
/// answer.
fn we_initiate(our_sign_bit: u8, their_identity: &str) {
    let mut rng: Rng = rand::make_rng();
    let mut py = Python::start(their_identity);
    assert!(py.bundle.signature_is_valid(), "twomemo's <spks> verifies");
    let ours = Ours::new(our_sign_bit, &mut rng);
    let mut session = Session::initiate(&ours.identity, &py.bundle, &mut rng).expect("initiate");

    let (first, payload) = seal(&mut session, Some("hello from rust"), &mut rng);
    assert!(first.kex);
    let got = py.decrypt(&first, payload.as_deref());
    assert_eq!(got["body"], "hello from rust");
    assert_eq!(
        (&got["new_session"], &got["prekey_deleted"]),
        (&json!(true), &json!(true))
    );

    // Still unanswered: the key exchange again, which they take as the same session.
    let (second, payload) = seal(&mut session, Some("second"), &mut rng);
    assert!(second.kex);
    let got = py.decrypt(&second, payload.as_deref());
    assert_eq!(
        (&got["body"], &got["new_session"]),
        (&json!("second"), &json!(false))
    );

    let answer = py.encrypt(Some("hello from python"), None);
    assert_eq!(answer["kex"], false);
    assert!(!session.confirmed());
    assert_eq!(
        open(&mut session, &answer, &mut rng),
        Ok(text("hello from python"))
    );
    assert!(session.confirmed());
    let (third, payload) = seal(&mut session, Some("third"), &mut rng);
    assert!(!third.kex, "a confirmed session sends plain keys");
    assert_eq!(py.decrypt(&third, payload.as_deref())["body"], "third");
    conversation(session, &mut py, &mut rng);
}

/// They start the session from our bundle; we accept the key exchange.
fn they_initiate(our_sign_bit: u8, their_identity: &str) {
    let mut rng: Rng = rand::make_rng();
    let mut py = Python::start(their_identity);
    let mut ours = Ours::new(our_sign_bit, &mut rng);
    let bundle = ours.bundle_json(&mut rng);

    let first = py.encrypt(Some("hello from python"), Some(bundle));
    assert_eq!(first["kex"], true);
    let kex = KeyExchange::decode(&unb64(&first["key"])).expect("their OMEMOKeyExchange");
    assert_eq!(kex.spk_id, 3);
    let accepted = two::accept(&ours.identity, &ours, &kex, &mut rng).expect("accept");
    assert_eq!(accepted.prekey_id, kex.pk_id);
    let plaintext =
        payload::open(&accepted.key_material, &unb64(&first["payload"])).expect("payload");
    let envelope = sce::parse(&plaintext, THEIRS).expect("envelope");
    assert_eq!(envelope.body().as_deref(), Some("hello from python"));
    assert_eq!(envelope.from.as_deref(), Some(THEIRS));
    ours.prekeys.remove(&accepted.prekey_id);
    let mut session = accepted.session;
    assert_eq!(session.their_identity(), py.bundle.identity_key);

    // They repeat the key exchange until we answer; it belongs to the session we have.
    let second = py.encrypt(Some("second"), None);
    assert_eq!(second["kex"], true);
    assert_eq!(open(&mut session, &second, &mut rng), Ok(text("second")));
    // The used prekey is gone: a fresh accept of the same key exchange fails.
    assert_eq!(
        two::accept(&ours.identity, &ours, &kex, &mut rng).err(),
        Some(Error::UnknownPreKey(kex.pk_id))
    );

    let got = send(&mut session, &mut py, Some("hello from rust"), &mut rng);
    assert_eq!(got["new_session"], false);
    let third = py.encrypt(Some("third"), None);
    assert_eq!(third["kex"], false, "our answer confirmed their session");
    assert_eq!(open(&mut session, &third, &mut rng), Ok(text("third")));
    conversation(session, &mut py, &mut rng);
}

#[test]
fn we_initiate_with_a_sign_0_identity_to_a_seed_identity() {
    we_initiate(0, "seed");
}

#[test]
fn we_initiate_with_a_sign_1_identity_to_a_curve25519_identity() {
    we_initiate(1, "priv");
}

#[test]
fn they_initiate_to_a_sign_1_identity_from_a_seed_identity() {
    they_initiate(1, "seed");
}

#[test]
fn they_initiate_to_a_sign_0_identity_from_a_curve25519_identity() {
    they_initiate(0, "priv");
}
