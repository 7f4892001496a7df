//! Table-driven tests of both directions, the round trip, the bounds, and a no-panic sweep.

use ruma::events::relation::{InReplyTo, Reply, Thread};
use ruma::events::room::message::{
    AudioMessageEventContent, FileMessageEventContent, ImageMessageEventContent,
    LocationMessageEventContent, MessageType, Relation, RoomMessageEventContent,
    VideoMessageEventContent,
};
use ruma::{UserId, owned_event_id, owned_mxc_uri};

use super::styling;
use super::{
    MAX_CONTENT_JSON_BYTES, MAX_STYLED_BODY_BYTES, OutgoingText, Unsupported, file_link, to_matrix,
    to_matrix_parts, to_xmpp,
};

const JULIET: &str = "@xmpp_juliet=40capulet.lit:hs.example";

/// The bridge's ghosts have names; everybody else is unknown.
fn names(user: &UserId) -> Option<String> {
    (user.as_str() == JULIET).then(|| "Juliet".to_owned())
}

fn xmpp(content: &RoomMessageEventContent) -> String {
    match to_xmpp(content, &names) {
        Ok(OutgoingText { body }) => body,
        Err(e) => panic!("unexpected {e}"),
    }
}

fn xmpp_html(html: &str) -> String {
    xmpp(&RoomMessageEventContent::text_html("the plain body", html))
}

fn reply(mut content: RoomMessageEventContent) -> RoomMessageEventContent {
    let to = InReplyTo::new(owned_event_id!("$original:hs.example"));
    content.relates_to = Some(Relation::Reply(Reply::new(to)));
    content
}

/// (msgtype, body, formatted HTML) of a content.
fn parts(content: &RoomMessageEventContent) -> (&str, &str, Option<&str>) {
    let formatted = match &content.msgtype {
        MessageType::Text(c) => c.formatted.as_ref(),
        MessageType::Emote(c) => c.formatted.as_ref(),
        MessageType::Notice(c) => c.formatted.as_ref(),
        _ => None,
    };
    (
        content.msgtype(),
        content.body(),
        formatted.map(|f| f.body.as_str()),
    )
}

// ---------------------------------------------------------------- Matrix → XMPP

