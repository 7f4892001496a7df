//! A client connection: server discovery (DNS SRV, XEP-0368), TLS, SASL, binding, XEP-0198
//! stream management with resumption, XEP-0199 pings, reconnects with backoff, carbons, roster
//! and disco#info answers; roster edits, presence subscriptions, XEP-0191 blocking, and
//! XEP-0077 in-band registration.

mod account;
mod client;
mod config;
mod error;
mod negotiate;
mod register;
mod resolver;
mod sm;
mod srv;
mod tls;
mod transport;

pub use client::{Client, Event, Events, OrderedAnswer};
pub use config::{Backoff, ClientConfig, Timeouts, TlsMode};
pub use error::Error;
pub use register::{RegisterError, register};
pub use resolver::Resolver;
pub use sm::InboundTag;
pub use tls::{SpkiSha256, TlsPins, read_ca_file, tls_client_config, tls_client_config_pinned};
