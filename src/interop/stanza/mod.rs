//! Wire types: one file per RFC/XEP. Each type converts from an [`Element`] — answering "not
//! mine" (the element handed back untouched, for the next parser) or "mine but malformed" (a
//! [`Malformed`] naming the element and field) — and back into one.
//!
//! Our own payloads are parsed strictly; unknown children and attributes are kept (in the
//! stanza's `payloads`), never rejected.

use super::jid::Jid;
use super::xml::Element;

pub mod ns;

/// "Not mine" or "mine but malformed".
#[derive(Debug)]
pub enum ParseError {
    /// The element is not of this type; here it is back.
    NotMine(Element),
    /// The element is of this type but breaks its rules.
    Malformed(Malformed),
}

/// A malformed element: which element, which field, what is wrong. Never quotes content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed <{element}>: {field} {reason}")]
pub struct Malformed {
    pub element: &'static str,
    pub field: &'static str,
    pub reason: &'static str,
}

impl Malformed {
    pub fn new(element: &'static str, field: &'static str, reason: &'static str) -> Self {
        Self { element, field, reason }
    }
}

impl From<Malformed> for ParseError {
    fn from(m: Malformed) -> Self {
        ParseError::Malformed(m)
    }
}

/// A wire type read from an element.
pub trait FromElement: Sized {
    fn from_element(el: Element) -> Result<Self, ParseError>;
}

/// A wire type written as an element.
pub trait IntoElement {
    fn into_element(self) -> Element;
}

/// Reads an optional JID attribute; a present but invalid JID is malformed.
pub fn jid_attr(el: &Element, element: &'static str, attr: &'static str) -> Result<Option<Jid>, Malformed> {
    match el.get_attr(attr) {
        None => Ok(None),
        Some(s) => Jid::parse(s).map(Some).map_err(|_| Malformed::new(element, attr, "is not a valid JID")),
    }
}

/// Reads a required attribute.
pub fn required_attr<'a>(el: &'a Element, element: &'static str, attr: &'static str) -> Result<&'a str, Malformed> {
    el.get_attr(attr).ok_or(Malformed::new(element, attr, "is missing"))
}
