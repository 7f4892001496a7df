//! Where a connection goes (RFC 6120 §3.2, XEP-0368): the configured server, else the servers the
//! domain's SRV records name (direct TLS and STARTTLS, ordered by `srv.rs`), else the domain on
//! 5222; each candidate's addresses in turn until one accepts the TCP connection (and, in
//! `negotiate::secure_stream`, the next candidate when TLS or the stream fails on one).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver as Hickory, TokioResolver};
use tokio::net::TcpStream;

use super::config::{ClientConfig, TlsMode};
use super::error::Error;
use super::srv::{self, DIRECT_TLS_SERVICE, STARTTLS_SERVICE, Srv, SrvRecord};
use super::transport;

/// The DNS seam of a connection: the system's resolver (`/etc/resolv.conf`), or one nameserver
/// asked instead (split DNS, tests). Cheap to clone; clones share one cache.
#[derive(Clone, Default)]
pub struct Resolver {
    nameserver: Option<SocketAddr>,
    /// Built on first use. `None` inside: the system's configuration could not be read (then
    /// SRV discovery is skipped with a warning and host names go to the system's lookup).
    hickory: Arc<OnceLock<Option<TokioResolver>>>,
}

impl Resolver {
    /// The system's resolver.
    pub fn system() -> Self {
        Self::default()
    }

    /// Asks `nameserver` (UDP, then TCP for long answers) instead of the system's.
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        Self {
            nameserver: Some(nameserver),
            hickory: Arc::default(),
        }
    }

    /// The nameserver asked instead of the system's, if any.
    pub fn nameserver(&self) -> Option<SocketAddr> {
        self.nameserver
    }

    fn hickory(&self) -> Option<&TokioResolver> {
        self.hickory
            .get_or_init(|| {
                let built = match self.nameserver {
                    Some(addr) => {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                        let config = ResolverConfig::from_name_servers(vec![server]);
                        Hickory::builder_with_config(config, TokioRuntimeProvider::default())
                            .build()
                    }
                    None => TokioResolver::builder_tokio().and_then(|b| b.build()),
                };
                built
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "no DNS resolver (SRV discovery is off)");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Both SRV services of `domain`. A name without records is an empty list; anything else
    /// that fails (timeout, SERVFAIL, no nameserver) is an error, passing by nature.
    async fn srv(&self, domain: &str) -> Result<Vec<SrvRecord>, String> {
        let Some(hickory) = self.hickory() else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for (service, tls) in [
            (DIRECT_TLS_SERVICE, TlsMode::Direct),
            (STARTTLS_SERVICE, TlsMode::StartTls),
        ] {
            // Fully qualified: no search domain is tried.
            let name = format!("{service}.{domain}.");
            match hickory.srv_lookup(name.as_str()).await {
                Ok(lookup) => {
                    records.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                        RData::SRV(s) => Some(SrvRecord {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: host_of(&s.target.to_ascii()),
                            tls,
                        }),
                        _ => None,
                    }))
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => return Err(format!("{service}.{domain}: {e}")),
            }
        }
        Ok(records)
    }

    /// The addresses of `host` (a name or an IP address) with `port`.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Some(ip) = host.parse().ok().or_else(|| {
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        }) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match (self.nameserver, self.hickory()) {
            (Some(_), Some(hickory)) => {
                let found = hickory
                    .lookup_ip(format!("{}.", host.trim_end_matches('.')).as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
            }
            // The system's own lookup (getaddrinfo: /etc/hosts, nsswitch), as before SRV.
            _ => Ok(tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| e.to_string())?
                .collect()),
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nameserver {
            Some(addr) => write!(f, "Resolver({addr})"),
            None => f.write_str("Resolver(system)"),
        }
    }
}

/// An SRV target as a host name: without the trailing dot, but the root (`.`) stays `.`.
fn host_of(name: &str) -> String {
    if name == "." {
        return name.to_owned();
    }
    name.strip_suffix('.').unwrap_or(name).to_owned()
}

