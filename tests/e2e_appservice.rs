//! Foundation acceptance against a real Synapse that loaded the registration our binary wrote:
//! the bot joins a DM and answers `help`; ghosts are provisioned through the user query;
//! transactions take effect once (also across a restart), a wrong hs_token changes nothing, and
//! one malformed event does not stop the others.

mod common;

use common::{BridgeFiles, BridgeProcess, MatrixUser, World, call, encode};
use serde_json::{Value, json};

const BOT: &str = "@interopbot:localhost";

fn start() -> (World, BridgeFiles) {
    let mut files = None;
    let world = World::start("synapse", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let reg = f.registration.clone();
        files = Some(f);
        vec![reg]
    });
    (world, files.expect("prepared"))
}

/// Opens a DM with the bot and waits for its welcome; returns the room.
async fn management_room(user: &MatrixUser) -> String {
    let room = user.create_dm(BOT).await;
    user.wait_for_membership(&room, BOT, "join").await;
    user.wait_for_message(&room, BOT, "management room").await;
    room
}

#[tokio::test(flavor = "multi_thread")]
async fn bot_answers_help_and_ghosts_are_provisioned() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;

    // Synapse loaded the generated registration: it can ping the bridge.
    let as_token = files.registration_value("as_token");
    let ping = format!(
        "{}/_matrix/client/v1/appservice/interop/ping",
        world.synapse_url()
    );
    let (status, out) = call(&alice.http, "POST", &ping, Some(&as_token), Some(json!({}))).await;
    assert_eq!(status, 200, "appservice ping: {out}");

    let room = management_room(&alice).await;
    alice.send_text(&room, "help").await;
    let reply = alice.wait_for_message(&room, BOT, "Commands").await;
    assert_eq!(reply["content"]["msgtype"], "m.notice");
    for command in ["help", "version"] {
        assert!(
            reply["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(command)),
            "{reply}"
        );
    }
    let (_, profile) = alice
        .call(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", encode(BOT)),
            None,
        )
        .await;
    assert_eq!(profile["displayname"], "Interop bridge bot");

    // A ghost in the namespace: inviting it makes Synapse query the bridge (the user is unknown),
    // which registers it and names it after its JID.
    let ghost = "@interop_bob=40xmpp.test:localhost";
    let profile_path = format!("/_matrix/client/v3/profile/{}", encode(ghost));
    assert_eq!(
        alice.call("GET", &profile_path, None).await.0,
        404,
        "ghost exists before the query"
    );
    let (status, out) = alice
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(json!({"invite": [ghost]})),
        )
        .await;
    assert_eq!(status, 200, "invite ghost: {out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Registered first (the profile then shows the localpart), then named after the JID.
    loop {
        let (status, profile) = alice.call("GET", &profile_path, None).await;
        if status == 200 && profile["displayname"] == "bob@xmpp.test" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ghost never provisioned with its name: {status} {profile}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The user query as the homeserver makes it: a ghost answers 200; a user in the regex
    // namespace that is no ghost of any JID, or outside the namespace, answers 404.
    let hs_token = files.registration_value("hs_token");
    for (user, want) in [
        (ghost, 200),
        ("@interop_=zz:localhost", 404),
        ("@carol:localhost", 404),
    ] {
        let url = format!("{}/_matrix/app/v1/users/{}", files.as_url(), encode(user));
        let (status, out) = call(&alice.http, "GET", &url, Some(&hs_token), None).await;
        assert_eq!(status, want, "user query {user}: {out}");
        if want == 404 {
            assert_eq!(out["errcode"], "M_NOT_FOUND");
        }
    }
    let (status, _) = alice
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/profile/{}",
                encode("@interop_=zz:localhost")
            ),
            None,
        )
        .await;
    assert_eq!(status, 404);
    bridge.stop();
}

