//! Our own OMEMO client (`interop::omemo::OmemoClient` on a sled store) for the OMEMO tests,
//! in process; and the same client as a separate process (`examples/omemo_chat.rs`) for the
//! crash tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use interop_bridge::interop::Jid;
use interop_bridge::interop::omemo::{
    IdentityChangeSeen, OmemoClient, OmemoConfig, OmemoEvent, SendReport, TrustPolicy, Undecryptable,
};
use interop_bridge::interop::stanza::carbons::Direction;
use interop_bridge::interop::stream::{ClientConfig, tls_client_config};
use interop_bridge::store::{SledStore, Store as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc::Receiver;

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
    pub carbon: Option<Direction>,
}

/// Undecryptable messages, identity changes and other noteworthy events seen while waiting.
#[derive(Debug, Default)]
pub struct Seen {
    pub undecryptable: Vec<(Option<String>, String)>,
    pub identity_changes: Vec<IdentityChangeSeen>,
}

pub fn client_config(world: &World, user: &str, resource: &str) -> ClientConfig {
    let jid = Jid::parse(&format!("{user}@{}", world.var("XMPP_DOMAIN"))).expect("jid");
    let tls = tls_client_config(Some(Path::new(world.var("XMPP_CA_FILE")))).expect("CA file");
    let mut config = ClientConfig::new(jid, format!("pw-{user}"), tls);
    let (host, port) = world.var("XMPP_SERVER").split_once(':').expect("host:port");
    config.server = Some((host.to_owned(), port.parse().expect("port")));
    config.resource = resource.to_owned();
    config.backoff.initial = Duration::from_millis(300);
    config
}

/// Our OMEMO client in this process.
pub struct Ours {
    pub client: OmemoClient,
    pub events: Receiver<OmemoEvent>,
    pub store: Arc<SledStore>,
    pub bare: String,
    pub seen: Seen,
    user: String,
    resource: String,
    dir: PathBuf,
    policy: TrustPolicy,
}

impl Ours {
    /// Starts with the store in `dir` (created or reused) and waits until our device is published.
    pub async fn start(world: &World, user: &str, resource: &str, dir: &Path, policy: TrustPolicy) -> Self {
        let store = Arc::new(SledStore::open(dir).expect("open sled"));
        let config = client_config(world, user, resource);
        let bare = config.jid.bare().to_string();
        let (client, events) =
            OmemoClient::start(config, store.omemo(&bare), OmemoConfig { policy }).await.expect("start OMEMO client");
        let mut ours = Self {
            client,
            events,
            store,
            bare,
            seen: Seen::default(),
            user: user.to_owned(),
            resource: resource.to_owned(),
            dir: dir.to_owned(),
            policy,
        };
        ours.wait_published().await;
        ours
    }

    pub fn device(&self) -> u32 {
        self.client.device_id().get()
    }

