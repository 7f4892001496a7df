//! PEP (XEP-0163) against the project's real Prosody, as legacy OMEMO uses it: caps with
//! `+notify` in our presence get us event notifications (from our own account and from a contact
//! with a mutual subscription), items can be fetched, and the publish-options conflict is repaired
//! by reconfiguring the node.

mod common;

use std::time::Duration;

use common::World;
use xmpp_omemo::Jid;
use xmpp_omemo::stanza::omemo::DeviceListPayload;
use xmpp_omemo::stanza::pubsub::{self, Items};
use xmpp_omemo::stanza::roster::{RosterItem, RosterQuery};
use xmpp_omemo::stanza::{
    Condition, FromElement, IntoElement, Iq, IqPayload, MessageType, Presence, PresenceType,
    Stanza, StanzaError, data_form, ns,
};
use xmpp_omemo::stream::{Client, ClientConfig, Event};

const WAIT: Duration = Duration::from_secs(20);
const DEVICELIST_NOTIFY: &str = "eu.siacs.conversations.axolotl.devicelist+notify";

fn jid(world: &World, user: &str) -> Jid {
    Jid::parse(&format!("{user}@{}", world.var("XMPP_DOMAIN"))).expect("test JID")
}

fn config(world: &World, user: &str, resource: &str, features: &[&str]) -> ClientConfig {
    let mut config = common::ours::client_config(world, user, resource);
    config.features = features.iter().map(|f| f.to_string()).collect();
    config
}

async fn connect(
    world: &World,
    user: &str,
    resource: &str,
    features: &[&str],
) -> (Client, xmpp_omemo::stream::Events) {
    let (client, mut events) = Client::spawn(config(world, user, resource, features));
    wait_for(&client, &mut events, "the roster", |e| {
        matches!(e, Event::Roster(_)).then_some(())
    })
    .await;
    (client, events)
}

/// Waits for the first event `pick` accepts, acknowledging every stanza on the way.
async fn wait_for<T>(
    client: &Client,
    events: &mut xmpp_omemo::stream::Events,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"));
        if let Event::Stanza { tag, .. } = &event {
            client.ack(*tag);
        }
        let shown = format!("{event:?}");
        match pick(event) {
            Some(found) => return found,
            None => eprintln!("(skipped while waiting for {what}: {shown})"),
        }
    }
}

/// Picks the device-list notification from `from` that lists `device`.
fn devicelist_event(from: &Jid, device: u32) -> impl FnMut(Event) -> Option<MessageType> + '_ {
    move |e| {
        let Event::Stanza {
            stanza: Stanza::Message(m),
            ..
        } = e
        else {
            return None;
        };
        let event = pubsub::Event::from_message(&m)?.ok()?;
        let list = event
            .items
            .first()?
            .payload
            .clone()
            .map(DeviceListPayload::from_element)?
            .ok()?;
        (m.from.as_ref() == Some(from)
            && event.node == ns::OMEMO_LEGACY_DEVICELIST
            && list.devices.contains(&device))
        .then_some(m.kind)
    }
}

