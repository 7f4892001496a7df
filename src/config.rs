//! The bridge's configuration: one serde struct, validated by [`Config::validate`], with a fully
//! commented example generated from it ([`render_example`]; `config.example.toml` is its output).
//!
//! Every error names the file, the key and the reason ([`ConfigError`]). Secrets are
//! [`SecretSource`]s: a literal, a file, or an environment variable. Neither their `Debug` output
//! nor any error message contains the secret itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ruma::{ServerName, UserId};
use serde::{Deserialize, Serialize};
use xmpp_omemo::stream::SpkiSha256;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: HomeserverConfig,
    #[serde(default)]
    pub appservice: AppserviceConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub media: MediaConfig,
    /// Directory relative paths are resolved against: the config file's directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL.
    pub address: String,
    /// The homeserver's `server_name`.
    pub domain: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppserviceConfig {
    pub id: String,
    /// URL the homeserver uses to reach the bridge.
    pub address: String,
    /// Socket address the bridge listens on.
    pub listen: String,
    pub bot_localpart: String,
    pub bot_displayname: String,
    /// Localpart prefix of ghost users.
    pub ghost_prefix: String,
    /// The registration file; its tokens are used unless overridden below.
    pub registration: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_token: Option<SecretSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs_token: Option<SecretSource>,
    /// Largest transaction body accepted from the homeserver.
    pub max_transaction_bytes: usize,
    /// Double puppeting: what the user sends from their other XMPP clients is posted as their
    /// own Matrix user, through a second registration (`<registration>-doublepuppet.yaml`,
    /// written by `generate-registration`) that the homeserver must load too.
    pub double_puppet: bool,
    /// Delivery receipts from contacts become `com.beeper.message_send_status` events on the
    /// user's message (one post per message; Beeper's clients show them, Element does not).
    pub message_status_events: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    /// Encrypts the store's secrets at rest (XMPP passwords, OMEMO private keys and sessions,
    /// queued events) and the Matrix crypto stores: a random passphrase, or a key file. Unset:
    /// they are stored in the clear. Losing it loses the linked logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// How linked identities connect to the interop network (XMPP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `host:port` every login connects to, instead of discovering its domain's server (DNS
    /// SRV, RFC 6120 §3.2 and XEP-0368, else the domain on port 5222).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Per XMPP domain, the `host:port` its accounts connect to; it takes precedence over
    /// `server` for a JID of that domain.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, String>,
    /// A nameserver (`ip:port`) asked instead of the system's (`/etc/resolv.conf`) for the SRV
    /// records and addresses of XMPP servers: split DNS, or a resolver of the bridge's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
    pub tls: TlsChoice,
    /// Extra CA certificates (PEM) to trust, for a private server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Per XMPP domain, the SHA-256 of the SubjectPublicKeyInfo of each certificate its server
    /// may present (hex, colons allowed). A pinned domain accepts exactly these keys, a
    /// self-signed certificate included, and no CA's; other domains are unaffected.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tls_pins: BTreeMap<String, Vec<SpkiSha256>>,
    /// The fixed XMPP resource of every login (the same after restarts, so the server hands
    /// back what it held for the previous connection).
    pub resource: String,
    /// Whether `link --register` (XEP-0077 in-band registration) is offered.
    pub allow_register: bool,
    /// The XMPP domains whose accounts may be linked (`"*"`: any). Empty: the domains of
    /// `servers`, or any domain when `server` is set (every login then reaches that one
    /// server), or none.
    pub allowed_domains: Vec<String>,
    pub trust: TrustChoice,
    /// The OMEMO versions the bridge speaks with contacts.
    pub omemo: OmemoChoice,
    /// Seconds a message to a contact waits — for the server's confirmation, or for the
    /// account to connect — before the user is told it is waiting (it still goes out).
    pub send_timeout_secs: u64,
    pub unencrypted: UnencryptedChoice,
    /// Who may open a message request (a chat the user did not start, from outside the roster).
    pub requests: RequestsChoice,
    /// At most this many new message requests per linked identity in one hour; later ones in
    /// that hour are dropped, and the user is told once.
    pub max_requests_per_hour: u32,
    /// Seconds between two settings of a contact's presence on their ghost: the homeserver
    /// shows a presence as offline unless it is set again within its timeout (Synapse's
    /// `presence.sync_online_timeout`, 30 s by default). 0: presence is not bridged.
    pub presence_refresh_secs: u64,
    /// At most this many messages are fetched from the account's server archive (XEP-0313)
    /// after each new session, to bridge what came while the bridge was away. 0: off.
    pub catch_up_limit: usize,
}

