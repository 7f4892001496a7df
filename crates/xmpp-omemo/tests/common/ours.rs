//! Our own OMEMO client (`omemo::OmemoClient` on a file-snapshotted `omemo::MemoryStore`) for the OMEMO tests,
//! in process; and the same client as a separate process (`examples/omemo_chat.rs`) for the
//! crash tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::{
    IdentityChangeSeen, MemoryStore, Namespace, OmemoClient, OmemoConfig, OmemoEvent,
    OmemoStore as _, Protocols, SendReport, TrustPolicy, Undecryptable,
};
use xmpp_omemo::stanza::PresenceType;
use xmpp_omemo::stanza::blocking::BlockingCommand;
use xmpp_omemo::stanza::carbons::Direction;
use xmpp_omemo::stanza::roster::RosterItem;
use xmpp_omemo::stream::{ClientConfig, Event, tls_client_config};

use super::World;

pub const WAIT: Duration = Duration::from_secs(30);

/// A decrypted message as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub from: String,
    pub peer: String,
    pub id: Option<String>,
    pub body: String,
    pub device: u32,
    pub prekey: bool,
    /// The OMEMO version it came in.
    pub namespace: Namespace,
    pub carbon: Option<Direction>,
    /// The XEP-0172 nick the stanza carried.
    pub nick: Option<String>,
    /// The XEP-0066 file URL the stanza carried (in the clear).
    pub oob_url: Option<String>,
}

/// A plain (unencrypted) message as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainGot {
    pub from: String,
    pub id: Option<String>,
    pub body: String,
    pub nick: Option<String>,
    /// The XEP-0066 file URL.
    pub oob_url: Option<String>,
}

/// Undecryptable messages, identity changes and other noteworthy events seen while waiting.
#[derive(Debug, Default)]
pub struct Seen {
    pub undecryptable: Vec<(Option<String>, String)>,
    pub identity_changes: Vec<IdentityChangeSeen>,
    /// Subscription presences: the sender's bare JID, the kind, the XEP-0172 nick.
    pub subscriptions: Vec<(String, PresenceType, Option<String>)>,
    pub roster_pushes: Vec<RosterItem>,
    pub blocklist_pushes: Vec<BlockingCommand>,
    pub plain: Vec<PlainGot>,
}

pub fn client_config(world: &World, user: &str, resource: &str) -> ClientConfig {
    let jid = Jid::parse(&format!("{user}@{}", world.var("XMPP_DOMAIN"))).expect("jid");
    let tls = tls_client_config(Some(Path::new(world.var("XMPP_CA_FILE")))).expect("CA file");
    let mut config = ClientConfig::new(jid, format!("pw-{user}"), tls);
    let (host, port) = world.var("XMPP_SERVER").split_once(':').expect("host:port");
    config.server = Some((host.to_owned(), port.parse().expect("port")));
    config.resource = Some(resource.to_owned());
    config.backoff.initial = Duration::from_millis(300);
    config
}

/// What the event task saw, for the test to read.
enum Seen1 {
    Published,
    PublishFailed(String),
    Message(Got),
}

/// Our OMEMO client in this process. Its events are handled by their own task, as the bridge
/// will: each message is committed (state durable, stanza acked) as soon as it arrives, so a
/// send from the test never waits behind an uncommitted delivery.
pub struct Ours {
    pub client: OmemoClient,
    pub store: Arc<MemoryStore>,
    pub bare: String,
    pub seen: Arc<std::sync::Mutex<Seen>>,
    got: tokio::sync::mpsc::UnboundedReceiver<Seen1>,
    task: tokio::task::JoinHandle<()>,
    user: String,
    resource: String,
    dir: PathBuf,
    policy: TrustPolicy,
    protocols: Protocols,
}

async fn handle_events(
    mut events: xmpp_omemo::omemo::OmemoEvents,
    out: tokio::sync::mpsc::UnboundedSender<Seen1>,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            OmemoEvent::Published { .. } => drop(out.send(Seen1::Published)),
            OmemoEvent::PublishFailed { reason } => drop(out.send(Seen1::PublishFailed(reason))),
            OmemoEvent::Message(m) => {
                let got = Got {
                    from: m.from.to_string(),
                    peer: m.peer.to_string(),
                    id: m.id.clone(),
                    body: m.body.clone(),
                    device: m.sender.device.get(),
                    prekey: m.prekey,
                    namespace: m.namespace,
                    carbon: m.carbon,
                    nick: m.nick.clone(),
                    oob_url: m.extensions.oob_url.clone(),
                };
                m.delivery.commit().await.expect("commit a delivery");
                drop(out.send(Seen1::Message(got)));
            }
            OmemoEvent::Undecryptable(Undecryptable {
                id,
                error,
                delivery,
                ..
            }) => {
                seen.lock()
                    .expect("seen")
                    .undecryptable
                    .push((id, error.to_string()));
                delivery
                    .commit()
                    .await
                    .expect("commit an undecryptable delivery");
            }
            OmemoEvent::IdentityChanged(change) => {
                seen.lock().expect("seen").identity_changes.push(change)
            }
            OmemoEvent::Plain(p) => {
                let got = PlainGot {
                    from: p.from.to_string(),
                    id: p.id.clone(),
                    body: p.body.clone(),
                    nick: p.nick.clone(),
                    oob_url: p.extensions.oob_url.clone(),
                };
                p.delivery.commit().await.expect("commit");
                seen.lock().expect("seen").plain.push(got);
            }
            OmemoEvent::Subscription { from, kind, nick } => {
                seen.lock()
                    .expect("seen")
                    .subscriptions
                    .push((from.to_string(), kind, nick));
            }
            OmemoEvent::Roster(Event::RosterPush(item)) => {
                seen.lock().expect("seen").roster_pushes.push(item)
            }
            OmemoEvent::Blocklist(command) => {
                seen.lock().expect("seen").blocklist_pushes.push(command)
            }
            _ => {}
        }
    }
}

