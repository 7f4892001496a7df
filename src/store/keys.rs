//! The tree catalogue and the one key codec.
//!
//! Every sled tree the bridge uses is named here, `<key>_<value>` so the name says what it
//! maps; [`ALL_TREES`] lists them all. Every key in every tree is built with [`encode`], a
//! tuple encoding:
//!
//! - a `&str` part is its UTF-8 bytes followed by `0xFF` (a byte that never occurs in UTF-8, so
//!   the terminator is unambiguous and needs no escaping);
//! - a `u64` part is its 8 bytes, big-endian.
//!
//! Guarantees, each pinned by a unit test:
//!
//! - **Prefix isolation:** the keys of all tuples that start with a given tuple of parts are
//!   exactly the keys that start with that tuple's encoding, so `scan_prefix(encode(prefix))`
//!   never mixes `"a"` with `"ab"`.
//! - **Order:** tuples compare part by part; `u64` parts compare numerically, and `&str` parts
//!   compare bytewise, **except** that a string sorts *after* its own extensions (`"ab"` <
//!   `"a"`, because `0xFF` is greater than any UTF-8 byte). Do not rely on range scans over
//!   string parts that are prefixes of each other.
//!
//! Changing this format or any tree's value format needs a schema migration
//! ([`SCHEMA_VERSION`]).
//!
//! **At rest.** With `database.key` set, the values of the trees in [`SEALED_TREES`] are sealed
//! (`store/seal.rs`: the format written above, wrapped in an AEAD bound to the tree and the
//! key); every tree's doc says whether it is sealed and, if not, why it may stay in the clear.
//! Keys are never sealed: they are JIDs, user, room and event ids, and prefix scans need them.
//! Sealing is not a format change of plain stores (they are written as before).

/// The schema version this build writes. Bump it (and add a migration in `sled.rs`) whenever a
/// tree, key, or value format changes.
pub const SCHEMA_VERSION: u32 = 5;

/// Database metadata. Key [`SCHEMA_VERSION_KEY`] → schema version as a `u32`, big-endian;
/// key [`AT_REST_KEY`] → [`AT_REST_SEALED`] in a sealed database (absent in a plain one).
/// In the clear: versions and flags only.
pub const META: &str = "meta";
/// Transaction id → when it was processed, `u64` big-endian milliseconds since the Unix epoch.
/// In the clear: homeserver transaction ids and times.
pub const TXNID_PROCESSEDMS: &str = "txnid_processedms";
/// Matrix user ID → room ID of that user's management room (UTF-8). In the clear: ids (the
/// homeserver knows them too).
pub const USERID_MGMTROOMID: &str = "userid_mgmtroomid";
/// Management room ID → Matrix user ID of its owner (UTF-8). Reverse of [`USERID_MGMTROOMID`].
/// In the clear: ids.
pub const MGMTROOMID_USERID: &str = "mgmtroomid_userid";
/// Ghost Matrix user ID → JSON of a [`GhostRecord`](super::GhostRecord). In the clear: a
/// ghost's registration flag and public display name.
pub const GHOSTID_GHOST: &str = "ghostid_ghost";

// OMEMO, one linked account at a time (`xmpp_omemo::omemo::OmemoStore`). The first part of
// every key is the account: our own bare JID as a string part, so a prefix scan of
// `str_key(account)` finds exactly that account's entries (never those of a longer account).
// Device and prekey ids are `u64` parts, so scans list them in numeric order. Since schema 2.

