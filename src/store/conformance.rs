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

/// Expands to the conformance tests for the store built by `$make` (see the module docs).
macro_rules! store_conformance_tests {
    ($make:expr) => {
        #[allow(unused_imports)]
        use $crate::store::{
            GhostRecord, GhostStore as _, ManagementRoomStore as _, Store, TxnStore as _,
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
    };
}

pub(crate) use store_conformance_tests;
