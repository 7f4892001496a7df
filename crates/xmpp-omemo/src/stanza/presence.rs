//! RFC 6121 §4 and §3: Presence stanzas — availability, subscription requests and answers.

use std::fmt;

use super::error::StanzaError;
use super::{FromElement, IntoElement, Malformed, ParseError, jid_attr, ns};
use crate::jid::Jid;
use crate::xml::Element;

/// RFC 6121 §4.7.1. An absent `type` means available; an unknown one is malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PresenceType {
    #[default]
    Available,
    Error,
    Probe,
    Subscribe,
    Subscribed,
    Unavailable,
    Unsubscribe,
    Unsubscribed,
}

impl PresenceType {
    /// The `type` attribute value; `None` for available.
    pub fn as_attr(self) -> Option<&'static str> {
        Some(match self {
            PresenceType::Available => return None,
            PresenceType::Error => "error",
            PresenceType::Probe => "probe",
            PresenceType::Subscribe => "subscribe",
            PresenceType::Subscribed => "subscribed",
            PresenceType::Unavailable => "unavailable",
            PresenceType::Unsubscribe => "unsubscribe",
            PresenceType::Unsubscribed => "unsubscribed",
        })
    }

    fn from_attr(value: Option<&str>) -> Result<Self, Malformed> {
        Ok(match value {
            None => PresenceType::Available,
            Some("error") => PresenceType::Error,
            Some("probe") => PresenceType::Probe,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unavailable") => PresenceType::Unavailable,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some(_) => {
                return Err(Malformed::new(
                    "presence",
                    "type",
                    "is not a known presence type",
                ));
            }
        })
    }
}

/// RFC 6121 §4.7.2.1: the availability sub-state. No `<show/>` means plainly online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Show {
    Away,
    Chat,
    Dnd,
    Xa,
}

impl Show {
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Away => "away",
            Show::Chat => "chat",
            Show::Dnd => "dnd",
            Show::Xa => "xa",
        }
    }

    fn parse(s: &str) -> Result<Self, Malformed> {
        match s.trim() {
            "away" => Ok(Show::Away),
            "chat" => Ok(Show::Chat),
            "dnd" => Ok(Show::Dnd),
            "xa" => Ok(Show::Xa),
            _ => Err(Malformed::new(
                "presence",
                "show",
                "is not away, chat, dnd or xa",
            )),
        }
    }
}

/// A `<presence/>` stanza. Unknown children (caps, MUC, vCard avatar hashes …) stay in
/// `payloads` in document order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Presence {
    pub from: Option<Jid>,
    pub to: Option<Jid>,
    pub id: Option<String>,
    pub kind: PresenceType,
    pub show: Option<Show>,
    /// The `<status/>` without `xml:lang`, else the first; other languages stay in `payloads`.
    /// Written by the user: never log it.
    pub status: Option<String>,
    /// RFC 6121 §4.7.2.3; 0 when absent (and then not written).
    pub priority: i8,
    pub error: Option<StanzaError>,
    pub payloads: Vec<Element>,
}

impl Presence {
    pub fn new(kind: PresenceType) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// A presence of `kind` addressed to `to` (subscription requests and answers, probes).
    pub fn to(to: Jid, kind: PresenceType) -> Self {
        Self {
            to: Some(to),
            kind,
            ..Self::default()
        }
    }

    /// The first payload `name` in namespace `ns`.
    pub fn payload(&self, name: &str, ns: &str) -> Option<&Element> {
        self.payloads.iter().find(|p| p.is(name, ns))
    }
}

impl FromElement for Presence {
    fn from_element(mut el: Element) -> Result<Self, ParseError> {
        if !el.is("presence", ns::CLIENT) {
            return Err(ParseError::NotMine(el));
        }
        let from = jid_attr(&el, "presence", "from")?;
        let to = jid_attr(&el, "presence", "to")?;
        let id = el.get_attr("id").map(str::to_owned);
        let kind = PresenceType::from_attr(el.get_attr("type"))?;
        let mut children = el.take_children();
        let status = super::take_default_lang_text(&mut children, "status", ns::CLIENT);
        let mut p = Presence {
            from,
            to,
            id,
            kind,
            status,
            ..Presence::default()
        };
        let mut priority_seen = false;
        for child in children {
            if child.is("show", ns::CLIENT) && p.show.is_none() {
                p.show = Some(Show::parse(&child.text_content())?);
            } else if child.is("priority", ns::CLIENT) && !priority_seen {
                priority_seen = true;
                p.priority = child.text_content().trim().parse().map_err(|_| {
                    Malformed::new("presence", "priority", "is not an integer from -128 to 127")
                })?;
            } else if child.is("error", ns::CLIENT) && p.error.is_none() {
                p.error = Some(StanzaError::parse(child)?);
            } else {
                p.payloads.push(child);
            }
        }
        Ok(p)
    }
}

