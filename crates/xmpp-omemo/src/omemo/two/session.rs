//! One OMEMO 2 session with one device of a peer: how it starts (we initiate from their bundle,
//! or accept their key exchange), encrypting and decrypting key material, and its bytes.
//!
//! Nothing here does I/O: each call works on a [`Session`] the caller loaded and, when it
//! succeeds, leaves the state the caller must store ([`Session::to_bytes`]) before it acts on
//! the result. A call that fails changes nothing.

use serde::{Deserialize, Serialize};

use super::identity::Identity;
use super::ratchet::Ratchet;
use super::wire::{AuthenticatedMessage, KeyExchange};
use super::x3dh::{self, Bundle};
use super::{AD_LEN, Error, b64};

/// Private keys of our prekeys, looked up by the ids a key exchange names.
pub trait PreKeys {
    /// The X25519 private key of our signed prekey `id`, if we still hold it.
    fn signed_prekey(&self, id: u32) -> Option<[u8; 32]>;
    /// The X25519 private key of our one-time prekey `id`, if we still hold it.
    fn prekey(&self, id: u32) -> Option<[u8; 32]>;
}

/// Who started the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Initiation {
    /// We did, from their bundle.
    Active,
    /// They did, with a key exchange.
    Passive,
}

/// The identifying part of the key exchange that built a session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyExchangeHeader {
    pk_id: u32,
    spk_id: u32,
    /// The initiator's identity key, Ed25519 form.
    #[serde(with = "b64")]
    ik: [u8; 32],
    #[serde(with = "b64")]
    ek: [u8; 32],
}

impl KeyExchangeHeader {
    fn matches(&self, kex: &KeyExchange) -> bool {
        self.pk_id == kex.pk_id
            && self.spk_id == kex.spk_id
            && self.ik == kex.ik
            && self.ek == kex.ek
    }
}

/// An OMEMO 2 session. Debug shows no key material.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// Format of the stored bytes; [`Session::from_bytes`] refuses others.
    version: u32,
    initiation: Initiation,
    /// Whether a message from the peer has decrypted in it. Until then, an actively
    /// initiated session wraps every message in the key exchange.
    confirmed: bool,
    /// The peer's identity key, Ed25519 form, as they published it.
    #[serde(with = "b64")]
    their_identity: [u8; 32],
    #[serde(with = "b64")]
    associated_data: [u8; AD_LEN],
    key_exchange: KeyExchangeHeader,
    ratchet: Ratchet,
}

const VERSION: u32 = 1;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("initiation", &self.initiation)
            .field("confirmed", &self.confirmed)
            .field("sending", &self.ratchet.sending_length())
            .field("receiving", &self.ratchet.receiving_length())
            .finish_non_exhaustive()
    }
}

/// One encrypted key material, ready for `<key rid=… kex=…>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// An encoded `OMEMOKeyExchange` when `kex`, else an `OMEMOAuthenticatedMessage`.
    pub bytes: Vec<u8>,
    /// The `kex="true"` attribute.
    pub kex: bool,
}

impl std::fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Encrypted {{ kex: {}, {} bytes }}",
            self.kex,
            self.bytes.len()
        )
    }
}

/// A session accepted from a key exchange, and what it carried.
#[derive(Debug)]
pub struct Accepted {
    pub session: Session,
    /// The decrypted key material (`key ‖ HMAC`, or 32 zero bytes for an empty message).
    pub key_material: KeyMaterial,
    /// The one-time prekey the peer used: the caller removes it (or hides it until a catch-up
    /// ends) and publishes a new bundle.
    pub prekey_id: u32,
    pub signed_prekey_id: u32,
}

/// Decrypted key material. Debug shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(pub Vec<u8>);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

