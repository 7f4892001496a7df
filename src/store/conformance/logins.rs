//! The login, portal, message map and block list cases of the conformance suite.

/// The cases of `LoginStore`, `PortalStore`, `MessageMap` and `BlockStore`, in a child module
/// `logins` of the module that expanded `store_conformance_tests!` (they use its `fixture()`).
macro_rules! login_conformance_tests {
    () => {
        mod logins {
            use super::{Store, fixture};
            use ::xmpp_omemo::omemo::{Changes, DeviceAddress, DeviceId, DeviceList, OwnIdentity};
            use $crate::ids::{PortalKey, RemoteUserId};
            use $crate::store::{
                ArchiveStore as _, BlockStore as _, LoginRecord, LoginStore as _, MappedEvent,
                MessageMap as _, PortalRecord, PortalState, PortalStore as _,
            };

            fn jid(s: &str) -> RemoteUserId {
                RemoteUserId::parse(s).expect("a valid bare JID")
            }

            fn jids(all: &[&str]) -> Vec<RemoteUserId> {
                all.iter().map(|s| jid(s)).collect()
            }

            fn key(login: &str, contact: &str) -> PortalKey {
                PortalKey {
                    login: jid(login),
                    contact: jid(contact),
                }
            }

            fn user(s: &str) -> ruma::OwnedUserId {
                ruma::UserId::parse(s).expect("a valid user ID")
            }

            fn room(s: &str) -> ruma::OwnedRoomId {
                ruma::RoomId::parse(s).expect("a valid room ID")
            }

            fn event(s: &str) -> ruma::OwnedEventId {
                ruma::EventId::parse(s).expect("a valid event ID")
            }

            fn login(matrix_user: &str, account: &str) -> LoginRecord {
                LoginRecord {
                    matrix_user: user(matrix_user),
                    jid: jid(account),
                    password: format!("password of {account}"),
                    space: None,
                    linked_ms: 1_700_000_000_000,
                }
            }

            fn portal(room_id: &str, state: PortalState) -> PortalRecord {
                PortalRecord {
                    room: room(room_id),
                    state,
                    created_ms: 5,
                }
            }

            fn mapped(event_id: &str, placeholder: bool) -> MappedEvent {
                MappedEvent {
                    event: event(event_id),
                    placeholder,
                    ours: false,
                    markable: false,
                }
            }

            fn omemo_state(n: u8) -> Changes {
                let device = DeviceId::new(7).expect("a valid device id");
                Changes {
                    own_identity: Some(OwnIdentity {
                        device_id: device,
                        registration_id: u32::from(n),
                        identity_key_pair: vec![n; 4],
                        next_prekey_id: 2,
                        next_signed_prekey_id: 1,
                    }),
                    put_prekeys: vec![(1, vec![n])],
                    put_sessions: vec![(DeviceAddress::new("bob@x", device), vec![n])],
                    put_device_lists: vec![(
                        "bob@x".to_owned(),
                        DeviceList {
                            devices: vec![device],
                            updated_ms: 1,
                        },
                    )],
                    ..Changes::default()
                }
            }

            /// Writes everything scoped to `account` that `remove_login` must take: two portals
            /// (rooms named after `tag`), a message in each, a block and OMEMO state.
            fn populate(store: &impl Store, account: &str, tag: &str, n: u8) {
                for contact in ["bob@x", "carol@x"] {
                    let k = key(account, contact);
                    let local = contact.split('@').next().expect("a localpart");
                    let r = format!("!{tag}-{local}:hs.example");
                    store
                        .put_portal(&k, &portal(&r, PortalState::Accepted))
                        .expect("put portal");
                    let e = format!("${tag}-{local}:hs.example");
                    store
                        .put_message(&k, "m1", &mapped(&e, false))
                        .expect("put message");
                }
                store
                    .set_blocked(&jid(account), &jid("eve@x"), true)
                    .expect("block");
                store
                    .omemo(account)
                    .commit(&omemo_state(n))
                    .expect("commit OMEMO");
            }

            /// Asserts that what `populate(store, account, tag, n)` wrote is all there
            /// (`present`) or all gone.
            fn assert_scoped(store: &impl Store, account: &str, tag: &str, n: u8, present: bool) {
                let mut portals = Vec::new();
                for contact in ["bob@x", "carol@x"] {
                    let k = key(account, contact);
                    let local = contact.split('@').next().expect("a localpart");
                    let r = room(&format!("!{tag}-{local}:hs.example"));
                    let p = portal(r.as_str(), PortalState::Accepted);
                    assert_eq!(store.portal(&k).expect("read"), present.then(|| p.clone()));
                    assert_eq!(
                        store.portal_by_room(&r).expect("read"),
                        present.then(|| (k.clone(), p.clone()))
                    );
                    portals.push((k.clone(), p));
                    let e = event(&format!("${tag}-{local}:hs.example"));
                    assert_eq!(
                        store.event_of(&k, "m1").expect("read"),
                        present.then(|| mapped(e.as_str(), false))
                    );
                    assert_eq!(
                        store.remote_of(&e).expect("read"),
                        present.then(|| (k.clone(), "m1".to_owned()))
                    );
                }
                let expected = if present { portals } else { Vec::new() };
                assert_eq!(store.portals_of(&jid(account)).expect("read"), expected);
                assert_eq!(
                    store
                        .is_blocked(&jid(account), &jid("eve@x"))
                        .expect("read"),
                    present
                );
                assert_eq!(
                    store.blocked_of(&jid(account)).expect("read"),
                    if present {
                        jids(&["eve@x"])
                    } else {
                        Vec::new()
                    }
                );
                let view = store.omemo(account);
                let own = omemo_state(n).own_identity;
                assert_eq!(view.own_identity().expect("read"), own.filter(|_| present));
                let prekeys: Vec<u32> = if present { vec![1] } else { Vec::new() };
                assert_eq!(view.prekey_ids().expect("read"), prekeys);
                assert_eq!(
                    view.session_devices("bob@x").expect("read").len(),
                    usize::from(present)
                );
                assert_eq!(view.device_list("bob@x").expect("read").is_some(), present);
            }

            #[test]
            fn login_unknown_is_none() {
                let (store, _guard) = fixture();
                assert_eq!(store.login(&jid("nobody@x")).expect("read"), None);
                assert_eq!(
                    store.login_of(&user("@nobody:hs.example")).expect("read"),
                    None
                );
                assert!(store.logins().expect("read").is_empty());
                assert!(
                    !store
                        .remove_login(&jid("nobody@x"))
                        .expect("remove nothing")
                );
            }

            #[test]
            fn login_put_then_get_both_directions() {
                let (store, _guard) = fixture();
                let alice = login("@alice:hs.example", "alice@x");
                let mut bob = login("@bob:hs.example", "bob@x");
                bob.space = Some(room("!space:hs.example"));
                store.put_login(&alice).expect("put alice");
                store.put_login(&bob).expect("put bob");
                assert_eq!(
                    store.login(&jid("alice@x")).expect("read"),
                    Some(alice.clone())
                );
                assert_eq!(store.login(&jid("bob@x")).expect("read"), Some(bob.clone()));
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    Some(alice.clone())
                );
                assert_eq!(
                    store.login_of(&user("@bob:hs.example")).expect("read"),
                    Some(bob.clone())
                );
                assert_eq!(store.login(&jid("alice@xy")).expect("read"), None);
                assert_eq!(store.logins().expect("read"), vec![alice, bob]);
            }

            #[test]
            fn logins_are_ordered_by_jid() {
                let (store, _guard) = fixture();
                let accounts = ["b@x", "a@xy", "a@x.y", "a@x", "a@x-"];
                for (i, account) in accounts.iter().enumerate() {
                    store
                        .put_login(&login(&format!("@u{i}:hs.example"), account))
                        .expect("put");
                }
                let listed: Vec<RemoteUserId> = store
                    .logins()
                    .expect("read")
                    .into_iter()
                    .map(|l| l.jid)
                    .collect();
                assert_eq!(listed, jids(&["a@x", "a@x-", "a@x.y", "a@xy", "b@x"]));
            }

            #[test]
            fn login_put_again_updates_and_keeps_scoped_data() {
                let (store, _guard) = fixture();
                store
                    .put_login(&login("@alice:hs.example", "a@x"))
                    .expect("put");
                populate(&store, "a@x", "one", 1);
                let mut updated = login("@alice:hs.example", "a@x");
                updated.password = "a new password".to_owned();
                updated.space = Some(room("!space:hs.example"));
                store.put_login(&updated).expect("update");
                assert_eq!(
                    store.login(&jid("a@x")).expect("read"),
                    Some(updated.clone())
                );
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    Some(updated.clone())
                );
                assert_eq!(store.logins().expect("read"), vec![updated]);
                assert_scoped(&store, "a@x", "one", 1, true);
            }

            #[test]
            fn login_put_with_another_jid_replaces_the_users_login_and_its_data() {
                let (store, _guard) = fixture();
                store
                    .put_login(&login("@alice:hs.example", "a@x"))
                    .expect("put a@x");
                populate(&store, "a@x", "one", 1);
                let carol = login("@carol:hs.example", "a@xy");
                store.put_login(&carol).expect("put a@xy");
                populate(&store, "a@xy", "two", 2);

                let relinked = login("@alice:hs.example", "alice@x");
                store.put_login(&relinked).expect("relink alice");
                assert_eq!(store.login(&jid("a@x")).expect("read"), None);
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    Some(relinked.clone())
                );
                assert_eq!(store.logins().expect("read"), vec![carol.clone(), relinked]);
                assert_scoped(&store, "a@x", "one", 1, false);
                assert_eq!(
                    store.login_of(&user("@carol:hs.example")).expect("read"),
                    Some(carol)
                );
                assert_scoped(&store, "a@xy", "two", 2, true);
            }

            #[test]
            fn login_jid_moved_to_another_user() {
                let (store, _guard) = fixture();
                store
                    .put_login(&login("@alice:hs.example", "j@x"))
                    .expect("put alice");
                populate(&store, "j@x", "one", 1);
                let bob = login("@bob:hs.example", "j@x");
                store.put_login(&bob).expect("move to bob");
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    None
                );
                assert_eq!(
                    store.login_of(&user("@bob:hs.example")).expect("read"),
                    Some(bob.clone())
                );
                assert_eq!(store.login(&jid("j@x")).expect("read"), Some(bob.clone()));
                assert_eq!(store.logins().expect("read"), vec![bob]);
                // Only the previous user's entry goes: what is scoped to the JID stays with it.
                assert_scoped(&store, "j@x", "one", 1, true);
            }

            #[test]
            fn login_jid_moved_to_a_user_who_had_another_login() {
                let (store, _guard) = fixture();
                store
                    .put_login(&login("@alice:hs.example", "j@x"))
                    .expect("put alice");
                populate(&store, "j@x", "one", 1);
                store
                    .put_login(&login("@bob:hs.example", "k@x"))
                    .expect("put bob");
                populate(&store, "k@x", "two", 2);
                let bob = login("@bob:hs.example", "j@x");
                store.put_login(&bob).expect("move j@x to bob");
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    None
                );
                assert_eq!(
                    store.login_of(&user("@bob:hs.example")).expect("read"),
                    Some(bob.clone())
                );
                assert_eq!(store.login(&jid("k@x")).expect("read"), None);
                assert_eq!(store.logins().expect("read"), vec![bob]);
                assert_scoped(&store, "k@x", "two", 2, false);
                assert_scoped(&store, "j@x", "one", 1, true);
            }

            #[test]
            fn login_concurrent_puts_for_one_user_leave_one_login() {
                let (store, _guard) = fixture();
                let store = &store;
                std::thread::scope(|s| {
                    for t in 0..4 {
                        s.spawn(move || {
                            for i in 0..25 {
                                let account = format!("a{t}-{i}@x");
                                store
                                    .put_login(&login("@alice:hs.example", &account))
                                    .expect("put");
                            }
                        });
                    }
                });
                let logins = store.logins().expect("read");
                assert_eq!(logins.len(), 1, "{logins:?}");
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    logins.first().cloned()
                );
            }

            #[test]
            fn remove_login_removes_everything_of_that_login_only() {
                let (store, _guard) = fixture();
                store
                    .put_login(&login("@alice:hs.example", "a@x"))
                    .expect("put a@x");
                populate(&store, "a@x", "one", 1);
                let carol = login("@carol:hs.example", "a@xy");
                store.put_login(&carol).expect("put a@xy");
                populate(&store, "a@xy", "two", 2);
                // Scoped to a@xy, naming a@x as the contact: not a@x's.
                let k = key("a@xy", "a@x");
                let p = portal("!contact:hs.example", PortalState::Request);
                store.put_portal(&k, &p).expect("put portal");
                store
                    .put_message(&k, "m1", &mapped("$contact:hs.example", true))
                    .expect("put message");
                store
                    .set_blocked(&jid("a@xy"), &jid("a@x"), true)
                    .expect("block");

                assert!(store.remove_login(&jid("a@x")).expect("remove"));
                assert_eq!(store.login(&jid("a@x")).expect("read"), None);
                assert_eq!(
                    store.login_of(&user("@alice:hs.example")).expect("read"),
                    None
                );
                assert_scoped(&store, "a@x", "one", 1, false);

                assert_eq!(store.logins().expect("read"), vec![carol.clone()]);
                assert_eq!(
                    store.login_of(&user("@carol:hs.example")).expect("read"),
                    Some(carol)
                );
                assert_eq!(store.portal(&k).expect("read"), Some(p.clone()));
                assert_eq!(
                    store.portal_by_room(&p.room).expect("read"),
                    Some((k.clone(), p))
                );
                assert_eq!(
                    store
                        .remote_of(&event("$contact:hs.example"))
                        .expect("read"),
                    Some((k.clone(), "m1".to_owned()))
                );
                assert!(store.is_blocked(&jid("a@xy"), &jid("a@x")).expect("read"));
                assert_eq!(store.portals_of(&jid("a@xy")).expect("read").len(), 3);
                assert_eq!(
                    store.blocked_of(&jid("a@xy")).expect("read"),
                    jids(&["a@x", "eve@x"])
                );
                let view = store.omemo("a@xy");
                assert_eq!(
                    view.own_identity().expect("read"),
                    omemo_state(2).own_identity
                );

                assert!(!store.remove_login(&jid("a@x")).expect("remove again"));
                store
                    .put_login(&login("@alice:hs.example", "a@x"))
                    .expect("link again");
                assert!(store.portals_of(&jid("a@x")).expect("read").is_empty());
                assert_eq!(store.omemo("a@x").own_identity().expect("read"), None);
            }

            #[test]
            fn remove_login_without_a_login_changes_nothing() {
                let (store, _guard) = fixture();
                // `remove_login` removes "the login and everything scoped to it": without a
                // login there is nothing to remove, even if state was written for the JID.
                populate(&store, "a@x", "one", 1);
                assert!(!store.remove_login(&jid("a@x")).expect("remove"));
                assert_scoped(&store, "a@x", "one", 1, true);
            }

            #[test]
            fn portal_unknown_is_none() {
                let (store, _guard) = fixture();
                let k = key("a@x", "bob@x");
                assert_eq!(store.portal(&k).expect("read"), None);
                assert_eq!(
                    store.portal_by_room(&room("!r:hs.example")).expect("read"),
                    None
                );
                assert!(store.portals_of(&jid("a@x")).expect("read").is_empty());
                store.remove_portal(&k).expect("removing nothing is fine");
            }

            #[test]
            fn portal_put_then_get_both_directions() {
                let (store, _guard) = fixture();
                let k1 = key("a@x", "bob@x");
                let k2 = key("a@xy", "bob@x");
                let p1 = portal("!one:hs.example", PortalState::Request);
                let p2 = portal("!two:hs.example", PortalState::Declined);
                store.put_portal(&k1, &p1).expect("put");
                store.put_portal(&k2, &p2).expect("put");
                assert_eq!(store.portal(&k1).expect("read"), Some(p1.clone()));
                assert_eq!(store.portal(&k2).expect("read"), Some(p2.clone()));
                assert_eq!(store.portal(&key("a@x", "bob@xy")).expect("read"), None);
                assert_eq!(
                    store.portal_by_room(&p1.room).expect("read"),
                    Some((k1.clone(), p1))
                );
                assert_eq!(
                    store.portal_by_room(&p2.room).expect("read"),
                    Some((k2.clone(), p2))
                );
            }

            #[test]
            fn portal_put_with_a_new_room_unlinks_the_old_room() {
                let (store, _guard) = fixture();
                let k = key("a@x", "bob@x");
                let old = portal("!old:hs.example", PortalState::Request);
                store.put_portal(&k, &old).expect("put");
                let accepted = portal("!old:hs.example", PortalState::Accepted);
                store
                    .put_portal(&k, &accepted)
                    .expect("update state, same room");
                assert_eq!(
                    store.portal_by_room(&old.room).expect("read"),
                    Some((k.clone(), accepted))
                );
                let new = portal("!new:hs.example", PortalState::Accepted);
                store.put_portal(&k, &new).expect("move to a new room");
                assert_eq!(store.portal(&k).expect("read"), Some(new.clone()));
                assert_eq!(
                    store.portal_by_room(&new.room).expect("read"),
                    Some((k.clone(), new.clone()))
                );
                assert_eq!(store.portal_by_room(&old.room).expect("read"), None);
                assert_eq!(store.portals_of(&jid("a@x")).expect("read"), vec![(k, new)]);
            }

            #[test]
            fn portal_room_reassigned_to_another_key() {
                let (store, _guard) = fixture();
                let k1 = key("a@x", "bob@x");
                let k2 = key("a@x", "carol@x");
                let p = portal("!shared:hs.example", PortalState::Request);
                store.put_portal(&k1, &p).expect("put k1");
                store.put_portal(&k2, &p).expect("put k2");
                assert_eq!(store.portal(&k1).expect("read"), None);
                assert_eq!(store.portal(&k2).expect("read"), Some(p.clone()));
                assert_eq!(
                    store.portal_by_room(&p.room).expect("read"),
                    Some((k2.clone(), p.clone()))
                );
                assert_eq!(store.portals_of(&jid("a@x")).expect("read"), vec![(k2, p)]);
            }

            #[test]
            fn portal_remove_unlinks_both_directions() {
                let (store, _guard) = fixture();
                let k1 = key("a@x", "bob@x");
                let k2 = key("a@x", "carol@x");
                let p1 = portal("!one:hs.example", PortalState::Accepted);
                let p2 = portal("!two:hs.example", PortalState::Accepted);
                store.put_portal(&k1, &p1).expect("put");
                store.put_portal(&k2, &p2).expect("put");
                store.remove_portal(&k1).expect("remove");
                assert_eq!(store.portal(&k1).expect("read"), None);
                assert_eq!(store.portal_by_room(&p1.room).expect("read"), None);
                assert_eq!(
                    store.portal_by_room(&p2.room).expect("read"),
                    Some((k2.clone(), p2.clone()))
                );
                assert_eq!(store.portals_of(&jid("a@x")).expect("read"), vec![(k2, p2)]);
                store.remove_portal(&k1).expect("remove again");
                store.put_portal(&k1, &p1).expect("put after remove");
                assert_eq!(
                    store.portal_by_room(&p1.room).expect("read"),
                    Some((k1, p1))
                );
            }

            #[test]
            fn portals_of_is_ordered_by_contact_and_isolated_by_login() {
                let (store, _guard) = fixture();
                let contacts = ["carol@x", "bob@xy", "bob@x.y", "bob@x", "bob@x-"];
                for (i, contact) in contacts.iter().enumerate() {
                    let p = portal(&format!("!a{i}:hs.example"), PortalState::Accepted);
                    store.put_portal(&key("a@x", contact), &p).expect("put");
                }
                for (i, login) in ["a@xy", "a@x.y", "b@x"].iter().enumerate() {
                    let p = portal(&format!("!l{i}:hs.example"), PortalState::Request);
                    store.put_portal(&key(login, "bob@x"), &p).expect("put");
                }
                let listed: Vec<RemoteUserId> = store
                    .portals_of(&jid("a@x"))
                    .expect("read")
                    .into_iter()
                    .map(|(k, _)| {
                        assert_eq!(k.login, jid("a@x"));
                        k.contact
                    })
                    .collect();
                assert_eq!(
                    listed,
                    jids(&["bob@x", "bob@x-", "bob@x.y", "bob@xy", "carol@x"])
                );
                let of_xy = store.portals_of(&jid("a@xy")).expect("read");
                assert_eq!(
                    of_xy,
                    vec![(
                        key("a@xy", "bob@x"),
                        portal("!l0:hs.example", PortalState::Request)
                    )]
                );
                assert!(store.portals_of(&jid("x")).expect("read").is_empty());
            }

            #[test]
            fn message_unknown_is_none() {
                let (store, _guard) = fixture();
                assert_eq!(
                    store.event_of(&key("a@x", "bob@x"), "m1").expect("read"),
                    None
                );
                assert_eq!(
                    store.remote_of(&event("$e:hs.example")).expect("read"),
                    None
                );
            }

            #[test]
            fn message_put_then_get_both_directions() {
                let (store, _guard) = fixture();
                let k1 = key("a@x", "bob@x");
                let k2 = key("a@x", "bob@xy");
                let k3 = key("a@xy", "bob@x");
                let puts = [
                    (&k1, "m1", "$1:hs.example"),
                    (&k1, "m10", "$10:hs.example"),
                    (&k1, "", "$empty:hs.example"),
                    (&k2, "m1", "$2:hs.example"),
                    (&k3, "m1", "$3:hs.example"),
                ];
                for (k, remote, e) in puts {
                    store
                        .put_message(k, remote, &mapped(e, false))
                        .expect("put");
                }
                for (k, remote, e) in puts {
                    assert_eq!(
                        store.event_of(k, remote).expect("read"),
                        Some(mapped(e, false))
                    );
                    assert_eq!(
                        store.remote_of(&event(e)).expect("read"),
                        Some((k.clone(), remote.to_owned()))
                    );
                }
                assert_eq!(store.event_of(&k1, "m").expect("read"), None);
                assert_eq!(store.event_of(&k1, "m100").expect("read"), None);
                assert_eq!(
                    store.event_of(&key("a@xy", "bob@xy"), "m1").expect("read"),
                    None
                );
            }

            #[test]
            fn message_placeholder_replaced_by_real_keeps_one_reverse_entry() {
                let (store, _guard) = fixture();
                let k = key("a@x", "bob@x");
                store
                    .put_message(&k, "m1", &mapped("$placeholder:hs.example", true))
                    .expect("put placeholder");
                assert_eq!(
                    store.event_of(&k, "m1").expect("read"),
                    Some(mapped("$placeholder:hs.example", true))
                );
                store
                    .put_message(&k, "m1", &mapped("$real:hs.example", false))
                    .expect("replace");
                assert_eq!(
                    store.event_of(&k, "m1").expect("read"),
                    Some(mapped("$real:hs.example", false))
                );
                assert_eq!(
                    store.remote_of(&event("$real:hs.example")).expect("read"),
                    Some((k.clone(), "m1".to_owned()))
                );
                assert_eq!(
                    store
                        .remote_of(&event("$placeholder:hs.example"))
                        .expect("read"),
                    None
                );
                // Clearing the flag on the same event keeps its reverse entry.
                store
                    .put_message(&k, "m2", &mapped("$same:hs.example", true))
                    .expect("put placeholder");
                store
                    .put_message(&k, "m2", &mapped("$same:hs.example", false))
                    .expect("clear the flag");
                assert_eq!(
                    store.event_of(&k, "m2").expect("read"),
                    Some(mapped("$same:hs.example", false))
                );
                assert_eq!(
                    store.remote_of(&event("$same:hs.example")).expect("read"),
                    Some((k, "m2".to_owned()))
                );
            }

            #[test]
            fn message_event_mapped_again_keeps_its_latest_reverse_entry() {
                let (store, _guard) = fixture();
                let k = key("a@x", "bob@x");
                let e = mapped("$e:hs.example", false);
                store.put_message(&k, "first", &e).expect("put");
                store.put_message(&k, "second", &e).expect("put again");
                assert_eq!(
                    store.remote_of(&e.event).expect("read"),
                    Some((k.clone(), "second".to_owned()))
                );
                assert_eq!(store.event_of(&k, "first").expect("read"), Some(e.clone()));
                // Replacing the first mapping must not unlink the event from the second.
                store
                    .put_message(&k, "first", &mapped("$other:hs.example", false))
                    .expect("replace first");
                assert_eq!(
                    store.remote_of(&e.event).expect("read"),
                    Some((k.clone(), "second".to_owned()))
                );
                assert_eq!(
                    store.remote_of(&event("$other:hs.example")).expect("read"),
                    Some((k, "first".to_owned()))
                );
            }

            #[test]
            fn block_unknown_is_not_blocked() {
                let (store, _guard) = fixture();
                assert!(!store.is_blocked(&jid("a@x"), &jid("bob@x")).expect("read"));
                assert!(store.blocked_of(&jid("a@x")).expect("read").is_empty());
                store
                    .set_blocked(&jid("a@x"), &jid("bob@x"), false)
                    .expect("unblocking nothing is fine");
                assert!(store.blocked_of(&jid("a@x")).expect("read").is_empty());
            }

            #[test]
            fn block_set_and_unset() {
                let (store, _guard) = fixture();
                let (a, bob, carol) = (jid("a@x"), jid("bob@x"), jid("carol@x"));
                store.set_blocked(&a, &bob, true).expect("block");
                store.set_blocked(&a, &bob, true).expect("block again");
                store.set_blocked(&a, &carol, true).expect("block");
                assert!(store.is_blocked(&a, &bob).expect("read"));
                assert!(!store.is_blocked(&bob, &a).expect("read"), "not symmetric");
                assert_eq!(
                    store.blocked_of(&a).expect("read"),
                    vec![bob.clone(), carol.clone()]
                );
                store.set_blocked(&a, &bob, false).expect("unblock");
                assert!(!store.is_blocked(&a, &bob).expect("read"));
                assert_eq!(store.blocked_of(&a).expect("read"), vec![carol.clone()]);
                store.set_blocked(&a, &carol, false).expect("unblock");
                assert!(store.blocked_of(&a).expect("read").is_empty());
            }

            #[test]
            fn archive_positions_are_per_login_replaced_and_removed_with_it() {
                let (store, _guard) = fixture();
                let (a, axy) = (jid("a@x"), jid("a@xy"));
                assert_eq!(store.archive_position(&a).expect("read"), None);
                store
                    .put_login(&login("@alice:hs.example", "a@x"))
                    .expect("put");
                store.set_archive_position(&a, "id-1").expect("set");
                store.set_archive_position(&axy, "other").expect("set");
                store.set_archive_position(&a, "id-2").expect("replace");
                store.flush().expect("flush");
                assert_eq!(
                    store.archive_position(&a).expect("read").as_deref(),
                    Some("id-2")
                );
                assert_eq!(
                    store.archive_position(&axy).expect("read").as_deref(),
                    Some("other")
                );
                assert!(store.remove_login(&a).expect("remove"));
                assert_eq!(store.archive_position(&a).expect("read"), None);
                assert_eq!(
                    store.archive_position(&axy).expect("read").as_deref(),
                    Some("other")
                );
            }

            #[test]
            fn blocked_of_is_ordered_and_isolated_by_login() {
                let (store, _guard) = fixture();
                let contacts = ["carol@x", "bob@xy", "bob@x.y", "bob@x", "bob@x-"];
                for contact in contacts {
                    store
                        .set_blocked(&jid("a@x"), &jid(contact), true)
                        .expect("block");
                }
                store
                    .set_blocked(&jid("a@xy"), &jid("dave@x"), true)
                    .expect("block");
                store
                    .set_blocked(&jid("a@x.y"), &jid("erin@x"), true)
                    .expect("block");
                assert_eq!(
                    store.blocked_of(&jid("a@x")).expect("read"),
                    jids(&["bob@x", "bob@x-", "bob@x.y", "bob@xy", "carol@x"])
                );
                assert_eq!(
                    store.blocked_of(&jid("a@xy")).expect("read"),
                    jids(&["dave@x"])
                );
                assert!(!store.is_blocked(&jid("a@x"), &jid("dave@x")).expect("read"));
                assert!(
                    !store
                        .is_blocked(&jid("a@xy"), &jid("carol@x"))
                        .expect("read")
                );
            }

            #[test]
            fn portals_and_blocks_do_not_share_keys() {
                let (store, _guard) = fixture();
                let k = key("a@x", "bob@x");
                let p = portal("!r:hs.example", PortalState::Accepted);
                store.put_portal(&k, &p).expect("put portal");
                assert!(!store.is_blocked(&k.login, &k.contact).expect("read"));
                store
                    .set_blocked(&k.login, &k.contact, true)
                    .expect("block");
                assert_eq!(store.login(&k.login).expect("read"), None);
                assert_eq!(store.event_of(&k, "").expect("read"), None);
                store
                    .set_blocked(&k.login, &k.contact, false)
                    .expect("unblock");
                assert_eq!(store.portal(&k).expect("read"), Some(p));
                store.remove_portal(&k).expect("remove portal");
                store
                    .set_blocked(&k.login, &k.contact, true)
                    .expect("block");
                assert_eq!(store.blocked_of(&k.login).expect("read"), vec![k.contact]);
            }
        }
    };
}

pub(crate) use login_conformance_tests;
