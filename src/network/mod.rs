//! The network connector: the core's [`Network`] and [`LoginClient`] traits on top of
//! `interop/` (XMPP + legacy OMEMO), one [`OmemoClient`] per linked identity. It turns
//! [`OmemoEvent`]s into the core's [`RemoteEvent`]s; a message's [`Delivery`] becomes the
//! event's [`Ack`], so the core commits the Signal state and acknowledges the stanza last.

mod events;
mod failure;
mod files;
mod login;

use events::*;
use failure::failure_text;
use login::XmppLogin;
mod presence;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OnceCell, mpsc};
use tracing::{debug, info, warn};

use crate::core::{
    Ack, Availability, BlockedAt, Capabilities, ContactUpdate, Encrypted, LoginClient, Network,
    NetworkError, OutgoingMessage, PendingState, Relations, RemoteEvent, RemoteEvents, Signal,
    Typing, UploadSlot,
};
use crate::ids::RemoteUserId;
use crate::store::Store;
use presence::PresenceBook;
use xmpp_omemo::omemo::{
    DecryptError, Delivery, EncryptedMessage, MetaMessage, OmemoClient, OmemoConfig, OmemoError,
    OmemoEvent, PlainMessage, Protocols, TrustPolicy, fingerprint,
};
use xmpp_omemo::stanza::carbons::Direction;
use xmpp_omemo::stanza::disco::DiscoInfo;
use xmpp_omemo::stanza::error::{Condition, ErrorType, StanzaError};
use xmpp_omemo::stanza::extensions::{ChatState, Extensions, Reactions, Reply};
use xmpp_omemo::stanza::message::{Message, MessageType};
use xmpp_omemo::stanza::presence::PresenceType;
use xmpp_omemo::stanza::roster::{RosterItem, Subscription};
use xmpp_omemo::stanza::{FromElement, IntoElement, Iq, IqPayload};
use xmpp_omemo::stream::Resolver;
use xmpp_omemo::stream::{self, ClientConfig, Event, TlsMode, TlsPins, tls_client_config_pinned};
use xmpp_omemo::{FeatureCache, Jid};

/// How logins connect: from the `[network]` config section.
#[derive(Clone, Debug)]
pub struct NetworkSettings {
    /// Whether a message a contact sends without OMEMO is shown (marked) or refused.
    pub reject_unencrypted: bool,
    /// Where every login connects unless its domain is in `servers`.
    pub server: Option<(String, u16)>,
    /// Per XMPP domain (lower case), where its logins connect.
    pub servers: HashMap<String, (String, u16)>,
    /// The nameserver asked instead of the system's for SRV records and server addresses.
    pub dns_server: Option<SocketAddr>,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// Per XMPP domain, the certificate keys its server may present instead of one a CA vouches
    /// for (`network.tls_pins`).
    pub tls_pins: TlsPins,
    pub resource: String,
    pub allow_register: bool,
    /// Which XMPP domains may be linked (see [`NetworkSettings::may_link`]).
    pub allowed_domains: Vec<String>,
    pub policy: TrustPolicy,
    /// The OMEMO versions every login speaks (`network.omemo`).
    pub protocols: Protocols,
    /// How long `start(wait = true)` waits for the first connection.
    pub link_timeout: Duration,
    /// The core catches up from the server's archive (`network.catch_up_limit` > 0): each
    /// session touches the archive before its presence (see `ClientConfig::archive_first`).
    pub catch_up: bool,
    /// Every message of ours asks for a delivery receipt (XEP-0184); only worth the contact's
    /// answer when the core posts it (`appservice.message_status_events`).
    pub request_receipts: bool,
}

impl NetworkSettings {
    /// Where a login of `domain` connects: its `servers` entry, else `server`; `None` means
    /// the library discovers it (DNS SRV, else the domain itself on port 5222).
    pub fn server_for(&self, domain: &str) -> Option<(String, u16)> {
        self.servers
            .get(&domain.to_ascii_lowercase())
            .or(self.server.as_ref())
            .cloned()
    }

