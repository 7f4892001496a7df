//! [`EncryptingMatrix`]: the core's `MatrixApi` with end-to-bridge encryption. Every message
//! the bot or a ghost sends into an encrypted room is encrypted with that user's own device
//! ([`Crypto::encrypt`]) and goes out as `m.room.encrypted`; every other call is the plain
//! client's. The core never sees Olm or Megolm: it asks to decrypt an event and to prepare a
//! user's device, and sends as if every room were plain.

use std::sync::Arc;

use async_trait::async_trait;
use ruma::events::AnyTimelineEvent;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::serde::Raw;
use ruma::{
    EventId, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, TransactionId,
    UserId,
};
use tracing::warn;

use super::MatrixClient;
use super::crypto::{Crypto, CryptoError};
use crate::core::{Availability, DecryptError, MatrixApi, MatrixError, NewRoom, NewState};
use crate::media::{ByteStream, MediaError};

/// The plain client with the crypto machines in front of its sends.
pub struct EncryptingMatrix {
    plain: Arc<MatrixClient>,
    crypto: Arc<Crypto>,
}

impl EncryptingMatrix {
    pub fn new(plain: Arc<MatrixClient>, crypto: Arc<Crypto>) -> Self {
        Self { plain, crypto }
    }
}

fn to_matrix(e: CryptoError) -> MatrixError {
    match e {
        CryptoError::Matrix(e) => e,
        other => MatrixError::Protocol(format!("encryption failed: {other}")),
    }
}

#[async_trait]
impl MatrixApi for EncryptingMatrix {
    async fn ensure_registered(&self, localpart: &str) -> Result<(), MatrixError> {
        self.plain.ensure_registered(localpart).await
    }

    async fn join_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.plain.join_room(user, room).await
    }

    async fn send_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<OwnedEventId, MatrixError> {
        let content =
            serde_json::to_value(content).map_err(|e| MatrixError::Protocol(e.to_string()))?;
        self.send_event(user, room, "m.room.message", txn_id, &content)
            .await
    }

    async fn display_name(&self, user: &UserId) -> Result<Option<String>, MatrixError> {
        self.plain.display_name(user).await
    }

    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        self.plain.set_display_name(user, name).await
    }

    async fn create_room(
        &self,
        creator: &UserId,
        room: &NewRoom,
    ) -> Result<OwnedRoomId, MatrixError> {
        self.plain.create_room(creator, room).await
    }

    async fn invite(
        &self,
        user: &UserId,
        room: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.plain.invite(user, room, invitee, reason).await
    }

    async fn leave_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.plain.leave_room(user, room).await
    }

    async fn send_state(
        &self,
        user: &UserId,
        room: &RoomId,
        state: &NewState,
    ) -> Result<OwnedEventId, MatrixError> {
        self.plain.send_state(user, room, state).await
    }

    async fn send_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        match self
            .crypto
            .encrypt(user, room, event_type, content)
            .await
            .map_err(to_matrix)?
        {
            Some(encrypted) => {
                self.plain
                    .send_event(user, room, "m.room.encrypted", txn_id, &encrypted)
                    .await
            }
            None => {
                self.plain
                    .send_event(user, room, event_type, txn_id, content)
                    .await
            }
        }
    }

    async fn redact(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
        txn_id: &TransactionId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.plain.redact(user, room, event, txn_id, reason).await
    }

    async fn joined_members(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Vec<OwnedUserId>, MatrixError> {
        self.plain.joined_members(user, room).await
    }

    async fn room_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        self.plain.room_event(user, room, event).await
    }

    async fn send_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<(), MatrixError> {
        self.plain.send_receipt(user, room, event).await
    }

    async fn set_typing(
        &self,
        user: &UserId,
        room: &RoomId,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), MatrixError> {
        self.plain.set_typing(user, room, timeout).await
    }

    async fn set_presence(
        &self,
        user: &UserId,
        availability: Availability,
        status: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.plain.set_presence(user, availability, status).await
    }

    async fn annotations(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        self.plain.annotations(user, room, event).await
    }

    async fn recent_events(
        &self,
        user: &UserId,
        room: &RoomId,
        limit: u32,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        self.plain.recent_events(user, room, limit).await
    }

    async fn decrypt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &Raw<AnyTimelineEvent>,
    ) -> Result<Raw<AnyTimelineEvent>, DecryptError> {
        let plain = self
            .crypto
            .decrypt(user, room, event)
            .await
            .map_err(|e| match e {
                CryptoError::MissingKey => DecryptError::MissingKey,
                CryptoError::Unavailable(why) => DecryptError::Unavailable(why),
                other => DecryptError::Failed(other.to_string()),
            })?;
        Ok(with_clear_relation(event, plain))
    }

    async fn upload_limit(&self) -> Result<Option<u64>, MediaError> {
        self.plain.upload_limit().await
    }

    async fn download(
        &self,
        user: &UserId,
        mxc: &MxcUri,
        limit: u64,
        stall: std::time::Duration,
    ) -> Result<ByteStream, MediaError> {
        self.plain.download_media(user, mxc, limit, stall).await
    }

    async fn upload(
        &self,
        user: &UserId,
        filename: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<OwnedMxcUri, MediaError> {
        self.plain
            .upload_media(user, filename, content_type, body)
            .await
    }

    async fn is_encrypted(&self, user: &UserId, room: &RoomId) -> Result<bool, MatrixError> {
        self.crypto.is_encrypted(user, room).await
    }

    async fn prepare_device(&self, user: &UserId) -> Result<(), MatrixError> {
        match self.crypto.machine(user).await {
            Ok(_) => Ok(()),
            Err(error) => {
                warn!(user = %user, %error, "encryption device not ready");
                Err(to_matrix(error))
            }
        }
    }
}

