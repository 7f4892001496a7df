//! A server certificate the bridge does not trust, end to end: real Synapse, real Prosody.
//!
//! `an_untrusted_certificate_fails_link_at_once_and_its_pin_makes_it_work`: without the
//! world's CA file, `link` fails within a few seconds (not after the 30 s of retries a network
//! error gets) and says which `network.tls_pins` line would trust the server; with that line
//! in the config (and still no CA file), the same `link` works and a message goes each way.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser};

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_fails_link_at_once_and_its_pin_makes_it_work() {
    let (world, files) = start();
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let config = std::fs::read_to_string(&files.config).expect("config");
    let ca_line = format!("ca_file = \"{}\"\n", world.var("XMPP_CA_FILE"));
    assert!(config.contains(&ca_line), "{config}");
    std::fs::write(&files.config, config.replace(&ca_line, "")).expect("write config");

    let bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    let pw = files.dir.join("pw-alice.txt");
    std::fs::write(&pw, "pw-alice\n").expect("password file");
    let jid = format!("alice@{domain}");
    let link = || {
        run_cli(
            &files,
            &[
                "link",
                &alice.user_id,
                &jid,
                "--password-file",
                pw.to_str().expect("utf-8"),
            ],
        )
    };
    let started = Instant::now();
    let (ok, out, err) = link();
    let took = started.elapsed();
    assert!(!ok, "linked without trusting the certificate: {out}{err}");
    eprintln!("the refused link answered in {took:?}");
    // At once, not after the 30 s a link waits for a server that cannot be reached.
    assert!(took < Duration::from_secs(2), "link took {took:?}: {err}");
    let marker = format!("[network.tls_pins] \"{domain}\" = [\"");
    let start = err
        .find(&marker)
        .unwrap_or_else(|| panic!("no pin in the answer: {err}"))
        + marker.len();
    let hash: String = err[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(hash.len(), 64, "{err}");
    bridge.stop();

    let config = std::fs::read_to_string(&files.config).expect("config");
    let config = format!("{config}\n[network.tls_pins]\n\"{domain}\" = [\"{hash}\"]\n");
    std::fs::write(&files.config, config).expect("write config");
    let _bridge = BridgeProcess::start(&files);
    let (ok, out, err) = link();
    assert!(
        ok && out.contains("linked"),
        "the pinned link failed: {out}{err}"
    );

    let mut bob = OmemoPeer::start(&world, "bob", &[]).await;
    let bob_ghost = ghost(&bob.bare);
    let room = alice.create_dm(&bob_ghost).await;
    alice.send_text(&room, "over a pinned connection").await;
    let got = bob.wait_received(1, WAIT).await;
    assert_eq!(got[0]["body"], "over a pinned connection");
    bob.send(&jid, "and back", None).await;
    alice.wait_for_message(&room, &bob_ghost, "and back").await;
}
