//! Files in the core, with a fake web: a contact's link the bridge must not fetch, one too
//! large, and files when the bridge does not bridge them. The transfers themselves are tested
//! end to end (`tests/bridge_media.rs`) and in `media::transfer`.

use super::bridge::{ALICE, BOB_GHOST};
use super::*;
use crate::media::{ByteStream, MediaError, WebFiles};

/// A web whose every fetch fails with the error its URL names.
struct FakeWeb;

#[async_trait::async_trait]
impl WebFiles for FakeWeb {
    async fn get(&self, url: &str, limit: u64) -> Result<ByteStream, MediaError> {
        if url.contains("metadata") {
            Err(MediaError::Forbidden("169.254.169.254".into()))
        } else if url.contains("/ok/") {
            Ok(crate::media::http::from_bytes(
                bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n a small picture"),
                Some("image/png".into()),
            ))
        } else if url.contains("huge") {
            Err(MediaError::TooLarge {
                size: limit + 1_000_000,
                limit,
            })
        } else {
            Err(MediaError::Status(404))
        }
    }
    async fn put(
        &self,
        _url: &str,
        _headers: &[(String, String)],
        _content_type: &str,
        _body: ByteStream,
    ) -> Result<(), MediaError> {
        Err(MediaError::Status(500))
    }
}

fn media_harness() -> Harness {
    media_harness_with(FakeMatrix::default())
}

fn media_harness_with(matrix: FakeMatrix) -> Harness {
    let media = super::super::MediaSettings {
        web: Arc::new(FakeWeb),
        max_bytes: 20_000_000,
        stall: std::time::Duration::from_secs(5),
    };
    harness_with_media(
        matrix,
        FakeNetwork::default(),
        RequestPolicy::default(),
        Some(media),
    )
}

fn link(path: &str) -> String {
    format!("aesgcm://up.example/{path}#{}", "ab".repeat(44))
}

/// A message from bob's phone whose body is `body`.
fn from_bob(id: &str, body: &str, acks: &Arc<std::sync::atomic::AtomicUsize>) -> RemoteEvent {
    RemoteEvent::Message {
        contact: RemoteUserId::parse("bob@x.example").expect("jid"),
        id: Some(id.into()),
        server_id: None,
        body: body.into(),
        nick: None,
        oob_url: None,
        client: Some("bob@x.example/phone".into()),
        encrypted: true,
        relations: Relations::default(),
        ack: Box::new(FakeAck(acks.clone())),
    }
}

/// The bodies bob's ghost posted as JSON events (files, and the notices in their place).
fn ghost_events(h: &Harness) -> Vec<Value> {
    h.matrix
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Event { user, content, .. } if user == BOB_GHOST => Some(content),
            _ => None,
        })
        .collect()
}

