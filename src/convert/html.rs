//! Reads the HTML Matrix clients put in `formatted_body` into a small tree.
//!
//! Parsing is done by [`ruma::html`] (html5ever, an HTML5 parser): character references are
//! resolved the way browsers resolve them (all named ones, numeric ones, legacy ones without `;`),
//! malformed markup is repaired as browsers repair it (unclosed, stray and misnested tags, implied
//! end tags of `<p>` and `<li>`, comments and doctypes dropped), and it never fails. The rich-reply
//! fallback (`<mx-reply>`) is left out of the tree.
//!
//! It is bounded: [`parse`] refuses input above [`MAX_INPUT_BYTES`] and a tree nested deeper than
//! [`MAX_DEPTH`] elements, so the caller can fall back to the plain body. Walking the parsed tree
//! and freeing it never recurse, however deep the input nests (`ruma::html` frees its tree
//! recursively, so [`parse`] takes it apart from the top down itself).
//!
//! Cost: html5ever scans its stack of open elements, so input nested thousands deep (refused) takes
//! time quadratic in the depth, and `ruma::html` finds a node's next sibling by a search among its
//! siblings, so thousands of siblings take time quadratic in their number. Within the size bound,
//! the worst inputs measured take about 0.5 s (deep) and 0.1 s (wide) in an optimised build.

use std::borrow::Cow;

use ruma::html::{Html, NodeData, NodeRef};

/// Larger `formatted_body` input is not parsed.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Deeper element nesting is not parsed.
pub const MAX_DEPTH: usize = 100;

/// The element of a Matrix rich-reply fallback, left out of the tree.
const REPLY_FALLBACK: &str = "mx-reply";

/// Why [`parse`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("HTML input larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    #[error("HTML nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
}

/// A node of the tree [`parse`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag name: lower case, except for a few SVG names in their SVG case (`foreignObject`).
    pub name: String,
    /// Attribute names (lower case, as tag names) with decoded values, sorted by name, each name
    /// once (the first of duplicates).
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    fn new(name: String, attrs: Vec<(String, String)>) -> Self {
        Element {
            name,
            attrs,
            children: Vec::new(),
        }
    }

    /// The value of the attribute called `name` (lower case).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All text below this element, as written (entities decoded, `<br>` as a newline).
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        collect_text(&self.children, &mut out);
        out
    }
}

/// Recursion is bounded: a tree from [`parse`] is at most [`MAX_DEPTH`] deep.
fn collect_text(nodes: &[Node], out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) if e.name == "br" => out.push('\n'),
            Node::Element(e) => collect_text(&e.children, out),
        }
    }
}

/// Parses `input` into a forest of nodes, tolerating any malformed markup and leaving out the
/// reply fallback; refuses input above [`MAX_INPUT_BYTES`] and elements nested deeper than
/// [`MAX_DEPTH`] (text inside the deepest allowed element is fine).
pub fn parse(input: &str) -> Result<Vec<Node>, Refused> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(Refused::TooLarge);
    }
    let html = Html::parse(input);
    let nodes = preorder(&html);
    // Every node is now held by `nodes` too, parents before children: freeing `html` frees only
    // its root, and each node freed from `nodes` has no child left to free but its own handle.
    drop(html);
    let too_deep =
        |(node, depth): &(NodeRef, usize)| *depth > MAX_DEPTH && node.as_element().is_some();
    if nodes.iter().any(too_deep) {
        return Err(Refused::TooDeep);
    }
    Ok(build(&nodes))
}

/// Every node below the root, in document order, with its depth (1 for a top-level node, 2 for
/// a node inside a top-level element, …). Iterative: the depth of the tree is not bounded yet.
fn preorder(html: &Html) -> Vec<(NodeRef, usize)> {
    let mut out = Vec::new();
    // The ancestors of `next`, whose following siblings are still to be visited.
    let mut open: Vec<NodeRef> = Vec::new();
    let mut next = html.first_child();
    loop {
        match next {
            Some(node) => {
                next = node.first_child();
                out.push((node.clone(), open.len() + 1));
                open.push(node);
            }
            None => match open.pop() {
                Some(done) => next = done.next_sibling(),
                None => return out,
            },
        }
    }
}

