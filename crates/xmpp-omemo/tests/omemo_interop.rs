//! Our legacy OMEMO against independent implementations on a real Prosody: python-omemo
//! (`omemo_peer.py serve`, slixmpp-omemo) and profanity (libsignal-protocol-c). Every path:
//! who starts the session, long runs with restarts on both sides, several devices per account,
//! carbons, an identity replaced, a known contact's new device, corrupted and replayed
//! messages, and a SIGKILL of our process.

mod common;

use std::time::Duration;

use common::World;
use common::omemo_peer::OmemoPeer;
use common::ours::{ChatProcess, Got, Ours, WAIT};
use common::profanity::{self, Profanity};
use serde_json::Value;
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::{SkipReason, Trust, TrustPolicy, fingerprint, parse_fingerprint};
use xmpp_omemo::stanza::carbons::Direction;

fn prosody_world() -> World {
    World::start("prosody", |_, _| Vec::new())
}

fn bodies(got: &[Got]) -> Vec<&str> {
    got.iter().map(|g| g.body.as_str()).collect()
}

fn peer_bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"].as_str().expect("body").to_owned())
        .collect()
}

/// `n` messages each way, interleaved: we send one, the peer sends one. Both sides must get
/// all of them, in order, exactly once.
async fn exchange(ours: &mut Ours, peer: &mut OmemoPeer, tag: &str, n: usize) {
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let text = format!("{tag} ours #{i} <&> ünïcödé 👋");
        ours.send(&peer.bare, &text, &format!("{tag}-o{i}")).await;
        mine.push(text);
        let text = format!("{tag} peer #{i} \"quoted\"");
        peer.send(&ours.bare, &text, Some(&format!("{tag}-p{i}")))
            .await;
        theirs.push(text);
    }
    let got = ours.recv(n).await;
    assert_eq!(bodies(&got), theirs, "we got the peer's messages in order");
    let ids: Vec<String> = (1..=n).map(|i| format!("{tag}-p{i}")).collect();
    assert_eq!(
        got.iter()
            .map(|g| g.id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(
        got.iter()
            .all(|g| g.device == peer.device_id && g.carbon.is_none())
    );
    let peer_got = peer.wait_received(n, WAIT).await;
    assert_eq!(peer_bodies(&peer_got), mine, "the peer got ours in order");
    assert!(peer_got.iter().all(|e| e["device_id"] == ours.device()));
    ours.settle(Duration::from_millis(300)).await;
    assert!(
        ours.undecryptable().is_empty(),
        "undecryptable: {:?}",
        ours.undecryptable()
    );
}

/// Who sends the first message; that side's first message must be a PreKeySignalMessage.
async fn conversation_with_restarts(we_start: bool) {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;

    if we_start {
        let report = ours.send(&bob.bare, "hello from the bridge", "first").await;
        assert_eq!(report.new_sessions.len(), 1, "{report:?}");
        let first = bob.wait_received(1, WAIT).await;
        assert_eq!(first[0]["body"], "hello from the bridge");
        assert_eq!(
            first[0]["prekey"], true,
            "our first message is a PreKeySignalMessage"
        );
        bob.send(&ours.bare, "hello bridge", Some("answer")).await;
        let got = ours.recv(1).await;
        assert_eq!(got[0].body, "hello bridge");
        assert!(!got[0].prekey, "bob answers on the session we started");
    } else {
        let sent = bob.send(&ours.bare, "hello bridge", Some("first")).await;
        assert_eq!(sent["prekey"], true);
        let got = ours.recv(1).await;
        assert_eq!(got[0].body, "hello bridge");
        assert!(
            got[0].prekey,
            "bob's first message is a PreKeySignalMessage"
        );
        ours.send(&bob.bare, "hello bob", "answer").await;
        let first = bob.wait_received(1, WAIT).await;
        assert_eq!(first[0]["body"], "hello bob");
        assert_eq!(
            first[0]["prekey"], false,
            "we answer on the session bob started"
        );
    }

    exchange(&mut ours, &mut bob, "before", 50).await;
    // Both sides restart: ours gracefully (store closed and reopened), bob killed and started
    // again on the same state file.
    ours = ours.restart(&world).await;
    bob.kill().await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    exchange(&mut ours, &mut bob, "after", 50).await;
    assert!(ours.identity_changes().is_empty());
    bob.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_omemo_we_start_then_100_each_way_with_both_sides_restarted() {
    conversation_with_restarts(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_omemo_they_start_then_100_each_way_with_both_sides_restarted() {
    conversation_with_restarts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_both_ways() {
    assert!(
        profanity::installed(),
        "profanity is not installed: scripts/test.sh installs it (WORLD_WITH_PROFANITY=1)"
    );
    let world = prosody_world();
    world.add_xmpp_user("carol");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let carol = Profanity::start(&world, "carol").await;
    let carol_bare = format!("carol@{}", world.var("XMPP_DOMAIN"));

    carol.send(&ours.bare, "hi from profanity").await;
    let got = ours.recv(1).await;
    assert_eq!(got[0].body, "hi from profanity");
    assert!(got[0].prekey);
    ours.send(&carol_bare, "hi profanity, from the bridge", "to-carol-1")
        .await;
    carol
        .wait_text(&ours.bare, "hi profanity, from the bridge", WAIT)
        .await;
    for i in 2..=4 {
        carol.send(&ours.bare, &format!("profanity says {i}")).await;
        assert_eq!(ours.recv(1).await[0].body, format!("profanity says {i}"));
        ours.send(
            &carol_bare,
            &format!("bridge says {i}"),
            &format!("to-carol-{i}"),
        )
        .await;
        carol
            .wait_text(&ours.bare, &format!("bridge says {i}"), WAIT)
            .await;
    }
    carol.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_receives_first_from_us() {
    assert!(
        profanity::installed(),
        "profanity is not installed: scripts/test.sh installs it (WORLD_WITH_PROFANITY=1)"
    );
    let world = prosody_world();
    world.add_xmpp_user("dave");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let dave = Profanity::start(&world, "dave").await;
    let dave_bare = format!("dave@{}", world.var("XMPP_DOMAIN"));
    let report = ours.send(&dave_bare, "bridge first", "d1").await;
    assert_eq!(report.new_sessions.len(), 1);
    dave.wait_text(&ours.bare, "bridge first", WAIT).await;
    dave.send(&ours.bare, "profanity answers").await;
    let got = ours.recv(1).await;
    assert_eq!(got[0].body, "profanity answers");
    dave.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_both_accounts_gets_each_message_and_carbons_are_not_inbound() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    // bob has two devices; alice (us) has a second device, another OMEMO client of ours.
    let mut bob1 = OmemoPeer::start(
        &world,
        "bob",
        &["--resource", "one", "--store-name", "bob-one"],
    )
    .await;
    let mut bob2 = OmemoPeer::start(
        &world,
        "bob",
        &["--resource", "two", "--store-name", "bob-two"],
    )
    .await;
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut phone = Ours::start(
        &world,
        "alice",
        "phone",
        dir2.path(),
        TrustPolicy::default(),
    )
    .await;
    let devices = bob1.devices(&bob1.bare.clone()).await;
    assert!(
        devices.contains(&bob1.device_id) && devices.contains(&bob2.device_id),
        "{devices:?}"
    );

    let report = ours.send(&bob1.bare, "to every device", "all-1").await;
    assert_eq!(
        report.devices, 3,
        "bob's two devices and our phone: {report:?}"
    );
    for bob in [&mut bob1, &mut bob2] {
        let got = bob.wait_received(1, WAIT).await;
        assert_eq!(got[0]["body"], "to every device");
    }
    let carbon = phone.recv(1).await;
    assert_eq!(carbon[0].body, "to every device");
    assert_eq!(
        carbon[0].carbon,
        Some(Direction::Sent),
        "our own send comes to the phone as a sent carbon"
    );
    assert_eq!(carbon[0].peer, bob1.bare, "the conversation is with bob");

    // bob's second device writes: both of our devices decrypt it as an inbound message.
    bob2.send(&ours.bare, "from bob's second device", Some("b2-1"))
        .await;
    for side in [&mut ours, &mut phone] {
        let got = side.recv(1).await;
        assert_eq!(got[0].body, "from bob's second device");
        assert_eq!(got[0].device, bob2.device_id);
        assert!(got[0].carbon != Some(Direction::Sent), "{got:?}");
    }
    // The phone writes to bob: the bridge sees a sent carbon, never an inbound message.
    phone.send(&bob1.bare, "from alice's phone", "ph-1").await;
    let seen = ours.recv(1).await;
    assert_eq!(seen[0].carbon, Some(Direction::Sent));
    assert_eq!(seen[0].peer, bob1.bare);
    assert_eq!(seen[0].device, phone.device());
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(
            bob.wait_received(1, WAIT).await[0]["body"],
            "from alice's phone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_identity_is_reported_and_the_conversation_continues() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    exchange(&mut ours, &mut bob, "old-keys", 3).await;
    let (device, old_key) = (bob.device_id, bob.ready["identity_fingerprint"].clone());
    bob.kill().await;

    // Same JID, same device id, fresh identity keys (a reinstall).
    let mut bob = OmemoPeer::start(&world, "bob", &["--reset-identity"]).await;
    assert_eq!(bob.device_id, device);
    assert_ne!(bob.ready["identity_fingerprint"], old_key);
    bob.send(&ours.bare, "new keys, same me", Some("nk-1"))
        .await;
    let got = ours.recv(1).await;
    assert_eq!(got[0].body, "new keys, same me");
    let changes = ours.identity_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let change = &changes[0];
    assert_eq!(change.device.device.get(), device);
    assert!(
        change.trusted,
        "the default policy trusts the new key and reports it"
    );
    let old = change.old_key.as_deref().map(fingerprint);
    assert_ne!(
        old,
        Some(fingerprint(&change.new_key)),
        "a changed key, not a new device"
    );
    assert!(old.is_some(), "a changed key, not a new device");
    exchange(&mut ours, &mut bob, "new-keys", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_a_committed_message_then_the_next_ones_decrypt() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut chat = ChatProcess::start(&world, "alice", dir.path(), "chat-1.log").await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let alice = format!("alice@{}", world.var("XMPP_DOMAIN"));
    for i in 1..=3 {
        bob.send(&alice, &format!("before {i}"), Some(&format!("k{i}")))
            .await;
        chat.wait("commit", |e| {
            e["event"] == "committed" && e["id"] == format!("k{i}")
        })
        .await;
    }
    // Killed the moment message 3 is durable and acknowledged.
    chat.kill().await;
    for i in 4..=6 {
        bob.send(&alice, &format!("while down {i}"), Some(&format!("k{i}")))
            .await;
    }
    let mut chat = ChatProcess::start(&world, "alice", dir.path(), "chat-2.log").await;
    for i in 4..=6 {
        let got = chat.wait("a message", |e| e["event"] == "received").await;
        assert_eq!(got["body"], format!("while down {i}"), "{got}");
    }
    for i in 7..=9 {
        bob.send(&alice, &format!("after {i}"), Some(&format!("k{i}")))
            .await;
        let got = chat.wait("a message", |e| e["event"] == "received").await;
        assert_eq!(got["body"], format!("after {i}"));
    }
    chat.send(&bob.bare, "and back", "back-1").await;
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], "and back");
    // Only a message committed before the kill may come again (its ack may not have reached
    // the server); it is recognised as already decrypted, never shown twice or lost.
    assert!(
        chat.duplicates
            .iter()
            .all(|id| ["k1", "k2", "k3"].contains(&id.as_str())),
        "{:?}",
        chat.duplicates
    );
}

/// A second connection of `user`'s account (resource `forger`) that sends what a real peer
/// would not, once it is connected; it acknowledges whatever it receives.
async fn forger(world: &World, user: &str) -> xmpp_omemo::stream::Client {
    use xmpp_omemo::stream::{Client, Event};
    let (client, mut events) = Client::spawn(common::ours::client_config(world, user, "forger"));
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let acker = client.clone();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        while let Some(event) = events.recv().await {
            match event {
                Event::Connected { .. } => drop(connected_tx.take().map(|tx| tx.send(()))),
                Event::Stanza { tag, .. } => acker.ack(tag),
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, connected)
        .await
        .expect("the forger connects")
        .expect("connected");
    client
}

/// Parses one stanza printed by the python peer (`--show-xml`) with our own reader.
async fn parse_stanza(xml: &str) -> xmpp_omemo::xml::Element {
    use xmpp_omemo::xml::{Limits, XmlReader};
    let text = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{xml}"
    );
    let mut reader = XmlReader::new(text.as_bytes(), Limits::default());
    reader.read_header().await.expect("stream header");
    reader.next_element().await.expect("the stanza")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_and_replayed_messages_are_reported_and_later_ones_decrypt() {
    use xmpp_omemo::stanza::message::Message;
    use xmpp_omemo::stanza::omemo::Encrypted;
    use xmpp_omemo::stanza::{FromElement, IntoElement, ns};

    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &["--show-xml"]).await;
    exchange(&mut ours, &mut bob, "warm-up", 2).await;
    let sent = bob
        .send(&ours.bare, "a message to tamper with", Some("orig"))
        .await;
    assert_eq!(ours.recv(1).await[0].body, "a message to tamper with");

    // A second connection of bob's account replays and corrupts that very stanza: the cases a
    // real peer does not produce on its own.
    let forger = forger(&world, "bob").await;
    let original = Message::from_element(parse_stanza(sent["xml"].as_str().expect("xml")).await)
        .expect("message");
    let restamp = |mut m: Message, id: &str| {
        m.from = None;
        m.id = Some(id.to_owned());
        m
    };
    forger
        .send(restamp(original.clone(), "replay-1"))
        .await
        .expect("send the replay");

    let mut corrupted = restamp(original.clone(), "corrupt-1");
    let at = corrupted
        .payloads
        .iter()
        .position(|p| p.is("encrypted", ns::OMEMO_LEGACY))
        .expect("encrypted");
    let mut encrypted =
        Encrypted::from_element(corrupted.payloads[at].clone()).expect("parse encrypted");
    let key = encrypted
        .keys
        .iter_mut()
        .find(|k| k.rid == ours.device())
        .expect("a key for us");
    // A SignalMessage: 0x33, then protobuf field 1 (the 33-byte ratchet key), then field 2, the
    // counter. Bump the counter to one not used yet, so the copy is not a mere replay: the
    // receiver derives that counter's key and the MAC check fails, as for any damaged message.
    assert!(
        !key.prekey,
        "after the warm-up bob sends plain SignalMessages"
    );
    assert_eq!(
        (key.data[0], key.data[1], key.data[2], key.data[36]),
        (0x33, 0x0a, 0x21, 0x10),
        "SignalMessage layout"
    );
    assert!(key.data[37] < 100, "a one-byte counter");
    key.data[37] += 5;
    corrupted.payloads[at] = encrypted.into_element();
    forger
        .send(corrupted)
        .await
        .expect("send the corrupted copy");

    // Both are reported, neither crashes anything; the corruption triggers a session repair
    // (a key-transport message to bob's device), and bob's next messages decrypt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.wait_event("the repair's key transport", WAIT, |e| {
        e["event"] == "empty"
    })
    .await;
    for i in 1..=3 {
        bob.send(
            &ours.bare,
            &format!("after the tampering {i}"),
            Some(&format!("after-{i}")),
        )
        .await;
        assert_eq!(
            ours.recv(1).await[0].body,
            format!("after the tampering {i}")
        );
    }
    let undecryptable = ours.undecryptable();
    let find = |id: &str| {
        undecryptable
            .iter()
            .find(|(i, _)| i.as_deref() == Some(id))
            .map(|(_, e)| e.clone())
    };
    assert!(
        find("replay-1").is_some_and(|e| e.contains("already decrypted")),
        "{undecryptable:?}"
    );
    assert!(
        find("corrupt-1").is_some_and(|e| e.contains("does not decrypt")),
        "{undecryptable:?}"
    );
    assert_eq!(undecryptable.len(), 2, "{undecryptable:?}");
    ours.send(&bob.bare, "we still talk", "still").await;
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], "we still talk");
}

/// Both sides send their very first message at the same moment, so each starts a session:
/// with python-omemo (one session per device) our later messages used to go into the session
/// it dropped. We keep our own session after such a race (ARCHITECTURE.md); then 20 each way
/// must all decrypt on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_omemo_simultaneous_first_messages_then_20_each_way() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let (ours_bare, bob_bare) = (ours.bare.clone(), bob.bare.clone());
    let (report, sent) = tokio::join!(
        ours.send(&bob_bare, "alice first", "race-o"),
        bob.send(&ours_bare, "bob first", Some("race-p"))
    );
    eprintln!(
        "race: we started a session: {}, bob started one: {}",
        !report.new_sessions.is_empty(),
        sent["prekey"]
    );
    assert_eq!(ours.recv(1).await[0].body, "bob first");
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], "alice first");
    exchange(&mut ours, &mut bob, "after the race", 20).await;
    bob.quit().await;
}

