//! Replies, edits, reactions, retractions, read markers, delivery receipts and typing, both
//! ways, end to end: real Synapse, real Prosody, the python-omemo peer sending and reading the
//! stanzas Conversations sends (XEP-0461 with its XEP-0428 fallback, XEP-0308, XEP-0444,
//! XEP-0424, XEP-0333, XEP-0184, XEP-0085), and the Matrix side over plain HTTP.
//!
//! - `relations_cross_both_ways`: each kind, each way, in one portal; then the contact's
//!   presence on their ghost.
//! - `relations_cross_an_encrypted_portal`: the same in an encrypted portal, the Matrix user
//!   being matrix-nio (vodozemac): replies, edits and reactions travel Megolm-encrypted, the
//!   bridge decrypts them (and reads back its ghost's own encrypted reactions and quotes).
//! - `a_burst_of_messages_each_edited_and_reacted_to_keeps_every_relation_on_its_message`:
//!   200 messages from the contact, each followed at once by its correction and a reaction.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser, encode};
use serde_json::{Value, json};
use test_world::MatrixPeer;

/// Sends any event as `user`; returns its id.
async fn send_event(user: &MatrixUser, room: &str, kind: &str, content: Value) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/{kind}/{txn}",
        encode(room)
    );
    let (status, out) = user.call("PUT", &path, Some(content)).await;
    assert_eq!(status, 200, "send {kind}: {out}");
    out["event_id"].as_str().expect("event id").to_owned()
}

async fn redact(user: &MatrixUser, room: &str, event: &str) {
    let txn = format!("r{}", rand::random::<u64>());
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
        encode(room),
        encode(event)
    );
    let (status, out) = user.call("PUT", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "redact: {out}");
}

/// Waits for the peer's next `meta` event that `pick` accepts.
async fn wait_meta(peer: &mut OmemoPeer, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    peer.wait_event(what, WAIT, |e| e["event"] == "meta" && pick(e))
        .await
}

/// Waits for the peer's next decrypted message; returns it.
async fn next_received(peer: &mut OmemoPeer) -> Value {
    peer.wait_received(1, WAIT).await.remove(0)
}

/// Syncs as `user` until an ephemeral event of `room` matches `pick`.
async fn wait_ephemeral(user: &MatrixUser, room: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut since: Option<String> = None;
    loop {
        let mut path = "/_matrix/client/v3/sync?timeout=2000".to_owned();
        if let Some(token) = &since {
            path.push_str(&format!("&since={}", encode(token)));
        }
        let (status, out) = user.call("GET", &path, None).await;
        assert_eq!(status, 200, "sync: {out}");
        let events = out["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(found) = events.into_iter().find(|e| pick(e)) {
            return found;
        }
        since = out["next_batch"].as_str().map(str::to_owned);
        assert!(
            Instant::now() < deadline,
            "no matching ephemeral event in {room}"
        );
    }
}

/// The room's events of `kind` from `sender` (newest last).
async fn events_of(user: &MatrixUser, room: &str, kind: &str, sender: &str) -> Vec<Value> {
    user.events(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == kind && e["sender"] == sender)
        .collect()
}