/// Our tree from the output of [`preorder`], without the reply fallback. Depths must not exceed
/// [`MAX_DEPTH`] for the result to be freed without deep recursion.
fn build(nodes: &[(NodeRef, usize)]) -> Vec<Node> {
    // stack[0] is the root; stack[d] the open element at depth d.
    let mut stack = vec![Element::new(String::new(), Vec::new())];
    // While inside a reply fallback: its depth.
    let mut skipping: Option<usize> = None;
    for (node, depth) in nodes {
        let depth = *depth;
        if skipping.is_some_and(|d| depth > d) {
            continue;
        }
        skipping = None;
        close_down_to(&mut stack, depth);
        match node.data() {
            NodeData::Text(text) => push_text(top(&mut stack), &text.borrow()),
            NodeData::Element(element) if &*element.name.local == REPLY_FALLBACK => {
                skipping = Some(depth);
            }
            NodeData::Element(element) => {
                let attrs = element
                    .attrs
                    .borrow()
                    .iter()
                    .map(|a| (a.name.local.to_string(), a.value.to_string()))
                    .collect();
                stack.push(Element::new(element.name.local.to_string(), attrs));
            }
            // Comments and processing instructions.
            _ => {}
        }
    }
    close_down_to(&mut stack, 1);
    let root = stack
        .pop()
        .unwrap_or_else(|| Element::new(String::new(), Vec::new()));
    root.children
}

fn top(stack: &mut [Element]) -> &mut Element {
    stack.last_mut().expect("the root stays on the stack")
}

fn push_text(element: &mut Element, text: &str) {
    if let Some(Node::Text(previous)) = element.children.last_mut() {
        previous.push_str(text);
    } else {
        element.children.push(Node::Text(text.to_owned()));
    }
}

