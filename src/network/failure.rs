//! How a connection failure reads to a user: a refused server certificate says how the admin
//! can trust it — the `network.tls_pins` line with the presented key's hash, or the CA file.

use xmpp_omemo::stream;

/// The reason shown for a failed or lost connection (the bot room notice, `link`'s answer).
pub(super) fn failure_text(reason: &stream::Error) -> String {
    match reason {
        stream::Error::Certificate {
            domain,
            presented: Some(hash),
            ..
        } => format!(
            "{reason}. If this is the server's own certificate, its admin can pin it in the \
             bridge's config: [network.tls_pins] \"{domain}\" = [\"{hash}\"]; a certificate \
             from a private CA needs that CA in network.ca_file"
        ),
        stream::Error::Certificate { .. } => {
            format!("{reason}. A certificate from a private CA needs that CA in network.ca_file")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_names_the_pin_to_add() {
        let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let refused = stream::Error::Certificate {
            domain: "xmpp.test".into(),
            reason: "it is a CA certificate (CA:TRUE) used as the server's own".into(),
            presented: Some(hash.parse().expect("hash")),
        };
        let text = failure_text(&refused);
        assert!(
            text.starts_with("the certificate of xmpp.test was refused: it is a CA certificate"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "(the certificate presented has the SPKI SHA-256 {hash})"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("[network.tls_pins] \"xmpp.test\" = [\"{hash}\"]")),
            "{text}"
        );
        let other = stream::Error::Io("reset".into());
        assert_eq!(failure_text(&other), other.to_string());
    }
}
