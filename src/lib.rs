//! interop-bridge: a Matrix appservice bridge to Signal-Protocol-encrypted interop networks.
//!
//! See ARCHITECTURE.md for the map: `core` knows only traits, `matrix` (and later `network`)
//! implement them, `store` persists mappings, `commands` holds the management-room commands,
//! `convert` turns message content between Matrix and XMPP.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod convert;
pub mod core;
pub mod daemon;
pub mod ids;
pub mod matrix;
pub mod media;
pub mod network;
pub mod store;
