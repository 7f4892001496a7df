//! The store traits, one per concern. Everything the bridge persists goes through these, so
//! that `MemoryStore` and `SledStore` are interchangeable and share one conformance suite.
//!
//! Methods are synchronous: both backends answer from memory; only [`Store::flush`] waits for
//! the disk, and async callers run it on a blocking thread.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Result;
use crate::ids::{PortalKey, RemoteUserId};
use xmpp_omemo::omemo::{Changes, OmemoStore};

/// Appservice transactions already processed, by the key the core gives: the transaction id
/// with a digest of its events' ids. The id alone is not unique: Synapse may number
/// transactions from 1 again after a restart (element-hq/synapse#14556).
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

/// A linked identity: one Matrix user and the interop account (bare JID) they linked. A Matrix
/// user links at most one account and an account is linked to at most one Matrix user.
/// Persisted as JSON: changing its shape needs a migration (see the snapshot test).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    pub matrix_user: OwnedUserId,
    pub jid: RemoteUserId,
    /// The account's password: the bridge logs in again after every restart. Sealed at rest
    /// when `database.key` is set (`store/seal.rs`); never logged (`Debug` hides it).
    pub password: String,
    /// The user's "Third-party chats" space, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<OwnedRoomId>,
    /// When the account was linked, milliseconds since the Unix epoch.
    pub linked_ms: u64,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("matrix_user", &self.matrix_user)
            .field("jid", &self.jid)
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

/// Linked identities, by account and by Matrix user.
pub trait LoginStore {
    fn login(&self, jid: &RemoteUserId) -> Result<Option<LoginRecord>>;
    fn login_of(&self, user: &UserId) -> Result<Option<LoginRecord>>;
    /// Every login, ordered by JID.
    fn logins(&self) -> Result<Vec<LoginRecord>>;
    /// Inserts or replaces the login of `record.jid`, both directions in one atomic write. A
    /// previous login of the same Matrix user (another JID) is removed with it, as is the
    /// previous user's entry if the JID was linked to someone else. The caller checks conflicts.
    fn put_login(&self, record: &LoginRecord) -> Result<()>;
    /// Removes the login and everything scoped to it — portals (both directions), message map
    /// entries, the bridge-side block list and the account's OMEMO state — in one atomic write.
    /// Returns whether there was a login.
    fn remove_login(&self, jid: &RemoteUserId) -> Result<bool>;
}

/// Where a portal is in the message-request flow (PRODUCT.md flow 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortalState {
    /// A contact outside the roster wrote first; the Matrix user has not joined yet.
    Request,
    /// The Matrix user opened the chat, joined a request, or the contact is in the roster.
    Accepted,
    /// The Matrix user left a request: later messages from the contact are dropped (acked).
    Declined,
}

/// A portal room and its state. Persisted as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalRecord {
    pub room: OwnedRoomId,
    pub state: PortalState,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Portals, by key and by room.
pub trait PortalStore {
    fn portal(&self, key: &PortalKey) -> Result<Option<PortalRecord>>;
    fn portal_by_room(&self, room: &RoomId) -> Result<Option<(PortalKey, PortalRecord)>>;
    /// Inserts or replaces, both directions atomically (a replaced room's reverse entry goes).
    fn put_portal(&self, key: &PortalKey, record: &PortalRecord) -> Result<()>;
    /// Removes both directions; `Ok` if there was none.
    fn remove_portal(&self, key: &PortalKey) -> Result<()>;
    /// The portals of one login, ordered by contact.
    fn portals_of(&self, login: &RemoteUserId) -> Result<Vec<(PortalKey, PortalRecord)>>;
}

/// The Matrix event a remote message became. Persisted as JSON. Never holds content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedEvent {
    pub event: OwnedEventId,
    /// The event is a placeholder for a message that did not decrypt; a later decryptable
    /// copy replaces it (an edit) and clears this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placeholder: bool,
    /// The Matrix user wrote it (the bridge sent it to the contact); `false`: the contact did.
    /// Decides whose account a reply's target is and who may take the message back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ours: bool,
    /// The contact asked to be told when it is read (XEP-0333 `markable`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub markable: bool,
}

