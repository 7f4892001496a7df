//! OMEMO 2 (`urn:xmpp:omemo:2`) on the same [`Account`]: encrypting to and decrypting from
//! devices that speak it, with the same guards, overlay and [`StateUpdate`] as the legacy
//! path, so durability, duplicates and trust behave alike.
//!
//! - **Identity**: the account's libsignal key in OMEMO 2 form (`two::Identity`).
//! - **Sessions**: `two::Session` bytes in the store's OMEMO 2 session map, never the legacy one.
//! - **Prekeys**: the legacy pool. Both bundles publish the same signed prekey and one-time
//!   prekeys (OMEMO 2's signature is made fresh over the raw key), so a prekey used in either
//!   namespace is removed for both, and one refill serves both.
//! - **Contacts' identities**: stored once per device in Curve25519 form (`0x05 ‖ u`), whatever
//!   sign the Ed25519 key a device publishes has; trust goes through the legacy overlay's
//!   identity store, so policy, first contact and reports are the same in both namespaces.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use wacore_libsignal::protocol::{
    Direction, GenericSignedPreKey as _, IdentityKey, IdentityKeyStore as _, PreKeyRecord,
    SignedPreKeyRecord,
};

use crate::stanza::ns;
use crate::stanza::omemo2::{Bundle2, Encrypted2, Key2, Keys2};
use crate::xml::Element;

use super::super::keys::KeyError;
use super::super::signal::{IdentityChangeSeen, Overlay, protocol_address};
use super::super::store::{Changes, DeviceAddress, DeviceId, KnownIdentity, OmemoStore, Trust};
use super::super::two::{self, KeyExchange, Session, payload, sce};
use super::{
    Account, AccountGuard, DecryptError, DecryptFailure, Decrypted, EncryptError, SkipReason,
    StateUpdate, now_ms, outside_guard,
};

/// An OMEMO 2 message, ready to send once its state is committed.
pub struct Sealed2 {
    pub element: Encrypted2,
    /// Devices that got a key exchange through a session started now.
    pub new_sessions: Vec<DeviceAddress>,
    pub skipped: Vec<(DeviceAddress, SkipReason)>,
    pub identity_changes: Vec<IdentityChangeSeen>,
    pub state: StateUpdate,
}

/// Our prekeys' private halves, read from the store (libsignal records) for X3DH.
struct StorePreKeys<'a>(&'a dyn OmemoStore);

impl two::PreKeys for StorePreKeys<'_> {
    fn signed_prekey(&self, id: u32) -> Option<[u8; 32]> {
        let entry = self.0.signed_prekey(id).ok()??;
        let record = SignedPreKeyRecord::deserialize(&entry.record).ok()?;
        Some(*record.private_key().ok()?.serialize())
    }

    fn prekey(&self, id: u32) -> Option<[u8; 32]> {
        let bytes = self.0.prekey(id).ok()??;
        let record = PreKeyRecord::deserialize(&bytes).ok()?;
        Some(*record.private_key().ok()?.serialize())
    }
}

/// The 33-byte libsignal form (`0x05 ‖ u`) of an OMEMO 2 identity key (Ed25519, either sign).
pub(crate) fn identity_key_of(ed25519: &[u8; 32]) -> Option<Vec<u8>> {
    let curve = two::identity::curve25519_from_ed25519(ed25519)?;
    let mut key = Vec::with_capacity(33);
    key.push(0x05);
    key.extend_from_slice(&curve);
    Some(key)
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], SkipReason> {
    <[u8; N]>::try_from(bytes)
        .map_err(|_| SkipReason::BadBundle(format!("{what} is {} bytes, not {N}", bytes.len())))
}

/// A contact's published bundle as the core needs it; lengths checked, bad prekeys dropped.
fn core_bundle(bundle: &Bundle2) -> Result<two::Bundle, SkipReason> {
    Ok(two::Bundle {
        identity_key: fixed(&bundle.identity_key, "ik")?,
        signed_prekey_id: bundle.signed_prekey_id,
        signed_prekey: fixed(&bundle.signed_prekey, "spk")?,
        signed_prekey_signature: fixed(&bundle.signed_prekey_signature, "spks")?,
        prekeys: bundle
            .prekeys
            .iter()
            .filter_map(|(id, key)| Some((*id, <[u8; 32]>::try_from(&key[..]).ok()?)))
            .collect(),
    })
}

