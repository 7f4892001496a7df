//! Benchmark, not a test (`#[ignore]`: `cargo test` never runs it; run it with
//! `scripts/bench/e2e.sh`): what one bridged message costs and how long it takes, each way,
//! against the same run's no-bridge baselines.
//!
//! The real world (Synapse, Prosody), the bridge as a child process (plain portals), the Matrix
//! users alice and carol (raw client-server API, one `/sync` loop each), and the python-omemo
//! contacts bob and dave (legacy OMEMO). Four flows:
//! - `m2x`: alice writes in her portal, bob receives (through the bridge: Matrix → XMPP);
//! - `x2m`: bob writes to alice's JID, alice's `/sync` receives (XMPP → Matrix);
//! - `m2m`: alice writes in a room with carol (Synapse only, the Matrix baseline);
//! - `x2x`: bob writes to dave (Prosody only, the XMPP baseline, python crypto at both ends).
//!
//! Each flow runs in modes: `single` (one message in flight: the next is sent when the previous
//! arrived), `burst` (Matrix senders keep `in_flight` `PUT /send` requests going; the python
//! sender encrypts and writes as fast as it can), and `paced` (a message every 1/rate s).
//! Every body is `<tag> <index> @<unix time of sending>`; the receiver's clock is the same, so
//! a latency is receipt time minus that stamp. An XMPP receiver's time is when its stanza
//! handler started (`t_in`, before python decrypts); a python sender's stamp is taken before it
//! encrypts, so `x2m` and `x2x` include one python encryption.
//!
//! The bridge's CPU comes from `/proc/<pid>/stat` (utime + stime) before the first send and
//! 0.5 s after the last receipt; its RSS from `/proc/<pid>/status`, sampled every 50 ms.
//!
//! Env: `BENCH_SINGLE` (100), `BENCH_SMALL` (200), `BENCH_BIG` (1000), `BENCH_IN_FLIGHT` (16),
//! `BENCH_RATE` (20 per second), `BENCH_FLOWS` (`m2x,x2m,m2m,x2x`), `BENCH_OUT` (a file for
//! the JSON), `WORLD_KEEP=1` (keep the world's state dir, the bridge's log in it).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bench::*;
use common::e2e::{ghost, start};
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser, encode};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);
/// How long a run waits without a new message before it counts the rest as lost.
const STALL: Duration = Duration::from_secs(60);

/// One message as a receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    room: String,
    sender: String,
    body: String,
    t: f64,
}

/// `(index, sending time)` from a body `<tag> <index> @<time>`.
fn parse_body(body: &str, tag: &str) -> Option<(usize, f64)> {
    let rest = body.strip_prefix(tag)?.strip_prefix(' ')?;
    let (index, stamp) = rest.split_once(" @")?;
    Some((index.parse().ok()?, stamp.parse().ok()?))
}

