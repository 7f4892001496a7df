//! The XMPP client layer against the project's real Prosody: SCRAM over STARTTLS, roster,
//! presence, messages both ways, and a server restart in the middle of a conversation.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::World;
use common::xmpp_peer::Peer;
use serde_json::json;
use xmpp_omemo::Jid;
use xmpp_omemo::stanza::roster::{RosterItem, RosterQuery, Subscription};
use xmpp_omemo::stanza::{IntoElement, Iq, Message, Presence, PresenceType, Stanza};
use xmpp_omemo::stream::{Client, ClientConfig, Event, InboundTag, tls_client_config};

const WAIT: Duration = Duration::from_secs(20);

fn prosody_world() -> World {
    World::start("prosody", |_, _| Vec::new())
}

fn jid(world: &World, user: &str) -> Jid {
    Jid::parse(&format!("{user}@{}", world.var("XMPP_DOMAIN"))).expect("test JID")
}

fn config(world: &World, user: &str) -> ClientConfig {
    let tls = tls_client_config(Some(Path::new(world.var("XMPP_CA_FILE")))).expect("CA file");
    let mut config = ClientConfig::new(jid(world, user), format!("pw-{user}"), tls);
    let (host, port) = world.var("XMPP_SERVER").split_once(':').expect("host:port");
    config.server = Some((host.to_owned(), port.parse().expect("port")));
    config
}

/// Waits up to `WAIT` for the first event `pick` accepts, skipping the others.
async fn wait_for<T>(
    events: &mut xmpp_omemo::stream::Events,
    what: &str,
    pick: impl FnMut(Event) -> Option<T>,
) -> T {
    common::wait_for(events, what, WAIT, pick).await
}

fn chat(to: &Jid, id: &str, body: &str) -> Message {
    let mut message = Message::chat(to.clone(), body);
    message.id = Some(id.to_owned());
    message
}