impl Ours {
    /// Starts with the store in `dir` (created or reused) and waits until our device is published.
    pub async fn start(
        world: &World,
        user: &str,
        resource: &str,
        dir: &Path,
        policy: TrustPolicy,
    ) -> Self {
        Self::start_with(world, user, resource, dir, policy, Protocols::default()).await
    }

    /// [`Ours::start`] speaking the OMEMO versions `protocols`.
    pub async fn start_with(
        world: &World,
        user: &str,
        resource: &str,
        dir: &Path,
        policy: TrustPolicy,
        protocols: Protocols,
    ) -> Self {
        let config = client_config(world, user, resource);
        let bare = config.jid.bare().to_string();
        let store =
            Arc::new(MemoryStore::open(dir.join("omemo.json")).expect("open the OMEMO store"));
        let (client, events) = OmemoClient::start(
            config,
            store.clone(),
            OmemoConfig {
                policy,
                protocols,
                ..OmemoConfig::default()
            },
        )
        .await
        .expect("start OMEMO client");
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let task = tokio::spawn(handle_events(events, tx, seen.clone()));
        let mut ours = Self {
            client,
            store,
            bare,
            seen,
            got,
            task,
            user: user.to_owned(),
            resource: resource.to_owned(),
            dir: dir.to_owned(),
            policy,
            protocols,
        };
        match tokio::time::timeout(WAIT, ours.got.recv()).await {
            Ok(Some(Seen1::Published)) => {}
            Ok(Some(Seen1::PublishFailed(reason))) => {
                panic!("{}: publishing failed: {reason}", ours.bare)
            }
            Ok(Some(Seen1::Message(m))) => {
                panic!("{}: a message before publishing: {m:?}", ours.bare)
            }
            Ok(None) => panic!("{}: the client ended", ours.bare),
            Err(_) => panic!("{}: not published within {WAIT:?}", ours.bare),
        }
        ours
    }

    pub fn device(&self) -> u32 {
        self.client.device_id().get()
    }

    pub fn undecryptable(&self) -> Vec<(Option<String>, String)> {
        self.seen.lock().expect("seen").undecryptable.clone()
    }

    pub fn identity_changes(&self) -> Vec<IdentityChangeSeen> {
        self.seen.lock().expect("seen").identity_changes.clone()
    }

