//! libsignal's store traits on top of an [`OmemoStore`], as a copy-on-write overlay.
//!
//! libsignal's free functions take several `&mut dyn` stores at once, so each trait has its
//! own struct ([`Sessions`], [`Identities`], [`PreKeys`], [`SignedPreKeys`]). They read the
//! persistent store and keep every write in memory; [`Overlay::into_changes`] turns the
//! writes into one [`Changes`] set that the caller commits (or drops, leaving the store as it
//! was). That is what lets a decrypt run against the session *as stored* and a crash before the
//! commit leave a redelivered stanza decryptable.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use wacore_libsignal::protocol::{
    self as signal, Direction, GenericSignedPreKey as _, IdentityChange, IdentityKey,
    IdentityKeyPair, PreKeyId, PreKeyRecord, ProtocolAddress, SessionRecord, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord,
};

use super::store::{
    Changes, DeviceAddress, DeviceId, KnownIdentity, OmemoStore, StoreError, Trust,
};

type SignalResult<T> = Result<T, SignalProtocolError>;

fn store_err(e: StoreError) -> SignalProtocolError {
    SignalProtocolError::InvalidState("omemo store", e.0)
}

/// libsignal address of a device: name = bare JID, device id as is.
pub(crate) fn protocol_address(addr: &DeviceAddress) -> ProtocolAddress {
    ProtocolAddress::new(&addr.jid, signal::DeviceId::from(addr.device.get()))
}

fn device_address(addr: &ProtocolAddress) -> SignalResult<DeviceAddress> {
    let device = DeviceId::new(u32::from(addr.device_id())).ok_or_else(|| {
        SignalProtocolError::InvalidArgument("device id outside 1..2^31-1".to_owned())
    })?;
    Ok(DeviceAddress::new(addr.name(), device))
}

/// What to do when a contact's device shows an identity key other than the one we know, or a
/// contact we know shows a device we never saw.
///
/// The devices of a contact we never stored an identity of (first contact) are trusted blindly
/// and silently under both policies, all of them, however many one operation meets. A *new
/// device* is one whose identity we never stored, of a contact with at least one stored
/// identity before the operation began: like a changed key, it is reported
/// ([`IdentityChangeSeen`] with no `old_key`) once, when its identity is first stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrustPolicy {
    /// Trust on first use, on change and new devices; every change and new device is reported
    /// (the default, as users of the existing bridges asked for).
    #[default]
    TrustOnFirstUseAndChange,
    /// Trust on first use; a changed key or a new device is stored untrusted and not sent to
    /// until the user trusts it. Messages from it are still decrypted (and it is reported).
    Strict,
}

/// A contact's device presented a key other than the one we had, or a known contact's device
/// we never saw presented its key (reported, never silent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityChangeSeen {
    pub device: DeviceAddress,
    /// The 33-byte public keys, old and new. No old key: a new device of a known contact.
    pub old_key: Option<Vec<u8>>,
    pub new_key: Vec<u8>,
    /// Whether the new key is trusted under the policy in force.
    pub trusted: bool,
}

pub(crate) struct Sessions {
    store: Arc<dyn OmemoStore>,
    staged: BTreeMap<DeviceAddress, Vec<u8>>,
}

#[async_trait]
impl signal::SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        let addr = device_address(address)?;
        let bytes = match self.staged.get(&addr) {
            Some(b) => Some(b.clone()),
            None => self.store.session(&addr).map_err(store_err)?,
        };
        let Some(bytes) = bytes else { return Ok(None) };
        let mut record = SessionRecord::deserialize(&bytes)?;
        // Every state we persist is durable before its ciphertext reaches the wire, so the
        // batch lease of counters (a WhatsApp write-behind optimisation) is not needed.
        record.waive_counter_lease();
        Ok(Some(record))
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self
            .load_session(address)
            .await?
            .is_some_and(|r| r.session_state().is_some()))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        let addr = device_address(address)?;
        self.staged.insert(addr, record.serialize()?);
        Ok(())
    }
}

pub(crate) struct Identities {
    store: Arc<dyn OmemoStore>,
    own: IdentityKeyPair,
    registration_id: u32,
    policy: TrustPolicy,
    now_ms: u64,
    staged: BTreeMap<DeviceAddress, KnownIdentity>,
    changes_seen: Vec<IdentityChangeSeen>,
}

impl Identities {
    fn known(&self, addr: &DeviceAddress) -> SignalResult<Option<KnownIdentity>> {
        match self.staged.get(addr) {
            Some(k) => Ok(Some(k.clone())),
            None => self.store.identity(addr).map_err(store_err),
        }
    }

    /// Whether `jid` had a stored identity before this operation: then a device of it whose
    /// identity we do not know is a new device, not a first contact. The store, not the
    /// staged writes, so that all the devices met at a first contact are first-contact ones.
    fn contact_known(&self, jid: &str) -> SignalResult<bool> {
        Ok(!self.store.identities_of(jid).map_err(store_err)?.is_empty())
    }
}

