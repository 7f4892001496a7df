//! The matrix-nio peer (`scripts/world/matrix_peer.py serve`) as a child process: an
//! end-to-end-encrypting Matrix client (Olm/Megolm by vodozemac, an independent implementation)
//! that e2e tests drive as "the Matrix user", with JSON lines. It registers its user on the world's
//! Synapse if needed, trusts every device blindly and reports what its sync brings: `invite`,
//! `message` (with `encrypted`: it came as `m.room.encrypted` and was decrypted), `undecryptable`,
//! `redaction`, `member`, ... (see the script's docstring).
//!
//! Events the peer prints are kept: `wait_event` and friends take the first *matching* event and leave
//! the others (in order) for later calls, so a `message` is not lost while waiting for a `sent`.
//! Timeouts and unexpected exits panic with the tail of the peer's stderr log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::{World, repo};

/// How long `start` waits for `ready` (registration, login, key upload, first sync: ~1-3 s).
pub const READY_WAIT: Duration = Duration::from_secs(60);
/// Default limit of the helpers that wait for one answer (`create_dm`, `send`, `join`, ...).
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);

pub struct MatrixPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: VecDeque<Value>,
    next_id: usize,
    /// Full user id (`@name:server`).
    pub user_id: String,
    /// Its own Matrix device id.
    pub device_id: String,
    /// The whole `ready` event (`restored`: an existing session of this `--device` was used).
    pub ready: Value,
    /// The peer's stderr (python logging).
    pub log: PathBuf,
}

