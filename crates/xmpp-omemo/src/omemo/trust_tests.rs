//! A contact's devices and our trust in them, with accounts in memory: first contact with
//! several devices, a known contact's new device under both policies (sending and receiving),
//! the user's verdict by fingerprint.

use std::collections::BTreeMap;

use super::account::{Account, Sealed, SkipReason};
use super::keys;
use super::store::{Changes, DeviceAddress, DeviceId, DeviceList, Trust};
use super::tests::{Backend, Party};
use super::trust::{TrustError, parse_fingerprint};
use super::{EncryptError, IdentityChangeSeen, TrustPolicy};

const BOB: &str = "bob@x.test";

/// Another device of `jid`'s account, with a store of its own (named `store`).
fn device(backend: &Backend, store: &str, jid: &str) -> Party {
    let store = backend.omemo(store);
    let account = Account::open_or_create(store.clone(), jid, TrustPolicy::default(), &[])
        .expect("create account");
    Party { account, store }
}

/// Encrypts `body` to `to`'s devices (bundles at hand for all of them) and commits.
async fn seal_to(from: &Party, to: &[&Party], body: &str) -> Result<Sealed, EncryptError> {
    let targets: Vec<DeviceAddress> = to.iter().map(|p| p.address()).collect();
    let bundles: BTreeMap<DeviceAddress, _> =
        to.iter().map(|p| (p.address(), p.bundle())).collect();
    let guard = from.account.lock().await;
    from.account
        .encrypt(guard, BOB, Some(body), &targets, &bundles)
        .await
}

/// [`seal_to`], committed; the devices that got a key, the skipped ones and the reports.
async fn send(
    from: &Party,
    to: &[&Party],
) -> (
    Vec<u32>,
    Vec<(DeviceAddress, SkipReason)>,
    Vec<IdentityChangeSeen>,
) {
    let sealed = seal_to(from, to, "hello").await.expect("encrypt");
    let rids = sealed.element.keys.iter().map(|k| k.rid).collect();
    sealed.state.commit().await.expect("commit");
    (rids, sealed.skipped, sealed.identity_changes)
}

fn trust_of(party: &Party, of: &Party) -> Option<Trust> {
    party
        .store
        .identity(&of.address())
        .expect("read")
        .map(|k| k.trust)
}

/// Alice (under `policy`) and two devices of bob's that she met at once, then a third one.
struct World {
    _backend: Backend,
    alice: Party,
    bob1: Party,
    bob2: Party,
    bob3: Party,
}

async fn first_contact_then_a_third_device(policy: TrustPolicy) -> World {
    let backend = Backend::default();
    let alice = Party::new(&backend, "alice@x.test", policy);
    let bob1 = device(&backend, "bob1", BOB);
    let bob2 = device(&backend, "bob2", BOB);
    let (rids, skipped, reports) = send(&alice, &[&bob1, &bob2]).await;
    assert_eq!(rids.len(), 2, "first contact: both devices get the message");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(reports.is_empty(), "first contact is silent: {reports:?}");
    assert_eq!(trust_of(&alice, &bob1), Some(Trust::Blind));
    assert_eq!(trust_of(&alice, &bob2), Some(Trust::Blind));
    let bob3 = device(&backend, "bob3", BOB);
    World {
        _backend: backend,
        alice,
        bob1,
        bob2,
        bob3,
    }
}

#[tokio::test]
async fn first_contact_with_two_devices_trusts_both_silently_under_either_policy() {
    for policy in [TrustPolicy::TrustOnFirstUseAndChange, TrustPolicy::Strict] {
        first_contact_then_a_third_device(policy).await;
    }
}

