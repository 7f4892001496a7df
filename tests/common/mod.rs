//! The bridge's e2e harness on top of the workspace's test world (`test-world`: Synapse and
//! Prosody from `scripts/world/up.sh`, the OMEMO peers): the registration our own binary
//! generated, the bridge run as a child process, and a small Matrix client for the test user.
//! Everything binds 127.0.0.1 on free ports and is stopped on drop.
#![allow(dead_code)]

pub mod bench;
pub mod e2e;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(unused_imports)]
pub use test_world::{World, free_port, omemo_peer, profanity, repo, xmpp_peer};

pub const BIN: &str = env!("CARGO_BIN_EXE_interop-bridge");

/// The bridge binary a test or bench runs: this tree's, or the one `BENCH_BRIDGE_BIN` names
/// (the benches measure another build unchanged that way, `scripts/bench/e2e_compare.sh`).
pub fn bridge_bin() -> String {
    std::env::var("BENCH_BRIDGE_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// Runs the bridge binary with `args`; returns (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bridge_bin())
        .args(args)
        .output()
        .expect("run interop-bridge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The bridge's files for one test: config and registration made by the binary itself.
pub struct BridgeFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub registration: PathBuf,
    pub as_port: u16,
}

impl BridgeFiles {
    pub fn generate(dir: &Path, synapse_port: u16) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let as_port = free_port();
        let sets = [
            format!("homeserver.address=http://127.0.0.1:{synapse_port}"),
            "homeserver.domain=localhost".to_owned(),
            format!("appservice.address=http://127.0.0.1:{as_port}"),
            format!("appservice.listen=127.0.0.1:{as_port}"),
            "logging.level=interop_bridge=debug,info".to_owned(),
        ];
        let mut args = vec!["generate-config"];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        let (ok, config_text, err) = cli(&args);
        assert!(ok, "generate-config failed: {err}");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text).expect("write config");
        let (ok, _, err) = cli(&[
            "generate-registration",
            "-c",
            config.to_str().expect("utf-8 path"),
        ]);
        assert!(ok, "generate-registration failed: {err}");
        Self {
            dir: dir.to_owned(),
            registration: dir.join("registration.yaml"),
            config,
            as_port,
        }
    }

    /// A value from the registration file (`as_token`, `hs_token`), read as the homeserver does.
    pub fn registration_value(&self, key: &str) -> String {
        let text = std::fs::read_to_string(&self.registration).expect("registration");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
            .unwrap_or_else(|| panic!("{key} not in registration"))
    }

    pub fn as_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.as_port)
    }
}

/// The bridge as a child process, its log in a file.
pub struct BridgeProcess {
    child: Child,
    pub log: PathBuf,
}

