//! Benchmark, not a test (`#[ignore]`: `cargo test` never runs it; run it with
//! `scripts/bench/txn_latency.sh`): how long the bridge takes to answer the homeserver's
//! appservice transactions while a Matrix user writes 1,000 messages into a portal as fast as
//! Synapse takes them, and how long until the XMPP contact has all of them.
//!
//! The real world (Synapse, Prosody), the bridge as a child process, a python-omemo contact. The
//! registration points Synapse at `scripts/bench/as_proxy.py`, a logging reverse proxy in front
//! of the bridge's listener, so the answer time is measured from outside and any build of the
//! bridge can be measured unchanged: `BENCH_BRIDGE_BIN` picks the binary (default: this tree's).
//!
//! Two modes (`BENCH_MODE`):
//! - `queued` (default): the proxy holds the homeserver's transactions back while the user
//!   writes, so all the messages wait in Synapse's appservice queue; then it lets them through
//!   (Synapse sends them in transactions of up to 100 events) and times the drain.
//! - `live`: nothing is held; the transactions come as Synapse persists the messages.
//!
//! Env: `BENCH_MESSAGES` (1000), `BENCH_SENDERS` (concurrent `PUT /send` requests, 4),
//! `BENCH_OUT` (a file for the JSON line, optional), `WORLD_KEEP=1` (keep the world's state dir
//! with the bridge's log and the proxy's `txns.jsonl`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::e2e::ghost;
use common::omemo_peer::OmemoPeer;
use common::{MatrixUser, World, bridge_bin, encode, free_port, repo};
use serde_json::{Value, json};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the bridge binary");
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Config and registration made by the binary under test; Synapse is sent to `proxy_port`, the
/// bridge listens on `as_port`.
fn generate(bin: &str, dir: &Path, synapse_port: u16, proxy_port: u16, as_port: u16) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let sets = [
        format!("homeserver.address=http://127.0.0.1:{synapse_port}"),
        "homeserver.domain=localhost".to_owned(),
        format!("appservice.address=http://127.0.0.1:{proxy_port}"),
        format!("appservice.listen=127.0.0.1:{as_port}"),
        "logging.level=interop_bridge=debug,info".to_owned(),
    ];
    let mut args = vec!["generate-config"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, run(bin, &args)).expect("write config");
    run(
        bin,
        &[
            "generate-registration",
            "-c",
            config.to_str().expect("utf-8"),
        ],
    );
    config
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file_text(path: &Path, needle: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(path).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} did not log {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes `count` messages into `room`, `senders` requests at a time.
async fn send_burst(alice: Arc<MatrixUser>, room: String, count: usize, senders: usize, tag: &str) {
    let mut tasks = Vec::new();
    for s in 0..senders {
        let alice = alice.clone();
        let room = room.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (s..count).step_by(senders) {
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{tag}-{i}",
                    encode(&room)
                );
                let body = json!({"msgtype": "m.text", "body": format!("{tag} {i:04}")});
                let (status, out) = alice.call("PUT", &path, Some(body)).await;
                assert_eq!(status, 200, "send {i}: {out}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench/txn_latency.sh"]
async fn txn_latency_1000_messages() {
    let count = env_usize("BENCH_MESSAGES", 1000);
    let senders = env_usize("BENCH_SENDERS", 4).max(1);
    let mode = std::env::var("BENCH_MODE").unwrap_or_else(|_| "queued".to_owned());
    assert!(
        mode == "queued" || mode == "live",
        "BENCH_MODE: queued or live"
    );
    let bin = bridge_bin();
    let tag = "bench-q9";
    let proxy_port = free_port();
    let as_port = free_port();
    let mut config = None;
    let world = World::start("synapse prosody", |state, synapse_port| {
        let c = generate(
            &bin,
            &state.join("bridge"),
            synapse_port,
            proxy_port,
            as_port,
        );
        let reg = c.with_file_name("registration.yaml");
        config = Some(c);
        vec![reg]
    });
    let config = config.expect("generated");
    let dir = config.parent().expect("dir").to_owned();
    let text = std::fs::read_to_string(&config).expect("config");
    let network = format!(
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\n",
        world.var("XMPP_SERVER"),
        world.var("XMPP_CA_FILE")
    );
    std::fs::write(&config, text.replace("[network]\n", &network)).expect("write config");
    let config_arg = config.to_str().expect("utf-8").to_owned();

    let txns = dir.join("txns.jsonl");
    let proxy_log = dir.join("proxy.log");
    let hold = dir.join("hold");
    let mut proxy = Child(
        Command::new(format!("{}/bin/python", world.var("WORLD_VENV")))
            .arg(repo().join("scripts/bench/as_proxy.py"))
            .args([&proxy_port.to_string(), &as_port.to_string()])
            .arg(&txns)
            .arg(tag)
            .env("AS_PROXY_HOLD", &hold)
            .stdout(std::fs::File::create(&proxy_log).expect("proxy log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start as_proxy.py"),
    );
    wait_for_file_text(&proxy_log, "listening", &mut proxy, "as_proxy.py");

    let bridge_log = dir.join("bridge.log");
    let mut bridge = Child(
        Command::new(&bin)
            .args(["run", "-c", &config_arg])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&bridge_log).expect("bridge log"))
            .spawn()
            .expect("spawn bridge"),
    );
    wait_for_file_text(&bridge_log, "ready", &mut bridge, "the bridge");

    let alice = MatrixUser::register(&world, "alice").await;
    let pw = dir.join("pw-alice.txt");
    std::fs::write(&pw, "pw-alice\n").expect("password file");
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let bob_jid = format!("bob@{}", world.var("XMPP_DOMAIN"));
    let out = run(
        &bin,
        &[
            "link",
            &alice.user_id,
            &alice_jid,
            "--password-file",
            pw.to_str().expect("utf-8"),
            "-c",
            &config_arg,
        ],
    );
    assert!(out.contains("linked"), "link: {out}");

    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob_jid);
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice.send_text(&room, "first contact").await;
    assert_eq!(
        bob.wait_received(1, Duration::from_secs(60)).await[0]["body"],
        "first contact"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The burst: `senders` requests in flight, each its own transaction id. In `queued` mode
    // the clock starts when the proxy lets the queue through.
    let alice = Arc::new(alice);
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
    };
    let queued = mode == "queued";
    if queued {
        std::fs::write(&hold, "").expect("hold file");
    }
    let burst_start = Instant::now();
    let send_all = send_burst(alice.clone(), room.clone(), count, senders, tag);
    let limit = Duration::from_secs(1800);
    let (sent_in, delivered_in, got, t0_unix) = if queued {
        send_all.await;
        let sent_in = burst_start.elapsed();
        // Synapse hands a persisted event to its appservice queue asynchronously.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t0 = Instant::now();
        let t0_unix = unix_now();
        std::fs::remove_file(&hold).expect("release the hold");
        let got = bob.wait_received(count, limit).await;
        (sent_in, t0.elapsed(), got, t0_unix)
    } else {
        let t0_unix = unix_now();
        let sent = async {
            send_all.await;
            burst_start.elapsed()
        };
        let received = async {
            let got = bob.wait_received(count, limit).await;
            (burst_start.elapsed(), got)
        };
        let (sent_in, (delivered_in, got)) = tokio::join!(sent, received);
        (sent_in, delivered_in, got, t0_unix)
    };
    let mut bodies: Vec<String> = got
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), count, "distinct messages at the contact");

    // Wait until every tagged event has been in an answered transaction (Synapse may still be
    // retrying one); after 60 s, report what there is (`tagged_answered` says how many).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (lines, tagged_answered) = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&txns)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let tagged: u64 = lines
            .iter()
            .filter(|l| l["status"] == 200)
            .map(|l| l["tagged"].as_u64().unwrap_or(0))
            .sum();
        if tagged >= count as u64 || Instant::now() > deadline {
            if tagged < count as u64 {
                eprintln!(
                    "[bench] warning: only {tagged} of {count} messages in answered transactions"
                );
            }
            break (lines, tagged);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let burst: Vec<&Value> = lines
        .iter()
        .filter(|l| l["tagged"].as_u64().unwrap_or(0) > 0)
        .collect();
    let mut ms: Vec<f64> = burst.iter().filter_map(|l| l["ms"].as_f64()).collect();
    ms.sort_by(f64::total_cmp);
    let events: Vec<u64> = burst.iter().filter_map(|l| l["events"].as_u64()).collect();
    let not_ok = burst.iter().filter(|l| l["status"] != 200).count();
    let last_answer = burst
        .iter()
        .filter_map(|l| Some(l["t_recv"].as_f64()? + l["ms"].as_f64()? / 1000.0))
        .fold(f64::NAN, f64::max)
        - t0_unix;
    // When the bridge had the server's ack for the last message: its last "message sent" debug
    // line (both builds log one per message), as seconds after t0 (same clock, time of day).
    let log_text = std::fs::read_to_string(&bridge_log).unwrap_or_default();
    let last_sent = log_text
        .lines()
        .rfind(|l| l.contains("message sent"))
        .and_then(|l| {
            let t = l.get(11..26)?; // 2026-12-04T21:07:31.757969Z
            let h: f64 = t.get(0..2)?.parse().ok()?;
            let m: f64 = t.get(3..5)?.parse().ok()?;
            let s: f64 = t.get(6..)?.parse().ok()?;
            let d = h * 3600.0 + m * 60.0 + s - t0_unix.rem_euclid(86_400.0);
            Some(if d < -43_200.0 { d + 86_400.0 } else { d })
        });
    let summary = json!({
        "bridge": bin,
        "mode": mode,
        "messages": count,
        "senders": senders,
        "transactions": burst.len(),
        "transactions_not_200": not_ok,
        "tagged_answered": tagged_answered,
        "events_per_txn_mean": events.iter().sum::<u64>() as f64 / events.len().max(1) as f64,
        "events_per_txn_max": events.iter().max(),
        "answer_ms_p50": percentile(&ms, 50.0),
        "answer_ms_p90": percentile(&ms, 90.0),
        "answer_ms_p99": percentile(&ms, 99.0),
        "answer_ms_max": ms.last(),
        "answer_ms_sum": ms.iter().sum::<f64>(),
        "sent_s": sent_in.as_secs_f64(),
        "last_txn_answered_s": last_answer,
        "last_sent_by_bridge_s": last_sent,
        "all_at_contact_s": delivered_in.as_secs_f64(),
    });
    eprintln!(
        "[bench] {mode}, {count} messages, {senders} senders: {} transactions ({} not 200), \
         {:.1} events each (max {}); answer p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         sent in {:.1} s; from {}: last transaction answered at {:.1} s, last message acked \
         by the server at {:.1} s, all at the contact \
         at {:.1} s",
        burst.len(),
        not_ok,
        summary["events_per_txn_mean"].as_f64().unwrap_or(0.0),
        summary["events_per_txn_max"],
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
        sent_in.as_secs_f64(),
        if queued {
            "the release"
        } else {
            "the first send"
        },
        last_answer,
        last_sent.unwrap_or(f64::NAN),
        delivered_in.as_secs_f64(),
    );
    println!("{summary}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, format!("{summary}\n")).expect("BENCH_OUT");
    }
    drop(bridge);
    drop(proxy);
}