    /// Whether accounts of `domain` may be linked: a domain of `allowed_domains` (`"*"`
    /// allows any) or of `servers`; with `allowed_domains` empty, also any domain when
    /// `server` is set (every other login connects to that one server, so no other host is
    /// ever reached), and none when it is not (a user could otherwise make the bridge connect
    /// to any host on port 5222).
    pub fn may_link(&self, domain: &str) -> Result<(), String> {
        let domain = domain.to_ascii_lowercase();
        let listed = |d: &String| d == "*" || d.eq_ignore_ascii_case(&domain);
        if self.allowed_domains.iter().any(listed) || self.servers.contains_key(&domain) {
            return Ok(());
        }
        if self.allowed_domains.is_empty() && self.server.is_some() {
            return Ok(());
        }
        if self.allowed_domains.is_empty() && self.servers.is_empty() {
            return Err(format!(
                "this bridge links no XMPP domain yet: its admin lists the allowed ones in \
                 network.allowed_domains (not {domain})"
            ));
        }
        let mut allowed: Vec<&str> = self
            .allowed_domains
            .iter()
            .map(String::as_str)
            .chain(self.servers.keys().map(String::as_str))
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        Err(format!(
            "accounts of {domain} cannot be linked on this bridge (network.allowed_domains: {})",
            allowed.join(", ")
        ))
    }
}

/// XMPP + OMEMO as the core's network.
pub struct XmppNetwork {
    settings: NetworkSettings,
    tls: Arc<rustls::ClientConfig>,
    store: Arc<dyn Store>,
    /// What contacts' clients support, shared by all logins (most contacts run a few clients).
    features: FeatureCache,
    /// DNS for server discovery, shared by all logins (one cache).
    resolver: Resolver,
    /// Bounds the logins' connection attempts in flight ([`CONNECTS_AT_ONCE`]).
    connect_gate: Arc<tokio::sync::Semaphore>,
}

/// How many logins negotiate a connection (TCP, TLS, SASL, bind) at once. A restart with
/// thousands of stored logins reaches the server as a steady stream, not a herd; a server does
/// each login's TLS and SASL work in turn anyway (Prosody on one core), so more in flight would
/// only queue there.
pub const CONNECTS_AT_ONCE: usize = 16;

impl XmppNetwork {
    /// Fails if the CA file cannot be read.
    pub fn new(settings: NetworkSettings, store: Arc<dyn Store>) -> Result<Self, NetworkError> {
        let resolver = settings
            .dns_server
            .map_or_else(Resolver::system, Resolver::with_nameserver);
        let tls = tls_client_config_pinned(settings.ca_file.as_deref(), settings.tls_pins.clone())
            .map_err(|e| NetworkError::Other(e.to_string()))?;
        Ok(Self {
            settings,
            tls,
            store,
            features: FeatureCache::new(),
            resolver,
            connect_gate: Arc::new(tokio::sync::Semaphore::new(CONNECTS_AT_ONCE)),
        })
    }

    fn client_config(
        &self,
        jid: &RemoteUserId,
        password: &str,
    ) -> Result<ClientConfig, NetworkError> {
        let jid =
            Jid::parse(jid.as_str()).map_err(|e| NetworkError::Other(format!("not a JID: {e}")))?;
        let server = self.settings.server_for(jid.domain());
        let mut config = ClientConfig::new(jid, password, self.tls.clone());
        config.server = server;
        config.tls = self.settings.tls;
        config.resolver = self.resolver.clone();
        config.resource = Some(self.settings.resource.clone());
        config.archive_first = self.settings.catch_up;
        config.connect_gate = Some(self.connect_gate.clone());
        Ok(config)
    }
}

