//! CPU cost of the bridge's cryptography per bridged message, both ways, with the state
//! written where the bridge writes it:
//! - `matrix_to_xmpp`: a Megolm decrypt by the ghost's `OlmMachine` (matrix-sdk-crypto on its
//!   SQLite store, as the bridge runs it) and an OMEMO encrypt to the contact's device with the
//!   commit of the advanced session;
//! - `xmpp_to_matrix`: an OMEMO decrypt with its commit and a Megolm encrypt by the ghost's
//!   machine (its outbound session advanced and saved).
//!
//! The OMEMO accounts keep their state in memory (the sled commit is measured by the bridge's
//! e2e numbers); each half is also timed alone. The Megolm session is the ghost's own (its
//! machine keeps the inbound copy of what it sends), so no homeserver is needed; decrypting a
//! user's session takes the same path. Results: docs/performance.md.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use matrix_sdk_crypto::{DecryptionSettings, EncryptionSettings, OlmMachine, TrustRequirement};
use matrix_sdk_sqlite::SqliteCryptoStore;
use ruma::events::AnyMessageLikeEventContent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, device_id, room_id, user_id};
use tokio::runtime::Runtime;
use xmpp_omemo::omemo::{Account, DeviceAddress, MemoryStore, TrustPolicy};
use xmpp_omemo::stanza::omemo::{Bundle, Encrypted};

/// A 100-byte body.
const BODY: &str = "The quick brown fox jumps over the lazy dog; the bridge carries it across, sealed for each device!!!";

struct Party {
    account: Account,
    bundle: Bundle,
}

impl Party {
    fn new(jid: &str) -> Self {
        let account = Account::open_or_create(
            Arc::new(MemoryStore::new()),
            jid,
            TrustPolicy::default(),
            &[],
        )
        .expect("account");
        let bundle = account.bundle().expect("bundle");
        Self { account, bundle }
    }

    fn address(&self) -> DeviceAddress {
        DeviceAddress::new(self.account.jid(), self.account.device_id())
    }
}

async fn seal(from: &Party, to: &Party) -> Encrypted {
    let guard = from.account.lock().await;
    let bundles = BTreeMap::from([(to.address(), to.bundle.clone())]);
    let sealed = from
        .account
        .encrypt(
            guard,
            to.account.jid(),
            Some(BODY),
            &[to.address()],
            &bundles,
        )
        .await
        .expect("encrypt");
    sealed.state.commit().await.expect("commit");
    sealed.element
}

async fn open(at: &Party, from: &Party, message: &Encrypted) {
    let guard = at.account.lock().await;
    let decrypted = at
        .account
        .decrypt(guard, from.account.jid(), message)
        .await
        .map_err(|f| f.error)
        .expect("decrypt");
    black_box(&decrypted.body);
    decrypted.state.commit().await.expect("commit");
}

/// The ghost's machine on a SQLite store in `dir`, with an outbound Megolm session for the
/// room (shared with nobody: the cost of sharing is paid once per session, not per message).
async fn ghost(dir: &std::path::Path) -> (OlmMachine, OwnedRoomId) {
    let store = SqliteCryptoStore::open(dir, None).await.expect("store");
    let machine = OlmMachine::with_store(
        user_id!("@interop_bob=40x.test:hs.test"),
        device_id!("IBBENCH000"),
        store,
        None,
    )
    .await
    .expect("machine");
    let room = room_id!("!portal:hs.test").to_owned();
    machine
        .share_room_key(&room, std::iter::empty(), settings())
        .await
        .expect("session");
    (machine, room)
}

/// The settings of a portal: Megolm, rotated as `m.room.encryption` says by default.
fn settings() -> EncryptionSettings {
    EncryptionSettings::default()
}

fn content() -> Raw<AnyMessageLikeEventContent> {
    Raw::new(&serde_json::json!({ "msgtype": "m.text", "body": BODY }))
        .expect("content")
        .cast_unchecked()
}

/// What the bridge does per send: make sure the room's session is shared (a no-op until it
/// must rotate, which matrix-sdk-crypto does after at most 10,000 messages), then encrypt.
async fn megolm_encrypt(machine: &OlmMachine, room: &OwnedRoomId) -> serde_json::Value {
    machine
        .share_room_key(room, std::iter::empty(), settings())
        .await
        .expect("session");
    let sealed = machine
        .encrypt_room_event_raw(room, "m.room.message", &content())
        .await
        .expect("encrypt");
    serde_json::to_value(&sealed.content).expect("json")
}

/// The event as the homeserver delivers it.
fn event(content: serde_json::Value, n: u64) -> Raw<ruma::events::AnyTimelineEvent> {
    Raw::new(&serde_json::json!({
        "type": "m.room.encrypted",
        "sender": "@interop_bob=40x.test:hs.test",
        "room_id": "!portal:hs.test",
        "event_id": format!("$event{n}"),
        "origin_server_ts": 1_700_000_000_000u64 + n,
        "content": content,
    }))
    .expect("event")
    .cast_unchecked()
}

async fn megolm_decrypt(
    machine: &OlmMachine,
    room: &OwnedRoomId,
    event: &Raw<ruma::events::AnyTimelineEvent>,
) {
    let settings = DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    };
    let plain = machine
        .decrypt_room_event(event.cast_ref_unchecked(), room, &settings)
        .await
        .expect("decrypt");
    black_box(plain.event);
}

fn crypto(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (machine, room) = rt.block_on(ghost(dir.path()));
    let (alice, bob) = (Party::new("alice@x.test"), Party::new("bob@x.test"));
    rt.block_on(async {
        open(&bob, &alice, &seal(&alice, &bob).await).await;
        open(&alice, &bob, &seal(&bob, &alice).await).await;
    });
    let mut n = 0u64;
    let mut next_event = |rt: &Runtime| {
        n += 1;
        event(rt.block_on(megolm_encrypt(&machine, &room)), n)
    };

    c.bench_function("megolm_encrypt_sqlite", |b| {
        b.iter(|| rt.block_on(megolm_encrypt(&machine, &room)))
    });
    c.bench_function("megolm_decrypt_sqlite", |b| {
        b.iter_batched(
            || next_event(&rt),
            |e| rt.block_on(megolm_decrypt(&machine, &room, &e)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("matrix_to_xmpp", |b| {
        b.iter_batched(
            || next_event(&rt),
            |e| {
                rt.block_on(async {
                    megolm_decrypt(&machine, &room, &e).await;
                    black_box(seal(&alice, &bob).await);
                })
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("xmpp_to_matrix", |b| {
        b.iter_batched(
            || rt.block_on(seal(&bob, &alice)),
            |m| {
                rt.block_on(async {
                    open(&alice, &bob, &m).await;
                    black_box(megolm_encrypt(&machine, &room).await);
                })
            },
            BatchSize::SmallInput,
        )
    });
    // The SQLite store's pool must be dropped inside the runtime.
    rt.block_on(async move { drop(machine) });
}

criterion_group!(benches, crypto);
criterion_main!(benches);
