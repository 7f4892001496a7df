//! Benchmark, not a test (`#[ignore]`: `cargo test` never runs it; run it with
//! `scripts/bench/e2e_scale.sh`): what many linked identities cost the bridge.
//!
//! The real world (Synapse, Prosody), the bridge as a child process (build it in release: the
//! numbers are meant for that profile). `BENCH_IDENTITIES` accounts (`scale1..scaleN`, made in
//! one go by `scripts/world/bulk_accounts.sh`) are linked through the CLI against the running
//! bridge, `LINKERS` CLI processes at a time (the bridge links one at a time). Measured:
//!
//! - the bridge's idle RSS with no identity (`VmRSS` and `RssAnon` of `/proc/<pid>/status`);
//! - the RSS with N linked, connected and idle, minus that, divided by N: live (just linked)
//!   and after a cold start (the bridge restarted with N stored logins);
//! - the cold start: from exec to every login connected (counted from the bridge's `login
//!   connected` lines, so that polling costs the bridge nothing), with the times to half and
//!   90 %, the bridge's CPU seconds (utime + stime of `/proc/<pid>/stat`) and Prosody's over
//!   the same span (Prosody is single-threaded: TLS and SCRAM for each login);
//! - the time from SIGTERM to exit with N logins, after the live links and after the cold
//!   start.
//!
//! Env: `BENCH_IDENTITIES` (1000), `BENCH_IDLE_SECS` (idle time before each RSS reading, 10),
//! `BENCH_OUT` (a file for the JSON line, optional), `WORLD_KEEP=1` (keep the world's state
//! dir with the bridge's logs), `BENCH_HEAPTRACK=<file>` (the cold-started bridge runs under
//! heaptrack's preload library and writes its raw trace there; `heaptrack_interpret` turns it
//! into a file `heaptrack_print` reads, whose peak is the idle state with every login up).
//! Prints a summary on stderr and one JSON line on stdout.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::bench::{clock_ticks, cpu_secs, env_usize, status_kib};
use common::e2e::{link_jid as link, run_cli};
use common::{BIN, BridgeFiles, World, repo};
use serde_json::json;

/// How many `link` commands run at once (overlaps the CLI processes' start-up with the
/// bridge's work; the bridge itself links one at a time).
const LINKERS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Rss {
    vm_kib: u64,
    anon_kib: u64,
}

fn rss(pid: u32) -> Rss {
    Rss {
        vm_kib: status_kib(pid, "VmRSS"),
        anon_kib: status_kib(pid, "RssAnon"),
    }
}

/// The bridge as a child process, its log in `log`.
struct Bridge {
    child: Child,
    log: std::path::PathBuf,
    /// When it was spawned.
    exec: Instant,
}

