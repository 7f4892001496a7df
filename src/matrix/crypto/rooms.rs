//! What the crypto layer knows about rooms: whether each is encrypted (cached for good once
//! it is) and its members (cached until the room's next membership event), both kept up to
//! date by the transactions ([`Crypto::observe`]).

use std::collections::HashMap;
use std::sync::Arc;

use ruma::api::client::membership::get_member_events;
use ruma::api::client::state::get_state_event_for_key;
use ruma::events::room::encryption::RoomEncryptionEventContent;
use ruma::events::room::member::MembershipState;
use ruma::events::{AnyTimelineEvent, StateEventType};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tracing::debug;

use super::Crypto;
use crate::core::MatrixError;

/// What is known about a room's encryption.
#[derive(Clone)]
pub(super) enum RoomEncryption {
    Plain,
    Encrypted(Box<RoomEncryptionEventContent>),
}

impl Crypto {
    /// Notes what a transaction says about rooms' encryption (an `m.room.encryption` state
    /// event makes the room encrypted from then on).
    pub fn observe(&self, events: &[Raw<AnyTimelineEvent>]) {
        for raw in events {
            match raw.get_field::<String>("type").ok().flatten().as_deref() {
                Some("m.room.encryption") => {}
                Some("m.room.member") => {
                    if let Some(room) = raw.get_field::<OwnedRoomId>("room_id").ok().flatten() {
                        self.members_lock().forget(&room);
                    }
                    continue;
                }
                _ => continue,
            }
            let room = raw.get_field::<OwnedRoomId>("room_id").ok().flatten();
            let content = raw
                .get_field::<RoomEncryptionEventContent>("content")
                .ok()
                .flatten();
            if let (Some(room), Some(content)) = (room, content) {
                debug!(room = %room, "room is encrypted");
                self.rooms_lock()
                    .insert(room, RoomEncryption::Encrypted(Box::new(content)));
            }
        }
    }

    fn members_lock(&self) -> std::sync::MutexGuard<'_, MemberCache> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rooms_lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedRoomId, RoomEncryption>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The room's encryption settings as `user` (a member) reads them, or `None` for a plain
    /// room. Encryption, once on, stays on, so an encrypted answer is cached for good; a plain
    /// one until a transaction says otherwise ([`observe`](Self::observe)).
    pub(super) async fn room_encryption(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Option<RoomEncryptionEventContent>, MatrixError> {
        if let Some(known) = self.rooms_lock().get(room).cloned() {
            return Ok(match known {
                RoomEncryption::Plain => None,
                RoomEncryption::Encrypted(content) => Some(*content),
            });
        }
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            StateEventType::RoomEncryption,
            String::new(),
        );
        let found = match self.client.send(request, Some(user)).await {
            Ok(response) => {
                serde_json::from_str::<RoomEncryptionEventContent>(response.event_or_content.get())
                    .ok()
            }
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => None,
            Err(e) => return Err(e),
        };
        let entry = match &found {
            Some(content) => RoomEncryption::Encrypted(Box::new(content.clone())),
            None => RoomEncryption::Plain,
        };
        self.rooms_lock().insert(room.to_owned(), entry);
        Ok(found)
    }

    /// Whether `room` is encrypted, as `user` (a member) sees it.
    pub async fn is_encrypted(&self, user: &UserId, room: &RoomId) -> Result<bool, MatrixError> {
        Ok(self.room_encryption(user, room).await?.is_some())
    }

    /// The joined and invited members of `room`, as `user` sees them (cached until the room's
    /// next membership event).
    pub(super) async fn members(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Arc<[OwnedUserId]>, MatrixError> {
        let epoch = {
            let cache = self.members_lock();
            if let Some(members) = cache.rooms.get(room) {
                return Ok(members.clone());
            }
            cache.epoch
        };
        let members: Arc<[OwnedUserId]> = self.read_members(user, room).await?.into();
        self.members_lock().insert(room, epoch, members.clone());
        Ok(members)
    }

    async fn read_members(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Vec<OwnedUserId>, MatrixError> {
        let request = get_member_events::v3::Request::new(room.to_owned());
        let response = self.client.send(request, Some(user)).await?;
        Ok(response
            .chunk
            .iter()
            .filter_map(|raw| raw.deserialize().ok())
            .filter(|ev| {
                matches!(
                    ev.membership(),
                    MembershipState::Join | MembershipState::Invite
                )
            })
            .map(|ev| ev.state_key().to_owned())
            .collect())
    }
}

/// Rooms' members as last read. `epoch` counts membership events seen: a list read while one
/// arrived may miss its change, and is not kept.
#[derive(Default)]
pub(super) struct MemberCache {
    rooms: HashMap<OwnedRoomId, Arc<[OwnedUserId]>>,
    epoch: u64,
}

/// At most this many rooms' members are kept; beyond it the cache starts again.
const MAX_MEMBER_ROOMS: usize = 10_000;

impl MemberCache {
    fn forget(&mut self, room: &RoomId) {
        self.epoch += 1;
        self.rooms.remove(room);
    }

    /// Keeps `members`, read when the epoch was `read_at`, unless a membership event came since.
    fn insert(&mut self, room: &RoomId, read_at: u64, members: Arc<[OwnedUserId]>) {
        if read_at != self.epoch {
            return;
        }
        if self.rooms.len() >= MAX_MEMBER_ROOMS {
            self.rooms.clear();
        }
        self.rooms.insert(room.to_owned(), members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_list_read_across_a_membership_event_is_not_kept() {
        let room = ruma::room_id!("!r:hs");
        let alice: Arc<[OwnedUserId]> = vec![ruma::owned_user_id!("@alice:hs")].into();
        let mut cache = MemberCache::default();
        let read_at = cache.epoch;
        cache.forget(room);
        cache.insert(room, read_at, alice.clone());
        assert!(cache.rooms.is_empty());
        cache.insert(room, cache.epoch, alice.clone());
        assert_eq!(cache.rooms.get(room), Some(&alice));
        cache.forget(room);
        assert!(cache.rooms.is_empty());
    }
}
