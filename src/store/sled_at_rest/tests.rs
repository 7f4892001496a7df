//! Encryption at rest of the sled store: sealed round trips, no secret in any file, records
//! that do not move, the key check that changes nothing, the migration and its crash points,
//! and the conformance suite on a sealed store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use xmpp_omemo::omemo::{Changes, DeviceAddress, DeviceId, OwnIdentity, SignedPreKeyEntry};

use super::*;
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::{
    BlockStore as _, GhostRecord, GhostStore as _, LoginRecord, LoginStore as _, MappedEvent,
    MessageMap as _, PendingEvent, PendingEvents as _, PortalRecord, PortalState, PortalStore as _,
    TxnStore as _,
};

const PASSWORD: &str = "Pa55word-at-rest-needle-7f3a";
const IDENTITY: &[u8] = b"IDENTITY-private-key-needle-0123";
const PREKEY: &[u8] = b"PREKEY-record-needle-abcdefghij";
const SIGNED_PREKEY: &[u8] = b"SIGNED-prekey-needle-klmnopqrst";
const SESSION: &[u8] = b"SESSION-record-needle-uvwxyz0123";
const SESSION2: &[u8] = b"OMEMO2-session-needle-4567abcdef";
const PENDING_EVENT: &str = "$pendingEventNeedle42";
const ACCOUNT: &str = "alice@xmpp.test";

fn key() -> DatabaseKey {
    DatabaseKey::from_secret(b"a random key of thirty-two bytes").expect("key")
}

fn other_key() -> DatabaseKey {
    DatabaseKey::from_secret(b"another random key of 32 bytes!!").expect("key")
}

fn sealed_temp() -> (SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open_with_key(&dir.path().join("db"), Some(&key())).expect("open");
    (store, dir)
}

mod conformance {
    crate::store::conformance::store_conformance_tests!(super::sealed_temp());
}

fn jid(s: &str) -> RemoteUserId {
    RemoteUserId::parse(s).expect("a bare JID")
}

fn login(user: &str, account: &str, password: &str) -> LoginRecord {
    LoginRecord {
        matrix_user: user.try_into().expect("user id"),
        jid: jid(account),
        password: password.to_owned(),
        space: None,
        linked_ms: 1,
    }
}

fn pending(event: &str) -> PendingEvent {
    PendingEvent {
        room: "!room:example.org".try_into().expect("room id"),
        event: event.try_into().expect("event id"),
    }
}

fn bob(device: u32) -> DeviceAddress {
    DeviceAddress::new("bob@xmpp.test", DeviceId::new(device).expect("device id"))
}

fn own() -> OwnIdentity {
    OwnIdentity {
        device_id: DeviceId::new(5).expect("device id"),
        registration_id: 77,
        identity_key_pair: IDENTITY.to_vec(),
        next_prekey_id: 2,
        next_signed_prekey_id: 2,
    }
}

fn spk() -> SignedPreKeyEntry {
    SignedPreKeyEntry {
        record: SIGNED_PREKEY.to_vec(),
        created_ms: 9,
    }
}

fn omemo_changes() -> Changes {
    Changes {
        own_identity: Some(own()),
        put_prekeys: vec![(1, PREKEY.to_vec())],
        put_signed_prekeys: vec![(1, spk())],
        put_sessions: vec![(bob(7), SESSION.to_vec())],
        put_sessions2: vec![(bob(7), SESSION2.to_vec())],
        ..Changes::default()
    }
}

/// Writes one value into every secret tree (and a few others), and flushes.
fn write_secrets(store: &SledStore) -> u64 {
    store
        .put_login(&login("@alice:example.org", ACCOUNT, PASSWORD))
        .expect("put login");
    store
        .omemo(ACCOUNT)
        .commit(&omemo_changes())
        .expect("commit");
    let position = store.push_pending(&pending(PENDING_EVENT)).expect("push");
    store.flush().expect("flush");
    position
}

