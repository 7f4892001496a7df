//! XEP-0172: User Nickname <https://xmpp.org/extensions/xep-0172.html>
//!
//! `<nick xmlns='http://jabber.org/protocol/nick'>` is the name a user asserts for themselves.
//! It rides on presence subscription requests and on a first message, outside any encryption,
//! and anyone can claim any nick: show it next to the JID, never instead of it.

use std::fmt;

use super::{FromElement, IntoElement, Malformed, ParseError, ns};
use crate::xml::Element;

/// The longest nick we accept, in characters, after trimming.
pub const MAX_CHARS: usize = 256;

/// A nickname: trimmed, not empty, at most [`MAX_CHARS`] characters, no control characters.
/// Written by the user: `Debug` shows its length only; never log it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nick(String);

impl Nick {
    /// Checks and trims `text`.
    pub fn new(text: &str) -> Result<Self, Malformed> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Malformed::new("nick", "text", "is empty"));
        }
        if text.chars().count() > MAX_CHARS {
            return Err(Malformed::new(
                "nick",
                "text",
                "is longer than 256 characters",
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(Malformed::new(
                "nick",
                "text",
                "contains control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The first `<nick/>` among a stanza's `payloads`, if there is one.
    pub fn find(payloads: &[Element]) -> Option<Result<Nick, Malformed>> {
        let el = payloads.iter().find(|p| p.is("nick", ns::NICK))?;
        Some(Nick::new(&el.text_content()))
    }
}

impl fmt::Debug for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nick({} bytes)", self.0.len())
    }
}

impl FromElement for Nick {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("nick", ns::NICK) {
            return Err(ParseError::NotMine(el));
        }
        Ok(Nick::new(&el.text_content())?)
    }
}

impl IntoElement for Nick {
    fn into_element(self) -> Element {
        Element::new("nick", ns::NICK).text(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{Presence, malformed, parse_xml, reparse};

    fn parse(xml: &str) -> Result<Nick, ParseError> {
        Nick::from_element(parse_xml(xml))
    }

    #[test]
    fn parses_xep_0172_subscription_request() {
        // XEP-0172 §4.1.
        let presence = Presence::from_element(parse_xml(
            "<presence from='narrator@moby-dick.lit' to='starbuck@moby-dick.lit' type='subscribe'>\
               <nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>\
             </presence>",
        ))
        .expect("valid");
        let nick = Nick::find(&presence.payloads)
            .expect("a nick")
            .expect("valid");
        assert_eq!(nick.as_str(), "Ishmael");
        assert_eq!(Nick::find(&[]), None);
    }

    #[test]
    fn trims_and_keeps_inner_spaces_and_unicode() {
        let xml = "<nick xmlns='http://jabber.org/protocol/nick'>\n  Call me Ishmaël 🐋 \t</nick>";
        assert_eq!(
            parse(xml).expect("valid").into_string(),
            "Call me Ishmaël 🐋"
        );
        let longest = "ü".repeat(MAX_CHARS);
        assert_eq!(
            Nick::new(&format!(" {longest} "))
                .expect("256 characters")
                .as_str(),
            longest
        );
    }

    #[test]
    fn round_trip() {
        let nick = Nick::new("Starbuck").expect("valid");
        let el = nick.clone().into_element();
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<nick xmlns='http://jabber.org/protocol/nick'>Starbuck</nick>"
        );
        assert_eq!(Nick::from_element(reparse(&el)), Ok(nick));
    }

    #[test]
    fn debug_hides_the_nick() {
        let shown = format!("{:?}", Nick::new("Queequeg").expect("valid"));
        assert!(!shown.contains("Queequeg"), "{shown}");
        assert!(shown.contains("8 bytes"), "{shown}");
    }

    #[test]
    fn not_mine() {
        for xml in [
            "<nick xmlns='urn:example'>x</nick>",
            "<name xmlns='http://jabber.org/protocol/nick'/>",
        ] {
            let el = parse_xml(xml);
            assert_eq!(Nick::from_element(el.clone()), Err(ParseError::NotMine(el)));
        }
    }

    #[test]
    fn invalid_nicks() {
        let nick =
            |text: &str| format!("<nick xmlns='http://jabber.org/protocol/nick'>{text}</nick>");
        let too_long = "a".repeat(MAX_CHARS + 1);
        let cases = [
            (nick(""), Malformed::new("nick", "text", "is empty")),
            (nick(" \n\t "), Malformed::new("nick", "text", "is empty")),
            (
                nick(&too_long),
                Malformed::new("nick", "text", "is longer than 256 characters"),
            ),
            (
                nick("two\nlines"),
                Malformed::new("nick", "text", "contains control characters"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(malformed(parse(&xml)), want, "{xml}");
        }
        assert_eq!(
            Nick::new("Ish\u{1b}[31mmael"),
            Err(Malformed::new(
                "nick",
                "text",
                "contains control characters"
            ))
        );
        let payloads = [parse_xml(&nick(""))];
        assert_eq!(
            Nick::find(&payloads),
            Some(Err(Malformed::new("nick", "text", "is empty")))
        );
    }
}
