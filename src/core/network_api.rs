//! What the core needs from the interop network, as traits: `network::XmppNetwork` implements
//! them over XMPP + OMEMO; the core's tests implement them in memory. The core never sees a
//! stanza, a JID type or a Signal session — only bare JIDs ([`RemoteUserId`]), texts and ids.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::ids::RemoteUserId;

/// A failed network operation. `Display` never holds a password or a message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The server refused the credentials.
    #[error("the server refused the login: {0}")]
    Auth(String),
    /// In-band registration is not offered or was refused.
    #[error("registration failed: {0}")]
    Register(String),
    /// Not connected right now (the login reconnects by itself).
    #[error("not connected to the server")]
    NotConnected,
    /// The server did not confirm in time.
    #[error("the server did not confirm within {0:?}")]
    Timeout(Duration),
    /// The contact cannot receive encrypted messages (no OMEMO device), or encryption failed.
    #[error("cannot encrypt to the contact: {0}")]
    Encrypt(String),
    #[error("{0}")]
    Other(String),
}

/// Commits what an inbound event changed on the network side (the advanced Signal session)
/// durably, then acknowledges the stanza to the server. The core calls it last, after the
/// event's Matrix effect exists and its mapping is written; dropping it without committing
/// makes the server deliver the stanza again after a reconnect.
#[async_trait]
pub trait Ack: Send {
    async fn commit(self: Box<Self>) -> Result<(), NetworkError>;

    /// Takes the state the message advanced out of this acknowledgement, for the core to
    /// write in the same store transaction as the message's mapping (one flush for both);
    /// [`commit`](Self::commit) then only acknowledges. `None` if there is none (or it was
    /// taken).
    fn take_state(&mut self) -> Option<PendingState> {
        None
    }
}

/// The Signal state an inbound message advanced, not written yet. Holds the account's lock
/// on that state, so nothing else uses the sessions until it is written (or dropped,
/// which discards it: the stanza then comes again).
pub struct PendingState {
    pub changes: xmpp_omemo::omemo::Changes,
    pub guard: Box<dyn Send>,
}

impl std::fmt::Debug for PendingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The changes hold session secrets.
        f.debug_struct("PendingState").finish_non_exhaustive()
    }
}

/// A contact's encrypted message, not decrypted yet: the core decrypts it in the contact's
/// inbound lane, so a message that waits (for the homeserver, say) holds up only that contact.
/// Dropping it leaves the stanza unacknowledged.
#[async_trait]
pub trait Encrypted: Send {
    /// Decrypts it (waiting while an earlier message of the same contact is still being
    /// handled): the events it turns into, in order (an identity change, then the message or
    /// why it did not decrypt; nothing for a message that only carried keys).
    async fn decrypt(self: Box<Self>) -> Vec<RemoteEvent>;
    /// Acknowledges it unread: dropped without decrypting, so nothing of the sender is stored
    /// (a stranger whose messages the user does not take).
    fn discard(self: Box<Self>);
    /// Whether the user sent it to the contact from another client of the account (an XEP-0280
    /// sent carbon): never a stranger's message, so never turned away unread.
    fn sent_by_user(&self) -> bool {
        false
    }
    /// The id our own server gave the message (XEP-0359 stanza-id; for an archived message,
    /// its archive id).
    fn server_id(&self) -> Option<String> {
        None
    }
    /// It was fetched from the server's archive ([`LoginClient::catch_up`]), not live.
    fn archived(&self) -> bool {
        false
    }
}

/// Where a catch-up from the server's archive starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUpFrom {
    /// After the message with this archive id (the last one the bridge finished).
    After(String),
    /// The messages archived since this time (a login that has finished none yet).
    Since(std::time::SystemTime),
}

/// A login's events, in order ([`Network::start`]). They travel boxed: tokio allocates a
/// channel's slots 32 at a time when the channel is made, a `RemoteEvent` is ~270 bytes, and
/// every idle login holds its channel (8.7 KB unboxed, 256 bytes boxed).
pub type RemoteEvents = mpsc::Receiver<Box<RemoteEvent>>;

