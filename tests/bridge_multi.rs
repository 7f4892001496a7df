//! Two XMPP servers behind one bridge: real Synapse, two real Prosodys (`xmpp.test`, and
//! `xmpp2.test` in a world of its own, reached through `network.servers`), python-omemo peers.
//!
//! - `one_frozen_server_holds_up_only_its_own_logins`: while the first server is stopped
//!   (SIGSTOP), the second server's user and contact talk both ways, each message within 2 s (the
//!   acceptance bound); the first server's user is told the messages are waiting, and after
//!   SIGCONT they reach the contact in order, once.

mod common;

use std::time::{Duration, Instant};

use common::e2e::{ghost, link_jid};
use common::omemo_peer::OmemoPeer;
use common::{BridgeFiles, BridgeProcess, MatrixUser, World};

const WAIT: Duration = Duration::from_secs(60);
/// The acceptance bound for one message on the server that is not frozen.
const BOUND: Duration = Duration::from_secs(2);
const SECOND_DOMAIN: &str = "xmpp2.test";

/// Sends SIGCONT to a world's Prosody when dropped, so a failing test does not leave it frozen.
struct Thaw<'a>(&'a World);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.signal_prosody("CONT");
    }
}

/// Opens a DM with `contact`'s ghost and checks one message each way.
async fn chat(user: &MatrixUser, peer: &mut OmemoPeer, user_jid: &str) -> String {
    let contact_ghost = ghost(&peer.bare);
    let room = user.create_dm(&contact_ghost).await;
    user.wait_for_membership(&room, &contact_ghost, "join")
        .await;
    user.send_text(&room, "hello from matrix").await;
    assert_eq!(
        peer.wait_received(1, WAIT).await[0]["body"],
        "hello from matrix"
    );
    peer.send(user_jid, "hello from xmpp", None).await;
    user.wait_for_message(&room, &contact_ghost, "hello from xmpp")
        .await;
    room
}

#[tokio::test(flavor = "multi_thread")]
async fn one_frozen_server_holds_up_only_its_own_logins() {
    let mut files = None;
    let first = World::start("synapse prosody", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let registration = f.registration.clone();
        files = Some(f);
        vec![registration]
    });
    let files = files.expect("prepared");
    let second = World::start_with_env("prosody", &[("XMPP_DOMAIN", SECOND_DOMAIN)], |_, _| {
        Vec::new()
    });
    assert_eq!(second.var("XMPP_DOMAIN"), SECOND_DOMAIN);
    let domain1 = first.var("XMPP_DOMAIN").to_owned();

    // Each Prosody has its own test CA: one PEM file holds both.
    let bundle = files.dir.join("ca-bundle.pem");
    let cas: String = [&first, &second]
        .iter()
        .map(|w| std::fs::read_to_string(w.var("XMPP_CA_FILE")).expect("CA"))
        .collect();
    std::fs::write(&bundle, cas).expect("bundle");
    // The first server is `network.server`, the second only in `network.servers`: a login of
    // xmpp2.test that went to `server` would fail to link.
    let config = std::fs::read_to_string(&files.config).expect("config");
    let network = format!(
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\nsend_timeout_secs = 3\n",
        first.var("XMPP_SERVER"),
        bundle.display()
    );
    let config = format!(
        "{}\n[network.servers]\n\"{SECOND_DOMAIN}\" = \"{}\"\n",
        config
            .replace("[network]\n", &network)
            .replace("send_timeout_secs = 30\n", ""),
        second.var("XMPP_SERVER")
    );
    std::fs::write(&files.config, config).expect("write config");

    let _bridge = BridgeProcess::start(&files);
    let u1 = MatrixUser::register(&first, "u1").await;
    let u2 = MatrixUser::register(&first, "u2").await;
    link_jid(&files, &u1.user_id, "alice", &domain1);
    link_jid(&files, &u2.user_id, "alice", SECOND_DOMAIN);
    let alice1 = format!("alice@{domain1}");
    let alice2 = format!("alice@{SECOND_DOMAIN}");
    let mut bob1 = OmemoPeer::start(&first, "bob", &[]).await;
    let mut bob2 = OmemoPeer::start(&second, "bob", &[]).await;
    assert_eq!(bob2.bare, format!("bob@{SECOND_DOMAIN}"));
    let room1 = chat(&u1, &mut bob1, &alice1).await;
    let room2 = chat(&u2, &mut bob2, &alice2).await;
    let bob2_ghost = ghost(&bob2.bare);

    first.signal_prosody("STOP");
    let thaw = Thaw(&first);
    let held: Vec<String> = (1..=3).map(|i| format!("held {i}")).collect();
    for text in &held {
        u1.send_text(&room1, text).await;
    }

    // The second server's chat goes on, both ways, each message within the bound.
    let mut to_xmpp = Vec::new();
    let mut to_matrix = Vec::new();
    for i in 1..=5 {
        let text = format!("to bob2 {i}");
        let t = Instant::now();
        u2.send_text(&room2, &text).await;
        let got = bob2.wait_received(1, WAIT).await;
        to_xmpp.push(t.elapsed());
        assert_eq!(got[0]["body"], text.as_str());

        let text = format!("to u2 {i}");
        let t = Instant::now();
        bob2.send(&alice2, &text, None).await;
        u2.wait_for_message(&room2, &bob2_ghost, &text).await;
        to_matrix.push(t.elapsed());
    }
    eprintln!("[multi] matrix -> {SECOND_DOMAIN} while {domain1} is frozen: {to_xmpp:?}");
    eprintln!("[multi] {SECOND_DOMAIN} -> matrix while {domain1} is frozen: {to_matrix:?}");
    for (i, (a, b)) in to_xmpp.iter().zip(&to_matrix).enumerate() {
        assert!(*a < BOUND, "message {} to bob2 took {a:?}", i + 1);
        assert!(*b < BOUND, "message {} to u2 took {b:?}", i + 1);
    }

    // The frozen server's user is told the messages wait, and none is reported as failed.
    let bob1_ghost = ghost(&bob1.bare);
    let notice = u1.wait_for_message(&room1, &bob1_ghost, "is waiting").await;
    eprintln!(
        "[multi] notice: {}",
        notice["content"]["body"].as_str().unwrap_or_default()
    );
    assert_eq!(
        u1.count_messages(&room1, &bob1_ghost, "not delivered")
            .await,
        0
    );
    let frozen_for = Instant::now();
    drop(thaw);

    // After SIGCONT: the three, in order, once; nothing more.
    let got = bob1.wait_received(3, WAIT).await;
    eprintln!(
        "[multi] the held messages arrived {:?} after SIGCONT",
        frozen_for.elapsed()
    );
    let bodies: Vec<&str> = got.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, held.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(4)).await;
    while let Some(event) = bob1.next_event(Duration::from_millis(300)).await {
        assert_ne!(event["event"], "received", "more arrived: {event}");
    }
    assert_eq!(
        u1.count_messages(&room1, &bob1_ghost, "not delivered")
            .await,
        0,
        "a held message was reported as not delivered"
    );
}
