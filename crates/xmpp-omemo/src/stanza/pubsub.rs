//! XEP-0060: Publish-Subscribe <https://xmpp.org/extensions/xep-0060.html>, as XEP-0163 Personal
//! Eventing Protocol <https://xmpp.org/extensions/xep-0163.html> uses it: publish an item (with
//! publish-options), fetch a node's items, receive `+notify` event notifications, and reconfigure
//! a node whose configuration does not match the publish-options.
//!
//! The builders return the `<pubsub/>` payload; the caller puts it into an iq (`set` for
//! [`publish`] and [`configure_submit`], `get` for [`items_request`] and [`configure_request`]),
//! addressed to nobody for our own PEP service or to a contact's bare JID.

use super::error::StanzaError;
use super::message::Message;
use super::{FromElement, ParseError, data_form, ns, required_attr};
use crate::xml::Element;

/// `<pubsub><publish node><item [id]>payload</item></publish>[<publish-options>…]</pubsub>`.
/// `options` are `pubsub#…` node configuration fields (`("pubsub#access_model", "open")`) the
/// node must have; the server creates a missing node with them and refuses to publish to an
/// existing node that differs (see [`is_precondition_not_met`]). No options, no form.
pub fn publish(
    node: &str,
    item_id: Option<&str>,
    payload: Element,
    options: &[(&str, &str)],
) -> Element {
    let item = Element::new("item", ns::PUBSUB)
        .attr_opt("id", item_id)
        .child(payload);
    let mut pubsub = Element::new("pubsub", ns::PUBSUB).child(
        Element::new("publish", ns::PUBSUB)
            .attr("node", node)
            .child(item),
    );
    if !options.is_empty() {
        pubsub.push_child(
            Element::new("publish-options", ns::PUBSUB)
                .child(data_form::submit(ns::PUBSUB_PUBLISH_OPTIONS, options)),
        );
    }
    pubsub
}

/// `<pubsub><items node [max_items]/></pubsub>`: the node's items (the newest `max_items`).
pub fn items_request(node: &str, max_items: Option<u32>) -> Element {
    let items = Element::new("items", ns::PUBSUB)
        .attr("node", node)
        .attr_opt("max_items", max_items.map(|n| n.to_string()));
    Element::new("pubsub", ns::PUBSUB).child(items)
}

/// `<pubsub><items node><item id/>…</items></pubsub>`: the items with these ids (XEP-0060
/// §6.5.8), as OMEMO 2 fetches one device's bundle.
pub fn items_by_id(node: &str, ids: &[&str]) -> Element {
    let mut items = Element::new("items", ns::PUBSUB).attr("node", node);
    for id in ids {
        items.push_child(Element::new("item", ns::PUBSUB).attr("id", *id));
    }
    Element::new("pubsub", ns::PUBSUB).child(items)
}

/// `<pubsub xmlns='…#owner'><configure node/></pubsub>`: asks for the node configuration form.
pub fn configure_request(node: &str) -> Element {
    Element::new("pubsub", ns::PUBSUB_OWNER)
        .child(Element::new("configure", ns::PUBSUB_OWNER).attr("node", node))
}

/// `<pubsub xmlns='…#owner'><configure node><x type='submit'>…</x></configure></pubsub>`: sets
/// the given `pubsub#…` fields of the node configuration (the others keep their values).
pub fn configure_submit(node: &str, fields: &[(&str, &str)]) -> Element {
    let form = data_form::submit(ns::PUBSUB_NODE_CONFIG, fields);
    Element::new("pubsub", ns::PUBSUB_OWNER).child(
        Element::new("configure", ns::PUBSUB_OWNER)
            .attr("node", node)
            .child(form),
    )
}

/// XEP-0060 §7.1.3.6: the publish-options did not match the existing node's configuration
/// (`<conflict/>` with `<precondition-not-met xmlns='…pubsub#errors'/>`). The repair is
/// [`configure_submit`] with the same fields, then publishing again.
pub fn is_precondition_not_met(err: &StanzaError) -> bool {
    err.extra
        .iter()
        .any(|e| e.is("precondition-not-met", ns::PUBSUB_ERRORS))
}

/// One `<item/>` of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: Option<String>,
    /// The item's first child element (the payload: a device list, a bundle …); `None` in a
    /// notification without payload.
    pub payload: Option<Element>,
}

