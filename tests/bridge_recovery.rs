//! The bridge recovering from what goes wrong around it, end to end against real Synapse, real
//! Prosody and python-omemo contacts (the issue "portal workers and no silent loss"):
//!
//! - `thirty_inbound_in_flight_survive_a_sigkill`: Synapse is frozen (SIGSTOP) so the bridge's
//!   posts hang, the contact sends 30 messages, the bridge is killed with all of them read and
//!   none acknowledged; after the restart each is shown once, in order, and the database holds
//!   none of the texts.
//! - `homeserver_restart_reuses_transaction_ids`: Synapse restarts (SIGTERM, nothing pending)
//!   while messages flow both ways and numbers its transactions from 1 again: every message
//!   arrives once, in order; then an old transaction PUT again (same id, same events) and its
//!   events under a new id send nothing twice. `homeserver_down_for_fifteen_seconds_loses_nothing`
//!   does the same with Synapse down longer than the homeserver client's retries.
//! - `kicked_ghost_is_reported_and_comes_back`: the user kicks the contact's ghost; the contact's
//!   next message is reported in the management room; the user invites the ghost back and
//!   messages flow both ways again, the one written while it was away included.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser, World, call, encode};
use serde_json::{Value, json};

/// A linked user and a contact with a working DM: sessions exist both ways.
struct Chat {
    alice: MatrixUser,
    alice_jid: String,
    bob: OmemoPeer,
    bob_ghost: String,
    room: String,
}

/// Links alice, starts bob, opens a DM with bob's ghost (with `preset`) and sends one message
/// each way.
async fn open_chat(world: &World, files: &common::BridgeFiles, preset: &str) -> Chat {
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let alice = MatrixUser::register(world, "alice").await;
    cli_link(world, files, &alice, "alice");
    let mut bob = OmemoPeer::start(world, "bob", &[]).await;
    let bob_ghost = ghost(&format!("bob@{domain}"));
    let body = json!({"preset": preset, "is_direct": true, "invite": [bob_ghost]});
    let (status, out) = alice
        .call("POST", "/_matrix/client/v3/createRoom", Some(body))
        .await;
    assert_eq!(status, 200, "createRoom: {out}");
    let room = out["room_id"].as_str().expect("room id").to_owned();
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice
        .wait_for_message(&room, &bob_ghost, "re-encrypts")
        .await;
    alice.send_text(&room, "hello bob").await;
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], "hello bob");
    bob.send(&alice_jid, "hello alice", None).await;
    alice
        .wait_for_message(&room, &bob_ghost, "hello alice")
        .await;
    Chat {
        alice,
        alice_jid,
        bob,
        bob_ghost,
        room,
    }
}

