//! Streaming XML for XMPP on quick-xml: an owned element tree, a bounded stream reader and an
//! escaping writer. Nothing here knows what a stanza means.

mod element;
mod limits;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub use element::{Element, Node};
pub use limits::Limits;
pub use reader::XmlError;
/// The bounded stream reader; the client owns its own, so only tests and the fuzzer need it.
#[cfg(feature = "wire")]
pub use reader::XmlReader;
#[cfg(not(feature = "wire"))]
pub(crate) use reader::XmlReader;

/// The XML declaration and stream header we open every stream with.
pub fn stream_header(to: &str, lang: &str) -> String {
    let mut out = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='",
    );
    writer::escape_into(&mut out, to, true);
    out.push_str("' xml:lang='");
    writer::escape_into(&mut out, lang, true);
    out.push_str("'>");
    out
}

/// Closes the stream we opened.
pub const STREAM_CLOSE: &str = "</stream:stream>";
