//! What a message stanza says beyond its body: replies (XEP-0461) with their fallback quote
//! (XEP-0428), corrections (XEP-0308), reactions (XEP-0444), retractions (XEP-0424), chat
//! markers (XEP-0333), delivery receipts (XEP-0184) and chat states (XEP-0085).
//!
//! Legacy OMEMO encrypts only the `<body>`: every one of these travels in the clear beside the
//! `<encrypted/>` element, as Conversations, Dino and Gajim send them. Parsing is lenient: a
//! malformed or oversized element is ignored, never an error, so one odd extension cannot cost
//! the message it rides on.

use std::ops::Range;

use super::ns;
use crate::xml::Element;

/// The longest message id accepted in a reference, in bytes.
const MAX_ID_BYTES: usize = 256;
/// Reactions accepted per stanza; the rest are dropped.
pub const MAX_REACTIONS: usize = 64;
/// The longest reaction accepted, in bytes.
pub const MAX_REACTION_BYTES: usize = 64;

/// The fallback text XEP-0424 suggests for clients that do not know retractions.
pub const RETRACTION_FALLBACK: &str =
    "This person attempted to retract a previous message, but it's unsupported by your client.";

/// XEP-0461: the message this one answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The JID of the answered message's author (optional in the XEP).
    pub to: Option<String>,
    /// The answered message's id.
    pub id: String,
}

/// XEP-0444: a sender's whole set of reactions to message `id` (empty: all taken back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reactions {
    pub id: String,
    pub emojis: Vec<String>,
}

/// XEP-0085 chat states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    Active,
    Composing,
    Paused,
    Inactive,
    Gone,
}

