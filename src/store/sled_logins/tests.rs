//! Tests of the logins half of `SledStore`: value and key layout snapshots, durability across
//! reopen, atomicity of a failed login removal, and what errors and `Debug` may show.

use super::*;
use crate::store::{PortalState, Store as _};
use xmpp_omemo::omemo::{Changes, DeviceId, OwnIdentity};

const PASSWORD: &str = "hunter2-correct-horse";
const LOGIN_JSON: &str = r#"{"matrix_user":"@alice:example.org","jid":"alice@xmpp.test","password":"hunter2-correct-horse","space":"!space:example.org","linked_ms":1700000000000}"#;
const BARE_LOGIN_JSON: &str = r#"{"matrix_user":"@alice:example.org","jid":"alice@xmpp.test","password":"hunter2-correct-horse","linked_ms":7}"#;
const PORTAL_JSON: &str = r#"{"room":"!p:example.org","state":"request","created_ms":5}"#;
const MAPPED_JSON: &str = r#"{"event":"$e:example.org"}"#;
const PLACEHOLDER_JSON: &str = r#"{"event":"$e:example.org","placeholder":true}"#;

fn temp() -> (SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SledStore::open(dir.path()).expect("open a fresh database");
    (store, dir)
}

fn jid(s: &str) -> RemoteUserId {
    RemoteUserId::parse(s).expect("a valid bare JID")
}

fn login() -> LoginRecord {
    LoginRecord {
        matrix_user: ruma::owned_user_id!("@alice:example.org"),
        jid: jid("alice@xmpp.test"),
        password: PASSWORD.to_owned(),
        space: Some(ruma::owned_room_id!("!space:example.org")),
        linked_ms: 1_700_000_000_000,
    }
}

fn bob() -> PortalKey {
    PortalKey {
        login: jid("alice@xmpp.test"),
        contact: jid("bob@x"),
    }
}

fn portal() -> PortalRecord {
    PortalRecord {
        room: ruma::owned_room_id!("!p:example.org"),
        state: PortalState::Request,
        created_ms: 5,
    }
}

fn mapped(placeholder: bool) -> MappedEvent {
    MappedEvent {
        event: ruma::owned_event_id!("$e:example.org"),
        placeholder,
        ours: false,
        markable: false,
    }
}

fn own_identity() -> OwnIdentity {
    OwnIdentity {
        device_id: DeviceId::new(5).expect("a valid device id"),
        registration_id: 77,
        identity_key_pair: vec![1, 2, 3],
        next_prekey_id: 1,
        next_signed_prekey_id: 1,
    }
}

/// A login with a portal, a message, a block and OMEMO state, as the tests below expect.
fn populate(store: &SledStore) {
    store.put_login(&login()).expect("put login");
    store.put_portal(&bob(), &portal()).expect("put portal");
    store
        .put_message(&bob(), "m1", &mapped(false))
        .expect("put message");
    store
        .set_blocked(&bob().login, &jid("eve@x"), true)
        .expect("block");
    store
        .omemo("alice@xmpp.test")
        .commit(&Changes {
            own_identity: Some(own_identity()),
            ..Changes::default()
        })
        .expect("commit OMEMO");
}

fn assert_populated(store: &SledStore) {
    let alice = ruma::user_id!("@alice:example.org");
    assert_eq!(store.login(&bob().login).expect("read"), Some(login()));
    assert_eq!(store.login_of(alice).expect("read"), Some(login()));
    assert_eq!(store.logins().expect("read"), vec![login()]);
    assert_eq!(
        store.portal_by_room(&portal().room).expect("read"),
        Some((bob(), portal()))
    );
    assert_eq!(
        store.portals_of(&bob().login).expect("read"),
        vec![(bob(), portal())]
    );
    assert_eq!(
        store.event_of(&bob(), "m1").expect("read"),
        Some(mapped(false))
    );
    assert_eq!(
        store.remote_of(&mapped(false).event).expect("read"),
        Some((bob(), "m1".to_owned()))
    );
    assert_eq!(
        store.blocked_of(&bob().login).expect("read"),
        vec![jid("eve@x")]
    );
    assert_eq!(
        store.omemo("alice@xmpp.test").own_identity().expect("read"),
        Some(own_identity())
    );
}

