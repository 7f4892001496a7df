//! XEP-0077: In-Band Registration <https://xmpp.org/extensions/xep-0077.html>, as far as a
//! client registers an account with its server: the fields the server asks for, and our answer.

use std::fmt;

use super::{FromElement, IntoElement, ParseError, data_form, ns};
use crate::xml::Element;

/// The server's answer to the registration get (`<query xmlns='jabber:iq:register'/>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationFields {
    /// `<instructions/>`, for a human.
    pub instructions: Option<String>,
    /// The plain fields asked for (`username`, `password`, `email` …), in order. XEP-0077 §3.1:
    /// every one of them must be answered.
    pub fields: Vec<String>,
    /// `<registered/>`: the entity already has an account (only on an authenticated stream).
    pub registered: bool,
    /// An XEP-0004 form (`<x xmlns='jabber:x:data'/>`) the server wants filled instead.
    pub form: Option<Element>,
}

impl RegistrationFields {
    /// The fields of `form` marked `<required/>` (`FORM_TYPE` aside), in order.
    pub fn required_form_fields(&self) -> Vec<String> {
        let Some(form) = &self.form else {
            return Vec::new();
        };
        form.children()
            .filter(|f| f.is("field", ns::DATA_FORMS))
            .filter(|f| f.get_child("required", ns::DATA_FORMS).is_some())
            .filter_map(|f| f.get_attr("var"))
            .filter(|var| *var != "FORM_TYPE")
            .map(str::to_owned)
            .collect()
    }

    /// True when `form` has a field `var`, required or not.
    pub fn form_has(&self, var: &str) -> bool {
        self.form.as_ref().is_some_and(|form| {
            form.children()
                .any(|f| f.is("field", ns::DATA_FORMS) && f.get_attr("var") == Some(var))
        })
    }
}

impl FromElement for RegistrationFields {
    fn from_element(el: Element) -> Result<Self, ParseError> {
        if !el.is("query", ns::REGISTER) {
            return Err(ParseError::NotMine(el));
        }
        let mut answer = RegistrationFields::default();
        for child in el.children() {
            if child.is("x", ns::DATA_FORMS) {
                answer.form.get_or_insert_with(|| child.clone());
            } else if child.ns() != ns::REGISTER {
                // Out-of-band data (XEP-0066) and the like: nothing we can fill in.
            } else if child.name() == "instructions" {
                answer.instructions = Some(child.text_content());
            } else if child.name() == "registered" {
                answer.registered = true;
            } else if !answer.fields.iter().any(|f| f == child.name()) {
                answer.fields.push(child.name().to_owned());
            }
        }
        Ok(answer)
    }
}

/// Our registration: a username (the account's localpart) and a password, as the plain fields
/// or, with `as_form`, as a submitted `jabber:iq:register` form. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub username: String,
    pub password: String,
    pub as_form: bool,
}

impl IntoElement for Registration {
    fn into_element(self) -> Element {
        let query = Element::new("query", ns::REGISTER);
        if self.as_form {
            let fields = [
                ("username", self.username.as_str()),
                ("password", self.password.as_str()),
            ];
            return query.child(data_form::submit(ns::REGISTER, &fields));
        }
        query
            .child(Element::new("username", ns::REGISTER).text(self.username))
            .child(Element::new("password", ns::REGISTER).text(self.password))
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("as_form", &self.as_form)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{parse_xml, reparse};

    fn parse(xml: &str) -> RegistrationFields {
        RegistrationFields::from_element(parse_xml(xml)).expect("valid")
    }

    #[test]
    fn parses_xep_0077_plain_fields() {
        // XEP-0077 §3.1, example 2.
        let fields = parse(
            "<query xmlns='jabber:iq:register'>\
               <instructions>Choose a username and password for use with this service. \
               Please also provide your email address.</instructions>\
               <username/><password/><email/>\
             </query>",
        );
        assert_eq!(fields.fields, ["username", "password", "email"]);
        assert!(
            fields
                .instructions
                .as_deref()
                .is_some_and(|i| i.starts_with("Choose a username"))
        );
        assert!(!fields.registered);
        assert_eq!(fields.form, None);
        assert!(fields.required_form_fields().is_empty());
    }

    #[test]
    fn parses_prosody_fields_and_form() {
        // What Prosody 0.12's mod_register_ibr answers.
        let fields = parse(
            "<query xmlns='jabber:iq:register'>\
               <instructions>Choose a username and password for use with this service.\
               </instructions>\
               <username/><password/>\
               <x xmlns='jabber:x:data' type='form'>\
                 <title>Creating a new account</title>\
                 <field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>\
                 <field var='username' type='text-single' label='Username'><required/></field>\
                 <field var='password' type='text-private' label='Password'><required/></field>\
                 <field var='nick' type='text-single' label='Nickname'/>\
               </x>\
             </query>",
        );
        assert_eq!(fields.fields, ["username", "password"]);
        assert_eq!(fields.required_form_fields(), ["username", "password"]);
        assert!(fields.form_has("nick") && !fields.form_has("email"));
    }

    #[test]
    fn registered_and_unknown_children() {
        // XEP-0077 §3.1, example 3, with out-of-band data.
        let fields = parse(
            "<query xmlns='jabber:iq:register'>\
               <registered/><username>juliet</username><password>R0m30</password>\
               <x xmlns='jabber:x:oob'><url>https://example.org/register</url></x>\
             </query>",
        );
        assert!(fields.registered);
        assert_eq!(fields.fields, ["username", "password"]);
        assert_eq!(fields.form, None);
    }

    #[test]
    fn registration_as_fields_and_as_form() {
        let reg = Registration {
            username: "bill".into(),
            password: "Calliope".into(),
            as_form: false,
        };
        assert_eq!(
            reg.clone().into_element().to_xml(ns::CLIENT),
            "<query xmlns='jabber:iq:register'>\
               <username>bill</username><password>Calliope</password>\
             </query>"
        );
        let form = Registration {
            as_form: true,
            ..reg
        }
        .into_element();
        let x = reparse(&form)
            .get_child("x", ns::DATA_FORMS)
            .cloned()
            .expect("a form");
        assert_eq!(x.get_attr("type"), Some("submit"));
        assert_eq!(
            data_form::value(&x, "FORM_TYPE").as_deref(),
            Some(ns::REGISTER)
        );
        assert_eq!(data_form::value(&x, "username").as_deref(), Some("bill"));
        assert_eq!(
            data_form::value(&x, "password").as_deref(),
            Some("Calliope")
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let reg = Registration {
            username: "bill".into(),
            password: "Calliope".into(),
            as_form: false,
        };
        let shown = format!("{reg:?}");
        assert!(
            !shown.contains("Calliope") && shown.contains("bill"),
            "{shown}"
        );
    }

    #[test]
    fn not_mine() {
        let el = parse_xml("<query xmlns='jabber:iq:roster'/>");
        assert_eq!(
            RegistrationFields::from_element(el.clone()),
            Err(ParseError::NotMine(el))
        );
    }
}
