//! `scripts/world/matrix_peer.py` (matrix-nio, vodozemac) against the world's real Synapse, no
//! bridge: an encrypted DM created the way Element creates one, its first message sent before the
//! invitee joined, then messages both ways, a second device of the invitee started midway (which
//! gets the history's keys from the first one on request), and a restart of that device. Every
//! message must arrive decrypted, in order, exactly once. Then an unencrypted DM with an
//! `--auto-join` peer, which leaves it again.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use test_world::{MatrixPeer, World};

const WAIT: Duration = Duration::from_secs(30);

fn bodies(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect()
}

/// Every message came encrypted and was decrypted, has the event id its sender got back from
/// `send`, and (when known) names the sending device.
fn check_encrypted(messages: &[Value], event_ids: &[String], device: &str) {
    let got: Vec<&str> = messages
        .iter()
        .map(|m| m["event_id"].as_str().expect("event_id"))
        .collect();
    assert_eq!(got, event_ids, "event ids in send order");
    for m in messages {
        assert_eq!(m["encrypted"], true, "not an encrypted message: {m}");
        assert_eq!(m["msgtype"], "m.text", "{m}");
        assert!(m.get("initial").is_none(), "from an initial sync: {m}");
        assert_eq!(m["sender_device"], device, "sending device: {m}");
    }
}