impl IntoElement for Presence {
    fn into_element(self) -> Element {
        let mut el = Element::new("presence", ns::CLIENT)
            .attr_opt("from", self.from.as_ref().map(Jid::as_str))
            .attr_opt("to", self.to.as_ref().map(Jid::as_str))
            .attr_opt("id", self.id)
            .attr_opt("type", self.kind.as_attr());
        if let Some(show) = self.show {
            el.push_child(Element::new("show", ns::CLIENT).text(show.as_str()));
        }
        if let Some(status) = self.status {
            el.push_child(Element::new("status", ns::CLIENT).text(status));
        }
        if self.priority != 0 {
            el.push_child(Element::new("priority", ns::CLIENT).text(self.priority.to_string()));
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

/// Shows the status's length only.
impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("show", &self.show)
            .field(
                "status",
                &self.status.as_ref().map(|s| format!("{} bytes", s.len())),
            )
            .field("priority", &self.priority)
            .field("error", &self.error)
            .field("payloads", &self.payloads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::error::Condition;
    use crate::stanza::{malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn parse(xml: &str) -> Result<Presence, ParseError> {
        Presence::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_rfc_6121_availability() {
        // RFC 6121 §4.7.2, with XEP-0115 caps as an unknown payload.
        let p = parse(
            "<presence from='juliet@example.com/balcony' id='pres1' xml:lang='en'>\
               <show>dnd</show>\
               <status>dancing</status>\
               <status xml:lang='es'>bailando</status>\
               <priority>-1</priority>\
               <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://psi-im.org' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>\
             </presence>",
        )
        .expect("valid");
        let caps = Element::new("c", ns::CAPS)
            .attr("hash", "sha-1")
            .attr("node", "http://psi-im.org")
            .attr("ver", "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        let spanish = Element::new("status", ns::CLIENT)
            .attr("xml:lang", "es")
            .text("bailando");
        assert_eq!(
            p,
            Presence {
                from: Some(jid("juliet@example.com/balcony")),
                to: None,
                id: Some("pres1".into()),
                kind: PresenceType::Available,
                show: Some(Show::Dnd),
                status: Some("dancing".into()),
                priority: -1,
                error: None,
                payloads: vec![spanish, caps],
            }
        );
    }

    #[test]
    fn subscription_types() {
        for (attr, kind) in [
            ("subscribe", PresenceType::Subscribe),
            ("subscribed", PresenceType::Subscribed),
            ("unsubscribe", PresenceType::Unsubscribe),
            ("unsubscribed", PresenceType::Unsubscribed),
            ("probe", PresenceType::Probe),
            ("unavailable", PresenceType::Unavailable),
        ] {
            let p =
                parse(&format!("<presence to='romeo@example.net' type='{attr}'/>")).expect("valid");
            assert_eq!(p, Presence::to(jid("romeo@example.net"), kind));
            assert_eq!(p.into_element().get_attr("type"), Some(attr));
        }
        assert_eq!(
            parse("<presence/>").expect("valid"),
            Presence::new(PresenceType::Available)
        );
    }

    #[test]
    fn priority_bounds() {
        assert_eq!(
            parse("<presence><priority>127</priority></presence>")
                .expect("valid")
                .priority,
            127
        );
        assert_eq!(
            parse("<presence><priority> -128 </priority></presence>")
                .expect("valid")
                .priority,
            -128
        );
    }

    #[test]
    fn round_trip() {
        let p = Presence {
            from: Some(jid("romeo@example.net/orchard")),
            to: Some(jid("juliet@example.com")),
            id: Some("p1".into()),
            kind: PresenceType::Error,
            show: Some(Show::Xa),
            status: Some("away from keyboard".into()),
            priority: 5,
            error: Some(StanzaError::from_condition(Condition::RemoteServerNotFound)),
            payloads: vec![Element::new("x", "vcard-temp:x:update")],
        };
        assert_eq!(
            Presence::from_element(reparse(&p.clone().into_element())),
            Ok(p)
        );
        for show in [Show::Away, Show::Chat, Show::Dnd] {
            let p = Presence {
                show: Some(show),
                ..Presence::default()
            };
            assert_eq!(
                Presence::from_element(reparse(&p.clone().into_element())),
                Ok(p)
            );
        }
    }

    #[test]
    fn debug_hides_status() {
        let p = Presence {
            status: Some("at the ball".into()),
            ..Presence::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("ball"), "{shown}");
        assert!(shown.contains("11 bytes"), "{shown}");
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<message/>");
        assert_eq!(
            Presence::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_presences() {
        let priority = Malformed::new("presence", "priority", "is not an integer from -128 to 127");
        let cases = [
            (
                "<presence type='online'/>",
                Malformed::new("presence", "type", "is not a known presence type"),
            ),
            (
                "<presence from='juliet@'/>",
                Malformed::new("presence", "from", "is not a valid JID"),
            ),
            (
                "<presence to='a@b/'/>",
                Malformed::new("presence", "to", "is not a valid JID"),
            ),
            (
                "<presence><show>busy</show></presence>",
                Malformed::new("presence", "show", "is not away, chat, dnd or xa"),
            ),
            (
                "<presence><show/></presence>",
                Malformed::new("presence", "show", "is not away, chat, dnd or xa"),
            ),
            (
                "<presence><priority>128</priority></presence>",
                priority.clone(),
            ),
            (
                "<presence><priority>-129</priority></presence>",
                priority.clone(),
            ),
            (
                "<presence><priority>high</priority></presence>",
                priority.clone(),
            ),
            ("<presence><priority/></presence>", priority),
            (
                "<presence type='error'><error type='x'/></presence>",
                Malformed::new(
                    "error",
                    "type",
                    "is not auth, cancel, continue, modify or wait",
                ),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(xml)), want, "{xml}");
        }
    }
}
