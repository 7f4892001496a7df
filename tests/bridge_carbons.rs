//! The user's other XMPP clients, end to end: real Synapse, real Prosody, python-omemo as
//! the contact (bob) and as a second client of the linked account (alice's "phone").
//!
//! - `messages_from_another_client_appear_in_the_portal_once_in_order`: five messages the
//!   phone sends to bob (sent carbons) appear in the portal as the ghost's notice
//!   ("↗ You wrote from another device: …"), in order, once, between bob's messages; the
//!   user's own Matrix messages are not echoed back as notices, and bob gets nothing twice.
//! - `with_double_puppeting_they_are_sent_by_the_users_own_account`: with
//!   `appservice.double_puppet` and Synapse loading the second registration, they are events
//!   of `@alice` herself, and none of them goes back to bob.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeFiles, BridgeProcess, MatrixUser, World};

const NOTICE: &str = "↗ You wrote from another device: ";

/// Like `start()`, with `appservice.double_puppet` on and Synapse loading both registrations.
fn start_double_puppet() -> (World, BridgeFiles) {
    let mut files = None;
    let world = World::start("synapse prosody", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let config = std::fs::read_to_string(&f.config).expect("config");
        let config = config
            .replace("double_puppet = false\n", "double_puppet = true\n")
            .replace("\ndefault = true\n", "\ndefault = false\n");
        assert!(config.contains("double_puppet = true\n"), "{config}");
        std::fs::write(&f.config, config).expect("write config");
        let (ok, _, err) = common::cli(&[
            "generate-registration",
            "-c",
            f.config.to_str().expect("utf-8"),
        ]);
        assert!(ok, "generate-registration: {err}");
        let puppet = f.dir.join("registration-doublepuppet.yaml");
        assert!(puppet.exists(), "the second registration is written");
        let regs = vec![f.registration.clone(), puppet];
        files = Some(f);
        regs
    });
    let files = files.expect("prepared");
    let config = std::fs::read_to_string(&files.config).expect("config");
    let network = format!(
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\nsend_timeout_secs = 20\n",
        world.var("XMPP_SERVER"),
        world.var("XMPP_CA_FILE")
    );
    let config = config
        .replace("[network]\n", &network)
        .replace("send_timeout_secs = 30\n", "");
    std::fs::write(&files.config, config).expect("write config");
    (world, files)
}

/// A portal between alice and bob with one message each way; alice's phone started.
async fn portal_with_phone(
    world: &World,
    files: &BridgeFiles,
) -> (MatrixUser, OmemoPeer, OmemoPeer, String) {
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let alice = MatrixUser::register(world, "alice").await;
    cli_link(world, files, &alice, "alice");
    let mut bob = OmemoPeer::start(world, "bob", &[]).await;
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
    bob.send(&alice_jid, "hi alice", Some("bob-0")).await;
    alice.wait_for_message(&room, &bob_ghost, "hi alice").await;
    let phone = OmemoPeer::start(
        world,
        "alice",
        &["--store-name", "alice-phone", "--resource", "phone"],
    )
    .await;
    (alice, bob, phone, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_another_client_appear_in_the_portal_once_in_order() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let (alice, mut bob, mut phone, room) = portal_with_phone(&world, &files).await;
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let bob_ghost = ghost(&bob.bare);
    let bob_jid = bob.bare.clone();
    for i in 0..5 {
        phone
            .send(&bob_jid, &format!("phone {i}"), Some(&format!("phone-{i}")))
            .await;
    }
    let got = bob.wait_received(5, WAIT).await;
    assert_eq!(got[4]["body"], "phone 4");
    // bob answers after he got them: the carbons came to the bridge before his answer.
    bob.send(&alice_jid, "bob answers the phone", Some("bob-1"))
        .await;
    alice
        .wait_for_message(&room, &bob_ghost, "bob answers the phone")
        .await;
    wait_bodies_starting(&alice, &room, &bob_ghost, NOTICE, 5).await;
    // Whatever was still on its way has arrived: nothing more comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = alice.messages(&room).await;
    let from_ghost: Vec<(String, String)> = messages
        .iter()
        .filter(|e| e["sender"] == bob_ghost.as_str())
        .map(|e| {
            (
                e["content"]["msgtype"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["content"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(_, body)| !body.contains("re-encrypts"))
        .collect();
    let mut expected = vec![("m.text".to_owned(), "hi alice".to_owned())];
    expected.extend((0..5).map(|i| ("m.notice".to_owned(), format!("{NOTICE}phone {i}"))));
    expected.push(("m.text".to_owned(), "bob answers the phone".to_owned()));
    assert_eq!(from_ghost, expected, "the portal, as the ghost posted it");
    // The user's own Matrix message is not echoed back as "another device".
    assert_eq!(
        alice
            .count_messages(&room, &bob_ghost, "hello bob, from Matrix")
            .await,
        0
    );
    // bob got each message once, and the bridge sent him nothing of its own.
    assert_nothing_more(&mut bob, Duration::from_secs(2)).await;
    phone.quit().await;
    bridge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_double_puppeting_they_are_sent_by_the_users_own_account() {
    let (world, files) = start_double_puppet();
    let mut bridge = BridgeProcess::start(&files);
    bridge.wait_for_log("double puppeting on", WAIT);
    let (alice, mut bob, mut phone, room) = portal_with_phone(&world, &files).await;
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let bob_ghost = ghost(&bob.bare);
    let bob_jid = bob.bare.clone();
    for i in 0..5 {
        phone
            .send(
                &bob_jid,
                &format!("puppet {i}"),
                Some(&format!("puppet-{i}")),
            )
            .await;
    }
    assert_eq!(bob.wait_received(5, WAIT).await[4]["body"], "puppet 4");
    bob.send(&alice_jid, "bob answers again", Some("bob-2"))
        .await;
    alice
        .wait_for_message(&room, &bob_ghost, "bob answers again")
        .await;
    wait_bodies_starting(&alice, &room, &alice.user_id, "puppet ", 5).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mine = bodies_from(&alice, &room, &alice.user_id).await;
    let expected: Vec<String> = std::iter::once("hello bob, from Matrix".to_owned())
        .chain((0..5).map(|i| format!("puppet {i}")))
        .collect();
    assert_eq!(mine, expected, "alice's own events in the portal");
    let notices = bodies_from(&alice, &room, &bob_ghost)
        .await
        .into_iter()
        .filter(|b| b.starts_with(NOTICE))
        .count();
    assert_eq!(notices, 0, "no fallback when posting as the user works");
    // Posted as alice, they come back to the bridge in transactions: none goes to bob.
    assert_nothing_more(&mut bob, Duration::from_secs(3)).await;
    phone.quit().await;
    bridge.stop();
}