#[tokio::test]
async fn a_new_device_is_reported_once_and_trusted_by_default() {
    let w = first_contact_then_a_third_device(TrustPolicy::default()).await;
    let (rids, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob2, &w.bob3]).await;
    assert_eq!(rids.len(), 3, "the new device gets it too");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(
        reports,
        vec![IdentityChangeSeen {
            device: w.bob3.address(),
            old_key: None,
            new_key: w.bob3.account.identity_key(),
            trusted: true,
        }]
    );
    assert_eq!(trust_of(&w.alice, &w.bob3), Some(Trust::Blind));
    let (rids, _, reports) = send(&w.alice, &[&w.bob1, &w.bob2, &w.bob3]).await;
    assert_eq!(rids.len(), 3);
    assert!(reports.is_empty(), "reported once: {reports:?}");
}

#[tokio::test]
async fn strict_skips_a_new_device_reads_it_and_sends_to_it_once_verified() {
    let w = first_contact_then_a_third_device(TrustPolicy::Strict).await;
    let (rids, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob2, &w.bob3]).await;
    let bob3 = w.bob3.address();
    assert!(!rids.contains(&bob3.device.get()), "{rids:?}");
    assert_eq!(rids.len(), 2);
    assert_eq!(skipped, vec![(bob3.clone(), SkipReason::Untrusted)]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].old_key.as_ref(), reports[0].trusted),
        (None, false)
    );
    assert_eq!(trust_of(&w.alice, &w.bob3), Some(Trust::Untrusted));
    let (_, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob3]).await;
    assert_eq!(skipped, vec![(bob3.clone(), SkipReason::Untrusted)]);
    assert!(reports.is_empty(), "reported once: {reports:?}");

    // Its messages are read all the same (and it was reported already).
    let from_bob3 = w.bob3.seal(&w.alice, Some("from the new one")).await;
    let opened = w.alice.open_and_commit(&w.bob3, &from_bob3).await;
    assert_eq!(opened.body.as_deref(), Some("from the new one"));
    assert!(opened.identity_changes.is_empty());
    assert_eq!(trust_of(&w.alice, &w.bob3), Some(Trust::Untrusted));

    // Verified by its fingerprint: the next encryption includes it.
    let verified = w
        .alice
        .account
        .set_trust_by_fingerprint(BOB, &w.bob3.account.fingerprint(), Trust::Verified)
        .await
        .expect("set trust");
    assert_eq!(verified, bob3.device);
    assert_eq!(trust_of(&w.alice, &w.bob3), Some(Trust::Verified));
    let (rids, skipped, _) = send(&w.alice, &[&w.bob1, &w.bob2, &w.bob3]).await;
    assert_eq!(rids.len(), 3, "{skipped:?}");
    assert!(skipped.is_empty());
}

#[tokio::test]
async fn strict_verified_device_without_a_session_gets_one_from_its_bundle() {
    let w = first_contact_then_a_third_device(TrustPolicy::Strict).await;
    let (_, skipped, _) = send(&w.alice, &[&w.bob1, &w.bob3]).await;
    assert_eq!(skipped.len(), 1);
    assert!(
        w.alice
            .store
            .session(&w.bob3.address())
            .expect("read")
            .is_none()
    );
    let guard = w.alice.account.lock().await;
    (w.alice.account)
        .set_trust(guard, &w.bob3.address(), Trust::Verified)
        .expect("set trust")
        .commit()
        .await
        .expect("commit");
    let (rids, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob3]).await;
    assert_eq!(rids.len(), 2, "{skipped:?}");
    assert!(reports.is_empty());
    let sealed = seal_to(&w.alice, &[&w.bob3], "again")
        .await
        .expect("encrypt");
    let opened = w.bob3.open_and_commit(&w.alice, &sealed.element).await;
    assert_eq!(opened.body.as_deref(), Some("again"));
}

