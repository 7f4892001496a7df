//! Wire types: one file per RFC/XEP. Each type converts from an [`Element`] — answering "not
//! mine" (the element handed back untouched, for the next parser) or "mine but malformed" (a
//! [`Malformed`] naming the element and field) — and back into one.
//!
//! Our own payloads are parsed strictly; unknown children and attributes are kept (in the
//! stanza's `payloads`), never rejected.

use super::jid::Jid;
use super::xml::Element;

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod disco;
pub mod error;
pub mod extensions;
pub mod iq;
pub mod mam;
pub mod message;
pub mod nick;
pub mod omemo;
pub mod omemo2;
pub mod presence;
pub mod roster;

crate::wire_modules! {
    data_form;
    eme;
    hints;
    ns;
    ping;
    pubsub;
    register;
    upload;
}

pub use error::{Condition, ErrorType, StanzaError};
pub use iq::{Iq, IqPayload};
pub use message::{Message, MessageType, StanzaId};
pub use presence::{Presence, PresenceType, Show};

/// "Not mine" or "mine but malformed".
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The element is not of this type; here it is back.
    NotMine(Element),
    /// The element is of this type but breaks its rules.
    Malformed(Malformed),
}

/// A malformed element: which element, which field, what is wrong. Never quotes content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed <{element}>: {field} {reason}")]
pub struct Malformed {
    pub element: &'static str,
    pub field: &'static str,
    pub reason: &'static str,
}

impl Malformed {
    pub fn new(element: &'static str, field: &'static str, reason: &'static str) -> Self {
        Self {
            element,
            field,
            reason,
        }
    }
}

impl From<Malformed> for ParseError {
    fn from(m: Malformed) -> Self {
        ParseError::Malformed(m)
    }
}

/// A wire type read from an element.
pub trait FromElement: Sized {
    fn from_element(el: Element) -> Result<Self, ParseError>;
}

/// A wire type written as an element.
pub trait IntoElement {
    fn into_element(self) -> Element;
}

/// Reads an optional JID attribute; a present but invalid JID is malformed.
pub fn jid_attr(
    el: &Element,
    element: &'static str,
    attr: &'static str,
) -> Result<Option<Jid>, Malformed> {
    match el.get_attr(attr) {
        None => Ok(None),
        Some(s) => Jid::parse(s)
            .map(Some)
            .map_err(|_| Malformed::new(element, attr, "is not a valid JID")),
    }
}

/// Reads a required attribute.
pub fn required_attr<'a>(
    el: &'a Element,
    element: &'static str,
    attr: &'static str,
) -> Result<&'a str, Malformed> {
    el.get_attr(attr)
        .ok_or(Malformed::new(element, attr, "is missing"))
}

/// Reads a required JID attribute.
pub fn required_jid_attr(
    el: &Element,
    element: &'static str,
    attr: &'static str,
) -> Result<Jid, Malformed> {
    let s = required_attr(el, element, attr)?;
    Jid::parse(s).map_err(|_| Malformed::new(element, attr, "is not a valid JID"))
}

/// Removes the human-readable text child `name` (a `<body/>`, `<status/>`) from `children` and
/// returns its text: the one without `xml:lang` (the stream's default language), else the first.
/// Other languages stay in `children`.
pub(crate) fn take_default_lang_text(
    children: &mut Vec<Element>,
    name: &str,
    ns: &str,
) -> Option<String> {
    let at = children
        .iter()
        .position(|c| c.is(name, ns) && c.get_attr("xml:lang").is_none())
        .or_else(|| children.iter().position(|c| c.is(name, ns)))?;
    Some(children.remove(at).text_content())
}

/// A top-level stanza of a client stream (RFC 6120 §8): everything else at depth 1 (stream
/// management, features, errors) is a nonza and answers "not mine".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stanza {
    Message(Message),
    Presence(Presence),
    Iq(Iq),
}

impl Stanza {
    /// The stanza's `id`, when it has one (an IQ always does).
    pub fn id(&self) -> Option<&str> {
        match self {
            Stanza::Message(m) => m.id.as_deref(),
            Stanza::Presence(p) => p.id.as_deref(),
            Stanza::Iq(iq) => Some(&iq.id),
        }
    }
}

impl FromElement for Stanza {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if el.ns() != ns::CLIENT {
            return Err(ParseError::NotMine(el));
        }
        match el.name() {
            "message" => Message::from_element(el).map(Stanza::Message),
            "presence" => Presence::from_element(el).map(Stanza::Presence),
            "iq" => Iq::from_element(el).map(Stanza::Iq),
            _ => Err(ParseError::NotMine(el)),
        }
    }
}