fn assert_secrets_readable(store: &SledStore) {
    let stored = store.login(&jid(ACCOUNT)).expect("read").expect("login");
    assert_eq!(stored.password, PASSWORD);
    let view = store.omemo(ACCOUNT);
    assert_eq!(view.own_identity().expect("read"), Some(own()));
    assert_eq!(view.prekey(1).expect("read"), Some(PREKEY.to_vec()));
    assert_eq!(view.signed_prekey(1).expect("read"), Some(spk()));
    assert_eq!(view.signed_prekeys().expect("read"), vec![(1, spk())]);
    assert_eq!(view.session(&bob(7)).expect("read"), Some(SESSION.to_vec()));
    assert_eq!(
        view.session2(&bob(7)).expect("read"),
        Some(SESSION2.to_vec())
    );
    let events: Vec<PendingEvent> = store
        .pending_events()
        .expect("read")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(events, vec![pending(PENDING_EVENT)]);
}

/// Every form in which a secret could reach a file: raw, and base64 as JSON holds bytes.
fn needles() -> Vec<(String, Vec<u8>)> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut needles = vec![
        ("password".to_owned(), PASSWORD.as_bytes().to_vec()),
        (
            "pending event".to_owned(),
            PENDING_EVENT.as_bytes().to_vec(),
        ),
    ];
    for (name, bytes) in [
        ("identity", IDENTITY),
        ("prekey", PREKEY),
        ("signed prekey", SIGNED_PREKEY),
        ("session", SESSION),
        ("OMEMO 2 session", SESSION2),
    ] {
        needles.push((name.to_owned(), bytes.to_vec()));
        needles.push((format!("{name} (base64)"), b64(bytes).into_bytes()));
    }
    needles
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The names of the needles found in some file under `dir`.
fn secrets_found(dir: &Path) -> Vec<String> {
    let files: Vec<Vec<u8>> = files_under(dir)
        .iter()
        .map(|f| std::fs::read(f).expect("read a file"))
        .collect();
    needles()
        .into_iter()
        .filter(|(_, needle)| {
            files
                .iter()
                .any(|bytes| bytes.windows(needle.len()).any(|w| w == &needle[..]))
        })
        .map(|(name, _)| name)
        .collect()
}

/// Every file under `dir` (and the entries beside it) with the SHA-256 of its contents, once
/// two readings 200 ms apart agree (sled's threads of a database just closed may still write).
fn settled_checksums(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let read = || -> BTreeMap<PathBuf, Vec<u8>> {
        let mut sums: BTreeMap<PathBuf, Vec<u8>> = files_under(dir)
            .into_iter()
            .map(|f| {
                let digest = Sha256::digest(std::fs::read(&f).expect("read a file")).to_vec();
                (f, digest)
            })
            .collect();
        for entry in std::fs::read_dir(dir.parent().expect("a parent")).expect("list") {
            sums.entry(entry.expect("an entry").path()).or_default();
        }
        sums
    };
    let mut last = read();
    for _ in 0..25 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the database files keep changing after the store was dropped");
}

fn siblings(db: &Path) -> Vec<String> {
    std::fs::read_dir(db.parent().expect("a parent"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "db")
        .collect()
}

#[test]
fn a_sealed_store_round_trips_every_secret_tree_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    {
        let store = SledStore::open_with_key(&db, Some(&key())).expect("create sealed");
        write_secrets(&store);
        assert_secrets_readable(&store);
        let raw = store.db().open_tree(keys::JID_LOGIN).expect("tree");
        let (_, value) = raw.iter().next().expect("one login").expect("read");
        assert_eq!(value[0], 1, "the stored login is a sealed value");
    }
    let store = SledStore::open_with_key(&db, Some(&key())).expect("reopen sealed");
    assert_secrets_readable(&store);
    assert_eq!(
        at_rest_state(&db, Some(&key())).expect("state"),
        AtRest::Sealed
    );
}

