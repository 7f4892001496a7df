//! Encryption at rest of the store's secrets (`database.key`): the key derivation
//! ([`DatabaseKey`]) and the one seam through which the sled store seals and opens the values of
//! its secret-bearing trees ([`Seal`]).
//!
//! - **Key.** The configured secret (a passphrase or the contents of a key file) is the input
//!   of HKDF-SHA256 with a fixed salt; each use gets its own 32-byte key by its own `info`
//!   string: the sled values ([`VALUES_INFO`]) and the Matrix crypto stores
//!   ([`CRYPTO_STORE_INFO`]). HKDF does not slow guessing down, so the secret must be random
//!   (a key file of 32 random bytes, or `openssl rand -base64 32`), not a memorable password:
//!   [`MIN_SECRET_BYTES`] is the least accepted.
//! - **Sealed value.** `0x01 ‖ 24-byte random nonce ‖ XChaCha20-Poly1305 ciphertext and tag`.
//!   The associated data is [`AD_LABEL`] ‖ tree name ‖ `0x00` ‖ the record's key bytes, so a
//!   sealed value moved to another key or another tree does not open. Random 192-bit nonces
//!   never repeat in practice, however many values are written under one key.
//! - **Which trees.** [`keys::SEALED_TREES`]; keys stay in the clear (prefix scans need them).
//!
//! An authentication failure is [`Error::Corrupt`] naming the tree, never the value.

use std::borrow::Cow;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::keys;
use super::{Error, Result};

/// The HKDF salt: fixed, so that the same secret gives the same keys for the sled store and the
/// crypto stores, which live apart.
const SALT: &[u8] = b"interop-bridge database.key v1";
/// HKDF `info` of the key that seals the sled store's values.
pub const VALUES_INFO: &[u8] = b"interop-bridge sled values v1";
/// HKDF `info` of the key of the Matrix crypto stores (matrix-sdk-sqlite's store cipher).
pub const CRYPTO_STORE_INFO: &[u8] = b"interop-bridge matrix crypto stores v1";
/// The first bytes of every sealed value's associated data.
const AD_LABEL: &[u8] = b"interop-bridge sealed value v1\0";
/// The first byte of a sealed value: its format.
const FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// The pseudo-tree name of the key-check file's sealed value (`sled_at_rest.rs`).
pub(super) const KEY_CHECK: &str = "key-check";
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The key derived from `database.key`. `Debug` shows nothing of it; the bytes are wiped on
/// drop.
#[derive(Clone)]
pub struct DatabaseKey {
    prk: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseKey(<redacted>)")
    }
}

impl DatabaseKey {
    /// Derives the key from the configured secret. The error (a secret too short) never holds
    /// the secret.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the key is {} bytes long; at least {MIN_SECRET_BYTES} random bytes are needed \
                 (e.g. `openssl rand -base64 32`)",
                secret.len()
            ));
        }
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SALT), secret);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&prk);
        Ok(Self { prk: bytes })
    }

    /// The 32-byte key for `info` (one of the `*_INFO` constants).
    pub fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hkdf = Hkdf::<Sha256>::from_prk(&self.prk[..]).expect("a 32-byte PRK is long enough");
        let mut okm = Zeroizing::new([0u8; 32]);
        hkdf.expand(info, &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }
}

/// The AEAD of the sealed trees, keyed with [`VALUES_INFO`].
struct Sealer {
    cipher: XChaCha20Poly1305,
}

/// How a store's secret trees are written: in the clear (`Seal::default()`, no key) or sealed.
/// Cheap to clone. Every read and write of a tree in [`keys::SEALED_TREES`] goes through
/// [`seal`](Self::seal) and [`open`](Self::open).
#[derive(Clone, Default)]
pub struct Seal(Option<Arc<Sealer>>);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_sealed() { "Sealed" } else { "Plain" })
    }
}

fn sealed_name(tree: &str) -> bool {
    keys::SEALED_TREES.contains(&tree) || tree == KEY_CHECK
}

/// The associated data of the value at `key` in `tree`.
fn associated_data(tree: &str, key: &[u8]) -> Vec<u8> {
    debug_assert!(!tree.as_bytes().contains(&0), "tree names hold no NUL");
    let mut ad = Vec::with_capacity(AD_LABEL.len() + tree.len() + 1 + key.len());
    ad.extend_from_slice(AD_LABEL);
    ad.extend_from_slice(tree.as_bytes());
    ad.push(0);
    ad.extend_from_slice(key);
    ad
}

impl Seal {
    /// Seals with `key`'s value key.
    pub fn with_key(key: &DatabaseKey) -> Self {
        let value_key = key.derive(VALUES_INFO);
        let cipher = XChaCha20Poly1305::new_from_slice(&value_key[..])
            .expect("XChaCha20-Poly1305 takes a 32-byte key");
        Self(Some(Arc::new(Sealer { cipher })))
    }

    pub fn is_sealed(&self) -> bool {
        self.0.is_some()
    }

