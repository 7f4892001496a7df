//! What the user sends from their other clients (sent carbons): the fallback notice in the
//! contact's portal, mapped once, in order with the contact's messages; a portal opened for a
//! new chat; double puppeting and its fallback; the bridge's own puppet posts never sent back.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::bridge::{ALICE, BOB_GHOST, bob_key};
use super::*;

const YOU: &str = "↗ You wrote from another device: ";

fn sent(contact: &str, id: &str, body: &str, acks: &Arc<AtomicUsize>) -> RemoteEvent {
    RemoteEvent::SentElsewhere {
        contact: RemoteUserId::parse(contact).expect("jid"),
        id: Some(id.into()),
        body: body.into(),
        ack: Box::new(FakeAck(acks.clone())),
    }
}

/// The posts in portals, without the notices every new portal gets.
fn posts(h: &Harness) -> Vec<(String, String)> {
    h.sends()
        .into_iter()
        .filter(|(_, b)| {
            !b.starts_with("This chat is bridged") && !b.starts_with("Message request")
        })
        .collect()
}

#[tokio::test]
async fn a_sent_carbon_is_posted_once_as_the_users_notice_and_mapped() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(AtomicUsize::new(0));
    h.inject(h.message("b1", "hi alice", &acks)).await;
    h.inject(sent(
        "bob@x.example",
        "phone-1",
        "hi bob, from my phone",
        &acks,
    ))
    .await;
    let notice = format!("{YOU}hi bob, from my phone");
    assert_eq!(
        posts(&h),
        vec![
            (BOB_GHOST.to_owned(), "hi alice".to_owned()),
            (BOB_GHOST.to_owned(), notice.clone()),
        ]
    );
    let mapped = h
        .store
        .event_of(&bob_key(), "phone-1")
        .expect("store")
        .expect("mapped by its id");
    assert!(mapped.ours, "the user's message");
    assert!(!mapped.placeholder && !mapped.markable);
    assert_eq!(acks.load(SeqCst), 2, "acknowledged after the post");
    // A redelivery (the ack lost in a crash) posts nothing and is acknowledged again.
    h.inject(sent(
        "bob@x.example",
        "phone-1",
        "hi bob, from my phone",
        &acks,
    ))
    .await;
    assert_eq!(posts(&h).len(), 2, "{:?}", posts(&h));
    assert_eq!(acks.load(SeqCst), 3);
    // Nothing went to bob: it was the user's own message.
    assert!(h.texts_to_bob().is_empty());
}

#[tokio::test]
async fn sent_carbons_keep_their_place_among_the_contacts_messages() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(AtomicUsize::new(0));
    let tx = h.net.sender();
    // Handed over together: the lane carries them out in arrival order.
    for (i, event) in [
        h.message("b1", "one", &acks),
        sent("bob@x.example", "p1", "two", &acks),
        h.message("b2", "three", &acks),
        sent("bob@x.example", "p2", "four", &acks),
    ]
    .into_iter()
    .enumerate()
    {
        tx.send(event).await.unwrap_or_else(|_| panic!("event {i}"));
    }
    h.inject(h.message("b3", "five", &acks)).await;
    let bodies: Vec<String> = posts(&h).into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        bodies,
        vec![
            "one".to_owned(),
            format!("{YOU}two"),
            "three".to_owned(),
            format!("{YOU}four"),
            "five".to_owned(),
        ]
    );
    assert_eq!(acks.load(SeqCst), 5);
}

