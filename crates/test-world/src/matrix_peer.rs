//! The matrix-nio peer (`scripts/world/matrix_peer.py serve`) as a child process: an
//! end-to-end-encrypting Matrix client (Olm/Megolm by vodozemac, an independent implementation)
//! that e2e tests drive as "the Matrix user", with JSON lines. It registers its user on the world's
//! Synapse if needed, trusts every device blindly and reports what its sync brings: `invite`,
//! `message` (with `encrypted`: it came as `m.room.encrypted` and was decrypted), `undecryptable`,
//! `redaction`, `member`, ... (see the script's docstring).
//!
//! It runs on `line_peer::LinePeer`. Events the peer prints are kept: `wait_event` and friends
//! take the first *matching* event and leave
//! the others (in order) for later calls, so a `message` is not lost while waiting for a `sent`.
//! Timeouts and unexpected exits panic with the tail of the peer's stderr log.
//!
//! Media: [`MatrixPeer::send_file`] uploads a file (an encrypted attachment in an encrypted room)
//! and sends an `m.image`/`m.video`/`m.audio`/`m.file` message. Every such `message` the peer
//! reports carries `file`: it downloaded the media with authenticated media (and decrypted it),
//! `{"ok":true,"sha256","size","url","msgtype","mimetype","info","voice","encrypted"}`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::line_peer::LinePeer;
use crate::{World, repo};

/// How long `start` waits for `ready` (registration, login, key upload, first sync: ~1-3 s).
pub const READY_WAIT: Duration = Duration::from_secs(60);
/// Default limit of the helpers that wait for one answer (`create_dm`, `send`, `join`, ...).
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Limit of `send_file` (a 20 MB upload to Synapse: ~1 s; slower next to a build).
pub const FILE_WAIT: Duration = Duration::from_secs(120);

pub struct MatrixPeer {
    io: LinePeer,
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
        let mut command = Command::new(format!("{}/bin/python", world.var("WORLD_VENV")));
        command
            .arg(repo().join("scripts/world/matrix_peer.py"))
            .arg("serve")
            .arg("--state-dir")
            .arg(world.state.path())
            .arg("--user")
            .arg(user)
            .args(flags);
        let mut io = LinePeer::spawn(command, format!("matrix peer @{user}"), log.clone());
        let ready = io.wait_ready(READY_WAIT).await;
        let user_id = ready["user_id"].as_str().expect("ready.user_id").to_owned();
        let device_id = ready["device_id"]
            .as_str()
            .expect("ready.device_id")
            .to_owned();
        io.label = format!("matrix peer {user_id} ({device_id})");
        Self {
            io,
            next_id: 0,
            user_id,
            device_id,
            ready,
            log,
        }
    }

    fn fail(&self, what: &str) -> ! {
        self.io.fail(what)
    }

    /// Writes one JSON command line.
    pub async fn command(&mut self, command: Value) {
        self.io.command(command).await;
    }

    /// The oldest event not yet taken (backlog first), or `None` after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        self.io.next_event(limit).await
    }

    /// Takes the oldest event `pick` accepts (backlog first); the others stay queued in order.
    /// Panics after `limit` with the events seen and the log tail.
    pub async fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        pick: impl FnMut(&Value) -> bool,
    ) -> Value {
        self.io.wait_event(what, limit, pick).await
    }

    /// Sends `command` with a fresh `id` and waits for its answer (the event `answer` or an
    /// `error`, both carrying that id); panics on an error. Returns the answer.
    async fn call(&mut self, command: Value, answer: &str) -> Value {
        self.call_within(command, answer, ANSWER_WAIT).await
    }

    async fn call_within(&mut self, mut command: Value, answer: &str, limit: Duration) -> Value {
        self.next_id += 1;
        let id = format!("rs-{}", self.next_id);
        command["id"] = json!(id);
        let cmd = command["cmd"].as_str().unwrap_or_default().to_owned();
        self.command(command).await;
        let event = self
            .wait_event(&format!("answer to {cmd}"), limit, |e| {
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

    /// Sends a message event of any `kind` (`m.reaction`, ...); returns its event id.
    pub async fn send_event(&mut self, room: &str, kind: &str, content: Value) -> String {
        let event = self
            .call(
                json!({"cmd": "send", "room": room, "type": kind, "content": content}),
                "sent",
            )
            .await;
        event["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Uploads the file at `path` and sends it to `room` as a `msgtype` (`m.image`, `m.video`,
    /// `m.audio`, `m.file`) message with `body` = `name` and `info` `{mimetype: mime, size}`: in an
    /// encrypted room as an encrypted attachment (`file` `{url,key,iv,hashes,v:"v2"}`), else with
    /// `url`. `voice` marks it as a voice message (`org.matrix.msc3245.voice` and
    /// `org.matrix.msc1767.audio`), as Element does. Returns the `sent` event: `event_id`,
    /// `encrypted`, `sha256` (hex, of the file), `size`, `url` (mxc), `msgtype`, `content`.
    pub async fn send_file(
        &mut self,
        room: &str,
        path: &Path,
        msgtype: &str,
        mime: &str,
        name: &str,
        voice: bool,
    ) -> Value {
        let path = path.to_str().expect("file path is UTF-8");
        self.call_within(
            json!({"cmd": "send-file", "room": room, "path": path, "msgtype": msgtype,
                   "mime": mime, "name": name, "voice": voice}),
            "sent",
            FILE_WAIT,
        )
        .await
    }

    /// Redacts `event` in `room`.
    pub async fn redact(&mut self, room: &str, event: &str) {
        self.call(
            json!({"cmd": "redact", "room": room, "event_id": event}),
            "redacted",
        )
        .await;
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
        self.io.unclaimed()
    }

    /// SIGKILL and reap it (its session and crypto store stay; a restart is the same device).
    pub async fn kill(self) {
        self.io.kill().await;
    }

    /// `quit` and wait for a clean exit (then EOF on stdin); returns the exit status.
    pub async fn quit(self) -> ExitStatus {
        self.io.quit().await
    }
}
