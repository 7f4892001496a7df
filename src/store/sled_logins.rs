//! The logins half of [`SledStore`]: linked identities and what is scoped to them — portals,
//! the message map and the bridge-side block list. [`LoginTrees`] holds their seven trees of
//! [`keys`]; this file implements [`LoginStore`], [`PortalStore`], [`MessageMap`] and
//! [`BlockStore`] on them.
//!
//! **Atomicity.** Every write that touches two trees is one sled transaction, and every read of
//! two trees (`login_of`, `portal_by_room`) reads one snapshot. Removing a login —
//! `remove_login`, or `put_login` replacing a Matrix user's login with another JID — is one
//! transaction over the seven trees here *and* the six OMEMO trees. sled transactions cannot scan, so the
//! login's keys are collected by prefix scans first ([`LoginRemoval::prepare`]) and removed
//! inside the transaction ([`LoginRemoval::apply`]). A portal, message or block entry written
//! for the same login between the scan and the transaction would survive; that cannot happen
//! as long as one login's state is written by one task (the login's), which is also the task
//! that unlinks it — the rule `OmemoWrites::clear` states for the OMEMO trees.
//!
//! **At rest.** Login records hold the account password: they are sealed by the store's
//! [`Seal`] when written and opened when read ([`decode_login`]); the other trees here hold ids.
//!
//! **Order.** The key codec sorts a string *after* its own extensions (`bob@x.y` before
//! `bob@x`), so listings are sorted by the JIDs' string order after the scan, as the traits
//! promise.

use ::sled::transaction::TransactionalTree;
use ::sled::{Db, IVec, Transactional, Tree};
use ruma::{EventId, RoomId, UserId};

use super::keys::{self, KeyError, Part};
use super::seal::Seal;
use super::sled::{SledStore, TxResult, abort, decode_str, from_json, to_json};
use super::sled_omemo::{OMEMO_TREES, OmemoWrites};
use super::{
    BlockStore, Error, LoginRecord, LoginStore, MappedEvent, MessageMap, PortalRecord, PortalStore,
    Result,
};
use crate::ids::{PortalKey, RemoteUserId};

/// How many trees [`LoginTrees::as_array`] returns.
const LOGIN_TREES: usize = 7;

/// How often `put_login` starts over, because the user's login changed between its scan and its
/// transaction, before it gives up.
const PUT_LOGIN_ATTEMPTS: usize = 16;

/// The login trees of one database, opened once with it.
pub(super) struct LoginTrees {
    jid_login: Tree,
    userid_jid: Tree,
    portalkey_portal: Tree,
    roomid_portalkey: Tree,
    portalremoteid_event: Tree,
    eventid_portalremoteid: Tree,
    logincontact_blocked: Tree,
}

impl LoginTrees {
    pub(super) fn open(db: &Db) -> Result<Self> {
        Ok(Self {
            jid_login: db.open_tree(keys::JID_LOGIN)?,
            userid_jid: db.open_tree(keys::USERID_JID)?,
            portalkey_portal: db.open_tree(keys::PORTALKEY_PORTAL)?,
            roomid_portalkey: db.open_tree(keys::ROOMID_PORTALKEY)?,
            portalremoteid_event: db.open_tree(keys::PORTALREMOTEID_EVENT)?,
            eventid_portalremoteid: db.open_tree(keys::EVENTID_PORTALREMOTEID)?,
            logincontact_blocked: db.open_tree(keys::LOGINCONTACT_BLOCKED)?,
        })
    }

    /// The trees in the order [`LoginViews::new`] names their transactional views.
    fn as_array(&self) -> [&Tree; LOGIN_TREES] {
        [
            &self.jid_login,
            &self.userid_jid,
            &self.portalkey_portal,
            &self.roomid_portalkey,
            &self.portalremoteid_event,
            &self.eventid_portalremoteid,
            &self.logincontact_blocked,
        ]
    }

    pub(super) fn all_empty(&self) -> bool {
        self.as_array().iter().all(|t| t.is_empty())
    }
}

/// The transactional views of [`LoginTrees`], by name.
struct LoginViews<'a> {
    jid_login: &'a TransactionalTree,
    userid_jid: &'a TransactionalTree,
    portalkey_portal: &'a TransactionalTree,
    roomid_portalkey: &'a TransactionalTree,
    portalremoteid_event: &'a TransactionalTree,
    eventid_portalremoteid: &'a TransactionalTree,
    logincontact_blocked: &'a TransactionalTree,
}

