//! The persistence seam of the OMEMO layer: [`OmemoStore`], one per linked account.
//!
//! The OMEMO layer never writes piecemeal. It reads through this trait, works on an in-memory
//! overlay, and hands the caller a [`Changes`] set; the caller writes it with
//! [`OmemoStore::commit`] (atomically, all or nothing) together with its own writes, then makes
//! it durable with [`OmemoStore::flush`] before it acknowledges the stanza (PRODUCT.md,
//! "Durability rule"). [`MemoryStore`](super::MemoryStore) is one implementation; a bridge brings
//! its own (the interop bridge's sled and memory stores pass one conformance suite there).
//!
//! Values are protocol records as bytes (libsignal's own serialisation) plus small structs
//! defined here; a store never interprets key material. Every persisted struct has a snapshot
//! test in the store, so a format change is deliberate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OMEMO device id: 1..=2^31−1, unique within one account (XEP-0384 v0.3 "Setup").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct DeviceId(u32);

impl DeviceId {
    pub const MAX: u32 = (1 << 31) - 1;

    /// Accepts 1..=2^31−1.
    pub fn new(id: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&id).then_some(Self(id))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for DeviceId {
    type Error = String;
    fn try_from(id: u32) -> Result<Self, String> {
        Self::new(id).ok_or_else(|| format!("device id {id} is outside 1..2^31-1"))
    }
}

impl From<DeviceId> for u32 {
    fn from(d: DeviceId) -> u32 {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One device of one account: a bare JID and a device id. Unique within the interop network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceAddress {
    /// Bare JID (no resource).
    pub jid: String,
    pub device: DeviceId,
}

impl DeviceAddress {
    pub fn new(jid: impl Into<String>, device: DeviceId) -> Self {
        Self {
            jid: jid.into(),
            device,
        }
    }
}

impl fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.jid, self.device)
    }
}

/// Our own long-term identity for this account. Created once; replaced only by unlinking.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnIdentity {
    pub device_id: DeviceId,
    /// libsignal registration id (unused on the wire by legacy OMEMO, kept for libsignal).
    pub registration_id: u32,
    /// libsignal `IdentityKeyPair::serialize()`: the private key is in here.
    #[serde(with = "b64")]
    pub identity_key_pair: Vec<u8>,
    /// The next one-time prekey id to hand out (ids are never reused).
    pub next_prekey_id: u32,
    /// The next signed prekey id to hand out.
    pub next_signed_prekey_id: u32,
}

impl fmt::Debug for OwnIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnIdentity")
            .field("device_id", &self.device_id)
            .field("next_prekey_id", &self.next_prekey_id)
            .field("next_signed_prekey_id", &self.next_signed_prekey_id)
            .finish_non_exhaustive()
    }
}

/// One of our signed prekeys: the current one, or a previous one kept for a grace period so
/// that key exchanges started against it still complete.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPreKeyEntry {
    /// libsignal `SignedPreKeyRecord::serialize()` (holds the private key).
    #[serde(with = "b64")]
    pub record: Vec<u8>,
    /// When it was generated, ms since the Unix epoch.
    pub created_ms: u64,
}

impl fmt::Debug for SignedPreKeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKeyEntry")
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// How far we trust one identity key of a contact's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Accepted without verification (first use, or a change or a known contact's new device
    /// under the default policy).
    Blind,
    /// Verified by the user (`trust <fingerprint>`).
    Verified,
    /// Seen but not trusted: strict mode after an identity change or for a known contact's new
    /// device, or refused by the user. Not encrypted to; its messages are still decrypted.
    Untrusted,
}

/// The identity key we know for a contact's device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownIdentity {
    /// The 33-byte libsignal public identity key (`0x05 ‖ X25519`). Public; not secret. A
    /// device met over OMEMO 2 is stored in this form too (its Ed25519 key mapped to
    /// Curve25519), so a device has one identity and one fingerprint whichever namespace it
    /// speaks, and the sign of the Ed25519 form it publishes does not matter.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    pub trust: Trust,
    /// When we first saw this key for this device, ms since the Unix epoch.
    pub first_seen_ms: u64,
}

