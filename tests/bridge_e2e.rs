//! The bridge end to end, as a new user would use it: real Synapse, real Prosody, python-omemo
//! peers (slixmpp-omemo) as the contacts, the bridge as a child process, and the Matrix side
//! driven over plain HTTP.
//!
//! - `flows_link_chat_requests_and_bot`: PRODUCT.md flows 2–5 — `link` from the CLI and from
//!   the bot room (password redacted), a DM with a ghost, an inbound chat, a message request
//!   accepted, one declined and one blocked, `m.bridge` state, the notice, the space, `unlink`.
//! - `first_messages_of_a_new_dm_arrive_once_in_order`: a DM created with the ghost invited
//!   and its first message sent at once (what Element does), and a room where three messages
//!   were written before the ghost was even invited: every message reaches the contact, once.
//! - `messages_recorded_while_the_server_is_frozen_survive_a_sigkill`: 30 messages written
//!   while Prosody is stopped (SIGSTOP) are recorded by id and answered, the bridge is killed,
//!   and after the restart all 30 reach the contact in order.
//! - `fifty_each_way_across_sigterm_and_sigkill`: 50 messages each way interleaved, the bridge
//!   stopped with SIGTERM once and killed with SIGKILL once: order kept, none lost, none
//!   duplicated, with `database.key` set; then the sled files and the debug logs are searched
//!   for every text, the password and the tokens.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::xmpp_peer::Peer;
use common::{BridgeProcess, MatrixUser, encode};