/// Waits until `sender` posted `expected.len()` messages containing `tag` in `room` (failing
/// only when none new came for `STALL`), waits a little more, and asserts that they are exactly
/// `expected`, in order: nothing lost, nothing twice, nothing late.
async fn assert_bodies(
    user: &MatrixUser,
    room: &str,
    sender: &str,
    tag: &str,
    expected: &[String],
) {
    const STALL: Duration = Duration::from_secs(60);
    let seen = || async {
        bodies_from(user, room, sender)
            .await
            .into_iter()
            .filter(|b| b.contains(tag))
            .collect::<Vec<_>>()
    };
    let mut count = 0;
    let mut progress = Instant::now();
    loop {
        let now = seen().await;
        if now.len() >= expected.len() {
            break;
        }
        if now.len() > count {
            count = now.len();
            progress = Instant::now();
        }
        assert!(
            progress.elapsed() < STALL,
            "no progress for {STALL:?}: {} of {} in Matrix: {now:#?}",
            now.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen().await, expected, "what {} sees", user.user_id);
}

/// Waits for `expected.len()` messages at `peer` and asserts they are exactly `expected`, then
/// that nothing more comes.
async fn assert_received(peer: &mut OmemoPeer, expected: &[String]) {
    let got = peer
        .wait_received(expected.len(), Duration::from_secs(180))
        .await;
    let bodies: Vec<String> = got
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, expected, "what the contact received");
    assert_nothing_more(peer, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_inbound_in_flight_survive_a_sigkill() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let mut chat = open_chat(&world, &files, "trusted_private_chat").await;

    // Frozen Synapse: the bridge's post of the first message hangs, the other 29 wait behind it
    // in the contact's lane, none is acknowledged to Prosody.
    signal_service(&world, "synapse", "STOP");
    const LANE: &str = "a message is waiting in its contact's lane";
    let mark = bridge.log_text().matches(LANE).count();
    let texts: Vec<String> = (1..=30).map(|i| format!("in flight {i:02}")).collect();
    for (i, text) in texts.iter().enumerate() {
        chat.bob
            .send(&chat.alice_jid, text, Some(&format!("flight-{i}")))
            .await;
    }
    // Every one of them read by the bridge and handed to the contact's lane (the first one's
    // post hanging), none acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while bridge.log_text().matches(LANE).count() < mark + texts.len() {
        assert!(
            Instant::now() < deadline,
            "the bridge did not read all 30 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bridge.kill();
    signal_service(&world, "synapse", "CONT");
    // Synapse may still carry out the one post whose request it had buffered; the 29 behind it
    // were never sent, so they can only come from the server's redelivery after the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posted = bodies_from(&chat.alice, &chat.room, &chat.bob_ghost)
        .await
        .into_iter()
        .filter(|b| b.contains("in flight"))
        .collect::<Vec<_>>();
    eprintln!("in Matrix between the kill and the restart: {posted:?}");
    assert!(
        posted.len() <= 1,
        "the killed bridge posted more than the one hanging request: {posted:?}"
    );
    let bridge = BridgeProcess::start(&files);

    assert_bodies(
        &chat.alice,
        &chat.room,
        &chat.bob_ghost,
        "in flight",
        &texts,
    )
    .await;
    let log = bridge.log.clone();
    bridge.stop();

    // Nothing of the texts in the store (nor in the log).
    let in_db = find_in_dir(&files.dir.join("interop-bridge.db"), &texts);
    assert!(in_db.is_empty(), "the database holds {in_db:?}");
    let text = std::fs::read_to_string(log).expect("log");
    for t in &texts {
        assert!(!text.contains(t.as_str()), "the log holds {t:?}");
    }
}

/// The transactions the bridge logged after byte `from` of its log: (id, event ids).
fn transactions(log: &str, from: usize) -> Vec<(String, Vec<String>)> {
    log[from..]
        .lines()
        .filter(|l| l.contains(" transaction txn_id="))
        .filter_map(|l| {
            let id = l.split("txn_id=").nth(1)?.split_whitespace().next()?;
            let ids = l.split("event_ids=[").nth(1)?.split(']').next()?;
            let ids = ids
                .split(", ")
                .map(|s| s.trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            Some((id.trim_matches('"').to_owned(), ids))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn homeserver_restart_reuses_transaction_ids() {
    restart_while_messages_flow(0).await;
}

/// The same with Synapse down for 15 s, longer than the homeserver client's own retries (6
/// attempts, about 8 s): the contact's lane keeps trying the message it is posting, and the ones
/// behind it wait, so none is missing or out of order.
#[tokio::test(flavor = "multi_thread")]
async fn homeserver_down_for_fifteen_seconds_loses_nothing() {
    restart_while_messages_flow(15).await;
}

/// Restarts Synapse (down `pause` seconds) while the contact writes, with messages both ways
/// before and after; then redelivers an old transaction.
async fn restart_while_messages_flow(pause: u32) {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let mut chat = open_chat(&world, &files, "trusted_private_chat").await;
    let to_xmpp = |i: usize| format!("m2x restart {i:02}");
    let to_matrix = |i: usize| format!("x2m restart {i:02}");

    // Both ways before the restart, all delivered: no transaction is pending at the stop.
    for i in 0..10 {
        chat.alice.send_text(&chat.room, &to_xmpp(i)).await;
        chat.bob
            .send(&chat.alice_jid, &to_matrix(i), Some(&format!("r-{i}")))
            .await;
    }
    let expected: Vec<String> = (0..10).map(to_xmpp).collect();
    assert_received(&mut chat.bob, &expected).await;
    let expected: Vec<String> = (0..10).map(to_matrix).collect();
    assert_bodies(
        &chat.alice,
        &chat.room,
        &chat.bob_ghost,
        "x2m restart",
        &expected,
    )
    .await;
    // Synapse numbers transactions on from the highest one it still has pending (none: from 1
    // again, element-hq/synapse#14556). So that the restart reuses ids, nothing may be pending
    // when it stops: wait until the bridge has had no transaction for 2 s (the echoes of the
    // ghost's last posts come last), and let the contact write only once Synapse is down.
    let mut seen = transactions(&bridge.log_text(), 0).len();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = transactions(&bridge.log_text(), 0).len();
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        }
    }
    let before = transactions(&bridge.log_text(), 0);
    let mark = bridge.log_text().len();

    // The restart, with the contact writing all along (the bridge's posts fail or wait).
    let state = world.state.path().to_owned();
    let old_synapse = std::fs::read_to_string(state.join("pids/synapse.pid")).expect("synapse pid");
    let old_synapse = format!("/proc/{}/stat", old_synapse.trim());
    // Running: its stat is there and says neither zombie nor dead.
    let running = || {
        std::fs::read_to_string(&old_synapse).is_ok_and(|stat| {
            let state = stat
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next());
            !matches!(state, Some('Z' | 'X'))
        })
    };
    let restart = tokio::task::spawn_blocking(move || restart_synapse(&state, pause));
    while running() && !restart.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut next = 10;
    while !restart.is_finished() && next < 10 + 2 * (pause as usize + 5) {
        chat.bob
            .send(
                &chat.alice_jid,
                &to_matrix(next),
                Some(&format!("r-{next}")),
            )
            .await;
        next += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = restart.await.expect("restart task");
    eprintln!("{summary}; the contact sent {} during it", next - 10);
    let mut alice_events = Vec::new();
    for i in 10..20 {
        alice_events.push(chat.alice.send_text(&chat.room, &to_xmpp(i)).await);
        chat.bob
            .send(
                &chat.alice_jid,
                &to_matrix(next),
                Some(&format!("r-{next}")),
            )
            .await;
        next += 1;
    }
    let expected: Vec<String> = (10..20).map(to_xmpp).collect();
    assert_received(&mut chat.bob, &expected).await;
    let expected: Vec<String> = (0..next).map(to_matrix).collect();
    assert_bodies(
        &chat.alice,
        &chat.room,
        &chat.bob_ghost,
        "x2m restart",
        &expected,
    )
    .await;

    let log = bridge.log_text();
    let after = transactions(&log, mark);
    let ids = |t: &[(String, Vec<String>)]| t.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    eprintln!("transaction ids before the restart: {:?}", ids(&before));
    eprintln!("transaction ids after the restart: {:?}", ids(&after));
    assert!(
        after
            .iter()
            .any(|(id, _)| before.iter().any(|(old, _)| old == id)),
        "Synapse did not reuse a transaction id after its restart (before {:?}, after {:?}): \
         this test no longer covers the reuse",
        ids(&before),
        ids(&after)
    );

    // A true redelivery: a transaction that carried one of alice's messages, PUT again with the
    // same id and the same events (fetched from Synapse), then its events under a new id.
    let (txn_id, event_ids) = after
        .iter()
        .find(|(_, events)| events.iter().any(|e| alice_events.contains(e)))
        .cloned()
        .expect("a transaction with one of alice's messages");
    let mut events = Vec::new();
    for id in &event_ids {
        let (status, event) = chat.alice.event(&chat.room, id).await;
        assert_eq!(status, 200, "event {id}: {event}");
        events.push(event);
    }
    eprintln!(
        "redelivering transaction {txn_id} ({} events)",
        events.len()
    );
    let hs_token = files.registration_value("hs_token");
    let http = reqwest::Client::new();
    let mark = bridge.log_text().len();
    for id in [txn_id.clone(), format!("redelivery.{txn_id}")] {
        let url = format!(
            "{}/_matrix/app/v1/transactions/{}",
            files.as_url(),
            encode(&id)
        );
        let body = json!({ "events": events });
        let (status, out) = call(&http, "PUT", &url, Some(&hs_token), Some(body)).await;
        assert_eq!(status, 200, "PUT transaction {id}: {out}");
    }
    assert_nothing_more(&mut chat.bob, Duration::from_secs(5)).await;
    let log = &bridge.log_text()[mark..];
    assert!(
        log.contains("transaction already processed"),
        "the redelivery was not recognised:\n{log}"
    );
    assert!(
        log.contains("event already sent"),
        "the events under a new id did not reach the message map:\n{log}"
    );
    // The Matrix side did not change either.
    assert_bodies(
        &chat.alice,
        &chat.room,
        &chat.bob_ghost,
        "x2m restart",
        &expected,
    )
    .await;
    bridge.stop();
}

/// The bot's messages in `room` containing `needle`.
async fn bot_says(user: &MatrixUser, room: &str, needle: &str) -> Vec<Value> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(needle))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kicked_ghost_is_reported_and_comes_back() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    // private_chat: the invited ghost gets no power, so the user may kick it.
    let mut chat = open_chat(&world, &files, "private_chat").await;
    let mgmt = management_room(&chat.alice).await;

    let kick = json!({"user_id": chat.bob_ghost, "reason": "testing"});
    let (status, out) = chat
        .alice
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/kick", encode(&chat.room)),
            Some(kick),
        )
        .await;
    assert_eq!(status, 200, "kick: {out}");
    chat.alice
        .wait_for_membership(&chat.room, &chat.bob_ghost, "leave")
        .await;

    // The contact writes: the ghost cannot post, so the user is told where to look.
    chat.bob
        .send(&chat.alice_jid, "while you kicked me", Some("k-1"))
        .await;
    let deadline = Instant::now() + WAIT;
    while bot_says(&chat.alice, &mgmt, "could not be shown")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the user was not told");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let told = bot_says(&chat.alice, &mgmt, "could not be shown").await;
    assert_eq!(told.len(), 1, "{told:#?}");
    let told = told[0]["content"]["body"].as_str().unwrap_or_default();
    assert!(told.contains("invite it back"), "{told}");
    // The user writes while the ghost is away (the homeserver pushes nothing of the room now).
    chat.alice
        .send_text(&chat.room, "written while you were out")
        .await;

    // Invited back: the ghost joins, what was written meanwhile goes, later messages flow.
    let invite = json!({"user_id": chat.bob_ghost});
    let (status, out) = chat
        .alice
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(&chat.room)),
            Some(invite),
        )
        .await;
    assert_eq!(status, 200, "invite: {out}");
    chat.alice
        .wait_for_membership(&chat.room, &chat.bob_ghost, "join")
        .await;
    chat.bob
        .send(&chat.alice_jid, "after the invite", Some("k-2"))
        .await;
    chat.alice
        .wait_for_message(&chat.room, &chat.bob_ghost, "after the invite")
        .await;
    chat.alice
        .send_text(&chat.room, "alice after the invite")
        .await;
    let expected = ["written while you were out", "alice after the invite"].map(String::from);
    assert_received(&mut chat.bob, &expected).await;
    let from_bob = bodies_from(&chat.alice, &chat.room, &chat.bob_ghost).await;
    let shown: Vec<&String> = from_bob.iter().filter(|b| !b.contains("bridged")).collect();
    assert_eq!(shown, ["hello alice", "after the invite"], "{from_bob:#?}");
    bridge.stop();
}
