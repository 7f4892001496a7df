//! RFC 6121 §5: Message stanzas, with the XEP-0359 unique and stable IDs
//! <https://xmpp.org/extensions/xep-0359.html> that every message may carry.

use std::fmt;

use super::error::StanzaError;
use super::{
    FromElement, IntoElement, Malformed, ParseError, jid_attr, ns, required_attr, required_jid_attr,
};
use crate::jid::Jid;
use crate::xml::Element;

/// RFC 6121 §5.2.2. An absent or unknown `type` is `Normal`, as the RFC requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MessageType {
    Chat,
    Error,
    Groupchat,
    Headline,
    #[default]
    Normal,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Chat => "chat",
            MessageType::Error => "error",
            MessageType::Groupchat => "groupchat",
            MessageType::Headline => "headline",
            MessageType::Normal => "normal",
        }
    }

    fn from_attr(value: Option<&str>) -> Self {
        match value {
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            _ => MessageType::Normal,
        }
    }
}

/// XEP-0359 `<stanza-id/>`: the ID an archiving entity (`by`: our server, a MUC) gave the
/// message. Trust one only when `by` is an entity that is allowed to stamp it (our own bare
/// JID, or the room for a groupchat message) — anyone else can put one in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StanzaId {
    pub by: Jid,
    pub id: String,
}

impl StanzaId {
    fn parse(el: &Element) -> Result<Self, Malformed> {
        let id = required_attr(el, "stanza-id", "id")?.to_owned();
        let by = required_jid_attr(el, "stanza-id", "by")?;
        Ok(Self { by, id })
    }

    fn to_element(&self) -> Element {
        Element::new("stanza-id", ns::SID)
            .attr("id", self.id.as_str())
            .attr("by", self.by.as_str())
    }
}

/// A `<message/>` stanza. Known children are sorted into fields; every other child stays in
/// `payloads` in document order (and is written back after the known ones).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub from: Option<Jid>,
    pub to: Option<Jid>,
    pub id: Option<String>,
    pub kind: MessageType,
    /// The `<body/>` without `xml:lang`, else the first one; bodies in other languages stay in
    /// `payloads`. Written back without `xml:lang`. Never log it.
    pub body: Option<String>,
    /// The `<thread/>` ID (a `parent` attribute is not kept).
    pub thread: Option<String>,
    /// XEP-0359 `<origin-id/>`: the ID the sending client chose.
    pub origin_id: Option<String>,
    /// XEP-0359 `<stanza-id/>`s, in order.
    pub stanza_ids: Vec<StanzaId>,
    pub error: Option<StanzaError>,
    pub payloads: Vec<Element>,
}

impl Message {
    /// A `type='chat'` message with a body.
    pub fn chat(to: Jid, body: impl Into<String>) -> Self {
        Self {
            to: Some(to),
            kind: MessageType::Chat,
            body: Some(body.into()),
            ..Self::default()
        }
    }

    /// The first payload `name` in namespace `ns`.
    pub fn payload(&self, name: &str, ns: &str) -> Option<&Element> {
        self.payloads.iter().find(|p| p.is(name, ns))
    }
}

impl FromElement for Message {
    fn from_element(mut el: Element) -> Result<Self, ParseError> {
        if !el.is("message", ns::CLIENT) {
            return Err(ParseError::NotMine(el));
        }
        let from = jid_attr(&el, "message", "from")?;
        let to = jid_attr(&el, "message", "to")?;
        let id = el.get_attr("id").map(str::to_owned);
        let kind = MessageType::from_attr(el.get_attr("type"));
        let mut children = el.take_children();
        let body = super::take_default_lang_text(&mut children, "body", ns::CLIENT);
        let mut msg = Message {
            from,
            to,
            id,
            kind,
            body,
            ..Message::default()
        };
        for child in children {
            if child.is("thread", ns::CLIENT) && msg.thread.is_none() {
                msg.thread = Some(child.text_content());
            } else if child.is("origin-id", ns::SID) && msg.origin_id.is_none() {
                // XEP-0359 ids are the sender's (or its server's) to get right: one that does
                // not parse is kept as an unknown payload, never fatal for the message.
                match required_attr(&child, "origin-id", "id") {
                    Ok(id) => msg.origin_id = Some(id.to_owned()),
                    Err(_) => msg.payloads.push(child),
                }
            } else if child.is("stanza-id", ns::SID) {
                match StanzaId::parse(&child) {
                    Ok(sid) => msg.stanza_ids.push(sid),
                    Err(_) => msg.payloads.push(child),
                }
            } else if child.is("error", ns::CLIENT) && msg.error.is_none() {
                msg.error = Some(StanzaError::parse(child)?);
            } else {
                msg.payloads.push(child);
            }
        }
        Ok(msg)
    }
}