/// Who may open a message request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestsChoice {
    /// Anyone (up to `max_requests_per_hour`).
    Anyone,
    /// Only contacts in the user's roster; other messages are dropped.
    RosterOnly,
}

/// What happens to a message a contact sends without OMEMO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnencryptedChoice {
    /// Shown in the portal, marked as unencrypted.
    Bridge,
    /// Refused: the contact gets an error, the portal a notice.
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsChoice {
    Starttls,
    Direct,
}

/// Which OMEMO versions the bridge speaks (`network.omemo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OmemoChoice {
    /// Legacy OMEMO (`eu.siacs.conversations.axolotl`) only.
    Legacy,
    /// OMEMO 2 (`urn:xmpp:omemo:2`) only.
    Omemo2,
    /// OMEMO 2 with contacts that announce it, legacy OMEMO with the others.
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustChoice {
    /// Trust a contact's new device or changed identity key, and say so in the chat.
    TrustOnFirstUse,
    /// Say so, and do not encrypt to it until the user trusts it (`trust`).
    Strict,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            server: None,
            servers: BTreeMap::new(),
            dns_server: None,
            tls: TlsChoice::Starttls,
            ca_file: None,
            tls_pins: BTreeMap::new(),
            resource: "interop".into(),
            allow_register: false,
            allowed_domains: Vec::new(),
            trust: TrustChoice::TrustOnFirstUse,
            omemo: OmemoChoice::Both,
            send_timeout_secs: 30,
            unencrypted: UnencryptedChoice::Bridge,
            requests: RequestsChoice::Anyone,
            max_requests_per_hour: 20,
            presence_refresh_secs: 20,
            catch_up_limit: 200,
        }
    }
}

/// The local admin socket the CLI's `link`, `unlink`, `identities` and `status` talk to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub socket: PathBuf,
}

/// End-to-bridge encryption on the Matrix side (Megolm/Olm): the bot and every ghost that takes
/// part in an encrypted room get a device of their own, cross-signed by their own identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Whether the bridge reads and writes encrypted rooms at all. Needs the homeserver's
    /// appservice extensions (MSC4190, MSC3202, MSC4203); see docs/admin-guide.md.
    pub enabled: bool,
    /// Whether the portals the bridge creates are encrypted.
    pub default: bool,
    /// Seconds a message waits for its room key before its sender is told it could not be read.
    pub key_wait_secs: u64,
    /// Directory of the crypto stores (one SQLite database per device), relative to this file.
    pub store: PathBuf,
}

/// Files (images, video, voice messages, other files) both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Whether files are bridged; when false, the sender is told they are not.
    pub enabled: bool,
    /// The largest file bridged, in bytes; the homeserver's and the XMPP server's own limits
    /// apply too, and the smallest wins.
    pub max_bytes: u64,
    /// Host names (or addresses) whose file URLs may point at loopback, private or link-local
    /// addresses; every other such URL is refused (SSRF guard).
    pub allowed_private_hosts: Vec<String>,
    /// Seconds a transfer may go without a byte before it is given up.
    pub stall_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 100 * 1024 * 1024,
            allowed_private_hosts: Vec::new(),
            stall_timeout_secs: 30,
        }
    }
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default: true,
            key_wait_secs: 30,
            store: "crypto".into(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: "interop-bridge.sock".into(),
        }
    }
}