/// The last device list we saw for an account (ours or a contact's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    /// Device ids the account announces, ascending, without duplicates.
    pub devices: Vec<DeviceId>,
    /// When we learned it (fetch or notification), ms since the Unix epoch.
    pub updated_ms: u64,
}

/// A set of writes produced by one OMEMO operation, applied atomically by
/// [`OmemoStore::commit`]. Later entries for the same key win. Within one kind, puts are applied
/// before removes, so a key both put and removed in one set ends up removed (the set does not
/// record which came last; puts and removes of one kind never overlap in practice). Both stores
/// agree, pinned by the conformance suite.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub own_identity: Option<OwnIdentity>,
    pub put_prekeys: Vec<(u32, Vec<u8>)>,
    pub remove_prekeys: Vec<u32>,
    pub put_signed_prekeys: Vec<(u32, SignedPreKeyEntry)>,
    pub remove_signed_prekeys: Vec<u32>,
    pub put_sessions: Vec<(DeviceAddress, Vec<u8>)>,
    pub remove_sessions: Vec<DeviceAddress>,
    pub put_identities: Vec<(DeviceAddress, KnownIdentity)>,
    pub put_device_lists: Vec<(String, DeviceList)>,
    /// OMEMO 2 sessions ([`two::Session::to_bytes`](super::two::Session::to_bytes)), kept
    /// apart from the legacy ones: the two cannot be shared.
    pub put_sessions2: Vec<(DeviceAddress, Vec<u8>)>,
    pub remove_sessions2: Vec<DeviceAddress>,
    /// OMEMO 2 device lists (`urn:xmpp:omemo:2:devices`), apart from the legacy ones.
    pub put_device_lists2: Vec<(String, DeviceList)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Appends `other`'s writes after ours (so `other`'s puts win on the same key; a removal in
    /// either still beats a put, see the type's docs).
    pub fn extend(&mut self, other: Changes) {
        if other.own_identity.is_some() {
            self.own_identity = other.own_identity;
        }
        self.put_prekeys.extend(other.put_prekeys);
        self.remove_prekeys.extend(other.remove_prekeys);
        self.put_signed_prekeys.extend(other.put_signed_prekeys);
        self.remove_signed_prekeys
            .extend(other.remove_signed_prekeys);
        self.put_sessions.extend(other.put_sessions);
        self.remove_sessions.extend(other.remove_sessions);
        self.put_identities.extend(other.put_identities);
        self.put_device_lists.extend(other.put_device_lists);
        self.put_sessions2.extend(other.put_sessions2);
        self.remove_sessions2.extend(other.remove_sessions2);
        self.put_device_lists2.extend(other.put_device_lists2);
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("own_identity", &self.own_identity.is_some())
            .field("put_prekeys", &self.put_prekeys.len())
            .field("remove_prekeys", &self.remove_prekeys.len())
            .field("put_signed_prekeys", &self.put_signed_prekeys.len())
            .field("remove_signed_prekeys", &self.remove_signed_prekeys.len())
            .field("put_sessions", &self.put_sessions.len())
            .field("remove_sessions", &self.remove_sessions.len())
            .field("put_identities", &self.put_identities.len())
            .field("put_device_lists", &self.put_device_lists.len())
            .field("put_sessions2", &self.put_sessions2.len())
            .field("remove_sessions2", &self.remove_sessions2.len())
            .field("put_device_lists2", &self.put_device_lists2.len())
            .finish()
    }
}

/// A store failure, as the OMEMO layer sees it. `Display` never holds stored values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("OMEMO store: {0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

