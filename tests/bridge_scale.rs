//! Many logins: real Synapse, real Prosody, a python-omemo contact, the bridge as a child.
//!
//! - `a_burst_of_1000_from_a_contact_while_the_user_writes_never_stalls`: the contact sends
//!   1,000 OMEMO messages as fast as it can while the Matrix user writes 20: all 1,000 reach
//!   Matrix in order, once, and the user's 20 reach the contact in order meanwhile. It fails
//!   when progress stops for 30 s, not on a time limit.
//! - `sigterm_with_200_logins_exits_in_time_and_loses_nothing`: 200 accounts linked through
//!   the CLI and connected; messages both ways are sent right before the bridge gets SIGTERM;
//!   it must exit within 10 s (the acceptance bound). After the restart every login is connected
//!   again and every message sent around the stop arrives once.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::e2e::{ghost, link_jid as link, run_cli};
use common::omemo_peer::OmemoPeer;
use common::{BridgeFiles, BridgeProcess, MatrixUser, World, repo};

const LOGINS: usize = 200;
/// The acceptance bound for the shutdown.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(60);
/// How many `link` commands run at once (the bridge links one at a time; this overlaps the CLI
/// processes' start-up with the bridge's work).
const LINKERS: usize = 4;

/// `status` of every login: (connected, all lines).
fn connected(files: &BridgeFiles) -> (usize, usize) {
    let (ok, out, err) = run_cli(files, &["status"]);
    assert!(ok, "status: {out}\n{err}");
    let lines = out.lines().filter(|l| l.contains(" → ")).count();
    let up = out.lines().filter(|l| l.contains(": connected")).count();
    (up, lines)
}

