//! The conformance suite every [`Store`](super::Store) implementation must pass.
//!
//! [`store_conformance_tests!`] expands to one `#[test]` per behaviour. Its argument is an
//! expression evaluated afresh in every test, yielding `(store, guard)`: `store` implements
//! `Store`, and `guard` is kept alive for the test's duration (a temporary directory, or `()`).
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     crate::store::conformance::store_conformance_tests!((MemoryStore::new(), ()));
//! }
//! ```
//!
//! The cases live in child modules of the expanding module: the OMEMO ones in `omemo`, those of
//! logins, portals, the message map and the block list in `logins` (`conformance/logins.rs`).

mod logins;

pub(crate) use logins::login_conformance_tests;

/// Expands to the conformance tests for the store built by `$make` (see the module docs).
macro_rules! store_conformance_tests {
    ($make:expr) => {
        #[allow(unused_imports)]
        use $crate::store::{
            GhostRecord, GhostStore as _, ManagementRoomStore as _, PendingEvents as _, Store,
            TxnStore as _,
        };

        fn fixture() -> (impl Store, impl Sized) {
            $make
        }

        #[test]
        fn usable_as_shared_trait_object() {
            let (store, _guard) = fixture();
            let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
            shared.flush().expect("flush an empty store");
        }

        #[test]
        fn pending_events_list_by_position_and_removal_takes_one() {
            let (store, _guard) = fixture();
            assert!(store.pending_events().expect("list").is_empty());
            let event = |room: &str, id: &str| $crate::store::PendingEvent {
                room: room.try_into().expect("room id"),
                event: id.try_into().expect("event id"),
            };
            let a = store.push_pending(&event("!r:x", "$a")).expect("push");
            let b = store.push_pending(&event("!s:x", "$b")).expect("push");
            let c = store
                .push_pending(&event("!r:x", "$a"))
                .expect("push the same again");
            assert!(a < b && b < c, "{a} {b} {c}");
            store.remove_pending(b).expect("remove");
            store.remove_pending(b).expect("remove again is fine");
            assert_eq!(
                store.pending_events().expect("list"),
                vec![(a, event("!r:x", "$a")), (c, event("!r:x", "$a"))]
            );
            store.remove_pending(a).expect("remove");
            store.remove_pending(c).expect("remove");
            assert!(store.pending_events().expect("list").is_empty());
            assert!(store.push_pending(&event("!r:x", "$d")).expect("push") > c);
        }

        #[test]
        fn txn_unknown_is_not_processed() {
            let (store, _guard) = fixture();
            assert!(!store.txn_processed("never-seen").expect("read"));
            assert!(!store.txn_processed("").expect("read"));
        }

        #[test]
        fn txn_marked_is_processed() {
            let (store, _guard) = fixture();
            store.mark_txn_processed("txn-1", 1_000).expect("mark");
            assert!(store.txn_processed("txn-1").expect("read"));
            assert!(!store.txn_processed("txn-2").expect("read"));
            assert!(!store.txn_processed("txn-").expect("read"));
            assert!(!store.txn_processed("txn-10").expect("read"));
        }

        #[test]
        fn txn_mark_is_idempotent_and_keeps_first_time() {
            let (store, _guard) = fixture();
            store.mark_txn_processed("t", 100).expect("mark");
            store.mark_txn_processed("t", 100).expect("mark again");
            store.mark_txn_processed("t", 300).expect("mark later");
            assert!(store.txn_processed("t").expect("read"));
            assert_eq!(store.prune_txns_before(200).expect("prune"), 1);
            assert!(!store.txn_processed("t").expect("read"));
        }

        #[test]
        fn txn_prune_counts_and_removes_only_older() {
            let (store, _guard) = fixture();
            assert_eq!(store.prune_txns_before(u64::MAX).expect("prune empty"), 0);
            store.mark_txn_processed("a", 100).expect("mark a");
            store.mark_txn_processed("b", 200).expect("mark b");
            store.mark_txn_processed("c", 300).expect("mark c");
            store.mark_txn_processed("d", 0).expect("mark d");
            assert_eq!(store.prune_txns_before(200).expect("prune"), 2);
            assert!(!store.txn_processed("a").expect("read a"));
            assert!(!store.txn_processed("d").expect("read d"));
            assert!(
                store.txn_processed("b").expect("read b"),
                "the bound is exclusive"
            );
            assert!(store.txn_processed("c").expect("read c"));
            assert_eq!(store.prune_txns_before(200).expect("prune again"), 0);
            assert_eq!(store.prune_txns_before(0).expect("prune none"), 0);
            assert_eq!(store.prune_txns_before(u64::MAX).expect("prune all"), 2);
            assert!(!store.txn_processed("c").expect("read c"));
        }

        #[test]
        fn txn_pruned_can_be_marked_again() {
            let (store, _guard) = fixture();
            store.mark_txn_processed("t", 1).expect("mark");
            assert_eq!(store.prune_txns_before(2).expect("prune"), 1);
            store.mark_txn_processed("t", 5).expect("mark again");
            assert!(store.txn_processed("t").expect("read"));
            assert_eq!(store.prune_txns_before(5).expect("prune"), 0);
        }

        #[test]
        fn mgmt_unknown_is_none() {
            let (store, _guard) = fixture();
            let user = ruma::user_id!("@nobody:example.org");
            let room = ruma::room_id!("!nowhere:example.org");
            assert_eq!(store.management_room(user).expect("read"), None);
            assert_eq!(store.management_room_owner(room).expect("read"), None);
            store
                .remove_management_room(user)
                .expect("removing nothing is fine");
        }

        #[test]
        fn mgmt_set_then_get_both_directions() {
            let (store, _guard) = fixture();
            let alice = ruma::user_id!("@alice:example.org");
            let bob = ruma::user_id!("@bob:example.org");
            let room_a = ruma::room_id!("!a:example.org");
            let room_b = ruma::room_id!("!b:example.org");
            store.set_management_room(alice, room_a).expect("set alice");
            store.set_management_room(bob, room_b).expect("set bob");
            assert_eq!(
                store.management_room(alice).expect("read"),
                Some(room_a.to_owned())
            );
            assert_eq!(
                store.management_room(bob).expect("read"),
                Some(room_b.to_owned())
            );
            assert_eq!(
                store.management_room_owner(room_a).expect("read"),
                Some(alice.to_owned())
            );
            assert_eq!(
                store.management_room_owner(room_b).expect("read"),
                Some(bob.to_owned())
            );
        }

        #[test]
        fn mgmt_set_same_room_twice_is_harmless() {
            let (store, _guard) = fixture();
            let alice = ruma::user_id!("@alice:example.org");
            let room = ruma::room_id!("!a:example.org");
            store.set_management_room(alice, room).expect("set");
            store.set_management_room(alice, room).expect("set again");
            assert_eq!(
                store.management_room(alice).expect("read"),
                Some(room.to_owned())
            );
            assert_eq!(
                store.management_room_owner(room).expect("read"),
                Some(alice.to_owned())
            );
        }

        #[test]
        fn mgmt_replace_unlinks_old_room() {
            let (store, _guard) = fixture();
            let alice = ruma::user_id!("@alice:example.org");
            let old = ruma::room_id!("!old:example.org");
            let new = ruma::room_id!("!new:example.org");
            store.set_management_room(alice, old).expect("set old");
            store.set_management_room(alice, new).expect("set new");
            assert_eq!(
                store.management_room(alice).expect("read"),
                Some(new.to_owned())
            );
            assert_eq!(
                store.management_room_owner(new).expect("read"),
                Some(alice.to_owned())
            );
            assert_eq!(store.management_room_owner(old).expect("read"), None);
        }

        #[test]
        fn mgmt_room_moves_to_new_owner() {
            let (store, _guard) = fixture();
            let alice = ruma::user_id!("@alice:example.org");
            let bob = ruma::user_id!("@bob:example.org");
            let room = ruma::room_id!("!shared:example.org");
            store.set_management_room(alice, room).expect("set alice");
            store.set_management_room(bob, room).expect("set bob");
            assert_eq!(
                store.management_room_owner(room).expect("read"),
                Some(bob.to_owned())
            );
            assert_eq!(
                store.management_room(bob).expect("read"),
                Some(room.to_owned())
            );
            assert_eq!(store.management_room(alice).expect("read"), None);
        }

        #[test]
        fn mgmt_remove_unlinks_both_directions() {
            let (store, _guard) = fixture();
            let alice = ruma::user_id!("@alice:example.org");
            let bob = ruma::user_id!("@bob:example.org");
            let room_a = ruma::room_id!("!a:example.org");
            let room_b = ruma::room_id!("!b:example.org");
            store.set_management_room(alice, room_a).expect("set alice");
            store.set_management_room(bob, room_b).expect("set bob");
            store.remove_management_room(alice).expect("remove");
            assert_eq!(store.management_room(alice).expect("read"), None);
            assert_eq!(store.management_room_owner(room_a).expect("read"), None);
            assert_eq!(
                store.management_room(bob).expect("read"),
                Some(room_b.to_owned())
            );
            assert_eq!(
                store.management_room_owner(room_b).expect("read"),
                Some(bob.to_owned())
            );
            store.remove_management_room(alice).expect("remove again");
            store
                .set_management_room(alice, room_a)
                .expect("set after remove");
            assert_eq!(
                store.management_room_owner(room_a).expect("read"),
                Some(alice.to_owned())
            );
        }

        #[test]
        fn ghost_unknown_is_none() {
            let (store, _guard) = fixture();
            let ghost = ruma::user_id!("@_interop_nobody:example.org");
            assert_eq!(store.ghost(ghost).expect("read"), None);
        }

        #[test]
        fn ghost_put_then_get_and_overwrite() {
            let (store, _guard) = fixture();
            let g1 = ruma::user_id!("@_interop_one:example.org");
            let g2 = ruma::user_id!("@_interop_two:example.org");
            let named = GhostRecord {
                registered: true,
                displayname: Some("One".to_owned()),
            };
            let bare = GhostRecord {
                registered: false,
                displayname: None,
            };
            store.put_ghost(g1, &named).expect("put g1");
            store.put_ghost(g2, &bare).expect("put g2");
            assert_eq!(store.ghost(g1).expect("read"), Some(named.clone()));
            assert_eq!(store.ghost(g2).expect("read"), Some(bare.clone()));
            let renamed = GhostRecord {
                registered: true,
                displayname: None,
            };
            store.put_ghost(g1, &renamed).expect("overwrite g1");
            assert_eq!(store.ghost(g1).expect("read"), Some(renamed));
            assert_eq!(store.ghost(g2).expect("read"), Some(bare));
        }

        #[test]
        fn concerns_do_not_share_keys() {
            let (store, _guard) = fixture();
            let user = ruma::user_id!("@same:example.org");
            let room = ruma::room_id!("!room:example.org");
            store.set_management_room(user, room).expect("set");
            store.mark_txn_processed(user.as_str(), 1).expect("mark");
            assert_eq!(store.ghost(user).expect("read"), None);
            store.put_ghost(user, &GhostRecord::default()).expect("put");
            assert_eq!(
                store.management_room(user).expect("read"),
                Some(room.to_owned())
            );
            assert!(store.txn_processed(user.as_str()).expect("read"));
            store.flush().expect("flush");
        }

        $crate::store::conformance::omemo_conformance_tests!();
        $crate::store::conformance::login_conformance_tests!();
    };
}