#[async_trait]
impl signal::IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.own.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let addr = device_address(address)?;
        let new_key = identity.serialize().to_vec();
        // What is reported: a known device's changed key (`Some(Some(old))`), or a device of a
        // contact we already knew (`Some(None)`); a first contact's devices are not.
        let (reported, change) = match self.known(&addr)? {
            Some(k) if k.key == new_key => return Ok(IdentityChange::NewOrUnchanged),
            Some(old) => (Some(Some(old.key)), IdentityChange::ReplacedExisting),
            None if self.contact_known(&addr.jid)? => (Some(None), IdentityChange::NewOrUnchanged),
            None => (None, IdentityChange::NewOrUnchanged),
        };
        // A first contact is trusted under every policy; anything reported only under TOFU.
        let trusted = reported.is_none() || self.policy == TrustPolicy::TrustOnFirstUseAndChange;
        if let Some(old_key) = reported {
            self.changes_seen.push(IdentityChangeSeen {
                device: addr.clone(),
                old_key,
                new_key: new_key.clone(),
                trusted,
            });
        }
        let trust = if trusted {
            Trust::Blind
        } else {
            Trust::Untrusted
        };
        let record = KnownIdentity {
            key: new_key,
            trust,
            first_seen_ms: self.now_ms,
        };
        self.staged.insert(addr, record);
        Ok(change)
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> SignalResult<bool> {
        let addr = device_address(address)?;
        let key = identity.serialize();
        Ok(match self.known(&addr)? {
            // First contact: trusted. A new device of a known contact: readable (it is
            // reported when stored); sendable unless strict.
            None => {
                direction == Direction::Receiving
                    || self.policy == TrustPolicy::TrustOnFirstUseAndChange
                    || !self.contact_known(&addr.jid)?
            }
            Some(k) if k.key == key => {
                k.trust != Trust::Untrusted || direction == Direction::Receiving
            }
            // A changed key: always readable (the change is reported); sendable unless strict.
            Some(_) => {
                direction == Direction::Receiving
                    || self.policy == TrustPolicy::TrustOnFirstUseAndChange
            }
        })
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        let addr = device_address(address)?;
        match self.known(&addr)? {
            Some(k) => Ok(Some(IdentityKey::decode(&k.key)?)),
            None => Ok(None),
        }
    }
}

pub(crate) struct PreKeys {
    store: Arc<dyn OmemoStore>,
}

#[async_trait]
impl signal::PreKeyStore for PreKeys {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        let bytes = self
            .store
            .prekey(u32::from(id))
            .map_err(store_err)?
            .ok_or(SignalProtocolError::InvalidPreKeyId)?;
        PreKeyRecord::deserialize(&bytes)
    }

    async fn save_pre_key(&mut self, _id: PreKeyId, _record: &PreKeyRecord) -> SignalResult<()> {
        Err(SignalProtocolError::InvalidState(
            "save_pre_key",
            "prekeys are generated by the account, not by sessions".to_owned(),
        ))
    }

    async fn remove_pre_key(&mut self, _id: PreKeyId) -> SignalResult<()> {
        // Consumed prekeys are removed through `Changes` together with the session they made.
        Ok(())
    }
}

pub(crate) struct SignedPreKeys {
    store: Arc<dyn OmemoStore>,
}

#[async_trait]
impl signal::SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        let entry = self
            .store
            .signed_prekey(u32::from(id))
            .map_err(store_err)?
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)?;
        SignedPreKeyRecord::deserialize(&entry.record)
    }

    async fn save_signed_pre_key(
        &mut self,
        _id: SignedPreKeyId,
        _record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        Err(SignalProtocolError::InvalidState(
            "save_signed_pre_key",
            "signed prekeys are generated by the account".to_owned(),
        ))
    }
}

/// The four overlay stores of one operation, over one account's [`OmemoStore`].
pub(crate) struct Overlay {
    pub sessions: Sessions,
    pub identities: Identities,
    pub prekeys: PreKeys,
    pub signed_prekeys: SignedPreKeys,
    pub consumed_prekeys: Vec<u32>,
}

impl Overlay {
    pub fn new(
        store: Arc<dyn OmemoStore>,
        own: IdentityKeyPair,
        registration_id: u32,
        policy: TrustPolicy,
        now_ms: u64,
    ) -> Self {
        Self {
            sessions: Sessions {
                store: store.clone(),
                staged: BTreeMap::new(),
            },
            identities: Identities {
                store: store.clone(),
                own,
                registration_id,
                policy,
                now_ms,
                staged: BTreeMap::new(),
                changes_seen: Vec::new(),
            },
            prekeys: PreKeys {
                store: store.clone(),
            },
            signed_prekeys: SignedPreKeys { store },
            consumed_prekeys: Vec::new(),
        }
    }

    /// Identity changes seen so far (drained).
    pub fn take_identity_changes(&mut self) -> Vec<IdentityChangeSeen> {
        std::mem::take(&mut self.identities.changes_seen)
    }

    /// Marks a trusted identity explicitly (used by `trust`).
    pub fn stage_identity(&mut self, addr: DeviceAddress, identity: KnownIdentity) {
        self.identities.staged.insert(addr, identity);
    }

    /// The identity we know for `addr` (staged or stored); a store error reads as unknown.
    pub fn identities_known(&self, addr: &DeviceAddress) -> Option<KnownIdentity> {
        self.identities.known(addr).ok().flatten()
    }

    pub fn push_identity_change(&mut self, change: IdentityChangeSeen) {
        self.identities.changes_seen.push(change);
    }

    /// Drops the staged session of `addr` (nothing is committed for it).
    pub fn discard_session(&mut self, addr: &DeviceAddress) {
        self.sessions.staged.remove(addr);
    }

    pub fn into_changes(self) -> Changes {
        Changes {
            put_sessions: self.sessions.staged.into_iter().collect(),
            put_identities: self.identities.staged.into_iter().collect(),
            remove_prekeys: self.consumed_prekeys,
            ..Changes::default()
        }
    }
}
