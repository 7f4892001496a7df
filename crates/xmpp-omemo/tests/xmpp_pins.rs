//! A server with a self-signed `CA:TRUE` certificate (what `prosodyctl cert generate` makes), in
//! process: unpinned, the client stops at once with a certificate error that names the key to
//! pin and does not retry; pinned, the handshake succeeds and the stream goes on to a login; a
//! server that shows the pinned certificate without holding its key is refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use xmpp_omemo::Jid;
use xmpp_omemo::stream::{
    Client, ClientConfig, Error, Event, SpkiSha256, TlsPins, tls_client_config,
    tls_client_config_pinned,
};

const DOMAIN: &str = "selfsigned.test";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s' from='selfsigned.test' version='1.0'>";

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A self-signed RSA certificate with `CA:TRUE` as `<name>.crt`/`<name>.key`, and its SPKI
/// SHA-256 as the documented openssl pipeline prints it.
fn self_signed(dir: &Path, name: &str) -> String {
    sh(
        dir,
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout {name}.key -out {name}.crt \
             -subj /CN={DOMAIN} -addext subjectAltName=DNS:{DOMAIN} \
             -addext basicConstraints=critical,CA:TRUE 2>/dev/null"
        ),
    );
    let printed = sh(
        dir,
        &format!(
            "openssl x509 -in {name}.crt -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256"
        ),
    );
    printed.rsplit(' ').next().expect("hash").trim().to_owned()
}

/// Presents `cert` and signs with `key` (which need not be the certificate's).
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesServerCert for Presents {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn acceptor(dir: &Path, cert: &str, key: &str) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{cert}.crt"))).expect("crt")];
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{key}.key"))).expect("key");
    let key = provider
        .key_provider
        .load_private_key(key)
        .expect("signing key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Presents(Arc::new(CertifiedKey::new(chain, key)))));
    TlsAcceptor::from(Arc::new(config))
}

async fn read_until<S: AsyncRead + Unpin>(s: &mut S, needle: &str) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) {
    s.write_all(text.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
}

/// A server that accepts every connection (counted), negotiates STARTTLS, and after a
/// successful handshake lets the client log in (PLAIN, bind) and keeps the connection open.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    streams_in_tls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

async fn server(acceptor: TlsAcceptor) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let streams_in_tls = Arc::new(AtomicUsize::new(0));
    let (a, s) = (accepted.clone(), streams_in_tls.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move { serve(tcp, acceptor, s).await });
        }
    });
    Server {
        port,
        accepted,
        streams_in_tls,
        task,
    }
}

async fn serve(mut tcp: tokio::net::TcpStream, acceptor: TlsAcceptor, streams: Arc<AtomicUsize>) {
    if read_until(&mut tcp, "xml:lang='en'>").await.is_none() {
        return;
    }
    write(&mut tcp, &format!("{HEADER}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>")).await;
    if read_until(&mut tcp, "<starttls").await.is_none() {
        return;
    }
    write(
        &mut tcp,
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )
    .await;
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    if read_until(&mut tls, "xml:lang='en'>").await.is_none() {
        return;
    }
    streams.fetch_add(1, Ordering::SeqCst);
    write(&mut tls, &format!("{HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>")).await;
    read_until(&mut tls, "</auth>").await;
    write(
        &mut tls,
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    )
    .await;
    read_until(&mut tls, "xml:lang='en'>").await;
    write(&mut tls, &format!("{HEADER}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>")).await;
    read_until(&mut tls, "</iq>").await;
    write(&mut tls, &format!("<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@{DOMAIN}/r</jid></bind></iq>")).await;
    // Answer nothing more; keep the connection until the client goes.
    read_until(&mut tls, "</stream:stream>").await;
}

fn client_config(port: u16, tls: Arc<rustls::ClientConfig>) -> ClientConfig {
    let mut config = ClientConfig::new(
        Jid::parse(&format!("user@{DOMAIN}")).expect("jid"),
        "pw",
        tls,
    );
    config.server = Some(("127.0.0.1".into(), port));
    // A retry, if there were one, would come within the test's watch.
    config.backoff.initial = Duration::from_millis(100);
    config.backoff.max = Duration::from_millis(200);
    config.stream_management = false;
    config.carbons = false;
    config
}

/// The first `Disconnected`, or `Connected` as `Ok`.
async fn outcome(events: &mut xmpp_omemo::stream::Events) -> Result<(), (Error, Option<Duration>)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an outcome within 10 s")
            .expect("events")
        {
            Event::Connected { .. } => return Ok(()),
            Event::Disconnected { reason, retry_in } => return Err((reason, retry_in)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_unpinned_self_signed_certificate_fails_at_once_naming_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = self_signed(dir.path(), "srv");
    let server = server(acceptor(dir.path(), "srv", "srv")).await;
    // The certificate itself as the CA file: what a new user tries first.
    let ca = dir.path().join("srv.crt");
    for tls in [
        tls_client_config(None).expect("roots"),
        tls_client_config(Some(&ca)).expect("CA file"),
    ] {
        let before = server.accepted.load(Ordering::SeqCst);
        let started = Instant::now();
        let (client, mut events) = Client::spawn(client_config(server.port, tls));
        let (reason, retry_in) = outcome(&mut events).await.expect_err("refused");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(retry_in, None, "not retried: {reason}");
        let Error::Certificate { presented, .. } = &reason else {
            panic!("not a certificate error: {reason:?}");
        };
        assert_eq!(presented.map(|p| p.to_string()), Some(printed.clone()));
        let shown = reason.to_string();
        assert!(
            shown.contains(&printed) && shown.contains("CA:TRUE"),
            "{shown}"
        );
        // Several backoff periods later, still one connection, and no other event.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), before + 1);
        assert!(events.try_recv().is_err(), "nothing after the refusal");
        client.close().await;
    }
    assert_eq!(server.streams_in_tls.load(Ordering::SeqCst), 0);
    server.task.abort();
}

#[tokio::test]
async fn a_pinned_self_signed_certificate_is_accepted_and_the_stream_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = self_signed(dir.path(), "srv");
    let server = server(acceptor(dir.path(), "srv", "srv")).await;
    let mut pins = TlsPins::default();
    pins.add(DOMAIN, printed.parse::<SpkiSha256>().expect("pin"));
    let tls = tls_client_config_pinned(None, pins).expect("config");
    let (client, mut events) = Client::spawn(client_config(server.port, tls));
    outcome(&mut events).await.expect("logged in");
    assert_eq!(server.streams_in_tls.load(Ordering::SeqCst), 1);
    client.close().await;
    server.task.abort();
}

#[tokio::test]
async fn the_pinned_certificate_shown_without_its_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = self_signed(dir.path(), "srv");
    self_signed(dir.path(), "impostor");
    // Presents the pinned certificate, but signs the handshake with another key.
    let server = server(acceptor(dir.path(), "srv", "impostor")).await;
    let mut pins = TlsPins::default();
    pins.add(DOMAIN, printed.parse::<SpkiSha256>().expect("pin"));
    let tls = tls_client_config_pinned(None, pins).expect("config");
    let (client, mut events) = Client::spawn(client_config(server.port, tls));
    let (reason, retry_in) = outcome(&mut events).await.expect_err("refused");
    assert!(
        matches!(reason, Error::Certificate { .. }),
        "not a certificate error: {reason:?}"
    );
    assert!(reason.to_string().contains("signature"), "{reason}");
    assert_eq!(retry_in, None);
    assert_eq!(server.streams_in_tls.load(Ordering::SeqCst), 0);
    client.close().await;
    server.task.abort();
}
