//! Identifier newtypes that cross module boundaries, and the reversible mapping between remote
//! users and their Matrix ghosts.
//!
//! Ghost localparts use the Matrix spec's mapping from other character sets: `a-z 0-9 - .` stay,
//! an uppercase letter becomes `_` + lowercase, `_` becomes `__`, and every other byte of the
//! UTF-8 string becomes `=xx` (lowercase hex). So `bob@xmpp.example` is
//! `@<prefix>bob=40xmpp.example:<server>`.

use std::fmt;

use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};

/// A remote user: a bare JID (`local@domain`, no resource), unique within the interop network.
/// Also names a login: the interop account a Matrix user linked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemoteUserId(String);

/// One portal: the chat between a linked login (our account's bare JID) and one contact (their
/// bare JID). Unique within the bridge; the same contact seen by two logins is two portals.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortalKey {
    pub login: RemoteUserId,
    pub contact: RemoteUserId,
}

impl fmt::Display for PortalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}", self.login, self.contact)
    }
}

/// Why a string is not an identifier we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a bare JID must have the form local@domain or domain, without a resource")]
    NotBareJid,
    #[error("the ghost user ID would be longer than Matrix allows (255 bytes)")]
    TooLong,
}

/// Largest bare JID we accept: localpart and domainpart are at most 1023 bytes each (RFC 7622).
const MAX_BARE_JID_BYTES: usize = 2047;
/// Matrix user IDs are at most 255 bytes, sigil and server name included.
const MAX_USER_ID_BYTES: usize = 255;

impl RemoteUserId {
    /// Accepts `local@domain` or `domain` with no `/`, whitespace or control characters.
    /// (Full RFC 7622 preparation belongs to the XMPP layer.)
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = |c: char| c == '/' || c.is_whitespace() || c.is_control();
        if s.is_empty() || s.len() > MAX_BARE_JID_BYTES || s.chars().any(bad) {
            return Err(IdError::NotBareJid);
        }
        let domain = match s.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.contains('@') => domain,
            Some(_) => return Err(IdError::NotBareJid),
            None => s,
        };
        if domain.is_empty() {
            return Err(IdError::NotBareJid);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part (what follows the `@`, or all of a domain-only JID).
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or(self.0.as_str(), |(_, d)| d)
    }
}

impl fmt::Display for RemoteUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The exclusive user namespace of ghosts: `@<prefix><escaped bare JID>:<server>`.
#[derive(Clone, Debug)]
pub struct GhostNamespace {
    prefix: String,
    server: OwnedServerName,
}

impl GhostNamespace {
    pub fn new(prefix: impl Into<String>, server: &ServerName) -> Self {
        Self {
            prefix: prefix.into(),
            server: server.to_owned(),
        }
    }

    /// Whether `user` lies in the namespace (prefix and server), decodable or not.
    pub fn contains(&self, user: &UserId) -> bool {
        user.server_name() == self.server && user.localpart().starts_with(&self.prefix)
    }

    /// The ghost of `remote`.
    pub fn ghost_of(&self, remote: &RemoteUserId) -> Result<OwnedUserId, IdError> {
        let id = format!(
            "@{}{}:{}",
            self.prefix,
            escape_localpart(remote.as_str()),
            self.server
        );
        if id.len() > MAX_USER_ID_BYTES {
            return Err(IdError::TooLong);
        }
        UserId::parse(id).map_err(|_| IdError::TooLong)
    }

    /// The remote user behind `user`, if `user` is a well-formed ghost of this namespace.
    pub fn remote_of(&self, user: &UserId) -> Option<RemoteUserId> {
        if !self.contains(user) {
            return None;
        }
        let escaped = &user.localpart()[self.prefix.len()..];
        let remote = RemoteUserId::parse(&unescape_localpart(escaped)?).ok()?;
        (escape_localpart(remote.as_str()) == escaped).then_some(remote)
    }

    /// The registration's user regex for this namespace, anchored at both ends: Synapse
    /// matches it from the start only, so without `$` it would also claim users of other
    /// servers whose name begins with ours (`@interop_x:hs.example.evil`).
    pub fn regex(&self) -> String {
        format!("^{}$", self.legacy_regex())
    }

