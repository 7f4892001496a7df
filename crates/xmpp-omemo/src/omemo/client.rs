//! [`OmemoClient`]: an XMPP [`Client`] with legacy OMEMO on top: it publishes our device and
//! bundle, follows device lists, encrypts outgoing text and decrypts incoming messages. Tests
//! use it directly; the bridge's network connector builds on it.
//!
//! Inbound messages come as [`OmemoEvent`]s in stanza order. A decrypted message holds a
//! [`Delivery`]: the advanced session state and the stream ack. The owner calls
//! [`Delivery::commit`] once its own effect is durable; until then the account's state is held
//! (the next message waits), and a crash leaves the stanza unacknowledged and the stored
//! session able to decrypt it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::Jid;
use crate::stanza::blocking::BlockingCommand;
use crate::stanza::caps::Caps;
use crate::stanza::carbons::{Carbon, Direction};
use crate::stanza::extensions::{Extensions, RETRACTION_FALLBACK};
use crate::stanza::iq::{Iq, IqPayload};
use crate::stanza::message::{Message, MessageType};
use crate::stanza::nick::Nick;
use crate::stanza::ns::bundle_node;
use crate::stanza::omemo::{Bundle, DeviceListPayload, Encrypted};
use crate::stanza::omemo2::Encrypted2;
use crate::stanza::presence::Show;
use crate::stanza::{
    FromElement, IntoElement, ParseError, Presence, PresenceType, Stanza, eme, hints, ns, pubsub,
};
use crate::stream::{Client, ClientConfig, Error as StreamError, Event, InboundTag};
use crate::xml::Element;

use super::account::{
    Account, AccountGuard, DecryptError, EncryptError, SkipReason, StateUpdate, now_ms,
};
use super::keys::KeyError;
use super::signal::{IdentityChangeSeen, TrustPolicy};
use super::store::{Changes, DeviceAddress, DeviceId, DeviceList, OmemoStore, StoreError};
use super::upload::{UploadError, UploadService, Uploads};
use crate::stanza::upload::UploadSlot;

#[path = "catch_up.rs"]
mod catch_up;
mod omemo2;
pub use catch_up::CatchUpReport;
pub use omemo2::{Namespace, Protocols};

/// The PEP node of legacy OMEMO device lists.
pub const DEVICELIST_NODE: &str = ns::OMEMO_LEGACY_DEVICELIST;
/// What we put in `<body>` next to `<encrypted>` for clients without OMEMO.
pub const FALLBACK_BODY: &str =
    "This message is OMEMO encrypted; your client does not seem to support OMEMO.";
/// A contact's stored device list older than this is fetched again before we send.
const DEVICE_LIST_MAX_AGE: Duration = Duration::from_secs(600);
/// We encrypt to at most this many devices of one account: a hostile or broken device list
/// must not make us fetch thousands of bundles.
const MAX_DEVICES_PER_ACCOUNT: usize = 64;
/// At most one session repair per device in this interval.
const REPAIR_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many devices are remembered by the repair limiter: device ids come from
/// whoever sends us a message, so the map must not grow with them.
const MAX_REPAIR_ENTRIES: usize = 1024;

/// At most one session repair per device per [`REPAIR_INTERVAL`], in bounded memory.
#[derive(Default)]
struct RepairLimiter {
    last: HashMap<DeviceAddress, Instant>,
}

impl RepairLimiter {
    /// Whether `device` may get a repair now (and if so, it is noted). Entries older than the
    /// interval are forgotten once the map is full; if it is still full (more than
    /// [`MAX_REPAIR_ENTRIES`] devices asked within one interval), no repair is made.
    fn allow(&mut self, device: &DeviceAddress, now: Instant) -> bool {
        if let Some(t) = self.last.get(device)
            && now.duration_since(*t) < REPAIR_INTERVAL
        {
            return false;
        }
        if self.last.len() >= MAX_REPAIR_ENTRIES && !self.last.contains_key(device) {
            self.last
                .retain(|_, t| now.duration_since(*t) < REPAIR_INTERVAL);
            if self.last.len() >= MAX_REPAIR_ENTRIES {
                return false;
            }
        }
        self.last.insert(device.clone(), now);
        true
    }
}

/// Settings of the OMEMO layer.
#[derive(Clone, Debug, Default)]
pub struct OmemoConfig {
    pub policy: TrustPolicy,
    /// Hand encrypted messages over as [`OmemoEvent::Encrypted`], for the owner to decrypt
    /// ([`EncryptedMessage::open`]) where and when it handles them, instead of decrypting them
    /// in stanza order here. An owner that handles different contacts' messages side by side
    /// wants this: a message holds its sender's sessions from decryption until its delivery is
    /// committed, so decrypting here would make every later message wait for that commit.
    pub defer_decryption: bool,
    /// Which OMEMO versions the account speaks (default: both). See [`Protocols`].
    pub protocols: Protocols,
}

/// Why an OMEMO operation failed. `Display` holds no text, keys or passwords.
#[derive(Debug, thiserror::Error)]
pub enum OmemoError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    #[error("{jid} announces no OMEMO device")]
    NoDevices { jid: String },
    /// No HTTP upload slot: no service, the file too large, a refusal, an unusable slot.
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("{0}")]
    Malformed(String),
}

/// A client's stream of [`OmemoEvent`]s; it ends when the connection has ended. The events
/// travel boxed: a channel allocates a block of 32 slots up front, and an `OmemoEvent` is
/// about 1 KB, so 32 KB per idle client would be reserved for events that rarely come.
#[derive(Debug)]
pub struct OmemoEvents(mpsc::Receiver<Box<OmemoEvent>>);

impl OmemoEvents {
    /// The next event, or `None` once the connection has ended and every event was taken.
    pub async fn recv(&mut self) -> Option<OmemoEvent> {
        self.0.recv().await.map(|event| *event)
    }
}

/// What happened, in stanza order.
pub enum OmemoEvent {
    /// A session with the server is up (see [`Event::Connected`]).
    Connected { jid: Jid, resumed: bool },
    /// The connection dropped; `retry_in: None` means the client gave up.
    Disconnected {
        reason: StreamError,
        retry_in: Option<Duration>,
    },
    /// Our device and bundle are published (after each new session).
    Published { device: DeviceId },
    /// Publishing failed; sending still works, but contacts may not reach this device.
    PublishFailed { reason: String },
    /// A decrypted message (from a contact, or a carbon of one another device of ours sent).
    Message(IncomingMessage),
    /// A message that did not decrypt. Commit its delivery like a message's.
    Undecryptable(Undecryptable),
    /// An encrypted message, not decrypted yet (only with [`OmemoConfig::defer_decryption`]).
    Encrypted(EncryptedMessage),
    /// A plain (unencrypted) message with a body.
    Plain(PlainMessage),
    /// A stanza about other messages or about the sender, not a message of its own:
    /// reactions, a retraction, a displayed marker, a delivery receipt, a chat state (these
    /// travel in the clear). From the contact or a carbon of what it sent another resource
    /// of ours; carbons of what we sent are not reported.
    Meta(MetaMessage),
    /// A contact's device presented a new identity key, or a known contact's device we never
    /// saw presented its key (`old_key: None`); each once, when it is stored.
    IdentityChanged(IdentityChangeSeen),
    /// A device list changed (a notification or a fetch).
    DeviceList { jid: String, devices: Vec<DeviceId> },
    /// The roster and roster pushes, passed through.
    Roster(Event),
    /// A presence subscription stanza from `from` (a bare JID): a request (`Subscribe`), its
    /// approval (`Subscribed`), or a cancellation (`Unsubscribe`, `Unsubscribed`). `nick` is
    /// the XEP-0172 nickname the sender claims (sent with requests). The stanza is already
    /// acknowledged: the server keeps a request pending and delivers it again in every new
    /// session until it is answered (RFC 6121 §3.1.3), and the other three change the roster,
    /// which is fetched again in every new session.
    Subscription {
        from: Jid,
        kind: PresenceType,
        nick: Option<String>,
    },
    /// A blocklist push (XEP-0191), passed through (see [`Event::Blocking`]).
    Blocklist(BlockingCommand),
    /// A resource of someone else came online, changed its availability, or went away.
    Presence(ContactPresence),
    /// [`OmemoClient::catch_up`] ended: every archived message it fetched came before this,
    /// in archive order (live messages may be interleaved with them).
    CaughtUp(CatchUpReport),
}

