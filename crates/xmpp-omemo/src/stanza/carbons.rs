//! XEP-0280: Message Carbons <https://xmpp.org/extensions/xep-0280.html>, with the XEP-0297
//! `<forwarded/>` wrapper they use.
//!
//! A carbon is only as trustworthy as its outer `from`: anyone can send us a message that
//! contains `<sent/>`, so [`Carbon::from_message`] requires the outer sender to be our own bare
//! JID (XEP-0280 §11). That is why there is no `FromElement` for [`Carbon`].

use super::message::Message;
use super::{FromElement, IntoElement, Malformed, ParseError, ns};
use crate::jid::Jid;
use crate::xml::Element;

/// The payload of the IQ set that turns carbons on for this resource.
pub fn enable() -> Element {
    Element::new("enable", ns::CARBONS)
}

/// The payload of the IQ set that turns carbons off.
pub fn disable() -> Element {
    Element::new("disable", ns::CARBONS)
}

/// Which way the copied message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Another of our resources sent it.
    Sent,
    /// Another of our resources received it.
    Received,
}

impl Direction {
    fn element_name(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }

    fn of(el: &Element) -> Option<Self> {
        if el.is("sent", ns::CARBONS) {
            Some(Direction::Sent)
        } else if el.is("received", ns::CARBONS) {
            Some(Direction::Received)
        } else {
            None
        }
    }
}

/// A copy of a message another of our resources sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carbon {
    pub direction: Direction,
    /// The copied message, as it was sent or received.
    pub message: Message,
}

impl Carbon {
    /// True when `msg` carries a `<sent/>` or `<received/>` carbon payload (trusted or not).
    pub fn is_carbon(msg: &Message) -> bool {
        msg.payloads.iter().any(|p| Direction::of(p).is_some())
    }

    /// Unwraps the carbon in `msg`, which must come from `own_bare` (our account's bare JID).
    ///
    /// - no carbon payload: `NotMine` with `msg` as an element ([`Message::from_element`] gives
    ///   it back unchanged; check [`Carbon::is_carbon`] first to avoid the round trip);
    /// - outer `from` absent or not exactly our bare JID: malformed `from` (a forgery);
    /// - two carbon payloads, no `<forwarded/>`, no inner message, or an inner message that is
    ///   itself malformed: malformed.
    ///
    /// Other payloads of the outer message (hints, `<private/>` …) are dropped.
    pub fn from_message(mut msg: Message, own_bare: &Jid) -> Result<Carbon, ParseError> {
        let mut carbons = msg
            .payloads
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Direction::of(p).map(|d| (i, d)));
        let (at, direction) = match (carbons.next(), carbons.next()) {
            (None, _) => return Err(ParseError::NotMine(msg.into_element())),
            (Some(_), Some(_)) => {
                return Err(Malformed::new("message", "carbon", "appears more than once").into());
            }
            (Some(found), None) => found,
        };
        if msg.from.as_ref() != Some(&own_bare.bare()) {
            return Err(Malformed::new("message", "from", "is not our own account").into());
        }
        let mut wrapper = msg.payloads.remove(at);
        let name = direction.element_name();
        let mut forwarded = wrapper
            .take_child("forwarded", ns::FORWARD)
            .ok_or(Malformed::new(name, "forwarded", "is missing"))?;
        let inner = forwarded
            .take_child("message", ns::CLIENT)
            .ok_or(Malformed::new("forwarded", "message", "is missing"))?;
        let message = match Message::from_element(inner) {
            Ok(m) => m,
            Err(ParseError::Malformed(m)) => return Err(m.into()),
            Err(ParseError::NotMine(_)) => {
                return Err(Malformed::new("forwarded", "message", "is missing").into());
            }
        };
        Ok(Carbon { direction, message })
    }
}

