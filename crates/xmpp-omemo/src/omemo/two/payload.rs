//! The OMEMO 2 payload: the SCE envelope encrypted under a fresh 32-byte key. The key expands
//! (HKDF-SHA-256, zero salt, info "OMEMO Payload") into an AES-256-CBC key, a MAC key and an
//! IV; the MAC is HMAC-SHA-256 of the ciphertext truncated to 16 bytes. `key ‖ MAC` (48 bytes)
//! is the key material each recipient device's session encrypts. An empty message (no
//! `<payload>`, used to confirm a session or as a heartbeat) sends 32 zero bytes instead.

use super::Error;
use super::kdf::{INFO_PAYLOAD, Keys, MAC_LEN};
use super::session::KeyMaterial;

/// Length of the random payload key.
pub const KEY_LEN: usize = 32;

/// An encrypted payload and the key material that opens it.
#[derive(Debug)]
pub struct Sealed {
    /// For the `<key>` of every recipient device (`key ‖ MAC`, 48 bytes).
    pub key_material: KeyMaterial,
    /// The `<payload>`, before base64.
    pub payload: Vec<u8>,
}

/// Encrypts `plaintext` (the SCE envelope bytes) under a fresh key.
pub fn seal(plaintext: &[u8], rng: &mut impl rand::CryptoRng) -> Sealed {
    let mut key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut key);
    seal_with_key(key, plaintext)
}

pub(super) fn seal_with_key(key: [u8; KEY_LEN], plaintext: &[u8]) -> Sealed {
    let keys = Keys::derive(&key, INFO_PAYLOAD);
    let payload = keys.encrypt(plaintext);
    let mut key_material = key.to_vec();
    key_material.extend_from_slice(&keys.mac(&[&payload]));
    Sealed {
        key_material: KeyMaterial(key_material),
        payload,
    }
}

/// The key material of an empty message.
pub fn empty_key_material() -> KeyMaterial {
    KeyMaterial(vec![0; KEY_LEN])
}

/// Decrypts a `<payload>` with the key material from our `<key>`.
pub fn open(key_material: &KeyMaterial, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let material = &key_material.0;
    if material.len() != KEY_LEN + MAC_LEN {
        return Err(Error::BadKeyMaterial(material.len()));
    }
    let (key, tag) = material.split_at(KEY_LEN);
    let tag: &[u8; MAC_LEN] = tag
        .try_into()
        .map_err(|_| Error::BadKeyMaterial(material.len()))?;
    let keys = Keys::derive(key, INFO_PAYLOAD);
    if !keys.verify(&[payload], tag) {
        return Err(Error::Authentication);
    }
    keys.decrypt(payload).ok_or(Error::Padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_and_tampering_is_detected() {
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        let sealed = seal("héllo 👋".as_bytes(), &mut rng);
        assert_eq!(sealed.key_material.0.len(), 48);
        assert_eq!(sealed.payload.len(), 16);
        assert_eq!(
            open(&sealed.key_material, &sealed.payload).as_deref(),
            Ok("héllo 👋".as_bytes())
        );
        let mut bad = sealed.payload.clone();
        bad[3] ^= 1;
        assert!(matches!(
            open(&sealed.key_material, &bad),
            Err(Error::Authentication)
        ));
        let mut bad_key = sealed.key_material.clone();
        bad_key.0[40] ^= 1;
        assert!(matches!(
            open(&bad_key, &sealed.payload),
            Err(Error::Authentication)
        ));
        assert!(matches!(
            open(&empty_key_material(), &sealed.payload),
            Err(Error::BadKeyMaterial(32))
        ));
    }
}
