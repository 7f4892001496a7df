//! The Matrix connector: the appservice server the homeserver pushes to ([`appservice`]), the
//! client-server API client that implements the core's `MatrixApi` ([`client`]), and the
//! registration file ([`registration`], and [`double_puppet`]'s second one), and end-to-bridge encryption ([`crypto`], put in
//! front of the client by [`encrypted`]).

pub mod appservice;
pub mod client;
pub mod crypto;
pub mod double_puppet;
pub mod encrypted;
pub mod registration;

pub use client::{MatrixClient, RetryPolicy};
pub use crypto::Crypto;
pub use double_puppet::DoublePuppetRegistration;
pub use encrypted::EncryptingMatrix;
pub use registration::Registration;