/// The OMEMO cases of [`store_conformance_tests!`], in a child module `omemo` of the module
/// that expanded it (they use its `fixture()`).
macro_rules! omemo_conformance_tests {
    () => {
        mod omemo {
            use super::{Store, fixture};
            use ::xmpp_omemo::omemo::{
                Changes, DeviceAddress, DeviceId, DeviceList, KnownIdentity, OwnIdentity,
                SignedPreKeyEntry, Trust,
            };

            fn dev(id: u32) -> DeviceId {
                DeviceId::new(id).expect("a valid device id")
            }

            fn addr(jid: &str, device: u32) -> DeviceAddress {
                DeviceAddress::new(jid, dev(device))
            }

            fn own(n: u8) -> OwnIdentity {
                OwnIdentity {
                    device_id: dev(u32::from(n) + 1),
                    registration_id: u32::from(n),
                    identity_key_pair: vec![n; 4],
                    next_prekey_id: u32::from(n) * 10,
                    next_signed_prekey_id: u32::from(n) + 2,
                }
            }

            fn spk(n: u8) -> SignedPreKeyEntry {
                SignedPreKeyEntry {
                    record: vec![n; 3],
                    created_ms: u64::from(n) * 1_000,
                }
            }

            fn known(n: u8) -> KnownIdentity {
                let trust = [Trust::Blind, Trust::Verified, Trust::Untrusted][usize::from(n % 3)];
                KnownIdentity {
                    key: vec![0x05, n],
                    trust,
                    first_seen_ms: u64::from(n),
                }
            }

            fn list(devices: &[u32], updated_ms: u64) -> DeviceList {
                DeviceList {
                    devices: devices.iter().copied().map(dev).collect(),
                    updated_ms,
                }
            }

            /// One entry of every kind, values derived from `n`.
            fn everything(n: u8) -> Changes {
                Changes {
                    own_identity: Some(own(n)),
                    put_prekeys: vec![(1, vec![n, 1])],
                    put_signed_prekeys: vec![(1, spk(n))],
                    put_sessions: vec![(addr("bob@x", 7), vec![n, 7])],
                    put_identities: vec![(addr("bob@x", 7), known(n))],
                    put_device_lists: vec![("bob@x".to_owned(), list(&[7], u64::from(n)))],
                    put_sessions2: vec![(addr("bob@x", 8), vec![n, 8])],
                    put_device_lists2: vec![("bob@x".to_owned(), list(&[8], u64::from(n)))],
                    ..Changes::default()
                }
            }

            /// Asserts that `view` holds exactly what `everything(n)` wrote.
            fn assert_everything(view: &dyn ::xmpp_omemo::omemo::OmemoStore, n: u8) {
                assert_eq!(view.own_identity().expect("read"), Some(own(n)));
                assert_eq!(view.prekey(1).expect("read"), Some(vec![n, 1]));
                assert_eq!(view.prekey_ids().expect("read"), vec![1]);
                assert_eq!(view.signed_prekey(1).expect("read"), Some(spk(n)));
                assert_eq!(view.signed_prekeys().expect("read"), vec![(1, spk(n))]);
                assert_eq!(
                    view.session(&addr("bob@x", 7)).expect("read"),
                    Some(vec![n, 7])
                );
                assert_eq!(view.session_devices("bob@x").expect("read"), vec![dev(7)]);
                assert_eq!(
                    view.identity(&addr("bob@x", 7)).expect("read"),
                    Some(known(n))
                );
                assert_eq!(
                    view.identities_of("bob@x").expect("read"),
                    vec![(dev(7), known(n))]
                );
                assert_eq!(
                    view.device_list("bob@x").expect("read"),
                    Some(list(&[7], u64::from(n)))
                );
                assert_eq!(
                    view.session2(&addr("bob@x", 8)).expect("read"),
                    Some(vec![n, 8])
                );
                assert_eq!(view.session(&addr("bob@x", 8)).expect("read"), None);
                assert_eq!(view.session2(&addr("bob@x", 7)).expect("read"), None);
                assert_eq!(
                    view.device_list2("bob@x").expect("read"),
                    Some(list(&[8], u64::from(n)))
                );
            }

            /// Asserts that `view` holds nothing at the keys `everything` uses.
            fn assert_nothing(view: &dyn ::xmpp_omemo::omemo::OmemoStore) {
                assert_eq!(view.own_identity().expect("read"), None);
                assert_eq!(view.prekey(1).expect("read"), None);
                assert!(view.prekey_ids().expect("read").is_empty());
                assert_eq!(view.signed_prekey(1).expect("read"), None);
                assert!(view.signed_prekeys().expect("read").is_empty());
                assert_eq!(view.session(&addr("bob@x", 7)).expect("read"), None);
                assert!(view.session_devices("bob@x").expect("read").is_empty());
                assert_eq!(view.identity(&addr("bob@x", 7)).expect("read"), None);
                assert!(view.identities_of("bob@x").expect("read").is_empty());
                assert_eq!(view.device_list("bob@x").expect("read"), None);
                assert_eq!(view.session2(&addr("bob@x", 8)).expect("read"), None);
                assert_eq!(view.device_list2("bob@x").expect("read"), None);
            }

            #[test]
            fn empty_account_reads_nothing() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                assert_nothing(&*view);
                view.commit(&Changes::default()).expect("commit nothing");
                view.clear().expect("clear nothing");
                assert_nothing(&*view);
                assert_nothing(&*store.omemo(""));
            }

            #[test]
            fn commit_then_read_back_each_kind() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                view.commit(&everything(3)).expect("commit");
                assert_everything(&*view, 3);
                view.commit(&everything(4)).expect("overwrite");
                assert_everything(&*view, 4);
            }

            #[test]
            fn later_entries_win_within_one_commit() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                let mut changes = everything(1);
                changes.extend(everything(2));
                assert_eq!(changes.put_prekeys.len(), 2, "both entries are in the set");
                view.commit(&changes).expect("commit");
                assert_everything(&*view, 2);
            }

            #[test]
            fn put_and_remove_of_one_key_in_one_commit_ends_removed() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                let mut changes = everything(1);
                changes.remove_prekeys.push(1);
                changes.remove_signed_prekeys.push(1);
                changes.remove_sessions.push(addr("bob@x", 7));
                changes.remove_sessions2.push(addr("bob@x", 8));
                view.commit(&changes).expect("commit");
                assert_eq!(view.session2(&addr("bob@x", 8)).expect("read"), None);
                assert_eq!(view.prekey(1).expect("read"), None);
                assert_eq!(view.signed_prekey(1).expect("read"), None);
                assert_eq!(view.session(&addr("bob@x", 7)).expect("read"), None);
                assert_eq!(
                    view.identity(&addr("bob@x", 7)).expect("read"),
                    Some(known(1))
                );
            }

            #[test]
            fn removes_take_out_only_what_they_name() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                view.commit(&Changes {
                    put_prekeys: vec![(1, vec![1]), (2, vec![2]), (3, vec![3])],
                    put_signed_prekeys: vec![(1, spk(1)), (2, spk(2))],
                    put_sessions: vec![(addr("bob@x", 1), vec![1]), (addr("bob@x", 2), vec![2])],
                    put_identities: vec![(addr("bob@x", 1), known(1))],
                    ..Changes::default()
                })
                .expect("commit");
                view.commit(&Changes {
                    remove_prekeys: vec![2, 99],
                    remove_signed_prekeys: vec![1],
                    remove_sessions: vec![addr("bob@x", 1), addr("carol@x", 1)],
                    ..Changes::default()
                })
                .expect("remove");
                assert_eq!(view.prekey_ids().expect("read"), vec![1, 3]);
                assert_eq!(view.prekey(2).expect("read"), None);
                assert_eq!(view.prekey(3).expect("read"), Some(vec![3]));
                assert_eq!(view.signed_prekeys().expect("read"), vec![(2, spk(2))]);
                assert_eq!(view.session(&addr("bob@x", 1)).expect("read"), None);
                assert_eq!(view.session_devices("bob@x").expect("read"), vec![dev(2)]);
                assert_eq!(
                    view.identities_of("bob@x").expect("read"),
                    vec![(dev(1), known(1))],
                    "removing a session keeps the device's identity"
                );
            }

            #[test]
            fn ids_and_devices_list_in_numeric_order() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                let ids = [300, 2, u32::MAX, 10, 256, 1];
                let devices = [300, 2, DeviceId::MAX, 10, 256, 1];
                view.commit(&Changes {
                    put_prekeys: ids.iter().map(|&id| (id, vec![1])).collect(),
                    put_signed_prekeys: ids.iter().map(|&id| (id, spk(1))).collect(),
                    put_sessions: devices
                        .iter()
                        .map(|&d| (addr("bob@x", d), vec![1]))
                        .collect(),
                    put_identities: devices
                        .iter()
                        .map(|&d| (addr("bob@x", d), known(1)))
                        .collect(),
                    ..Changes::default()
                })
                .expect("commit");
                let ids_sorted = vec![1, 2, 10, 256, 300, u32::MAX];
                let devices_sorted: Vec<DeviceId> = [1, 2, 10, 256, 300, DeviceId::MAX]
                    .into_iter()
                    .map(dev)
                    .collect();
                assert_eq!(view.prekey_ids().expect("read"), ids_sorted);
                let spk_ids: Vec<u32> = view
                    .signed_prekeys()
                    .expect("read")
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(spk_ids, ids_sorted);
                assert_eq!(view.session_devices("bob@x").expect("read"), devices_sorted);
                let known_devices: Vec<DeviceId> = view
                    .identities_of("bob@x")
                    .expect("read")
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect();
                assert_eq!(known_devices, devices_sorted);
            }

            #[test]
            fn accounts_are_isolated_even_by_prefix() {
                let (store, _guard) = fixture();
                let a = store.omemo("a");
                let ab = store.omemo("ab");
                ab.commit(&everything(2)).expect("commit ab");
                assert_nothing(&*a);
                assert_nothing(&*store.omemo(""));
                a.commit(&everything(1)).expect("commit a");
                assert_everything(&*a, 1);
                assert_everything(&*ab, 2);
                let alice = store.omemo("alice@xmpp.test");
                let alice2 = store.omemo("alice@xmpp.test2");
                alice2.commit(&everything(5)).expect("commit");
                assert_nothing(&*alice);
            }

            #[test]
            fn contacts_are_isolated_even_by_prefix() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                view.commit(&Changes {
                    put_sessions: vec![(addr("bob@x.y", 1), vec![1]), (addr("bob@x", 2), vec![2])],
                    put_identities: vec![
                        (addr("bob@x.y", 1), known(1)),
                        (addr("bob@x", 2), known(2)),
                    ],
                    put_device_lists: vec![("bob@x.y".to_owned(), list(&[1], 1))],
                    ..Changes::default()
                })
                .expect("commit");
                assert_eq!(view.session_devices("bob@x").expect("read"), vec![dev(2)]);
                assert_eq!(view.session_devices("bob@x.y").expect("read"), vec![dev(1)]);
                assert!(view.session_devices("bob@").expect("read").is_empty());
                assert_eq!(view.session(&addr("bob@x", 1)).expect("read"), None);
                assert_eq!(
                    view.identities_of("bob@x").expect("read"),
                    vec![(dev(2), known(2))]
                );
                assert_eq!(
                    view.identities_of("bob@x.y").expect("read"),
                    vec![(dev(1), known(1))]
                );
                assert_eq!(view.device_list("bob@x").expect("read"), None);
                assert_eq!(
                    view.device_list("bob@x.y").expect("read"),
                    Some(list(&[1], 1))
                );
            }

            #[test]
            fn clear_removes_only_this_account() {
                let (store, _guard) = fixture();
                let a = store.omemo("a");
                a.commit(&everything(1)).expect("commit a");
                a.commit(&Changes {
                    put_prekeys: vec![(2, vec![2])],
                    put_sessions: vec![(addr("carol@x", 3), vec![3])],
                    ..Changes::default()
                })
                .expect("commit more");
                store.omemo("ab").commit(&everything(2)).expect("commit ab");
                store.omemo("b").commit(&everything(3)).expect("commit b");
                a.clear().expect("clear");
                assert_nothing(&*a);
                assert!(a.prekey_ids().expect("read").is_empty());
                assert!(a.session_devices("carol@x").expect("read").is_empty());
                assert_everything(&*store.omemo("ab"), 2);
                assert_everything(&*store.omemo("b"), 3);
                a.commit(&everything(4)).expect("commit after clear");
                assert_everything(&*a, 4);
            }

            #[test]
            fn views_of_one_account_share_commits() {
                let (store, _guard) = fixture();
                let first = store.omemo("alice@xmpp.test");
                let second = store.omemo("alice@xmpp.test");
                first.commit(&everything(1)).expect("commit");
                assert_everything(&*second, 1);
                second.clear().expect("clear");
                assert_nothing(&*first);
            }

            #[test]
            fn views_work_from_another_thread_and_after_the_store_is_dropped() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                let reader = store.omemo("alice@xmpp.test");
                drop(store);
                std::thread::spawn(move || view.commit(&everything(1)))
                    .join()
                    .expect("the thread does not panic")
                    .expect("commit");
                assert_everything(&*reader, 1);
            }

            #[test]
            fn messages_with_omemo_write_the_mapping_and_the_state() {
                use $crate::store::{MappedEvent, MessageMap as _};
                let (store, _guard) = fixture();
                let key = $crate::ids::PortalKey {
                    login: $crate::ids::RemoteUserId::parse("a@x").expect("jid"),
                    contact: $crate::ids::RemoteUserId::parse("bob@x").expect("jid"),
                };
                let mapped = MappedEvent {
                    event: ruma::EventId::parse("$e:hs.example").expect("event id"),
                    placeholder: false,
                    ours: false,
                    markable: true,
                };
                let entries = [("\u{1}sid:s1", &mapped), ("m1", &mapped)];
                store
                    .put_messages_with_omemo(&key, &entries, "a@x", &everything(2))
                    .expect("write");
                assert_everything(&*store.omemo("a@x"), 2);
                assert_nothing(&*store.omemo("bob@x"));
                for (id, _) in entries {
                    assert_eq!(
                        store.event_of(&key, id).expect("read"),
                        Some(mapped.clone())
                    );
                }
                // The event maps back to the last entry.
                assert_eq!(
                    store.remote_of(&mapped.event).expect("read"),
                    Some((key.clone(), "m1".to_owned()))
                );
                // No entries: the state alone.
                store
                    .put_messages_with_omemo(&key, &[], "a@x", &everything(3))
                    .expect("write the state");
                assert_everything(&*store.omemo("a@x"), 3);
                store.flush().expect("flush");
            }

            #[test]
            fn flush_is_ok() {
                let (store, _guard) = fixture();
                let view = store.omemo("alice@xmpp.test");
                view.flush().expect("flush empty");
                view.commit(&everything(1)).expect("commit");
                view.flush().expect("flush");
                store.flush().expect("store flush");
                assert_everything(&*view, 1);
            }
        }
    };
}

pub(crate) use omemo_conformance_tests;
pub(crate) use store_conformance_tests;