/// Waits until all `LOGINS` logins report connected; returns how long that took.
fn wait_all_connected(files: &BridgeFiles, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (up, lines) = connected(files);
        assert_eq!(lines, LOGINS, "status lists {lines} logins");
        if up == LOGINS {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {up} of {LOGINS} logins connected after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_200_logins_exits_in_time_and_loses_nothing() {
    let mut files = None;
    let world = World::start("synapse prosody", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let registration = f.registration.clone();
        files = Some(f);
        vec![registration]
    });
    let files = Arc::new(files.expect("prepared"));
    let config = std::fs::read_to_string(&files.config).expect("config");
    let network = format!(
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\nsend_timeout_secs = 20\n",
        world.var("XMPP_SERVER"),
        world.var("XMPP_CA_FILE")
    );
    let config = config
        .replace("[network]\n", &network)
        .replace("send_timeout_secs = 30\n", "")
        // Debug logs of 200 connections are large; info is what an operator runs.
        .replace(
            "level = \"interop_bridge=debug,info\"",
            "level = \"interop_bridge=info,warn\"",
        );
    std::fs::write(&files.config, config).expect("write config");
    let domain = world.var("XMPP_DOMAIN").to_owned();

    // scale1..scale199 on the server, plus alice (who chats): 200 accounts.
    let out = Command::new("bash")
        .arg(repo().join("scripts/world/bulk_accounts.sh"))
        .arg(world.state.path())
        .arg((LOGINS - 1).to_string())
        .arg("scale")
        .output()
        .expect("bulk_accounts.sh");
    assert!(
        out.status.success(),
        "bulk_accounts.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("[scale] {}", String::from_utf8_lossy(&out.stdout).trim());

    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    let t = Instant::now();
    link(&files, &alice.user_id, "alice", &domain);
    // The other Matrix users are IDs of our homeserver the bridge never has to talk to here:
    // `link` does not ask the homeserver about them.
    let next = Arc::new(AtomicUsize::new(1));
    let linkers: Vec<_> = (0..LINKERS)
        .map(|_| {
            let (files, next, domain) = (files.clone(), next.clone(), domain.clone());
            std::thread::spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= LOGINS {
                        return;
                    }
                    link(
                        &files,
                        &format!("@scale{n}:localhost"),
                        &format!("scale{n}"),
                        &domain,
                    );
                }
            })
        })
        .collect();
    for linker in linkers {
        linker.join().expect("a link failed");
    }
    let linked_in = t.elapsed();
    let settled = wait_all_connected(&files, WAIT);
    eprintln!(
        "[scale] {LOGINS} logins linked in {linked_in:?} ({:?} each, {LINKERS} CLI processes at once), all connected {settled:?} later",
        linked_in / u32::try_from(LOGINS).expect("small")
    );

    // alice and bob chat; sessions are set up both ways.
    let alice_jid = format!("alice@{domain}");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice.send_text(&room, "before the stop").await;
    assert_eq!(
        bob.wait_received(1, WAIT).await[0]["body"],
        "before the stop"
    );
    bob.send(&alice_jid, "bob before the stop", None).await;
    alice
        .wait_for_message(&room, &bob_ghost, "bob before the stop")
        .await;

    // Right before SIGTERM: three each way, sent without waiting for them to arrive (how many
    // the bridge has handled when the signal comes varies; none may be lost either way).
    let to_bob: Vec<String> = (1..=3).map(|i| format!("around the stop {i}")).collect();
    let to_alice: Vec<String> = (1..=5)
        .map(|i| format!("bob around the stop {i}"))
        .collect();
    for (i, text) in to_bob.iter().enumerate() {
        alice.send_text(&room, text).await;
        bob.send(&alice_jid, &to_alice[i], Some(&format!("bob-{i}")))
            .await;
    }
    let took = bridge.stop_timed(SHUTDOWN_BOUND * 6);
    eprintln!("[scale] SIGTERM with {LOGINS} logins: exited in {took:?}");
    assert!(
        took < SHUTDOWN_BOUND,
        "the bridge took {took:?} to exit after SIGTERM"
    );
    // While it is down: two more from bob (the server keeps them).
    for (i, text) in to_alice.iter().enumerate().skip(3) {
        bob.send(&alice_jid, text, Some(&format!("bob-{i}"))).await;
    }

    let t = Instant::now();
    let _bridge = BridgeProcess::start(&files);
    let started = t.elapsed();
    let reconnected = wait_all_connected(&files, Duration::from_secs(120));
    eprintln!(
        "[scale] restart: ready in {started:?}, all {LOGINS} logins connected {reconnected:?} later"
    );

    // bob gets alice's three, in order, once.
    let got = bob.wait_received(3, WAIT).await;
    let bodies: Vec<&str> = got.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(
        bodies,
        to_bob.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // alice sees bob's five, in order, once.
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<String> = alice
            .messages(&room)
            .await
            .iter()
            .filter(|e| e["sender"] == bob_ghost.as_str())
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .filter(|b| b.contains("around the stop"))
            .collect();
        if seen.len() >= to_alice.len() || Instant::now() > deadline {
            assert_eq!(seen, to_alice, "what alice sees from bob");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Some(event) = bob.next_event(Duration::from_millis(300)).await {
        assert_ne!(event["event"], "received", "more reached bob: {event}");
    }
    let seen = alice
        .count_messages(&room, &bob_ghost, "around the stop")
        .await;
    assert_eq!(seen, to_alice.len(), "a message of bob's arrived twice");
}

/// No new message in either direction for this long is a stall.
const STALL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_1000_from_a_contact_while_the_user_writes_never_stalls() {
    const BURST: usize = 1000;
    const OURS: usize = 20;
    let (world, files) = common::e2e::start();
    let _bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    common::e2e::cli_link(&world, &files, &alice, "alice");
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice.send_text(&room, "hello bob").await;
    bob.wait_received(1, WAIT).await;
    bob.send(&alice_jid, "hello alice", None).await;
    alice
        .wait_for_message(&room, &bob_ghost, "hello alice")
        .await;

    let started = Instant::now();
    bob.command(serde_json::json!({
        "cmd": "burst", "to": alice_jid, "count": BURST, "prefix": "burst"
    }))
    .await;
    // The user writes meanwhile.
    let writer = {
        let (base, token, user_id) = (
            alice.base.clone(),
            alice.token.clone(),
            alice.user_id.clone(),
        );
        let room = room.clone();
        tokio::spawn(async move {
            let alice = MatrixUser {
                http: reqwest::Client::new(),
                base,
                token,
                user_id,
            };
            for i in 0..OURS {
                tokio::time::sleep(Duration::from_millis(300)).await;
                alice.send_text(&room, &format!("ours {i}")).await;
            }
        })
    };
    // Progress of the burst in Matrix: the newest "burst N" keeps moving.
    let mut newest = None;
    let mut progress = Instant::now();
    loop {
        let latest = alice
            .messages(&room)
            .await
            .iter()
            .rev()
            .filter(|e| e["sender"] == bob_ghost.as_str())
            .find_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .filter(|b| b.starts_with("burst "));
        if latest != newest {
            newest = latest;
            progress = Instant::now();
        }
        if newest.as_deref() == Some(&format!("burst {}", BURST - 1)) {
            break;
        }
        assert!(
            progress.elapsed() < STALL,
            "no progress for {STALL:?}; the newest in Matrix is {newest:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let received_in = started.elapsed();
    writer.await.expect("the writer");
    let got = bob.wait_received(OURS, STALL).await;
    let bodies: Vec<&str> = got.iter().filter_map(|e| e["body"].as_str()).collect();
    let expected: Vec<String> = (0..OURS).map(|i| format!("ours {i}")).collect();
    assert_eq!(
        bodies, expected,
        "the contact got the user's messages in order"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let burst: Vec<String> = alice
        .all_messages(&room)
        .await
        .iter()
        .filter(|e| e["sender"] == bob_ghost.as_str())
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with("burst "))
        .collect();
    let expected: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
    assert!(
        burst == expected,
        "all of the burst, in order, once: {} shown",
        burst.len()
    );
    eprintln!(
        "[burst] {BURST} from the contact in Matrix after {:.1} s ({:.0}/s), the user's {OURS} delivered meanwhile",
        received_in.as_secs_f64(),
        BURST as f64 / received_in.as_secs_f64()
    );
}
