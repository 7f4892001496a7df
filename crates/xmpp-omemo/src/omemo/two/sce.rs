//! XEP-0420 Stanza Content Encryption, as XEP-0384 (OMEMO 2) uses it: what is encrypted is an
//! `<envelope>` holding the stanza's content elements, random padding and the sender.
//! <https://xmpp.org/extensions/xep-0420.html>
//!
//! ```xml
//! <envelope xmlns="urn:xmpp:sce:1">
//!   <content><body xmlns="jabber:client">Hello</body></content>
//!   <rpad>…</rpad><from jid="romeo@montague.lit"/>
//! </envelope>
//! ```
//!
//! We write `<content>`, `<rpad>` and `<from>` (and `<to>` when asked). We read an envelope
//! within the XML limits below, require that `<from>`, when present, is the sender's bare JID
//! (XEP-0420 §6: otherwise the message must be dropped), and keep `<to>` and `<time>`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;

use crate::stanza::ns;
use crate::xml::{Element, Limits, XmlError, XmlReader};

pub const NS: &str = "urn:xmpp:sce:1";

/// Most bytes of a decrypted envelope we parse.
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024;
/// Most elements in one envelope, counting every descendant.
pub const MAX_ENVELOPE_ELEMENTS: usize = 1_000;

/// Why decrypted bytes are not an envelope we accept. Holds no content.
#[derive(Debug, thiserror::Error)]
pub enum SceError {
    #[error("the envelope is not well-formed or exceeds a limit: {0}")]
    Xml(#[from] XmlError),
    #[error("the decrypted payload is not an <envelope xmlns='urn:xmpp:sce:1'>")]
    NotAnEnvelope,
    #[error("the envelope has no <content>")]
    NoContent,
    #[error("the envelope has bytes after </envelope>")]
    TrailingData,
    #[error("the envelope's <from> names another sender")]
    WrongSender,
}

/// A parsed envelope. Debug shows the addresses and how many content elements, never the
/// content (the decrypted message).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The children of `<content>`, in order.
    pub content: Vec<Element>,
    /// `<from jid>`, checked against the sender when present.
    pub from: Option<String>,
    /// `<to jid>`.
    pub to: Option<String>,
    /// `<time stamp>`, unparsed.
    pub time: Option<String>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("content", &format_args!("{} elements", self.content.len()))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("time", &self.time)
            .finish()
    }
}

impl Envelope {
    /// The text of `<body xmlns="jabber:client">` in the content, if any.
    pub fn body(&self) -> Option<String> {
        self.content
            .iter()
            .find(|e| e.is("body", ns::CLIENT))
            .map(Element::text_content)
    }
}

/// `<body xmlns="jabber:client">text</body>`, the usual content.
pub fn body(text: &str) -> Element {
    Element::new("body", ns::CLIENT).text(text)
}

/// The envelope bytes to encrypt: `content`, 1 to 32 bytes of random padding (base64), our
/// bare JID, and the recipient when given (MUST in group chats).
pub fn build(
    content: Vec<Element>,
    from: &str,
    to: Option<&str>,
    rng: &mut impl rand::CryptoRng,
) -> Vec<u8> {
    let mut len = [0u8; 1];
    rng.fill_bytes(&mut len);
    let mut pad = vec![0u8; usize::from(len[0] % 32) + 1];
    rng.fill_bytes(&mut pad);
    let mut wrapper = Element::new("content", NS);
    for c in content {
        wrapper.push_child(c);
    }
    let mut envelope = Element::new("envelope", NS).child(wrapper).child(
        Element::new("rpad", NS).text(base64::engine::general_purpose::STANDARD.encode(pad)),
    );
    if let Some(to) = to {
        envelope.push_child(Element::new("to", NS).attr("jid", to));
    }
    envelope.push_child(Element::new("from", NS).attr("jid", from));
    envelope.to_xml("").into_bytes()
}

/// Parses decrypted envelope bytes from `sender` (a bare JID).
pub fn parse(bytes: &[u8], sender: &str) -> Result<Envelope, SceError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(XmlError::TooLarge(MAX_ENVELOPE_BYTES).into());
    }
    let mut envelope = read_one(bytes)?;
    if !envelope.is("envelope", NS) {
        return Err(SceError::NotAnEnvelope);
    }
    let mut parsed = Envelope {
        content: Vec::new(),
        from: None,
        to: None,
        time: None,
    };
    let mut content = None;
    for child in envelope.take_children() {
        if child.ns() != NS {
            continue;
        }
        match child.name() {
            "content" if content.is_none() => content = Some(child),
            "from" => parsed.from = child.get_attr("jid").map(str::to_owned),
            "to" => parsed.to = child.get_attr("jid").map(str::to_owned),
            "time" => parsed.time = child.get_attr("stamp").map(str::to_owned),
            _ => {}
        }
    }
    let mut content = content.ok_or(SceError::NoContent)?;
    if parsed.from.as_deref().is_some_and(|f| f != sender) {
        return Err(SceError::WrongSender);
    }
    parsed.content = content.take_children();
    Ok(parsed)
}

