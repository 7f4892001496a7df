//! [`SledStore`]: the durable [`Store`] on a sled database. With its OMEMO half in
//! `sled_omemo.rs` and its logins half (logins, portals, message map, block list) in
//! `sled_logins.rs`, the only code that uses sled.
//!
//! Layout: the trees in [`keys`] (catalogue, key codec, value formats). Writes that belong
//! together go in one sled multi-tree transaction. sled keeps recent writes in memory and loses
//! them on a process crash unless flushed, so durability comes only from [`Store::flush`].
//!
//! Schema: `meta/schema_version` is written when a database is created. On open, a newer
//! version is refused ([`Error::NewerSchema`]) and an older one is upgraded one step at a time
//! by `migrate`.
//!
//! At rest: with `database.key`, the secret trees' values go through the store's [`Seal`]
//! (`seal.rs`); the key check and the migration of a plain store are in `sled_at_rest.rs`.

use std::path::Path;
use std::sync::Arc;

use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use ::sled::{Db, Transactional, Tree};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{self, SCHEMA_VERSION};
use super::seal::Seal;
use super::sled_logins::LoginTrees;
use super::sled_omemo::{OmemoTrees, SledOmemo};
use super::{
    Error, GhostRecord, GhostStore, ManagementRoomStore, PendingEvent, PendingEvents, Result,
    Store, TxnStore,
};
use xmpp_omemo::omemo::OmemoStore;

/// The sled-backed [`Store`]. One per database directory: sled locks the directory, so a
/// second `open` of the same path (in any process) fails until this one is dropped.
/// `Debug` shows no contents (sled's own `Debug` dumps every value).
pub struct SledStore {
    db: Db,
    /// Seals the values of [`keys::SEALED_TREES`], or passes them through (no key).
    pub(super) seal: Seal,
    meta: Tree,
    txnid_processedms: Tree,
    position_pendingevent: Tree,
    userid_mgmtroomid: Tree,
    mgmtroomid_userid: Tree,
    pub(super) ghostid_ghost: Tree,
    pub(super) jid_archiveid: Tree,
    pub(super) omemo: OmemoTrees,
    pub(super) logins: LoginTrees,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("trees", &keys::ALL_TREES)
            .finish_non_exhaustive()
    }
}

impl From<::sled::Error> for Error {
    fn from(e: ::sled::Error) -> Self {
        Error::Backend(e.to_string())
    }
}