/// Remote message id ↔ Matrix event id. A remote id (the contact's stanza id, or the
/// origin-id we sent) is unique within its portal; an event id within the homeserver.
pub trait MessageMap {
    fn event_of(&self, portal: &PortalKey, remote_id: &str) -> Result<Option<MappedEvent>>;
    fn remote_of(&self, event: &EventId) -> Result<Option<(PortalKey, String)>>;
    /// Inserts or replaces both directions atomically: a reader (and a restart after a
    /// crash) sees both or neither.
    fn put_message(&self, portal: &PortalKey, remote_id: &str, mapped: &MappedEvent) -> Result<()>;
}

/// Contacts a login blocked in the bridge itself (when the server lacks XEP-0191).
pub trait BlockStore {
    fn is_blocked(&self, login: &RemoteUserId, contact: &RemoteUserId) -> Result<bool>;
    fn set_blocked(
        &self,
        login: &RemoteUserId,
        contact: &RemoteUserId,
        blocked: bool,
    ) -> Result<()>;
    /// The contacts `login` blocked, ordered.
    fn blocked_of(&self, login: &RemoteUserId) -> Result<Vec<RemoteUserId>>;
}

/// A Matrix event recorded for its room's worker (PRODUCT.md, "Durability rule"): the room and
/// the event id, never the content, which the homeserver holds. Persisted as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub room: OwnedRoomId,
    pub event: OwnedEventId,
}

/// Matrix events a transaction was answered for but whose effect (a message sent to a contact,
/// a bot command) is not yet carried out. An entry is removed once its effect is durable; after
/// a restart every remaining one is carried out, in order.
pub trait PendingEvents {
    /// Records `pending`; returns its position, greater than every earlier position, also
    /// across restarts.
    fn push_pending(&self, pending: &PendingEvent) -> Result<u64>;
    /// Every recorded event, by ascending position.
    fn pending_events(&self) -> Result<Vec<(u64, PendingEvent)>>;
    /// Removes the entry at `position`; `Ok` if there is none.
    fn remove_pending(&self, position: u64) -> Result<()>;
}

/// Where each login's catch-up from its server's archive starts (XEP-0313): the archive id
/// (XEP-0359 stanza-id) of the last message the bridge finished, every one before it finished
/// too. Ids only, never content.
pub trait ArchiveStore {
    fn archive_position(&self, login: &RemoteUserId) -> Result<Option<String>>;
    /// Replaces the login's position (not flushed: the caller flushes).
    fn set_archive_position(&self, login: &RemoteUserId, archive_id: &str) -> Result<()>;
}

/// Everything the bridge persists. Shared as `Arc<dyn Store>`.
pub trait Store:
    TxnStore
    + ArchiveStore
    + PendingEvents
    + ManagementRoomStore
    + GhostStore
    + LoginStore
    + PortalStore
    + MessageMap
    + BlockStore
    + Send
    + Sync
    + 'static
{
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

    /// Writes message-map `entries` of `portal` (each as [`MessageMap::put_message`]) and an
    /// OMEMO commit of `account` ([`OmemoStore::commit`]) as one atomic write: after a crash
    /// both are there or neither, so one [`flush`](Self::flush) makes an inbound message's
    /// mapping and the Signal state it used up durable together (not flushed here). The
    /// default writes one after the other, for a store that is never durable (memory).
    fn put_messages_with_omemo(
        &self,
        portal: &PortalKey,
        entries: &[(&str, &MappedEvent)],
        account: &str,
        changes: &Changes,
    ) -> Result<()> {
        for (remote_id, mapped) in entries {
            self.put_message(portal, remote_id, mapped)?;
        }
        self.omemo(account)
            .commit(changes)
            .map_err(|e| super::Error::Backend(e.to_string()))
    }
}
