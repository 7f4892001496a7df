//! The sled store's own cases (the shared ones are in `conformance`).

use super::*;
use crate::store::{LoginRecord, LoginStore as _};

fn temp() -> (SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SledStore::open(dir.path()).expect("open a fresh database");
    (store, dir)
}

crate::store::conformance::store_conformance_tests!(temp());

const ALICE_JSON: &str = r#"{"registered":true,"displayname":"Alice"}"#;
const BARE_JSON: &str = r#"{"registered":false}"#;

/// Writes `version` as the schema version of the (closed) database at `path`, bypassing
/// `SledStore`, as a newer or older build would have.
fn force_schema_version(path: &Path, version: u32) {
    let db = super::open_db(path).expect("open raw sled");
    let meta = db.open_tree(keys::META).expect("open meta");
    meta.insert(
        keys::str_key(keys::SCHEMA_VERSION_KEY),
        &version.to_be_bytes()[..],
    )
    .expect("write schema version");
    db.flush().expect("flush raw sled");
}

#[test]
fn fresh_database_gets_current_schema_version() {
    let (store, _dir) = temp();
    let stored = store
        .meta
        .get(keys::str_key(keys::SCHEMA_VERSION_KEY))
        .expect("read meta")
        .expect("schema version written");
    assert_eq!(&*stored, &SCHEMA_VERSION.to_be_bytes()[..]);
}

#[test]
fn data_survives_close_and_reopen_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = ruma::user_id!("@alice:example.org");
    let ghost = ruma::user_id!("@_interop_bob:example.org");
    let room = ruma::room_id!("!mgmt:example.org");
    let record = GhostRecord {
        registered: true,
        displayname: Some("Bob".to_owned()),
    };
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.mark_txn_processed("txn-1", 42).expect("mark");
        store.set_management_room(alice, room).expect("set");
        store.put_ghost(ghost, &record).expect("put");
        store.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert!(store.txn_processed("txn-1").expect("read txn"));
    assert_eq!(store.prune_txns_before(42).expect("prune"), 0);
    assert_eq!(
        store.management_room(alice).expect("read"),
        Some(room.to_owned())
    );
    assert_eq!(
        store.management_room_owner(room).expect("read"),
        Some(alice.to_owned())
    );
    assert_eq!(store.ghost(ghost).expect("read ghost"), Some(record));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SledStore::open(dir.path()).expect("create"));
    force_schema_version(dir.path(), SCHEMA_VERSION + 1);
    match SledStore::open(dir.path()) {
        Err(Error::NewerSchema { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

fn stored_schema_version(store: &SledStore) -> u32 {
    let stored = store
        .meta
        .get(keys::str_key(keys::SCHEMA_VERSION_KEY))
        .expect("read meta")
        .expect("schema version present");
    decode_u32(&stored, keys::META).expect("a u32")
}

#[test]
fn every_catalogued_tree_is_opened_and_no_other() {
    let (store, _dir) = temp();
    let mut opened: Vec<String> = store
        .db
        .tree_names()
        .iter()
        .map(|name| String::from_utf8(name.to_vec()).expect("UTF-8 tree name"))
        .filter(|name| name != "__sled__default")
        .collect();
    opened.sort_unstable();
    let mut catalogue: Vec<&str> = keys::ALL_TREES.to_vec();
    catalogue.sort_unstable();
    assert_eq!(opened, catalogue);
}

#[test]
fn pending_positions_keep_growing_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pending = PendingEvent {
        room: "!r:x".try_into().expect("room id"),
        event: "$e".try_into().expect("event id"),
    };
    let first = {
        let store = SledStore::open(dir.path()).expect("create");
        let position = store.push_pending(&pending).expect("push");
        store.flush().expect("flush");
        position
    };
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.pending_events().expect("list"),
        vec![(first, pending.clone())]
    );
    assert!(store.push_pending(&pending).expect("push") > first);
}

#[test]
fn schema_2_is_migrated_to_the_current_schema_keeping_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let own = xmpp_omemo::omemo::OwnIdentity {
        device_id: xmpp_omemo::omemo::DeviceId::new(5).expect("a valid device id"),
        registration_id: 77,
        identity_key_pair: vec![1, 2, 3],
        next_prekey_id: 1,
        next_signed_prekey_id: 1,
    };
    {
        let store = SledStore::open(dir.path()).expect("create");
        store.mark_txn_processed("txn-1", 42).expect("mark");
        store
            .omemo("alice@xmpp.test")
            .commit(&xmpp_omemo::omemo::Changes {
                own_identity: Some(own.clone()),
                ..Default::default()
            })
            .expect("commit");
        store.flush().expect("flush");
    }
    force_schema_version(dir.path(), 2);
    let store = SledStore::open(dir.path()).expect("open a version 2 database");
    assert_eq!(stored_schema_version(&store), SCHEMA_VERSION);
    assert!(store.txn_processed("txn-1").expect("read txn"));
    assert_eq!(
        store.omemo("alice@xmpp.test").own_identity().expect("read"),
        Some(own)
    );
    assert_eq!(
        store.logins().expect("read"),
        Vec::new(),
        "login trees start empty"
    );
    store
        .put_login(&LoginRecord {
            matrix_user: ruma::owned_user_id!("@alice:example.org"),
            jid: crate::ids::RemoteUserId::parse("alice@xmpp.test").expect("a bare JID"),
            password: "pw".to_owned(),
            space: None,
            linked_ms: 1,
        })
        .expect("the login trees are usable");
}

