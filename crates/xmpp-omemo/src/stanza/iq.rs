//! RFC 6120 §8.2.3: IQ stanzas — request/response with exactly one payload per request.

use super::error::StanzaError;
use super::{FromElement, IntoElement, Malformed, ParseError, jid_attr, ns, required_attr};
use crate::jid::Jid;
use crate::xml::Element;

/// The `type` of an IQ with what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IqPayload {
    /// A request for information: exactly one child element.
    Get(Element),
    /// A request that changes something: exactly one child element.
    Set(Element),
    /// A successful answer: zero or one child element.
    Result(Option<Element>),
    /// A failed answer: the `<error/>` and, optionally, the request payload echoed back.
    Error {
        error: StanzaError,
        original: Option<Element>,
    },
}

impl IqPayload {
    pub fn type_str(&self) -> &'static str {
        match self {
            IqPayload::Get(_) => "get",
            IqPayload::Set(_) => "set",
            IqPayload::Result(_) => "result",
            IqPayload::Error { .. } => "error",
        }
    }
}

/// An `<iq/>` stanza. Debug is safe to log: payloads are elements, whose Debug hides content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iq {
    pub from: Option<Jid>,
    pub to: Option<Jid>,
    /// Required; a response carries the request's id.
    pub id: String,
    pub payload: IqPayload,
}

impl Iq {
    /// A `get` request. `to: None` addresses our own account (roster, our own disco).
    pub fn get(id: impl Into<String>, to: Option<Jid>, payload: Element) -> Self {
        Self {
            from: None,
            to,
            id: id.into(),
            payload: IqPayload::Get(payload),
        }
    }

    /// A `set` request.
    pub fn set(id: impl Into<String>, to: Option<Jid>, payload: Element) -> Self {
        Self {
            from: None,
            to,
            id: id.into(),
            payload: IqPayload::Set(payload),
        }
    }

    /// The successful answer to `request`: same id, addressed to its sender. `from` is left
    /// for the server to stamp.
    pub fn result_for(request: &Iq, payload: Option<Element>) -> Self {
        Self {
            from: None,
            to: request.from.clone(),
            id: request.id.clone(),
            payload: IqPayload::Result(payload),
        }
    }

    /// The error answer to `request`. The request payload is not echoed back (the RFC makes it
    /// optional, and it would send the peer's data back to it for nothing).
    pub fn error_for(request: &Iq, error: StanzaError) -> Self {
        Self {
            from: None,
            to: request.from.clone(),
            id: request.id.clone(),
            payload: IqPayload::Error {
                error,
                original: None,
            },
        }
    }

    /// True for `get` and `set`: the ones that must be answered.
    pub fn is_request(&self) -> bool {
        matches!(self.payload, IqPayload::Get(_) | IqPayload::Set(_))
    }
}

const ONE_CHILD: Malformed = Malformed {
    element: "iq",
    field: "payload",
    reason: "must be exactly one element in a get or set",
};

impl FromElement for Iq {
    fn from_element(mut el: Element) -> Result<Self, ParseError> {
        if !el.is("iq", ns::CLIENT) {
            return Err(ParseError::NotMine(el));
        }
        let from = jid_attr(&el, "iq", "from")?;
        let to = jid_attr(&el, "iq", "to")?;
        let id = required_attr(&el, "iq", "id")?.to_owned();
        let kind = required_attr(&el, "iq", "type")?.to_owned();
        let mut children = el.take_children().into_iter();
        let payload = match kind.as_str() {
            "get" | "set" => {
                let (Some(child), None) = (children.next(), children.next()) else {
                    return Err(ONE_CHILD.into());
                };
                if kind == "get" {
                    IqPayload::Get(child)
                } else {
                    IqPayload::Set(child)
                }
            }
            "result" => {
                let child = children.next();
                if children.next().is_some() {
                    return Err(Malformed::new(
                        "iq",
                        "payload",
                        "must be at most one element in a result",
                    )
                    .into());
                }
                IqPayload::Result(child)
            }
            "error" => {
                let mut error = None;
                let mut original = None;
                for child in children {
                    if child.is("error", ns::CLIENT) {
                        if error.is_none() {
                            error = Some(StanzaError::parse(child)?);
                        }
                    } else if original.is_none() {
                        original = Some(child);
                    }
                }
                let error = error.ok_or(Malformed::new("iq", "error", "is missing"))?;
                IqPayload::Error { error, original }
            }
            _ => {
                return Err(
                    Malformed::new("iq", "type", "is not get, set, result or error").into(),
                );
            }
        };
        Ok(Iq {
            from,
            to,
            id,
            payload,
        })
    }
}

