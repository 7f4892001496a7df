//! XEP-0384 v0.3 ("legacy OMEMO", `eu.siacs.conversations.axolotl`): Signal Protocol sessions
//! (libsignal v3 wire format, via `wacore-libsignal`) and the OMEMO envelope around them.
//! <https://xmpp.org/extensions/attic/xep-0384-0.3.0.html>
//!
//! - [`store`]: the persistence seam, one [`OmemoStore`] per linked account; [`MemoryStore`] is
//!   one for tests and tools (in memory, optionally snapshotted to a file);
//! - [`keys`]: our identity, signed prekey rotation, one-time prekey refill, fingerprints;
//! - `signal`: libsignal's store traits as a copy-on-write overlay over the store;
//! - [`payload`]: AES-128-GCM of the body;
//! - [`account`]: encrypt/decrypt without I/O, each returning the state to commit;
//! - [`client`]: [`OmemoClient`], an XMPP client with OMEMO: publishing, device lists, send and
//!   receive as events;
//! - [`trust`]: the devices we know of a contact and the user's trust in them, by fingerprint
//!   (first contact is trusted blindly; a known contact's new device and a changed key are
//!   reported, and under [`TrustPolicy::Strict`] not encrypted to until trusted);
//! - [`features`]: what a contact's client supports, from its caps and disco#info, cached;
//! - [`upload`]: the server's XEP-0363 HTTP upload service and its slots;
//! - [`two`]: OMEMO 2 (`urn:xmpp:omemo:2`), the cryptographic core: X3DH, the Double Ratchet,
//!   the payload and the SCE envelope, interoperable with python-omemo's twomemo (not yet used
//!   by [`OmemoClient`]).

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests2;
#[cfg(test)]
mod trust_tests;

pub mod account;
pub mod client;
pub mod features;
pub mod keys;
mod memory;
pub mod payload;
mod signal;
pub mod store;
pub mod trust;
pub mod two;
pub mod upload;

pub use account::{
    Account, AccountGuard, DecryptError, DecryptFailure, Decrypted, EncryptError, Sealed, Sealed2,
    SkipReason, StateUpdate,
};
pub use client::{
    CatchUpReport, ContactPresence, Delivery, EncryptedMessage, IncomingMessage, MetaMessage,
    Namespace, OmemoClient, OmemoConfig, OmemoError, OmemoEvent, OmemoEvents, PlainMessage,
    Protocols, SendReport, Undecryptable,
};
pub use features::{FeatureCache, Features};
pub use keys::fingerprint;
pub use memory::MemoryStore;
pub use signal::{IdentityChangeSeen, TrustPolicy};
pub use store::{
    Changes, DeviceAddress, DeviceId, DeviceList, KnownIdentity, OmemoStore, OwnIdentity,
    SignedPreKeyEntry, StoreError, StoreResult, Trust,
};
pub use trust::{DeviceInfo, TrustError, parse_fingerprint};
pub use upload::{UploadError, UploadService};

pub use crate::stanza::upload::UploadSlot;