/// One resource's availability (RFC 6121 §4), as another account's presence announced it.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactPresence {
    /// The resource's full JID; its bare JID names the contact.
    pub from: Jid,
    /// `false`: the resource went offline (`type='unavailable'`, or a presence error).
    pub available: bool,
    /// The availability sub-state; `None` is plainly online.
    pub show: Option<Show>,
    /// The status text. Written by the contact: never logged.
    pub status: Option<String>,
    /// The XEP-0115 capabilities it announced: what its client supports, by a hash.
    pub caps: Option<Caps>,
}

/// The status text is written by users: shown as a length only.
impl std::fmt::Debug for ContactPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactPresence")
            .field("from", &self.from)
            .field("available", &self.available)
            .field("show", &self.show)
            .field("status_len", &self.status.as_ref().map(String::len))
            .field("caps", &self.caps)
            .finish()
    }
}

/// Nicknames are written by users: shown as lengths only.
impl std::fmt::Debug for OmemoEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OmemoEvent::Connected { jid, resumed } => f
                .debug_struct("Connected")
                .field("jid", jid)
                .field("resumed", resumed)
                .finish(),
            OmemoEvent::Disconnected { reason, retry_in } => f
                .debug_struct("Disconnected")
                .field("reason", reason)
                .field("retry_in", retry_in)
                .finish(),
            OmemoEvent::Published { device } => {
                f.debug_struct("Published").field("device", device).finish()
            }
            OmemoEvent::PublishFailed { reason } => f
                .debug_struct("PublishFailed")
                .field("reason", reason)
                .finish(),
            OmemoEvent::Message(m) => f.debug_tuple("Message").field(m).finish(),
            OmemoEvent::Undecryptable(u) => f.debug_tuple("Undecryptable").field(u).finish(),
            OmemoEvent::Encrypted(e) => f.debug_tuple("Encrypted").field(e).finish(),
            OmemoEvent::Plain(p) => f.debug_tuple("Plain").field(p).finish(),
            OmemoEvent::Meta(m) => f.debug_tuple("Meta").field(m).finish(),
            OmemoEvent::IdentityChanged(c) => f.debug_tuple("IdentityChanged").field(c).finish(),
            OmemoEvent::DeviceList { jid, devices } => f
                .debug_struct("DeviceList")
                .field("jid", jid)
                .field("devices", devices)
                .finish(),
            OmemoEvent::Roster(e) => f.debug_tuple("Roster").field(e).finish(),
            OmemoEvent::Subscription { from, kind, nick } => f
                .debug_struct("Subscription")
                .field("from", from)
                .field("kind", kind)
                .field("nick_len", &nick.as_ref().map(String::len))
                .finish(),
            OmemoEvent::Blocklist(b) => f.debug_tuple("Blocklist").field(b).finish(),
            OmemoEvent::Presence(p) => f.debug_tuple("Presence").field(p).finish(),
            OmemoEvent::CaughtUp(r) => f.debug_tuple("CaughtUp").field(r).finish(),
        }
    }
}

/// A decrypted message.
pub struct IncomingMessage {
    /// Full JID of the sender (for a sent carbon: of our own other resource).
    pub from: Jid,
    /// Who the conversation is with: the sender's bare JID, or for a sent carbon, the recipient's.
    pub peer: Jid,
    pub id: Option<String>,
    pub origin_id: Option<String>,
    /// The XEP-0359 `<stanza-id/>` our own server stamped on it (`by` our bare JID): unique
    /// per message the server archived, the same in every redelivery of it. For a message
    /// fetched from the archive ([`OmemoClient::catch_up`]), its archive id.
    pub stanza_id: Option<String>,
    /// It was fetched from our archive (XEP-0313), not delivered live.
    pub archived: bool,
    /// The sending device.
    pub sender: DeviceAddress,
    pub body: String,
    /// The XEP-0172 nickname the sender claims, from the stanza (outside the encryption).
    /// Never log it.
    pub nick: Option<String>,
    /// It was a PreKeySignalMessage (OMEMO 2: a key exchange).
    pub prekey: bool,
    /// The OMEMO version it came in.
    pub namespace: Namespace,
    /// `Some` for carbons: `Sent` when another device of ours sent it, `Received` when it was
    /// delivered to another of our resources.
    pub carbon: Option<Direction>,
    /// What the stanza says beyond its body (in the clear, outside the encryption).
    pub extensions: Extensions,
    pub delivery: Delivery,
}

impl std::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("from", &self.from.as_str())
            .field("id", &self.id)
            .field("sender", &self.sender)
            .field("body_len", &self.body.len())
            .field("nick_len", &self.nick.as_ref().map(String::len))
            .field("prekey", &self.prekey)
            .field("namespace", &self.namespace)
            .field("carbon", &self.carbon)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

/// A message that did not decrypt.
#[derive(Debug)]
pub struct Undecryptable {
    pub from: Jid,
    pub id: Option<String>,
    /// See [`IncomingMessage::stanza_id`].
    pub stanza_id: Option<String>,
    pub sender: Option<DeviceAddress>,
    pub error: DecryptError,
    pub carbon: Option<Direction>,
    /// The message carried a payload (text); `false` for a key-transport message, which
    /// costs nothing when it does not decrypt (e.g. one for another device of ours).
    pub has_payload: bool,
    pub delivery: Delivery,
}

/// An unencrypted message with a body, or without one but with a file's URL
/// ([`Extensions::oob_url`]; the body is then empty).
pub struct PlainMessage {
    pub from: Jid,
    pub id: Option<String>,
    /// XEP-0359 `<origin-id/>`: the id the sending client chose.
    pub origin_id: Option<String>,
    /// See [`IncomingMessage::stanza_id`].
    pub stanza_id: Option<String>,
    pub body: String,
    /// The XEP-0172 nickname the sender claims. Never log it.
    pub nick: Option<String>,
    /// What the stanza says beyond its body.
    pub extensions: Extensions,
    pub delivery: Delivery,
}

/// A stanza that is not a message of its own (see [`OmemoEvent::Meta`]): reactions, a
/// retraction, a marker, a receipt or a chat state, and no body but perhaps a fallback text
/// (which is dropped). Committing its delivery acknowledges it.
pub struct MetaMessage {
    /// Full JID of the sender.
    pub from: Jid,
    pub id: Option<String>,
    /// XEP-0359 `<origin-id/>`: the id the sending client chose.
    pub origin_id: Option<String>,
    /// See [`IncomingMessage::stanza_id`].
    pub stanza_id: Option<String>,
    /// What it says; never empty.
    pub extensions: Extensions,
    pub delivery: Delivery,
}

/// Ids and extension kinds only ([`Extensions`]' `Debug` shows no reaction).
impl std::fmt::Debug for MetaMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaMessage")
            .field("from", &self.from.as_str())
            .field("id", &self.id)
            .field("stanza_id", &self.stanza_id)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("from", &self.from.as_str())
            .field("id", &self.id)
            .field("body_len", &self.body.len())
            .field("nick_len", &self.nick.as_ref().map(String::len))
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

/// An encrypted message as it arrived, to be decrypted with [`open`](Self::open). Until then
/// the stanza is unacknowledged; dropping it leaves it so (the server delivers it again in a
/// later session).
pub struct EncryptedMessage {
    from: Jid,
    peer: Jid,
    id: Option<String>,
    origin_id: Option<String>,
    stanza_id: Option<String>,
    archived: bool,
    nick: Option<String>,
    carbon: Option<Direction>,
    extensions: Extensions,
    /// The stanza's payloads in the clear, to read extensions beside those inside an OMEMO 2
    /// envelope.
    payloads: Vec<Element>,
    encrypted: Wire,
    tag: InboundTag,
    shared: Arc<Shared>,
}

/// An `<encrypted/>` of either OMEMO version.
enum Wire {
    Legacy(Encrypted),
    Two(Encrypted2),
}

impl Wire {
    fn has_payload(&self) -> bool {
        match self {
            Wire::Legacy(e) => e.payload.is_some(),
            Wire::Two(e) => e.payload.is_some(),
        }
    }

    fn namespace(&self) -> Namespace {
        match self {
            Wire::Legacy(_) => Namespace::Legacy,
            Wire::Two(_) => Namespace::Omemo2,
        }
    }
}

