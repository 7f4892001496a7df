//! OMEMO 2 (XEP-0384 v0.8 and later, `urn:xmpp:omemo:2`): the cryptographic core, without I/O.
//! <https://xmpp.org/extensions/xep-0384.html>
//!
//! - [`identity`]: our libsignal identity in OMEMO 2 form (Ed25519, XEdDSA signatures), peers'
//!   keys and signatures;
//! - [`Bundle`] and `x3dh`: the key agreement (info "OMEMO X3DH", a one-time prekey always);
//! - [`Session`]: the Double Ratchet with OMEMO 2's KDFs and 16-byte MACs, started with
//!   [`Session::initiate`] (from a bundle) or [`accept`] (from a key exchange); its state is
//!   bytes for the store ([`Session::to_bytes`]);
//! - [`payload`]: the AES-256-CBC + HMAC payload and the key material that travels per device;
//! - [`sce`]: the XEP-0420 envelope that is the payload's plaintext;
//! - [`wire`]: the three protobuf messages, hand-written.
//!
//! Sending a message: `sce::build` → `payload::seal` → for each device `Session::encrypt` (the
//! result says whether it is a `kex` key). Receiving: a `kex` key is decoded with
//! `KeyExchange::decode`; if a stored session [`Session::built_from`] it, decrypt with
//! [`Session::decrypt_repeated`], else [`accept`]; a plain key goes to [`Session::decrypt`]; then
//! `payload::open` and `sce::parse`. Every step returns the state to store; none writes.
//!
//! Interoperability with python-omemo's `twomemo` is tested in `tests/omemo2_interop.rs`.

pub mod identity;
mod kdf;
pub mod payload;
mod ratchet;
pub mod sce;
mod session;
#[cfg(test)]
mod tests;
pub mod wire;
mod x3dh;

pub use identity::Identity;
pub use kdf::{INFO_MESSAGE_KEY, INFO_PAYLOAD, INFO_ROOT_CHAIN, INFO_X3DH};
pub use ratchet::MAX_SKIP;
pub use session::{Accepted, Encrypted, Initiation, KeyMaterial, PreKeys, Session, accept};
pub use wire::{KeyExchange, WireError};
pub use x3dh::Bundle;

/// The namespace of OMEMO 2.
pub const NS: &str = "urn:xmpp:omemo:2";

/// Length of the associated data: both identity keys, Ed25519 form, initiator first.
pub(crate) const AD_LEN: usize = 64;

/// Why an OMEMO 2 operation failed. Never holds key material or plaintext.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the bundle's signed prekey signature does not verify")]
    BadSignature,
    #[error("the bundle has no one-time prekey (OMEMO 2 requires one)")]
    NoPreKey,
    #[error("invalid key: {0}")]
    BadKey(&'static str),
    #[error("the key exchange names signed prekey {0}, which we do not hold")]
    UnknownSignedPreKey(u32),
    #[error("the key exchange names one-time prekey {0}, which we do not hold (used or removed)")]
    UnknownPreKey(u32),
    #[error("the message failed authentication (forged, corrupted or for another session)")]
    Authentication,
    #[error("the message decrypted to invalid padding")]
    Padding,
    #[error("the message was already decrypted (replayed)")]
    Duplicate,
    #[error("the message would skip {0} message keys; at most {MAX_SKIP} are derived")]
    TooManySkipped(u32),
    #[error("the session has not received a message yet, and this one does not start a chain")]
    NoReceivingChain,
    #[error("the key exchange is not the one this session was built from")]
    OtherKeyExchange,
    #[error("key material of {0} bytes; a payload needs 48 (32-byte key and 16-byte MAC)")]
    BadKeyMaterial(usize),
    #[error("stored session does not decode: {0}")]
    Corrupt(String),
}

/// Serde for fixed-size byte arrays as base64 strings (the session bytes).
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(de::Error::custom)?;
        <[u8; N]>::try_from(bytes)
            .map_err(|b| de::Error::custom(format!("{} bytes, expected {N}", b.len())))
    }
}