impl Session {
    /// Starts a session with a device from its bundle (active X3DH: signature checked, a
    /// one-time prekey picked at random). Every [`Session::encrypt`] then yields a key exchange
    /// until the peer's first message decrypts.
    pub fn initiate(
        own: &Identity,
        bundle: &Bundle,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, Error> {
        let init = x3dh::initiate(own, bundle, rng)?;
        let ratchet = Ratchet::active(&init.agreement.shared_secret, &bundle.signed_prekey, rng)?;
        Ok(Self {
            version: VERSION,
            initiation: Initiation::Active,
            confirmed: false,
            their_identity: bundle.identity_key,
            associated_data: init.agreement.associated_data,
            key_exchange: KeyExchangeHeader {
                pk_id: init.prekey_id,
                spk_id: bundle.signed_prekey_id,
                ik: own.ed25519_public(),
                ek: init.ephemeral_public,
            },
            ratchet,
        })
    }

    /// Encrypts one key material (`key ‖ HMAC` of the payload, or 32 zero bytes for an empty
    /// message) for this device.
    pub fn encrypt(&mut self, key_material: &[u8]) -> Encrypted {
        let message = self.ratchet.encrypt(&self.associated_data, key_material);
        if self.initiation == Initiation::Active && !self.confirmed {
            let kex = KeyExchange {
                pk_id: self.key_exchange.pk_id,
                spk_id: self.key_exchange.spk_id,
                ik: self.key_exchange.ik,
                ek: self.key_exchange.ek,
                message,
            };
            Encrypted {
                bytes: kex.encode(),
                kex: true,
            }
        } else {
            Encrypted {
                bytes: message.encode(),
                kex: false,
            }
        }
    }

    /// Decrypts an `OMEMOAuthenticatedMessage` (a `<key>` without `kex`).
    pub fn decrypt(
        &mut self,
        bytes: &[u8],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<KeyMaterial, Error> {
        let message = AuthenticatedMessage::decode(bytes)?;
        self.decrypt_message(&message, rng)
    }

    /// Whether `kex` is the key exchange this session was accepted from (the peer repeats it
    /// until we answer): then [`Session::decrypt_repeated`] decrypts it here, instead of
    /// [`accept`] building a new session.
    pub fn built_from(&self, kex: &KeyExchange) -> bool {
        self.initiation == Initiation::Passive && self.key_exchange.matches(kex)
    }

    /// Decrypts the message inside a repeated key exchange (see [`Session::built_from`]).
    pub fn decrypt_repeated(
        &mut self,
        kex: &KeyExchange,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<KeyMaterial, Error> {
        if !self.built_from(kex) {
            return Err(Error::OtherKeyExchange);
        }
        self.decrypt_message(&kex.message, rng)
    }

    fn decrypt_message(
        &mut self,
        message: &AuthenticatedMessage,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<KeyMaterial, Error> {
        let key_material = self.ratchet.decrypt(&self.associated_data, message, rng)?;
        self.confirmed = true;
        Ok(KeyMaterial(key_material))
    }

    pub fn initiation(&self) -> Initiation {
        self.initiation
    }

    /// Whether a message from the peer has decrypted in this session.
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// The peer's identity key, Ed25519 form, as they published it.
    pub fn their_identity(&self) -> [u8; 32] {
        self.their_identity
    }

    /// Messages received in the current receiving chain (XEP-0384 asks for an empty message
    /// once this reaches 53).
    pub fn receiving_length(&self) -> u32 {
        self.ratchet.receiving_length().unwrap_or(0)
    }

    /// Messages sent in the current sending chain.
    pub fn sending_length(&self) -> u32 {
        self.ratchet.sending_length()
    }

    /// Skipped message keys held.
    pub fn skipped_keys(&self) -> usize {
        self.ratchet.skipped_len()
    }

    /// The bytes a store keeps (JSON, versioned; they hold private keys).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session serialises")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let session: Self =
            serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(e.to_string()))?;
        if session.version != VERSION {
            return Err(Error::Corrupt(format!(
                "session format {} is not {VERSION}",
                session.version
            )));
        }
        Ok(session)
    }
}

/// Accepts a key exchange from a device we have no session with (or whose session it
/// replaces): passive X3DH with the prekeys it names, then its message decrypted.
pub fn accept(
    own: &Identity,
    prekeys: &impl PreKeys,
    kex: &KeyExchange,
    rng: &mut impl rand::CryptoRng,
) -> Result<Accepted, Error> {
    let signed_prekey = prekeys
        .signed_prekey(kex.spk_id)
        .ok_or(Error::UnknownSignedPreKey(kex.spk_id))?;
    let prekey = prekeys
        .prekey(kex.pk_id)
        .ok_or(Error::UnknownPreKey(kex.pk_id))?;
    let agreement = x3dh::respond(own, &kex.ik, &kex.ek, &signed_prekey, &prekey)?;
    let header = super::wire::OmemoMessage::decode(&kex.message.message)?;
    let ratchet = Ratchet::passive(
        &agreement.shared_secret,
        &signed_prekey,
        &header.dh_pub,
        rng,
    )?;
    let mut session = Session {
        version: VERSION,
        initiation: Initiation::Passive,
        confirmed: false,
        their_identity: kex.ik,
        associated_data: agreement.associated_data,
        key_exchange: KeyExchangeHeader {
            pk_id: kex.pk_id,
            spk_id: kex.spk_id,
            ik: kex.ik,
            ek: kex.ek,
        },
        ratchet,
    };
    let key_material = session.decrypt_message(&kex.message, rng)?;
    Ok(Accepted {
        session,
        key_material,
        prekey_id: kex.pk_id,
        signed_prekey_id: kex.spk_id,
    })
}
