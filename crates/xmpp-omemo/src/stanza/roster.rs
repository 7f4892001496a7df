//! RFC 6121 §2: Roster management — the `<query xmlns='jabber:iq:roster'/>` payload of roster
//! gets, results and pushes.

use std::fmt;

use super::{FromElement, IntoElement, Malformed, ParseError, ns, required_jid_attr};
use crate::jid::Jid;
use crate::xml::Element;

/// RFC 6121 §2.1.2.5: who sees whose presence. `Remove` appears only in a set or a push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
    Remove,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
            Subscription::Remove => "remove",
        }
    }

    fn from_attr(value: Option<&str>) -> Result<Self, Malformed> {
        Ok(match value {
            None | Some("none") => Subscription::None,
            Some("to") => Subscription::To,
            Some("from") => Subscription::From,
            Some("both") => Subscription::Both,
            Some("remove") => Subscription::Remove,
            Some(_) => {
                return Err(Malformed::new(
                    "item",
                    "subscription",
                    "is not none, to, from, both or remove",
                ));
            }
        })
    }
}

/// One contact. Unknown children of `<item/>` are ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: Jid,
    /// The handle the user gave the contact. Never log it.
    pub name: Option<String>,
    pub subscription: Subscription,
    /// `ask='subscribe'`: our subscription request is pending.
    pub ask_subscribe: bool,
    /// Group names, in order. Never log them.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// An item with just a JID (`subscription='none'`), as in a roster set that adds a contact.
    pub fn new(jid: Jid) -> Self {
        Self {
            jid,
            name: None,
            subscription: Subscription::None,
            ask_subscribe: false,
            groups: Vec::new(),
        }
    }

    fn parse(el: &Element) -> Result<Self, Malformed> {
        let jid = required_jid_attr(el, "item", "jid")?;
        let name = el.get_attr("name").map(str::to_owned);
        let subscription = Subscription::from_attr(el.get_attr("subscription"))?;
        let ask_subscribe = match el.get_attr("ask") {
            None => false,
            Some("subscribe") => true,
            Some(_) => return Err(Malformed::new("item", "ask", "is not subscribe")),
        };
        let mut groups = Vec::new();
        for g in el.children().filter(|c| c.is("group", ns::ROSTER)) {
            let group = g.text_content();
            if group.is_empty() {
                return Err(Malformed::new("item", "group", "is empty"));
            }
            groups.push(group);
        }
        Ok(Self {
            jid,
            name,
            subscription,
            ask_subscribe,
            groups,
        })
    }

    /// `subscription='none'` is left out: it is the default, and a roster set may carry only
    /// `remove`.
    fn into_element(self) -> Element {
        let mut el = Element::new("item", ns::ROSTER)
            .attr("jid", self.jid.as_str())
            .attr_opt("name", self.name)
            .attr_opt(
                "subscription",
                (self.subscription != Subscription::None).then_some(self.subscription.as_str()),
            )
            .attr_opt("ask", self.ask_subscribe.then_some("subscribe"));
        for g in self.groups {
            el.push_child(Element::new("group", ns::ROSTER).text(g));
        }
        el
    }
}

/// Shows the lengths of the name and the number of groups only.
impl fmt::Debug for RosterItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RosterItem")
            .field("jid", &self.jid)
            .field(
                "name",
                &self.name.as_ref().map(|n| format!("{} bytes", n.len())),
            )
            .field("subscription", &self.subscription)
            .field("ask_subscribe", &self.ask_subscribe)
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// The roster `<query/>`. Empty with no `ver` is the get request; with `ver` it asks for
/// versioning (RFC 6121 §2.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterQuery {
    pub ver: Option<String>,
    pub items: Vec<RosterItem>,
}

impl RosterQuery {
    /// The payload of a roster get.
    pub fn request(ver: Option<String>) -> Self {
        Self {
            ver,
            items: Vec::new(),
        }
    }
}

impl FromElement for RosterQuery {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("query", ns::ROSTER) {
            return Err(ParseError::NotMine(el));
        }
        let ver = el.get_attr("ver").map(str::to_owned);
        let items = el
            .children()
            .filter(|c| c.is("item", ns::ROSTER))
            .map(RosterItem::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { ver, items })
    }
}