    /// Polls what the event task recorded until `pick` finds something (panics after [`WAIT`]).
    pub async fn wait_seen<T>(&self, what: &str, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = pick(&self.seen.lock().expect("seen")) {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: no {what} within {WAIT:?}; seen: {:?}",
                    self.bare,
                    self.seen.lock().expect("seen")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `count` decrypted (and already committed) messages.
    pub async fn recv(&mut self, count: usize) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < count {
            match tokio::time::timeout_at(deadline, self.got.recv()).await {
                Ok(Some(Seen1::Message(m))) => got.push(m),
                Ok(Some(_)) => {}
                Ok(None) => panic!("{}: the client ended", self.bare),
                Err(_) => panic!(
                    "{}: got {} of {count} messages within {WAIT:?} ({:?}); undecryptable: {:?}",
                    self.bare,
                    got.len(),
                    got.iter().map(|g| &g.body).collect::<Vec<_>>(),
                    self.undecryptable()
                ),
            }
        }
        got
    }

    /// Waits for `count` decrypted (and already committed) messages however long they take, as
    /// long as they keep coming: panics when `stall` passes without a new one.
    pub async fn recv_progress(&mut self, count: usize, stall: Duration) -> Vec<Got> {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            match tokio::time::timeout(stall, self.got.recv()).await {
                Ok(Some(Seen1::Message(m))) => got.push(m),
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: the client ended after {} messages",
                    self.bare,
                    got.len()
                ),
                Err(_) => panic!(
                    "{}: stalled: no message for {stall:?} after {} of {count} (last: {:?}); \
                     undecryptable: {:?}",
                    self.bare,
                    got.len(),
                    got.last().map(|g: &Got| &g.body),
                    self.undecryptable()
                ),
            }
        }
        got
    }

    /// Closes the connection and waits until the event stream has ended, with the client's
    /// handles still held; returns how long that took.
    pub async fn close_until_events_end(&mut self) -> Duration {
        let started = tokio::time::Instant::now();
        self.client.close().await;
        match tokio::time::timeout(WAIT, &mut self.task).await {
            Ok(result) => result.expect("the event task"),
            Err(_) => panic!(
                "{}: the events did not end within {WAIT:?} of a close",
                self.bare
            ),
        }
        started.elapsed()
    }

    /// Waits `quiet` and fails if a message arrives meanwhile.
    pub async fn settle(&mut self, quiet: Duration) {
        if let Ok(Some(Seen1::Message(m))) = tokio::time::timeout(quiet, self.got.recv()).await {
            panic!("{}: unexpected message {m:?}", self.bare);
        }
    }

    pub async fn send(&self, to: &str, text: &str, id: &str) -> SendReport {
        let to = Jid::parse(to).expect("jid");
        match tokio::time::timeout(WAIT, self.client.send_text(&to, text, id)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => panic!("{}: sending {id} to {to} failed: {e}", self.bare),
            Err(_) => panic!(
                "{}: sending {id} to {to} took longer than {WAIT:?}",
                self.bare
            ),
        }
    }

    /// A graceful restart: close the connection and the store, open both again.
    pub async fn restart(self, world: &World) -> Self {
        let Self {
            client,
            store,
            user,
            resource,
            dir,
            policy,
            protocols,
            task,
            ..
        } = self;
        client.close().await;
        drop(client);
        let _ = tokio::time::timeout(WAIT, task).await;
        store.flush().expect("flush");
        drop(store);
        Self::start_with(world, &user, &resource, &dir, policy, protocols).await
    }
}

/// `examples/omemo_chat.rs` as a child process (built by `cargo test`).
pub struct ChatProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub device_id: u32,
    pub log: PathBuf,
    /// Ids of redelivered messages that were already decrypted and committed.
    pub duplicates: Vec<String>,
    backlog: std::collections::VecDeque<Value>,
}

fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let bin = deps
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples/omemo_chat");
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite with `cargo test` (it builds the examples)",
        bin.display()
    );
    bin
}

impl ChatProcess {
    pub async fn start(world: &World, user: &str, dir: &Path, log_name: &str) -> Self {
        let log = world.state.path().join(log_name);
        let mut child = Command::new(example_binary())
            .args(["--jid", &format!("{user}@{}", world.var("XMPP_DOMAIN"))])
            .args([
                "--server",
                world.var("XMPP_SERVER"),
                "--ca-file",
                world.var("XMPP_CA_FILE"),
            ])
            .arg("--store")
            .arg(dir.join("omemo.json"))
            .env("OMEMO_CHAT_PASSWORD", format!("pw-{user}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .kill_on_drop(true)
            .spawn()
            .expect("start omemo_chat");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut chat = Self {
            child,
            stdin,
            lines,
            device_id: 0,
            log,
            duplicates: Vec::new(),
            backlog: Default::default(),
        };
        let ready = chat.wait("ready", |e| e["event"] == "ready").await;
        chat.device_id =
            u32::try_from(ready["device_id"].as_u64().expect("device_id")).expect("u32");
        chat.wait("published", |e| e["event"] == "published").await;
        chat
    }

    /// Takes the oldest event `pick` accepts; the others stay queued, in order, for later waits.
    pub async fn wait(&mut self, what: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&mut pick) {
            return self.backlog.remove(i).expect("index");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let event: Value =
                        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                    // A stanza redelivered after a crash, whose state was already committed, is a
                    // duplicate: expected (delivery is at least once), and recorded.
                    if event["event"] == "undecryptable"
                        && event["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("already decrypted"))
                    {
                        self.duplicates
                            .push(event["id"].as_str().unwrap_or_default().to_owned());
                        continue;
                    }
                    if event["event"] == "undecryptable" || event["event"] == "error" {
                        panic!("omemo_chat: {event}");
                    }
                    if pick(&event) {
                        return event;
                    }
                    self.backlog.push_back(event);
                }
                Ok(Ok(None)) | Ok(Err(_)) => panic!(
                    "omemo_chat ended while waiting for {what}; see {}",
                    self.log.display()
                ),
                Err(_) => panic!(
                    "omemo_chat: no {what} within {WAIT:?}; unclaimed: {:?}; see {}",
                    self.backlog,
                    self.log.display()
                ),
            }
        }
    }

    pub async fn send(&mut self, to: &str, text: &str, id: &str) {
        let cmd = serde_json::json!({"cmd": "send", "to": to, "text": text, "id": id});
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("stdin");
        self.wait("sent", |e| e["event"] == "sent" && e["id"] == id)
            .await;
    }

    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL omemo_chat");
    }
}