#[test]
fn html_to_styling_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("plain", "hello world", "hello world"),
        ("b", "<b>bold</b> text", "*bold* text"),
        ("strong", "a <strong>x</strong>", "a *x*"),
        ("i", "a <i>b</i> c", "a _b_ c"),
        ("em", "<em>x</em>", "_x_"),
        (
            "strikes",
            "<del>a</del> <s>b</s> <strike>c</strike>",
            "~a~ ~b~ ~c~",
        ),
        ("code", "run <code>ls -l</code> now", "run `ls -l` now"),
        ("code with stars", "<code>*not bold*</code>", "`*not bold*`"),
        ("code in bold", "<b><code>x</code></b>", "*`x`*"),
        ("nesting", "<b><i>x</i></b>", "*_x_*"),
        ("three deep", "<del><b><i>x</i></b></del>", "~*_x_*~"),
        (
            "same style nested",
            "<b>a <strong>b</strong> c</b>",
            "*a b c*",
        ),
        ("inner whitespace", "a<b> bold </b>b", "a *bold* b"),
        ("empty span", "a<b></b>b", "ab"),
        ("blank span", "a <i> </i> b", "a b"),
        ("span inside a word", "un<b>believ</b>able", "unbelievable"),
        ("span after a span", "<b>a</b><i>b</i>", "*a*b"),
        (
            "marker closing early",
            "<b>2*3</b> and <i>snake_case</i>",
            "2*3 and snake_case",
        ),
        ("marker at the start", "<b>*x</b>", "**x*"),
        ("only markers", "<b>**</b> <i>_</i>", "** _"),
        ("code with backtick", "<code>a`b</code>", "a`b"),
        ("br", "a<br>b<br/>c<BR>d", "a\nb\nc\nd"),
        ("bold across br", "<b>a<br>b</b>", "*a*\n*b*"),
        ("paragraphs", "<p>one</p>\n<p>two</p>\n", "one\ntwo"),
        ("p without end", "<p>one<p>two", "one\ntwo"),
        ("heading", "<h1>Title</h1><p>text</p>", "*Title*\ntext"),
        (
            "h3 mid-text",
            "intro<h3>Part</h3>rest",
            "intro\n*Part*\nrest",
        ),
        (
            "ul",
            "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n",
            "• one\n• two",
        ),
        ("li without end", "<ul><li>a<li>b</ul>", "• a\n• b"),
        ("ol", "<ol><li>a</li><li>b</li></ol>", "1. a\n2. b"),
        (
            "ol start",
            "<ol start=\"3\"><li>c</li><li>d</li></ol>",
            "3. c\n4. d",
        ),
        (
            "nested list",
            "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>",
            "• a\n  • b\n• c",
        ),
        (
            "list after text",
            "items:<ul><li><b>x</b></li></ul>end",
            "items:\n• *x*\nend",
        ),
        (
            "blockquote",
            "<blockquote>quoted<br>two</blockquote>reply",
            "> quoted\n> two\nreply",
        ),
        (
            "blockquote p",
            "<blockquote>\n<p>q</p>\n</blockquote>\n<p>a</p>",
            "> q\na",
        ),
        (
            "nested quote",
            "<blockquote><blockquote>deep</blockquote>flat</blockquote>",
            ">> deep\n> flat",
        ),
        (
            "quote empty line",
            "<blockquote>a<br><br>b</blockquote>",
            "> a\n>\n> b",
        ),
        (
            "pre",
            "<pre><code>let x = *y*;\n</code></pre>",
            "```\nlet x = *y*;\n```",
        ),
        (
            "pre language",
            "<pre><code class=\"language-rust\">fn main() {\n    go();\n}\n</code></pre>",
            "```rust\nfn main() {\n    go();\n}\n```",
        ),
        ("pre between", "a<pre>x  y</pre>b", "a\n```\nx  y\n```\nb"),
        ("pre first newline", "<pre>\nx\n\n</pre>", "```\nx\n\n```"),
        (
            "pre, only one newline dropped",
            "<pre>\n\nx</pre>",
            "```\n\nx\n```",
        ),
        (
            "pre code first newline",
            "<pre><code>\nx</code></pre>",
            "```\n\nx\n```",
        ),
        (
            "pre in quote",
            "<blockquote><pre><code>c</code></pre></blockquote>",
            "> ```\n> c\n> ```",
        ),
        (
            "link",
            "<a href=\"https://example.org/x\">site</a>",
            "site (https://example.org/x)",
        ),
        (
            "bare link",
            "<a href=\"https://example.org\">https://example.org</a>",
            "https://example.org",
        ),
        (
            "link without scheme",
            "<a href=\"https://example.org/\">example.org</a>",
            "example.org",
        ),
        (
            "mailto",
            "<a href=\"mailto:a@b.example\">a@b.example</a>",
            "a@b.example",
        ),
        (
            "link without text",
            "<a href=\"https://x.example/\"></a>",
            "https://x.example/",
        ),
        (
            "link with style",
            "<a href=\"https://x.example\"><b>X</b></a>",
            "*X* (https://x.example)",
        ),
        (
            "'>' in a quoted attribute",
            "<a href='https://x.example/?a>b'>t</a>",
            "t (https://x.example/?a>b)",
        ),
        (
            "ghost pill",
            "hi <a href=\"https://matrix.to/#/@xmpp_juliet=40capulet.lit:hs.example\">\
             Juliet (XMPP)</a>!",
            "hi Juliet!",
        ),
        (
            "ghost pill, matrix: URI",
            "<a href=\"matrix:u/xmpp_juliet=40capulet.lit:hs.example\">jul</a>: yes",
            "Juliet: yes",
        ),
        (
            "unknown pill, percent-encoded",
            "<a href=\"https://matrix.to/#/%40alice%3Ahs.example\">Alice</a>: hi",
            "Alice: hi",
        ),
        (
            "room link is no pill",
            "<a href=\"https://matrix.to/#/#room:hs.example\">the room</a>",
            "the room (https://matrix.to/#/#room:hs.example)",
        ),
        (
            "entities",
            "a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&apos; &#233; &#x1F600; x&nbsp;y",
            "a & b <c> \"d\" 'e' é 😀 x\u{a0}y",
        ),
        (
            "named entities",
            "wait&hellip; caf&eacute; &copy;&nbsp;2024 &mdash; &euro;5 &rarr; &#8212;",
            "wait… café ©\u{a0}2024 — €5 → —",
        ),
        (
            // `&amp` without `;` is a legacy reference, read as `&` (as browsers do).
            "unknown entities stay",
            "&foo; &amp &#xZZ; &#; &#0; &#x110000;",
            "&foo; & &#xZZ; &#; \u{fffd} \u{fffd}",
        ),
        (
            "entity in attribute",
            "<a href=\"https://x.example/?a=1&amp;b=2\">t</a>",
            "t (https://x.example/?a=1&b=2)",
        ),
        ("unclosed b", "<b>x", "*x*"),
        ("stray end tag", "a</i>b", "ab"),
        ("lone brackets", "<<>", "<<>"),
        ("less-than text", "1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
        ("tag cut off", "a <b", "a"),
        // A tag cut off by the end of the input is dropped, as browsers do.
        ("attribute cut off", "x<a href=\"y", "x"),
        ("misnested", "<b>a<i>b</b>c</i>", "*ab*c"),
        ("comment", "a<!-- <b>hidden</b> -->b", "ab"),
        ("doctype and pi", "<!DOCTYPE html><?xml x?>ok", "ok"),
        ("script", "<script>alert('<b>1</b>')</script>ok", "ok"),
        ("style", "<style>b { color: red }</style>ok", "ok"),
        (
            "other tags",
            "<span data-mx-color=\"#f00\">red</span> <font>x</font> <u>u</u>",
            "red x u",
        ),
        ("uppercase tags", "<B>x</B> <EM>y</EM>", "*x* _y_"),
        (
            "non-ASCII",
            "<b>héllo</b> 世界 <i>ñandú</i> 🙂",
            "*héllo* 世界 _ñandú_ 🙂",
        ),
        ("whitespace collapses", "  a \n\t b  ", "a b"),
        (
            "table",
            "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
            "a b\nc",
        ),
        (
            "img alt",
            "see <img src=\"mxc://hs.example/x\" alt=\"cat\">",
            "see cat",
        ),
        (
            "mx-reply",
            "<mx-reply><blockquote>earlier</blockquote></mx-reply>answer",
            "answer",
        ),
        (
            "spoiler shows its text",
            "<span data-mx-spoiler>secret</span>",
            "secret",
        ),
    ];
    assert!(cases.len() >= 25);
    for (name, html, expected) in cases {
        assert_eq!(xmpp_html(html), *expected, "case {name:?}: {html:?}");
    }
}

