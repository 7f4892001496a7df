//! RFC 6120 §8.3: Stanza errors — `<error type='…'>` with one defined condition, optional text
//! and application-specific children.

use std::fmt;

use super::{FromElement, IntoElement, Malformed, ParseError, jid_attr, ns};
use crate::jid::Jid;
use crate::xml::Element;

/// RFC 6120 §8.3.2: what the sender should do about the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry (the error cannot be remedied).
    Cancel,
    /// Proceed (the condition was only a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting (the error is temporary).
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// RFC 6120 §8.3.3: the defined conditions, each an empty element in
/// `urn:ietf:params:xml:ns:xmpp-stanzas` (`gone` and `redirect` may carry an XMPP URI).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    /// The recipient is no longer at this address; the text, if any, is its new address.
    Gone(Option<String>),
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    /// The recipient is temporarily elsewhere; the text, if any, is the alternate address.
    Redirect(Option<String>),
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
    /// A condition element in the stanzas namespace that RFC 6120 does not define (its name).
    Other(String),
}

/// Conditions without content, by element name.
static SIMPLE: [(&str, Condition); 20] = [
    ("bad-request", Condition::BadRequest),
    ("conflict", Condition::Conflict),
    ("feature-not-implemented", Condition::FeatureNotImplemented),
    ("forbidden", Condition::Forbidden),
    ("internal-server-error", Condition::InternalServerError),
    ("item-not-found", Condition::ItemNotFound),
    ("jid-malformed", Condition::JidMalformed),
    ("not-acceptable", Condition::NotAcceptable),
    ("not-allowed", Condition::NotAllowed),
    ("not-authorized", Condition::NotAuthorized),
    ("policy-violation", Condition::PolicyViolation),
    ("recipient-unavailable", Condition::RecipientUnavailable),
    ("registration-required", Condition::RegistrationRequired),
    ("remote-server-not-found", Condition::RemoteServerNotFound),
    ("remote-server-timeout", Condition::RemoteServerTimeout),
    ("resource-constraint", Condition::ResourceConstraint),
    ("service-unavailable", Condition::ServiceUnavailable),
    ("subscription-required", Condition::SubscriptionRequired),
    ("undefined-condition", Condition::UndefinedCondition),
    ("unexpected-request", Condition::UnexpectedRequest),
];

