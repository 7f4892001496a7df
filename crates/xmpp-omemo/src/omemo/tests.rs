//! Two accounts talking through [`Account`] in memory: sessions, durability of the overlay,
//! replays, corruption, identity changes, trust policies, prekey upkeep.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stanza::omemo::{Bundle, Encrypted};

use super::TrustPolicy;
use super::account::{Account, DecryptError, Decrypted, SkipReason};
use super::keys::{self, PREKEY_TARGET};
use super::memory::MemoryStore;
use super::store::{Changes, DeviceAddress, DeviceId, DeviceList, OmemoStore, Trust};

/// Several accounts' stores by name, as a bridge's database holds them.
#[derive(Default)]
pub(super) struct Backend(std::sync::Mutex<BTreeMap<String, Arc<MemoryStore>>>);

impl Backend {
    pub(super) fn omemo(&self, name: &str) -> Arc<dyn OmemoStore> {
        let mut stores = self.0.lock().expect("lock");
        stores.entry(name.to_owned()).or_default().clone()
    }
}

/// What a committed decrypt gave.
pub(super) struct Opened {
    pub(super) body: Option<String>,
    prekey: bool,
    consumed_prekey: bool,
    pub(super) identity_changes: Vec<super::IdentityChangeSeen>,
}

pub(super) struct Party {
    pub(super) account: Account,
    pub(super) store: Arc<dyn OmemoStore>,
}

impl Party {
    pub(super) fn new(backend: &Backend, jid: &str, policy: TrustPolicy) -> Self {
        let store = backend.omemo(jid);
        let account =
            Account::open_or_create(store.clone(), jid, policy, &[]).expect("create account");
        Self { account, store }
    }

    pub(super) fn address(&self) -> DeviceAddress {
        DeviceAddress::new(self.account.jid(), self.account.device_id())
    }

    pub(super) fn bundle(&self) -> Bundle {
        self.account.bundle().expect("bundle")
    }

    /// Encrypts `body` to `to`'s one device, fetching its bundle when there is no session.
    pub(super) async fn seal(&self, to: &Party, body: Option<&str>) -> Encrypted {
        let target = to.address();
        let mut bundles = BTreeMap::new();
        bundles.insert(target.clone(), to.bundle());
        let guard = self.account.lock().await;
        let sealed = self
            .account
            .encrypt(guard, to.account.jid(), body, &[target], &bundles)
            .await
            .expect("encrypt");
        sealed.state.commit().await.expect("commit");
        sealed.element
    }

    async fn open(&self, from: &Party, message: &Encrypted) -> Result<Decrypted, DecryptError> {
        let guard = self.account.lock().await;
        self.account
            .decrypt(guard, from.account.jid(), message)
            .await
            .map_err(|f| f.error)
    }

    pub(super) async fn open_and_commit(&self, from: &Party, message: &Encrypted) -> Opened {
        let d = self.open(from, message).await.expect("decrypt");
        d.state.commit().await.expect("commit");
        Opened {
            body: d.body,
            prekey: d.prekey,
            consumed_prekey: d.consumed_prekey,
            identity_changes: d.identity_changes,
        }
    }
}

fn pair() -> (Backend, Party, Party) {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    (backend, alice, bob)
}

#[tokio::test]
async fn first_message_is_a_prekey_message_then_plain_signal_messages() {
    let (_b, alice, bob) = pair();
    let m1 = alice.seal(&bob, Some("hello bob")).await;
    assert_eq!(m1.keys.len(), 1);
    assert!(m1.keys[0].prekey, "the first message starts the session");
    assert_eq!(m1.iv.len(), 12);
    let d1 = bob.open_and_commit(&alice, &m1).await;
    assert_eq!(d1.body.as_deref(), Some("hello bob"));
    assert!(d1.prekey && d1.consumed_prekey);
    assert_eq!(
        bob.store.prekey_ids().expect("ids").len(),
        PREKEY_TARGET - 1,
        "the used prekey is gone"
    );

    let m2 = bob.seal(&alice, Some("hi alice")).await;
    assert!(
        !m2.keys[0].prekey,
        "bob answers on the session alice started"
    );
    assert_eq!(
        alice.open_and_commit(&bob, &m2).await.body.as_deref(),
        Some("hi alice")
    );
    let m3 = alice.seal(&bob, Some("third")).await;
    assert!(
        !m3.keys[0].prekey,
        "after an answer alice stops sending prekey messages"
    );
    assert_eq!(
        bob.open_and_commit(&alice, &m3).await.body.as_deref(),
        Some("third")
    );
}

