//! A small OMEMO chat client on this library, driven by JSON lines: the
//! process the OMEMO crash test kills, and a quick manual check of an XMPP account.
//!
//! ```text
//! OMEMO_CHAT_PASSWORD=pw-alice cargo run --example omemo_chat -- \
//!     --jid alice@xmpp.test --server 127.0.0.1:5222 --ca-file STATE/prosody/ca/ca.crt --store /tmp/alice.json
//! {"cmd":"send","to":"bob@xmpp.test","text":"hi","id":"m1"}
//! {"cmd":"quit"}
//! ```
//!
//! Events on stdout, one JSON object per line: `ready`, `published`, `connected`,
//! `disconnected`, `received` (then `committed` once the state is durable and the stanza
//! acknowledged), `undecryptable`, `identity_changed`, `devices`, `sent`, `error`. The state
//! lives in a `MemoryStore` snapshotted to the `--store` file, so a restart (or a SIGKILL) continues the same OMEMO device.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::{
    MemoryStore, OmemoClient, OmemoConfig, OmemoEvent, OmemoStore as _, TrustPolicy, fingerprint,
};
use xmpp_omemo::stream::{ClientConfig, tls_client_config};

struct Args {
    jid: Jid,
    server: Option<(String, u16)>,
    ca_file: Option<PathBuf>,
    store: PathBuf,
    strict: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut jid, mut server, mut ca_file, mut store, mut strict) = (None, None, None, None, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--jid" => jid = Some(Jid::parse(&value()?)?),
            "--server" => {
                let v = value()?;
                let (host, port) = v.rsplit_once(':').context("--server is host:port")?;
                server = Some((host.to_owned(), port.parse().context("--server port")?));
            }
            "--ca-file" => ca_file = Some(PathBuf::from(value()?)),
            "--store" => store = Some(PathBuf::from(value()?)),
            "--strict" => strict = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        jid: jid.context("--jid is required")?,
        server,
        ca_file,
        store: store.context("--store is required")?,
        strict,
    })
}

fn out(value: Value) {
    println!("{value}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = parse_args()?;
    let password = std::env::var("OMEMO_CHAT_PASSWORD").context("set OMEMO_CHAT_PASSWORD")?;
    let store = Arc::new(MemoryStore::open(&args.store)?);
    let tls = tls_client_config(args.ca_file.as_deref())?;
    let mut config = ClientConfig::new(args.jid.clone(), password, tls);
    config.server = args.server;
    config.backoff.initial = std::time::Duration::from_millis(300);
    let policy = if args.strict {
        TrustPolicy::Strict
    } else {
        TrustPolicy::default()
    };
    let (client, mut events) = OmemoClient::start(
        config,
        store.clone(),
        OmemoConfig {
            policy,
            ..OmemoConfig::default()
        },
    )
    .await?;
    out(
        json!({"event": "ready", "device_id": client.device_id().get(), "fingerprint": client.fingerprint()}),
    );

    // Commands run in their own task, one after another, so that a send waiting for the
    // server never stops the events (and the commits they need) from being handled.
    let (quit_tx, mut quit) = tokio::sync::oneshot::channel::<()>();
    let sender = client.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(cmd) = serde_json::from_str::<Value>(&line) else {
                out(json!({"event": "error", "error": "not a JSON line"}));
                continue;
            };
            match cmd["cmd"].as_str() {
                Some("send") => send(&sender, &cmd).await,
                Some("quit") => break,
                _ => out(json!({"event": "error", "error": "unknown command"})),
            }
        }
        let _ = quit_tx.send(());
    });
    loop {
        tokio::select! {
            _ = &mut quit => break,
            event = events.recv() => match event {
                Some(event) => handle(event).await,
                None => break,
            },
        }
    }
    client.close().await;
    store.flush()?;
    Ok(())
}

