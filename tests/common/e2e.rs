//! The bridge's e2e flows shared by its test binaries (`bridge_e2e`, `bridge_recovery`,
//! `bridge_multi`, `bridge_scale`): the
//! world with the bridge's files, linking from the CLI, the management room, and the checks on
//! what arrived where.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::omemo_peer::OmemoPeer;
use super::{BridgeFiles, MatrixUser, World, bridge_bin, encode, repo};

pub const BOT: &str = "@interopbot:localhost";
pub const WAIT: Duration = Duration::from_secs(60);

/// The world with both servers, and the bridge's files pointing at its Prosody. The portals
/// the bridge creates are plain rooms (`encryption.default = false`), so the tests can read
/// them over plain HTTP; `start_encrypted` keeps them encrypted.
pub fn start() -> (World, BridgeFiles) {
    let (world, files) = start_encrypted();
    let config = std::fs::read_to_string(&files.config).expect("config");
    // `default` is the key of `[encryption]` only.
    let config = config.replace("\ndefault = true\n", "\ndefault = false\n");
    assert!(config.contains("\ndefault = false\n"), "{config}");
    std::fs::write(&files.config, config).expect("write config");
    (world, files)
}

/// Like `start`, with the bridge's portals encrypted (the default) and a room key waited for
/// 10 s.
pub fn start_encrypted() -> (World, BridgeFiles) {
    let mut files = None;
    let world = World::start("synapse prosody", |state, synapse_port| {
        let f = BridgeFiles::generate(&state.join("bridge"), synapse_port);
        let reg = f.registration.clone();
        files = Some(f);
        vec![reg]
    });
    let files = files.expect("prepared");
    let config = std::fs::read_to_string(&files.config).expect("config");
    let network = format!(
        "[network]\nserver = \"{}\"\nca_file = \"{}\"\nsend_timeout_secs = 20\n",
        world.var("XMPP_SERVER"),
        world.var("XMPP_CA_FILE")
    );
    let config = config
        .replace("[network]\n", &network)
        .replace("send_timeout_secs = 30\n", "")
        .replace("key_wait_secs = 30\n", "key_wait_secs = 10\n");
    std::fs::write(&files.config, config).expect("write config");
    (world, files)
}

pub fn ghost(jid: &str) -> String {
    let escaped: String = jid
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("={b:02x}"),
        })
        .collect();
    format!("@interop_{escaped}:localhost")
}