/// The base key of a PreKeySignalMessage: which key exchange it belongs to.
fn base_key(message: &Encrypted) -> Vec<u8> {
    let key = &message.keys[0];
    assert!(key.prekey, "not a key exchange");
    wacore_libsignal::protocol::PreKeySignalMessage::try_from(&key.data[..])
        .expect("a PreKeySignalMessage")
        .base_key()
        .serialize()
        .to_vec()
}

#[tokio::test]
async fn when_both_start_a_session_at_once_each_keeps_its_own_and_both_directions_decrypt() {
    let (_b, alice, bob) = pair();
    // Both seal their first message before either has the other's.
    let from_alice = alice.seal(&bob, Some("alice first")).await;
    let from_bob = bob.seal(&alice, Some("bob first")).await;
    assert_eq!(
        alice.open_and_commit(&bob, &from_bob).await.body.as_deref(),
        Some("bob first")
    );
    assert_eq!(
        bob.open_and_commit(&alice, &from_alice)
            .await
            .body
            .as_deref(),
        Some("alice first")
    );
    // Alice still sends in the session she started (libsignal alone would switch to bob's),
    // which is the one python-omemo and libsignal-protocol-c keep after such a race.
    let next = alice.seal(&bob, Some("alice second")).await;
    assert_eq!(base_key(&next), base_key(&from_alice));
    assert_eq!(
        bob.open_and_commit(&alice, &next).await.body.as_deref(),
        Some("alice second")
    );
    // Bob's messages in his own session still decrypt at alice (it is a previous state there).
    let reply = bob.seal(&alice, Some("bob second")).await;
    assert_eq!(
        alice.open_and_commit(&bob, &reply).await.body.as_deref(),
        Some("bob second")
    );
    let last = alice.seal(&bob, Some("alice third")).await;
    assert_eq!(
        bob.open_and_commit(&alice, &last).await.body.as_deref(),
        Some("alice third")
    );
}

#[tokio::test]
async fn an_uncommitted_decrypt_leaves_the_stored_session_able_to_decrypt_again() {
    let (_b, alice, bob) = pair();
    let m1 = alice.seal(&bob, Some("one")).await;
    // Crash before the commit: the stanza is redelivered and decrypts against the stored state.
    let first = bob.open(&alice, &m1).await.expect("decrypt");
    drop(first);
    assert_eq!(
        bob.store.prekey_ids().expect("ids").len(),
        PREKEY_TARGET,
        "nothing was written"
    );
    assert_eq!(
        bob.open_and_commit(&alice, &m1).await.body.as_deref(),
        Some("one")
    );
    // Once committed, the same stanza is a replay.
    assert_eq!(
        bob.open(&alice, &m1).await.err(),
        Some(DecryptError::Duplicate)
    );
    assert!(!DecryptError::Duplicate.wants_repair());

    let m2 = alice.seal(&bob, Some("two")).await;
    drop(bob.open(&alice, &m2).await.expect("decrypt"));
    assert_eq!(
        bob.open_and_commit(&alice, &m2).await.body.as_deref(),
        Some("two")
    );
}

