//! Benchmark (not a test): resident memory per idle connected XMPP client, and the connect rate.
//!
//! Connects N accounts `PREFIX1..PREFIXN` (password `pw-PREFIXi`) to the world's Prosody with the
//! default `ClientConfig` (STARTTLS, SCRAM, XEP-0198 with resumption, carbons, roster, initial
//! presence), at most C connection attempts at a time, all sharing one rustls config. Each client
//! counts as up once it reported `Connected` and then `Roster`. Then nothing happens for a while,
//! and the RSS growth divided by N is the memory of one idle client.
//!
//! The harness itself holds no task per client: it keeps each `Client` handle and its event
//! receiver in a Vec and drains the receivers with `try_recv` every 100 ms (acknowledging any
//! stanza, as the bridge would), so what is measured is the client, its handle and its channel.
//!
//! Usage: `idle_clients [N=1000] [C=50] [--idle SECS=5] [--prefix bench] [--timeout SECS=60] [--threads T] [--gdb-trim] [--exit-idle]`
//! Env:   XMPP_SERVER (host:port), XMPP_CA_FILE, XMPP_DOMAIN (from the world's `world.env`),
//!        PROSODY_PID (optional: Prosody's RSS is reported too), RUST_LOG (optional tracing).
//! Output: a human summary on stderr, then one JSON line on stdout. Exit 1 when a client failed to
//! connect or was disconnected during the idle period.
//! Raise `ulimit -n` above N + 100 first (scripts/bench/idle_clients.sh does all of this).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;
use tokio::sync::mpsc::error::TryRecvError;
use xmpp_omemo::Jid;
use xmpp_omemo::stream::{Client, ClientConfig, Event, tls_client_config};

struct Args {
    n: usize,
    concurrency: usize,
    idle: Duration,
    prefix: String,
    timeout: Duration,
    threads: Option<usize>,
    /// Exit right after the idle measurement, without closing anything: under heaptrack, what is
    /// still allocated at exit is then the idle clients.
    exit_idle: bool,
    /// After the idle measurement, have gdb call glibc's `malloc_trim(0)` in this process (there
    /// is no way to call it from safe Rust) and measure again.
    gdb_trim: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        n: 1000,
        concurrency: 50,
        idle: Duration::from_secs(5),
        prefix: "bench".into(),
        timeout: Duration::from_secs(60),
        threads: None,
        exit_idle: false,
        gdb_trim: false,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--idle" => args.idle = Duration::from_secs_f64(value("--idle")?.parse()?),
            "--prefix" => args.prefix = value("--prefix")?,
            "--timeout" => args.timeout = Duration::from_secs_f64(value("--timeout")?.parse()?),
            "--threads" => args.threads = Some(value("--threads")?.parse()?),
            "--exit-idle" => args.exit_idle = true,
            "--gdb-trim" => args.gdb_trim = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: idle_clients [N=1000] [C=50] [--idle SECS=5] [--prefix bench] [--timeout SECS=60] [--threads T] [--gdb-trim] [--exit-idle]"
                );
                std::process::exit(0);
            }
            _ if positional == 0 => (args.n, positional) = (a.parse().context("N")?, 1),
            _ if positional == 1 => (args.concurrency, positional) = (a.parse().context("C")?, 2),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    if args.n == 0 || args.concurrency == 0 {
        bail!("N and C must be at least 1");
    }
    Ok(args)
}

/// Memory of a process, in KiB, from /proc/PID/status and /proc/PID/smaps_rollup.
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    vm_rss: u64,
    rss_anon: u64,
    rss_file: u64,
    /// smaps_rollup `Anonymous`: anonymous pages mapped, the heap and the thread stacks.
    anonymous: u64,
    /// smaps_rollup `Private_Dirty`.
    private_dirty: u64,
}

fn field_kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mem_of(pid: &str) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Mem {
        vm_rss: field_kb(&status, "VmRSS"),
        rss_anon: field_kb(&status, "RssAnon"),
        rss_file: field_kb(&status, "RssFile"),
        anonymous: field_kb(&rollup, "Anonymous"),
        private_dirty: field_kb(&rollup, "Private_Dirty"),
    }
}