impl<'a> LoginViews<'a> {
    /// Names `views`: the views of [`LoginTrees::as_array`], in that order.
    fn new(views: &'a [TransactionalTree]) -> TxResult<Self> {
        let [
            jid_login,
            userid_jid,
            portalkey_portal,
            roomid_portalkey,
            portalremoteid_event,
            eventid_portalremoteid,
            logincontact_blocked,
        ] = views
        else {
            return Err(abort(Error::Backend(format!(
                "login writes need {LOGIN_TREES} transactional trees, got {}",
                views.len()
            ))));
        };
        Ok(Self {
            jid_login,
            userid_jid,
            portalkey_portal,
            roomid_portalkey,
            portalremoteid_event,
            eventid_portalremoteid,
            logincontact_blocked,
        })
    }
}

impl SledStore {
    /// Runs `f` in one transaction over the OMEMO trees and the login trees. `f` gets all the
    /// views, the OMEMO ones first (as [`OmemoWrites::apply`] expects), and the login ones by
    /// name. sled may run `f` more than once.
    fn login_transaction<A>(
        &self,
        f: impl Fn(&[TransactionalTree], &LoginViews<'_>) -> TxResult<A>,
    ) -> Result<A> {
        let mut trees = self.omemo.as_array().to_vec();
        trees.extend(self.logins.as_array());
        let result = trees[..].transaction(|views| -> TxResult<A> {
            let logins = LoginViews::new(&views[OMEMO_TREES..])?;
            f(views, &logins)
        })?;
        Ok(result)
    }

    /// [`Store::put_messages_with_omemo`](super::Store::put_messages_with_omemo): one
    /// transaction over the OMEMO trees and the two message-map trees.
    pub(super) fn put_messages_with_omemo(
        &self,
        portal: &PortalKey,
        entries: &[(&str, &MappedEvent)],
        account: &str,
        changes: &xmpp_omemo::omemo::Changes,
    ) -> Result<()> {
        let writes = OmemoWrites::commit(&self.omemo.seal, account, changes)?;
        let entries = entries
            .iter()
            .map(|(remote_id, mapped)| MapEntry::new(portal, remote_id, mapped))
            .collect::<Result<Vec<_>>>()?;
        let t = &self.logins;
        let mut trees = self.omemo.as_array().to_vec();
        trees.extend([&t.portalremoteid_event, &t.eventid_portalremoteid]);
        trees[..].transaction(|views| -> TxResult<()> {
            writes.apply(views)?;
            let (fwd, rev) = (&views[OMEMO_TREES], &views[OMEMO_TREES + 1]);
            for entry in &entries {
                entry.apply(fwd, rev)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Everything scoped to one login, its keys collected by prefix scans before the transaction
/// that removes it (see the module docs).
struct LoginRemoval {
    jid: String,
    seal: Seal,
    portals: Vec<IVec>,
    messages: Vec<IVec>,
    blocked: Vec<IVec>,
    omemo: OmemoWrites,
}

impl LoginRemoval {
    fn prepare(store: &SledStore, jid: &str) -> Result<Self> {
        let prefix = keys::str_key(jid);
        let scan = |tree: &Tree| -> Result<Vec<IVec>> {
            tree.scan_prefix(&prefix)
                .keys()
                .map(|key| Ok(key?))
                .collect()
        };
        let t = &store.logins;
        Ok(Self {
            jid: jid.to_owned(),
            seal: store.seal.clone(),
            portals: scan(&t.portalkey_portal)?,
            messages: scan(&t.portalremoteid_event)?,
            blocked: scan(&t.logincontact_blocked)?,
            omemo: OmemoWrites::clear(&store.omemo, jid)?,
        })
    }

    /// Inside a [`SledStore::login_transaction`]: removes the login, its user's entry (if it
    /// still names this login), and everything collected. Returns the removed login, or `None`
    /// — having written nothing — if there was none.
    fn apply(
        &self,
        views: &[TransactionalTree],
        t: &LoginViews<'_>,
    ) -> TxResult<Option<LoginRecord>> {
        let jid_key = keys::str_key(&self.jid);
        let Some(record) = t.jid_login.get(&jid_key)? else {
            return Ok(None);
        };
        let record = decode_login(&self.seal, &jid_key, &record).map_err(abort)?;
        t.jid_login.remove(jid_key)?;
        let user_key = keys::str_key(record.matrix_user.as_str());
        unlink_reverse(t.userid_jid, &user_key, self.jid.as_bytes())?;
        for key in &self.portals {
            if let Some(portal) = t.portalkey_portal.remove(&key[..])? {
                let portal: PortalRecord =
                    from_json(&portal, keys::PORTALKEY_PORTAL).map_err(abort)?;
                let room_key = keys::str_key(portal.room.as_str());
                unlink_reverse(t.roomid_portalkey, &room_key, key)?;
            }
        }
        for key in &self.messages {
            if let Some(mapped) = t.portalremoteid_event.remove(&key[..])? {
                let mapped: MappedEvent =
                    from_json(&mapped, keys::PORTALREMOTEID_EVENT).map_err(abort)?;
                let event_key = keys::str_key(mapped.event.as_str());
                unlink_reverse(t.eventid_portalremoteid, &event_key, key)?;
            }
        }
        for key in &self.blocked {
            t.logincontact_blocked.remove(&key[..])?;
        }
        self.omemo.apply(views)?;
        Ok(Some(record))
    }
}

/// Removes `rev[rev_key]` if it still holds `fwd_key` (the forward entry it was the reverse of).
fn unlink_reverse(rev: &TransactionalTree, rev_key: &[u8], fwd_key: &[u8]) -> TxResult<()> {
    if rev.get(rev_key)?.as_deref() == Some(fwd_key) {
        rev.remove(rev_key)?;
    }
    Ok(())
}

/// (login, contact): a portal key, also the key of a block entry.
fn pair_key(login: &RemoteUserId, contact: &RemoteUserId) -> Vec<u8> {
    keys::encode(&[Part::Str(login.as_str()), Part::Str(contact.as_str())])
}

fn portal_key(key: &PortalKey) -> Vec<u8> {
    pair_key(&key.login, &key.contact)
}

/// (login, contact, remote id): a message map key.
fn message_key(portal: &PortalKey, remote_id: &str) -> Vec<u8> {
    keys::encode(&[
        Part::Str(portal.login.as_str()),
        Part::Str(portal.contact.as_str()),
        Part::Str(remote_id),
    ])
}

/// The login record stored as `value` at `key` of [`keys::JID_LOGIN`], opened if sealed.
fn decode_login(seal: &Seal, key: &[u8], value: &[u8]) -> Result<LoginRecord> {
    from_json(&seal.open(keys::JID_LOGIN, key, value)?, keys::JID_LOGIN)
}

fn corrupt_key(e: KeyError, tree: &'static str) -> Error {
    Error::Corrupt {
        tree,
        reason: e.to_string(),
    }
}

fn jid_part(part: String, tree: &'static str) -> Result<RemoteUserId> {
    RemoteUserId::parse(&part).map_err(|_| Error::Corrupt {
        tree,
        reason: "key holds an invalid bare JID".to_owned(),
    })
}

fn decode_portal_key(key: &[u8], tree: &'static str) -> Result<PortalKey> {
    let [login, contact] = keys::decode_strs(key).map_err(|e| corrupt_key(e, tree))?;
    Ok(PortalKey {
        login: jid_part(login, tree)?,
        contact: jid_part(contact, tree)?,
    })
}

fn decode_message_key(key: &[u8], tree: &'static str) -> Result<(PortalKey, String)> {
    let [login, contact, remote_id] = keys::decode_strs(key).map_err(|e| corrupt_key(e, tree))?;
    let portal = PortalKey {
        login: jid_part(login, tree)?,
        contact: jid_part(contact, tree)?,
    };
    Ok((portal, remote_id))
}

impl LoginStore for SledStore {
    fn login(&self, jid: &RemoteUserId) -> Result<Option<LoginRecord>> {
        let key = keys::str_key(jid.as_str());
        self.logins
            .jid_login
            .get(&key)?
            .map(|v| decode_login(&self.seal, &key, &v))
            .transpose()
    }

    /// Two plain reads, checked against each other, not a read-only transaction: sled makes
    /// every transaction a log write (two synchronous disk writes, under its global write
    /// lock), and this runs for most events. A link or unlink between the reads shows as a
    /// record of another user, which is read as none (the state after that change).
    fn login_of(&self, user: &UserId) -> Result<Option<LoginRecord>> {
        let t = &self.logins;
        let Some(jid) = t.userid_jid.get(keys::str_key(user.as_str()))? else {
            return Ok(None);
        };
        let jid_key = keys::str_key(decode_str(&jid, keys::USERID_JID)?);
        let Some(value) = t.jid_login.get(&jid_key)? else {
            return Ok(None);
        };
        let record = decode_login(&self.seal, &jid_key, &value)?;
        Ok((record.matrix_user == user).then_some(record))
    }

    fn logins(&self) -> Result<Vec<LoginRecord>> {
        let mut logins = self
            .logins
            .jid_login
            .iter()
            .map(|entry| {
                let (key, v) = entry?;
                decode_login(&self.seal, &key, &v)
            })
            .collect::<Result<Vec<_>>>()?;
        logins.sort_by(|a, b| a.jid.cmp(&b.jid));
        Ok(logins)
    }

    /// When the user had another login, its removal is prepared by prefix scans and then done
    /// in the same transaction as the put; if the user's login changed in between (a
    /// concurrent `put_login`), the transaction writes nothing and the put starts over.
    fn put_login(&self, record: &LoginRecord) -> Result<()> {
        let jid = record.jid.as_str();
        let jid_key = keys::str_key(jid);
        let json = to_json(record, keys::JID_LOGIN)?;
        let json = self.seal.seal(keys::JID_LOGIN, &jid_key, json)?;
        let user_key = keys::str_key(record.matrix_user.as_str());
        for _ in 0..PUT_LOGIN_ATTEMPTS {
            let previous = self.logins.userid_jid.get(&user_key)?;
            let removal = match &previous {
                Some(old) if old != jid.as_bytes() => Some(LoginRemoval::prepare(
                    self,
                    decode_str(old, keys::USERID_JID)?,
                )?),
                _ => None,
            };
            let written = self.login_transaction(|views, t| {
                if t.userid_jid.get(&user_key)? != previous {
                    return Ok(false);
                }
                if let Some(removal) = &removal {
                    removal.apply(views, t)?;
                }
                if let Some(old) = t.jid_login.get(&jid_key)? {
                    let old = decode_login(&self.seal, &jid_key, &old).map_err(abort)?;
                    if old.matrix_user != record.matrix_user {
                        let old_user_key = keys::str_key(old.matrix_user.as_str());
                        unlink_reverse(t.userid_jid, &old_user_key, jid.as_bytes())?;
                    }
                }
                t.jid_login.insert(jid_key.as_slice(), json.as_slice())?;
                t.userid_jid.insert(user_key.as_slice(), jid.as_bytes())?;
                Ok(true)
            })?;
            if written {
                return Ok(());
            }
        }
        Err(Error::Backend(format!(
            "put_login: the Matrix user's login changed concurrently {PUT_LOGIN_ATTEMPTS} times"
        )))
    }

    fn remove_login(&self, jid: &RemoteUserId) -> Result<bool> {
        if !self
            .logins
            .jid_login
            .contains_key(keys::str_key(jid.as_str()))?
        {
            return Ok(false);
        }
        let removal = LoginRemoval::prepare(self, jid.as_str())?;
        let removed = self.login_transaction(|views, t| removal.apply(views, t))?;
        // After the transaction: a position left by a crash in between only makes a later
        // link of the same account catch up from there (bounded, deduplicated).
        self.jid_archiveid.remove(keys::str_key(jid.as_str()))?;
        Ok(removed.is_some())
    }
}

impl PortalStore for SledStore {
    fn portal(&self, key: &PortalKey) -> Result<Option<PortalRecord>> {
        self.logins
            .portalkey_portal
            .get(portal_key(key))?
            .map(|v| from_json(&v, keys::PORTALKEY_PORTAL))
            .transpose()
    }

    /// Two plain reads, checked against each other, as [`login_of`](LoginStore::login_of):
    /// a portal moved to another room or removed between them shows as a record of another
    /// room or none, either read as none (the state after that change).
    fn portal_by_room(&self, room: &RoomId) -> Result<Option<(PortalKey, PortalRecord)>> {
        let t = &self.logins;
        let Some(key) = t.roomid_portalkey.get(keys::str_key(room.as_str()))? else {
            return Ok(None);
        };
        let Some(record) = t.portalkey_portal.get(&key)? else {
            return Ok(None);
        };
        let record: PortalRecord = from_json(&record, keys::PORTALKEY_PORTAL)?;
        if record.room != room {
            return Ok(None);
        }
        Ok(Some((
            decode_portal_key(&key, keys::ROOMID_PORTALKEY)?,
            record,
        )))
    }

    fn put_portal(&self, key: &PortalKey, record: &PortalRecord) -> Result<()> {
        let fwd_key = portal_key(key);
        let json = to_json(record, keys::PORTALKEY_PORTAL)?;
        let room_key = keys::str_key(record.room.as_str());
        let t = &self.logins;
        (&t.portalkey_portal, &t.roomid_portalkey).transaction(|(fwd, rev)| -> TxResult<()> {
            if let Some(old) = fwd.insert(fwd_key.as_slice(), json.as_slice())? {
                let old: PortalRecord = from_json(&old, keys::PORTALKEY_PORTAL).map_err(abort)?;
                if old.room != record.room {
                    unlink_reverse(rev, &keys::str_key(old.room.as_str()), &fwd_key)?;
                }
            }
            if let Some(other) = rev.insert(room_key.as_slice(), fwd_key.as_slice())?
                && other != fwd_key.as_slice()
            {
                fwd.remove(other)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn remove_portal(&self, key: &PortalKey) -> Result<()> {
        let fwd_key = portal_key(key);
        let t = &self.logins;
        (&t.portalkey_portal, &t.roomid_portalkey).transaction(|(fwd, rev)| -> TxResult<()> {
            if let Some(old) = fwd.remove(fwd_key.as_slice())? {
                let old: PortalRecord = from_json(&old, keys::PORTALKEY_PORTAL).map_err(abort)?;
                unlink_reverse(rev, &keys::str_key(old.room.as_str()), &fwd_key)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn portals_of(&self, login: &RemoteUserId) -> Result<Vec<(PortalKey, PortalRecord)>> {
        let tree = keys::PORTALKEY_PORTAL;
        let mut portals = self
            .logins
            .portalkey_portal
            .scan_prefix(keys::str_key(login.as_str()))
            .map(|entry| {
                let (key, record) = entry?;
                Ok((decode_portal_key(&key, tree)?, from_json(&record, tree)?))
            })
            .collect::<Result<Vec<(PortalKey, PortalRecord)>>>()?;
        portals.sort_by(|(a, _), (b, _)| a.contact.cmp(&b.contact));
        Ok(portals)
    }
}

impl MessageMap for SledStore {
    fn event_of(&self, portal: &PortalKey, remote_id: &str) -> Result<Option<MappedEvent>> {
        self.logins
            .portalremoteid_event
            .get(message_key(portal, remote_id))?
            .map(|v| from_json(&v, keys::PORTALREMOTEID_EVENT))
            .transpose()
    }

    /// The reverse entry counts only while the forward entry it names maps back to `event`
    /// ([`put_message`](MessageMap::put_message) writes a new mapping as two plain writes).
    fn remote_of(&self, event: &EventId) -> Result<Option<(PortalKey, String)>> {
        let t = &self.logins;
        let Some(key) = t
            .eventid_portalremoteid
            .get(keys::str_key(event.as_str()))?
        else {
            return Ok(None);
        };
        let found = decode_message_key(&key, keys::EVENTID_PORTALREMOTEID)?;
        let Some(value) = t.portalremoteid_event.get(&key)? else {
            return Ok(None);
        };
        let mapped: MappedEvent = from_json(&value, keys::PORTALREMOTEID_EVENT)?;
        Ok((mapped.event == event).then_some(found))
    }

    /// A remote id not mapped yet (every message the bridge sends) is written without a sled
    /// transaction, which would cost synchronous log writes under sled's global write lock:
    /// the reverse entry first, then the forward one if the id is still unmapped. Until the
    /// second write, and after a crash between them, [`remote_of`](MessageMap::remote_of)
    /// finds no forward entry naming the event and reads none: both directions or neither.
    /// Replacing a mapping stays a transaction: the replaced event's reverse entry goes only
    /// if it still names this message (an event mapped again from another remote id keeps
    /// its latest reverse entry).
    fn put_message(&self, portal: &PortalKey, remote_id: &str, mapped: &MappedEvent) -> Result<()> {
        let entry = MapEntry::new(portal, remote_id, mapped)?;
        let t = &self.logins;
        if entry.put_new(&t.portalremoteid_event, &t.eventid_portalremoteid)? {
            return Ok(());
        }
        (&t.portalremoteid_event, &t.eventid_portalremoteid)
            .transaction(|(fwd, rev)| entry.apply(fwd, rev))?;
        Ok(())
    }
}

impl super::ArchiveStore for SledStore {
    fn archive_position(&self, login: &RemoteUserId) -> Result<Option<String>> {
        self.jid_archiveid
            .get(keys::str_key(login.as_str()))?
            .map(|v| decode_str(&v, keys::JID_ARCHIVEID).map(str::to_owned))
            .transpose()
    }

    fn set_archive_position(&self, login: &RemoteUserId, archive_id: &str) -> Result<()> {
        self.jid_archiveid
            .insert(keys::str_key(login.as_str()), archive_id.as_bytes())?;
        Ok(())
    }
}

impl BlockStore for SledStore {
    fn is_blocked(&self, login: &RemoteUserId, contact: &RemoteUserId) -> Result<bool> {
        Ok(self
            .logins
            .logincontact_blocked
            .contains_key(pair_key(login, contact))?)
    }

    fn set_blocked(
        &self,
        login: &RemoteUserId,
        contact: &RemoteUserId,
        blocked: bool,
    ) -> Result<()> {
        let key = pair_key(login, contact);
        let tree = &self.logins.logincontact_blocked;
        if blocked {
            tree.insert(key, &[][..])?;
        } else {
            tree.remove(key)?;
        }
        Ok(())
    }

    fn blocked_of(&self, login: &RemoteUserId) -> Result<Vec<RemoteUserId>> {
        let tree = keys::LOGINCONTACT_BLOCKED;
        let mut contacts = self
            .logins
            .logincontact_blocked
            .scan_prefix(keys::str_key(login.as_str()))
            .keys()
            .map(|key| Ok(decode_portal_key(&key?, tree)?.contact))
            .collect::<Result<Vec<RemoteUserId>>>()?;
        contacts.sort();
        Ok(contacts)
    }
}

#[cfg(test)]
mod tests;

/// One message-map entry, encoded, ready to be written in a transaction (both directions; a
/// replaced event's reverse entry goes).
struct MapEntry {
    fwd_key: Vec<u8>,
    json: Vec<u8>,
    event: String,
    event_key: Vec<u8>,
}

impl MapEntry {
    fn new(portal: &PortalKey, remote_id: &str, mapped: &MappedEvent) -> Result<Self> {
        Ok(Self {
            fwd_key: message_key(portal, remote_id),
            json: to_json(mapped, keys::PORTALREMOTEID_EVENT)?,
            event: mapped.event.to_string(),
            event_key: keys::str_key(mapped.event.as_str()),
        })
    }

    /// Writes a mapping whose remote id has none yet, reverse entry first (see
    /// `put_message`); `false`: it has one (or got one meanwhile), write it in a transaction.
    fn put_new(&self, fwd: &Tree, rev: &Tree) -> Result<bool> {
        if fwd.contains_key(&self.fwd_key)? {
            return Ok(false);
        }
        rev.insert(self.event_key.as_slice(), self.fwd_key.as_slice())?;
        let swapped = fwd.compare_and_swap(
            self.fwd_key.as_slice(),
            None::<&[u8]>,
            Some(self.json.as_slice()),
        )?;
        Ok(swapped.is_ok())
    }

    fn apply(&self, fwd: &TransactionalTree, rev: &TransactionalTree) -> TxResult<()> {
        if let Some(old) = fwd.insert(self.fwd_key.as_slice(), self.json.as_slice())? {
            let old: MappedEvent = from_json(&old, keys::PORTALREMOTEID_EVENT).map_err(abort)?;
            if old.event.as_str() != self.event {
                unlink_reverse(rev, &keys::str_key(old.event.as_str()), &self.fwd_key)?;
            }
        }
        rev.insert(self.event_key.as_slice(), self.fwd_key.as_slice())?;
        Ok(())
    }
}