#[test]
fn content_to_xmpp_table() {
    let long_html = "<b>x</b>".repeat(10_000);
    let deep = format!("{}x", "<span>".repeat(101));
    let just_deep_enough = format!("{}x", "<span>".repeat(100));
    let thread_reply = {
        let mut c = RoomMessageEventContent::text_plain("> <@a:hs.example> q\n\nin thread");
        let mut thread = Thread::without_fallback(owned_event_id!("$root:hs.example"));
        thread.in_reply_to = Some(InReplyTo::new(owned_event_id!("$q:hs.example")));
        c.relates_to = Some(Relation::Thread(thread));
        c
    };
    let cases: Vec<(&str, RoomMessageEventContent, &str)> = vec![
        (
            "plain text",
            RoomMessageEventContent::text_plain("hi *there*"),
            "hi *there*",
        ),
        (
            "notice",
            RoomMessageEventContent::notice_plain("a notice"),
            "a notice",
        ),
        (
            "notice html",
            RoomMessageEventContent::notice_html("note", "<b>note</b>"),
            "*note*",
        ),
        (
            "emote",
            RoomMessageEventContent::emote_plain("waves"),
            "/me waves",
        ),
        (
            "emote html",
            RoomMessageEventContent::emote_html("waves slowly", "waves <i>slowly</i>"),
            "/me waves _slowly_",
        ),
        (
            "reply, plain body",
            reply(RoomMessageEventContent::text_plain(
                "> <@alice:hs.example> original\n> more\n\nmy answer\n> kept",
            )),
            "my answer\n> kept",
        ),
        (
            "reply to an emote, plain body",
            reply(RoomMessageEventContent::text_plain(
                "> * <@alice:hs.example> waves\n\nhi",
            )),
            "hi",
        ),
        (
            "reply, html",
            reply(RoomMessageEventContent::text_html(
                "> <@alice:hs.example> original\n\n*answer*",
                "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:hs.example/$e\">In \
                 reply to</a> <a href=\"https://matrix.to/#/@alice:hs.example\">@alice</a><br>\
                 original</blockquote></mx-reply><b>answer</b>",
            )),
            "*answer*",
        ),
        ("reply in a thread", thread_reply, "in thread"),
        (
            "no reply: the quote stays",
            RoomMessageEventContent::text_plain("> <@alice:hs.example> said\n\nthat"),
            "> <@alice:hs.example> said\n\nthat",
        ),
        (
            "reply without a fallback",
            reply(RoomMessageEventContent::text_plain(
                "> a real quote\n\nanswer",
            )),
            "> a real quote\n\nanswer",
        ),
        (
            "html larger than 64 KiB",
            RoomMessageEventContent::text_html("short plain", long_html),
            "short plain",
        ),
        (
            "html deeper than 100",
            RoomMessageEventContent::text_html("plain", deep),
            "plain",
        ),
        (
            "html 100 deep",
            RoomMessageEventContent::text_html("plain", just_deep_enough),
            "x",
        ),
        (
            "html with nothing to show",
            RoomMessageEventContent::text_html("the body", "<mx-reply>x</mx-reply> "),
            "the body",
        ),
        (
            "emote html deeper than 100",
            RoomMessageEventContent::emote_html("dances", "<i>".repeat(200)),
            "/me dances",
        ),
    ];
    for (name, content, expected) in cases {
        assert_eq!(xmpp(&content), expected, "case {name:?}");
    }
}