fn mem_json(m: Mem) -> serde_json::Value {
    json!({"vm_rss_kib": m.vm_rss, "rss_anon_kib": m.rss_anon, "rss_file_kib": m.rss_file, "anonymous_kib": m.anonymous, "private_dirty_kib": m.private_dirty})
}

/// Bytes per client between two snapshots.
fn per_client(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) * 1024.0 / n.max(1) as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Runs `gdb -p <self> -batch -ex 'call (int) malloc_trim(0)'` (glibc) and returns the memory
/// afterwards; `None` when gdb is missing or could not attach. The process is stopped while gdb
/// is attached (well under a second), which the idle clients do not notice.
async fn gdb_malloc_trim() -> Option<Mem> {
    let pid = std::process::id().to_string();
    let out = tokio::process::Command::new("gdb")
        .args([
            "-p",
            &pid,
            "-batch",
            "-nx",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(out)
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("$1 = ") =>
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some(mem_of("self"))
        }
        Ok(out) => {
            eprintln!(
                "  gdb could not call malloc_trim: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("  gdb not run: {e}");
            None
        }
    }
}

/// One client that came up, kept idle.
struct Idle {
    client: Client,
    events: xmpp_omemo::stream::Events,
}

#[derive(Default)]
struct Tally {
    up: Vec<Idle>,
    to_connected: Vec<Duration>,
    to_roster: Vec<Duration>,
    /// Disconnected events while connecting (the client retries by itself).
    connect_disconnects: usize,
    failures: BTreeMap<String, usize>,
    last_ready: Option<Instant>,
}

/// Counts of what arrived during the idle period.
#[derive(Default)]
struct IdleCounts {
    disconnected: usize,
    connected: usize,
    stanzas: usize,
    other: usize,
    closed: usize,
    reasons: BTreeMap<String, usize>,
}

async fn drain(clients: &mut [Idle], counts: &mut IdleCounts) {
    for idle in clients.iter_mut() {
        loop {
            match idle.events.try_recv() {
                Ok(Event::Disconnected { reason, .. }) => {
                    counts.disconnected += 1;
                    *counts.reasons.entry(reason.to_string()).or_default() += 1;
                }
                Ok(Event::Connected { .. }) => counts.connected += 1,
                Ok(Event::Stanza { tag, .. }) => {
                    counts.stanzas += 1;
                    idle.client.ack(tag);
                }
                Ok(_) => counts.other += 1,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    counts.closed += 1;
                    break;
                }
            }
        }
    }
}