pub fn run_cli(files: &BridgeFiles, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bridge_bin())
        .args(args)
        .args(["-c", files.config.to_str().expect("utf-8")])
        .env_remove("RUST_LOG")
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Links `user`'s Matrix account to `<name>@<world's domain>` with the CLI and a password file.
pub fn cli_link(world: &World, files: &BridgeFiles, user: &MatrixUser, name: &str) {
    link_jid(files, &user.user_id, name, world.var("XMPP_DOMAIN"));
}

/// Links the Matrix user `user_id` to `<name>@<domain>` (password `pw-<name>`) with the CLI and
/// a password file.
pub fn link_jid(files: &BridgeFiles, user_id: &str, name: &str, domain: &str) {
    let pw = files.dir.join(format!("pw-{name}-{domain}.txt"));
    std::fs::write(&pw, format!("pw-{name}\n")).expect("password file");
    let jid = format!("{name}@{domain}");
    let (ok, out, err) = run_cli(
        files,
        &[
            "link",
            user_id,
            &jid,
            "--password-file",
            pw.to_str().expect("utf-8"),
        ],
    );
    assert!(
        ok && out.contains("linked"),
        "link {jid} failed: {out}\n{err}"
    );
}

/// Puts `contact` (its peer running) into `user`'s XMPP roster from another client of the
/// user's (a "phone"), as a real user's roster would hold it before they link: subscribes, and
/// waits until the contact saw the request.
pub async fn add_to_roster_from_phone(world: &World, user: &str, contact: &mut OmemoPeer) {
    let store = format!("{user}-phone");
    let mut phone = OmemoPeer::start(
        world,
        user,
        &["--store-name", &store, "--resource", "phone"],
    )
    .await;
    let user_jid = format!("{user}@{}", world.var("XMPP_DOMAIN"));
    phone.subscribe(&contact.bare, None).await;
    contact.wait_subscription(&user_jid, "subscribe").await;
    phone.quit().await;
}

/// Opens the management room (a DM with the bot) and waits for the welcome.
pub async fn management_room(user: &MatrixUser) -> String {
    let room = user.create_dm(BOT).await;
    user.wait_for_membership(&room, BOT, "join").await;
    user.wait_for_message(&room, BOT, "management room").await;
    room
}

/// Says `text` to the bot and waits for its answer containing `needle`.
pub async fn ask_bot(user: &MatrixUser, room: &str, text: &str, needle: &str) -> Value {
    let before = user.messages(room).await.len();
    user.send_text(room, text).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let messages = user.messages(room).await;
        if let Some(answer) = messages.iter().skip(before).find(|e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(needle))
        }) {
            return answer.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the bot did not answer {text:?} with {needle:?}: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for an invite whose stripped state has a member event from `sender`.
pub async fn wait_invite_from(user: &MatrixUser, sender: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        for (room, events) in user.invites().await {
            if events
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["sender"] == sender)
            {
                return room;
            }
        }
        assert!(Instant::now() < deadline, "no invite from {sender}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn leave(user: &MatrixUser, room: &str) {
    let (status, out) = user.leave(room).await;
    assert_eq!(status, 200, "leave {room}: {out}");
}

pub async fn state(user: &MatrixUser, room: &str) -> Vec<Value> {
    let (status, out) = user
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/state", encode(room)),
            None,
        )
        .await;
    assert_eq!(status, 200, "state of {room}: {out}");
    out.as_array().cloned().unwrap_or_default()
}

/// The bodies of the messages `sender` posted in `room`, oldest first.
pub async fn bodies_from(user: &MatrixUser, room: &str, sender: &str) -> Vec<String> {
    user.messages(room)
        .await
        .iter()
        .filter(|e| e["sender"] == sender)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// `sender`'s messages in `room` whose text starts with `prefix`, in order.
pub async fn bodies_starting(
    user: &MatrixUser,
    room: &str,
    sender: &str,
    prefix: &str,
) -> Vec<String> {
    let mut bodies = bodies_from(user, room, sender).await;
    bodies.retain(|b| b.starts_with(prefix));
    bodies
}

/// Waits until `room` shows at least `count` messages of `sender` starting with `prefix`;
/// gives them (fails after `WAIT`).
pub async fn wait_bodies_starting(
    user: &MatrixUser,
    room: &str,
    sender: &str,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let bodies = bodies_starting(user, room, sender, prefix).await;
        if bodies.len() >= count {
            return bodies;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} messages {prefix:?} from {sender}: {bodies:?}",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits `quiet`, then asserts that `peer` received no further message.
pub async fn assert_nothing_more(peer: &mut OmemoPeer, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    while let Some(event) = peer.next_event(Duration::from_millis(300)).await {
        assert_ne!(
            event["event"], "received",
            "a message arrived twice or late: {event}"
        );
    }
}

/// The needles found in any file under `dir`, raw bytes.
pub fn find_in_dir(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let mut files = 0;
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
            continue;
        }
        if !path.is_file() {
            continue; // the admin socket
        }
        files += 1;
        let bytes = std::fs::read(&path).expect("read");
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                && !found.contains(needle)
            {
                found.push(needle.clone());
            }
        }
    }
    assert!(files > 0, "no database files under {}", dir.display());
    found
}

/// Sends `sig` to one of the world's services (`prosody`, `synapse`: its pid file in
/// `STATE/pids/`).
pub fn signal_service(world: &World, service: &str, sig: &str) {
    let pid = std::fs::read_to_string(world.state.path().join(format!("pids/{service}.pid")))
        .unwrap_or_else(|e| panic!("{service} pid: {e}"));
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.trim())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {service}");
}

/// Restarts the world's Synapse with `scripts/world/restart_synapse.sh` (SIGTERM, `pause`
/// seconds down, start again, wait until it answers); returns the script's summary line.
pub fn restart_synapse(state: &Path, pause: u32) -> String {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/world/restart_synapse.sh"))
        .arg(state)
        .arg(pause.to_string())
        .output()
        .expect("run restart_synapse.sh");
    assert!(
        out.status.success(),
        "restart_synapse.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Sets `database.key` to a key file of `secret` in the bridge's directory.
pub fn set_key(files: &BridgeFiles, secret: &str) {
    std::fs::write(files.dir.join("db.key"), format!("{secret}\n")).expect("key file");
    let config = std::fs::read_to_string(&files.config).expect("config");
    let config = match config.find("\nkey = { file = \"db.key\" }\n") {
        Some(_) => config,
        None => config.replace("[database]\n", "[database]\nkey = { file = \"db.key\" }\n"),
    };
    assert!(config.contains("key = { file = \"db.key\" }"), "{config}");
    std::fs::write(&files.config, config).expect("write config");
}
