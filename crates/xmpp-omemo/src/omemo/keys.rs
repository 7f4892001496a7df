//! Our own key material for one account: identity key pair, registration id, device id, the
//! signed prekey (rotated weekly, previous ones kept for a grace period) and ~100 one-time
//! prekeys (refilled when low). Everything here returns [`Changes`]; nothing writes by itself.

use std::fmt::Write as _;

use rand::RngExt as _;
use wacore_libsignal::protocol::{
    GenericSignedPreKey as _, IdentityKey, IdentityKeyPair, KeyPair, PreKeyId, PreKeyRecord,
    SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, Timestamp,
};

use crate::stanza::omemo::Bundle;

use super::store::{Changes, DeviceId, OmemoStore, OwnIdentity, SignedPreKeyEntry, StoreError};

/// How many one-time prekeys we publish (XEP-0384 v0.3: SHOULD 100, MUST at least 20).
pub const PREKEY_TARGET: usize = 100;
/// Refill when fewer than this many remain.
pub const PREKEY_REFILL_BELOW: usize = 90;
/// A signed prekey older than this is replaced.
pub const SIGNED_PREKEY_ROTATION_MS: u64 = 7 * 24 * 3600 * 1000;
/// A replaced signed prekey is kept this long after its successor was made, so key exchanges
/// started against it (bundles fetched before the rotation) still complete.
pub const SIGNED_PREKEY_GRACE_MS: u64 = 30 * 24 * 3600 * 1000;

/// Errors of our own key material. Never holds key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored key material does not decode: {0}")]
    Corrupt(String),
    #[error("no signed prekey is stored")]
    NoSignedPreKey,
}

impl From<SignalProtocolError> for KeyError {
    fn from(e: SignalProtocolError) -> Self {
        KeyError::Corrupt(e.to_string())
    }
}

/// Our loaded identity.
#[derive(Clone)]
pub struct Own {
    pub device_id: DeviceId,
    pub registration_id: u32,
    pub pair: IdentityKeyPair,
}

impl std::fmt::Debug for Own {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Own")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Own {
    pub fn from_record(record: &OwnIdentity) -> Result<Self, KeyError> {
        Ok(Self {
            device_id: record.device_id,
            registration_id: record.registration_id,
            pair: IdentityKeyPair::try_from(&record.identity_key_pair[..])?,
        })
    }

    /// Our public identity key, 33 bytes (`0x05 ‖ X25519`).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.identity_key().serialize().to_vec()
    }
}

/// A fresh identity with a random device id that is not in `taken` (our account's other
/// devices), plus its first signed prekey and prekeys.
pub fn create_identity(
    taken: &[DeviceId],
    now_ms: u64,
    rng: &mut impl rand::CryptoRng,
) -> Result<Changes, KeyError> {
    let device_id = loop {
        if let Some(id) = DeviceId::new(rng.random_range(1..=DeviceId::MAX))
            && !taken.contains(&id)
        {
            break id;
        }
    };
    let pair = IdentityKeyPair::generate(rng);
    let mut record = OwnIdentity {
        device_id,
        registration_id: rng.random_range(1..=16380),
        identity_key_pair: pair.serialize().to_vec(),
        next_prekey_id: 1,
        next_signed_prekey_id: 1,
    };
    let mut changes = Changes::default();
    add_signed_prekey(&mut record, &pair, now_ms, &mut changes, rng)?;
    add_prekeys(&mut record, PREKEY_TARGET, &mut changes, rng)?;
    changes.own_identity = Some(record);
    Ok(changes)
}

fn add_signed_prekey(
    record: &mut OwnIdentity,
    pair: &IdentityKeyPair,
    now_ms: u64,
    changes: &mut Changes,
    rng: &mut impl rand::CryptoRng,
) -> Result<(), KeyError> {
    let id = record.next_signed_prekey_id;
    record.next_signed_prekey_id = id.wrapping_add(1).max(1);
    let key = KeyPair::generate(rng);
    let signature = pair
        .private_key()
        .calculate_signature(&key.public_key.serialize(), rng)
        .map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let spk = SignedPreKeyRecord::new(
        SignedPreKeyId::from(id),
        Timestamp::from_epoch_millis(now_ms),
        &key,
        &signature,
    );
    changes.put_signed_prekeys.push((
        id,
        SignedPreKeyEntry {
            record: spk.serialize()?,
            created_ms: now_ms,
        },
    ));
    Ok(())
}

