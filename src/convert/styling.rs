//! XEP-0393: Message Styling — <https://xmpp.org/extensions/xep-0393.html>
//!
//! Both directions of the styling syntax that XMPP clients (Conversations, Dino, Gajim, …) use
//! in plain `<body>` text:
//!
//! - [`parse`] reads a body into [`Block`]s and [`Span`]s by the XEP's rules, and [`to_html`]
//!   renders them as Matrix HTML;
//! - [`Writer`] builds styled text piece by piece (the HTML → styling direction) and emits a span
//!   only where [`parse`] reads it back as that same span, so nothing it writes is misread.
//!
//! The parser follows the XEP: a span opens at the start of its line, after whitespace or right
//! after a different opening directive, has no whitespace just inside either marker, holds at
//! least one character, never crosses a line and ends at the first marker that can close it
//! (lazy matching). Preformatted spans (`` `…` ``) hold plain text only. A line starting with
//! ```` ``` ```` opens a preformatted block that ends at a line of exactly ```` ``` ```` or at the
//! end of its parent block; lines starting with `>` form a quotation whose lines lose the `>` and
//! one leading whitespace character before their content is parsed again, so quotations nest.

use std::borrow::Cow;

use super::html::escape;

/// Quotations nested deeper than this are read as text (bounds the parser's recursion).
pub const MAX_QUOTE_DEPTH: usize = 32;

/// A block of a styled body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// One line of text; may be empty.
    Line(Vec<Span>),
    /// A preformatted block: the text after the opening fence, and the lines up to the closing
    /// fence (which is not part of it).
    Pre { info: String, lines: Vec<String> },
    /// A quotation and the blocks inside it.
    Quote(Vec<Block>),
}

/// The span styles that may contain other spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `*strong*`
    Strong,
    /// `_emphasis_`
    Emphasis,
    /// `~strike through~`
    Strike,
}

impl Style {
    /// The styling directive that opens and closes this span.
    pub fn marker(self) -> char {
        match self {
            Style::Strong => '*',
            Style::Emphasis => '_',
            Style::Strike => '~',
        }
    }

    fn from_marker(marker: char) -> Option<Style> {
        match marker {
            '*' => Some(Style::Strong),
            '_' => Some(Style::Emphasis),
            '~' => Some(Style::Strike),
            _ => None,
        }
    }

    fn html_tag(self) -> &'static str {
        match self {
            Style::Strong => "strong",
            Style::Emphasis => "em",
            Style::Strike => "del",
        }
    }
}

/// A run of text inside a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Plain(String),
    Styled(Style, Vec<Span>),
    /// A preformatted span: its text, never styled further.
    Pre(String),
}

/// The four span directives; the index is used by [`Closers`].
const MARKERS: [char; 4] = ['*', '_', '~', '`'];

/// Reads a body into blocks.
pub fn parse(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.split('\n').collect();
    parse_blocks(&lines, 0)
}

/// Whether the blocks hold any styling at all (a styled or preformatted span, a preformatted
/// block or a quotation).
pub fn is_styled(blocks: &[Block]) -> bool {
    blocks.iter().any(|block| match block {
        Block::Line(spans) => spans.iter().any(|s| !matches!(s, Span::Plain(_))),
        Block::Pre { .. } | Block::Quote(_) => true,
    })
}

fn parse_blocks(lines: &[&str], depth: usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(info) = line.strip_prefix("```") {
            let mut content = Vec::new();
            i += 1;
            while i < lines.len() && lines[i] != "```" {
                content.push(lines[i].to_owned());
                i += 1;
            }
            i += 1; // the closing fence, if there is one
            blocks.push(Block::Pre {
                info: info.to_owned(),
                lines: content,
            });
        } else if line.starts_with('>') && depth < MAX_QUOTE_DEPTH {
            let mut inner = Vec::new();
            while i < lines.len() && lines[i].starts_with('>') {
                inner.push(unquote(lines[i]));
                i += 1;
            }
            blocks.push(Block::Quote(parse_blocks(&inner, depth + 1)));
        } else {
            blocks.push(Block::Line(parse_line(line)));
            i += 1;
        }
    }
    blocks
}

