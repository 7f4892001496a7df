//! OMEMO 2 (`urn:xmpp:omemo:2`) over a real Prosody against python-omemo's twomemo, driven by
//! slixmpp-omemo (`omemo_peer.py serve --backends twomemo --ns twomemo`, the SCE envelope built
//! and read in python), beside legacy OMEMO peers in the same run: our client speaking both
//! picks the version per contact, never sends both, and a client speaking legacy only falls
//! back to legacy with a peer that speaks both.

mod common;

use std::time::Duration;

use common::World;
use common::omemo_peer::OmemoPeer;
use common::ours::{Got, Ours, WAIT};
use serde_json::Value;
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::{Namespace, OmemoError, Protocols, TrustPolicy};
use xmpp_omemo::stanza::carbons::Direction;

const TWO: &str = "urn:xmpp:omemo:2";
const LEGACY: &str = "eu.siacs.conversations.axolotl";
/// A peer that speaks OMEMO 2 only.
const TWOMEMO_ONLY: &[&str] = &["--backends", "twomemo", "--ns", "twomemo"];

fn prosody_world() -> World {
    World::start_with_env(
        "prosody",
        &[("WORLD_XMPP_USERS", "alice bob carol dave erin frank grace")],
        |_, _| Vec::new(),
    )
}

/// `n` messages each way, interleaved; both sides get all, in order, in namespace `ns` (the
/// peer's event) and `namespace` (ours).
async fn exchange(
    ours: &mut Ours,
    peer: &mut OmemoPeer,
    tag: &str,
    n: usize,
    ns: &str,
    namespace: Namespace,
) {
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let text = format!("{tag} ours #{i} <&> ünïcödé 👋");
        let report = ours.send(&peer.bare, &text, &format!("{tag}-o{i}")).await;
        assert_eq!(report.namespace, namespace, "{report:?}");
        mine.push(text);
        let text = format!("{tag} peer #{i} \"quoted\"");
        peer.send(&ours.bare, &text, Some(&format!("{tag}-p{i}")))
            .await;
        theirs.push(text);
    }
    let got = ours.recv(n).await;
    let bodies: Vec<&str> = got.iter().map(|g| g.body.as_str()).collect();
    assert_eq!(bodies, theirs, "we got the peer's messages in order");
    assert!(
        got.iter()
            .all(|g| g.namespace == namespace && g.device == peer.device_id && g.carbon.is_none()),
        "{got:?}"
    );
    let peer_got = peer.wait_received(n, WAIT).await;
    let peer_bodies: Vec<&str> = peer_got
        .iter()
        .map(|e| e["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(peer_bodies, mine, "the peer got ours in order");
    assert!(
        peer_got
            .iter()
            .all(|e| e["ns"] == ns && e["device_id"] == ours.device()),
        "{peer_got:?}"
    );
    ours.settle(Duration::from_millis(300)).await;
    assert!(
        ours.undecryptable().is_empty(),
        "{:?}",
        ours.undecryptable()
    );
}

fn first_is(got: &[Got], body: &str, namespace: Namespace, prekey: bool) {
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].namespace, namespace);
    assert_eq!(got[0].prekey, prekey, "{:?}", got[0]);
}