impl IntoElement for Message {
    fn into_element(self) -> Element {
        let kind = (self.kind != MessageType::Normal).then_some(self.kind.as_str());
        let mut el = Element::new("message", ns::CLIENT)
            .attr_opt("from", self.from.as_ref().map(Jid::as_str))
            .attr_opt("to", self.to.as_ref().map(Jid::as_str))
            .attr_opt("id", self.id)
            .attr_opt("type", kind);
        if let Some(body) = self.body {
            el.push_child(Element::new("body", ns::CLIENT).text(body));
        }
        if let Some(thread) = self.thread {
            el.push_child(Element::new("thread", ns::CLIENT).text(thread));
        }
        if let Some(origin_id) = self.origin_id {
            el.push_child(Element::new("origin-id", ns::SID).attr("id", origin_id));
        }
        for sid in &self.stanza_ids {
            el.push_child(sid.to_element());
        }
        if let Some(error) = self.error {
            el.push_child(error.into_element());
        }
        for p in self.payloads {
            el.push_child(p);
        }
        el
    }
}

/// Shows the body's length only.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("{} bytes", b.len())),
            )
            .field("thread", &self.thread)
            .field("origin_id", &self.origin_id)
            .field("stanza_ids", &self.stanza_ids)
            .field("error", &self.error)
            .field("payloads", &self.payloads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::error::{Condition, ErrorType};
    use crate::stanza::{malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn parse(xml: &str) -> Result<Message, ParseError> {
        Message::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_rfc_6121_chat_message() {
        // RFC 6121 §5.2.1, with XEP-0359 IDs and a chat state as an unknown payload.
        let msg = parse(
            "<message from='juliet@example.com/balcony' id='ktx72v49' to='romeo@example.net' type='chat' xml:lang='en'>\
               <body>Art thou not Romeo, and a Montague?</body>\
               <thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>\
               <active xmlns='http://jabber.org/protocol/chatstates'/>\
               <origin-id xmlns='urn:xmpp:sid:0' id='de305d54-75b4-431b-adb2-eb6b9e546013'/>\
               <stanza-id xmlns='urn:xmpp:sid:0' id='5f3dbc5e-e1d3-4077-a492-693f3769c7ad' by='romeo@example.net'/>\
             </message>",
        )
        .expect("valid");
        assert_eq!(
            msg,
            Message {
                from: Some(jid("juliet@example.com/balcony")),
                to: Some(jid("romeo@example.net")),
                id: Some("ktx72v49".into()),
                kind: MessageType::Chat,
                body: Some("Art thou not Romeo, and a Montague?".into()),
                thread: Some("e0ffe42b28561960c6b12b944a092794b9683a38".into()),
                origin_id: Some("de305d54-75b4-431b-adb2-eb6b9e546013".into()),
                stanza_ids: vec![StanzaId {
                    by: jid("romeo@example.net"),
                    id: "5f3dbc5e-e1d3-4077-a492-693f3769c7ad".into()
                }],
                error: None,
                payloads: vec![Element::new(
                    "active",
                    "http://jabber.org/protocol/chatstates"
                )],
            }
        );
    }

    #[test]
    fn body_without_lang_wins_and_others_are_kept() {
        let msg = parse("<message><body xml:lang='cs'>Ahoj</body><body>Hello</body><subject>s</subject></message>").expect("valid");
        assert_eq!(msg.body.as_deref(), Some("Hello"));
        assert_eq!(msg.payloads.len(), 2);
        assert_eq!(
            msg.payloads.first().and_then(|p| p.get_attr("xml:lang")),
            Some("cs")
        );
        let only_lang = parse(
            "<message><body xml:lang='cs'>Ahoj</body><body xml:lang='de'>Hallo</body></message>",
        )
        .expect("valid");
        assert_eq!(only_lang.body.as_deref(), Some("Ahoj"));
        assert_eq!(only_lang.payloads.len(), 1);
    }

    #[test]
    fn type_defaults_to_normal() {
        assert_eq!(
            parse("<message/>").expect("valid").kind,
            MessageType::Normal
        );
        assert_eq!(
            parse("<message type='bogus'/>").expect("valid").kind,
            MessageType::Normal
        );
        assert_eq!(
            parse("<message type='groupchat'/>").expect("valid").kind,
            MessageType::Groupchat
        );
        assert_eq!(
            parse("<message type='headline'/>").expect("valid").kind,
            MessageType::Headline
        );
    }

    #[test]
    fn error_message() {
        let msg = parse(
            "<message from='romeo@example.net' type='error' id='m1'>\
               <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
             </message>",
        )
        .expect("valid");
        assert_eq!(msg.kind, MessageType::Error);
        assert_eq!(
            msg.error,
            Some(StanzaError::new(
                ErrorType::Cancel,
                Condition::ServiceUnavailable
            ))
        );
    }

    #[test]
    fn round_trip() {
        let mut msg = Message::chat(
            jid("juliet@example.com"),
            "Neither, fair saint, if either thee dislike.",
        );
        msg.from = Some(jid("romeo@example.net/orchard"));
        msg.id = Some("m2".into());
        msg.thread = Some("t1".into());
        msg.origin_id = Some("o1".into());
        msg.stanza_ids = vec![StanzaId {
            by: jid("example.com"),
            id: "s1".into(),
        }];
        msg.error = Some(StanzaError::from_condition(Condition::Forbidden));
        msg.payloads = vec![
            Element::new("request", "urn:xmpp:receipts"),
            Element::new("markable", "urn:xmpp:chat-markers:0"),
        ];
        let el = msg.clone().into_element();
        assert!(el.is("message", ns::CLIENT));
        assert_eq!(Message::from_element(reparse(&el)), Ok(msg));
        let normal = Message::default();
        assert_eq!(normal.clone().into_element().get_attr("type"), None);
        assert_eq!(
            Message::from_element(reparse(&normal.clone().into_element())),
            Ok(normal)
        );
    }

    #[test]
    fn debug_hides_body() {
        let shown = format!("{:?}", Message::chat(jid("a@b"), "wherefore art thou"));
        assert!(!shown.contains("wherefore"), "{shown}");
        assert!(shown.contains("18 bytes"), "{shown}");
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<presence/>");
        assert_eq!(
            Message::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn foreign_ids_that_do_not_parse_are_kept_as_payloads_and_the_message_stays() {
        let cases = [
            "<origin-id xmlns='urn:xmpp:sid:0'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' by='a@b'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='1'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='1' by='a@'/>",
            "<unknown xmlns='urn:example:whatever' x='1'><deeper/></unknown>",
        ];
        for child in cases {
            let xml = format!(
                "<message from='bob@x.example/a' id='m1' type='chat'><body>hi</body>{child}\
                 <stanza-id xmlns='urn:xmpp:sid:0' id='s2' by='alice@x.example'/></message>"
            );
            let msg = parse(&xml).unwrap_or_else(|e| panic!("{child}: {e:?}"));
            assert_eq!(msg.body.as_deref(), Some("hi"), "{child}");
            assert_eq!(msg.origin_id, None, "{child}");
            let ids: Vec<&str> = msg.stanza_ids.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["s2"], "{child}");
            assert_eq!(msg.payloads.len(), 1, "{child}");
        }
    }

    #[test]
    fn invalid_messages() {
        let cases = [
            (
                "<message from='@example.com'/>",
                Malformed::new("message", "from", "is not a valid JID"),
            ),
            (
                "<message to='a b@example.com'/>",
                Malformed::new("message", "to", "is not a valid JID"),
            ),
            (
                "<message type='error'><error/></message>",
                Malformed::new("error", "type", "is missing"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(xml)), want, "{xml}");
        }
    }
}
