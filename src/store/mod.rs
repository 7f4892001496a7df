//! Persistence: small traits per concern ([`traits`]), an in-memory implementation for tests
//! ([`memory`]), the sled implementation ([`sled`], its OMEMO half in `sled_omemo`, its logins
//! half in `sled_logins`), the tree catalogue and key codec ([`keys`]), and one conformance
//! suite run against both (`conformance`, compiled for tests only).
//!
//! Durability is explicit: writes become durable only at [`Store::flush`], and callers flush
//! before they acknowledge anything to a peer (PRODUCT.md, "Durability rule").

#[cfg(test)]
mod conformance;
pub mod keys;
pub mod memory;
pub mod seal;
pub mod sled;
mod sled_at_rest;
mod sled_logins;
mod sled_omemo;
pub mod traits;

pub use self::sled::SledStore;
pub use memory::MemoryStore;
pub use seal::DatabaseKey;
pub use sled_at_rest::{AtRest, KEY_CHECK_FILE, at_rest_state};
pub use traits::*;

/// Errors from the store. `Display` never contains stored values (they may be secret).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend failed (I/O, corruption detected by the backend).
    #[error("store backend error: {0}")]
    Backend(String),
    /// A stored value could not be decoded: names the tree, never the value.
    #[error("corrupt value in tree `{tree}`: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    /// The database was written by a newer version of the bridge.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); \
         refusing to open it (upgrade interop-bridge or restore a backup)"
    )]
    NewerSchema { found: u32, supported: u32 },
    /// The database is encrypted at rest and no key was given.
    #[error("the database is encrypted: set database.key")]
    KeyRequired,
    /// The given key does not open the database (nothing on disk was changed).
    #[error(
        "database.key is not the key this database was encrypted with (its key-check file does \
         not authenticate); nothing was changed"
    )]
    WrongKey,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The OMEMO layer's view of a store failure. Keeps only our `Display`, which never holds
/// stored values (a corrupt value is reported by its tree name).
impl From<Error> for xmpp_omemo::omemo::StoreError {
    fn from(e: Error) -> Self {
        Self(e.to_string())
    }
}
