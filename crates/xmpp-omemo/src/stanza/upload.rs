//! XEP-0363: HTTP File Upload <https://xmpp.org/extensions/xep-0363.html>: the slot request,
//! the slot (where to PUT the file, which headers to send, where it can then be fetched), the
//! service's size limit from its disco#info form, and the `<file-too-large/>` error.
//!
//! A slot comes from a server we do not trust: its URLs must be `http` or `https` and bounded,
//! only the headers the XEP allows are kept (and no line break gets into one), and `Debug`
//! shows neither a URL's path nor a header's value (a GET URL is all it takes to fetch the
//! file; an `Authorization` value is a credential).

use std::fmt;

use super::disco::DiscoInfo;
use super::error::StanzaError;
use super::{FromElement, IntoElement, Malformed, ParseError, data_form, ns, required_attr};
use crate::xml::Element;

/// The longest slot URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The longest header value accepted in a slot, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// The longest file name we send, in bytes (what most file systems take).
pub const MAX_FILENAME_BYTES: usize = 255;
/// The longest content type we send, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// The file name sent when the given one has nothing usable left.
pub const FALLBACK_FILENAME: &str = "file";
/// The only headers XEP-0363 §4 lets a slot set; others are ignored.
pub const ALLOWED_HEADERS: [&str; 3] = ["Authorization", "Cookie", "Expires"];
/// The `max-file-size` field of the service's XEP-0128 form.
const MAX_FILE_SIZE_VAR: &str = "max-file-size";
/// The longest extension kept when a long file name is shortened, in bytes.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// `<request xmlns='urn:xmpp:http:upload:0' filename='…' size='…' content-type='…'/>`: the
/// payload of the iq get that asks the upload service for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    pub filename: String,
    /// In bytes.
    pub size: u64,
    /// The file's MIME type (optional in the XEP).
    pub content_type: Option<String>,
}

impl SlotRequest {
    /// A request for a file of `size` bytes, with `filename` made safe by [`sanitize_filename`]
    /// and `content_type` kept only if [`valid_content_type`] accepts it.
    pub fn new(filename: &str, size: u64, content_type: &str) -> Self {
        Self {
            filename: sanitize_filename(filename),
            size,
            content_type: valid_content_type(content_type),
        }
    }
}

impl FromElement for SlotRequest {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("request", ns::HTTP_UPLOAD) {
            return Err(ParseError::NotMine(el));
        }
        let filename = required_attr(&el, "request", "filename")?.to_owned();
        let size = required_attr(&el, "request", "size")?
            .parse()
            .map_err(|_| Malformed::new("request", "size", "is not a byte count"))?;
        Ok(Self {
            filename,
            size,
            content_type: el.get_attr("content-type").map(str::to_owned),
        })
    }
}

impl IntoElement for SlotRequest {
    fn into_element(self) -> Element {
        Element::new("request", ns::HTTP_UPLOAD)
            .attr("filename", self.filename)
            .attr("size", self.size.to_string())
            .attr_opt("content-type", self.content_type)
    }
}

/// An upload slot (XEP-0363 §4): PUT the file to `put_url` with `put_headers`, then share
/// `get_url`. `Debug` shows the URLs' scheme and host and the headers' names only.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadSlot {
    /// An `http` or `https` URL of at most 2048 bytes, without a fragment.
    pub put_url: String,
    /// `Authorization`, `Cookie` and `Expires` only (XEP-0363 §4), each at most once, with
    /// that name; values without control characters (so no CR or LF), trimmed, at most 4096
    /// bytes.
    pub put_headers: Vec<(String, String)>,
    /// Like `put_url`.
    pub get_url: String,
}

impl fmt::Debug for UploadSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.put_headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("UploadSlot")
            .field("put_url", &UrlOrigin(&self.put_url))
            .field("put_headers", &names)
            .field("get_url", &UrlOrigin(&self.get_url))
            .finish()
    }
}

