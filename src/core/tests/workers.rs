//! Transactions and the room workers, with the fake homeserver and network: what was sent
//! before the ghost joined, encrypted events, reused transaction ids, failing flushes, slow and
//! disconnected logins, events resumed after a restart, a transaction the homeserver skipped.

use super::bridge::{ALICE, BOB_GHOST, bob_key};
use super::*;

fn encrypted(event_id: &str, sender: &str, room: &str) -> Raw<AnyTimelineEvent> {
    raw(json!({
        "type": "m.room.encrypted", "sender": sender, "room_id": room, "event_id": event_id,
        "origin_server_ts": 2,
        "content": { "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "device_id": "D",
                     "sender_key": "k", "session_id": "s" },
    }))
}

fn ghost_invite(event_id: &str, room: &str) -> Raw<AnyTimelineEvent> {
    raw(json!({
        "type": "m.room.member", "state_key": BOB_GHOST, "sender": ALICE, "room_id": room,
        "event_id": event_id, "origin_server_ts": 1,
        "content": { "membership": "invite", "is_direct": true },
    }))
}

#[tokio::test]
async fn what_the_user_sent_before_the_ghost_joined_goes_out_once_in_order() {
    let h = harness();
    h.link_alice().await;
    let dm = "!new:hs.example";
    let dm_id: OwnedRoomId = dm.try_into().expect("room id");
    h.matrix.history.lock().expect("history").insert(
        dm_id.clone(),
        vec![
            text("$one", ALICE, dm, "one"),
            text("$other", "@carol:hs.example", dm, "not alice's"),
            encrypted("$sealed", ALICE, dm),
            text("$two", ALICE, dm, "two"),
        ],
    );
    h.txn("1", vec![ghost_invite("$inv", dm)]).await;
    assert_eq!(h.texts_to_bob(), ["one", "two"]);
    assert!(
        h.sends().iter().any(|(user, body)| user == BOB_GHOST
            && body.contains("not delivered")
            && body.contains("could not decrypt")),
        "{:?}",
        h.sends()
    );
    // The homeserver also pushes the later of them once the ghost is in: nothing goes twice.
    h.txn(
        "2",
        vec![
            text("$two", ALICE, dm, "two"),
            text("$three", ALICE, dm, "three"),
        ],
    )
    .await;
    assert_eq!(h.texts_to_bob(), ["one", "two", "three"]);
    assert_eq!(
        h.store
            .portal_by_room(&dm_id)
            .expect("store")
            .map(|(key, _)| key),
        Some(bob_key())
    );
}

#[tokio::test]
async fn an_encrypted_message_is_answered_with_a_notice_never_dropped_silently() {
    let h = harness();
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    let portal = h.linked_with_bob_portal().await;
    h.txn(
        "2",
        vec![
            encrypted("$cmd", ALICE, ROOM),
            encrypted("$msg", ALICE, portal.as_str()),
            encrypted("$ghost", BOB_GHOST, portal.as_str()),
        ],
    )
    .await;
    let notices: Vec<_> = h
        .sends()
        .into_iter()
        .filter(|(_, body)| body.contains("could not read") || body.contains("not delivered"))
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!(notices[0].0, "@interopbot:hs.example");
    assert!(notices[0].1.contains("I could not read your message"));
    assert!(notices[0].1.contains("never shared"));
    assert_eq!(notices[1].0, BOB_GHOST);
    assert!(notices[1].1.contains("not delivered to bob@x.example"));
    assert!(notices[1].1.contains("could not decrypt"));
    assert!(h.texts_to_bob().is_empty());
}

