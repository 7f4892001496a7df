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
    /// Failures that retrying with the same credentials cannot fix.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::AuthFailed { .. }
                | Error::NoMechanism
                | Error::TlsUnavailable
                | Error::CaFile { .. }
                | Error::Closed
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
