//! A small reader for the HTML subset Matrix clients put in `formatted_body`.
//!
//! This is not an HTML5 parser and does not try to be one. It is tolerant: anything it does not
//! understand becomes text or is skipped, it never fails on malformed markup, and it never panics.
//! It is bounded: [`parse`] refuses input above [`MAX_INPUT_BYTES`] and element nesting deeper
//! than [`MAX_DEPTH`], so the caller can fall back to the plain body.
//!
//! Tokens carry decoded text (entities resolved) and lower-cased tag and attribute names. The tree
//! builder closes elements the way a reader expects: an end tag closes everything opened after
//! its start tag, a stray end tag is ignored, a new `<li>` closes the open item of the same list,
//! a new `<p>` closes an open `<p>`, and what is still open at the end is closed there.

use std::borrow::Cow;

/// Larger `formatted_body` input is not parsed.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Deeper element nesting is not parsed.
pub const MAX_DEPTH: usize = 100;

/// Elements that never have content; their end tags are ignored.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];
/// Elements whose content is raw text up to their end tag (no tags, no entities inside).
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title"];

/// Why [`parse`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("HTML input larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    #[error("HTML nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
}

/// One lexical unit of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    Start {
        name: String,
        attrs: Vec<(String, String)>,
        self_closing: bool,
    },
    End {
        name: String,
    },
    Text(Cow<'a, str>),
}

/// A node of the tree [`parse`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Lower-case tag name.
    pub name: String,
    /// Lower-case attribute names with decoded values, in document order.
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

    /// The value of the first attribute called `name` (lower case).
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

fn collect_text(nodes: &[Node], out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) if e.name == "br" => out.push('\n'),
            Node::Element(e) => collect_text(&e.children, out),
        }
    }
}

/// Parses `input` into a forest of nodes, tolerating any malformed markup.
pub fn parse(input: &str) -> Result<Vec<Node>, Refused> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(Refused::TooLarge);
    }
    // stack[0] is the document root; every other entry is an open element.
    let mut stack = vec![Element::new(String::new(), Vec::new())];
    for token in Tokenizer::new(input) {
        match token {
            Token::Text(text) => push_text(top(&mut stack), &text),
            Token::Start {
                name,
                attrs,
                self_closing,
            } => {
                if VOID.contains(&name.as_str()) || self_closing {
                    top(&mut stack)
                        .children
                        .push(Node::Element(Element::new(name, attrs)));
                    continue;
                }
                close_implied(&mut stack, &name);
                if stack.len() > MAX_DEPTH {
                    return Err(Refused::TooDeep);
                }
                stack.push(Element::new(name, attrs));
            }
            Token::End { name } if name == "br" => {
                top(&mut stack)
                    .children
                    .push(Node::Element(Element::new(name, Vec::new())));
            }
            Token::End { name } => {
                if let Some(i) = stack.iter().skip(1).rposition(|e| e.name == name) {
                    close_down_to(&mut stack, i + 1);
                }
            }
        }
    }
    close_down_to(&mut stack, 1);
    let root = stack
        .pop()
        .unwrap_or_else(|| Element::new(String::new(), Vec::new()));
    Ok(root.children)
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

/// Closes what a new start tag `name` ends implicitly: an open `<li>` of the same list, an open
/// `<p>` directly above.
fn close_implied(stack: &mut Vec<Element>, name: &str) {
    match name {
        "li" => {
            let found = stack
                .iter()
                .skip(1)
                .rposition(|e| matches!(e.name.as_str(), "li" | "ul" | "ol"));
            if let Some(i) = found.map(|i| i + 1)
                && stack[i].name == "li"
            {
                close_down_to(stack, i);
            }
        }
        "p" if stack.last().is_some_and(|e| e.name == "p") => {
            let len = stack.len() - 1;
            close_down_to(stack, len);
        }
        _ => {}
    }
}