/// What a login's connection reports to the core, in order.
pub enum RemoteEvent {
    /// A session is up; `resumed: false` for a new one (also at every start), after which
    /// the core catches up from the server's archive.
    Connected { resumed: bool },
    /// The catch-up the core asked for ([`LoginClient::catch_up`], numbered `round`) ended:
    /// every archived message it fetched came before this. `complete: false`: the limit
    /// stopped it, and later messages of the downtime were skipped (or the server no longer
    /// knew where it stopped, and the newest were fetched). `failed`: the query failed (the
    /// server keeps no archive, a timeout, the connection dropped).
    CaughtUp {
        round: u64,
        fetched: usize,
        complete: bool,
        failed: bool,
    },
    /// The connection dropped; `retry_in` is `None` when the login gave up (bad credentials).
    Disconnected {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// A message from a contact, decrypted.
    Message {
        contact: RemoteUserId,
        /// The contact's message id (origin-id, else stanza id): unique within the chat if the
        /// contact's client is well behaved.
        id: Option<String>,
        /// The id our own server gave the message (XEP-0359 stanza-id), if it stamps them: the
        /// same in every redelivery of the message, different for every other message.
        server_id: Option<String>,
        body: String,
        /// The contact's self-chosen nickname (XEP-0172), if sent.
        nick: Option<String>,
        /// The full address of the contact's client that sent it (where an error reply goes).
        client: Option<String>,
        /// The URL of its XEP-0066 out-of-band element (how a file is shared in the clear).
        oob_url: Option<String>,
        /// It came end-to-end encrypted (OMEMO); `false`: in the clear, shown marked as such.
        encrypted: bool,
        /// What it says about earlier messages (a reply, a correction).
        relations: Relations,
        ack: Box<dyn Ack>,
    },
    /// A message the user sent to `contact` from another client of the same account (an
    /// XEP-0280 sent carbon), decrypted. It comes in the contact's lane, so it keeps its place
    /// among the contact's messages. Carbons of the bridge's own sends never come (the server
    /// copies a message to the account's other resources, not to the one that sent it).
    SentElsewhere {
        contact: RemoteUserId,
        /// The message's id (origin-id, else the stanza's id), as the contact's replies and
        /// markers name it.
        id: Option<String>,
        body: String,
        ack: Box<dyn Ack>,
    },
    /// A contact's encrypted message, to decrypt in the contact's lane.
    Encrypted {
        contact: RemoteUserId,
        message: Box<dyn Encrypted>,
    },
    /// A contact's message without encryption, refused by `network.unencrypted = "reject"`
    /// (the contact was sent an error); the portal gets a notice.
    PlainRefused {
        contact: RemoteUserId,
        ack: Box<dyn Ack>,
    },
    /// A message from a contact that could not be decrypted. The network side already asked
    /// for a session repair where that helps.
    Undecryptable {
        contact: RemoteUserId,
        id: Option<String>,
        server_id: Option<String>,
        /// Already delivered before (a replay): nothing to show.
        duplicate: bool,
        /// Why, for logs and the placeholder (never content).
        reason: String,
        ack: Box<dyn Ack>,
    },
    /// What a contact's stanza says about other messages, or about the contact, without being
    /// a message itself: reactions, a retraction, a read marker, a delivery receipt, typing.
    /// Comes in the contact's lane, so it never overtakes the message it refers to.
    Signals {
        contact: RemoteUserId,
        signals: Vec<Signal>,
        ack: Box<dyn Ack>,
    },
    /// A stanza of no interest to the core (it must still be acknowledged).
    Ignored { ack: Box<dyn Ack> },
    /// Roster entries (the roster at connect, or a push): these contacts are in (or, when
    /// `removed`, left) the user's contacts.
    Contacts(Vec<ContactUpdate>),
    /// A contact asks to see the user's presence (an add-contact request).
    SubscriptionRequest {
        contact: RemoteUserId,
        nick: Option<String>,
    },
    /// A contact's device presented a new identity key (`new_device`: a device the bridge had
    /// not seen, of a contact it already knew; otherwise a known device's key changed).
    IdentityChanged {
        contact: RemoteUserId,
        device: u32,
        fingerprint: String,
        trusted: bool,
        new_device: bool,
    },
    /// What is shown for a contact changed: their availability over all their clients, and
    /// the status text of the most available one (written by the contact: never logged).
    Presence {
        contact: RemoteUserId,
        availability: Availability,
        status: Option<String>,
    },
}

/// What a contact's online clients support, of what the bridge sends besides text (from the
/// XEP-0115 capabilities they announce): true if any of them does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub replies: bool,
    pub corrections: bool,
    pub reactions: bool,
    pub retractions: bool,
}

/// A contact's availability, as Matrix shows presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// A client is online (XMPP: no `<show/>`, or `chat`).
    Online,
    /// Online but away, extended away or busy (`away`, `xa`, `dnd`).
    Away,
    /// No client online.
    Offline,
}

