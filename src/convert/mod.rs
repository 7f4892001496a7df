//! Message content between Matrix and XMPP: pure functions, no I/O.
//!
//! [`to_xmpp`] turns an `m.room.message` into the `<body>` text for the contact, writing Matrix
//! HTML as XEP-0393 message styling ([`styling`]); [`to_matrix`] turns a received body into
//! `m.room.message` content, with `org.matrix.custom.html` when the body uses styling. `/me `
//! (XEP-0245) maps to and from `m.emote`.
//!
//! **Styling directives in the HTML.** [`to_matrix`] drops the directives from the HTML (`*a*`
//! becomes `<strong>a</strong>`, `> a` a `<blockquote>`) and keeps them only in the plain `body`,
//! which stays the text as received. Matrix clients show HTML formatting as formatting, never as
//! markup, and dropping the directives makes [`to_xmpp`] the exact inverse, so a styled body
//! that crosses back is not doubled into `**a**`.
//!
//! Both directions are bounded: HTML above [`html::MAX_INPUT_BYTES`] or nested deeper than
//! [`html::MAX_DEPTH`] is not parsed (the plain `body` is sent instead), a body above
//! [`MAX_STYLED_BODY_BYTES`] is passed on without formatting, and quotations nest at most
//! [`styling::MAX_QUOTE_DEPTH`] deep.

pub mod html;
mod outgoing;
pub mod styling;

#[cfg(test)]
mod tests;

use ruma::UserId;
use ruma::events::room::message::{MessageFormat, MessageType, Relation, RoomMessageEventContent};

/// Bodies larger than this are passed to Matrix as plain text, without looking for styling.
pub const MAX_STYLED_BODY_BYTES: usize = 64 * 1024;

/// The XEP-0245 prefix of an emote ("/me waves").
const ME: &str = "/me ";

/// Text for the contact's `<body>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingText {
    pub body: String,
}

/// A message whose msgtype cannot be bridged as text yet (`m.image`, `m.file`, `m.audio`,
/// `m.video`, `m.location`, custom ones, …). Carries the msgtype, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("messages of type {msgtype} cannot be bridged as text")]
pub struct Unsupported {
    pub msgtype: String,
}

/// The file a contact's message shares, if it is a file message: a body that is nothing but
/// an XEP-0454 `aesgcm://` link (only in an OMEMO-encrypted message: the link holds the key),
/// or an `https://` link equal to the message's XEP-0066 out-of-band URL, or that URL alone
/// without a body (how clients share a file in the clear). Any other link is text: the bridge fetches nothing a contact merely
/// mentions.
pub fn file_link(body: &str, oob_url: Option<&str>, encrypted: bool) -> Option<String> {
    // A client may send the out-of-band element alone, without a body.
    let body = match body.trim() {
        "" => oob_url.map(str::trim).unwrap_or_default(),
        body => body,
    };
    if body.is_empty() || body.contains(char::is_whitespace) {
        return None;
    }
    let scheme = body.split_once("://")?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "aesgcm" if encrypted && body.contains('#') => Some(body.to_owned()),
        "https" | "http" if oob_url.map(str::trim) == Some(body) => Some(body.to_owned()),
        _ => None,
    }
}

/// Text to send to the contact, from a Matrix message.
///
/// `m.text` and `m.notice` are sent as their text, `m.emote` with `/me ` before it. The text
/// is the `formatted_body` written as XEP-0393 styling when it is HTML (and not refused as too
/// large or deep, and not empty), else the plain `body`. A rich-reply fallback is left out: the
/// `<mx-reply>` element always, and the quoted lines at the top of the plain `body` when the
/// content is a reply (has `m.in_reply_to`).
///
/// `names` resolves a mentioned Matrix user (a pill: `<a href="https://matrix.to/#/@u:s">…</a>`)
/// to the name to show, e.g. a ghost's contact name; `None` keeps the link text.
pub fn to_xmpp(
    content: &RoomMessageEventContent,
    names: &dyn Fn(&UserId) -> Option<String>,
) -> Result<OutgoingText, Unsupported> {
    let (body, formatted, emote) = match &content.msgtype {
        MessageType::Text(c) => (&c.body, &c.formatted, false),
        MessageType::Notice(c) => (&c.body, &c.formatted, false),
        MessageType::Emote(c) => (&c.body, &c.formatted, true),
        other => {
            return Err(Unsupported {
                msgtype: other.msgtype().to_owned(),
            });
        }
    };
    let styled = formatted
        .as_ref()
        .filter(|f| matches!(f.format, MessageFormat::Html))
        .and_then(|f| outgoing::html_to_styling(&f.body, names))
        .filter(|text| !text.is_empty());
    let text = match styled {
        Some(text) => text,
        None if is_reply(content) => strip_reply_fallback(body).to_owned(),
        None => body.clone(),
    };
    let body = if emote { format!("{ME}{text}") } else { text };
    Ok(OutgoingText { body })
}

