//! XEP-0199: XMPP Ping <https://xmpp.org/extensions/xep-0199.html>

use super::{FromElement, IntoElement, ParseError, ns};
use crate::xml::Element;

/// The `<ping xmlns='urn:xmpp:ping'/>` payload of an IQ get; the answer is an empty result
/// (or an error, which still proves the peer is there). Children, if any, are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ping;

impl FromElement for Ping {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if el.is("ping", ns::PING) {
            Ok(Ping)
        } else {
            Err(ParseError::NotMine(el))
        }
    }
}

impl IntoElement for Ping {
    fn into_element(self) -> Element {
        Element::new("ping", ns::PING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::iq::{Iq, IqPayload};
    use crate::stanza::{parse_xml, reparse};

    #[test]
    fn parses_xep_0199_server_to_client_ping() {
        // XEP-0199 §4.2.
        let iq = Iq::from_element(parse_xml("<iq from='capulet.lit' to='juliet@capulet.lit/balcony' id='s2c1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"))
            .expect("valid");
        let IqPayload::Get(payload) = iq.payload else {
            panic!("a get")
        };
        assert_eq!(Ping::from_element(payload), Ok(Ping));
    }

    #[test]
    fn round_trip() {
        let el = Ping.into_element();
        assert_eq!(el.to_xml(ns::CLIENT), "<ping xmlns='urn:xmpp:ping'/>");
        assert_eq!(Ping::from_element(reparse(&el)), Ok(Ping));
    }

    #[test]
    fn not_mine() {
        for xml in [
            "<ping xmlns='urn:xmpp:ping:1'/>",
            "<pong xmlns='urn:xmpp:ping'/>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(Ping::from_element(el.clone()), Err(ParseError::NotMine(el)));
        }
    }
}
