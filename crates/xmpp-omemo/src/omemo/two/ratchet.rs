//! The Double Ratchet as OMEMO 2 profiles it.
//!
//! - root chain: `HKDF-SHA-256(salt = root key, ikm = DH output, info "OMEMO Root Chain")`,
//!   64 bytes: the new root key, then the new chain key;
//! - message chains: message key `HMAC(ck, 0x01)`, next chain key `HMAC(ck, 0x02)`;
//! - messages: the message key expands (HKDF, zero salt, "OMEMO Message Key Material") into an
//!   AES-256-CBC key, a MAC key and an IV; the ciphertext goes into an `OMEMOMessage` with the
//!   header, and `HMAC(ad ‖ OMEMOMessage)` truncated to 16 bytes authenticates it;
//! - skipped message keys: at most [`MAX_SKIP`] derived for one message and kept per session
//!   (the oldest dropped first), as python-omemo's defaults.
//!
//! A failed decryption leaves the state as it was: the work happens on a copy.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::identity::{generate_x25519, x25519, x25519_public};
use super::kdf::{
    CHAIN_KEY_SEED, INFO_MESSAGE_KEY, INFO_ROOT_CHAIN, Keys, MESSAGE_KEY_SEED, hkdf, hmac,
};
use super::wire::{AuthenticatedMessage, OmemoMessage, WireError};
use super::{AD_LEN, Error, b64};

/// The most message keys one message may make us skip, and the most a session keeps.
pub const MAX_SKIP: u32 = 1000;

#[derive(Clone, Serialize, Deserialize)]
struct Chain {
    #[serde(with = "b64")]
    key: [u8; 32],
    /// Messages taken from this chain so far.
    n: u32,
}

impl Chain {
    fn new(key: [u8; 32]) -> Self {
        Self { key, n: 0 }
    }

