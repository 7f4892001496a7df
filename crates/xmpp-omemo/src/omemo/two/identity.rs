//! Our identity in OMEMO 2 form, and the curve arithmetic OMEMO 2 needs.
//!
//! The account has one libsignal identity: a Curve25519 key pair, which legacy OMEMO publishes
//! as `0x05 ‖ u`. OMEMO 2 publishes the same key in Ed25519 form and signs with EdDSA. We keep
//! one key for both (python-omemo does too) and convert:
//!
//! - **public form**: the Edwards point of the Montgomery `u` with the sign bit 0 (the XEdDSA
//!   convention, `y = (u − 1)/(u + 1)`), so it depends on the public key alone;
//! - **signatures**: XEdDSA (Signal's specification): with `a` the clamped private scalar and
//!   `A = aB`, negate `a` when `A`'s sign bit is 1, so that the signature is a plain Ed25519
//!   signature under the published (sign 0) key. libsignal's own `calculate_signature` does not
//!   do this (it signs with `a` and hides `A`'s sign bit in the top bit of `s`): its signatures
//!   verify as Ed25519 only for the half of the keys whose sign bit is already 0 (a test below
//!   shows both halves), so we sign here;
//! - **peers' keys**: an Ed25519 key of any sign is mapped to its Montgomery `u` for X25519, and
//!   their signatures are checked as Ed25519 against the key exactly as published.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use sha2::{Digest, Sha512};
use wacore_libsignal::protocol::IdentityKeyPair;

use super::Error;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// One account's identity key pair as OMEMO 2 uses it. Debug shows only the public key.
#[derive(Clone)]
pub struct Identity {
    /// The clamped Curve25519 private key.
    private: [u8; 32],
    curve_public: [u8; 32],
    ed_public: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ed25519", &hex(&self.ed_public))
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Identity {
    /// The account's libsignal identity, the same one legacy OMEMO uses.
    pub fn from_libsignal(pair: &IdentityKeyPair) -> Self {
        Self::from_private(*pair.private_key().serialize())
    }

    /// From a raw Curve25519 private key (clamped here).
    pub fn from_private(private: [u8; 32]) -> Self {
        let private = clamp_integer(private);
        let curve_public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        let ed_public = ed25519_from_curve25519(&curve_public)
            .expect("the public key of a private key is on the curve");
        Self {
            private,
            curve_public,
            ed_public,
        }
    }

    /// The identity key as OMEMO 2 publishes it (`<ik>`, `OMEMOKeyExchange.ik`, the
    /// associated data): 32-byte Ed25519, sign bit 0.
    pub fn ed25519_public(&self) -> [u8; 32] {
        self.ed_public
    }

    /// The identity key as X25519 (the legacy 33-byte key without its `0x05`).
    pub fn curve25519_public(&self) -> [u8; 32] {
        self.curve_public
    }

    /// X25519 with our identity key.
    pub(crate) fn agree(&self, their_public: &[u8; 32]) -> Result<[u8; 32], Error> {
        x25519(&self.private, their_public)
    }

    /// An XEdDSA signature of `message` that verifies as Ed25519 under [`Self::ed25519_public`].
    /// OMEMO 2 signs the raw 32-byte X25519 signed prekey with it.
    pub fn sign(&self, message: &[u8], rng: &mut impl rand::CryptoRng) -> [u8; SIGNATURE_LEN] {
        let mut a = Scalar::from_bytes_mod_order(self.private);
        let natural = EdwardsPoint::mul_base(&a).compress();
        if natural.as_bytes()[31] & 0x80 != 0 {
            a = -a;
        }
        let mut z = [0u8; 64];
        rng.fill_bytes(&mut z);
        // r = hash1(a ‖ M ‖ Z), hash1 being SHA-512 with the prefix 0xFE ‖ 0xFF×31.
        let mut prefix = [0xffu8; 32];
        prefix[0] = 0xfe;
        let r = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(prefix)
                .chain_update(a.as_bytes())
                .chain_update(message)
                .chain_update(z)
                .finalize()
                .into(),
        );
        let cap_r = (&r * ED25519_BASEPOINT_TABLE).compress();
        let h = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(cap_r.as_bytes())
                .chain_update(self.ed_public)
                .chain_update(message)
                .finalize()
                .into(),
        );
        let s = r + h * a;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[..32].copy_from_slice(cap_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }
}

/// The Ed25519 form (sign bit 0) of a Curve25519 public key; `None` if `u` is not on the curve.
pub fn ed25519_from_curve25519(curve: &[u8; 32]) -> Option<[u8; 32]> {
    MontgomeryPoint(*curve)
        .to_edwards(0)
        .map(|p| p.compress().to_bytes())
}

