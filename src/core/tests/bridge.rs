//! The bridge with a fake network: linking, the bot's password step, portals and message
//! requests, messages both ways, placeholders, connection notices.

use super::*;

const ALICE: &str = "@alice:hs.example";
const BOB_GHOST: &str = "@interop_bob=40x.example:hs.example";

impl Harness {
    /// Links alice@x.example to @alice through the core API.
    async fn link_alice(&self) {
        let user = UserId::parse(ALICE).expect("user");
        let info = self
            .bridge
            .link(&user, "Alice@X.example", "pw", false)
            .await
            .expect("linked");
        assert_eq!(info.jid.as_str(), "alice@x.example");
    }

    /// Injects an event into alice's login and waits until the login task handled it.
    async fn inject(&self, event: RemoteEvent) {
        self.net
            .sender()
            .send(event)
            .await
            .expect("login task alive");
        // The task handles events in order: a second, empty event has passed once the first
        // is done.
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let marker = RemoteEvent::Ignored {
            ack: Box::new(FakeAck(done.clone())),
        };
        self.net
            .sender()
            .send(marker)
            .await
            .expect("login task alive");
        for _ in 0..200 {
            if done.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the login task did not handle the event");
    }

    fn message(
        &self,
        id: &str,
        body: &str,
        acks: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> RemoteEvent {
        RemoteEvent::Message {
            contact: RemoteUserId::parse("bob@x.example").expect("jid"),
            id: Some(id.into()),
            body: body.into(),
            nick: Some("Bobby".into()),
            encrypted: true,
            ack: Box::new(FakeAck(acks.clone())),
        }
    }

    fn sends(&self) -> Vec<(String, String)> {
        self.matrix
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Send { user, body, .. } => Some((user, body)),
                _ => None,
            })
            .collect()
    }
}

fn bob_key() -> crate::ids::PortalKey {
    crate::ids::PortalKey {
        login: RemoteUserId::parse("alice@x.example").expect("jid"),
        contact: RemoteUserId::parse("bob@x.example").expect("jid"),
    }
}

#[tokio::test]
async fn linking_checks_the_user_and_the_jid_and_stores_the_login() {
    let h = harness();
    let eve = UserId::parse("@eve:elsewhere.example").expect("user");
    let err = h
        .bridge
        .link(&eve, "eve@x.example", "pw", false)
        .await
        .expect_err("remote user");
    assert!(
        err.to_string().contains("not a user of this homeserver"),
        "{err}"
    );
    let alice = UserId::parse(ALICE).expect("user");
    assert!(
        h.bridge
            .link(&alice, "not a jid", "pw", false)
            .await
            .is_err()
    );
    h.link_alice().await;
    let carl = UserId::parse("@carl:hs.example").expect("user");
    let err = h
        .bridge
        .link(&carl, "alice@x.example", "pw", false)
        .await
        .expect_err("taken");
    assert!(err.to_string().contains("already linked"), "{err}");
    let err = h
        .bridge
        .link(&alice, "other@x.example", "pw", false)
        .await
        .expect_err("one each");
    assert!(err.to_string().contains("unlink"), "{err}");
    let statuses = h.bridge.statuses(None).expect("statuses");
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].connected && statuses[0].describe().contains("alice@x.example"));
    assert_eq!(
        h.bridge
            .unlink(&alice)
            .await
            .expect("unlink")
            .map(|j| j.to_string()),
        Some("alice@x.example".into())
    );
    assert!(h.store.logins().expect("logins").is_empty());
    assert!(h.net.calls().contains(&NetCall::Close));
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_nothing_is_stored() {
    let h = harness_full(
        FakeMatrix::default(),
        FakeNetwork {
            refuse_password: Some("bad".into()),
            ..FakeNetwork::default()
        },
    );
    let alice = UserId::parse(ALICE).expect("user");
    let err = h
        .bridge
        .link(&alice, "alice@x.example", "bad", false)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("refused the login"), "{err}");
    assert!(h.store.logins().expect("logins").is_empty());
}

