//! What the end-to-end benchmarks (`tests/bench_*.rs`, run by `scripts/bench/`) share: the
//! bridge's CPU and memory read from `/proc`, waiting for it to go quiet, percentiles.

use std::time::Duration;

pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

pub fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_secs(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let field = |i: usize| fields[i].parse::<f64>().expect("a number");
    // Fields 14 and 15 of proc(5); `fields[0]` is field 3.
    (field(11) + field(12)) / ticks
}

/// Waits (up to a minute) until the bridge used no CPU for 1.5 s; its CPU seconds then. Long
/// enough to span the work that trickles in after a run: receipts the contact's client sends
/// while it catches up, each a post to the homeserver.
pub async fn settle(pid: u32, ticks: f64) -> f64 {
    // Under half a clock tick per poll: none at all.
    calm(pid, ticks, 0.5 / ticks).await
}

/// Waits (up to a minute) until `pid` used less than `share` of one core for 1.5 s: before a
/// run, so that it does not pay for the homeserver's work left over from the one before.
pub async fn quiet(pid: u32, ticks: f64, share: f64) {
    calm(pid, ticks, 0.3 * share).await;
}

/// Polls `pid`'s CPU every 300 ms until five polls in a row each grew by less than `most`
/// seconds (or a minute passed); its CPU seconds then.
async fn calm(pid: u32, ticks: f64, most: f64) -> f64 {
    let mut last = cpu_secs(pid, ticks);
    let mut calm = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = cpu_secs(pid, ticks);
        calm = if now - last < most { calm + 1 } else { 0 };
        if calm == 5 {
            return now;
        }
        last = now;
    }
    eprintln!("[bench] pid {pid} did not go quiet within a minute");
    last
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`, `RssAnon`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
