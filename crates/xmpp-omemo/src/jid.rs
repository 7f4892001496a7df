//! XMPP addresses (RFC 7622): `local@domain/resource`. Structural checks and lengths only; the
//! server is the authority on string preparation, we compare what it sends us byte for byte.

use std::fmt;

/// A JID, bare (`local@domain`, `domain`) or full (with `/resource`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    /// The whole JID as written, validated.
    full: String,
    /// Byte offset of `/`, when there is a resource.
    slash: Option<usize>,
    /// Byte offset of `@`, when there is a localpart.
    at: Option<usize>,
}

/// Why a string is not a JID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("empty JID part")]
    EmptyPart,
    #[error("a JID part is longer than 1023 bytes")]
    TooLong,
    #[error(
        "a JID may not contain whitespace, control characters or these: \" & ' / : < > @ in the localpart"
    )]
    BadCharacter,
}

const MAX_PART: usize = 1023;

impl Jid {
    pub fn parse(s: &str) -> Result<Self, JidError> {
        let slash = s.find('/');
        let bare = &s[..slash.unwrap_or(s.len())];
        let at = bare.find('@');
        let (local, domain) = match at {
            Some(i) => (Some(&bare[..i]), &bare[i + 1..]),
            None => (None, bare),
        };
        let resource = slash.map(|i| &s[i + 1..]);
        for part in [local, Some(domain), resource].into_iter().flatten() {
            if part.is_empty() {
                return Err(JidError::EmptyPart);
            }
            if part.len() > MAX_PART {
                return Err(JidError::TooLong);
            }
            if part.chars().any(char::is_control) {
                return Err(JidError::BadCharacter);
            }
        }
        if let Some(local) = local
            && local
                .chars()
                .any(|c| c.is_whitespace() || "\"&'/:<>@".contains(c))
        {
            return Err(JidError::BadCharacter);
        }
        if domain.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(JidError::BadCharacter);
        }
        Ok(Self {
            full: s.to_owned(),
            slash,
            at,
        })
    }

    /// The JID without its resource.
    pub fn bare(&self) -> Jid {
        match self.slash {
            Some(i) => Jid {
                full: self.full[..i].to_owned(),
                slash: None,
                at: self.at,
            },
            None => self.clone(),
        }
    }

    pub fn is_bare(&self) -> bool {
        self.slash.is_none()
    }

    pub fn local(&self) -> Option<&str> {
        self.at.map(|i| &self.full[..i])
    }

    pub fn domain(&self) -> &str {
        let start = self.at.map_or(0, |i| i + 1);
        &self.full[start..self.slash.unwrap_or(self.full.len())]
    }

    /// The domain alone, as a JID: the address of the account's server.
    pub fn to_domain(&self) -> Jid {
        Jid {
            full: self.domain().to_owned(),
            slash: None,
            at: None,
        }
    }

    pub fn resource(&self) -> Option<&str> {
        self.slash.map(|i| &self.full[i + 1..])
    }

    /// This JID with `resource` in place of its own.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Jid::parse(&format!("{}/{resource}", self.bare()))
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// True when both have the same bare JID.
    pub fn same_bare(&self, other: &Jid) -> bool {
        self.full[..self.slash.unwrap_or(self.full.len())]
            == other.full[..other.slash.unwrap_or(other.full.len())]
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jid({})", self.full)
    }
}

impl std::str::FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Self, JidError> {
        Jid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts() {
        let j = Jid::parse("alice@xmpp.test/phone/1").expect("valid");
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(j.domain(), "xmpp.test");
        assert_eq!(j.resource(), Some("phone/1"));
        assert_eq!(j.bare().as_str(), "alice@xmpp.test");
        assert!(j.bare().is_bare());
        let d = Jid::parse("xmpp.test").expect("domain");
        assert_eq!(
            (d.local(), d.domain(), d.resource()),
            (None, "xmpp.test", None)
        );
        assert!(j.same_bare(&Jid::parse("alice@xmpp.test").expect("valid")));
        assert_eq!(d.with_resource("r").expect("valid").as_str(), "xmpp.test/r");
        assert_eq!(j.to_domain(), d);
        assert_eq!(d.to_domain(), d);
    }

    #[test]
    fn invalid_jids() {
        assert_eq!(Jid::parse(""), Err(JidError::EmptyPart));
        assert_eq!(Jid::parse("@x"), Err(JidError::EmptyPart));
        assert_eq!(Jid::parse("a@"), Err(JidError::EmptyPart));
        assert_eq!(Jid::parse("a@x/"), Err(JidError::EmptyPart));
        assert_eq!(Jid::parse("a b@x"), Err(JidError::BadCharacter));
        assert_eq!(Jid::parse("a@b@x"), Err(JidError::BadCharacter));
        assert_eq!(Jid::parse("a@x\u{0}"), Err(JidError::BadCharacter));
        assert_eq!(
            Jid::parse(&format!("{}@x", "a".repeat(1024))),
            Err(JidError::TooLong)
        );
    }
}
