//! The stream reader: turns the bytes of one never-closing `<stream:stream>` document into its
//! header and then one [`Element`] per depth-1 child (a stanza, a nonza, stream features …).
//!
//! The peer is untrusted. Every limit in [`Limits`] is enforced while reading, before memory is
//! spent: the byte budget is enforced below the parser (the socket is not read past it), so one
//! huge text node or an endless run of whitespace cannot grow a buffer without bound. Restricted
//! XML (RFC 6120 §11.1): DOCTYPE, processing instructions, comments and entities other than the
//! five predefined ones and character references are refused — nothing is ever expanded.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quick_xml::NsReader;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use super::element::Element;
use super::limits::Limits;

/// Why the stream could not be read. Every variant ends the stream; none quotes content.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("the connection closed")]
    Closed,
    #[error("the peer closed the stream")]
    StreamEnd,
    #[error("the stream ended in the middle of an element")]
    Truncated,
    #[error("a stanza is larger than {0} bytes")]
    TooLarge(usize),
    #[error("elements are nested deeper than {0}")]
    TooDeep(usize),
    #[error("an element has more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("a stanza has more than {0} elements")]
    TooManyElements(usize),
    #[error("restricted XML: {0} is not allowed in an XMPP stream")]
    Restricted(&'static str),
    #[error("undeclared entity reference (only the five predefined entities are accepted)")]
    UnknownEntity,
    #[error("character data is not allowed between stanzas")]
    TextBetweenStanzas,
    #[error("the document does not start with a stream header")]
    NoStreamHeader,
    #[error("a character that XML does not allow")]
    InvalidChar,
    #[error("not well-formed XML: {0}")]
    Syntax(String),
    #[error("read error: {0}")]
    Io(#[source] io::Error),
}

/// Marker carried inside the io::Error the budget reader returns.
#[derive(Debug, thiserror::Error)]
#[error("stanza byte budget exhausted")]
struct BudgetExhausted;

/// Counts the bytes handed to the parser and refuses to read past `limit`.
struct Budget<R> {
    inner: R,
    consumed: u64,
    limit: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Budget<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = this.limit.saturating_sub(this.consumed);
        if room == 0 {
            return Poll::Ready(Err(io::Error::other(BudgetExhausted)));
        }
        let take = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(take));
        let poll = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = poll {
            buf.advance(n);
            this.consumed += n as u64;
        }
        poll
    }
}

/// Read-ahead buffer below the parser. Small, because thousands of idle connections each hold one.
const READ_BUFFER: usize = 4096;
/// The event buffer is given back after a stanza that made it grow beyond this.
const KEEP_EVENT_BUFFER: usize = 8192;

/// Reads one XMPP stream. Not cancel-safe: keep it in its own task (or drop it on cancellation).
pub struct XmlReader<R> {
    reader: NsReader<BufReader<Budget<R>>>,
    buf: Vec<u8>,
    limits: Limits,
    header_seen: bool,
}

