//! XEP-0363 HTTP File Upload and XEP-0066 file URLs against the project's real Prosody: the
//! `upload.<domain>` component (mod_http_file_share, 50 MiB) is discovered, gives a slot, and
//! refuses a file that is too large, both as our client checks it and as the service itself
//! answers; a file URL reaches the contact on a plain and on an OMEMO message. No HTTP PUT:
//! the library has no HTTP client.

mod common;

use std::time::Duration;

use common::World;
use common::ours::Ours;
use xmpp_omemo::omemo::{OmemoError, TrustPolicy};
use xmpp_omemo::stanza::upload::{FileTooLarge, SlotRequest, check_url};
use xmpp_omemo::stanza::{Condition, IntoElement, Iq, IqPayload, Message};
use xmpp_omemo::{Extensions, Jid, UploadError, UploadService};

const WAIT: Duration = Duration::from_secs(30);
/// `http_file_share_size_limit` in `scripts/world/gen_prosody.py`.
const PROSODY_LIMIT: u64 = 50 * 1024 * 1024;

/// `what` within [`WAIT`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_prosodys_upload_service_and_gets_a_slot_or_the_limit() {
    let world = World::start("prosody", |_, _| Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = Ours::start(
        &world,
        "alice",
        "upload",
        dir.path(),
        TrustPolicy::default(),
    )
    .await;
    let client = &alice.client;

    // Discovery: the component, with the limit of its form; asked together, answered alike.
    let (first, second) = within("discovery", async {
        tokio::join!(client.upload_service(), client.upload_service())
    })
    .await;
    let service = first.expect("discovery").expect("an upload service");
    let domain = world.var("XMPP_DOMAIN");
    assert_eq!(
        service,
        UploadService {
            jid: Jid::parse(&format!("upload.{domain}")).expect("a JID"),
            max_file_size: Some(PROSODY_LIMIT),
        }
    );
    assert_eq!(second.expect("discovery"), Some(service.clone()));

    // A slot for a small file; the name is made safe first (Prosody refuses a '/').
    let slot = within(
        "a slot",
        client.upload_slot("../notes/hello world.txt", 12, "text/plain; charset=utf-8"),
    )
    .await
    .expect("a slot");
    for url in [&slot.put_url, &slot.get_url] {
        assert!(url.starts_with("http"), "{slot:?}");
        assert_eq!(check_url(url), Ok(()), "{slot:?}");
        assert!(url.contains("hello"), "the file name in {slot:?}");
    }
    assert!(
        slot.put_headers
            .iter()
            .any(|(name, value)| name == "Authorization" && value.starts_with("Bearer ")),
        "{slot:?}"
    );
    // Another slot is another URL.
    let other = within("a second slot", client.upload_slot("", 1, ""))
        .await
        .expect("a slot for a nameless file");
    assert_ne!(other.get_url, slot.get_url);

    // 60 MiB: refused before asking, with the service's limit...
    let big = 60 * 1024 * 1024;
    let refused = within(
        "a slot for 60 MiB",
        client.upload_slot("big.bin", big, "application/octet-stream"),
    )
    .await
    .expect_err("too large");
    assert!(
        matches!(
            refused,
            OmemoError::Upload(UploadError::TooLarge {
                max_file_size: Some(PROSODY_LIMIT)
            })
        ),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("52428800"), "{refused}");
    // ...and by the service itself, when asked.
    let request = SlotRequest::new("big.bin", big, "application/octet-stream");
    let answer = within(
        "the service's answer",
        client.xmpp().request(Iq::get(
            "",
            Some(service.jid.clone()),
            request.into_element(),
        )),
    )
    .await
    .expect("an answer");
    let IqPayload::Error { error, .. } = answer.payload else {
        panic!("a slot for 60 MiB: {answer:?}");
    };
    assert_eq!(error.condition, Condition::NotAcceptable);
    assert_eq!(
        FileTooLarge::find(&error),
        Some(FileTooLarge {
            max_file_size: Some(PROSODY_LIMIT)
        })
    );
    alice.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_url_reaches_the_contact_on_plain_and_omemo_messages() {
    let world = World::start("prosody", |_, _| Vec::new());
    let (alice_dir, bob_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let policy = TrustPolicy::default();
    let alice = Ours::start(&world, "alice", "files", alice_dir.path(), policy).await;
    let mut bob = Ours::start(&world, "bob", "files", bob_dir.path(), policy).await;
    let bob_jid = Jid::parse(&bob.bare).expect("a JID");

    let slot = within(
        "a slot",
        alice.client.upload_slot("photo.jpg", 3, "image/jpeg"),
    )
    .await
    .expect("a slot");
    let url = slot.get_url;
    let file = Extensions {
        oob_url: Some(url.clone()),
        ..Extensions::default()
    };

    // Plain, as Conversations sends a file: the URL as body and in <x/>; and without a body.
    let mut with_body = Message::chat(bob_jid.clone(), url.as_str());
    with_body.id = Some("file-1".into());
    with_body.payloads = file.to_elements();
    let mut bodyless = with_body.clone();
    bodyless.id = Some("file-2".into());
    bodyless.body = None;
    for message in [with_body, bodyless] {
        within("sending", alice.client.xmpp().send(message))
            .await
            .expect("sent");
    }
    let got = bob
        .wait_seen("both file messages", |s| {
            let of = |id: &str| {
                s.plain
                    .iter()
                    .find(|p| p.id.as_deref() == Some(id))
                    .cloned()
            };
            Some((of("file-1")?, of("file-2")?))
        })
        .await;
    assert_eq!(
        (got.0.body.as_str(), got.0.oob_url.as_deref()),
        (url.as_str(), Some(url.as_str()))
    );
    assert_eq!(
        (got.1.body.as_str(), got.1.oob_url.as_deref()),
        ("", Some(url.as_str()))
    );

    // OMEMO: only the body is encrypted; the <x/> beside it is read like the other extensions.
    within(
        "an OMEMO message",
        alice
            .client
            .send_message(&bob_jid, url.as_str(), "file-3", &file),
    )
    .await
    .expect("sent");
    let got = bob.recv(1).await;
    assert_eq!(got[0].id.as_deref(), Some("file-3"));
    assert_eq!(got[0].body, url);
    assert_eq!(got[0].oob_url.as_deref(), Some(url.as_str()));
}
