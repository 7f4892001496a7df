//! Serialising elements. Text and attribute values are escaped here and only here.

use super::element::{Element, Node};

/// Appends `el` to `out`. `parent_ns` is the default namespace in scope; `xmlns` is written only
/// when the element's namespace differs from it.
pub(crate) fn write_element(out: &mut String, el: &Element, parent_ns: &str) {
    out.push('<');
    out.push_str(el.name());
    if el.ns() != parent_ns {
        out.push_str(" xmlns='");
        escape_into(out, el.ns(), true);
        out.push('\'');
    }
    for (k, v) in el.attrs() {
        out.push(' ');
        out.push_str(k);
        out.push_str("='");
        escape_into(out, v, true);
        out.push('\'');
    }
    if el.nodes().is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in el.nodes() {
        match node {
            Node::Element(child) => write_element(out, child, el.ns()),
            Node::Text(t) => escape_into(out, t, false),
        }
    }
    out.push_str("</");
    out.push_str(el.name());
    out.push('>');
}

/// Escapes `&`, `<`, `>` always, quotes inside attributes, and control characters that XML 1.0
/// cannot carry are replaced by U+FFFD, so whatever a caller puts in, the output stays
/// well-formed.
pub(crate) fn escape_into(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attr => out.push_str("&apos;"),
            '"' if attr => out.push_str("&quot;"),
            '\t' | '\n' if attr => out.push_str(if c == '\t' { "&#9;" } else { "&#10;" }),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// The XML 1.0 `Char` production, minus what `escape_into` handles itself.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        let el = Element::new("body", "jabber:client")
            .attr("id", "a'b\"c<&>")
            .text("1 < 2 & 3 > 2 \u{1}");
        assert_eq!(
            el.to_xml("jabber:client"),
            "<body id='a&apos;b&quot;c&lt;&amp;&gt;'>1 &lt; 2 &amp; 3 &gt; 2 \u{FFFD}</body>"
        );
    }

    #[test]
    fn namespaces_are_declared_where_they_change() {
        let el = Element::new("iq", "jabber:client")
            .attr("type", "get")
            .child(
                Element::new("query", "jabber:iq:roster")
                    .child(Element::new("item", "jabber:iq:roster")),
            );
        assert_eq!(
            el.to_xml("jabber:client"),
            "<iq type='get'><query xmlns='jabber:iq:roster'><item/></query></iq>"
        );
        assert_eq!(
            Element::new("r", "urn:xmpp:sm:3").to_xml("jabber:client"),
            "<r xmlns='urn:xmpp:sm:3'/>"
        );
    }

    #[test]
    fn newlines_in_attributes_survive_a_round_trip() {
        let el = Element::new("x", "a").attr("v", "l1\nl2\tt\r");
        assert_eq!(el.to_xml("a"), "<x v='l1&#10;l2&#9;t&#13;'/>");
    }
}