impl std::fmt::Debug for EncryptedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedMessage")
            .field("from", &self.from.as_str())
            .field("id", &self.id)
            .field("carbon", &self.carbon)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl EncryptedMessage {
    /// Full JID of the sender (for a sent carbon: of our own other resource).
    pub fn from(&self) -> &Jid {
        &self.from
    }

    /// Who the conversation is with: the sender's bare JID, or for a sent carbon, the
    /// recipient's.
    pub fn peer(&self) -> &Jid {
        &self.peer
    }

    pub fn carbon(&self) -> Option<Direction> {
        self.carbon
    }

    /// See [`IncomingMessage::stanza_id`].
    pub fn stanza_id(&self) -> Option<&str> {
        self.stanza_id.as_deref()
    }

    /// It was fetched from our archive ([`OmemoClient::catch_up`]), not delivered live.
    pub fn archived(&self) -> bool {
        self.archived
    }

    /// Acknowledges the stanza without decrypting it: the message is dropped unread, and
    /// nothing of its sender is stored (no session, no identity, no prekey used up).
    pub fn discard(self) {
        self.shared.xmpp.ack(self.tag);
    }

    /// Decrypts the message, waiting for its sender's sessions while another message of the
    /// same sender holds them (until that one's delivery is committed or dropped). Gives the
    /// identity changes the decryption saw, and the message or why it did not decrypt; `None`
    /// for a key-transport message, which is committed here (it has nothing to show).
    pub async fn open(self) -> (Vec<IdentityChangeSeen>, Option<OmemoEvent>) {
        let Self {
            from,
            peer,
            id,
            origin_id,
            stanza_id,
            archived,
            nick,
            carbon,
            mut extensions,
            payloads,
            encrypted,
            tag,
            shared,
        } = self;
        let sender_bare = from.bare();
        let account = &shared.account;
        let guard = account.lock_for(&[sender_bare.as_str()]).await;
        let namespace = encrypted.namespace();
        let result = match &encrypted {
            Wire::Legacy(e) => account.decrypt(guard, sender_bare.as_str(), e).await,
            Wire::Two(e) => account.decrypt2(guard, sender_bare.as_str(), e).await,
        };
        match result {
            Ok(decrypted) => {
                let changes = decrypted.identity_changes;
                let mut delivery = shared.delivery(tag, Some(decrypted.state));
                delivery.followup.republish = decrypted.consumed_prekey;
                if decrypted.prekey {
                    delivery.followup.key_transport =
                        Some((decrypted.sender.clone(), false, namespace));
                }
                if !decrypted.content.is_empty() {
                    let all: Vec<Element> = payloads.into_iter().chain(decrypted.content).collect();
                    extensions = Extensions::from_payloads(&all);
                }
                let Some(body) = decrypted.body else {
                    // A key-transport message: nothing for the owner.
                    if let Err(e) = delivery.commit().await {
                        tracing::error!(error = %e, "could not store the session state of a key-transport message");
                    }
                    return (changes, None);
                };
                let message = IncomingMessage {
                    from,
                    peer,
                    id,
                    origin_id,
                    stanza_id,
                    archived,
                    sender: decrypted.sender,
                    body,
                    nick,
                    prekey: decrypted.prekey,
                    namespace,
                    carbon,
                    extensions,
                    delivery,
                };
                (changes, Some(OmemoEvent::Message(message)))
            }
            Err(failure) => {
                let mut delivery = shared.delivery(tag, Some(failure.state));
                if let Some(sender) = &failure.sender
                    && failure.error.wants_repair()
                    && shared.may_repair(sender)
                {
                    delivery.followup.key_transport = Some((sender.clone(), true, namespace));
                }
                tracing::info!(from = %from, error = %failure.error, "an OMEMO message did not decrypt");
                let event = Undecryptable {
                    from,
                    id,
                    stanza_id,
                    sender: failure.sender,
                    error: failure.error,
                    carbon,
                    has_payload: encrypted.has_payload(),
                    delivery,
                };
                let changes = failure.identity_changes;
                (changes, Some(OmemoEvent::Undecryptable(event)))
            }
        }
    }
}

/// What an inbound stanza left to do: commit the advanced state, acknowledge the stanza, and
/// the follow-ups (refill and publish prekeys, complete or repair a session).
#[must_use = "an undelivered message stays unacknowledged and holds the account's state"]
pub struct Delivery {
    state: Option<StateUpdate>,
    tag: InboundTag,
    followup: Followup,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Followup {
    republish: bool,
    /// Send an empty message to this device: completes a session it started (so it stops
    /// sending PreKeySignalMessages) or repairs a broken one.
    key_transport: Option<(DeviceAddress, bool, Namespace)>,
}

impl Delivery {
    /// Commits the advanced state (atomically, flushed), then acknowledges the stanza, then
    /// starts the follow-ups in the background.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if let Some(state) = self.state.take() {
            state.commit().await?;
        }
        self.shared.xmpp.ack(self.tag);
        let followup = std::mem::take(&mut self.followup);
        if followup.republish || followup.key_transport.is_some() {
            let shared = self.shared.clone();
            tokio::spawn(async move { shared.run_followup(followup).await });
        }
        Ok(())
    }

    /// Takes the state out, for a caller that writes it in its own transaction (together
    /// with its own effect); [`commit`](Self::commit) then only acknowledges and starts the
    /// follow-ups. Call `commit` once that transaction is durable.
    pub fn take_state(&mut self) -> Option<StateUpdate> {
        self.state.take()
    }

    /// The state and the ack, for a caller that commits the state in its own transaction.
    /// Acknowledge with [`OmemoClient::ack`] after that transaction is durable.
    pub fn into_parts(mut self) -> (Option<StateUpdate>, InboundTag) {
        (self.state.take(), self.tag)
    }
}

/// What [`OmemoClient::send_text`] did.
#[derive(Debug)]
pub struct SendReport {
    pub id: String,
    /// Devices that got a key (the contact's and our own other ones).
    pub devices: usize,
    pub new_sessions: Vec<DeviceAddress>,
    pub skipped: Vec<(DeviceAddress, SkipReason)>,
    pub identity_changes: Vec<IdentityChangeSeen>,
    /// The OMEMO version it was sent in.
    pub namespace: Namespace,
}

struct Shared {
    xmpp: Client,
    account: Account,
    own: Jid,
    last_repair: StdMutex<RepairLimiter>,
    defer_decryption: bool,
    protocols: Protocols,
    /// The XEP-0363 upload service, discovered on first use.
    uploads: Uploads,
    /// The event task (`run`) holds the only lasting sender, so the owner's stream of events
    /// ends when the connection has ended, even while handles are kept.
    events: mpsc::WeakSender<Box<OmemoEvent>>,
    /// The archive queries under way ([`OmemoClient::catch_up`]).
    queries: catch_up::Queries,
}

/// An XMPP client with legacy OMEMO. Cloneable; the connection ends when [`close`](Self::close)
/// is called.
#[derive(Clone)]
pub struct OmemoClient {
    shared: Arc<Shared>,
}