async fn send(client: &OmemoClient, cmd: &Value) {
    let field = |k: &str| cmd[k].as_str().unwrap_or_default().to_owned();
    let (to, text, id) = (
        field("to"),
        field("text"),
        cmd["id"].as_str().unwrap_or("m").to_owned(),
    );
    let result = match Jid::parse(&to) {
        Ok(to) => client
            .send_text(&to, &text, &id)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(r) => out(json!({"event": "sent", "id": r.id, "devices": r.devices,
            "new_sessions": r.new_sessions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "skipped": r.skipped.iter().map(|(d, why)| format!("{d}: {why}")).collect::<Vec<_>>()})),
        Err(e) => out(json!({"event": "error", "id": id, "error": e})),
    }
}

async fn handle(event: OmemoEvent) {
    match event {
        OmemoEvent::Connected { jid, resumed } => {
            out(json!({"event": "connected", "jid": jid.as_str(), "resumed": resumed}))
        }
        OmemoEvent::Disconnected { reason, retry_in } => out(
            json!({"event": "disconnected", "reason": reason.to_string(), "retry": retry_in.is_some()}),
        ),
        OmemoEvent::Published { device } => {
            out(json!({"event": "published", "device_id": device.get()}))
        }
        OmemoEvent::PublishFailed { reason } => {
            out(json!({"event": "publish_failed", "reason": reason}))
        }
        OmemoEvent::Message(m) => {
            out(
                json!({"event": "received", "from": m.from.as_str(), "peer": m.peer.as_str(), "id": m.id, "body": m.body,
                "device": m.sender.to_string(), "prekey": m.prekey, "carbon": m.carbon.map(|c| format!("{c:?}"))}),
            );
            let id = m.id.clone();
            match m.delivery.commit().await {
                Ok(()) => out(json!({"event": "committed", "id": id})),
                Err(e) => out(json!({"event": "error", "id": id, "error": e.to_string()})),
            }
        }
        OmemoEvent::Undecryptable(u) => {
            out(
                json!({"event": "undecryptable", "from": u.from.as_str(), "id": u.id, "device": u.sender.map(|d| d.to_string()),
                "error": u.error.to_string()}),
            );
            if let Err(e) = u.delivery.commit().await {
                out(json!({"event": "error", "error": e.to_string()}));
            }
        }
        OmemoEvent::Plain(p) => {
            out(json!({"event": "plain", "from": p.from.as_str(), "id": p.id}));
            let _ = p.delivery.commit().await;
        }
        OmemoEvent::Meta(m) => {
            out(json!({"event": "meta", "from": m.from.as_str(), "id": m.id}));
            let _ = m.delivery.commit().await;
        }
        OmemoEvent::IdentityChanged(c) => out(
            json!({"event": "identity_changed", "device": c.device.to_string(),
            "old": c.old_key.as_deref().map(fingerprint), "new": fingerprint(&c.new_key),
            "new_device": c.old_key.is_none(), "trusted": c.trusted}),
        ),
        OmemoEvent::DeviceList { jid, devices } => out(
            json!({"event": "devices", "jid": jid, "devices": devices.iter().map(|d| d.get()).collect::<Vec<_>>()}),
        ),
        OmemoEvent::Subscription { from, kind, .. } => out(
            json!({"event": "subscription", "from": from.as_str(), "kind": format!("{kind:?}")}),
        ),
        // Not asked for (`defer_decryption` is off); handled like the events it opens into.
        OmemoEvent::Encrypted(sealed) => {
            let (changes, event) = sealed.open().await;
            for change in changes {
                Box::pin(handle(OmemoEvent::IdentityChanged(change))).await;
            }
            if let Some(event) = event {
                Box::pin(handle(event)).await;
            }
        }
        OmemoEvent::Presence(p) => out(json!({"event": "presence", "from": p.from.as_str(),
            "available": p.available, "show": p.show.map(|s| s.as_str())})),
        OmemoEvent::Roster(_) | OmemoEvent::Blocklist(_) | OmemoEvent::CaughtUp(_) => {}
    }
}
