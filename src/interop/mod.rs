//! The interop protocol library: XMPP on our own quick-xml stream layer (and, next, Signal/OMEMO).
//! It knows nothing of Matrix, the core or the store.

pub mod xml;
