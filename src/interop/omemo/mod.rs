//! XEP-0384 v0.3 ("legacy OMEMO", `eu.siacs.conversations.axolotl`): Signal Protocol sessions
//! (libsignal v3 wire format, via `wacore-libsignal`) and the OMEMO envelope around them.
//! <https://xmpp.org/extensions/attic/xep-0384-0.3.0.html>

pub mod store;

pub use store::{
    Changes, DeviceAddress, DeviceId, DeviceList, KnownIdentity, OmemoStore, OwnIdentity, SignedPreKeyEntry, StoreError,
    StoreResult, Trust,
};