impl Default for AppserviceConfig {
    fn default() -> Self {
        Self {
            id: "interop".into(),
            address: "http://127.0.0.1:29400".into(),
            listen: "127.0.0.1:29400".into(),
            bot_localpart: "interopbot".into(),
            bot_displayname: "Interop bridge bot".into(),
            ghost_prefix: "interop_".into(),
            registration: "registration.yaml".into(),
            as_token: None,
            hs_token: None,
            max_transaction_bytes: 32 * 1024 * 1024,
            double_puppet: false,
            message_status_events: false,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: "interop-bridge.db".into(),
            key: None,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// Where a secret comes from. In TOML: `"literal"`, `{ file = "path" }` or `{ env = "VAR" }`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File { file } => write!(f, "File({})", file.display()),
            Self::Env { env } => write!(f, "Env({env})"),
        }
    }
}

/// A secret value. Its `Debug` is redacted; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretSource {
    /// Reads the secret. A file's trailing newline is dropped. The error names the source, never
    /// the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        let value = match self {
            Self::Inline(v) => v.clone(),
            Self::File { file } => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
            Self::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set or not UTF-8"))?,
        };
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Secret(value))
    }
}

impl SecretSource {
    /// Reads the secret as bytes, for a key file that need not be text: a file's trailing
    /// newlines are dropped, as in [`resolve`](Self::resolve). The error never holds the value.
    pub fn resolve_bytes(&self, base_dir: &Path) -> Result<Vec<u8>, String> {
        let Self::File { file } = self else {
            return self.resolve(base_dir).map(|s| s.0.into_bytes());
        };
        let path = base_dir.join(file);
        let mut bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(bytes)
    }
}