impl Item {
    fn parse(el: &Element) -> Self {
        Self {
            id: el.get_attr("id").map(str::to_owned),
            payload: el.children().next().cloned(),
        }
    }
}

fn node_attr(el: &Element) -> Result<String, ParseError> {
    Ok(required_attr(el, "items", "node")?.to_owned())
}

/// The answer to [`items_request`]: `<pubsub><items node>…</items></pubsub>` from an iq result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items {
    pub node: String,
    /// In document order (Prosody: oldest first).
    pub items: Vec<Item>,
}

impl FromElement for Items {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("pubsub", ns::PUBSUB) {
            return Err(ParseError::NotMine(el));
        }
        let items = el
            .get_child("items", ns::PUBSUB)
            .ok_or(super::Malformed::new("pubsub", "items", "is missing"))?;
        Ok(Self {
            node: node_attr(items)?,
            items: items
                .children()
                .filter(|c| c.is("item", ns::PUBSUB))
                .map(Item::parse)
                .collect(),
        })
    }
}

/// An items notification: `<event xmlns='…#event'><items node>` with published `<item/>`s
/// and retracted ids. It arrives in a message (`type='headline'` from Prosody) whose `from` is
/// the bare JID of the PEP account; trusting it is the caller's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub node: String,
    pub items: Vec<Item>,
    /// The `id`s of `<retract/>` children.
    pub retracted: Vec<String>,
}

impl Event {
    /// The items notification in `msg`: `None` without an `<event/>` payload; an `<event/>` of
    /// another kind (node deleted, purged, configured) is `NotMine`.
    pub fn from_message(msg: &Message) -> Option<Result<Event, ParseError>> {
        msg.payload("event", ns::PUBSUB_EVENT)
            .map(|e| Event::from_element(e.clone()))
    }
}

impl FromElement for Event {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("event", ns::PUBSUB_EVENT) {
            return Err(ParseError::NotMine(el));
        }
        let Some(items) = el.get_child("items", ns::PUBSUB_EVENT) else {
            return Err(ParseError::NotMine(el));
        };
        let node = node_attr(items)?;
        let mut event = Event {
            node,
            items: Vec::new(),
            retracted: Vec::new(),
        };
        for child in items.children() {
            if child.is("item", ns::PUBSUB_EVENT) {
                event.items.push(Item::parse(child));
            } else if child.is("retract", ns::PUBSUB_EVENT) {
                event
                    .retracted
                    .push(required_attr(child, "retract", "id")?.to_owned());
            }
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jid::Jid;
    use crate::stanza::omemo::DeviceListPayload;
    use crate::stanza::{
        IntoElement, Iq, IqPayload, Malformed, MessageType, malformed, parse_xml, reparse,
    };

    #[test]
    fn publish_with_options_matches_the_xep() {
        // XEP-0060 §7.1.5, with the OMEMO device list as the payload.
        let list = DeviceListPayload::new(vec![12345, 31415]).into_element();
        let el = publish(
            ns::OMEMO_LEGACY_DEVICELIST,
            Some("current"),
            list,
            &[("pubsub#access_model", "open")],
        );
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'>\
               <publish node='eu.siacs.conversations.axolotl.devicelist'><item id='current'>\
                 <list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/><device id='31415'/></list>\
               </item></publish>\
               <publish-options><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='pubsub#access_model'><value>open</value></field>\
               </x></publish-options>\
             </pubsub>"
        );
        let plain = publish("urn:example", None, Element::new("x", "urn:example"), &[]);
        assert_eq!(
            plain.to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example'><item><x xmlns='urn:example'/></item></publish></pubsub>"
        );
    }

    #[test]
    fn requests() {
        assert_eq!(
            items_request("eu.siacs.conversations.axolotl.bundles:31415", Some(1))
                .to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='eu.siacs.conversations.axolotl.bundles:31415' max_items='1'/></pubsub>"
        );
        assert_eq!(
            items_by_id("urn:xmpp:omemo:2:bundles", &["31415"]).to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:omemo:2:bundles'><item id='31415'/></items></pubsub>"
        );
        assert_eq!(
            items_request("n", None).to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></pubsub>"
        );
        assert_eq!(
            configure_request("n").to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n'/></pubsub>"
        );
        assert_eq!(
            configure_submit("n", &[("pubsub#access_model", "open")]).to_xml(ns::CLIENT),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n'><x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
               <field var='pubsub#access_model'><value>open</value></field>\
             </x></configure></pubsub>"
        );
    }