#[test]
fn schema_1_is_migrated_to_the_current_schema_keeping_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ghost = ruma::user_id!("@_interop_bob:example.org");
    {
        let store = SledStore::open(dir.path()).expect("create");
        store.mark_txn_processed("txn-1", 42).expect("mark");
        store
            .put_ghost(ghost, &GhostRecord::default())
            .expect("put");
        store.flush().expect("flush");
    }
    force_schema_version(dir.path(), 1);
    let store = SledStore::open(dir.path()).expect("open a version 1 database");
    assert_eq!(stored_schema_version(&store), SCHEMA_VERSION);
    assert!(store.txn_processed("txn-1").expect("read txn"));
    assert_eq!(
        store.ghost(ghost).expect("read ghost"),
        Some(GhostRecord::default())
    );
    let omemo = store.omemo("alice@xmpp.test");
    assert_eq!(
        omemo.own_identity().expect("read"),
        None,
        "OMEMO trees start empty"
    );
}

/// Writes one entry to `tree` of a fresh raw database (no schema version), then opens it as a
/// store: refused, naming the meta tree.
fn assert_unversioned_data_is_refused(tree: &str, key: &str, value: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = super::open_db(dir.path()).expect("open raw sled");
        db.open_tree(tree)
            .expect("open tree")
            .insert(keys::str_key(key), value)
            .expect("insert");
        db.flush().expect("flush");
    }
    match SledStore::open(dir.path()) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::META),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn omemo_data_without_schema_version_is_refused() {
    assert_unversioned_data_is_refused(keys::ACCOUNTJIDDEVICE_SESSION, "a", b"s");
}

#[test]
fn login_data_without_schema_version_is_refused() {
    assert_unversioned_data_is_refused(keys::LOGINCONTACT_BLOCKED, "a@x", b"");
}

#[test]
fn older_schema_without_migration_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    force_schema_version(dir.path(), 0);
    match SledStore::open(dir.path()) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::META),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn data_without_schema_version_is_refused() {
    assert_unversioned_data_is_refused(keys::TXNID_PROCESSEDMS, "t", &0u64.to_be_bytes());
}

#[test]
fn ghost_record_json_snapshot() {
    let (store, _dir) = temp();
    let alice = ruma::user_id!("@_interop_alice:example.org");
    let bare = ruma::user_id!("@_interop_bare:example.org");
    let named = GhostRecord {
        registered: true,
        displayname: Some("Alice".to_owned()),
    };
    let unnamed = GhostRecord {
        registered: false,
        displayname: None,
    };
    assert_eq!(serde_json::to_string(&named).expect("encode"), ALICE_JSON);
    assert_eq!(serde_json::to_string(&unnamed).expect("encode"), BARE_JSON);
    store.put_ghost(alice, &named).expect("put");
    store.put_ghost(bare, &unnamed).expect("put");
    let raw = |user: &UserId| {
        store
            .ghostid_ghost
            .get(keys::str_key(user.as_str()))
            .expect("read raw")
            .expect("present")
    };
    assert_eq!(&*raw(alice), ALICE_JSON.as_bytes());
    assert_eq!(&*raw(bare), BARE_JSON.as_bytes());
    let decoded: GhostRecord = serde_json::from_str(ALICE_JSON).expect("decode");
    assert_eq!(decoded, named);
    let decoded: GhostRecord = serde_json::from_str(BARE_JSON).expect("decode");
    assert_eq!(decoded, unnamed);
}

