//! Fuzzes the XMPP stream reader (`interop::xml::XmlReader`) with whole streams: the input is
//! read as a stream header and then elements until the reader gives up, the way the bridge reads
//! a peer's socket. For every element read it also checks a round trip: the element written with
//! `to_xml` and read again inside a fresh stream header must come back equal.
//!
//! Input layout: if the first byte is `<` or XML whitespace, the whole input is the stream and the
//! default limits apply (this is what the seed corpus looks like). Otherwise the first two bytes
//! pick small limits (so the limit paths are reached) and the rest is the stream.
#![no_main]

use std::sync::OnceLock;

use xmpp_omemo::stanza::{FromElement, IntoElement, Stanza};
use xmpp_omemo::xml::{Element, Limits, XmlError, XmlReader};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::{Builder, Runtime};

/// The stream header the round trip re-reads each element in (default namespace jabber:client,
/// the `parent_ns` the element is written against).
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='fuzz' from='xmpp.test' version='1.0'>";

/// One current-thread runtime for the whole run: building one per input was about 20% slower,
/// and polling with a no-op waker about 10% slower (measured, see fuzz/README.md).
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Builder::new_current_thread().build().expect("tokio runtime"))
}

/// Splits off the limits selector. Returns the limits and the stream bytes.
fn split_limits(data: &[u8]) -> (Limits, &[u8]) {
    match data {
        [first, ..] if *first == b'<' || first.is_ascii_whitespace() => (Limits::default(), data),
        [a, b, rest @ ..] => {
            let limits = Limits {
                // 128 B .. 16 KiB: from "the header hardly fits" to a few stanzas.
                max_stanza_bytes: 128usize << (a & 0x07),
                // 1 ..= 8
                max_depth: 1 + usize::from((a >> 3) & 0x07),
                // The header's namespace declarations count too, so not below 2.
                max_attrs: [2, 3, 4, 5, 6, 8, 12, 64][usize::from((a >> 6) | ((b & 1) << 2))],
                // 1 ..= 64
                max_elements: 1 + usize::from((b >> 1) & 0x3f),
            };
            (limits, rest)
        }
        _ => (Limits::default(), data),
    }
}

fuzz_target!(|data: &[u8]| {
    let (limits, stream) = split_limits(data);
    runtime().block_on(run(stream, limits));
});

async fn run(stream: &[u8], limits: Limits) {
    let mut reader = XmlReader::new(stream, limits.clone());
    let header = match reader.read_header().await {
        Ok(h) => h,
        Err(e) => {
            check_error(&e);
            return;
        }
    };
    // The header comes back without children.
    assert!(header.nodes().is_empty(), "the stream header came back with children");
    let _ = format!("{header:?}");
    loop {
        match reader.next_element().await {
            Ok(el) => {
                check_within_limits(&el, &limits);
                round_trip(&el, &limits).await;
                let _ = format!("{el:?}");

                // The stanza layer must not panic on anything the reader accepts; "not mine"
                // and "malformed" are both fine answers. A parsed stanza must write back into an
                // element that parses again.
                if let Ok(stanza) = Stanza::from_element(el.clone()) {
                    let again = Stanza::from_element(stanza.into_element());
                    assert!(again.is_ok(), "a parsed stanza did not survive being written");
                }
            }
            Err(e) => {
                check_error(&e);
                return;
            }
        }
    }
}

/// The error's Display must not panic; an input from memory never yields an I/O error.
fn check_error(e: &XmlError) {
    let _ = e.to_string();
    assert!(!matches!(e, XmlError::Io(_)), "I/O error reading from a byte slice: {e}");
}

/// Every element the reader returned respects the limits it was given.
fn check_within_limits(el: &Element, limits: &Limits) {
    fn walk(el: &Element, depth: usize, count: &mut usize, limits: &Limits) {
        *count += 1;
        assert!(depth <= limits.max_depth, "element at depth {depth} > max_depth {}", limits.max_depth);
        assert!(el.attrs().count() <= limits.max_attrs, "more attributes than max_attrs {}", limits.max_attrs);
        for c in el.children() {
            walk(c, depth + 1, count, limits);
        }
    }
    let mut count = 0;
    walk(el, 1, &mut count, limits);
    assert!(count <= limits.max_elements, "{count} elements > max_elements {}", limits.max_elements);
}

/// Writes `el` and reads it back inside a fresh header: it must come back equal, and alone.
async fn round_trip(el: &Element, limits: &Limits) {
    let xml = el.to_xml("jabber:client");
    let doc = format!("{HEADER}{xml}");
    // Depth and element count are unchanged by writing; writing can add one `xmlns` attribute
    // (a namespace the original bound through a prefix on an ancestor) and escaping grows bytes.
    let again_limits = Limits {
        max_stanza_bytes: doc.len() + 64,
        max_depth: limits.max_depth,
        // (our HEADER has 5 attributes)
        max_attrs: (limits.max_attrs + 1).max(5),
        max_elements: limits.max_elements,
    };
    let mut again = XmlReader::new(doc.as_bytes(), again_limits);
    if let Err(e) = again.read_header().await {
        panic!("round trip: our own header was refused: {e}");
    }
    let back = match again.next_element().await {
        Ok(back) => back,
        Err(e) => panic!("round trip: re-reading the written element failed: {e}\nwritten: {xml:?}"),
    };
    if back != *el {
        panic!("round trip changed the element\nwritten: {xml:?}\nbefore: {}\nafter:  {}", dump(el), dump(&back));
    }
    match again.next_element().await {
        Err(XmlError::Closed) => {}
        other => panic!("round trip: expected the end of input after one element, got {other:?}\nwritten: {xml:?}"),
    }
}

/// A full dump (names, namespaces, attribute values and text) for crash reports. Only ever
/// printed by this fuzz target, on a crash, about fuzzer-made input.
fn dump(el: &Element) -> String {
    use xmpp_omemo::xml::Node;
    let mut out = format!("<{{{}}}{}", el.ns(), el.name());
    for (k, v) in el.attrs() {
        out.push_str(&format!(" {k}={v:?}"));
    }
    out.push('>');
    for n in el.nodes() {
        match n {
            Node::Element(c) => out.push_str(&dump(c)),
            Node::Text(t) => out.push_str(&format!("{t:?}")),
        }
    }
    out.push_str(&format!("</{}>", el.name()));
    out
}