/// Account → JSON of our [`OwnIdentity`](xmpp_omemo::omemo::OwnIdentity) (holds the
/// identity private key). Sealed.
pub const ACCOUNT_OMEMOIDENTITY: &str = "account_omemoidentity";
/// (account, `u64` one-time prekey id) → libsignal `PreKeyRecord` bytes, as the OMEMO layer
/// gave them (hold private keys). Sealed.
pub const ACCOUNTPREKEY_RECORD: &str = "accountprekey_record";
/// (account, `u64` signed prekey id) → JSON of a
/// [`SignedPreKeyEntry`](xmpp_omemo::omemo::SignedPreKeyEntry) (holds a private key). Sealed.
pub const ACCOUNTSIGNEDPREKEY_ENTRY: &str = "accountsignedprekey_entry";
/// (account, contact bare JID, `u64` device id) → libsignal `SessionRecord` bytes (hold the
/// ratchet's chain and root keys). Sealed.
pub const ACCOUNTJIDDEVICE_SESSION: &str = "accountjiddevice_session";
/// (account, contact bare JID, `u64` device id) → JSON of a
/// [`KnownIdentity`](xmpp_omemo::omemo::KnownIdentity). In the clear: a contact device's
/// public identity key and our trust in it (public keys; the server publishes them).
pub const ACCOUNTJIDDEVICE_IDENTITY: &str = "accountjiddevice_identity";
/// (account, bare JID — a contact's or our own) → JSON of a
/// [`DeviceList`](xmpp_omemo::omemo::DeviceList). In the clear: device ids, published by the
/// server.
pub const ACCOUNTJID_DEVICELIST: &str = "accountjid_devicelist";
/// (account, contact bare JID, `u64` device id) → OMEMO 2 session bytes
/// (`omemo::two::Session::to_bytes`: the ratchet's chain and root keys), apart from the legacy
/// sessions of [`ACCOUNTJIDDEVICE_SESSION`]. Sealed. Since schema 5.
pub const ACCOUNTJIDDEVICE_SESSION2: &str = "accountjiddevice_session2";
/// (account, bare JID) → JSON of a [`DeviceList`](xmpp_omemo::omemo::DeviceList) from the
/// OMEMO 2 node `urn:xmpp:omemo:2:devices`. In the clear like [`ACCOUNTJID_DEVICELIST`]. Since
/// schema 5.
pub const ACCOUNTJID_DEVICELIST2: &str = "accountjid_devicelist2";

// Logins and what is scoped to them (`LoginStore`, `PortalStore`, `MessageMap`, `BlockStore`).
// A login is its bare JID; every key of a tree scoped to a login starts with it as a string
// part, so a prefix scan of `str_key(login)` finds exactly that login's entries. Reverse trees
// hold the forward tree's key, encoded, as their value. Since schema 3.

/// Login bare JID → JSON of a [`LoginRecord`](super::LoginRecord) (holds the account password).
/// Sealed.
pub const JID_LOGIN: &str = "jid_login";
/// Matrix user ID → the bare JID of that user's login (UTF-8). Reverse of [`JID_LOGIN`]. In
/// the clear: ids (who linked which JID: metadata, no secret).
pub const USERID_JID: &str = "userid_jid";
/// (login, contact) — a [`PortalKey`](crate::ids::PortalKey) — → JSON of a
/// [`PortalRecord`](super::PortalRecord). In the clear: the room id and the portal's state,
/// no message content.
pub const PORTALKEY_PORTAL: &str = "portalkey_portal";
/// Portal room ID → the (login, contact) key of [`PORTALKEY_PORTAL`], encoded. In the clear.
pub const ROOMID_PORTALKEY: &str = "roomid_portalkey";
/// (login, contact, remote message id) → JSON of a [`MappedEvent`](super::MappedEvent). In the
/// clear: ids and flags, never a body.
pub const PORTALREMOTEID_EVENT: &str = "portalremoteid_event";
/// Matrix event ID → the (login, contact, remote message id) key of [`PORTALREMOTEID_EVENT`],
/// encoded. Reverse of it: several remote ids may map to one event, this holds the latest. In
/// the clear.
pub const EVENTID_PORTALREMOTEID: &str = "eventid_portalremoteid";
/// (login, contact) → empty: `login` blocked `contact` in the bridge. In the clear (no value).
pub const LOGINCONTACT_BLOCKED: &str = "logincontact_blocked";

/// Login bare JID → the archive id (UTF-8) where its catch-up starts
/// ([`ArchiveStore`](super::ArchiveStore)). In the clear: a server's message id, not secret.
pub const JID_ARCHIVEID: &str = "jid_archiveid";

