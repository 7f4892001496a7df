//! Why a connection ended or could not be made. Every variant can be shown to a user and logged:
//! none carries stanza content, passwords or keys.

use std::io;

use crate::stanza::Malformed;
use crate::xml::XmlError;

/// A connection-level failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the server does not offer STARTTLS; refusing to continue without TLS")]
    TlsUnavailable,
    /// The server's certificate was refused (untrusted issuer, wrong name, expired, a CA
    /// certificate used as the server's own …). Not fatal — the admin may fix it, and the
    /// client keeps retrying — but a caller waiting for a first login should not wait on it.
    #[error("the server's certificate was refused: {0}")]
    Certificate(String),
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
            Error::NoMechanism | Error::TlsUnavailable | Error::CaFile { .. } | Error::Closed
        )
    }
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
        assert!(!Error::Io("reset".into()).is_fatal());
    }
}