#[tokio::test]
async fn scram_over_starttls_roster_presence_and_messages_between_two_clients() {
    let world = prosody_world();
    let (alice, mut alice_events) = Client::spawn(config(&world, "alice"));
    let (bob, mut bob_events) = Client::spawn(config(&world, "bob"));
    for events in [&mut alice_events, &mut bob_events] {
        let (mechanism, sm) = wait_for(events, "connected", |e| match e {
            Event::Connected {
                mechanism,
                stream_management,
                resumed: false,
                ..
            } => Some((mechanism, stream_management)),
            _ => None,
        })
        .await;
        assert!(
            mechanism.starts_with("SCRAM-SHA-"),
            "authenticated with {mechanism}"
        );
        assert!(sm, "Prosody offers XEP-0198");
        wait_for(events, "the roster", |e| {
            matches!(e, Event::Roster(_)).then_some(())
        })
        .await;
    }

    // Roster: alice adds bob and asks for his presence; bob approves and asks back.
    let bob_jid = jid(&world, "bob");
    let alice_jid = jid(&world, "alice");
    let mut item = RosterItem::new(bob_jid.clone());
    item.name = Some("Bob".into());
    alice
        .iq(Iq::set(
            "",
            None,
            RosterQuery {
                ver: None,
                items: vec![item],
            }
            .into_element(),
        ))
        .await
        .expect("roster set");
    let pushed = wait_for(&mut alice_events, "a roster push", |e| match e {
        Event::RosterPush(item) => Some(item),
        _ => None,
    })
    .await;
    assert_eq!(
        (&pushed.jid, pushed.name.as_deref()),
        (&bob_jid, Some("Bob"))
    );
    alice
        .send(Presence::to(bob_jid.clone(), PresenceType::Subscribe))
        .await
        .expect("subscribe");
    let tag = wait_for(&mut bob_events, "the subscription request", |e| match e {
        Event::Stanza {
            tag,
            stanza: Stanza::Presence(p),
        } if p.kind == PresenceType::Subscribe => Some(tag),
        _ => None,
    })
    .await;
    bob.ack(tag);
    bob.send(Presence::to(alice_jid.clone(), PresenceType::Subscribed))
        .await
        .expect("subscribed");
    wait_for(&mut alice_events, "bob's available presence", |e| match e {
        Event::Stanza {
            stanza: Stanza::Presence(p),
            ..
        } if p.kind == PresenceType::Available
            && p.from.as_ref().is_some_and(|f| f.same_bare(&bob_jid)) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    // Messages both ways, each acknowledged by the server before `send` returns.
    for i in 0..20 {
        alice
            .send(chat(&bob_jid, &format!("a{i}"), &format!("hello & <{i}>")))
            .await
            .expect("alice sends");
        bob.send(chat(&alice_jid, &format!("b{i}"), &format!("reply {i}")))
            .await
            .expect("bob sends");
    }
    for (events, client, prefix) in [
        (&mut bob_events, &bob, "hello & <"),
        (&mut alice_events, &alice, "reply "),
    ] {
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let (tag, body) = wait_for(events, "a message", |e| match e {
                Event::Stanza {
                    tag,
                    stanza: Stanza::Message(m),
                } => m.body.map(|b| (tag, b)),
                _ => None,
            })
            .await;
            assert!(body.starts_with(prefix), "body as sent");
            client.ack(tag);
            seen.push(body);
        }
        let expected: Vec<String> = (0..20)
            .map(|i| {
                if prefix == "reply " {
                    format!("reply {i}")
                } else {
                    format!("hello & <{i}>")
                }
            })
            .collect();
        assert_eq!(seen, expected, "in order, none lost, none duplicated");
    }
    alice.close().await;
    bob.close().await;
}

/// Bodies that exercise escaping and whitespace on both stacks.
fn tricky_body(i: u32) -> String {
    format!("  #{i} <b>&amp;</b> & \"q\" 'a' ünï 🎉\nline2  ")
}

#[tokio::test]
async fn messages_roster_and_presence_with_a_slixmpp_peer() {
    let world = prosody_world();
    let mut bob = Peer::start(&world, "bob", &["--auto-approve", "--subscribe-back"]).await;
    let bob_jid = jid(&world, "bob");
    let (alice, mut events) = Client::spawn(config(&world, "alice"));
    wait_for(&mut events, "the roster", |e| {
        matches!(e, Event::Roster(_)).then_some(())
    })
    .await;

    // alice adds bob and subscribes; bob approves and subscribes back; alice approves.
    alice
        .iq(Iq::set(
            "",
            None,
            RosterQuery {
                ver: None,
                items: vec![RosterItem::new(bob_jid.clone())],
            }
            .into_element(),
        ))
        .await
        .expect("roster set");
    alice
        .send(Presence::to(bob_jid.clone(), PresenceType::Subscribe))
        .await
        .expect("subscribe");
    let tag = wait_for(&mut events, "bob's subscription request", |e| match e {
        Event::Stanza {
            tag,
            stanza: Stanza::Presence(p),
        } if p.kind == PresenceType::Subscribe => Some(tag),
        _ => None,
    })
    .await;
    alice.ack(tag);
    alice
        .send(Presence::to(bob_jid.clone(), PresenceType::Subscribed))
        .await
        .expect("approve");
    let (mut presence_seen, mut mutual_seen) = (false, false);
    while !(presence_seen && mutual_seen) {
        match wait_for(
            &mut events,
            "bob's presence and a roster push with a mutual subscription",
            Some,
        )
        .await
        {
            Event::Stanza {
                stanza: Stanza::Presence(p),
                ..
            } if p.kind == PresenceType::Available
                && p.from.as_ref().is_some_and(|f| f.same_bare(&bob_jid)) =>
            {
                presence_seen = true
            }
            Event::RosterPush(item)
                if item.jid == bob_jid && item.subscription == Subscription::Both =>
            {
                mutual_seen = true
            }
            _ => {}
        }
    }
    bob.wait_event("alice's presence", WAIT, |e| {
        e["event"] == "presence"
            && e["from"].as_str().is_some_and(|f| f.starts_with("alice@"))
            && e["type"] == "available"
    })
    .await;

    // Ten messages each way.
    for i in 0..10 {
        alice
            .send(chat(&bob_jid, &format!("a{i}"), &tricky_body(i)))
            .await
            .expect("send");
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let e = bob
            .wait_event("alice's messages", WAIT, |e| e["event"] == "message")
            .await;
        got.push((
            e["id"].as_str().unwrap_or_default().to_owned(),
            e["body"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let expected: Vec<_> = (0..10).map(|i| (format!("a{i}"), tricky_body(i))).collect();
    assert_eq!(got, expected, "bob got alice's messages exactly, in order");

    for i in 0..10 {
        bob.command(json!({"cmd": "send", "to": "alice@xmpp.test", "body": tricky_body(i), "id": format!("b{i}")})).await;
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let (tag, id, body) = wait_for(&mut events, "bob's messages", |e| match e {
            Event::Stanza {
                tag,
                stanza: Stanza::Message(m),
            } if m.body.is_some() => {
                Some((tag, m.id.unwrap_or_default(), m.body.unwrap_or_default()))
            }
            _ => None,
        })
        .await;
        alice.ack(tag);
        got.push((id, body));
    }
    let expected: Vec<_> = (0..10).map(|i| (format!("b{i}"), tricky_body(i))).collect();
    assert_eq!(got, expected, "alice got bob's messages exactly, in order");
    alice.close().await;
    bob.quit().await;
}

/// What each side has received, by message number.
#[derive(Default)]
struct Tally {
    alice_got: BTreeMap<u32, u32>,
    bob_got: BTreeMap<u32, u32>,
    connects: u32,
    drops: u32,
    /// Tags alice received but deliberately did not acknowledge (her effect "not yet durable").
    withheld: Vec<InboundTag>,
}

impl Tally {
    /// Drains what has arrived on both sides. Messages numbered in `withhold` are not acked.
    async fn pump(
        &mut self,
        alice: &Client,
        events: &mut xmpp_omemo::stream::Events,
        bob: &mut Peer,
        withhold: &std::ops::RangeInclusive<u32>,
    ) {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(20), events.recv()).await
        {
            match event {
                Event::Stanza {
                    tag,
                    stanza: Stanza::Message(m),
                } => {
                    let n: Option<u32> = m
                        .body
                        .as_deref()
                        .and_then(|b| b.strip_prefix("from bob "))
                        .and_then(|n| n.parse().ok());
                    if let Some(n) = n {
                        let count = self.alice_got.entry(n).or_default();
                        *count += 1;
                        if withhold.contains(&n) && *count == 1 {
                            self.withheld.push(tag);
                            continue;
                        }
                    }
                    alice.ack(tag);
                }
                Event::Stanza { tag, .. } => alice.ack(tag),
                Event::Connected { .. } => self.connects += 1,
                Event::Disconnected { retry_in, .. } => {
                    assert!(retry_in.is_some(), "the client must keep retrying");
                    self.drops += 1;
                }
                _ => {}
            }
        }
        while let Some(e) = bob.next_event(Duration::from_millis(20)).await {
            if e["event"] == "message"
                && let Some(n) = e["body"]
                    .as_str()
                    .and_then(|b| b.strip_prefix("from alice "))
                    .and_then(|n| n.parse().ok())
            {
                *self.bob_got.entry(n).or_default() += 1;
            }
        }
    }
}

fn prosody_pid(world: &World) -> String {
    std::fs::read_to_string(world.state.path().join("pids/prosody.pid"))
        .expect("prosody pid")
        .trim()
        .to_owned()
}

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid)
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn restart_prosody(world: &World) -> tokio::task::JoinHandle<std::process::ExitStatus> {
    let state = world.state.path().to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(common::repo().join("scripts/world/restart_prosody.sh"))
            .arg(&state)
            .arg("1")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("restart_prosody.sh")
    })
}

/// Prosody goes away twice while both sides send, numbered messages every 50 ms:
/// 1. a graceful restart while alice holds back the acks of messages 8..=12 (as the bridge does
///    until their effect is durable): the server must deliver those again;
/// 2. a crash: Prosody frozen (SIGSTOP) while alice writes 5 messages it never reads, then
///    SIGKILL and a start: alice must write them again after reconnecting.
/// Afterwards every message has arrived on both sides.
#[tokio::test]
async fn prosody_restart_and_crash_mid_conversation_lose_nothing() {
    const N: u32 = 60;
    const RESTART_AT: u32 = 14;
    const FREEZE_AT: u32 = 35;
    const FROZEN_SENDS: u32 = 5;
    let withhold = 8..=12;
    let world = prosody_world();
    let mut bob = Peer::start(&world, "bob", &[]).await;
    let bob_jid = jid(&world, "bob");
    let mut cfg = config(&world, "alice");
    cfg.backoff.initial = Duration::from_millis(300);
    cfg.backoff.max = Duration::from_secs(2);
    let (alice, mut events) = Client::spawn(cfg);
    wait_for(&mut events, "the roster", |e| {
        matches!(e, Event::Roster(_)).then_some(())
    })
    .await;

    let mut t = Tally::default();
    let mut acks = Vec::new();
    let mut restarts = Vec::new();
    let mut frozen = None;
    for i in 0..N {
        acks.push(
            alice
                .submit(chat(&bob_jid, &format!("a{i}"), &format!("from alice {i}")))
                .await
                .expect("queued"),
        );
        bob.command(json!({"cmd": "send", "to": "alice@xmpp.test", "body": format!("from bob {i}"), "id": format!("b{i}")})).await;
        if i == RESTART_AT {
            restarts.push(restart_prosody(&world));
        }
        if i == FREEZE_AT {
            // The first outage must be over (server up, alice back) before the second begins.
            for restart in restarts.drain(..) {
                assert!(
                    restart.await.expect("join").success(),
                    "Prosody started again"
                );
            }
            let back = tokio::time::Instant::now() + WAIT;
            while t.connects < 1 && tokio::time::Instant::now() < back {
                t.pump(&alice, &mut events, &mut bob, &withhold).await;
            }
            assert_eq!(t.connects, 1, "alice reconnected after the restart");
            let pid = prosody_pid(&world);
            signal(&pid, "STOP");
            frozen = Some(pid);
        }
        if i == FREEZE_AT + FROZEN_SENDS
            && let Some(pid) = frozen.take()
        {
            signal(&pid, "KILL");
            restarts.push(restart_prosody(&world));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.pump(&alice, &mut events, &mut bob, &withhold).await;
    }
    for restart in restarts {
        assert!(
            restart.await.expect("join").success(),
            "Prosody started again"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let withheld_redelivered = |t: &Tally| {
        withhold
            .clone()
            .all(|n| t.alice_got.get(&n).is_some_and(|c| *c >= 2))
    };
    while (t.alice_got.len() < N as usize
        || t.bob_got.len() < N as usize
        || !withheld_redelivered(&t))
        && tokio::time::Instant::now() < deadline
    {
        t.pump(&alice, &mut events, &mut bob, &withhold).await;
    }
    for ack in acks {
        tokio::time::timeout(WAIT, ack)
            .await
            .expect("server ack in time")
            .expect("not dropped")
            .expect("acknowledged by the server");
    }
    let missing =
        |got: &BTreeMap<u32, u32>| (0..N).filter(|i| !got.contains_key(i)).collect::<Vec<_>>();
    let dups = |got: &BTreeMap<u32, u32>| got.values().filter(|c| **c > 1).count();
    eprintln!(
        "restart test: alice got {}/{N} ({} duplicated, {} withheld acks), bob got {}/{N} ({} duplicated), alice dropped {}x, reconnected {}x",
        t.alice_got.len(),
        dups(&t.alice_got),
        t.withheld.len(),
        t.bob_got.len(),
        dups(&t.bob_got),
        t.drops,
        t.connects
    );
    assert!(
        t.connects >= 2,
        "the client came back by itself after each outage"
    );
    assert_eq!(
        missing(&t.alice_got),
        Vec::<u32>::new(),
        "bob -> alice: none lost"
    );
    assert_eq!(
        missing(&t.bob_got),
        Vec::<u32>::new(),
        "alice -> bob: none lost"
    );
    assert!(
        !t.withheld.is_empty(),
        "alice held back acks before the restart"
    );
    assert!(
        withheld_redelivered(&t),
        "messages alice had not acknowledged came again: {:?}",
        withhold
            .clone()
            .map(|n| t.alice_got.get(&n))
            .collect::<Vec<_>>()
    );
    alice.close().await;
    bob.quit().await;
}

/// A TCP proxy in front of Prosody whose connections the test can cut, as a dropped mobile or
/// NAT connection would be: the server does not see a clean close and keeps the session.
struct Cutter {
    port: u16,
    cut: tokio::sync::watch::Sender<u32>,
}

impl Cutter {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(0u32);
        let cut_rx = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut outbound = tokio::net::TcpStream::connect(&upstream)
                    .await
                    .expect("upstream");
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Both ends are dropped here without a stream close: a plain TCP loss.
                });
            }
        });
        Self { port, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_and_nothing_is_lost() {
    let world = prosody_world();
    let mut bob = Peer::start(&world, "bob", &[]).await;
    let bob_jid = jid(&world, "bob");
    let cutter = Cutter::start(world.var("XMPP_SERVER").to_owned()).await;
    let mut cfg = config(&world, "alice");
    cfg.server = Some(("127.0.0.1".into(), cutter.port));
    cfg.backoff.initial = Duration::from_millis(500);
    let (alice, mut events) = Client::spawn(cfg);
    wait_for(&mut events, "the roster", |e| {
        matches!(e, Event::Roster(_)).then_some(())
    })
    .await;

    let mut got: BTreeMap<u32, u32> = BTreeMap::new();
    // Every stanza is acknowledged (presences too): `h` only moves over a contiguous run.
    let receive = async |events: &mut xmpp_omemo::stream::Events,
                         got: &mut BTreeMap<u32, u32>,
                         want: usize| {
        while got.len() < want {
            let (tag, stanza) = wait_for(events, "bob's messages", |e| match e {
                Event::Stanza { tag, stanza } => Some((tag, stanza)),
                _ => None,
            })
            .await;
            if let Stanza::Message(m) = stanza
                && let Some(n) = m
                    .body
                    .and_then(|b| b.strip_prefix("bob ").and_then(|n| n.parse::<u32>().ok()))
            {
                *got.entry(n).or_default() += 1;
            }
            alice.ack(tag);
        }
    };
    for i in 0..5 {
        bob.command(json!({"cmd": "send", "to": "alice@xmpp.test", "body": format!("bob {i}"), "id": format!("b{i}")})).await;
    }
    receive(&mut events, &mut got, 5).await;
    // Give the acks time to reach the server, so a resumption must not deliver them again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cutter.cut();
    let reason = wait_for(&mut events, "the drop", |e| match e {
        Event::Disconnected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    eprintln!("dropped: {reason}");
    // While alice is away: bob writes to her, and she queues messages to him.
    for i in 5..10 {
        bob.command(json!({"cmd": "send", "to": "alice@xmpp.test", "body": format!("bob {i}"), "id": format!("b{i}")})).await;
    }
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(
            alice
                .submit(chat(&bob_jid, &format!("q{i}"), &format!("queued {i}")))
                .await
                .expect("queued"),
        );
    }
    let resumed = wait_for(&mut events, "the reconnect", |e| match e {
        Event::Connected { resumed, .. } => Some(resumed),
        _ => None,
    })
    .await;
    assert!(resumed, "Prosody kept the session, so XEP-0198 resumed it");
    receive(&mut events, &mut got, 10).await;
    for p in pending {
        tokio::time::timeout(WAIT, p)
            .await
            .expect("ack in time")
            .expect("not dropped")
            .expect("acknowledged");
    }
    let mut bob_got = Vec::new();
    while bob_got.len() < 3 {
        let e = bob
            .wait_event("alice's queued messages", WAIT, |e| e["event"] == "message")
            .await;
        bob_got.push(e["body"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(bob_got, ["queued 0", "queued 1", "queued 2"]);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>(),
        "every message of bob's arrived"
    );
    assert!(
        got.values().all(|c| *c == 1),
        "after a resume nothing is delivered twice: {got:?}"
    );
    alice.close().await;
    bob.quit().await;
}

/// A server certificate no trusted CA vouches for (here: the test world's own CA is not
/// given) is reported as a refused certificate, not as a network failure, naming the key to
/// pin, and not retried: retrying cannot change the certificate. Pinning that hash (and no CA
/// file) then logs in to the real Prosody.
#[tokio::test]
async fn a_certificate_no_ca_vouches_for_is_reported_as_refused() {
    let world = prosody_world();
    let mut config = config(&world, "alice");
    config.tls_config = tls_client_config(None).expect("public roots");
    let (client, mut events) = Client::spawn(config);
    let (reason, retry_in) = wait_for(&mut events, "the refused certificate", |e| match e {
        Event::Disconnected { reason, retry_in } => Some((reason, retry_in)),
        _ => None,
    })
    .await;
    let xmpp_omemo::stream::Error::Certificate { presented, .. } = &reason else {
        panic!("not a certificate error: {reason:?}");
    };
    let presented = presented.expect("the presented key");
    assert!(
        reason.to_string().contains(&presented.to_string()),
        "{reason}"
    );
    assert_eq!(retry_in, None, "not retried: {reason}");
    client.close().await;

    // The admin's way out: the hash from the error, pinned, and no CA file at all.
    let mut pins = xmpp_omemo::stream::TlsPins::default();
    pins.add(world.var("XMPP_DOMAIN"), presented);
    let mut config = self::config(&world, "alice");
    config.tls_config =
        xmpp_omemo::stream::tls_client_config_pinned(None, pins).expect("pinned config");
    let (client, mut events) = Client::spawn(config);
    wait_for(&mut events, "the pinned login", |e| match e {
        Event::Connected { .. } => Some(()),
        Event::Disconnected { reason, .. } => panic!("pinned, still refused: {reason}"),
        _ => None,
    })
    .await;
    client.close().await;
}