#[tokio::test]
async fn link_in_the_bot_room_asks_for_the_password_and_redacts_it() {
    let h = harness();
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    h.txn(
        "2",
        vec![text(
            "$link",
            ALICE,
            ROOM,
            "link alice@x.example --register",
        )],
    )
    .await;
    h.txn("3", vec![text("$pw", ALICE, ROOM, "hunter2")]).await;
    let calls = h.matrix.calls();
    assert!(calls.contains(&Call::Redact(
        "@interopbot:hs.example".into(),
        ROOM.into(),
        "$pw".into()
    )));
    let bodies: Vec<String> = h.sends().into_iter().map(|(_, b)| b).collect();
    assert!(
        bodies.iter().any(|b| b.contains("next message")),
        "{bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with("Linked alice@x.example")),
        "{bodies:?}"
    );
    assert!(
        bodies.iter().all(|b| !b.contains("hunter2")),
        "the password was echoed"
    );
    assert_eq!(
        h.net.calls()[0],
        NetCall::Register("alice@x.example".into())
    );
    let login = h
        .store
        .login(&RemoteUserId::parse("alice@x.example").expect("jid"));
    assert_eq!(login.expect("store").expect("login").password, "hunter2");
}

#[tokio::test]
async fn an_unknown_contact_opens_a_message_request_once() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message("m1", "hi there", &acks)).await;
    h.inject(h.message("m1", "hi there", &acks)).await; // redelivered
    assert_eq!(
        acks.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both acknowledged"
    );
    let portal = h.store.portal(&bob_key()).expect("store").expect("portal");
    assert_eq!(portal.state, crate::store::PortalState::Request);
    let creates: Vec<NewRoom> = h
        .matrix
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::CreateRoom { spec, creator, .. } if creator == BOB_GHOST => Some(spec),
            _ => None,
        })
        .collect();
    assert_eq!(creates.len(), 1, "one portal");
    assert!(creates[0].is_direct && creates[0].invite[0] == ALICE);
    assert!(
        creates[0]
            .initial_state
            .iter()
            .any(|s| s.event_type == "m.bridge")
    );
    let from_bob: Vec<String> = h
        .sends()
        .into_iter()
        .filter(|(u, _)| u == BOB_GHOST)
        .map(|(_, b)| b)
        .collect();
    assert!(from_bob[0].contains("re-encrypts"), "{from_bob:?}");
    assert!(from_bob[1].starts_with("Message request"), "{from_bob:?}");
    assert_eq!(
        from_bob.iter().filter(|b| *b == "hi there").count(),
        1,
        "posted once"
    );
    // The space, with the portal in it.
    assert!(
        h.matrix
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CreateRoom { spec, .. } if spec.space))
    );
    assert!(
        h.matrix
            .calls()
            .iter()
            .any(|c| matches!(c, Call::State { state, .. }
        if state.event_type == "m.space.child" && state.state_key == portal.room.as_str()))
    );
    // The ghost is named after the nickname.
    assert!(
        h.matrix
            .calls()
            .contains(&Call::SetName(BOB_GHOST.into(), "Bobby".into()))
    );

    // Joining accepts the request and adds bob to the roster.
    let join = raw(json!({
        "type": "m.room.member", "state_key": ALICE, "sender": ALICE,
        "room_id": portal.room, "event_id": "$join", "origin_server_ts": 5,
        "content": { "membership": "join" },
    }));
    h.txn("j", vec![join]).await;
    let portal = h.store.portal(&bob_key()).expect("store").expect("portal");
    assert_eq!(portal.state, crate::store::PortalState::Accepted);
    assert!(h.net.calls().contains(&NetCall::AddContact(
        "bob@x.example".into(),
        Some("Bobby".into())
    )));

    // A reply goes out once, with an id derived from the event, even if redelivered.
    let reply = || text("$reply", ALICE, portal.room.as_str(), "hello bob");
    h.txn("r1", vec![reply()]).await;
    h.txn("r2", vec![reply()]).await;
    let sends: Vec<NetCall> = h
        .net
        .calls()
        .into_iter()
        .filter(|c| matches!(c, NetCall::Send { .. }))
        .collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    let NetCall::Send { to, body, id } = &sends[0] else {
        unreachable!()
    };
    assert_eq!((to.as_str(), body.as_str()), ("bob@x.example", "hello bob"));
    assert_eq!(id, &derived_id(&["out", "$reply"]));
    assert!(
        h.store
            .remote_of(&ruma::owned_event_id!("$reply"))
            .expect("store")
            .is_some()
    );
}

