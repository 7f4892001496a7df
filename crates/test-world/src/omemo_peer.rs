//! The python-omemo peer (`scripts/world/omemo_peer.py serve`) as a child process: legacy OMEMO
//! (eu.siacs.conversations.axolotl) by an independent implementation, driven with JSON lines.
//!
//! It runs on `line_peer::LinePeer`. Events the peer prints are kept: `wait_event` and friends
//! take the first *matching* event and leave
//! the others (in order) for later calls, so a `sent` is not lost while waiting for a `received`.
//! Timeouts and unexpected exits panic with the tail of the peer's stderr log.
//!
//! Besides encrypted text it sends and reports what Conversations / Dino put beside a message:
//! replies, corrections, markable, receipt requests ([`OmemoPeer::send_with`]), reactions,
//! retractions, displayed markers and chat states ([`OmemoPeer::react`], ...), and receipts it
//! answers by itself (unless started with `--no-receipts`). Received messages carry
//! `reply_to`/`fallback`/`replace`/`markable`/`receipt_request`/`chat_state`/`origin_id` when
//! present; body-less or meta stanzas come as `meta` events ([`OmemoPeer::wait_meta`]).
//!
//! Files go the way Conversations shares them: [`OmemoPeer::send_file`] uploads the file
//! AES-256-GCM-encrypted (XEP-0363 slot on the world's https port) and sends an OMEMO message whose
//! body is the XEP-0454 `aesgcm://…#<iv><key>` URL; [`OmemoPeer::send_file_plain`] uploads it as is
//! and sends the https URL with an XEP-0066 `<x xmlns='jabber:x:oob'/>`. A received message that
//! shares a file this way is downloaded (and decrypted) before it is reported, with a `file`
//! field (`{"ok","sha256","size","url","encrypted",...}`, see [`OmemoPeer::wait_file`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::line_peer::LinePeer;
use crate::{World, repo};

/// How long `start` waits for `ready` (first start: key generation and publishing, ~1-2 s).
pub const READY_WAIT: Duration = Duration::from_secs(30);
/// Default limit of the helpers that wait for one answer (`send`, `ping`, `devices`).
pub const ANSWER_WAIT: Duration = Duration::from_secs(20);
/// Limit of `send_file` / `send_file_plain` (a 30 MB upload over the world's https: ~1 s; slower next
/// to a build).
pub const FILE_WAIT: Duration = Duration::from_secs(120);

/// What a `send` carries besides the encrypted text, written in the clear beside `<encrypted>`
/// the way Conversations writes it (legacy OMEMO encrypts only the body). All absent by default:
/// `SendOptions { reply_to: Some(id), fallback: Some("quoted"), ..Default::default() }`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendOptions<'a> {
    /// The stanza id (and XEP-0359 origin-id); the peer picks one when absent.
    pub id: Option<&'a str>,
    /// XEP-0461 `<reply xmlns='urn:xmpp:reply:0' id=…/>`: the id of the message answered.
    pub reply_to: Option<&'a str>,
    /// The reply's `to` (the author of `reply_to`); no `to` attribute when absent. Needs `reply_to`.
    pub reply_to_jid: Option<&'a str>,
    /// The quoted text (needs `reply_to`): the encrypted body becomes `"> " + line + "\n"` for each
    /// of its lines, then the text, with an XEP-0428 `<fallback for='urn:xmpp:reply:0'><body
    /// start='0' end=N/>` over the quote (N in code points). `sent` then has `body` and `fallback`.
    pub fallback: Option<&'a str>,
    /// XEP-0308 `<replace xmlns='urn:xmpp:message-correct:0' id=…/>`: the id of the message corrected.
    pub replace: Option<&'a str>,
    /// XEP-0333 `<markable/>`.
    pub markable: bool,
    /// XEP-0184 `<request xmlns='urn:xmpp:receipts'/>` (a python peer answers it unless `--no-receipts`).
    pub receipt: bool,
}

