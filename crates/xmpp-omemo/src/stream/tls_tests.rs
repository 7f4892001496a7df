//! Pins and the verifier, on a self-signed `CA:TRUE` certificate made with the openssl CLI (what
//! `prosodyctl cert generate` makes).

use std::path::{Path, PathBuf};
use std::process::Command;

use rustls::internal::msgs::codec::{Codec, Reader};
use rustls_pki_types::PrivateKeyDer;

use super::*;

const DOMAIN: &str = "self.test";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate for `cn`, `CA:TRUE`, as `<name>.crt` and `<name>.key`.
fn self_signed(dir: &Path, name: &str, cn: &str) -> (PathBuf, CertificateDer<'static>) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName=DNS:{cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    let path = dir.join(format!("{name}.crt"));
    let cert = CertificateDer::from_pem_file(&path).expect("certificate");
    (path, cert)
}

/// What the documented openssl pipeline prints for `cert`.
fn openssl_spki_sha256(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256",
            cert.display()
        ))
        .output()
        .expect("sh");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.rsplit(' ').next().expect("a hash").trim().to_owned()
}

fn verifier(ca_file: Option<&Path>, pins: TlsPins) -> Verifier {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Verifier::new(ca_file, pins, &provider).expect("verifier")
}

fn verify(v: &Verifier, cert: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).expect("name");
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

/// The reason and hash a refusal carries, as the transport hands them on.
fn refusal(e: rustls::Error) -> (String, Option<SpkiSha256>) {
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    match refusal_of(&io, DOMAIN) {
        Some(Error::Certificate {
            reason, presented, ..
        }) => (reason, presented),
        other => panic!("not a certificate error: {other:?}"),
    }
}

fn pins(domain: &str, pin: SpkiSha256) -> TlsPins {
    let mut pins = TlsPins::default();
    pins.add(domain, pin);
    pins
}

#[test]
fn pins_read_hex_in_either_case_with_or_without_colons() {
    let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let pin: SpkiSha256 = plain.parse().expect("plain");
    assert_eq!(pin.to_string(), plain.to_ascii_lowercase());
    let colons = plain
        .as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).expect("ascii"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(colons.parse::<SpkiSha256>(), Ok(pin));
    assert_eq!(format!(" {plain}\n").parse::<SpkiSha256>(), Ok(pin));
    let json = serde_json::to_string(&pin).expect("json");
    assert_eq!(json, format!("\"{}\"", plain.to_ascii_lowercase()));
    assert_eq!(
        serde_json::from_str::<SpkiSha256>(&json).expect("back"),
        pin
    );
}

#[test]
fn invalid_pins_are_refused_with_the_reason() {
    assert_eq!(
        "abc".parse::<SpkiSha256>(),
        Err("expected a SHA-256 as 64 hex digits (colons allowed), got \"abc\"".into())
    );
    let not_hex = "g".repeat(64);
    assert_eq!(
        not_hex.parse::<SpkiSha256>(),
        Err(format!(
            "expected a SHA-256 as 64 hex digits (colons allowed), got \"{not_hex}\""
        ))
    );
    // Base64 of a SHA-256 (44 characters) is not taken for hex.
    assert!(
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            .parse::<SpkiSha256>()
            .is_err()
    );
    // Multi-byte characters cannot split a pair into a valid digit.
    assert!("é".repeat(32).parse::<SpkiSha256>().is_err());
}

#[test]
fn the_hash_is_what_the_documented_openssl_command_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, cert) = self_signed(dir.path(), "srv", DOMAIN);
    let ours = SpkiSha256::of_certificate(&cert).expect("a certificate");
    assert_eq!(ours.to_string(), openssl_spki_sha256(&path));
    assert_eq!(
        SpkiSha256::of_certificate(&CertificateDer::from(b"junk".to_vec())),
        None
    );
}