/// The same race with profanity (libsignal-protocol-c): both first messages at once, then
/// messages each way decrypt on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_simultaneous_first_messages_then_both_ways() {
    assert!(
        profanity::installed(),
        "profanity is not installed: scripts/test.sh installs it (WORLD_WITH_PROFANITY=1)"
    );
    let world = prosody_world();
    world.add_xmpp_user("carol");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let carol = Profanity::start(&world, "carol").await;
    let carol_bare = format!("carol@{}", world.var("XMPP_DOMAIN"));
    let ours_bare = ours.bare.clone();
    let (report, ()) = tokio::join!(
        ours.send(&carol_bare, "bridge first", "race-1"),
        carol.send(&ours_bare, "profanity first")
    );
    eprintln!(
        "race: we started a session: {}",
        !report.new_sessions.is_empty()
    );
    assert_eq!(ours.recv(1).await[0].body, "profanity first");
    carol.wait_text(&ours_bare, "bridge first", WAIT).await;
    for i in 2..=4 {
        ours.send(
            &carol_bare,
            &format!("bridge says {i}"),
            &format!("race-{i}"),
        )
        .await;
        carol
            .wait_text(&ours_bare, &format!("bridge says {i}"), WAIT)
            .await;
        carol.send(&ours_bare, &format!("profanity says {i}")).await;
        assert_eq!(ours.recv(1).await[0].body, format!("profanity says {i}"));
    }
    assert!(
        ours.undecryptable().is_empty(),
        "undecryptable: {:?}",
        ours.undecryptable()
    );
    carol.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_contacts_new_device_is_reported_and_strict_waits_for_the_users_trust() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(&world, "alice", "bridge", dir.path(), TrustPolicy::Strict).await;
    let one = ["--resource", "one", "--store-name", "bob-one"];
    let mut bob1 = OmemoPeer::start(&world, "bob", &one).await;
    let report = ours.send(&bob1.bare, "to the first", "nd-1").await;
    assert_eq!(report.devices, 1, "{report:?}");
    assert!(
        ours.identity_changes().is_empty(),
        "first contact is silent"
    );
    assert_eq!(
        peer_bodies(&bob1.wait_received(1, WAIT).await),
        ["to the first"]
    );

    // bob adds a device: the send reports it and leaves it out.
    let two = ["--resource", "two", "--store-name", "bob-two"];
    let mut bob2 = OmemoPeer::start(&world, "bob", &two).await;
    let bob = Jid::parse(&bob1.bare).expect("jid");
    let listed = ours.client.refresh_devices(&bob).await.expect("devices");
    assert!(
        listed.iter().any(|d| d.get() == bob2.device_id),
        "{listed:?}"
    );
    let report = ours.send(&bob1.bare, "not to the new one", "nd-2").await;
    assert_eq!(report.devices, 1, "{report:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|(d, why)| d.device.get() == bob2.device_id && *why == SkipReason::Untrusted),
        "{report:?}"
    );
    let changes = ours.identity_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].device.device.get(), bob2.device_id);
    assert_eq!(
        (changes[0].old_key.as_ref(), changes[0].trusted),
        (None, false)
    );
    // As the contact's client shows it (ungrouped here).
    let theirs = bob2.ready["identity_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert_eq!(
        parse_fingerprint(&fingerprint(&changes[0].new_key)),
        parse_fingerprint(&theirs)
    );
    assert_eq!(
        peer_bodies(&bob1.wait_received(1, WAIT).await),
        ["not to the new one"]
    );
    let left_out = bob2
        .wait_event("the message without its key", WAIT, |e| e["id"] == "nd-2")
        .await;
    assert_eq!(left_out["event"], "error", "{left_out}");

    // Its messages are read.
    bob2.send(&ours.bare, "from the new one", Some("nd-b2"))
        .await;
    let got = ours.recv(1).await;
    assert_eq!(
        (got[0].body.as_str(), got[0].device),
        ("from the new one", bob2.device_id)
    );

    // The user trusts it by its fingerprint: the next send includes it.
    let devices = ours.client.devices_of(&bob).expect("devices");
    let new = devices
        .iter()
        .find(|d| d.device.get() == bob2.device_id)
        .expect("listed");
    assert_eq!((new.trust, new.listed), (Some(Trust::Untrusted), true));
    assert_eq!(new.fingerprint, Some(fingerprint(&changes[0].new_key)));
    let device = ours
        .client
        .set_trust_by_fingerprint(&bob, &theirs.to_uppercase(), Trust::Verified)
        .await
        .expect("trust");
    assert_eq!(device.get(), bob2.device_id);
    let report = ours.send(&bob1.bare, "to both", "nd-3").await;
    assert_eq!(report.devices, 2, "{report:?}");
    for peer in [&mut bob1, &mut bob2] {
        assert_eq!(peer_bodies(&peer.wait_received(1, WAIT).await), ["to both"]);
    }
    assert_eq!(ours.identity_changes().len(), 1, "reported once");
}