    /// The regex registrations of earlier versions have (not anchored at the end): still
    /// accepted, with a warning to regenerate the registration.
    pub fn legacy_regex(&self) -> String {
        format!(
            "@{}.*:{}",
            regex_escape(&self.prefix),
            regex_escape(self.server.as_str())
        )
    }
}

/// Escapes `s` into localpart characters (see the module docs).
pub fn escape_localpart(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => out.push(b as char),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(b.to_ascii_lowercase() as char);
            }
            b'_' => out.push_str("__"),
            _ => out.push_str(&format!("={b:02x}")),
        }
    }
    out
}

/// Reverses [`escape_localpart`]; `None` when `s` is not a valid escaping of a UTF-8 string.
pub fn unescape_localpart(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => bytes.push(b),
            b'_' => match it.next()? {
                b'_' => bytes.push(b'_'),
                c @ b'a'..=b'z' => bytes.push(c.to_ascii_uppercase()),
                _ => return None,
            },
            b'=' => {
                let hex = [it.next()?, it.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                    return None;
                }
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `bytes` as lowercase hex digits, two per byte (digests and random tokens in ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    fn ns() -> GhostNamespace {
        GhostNamespace::new("interop_", ruma::server_name!("hs.example"))
    }

    #[test]
    fn ghost_ids_both_ways() {
        let table = [
            ("bob@xmpp.example", "@interop_bob=40xmpp.example:hs.example"),
            (
                "Bob@XMPP.example",
                "@interop__bob=40_x_m_p_p.example:hs.example",
            ),
            ("a_b@x.org", "@interop_a__b=40x.org:hs.example"),
            (
                "jürgen@xmpp.example",
                "@interop_j=c3=bcrgen=40xmpp.example:hs.example",
            ),
            ("=+!@x", "@interop_=3d=2b=21=40x:hs.example"),
            (
                "user.name-1@sub.example",
                "@interop_user.name-1=40sub.example:hs.example",
            ),
            ("xmpp.example", "@interop_xmpp.example:hs.example"),
            (
                "渋谷@例え.jp",
                "@interop_=e6=b8=8b=e8=b0=b7=40=e4=be=8b=e3=81=88.jp:hs.example",
            ),
        ];
        for (jid, mxid) in table {
            let remote = RemoteUserId::parse(jid).expect(jid);
            let ghost = ns().ghost_of(&remote).expect(jid);
            assert_eq!(ghost.as_str(), mxid);
            assert_eq!(ns().remote_of(&ghost), Some(remote), "{mxid}");
        }
    }

    #[test]
    fn invalid_ghosts_are_not_remote_users() {
        for mxid in [
            "@interop_bob=40x:other.example", // other server
            "@other_bob=40x:hs.example",      // other prefix
            "@interop_=4:hs.example",         // truncated escape
            "@interop_=4A:hs.example",        // uppercase hex is not canonical
            "@interop__:hs.example",          // dangling underscore escape
            "@interop_=ff:hs.example",        // not UTF-8
            "@interop_a=2fb:hs.example",      // a resource: not a bare JID
            "@interop_:hs.example",           // empty
        ] {
            let user = UserId::parse(mxid).expect(mxid);
            assert_eq!(ns().remote_of(&user), None, "{mxid}");
        }
        let user = UserId::parse("@interop_=4:hs.example").expect("valid user id");
        assert!(ns().contains(&user));
    }

    #[test]
    fn invalid_bare_jids() {
        for jid in ["", "a@b/res", "@x", "a@", "a@b@c", "a b@c", "a\n@b"] {
            assert_eq!(
                RemoteUserId::parse(jid),
                Err(IdError::NotBareJid),
                "{jid:?}"
            );
        }
        let long = RemoteUserId::parse(&format!("{}@x", "é".repeat(200))).expect("valid jid");
        assert_eq!(ns().ghost_of(&long), Err(IdError::TooLong));
    }

    #[test]
    fn namespace_regex_is_escaped() {
        assert_eq!(ns().regex(), "^@interop_.*:hs\\.example$");
        assert_eq!(ns().legacy_regex(), "@interop_.*:hs\\.example");
    }
}