impl FromElement for UploadSlot {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("slot", ns::HTTP_UPLOAD) {
            return Err(ParseError::NotMine(el));
        }
        let put = el
            .get_child("put", ns::HTTP_UPLOAD)
            .ok_or(Malformed::new("slot", "put", "is missing"))?;
        let get = el
            .get_child("get", ns::HTTP_UPLOAD)
            .ok_or(Malformed::new("slot", "get", "is missing"))?;
        let put_url = slot_url(put, "put")?;
        let get_url = slot_url(get, "get")?;
        let mut put_headers: Vec<(String, String)> = Vec::new();
        for header in put.children().filter(|c| c.is("header", ns::HTTP_UPLOAD)) {
            let Some(name) = header.get_attr("name").and_then(allowed_header) else {
                continue; // "Other header names MUST be ignored" (§4)
            };
            if put_headers.iter().any(|(n, _)| n == name) {
                continue;
            }
            let value = header_value(&header.text_content())?;
            put_headers.push((name.to_owned(), value));
        }
        Ok(Self {
            put_url,
            put_headers,
            get_url,
        })
    }
}

impl IntoElement for UploadSlot {
    fn into_element(self) -> Element {
        let mut put = Element::new("put", ns::HTTP_UPLOAD).attr("url", self.put_url);
        for (name, value) in self.put_headers {
            put.push_child(
                Element::new("header", ns::HTTP_UPLOAD)
                    .attr("name", name)
                    .text(value),
            );
        }
        Element::new("slot", ns::HTTP_UPLOAD)
            .child(put)
            .child(Element::new("get", ns::HTTP_UPLOAD).attr("url", self.get_url))
    }
}

/// The `url` of a slot's `<put/>` or `<get/>`, checked by [`check_url`].
fn slot_url(el: &Element, element: &'static str) -> Result<String, Malformed> {
    let url = required_attr(el, element, "url")?;
    check_url(url).map_err(|reason| Malformed::new(element, "url", reason))?;
    Ok(url.to_owned())
}

/// Whether `url` is one we hand to an HTTP client: `http://` or `https://` (any case) with a
/// host, at most [`MAX_URL_BYTES`], no whitespace or control characters, no fragment. The
/// error is the reason, for a [`Malformed`].
pub fn check_url(url: &str) -> Result<(), &'static str> {
    if url.len() > MAX_URL_BYTES {
        return Err("is longer than 2048 bytes");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let rest = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") =>
        {
            rest
        }
        _ => return Err("is not an http or https URL"),
    };
    if url.contains('#') {
        return Err("has a fragment");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host");
    }
    Ok(())
}

/// The canonical name of an allowed header (matched without regard to case, as HTTP does).
fn allowed_header(name: &str) -> Option<&'static str> {
    ALLOWED_HEADERS
        .into_iter()
        .find(|allowed| allowed.eq_ignore_ascii_case(name.trim()))
}

/// A header value as we send it: control characters (CR and LF among them, §4: "newlines MUST
/// be stripped") removed, trimmed, bounded.
fn header_value(text: &str) -> Result<String, Malformed> {
    if text.len() > MAX_HEADER_VALUE_BYTES {
        return Err(Malformed::new(
            "header",
            "value",
            "is longer than 4096 bytes",
        ));
    }
    let value: String = text.chars().filter(|c| !c.is_control()).collect();
    Ok(value.trim().to_owned())
}

/// A file name the upload service takes and a web server serves safely: no path separators
/// (`/` and `\` become `_`), no control or bidirectional-formatting characters, trimmed, at
/// most [`MAX_FILENAME_BYTES`] (a short extension is kept when the rest is shortened), and
/// [`FALLBACK_FILENAME`] when nothing (or only dots) is left.
pub fn sanitize_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let mut name = cleaned.trim().to_owned();
    if name.len() > MAX_FILENAME_BYTES {
        name = shorten(&name);
    }
    if name.chars().all(|c| c == '.') {
        return FALLBACK_FILENAME.to_owned();
    }
    name
}

