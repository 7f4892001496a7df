//! Server discovery by DNS SRV (RFC 6120 §3.2, XEP-0368) against the real Prosody of the test
//! world: logins with no configured server find it through `_xmpp-client._tcp` and
//! `_xmpps-client._tcp` records, served by a tiny DNS server on loopback written here (UDP,
//! answers from a table, encoded with hickory-proto). Also: a `.` target refuses for good, a
//! domain with no record and nothing on 5222 names what was tried, a failing SRV lookup falls
//! back to the domain on 5222, and a target whose TLS fails hands over to the next one (after
//! being offered the `xmpp-client` ALPN protocol on direct TLS).

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{World, free_port};
use hickory_resolver::proto::op::{Message as DnsMessage, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use xmpp_omemo::Jid;
use xmpp_omemo::stanza::{Message, Stanza};
use xmpp_omemo::stream::{self, Client, ClientConfig, Event, Resolver, tls_client_config};

const WAIT: Duration = Duration::from_secs(30);

/// What the test DNS server answers: `(name with its trailing dot, record)`. A name listed with
/// `Answer::ServFail` fails; a name not listed at all is NXDOMAIN; a listed name without a
/// record of the asked type is an empty NOERROR.
enum Answer {
    Record(RData),
    ServFail,
}

/// A DNS server on 127.0.0.1 (UDP) answering from a table, recording each question.
struct DnsServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, RecordType)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start(table: Vec<(String, Answer)>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("DNS address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(request) = DnsMessage::from_vec(&buf[..n]) else {
                    continue;
                };
                let response = answer(&table, &request, &log);
                let bytes = response.to_vec().expect("encode DNS answer");
                let _ = socket.send_to(&bytes, peer).await;
            }
        });
        Self { addr, asked, task }
    }

    fn asked(&self) -> Vec<(String, RecordType)> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    table: &[(String, Answer)],
    request: &DnsMessage,
    log: &Mutex<Vec<(String, RecordType)>>,
) -> DnsMessage {
    let mut response = DnsMessage::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(query.clone());
    let name = query.name().to_ascii().to_ascii_lowercase();
    let kind = query.query_type();
    log.lock().expect("lock").push((name.clone(), kind));
    let entries: Vec<&Answer> = table
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, a)| a)
        .collect();
    if entries.is_empty() {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    for entry in entries {
        match entry {
            Answer::ServFail => response.metadata.response_code = ResponseCode::ServFail,
            Answer::Record(data) if data.record_type() == kind => {
                response.add_answer(Record::from_rdata(query.name().clone(), 60, data.clone()));
            }
            Answer::Record(_) => {}
        }
    }
    response
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Answer {
    let target = Name::from_ascii(target).expect("SRV target");
    Answer::Record(RData::SRV(SRV::new(priority, weight, port, target)))
}

fn a(ip: Ipv4Addr) -> Answer {
    Answer::Record(RData::A(A(ip)))
}

fn entry(name: &str, answer: Answer) -> (String, Answer) {
    (name.to_owned(), answer)
}

/// A login of `user@domain` that asks `dns` and has no server configured.
fn config(domain: &str, user: &str, ca_file: Option<&Path>, dns: &DnsServer) -> ClientConfig {
    let tls = tls_client_config(ca_file).expect("CA file");
    let jid = Jid::parse(&format!("{user}@{domain}")).expect("test JID");
    let mut config = ClientConfig::new(jid, format!("pw-{user}"), tls);
    config.resolver = Resolver::with_nameserver(dns.addr);
    config.backoff.initial = Duration::from_millis(200);
    assert_eq!(config.server, None, "the server is found through DNS");
    config
}

fn port_of(server: &str) -> u16 {
    server
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

/// Waits up to `WAIT` for the first event `pick` accepts, skipping the others.
async fn wait_for<T>(
    events: &mut xmpp_omemo::stream::Events,
    what: &str,
    pick: impl FnMut(Event) -> Option<T>,
) -> T {
    common::wait_for(events, what, WAIT, pick).await
}

async fn connected(events: &mut xmpp_omemo::stream::Events, who: &str) {
    wait_for(events, &format!("{who} connected"), |e| match e {
        Event::Connected { .. } => Some(()),
        Event::Disconnected { reason, .. } => panic!("{who} could not connect: {reason}"),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_login_without_a_server_goes_through_the_srv_targets_in_order() {
    let world = World::start("prosody", |_, _| Vec::new());
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let c2s = port_of(world.var("XMPP_SERVER"));
    let dead = free_port(); // nothing listens there
    // Direct TLS first (priority 0) on a dead port, then STARTTLS on Prosody (priority 10).
    // The domain itself has no address: the old "domain on 5222" could not connect at all.
    let dns = DnsServer::start(vec![
        entry(
            &format!("_xmpps-client._tcp.{domain}."),
            srv(0, 0, dead, &format!("dead.{domain}.")),
        ),
        entry(
            &format!("_xmpp-client._tcp.{domain}."),
            srv(10, 0, c2s, &format!("c2s.{domain}.")),
        ),
        entry(&format!("dead.{domain}."), a(Ipv4Addr::LOCALHOST)),
        entry(&format!("c2s.{domain}."), a(Ipv4Addr::LOCALHOST)),
    ])
    .await;
    let ca = Path::new(world.var("XMPP_CA_FILE"));
    let (alice, mut events) = Client::spawn(config(&domain, "alice", Some(ca), &dns));
    connected(&mut events, "alice").await;

    let asked: HashSet<(String, RecordType)> = dns.asked().into_iter().collect();
    for (name, kind) in [
        (format!("_xmpps-client._tcp.{domain}."), RecordType::SRV),
        (format!("_xmpp-client._tcp.{domain}."), RecordType::SRV),
        (format!("dead.{domain}."), RecordType::A),
        (format!("c2s.{domain}."), RecordType::A),
    ] {
        assert!(
            asked.contains(&(name.clone(), kind)),
            "{name} {kind} was asked: {asked:?}"
        );
    }
    alice.close().await;
}

#[tokio::test]
async fn an_xmpps_client_record_gets_direct_tls_checked_against_the_jid_domain() {
    let world = World::start_with_env(
        "prosody",
        &[("XMPP_C2S_DIRECT_TLS_PORT", &free_port().to_string())],
        |_, _| Vec::new(),
    );
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let direct = port_of(world.var("XMPP_DIRECT_TLS_SERVER"));
    // Only direct TLS is announced, on a target whose name the certificate does not carry:
    // the certificate is checked for the JID's domain, as XEP-0368 says.
    let dns = DnsServer::start(vec![
        entry(
            &format!("_xmpps-client._tcp.{domain}."),
            srv(5, 1, direct, "tls-frontend.example."),
        ),
        entry("tls-frontend.example.", a(Ipv4Addr::LOCALHOST)),
    ])
    .await;
    let ca = Path::new(world.var("XMPP_CA_FILE"));
    let (alice, mut events) = Client::spawn(config(&domain, "alice", Some(ca), &dns));
    connected(&mut events, "alice").await;
    alice.close().await;
}

#[tokio::test]
async fn a_dot_target_is_final_no_server_names_what_was_tried_and_dns_failures_are_retried() {
    let nowhere = Ipv4Addr::new(127, 0, 0, 2);
    let dns = DnsServer::start(vec![
        entry("_xmpp-client._tcp.refused.test.", srv(0, 0, 0, ".")),
        entry("nowhere.test.", a(nowhere)),
        entry("_xmpps-client._tcp.broken.test.", Answer::ServFail),
        entry("_xmpp-client._tcp.broken.test.", Answer::ServFail),
    ])
    .await;
    // No TLS handshake happens in these cases: the webpki roots will do.
    let (reason, retry_in) = first_failure("refused.test", &dns).await;
    assert_eq!(
        reason,
        stream::Error::ServiceRefused {
            domain: "refused.test".into()
        }
    );
    assert_eq!(retry_in, None, "a `.` target is not tried again");

    let (reason, retry_in) = first_failure("nowhere.test", &dns).await;
    assert_unreachable_naming(
        &reason,
        "nowhere.test:5222 (no SRV record, STARTTLS) at 127.0.0.2:5222",
    );
    assert!(retry_in.is_some(), "an unreachable server is tried again");

    // A failed SRV lookup falls back to the domain itself.
    let (reason, retry_in) = first_failure("broken.test", &dns).await;
    assert_unreachable_naming(&reason, "broken.test:5222 (SRV lookup failed, STARTTLS)");
    assert!(retry_in.is_some(), "a DNS failure passes: tried again");
}

/// The first `Disconnected` of alice at `domain` (no server configured: found through `dns`).
async fn first_failure(domain: &str, dns: &DnsServer) -> (stream::Error, Option<Duration>) {
    let (client, mut events) = Client::spawn(config(domain, "alice", None, dns));
    let failure = wait_for(&mut events, domain, |e| match e {
        Event::Disconnected { reason, retry_in } => Some((reason, retry_in)),
        _ => None,
    })
    .await;
    client.close().await;
    failure
}

fn assert_unreachable_naming(reason: &stream::Error, tried: &str) {
    assert!(
        matches!(reason, stream::Error::Unreachable { .. }),
        "{reason:?}"
    );
    let shown = reason.to_string();
    assert!(shown.contains(tried), "names what it tried: {shown}");
}

#[tokio::test]
async fn a_target_whose_tls_fails_hands_over_to_the_next_and_direct_tls_offers_alpn() {
    let world = World::start("prosody", |_, _| Vec::new());
    let domain = world.var("XMPP_DOMAIN").to_owned();
    let c2s = port_of(world.var("XMPP_SERVER"));
    // The first target takes the TCP connection, reads the TLS ClientHello and hangs up.
    let broken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let broken_port = broken.local_addr().expect("addr").port();
    let offered: Arc<Mutex<Vec<Vec<Vec<u8>>>>> = Arc::default();
    let seen = offered.clone();
    let front = tokio::spawn(async move {
        while let Ok((tcp, _)) = broken.accept().await {
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            if let Ok(start) = acceptor.await {
                let alpn = start
                    .client_hello()
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default();
                seen.lock().expect("lock").push(alpn);
            }
        }
    });
    let dns = DnsServer::start(vec![
        entry(
            &format!("_xmpps-client._tcp.{domain}."),
            srv(0, 0, broken_port, &format!("front.{domain}.")),
        ),
        entry(
            &format!("_xmpp-client._tcp.{domain}."),
            srv(10, 0, c2s, &format!("c2s.{domain}.")),
        ),
        entry(&format!("front.{domain}."), a(Ipv4Addr::LOCALHOST)),
        entry(&format!("c2s.{domain}."), a(Ipv4Addr::LOCALHOST)),
    ])
    .await;
    let ca = Path::new(world.var("XMPP_CA_FILE"));
    let (alice, mut events) = Client::spawn(config(&domain, "alice", Some(ca), &dns));
    connected(&mut events, "alice").await;
    assert_eq!(
        *offered.lock().expect("lock"),
        [vec![b"xmpp-client".to_vec()]],
        "one direct TLS attempt, offering xmpp-client"
    );
    alice.close().await;
    front.abort();
}

#[tokio::test]
async fn two_domains_on_two_servers_found_through_srv_chat_at_the_same_time() {
    let first = World::start("prosody", |_, _| Vec::new());
    let second = World::start_with_env("prosody", &[("XMPP_DOMAIN", "xmpp2.test")], |_, _| {
        Vec::new()
    });
    let worlds = [&first, &second];
    let domains: Vec<String> = worlds.iter().map(|w| w.var("XMPP_DOMAIN").into()).collect();
    assert_ne!(domains[0], domains[1]);

    let mut table = Vec::new();
    for (world, domain) in worlds.iter().zip(&domains) {
        let port = port_of(world.var("XMPP_SERVER"));
        table.push(entry(
            &format!("_xmpp-client._tcp.{domain}."),
            srv(0, 0, port, &format!("chat.{domain}.")),
        ));
        table.push(entry(&format!("chat.{domain}."), a(Ipv4Addr::LOCALHOST)));
    }
    let dns = DnsServer::start(table).await;
    // Each Prosody has its own test CA: one PEM file holds both.
    let bundle = first.state.path().join("ca-bundle.pem");
    let cas: String = worlds
        .iter()
        .map(|w| std::fs::read_to_string(w.var("XMPP_CA_FILE")).expect("CA"))
        .collect();
    std::fs::write(&bundle, cas).expect("bundle");

    // Both domains' logins chat at the same time.
    tokio::join!(
        chat_on(&domains[0], &bundle, &dns),
        chat_on(&domains[1], &bundle, &dns)
    );

    let asked: HashSet<(String, RecordType)> = dns.asked().into_iter().collect();
    for domain in &domains {
        assert!(
            asked.contains(&(format!("_xmpp-client._tcp.{domain}."), RecordType::SRV)),
            "{domain}'s SRV record was asked: {asked:?}"
        );
    }
}

/// alice and bob of `domain`, both found through SRV, send each other five messages.
async fn chat_on(domain: &str, ca_file: &Path, dns: &DnsServer) {
    let (alice, mut alice_events) = Client::spawn(config(domain, "alice", Some(ca_file), dns));
    let (bob, mut bob_events) = Client::spawn(config(domain, "bob", Some(ca_file), dns));
    connected(&mut alice_events, &format!("alice@{domain}")).await;
    connected(&mut bob_events, &format!("bob@{domain}")).await;
    let bob_jid = Jid::parse(&format!("bob@{domain}")).expect("JID");
    let alice_jid = Jid::parse(&format!("alice@{domain}")).expect("JID");
    for i in 0..5 {
        alice
            .send(Message::chat(
                bob_jid.clone(),
                format!("to bob {i} on {domain}"),
            ))
            .await
            .expect("alice sends");
        bob.send(Message::chat(
            alice_jid.clone(),
            format!("to alice {i} on {domain}"),
        ))
        .await
        .expect("bob sends");
    }
    for (events, client, to) in [
        (&mut bob_events, &bob, "bob"),
        (&mut alice_events, &alice, "alice"),
    ] {
        for i in 0..5 {
            let (tag, body) = wait_for(events, "a message", |e| match e {
                Event::Stanza {
                    tag,
                    stanza: Stanza::Message(m),
                } => m.body.map(|b| (tag, b)),
                _ => None,
            })
            .await;
            client.ack(tag);
            assert_eq!(
                body,
                format!("to {to} {i} on {domain}"),
                "in order on {domain}"
            );
        }
    }
    alice.close().await;
    bob.close().await;
}
