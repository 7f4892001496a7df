//! The legacy OMEMO payload cipher: AES-128-GCM over the `<body>` text.
//!
//! We send a 12-byte IV and put the 16-byte tag after the key in the per-device key blob
//! (`key ‖ tag`, 32 bytes), as XEP-0384 v0.3 implementations converged on. We accept what
//! older senders do too: a 16-byte IV, and a 16-byte blob with the tag appended to the payload.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use rand::Rng;

pub const KEY_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
pub const IV_LEN: usize = 12;

/// Why a payload did not decrypt. Never holds key or text bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the key blob is {0} bytes; expected 16 (tag in payload) or at least 32 (key and tag)")]
    BadKeyLength(usize),
    #[error("the IV is {0} bytes; expected 12 or 16")]
    BadIvLength(usize),
    #[error("the payload is too short to hold the authentication tag")]
    PayloadTooShort,
    #[error("the payload failed authentication (corrupted or forged)")]
    Authentication,
}

/// What we send: the key blob to Signal-encrypt per device, the IV and the payload.
pub struct Sealed {
    pub key_blob: Vec<u8>,
    pub iv: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Encrypts `plaintext` with a fresh key and IV.
pub fn seal(plaintext: &[u8], rng: &mut impl Rng) -> Sealed {
    let mut key = [0u8; KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    let cipher = AesGcm::<Aes128, U12>::new(&key.into());
    let mut out = cipher
        .encrypt(
            &Nonce::<U12>::from(iv),
            Payload {
                msg: plaintext,
                aad: &[],
            },
        )
        .expect("AES-GCM encryption of a short in-memory message cannot fail");
    let tag = out.split_off(out.len() - TAG_LEN);
    let mut key_blob = key.to_vec();
    key_blob.extend_from_slice(&tag);
    Sealed {
        key_blob,
        iv: iv.to_vec(),
        payload: out,
    }
}

/// A blob for a key-transport (empty) message: a fresh key and a fresh tag-sized filler, so
/// it has the usual 32-byte shape. Receivers only use it to advance the session.
pub fn key_transport_blob(rng: &mut impl Rng) -> Vec<u8> {
    let mut blob = vec![0u8; KEY_LEN + TAG_LEN];
    rng.fill_bytes(&mut blob);
    blob
}

/// Decrypts a payload with the decrypted key blob, accepting both tag placements and both IV
/// lengths.
pub fn open(key_blob: &[u8], iv: &[u8], payload: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let (key, ciphertext_and_tag) = match key_blob.len() {
        KEY_LEN => {
            if payload.len() < TAG_LEN {
                return Err(PayloadError::PayloadTooShort);
            }
            (&key_blob[..KEY_LEN], payload.to_vec())
        }
        n if n >= KEY_LEN + TAG_LEN => {
            let mut joined = payload.to_vec();
            joined.extend_from_slice(&key_blob[KEY_LEN..KEY_LEN + TAG_LEN]);
            (&key_blob[..KEY_LEN], joined)
        }
        n => return Err(PayloadError::BadKeyLength(n)),
    };
    let key =
        <[u8; KEY_LEN]>::try_from(key).map_err(|_| PayloadError::BadKeyLength(key_blob.len()))?;
    let msg = Payload {
        msg: &ciphertext_and_tag,
        aad: &[],
    };
    let result = if let Ok(iv) = <[u8; 12]>::try_from(iv) {
        AesGcm::<Aes128, U12>::new(&key.into()).decrypt(&Nonce::<U12>::from(iv), msg)
    } else if let Ok(iv) = <[u8; 16]>::try_from(iv) {
        AesGcm::<Aes128, U16>::new(&key.into()).decrypt(&Nonce::<U16>::from(iv), msg)
    } else {
        return Err(PayloadError::BadIvLength(iv.len()));
    };
    result.map_err(|_| PayloadError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::make_rng()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let sealed = seal("héllo 👋".as_bytes(), &mut rng());
        assert_eq!(sealed.key_blob.len(), 32);
        assert_eq!(sealed.iv.len(), 12);
        assert_eq!(sealed.payload.len(), "héllo 👋".len());
        assert_eq!(
            open(&sealed.key_blob, &sealed.iv, &sealed.payload).as_deref(),
            Ok("héllo 👋".as_bytes())
        );
    }

    #[test]
    fn the_tag_may_travel_in_the_payload() {
        let sealed = seal(b"old style", &mut rng());
        let mut payload = sealed.payload.clone();
        payload.extend_from_slice(&sealed.key_blob[16..]);
        assert_eq!(
            open(&sealed.key_blob[..16], &sealed.iv, &payload).as_deref(),
            Ok(&b"old style"[..])
        );
    }

    /// A 16-byte IV (older senders): the vector is made with the generic GCM and checked to
    /// decrypt, and a flipped byte anywhere fails authentication.
    #[test]
    fn sixteen_byte_ivs_are_accepted_and_tampering_is_detected() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let mut ct = AesGcm::<Aes128, U16>::new(&key.into())
            .encrypt(
                &Nonce::<U16>::from(iv),
                Payload {
                    msg: b"sixteen",
                    aad: &[],
                },
            )
            .expect("encrypt");
        let tag = ct.split_off(ct.len() - 16);
        let mut blob = key.to_vec();
        blob.extend_from_slice(&tag);
        assert_eq!(open(&blob, &iv, &ct).as_deref(), Ok(&b"sixteen"[..]));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(open(&blob, &iv, &bad), Err(PayloadError::Authentication));
        let mut bad_blob = blob.clone();
        bad_blob[20] ^= 1;
        assert_eq!(open(&bad_blob, &iv, &ct), Err(PayloadError::Authentication));
    }

    #[test]
    fn invalid_lengths_are_named() {
        assert_eq!(
            open(&[0; 20], &[0; 12], b"x"),
            Err(PayloadError::BadKeyLength(20))
        );
        assert_eq!(
            open(&[0; 32], &[0; 8], b"x"),
            Err(PayloadError::BadIvLength(8))
        );
        assert_eq!(
            open(&[0; 16], &[0; 12], b"short"),
            Err(PayloadError::PayloadTooShort)
        );
    }
}
