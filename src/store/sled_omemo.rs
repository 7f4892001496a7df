//! The OMEMO half of [`SledStore`](super::SledStore): the eight OMEMO trees of [`keys`]
//! ([`OmemoTrees`]), the per-account view behind [`Store::omemo`](super::Store::omemo)
//! ([`SledOmemo`]), and the writes of one commit or clear as a transaction fragment
//! ([`OmemoWrites`]).
//!
//! **The transaction seam.** A commit is encoded first ([`OmemoWrites::commit`]: keys, JSON),
//! then applied inside a sled transaction ([`OmemoWrites::apply`]) that is handed the
//! transactional views of [`OmemoTrees::as_array`] — and may be handed more. The bridge will
//! write an OMEMO [`Changes`] together with its own trees (the message map) in one transaction:
//!
//! ```text
//! let writes = OmemoWrites::commit(&store.omemo.seal, account, &changes)?;
//! let mut trees = store.omemo.as_array().to_vec();
//! trees.push(&store.remotemsgid_eventid); // the message map (not written yet)
//! trees[..].transaction(|views| -> TxResult<()> {
//!     writes.apply(views)?; // uses views[..OMEMO_TREES], ignores the rest
//!     views[OMEMO_TREES].insert(key, value)?;
//!     Ok(())
//! })?;
//! ```
//!
//! sled may run a transaction closure more than once, so `apply` only writes prepared bytes.
//!
//! **At rest.** The own identity, prekeys, signed prekeys and sessions (legacy and OMEMO 2) are sealed by the trees'
//! [`Seal`] when they are encoded (`commit`) and opened when they are read; known identities
//! and device lists (public keys and ids) stay in the clear.

use std::sync::Arc;

use ::sled::transaction::TransactionalTree;
use ::sled::{Batch, Db, IVec, Transactional, Tree};
use serde::de::DeserializeOwned;

use super::keys::{self, OwnedPart, Part, PartKind};
use super::seal::Seal;
use super::sled::{TxResult, abort, from_json, to_json};
use super::{Error, Result};
use xmpp_omemo::omemo::{
    Changes, DeviceAddress, DeviceId, DeviceList, KnownIdentity, OmemoStore, OwnIdentity,
    SignedPreKeyEntry, StoreResult,
};

/// How many trees [`OmemoTrees::as_array`] returns, and so how many leading transactional
/// views [`OmemoWrites::apply`] uses.
pub(super) const OMEMO_TREES: usize = 8;

/// The OMEMO trees of one database, opened once with it. Cheap to clone (sled trees are
/// shared handles).
#[derive(Clone)]
pub(super) struct OmemoTrees {
    pub(super) own_identity: Tree,
    pub(super) prekey: Tree,
    pub(super) signed_prekey: Tree,
    pub(super) session: Tree,
    pub(super) identity: Tree,
    pub(super) device_list: Tree,
    pub(super) session2: Tree,
    pub(super) device_list2: Tree,
    /// Seals the own identity, prekeys, signed prekeys and sessions (or passes them through).
    pub(super) seal: Seal,
}

impl OmemoTrees {
    pub(super) fn open(db: &Db, seal: Seal) -> Result<Self> {
        Ok(Self {
            seal,
            own_identity: db.open_tree(keys::ACCOUNT_OMEMOIDENTITY)?,
            prekey: db.open_tree(keys::ACCOUNTPREKEY_RECORD)?,
            signed_prekey: db.open_tree(keys::ACCOUNTSIGNEDPREKEY_ENTRY)?,
            session: db.open_tree(keys::ACCOUNTJIDDEVICE_SESSION)?,
            identity: db.open_tree(keys::ACCOUNTJIDDEVICE_IDENTITY)?,
            device_list: db.open_tree(keys::ACCOUNTJID_DEVICELIST)?,
            session2: db.open_tree(keys::ACCOUNTJIDDEVICE_SESSION2)?,
            device_list2: db.open_tree(keys::ACCOUNTJID_DEVICELIST2)?,
        })
    }

