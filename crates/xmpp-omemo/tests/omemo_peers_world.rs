//! The test world's OMEMO peers themselves, against a real Prosody: two python-omemo peers
//! (`omemo_peer.py serve`) with a SIGKILL and restart in between, an identity reset on a known
//! device, and profanity (libsignal-protocol-c) both ways. Acceptance tests of our own OMEMO layer
//! build on these peers, so they have to be right first.

mod common;

use std::time::Duration;

use common::World;
use common::omemo_peer::OmemoPeer;
use common::profanity::Profanity;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn prosody_world() -> World {
    World::start("prosody", |_, _| Vec::new())
}

fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["body"].as_str().expect("body"))
        .collect()
}

/// `n` messages each way at the same time; each side receives the other's in order.
async fn exchange(a: &mut OmemoPeer, b: &mut OmemoPeer, tag: &str, n: usize) {
    let (a_bare, b_bare) = (a.bare.clone(), b.bare.clone());
    let a_texts: Vec<String> = (1..=n).map(|i| format!("{tag} a->b {i}")).collect();
    let b_texts: Vec<String> = (1..=n).map(|i| format!("{tag} b->a {i}")).collect();
    let send_a = async {
        for (i, t) in a_texts.iter().enumerate() {
            a.send(&b_bare, t, Some(&format!("{tag}-a-{i}"))).await;
        }
        a.wait_received(n, WAIT).await
    };
    let send_b = async {
        for (i, t) in b_texts.iter().enumerate() {
            b.send(&a_bare, t, Some(&format!("{tag}-b-{i}"))).await;
        }
        b.wait_received(n, WAIT).await
    };
    let (got_a, got_b) = tokio::join!(send_a, send_b);
    assert_eq!(bodies(&got_a), b_texts, "{a_bare} received, in order");
    assert_eq!(bodies(&got_b), a_texts, "{b_bare} received, in order");
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-b-{i}")).collect();
    let got_ids: Vec<&str> = got_a
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got_ids, ids, "stanza ids kept");
    assert!(
        got_a
            .iter()
            .all(|e| e["from"].as_str().expect("from").starts_with(&b_bare))
    );
    assert!(got_b.iter().all(|e| e["device_id"] == a.device_id));
}

#[tokio::test]
async fn python_peers_prekey_first_then_in_order_and_across_sigkill() {
    let world = prosody_world();
    let mut alice = OmemoPeer::start(&world, "alice", &[]).await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    assert_ne!(alice.device_id, bob.device_id);
    assert_eq!(bob.devices(&alice.bare).await, vec![alice.device_id]);

    let sent = bob.send(&alice.bare, "first", Some("first-1")).await;
    assert_eq!(
        sent["prekey"], true,
        "no session yet: a key exchange: {sent}"
    );
    let first = alice.wait_received(1, WAIT).await.remove(0);
    assert_eq!(first["body"], "first");
    assert_eq!(first["id"], "first-1");
    assert_eq!(first["device_id"], bob.device_id);
    assert_eq!(first["prekey"], true, "{first}");

    exchange(&mut alice, &mut bob, "round1", 20).await;

    // SIGKILL: no stream close, the XEP-0198 session hibernates; the state file must be enough.
    let bob_device = bob.device_id;
    bob.kill().await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    assert_eq!(bob.device_id, bob_device, "same state file, same device");
    exchange(&mut alice, &mut bob, "round2", 10).await;
    // Sessions went on: no new key exchange was needed after the restart.
    bob.ping().await;
    alice.ping().await;
    let sent = bob.send(&alice.bare, "after restart", None).await;
    assert_eq!(sent["prekey"], false, "{sent}");
    let last = alice.wait_received(1, WAIT).await.remove(0);
    assert_eq!(
        (last["body"].as_str(), last["prekey"].as_bool()),
        (Some("after restart"), Some(false))
    );
    assert_eq!(last["id"], sent["id"]);
    assert!(bob.quit().await.success());
    assert!(alice.quit().await.success());
}

#[tokio::test]
async fn python_peer_reset_identity_keeps_device_id_and_is_still_received() {
    let world = prosody_world();
    let mut alice = OmemoPeer::start(&world, "alice", &[]).await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    bob.send(&alice.bare, "before reset", None).await;
    assert_eq!(
        bodies(&alice.wait_received(1, WAIT).await),
        ["before reset"]
    );
    alice.send(&bob.bare, "reply before reset", None).await;
    assert_eq!(
        bodies(&bob.wait_received(1, WAIT).await),
        ["reply before reset"]
    );
    let (old_device, old_key) = (bob.device_id, bob.ready["identity_key"].clone());
    assert!(bob.quit().await.success());

    let mut bob = OmemoPeer::start(&world, "bob", &["--reset-identity"]).await;
    assert_eq!(bob.ready["identity_reset"], "same-device", "{}", bob.ready);
    assert_eq!(bob.device_id, old_device, "the device id is kept");
    assert_ne!(bob.ready["identity_key"], old_key, "a new identity key");
    assert_eq!(
        alice.devices(&bob.bare).await,
        vec![old_device],
        "no new device published"
    );

    let sent = bob.send(&alice.bare, "after reset", Some("reset-1")).await;
    assert_eq!(sent["prekey"], true, "sessions were dropped: {sent}");
    let got = alice.wait_received(1, WAIT).await.remove(0);
    assert_eq!(
        (got["body"].as_str(), got["id"].as_str()),
        (Some("after reset"), Some("reset-1"))
    );
    assert_eq!(got["prekey"], true);
    assert_eq!(got["device_id"], old_device);
    // python-omemo itself refuses the key exchange (PublicDataInconsistency); the peer reports it,
    // forgets the stored identity key of that device and decrypts with the new one.
    let changed = alice
        .wait_event("identity_changed", WAIT, |e| {
            e["event"] == "identity_changed"
        })
        .await;
    assert_eq!(changed["device_id"], old_device);
    assert_eq!(changed["old_identity_key"], old_key);
    assert_eq!(changed["new_identity_key"], bob.ready["identity_key"]);

    alice.send(&bob.bare, "reply after reset", None).await;
    assert_eq!(
        bodies(&bob.wait_received(1, WAIT).await),
        ["reply after reset"]
    );
    assert!(bob.quit().await.success());
    assert!(alice.quit().await.success());
}

#[tokio::test]
async fn profanity_and_python_peer_both_ways() {
    let world = prosody_world();
    world.add_xmpp_user("carol");
    let mut alice = OmemoPeer::start(&world, "alice", &[]).await;
    let carol = Profanity::start(&world, "carol").await;

    carol.send(&alice.bare, "profanity to python").await;
    let got = alice.wait_received(1, WAIT).await.remove(0);
    assert_eq!(got["body"], "profanity to python");
    assert_eq!(
        got["device_id"], carol.device_id,
        "profanity's own device id"
    );
    assert_eq!(got["prekey"], true, "{got}");
    assert!(got["from"].as_str().expect("from").starts_with(&carol.jid));

    alice.send(&carol.jid, "python to profanity", None).await;
    let line = carol
        .wait_text(&alice.bare, "python to profanity", WAIT)
        .await;
    assert!(line.contains(&alice.bare), "{line}");
    assert!(alice.devices(&carol.jid).await.contains(&carol.device_id));
    carol.stop().await;
    assert!(alice.quit().await.success());
}
