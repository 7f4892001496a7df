//! What a message stanza says beyond its body: replies (XEP-0461) with their fallback quote
//! (XEP-0428), corrections (XEP-0308), reactions (XEP-0444), retractions (XEP-0424), chat
//! markers (XEP-0333), delivery receipts (XEP-0184), chat states (XEP-0085) and a file's URL
//! (XEP-0066 out-of-band data).
//!
//! Legacy OMEMO encrypts only the `<body>`: every one of these travels in the clear beside the
//! `<encrypted/>` element, as Conversations, Dino and Gajim send them. Parsing is lenient: a
//! malformed or oversized element is ignored, never an error, so one odd extension cannot cost
//! the message it rides on. Of several elements of one kind, the first valid one counts.

use std::fmt;
use std::ops::Range;

use super::ns;
use super::upload::UrlOrigin;
use crate::jid::Jid;
use crate::xml::Element;

/// The longest message id accepted in a reference, in bytes (ids are UUIDs in practice).
pub const MAX_ID_BYTES: usize = 256;
/// Reactions accepted per `<reactions/>`; the rest are dropped.
pub const MAX_REACTIONS: usize = 64;
/// The longest reaction accepted, in bytes (a long ZWJ emoji sequence is some 35).
pub const MAX_REACTION_BYTES: usize = 64;
/// The longest out-of-band URL accepted, in bytes (an upload slot's URL of up to 2 KiB, with an
/// `aesgcm://` key in its fragment, fits).
pub const MAX_OOB_URL_BYTES: usize = 4096;

/// The fallback body XEP-0424 suggests for clients that do not know retractions.
pub const RETRACTION_FALLBACK: &str =
    "This person attempted to retract a previous message, but it's unsupported by your client.";

/// XEP-0461: the message this one answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The JID (full or bare) of the answered message's author; optional in the XEP. A `to`
    /// that is not a JID is dropped, the reply kept.
    pub to: Option<String>,
    /// The answered message's id.
    pub id: String,
}

/// XEP-0444: a sender's whole set of reactions to message `id` (empty: all taken back).
#[derive(Clone, PartialEq, Eq)]
pub struct Reactions {
    pub id: String,
    /// Trimmed, deduplicated, in the sender's order; at most [`MAX_REACTIONS`].
    pub emojis: Vec<String>,
}

/// Reactions are what the sender wrote: `Debug` shows how many, not which.
impl fmt::Debug for Reactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactions")
            .field("id", &self.id)
            .field("count", &self.emojis.len())
            .finish()
    }
}

/// XEP-0085 chat states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatState {
    Active,
    Composing,
    Paused,
    Inactive,
    Gone,
}

impl ChatState {
    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Active => "active",
            ChatState::Composing => "composing",
            ChatState::Paused => "paused",
            ChatState::Inactive => "inactive",
            ChatState::Gone => "gone",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(ChatState::Active),
            "composing" => Some(ChatState::Composing),
            "paused" => Some(ChatState::Paused),
            "inactive" => Some(ChatState::Inactive),
            "gone" => Some(ChatState::Gone),
            _ => None,
        }
    }
}