#[tokio::test]
async fn corrupted_and_replayed_messages_fail_cleanly_and_later_ones_decrypt() {
    let (_b, alice, bob) = pair();
    let m1 = alice.seal(&bob, Some("one")).await;
    bob.open_and_commit(&alice, &m1).await;
    let reply = bob.seal(&alice, Some("ack")).await;
    alice.open_and_commit(&bob, &reply).await;

    let mut bad_key = alice.seal(&bob, Some("two")).await;
    let last = bad_key.keys[0].data.len() - 1;
    bad_key.keys[0].data[last] ^= 0x40;
    let error = bob
        .open(&alice, &bad_key)
        .await
        .err()
        .expect("a flipped MAC byte must fail");
    assert!(matches!(error, DecryptError::Signal(_)), "{error:?}");
    assert!(error.wants_repair());

    let mut bad_payload = alice.seal(&bob, Some("three")).await;
    bad_payload.payload.as_mut().expect("payload")[0] ^= 1;
    let failure = {
        let guard = bob.account.lock().await;
        bob.account
            .decrypt(guard, "alice@x.test", &bad_payload)
            .await
            .err()
            .expect("tampered payload")
    };
    assert!(matches!(failure.error, DecryptError::Payload(_)));
    assert!(
        !failure.state.changes().is_empty(),
        "the used message key is still committed"
    );
    failure.state.commit().await.expect("commit");

    let m4 = alice.seal(&bob, Some("four")).await;
    assert_eq!(
        bob.open_and_commit(&alice, &m4).await.body.as_deref(),
        Some("four")
    );
    assert_eq!(
        bob.open(&alice, &m4).await.err(),
        Some(DecryptError::Duplicate)
    );
    let m5 = alice.seal(&bob, Some("five")).await;
    assert_eq!(
        bob.open_and_commit(&alice, &m5).await.body.as_deref(),
        Some("five")
    );
}

#[tokio::test]
async fn a_message_without_our_key_or_with_a_bad_sender_is_refused() {
    let (backend, alice, bob) = pair();
    let carol = Party::new(&backend, "carol@x.test", TrustPolicy::default());
    let to_carol = alice.seal(&carol, Some("not for bob")).await;
    assert_eq!(
        bob.open(&alice, &to_carol).await.err(),
        Some(DecryptError::NotForThisDevice)
    );
    let mut bad_sid = alice.seal(&bob, Some("x")).await;
    bad_sid.sid = 0;
    assert_eq!(
        bob.open(&alice, &bad_sid).await.err(),
        Some(DecryptError::InvalidSender(0))
    );
}

#[tokio::test]
async fn a_replaced_identity_is_reported_and_trusted_by_default() {
    let (backend, alice, bob) = pair();
    let m1 = alice.seal(&bob, Some("one")).await;
    bob.open_and_commit(&alice, &m1).await;
    let old_fp = alice.account.fingerprint();

    // Alice reinstalls with the same device id and fresh keys.
    let device = alice.account.device_id();
    alice.store.clear().expect("clear");
    let fresh = Account::open_or_create(
        backend.omemo("alice2@x.test"),
        "alice@x.test",
        TrustPolicy::default(),
        &[],
    )
    .expect("fresh");
    let mut record = backend
        .omemo("alice2@x.test")
        .own_identity()
        .expect("read")
        .expect("exists");
    record.device_id = device;
    let mut copy = Changes::default();
    for id in backend.omemo("alice2@x.test").prekey_ids().expect("ids") {
        copy.put_prekeys.push((
            id,
            backend
                .omemo("alice2@x.test")
                .prekey(id)
                .expect("read")
                .expect("exists"),
        ));
    }
    copy.put_signed_prekeys = backend
        .omemo("alice2@x.test")
        .signed_prekeys()
        .expect("spks");
    copy.own_identity = Some(record);
    alice.store.commit(&copy).expect("commit");
    drop(fresh);
    let alice = Party {
        account: Account::open_or_create(
            alice.store.clone(),
            "alice@x.test",
            TrustPolicy::default(),
            &[],
        )
        .expect("open"),
        store: alice.store,
    };
    assert_eq!(alice.account.device_id(), device);
    assert_ne!(alice.account.fingerprint(), old_fp);

    let m2 = alice.seal(&bob, Some("after reinstall")).await;
    assert!(m2.keys[0].prekey);
    let d = bob.open_and_commit(&alice, &m2).await;
    assert_eq!(d.body.as_deref(), Some("after reinstall"));
    assert_eq!(d.identity_changes.len(), 1);
    assert!(d.identity_changes[0].trusted);
    assert_eq!(
        keys::fingerprint(&d.identity_changes[0].new_key),
        alice.account.fingerprint()
    );
    assert_eq!(
        d.identity_changes[0]
            .old_key
            .as_deref()
            .map(keys::fingerprint),
        Some(old_fp)
    );
    let reply = bob.seal(&alice, Some("still here")).await;
    assert_eq!(
        alice.open_and_commit(&bob, &reply).await.body.as_deref(),
        Some("still here")
    );
}

