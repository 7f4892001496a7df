//! Matrix HTML → XEP-0393 text: walks the tree of [`html::parse`] and drives a [`Writer`].

use ruma::{OwnedUserId, UserId};

use super::html::{self, Element, Node};
use super::styling::{self, Style, Writer};

/// Elements whose content is never shown. (The rich-reply fallback, `mx-reply`, is not even in
/// the tree: [`html::parse`] leaves it out.)
const HIDDEN: &[&str] = &["script", "style", "head", "title", "template", "textarea"];

/// Elements that start and end a line of their own and are otherwise shown as their content
/// (separated by spaces).
const BLOCKS: &str = "p div section article header footer nav aside main address figure \
                      figcaption details summary dl dt dd table thead tbody tfoot tr caption hr \
                      center";

/// The styled text for a `formatted_body`; `None` if the input is refused as too large or too
/// deep (see [`html::MAX_INPUT_BYTES`], [`html::MAX_DEPTH`]).
pub(super) fn html_to_styling(
    input: &str,
    names: &dyn Fn(&UserId) -> Option<String>,
) -> Option<String> {
    let nodes = html::parse(input).ok()?;
    let mut writer = Writer::new();
    Walker { names }.nodes(&nodes, &mut writer);
    Some(writer.finish())
}

struct Walker<'a> {
    names: &'a dyn Fn(&UserId) -> Option<String>,
}

impl Walker<'_> {
    fn nodes(&self, nodes: &[Node], w: &mut Writer) {
        for node in nodes {
            self.node(node, w);
        }
    }

    fn node(&self, node: &Node, w: &mut Writer) {
        match node {
            Node::Text(text) => w.text(text),
            Node::Element(element) => self.element(element, w),
        }
    }

    /// The element's content written into a writer of its own, for a prefixed block.
    fn apart(&self, nodes: &[Node]) -> String {
        let mut inner = Writer::new();
        self.nodes(nodes, &mut inner);
        inner.finish()
    }

    fn element(&self, e: &Element, w: &mut Writer) {
        match e.name.as_str() {
            name if HIDDEN.contains(&name) => {}
            "br" => w.line_break(),
            "b" | "strong" => self.styled(Style::Strong, e, w),
            "i" | "em" => self.styled(Style::Emphasis, e, w),
            "del" | "s" | "strike" => self.styled(Style::Strike, e, w),
            "code" => w.code(&e.text_content()),
            // The parser already dropped a line break right after `<pre>`, as HTML does.
            "pre" => w.preformatted(pre_language(e).unwrap_or(""), &e.text_content()),
            "blockquote" => w.quote(&self.apart(&e.children)),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                w.block_break();
                self.styled(Style::Strong, e, w);
                w.block_break();
            }
            "ul" | "ol" => self.list(e, w),
            "li" => w.prefixed("• ", "  ", &self.apart(&e.children)),
            "a" => self.link(e, w),
            "img" => w.text(e.attr("alt").unwrap_or("")),
            "td" | "th" => {
                w.space();
                self.nodes(&e.children, w);
                w.space();
            }
            name if BLOCKS.split_whitespace().any(|b| b == name) => {
                w.block_break();
                self.nodes(&e.children, w);
                w.block_break();
            }
            _ => self.nodes(&e.children, w),
        }
    }

    fn styled(&self, style: Style, e: &Element, w: &mut Writer) {
        let span = w.open(style);
        self.nodes(&e.children, w);
        w.close(span);
    }

    /// `• item` lines, or `N. item` from the `start` attribute on; continuation lines indented.
    fn list(&self, e: &Element, w: &mut Writer) {
        let ordered = e.name == "ol";
        let mut number: i64 = e
            .attr("start")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        w.block_break();
        for child in &e.children {
            match child {
                Node::Element(li) if li.name == "li" => {
                    let bullet = if ordered {
                        format!("{number}. ")
                    } else {
                        "• ".to_owned()
                    };
                    number = number.saturating_add(1);
                    let indent = " ".repeat(bullet.chars().count());
                    w.prefixed(&bullet, &indent, &self.apart(&li.children));
                }
                Node::Text(text) if text.trim().is_empty() => {}
                other => {
                    w.block_break();
                    self.node(other, w);
                    w.block_break();
                }
            }
        }
        w.block_break();
    }

    /// A pill shows the name; another link shows its text, and its target in parentheses unless
    /// the text already says it.
    fn link(&self, e: &Element, w: &mut Writer) {
        let href = e.attr("href").unwrap_or("").trim();
        if let Some(user) = pill_user(href) {
            match (self.names)(&user) {
                Some(name) => w.text(&name),
                None => self.nodes(&e.children, w),
            }
            return;
        }
        self.nodes(&e.children, w);
        let text = e.text_content();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if href.is_empty() || same_target(&text, href) {
            return;
        }
        if !text.is_empty() {
            w.space();
            w.text("(");
        }
        w.text(href);
        if !text.is_empty() {
            w.text(")");
        }
    }
}

/// The language of `<pre><code class="language-x">`, if it is one a fence can carry.
fn pre_language(pre: &Element) -> Option<&str> {
    let code = pre.children.iter().find_map(|n| match n {
        Node::Element(e) if e.name == "code" => Some(e),
        _ => None,
    })?;
    let lang = code
        .attr("class")?
        .split_whitespace()
        .find_map(|c| c.strip_prefix("language-"))?;
    styling::language(lang)
}

/// The user a pill links to: `https://matrix.to/#/@user:server` or `matrix:u/user:server`.
fn pill_user(href: &str) -> Option<OwnedUserId> {
    let id = if let Some(rest) = strip_prefix_ignore_case(href, "https://matrix.to/#/")
        .or_else(|| strip_prefix_ignore_case(href, "http://matrix.to/#/"))
    {
        percent_decode(rest.split('?').next()?)?
    } else {
        let rest = strip_prefix_ignore_case(href, "matrix:u/")?;
        format!("@{}", percent_decode(rest.split(['?', '#']).next()?)?)
    };
    if !id.starts_with('@') {
        return None;
    }
    UserId::parse(id).ok()
}

/// Whether a link's text already shows its target, up to `mailto:`, the scheme and a final `/`.
fn same_target(text: &str, href: &str) -> bool {
    fn bare(s: &str) -> &str {
        let s = ["mailto:", "https://", "http://"]
            .iter()
            .find_map(|p| strip_prefix_ignore_case(s, p))
            .unwrap_or(s);
        s.trim_end_matches('/')
    }
    text == href || (!text.is_empty() && bare(text) == bare(href))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `%XX` escapes decoded; `None` if the result is not UTF-8. A `%` without two hex digits stays.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let hex = hex.and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