#[test]
fn unsupported_msgtypes_name_their_type() {
    let mxc = owned_mxc_uri!("mxc://hs.example/media");
    let cases = vec![
        (
            "m.image",
            MessageType::Image(ImageMessageEventContent::plain("i".into(), mxc.clone())),
        ),
        (
            "m.file",
            MessageType::File(FileMessageEventContent::plain("f".into(), mxc.clone())),
        ),
        (
            "m.audio",
            MessageType::Audio(AudioMessageEventContent::plain("a".into(), mxc.clone())),
        ),
        (
            "m.video",
            MessageType::Video(VideoMessageEventContent::plain("v".into(), mxc)),
        ),
        (
            "m.location",
            MessageType::Location(LocationMessageEventContent::new(
                "l".into(),
                "geo:1,2".into(),
            )),
        ),
        (
            "org.example.custom",
            MessageType::new("org.example.custom", "c".into(), Default::default())
                .expect("a custom msgtype"),
        ),
    ];
    for (msgtype, content) in cases {
        let err = to_xmpp(&RoomMessageEventContent::new(content), &names)
            .expect_err("not bridgeable as text");
        assert_eq!(
            err,
            Unsupported {
                msgtype: msgtype.to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("messages of type {msgtype} cannot be bridged as text")
        );
    }
}

// ---------------------------------------------------------------- both ways

/// Styled bodies in the form `to_xmpp` writes come back unchanged from Matrix.
#[test]
fn styled_bodies_round_trip() {
    let bodies = [
        "*bold*",
        "_em_",
        "~del~",
        "`code`",
        "a *b* c _d_ ~e~ `f`",
        "*_both_*",
        "_*both*_",
        "~*_all_*~",
        "`*literal*`",
        "*`code`*",
        "1 * 2 = *two*",
        "line1\nline2 *x*",
        "a\n\nb *c*",
        "> quoted *x*",
        "> a\n>> b\nc",
        "> a\n\nb",
        "```\n*literal*\n```",
        "```rust\nfn main() {}\n```\nafter",
        "```\n\n  indented *x*\n\n```",
        "x\n> q\n\n```\ncode\n```\n*end*",
        "a < b & *c* > d",
        "/me waves *wildly*",
        "*héllo* 世界",
        "*strong*plain*",
        "*a _b* c_",
        // Unstyled bodies travel as plain text and come back as they are, too.
        "plain",
        "2*3*4",
        "a  b",
        "<b>not html</b>",
    ];
    for body in bodies {
        assert_eq!(xmpp(&to_matrix(body)), body, "{body:?}");
    }
}

/// Whatever `to_xmpp` writes from HTML, `to_matrix` reads back as what was meant: a sweep over
/// generated HTML checks that no span appears that was not written (no more spans read than
/// tags on each line, as a span across lines is written once per line), and that writing what
/// was read gives the same text again.
#[test]
fn written_styling_reads_back() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let pieces = [
        "<b>",
        "</b>",
        "<i>",
        "</i>",
        "<del>",
        "</del>",
        "<code>",
        "</code>",
        " ",
        "a",
        "bc",
        "<br>",
        "x y",
        "<p>",
        "</p>",
        "<blockquote>",
        "</blockquote>",
        "é",
    ];
    for _ in 0..5000 {
        let html: String = (0..rng.below(14))
            .map(|_| pieces[rng.below(pieces.len())])
            .collect();
        let text = xmpp_html(&html);
        let back = to_matrix(&text);
        let formatted = parts(&back).2.unwrap_or("");
        let read = ["<strong>", "<em>", "<del>", "<code>"]
            .iter()
            .map(|t| formatted.matches(t).count())
            .sum::<usize>();
        let lines = text.lines().count().max(1);
        assert!(
            read <= count_tags(&html) * lines,
            "{html:?} -> {text:?} -> {formatted:?}"
        );
        if !text.is_empty() {
            assert_eq!(xmpp(&back), text, "{html:?} -> {text:?} -> {formatted:?}");
        }
    }
}

