//! The primitives OMEMO 2 builds on, with its labels and lengths in one place: HKDF-SHA-256,
//! HMAC-SHA-256 truncated to 16 bytes, AES-256-CBC with PKCS#7.

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// HKDF info of the X3DH shared secret.
pub const INFO_X3DH: &[u8] = b"OMEMO X3DH";
/// HKDF info of the root chain (salt: the root key; input: the DH output).
pub const INFO_ROOT_CHAIN: &[u8] = b"OMEMO Root Chain";
/// HKDF info that expands a message key into encryption key, MAC key and IV.
pub const INFO_MESSAGE_KEY: &[u8] = b"OMEMO Message Key Material";
/// HKDF info that expands the payload key into encryption key, MAC key and IV.
pub const INFO_PAYLOAD: &[u8] = b"OMEMO Payload";
/// HMAC input that derives a message key from a chain key.
pub const MESSAGE_KEY_SEED: u8 = 0x01;
/// HMAC input that derives the next chain key.
pub const CHAIN_KEY_SEED: u8 = 0x02;
/// Both MACs (ratchet message, payload) are HMAC-SHA-256 truncated to this many bytes.
pub const MAC_LEN: usize = 16;

/// HKDF-SHA-256 into `out`.
pub fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .expect("OMEMO 2 never asks HKDF-SHA-256 for more than 255 blocks");
}

/// Encryption key, MAC key and IV: 80 bytes of HKDF (salt: 32 zero bytes) split 32/32/16.
pub struct Keys {
    pub enc: [u8; 32],
    pub mac: [u8; 32],
    pub iv: [u8; 16],
}

impl Keys {
    pub fn derive(ikm: &[u8], info: &[u8]) -> Self {
        let mut okm = [0u8; 80];
        hkdf(&[0; 32], ikm, info, &mut okm);
        let mut keys = Keys {
            enc: [0; 32],
            mac: [0; 32],
            iv: [0; 16],
        };
        keys.enc.copy_from_slice(&okm[..32]);
        keys.mac.copy_from_slice(&okm[32..64]);
        keys.iv.copy_from_slice(&okm[64..]);
        keys
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<Aes256>::new((&self.enc).into(), (&self.iv).into())
            .encrypt_padded_vec::<Pkcs7>(plaintext)
    }

    /// `None` when the length is not whole blocks or the padding is wrong.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
            return None;
        }
        cbc::Decryptor::<Aes256>::new((&self.enc).into(), (&self.iv).into())
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
            .ok()
    }

    /// The truncated MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let full = mac_of(&self.mac, parts).finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Constant-time check of a truncated MAC.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8; MAC_LEN]) -> bool {
        mac_of(&self.mac, parts).verify_truncated_left(tag).is_ok()
    }
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMAC-SHA-256, untruncated (the chain-key step).
pub fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    mac_of(key, &[data]).finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbc_round_trips_and_refuses_bad_lengths() {
        let keys = Keys::derive(&[1; 32], INFO_PAYLOAD);
        for len in [0, 1, 15, 16, 17, 100] {
            let pt = vec![7u8; len];
            let ct = keys.encrypt(&pt);
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            assert_eq!(keys.decrypt(&ct), Some(pt));
        }
        assert_eq!(keys.decrypt(&[]), None);
        assert_eq!(keys.decrypt(&[0; 17]), None);
    }

    #[test]
    fn macs_are_truncated_and_checked() {
        let keys = Keys::derive(&[1; 32], INFO_MESSAGE_KEY);
        let tag = keys.mac(&[b"ab", b"c"]);
        assert!(keys.verify(&[b"abc"], &tag));
        let mut bad = tag;
        bad[15] ^= 1;
        assert!(!keys.verify(&[b"abc"], &bad));
        assert_eq!(tag[..], hmac(&keys.mac, b"abc")[..16]);
    }
}