/// The OMEMO state of one linked account (one bare JID of ours). Reads answer from the store
/// as it is; writes only go through [`commit`](Self::commit). Synchronous like the rest of the
/// store: both backends answer from memory, only `flush` waits for the disk. `commit` and
/// `flush` may be called from several threads at once (the account lock has a scope per
/// contact, so two contacts' changes are committed side by side); each commit is atomic on its
/// own, and the change sets of concurrent commits never overlap.
pub trait OmemoStore: Send + Sync {
    fn own_identity(&self) -> StoreResult<Option<OwnIdentity>>;

    /// One-time prekey record (libsignal `PreKeyRecord::serialize()`).
    fn prekey(&self, id: u32) -> StoreResult<Option<Vec<u8>>>;
    /// Ids of all one-time prekeys we hold, ascending.
    fn prekey_ids(&self) -> StoreResult<Vec<u32>>;

    fn signed_prekey(&self, id: u32) -> StoreResult<Option<SignedPreKeyEntry>>;
    /// All signed prekeys we hold, by ascending id.
    fn signed_prekeys(&self) -> StoreResult<Vec<(u32, SignedPreKeyEntry)>>;

    /// Session record (libsignal `SessionRecord::serialize()`) with one device.
    fn session(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>>;
    /// Device ids of `jid` we hold a session with, ascending.
    fn session_devices(&self, jid: &str) -> StoreResult<Vec<DeviceId>>;

    fn identity(&self, addr: &DeviceAddress) -> StoreResult<Option<KnownIdentity>>;
    /// All devices of `jid` whose identity we know, ascending by device id.
    fn identities_of(&self, jid: &str) -> StoreResult<Vec<(DeviceId, KnownIdentity)>>;

    fn device_list(&self, jid: &str) -> StoreResult<Option<DeviceList>>;

    /// OMEMO 2 session bytes with one device (opaque; they hold the ratchet's keys).
    fn session2(&self, addr: &DeviceAddress) -> StoreResult<Option<Vec<u8>>>;

    /// The last OMEMO 2 device list (`urn:xmpp:omemo:2:devices`) we saw for `jid`.
    fn device_list2(&self, jid: &str) -> StoreResult<Option<DeviceList>>;

    /// Applies `changes` atomically: after a crash either all of them or none are visible
    /// (once flushed, all are).
    fn commit(&self, changes: &Changes) -> StoreResult<()>;

    /// Removes everything of this account (unlink). Atomic like `commit`.
    fn clear(&self) -> StoreResult<()>;

    /// Durability point: every commit made before the call survives a crash once it returns.
    /// Blocking (fsync); async callers run it on a blocking thread.
    fn flush(&self) -> StoreResult<()>;
}

/// Base64 (standard, padded) for byte fields in JSON values.
pub(crate) mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_31_bit_and_nonzero() {
        assert!(DeviceId::new(0).is_none());
        assert_eq!(DeviceId::new(1).map(DeviceId::get), Some(1));
        assert_eq!(
            DeviceId::new(DeviceId::MAX).map(DeviceId::get),
            Some(DeviceId::MAX)
        );
        assert!(DeviceId::new(DeviceId::MAX + 1).is_none());
        assert!(serde_json::from_str::<DeviceId>("0").is_err());
        assert_eq!(
            serde_json::to_string(&DeviceId::new(7)).ok().as_deref(),
            Some("7")
        );
    }

    #[test]
    fn debug_of_secret_holders_shows_no_key_bytes() {
        let own = OwnIdentity {
            device_id: DeviceId(5),
            registration_id: 77,
            identity_key_pair: vec![0xAB; 64],
            next_prekey_id: 101,
            next_signed_prekey_id: 2,
        };
        let text = format!(
            "{own:?} {:?}",
            SignedPreKeyEntry {
                record: vec![0xCD; 40],
                created_ms: 1
            }
        );
        assert!(
            !text.contains("171") && !text.contains("205") && !text.contains("ab"),
            "{text}"
        );
    }
}
