//! The device commands as the CLI runs them for a user (`Bridge::run_user_command`).

use super::bridge::ALICE;
use super::*;
use crate::commands::Command;
use crate::core::CommandError;

/// A user with no linked account, a malformed JID and a refused `trust` come back as what
/// they are, so the CLI can exit non-zero; `devices` answers with the listing.
#[tokio::test]
async fn user_commands_tell_refusals_from_answers() {
    let h = harness_full(FakeMatrix::default(), FakeNetwork::default());
    let alice = UserId::parse(ALICE).expect("user");
    let devices = Command::Devices {
        jid: "bob@x.example".into(),
    };
    let not_linked = h.bridge.run_user_command(&alice, devices.clone()).await;
    assert!(
        matches!(not_linked, Err(CommandError::NotLinked)),
        "{not_linked:?}"
    );

    h.link_alice().await;
    let listing = h
        .bridge
        .run_user_command(&alice, devices)
        .await
        .expect("an answer");
    assert!(
        listing.plain.contains("no OMEMO device of bob@x.example"),
        "{}",
        listing.plain
    );
    let bad_jid = h
        .bridge
        .run_user_command(
            &alice,
            Command::Devices {
                jid: "not a jid@".into(),
            },
        )
        .await;
    assert!(
        matches!(bad_jid, Err(CommandError::Refused(_))),
        "{bad_jid:?}"
    );
    // The fake network trusts nothing: its refusal is the user's answer, not a failure.
    let refused = h
        .bridge
        .run_user_command(
            &alice,
            Command::Trust {
                jid: "bob@x.example".into(),
                fingerprint: "abcd".into(),
                trusted: true,
            },
        )
        .await;
    assert!(
        matches!(&refused, Err(CommandError::Refused(why)) if why.contains("not supported")),
        "{refused:?}"
    );
}
