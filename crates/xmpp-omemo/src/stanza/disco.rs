//! XEP-0030: Service Discovery, the disco#info and disco#items queries
//! <https://xmpp.org/extensions/xep-0030.html>

use super::{
    FromElement, IntoElement, Malformed, ParseError, ns, required_attr, required_jid_attr,
};
use crate::jid::Jid;
use crate::xml::Element;

/// One `<identity/>`: what kind of entity this is (`client`/`phone`, `server`/`im` …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub category: String,
    /// The `type` attribute.
    pub kind: String,
    pub name: Option<String>,
    /// `xml:lang` of `name`.
    pub lang: Option<String>,
}

impl Identity {
    pub fn new(category: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            category: category.into(),
            kind: kind.into(),
            name: None,
            lang: None,
        }
    }

    fn parse(el: &Element) -> Result<Self, Malformed> {
        Ok(Self {
            category: required_attr(el, "identity", "category")?.to_owned(),
            kind: required_attr(el, "identity", "type")?.to_owned(),
            name: el.get_attr("name").map(str::to_owned),
            lang: el.get_attr("xml:lang").map(str::to_owned),
        })
    }

    fn into_element(self) -> Element {
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", self.category)
            .attr("type", self.kind)
            .attr_opt("name", self.name)
            .attr_opt("xml:lang", self.lang)
    }
}

/// The disco#info `<query/>`. With no identities and features it is the request; a response
/// has at least one identity. Extended info (XEP-0128 data forms) is kept in `extensions`, as
/// XEP-0115 caps hashes cover it; other unknown children are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoInfo {
    pub node: Option<String>,
    pub identities: Vec<Identity>,
    /// The `var` of each `<feature/>`, in order.
    pub features: Vec<String>,
    /// `<x xmlns='jabber:x:data'/>` children, in order.
    pub extensions: Vec<Element>,
}

impl DiscoInfo {
    /// The request payload, for the entity itself or one of its nodes.
    pub fn request(node: Option<String>) -> Self {
        Self {
            node,
            ..Self::default()
        }
    }

    pub fn is_request(&self) -> bool {
        self.identities.is_empty() && self.features.is_empty() && self.extensions.is_empty()
    }

    pub fn has_feature(&self, var: &str) -> bool {
        self.features.iter().any(|f| f == var)
    }
}

impl FromElement for DiscoInfo {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("query", ns::DISCO_INFO) {
            return Err(ParseError::NotMine(el));
        }
        let mut info = DiscoInfo {
            node: el.get_attr("node").map(str::to_owned),
            ..DiscoInfo::default()
        };
        for child in el.children() {
            if child.is("identity", ns::DISCO_INFO) {
                info.identities.push(Identity::parse(child)?);
            } else if child.is("feature", ns::DISCO_INFO) {
                info.features
                    .push(required_attr(child, "feature", "var")?.to_owned());
            } else if child.is("x", ns::DATA_FORMS) {
                info.extensions.push(child.clone());
            }
        }
        Ok(info)
    }
}

impl IntoElement for DiscoInfo {
    fn into_element(self) -> Element {
        let mut el = Element::new("query", ns::DISCO_INFO).attr_opt("node", self.node);
        for identity in self.identities {
            el.push_child(identity.into_element());
        }
        for var in self.features {
            el.push_child(Element::new("feature", ns::DISCO_INFO).attr("var", var));
        }
        for x in self.extensions {
            el.push_child(x);
        }
        el
    }
}

/// One `<item/>` of a disco#items answer: an entity (a server's components, say), or one of
/// its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoItem {
    pub jid: Jid,
    pub node: Option<String>,
    pub name: Option<String>,
}

impl DiscoItem {
    pub fn new(jid: Jid) -> Self {
        Self {
            jid,
            node: None,
            name: None,
        }
    }
}

/// The disco#items `<query/>`: without items the request, else the answer. Unknown children
/// are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoItems {
    pub node: Option<String>,
    pub items: Vec<DiscoItem>,
}

impl DiscoItems {
    /// The request payload, for the entity itself or one of its nodes.
    pub fn request(node: Option<String>) -> Self {
        Self {
            node,
            items: Vec::new(),
        }
    }
}

impl FromElement for DiscoItems {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("query", ns::DISCO_ITEMS) {
            return Err(ParseError::NotMine(el));
        }
        let mut items = Vec::new();
        for child in el.children().filter(|c| c.is("item", ns::DISCO_ITEMS)) {
            items.push(DiscoItem {
                jid: required_jid_attr(child, "item", "jid")?,
                node: child.get_attr("node").map(str::to_owned),
                name: child.get_attr("name").map(str::to_owned),
            });
        }
        Ok(DiscoItems {
            node: el.get_attr("node").map(str::to_owned),
            items,
        })
    }
}