fn decrypt_error(e: two::Error) -> DecryptError {
    match e {
        two::Error::Duplicate => DecryptError::Duplicate,
        other => DecryptError::Signal(other.to_string()),
    }
}

impl Account {
    /// Our OMEMO 2 bundle: the legacy bundle's keys without their type byte, the signed prekey
    /// signed afresh with XEdDSA over its raw 32 bytes, our identity in Ed25519 form.
    pub fn bundle2(&self) -> Result<Bundle2, KeyError> {
        let legacy = self.bundle()?;
        let raw = |key: &[u8]| -> Result<Vec<u8>, KeyError> {
            match key {
                [0x05, rest @ ..] if rest.len() == 32 => Ok(rest.to_vec()),
                _ => Err(KeyError::Corrupt(
                    "a stored public key is not 0x05 ‖ 32 bytes".into(),
                )),
            }
        };
        let spk = raw(&legacy.signed_prekey_public)?;
        let mut rng: StdRng = rand::make_rng();
        let signature = self.two.sign(&spk, &mut rng);
        let prekeys = legacy
            .prekeys
            .iter()
            .map(|(id, key)| Ok((*id, raw(key)?)))
            .collect::<Result<_, KeyError>>()?;
        Ok(Bundle2 {
            signed_prekey_id: legacy.signed_prekey_id,
            signed_prekey: spk,
            signed_prekey_signature: signature.to_vec(),
            identity_key: self.two.ed25519_public().to_vec(),
            prekeys,
            skipped: 0,
        })
    }

    /// Of `targets`, those we have no OMEMO 2 session with.
    pub fn without_session2(
        &self,
        targets: &[DeviceAddress],
    ) -> Result<Vec<DeviceAddress>, super::StoreError> {
        let mut out = Vec::new();
        for t in targets {
            if self.store.session2(t)?.is_none() {
                out.push(t.clone());
            }
        }
        Ok(out)
    }

    /// Encrypts `content` (the elements of the SCE `<content>`; `None` for an empty message)
    /// for every device in `targets` except our own, starting sessions from `bundles` where
    /// there are none. Fails only if no device of `to` got a key.
    pub async fn encrypt2(
        &self,
        guard: AccountGuard,
        to: &str,
        content: Option<Vec<Element>>,
        targets: &[DeviceAddress],
        bundles: &BTreeMap<DeviceAddress, Bundle2>,
    ) -> Result<Sealed2, EncryptError> {
        if let Some(outside) = targets.iter().find(|t| !guard.covers(&t.jid)) {
            return Err(outside_guard(&outside.jid).into());
        }
        let mut rng: StdRng = rand::make_rng();
        let (key_material, payload) = match content {
            Some(content) => {
                let envelope = sce::build(content, &self.jid, Some(to), &mut rng);
                let sealed = payload::seal(&envelope, &mut rng);
                (sealed.key_material, Some(sealed.payload))
            }
            None => (payload::empty_key_material(), None),
        };
        let mut overlay = self.overlay();
        let mut staged = BTreeMap::new();
        let mut groups: Vec<Keys2> = Vec::new();
        let mut new_sessions = Vec::new();
        let mut skipped = Vec::new();
        for target in targets {
            if target.jid == self.jid && target.device == self.own.device_id {
                continue;
            }
            let stored = match self.store.session2(target)? {
                Some(bytes) => match Session::from_bytes(&bytes) {
                    Ok(session) => Some(session),
                    Err(e) => {
                        tracing::warn!(device = %target, error = %e, "an unreadable OMEMO 2 session; starting a new one");
                        None
                    }
                },
                None => None,
            };
            let mut session = match stored {
                Some(session) => {
                    let Some(key) = identity_key_of(&session.their_identity()) else {
                        skipped.push((target.clone(), SkipReason::Failed("bad identity".into())));
                        continue;
                    };
                    if !self.trusted_to_send(&overlay, target, &key).await? {
                        skipped.push((target.clone(), SkipReason::Untrusted));
                        continue;
                    }
                    session
                }
                None => {
                    let Some(bundle) = bundles.get(target) else {
                        skipped.push((target.clone(), SkipReason::NoBundle));
                        continue;
                    };
                    match self
                        .start_session2(&mut overlay, target, bundle, &mut rng)
                        .await
                    {
                        Ok(session) => {
                            new_sessions.push(target.clone());
                            session
                        }
                        Err(reason) => {
                            skipped.push((target.clone(), reason));
                            continue;
                        }
                    }
                }
            };
            let encrypted = session.encrypt(&key_material.0);
            staged.insert(target.clone(), session.to_bytes());
            let key = Key2 {
                rid: target.device.get(),
                kex: encrypted.kex,
                data: encrypted.bytes,
            };
            match groups.iter_mut().find(|g| g.jid == target.jid) {
                Some(group) => group.keys.push(key),
                None => groups.push(Keys2 {
                    jid: target.jid.clone(),
                    keys: vec![key],
                }),
            }
        }
        let identity_changes = overlay.take_identity_changes();
        if !groups.iter().any(|g| g.jid == to && !g.keys.is_empty()) {
            return Err(EncryptError::NoDevice {
                jid: to.to_owned(),
                skipped,
                identity_changes,
            });
        }
        let mut changes = overlay.into_changes();
        changes.put_sessions2 = staged.into_iter().collect();
        Ok(Sealed2 {
            element: Encrypted2 {
                sid: self.own.device_id.get(),
                keys: groups,
                payload,
            },
            new_sessions,
            skipped,
            identity_changes,
            state: self.update(guard, changes),
        })
    }

