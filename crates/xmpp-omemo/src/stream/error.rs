//! Why a connection ended or could not be made. Every variant can be shown to a user and logged:
//! none carries stanza content, passwords or keys.

use std::io;

use super::tls::SpkiSha256;
use crate::stanza::Malformed;
use crate::xml::XmlError;

/// A connection-level failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// No server of the domain took the TCP connection; `tried` names each candidate (the
    /// configured server, the SRV targets, or the domain on 5222) and why it failed.
    #[error("no XMPP server of {domain} could be reached: {tried}")]
    Unreachable { domain: String, tried: String },
    /// The DNS lookup of the domain's SRV records failed (timeout, SERVFAIL …): passing.
    #[error("the DNS lookup of {domain}'s XMPP servers failed: {reason}")]
    Dns { domain: String, reason: String },
    /// The domain's SRV records have only `.` targets: it offers no XMPP client service
    /// (RFC 6120 §3.2.1, XEP-0368). Lasting.
    #[error("{domain} offers no XMPP client service (its SRV records' target is \".\")")]
    ServiceRefused { domain: String },
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the server does not offer STARTTLS; refusing to continue without TLS")]
    TlsUnavailable,
    /// The server's certificate was refused (untrusted issuer, wrong name, expired, a CA
    /// certificate used as the server's own, no pin matching …). Fatal: retrying cannot change
    /// the certificate; the admin pins it or gives its CA. `domain` is the name it was checked
    /// for (the JID's domain); `presented` the SPKI SHA-256 of the certificate the server
    /// showed, the value to pin (`None` if it could not be read).
    #[error(
        "the certificate of {domain} was refused: {reason}{}",
        presented_note(presented)
    )]
    Certificate {
        domain: String,
        reason: String,
        presented: Option<SpkiSha256>,
    },
    #[error("the TLS CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("XML stream error: {0}")]
    Xml(String),
    #[error("the server sent a stream error: {condition}")]
    Stream { condition: String },
    #[error("authentication failed: {condition}")]
    AuthFailed { condition: String },
    #[error("the server offers no SASL mechanism we support (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN)")]
    NoMechanism,
    #[error("SASL: {0}")]
    Sasl(String),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("read or write failed: {0}")]
    Io(String),
    #[error("the client was closed")]
    Closed,
    #[error("the outbound queue is full ({0} stanzas)")]
    QueueFull(usize),
    #[error("the server answered with an error: {condition}")]
    IqError { condition: String },
}

impl Error {
    /// Failures that retrying with the same credentials cannot fix. A SASL failure is one
    /// unless the server says it is passing (RFC 6120 §6.5: `temporary-auth-failure`, or
    /// `aborted`), so a server's hiccup never ends a login for good.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::AuthFailed { condition } => {
                !matches!(condition.as_str(), "temporary-auth-failure" | "aborted")
            }
            _ => self.is_fatal_otherwise(),
        }
    }

    fn is_fatal_otherwise(&self) -> bool {
        matches!(
            self,
            Error::NoMechanism
                | Error::TlsUnavailable
                | Error::CaFile { .. }
                | Error::Certificate { .. }
                | Error::Closed
                | Error::ServiceRefused { .. }
        )
    }
}

fn presented_note(presented: &Option<SpkiSha256>) -> String {
    presented.map_or_else(String::new, |hash| {
        format!(" (the certificate presented has the SPKI SHA-256 {hash})")
    })
}

impl From<XmlError> for Error {
    fn from(e: XmlError) -> Self {
        match e {
            XmlError::Io(io) => Error::Io(io.to_string()),
            other => Error::Xml(other.to_string()),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn only_lasting_authentication_failures_are_fatal() {
        let auth = |c: &str| Error::AuthFailed {
            condition: c.to_owned(),
        };
        for lasting in [
            "not-authorized",
            "account-disabled",
            "credentials-expired",
            "invalid-mechanism",
        ] {
            assert!(auth(lasting).is_fatal(), "{lasting}");
        }
        for passing in ["temporary-auth-failure", "aborted"] {
            assert!(!auth(passing).is_fatal(), "{passing}");
        }
        assert!(Error::NoMechanism.is_fatal());
        let refused = Error::Certificate {
            domain: "x.example".into(),
            reason: "unknown issuer".into(),
            presented: None,
        };
        assert!(refused.is_fatal(), "retrying cannot change the certificate");
        assert!(!Error::Io("reset".into()).is_fatal());
    }

    #[test]
    fn a_refused_service_is_lasting_and_dns_or_unreachable_servers_are_passing() {
        let domain = "example.org".to_owned();
        assert!(
            Error::ServiceRefused {
                domain: domain.clone()
            }
            .is_fatal()
        );
        let dns = Error::Dns {
            domain: domain.clone(),
            reason: "request timed out".into(),
        };
        assert!(!dns.is_fatal());
        let unreachable = Error::Unreachable {
            domain,
            tried: "example.org:5222 (no SRV record, STARTTLS) at 127.0.0.1:5222: refused".into(),
        };
        assert!(!unreachable.is_fatal());
        assert_eq!(
            unreachable.to_string(),
            "no XMPP server of example.org could be reached: example.org:5222 (no SRV record, \
             STARTTLS) at 127.0.0.1:5222: refused"
        );
    }
}
