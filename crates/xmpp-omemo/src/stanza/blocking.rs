//! XEP-0191: Blocking Command <https://xmpp.org/extensions/xep-0191.html>
//!
//! The blocklist lives on our server: `<blocklist/>` reads it, `<block/>` and `<unblock/>` change
//! it, and the server pushes each change (the same `<block/>`/`<unblock/>` payloads) to every
//! resource of the account that has read the list.

use super::error::StanzaError;
use super::{FromElement, IntoElement, Malformed, ParseError, ns, required_jid_attr};
use crate::jid::Jid;
use crate::xml::Element;

/// `<blocklist/>`: empty in the get, the blocked JIDs in the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    pub items: Vec<Jid>,
}

impl Blocklist {
    /// The payload of the get.
    pub fn request() -> Self {
        Self::default()
    }
}

/// A change of the blocklist: what a client sets, and what the server pushes afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockingCommand {
    /// Block these JIDs (at least one).
    Block(Vec<Jid>),
    /// Unblock these JIDs; none means everyone (XEP-0191 §3.5).
    Unblock(Vec<Jid>),
}

impl BlockingCommand {
    pub fn jids(&self) -> &[Jid] {
        match self {
            BlockingCommand::Block(jids) | BlockingCommand::Unblock(jids) => jids,
        }
    }
}

/// True when `error` says the stanza went to a contact we blocked (`<not-acceptable/>` with
/// `<blocked xmlns='urn:xmpp:blocking:errors'/>`).
pub fn is_blocked_error(error: &StanzaError) -> bool {
    error
        .extra
        .iter()
        .any(|e| e.is("blocked", ns::BLOCKING_ERRORS))
}

/// The `jid` of each `<item/>`; other children (such as XEP-0377 reports) are ignored.
fn items(el: &Element) -> Result<Vec<Jid>, Malformed> {
    el.children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|item| required_jid_attr(item, "item", "jid"))
        .collect()
}

fn with_items(name: &str, jids: Vec<Jid>) -> Element {
    let mut el = Element::new(name, ns::BLOCKING);
    for jid in jids {
        el.push_child(Element::new("item", ns::BLOCKING).attr("jid", jid.as_str()));
    }
    el
}

impl FromElement for Blocklist {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("blocklist", ns::BLOCKING) {
            return Err(ParseError::NotMine(el));
        }
        Ok(Self { items: items(&el)? })
    }
}

impl IntoElement for Blocklist {
    fn into_element(self) -> Element {
        with_items("blocklist", self.items)
    }
}

impl FromElement for BlockingCommand {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if el.ns() != ns::BLOCKING {
            return Err(ParseError::NotMine(el));
        }
        match el.name() {
            "block" => {
                let jids = items(&el)?;
                if jids.is_empty() {
                    return Err(Malformed::new("block", "item", "is missing").into());
                }
                Ok(BlockingCommand::Block(jids))
            }
            "unblock" => Ok(BlockingCommand::Unblock(items(&el)?)),
            _ => Err(ParseError::NotMine(el)),
        }
    }
}