impl IntoElement for Iq {
    fn into_element(self) -> Element {
        let el = Element::new("iq", ns::CLIENT)
            .attr_opt("from", self.from.as_ref().map(Jid::as_str))
            .attr_opt("to", self.to.as_ref().map(Jid::as_str))
            .attr("id", self.id)
            .attr("type", self.payload.type_str());
        match self.payload {
            IqPayload::Get(p) | IqPayload::Set(p) | IqPayload::Result(Some(p)) => el.child(p),
            IqPayload::Result(None) => el,
            IqPayload::Error { error, original } => {
                let el = match original {
                    Some(p) => el.child(p),
                    None => el,
                };
                el.child(error.into_element())
            }
        }
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

    fn parse(xml: &str) -> Result<Iq, ParseError> {
        Iq::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_rfc_6120_get_and_result() {
        // RFC 6120 §8.2.3, a roster get and its (empty) result.
        let iq = parse("<iq from='juliet@example.com/balcony' id='rg1' type='get'><query xmlns='jabber:iq:roster'/></iq>").expect("valid");
        assert_eq!(
            iq,
            Iq {
                from: Some(jid("juliet@example.com/balcony")),
                to: None,
                id: "rg1".into(),
                payload: IqPayload::Get(Element::new("query", ns::ROSTER))
            }
        );
        assert!(iq.is_request());
        let result =
            parse("<iq id='rg1' to='juliet@example.com/balcony' type='result'/>").expect("valid");
        assert_eq!(result, Iq::result_for(&iq, None));
        assert!(!result.is_request());
    }

    #[test]
    fn parses_error_with_original_payload() {
        let iq = parse(
            "<iq from='example.com' id='e1' to='juliet@example.com/balcony' type='error'>\
               <query xmlns='jabber:iq:roster'/>\
               <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
             </iq>",
        )
        .expect("valid");
        assert_eq!(
            iq.payload,
            IqPayload::Error {
                error: StanzaError::new(ErrorType::Cancel, Condition::ServiceUnavailable),
                original: Some(Element::new("query", ns::ROSTER)),
            }
        );
    }

    #[test]
    fn error_keeps_the_first_error_and_the_first_other_child() {
        let cond = "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>";
        let iq = parse(&format!("<iq id='e2' type='error'><error type='cancel'>{cond}</error><error type='wait'>{cond}</error><a xmlns='urn:a'/><b xmlns='urn:b'/></iq>"))
            .expect("valid");
        assert_eq!(
            iq.payload,
            IqPayload::Error {
                error: StanzaError::new(ErrorType::Cancel, Condition::Conflict),
                original: Some(Element::new("a", "urn:a"))
            }
        );
    }

    #[test]
    fn builders_and_round_trip() {
        let ping = Element::new("ping", ns::PING);
        let request = Iq {
            from: Some(jid("capulet.lit")),
            ..Iq::get(
                "s2c1",
                Some(jid("juliet@capulet.lit/balcony")),
                ping.clone(),
            )
        };
        let set = Iq::set("s1", None, Element::new("enable", ns::CARBONS));
        let result = Iq::result_for(&request, Some(Element::new("query", ns::DISCO_INFO)));
        assert_eq!(result.to, Some(jid("capulet.lit")));
        assert_eq!(result.id, "s2c1");
        let error = Iq::error_for(
            &request,
            StanzaError::from_condition(Condition::FeatureNotImplemented),
        );
        let with_original = Iq {
            payload: IqPayload::Error {
                error: StanzaError::from_condition(Condition::Conflict),
                original: Some(ping),
            },
            ..Iq::result_for(&request, None)
        };
        for iq in [request, set, result, error, with_original] {
            let el = iq.clone().into_element();
            assert!(el.is("iq", ns::CLIENT));
            assert_eq!(Iq::from_element(reparse(&el)), Ok(iq));
        }
    }

    #[test]
    fn text_around_the_payload_is_ignored() {
        let iq =
            parse("<iq type='set' id='t'>\n  <ping xmlns='urn:xmpp:ping'/>\n</iq>").expect("valid");
        assert_eq!(iq.payload, IqPayload::Set(Element::new("ping", ns::PING)));
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<iq xmlns='jabber:component:accept' type='get' id='1'/>");
        assert_eq!(Iq::from_element(el.clone()), Err(ParseError::NotMine(el)));
    }

    #[test]
    fn invalid_iqs() {
        let ping = "<ping xmlns='urn:xmpp:ping'/>";
        let cases = [
            (
                format!("<iq type='get'>{ping}</iq>"),
                Malformed::new("iq", "id", "is missing"),
            ),
            (
                format!("<iq id='1'>{ping}</iq>"),
                Malformed::new("iq", "type", "is missing"),
            ),
            (
                format!("<iq id='1' type='put'>{ping}</iq>"),
                Malformed::new("iq", "type", "is not get, set, result or error"),
            ),
            ("<iq id='1' type='get'/>".to_owned(), ONE_CHILD),
            (
                format!("<iq id='1' type='set'>{ping}{ping}</iq>"),
                ONE_CHILD,
            ),
            (
                format!("<iq id='1' type='result'>{ping}{ping}</iq>"),
                Malformed::new("iq", "payload", "must be at most one element in a result"),
            ),
            (
                format!("<iq id='1' type='error'>{ping}</iq>"),
                Malformed::new("iq", "error", "is missing"),
            ),
            (
                format!("<iq id='1' type='get' from='not a jid'>{ping}</iq>"),
                Malformed::new("iq", "from", "is not a valid JID"),
            ),
            (
                format!("<iq id='1' type='get' to='@x'>{ping}</iq>"),
                Malformed::new("iq", "to", "is not a valid JID"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(&xml)), want, "{xml}");
        }
    }
}