    /// The bytes to store at `key` in `tree` for `value`: `value` itself when plain.
    pub fn seal(&self, tree: &'static str, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>> {
        debug_assert!(sealed_name(tree), "{tree} is not sealed");
        let Some(sealer) = &self.0 else {
            return Ok(value);
        };
        let value = Zeroizing::new(value);
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::Backend(format!("no randomness for a nonce: {e}")))?;
        let ad = associated_data(tree, key);
        let payload = Payload {
            msg: value.as_slice(),
            aad: &ad,
        };
        let sealed = sealer
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| Error::Backend(format!("sealing a value of `{tree}` failed")))?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The value stored as `stored` at `key` in `tree`: `stored` itself when plain. A value
    /// that does not authenticate (another key, another record, altered bytes) is
    /// [`Error::Corrupt`].
    pub fn open<'a>(
        &self,
        tree: &'static str,
        key: &[u8],
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>> {
        debug_assert!(sealed_name(tree), "{tree} is not sealed");
        let Some(sealer) = &self.0 else {
            return Ok(Cow::Borrowed(stored));
        };
        let corrupt = |reason: &str| Error::Corrupt {
            tree,
            reason: reason.to_owned(),
        };
        let Some((&FORMAT_V1, rest)) = stored.split_first() else {
            return Err(corrupt("the value is not sealed (unknown format byte)"));
        };
        if rest.len() < NONCE_BYTES + TAG_BYTES {
            return Err(corrupt("the sealed value is truncated"));
        }
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let ad = associated_data(tree, key);
        let payload = Payload {
            msg: sealed,
            aad: &ad,
        };
        let value = sealer
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| {
                corrupt("the sealed value does not authenticate (another key, record or tree)")
            })?;
        Ok(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> DatabaseKey {
        DatabaseKey::from_secret(secret.as_bytes()).expect("a long enough secret")
    }

    #[test]
    fn round_trip_and_plain_passthrough() {
        let seal = Seal::with_key(&key("correct horse battery staple"));
        let sealed = seal
            .seal(keys::JID_LOGIN, b"a@x\xFF", b"secret".to_vec())
            .expect("seal");
        assert_eq!(sealed.len(), 1 + NONCE_BYTES + 6 + TAG_BYTES);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let opened = seal
            .open(keys::JID_LOGIN, b"a@x\xFF", &sealed)
            .expect("open");
        assert_eq!(&*opened, b"secret");
        let again = seal
            .seal(keys::JID_LOGIN, b"a@x\xFF", b"secret".to_vec())
            .expect("seal");
        assert_ne!(again, sealed, "every sealing draws a new nonce");

        let plain = Seal::default();
        assert_eq!(
            plain
                .seal(keys::JID_LOGIN, b"k", b"v".to_vec())
                .expect("plain"),
            b"v"
        );
        assert_eq!(
            &*plain.open(keys::JID_LOGIN, b"k", b"v").expect("plain"),
            b"v"
        );
    }

    #[test]
    fn another_key_record_tree_or_bit_does_not_open() {
        let seal = Seal::with_key(&key("correct horse battery staple"));
        let sealed = seal
            .seal(
                keys::JID_LOGIN,
                b"a@x\xFF",
                b"{\"password\":\"pw\"}".to_vec(),
            )
            .expect("seal");
        let other = Seal::with_key(&key("another key of enough bytes"));
        let mut flipped = sealed.clone();
        *flipped.last_mut().expect("not empty") ^= 1;
        let cases = [
            other.open(keys::JID_LOGIN, b"a@x\xFF", &sealed),
            seal.open(keys::JID_LOGIN, b"b@x\xFF", &sealed),
            seal.open(keys::POSITION_PENDINGEVENT, b"a@x\xFF", &sealed),
            seal.open(keys::JID_LOGIN, b"a@x\xFF", &flipped),
            seal.open(keys::JID_LOGIN, b"a@x\xFF", &sealed[..20]),
            seal.open(keys::JID_LOGIN, b"a@x\xFF", b"{\"password\":\"pw\"}"),
        ];
        for case in cases {
            match case {
                Err(e @ Error::Corrupt { tree, .. }) => {
                    assert!(tree == keys::JID_LOGIN || tree == keys::POSITION_PENDINGEVENT);
                    assert!(!e.to_string().contains("pw"), "{e}");
                }
                other => panic!("expected Corrupt, got {:?}", other.map(|v| v.len())),
            }
        }
    }

    use crate::ids::hex;

    /// RFC 5869 HKDF-SHA256 with our salt and `info`s (computed independently with Python's
    /// `hmac`): a change of the derivation would make every sealed database unreadable.
    #[test]
    fn derivation_vectors() {
        let k = key("0123456789abcdef0123456789abcdef");
        assert_eq!(
            hex(&k.derive(VALUES_INFO)[..]),
            "95e17476035cadbf113dd24570e7185d44ad42e92a49fbde0908b2c76dbeb409"
        );
        assert_eq!(
            hex(&k.derive(CRYPTO_STORE_INFO)[..]),
            "e8fdf043bf46be6bb46ff6d9a43c1bc8c1069e5edaf45027432aaad37e293fae"
        );
    }

    #[test]
    fn derivation_is_fixed_and_separates_uses() {
        let k = key("0123456789abcdef0123456789abcdef");
        assert_eq!(
            k.derive(VALUES_INFO),
            key("0123456789abcdef0123456789abcdef").derive(VALUES_INFO)
        );
        assert_ne!(k.derive(VALUES_INFO), k.derive(CRYPTO_STORE_INFO));
        assert_ne!(
            k.derive(VALUES_INFO),
            key("0123456789abcdef0123456789abcdeF").derive(VALUES_INFO)
        );
        assert!(DatabaseKey::from_secret(b"short").is_err());
        assert_eq!(format!("{k:?}"), "DatabaseKey(<redacted>)");
    }
}