impl From<TransactionError<Error>> for Error {
    fn from(e: TransactionError<Error>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

/// sled's own cache of deserialized pages (its default is 1 GB, and it kept every page read:
/// each login's OMEMO prekeys and sessions, read at its start, stayed in memory while idle).
/// Pages beyond it are read again from the file, which the kernel caches.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Opens the sled database at `path`, retrying a held directory lock for up to a second.
pub(super) fn open_db(path: &Path) -> std::result::Result<Db, ::sled::Error> {
    let mut attempts = 0;
    loop {
        match ::sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(::sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::Other
                    && e.to_string().contains("could not acquire lock")
                    && attempts < 20 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

impl SledStore {
    /// Opens (creating if needed) the database in directory `path`, then checks its schema:
    /// a new database gets [`SCHEMA_VERSION`], an older one is migrated, a newer one is
    /// refused with [`Error::NewerSchema`].
    /// The directory lock of a database just closed (by this process or one that just exited)
    /// can stay held for a moment while sled's background flusher ends, so a lock failure is
    /// retried for up to a second before it is reported.
    ///
    /// Without a key: a database encrypted at rest is refused ([`Error::KeyRequired`]); see
    /// [`open_with_key`](Self::open_with_key).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_key(path, None)
    }

    /// [`open`](Self::open) with the values of the secret trees sealed by `seal`; the at-rest
    /// checks around it are `open_with_key`'s.
    pub(super) fn open_sealed_as(path: &Path, seal: Seal) -> Result<Self> {
        let db = open_db(path)?;
        let store = Self {
            omemo: OmemoTrees::open(&db, seal.clone())?,
            seal,
            meta: db.open_tree(keys::META)?,
            txnid_processedms: db.open_tree(keys::TXNID_PROCESSEDMS)?,
            position_pendingevent: db.open_tree(keys::POSITION_PENDINGEVENT)?,
            userid_mgmtroomid: db.open_tree(keys::USERID_MGMTROOMID)?,
            mgmtroomid_userid: db.open_tree(keys::MGMTROOMID_USERID)?,
            ghostid_ghost: db.open_tree(keys::GHOSTID_GHOST)?,
            jid_archiveid: db.open_tree(keys::JID_ARCHIVEID)?,
            logins: LoginTrees::open(&db)?,
            db,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<()> {
        let key = keys::str_key(keys::SCHEMA_VERSION_KEY);
        let Some(stored) = self.meta.get(&key)? else {
            if !self.data_trees_empty() {
                return Err(Error::Corrupt {
                    tree: keys::META,
                    reason: "schema version missing from a non-empty database".to_owned(),
                });
            }
            self.meta.insert(key, &SCHEMA_VERSION.to_be_bytes()[..])?;
            return self.flush();
        };
        let mut version = decode_u32(&stored, keys::META)?;
        if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        while version < SCHEMA_VERSION {
            let next = self.migrate(version)?;
            assert!(next > version, "a migration must raise the schema version");
            self.meta.insert(&key, &next.to_be_bytes()[..])?;
            self.flush()?;
            version = next;
        }
        Ok(())
    }

    /// Upgrades the database from schema version `from` and returns the version it is now at.
    /// Each arm must be idempotent: a crash before the new version is written reruns it.
    fn migrate(&self, from: u32) -> Result<u32> {
        match from {
            // 2: the OMEMO trees. `open` has created them, empty, which is their right state.
            1 => Ok(2),
            // 3: the login, portal, message map and block list trees; also created empty.
            2 => Ok(3),
            // 4: the pending-event tree; created empty.
            3 => Ok(4),
            // 5: the OMEMO 2 session and device list trees; created empty.
            4 => Ok(5),
            other => Err(Error::Corrupt {
                tree: keys::META,
                reason: format!("no migration from schema version {other}"),
            }),
        }
    }

    /// The database itself (for the migration to a sealed store).
    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    pub(super) fn data_trees_empty(&self) -> bool {
        [
            &self.txnid_processedms,
            &self.position_pendingevent,
            &self.userid_mgmtroomid,
            &self.mgmtroomid_userid,
            &self.ghostid_ghost,
            &self.jid_archiveid,
        ]
        .iter()
        .all(|t| t.is_empty())
            && self.omemo.all_empty()
            && self.logins.all_empty()
    }
}

fn decode_u32(v: &[u8], tree: &'static str) -> Result<u32> {
    let bytes = <[u8; 4]>::try_from(v).map_err(|_| Error::Corrupt {
        tree,
        reason: format!("expected a 4-byte u32, found {} bytes", v.len()),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

fn decode_u64(v: &[u8], tree: &'static str) -> Result<u64> {
    let bytes = <[u8; 8]>::try_from(v).map_err(|_| Error::Corrupt {
        tree,
        reason: format!("expected an 8-byte u64, found {} bytes", v.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

pub(super) fn decode_str<'a>(v: &'a [u8], tree: &'static str) -> Result<&'a str> {
    std::str::from_utf8(v).map_err(|_| Error::Corrupt {
        tree,
        reason: "value is not valid UTF-8".to_owned(),
    })
}

fn decode_room_id(v: &[u8], tree: &'static str) -> Result<OwnedRoomId> {
    RoomId::parse(decode_str(v, tree)?).map_err(|e| Error::Corrupt {
        tree,
        reason: format!("value is not a room ID: {e}"),
    })
}

fn decode_user_id(v: &[u8], tree: &'static str) -> Result<OwnedUserId> {
    UserId::parse(decode_str(v, tree)?).map_err(|e| Error::Corrupt {
        tree,
        reason: format!("value is not a user ID: {e}"),
    })
}

/// Describes a JSON error by its category and position only: serde_json's own message can
/// quote the offending value.
pub(super) fn json_reason(e: &serde_json::Error) -> String {
    format!(
        "invalid JSON ({:?} error at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

pub(super) fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

/// Encodes a value for `tree`; the error names the tree, never the value.
pub(super) fn to_json(value: &impl Serialize, tree: &'static str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::Backend(format!(
            "encoding a value for `{tree}`: {}",
            json_reason(&e)
        ))
    })
}

/// Decodes a value of `tree`; a bad one is [`Error::Corrupt`], naming the tree, never the value.
pub(super) fn from_json<T: DeserializeOwned>(v: &[u8], tree: &'static str) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::Corrupt {
        tree,
        reason: json_reason(&e),
    })
}

impl PendingEvents for SledStore {
    fn push_pending(&self, pending: &PendingEvent) -> Result<u64> {
        let position = self.db.generate_id()?;
        let key = keys::encode(&[keys::Part::U64(position)]);
        let value = to_json(pending, keys::POSITION_PENDINGEVENT)?;
        let value = self.seal.seal(keys::POSITION_PENDINGEVENT, &key, value)?;
        self.position_pendingevent.insert(key, value)?;
        Ok(position)
    }

    fn pending_events(&self) -> Result<Vec<(u64, PendingEvent)>> {
        let mut events = Vec::new();
        for entry in self.position_pendingevent.iter() {
            let (key, value) = entry?;
            let position = decode_u64(&key, keys::POSITION_PENDINGEVENT)?;
            let value = self.seal.open(keys::POSITION_PENDINGEVENT, &key, &value)?;
            events.push((position, from_json(&value, keys::POSITION_PENDINGEVENT)?));
        }
        Ok(events)
    }

    fn remove_pending(&self, position: u64) -> Result<()> {
        self.position_pendingevent
            .remove(keys::encode(&[keys::Part::U64(position)]))?;
        Ok(())
    }
}

impl TxnStore for SledStore {
    fn txn_processed(&self, txn_id: &str) -> Result<bool> {
        Ok(self.txnid_processedms.contains_key(keys::str_key(txn_id))?)
    }

    fn mark_txn_processed(&self, txn_id: &str, at_ms: u64) -> Result<()> {
        let _already_marked = self.txnid_processedms.compare_and_swap(
            keys::str_key(txn_id),
            None::<&[u8]>,
            Some(&at_ms.to_be_bytes()[..]),
        )?;
        Ok(())
    }

    /// Removes each old entry with its own compare-and-swap, so the count is exact even with
    /// concurrent writers; the prune as a whole is not one atomic write (it need not be).
    fn prune_txns_before(&self, before_ms: u64) -> Result<usize> {
        let mut removed = 0;
        for entry in self.txnid_processedms.iter() {
            let (key, value) = entry?;
            if decode_u64(&value, keys::TXNID_PROCESSEDMS)? < before_ms
                && self
                    .txnid_processedms
                    .compare_and_swap(key, Some(value), None::<&[u8]>)?
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl ManagementRoomStore for SledStore {
    fn management_room(&self, user: &UserId) -> Result<Option<OwnedRoomId>> {
        self.userid_mgmtroomid
            .get(keys::str_key(user.as_str()))?
            .map(|v| decode_room_id(&v, keys::USERID_MGMTROOMID))
            .transpose()
    }

    fn management_room_owner(&self, room: &RoomId) -> Result<Option<OwnedUserId>> {
        self.mgmtroomid_userid
            .get(keys::str_key(room.as_str()))?
            .map(|v| decode_user_id(&v, keys::MGMTROOMID_USERID))
            .transpose()
    }

    fn set_management_room(&self, user: &UserId, room: &RoomId) -> Result<()> {
        let user_key = keys::str_key(user.as_str());
        let room_key = keys::str_key(room.as_str());
        (&self.userid_mgmtroomid, &self.mgmtroomid_userid).transaction(
            |(fwd, rev)| -> TxResult<()> {
                if let Some(old_room) = fwd.insert(user_key.as_slice(), room.as_str())?
                    && old_room != room.as_str().as_bytes()
                {
                    let old_room = decode_str(&old_room, keys::USERID_MGMTROOMID).map_err(abort)?;
                    rev.remove(keys::str_key(old_room))?;
                }
                if let Some(old_owner) = rev.insert(room_key.as_slice(), user.as_str())?
                    && old_owner != user.as_str().as_bytes()
                {
                    let old_owner =
                        decode_str(&old_owner, keys::MGMTROOMID_USERID).map_err(abort)?;
                    fwd.remove(keys::str_key(old_owner))?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    fn remove_management_room(&self, user: &UserId) -> Result<()> {
        let user_key = keys::str_key(user.as_str());
        (&self.userid_mgmtroomid, &self.mgmtroomid_userid).transaction(
            |(fwd, rev)| -> TxResult<()> {
                if let Some(room) = fwd.remove(user_key.as_slice())? {
                    let room = decode_str(&room, keys::USERID_MGMTROOMID).map_err(abort)?;
                    rev.remove(keys::str_key(room))?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }
}

impl GhostStore for SledStore {
    fn ghost(&self, user: &UserId) -> Result<Option<GhostRecord>> {
        self.ghostid_ghost
            .get(keys::str_key(user.as_str()))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| Error::Corrupt {
                    tree: keys::GHOSTID_GHOST,
                    reason: json_reason(&e),
                })
            })
            .transpose()
    }

    fn put_ghost(&self, user: &UserId, record: &GhostRecord) -> Result<()> {
        let json = serde_json::to_vec(record)
            .map_err(|e| Error::Backend(format!("encoding a ghost record: {}", json_reason(&e))))?;
        self.ghostid_ghost
            .insert(keys::str_key(user.as_str()), json)?;
        Ok(())
    }
}

impl Store for SledStore {
    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// The view shares this store's trees and holds the database (and its directory lock)
    /// open while it lives.
    fn omemo(&self, account: &str) -> Arc<dyn OmemoStore> {
        SledOmemo::shared(self.db.clone(), self.omemo.clone(), account)
    }

    fn put_messages_with_omemo(
        &self,
        portal: &crate::ids::PortalKey,
        entries: &[(&str, &super::MappedEvent)],
        account: &str,
        changes: &xmpp_omemo::omemo::Changes,
    ) -> Result<()> {
        SledStore::put_messages_with_omemo(self, portal, entries, account, changes)
    }
}

#[cfg(test)]
mod tests;