impl IntoElement for RosterQuery {
    fn into_element(self) -> Element {
        let mut el = Element::new("query", ns::ROSTER).attr_opt("ver", self.ver);
        for item in self.items {
            el.push_child(item.into_element());
        }
        el
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn parse(xml: &str) -> Result<RosterQuery, ParseError> {
        RosterQuery::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_rfc_6121_roster_result() {
        // RFC 6121 §2.1.4, with a pending request and an unknown child.
        let q = parse(
            "<query xmlns='jabber:iq:roster' ver='ver11'>\
               <item jid='romeo@example.net' name='Romeo' subscription='both'><group>Friends</group></item>\
               <item jid='mercutio@example.com' name='Mercutio' subscription='from'/>\
               <item jid='benvolio@example.net' ask='subscribe'><group>Friends</group><group>Verona</group><x xmlns='urn:example'/></item>\
             </query>",
        )
        .expect("valid");
        assert_eq!(
            q,
            RosterQuery {
                ver: Some("ver11".into()),
                items: vec![
                    RosterItem {
                        name: Some("Romeo".into()),
                        subscription: Subscription::Both,
                        groups: vec!["Friends".into()],
                        ..RosterItem::new(jid("romeo@example.net"))
                    },
                    RosterItem {
                        name: Some("Mercutio".into()),
                        subscription: Subscription::From,
                        ..RosterItem::new(jid("mercutio@example.com"))
                    },
                    RosterItem {
                        ask_subscribe: true,
                        groups: vec!["Friends".into(), "Verona".into()],
                        ..RosterItem::new(jid("benvolio@example.net"))
                    },
                ],
            }
        );
    }

    #[test]
    fn request_and_push() {
        assert_eq!(
            parse("<query xmlns='jabber:iq:roster'/>").expect("valid"),
            RosterQuery::request(None)
        );
        let push = parse("<query xmlns='jabber:iq:roster' ver='ver34'><item jid='nurse@example.com' subscription='remove'/></query>").expect("valid");
        assert_eq!(
            push.items,
            vec![RosterItem {
                subscription: Subscription::Remove,
                ..RosterItem::new(jid("nurse@example.com"))
            }]
        );
    }

    #[test]
    fn round_trip() {
        let q = RosterQuery {
            ver: Some("v1".into()),
            items: vec![
                RosterItem {
                    name: Some("Juliet".into()),
                    subscription: Subscription::To,
                    ask_subscribe: true,
                    groups: vec!["Capulets".into()],
                    ..RosterItem::new(jid("juliet@example.com"))
                },
                RosterItem::new(jid("example.org")),
            ],
        };
        let el = q.clone().into_element();
        assert!(el.is("query", ns::ROSTER));
        assert_eq!(RosterQuery::from_element(reparse(&el)), Ok(q));
        assert_eq!(
            RosterQuery::from_element(reparse(&RosterQuery::default().into_element())),
            Ok(RosterQuery::default())
        );
    }

    #[test]
    fn debug_hides_names_and_groups() {
        let item = RosterItem {
            name: Some("Nurse".into()),
            groups: vec!["Household".into()],
            ..RosterItem::new(jid("nurse@example.com"))
        };
        let shown = format!("{item:?}");
        assert!(
            !shown.contains("Nurse") && !shown.contains("Household"),
            "{shown}"
        );
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<query xmlns='jabber:iq:register'/>");
        assert_eq!(
            RosterQuery::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_rosters() {
        let q = |item: &str| format!("<query xmlns='jabber:iq:roster'>{item}</query>");
        let cases = [
            (
                q("<item name='x'/>"),
                Malformed::new("item", "jid", "is missing"),
            ),
            (
                q("<item jid='a@b@c'/>"),
                Malformed::new("item", "jid", "is not a valid JID"),
            ),
            (
                q("<item jid='a@b' subscription='all'/>"),
                Malformed::new(
                    "item",
                    "subscription",
                    "is not none, to, from, both or remove",
                ),
            ),
            (
                q("<item jid='a@b' ask='unsubscribe'/>"),
                Malformed::new("item", "ask", "is not subscribe"),
            ),
            (
                q("<item jid='a@b'><group/></item>"),
                Malformed::new("item", "group", "is empty"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(&xml)), want, "{xml}");
        }
    }
}
