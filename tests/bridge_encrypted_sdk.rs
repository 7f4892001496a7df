//! End-to-bridge encryption against a Matrix client on matrix-sdk-crypto 0.18 set up like
//! Element with "exclude insecure devices" on (MSC4153), `test_world::sdk_peer::SdkPeer`:
//! decrypting with `DecryptionSettings { sender_device_trust_requirement:
//! TrustRequirement::CrossSigned }` (room events and to-device messages) and sharing room keys
//! with `CollectStrategy::IdentityBasedStrategy`; its own device cross-signed at first login.
//!
//! `cross_signed_only_client_both_ways`, one world:
//! - the user creates an encrypted DM with a contact's ghost and sends 10 messages at once: the
//!   ghost's device got the room key (so it is cross-signed by its owner, as the client sees
//!   it) and the contact (python-omemo) receives all 10, in order. This also holds when the
//!   client re-shares its Megolm session (ratcheted) on the new Olm session the ghost's first
//!   encrypted event opens, and both copies come in one appservice transaction: the bridge
//!   feeds to-device events one per `receive_sync_changes` call, so the later copy is merged
//!   against the first and discarded (fed together, it replaced the first and messages 1–3
//!   could not be decrypted, 2 runs of 2);
//! - the contact sends 10: all decrypt under `CrossSigned`, and the `EncryptionInfo` of each
//!   shows the ghost's `IB…` device as cross-signed by its owner (`Verified`, or
//!   `Unverified(UnverifiedIdentity)` since the user never verified the ghost), never
//!   `UnsignedDevice`, `None(..)`, `VerificationViolation` or `MismatchedSender`;
//! - a portal the contact opens is encrypted, and its messages decrypt the same way.

mod common;

use std::time::Duration;

use common::BridgeProcess;
use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use test_world::sdk_peer::{Received, SdkPeer, VerificationLevel, VerificationState};

const N: usize = 10;

fn bodies(messages: &[Received]) -> Vec<String> {
    messages.iter().map(|m| m.body.clone()).collect()
}

/// Every message came encrypted from `ghost`'s bridge device (`IB…`), and that device is
/// cross-signed by its owner as the client judged it when decrypting.
fn assert_from_cross_signed_ghost(messages: &[Received], ghost: &str, device: &str) {
    for m in messages {
        let info = m
            .encryption_info
            .as_ref()
            .unwrap_or_else(|| panic!("arrived unencrypted: {m:?}"));
        assert_eq!(info.sender.as_str(), ghost, "{m:?}");
        let sender_device = info.sender_device.as_ref().map(|d| d.as_str());
        assert_eq!(sender_device, Some(device), "{m:?}");
        assert!(device.starts_with("IB"), "not a bridge device: {m:?}");
        match &info.verification_state {
            // Cross-signed by its owner: verified through the owner, or the owner's identity
            // is not verified by the user (which exclude-insecure-devices accepts).
            VerificationState::Verified
            | VerificationState::Unverified(VerificationLevel::UnverifiedIdentity) => {}
            VerificationState::Unverified(
                level @ (VerificationLevel::UnsignedDevice
                | VerificationLevel::None(_)
                | VerificationLevel::VerificationViolation
                | VerificationLevel::MismatchedSender),
            ) => panic!("{:?} from an insecure device ({level:?}): {m:?}", m.body),
        }
    }
}

/// Takes `ghost`'s messages in `room` until every one of `want` was seen (in that order);
/// returns all of them (notices of the bridge's included).
async fn messages_until(
    sue: &mut SdkPeer,
    room: &str,
    ghost: &str,
    want: &[String],
) -> Vec<Received> {
    let mut all = Vec::new();
    loop {
        let seen: Vec<String> = bodies(&all)
            .into_iter()
            .filter(|b| want.contains(b))
            .collect();
        if seen.len() == want.len() {
            assert_eq!(seen, want, "out of order");
            return all;
        }
        all.extend(sue.wait_messages(room, ghost, 1, WAIT).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_signed_only_client_both_ways() {
    let (world, files) = start_encrypted();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let _bridge = BridgeProcess::start(&files);
    world.add_xmpp_user("sue");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&jid("bob"));
    // sue's roster holds bob before she links, as it would from her phone: the bridge gives
    // roster contacts' ghosts their device when the login starts.
    add_to_roster_from_phone(&world, "sue", &mut bob).await;
    let mut sue = SdkPeer::start(&world, "sue").await;
    link_jid(&files, &sue.user_id, "sue", &domain);
    let bob_device = sue.wait_cross_signed_device(&bob_ghost, WAIT).await;

    // sue → bob: the room key goes only to devices cross-signed by their owner.
    // Element's way: encrypted from the start, the ghost invited, the first message at once,
    // and the rest right behind it (see the module docs for the re-shared key this catches).
    let room = sue.create_dm(&bob_ghost, true).await;
    for n in 1..=N {
        sue.send_text(&room, &format!("sue to bob {n}")).await;
    }
    let to_bob = bob.wait_received(N, WAIT).await;
    let got: Vec<&str> = to_bob
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default())
        .collect();
    let want: Vec<String> = (1..=N).map(|n| format!("sue to bob {n}")).collect();
    assert_eq!(got, want);

    // bob → sue: decrypted only if the ghost's device is cross-signed by its owner.
    for n in 1..=N {
        bob.send(&jid("sue"), &format!("bob to sue {n}"), None)
            .await;
    }
    let want: Vec<String> = (1..=N).map(|n| format!("bob to sue {n}")).collect();
    let to_sue = messages_until(&mut sue, &room, &bob_ghost, &want).await;
    assert_from_cross_signed_ghost(&to_sue, &bob_ghost, &bob_device);
    eprintln!(
        "ghost messages' verification state: {:?}",
        to_sue
            .iter()
            .filter_map(|m| m.encryption_info.as_ref())
            .map(|i| format!("{:?}", i.verification_state))
            .collect::<std::collections::BTreeSet<_>>()
    );
    let device = sue
        .device(&bob_ghost, &bob_device)
        .await
        .expect("the ghost's device is known");
    assert!(device.is_cross_signed_by_owner(), "{device:?}");
    assert!(
        sue.undecryptable(&room).is_empty(),
        "{:?}",
        sue.undecryptable(&room)
    );

    // A portal the contact opens: encrypted, and readable under the same settings.
    world.add_xmpp_user("carol");
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;
    let carol_ghost = ghost(&jid("carol"));
    carol.send(&jid("sue"), "hello from carol", None).await;
    let carol_room = sue.wait_invite(&carol_ghost, WAIT).await;
    sue.join(&carol_room).await;
    let from_carol = messages_until(
        &mut sue,
        &carol_room,
        &carol_ghost,
        &["hello from carol".to_owned()],
    )
    .await;
    let carol_device = from_carol[0]
        .encryption_info
        .as_ref()
        .and_then(|i| i.sender_device.as_ref())
        .map(|d| d.to_string())
        .unwrap_or_else(|| panic!("no sender device: {from_carol:?}"));
    assert_from_cross_signed_ghost(&from_carol, &carol_ghost, &carol_device);
    let device = sue
        .device(&carol_ghost, &carol_device)
        .await
        .expect("carol's ghost's device is known");
    assert!(device.is_cross_signed_by_owner(), "{device:?}");
    sue.send_text(&carol_room, "hello carol").await;
    assert_eq!(carol.wait_received(1, WAIT).await[0]["body"], "hello carol");
    assert_nothing_more(&mut bob, Duration::from_secs(1)).await;
}
