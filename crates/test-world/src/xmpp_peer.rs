//! The slixmpp peer (`scripts/world/xmpp_peer.py`) as a child process: JSON commands in, JSON
//! events out. Written by others (slixmpp), so our client is tested against an independent stack.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::{World, repo};

pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub jid: String,
}

impl Peer {
    /// Starts the peer for `user` with extra flags and waits for its `ready` event.
    pub async fn start(world: &World, user: &str, flags: &[&str]) -> Self {
        let jid = format!("{user}@{}", world.var("XMPP_DOMAIN"));
        let log = std::fs::File::create(world.state.path().join(format!("peer-{user}.log")))
            .expect("peer log");
        let mut child = Command::new(format!("{}/bin/python", world.var("WORLD_VENV")))
            .arg(repo().join("scripts/world/xmpp_peer.py"))
            .arg("--jid")
            .arg(&jid)
            .args(flags)
            .env("XMPP_SERVER", world.var("XMPP_SERVER"))
            .env("XMPP_CA_FILE", world.var("XMPP_CA_FILE"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start xmpp_peer.py");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut peer = Self {
            child,
            stdin,
            lines,
            jid,
        };
        peer.wait_event("ready", Duration::from_secs(30), |e| e["event"] == "ready")
            .await;
        peer
    }

    pub async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("peer stdin");
        self.stdin.flush().await.expect("peer stdin");
    }

    /// The next event, or `None` after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("peer printed a non-JSON line: {line}")),
            ),
            Ok(Ok(None)) => panic!("the peer exited"),
            Ok(Err(e)) => panic!("reading the peer: {e}"),
            Err(_) => None,
        }
    }

    /// Waits for an event `pick` accepts, skipping others.
    pub async fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) if pick(&event) => return event,
                Some(_) => {}
                None => panic!("the peer did not report {what} within {limit:?}"),
            }
        }
    }

    pub async fn quit(mut self) {
        self.command(serde_json::json!({"cmd": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}
