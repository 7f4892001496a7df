//! A peer child process driven with JSON lines (one command per stdin line, one event per
//! stdout line, its stderr in a log file): what [`crate::omemo_peer`] and [`crate::matrix_peer`]
//! are made of.
//!
//! Events the peer prints are kept: `wait_event` takes the first *matching* event and leaves the
//! others (in order) for later calls, so an answer is not lost while waiting for another event.
//! Timeouts and unexpected exits panic with the tail of the peer's log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct LinePeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: VecDeque<Value>,
    /// How failures name the peer (`omemo peer bob@xmpp.test/res`, ...).
    pub label: String,
    /// The peer's stderr.
    pub log: PathBuf,
}

fn tail(path: &PathBuf, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl LinePeer {
    /// Starts `command` with piped stdin and stdout and its stderr in `log`.
    pub fn spawn(mut command: Command, label: String, log: PathBuf) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("peer log")))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {label}: {e}"));
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
            backlog: VecDeque::new(),
            label,
            log,
        }
    }

    /// Waits for the `ready` event (an `error` first: it failed to start) and returns it.
    pub async fn wait_ready(&mut self, limit: Duration) -> Value {
        let label = self.label.clone();
        self.wait_event("ready", limit, |e| {
            if e["event"] == "error" {
                panic!("{label} failed to start: {e}");
            }
            e["event"] == "ready"
        })
        .await
    }

    /// Panics with `what` and the tail of the log.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n--- tail of {} ---\n{}",
            self.label,
            self.log.display(),
            tail(&self.log, 40)
        )
    }

    /// Writes one JSON command line.
    pub async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail("stdin already closed")
        };
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            self.fail(&format!("writing its stdin: {e}"));
        }
        if let Err(e) = stdin.flush().await {
            self.fail(&format!("writing its stdin: {e}"));
        }
    }

    /// Reads the next line the peer prints (not the backlog), `None` after `limit`.
    async fn read_event(&mut self, limit: Duration) -> Option<Value> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => match serde_json::from_str(&line) {
                Ok(v) => Some(v),
                Err(_) => self.fail(&format!("printed a non-JSON line: {line}")),
            },
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                self.fail(&format!("exited ({status:?})"))
            }
            Ok(Err(e)) => self.fail(&format!("reading its stdout: {e}")),
            Err(_) => None,
        }
    }

    /// The oldest event not yet taken (backlog first), or `None` after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(e);
        }
        self.read_event(limit).await
    }

    /// Takes the oldest event `pick` accepts (backlog first); the others stay queued in order.
    /// Panics after `limit` with the events seen and the log tail.
    pub async fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.backlog.iter().position(&mut pick) {
            return self.backlog.remove(i).expect("index");
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_event(left).await {
                Some(event) if pick(&event) => return event,
                Some(event) => self.backlog.push_back(event),
                None => {
                    let seen: Vec<String> = self.backlog.iter().map(Value::to_string).collect();
                    self.fail(&format!(
                        "no {what} within {limit:?}; unclaimed events:\n{}",
                        seen.join("\n")
                    ))
                }
            }
        }
    }

    /// Events printed so far that no wait has taken (does not read new ones).
    pub fn unclaimed(&self) -> &VecDeque<Value> {
        &self.backlog
    }

    /// SIGKILL and reap it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// `quit` and wait for a clean exit (then EOF on stdin); returns the exit status.
    pub async fn quit(mut self) -> ExitStatus {
        self.command(json!({"cmd": "quit"})).await;
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => self.fail(&format!("wait: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                self.fail("did not exit within 15 s of quit")
            }
        }
    }
}