impl<R: AsyncRead + Unpin> XmlReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        let budget = Budget {
            inner,
            consumed: 0,
            limit: limits.max_stanza_bytes as u64,
        };
        let mut reader = NsReader::from_reader(BufReader::with_capacity(READ_BUFFER, budget));
        let config = reader.config_mut();
        config.trim_text(false);
        config.expand_empty_elements = false;
        config.check_end_names = true;
        config.check_comments = true;
        Self {
            reader,
            buf: Vec::new(),
            limits,
            header_seen: false,
        }
    }

    /// Gives the transport back, for STARTTLS or a stream restart. Fails if the peer already sent
    /// bytes beyond the current position (they would belong to the old stream or be injected
    /// before the TLS handshake).
    pub fn into_inner(self) -> Result<R, XmlError> {
        let buffered = self.reader.get_ref().buffer().len();
        if buffered != 0 {
            return Err(XmlError::Syntax(format!(
                "{buffered} unexpected bytes after the last element"
            )));
        }
        Ok(self.reader.into_inner().into_inner().inner)
    }

    /// Reads up to and including the `<stream:stream …>` start tag; returns it without children.
    pub async fn read_header(&mut self) -> Result<Element, XmlError> {
        loop {
            self.buf.clear();
            let (ns, event) = self
                .reader
                .read_resolved_event_into_async(&mut self.buf)
                .await
                .map_err(|e| map_err(e, self.limits.max_stanza_bytes))?;
            match event {
                Event::Decl(_) => {}
                Event::Text(t) if t.as_ref().chars().all(|c| c.is_ascii_whitespace()) => {}
                Event::Start(start) => {
                    let el = element_from(&start, &ns, &self.limits)?;
                    self.header_seen = true;
                    self.rearm();
                    return Ok(el);
                }
                Event::Eof => return Err(XmlError::Closed),
                other => return Err(refuse(&other).unwrap_or(XmlError::NoStreamHeader)),
            }
        }
    }

    /// Reads the next depth-1 element. `Err(StreamEnd)` when the peer closes the stream.
    pub async fn next_element(&mut self) -> Result<Element, XmlError> {
        if !self.header_seen {
            return Err(XmlError::NoStreamHeader);
        }
        let result = self.read_element().await;
        if self.buf.capacity() > KEEP_EVENT_BUFFER {
            self.buf = Vec::new();
        }
        if result.is_ok() {
            self.rearm();
        }
        result
    }

    /// Gives the next stanza the whole byte budget, counted from the end of the last one.
    fn rearm(&mut self) {
        let pos = self.reader.buffer_position();
        self.reader.get_mut().get_mut().limit = pos + self.limits.max_stanza_bytes as u64;
    }

    async fn read_element(&mut self) -> Result<Element, XmlError> {
        let mut stack: Vec<Element> = Vec::new();
        let mut elements = 0usize;
        loop {
            self.buf.clear();
            let (ns, event) = self
                .reader
                .read_resolved_event_into_async(&mut self.buf)
                .await
                .map_err(|e| map_err(e, self.limits.max_stanza_bytes))?;
            match event {
                Event::Start(start) | Event::Empty(start)
                    if stack.len() >= self.limits.max_depth =>
                {
                    let _ = start;
                    return Err(XmlError::TooDeep(self.limits.max_depth));
                }
                Event::Start(start) => {
                    elements += 1;
                    if elements > self.limits.max_elements {
                        return Err(XmlError::TooManyElements(self.limits.max_elements));
                    }
                    stack.push(element_from(&start, &ns, &self.limits)?);
                }
                Event::Empty(start) => {
                    elements += 1;
                    if elements > self.limits.max_elements {
                        return Err(XmlError::TooManyElements(self.limits.max_elements));
                    }
                    let el = element_from(&start, &ns, &self.limits)?;
                    match stack.last_mut() {
                        Some(parent) => parent.push_child(el),
                        None => return Ok(el),
                    }
                }
                Event::End(_) => match stack.pop() {
                    Some(done) => match stack.last_mut() {
                        Some(parent) => parent.push_child(done),
                        None => return Ok(done),
                    },
                    None => return Err(XmlError::StreamEnd),
                },
                Event::Text(t) => {
                    let text = t.xml10_content();
                    check_chars(&text)?;
                    match stack.last_mut() {
                        Some(top) => top.push_text(text),
                        None if text.chars().all(|c| c.is_ascii_whitespace()) => {}
                        None => return Err(XmlError::TextBetweenStanzas),
                    }
                }
                Event::CData(t) => {
                    let text = t.xml10_content();
                    check_chars(&text)?;
                    match stack.last_mut() {
                        Some(top) => top.push_text(text),
                        None => return Err(XmlError::TextBetweenStanzas),
                    }
                }
                Event::GeneralRef(r) => {
                    let c = resolve_entity(&r)?;
                    match stack.last_mut() {
                        Some(top) => top.push_text(c.to_string()),
                        None => return Err(XmlError::TextBetweenStanzas),
                    }
                }
                Event::Eof => {
                    return Err(if stack.is_empty() {
                        XmlError::Closed
                    } else {
                        XmlError::Truncated
                    });
                }
                other => {
                    return Err(refuse(&other).unwrap_or(XmlError::Restricted("this construct")));
                }
            }
        }
    }
}