impl OmemoClient {
    /// Opens (or creates) the account's OMEMO identity in `store`, then connects. `config.jid`
    /// must be the account's JID; the device list `+notify` feature is added to its features.
    /// The event stream ends when the connection has ended (closed, or failed for good).
    pub async fn start(
        mut config: ClientConfig,
        store: Arc<dyn OmemoStore>,
        omemo: OmemoConfig,
    ) -> Result<(OmemoClient, OmemoEvents), OmemoError> {
        let own = config.jid.bare();
        let jid = own.to_string();
        let account = tokio::task::spawn_blocking(move || {
            let mut taken: Vec<DeviceId> = store
                .device_list(&jid)?
                .map(|l| l.devices)
                .unwrap_or_default();
            taken.extend(
                store
                    .device_list2(&jid)?
                    .map(|l| l.devices)
                    .unwrap_or_default(),
            );
            Account::open_or_create(store, &jid, omemo.policy, &taken)
        })
        .await
        .map_err(|e| OmemoError::Malformed(format!("account task failed: {e}")))??;
        if omemo.protocols.legacy() {
            config.features.push(format!("{DEVICELIST_NODE}+notify"));
        }
        if omemo.protocols.omemo2() {
            config
                .features
                .push(format!("{}+notify", ns::OMEMO2_DEVICES));
        }
        let (xmpp, xmpp_events) = Client::spawn(config);
        let (events, events_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            xmpp,
            account,
            own,
            last_repair: StdMutex::new(RepairLimiter::default()),
            defer_decryption: omemo.defer_decryption,
            protocols: omemo.protocols,
            uploads: Uploads::default(),
            events: events.downgrade(),
            queries: catch_up::Queries::default(),
        });
        tokio::spawn(shared.clone().run(xmpp_events, events));
        Ok((OmemoClient { shared }, OmemoEvents(events_rx)))
    }

    pub fn device_id(&self) -> DeviceId {
        self.shared.account.device_id()
    }

    /// Our identity key's fingerprint (grouped hex).
    pub fn fingerprint(&self) -> String {
        self.shared.account.fingerprint()
    }

    pub fn account(&self) -> &Account {
        &self.shared.account
    }

    pub fn xmpp(&self) -> &Client {
        &self.shared.xmpp
    }

    /// Acknowledges a stanza whose [`Delivery`] was taken apart with `into_parts`. Never waits
    /// (see [`Client::ack`]).
    pub fn ack(&self, tag: InboundTag) {
        self.shared.xmpp.ack(tag);
    }

    /// Encrypts `body` for every device of `to` (a bare JID) and every other device of ours,
    /// commits the advanced sessions durably, then sends; returns once the server has the
    /// message (XEP-0198 ack). `id` becomes the stanza id and the XEP-0359 origin-id.
    pub async fn send_text(
        &self,
        to: &Jid,
        body: &str,
        id: &str,
    ) -> Result<SendReport, OmemoError> {
        self.send_message(to, body, id, &Extensions::default())
            .await
    }

    /// [`send_text`](Self::send_text) with `extensions` (a reply and its fallback range, a
    /// correction, `<markable/>`, a receipt request, a chat state: whatever the caller set) in
    /// the clear beside the encrypted body, as legacy OMEMO clients send them. Only the body
    /// is encrypted.
    pub async fn send_message(
        &self,
        to: &Jid,
        body: &str,
        id: &str,
        extensions: &Extensions,
    ) -> Result<SendReport, OmemoError> {
        self.shared
            .send(to, Some(body), id, extensions.to_elements())
            .await
    }

    /// Sends a stanza that is not a message of its own: `extensions` (reactions, a
    /// retraction, a displayed marker, a receipt, a chat state) in the clear in a
    /// `type='chat'` message to `to`'s bare JID, with `id` as stanza id and origin-id;
    /// returns once the server has it (XEP-0198 ack). Reactions and retractions carry the
    /// XEP-0334 `<store/>` hint, the rest `<no-store/>`; a retraction also carries XEP-0424's
    /// fallback body. Legacy OMEMO clients send and expect these unencrypted, and no Signal
    /// session is touched, so it takes no account lock.
    pub async fn send_meta(
        &self,
        to: &Jid,
        id: &str,
        extensions: &Extensions,
    ) -> Result<(), OmemoError> {
        self.shared
            .xmpp
            .send(meta_message(to, id, extensions))
            .await?;
        Ok(())
    }

    /// Sends an empty (key-transport) message to `to`, e.g. to start sessions ahead of time.
    pub async fn send_key_transport(&self, to: &Jid, id: &str) -> Result<SendReport, OmemoError> {
        self.shared.send(to, None, id, Vec::new()).await
    }

    /// Fetches `jid`'s device list from PEP and stores it.
    pub async fn refresh_devices(&self, jid: &Jid) -> Result<Vec<DeviceId>, OmemoError> {
        self.shared.fetch_device_list(&jid.bare()).await
    }

    /// The server's XEP-0363 HTTP upload service: the first of our domain and its disco#items
    /// (at most [`MAX_ITEMS_QUERIED`](super::upload::MAX_ITEMS_QUERIED)) whose disco#info
    /// announces `urn:xmpp:http:upload:0`, with the `max-file-size` of its form. `None` when
    /// there is none. Discovered once and kept for the client's lifetime; concurrent callers
    /// share one discovery, and one that got no answer (a timeout, the connection down: the
    /// [`OmemoError::Stream`]) is tried again by the next call.
    pub async fn upload_service(&self) -> Result<Option<UploadService>, OmemoError> {
        self.shared
            .uploads
            .service(&self.shared.xmpp, &self.shared.own)
            .await
    }

    /// Asks the upload service for a slot for a file of `size` bytes, to PUT it to and share
    /// its GET URL (the HTTP requests are the caller's). `filename` is made safe first (no
    /// `/`, `\` or control characters, at most 255 bytes, `file` if nothing is left);
    /// `content_type` is sent if it is a MIME type, left out otherwise (`""` for none).
    ///
    /// Fails with [`OmemoError::Upload`]: [`UploadError::NoService`];
    /// [`UploadError::TooLarge`] when `size` exceeds the service's announced maximum (without
    /// asking) or the service says so; [`UploadError::Refused`] with the service's condition
    /// and text; [`UploadError::BadSlot`] when the answer is unusable. And as any query does,
    /// with [`OmemoError::Stream`] ([`StreamError::Timeout`], [`StreamError::Closed`]).
    pub async fn upload_slot(
        &self,
        filename: &str,
        size: u64,
        content_type: &str,
    ) -> Result<UploadSlot, OmemoError> {
        self.shared
            .uploads
            .slot(
                &self.shared.xmpp,
                &self.shared.own,
                filename,
                size,
                content_type,
            )
            .await
    }

    /// Closes the connection; the event stream ends once the events before the close are
    /// taken.
    pub async fn close(&self) {
        self.shared.xmpp.close().await;
    }
}

impl Shared {
    /// Hands an event to the owner; dropped when the event stream has ended.
    async fn emit(&self, event: OmemoEvent) {
        if let Some(events) = self.events.upgrade() {
            let _ = events.send(Box::new(event)).await;
        }
    }

    /// Turns the connection's events into ours until the connection ends; then `events` is
    /// dropped, which ends the owner's stream.
    async fn run(
        self: Arc<Self>,
        mut xmpp_events: crate::stream::Events,
        events: mpsc::Sender<Box<OmemoEvent>>,
    ) {
        let _events = events;
        while let Some(event) = xmpp_events.recv().await {
            match event {
                Event::Connected { jid, resumed, .. } => {
                    if !resumed {
                        let me = self.clone();
                        tokio::spawn(async move { me.publish().await });
                    }
                    self.emit(OmemoEvent::Connected { jid, resumed }).await;
                }
                Event::Disconnected { reason, retry_in } => {
                    self.emit(OmemoEvent::Disconnected { reason, retry_in })
                        .await
                }
                Event::Stanza {
                    tag,
                    stanza: Stanza::Message(msg),
                    // Boxed: the task's future is as large as its largest await (a message's
                    // handling is ~10 KB), and every idle login's task holds it.
                } => Box::pin(self.on_message(tag, msg)).await,
                Event::Stanza {
                    tag,
                    stanza: Stanza::Presence(presence),
                } => self.on_presence(tag, presence).await,
                Event::Stanza { tag, .. } => self.xmpp.ack(tag),
                other @ (Event::Roster(_) | Event::RosterPush(_)) => {
                    self.emit(OmemoEvent::Roster(other)).await
                }
                Event::Blocking(command) => self.emit(OmemoEvent::Blocklist(command)).await,
                Event::Answer(answer) => answer.deliver(),
            }
        }
    }

    /// Subscription stanzas and other accounts' availability become events; every presence
    /// is acknowledged here.
    async fn on_presence(&self, tag: InboundTag, presence: Presence) {
        if let Some(seen) = contact_presence(&presence, &self.own) {
            self.emit(OmemoEvent::Presence(seen)).await;
        }
        let subscription = matches!(
            presence.kind,
            PresenceType::Subscribe
                | PresenceType::Subscribed
                | PresenceType::Unsubscribe
                | PresenceType::Unsubscribed
        );
        if let (true, Some(from)) = (subscription, &presence.from) {
            let nick = nick_of(&presence.payloads);
            self.emit(OmemoEvent::Subscription {
                from: from.bare(),
                kind: presence.kind,
                nick,
            })
            .await;
        }
        self.xmpp.ack(tag);
    }

    fn delivery(self: &Arc<Self>, tag: InboundTag, state: Option<StateUpdate>) -> Delivery {
        Delivery {
            state,
            tag,
            followup: Followup::default(),
            shared: self.clone(),
        }
    }