impl ChatState {
    const ALL: [(ChatState, &'static str); 5] = [
        (ChatState::Active, "active"),
        (ChatState::Composing, "composing"),
        (ChatState::Paused, "paused"),
        (ChatState::Inactive, "inactive"),
        (ChatState::Gone, "gone"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("active", |(_, name)| name)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

/// What a message stanza says beyond its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// XEP-0461 `<reply to=… id=…/>`.
    pub reply: Option<Reply>,
    /// XEP-0428: the characters (Unicode scalar values, as XEP-0426 counts) of the body that
    /// only quote the answered message.
    pub reply_fallback: Option<Range<usize>>,
    /// XEP-0308 `<replace id=…/>`: the id of the message corrected.
    pub replace: Option<String>,
    /// XEP-0444 `<reactions id=…>`.
    pub reactions: Option<Reactions>,
    /// XEP-0424: the id of the message retracted (`urn:xmpp:message-retract:1`, or the older
    /// `:0` inside XEP-0422 `<apply-to/>`).
    pub retract: Option<String>,
    /// XEP-0085.
    pub chat_state: Option<ChatState>,
    /// XEP-0333 `<markable/>`: the sender wants to know when it is displayed.
    pub markable: bool,
    /// XEP-0333 `<displayed id=…/>`.
    pub displayed: Option<String>,
    /// XEP-0184 `<request/>`.
    pub request_receipt: bool,
    /// XEP-0184 `<received id=…/>`.
    pub received: Option<String>,
}

/// An id attribute, if present, not empty and not too long.
fn id_of(el: &Element, attr: &str) -> Option<String> {
    el.get_attr(attr)
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
        .map(str::to_owned)
}

/// A non-negative integer attribute.
fn number_of(el: &Element, attr: &str) -> Option<usize> {
    el.get_attr(attr)?.trim().parse().ok()
}

impl Extensions {
    /// The extensions among a stanza's payloads (its child elements other than the body).
    pub fn from_payloads(payloads: &[Element]) -> Self {
        let mut ext = Extensions::default();
        for el in payloads {
            match el.ns() {
                ns::REPLY if el.name() == "reply" => {
                    ext.reply = id_of(el, "id").map(|id| Reply {
                        to: el.get_attr("to").map(str::to_owned),
                        id,
                    });
                }
                ns::FALLBACK
                    if el.name() == "fallback" && el.get_attr("for") == Some(ns::REPLY) =>
                {
                    ext.reply_fallback = el
                        .get_child("body", ns::FALLBACK)
                        .and_then(|b| Some(number_of(b, "start")?..number_of(b, "end")?))
                        .filter(|r| r.start < r.end);
                }
                ns::CORRECT if el.name() == "replace" => ext.replace = id_of(el, "id"),
                ns::REACTIONS if el.name() == "reactions" => {
                    if let Some(id) = id_of(el, "id") {
                        let mut emojis: Vec<String> = Vec::new();
                        for r in el.children().filter(|c| c.is("reaction", ns::REACTIONS)) {
                            let text = r.text_content();
                            let text = text.trim();
                            if !text.is_empty()
                                && text.len() <= MAX_REACTION_BYTES
                                && !emojis.iter().any(|e| e == text)
                                && emojis.len() < MAX_REACTIONS
                            {
                                emojis.push(text.to_owned());
                            }
                        }
                        ext.reactions = Some(Reactions { id, emojis });
                    }
                }
                ns::RETRACT if el.name() == "retract" => ext.retract = id_of(el, "id"),
                ns::FASTEN
                    if el.name() == "apply-to"
                        && el.get_child("retract", ns::RETRACT_0).is_some() =>
                {
                    ext.retract = id_of(el, "id");
                }
                ns::CHAT_STATES => {
                    if let Some(state) = ChatState::from_name(el.name()) {
                        ext.chat_state = Some(state);
                    }
                }
                ns::CHAT_MARKERS => match el.name() {
                    "markable" => ext.markable = true,
                    "displayed" => ext.displayed = id_of(el, "id"),
                    _ => {}
                },
                ns::RECEIPTS => match el.name() {
                    "request" => ext.request_receipt = true,
                    "received" => ext.received = id_of(el, "id"),
                    _ => {}
                },
                _ => {}
            }
        }
        ext
    }

    /// The wire form, in a fixed order.
    pub fn to_elements(&self) -> Vec<Element> {
        let mut out = Vec::new();
        if let Some(reply) = &self.reply {
            out.push(
                Element::new("reply", ns::REPLY)
                    .attr_opt("to", reply.to.clone())
                    .attr("id", reply.id.clone()),
            );
        }
        if let Some(range) = &self.reply_fallback {
            out.push(
                Element::new("fallback", ns::FALLBACK)
                    .attr("for", ns::REPLY)
                    .child(
                        Element::new("body", ns::FALLBACK)
                            .attr("start", range.start.to_string())
                            .attr("end", range.end.to_string()),
                    ),
            );
        }
        if let Some(id) = &self.replace {
            out.push(Element::new("replace", ns::CORRECT).attr("id", id.clone()));
        }
        if let Some(reactions) = &self.reactions {
            let mut el = Element::new("reactions", ns::REACTIONS).attr("id", reactions.id.clone());
            for emoji in &reactions.emojis {
                el = el.child(Element::new("reaction", ns::REACTIONS).text(emoji.clone()));
            }
            out.push(el);
        }
        if let Some(id) = &self.retract {
            out.push(Element::new("retract", ns::RETRACT).attr("id", id.clone()));
            out.push(Element::new("fallback", ns::FALLBACK).attr("for", ns::RETRACT));
        }
        if let Some(state) = self.chat_state {
            out.push(Element::new(state.as_str(), ns::CHAT_STATES));
        }
        if self.markable {
            out.push(Element::new("markable", ns::CHAT_MARKERS));
        }
        if let Some(id) = &self.displayed {
            out.push(Element::new("displayed", ns::CHAT_MARKERS).attr("id", id.clone()));
        }
        if self.request_receipt {
            out.push(Element::new("request", ns::RECEIPTS));
        }
        if let Some(id) = &self.received {
            out.push(Element::new("received", ns::RECEIPTS).attr("id", id.clone()));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        *self == Extensions::default()
    }

    /// Whether the stanza is about other messages rather than a message of its own: a
    /// reaction or a retraction (their `<body>`, if any, is only a fallback text).
    pub fn replaces_body(&self) -> bool {
        self.reactions.is_some() || self.retract.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::parse_xml;

    /// The payloads of a `<message/>` written as XML (its children other than `<body/>`).
    fn payloads(xml: &str) -> Vec<Element> {
        let el = parse_xml(xml);
        el.children()
            .filter(|c| c.name() != "body")
            .cloned()
            .collect()
    }

    #[test]
    fn a_reply_as_conversations_sends_it() {
        let ext = Extensions::from_payloads(&payloads(
            "<message xmlns='jabber:client' to='alice@x' type='chat'>\
               <body>&gt; first\nanswer</body>\
               <reply xmlns='urn:xmpp:reply:0' to='alice@x/phone' id='m-1'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='8'/></fallback>\
               <markable xmlns='urn:xmpp:chat-markers:0'/>\
               <request xmlns='urn:xmpp:receipts'/>\
               <active xmlns='http://jabber.org/protocol/chatstates'/>\
             </message>",
        ));
        assert_eq!(
            ext.reply,
            Some(Reply {
                to: Some("alice@x/phone".into()),
                id: "m-1".into()
            })
        );
        assert_eq!(ext.reply_fallback, Some(0..8));
        assert!(ext.markable && ext.request_receipt);
        assert_eq!(ext.chat_state, Some(ChatState::Active));
        assert!(!ext.replaces_body());
    }

    #[test]
    fn corrections_reactions_retractions_markers_and_receipts() {
        let ext = Extensions::from_payloads(&payloads(
            "<message xmlns='jabber:client'>\
               <replace xmlns='urn:xmpp:message-correct:0' id='first'/>\
               <reactions xmlns='urn:xmpp:reactions:0' id='m-2'>\
                 <reaction>👍</reaction><reaction>👍</reaction><reaction> </reaction><reaction>❤️</reaction>\
               </reactions>\
               <displayed xmlns='urn:xmpp:chat-markers:0' id='m-3'/>\
               <received xmlns='urn:xmpp:receipts' id='m-4'/>\
             </message>",
        ));
        assert_eq!(ext.replace.as_deref(), Some("first"));
        assert_eq!(
            ext.reactions,
            Some(Reactions {
                id: "m-2".into(),
                emojis: vec!["👍".into(), "❤️".into()]
            })
        );
        assert_eq!(ext.displayed.as_deref(), Some("m-3"));
        assert_eq!(ext.received.as_deref(), Some("m-4"));
        assert!(ext.replaces_body());

        let v1 = Extensions::from_payloads(&payloads(
            "<message xmlns='jabber:client'><body>fallback</body>\
               <retract xmlns='urn:xmpp:message-retract:1' id='m-5'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
               <store xmlns='urn:xmpp:hints'/></message>",
        ));
        assert_eq!(v1.retract.as_deref(), Some("m-5"));
        assert_eq!(v1.reply_fallback, None);
        let v0 = Extensions::from_payloads(&payloads(
            "<message xmlns='jabber:client'>\
               <apply-to xmlns='urn:xmpp:fasten:0' id='m-6'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to>\
             </message>",
        ));
        assert_eq!(v0.retract.as_deref(), Some("m-6"));
    }

    #[test]
    fn malformed_or_oversized_extensions_are_ignored() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let ext = Extensions::from_payloads(&payloads(&format!(
            "<message xmlns='jabber:client'>\
               <reply xmlns='urn:xmpp:reply:0'/>\
               <replace xmlns='urn:xmpp:message-correct:0' id='{long}'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='9' end='2'/></fallback>\
               <reactions xmlns='urn:xmpp:reactions:0'><reaction>👍</reaction></reactions>\
               <typing xmlns='http://jabber.org/protocol/chatstates'/>\
             </message>"
        )));
        assert!(ext.is_empty(), "{ext:?}");
        let many: String = (0..200)
            .map(|i| format!("<reaction>{i}</reaction>"))
            .collect();
        let ext = Extensions::from_payloads(&payloads(&format!(
            "<message xmlns='jabber:client'><reactions xmlns='urn:xmpp:reactions:0' id='m'>{many}\
               <reaction>{}</reaction></reactions></message>",
            "y".repeat(MAX_REACTION_BYTES + 1)
        )));
        assert_eq!(
            ext.reactions.expect("reactions").emojis.len(),
            MAX_REACTIONS
        );
    }

    #[test]
    fn what_is_written_is_read_back() {
        let all = Extensions {
            reply: Some(Reply {
                to: Some("bob@x".into()),
                id: "b1".into(),
            }),
            reply_fallback: Some(0..12),
            replace: Some("o1".into()),
            reactions: Some(Reactions {
                id: "r1".into(),
                emojis: vec!["🎉".into()],
            }),
            retract: Some("x1".into()),
            chat_state: Some(ChatState::Composing),
            markable: true,
            displayed: Some("d1".into()),
            request_receipt: true,
            received: Some("c1".into()),
        };
        assert_eq!(Extensions::from_payloads(&all.to_elements()), all);
        let empty = Extensions::default();
        assert!(empty.to_elements().is_empty());
    }
}
