//! The answers of `devices` and `safety-number`: a contact's OMEMO devices as the user can
//! compare them with what the contact's own client shows (the grouped hex fingerprint of each
//! device's identity key, as Conversations, Gajim and Dino print it).

use super::{ContactDevice, DeviceTrust};
use crate::ids::RemoteUserId;

fn trust_word(trust: DeviceTrust) -> &'static str {
    match trust {
        DeviceTrust::Verified => "trusted by you",
        DeviceTrust::Blind => "trusted without verification",
        DeviceTrust::Untrusted => "NOT trusted: your messages are not encrypted to it",
        DeviceTrust::Unknown => "no key seen yet",
    }
}

fn device_line(d: &ContactDevice) -> String {
    let fingerprint = d.fingerprint.as_deref().unwrap_or("(no key seen yet)");
    let listed = if d.listed { "" } else { ", no longer listed" };
    format!(
        "- device {}: {fingerprint} ({}{listed})",
        d.device,
        trust_word(d.trust)
    )
}

/// `devices <jid>`.
pub(super) fn list(contact: &RemoteUserId, devices: &[ContactDevice]) -> String {
    if devices.is_empty() {
        return format!(
            "I know no OMEMO device of {contact} yet: they appear once {contact} writes to \
             you or you write to them."
        );
    }
    let mut out = format!("{contact}'s OMEMO devices:\n");
    for d in devices {
        out.push_str(&device_line(d));
        out.push('\n');
    }
    if devices.iter().any(|d| d.trust == DeviceTrust::Untrusted) {
        out.push_str(&format!(
            "Say `trust {contact} <fingerprint>` once you compared a fingerprint with {contact}."
        ));
    } else {
        out.pop();
    }
    out
}

/// `safety-number <jid>`: what the contact should see for us, and what we see for them.
pub(super) fn safety_number(
    login: &RemoteUserId,
    (own_device, own_fingerprint): (u32, String),
    contact: &RemoteUserId,
    devices: &[ContactDevice],
) -> String {
    let mut out = format!(
        "Compare these with {contact}, in person or on a call.\n\
         {contact}'s client should show for {login} (device {own_device}):\n{own_fingerprint}\n"
    );
    let seen: Vec<&ContactDevice> = devices.iter().filter(|d| d.fingerprint.is_some()).collect();
    if seen.is_empty() {
        out.push_str(&format!("I have seen no key of {contact} yet."));
        return out;
    }
    out.push_str(&format!(
        "{contact}'s own client should show one of these as its own fingerprint:\n"
    ));
    for d in seen {
        out.push_str(&device_line(d));
        out.push('\n');
    }
    out.push_str(&format!(
        "If they match, say `trust {contact} <fingerprint>` for each device you checked."
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(device: u32, fingerprint: Option<&str>, trust: DeviceTrust) -> ContactDevice {
        ContactDevice {
            device,
            fingerprint: fingerprint.map(str::to_owned),
            trust,
            listed: true,
        }
    }

    #[test]
    fn the_listing_names_each_device_its_fingerprint_and_trust() {
        let bob = RemoteUserId::parse("bob@x.example").expect("jid");
        let text = list(
            &bob,
            &[
                device(7, Some("aaaa1111 bbbb2222"), DeviceTrust::Blind),
                device(9, Some("cccc3333 dddd4444"), DeviceTrust::Untrusted),
                ContactDevice {
                    listed: false,
                    ..device(11, None, DeviceTrust::Unknown)
                },
            ],
        );
        assert!(text.contains("- device 7: aaaa1111 bbbb2222 (trusted without verification)"));
        assert!(text.contains("- device 9: cccc3333 dddd4444 (NOT trusted"));
        assert!(
            text.contains("- device 11: (no key seen yet) (no key seen yet, no longer listed)")
        );
        assert!(text.ends_with("Say `trust bob@x.example <fingerprint>` once you compared a fingerprint with bob@x.example."));
        assert!(list(&bob, &[]).contains("no OMEMO device of bob@x.example"));
    }

    #[test]
    fn the_safety_number_shows_ours_and_theirs() {
        let alice = RemoteUserId::parse("alice@x.example").expect("jid");
        let bob = RemoteUserId::parse("bob@x.example").expect("jid");
        let text = safety_number(
            &alice,
            (42, "0123abcd 4567ef01".into()),
            &bob,
            &[device(7, Some("aaaa1111 bbbb2222"), DeviceTrust::Verified)],
        );
        assert!(text.contains("for alice@x.example (device 42):\n0123abcd 4567ef01\n"));
        assert!(text.contains("- device 7: aaaa1111 bbbb2222 (trusted by you)"));
        let none = safety_number(&alice, (42, "f".into()), &bob, &[]);
        assert!(none.ends_with("I have seen no key of bob@x.example yet."));
    }
}