    async fn on_message(self: &Arc<Self>, tag: InboundTag, msg: Message) {
        if let Some(event) = pubsub::Event::from_message(&msg) {
            if let Ok(event) = event {
                self.on_pubsub_event(msg.from.as_ref(), event).await;
            }
            self.xmpp.ack(tag);
            return;
        }
        if crate::stanza::mam::is_result(&msg) {
            self.on_archived(tag, msg).await;
            return;
        }
        let (msg, carbon) = if Carbon::is_carbon(&msg) {
            match Carbon::from_message(msg, &self.own) {
                Ok(c) => (c.message, Some(c.direction)),
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "dropping a malformed or forged carbon");
                    self.xmpp.ack(tag);
                    return;
                }
            }
        } else {
            (msg, None)
        };
        // Only our own server's stamp counts (anyone can put a stanza-id in), and only on a
        // message delivered to us directly (a carbon's is the other resource's business).
        let stanza_id = match carbon {
            None => msg
                .stanza_ids
                .iter()
                .find(|s| s.by == self.own)
                .map(|s| s.id.clone()),
            Some(_) => None,
        };
        self.on_chat_message(tag, msg, carbon, stanza_id, false)
            .await;
    }

    /// A message delivered live (perhaps a carbon), or fetched from the archive (`archived`,
    /// with its archive id as `stanza_id`): decrypted or handed over, as the owner asked.
    async fn on_chat_message(
        self: &Arc<Self>,
        tag: InboundTag,
        msg: Message,
        carbon: Option<Direction>,
        stanza_id: Option<String>,
        archived: bool,
    ) {
        let Some(from) = msg.from.clone() else {
            self.xmpp.ack(tag);
            return;
        };
        let encrypted = match msg.payload("encrypted", ns::OMEMO2) {
            Some(two) => Some(Encrypted2::from_element(two.clone()).map(Wire::Two)),
            None => msg
                .payload("encrypted", ns::OMEMO_LEGACY)
                .cloned()
                .map(|e| Encrypted::from_element(e).map(Wire::Legacy)),
        };
        match encrypted {
            Some(Ok(encrypted)) => {
                let ids = (stanza_id, archived);
                self.on_encrypted(tag, &msg, from, ids, encrypted, carbon)
                    .await
            }
            Some(Err(e)) => {
                let delivery = self.delivery(tag, None);
                let error =
                    DecryptError::Signal(format!("malformed <encrypted>: {}", describe(&e)));
                let has_payload = true;
                self.emit(OmemoEvent::Undecryptable(Undecryptable {
                    from,
                    id: msg.id.clone(),
                    stanza_id,
                    sender: None,
                    error,
                    carbon,
                    has_payload,
                    delivery,
                }))
                .await;
            }
            None => {
                let extensions = Extensions::from_payloads(&msg.payloads);
                match route_clear(&msg, carbon, &extensions) {
                    Clear::Plain => {
                        let plain = PlainMessage {
                            from,
                            id: msg.id.clone(),
                            origin_id: msg.origin_id.clone(),
                            stanza_id,
                            body: msg.body.clone().unwrap_or_default(),
                            nick: nick_of(&msg.payloads),
                            extensions,
                            delivery: self.delivery(tag, None),
                        };
                        self.emit(OmemoEvent::Plain(plain)).await;
                    }
                    Clear::Meta => {
                        let meta = MetaMessage {
                            from,
                            id: msg.id.clone(),
                            origin_id: msg.origin_id.clone(),
                            stanza_id,
                            extensions,
                            delivery: self.delivery(tag, None),
                        };
                        self.emit(OmemoEvent::Meta(meta)).await;
                    }
                    Clear::Drop => self.xmpp.ack(tag),
                }
            }
        }
    }

    async fn on_encrypted(
        self: &Arc<Self>,
        tag: InboundTag,
        msg: &Message,
        from: Jid,
        (stanza_id, archived): (Option<String>, bool),
        encrypted: Wire,
        carbon: Option<Direction>,
    ) {
        // The sender's account: for a sent carbon it is ours (another device of ours).
        let peer = match carbon {
            Some(Direction::Sent) => msg
                .to
                .as_ref()
                .map(Jid::bare)
                .unwrap_or_else(|| from.bare()),
            _ => from.bare(),
        };
        let sealed = EncryptedMessage {
            from,
            peer,
            id: msg.id.clone(),
            origin_id: msg.origin_id.clone(),
            stanza_id,
            archived,
            nick: nick_of(&msg.payloads),
            carbon,
            extensions: Extensions::from_payloads(&msg.payloads),
            payloads: match encrypted {
                Wire::Two(_) => msg.payloads.clone(),
                Wire::Legacy(_) => Vec::new(),
            },
            encrypted,
            tag,
            shared: self.clone(),
        };
        if self.defer_decryption {
            self.emit(OmemoEvent::Encrypted(sealed)).await;
            return;
        }
        let (changes, event) = sealed.open().await;
        for change in changes {
            self.emit(OmemoEvent::IdentityChanged(change)).await;
        }
        if let Some(event) = event {
            self.emit(event).await;
        }
    }

    fn may_repair(&self, device: &DeviceAddress) -> bool {
        let Ok(mut limiter) = self.last_repair.lock() else {
            return false;
        };
        limiter.allow(device, Instant::now())
    }

    async fn on_pubsub_event(self: &Arc<Self>, from: Option<&Jid>, event: pubsub::Event) {
        if event.node == ns::OMEMO2_DEVICES {
            return self.on_device_list2(from, event).await;
        }
        if event.node != DEVICELIST_NODE {
            return;
        }
        // PEP notifications come from the node owner's bare JID (ours when `from` is absent).
        let owner = from.map(Jid::bare).unwrap_or_else(|| self.own.clone());
        let devices = event
            .items
            .iter()
            .find_map(|item| item.payload.clone())
            .and_then(|p| DeviceListPayload::from_element(p).ok())
            .map(|l| l.devices)
            .unwrap_or_default();
        let mut devices: Vec<DeviceId> = devices.into_iter().filter_map(DeviceId::new).collect();
        devices.truncate(MAX_DEVICES_PER_ACCOUNT);
        if owner != self.own && !self.deals_with(owner.as_str()) {
            // Anyone can send a message shaped like a notification: storing each (with a
            // flush) would grow the store at a stranger's will. The list is fetched when we
            // first write to them.
            tracing::debug!("a device list of an account we do not deal with, not stored");
            return;
        }
        if let Err(e) = self.store_device_list(owner.as_str(), &devices).await {
            tracing::warn!(error = %e, "could not store a device list");
        }
        if owner == self.own
            && self.protocols.legacy()
            && !devices.contains(&self.account.device_id())
        {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.announce_device(Some(devices)).await {
                    tracing::warn!(error = %e, "could not announce our device again");
                }
            });
        }
        self.emit(OmemoEvent::DeviceList {
            jid: owner.to_string(),
            devices: self.stored_devices(owner.as_str()),
        })
        .await;
    }

    /// Whether `jid`'s account is one we deal with (see [`Shared::deals_with`]).
    fn deals_with_jid(&self, jid: &Jid) -> bool {
        *jid == self.own || self.deals_with(jid.as_str())
    }

    /// Whether the account already deals with `jid`: we stored its device list (we wrote to
    /// it) or an identity key of one of its devices (it wrote to us, or we to it). A store
    /// error reads as yes, as before this check.
    fn deals_with(&self, jid: &str) -> bool {
        let store = self.account.store();
        !matches!(store.device_list(jid), Ok(None))
            || !matches!(store.device_list2(jid), Ok(None))
            || !matches!(store.identities_of(jid).as_deref(), Ok([]))
    }

    /// The devices `jid` announces in either namespace, ascending.
    fn stored_devices(&self, jid: &str) -> Vec<DeviceId> {
        let store = self.account.store();
        let mut devices: Vec<DeviceId> = [store.device_list(jid), store.device_list2(jid)]
            .into_iter()
            .filter_map(|l| l.ok().flatten())
            .flat_map(|l| l.devices)
            .collect();
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    async fn store_device_list(&self, jid: &str, devices: &[DeviceId]) -> Result<(), StoreError> {
        let guard = self.account.lock_for(&[jid]).await;
        let list = DeviceList {
            devices: devices.to_vec(),
            updated_ms: now_ms(),
        };
        let changes = Changes {
            put_device_lists: vec![(jid.to_owned(), list)],
            ..Changes::default()
        };
        self.account.update(guard, changes).commit().await
    }

    /// Publishes our bundle (after prekey maintenance) and makes sure our device is announced.
    async fn publish(self: Arc<Self>) {
        let result = async {
            let guard = self.account.lock_prekeys().await;
            self.account.maintain(guard)?.commit().await?;
            if self.protocols.legacy() {
                self.publish_bundle().await?;
                self.announce_device(None).await?;
            }
            if self.protocols.omemo2() {
                self.publish_bundle2().await?;
                self.announce_device2(None).await?;
            }
            Ok::<(), OmemoError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.emit(OmemoEvent::Published {
                    device: self.account.device_id(),
                })
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing our OMEMO device failed");
                self.emit(OmemoEvent::PublishFailed {
                    reason: e.to_string(),
                })
                .await;
            }
        }
    }

    async fn publish_bundle(&self) -> Result<(), OmemoError> {
        let bundle = self.account.bundle()?;
        let node = bundle_node(self.account.device_id().get());
        self.publish_open(&node, bundle.into_element()).await
    }

    /// Adds our device to our device list (fetched unless given) and publishes it if missing.
    async fn announce_device(&self, known: Option<Vec<DeviceId>>) -> Result<(), OmemoError> {
        let mut devices = match known {
            Some(d) => d,
            None => self.fetch_device_list(&self.own).await?,
        };
        let ours = self.account.device_id();
        if devices.contains(&ours) {
            return Ok(());
        }
        devices.push(ours);
        devices.sort_unstable();
        let payload = DeviceListPayload {
            devices: devices.iter().map(|d| d.get()).collect(),
            skipped: 0,
        };
        self.publish_open(DEVICELIST_NODE, payload.into_element())
            .await?;
        self.store_device_list(self.own.as_str(), &devices).await?;
        Ok(())
    }

    /// Publishes `payload` as item `current` of our PEP `node`, readable by anyone
    /// (`pubsub#access_model=open`). If the node exists with another access model the server
    /// refuses the publish-options (`conflict` / `precondition-not-met`): reconfigure the node,
    /// then publish again.
    async fn publish_open(&self, node: &str, payload: Element) -> Result<(), OmemoError> {
        const OPEN: &[(&str, &str)] = &[("pubsub#access_model", "open")];
        self.publish_with(node, "current", payload, OPEN).await
    }

    /// Publishes `payload` as item `item` of our PEP `node` with the publish-options `options`;
    /// on `precondition-not-met`, reconfigures the node to them and publishes again.
    async fn publish_with(
        &self,
        node: &str,
        item: &str,
        payload: Element,
        options: &[(&str, &str)],
    ) -> Result<(), OmemoError> {
        let publish = || {
            Iq::set(
                "",
                None,
                pubsub::publish(node, Some(item), payload.clone(), options),
            )
        };
        let answer = self.xmpp.request(publish()).await?;
        match answer.payload {
            IqPayload::Error { error, .. } if pubsub::is_precondition_not_met(&error) => {
                tracing::info!(node, "reconfiguring a PEP node to its publish-options");
                self.xmpp
                    .iq(Iq::set("", None, pubsub::configure_submit(node, options)))
                    .await?;
                self.xmpp.iq(publish()).await?;
                Ok(())
            }
            IqPayload::Error { error, .. } => Err(StreamError::IqError {
                condition: error.condition.name().to_owned(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Fetches `jid`'s device list (an absent node is an empty list) and stores it.
    async fn fetch_device_list(&self, jid: &Jid) -> Result<Vec<DeviceId>, OmemoError> {
        let to = (jid != &self.own).then(|| jid.clone());
        let request = Iq::get("", to, pubsub::items_request(DEVICELIST_NODE, Some(1)));
        let devices = match self.xmpp.iq(request).await {
            Ok(answer) => first_item(answer)
                .map(DeviceListPayload::from_element)
                .transpose()
                .map_err(|e| {
                    OmemoError::Malformed(format!("{jid}'s device list: {}", describe(&e)))
                })?
                .map(|l| l.devices)
                .unwrap_or_default(),
            Err(StreamError::IqError { condition }) if condition == "item-not-found" => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut devices: Vec<DeviceId> = devices.into_iter().filter_map(DeviceId::new).collect();
        if devices.len() > MAX_DEVICES_PER_ACCOUNT {
            tracing::warn!(jid = %jid, count = devices.len(), "a device list longer than {MAX_DEVICES_PER_ACCOUNT}; using the first ones");
            devices.truncate(MAX_DEVICES_PER_ACCOUNT);
        }
        self.store_device_list(jid.as_str(), &devices).await?;
        self.emit(OmemoEvent::DeviceList {
            jid: jid.to_string(),
            devices: devices.clone(),
        })
        .await;
        Ok(devices)
    }

    async fn fetch_bundle(&self, device: &DeviceAddress) -> Result<Bundle, OmemoError> {
        let jid = Jid::parse(&device.jid).map_err(|e| OmemoError::Malformed(e.to_string()))?;
        let to = (jid != self.own).then_some(jid);
        let request = Iq::get(
            "",
            to,
            pubsub::items_request(&bundle_node(device.device.get()), Some(1)),
        );
        let answer = self.xmpp.iq(request).await?;
        let payload = first_item(answer)
            .ok_or_else(|| OmemoError::Malformed(format!("{device} has no bundle")))?;
        Bundle::from_element(payload)
            .map_err(|e| OmemoError::Malformed(format!("{device}'s bundle: {}", describe(&e))))
    }

    /// Device list of `jid`: stored if recent enough, else fetched.
    async fn devices_of(&self, jid: &Jid, max_age: Duration) -> Result<Vec<DeviceId>, OmemoError> {
        let stored = self.account.store().device_list(jid.as_str())?;
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        match stored {
            Some(list)
                if now_ms().saturating_sub(list.updated_ms) < max_age_ms
                    && !list.devices.is_empty() =>
            {
                Ok(list.devices)
            }
            _ => self.fetch_device_list(jid).await,
        }
    }

    async fn send(
        &self,
        to: &Jid,
        body: Option<&str>,
        id: &str,
        extensions: Vec<Element>,
    ) -> Result<SendReport, OmemoError> {
        let to = to.bare();
        if let Some(devices) = self.omemo2_devices_for_send(&to).await? {
            return self.send2(&to, body, id, extensions, devices).await;
        }
        if !self.protocols.legacy() {
            return Err(OmemoError::NoDevices {
                jid: to.to_string(),
            });
        }
        let contact_devices = self.devices_of(&to, DEVICE_LIST_MAX_AGE).await?;
        if contact_devices.is_empty() {
            return Err(OmemoError::NoDevices {
                jid: to.to_string(),
            });
        }
        let own_devices = self
            .devices_of(&self.own, Duration::MAX)
            .await
            .unwrap_or_default();
        let mut targets: Vec<DeviceAddress> = contact_devices
            .iter()
            .map(|d| DeviceAddress::new(to.as_str(), *d))
            .collect();
        targets.extend(
            own_devices
                .iter()
                .filter(|d| **d != self.account.device_id())
                .map(|d| DeviceAddress::new(self.own.as_str(), *d)),
        );
        let (guard, bundles) = self.lock_with_bundles(&targets).await?;
        let sealed = match (self.account)
            .encrypt(guard, to.as_str(), body, &targets, &bundles)
            .await
        {
            Ok(sealed) => sealed,
            Err(e) => return Err(self.keep_identities(e).await.into()),
        };
        let report = SendReport {
            id: id.to_owned(),
            devices: sealed.element.keys.len(),
            new_sessions: sealed.new_sessions,
            skipped: sealed.skipped,
            identity_changes: sealed.identity_changes,
            namespace: Namespace::Legacy,
        };
        // Durable before the wire: a crash after this point makes us skip those counters, never
        // reuse them.
        sealed.state.commit().await?;
        for change in &report.identity_changes {
            self.emit(OmemoEvent::IdentityChanged(change.clone())).await;
        }
        let element = sealed.element.into_element();
        let mut message = encrypted_message(&to, element, ns::OMEMO_LEGACY, body.is_some(), id);
        message.payloads.extend(extensions);
        self.xmpp.send(message).await?;
        Ok(report)
    }

    /// Stores and reports the identity keys a failed encryption saw (see
    /// [`EncryptError::NoDevice`]), so that the user can trust them.
    async fn keep_identities(&self, mut error: EncryptError) -> EncryptError {
        for change in self.account.keep_unsent(&mut error).await {
            self.emit(OmemoEvent::IdentityChanged(change)).await;
        }
        error
    }

    /// The account's lock, with the bundles of the `targets` that have no session. The bundles
    /// are fetched *before* the lock is taken: the connection may be waiting for the event task,
    /// which may be waiting for this lock, so whoever holds it must not wait for an iq answer.
    /// A session dropped meanwhile (a repair) means fetching again; a device whose bundle
    /// cannot be fetched is left out (the encryption skips it).
    async fn lock_with_bundles(
        &self,
        targets: &[DeviceAddress],
    ) -> Result<(AccountGuard, BTreeMap<DeviceAddress, Bundle>), OmemoError> {
        let mut bundles = BTreeMap::new();
        let mut failed = BTreeSet::new();
        loop {
            let missing = |bundles: &BTreeMap<DeviceAddress, Bundle>,
                           failed: &BTreeSet<DeviceAddress>|
             -> Result<Vec<DeviceAddress>, OmemoError> {
                Ok(self
                    .account
                    .without_session(targets)?
                    .into_iter()
                    .filter(|d| !bundles.contains_key(d) && !failed.contains(d))
                    .collect())
            };
            for device in missing(&bundles, &failed)? {
                match self.fetch_bundle(&device).await {
                    Ok(bundle) => {
                        bundles.insert(device, bundle);
                    }
                    Err(e) => {
                        tracing::info!(device = %device, error = %e, "no bundle; skipping the device");
                        failed.insert(device);
                    }
                }
            }
            let mut jids: Vec<&str> = targets.iter().map(|t| t.jid.as_str()).collect();
            jids.dedup();
            let guard = self.account.lock_for(&jids).await;
            if missing(&bundles, &failed)?.is_empty() {
                return Ok((guard, bundles));
            }
        }
    }

    async fn run_followup(self: Arc<Self>, followup: Followup) {
        if followup.republish {
            let result = async {
                let guard = self.account.lock_prekeys().await;
                self.account.maintain(guard)?.commit().await?;
                if self.protocols.legacy() {
                    self.publish_bundle().await?;
                }
                if self.protocols.omemo2() {
                    self.publish_bundle2().await?;
                }
                Ok::<(), OmemoError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "republishing our bundle failed");
            }
        }
        if let Some((device, repair, Namespace::Omemo2)) = &followup.key_transport {
            let result = self.send_empty2(device, *repair).await;
            match result {
                Ok(()) => tracing::info!(device = %device, repair, "sent an empty OMEMO 2 message"),
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "empty OMEMO 2 message failed")
                }
            }
        } else if let Some((device, repair, Namespace::Legacy)) = followup.key_transport {
            let result = async {
                if repair {
                    // Drop the broken session so a fresh one is built from the bundle.
                    let guard = self.account.lock_for(&[device.jid.as_str()]).await;
                    let changes = Changes {
                        remove_sessions: vec![device.clone()],
                        ..Changes::default()
                    };
                    self.account.update(guard, changes).commit().await?;
                }
                let jid =
                    Jid::parse(&device.jid).map_err(|e| OmemoError::Malformed(e.to_string()))?;
                let id = format!("kt-{}-{:08x}", now_ms(), rand::random::<u32>());
                self.send_to_device(&jid, &device, &id).await
            }
            .await;
            match result {
                Ok(()) => tracing::info!(device = %device, repair, "sent a key-transport message"),
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "key-transport message failed")
                }
            }
        }
    }

    /// A key-transport message to exactly one device.
    async fn send_to_device(
        &self,
        to: &Jid,
        device: &DeviceAddress,
        id: &str,
    ) -> Result<(), OmemoError> {
        let mut bundles = BTreeMap::new();
        let guard = loop {
            if self.account.store().session(device)?.is_none() && bundles.is_empty() {
                bundles.insert(device.clone(), self.fetch_bundle(device).await?);
            }
            // Taken after the fetch: see `lock_with_bundles`.
            let guard = self.account.lock_for(&[device.jid.as_str()]).await;
            if !bundles.is_empty() || self.account.store().session(device)?.is_some() {
                break guard;
            }
        };
        let sealed = match (self.account)
            .encrypt(
                guard,
                to.as_str(),
                None,
                std::slice::from_ref(device),
                &bundles,
            )
            .await
        {
            Ok(sealed) => sealed,
            Err(e) => return Err(self.keep_identities(e).await.into()),
        };
        sealed.state.commit().await?;
        for change in sealed.identity_changes {
            self.emit(OmemoEvent::IdentityChanged(change)).await;
        }
        self.xmpp
            .send(encrypted_message(
                to,
                sealed.element.into_element(),
                ns::OMEMO_LEGACY,
                false,
                id,
            ))
            .await?;
        Ok(())
    }
}

