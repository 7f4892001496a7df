//! Catch-up from the archive, as the core sees it: live messages wait for the archived ones,
//! and copies of messages bridged before are not decrypted again.

use super::bridge::bob_key;
use super::*;
use crate::store::ArchiveStore as _;

/// An encrypted message as the network hands it over: `decrypt` gives `inner`.
struct Sealed {
    inner: RemoteEvent,
    server_id: String,
    archived: bool,
    decrypted: Arc<std::sync::atomic::AtomicUsize>,
    discarded: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl crate::core::Encrypted for Sealed {
    async fn decrypt(self: Box<Self>) -> Vec<RemoteEvent> {
        self.decrypted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![self.inner]
    }
    fn discard(self: Box<Self>) {
        self.discarded
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn server_id(&self) -> Option<String> {
        Some(self.server_id.clone())
    }
    fn archived(&self) -> bool {
        self.archived
    }
}

struct Counters {
    acks: Arc<std::sync::atomic::AtomicUsize>,
    decrypted: Arc<std::sync::atomic::AtomicUsize>,
    discarded: Arc<std::sync::atomic::AtomicUsize>,
}

impl Counters {
    fn new() -> Self {
        Self {
            acks: Arc::default(),
            decrypted: Arc::default(),
            discarded: Arc::default(),
        }
    }

    fn get(counter: &Arc<std::sync::atomic::AtomicUsize>) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// bob's message `body` stamped `server_id`, sealed (live, or `archived`).
    fn sealed(&self, h: &Harness, server_id: &str, body: &str, archived: bool) -> RemoteEvent {
        let mut inner = h.message(&format!("id-{server_id}"), body, &self.acks);
        if let RemoteEvent::Message { server_id: s, .. } = &mut inner {
            *s = Some(server_id.into());
        }
        RemoteEvent::Encrypted {
            contact: RemoteUserId::parse("bob@x.example").expect("jid"),
            message: Box::new(Sealed {
                inner,
                server_id: server_id.into(),
                archived,
                decrypted: self.decrypted.clone(),
                discarded: self.discarded.clone(),
            }),
        }
    }
}

fn releases(h: &Harness) -> bool {
    h.net.calls().contains(&NetCall::ReleasePrekeys)
}

/// The held prekeys are released (in a task of its own) soon.
async fn wait_for_release(h: &Harness) {
    for _ in 0..200 {
        if releases(h) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the prekeys held during the catch-up were not released");
}

fn alice() -> RemoteUserId {
    RemoteUserId::parse("alice@x.example").expect("jid")
}

fn texts_from_bob(h: &Harness) -> Vec<String> {
    h.sends()
        .into_iter()
        .filter(|(user, _)| user.contains("bob"))
        .map(|(_, body)| body)
        .filter(|body| body.starts_with("msg "))
        .collect()
}

#[tokio::test]
async fn live_messages_wait_for_the_archived_ones_and_copies_are_not_decrypted() {
    let h = harness();
    h.linked_with_bob_portal().await;
    let c = Counters::new();
    h.inject(c.sealed(&h, "s1", "msg 1", false)).await;
    assert_eq!(texts_from_bob(&h), ["msg 1"]);

    // A new session: the archive is read after s1; meanwhile a live s4 comes first.
    h.inject(RemoteEvent::Connected { resumed: false }).await;
    assert!(
        h.net
            .calls()
            .contains(&NetCall::CatchUp(CatchUpFrom::After("s1".into()), 1)),
        "{:?}",
        h.net.calls()
    );
    assert!(h.net.calls().contains(&NetCall::HoldPrekeys));
    h.inject(c.sealed(&h, "s4", "msg 4", false)).await;
    assert_eq!(
        texts_from_bob(&h),
        ["msg 1"],
        "held until the catch-up ends"
    );
    // The archive gives s1 again (the server's copy of what was bridged), then s2 and s3.
    for (id, body) in [("s1", "msg 1"), ("s2", "msg 2"), ("s3", "msg 3")] {
        h.inject(c.sealed(&h, id, body, true)).await;
    }
    // An earlier session's catch-up ending changes nothing.
    h.inject(RemoteEvent::CaughtUp {
        round: 0,
        fetched: 9,
        complete: true,
        failed: false,
    })
    .await;
    assert_eq!(texts_from_bob(&h), ["msg 1", "msg 2", "msg 3"]);
    assert!(
        !releases(&h),
        "the prekeys stay while more archived messages may come"
    );
    h.inject(RemoteEvent::CaughtUp {
        round: 1,
        fetched: 3,
        complete: true,
        failed: false,
    })
    .await;
    assert_eq!(texts_from_bob(&h), ["msg 1", "msg 2", "msg 3", "msg 4"]);
    wait_for_release(&h).await;
    assert_eq!(
        Counters::get(&c.decrypted),
        4,
        "s1's copy was not decrypted"
    );
    assert_eq!(Counters::get(&c.discarded), 1);
    assert_eq!(
        h.store.archive_position(&alice()).expect("read").as_deref(),
        Some("s4"),
        "every message finished: the position is the last"
    );
    assert!(
        h.store
            .event_of(&bob_key(), "id-s4")
            .expect("read")
            .is_some()
    );
}

#[tokio::test]
async fn a_login_without_a_position_reads_the_archive_from_its_first_connection() {
    let h = harness();
    h.linked_with_bob_portal().await;
    h.inject(RemoteEvent::Connected { resumed: false }).await;
    assert!(
        !h.net
            .calls()
            .iter()
            .any(|call| matches!(call, NetCall::CatchUp(..))),
        "nothing was missed yet"
    );
    let before = std::time::SystemTime::now();
    // The bridge stops before any message moves the position: the next session reads the
    // archive from (about) the first connection.
    h.inject(RemoteEvent::Connected { resumed: false }).await;
    let since = h.net.calls().into_iter().find_map(|call| match call {
        NetCall::CatchUp(CatchUpFrom::Since(since), _) => Some(since),
        _ => None,
    });
    let since = since.expect("a catch-up from a time");
    let ago = before.duration_since(since).expect("in the past");
    assert!(
        ago >= std::time::Duration::from_secs(60) && ago <= std::time::Duration::from_secs(200),
        "{ago:?}"
    );
}

#[tokio::test]
async fn a_failed_catch_up_lets_the_held_messages_go_and_keeps_the_position() {
    let h = harness();
    h.linked_with_bob_portal().await;
    let c = Counters::new();
    h.inject(c.sealed(&h, "s1", "msg 1", false)).await;
    h.inject(RemoteEvent::Connected { resumed: false }).await;
    h.inject(c.sealed(&h, "s2", "msg 2", false)).await;
    assert_eq!(texts_from_bob(&h), ["msg 1"]);
    h.inject(RemoteEvent::CaughtUp {
        round: 1,
        fetched: 0,
        complete: false,
        failed: true,
    })
    .await;
    assert_eq!(texts_from_bob(&h), ["msg 1", "msg 2"]);
    wait_for_release(&h).await;
    assert_eq!(
        h.store.archive_position(&alice()).expect("read").as_deref(),
        Some("s1"),
        "the next session reads the archive from s1 again"
    );
}
