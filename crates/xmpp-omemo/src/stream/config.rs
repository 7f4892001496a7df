//! What one client connection needs to know.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::resolver::Resolver;
use crate::jid::Jid;
use crate::xml::Limits;

/// How TLS is set up. There is no plaintext mode: PLAIN and SCRAM always run inside TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Connect in the clear and upgrade with STARTTLS (RFC 6120 §5); refuse servers without it.
    StartTls,
    /// TLS from the first byte (XEP-0368 style, usually port 5223).
    Direct,
}

/// Timers of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake, each.
    pub connect: Duration,
    /// Each step of stream negotiation (features, SASL, bind, resume).
    pub negotiate: Duration,
    /// A request/response iq started with `Client::iq`.
    pub iq: Duration,
    /// An XEP-0199 ping to the server after this long without traffic from it.
    pub ping_interval: Duration,
    /// The connection is dropped when a ping (or a write) takes longer than this.
    pub ping_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            negotiate: Duration::from_secs(30),
            iq: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
            ping_timeout: Duration::from_secs(30),
        }
    }
}

/// Reconnect delays: exponential from `initial` to `max`, each with ±25 % jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// One account's connection settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The account, as a bare JID.
    pub jid: Jid,
    pub password: String,
    /// Resource to bind; `None` lets the server pick.
    pub resource: Option<String>,
    /// Host and port to connect to (with `tls`). `None`: the servers the domain's DNS SRV
    /// records name (`_xmpps-client._tcp` with direct TLS, `_xmpp-client._tcp` with STARTTLS,
    /// RFC 6120 §3.2 and XEP-0368), else the JID's domain on 5222 with STARTTLS.
    pub server: Option<(String, u16)>,
    /// How TLS starts on `server` (the SRV records decide it for the servers they name).
    pub tls: TlsMode,
    /// Who answers the DNS questions (SRV records, and the addresses of SRV targets).
    pub resolver: Resolver,
    /// Shared by every connection (see `tls_client_config`).
    pub tls_config: Arc<rustls::ClientConfig>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub backoff: Backoff,
    /// XEP-0198: enable with resumption when the server offers it.
    pub stream_management: bool,
    /// XEP-0280: enable carbons after each new session.
    pub carbons: bool,
    /// Send available presence after each new session (after the roster is fetched).
    pub initial_presence: bool,
    /// Before that presence, touch our archive (XEP-0313) with an empty query: the owner
    /// catches up from the archive, so the server need not deliver offline messages too
    /// (Prosody then skips them, and keeps a dead session's unacknowledged messages in the
    /// archive only), and live messages are not raced by stored copies.
    pub archive_first: bool,
    /// Extra features announced in our disco#info answer (ping, disco#info are always there).
    pub features: Vec<String>,
    /// Stanzas queued (unsent or unacknowledged) before `send` fails with `QueueFull`.
    pub max_queue: usize,
    /// Shared by clients that should not all connect at once: a connection attempt (TCP,
    /// TLS, authentication, bind or resumption) holds one of its permits. `None`: no bound.
    /// A process with many accounts on one server starts them without a thundering herd.
    pub connect_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl ClientConfig {
    /// Defaults for everything but the account and TLS roots.
    pub fn new(
        jid: Jid,
        password: impl Into<String>,
        tls_config: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            jid: jid.bare(),
            password: password.into(),
            resource: Some("interop-bridge".to_owned()),
            server: None,
            tls: TlsMode::StartTls,
            resolver: Resolver::system(),
            tls_config,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            backoff: Backoff::default(),
            stream_management: true,
            carbons: true,
            initial_presence: true,
            archive_first: false,
            features: Vec::new(),
            max_queue: 10_000,
            connect_gate: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("jid", &self.jid)
            .field("password", &"<redacted>")
            .field("resource", &self.resource)
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("resolver", &self.resolver)
            .field("stream_management", &self.stream_management)
            .finish_non_exhaustive()
    }
}