/// What becomes of a message stanza without OMEMO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clear {
    /// [`OmemoEvent::Plain`].
    Plain,
    /// [`OmemoEvent::Meta`].
    Meta,
    /// Acknowledged and dropped.
    Drop,
}

/// Sorts a message stanza without OMEMO (after its carbon wrapper is taken off). Only chat
/// and normal messages count (not groupchat, headline or error ones), and of carbons only
/// received ones for meta stanzas, none for plain ones: what we sent ourselves is the
/// bridge's own business. A reaction or a retraction is meta even with a body, which is then
/// only a fallback text; other extensions make a bodyless stanza meta only when they say
/// something on their own ([`Extensions::has_signal`]). A bodyless message with a file's URL
/// (XEP-0066) is plain, like one with a body.
fn route_clear(msg: &Message, carbon: Option<Direction>, extensions: &Extensions) -> Clear {
    let chat = matches!(msg.kind, MessageType::Chat | MessageType::Normal);
    if !chat || carbon == Some(Direction::Sent) {
        return Clear::Drop;
    }
    if extensions.body_is_fallback() {
        return Clear::Meta;
    }
    match (&msg.body, carbon) {
        (Some(_), None) => Clear::Plain,
        (None, None) if extensions.oob_url.is_some() => Clear::Plain,
        (Some(_), Some(_)) => Clear::Drop,
        (None, _) if extensions.has_signal() => Clear::Meta,
        (None, _) => Clear::Drop,
    }
}