fn probe_event(room: &str, sender: &str, n: u32) -> Value {
    json!({
        "type": "m.room.message", "room_id": room, "sender": sender, "event_id": format!("$probe{n}"),
        "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": format!("probe-{n}") },
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_take_effect_once_and_bad_input_changes_nothing() {
    let (world, files) = start();
    let mut bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    let room = management_room(&alice).await;
    let hs_token = files.registration_value("hs_token");
    let put = |txn: &str, token: Option<&str>, events: Vec<Value>| {
        let url = format!("{}/_matrix/app/v1/transactions/{txn}", files.as_url());
        let http = alice.http.clone();
        let token = token.map(str::to_owned);
        async move {
            call(
                &http,
                "PUT",
                &url,
                token.as_deref(),
                Some(json!({ "events": events })),
            )
            .await
        }
    };
    // Each probe gets its own answer (`Unknown command "probe-N"`), so replies can be counted.
    let replies = |n: u32| {
        let (alice, room) = (&alice, room.clone());
        async move {
            alice
                .count_messages(&room, BOT, &format!("\"probe-{n}\""))
                .await
        }
    };

    assert_eq!(
        put(
            "t1",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 1)]
        )
        .await
        .0,
        200
    );
    alice.wait_for_message(&room, BOT, "\"probe-1\"").await;
    // The same transaction again (a true redelivery): nothing happens.
    assert_eq!(
        put(
            "t1",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 1)]
        )
        .await
        .0,
        200
    );
    // The same transaction id with other events (Synapse numbers from 1 again after some
    // restarts, element-hq/synapse#14556): a hint, not proof, so the new event takes effect.
    assert_eq!(
        put(
            "t1",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 2)]
        )
        .await
        .0,
        200
    );
    alice.wait_for_message(&room, BOT, "\"probe-2\"").await;

    // A wrong or missing hs_token: rejected with the spec's codes, and nothing recorded.
    let (status, body) = put(
        "t3",
        Some("wrong-token"),
        vec![probe_event(&room, &alice.user_id, 3)],
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (403, json!("M_FORBIDDEN"))
    );
    let (status, body) = put("t3", None, vec![probe_event(&room, &alice.user_id, 3)]).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (401, json!("M_UNAUTHORIZED"))
    );

    // One malformed event does not stop the rest of its transaction.
    let malformed =
        json!({ "type": "m.room.message", "event_id": "$bad", "room_id": room, "content": "nope" });
    assert_eq!(
        put(
            "t4",
            Some(&hs_token),
            vec![malformed, probe_event(&room, &alice.user_id, 4)]
        )
        .await
        .0,
        200
    );
    alice.wait_for_message(&room, BOT, "\"probe-4\"").await;
    assert!(bridge.log_text().contains("malformed event skipped"));

    // Across a restart: a redelivered t1 does nothing; t3 (rejected before) is processed now.
    bridge.stop();
    bridge = BridgeProcess::start(&files);
    assert_eq!(
        put(
            "t1",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 1)]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        put(
            "t3",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 3)]
        )
        .await
        .0,
        200
    );
    alice.wait_for_message(&room, BOT, "\"probe-3\"").await;
    // And after a crash (SIGKILL) too: a redelivered t4 does nothing.
    bridge.kill();
    bridge = BridgeProcess::start(&files);
    let malformed =
        json!({ "type": "m.room.message", "event_id": "$bad", "room_id": room, "content": "nope" });
    assert_eq!(
        put(
            "t4",
            Some(&hs_token),
            vec![malformed, probe_event(&room, &alice.user_id, 4)]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        put(
            "t7",
            Some(&hs_token),
            vec![probe_event(&room, &alice.user_id, 7)]
        )
        .await
        .0,
        200
    );
    alice.wait_for_message(&room, BOT, "\"probe-7\"").await;

    // Replies are sent in transaction order, so by now every effect has happened.
    assert_eq!(
        replies(1).await,
        1,
        "a redelivered transaction took effect again (before or after a restart)"
    );
    assert_eq!(
        replies(2).await,
        1,
        "a reused transaction id with a new event"
    );
    assert_eq!(replies(3).await, 1);
    assert_eq!(
        replies(4).await,
        1,
        "a transaction took effect again after a crash"
    );
    bridge.stop();

    // Privacy: the debug-level logs of every run hold no token and no message text.
    let as_token = files.registration_value("as_token");
    for entry in std::fs::read_dir(&files.dir).expect("bridge dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("bridge-") && name.ends_with(".log") {
            let log = std::fs::read_to_string(entry.path()).expect("log");
            assert!(
                log.contains("DEBUG"),
                "{name} was not written at debug level"
            );
            for secret in [
                hs_token.as_str(),
                as_token.as_str(),
                "probe-",
                "Unknown command",
            ] {
                assert!(
                    !log.contains(secret),
                    "{name} contains a token or message text"
                );
            }
        }
    }
}