#[tokio::test]
async fn strict_policy_refuses_to_send_to_a_changed_identity_until_trusted() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::Strict);
    let m1 = alice.seal(&bob, Some("one")).await;
    bob.open_and_commit(&alice, &m1).await;
    // Bob knows alice's key; pretend alice's device now presents another identity.
    let target = alice.address();
    let other = Party::new(&backend, "other@x.test", TrustPolicy::default());
    let mut forged = other.bundle();
    forged.signed_prekey_id = alice.bundle().signed_prekey_id;
    bob.store
        .commit(&Changes {
            remove_sessions: vec![target.clone()],
            ..Changes::default()
        })
        .expect("drop session");
    let mut bundles = BTreeMap::new();
    bundles.insert(target.clone(), forged);
    let guard = bob.account.lock().await;
    let result = bob
        .account
        .encrypt(
            guard,
            "alice@x.test",
            Some("x"),
            std::slice::from_ref(&target),
            &bundles,
        )
        .await;
    let Err(super::EncryptError::NoDevice { skipped, .. }) = result else {
        panic!("strict mode must not send")
    };
    assert_eq!(skipped, vec![(target.clone(), SkipReason::Untrusted)]);
    assert_eq!(
        bob.store.identity(&target).expect("read").map(|k| k.trust),
        Some(Trust::Blind),
        "nothing committed on failure"
    );
}

