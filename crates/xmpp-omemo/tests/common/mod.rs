//! The library's e2e harness: the workspace's test world (`test-world`) and [`ours`], our own
//! OMEMO client in process or as the `omemo_chat` example in a child process.
#![allow(dead_code)]

pub mod ours;

#[allow(unused_imports)]
pub use test_world::{World, free_port, omemo_peer, profanity, repo, xmpp_peer};