/// What a message stanza says beyond its body. `Debug` shows no reaction and only the scheme
/// and host of [`oob_url`](Self::oob_url).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// XEP-0461 `<reply xmlns='urn:xmpp:reply:0' to='…' id='…'/>`.
    pub reply: Option<Reply>,
    /// XEP-0428 `<fallback for='urn:xmpp:reply:0'><body start='0' end='N'/></fallback>`: the
    /// part of the body that only quotes the answered message, in characters (Unicode scalar
    /// values, as XEP-0426 counts). See [`strip_fallback`].
    pub reply_fallback: Option<Range<usize>>,
    /// XEP-0308 `<replace id='…'/>`: the id of the message this one corrects.
    pub replace: Option<String>,
    /// XEP-0444 `<reactions id='…'>`: the sender's whole set of reactions to a message.
    pub reactions: Option<Reactions>,
    /// XEP-0424: the id of the message retracted (`urn:xmpp:message-retract:1`, or the older
    /// `:0` inside XEP-0422 `<apply-to/>`).
    pub retract: Option<String>,
    /// XEP-0085.
    pub chat_state: Option<ChatState>,
    /// XEP-0333 `<markable/>`: the sender wants to know when it is displayed.
    pub markable: bool,
    /// XEP-0333 `<displayed id='…'/>`: the sender has seen messages up to this one.
    pub displayed: Option<String>,
    /// XEP-0184 `<request/>`: the sender asks for a receipt.
    pub request_receipt: bool,
    /// XEP-0184 `<received id='…'/>`: the sender's client got this message.
    pub received: Option<String>,
    /// XEP-0066 `<x xmlns='jabber:x:oob'><url>…</url></x>`: the URL of a file the message
    /// shares (clients also put it in the body, and show the file instead of the text when the
    /// two are the same). Read from the first valid `<x/>`: an absolute URL (`scheme:…`, any
    /// scheme, `aesgcm://` too), trimmed, without whitespace or control characters, at most
    /// [`MAX_OOB_URL_BYTES`]; `<desc/>` is not kept.
    ///
    /// It is never encrypted: on an OMEMO message it travels in the clear beside
    /// `<encrypted/>` (and would give away an `aesgcm://` URL's key). Set it only on messages
    /// sent in the clear; a bridge leaves it unset on what it sends with
    /// [`OmemoClient::send_message`](crate::omemo::OmemoClient::send_message).
    pub oob_url: Option<String>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("reply", &self.reply)
            .field("reply_fallback", &self.reply_fallback)
            .field("replace", &self.replace)
            .field("reactions", &self.reactions)
            .field("retract", &self.retract)
            .field("chat_state", &self.chat_state)
            .field("markable", &self.markable)
            .field("displayed", &self.displayed)
            .field("request_receipt", &self.request_receipt)
            .field("received", &self.received)
            .field("oob_url", &self.oob_url.as_deref().map(UrlOrigin))
            .finish()
    }
}

impl Extensions {
    /// The extensions among a stanza's payloads (its child elements other than the body).
    /// Unknown, malformed and oversized elements are ignored.
    pub fn from_payloads(payloads: &[Element]) -> Self {
        let mut ext = Extensions::default();
        for el in payloads {
            ext.read(el);
        }
        ext
    }

    /// Takes in what `el` says, unless an earlier element already said it.
    fn read(&mut self, el: &Element) {
        match (el.ns(), el.name()) {
            (ns::REPLY, "reply") => fill(&mut self.reply, || reply(el)),
            (ns::FALLBACK | ns::FALLBACK_LEGACY, "fallback") => {
                fill(&mut self.reply_fallback, || reply_fallback(el));
            }
            (ns::CORRECT, "replace") => fill(&mut self.replace, || id_attr(el)),
            (ns::REACTIONS, "reactions") => fill(&mut self.reactions, || reactions(el)),
            (ns::RETRACT, "retract") => fill(&mut self.retract, || id_attr(el)),
            (ns::FASTEN, "apply-to") => fill(&mut self.retract, || retract_0(el)),
            (ns::CHAT_STATES, name) => fill(&mut self.chat_state, || ChatState::from_name(name)),
            (ns::CHAT_MARKERS, "markable") => self.markable = true,
            (ns::CHAT_MARKERS, "displayed") => fill(&mut self.displayed, || id_attr(el)),
            (ns::RECEIPTS, "request") => self.request_receipt = true,
            (ns::RECEIPTS, "received") => fill(&mut self.received, || id_attr(el)),
            (ns::OOB, "x") => fill(&mut self.oob_url, || oob_url(el)),
            _ => {}
        }
    }

