//! A hostile XMPP server (in process: no real server sends these) against our client: the
//! connection must end with a precise error, memory must stay bounded, the process must live.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use xmpp_omemo::Jid;
use xmpp_omemo::stream::{Client, ClientConfig, Error, Event, tls_client_config};

const DOMAIN: &str = "hostile.test";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s' from='hostile.test' version='1.0'>";

/// A test CA and a server cert for `hostile.test`, made with the openssl CLI.
fn certs(dir: &Path) -> (std::path::PathBuf, TlsAcceptor) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    std::fs::write(
        dir.join("ext"),
        format!("basicConstraints=CA:FALSE\nsubjectAltName=DNS:{DOMAIN}\n"),
    )
    .expect("ext");
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        &format!("/CN={DOMAIN}"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "srv.crt",
        "-extfile",
        "ext",
    ]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.crt"))
        .expect("crt")
        .collect::<Result<_, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    (dir.join("ca.crt"), TlsAcceptor::from(Arc::new(config)))
}

/// Reads until `needle` has arrived (the client's next step), bounded.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("client is slow")
            .expect("read");
        assert!(n > 0, "client closed while we waited for {needle}");
        got.extend_from_slice(&buf[..n]);
        assert!(got.len() < 1 << 20);
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) {
    s.write_all(text.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
}

/// What the fake server does once the client is logged in.
#[derive(Clone)]
enum Attack {
    /// Send these bytes, then keep the connection open.
    Bytes(Vec<u8>),
    /// Send these bytes, then close the TCP connection.
    BytesThenClose(Vec<u8>),
    /// Write small messages as fast as the client takes them; count the bytes written.
    Flood(Arc<AtomicU64>),
}

/// Accepts one client, negotiates STARTTLS, PLAIN and bind like a real server, then attacks.
async fn serve_one(listener: &TcpListener, acceptor: &TlsAcceptor, attack: Attack) {
    let (mut tcp, _) = listener.accept().await.expect("accept");
    read_until(&mut tcp, "xml:lang='en'>").await;
    write(&mut tcp, &format!("{HEADER}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>")).await;
    read_until(&mut tcp, "<starttls").await;
    write(
        &mut tcp,
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )
    .await;
    let mut tls = acceptor.accept(tcp).await.expect("TLS accept");
    read_until(&mut tls, "xml:lang='en'>").await;
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
    write(&mut tls, &format!("<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>victim@{DOMAIN}/r</jid></bind></iq>")).await;
    // The client starts its session (roster, carbons, presence); the attack comes after.
    read_until(&mut tls, "<presence").await;
    match attack {
        Attack::Bytes(bytes) => {
            tls.write_all(&bytes).await.ok();
            tls.flush().await.ok();
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Attack::BytesThenClose(bytes) => {
            tls.write_all(&bytes).await.ok();
            tls.shutdown().await.ok();
        }
        Attack::Flood(written) => {
            let one = format!(
                "<message from='spam@{DOMAIN}/x' type='chat'><body>{}</body></message>",
                "s".repeat(200)
            );
            let burst = one.repeat(50);
            while tls.write_all(burst.as_bytes()).await.is_ok() {
                written.fetch_add(burst.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

struct Arena {
    _dir: tempfile::TempDir,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    config: ClientConfig,
}

async fn arena() -> Arena {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, acceptor) = certs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = ClientConfig::new(
        Jid::parse(&format!("victim@{DOMAIN}")).expect("jid"),
        "pw",
        tls_client_config(Some(&ca)).expect("ca"),
    );
    config.server = Some(("127.0.0.1".into(), port));
    config.backoff.initial = Duration::from_secs(30);
    config.stream_management = false;
    Arena {
        _dir: dir,
        listener,
        acceptor,
        config,
    }
}

/// The first disconnect reason (after a successful login).
async fn disconnect_reason(events: &mut xmpp_omemo::stream::Events) -> Error {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut connected = false;
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no disconnect within 20 s")
            .expect("events")
        {
            Event::Connected { .. } => connected = true,
            Event::Disconnected { reason, retry_in } => {
                assert!(connected, "the login itself failed: {reason}");
                assert!(
                    retry_in.is_some(),
                    "a hostile server is no reason to stop retrying"
                );
                return reason;
            }
            _ => {}
        }
    }
}

async fn attacked_with(attack: Attack) -> Error {
    let a = arena().await;
    let (client, mut events) = Client::spawn(a.config.clone());
    // The server runs on its own: it may finish (a truncation closes at once) before the client
    // has reported anything, and the events must then still be read from the start.
    let server = tokio::spawn(async move { serve_one(&a.listener, &a.acceptor, attack).await });
    let reason = disconnect_reason(&mut events).await;
    server.abort();
    client.close().await;
    reason
}

fn xml_error(reason: &Error) -> String {
    match reason {
        Error::Xml(text) => text.clone(),
        other => panic!("expected an XML error, got {other:?}"),
    }
}

#[tokio::test]
async fn hostile_billion_laughs() {
    let mut doc = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        doc.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&lol{};", i - 1).repeat(10)
        ));
    }
    doc.push_str("]><message><body>&lol9;</body></message>");
    let reason = attacked_with(Attack::Bytes(doc.into_bytes())).await;
    assert!(xml_error(&reason).contains("DOCTYPE"), "{reason}");
    let reason = attacked_with(Attack::Bytes(
        b"<message><body>&lol9;</body></message>".to_vec(),
    ))
    .await;
    assert!(xml_error(&reason).contains("undeclared entity"), "{reason}");
}

#[tokio::test]
async fn hostile_one_mebibyte_stanza() {
    let big = format!("<message><body>{}</body></message>", "x".repeat(1 << 20));
    let reason = attacked_with(Attack::Bytes(big.into_bytes())).await;
    assert!(
        xml_error(&reason).contains("larger than 262144 bytes"),
        "{reason}"
    );
}

#[tokio::test]
async fn hostile_ten_thousand_deep_nesting() {
    let deep = format!("<message>{}", "<x>".repeat(10_000));
    let reason = attacked_with(Attack::Bytes(deep.into_bytes())).await;
    assert!(
        xml_error(&reason).contains("nested deeper than 32"),
        "{reason}"
    );
}

#[tokio::test]
async fn hostile_invalid_utf8() {
    let mut bytes = b"<message><body>".to_vec();
    bytes.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    bytes.extend_from_slice(b"</body></message>");
    let reason = attacked_with(Attack::Bytes(bytes)).await;
    assert!(xml_error(&reason).contains("invalid UTF-8"), "{reason}");
}

#[tokio::test]
async fn hostile_truncated_stream() {
    let reason = attacked_with(Attack::BytesThenClose(
        b"<message><body>cut in the mid".to_vec(),
    ))
    .await;
    assert!(
        xml_error(&reason).contains("in the middle of an element"),
        "{reason}"
    );
}

/// A flood the owner does not read: the client must push back (bounded channels, no unbounded
/// buffering), so the server can only write a bounded amount before it blocks.
#[tokio::test]
async fn hostile_flood_is_held_back_by_backpressure() {
    let a = arena().await;
    let written = Arc::new(AtomicU64::new(0));
    let (client, mut events) = Client::spawn(a.config.clone());
    let server = tokio::spawn({
        let attack = Attack::Flood(written.clone());
        async move { serve_one(&a.listener, &a.acceptor, attack).await }
    });
    // Let it log in, then stop reading events for three seconds.
    loop {
        if let Some(Event::Connected { .. }) =
            tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("login")
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = written.load(Ordering::Relaxed);
    eprintln!("flood: the server wrote {stalled} bytes before blocking ({later} a second later)");
    assert!(
        stalled < 16 << 20,
        "the client buffered {stalled} bytes of a flood nobody reads"
    );
    assert_eq!(stalled, later, "the server is blocked while nobody reads");
    // Reading again drains it: the client is alive and delivering.
    let mut n = 0;
    while n < 1000 {
        if let Some(Event::Stanza { tag, .. }) =
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("stanzas flow again")
        {
            client.ack(tag);
            n += 1;
        }
    }
    server.abort();
    client.close().await;
}

#[tokio::test]
async fn hostile_server_without_starttls_is_refused_for_good() {
    let a = arena().await;
    let (client, mut events) = Client::spawn(a.config.clone());
    let (mut tcp, _) = a.listener.accept().await.expect("accept");
    read_until(&mut tcp, "xml:lang='en'>").await;
    write(&mut tcp, &format!("{HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>")).await;
    match tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an answer")
    {
        Some(Event::Disconnected {
            reason: Error::TlsUnavailable,
            retry_in: None,
        }) => {}
        other => panic!("expected a final TlsUnavailable, got {other:?}"),
    }
    // Nothing but the header was sent: no credentials in the clear.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("auth"),
        "credentials sent without TLS"
    );
    client.close().await;
}

/// A server that stops answering (a dead TCP path looks the same): the XEP-0199 ping finds out.
#[tokio::test]
async fn silent_server_is_detected_by_ping() {
    let mut a = arena().await;
    a.config.timeouts.ping_interval = Duration::from_millis(500);
    a.config.timeouts.ping_timeout = Duration::from_millis(500);
    let (client, mut events) = Client::spawn(a.config.clone());
    let server = async { serve_one(&a.listener, &a.acceptor, Attack::Bytes(Vec::new())).await };
    let reason = tokio::select! {
        reason = disconnect_reason(&mut events) => reason,
        () = server => panic!("the server gave up first"),
    };
    assert_eq!(reason, Error::Timeout("the answer to a ping"));
    client.close().await;
}
