//! Account management against the project's real Prosody: XEP-0077 in-band registration,
//! XEP-0191 blocking, roster edits and presence subscriptions, XEP-0172 nicknames. The contact
//! is the python-omemo peer (`omemo_peer.py serve`, slixmpp); we are the `OmemoClient`.

mod common;

use std::time::Duration;

use common::World;
use common::omemo_peer::OmemoPeer;
use common::ours::{Ours, Seen, WAIT, client_config};
use xmpp_omemo::Jid;
use xmpp_omemo::omemo::TrustPolicy;
use xmpp_omemo::stanza::blocking::BlockingCommand;
use xmpp_omemo::stanza::nick::Nick;
use xmpp_omemo::stanza::roster::{RosterItem, Subscription};
use xmpp_omemo::stanza::{IntoElement, Message, PresenceType};
use xmpp_omemo::stream::{Client, Error, Event, RegisterError, register};

/// The nicks of `from`'s subscription presences of `kind`, in order.
fn nicks_of(seen: &Seen, from: &str, kind: PresenceType) -> Vec<Option<String>> {
    seen.subscriptions
        .iter()
        .filter(|(f, k, _)| f == from && *k == kind)
        .map(|(_, _, n)| n.clone())
        .collect()
}

/// The latest roster push of `jid` with this name and subscription state.
fn roster_item(
    seen: &Seen,
    jid: &Jid,
    name: Option<&str>,
    subscription: Subscription,
    ask: bool,
) -> Option<RosterItem> {
    let mut pushes = seen.roster_pushes.iter().rev();
    pushes
        .find(|i| {
            i.jid == *jid
                && i.name.as_deref() == name
                && i.subscription == subscription
                && i.ask_subscribe == ask
        })
        .cloned()
}

fn prosody_world() -> World {
    World::start("prosody", |_, _| Vec::new())
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).expect("valid JID")
}