#[test]
fn value_json_snapshots() {
    assert_eq!(serde_json::to_string(&login()).expect("encode"), LOGIN_JSON);
    let bare = LoginRecord {
        space: None,
        linked_ms: 7,
        ..login()
    };
    assert_eq!(
        serde_json::to_string(&bare).expect("encode"),
        BARE_LOGIN_JSON
    );
    assert_eq!(
        serde_json::from_str::<LoginRecord>(LOGIN_JSON).expect("decode"),
        login()
    );
    assert_eq!(
        serde_json::from_str::<LoginRecord>(BARE_LOGIN_JSON).expect("decode"),
        bare
    );
    assert_eq!(
        serde_json::to_string(&portal()).expect("encode"),
        PORTAL_JSON
    );
    assert_eq!(
        serde_json::from_str::<PortalRecord>(PORTAL_JSON).expect("decode"),
        portal()
    );
    let states: Vec<String> = [
        PortalState::Request,
        PortalState::Accepted,
        PortalState::Declined,
    ]
    .iter()
    .map(|s| serde_json::to_string(s).expect("encode"))
    .collect();
    assert_eq!(states, [r#""request""#, r#""accepted""#, r#""declined""#]);
    assert_eq!(
        serde_json::to_string(&mapped(false)).expect("encode"),
        MAPPED_JSON
    );
    assert_eq!(
        serde_json::to_string(&mapped(true)).expect("encode"),
        PLACEHOLDER_JSON
    );
    assert_eq!(
        serde_json::from_str::<MappedEvent>(MAPPED_JSON).expect("decode"),
        mapped(false)
    );
    assert_eq!(
        serde_json::from_str::<MappedEvent>(PLACEHOLDER_JSON).expect("decode"),
        mapped(true)
    );
}

#[test]
fn tree_layout_snapshot() {
    let (store, _dir) = temp();
    store.put_login(&login()).expect("put login");
    store.put_portal(&bob(), &portal()).expect("put portal");
    store
        .put_message(&bob(), "m1", &mapped(false))
        .expect("put message");
    store
        .set_blocked(&bob().login, &bob().contact, true)
        .expect("block");
    let t = &store.logins;
    let raw = |tree: &Tree, key: &[u8]| tree.get(key).expect("read raw").map(|v| v.to_vec());
    let portal_key = b"alice@xmpp.test\xFFbob@x\xFF";
    let message_key = b"alice@xmpp.test\xFFbob@x\xFFm1\xFF";
    assert_eq!(
        raw(&t.jid_login, b"alice@xmpp.test\xFF"),
        Some(LOGIN_JSON.as_bytes().to_vec())
    );
    assert_eq!(
        raw(&t.userid_jid, b"@alice:example.org\xFF"),
        Some(b"alice@xmpp.test".to_vec())
    );
    assert_eq!(
        raw(&t.portalkey_portal, portal_key),
        Some(PORTAL_JSON.as_bytes().to_vec())
    );
    assert_eq!(
        raw(&t.roomid_portalkey, b"!p:example.org\xFF"),
        Some(portal_key.to_vec())
    );
    assert_eq!(
        raw(&t.portalremoteid_event, message_key),
        Some(MAPPED_JSON.as_bytes().to_vec())
    );
    assert_eq!(
        raw(&t.eventid_portalremoteid, b"$e:example.org\xFF"),
        Some(message_key.to_vec())
    );
    assert_eq!(raw(&t.logincontact_blocked, portal_key), Some(Vec::new()));
    for tree in t.as_array() {
        assert_eq!(tree.len(), 1, "one entry per tree");
    }
}

#[test]
fn data_survives_close_and_reopen_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        populate(&store);
        store.flush().expect("flush");
    }
    {
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_populated(&store);
        assert!(store.remove_login(&bob().login).expect("remove"));
        store.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("reopen again");
    assert_eq!(store.logins().expect("read"), Vec::new());
    assert_eq!(store.portal_by_room(&portal().room).expect("read"), None);
    assert_eq!(store.remote_of(&mapped(false).event).expect("read"), None);
    assert!(store.blocked_of(&bob().login).expect("read").is_empty());
    assert_eq!(
        store.omemo("alice@xmpp.test").own_identity().expect("read"),
        None
    );
    assert!(store.logins.all_empty() && store.omemo.all_empty());
}

#[test]
fn a_failed_login_removal_changes_nothing() {
    let (store, _dir) = temp();
    populate(&store);
    let other = PortalKey {
        login: bob().login,
        contact: jid("carol@x"),
    };
    store
        .logins
        .portalremoteid_event
        .insert(message_key(&other, "m2"), "not json")
        .expect("insert a corrupt entry");
    match store.remove_login(&bob().login) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::PORTALREMOTEID_EVENT),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_populated(&store);
    let relinked = LoginRecord {
        jid: jid("alice@elsewhere.test"),
        ..login()
    };
    match store.put_login(&relinked) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::PORTALREMOTEID_EVENT),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_populated(&store);
    assert_eq!(store.login(&relinked.jid).expect("read"), None);
}