/// `u64` position → JSON of a [`PendingEvent`](super::PendingEvent): a Matrix event recorded
/// for its room's worker, not yet carried out. Positions come from sled's `generate_id`, which
/// only grows across restarts (a migration to a sealed store renumbers them, in order). Since
/// schema 4. Sealed: it names the events still to send (the record is where the queue would
/// keep a message's content).
pub const POSITION_PENDINGEVENT: &str = "position_pendingevent";

/// The trees whose values are sealed when `database.key` is set (see `store/seal.rs`).
pub const SEALED_TREES: &[&str] = &[
    ACCOUNT_OMEMOIDENTITY,
    ACCOUNTPREKEY_RECORD,
    ACCOUNTSIGNEDPREKEY_ENTRY,
    ACCOUNTJIDDEVICE_SESSION,
    ACCOUNTJIDDEVICE_SESSION2,
    JID_LOGIN,
    POSITION_PENDINGEVENT,
];

/// The string part of the key in [`META`] that marks a sealed database.
pub const AT_REST_KEY: &str = "at_rest";
/// The value at [`AT_REST_KEY`] in a sealed database.
pub const AT_REST_SEALED: &[u8] = b"sealed-v1";

/// Every tree name, in catalogue order.
pub const ALL_TREES: &[&str] = &[
    META,
    TXNID_PROCESSEDMS,
    USERID_MGMTROOMID,
    MGMTROOMID_USERID,
    GHOSTID_GHOST,
    ACCOUNT_OMEMOIDENTITY,
    ACCOUNTPREKEY_RECORD,
    ACCOUNTSIGNEDPREKEY_ENTRY,
    ACCOUNTJIDDEVICE_SESSION,
    ACCOUNTJIDDEVICE_IDENTITY,
    ACCOUNTJID_DEVICELIST,
    ACCOUNTJIDDEVICE_SESSION2,
    ACCOUNTJID_DEVICELIST2,
    JID_LOGIN,
    USERID_JID,
    PORTALKEY_PORTAL,
    ROOMID_PORTALKEY,
    PORTALREMOTEID_EVENT,
    EVENTID_PORTALREMOTEID,
    LOGINCONTACT_BLOCKED,
    POSITION_PENDINGEVENT,
    JID_ARCHIVEID,
];

/// The single string part of the schema version key in [`META`].
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Terminates every string part. Never occurs in UTF-8.
const STR_END: u8 = 0xFF;

/// One part of a key tuple, borrowed for encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part<'a> {
    Str(&'a str),
    U64(u64),
}

/// The expected shape of one part, for [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Str,
    U64,
}

/// One decoded part of a key tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedPart {
    Str(String),
    U64(u64),
}

/// Why a key did not decode. Names the part index, never the key's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A string part has no `0xFF` terminator.
    #[error("key part {index}: string part is not terminated")]
    UnterminatedStr { index: usize },
    /// A string part is not valid UTF-8.
    #[error("key part {index}: string part is not valid UTF-8")]
    InvalidUtf8 { index: usize },
    /// Fewer than 8 bytes remain for a `u64` part.
    #[error("key part {index}: u64 part is truncated")]
    TruncatedU64 { index: usize },
    /// Bytes remain after the last expected part.
    #[error("key has {extra} unexpected trailing byte(s)")]
    TrailingBytes { extra: usize },
}