/// One place to try: a host, its port and how TLS starts there.
pub(crate) struct Candidate {
    host: String,
    port: u16,
    pub(crate) tls: TlsMode,
    /// Where it came from, for the error: `"network.server"`, `"SRV"`, or the fallback.
    origin: &'static str,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = match self.tls {
            TlsMode::Direct => "direct TLS",
            TlsMode::StartTls => "STARTTLS",
        };
        write!(f, "{}:{} ({}, {tls})", self.host, self.port, self.origin)
    }
}

/// Where `config` may connect, in order: the configured server with the configured mode, else
/// the SRV targets in order with each one's mode, else the JID's domain on 5222 with STARTTLS
/// (also when the SRV lookup failed: RFC 6120 §3.2.2 falls back to the domain's address).
pub(crate) async fn candidates(config: &ClientConfig) -> Result<Vec<Candidate>, Error> {
    let domain = config.jid.domain();
    match &config.server {
        Some((host, port)) => Ok(vec![Candidate {
            host: host.clone(),
            port: *port,
            tls: config.tls,
            origin: "configured",
        }]),
        None => match discover(&config.resolver, domain).await {
            Err(Error::Dns { reason, .. }) => {
                tracing::warn!(%domain, %reason, "the SRV lookup failed; trying the domain itself on 5222");
                Ok(vec![Candidate {
                    host: domain.to_owned(),
                    port: 5222,
                    tls: TlsMode::StartTls,
                    origin: "SRV lookup failed",
                }])
            }
            other => other,
        },
    }
}

/// Opens a TCP connection to `candidate`, trying its addresses in turn; `None` after noting
/// in `tried` why none took it.
pub(crate) async fn connect_to(
    config: &ClientConfig,
    candidate: &Candidate,
    tried: &mut Vec<String>,
) -> Option<TcpStream> {
    let addresses = match config
        .resolver
        .addresses(&candidate.host, candidate.port)
        .await
    {
        Ok(found) if found.is_empty() => {
            tried.push(format!("{candidate}: no address"));
            return None;
        }
        Ok(found) => found,
        Err(e) => {
            tried.push(format!("{candidate}: {e}"));
            return None;
        }
    };
    for addr in addresses {
        match transport::connect_tcp(addr, config.timeouts.connect).await {
            Ok(tcp) => {
                tracing::debug!(account = %config.jid, %candidate, %addr, "connected");
                return Some(tcp);
            }
            Err(e) => tried.push(format!("{candidate} at {addr}: {e}")),
        }
    }
    None
}

/// The candidates for `domain` when no server is configured.
async fn discover(resolver: &Resolver, domain: &str) -> Result<Vec<Candidate>, Error> {
    let records = resolver.srv(domain).await.map_err(|reason| Error::Dns {
        domain: domain.to_owned(),
        reason,
    })?;
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    match srv::plan(records, &mut rng) {
        Srv::Refused => Err(Error::ServiceRefused {
            domain: domain.to_owned(),
        }),
        Srv::Targets(targets) => Ok(targets
            .into_iter()
            .map(|r| Candidate {
                host: r.target,
                port: r.port,
                tls: r.tls,
                origin: "SRV",
            })
            .collect()),
        Srv::NoRecord => Ok(vec![Candidate {
            host: domain.to_owned(),
            port: 5222,
            tls: TlsMode::StartTls,
            origin: "no SRV record",
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_targets_lose_their_trailing_dot_and_the_root_stays_a_dot() {
        assert_eq!(host_of("xmpp.example.org."), "xmpp.example.org");
        assert_eq!(host_of("xmpp.example.org"), "xmpp.example.org");
        assert_eq!(host_of("."), ".");
    }

    #[test]
    fn a_candidate_says_where_it_came_from_and_how_tls_starts() {
        let c = Candidate {
            host: "xmpp.example.org".into(),
            port: 5223,
            tls: TlsMode::Direct,
            origin: "SRV",
        };
        assert_eq!(c.to_string(), "xmpp.example.org:5223 (SRV, direct TLS)");
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup() {
        let r = Resolver::with_nameserver("127.0.0.1:9".parse().expect("addr"));
        assert_eq!(
            r.addresses("127.0.0.1", 5222).await,
            Ok(vec!["127.0.0.1:5222".parse().expect("addr")])
        );
        assert_eq!(
            r.addresses("[::1]", 5223).await,
            Ok(vec!["[::1]:5223".parse().expect("addr")])
        );
    }
}
