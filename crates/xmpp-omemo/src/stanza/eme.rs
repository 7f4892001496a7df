//! XEP-0380: Explicit Message Encryption <https://xmpp.org/extensions/xep-0380.html>
//!
//! The `<encryption/>` marker tells a client that cannot decrypt a message which scheme was used,
//! so it can say so instead of showing the fallback body as if it were the message.

use super::{FromElement, IntoElement, ParseError, ns, required_attr};
use crate::xml::Element;

/// `<encryption xmlns='urn:xmpp:eme:0' namespace='…' [name='…']/>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Encryption {
    /// The namespace of the encryption scheme (e.g. `eu.siacs.conversations.axolotl`).
    pub namespace: String,
    /// A human-readable name of the scheme (`OMEMO`); optional, and XEP-0380 leaves it out for
    /// the schemes it knows by namespace.
    pub name: Option<String>,
}

/// The `<encryption/>` payload for `namespace`, with an optional display `name`.
pub fn encryption(namespace: &str, name: Option<&str>) -> Element {
    Encryption {
        namespace: namespace.to_owned(),
        name: name.map(str::to_owned),
    }
    .into_element()
}

impl FromElement for Encryption {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("encryption", ns::EME) {
            return Err(ParseError::NotMine(el));
        }
        let namespace = required_attr(&el, "encryption", "namespace")?.to_owned();
        Ok(Self {
            namespace,
            name: el.get_attr("name").map(str::to_owned),
        })
    }
}

impl IntoElement for Encryption {
    fn into_element(self) -> Element {
        Element::new("encryption", ns::EME)
            .attr("namespace", self.namespace)
            .attr_opt("name", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{Malformed, malformed, parse_xml, reparse};

    #[test]
    fn parses_legacy_omemo_marker() {
        let el = parse_xml(
            "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl' name='OMEMO'/>",
        );
        assert_eq!(
            Encryption::from_element(el),
            Ok(Encryption {
                namespace: ns::OMEMO_LEGACY.into(),
                name: Some("OMEMO".into())
            })
        );
        let otr = parse_xml("<encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:otr:0'/>");
        assert_eq!(
            Encryption::from_element(otr),
            Ok(Encryption {
                namespace: "urn:xmpp:otr:0".into(),
                name: None
            })
        );
    }

    #[test]
    fn builder_and_round_trip() {
        let el = encryption(ns::OMEMO_LEGACY, Some("OMEMO"));
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl' name='OMEMO'/>"
        );
        let parsed = Encryption::from_element(reparse(&el)).expect("valid");
        assert_eq!(
            Encryption::from_element(reparse(&parsed.clone().into_element())),
            Ok(parsed)
        );
        assert_eq!(encryption("urn:xmpp:otr:0", None).get_attr("name"), None);
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<encrypted xmlns='eu.siacs.conversations.axolotl'/>");
        assert_eq!(
            Encryption::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_encryption() {
        let el = parse_xml("<encryption xmlns='urn:xmpp:eme:0' name='OMEMO'/>");
        assert_eq!(
            malformed(Encryption::from_element(el)),
            Malformed::new("encryption", "namespace", "is missing")
        );
    }
}