    /// Whether the identity `key` of `target` may be encrypted to under the policy.
    async fn trusted_to_send(
        &self,
        overlay: &Overlay,
        target: &DeviceAddress,
        key: &[u8],
    ) -> Result<bool, EncryptError> {
        let identity = IdentityKey::decode(key)
            .map_err(|e| super::StoreError(format!("an identity key does not decode: {e}")))?;
        overlay
            .identities
            .is_trusted_identity(&protocol_address(target), &identity, Direction::Sending)
            .await
            .map_err(|e| super::StoreError(e.to_string()).into())
    }

    /// Active X3DH with `target`'s bundle, after the same trust decision as a legacy session.
    async fn start_session2(
        &self,
        overlay: &mut Overlay,
        target: &DeviceAddress,
        bundle: &Bundle2,
        rng: &mut StdRng,
    ) -> Result<Session, SkipReason> {
        let core = core_bundle(bundle)?;
        let key = identity_key_of(&core.identity_key)
            .ok_or_else(|| SkipReason::BadBundle("ik is not a valid Ed25519 key".into()))?;
        let session = Session::initiate(&self.two, &core, rng)
            .map_err(|e| SkipReason::BadBundle(e.to_string()))?;
        let trusted = self
            .trusted_to_send(overlay, target, &key)
            .await
            .map_err(|e| SkipReason::Failed(e.to_string()))?;
        if !trusted {
            let old = overlay.identities_known(target);
            if old.as_ref().is_some_and(|o| o.key == key) {
                return Err(SkipReason::Untrusted);
            }
            overlay.stage_identity(
                target.clone(),
                KnownIdentity {
                    key: key.clone(),
                    trust: Trust::Untrusted,
                    first_seen_ms: now_ms(),
                },
            );
            overlay.push_identity_change(IdentityChangeSeen {
                device: target.clone(),
                old_key: old.map(|o| o.key),
                new_key: key,
                trusted: false,
            });
            return Err(SkipReason::Untrusted);
        }
        save_identity(overlay, target, &key)
            .await
            .map_err(|e| SkipReason::Failed(e.to_string()))?;
        Ok(session)
    }