/// What a message says about earlier messages, by their ids (never their content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    /// It answers the message with this id (the contact's, or one the bridge sent), XEP-0461.
    pub reply_to: Option<String>,
    /// The characters (not bytes) at the start of the body that only quote the message
    /// answered (XEP-0428 fallback): left out when the reply is shown as a Matrix reply.
    pub reply_fallback: Option<Range<usize>>,
    /// It corrects the message with this id (XEP-0308: always the first message's id).
    pub replaces: Option<String>,
    /// The sender asks to be told when the message was read (XEP-0333 `markable`).
    pub markable: bool,
}

/// A note about other messages or about the sender, both ways; never a message of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The sender's whole set of reactions to message `to` (XEP-0444): it replaces the set
    /// before, and an empty set takes every reaction back.
    Reactions { to: String, keys: Vec<String> },
    /// The sender takes their message `id` back (XEP-0424).
    Retract { id: String },
    /// The sender has read message `id` and every one before it (XEP-0333 `displayed`).
    Displayed { id: String },
    /// The sender's client received message `id` (XEP-0184).
    Received { id: String },
    /// The sender is typing, or stopped (XEP-0085 chat states).
    Typing(Typing),
}

/// Whether someone is typing (XEP-0085 `composing` against the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// `composing`.
    Composing,
    /// `paused`: stopped typing for now, the draft is still there.
    Paused,
    /// `active`, `inactive` or `gone`: not typing.
    Stopped,
}

/// A message for the contact: its text and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The stanza id and origin-id: the same for every retry of the message.
    pub id: String,
    pub body: String,
    /// It answers this message.
    pub reply: Option<OutgoingReply>,
    /// It corrects our message with this id (the id of the first version).
    pub replaces: Option<String>,
}

/// What an outgoing reply answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingReply {
    /// The answered message's id on the network.
    pub id: String,
    /// Who wrote it: the contact, or the user's own account.
    pub author: RemoteUserId,
    /// The characters at the start of `body` that quote it, for clients without replies.
    pub fallback: Option<Range<usize>>,
}

/// Where a file goes up and where it is fetched from (XEP-0363).
#[derive(Clone, PartialEq, Eq)]
pub struct UploadSlot {
    pub put_url: String,
    /// Headers the upload must carry (`Authorization`, `Cookie`, `Expires`).
    pub put_headers: Vec<(String, String)>,
    pub get_url: String,
}

impl std::fmt::Debug for UploadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadSlot(<urls and headers withheld>)")
    }
}

/// One roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactUpdate {
    pub contact: RemoteUserId,
    /// The name the user gave the contact. Never logged.
    pub name: Option<String>,
    pub removed: bool,
}

/// Where a block took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedAt {
    /// On the server (XEP-0191): the contact's messages no longer reach the account at all.
    Server,
    /// The server has no blocking: the bridge drops the contact's messages itself.
    Bridge,
}

/// One device of a contact, as `devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactDevice {
    pub device: u32,
    /// The identity key's fingerprint, grouped hex as XMPP clients show it; `None` when the
    /// device is listed but no key of it was seen yet.
    pub fingerprint: Option<String>,
    pub trust: DeviceTrust,
    /// Whether the contact's published device list names it now.
    pub listed: bool,
}

/// How far the bridge trusts one device's identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTrust {
    /// Trusted without verification (first use, or a new device under the default policy).
    Blind,
    /// Trusted by the user (`trust`).
    Verified,
    /// Not encrypted to: refused by the user, or new or changed under `trust = "strict"`.
    Untrusted,
    /// No key seen yet.
    Unknown,
}