/// A quoted line without its `>` and the first whitespace character after it.
fn unquote(line: &str) -> &str {
    let rest = &line[1..];
    match rest.chars().next() {
        Some(c) if c.is_whitespace() => &rest[c.len_utf8()..],
        _ => rest,
    }
}

fn parse_line(line: &str) -> Vec<Span> {
    if !line.contains(MARKERS) {
        return plain(line).into_iter().collect();
    }
    let chars: Vec<char> = line.chars().collect();
    let closers = Closers::new(&chars);
    spans(&chars, 0, chars.len(), None, &closers)
}

fn plain(text: &str) -> Option<Span> {
    (!text.is_empty()).then(|| Span::Plain(text.to_owned()))
}

/// For each directive and position, the first position at or after it that can close a span:
/// the directive's character, preceded by a character that is not whitespace. Precomputed once
/// per line so that a line full of unmatched openers stays linear.
struct Closers {
    next: [Vec<usize>; 4],
}

impl Closers {
    fn new(chars: &[char]) -> Self {
        let next = MARKERS.map(|marker| {
            let mut next = vec![usize::MAX; chars.len() + 1];
            for j in (0..chars.len()).rev() {
                let closes = j > 0 && chars[j] == marker && !chars[j - 1].is_whitespace();
                next[j] = if closes { j } else { next[j + 1] };
            }
            next
        });
        Closers { next }
    }

    /// The first closer of `MARKERS[kind]` in `from..end`.
    fn find(&self, kind: usize, from: usize, end: usize) -> Option<usize> {
        let j = *self.next[kind].get(from)?;
        (j < end).then_some(j)
    }
}

/// The spans of `chars[start..end]`; `outer` is the directive of the enclosing span, if any.
fn spans(
    chars: &[char],
    start: usize,
    end: usize,
    outer: Option<char>,
    closers: &Closers,
) -> Vec<Span> {
    let mut out = Vec::new();
    let mut plain_from = start;
    let mut i = start;
    while i < end {
        let marker = chars[i];
        let opens = i + 1 < end
            && !chars[i + 1].is_whitespace()
            && if i == start {
                outer != Some(marker)
            } else {
                chars[i - 1].is_whitespace()
            };
        let kind = MARKERS.iter().position(|&m| m == marker).filter(|_| opens);
        // The span must hold a character other than its own directive ("**" and "****" are
        // text), so the closer comes after the first such character. An opener follows
        // whitespace, so these scans never overlap and the line stays linear.
        let close = kind.and_then(|k| {
            let first_other = (i + 1..end).find(|&j| chars[j] != marker)?;
            closers.find(k, first_other + 1, end)
        });
        let Some(close) = close else {
            i += 1;
            continue;
        };
        out.extend(plain(&chars[plain_from..i].iter().collect::<String>()));
        out.push(match Style::from_marker(marker) {
            Some(style) => Span::Styled(style, spans(chars, i + 1, close, Some(marker), closers)),
            None => Span::Pre(chars[i + 1..close].iter().collect()),
        });
        i = close + 1;
        plain_from = i;
    }
    out.extend(plain(&chars[plain_from..end].iter().collect::<String>()));
    out
}

/// Renders blocks as Matrix HTML (`org.matrix.custom.html`). The styling directives are left
/// out: `*a*` becomes `<strong>a</strong>`, a quotation `<blockquote>`, a preformatted block
/// `<pre><code>`. Lines are separated by `<br>`; all text is escaped.
pub fn to_html(blocks: &[Block]) -> String {
    let mut out = String::new();
    blocks_html(blocks, &mut out);
    out
}

fn blocks_html(blocks: &[Block], out: &mut String) {
    for (n, block) in blocks.iter().enumerate() {
        match block {
            Block::Line(spans) => {
                spans_html(spans, out);
                // A block after this line starts on its own; an empty line before it stays.
                if n + 1 < blocks.len() {
                    out.push_str("<br>");
                }
            }
            Block::Pre { info, lines } => {
                out.push_str("<pre><code");
                let mut text = lines.join("\n");
                match language(info) {
                    Some(lang) => {
                        out.push_str(" class=\"language-");
                        out.push_str(&escape(lang));
                        out.push('"');
                    }
                    // The XEP ignores other text after the fence; keep it rather than lose it.
                    None if !info.trim().is_empty() => text = format!("{info}\n{text}"),
                    None => {}
                }
                out.push('>');
                out.push_str(&escape(&text));
                // Ends with a line break, as Matrix clients write it (and as the HTML → styling
                // direction expects).
                out.push_str("\n</code></pre>");
            }
            Block::Quote(inner) => {
                out.push_str("<blockquote>");
                blocks_html(inner, out);
                out.push_str("</blockquote>");
            }
        }
    }
}