#[tokio::test]
async fn a_bundle_with_a_bad_signature_is_skipped() {
    let (_b, alice, bob) = pair();
    let mut bundle = bob.bundle();
    bundle.signed_prekey_signature[3] ^= 1;
    let mut bundles = BTreeMap::new();
    bundles.insert(bob.address(), bundle);
    let guard = alice.account.lock().await;
    let result = alice
        .account
        .encrypt(guard, "bob@x.test", Some("x"), &[bob.address()], &bundles)
        .await;
    let Err(super::EncryptError::NoDevice { skipped, .. }) = result else {
        panic!("must not encrypt")
    };
    assert!(
        matches!(skipped[0].1, SkipReason::BadBundle(_)),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn own_other_devices_get_keys_and_our_own_device_does_not() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let alice2 = Party::new(&backend, "alice@x.test#2", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    // alice2 is another device of alice's account (its own store, same JID).
    let alice2_addr = DeviceAddress::new("alice@x.test", alice2.account.device_id());
    let targets = vec![bob.address(), alice2_addr.clone(), alice.address()];
    let mut bundles = BTreeMap::new();
    bundles.insert(bob.address(), bob.bundle());
    bundles.insert(alice2_addr.clone(), alice2.bundle());
    let guard = alice.account.lock().await;
    let sealed = alice
        .account
        .encrypt(guard, "bob@x.test", Some("to all"), &targets, &bundles)
        .await
        .expect("encrypt");
    let rids: Vec<u32> = sealed.element.keys.iter().map(|k| k.rid).collect();
    assert_eq!(
        rids,
        vec![
            bob.account.device_id().get(),
            alice2.account.device_id().get()
        ]
    );
    sealed.state.commit().await.expect("commit");
}

#[test]
fn maintenance_refills_prekeys_and_rotates_the_signed_prekey_with_a_grace_period() {
    let backend = Backend::default();
    let store = backend.omemo("a@x.test");
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let day = 24 * 3600 * 1000;
    store
        .commit(&keys::create_identity(&[], 1_000 * day, &mut rng).expect("create"))
        .expect("commit");
    assert!(
        keys::maintain(store.as_ref(), 1_000 * day, &mut rng)
            .expect("maintain")
            .is_empty(),
        "nothing due"
    );

    let used: Vec<u32> = store
        .prekey_ids()
        .expect("ids")
        .into_iter()
        .take(15)
        .collect();
    store
        .commit(&Changes {
            remove_prekeys: used,
            ..Changes::default()
        })
        .expect("use prekeys");
    let refill = keys::maintain(store.as_ref(), 1_000 * day, &mut rng).expect("maintain");
    assert_eq!(refill.put_prekeys.len(), 15);
    store.commit(&refill).expect("commit");
    let ids = store.prekey_ids().expect("ids");
    assert_eq!(ids.len(), PREKEY_TARGET);
    assert_eq!(
        ids.last().copied(),
        Some(115),
        "prekey ids are never reused"
    );

    let rotate = keys::maintain(store.as_ref(), 1_008 * day, &mut rng).expect("maintain");
    assert_eq!(rotate.put_signed_prekeys.len(), 1);
    assert!(
        rotate.remove_signed_prekeys.is_empty(),
        "the old one stays for the grace period"
    );
    store.commit(&rotate).expect("commit");
    assert_eq!(store.signed_prekeys().expect("spks").len(), 2);
    let later = keys::maintain(store.as_ref(), 1_040 * day, &mut rng).expect("maintain");
    assert_eq!(
        later.remove_signed_prekeys,
        vec![1],
        "dropped 30 days after its successor"
    );
}

#[test]
fn device_lists_round_trip_through_the_store() {
    let backend = Backend::default();
    let store = backend.omemo("a@x.test");
    let list = DeviceList {
        devices: vec![DeviceId::new(3).expect("id")],
        updated_ms: 5,
    };
    store
        .commit(&Changes {
            put_device_lists: vec![("b@x.test".into(), list.clone())],
            ..Changes::default()
        })
        .expect("commit");
    assert_eq!(store.device_list("b@x.test").expect("read"), Some(list));
}

/// Whether `lock` is still waiting after other tasks had a chance to run. (It cannot wrongly
/// say "waiting" for a lock that is free: a free lock is taken on the first poll.)
async fn still_waiting<F: std::future::Future>(lock: F) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(50), lock)
        .await
        .is_err()
}

#[tokio::test]
async fn a_held_message_of_one_contact_blocks_only_that_contact() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    let carol = Party::new(&backend, "carol@x.test", TrustPolicy::default());
    let from_bob = bob.seal(&alice, Some("one")).await;
    let from_bob_2 = bob.seal(&alice, Some("two")).await;
    let from_carol = carol.seal(&alice, Some("three")).await;

    // Bob's first message decrypted and not committed yet (its owner is still posting it).
    let guard = alice.account.lock_for(&["bob@x.test"]).await;
    let held = alice
        .account
        .decrypt(guard, "bob@x.test", &from_bob)
        .await
        .map_err(|f| f.error)
        .expect("decrypt");

    // Carol's message decrypts and commits meanwhile.
    let guard = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        alice.account.lock_for(&["carol@x.test"]),
    )
    .await
    .expect("carol's sessions are not held by bob's message");
    let d = alice
        .account
        .decrypt(guard, "carol@x.test", &from_carol)
        .await
        .map_err(|f| f.error)
        .expect("decrypt carol");
    assert_eq!(d.body.as_deref(), Some("three"));
    d.state.commit().await.expect("commit carol");

    // Bob's second message waits for the first one's commit, and a send to bob too.
    assert!(still_waiting(alice.account.lock_for(&["bob@x.test"])).await);
    assert!(still_waiting(alice.account.lock_for(&["alice@x.test", "bob@x.test"])).await);
    assert!(still_waiting(alice.account.lock()).await);
    // Prekey upkeep is a scope of its own.
    let prekeys = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        alice.account.lock_prekeys(),
    )
    .await
    .expect("prekeys are not held by a message");
    drop(prekeys);
    assert_eq!(held.body.as_deref(), Some("one"));
    held.state.commit().await.expect("commit bob 1");
    let d2 = alice.open_and_commit(&bob, &from_bob_2).await;
    assert_eq!(d2.body.as_deref(), Some("two"));
}