/// Matrix content for a body received from the contact.
///
/// A body starting with `/me ` becomes an `m.emote` of the rest, any other an `m.text`. If the
/// text uses XEP-0393 styling, the content carries it as HTML too (without the directives, see
/// the module docs); the plain `body` is always the text as received.
pub fn to_matrix(body: &str) -> RoomMessageEventContent {
    let (emote, text) = match body.strip_prefix(ME) {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let formatted = (text.len() <= MAX_STYLED_BODY_BYTES)
        .then(|| styling::parse(text))
        .filter(|blocks| styling::is_styled(blocks))
        .map(|blocks| styling::to_html(&blocks));
    let msgtype = match (emote, formatted) {
        (true, Some(html)) => MessageType::emote_html(text, html),
        (true, None) => MessageType::emote_plain(text),
        (false, Some(html)) => MessageType::text_html(text, html),
        (false, None) => MessageType::text_plain(text),
    };
    RoomMessageEventContent::new(msgtype)
}

/// The most a message's content may take as JSON: Synapse refuses events over 65,536 bytes
/// (content plus the event's own fields, about 1 KiB).
pub const MAX_CONTENT_JSON_BYTES: usize = 60_000;

/// [`to_matrix`], in as many events as it takes: a body whose content would exceed
/// [`MAX_CONTENT_JSON_BYTES`] is split between lines (or, for a longer line, between
/// characters) into parts that each fit, every part formatted on its own. Parts come in order;
/// joined they are the whole body. Never empty.
pub fn to_matrix_parts(body: &str) -> Vec<RoomMessageEventContent> {
    let whole = to_matrix(body);
    if content_len(&whole) <= MAX_CONTENT_JSON_BYTES {
        return vec![whole];
    }
    let mut parts = Vec::new();
    for piece in split_body(body, MAX_CONTENT_JSON_BYTES / 4) {
        push_fitting(piece, &mut parts);
    }
    parts
}

/// Converts `piece` and pushes it, halving it until each half fits (escaping can make a small
/// body large: a control character takes six bytes as JSON).
fn push_fitting(piece: &str, parts: &mut Vec<RoomMessageEventContent>) {
    let content = to_matrix(piece);
    if content_len(&content) <= MAX_CONTENT_JSON_BYTES || piece.chars().nth(1).is_none() {
        parts.push(content);
        return;
    }
    let mut middle = piece.len() / 2;
    while !piece.is_char_boundary(middle) {
        middle -= 1;
    }
    if middle == 0 {
        middle = piece.chars().next().map_or(piece.len(), char::len_utf8);
    }
    let (first, second) = piece.split_at(middle);
    push_fitting(first, parts);
    push_fitting(second, parts);
}

fn content_len(content: &RoomMessageEventContent) -> usize {
    serde_json::to_vec(content).map_or(usize::MAX, |json| json.len())
}

/// `body` in pieces of at most `max` bytes, cut after a newline where one is in reach, else at
/// a character boundary. The pieces joined are `body`.
fn split_body(body: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(newline) = rest[..cut].rfind('\n').filter(|&n| n >= max / 2) {
            cut = newline + 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

fn is_reply(content: &RoomMessageEventContent) -> bool {
    match &content.relates_to {
        Some(Relation::Reply(_)) => true,
        Some(Relation::Thread(thread)) => thread.in_reply_to.is_some(),
        _ => false,
    }
}

/// The plain body without a rich-reply fallback: the lines quoted from the replied-to event
/// (`> <@user:server> text`, `> * <@user:server> emote`, further `>` lines) and the empty line
/// after them. A body that does not start like a fallback is returned whole.
fn strip_reply_fallback(body: &str) -> &str {
    if !(body.starts_with("> <") || body.starts_with("> * <")) {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.split_once('\n') {
            Some((_, tail)) => rest = tail,
            None => return "",
        }
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}