/// A message shaped like a device-list notification, from anyone, is stored only for an
/// account we already deal with: a stranger cannot grow our store (one write and flush each)
/// by sending them; a contact we wrote to still updates its list this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lists_pushed_by_strangers_are_not_stored() {
    use xmpp_omemo::omemo::OmemoStore as _;
    use xmpp_omemo::stanza::FromElement;
    use xmpp_omemo::stanza::message::Message;

    let world = prosody_world();
    world.add_xmpp_user("mallory");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ours = Ours::start(
        &world,
        "alice",
        "bridge",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    exchange(&mut ours, &mut bob, "warm-up", 1).await;
    assert!(ours.store.device_list(&bob.bare).expect("store").is_some());

    // `from`'s second connection sends a forged notification listing `device`, then a plain
    // message; once that message is seen, the notification was handled before it.
    let push = |user: &'static str, device: u32, marker: &'static str| {
        let world = &world;
        let to = ours.bare.clone();
        async move {
            let client = forger(world, user).await;
            let xml = format!(
                "<message to='{to}' type='headline'><event \
                 xmlns='http://jabber.org/protocol/pubsub#event'><items \
                 node='eu.siacs.conversations.axolotl.devicelist'><item id='current'><list \
                 xmlns='eu.siacs.conversations.axolotl'><device id='{device}'/></list></item>\
                 </items></event></message>"
            );
            let forged = Message::from_element(parse_stanza(&xml).await).expect("message");
            client.send(forged).await.expect("send the notification");
            let to = Jid::parse(&to).expect("jid");
            client
                .send(Message::chat(to, marker))
                .await
                .expect("send the marker");
            client
        }
    };
    let seen_marker = |marker: &'static str| {
        let ours = &ours;
        async move {
            ours.wait_seen(marker, |s| {
                s.plain.iter().any(|p| p.body == marker).then_some(())
            })
            .await
        }
    };

    let _mallory = push("mallory", 4242, "after mallory's list").await;
    seen_marker("after mallory's list").await;
    let mallory = format!("mallory@{}", world.var("XMPP_DOMAIN"));
    assert_eq!(ours.store.device_list(&mallory).expect("store"), None);

    // The control: the same notification from a contact we wrote to is stored.
    let _bob = push("bob", 4343, "after bob's list").await;
    seen_marker("after bob's list").await;
    let list = ours
        .store
        .device_list(&bob.bare)
        .expect("store")
        .expect("bob's list");
    assert_eq!(
        list.devices.iter().map(|d| d.get()).collect::<Vec<_>>(),
        [4343]
    );
}