#[tokio::test]
async fn decrypted_messages_and_commands_are_handled_like_plain_ones() {
    let h = harness();
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    let portal = h.linked_with_bob_portal().await;
    let mut help = encrypted("$cmd", ALICE, ROOM);
    let mut msg = encrypted("$msg", ALICE, portal.as_str());
    for (raw, body) in [(&mut help, "help"), (&mut msg, "secret hello")] {
        let mut json: serde_json::Value = serde_json::from_str(raw.json().get()).expect("json");
        json["content"]["ciphertext"] = json!(format!("plain:{body}"));
        *raw = super::raw(json);
    }
    h.txn("2", vec![help, msg]).await;
    assert_eq!(h.texts_to_bob(), ["secret hello"]);
    let answers: Vec<_> = h
        .sends()
        .into_iter()
        .filter(|(who, body)| who == "@interopbot:hs.example" && body.contains("start-chat"))
        .collect();
    assert_eq!(answers.len(), 1, "the bot answered help: {answers:?}");
}

#[tokio::test]
async fn a_reused_transaction_id_with_new_events_is_processed_and_a_true_redelivery_is_not() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let room = room.as_str();
    h.txn("1", vec![text("$a", ALICE, room, "before the restart")])
        .await;
    // The homeserver restarted and numbers its transactions from 1 again.
    h.txn("1", vec![text("$b", ALICE, room, "after the restart")])
        .await;
    assert_eq!(
        h.texts_to_bob(),
        ["before the restart", "after the restart"]
    );
    // A true redelivery of either changes nothing.
    h.txn("1", vec![text("$a", ALICE, room, "before the restart")])
        .await;
    h.txn("1", vec![text("$b", ALICE, room, "after the restart")])
        .await;
    assert_eq!(h.texts_to_bob().len(), 2);
}

#[tokio::test]
async fn a_failed_flush_is_not_answered_as_processed_and_the_retry_sends_nothing_twice() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let events = || vec![text("$m", ALICE, room.as_str(), "hello")];
    let key = transaction_key("7", &events());

    h.store.set_failing_flush(true);
    let first = h.bridge.handle_transaction("7", events()).await;
    assert!(matches!(first, Err(BridgeError::Store(_))), "{first:?}");
    assert!(!h.store.txn_processed(&key).expect("store"));
    // The homeserver retries while the disk is still failing: still not an answer of 200.
    let retry = h.bridge.handle_transaction("7", events()).await;
    assert!(retry.is_err(), "{retry:?}");

    assert!(
        h.bridge
            .store_failure()
            .is_some_and(|r| r.contains("flush failed"))
    );
    // While the store fails, no other transaction is taken either.
    let other = h.bridge.handle_transaction("8", vec![]).await;
    assert!(other.is_err(), "{other:?}");

    h.store.set_failing_flush(false);
    h.bridge
        .handle_transaction("7", events())
        .await
        .expect("processed once the store works");
    h.workers_done().await;
    assert!(h.store.txn_processed(&key).expect("store"));
    assert_eq!(h.bridge.store_failure(), None);
    assert_eq!(h.texts_to_bob(), ["hello"]);
}