#[tokio::test]
async fn leaving_a_request_declines_it_and_later_messages_are_dropped() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message("m1", "first", &acks)).await;
    let portal = h.store.portal(&bob_key()).expect("store").expect("portal");
    let leave = raw(json!({
        "type": "m.room.member", "state_key": ALICE, "sender": ALICE,
        "room_id": portal.room, "event_id": "$leave", "origin_server_ts": 5,
        "content": { "membership": "leave" },
    }));
    h.txn("l", vec![leave]).await;
    assert_eq!(
        h.store.portal(&bob_key()).expect("store").expect("p").state,
        crate::store::PortalState::Declined
    );
    assert!(
        h.matrix
            .calls()
            .contains(&Call::Leave(BOB_GHOST.into(), portal.room.to_string()))
    );
    let before = h.sends().len();
    h.inject(h.message("m2", "second", &acks)).await;
    assert_eq!(h.sends().len(), before, "a declined request stays quiet");
    assert_eq!(
        acks.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "but is acknowledged"
    );
}

#[tokio::test]
async fn an_undecryptable_message_becomes_a_placeholder_then_an_edit() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bob = RemoteUserId::parse("bob@x.example").expect("jid");
    h.inject(RemoteEvent::Undecryptable {
        contact: bob.clone(),
        id: Some("m9".into()),
        duplicate: false,
        reason: "no session".into(),
        ack: Box::new(FakeAck(acks.clone())),
    })
    .await;
    let mapped = h
        .store
        .event_of(&bob_key(), "m9")
        .expect("store")
        .expect("placeholder");
    assert!(mapped.placeholder);
    assert!(
        h.sends()
            .iter()
            .any(|(_, b)| b.contains("could not be decrypted"))
    );
    h.inject(RemoteEvent::Undecryptable {
        contact: bob,
        id: Some("m10".into()),
        duplicate: true,
        reason: "replay".into(),
        ack: Box::new(FakeAck(acks.clone())),
    })
    .await;
    assert!(
        h.store
            .event_of(&bob_key(), "m10")
            .expect("store")
            .is_none(),
        "a replay shows nothing"
    );
    h.inject(h.message("m9", "the real text", &acks)).await;
    let edits: Vec<Value> = h
        .matrix
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Event { content, .. } => Some(content),
            _ => None,
        })
        .collect();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edits[0]["m.new_content"]["body"], "the real text");
    assert!(
        !h.store
            .event_of(&bob_key(), "m9")
            .expect("store")
            .expect("mapped")
            .placeholder
    );
    assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failed_send_is_reported_in_the_portal() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    h.net
        .fail_sends
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.txn("s", vec![text("$m", ALICE, room.as_str(), "will fail")])
        .await;
    assert!(
        h.sends()
            .iter()
            .any(|(u, b)| u == BOB_GHOST && b.contains("not delivered")),
        "{:?}",
        h.sends()
    );
    assert!(
        h.store
            .remote_of(&ruma::owned_event_id!("$m"))
            .expect("store")
            .is_none()
    );
}

#[tokio::test]
async fn connection_changes_are_told_in_the_management_room() {
    let h = harness();
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    h.link_alice().await;
    let retry = Some(std::time::Duration::from_secs(4));
    h.inject(RemoteEvent::Disconnected {
        reason: "connection reset".into(),
        retry_in: retry,
    })
    .await;
    h.inject(RemoteEvent::Disconnected {
        reason: "refused".into(),
        retry_in: retry,
    })
    .await;
    h.inject(RemoteEvent::Connected).await;
    h.inject(RemoteEvent::Disconnected {
        reason: "not-authorized".into(),
        retry_in: None,
    })
    .await;
    let told: Vec<String> = h
        .sends()
        .into_iter()
        .filter(|(u, _)| u == "@interopbot:hs.example")
        .map(|(_, b)| b)
        .filter(|b| !b.contains("management room"))
        .collect();
    assert_eq!(
        told.len(),
        3,
        "one notice per change, not per retry: {told:?}"
    );
    assert!(told[0].starts_with("Disconnected: alice@x.example") && told[0].contains("4 s"));
    assert!(told[1].starts_with("Reconnected"));
    assert!(told[2].starts_with("Login failed") && told[2].contains("not-authorized"));
}

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