#[tokio::test(flavor = "multi_thread")]
async fn first_messages_of_a_new_dm_arrive_once_in_order() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");

    // Element's order: createRoom with the ghost invited, then the message right away, while
    // the ghost is only invited (the homeserver does not push it to the bridge then).
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let room = alice.create_dm(&ghost(&jid("bob"))).await;
    alice.send_text(&room, "bob, the very first").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "bob, the very first");

    // Three messages before the ghost is invited at all, then the invite.
    world.add_xmpp_user("gina");
    let mut gina = OmemoPeer::start(&world, "gina", &[]).await;
    let body = serde_json::json!({"preset": "trusted_private_chat", "is_direct": true});
    let (status, out) = alice
        .call("POST", "/_matrix/client/v3/createRoom", Some(body))
        .await;
    assert_eq!(status, 200, "createRoom: {out}");
    let early = out["room_id"].as_str().expect("room id").to_owned();
    for n in 1..=3 {
        alice.send_text(&early, &format!("gina, early {n}")).await;
    }
    let (status, out) = alice
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(&early)),
            Some(serde_json::json!({"user_id": ghost(&jid("gina"))})),
        )
        .await;
    assert_eq!(status, 200, "invite: {out}");
    let got = gina.wait_received(3, WAIT).await;
    let bodies: Vec<&str> = got.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["gina, early 1", "gina, early 2", "gina, early 3"]);
    // Later messages still flow, and nothing went twice.
    alice.send_text(&early, "gina, after the join").await;
    assert_eq!(
        gina.wait_received(1, WAIT).await[0]["body"],
        "gina, after the join"
    );
    assert_nothing_more(&mut gina, Duration::from_secs(2)).await;
    assert_nothing_more(&mut bob, Duration::ZERO).await;

    // A 100 KB styled message is too large for one Matrix event: it arrives whole, split, and
    // the next message still flows.
    let big: String = (0..3000)
        .map(|i| format!("line {i:04} of the long one, *bold* and _em_\n"))
        .collect();
    bob.send(&jid("alice"), &big, Some("big-1")).await;
    bob.send(&jid("alice"), "after the long one", Some("big-2"))
        .await;
    alice
        .wait_for_message(&room, &ghost(&jid("bob")), "after the long one")
        .await;
    let from_bob = bodies_from(&alice, &room, &ghost(&jid("bob"))).await;
    let start = from_bob
        .iter()
        .position(|b| b.starts_with("line 0000"))
        .expect("the long message arrived");
    let end = from_bob
        .iter()
        .position(|b| b == "after the long one")
        .expect("the next one arrived");
    assert!(end - start > 1, "the long message came in one event");
    assert_eq!(from_bob[start..end].concat(), big);

    // A client that reuses a message id: our server's stamp (XEP-0359 stanza-id, Prosody's
    // archive adds it) tells the second message from a redelivery, so both are shown.
    bob.send(&jid("alice"), "reused id, one", Some("reused"))
        .await;
    bob.send(&jid("alice"), "reused id, two", Some("reused"))
        .await;
    alice
        .wait_for_message(&room, &ghost(&jid("bob")), "reused id, two")
        .await;
    let reused: Vec<String> = bodies_from(&alice, &room, &ghost(&jid("bob")))
        .await
        .into_iter()
        .filter(|b| b.starts_with("reused id"))
        .collect();
    assert_eq!(reused, ["reused id, one", "reused id, two"]);

    // An unencrypted message (slixmpp, no OMEMO) is shown, marked; with
    // `network.unencrypted = "reject"` the sender gets an error and the chat a notice.
    world.add_xmpp_user("hank");
    let mut hank = Peer::start(&world, "hank", &[]).await;
    let hank_ghost = ghost(&jid("hank"));
    hank.command(
        serde_json::json!({"cmd": "send", "to": jid("alice"), "body": "plain hello", "id": "p1"}),
    )
    .await;
    let hank_room = wait_invite_from(&alice, &hank_ghost).await;
    alice.join(&hank_room).await;
    let shown = alice
        .wait_for_message(&hank_room, &hank_ghost, "plain hello")
        .await;
    assert!(
        shown["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("without encryption")),
        "{shown}"
    );
    bridge.stop();
    let config = std::fs::read_to_string(&files.config).expect("config");
    assert!(config.contains("unencrypted = \"bridge\"\n"), "{config}");
    let config = config.replace("unencrypted = \"bridge\"\n", "unencrypted = \"reject\"\n");
    std::fs::write(&files.config, config).expect("write config");
    let _bridge = BridgeProcess::start(&files);
    hank.command(
        serde_json::json!({"cmd": "send", "to": jid("alice"), "body": "plain again", "id": "p2"}),
    )
    .await;
    let bounce = hank
        .wait_event("the refusal", WAIT, |e| {
            e["event"] == "message" && e["id"] == "p2"
        })
        .await;
    assert_eq!(bounce["type"], "error", "{bounce}");
    assert_eq!(bounce["error"], "not-acceptable", "{bounce}");
    alice
        .wait_for_message(&hank_room, &hank_ghost, "was refused")
        .await;
    assert_eq!(
        alice
            .count_messages(&hank_room, &hank_ghost, "plain again")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_link_chat_requests_and_bot() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    // Flow 2 registers an account: off by default, so turned on here.
    let config = std::fs::read_to_string(&files.config).expect("config");
    assert!(config.contains("allow_register = false\n"), "{config}");
    let config = config.replace("allow_register = false\n", "allow_register = true\n");
    // Only the world's domain may be linked.
    assert!(config.contains("allowed_domains = []\n"), "{config}");
    let config = config.replace(
        "allowed_domains = []\n",
        &format!("allowed_domains = [\"{domain}\"]\n"),
    );
    std::fs::write(&files.config, config).expect("write config");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;

    // Flow 2, from the CLI.
    cli_link(&world, &files, &alice, "alice");
    let (ok, out, err) = run_cli(&files, &["identities"]);
    assert!(
        ok && out.contains(&jid("alice")) && out.contains("@alice:localhost"),
        "{out}{err}"
    );
    let (ok, out, _) = run_cli(&files, &["status", &alice.user_id]);
    assert!(
        ok && out.contains("connected") && out.contains("OMEMO device"),
        "{out}"
    );
    let (ok, _, err) = run_cli(
        &files,
        &["link", "@alice:localhost", "alice@nowhere.invalid"],
    );
    assert!(
        !ok && err.contains("--password-file"),
        "link without a password source: {err}"
    );
    let pw = files.dir.join("pw-elsewhere.txt");
    std::fs::write(&pw, "pw\n").expect("password file");
    let (ok, out, err) = run_cli(
        &files,
        &[
            "link",
            "@alice:localhost",
            "mallory@elsewhere.example",
            "--password-file",
            pw.to_str().expect("utf-8"),
        ],
    );
    assert!(
        !ok && err.contains("elsewhere.example") && err.contains("network.allowed_domains"),
        "a domain outside network.allowed_domains: {out}{err}"
    );

    // Flow 3: alice opens a DM with bob's ghost; bob (python-omemo) answers.
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&jid("bob"));
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice
        .wait_for_message(&room, &bob_ghost, "re-encrypts")
        .await;
    alice.send_text(&room, "hello bob, from Matrix").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "hello bob, from Matrix");
    assert_eq!(
        got[0]["from"]
            .as_str()
            .map(|f| f.starts_with(&jid("alice"))),
        Some(true)
    );
    bob.send(&jid("alice"), "hi alice, from XMPP", None).await;
    alice
        .wait_for_message(&room, &bob_ghost, "hi alice, from XMPP")
        .await;
    // Flow 5: m.bridge state.
    let bridge_state = state(&alice, &room).await;
    let m_bridge = bridge_state
        .iter()
        .find(|e| e["type"] == "m.bridge")
        .expect("m.bridge state");
    assert_eq!(m_bridge["content"]["protocol"]["id"], "xmpp");
    assert_eq!(m_bridge["content"]["channel"]["id"], jid("bob"));

    // Flow 4: carol is not in alice's roster: a message request, accepted by joining.
    world.add_xmpp_user("carol");
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;
    carol
        .send(&jid("alice"), "carol here, may I write?", None)
        .await;
    let carol_ghost = ghost(&jid("carol"));
    let carol_room = wait_invite_from(&alice, &carol_ghost).await;
    alice.join(&carol_room).await;
    alice
        .wait_for_message(&carol_room, &carol_ghost, "Message request")
        .await;
    alice
        .wait_for_message(&carol_room, &carol_ghost, "carol here")
        .await;
    let room_state = state(&alice, &carol_room).await;
    assert!(
        room_state.iter().any(|e| e["type"] == "m.bridge"),
        "no m.bridge in the request"
    );
    alice.send_text(&carol_room, "welcome carol").await;
    assert_eq!(
        carol.wait_received(1, WAIT).await[0]["body"],
        "welcome carol"
    );
    // Accepting added carol to alice's contacts: alice asked for carol's presence.
    carol.wait_subscription(&jid("alice"), "subscribe").await;

    // Declined: dave writes, alice rejects the invite; dave's next message opens nothing.
    world.add_xmpp_user("dave");
    let mut dave = OmemoPeer::start(&world, "dave", &[]).await;
    dave.send(&jid("alice"), "dave's first", None).await;
    let dave_ghost = ghost(&jid("dave"));
    let dave_room = wait_invite_from(&alice, &dave_ghost).await;
    leave(&alice, &dave_room).await;

    // Blocked: erin writes, alice blocks her from the bot room.
    world.add_xmpp_user("erin");
    let mut erin = OmemoPeer::start(&world, "erin", &[]).await;
    erin.send(&jid("alice"), "erin's first", None).await;
    let erin_ghost = ghost(&jid("erin"));
    let erin_room = wait_invite_from(&alice, &erin_ghost).await;
    let mgmt = management_room(&alice).await;
    let blocked = format!("Blocked {} on your server", jid("erin"));
    ask_bot(&alice, &mgmt, &format!("block {}", jid("erin")), &blocked).await;

    dave.send(&jid("alice"), "dave's second", None).await;
    erin.send(&jid("alice"), "erin's second", Some("erin-2"))
        .await;
    // Blocked on the server (Prosody has XEP-0191): erin's message bounces.
    let condition = erin.wait_message_error("erin-2", WAIT).await;
    assert_eq!(condition, "service-unavailable");
    // A message that does go through afterwards proves the earlier ones were handled.
    bob.send(&jid("alice"), "bob again", None).await;
    alice.wait_for_message(&room, &bob_ghost, "bob again").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = alice.invites().await;
    assert!(
        !open.contains_key(&dave_room),
        "a declined request came back"
    );
    for (r, events) in open.into_iter().filter(|(r, _)| *r != erin_room) {
        assert!(
            !events
                .iter()
                .any(|e| e["sender"] == dave_ghost || e["sender"] == erin_ghost),
            "a new request from a declined or blocked contact: {r}"
        );
    }

    // The space holds alice's portals.
    let space = wait_invite_from(&alice, BOT).await;
    alice.join(&space).await;
    let space_state = state(&alice, &space).await;
    let create = space_state
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .expect("create");
    assert_eq!(create["content"]["type"], "m.space");
    let children: Vec<&str> = space_state
        .iter()
        .filter(|e| e["type"] == "m.space.child")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert!(
        children.contains(&room.as_str()) && children.contains(&carol_room.as_str()),
        "{children:?}"
    );

    // Flow 2 from the bot room, with in-band registration; the password is redacted.
    let frank = MatrixUser::register(&world, "frank").await;
    let frank_mgmt = management_room(&frank).await;
    ask_bot(
        &frank,
        &frank_mgmt,
        &format!("link {} --register", jid("frank")),
        "next message",
    )
    .await;
    let before = frank.messages(&frank_mgmt).await.len();
    let pw_event = frank.send_text(&frank_mgmt, "frank-secret-pw-81").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let messages = frank.messages(&frank_mgmt).await;
        if messages.iter().skip(before).any(|e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("Linked"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no link answer: {messages:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, event) = frank
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                encode(&frank_mgmt),
                encode(&pw_event)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{event}");
    assert!(
        event["content"].as_object().is_none_or(|c| c.is_empty()),
        "password not redacted: {event}"
    );
    let mut frank_peer_check =
        OmemoPeer::start(&world, "bob", &["--store-name", "bob2", "--resource", "b2"]).await;
    assert!(
        !frank_peer_check.devices(&jid("frank")).await.is_empty(),
        "frank's device not published"
    );
    ask_bot(&frank, &frank_mgmt, "unlink", "Unlinked").await;
    let (ok, out, _) = run_cli(&files, &["identities"]);
    assert!(
        ok && !out.contains(&jid("frank")) && out.contains(&jid("alice")),
        "{out}"
    );

    bridge.stop();
}

/// Sends `count` messages each way, interleaved, with the bridge stopped (SIGTERM) once and
/// killed (SIGKILL) once on the way; then checks order, loss and duplicates on both sides,
/// and that no text, password or token is in the database or the debug logs.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_each_way_across_sigterm_and_sigkill() {
    const COUNT: usize = 50;
    let (world, files) = start();
    // Secrets at rest: the restarts and the kill below must not lose anything sealed either.
    set_key(&files, "fifty each way, a key of more than sixteen bytes");
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let bob_jid = format!("bob@{domain}");
    let mut bridge = Some(BridgeProcess::start(&files));
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob_jid);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice
        .wait_for_message(&room, &bob_ghost, "re-encrypts")
        .await;
    // First contact both ways at once: each side starts a session (the bridge keeps its own,
    // see ARCHITECTURE.md), and everything after must still decrypt on both ends.
    tokio::join!(
        alice.send_text(&room, "first contact"),
        bob.send(&alice_jid, "first answer", None)
    );
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], "first contact");
    alice
        .wait_for_message(&room, &bob_ghost, "first answer")
        .await;

    let tag = "q7Zx";
    let to_xmpp = |i: usize| format!("m2x {tag} number {i:02}");
    let to_matrix = |i: usize| format!("x2m {tag} number {i:02}");
    let mut logs = Vec::new();
    for i in 0..COUNT {
        if i == 15 {
            let b = bridge.take().expect("running");
            logs.push(b.log.clone());
            b.stop();
        }
        if i == 20 {
            bridge = Some(BridgeProcess::start(&files));
        }
        if i == 32 {
            // Make sure some traffic is in flight around the kill.
            let b = bridge.take().expect("running");
            logs.push(b.log.clone());
            b.kill();
        }
        if i == 36 {
            bridge = Some(BridgeProcess::start(&files));
        }
        alice.send_text(&room, &to_xmpp(i)).await;
        bob.send(&alice_jid, &to_matrix(i), Some(&format!("bob-{i}")))
            .await;
    }

    // XMPP side: every message once, in order. The one exception is a known gap of the
    // durability rule (ARCHITECTURE.md, "Known gaps"): a stanza the server acknowledged in the instant
    // before the SIGKILL, its mapping not yet flushed, goes out again after the restart with
    // the same id, which receivers deduplicate. A portal sends one message at a time, so that
    // is one repeat at most, of a message sent before the kill; never one with another id.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut firsts: Vec<(String, String)> = Vec::new();
    let mut repeats: Vec<String> = Vec::new();
    while firsts.len() < COUNT {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = bob.wait_received(1, left).await;
        let id = got[0]["id"].as_str().unwrap_or_default().to_owned();
        let body = got[0]["body"].as_str().unwrap_or_default().to_owned();
        match firsts.iter().find(|(_, b)| *b == body) {
            Some((first_id, _)) => {
                assert_eq!(*first_id, id, "{body} again, with another id");
                repeats.push(body);
            }
            None => firsts.push((id, body)),
        }
    }
    let bodies: Vec<String> = firsts.into_iter().map(|(_, body)| body).collect();
    let expected: Vec<String> = (0..COUNT).map(to_xmpp).collect();
    assert_eq!(bodies, expected, "what bob received");
    let before_kill: Vec<String> = (0..32).map(to_xmpp).collect();
    assert!(
        repeats.len() <= 1 && repeats.iter().all(|r| before_kill.contains(r)),
        "repeated at bob: {repeats:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Some(extra) = bob.next_event(Duration::from_millis(200)).await {
        assert_ne!(
            extra["event"], "received",
            "a message arrived twice at bob: {extra}"
        );
    }

    // Matrix side: every message once, in order.
    let deadline = Instant::now() + Duration::from_secs(180);
    let expected: Vec<String> = (0..COUNT).map(to_matrix).collect();
    loop {
        let seen: Vec<String> = bodies_from(&alice, &room, &bob_ghost)
            .await
            .into_iter()
            .filter(|b| b.contains(tag))
            .collect();
        if seen.len() >= COUNT {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let seen: Vec<String> = bodies_from(&alice, &room, &bob_ghost)
                .await
                .into_iter()
                .filter(|b| b.contains(tag))
                .collect();
            assert_eq!(seen, expected, "what alice sees");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {COUNT} reached Matrix: {seen:#?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let b = bridge.take().expect("running");
    logs.push(b.log.clone());
    b.stop();

    // Privacy: no text, password or token in the database or the logs.
    let mut secrets: Vec<String> = (0..COUNT)
        .flat_map(|i| [to_xmpp(i), to_matrix(i)])
        .collect();
    secrets.push(tag.to_owned());
    secrets.push("pw-alice".to_owned());
    secrets.push(files.registration_value("as_token"));
    secrets.push(files.registration_value("hs_token"));
    secrets.push(alice.token.clone());
    let db = files.dir.join("interop-bridge.db");
    // The password is stored, sealed with database.key (the bridge logs in after restarts).
    let in_db = find_in_dir(&db, &secrets);
    assert!(in_db.is_empty(), "the database holds {in_db:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("DEBUG"), "the log is not at debug level");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds {secret:?}",
                log.display()
            );
        }
    }
}

