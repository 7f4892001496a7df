//! A contact's new OMEMO device, end to end: real Synapse, real Prosody, python-omemo peers.
//!
//! bob chats with alice (Matrix) through the bridge from one device, then starts a second
//! one (his "phone") and writes from it. The portal must say so, and:
//! - `strict_policy_sends_to_a_new_device_only_after_trust`: under `network.trust = "strict"`
//!   the phone gets nothing alice writes until alice says `trust <jid> <fingerprint>` (with
//!   the fingerprint the phone itself shows), then it does; `devices` and `safety-number`
//!   show the phone as untrusted, then trusted (the CLI's `devices`, `safety-number`,
//!   `untrust` and `trust` for alice too), and `untrust` stops it again;
//! - `default_policy_sends_to_a_new_device_and_says_so`: under the default the phone gets
//!   alice's messages at once, and the notice still appears. Then eight strangers write, one
//!   after the other, with `max_requests_per_hour = 3`: three message requests open, the other
//!   five messages are dropped before they are decrypted, so the bridge stores nothing of them
//!   (`devices` knows no device of theirs) while it knows the first three's.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeFiles, BridgeProcess, MatrixUser, World};

/// What `chatting` leaves running.
struct Chat {
    world: World,
    bridge: BridgeProcess,
    alice: MatrixUser,
    bob: OmemoPeer,
    room: String,
    files: BridgeFiles,
}

/// The world and bridge with `network.trust` set to `trust`, alice linked, and a portal with
/// bob in which one message went each way from bob's first device.
async fn chatting(trust: &str, requests_per_hour: u32) -> Chat {
    let (world, files) = start();
    let config = std::fs::read_to_string(&files.config).expect("config");
    assert!(
        config.contains("trust = \"trust-on-first-use\"\n"),
        "{config}"
    );
    let config = config.replace(
        "trust = \"trust-on-first-use\"\n",
        &format!("trust = \"{trust}\"\n"),
    );
    assert!(config.contains("max_requests_per_hour = 20\n"), "{config}");
    let config = config.replace(
        "max_requests_per_hour = 20\n",
        &format!("max_requests_per_hour = {requests_per_hour}\n"),
    );
    std::fs::write(&files.config, config).expect("write config");
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let room = alice.create_dm(&ghost(&bob.bare)).await;
    alice.send_text(&room, "hello bob").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "hello bob");
    bob.send(&alice_jid, "hello alice", None).await;
    alice
        .wait_for_message(&room, &ghost(&bob.bare), "hello alice")
        .await;
    Chat {
        world,
        bridge,
        alice,
        bob,
        room,
        files,
    }
}

/// Starts bob's second device and has it write to alice; returns it once the portal shows
/// both its message and the new-device notice (with the phone's device id).
async fn phone_writes(
    world: &World,
    alice: &MatrixUser,
    room: &str,
    bob: &OmemoPeer,
    text: &str,
) -> (OmemoPeer, String) {
    let mut phone = OmemoPeer::start(
        world,
        "bob",
        &["--store-name", "bob-phone", "--resource", "phone"],
    )
    .await;
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    phone.send(&alice_jid, text, None).await;
    let bob_ghost = ghost(&bob.bare);
    alice.wait_for_message(room, &bob_ghost, text).await;
    let notice = alice
        .wait_for_message(
            room,
            &bob_ghost,
            &format!("has a new device ({})", phone.device_id),
        )
        .await;
    let body = notice["content"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (phone, body)
}

/// The phone's own fingerprint, as its client shows it (hex, no type byte).
fn shown_fingerprint(phone: &OmemoPeer) -> String {
    phone.ready["identity_fingerprint"]
        .as_str()
        .expect("identity_fingerprint")
        .to_owned()
}

/// Waits until `peer` received `text`; fails on a timeout.
async fn receives(peer: &mut OmemoPeer, text: &str) {
    let got = peer.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], text, "{got:?}");
}

