//! X3DH as OMEMO 2 profiles it: X25519, SHA-256, info "OMEMO X3DH", a one-time prekey always,
//! identity keys in Ed25519 form in the bundle, the key exchange and the associated data.
//!
//! `SK = HKDF-SHA-256(salt = 32 zero bytes, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 ‖ DH4,
//! info = "OMEMO X3DH")`, 32 bytes, with `DH1 = DH(IK_A, SPK_B)`, `DH2 = DH(EK_A, IK_B)`,
//! `DH3 = DH(EK_A, SPK_B)`, `DH4 = DH(EK_A, OPK_B)`; `AD = IK_A ‖ IK_B` (Ed25519 forms, as sent).

use super::identity::{
    Identity, SIGNATURE_LEN, curve25519_from_ed25519, generate_x25519, verify, x25519,
};
use super::kdf::{INFO_X3DH, hkdf};
use super::{AD_LEN, Error};

/// A peer device's published OMEMO 2 bundle (`<bundle xmlns="urn:xmpp:omemo:2">`), decoded from
/// base64 by the XMPP layer.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `<ik>`: the identity key, Ed25519 form.
    pub identity_key: [u8; 32],
    /// `<spk id>`.
    pub signed_prekey_id: u32,
    /// `<spk>`: X25519.
    pub signed_prekey: [u8; 32],
    /// `<spks>`: the identity key's Ed25519 signature over the 32 bytes of `<spk>`.
    pub signed_prekey_signature: [u8; SIGNATURE_LEN],
    /// `<pk id>` … : one-time prekeys, X25519.
    pub prekeys: Vec<(u32, [u8; 32])>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("prekeys", &self.prekeys.len())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Whether `<spks>` is the identity key's signature over `<spk>`.
    pub fn signature_is_valid(&self) -> bool {
        verify(
            &self.identity_key,
            &self.signed_prekey,
            &self.signed_prekey_signature,
        )
    }
}

/// The outcome of X3DH on either side.
pub(crate) struct Agreement {
    pub shared_secret: [u8; 32],
    pub associated_data: [u8; AD_LEN],
}

/// What the initiator sends in its `OMEMOKeyExchange`s.
pub(crate) struct Initiation {
    pub agreement: Agreement,
    pub prekey_id: u32,
    pub ephemeral_public: [u8; 32],
}

pub(super) fn derive(
    dhs: [[u8; 32]; 4],
    ik_initiator: &[u8; 32],
    ik_responder: &[u8; 32],
) -> Agreement {
    let mut ikm = [0xffu8; 32 * 5];
    for (i, dh) in dhs.iter().enumerate() {
        ikm[32 * (i + 1)..32 * (i + 2)].copy_from_slice(dh);
    }
    let mut shared_secret = [0u8; 32];
    hkdf(&[0; 32], &ikm, INFO_X3DH, &mut shared_secret);
    let mut associated_data = [0u8; AD_LEN];
    associated_data[..32].copy_from_slice(ik_initiator);
    associated_data[32..].copy_from_slice(ik_responder);
    Agreement {
        shared_secret,
        associated_data,
    }
}

/// The initiator's side: checks the signature, picks a one-time prekey at random.
pub(crate) fn initiate(
    own: &Identity,
    bundle: &Bundle,
    rng: &mut impl rand::CryptoRng,
) -> Result<Initiation, Error> {
    if !bundle.signature_is_valid() {
        return Err(Error::BadSignature);
    }
    if bundle.prekeys.is_empty() {
        return Err(Error::NoPreKey);
    }
    let their_identity = curve25519_from_ed25519(&bundle.identity_key).ok_or(Error::BadKey(
        "the bundle's identity key is not a valid Ed25519 key",
    ))?;
    let mut pick = [0u8; 8];
    rng.fill_bytes(&mut pick);
    let at = (u64::from_le_bytes(pick) % bundle.prekeys.len() as u64) as usize;
    let (prekey_id, prekey) = bundle.prekeys[at];
    let (ephemeral, ephemeral_public) = generate_x25519(rng);
    let dhs = [
        own.agree(&bundle.signed_prekey)?,
        x25519(&ephemeral, &their_identity)?,
        x25519(&ephemeral, &bundle.signed_prekey)?,
        x25519(&ephemeral, &prekey)?,
    ];
    Ok(Initiation {
        agreement: derive(dhs, &own.ed25519_public(), &bundle.identity_key),
        prekey_id,
        ephemeral_public,
    })
}

/// The responder's side, with the private keys of the prekeys the key exchange names.
pub(crate) fn respond(
    own: &Identity,
    their_identity_ed: &[u8; 32],
    their_ephemeral: &[u8; 32],
    signed_prekey: &[u8; 32],
    prekey: &[u8; 32],
) -> Result<Agreement, Error> {
    let their_identity = curve25519_from_ed25519(their_identity_ed).ok_or(Error::BadKey(
        "the sender's identity key is not a valid Ed25519 key",
    ))?;
    let dhs = [
        x25519(signed_prekey, &their_identity)?,
        own.agree(their_ephemeral)?,
        x25519(signed_prekey, their_ephemeral)?,
        x25519(prekey, their_ephemeral)?,
    ];
    Ok(derive(dhs, their_identity_ed, &own.ed25519_public()))
}
