//! The Matrix connector: the appservice server the homeserver pushes to ([`appservice`]), the
//! client-server API client that implements the core's `MatrixApi` ([`client`]), and the
//! registration file ([`registration`]).

pub mod appservice;
pub mod client;
pub mod registration;

pub use client::{MatrixClient, RetryPolicy};
pub use registration::Registration;
