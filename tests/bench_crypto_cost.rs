//! Benchmark, not a test (`#[ignore]`: `cargo test` never runs it): what a ghost's encryption
//! device costs the bridge. Run it with
//! `WORLD_VENV=.world/venv cargo test --release --test bench_crypto_cost -- --ignored --nocapture`.
//!
//! The real world (Synapse, Prosody) and the bridge as a child process with encryption on. The
//! homeserver's user query (`GET /_matrix/app/v1/users/{id}`, what Synapse calls when an event
//! names an unknown ghost) is sent straight to the bridge for `BENCH_GHOSTS` (100) new ghosts,
//! `BENCH_CONCURRENCY` (4) at a time: each is registered and gets its device, keys and
//! cross-signing. Printed: the time per ghost, the bridge's RSS before and after (every machine
//! still in memory: they are dropped after 10 idle minutes), and the crypto stores' files and
//! bytes per ghost.

mod common;

use std::path::Path;
use std::time::Instant;

use common::e2e::{ghost, start_encrypted};
use common::{BridgeProcess, encode};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Files and bytes under `dir`.
fn usage(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("dir") {
                stack.push(entry.expect("entry").path());
            }
        } else {
            files += 1;
            bytes += std::fs::metadata(&path).expect("metadata").len();
        }
    }
    (files, bytes)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run it with --ignored"]
async fn crypto_cost_per_ghost() {
    let ghosts = env_usize("BENCH_GHOSTS", 100);
    let concurrency = env_usize("BENCH_CONCURRENCY", 4).max(1);
    let (_world, files) = start_encrypted();
    let bridge = BridgeProcess::start(&files);
    let hs_token = files.registration_value("hs_token");
    let http = reqwest::Client::new();
    let crypto = files.dir.join("crypto");
    let (files_before, bytes_before) = usage(&crypto);
    let rss_before = rss_kib(bridge.pid());
    let started = Instant::now();
    let mut next = 0;
    while next < ghosts {
        let mut batch = tokio::task::JoinSet::new();
        for n in next..(next + concurrency).min(ghosts) {
            let url = format!(
                "{}/_matrix/app/v1/users/{}",
                files.as_url(),
                encode(&ghost(&format!("cost{n}@xmpp.test")))
            );
            let request = http.get(url).bearer_auth(&hs_token);
            batch.spawn(async move { request.send().await.expect("query").status() });
        }
        while let Some(status) = batch.join_next().await {
            assert!(status.expect("task").is_success());
        }
        next += concurrency;
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(bridge.pid());
    let (files_after, bytes_after) = usage(&crypto);
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / ghosts as f64;
    println!(
        "{{\"ghosts\":{ghosts},\"concurrency\":{concurrency},\"ms_per_ghost\":{:.1},\
         \"rss_kib_before\":{rss_before},\"rss_kib_after\":{rss_after},\
         \"rss_kib_per_ghost\":{:.1},\"files_per_ghost\":{:.1},\"kib_on_disk_per_ghost\":{:.1}}}",
        elapsed.as_secs_f64() * 1000.0 / ghosts as f64,
        per(rss_before, rss_after),
        per(files_before, files_after),
        per(bytes_before, bytes_after) / 1024.0,
    );
    bridge.stop();
    let (files_stopped, bytes_stopped) = usage(&crypto);
    println!(
        "{{\"after_stop\":true,\"files_per_ghost\":{:.1},\"kib_on_disk_per_ghost\":{:.1}}}",
        per(files_before, files_stopped),
        per(bytes_before, bytes_stopped) / 1024.0
    );
}
