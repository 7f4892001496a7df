//! [`Account`]: the OMEMO state of one linked account, without I/O. Encrypts a body for a set
//! of devices and decrypts an `<encrypted>` element; each operation runs on an overlay of the
//! stored state and hands back a [`StateUpdate`] that the caller commits after (or together
//! with) its own effect — never before, so a crash in between leaves the stored session able
//! to decrypt the redelivered stanza.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};

use rand::rngs::StdRng;
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use wacore_libsignal::protocol::{
    self as signal, CiphertextMessageType, IdentityKey, PreKeyBundle, PreKeyId,
    PreKeySignalMessage, PublicKey, SignalMessage, SignalProtocolError, SignedPreKeyId,
    UsePQRatchet,
};

use crate::stanza::omemo::{Bundle, Encrypted, KeyElement};

use super::keys::{self, KeyError, Own};
use super::payload::{self, PayloadError};
use super::signal::{IdentityChangeSeen, Overlay, TrustPolicy, protocol_address};
use super::store::{
    Changes, DeviceAddress, DeviceId, KnownIdentity, OmemoStore, StoreError, Trust,
};
use super::two;

mod omemo2;
pub use omemo2::Sealed2;

/// Exclusive use of part of one account's OMEMO state, from an operation until its
/// [`StateUpdate`] is committed or dropped: the sessions and identities of the devices of some
/// accounts (a *scope* per bare JID, [`Account::lock_for`]), our one-time and signed prekeys
/// ([`Account::lock_prekeys`]), or everything ([`Account::lock`]). Operations on disjoint
/// scopes run side by side, so a message from one contact that waits for its owner (a slow
/// homeserver, say) holds up nothing of another contact's.
pub struct AccountGuard {
    scope: GuardScope,
    _all: GuardAll,
    _parts: Vec<OwnedMutexGuard<()>>,
}

enum GuardScope {
    Everything,
    Accounts(Vec<String>),
    Prekeys,
}

enum GuardAll {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl AccountGuard {
    /// Whether the sessions with `jid`'s devices are within this guard.
    pub fn covers(&self, jid: &str) -> bool {
        match &self.scope {
            GuardScope::Everything => true,
            GuardScope::Accounts(jids) => jids.iter().any(|j| j == jid),
            GuardScope::Prekeys => false,
        }
    }