#[test]
fn management_room_layout_snapshot() {
    let (store, _dir) = temp();
    let alice = ruma::user_id!("@alice:example.org");
    let room = ruma::room_id!("!mgmt:example.org");
    store.set_management_room(alice, room).expect("set");
    let fwd = store
        .userid_mgmtroomid
        .get(b"@alice:example.org\xFF")
        .expect("read");
    let rev = store
        .mgmtroomid_userid
        .get(b"!mgmt:example.org\xFF")
        .expect("read");
    assert_eq!(fwd.as_deref(), Some(&b"!mgmt:example.org"[..]));
    assert_eq!(rev.as_deref(), Some(&b"@alice:example.org"[..]));
    store.mark_txn_processed("t", 258).expect("mark");
    let at = store.txnid_processedms.get(b"t\xFF").expect("read");
    assert_eq!(at.as_deref(), Some(&[0, 0, 0, 0, 0, 0, 1, 2][..]));
}

#[test]
fn corrupt_values_are_errors_without_the_value() {
    let (store, _dir) = temp();
    let ghost = ruma::user_id!("@_interop_x:example.org");
    store
        .ghostid_ghost
        .insert(keys::str_key(ghost.as_str()), r#"{"registered":"hunter2"}"#)
        .expect("insert");
    match store.ghost(ghost) {
        Err(e @ Error::Corrupt { tree, .. }) => {
            assert_eq!(tree, keys::GHOSTID_GHOST);
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    store
        .txnid_processedms
        .insert(keys::str_key("t"), &b"abc"[..])
        .expect("insert");
    match store.prune_txns_before(1) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::TXNID_PROCESSEDMS),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let alice = ruma::user_id!("@alice:example.org");
    store
        .userid_mgmtroomid
        .insert(keys::str_key(alice.as_str()), "not-a-room")
        .expect("insert");
    match store.management_room(alice) {
        Err(e @ Error::Corrupt { tree, .. }) => {
            assert_eq!(tree, keys::USERID_MGMTROOMID);
            assert!(!e.to_string().contains("not-a-room"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn debug_shows_no_contents() {
    let (store, _dir) = temp();
    let ghost = ruma::user_id!("@_interop_secret:example.org");
    let record = GhostRecord {
        registered: true,
        displayname: Some("TopSecretName".to_owned()),
    };
    store.put_ghost(ghost, &record).expect("put");
    assert!(!format!("{store:?}").contains("TopSecretName"));
}

#[test]
fn a_portal_read_by_room_never_shows_another_rooms_record_while_it_moves() {
    use crate::ids::{PortalKey, RemoteUserId};
    use crate::store::{PortalRecord, PortalState, PortalStore as _};
    let (store, _dir) = temp();
    let store = std::sync::Arc::new(store);
    let key = PortalKey {
        login: RemoteUserId::parse("alice@xmpp.example").expect("jid"),
        contact: RemoteUserId::parse("bob@xmpp.example").expect("jid"),
    };
    let rooms: [ruma::OwnedRoomId; 2] = [
        "!one:hs.example".try_into().expect("room"),
        "!two:hs.example".try_into().expect("room"),
    ];
    let record = |room: &ruma::OwnedRoomId| PortalRecord {
        room: room.clone(),
        state: PortalState::Accepted,
        created_ms: 1,
    };
    store.put_portal(&key, &record(&rooms[0])).expect("put");
    let mover = {
        let (store, key, rooms) = (store.clone(), key.clone(), rooms.clone());
        std::thread::spawn(move || {
            for i in 0..300 {
                store
                    .put_portal(&key, &record(&rooms[(i + 1) % 2]))
                    .expect("move");
            }
        })
    };
    let mut seen = 0;
    while !mover.is_finished() {
        for room in &rooms {
            if let Some((found, portal)) = store.portal_by_room(room).expect("read") {
                assert_eq!(&portal.room, room, "a record of the room asked about");
                assert_eq!(found, key);
                seen += 1;
            }
        }
    }
    mover.join().expect("mover");
    assert!(seen > 0, "the reader saw the portal at least once");
}