    /// The wire form, for sending, in a fixed order. A retraction also gets the XEP-0428
    /// `<fallback for='urn:xmpp:message-retract:1'/>` that marks the stanza's body (if any)
    /// as a fallback text.
    pub fn to_elements(&self) -> Vec<Element> {
        let mut out = Vec::new();
        if let Some(reply) = &self.reply {
            out.push(
                Element::new("reply", ns::REPLY)
                    .attr_opt("to", reply.to.as_deref())
                    .attr("id", reply.id.as_str()),
            );
        }
        if let Some(range) = &self.reply_fallback {
            let body = Element::new("body", ns::FALLBACK)
                .attr("start", range.start.to_string())
                .attr("end", range.end.to_string());
            out.push(
                Element::new("fallback", ns::FALLBACK)
                    .attr("for", ns::REPLY)
                    .child(body),
            );
        }
        if let Some(id) = &self.replace {
            out.push(Element::new("replace", ns::CORRECT).attr("id", id.as_str()));
        }
        if let Some(reactions) = &self.reactions {
            let mut el = Element::new("reactions", ns::REACTIONS).attr("id", reactions.id.as_str());
            for emoji in &reactions.emojis {
                el = el.child(Element::new("reaction", ns::REACTIONS).text(emoji.as_str()));
            }
            out.push(el);
        }
        if let Some(id) = &self.retract {
            out.push(Element::new("retract", ns::RETRACT).attr("id", id.as_str()));
            out.push(Element::new("fallback", ns::FALLBACK).attr("for", ns::RETRACT));
        }
        if let Some(state) = self.chat_state {
            out.push(Element::new(state.as_str(), ns::CHAT_STATES));
        }
        if self.markable {
            out.push(Element::new("markable", ns::CHAT_MARKERS));
        }
        if let Some(id) = &self.displayed {
            out.push(Element::new("displayed", ns::CHAT_MARKERS).attr("id", id.as_str()));
        }
        if self.request_receipt {
            out.push(Element::new("request", ns::RECEIPTS));
        }
        if let Some(id) = &self.received {
            out.push(Element::new("received", ns::RECEIPTS).attr("id", id.as_str()));
        }
        if let Some(url) = &self.oob_url {
            out.push(
                Element::new("x", ns::OOB).child(Element::new("url", ns::OOB).text(url.as_str())),
            );
        }
        out
    }

    /// Nothing beyond the body.
    pub fn is_empty(&self) -> bool {
        *self == Extensions::default()
    }

    /// A reaction or a retraction: the stanza is about another message, and its `<body>`, if
    /// it has one, is only a fallback text for clients that do not know the extension.
    pub fn body_is_fallback(&self) -> bool {
        self.reactions.is_some() || self.retract.is_some()
    }

    /// Whether they say something on their own, without a body: reactions, a retraction, a
    /// chat state, a displayed marker or a receipt. (A reply, a correction, `<markable/>` or
    /// a receipt request without a body say nothing.)
    pub fn has_signal(&self) -> bool {
        self.body_is_fallback()
            || self.chat_state.is_some()
            || self.displayed.is_some()
            || self.received.is_some()
    }
}

/// The body without the reply's fallback quote. `range` is in characters (Unicode scalar
/// values) and is clamped to the body; a range that is empty or starts past the end leaves
/// the body as it is.
pub fn strip_fallback(body: &str, range: &Range<usize>) -> String {
    let end = range.end.min(body.chars().count());
    if range.start >= end {
        return body.to_owned();
    }
    body.chars()
        .take(range.start)
        .chain(body.chars().skip(end))
        .collect()
}

/// Sets `slot` from `parse` unless it is already set: the first valid element counts.
fn fill<T>(slot: &mut Option<T>, parse: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = parse();
    }
}

/// A message id, not empty and at most [`MAX_ID_BYTES`].
fn valid_id(id: &str) -> Option<String> {
    (!id.is_empty() && id.len() <= MAX_ID_BYTES).then(|| id.to_owned())
}

/// The element's `id` attribute, if it is a valid id.
fn id_attr(el: &Element) -> Option<String> {
    valid_id(el.get_attr("id")?)
}

/// A character offset attribute of a fallback `<body/>`.
fn offset_attr(el: &Element, attr: &str) -> Option<usize> {
    el.get_attr(attr)?.trim().parse().ok()
}

/// XEP-0461 `<reply/>`: needs an id; a `to` that is not a JID is dropped.
fn reply(el: &Element) -> Option<Reply> {
    let id = id_attr(el)?;
    let to = el
        .get_attr("to")
        .and_then(|to| Jid::parse(to).ok())
        .map(|jid| jid.as_str().to_owned());
    Some(Reply { to, id })
}

/// XEP-0428 `<fallback for='urn:xmpp:reply:0'>`: the first `<body/>` with a non-empty range.
/// One without offsets would mark the whole body, which a reply cannot be: ignored.
fn reply_fallback(el: &Element) -> Option<Range<usize>> {
    if el.get_attr("for") != Some(ns::REPLY) {
        return None;
    }
    el.children()
        .filter(|b| b.name() == "body" && b.ns() == el.ns())
        .find_map(|b| {
            let range = offset_attr(b, "start")?..offset_attr(b, "end")?;
            (range.start < range.end).then_some(range)
        })
}

