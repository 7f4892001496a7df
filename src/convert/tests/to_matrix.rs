//! XMPP → Matrix: styling tables, emotes and the bounds.

use super::*;

#[test]
fn styling_to_matrix_table() {
    let deep_quote = format!("{} x", ">".repeat(40));
    let deep_quote_html = format!(
        "{}{} x{}",
        "<blockquote>".repeat(styling::MAX_QUOTE_DEPTH),
        "&gt;".repeat(40 - styling::MAX_QUOTE_DEPTH),
        "</blockquote>".repeat(styling::MAX_QUOTE_DEPTH),
    );
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("plain", "hello", None),
        ("empty", "", None),
        ("strong", "*bold*", Some("<strong>bold</strong>")),
        ("emphasis", "_em_", Some("<em>em</em>")),
        ("strike", "~gone~", Some("<del>gone</del>")),
        ("pre span", "`code`", Some("<code>code</code>")),
        ("in text", "a *b* c", Some("a <strong>b</strong> c")),
        (
            "nesting",
            "*_both_*",
            Some("<strong><em>both</em></strong>"),
        ),
        (
            "nesting reversed",
            "_*both*_",
            Some("<em><strong>both</strong></em>"),
        ),
        ("markers inside a word", "2*3*4 and snake_case_name", None),
        ("markers with spaces", "a * b *", None),
        ("marker after a word", "2*3*", None),
        ("no closer", "*not strong", None),
        ("no opener", "not strong*", None),
        ("empty span", "**", None),
        ("span of markers", "****", None),
        (
            "marker run then text",
            "***x*",
            Some("<strong>**x</strong>"),
        ),
        ("whitespace before closer", "*not *strong", None),
        ("across lines", "*not\nstrong*", None),
        (
            "closer followed by text",
            "*strong*plain*",
            Some("<strong>strong</strong>plain*"),
        ),
        (
            "lone star first",
            "* plain *strong*",
            Some("* plain <strong>strong</strong>"),
        ),
        ("lazy match", "*a _b* c_", Some("<strong>a _b</strong> c_")),
        ("same marker inside", "**x**", Some("<strong>*x</strong>*")),
        (
            "stars in code",
            "`*not bold*`",
            Some("<code>*not bold*</code>"),
        ),
        (
            "code in strong",
            "*`bold code`*",
            Some("<strong><code>bold code</code></strong>"),
        ),
        (
            "mixed",
            "_a_ ~b~ `c`",
            Some("<em>a</em> <del>b</del> <code>c</code>"),
        ),
        (
            "lines",
            "line1\n*line2*",
            Some("line1<br><strong>line2</strong>"),
        ),
        (
            "pre block literal",
            "```\n*literal* _x_\n> no quote\n```",
            Some("<pre><code>*literal* _x_\n&gt; no quote\n</code></pre>"),
        ),
        (
            "pre block language",
            "```rust\nfn main() {}\n```\nafter *x*",
            Some(
                "<pre><code class=\"language-rust\">fn main() {}\n</code></pre>\
                 after <strong>x</strong>",
            ),
        ),
        (
            "pre block other info kept",
            "```not a language!\nx\n```",
            Some("<pre><code>not a language!\nx\n</code></pre>"),
        ),
        (
            "pre block unclosed",
            "```\nunclosed",
            Some("<pre><code>unclosed\n</code></pre>"),
        ),
        (
            "two pre blocks",
            "```\na\n```\n```\nb\n```",
            Some("<pre><code>a\n</code></pre><pre><code>b\n</code></pre>"),
        ),
        ("quote", "> quote", Some("<blockquote>quote</blockquote>")),
        (
            "quote without space",
            ">quote",
            Some("<blockquote>quote</blockquote>"),
        ),
        (
            "nested quote",
            "> a\n>> b\nc",
            Some("<blockquote>a<br><blockquote>b</blockquote></blockquote>c"),
        ),
        (
            "quote then empty line",
            "> a\n\nb",
            Some("<blockquote>a</blockquote><br>b"),
        ),
        (
            "pre ended by its quote",
            "> ```\n> code *x*\n\nplain",
            Some("<blockquote><pre><code>code *x*\n</code></pre></blockquote><br>plain"),
        ),
        (
            "styling in a quote",
            "> *x*",
            Some("<blockquote><strong>x</strong></blockquote>"),
        ),
        (
            "html escaped",
            "<script>alert('x')</script> & *y*",
            Some("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; <strong>y</strong>"),
        ),
        ("html without styling stays plain", "<b>not html</b>", None),
        ("quotation marks are no whitespace", "\"*q*\"", None),
        (
            "non-ASCII",
            "*héllo* 世界 _ñ_",
            Some("<strong>héllo</strong> 世界 <em>ñ</em>"),
        ),
        (
            "unicode space opens",
            "x\u{3000}*y*",
            Some("x\u{3000}<strong>y</strong>"),
        ),
        ("CR is kept", "*a*\r", Some("<strong>a</strong>\r")),
        (
            "quotes nest 32 deep at most",
            &deep_quote,
            Some(&deep_quote_html),
        ),
    ];
    assert!(cases.len() >= 25);
    for (name, body, html) in cases {
        let content = to_matrix(body);
        assert_eq!(
            parts(&content),
            ("m.text", *body, *html),
            "case {name:?}: {body:?}"
        );
        assert!(content.relates_to.is_none() && content.mentions.is_none());
    }
}