impl Condition {
    /// The element name of this condition.
    pub fn name(&self) -> &str {
        match self {
            Condition::Gone(_) => "gone",
            Condition::Redirect(_) => "redirect",
            Condition::Other(name) => name,
            simple => SIMPLE
                .iter()
                .find(|(_, c)| c == simple)
                .map_or("undefined-condition", |(n, _)| n),
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its example for this condition.
    pub fn default_type(&self) -> ErrorType {
        match self {
            Condition::BadRequest
            | Condition::JidMalformed
            | Condition::NotAcceptable
            | Condition::PolicyViolation => ErrorType::Modify,
            Condition::Redirect(_) => ErrorType::Modify,
            Condition::Forbidden
            | Condition::NotAuthorized
            | Condition::RegistrationRequired
            | Condition::SubscriptionRequired => ErrorType::Auth,
            Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint
            | Condition::UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }

    fn from_element(el: &Element) -> Condition {
        let text = || Some(el.text_content()).filter(|t| !t.is_empty());
        match el.name() {
            "gone" => Condition::Gone(text()),
            "redirect" => Condition::Redirect(text()),
            name => SIMPLE
                .iter()
                .find(|(n, _)| *n == name)
                .map_or_else(|| Condition::Other(name.to_owned()), |(_, c)| c.clone()),
        }
    }

    fn to_element(&self) -> Element {
        let el = Element::new(self.name(), ns::STANZAS_ERR);
        match self {
            Condition::Gone(Some(uri)) | Condition::Redirect(Some(uri)) => el.text(uri.as_str()),
            _ => el,
        }
    }
}

/// An `<error/>` child of a message, presence or IQ of type `error`.
#[derive(Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    /// Human-readable description (the `<text/>` without `xml:lang`, else the first). Never log it.
    pub text: Option<String>,
    /// The entity that generated the error.
    pub by: Option<Jid>,
    /// Application-specific condition elements (RFC 6120 §8.3.4) and any other children.
    pub extra: Vec<Element>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: Condition) -> Self {
        Self {
            kind,
            condition,
            text: None,
            by: None,
            extra: Vec::new(),
        }
    }

    /// An error with the type RFC 6120 pairs with `condition`.
    pub fn from_condition(condition: Condition) -> Self {
        Self::new(condition.default_type(), condition)
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Reads the `<error/>` element (its name and namespace already checked by the caller).
    pub(crate) fn parse(mut el: Element) -> Result<Self, Malformed> {
        let kind = match el.get_attr("type") {
            None => return Err(Malformed::new("error", "type", "is missing")),
            Some(t) => ErrorType::parse(t).ok_or(Malformed::new(
                "error",
                "type",
                "is not auth, cancel, continue, modify or wait",
            ))?,
        };
        let by = jid_attr(&el, "error", "by")?;
        let mut children = el.take_children();
        let text = super::take_default_lang_text(&mut children, "text", ns::STANZAS_ERR);
        let mut condition = None;
        let mut extra = Vec::new();
        for child in children {
            if child.ns() != ns::STANZAS_ERR {
                extra.push(child);
            } else if child.name() == "text" {
                // Another language of the text; we keep only one.
            } else if condition.is_some() {
                return Err(Malformed::new(
                    "error",
                    "condition",
                    "appears more than once",
                ));
            } else {
                condition = Some(Condition::from_element(&child));
            }
        }
        let condition = condition.ok_or(Malformed::new("error", "condition", "is missing"))?;
        Ok(Self {
            kind,
            condition,
            text,
            by,
            extra,
        })
    }
}

impl FromElement for StanzaError {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("error", ns::CLIENT) {
            return Err(ParseError::NotMine(el));
        }
        Ok(Self::parse(el)?)
    }
}

impl IntoElement for StanzaError {
    fn into_element(self) -> Element {
        let mut el = Element::new("error", ns::CLIENT)
            .attr("type", self.kind.as_str())
            .attr_opt("by", self.by.as_ref().map(Jid::as_str))
            .child(self.condition.to_element());
        if let Some(text) = self.text {
            el.push_child(Element::new("text", ns::STANZAS_ERR).text(text));
        }
        for e in self.extra {
            el.push_child(e);
        }
        el
    }
}

/// Shows the text's length only: an error text can quote what the user sent.
impl fmt::Debug for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StanzaError")
            .field("kind", &self.kind)
            .field("condition", &self.condition)
            .field(
                "text",
                &self.text.as_ref().map(|t| format!("{} bytes", t.len())),
            )
            .field("by", &self.by)
            .field("extra", &self.extra)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml, reparse};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    #[test]
    fn parses_rfc_6120_example() {
        // RFC 6120 §8.3.2, with an application-specific condition as in §8.3.4.
        let el = parse_xml(
            "<error type='modify' by='example.net'>\
               <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>Some special text</text>\
               <too-many-parameters xmlns='http://example.org/ns'/>\
             </error>",
        );
        let err = StanzaError::from_element(el).expect("valid");
        assert_eq!(
            err,
            StanzaError {
                kind: ErrorType::Modify,
                condition: Condition::BadRequest,
                text: Some("Some special text".into()),
                by: Some(jid("example.net")),
                extra: vec![Element::new("too-many-parameters", "http://example.org/ns")],
            }
        );
    }

    #[test]
    fn keeps_the_pubsub_application_condition() {
        // XEP-0060 §7.1.3.6 (publish-options that do not match the node), as Prosody sends it.
        let el = parse_xml(
            "<error type='cancel'>\
               <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>\
             </error>",
        );
        let err = StanzaError::from_element(el).expect("valid");
        assert_eq!(err.condition, Condition::Conflict);
        assert_eq!(
            err.extra,
            vec![Element::new(
                "precondition-not-met",
                "http://jabber.org/protocol/pubsub#errors"
            )]
        );
    }

    #[test]
    fn every_defined_condition_round_trips() {
        let mut all: Vec<Condition> = SIMPLE.iter().map(|(_, c)| c.clone()).collect();
        all.extend([
            Condition::Gone(Some("xmpp:romeo@afterlife.example.net".into())),
            Condition::Gone(None),
            Condition::Redirect(Some("xmpp:characters@conference.example.org".into())),
            Condition::Other("x-unknown".into()),
        ]);
        assert_eq!(all.len(), 24);
        for condition in all {
            let err = StanzaError::from_condition(condition.clone());
            let back =
                StanzaError::from_element(reparse(&err.clone().into_element())).expect("valid");
            assert_eq!(back, err, "{}", condition.name());
        }
    }

    #[test]
    fn round_trips_every_field() {
        let err =
            StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint).with_text("slow down");
        let err = StanzaError {
            by: Some(jid("capulet.lit")),
            extra: vec![Element::new("x", "urn:example")],
            ..err
        };
        assert_eq!(
            StanzaError::from_element(reparse(&err.clone().into_element())),
            Ok(err)
        );
    }

    #[test]
    fn defaults_follow_rfc() {
        assert_eq!(
            Condition::ServiceUnavailable.default_type(),
            ErrorType::Cancel
        );
        assert_eq!(Condition::NotAuthorized.default_type(), ErrorType::Auth);
        assert_eq!(Condition::BadRequest.default_type(), ErrorType::Modify);
        assert_eq!(
            Condition::ResourceConstraint.default_type(),
            ErrorType::Wait
        );
        assert_eq!(Condition::Conflict.name(), "conflict");
    }

    #[test]
    fn text_prefers_no_lang_and_other_languages_are_dropped() {
        let el = parse_xml(
            "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='de'>weg</text>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error>",
        );
        let err = StanzaError::from_element(el).expect("valid");
        assert_eq!(err.text.as_deref(), Some("gone"));
        assert!(err.extra.is_empty());
    }

    #[test]
    fn debug_hides_text() {
        let err = StanzaError::from_condition(Condition::Forbidden).with_text("secret words");
        let shown = format!("{err:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("12 bytes"), "{shown}");
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert_eq!(
            StanzaError::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }

    #[test]
    fn invalid_errors() {
        let cond = "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>";
        let cases = [
            (
                format!("<error>{cond}</error>"),
                Malformed::new("error", "type", "is missing"),
            ),
            (
                format!("<error type='fatal'>{cond}</error>"),
                Malformed::new(
                    "error",
                    "type",
                    "is not auth, cancel, continue, modify or wait",
                ),
            ),
            (
                format!("<error type='cancel' by='a@b@c'>{cond}</error>"),
                Malformed::new("error", "by", "is not a valid JID"),
            ),
            (
                "<error type='cancel'/>".to_owned(),
                Malformed::new("error", "condition", "is missing"),
            ),
            (
                format!("<error type='cancel'>{cond}{cond}</error>"),
                Malformed::new("error", "condition", "appears more than once"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(
                malformed(StanzaError::from_element(parse_xml(&xml))),
                want,
                "{xml}"
            );
        }
    }
}