    /// The trees in the order [`OmemoWrites::apply`] expects their transactional views:
    /// own identity, prekeys, signed prekeys, sessions, identities, device lists, OMEMO 2
    /// sessions, OMEMO 2 device lists.
    pub(super) fn as_array(&self) -> [&Tree; OMEMO_TREES] {
        [
            &self.own_identity,
            &self.prekey,
            &self.signed_prekey,
            &self.session,
            &self.identity,
            &self.device_list,
            &self.session2,
            &self.device_list2,
        ]
    }

    pub(super) fn all_empty(&self) -> bool {
        self.as_array().iter().all(|t| t.is_empty())
    }

    /// Applies `writes` atomically over the OMEMO trees alone: one write (a send advancing one
    /// session) as a plain insert or remove, which sled makes atomic by itself; more in one
    /// transaction. A sled transaction writes its log twice more than a plain write does (it
    /// seals the log buffer before and after its batch marker), and each log write is a
    /// synchronous disk write, so the common one-key commit skips it.
    fn transact(&self, writes: &OmemoWrites) -> Result<()> {
        let trees = self.as_array();
        if let Some((slot, key, value)) = &writes.single {
            match value {
                Some(value) => trees[*slot].insert(key.as_slice(), value.clone())?,
                None => trees[*slot].remove(key.as_slice())?,
            };
            return Ok(());
        }
        trees[..].transaction(|views| -> TxResult<()> { writes.apply(views) })?;
        Ok(())
    }
}

/// The slots of [`OmemoTrees::as_array`] (and of [`OmemoWrites`]' batches).
const OWN_IDENTITY: usize = 0;
const PREKEY: usize = 1;
const SIGNED_PREKEY: usize = 2;
const SESSION: usize = 3;
const IDENTITY: usize = 4;
const DEVICE_LIST: usize = 5;
const SESSION2: usize = 6;
const DEVICE_LIST2: usize = 7;

/// The writes of one OMEMO commit or clear, keys and values already encoded, one batch per
/// tree in the order of [`OmemoTrees::as_array`] (a later write to the same key replaces an
/// earlier one). Applied atomically by [`apply`](Self::apply) inside a transaction, possibly
/// together with other trees' writes (see the module docs). `Debug` is deliberately not
/// implemented: the batches hold secrets.
pub(super) struct OmemoWrites {
    batches: [Batch; OMEMO_TREES],
    /// How many writes the batches hold.
    count: usize,
    /// The write, while there is exactly one: (slot, key, value or `None` for a removal).
    single: Option<(usize, Vec<u8>, Option<IVec>)>,
}

impl OmemoWrites {
    fn empty() -> Self {
        Self {
            batches: Default::default(),
            count: 0,
            single: None,
        }
    }

    fn put(&mut self, slot: usize, key: Vec<u8>, value: Vec<u8>) {
        let value = IVec::from(value);
        self.batches[slot].insert(key.as_slice(), value.clone());
        self.note(slot, key, Some(value));
    }

    fn remove(&mut self, slot: usize, key: Vec<u8>) {
        self.batches[slot].remove(key.as_slice());
        self.note(slot, key, None);
    }

    fn note(&mut self, slot: usize, key: Vec<u8>, value: Option<IVec>) {
        self.count += 1;
        self.single = (self.count == 1).then_some((slot, key, value));
    }

