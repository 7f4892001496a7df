//! Files between the two worlds: images, video, voice messages and other files.
//!
//! A file is never held whole: it flows as a [`ByteStream`] of chunks from where it is fetched
//! to where it is uploaded, decrypted and re-encrypted on the way ([`transfer`]), so a 100 MB
//! file needs a few chunks of memory, and nothing of it is written to disk.
//!
//! - [`cipher`]: XEP-0454 (AES-256-GCM, `aesgcm://` links) and Matrix encrypted attachments
//!   (AES-256-CTR + SHA-256), both streamed.
//! - [`sniff`]: content types from magic bytes and names, and cheap image dimensions.
//! - [`http`]: the HTTP client for URLs that come from the network: it refuses loopback,
//!   private, link-local and metadata addresses unless their host is allow-listed, and bounds
//!   every transfer in time and size.
//! - [`transfer`]: the stream transforms between the two.
//!
//! No URL fragment (an `aesgcm://` link's key), no key and no content is ever logged or put in
//! an error.

pub mod cipher;
pub mod http;
pub mod sniff;
pub mod transfer;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// The chunks of a file, in order; an `Err` ends it (the receiver must not deliver what it got).
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, MediaError>> + Send>>;

/// A file on its way: its exact length in bytes (announced before the first byte, as both
/// upload protocols need it), its content type if the source said, and its chunks.
pub struct ByteStream {
    pub len: u64,
    pub content_type: Option<String>,
    pub chunks: Chunks,
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("len", &self.len)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// Fetching from and uploading to URLs the network gives (a contact's file link, an upload
/// slot): [`http::MediaHttp`] over HTTP, a fake in the core's tests.
#[async_trait::async_trait]
pub trait WebFiles: Send + Sync + 'static {
    /// Starts fetching `url`: refused when its address is forbidden, or its length is unknown
    /// or above `limit`.
    async fn get(&self, url: &str, limit: u64) -> Result<ByteStream, MediaError>;
    /// Uploads `body` to `url` with `PUT` and the given headers; fails (nothing stored) if
    /// the body's chunks end with an error.
    async fn put(
        &self,
        url: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: ByteStream,
    ) -> Result<(), MediaError>;
}

/// Why a file could not be bridged. `Display` is meant for the user: it never holds a URL's
/// fragment, a key or content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Bridging files is turned off (`media.enabled = false`).
    #[error("file transfer is turned off on this bridge")]
    Disabled,
    /// The URL's host resolves to an address the bridge does not fetch from.
    #[error("its address ({0}) is in a private, loopback or link-local range")]
    Forbidden(String),
    /// Larger than what one side (or the bridge) takes.
    #[error("it is too large ({}; at most {} is taken)", human_size(*.size), human_size(*.limit))]
    TooLarge { size: u64, limit: u64 },
    /// The source did not say how large it is.
    #[error("its server did not say how large it is")]
    UnknownLength,
    /// It does not match its checksum or authentication tag (corrupted, or tampered with).
    #[error("it does not match its checksum (corrupted or tampered with)")]
    Integrity,
    /// The link or the event describing it is malformed.
    #[error("its link is malformed: {0}")]
    BadLink(String),
    /// A server answered with an HTTP error.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// Nothing arrived for too long, or the transfer took too long.
    #[error("the transfer stalled")]
    Stalled,
    /// It ended before its announced length, or ran past it.
    #[error("it arrived {got} bytes long instead of {expected}")]
    Length { expected: u64, got: u64 },
    /// A network failure (connection refused, TLS, reset).
    #[error("the transfer failed: {0}")]
    Transport(String),
    /// The homeserver could not be reached, or failed for now (5xx, 429): nothing is wrong
    /// with the file, and a later try may pass.
    #[error("the homeserver cannot take it now: {0}")]
    Homeserver(String),
    /// The interop server has no upload service, or refused a slot.
    #[error("the XMPP server refused the upload: {0}")]
    Upload(String),
}

impl MediaError {
    /// Whether trying again later may succeed (the file itself is not the problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Stalled | Self::Transport(_) | Self::Homeserver(_)
        ) || matches!(self, Self::Status(s) if *s >= 500 || *s == 429)
    }
}

impl From<cipher::CipherError> for MediaError {
    fn from(error: cipher::CipherError) -> Self {
        match error {
            cipher::CipherError::Integrity => Self::Integrity,
            cipher::CipherError::TooLarge => Self::TooLarge {
                size: cipher::GCM_MAX_LEN + 1,
                limit: cipher::GCM_MAX_LEN,
            },
            other => Self::BadLink(other.to_string()),
        }
    }
}

/// `n` bytes for people: "512 B", "20.0 MB" (decimal units, as clients show them).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_clients_show_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(20 * 1000 * 1000), "20.0 MB");
        assert_eq!(human_size(52_428_800), "52.4 MB");
        assert_eq!(human_size(u64::MAX), "18446744.1 TB");
    }

    #[test]
    fn too_large_names_both_sizes() {
        let e = MediaError::TooLarge {
            size: 60_000_000,
            limit: 50_000_000,
        };
        assert_eq!(
            e.to_string(),
            "it is too large (60.0 MB; at most 50.0 MB is taken)"
        );
    }
}