    /// Whether our prekeys are within this guard.
    pub fn covers_prekeys(&self) -> bool {
        matches!(self.scope, GuardScope::Everything | GuardScope::Prekeys)
    }
}

/// The error of an operation given a guard that does not cover what it changes (a bug in the
/// caller).
fn outside_guard(what: &str) -> StoreError {
    StoreError(format!("the account lock does not cover {what}"))
}

/// The scope of our prekeys in the lock map: not a JID, so it cannot collide with one.
const PREKEYS_SCOPE: &str = "\0prekeys";
/// Unused scope locks are pruned once the map holds more than this many.
const MAX_IDLE_SCOPES: usize = 64;

/// The locks of one account: one per scope, and one over all of them.
#[derive(Default)]
struct Locks {
    all: Arc<RwLock<()>>,
    scopes: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Locks {
    fn scope(&self, key: &str) -> Arc<Mutex<()>> {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if scopes.len() > MAX_IDLE_SCOPES {
            scopes.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        scopes.entry(key.to_owned()).or_default().clone()
    }

    /// Takes the scopes in one global order (accounts sorted, then `last`, then prekeys), so
    /// two operations never wait for each other in a cycle. `last` is our own JID: every send
    /// needs it (our other devices get each message), so it is taken only once the contact's
    /// scope is held, and a send waiting for a busy contact holds up no send to anyone else.
    async fn take(&self, mut keys: Vec<String>, last: &str, scope: GuardScope) -> AccountGuard {
        let all = GuardAll::Shared(self.all.clone().read_owned().await);
        keys.sort_by(|a, b| {
            let rank = |k: &str| match k {
                PREKEYS_SCOPE => 2,
                k if k == last => 1,
                _ => 0,
            };
            rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
        });
        keys.dedup();
        let mut parts = Vec::with_capacity(keys.len());
        for key in &keys {
            parts.push(self.scope(key).lock_owned().await);
        }
        AccountGuard {
            scope,
            _all: all,
            _parts: parts,
        }
    }
}

/// The advanced state an operation produced. Commit it once the operation's effect is
/// durable (or together with it); dropping it discards it.
#[must_use = "the advanced OMEMO state is lost unless committed"]
pub struct StateUpdate {
    changes: Changes,
    store: Arc<dyn OmemoStore>,
    guard: AccountGuard,
}

impl StateUpdate {
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Writes the changes atomically and flushes them to disk.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Self {
            changes,
            store,
            guard,
        } = self;
        let result = tokio::task::spawn_blocking(move || {
            if !changes.is_empty() {
                store.commit(&changes)?;
                store.flush()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError(format!("commit task failed: {e}")))?;
        drop(guard);
        result
    }

    /// The changes and the guard, for a caller that writes them in its own transaction. Keep
    /// the guard until that transaction is durable.
    pub fn into_parts(self) -> (Changes, AccountGuard) {
        (self.changes, self.guard)
    }
}

/// A decrypted message.
pub struct Decrypted {
    pub sender: DeviceAddress,
    /// The body; `None` for a key-transport (empty) message, which only advances the session.
    pub body: Option<String>,
    /// It was a PreKeySignalMessage (it started a session).
    pub prekey: bool,
    /// It used up one of our one-time prekeys: refill and publish the bundle after committing.
    pub consumed_prekey: bool,
    pub identity_changes: Vec<IdentityChangeSeen>,
    /// OMEMO 2: the elements of the envelope's `<content>` besides the body (empty for legacy
    /// OMEMO, which encrypts only the body).
    pub content: Vec<crate::xml::Element>,
    pub state: StateUpdate,
}

/// Why a message did not decrypt. Never holds key or text bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("the sender device id {0} is outside 1..2^31-1")]
    InvalidSender(u32),
    #[error("the message has no key for this device")]
    NotForThisDevice,
    #[error("the message was already decrypted (replayed or redelivered)")]
    Duplicate,
    #[error("no session with the sending device")]
    NoSession,
    #[error("the sender's identity is not trusted")]
    Untrusted,
    #[error("the Signal message does not decrypt: {0}")]
    Signal(String),
    #[error("the payload does not decrypt: {0}")]
    Payload(#[from] PayloadError),
    #[error("the decrypted body is not UTF-8")]
    NotUtf8,
    #[error("the OMEMO 2 payload does not decrypt: {0}")]
    Payload2(String),
    #[error("the decrypted OMEMO 2 envelope is refused: {0}")]
    Envelope(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DecryptError {
    /// Whether a fresh session towards the sender (a key-transport message built from their
    /// bundle) may make their next messages decrypt. Not for replays: a replay proves nothing
    /// about the session, and answering each one would let anyone trigger key exchanges.
    pub fn wants_repair(&self) -> bool {
        matches!(self, DecryptError::NoSession | DecryptError::Signal(_))
    }
}

/// A failed decryption: what went wrong, from which device, and the state to commit anyway
/// (non-empty only when the Signal layer succeeded and the payload failed, so the used message
/// key is not kept; then `identity_changes` holds what that state stores, to report).
pub struct DecryptFailure {
    pub sender: Option<DeviceAddress>,
    pub error: DecryptError,
    pub identity_changes: Vec<IdentityChangeSeen>,
    pub state: StateUpdate,
}

/// Why a device got no key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("no session and no bundle")]
    NoBundle,
    #[error("its bundle is invalid: {0}")]
    BadBundle(String),
    /// Its identity key is untrusted: changed or new under the strict policy (until the user
    /// trusts it), or refused by the user.
    #[error("its identity key is not trusted")]
    Untrusted,
    #[error("encryption failed: {0}")]
    Failed(String),
}

/// An encrypted message, ready to send once its state is committed.
pub struct Sealed {
    pub element: Encrypted,
    /// Devices that got a key through a new session (a PreKeySignalMessage).
    pub new_sessions: Vec<DeviceAddress>,
    pub skipped: Vec<(DeviceAddress, SkipReason)>,
    pub identity_changes: Vec<IdentityChangeSeen>,
    pub state: StateUpdate,
}

#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    #[error("none of {jid}'s devices can be encrypted to ({} skipped)", skipped.len())]
    NoDevice {
        jid: String,
        skipped: Vec<(DeviceAddress, SkipReason)>,
        /// Identity keys seen meanwhile (new devices, changed keys), not stored: nothing of a
        /// failed encryption is. [`Account::keep_identities`] stores and returns those still
        /// new, to report ([`OmemoClient`](super::OmemoClient) does), so that the user can
        /// trust them.
        identity_changes: Vec<IdentityChangeSeen>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The OMEMO state of one account of ours. Cheap to share (`Arc`).
pub struct Account {
    store: Arc<dyn OmemoStore>,
    jid: String,
    own: Own,
    /// The same identity in OMEMO 2 form.
    two: two::Identity,
    policy: TrustPolicy,
    locks: Locks,
    /// While `Some`: the one-time prekeys decryptions used up, kept in the store until
    /// [`Account::release_used_prekeys`] (see [`Account::hold_used_prekeys`]).
    held_prekeys: std::sync::Mutex<Option<Vec<u32>>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("jid", &self.jid)
            .field("device", &self.own.device_id)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Account {
    /// Loads the account's identity, creating (and durably storing) a new one with a device
    /// id not in `taken` if there is none. Blocking (it may flush): call from a blocking thread.
    pub fn open_or_create(
        store: Arc<dyn OmemoStore>,
        jid: &str,
        policy: TrustPolicy,
        taken: &[DeviceId],
    ) -> Result<Self, KeyError> {
        let record = match store.own_identity()? {
            Some(r) => r,
            None => {
                let mut rng: StdRng = rand::make_rng();
                let changes = keys::create_identity(taken, now_ms(), &mut rng)?;
                store.commit(&changes)?;
                store.flush()?;
                changes.own_identity.ok_or_else(|| {
                    KeyError::Corrupt("identity creation made no identity".to_owned())
                })?
            }
        };
        let own = Own::from_record(&record)?;
        Ok(Self {
            two: two::Identity::from_libsignal(&own.pair),
            own,
            store,
            jid: jid.to_owned(),
            policy,
            locks: Locks::default(),
            held_prekeys: std::sync::Mutex::default(),
        })
    }

    pub fn jid(&self) -> &str {
        &self.jid
    }

    pub fn device_id(&self) -> DeviceId {
        self.own.device_id
    }

    pub fn identity_key(&self) -> Vec<u8> {
        self.own.public_key()
    }

    pub fn fingerprint(&self) -> String {
        keys::fingerprint(&self.own.public_key())
    }

    pub fn store(&self) -> &Arc<dyn OmemoStore> {
        &self.store
    }

    /// Waits for exclusive use of all of the account's state.
    pub async fn lock(&self) -> AccountGuard {
        AccountGuard {
            scope: GuardScope::Everything,
            _all: GuardAll::Exclusive(self.locks.all.clone().write_owned().await),
            _parts: Vec::new(),
        }
    }

    /// Waits for exclusive use of the sessions and identities of the devices of `jids` (bare
    /// JIDs): what a decryption from one of them, or an encryption to them, changes.
    pub async fn lock_for(&self, jids: &[&str]) -> AccountGuard {
        let keys: Vec<String> = jids.iter().map(|j| (*j).to_owned()).collect();
        self.locks
            .take(keys.clone(), &self.jid, GuardScope::Accounts(keys))
            .await
    }

    /// Waits for exclusive use of our one-time and signed prekeys (their maintenance). A
    /// decryption that uses up a one-time prekey does not need it: it only removes that one,
    /// and a refill running meanwhile counts it as present, which the next refill makes good.
    pub async fn lock_prekeys(&self) -> AccountGuard {
        self.locks
            .take(
                vec![PREKEYS_SCOPE.to_owned()],
                &self.jid,
                GuardScope::Prekeys,
            )
            .await
    }

    /// From now on, a one-time prekey a decryption uses up stays in the store (and in the
    /// published bundle) until [`release_used_prekeys`](Self::release_used_prekeys): while
    /// catching up from the archive, several archived PreKey messages may have been built on the
    /// same prekey before the first of them was answered (XEP-0384 §"Catching up").
    pub fn hold_used_prekeys(&self) {
        self.held_lock().get_or_insert_with(Vec::new);
    }

    /// Ends [`hold_used_prekeys`](Self::hold_used_prekeys): the prekeys used meanwhile, to
    /// remove now.
    pub fn release_used_prekeys(&self) -> Vec<u32> {
        self.held_lock().take().unwrap_or_default()
    }

    fn held_lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<u32>>> {
        self.held_prekeys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// While prekeys are held, takes the removals out of a decryption's `changes` and keeps
    /// them; `true` when it did (the bundle then needs no republishing yet).
    pub(super) fn keep_if_held(&self, changes: &mut Changes) -> bool {
        if changes.remove_prekeys.is_empty() {
            return false;
        }
        let mut held = self.held_lock();
        match held.as_mut() {
            Some(kept) => {
                kept.append(&mut changes.remove_prekeys);
                true
            }
            None => false,
        }
    }

    /// A state update of `changes` under `guard`, e.g. for device lists or prekey maintenance.
    pub fn update(&self, guard: AccountGuard, changes: Changes) -> StateUpdate {
        StateUpdate {
            changes,
            store: self.store.clone(),
            guard,
        }
    }

    /// Prekey refill and signed-prekey rotation, if due ([`keys::maintain`]).
    pub fn maintain(&self, guard: AccountGuard) -> Result<StateUpdate, KeyError> {
        if !guard.covers_prekeys() {
            return Err(outside_guard("the prekeys").into());
        }
        let mut rng: StdRng = rand::make_rng();
        let changes = keys::maintain(self.store.as_ref(), now_ms(), &mut rng)?;
        Ok(self.update(guard, changes))
    }

    /// Our bundle as it should be published now.
    pub fn bundle(&self) -> Result<Bundle, KeyError> {
        keys::public_bundle(self.store.as_ref(), &self.own)
    }

    /// Of `targets`, those we have no session with (their bundles are needed to encrypt).
    pub fn without_session(
        &self,
        targets: &[DeviceAddress],
    ) -> Result<Vec<DeviceAddress>, StoreError> {
        let mut out = Vec::new();
        for t in targets {
            if self.store.session(t)?.is_none() {
                out.push(t.clone());
            }
        }
        Ok(out)
    }

    /// Sets the trust of a contact device's current identity key (e.g. the user verified it).
    pub fn set_trust(
        &self,
        guard: AccountGuard,
        device: &DeviceAddress,
        trust: Trust,
    ) -> Result<StateUpdate, StoreError> {
        if !guard.covers(&device.jid) {
            return Err(outside_guard(&device.jid));
        }
        let mut changes = Changes::default();
        if let Some(mut known) = self.store.identity(device)? {
            known.trust = trust;
            changes.put_identities.push((device.clone(), known));
        }
        Ok(self.update(guard, changes))
    }

    fn overlay(&self) -> Overlay {
        Overlay::new(
            self.store.clone(),
            self.own.pair.clone(),
            self.own.registration_id,
            self.policy,
            now_ms(),
        )
    }

    /// Encrypts `body` (or, with `None`, a key-transport message) for every device in
    /// `targets` except our own, building sessions from `bundles` where there are none.
    /// Fails only if no device of `to` got a key.
    pub async fn encrypt(
        &self,
        guard: AccountGuard,
        to: &str,
        body: Option<&str>,
        targets: &[DeviceAddress],
        bundles: &BTreeMap<DeviceAddress, Bundle>,
    ) -> Result<Sealed, EncryptError> {
        if let Some(outside) = targets.iter().find(|t| !guard.covers(&t.jid)) {
            return Err(outside_guard(&outside.jid).into());
        }
        let mut rng: StdRng = rand::make_rng();
        let (key_blob, iv, payload) = match body {
            Some(text) => {
                let s = payload::seal(text.as_bytes(), &mut rng);
                (s.key_blob, s.iv, Some(s.payload))
            }
            None => (
                payload::key_transport_blob(&mut rng),
                {
                    let mut iv = vec![0u8; payload::IV_LEN];
                    rand::Rng::fill_bytes(&mut rng, &mut iv);
                    iv
                },
                None,
            ),
        };
        let mut overlay = self.overlay();
        let mut keys = Vec::new();
        let mut new_sessions = Vec::new();
        let mut skipped = Vec::new();
        for target in targets {
            if target.jid == self.jid && target.device == self.own.device_id {
                continue;
            }
            let address = protocol_address(target);
            let has = signal::has_session(&overlay.sessions, &address)
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            if !has {
                let Some(bundle) = bundles.get(target) else {
                    skipped.push((target.clone(), SkipReason::NoBundle));
                    continue;
                };
                if let Err(reason) = self
                    .start_session(&mut overlay, target, bundle, &mut rng)
                    .await
                {
                    skipped.push((target.clone(), reason));
                    continue;
                }
                new_sessions.push(target.clone());
            }
            match signal::message_encrypt(
                &key_blob,
                &address,
                &mut overlay.sessions,
                &mut overlay.identities,
            )
            .await
            {
                Ok(message) => keys.push(KeyElement {
                    rid: target.device.get(),
                    prekey: message.message_type() == CiphertextMessageType::PreKey,
                    data: message.serialize().to_vec(),
                }),
                Err(SignalProtocolError::UntrustedIdentity(_)) => {
                    skipped.push((target.clone(), SkipReason::Untrusted))
                }
                Err(e) => {
                    overlay.discard_session(target);
                    skipped.push((target.clone(), SkipReason::Failed(e.to_string())));
                }
            }
        }
        let for_contact = keys.iter().any(|k| {
            targets
                .iter()
                .any(|t| t.jid == to && t.device.get() == k.rid)
        });
        if !for_contact {
            return Err(EncryptError::NoDevice {
                jid: to.to_owned(),
                skipped,
                identity_changes: overlay.take_identity_changes(),
            });
        }
        let identity_changes = overlay.take_identity_changes();
        let element = Encrypted {
            sid: self.own.device_id.get(),
            keys,
            iv,
            payload,
        };
        Ok(Sealed {
            element,
            new_sessions,
            skipped,
            identity_changes,
            state: self.update(guard, overlay.into_changes()),
        })
    }

    async fn start_session(
        &self,
        overlay: &mut Overlay,
        target: &DeviceAddress,
        bundle: &Bundle,
        rng: &mut StdRng,
    ) -> Result<(), SkipReason> {
        let bad = |what: &str| SkipReason::BadBundle(what.to_owned());
        let identity =
            IdentityKey::decode(&bundle.identity_key).map_err(|_| bad("identity key"))?;
        let spk = PublicKey::deserialize(&bundle.signed_prekey_public)
            .map_err(|_| bad("signed prekey"))?;
        let prekey = if bundle.prekeys.is_empty() {
            None
        } else {
            let (id, key) =
                &bundle.prekeys[rand::RngExt::random_range(rng, 0..bundle.prekeys.len())];
            Some((
                PreKeyId::from(*id),
                PublicKey::deserialize(key).map_err(|_| bad("one-time prekey"))?,
            ))
        };
        let pre_key_bundle = PreKeyBundle::new(
            0,
            signal::DeviceId::from(target.device.get()),
            prekey,
            SignedPreKeyId::from(bundle.signed_prekey_id),
            spk,
            bundle.signed_prekey_signature.clone(),
            identity,
        )
        .map_err(|e| SkipReason::BadBundle(e.to_string()))?;
        let address = protocol_address(target);
        match signal::process_prekey_bundle(
            &address,
            &mut overlay.sessions,
            &mut overlay.identities,
            &pre_key_bundle,
            rng,
            UsePQRatchet::No,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(SignalProtocolError::UntrustedIdentity(_)) => {
                // Known and untrusted (refused by the user, or reported before): nothing new.
                let old = overlay.identities_known(target);
                if old.as_ref().is_some_and(|o| o.key == bundle.identity_key) {
                    return Err(SkipReason::Untrusted);
                }
                // Strict policy: record the changed key or the new device as untrusted, and
                // report it (a first contact is always trusted, so never comes here).
                overlay.stage_identity(
                    target.clone(),
                    KnownIdentity {
                        key: bundle.identity_key.clone(),
                        trust: Trust::Untrusted,
                        first_seen_ms: now_ms(),
                    },
                );
                overlay.push_identity_change(IdentityChangeSeen {
                    device: target.clone(),
                    old_key: old.map(|o| o.key),
                    new_key: bundle.identity_key.clone(),
                    trusted: false,
                });
                Err(SkipReason::Untrusted)
            }
            Err(SignalProtocolError::SignatureValidationFailed) => {
                Err(bad("signed prekey signature"))
            }
            Err(e) => Err(SkipReason::BadBundle(e.to_string())),
        }
    }

    /// Decrypts `encrypted` from `sender_jid` (bare) against the stored sessions.
    pub async fn decrypt(
        &self,
        guard: AccountGuard,
        sender_jid: &str,
        encrypted: &Encrypted,
    ) -> Result<Decrypted, DecryptFailure> {
        let fail = |guard, sender: Option<DeviceAddress>, error: DecryptError| DecryptFailure {
            sender,
            error,
            identity_changes: Vec::new(),
            state: self.update(guard, Changes::default()),
        };
        let Some(device) = DeviceId::new(encrypted.sid) else {
            return Err(fail(
                guard,
                None,
                DecryptError::InvalidSender(encrypted.sid),
            ));
        };
        let sender = DeviceAddress::new(sender_jid, device);
        if !guard.covers(sender_jid) {
            let error = DecryptError::Store(outside_guard(sender_jid));
            return Err(fail(guard, Some(sender), error));
        }
        let Some(key) = encrypted
            .keys
            .iter()
            .find(|k| k.rid == self.own.device_id.get())
        else {
            return Err(fail(guard, Some(sender), DecryptError::NotForThisDevice));
        };
        let mut overlay = self.overlay();
        let mut rng: StdRng = rand::make_rng();
        let address = protocol_address(&sender);
        let prekey_message = if key.prekey {
            PreKeySignalMessage::try_from(&key.data[..]).ok()
        } else {
            None
        };
        let result = match prekey_message {
            Some(m) => {
                let ours = own_unconfirmed_session(&overlay, &address).await;
                let result = signal::message_decrypt_prekey(
                    &m,
                    &address,
                    &mut overlay.sessions,
                    &mut overlay.identities,
                    &mut overlay.prekeys,
                    &overlay.signed_prekeys,
                    &mut rng,
                    UsePQRatchet::No,
                )
                .await;
                if result.is_ok()
                    && let Some(own) = ours
                    && own.base_key != m.base_key().serialize().as_ref()
                {
                    keep_own_session(&mut overlay, &address, own).await;
                }
                result
            }
            None => match SignalMessage::try_from(&key.data[..]) {
                Ok(m) => {
                    signal::message_decrypt_signal(
                        &m,
                        &address,
                        &mut overlay.sessions,
                        &mut overlay.identities,
                        &mut rng,
                    )
                    .await
                }
                Err(e) => Err(e),
            },
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let error = match e {
                    SignalProtocolError::DuplicatedMessage(..) => DecryptError::Duplicate,
                    SignalProtocolError::SessionNotFound(_) => DecryptError::NoSession,
                    SignalProtocolError::UntrustedIdentity(_) => DecryptError::Untrusted,
                    other => DecryptError::Signal(other.to_string()),
                };
                return Err(fail(guard, Some(sender), error));
            }
        };
        let consumed_prekey = result.consumed_prekey_id.is_some();
        if let Some(id) = result.consumed_prekey_id {
            overlay.consumed_prekeys.push(u32::from(id));
        }
        let identity_changes = overlay.take_identity_changes();
        let body = match &encrypted.payload {
            None => Ok(None),
            Some(p) => payload::open(&result.plaintext, &encrypted.iv, p)
                .map_err(DecryptError::from)
                .and_then(|bytes| {
                    String::from_utf8(bytes)
                        .map(Some)
                        .map_err(|_| DecryptError::NotUtf8)
                }),
        };
        let mut changes = overlay.into_changes();
        let consumed_prekey = consumed_prekey && !self.keep_if_held(&mut changes);
        let state = self.update(guard, changes);
        match body {
            Ok(body) => Ok(Decrypted {
                sender,
                body,
                prekey: key.prekey,
                consumed_prekey,
                identity_changes,
                content: Vec::new(),
                state,
            }),
            Err(error) => Err(DecryptFailure {
                sender: Some(sender),
                error,
                identity_changes,
                state,
            }),
        }
    }
}

/// Our current session with `address`, if we started it and have not heard back in it yet
/// (we still send it as PreKeySignalMessages).
async fn own_unconfirmed_session(
    overlay: &Overlay,
    address: &signal::ProtocolAddress,
) -> Option<OwnSession> {
    use signal::SessionStore as _;
    let record = overlay.sessions.load_session(address).await.ok()??;
    let state = record.session_state()?;
    let pending = state.unacknowledged_pre_key_message_items().ok()??;
    Some(OwnSession {
        version: state.session_version().ok()?,
        base_key: state.alice_base_key().to_vec(),
        pending: (
            pending.pre_key_id(),
            pending.signed_pre_key_id(),
            *pending.base_key(),
        ),
    })
}

/// Our own unconfirmed session, as [`own_unconfirmed_session`] found it.
struct OwnSession {
    version: u32,
    base_key: Vec<u8>,
    /// The key exchange we keep sending until the contact answers in this session: the
    /// contact's one-time and signed prekey ids we used, and our base key.
    pending: (Option<PreKeyId>, SignedPreKeyId, PublicKey),
}

/// The tie-break for simultaneous first messages. When both sides start a session at once,
/// each receives the other's PreKeySignalMessage; libsignal then makes the session it received
/// current, while python-omemo (one session per device) and libsignal-protocol-c keep the one
/// *they* received, ours. So after such a message we make our own session current again:
/// both ends then send in it, and the contact's session stays as a previous state here, so
/// whatever the contact sent in it still decrypts. Archiving dropped our pending key exchange
/// from the session, so it is put back: our messages stay PreKeySignalMessages until the
/// contact answers in our session, as they were before.
async fn keep_own_session(
    overlay: &mut Overlay,
    address: &signal::ProtocolAddress,
    own: OwnSession,
) {
    use signal::SessionStore as _;
    let Ok(Some(mut record)) = overlay.sessions.load_session(address).await else {
        return;
    };
    if matches!(
        record.promote_matching_session(own.version, &own.base_key),
        Ok(true)
    ) {
        if let Some(state) = record.session_state_mut() {
            let (prekey, signed_prekey, base_key) = own.pending;
            state.set_unacknowledged_pre_key_message(prekey, signed_prekey, &base_key);
        }
        match overlay.sessions.store_session(address, record).await {
            Ok(()) => {
                tracing::info!(device = %address, "both sides started a session at once; keeping ours")
            }
            Err(error) => tracing::warn!(device = %address, %error, "cannot keep our own session"),
        }
    }
}
