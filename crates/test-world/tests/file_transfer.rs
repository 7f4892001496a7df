//! File transfer between the world's peers, no bridge: what the bridge's e2e tests rely on.
//!
//! XMPP: `omemo_peer.py` sends a 30 MB file the way Conversations does with OMEMO (XEP-0363 upload
//! over the world's https, XEP-0454 `aesgcm://` body) and a small one without OMEMO (https URL +
//! XEP-0066 OOB); the other peer downloads and decrypts both. A broken `aesgcm://` link is reported
//! as `ok: false`. Matrix: `matrix_peer.py` sends a 20 MB encrypted attachment and a voice message in
//! an encrypted DM and a file in a plain one; the other peer downloads them with authenticated media.
//! Every SHA-256 is checked against `sha256sum` of the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_world::omemo_peer::OmemoPeer;
use test_world::{MatrixPeer, World};

const WAIT: Duration = Duration::from_secs(60);

/// A file of `size` pseudo-random bytes (xorshift: incompressible, different per `seed`).
fn make_file(dir: &Path, name: &str, size: usize, seed: u64) -> PathBuf {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write test file");
    path
}

/// `sha256sum` of `path` (hex), computed outside the peers.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

fn assert_file(event: &Value, sha: &str, size: usize, encrypted: bool) {
    let file = &event["file"];
    assert_eq!(file["ok"], true, "{event}");
    assert_eq!(file["sha256"], sha, "{event}");
    assert_eq!(file["size"], size, "{event}");
    assert_eq!(file["encrypted"], encrypted, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omemo_peers_share_files_like_conversations() {
    let world = World::start("prosody", |_, _| vec![]);
    let big_size = 30 * 1024 * 1024;
    let big = make_file(world.state.path(), "clip.mp4", big_size, 7);
    let small = make_file(world.state.path(), "notes.txt", 1234, 8);
    let (mut alice, mut bob) = tokio::join!(
        OmemoPeer::start(&world, "alice", &[]),
        OmemoPeer::start(&world, "bob", &[])
    );
    let https = world.var("XMPP_HTTPS_URL");

    let t = std::time::Instant::now();
    let sent = alice
        .send_file(&bob.bare, &big, Some("clip.mp4"), Some("video/mp4"))
        .await;
    let got = bob.wait_file(WAIT).await;
    eprintln!("[test] 30 MB aesgcm:// after {:?}", t.elapsed());
    let sha = sha256(&big);
    assert_eq!(sent["sha256"], sha.as_str(), "{sent}");
    assert_eq!(sent["size"], big_size, "{sent}");
    let url = sent["url"].as_str().expect("url");
    assert!(
        url.starts_with(https) && url.ends_with("/clip.mp4"),
        "{sent}"
    );
    let body = sent["body"].as_str().expect("body");
    let (link, fragment) = body.split_once('#').expect("a fragment");
    assert_eq!(
        link,
        format!("aesgcm://{}", &url["https://".len()..]),
        "{sent}"
    );
    assert!(
        fragment.len() == 88
            && fragment
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{sent}"
    );
    assert_eq!(got["event"], "received", "{got}");
    assert_eq!(got["id"], sent["id"], "{got}");
    assert_eq!(got["body"], body, "{got}");
    assert_file(&got, &sha, big_size, true);
    assert_eq!(got["file"]["url"], url, "{got}");

    let sent = alice.send_file_plain(&bob.bare, &small, None, None).await;
    let got = bob.wait_file(WAIT).await;
    let sha = sha256(&small);
    assert_eq!(sent["sha256"], sha.as_str(), "{sent}");
    assert_eq!(sent["mime"], "text/plain", "{sent}");
    assert_eq!(got["event"], "plain", "{got}");
    assert_eq!(got["body"], sent["url"], "{got}");
    assert_file(&got, &sha, 1234, false);

    // A link to nothing: reported, not fatal.
    let broken = format!(
        "aesgcm://{}file_share/none/x.bin#{}",
        &https["https://".len()..],
        "ab".repeat(44)
    );
    alice.send(&bob.bare, &broken, Some("broken")).await;
    let got = bob.wait_file(WAIT).await;
    assert_eq!(got["id"], "broken", "{got}");
    assert_eq!(got["file"]["ok"], false, "{got}");
    assert!(got["file"]["error"].as_str().is_some(), "{got}");
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_peers_share_encrypted_attachments_and_plain_media() {
    let world = World::start("synapse", |_, _| vec![]);
    let big_size = 20 * 1024 * 1024;
    let big = make_file(world.state.path(), "movie.mp4", big_size, 9);
    let voice = make_file(world.state.path(), "voice.ogg", 4321, 10);
    let (mut a, mut b) = tokio::join!(
        MatrixPeer::start(&world, "alice", &[]),
        MatrixPeer::start(&world, "bob", &["--auto-join"])
    );

    let room = a.create_dm(&b.user_id, true).await;
    b.wait_event("joined", WAIT, |e| {
        e["event"] == "joined" && e["room_id"] == room.as_str()
    })
    .await;
    let t = std::time::Instant::now();
    let sent = a
        .send_file(&room, &big, "m.video", "video/mp4", "movie.mp4", false)
        .await;
    let got = b.wait_messages(&room, &a.user_id, 1, WAIT).await.remove(0);
    eprintln!("[test] 20 MB encrypted attachment after {:?}", t.elapsed());
    let sha = sha256(&big);
    assert_eq!(sent["sha256"], sha.as_str(), "{sent}");
    assert_eq!(sent["encrypted"], true, "{sent}");
    assert_eq!(got["event_id"], sent["event_id"]);
    assert_eq!(got["encrypted"], true, "{got}");
    assert_eq!(got["content"]["file"]["v"], "v2", "{got}");
    assert!(got["content"].get("url").is_none(), "{got}");
    assert_file(&got, &sha, big_size, true);
    assert_eq!(got["file"]["msgtype"], "m.video", "{got}");
    assert_eq!(got["file"]["mimetype"], "video/mp4", "{got}");
    assert_eq!(got["file"]["voice"], false, "{got}");

    let sent = a
        .send_file(&room, &voice, "m.audio", "audio/ogg", "voice.ogg", true)
        .await;
    let got = b.wait_messages(&room, &a.user_id, 1, WAIT).await.remove(0);
    assert_eq!(got["event_id"], sent["event_id"]);
    assert_file(&got, &sha256(&voice), 4321, true);
    assert_eq!(got["file"]["voice"], true, "{got}");
    assert!(
        got["content"].get("org.matrix.msc3245.voice").is_some(),
        "{got}"
    );

    // A plain room: the media is not encrypted, "url" instead of "file".
    let plain = a.create_dm(&b.user_id, false).await;
    b.wait_event("joined", WAIT, |e| {
        e["event"] == "joined" && e["room_id"] == plain.as_str()
    })
    .await;
    let sent = a
        .send_file(
            &plain,
            &voice,
            "m.file",
            "application/octet-stream",
            "v.bin",
            false,
        )
        .await;
    let got = b.wait_messages(&plain, &a.user_id, 1, WAIT).await.remove(0);
    assert_eq!(got["event_id"], sent["event_id"]);
    assert_eq!(got["encrypted"], false, "{got}");
    assert_file(&got, &sha256(&voice), 4321, false);
    assert_eq!(got["file"]["url"], got["content"]["url"], "{got}");
    a.quit().await;
    b.quit().await;
}
