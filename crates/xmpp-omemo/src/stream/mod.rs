//! A client connection: TLS, SASL, binding, XEP-0198 stream management with resumption, XEP-0199
//! pings, reconnects with backoff, carbons, roster and disco#info answers; roster edits,
//! presence subscriptions, XEP-0191 blocking, and XEP-0077 in-band registration.

mod account;
mod client;
mod config;
mod error;
mod negotiate;
mod register;
mod sm;
mod transport;

pub use client::{Client, Event};
pub use config::{Backoff, ClientConfig, Timeouts, TlsMode};
pub use error::Error;
pub use register::{RegisterError, register};
pub use sm::InboundTag;
pub use transport::tls_client_config;
