//! XEP-0077 in-band registration of a new account with its server
//! <https://xmpp.org/extensions/xep-0077.html>: the same TCP and TLS as a login, then the
//! registration get and set on the unauthenticated stream, then the stream is closed. Log in
//! afterwards with a normal [`Client`](super::Client).

use super::config::ClientConfig;
use super::error::Error;
use super::negotiate::{self, Steps};
use crate::stanza::error::{Condition, StanzaError};
use crate::stanza::register::{Registration, RegistrationFields};
use crate::stanza::{FromElement, IntoElement, Iq, IqPayload, ParseError, ns};
use crate::xml::Element;

/// At most this many characters of the server's error text are kept.
const MAX_TEXT: usize = 200;

/// Why a registration failed. `Display` never shows the password: the server's text is kept
/// only with every occurrence of the password cut out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// No registration stream feature, or the server answered `service-unavailable` or
    /// `feature-not-implemented`.
    #[error("the server does not offer in-band registration")]
    NotSupported,
    /// `not-allowed` or `forbidden`: registration is closed (for us).
    #[error("the server does not allow the registration{}", with_text(.text))]
    NotAllowed { text: Option<String> },
    /// The account exists already.
    #[error("the account exists already")]
    Conflict,
    /// Any other error the server answered (`not-acceptable` for a refused username …).
    #[error("the server refused the registration: {condition}{}", with_text(.text))]
    Rejected {
        condition: String,
        text: Option<String>,
    },
    /// The server wants more than a username and a password (an email, a CAPTCHA …).
    #[error("the server's registration form asks for what we cannot fill in: {}",
        .fields.join(", "))]
    UnsupportedForm { fields: Vec<String> },
    /// The account JID is a bare domain.
    #[error("the account JID has no localpart to register")]
    NoLocalpart,
    #[error(transparent)]
    Stream(#[from] Error),
}

fn with_text(text: &Option<String>) -> String {
    text.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
}

impl RegisterError {
    /// Sorts the server's error; `password` is cut out of its text.
    fn from_stanza_error(error: &StanzaError, password: &str) -> Self {
        let text = server_text(error, password);
        match &error.condition {
            Condition::ServiceUnavailable | Condition::FeatureNotImplemented => Self::NotSupported,
            Condition::NotAllowed | Condition::Forbidden => Self::NotAllowed { text },
            Condition::Conflict => Self::Conflict,
            other => Self::Rejected {
                condition: other.name().to_owned(),
                text,
            },
        }
    }
}

/// The error's text without control characters and without the password (a server may quote
/// the request), at most [`MAX_TEXT`] characters.
fn server_text(error: &StanzaError, password: &str) -> Option<String> {
    let text: String = error
        .text
        .as_deref()?
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = if password.is_empty() {
        text
    } else {
        text.replace(password, "<redacted>")
    };
    let text: String = text.trim().chars().take(MAX_TEXT).collect();
    (!text.is_empty()).then_some(text)
}

/// Registers `config.jid` (its localpart as the username) with `config.password`, over the
/// connection a login would use, and closes the stream. The account can log in afterwards.
pub async fn register(config: &ClientConfig) -> Result<(), RegisterError> {
    let username = config
        .jid
        .local()
        .ok_or(RegisterError::NoLocalpart)?
        .to_owned();
    let mut stream = negotiate::secure_stream(config).await?;
    let result = exchange(&mut stream, username, &config.password).await;
    stream.close().await;
    result
}

async fn exchange(
    s: &mut Steps<'_>,
    username: String,
    password: &str,
) -> Result<(), RegisterError> {
    if s.features
        .get_child("register", ns::REGISTER_FEATURE)
        .is_none()
    {
        return Err(RegisterError::NotSupported);
    }
    let get = Iq::get("reg1", None, Element::new("query", ns::REGISTER));
    let query = answer(s, get, password)
        .await?
        .ok_or_else(|| Error::Protocol("an empty answer to the registration get".into()))?;
    let fields = RegistrationFields::from_element(query).map_err(stream_error)?;
    let as_form = plan(&fields)?;
    let registration = Registration {
        username,
        password: password.to_owned(),
        as_form,
    };
    answer(
        s,
        Iq::set("reg2", None, registration.into_element()),
        password,
    )
    .await?;
    Ok(())
}

/// Sends `iq`; the payload of the result, or the server's error sorted.
async fn answer(
    s: &mut Steps<'_>,
    iq: Iq,
    password: &str,
) -> Result<Option<Element>, RegisterError> {
    let answer = Iq::from_element(s.request(iq.into_element()).await?).map_err(stream_error)?;
    match answer.payload {
        IqPayload::Result(payload) => Ok(payload),
        IqPayload::Error { error, .. } => Err(RegisterError::from_stanza_error(&error, password)),
        IqPayload::Get(_) | IqPayload::Set(_) => {
            Err(Error::Protocol("a request in answer to a registration iq".into()).into())
        }
    }
}

fn stream_error(e: ParseError) -> Error {
    match e {
        ParseError::Malformed(m) => Error::Malformed(m),
        ParseError::NotMine(el) => Error::Protocol(format!(
            "unexpected <{}/> in a registration answer",
            el.name()
        )),
    }
}