/// Publishes a device list with publish-options; the error, if the server refused.
async fn publish_devices(
    client: &Client,
    devices: Vec<u32>,
    options: &[(&str, &str)],
) -> Result<(), StanzaError> {
    let payload = pubsub::publish(
        ns::OMEMO_LEGACY_DEVICELIST,
        Some("current"),
        DeviceListPayload::new(devices).into_element(),
        options,
    );
    let answer = client
        .request(Iq::set("", None, payload))
        .await
        .expect("an answer to the publish");
    match answer.payload {
        IqPayload::Result(_) => Ok(()),
        IqPayload::Error { error, .. } => Err(error),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn own_access_model(client: &Client) -> Option<String> {
    let answer = client
        .iq(Iq::get(
            "",
            None,
            pubsub::configure_request(ns::OMEMO_LEGACY_DEVICELIST),
        ))
        .await
        .expect("the node configuration");
    let IqPayload::Result(Some(pubsub)) = answer.payload else {
        panic!("a configuration form")
    };
    let form = pubsub
        .get_child("configure", ns::PUBSUB_OWNER)?
        .get_child("x", ns::DATA_FORMS)?;
    data_form::value(form, "pubsub#access_model")
}

async fn fetch_devices(client: &Client, owner: &Jid) -> Result<DeviceListPayload, String> {
    let request = Iq::get(
        "",
        Some(owner.clone()),
        pubsub::items_request(ns::OMEMO_LEGACY_DEVICELIST, Some(1)),
    );
    let answer = client.iq(request).await.map_err(|e| e.to_string())?;
    let IqPayload::Result(Some(payload)) = answer.payload else {
        panic!("an items result")
    };
    let items = Items::from_element(payload).expect("valid items");
    assert_eq!(items.node, ns::OMEMO_LEGACY_DEVICELIST);
    let item = items.items.into_iter().next().expect("one item");
    assert_eq!(item.id.as_deref(), Some("current"));
    Ok(
        DeviceListPayload::from_element(item.payload.expect("a payload"))
            .expect("a valid device list"),
    )
}

#[tokio::test]
async fn pep_notifications_fetch_and_publish_options_repair_on_prosody() {
    let world = World::start("prosody", |_, _| Vec::new());
    let (alice_jid, bob_jid) = (jid(&world, "alice"), jid(&world, "bob"));
    let (alice, mut alice_events) = connect(&world, "alice", "phone", &[DEVICELIST_NOTIFY]).await;
    let (bob, mut bob_events) = connect(&world, "bob", "laptop", &[DEVICELIST_NOTIFY]).await;

    // Own account, no subscription needed: a second alice resource publishes, the first hears it.
    let (alice2, _alice2_events) = connect(&world, "alice", "second", &[]).await;
    publish_devices(&alice2, vec![1001], &[("pubsub#access_model", "open")])
        .await
        .expect("alice publishes her device list");
    let kind = wait_for(
        &alice,
        &mut alice_events,
        "alice's own device list",
        devicelist_event(&alice_jid, 1001),
    )
    .await;
    assert_eq!(kind, MessageType::Headline);
    assert_eq!(
        fetch_devices(&bob, &alice_jid).await,
        Ok(DeviceListPayload::new(vec![1001])),
        "open: a stranger may fetch"
    );

    // A contact: before any subscription, bob's publish does not reach alice (Prosody registers
    // +notify interest only from the presence of a contact subscribed to the PEP account).
    publish_devices(&bob, vec![2001], &[("pubsub#access_model", "open")])
        .await
        .expect("bob publishes");
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, alice_events.recv()).await {
        assert_eq!(
            devicelist_event(&bob_jid, 2001)(event),
            None,
            "a notification without a subscription"
        );
    }

    // Mutual presence subscription, as in tests/xmpp_client.rs, both ways.
    for (client, other) in [(&alice, &bob_jid), (&bob, &alice_jid)] {
        client
            .iq(Iq::set(
                "",
                None,
                RosterQuery {
                    ver: None,
                    items: vec![RosterItem::new(other.clone())],
                }
                .into_element(),
            ))
            .await
            .expect("roster set");
        client
            .send(Presence::to(other.clone(), PresenceType::Subscribe))
            .await
            .expect("subscribe");
    }
    for (client, events, other) in [
        (&alice, &mut alice_events, &bob_jid),
        (&bob, &mut bob_events, &alice_jid),
    ] {
        wait_for(client, events, "a subscription request", |e| match e {
            Event::Stanza {
                stanza: Stanza::Presence(p),
                ..
            } if p.kind == PresenceType::Subscribe => Some(()),
            _ => None,
        })
        .await;
        client
            .send(Presence::to(other.clone(), PresenceType::Subscribed))
            .await
            .expect("approve");
    }
    // Caps are in every available presence the client sends, so announcing again keeps +notify.
    alice
        .send(Presence::new(PresenceType::Available))
        .await
        .expect("presence");

    publish_devices(&bob, vec![2001, 2002], &[("pubsub#access_model", "open")])
        .await
        .expect("bob publishes again");
    // Prosody first resends the last item (2001) when the subscription starts, then 2002 comes.
    let kind = wait_for(
        &alice,
        &mut alice_events,
        "bob's device list",
        devicelist_event(&bob_jid, 2002),
    )
    .await;
    assert_eq!(kind, MessageType::Headline);
    assert_eq!(
        fetch_devices(&alice, &bob_jid).await,
        Ok(DeviceListPayload::new(vec![2001, 2002]))
    );

    // publish-options that contradict the node: precondition-not-met; configure, then it works.
    let err = publish_devices(&bob, vec![2003], &[("pubsub#access_model", "whitelist")])
        .await
        .expect_err("a precondition error");
    assert!(pubsub::is_precondition_not_met(&err), "{err:?}");
    assert_eq!(err.condition, Condition::Conflict);
    assert_eq!(own_access_model(&bob).await.as_deref(), Some("open"));
    let submit = pubsub::configure_submit(
        ns::OMEMO_LEGACY_DEVICELIST,
        &[("pubsub#access_model", "whitelist")],
    );
    bob.iq(Iq::set("", None, submit))
        .await
        .expect("node reconfigured");
    assert_eq!(own_access_model(&bob).await.as_deref(), Some("whitelist"));
    publish_devices(&bob, vec![2003], &[("pubsub#access_model", "whitelist")])
        .await
        .expect("the republish succeeds");
    let refused = fetch_devices(&alice, &bob_jid).await;
    assert_eq!(
        refused,
        Err("the server answered with an error: forbidden".to_owned()),
        "whitelist: alice may not fetch"
    );

    // The OMEMO direction: the node is not open, publishing with open fails, repair, republish.
    let err = publish_devices(&bob, vec![2004], &[("pubsub#access_model", "open")])
        .await
        .expect_err("a precondition error");
    assert!(pubsub::is_precondition_not_met(&err), "{err:?}");
    let submit = pubsub::configure_submit(
        ns::OMEMO_LEGACY_DEVICELIST,
        &[("pubsub#access_model", "open")],
    );
    bob.iq(Iq::set("", None, submit))
        .await
        .expect("node reconfigured");
    publish_devices(&bob, vec![2004], &[("pubsub#access_model", "open")])
        .await
        .expect("the republish succeeds");
    wait_for(
        &alice,
        &mut alice_events,
        "bob's repaired device list",
        devicelist_event(&bob_jid, 2004),
    )
    .await;
    assert_eq!(
        fetch_devices(&alice, &bob_jid).await,
        Ok(DeviceListPayload::new(vec![2004]))
    );

    for client in [alice, alice2, bob] {
        client.close().await;
    }
}