    async fn wait_published(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(OmemoEvent::Published { .. })) => return,
                Ok(Some(OmemoEvent::PublishFailed { reason })) => panic!("{}: publishing failed: {reason}", self.bare),
                Ok(Some(other)) => self.absorb(other).await,
                Ok(None) => panic!("{}: the client ended", self.bare),
                Err(_) => panic!("{}: not published within {WAIT:?}", self.bare),
            }
        }
    }

    /// Handles an event that is not a message: commits undecryptable deliveries, records
    /// identity changes.
    async fn absorb(&mut self, event: OmemoEvent) {
        match event {
            OmemoEvent::Undecryptable(Undecryptable { id, error, delivery, .. }) => {
                self.seen.undecryptable.push((id, error.to_string()));
                delivery.commit().await.expect("commit an undecryptable delivery");
            }
            OmemoEvent::IdentityChanged(change) => self.seen.identity_changes.push(change),
            OmemoEvent::Plain(p) => p.delivery.commit().await.expect("commit"),
            OmemoEvent::Message(m) => panic!("{}: unexpected message {:?}", self.bare, m),
            _ => {}
        }
    }

    /// Waits for `count` decrypted messages, committing each one as it arrives.
    pub async fn recv(&mut self, count: usize) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < count {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(OmemoEvent::Message(m))) => {
                    got.push(Got {
                        from: m.from.to_string(),
                        peer: m.peer.to_string(),
                        id: m.id.clone(),
                        body: m.body.clone(),
                        device: m.sender.device.get(),
                        prekey: m.prekey,
                        carbon: m.carbon,
                    });
                    m.delivery.commit().await.expect("commit a delivery");
                }
                Ok(Some(other)) => self.absorb(other).await,
                Ok(None) => panic!("{}: the client ended", self.bare),
                Err(_) => panic!(
                    "{}: got {} of {count} messages within {WAIT:?} ({:?}); undecryptable: {:?}",
                    self.bare,
                    got.len(),
                    got.iter().map(|g| &g.body).collect::<Vec<_>>(),
                    self.seen.undecryptable
                ),
            }
        }
        got
    }

    /// Handles events for `quiet` and fails if a message arrives.
    pub async fn settle(&mut self, quiet: Duration) {
        while let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            self.absorb(event).await;
        }
    }

    pub async fn send(&self, to: &str, text: &str, id: &str) -> SendReport {
        let to = Jid::parse(to).expect("jid");
        match tokio::time::timeout(WAIT, self.client.send_text(&to, text, id)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => panic!("{}: sending {id} to {to} failed: {e}", self.bare),
            Err(_) => panic!("{}: sending {id} to {to} took longer than {WAIT:?}", self.bare),
        }
    }

    /// A graceful restart: close the connection and the store, open both again.
    pub async fn restart(self, world: &World) -> Self {
        let Self { client, events, store, user, resource, dir, policy, .. } = self;
        client.close().await;
        drop(events);
        drop(client);
        store.flush().expect("flush");
        drop(store);
        // The connection task lets go of its store handle once it has ended.
        for _ in 0..100 {
            if let Ok(s) = SledStore::open(&dir) {
                drop(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self::start(world, &user, &resource, &dir, policy).await
    }
}

/// `examples/omemo_chat.rs` as a child process (built by `cargo test`).
pub struct ChatProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub device_id: u32,
    pub log: PathBuf,
}

fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let bin = deps.parent().and_then(Path::parent).expect("target dir").join("examples/omemo_chat");
    assert!(bin.exists(), "{} is missing: run the whole suite with `cargo test` (it builds the examples)", bin.display());
    bin
}

impl ChatProcess {
    pub async fn start(world: &World, user: &str, dir: &Path, log_name: &str) -> Self {
        let log = world.state.path().join(log_name);
        let mut child = Command::new(example_binary())
            .args(["--jid", &format!("{user}@{}", world.var("XMPP_DOMAIN"))])
            .args(["--server", world.var("XMPP_SERVER"), "--ca-file", world.var("XMPP_CA_FILE")])
            .arg("--store")
            .arg(dir)
            .env("OMEMO_CHAT_PASSWORD", format!("pw-{user}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .kill_on_drop(true)
            .spawn()
            .expect("start omemo_chat");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut chat = Self { child, stdin, lines, device_id: 0, log };
        let ready = chat.wait("ready", |e| e["event"] == "ready").await;
        chat.device_id = u32::try_from(ready["device_id"].as_u64().expect("device_id")).expect("u32");
        chat.wait("published", |e| e["event"] == "published").await;
        chat
    }

    pub async fn wait(&mut self, what: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                    if event["event"] == "undecryptable" || event["event"] == "error" {
                        panic!("omemo_chat: {event}");
                    }
                    if pick(&event) {
                        return event;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => panic!("omemo_chat ended while waiting for {what}; see {}", self.log.display()),
                Err(_) => panic!("omemo_chat: no {what} within {WAIT:?}; see {}", self.log.display()),
            }
        }
    }

    pub async fn send(&mut self, to: &str, text: &str, id: &str) {
        let cmd = serde_json::json!({"cmd": "send", "to": to, "text": text, "id": id});
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.expect("stdin");
        self.wait("sent", |e| e["event"] == "sent" && e["id"] == id).await;
    }

    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL omemo_chat");
    }
}