fn spans_html(spans: &[Span], out: &mut String) {
    for span in spans {
        match span {
            Span::Plain(text) => out.push_str(&escape(text)),
            Span::Styled(style, inner) => {
                let tag = style.html_tag();
                out.push('<');
                out.push_str(tag);
                out.push('>');
                spans_html(inner, out);
                out.push_str("</");
                out.push_str(tag);
                out.push('>');
            }
            Span::Pre(text) => {
                out.push_str("<code>");
                out.push_str(&escape(text));
                out.push_str("</code>");
            }
        }
    }
}

/// The text after an opening fence, if it names a language (`rust`, `c++`, `objective-c`).
pub fn language(info: &str) -> Option<&str> {
    let info = info.trim();
    let ok = !info.is_empty()
        && info.len() <= 32
        && info
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.#".contains(c));
    ok.then_some(info)
}

/// Builds styled text from pieces, for the HTML → styling direction.
///
/// Text is added with HTML's whitespace rules (runs collapse to one space, none at the start or
/// end of a line). A span is written with its directives only where [`parse`] would read the
/// result back as that span:
///
/// - whitespace just inside it moves outside, and an empty span writes nothing;
/// - a span across lines is written once per line;
/// - written as plain text: a span right after a character that is not whitespace, a span of
///   nothing but its own directive, a span whose text holds a directive that would close it
///   early, a span inside a span of the same style, and a span around block structure
///   (quotations, lists, preformatted blocks).
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    /// Whitespace was seen and becomes one space before the next text on the same line.
    pending_space: bool,
    /// Styles of the open spans that will be written with directives.
    open: Vec<Style>,
    /// Count of quotations, lists and preformatted blocks written so far.
    blocks: usize,
}

/// A span opened by [`Writer::open`]; hand it back to [`Writer::close`].
#[derive(Debug)]
#[must_use = "a span is written by Writer::close"]
pub struct OpenSpan {
    start: usize,
    blocks: usize,
    /// `None` inside a span of the same style.
    style: Option<Style>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    fn flush_space(&mut self) {
        if std::mem::take(&mut self.pending_space) && !self.at_line_start() {
            self.out.push(' ');
        }
    }

