//! The store traits, one per concern. Everything the bridge persists goes through these, so
//! that `MemoryStore` and `SledStore` are interchangeable and share one conformance suite.
//!
//! Methods are synchronous: both backends answer from memory; only [`Store::flush`] waits for
//! the disk, and async callers run it on a blocking thread.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Result;
use crate::interop::omemo::OmemoStore;

/// Appservice transactions already processed. A transaction id is unique within one appservice
/// registration (the homeserver reuses it only to retry the same transaction).
pub trait TxnStore {
    /// Whether `txn_id` was marked processed.
    fn txn_processed(&self, txn_id: &str) -> Result<bool>;
    /// Marks `txn_id` processed at `at_ms` (milliseconds since the Unix epoch). Idempotent:
    /// marking an already marked id changes nothing (it keeps its first `at_ms`).
    fn mark_txn_processed(&self, txn_id: &str, at_ms: u64) -> Result<()>;
    /// Forgets transactions processed before `before_ms` (exclusive: one processed exactly at
    /// `before_ms` stays); returns how many were removed.
    fn prune_txns_before(&self, before_ms: u64) -> Result<usize>;
}

/// The management room of each Matrix user: the DM between that user and the bridge bot.
/// A user has at most one; a room is the management room of at most one user.
pub trait ManagementRoomStore {
    fn management_room(&self, user: &UserId) -> Result<Option<OwnedRoomId>>;
    /// The user whose management room `room` is, if any.
    fn management_room_owner(&self, room: &RoomId) -> Result<Option<OwnedUserId>>;
    /// Sets `room` as `user`'s management room, replacing (and unlinking) a previous one, in
    /// one atomic write. If `room` was another user's management room, that user loses it (a
    /// room has at most one owner).
    fn set_management_room(&self, user: &UserId, room: &RoomId) -> Result<()>;
    /// Removes `user`'s management room (both directions), if any; `Ok` if there was none.
    fn remove_management_room(&self, user: &UserId) -> Result<()>;
}

/// What the bridge knows about one ghost user (a Matrix puppet of a remote contact).
/// Persisted as JSON: changing its shape needs a migration (see the snapshot test).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhostRecord {
    /// The homeserver confirmed the account exists (registered by us, or `M_USER_IN_USE`).
    pub registered: bool,
    /// The display name we last set on the homeserver, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
}

/// Ghost users, keyed by their Matrix user ID.
pub trait GhostStore {
    fn ghost(&self, user: &UserId) -> Result<Option<GhostRecord>>;
    fn put_ghost(&self, user: &UserId, record: &GhostRecord) -> Result<()>;
}

/// Everything the bridge persists. Shared as `Arc<dyn Store>`.
pub trait Store: TxnStore + ManagementRoomStore + GhostStore + Send + Sync + 'static {
    /// Durability point: when this returns `Ok`, every write made before the call survives a
    /// process kill or power loss. Blocking (fsync); call it from a blocking thread in async code.
    fn flush(&self) -> Result<()>;

    /// The OMEMO state of one linked account: `account` is our own bare JID as a string
    /// (`alice@xmpp.test`, no resource), exactly as the caller spells it — the store does not
    /// normalise it. The view sees only that account's identity, prekeys, sessions, known
    /// identities and device lists; no other account's (not even one whose JID starts with
    /// this one). Views are cheap handles on the same data: two views of one account see each
    /// other's commits at once, and a view stays usable after the store handle that made it is
    /// dropped (for sled it keeps the database, and its directory lock, open).
    ///
    /// [`OmemoStore::flush`] on a view is this store's [`flush`](Self::flush): it makes every
    /// write durable, not only the account's.
    fn omemo(&self, account: &str) -> Arc<dyn OmemoStore>;
}