async fn until_acked(acks: &Arc<std::sync::atomic::AtomicUsize>, n: usize) {
    for _ in 0..500 {
        if acks.load(std::sync::atomic::Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("not acknowledged");
}

#[tokio::test]
async fn a_link_the_bridge_must_not_fetch_becomes_a_notice_once() {
    let h = media_harness();
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = h.net.sender();
    let event = from_bob("f1", &link("latest/metadata.jpg"), &acks);
    sender.send(event).await.expect("login alive");
    until_acked(&acks, 1).await;
    // Delivered again (the ack lost): nothing new is posted.
    let again = from_bob("f1", &link("latest/metadata.jpg"), &acks);
    sender.send(again).await.expect("login alive");
    until_acked(&acks, 2).await;
    let events = ghost_events(&h);
    assert_eq!(events.len(), 1, "{events:?}");
    let body = events[0]["body"].as_str().expect("body");
    assert_eq!(events[0]["msgtype"], "m.notice");
    assert!(body.contains("could not be bridged"), "{body}");
    assert!(body.contains("169.254.169.254"), "{body}");
    assert!(
        !body.contains("abab"),
        "the link's key is never shown: {body}"
    );
    assert!(
        !h.net
            .calls()
            .iter()
            .any(|c| matches!(c, NetCall::Refuse(..))),
        "only a file too large is refused to the contact"
    );
}

#[tokio::test]
async fn a_file_too_large_is_refused_to_the_contacts_client_and_noticed() {
    let h = media_harness();
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let event = from_bob("big1", &link("huge.bin"), &acks);
    h.net.sender().send(event).await.expect("login alive");
    until_acked(&acks, 1).await;
    let refused = h
        .net
        .calls()
        .into_iter()
        .find_map(|c| match c {
            NetCall::Refuse(contact, client, id, why) => Some((contact, client, id, why)),
            _ => None,
        })
        .expect("an error reply to bob");
    assert_eq!(refused.0, "bob@x.example");
    assert_eq!(refused.1.as_deref(), Some("bob@x.example/phone"));
    assert_eq!(refused.2.as_deref(), Some("big1"));
    assert!(refused.3.contains("too large"), "{}", refused.3);
    let events = ghost_events(&h);
    let body = events[0]["body"].as_str().expect("body");
    assert!(
        body.contains("too large") && body.contains("20.0 MB"),
        "{body}"
    );
}

#[tokio::test]
async fn a_link_inside_a_text_is_text_and_never_fetched() {
    let h = media_harness();
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = h.net.sender();
    let inside = format!("see {}", link("a.jpg"));
    sender
        .send(from_bob("t1", &inside, &acks))
        .await
        .expect("login alive");
    until_acked(&acks, 1).await;
    assert!(ghost_events(&h).is_empty(), "nothing fetched for a mention");
    assert!(
        h.sends().iter().any(|(_, b)| b == &inside),
        "{:?}",
        h.sends()
    );
}

#[tokio::test]
async fn without_media_a_users_file_is_reported_not_delivered() {
    let h = harness();
    let room = h.linked_with_bob_portal().await;
    let image = raw(json!({
        "type": "m.room.message", "sender": ALICE, "room_id": room, "event_id": "$img",
        "origin_server_ts": 5,
        "content": { "msgtype": "m.image", "body": "cat.jpg", "url": "mxc://hs.example/cat" },
    }));
    h.txn("img", vec![image]).await;
    let failure = h
        .sends()
        .into_iter()
        .find(|(_, b)| b.contains("not delivered"))
        .expect("a failure notice");
    assert!(failure.1.contains("turned off"), "{failure:?}");
    assert!(h.texts_to_bob().is_empty(), "{:?}", h.texts_to_bob());
}

/// The homeserver failing for now (502 on the upload) is not the file's fault: the contact's
/// lane tries again, as for a text, and the file is shown once it passes (no notice in its
/// place, acknowledged once).
#[tokio::test]
async fn a_homeserver_failing_for_now_delays_a_file_and_loses_nothing() {
    let matrix = FakeMatrix::default();
    // One round of the transfer's own tries (3), then the lane's next try passes.
    matrix
        .upload_failures
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let h = media_harness_with(matrix);
    h.linked_with_bob_portal().await;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = "https://up.example/ok/cat.png";
    let event = RemoteEvent::Message {
        contact: RemoteUserId::parse("bob@x.example").expect("jid"),
        id: Some("p1".into()),
        server_id: None,
        body: url.into(),
        nick: None,
        oob_url: Some(url.into()),
        client: None,
        encrypted: false,
        relations: Relations::default(),
        ack: Box::new(FakeAck(acks.clone())),
    };
    h.net.sender().send(event).await.expect("login alive");
    for _ in 0..1500 {
        if acks.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(acks.load(std::sync::atomic::Ordering::SeqCst), 1);
    let events = ghost_events(&h);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["msgtype"], "m.image", "{events:?}");
    assert_eq!(events[0]["url"], "mxc://hs.example/uploaded");
    assert!(
        events[0]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("🔓") && b.ends_with("cat.png")),
        "{events:?}"
    );
}
