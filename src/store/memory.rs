//! [`MemoryStore`]: the in-memory [`Store`], for tests and dry runs. Nothing survives the
//! process; [`Store::flush`] is a no-op.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{
    BlockStore, Error, GhostRecord, GhostStore, LoginRecord, LoginStore, ManagementRoomStore,
    MappedEvent, MessageMap, PendingEvent, PendingEvents, PortalRecord, PortalStore, Result, Store,
    TxnStore,
};
use crate::ids::{PortalKey, RemoteUserId};
use xmpp_omemo::omemo::{MemoryStore as MemoryOmemo, OmemoStore};

/// A [`Store`] held in `BTreeMap`s behind one mutex, so every multi-map write is atomic.
/// Behaves exactly like `SledStore` (both pass the conformance suite), minus durability.
/// The state is shared (`Arc`) with the OMEMO views from [`Store::omemo`].
/// `Debug` shows no contents.
#[derive(Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Test hook: while set, `flush` fails (a full disk, say).
    failing_flush: std::sync::atomic::AtomicBool,
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
    /// OMEMO state by account (our own bare JID); views handed out share these.
    omemo: BTreeMap<String, Arc<MemoryOmemo>>,
    logins: BTreeMap<RemoteUserId, LoginRecord>,
    user_login: BTreeMap<OwnedUserId, RemoteUserId>,
    portals: BTreeMap<PortalKey, PortalRecord>,
    room_portal: BTreeMap<OwnedRoomId, PortalKey>,
    messages: BTreeMap<(PortalKey, String), MappedEvent>,
    event_message: BTreeMap<OwnedEventId, (PortalKey, String)>,
    blocked: BTreeMap<RemoteUserId, std::collections::BTreeSet<RemoteUserId>>,
    pending: BTreeMap<u64, PendingEvent>,
    next_pending: u64,
    archive: BTreeMap<RemoteUserId, String>,
}

impl Inner {
    fn remove_login(&mut self, jid: &RemoteUserId) -> bool {
        let Some(old) = self.logins.remove(jid) else {
            return false;
        };
        if self.user_login.get(&old.matrix_user) == Some(jid) {
            self.user_login.remove(&old.matrix_user);
        }
        let portals: Vec<PortalKey> = self
            .portals
            .keys()
            .filter(|k| &k.login == jid)
            .cloned()
            .collect();
        for key in portals {
            if let Some(record) = self.portals.remove(&key) {
                self.room_portal.remove(&record.room);
            }
        }
        self.messages.retain(|(key, _), _| &key.login != jid);
        self.event_message.retain(|_, (key, _)| &key.login != jid);
        self.blocked.remove(jid);
        self.archive.remove(jid);
        if let Some(omemo) = self.omemo.get(jid.as_str()) {
            // Cleared, not removed: views handed out earlier must see the same (empty) state.
            let _ = omemo.clear();
        }
        true
    }
}

fn lock(inner: &Mutex<Inner>) -> Result<MutexGuard<'_, Inner>> {
    inner
        .lock()
        .map_err(|_| Error::Backend("memory store lock poisoned by a panic".to_owned()))
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        lock(&self.inner)
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

impl LoginStore for MemoryStore {
    fn login(&self, jid: &RemoteUserId) -> Result<Option<LoginRecord>> {
        Ok(self.lock()?.logins.get(jid).cloned())
    }

    fn login_of(&self, user: &UserId) -> Result<Option<LoginRecord>> {
        let inner = self.lock()?;
        Ok(inner
            .user_login
            .get(user)
            .and_then(|jid| inner.logins.get(jid))
            .cloned())
    }

    fn logins(&self) -> Result<Vec<LoginRecord>> {
        Ok(self.lock()?.logins.values().cloned().collect())
    }

    fn put_login(&self, record: &LoginRecord) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(old_jid) = inner.user_login.get(&record.matrix_user).cloned()
            && old_jid != record.jid
        {
            inner.remove_login(&old_jid);
        }
        if let Some(old) = inner.logins.get(&record.jid).cloned()
            && old.matrix_user != record.matrix_user
        {
            inner.user_login.remove(&old.matrix_user);
        }
        inner.logins.insert(record.jid.clone(), record.clone());
        inner
            .user_login
            .insert(record.matrix_user.clone(), record.jid.clone());
        Ok(())
    }

    fn remove_login(&self, jid: &RemoteUserId) -> Result<bool> {
        Ok(self.lock()?.remove_login(jid))
    }
}

impl PortalStore for MemoryStore {
    fn portal(&self, key: &PortalKey) -> Result<Option<PortalRecord>> {
        Ok(self.lock()?.portals.get(key).cloned())
    }

    fn portal_by_room(&self, room: &RoomId) -> Result<Option<(PortalKey, PortalRecord)>> {
        let inner = self.lock()?;
        Ok(inner
            .room_portal
            .get(room)
            .and_then(|key| inner.portals.get(key).map(|r| (key.clone(), r.clone()))))
    }