impl IntoElement for Stanza {
    fn into_element(self) -> Element {
        match self {
            Stanza::Message(m) => m.into_element(),
            Stanza::Presence(p) => p.into_element(),
            Stanza::Iq(iq) => iq.into_element(),
        }
    }
}

/// Test helper: reads one element from an XML literal, as if it arrived on a client stream
/// (so unprefixed elements are in `jabber:client`).
#[cfg(test)]
pub(crate) fn parse_xml(s: &str) -> Element {
    use super::xml::{Limits, XmlReader};
    let doc = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}' version='1.0'>{s}",
        ns::CLIENT,
        ns::STREAM
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let mut reader = XmlReader::new(doc.as_bytes(), Limits::default());
        reader.read_header().await.expect("the test stream header");
        reader
            .next_element()
            .await
            .expect("a well-formed test literal")
    })
}

/// Test helper: writes an element as it would go on a client stream and reads it back, so a
/// round trip also checks the namespaces we write.
#[cfg(test)]
pub(crate) fn reparse(el: &Element) -> Element {
    parse_xml(&el.to_xml(ns::CLIENT))
}

/// Test helper: the `Malformed` of a failed parse.
#[cfg(test)]
pub(crate) fn malformed<T: std::fmt::Debug>(r: Result<T, ParseError>) -> Malformed {
    match r {
        Err(ParseError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_dispatches_on_name_and_namespace() {
        let m = Stanza::from_element(parse_xml(
            "<message id='m1' to='juliet@example.com'><body>hi</body></message>",
        ));
        assert!(matches!(&m, Ok(Stanza::Message(_))), "{m:?}");
        assert_eq!(m.as_ref().ok().and_then(Stanza::id), Some("m1"));
        let p = Stanza::from_element(parse_xml("<presence/>"));
        assert!(matches!(&p, Ok(Stanza::Presence(_))), "{p:?}");
        assert_eq!(p.as_ref().ok().and_then(Stanza::id), None);
        let iq = Stanza::from_element(parse_xml(
            "<iq type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>",
        ));
        assert_eq!(iq.as_ref().ok().and_then(Stanza::id), Some("i1"));
    }

    #[test]
    fn nonzas_are_not_mine_and_come_back_untouched() {
        for xml in [
            "<r xmlns='urn:xmpp:sm:3'/>",
            "<a xmlns='urn:xmpp:sm:3' h='3'/>",
            "<message xmlns='jabber:server'/>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(
                Stanza::from_element(el.clone()),
                Err(ParseError::NotMine(el))
            );
        }
    }

    #[test]
    fn stanza_round_trips() {
        for xml in [
            "<message type='chat' to='juliet@example.com'><body>hi</body></message>",
            "<presence type='unavailable'/>",
            "<iq type='result' id='r1'/>",
        ] {
            let stanza = Stanza::from_element(parse_xml(xml)).expect("valid");
            assert_eq!(
                Stanza::from_element(reparse(&stanza.clone().into_element())),
                Ok(stanza)
            );
        }
    }

    #[test]
    fn invalid_stanza_is_malformed_not_mine() {
        assert_eq!(
            malformed(Stanza::from_element(parse_xml("<iq type='get'/>"))),
            Malformed::new("iq", "id", "is missing")
        );
    }

    #[test]
    fn default_lang_text_prefers_no_lang() {
        let mut el =
            parse_xml("<message><body xml:lang='de'>hallo</body><body>hello</body></message>");
        let mut children = el.take_children();
        assert_eq!(
            take_default_lang_text(&mut children, "body", ns::CLIENT).as_deref(),
            Some("hello")
        );
        assert_eq!(children.len(), 1);
        assert_eq!(
            take_default_lang_text(&mut children, "body", ns::CLIENT).as_deref(),
            Some("hallo")
        );
        assert_eq!(
            take_default_lang_text(&mut children, "body", ns::CLIENT),
            None
        );
    }

    #[test]
    fn invalid_jid_attributes() {
        let el = parse_xml("<item jid='a@b@c'/>");
        assert_eq!(
            required_jid_attr(&el, "item", "jid"),
            Err(Malformed::new("item", "jid", "is not a valid JID"))
        );
        assert_eq!(
            required_jid_attr(&el, "item", "other"),
            Err(Malformed::new("item", "other", "is missing"))
        );
    }
}