/// The user's messages are recorded (by id) and answered while the XMPP server is frozen;
/// the bridge is then killed. After the restart every one of them reaches the contact, in
/// order; a stanza the frozen server had already read may arrive a second time with the same
/// id (the durability rule: receivers deduplicate on it), never with another.
#[tokio::test(flavor = "multi_thread")]
async fn messages_recorded_while_the_server_is_frozen_survive_a_sigkill() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&format!("bob@{domain}"));
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice.send_text(&room, "before the freeze").await;
    assert_eq!(
        bob.wait_received(1, WAIT).await[0]["body"],
        "before the freeze"
    );
    bob.send(&alice_jid, "bob is here", None).await;
    alice
        .wait_for_message(&room, &bob_ghost, "bob is here")
        .await;

    signal_service(&world, "prosody", "STOP");
    let texts: Vec<String> = (1..=30).map(|i| format!("frozen {i:02}")).collect();
    for text in &texts {
        // Each is answered by the bridge although the XMPP server does not move.
        alice.send_text(&room, text).await;
    }
    // Give the homeserver time to hand them all over (only coverage depends on it: what is
    // not handed over yet is still the homeserver's and comes after the restart).
    tokio::time::sleep(Duration::from_secs(5)).await;
    bridge.kill();
    signal_service(&world, "prosody", "CONT");
    let _bridge = BridgeProcess::start(&files);

    let mut firsts: Vec<(String, String)> = Vec::new();
    while firsts.len() < texts.len() {
        let got = bob.wait_received(1, Duration::from_secs(120)).await;
        let (id, body) = (
            got[0]["id"].as_str().unwrap_or_default().to_owned(),
            got[0]["body"].as_str().unwrap_or_default().to_owned(),
        );
        match firsts.iter().find(|(_, b)| *b == body) {
            Some((first_id, _)) => assert_eq!(*first_id, id, "{body} again, with another id"),
            None => firsts.push((id, body)),
        }
    }
    let bodies: Vec<&str> = firsts.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, texts.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Two users name the same contact differently in their rosters (set from another client of
/// theirs): each sees their own name for the ghost in their portal, and the ghost's global
/// profile, which every user of the homeserver sees, carries neither.
#[tokio::test(flavor = "multi_thread")]
async fn roster_names_stay_in_their_users_portal() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let bob = format!("bob@{domain}");
    let bob_ghost = ghost(&bob);
    world.add_xmpp_user("carol");
    let _bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    let carol = MatrixUser::register(&world, "carol").await;
    cli_link(&world, &files, &alice, "alice");
    cli_link(&world, &files, &carol, "carol");
    for (user, name) in [("alice", "Bob from work"), ("carol", "Uncle Bob")] {
        let mut other_client = Peer::start(&world, user, &[]).await;
        other_client
            .command(serde_json::json!({"cmd": "subscribe", "to": bob, "name": name}))
            .await;
        other_client
            .wait_event("the roster set", WAIT, |e| e["event"] == "ok")
            .await;
        other_client.quit().await;
    }
    // The roster pushes reach the bridge's connections right after the server's answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (user, name) in [(&alice, "Bob from work"), (&carol, "Uncle Bob")] {
        let mgmt = management_room(user).await;
        ask_bot(user, &mgmt, &format!("start-chat {bob}"), "is ready").await;
        let room = wait_invite_from(user, &bob_ghost).await;
        user.join(&room).await;
        let member = state(user, &room)
            .await
            .into_iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob_ghost.as_str())
            .expect("the ghost's member event");
        assert_eq!(member["content"]["displayname"], name, "{member}");
    }
    let (status, profile) = alice
        .call(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", encode(&bob_ghost)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile["displayname"],
        bob.as_str(),
        "the global profile: {profile}"
    );
}
