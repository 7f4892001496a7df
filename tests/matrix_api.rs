//! `MatrixClient`'s room calls against a real Synapse that loaded our registration (no bridge
//! process runs): a ghost opens a DM with a real user, edits, redacts and sets state in it; the
//! bot makes a space; invites and leaves are idempotent. Synapse's own answers for the repeated
//! calls are checked too, since the client relies on them.

mod common;

use common::{BridgeFiles, MatrixUser, World, call, encode};
use interop_bridge::config::Secret;
use interop_bridge::core::{MatrixApi, NewRoom, NewState};
use interop_bridge::matrix::{MatrixClient, RetryPolicy};
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{OwnedTransactionId, OwnedUserId, UserId};
use serde_json::{Value, json};

const BOT: &str = "@interopbot:localhost";
const GHOST_LOCALPART: &str = "interop_bob=40xmpp.test";

fn user(id: &str) -> OwnedUserId {
    UserId::parse(id).expect("user id")
}

/// A transaction id not used before in this process.
fn txn() -> OwnedTransactionId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t{nanos}.{}", NEXT.fetch_add(1, Ordering::Relaxed)).into()
}

/// The user's own `m.room.member` event among an invite's stripped state.
fn own_member<'a>(invite_state: &'a [Value], user_id: &str) -> &'a Value {
    invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user_id)
        .unwrap_or_else(|| panic!("no member event for {user_id}: {invite_state:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn room_calls_work_against_synapse() {
    let mut files = None;
    let world = World::start("synapse", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let reg = f.registration.clone();
        files = Some(f);
        vec![reg]
    });
    let files = files.expect("prepared");
    let as_token = files.registration_value("as_token");
    let client = MatrixClient::connect(
        &world.synapse_url(),
        Secret::new(as_token.clone()),
        RetryPolicy::default(),
    )
    .await
    .expect("connect");
    // The appservice's own view, over plain HTTP, to see Synapse's raw answers.
    let raw = |method: &'static str, path: String, acting_as: &str, body: Option<Value>| {
        let url = format!(
            "{}{path}?user_id={}",
            world.synapse_url(),
            encode(acting_as)
        );
        let token = as_token.clone();
        async move { call(&reqwest::Client::new(), method, &url, Some(&token), body).await }
    };

    let bot = user(BOT);
    let ghost = user(&format!("@{GHOST_LOCALPART}:localhost"));
    for localpart in ["interopbot", GHOST_LOCALPART, GHOST_LOCALPART] {
        client
            .ensure_registered(localpart)
            .await
            .unwrap_or_else(|e| panic!("register {localpart}: {e}"));
    }
    let alice = MatrixUser::register(&world, "alice").await;
    let alice_id = user(&alice.user_id);

    // A DM from the ghost: is_direct on the invite, the bridge state set at creation.
    let bridge_state = NewState {
        event_type: "m.bridge".into(),
        state_key: "net.interop.xmpp/bob@xmpp.test".into(),
        content: json!({
            "bridgebot": BOT,
            "protocol": {"id": "xmpp", "displayname": "XMPP"},
            "channel": {"id": "bob@xmpp.test"},
        }),
    };
    let dm = client
        .create_room(
            &ghost,
            &NewRoom {
                name: Some("bob".into()),
                topic: Some("XMPP chat with bob@xmpp.test".into()),
                invite: vec![alice_id.clone()],
                is_direct: true,
                initial_state: vec![bridge_state.clone()],
                admins: vec![bot.clone()],
                ..NewRoom::default()
            },
        )
        .await
        .expect("create DM");
    let invite = alice.wait_for_invite(dm.as_str()).await;
    let member = own_member(&invite, &alice.user_id);
    assert_eq!(member["content"]["membership"], "invite", "{member}");
    assert_eq!(member["content"]["is_direct"], true, "{member}");
    assert_eq!(member["sender"], ghost.as_str());
    alice.join(dm.as_str()).await;

    let (status, state) = alice
        .state(dm.as_str(), "m.bridge", &bridge_state.state_key)
        .await;
    assert_eq!((status, &state), (200, &bridge_state.content));
    let (_, name) = alice.state(dm.as_str(), "m.room.name", "").await;
    assert_eq!(name["name"], "bob");
    let (_, topic) = alice.state(dm.as_str(), "m.room.topic", "").await;
    assert_eq!(topic["topic"], "XMPP chat with bob@xmpp.test");
    let (_, join_rules) = alice.state(dm.as_str(), "m.room.join_rules", "").await;
    assert_eq!(join_rules["join_rule"], "invite");
    // Power: the bot (an admin) at 100, the other levels as the preset has them. The creator, and with
    // trusted_private_chat the invitee, have full power: from room version 12 on as
    // (additional) creators, before that at 100 in `users`.
    let (_, create) = alice.state(dm.as_str(), "m.room.create", "").await;
    let (_, levels) = alice.state(dm.as_str(), "m.room.power_levels", "").await;
    assert_eq!(levels["users"][BOT], 100, "{levels}");
    assert_eq!(levels["events_default"], 0, "{levels}");
    assert_eq!(levels["state_default"], 50, "{levels}");
    // (the private presets let anyone in the room invite)
    assert_eq!(levels["invite"], 0, "{levels}");
    if create["room_version"] == "12" {
        assert_eq!(
            create["additional_creators"],
            json!([alice.user_id]),
            "{create}"
        );
        let users = levels["users"].as_object().expect("users");
        assert_eq!(users.len(), 1, "creators are not listed: {levels}");
    } else {
        assert_eq!(levels["users"][ghost.as_str()], 100, "{levels}");
        assert_eq!(levels["users"][alice.user_id.as_str()], 100, "{levels}");
    }

    let mut members = client.joined_members(&ghost, &dm).await.expect("members");
    members.sort();
    let mut want = vec![ghost.clone(), alice_id.clone()];
    want.sort();
    assert_eq!(members, want);

    // A message, its edit, a custom event; then the message redacted with a reason.
    let original = client
        .send_message(
            &ghost,
            &dm,
            &txn(),
            &RoomMessageEventContent::text_plain("hello from bob"),
        )
        .await
        .expect("send");
    let edit = json!({
        "msgtype": "m.text",
        "body": "* hello again from bob",
        "m.new_content": {"msgtype": "m.text", "body": "hello again from bob"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    });
    let edit_txn = txn();
    let edit_id = client
        .send_event(&ghost, &dm, "m.room.message", &edit_txn, &edit)
        .await
        .expect("edit");
    // The same transaction id again has effect once.
    let again = client
        .send_event(&ghost, &dm, "m.room.message", &edit_txn, &edit)
        .await
        .expect("edit retried");
    assert_eq!(again, edit_id);
    let seen = alice
        .wait_for_event(dm.as_str(), |e| e["event_id"] == edit_id.as_str())
        .await;
    assert_eq!(seen["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(
        seen["content"]["m.relates_to"]["event_id"],
        original.as_str()
    );
    assert_eq!(
        seen["content"]["m.new_content"]["body"],
        "hello again from bob"
    );
    assert_eq!(seen["sender"], ghost.as_str());
    let custom_txn = txn();
    let custom = client
        .send_event(
            &ghost,
            &dm,
            "net.interop.test",
            &custom_txn,
            &json!({"n": 7}),
        )
        .await
        .expect("custom event");
    let seen = alice
        .wait_for_event(dm.as_str(), |e| e["event_id"] == custom.as_str())
        .await;
    assert_eq!(seen["type"], "net.interop.test");
    // Every event carries its transaction id, so a send whose answer was lost can be found.
    assert_eq!(
        seen["content"],
        json!({"n": 7, (interop_bridge::core::TXN_FIELD): custom_txn.as_str()})
    );

    let (status, before) = alice.event(dm.as_str(), original.as_str()).await;
    assert_eq!(status, 200);
    assert_eq!(before["content"]["body"], "hello from bob");
    client
        .redact(&ghost, &dm, &original, &txn(), Some("retracted on XMPP"))
        .await
        .expect("redact");
    let (status, after) = alice.event(dm.as_str(), original.as_str()).await;
    assert_eq!(status, 200);
    assert_eq!(after["content"], json!({}), "{after}");
    let because = &after["unsigned"]["redacted_because"];
    assert_eq!(because["sender"], ghost.as_str(), "{after}");
    assert_eq!(because["content"]["reason"], "retracted on XMPP", "{after}");

    // Custom state, then replaced.
    for n in [1, 2] {
        let state = NewState {
            event_type: "net.interop.test.state".into(),
            state_key: "k".into(),
            content: json!({"n": n}),
        };
        client
            .send_state(&ghost, &dm, &state)
            .await
            .expect("send state");
        let (status, content) = alice
            .state(dm.as_str(), "net.interop.test.state", "k")
            .await;
        assert_eq!((status, content), (200, json!({"n": n})));
    }
    // An empty state key works too.
    let empty_key = NewState {
        event_type: "net.interop.test.state".into(),
        state_key: String::new(),
        content: json!({"empty": true}),
    };
    client
        .send_state(&ghost, &dm, &empty_key)
        .await
        .expect("send state, empty key");
    let (status, content) = alice.state(dm.as_str(), "net.interop.test.state", "").await;
    assert_eq!((status, content), (200, json!({"empty": true})));

    // Re-inviting a joined user: Synapse answers 403 M_FORBIDDEN "… is already in the room.",
    // which the client takes as success.
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", encode(dm.as_str()));
    let (status, out) = raw(
        "POST",
        invite_path,
        ghost.as_str(),
        Some(json!({"user_id": alice.user_id})),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["errcode"], "M_FORBIDDEN", "{out}");
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|m| m.contains("is already in the room")),
        "{out}"
    );
    client
        .invite(&ghost, &dm, &alice_id, Some("again"))
        .await
        .expect("inviting a member is success");

    // A space made by the bot: creation type m.space; the user invited with a reason and made
    // an admin; the bot keeps full power as its creator.
    let space = client
        .create_room(
            &bot,
            &NewRoom {
                name: Some("XMPP".into()),
                space: true,
                admins: vec![alice_id.clone()],
                ..NewRoom::default()
            },
        )
        .await
        .expect("create space");
    client
        .invite(&bot, &space, &alice_id, Some("your XMPP contacts"))
        .await
        .expect("invite");
    let invite = alice.wait_for_invite(space.as_str()).await;
    let member = own_member(&invite, &alice.user_id);
    assert_eq!(
        member["content"]["reason"], "your XMPP contacts",
        "{member}"
    );
    assert!(member["content"].get("is_direct").is_none(), "{member}");
    let create = invite
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .expect("create event in the invite");
    assert_eq!(create["content"]["type"], "m.space", "{create}");
    assert_eq!(create["sender"], BOT, "{create}");
    // Inviting again, with the same reason or another: Synapse answers 200 (the same invite
    // again, or a new invite event).
    for reason in ["your XMPP contacts", "your XMPP contacts, again"] {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(space.as_str()));
        let body = json!({"user_id": alice.user_id, "reason": reason});
        let (status, out) = raw("POST", path, BOT, Some(body)).await;
        assert_eq!(status, 200, "re-invite: {out}");
        client
            .invite(&bot, &space, &alice_id, Some(reason))
            .await
            .expect("inviting an invited user is success");
    }
    alice.join(space.as_str()).await;
    let (status, create) = alice.state(space.as_str(), "m.room.create", "").await;
    assert_eq!(status, 200);
    assert_eq!(create["type"], "m.space", "{create}");
    let (_, levels) = alice.state(space.as_str(), "m.room.power_levels", "").await;
    assert_eq!(levels["users"][alice.user_id.as_str()], 100, "{levels}");
    if create["room_version"] == "12" {
        assert!(levels["users"].get(BOT).is_none(), "{levels}");
    } else {
        assert_eq!(levels["users"][BOT], 100, "{levels}");
    }
    let mut members = client.joined_members(&bot, &space).await.expect("members");
    members.sort();
    let mut want = vec![bot.clone(), alice_id.clone()];
    want.sort();
    assert_eq!(members, want);

    // Leaving twice: the second leave is the same membership again, which Synapse answers with
    // 200 (the earlier event); never joined: 403 M_FORBIDDEN "… not in room …"; a room the
    // server does not know: 404. The client takes all of them as success.
    client.leave_room(&ghost, &dm).await.expect("leave");
    let leave_path = |room: &str| format!("/_matrix/client/v3/rooms/{}/leave", encode(room));
    let (status, out) = raw(
        "POST",
        leave_path(dm.as_str()),
        ghost.as_str(),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "second leave: {out}");
    client.leave_room(&ghost, &dm).await.expect("leave again");
    let (status, out) = raw(
        "POST",
        leave_path(space.as_str()),
        ghost.as_str(),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403, "leave without membership: {out}");
    assert_eq!(out["errcode"], "M_FORBIDDEN", "{out}");
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|m| m.contains("not in room")),
        "{out}"
    );
    client
        .leave_room(&ghost, &space)
        .await
        .expect("leaving a room never joined");
    let unknown = ruma::room_id!("!nosuchroom:localhost");
    let (status, out) = raw(
        "POST",
        leave_path(unknown.as_str()),
        ghost.as_str(),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404, "leave an unknown room: {out}");
    client
        .leave_room(&ghost, unknown)
        .await
        .expect("leaving an unknown room");
    let members = client.joined_members(&bot, &dm).await;
    assert!(members.is_err(), "the bot is not in the DM: {members:?}");
    let path = format!(
        "/_matrix/client/v3/rooms/{}/joined_members",
        encode(dm.as_str())
    );
    let (status, out) = alice.call("GET", &path, None).await;
    assert_eq!(status, 200, "{out}");
    let joined: Vec<&String> = out["joined"].as_object().expect("joined").keys().collect();
    assert_eq!(joined, [&alice.user_id]);

    // Errors still surface: a ghost cannot send into a room it left.
    let err = client
        .send_event(&ghost, &dm, "net.interop.test", &txn(), &json!({}))
        .await
        .expect_err("not in the room");
    assert_eq!(err.errcode(), Some("M_FORBIDDEN"), "{err}");
}