/// The CLI's `devices`, `safety-number`, `untrust` and `trust` for alice, after the bot's
/// `trust` of the phone: the same answers, over the admin socket; the phone ends trusted.
fn cli_runs_the_device_commands(
    files: &BridgeFiles,
    alice: &MatrixUser,
    bob: &OmemoPeer,
    phone: &OmemoPeer,
    fingerprint: &str,
) {
    let phone_line = |listing: &str| {
        let prefix = format!("- device {}: ", phone.device_id);
        listing
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for the phone: {listing}"))
            .to_owned()
    };
    let devices = || {
        let (ok, out, err) = run_cli(files, &["devices", &alice.user_id, &bob.bare]);
        assert!(ok, "{err}");
        phone_line(&out)
    };
    assert!(devices().ends_with("(trusted by you)"), "{}", devices());
    let (ok, out, err) = run_cli(files, &["safety-number", &alice.user_id, &bob.bare]);
    assert!(ok, "{err}");
    let compact: String = out.chars().filter(char::is_ascii_hexdigit).collect();
    assert!(
        out.starts_with("Compare") && compact.contains(fingerprint),
        "{out}"
    );

    // As a client shows it: in groups of eight.
    let grouped: Vec<&str> = (0..fingerprint.len())
        .step_by(8)
        .map(|i| &fingerprint[i..(i + 8).min(fingerprint.len())])
        .collect();
    let with = |verb: &str| {
        let mut args = vec![verb, alice.user_id.as_str(), bob.bare.as_str()];
        args.extend(grouped.iter().copied());
        run_cli(files, &args)
    };
    let (ok, out, err) = with("untrust");
    assert!(ok && out.starts_with("Untrusted"), "{out}{err}");
    assert!(devices().contains("NOT trusted"), "{}", devices());
    let (ok, out, err) = with("trust");
    assert!(
        ok && out.contains(&format!(
            "Trusted {}'s device {}",
            bob.bare, phone.device_id
        )),
        "{out}{err}"
    );
    assert!(devices().ends_with("(trusted by you)"), "{}", devices());

    let wrong = "ab".repeat(32);
    let (ok, out, err) = run_cli(files, &["trust", &alice.user_id, &bob.bare, &wrong]);
    assert!(
        !ok && out.is_empty() && err.contains("no device"),
        "{out}{err}"
    );
    let (ok, _, err) = run_cli(files, &["devices", "@nobody:localhost", &bob.bare]);
    assert!(
        !ok && err.contains("@nobody:localhost has no linked account"),
        "{err}"
    );
    let (ok, _, err) = run_cli(files, &["devices", &alice.user_id, "not a jid@"]);
    assert!(!ok, "a malformed JID accepted: {err}");
}

