//! XEP-0115: Entity Capabilities <https://xmpp.org/extensions/xep-0115.html>
//!
//! A `<c/>` in our presence names the disco#info answer we give, by a hash of it. A PEP service
//! (XEP-0163) reads the `…+notify` features from that answer and sends us notifications for
//! those nodes; without caps in every available presence, Prosody stops them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

use super::disco::Identity;
use super::{FromElement, IntoElement, ParseError, ns, required_attr};
use crate::xml::Element;

/// The only hash function we produce (the one every server and client understands).
pub const SHA1: &str = "sha-1";

/// XEP-0115 §5.1 with SHA-1 and no extended info (XEP-0128 forms): identities as
/// `category/type/lang/name<`, sorted; features as `var<`, sorted (duplicates once); the SHA-1 of
/// that string, in base64.
pub fn verification_string(identities: &[Identity], features: &[&str]) -> String {
    let mut ids: Vec<String> = identities
        .iter()
        .map(|i| {
            let (lang, name) = (
                i.lang.as_deref().unwrap_or(""),
                i.name.as_deref().unwrap_or(""),
            );
            format!("{}/{}/{lang}/{name}<", i.category, i.kind)
        })
        .collect();
    ids.sort_unstable();
    let mut vars: Vec<&str> = features.to_vec();
    vars.sort_unstable();
    vars.dedup();
    let mut s = ids.concat();
    for var in vars {
        s.push_str(var);
        s.push('<');
    }
    B64.encode(Sha1::digest(s.as_bytes()))
}

/// The `<c xmlns='http://jabber.org/protocol/caps'/>` of a presence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caps {
    /// The hash function's IANA name (`sha-1`).
    pub hash: String,
    /// A URI naming the software; disco#info queries come for `<node>#<ver>`.
    pub node: String,
    /// The verification string.
    pub ver: String,
}

impl Caps {
    /// SHA-1 caps for an entity answering disco#info with `identities` and `features`.
    pub fn sha1(node: &str, identities: &[Identity], features: &[&str]) -> Self {
        Self {
            hash: SHA1.to_owned(),
            node: node.to_owned(),
            ver: verification_string(identities, features),
        }
    }

    /// The disco#info node a peer queries to learn what `ver` stands for.
    pub fn disco_node(&self) -> String {
        format!("{}#{}", self.node, self.ver)
    }
}

impl FromElement for Caps {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("c", ns::CAPS) {
            return Err(ParseError::NotMine(el));
        }
        Ok(Self {
            hash: required_attr(&el, "c", "hash")?.to_owned(),
            node: required_attr(&el, "c", "node")?.to_owned(),
            ver: required_attr(&el, "c", "ver")?.to_owned(),
        })
    }
}

impl IntoElement for Caps {
    fn into_element(self) -> Element {
        Element::new("c", ns::CAPS)
            .attr("hash", self.hash)
            .attr("node", self.node)
            .attr("ver", self.ver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{Malformed, malformed, parse_xml, reparse};

    fn exodus() -> (Vec<Identity>, Vec<&'static str>) {
        let identity = Identity {
            name: Some("Exodus 0.9.1".into()),
            ..Identity::new("client", "pc")
        };
        let features = vec![
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#items",
        ];
        (vec![identity], features)
    }

    #[test]
    fn xep_0115_simple_generation_example() {
        // XEP-0115 §5.2: features given out of order, so the sort is tested too.
        let (identities, features) = exodus();
        assert_eq!(
            verification_string(&identities, &features),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
        let mut doubled = features.clone();
        doubled.push("http://jabber.org/protocol/muc");
        assert_eq!(
            verification_string(&identities, &doubled),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }

    #[test]
    fn identities_are_sorted_and_lang_counts() {
        let a = Identity {
            name: Some("Psi 0.11".into()),
            lang: Some("en".into()),
            ..Identity::new("client", "pc")
        };
        let b = Identity {
            name: Some("Ψ 0.11".into()),
            lang: Some("el".into()),
            ..Identity::new("client", "pc")
        };
        let one = verification_string(&[a.clone(), b.clone()], &[ns::DISCO_INFO]);
        assert_eq!(one, verification_string(&[b, a.clone()], &[ns::DISCO_INFO]));
        assert_ne!(one, verification_string(&[a], &[ns::DISCO_INFO]));
    }

    #[test]
    fn parses_and_writes_c() {
        // XEP-0115 §4.1 (the presence child).
        let el = parse_xml(
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>",
        );
        let (identities, features) = exodus();
        let caps = Caps::sha1("http://code.google.com/p/exodus", &identities, &features);
        assert_eq!(Caps::from_element(el), Ok(caps.clone()));
        assert_eq!(
            caps.disco_node(),
            "http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0="
        );
        assert_eq!(
            Caps::from_element(reparse(&caps.clone().into_element())),
            Ok(caps)
        );
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<c xmlns='urn:example' hash='sha-1'/>");
        assert_eq!(Caps::from_element(el.clone()), Err(ParseError::NotMine(el)));
    }

    #[test]
    fn invalid_caps() {
        let cases = [
            (
                "<c xmlns='http://jabber.org/protocol/caps' node='n' ver='v'/>",
                Malformed::new("c", "hash", "is missing"),
            ),
            (
                "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' ver='v'/>",
                Malformed::new("c", "node", "is missing"),
            ),
            (
                "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n'/>",
                Malformed::new("c", "ver", "is missing"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(Caps::from_element(parse_xml(xml))), want, "{xml}");
        }
    }
}