/// Whether `event` is redacted now.
async fn is_redacted(user: &MatrixUser, room: &str, event: &str) -> bool {
    let (status, body) = user.event(room, event).await;
    status == 200 && body["content"].as_object().is_none_or(|c| c.is_empty())
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relations_cross_both_ways() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    // Delivery receipts as `com.beeper.message_send_status` events (off by default).
    let config = std::fs::read_to_string(&files.config).expect("config");
    let on = config.replace(
        "message_status_events = false\n",
        "message_status_events = true\n",
    );
    assert_ne!(
        on, config,
        "the generated config names message_status_events"
    );
    std::fs::write(&files.config, on).expect("config");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    // Bob's client announces (XEP-0115) all of it but reactions: the portal is told once.
    let mut bob = OmemoPeer::start(
        &world,
        "bob",
        &["--without-feature", "urn:xmpp:reactions:0"],
    )
    .await;
    let bob_ghost = ghost(&jid("bob"));
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;

    // A message each way; ours asks for a read marker and a delivery receipt.
    let m1 = alice.send_text(&room, "first from alice").await;
    let got = next_received(&mut bob).await;
    assert_eq!(got["body"], "first from alice");
    assert_eq!(got["markable"], true, "{got}");
    assert_eq!(got["receipt_request"], true, "{got}");
    let m1_id = got["id"].as_str().expect("id").to_owned();
    bob.command(json!({"cmd": "send", "to": jid("alice"), "text": "hello alice", "id": "b1", "markable": true}))
        .await;
    let b1 = alice
        .wait_for_message(&room, &bob_ghost, "hello alice")
        .await;
    let b1 = b1["event_id"].as_str().expect("id").to_owned();

    // The contact's client answered our delivery receipt request: the message is marked
    // delivered (com.beeper.message_send_status from the ghost).
    let status = alice
        .wait_for_event(&room, |e| {
            e["type"] == "com.beeper.message_send_status"
                && e["content"]["m.relates_to"]["event_id"] == m1.as_str()
        })
        .await;
    assert_eq!(status["sender"], bob_ghost.as_str());

    // Replies: XMPP → Matrix loses its quote and points at our message.
    bob.command(json!({"cmd": "send", "to": jid("alice"), "text": "a reply from bob",
        "id": "b2", "reply_to": m1_id, "reply_to_jid": jid("alice"), "fallback": "first from alice"}))
        .await;
    let reply = alice
        .wait_for_message(&room, &bob_ghost, "a reply from bob")
        .await;
    assert_eq!(reply["content"]["body"], "a reply from bob", "{reply}");
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        m1.as_str()
    );
    // Matrix → XMPP names bob's message and quotes it for clients without replies.
    send_event(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "a reply from alice",
        "m.relates_to": {"m.in_reply_to": {"event_id": b1}}}),
    )
    .await;
    let got = next_received(&mut bob).await;
    assert_eq!(got["reply_to"]["id"], "b1", "{got}");
    let body = got["body"].as_str().expect("body");
    assert!(body.starts_with("> hello alice\n"), "{body}");
    assert!(body.ends_with("a reply from alice"), "{body}");
    let fallback = got["fallback"].as_array().expect("a fallback range");
    assert_eq!(fallback[0], 0);
    assert_eq!(fallback[1], "> hello alice\n".chars().count());

    // Edits: a correction of b1 becomes an edit of its event; an edit of m1 a correction.
    bob.command(json!({"cmd": "send", "to": jid("alice"), "text": "hello alice (edited)", "id": "b3", "replace": "b1"}))
        .await;
    let edit = alice
        .wait_for_event(&room, |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == b1.as_str()
        })
        .await;
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "hello alice (edited)"
    );
    send_event(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* first from alice, fixed",
        "m.new_content": {"msgtype": "m.text", "body": "first from alice, fixed"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": m1}}),
    )
    .await;
    let got = next_received(&mut bob).await;
    assert_eq!(got["body"], "first from alice, fixed");
    assert_eq!(got["replace"], m1_id.as_str(), "{got}");

    // Reactions from the contact: a set, then a smaller set.
    bob.command(json!({"cmd": "react", "to": jid("alice"), "id": m1_id, "emojis": ["👍", "🎉"]}))
        .await;
    until("bob's two reactions", async || {
        let keys: Vec<Value> = events_of(&alice, &room, "m.reaction", &bob_ghost)
            .await
            .iter()
            .map(|e| e["content"]["m.relates_to"]["key"].clone())
            .collect();
        keys.contains(&json!("👍")) && keys.contains(&json!("🎉"))
    })
    .await;
    let thumbs = events_of(&alice, &room, "m.reaction", &bob_ghost)
        .await
        .into_iter()
        .find(|e| e["content"]["m.relates_to"]["key"] == "👍")
        .expect("👍");
    assert_eq!(thumbs["content"]["m.relates_to"]["event_id"], m1.as_str());
    let thumbs = thumbs["event_id"].as_str().expect("id").to_owned();
    bob.command(json!({"cmd": "react", "to": jid("alice"), "id": m1_id, "emojis": ["🎉"]}))
        .await;
    until("bob's 👍 taken back", async || {
        is_redacted(&alice, &room, &thumbs).await
    })
    .await;

    // Reactions from the user: the whole set each time; a redaction takes one back.
    let relates = |key: &str| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": b1, "key": key}});
    let r1 = send_event(&alice, &room, "m.reaction", relates("👍")).await;
    let got = wait_meta(&mut bob, "alice's 👍", |e| e.get("reactions").is_some()).await;
    assert_eq!(got["reactions"], json!({"id": "b1", "emojis": ["👍"]}));
    send_event(&alice, &room, "m.reaction", relates("❤️")).await;
    let got = wait_meta(&mut bob, "alice's ❤️", |e| e.get("reactions").is_some()).await;
    let mut emojis: Vec<String> =
        serde_json::from_value(got["reactions"]["emojis"].clone()).expect("emojis");
    emojis.sort();
    assert_eq!(emojis, ["❤️", "👍"]);
    redact(&alice, &room, &r1).await;
    let got = wait_meta(&mut bob, "alice's 👍 taken back", |e| {
        e.get("reactions").is_some()
    })
    .await;
    assert_eq!(got["reactions"], json!({"id": "b1", "emojis": ["❤️"]}));
    until("the notice that bob's client lacks reactions", async || {
        let notices = unsupported_notices(&alice, &room, &bob_ghost).await;
        !notices.is_empty()
    })
    .await;

    // Read markers: bob's new markable message read by alice; alice's read by bob.
    bob.command(
        json!({"cmd": "send", "to": jid("alice"), "text": "read me", "id": "b4", "markable": true}),
    )
    .await;
    let b4 = alice.wait_for_message(&room, &bob_ghost, "read me").await;
    let b4 = b4["event_id"].as_str().expect("id").to_owned();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        encode(&room),
        encode(&b4)
    );
    let (status, out) = alice.call("POST", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "receipt: {out}");
    let got = wait_meta(&mut bob, "alice's read marker", |e| {
        e.get("displayed").is_some()
    })
    .await;
    assert_eq!(got["displayed"], "b4");
    let m2 = alice.send_text(&room, "did you read this?").await;
    let got = next_received(&mut bob).await;
    bob.command(json!({"cmd": "displayed", "to": jid("alice"), "id": got["id"]}))
        .await;
    wait_ephemeral(&alice, &room, |e| {
        e["type"] == "m.receipt"
            && e["content"][m2.as_str()]["m.read"][bob_ghost.as_str()].is_object()
    })
    .await;

    // Typing both ways.
    bob.command(json!({"cmd": "chatstate", "to": jid("alice"), "state": "composing"}))
        .await;
    wait_ephemeral(&alice, &room, |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.contains(&json!(bob_ghost)))
    })
    .await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        encode(&room),
        encode(&alice.user_id)
    );
    let (status, out) = alice
        .call(
            "PUT",
            &path,
            Some(json!({"typing": true, "timeout": 20000})),
        )
        .await;
    assert_eq!(status, 200, "typing: {out}");
    let got = wait_meta(&mut bob, "alice typing", |e| e.get("chat_state").is_some()).await;
    assert_eq!(got["chat_state"], "composing");

    // Retractions: alice redacts her message; bob retracts his.
    redact(&alice, &room, &m2).await;
    let got = wait_meta(&mut bob, "alice's retraction", |e| {
        e.get("retract").is_some()
    })
    .await;
    assert!(got["retract"].is_string(), "{got}");
    bob.command(json!({"cmd": "retract", "to": jid("alice"), "id": "b4"}))
        .await;
    until("b4 redacted", async || {
        is_redacted(&alice, &room, &b4).await
    })
    .await;

    // Presence: what bob's client announces shows on his ghost, and stays shown past the
    // homeserver's 30 s timeout while bob stays (the bridge sets it again).
    bob.presence(Some("away"), Some("at lunch"), false).await;
    let away = wait_presence(&alice, &bob_ghost, |p| {
        p["presence"] == "unavailable" && p["status_msg"] == "at lunch"
    })
    .await;
    assert_eq!(away["presence"], "unavailable", "{away}");
    bob.presence(None, Some("back"), false).await;
    wait_presence(&alice, &bob_ghost, |p| {
        p["presence"] == "online" && p["status_msg"] == "back"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let (status, still) = alice.call("GET", &presence_path(&bob_ghost), None).await;
    assert_eq!(
        (status, still["presence"].as_str()),
        (200, Some("online")),
        "{still}"
    );
    bob.presence(None, None, true).await;
    wait_presence(&alice, &bob_ghost, |p| p["presence"] == "offline").await;
    // Told once, and only about what bob's client lacks (replies, corrections and retractions
    // were sent too).
    let notices = unsupported_notices(&alice, &room, &bob_ghost).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("reactions"), "{notices:?}");

    bridge.stop();
    // Only ids were kept: no text, reaction or status of the run is in the store.
    let texts: Vec<String> = [
        "first from alice",
        "hello alice",
        "did you read this?",
        "read me",
        "at lunch",
        "❤️",
    ]
    .map(str::to_owned)
    .into();
    let found = find_in_dir(&files.dir.join("interop-bridge.db"), &texts);
    assert!(found.is_empty(), "stored: {found:?}");
}