    /// Encodes `changes` for `account`. Within each kind, puts come before removes and later
    /// entries replace earlier ones, so a key both put and removed in one `Changes` ends up
    /// removed (the memory store agrees; the conformance suite pins it).
    pub(super) fn commit(seal: &Seal, account: &str, changes: &Changes) -> Result<Self> {
        let mut w = Self::empty();
        if let Some(own) = &changes.own_identity {
            let (tree, key) = (keys::ACCOUNT_OMEMOIDENTITY, keys::str_key(account));
            let value = seal.seal(tree, &key, to_json(own, tree)?)?;
            w.put(OWN_IDENTITY, key, value);
        }
        for (id, record) in &changes.put_prekeys {
            let key = id_key(account, *id);
            let value = seal.seal(keys::ACCOUNTPREKEY_RECORD, &key, record.clone())?;
            w.put(PREKEY, key, value);
        }
        for id in &changes.remove_prekeys {
            w.remove(PREKEY, id_key(account, *id));
        }
        for (id, entry) in &changes.put_signed_prekeys {
            let (tree, key) = (keys::ACCOUNTSIGNEDPREKEY_ENTRY, id_key(account, *id));
            let value = seal.seal(tree, &key, to_json(entry, tree)?)?;
            w.put(SIGNED_PREKEY, key, value);
        }
        for id in &changes.remove_signed_prekeys {
            w.remove(SIGNED_PREKEY, id_key(account, *id));
        }
        for (addr, record) in &changes.put_sessions {
            let key = device_key(account, addr);
            let value = seal.seal(keys::ACCOUNTJIDDEVICE_SESSION, &key, record.clone())?;
            w.put(SESSION, key, value);
        }
        for addr in &changes.remove_sessions {
            w.remove(SESSION, device_key(account, addr));
        }
        for (addr, identity) in &changes.put_identities {
            let json = to_json(identity, keys::ACCOUNTJIDDEVICE_IDENTITY)?;
            w.put(IDENTITY, device_key(account, addr), json);
        }
        for (jid, list) in &changes.put_device_lists {
            let json = to_json(list, keys::ACCOUNTJID_DEVICELIST)?;
            w.put(DEVICE_LIST, jid_key(account, jid), json);
        }
        for (addr, record) in &changes.put_sessions2 {
            let key = device_key(account, addr);
            let value = seal.seal(keys::ACCOUNTJIDDEVICE_SESSION2, &key, record.clone())?;
            w.put(SESSION2, key, value);
        }
        for addr in &changes.remove_sessions2 {
            w.remove(SESSION2, device_key(account, addr));
        }
        for (jid, list) in &changes.put_device_lists2 {
            let json = to_json(list, keys::ACCOUNTJID_DEVICELIST2)?;
            w.put(DEVICE_LIST2, jid_key(account, jid), json);
        }
        Ok(w)
    }

    /// Removes every entry of `account` from every OMEMO tree. sled transactions cannot scan,
    /// so the keys are collected by prefix scans before the transaction starts: an entry
    /// committed for the same account between the scan and the transaction would survive.
    /// That cannot happen as long as one account's OMEMO state is driven by one task (the
    /// login's), which is also the task that unlinks it; other accounts are never touched.
    pub(super) fn clear(trees: &OmemoTrees, account: &str) -> Result<Self> {
        let prefix = keys::str_key(account);
        let mut w = Self::empty();
        for (slot, tree) in trees.as_array().into_iter().enumerate() {
            for key in tree.scan_prefix(&prefix).keys() {
                w.remove(slot, key?.to_vec());
            }
        }
        Ok(w)
    }