#[tokio::test]
async fn a_prekey_message_from_a_new_device_is_read_and_reported_under_both_policies() {
    for (policy, trust) in [
        (TrustPolicy::default(), Trust::Blind),
        (TrustPolicy::Strict, Trust::Untrusted),
    ] {
        let w = first_contact_then_a_third_device(policy).await;
        let message = w.bob3.seal(&w.alice, Some("hi, new phone")).await;
        assert!(message.keys[0].prekey);
        let opened = w.alice.open_and_commit(&w.bob3, &message).await;
        assert_eq!(opened.body.as_deref(), Some("hi, new phone"));
        assert_eq!(
            opened.identity_changes,
            vec![IdentityChangeSeen {
                device: w.bob3.address(),
                old_key: None,
                new_key: w.bob3.account.identity_key(),
                trusted: trust == Trust::Blind,
            }],
            "{policy:?}"
        );
        assert_eq!(trust_of(&w.alice, &w.bob3), Some(trust));
        let again = w.bob3.seal(&w.alice, Some("still prekey")).await;
        let opened = w.alice.open_and_commit(&w.bob3, &again).await;
        assert!(opened.identity_changes.is_empty(), "reported once");

        // Sending: it has a session now; strict still leaves it out.
        let (rids, skipped, _) = send(&w.alice, &[&w.bob1, &w.bob3]).await;
        if policy == TrustPolicy::Strict {
            assert_eq!(rids.len(), 1);
            assert_eq!(skipped, vec![(w.bob3.address(), SkipReason::Untrusted)]);
        } else {
            assert_eq!(rids.len(), 2, "{skipped:?}");
        }
    }
}

#[tokio::test]
async fn a_strict_send_to_new_devices_only_fails_but_keeps_and_reports_them() {
    let w = first_contact_then_a_third_device(TrustPolicy::Strict).await;
    let Err(EncryptError::NoDevice {
        skipped,
        identity_changes,
        ..
    }) = seal_to(&w.alice, &[&w.bob3], "x").await
    else {
        panic!("strict mode must not send to a new device")
    };
    assert_eq!(skipped, vec![(w.bob3.address(), SkipReason::Untrusted)]);
    assert_eq!(identity_changes.len(), 1);
    assert_eq!(
        trust_of(&w.alice, &w.bob3),
        None,
        "a failure stores nothing"
    );
    let kept = (w.alice.account)
        .keep_identities(identity_changes.clone())
        .await
        .expect("keep");
    assert_eq!(kept, identity_changes);
    assert_eq!(trust_of(&w.alice, &w.bob3), Some(Trust::Untrusted));
    assert!(
        (w.alice.account)
            .keep_identities(identity_changes)
            .await
            .expect("keep")
            .is_empty(),
        "kept once"
    );
    let device = (w.alice.account)
        .set_trust_by_fingerprint(BOB, &w.bob3.account.fingerprint(), Trust::Verified)
        .await
        .expect("now it can be trusted");
    assert_eq!(device, w.bob3.address().device);
}

#[tokio::test]
async fn a_device_the_user_refuses_is_skipped_under_the_default_policy() {
    let w = first_contact_then_a_third_device(TrustPolicy::default()).await;
    (w.alice.account)
        .set_trust_by_fingerprint(BOB, &w.bob1.account.fingerprint(), Trust::Untrusted)
        .await
        .expect("set trust");
    let (rids, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob2]).await;
    assert_eq!(rids, vec![w.bob2.address().device.get()]);
    assert_eq!(skipped, vec![(w.bob1.address(), SkipReason::Untrusted)]);
    assert!(reports.is_empty());
    // Without a session (it is built from the bundle): still skipped, and not reported again.
    w.alice
        .store
        .commit(&Changes {
            remove_sessions: vec![w.bob1.address()],
            ..Changes::default()
        })
        .expect("drop session");
    let (rids, skipped, reports) = send(&w.alice, &[&w.bob1, &w.bob2]).await;
    assert_eq!(rids.len(), 1);
    assert_eq!(skipped, vec![(w.bob1.address(), SkipReason::Untrusted)]);
    assert!(reports.is_empty(), "{reports:?}");
    // Its messages still decrypt.
    let message = w.bob1.seal(&w.alice, Some("still me")).await;
    let opened = w.alice.open_and_commit(&w.bob1, &message).await;
    assert_eq!(opened.body.as_deref(), Some("still me"));
}