/// Reads exactly one element from `bytes` with the stream reader, as if it were the only
/// stanza of a stream; the reader never waits on a slice, so one poll completes it.
fn read_one(bytes: &[u8]) -> Result<Element, SceError> {
    let mut doc = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>",
        ns::CLIENT,
        ns::STREAM
    )
    .into_bytes();
    doc.extend_from_slice(bytes);
    doc.extend_from_slice(b"</stream:stream>");
    let limits = Limits {
        max_stanza_bytes: MAX_ENVELOPE_BYTES + 64,
        max_elements: MAX_ENVELOPE_ELEMENTS,
        ..Limits::default()
    };
    let work = async {
        let mut reader = XmlReader::new(&doc[..], limits);
        reader.read_header().await?;
        let element = reader.next_element().await?;
        match reader.next_element().await {
            Err(XmlError::StreamEnd) => {}
            Ok(_) => return Err(SceError::TrailingData),
            Err(e) => return Err(e.into()),
        }
        match reader.into_inner() {
            Ok([]) => Ok(element),
            _ => Err(SceError::TrailingData),
        }
    };
    match pin!(work)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        // Reading from a slice never waits; should it ever, the bytes are refused, not awaited.
        Poll::Pending => Err(XmlError::Truncated.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::make_rng()
    }

    #[test]
    fn build_then_parse_round_trips() {
        let bytes = build(
            vec![body("a <b> & \"c\" 👋")],
            "romeo@montague.lit",
            Some("juliet@capulet.lit"),
            &mut rng(),
        );
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(
            text.starts_with(
                "<envelope xmlns=\"urn:xmpp:sce:1\"><content><body xmlns=\"jabber:client\">"
            ) || text.starts_with(
                "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>"
            )
        );
        let env = parse(&bytes, "romeo@montague.lit").expect("parses");
        assert_eq!(env.body().as_deref(), Some("a <b> & \"c\" 👋"));
        assert_eq!(env.from.as_deref(), Some("romeo@montague.lit"));
        assert_eq!(env.to.as_deref(), Some("juliet@capulet.lit"));
        let shown = format!("{env:?}");
        assert!(
            !shown.contains("👋") && shown.contains("1 elements"),
            "{shown}"
        );
    }

    /// What python-omemo's test peer and other clients send: single quotes, `<time/>`, `<to/>`.
    #[test]
    fn parses_a_foreign_envelope() {
        let xml = "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>Hi</body>\
            <x xmlns='urn:example'/></content><rpad>abc</rpad><time stamp='2024-01-01T00:00:00Z'/>\
            <to jid='b@x'/><from jid='a@x'/></envelope>";
        let env = parse(xml.as_bytes(), "a@x").expect("parses");
        assert_eq!(env.body().as_deref(), Some("Hi"));
        assert_eq!(env.content.len(), 2);
        assert_eq!(env.time.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn invalid_envelopes_are_named() {
        let ok = "<envelope xmlns='urn:xmpp:sce:1'><content/><from jid='a@x'/></envelope>";
        assert!(matches!(
            parse(ok.as_bytes(), "evil@x"),
            Err(SceError::WrongSender)
        ));
        assert!(matches!(
            parse(
                b"<envelope xmlns='urn:xmpp:sce:0'><content/></envelope>",
                "a@x"
            ),
            Err(SceError::NotAnEnvelope)
        ));
        assert!(matches!(
            parse(
                b"<envelope xmlns='urn:xmpp:sce:1'><rpad/></envelope>",
                "a@x"
            ),
            Err(SceError::NoContent)
        ));
        let two = format!("{ok}{ok}");
        assert!(matches!(
            parse(two.as_bytes(), "a@x"),
            Err(SceError::TrailingData)
        ));
        let closes = format!("{ok}</stream:stream><x/>");
        assert!(parse(closes.as_bytes(), "a@x").is_err());
        assert!(matches!(
            parse(b"<envelope xmlns='urn:xmpp:sce:1'><content>", "a@x"),
            Err(SceError::Xml(_))
        ));
        assert!(matches!(parse(b"not xml", "a@x"), Err(SceError::Xml(_))));
        let deep = format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content>{}{}</content></envelope>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(matches!(
            parse(deep.as_bytes(), "a@x"),
            Err(SceError::Xml(XmlError::TooDeep(_)))
        ));
        let many = format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content>{}</content></envelope>",
            "<a/>".repeat(MAX_ENVELOPE_ELEMENTS + 1)
        );
        assert!(matches!(
            parse(many.as_bytes(), "a@x"),
            Err(SceError::Xml(XmlError::TooManyElements(_)))
        ));
        let huge = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            parse(&huge, "a@x"),
            Err(SceError::Xml(XmlError::TooLarge(_)))
        ));
    }
}