#[tokio::test]
async fn a_sent_carbon_to_a_new_contact_opens_an_accepted_portal() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(AtomicUsize::new(0));
    // carol is not in the roster: a message from her would be a request; the user wrote first.
    h.inject(sent("carol@x.example", "p1", "hello carol", &acks))
        .await;
    let key = crate::ids::PortalKey {
        login: RemoteUserId::parse("alice@x.example").expect("jid"),
        contact: RemoteUserId::parse("carol@x.example").expect("jid"),
    };
    let portal = h.store.portal(&key).expect("store").expect("a portal");
    assert_eq!(portal.state, crate::store::PortalState::Accepted);
    let carol = "@interop_carol=40x.example:hs.example";
    let created = h.matrix.calls().into_iter().any(|c| {
        matches!(c, Call::CreateRoom { creator, spec, .. }
            if creator == carol && spec.invite.iter().any(|u| u.as_str() == ALICE))
    });
    assert!(created, "{:?}", h.matrix.calls());
    assert_eq!(
        posts(&h),
        vec![(carol.to_owned(), format!("{YOU}hello carol"))]
    );
    assert_eq!(acks.load(SeqCst), 1);
}

#[tokio::test]
async fn with_double_puppeting_it_is_posted_as_the_user_and_never_sent_back() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let puppet = Arc::new(FakeMatrix::default());
    h.bridge.set_double_puppet(puppet.clone());
    let acks = Arc::new(AtomicUsize::new(0));
    h.inject(sent("bob@x.example", "p1", "as myself", &acks))
        .await;
    let as_user: Vec<Call> = puppet.calls();
    assert!(
        matches!(&as_user[..], [Call::Send { user, room: r, body, txn, .. }]
            if user == ALICE && r.as_str() == room.as_str() && body == "as myself" && txn.starts_with("sent.")),
        "{as_user:?}"
    );
    assert!(
        !posts(&h).iter().any(|(_, b)| b.contains("as myself")),
        "no fallback: {:?}",
        posts(&h)
    );
    assert!(
        h.store
            .event_of(&bob_key(), "p1")
            .expect("store")
            .is_some_and(|m| m.ours)
    );
    assert_eq!(acks.load(SeqCst), 1);
    // The post comes back in a transaction as the user's message: not sent to bob. (Its
    // event id is not mapped, as when the transaction overtakes the send's answer.)
    let echo = raw(json!({
        "type": "m.room.message", "sender": ALICE, "room_id": room, "event_id": "$echo:hs.example",
        "origin_server_ts": 2,
        "content": { "msgtype": "m.text", "body": "as myself", TXN_FIELD: "sent.0123abcd" },
    }));
    h.txn(
        "t1",
        vec![
            echo,
            text("$real", ALICE, room.as_str(), "typed in Element"),
        ],
    )
    .await;
    assert_eq!(h.texts_to_bob(), vec!["typed in Element".to_owned()]);
}

#[tokio::test]
async fn a_refused_puppet_post_falls_back_to_the_notice() {
    let h = harness();
    h.linked_with_bob_portal().await;
    let puppet = FakeMatrix::default();
    // The user has not joined the portal: the homeserver refuses a post as them.
    *puppet.refuse_bodies.lock().expect("lock") =
        Some(("not joined".into(), 403, "M_FORBIDDEN".into()));
    h.bridge.set_double_puppet(Arc::new(puppet));
    let acks = Arc::new(AtomicUsize::new(0));
    h.inject(sent("bob@x.example", "p1", "not joined yet", &acks))
        .await;
    assert!(
        posts(&h).contains(&(BOB_GHOST.to_owned(), format!("{YOU}not joined yet"))),
        "{:?}",
        posts(&h)
    );
    assert!(h.store.event_of(&bob_key(), "p1").expect("store").is_some());
    assert_eq!(acks.load(SeqCst), 1);
}

#[tokio::test]
async fn a_declined_chat_shows_nothing_but_acknowledges() {
    let h = harness();
    h.link_alice().await;
    let acks = Arc::new(AtomicUsize::new(0));
    h.inject(h.message("b1", "hi", &acks)).await;
    let mut portal = h.store.portal(&bob_key()).expect("store").expect("portal");
    portal.state = crate::store::PortalState::Declined;
    h.store.put_portal(&bob_key(), &portal).expect("store");
    h.inject(sent("bob@x.example", "p1", "still writing", &acks))
        .await;
    assert_eq!(posts(&h).len(), 1, "{:?}", posts(&h));
    assert_eq!(acks.load(SeqCst), 2);
}