/// XEP-0444 `<reactions id='…'>`: needs an id; each `<reaction/>` trimmed, empty, oversized
/// and control-character ones dropped, duplicates dropped, at most [`MAX_REACTIONS`].
fn reactions(el: &Element) -> Option<Reactions> {
    let id = id_attr(el)?;
    let mut emojis: Vec<String> = Vec::new();
    for r in el.children().filter(|c| c.is("reaction", ns::REACTIONS)) {
        if emojis.len() == MAX_REACTIONS {
            break;
        }
        let text = r.text_content();
        let text = text.trim();
        let valid = !text.is_empty()
            && text.len() <= MAX_REACTION_BYTES
            && !text.chars().any(char::is_control);
        if valid && !emojis.iter().any(|e| e == text) {
            emojis.push(text.to_owned());
        }
    }
    Some(Reactions { id, emojis })
}

/// XEP-0066 `<x xmlns='jabber:x:oob'>`: its first `<url/>`, if it is an absolute URL, trimmed,
/// without whitespace or control characters, at most [`MAX_OOB_URL_BYTES`].
fn oob_url(el: &Element) -> Option<String> {
    let text = el.get_child("url", ns::OOB)?.text_content();
    let url = text.trim();
    let (scheme, _) = url.split_once(':')?;
    let valid = url.len() <= MAX_OOB_URL_BYTES
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| url.to_owned())
}