/// The ghost's notices that the contact's client lacks a feature.
async fn unsupported_notices(user: &MatrixUser, room: &str, ghost: &str) -> Vec<String> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == ghost && e["content"]["msgtype"] == "m.notice")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .filter(|body| body.contains("client does not support"))
        .collect()
}

fn presence_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", encode(user))
}

/// Polls `user`'s presence as `viewer` sees it until `pick` accepts it.
async fn wait_presence(viewer: &MatrixUser, user: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, presence) = viewer.call("GET", &presence_path(user), None).await;
        if status == 200 && pick(&presence) {
            return presence;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s presence never matched: {status} {presence}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relations_cross_an_encrypted_portal() {
    let (world, files) = start_encrypted();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let bridge = BridgeProcess::start(&files);
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&jid("bob"));
    add_to_roster_from_phone(&world, "alice", &mut bob).await;
    let mut alice = MatrixPeer::start(&world, "alice", &["--auto-join"]).await;
    link_jid(&files, &alice.user_id, "alice", &domain);
    let deadline = Instant::now() + WAIT;
    while alice.devices(&bob_ghost).await.is_empty() {
        assert!(Instant::now() < deadline, "the ghost got no device");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let room = alice.create_dm(&bob_ghost, true).await;
    // Bob was online before the portal existed: his ghost shows it once the portal is open
    // (read as the ghost, through the appservice).
    let token = files.registration_value("as_token");
    let url = format!(
        "{}/_matrix/client/v3/presence/{}/status?user_id={}",
        world.synapse_url(),
        encode(&bob_ghost),
        encode(&bob_ghost)
    );
    let http = reqwest::Client::new();
    until("bob's ghost online", async || {
        let (status, presence) = common::call(&http, "GET", &url, Some(&token), None).await;
        status == 200 && presence["presence"] == "online"
    })
    .await;
    let m1 = alice.send(&room, "hello bob, encrypted").await;
    let got = next_received(&mut bob).await;
    // Without `message_status_events` (the default) no delivery receipt is asked for.
    assert_ne!(got["receipt_request"], true, "{got}");
    assert_eq!(got["markable"], true, "{got}");
    let m1_id = got["id"].as_str().expect("id").to_owned();
    bob.command(json!({"cmd": "send", "to": jid("alice"), "text": "hi alice", "id": "b1", "markable": true}))
        .await;
    // The ghost's first message is the portal's notice; bob's is the one with his text.
    let b1 = alice
        .wait_event("bob's first message", WAIT, |e| {
            e["event"] == "message" && e["body"] == "hi alice"
        })
        .await;
    assert_eq!(b1["encrypted"], true);
    let b1 = b1["event_id"].as_str().expect("id").to_owned();

    // The user's reply, edit, reaction and its redaction, all but the redaction encrypted.
    alice
        .send_content(
            &room,
            json!({"msgtype": "m.text", "body": "answer from alice",
            "m.relates_to": {"m.in_reply_to": {"event_id": b1}}}),
        )
        .await;
    let got = next_received(&mut bob).await;
    assert_eq!(got["reply_to"]["id"], "b1", "{got}");
    assert_eq!(
        got["body"], "> hi alice\nanswer from alice",
        "the quote read back from Megolm"
    );
    alice
        .send_content(
            &room,
            json!({"msgtype": "m.text", "body": "* hello bob, edited",
            "m.new_content": {"msgtype": "m.text", "body": "hello bob, edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": m1}}),
        )
        .await;
    let got = next_received(&mut bob).await;
    assert_eq!(
        (got["body"].as_str(), got["replace"].as_str()),
        (Some("hello bob, edited"), Some(m1_id.as_str()))
    );
    let reaction = alice
        .send_event(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": b1, "key": "👍"}}),
        )
        .await;
    let got = wait_meta(&mut bob, "alice's encrypted reaction", |e| {
        e.get("reactions").is_some()
    })
    .await;
    assert_eq!(got["reactions"], json!({"id": "b1", "emojis": ["👍"]}));
    alice.redact(&room, &reaction).await;
    let got = wait_meta(&mut bob, "alice's reaction taken back", |e| {
        e.get("reactions").is_some()
    })
    .await;
    assert_eq!(got["reactions"], json!({"id": "b1", "emojis": []}));

    // The contact's reply, correction, reaction and retraction, seen decrypted by nio.
    bob.command(
        json!({"cmd": "send", "to": jid("alice"), "text": "bob answers", "id": "b2",
        "reply_to": m1_id, "fallback": "hello bob, edited"}),
    )
    .await;
    let reply = alice
        .wait_event("bob's reply", WAIT, |e| {
            e["event"] == "message" && e["body"] == "bob answers"
        })
        .await;
    assert_eq!(reply["encrypted"], true);
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        m1.as_str()
    );
    bob.command(json!({"cmd": "send", "to": jid("alice"), "text": "hi alice!", "id": "b3", "replace": "b1"}))
        .await;
    let edit = alice
        .wait_event("bob's correction", WAIT, |e| {
            e["event"] == "message"
                && e["sender"] == bob_ghost.as_str()
                && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], b1.as_str());
    assert_eq!(edit["content"]["m.new_content"]["body"], "hi alice!");
    bob.command(json!({"cmd": "react", "to": jid("alice"), "id": m1_id, "emojis": ["🎉"]}))
        .await;
    let reacted = alice
        .wait_event("bob's reaction", WAIT, |e| {
            e["event"] == "other" && e["type"] == "m.reaction" && e["sender"] == bob_ghost.as_str()
        })
        .await;
    assert_eq!(reacted["encrypted"], true, "{reacted}");
    assert_eq!(reacted["content"]["m.relates_to"]["key"], "🎉");
    assert_eq!(reacted["content"]["m.relates_to"]["event_id"], m1.as_str());
    bob.command(json!({"cmd": "retract", "to": jid("alice"), "id": "b1"}))
        .await;
    alice
        .wait_event("bob's retraction", WAIT, |e| {
            e["event"] == "redaction" && e["redacts"] == b1.as_str()
        })
        .await;
    // The user's own message retracted.
    alice.redact(&room, &m1).await;
    let got = wait_meta(&mut bob, "alice's retraction", |e| {
        e.get("retract").is_some()
    })
    .await;
    assert_eq!(got["retract"], m1_id.as_str());
    bridge.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_messages_each_edited_and_reacted_to_keeps_every_relation_on_its_message() {
    const COUNT: usize = 200;
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&jid("bob"));
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;

    for i in 0..COUNT {
        let id = format!("m{i}");
        bob.command(
            json!({"cmd": "send", "to": jid("alice"), "text": format!("burst {i}"), "id": id}),
        )
        .await;
        bob.command(json!({"cmd": "send", "to": jid("alice"), "text": format!("burst {i} edited"), "id": format!("e{i}"), "replace": id}))
            .await;
        bob.command(json!({"cmd": "react", "to": jid("alice"), "id": id, "emojis": [format!("{}", i % 10)]}))
            .await;
    }
    bob.ping().await;
    // Every message, edit and reaction, read back from the whole timeline.
    let deadline = Instant::now() + Duration::from_secs(300);
    let timeline = loop {
        let timeline = alice.all_events(&room).await;
        let reactions = timeline
            .iter()
            .filter(|e| e["type"] == "m.reaction")
            .count();
        if reactions >= COUNT {
            break timeline;
        }
        assert!(
            Instant::now() < deadline,
            "only {reactions} reactions of {COUNT} arrived"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut originals = std::collections::HashMap::new();
    let mut order = Vec::new();
    for e in timeline
        .iter()
        .filter(|e| e["sender"] == bob_ghost.as_str())
    {
        let body = e["content"]["body"].as_str().unwrap_or_default();
        let relates = &e["content"]["m.relates_to"];
        if e["type"] == "m.room.message" && relates.is_null() && body.starts_with("burst ") {
            let n: usize = body["burst ".len()..].parse().expect("a number");
            originals.insert(e["event_id"].as_str().expect("id").to_owned(), n);
            order.push(n);
        }
    }
    assert_eq!(
        order,
        (0..COUNT).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let mut edited = vec![0; COUNT];
    let mut reacted = vec![0; COUNT];
    let position = |id: &str| timeline.iter().position(|e| e["event_id"] == id);
    for (at, e) in timeline
        .iter()
        .enumerate()
        .filter(|(_, e)| e["sender"] == bob_ghost.as_str())
    {
        let relates = &e["content"]["m.relates_to"];
        let Some(target) = relates["event_id"].as_str() else {
            continue;
        };
        let n = *originals
            .get(target)
            .unwrap_or_else(|| panic!("a relation to an unknown event: {e}"));
        assert!(
            position(target).is_some_and(|p| p < at),
            "a relation before its message: {e}"
        );
        match relates["rel_type"].as_str() {
            Some("m.replace") => {
                assert_eq!(
                    e["content"]["m.new_content"]["body"],
                    format!("burst {n} edited")
                );
                edited[n] += 1;
            }
            Some("m.annotation") => {
                assert_eq!(relates["key"], format!("{}", n % 10));
                reacted[n] += 1;
            }
            other => panic!("unexpected relation {other:?}: {e}"),
        }
    }
    assert!(
        edited.iter().all(|c| *c == 1),
        "edits per message: {edited:?}"
    );
    assert!(
        reacted.iter().all(|c| *c == 1),
        "reactions per message: {reacted:?}"
    );
    bridge.stop();
}