    /// Decrypts an OMEMO 2 `encrypted` from `sender_jid` (bare) against the stored sessions.
    pub async fn decrypt2(
        &self,
        guard: AccountGuard,
        sender_jid: &str,
        encrypted: &Encrypted2,
    ) -> Result<Decrypted, DecryptFailure> {
        let fail = |guard, sender: Option<DeviceAddress>, error: DecryptError| DecryptFailure {
            sender,
            error,
            identity_changes: Vec::new(),
            state: self.update(guard, Changes::default()),
        };
        let Some(device) = DeviceId::new(encrypted.sid) else {
            let error = DecryptError::InvalidSender(encrypted.sid);
            return Err(fail(guard, None, error));
        };
        let sender = DeviceAddress::new(sender_jid, device);
        if !guard.covers(sender_jid) {
            let error = DecryptError::Store(outside_guard(sender_jid));
            return Err(fail(guard, Some(sender), error));
        }
        let Some(key) = encrypted.key_for(&self.jid, self.own.device_id.get()) else {
            return Err(fail(guard, Some(sender), DecryptError::NotForThisDevice));
        };
        let mut rng: StdRng = rand::make_rng();
        let stored = match self.store.session2(&sender) {
            Ok(bytes) => bytes.and_then(|b| Session::from_bytes(&b).ok()),
            Err(e) => return Err(fail(guard, Some(sender), e.into())),
        };
        let mut consumed = None;
        let result = if key.kex {
            match KeyExchange::decode(&key.data) {
                Err(e) => Err(DecryptError::Signal(e.to_string())),
                Ok(kex) => match stored {
                    Some(mut session) if session.built_from(&kex) => session
                        .decrypt_repeated(&kex, &mut rng)
                        .map(|km| (session, km))
                        .map_err(decrypt_error),
                    _ => two::accept(
                        &self.two,
                        &StorePreKeys(self.store.as_ref()),
                        &kex,
                        &mut rng,
                    )
                    .map(|accepted| {
                        consumed = Some(accepted.prekey_id);
                        (accepted.session, accepted.key_material)
                    })
                    .map_err(decrypt_error),
                },
            }
        } else {
            match stored {
                None => Err(DecryptError::NoSession),
                Some(mut session) => session
                    .decrypt(&key.data, &mut rng)
                    .map(|km| (session, km))
                    .map_err(decrypt_error),
            }
        };
        let (session, key_material) = match result {
            Ok(r) => r,
            Err(error) => return Err(fail(guard, Some(sender), error)),
        };
        let mut overlay = self.overlay();
        if let Some(key) = identity_key_of(&session.their_identity())
            && let Err(e) = save_identity(&mut overlay, &sender, &key).await
        {
            return Err(fail(guard, Some(sender), DecryptError::Signal(e)));
        }
        let identity_changes = overlay.take_identity_changes();
        let mut changes = overlay.into_changes();
        changes.put_sessions2 = vec![(sender.clone(), session.to_bytes())];
        changes.remove_prekeys.extend(consumed);
        let held = self.keep_if_held(&mut changes);
        let opened = match &encrypted.payload {
            None => Ok(None),
            Some(p) => payload::open(&key_material, p)
                .map_err(|e| DecryptError::Payload2(e.to_string()))
                .and_then(|bytes| {
                    sce::parse(&bytes, sender_jid)
                        .map(Some)
                        .map_err(|e| DecryptError::Envelope(e.to_string()))
                }),
        };
        let state = self.update(guard, changes);
        match opened {
            Ok(envelope) => {
                let (body, content) = match envelope {
                    None => (None, Vec::new()),
                    Some(env) => (
                        env.body(),
                        env.content
                            .into_iter()
                            .filter(|e| !e.is("body", ns::CLIENT))
                            .collect(),
                    ),
                };
                Ok(Decrypted {
                    sender,
                    body,
                    prekey: key.kex,
                    consumed_prekey: consumed.is_some() && !held,
                    identity_changes,
                    content,
                    state,
                })
            }
            Err(error) => Err(DecryptFailure {
                sender: Some(sender),
                error,
                identity_changes,
                state,
            }),
        }
    }
}

/// Stores (and reports, as the policy says) `key` for `device` in the overlay.
async fn save_identity(
    overlay: &mut Overlay,
    device: &DeviceAddress,
    key: &[u8],
) -> Result<(), String> {
    let identity = IdentityKey::decode(key).map_err(|e| e.to_string())?;
    overlay
        .identities
        .save_identity(&protocol_address(device), &identity)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}