/// Splits HTML into [`Token`]s. Comments, doctypes and processing instructions are skipped; a `<`
/// that does not start a tag is text; a tag cut off by the end of the input is dropped.
pub struct Tokenizer<'a> {
    input: &'a str,
    pos: usize,
    /// Set after the start tag of a raw-text element: its content comes next, as one text token.
    raw_text_of: Option<&'static str>,
}

impl<'a> Tokenizer<'a> {
    pub fn new(input: &'a str) -> Self {
        Tokenizer {
            input,
            pos: 0,
            raw_text_of: None,
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    /// Skips to just after the next `pattern` (or to the end).
    fn skip_past(&mut self, pattern: &str) {
        match self.rest().find(pattern) {
            Some(i) => self.pos += i + pattern.len(),
            None => self.pos = self.input.len(),
        }
    }

    fn raw_text(&mut self, element: &str) -> Option<Token<'a>> {
        let rest = self.rest();
        let closing = format!("</{element}");
        let end = find_ascii_case_insensitive(rest, &closing).unwrap_or(rest.len());
        self.pos += end;
        (end > 0).then(|| Token::Text(Cow::Borrowed(&rest[..end])))
    }

    fn text(&mut self) -> Token<'a> {
        let rest = self.rest();
        // The first character is consumed even if it is a '<' that starts no markup.
        let first = rest.chars().next().map_or(0, char::len_utf8);
        let end = rest[first..].find('<').map_or(rest.len(), |i| i + first);
        self.pos += end;
        Token::Text(decode_entities(&rest[..end]))
    }

