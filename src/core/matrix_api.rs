//! What the core needs from Matrix, as a trait: `matrix::MatrixClient` implements it over HTTP,
//! tests implement it in memory. Every call names the user it acts as (the bot or a ghost).

use async_trait::async_trait;
use ruma::events::AnyTimelineEvent;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::serde::Raw;
use ruma::{
    EventId, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, TransactionId,
    UserId,
};

use crate::media::{ByteStream, MediaError};

/// The content field in which every event the bridge sends carries its own transaction id, so
/// a send whose answer was lost can be found in the room before it is made again: the
/// homeserver deduplicates an appservice user's transaction ids only in memory (Synapse keeps
/// them in its database only for access tokens of real devices), so after its restart a repeat
/// would post a second copy.
pub const TXN_FIELD: &str = "org.interop-bridge.txn_id";

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

/// Why an end-to-end encrypted event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The bridge does not decrypt (`encryption.enabled` is off).
    #[error("the bridge does not read end-to-end encrypted messages (encryption is off)")]
    Disabled,
    /// The homeserver does not give the appservice what encryption needs (the reason says
    /// which setting is missing).
    #[error("encryption is not available on this homeserver: {0}")]
    Unavailable(String),
    /// The sender's client never shared the room key with the bridge's device.
    #[error("the sender's device never shared this message's key with the bridge")]
    MissingKey,
    /// Anything else (a broken event, a crypto store failure, the homeserver).
    #[error("{0}")]
    Failed(String),
}

/// A state event to send: its type, state key and JSON content.
#[derive(Clone, Debug, PartialEq)]
pub struct NewState {
    pub event_type: String,
    pub state_key: String,
    pub content: serde_json::Value,
}

/// A room to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRoom {
    pub name: Option<String>,
    pub topic: Option<String>,
    /// Invited at creation (with `is_direct` on their invite when `is_direct` is set).
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// A space (`creation_content.type = "m.space"`).
    pub space: bool,
    /// State set at creation.
    pub initial_state: Vec<NewState>,
    /// Users given power level 100 besides the creator.
    pub admins: Vec<OwnedUserId>,
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
    /// Creates a private room as `creator` (preset `private_chat`, or `trusted_private_chat`
    /// when `is_direct`).
    async fn create_room(
        &self,
        creator: &UserId,
        room: &NewRoom,
    ) -> Result<OwnedRoomId, MatrixError>;
    /// Invites `invitee` as `user`, with an optional reason shown with the invite. Succeeds if
    /// `invitee` is already invited or joined.
    async fn invite(
        &self,
        user: &UserId,
        room: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError>;
    /// Leaves (or rejects an invite to) `room` as `user`; succeeds if not in the room.
    async fn leave_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError>;
    /// Sends a state event as `user`.
    async fn send_state(
        &self,
        user: &UserId,
        room: &RoomId,
        state: &NewState,
    ) -> Result<OwnedEventId, MatrixError>;
    /// Sends any message-like event as `user` (e.g. an edit), deduplicated on `txn_id` like
    /// [`send_message`](Self::send_message).
    async fn send_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError>;
    /// Redacts `event` as `user`.
    async fn redact(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
        txn_id: &TransactionId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError>;
    /// The users joined to `room`, as seen by `user` (who must be in it).
    async fn joined_members(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Vec<OwnedUserId>, MatrixError>;
    /// One event of `room` by id, as `user` (a member) sees it.
    async fn room_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError>;
    /// Decrypts an `m.room.encrypted` event of `room` as `user` (a member), waiting a bounded
    /// time for its key. The result is the event as its sender wrote it.
    async fn decrypt(
        &self,
        _user: &UserId,
        _room: &RoomId,
        _event: &Raw<AnyTimelineEvent>,
    ) -> Result<Raw<AnyTimelineEvent>, DecryptError> {
        Err(DecryptError::Disabled)
    }
    /// Makes sure `user` has its encryption device (created, keys uploaded, cross-signed), so
    /// that clients share room keys with it from the first message on. Nothing without
    /// encryption.
    async fn prepare_device(&self, _user: &UserId) -> Result<(), MatrixError> {
        Ok(())
    }
    /// Sends `user`'s public read receipt (`m.read`) for `event`.
    async fn send_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<(), MatrixError>;
    /// Says `user` is typing in `room` for at most `timeout`, or (`None`) no longer typing.
    async fn set_typing(
        &self,
        user: &UserId,
        room: &RoomId,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), MatrixError>;
    /// Shows `user`'s presence (`online`, `unavailable` for away, `offline`) with a status
    /// text; the homeserver times a presence out unless it is set again (Synapse: 30 s).
    async fn set_presence(
        &self,
        user: &UserId,
        availability: super::Availability,
        status: Option<&str>,
    ) -> Result<(), MatrixError>;
    /// The events annotating `event` (`m.annotation`: reactions), as `user` sees them, newest
    /// first, at most one page of 100. Redacted ones are not among them.
    async fn annotations(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError>;
    /// The homeserver's largest upload (`m.upload.size`), `None` if it names none.
    async fn upload_limit(&self) -> Result<Option<u64>, MediaError> {
        Ok(None)
    }
    /// Starts downloading `mxc` as `user` (authenticated media): refused above `limit` or
    /// without a length; its chunks end in an error if it stalls for `stall`.
    async fn download(
        &self,
        _user: &UserId,
        _mxc: &MxcUri,
        _limit: u64,
        _stall: std::time::Duration,
    ) -> Result<ByteStream, MediaError> {
        Err(MediaError::Status(404))
    }
    /// Uploads `body` as `user`; its content URI. Nothing is stored if the body's chunks end
    /// in an error.
    async fn upload(
        &self,
        _user: &UserId,
        _filename: &str,
        _content_type: &str,
        _body: ByteStream,
    ) -> Result<OwnedMxcUri, MediaError> {
        Err(MediaError::Status(501))
    }
    /// Whether `room` is end-to-end encrypted, as `user` (a member) sees it: a file sent there
    /// goes as an encrypted attachment.
    async fn is_encrypted(&self, _user: &UserId, _room: &RoomId) -> Result<bool, MatrixError> {
        Ok(false)
    }
    /// The newest events of `room` as `user` (a member) sees them, at most `limit`, oldest
    /// first (`/messages` backwards from the end, one page).
    async fn recent_events(
        &self,
        user: &UserId,
        room: &RoomId,
        limit: u32,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError>;
}
