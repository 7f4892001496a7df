//! An XMPP client library with legacy OMEMO (XEP-0384 v0.3) on libsignal, written for bridges:
//! many accounts per process, untrusted servers and peers, and durability that a caller can
//! build exactly-once delivery on. It knows nothing of Matrix or of any bridge.
//!
//! The API, in four words:
//! - a **client** is one account's connection: [`stream::Client`] (TLS, SASL SCRAM, binding,
//!   XEP-0198 resumption, reconnects, roster, blocking) and on top of it
//!   [`omemo::OmemoClient`], which publishes the OMEMO device and bundle and turns messages into
//!   events;
//! - an **account** is one bare JID's Signal identity and sessions ([`omemo::Account`]), kept in
//!   an [`omemo::OmemoStore`] the caller implements (or [`omemo::MemoryStore`]);
//! - an **event** is what a client reports: [`omemo::OmemoEvent`] (a decrypted message, an
//!   undecryptable one, an identity change, ...) or, below it, [`stream::Event`];
//! - a **delivery** ([`omemo::Delivery`]) comes with each inbound message and holds the advanced
//!   Signal state: the caller does its own durable work first, then commits the delivery, which
//!   stores the state, flushes, and only then acknowledges the stanza to the server. Until
//!   then the sender's sessions are held (a scope of the account's lock): a caller that
//!   handles several contacts side by side sets [`omemo::OmemoConfig::defer_decryption`] and
//!   decrypts each [`omemo::EncryptedMessage`] where it handles that contact, so one
//!   contact's pending message never holds up another's.
//!
//! Trust ([`omemo::TrustPolicy`], [`omemo::trust`]): a contact met for the first time has all
//! its devices trusted blindly and silently; a known contact's new device and a known device's
//! changed key are reported ([`omemo::OmemoEvent::IdentityChanged`]) and, under the strict
//! policy, not encrypted to until the user trusts them by fingerprint
//! ([`omemo::OmemoClient::set_trust_by_fingerprint`]); a device the user refuses is not encrypted
//! to under either policy. Messages from every device are decrypted.
//!
//! Modules: [`stream`], [`omemo`], [`jid`], and below them [`stanza`] (the stanzas and payloads
//! a client sends and receives, one file per RFC/XEP) and [`xml`] (the element tree they carry
//! unknown payloads in, and the stream reader's limits). Wire helpers that only the library
//! itself needs (disco, caps, pubsub requests, data forms, hints, EME, ping, the registration
//! form, HTTP upload slots, namespaces) are crate-private; the `wire` feature makes them public too, for this
//! crate's own protocol tests, the fuzzer and tools, with no stability promise.
#![forbid(unsafe_code)]

/// Declares modules that are public with the `wire` feature and crate-private without it.
macro_rules! wire_modules {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "wire")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "wire"))]
        #[allow(dead_code)] // items only the tests and the fuzzer use
        pub(crate) mod $name;
    )*};
}
pub(crate) use wire_modules;

pub mod jid;
pub mod omemo;
pub mod stanza;
pub mod stream;
pub mod xml;

pub use jid::Jid;
pub use omemo::features::{FeatureCache, Features};
pub use omemo::upload::{UploadError, UploadService};
pub use stanza::extensions::{ChatState, Extensions, Reactions, Reply, strip_fallback};
pub use stanza::upload::UploadSlot;
