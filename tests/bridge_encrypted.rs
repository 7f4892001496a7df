//! End-to-bridge encryption on the Matrix side, end to end: real Synapse and Prosody, the
//! python-omemo peer as the contact, and matrix-nio (vodozemac, an independent Olm/Megolm
//! implementation) as the Matrix user, through `test_world::MatrixPeer`.
//!
//! `encrypted_portals_both_ways`, one world:
//! - an encrypted DM created Element's way (`m.room.encryption` in the initial state, the ghost
//!   invited, the first message sent at once, before the ghost joined): it reaches the contact;
//! - 50 messages each way, interleaved: all decrypt on both ends, in order, once;
//! - a portal the contact's first message creates is encrypted, and the user reads it;
//! - an encrypted management room: `help` is read and answered, encrypted; another user links
//!   there (`link`, the password message redacted) and opens a chat with `start-chat`;
//! - the user adds a second device midway: it decrypts the ghost's later messages;
//! - Synapse's database holds only `m.room.encrypted` for those rooms' messages, and none of
//!   the texts is in the bridge's sled, crypto stores or debug logs;
//! - the bridge restarted (SIGTERM) and killed (SIGKILL): the ghost keeps its one device, and
//!   messages go on both ways;
//! - an encrypted event whose key never reaches the bridge: its sender is told, nothing goes
//!   to the contact.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser};
use serde_json::{Value, json};
use test_world::MatrixPeer;

const N: usize = 50;

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_all_encrypted(events: &[Value]) {
    for e in events {
        assert_eq!(e["encrypted"], true, "arrived unencrypted: {e}");
    }
}