async fn start_alice(world: &World, dir: &tempfile::TempDir) -> Ours {
    Ours::start(world, "alice", "bridge", dir.path(), TrustPolicy::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_account_logs_in_and_a_second_registration_conflicts() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = start_alice(&world, &dir).await;
    let config = client_config(&world, "carol", "phone");

    register(&config).await.expect("carol registers in-band");

    // The new account logs in with the password it registered, and its first message to
    // alice carries its nickname.
    let (carol, mut events) = Client::spawn(config.clone());
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Event::Connected { jid, .. }) => return jid,
                Some(Event::Disconnected { reason, .. }) => {
                    panic!("carol could not log in: {reason}")
                }
                Some(_) => {}
                None => panic!("carol's client ended"),
            }
        }
    })
    .await
    .expect("carol logs in");
    assert_eq!(connected.bare(), config.jid);
    let mut hello = Message::chat(jid(&alice.bare), "hello from a new account");
    hello.id = Some("carol-1".into());
    hello
        .payloads
        .push(Nick::new("Carol").expect("valid nick").into_element());
    carol.send(hello).await.expect("carol sends");
    let got = alice
        .wait_seen("carol's message", |s| {
            s.plain
                .iter()
                .find(|p| p.id.as_deref() == Some("carol-1"))
                .cloned()
        })
        .await;
    assert_eq!(got.body, "hello from a new account");
    assert_eq!(got.nick.as_deref(), Some("Carol"));
    assert!(jid(&got.from).same_bare(&config.jid), "from {}", got.from);

    // Registering again, or an account prosodyctl made, conflicts; the error never shows
    // the password.
    let again = register(&config).await;
    assert_eq!(again, Err(RegisterError::Conflict));
    let bob = client_config(&world, "bob", "phone");
    let existing = register(&bob).await.expect_err("bob exists");
    assert_eq!(existing, RegisterError::Conflict);
    for err in [existing.to_string(), format!("{existing:?}")] {
        assert!(
            !err.contains(&bob.password) && !err.contains(&config.password),
            "{err}"
        );
    }

    // The password was really set: a wrong one is refused for good.
    let mut wrong = config.clone();
    wrong.password = "not-carols-password".into();
    let (_client, mut events) = Client::spawn(wrong);
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Event::Disconnected {
                    reason,
                    retry_in: None,
                }) => return reason,
                Some(Event::Connected { .. }) => panic!("logged in with a wrong password"),
                Some(_) => {}
                None => panic!("the client ended without an event"),
            }
        }
    })
    .await
    .expect("the login is refused");
    assert!(matches!(refused, Error::AuthFailed { .. }), "{refused}");

    // A JID without a localpart has nothing to register.
    let domain = client_config(&world, "alice", "x");
    let domain = xmpp_omemo::stream::ClientConfig {
        jid: domain.jid.to_domain(),
        ..domain
    };
    assert_eq!(register(&domain).await, Err(RegisterError::NoLocalpart));
    carol.close().await;
    alice.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_bounces_a_contacts_messages_until_unblocked() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = start_alice(&world, &dir).await;
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_jid = jid(&bob.bare);
    let xmpp = alice.client.xmpp().clone();

    assert!(
        xmpp.supports_blocking()
            .await
            .expect("disco#info of the server"),
        "Prosody has mod_blocklist"
    );
    assert_eq!(
        xmpp.blocklist().await.expect("blocklist"),
        Vec::<Jid>::new()
    );
    bob.send(&alice.bare, "before the block", Some("m1")).await;
    assert_eq!(alice.recv(1).await[0].body, "before the block");

    xmpp.block(&bob_jid).await.expect("block bob");
    alice
        .wait_seen("the block push", |s| {
            s.blocklist_pushes
                .contains(&BlockingCommand::Block(vec![bob_jid.clone()]))
                .then_some(())
        })
        .await;
    assert_eq!(
        xmpp.blocklist().await.expect("blocklist"),
        vec![bob_jid.clone()]
    );
    bob.send(&alice.bare, "while blocked", Some("m2")).await;
    assert_eq!(
        bob.wait_message_error("m2", WAIT).await,
        "service-unavailable"
    );
    alice.settle(Duration::from_secs(1)).await;

    xmpp.unblock(&bob_jid).await.expect("unblock bob");
    alice
        .wait_seen("the unblock push", |s| {
            s.blocklist_pushes
                .contains(&BlockingCommand::Unblock(vec![bob_jid.clone()]))
                .then_some(())
        })
        .await;
    assert_eq!(
        xmpp.blocklist().await.expect("blocklist"),
        Vec::<Jid>::new()
    );
    bob.send(&alice.bare, "after the unblock", Some("m3")).await;
    let got = alice.recv(1).await;
    assert_eq!(
        (got[0].body.as_str(), got[0].id.as_deref()),
        ("after the unblock", Some("m3"))
    );
    assert!(
        alice.undecryptable().is_empty(),
        "{:?}",
        alice.undecryptable()
    );
    bob.quit().await;
    alice.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_with_nicknames_roster_names_and_both_ways() {
    let world = prosody_world();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = start_alice(&world, &dir).await;
    let mut bob = OmemoPeer::start(
        &world,
        "bob",
        &["--nick", "Bobby", "--manual-subscriptions"],
    )
    .await;
    let bob_jid = jid(&bob.bare);
    let xmpp = alice.client.xmpp().clone();
    let bob_bare = bob.bare.clone();
    let requests = |s: &Seen| nicks_of(s, &bob_bare, PresenceType::Subscribe);
    let pushed = |want: Subscription, ask: bool| {
        let bob_jid = bob_jid.clone();
        move |s: &Seen| roster_item(s, &bob_jid, Some("Bob (work)"), want, ask)
    };

    // bob asks with his nickname; alice approves and names him in her roster.
    bob.subscribe(&alice.bare, Some("Bob the Builder")).await;
    let nicks = alice
        .wait_seen("bob's request", |s| {
            Some(requests(s)).filter(|r| !r.is_empty())
        })
        .await;
    assert_eq!(nicks, [Some("Bob the Builder".to_owned())]);
    xmpp.approve_subscription(&bob_jid).await.expect("approve");
    bob.wait_subscription(&alice.bare, "subscribed").await;
    let named = RosterItem {
        name: Some("Bob (work)".into()),
        groups: vec!["Friends".into()],
        ..RosterItem::new(bob_jid.clone())
    };
    xmpp.roster_set(named).await.expect("roster set");
    let item = alice
        .wait_seen(
            "bob named, subscription from",
            pushed(Subscription::From, false),
        )
        .await;
    assert_eq!(item.groups, ["Friends"]);

    // bob's messages carry his nickname (outside the encryption). Sent before the subscription
    // is mutual: from then on python-omemo waits for PEP notifications instead of fetching.
    bob.send(&alice.bare, "hi alice", Some("n1")).await;
    let got = alice.recv(1).await;
    assert_eq!(
        (got[0].body.as_str(), got[0].nick.as_deref()),
        ("hi alice", Some("Bobby"))
    );

    // alice asks back; bob (who answers nothing by himself) approves by hand.
    xmpp.subscribe(&bob_jid).await.expect("subscribe");
    bob.wait_subscription(&alice.bare, "subscribe").await;
    alice
        .wait_seen("alice's request pending", pushed(Subscription::From, true))
        .await;
    bob.approve(&alice.bare).await;
    let approved = |s: &Seen| nicks_of(s, &bob_bare, PresenceType::Subscribed);
    alice
        .wait_seen("bob's approval", |s| {
            Some(()).filter(|_| !approved(s).is_empty())
        })
        .await;
    // The name stays through the subscription changes.
    let item = alice
        .wait_seen("a mutual subscription", pushed(Subscription::Both, false))
        .await;
    assert_eq!(item.groups, ["Friends"]);

    // Removing bob cancels both subscriptions.
    xmpp.roster_remove(&bob_jid).await.expect("roster remove");
    let removed = |s: &Seen| roster_item(s, &bob_jid, None, Subscription::Remove, false);
    alice.wait_seen("bob removed", removed).await;
    bob.wait_subscription(&alice.bare, "unsubscribed").await;

    // bob asks again, without a nickname this time; alice denies.
    bob.subscribe(&alice.bare, None).await;
    let nicks = alice
        .wait_seen("bob's second request", |s| {
            Some(requests(s)).filter(|r| r.len() == 2)
        })
        .await;
    assert_eq!(nicks[1], None);
    xmpp.deny_subscription(&bob_jid).await.expect("deny");
    bob.wait_subscription(&alice.bare, "unsubscribed").await;
    assert!(
        alice.undecryptable().is_empty(),
        "{:?}",
        alice.undecryptable()
    );
    bob.quit().await;
    alice.client.close().await;
}
