//! [`MemoryStore`]: an [`OmemoStore`] for one account held in memory, optionally written to a
//! JSON file on every [`flush`](OmemoStore::flush). For tests, examples, benchmarks and small
//! tools; a bridge with many accounts keeps the state in its own database (the interop bridge
//! has a sled store behind the same trait).
//!
//! The file is rewritten whole (to a temporary file, fsynced, then renamed over the old one), so
//! after a crash it holds exactly the state of the last completed flush. That costs O(state) per
//! flush, fine for one account's few hundred records.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::store::{
    Changes, DeviceAddress, DeviceId, DeviceList, KnownIdentity, OmemoStore, OwnIdentity,
    SignedPreKeyEntry, StoreError, StoreResult,
};

/// One account's OMEMO state in memory (`Debug` shows no contents). See the module docs.
pub struct MemoryStore {
    state: Mutex<AccountState>,
    /// Where `flush` writes the snapshot; `None` keeps nothing beyond the process.
    file: Option<PathBuf>,
    /// One snapshot write at a time: commits of different contacts run side by side (the
    /// account lock has a scope per contact), and so do their flushes.
    writer: Mutex<()>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of one account. Contacts' maps are keyed by bare JID, then device; the snapshot
/// file is this struct as JSON (byte values as number arrays: a file for tools, not a format).
#[derive(Default, Serialize, Deserialize)]
struct AccountState {
    own_identity: Option<OwnIdentity>,
    prekeys: BTreeMap<u32, Vec<u8>>,
    signed_prekeys: BTreeMap<u32, SignedPreKeyEntry>,
    sessions: BTreeMap<String, BTreeMap<DeviceId, Vec<u8>>>,
    identities: BTreeMap<String, BTreeMap<DeviceId, KnownIdentity>>,
    device_lists: BTreeMap<String, DeviceList>,
    #[serde(default)]
    sessions2: BTreeMap<String, BTreeMap<DeviceId, Vec<u8>>>,
    #[serde(default)]
    device_lists2: BTreeMap<String, DeviceList>,
}

impl AccountState {
    /// Puts before removes, each in order (see [`Changes`]): a key both put and removed in one
    /// set ends up removed.
    fn apply(&mut self, changes: &Changes) {
        if let Some(own) = &changes.own_identity {
            self.own_identity = Some(own.clone());
        }
        for (id, record) in &changes.put_prekeys {
            self.prekeys.insert(*id, record.clone());
        }
        for id in &changes.remove_prekeys {
            self.prekeys.remove(id);
        }
        for (id, entry) in &changes.put_signed_prekeys {
            self.signed_prekeys.insert(*id, entry.clone());
        }
        for id in &changes.remove_signed_prekeys {
            self.signed_prekeys.remove(id);
        }
        for (addr, record) in &changes.put_sessions {
            self.sessions
                .entry(addr.jid.clone())
                .or_default()
                .insert(addr.device, record.clone());
        }
        for addr in &changes.remove_sessions {
            if let Some(devices) = self.sessions.get_mut(&addr.jid) {
                devices.remove(&addr.device);
                if devices.is_empty() {
                    self.sessions.remove(&addr.jid);
                }
            }
        }
        for (addr, identity) in &changes.put_identities {
            self.identities
                .entry(addr.jid.clone())
                .or_default()
                .insert(addr.device, identity.clone());
        }
        for (jid, list) in &changes.put_device_lists {
            self.device_lists.insert(jid.clone(), list.clone());
        }
        for (addr, record) in &changes.put_sessions2 {
            self.sessions2
                .entry(addr.jid.clone())
                .or_default()
                .insert(addr.device, record.clone());
        }
        for addr in &changes.remove_sessions2 {
            if let Some(devices) = self.sessions2.get_mut(&addr.jid) {
                devices.remove(&addr.device);
                if devices.is_empty() {
                    self.sessions2.remove(&addr.jid);
                }
            }
        }
        for (jid, list) in &changes.put_device_lists2 {
            self.device_lists2.insert(jid.clone(), list.clone());
        }
    }
}

impl MemoryStore {
    /// An empty store that keeps nothing beyond the process.
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            file: None,
            writer: Mutex::new(()),
        }
    }

    /// A store snapshotted to `file`: loads it if it exists (else starts empty), and rewrites it
    /// on every flush.
    pub fn open(file: impl Into<PathBuf>) -> StoreResult<Self> {
        let file = file.into();
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError(format!("{}: not an OMEMO snapshot: {e}", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccountState::default(),
            Err(e) => return Err(StoreError(format!("{}: {e}", file.display()))),
        };
        Ok(Self {
            state: Mutex::new(state),
            file: Some(file),
            writer: Mutex::new(()),
        })
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, AccountState>> {
        self.state
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))
    }

    fn read<T>(&self, read: impl FnOnce(&AccountState) -> T) -> StoreResult<T> {
        Ok(read(&*self.lock()?))
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file whole.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl OmemoStore for MemoryStore {
    fn own_identity(&self) -> StoreResult<Option<OwnIdentity>> {
        self.read(|a| a.own_identity.clone())
    }

    fn prekey(&self, id: u32) -> StoreResult<Option<Vec<u8>>> {
        self.read(|a| a.prekeys.get(&id).cloned())
    }

    fn prekey_ids(&self) -> StoreResult<Vec<u32>> {
        self.read(|a| a.prekeys.keys().copied().collect())
    }

    fn signed_prekey(&self, id: u32) -> StoreResult<Option<SignedPreKeyEntry>> {
        self.read(|a| a.signed_prekeys.get(&id).cloned())
    }

    fn signed_prekeys(&self) -> StoreResult<Vec<(u32, SignedPreKeyEntry)>> {
        self.read(|a| {
            a.signed_prekeys
                .iter()
                .map(|(id, e)| (*id, e.clone()))
                .collect()
        })
    }

    fn session(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>> {
        self.read(|a| {
            a.sessions
                .get(&addr.jid)
                .and_then(|d| d.get(&addr.device))
                .cloned()
        })
    }

    fn session_devices(&self, jid: &str) -> StoreResult<Vec<DeviceId>> {
        self.read(|a| {
            a.sessions
                .get(jid)
                .map(|d| d.keys().copied().collect())
                .unwrap_or_default()
        })
    }

    fn identity(&self, addr: &DeviceAddress) -> StoreResult<Option<KnownIdentity>> {
        self.read(|a| {
            a.identities
                .get(&addr.jid)
                .and_then(|d| d.get(&addr.device))
                .cloned()
        })
    }

    fn identities_of(&self, jid: &str) -> StoreResult<Vec<(DeviceId, KnownIdentity)>> {
        self.read(|a| {
            a.identities
                .get(jid)
                .map(|d| d.iter().map(|(id, k)| (*id, k.clone())).collect())
                .unwrap_or_default()
        })
    }

    fn device_list(&self, jid: &str) -> StoreResult<Option<DeviceList>> {
        self.read(|a| a.device_lists.get(jid).cloned())
    }

    fn session2(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>> {
        self.read(|a| {
            a.sessions2
                .get(&addr.jid)
                .and_then(|d| d.get(&addr.device))
                .cloned()
        })
    }

    fn device_list2(&self, jid: &str) -> StoreResult<Option<DeviceList>> {
        self.read(|a| a.device_lists2.get(jid).cloned())
    }

    fn commit(&self, changes: &Changes) -> StoreResult<()> {
        self.lock()?.apply(changes);
        Ok(())
    }

    fn clear(&self) -> StoreResult<()> {
        *self.lock()? = AccountState::default();
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        // Taken before the state is read, so a later snapshot is never replaced by an older one.
        let _writer = self
            .writer
            .lock()
            .map_err(|_| StoreError("memory store writer lock poisoned".into()))?;
        let bytes = {
            let state = self.lock()?;
            serde_json::to_vec(&*state).map_err(|e| StoreError(format!("snapshot: {e}")))?
        };
        replace_file(file, &bytes).map_err(|e| StoreError(format!("{}: {e}", file.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::omemo::Trust;

    #[test]
    fn flushes_from_several_threads_at_once_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            std::sync::Arc::new(MemoryStore::open(dir.path().join("omemo.json")).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        store.flush().expect("flush");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a flush failed");
        }
        MemoryStore::open(dir.path().join("omemo.json")).expect("the snapshot reads back");
    }

    fn device(n: u32) -> DeviceId {
        DeviceId::new(n).expect("device id")
    }

    fn some_changes() -> Changes {
        let bob = DeviceAddress::new("bob@x.test", device(7));
        Changes {
            put_prekeys: vec![(1, vec![1, 2]), (2, vec![3])],
            remove_prekeys: vec![2],
            put_sessions: vec![(bob.clone(), vec![9; 4])],
            put_identities: vec![(
                bob,
                KnownIdentity {
                    key: vec![5; 33],
                    trust: Trust::Blind,
                    first_seen_ms: 3,
                },
            )],
            put_device_lists: vec![(
                "bob@x.test".into(),
                DeviceList {
                    devices: vec![device(7)],
                    updated_ms: 4,
                },
            )],
            put_sessions2: vec![(DeviceAddress::new("bob@x.test", device(8)), vec![8; 3])],
            put_device_lists2: vec![(
                "bob@x.test".into(),
                DeviceList {
                    devices: vec![device(8)],
                    updated_ms: 5,
                },
            )],
            ..Changes::default()
        }
    }

    #[test]
    fn a_flushed_snapshot_reopens_with_the_same_state_and_an_unflushed_commit_is_not_in_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alice.json");
        let store = MemoryStore::open(&path).expect("open");
        store.commit(&some_changes()).expect("commit");
        store.flush().expect("flush");
        store
            .commit(&Changes {
                remove_sessions: vec![DeviceAddress::new("bob@x.test", device(7))],
                ..Changes::default()
            })
            .expect("commit");

        let again = MemoryStore::open(&path).expect("reopen");
        assert_eq!(again.prekey_ids().expect("ids"), vec![1]);
        assert_eq!(
            again.session_devices("bob@x.test").expect("devices"),
            vec![device(7)]
        );
        assert_eq!(
            again.identities_of("bob@x.test").expect("identities").len(),
            1
        );
        assert_eq!(
            again
                .device_list("bob@x.test")
                .expect("list")
                .map(|l| l.devices),
            Some(vec![device(7)])
        );
        assert!(
            store
                .session_devices("bob@x.test")
                .expect("devices")
                .is_empty()
        );
        let bob8 = DeviceAddress::new("bob@x.test", device(8));
        assert_eq!(again.session2(&bob8).expect("session2"), Some(vec![8; 3]));
        assert_eq!(
            again
                .device_list2("bob@x.test")
                .expect("list2")
                .map(|l| l.devices),
            Some(vec![device(8)])
        );
        assert_eq!(
            again.session(&bob8).expect("legacy sessions stay apart"),
            None
        );
        store
            .commit(&Changes {
                remove_sessions2: vec![bob8.clone()],
                ..Changes::default()
            })
            .expect("commit");
        assert_eq!(store.session2(&bob8).expect("session2"), None);
    }

    #[test]
    fn clear_empties_the_account_and_a_missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::open(dir.path().join("none.json")).expect("open");
        assert_eq!(store.own_identity().expect("read"), None);
        store.commit(&some_changes()).expect("commit");
        store.clear().expect("clear");
        assert!(store.prekey_ids().expect("ids").is_empty());
        assert!(store.device_list("bob@x.test").expect("list").is_none());
    }

    #[test]
    fn invalid_snapshot_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = MemoryStore::open(&path).expect_err("must fail");
        assert!(
            err.0.contains("bad.json") && err.0.contains("not an OMEMO snapshot"),
            "{err}"
        );
    }
}