/// `name` cut to [`MAX_FILENAME_BYTES`] on a character boundary, keeping a short extension.
fn shorten(name: &str) -> String {
    let extension = name
        .rsplit_once('.')
        .filter(|(stem, ext)| {
            !stem.trim().is_empty() && !ext.is_empty() && ext.len() <= MAX_KEPT_EXTENSION_BYTES
        })
        .map(|(_, ext)| ext);
    match extension {
        Some(ext) => {
            let stem = truncate(name, MAX_FILENAME_BYTES - ext.len() - 1);
            format!("{}.{ext}", stem.trim_end())
        }
        None => truncate(name, MAX_FILENAME_BYTES).trim_end().to_owned(),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Unicode's bidirectional formatting characters (which can make `gpj.exe` look like
/// `exe.jpg`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `content_type` trimmed, if it looks like a MIME type (`type/subtype`, optionally with
/// parameters): printable ASCII, at most [`MAX_CONTENT_TYPE_BYTES`]. Anything else is left out
/// of the request (the attribute is optional).
pub fn valid_content_type(content_type: &str) -> Option<String> {
    let ct = content_type.trim();
    if ct.len() > MAX_CONTENT_TYPE_BYTES || !ct.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return None;
    }
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |s: &str| !s.is_empty() && !s.contains(['/', ' ', '"', '(', ')', ',', '<', '>']);
    (token(kind) && token(subtype)).then(|| ct.to_owned())
}

/// The service's size limit, from the XEP-0128 form of its disco#info answer (FORM_TYPE
/// `urn:xmpp:http:upload:0`, field `max-file-size`). `None` when it announces none or one that
/// is not a byte count.
pub fn max_file_size(info: &DiscoInfo) -> Option<u64> {
    info.extensions
        .iter()
        .filter(|x| x.is("x", ns::DATA_FORMS))
        .find(|x| data_form::value(x, "FORM_TYPE").as_deref() == Some(ns::HTTP_UPLOAD))
        .and_then(|x| data_form::value(x, MAX_FILE_SIZE_VAR))
        .and_then(|v| v.trim().parse().ok())
}

/// XEP-0363 §4.1: the service refused a slot because the file is larger than it takes
/// (`<not-acceptable/>` with `<file-too-large xmlns='urn:xmpp:http:upload:0'/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTooLarge {
    /// The limit the error names (`<max-file-size/>`), if it names one that is a byte count.
    pub max_file_size: Option<u64>,
}

impl FileTooLarge {
    /// The `<file-too-large/>` among an error's application-specific children, if any.
    pub fn find(error: &StanzaError) -> Option<Self> {
        let el = error
            .extra
            .iter()
            .find(|e| e.is("file-too-large", ns::HTTP_UPLOAD))?;
        let max_file_size = el
            .get_child(MAX_FILE_SIZE_VAR, ns::HTTP_UPLOAD)
            .and_then(|m| m.text_content().trim().parse().ok());
        Some(Self { max_file_size })
    }
}

/// The application-specific error element, for an error's `extra`.
impl IntoElement for FileTooLarge {
    fn into_element(self) -> Element {
        let el = Element::new("file-too-large", ns::HTTP_UPLOAD);
        match self.max_file_size {
            Some(max) => {
                el.child(Element::new(MAX_FILE_SIZE_VAR, ns::HTTP_UPLOAD).text(max.to_string()))
            }
            None => el,
        }
    }
}

/// Shows a URL's scheme and host only: the path names the file and makes it downloadable, a
/// query may hold a token, a fragment a key.
pub(crate) struct UrlOrigin<'a>(pub(crate) &'a str);