    #[test]
    fn parses_items_result() {
        // XEP-0060 §6.5.2, as an iq result the way Prosody answers it.
        let iq = Iq::from_element(parse_xml(
            "<iq type='result' from='juliet@capulet.lit' id='fetch1'>\
               <pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <items node='eu.siacs.conversations.axolotl.devicelist'>\
                   <item id='current' publisher='juliet@capulet.lit'><list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list></item>\
                   <item/>\
                   <other/>\
                 </items>\
               </pubsub>\
             </iq>",
        ))
        .expect("valid iq");
        let IqPayload::Result(Some(payload)) = iq.payload else {
            panic!("a result with a payload")
        };
        let items = Items::from_element(payload).expect("valid");
        assert_eq!(
            items,
            Items {
                node: ns::OMEMO_LEGACY_DEVICELIST.into(),
                items: vec![
                    Item {
                        id: Some("current".into()),
                        payload: Some(DeviceListPayload::new(vec![1]).into_element())
                    },
                    Item {
                        id: None,
                        payload: None
                    },
                ],
            }
        );
    }

    #[test]
    fn parses_event_notification_from_a_message() {
        // XEP-0163 §4.3 / XEP-0060 §7.1.2.1, plus a retraction (§7.2.2.1).
        let msg = Message::from_element(parse_xml(
            "<message from='juliet@capulet.lit' to='romeo@montague.lit/home' type='headline' id='n1'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='eu.siacs.conversations.axolotl.devicelist'>\
                   <item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='31415'/></list></item>\
                   <retract id='old'/>\
                 </items>\
               </event>\
             </message>",
        ))
        .expect("valid message");
        assert_eq!(msg.kind, MessageType::Headline);
        assert_eq!(msg.from, Jid::parse("juliet@capulet.lit").ok());
        let event = Event::from_message(&msg).expect("an event").expect("valid");
        assert_eq!(
            event,
            Event {
                node: ns::OMEMO_LEGACY_DEVICELIST.into(),
                items: vec![Item {
                    id: Some("current".into()),
                    payload: Some(DeviceListPayload::new(vec![31415]).into_element())
                }],
                retracted: vec!["old".into()],
            }
        );
        assert_eq!(Event::from_message(&Message::default()), None);
    }

    #[test]
    fn other_events_and_elements_are_not_mine() {
        for xml in [
            "<event xmlns='http://jabber.org/protocol/pubsub#event'><delete node='n'/></event>",
            "<event xmlns='urn:example'><items node='n'/></event>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(
                Event::from_element(el.clone()),
                Err(ParseError::NotMine(el))
            );
        }
        let el = parse_xml("<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'/>");
        assert_eq!(
            Items::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_items_and_events() {
        let cases = [
            (Items::from_element(parse_xml("<pubsub xmlns='http://jabber.org/protocol/pubsub'/>")).map(|_| ()), Malformed::new("pubsub", "items", "is missing")),
            (Items::from_element(parse_xml("<pubsub xmlns='http://jabber.org/protocol/pubsub'><items/></pubsub>")).map(|_| ()), Malformed::new("items", "node", "is missing")),
            (
                Event::from_element(parse_xml("<event xmlns='http://jabber.org/protocol/pubsub#event'><items/></event>")).map(|_| ()),
                Malformed::new("items", "node", "is missing"),
            ),
            (
                Event::from_element(parse_xml("<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><retract/></items></event>")).map(|_| ()),
                Malformed::new("retract", "id", "is missing"),
            ),
        ];
        for (result, want) in cases {
            assert_eq!(malformed(result), want);
        }
    }

    #[test]
    fn precondition_not_met_as_prosody_sends_it() {
        // Prosody 0.12 mod_pubsub: `cancel`/`conflict` plus the pubsub#errors condition.
        let iq = Iq::from_element(parse_xml(
            "<iq type='error' id='p1'>\
               <error type='cancel'>\
                 <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Field does not match: access_model</text>\
                 <precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>\
               </error>\
             </iq>",
        ))
        .expect("valid iq");
        let IqPayload::Error { error, .. } = iq.payload else {
            panic!("an error")
        };
        assert!(is_precondition_not_met(&error));
        assert!(is_precondition_not_met(
            &StanzaError::from_element(reparse(&error.clone().into_element())).expect("valid")
        ));
        let plain = StanzaError::from_condition(crate::stanza::Condition::Conflict);
        assert!(!is_precondition_not_met(&plain));
    }
}