impl IntoElement for BlockingCommand {
    fn into_element(self) -> Element {
        match self {
            BlockingCommand::Block(jids) => with_items("block", jids),
            BlockingCommand::Unblock(jids) => with_items("unblock", jids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::error::{Condition, ErrorType};
    use crate::stanza::{Iq, IqPayload, Message, malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn command(xml: &str) -> Result<BlockingCommand, ParseError> {
        BlockingCommand::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_xep_0191_blocklist_result() {
        // XEP-0191 §3.2, with an XEP-0377 report on one item.
        let iq = Iq::from_element(parse_xml(
            "<iq type='result' id='blocklist1'>\
               <blocklist xmlns='urn:xmpp:blocking'>\
                 <item jid='romeo@montague.net'/>\
                 <item jid='iago@shakespeare.lit'>\
                   <report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'/>\
                 </item>\
               </blocklist>\
             </iq>",
        ))
        .expect("valid");
        let IqPayload::Result(Some(payload)) = iq.payload else {
            panic!("a result with a payload")
        };
        let list = Blocklist::from_element(payload).expect("valid");
        assert_eq!(
            list.items,
            vec![jid("romeo@montague.net"), jid("iago@shakespeare.lit")]
        );
        let empty = parse_xml("<blocklist xmlns='urn:xmpp:blocking'/>");
        assert_eq!(Blocklist::from_element(empty), Ok(Blocklist::request()));
    }

    #[test]
    fn parses_xep_0191_pushes() {
        // XEP-0191 §3.3, §3.4 and §3.5: block, unblock and unblock-all pushes.
        let push = Iq::from_element(parse_xml(
            "<iq to='juliet@capulet.com/chamber' type='set' id='push1'>\
               <block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>\
             </iq>",
        ))
        .expect("valid");
        let IqPayload::Set(payload) = push.payload else {
            panic!("a set")
        };
        assert_eq!(
            BlockingCommand::from_element(payload),
            Ok(BlockingCommand::Block(vec![jid("romeo@montague.net")]))
        );
        let unblock =
            "<unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock>";
        assert_eq!(
            command(unblock),
            Ok(BlockingCommand::Unblock(vec![jid("romeo@montague.net")]))
        );
        let all = command("<unblock xmlns='urn:xmpp:blocking'/>").expect("valid");
        assert_eq!(all, BlockingCommand::Unblock(Vec::new()));
        assert!(all.jids().is_empty());
    }

    #[test]
    fn domains_and_full_jids_are_items_too() {
        let block = command(
            "<block xmlns='urn:xmpp:blocking'>\
               <item jid='spam.example'/><item jid='romeo@montague.net/orchard'/>\
             </block>",
        )
        .expect("valid");
        assert_eq!(
            block.jids(),
            [jid("spam.example"), jid("romeo@montague.net/orchard")]
        );
    }

    #[test]
    fn round_trip() {
        let jids = vec![jid("romeo@montague.net"), jid("example.org")];
        for cmd in [
            BlockingCommand::Block(jids.clone()),
            BlockingCommand::Unblock(jids.clone()),
            BlockingCommand::Unblock(Vec::new()),
        ] {
            let el = cmd.clone().into_element();
            assert_eq!(BlockingCommand::from_element(reparse(&el)), Ok(cmd));
        }
        assert_eq!(
            BlockingCommand::Block(vec![jid("romeo@montague.net")])
                .into_element()
                .to_xml(ns::CLIENT),
            "<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>"
        );
        let list = Blocklist { items: jids };
        assert_eq!(
            Blocklist::from_element(reparse(&list.clone().into_element())),
            Ok(list)
        );
        assert_eq!(
            Blocklist::request().into_element().to_xml(ns::CLIENT),
            "<blocklist xmlns='urn:xmpp:blocking'/>"
        );
    }

    #[test]
    fn recognises_the_blocked_error() {
        // XEP-0191 §3.3: a message to a contact we blocked.
        let msg = Message::from_element(parse_xml(
            "<message type='error' from='romeo@montague.net' to='juliet@capulet.com'>\
               <body>Can you hear me now?</body>\
               <error type='cancel'>\
                 <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 <blocked xmlns='urn:xmpp:blocking:errors'/>\
               </error>\
             </message>",
        ))
        .expect("valid");
        let error = msg.error.expect("an error");
        assert_eq!(error.condition, Condition::NotAcceptable);
        assert!(is_blocked_error(&error));
        assert!(!is_blocked_error(&StanzaError::new(
            ErrorType::Cancel,
            Condition::NotAcceptable
        )));
    }

    #[test]
    fn not_mine() {
        for xml in [
            "<block xmlns='urn:xmpp:blocking:errors'/>",
            "<blocklist xmlns='urn:xmpp:blocking'/>",
            "<query xmlns='jabber:iq:privacy'/>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(
                BlockingCommand::from_element(el.clone()),
                Err(ParseError::NotMine(el))
            );
        }
        let el = parse_xml("<block xmlns='urn:xmpp:blocking'><item jid='a@b'/></block>");
        assert_eq!(
            Blocklist::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_blocking_payloads() {
        let cases = [
            (
                "<block xmlns='urn:xmpp:blocking'/>",
                Malformed::new("block", "item", "is missing"),
            ),
            (
                "<block xmlns='urn:xmpp:blocking'><item/></block>",
                Malformed::new("item", "jid", "is missing"),
            ),
            (
                "<unblock xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></unblock>",
                Malformed::new("item", "jid", "is not a valid JID"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(command(xml)), want, "{xml}");
        }
        let list = parse_xml("<blocklist xmlns='urn:xmpp:blocking'><item jid=''/></blocklist>");
        assert_eq!(
            malformed(Blocklist::from_element(list)),
            Malformed::new("item", "jid", "is not a valid JID")
        );
    }
}