#[test]
fn a_self_signed_ca_certificate_is_accepted_by_its_pin_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, cert) = self_signed(dir.path(), "srv", DOMAIN);
    let (_, other) = self_signed(dir.path(), "other", DOMAIN);
    let hash = SpkiSha256::of_certificate(&cert).expect("hash");
    let other_hash = SpkiSha256::of_certificate(&other).expect("hash");

    // Pinned: accepted, whatever the CAs say, and the domain compared without case.
    verify(&verifier(None, pins(DOMAIN, hash)), &cert, DOMAIN).expect("pinned");
    verify(&verifier(None, pins("SELF.test", hash)), &cert, DOMAIN).expect("case");

    // Without pins: refused as a CA used as an end entity, whether or not the CA file holds
    // it (webpki checks that first). Both refusals name the presented key.
    let (reason, presented) =
        refusal(verify(&verifier(None, TlsPins::default()), &cert, DOMAIN).expect_err("unpinned"));
    assert!(reason.contains("CA:TRUE"), "{reason}");
    assert_eq!(presented, Some(hash));
    let (reason, presented) = refusal(
        verify(&verifier(Some(&path), TlsPins::default()), &cert, DOMAIN).expect_err("as CA"),
    );
    assert!(reason.contains("CA:TRUE"), "{reason}");
    assert_eq!(presented, Some(hash));

    // A wrong pin refuses it, even with a CA file that would vouch for it as a CA.
    let (reason, presented) = refusal(
        verify(&verifier(None, pins(DOMAIN, other_hash)), &cert, DOMAIN).expect_err("wrong pin"),
    );
    assert_eq!(
        reason,
        format!("its public key matches none of the 1 pin(s) for {DOMAIN}")
    );
    assert_eq!(presented, Some(hash));

    // A pin for another domain changes nothing for this one.
    let (reason, _) = refusal(
        verify(&verifier(None, pins("other.test", hash)), &cert, DOMAIN).expect_err("elsewhere"),
    );
    assert!(reason.contains("CaUsedAsEndEntity"), "{reason}");

    // The error shown to a user carries the hash to pin.
    let shown = Error::Certificate {
        domain: DOMAIN.into(),
        reason,
        presented: Some(hash),
    }
    .to_string();
    assert!(shown.contains(&hash.to_string()), "{shown}");
}

/// A signature as it travels in the handshake.
fn signed(scheme: SignatureScheme, signature: Vec<u8>) -> DigitallySignedStruct {
    let mut wire = u16::from(scheme).to_be_bytes().to_vec();
    wire.extend_from_slice(&u16::try_from(signature.len()).expect("short").to_be_bytes());
    wire.extend_from_slice(&signature);
    DigitallySignedStruct::read(&mut Reader::init(&wire)).expect("dss")
}

#[test]
fn a_pinned_certificate_still_has_its_handshake_signature_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, cert) = self_signed(dir.path(), "srv", DOMAIN);
    self_signed(dir.path(), "other", DOMAIN);
    let v = verifier(
        None,
        pins(DOMAIN, SpkiSha256::of_certificate(&cert).expect("hash")),
    );
    verify(&v, &cert, DOMAIN).expect("pinned");

    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let sign = |key: &str, message: &[u8]| {
        let key = PrivateKeyDer::from_pem_file(dir.path().join(key)).expect("key");
        let key = provider
            .key_provider
            .load_private_key(key)
            .expect("signing key");
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("P-256");
        signed(
            SignatureScheme::ECDSA_NISTP256_SHA256,
            signer.sign(message).expect("sign"),
        )
    };
    let message = b"the transcript hash the server signs";
    let good = sign("srv.key", message);
    v.verify_tls13_signature(message, &cert, &good)
        .expect("the certificate's own key");
    v.verify_tls12_signature(message, &cert, &good)
        .expect("the certificate's own key (TLS 1.2)");
    assert!(
        v.verify_tls13_signature(b"another transcript", &cert, &good)
            .is_err(),
        "a signature over something else"
    );
    let forged = sign("other.key", message);
    assert!(
        v.verify_tls13_signature(message, &cert, &forged).is_err(),
        "a key other than the pinned certificate's"
    );
    assert!(v.verify_tls12_signature(message, &cert, &forged).is_err());
    assert!(
        v.supported_verify_schemes()
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
    );
}