#[tokio::test]
async fn a_slow_portal_holds_neither_the_transaction_nor_another_portal() {
    let h = harness();
    let bob_room = h.linked_with_bob_portal().await;
    let alice = UserId::parse(ALICE).expect("user");
    let login = h.bridge.login_of_user(&alice).expect("running");
    let carol = RemoteUserId::parse("carol@x.example").expect("jid");
    let carol_room = h.bridge.start_chat(&login, &carol).await.expect("portal");
    *h.net.hold.lock().expect("lock") = Some("bob@x.example".into());

    // Each transaction is answered although bob's server does not confirm (a hang here would
    // be the old behaviour: the transaction waited for the send).
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        h.bridge
            .handle_transaction("1", vec![text("$b1", ALICE, bob_room.as_str(), "to bob")])
            .await
            .expect("answered");
        h.bridge
            .handle_transaction(
                "2",
                vec![text("$c1", ALICE, carol_room.as_str(), "to carol")],
            )
            .await
            .expect("answered");
    })
    .await;
    assert!(answered.is_ok(), "a transaction waited for a slow server");
    // carol's message goes out while bob's still waits.
    for _ in 0..1000 {
        if h.net
            .calls()
            .iter()
            .any(|c| matches!(c, NetCall::Send { body, .. } if body == "to carol"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let sent: Vec<String> = h
        .net
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            NetCall::Send { body, .. } => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["to carol"]);
    let waiting: Vec<_> = h.store.pending_events().expect("store");
    assert!(
        waiting.iter().any(|(_, p)| p.event == "$b1"),
        "bob's message is still recorded: {waiting:?}"
    );

    h.net.release.notify_one();
    h.workers_done().await;
    assert_eq!(h.texts_to_bob(), ["to bob"]);
}

#[tokio::test]
async fn events_recorded_before_a_restart_are_refetched_and_carried_out_in_order() {
    let h = harness();
    h.txn("0", vec![invite("$inv", ALICE, true)]).await;
    let room = h.linked_with_bob_portal().await;
    h.matrix.history.lock().expect("history").insert(
        room.clone(),
        vec![
            text("$r1", ALICE, room.as_str(), "first"),
            text("$r2", ALICE, room.as_str(), "second"),
        ],
    );
    for event in ["$r2", "$gone", "$r1"] {
        let pending = crate::store::PendingEvent {
            room: room.clone(),
            event: event.try_into().expect("event id"),
        };
        h.store.push_pending(&pending).expect("record");
    }
    h.bridge.resume_pending().expect("resume");
    h.workers_done().await;
    // In recorded order; the event the homeserver no longer has is not sent, and alice is told.
    assert_eq!(h.texts_to_bob(), ["second", "first"]);
    let told: Vec<_> = h
        .sends()
        .into_iter()
        .filter(|(user, body)| user == "@interopbot:hs.example" && body.contains("read back"))
        .collect();
    assert_eq!(told.len(), 1, "{:?}", h.sends());
    assert!(told[0].1.contains("bob@x.example") && told[0].1.contains("M_NOT_FOUND"));
    h.bridge.resume_pending().expect("resume again");
    h.workers_done().await;
    assert_eq!(h.texts_to_bob().len(), 2);
}

#[tokio::test]
async fn a_message_waits_while_the_login_is_disconnected_and_goes_out_once_it_is_back() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    h.net
        .disconnected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.bridge
        .handle_transaction("1", vec![text("$w", ALICE, room.as_str(), "patience")])
        .await
        .expect("answered");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(h.texts_to_bob().is_empty());
    assert!(
        !h.sends()
            .iter()
            .any(|(_, body)| body.contains("not delivered")),
        "a disconnected login is no reason to give up: {:?}",
        h.sends()
    );
    h.net
        .disconnected
        .store(false, std::sync::atomic::Ordering::Relaxed);
    h.workers_done().await;
    assert_eq!(h.texts_to_bob(), ["patience"]);
}

#[tokio::test]
async fn a_send_the_server_does_not_confirm_waits_and_the_user_is_told_once() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    // Connected, but the server does not acknowledge (frozen): the send hangs.
    *h.net.hold.lock().expect("lock") = Some("bob@x.example".into());
    h.bridge
        .handle_transaction("1", vec![text("$u", ALICE, room.as_str(), "unconfirmed")])
        .await
        .expect("answered");
    // Past the send timeout (5 s in the harness).
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let waiting = |sends: &[(String, String)]| {
        sends
            .iter()
            .filter(|(_, body)| body.contains("is waiting") && body.contains("not confirmed"))
            .count()
    };
    assert_eq!(waiting(&h.sends()), 1, "{:?}", h.sends());
    assert!(
        !h.sends()
            .iter()
            .any(|(_, body)| body.contains("not delivered")),
        "a slow server is no reason to give up: {:?}",
        h.sends()
    );
    assert!(h.texts_to_bob().is_empty());
    h.net.release.notify_one();
    h.workers_done().await;
    assert_eq!(h.texts_to_bob(), ["unconfirmed"]);
    assert_eq!(waiting(&h.sends()), 1);
    // The waiting notice now says it went out (an edit of it, once).
    let went_out: Vec<_> = h
        .events_of("m.room.message")
        .into_iter()
        .map(|(_, content)| content)
        .filter(|c| c["m.relates_to"]["rel_type"] == "m.replace")
        .collect();
    assert_eq!(went_out.len(), 1, "{went_out:?}");
    assert!(
        went_out[0]["m.new_content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("went out")),
        "{went_out:?}"
    );
}