/// The stanza [`OmemoClient::send_meta`] sends: a `type='chat'` message to `to`'s bare JID
/// with `id` as stanza id and origin-id, and `extensions`. Reactions and retractions ask the
/// server to store them (XEP-0334 `<store/>`: they have no body, yet the contact's other
/// devices and the archive need them), chat states, markers and receipts ask it not to
/// (`<no-store/>`: they are worthless later). A retraction carries XEP-0424's fallback text
/// for clients that do not know it (marked as such by its `<fallback/>`).
pub(crate) fn meta_message(to: &Jid, id: &str, extensions: &Extensions) -> Message {
    let mut message = Message::chat(to.bare(), RETRACTION_FALLBACK);
    if extensions.retract.is_none() {
        message.body = None;
    }
    message.id = Some(id.to_owned());
    message.origin_id = Some(id.to_owned());
    message.payloads = extensions.to_elements();
    message.payloads.push(if extensions.body_is_fallback() {
        hints::store()
    } else {
        hints::no_store()
    });
    message
}

/// A chat message to `to`'s bare JID carrying `encrypted`, the `<store/>` hint and EME, with
/// `id` as stanza id and origin-id; with `fallback`, the plain-text body for clients without
/// OMEMO (a key-transport message has none).
/// `encrypted` is the `<encrypted/>` element of the OMEMO version whose namespace is `eme`.
fn encrypted_message(to: &Jid, encrypted: Element, eme: &str, fallback: bool, id: &str) -> Message {
    let mut message = Message::chat(to.bare(), FALLBACK_BODY);
    if !fallback {
        message.body = None;
    }
    message.id = Some(id.to_owned());
    message.origin_id = Some(id.to_owned());
    message.payloads.push(encrypted);
    message.payloads.push(hints::store());
    message.payloads.push(eme::encryption(eme, Some("OMEMO")));
    message
}

/// What an availability presence (or its end) from another account says; `None` for our own
/// resources, probes and subscription stanzas. A malformed `<c/>` counts as no caps.
fn contact_presence(presence: &Presence, own: &Jid) -> Option<ContactPresence> {
    let from = presence.from.as_ref()?;
    if from.bare() == own.bare() {
        return None;
    }
    let available = match presence.kind {
        PresenceType::Available => true,
        PresenceType::Unavailable | PresenceType::Error => false,
        _ => return None,
    };
    let caps = presence
        .payload("c", ns::CAPS)
        .and_then(|c| Caps::from_element(c.clone()).ok());
    Some(ContactPresence {
        from: from.clone(),
        available,
        show: presence.show.filter(|_| available),
        status: presence.status.clone(),
        caps: caps.filter(|_| available),
    })
}

/// The sender's XEP-0172 nickname among `payloads`; a malformed one is ignored.
fn nick_of(payloads: &[Element]) -> Option<String> {
    match Nick::find(payloads)? {
        Ok(nick) => Some(nick.into_string()),
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a malformed nickname");
            None
        }
    }
}

fn first_item(answer: Iq) -> Option<Element> {
    let IqPayload::Result(Some(pubsub)) = answer.payload else {
        return None;
    };
    let items = pubsub::Items::from_element(pubsub).ok()?;
    items.items.into_iter().find_map(|i| i.payload)
}

fn describe(e: &ParseError) -> String {
    match e {
        ParseError::NotMine(el) => format!("unexpected element <{}>", el.name()),
        ParseError::Malformed(m) => m.to_string(),
    }
}

/// `send_text` must be usable from spawned tasks.
#[allow(dead_code)]
fn assert_send_future() {
    fn is_send<T: Send>(_: T) {}
    let _ = |c: OmemoClient, j: Jid| is_send(async move { c.send_text(&j, "", "").await });
    let _ = |c: OmemoClient| is_send(async move { c.upload_slot("", 0, "").await });
}

#[cfg(test)]
mod repair_tests {
    use super::*;