    fn step(&mut self) -> [u8; 32] {
        let (next, message_key) = chain_step(&self.key);
        self.key = next;
        self.n = self.n.wrapping_add(1);
        message_key
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Skipped {
    #[serde(with = "b64")]
    ratchet: [u8; 32],
    n: u32,
    #[serde(with = "b64")]
    key: [u8; 32],
}

/// The ratchet state of one session.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Ratchet {
    #[serde(with = "b64")]
    root: [u8; 32],
    /// Our current ratchet private key.
    #[serde(with = "b64")]
    own: [u8; 32],
    /// Their current ratchet public key.
    #[serde(with = "b64")]
    theirs: [u8; 32],
    sending: Chain,
    receiving: Option<Chain>,
    /// Length of our previous sending chain (`pn`).
    previous_sending: u32,
    skipped: VecDeque<Skipped>,
}

/// One message-chain step: (next chain key, message key).
pub(super) fn chain_step(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (
        hmac(chain_key, &[CHAIN_KEY_SEED]),
        hmac(chain_key, &[MESSAGE_KEY_SEED]),
    )
}

/// One root-chain step: (next root key, chain key).
pub(super) fn root_step(root: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    hkdf(root, dh, INFO_ROOT_CHAIN, &mut okm);
    let (mut next_root, mut chain) = ([0u8; 32], [0u8; 32]);
    next_root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    (next_root, chain)
}

impl Ratchet {
    /// The initiator's ratchet: their signed prekey is their first ratchet key.
    pub(crate) fn active(
        shared_secret: &[u8; 32],
        their_signed_prekey: &[u8; 32],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, Error> {
        let (own, _) = generate_x25519(rng);
        let (root, sending) = root_step(shared_secret, &x25519(&own, their_signed_prekey)?);
        Ok(Self {
            root,
            own,
            theirs: *their_signed_prekey,
            sending: Chain::new(sending),
            receiving: None,
            previous_sending: 0,
            skipped: VecDeque::new(),
        })
    }

    /// The responder's ratchet: our signed prekey was our first ratchet key, and the first
    /// message carries their first one.
    pub(crate) fn passive(
        shared_secret: &[u8; 32],
        signed_prekey_private: &[u8; 32],
        their_ratchet: &[u8; 32],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, Error> {
        let (root, receiving) = root_step(
            shared_secret,
            &x25519(signed_prekey_private, their_ratchet)?,
        );
        let (own, _) = generate_x25519(rng);
        let (root, sending) = root_step(&root, &x25519(&own, their_ratchet)?);
        Ok(Self {
            root,
            own,
            theirs: *their_ratchet,
            sending: Chain::new(sending),
            receiving: Some(Chain::new(receiving)),
            previous_sending: 0,
            skipped: VecDeque::new(),
        })
    }

    pub(crate) fn sending_length(&self) -> u32 {
        self.sending.n
    }

    pub(crate) fn receiving_length(&self) -> Option<u32> {
        self.receiving.as_ref().map(|c| c.n)
    }

    pub(crate) fn skipped_len(&self) -> usize {
        self.skipped.len()
    }

    pub(crate) fn encrypt(&mut self, ad: &[u8; AD_LEN], plaintext: &[u8]) -> AuthenticatedMessage {
        let n = self.sending.n;
        let message_key = self.sending.step();
        let header = (n, self.previous_sending, x25519_public(&self.own));
        seal_message(&message_key, ad, header, plaintext)
    }

    pub(crate) fn decrypt(
        &mut self,
        ad: &[u8; AD_LEN],
        message: &AuthenticatedMessage,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Vec<u8>, Error> {
        let header = OmemoMessage::decode(&message.message)?;
        let ciphertext = header.ciphertext.as_deref().ok_or(WireError::Missing {
            message: "OMEMOMessage",
            field: "ciphertext",
        })?;
        if let Some(at) = self
            .skipped
            .iter()
            .position(|s| s.ratchet == header.dh_pub && s.n == header.n)
        {
            let plaintext = open(&self.skipped[at].key, ad, message, ciphertext)?;
            self.skipped.remove(at);
            return Ok(plaintext);
        }
        let mut next = self.clone();
        let message_key = next.message_key_for(&header, rng)?;
        let plaintext = open(&message_key, ad, message, ciphertext)?;
        while next.skipped.len() > MAX_SKIP as usize {
            next.skipped.pop_front();
        }
        *self = next;
        Ok(plaintext)
    }

    /// Advances to the message key of `header`, keeping the keys it skips.
    fn message_key_for(
        &mut self,
        header: &OmemoMessage,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<[u8; 32], Error> {
        if header.dh_pub != self.theirs {
            if let Some(receiving) = &mut self.receiving {
                // Like python-omemo, a previous chain that would need too many keys is left
                // behind rather than refusing the message that starts the new one.
                let gap = header.pn.saturating_sub(receiving.n);
                if gap <= MAX_SKIP {
                    skip(&mut self.skipped, receiving, self.theirs, gap);
                }
            }
            self.theirs = header.dh_pub;
            let (root, receiving) = root_step(&self.root, &x25519(&self.own, &self.theirs)?);
            self.receiving = Some(Chain::new(receiving));
            let (own, _) = generate_x25519(rng);
            self.own = own;
            self.previous_sending = self.sending.n;
            let (root, sending) = root_step(&root, &x25519(&self.own, &self.theirs)?);
            self.root = root;
            self.sending = Chain::new(sending);
        }
        let receiving = self.receiving.as_mut().ok_or(Error::NoReceivingChain)?;
        if header.n < receiving.n {
            return Err(Error::Duplicate);
        }
        let gap = header.n - receiving.n;
        if gap > MAX_SKIP {
            return Err(Error::TooManySkipped(gap));
        }
        skip(&mut self.skipped, receiving, self.theirs, gap);
        Ok(receiving.step())
    }
}

/// Encrypts with one message key under the header `(n, pn, dh_pub)`.
pub(super) fn seal_message(
    message_key: &[u8; 32],
    ad: &[u8; AD_LEN],
    (n, pn, dh_pub): (u32, u32, [u8; 32]),
    plaintext: &[u8],
) -> AuthenticatedMessage {
    let keys = Keys::derive(message_key, INFO_MESSAGE_KEY);
    let message = OmemoMessage {
        n,
        pn,
        dh_pub,
        ciphertext: Some(keys.encrypt(plaintext)),
    }
    .encode();
    AuthenticatedMessage {
        mac: keys.mac(&[ad, &message]),
        message,
    }
}

fn skip(skipped: &mut VecDeque<Skipped>, chain: &mut Chain, ratchet: [u8; 32], count: u32) {
    for _ in 0..count {
        let n = chain.n;
        skipped.push_back(Skipped {
            ratchet,
            n,
            key: chain.step(),
        });
    }
}

fn open(
    message_key: &[u8; 32],
    ad: &[u8; AD_LEN],
    message: &AuthenticatedMessage,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let keys = Keys::derive(message_key, INFO_MESSAGE_KEY);
    if !keys.verify(&[ad, &message.message], &message.mac) {
        return Err(Error::Authentication);
    }
    keys.decrypt(ciphertext).ok_or(Error::Padding)
}