    /// At a '<': a tag, something skipped (`Ok(None)`), or plain text (`Err(())`).
    fn markup(&mut self) -> Result<Option<Token<'a>>, ()> {
        let rest = self.rest();
        let next = |n: usize| rest.as_bytes().get(n).copied().unwrap_or(0);
        if rest.starts_with("<!--") {
            self.pos += 4;
            self.skip_past("-->");
            Ok(None)
        } else if next(1) == b'/' && next(2).is_ascii_alphabetic() {
            self.pos += 2;
            let name = self.tag_name();
            self.skip_past(">");
            Ok(Some(Token::End { name }))
        } else if next(1).is_ascii_alphabetic() {
            self.pos += 1;
            Ok(self.start_tag())
        } else if matches!(next(1), b'!' | b'?' | b'/') {
            self.skip_past(">");
            Ok(None)
        } else {
            Err(())
        }
    }

    fn tag_name(&mut self) -> String {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
            .unwrap_or(rest.len());
        self.pos += end;
        rest[..end].to_ascii_lowercase()
    }

    /// After `<` and at the tag name; `None` if the input ends inside the tag.
    fn start_tag(&mut self) -> Option<Token<'a>> {
        let name = self.tag_name();
        let mut attrs = Vec::new();
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
            self.pos += rest.len() - trimmed.len();
            if trimmed.is_empty() {
                return None;
            } else if trimmed.starts_with("/>") {
                self.pos += 2;
                return Some(Token::Start {
                    name,
                    attrs,
                    self_closing: true,
                });
            } else if trimmed.starts_with('>') {
                self.pos += 1;
                if let Some(raw) = RAW_TEXT.iter().find(|r| **r == name) {
                    self.raw_text_of = Some(raw);
                }
                return Some(Token::Start {
                    name,
                    attrs,
                    self_closing: false,
                });
            } else if trimmed.starts_with('/') {
                self.pos += 1;
            } else {
                attrs.push(self.attribute()?);
            }
        }
    }

    /// At an attribute name; `None` if the input ends inside a quoted value.
    fn attribute(&mut self) -> Option<(String, String)> {
        let rest = self.rest();
        // An '=' right at the start belongs to the name, as in HTML5.
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c.is_ascii_whitespace() || matches!(c, '/' | '>' | '='))
            .map_or(rest.len(), |(i, _)| i);
        let name = rest[..end].to_ascii_lowercase();
        self.pos += end;
        let rest = self.rest();
        let after_space = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let Some(value) = after_space.strip_prefix('=') else {
            return Some((name, String::new()));
        };
        let value_start = value.trim_start_matches(|c: char| c.is_ascii_whitespace());
        self.pos += rest.len() - value_start.len();
        let raw = match value_start.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let close = value_start[1..].find(quote)?;
                self.pos += close + 2;
                &value_start[1..close + 1]
            }
            _ => {
                let end = value_start
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .unwrap_or(value_start.len());
                self.pos += end;
                &value_start[..end]
            }
        };
        Some((name, decode_entities(raw).into_owned()))
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(element) = self.raw_text_of.take()
            && let Some(token) = self.raw_text(element)
        {
            return Some(token);
        }
        while self.pos < self.input.len() {
            if !self.rest().starts_with('<') {
                return Some(self.text());
            }
            match self.markup() {
                Ok(Some(token)) => return Some(token),
                Ok(None) => {}
                Err(()) => return Some(self.text()),
            }
        }
        None
    }
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Resolves character references: `&amp; &lt; &gt; &quot; &apos; &nbsp;`, `&#NNN;` and `&#xHH;`.
/// An unknown or unterminated reference stays as written; a number that is no Unicode scalar value
/// becomes U+FFFD.
pub fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        match reference(rest) {
            Some((ch, len)) => {
                out.push(ch);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// At a '&': the character and the length of the reference, if it is one we know.
fn reference(text: &str) -> Option<(char, usize)> {
    // Longer than any reference we know ("&#x0010FFFF;"), short enough to stay cheap.
    let semi = text
        .as_bytes()
        .iter()
        .skip(1)
        .take(16)
        .position(|&b| b == b';')?
        + 1;
    let inner = &text[1..semi];
    let ch = if let Some(number) = inner.strip_prefix('#') {
        let (digits, radix) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (number, 10),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        u32::from_str_radix(digits, radix)
            .ok()
            .filter(|&n| n != 0)
            .and_then(char::from_u32)
            .unwrap_or(char::REPLACEMENT_CHARACTER)
    } else {
        match inner {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{a0}',
            _ => return None,
        }
    };
    Some((ch, semi + 1))
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

    #[test]
    fn tokenizer_tokens() {
        let tokens: Vec<Token<'_>> =
            Tokenizer::new("<A HREF=x data-y='1 2' z>t&amp;</a><br/>").collect();
        let attrs = vec![
            ("href".to_owned(), "x".to_owned()),
            ("data-y".to_owned(), "1 2".to_owned()),
            ("z".to_owned(), String::new()),
        ];
        assert_eq!(
            tokens,
            vec![
                Token::Start {
                    name: "a".into(),
                    attrs,
                    self_closing: false
                },
                Token::Text("t&".into()),
                Token::End { name: "a".into() },
                Token::Start {
                    name: "br".into(),
                    attrs: vec![],
                    self_closing: true
                },
            ]
        );
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
    }

    #[test]
    fn tree_closes_what_is_open() {
        let nodes = parse("<ul><li>a<li>b</ul>c").expect("parses");
        let Node::Element(ul) = &nodes[0] else {
            panic!("{nodes:?}")
        };
        assert_eq!(ul.children.len(), 2);
        assert_eq!(nodes[1], Node::Text("c".into()));
    }

    #[test]
    fn entities_decode() {
        let cases = [
            ("no entity", "no entity"),
            ("&lt;&gt;&amp;&quot;&apos;&#39;", "<>&\"''"),
            ("&#65;&#x42;&#X43;", "ABC"),
            ("&#99999999999; &#xD800;", "\u{fffd} \u{fffd}"),
            ("&ampx; &amp &", "&ampx; &amp &"),
            ("é&eacute;", "é&eacute;"),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_entities(input), expected, "{input:?}");
        }
    }
}