impl IntoElement for DiscoItems {
    fn into_element(self) -> Element {
        let mut el = Element::new("query", ns::DISCO_ITEMS).attr_opt("node", self.node);
        for item in self.items {
            el.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .attr("jid", item.jid.as_str())
                    .attr_opt("node", item.node)
                    .attr_opt("name", item.name),
            );
        }
        el
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml, reparse};

    fn parse(xml: &str) -> Result<DiscoInfo, ParseError> {
        DiscoInfo::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_xep_0030_response() {
        // XEP-0030 §3.1, shortened, with extended info and an unknown child.
        let info = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='conference' type='text' name='Play-Specific Chatrooms'/>\
               <identity category='directory' type='chatroom' name='Verzeichnis' xml:lang='de'/>\
               <feature var='http://jabber.org/protocol/disco#info'/>\
               <feature var='http://jabber.org/protocol/muc'/>\
               <x xmlns='jabber:x:data' type='result'/>\
               <unknown xmlns='urn:example'/>\
             </query>",
        )
        .expect("valid");
        assert_eq!(
            info,
            DiscoInfo {
                node: None,
                identities: vec![
                    Identity {
                        name: Some("Play-Specific Chatrooms".into()),
                        ..Identity::new("conference", "text")
                    },
                    Identity {
                        name: Some("Verzeichnis".into()),
                        lang: Some("de".into()),
                        ..Identity::new("directory", "chatroom")
                    },
                ],
                features: vec![
                    ns::DISCO_INFO.into(),
                    "http://jabber.org/protocol/muc".into()
                ],
                extensions: vec![Element::new("x", ns::DATA_FORMS).attr("type", "result")],
            }
        );
        assert!(info.has_feature("http://jabber.org/protocol/muc"));
        assert!(!info.has_feature("urn:xmpp:carbons:2"));
        assert!(!info.is_request());
    }

    #[test]
    fn empty_query_is_the_request() {
        let req = parse("<query xmlns='http://jabber.org/protocol/disco#info' node='http://jabber.org/protocol/commands'/>").expect("valid");
        assert_eq!(
            req,
            DiscoInfo::request(Some("http://jabber.org/protocol/commands".into()))
        );
        assert!(req.is_request());
    }

    #[test]
    fn round_trip() {
        let info = DiscoInfo {
            node: Some("https://example.org/bridge#abc=".into()),
            identities: vec![Identity {
                name: Some("Bridge".into()),
                lang: Some("en".into()),
                ..Identity::new("client", "bot")
            }],
            features: vec![ns::DISCO_INFO.into(), ns::PING.into()],
            extensions: vec![Element::new("x", ns::DATA_FORMS).attr("type", "result")],
        };
        assert_eq!(
            DiscoInfo::from_element(reparse(&info.clone().into_element())),
            Ok(info)
        );
        assert_eq!(
            DiscoInfo::from_element(reparse(&DiscoInfo::request(None).into_element())),
            Ok(DiscoInfo::request(None))
        );
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<query xmlns='http://jabber.org/protocol/disco#items'/>");
        assert_eq!(
            DiscoInfo::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_disco_info() {
        let q = |body: &str| {
            format!("<query xmlns='http://jabber.org/protocol/disco#info'>{body}</query>")
        };
        let cases = [
            (
                q("<identity type='pc'/>"),
                Malformed::new("identity", "category", "is missing"),
            ),
            (
                q("<identity category='client'/>"),
                Malformed::new("identity", "type", "is missing"),
            ),
            (
                q("<feature/>"),
                Malformed::new("feature", "var", "is missing"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(&xml)), want, "{xml}");
        }
    }

    #[test]
    fn parses_xep_0030_items() {
        // XEP-0030 §4.2, shortened, with an unknown child.
        let items = DiscoItems::from_element(parse_xml(
            "<query xmlns='http://jabber.org/protocol/disco#items'>\
               <item jid='people.shakespeare.lit' name='Directory of Characters'/>\
               <item jid='plays.shakespeare.lit'/>\
               <item jid='shakespeare.lit' node='books' name='Books by and about Shakespeare'/>\
               <unknown xmlns='urn:example'/>\
             </query>",
        ))
        .expect("valid");
        let jid = |s: &str| Jid::parse(s).expect("a JID");
        assert_eq!(
            items,
            DiscoItems {
                node: None,
                items: vec![
                    DiscoItem {
                        name: Some("Directory of Characters".into()),
                        ..DiscoItem::new(jid("people.shakespeare.lit"))
                    },
                    DiscoItem::new(jid("plays.shakespeare.lit")),
                    DiscoItem {
                        node: Some("books".into()),
                        name: Some("Books by and about Shakespeare".into()),
                        ..DiscoItem::new(jid("shakespeare.lit"))
                    },
                ],
            }
        );
        assert_eq!(
            DiscoItems::from_element(reparse(&items.clone().into_element())),
            Ok(items)
        );
        assert_eq!(
            DiscoItems::from_element(reparse(&DiscoItems::request(None).into_element())),
            Ok(DiscoItems::request(None))
        );
    }

    #[test]
    fn invalid_disco_items() {
        let q = |body: &str| {
            format!("<query xmlns='http://jabber.org/protocol/disco#items'>{body}</query>")
        };
        for (xml, want) in [
            (
                q("<item name='x'/>"),
                Malformed::new("item", "jid", "is missing"),
            ),
            (
                q("<item jid='a@b@c'/>"),
                Malformed::new("item", "jid", "is not a valid JID"),
            ),
        ] {
            assert_eq!(
                malformed(DiscoItems::from_element(parse_xml(&xml))),
                want,
                "{xml}"
            );
        }
        let info = parse_xml("<query xmlns='http://jabber.org/protocol/disco#info'/>");
        assert_eq!(
            DiscoItems::from_element(info.clone()),
            Err(ParseError::NotMine(info))
        );
    }
}