/// Encodes a tuple of parts into a key. See the module docs for the format and its ordering.
pub fn encode(parts: &[Part<'_>]) -> Vec<u8> {
    let len = parts
        .iter()
        .map(|p| match p {
            Part::Str(s) => s.len() + 1,
            Part::U64(_) => 8,
        })
        .sum();
    let mut key = Vec::with_capacity(len);
    for part in parts {
        match part {
            Part::Str(s) => {
                key.extend_from_slice(s.as_bytes());
                key.push(STR_END);
            }
            Part::U64(n) => key.extend_from_slice(&n.to_be_bytes()),
        }
    }
    key
}

/// Encodes a key made of one string part, the shape of most keys.
pub fn str_key(s: &str) -> Vec<u8> {
    encode(&[Part::Str(s)])
}

/// Decodes `key` as a tuple of exactly the parts in `kinds`. Any mismatch is an error, never a
/// panic.
pub fn decode(key: &[u8], kinds: &[PartKind]) -> Result<Vec<OwnedPart>, KeyError> {
    let mut rest = key;
    let mut parts = Vec::with_capacity(kinds.len());
    for (index, kind) in kinds.iter().enumerate() {
        match kind {
            PartKind::Str => {
                let end = rest
                    .iter()
                    .position(|&b| b == STR_END)
                    .ok_or(KeyError::UnterminatedStr { index })?;
                let s = std::str::from_utf8(&rest[..end])
                    .map_err(|_| KeyError::InvalidUtf8 { index })?;
                parts.push(OwnedPart::Str(s.to_owned()));
                rest = &rest[end + 1..];
            }
            PartKind::U64 => {
                let (head, tail) = rest
                    .split_first_chunk::<8>()
                    .ok_or(KeyError::TruncatedU64 { index })?;
                parts.push(OwnedPart::U64(u64::from_be_bytes(*head)));
                rest = tail;
            }
        }
    }
    if rest.is_empty() {
        Ok(parts)
    } else {
        Err(KeyError::TrailingBytes { extra: rest.len() })
    }
}

/// Decodes a key made of one string part (the inverse of [`str_key`]).
pub fn decode_str_key(key: &[u8]) -> Result<String, KeyError> {
    match decode(key, &[PartKind::Str])?.pop() {
        Some(OwnedPart::Str(s)) => Ok(s),
        _ => unreachable!("decode returns exactly one Str part for [PartKind::Str]"),
    }
}

/// Decodes a key made of `N` string parts (a portal key, a message key, …).
pub fn decode_strs<const N: usize>(key: &[u8]) -> Result<[String; N], KeyError> {
    let parts = decode(key, &[PartKind::Str; N])?;
    let strings: Vec<String> = parts
        .into_iter()
        .map(|part| match part {
            OwnedPart::Str(s) => s,
            OwnedPart::U64(_) => unreachable!("decode returns Str parts for PartKind::Str"),
        })
        .collect();
    Ok(strings
        .try_into()
        .expect("decode returns exactly one part per kind"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(parts: &[Part<'_>]) {
        let kinds: Vec<PartKind> = parts
            .iter()
            .map(|p| match p {
                Part::Str(_) => PartKind::Str,
                Part::U64(_) => PartKind::U64,
            })
            .collect();
        let expected: Vec<OwnedPart> = parts
            .iter()
            .map(|p| match p {
                Part::Str(s) => OwnedPart::Str((*s).to_owned()),
                Part::U64(n) => OwnedPart::U64(*n),
            })
            .collect();
        let decoded = decode(&encode(parts), &kinds).expect("an encoded key decodes");
        assert_eq!(decoded, expected);
    }

    #[test]
    fn round_trips() {
        round_trip(&[]);
        round_trip(&[Part::Str("")]);
        round_trip(&[Part::Str("@alice:example.org")]);
        round_trip(&[Part::Str("ünï\u{0}cødé 🦀")]);
        round_trip(&[Part::U64(0)]);
        round_trip(&[Part::U64(u64::MAX)]);
        round_trip(&[
            Part::Str("a"),
            Part::U64(7),
            Part::Str(""),
            Part::U64(1 << 40),
        ]);
        round_trip(&[Part::U64(3), Part::Str("x"), Part::Str("y")]);
        assert_eq!(decode_str_key(&str_key("txn-1")), Ok("txn-1".to_owned()));
        let key = encode(&[Part::Str("a@x"), Part::Str(""), Part::Str("m1")]);
        assert_eq!(
            decode_strs::<3>(&key),
            Ok(["a@x".to_owned(), String::new(), "m1".to_owned()])
        );
        assert_eq!(
            decode_strs::<2>(&key),
            Err(KeyError::TrailingBytes { extra: 3 })
        );
        assert_eq!(
            decode_strs::<2>(b"a\xFF"),
            Err(KeyError::UnterminatedStr { index: 1 })
        );
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(str_key("ab"), b"ab\xFF");
        assert_eq!(encode(&[Part::U64(258)]), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(str_key(SCHEMA_VERSION_KEY), b"schema_version\xFF");
    }

    #[test]
    fn u64_parts_order_numerically() {
        let nums = [0, 1, 255, 256, 65_535, 1 << 32, u64::MAX - 1, u64::MAX];
        for pair in nums.windows(2) {
            let a = encode(&[Part::Str("t"), Part::U64(pair[0])]);
            let b = encode(&[Part::Str("t"), Part::U64(pair[1])]);
            assert!(a < b, "{} should sort before {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn order_follows_first_differing_part() {
        let a = encode(&[Part::Str("apple"), Part::U64(u64::MAX)]);
        let b = encode(&[Part::Str("banana"), Part::U64(0)]);
        assert!(a < b);
        let c = encode(&[Part::Str("same"), Part::U64(1), Part::Str("zzz")]);
        let d = encode(&[Part::Str("same"), Part::U64(2), Part::Str("aaa")]);
        assert!(c < d);
    }

    #[test]
    fn a_string_sorts_after_its_extensions() {
        assert!(str_key("ab") < str_key("a"));
        assert!(str_key("a\u{10FFFF}") < str_key("a"));
    }

    #[test]
    fn prefixes_isolate_their_tuples() {
        let prefix = str_key("a");
        let inside = [
            encode(&[Part::Str("a")]),
            encode(&[Part::Str("a"), Part::U64(0)]),
            encode(&[Part::Str("a"), Part::Str("b")]),
        ];
        let outside = [
            encode(&[Part::Str("ab")]),
            encode(&[Part::Str("ab"), Part::U64(0)]),
            encode(&[Part::Str("")]),
            encode(&[Part::Str("b")]),
        ];
        for key in &inside {
            assert!(key.starts_with(&prefix));
        }
        for key in &outside {
            assert!(!key.starts_with(&prefix));
        }
        let p2 = encode(&[Part::Str("a"), Part::U64(5)]);
        assert!(encode(&[Part::Str("a"), Part::U64(5), Part::Str("x")]).starts_with(&p2));
        assert!(!encode(&[Part::Str("a"), Part::U64(6), Part::Str("x")]).starts_with(&p2));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        use PartKind::{Str, U64};
        assert_eq!(
            decode(b"no terminator", &[Str]),
            Err(KeyError::UnterminatedStr { index: 0 })
        );
        assert_eq!(
            decode(b"\xC3\x28\xFF", &[Str]),
            Err(KeyError::InvalidUtf8 { index: 0 })
        );
        assert_eq!(
            decode(b"a\xFF\x01\x02", &[Str, U64]),
            Err(KeyError::TruncatedU64 { index: 1 })
        );
        assert_eq!(
            decode(b"a\xFFb\xFF", &[Str]),
            Err(KeyError::TrailingBytes { extra: 2 })
        );
        assert_eq!(
            decode(b"", &[U64]),
            Err(KeyError::TruncatedU64 { index: 0 })
        );
        assert_eq!(
            decode(b"", &[Str]),
            Err(KeyError::UnterminatedStr { index: 0 })
        );
        assert!(decode(b"x", &[]).is_err());
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(97) ^ 0xA5).collect();
            let _ = decode(&junk, &[Str, U64, Str]);
            let _ = decode(&junk, &[U64, U64]);
        }
    }

    #[test]
    fn sealed_trees_are_catalogued_and_never_meta() {
        for tree in SEALED_TREES {
            assert!(ALL_TREES.contains(tree), "{tree}");
        }
        assert!(
            !SEALED_TREES.contains(&META),
            "meta is read before the key is known"
        );
    }

    #[test]
    fn catalogue_names_are_unique() {
        let mut names = ALL_TREES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_TREES.len());
    }
}