/// Spawns client `i` and waits for `Connected` and then `Roster`.
async fn connect_one(
    i: usize,
    args: &Args,
    domain: &str,
    server: &(String, u16),
    tls: &Arc<rustls::ClientConfig>,
    tally: &Mutex<Tally>,
) {
    let user = format!("{}{i}", args.prefix);
    let jid = match Jid::parse(&format!("{user}@{domain}")) {
        Ok(jid) => jid,
        Err(e) => {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            *t.failures.entry(format!("bad JID: {e}")).or_default() += 1;
            return;
        }
    };
    let mut config = ClientConfig::new(jid, format!("pw-{user}"), tls.clone());
    config.server = Some(server.clone());
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let (client, mut events) = Client::spawn(config);
    let (mut connected, mut disconnects) = (None, 0usize);
    let failure = loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break format!("no Connected + Roster within {:?}", args.timeout),
            Ok(None) => break "the event stream ended".to_owned(),
            Ok(Some(event)) => event,
        };
        match event {
            Event::Connected { .. } => connected = Some(start.elapsed()),
            Event::Roster(_) if connected.is_some() => {
                let ready = start.elapsed();
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                t.to_connected.push(connected.unwrap_or(ready));
                t.to_roster.push(ready);
                t.connect_disconnects += disconnects;
                t.last_ready = Some(Instant::now());
                t.up.push(Idle { client, events });
                return;
            }
            Event::Disconnected {
                reason,
                retry_in: None,
            } => break format!("gave up: {reason}"),
            Event::Disconnected { .. } => {
                disconnects += 1;
                connected = None;
            }
            Event::Stanza { tag, .. } => client.ack(tag),
            _ => {}
        }
    };
    client.close().await;
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    t.connect_disconnects += disconnects;
    *t.failures.entry(failure).or_default() += 1;
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(t) = args.threads {
        builder.worker_threads(t);
    }
    let runtime = builder.build()?;
    let ok = runtime.block_on(run(args))?;
    drop(runtime);
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let var = |k: &str| {
        std::env::var(k).with_context(|| format!("{k} is not set (source the world's world.env)"))
    };
    let domain = var("XMPP_DOMAIN")?;
    let server = var("XMPP_SERVER")?;
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("XMPP_SERVER must be host:port"))?;
    let server = (
        host.to_owned(),
        port.parse::<u16>().context("XMPP_SERVER port")?,
    );
    let tls = tls_client_config(Some(Path::new(&var("XMPP_CA_FILE")?)))?;
    let prosody_pid = std::env::var("PROSODY_PID")
        .ok()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists());
    let prosody = |pid: &Option<String>| pid.as_deref().map(mem_of);

    // Baseline: the runtime's threads and the shared TLS config exist, no client does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = mem_of("self");
    let prosody_before = prosody(&prosody_pid);

    let args = Arc::new(args);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(1));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.n) {
        let (args, tally, next, domain, server, tls) = (
            args.clone(),
            tally.clone(),
            next.clone(),
            domain.clone(),
            server.clone(),
            tls.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > args.n {
                    break;
                }
                connect_one(i, &args, &domain, &server, &tls, &tally).await;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let connect_wall = start.elapsed();
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let up = t.up.len();
    let ready_span = t
        .last_ready
        .map_or(connect_wall, |l| l.duration_since(start));
    let after_connect = mem_of("self");

    // Idle: nothing is sent; drain (and ack) whatever arrives.
    let mut counts = IdleCounts::default();
    let idle_end = tokio::time::Instant::now() + args.idle;
    while tokio::time::Instant::now() < idle_end {
        drain(&mut t.up, &mut counts).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drain(&mut t.up, &mut counts).await;
    let idle = mem_of("self");
    let prosody_idle = prosody(&prosody_pid);
    let trimmed = if args.gdb_trim {
        gdb_malloc_trim().await
    } else {
        None
    };
    if trimmed.is_some() {
        drain(&mut t.up, &mut counts).await;
    }
    if args.exit_idle {
        eprintln!(
            "idle_clients: --exit-idle: {up} clients up, anon {} -> {} KiB; exiting without closing",
            before.rss_anon, idle.rss_anon
        );
        std::process::exit(if up == args.n && counts.disconnected == 0 {
            0
        } else {
            1
        });
    }

    // Close every client (concurrently), then see how much the allocator kept.
    let clients: Vec<Client> = t.up.iter().map(|i| i.client.clone()).collect();
    let close_start = Instant::now();
    let chunk = up.div_ceil(args.concurrency.max(1)).max(1);
    let mut closers = Vec::new();
    for part in clients.chunks(chunk) {
        let part = part.to_vec();
        closers.push(tokio::spawn(async move {
            for c in part {
                c.close().await;
            }
        }));
    }
    for c in closers {
        c.await?;
    }
    let close_wall = close_start.elapsed();
    drop(clients);
    drop(std::mem::take(&mut t.up));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = mem_of("self");
    let closed_trimmed = if args.gdb_trim {
        gdb_malloc_trim().await
    } else {
        None
    };

    t.to_connected.sort();
    t.to_roster.sort();
    let rate = up as f64 / ready_span.as_secs_f64().max(1e-9);
    let per_anon = per_client(idle.rss_anon, before.rss_anon, up);
    let per_rss = per_client(idle.vm_rss, before.vm_rss, up);
    let ok = up == args.n && counts.disconnected == 0 && counts.closed == 0;
    let result = json!({
        "bench": "idle_clients",
        "n": args.n,
        "concurrency": args.concurrency,
        "connected": up,
        "failed": t.failures.values().sum::<usize>(),
        "failures": t.failures,
        "disconnects_while_connecting": t.connect_disconnects,
        "connect_seconds": connect_wall.as_secs_f64(),
        "connect_rate_per_s": (rate * 10.0).round() / 10.0,
        "to_connected_ms": {"p50": ms(percentile(&t.to_connected, 50.0)), "p95": ms(percentile(&t.to_connected, 95.0)), "max": ms(percentile(&t.to_connected, 100.0))},
        "to_roster_ms": {"p50": ms(percentile(&t.to_roster, 50.0)), "p95": ms(percentile(&t.to_roster, 95.0)), "max": ms(percentile(&t.to_roster, 100.0))},
        "idle_seconds": args.idle.as_secs_f64(),
        "idle_events": {"disconnected": counts.disconnected, "reconnected": counts.connected, "stanzas": counts.stanzas, "other": counts.other, "channel_closed": counts.closed, "reasons": counts.reasons},
        "bytes_per_idle_client": {"rss_anon": per_anon.round(), "vm_rss": per_rss.round(), "anonymous": per_client(idle.anonymous, before.anonymous, up).round()},
        "bytes_per_idle_client_after_malloc_trim": trimmed.map(|m| per_client(m.rss_anon, before.rss_anon, up).round()),
        "bytes_per_client_right_after_connect": per_client(after_connect.rss_anon, before.rss_anon, up).round(),
        "retained_after_close_per_client": per_client(closed.rss_anon, before.rss_anon, up).round(),
        "retained_after_close_and_malloc_trim_per_client": closed_trimmed.map(|m| per_client(m.rss_anon, before.rss_anon, up).round()),
        "close_seconds": close_wall.as_secs_f64(),
        "self": {"before": mem_json(before), "after_connect": mem_json(after_connect), "idle": mem_json(idle), "idle_after_malloc_trim": trimmed.map(mem_json), "after_close": mem_json(closed), "after_close_and_malloc_trim": closed_trimmed.map(mem_json)},
        "prosody": {"before": prosody_before.map(mem_json), "idle": prosody_idle.map(mem_json)},
        "threads": args.threads,
    });

    eprintln!(
        "idle_clients: {up}/{} connected ({} at a time) in {:.2} s: {:.1} clients/s",
        args.n,
        args.concurrency,
        ready_span.as_secs_f64(),
        rate
    );
    eprintln!(
        "  time to Connected p50 {:.1} ms, p95 {:.1} ms; to Roster p50 {:.1} ms, p95 {:.1} ms",
        ms(percentile(&t.to_connected, 50.0)),
        ms(percentile(&t.to_connected, 95.0)),
        ms(percentile(&t.to_roster, 50.0)),
        ms(percentile(&t.to_roster, 95.0))
    );
    eprintln!(
        "  RSS {} KiB -> {} KiB after {:.0} s idle (anon {} -> {} KiB): {:.0} bytes ({:.1} KiB) per idle client (anon), {:.0} bytes (VmRSS)",
        before.vm_rss,
        idle.vm_rss,
        args.idle.as_secs_f64(),
        before.rss_anon,
        idle.rss_anon,
        per_anon,
        per_anon / 1024.0,
        per_rss
    );
    if let Some(m) = trimmed {
        eprintln!(
            "  after malloc_trim(0) while idle: anon {} KiB: {:.0} bytes per idle client",
            m.rss_anon,
            per_client(m.rss_anon, before.rss_anon, up)
        );
    }
    eprintln!(
        "  after closing all: anon {} KiB ({:.0} bytes per client still resident)",
        closed.rss_anon,
        per_client(closed.rss_anon, before.rss_anon, up)
    );
    if let Some(m) = closed_trimmed {
        eprintln!(
            "  after closing all and malloc_trim(0): anon {} KiB ({:.0} bytes per client)",
            m.rss_anon,
            per_client(m.rss_anon, before.rss_anon, up)
        );
    }
    if let (Some(b), Some(i)) = (prosody_before, prosody_idle) {
        eprintln!(
            "  Prosody RSS {} KiB -> {} KiB ({:.0} bytes per client)",
            b.vm_rss,
            i.vm_rss,
            per_client(i.vm_rss, b.vm_rss, up)
        );
    }
    eprintln!(
        "  idle period: {} disconnected, {} reconnected, {} stanzas; failures while connecting: {:?}",
        counts.disconnected, counts.connected, counts.stanzas, t.failures
    );
    println!("{result}");
    Ok(ok)
}