/// `peer` gets no readable message within a few seconds (a stanza without a key for it is
/// what it does get: `not_for_us`).
async fn receives_nothing(peer: &mut OmemoPeer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Some(event) = peer
        .next_event(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_ne!(
            event["event"], "received",
            "a device that is not trusted read: {event}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_policy_sends_to_a_new_device_only_after_trust() {
    let Chat {
        world,
        bridge: _bridge,
        alice,
        mut bob,
        room,
        files,
    } = chatting("strict", 20).await;
    let (mut phone, notice) = phone_writes(&world, &alice, &room, &bob, "from the phone").await;
    let fingerprint = shown_fingerprint(&phone);
    assert!(
        notice.contains("will not encrypt to it")
            && notice.contains(&format!("trust {}", bob.bare)),
        "{notice}"
    );
    // The fingerprint in the notice is the one the phone shows, grouped.
    let compact: String = notice.chars().filter(char::is_ascii_hexdigit).collect();
    assert!(
        compact.contains(&fingerprint),
        "{fingerprint} not in {notice}"
    );

    alice.send_text(&room, "before trust").await;
    receives(&mut bob, "before trust").await;
    receives_nothing(&mut phone).await;

    let mgmt = management_room(&alice).await;
    let listing = ask_bot(
        &alice,
        &mgmt,
        &format!("devices {}", bob.bare),
        "OMEMO devices",
    )
    .await;
    let listing = listing["content"]["body"].as_str().unwrap_or_default();
    assert!(
        listing.contains(&format!("device {}", phone.device_id)) && listing.contains("NOT trusted"),
        "{listing}"
    );
    let safety = ask_bot(
        &alice,
        &mgmt,
        &format!("safety-number {}", bob.bare),
        "Compare",
    )
    .await;
    let safety = safety["content"]["body"].as_str().unwrap_or_default();
    let compact: String = safety.chars().filter(char::is_ascii_hexdigit).collect();
    assert!(compact.contains(&fingerprint), "{safety}");

    // A fingerprint of no device of bob's is refused and changes nothing.
    ask_bot(
        &alice,
        &mgmt,
        &format!("trust {} {}", bob.bare, "ab".repeat(32)),
        "no device",
    )
    .await;
    ask_bot(
        &alice,
        &mgmt,
        &format!("trust {} {fingerprint}", bob.bare),
        &format!("Trusted {}'s device {}", bob.bare, phone.device_id),
    )
    .await;
    cli_runs_the_device_commands(&files, &alice, &bob, &phone, &fingerprint);
    alice.send_text(&room, "after trust").await;
    receives(&mut bob, "after trust").await;
    receives(&mut phone, "after trust").await;

    ask_bot(
        &alice,
        &mgmt,
        &format!("untrust {} {fingerprint}", bob.bare),
        "Untrusted",
    )
    .await;
    alice.send_text(&room, "after untrust").await;
    receives(&mut bob, "after untrust").await;
    receives_nothing(&mut phone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_policy_sends_to_a_new_device_and_says_so() {
    let Chat {
        world,
        bridge,
        alice,
        mut bob,
        room,
        files: _,
    } = chatting("trust-on-first-use", 3).await;
    let (mut phone, notice) = phone_writes(&world, &alice, &room, &bob, "phone here").await;
    assert!(
        notice.contains("encrypts to it") && notice.contains(&format!("untrust {}", bob.bare)),
        "{notice}"
    );
    alice.send_text(&room, "to both").await;
    receives(&mut bob, "to both").await;
    receives(&mut phone, "to both").await;

    // Strangers, one after the other: the first three open requests, the rest are turned away
    // unread.
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let mgmt = management_room(&alice).await;
    for n in 1..=8 {
        let name = format!("stranger{n}");
        world.add_xmpp_user(&name);
        let mut stranger = OmemoPeer::start(&world, &name, &[]).await;
        stranger
            .send(&alice_jid, &format!("hi from {name}"), None)
            .await;
        if n <= 3 {
            wait_invite_from(&alice, &ghost(&stranger.bare)).await;
        } else {
            wait_log_count(&bridge.log, "dropped unread", n - 3).await;
        }
        stranger.quit().await;
    }
    let domain = world.var("XMPP_DOMAIN");
    ask_bot(
        &alice,
        &mgmt,
        &format!("devices stranger2@{domain}"),
        &format!("stranger2@{domain}'s OMEMO devices"),
    )
    .await;
    ask_bot(
        &alice,
        &mgmt,
        &format!("devices stranger7@{domain}"),
        "I know no OMEMO device of stranger7",
    )
    .await;
    let log = std::fs::read_to_string(&bridge.log).expect("log");
    let requests = log
        .lines()
        .filter(|l| l.contains("portal created") && l.contains("Request"))
        .count();
    assert_eq!(requests, 3, "three message requests opened");
}

/// Waits until `needle` occurs `count` times in the file at `path`.
async fn wait_log_count(path: &std::path::Path, needle: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} not {count} times in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
