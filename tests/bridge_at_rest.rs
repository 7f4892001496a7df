//! Encryption at rest end to end (`database.key`): real Synapse, Prosody and a python-omemo
//! contact, the bridge as a child process.
//!
//! - `a_keyed_bridge_keeps_the_password_and_texts_out_of_its_files`: a bridge started with a
//!   key links a login and bridges a message each way; after it stopped, neither the database
//!   directory nor the crypto stores hold the XMPP password or a text, every crypto store was
//!   created with the key, and a start with a wrong key is refused and changes no file.
//! - `a_plain_store_is_encrypted_at_the_next_start_and_the_login_still_works`: a bridge
//!   without a key links and chats; restarted with a key, it encrypts the database (logged),
//!   the login and its OMEMO sessions go on working (a message each way), and no file of the
//!   database holds the password any more; the crypto store made before the key is reported.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BIN, BridgeProcess, MatrixUser, World};

const PASSWORD: &str = "pw-alice";

/// A DM of alice with bob's ghost, past the bridge's notice.
async fn dm_with_bob(world: &World, alice: &MatrixUser) -> (String, String) {
    let bob_ghost = ghost(&format!("bob@{}", world.var("XMPP_DOMAIN")));
    let room = alice.create_dm(&bob_ghost).await;
    alice.wait_for_membership(&room, &bob_ghost, "join").await;
    alice
        .wait_for_message(&room, &bob_ghost, "re-encrypts")
        .await;
    (room, bob_ghost)
}

/// One message each way between alice's room and bob.
async fn one_each_way(
    world: &World,
    alice: &MatrixUser,
    room: &str,
    bob: &mut OmemoPeer,
    bob_ghost: &str,
    to_xmpp: &str,
    to_matrix: &str,
) {
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    alice.send_text(room, to_xmpp).await;
    assert_eq!(bob.wait_received(1, WAIT).await[0]["body"], to_xmpp);
    bob.send(&alice_jid, to_matrix, None).await;
    alice.wait_for_message(room, bob_ghost, to_matrix).await;
}

/// Every file under `dir` with its bytes' length and a cheap digest (FNV-1a).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (usize, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            out.insert(path, (bytes.len(), digest));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_bridge_keeps_the_password_and_texts_out_of_its_files() {
    let (world, files) = start();
    set_key(&files, "a random key of at least sixteen bytes, 9f2c1e");
    let bridge = BridgeProcess::start(&files);
    // The daemon executed itself again with glibc's arenas capped (src/main.rs), same pid,
    // unless the environment had set the cap already.
    let want = format!(
        "MALLOC_ARENA_MAX={}",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into())
    );
    let environ = std::fs::read(format!("/proc/{}/environ", bridge.pid())).expect("environ");
    assert!(
        environ.split(|b| *b == 0).any(|var| var == want.as_bytes()),
        "the bridge runs without {want}"
    );
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let (room, bob_ghost) = dm_with_bob(&world, &alice).await;
    let (to_xmpp, to_matrix) = ("at-rest m2x Kq3v", "at-rest x2m Wd8p");
    one_each_way(
        &world, &alice, &room, &mut bob, &bob_ghost, to_xmpp, to_matrix,
    )
    .await;
    let log = bridge.log.clone();
    bridge.stop();
    let log = std::fs::read_to_string(log).expect("log");
    assert!(
        !log.contains("database.key is not set"),
        "warned about a key that is set"
    );

    let db = files.dir.join("interop-bridge.db");
    let crypto = files.dir.join("crypto");
    assert!(db.join("interop-bridge.key-check").is_file());
    let needles: Vec<String> = [PASSWORD, to_xmpp, to_matrix, "Kq3v", "Wd8p"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(
        find_in_dir(&db, &needles),
        Vec::<String>::new(),
        "in the database"
    );
    assert_eq!(
        find_in_dir(&crypto, &needles),
        Vec::<String>::new(),
        "in the crypto stores"
    );
    let stores: Vec<PathBuf> = std::fs::read_dir(&crypto)
        .expect("crypto stores")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(!stores.is_empty(), "the bot has a crypto store");
    for store in &stores {
        assert!(
            store.join("interop-bridge.encrypted").is_file(),
            "{} was created without the key",
            store.display()
        );
    }

    // A wrong key: refused at start, and no file of the database changes.
    let before = snapshot(&db);
    set_key(&files, "another key, just as long as the first one");
    let out = std::process::Command::new(BIN)
        .args(["run", "-c", files.config.to_str().expect("utf-8")])
        .output()
        .expect("run the bridge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a wrong key: {err}");
    assert!(err.contains("not the key"), "{err}");
    assert_eq!(
        snapshot(&db),
        before,
        "a refused start changed the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_store_is_encrypted_at_the_next_start_and_the_login_still_works() {
    let (world, files) = start();
    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let (room, bob_ghost) = dm_with_bob(&world, &alice).await;
    one_each_way(
        &world,
        &alice,
        &room,
        &mut bob,
        &bob_ghost,
        "plain m2x one",
        "plain x2m one",
    )
    .await;
    bridge.stop();
    let db = files.dir.join("interop-bridge.db");
    let password = vec![PASSWORD.to_owned()];
    assert_eq!(
        find_in_dir(&db, &password),
        password,
        "a plain store holds the password (the check below can fail)"
    );

    set_key(&files, "a random key of at least sixteen bytes, 4b7d0a");
    let (ok, out, err) = run_cli(&files, &["check-config"]);
    assert!(ok, "{err}");
    assert!(out.contains("encrypts it at its next start"), "{out}");
    assert!(
        out.contains("crypto store(s)") && out.contains("stay unencrypted"),
        "{out}"
    );
    let mut bridge = BridgeProcess::start(&files);
    bridge.wait_for_log("the database is encrypted at rest", WAIT);
    let log = bridge.log_text();
    assert!(log.contains("encrypting the database at rest"), "{log}");
    assert!(log.contains("stay unencrypted at rest"), "{log}");
    one_each_way(
        &world,
        &alice,
        &room,
        &mut bob,
        &bob_ghost,
        "sealed m2x two",
        "sealed x2m two",
    )
    .await;
    bridge.stop();

    assert_eq!(find_in_dir(&db, &password), Vec::<String>::new());
    for leftover in ["interop-bridge.db.sealing", "interop-bridge.db.plain-old"] {
        assert!(!files.dir.join(leftover).exists(), "{leftover} is left");
    }
    let (ok, out, err) = run_cli(&files, &["check-config"]);
    assert!(ok && !out.contains("encrypts it"), "{out}{err}");
}
