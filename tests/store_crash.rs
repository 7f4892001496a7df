//! Durability under SIGKILL: every write acknowledged after `flush` survives a process kill.
//!
//! The parent test re-executes this test binary, running only [`crash_child`] with
//! [`CHILD_ENV`] set to a database directory. The child marks transactions one by one,
//! flushing and printing an ack line after each; the parent kills it mid-stream, reopens the
//! database, and checks every acked transaction is there.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use interop_bridge::store::{SledStore, Store, TxnStore};

/// Set (to the database directory) only in the child process.
const CHILD_ENV: &str = "STORE_CRASH_CHILD";
/// Marks an ack line; libtest may print its own text on the same line before it.
const ACK: &str = "STORE_CRASH_ACK ";
/// Acks the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: u64 = 200;
/// Upper bound on the child's writes, so a child that is never killed still ends.
const CHILD_MAX_WRITES: u64 = 1_000_000;
const DEADLINE: Duration = Duration::from_secs(60);

fn txn_id(i: u64) -> String {
    format!("txn-{i}")
}

/// The child half: does nothing unless [`CHILD_ENV`] is set.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SledStore::open(dir.as_ref()).expect("child opens the store");
    let mut stdout = std::io::stdout().lock();
    for i in 0..CHILD_MAX_WRITES {
        store
            .mark_txn_processed(&txn_id(i), i)
            .expect("child marks a txn");
        store.flush().expect("child flushes");
        writeln!(stdout, "{ACK}{i}").expect("child writes an ack");
        stdout.flush().expect("child flushes stdout");
    }
}

fn parse_ack(line: &str) -> Option<u64> {
    let at = line.find(ACK)?;
    line[at + ACK.len()..].trim().parse().ok()
}

#[test]
fn acked_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");

    let stdout = child.stdout.take().expect("child stdout is piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = parse_ack(&line)
                && tx.send(i).is_err()
            {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut acked = Vec::new();
    while (acked.len() as u64) < ACKS_BEFORE_KILL {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(i) => acked.push(i),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "only {} acks before the child stopped or timed out: {e}",
                    acked.len()
                );
            }
        }
    }

    let exited_early = child.try_wait().expect("poll the child");
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(
        exited_early.is_none(),
        "child exited by itself: {exited_early:?}"
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "child was killed by SIGKILL: {status:?}"
    );

    reader.join().expect("reader thread");
    acked.extend(rx.try_iter());
    let expected: Vec<u64> = (0..acked.len() as u64).collect();
    assert_eq!(acked, expected, "acks arrive in order, none missing");
    assert!(acked.len() as u64 >= ACKS_BEFORE_KILL);
    assert!(
        (acked.len() as u64) < CHILD_MAX_WRITES,
        "child was killed mid-stream"
    );

    let store = SledStore::open(dir.path()).expect("reopen after the kill");
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|&i| !store.txn_processed(&txn_id(i)).expect("read"))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acked txns lost, first: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