    /// Appends text; HTML whitespace collapses.
    pub fn text(&mut self, text: &str) {
        for c in text.chars() {
            if matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}') {
                self.pending_space = true;
            } else {
                self.flush_space();
                self.out.push(c);
            }
        }
    }

    /// Separates what comes next by a space, unless it starts a line.
    pub fn space(&mut self) {
        self.pending_space = true;
    }

    /// A hard line break (`<br>`).
    pub fn line_break(&mut self) {
        self.pending_space = false;
        self.out.push('\n');
    }

    /// Makes what comes next start on a new line, unless it already does.
    pub fn block_break(&mut self) {
        self.pending_space = false;
        if !self.at_line_start() {
            self.out.push('\n');
        }
    }

    pub fn open(&mut self, style: Style) -> OpenSpan {
        let nested_in_same = self.open.contains(&style);
        if !nested_in_same {
            self.open.push(style);
        }
        OpenSpan {
            start: self.out.len(),
            blocks: self.blocks,
            style: (!nested_in_same).then_some(style),
        }
    }

    pub fn close(&mut self, span: OpenSpan) {
        let Some(style) = span.style else { return };
        self.open.pop();
        if span.blocks != self.blocks {
            return;
        }
        let content = self.out.split_off(span.start);
        let mut before = self.out.chars().next_back();
        for (n, segment) in content.split('\n').enumerate() {
            if n > 0 {
                self.out.push('\n');
                before = None;
            }
            let wrapped = wrap(segment, style.marker(), before);
            self.out.push_str(&wrapped);
        }
    }

    /// An inline preformatted span (`<code>`); its text is taken as it is, on one line, if it
    /// can be written as a span, else as [`Writer::text`].
    pub fn code(&mut self, text: &str) {
        let text = text.replace(['\n', '\r'], " ");
        let body = text.trim();
        if text.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        if !body.is_empty() {
            self.flush_space();
            let before = self.out.chars().next_back();
            match wrap(body, '`', before) {
                Cow::Owned(wrapped) => self.out.push_str(&wrapped),
                // Not a span after all: plain text, whose whitespace collapses.
                Cow::Borrowed(_) => self.text(body),
            }
        }
        if text.ends_with(char::is_whitespace) {
            self.pending_space = true;
        }
    }

    /// A preformatted block (`<pre>`), its text verbatim between fences on their own lines; the
    /// one line break that HTML writers put at the end of the text is dropped.
    pub fn preformatted(&mut self, info: &str, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() {
            return;
        }
        self.block_break();
        self.out.push_str("```");
        self.out.push_str(info);
        self.out.push('\n');
        self.out.push_str(text);
        self.out.push_str("\n```\n");
        self.blocks += 1;
    }

    /// A quotation of `content` (a finished writer's text): `> ` before each line, `>` before a
    /// nested quotation's lines and before empty lines.
    pub fn quote(&mut self, content: &str) {
        if content.is_empty() {
            return;
        }
        self.block_break();
        for (n, line) in content.split('\n').enumerate() {
            if n > 0 {
                self.out.push('\n');
            }
            if !line.is_empty() && !line.starts_with('>') {
                self.out.push_str("> ");
            } else {
                self.out.push('>');
            }
            self.out.push_str(line);
        }
        self.out.push('\n');
        self.blocks += 1;
    }

    /// A block of `content` (a finished writer's text) with `first` before its first line and
    /// `rest` before the others: a list item.
    pub fn prefixed(&mut self, first: &str, rest: &str, content: &str) {
        self.block_break();
        for (n, line) in content.split('\n').enumerate() {
            if n > 0 {
                self.out.push('\n');
            }
            let prefix = if n == 0 { first } else { rest };
            if line.is_empty() {
                self.out.push_str(prefix.trim_end());
            } else {
                self.out.push_str(prefix);
                self.out.push_str(line);
            }
        }
        self.out.push('\n');
        self.blocks += 1;
    }

    /// The text written, without trailing line breaks.
    pub fn finish(mut self) -> String {
        let len = self.out.trim_end_matches('\n').len();
        self.out.truncate(len);
        self.out
    }
}

/// `segment` (one line's part of a span) between `marker`s, whitespace kept outside, if the
/// result reads back as that span; `before` is the character before the segment (`None` at the
/// start of a line).
fn wrap(segment: &str, marker: char, before: Option<char>) -> Cow<'_, str> {
    let body = segment.trim();
    if body.chars().all(|c| c == marker) {
        return Cow::Borrowed(segment);
    }
    let lead = &segment[..segment.len() - segment.trim_start().len()];
    let trail = &segment[lead.len() + body.len()..];
    let before = lead.chars().next_back().or(before);
    if !before.is_none_or(char::is_whitespace) || closes_early(body, marker) {
        return Cow::Borrowed(segment);
    }
    Cow::Owned(format!("{lead}{marker}{body}{marker}{trail}"))
}

/// Whether a `marker` inside `body` would close a span opened before it (see [`spans`]: the
/// closer is looked for after the first character that is not the marker).
fn closes_early(body: &str, marker: char) -> bool {
    let mut previous: Option<char> = None;
    let mut seen_other = false;
    for c in body.chars() {
        if c == marker && seen_other && previous.is_some_and(|p| !p.is_whitespace()) {
            return true;
        }
        seen_other |= c != marker;
        previous = Some(c);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styling_parse_structure() {
        let blocks = parse("> *a*\n```x\n`b`\n```\nc");
        assert_eq!(
            blocks,
            vec![
                Block::Quote(vec![Block::Line(vec![Span::Styled(
                    Style::Strong,
                    vec![Span::Plain("a".into())]
                )])]),
                Block::Pre {
                    info: "x".into(),
                    lines: vec!["`b`".into()]
                },
                Block::Line(vec![Span::Plain("c".into())]),
            ]
        );
        assert!(!is_styled(&parse("just text\nmore")));
    }
}