    fn put_portal(&self, key: &PortalKey, record: &PortalRecord) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(old) = inner.portals.get(key).cloned()
            && old.room != record.room
        {
            inner.room_portal.remove(&old.room);
        }
        if let Some(other) = inner.room_portal.get(&record.room).cloned()
            && &other != key
        {
            inner.portals.remove(&other);
        }
        inner.portals.insert(key.clone(), record.clone());
        inner.room_portal.insert(record.room.clone(), key.clone());
        Ok(())
    }

    fn remove_portal(&self, key: &PortalKey) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(old) = inner.portals.remove(key) {
            inner.room_portal.remove(&old.room);
        }
        Ok(())
    }

    fn portals_of(&self, login: &RemoteUserId) -> Result<Vec<(PortalKey, PortalRecord)>> {
        let inner = self.lock()?;
        Ok(inner
            .portals
            .iter()
            .filter(|(k, _)| &k.login == login)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }
}

impl MessageMap for MemoryStore {
    fn event_of(&self, portal: &PortalKey, remote_id: &str) -> Result<Option<MappedEvent>> {
        let key = (portal.clone(), remote_id.to_owned());
        Ok(self.lock()?.messages.get(&key).cloned())
    }

    fn remote_of(&self, event: &EventId) -> Result<Option<(PortalKey, String)>> {
        Ok(self.lock()?.event_message.get(event).cloned())
    }

    fn put_message(&self, portal: &PortalKey, remote_id: &str, mapped: &MappedEvent) -> Result<()> {
        let mut inner = self.lock()?;
        let key = (portal.clone(), remote_id.to_owned());
        if let Some(old) = inner.messages.get(&key).cloned()
            && old.event != mapped.event
            && inner.event_message.get(&old.event) == Some(&key)
        {
            inner.event_message.remove(&old.event);
        }
        inner.messages.insert(key.clone(), mapped.clone());
        inner.event_message.insert(mapped.event.clone(), key);
        Ok(())
    }
}

impl super::ArchiveStore for MemoryStore {
    fn archive_position(&self, login: &RemoteUserId) -> Result<Option<String>> {
        Ok(self.lock()?.archive.get(login).cloned())
    }

    fn set_archive_position(&self, login: &RemoteUserId, archive_id: &str) -> Result<()> {
        self.lock()?
            .archive
            .insert(login.clone(), archive_id.to_owned());
        Ok(())
    }
}

impl BlockStore for MemoryStore {
    fn is_blocked(&self, login: &RemoteUserId, contact: &RemoteUserId) -> Result<bool> {
        Ok(self
            .lock()?
            .blocked
            .get(login)
            .is_some_and(|set| set.contains(contact)))
    }

    fn set_blocked(
        &self,
        login: &RemoteUserId,
        contact: &RemoteUserId,
        blocked: bool,
    ) -> Result<()> {
        let mut inner = self.lock()?;
        let set = inner.blocked.entry(login.clone()).or_default();
        if blocked {
            set.insert(contact.clone());
        } else {
            set.remove(contact);
        }
        if set.is_empty() {
            inner.blocked.remove(login);
        }
        Ok(())
    }

    fn blocked_of(&self, login: &RemoteUserId) -> Result<Vec<RemoteUserId>> {
        let inner = self.lock()?;
        Ok(inner
            .blocked
            .get(login)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }
}

impl PendingEvents for MemoryStore {
    fn push_pending(&self, pending: &PendingEvent) -> Result<u64> {
        let mut inner = self.lock()?;
        inner.next_pending += 1;
        let position = inner.next_pending;
        inner.pending.insert(position, pending.clone());
        Ok(position)
    }

    fn pending_events(&self) -> Result<Vec<(u64, PendingEvent)>> {
        let inner = self.lock()?;
        Ok(inner.pending.iter().map(|(p, e)| (*p, e.clone())).collect())
    }

    fn remove_pending(&self, position: u64) -> Result<()> {
        self.lock()?.pending.remove(&position);
        Ok(())
    }
}

impl MemoryStore {
    /// Makes every `flush` fail (`true`) or succeed again (`false`), to test what the bridge
    /// does when its store cannot make writes durable.
    pub fn set_failing_flush(&self, failing: bool) {
        self.failing_flush
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store for MemoryStore {
    fn flush(&self) -> Result<()> {
        if self.failing_flush.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Backend("flush failed (test hook)".to_owned()));
        }
        Ok(())
    }

    fn omemo(&self, account: &str) -> Arc<dyn OmemoStore> {
        // The map is only ever inserted into, so a poisoned lock still holds a valid map.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.omemo.entry(account.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    crate::store::conformance::store_conformance_tests!((MemoryStore::new(), ()));
}