#[tokio::test]
async fn fingerprints_are_read_tolerantly_and_must_match_a_device() {
    let w = first_contact_then_a_third_device(TrustPolicy::default()).await;
    let shown = w.bob2.account.fingerprint();
    let hex: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    let colons: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let spellings = [
        shown.clone(),
        hex.to_uppercase(),
        format!("05{hex}"),
        format!("05:{}", colons.join(":")),
        format!(" {}\n", shown.replace(' ', "-").to_uppercase()),
    ];
    for spelling in spellings {
        let device = (w.alice.account)
            .set_trust_by_fingerprint(BOB, &spelling, Trust::Verified)
            .await
            .unwrap_or_else(|e| panic!("{spelling:?}: {e}"));
        assert_eq!(device, w.bob2.address().device, "{spelling:?}");
    }
    assert_eq!(trust_of(&w.alice, &w.bob2), Some(Trust::Verified));
    assert_eq!(trust_of(&w.alice, &w.bob1), Some(Trust::Blind));

    let malformed = [
        String::new(),
        "xyz".to_owned(),
        hex[..62].to_owned(),
        format!("{hex}0"),
        format!("06{hex}"),
        format!("{}g", &hex[..63]),
    ];
    for malformed in malformed {
        let e = (w.alice.account)
            .set_trust_by_fingerprint(BOB, &malformed, Trust::Verified)
            .await;
        assert_eq!(e, Err(TrustError::Malformed), "{malformed:?}");
    }
    let nobody = w.bob3.account.fingerprint();
    let e = (w.alice.account)
        .set_trust_by_fingerprint(BOB, &nobody, Trust::Verified)
        .await
        .expect_err("bob3's key is not stored");
    assert_eq!(
        e,
        TrustError::NoMatch {
            jid: BOB.to_owned()
        }
    );
    assert_eq!(
        e.to_string(),
        "no device of bob@x.test has that fingerprint"
    );
    let e = (w.alice.account)
        .set_trust_by_fingerprint("carol@x.test", &shown, Trust::Verified)
        .await;
    assert!(
        matches!(e, Err(TrustError::NoMatch { .. })),
        "another JID's device"
    );

    let mut key = [0u8; 32];
    key[0] = 0xab;
    key[31] = 0x01;
    let mut text = String::from("AB");
    text.push_str(&"00".repeat(30));
    text.push_str("01");
    assert_eq!(parse_fingerprint(&text), Some(key));
    assert_eq!(
        parse_fingerprint(&keys::fingerprint(&w.bob1.account.identity_key())).map(|k| k.to_vec()),
        Some(w.bob1.account.identity_key()[1..].to_vec())
    );
}

#[tokio::test]
async fn devices_are_the_list_and_the_stored_keys() {
    let w = first_contact_then_a_third_device(TrustPolicy::Strict).await;
    let id = |p: &Party| p.address().device;
    let stray = DeviceId::new(7).expect("id");
    let mut listed = vec![id(&w.bob2), id(&w.bob3), stray];
    listed.sort();
    w.alice
        .store
        .commit(&Changes {
            put_device_lists: vec![(
                BOB.to_owned(),
                DeviceList {
                    devices: listed,
                    updated_ms: 1,
                },
            )],
            ..Changes::default()
        })
        .expect("commit");
    let devices = w.alice.account.devices_of(BOB).expect("devices");
    let mut expected = vec![
        (
            id(&w.bob1),
            Some(w.bob1.account.fingerprint()),
            Some(Trust::Blind),
            false,
        ),
        (
            id(&w.bob2),
            Some(w.bob2.account.fingerprint()),
            Some(Trust::Blind),
            true,
        ),
        (id(&w.bob3), None, None, true),
        (stray, None, None, true),
    ];
    expected.sort_by_key(|e| e.0);
    let got: Vec<_> = devices
        .into_iter()
        .map(|d| (d.device, d.fingerprint, d.trust, d.listed))
        .collect();
    assert_eq!(got, expected);
    assert!(
        w.alice
            .account
            .devices_of("carol@x.test")
            .expect("none")
            .is_empty()
    );
}
