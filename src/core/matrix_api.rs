//! What the core needs from Matrix, as a trait: `matrix::MatrixClient` implements it over HTTP,
//! tests implement it in memory. Every call names the user it acts as (the bot or a ghost).

use async_trait::async_trait;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{OwnedEventId, RoomId, TransactionId, UserId};

/// A failed homeserver call. `Display` carries the homeserver's error code and message, never a
/// token or an event's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver answered with an error.
    #[error("homeserver answered {status} {errcode}: {message}")]
    Api {
        status: u16,
        errcode: String,
        message: String,
    },
    /// The homeserver could not be reached (after retries).
    #[error("cannot reach the homeserver: {0}")]
    Transport(String),
    /// The request could not be built, or the answer could not be read.
    #[error("bad request or response: {0}")]
    Protocol(String),
}

impl MatrixError {
    /// The Matrix error code, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

#[async_trait]
pub trait MatrixApi: Send + Sync + 'static {
    /// Registers the appservice user `localpart`; succeeds if it already exists.
    async fn ensure_registered(&self, localpart: &str) -> Result<(), MatrixError>;
    /// Joins `room` as `user` (idempotent).
    async fn join_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError>;
    /// Sends a message as `user`. The homeserver deduplicates on (`user`, `txn_id`), so a
    /// retried send with the same transaction id has effect once.
    async fn send_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<OwnedEventId, MatrixError>;
    async fn display_name(&self, user: &UserId) -> Result<Option<String>, MatrixError>;
    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError>;
}
