//! [`MemoryStore`]: the in-memory [`Store`], for tests and dry runs. Nothing survives the
//! process; [`Store::flush`] is a no-op.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{Error, GhostRecord, GhostStore, ManagementRoomStore, Result, Store, TxnStore};

/// A [`Store`] held in `BTreeMap`s behind one mutex, so every multi-map write is atomic.
/// Behaves exactly like `SledStore` (both pass the conformance suite), minus durability.
/// `Debug` shows no contents.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    txn_processed_ms: BTreeMap<String, u64>,
    user_mgmt_room: BTreeMap<OwnedUserId, OwnedRoomId>,
    mgmt_room_user: BTreeMap<OwnedRoomId, OwnedUserId>,
    ghosts: BTreeMap<OwnedUserId, GhostRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Backend("memory store lock poisoned by a panic".to_owned()))
    }
}

impl TxnStore for MemoryStore {
    fn txn_processed(&self, txn_id: &str) -> Result<bool> {
        Ok(self.lock()?.txn_processed_ms.contains_key(txn_id))
    }

    fn mark_txn_processed(&self, txn_id: &str, at_ms: u64) -> Result<()> {
        self.lock()?
            .txn_processed_ms
            .entry(txn_id.to_owned())
            .or_insert(at_ms);
        Ok(())
    }

    fn prune_txns_before(&self, before_ms: u64) -> Result<usize> {
        let mut inner = self.lock()?;
        let before = inner.txn_processed_ms.len();
        inner.txn_processed_ms.retain(|_, at| *at >= before_ms);
        Ok(before - inner.txn_processed_ms.len())
    }
}

impl ManagementRoomStore for MemoryStore {
    fn management_room(&self, user: &UserId) -> Result<Option<OwnedRoomId>> {
        Ok(self.lock()?.user_mgmt_room.get(user).cloned())
    }

    fn management_room_owner(&self, room: &RoomId) -> Result<Option<OwnedUserId>> {
        Ok(self.lock()?.mgmt_room_user.get(room).cloned())
    }

    fn set_management_room(&self, user: &UserId, room: &RoomId) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(old_room) = inner
            .user_mgmt_room
            .insert(user.to_owned(), room.to_owned())
            && old_room != room
        {
            inner.mgmt_room_user.remove(&old_room);
        }
        if let Some(old_owner) = inner
            .mgmt_room_user
            .insert(room.to_owned(), user.to_owned())
            && old_owner != user
        {
            inner.user_mgmt_room.remove(&old_owner);
        }
        Ok(())
    }

    fn remove_management_room(&self, user: &UserId) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(room) = inner.user_mgmt_room.remove(user) {
            inner.mgmt_room_user.remove(&room);
        }
        Ok(())
    }
}

impl GhostStore for MemoryStore {
    fn ghost(&self, user: &UserId) -> Result<Option<GhostRecord>> {
        Ok(self.lock()?.ghosts.get(user).cloned())
    }

    fn put_ghost(&self, user: &UserId, record: &GhostRecord) -> Result<()> {
        self.lock()?.ghosts.insert(user.to_owned(), record.clone());
        Ok(())
    }
}

impl Store for MemoryStore {
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    crate::store::conformance::store_conformance_tests!((MemoryStore::new(), ()));
}