/// Writes the `<sent/>` or `<received/>` payload (to be put into a message from our bare JID).
impl IntoElement for Carbon {
    fn into_element(self) -> Element {
        let forwarded = Element::new("forwarded", ns::FORWARD).child(self.message.into_element());
        Element::new(self.direction.element_name(), ns::CARBONS).child(forwarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::message::MessageType;
    use crate::stanza::{malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn message(xml: &str) -> Message {
        Message::from_element(parse_xml(xml)).expect("a valid outer message")
    }

    fn wrap(from: &str, carbon: &str) -> String {
        format!(
            "<message from='{from}' to='romeo@montague.example/home' type='chat'>{carbon}</message>"
        )
    }

    const RECEIVED: &str = "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
          <message xmlns='jabber:client' from='juliet@capulet.example/balcony' to='romeo@montague.example/garden' type='chat'>\
            <body>What man art thou that, thus bescreen'd in night, so stumblest on my counsel?</body>\
            <thread>0e3141cd80894871a68e6fe6b1ec56fa</thread>\
          </message></forwarded></received>";

    #[test]
    fn parses_xep_0280_received() {
        // XEP-0280 §7.3.
        let own = jid("romeo@montague.example");
        let carbon = Carbon::from_message(message(&wrap("romeo@montague.example", RECEIVED)), &own)
            .expect("valid");
        assert_eq!(carbon.direction, Direction::Received);
        let m = carbon.message;
        assert_eq!(m.from, Some(jid("juliet@capulet.example/balcony")));
        assert_eq!(m.to, Some(jid("romeo@montague.example/garden")));
        assert_eq!(m.kind, MessageType::Chat);
        assert_eq!(
            m.body.as_deref(),
            Some("What man art thou that, thus bescreen'd in night, so stumblest on my counsel?")
        );
        assert_eq!(
            m.thread.as_deref(),
            Some("0e3141cd80894871a68e6fe6b1ec56fa")
        );
    }

    #[test]
    fn parses_sent_and_accepts_a_full_own_jid_as_the_account() {
        let sent = "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
              <message xmlns='jabber:client' to='juliet@capulet.example/balcony' from='romeo@montague.example/home' type='chat'><body>hi</body></message>\
            </forwarded></sent>";
        let msg = message(&wrap("romeo@montague.example", sent));
        assert!(Carbon::is_carbon(&msg));
        let carbon = Carbon::from_message(msg, &jid("romeo@montague.example/home")).expect("valid");
        assert_eq!(carbon.direction, Direction::Sent);
        assert_eq!(carbon.message.body.as_deref(), Some("hi"));
    }

    #[test]
    fn round_trip() {
        let own = jid("romeo@montague.example");
        for direction in [Direction::Sent, Direction::Received] {
            let carbon = Carbon {
                direction,
                message: Message::chat(jid("juliet@capulet.example"), "Good night"),
            };
            let outer = Message {
                from: Some(own.clone()),
                payloads: vec![carbon.clone().into_element()],
                ..Message::default()
            };
            let outer = Message::from_element(reparse(&outer.into_element())).expect("valid");
            assert_eq!(Carbon::from_message(outer, &own), Ok(carbon));
        }
    }

    #[test]
    fn enable_and_disable() {
        assert_eq!(
            enable().to_xml(ns::CLIENT),
            "<enable xmlns='urn:xmpp:carbons:2'/>"
        );
        assert_eq!(
            disable().to_xml(ns::CLIENT),
            "<disable xmlns='urn:xmpp:carbons:2'/>"
        );
    }

    #[test]
    fn a_plain_message_is_not_mine_and_comes_back() {
        let msg = message(
            "<message from='juliet@capulet.example/balcony' id='m1' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(!Carbon::is_carbon(&msg));
        let Err(ParseError::NotMine(el)) =
            Carbon::from_message(msg.clone(), &jid("romeo@montague.example"))
        else {
            panic!("not mine")
        };
        assert_eq!(Message::from_element(el), Ok(msg));
    }

    #[test]
    fn invalid_forged_carbons() {
        // XEP-0280 §11: a carbon from anyone but our own bare JID is a forgery.
        let own = jid("romeo@montague.example");
        let forged = Malformed::new("message", "from", "is not our own account");
        for outer in [
            wrap("juliet@capulet.example", RECEIVED),
            wrap("romeo@montague.example/other", RECEIVED),
            wrap("montague.example", RECEIVED),
            format!("<message>{RECEIVED}</message>"),
        ] {
            assert_eq!(
                malformed(Carbon::from_message(message(&outer), &own)),
                forged,
                "{outer}"
            );
        }
    }

    #[test]
    fn invalid_carbons() {
        let own = jid("romeo@montague.example");
        let cases = [
            (format!("{RECEIVED}{RECEIVED}"), Malformed::new("message", "carbon", "appears more than once")),
            ("<sent xmlns='urn:xmpp:carbons:2'/>".to_owned(), Malformed::new("sent", "forwarded", "is missing")),
            (
                "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/></forwarded></received>".to_owned(),
                Malformed::new("forwarded", "message", "is missing"),
            ),
            (
                "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='bad@'/></forwarded></received>".to_owned(),
                Malformed::new("message", "from", "is not a valid JID"),
            ),
        ];
        for (carbon, want) in cases {
            let outer = message(&wrap("romeo@montague.example", &carbon));
            assert_eq!(
                malformed(Carbon::from_message(outer, &own)),
                want,
                "{carbon}"
            );
        }
    }
}
