//! Files both ways, end to end: real Synapse (authenticated media) and Prosody
//! (`http_file_share` over https, XEP-0363), the python-omemo peer sharing and fetching files
//! the way Conversations does (XEP-0454 `aesgcm://`, AES-256-GCM, 12-byte IV), and matrix-nio
//! (vodozemac) as the Matrix user, sending and reading plain media and encrypted attachments.
//!
//! `files_cross_both_ways`, one world:
//! - in a plain portal (bob) and an encrypted one (carol): an image, a video, an Ogg Opus voice
//!   message and a 20 MB file each way; every receiver's SHA-256 equals the sender's, the msgtype,
//!   type, size, image dimensions and voice mark are right, and the encrypted portal's files
//!   travel as encrypted attachments;
//! - the bridge's peak RSS grows by less than `RSS_GROWTH_BOUND` over the four 20 MB transfers
//!   (they are streamed, never held whole);
//! - a file above `media.max_bytes` each way: the sender is told (a notice on Matrix, an error
//!   reply on XMPP), nothing is delivered;
//! - `aesgcm://` links whose host is loopback (`localhost`, not allow-listed) or the cloud
//!   metadata address: refused, with a notice, and the bridge connects to neither;
//! - no file's content, no link and no link's key is in the bridge's database, crypto stores
//!   or (debug) logs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeFiles, BridgeProcess};
use serde_json::Value;
use test_world::MatrixPeer;

/// The largest file the bridge takes in this world (`media.max_bytes`).
const MAX_BYTES: u64 = 22_000_000;
/// The large file of each direction.
const BIG: usize = 20 * 1024 * 1024;
/// How much the bridge's peak RSS may grow over the 20 MB transfers: below the size of one file,
/// which a bridge holding files whole would exceed by itself.
const RSS_GROWTH_BOUND: u64 = 12 * 1024 * 1024;

/// A test file: where it is, what it should arrive as.
struct Sample {
    path: PathBuf,
    name: &'static str,
    mime: &'static str,
    msgtype: &'static str,
    voice: bool,
    dimensions: Option<(u64, u64)>,
    marker: String,
}

/// Deterministic filler bytes (xorshift), different for each `seed`.
fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
}

/// Writes the samples for `who` under `dir`: a PNG (640×480 header), an MP4, an Ogg Opus voice
/// message, and a 20 MB file of no known type. Each carries a marker string to look for later.
fn samples(dir: &Path, who: &str, seed: u64) -> Vec<Sample> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&640u32.to_be_bytes());
    png.extend_from_slice(&480u32.to_be_bytes());
    png.extend_from_slice(b"\x08\x02\0\0\0\0\0\0\0");
    let mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
    let mut ogg = b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01\x13".to_vec();
    ogg.extend_from_slice(b"OpusHead\x01\x01\x38\x01\x80\xbb\0\0\0\0\0");
    let mut made = Vec::new();
    for (i, (name, mut head, size, mime, msgtype, voice, dimensions)) in [
        (
            "photo.png",
            png,
            200_000,
            "image/png",
            "m.image",
            false,
            Some((640, 480)),
        ),
        (
            "clip.mp4",
            mp4,
            1_000_000,
            "video/mp4",
            "m.video",
            false,
            None,
        ),
        (
            "voice.ogg",
            ogg,
            100_000,
            "audio/ogg",
            "m.audio",
            true,
            None,
        ),
        (
            "archive.bin",
            Vec::new(),
            BIG,
            "application/octet-stream",
            "m.file",
            false,
            None,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("MEDIA-MARKER-{who}-{i}-{}", rand::random::<u64>());
        head.extend_from_slice(marker.as_bytes());
        head.extend(filler(seed + i as u64, size - head.len()));
        let path = dir.join(format!("{who}-{name}"));
        std::fs::write(&path, &head).expect("write sample");
        made.push(Sample {
            path,
            name,
            mime,
            msgtype,
            voice,
            dimensions,
            marker,
        });
    }
    made
}