/// The Curve25519 form of an Ed25519 public key (either sign); `None` if it does not decode or
/// is of small order.
pub fn curve25519_from_ed25519(ed: &[u8; 32]) -> Option<[u8; 32]> {
    let point = CompressedEdwardsY(*ed).decompress()?;
    if point.is_small_order() {
        return None;
    }
    Some(point.to_montgomery().to_bytes())
}

/// Ed25519 verification (RFC 8032, cofactorless, canonical `s` required) of `signature` over
/// `message` under the key `ed_public` as published.
pub fn verify(ed_public: &[u8; 32], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Some(cap_a) = CompressedEdwardsY(*ed_public).decompress() else {
        return false;
    };
    if cap_a.is_small_order() {
        return false;
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    let h = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(&signature[..32])
            .chain_update(ed_public)
            .chain_update(message)
            .finalize()
            .into(),
    );
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &-cap_a, &s).compress();
    check.as_bytes()[..] == signature[..32]
}

/// X25519; refuses an all-zero result (a small-order peer key), as python's `cryptography` does.
pub(crate) fn x25519(private: &[u8; 32], their_public: &[u8; 32]) -> Result<[u8; 32], Error> {
    let shared = MontgomeryPoint(*their_public)
        .mul_clamped(*private)
        .to_bytes();
    if shared == [0; 32] {
        return Err(Error::BadKey(
            "a Diffie-Hellman result is zero (small-order key)",
        ));
    }
    Ok(shared)
}

/// A fresh X25519 key pair: (private, public).
pub(crate) fn generate_x25519(rng: &mut impl rand::CryptoRng) -> ([u8; 32], [u8; 32]) {
    let mut private = [0u8; 32];
    rng.fill_bytes(&mut private);
    let private = clamp_integer(private);
    (
        private,
        MontgomeryPoint::mul_base_clamped(private).to_bytes(),
    )
}

/// The X25519 public key of a private key.
pub(crate) fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::make_rng()
    }

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect();
        v.try_into().expect("length")
    }

    /// RFC 8032 §7.1, test 1 (empty message).
    #[test]
    fn verifies_the_rfc_8032_vector() {
        let public: [u8; 32] =
            unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig: [u8; 64] = unhex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        assert!(verify(&public, b"", &sig));
        assert!(!verify(&public, b"x", &sig));
        let mut bad = sig;
        bad[63] |= 0x80; // s no longer canonical
        assert!(!verify(&public, b"", &bad));
    }

    /// Identities with both natural sign bits: ours verify under the sign-0 key every time;
    /// libsignal's XEdDSA signature does only when the natural sign bit is 0.
    #[test]
    fn our_signatures_verify_as_ed25519_and_libsignals_only_for_half_the_keys() {
        let mut rng = rng();
        let (mut seen_0, mut seen_1) = (false, false);
        while !(seen_0 && seen_1) {
            let pair = IdentityKeyPair::generate(&mut rng);
            let id = Identity::from_libsignal(&pair);
            assert_eq!(
                &id.curve25519_public()[..],
                pair.identity_key().public_key().public_key_bytes()
            );
            assert_eq!(id.ed25519_public()[31] & 0x80, 0);
            let message = [42u8; 32];
            let ours = id.sign(&message, &mut rng);
            assert!(verify(&id.ed25519_public(), &message, &ours));
            assert!(!verify(&id.ed25519_public(), b"other", &ours));

            let natural = EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order(id.private))
                .compress()
                .to_bytes();
            let theirs = pair
                .private_key()
                .calculate_signature(&message, &mut rng)
                .expect("libsignal signs");
            let sign_1 = natural[31] & 0x80 != 0;
            assert_eq!(verify(&id.ed25519_public(), &message, &theirs), !sign_1);
            if sign_1 {
                seen_1 = true;
            } else {
                seen_0 = true;
            }
        }
    }

    #[test]
    fn the_two_forms_convert_both_ways() {
        let mut rng = rng();
        for _ in 0..8 {
            let (private, public) = generate_x25519(&mut rng);
            let ed = ed25519_from_curve25519(&public).expect("on the curve");
            assert_eq!(curve25519_from_ed25519(&ed), Some(public));
            let mut negated = ed;
            negated[31] |= 0x80;
            assert_eq!(curve25519_from_ed25519(&negated), Some(public));
            let (other, other_public) = generate_x25519(&mut rng);
            assert_eq!(
                x25519(&private, &other_public).expect("dh"),
                x25519(&other, &public).expect("dh")
            );
        }
        assert_eq!(curve25519_from_ed25519(&[0; 32]), None); // the identity's y = 0 is small-order
        assert!(x25519(&[1; 32], &[0; 32]).is_err());
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let id = Identity::from_private([3; 32]);
        let shown = format!("{id:?}");
        assert!(shown.contains(&hex(&id.ed25519_public())));
        assert!(!shown.contains(&hex(&id.private)));
    }
}