impl Harness {
    /// Links alice and opens her portal with bob through `start-chat`; returns its room.
    async fn linked_with_bob_portal(&self) -> OwnedRoomId {
        self.link_alice().await;
        let alice = UserId::parse(ALICE).expect("user");
        let login = self.bridge.login_of_user(&alice).expect("running");
        let contact = RemoteUserId::parse("bob@x.example").expect("jid");
        self.bridge
            .start_chat(&login, &contact)
            .await
            .expect("portal")
    }

    fn texts_to_bob(&self) -> Vec<String> {
        self.net
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                NetCall::Send { to, body, .. } if to == "bob@x.example" => Some(body),
                _ => None,
            })
            .collect()
    }
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
            && body.contains("end-to-end encrypted")),
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
        .filter(|(_, body)| body.contains("cannot read") || body.contains("not delivered"))
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!(notices[0].0, "@interopbot:hs.example");
    assert!(
        notices[0]
            .1
            .contains("cannot read end-to-end encrypted messages")
    );
    assert_eq!(notices[1].0, BOB_GHOST);
    assert!(notices[1].1.contains("not delivered to bob@x.example"));
    assert!(h.texts_to_bob().is_empty());
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

#[tokio::test]
async fn a_message_the_homeserver_refuses_for_good_is_told_and_acknowledged_and_the_next_flows() {
    let h = harness();
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message("b0", "hello", &acks)).await;
    *h.matrix.refuse_bodies.lock().expect("lock") =
        Some(("forbidden fruit".into(), 403, "M_FORBIDDEN".into()));
    h.inject(h.message("b1", "forbidden fruit", &acks)).await;
    *h.matrix.refuse_bodies.lock().expect("lock") =
        Some(("too large".into(), 413, "M_TOO_LARGE".into()));
    h.inject(h.message("b2", "too large", &acks)).await;
    h.inject(h.message("b3", "after them", &acks)).await;
    // Every stanza was acknowledged (the login did not wedge) ...
    assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 4);
    let sends = h.sends();
    let bodies: Vec<&str> = sends.iter().map(|(_, b)| b.as_str()).collect();
    assert!(bodies.contains(&"after them"), "{bodies:?}");
    // ... and the user was told of each refusal: the kicked ghost's in the management room,
    // the too-large one in the portal.
    let told: Vec<&(String, String)> = sends
        .iter()
        .filter(|(_, b)| b.contains("could not be shown"))
        .collect();
    assert_eq!(told.len(), 2, "{sends:?}");
    assert_eq!(told[0].0, "@interopbot:hs.example");
    assert!(told[0].1.contains("invite it back"));
    assert_eq!(told[1].0, BOB_GHOST);
    assert!(told[1].1.contains("M_TOO_LARGE"));
}

#[tokio::test]
async fn shutdown_stops_every_login_at_once() {
    const LOGINS: usize = 8;
    let net = FakeNetwork {
        close_delay: Some(std::time::Duration::from_millis(200)),
        ..FakeNetwork::default()
    };
    let h = harness_full(FakeMatrix::default(), net);
    for i in 0..LOGINS {
        let user = UserId::parse(format!("@user{i}:hs.example")).expect("user");
        h.bridge
            .link(&user, &format!("user{i}@x.example"), "pw", false)
            .await
            .expect("linked");
    }
    // From now on only the logins hold their event senders: a closed login's task ends.
    h.net.events.lock().expect("lock").take();
    h.bridge.shutdown().await;
    let finished = h
        .net
        .started_when_a_close_finished
        .lock()
        .expect("lock")
        .clone();
    assert_eq!(
        finished,
        vec![LOGINS; LOGINS],
        "every close had started before the first one finished"
    );
    assert!(
        h.bridge
            .statuses(None)
            .expect("statuses")
            .iter()
            .all(|s| !s.running)
    );
}