#[async_trait]
impl Network for XmppNetwork {
    async fn register(&self, jid: &RemoteUserId, password: &str) -> Result<(), NetworkError> {
        let config = self.client_config(jid, password)?;
        stream::register(&config)
            .await
            .map_err(|e| NetworkError::Register(e.to_string()))
    }

    async fn start(
        &self,
        jid: &RemoteUserId,
        password: &str,
        wait: bool,
    ) -> Result<(Arc<dyn LoginClient>, RemoteEvents), NetworkError> {
        let config = self.client_config(jid, password)?;
        // Decrypted in the contact's inbound lane, so one contact's waiting message holds up
        // nobody else's (see `core/inbound.rs`).
        let omemo = OmemoConfig {
            policy: self.settings.policy,
            defer_decryption: true,
            protocols: self.settings.protocols,
        };
        let (client, mut events) =
            OmemoClient::start(config, self.store.omemo(jid.as_str()), omemo)
                .await
                .map_err(|e| NetworkError::Other(e.to_string()))?;
        let connected = Arc::new(AtomicBool::new(false));
        let mut early = Vec::new();
        if wait {
            let deadline = tokio::time::sleep(self.settings.link_timeout);
            tokio::pin!(deadline);
            let mut last_error = None;
            loop {
                tokio::select! {
                    () = &mut deadline => {
                        client.close().await;
                        return Err(match last_error {
                            Some(reason) => NetworkError::Other(reason),
                            None => NetworkError::Timeout(self.settings.link_timeout),
                        });
                    }
                    event = events.recv() => match event {
                        Some(OmemoEvent::Connected { resumed, .. }) => {
                            connected.store(true, Ordering::Relaxed);
                            early.push(RemoteEvent::Connected { resumed });
                            break;
                        }
                        // Fatal, a refused certificate included: say so now.
                        Some(OmemoEvent::Disconnected { reason, retry_in: None }) => {
                            client.close().await;
                            return Err(match reason {
                                stream::Error::AuthFailed { condition } => NetworkError::Auth(condition),
                                other => NetworkError::Other(failure_text(&other)),
                            });
                        }
                        Some(OmemoEvent::Disconnected { reason, .. }) => last_error = Some(reason.to_string()),
                        Some(other) => {
                            if let Some(event) = convert_event(other, &connected) {
                                early.push(event);
                            }
                        }
                        None => return Err(NetworkError::Other("the connection ended".into())),
                    }
                }
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let plain = PlainPolicy {
            reject: self.settings.reject_unencrypted,
            client: client.clone(),
        };
        let presences = Arc::new(StdMutex::new(PresenceBook::default()));
        tokio::spawn(pump(
            events,
            tx,
            early,
            connected.clone(),
            jid.clone(),
            plain,
            (presences.clone(), self.features.clone()),
        ));
        let login = XmppLogin {
            client,
            connected,
            blocking: OnceCell::new(),
            presences,
            features: self.features.clone(),
            request_receipts: self.settings.request_receipts,
        };
        Ok((Arc::new(login), rx))
    }

    fn can_register(&self) -> bool {
        self.settings.allow_register
    }

    fn may_link(&self, domain: &str) -> Result<(), String> {
        self.settings.may_link(domain)
    }
}

/// What to do with a contact's message that came without OMEMO.
struct PlainPolicy {
    reject: bool,
    client: OmemoClient,
}

impl PlainPolicy {
    /// Bridged with `encrypted: false`, or refused: an error goes back to the sender
    /// (`not-acceptable`, modify) and the core tells the portal.
    async fn convert(&self, plain: PlainMessage) -> Option<RemoteEvent> {
        let ack = Box::new(DeliveryAck(plain.delivery));
        let Ok(contact) = RemoteUserId::parse(plain.from.bare().as_str()) else {
            return Some(RemoteEvent::Ignored { ack });
        };
        if !self.reject {
            return Some(RemoteEvent::Message {
                contact,
                id: plain.origin_id.or(plain.id),
                server_id: plain.stanza_id,
                body: plain.body,
                nick: plain.nick,
                client: Some(plain.from.to_string()),
                oob_url: plain.extensions.oob_url.clone(),
                encrypted: false,
                relations: relations_of(&plain.extensions),
                ack,
            });
        }
        let mut error = StanzaError::new(ErrorType::Modify, Condition::NotAcceptable);
        error.text =
            Some("This account only accepts end-to-end encrypted (OMEMO) messages.".into());
        // With the original payload, as RFC 6120 §8.3.1 asks (clients such as slixmpp only
        // show a message error that carries its body).
        let bounce = Message {
            to: Some(plain.from.clone()),
            id: plain.id.clone(),
            kind: MessageType::Error,
            body: Some(plain.body),
            error: Some(error),
            ..Message::default()
        };
        // In a task of its own: the send waits for the server's acknowledgement, which comes
        // behind the stanzas this pump has not handed on yet.
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.xmpp().send(bounce).await {
                warn!(error = %e, "cannot refuse an unencrypted message");
            }
        });
        Some(RemoteEvent::PlainRefused { contact, ack })
    }
}