fn add_prekeys(
    record: &mut OwnIdentity,
    count: usize,
    changes: &mut Changes,
    rng: &mut impl rand::CryptoRng,
) -> Result<(), KeyError> {
    for _ in 0..count {
        let id = record.next_prekey_id;
        record.next_prekey_id = id.wrapping_add(1).max(1);
        let prekey = PreKeyRecord::new(PreKeyId::from(id), &KeyPair::generate(rng));
        changes.put_prekeys.push((id, prekey.serialize()?));
    }
    Ok(())
}

/// Housekeeping of our prekeys: refill one-time prekeys below [`PREKEY_REFILL_BELOW`], rotate
/// the signed prekey after a week, drop replaced signed prekeys after the grace period.
/// Returns the changes (empty if nothing was due); a non-empty result means the bundle changed
/// and must be published again.
pub fn maintain(
    store: &dyn OmemoStore,
    now_ms: u64,
    rng: &mut impl rand::CryptoRng,
) -> Result<Changes, KeyError> {
    let mut record = store.own_identity()?.ok_or(KeyError::NoSignedPreKey)?;
    let own = Own::from_record(&record)?;
    let mut changes = Changes::default();

    let have = store.prekey_ids()?.len();
    if have < PREKEY_REFILL_BELOW {
        add_prekeys(&mut record, PREKEY_TARGET - have, &mut changes, rng)?;
    }

    let spks = store.signed_prekeys()?;
    let newest = spks
        .iter()
        .max_by_key(|(_, e)| e.created_ms)
        .map(|(_, e)| e.created_ms);
    match newest {
        Some(created) if now_ms.saturating_sub(created) < SIGNED_PREKEY_ROTATION_MS => {}
        _ => add_signed_prekey(&mut record, &own.pair, now_ms, &mut changes, rng)?,
    }
    // A replaced signed prekey goes once its successor has been current for the grace period.
    let mut all: Vec<(u32, u64)> = spks.iter().map(|(id, e)| (*id, e.created_ms)).collect();
    all.extend(
        changes
            .put_signed_prekeys
            .iter()
            .map(|(id, e)| (*id, e.created_ms)),
    );
    all.sort_by_key(|&(id, created)| (created, id));
    for pair in all.windows(2) {
        let ((id, _), (_, successor_created)) = (pair[0], pair[1]);
        if now_ms.saturating_sub(successor_created) >= SIGNED_PREKEY_GRACE_MS {
            changes.remove_signed_prekeys.push(id);
        }
    }
    if !changes.is_empty() {
        changes.own_identity = Some(record);
    }
    Ok(changes)
}

/// Our current bundle: the newest signed prekey and every one-time prekey we hold.
pub fn public_bundle(store: &dyn OmemoStore, own: &Own) -> Result<Bundle, KeyError> {
    let (spk_id, entry) = store
        .signed_prekeys()?
        .into_iter()
        .max_by_key(|(_, e)| e.created_ms)
        .ok_or(KeyError::NoSignedPreKey)?;
    let spk = SignedPreKeyRecord::deserialize(&entry.record)?;
    let mut prekeys = Vec::new();
    for id in store.prekey_ids()? {
        if let Some(bytes) = store.prekey(id)? {
            prekeys.push((
                id,
                PreKeyRecord::deserialize(&bytes)?
                    .public_key()?
                    .serialize()
                    .to_vec(),
            ));
        }
    }
    Ok(Bundle {
        signed_prekey_id: spk_id,
        signed_prekey_public: spk.public_key()?.serialize().to_vec(),
        signed_prekey_signature: spk.signature()?,
        identity_key: own.public_key(),
        prekeys,
        skipped: 0,
    })
}

/// The fingerprint of a 33-byte identity key in the grouped form OMEMO clients show:
/// the 32 key bytes (type byte dropped) as lowercase hex in 8 groups of 8.
pub fn fingerprint(key: &[u8]) -> String {
    let raw = match IdentityKey::decode(key) {
        Ok(k) => k.public_key().public_key_bytes().to_vec(),
        Err(_) => key.to_vec(),
    };
    let mut out = String::with_capacity(raw.len() * 2 + raw.len() / 4);
    for (i, byte) in raw.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_grouped_hex_without_the_type_byte() {
        let mut key = vec![0x05];
        key.extend((0u8..32).collect::<Vec<_>>());
        assert_eq!(
            fingerprint(&key),
            "00010203 04050607 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f"
        );
    }
}