#[test]
fn emotes_to_matrix() {
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("/me waves", "m.emote", "waves", None),
        (
            "/me waves *wildly*",
            "m.emote",
            "waves *wildly*",
            Some("waves <strong>wildly</strong>"),
        ),
        ("/me ", "m.emote", "", None),
        ("/meh", "m.text", "/meh", None),
        ("/me", "m.text", "/me", None),
        (" /me waves", "m.text", " /me waves", None),
        ("/ME waves", "m.text", "/ME waves", None),
    ];
    for (body, msgtype, text, html) in cases {
        assert_eq!(
            parts(&to_matrix(body)),
            (*msgtype, *text, *html),
            "{body:?}"
        );
    }
}

#[test]
fn huge_bodies_go_to_matrix_unformatted() {
    let body = format!("*x* {}", "a".repeat(MAX_STYLED_BODY_BYTES));
    assert_eq!(parts(&to_matrix(&body)), ("m.text", body.as_str(), None));
    // Just under the bound, styling is still found.
    let body = format!("*x* {}", "a".repeat(MAX_STYLED_BODY_BYTES - 4));
    assert!(parts(&to_matrix(&body)).2.is_some());
}

#[test]
fn many_unmatched_openers_stay_plain() {
    // Every '*' may open a span and none closes one: the closer table keeps this linear.
    let body = "*a ".repeat(20_000);
    assert_eq!(parts(&to_matrix(&body)).2, None);
    let body = format!("{}b*", "*a ".repeat(20_000));
    assert!(
        parts(&to_matrix(&body))
            .2
            .is_some_and(|h| h.starts_with("<strong>a *a"))
    );
}

#[test]
fn a_body_too_large_for_one_event_is_split_whole_and_in_order() {
    let json_len = |c: &RoomMessageEventContent| serde_json::to_vec(c).expect("json").len();
    let small = to_matrix_parts("*short*");
    assert_eq!(small.len(), 1);
    assert_eq!(json_len(&small[0]), json_len(&to_matrix("*short*")));
    assert_eq!(small[0].body(), "*short*");

    // ~100 KB of styled lines: formatting is kept per part where a part holds its styling.
    let styled: String = (0..2500)
        .map(|i| format!("line {i:04} with *bold* and _em_\n"))
        .collect();
    let control: String = "\u{1}".repeat(40_000);
    let one_line = "é".repeat(60_000);
    for body in [styled.as_str(), control.as_str(), one_line.as_str()] {
        let parts = to_matrix_parts(body);
        assert!(parts.len() > 1, "{} bytes in one part", body.len());
        let mut joined = String::new();
        for part in &parts {
            assert!(
                json_len(part) <= MAX_CONTENT_JSON_BYTES,
                "a part of {} bytes",
                json_len(part)
            );
            joined.push_str(part.body());
        }
        assert_eq!(joined, body);
    }
    assert!(
        to_matrix_parts(&styled)
            .iter()
            .all(|p| matches!(&p.msgtype, MessageType::Text(t) if t.formatted.is_some())),
        "the styled parts keep their formatting"
    );
}