#[test]
fn no_secret_reaches_any_file_of_a_sealed_store_but_all_reach_a_plain_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, sealed) = (dir.path().join("plain"), dir.path().join("sealed"));
    {
        write_secrets(&SledStore::open(&plain).expect("create plain"));
        write_secrets(&SledStore::open_with_key(&sealed, Some(&key())).expect("create sealed"));
    }
    let all: Vec<String> = needles().into_iter().map(|(name, _)| name).collect();
    let mut in_plain = secrets_found(&plain);
    in_plain.sort();
    let mut expected = all.clone();
    expected.retain(|name| {
        // JSON holds the identity and the signed prekey as base64, the records raw.
        !matches!(
            name.as_str(),
            "identity"
                | "signed prekey"
                | "prekey (base64)"
                | "session (base64)"
                | "OMEMO 2 session (base64)"
        )
    });
    expected.sort();
    assert_eq!(
        in_plain, expected,
        "the scan finds what a plain store holds"
    );
    assert_eq!(secrets_found(&sealed), Vec::<String>::new());
}

#[test]
fn a_sealed_record_moved_to_another_key_or_tree_is_corrupt() {
    let (store, _dir) = sealed_temp();
    write_secrets(&store);
    store
        .put_login(&login(
            "@bob:example.org",
            "bob@xmpp.test",
            "other password",
        ))
        .expect("put");
    let logins = store.db().open_tree(keys::JID_LOGIN).expect("tree");
    let alice = logins
        .get(keys::str_key(ACCOUNT))
        .expect("read")
        .expect("alice's login");
    logins
        .insert(keys::str_key("bob@xmpp.test"), alice.clone())
        .expect("swap");
    match store.login(&jid("bob@xmpp.test")) {
        Err(e @ Error::Corrupt { tree, .. }) => {
            assert_eq!(tree, keys::JID_LOGIN);
            assert!(!e.to_string().contains(PASSWORD), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        store.logins().is_err(),
        "a listing meets the moved record too"
    );

    let sessions = store
        .db()
        .open_tree(keys::ACCOUNTJIDDEVICE_SESSION)
        .expect("tree");
    let moved = keys::encode(&[Part::Str(ACCOUNT), Part::Str("bob@xmpp.test"), Part::U64(8)]);
    let session = sessions.iter().next().expect("a session").expect("read").1;
    sessions.insert(moved, session).expect("move");
    let e = store
        .omemo(ACCOUNT)
        .session(&bob(8))
        .expect_err("a moved session does not open");
    assert!(
        e.to_string().contains(keys::ACCOUNTJIDDEVICE_SESSION),
        "{e}"
    );

    let pending = store
        .db()
        .open_tree(keys::POSITION_PENDINGEVENT)
        .expect("tree");
    pending
        .insert(keys::encode(&[Part::U64(u64::MAX)]), alice)
        .expect("move into another tree");
    match store.pending_events() {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::POSITION_PENDINGEVENT),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_wrong_key_or_no_key_is_refused_and_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    write_secrets(&SledStore::open_with_key(&db, Some(&key())).expect("create sealed"));
    let before = settled_checksums(&db);
    assert!(before.keys().any(|f| f.ends_with(KEY_CHECK_FILE)));

    match SledStore::open_with_key(&db, Some(&other_key())) {
        Err(e @ Error::WrongKey) => assert!(e.to_string().contains("nothing was changed")),
        other => panic!("expected WrongKey, got {other:?}"),
    }
    assert_eq!(
        settled_checksums(&db),
        before,
        "a wrong key changed the files"
    );
    match SledStore::open(&db) {
        Err(e @ Error::KeyRequired) => {
            assert_eq!(e.to_string(), "the database is encrypted: set database.key");
        }
        other => panic!("expected KeyRequired, got {other:?}"),
    }
    assert_eq!(settled_checksums(&db), before, "no key changed the files");
    assert!(matches!(
        at_rest_state(&db, Some(&other_key())),
        Err(Error::WrongKey)
    ));
    assert!(matches!(at_rest_state(&db, None), Err(Error::KeyRequired)));

    assert_secrets_readable(&SledStore::open_with_key(&db, Some(&key())).expect("right key"));
}

#[test]
fn a_sealed_store_without_its_key_check_file_is_refused_with_or_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    write_secrets(&SledStore::open_with_key(&db, Some(&key())).expect("create sealed"));
    std::fs::remove_file(db.join(KEY_CHECK_FILE)).expect("lose the key-check file");
    for key in [None, Some(key())] {
        match SledStore::open_with_key(&db, key.as_ref()) {
            Err(Error::Corrupt { tree, reason }) => {
                assert_eq!(tree, keys::META);
                assert!(reason.contains(KEY_CHECK_FILE), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

/// A plain store with logins, OMEMO state of two accounts, pending events and the other trees.
fn plain_store_with_data(db: &Path) -> Vec<u64> {
    let store = SledStore::open(db).expect("create plain");
    write_secrets(&store);
    store
        .put_login(&login(
            "@bob:example.org",
            "bob@xmpp.test",
            "bob's password",
        ))
        .expect("put");
    store
        .omemo("bob@xmpp.test")
        .commit(&Changes {
            put_sessions: vec![(bob(9), b"bob's session".to_vec())],
            ..Changes::default()
        })
        .expect("commit");
    let gone = store.push_pending(&pending("$gone")).expect("push");
    let last = store.push_pending(&pending("$last")).expect("push");
    store.remove_pending(gone).expect("remove");
    store.mark_txn_processed("txn-1", 42).expect("mark");
    let ghost = ruma::user_id!("@interop_bob:example.org");
    store
        .put_ghost(ghost, &GhostRecord::default())
        .expect("ghost");
    let portal = PortalKey {
        login: jid(ACCOUNT),
        contact: jid("bob@xmpp.test"),
    };
    let record = PortalRecord {
        room: "!portal:example.org".try_into().expect("room"),
        state: PortalState::Accepted,
        created_ms: 3,
    };
    store.put_portal(&portal, &record).expect("portal");
    let mapped = MappedEvent {
        event: "$mapped".try_into().expect("event"),
        placeholder: false,
        ours: true,
        markable: false,
    };
    store.put_message(&portal, "m1", &mapped).expect("map");
    store
        .set_blocked(&jid(ACCOUNT), &jid("eve@xmpp.test"), true)
        .expect("block");
    store.flush().expect("flush");
    let positions = store.pending_events().expect("list");
    assert_eq!(positions.len(), 2);
    assert_eq!(positions[1].0, last);
    positions.into_iter().map(|(p, _)| p).collect()
}

fn assert_plain_data_readable(store: &SledStore) {
    let stored = store.login(&jid(ACCOUNT)).expect("read").expect("login");
    assert_eq!(stored.password, PASSWORD);
    let view = store.omemo(ACCOUNT);
    assert_eq!(view.own_identity().expect("read"), Some(own()));
    assert_eq!(view.prekey(1).expect("read"), Some(PREKEY.to_vec()));
    assert_eq!(view.signed_prekeys().expect("read"), vec![(1, spk())]);
    assert_eq!(view.session(&bob(7)).expect("read"), Some(SESSION.to_vec()));
    assert_eq!(
        store.omemo("bob@xmpp.test").session(&bob(9)).expect("read"),
        Some(b"bob's session".to_vec())
    );
    assert_eq!(store.logins().expect("list").len(), 2);
    let events: Vec<PendingEvent> = store
        .pending_events()
        .expect("list")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(events, vec![pending(PENDING_EVENT), pending("$last")]);
    assert!(store.txn_processed("txn-1").expect("txn"));
    let ghost = ruma::user_id!("@interop_bob:example.org");
    assert_eq!(
        store.ghost(ghost).expect("ghost"),
        Some(GhostRecord::default())
    );
    let portals = store.portals_of(&jid(ACCOUNT)).expect("portals");
    assert_eq!(portals.len(), 1);
    let event = ruma::event_id!("$mapped");
    assert_eq!(
        store.remote_of(event).expect("map").map(|(_, id)| id),
        Some("m1".to_owned())
    );
    assert!(
        store
            .is_blocked(&jid(ACCOUNT), &jid("eve@xmpp.test"))
            .expect("blocked")
    );
}

#[test]
fn a_plain_store_is_migrated_keeping_every_value_and_no_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    plain_store_with_data(&db);
    assert_eq!(
        at_rest_state(&db, Some(&key())).expect("state"),
        AtRest::Plain
    );
    std::fs::create_dir(sibling(&db, SEALING_SUFFIX)).expect("a stale sealed copy");
    {
        let store = SledStore::open_with_key(&db, Some(&key())).expect("migrate");
        assert_plain_data_readable(&store);
        let positions: Vec<u64> = store
            .pending_events()
            .expect("list")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let next = store.push_pending(&pending("$next")).expect("push");
        assert!(positions.iter().all(|p| *p < next), "{positions:?} {next}");
        store.remove_pending(next).expect("remove");
        store.flush().expect("flush");
    }
    assert_eq!(
        siblings(&db),
        Vec::<String>::new(),
        "no copy is left beside it"
    );
    assert_eq!(secrets_found(&db), Vec::<String>::new());
    assert!(matches!(SledStore::open(&db), Err(Error::KeyRequired)));
    let store = SledStore::open_with_key(&db, Some(&key())).expect("reopen: no second migration");
    assert_plain_data_readable(&store);
}

#[test]
fn a_migration_stopped_between_its_renames_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    plain_store_with_data(&db);
    build_sealed_copy(&db, &key()).expect("copy");
    std::fs::rename(&db, sibling(&db, PLAIN_OLD_SUFFIX)).expect("first rename");
    let store = SledStore::open_with_key(&db, Some(&key())).expect("finish");
    assert_plain_data_readable(&store);
    assert_eq!(siblings(&db), Vec::<String>::new());
    assert_eq!(secrets_found(&db), Vec::<String>::new());
}

#[test]
fn a_migration_stopped_before_its_copy_was_complete_is_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    plain_store_with_data(&db);
    build_sealed_copy(&db, &key()).expect("copy");
    std::fs::remove_file(sibling(&db, SEALING_SUFFIX).join(KEY_CHECK_FILE))
        .expect("as if the crash came before the key-check file");
    std::fs::rename(&db, sibling(&db, PLAIN_OLD_SUFFIX)).expect("first rename");
    {
        let store = SledStore::open(&db).expect("the plain store is back");
        assert_plain_data_readable(&store);
    }
    let store = SledStore::open_with_key(&db, Some(&key())).expect("migrate again");
    assert_plain_data_readable(&store);
    assert_eq!(siblings(&db), Vec::<String>::new());
}

#[test]
fn the_plain_copy_left_after_the_renames_is_removed_only_with_the_right_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    plain_store_with_data(&db);
    build_sealed_copy(&db, &key()).expect("copy");
    let plain_old = sibling(&db, PLAIN_OLD_SUFFIX);
    std::fs::rename(&db, &plain_old).expect("first rename");
    std::fs::rename(sibling(&db, SEALING_SUFFIX), &db).expect("second rename");
    assert!(matches!(
        SledStore::open_with_key(&db, Some(&other_key())),
        Err(Error::WrongKey)
    ));
    assert!(plain_old.exists(), "a wrong key removes nothing");
    let store = SledStore::open_with_key(&db, Some(&key())).expect("open");
    assert_plain_data_readable(&store);
    assert_eq!(siblings(&db), Vec::<String>::new());
}

#[test]
fn a_new_sealed_store_and_an_empty_directory_get_their_key_check_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    assert_eq!(at_rest_state(&db, None).expect("state"), AtRest::Missing);
    std::fs::create_dir(&db).expect("an empty directory");
    assert_eq!(at_rest_state(&db, None).expect("state"), AtRest::Missing);
    drop(SledStore::open_with_key(&db, Some(&key())).expect("create"));
    assert!(db.join(KEY_CHECK_FILE).exists());
    assert!(matches!(SledStore::open(&db), Err(Error::KeyRequired)));
}