/// Reads what `peer` prints for `quiet` (after a ping round trip) and fails on a second copy of a
/// message in `seen` or on an undecryptable event outside the initial sync.
async fn assert_no_more(peer: &mut MatrixPeer, seen: &HashSet<String>, quiet: Duration) {
    peer.ping().await;
    let deadline = tokio::time::Instant::now() + quiet;
    let mut events: Vec<Value> = peer.unclaimed().iter().cloned().collect();
    while let Some(e) = peer
        .next_event(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        events.push(e);
    }
    for e in events {
        if e["event"] == "message" {
            let id = e["event_id"].as_str().unwrap_or_default();
            assert!(!seen.contains(id), "{}: message twice: {e}", peer.user_id);
        }
        assert!(
            e["event"] != "undecryptable" || e["initial"] == true,
            "{}: undecryptable: {e}",
            peer.user_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_dm_both_ways_with_a_second_device() {
    let t0 = std::time::Instant::now();
    let world = World::start("synapse", |_, _| vec![]);
    let (mut a, mut b) = tokio::join!(
        MatrixPeer::start(&world, "alice", &[]),
        MatrixPeer::start(&world, "bob", &[])
    );
    assert_eq!(
        a.user_id,
        format!("@alice:{}", world.var("MATRIX_SERVER_NAME"))
    );
    assert_eq!(b.ready["restored"], false);
    eprintln!("[test] peers ready after {:?}", t0.elapsed());

    // The first message goes out before bob even saw the invite.
    let room = a.create_dm(&b.user_id, true).await;
    let mut from_a = vec![a.send(&room, "a first").await];
    let invite = b
        .wait_event("invite", WAIT, |e| e["event"] == "invite")
        .await;
    assert_eq!(invite["room_id"], room.as_str(), "{invite}");
    assert_eq!(invite["sender"], a.user_id.as_str(), "{invite}");
    assert_eq!(invite["encrypted_invite"], true, "{invite}");
    assert_eq!(invite["is_direct"], true, "{invite}");
    assert_eq!(b.join(&room).await, room);

    let mut from_b = Vec::new();
    for i in 0..10 {
        from_a.push(a.send(&room, &format!("a {i}")).await);
        from_b.push(b.send(&room, &format!("b {i}")).await);
    }
    let at_b = b.wait_messages(&room, &a.user_id, 11, WAIT).await;
    let mut want_a = vec!["a first".to_owned()];
    want_a.extend((0..10).map(|i| format!("a {i}")));
    assert_eq!(bodies(&at_b), want_a);
    check_encrypted(&at_b, &from_a, &a.device_id);
    let at_a = a.wait_messages(&room, &b.user_id, 10, WAIT).await;
    let want_b: Vec<String> = (0..10).map(|i| format!("b {i}")).collect();
    assert_eq!(bodies(&at_a), want_b);
    check_encrypted(&at_a, &from_b, &b.device_id);
    eprintln!("[test] 21 messages after {:?}", t0.elapsed());

    // A second device of bob, started midway, gets alice's later messages and bob's own.
    let mut b2 = MatrixPeer::start(&world, "bob", &["--device", "second"]).await;
    assert_eq!(b2.user_id, b.user_id);
    assert_ne!(b2.device_id, b.device_id);
    let mut late_a = Vec::new();
    for i in 0..5 {
        late_a.push(a.send(&room, &format!("late a {i}")).await);
    }
    let late_b = vec![b.send(&room, "late b").await];
    let at_b2 = b2.wait_messages(&room, &a.user_id, 5, WAIT).await;
    assert_eq!(
        bodies(&at_b2),
        (0..5).map(|i| format!("late a {i}")).collect::<Vec<_>>()
    );
    check_encrypted(&at_b2, &late_a, &a.device_id);
    let own = b2.wait_messages(&room, &b.user_id, 1, WAIT).await;
    assert_eq!(bodies(&own), ["late b"]);
    check_encrypted(&own, &late_b, &b.device_id);
    let at_b_late = b.wait_messages(&room, &a.user_id, 5, WAIT).await;
    check_encrypted(&at_b_late, &late_a, &a.device_id);
    let at_a_late = a.wait_messages(&room, &b.user_id, 1, WAIT).await;
    check_encrypted(&at_a_late, &late_b, &b.device_id);
    eprintln!("[test] second device after {:?}", t0.elapsed());

    // The history from before it existed came undecryptable; its own first device forwards the keys
    // on request (nio shares with the account's own trusted devices), and it follows, late.
    assert!(b2.request_keys(Some(&room)).await >= 1);
    let history_a = b2.wait_messages(&room, &a.user_id, 11, WAIT).await;
    let history_b = b2.wait_messages(&room, &b.user_id, 10, WAIT).await;
    for m in history_a.iter().chain(&history_b) {
        assert_eq!(m["late"], true, "{m}");
        assert_eq!(m["initial"], true, "{m}");
        assert_eq!(m["encrypted"], true, "{m}");
    }
    let ids = |ms: &[Value]| -> HashSet<String> {
        ms.iter()
            .map(|m| m["event_id"].as_str().expect("event_id").to_owned())
            .collect()
    };
    assert_eq!(ids(&history_a), from_a.iter().cloned().collect());
    assert_eq!(ids(&history_b), from_b.iter().cloned().collect());
    eprintln!("[test] history keys after {:?}", t0.elapsed());

    // A restart of the second device is the same device and continues where it stopped.
    let b2_device = b2.device_id.clone();
    assert!(b2.quit().await.success());
    let mut b2 = MatrixPeer::start(&world, "bob", &["--device", "second"]).await;
    assert_eq!(b2.device_id, b2_device);
    assert_eq!(b2.ready["restored"], true);
    let after = vec![a.send(&room, "after restart").await];
    let at_b2 = b2.wait_messages(&room, &a.user_id, 1, WAIT).await;
    assert_eq!(bodies(&at_b2), ["after restart"]);
    check_encrypted(&at_b2, &after, &a.device_id);
    let _ = b.wait_messages(&room, &a.user_id, 1, WAIT).await;

    // Nothing twice, nothing undecryptable (bob's second device could not read the history from
    // before it existed: those are "initial" undecryptables).
    let seen_a: HashSet<String> = from_b.iter().chain(&late_b).cloned().collect();
    let seen_b: HashSet<String> = from_a
        .iter()
        .chain(&late_a)
        .chain(&after)
        .cloned()
        .collect();
    let quiet = Duration::from_millis(2500);
    tokio::join!(
        assert_no_more(&mut a, &seen_a, quiet),
        assert_no_more(&mut b, &seen_b, quiet),
        assert_no_more(&mut b2, &seen_b, quiet),
    );

    // An unencrypted DM with a peer that joins every invite by itself, and a leave.
    let mut c = MatrixPeer::start(&world, "carol", &["--auto-join"]).await;
    let plain_room = a.create_dm(&c.user_id, false).await;
    let (invited_to, by) = c.wait_invite(WAIT).await;
    assert_eq!(
        (invited_to.as_str(), by.as_str()),
        (plain_room.as_str(), a.user_id.as_str())
    );
    let joined = c
        .wait_event("auto-join", WAIT, |e| e["event"] == "joined")
        .await;
    assert_eq!(joined["room_id"], plain_room.as_str(), "{joined}");
    let sent = a.send(&plain_room, "in the clear").await;
    let got = c.wait_messages(&plain_room, &a.user_id, 1, WAIT).await;
    assert_eq!(got[0]["event_id"], sent.as_str());
    assert_eq!(got[0]["encrypted"], false, "{}", got[0]);
    c.leave(&plain_room).await;
    let carol = c.user_id.clone();
    a.wait_event("carol's leave", WAIT, |e| {
        e["event"] == "member"
            && e["room_id"] == plain_room.as_str()
            && e["user"] == carol.as_str()
            && e["membership"] == "leave"
    })
    .await;

    for peer in [a, b, b2, c] {
        assert!(peer.quit().await.success());
    }
    eprintln!("[test] done after {:?}", t0.elapsed());
}