#[tokio::test]
async fn a_transaction_the_homeserver_skipped_does_not_reorder_the_messages() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let one = text("$g1", ALICE, room.as_str(), "one");
    let two = text("$g2", ALICE, room.as_str(), "two");
    h.matrix
        .history
        .lock()
        .expect("history")
        .insert(room.clone(), vec![one.clone(), two.clone()]);
    h.txn("10", vec![]).await;
    // Transaction 11 (with "one") is late; 12 (with "two") comes first.
    h.txn("12", vec![two]).await;
    assert_eq!(h.texts_to_bob(), ["one", "two"]);
    h.txn("11", vec![one]).await;
    assert_eq!(h.texts_to_bob(), ["one", "two"]);
}

/// A shutdown lets a send the server has not confirmed yet finish (and be mapped) before it
/// closes the connection: closed under it, the send would fail, and the restart would send the
/// message again, a duplicate for the contact. A job queued behind it is left for the restart.
#[tokio::test]
async fn a_shutdown_waits_for_the_send_in_flight_and_starts_no_other() {
    let h = harness();
    let bob_room = h.linked_with_bob_portal().await;
    *h.net.hold.lock().expect("lock") = Some("bob@x.example".into());
    h.bridge
        .handle_transaction(
            "1",
            vec![
                text("$b1", ALICE, bob_room.as_str(), "in flight"),
                text("$b2", ALICE, bob_room.as_str(), "queued behind"),
            ],
        )
        .await
        .expect("answered");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let bridge = h.bridge.clone();
    let shutdown = tokio::spawn(async move { bridge.shutdown().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !h.net.calls().contains(&NetCall::Close),
        "the connection closed under a send in flight"
    );
    h.net.release.notify_one();
    shutdown.await.expect("shutdown");
    let calls = h.net.calls();
    let sent = calls
        .iter()
        .position(|c| matches!(c, NetCall::Send { body, .. } if body == "in flight"))
        .expect("the send in flight finished");
    let closed = calls
        .iter()
        .position(|c| *c == NetCall::Close)
        .expect("closed");
    assert!(sent < closed, "{calls:?}");
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, NetCall::Send { body, .. } if body == "queued behind")),
        "a job was started during the shutdown"
    );
    let pending = h.store.pending_events().expect("store");
    assert_eq!(
        pending.len(),
        1,
        "only the queued job waits for the restart"
    );
    assert_eq!(pending[0].1.event.as_str(), "$b2");
}

/// Group commit (`commits.rs`): an inbound message is acknowledged only after a flush that
/// covers its writes; while flushes fail, none of a burst is, and when the server delivers
/// them again after the store is back, each is posted once and acknowledged.
#[tokio::test]
async fn inbound_messages_are_acknowledged_only_after_a_flush_succeeded() {
    let h = harness();
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count =
        |acks: &Arc<std::sync::atomic::AtomicUsize>| acks.load(std::sync::atomic::Ordering::SeqCst);
    let from_bob = |h: &Harness| {
        h.sends()
            .into_iter()
            .filter(|(user, body)| user == BOB_GHOST && body.starts_with("burst"))
            .count()
    };

    h.store.set_failing_flush(true);
    for i in 0..5 {
        h.inject(h.message(&format!("b{i}"), &format!("burst {i}"), &acks))
            .await;
    }
    assert_eq!(from_bob(&h), 5, "posted before the flush");
    assert_eq!(count(&acks), 0, "nothing acknowledged without a flush");

    h.store.set_failing_flush(false);
    for i in 0..5 {
        h.inject(h.message(&format!("b{i}"), &format!("burst {i}"), &acks))
            .await;
    }
    assert_eq!(
        from_bob(&h),
        5,
        "the redelivered copies are not posted again"
    );
    assert_eq!(count(&acks), 5);
}