/// The types of the message events of `room` in Synapse's own database, with how many of
/// each (state events left out).
fn stored_types(world: &common::World, room: &str) -> Vec<(String, i64)> {
    let db = world.state.path().join("synapse").join("homeserver.db");
    let script = "import sqlite3,sys,json\n\
                  c=sqlite3.connect(sys.argv[1])\n\
                  rows=c.execute('select type,count(*) from events where room_id=? and state_key is null group by type order by type',(sys.argv[2],)).fetchall()\n\
                  print(json.dumps(rows))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, db.to_str().expect("utf-8"), room])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).expect("rows");
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_portals_both_ways() {
    let (world, files) = start_encrypted();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let mut bridge = BridgeProcess::start(&files);
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&jid("bob"));
    // alice's roster holds bob before she links, as it would from her phone.
    add_to_roster_from_phone(&world, "alice", &mut bob).await;
    let mut alice = MatrixPeer::start(&world, "alice", &["--auto-join"]).await;
    link_jid(&files, &alice.user_id, "alice", &domain);

    // The bridge gives roster contacts' ghosts their device when the login starts, so a client
    // that checks the invitee's devices before it encrypts a DM (Element) finds one.
    let deadline = std::time::Instant::now() + WAIT;
    while alice.devices(&bob_ghost).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ghost got no device"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Element's way: encrypted from the start, the ghost invited, the first message at once.
    let room = alice.create_dm(&bob_ghost, true).await;
    alice.send(&room, "bob, the very first, encrypted").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "bob, the very first, encrypted");
    let ghost_devices = alice.devices(&bob_ghost).await;
    assert_eq!(
        ghost_devices.len(),
        1,
        "one device per ghost: {ghost_devices:?}"
    );

    // 50 each way, interleaved.
    for n in 1..=N {
        alice.send(&room, &format!("alice to bob {n}")).await;
        bob.send(&jid("alice"), &format!("bob to alice {n}"), None)
            .await;
    }
    let to_bob = bob.wait_received(N, WAIT).await;
    let want: Vec<String> = (1..=N).map(|n| format!("alice to bob {n}")).collect();
    assert_eq!(bodies(&to_bob), want);
    let to_alice = alice.wait_messages(&room, &bob_ghost, N + 1, WAIT).await;
    assert_all_encrypted(&to_alice);
    let mut want: Vec<String> = vec![];
    want.extend((1..=N).map(|n| format!("bob to alice {n}")));
    let got: Vec<String> = bodies(&to_alice)
        .into_iter()
        .filter(|b| b.starts_with("bob to alice"))
        .collect();
    assert_eq!(got, want);

    // A portal the contact opens is encrypted, and its first message readable.
    world.add_xmpp_user("carol");
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;
    let carol_ghost = ghost(&jid("carol"));
    carol.send(&jid("alice"), "hello from carol", None).await;
    let invite = alice
        .wait_event("carol's invite", WAIT, |e| {
            e["event"] == "invite" && e["sender"] == carol_ghost.as_str()
        })
        .await;
    assert_eq!(invite["encrypted_invite"], true, "{invite}");
    let carol_room = invite["room_id"].as_str().expect("room id").to_owned();
    let from_carol = alice
        .wait_messages(&carol_room, &carol_ghost, 1, WAIT)
        .await;
    let firsts: Vec<&Value> = from_carol.iter().collect();
    assert_eq!(firsts[0]["encrypted"], true, "{}", firsts[0]);
    // The portal's first events are the bridge's notice, then carol's message.
    let mut seen = bodies(&from_carol);
    while !seen.iter().any(|b| b == "hello from carol") {
        let more = alice
            .wait_messages(&carol_room, &carol_ghost, 1, WAIT)
            .await;
        assert_all_encrypted(&more);
        seen.extend(bodies(&more));
    }
    alice.send(&carol_room, "hello carol").await;
    assert_eq!(carol.wait_received(1, WAIT).await[0]["body"], "hello carol");

    // An encrypted management room.
    let bot_room = alice.create_dm(BOT, true).await;
    let welcome = alice.wait_messages(&bot_room, BOT, 1, WAIT).await;
    assert_all_encrypted(&welcome);
    alice.send(&bot_room, "help").await;
    let help = alice.wait_messages(&bot_room, BOT, 1, WAIT).await;
    assert_all_encrypted(&help);
    assert!(
        help[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("start-chat")),
        "{}",
        help[0]
    );

    // The whole bot flow in an encrypted management room: `link` with the password step (the
    // password message redacted), then `start-chat`.
    world.add_xmpp_user("erin");
    let mut erin = MatrixPeer::start(&world, "erin", &["--auto-join"]).await;
    let erin_bot = erin.create_dm(BOT, true).await;
    erin.wait_messages(&erin_bot, BOT, 1, WAIT).await;
    erin.send(&erin_bot, &format!("link {}", jid("erin"))).await;
    let ask = erin.wait_messages(&erin_bot, BOT, 1, WAIT).await;
    assert!(
        ask[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("password")),
        "{}",
        ask[0]
    );
    let password_event = erin.send(&erin_bot, "pw-erin").await;
    erin.wait_event("the password's redaction", WAIT, |e| {
        e["event"] == "redaction" && e["redacts"] == password_event.as_str()
    })
    .await;
    let linked = erin
        .wait_event("linked", WAIT, |e| {
            e["event"] == "message"
                && e["sender"] == BOT
                && e["body"].as_str().is_some_and(|b| b.contains("inked"))
        })
        .await;
    assert_eq!(linked["encrypted"], true, "{linked}");
    erin.send(&erin_bot, &format!("start-chat {}", jid("bob")))
        .await;
    let invite = erin
        .wait_event("the portal's invite", WAIT, |e| {
            e["event"] == "invite" && e["sender"] == bob_ghost.as_str()
        })
        .await;
    assert_eq!(invite["encrypted_invite"], true, "{invite}");
    let erin_room = invite["room_id"].as_str().expect("room id").to_owned();
    erin.send(&erin_room, "erin says hi").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "erin says hi");
    assert!(
        got[0]["from"]
            .as_str()
            .is_some_and(|f| f.starts_with(&jid("erin"))),
        "{}",
        got[0]
    );

    // alice adds a second device: it decrypts the ghost's messages from when the bridge knows
    // of it (at the latest one message later), then every later one.
    let mut second = MatrixPeer::start(&world, "alice", &["--device", "second"]).await;
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        bob.send(&jid("alice"), &format!("to both devices {n}"), None)
            .await;
        let seen = second
            .wait_event(
                "a message in the second device",
                Duration::from_secs(10),
                |e| {
                    e["room_id"] == room.as_str()
                        && (e["event"] == "message" || e["event"] == "undecryptable")
                },
            )
            .await;
        if seen["event"] == "message" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second device never got a key"
        );
    }
    for k in 1..=5 {
        bob.send(&jid("alice"), &format!("later {k}"), None).await;
    }
    let mut later = Vec::new();
    for k in 1..=5 {
        // Earlier messages may still come in (decrypted late): only the later ones count.
        later.push(
            second
                .wait_event(&format!("later {k}"), WAIT, |e| {
                    e["room_id"] == room.as_str()
                        && e["event"] == "message"
                        && e["body"].as_str().is_some_and(|b| b.starts_with("later "))
                })
                .await,
        );
    }
    // Everything before the first message it could read was taken above, in order: what is
    // left must all have been readable (the history of its first sync, from before the device
    // existed, aside).
    let unreadable: Vec<&Value> = second
        .unclaimed()
        .iter()
        .filter(|e| e["event"] == "undecryptable" && e["room_id"] == room.as_str())
        .filter(|e| e["initial"] != true)
        .collect();
    assert!(unreadable.is_empty(), "{unreadable:?}");
    assert_all_encrypted(&later);
    let want: Vec<String> = (1..=5).map(|k| format!("later {k}")).collect();
    assert_eq!(bodies(&later), want);
    alice.wait_messages(&room, &bob_ghost, n + 5, WAIT).await;

    // What Synapse stores for these rooms' messages: ciphertext only.
    for r in [&room, &carol_room, &bot_room] {
        let types = stored_types(&world, r);
        assert!(
            types.iter().all(|(t, _)| t == "m.room.encrypted"),
            "{r}: {types:?}"
        );
        assert!(!types.is_empty(), "{r}: no messages stored");
    }
    // Nor does the bridge keep any text: not in sled, not in the crypto stores, not in its
    // debug logs (which hold no password either).
    let texts: Vec<String> = vec![
        "alice to bob 17".into(),
        "bob to alice 23".into(),
        "hello from carol".into(),
        "erin says hi".into(),
        "later 3".into(),
    ];
    let found = find_in_dir(&files.dir, &texts);
    assert!(found.is_empty(), "the bridge's files hold {found:?}");
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(&files.dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert!(!logs.is_empty());
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("DEBUG"), "the log is not at debug level");
        assert!(
            !text.contains("pw-erin"),
            "{} holds the password",
            log.display()
        );
    }

    // Restarts: SIGTERM, then SIGKILL mid-traffic. The ghost keeps its one device and the
    // Megolm sessions go on.
    bridge.stop();
    bridge = BridgeProcess::start(&files);
    alice.send(&room, "after the restart").await;
    assert_eq!(
        bob.wait_received(1, WAIT).await[0]["body"],
        "after the restart"
    );
    bob.send(&jid("alice"), "bob after the restart", None).await;
    let after = alice.wait_messages(&room, &bob_ghost, 1, WAIT).await;
    assert_eq!(bodies(&after), ["bob after the restart"]);
    assert_all_encrypted(&after);
    for n in 1..=5 {
        alice.send(&room, &format!("around the kill {n}")).await;
    }
    bridge.kill();
    bridge = BridgeProcess::start(&files);
    // A stanza the server acknowledged just before the kill may go out again, with the same id
    // (the durability rule: receivers deduplicate on it), never with another.
    let mut firsts: Vec<(String, String)> = Vec::new();
    while firsts.len() < 5 {
        let got = bob.wait_received(1, WAIT).await;
        let id = got[0]["id"].as_str().unwrap_or_default().to_owned();
        let body = got[0]["body"].as_str().unwrap_or_default().to_owned();
        match firsts.iter().find(|(_, b)| *b == body) {
            Some((first_id, _)) => assert_eq!(*first_id, id, "{body} again, with another id"),
            None => firsts.push((id, body)),
        }
    }
    let want: Vec<String> = (1..=5).map(|n| format!("around the kill {n}")).collect();
    let got: Vec<String> = firsts.into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, want);
    // Anything still coming is such a repeat; none of it may be new.
    while let Some(extra) = bob.next_event(Duration::from_secs(1)).await {
        if extra["event"] == "received" {
            assert!(
                want.iter().any(|w| extra["body"] == w.as_str()),
                "unexpected after the kill: {extra}"
            );
        }
    }
    bob.send(&jid("alice"), "bob after the kill", None).await;
    let after = alice.wait_messages(&room, &bob_ghost, 1, WAIT).await;
    assert_eq!(bodies(&after), ["bob after the kill"]);
    assert_all_encrypted(&after);
    assert_eq!(
        alice.devices(&bob_ghost).await,
        ghost_devices,
        "no new device after the restarts"
    );

    // An encrypted event whose key never reaches the bridge (a well-formed Megolm message of a
    // session nobody has, sent by hand into dave's DM with bob): dave is told in the portal after the wait, and
    // nothing goes to bob.
    world.add_xmpp_user("dave");
    let dave = MatrixUser::register(&world, "dave").await;
    cli_link(&world, &files, &dave, "dave");
    let dave_room = dave.create_dm(&bob_ghost).await;
    dave.wait_for_membership(&dave_room, &bob_ghost, "join")
        .await;
    let bogus = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc",
        "device_id": "NOSUCHDEVICE",
        "session_id": "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk",
        "ciphertext": "AwgAEhAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    });
    let (status, out) = dave
        .call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/bogus1",
                common::encode(&dave_room)
            ),
            Some(bogus),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let notice = dave
        .wait_for_message(&dave_room, &bob_ghost, "could not decrypt")
        .await;
    assert!(
        notice["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("never shared")),
        "{notice}"
    );
    assert_nothing_more(&mut bob, Duration::from_secs(2)).await;
    drop(bridge);
}
