//! The bridge with a fake network: linking, the bot's password step, portals and message
//! requests, messages both ways, placeholders, refusals, connection notices, shutdown.
//! Transactions and the room workers are in `workers.rs`.

use super::*;

pub(super) const ALICE: &str = "@alice:hs.example";
pub(super) const BOB_GHOST: &str = "@interop_bob=40x.example:hs.example";

impl Harness {
    /// Links alice@x.example to @alice through the core API.
    pub(super) async fn link_alice(&self) {
        let user = UserId::parse(ALICE).expect("user");
        let info = self
            .bridge
            .link(&user, "Alice@X.example", "pw", false)
            .await
            .expect("linked");
        assert_eq!(info.jid.as_str(), "alice@x.example");
    }

    /// Injects an event into alice's login and waits until it was handled.
    pub(super) async fn inject(&self, event: RemoteEvent) {
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
        // A contact's event goes on to their lane: wait until the lanes are empty too.
        for _ in 0..200 {
            if done.load(std::sync::atomic::Ordering::SeqCst) > 0
                && self.bridge.inbound_in_flight() == 0
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the login task did not handle the event");
    }

    /// [`message`](Self::message) with our server's stamp (XEP-0359 stanza-id).
    fn message_stamped(
        &self,
        id: &str,
        server_id: &str,
        body: &str,
        acks: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> RemoteEvent {
        let mut message = self.message(id, body, acks);
        if let RemoteEvent::Message { server_id: s, .. } = &mut message {
            *s = Some(server_id.into());
        }
        message
    }

    pub(super) fn message(
        &self,
        id: &str,
        body: &str,
        acks: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> RemoteEvent {
        RemoteEvent::Message {
            contact: RemoteUserId::parse("bob@x.example").expect("jid"),
            id: Some(id.into()),
            server_id: None,
            body: body.into(),
            nick: Some("Bobby".into()),
            oob_url: None,
            client: None,
            encrypted: true,
            relations: Relations::default(),
            ack: Box::new(FakeAck(acks.clone())),
        }
    }

    /// The sender and content of every event of type `kind` the bridge posted.
    pub(super) fn events_of(&self, kind: &str) -> Vec<(String, Value)> {
        self.matrix
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Event {
                    event_type,
                    content,
                    user,
                    ..
                } if event_type == kind => Some((user, content)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn sends(&self) -> Vec<(String, String)> {
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

pub(super) fn bob_key() -> crate::ids::PortalKey {
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
    // Spaces at the ends are part of the password.
    h.txn("3", vec![text("$pw", ALICE, ROOM, " hunter2 ")])
        .await;
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
    assert_eq!(login.expect("store").expect("login").password, " hunter2 ");
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
    // The ghost is named after the nickname, with the JID next to it (a stranger calling
    // themselves "Bobby" is not shown as just that).
    assert!(h.matrix.calls().contains(&Call::SetName(
        BOB_GHOST.into(),
        "Bobby (bob@x.example)".into()
    )));

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
        server_id: Some("s9".into()),
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
        server_id: Some("s10".into()),
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
    // The contact's client sends it again: the same id, a new stanza (a new server stamp).
    h.inject(h.message_stamped("m9", "s11", "the real text", &acks))
        .await;
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
    h.inject(RemoteEvent::Connected { resumed: true }).await;
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

impl Harness {
    /// Links alice and opens her portal with bob through `start-chat`; returns its room.
    pub(super) async fn linked_with_bob_portal(&self) -> OwnedRoomId {
        self.link_alice().await;
        let alice = UserId::parse(ALICE).expect("user");
        let login = self.bridge.login_of_user(&alice).expect("running");
        let contact = RemoteUserId::parse("bob@x.example").expect("jid");
        self.bridge
            .start_chat(&login, &contact)
            .await
            .expect("portal")
    }

    pub(super) fn texts_to_bob(&self) -> Vec<String> {
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

/// A contact's message the homeserver keeps failing (5xx) is tried again in that contact's
/// lane: the contact's later message waits behind it, another contact's goes through meanwhile,
/// and nothing is acknowledged before it is shown.
#[tokio::test]
async fn a_contact_whose_message_the_homeserver_fails_holds_up_nobody_else() {
    let h = harness();
    h.linked_with_bob_portal().await;
    *h.matrix.refuse_bodies.lock().expect("lock") = Some(("stuck".into(), 502, "M_UNKNOWN".into()));
    let bob_acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let carol_acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = h.net.sender();
    sender
        .send(h.message("b1", "stuck one", &bob_acks))
        .await
        .expect("login task alive");
    sender
        .send(h.message("b2", "after it", &bob_acks))
        .await
        .expect("login task alive");
    sender
        .send(RemoteEvent::Message {
            contact: RemoteUserId::parse("carol@x.example").expect("jid"),
            id: Some("c1".into()),
            server_id: None,
            body: "carol meanwhile".into(),
            nick: None,
            oob_url: None,
            client: None,
            encrypted: true,
            relations: Relations::default(),
            ack: Box::new(FakeAck(carol_acks.clone())),
        })
        .await
        .expect("login task alive");
    let shown = |h: &Harness, needle: &str| h.sends().iter().any(|(_, b)| b.contains(needle));
    for _ in 0..400 {
        if shown(&h, "carol meanwhile") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(shown(&h, "carol meanwhile"), "{:?}", h.sends());
    assert_eq!(carol_acks.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        !shown(&h, "after it"),
        "bob's second message overtook his first"
    );
    assert_eq!(bob_acks.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The homeserver recovers: bob's messages are shown in order, each acknowledged.
    *h.matrix.refuse_bodies.lock().expect("lock") = None;
    for _ in 0..400 {
        if bob_acks.load(std::sync::atomic::Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let bob: Vec<String> = h
        .sends()
        .into_iter()
        .filter(|(u, _)| u == BOB_GHOST)
        .map(|(_, b)| b)
        .filter(|b| b == "stuck one" || b == "after it")
        .collect();
    assert_eq!(bob, ["stuck one", "after it"]);
    assert_eq!(bob_acks.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A contact's client that reuses a message id loses nothing where our server stamps its
/// messages: the stamp tells a new message from a redelivery. Without a stamp the id is all
/// there is, and a repeat is a redelivery.
#[tokio::test]
async fn a_reused_message_id_is_a_new_message_when_the_server_stamps_them() {
    let h = harness();
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message_stamped("same", "s1", "first text", &acks))
        .await;
    h.inject(h.message_stamped("same", "s2", "second text", &acks))
        .await;
    // A redelivery of the second (the same stamp): nothing more.
    h.inject(h.message_stamped("same", "s2", "second text", &acks))
        .await;
    // No stamp: a repeated id is taken as a redelivery.
    h.inject(h.message("plain", "third text", &acks)).await;
    h.inject(h.message("plain", "third text", &acks)).await;
    let shown: Vec<String> = h
        .sends()
        .into_iter()
        .filter(|(u, b)| u == BOB_GHOST && b.ends_with(" text"))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(shown, ["first text", "second text", "third text"]);
    assert_eq!(
        acks.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "every one acknowledged"
    );
    // The contact's id maps to the newest message with it.
    let newest = h
        .store
        .event_of(&bob_key(), "same")
        .expect("store")
        .expect("mapped");
    assert!(!newest.placeholder);
}

/// A post that reached the homeserver but whose answer was lost (the homeserver stopped
/// mid-request, so after its restart it no longer knows the transaction id) is found in the
/// room on the retry and not posted twice.
#[tokio::test]
async fn a_post_whose_answer_was_lost_is_not_posted_twice() {
    let h = harness();
    h.linked_with_bob_portal().await;
    *h.matrix.lose_answer.lock().expect("lock") = Some("lost answer".into());
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message("l1", "the lost answer", &acks)).await;
    let posts = h
        .sends()
        .into_iter()
        .filter(|(u, b)| u == BOB_GHOST && b == "the lost answer")
        .count();
    assert_eq!(posts, 1, "{:?}", h.sends());
    assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mapped = h
        .store
        .event_of(&bob_key(), "l1")
        .expect("store")
        .expect("mapped");
    assert_eq!(
        mapped.event, "$lost:hs.example",
        "mapped to the event already in the room"
    );
}

/// A user's roster name for a contact is that user's alone: it names the ghost in their portal
/// (its member event there), never the ghost's global profile, which other users see.
#[tokio::test]
async fn a_roster_name_names_the_ghost_in_that_portal_only() {
    let h = harness();
    h.link_alice().await;
    h.inject(RemoteEvent::Contacts(vec![crate::core::ContactUpdate {
        contact: RemoteUserId::parse("bob@x.example").expect("jid"),
        name: Some("Bob from work".into()),
        removed: false,
    }]))
    .await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(h.message("m1", "hello", &acks)).await;
    let calls = h.matrix.calls();
    let names: Vec<&String> = calls
        .iter()
        .filter_map(|c| match c {
            Call::SetName(user, name) if user == BOB_GHOST => Some(name),
            _ => None,
        })
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("Bob from work")),
        "the roster name went global: {names:?}"
    );
    let member = calls.iter().find_map(|c| match c {
        Call::State { user, state, .. }
            if user == BOB_GHOST
                && state.event_type == "m.room.member"
                && state.state_key == BOB_GHOST =>
        {
            Some(state.content.clone())
        }
        _ => None,
    });
    let member = member.expect("the ghost's member event in the portal");
    assert_eq!(member["displayname"], "Bob from work");
    assert_eq!(member["membership"], "join");
}