fn refuse(event: &Event<'_>) -> Option<XmlError> {
    match event {
        Event::DocType(_) => Some(XmlError::Restricted("a DOCTYPE")),
        Event::PI(_) => Some(XmlError::Restricted("a processing instruction")),
        Event::Comment(_) => Some(XmlError::Restricted("a comment")),
        Event::Decl(_) => Some(XmlError::Restricted("an XML declaration after the start")),
        _ => None,
    }
}

fn resolve_entity(r: &quick_xml::events::BytesRef<'_>) -> Result<char, XmlError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            _ => Err(XmlError::InvalidChar),
        };
    }
    match r.as_ref() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(XmlError::UnknownEntity),
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn check_chars(s: &str) -> Result<(), XmlError> {
    if s.chars().all(is_xml_char) {
        Ok(())
    } else {
        Err(XmlError::InvalidChar)
    }
}

fn element_from(
    start: &BytesStart<'_>,
    ns: &ResolveResult<'_>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let ns = match ns {
        // quick-xml hands the namespace name over as written in the declaration (entities not
        // resolved, characters not checked): decode it like any attribute value.
        ResolveResult::Bound(ns) => attribute_value(&Attribute {
            key: QName("xmlns"),
            value: Cow::Borrowed(ns.0),
        })?,
        ResolveResult::Unbound => Cow::Borrowed(""),
        ResolveResult::Unknown(_) => {
            return Err(XmlError::Syntax(
                "an element uses an undeclared namespace prefix".into(),
            ));
        }
    };
    if !is_qname(start.name().as_ref()) {
        return Err(XmlError::Syntax(
            "an element name is not a valid XML name".into(),
        ));
    }
    let local = start.local_name();
    let mut el = Element::new(local.as_ref(), ns);
    let mut count = 0usize;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Syntax(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(XmlError::TooManyAttributes(limits.max_attrs));
        }
        if !is_qname(attr.key.as_ref()) {
            return Err(XmlError::Syntax(
                "an attribute name is not a valid XML name".into(),
            ));
        }
        let value = attribute_value(&attr)?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        el.set_attr(attr.key.as_ref(), value);
    }
    Ok(el)
}

/// A qualified name (Namespaces in XML 1.0 `QName`): one name, or a prefix and a local name
/// joined by one colon. quick-xml takes whatever stands before whitespace, `/` or `>` as the name.
fn is_qname(name: &str) -> bool {
    let mut parts = name.split(':');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => is_ncname(first),
        (Some(local), None) => is_ncname(first) && is_ncname(local),
        (Some(_), Some(_)) => false,
    }
}

/// An XML 1.0 `Name` without colons.
fn is_ncname(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(|c| is_name_start_char(c) || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}'))
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// An attribute's value with entities resolved and whitespace normalised; refused if it holds a
/// character XML does not allow.
fn attribute_value<'a>(attr: &Attribute<'a>) -> Result<Cow<'a, str>, XmlError> {
    let value = attr
        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .map_err(|_| XmlError::UnknownEntity)?;
    check_chars(&value)?;
    Ok(value)
}

fn map_err(e: quick_xml::Error, max_stanza_bytes: usize) -> XmlError {
    match e {
        quick_xml::Error::Io(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<BudgetExhausted>())
            {
                XmlError::TooLarge(max_stanza_bytes)
            } else {
                XmlError::Io(io::Error::new(io.kind(), io.to_string()))
            }
        }
        quick_xml::Error::Encoding(_) => XmlError::Syntax("invalid UTF-8".into()),
        quick_xml::Error::Escape(_) => XmlError::UnknownEntity,
        other => XmlError::Syntax(other.to_string()),
    }
}
