//! Catch-up after downtime (XEP-0313), end to end: real Synapse, real Prosody (mod_mam),
//! python-omemo as the contact (bob) and as a second client of the linked account (alice's
//! "phone", online while the bridge is stopped, so the server keeps no offline copy for it).
//!
//! - `messages_sent_while_the_bridge_was_stopped_arrive_once_in_order`: bob's 20 messages
//!   of the downtime reach the portal after the restart, in order, once, and nothing bridged
//!   before is posted again.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser};

/// Waits until `room` shows at least `count` messages of `sender`; gives them all.
async fn wait_bodies(alice: &MatrixUser, room: &str, sender: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let bodies = bodies_from(alice, room, sender).await;
        if bodies.len() >= count {
            return bodies;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} messages from {sender}: {bodies:?}",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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
    tokio::time::sleep(Duration::from_secs(3)).await;

    let bridge = BridgeProcess::start(&files);
    let expected: Vec<String> = std::iter::once("before the downtime".to_owned())
        .chain((0..20).map(|i| format!("while away {i:02}")))
        .collect();
    let deadline = Instant::now() + WAIT;
    let bodies = loop {
        let bodies: Vec<String> = wait_bodies(&alice, &room, &bob_ghost, 1)
            .await
            .into_iter()
            .filter(|b| b.starts_with("before") || b.starts_with("while away"))
            .collect();
        if bodies.len() >= expected.len() || Instant::now() > deadline {
            break bodies;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Whatever was still on its way has arrived: nothing more comes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<String> = bodies_from(&alice, &room, &bob_ghost)
        .await
        .into_iter()
        .filter(|b| b.starts_with("before") || b.starts_with("while away"))
        .collect();
    assert_eq!(bodies, expected, "in order, once");
    assert_eq!(after, expected, "nothing posted twice");
    // bob got the one message from Matrix once.
    assert_nothing_more(&mut bob, Duration::from_secs(2)).await;
    bridge.stop();
    drop(phone);
}