    #[test]
    fn repairs_are_rate_limited_per_device_in_bounded_memory() {
        let mut limiter = RepairLimiter::default();
        let start = Instant::now();
        let device = |n: u32| {
            DeviceAddress::new(
                "stranger@x.test",
                DeviceId::new(n + 1).expect("a valid device id"),
            )
        };
        assert!(limiter.allow(&device(0), start));
        assert!(!limiter.allow(&device(0), start), "once per interval");
        // A flood of fresh device ids within one interval: the map stops at its bound.
        let allowed = (1..5_000)
            .filter(|n| limiter.allow(&device(*n), start))
            .count();
        assert_eq!(allowed, MAX_REPAIR_ENTRIES - 1);
        assert_eq!(limiter.last.len(), MAX_REPAIR_ENTRIES);
        // After the interval the old entries make room again.
        let later = start + REPAIR_INTERVAL + Duration::from_secs(1);
        assert!(limiter.allow(&device(9_999), later));
        assert_eq!(limiter.last.len(), 1);
        assert!(limiter.allow(&device(0), later));
    }
}

#[cfg(test)]
mod clear_tests {
    use super::*;
    use crate::stanza::extensions::{ChatState, Reactions};
    use crate::stanza::parse_xml;

    fn message(xml: &str) -> Message {
        Message::from_element(parse_xml(xml)).expect("a valid message")
    }

    fn route(xml: &str, carbon: Option<Direction>) -> Clear {
        let msg = message(xml);
        route_clear(&msg, carbon, &Extensions::from_payloads(&msg.payloads))
    }

    const RECEIVED: Option<Direction> = Some(Direction::Received);
    const SENT: Option<Direction> = Some(Direction::Sent);

    #[test]
    fn bodyless_signals_are_meta_from_the_contact_or_a_received_carbon() {
        for xml in [
            "<message type='chat' id='r'><reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions><store xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><reactions xmlns='urn:xmpp:reactions:0' id='m1'/></message>",
            "<message type='chat'><retract xmlns='urn:xmpp:message-retract:1' id='m1'/></message>",
            "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message><received xmlns='urn:xmpp:receipts' id='m1'/></message>",
        ] {
            assert_eq!(route(xml, None), Clear::Meta, "{xml}");
            assert_eq!(route(xml, RECEIVED), Clear::Meta, "{xml}");
            assert_eq!(route(xml, SENT), Clear::Drop, "{xml}");
        }
    }

    #[test]
    fn a_retraction_or_reaction_with_a_fallback_body_is_meta_not_plain() {
        for xml in [
            "<message type='chat' id='x'>\
               <retract id='m1' xmlns='urn:xmpp:message-retract:1'/>\
               <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
               <body>/me retracted a previous message, but it's unsupported by your client.</body>\
               <store xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><apply-to xmlns='urn:xmpp:fasten:0' id='m1'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to>\
               <body>This person attempted to retract a previous message, but it's unsupported by your client.</body></message>",
            "<message type='chat'><body>👍</body><reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions></message>",
        ] {
            assert_eq!(route(xml, None), Clear::Meta, "{xml}");
            assert_eq!(route(xml, RECEIVED), Clear::Meta, "{xml}");
            assert_eq!(route(xml, SENT), Clear::Drop, "{xml}");
        }
    }

    #[test]
    fn bodies_are_plain_with_their_extensions_from_the_contact_only() {
        let xml = "<message type='chat'><body>&gt; q\nhi</body>\
                     <reply xmlns='urn:xmpp:reply:0' id='m1'/>\
                     <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='4'/></fallback>\
                     <active xmlns='http://jabber.org/protocol/chatstates'/>\
                     <markable xmlns='urn:xmpp:chat-markers:0'/></message>";
        assert_eq!(route(xml, None), Clear::Plain);
        assert_eq!(
            route(xml, RECEIVED),
            Clear::Drop,
            "as before: no plain carbons"
        );
        assert_eq!(route(xml, SENT), Clear::Drop);
        assert_eq!(
            route("<message><body>hi</body></message>", None),
            Clear::Plain
        );
    }

    #[test]
    fn a_file_url_is_a_plain_message_with_or_without_a_body() {
        let url = "https://upload.example/f/photo.jpg";
        let with_body = format!(
            "<message type='chat'><body>{url}</body><x xmlns='jabber:x:oob'><url>{url}</url></x></message>"
        );
        let bodyless =
            format!("<message type='chat'><x xmlns='jabber:x:oob'><url>{url}</url></x></message>");
        for xml in [&with_body, &bodyless] {
            assert_eq!(route(xml, None), Clear::Plain, "{xml}");
            assert_eq!(route(xml, RECEIVED), Clear::Drop, "{xml}");
            assert_eq!(route(xml, SENT), Clear::Drop, "{xml}");
            let msg = message(xml);
            let ext = Extensions::from_payloads(&msg.payloads);
            assert_eq!(ext.oob_url.as_deref(), Some(url));
        }
        // A URL that is not one says nothing.
        let junk =
            "<message type='chat'><x xmlns='jabber:x:oob'><url>not a url</url></x></message>";
        assert_eq!(route(junk, None), Clear::Drop);
        let groupchat = format!(
            "<message type='groupchat'><x xmlns='jabber:x:oob'><url>{url}</url></x></message>"
        );
        assert_eq!(route(&groupchat, None), Clear::Drop);
    }

    #[test]
    fn other_stanzas_are_dropped() {
        for xml in [
            // Nothing to say.
            "<message type='chat'/>",
            "<message type='chat'><markable xmlns='urn:xmpp:chat-markers:0'/><request xmlns='urn:xmpp:receipts'/></message>",
            "<message type='chat'><replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
            "<message type='chat'><received xmlns='urn:xmpp:receipts'/></message>",
            "<message type='chat'><x xmlns='jabber:x:conference' jid='room@muc'/></message>",
            // Not a chat.
            "<message type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message type='groupchat'><body>hi</body></message>",
            "<message type='headline'><reactions xmlns='urn:xmpp:reactions:0' id='m1'/></message>",
            "<message type='error'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        ] {
            assert_eq!(route(xml, None), Clear::Drop, "{xml}");
            assert_eq!(route(xml, RECEIVED), Clear::Drop, "{xml}");
        }
    }

    fn wire(message: Message) -> String {
        message.into_element().to_xml(ns::CLIENT)
    }

    #[test]
    fn a_meta_message_on_the_wire() {
        let to = Jid::parse("romeo@montague.lit/orchard").expect("a jid");
        let reactions = Extensions {
            reactions: Some(Reactions {
                id: "m1".into(),
                emojis: vec!["👍".into()],
            }),
            ..Extensions::default()
        };
        assert_eq!(
            wire(meta_message(&to, "r1", &reactions)),
            "<message to='romeo@montague.lit' id='r1' type='chat'>\
               <origin-id xmlns='urn:xmpp:sid:0' id='r1'/>\
               <reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions>\
               <store xmlns='urn:xmpp:hints'/>\
             </message>"
        );
        let retract = Extensions {
            retract: Some("m1".into()),
            ..Extensions::default()
        };
        let msg = meta_message(&to, "r2", &retract);
        assert_eq!(msg.body.as_deref(), Some(RETRACTION_FALLBACK));
        let xml = wire(msg);
        for part in [
            "<retract xmlns='urn:xmpp:message-retract:1' id='m1'/>",
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>",
            "<store xmlns='urn:xmpp:hints'/>",
            "<origin-id xmlns='urn:xmpp:sid:0' id='r2'/>",
        ] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        let typing = Extensions {
            chat_state: Some(ChatState::Composing),
            ..Extensions::default()
        };
        let msg = meta_message(&to, "t1", &typing);
        assert_eq!(msg.body, None);
        let xml = wire(msg);
        assert!(
            xml.contains("<composing xmlns='http://jabber.org/protocol/chatstates'/><no-store xmlns='urn:xmpp:hints'/>"),
            "{xml}"
        );
        // What we send, the other side reads as meta.
        for ext in [reactions, retract, typing] {
            let el = crate::stanza::reparse(&meta_message(&to, "x", &ext).into_element());
            let msg = Message::from_element(el).expect("valid");
            let read = Extensions::from_payloads(&msg.payloads);
            assert_eq!(read, ext);
            assert_eq!(route_clear(&msg, None, &read), Clear::Meta);
        }
    }

    #[test]
    fn debug_shows_neither_body_nor_reactions() {
        let msg = message(
            "<message type='chat' id='x'><body>secret words</body>\
               <reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>🐢</reaction></reactions></message>",
        );
        let ext = Extensions::from_payloads(&msg.payloads);
        let shown = format!("{ext:?}");
        assert!(!shown.contains('🐢') && shown.contains("m1"), "{shown}");
    }
}
