//! Two accounts talking OMEMO 2 through [`Account`] in memory: the wire bundle, session start
//! both ways, the shared prekey pool, replays, identities shared with legacy, empty messages.

use std::collections::BTreeMap;

use crate::stanza::omemo2::{Bundle2, Encrypted2};
use crate::stanza::{FromElement, IntoElement};

use super::TrustPolicy;
use super::account::{DecryptError, Decrypted};
use super::store::Trust;
use super::tests::{Backend, Party};
use super::two::sce;

impl Party {
    fn bundle2(&self) -> Bundle2 {
        let bundle = self.account.bundle2().expect("bundle2");
        // Through the element, as a contact fetches it.
        Bundle2::from_element(bundle.into_element()).expect("parses")
    }

    async fn seal2(&self, to: &Party, body: Option<&str>) -> Encrypted2 {
        let target = to.address();
        let bundles = BTreeMap::from([(target.clone(), to.bundle2())]);
        let guard = self.account.lock().await;
        let sealed = self
            .account
            .encrypt2(
                guard,
                to.account.jid(),
                body.map(|b| vec![sce::body(b)]),
                &[target],
                &bundles,
            )
            .await
            .expect("encrypt2");
        sealed.state.commit().await.expect("commit");
        Encrypted2::from_element(sealed.element.into_element()).expect("parses")
    }

    async fn open2(&self, from: &Party, message: &Encrypted2) -> Result<Decrypted, DecryptError> {
        let guard = self.account.lock().await;
        self.account
            .decrypt2(guard, from.account.jid(), message)
            .await
            .map_err(|f| f.error)
    }

    async fn open2_and_commit(&self, from: &Party, message: &Encrypted2) -> Got2 {
        let d = self.open2(from, message).await.expect("decrypt2");
        let got = Got2 {
            body: d.body,
            prekey: d.prekey,
            consumed_prekey: d.consumed_prekey,
        };
        d.state.commit().await.expect("commit");
        got
    }
}

struct Got2 {
    body: Option<String>,
    prekey: bool,
    consumed_prekey: bool,
}

#[tokio::test]
async fn a_conversation_starts_both_ways_and_uses_up_one_shared_prekey() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    let bob_prekeys = bob.store.prekey_ids().expect("ids").len();

    let first = alice.seal2(&bob, Some("hi <bob> & 👋")).await;
    let key = first
        .key_for("bob@x.test", bob.address().device.get())
        .expect("key");
    assert!(key.kex, "the first message is a key exchange");
    let got = bob.open2_and_commit(&alice, &first).await;
    assert_eq!(got.body.as_deref(), Some("hi <bob> & 👋"));
    assert!(got.prekey && got.consumed_prekey);
    assert_eq!(
        bob.store.prekey_ids().expect("ids").len(),
        bob_prekeys - 1,
        "the prekey is gone from the one pool both bundles publish"
    );
    assert_eq!(
        bob.account.bundle().expect("legacy").prekeys.len(),
        bob.account.bundle2().expect("two").prekeys.len()
    );
    assert!(bob.store.session(&alice.address()).expect("read").is_none());

    // The replayed key exchange is a duplicate, not a second session.
    assert_eq!(
        bob.open2(&alice, &first).await.err(),
        Some(DecryptError::Duplicate)
    );

    let answer = bob.seal2(&alice, Some("hello alice")).await;
    assert!(
        !answer
            .key_for("alice@x.test", alice.address().device.get())
            .expect("key")
            .kex
    );
    let got = alice.open2_and_commit(&bob, &answer).await;
    assert_eq!(got.body.as_deref(), Some("hello alice"));
    assert!(!got.prekey);

    // Confirmed: no more key exchanges.
    for i in 0..5 {
        let m = alice.seal2(&bob, Some(&format!("m{i}"))).await;
        assert!(!m.keys[0].keys[0].kex);
        let got = bob.open2_and_commit(&alice, &m).await;
        assert_eq!(got.body, Some(format!("m{i}")));
    }
    // An empty message advances the session and shows nothing.
    let empty = bob.seal2(&alice, None).await;
    assert_eq!(empty.payload, None);
    assert_eq!(alice.open2_and_commit(&bob, &empty).await.body, None);
}

#[tokio::test]
async fn a_device_has_one_identity_for_both_namespaces_and_trust_applies_to_both() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::Strict);
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    // Legacy first: the identity is stored in 0x05 ‖ X25519 form.
    let legacy = alice.seal(&bob, Some("legacy")).await;
    bob.open_and_commit(&alice, &legacy).await;
    let known = alice
        .store
        .identity(&bob.address())
        .expect("read")
        .expect("known");
    assert_eq!(known.key, bob.account.identity_key());
    // OMEMO 2 with the same device: the same key, no identity change reported.
    let sealed = {
        let target = bob.address();
        let bundles = BTreeMap::from([(target.clone(), bob.bundle2())]);
        let guard = alice.account.lock().await;
        alice
            .account
            .encrypt2(
                guard,
                "bob@x.test",
                Some(vec![sce::body("two")]),
                &[target],
                &bundles,
            )
            .await
            .expect("encrypt2")
    };
    assert!(
        sealed.identity_changes.is_empty(),
        "{:?}",
        sealed.identity_changes
    );
    sealed.state.commit().await.expect("commit");
    // The user distrusts the device: neither namespace encrypts to it.
    let guard = alice.account.lock().await;
    alice
        .account
        .set_trust(guard, &bob.address(), Trust::Untrusted)
        .expect("set")
        .commit()
        .await
        .expect("commit");
    let guard = alice.account.lock().await;
    let refused = alice
        .account
        .encrypt2(
            guard,
            "bob@x.test",
            Some(vec![sce::body("no")]),
            &[bob.address()],
            &BTreeMap::new(),
        )
        .await;
    assert!(refused.is_err(), "an untrusted device gets no OMEMO 2 key");
}

#[tokio::test]
async fn messages_for_another_device_or_from_a_forged_sender_are_refused() {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", TrustPolicy::default());
    let bob = Party::new(&backend, "bob@x.test", TrustPolicy::default());
    let carol = Party::new(&backend, "carol@x.test", TrustPolicy::default());
    let to_bob = alice.seal2(&bob, Some("for bob")).await;
    assert_eq!(
        carol.open2(&alice, &to_bob).await.err(),
        Some(DecryptError::NotForThisDevice)
    );
    // The same bytes claimed by another sender: the envelope's <from> does not match.
    let err = bob.open2(&carol, &to_bob).await.err();
    assert!(
        matches!(err, Some(DecryptError::Envelope(_))),
        "a message whose envelope names another sender: {err:?}"
    );
    let no_session = Encrypted2 {
        keys: vec![crate::stanza::omemo2::Keys2 {
            jid: "bob@x.test".into(),
            keys: vec![crate::stanza::omemo2::Key2 {
                rid: bob.address().device.get(),
                kex: false,
                data: vec![1, 2, 3],
            }],
        }],
        ..to_bob
    };
    assert_eq!(
        bob.open2(&carol, &no_session).await.err(),
        Some(DecryptError::NoSession)
    );
}
