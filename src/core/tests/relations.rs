//! Replies, edits, reactions, retractions, read markers and typing, both ways, with the fake
//! homeserver and network.

use super::bridge::{ALICE, BOB_GHOST, bob_key};
use super::*;
use crate::store::MappedEvent;

fn event(value: Value) -> Raw<AnyTimelineEvent> {
    raw(value)
}

fn reaction(id: &str, sender: &str, room: &str, target: &str, key: &str) -> Raw<AnyTimelineEvent> {
    event(json!({
        "type": "m.reaction", "sender": sender, "room_id": room, "event_id": id,
        "origin_server_ts": 3,
        "content": { "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } },
    }))
}

fn redaction(id: &str, sender: &str, room: &str, redacts: &str) -> Raw<AnyTimelineEvent> {
    event(json!({
        "type": "m.room.redaction", "sender": sender, "room_id": room, "event_id": id,
        "origin_server_ts": 4, "redacts": redacts, "content": { "redacts": redacts },
    }))
}

fn contact_message(h: &Harness, id: &str, event_id: &str, markable: bool) {
    let mapped = MappedEvent {
        event: event_id.try_into().expect("event id"),
        placeholder: false,
        ours: false,
        markable,
    };
    h.store.put_message(&bob_key(), id, &mapped).expect("store");
}

impl Harness {
    fn net_signals(&self) -> Vec<Signal> {
        self.net
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                NetCall::Signal { signal, .. } => Some(signal),
                _ => None,
            })
            .collect()
    }

    fn refers(&self) -> Vec<OutgoingMessage> {
        self.net
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                NetCall::Refers(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn in_history(&self, room: &OwnedRoomId, raw: Raw<AnyTimelineEvent>) {
        self.matrix
            .history
            .lock()
            .expect("history")
            .entry(room.clone())
            .or_default()
            .push(raw);
    }
}

#[tokio::test]
async fn the_users_edits_replies_reactions_and_redactions_reach_the_contact_once() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let r = room.as_str();
    h.txn("1", vec![text("$m1", ALICE, r, "hello")]).await;
    let ours = derived_id(&["out", "$m1"]);
    contact_message(&h, "b1", "$b1", true);

    // An edit of a message the contact has: a correction naming the first version's id.
    let edit = event(json!({
        "type": "m.room.message", "sender": ALICE, "room_id": r, "event_id": "$m2",
        "origin_server_ts": 2,
        "content": { "msgtype": "m.text", "body": "* hello!",
            "m.new_content": { "msgtype": "m.text", "body": "hello!" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$m1" } },
    }));
    h.txn("2", vec![edit]).await;
    // A reply to the contact's message.
    let reply = event(json!({
        "type": "m.room.message", "sender": ALICE, "room_id": r, "event_id": "$m3",
        "origin_server_ts": 2,
        "content": { "msgtype": "m.text", "body": "yes",
            "m.relates_to": { "m.in_reply_to": { "event_id": "$b1" } } },
    }));
    h.txn("3", vec![reply]).await;
    assert_eq!(h.texts_to_bob(), ["hello", "hello!", "yes"]);
    let refers = h.refers();
    assert_eq!(refers[0].replaces.as_deref(), Some(ours.as_str()));
    let answered = refers[1].reply.as_ref().expect("a reply");
    assert_eq!(answered.id, "b1");
    assert_eq!(answered.author.as_str(), "bob@x.example");

    // Reactions: the user's whole set goes each time; a redaction takes one back.
    h.in_history(&room, reaction("$r1", ALICE, r, "$b1", "👍"));
    h.txn("4", vec![reaction("$r1", ALICE, r, "$b1", "👍")])
        .await;
    h.in_history(&room, reaction("$r2", ALICE, r, "$b1", "❤️"));
    h.txn("5", vec![reaction("$r2", ALICE, r, "$b1", "❤️")])
        .await;
    h.txn("6", vec![redaction("$x1", ALICE, r, "$r1")]).await;
    // A redaction of the user's own message retracts it.
    h.txn("7", vec![redaction("$x2", ALICE, r, "$m1")]).await;
    // Redelivered under another transaction id: nothing goes twice.
    h.txn(
        "8",
        vec![
            reaction("$r2", ALICE, r, "$b1", "❤️"),
            redaction("$x2", ALICE, r, "$m1"),
        ],
    )
    .await;
    let set = |keys: &[&str]| Signal::Reactions {
        to: "b1".into(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    assert_eq!(
        h.net_signals(),
        [
            set(&["👍"]),
            set(&["👍", "❤️"]),
            set(&["❤️"]),
            Signal::Retract { id: ours.clone() },
        ]
    );
}

#[tokio::test]
async fn the_contacts_replies_corrections_reactions_retractions_and_markers_reach_the_room() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let r = room.as_str();
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bob = || RemoteUserId::parse("bob@x.example").expect("jid");
    // bob's first message (the fake homeserver names every post `$sent`).
    let mut first = h.message("b1", "first", &acks);
    if let RemoteEvent::Message { relations, .. } = &mut first {
        relations.markable = true;
    }
    h.inject(first).await;
    assert!(
        h.store
            .event_of(&bob_key(), "b1")
            .expect("store")
            .is_some_and(|m| m.markable)
    );

    // A reply with its quote: a Matrix reply without the quote.
    let mut reply = h.message("b2", "> first\nan answer", &acks);
    if let RemoteEvent::Message { relations, .. } = &mut reply {
        relations.reply_to = Some("b1".into());
        relations.reply_fallback = Some(0..8);
    }
    h.inject(reply).await;
    // A reply to a message never seen keeps its quote.
    let mut stray = h.message("b3", "> who?\nanswer to nothing", &acks);
    if let RemoteEvent::Message { relations, .. } = &mut stray {
        relations.reply_to = Some("unknown".into());
        relations.reply_fallback = Some(0..7);
    }
    h.inject(stray).await;
    let posts: Vec<(String, Option<String>)> = h
        .matrix
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Send {
                user,
                body,
                reply_to,
                ..
            } if user == BOB_GHOST => Some((body, reply_to)),
            _ => None,
        })
        .filter(|(body, _)| !body.contains("re-encrypt"))
        .collect();
    assert!(
        posts.contains(&("an answer".into(), Some("$sent:hs.example".into()))),
        "{posts:?}"
    );
    assert!(
        posts.contains(&("> who?\nanswer to nothing".into(), None)),
        "{posts:?}"
    );

    // A correction becomes an edit of the first message.
    let mut correction = h.message("b4", "first!", &acks);
    if let RemoteEvent::Message { relations, .. } = &mut correction {
        relations.replaces = Some("b1".into());
    }
    h.inject(correction).await;
    let edits: Vec<Value> = h
        .events_of("m.room.message")
        .into_iter()
        .map(|(_, content)| content)
        .collect();
    let edit = edits.last().expect("an edit");
    assert_eq!(edit["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["m.new_content"]["body"], "first!");

    // Reactions: the contact's set replaces the one before (one present already).
    h.in_history(
        &room,
        reaction("$g1", BOB_GHOST, r, "$sent:hs.example", "👍"),
    );
    let signals = |signals: Vec<Signal>| RemoteEvent::Signals {
        contact: bob(),
        signals,
        ack: Box::new(FakeAck(acks.clone())),
    };
    h.inject(signals(vec![Signal::Reactions {
        to: "b1".into(),
        keys: vec!["🎉".into(), "🎉".into()],
    }]))
    .await;
    let reactions: Vec<Value> = h
        .events_of("m.reaction")
        .into_iter()
        .filter_map(|(user, content)| (user == BOB_GHOST).then_some(content))
        .collect();
    assert_eq!(reactions.len(), 1, "{reactions:?}");
    assert_eq!(reactions[0]["m.relates_to"]["key"], "🎉");
    let redacted = |id: &str| {
        h.matrix
            .calls()
            .contains(&Call::Redact(BOB_GHOST.into(), r.into(), id.into()))
    };
    assert!(redacted("$g1"), "the reaction taken back stays");

    // A retraction of the contact's message redacts it; a read marker becomes a receipt;
    // typing is coalesced.
    h.inject(signals(vec![
        Signal::Retract { id: "b2".into() },
        Signal::Displayed { id: "b1".into() },
        Signal::Typing(Typing::Composing),
        Signal::Typing(Typing::Composing),
        Signal::Typing(Typing::Paused),
    ]))
    .await;
    assert!(redacted("$sent:hs.example"));
    let calls = h.matrix.calls();
    assert!(calls.contains(&Call::Receipt(
        BOB_GHOST.into(),
        r.into(),
        "$sent:hs.example".into()
    )));
    let typing: Vec<bool> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Typing(_, _, typing) => Some(*typing),
            _ => None,
        })
        .collect();
    // After each posted message the ghost's typing is cleared only if it was typing.
    assert_eq!(typing, [true, false]);
}

/// A contact's delivery receipt for the user's message: a `com.beeper.message_send_status`
/// event on it when `message_status` is on, nothing when it is off (the default).
#[tokio::test]
async fn a_delivery_receipt_marks_the_users_message_only_when_message_status_is_on() {
    for on in [true, false] {
        let h = harness_tuned(FakeMatrix::default(), FakeNetwork::default(), |s| {
            s.message_status = on;
        });
        let room = h.linked_with_bob_portal().await;
        let r = room.as_str();
        h.txn("1", vec![text("$m1", ALICE, r, "hello")]).await;
        assert_eq!(h.texts_to_bob(), ["hello"]);
        let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ours = derived_id(&["out", "$m1"]);
        h.inject(RemoteEvent::Signals {
            contact: RemoteUserId::parse("bob@x.example").expect("jid"),
            signals: vec![
                Signal::Received { id: ours },
                // A receipt for a message never bridged is ignored either way.
                Signal::Received {
                    id: "unknown".into(),
                },
            ],
            ack: Box::new(FakeAck(acks.clone())),
        })
        .await;
        let statuses = h.events_of("com.beeper.message_send_status");
        if on {
            assert_eq!(statuses.len(), 1, "{statuses:?}");
            assert_eq!(statuses[0].0, BOB_GHOST);
            assert_eq!(statuses[0].1["m.relates_to"]["event_id"], "$m1");
            assert_eq!(statuses[0].1["status"], "SUCCESS");
        } else {
            assert!(statuses.is_empty(), "{statuses:?}");
        }
        assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