/// How to answer `fields`: `false` with the plain fields, `true` with the data form. Only a
/// username and a password can be given; anything else required is `UnsupportedForm`.
fn plan(fields: &RegistrationFields) -> Result<bool, RegisterError> {
    let ours = |f: &str| matches!(f, "username" | "password");
    // A form says which fields are required; without one, every plain field is (XEP-0077 §3.1).
    let required = if fields.form.is_some() {
        fields.required_form_fields()
    } else {
        fields.fields.clone()
    };
    let unknown: Vec<String> = required.into_iter().filter(|f| !ours(f)).collect();
    if !unknown.is_empty() {
        return Err(RegisterError::UnsupportedForm { fields: unknown });
    }
    let plain = |f: &str| fields.fields.iter().any(|x| x == f);
    if plain("username") && plain("password") {
        Ok(false)
    } else if fields.form_has("username") && fields.form_has("password") {
        Ok(true)
    } else {
        Err(RegisterError::UnsupportedForm {
            fields: vec!["username".into(), "password".into()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::error::ErrorType;
    use crate::stanza::parse_xml;

    fn fields(xml: &str) -> RegistrationFields {
        RegistrationFields::from_element(parse_xml(xml)).expect("valid")
    }

    #[test]
    fn plain_fields_are_preferred_and_a_form_is_filled_when_alone() {
        let plain = "<query xmlns='jabber:iq:register'><username/><password/></query>";
        assert_eq!(plan(&fields(plain)), Ok(false));
        let form_only = "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='form'>\
               <field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>\
               <field var='username'><required/></field><field var='password'><required/></field>\
               <field var='nick'/>\
             </x></query>";
        assert_eq!(plan(&fields(form_only)), Ok(true));
        // Prosody with `additional_registration_fields = { "email" }`: optional in the form.
        let optional_email = "<query xmlns='jabber:iq:register'><username/><password/><email/>\
               <x xmlns='jabber:x:data' type='form'>\
               <field var='username'><required/></field><field var='password'><required/></field>\
               <field var='email'/></x></query>";
        assert_eq!(plan(&fields(optional_email)), Ok(false));
    }

    #[test]
    fn fields_we_cannot_fill() {
        let email = "<query xmlns='jabber:iq:register'><username/><password/><email/></query>";
        assert_eq!(
            plan(&fields(email)),
            Err(RegisterError::UnsupportedForm {
                fields: vec!["email".into()]
            })
        );
        let captcha = "<query xmlns='jabber:iq:register'><username/><password/>\
               <x xmlns='jabber:x:data' type='form'>\
               <field var='username'><required/></field><field var='password'><required/></field>\
               <field var='ocr'><required/></field></x></query>";
        assert_eq!(
            plan(&fields(captcha)),
            Err(RegisterError::UnsupportedForm {
                fields: vec!["ocr".into()]
            })
        );
        let nothing = "<query xmlns='jabber:iq:register'>\
               <instructions>Go to the website.</instructions></query>";
        let both = vec!["username".to_owned(), "password".to_owned()];
        assert_eq!(
            plan(&fields(nothing)),
            Err(RegisterError::UnsupportedForm { fields: both })
        );
    }

    #[test]
    fn server_errors_are_sorted() {
        let err = |condition: Condition| StanzaError::from_condition(condition);
        let cases = [
            (
                err(Condition::ServiceUnavailable),
                RegisterError::NotSupported,
            ),
            (
                err(Condition::FeatureNotImplemented),
                RegisterError::NotSupported,
            ),
            (
                err(Condition::Conflict).with_text("The requested username already exists."),
                RegisterError::Conflict,
            ),
            (
                err(Condition::NotAllowed),
                RegisterError::NotAllowed { text: None },
            ),
            (
                err(Condition::Forbidden).with_text("Registration is closed"),
                RegisterError::NotAllowed {
                    text: Some("Registration is closed".into()),
                },
            ),
            (
                err(Condition::NotAcceptable).with_text("The requested username is invalid."),
                RegisterError::Rejected {
                    condition: "not-acceptable".into(),
                    text: Some("The requested username is invalid.".into()),
                },
            ),
            (
                StanzaError::new(ErrorType::Wait, Condition::PolicyViolation),
                RegisterError::Rejected {
                    condition: "policy-violation".into(),
                    text: None,
                },
            ),
        ];
        for (error, want) in cases {
            assert_eq!(
                RegisterError::from_stanza_error(&error, "s3cret"),
                want,
                "{:?}",
                error.condition
            );
        }
    }

    #[test]
    fn display_never_shows_the_password() {
        let quoting = StanzaError::from_condition(Condition::NotAllowed)
            .with_text("password 's3cret' is too\nweak; s3cret is in a list");
        let err = RegisterError::from_stanza_error(&quoting, "s3cret");
        let shown = err.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            shown,
            "the server does not allow the registration \
             (password '<redacted>' is tooweak; <redacted> is in a list)"
        );
        let long = StanzaError::from_condition(Condition::BadRequest).with_text("x".repeat(1000));
        let RegisterError::Rejected {
            text: Some(text), ..
        } = RegisterError::from_stanza_error(&long, "pw")
        else {
            panic!("rejected with a text")
        };
        assert_eq!(text.chars().count(), MAX_TEXT);
        let blank = StanzaError::from_condition(Condition::Forbidden).with_text(" \n ");
        assert_eq!(
            RegisterError::from_stanza_error(&blank, "pw"),
            RegisterError::NotAllowed { text: None }
        );
        assert_eq!(
            RegisterError::Conflict.to_string(),
            "the account exists already"
        );
        let form = RegisterError::UnsupportedForm {
            fields: vec!["email".into(), "ocr".into()],
        };
        assert_eq!(
            form.to_string(),
            "the server's registration form asks for what we cannot fill in: email, ocr"
        );
    }
}
