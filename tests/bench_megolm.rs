//! Benchmark, not a test (`#[ignore]`: `cargo test` never runs it; run it with
//! `scripts/bench/e2e.sh megolm`): the bridge's CPU per message with encryption on both sides,
//! Megolm in an encrypted portal (Element's default) and OMEMO towards the contact.
//!
//! The real world with the bridge's encryption on (`start_encrypted`), the bridge as a child
//! process in release, the Matrix user a matrix-nio client (`MatrixPeer`, python-olm's
//! successor vodozemac underneath) and the contact a python-omemo client (`OmemoPeer`). Runs,
//! each `BENCH_MEGOLM` (100) messages: one at a time each way (each waits for the one before
//! to arrive), then back to back each way (each client sends as fast as it can, without
//! waiting for arrivals). Measured: the bridge's CPU per message (`/proc`, until
//! it is quiet again), p50/p99 latency, rate, lost / duplicated / out of order.
//!
//! Latency here includes the clients' own crypto and polling: Matrix → XMPP is stamped before
//! nio encrypts and read when python-omemo's stanza handler starts; XMPP → Matrix is stamped
//! before python-omemo encrypts and read when the harness gets nio's decrypted event (after
//! its `/sync` long-poll answered). So compare its CPU figures, not its latencies, with the
//! plain portal of `bench_e2e.rs`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::BridgeProcess;
use common::bench::*;
use common::e2e::{add_to_roster_from_phone, ghost, link_jid, start_encrypted};
use common::omemo_peer::OmemoPeer;
use serde_json::{Value, json};
use test_world::MatrixPeer;

const LIMIT: Duration = Duration::from_secs(300);
/// How long a run waits without a new message before it counts the rest as lost.
const STALL: Duration = Duration::from_secs(60);

/// `(index, sending time)` from a body `<tag> <index> @<time>`.
fn parse(body: &str, tag: &str) -> Option<(usize, f64)> {
    let rest = body.strip_prefix(tag)?.strip_prefix(' ')?;
    let (index, stamp) = rest.split_once(" @")?;
    Some((index.parse().ok()?, stamp.parse().ok()?))
}

struct Run {
    name: &'static str,
    count: usize,
    /// (index, sent, seen) in arrival order.
    seen: Vec<(usize, f64, f64)>,
    cpu: f64,
}

impl Run {
    fn report(&self) -> Value {
        let distinct: HashSet<usize> = self.seen.iter().map(|s| s.0).collect();
        let mut highest = None;
        let mut out_of_order = 0;
        for (i, _, _) in &self.seen {
            if Some(*i) < highest {
                out_of_order += 1;
            }
            highest = highest.max(Some(*i));
        }
        let mut latency: Vec<f64> = self.seen.iter().map(|s| (s.2 - s.1) * 1000.0).collect();
        latency.sort_by(f64::total_cmp);
        let first = self.seen.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        let last = self
            .seen
            .iter()
            .map(|s| s.2)
            .fold(f64::NEG_INFINITY, f64::max);
        let rate = distinct.len() as f64 / (last - first.min(last)).max(1e-9);
        let row = json!({
            "run": self.name,
            "messages": self.count,
            "lost": self.count - distinct.len().min(self.count),
            "duplicated": self.seen.len() - distinct.len(),
            "out_of_order": out_of_order,
            "p50_ms": percentile(&latency, 50.0),
            "p99_ms": percentile(&latency, 99.0),
            "per_second": rate,
            "bridge_cpu_ms_per_message": self.cpu * 1000.0 / self.count as f64,
        });
        eprintln!(
            "[bench] {:18} {:4}: p50 {:7.1} ms  p99 {:7.1} ms  {:6.1} msg/s  bridge CPU {:5.2} \
             ms/msg  lost {} dup {} ooo {}",
            self.name,
            self.count,
            row["p50_ms"].as_f64().unwrap_or(f64::NAN),
            row["p99_ms"].as_f64().unwrap_or(f64::NAN),
            rate,
            row["bridge_cpu_ms_per_message"]
                .as_f64()
                .unwrap_or(f64::NAN),
            row["lost"],
            row["duplicated"],
            row["out_of_order"],
        );
        row
    }
}

/// The next `count` tagged messages at the contact: (index, sent, handler start).
async fn at_contact(bob: &mut OmemoPeer, tag: &str, count: usize) -> Vec<(usize, f64, f64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let Some(event) = bob.next_event(STALL).await else {
            eprintln!("[bench] {tag}: only {} of {count} arrived", seen.len());
            break;
        };
        let body = event["body"].as_str().unwrap_or_default();
        if event["event"] == "received"
            && let Some((i, sent)) = parse(body, tag)
        {
            seen.push((i, sent, event["t_in"].as_f64().expect("t_in")));
        }
    }
    seen
}

