//! Catch-up after downtime (XEP-0313), end to end: real Synapse, real Prosody (mod_mam),
//! python-omemo as the contact (bob) and as a second client of the linked account (alice's
//! "phone", online while the bridge is stopped, so the server keeps no offline copy for it).
//!
//! - `messages_sent_while_the_bridge_was_stopped_arrive_once_in_order`: bob's 20 messages
//!   of the downtime reach the portal after the restart, in order, once, and nothing bridged
//!   before is posted again; what alice wrote from her phone meanwhile (her own archive's
//!   sent messages) appears as the ghost's "you wrote from another device" notice.
//! - `a_new_link_and_a_killed_bridge_lose_nothing`: no phone, so the server would keep
//!   offline copies (which the bridge asks it not to deliver, reading the archive instead).
//!   Stopped right after the link, before any message: what bob sends meanwhile arrives
//!   (the archive is read from the link's time). Then SIGKILLed: what bob sends while it is
//!   down, and while it starts and catches up, arrives in order, once.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser};

/// Waits until `room` shows `expected.len()` messages of `sender` starting with `prefix`,
/// then a few seconds more; asserts they are `expected`, in order, once.
async fn assert_arrive_once(
    alice: &MatrixUser,
    room: &str,
    sender: &str,
    prefix: &str,
    expected: &[String],
) {
    wait_bodies_starting(alice, room, sender, prefix, expected.len()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bodies = bodies_starting(alice, room, sender, prefix).await;
    assert_eq!(bodies, expected, "in order, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_bridge_was_stopped_arrive_once_in_order() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice
        .wait_for_message(&room, &bob_ghost, "re-encrypts")
        .await;
    alice.send_text(&room, "hello bob, from Matrix").await;
    assert_eq!(
        bob.wait_received(1, WAIT).await[0]["body"],
        "hello bob, from Matrix"
    );
    bob.send(&alice_jid, "before the downtime", Some("bob-before"))
        .await;
    alice
        .wait_for_message(&room, &bob_ghost, "before the downtime")
        .await;
    let phone = OmemoPeer::start(
        &world,
        "alice",
        &["--store-name", "alice-phone", "--resource", "phone"],
    )
    .await;
    // Let the bridge finish (map, flush, acknowledge) before it stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    bridge.stop();

    for i in 0..20 {
        bob.send(
            &alice_jid,
            &format!("while away {i:02}"),
            Some(&format!("bob-away-{i}")),
        )
        .await;
    }
    // The phone is online: the server delivers them to it and keeps none offline. (bob has
    // not seen the phone's device, so the phone cannot read them; it only has to be there.)
    // alice also writes from the phone: only the archive has those for the bridge.
    let mut phone = phone;
    let bob_jid = bob.bare.clone();
    for i in 0..3 {
        phone
            .send(
                &bob_jid,
                &format!("phone while away {i}"),
                Some(&format!("phone-away-{i}")),
            )
            .await;
    }
    assert_eq!(
        bob.wait_received(3, WAIT).await[2]["body"],
        "phone while away 2"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let bridge = BridgeProcess::start(&files);
    let expected: Vec<String> = (0..20).map(|i| format!("while away {i:02}")).collect();
    assert_arrive_once(&alice, &room, &bob_ghost, "while away", &expected).await;
    assert_eq!(
        bodies_starting(&alice, &room, &bob_ghost, "before").await,
        ["before the downtime"],
        "nothing bridged before is posted again"
    );
    let from_phone: Vec<String> = (0..3)
        .map(|i| format!("↗ You wrote from another device: phone while away {i}"))
        .collect();
    assert_arrive_once(&alice, &room, &bob_ghost, "↗", &from_phone).await;
    // bob got the one message from Matrix once.
    assert_nothing_more(&mut bob, Duration::from_secs(2)).await;
    bridge.stop();
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_and_a_killed_bridge_lose_nothing() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    // bob learns alice's device. No message of bob's crossed yet: the login's archive
    // position is still the time of its link.
    alice.send_text(&room, "hello bob, from Matrix").await;
    assert_eq!(
        bob.wait_received(1, WAIT).await[0]["body"],
        "hello bob, from Matrix"
    );
    bridge.stop();
    let first: Vec<String> = (0..5).map(|i| format!("after the link {i:02}")).collect();
    for (i, body) in first.iter().enumerate() {
        bob.send(&alice_jid, body, Some(&format!("bob-link-{i}")))
            .await;
    }
    let bridge = BridgeProcess::start(&files);
    assert_arrive_once(&alice, &room, &bob_ghost, "after the link", &first).await;

    bridge.kill();
    let expected: Vec<String> = (0..20).map(|i| format!("around the kill {i:02}")).collect();
    for (i, body) in expected[..10].iter().enumerate() {
        bob.send(&alice_jid, body, Some(&format!("bob-kill-{i}")))
            .await;
    }
    // The rest races the start: live messages while the catch-up reads the archive.
    let bridge = BridgeProcess::start(&files);
    for (i, body) in expected[10..].iter().enumerate() {
        bob.send(&alice_jid, body, Some(&format!("bob-kill-{}", i + 10)))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_arrive_once(&alice, &room, &bob_ghost, "around the kill", &expected).await;
    assert_eq!(
        bodies_starting(&alice, &room, &bob_ghost, "after the link").await,
        first,
        "nothing of the first catch-up posted again"
    );
    bridge.stop();
}
