//! OMEMO 2 end to end: real Synapse, real Prosody, a Matrix user chatting through the bridge
//! (`network.omemo = "both"`, the default) with a python-omemo peer that speaks OMEMO 2 only
//! (twomemo, SCE envelope) and one that speaks legacy OMEMO only, in the same run. Each peer
//! reports the namespace every message came in.

mod common;

use common::e2e::*;
use common::omemo_peer::OmemoPeer;
use common::{BridgeProcess, MatrixUser};

const TWO: &str = "urn:xmpp:omemo:2";
const LEGACY: &str = "eu.siacs.conversations.axolotl";

#[tokio::test(flavor = "multi_thread")]
async fn a_matrix_user_chats_with_an_omemo2_peer_and_a_legacy_peer_in_one_run() {
    let (world, files) = start();
    let config = std::fs::read_to_string(&files.config).expect("config");
    assert!(config.contains("omemo = \"both\"\n"), "{config}");
    let _bridge = BridgeProcess::start(&files);
    let alice = MatrixUser::register(&world, "alice").await;
    cli_link(&world, &files, &alice, "alice");
    world.add_xmpp_user("carol");
    let alice_jid = format!("alice@{}", world.var("XMPP_DOMAIN"));
    let mut bob =
        OmemoPeer::start(&world, "bob", &["--backends", "twomemo", "--ns", "twomemo"]).await;
    let mut carol = OmemoPeer::start(&world, "carol", &[]).await;

    let bob_room = alice.create_dm(&ghost(&bob.bare)).await;
    let carol_room = alice.create_dm(&ghost(&carol.bare)).await;
    for i in 1..=3 {
        let to_bob = format!("to bob #{i} in OMEMO 2");
        alice.send_text(&bob_room, &to_bob).await;
        let to_carol = format!("to carol #{i} in legacy OMEMO");
        alice.send_text(&carol_room, &to_carol).await;

        let got = bob.wait_received(1, WAIT).await;
        assert_eq!(got[0]["body"], to_bob.as_str(), "{}", got[0]);
        assert_eq!(got[0]["ns"], TWO, "{}", got[0]);
        let got = carol.wait_received(1, WAIT).await;
        assert_eq!(got[0]["body"], to_carol.as_str(), "{}", got[0]);
        assert_eq!(got[0]["ns"], LEGACY, "{}", got[0]);

        let from_bob = format!("bob #{i}, OMEMO 2 back");
        bob.send(&alice_jid, &from_bob, None).await;
        alice
            .wait_for_message(&bob_room, &ghost(&bob.bare), &from_bob)
            .await;
        let from_carol = format!("carol #{i}, legacy back");
        carol.send(&alice_jid, &from_carol, None).await;
        alice
            .wait_for_message(&carol_room, &ghost(&carol.bare), &from_carol)
            .await;
    }
    bob.quit().await;
    carol.quit().await;
}