/// A Matrix user's `/sync` loop: every `m.room.message` of its joined rooms, with the time its
/// sync answer came. `limited` counts timelines Synapse cut short (events would be missing).
struct Inbox {
    seen: Arc<Mutex<Vec<Seen>>>,
    limited: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Inbox {
    async fn start(user: Arc<MatrixUser>) -> Self {
        let filter = json!({
            "room": {
                "timeline": {"limit": 2000, "types": ["m.room.message"]},
                "state": {"types": []},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        });
        let filter = encode(&filter.to_string());
        let (status, first) = user
            .call(
                "GET",
                &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "sync: {first}");
        let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let limited = Arc::new(AtomicU64::new(0));
        let (out, cut) = (seen.clone(), limited.clone());
        let task = tokio::spawn(async move {
            loop {
                let path = format!(
                    "/_matrix/client/v3/sync?timeout=30000&filter={filter}&since={}",
                    encode(&since)
                );
                let (status, body) = user.call("GET", &path, None).await;
                let t = unix_now();
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let rooms = body["rooms"]["join"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let mut got = Vec::new();
                for (room, value) in rooms {
                    if value["timeline"]["limited"] == true {
                        cut.fetch_add(1, Ordering::Relaxed);
                    }
                    for event in value["timeline"]["events"].as_array().into_iter().flatten() {
                        got.push(Seen {
                            room: room.clone(),
                            sender: event["sender"].as_str().unwrap_or_default().to_owned(),
                            body: event["content"]["body"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            t,
                        });
                    }
                }
                out.lock().expect("inbox").extend(got);
                since = body["next_batch"].as_str().unwrap_or(&since).to_owned();
            }
        });
        Self {
            seen,
            limited,
            task,
        }
    }

    /// What `sender` wrote in `room` with `tag`, in timeline order.
    fn tagged(&self, room: &str, sender: &str, tag: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("inbox")
            .iter()
            .filter(|s| s.room == room && s.sender == sender && parse_body(&s.body, tag).is_some())
            .cloned()
            .collect()
    }

    /// Waits until `count` tagged messages arrived (or `STALL` passed without progress).
    async fn wait(&self, room: &str, sender: &str, tag: &str, count: usize) -> Vec<Seen> {
        let mut last = (0, tokio::time::Instant::now());
        loop {
            let got = self.tagged(room, sender, tag);
            if got.len() >= count {
                return got;
            }
            if got.len() != last.0 {
                last = (got.len(), tokio::time::Instant::now());
            } else if last.1.elapsed() > STALL {
                eprintln!("[bench] {tag}: only {} of {count} arrived", got.len());
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for `count` tagged messages at an XMPP peer; other events are dropped.
async fn peer_wait(peer: &mut OmemoPeer, tag: &str, count: usize) -> Vec<Seen> {
    let mut got = Vec::new();
    while got.len() < count {
        let Some(event) = peer.next_event(STALL).await else {
            eprintln!("[bench] {tag}: only {} of {count} arrived", got.len());
            break;
        };
        let body = event["body"].as_str().unwrap_or_default();
        if event["event"] == "received" && parse_body(body, tag).is_some() {
            got.push(Seen {
                room: String::new(),
                sender: event["from"].as_str().unwrap_or_default().to_owned(),
                body: body.to_owned(),
                t: event["t_in"].as_f64().expect("t_in"),
            });
        } else if event["event"] == "error" {
            panic!("{tag}: the peer failed: {event}");
        }
    }
    got
}

async fn matrix_send(user: &MatrixUser, room: &str, tag: &str, i: usize) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{tag}-{i}",
        encode(room)
    );
    let body = json!({"msgtype": "m.text", "body": format!("{tag} {i} @{:.6}", unix_now())});
    let (status, out) = user.call("PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "send {tag} {i}: {out}");
}

/// Sends `count` messages from a Matrix user: `in_flight` requests at a time, or one every
/// `interval`.
fn matrix_many(
    user: Arc<MatrixUser>,
    room: String,
    tag: String,
    count: usize,
    mode: Mode,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        match mode {
            Mode::Burst { in_flight } => {
                for s in 0..in_flight {
                    let (user, room, tag) = (user.clone(), room.clone(), tag.clone());
                    tasks.push(tokio::spawn(async move {
                        for i in (s..count).step_by(in_flight) {
                            matrix_send(&user, &room, &tag, i).await;
                        }
                    }));
                }
            }
            Mode::Paced { per_second } => {
                let start = tokio::time::Instant::now();
                for i in 0..count {
                    let at = start + Duration::from_secs_f64(i as f64 / per_second);
                    tokio::time::sleep_until(at).await;
                    let (user, room, tag) = (user.clone(), room.clone(), tag.clone());
                    tasks.push(tokio::spawn(async move {
                        matrix_send(&user, &room, &tag, i).await;
                    }));
                }
            }
            Mode::Single => unreachable!("single is sent one by one"),
        }
        for t in tasks {
            t.await.expect("sender");
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flow {
    M2x,
    X2m,
    /// Two contacts (bob and dave) into two portals of the same login at once, half each.
    X2m2,
    M2m,
    X2x,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::M2x => "m2x",
            Flow::X2m => "x2m",
            Flow::X2m2 => "x2m2",
            Flow::M2m => "m2m",
            Flow::X2x => "x2x",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Single,
    Burst { in_flight: usize },
    Paced { per_second: f64 },
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Single => "single".to_owned(),
            Mode::Burst { in_flight } => format!("burst/{in_flight}"),
            Mode::Paced { per_second } => format!("paced {per_second}/s"),
        }
    }
}

/// Everything a run needs.
struct Bench {
    alice: Arc<MatrixUser>,
    alice_inbox: Inbox,
    carol_inbox: Inbox,
    bob: OmemoPeer,
    dave: OmemoPeer,
    alice_jid: String,
    bob_ghost: String,
    portal: String,
    dave_ghost: String,
    dave_portal: String,
    baseline_room: String,
    bridge_pid: u32,
    synapse_pid: u32,
    ticks: f64,
    runs: usize,
}

impl Bench {
    /// One flow in one mode: sends `count`, waits for them, measures.
    async fn run(&mut self, flow: Flow, mode: Mode, count: usize) -> Value {
        self.runs += 1;
        let tag = format!("r{}{}", self.runs, flow.name());
        // What the peers reported since (receipts of the last run, mostly) is read and dropped:
        // a peer whose output nobody reads blocks once the pipe is full, and sends nothing.
        for peer in [&mut self.bob, &mut self.dave] {
            while peer.next_event(Duration::from_millis(20)).await.is_some() {}
        }
        // Synapse still working off the run before (sync wake-ups, pushes to the bridge)
        // would slow this one down: start when it is quiet.
        quiet(self.synapse_pid, self.ticks, 0.1).await;
        let cpu0 = cpu_secs(self.bridge_pid, self.ticks);
        let synapse_cpu0 = cpu_secs(self.synapse_pid, self.ticks);
        let started = unix_now();
        let xmpp_to = if matches!(flow, Flow::X2m | Flow::X2m2) {
            self.alice_jid.clone()
        } else {
            format!("dave@{}", domain(&self.alice_jid))
        };
        let got = match mode {
            Mode::Single => {
                let mut got = Vec::new();
                for i in 0..count {
                    match flow {
                        Flow::M2x | Flow::M2m => {
                            let room = self.room(flow);
                            matrix_send(&self.alice, &room, &tag, i).await;
                        }
                        Flow::X2m2 => unreachable!("two portals are measured in bursts only"),
                        Flow::X2m | Flow::X2x => {
                            let text = format!("{tag} {i} @{:.6}", unix_now());
                            self.bob.send(&xmpp_to, &text, None).await;
                        }
                    }
                    got = self.receive(flow, &tag, i + 1, &got).await;
                }
                got
            }
            Mode::Burst { .. } | Mode::Paced { .. } => {
                let sender = match flow {
                    Flow::M2x | Flow::M2m => Some(matrix_many(
                        self.alice.clone(),
                        self.room(flow),
                        tag.clone(),
                        count,
                        mode,
                    )),
                    Flow::X2m | Flow::X2x | Flow::X2m2 => {
                        let interval = match mode {
                            Mode::Paced { per_second } => 1.0 / per_second,
                            _ => 0.0,
                        };
                        let mine = if flow == Flow::X2m2 { count / 2 } else { count };
                        self.bob
                            .command(json!({"cmd": "burst", "to": xmpp_to, "count": mine,
                                "prefix": tag, "stamp": true, "interval": interval}))
                            .await;
                        if flow == Flow::X2m2 {
                            self.dave
                                .command(json!({"cmd": "burst", "to": xmpp_to,
                                    "count": count - mine, "prefix": format!("{tag}d"),
                                    "stamp": true, "interval": interval}))
                                .await;
                        }
                        None
                    }
                };
                let got = self.receive(flow, &tag, count, &[]).await;
                if let Some(sender) = sender {
                    sender.await.expect("the Matrix sender");
                }
                got
            }
        };
        // What the run set off after its last message arrived (receipts answered, the
        // status events they become, flushes) is its cost too, and must not fall into the
        // next run: wait until the bridge is quiet.
        let cpu = settle(self.bridge_pid, self.ticks).await - cpu0;
        let synapse_cpu = cpu_secs(self.synapse_pid, self.ticks) - synapse_cpu0;
        let mut row = self.measure(flow, mode, count, &tag, &got, cpu, started);
        // The homeserver's share: whether a direction is bound by Synapse (one Python process)
        // rather than by the bridge.
        row["synapse_cpu_ms_per_message"] = json!(synapse_cpu * 1000.0 / count as f64);
        eprintln!(
            "[bench] {:4} {:14} {:5}: Synapse CPU {:5.2} ms/msg",
            flow.name(),
            mode.label(),
            count,
            synapse_cpu * 1000.0 / count as f64
        );
        row
    }

    fn room(&self, flow: Flow) -> String {
        if flow == Flow::M2x {
            self.portal.clone()
        } else {
            self.baseline_room.clone()
        }
    }

    /// Everything of `tag` the flow's receiver has, once it has `count`.
    async fn receive(&mut self, flow: Flow, tag: &str, count: usize, had: &[Seen]) -> Vec<Seen> {
        let mut got = had.to_vec();
        match flow {
            Flow::M2x => got.extend(peer_wait(&mut self.bob, tag, count - had.len()).await),
            Flow::X2x => got.extend(peer_wait(&mut self.dave, tag, count - had.len()).await),
            Flow::X2m => {
                got = (self.alice_inbox)
                    .wait(&self.portal, &self.bob_ghost, tag, count)
                    .await
            }
            Flow::X2m2 => {
                // dave's messages renumbered after bob's, under bob's tag.
                let half = count / 2;
                let dave_tag = format!("{tag}d");
                let (bob, dave) = tokio::join!(
                    self.alice_inbox
                        .wait(&self.portal, &self.bob_ghost, tag, half),
                    self.alice_inbox.wait(
                        &self.dave_portal,
                        &self.dave_ghost,
                        &dave_tag,
                        count - half
                    )
                );
                got = bob;
                got.extend(dave.into_iter().filter_map(|mut seen| {
                    let (i, sent) = parse_body(&seen.body, &dave_tag)?;
                    seen.body = format!("{tag} {} @{sent:.6}", i + half);
                    Some(seen)
                }));
            }
            Flow::M2m => {
                got = (self.carol_inbox)
                    .wait(&self.baseline_room, &self.alice.user_id, tag, count)
                    .await
            }
        }
        got
    }

    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        flow: Flow,
        mode: Mode,
        count: usize,
        tag: &str,
        got: &[Seen],
        cpu: f64,
        started: f64,
    ) -> Value {
        let parsed: Vec<(usize, f64, f64)> = got
            .iter()
            .filter_map(|s| parse_body(&s.body, tag).map(|(i, sent)| (i, sent, s.t)))
            .collect();
        let distinct: HashSet<usize> = parsed.iter().map(|p| p.0).collect();
        // The order the messages were written in: the index for the python sender, the
        // timeline (the sender's own sync) for a Matrix sender with several requests in flight.
        let expected: Vec<usize> = match (flow, mode) {
            (Flow::M2x | Flow::M2m, Mode::Burst { .. } | Mode::Paced { .. }) => {
                let room = self.room(flow);
                self.alice_inbox
                    .tagged(&room, &self.alice.user_id, tag)
                    .iter()
                    .filter_map(|s| parse_body(&s.body, tag).map(|p| p.0))
                    .collect()
            }
            _ => (0..count).collect(),
        };
        let rank: HashMap<usize, usize> =
            expected.iter().enumerate().map(|(r, i)| (*i, r)).collect();
        // Order holds per sender: for two contacts, bob's half and dave's apart.
        let half = if flow == Flow::X2m2 { count / 2 } else { count };
        let mut highest = [None, None];
        let mut out_of_order = 0;
        for (i, _, _) in &parsed {
            let r = rank.get(i).copied();
            let h = &mut highest[usize::from(*i >= half)];
            if r < *h {
                out_of_order += 1;
            }
            *h = (*h).max(r);
        }
        let mut latency: Vec<f64> = parsed.iter().map(|p| (p.2 - p.1) * 1000.0).collect();
        latency.sort_by(f64::total_cmp);
        let first_sent = parsed.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let last_seen = parsed.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        let span = (last_seen - first_sent.min(last_seen)).max(1e-9);
        let row = json!({
            "flow": flow.name(),
            "mode": mode.label(),
            "messages": count,
            "received": parsed.len(),
            "lost": count - distinct.len().min(count),
            "duplicated": parsed.len() - distinct.len(),
            "out_of_order": out_of_order,
            "p50_ms": percentile(&latency, 50.0),
            "p99_ms": percentile(&latency, 99.0),
            "max_ms": latency.last(),
            "per_second": distinct.len() as f64 / span,
            "seconds": unix_now() - started,
            "bridge_cpu_ms_per_message": cpu * 1000.0 / count as f64,
            "bridge_cpu_s": cpu,
        });
        eprintln!(
            "[bench] {:4} {:14} {:5}: p50 {:7.1} ms  p99 {:7.1} ms  {:6.1} msg/s  bridge CPU \
             {:5.2} ms/msg  lost {} dup {} ooo {}",
            flow.name(),
            mode.label(),
            count,
            row["p50_ms"].as_f64().unwrap_or(f64::NAN),
            row["p99_ms"].as_f64().unwrap_or(f64::NAN),
            row["per_second"].as_f64().unwrap_or(f64::NAN),
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

fn domain(jid: &str) -> &str {
    jid.split_once('@').map_or(jid, |(_, d)| d)
}

/// Samples `pid`'s VmRSS every 50 ms while `on`; the highest value in KiB.
fn rss_sampler(pid: u32, on: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while on.load(Ordering::Relaxed) {
            peak = peak.max(status_kib(pid, "VmRSS"));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench/e2e.sh"]
async fn e2e_messages() {
    let single = env_usize("BENCH_SINGLE", 100);
    let small = env_usize("BENCH_SMALL", 200);
    let big = env_usize("BENCH_BIG", 1000);
    let in_flight = env_usize("BENCH_IN_FLIGHT", 16).max(1);
    let rate = env_usize("BENCH_RATE", 20).max(1) as f64;
    let flows_env = std::env::var("BENCH_FLOWS").unwrap_or_else(|_| "m2x,x2m,m2m,x2x".into());
    let flows: Vec<Flow> = [Flow::M2x, Flow::X2m, Flow::M2m, Flow::X2x]
        .into_iter()
        .filter(|f| flows_env.split(',').any(|n| n.trim() == f.name()))
        .collect();
    let load_before = load_average();

    let (world, files) = start();
    // The bench measures the bridge as deployed: info logging, not the tests' debug.
    let config = std::fs::read_to_string(&files.config).expect("config");
    std::fs::write(
        &files.config,
        config.replace("interop_bridge=debug,info", "info"),
    )
    .expect("config");
    world.add_xmpp_user("dave");
    let bridge = BridgeProcess::start(&files);
    let pid = bridge.pid();
    let alice = Arc::new(MatrixUser::register(&world, "alice").await);
    let carol = Arc::new(MatrixUser::register(&world, "carol").await);
    common::e2e::cli_link(&world, &files, &alice, "alice");
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let mut dave = OmemoPeer::start(&world, "dave", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let portal = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&portal, &bob_ghost, "join").await;
    let dave_ghost = ghost(&dave.bare);
    let dave_portal = alice.create_dm(&dave_ghost).await;
    alice
        .wait_for_membership(&dave_portal, &dave_ghost, "join")
        .await;
    let baseline_room = alice.create_dm(&carol.user_id).await;
    carol.join(&baseline_room).await;
    // Sessions both ways before anything is timed.
    alice.send_text(&portal, "hello bob").await;
    bob.wait_received(1, LIMIT).await;
    bob.send(&alice_jid, "hello alice", None).await;
    alice
        .wait_for_message(&portal, &bob_ghost, "hello alice")
        .await;
    alice.send_text(&dave_portal, "hello dave").await;
    dave.wait_received(1, LIMIT).await;
    dave.send(&alice_jid, "hello alice", None).await;
    alice
        .wait_for_message(&dave_portal, &dave_ghost, "hello alice")
        .await;
    bob.send(&dave.bare.clone(), "hello dave", None).await;
    dave.wait_received(1, LIMIT).await;
    let alice_inbox = Inbox::start(alice.clone()).await;
    let carol_inbox = Inbox::start(carol.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ticks = clock_ticks();
    let idle_cpu0 = cpu_secs(pid, ticks);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu_per_s = (cpu_secs(pid, ticks) - idle_cpu0) / 5.0;
    let idle_rss = status_kib(pid, "VmRSS");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = rss_sampler(pid, sampling.clone());

    let mut bench = Bench {
        alice,
        alice_inbox,
        carol_inbox,
        bob,
        dave,
        alice_jid,
        bob_ghost,
        portal,
        dave_ghost,
        dave_portal,
        baseline_room,
        bridge_pid: pid,
        synapse_pid: std::fs::read_to_string(world.state.path().join("pids/synapse.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("the world's Synapse pid"),
        ticks,
        runs: 0,
    };
    let mut rows = Vec::new();
    for (mode, count) in [(Mode::Single, single), (Mode::Burst { in_flight }, small)] {
        for &flow in &flows {
            rows.push(bench.run(flow, mode, count).await);
        }
    }
    // Two contacts into two portals of one login at once: their combined rate. Before the
    // thousand-message bursts: after bob's thousand to dave (X→X), his python-omemo client
    // takes a minute or more before it sends again, which would spoil this and the next run.
    if flows.contains(&Flow::X2m) {
        rows.push(bench.run(Flow::X2m2, Mode::Burst { in_flight }, big).await);
    }
    // A single Matrix sender, one request at a time, as fast as Synapse answers: the rate a
    // portal's ordered posting is compared with.
    if flows.contains(&Flow::M2m) {
        rows.push(
            bench
                .run(Flow::M2m, Mode::Burst { in_flight: 1 }, big)
                .await,
        );
    }
    for &flow in &flows {
        rows.push(bench.run(flow, Mode::Burst { in_flight }, big).await);
    }
    // Paced last: after a thousand messages the python peers sometimes stall in it (their
    // own x2x baseline too), which should not spoil the runs above.
    for &flow in &flows {
        let paced = Mode::Paced { per_second: rate };
        rows.push(bench.run(flow, paced, small).await);
    }
    sampling.store(false, Ordering::Relaxed);
    let peak_rss = sampler.join().expect("sampler");
    let limited = bench.alice_inbox.limited.load(Ordering::Relaxed)
        + bench.carol_inbox.limited.load(Ordering::Relaxed);
    // Latency and throughput next to the same mode's baselines.
    let baseline = |flow: &str, mode: &Value, count: &Value, key: &str| {
        rows.iter()
            .find(|r| r["flow"] == flow && &r["mode"] == mode && &r["messages"] == count)
            .and_then(|r| r[key].as_f64())
    };
    let mut table = Vec::new();
    for row in &rows {
        let mut row = row.clone();
        if Flow::M2x.name() == row["flow"] || Flow::X2m.name() == row["flow"] {
            for (base, key) in [("m2m", "vs_m2m"), ("x2x", "vs_x2x")] {
                let p50 = baseline(base, &row["mode"], &row["messages"], "p50_ms");
                let rate = baseline(base, &row["mode"], &row["messages"], "per_second");
                if let (Some(p50), Some(rate)) = (p50, rate) {
                    row[key] = json!({
                        "p50_ratio": row["p50_ms"].as_f64().unwrap_or(f64::NAN) / p50,
                        "rate_ratio": row["per_second"].as_f64().unwrap_or(f64::NAN) / rate,
                    });
                }
            }
        }
        // The acceptance of one portal's ordered posting: the single Matrix sender's rate.
        if (Flow::X2m.name() == row["flow"] || Flow::X2m2.name() == row["flow"])
            && let Some(rate) = baseline("m2m", &json!("burst/1"), &row["messages"], "per_second")
        {
            let ratio = row["per_second"].as_f64().unwrap_or(f64::NAN) / rate;
            row["vs_m2m_single_sender_rate"] = json!(ratio);
            eprintln!(
                "[bench] {} {} {}: {ratio:.2}× the single Matrix sender's rate",
                row["flow"], row["mode"], row["messages"]
            );
        }
        table.push(row);
    }
    let summary = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "load_before": load_before, "load_after": load_average()},
        "bridge": {"idle_rss_kib": idle_rss, "peak_rss_kib": peak_rss,
                   "hwm_kib": status_kib(pid, "VmHWM"),
                   "idle_cpu_ms_per_s": idle_cpu_per_s * 1000.0},
        "sync_timelines_cut": limited,
        "runs": table,
    });
    eprintln!(
        "[bench] bridge RSS idle {} KiB, peak during the runs {} KiB; idle CPU {:.2} ms/s; \
         load {} → {}",
        idle_rss,
        peak_rss,
        idle_cpu_per_s * 1000.0,
        summary["machine"]["load_before"],
        summary["machine"]["load_after"]
    );
    println!("{summary}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, format!("{summary:#}\n")).expect("BENCH_OUT");
    }
    drop(bridge);
}