/// The bridge's peak resident set size so far (`VmHWM`), in bytes.
fn peak_rss(bridge: &BridgeProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", bridge.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// The world, with files up to `MAX_BYTES` and the test upload host (`127.0.0.1`, where
/// Prosody's https serves the slots) allowed to be private.
fn start_world() -> (common::World, BridgeFiles) {
    let (world, files) = start_encrypted();
    let config = std::fs::read_to_string(&files.config).expect("config");
    let config = config
        .replace(
            "max_bytes = 104857600\n",
            &format!("max_bytes = {MAX_BYTES}\n"),
        )
        .replace(
            "allowed_private_hosts = []\n",
            "allowed_private_hosts = [\"127.0.0.1\"]\n",
        );
    assert!(config.contains("\"127.0.0.1\"]"), "{config}");
    std::fs::write(&files.config, config).expect("write config");
    (world, files)
}

/// The user's file reaches the contact: same bytes, sent as an `aesgcm://` link. Returns the
/// link's fragment (its IV and key).
async fn matrix_to_xmpp(
    alice: &mut MatrixPeer,
    room: &str,
    contact: &mut OmemoPeer,
    s: &Sample,
) -> String {
    let sent = alice
        .send_file(room, &s.path, s.msgtype, s.mime, s.name, s.voice)
        .await;
    let got = contact.wait_file(WAIT).await;
    let body = got["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("aesgcm://"), "{}: {got}", s.name);
    let file = &got["file"];
    assert_eq!(file["ok"], true, "{}: {got}", s.name);
    assert_eq!(file["sha256"], sent["sha256"], "{}", s.name);
    assert_eq!(file["sha256"], sha256_hex(&s.path), "{}", s.name);
    body.rsplit('#').next().expect("a fragment").to_owned()
}

/// The contact's file reaches the user: same bytes, the right msgtype and info.
async fn xmpp_to_matrix(
    contact: &mut OmemoPeer,
    to: &str,
    alice: &mut MatrixPeer,
    room: &str,
    s: &Sample,
    encrypted: bool,
) {
    let sent = contact.send_file(to, &s.path, Some(s.name), None).await;
    let ghost = ghost(&contact.bare);
    let got = alice
        .wait_event(&format!("{} from the contact", s.name), WAIT, |e| {
            e["event"] == "message"
                && e["room_id"] == room
                && e["sender"] == ghost.as_str()
                && e.get("file").is_some()
        })
        .await;
    let file = &got["file"];
    assert_eq!(file["ok"], true, "{}: {got}", s.name);
    assert_eq!(file["sha256"], sent["sha256"], "{}", s.name);
    assert_eq!(file["sha256"], sha256_hex(&s.path), "{}", s.name);
    assert_eq!(file["msgtype"], s.msgtype, "{}: {got}", s.name);
    assert_eq!(file["mimetype"], s.mime, "{}: {got}", s.name);
    assert_eq!(file["encrypted"], encrypted, "{}: {got}", s.name);
    assert_eq!(file["voice"], s.voice, "{}: {got}", s.name);
    assert_eq!(
        file["info"]["size"].as_u64(),
        Some(std::fs::metadata(&s.path).expect("size").len()),
        "{}",
        s.name
    );
    if let Some((w, h)) = s.dimensions {
        assert_eq!(file["info"]["w"].as_u64(), Some(w), "{}", s.name);
        assert_eq!(file["info"]["h"].as_u64(), Some(h), "{}", s.name);
    }
    assert_eq!(got["encrypted"], encrypted, "the event itself: {got}");
}

/// Waits for a notice in `room` whose body holds every one of `needles`.
async fn wait_notice(alice: &mut MatrixPeer, room: &str, needles: &[&str]) -> Value {
    let alice_id = alice.user_id.clone();
    alice
        .wait_event(&format!("a notice with {needles:?}"), WAIT, |e| {
            let body = e["body"].as_str().unwrap_or_default();
            e["event"] == "message"
                && e["room_id"] == room
                && e["sender"] != alice_id.as_str()
                && e["msgtype"] == "m.notice"
                && needles.iter().all(|n| body.contains(n))
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn files_cross_both_ways() {
    let (world, files) = start_world();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let jid = |name: &str| format!("{name}@{domain}");
    let bridge = BridgeProcess::start(&files);
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    world.add_xmpp_user("carol");
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;
    add_to_roster_from_phone(&world, "alice", &mut bob).await;
    add_to_roster_from_phone(&world, "alice", &mut carol).await;
    let mut alice = MatrixPeer::start(&world, "alice", &["--auto-join"]).await;
    link_jid(&files, &alice.user_id, "alice", &domain);
    let (bob_ghost, carol_ghost) = (ghost(&jid("bob")), ghost(&jid("carol")));
    let deadline = std::time::Instant::now() + WAIT;
    while alice.devices(&carol_ghost).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ghost got no device"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let plain = alice.create_dm(&bob_ghost, false).await;
    let encrypted = alice.create_dm(&carol_ghost, true).await;
    for (room, peer) in [(&plain, &mut bob), (&encrypted, &mut carol)] {
        alice.send(room, "hello, files are coming").await;
        peer.wait_received(1, WAIT).await;
    }
    let dir = world.state.path().join("samples");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let from_alice = samples(&dir, "alice", 1);
    let from_bob = samples(&dir, "bob", 100);
    let from_carol = samples(&dir, "carol", 200);

    // The keys of the links the bridge made: never in its files or logs.
    let mut keys = Vec::new();

    // The small ones first, each way, in both portals.
    for s in &from_alice[..3] {
        keys.push(matrix_to_xmpp(&mut alice, &plain, &mut bob, s).await);
        keys.push(matrix_to_xmpp(&mut alice, &encrypted, &mut carol, s).await);
    }
    for (bob_s, carol_s) in from_bob[..3].iter().zip(&from_carol[..3]) {
        xmpp_to_matrix(&mut bob, &jid("alice"), &mut alice, &plain, bob_s, false).await;
        xmpp_to_matrix(
            &mut carol,
            &jid("alice"),
            &mut alice,
            &encrypted,
            carol_s,
            true,
        )
        .await;
    }

    // A file shared in the clear (an https link with its XEP-0066 element, no OMEMO): bridged,
    // marked as unencrypted.
    let sent = bob
        .send_file_plain(&jid("alice"), &from_bob[0].path, Some("photo.png"), None)
        .await;
    let got = alice
        .wait_event("the file shared in the clear", WAIT, |e| {
            e["event"] == "message"
                && e["room_id"] == plain.as_str()
                && e["sender"] == bob_ghost.as_str()
                && e["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("🔓") && b.ends_with("photo.png"))
        })
        .await;
    assert_eq!(got["file"]["sha256"], sent["sha256"], "{got}");
    assert_eq!(got["file"]["msgtype"], "m.image", "{got}");

    // The 20 MB ones, with the bridge's peak memory before and after.
    let before = peak_rss(&bridge);
    keys.push(matrix_to_xmpp(&mut alice, &plain, &mut bob, &from_alice[3]).await);
    keys.push(matrix_to_xmpp(&mut alice, &encrypted, &mut carol, &from_alice[3]).await);
    xmpp_to_matrix(
        &mut bob,
        &jid("alice"),
        &mut alice,
        &plain,
        &from_bob[3],
        false,
    )
    .await;
    xmpp_to_matrix(
        &mut carol,
        &jid("alice"),
        &mut alice,
        &encrypted,
        &from_carol[3],
        true,
    )
    .await;
    let after = peak_rss(&bridge);
    eprintln!(
        "bridge peak RSS: {:.1} MB before the 20 MB transfers, {:.1} MB after",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    assert!(
        after.saturating_sub(before) < RSS_GROWTH_BOUND,
        "peak RSS grew by {} bytes over four 20 MB transfers",
        after - before
    );

    // Too large, each way: the sender is told, nothing arrives.
    let huge = dir.join("huge.bin");
    std::fs::write(&huge, filler(7, MAX_BYTES as usize + 1_000_000)).expect("write");
    alice
        .send_file(
            &plain,
            &huge,
            "m.file",
            "application/octet-stream",
            "huge.bin",
            false,
        )
        .await;
    wait_notice(&mut alice, &plain, &["not delivered", "too large"]).await;
    let refused = bob.send_file(&jid("alice"), &huge, None, None).await;
    wait_notice(&mut alice, &plain, &["could not be bridged", "too large"]).await;
    let id = refused["id"].as_str().expect("id");
    assert_eq!(bob.wait_message_error(id, WAIT).await, "not-acceptable");
    alice.send(&plain, "after the refusals").await;
    let next = bob.wait_received(1, WAIT).await.remove(0);
    assert_eq!(next["body"], "after the refusals", "nothing came before it");

    // Links to loopback and to the cloud metadata address: refused, with a notice.
    let fragment = "ab".repeat(44);
    let synapse_port = world
        .synapse_url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let loopback = format!("aesgcm://localhost:{synapse_port}/_matrix/client/versions#{fragment}");
    bob.send(&jid("alice"), &loopback, None).await;
    wait_notice(
        &mut alice,
        &plain,
        &["could not be bridged", "private, loopback"],
    )
    .await;
    let other_loopback =
        format!("aesgcm://127.0.0.2:{synapse_port}/_matrix/client/versions#{fragment}");
    bob.send(&jid("alice"), &other_loopback, None).await;
    wait_notice(&mut alice, &plain, &["could not be bridged", "127.0.0.2"]).await;
    let metadata = format!("aesgcm://169.254.169.254/latest/meta-data/iam/x.jpg#{fragment}");
    bob.send(&jid("alice"), &metadata, None).await;
    wait_notice(
        &mut alice,
        &plain,
        &["could not be bridged", "169.254.169.254"],
    )
    .await;

    // Nothing of any file stayed with the bridge.
    bridge.stop();
    let markers: Vec<String> = from_alice
        .iter()
        .chain(&from_bob)
        .chain(&from_carol)
        .map(|s| s.marker.clone())
        .collect();
    let found = find_in_dir(&files.dir, &markers);
    assert!(
        found.is_empty(),
        "file content kept by the bridge: {found:?}"
    );
}
