//! How the server's certificate is judged: the webpki roots plus an optional CA file, or, for a
//! domain with pins, the SHA-256 of the certificate's SubjectPublicKeyInfo. A refusal carries
//! the presented certificate's SPKI SHA-256 — the value an admin would pin — to
//! [`Error::Certificate`].
//!
//! One [`ServerCertVerifier`] serves every connection: it looks the pins up by the name the
//! handshake verifies (the JID's domain), and it never skips the handshake signature check
//! (`verify_tls12_signature` / `verify_tls13_signature` of the crypto provider, also for a
//! pinned certificate).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::error::Error;

/// The SHA-256 of a certificate's DER SubjectPublicKeyInfo: what
/// `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256`
/// prints. Written as 64 hex digits (lower case); read in either case, with or without colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiSha256([u8; 32]);

impl SpkiSha256 {
    /// The hash of `cert`'s public key; `None` if `cert` is not an X.509 certificate.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<Self> {
        let parsed = ParsedCertificate::try_from(cert).ok()?;
        Some(Self(
            Sha256::digest(parsed.subject_public_key_info().as_ref()).into(),
        ))
    }
}

impl fmt::Display for SpkiSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SpkiSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiSha256({self})")
    }
}

impl FromStr for SpkiSha256 {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits: Vec<u8> = s.trim().bytes().filter(|b| *b != b':').collect();
        let bad = || {
            format!(
                "expected a SHA-256 as 64 hex digits (colons allowed), got {:?}",
                s.trim()
            )
        };
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut hash = [0u8; 32];
        for (byte, pair) in hash.iter_mut().zip(digits.chunks(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Self(hash))
    }
}

impl serde::Serialize for SpkiSha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpkiSha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Per XMPP domain, the public keys its server may present. A domain with pins accepts a
/// certificate iff its SPKI hash is one of them — whoever issued it, whatever names and dates
/// it holds (a self-signed `CA:TRUE` certificate included); other domains are verified
/// against the CAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPins {
    by_domain: HashMap<String, Vec<SpkiSha256>>,
}

impl TlsPins {
    /// Adds a pin for `domain` (compared without regard to case).
    pub fn add(&mut self, domain: &str, pin: SpkiSha256) {
        self.by_domain
            .entry(domain.to_ascii_lowercase())
            .or_default()
            .push(pin);
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    fn for_name(&self, name: &ServerName<'_>) -> Option<&[SpkiSha256]> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let domain = dns.as_ref().trim_end_matches('.').to_ascii_lowercase();
        self.by_domain.get(&domain).map(Vec::as_slice)
    }
}

/// Builds the TLS configuration every connection shares: the webpki roots, plus the PEM
/// certificates of `ca_file` when given (a private CA, or a self-signed test server).
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    tls_client_config_pinned(ca_file, TlsPins::default())
}

/// [`tls_client_config`], and `pins` decide for the domains they name.
pub fn tls_client_config_pinned(
    ca_file: Option<&Path>,
    pins: TlsPins,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Verifier::new(ca_file, pins, &provider)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; an error if it is missing, unreadable, or holds none.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let ca_err = |reason: String| Error::CaFile {
        path: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        return Err(ca_err("does not exist".into()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_err("contains no PEM certificate".into()));
    }
    Ok(certs)
}

/// The CAs, or the domain's pins; the signature checks of the crypto provider either way.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pins: TlsPins,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn new(
        ca_file: Option<&Path>,
        pins: TlsPins,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            for cert in read_ca_file(path)? {
                roots.add(cert).map_err(|e| Error::CaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            webpki,
            pins,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = SpkiSha256::of_certificate(end_entity);
        if let Some(pins) = self.pins.for_name(server_name) {
            return match presented {
                Some(hash) if pins.contains(&hash) => Ok(ServerCertVerified::assertion()),
                _ => Err(Refusal::error(
                    format!(
                        "its public key matches none of the {} pin(s) for {}",
                        pins.len(),
                        server_name.to_str()
                    ),
                    presented,
                )),
            };
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(reason) => {
                    Refusal::error(describe(&reason), presented)
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn describe(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => {
            "no trusted CA vouches for it (unknown issuer; a private CA goes in the CA file)".into()
        }
        CertificateError::BadSignature => {
            "a signature does not verify: the server does not hold the certificate's key, or a \
             certificate was not signed by its issuer (BadSignature)"
                .into()
        }
        // webpki's own error, which rustls passes on as `Other`.
        CertificateError::Other(OtherError(inner)) if inner.to_string() == "CaUsedAsEndEntity" => {
            "it is a CA certificate (CA:TRUE) used as the server's own, as self-signed ones often \
             are (CaUsedAsEndEntity)"
                .into()
        }
        other => other.to_string(),
    }
}

/// Why the verifier refused a certificate, travelling inside rustls' error
/// (`InvalidCertificate(Other(..))`) to [`refusal_of`].
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    pub(crate) presented: Option<SpkiSha256>,
}

impl Refusal {
    fn error(reason: String, presented: Option<SpkiSha256>) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Self {
            reason,
            presented,
        }))))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

/// The certificate error of a failed handshake, if it was one: our verifier's [`Refusal`], or
/// rustls' own (a verifier other than ours, no certificate at all).
pub(crate) fn refusal_of(e: &std::io::Error, domain: &str) -> Option<Error> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
            if inner.is::<Refusal>() =>
        {
            let refusal = inner.downcast_ref::<Refusal>()?;
            Some(Error::Certificate {
                domain: domain.to_owned(),
                reason: refusal.reason.clone(),
                presented: refusal.presented,
            })
        }
        rustls::Error::InvalidCertificate(reason) => Some(Error::Certificate {
            domain: domain.to_owned(),
            reason: describe(reason),
            presented: None,
        }),
        rustls::Error::NoCertificatesPresented | rustls::Error::UnsupportedNameType => {
            Some(Error::Certificate {
                domain: domain.to_owned(),
                reason: tls.to_string(),
                presented: None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