#[tokio::test]
async fn an_operation_outside_its_guard_fails_and_changes_nothing() {
    let (_b, alice, bob) = pair();
    let m = alice.seal(&bob, Some("hello")).await;
    let guard = bob.account.lock_for(&["carol@x.test"]).await;
    let failure = match bob.account.decrypt(guard, "alice@x.test", &m).await {
        Ok(_) => panic!("decrypted under a guard for someone else"),
        Err(f) => f,
    };
    assert!(
        matches!(failure.error, DecryptError::Store(_)),
        "{:?}",
        failure.error
    );
    assert!(failure.state.changes().is_empty());
    drop(failure);
    let guard = bob.account.lock_for(&["alice@x.test"]).await;
    assert!(
        bob.account.maintain(guard).is_err(),
        "prekey upkeep needs the prekey scope"
    );
    // The message still decrypts under the right guard.
    let d = bob.open_and_commit(&alice, &m).await;
    assert_eq!(d.body.as_deref(), Some("hello"));
}

/// Encrypts to `to`'s device from a bundle that offers a single one-time prekey, as two
/// senders who fetched the same bundle before either message was answered would.
async fn seal_with_one_prekey(from: &Party, to: &Party, body: &str) -> Encrypted {
    let target = to.address();
    let mut bundle = to.bundle();
    bundle.prekeys.truncate(1);
    let bundles = BTreeMap::from([(target.clone(), bundle)]);
    let guard = from.account.lock().await;
    let sealed = from
        .account
        .encrypt(guard, to.account.jid(), Some(body), &[target], &bundles)
        .await
        .expect("encrypt");
    sealed.state.commit().await.expect("commit");
    sealed.element
}

#[tokio::test]
async fn held_prekeys_let_two_prekey_messages_on_one_prekey_decrypt_then_go() {
    let backend = Backend::default();
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let carol = Party::new(&backend, "carol@x.test", TrustPolicy::default());
    let prekey = bob.bundle().prekeys[0].0;
    let from_alice = seal_with_one_prekey(&alice, &bob, "from alice").await;
    let from_carol = seal_with_one_prekey(&carol, &bob, "from carol").await;

    bob.account.hold_used_prekeys();
    let first = bob.open_and_commit(&alice, &from_alice).await;
    assert_eq!(first.body.as_deref(), Some("from alice"));
    assert!(
        first.prekey && !first.consumed_prekey,
        "held: nothing to republish yet"
    );
    assert!(
        bob.store.prekey(prekey).expect("read").is_some(),
        "still there"
    );
    let second = bob.open_and_commit(&carol, &from_carol).await;
    assert_eq!(second.body.as_deref(), Some("from carol"));

    let released = bob.account.release_used_prekeys();
    assert_eq!(released, [prekey, prekey]);
    let guard = bob.account.lock_prekeys().await;
    let changes = Changes {
        remove_prekeys: released,
        ..Changes::default()
    };
    bob.account
        .update(guard, changes)
        .commit()
        .await
        .expect("commit");
    assert!(
        bob.store.prekey(prekey).expect("read").is_none(),
        "gone after the release"
    );
    assert!(
        bob.account.release_used_prekeys().is_empty(),
        "no longer held"
    );

    // Without the hold, the second sender's message finds its prekey gone.
    let dave = Party::new(&backend, "dave@x.test", TrustPolicy::default());
    let erin = Party::new(&backend, "erin@x.test", TrustPolicy::default());
    let prekey = bob.bundle().prekeys[0].0;
    let from_dave = seal_with_one_prekey(&dave, &bob, "from dave").await;
    let from_erin = seal_with_one_prekey(&erin, &bob, "from erin").await;
    let third = bob.open_and_commit(&dave, &from_dave).await;
    assert!(third.consumed_prekey);
    assert!(bob.store.prekey(prekey).expect("read").is_none());
    assert!(bob.open(&erin, &from_erin).await.is_err());
}