/// A configuration problem: which file, which key (dotted path), and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path, or `None` when the problem is the file itself.
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{key}`: {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl Config {
    /// The defaults shown by `generate-config`; the homeserver values are placeholders.
    pub fn example() -> Self {
        Self {
            homeserver: HomeserverConfig {
                address: "https://matrix.example.org".into(),
                domain: "example.org".into(),
            },
            appservice: AppserviceConfig::default(),
            database: DatabaseConfig::default(),
            logging: LoggingConfig::default(),
            network: NetworkConfig::default(),
            admin: AdminConfig::default(),
            encryption: EncryptionConfig::default(),
            media: MediaConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }

    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut config = Self::parse(&text).map_err(|(key, reason)| ConfigError {
            file: path.to_owned(),
            key,
            reason,
        })?;
        config.base_dir = base_dir;
        config.validate().map_err(|(key, reason)| ConfigError {
            file: path.to_owned(),
            key: Some(key),
            reason,
        })?;
        Ok(config)
    }

    /// Parses TOML text; on error returns the key path (if known) and the reason.
    pub fn parse(text: &str) -> Result<Self, (Option<String>, String)> {
        let de =
            toml::de::Deserializer::parse(text).map_err(|e| (None, syntax_reason(text, &e)))?;
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != "." && !path.is_empty()).then_some(path);
            (key, e.inner().message().to_owned())
        })
    }

    /// Checks what serde cannot: URLs, names, addresses. Returns the key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: String| Err((key.to_owned(), reason));
        check_http_url(&self.homeserver.address).or_else(|r| err("homeserver.address", r))?;
        if let Err(e) = ServerName::parse(&self.homeserver.domain) {
            return err("homeserver.domain", format!("not a valid server name: {e}"));
        }
        let a = &self.appservice;
        if a.id.is_empty() {
            return err("appservice.id", "must not be empty".into());
        }
        check_http_url(&a.address).or_else(|r| err("appservice.address", r))?;
        if let Err(e) = a.listen.parse::<SocketAddr>() {
            return err(
                "appservice.listen",
                format!("not a socket address (host:port): {e}"),
            );
        }
        check_localpart(&a.bot_localpart).or_else(|r| err("appservice.bot_localpart", r))?;
        if a.ghost_prefix.is_empty() {
            return err("appservice.ghost_prefix", "must not be empty".into());
        }
        check_localpart(&a.ghost_prefix).or_else(|r| err("appservice.ghost_prefix", r))?;
        if a.bot_localpart.starts_with(&a.ghost_prefix) {
            return err(
                "appservice.bot_localpart",
                "must not start with appservice.ghost_prefix (the bot would be taken for a ghost)"
                    .into(),
            );
        }
        if a.bot_displayname.is_empty() {
            return err("appservice.bot_displayname", "must not be empty".into());
        }
        if a.max_transaction_bytes < 64 * 1024 {
            return err(
                "appservice.max_transaction_bytes",
                "must be at least 65536".into(),
            );
        }
        let e = &self.encryption;
        if !(1..=3600).contains(&e.key_wait_secs) {
            return err(
                "encryption.key_wait_secs",
                format!("must be between 1 and 3600, got {}", e.key_wait_secs),
            );
        }
        if e.store.as_os_str().is_empty() {
            return err("encryption.store", "must not be empty".into());
        }
        let m = &self.media;
        if m.max_bytes == 0 {
            return err("media.max_bytes", "must be at least 1".into());
        }
        if !(1..=3600).contains(&m.stall_timeout_secs) {
            return err(
                "media.stall_timeout_secs",
                format!("must be between 1 and 3600, got {}", m.stall_timeout_secs),
            );
        }
        if let Some(host) = m.allowed_private_hosts.iter().find(|h| {
            let address = h
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
            let name = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            !address && !name
        }) {
            return err(
                "media.allowed_private_hosts",
                format!("expected a host name or address without scheme or port, got {host:?}"),
            );
        }
        if self.database.path.as_os_str().is_empty() {
            return err("database.path", "must not be empty".into());
        }
        let n = &self.network;
        if let Some(server) = &n.server
            && host_port(server).is_none()
        {
            return err(
                "network.server",
                format!("expected host:port, got {server:?}"),
            );
        }
        for (domain, server) in &n.servers {
            let key = format!("network.servers.{domain:?}");
            if domain.is_empty() || domain.contains(['@', '/', ':', ' ']) {
                return err(
                    &key,
                    "the key must be an XMPP domain (like xmpp.example.org)".into(),
                );
            }
            if host_port(server).is_none() {
                return err(&key, format!("expected host:port, got {server:?}"));
            }
        }
        for (domain, pins) in &n.tls_pins {
            let key = format!("network.tls_pins.{domain:?}");
            if domain.is_empty() || domain.contains(['@', '/', ':', ' ']) {
                return err(
                    &key,
                    "the key must be an XMPP domain (like xmpp.example.org)".into(),
                );
            }
            if pins.is_empty() {
                return err(&key, "lists no pin (remove the domain instead)".into());
            }
        }
        if n.resource.is_empty() || n.resource.len() > 64 || n.resource.contains('/') {
            return err(
                "network.resource",
                "must be 1-64 characters without '/'".into(),
            );
        }
        if let Some(dns) = &n.dns_server
            && dns.parse::<std::net::SocketAddr>().is_err()
        {
            return err(
                "network.dns_server",
                format!("expected an IP address and port (like 127.0.0.53:53), got {dns:?}"),
            );
        }
        if n.send_timeout_secs == 0 {
            return err("network.send_timeout_secs", "must be at least 1".into());
        }
        if self.admin.socket.as_os_str().is_empty() {
            return err("admin.socket", "must not be empty".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return err(
                "logging.level",
                format!("not a valid filter directive: {e}"),
            );
        }
        Ok(())
    }

    /// Resolves a configured path against the config file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    /// The bridge bot's user ID.
    pub fn bot_user_id(&self) -> ruma::OwnedUserId {
        UserId::parse(format!(
            "@{}:{}",
            self.appservice.bot_localpart, self.homeserver.domain
        ))
        .expect("validated: localpart and server name are valid")
    }
}

/// `host:port` split, with a non-empty host and a valid port; `None` otherwise.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let bad = host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/');
    (!bad).then(|| (host.to_owned(), port))
}

fn check_http_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!(
            "expected an http:// or https:// URL with a host, got {s:?}"
        )),
    }
}

fn check_localpart(s: &str) -> Result<(), String> {
    let ok = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+');
    match s.chars().find(|c| !ok(*c)) {
        Some(c) => Err(format!(
            "{c:?} is not allowed in a Matrix localpart (a-z 0-9 . _ = - / +)"
        )),
        None => Ok(()),
    }
}

fn syntax_reason(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "TOML syntax error at line {line}, column {col}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    }
}

mod example;
pub use example::{apply_override, render_example};

#[cfg(test)]
mod tests;