/// XEP-0085 chat states `chat_state` takes.
pub const CHAT_STATES: [&str; 5] = ["active", "composing", "paused", "inactive", "gone"];

pub struct OmemoPeer {
    io: LinePeer,
    /// Full JID the peer is bound to (`user@domain/resource`).
    pub jid: String,
    /// Bare JID (`user@domain`).
    pub bare: String,
    /// Its own OMEMO device id.
    pub device_id: u32,
    /// The whole `ready` event (`identity_key`, `identity_fingerprint`, `store`, `identity_reset`, ...).
    pub ready: Value,
    /// The peer's stderr (python logging).
    pub log: PathBuf,
}

impl OmemoPeer {
    /// Starts `omemo_peer.py serve` for `user` (password `pw-<user>`) with extra `flags` (for example
    /// `--reset-identity`, `--resource R`, `--store-name N`, `--strict-identity`, `-v`; without
    /// `--backends twomemo|both` it speaks legacy OMEMO only, with `--ns twomemo` it sends OMEMO 2)
    /// and waits for
    /// its `ready` event. State: `<world>/omemo/<store name>.json`, so a restart with the same flags is
    /// the same device.
    pub async fn start(world: &World, user: &str, flags: &[&str]) -> Self {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let bare = format!("{user}@{}", world.var("XMPP_DOMAIN"));
        let log = world
            .state
            .path()
            .join(format!("omemo-peer-{user}-{n}.log"));
        let mut command = Command::new(format!("{}/bin/python", world.var("WORLD_VENV")));
        command
            .arg(repo().join("scripts/world/omemo_peer.py"))
            .arg("--jid")
            .arg(&bare)
            .arg("serve")
            .args(flags);
        if !flags.contains(&"--backends") {
            // Legacy OMEMO only unless asked: the peer stands in for Conversations, and a client
            // speaking OMEMO 2 would otherwise pick OMEMO 2 with it.
            command.args(["--backends", "oldmemo"]);
        }
        command
            .env("XMPP_PASSWORD", format!("pw-{user}"))
            .env("XMPP_SERVER", world.var("XMPP_SERVER"))
            .env("XMPP_CA_FILE", world.var("XMPP_CA_FILE"))
            .envs(
                world
                    .env
                    .get("XMPP_UPLOAD_JID")
                    .map(|jid| ("XMPP_UPLOAD_JID", jid)),
            )
            .env("WORLD_STATE", world.state.path());
        let mut io = LinePeer::spawn(command, format!("omemo peer {bare}"), log.clone());
        let ready = io.wait_ready(READY_WAIT).await;
        let jid = ready["jid"].as_str().expect("ready.jid").to_owned();
        io.label = format!("omemo peer {jid}");
        let device_id = ready["device_id"]
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .expect("ready.device_id");
        Self {
            io,
            jid,
            bare,
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

    /// Encrypts `text` to all devices of `to` (bare JID) and waits for the `sent` event
    /// (`{"event":"sent","id","to","prekey"}`), which it returns. Panics on an `error` answer.
    pub async fn send(&mut self, to: &str, text: &str, id: Option<&str>) -> Value {
        self.send_with(
            to,
            text,
            SendOptions {
                id,
                ..SendOptions::default()
            },
        )
        .await
    }

    /// `send` with a reply, correction, markable and/or receipt request (see [`SendOptions`]).
    /// Returns the `sent` event (`{"event":"sent","id","to","prekey"[,"body","fallback"]}`: with a
    /// `fallback`, `body` is the whole encrypted body and `fallback` `[0, N]`).
    pub async fn send_with(&mut self, to: &str, text: &str, options: SendOptions<'_>) -> Value {
        let mut cmd = json!({"cmd": "send", "to": to, "text": text});
        let SendOptions {
            id,
            reply_to,
            reply_to_jid,
            fallback,
            replace,
            markable,
            receipt,
        } = options;
        for (key, value) in [
            ("id", id),
            ("reply_to", reply_to),
            ("reply_to_jid", reply_to_jid),
            ("fallback", fallback),
            ("replace", replace),
        ] {
            if let Some(value) = value {
                cmd[key] = json!(value);
            }
        }
        if markable {
            cmd["markable"] = json!(true);
        }
        if receipt {
            cmd["receipt"] = json!(true);
        }
        self.command(cmd).await;
        self.wait_sent("send", to).await
    }

    /// Shares the file at `path` with `to` the way Conversations does with OMEMO: an XEP-0363
    /// slot, the file AES-256-GCM-encrypted (fresh key and 12-byte IV, tag appended) and PUT over
    /// https, then an OMEMO message whose body is exactly
    /// `aesgcm://<get URL without https://>#<24 hex IV><64 hex key>`. `name` (default: the file's
    /// name) is the upload's file name, `mime` (default: guessed from `name`) its content type.
    /// Returns `{"event":"file-sent","cmd","id","to","sha256","size","url","name","mime",
    /// "encrypted":true,"body","prekey"}` (`sha256`/`size` of the plaintext, `url` the https get
    /// URL). Panics on an `error` answer.
    pub async fn send_file(
        &mut self,
        to: &str,
        path: &Path,
        name: Option<&str>,
        mime: Option<&str>,
    ) -> Value {
        self.file_command("send-file", to, path, name, mime).await
    }

    /// [`OmemoPeer::send_file`] without encryption, as a client shares a file without OMEMO: the
    /// file uploaded as is, then an unencrypted message whose body is the https get URL, with
    /// `<x xmlns='jabber:x:oob'><url>…</url></x>`. Returns `file-sent` (`"encrypted":false`).
    pub async fn send_file_plain(
        &mut self,
        to: &str,
        path: &Path,
        name: Option<&str>,
        mime: Option<&str>,
    ) -> Value {
        self.file_command("send-file-plain", to, path, name, mime)
            .await
    }

    async fn file_command(
        &mut self,
        cmd: &str,
        to: &str,
        path: &Path,
        name: Option<&str>,
        mime: Option<&str>,
    ) -> Value {
        let path = path.to_str().expect("file path is UTF-8");
        self.command(json!({"cmd": cmd, "to": to, "path": path, "name": name, "mime": mime}))
            .await;
        let answer = self
            .wait_event(&format!("answer to {cmd} {path}"), FILE_WAIT, |e| {
                (e["event"] == "file-sent" || e["event"] == "error") && e["cmd"] == cmd
            })
            .await;
        if answer["event"] == "error" {
            self.fail(&format!("{cmd} {path} to {to} failed: {answer}"));
        }
        answer
    }

    /// Takes the first `received` (OMEMO) or `plain` event that shares a file (an `aesgcm://` body,
    /// or an https body equal to its OOB URL): the peer has downloaded (and decrypted) it, and the
    /// event's `file` is `{"ok":true,"sha256","size","url","encrypted","content_type"}` or
    /// `{"ok":false,"error",...}`. Other events stay queued. Panics after `limit`.
    pub async fn wait_file(&mut self, limit: Duration) -> Value {
        self.wait_event("a message sharing a file", limit, |e| {
            (e["event"] == "received" || e["event"] == "plain") && e.get("file").is_some()
        })
        .await
    }

    /// XEP-0444: sends our whole set of reactions to message `id` (`[]` takes them all back),
    /// unencrypted with a `<store/>` hint, as Conversations does. Returns `sent` `{cmd,id,to}` (its
    /// `id` is the reaction stanza's own id).
    pub async fn react(&mut self, to: &str, id: &str, emojis: &[&str]) -> Value {
        self.command(json!({"cmd": "react", "to": to, "id": id, "emojis": emojis}))
            .await;
        self.wait_sent("react", to).await
    }

    /// XEP-0424 (v1): retracts our message `id` (`<retract xmlns='urn:xmpp:message-retract:1'/>`,
    /// fallback body, XEP-0428 `<fallback/>`, `<store/>`), unencrypted. Returns `sent`.
    pub async fn retract(&mut self, to: &str, id: &str) -> Value {
        self.command(json!({"cmd": "retract", "to": to, "id": id}))
            .await;
        self.wait_sent("retract", to).await
    }

    /// XEP-0333: `<displayed id=…/>` for message `id` (with `<store/>`), unencrypted; `to` as given
    /// (Conversations sends it to the sender's full JID). Returns `sent`.
    pub async fn displayed(&mut self, to: &str, id: &str) -> Value {
        self.command(json!({"cmd": "displayed", "to": to, "id": id}))
            .await;
        self.wait_sent("displayed", to).await
    }

    /// XEP-0085: a body-less chat state (one of [`CHAT_STATES`]) with `<no-store/>`. Returns `sent`.
    pub async fn chat_state(&mut self, to: &str, state: &str) -> Value {
        self.command(json!({"cmd": "chatstate", "to": to, "state": state}))
            .await;
        self.wait_sent("chatstate", to).await
    }

    /// Takes the answer to a sending command: `sent` (for `send`: the one without `cmd`), or
    /// panics on its `error`.
    async fn wait_sent(&mut self, cmd: &str, to: &str) -> Value {
        let answer = self
            .wait_event(&format!("answer to {cmd}"), ANSWER_WAIT, |e| {
                let of_cmd = match e.get("cmd") {
                    None | Some(Value::Null) => cmd == "send" && e["event"] == "sent",
                    Some(c) => c == cmd,
                };
                of_cmd && (e["event"] == "sent" || e["event"] == "error")
            })
            .await;
        if answer["event"] == "error" {
            self.fail(&format!("{cmd} to {to} failed: {answer}"));
        }
        answer
    }

    /// Takes the first `meta` event `pick` accepts: an unencrypted stanza about other messages,
    /// `{"event":"meta","from","id"}` plus what it carries: `reactions` `{"id","emojis"}`,
    /// `retract` (id), `displayed` (id), `received` (XEP-0184 receipt for id), `chat_state`.
    /// Other events stay queued. Panics after `limit`.
    pub async fn wait_meta(
        &mut self,
        mut pick: impl FnMut(&Value) -> bool,
        limit: Duration,
    ) -> Value {
        self.wait_event("meta event", limit, |e| e["event"] == "meta" && pick(e))
            .await
    }

    /// Waits for the XEP-0184 receipt (`<received id=…/>`) for our message `id`; returns the
    /// `meta` event (`from` is the full JID that confirmed it).
    pub async fn wait_receipt(&mut self, id: &str, limit: Duration) -> Value {
        self.wait_event(&format!("receipt for {id}"), limit, |e| {
            e["event"] == "meta" && e["received"] == id
        })
        .await
    }

    /// Waits for `count` `received` events (decrypted messages with a body) and returns them in
    /// arrival order. A decryption `error` event while waiting panics (use `wait_event` to expect one).
    pub async fn wait_received(&mut self, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let n = got.len();
            let event = self
                .wait_event(
                    &format!("received message {} of {count}", n + 1),
                    left,
                    |e| {
                        e["event"] == "received"
                            || (e["event"] == "error" && e.get("from").is_some())
                    },
                )
                .await;
            if event["event"] == "error" {
                self.fail(&format!(
                    "decryption error after {n} of {count} messages: {event}"
                ));
            }
            got.push(event);
        }
        got
    }

    /// Round trip through the peer's command loop: every earlier command has been handled.
    pub async fn ping(&mut self) {
        self.command(json!({"cmd": "ping"})).await;
        self.wait_event("pong", ANSWER_WAIT, |e| e["event"] == "pong")
            .await;
    }

    /// The legacy OMEMO device list of `of` (bare JID) as published in PEP (empty if there is none).
    pub async fn devices(&mut self, of: &str) -> Vec<u32> {
        self.command(json!({"cmd": "devices", "of": of})).await;
        let answer = self
            .wait_event("devices", ANSWER_WAIT, |e| {
                e["event"] == "devices" || (e["event"] == "error" && e["cmd"] == "devices")
            })
            .await;
        if answer["event"] == "error" {
            self.fail(&format!("devices of {of} failed: {answer}"));
        }
        answer["device_ids"]
            .as_array()
            .expect("device_ids")
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| u32::try_from(d).ok())
                    .expect("device id")
            })
            .collect()
    }

    /// Sends `<presence type='subscribe'/>` to `to` (a bare JID), with an XEP-0172 `<nick/>` when
    /// `nick` is given, and waits until the peer has sent it.
    pub async fn subscribe(&mut self, to: &str, nick: Option<&str>) {
        let mut cmd = json!({"cmd": "subscribe", "to": to});
        if let Some(nick) = nick {
            cmd["nick"] = json!(nick);
        }
        self.command(cmd).await;
        self.wait_ok("subscribe", to).await;
    }

    /// Sends `<presence type='subscribed'/>` to `to`: approves its request (or pre-approves one).
    pub async fn approve(&mut self, to: &str) {
        self.command(json!({"cmd": "approve", "to": to})).await;
        self.wait_ok("approve", to).await;
    }

    /// Broadcasts an available presence with `show` (away, chat, dnd, xa; `None`: plainly
    /// online) and a status text, or (`offline`) `<presence type='unavailable'/>`.
    pub async fn presence(&mut self, show: Option<&str>, status: Option<&str>, offline: bool) {
        let ptype = offline.then_some("unavailable");
        self.command(json!({"cmd": "presence", "show": show, "status": status, "type": ptype}))
            .await;
        let answer = self
            .wait_event("answer to presence", ANSWER_WAIT, |e| {
                (e["event"] == "ok" || e["event"] == "error") && e["cmd"] == "presence"
            })
            .await;
        if answer["event"] == "error" {
            self.fail(&format!("presence failed: {answer}"));
        }
    }

    async fn wait_ok(&mut self, cmd: &str, to: &str) {
        let answer = self
            .wait_event(&format!("answer to {cmd}"), ANSWER_WAIT, |e| {
                (e["event"] == "ok" || e["event"] == "error") && e["cmd"] == cmd
            })
            .await;
        if answer["event"] == "error" || answer["to"] != to {
            self.fail(&format!("{cmd} {to} failed: {answer}"));
        }
    }

    /// Waits for a subscription presence (`subscribe`, `subscribed`, `unsubscribe`,
    /// `unsubscribed`) from `from` (a bare JID); returns the event (with `nick` if it had one).
    pub async fn wait_subscription(&mut self, from: &str, kind: &str) -> Value {
        self.wait_event(&format!("{kind} from {from}"), ANSWER_WAIT, |e| {
            e["event"] == "subscription" && e["from"] == from && e["type"] == kind
        })
        .await
    }

    /// Waits until our message `id` comes back as an error; returns its defined condition.
    pub async fn wait_message_error(&mut self, id: &str, limit: Duration) -> String {
        let event = self
            .wait_event(&format!("the error for message {id}"), limit, |e| {
                e["event"] == "message_error" && e["id"] == id
            })
            .await;
        event["condition"].as_str().unwrap_or_default().to_owned()
    }

    /// Events printed so far that no wait has taken (does not read new ones).
    pub fn unclaimed(&self) -> &VecDeque<Value> {
        self.io.unclaimed()
    }

    /// SIGKILL (no goodbye to the server: its XEP-0198 session hibernates) and reap it.
    pub async fn kill(self) {
        self.io.kill().await;
    }

    /// `quit` and wait for a clean exit (then EOF on stdin); returns the exit status.
    pub async fn quit(self) -> ExitStatus {
        self.io.quit().await
    }
}