/// How long after a session that did not resume the server has to announce every available
/// contact again, before those it did not announce are shown offline.
const PRESENCE_SWEEP: Duration = Duration::from_secs(10);

/// Forwards the connection's events to the core, converted, in order; keeps the contacts'
/// presence book.
async fn pump(
    mut events: xmpp_omemo::omemo::OmemoEvents,
    tx: mpsc::Sender<Box<RemoteEvent>>,
    early: Vec<RemoteEvent>,
    connected: Arc<AtomicBool>,
    jid: RemoteUserId,
    plain: PlainPolicy,
    (presences, features): (Arc<StdMutex<PresenceBook>>, FeatureCache),
) {
    let book = || {
        presences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    for event in early {
        if tx.send(Box::new(event)).await.is_err() {
            return;
        }
    }
    let mut sweep: Option<tokio::time::Instant> = None;
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            () = tokio::time::sleep_until(sweep.unwrap_or_else(tokio::time::Instant::now)), if sweep.is_some() => {
                sweep = None;
                let gone = book().sweep();
                for event in gone {
                    if tx.send(Box::new(event)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let mut extra = Vec::new();
        let event = match event {
            // Boxed: the task's future is as large as its largest await, for every idle login.
            OmemoEvent::Plain(message) => Box::pin(plain.convert(message)).await,
            OmemoEvent::Encrypted(message) => encrypted_event(message),
            OmemoEvent::Presence(seen) => {
                if !seen.available {
                    features.forget(&seen.from);
                }
                book().update(seen)
            }
            other => {
                match &other {
                    OmemoEvent::Connected { resumed: false, .. } => {
                        book().mark_stale();
                        sweep = Some(tokio::time::Instant::now() + PRESENCE_SWEEP);
                    }
                    OmemoEvent::Disconnected { retry_in: None, .. } => extra = book().clear(),
                    _ => {}
                }
                convert_event(other, &connected)
            }
        };
        for event in event.into_iter().chain(extra) {
            if tx.send(Box::new(event)).await.is_err() {
                return;
            }
        }
    }
    // The login ended: nobody is seen online through it any more.
    let gone = book().clear();
    for event in gone {
        if tx.send(Box::new(event)).await.is_err() {
            break;
        }
    }
    debug!(jid = %jid, "connection events end");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(server: Option<&str>, servers: &[(&str, &str)]) -> NetworkSettings {
        let split = |s: &str| crate::config::host_port(s).expect("host:port");
        NetworkSettings {
            reject_unencrypted: false,
            server: server.map(split),
            servers: servers
                .iter()
                .map(|(d, s)| ((*d).to_owned(), split(s)))
                .collect(),
            tls: TlsMode::StartTls,
            dns_server: None,
            ca_file: None,
            tls_pins: TlsPins::default(),
            resource: "interop".into(),
            allow_register: false,
            allowed_domains: Vec::new(),
            policy: TrustPolicy::Strict,
            protocols: Protocols::default(),
            link_timeout: Duration::from_secs(1),
            catch_up: false,
            request_receipts: false,
        }
    }

    #[test]
    fn linkable_domains_are_the_listed_ones_or_any_behind_one_fixed_server() {
        // Neither a fixed server nor a list: the JID's domain would be dialled, so none.
        let open = settings(None, &[]);
        let err = open.may_link("example.org").expect_err("nothing allowed");
        assert!(err.contains("network.allowed_domains"), "{err}");
        // One fixed server: every login reaches only it.
        assert!(
            settings(Some("127.0.0.1:5222"), &[])
                .may_link("any.example")
                .is_ok()
        );
        // `servers` lists domains; others are refused, naming what is allowed.
        let per_domain = settings(None, &[("xmpp2.test", "127.0.0.1:5223")]);
        assert!(per_domain.may_link("XMPP2.test").is_ok());
        let err = per_domain.may_link("evil.example").expect_err("not listed");
        assert!(
            err.contains("evil.example") && err.contains("xmpp2.test"),
            "{err}"
        );
        // A fixed server beside `servers`: the other domains go to it.
        let both = settings(Some("127.0.0.1:5222"), &[("xmpp2.test", "127.0.0.1:5223")]);
        assert!(both.may_link("xmpp.test").is_ok() && both.may_link("xmpp2.test").is_ok());
        // An explicit list wins over the fixed server's "any".
        let mut listed = settings(Some("127.0.0.1:5222"), &[]);
        listed.allowed_domains = vec!["chat.example".into()];
        assert!(listed.may_link("Chat.Example").is_ok());
        assert!(listed.may_link("other.example").is_err());
        listed.allowed_domains = vec!["*".into()];
        assert!(listed.may_link("other.example").is_ok());
    }

    #[test]
    fn a_listed_domain_goes_to_its_server_others_to_the_default() {
        let s = settings(
            Some("default.example:5222"),
            &[("xmpp2.test", "127.0.0.1:5223")],
        );
        assert_eq!(
            s.server_for("xmpp2.test"),
            Some(("127.0.0.1".to_owned(), 5223))
        );
        assert_eq!(
            s.server_for("XMPP2.Test"),
            Some(("127.0.0.1".to_owned(), 5223))
        );
        assert_eq!(
            s.server_for("xmpp.test"),
            Some(("default.example".to_owned(), 5222))
        );
    }

    #[test]
    fn a_login_connects_where_its_domain_says() {
        let s = settings(None, &[("xmpp2.test", "127.0.0.1:5223")]);
        assert_eq!(s.server_for("xmpp.test"), None);
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let network = XmppNetwork::new(s, store).expect("no CA file");
        let jid = |j: &str| RemoteUserId::parse(j).expect("jid");
        let second = network
            .client_config(&jid("alice@xmpp2.test"), "pw")
            .expect("config");
        assert_eq!(second.server, Some(("127.0.0.1".to_owned(), 5223)));
        // Unlisted, and no `server`: the library connects to the JID's domain on 5222.
        let first = network
            .client_config(&jid("alice@xmpp.test"), "pw")
            .expect("config");
        assert_eq!(first.server, None);
        assert_eq!(first.resolver.nameserver(), None, "the system's DNS");
    }

    #[test]
    fn a_configured_nameserver_is_what_every_login_asks() {
        let mut s = settings(None, &[]);
        s.dns_server = Some("127.0.0.53:5353".parse().expect("addr"));
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let network = XmppNetwork::new(s, store).expect("no CA file");
        let jid = RemoteUserId::parse("alice@xmpp.test").expect("jid");
        let config = network.client_config(&jid, "pw").expect("config");
        assert_eq!(config.server, None, "discovered through DNS");
        assert_eq!(
            config.resolver.nameserver(),
            Some("127.0.0.53:5353".parse().expect("addr"))
        );
    }
}
