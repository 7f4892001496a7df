//! Message requests from strangers: the hourly limit and `roster-only`.

use super::bridge::ALICE;
use super::*;

/// A message from `jid` (a stranger: not in the roster) for the request tests.
fn stranger(jid: &str, acks: &Arc<std::sync::atomic::AtomicUsize>) -> RemoteEvent {
    RemoteEvent::Message {
        contact: RemoteUserId::parse(jid).expect("jid"),
        id: Some(format!("m-{jid}")),
        server_id: None,
        body: format!("hello from {jid}"),
        nick: None,
        oob_url: None,
        client: None,
        encrypted: true,
        relations: Relations::default(),
        ack: Box::new(FakeAck(acks.clone())),
    }
}

fn portal_count(h: &Harness) -> usize {
    h.matrix
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::CreateRoom { spec, .. } if !spec.space && spec.is_direct))
        .count()
}

/// At most `max_requests_per_hour` strangers open a request in an hour; the rest are dropped
/// (acknowledged, not shown), the user is told once, and roster contacts are not affected.
#[tokio::test]
async fn message_requests_are_limited_per_hour_and_the_user_is_told_once() {
    let policy = RequestPolicy {
        roster_only: false,
        per_hour: 2,
    };
    let h = harness_with_requests(FakeMatrix::default(), FakeNetwork::default(), policy);
    h.txn("1", vec![invite("$inv", ALICE, true)]).await;
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in 1..=5 {
        h.inject(stranger(&format!("s{n}@x.example"), &acks)).await;
    }
    assert_eq!(portal_count(&h), 2, "{:?}", h.matrix.calls());
    assert_eq!(
        acks.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "all acknowledged"
    );
    let told: Vec<String> = h
        .sends()
        .into_iter()
        .filter(|(_, b)| b.contains("max_requests_per_hour"))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    // A contact in the roster still opens a chat.
    h.inject(RemoteEvent::Contacts(vec![crate::core::ContactUpdate {
        contact: RemoteUserId::parse("friend@x.example").expect("jid"),
        name: None,
        removed: false,
    }]))
    .await;
    h.inject(stranger("friend@x.example", &acks)).await;
    assert_eq!(portal_count(&h), 3);
}

/// With `requests = "roster-only"` a stranger's message opens nothing and is dropped.
#[tokio::test]
async fn roster_only_drops_strangers() {
    let policy = RequestPolicy {
        roster_only: true,
        per_hour: 20,
    };
    let h = harness_with_requests(FakeMatrix::default(), FakeNetwork::default(), policy);
    h.link_alice().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.inject(stranger("s1@x.example", &acks)).await;
    assert_eq!(portal_count(&h), 0);
    assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(h.sends().iter().all(|(_, b)| !b.contains("hello from")));
}

/// A stranger's encrypted message, counting whether it was decrypted or dropped unread.
struct Sealed {
    inner: RemoteEvent,
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
}

/// Strangers' encrypted messages that could open no request are dropped before they are
/// decrypted, so a flood of PreKey messages from fresh devices uses up no prekey and stores
/// no session: under `roster-only` none is decrypted; under the hourly limit only those that
/// open a request are (and the user is still told once).
#[tokio::test]
async fn strangers_turned_away_are_not_decrypted() {
    for (roster_only, per_hour, opened) in [(true, 20, 0), (false, 2, 2)] {
        let policy = RequestPolicy {
            roster_only,
            per_hour,
        };
        let h = harness_with_requests(FakeMatrix::default(), FakeNetwork::default(), policy);
        h.txn("1", vec![invite("$inv", ALICE, true)]).await;
        h.link_alice().await;
        let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let decrypted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let discarded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 1..=100 {
            let jid = format!("s{n}@x.example");
            h.inject(RemoteEvent::Encrypted {
                contact: RemoteUserId::parse(&jid).expect("jid"),
                message: Box::new(Sealed {
                    inner: stranger(&jid, &acks),
                    decrypted: decrypted.clone(),
                    discarded: discarded.clone(),
                }),
            })
            .await;
        }
        let load =
            |n: &Arc<std::sync::atomic::AtomicUsize>| n.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(portal_count(&h), opened, "roster_only {roster_only}");
        assert_eq!(load(&decrypted), opened, "roster_only {roster_only}");
        assert_eq!(load(&discarded), 100 - opened, "roster_only {roster_only}");
        let told = h
            .sends()
            .into_iter()
            .filter(|(_, b)| b.contains("max_requests_per_hour"))
            .count();
        assert_eq!(told, usize::from(!roster_only), "roster_only {roster_only}");
    }
}