/// XEP-0424 v0: `<apply-to xmlns='urn:xmpp:fasten:0' id='…'><retract
/// xmlns='urn:xmpp:message-retract:0'/></apply-to>` (other fastenings are not ours).
fn retract_0(el: &Element) -> Option<String> {
    el.get_child("retract", ns::RETRACT_0)?;
    id_attr(el)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::message::Message;
    use crate::stanza::{FromElement, parse_xml, reparse};

    /// The extensions of a `<message/>` written as XML, read the way the client reads them.
    fn parse(xml: &str) -> (Message, Extensions) {
        let msg = Message::from_element(parse_xml(xml)).expect("a valid message");
        let ext = Extensions::from_payloads(&msg.payloads);
        (msg, ext)
    }

    fn ext(xml: &str) -> Extensions {
        parse(xml).1
    }

    #[test]
    fn a_reply_as_conversations_sends_it_beside_omemo() {
        // Conversations 2.x: the quote is in the (encrypted) body, <reply/> and <fallback/>
        // in the clear.
        let (msg, ext) = parse(
            "<message to='juliet@capulet.lit' type='chat' id='c-2'>\
               <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AA==</iv></header></encrypted>\
               <body>I sent you an OMEMO encrypted message.</body>\
               <reply xmlns='urn:xmpp:reply:0' to='juliet@capulet.lit/balcony' id='c-1'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='8'/></fallback>\
               <markable xmlns='urn:xmpp:chat-markers:0'/>\
               <request xmlns='urn:xmpp:receipts'/>\
               <active xmlns='http://jabber.org/protocol/chatstates'/>\
               <store xmlns='urn:xmpp:hints'/>\
               <origin-id xmlns='urn:xmpp:sid:0' id='c-2'/>\
             </message>",
        );
        assert_eq!(msg.origin_id.as_deref(), Some("c-2"));
        assert_eq!(
            ext,
            Extensions {
                reply: Some(Reply {
                    to: Some("juliet@capulet.lit/balcony".into()),
                    id: "c-1".into()
                }),
                reply_fallback: Some(0..8),
                chat_state: Some(ChatState::Active),
                markable: true,
                request_receipt: true,
                ..Extensions::default()
            }
        );
        assert!(!ext.body_is_fallback());
        assert_eq!(strip_fallback("> hello\nworld", &(0..8)), "world");
    }

    #[test]
    fn a_reply_with_the_draft_fallback_namespace_and_a_bare_to() {
        // XEP-0461 §3 example, with the `urn:xmpp:feature-fallback:0` namespace that
        // Movim, Converse and slixmpp still send.
        let ext = ext(
            "<message to='anna@example.com' id='message-id2' type='chat'>\
               <body>&gt; Anna wrote:\n&gt; We should bake a cake\nGreat idea!</body>\
               <reply to='anna@example.com' id='message-id1' xmlns='urn:xmpp:reply:0'/>\
               <fallback xmlns='urn:xmpp:feature-fallback:0' for='urn:xmpp:reply:0'>\
                 <body start='0' end='38'/>\
               </fallback>\
             </message>",
        );
        let reply = ext.reply.expect("a reply");
        assert_eq!(reply.to.as_deref(), Some("anna@example.com"));
        assert_eq!(reply.id, "message-id1");
        assert_eq!(ext.reply_fallback, Some(0..38));
        let body = "> Anna wrote:\n> We should bake a cake\nGreat idea!";
        assert_eq!(strip_fallback(body, &(0..38)), "Great idea!");
    }

    #[test]
    fn a_correction_as_conversations_sends_it() {
        // XEP-0308 §3.
        let ext = ext("<message to='juliet@capulet.net/balcony' id='good1'>\
               <body>But soft, what light through yonder window breaks?</body>\
               <replace id='bad1' xmlns='urn:xmpp:message-correct:0'/>\
             </message>");
        assert_eq!(ext.replace.as_deref(), Some("bad1"));
        assert!(!ext.has_signal());
    }

    #[test]
    fn reactions_as_dino_and_conversations_send_them() {
        // XEP-0444 §3.2: no body, a store hint.
        let ext = ext(
            "<message to='romeo@montague.lit/orchard' id='96d73204' type='chat'>\
               <reactions id='744f6e18' xmlns='urn:xmpp:reactions:0'>\
                 <reaction>👋</reaction>\
                 <reaction>🐢</reaction>\
               </reactions>\
               <store xmlns='urn:xmpp:hints'/>\
             </message>",
        );
        assert_eq!(
            ext.reactions,
            Some(Reactions {
                id: "744f6e18".into(),
                emojis: vec!["👋".into(), "🐢".into()]
            })
        );
        assert!(ext.body_is_fallback() && ext.has_signal());
        // Taking every reaction back is an empty set, not nothing.
        let none = self::ext(
            "<message type='chat'><reactions id='744f6e18' xmlns='urn:xmpp:reactions:0'/></message>",
        );
        assert_eq!(none.reactions.expect("a set").emojis, Vec::<String>::new());
    }

    #[test]
    fn reactions_are_trimmed_deduplicated_and_bounded() {
        let ext = ext("<message><reactions xmlns='urn:xmpp:reactions:0' id='m-2'>\
               <reaction>👍</reaction><reaction> 👍 </reaction><reaction> </reaction>\
               <reaction>❤️</reaction><reaction>👨‍👩‍👧‍👦</reaction><reaction>a\u{85}b</reaction>\
               <other>x</other>\
             </reactions></message>");
        assert_eq!(
            ext.reactions.expect("reactions").emojis,
            vec!["👍", "❤️", "👨‍👩‍👧‍👦"]
        );
        let many: String = (0..200)
            .map(|i| format!("<reaction>{i}</reaction>"))
            .collect();
        let too_long = "y".repeat(MAX_REACTION_BYTES + 1);
        let longest = "z".repeat(MAX_REACTION_BYTES);
        let ext = self::ext(&format!(
            "<message><reactions xmlns='urn:xmpp:reactions:0' id='m'>\
               <reaction>{too_long}</reaction><reaction>{longest}</reaction>{many}\
             </reactions></message>"
        ));
        let emojis = ext.reactions.expect("reactions").emojis;
        assert_eq!(emojis.len(), MAX_REACTIONS);
        assert_eq!(emojis[0], longest);
        assert_eq!(emojis[1], "0");
    }

    #[test]
    fn a_retraction_as_gajim_sends_it() {
        // XEP-0424 §3 (version 1): a fallback body marked as such, a store hint.
        let ext = ext(
            "<message type='chat' to='lord@capulet.example' id='retract-message-1'>\
               <retract id='origin-id-1' xmlns='urn:xmpp:message-retract:1'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
               <body>/me retracted a previous message, but it's unsupported by your client.</body>\
               <store xmlns='urn:xmpp:hints'/>\
             </message>",
        );
        assert_eq!(ext.retract.as_deref(), Some("origin-id-1"));
        assert_eq!(ext.reply_fallback, None);
        assert!(ext.body_is_fallback());
    }

    #[test]
    fn a_retraction_in_the_older_fastening_form() {
        // XEP-0424 0.3 (Conversations, older Gajim): inside XEP-0422 <apply-to/>.
        let ext = ext(
            "<message type='chat' to='lord@capulet.net' id='retract-message-1'>\
               <apply-to id='origin-id-1' xmlns='urn:xmpp:fasten:0'>\
                 <retract xmlns='urn:xmpp:message-retract:0'/>\
               </apply-to>\
               <fallback xmlns='urn:xmpp:fallback:0'/>\
               <body>This person attempted to retract a previous message, but it's unsupported by your client.</body>\
             </message>",
        );
        assert_eq!(ext.retract.as_deref(), Some("origin-id-1"));
        // Another fastening is not a retraction.
        let other = self::ext(
            "<message><apply-to id='x' xmlns='urn:xmpp:fasten:0'><external name='body'/></apply-to></message>",
        );
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn markers_receipts_and_chat_states() {
        // XEP-0333 §4, XEP-0184 §5, XEP-0085 §5.
        let displayed = ext(
            "<message from='kingrichard@royalty.england.lit/throne' to='northumberland@shakespeare.lit/westminster' id='message-2'>\
               <displayed xmlns='urn:xmpp:chat-markers:0' id='message-1'/>\
             </message>",
        );
        assert_eq!(displayed.displayed.as_deref(), Some("message-1"));
        assert!(displayed.has_signal() && !displayed.body_is_fallback());
        let received = ext(
            "<message from='kingrichard@royalty.england.lit/throne' id='bi29sg183b4v' to='northumberland@shakespeare.lit/westminster'>\
               <received xmlns='urn:xmpp:receipts' id='richard2-4.1.247'/>\
             </message>",
        );
        assert_eq!(received.received.as_deref(), Some("richard2-4.1.247"));
        for state in [
            ChatState::Active,
            ChatState::Composing,
            ChatState::Paused,
            ChatState::Inactive,
            ChatState::Gone,
        ] {
            let ext = ext(&format!(
                "<message type='chat'><{} xmlns='http://jabber.org/protocol/chatstates'/></message>",
                state.as_str()
            ));
            assert_eq!(ext.chat_state, Some(state));
            assert!(ext.has_signal());
        }
        // A receipt without an id (XEP-0184 1.0) says nothing we can use.
        assert!(ext("<message><received xmlns='urn:xmpp:receipts'/></message>").is_empty());
    }

    #[test]
    fn malformed_or_oversized_extensions_are_ignored() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let ext = ext(&format!(
            "<message>\
               <reply xmlns='urn:xmpp:reply:0' to='alice@x'/>\
               <reply xmlns='urn:xmpp:reply:0' id=''/>\
               <replace xmlns='urn:xmpp:message-correct:0' id='{long}'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='9' end='2'/></fallback>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='-1' end='2'/></fallback>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body/></fallback>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:example'><body start='0' end='2'/></fallback>\
               <reactions xmlns='urn:xmpp:reactions:0'><reaction>👍</reaction></reactions>\
               <retract xmlns='urn:xmpp:message-retract:1'/>\
               <retract xmlns='urn:xmpp:message-retract:0' id='v0-outside-apply-to'/>\
               <typing xmlns='http://jabber.org/protocol/chatstates'/>\
               <displayed xmlns='urn:xmpp:chat-markers:0' id='{long}'/>\
               <acknowledged xmlns='urn:xmpp:chat-markers:0' id='a'/>\
               <replace xmlns='urn:example' id='a'/>\
             </message>"
        ));
        assert!(ext.is_empty(), "{ext:?}");
        let longest = "i".repeat(MAX_ID_BYTES);
        let ext = self::ext(&format!(
            "<message><replace xmlns='urn:xmpp:message-correct:0' id='{longest}'/></message>"
        ));
        assert_eq!(ext.replace, Some(longest));
    }

    #[test]
    fn the_first_valid_element_of_a_kind_counts() {
        let ext = ext("<message>\
               <reply xmlns='urn:xmpp:reply:0' id=''/>\
               <reply xmlns='urn:xmpp:reply:0' to='not a jid' id='r1'/>\
               <reply xmlns='urn:xmpp:reply:0' id='r2'/>\
               <composing xmlns='http://jabber.org/protocol/chatstates'/>\
               <active xmlns='http://jabber.org/protocol/chatstates'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
                 <body start='3' end='3'/><body start='1' end='4'/>\
               </fallback>\
             </message>");
        assert_eq!(
            ext.reply,
            Some(Reply {
                to: None,
                id: "r1".into()
            })
        );
        assert_eq!(ext.chat_state, Some(ChatState::Composing));
        assert_eq!(ext.reply_fallback, Some(1..4));
    }

    #[test]
    fn what_is_written_is_read_back() {
        let all = Extensions {
            reply: Some(Reply {
                to: Some("bob@x/phone".into()),
                id: "b1".into(),
            }),
            reply_fallback: Some(0..12),
            replace: Some("o1".into()),
            reactions: Some(Reactions {
                id: "r1".into(),
                emojis: vec!["🎉".into(), "👍🏽".into()],
            }),
            retract: Some("x1".into()),
            chat_state: Some(ChatState::Composing),
            markable: true,
            displayed: Some("d1".into()),
            request_receipt: true,
            received: Some("c1".into()),
            oob_url: Some("https://upload.example/a/b.png".into()),
        };
        let written: Vec<Element> = all.to_elements().iter().map(reparse).collect();
        assert_eq!(Extensions::from_payloads(&written), all);
        assert!(Extensions::default().to_elements().is_empty());
        assert!(Extensions::default().is_empty());
        let reply = Extensions {
            reply: Some(Reply {
                to: None,
                id: "b1".into(),
            }),
            ..Extensions::default()
        };
        assert_eq!(Extensions::from_payloads(&reply.to_elements()), reply);
    }

    #[test]
    fn the_wire_form() {
        let retract = Extensions {
            retract: Some("x1".into()),
            ..Extensions::default()
        };
        let xml: Vec<String> = retract
            .to_elements()
            .iter()
            .map(|e| e.to_xml(ns::CLIENT))
            .collect();
        assert_eq!(
            xml,
            [
                "<retract xmlns='urn:xmpp:message-retract:1' id='x1'/>",
                "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>",
            ]
        );
        let reply = Extensions {
            reply: Some(Reply {
                to: Some("a@b".into()),
                id: "i".into(),
            }),
            reply_fallback: Some(0..5),
            reactions: Some(Reactions {
                id: "r".into(),
                emojis: vec!["👍".into()],
            }),
            ..Extensions::default()
        };
        let xml: String = reply
            .to_elements()
            .iter()
            .map(|e| e.to_xml(ns::CLIENT))
            .collect();
        assert_eq!(
            xml,
            "<reply xmlns='urn:xmpp:reply:0' to='a@b' id='i'/>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='5'/></fallback>\
             <reactions xmlns='urn:xmpp:reactions:0' id='r'><reaction>👍</reaction></reactions>"
        );
    }

    #[test]
    fn fallback_offsets_count_characters_not_bytes() {
        // "> 👋🏽 hé\n" is 8 characters (and 15 bytes).
        let body = "> 👋🏽 hé\nanswer 🎉";
        assert_eq!(strip_fallback(body, &(0..8)), "answer 🎉");
        assert_eq!(strip_fallback(body, &(2..4)), ">  hé\nanswer 🎉");
        // Clamped to the body.
        assert_eq!(strip_fallback(body, &(8..1000)), "> 👋🏽 hé\n");
        // Empty, reversed or past the end: the body as it is.
        #[allow(clippy::reversed_empty_ranges)] // a reversed range is what is tested
        let ranges = [3..3, 5..2, 16..20, 100..200];
        for range in ranges {
            assert_eq!(strip_fallback(body, &range), body, "{range:?}");
        }
        assert_eq!(strip_fallback("", &(0..4)), "");
    }

    #[test]
    fn a_file_as_conversations_sends_it() {
        // XEP-0066 §3.2 as Conversations and Dino send a shared file: the URL in the body and
        // in <x/>, with a <desc/> we do not keep.
        let url = "https://upload.montague.tld/4a771ac1/tr%C3%A8s%20cool.jpg";
        let (msg, ext) = parse(&format!(
            "<message type='chat' to='juliet@capulet.lit' id='f1'>\
               <body>{url}</body>\
               <x xmlns='jabber:x:oob'><url>{url}</url><desc>A photo</desc></x>\
               <markable xmlns='urn:xmpp:chat-markers:0'/>\
             </message>"
        ));
        assert_eq!(msg.body.as_deref(), Some(url));
        assert_eq!(ext.oob_url.as_deref(), Some(url));
        assert!(ext.markable && !ext.has_signal() && !ext.body_is_fallback());
        // An encrypted file URL is read like any other (its key is in the fragment).
        let aesgcm = "aesgcm://u.example/f.jpg#0011aabb";
        let ext = self::ext(&format!(
            "<message><x xmlns='jabber:x:oob'><url>\n  {aesgcm}\n</url></x></message>"
        ));
        assert_eq!(ext.oob_url.as_deref(), Some(aesgcm));
    }

    #[test]
    fn hostile_or_oversized_oob_urls_are_ignored() {
        let too_long = format!("https://u.example/{}", "a".repeat(MAX_OOB_URL_BYTES));
        let longest = format!("https://u.example/{}", "a".repeat(MAX_OOB_URL_BYTES - 18));
        assert_eq!(longest.len(), MAX_OOB_URL_BYTES);
        let nel = '\u{85}';
        let ext = ext(&format!(
            "<message>\
               <x xmlns='jabber:x:oob'/>\
               <x xmlns='jabber:x:oob'><url/></x>\
               <x xmlns='jabber:x:oob'><url>no scheme at all</url></x>\
               <x xmlns='jabber:x:oob'><url>relative/path.png</url></x>\
               <x xmlns='jabber:x:oob'><url>1http://a/b</url></x>\
               <x xmlns='jabber:x:oob'><url>https://u.example/a b</url></x>\
               <x xmlns='jabber:x:oob'><url>https://u.example/a&#10;b</url></x>\
               <x xmlns='jabber:x:oob'><url>https://u.example/a{nel}b</url></x>\
               <x xmlns='jabber:x:oob'><url>{too_long}</url></x>\
               <x xmlns='jabber:x:oob'><desc>https://u.example/desc</desc></x>\
               <x xmlns='jabber:x:data'><url>https://u.example/form</url></x>\
               <url xmlns='jabber:x:oob'>https://u.example/bare</url>\
             </message>"
        ));
        assert!(ext.is_empty(), "{ext:?}");
        // The first valid one counts.
        let ext = self::ext(&format!(
            "<message>\
               <x xmlns='jabber:x:oob'><url>{too_long}</url></x>\
               <x xmlns='jabber:x:oob'><url>{longest}</url></x>\
               <x xmlns='jabber:x:oob'><url>https://u.example/second</url></x>\
             </message>"
        ));
        assert_eq!(ext.oob_url, Some(longest));
    }

    #[test]
    fn the_oob_wire_form() {
        let file = Extensions {
            oob_url: Some("https://u.example/a?b=1&c=2".into()),
            markable: true,
            ..Extensions::default()
        };
        let xml: String = file
            .to_elements()
            .iter()
            .map(|e| e.to_xml(ns::CLIENT))
            .collect();
        assert_eq!(
            xml,
            "<markable xmlns='urn:xmpp:chat-markers:0'/>\
             <x xmlns='jabber:x:oob'><url>https://u.example/a?b=1&amp;c=2</url></x>"
        );
        let read: Vec<Element> = file.to_elements().iter().map(reparse).collect();
        assert_eq!(Extensions::from_payloads(&read), file);
    }

    #[test]
    fn debug_shows_no_reaction() {
        let ext = Extensions {
            reactions: Some(Reactions {
                id: "r1".into(),
                emojis: vec!["🐢".into()],
            }),
            ..Extensions::default()
        };
        let shown = format!("{ext:?}");
        assert!(!shown.contains('🐢'), "{shown}");
        assert!(
            shown.contains("r1") && shown.contains("count: 1"),
            "{shown}"
        );
        let file = Extensions {
            oob_url: Some("aesgcm://u.example/slot-id/photo.jpg#k3y".into()),
            ..Extensions::default()
        };
        let shown = format!("{file:?}");
        for hidden in ["slot-id", "photo", "k3y"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("aesgcm://u.example/"), "{shown}");
    }
}