impl fmt::Debug for UrlOrigin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        let parts = url.split_once("://").filter(|(scheme, _)| {
            (1..=16).contains(&scheme.len())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        let Some((scheme, rest)) = parts else {
            return write!(f, "<URL, {} bytes>", url.len());
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        let host: String = host.chars().take(253).flat_map(char::escape_debug).collect();
        write!(f, "<{scheme}://{host}/…, {} bytes>", url.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::error::{Condition, ErrorType};
    use crate::stanza::{malformed, parse_xml, reparse};

    fn slot(xml: &str) -> Result<UploadSlot, ParseError> {
        UploadSlot::from_element(parse_xml(xml))
    }

    #[test]
    fn the_request_on_the_wire() {
        // XEP-0363 §4, example 4.
        let request = SlotRequest::new("très cool.jpg", 23456, "image/jpeg");
        let el = request.clone().into_element();
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456' content-type='image/jpeg'/>"
        );
        assert_eq!(SlotRequest::from_element(reparse(&el)), Ok(request));
        let bare = SlotRequest::new("a.bin", 0, "");
        assert_eq!(bare.content_type, None);
        assert_eq!(
            bare.into_element().to_xml(ns::CLIENT),
            "<request xmlns='urn:xmpp:http:upload:0' filename='a.bin' size='0'/>"
        );
        assert_eq!(
            malformed(SlotRequest::from_element(parse_xml(
                "<request xmlns='urn:xmpp:http:upload:0' filename='a' size='-1'/>"
            ))),
            Malformed::new("request", "size", "is not a byte count")
        );
    }

    #[test]
    fn parses_the_xep_slot() {
        // XEP-0363 §4, example 5.
        let got = slot(
            "<slot xmlns='urn:xmpp:http:upload:0'>\
               <put url='https://upload.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg'>\
                 <header name='Authorization'>Basic Base64String==</header>\
                 <header name='Cookie'>foo=bar; user=romeo</header>\
               </put>\
               <get url='https://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg'/>\
             </slot>",
        )
        .expect("valid");
        assert_eq!(
            got,
            UploadSlot {
                put_url: "https://upload.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg".into(),
                put_headers: vec![
                    ("Authorization".into(), "Basic Base64String==".into()),
                    ("Cookie".into(), "foo=bar; user=romeo".into()),
                ],
                get_url: "https://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg".into(),
            }
        );
        assert_eq!(UploadSlot::from_element(reparse(&got.clone().into_element())), Ok(got));
    }

    #[test]
    fn parses_prosodys_slot() {
        // mod_http_file_share (Prosody 0.12): <get/> first, a bearer token, plain http.
        let got = slot(
            "<slot xmlns='urn:xmpp:http:upload:0'>\
               <get url='http://127.0.0.1:5280/file_share/7f3c/a.txt'/>\
               <put url='http://127.0.0.1:5280/file_share/7f3c/a.txt'>\
                 <header name='Authorization'>Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig</header>\
               </put>\
             </slot>",
        )
        .expect("valid");
        assert_eq!(got.get_url, got.put_url);
        assert_eq!(
            got.put_headers,
            vec![(
                "Authorization".to_owned(),
                "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned()
            )]
        );
    }

    #[test]
    fn only_allowed_headers_are_kept_without_line_breaks() {
        let got = slot(
            "<slot xmlns='urn:xmpp:http:upload:0'>\
               <put url='https://u.example/x'>\
                 <header name='Host'>evil.example</header>\
                 <header name='Content-Length'>1</header>\
                 <header>nameless</header>\
                 <header name='authorization'>Bearer a&#13;&#10;X-Injected: 1</header>\
                 <header name='Authorization'>second</header>\
                 <header name=' EXPIRES '> Thu, 01 Jan 2099 00:00:00 GMT&#10;</header>\
                 <header xmlns='urn:example' name='Cookie'>other namespace</header>\
               </put>\
               <get url='https://u.example/x'/>\
             </slot>",
        )
        .expect("valid");
        assert_eq!(
            got.put_headers,
            vec![
                ("Authorization".to_owned(), "Bearer aX-Injected: 1".to_owned()),
                ("Expires".to_owned(), "Thu, 01 Jan 2099 00:00:00 GMT".to_owned()),
            ]
        );
    }

    #[test]
    fn hostile_or_oversized_slots_are_malformed() {
        let slot_with = |put: &str, get: &str| {
            format!(
                "<slot xmlns='urn:xmpp:http:upload:0'><put url='{put}'/><get url='{get}'/></slot>"
            )
        };
        let ok = "https://u.example/f";
        let long = format!("https://u.example/{}", "a".repeat(MAX_URL_BYTES));
        let longest = format!("https://u.example/{}", "a".repeat(MAX_URL_BYTES - 18));
        assert_eq!(longest.len(), MAX_URL_BYTES);
        assert!(slot(&slot_with(&longest, ok)).is_ok());
        let cases = [
            (slot_with("file:///etc/passwd", ok), ("put", "is not an http or https URL")),
            (slot_with(ok, "javascript:alert(1)"), ("get", "is not an http or https URL")),
            (slot_with(ok, "ftp://u.example/f"), ("get", "is not an http or https URL")),
            (slot_with("//u.example/f", ok), ("put", "is not an http or https URL")),
            (slot_with("https:///f", ok), ("put", "has no host")),
            (slot_with("https://user@/f", ok), ("put", "has no host")),
            (slot_with(ok, "https://u.example/a b"), ("get", "contains whitespace or control characters")),
            (slot_with(ok, "https://u.example/a&#10;b"), ("get", "contains whitespace or control characters")),
            (slot_with(ok, "https://u.example/f#key"), ("get", "has a fragment")),
            (slot_with(&long, ok), ("put", "is longer than 2048 bytes")),
        ];
        for (xml, (element, reason)) in cases {
            assert_eq!(malformed(slot(&xml)), Malformed::new(element, "url", reason), "{xml}");
        }
        let big = "b".repeat(MAX_HEADER_VALUE_BYTES + 1);
        let others = [
            (
                format!("<slot xmlns='urn:xmpp:http:upload:0'><put url='{ok}'><header name='Cookie'>{big}</header></put><get url='{ok}'/></slot>"),
                Malformed::new("header", "value", "is longer than 4096 bytes"),
            ),
            (
                format!("<slot xmlns='urn:xmpp:http:upload:0'><get url='{ok}'/></slot>"),
                Malformed::new("slot", "put", "is missing"),
            ),
            (
                format!("<slot xmlns='urn:xmpp:http:upload:0'><put url='{ok}'/></slot>"),
                Malformed::new("slot", "get", "is missing"),
            ),
            (
                format!("<slot xmlns='urn:xmpp:http:upload:0'><put/><get url='{ok}'/></slot>"),
                Malformed::new("put", "url", "is missing"),
            ),
        ];
        for (xml, want) in others {
            assert_eq!(malformed(slot(&xml)), want, "{xml}");
        }
        // A header we ignore may be as large as the stanza allows.
        assert!(slot(&format!("<slot xmlns='urn:xmpp:http:upload:0'><put url='{ok}'><header name='X'>{big}</header></put><get url='{ok}'/></slot>")).is_ok());
        // The old namespace (urn:xmpp:http:upload) is not ours.
        let old = parse_xml("<slot xmlns='urn:xmpp:http:upload'><put url='https://a/'/><get url='https://a/'/></slot>");
        assert_eq!(UploadSlot::from_element(old.clone()), Err(ParseError::NotMine(old)));
    }

    #[test]
    fn url_schemes_and_hosts() {
        for good in [
            "https://u.example/f",
            "HTTP://127.0.0.1:5280/file_share/x/a.txt",
            "https://[::1]:8443/x?token=abc",
            "https://u.example",
            "https://u.example/%F0%9F%90%A2/t%C3%A8st.png",
            "https://u.example/très.png",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in ["", "https:", "https://", "aesgcm://u.example/f", "data:text/plain,x", "https://:443/x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filenames_are_sanitised() {
        let cases = [
            ("photo.jpg", "photo.jpg"),
            ("../../etc/passwd", ".._.._etc_passwd"),
            ("C:\\Users\\me\\a.txt", "C:_Users_me_a.txt"),
            ("  spaced  ", "spaced"),
            ("new\nline\t.txt", "newline.txt"),
            ("evil\u{202E}gpj.exe", "evilgpj.exe"),
            ("", FALLBACK_FILENAME),
            ("   ", FALLBACK_FILENAME),
            ("\n\r\0", FALLBACK_FILENAME),
            (".", FALLBACK_FILENAME),
            ("..", FALLBACK_FILENAME),
            ("/", "_"),
            ("très cool 🐢.png", "très cool 🐢.png"),
        ];
        for (given, want) in cases {
            assert_eq!(sanitize_filename(given), want, "{given:?}");
        }
        // Long names are cut on a character boundary, keeping a short extension.
        let long = format!("{}.jpeg", "é".repeat(300));
        let got = sanitize_filename(&long);
        assert!(got.len() <= MAX_FILENAME_BYTES && got.ends_with("é.jpeg"), "{got}");
        let no_ext = "🐢".repeat(100);
        let got = sanitize_filename(&no_ext);
        assert!(got.len() <= MAX_FILENAME_BYTES && got.len() > MAX_FILENAME_BYTES - 4, "{got}");
        assert!(got.chars().all(|c| c == '🐢'));
        let long_ext = format!("a.{}", "x".repeat(400));
        assert_eq!(sanitize_filename(&long_ext).len(), MAX_FILENAME_BYTES);
    }

    #[test]
    fn content_types() {
        for (given, want) in [
            ("image/jpeg", Some("image/jpeg")),
            (" text/plain; charset=utf-8 ", Some("text/plain; charset=utf-8")),
            ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")),
            ("", None),
            ("image", None),
            ("/jpeg", None),
            ("image/", None),
            ("image/jpeg\r\nX: y", None),
            ("bild/jpég", None),
            ("a/b/c", None),
        ] {
            assert_eq!(valid_content_type(given).as_deref(), want, "{given:?}");
        }
        let long = format!("application/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES));
        assert_eq!(valid_content_type(&long), None);
    }

    fn info(xml: &str) -> DiscoInfo {
        DiscoInfo::from_element(parse_xml(xml)).expect("a disco#info answer")
    }

    #[test]
    fn max_file_size_from_the_service_form() {
        // XEP-0363 §3, example 2.
        let xep = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='store' type='file' name='HTTP File Upload'/>\
               <feature var='urn:xmpp:http:upload:0'/>\
               <x type='result' xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
                 <field var='max-file-size'><value>5242880</value></field>\
               </x>\
             </query>",
        );
        assert!(xep.has_feature(ns::HTTP_UPLOAD));
        assert_eq!(max_file_size(&xep), Some(5_242_880));
        // Another form's max-file-size does not count; the upload form's does.
        let two = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='store' type='file'/>\
               <x type='result' xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:example:other</value></field>\
                 <field var='max-file-size'><value>1</value></field>\
               </x>\
               <x type='result' xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
                 <field var='max-file-size' type='text-single'><value> 52428800 </value></field>\
               </x>\
             </query>",
        );
        assert_eq!(max_file_size(&two), Some(52_428_800));
        for bad in ["", "-5", "5 MB", "99999999999999999999999", "0x10"] {
            let xml = format!(
                "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='store' type='file'/>\
                   <x type='result' xmlns='jabber:x:data'>\
                     <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
                     <field var='max-file-size'><value>{bad}</value></field>\
                   </x></query>"
            );
            assert_eq!(max_file_size(&info(&xml)), None, "{bad:?}");
        }
        let no_form = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='store' type='file'/><feature var='urn:xmpp:http:upload:0'/></query>",
        );
        assert_eq!(max_file_size(&no_form), None);
    }

    fn error(xml: &str) -> StanzaError {
        StanzaError::from_element(parse_xml(xml)).expect("an error")
    }

    #[test]
    fn the_file_too_large_error() {
        // XEP-0363 §4.1, example 6 (Prosody sends the same, with "File too large").
        let err = error(
            "<error type='modify'>\
               <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large. The maximum file size is 20000 bytes</text>\
               <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large>\
             </error>",
        );
        assert_eq!(err.condition, Condition::NotAcceptable);
        assert_eq!(
            FileTooLarge::find(&err),
            Some(FileTooLarge {
                max_file_size: Some(20000)
            })
        );
        let without_max = error(
            "<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>lots</max-file-size></file-too-large></error>",
        );
        assert_eq!(
            FileTooLarge::find(&without_max),
            Some(FileTooLarge { max_file_size: None })
        );
        // Another refusal is not one.
        let quota = error(
            "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Quota reached</text>\
               <retry xmlns='urn:xmpp:http:upload:0' stamp='2017-12-03T23:42:05Z'/></error>",
        );
        assert_eq!(quota.kind, ErrorType::Wait);
        assert_eq!(FileTooLarge::find(&quota), None);
        // What we write, we read.
        let ours = StanzaError {
            extra: vec![FileTooLarge { max_file_size: Some(7) }.into_element()],
            ..StanzaError::from_condition(Condition::NotAcceptable)
        };
        let back = StanzaError::from_element(reparse(&ours.into_element())).expect("an error");
        assert_eq!(FileTooLarge::find(&back), Some(FileTooLarge { max_file_size: Some(7) }));
    }

    #[test]
    fn debug_shows_no_path_query_fragment_or_header_value() {
        let slot = UploadSlot {
            put_url: "https://user@u.example:8443/secret-slot/name.jpg?token=t0k3n".into(),
            put_headers: vec![("Authorization".into(), "Bearer s3cr3t".into())],
            get_url: "https://u.example/secret-slot/name.jpg".into(),
        };
        let shown = format!("{slot:?}");
        for hidden in ["secret-slot", "name.jpg", "t0k3n", "s3cr3t", "user"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("u.example:8443") && shown.contains("Authorization"), "{shown}");
        assert_eq!(
            format!("{:?}", UrlOrigin("aesgcm://h.example/p#k3y")),
            "<aesgcm://h.example/…, 24 bytes>"
        );
        assert_eq!(format!("{:?}", UrlOrigin("no url")), "<URL, 6 bytes>");
    }
}
