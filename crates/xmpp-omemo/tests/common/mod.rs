//! The library's e2e harness: the workspace's test world (`test-world`) and [`ours`], our own
//! OMEMO client in process or as the `omemo_chat` example in a child process.
#![allow(dead_code)]

pub mod ours;

#[allow(unused_imports)]
pub use test_world::{World, free_port, omemo_peer, profanity, repo, xmpp_peer};

/// Waits up to `limit` for the first stream event `pick` accepts, skipping (and printing) the
/// others.
pub async fn wait_for<T>(
    events: &mut xmpp_omemo::stream::Events,
    what: &str,
    limit: std::time::Duration,
    mut pick: impl FnMut(xmpp_omemo::stream::Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"));
        let shown = format!("{event:?}");
        match pick(event) {
            Some(found) => return found,
            None => eprintln!("(skipped while waiting for {what}: {shown})"),
        }
    }
}