    /// Applies the writes inside a running transaction. `views` starts with the transactional
    /// views of [`OmemoTrees::as_array`], in that order; views after the first
    /// [`OMEMO_TREES`] belong to the caller and are left alone.
    pub(super) fn apply(&self, views: &[TransactionalTree]) -> TxResult<()> {
        let Some(views) = views.get(..OMEMO_TREES) else {
            return Err(abort(Error::Backend(format!(
                "OMEMO writes need {OMEMO_TREES} transactional trees, got {}",
                views.len()
            ))));
        };
        for (view, batch) in views.iter().zip(&self.batches) {
            view.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// One account's OMEMO view of a [`SledStore`](super::SledStore). Holds the database open.
pub(super) struct SledOmemo {
    db: Db,
    trees: OmemoTrees,
    account: String,
}

impl SledOmemo {
    /// The view of `account`, sharing `db` and its OMEMO `trees`.
    pub(super) fn shared(db: Db, trees: OmemoTrees, account: &str) -> Arc<dyn OmemoStore> {
        Arc::new(Self {
            db,
            trees,
            account: account.to_owned(),
        })
    }

    fn get_json<T: DeserializeOwned>(
        tree: &Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>> {
        tree.get(key)?.map(|v| from_json(&v, name)).transpose()
    }

    /// The value at `key` of the sealed tree `name`, opened.
    fn get_sealed(&self, tree: &Tree, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        tree.get(key)?
            .map(|v| Ok(self.trees.seal.open(name, key, &v)?.into_owned()))
            .transpose()
    }

    /// The entries of `tree` under (account, jid), by ascending device id.
    fn devices_of(
        &self,
        tree: &Tree,
        name: &'static str,
        jid: &str,
    ) -> Result<Vec<(DeviceId, IVec)>> {
        let prefix = keys::encode(&[Part::Str(&self.account), Part::Str(jid)]);
        tree.scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                let id = last_u64(&key, &[PartKind::Str, PartKind::Str, PartKind::U64], name)?;
                let device = u32::try_from(id)
                    .ok()
                    .and_then(DeviceId::new)
                    .ok_or_else(|| Error::Corrupt {
                        tree: name,
                        reason: "key holds a device id outside 1..2^31-1".to_owned(),
                    })?;
                Ok((device, value))
            })
            .collect()
    }

    /// The entries of `tree` under the account, by ascending (prekey or signed prekey) id.
    fn ids_of(&self, tree: &Tree, name: &'static str) -> Result<Vec<(u32, IVec)>> {
        tree.scan_prefix(keys::str_key(&self.account))
            .map(|entry| {
                let (key, value) = entry?;
                let id = last_u64(&key, &[PartKind::Str, PartKind::U64], name)?;
                let id = u32::try_from(id).map_err(|_| Error::Corrupt {
                    tree: name,
                    reason: "key holds an id above u32::MAX".to_owned(),
                })?;
                Ok((id, value))
            })
            .collect()
    }
}

impl OmemoStore for SledOmemo {
    fn own_identity(&self) -> StoreResult<Option<OwnIdentity>> {
        let (tree, key) = (keys::ACCOUNT_OMEMOIDENTITY, keys::str_key(&self.account));
        let value = self.get_sealed(&self.trees.own_identity, tree, &key)?;
        Ok(value.map(|v| from_json(&v, tree)).transpose()?)
    }

    fn prekey(&self, id: u32) -> StoreResult<Option<Vec<u8>>> {
        let key = id_key(&self.account, id);
        Ok(self.get_sealed(&self.trees.prekey, keys::ACCOUNTPREKEY_RECORD, &key)?)
    }

    fn prekey_ids(&self) -> StoreResult<Vec<u32>> {
        let entries = self.ids_of(&self.trees.prekey, keys::ACCOUNTPREKEY_RECORD)?;
        Ok(entries.into_iter().map(|(id, _)| id).collect())
    }

    fn signed_prekey(&self, id: u32) -> StoreResult<Option<SignedPreKeyEntry>> {
        let (tree, key) = (keys::ACCOUNTSIGNEDPREKEY_ENTRY, id_key(&self.account, id));
        let value = self.get_sealed(&self.trees.signed_prekey, tree, &key)?;
        Ok(value.map(|v| from_json(&v, tree)).transpose()?)
    }

    /// Each entry is opened with its key re-encoded from its id: `ids_of` decoded the key
    /// strictly, so the encoding gives back the same bytes.
    fn signed_prekeys(&self) -> StoreResult<Vec<(u32, SignedPreKeyEntry)>> {
        let name = keys::ACCOUNTSIGNEDPREKEY_ENTRY;
        let entries = self.ids_of(&self.trees.signed_prekey, name)?;
        let decoded: Result<Vec<_>> = entries
            .into_iter()
            .map(|(id, v)| {
                let v = self.trees.seal.open(name, &id_key(&self.account, id), &v)?;
                Ok((id, from_json(&v, name)?))
            })
            .collect();
        Ok(decoded?)
    }

    fn session(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>> {
        let key = device_key(&self.account, addr);
        Ok(self.get_sealed(&self.trees.session, keys::ACCOUNTJIDDEVICE_SESSION, &key)?)
    }

    fn session_devices(&self, jid: &str) -> StoreResult<Vec<DeviceId>> {
        let entries = self.devices_of(&self.trees.session, keys::ACCOUNTJIDDEVICE_SESSION, jid)?;
        Ok(entries.into_iter().map(|(device, _)| device).collect())
    }

    fn identity(&self, addr: &DeviceAddress) -> StoreResult<Option<KnownIdentity>> {
        let key = device_key(&self.account, addr);
        Ok(Self::get_json(
            &self.trees.identity,
            keys::ACCOUNTJIDDEVICE_IDENTITY,
            &key,
        )?)
    }

    fn identities_of(&self, jid: &str) -> StoreResult<Vec<(DeviceId, KnownIdentity)>> {
        let name = keys::ACCOUNTJIDDEVICE_IDENTITY;
        let entries = self.devices_of(&self.trees.identity, name, jid)?;
        let decoded: Result<Vec<_>> = entries
            .into_iter()
            .map(|(device, v)| Ok((device, from_json(&v, name)?)))
            .collect();
        Ok(decoded?)
    }

    fn device_list(&self, jid: &str) -> StoreResult<Option<DeviceList>> {
        let key = jid_key(&self.account, jid);
        Ok(Self::get_json(
            &self.trees.device_list,
            keys::ACCOUNTJID_DEVICELIST,
            &key,
        )?)
    }

    fn session2(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>> {
        let key = device_key(&self.account, addr);
        Ok(self.get_sealed(&self.trees.session2, keys::ACCOUNTJIDDEVICE_SESSION2, &key)?)
    }

    fn device_list2(&self, jid: &str) -> StoreResult<Option<DeviceList>> {
        let key = jid_key(&self.account, jid);
        Ok(Self::get_json(
            &self.trees.device_list2,
            keys::ACCOUNTJID_DEVICELIST2,
            &key,
        )?)
    }

    fn commit(&self, changes: &Changes) -> StoreResult<()> {
        let writes = OmemoWrites::commit(&self.trees.seal, &self.account, changes)?;
        Ok(self.trees.transact(&writes)?)
    }

    fn clear(&self) -> StoreResult<()> {
        let writes = OmemoWrites::clear(&self.trees, &self.account)?;
        Ok(self.trees.transact(&writes)?)
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map_err(Error::from)?;
        Ok(())
    }
}

/// (account, id): a prekey or signed prekey.
fn id_key(account: &str, id: u32) -> Vec<u8> {
    keys::encode(&[Part::Str(account), Part::U64(u64::from(id))])
}

/// (account, jid, device): a session or known identity.
fn device_key(account: &str, addr: &DeviceAddress) -> Vec<u8> {
    keys::encode(&[
        Part::Str(account),
        Part::Str(&addr.jid),
        Part::U64(u64::from(addr.device.get())),
    ])
}

/// (account, jid): a device list.
fn jid_key(account: &str, jid: &str) -> Vec<u8> {
    keys::encode(&[Part::Str(account), Part::Str(jid)])
}

/// Decodes `key` as `kinds` (ending in a `u64` part) and returns that last part.
fn last_u64(key: &[u8], kinds: &[PartKind], tree: &'static str) -> Result<u64> {
    let parts = keys::decode(key, kinds).map_err(|e| Error::Corrupt {
        tree,
        reason: e.to_string(),
    })?;
    match parts.last() {
        Some(OwnedPart::U64(n)) => Ok(*n),
        _ => unreachable!("decode returns the kinds it was asked for, the last being U64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledStore, Store as _};
    use xmpp_omemo::omemo::Trust;

    const ACCOUNT: &str = "alice@xmpp.test";

    const OWN_JSON: &str = r#"{"device_id":5,"registration_id":77,"identity_key_pair":"AQID","next_prekey_id":101,"next_signed_prekey_id":2}"#;
    const SPK_JSON: &str = r#"{"record":"BAUGBw==","created_ms":1700000000000}"#;
    const KNOWN_JSON: &str = r#"{"key":"Baq7","trust":"verified","first_seen_ms":42}"#;
    const LIST_JSON: &str = r#"{"devices":[2,10,300],"updated_ms":9}"#;

    fn temp() -> (SledStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SledStore::open(dir.path()).expect("open a fresh database");
        (store, dir)
    }

    fn dev(id: u32) -> DeviceId {
        DeviceId::new(id).expect("a valid device id")
    }

    fn bob(device: u32) -> DeviceAddress {
        DeviceAddress::new("bob@x", dev(device))
    }

    fn own() -> OwnIdentity {
        OwnIdentity {
            device_id: dev(5),
            registration_id: 77,
            identity_key_pair: vec![1, 2, 3],
            next_prekey_id: 101,
            next_signed_prekey_id: 2,
        }
    }

    fn spk() -> SignedPreKeyEntry {
        SignedPreKeyEntry {
            record: vec![4, 5, 6, 7],
            created_ms: 1_700_000_000_000,
        }
    }

    fn known() -> KnownIdentity {
        KnownIdentity {
            key: vec![0x05, 0xAA, 0xBB],
            trust: Trust::Verified,
            first_seen_ms: 42,
        }
    }

    fn list() -> DeviceList {
        DeviceList {
            devices: vec![dev(2), dev(10), dev(300)],
            updated_ms: 9,
        }
    }

    fn changes() -> Changes {
        Changes {
            own_identity: Some(own()),
            put_prekeys: vec![(258, vec![0xEE; 5])],
            put_signed_prekeys: vec![(1, spk())],
            put_sessions: vec![(bob(7), vec![0x5E; 6])],
            put_identities: vec![(bob(7), known())],
            put_device_lists: vec![("bob@x".to_owned(), list())],
            put_sessions2: vec![(bob(7), vec![0x2E; 4])],
            put_device_lists2: vec![("bob@x".to_owned(), list())],
            ..Changes::default()
        }
    }

    fn assert_changes_readable(view: &dyn OmemoStore) {
        assert_eq!(view.own_identity().expect("read"), Some(own()));
        assert_eq!(view.prekey(258).expect("read"), Some(vec![0xEE; 5]));
        assert_eq!(view.signed_prekeys().expect("read"), vec![(1, spk())]);
        assert_eq!(view.session(&bob(7)).expect("read"), Some(vec![0x5E; 6]));
        assert_eq!(
            view.identities_of("bob@x").expect("read"),
            vec![(dev(7), known())]
        );
        assert_eq!(view.device_list("bob@x").expect("read"), Some(list()));
        assert_eq!(view.session2(&bob(7)).expect("read"), Some(vec![0x2E; 4]));
        assert_eq!(view.device_list2("bob@x").expect("read"), Some(list()));
    }

    #[test]
    fn committed_and_flushed_data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            let view = store.omemo(ACCOUNT);
            view.commit(&changes()).expect("commit");
            view.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_changes_readable(&*store.omemo(ACCOUNT));
        assert_eq!(
            store.omemo("alice@xmpp.tes").own_identity().expect("read"),
            None
        );
    }

    #[test]
    fn value_json_snapshots() {
        assert_eq!(serde_json::to_string(&own()).expect("encode"), OWN_JSON);
        assert_eq!(serde_json::to_string(&spk()).expect("encode"), SPK_JSON);
        assert_eq!(serde_json::to_string(&known()).expect("encode"), KNOWN_JSON);
        assert_eq!(serde_json::to_string(&list()).expect("encode"), LIST_JSON);
        let trusts: Vec<String> = [Trust::Blind, Trust::Verified, Trust::Untrusted]
            .iter()
            .map(|t| serde_json::to_string(t).expect("encode"))
            .collect();
        assert_eq!(trusts, [r#""blind""#, r#""verified""#, r#""untrusted""#]);
        assert_eq!(
            serde_json::from_str::<OwnIdentity>(OWN_JSON).expect("decode"),
            own()
        );
        assert_eq!(
            serde_json::from_str::<SignedPreKeyEntry>(SPK_JSON).expect("decode"),
            spk()
        );
        assert_eq!(
            serde_json::from_str::<KnownIdentity>(KNOWN_JSON).expect("decode"),
            known()
        );
        assert_eq!(
            serde_json::from_str::<DeviceList>(LIST_JSON).expect("decode"),
            list()
        );
    }

    #[test]
    fn tree_layout_snapshot() {
        let (store, _dir) = temp();
        store.omemo(ACCOUNT).commit(&changes()).expect("commit");
        let t = &store.omemo;
        let raw = |tree: &Tree, key: &[u8]| tree.get(key).expect("read raw").map(|v| v.to_vec());
        let own_key = b"alice@xmpp.test\xFF";
        let prekey_key = b"alice@xmpp.test\xFF\0\0\0\0\0\0\x01\x02";
        let spk_key = b"alice@xmpp.test\xFF\0\0\0\0\0\0\0\x01";
        let device_key = b"alice@xmpp.test\xFFbob@x\xFF\0\0\0\0\0\0\0\x07";
        let jid_key = b"alice@xmpp.test\xFFbob@x\xFF";
        assert_eq!(
            raw(&t.own_identity, own_key),
            Some(OWN_JSON.as_bytes().to_vec())
        );
        assert_eq!(raw(&t.prekey, prekey_key), Some(vec![0xEE; 5]));
        assert_eq!(
            raw(&t.signed_prekey, spk_key),
            Some(SPK_JSON.as_bytes().to_vec())
        );
        assert_eq!(raw(&t.session, device_key), Some(vec![0x5E; 6]));
        assert_eq!(
            raw(&t.identity, device_key),
            Some(KNOWN_JSON.as_bytes().to_vec())
        );
        assert_eq!(
            raw(&t.device_list, jid_key),
            Some(LIST_JSON.as_bytes().to_vec())
        );
        assert_eq!(raw(&t.session2, device_key), Some(vec![0x2E; 4]));
        assert_eq!(
            raw(&t.device_list2, jid_key),
            Some(LIST_JSON.as_bytes().to_vec())
        );
        for tree in t.as_array() {
            assert_eq!(tree.len(), 1, "one entry per tree");
        }
    }

    /// Asserts that `result` failed naming `tree`, and without `secret` in its text.
    fn assert_corrupt<T: std::fmt::Debug>(result: StoreResult<T>, tree: &str, secret: &str) {
        let e = result.expect_err("a corrupt entry is an error");
        let text = e.to_string();
        assert!(text.contains(&format!("`{tree}`")), "{text}");
        assert!(!text.contains(secret), "{text}");
    }

    #[test]
    fn corrupt_entries_are_errors_naming_the_tree_not_the_value() {
        let (store, _dir) = temp();
        let t = &store.omemo;
        let view = store.omemo(ACCOUNT);
        let secret = r#"{"device_id":"hunter2"}"#;
        t.own_identity
            .insert(keys::str_key(ACCOUNT), secret)
            .expect("insert");
        assert_corrupt(view.own_identity(), keys::ACCOUNT_OMEMOIDENTITY, "hunter2");
        t.signed_prekey
            .insert(id_key(ACCOUNT, 1), "hunter2")
            .expect("insert");
        assert_corrupt(
            view.signed_prekey(1),
            keys::ACCOUNTSIGNEDPREKEY_ENTRY,
            "hunter2",
        );
        assert_corrupt(
            view.signed_prekeys(),
            keys::ACCOUNTSIGNEDPREKEY_ENTRY,
            "hunter2",
        );
        t.identity
            .insert(device_key(ACCOUNT, &bob(1)), r#"{"key":"hunter2"}"#)
            .expect("insert");
        assert_corrupt(
            view.identity(&bob(1)),
            keys::ACCOUNTJIDDEVICE_IDENTITY,
            "hunter2",
        );
        assert_corrupt(
            view.identities_of("bob@x"),
            keys::ACCOUNTJIDDEVICE_IDENTITY,
            "hunter2",
        );
        t.device_list
            .insert(jid_key(ACCOUNT, "bob@x"), r#"{"devices":[0]}"#)
            .expect("insert");
        assert_corrupt(
            view.device_list("bob@x"),
            keys::ACCOUNTJID_DEVICELIST,
            "devices",
        );

        let zero_device = keys::encode(&[Part::Str(ACCOUNT), Part::Str("carol@x"), Part::U64(0)]);
        t.session.insert(zero_device, &b"s"[..]).expect("insert");
        assert_corrupt(
            view.session_devices("carol@x"),
            keys::ACCOUNTJIDDEVICE_SESSION,
            "carol",
        );
        let huge_id = keys::encode(&[Part::Str(ACCOUNT), Part::U64(1 << 32)]);
        t.prekey.insert(huge_id, &b"p"[..]).expect("insert");
        assert_corrupt(view.prekey_ids(), keys::ACCOUNTPREKEY_RECORD, "alice");
        let short_key = [keys::str_key(ACCOUNT), vec![1, 2]].concat();
        t.prekey.insert(short_key, &b"p"[..]).expect("insert");
        assert_corrupt(view.prekey_ids(), keys::ACCOUNTPREKEY_RECORD, "alice");
    }

    #[test]
    fn a_one_write_commit_skips_the_transaction_and_reads_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = Changes {
            put_sessions: vec![(bob(7), vec![0x5E; 6])],
            ..Changes::default()
        };
        let writes = OmemoWrites::commit(&Seal::default(), ACCOUNT, &one).expect("encode");
        assert!(
            writes.single.is_some(),
            "one write goes without a transaction"
        );
        let two = OmemoWrites::commit(&Seal::default(), ACCOUNT, &changes()).expect("encode");
        assert!(
            two.single.is_none(),
            "more than one write goes in a transaction"
        );
        {
            let store = SledStore::open(dir.path()).expect("open");
            let view = store.omemo(ACCOUNT);
            view.commit(&one).expect("commit one session");
            assert_eq!(view.session(&bob(7)).expect("read"), Some(vec![0x5E; 6]));
            view.commit(&Changes {
                put_sessions: vec![(bob(8), vec![0x11; 3])],
                ..Changes::default()
            })
            .expect("commit another");
            view.commit(&Changes {
                remove_sessions: vec![bob(8)],
                ..Changes::default()
            })
            .expect("commit a removal alone");
            view.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        let view = store.omemo(ACCOUNT);
        assert_eq!(view.session(&bob(7)).expect("read"), Some(vec![0x5E; 6]));
        assert_eq!(view.session(&bob(8)).expect("read"), None);
    }

    #[test]
    fn writes_commit_together_with_another_tree_or_not_at_all() {
        let (store, _dir) = temp();
        let ghosts = &store.ghostid_ghost;
        let writes = OmemoWrites::commit(&Seal::default(), ACCOUNT, &changes()).expect("encode");
        let mut trees = store.omemo.as_array().to_vec();
        trees.push(ghosts);

        let failed = trees[..].transaction(|views| -> TxResult<()> {
            writes.apply(views)?;
            views[OMEMO_TREES].insert(&b"g"[..], &b"{}"[..])?;
            Err(abort(Error::Backend(
                "the caller's own write failed".to_owned(),
            )))
        });
        assert!(failed.is_err());
        assert!(
            store.omemo.all_empty() && ghosts.is_empty(),
            "an abort leaves nothing"
        );

        trees[..]
            .transaction(|views| -> TxResult<()> {
                writes.apply(views)?;
                views[OMEMO_TREES].insert(&b"g"[..], &b"{}"[..])?;
                Ok(())
            })
            .map_err(Error::from)
            .expect("commit");
        assert_changes_readable(&*store.omemo(ACCOUNT));
        assert!(ghosts.contains_key(b"g").expect("read"));

        let too_few = store.omemo.as_array()[..5].to_vec();
        let short = too_few[..].transaction(|views| -> TxResult<()> { writes.apply(views) });
        assert!(
            short.is_err(),
            "apply refuses fewer than {OMEMO_TREES} views"
        );
    }
}