impl BridgeProcess {
    /// Starts `run -c config` and waits until it logs "ready".
    pub fn start(files: &BridgeFiles) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = files.dir.join(format!("bridge-{n}.log"));
        let child = Command::new(bridge_bin())
            .args(["run", "-c", files.config.to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn bridge");
        let mut bridge = Self { child, log };
        bridge.wait_for_log("ready", Duration::from_secs(60));
        bridge
    }

    /// The bridge's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "bridge exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "bridge did not log {needle:?} within {limit:?}:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM and wait: a clean shutdown must exit 0.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let status = self.child.wait().expect("wait");
        assert!(
            status.success(),
            "bridge exited with {status} on SIGTERM:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, and how long the process took to exit (0 required). Gives up after `limit`
    /// (the process is then killed and the test fails), so a hung shutdown cannot hang the test.
    pub fn stop_timed(mut self, limit: Duration) -> Duration {
        let pid = self.child.id().to_string();
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let took = started.elapsed();
                assert!(
                    status.success(),
                    "bridge exited with {status} on SIGTERM:\n{}",
                    self.log_text()
                );
                return took;
            }
            assert!(
                started.elapsed() < limit,
                "bridge still running {limit:?} after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the crash case.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A Matrix user of the test homeserver, over plain HTTP.
pub struct MatrixUser {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub user_id: String,
}

/// Status and JSON body of a request.
pub async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl MatrixUser {
    /// Registers `name` through Synapse's shared-secret admin API and logs in.
    pub async fn register(world: &World, name: &str) -> Self {
        use hmac::{Hmac, Mac};
        let http = reqwest::Client::new();
        let base = world.synapse_url();
        let url = format!("{base}/_synapse/admin/v1/register");
        let (_, nonce) = call(&http, "GET", &url, None, None).await;
        let nonce = nonce["nonce"].as_str().expect("nonce").to_owned();
        let password = format!("pw-{name}");
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(world.var("SYNAPSE_SHARED_SECRET").as_bytes())
                .expect("key");
        mac.update(format!("{nonce}\0{name}\0{password}\0notadmin").as_bytes());
        let digest: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({"nonce": nonce, "username": name, "password": password, "admin": false, "mac": digest});
        let (status, reg) = call(&http, "POST", &url, None, Some(body)).await;
        assert_eq!(status, 200, "register {name}: {reg}");
        Self {
            http,
            base,
            token: reg["access_token"].as_str().expect("token").to_owned(),
            user_id: reg["user_id"].as_str().expect("user id").to_owned(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(
            &self.http,
            method,
            &format!("{}{path}", self.base),
            Some(&self.token),
            body,
        )
        .await
    }

    /// Creates a DM (is_direct) with `other` invited; returns the room id.
    pub async fn create_dm(&self, other: &str) -> String {
        let body = json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [other]});
        let (status, out) = self
            .call("POST", "/_matrix/client/v3/createRoom", Some(body))
            .await;
        assert_eq!(status, 200, "createRoom: {out}");
        out["room_id"].as_str().expect("room id").to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        );
        let (status, out) = self
            .call(
                "PUT",
                &path,
                Some(json!({"msgtype": "m.text", "body": body})),
            )
            .await;
        assert_eq!(status, 200, "send: {out}");
        out["event_id"].as_str().expect("event id").to_owned()
    }

    /// The room's latest timeline events of every type (newest last, at most 200).
    pub async fn events(&self, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200",
            enc(room)
        );
        let (status, out) = self.call("GET", &path, None).await;
        assert_eq!(status, 200, "messages: {out}");
        let mut events: Vec<Value> = out["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// Every event of the room's timeline, oldest first (paged back to the start, 500 at a
    /// time).
    pub async fn all_events(&self, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
                enc(room)
            );
            if let Some(token) = &from {
                path.push_str(&format!("&from={}", enc(token)));
            }
            let (status, out) = self.call("GET", &path, None).await;
            assert_eq!(status, 200, "messages: {out}");
            let chunk = out["chunk"].as_array().cloned().unwrap_or_default();
            let end = out["end"].as_str().map(str::to_owned);
            let done = chunk.is_empty() || end.is_none() || end == from;
            events.extend(chunk);
            if done {
                break;
            }
            from = end;
        }
        events.reverse();
        events
    }

    /// Every `m.room.message` of the room's timeline, oldest first.
    pub async fn all_messages(&self, room: &str) -> Vec<Value> {
        let mut events = self.all_events(room).await;
        events.retain(|e| e["type"] == "m.room.message");
        events
    }

    /// The room's latest `m.room.message` events (newest last).
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let mut events = self.events(room).await;
        events.retain(|e| e["type"] == "m.room.message");
        events
    }

    /// Waits until an event of the room's timeline matches `predicate`; returns it.
    pub async fn wait_for_event(&self, room: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(event) = self.events(room).await.into_iter().find(|e| predicate(e)) {
                return event;
            }
            assert!(Instant::now() < deadline, "no matching event in {room}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One event by id (`GET /rooms/{room}/event/{id}`): status and body.
    pub async fn event(&self, room: &str, event_id: &str) -> (u16, Value) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(event_id)
        );
        self.call("GET", &path, None).await
    }

    /// The content of a state event (`GET /rooms/{room}/state/{type}/{key}`): status and body.
    pub async fn state(&self, room: &str, event_type: &str, state_key: &str) -> (u16, Value) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            enc(room),
            enc(event_type),
            enc(state_key)
        );
        self.call("GET", &path, None).await
    }

    /// Joins `room` (a room id); asserts success.
    pub async fn join(&self, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        let (status, out) = self.call("POST", &path, Some(json!({}))).await;
        assert_eq!(status, 200, "join {room}: {out}");
    }

    /// Leaves `room` (or rejects an invite to it): status and body, as the homeserver answered.
    pub async fn leave(&self, room: &str) -> (u16, Value) {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", enc(room));
        self.call("POST", &path, Some(json!({}))).await
    }

    /// The rooms this user is invited to, from a full `/sync`: room id → the invite's stripped
    /// state events (the user's own `m.room.member` among them).
    pub async fn invites(&self) -> HashMap<String, Vec<Value>> {
        // Synapse keeps a /sync answer for 2 minutes and hands it out again for the same
        // (user, timeout, since, filter, …). A sync without `since` never waits, so a new timeout
        // per call makes each one fresh.
        use std::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let timeout = CALLS.fetch_add(1, Ordering::Relaxed);
        let filter = enc(r#"{"room":{"timeline":{"limit":1}}}"#);
        let path = format!("/_matrix/client/v3/sync?timeout={timeout}&filter={filter}");
        let (status, out) = self.call("GET", &path, None).await;
        assert_eq!(status, 200, "sync: {out}");
        out["rooms"]["invite"]
            .as_object()
            .map(|rooms| {
                rooms
                    .iter()
                    .map(|(room, invite)| {
                        let events = invite["invite_state"]["events"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        (room.clone(), events)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an invite to `room`; returns its stripped state events.
    pub async fn wait_for_invite(&self, room: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(events) = self.invites().await.remove(room) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} got no invite to {room}",
                self.user_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a message from `sender` whose body contains `needle` is in the room.
    pub async fn wait_for_message(&self, room: &str, sender: &str, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.messages(room).await.into_iter().find(|e| {
                e["sender"] == sender
                    && e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.contains(needle))
            });
            if let Some(event) = found {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no message from {sender} containing {needle:?} in {room}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Counts the messages from `sender` containing `needle`.
    pub async fn count_messages(&self, room: &str, sender: &str, needle: &str) -> usize {
        self.messages(room)
            .await
            .iter()
            .filter(|e| {
                e["sender"] == sender
                    && e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.contains(needle))
            })
            .count()
    }

    pub async fn wait_for_membership(&self, room: &str, user: &str, membership: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        );
        loop {
            let (status, out) = self.call("GET", &path, None).await;
            if status == 200 && out["membership"] == membership {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user} is not {membership} in {room}: {out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn encode(s: &str) -> String {
    enc(s)
}