fn peer_first_is(event: &Value, body: &str, ns: &str, prekey: bool) {
    assert_eq!(event["body"], body, "{event}");
    assert_eq!(event["ns"], ns, "{event}");
    assert_eq!(event["prekey"], prekey, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_omemo2_peers_and_a_legacy_peer_chat_with_one_client_speaking_both() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", TWOMEMO_ONLY).await;
    let mut dave = OmemoPeer::start(&world, "dave", TWOMEMO_ONLY).await;
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;
    assert_eq!(bob.ready["namespaces"], serde_json::json!([TWO]));
    assert_eq!(carol.ready["namespaces"], serde_json::json!([LEGACY]));

    // We start with bob (twomemo only): a key exchange, then his answer in that session.
    let report = ours
        .send(&bob.bare, "hello bob, in OMEMO 2", "b-first")
        .await;
    assert_eq!(report.namespace, Namespace::Omemo2);
    assert_eq!(report.new_sessions.len(), 1, "{report:?}");
    let first = bob.wait_received(1, WAIT).await;
    peer_first_is(&first[0], "hello bob, in OMEMO 2", TWO, true);
    bob.send(&ours.bare, "hello alice", Some("b-answer")).await;
    first_is(&ours.recv(1).await, "hello alice", Namespace::Omemo2, false);

    // Dave (twomemo only) starts: we accept his key exchange and answer in his session.
    let sent = dave
        .send(&ours.bare, "hi alice, dave here", Some("d-first"))
        .await;
    assert_eq!(sent["prekey"], true, "{sent}");
    first_is(
        &ours.recv(1).await,
        "hi alice, dave here",
        Namespace::Omemo2,
        true,
    );
    ours.send(&dave.bare, "hi dave", "d-answer").await;
    let first = dave.wait_received(1, WAIT).await;
    peer_first_is(&first[0], "hi dave", TWO, false);

    // Carol speaks legacy OMEMO only: the same client writes to her in legacy OMEMO.
    let report = ours.send(&carol.bare, "hello carol", "c-first").await;
    assert_eq!(report.namespace, Namespace::Legacy);
    let first = carol.wait_received(1, WAIT).await;
    peer_first_is(&first[0], "hello carol", LEGACY, true);

    // Several messages each way with each, interleaved between the versions.
    exchange(&mut ours, &mut bob, "bob", 8, TWO, Namespace::Omemo2).await;
    exchange(&mut ours, &mut carol, "carol", 8, LEGACY, Namespace::Legacy).await;
    exchange(&mut ours, &mut dave, "dave", 8, TWO, Namespace::Omemo2).await;

    // A second device of ours, speaking both: it is told about in our OMEMO 2 device list and
    // gets what we send bob (keys for our own devices) as a sent carbon, and bob's messages.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut second = Ours::start(
        &world,
        "alice",
        "second",
        dir2.path(),
        TrustPolicy::default(),
    )
    .await;
    let own = Jid::parse(&ours.bare).expect("jid");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ours
        .client
        .devices_of(&own)
        .expect("devices")
        .iter()
        .any(|d| d.device.get() == second.device() && d.listed)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "our second device is never listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = ours
        .send(&bob.bare, "to bob, seen by my second device", "carbon-1")
        .await;
    assert_eq!(report.namespace, Namespace::Omemo2);
    assert_eq!(
        report.devices, 2,
        "bob's device and our second one: {report:?}"
    );
    let carbon = second.recv(1).await;
    assert_eq!(carbon[0].body, "to bob, seen by my second device");
    assert_eq!(carbon[0].carbon, Some(Direction::Sent));
    assert_eq!(carbon[0].namespace, Namespace::Omemo2);
    assert_eq!(carbon[0].peer, bob.bare);
    let got = bob.wait_received(1, WAIT).await;
    peer_first_is(&got[0], "to bob, seen by my second device", TWO, false);
    // Not checked here: bob writing to both of alice's devices at once. In one CI run under
    // load that message reached this device with a key exchange naming a prekey it had already
    // used, and did not decrypt; not understood yet (see ARCHITECTURE.md's known gaps).

    // A client of ours that speaks legacy only cannot write to bob at all: bob really has no
    // legacy OMEMO, so everything above went in OMEMO 2.
    let dir3 = tempfile::tempdir().expect("tempdir");
    let legacy_only = Ours::start_with(
        &world,
        "erin",
        "legacy",
        dir3.path(),
        TrustPolicy::default(),
        Protocols::Legacy,
    )
    .await;
    let bob_jid = Jid::parse(&bob.bare).expect("jid");
    match legacy_only
        .client
        .send_text(&bob_jid, "legacy to bob?", "never")
        .await
    {
        Err(OmemoError::NoDevices { jid }) => assert_eq!(jid, bob.bare),
        other => panic!("a legacy send to a twomemo-only peer must fail: {other:?}"),
    }
    // Only empty messages between our own devices and bob may not decrypt here: one of our
    // second device to bob comes as a carbon without a key for this device, and one to this
    // device comes twice (to our bare JID and as a carbon of our second device), the second
    // time a duplicate. Neither has a body.
    let texts: Vec<_> = ours
        .undecryptable()
        .into_iter()
        .filter(|(id, _)| !id.as_deref().is_some_and(|id| id.starts_with("kt-")))
        .collect();
    assert!(texts.is_empty(), "{texts:?}");
    bob.quit().await;
    dave.quit().await;
    carol.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_only_client_falls_back_to_legacy_with_a_peer_of_both() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut legacy = Ours::start_with(
        &world,
        "alice",
        "legacy",
        dir.path(),
        TrustPolicy::default(),
        Protocols::Legacy,
    )
    .await;
    let mut frank = OmemoPeer::start(&world, "frank", &["--backends", "both"]).await;
    assert_eq!(frank.ready["namespaces"], serde_json::json!([LEGACY, TWO]));
    exchange(
        &mut legacy,
        &mut frank,
        "legacy",
        5,
        LEGACY,
        Namespace::Legacy,
    )
    .await;

    // The same peer with a client speaking both: OMEMO 2.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut both = Ours::start(&world, "grace", "both", dir2.path(), TrustPolicy::default()).await;
    let report = both.send(&frank.bare, "grace in OMEMO 2", "g-1").await;
    assert_eq!(report.namespace, Namespace::Omemo2);
    let got = frank.wait_received(1, WAIT).await;
    peer_first_is(&got[0], "grace in OMEMO 2", TWO, true);
    frank.send(&both.bare, "frank answers", Some("f-1")).await;
    // python-omemo sends in the version it was told to (--ns oldmemo by default): we read it.
    first_is(
        &both.recv(1).await,
        "frank answers",
        Namespace::Legacy,
        true,
    );
    frank.quit().await;
}