#[test]
fn password_is_in_no_debug_or_error() {
    let (store, _dir) = temp();
    populate(&store);
    let shown = [
        format!("{:?}", login()),
        format!("{:?}", store.login(&bob().login)),
        format!("{:?}", store.login_of(ruma::user_id!("@alice:example.org"))),
        format!("{:?}", store.logins()),
        format!("{store:?}"),
    ];
    for text in &shown {
        assert!(!text.contains(PASSWORD), "{text}");
    }
    assert!(shown[0].contains("alice@xmpp.test"), "{}", shown[0]);

    let corrupt = [
        LOGIN_JSON.replace("1700000000000", r#""hunter2-correct-horse""#),
        LOGIN_JSON.replace(r#""hunter2-correct-horse""#, "hunter2-correct-horse"),
        LOGIN_JSON.replace(r#""password""#, r#""hunter2-correct-horse""#),
        LOGIN_JSON.replace('}', ""),
    ];
    for json in corrupt {
        store
            .logins
            .jid_login
            .insert(keys::str_key("alice@xmpp.test"), json.as_bytes())
            .expect("insert");
        let results = [
            store.login(&bob().login).map(|_| ()),
            store
                .login_of(ruma::user_id!("@alice:example.org"))
                .map(|_| ()),
            store.logins().map(|_| ()),
            store.remove_login(&bob().login).map(|_| ()),
            store.put_login(&login()).map(|_| ()),
        ];
        for result in results {
            let e = result.expect_err("a corrupt login is an error");
            assert!(
                matches!(
                    e,
                    Error::Corrupt {
                        tree: keys::JID_LOGIN,
                        ..
                    }
                ),
                "{e:?}"
            );
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains(PASSWORD), "{text}");
            }
        }
    }
}

#[test]
fn corrupt_entries_are_errors_naming_the_tree_not_the_value() {
    let (store, _dir) = temp();
    let t = &store.logins;
    let alice = ruma::user_id!("@alice:example.org");
    t.userid_jid
        .insert(keys::str_key(alice.as_str()), &b"\xC3\x28"[..])
        .expect("insert");
    match store.login_of(alice) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::USERID_JID),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let room = ruma::room_id!("!p:example.org");
    t.roomid_portalkey
        .insert(keys::str_key(room.as_str()), portal_key(&bob()))
        .expect("insert");
    t.portalkey_portal
        .insert(portal_key(&bob()), r#"{"room":"secret-room"}"#)
        .expect("insert");
    for result in [
        store.portal_by_room(room).map(|_| ()),
        store.portal(&bob()).map(|_| ()),
        store.portals_of(&bob().login).map(|_| ()),
    ] {
        match result {
            Err(e @ Error::Corrupt { tree, .. }) => {
                assert_eq!(tree, keys::PORTALKEY_PORTAL);
                assert!(!e.to_string().contains("secret-room"), "{e}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    let bad_jid = keys::encode(&[Part::Str("a@x"), Part::Str("not a jid")]);
    t.logincontact_blocked
        .insert(bad_jid, &[][..])
        .expect("insert");
    match store.blocked_of(&jid("a@x")) {
        Err(e @ Error::Corrupt { tree, .. }) => {
            assert_eq!(tree, keys::LOGINCONTACT_BLOCKED);
            assert!(!e.to_string().contains("not a jid"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let event = ruma::event_id!("$e:example.org");
    t.eventid_portalremoteid
        .insert(keys::str_key(event.as_str()), &b"a@x\xFFbob@x\xFF"[..])
        .expect("insert");
    match store.remote_of(event) {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, keys::EVENTID_PORTALREMOTEID),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_new_mapping_half_written_reads_as_none_both_ways_and_completes() {
    use crate::store::MessageMap as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let portal = PortalKey {
        login: RemoteUserId::parse("alice@xmpp.example").expect("jid"),
        contact: RemoteUserId::parse("bob@xmpp.example").expect("jid"),
    };
    let sent = |event: &ruma::OwnedEventId| MappedEvent {
        event: event.clone(),
        placeholder: false,
        ours: true,
        markable: false,
    };
    // The state a crash between put_message's two writes leaves: the reverse entry alone.
    let reverse_only = |store: &SledStore, remote: &str, mapped: &MappedEvent| {
        let entry = MapEntry::new(&portal, remote, mapped).expect("encode");
        store
            .logins
            .eventid_portalremoteid
            .insert(entry.event_key.as_slice(), entry.fwd_key.as_slice())
            .expect("write the reverse entry");
    };
    let event: ruma::OwnedEventId = "$sent:hs.example".try_into().expect("event");
    let mapped = sent(&event);
    {
        let store = SledStore::open(dir.path()).expect("open");
        reverse_only(&store, "origin-1", &mapped);
        store.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.remote_of(&event).expect("read"), None);
    assert_eq!(store.event_of(&portal, "origin-1").expect("read"), None);

    store
        .put_message(&portal, "origin-1", &mapped)
        .expect("map it again, as a restart's resend does");
    assert_eq!(
        store.remote_of(&event).expect("read"),
        Some((portal.clone(), "origin-1".to_owned()))
    );
    assert_eq!(
        store.event_of(&portal, "origin-1").expect("read"),
        Some(mapped)
    );

    // A reverse entry left by a crash, whose remote id is then mapped to another event, is
    // not believed either.
    let stale: ruma::OwnedEventId = "$lost:hs.example".try_into().expect("event");
    reverse_only(&store, "origin-2", &sent(&stale));
    let other = sent(&"$other:hs.example".try_into().expect("event"));
    store
        .put_message(&portal, "origin-2", &other)
        .expect("map the id to another event");
    assert_eq!(store.remote_of(&stale).expect("read"), None);
    assert_eq!(
        store.remote_of(&other.event).expect("read"),
        Some((portal.clone(), "origin-2".to_owned()))
    );
}