/// One connected (or reconnecting) linked identity.
#[async_trait]
pub trait LoginClient: Send + Sync + 'static {
    /// Encrypts and sends `message` to `to`; returns once the server has it. Its `id` is the
    /// stanza id and origin-id: the same for a retry of the same message.
    async fn send_message(
        &self,
        to: &RemoteUserId,
        message: &OutgoingMessage,
    ) -> Result<(), NetworkError>;
    /// Sends `signal` to `to` with stanza id `id`; returns once the server has it. Signals go
    /// in the clear: legacy OMEMO encrypts only a message's body (see docs/threat-model.md).
    async fn send_signal(
        &self,
        to: &RemoteUserId,
        id: &str,
        signal: &Signal,
    ) -> Result<(), NetworkError>;
    /// Adds `contact` to the roster (with `name`), approves their presence subscription and
    /// asks for theirs.
    async fn add_contact(
        &self,
        contact: &RemoteUserId,
        name: Option<&str>,
    ) -> Result<(), NetworkError>;
    /// Approves `contact`'s pending presence subscription request.
    async fn approve(&self, contact: &RemoteUserId) -> Result<(), NetworkError>;
    /// Blocks `contact` on the server if it supports XEP-0191 (`Ok(Server)`), else `Ok(Bridge)`
    /// and the caller blocks it in the bridge.
    async fn block(&self, contact: &RemoteUserId) -> Result<BlockedAt, NetworkError>;
    async fn unblock(&self, contact: &RemoteUserId) -> Result<(), NetworkError>;
    /// Whether the stream is up now.
    fn connected(&self) -> bool;
    /// Fetches the messages the server archived from `start` on, at most `limit`, oldest
    /// first; each comes on the login's event stream as a live one would (with its archive id
    /// as `server_id`, [`Encrypted::archived`]), then [`RemoteEvent::CaughtUp`] with `round`
    /// (also when it failed). Returns when done.
    async fn catch_up(
        &self,
        _start: CatchUpFrom,
        _limit: usize,
        _round: u64,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::Other("the server keeps no archive".into()))
    }
    /// Keeps the one-time prekeys that decryptions use up until
    /// [`release_used_prekeys`](Self::release_used_prekeys) (during a catch-up, several
    /// archived messages may stand on one prekey).
    fn hold_used_prekeys(&self) {}
    /// Removes the prekeys held since [`hold_used_prekeys`](Self::hold_used_prekeys) and
    /// publishes fresh ones.
    async fn release_used_prekeys(&self) -> Result<(), NetworkError> {
        Ok(())
    }
    /// What is shown for `contact` now (see [`RemoteEvent::Presence`]); `None` when nothing
    /// was announced.
    fn presence_of(&self, _contact: &RemoteUserId) -> Option<(Availability, Option<String>)> {
        None
    }
    /// What `contact`'s online clients support; `None` when not known (offline, not in the
    /// roster, or their clients did not answer).
    async fn capabilities(&self, _contact: &RemoteUserId) -> Option<Capabilities> {
        None
    }
    /// The largest file the account's server takes for upload (`None`: it names no limit);
    /// an error when it offers no upload service.
    async fn upload_limit(&self) -> Result<Option<u64>, NetworkError> {
        Err(NetworkError::Other(
            "the server offers no file upload".into(),
        ))
    }
    /// A place to upload a file of `size` bytes (XEP-0363).
    async fn upload_slot(
        &self,
        _filename: &str,
        _size: u64,
        _content_type: &str,
    ) -> Result<UploadSlot, NetworkError> {
        Err(NetworkError::Other(
            "the server offers no file upload".into(),
        ))
    }
    /// Tells `contact` that their message `id` was not delivered, and why: an error reply to
    /// their `client` (a full address: the server drops an error sent to a bare one), which
    /// their client shows on that message.
    async fn refuse(
        &self,
        _contact: &RemoteUserId,
        _client: Option<&str>,
        _id: Option<&str>,
        _why: &str,
    ) -> Result<(), NetworkError> {
        Ok(())
    }
    /// Our OMEMO device id and identity fingerprint, for `status`.
    fn device(&self) -> (u32, String);
    /// The devices of `contact` the account knows (its published device list, and every device
    /// whose identity key was seen), with their fingerprints and trust.
    async fn devices(&self, _contact: &RemoteUserId) -> Result<Vec<ContactDevice>, NetworkError> {
        Ok(Vec::new())
    }
    /// Trusts (`trusted`) or distrusts the device of `contact` whose identity key has
    /// `fingerprint` (hex, any grouping or case); durable when it returns. Returns the device
    /// id; [`NetworkError::Other`] with a readable reason when no device has that fingerprint.
    async fn set_trust(
        &self,
        _contact: &RemoteUserId,
        _fingerprint: &str,
        _trusted: bool,
    ) -> Result<u32, NetworkError> {
        Err(NetworkError::Other("device trust is not supported".into()))
    }
    /// Closes the connection (acknowledging what was committed).
    async fn close(&self);
}

/// The interop network: starts logins.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Creates the account by in-band registration.
    async fn register(&self, jid: &RemoteUserId, password: &str) -> Result<(), NetworkError>;
    /// Starts the login's connection (creating its OMEMO identity on first use). With
    /// `wait`, returns only after the first successful connection, or the reason it failed
    /// (and then nothing keeps running); without, returns at once and the connection comes
    /// up (and retries) in the background. Events go to the returned receiver, in order.
    async fn start(
        &self,
        jid: &RemoteUserId,
        password: &str,
        wait: bool,
    ) -> Result<(std::sync::Arc<dyn LoginClient>, RemoteEvents), NetworkError>;
    /// Whether `register` is offered.
    fn can_register(&self) -> bool;
    /// Whether accounts of `domain` (lower case) may be linked; `Err` says why not, for the
    /// user.
    fn may_link(&self, _domain: &str) -> Result<(), String> {
        Ok(())
    }
}