/// The next `count` tagged messages of `sender` at the Matrix user: (index, sent, read).
async fn at_user(
    alice: &mut MatrixPeer,
    room: &str,
    sender: &str,
    tag: &str,
    count: usize,
) -> Vec<(usize, f64, f64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let Some(event) = alice.next_event(STALL).await else {
            eprintln!("[bench] {tag}: only {} of {count} arrived", seen.len());
            break;
        };
        let t = unix_now();
        let body = event["body"].as_str().unwrap_or_default();
        if event["event"] == "message"
            && event["room_id"] == room
            && event["sender"] == sender
            && let Some((i, sent)) = parse(body, tag)
        {
            assert_eq!(
                event["encrypted"], true,
                "{tag}: a message arrived unencrypted"
            );
            seen.push((i, sent, t));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench/e2e.sh megolm"]
async fn megolm_messages() {
    let count = env_usize("BENCH_MEGOLM", 100).max(1);
    let (world, files) = start_encrypted();
    let config = std::fs::read_to_string(&files.config).expect("config");
    std::fs::write(
        &files.config,
        config.replace("interop_bridge=debug,info", "info"),
    )
    .expect("config");
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let alice_jid = format!("alice@{domain}");
    let bridge = BridgeProcess::start(&files);
    let pid = bridge.pid();
    let ticks = clock_ticks();
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    add_to_roster_from_phone(&world, "alice", &mut bob).await;
    let mut alice = MatrixPeer::start(&world, "alice", &["--auto-join"]).await;
    link_jid(&files, &alice.user_id, "alice", &domain);
    let deadline = std::time::Instant::now() + LIMIT;
    while alice.devices(&bob_ghost).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ghost got no device"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let room = alice.create_dm(&bob_ghost, true).await;
    alice.send(&room, "hello bob").await;
    bob.wait_received(1, LIMIT).await;
    bob.send(&alice_jid, "hello alice", None).await;
    alice.wait_messages(&room, &bob_ghost, 1, LIMIT).await;
    settle(pid, ticks).await;
    let idle_rss = status_kib(pid, "VmRSS");

    let mut rows = Vec::new();
    // One at a time: each waits for the one before to arrive.
    let cpu0 = cpu_secs(pid, ticks);
    let mut seen = Vec::new();
    for i in 0..count {
        alice
            .send(&room, &format!("m1 {i} @{:.6}", unix_now()))
            .await;
        seen.extend(at_contact(&mut bob, "m1", 1).await);
    }
    let cpu = settle(pid, ticks).await - cpu0;
    rows.push(
        Run {
            name: "m2x megolm single",
            count,
            seen,
            cpu,
        }
        .report(),
    );

    let cpu0 = cpu_secs(pid, ticks);
    let mut seen = Vec::new();
    for i in 0..count {
        let text = format!("x1 {i} @{:.6}", unix_now());
        bob.send(&alice_jid, &text, None).await;
        seen.extend(at_user(&mut alice, &room, &bob_ghost, "x1", 1).await);
    }
    let cpu = settle(pid, ticks).await - cpu0;
    rows.push(
        Run {
            name: "x2m megolm single",
            count,
            seen,
            cpu,
        }
        .report(),
    );

    // One after another as fast as each client sends (nio answers a send once the homeserver
    // has it; python-omemo encrypts in a loop), without waiting for arrivals.
    let cpu0 = cpu_secs(pid, ticks);
    for i in 0..count {
        alice
            .send(&room, &format!("m2 {i} @{:.6}", unix_now()))
            .await;
    }
    let seen = at_contact(&mut bob, "m2", count).await;
    let cpu = settle(pid, ticks).await - cpu0;
    rows.push(
        Run {
            name: "m2x megolm back2back",
            count,
            seen,
            cpu,
        }
        .report(),
    );

    let cpu0 = cpu_secs(pid, ticks);
    bob.command(
        json!({"cmd": "burst", "to": alice_jid, "count": count, "prefix": "x2",
        "stamp": true}),
    )
    .await;
    let seen = at_user(&mut alice, &room, &bob_ghost, "x2", count).await;
    let cpu = settle(pid, ticks).await - cpu0;
    rows.push(
        Run {
            name: "x2m megolm back2back",
            count,
            seen,
            cpu,
        }
        .report(),
    );

    let peak = status_kib(pid, "VmHWM");
    eprintln!("[bench] bridge RSS idle {idle_rss} KiB, high-water mark {peak} KiB");
    let summary = json!({
        "bench": "megolm",
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "load": load_average(),
        "bridge": {"idle_rss_kib": idle_rss, "hwm_kib": peak},
        "runs": rows,
    });
    println!("{summary}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, format!("{summary:#}\n")).expect("BENCH_OUT");
    }
    drop(bridge);
}