/// The decrypted event with the relation its envelope carried in the clear: clients move
/// `m.relates_to` (a reply, an edit, a reaction) out of the ciphertext so the homeserver can
/// aggregate it, and the decrypted payload then lacks it.
fn with_clear_relation(
    envelope: &Raw<AnyTimelineEvent>,
    plain: Raw<AnyTimelineEvent>,
) -> Raw<AnyTimelineEvent> {
    let relation = envelope
        .get_field::<serde_json::Value>("content")
        .ok()
        .flatten()
        .and_then(|c| c.get("m.relates_to").cloned());
    let Some(relation) = relation else {
        return plain;
    };
    let Ok(mut event) = plain.deserialize_as_unchecked::<serde_json::Value>() else {
        return plain;
    };
    let Some(content) = event.get_mut("content").and_then(|c| c.as_object_mut()) else {
        return plain;
    };
    if content.contains_key("m.relates_to") {
        return plain;
    }
    content.insert("m.relates_to".into(), relation);
    match serde_json::value::to_raw_value(&event) {
        Ok(raw) => Raw::from_json(raw),
        Err(_) => plain,
    }
}

#[cfg(test)]
mod relation_tests {
    use super::*;

    fn raw(v: serde_json::Value) -> Raw<AnyTimelineEvent> {
        Raw::from_json(serde_json::value::to_raw_value(&v).expect("json"))
    }

    #[test]
    fn the_clear_relation_is_put_back_into_the_decrypted_content() {
        let envelope = raw(serde_json::json!({"type": "m.room.encrypted", "content": {
            "ciphertext": "x", "m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}}));
        let plain = raw(serde_json::json!({"type": "m.room.message", "content": {"body": "hi"}}));
        let merged = with_clear_relation(&envelope, plain);
        let content = merged
            .get_field::<serde_json::Value>("content")
            .expect("json")
            .expect("content");
        assert_eq!(content["m.relates_to"]["m.in_reply_to"]["event_id"], "$a");
        assert_eq!(content["body"], "hi");
        // One inside the ciphertext wins.
        let inside = raw(serde_json::json!({"type": "m.room.message", "content": {
            "body": "hi", "m.relates_to": {"rel_type": "m.replace", "event_id": "$b"}}}));
        let kept = with_clear_relation(&envelope, inside);
        let content = kept
            .get_field::<serde_json::Value>("content")
            .expect("json")
            .expect("c");
        assert_eq!(content["m.relates_to"]["event_id"], "$b");
    }
}
