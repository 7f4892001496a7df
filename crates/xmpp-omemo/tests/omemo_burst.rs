//! A burst of inbound OMEMO messages against a real Prosody: the python-omemo peer sends 1,000
//! messages as fast as it can while we send to it. The login's tasks (connection, OMEMO,
//! the owner committing each delivery) once formed a cycle of bounded channels that stalled
//! here (issue 12, 4b): the test fails when progress stops for [`STALL`], not on a time limit.

mod common;

use std::time::{Duration, Instant};

use common::World;
use common::omemo_peer::OmemoPeer;
use common::ours::{Ours, WAIT};
use serde_json::json;
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::TrustPolicy;

/// No new message (or a send that does not complete) for this long is a stall.
const STALL: Duration = Duration::from_secs(30);
/// How many messages the peer sends in one burst.
const BURST: usize = 1000;
/// How many we send the other way meanwhile.
const OURS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_inbound_messages_while_we_send_never_stalls() {
    let world = World::start("prosody", |_, _| Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;

    // Sessions both ways first, so the burst is plain SignalMessages.
    bob.send(&ours.bare, "hello", Some("hello")).await;
    assert_eq!(ours.recv(1).await[0].body, "hello");
    ours.send(&bob.bare, "hello bob", "answer").await;
    bob.wait_received(1, WAIT).await;

    let started = Instant::now();
    bob.command(json!({"cmd": "burst", "to": ours.bare, "count": BURST, "prefix": "burst"}))
        .await;
    // Our sends meanwhile, each one allowed `STALL`.
    let client = ours.client.clone();
    let to = Jid::parse(&bob.bare).expect("jid");
    let sender = tokio::spawn(async move {
        let mut took = Vec::new();
        for i in 0..OURS {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = Instant::now();
            let id = format!("ours-{i}");
            match tokio::time::timeout(STALL, client.send_text(&to, &format!("ours {i}"), &id))
                .await
            {
                Ok(Ok(_)) => took.push(t.elapsed()),
                Ok(Err(e)) => panic!("sending {id} during the burst failed: {e}"),
                Err(_) => panic!("sending {id} during the burst stalled for {STALL:?}"),
            }
        }
        took
    });

    let got = ours.recv_progress(BURST, STALL).await;
    let received_in = started.elapsed();
    let bodies: Vec<&str> = got.iter().map(|g| g.body.as_str()).collect();
    let expected: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
    assert_eq!(bodies, expected, "all of the burst, in order, once");
    let ids: Vec<Option<String>> = got.iter().map(|g| g.id.clone()).collect();
    let expected_ids: Vec<Option<String>> =
        (0..BURST).map(|i| Some(format!("burst-{i}"))).collect();
    assert_eq!(ids, expected_ids);

    let took = sender.await.expect("the sending task");
    let peer_got = bob.wait_received(OURS, WAIT).await;
    let peer_bodies: Vec<&str> = peer_got
        .iter()
        .map(|e| e["body"].as_str().expect("body"))
        .collect();
    let ours_expected: Vec<String> = (0..OURS).map(|i| format!("ours {i}")).collect();
    assert_eq!(peer_bodies, ours_expected, "the peer got ours in order");
    let sent = bob
        .wait_event("burst_sent", WAIT, |e| e["event"] == "burst_sent")
        .await;

    // Nothing comes twice.
    ours.settle(Duration::from_secs(1)).await;
    assert!(
        ours.undecryptable().is_empty(),
        "undecryptable: {:?}",
        ours.undecryptable()
    );
    // A close ends the event stream even while handles are kept (the bridge keeps its login's).
    let closed_in = ours.close_until_events_end().await;
    eprintln!(
        "burst of {BURST}: the peer wrote it in {} s, we had all of it after {:.1} s; \
         our {OURS} sends took at most {:?}; close until the events ended: {closed_in:?}",
        sent["seconds"],
        received_in.as_secs_f64(),
        took.iter().max()
    );
    bob.quit().await;
}