impl Bridge {
    fn spawn(files: &BridgeFiles, name: &str, heaptrack: Option<&str>) -> Self {
        let log = files.dir.join(format!("{name}.log"));
        let exec = Instant::now();
        let mut command = Command::new(BIN);
        if let Some(raw) = heaptrack {
            command
                .env("LD_PRELOAD", HEAPTRACK_PRELOAD)
                .env("DUMP_HEAPTRACK_OUTPUT", raw);
        }
        let child = command
            .args(["run", "-c", files.config.to_str().expect("utf-8")])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn the bridge");
        Self { child, log, exec }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&mut self, needle: &str) -> usize {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the bridge exited ({status}):\n{}", tail(&self.log_text()));
        }
        self.log_text().matches(needle).count()
    }

    /// Waits until the log holds `needle` `n` times; returns the times (since exec) at which
    /// the count first reached each of `marks` (fractions of `n`).
    fn wait_count(&mut self, needle: &str, n: usize, marks: &[f64], limit: Duration) -> Vec<f64> {
        let mut reached = vec![None; marks.len()];
        loop {
            let seen = self.count(needle);
            let at = self.exec.elapsed().as_secs_f64();
            for (mark, slot) in marks.iter().zip(reached.iter_mut()) {
                if slot.is_none() && seen as f64 >= mark * n as f64 {
                    *slot = Some(at);
                }
            }
            if seen >= n {
                return reached.into_iter().map(|r| r.unwrap_or(at)).collect();
            }
            assert!(
                self.exec.elapsed() < limit,
                "only {seen} of {n} {needle:?} after {limit:?}:\n{}",
                tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; the time until the process exited (0 required).
    fn stop_timed(mut self, limit: Duration) -> f64 {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let took = started.elapsed().as_secs_f64();
                assert!(
                    status.success(),
                    "the bridge exited with {status}:\n{}",
                    tail(&self.log_text())
                );
                return took;
            }
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `status` through the CLI: (connected, listed).
fn connected(files: &BridgeFiles) -> (usize, usize) {
    let (ok, out, err) = run_cli(files, &["status"]);
    assert!(ok, "status: {out}\n{err}");
    let lines = out.lines().filter(|l| l.contains(" → ")).count();
    let up = out.lines().filter(|l| l.contains(": connected")).count();
    (up, lines)
}

fn per_identity(with: Rss, without: Rss, n: usize) -> (f64, f64) {
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    (
        per(with.vm_kib, without.vm_kib),
        per(with.anon_kib, without.anon_kib),
    )
}

fn prosody_pid(state: &Path) -> u32 {
    std::fs::read_to_string(state.join("pids/prosody.pid"))
        .expect("prosody pid")
        .trim()
        .parse()
        .expect("pid")
}

const CONNECTED: &str = "login connected";
/// Debian's heaptrack (`apt install heaptrack`).
const HEAPTRACK_PRELOAD: &str = "/usr/lib/heaptrack/libheaptrack_preload.so";
const READY: &str = "daemon: ready";

#[test]
#[ignore = "benchmark: run with scripts/bench/e2e_scale.sh"]
fn many_identities_rss_cold_start_and_shutdown() {
    let n = env_usize("BENCH_IDENTITIES", 1000).max(1);
    let idle = Duration::from_secs(env_usize("BENCH_IDLE_SECS", 10) as u64);
    let ticks = clock_ticks();
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
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\n",
        world.var("XMPP_SERVER"),
        world.var("XMPP_CA_FILE")
    );
    // Info is what an operator runs (and it has the `login connected` lines counted here).
    let config = config.replace("[network]\n", &network).replace(
        "level = \"interop_bridge=debug,info\"",
        "level = \"interop_bridge=info,warn\"",
    );
    std::fs::write(&files.config, config).expect("write config");
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let prosody = prosody_pid(world.state.path());

    let out = Command::new("bash")
        .arg(repo().join("scripts/world/bulk_accounts.sh"))
        .arg(world.state.path())
        .arg(n.to_string())
        .arg("scale")
        .output()
        .expect("bulk_accounts.sh");
    assert!(
        out.status.success(),
        "bulk_accounts.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("[scale] {}", String::from_utf8_lossy(&out.stdout).trim());

    // The bridge with no identity, idle.
    let mut bridge = Bridge::spawn(&files, "bridge-empty", None);
    bridge.wait_count(READY, 1, &[], Duration::from_secs(60));
    std::thread::sleep(idle);
    let empty = rss(bridge.pid());
    eprintln!(
        "[scale] idle, no identity: VmRSS {} KiB, RssAnon {} KiB",
        empty.vm_kib, empty.anon_kib
    );

    // N identities linked through the CLI.
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let linkers: Vec<_> = (0..LINKERS)
        .map(|_| {
            let (files, next, domain) = (files.clone(), next.clone(), domain.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > n {
                        return;
                    }
                    let name = format!("scale{i}");
                    link(&files, &format!("@{name}:localhost"), &name, &domain);
                }
            })
        })
        .collect();
    for linker in linkers {
        linker.join().expect("a link failed");
    }
    let linked_in = t.elapsed().as_secs_f64();
    let (up, listed) = connected(&files);
    assert_eq!((up, listed), (n, n), "connected / listed after linking");
    eprintln!(
        "[scale] {n} linked in {linked_in:.1} s ({:.0} ms each, {LINKERS} CLI processes at once)",
        linked_in * 1000.0 / n as f64
    );
    std::thread::sleep(idle);
    let live = rss(bridge.pid());
    let (live_vm, live_anon) = per_identity(live, empty, n);
    eprintln!(
        "[scale] {n} linked live, idle: VmRSS {} KiB, RssAnon {} KiB: {live_vm:.1} / {live_anon:.1} KiB per identity",
        live.vm_kib, live.anon_kib
    );
    let stop_live = bridge.stop_timed(Duration::from_secs(60));
    eprintln!("[scale] SIGTERM with {n} logins (linked live): exited in {stop_live:.2} s");

    // Cold start with N stored logins.
    let prosody_cpu0 = cpu_secs(prosody, ticks);
    let heaptrack = std::env::var("BENCH_HEAPTRACK").ok();
    let mut bridge = Bridge::spawn(&files, "bridge-cold", heaptrack.as_deref());
    let ready = bridge.wait_count(READY, 1, &[1.0], Duration::from_secs(60))[0];
    let marks = bridge.wait_count(CONNECTED, n, &[0.5, 0.9, 1.0], Duration::from_secs(600));
    let cold_cpu = cpu_secs(bridge.pid(), ticks);
    let prosody_cpu = cpu_secs(prosody, ticks) - prosody_cpu0;
    let all = marks[2];
    eprintln!(
        "[scale] cold start with {n}: ready {ready:.2} s, half {:.2} s, 90 % {:.2} s, all connected {all:.2} s after exec ({:.0} logins/s); bridge CPU {cold_cpu:.2} s, Prosody CPU {prosody_cpu:.2} s",
        marks[0],
        marks[1],
        n as f64 / all
    );
    std::thread::sleep(idle);
    let (up, listed) = connected(&files);
    assert_eq!(
        (up, listed),
        (n, n),
        "connected / listed after the cold start"
    );
    let cold = rss(bridge.pid());
    let (cold_vm, cold_anon) = per_identity(cold, empty, n);
    eprintln!(
        "[scale] {n} after a cold start, idle: VmRSS {} KiB, RssAnon {} KiB: {cold_vm:.1} / {cold_anon:.1} KiB per identity",
        cold.vm_kib, cold.anon_kib
    );
    let stop_cold = bridge.stop_timed(Duration::from_secs(60));
    eprintln!("[scale] SIGTERM with {n} logins (cold started): exited in {stop_cold:.2} s");

    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let summary = json!({
        "bench": "scale",
        "identities": n,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "idle_rss_none_kib": {"vm": empty.vm_kib, "anon": empty.anon_kib},
        "linked_live": {
            "rss_kib": {"vm": live.vm_kib, "anon": live.anon_kib},
            "per_identity_kib": {"vm": round(live_vm), "anon": round(live_anon)},
            "link_secs": round(linked_in),
        },
        "cold_start": {
            "ready_secs": round(ready),
            "half_connected_secs": round(marks[0]),
            "p90_connected_secs": round(marks[1]),
            "all_connected_secs": round(all),
            "logins_per_sec": round(n as f64 / all),
            "bridge_cpu_secs": round(cold_cpu),
            "prosody_cpu_secs": round(prosody_cpu),
            "rss_kib": {"vm": cold.vm_kib, "anon": cold.anon_kib},
            "per_identity_kib": {"vm": round(cold_vm), "anon": round(cold_anon)},
        },
        "sigterm_exit_secs": {"linked_live": round(stop_live), "cold_started": round(stop_cold)},
    });
    println!("{summary}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, format!("{summary}\n")).expect("BENCH_OUT");
    }
}