fn count_tags(html: &str) -> usize {
    ["<b>", "<i>", "<del>", "<code>"]
        .iter()
        .map(|t| html.matches(t).count())
        .sum()
}

/// A tiny deterministic generator; enough to sweep inputs without a dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = XorShift(0xdead_beef_0bad_f00d);
    let pieces = [
        "<",
        ">",
        "</",
        "/>",
        "<!--",
        "-->",
        "<b",
        "<a href=\"",
        "\"",
        "'",
        "=",
        "&",
        "&#",
        "x",
        ";",
        "&#x1F600;",
        "é",
        "世",
        "<br>",
        "<pre>",
        "<code class='language-",
        "<ol start=",
        "<li>",
        "<blockquote>",
        "<mx-reply>",
        "<script>",
        "</script>",
        "*",
        "_",
        "~",
        "`",
        "```",
        "\n",
        ">",
        " ",
        "\u{a0}",
        "/me ",
        "https://matrix.to/#/@",
        "%",
        "%4",
        ":",
        "\r",
    ];
    for _ in 0..5000 {
        let input: String = (0..rng.below(40))
            .map(|_| pieces[rng.below(pieces.len())])
            .collect();
        let _ = to_xmpp(
            &RoomMessageEventContent::text_html(input.clone(), input.clone()),
            &names,
        );
        let back = to_matrix(&input);
        let _ = to_xmpp(&back, &names);
    }
}

mod to_matrix;

#[test]
fn file_links_are_whole_bodies_of_the_right_kind() {
    let link = "aesgcm://up.example/a/b.jpg#0123456789abcdef01234567aaaa";
    assert_eq!(file_link(link, None, true).as_deref(), Some(link));
    assert_eq!(
        file_link(&format!(" {link}\n"), None, true).as_deref(),
        Some(link)
    );
    // In the clear an aesgcm link would have shown its key to the servers: not a file.
    assert_eq!(file_link(link, None, false), None);
    assert_eq!(file_link(&format!("look {link}"), None, true), None);
    assert_eq!(file_link("aesgcm://up.example/a", None, true), None);
    let https = "https://up.example/a/b.pdf";
    assert_eq!(file_link(https, Some(https), false).as_deref(), Some(https));
    assert_eq!(file_link(https, None, true), None, "a mere link is text");
    assert_eq!(file_link(https, Some("https://other/"), true), None);
    assert_eq!(file_link("ftp://x/y", Some("ftp://x/y"), true), None);
    assert_eq!(
        file_link("", Some(https), false).as_deref(),
        Some(https),
        "the OOB alone"
    );
    assert_eq!(file_link("", None, false), None);
}