/// Pops open elements until the stack has `len` entries, attaching each to its parent.
fn close_down_to(stack: &mut Vec<Element>, len: usize) {
    while stack.len() > len.max(1) {
        let Some(done) = stack.pop() else { break };
        top(stack).children.push(Node::Element(done));
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &str) -> String {
        let nodes = parse(input).expect("parses");
        let mut out = String::new();
        collect_text(&nodes, &mut out);
        out
    }

    fn element(node: &Node) -> &Element {
        match node {
            Node::Element(e) => e,
            Node::Text(t) => panic!("text {t:?}, not an element"),
        }
    }

    #[test]
    fn tree_bounds() {
        assert_eq!(
            parse(&"x".repeat(MAX_INPUT_BYTES + 1)),
            Err(Refused::TooLarge)
        );
        assert!(parse(&"x".repeat(MAX_INPUT_BYTES)).is_ok());
        let deep = |n: usize| format!("{}x", "<i>".repeat(n));
        assert_eq!(parse(&deep(MAX_DEPTH + 1)), Err(Refused::TooDeep));
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        // Void elements and closed elements do not count.
        assert!(parse(&"<br><b>x</b>".repeat(1000)).is_ok());
        // Implied end tags do not count either.
        assert!(parse(&"<p>x".repeat(1000)).is_ok());
        assert!(parse(&format!("<ul>{}</ul>", "<li>x".repeat(1000))).is_ok());
        // Nesting inside the reply fallback counts too.
        let deep_reply = format!("<mx-reply>{}</mx-reply>x", "<b>".repeat(MAX_DEPTH));
        assert_eq!(parse(&deep_reply), Err(Refused::TooDeep));
    }

    /// Input nested thousands deep (as deep as the size bound lets it, where that parses fast),
    /// on a thread with a small stack: refused, and neither walking nor freeing the parsed tree
    /// recurses (freeing a `ruma::html::Html` this deep on its own overflows such a stack).
    #[test]
    fn deepest_input_is_refused_without_recursion() {
        let inputs = [
            "<i>".repeat(MAX_INPUT_BYTES / 3),
            format!("<mx-reply>{}", "<span>".repeat(MAX_INPUT_BYTES / 7)),
            "<div>".repeat(3000),
            "<ul><li>".repeat(2000),
            "<blockquote>".repeat(2000),
        ];
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for input in inputs {
                    assert!(input.len() <= MAX_INPUT_BYTES);
                    assert_eq!(parse(&input), Err(Refused::TooDeep), "{}", &input[..20]);
                }
            })
            .expect("thread starts")
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn tree_closes_what_is_open() {
        let nodes = parse("<ul><li>a<li>b</ul>c").expect("parses");
        assert_eq!(element(&nodes[0]).children.len(), 2);
        assert_eq!(nodes[1], Node::Text("c".into()));
    }

    #[test]
    fn names_and_attributes() {
        let nodes = parse("<A HREF=x data-y='1 2' z Href=dup>t&amp;</a><br/>").expect("parses");
        let a = element(&nodes[0]);
        assert_eq!(a.name, "a");
        assert_eq!(a.attr("href"), Some("x"));
        assert_eq!(a.attr("data-y"), Some("1 2"));
        assert_eq!(a.attr("z"), Some(""));
        assert_eq!(a.attrs.len(), 3, "{:?}", a.attrs);
        assert_eq!(a.children, vec![Node::Text("t&".into())]);
        assert_eq!(element(&nodes[1]).name, "br");
        let nodes = parse("<a href=\"?a=1&amp;b=2&copy=3\">x</a>").expect("parses");
        assert_eq!(element(&nodes[0]).attr("href"), Some("?a=1&b=2&copy=3"));
    }

    #[test]
    fn character_references_decode() {
        let cases = [
            ("no entity", "no entity"),
            ("&lt;&gt;&amp;&quot;&apos;&#39;", "<>&\"''"),
            (
                "wait&hellip; caf&eacute; &Eacute;t&eacute;",
                "wait… café Été",
            ),
            ("a&nbsp;b", "a\u{a0}b"),
            ("&euro;&mdash;&rarr;&hearts;&NotEqualTilde;", "€—→♥≂\u{338}"),
            ("&#65;&#x42;&#X43;&#233;&#x1F600;", "ABCé😀"),
            ("&#99999999999; &#xD800; &#0;", "\u{fffd} \u{fffd} \u{fffd}"),
            // Windows-1252 code points, as browsers read them.
            ("&#150;&#x80;", "–€"),
            // Legacy references without `;` are read as browsers read them.
            ("&amp &copy 2024 &eacutex", "& © 2024 éx"),
            ("&foo; &ampx; &#xZZ; &#; & x", "&foo; &x; &#xZZ; &#; & x"),
            ("é&eacute;", "éé"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input:?}");
        }
    }

    #[test]
    fn malformed_markup_is_repaired() {
        let cases = [
            ("<b>unclosed", "unclosed"),
            ("a</i>b</p>", "ab"),
            ("<<>", "<<>"),
            ("1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
            ("a <b", "a "),
            ("x<a href=\"y", "x"),
            ("a<!-- <b>hidden</b> -->b<!-- unterminated", "ab"),
            ("<!DOCTYPE html><?xml x?>ok</>", "ok"),
            (
                "<script>alert('<b>1</b>')</script>ok",
                "alert('<b>1</b>')ok",
            ),
            ("<pre>\nx</pre>", "x"),
            ("<table>t<tr><td>a</table>", "ta"),
            ("\u{0}a\u{fffd}", "a\u{fffd}"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input:?}");
        }
        // Misnested formatting is repaired by moving the end of the inner element.
        let nodes = parse("<b>a<i>b</b>c</i>").expect("parses");
        let b = element(&nodes[0]);
        assert_eq!((b.name.as_str(), b.text_content().as_str()), ("b", "ab"));
        let i = element(&nodes[1]);
        assert_eq!((i.name.as_str(), i.text_content().as_str()), ("i", "c"));
    }

    #[test]
    fn reply_fallback_is_left_out() {
        let nodes = parse(
            "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:s/$e\">In reply to</a> \
             <b>earlier</b></blockquote></mx-reply>an<MX-REPLY>x</MX-REPLY>swer",
        )
        .expect("parses");
        assert_eq!(nodes, vec![Node::Text("answer".into())]);
        assert_eq!(parse("<mx-reply>only</mx-reply>"), Ok(vec![]));
    }
}