fn tail(path: &PathBuf, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl MatrixPeer {
    /// Starts `matrix_peer.py serve` for the local part `user` (password `pw-<user>`, registered
    /// through the shared-secret API if it does not exist) with extra `flags` (for example
    /// `--device NAME`, `--auto-join`, `--password PW`, `-v`) and waits for its `ready` event.
    /// State: `<world>/nio/<user>/<device>/`, so a restart with the same `--device` is the same
    /// device.
    pub async fn start(world: &World, user: &str, flags: &[&str]) -> Self {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = world
            .state
            .path()
            .join(format!("matrix-peer-{user}-{n}.log"));
        let mut child = Command::new(format!("{}/bin/python", world.var("WORLD_VENV")))
            .arg(repo().join("scripts/world/matrix_peer.py"))
            .arg("serve")
            .arg("--state-dir")
            .arg(world.state.path())
            .arg("--user")
            .arg(user)
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("matrix peer log"),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("start matrix_peer.py");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut peer = Self {
            child,
            stdin,
            lines,
            backlog: VecDeque::new(),
            next_id: 0,
            user_id: format!("@{user}"),
            device_id: String::new(),
            ready: Value::Null,
            log,
        };
        let ready = peer
            .wait_event("ready", READY_WAIT, |e| {
                if e["event"] == "error" {
                    panic!("matrix peer {user} failed to start: {e}");
                }
                e["event"] == "ready"
            })
            .await;
        peer.user_id = ready["user_id"].as_str().expect("ready.user_id").to_owned();
        peer.device_id = ready["device_id"]
            .as_str()
            .expect("ready.device_id")
            .to_owned();
        peer.ready = ready;
        peer
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "matrix peer {} ({}): {what}\n--- tail of {} ---\n{}",
            self.user_id,
            self.device_id,
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

    /// Sends `command` with a fresh `id` and waits for its answer (the event `answer` or an
    /// `error`, both carrying that id); panics on an error. Returns the answer.
    async fn call(&mut self, mut command: Value, answer: &str) -> Value {
        self.next_id += 1;
        let id = format!("rs-{}", self.next_id);
        command["id"] = json!(id);
        let cmd = command["cmd"].as_str().unwrap_or_default().to_owned();
        self.command(command).await;
        let event = self
            .wait_event(&format!("answer to {cmd}"), ANSWER_WAIT, |e| {
                e["id"] == id.as_str() && (e["event"] == answer || e["event"] == "error")
            })
            .await;
        if event["event"] == "error" {
            self.fail(&format!("{cmd} failed: {event}"));
        }
        event
    }

    /// Creates a DM the way Element does (preset `trusted_private_chat`, `is_direct`, `invite`, and
    /// with `encrypted` `m.room.encryption` in the initial state); returns the room id. A `send` may
    /// follow at once: the Megolm key is shared with the invitee's devices too.
    pub async fn create_dm(&mut self, invite: &str, encrypted: bool) -> String {
        let event = self
            .call(
                json!({"cmd": "create_dm", "invite": invite, "encrypted": encrypted}),
                "created",
            )
            .await;
        event["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends an `m.text` message (encrypted in an encrypted room); returns its event id.
    pub async fn send(&mut self, room: &str, text: &str) -> String {
        let event = self
            .call(json!({"cmd": "send", "room": room, "text": text}), "sent")
            .await;
        event["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sends a whole `m.room.message` content (a reply, an edit, a notice, ...); returns its event id.
    pub async fn send_content(&mut self, room: &str, content: Value) -> String {
        let event = self
            .call(
                json!({"cmd": "send", "room": room, "content": content}),
                "sent",
            )
            .await;
        event["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Joins `room` (an id or alias) and waits until the peer's sync shows it; returns the room id.
    pub async fn join(&mut self, room: &str) -> String {
        let event = self
            .call(json!({"cmd": "join", "room": room}), "joined")
            .await;
        event["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Leaves `room` (or rejects its invite).
    pub async fn leave(&mut self, room: &str) {
        self.call(json!({"cmd": "leave", "room": room}), "left")
            .await;
    }

    /// The device ids of `user` after a fresh key query (all of them trusted).
    pub async fn devices(&mut self, user: &str) -> Vec<String> {
        let event = self
            .call(json!({"cmd": "devices", "user": user}), "devices")
            .await;
        event["device_ids"]
            .as_array()
            .expect("device_ids")
            .iter()
            .map(|d| d.as_str().expect("device id").to_owned())
            .collect()
    }

    /// Asks our own other devices for the keys of the undecryptable events seen so far (in `room`,
    /// or everywhere); returns how many Megolm sessions it asked for. What they send back shows up
    /// as `message` events with `"late": true`.
    pub async fn request_keys(&mut self, room: Option<&str>) -> u64 {
        let mut cmd = json!({"cmd": "request_keys"});
        if let Some(room) = room {
            cmd["room"] = json!(room);
        }
        let event = self.call(cmd, "keys_requested").await;
        event["sessions"].as_u64().expect("sessions")
    }

    /// Round trip through the peer's command loop: every earlier command has been handled.
    pub async fn ping(&mut self) {
        self.call(json!({"cmd": "ping"}), "pong").await;
    }

    /// Waits for an `invite` event; returns `(room_id, sender)`.
    pub async fn wait_invite(&mut self, limit: Duration) -> (String, String) {
        let event = self
            .wait_event("invite", limit, |e| e["event"] == "invite")
            .await;
        (
            event["room_id"].as_str().expect("room_id").to_owned(),
            event["sender"].as_str().expect("sender").to_owned(),
        )
    }

    /// Waits for `count` `message` events in `room` from `sender` and returns them in arrival
    /// order. Other events (also `undecryptable` ones) stay queued; a timeout lists them.
    pub async fn wait_messages(
        &mut self,
        room: &str,
        sender: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let n = got.len();
            let event = self
                .wait_event(
                    &format!("message {} of {count} from {sender} in {room}", n + 1),
                    left,
                    |e| e["event"] == "message" && e["room_id"] == room && e["sender"] == sender,
                )
                .await;
            got.push(event);
        }
        got
    }

    /// Events printed so far that no wait has taken (does not read new ones).
    pub fn unclaimed(&self) -> &VecDeque<Value> {
        &self.backlog
    }

    /// SIGKILL and reap it (its session and crypto store stay; a restart is the same device).
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
