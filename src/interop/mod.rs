//! The interop protocol library: XMPP on our own quick-xml stream layer, and Signal/OMEMO.
//! It knows nothing of Matrix, the core or the store.

pub mod jid;
pub mod omemo;
pub mod stanza;
pub mod stream;
pub mod xml;

pub use jid::Jid;
