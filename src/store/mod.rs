//! Persistence: small traits per concern, a memory and a sled implementation.
