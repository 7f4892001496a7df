//! The bridge core: what happens to each Matrix event and remote event. It knows the store
//! traits, the ID types, the [`MatrixApi`] and [`Network`] traits — never HTTP, sled or XMPP.
//!
//! - `mod.rs`: transactions, memberships, dispatch of Matrix messages;
//! - `bot.rs`: the management-room commands that act on the bridge;
//! - `logins.rs`: linking, unlinking, and one inbound task per linked identity;
//! - `portals.rs`: ghosts, portal rooms, the space, `m.bridge` state, message requests;
//! - `messages.rs`: messages from contacts, with the durability rule;
//! - `outbound.rs`: messages from the Matrix user, with the same rule;
//! - `relations.rs`: replies' and edits' neighbours: reactions, retractions, read markers,
//!   delivery receipts and typing, both ways;
//! - `ephemeral.rs`: the users' read receipts and typing, as the homeserver pushes them;
//! - `workers.rs`: one worker per portal and management room, fed durably by transactions;
//! - `carbons.rs`: what the user sent from their other clients (sent carbons), double puppeting.

mod bot;
mod capabilities;
mod carbons;
mod catch_up;
mod commits;
mod devices;
mod envelope;
mod ephemeral;
mod inbound;
mod logins;
mod matrix_api;
mod media;
mod messages;
mod network_api;
mod outbound;
mod portals;
mod presence;
mod relations;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::room::message::{MessageType, RoomMessageEventContent};
use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
};
use ruma::serde::Raw;
use ruma::{OwnedTransactionId, OwnedUserId, RoomId, UserId};
use tracing::{debug, info, warn};

pub use bot::CommandError;
pub use logins::{LinkInfo, LoginStatus};
pub use matrix_api::{DecryptError, MatrixApi, MatrixError, NewRoom, NewState, TXN_FIELD};
pub use media::MediaSettings;
pub use network_api::{
    Ack, Availability, BlockedAt, Capabilities, CatchUpFrom, ContactDevice, ContactUpdate,
    DeviceTrust, Encrypted, LoginClient, Network, NetworkError, OutgoingMessage, OutgoingReply,
    PendingState, Relations, RemoteEvent, RemoteEvents, Signal, Typing, UploadSlot,
};

use crate::commands;
use crate::ids::{GhostNamespace, RemoteUserId};
use crate::store::{self, Store};
use envelope::{Envelope, EventIds};

/// A failure that stops a transaction or request from being acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("store task failed: {0}")]
    Join(String),
}

/// What the core needs to know about its own identity.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    pub bot: OwnedUserId,
    pub bot_displayname: String,
    pub ghosts: GhostNamespace,
    /// How long a message to a contact may wait for the server before it is reported failed.
    pub send_timeout: Duration,
    /// Who may open message requests, and how many per hour.
    pub requests: RequestPolicy,
    /// Whether the bridge reads and writes encrypted rooms (its users get encryption devices).
    pub encryption: bool,
    /// Whether the portals the bridge creates are end-to-end encrypted (`m.room.encryption`
    /// in their initial state).
    pub encrypt_portals: bool,
    /// How often a contact's presence is set again on their ghost; `None`: presence is not
    /// bridged.
    pub presence_refresh: Option<Duration>,
    /// How files are bridged; `None`: they are not (the sender is told).
    pub media: Option<MediaSettings>,
    /// At most this many archived messages are fetched after a new session (0: none).
    pub catch_up_limit: usize,
    /// Whether contacts' delivery receipts are posted as `com.beeper.message_send_status`
    /// events (a post and its echo per message the user sends).
    pub message_status: bool,
}

impl BridgeSettings {
    /// Whether `user` is the bridge's own: the bot or one of the ghosts.
    pub fn is_ours(&self, user: &UserId) -> bool {
        user == self.bot || self.ghosts.contains(user)
    }
}

/// Who may open a message request (a portal from a contact outside the roster).
#[derive(Clone, Copy, Debug)]
pub struct RequestPolicy {
    /// Only roster contacts: strangers' messages are dropped.
    pub roster_only: bool,
    /// New requests per login per hour.
    pub per_hour: u32,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self {
            roster_only: false,
            per_hour: 20,
        }
    }
}

/// How long a shutdown waits for the sends being made to be confirmed before it closes the
/// connections.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// How long a processed transaction id is remembered. The homeserver retries a transaction only
/// until it is acknowledged (a lost 200 makes it retry within minutes), so a week is ample.
const TXN_MEMORY_MS: u64 = 7 * 24 * 3600 * 1000;

/// The bridge core. One per process, shared behind an `Arc`.
pub struct Bridge {
    matrix: Arc<dyn MatrixApi>,
    store: Arc<dyn Store>,
    network: Arc<dyn Network>,
    settings: BridgeSettings,
    /// Serialises transactions: a retry of a transaction still being processed waits for it and
    /// then finds it marked processed.
    txn_lock: tokio::sync::Mutex<()>,
    /// The running logins, by account.
    logins: StdMutex<HashMap<RemoteUserId, Arc<logins::Login>>>,
    /// Serialises linking and unlinking.
    link_lock: tokio::sync::Mutex<()>,
    /// Serialises portal and space creation, so two events never create two rooms for one chat.
    /// Never held while sending to the network.
    portal_lock: tokio::sync::Mutex<()>,
    /// `link` commands waiting for the password, by Matrix user.
    pending_links: StdMutex<HashMap<OwnedUserId, bot::PendingLink>>,
    /// The room workers (portals and management rooms).
    workers: workers::Workers,
    /// Inbound acknowledgements waiting for their flush.
    commits: commits::Commits,
    /// Typing as last told each way, to coalesce.
    typing: relations::TypingMarks,
    /// Contacts' presence as the logins report it, and as set on their ghosts.
    presences: presence::Presences,
    /// The portals told that the contact's clients lack a feature.
    noticed: capabilities::Noticed,
    /// The id of the last transaction, when it was a number (Synapse counts 1, 2, 3, ...).
    last_txn: StdMutex<Option<u64>>,
    /// Why the last flush failed, until one succeeds again.
    store_failure: StdMutex<Option<String>>,
    /// Double puppeting: the homeserver API that posts as the users themselves (see
    /// `carbons.rs`); unset, their other clients' messages are posted by the ghost.
    double_puppet: std::sync::OnceLock<Arc<dyn MatrixApi>>,
    /// A weak handle on ourselves, for the tasks we spawn.
    this: std::sync::Weak<Bridge>,
}

impl Bridge {
    pub fn new(
        matrix: Arc<dyn MatrixApi>,
        store: Arc<dyn Store>,
        network: Arc<dyn Network>,
        settings: BridgeSettings,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            matrix,
            store,
            network,
            settings,
            txn_lock: tokio::sync::Mutex::new(()),
            logins: StdMutex::new(HashMap::new()),
            link_lock: tokio::sync::Mutex::new(()),
            portal_lock: tokio::sync::Mutex::new(()),
            pending_links: StdMutex::new(HashMap::new()),
            workers: workers::Workers::default(),
            commits: commits::Commits::default(),
            typing: relations::TypingMarks::default(),
            presences: presence::Presences::default(),
            noticed: capabilities::Noticed::default(),
            last_txn: StdMutex::new(None),
            store_failure: StdMutex::new(None),
            double_puppet: std::sync::OnceLock::new(),
            this: this.clone(),
        })
    }

    /// Forgets old processed-transaction ids, registers the bot (if needed) and sets its display
    /// name (if different).
    pub async fn start(&self) -> Result<(), BridgeError> {
        let pruned = self
            .store
            .prune_txns_before(now_ms().saturating_sub(TXN_MEMORY_MS))?;
        if pruned > 0 {
            debug!(pruned, "forgot old transaction ids");
            self.flush().await?;
        }
        let bot = &self.settings.bot;
        self.matrix.ensure_registered(bot.localpart()).await?;
        let wanted = &self.settings.bot_displayname;
        if self.matrix.display_name(bot).await?.as_deref() != Some(wanted.as_str()) {
            self.matrix.set_display_name(bot, wanted).await?;
        }
        if let Err(error) = self.matrix.prepare_device(bot).await {
            warn!(%error, "the bot has no encryption device: encrypted management rooms cannot be read");
        }
        info!(bot = %bot, "bridge bot ready");
        self.start_presence_keeper();
        self.start_logins().await;
        Ok(())
    }

    /// Hands every event recorded before a restart to its room's worker, in order. Call it
    /// before the appservice server takes transactions, so that newer events queue behind them.
    pub fn resume_recorded(&self) -> Result<(), BridgeError> {
        self.resume_pending()
    }

    /// Closes every connection (acknowledging what was committed) and flushes the store. The
    /// logins stop concurrently, each within a bounded time (`Login::stop`), so shutting down
    /// many takes about as long as one.
    pub async fn shutdown(&self) {
        if !self.workers.drain(SHUTDOWN_DRAIN).await {
            warn!(
                "some rooms were still sending at shutdown; their messages go out after the restart"
            );
        }
        if !self.commits.drain(SHUTDOWN_DRAIN).await {
            warn!("some inbound messages were still waiting for a flush; they come again");
        }
        let logins: Vec<_> = self.logins_lock().drain().map(|(_, l)| l).collect();
        let mut stops = tokio::task::JoinSet::new();
        for login in logins {
            stops.spawn(async move { login.stop().await });
        }
        while stops.join_next().await.is_some() {}
        if let Err(error) = self.flush().await {
            warn!(%error, "flush at shutdown failed");
        }
    }

    /// Handles one appservice transaction, exactly once across retries and restarts. Each event
    /// is deduplicated by its own id (the message map), so a transaction id is only a hint: the
    /// fast path that skips a whole transaction needs the same id *and* the same events (the
    /// stored key carries a digest of their ids), because a homeserver may number transactions
    /// from 1 again after a restart (element-hq/synapse#14556). The effects are flushed first;
    /// only then is the transaction marked processed, so a retry after a failed flush is
    /// processed again, never answered 200 for work that is not durable. The mark itself is
    /// not flushed here (the next flush carries it): lost in a crash, it only makes a retry
    /// take the per-event path. Our own posts coming back (the bot's and the ghosts'
    /// message-like events, [`Envelope::is_echo`]) are skipped unparsed, and a transaction of
    /// nothing else reads, writes and flushes nothing: handling it again changes nothing.
    /// An event that fails to parse or to process is logged (without content) and skipped.
    pub async fn handle_transaction(
        &self,
        txn_id: &str,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), BridgeError> {
        let _serial = self.txn_lock.lock().await;
        if self.store_failure().is_some() {
            // Take no work while the store cannot keep it: the homeserver retries, and the
            // flush here tells whether the store is back.
            self.flush().await?;
        }
        let envelopes: Vec<Envelope> = events.iter().map(Envelope::of).collect();
        // Event ids (never content) say which events came in which transaction.
        debug!(txn_id, events = events.len(), event_ids = ?EventIds(&envelopes), "transaction");
        if envelopes.iter().all(|e| e.is_echo(&self.settings)) {
            // Its number still counts for the gap check of the next one.
            self.txn_gap(txn_id);
            return Ok(());
        }
        let seen_key = transaction_key(txn_id, &events);
        if self.store.txn_processed(&seen_key)? {
            debug!(txn_id, "transaction already processed");
            return Ok(());
        }
        // Messages of portals and management rooms go to their room's worker, recorded (by id)
        // before the answer; everything else is handled here, in order.
        let mut for_workers = workers::WorkerEvents::new();
        for (raw, envelope) in events.into_iter().zip(envelopes) {
            if envelope.is_echo(&self.settings) {
                continue;
            }
            if let Some((room, event)) = self.worker_event(&envelope)? {
                for_workers.push((room, event, raw));
                continue;
            }
            let event_id = envelope.event_id;
            match raw.deserialize() {
                Ok(event) => {
                    if let Err(error) = self.handle_event(event).await {
                        warn!(txn_id, event_id, %error, "event not handled");
                    }
                }
                Err(error) => {
                    // serde's message may quote the content; report only where it failed.
                    warn!(
                        txn_id,
                        event_id,
                        kind = envelope.kind,
                        line = error.line(),
                        column = error.column(),
                        "malformed event skipped"
                    );
                }
            }
        }
        if self.txn_gap(txn_id) {
            for_workers = self.fill_gaps(for_workers).await;
        }
        let jobs = self.record(for_workers)?;
        if let Err(error) = self.flush().await {
            // Not answered: the homeserver retries and records them again, so these go.
            self.forget(&jobs);
            return Err(error);
        }
        // The events are durably recorded now: hand them over whatever happens to the mark.
        let marked = self.store.mark_txn_processed(&seen_key, now_ms());
        for (room, job) in jobs {
            self.dispatch(&room, job);
        }
        marked?;
        Ok(())
    }

    /// The room and id of an event for a room worker (a message or an encrypted event in a
    /// portal or a management room, not from the bot or a ghost).
    fn worker_event(
        &self,
        envelope: &Envelope,
    ) -> Result<Option<(ruma::OwnedRoomId, ruma::OwnedEventId)>, BridgeError> {
        let (Some(kind), Some(room), Some(_sender), Some(event)) = (
            &envelope.kind,
            &envelope.room_id,
            &envelope.sender,
            &envelope.event_id,
        ) else {
            return Ok(None);
        };
        if !workers::is_worker_type(kind)
            || envelope.is_state()
            || envelope.sent_by_us(&self.settings)
        {
            return Ok(None);
        }
        let (Ok(room), Ok(event)) = (
            ruma::OwnedRoomId::try_from(room.as_str()),
            ruma::OwnedEventId::try_from(event.as_str()),
        ) else {
            return Ok(None);
        };
        if !self.has_worker(&room)? {
            return Ok(None);
        }
        Ok(Some((room, event)))
    }

    /// Answers the homeserver's query for `user`: if it is a well-formed ghost, registers it
    /// (display name: the bare JID) and returns `true`; otherwise `false`.
    pub async fn provision_ghost(&self, user: &UserId) -> Result<bool, BridgeError> {
        let Some(remote) = self.settings.ghosts.remote_of(user) else {
            return Ok(false);
        };
        if self.store.ghost(user)?.is_some_and(|g| g.registered) {
            return Ok(true);
        }
        self.ensure_ghost(&remote, None).await?;
        self.flush().await?;
        // A client that invites the ghost (the homeserver asked us about it first) shares the
        // room key of its first message with the ghost's devices at once: create it now.
        if let Err(error) = self.matrix.prepare_device(user).await {
            warn!(ghost = %user, %error, "the ghost has no encryption device yet");
        }
        Ok(true)
    }

    /// Registers the ghost of `remote` if needed and sets its display name to `name` (else the
    /// JID) if it differs from the one we last set. Returns the ghost's user ID.
    /// The contact's ghost, registered, with its global display name: the JID, or with a
    /// nickname the contact chose (XEP-0172) `nick (jid)`, so a stranger calling themselves
    /// "Bob" is never shown as just "Bob". A user's own roster name is never global (other
    /// users would see it): it is the ghost's name in that user's portal only
    /// (`portals::open_portal`). Without a nick, a name set before is kept.
    async fn ensure_ghost(
        &self,
        remote: &RemoteUserId,
        nick: Option<&str>,
    ) -> Result<OwnedUserId, BridgeError> {
        let ghost = self
            .settings
            .ghosts
            .ghost_of(remote)
            .map_err(|e| NetworkError::Other(format!("no ghost for this contact: {e}")))?;
        let mut record = self.store.ghost(&ghost)?.unwrap_or_default();
        let nick = nick.map(str::trim).filter(|n| !n.is_empty());
        let wanted = match nick {
            Some(nick) => format!("{nick} ({remote})"),
            None => match (&record.displayname, record.registered) {
                (Some(kept), true) => kept.clone(),
                _ => remote.to_string(),
            },
        };
        if record.registered && record.displayname.as_deref() == Some(wanted.as_str()) {
            return Ok(ghost);
        }
        if !record.registered {
            self.matrix.ensure_registered(ghost.localpart()).await?;
            record.registered = true;
            info!(ghost = %ghost, "ghost registered");
        }
        self.matrix.set_display_name(&ghost, &wanted).await?;
        record.displayname = Some(wanted);
        self.store.put_ghost(&ghost, &record)?;
        Ok(ghost)
    }

    async fn handle_event(&self, event: AnyTimelineEvent) -> Result<(), BridgeError> {
        match event {
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(ev))) => {
                self.handle_membership(
                    &ev.room_id,
                    &ev.sender,
                    &ev.state_key,
                    &ev.content,
                    ev.event_id.as_str(),
                )
                .await
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(ev),
            )) => {
                self.handle_message(&ev.room_id, &ev.sender, &ev.content, ev.event_id.as_str())
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn handle_membership(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: &RoomMemberEventContent,
        event_id: &str,
    ) -> Result<(), BridgeError> {
        let bot = &self.settings.bot;
        if target != bot
            && let Some(contact) = self.settings.ghosts.remote_of(target)
        {
            if content.membership == MembershipState::Invite {
                return self.ghost_invited(room, sender, target, &contact).await;
            }
            return Ok(());
        }
        if target != bot
            && let Some((key, portal)) = self.store.portal_by_room(room)?
        {
            return self
                .portal_membership(room, key, portal, target, &content.membership)
                .await;
        }
        match content.membership {
            MembershipState::Invite if target == bot => {
                if sender.server_name() != bot.server_name() {
                    info!(room = %room, "ignoring an invite from another server");
                    return Ok(());
                }
                self.matrix.join_room(bot, room).await?;
                info!(room = %room, "bot joined after an invite");
                if content.is_direct == Some(true) {
                    self.store.set_management_room(sender, room)?;
                    let text = "Hello! I am the interop bridge bot. This is your management room: \
                                say `help` for the list of commands.";
                    let html = "Hello! I am the interop bridge bot. This is your management room: \
                                say <code>help</code> for the list of commands.";
                    let content = RoomMessageEventContent::notice_html(text, html);
                    self.send_as_bot(room, &txn_for("welcome", event_id), &content)
                        .await?;
                }
                Ok(())
            }
            MembershipState::Leave | MembershipState::Ban => {
                let owner = self.store.management_room_owner(room)?;
                if let Some(owner) = owner.filter(|o| target == bot || target == o) {
                    self.store.remove_management_room(&owner)?;
                    info!(room = %room, "management room closed");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Where a message `sender` wrote in `room` goes: to the contact of a portal, to the bot
    /// (the sender's management room), or nowhere (the bot, a ghost, any other room).
    fn message_target(&self, room: &RoomId, sender: &UserId) -> Result<Target, BridgeError> {
        if self.settings.is_ours(sender) {
            return Ok(Target::Nowhere);
        }
        if let Some((key, portal)) = self.store.portal_by_room(room)? {
            return Ok(Target::Portal(key, portal));
        }
        if self.store.management_room_owner(room)?.as_deref() == Some(sender) {
            return Ok(Target::Bot);
        }
        Ok(Target::Nowhere)
    }

    async fn handle_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        content: &RoomMessageEventContent,
        event_id: &str,
    ) -> Result<(), BridgeError> {
        match self.message_target(room, sender)? {
            Target::Portal(key, portal) => {
                self.outbound_message(&key, &portal, sender, content, event_id)
                    .await
            }
            Target::Bot => match &content.msgtype {
                MessageType::Text(text) => {
                    self.bot_message(room, sender, &text.body, event_id).await
                }
                _ => Ok(()),
            },
            Target::Nowhere => Ok(()),
        }
    }

    /// An end-to-end encrypted event: decrypted as the room's bridge member (the portal's ghost,
    /// or the bot in a management room) and then handled as the message it holds. One the
    /// bridge cannot read (its key never came, or encryption is off) is told to its sender, in
    /// the portal or the management room, instead of vanishing; nothing goes to the contact.
    async fn handle_encrypted(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_id: &str,
        raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), BridgeError> {
        let target = self.message_target(room, sender)?;
        let member = match &target {
            Target::Portal(key, _) => match self.settings.ghosts.ghost_of(&key.contact) {
                Ok(ghost) => ghost,
                Err(_) => return Ok(()),
            },
            Target::Bot => self.settings.bot.clone(),
            Target::Nowhere => return Ok(()),
        };
        let why = match self.matrix.decrypt(&member, room, raw).await {
            Ok(plain) => return self.handle_decrypted(room, sender, event_id, &plain).await,
            Err(why) => why,
        };
        warn!(room = %room, event_id, reason = %why, "an encrypted message could not be read");
        match target {
            Target::Portal(key, portal) => {
                self.outbound_encrypted(&key, &portal, sender, event_id, &why)
                    .await
            }
            Target::Bot => {
                let text = format!("I could not read your message: {why}. {UNREADABLE_ADVICE}");
                let content = RoomMessageEventContent::notice_plain(text);
                self.send_as_bot(room, &txn_for("encrypted", event_id), &content)
                    .await
            }
            Target::Nowhere => Ok(()),
        }
    }

    /// A decrypted event, handled like the plain one; the envelope's sender and id stand (the
    /// decrypted copy carries the same).
    async fn handle_decrypted(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_id: &str,
        plain: &Raw<AnyTimelineEvent>,
    ) -> Result<(), BridgeError> {
        match plain.deserialize() {
            Ok(AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(ev),
            ))) => {
                self.handle_message(room, sender, &ev.content, event_id)
                    .await
            }
            Ok(AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::Reaction(
                MessageLikeEvent::Original(ev),
            ))) => {
                self.handle_reaction(room, sender, &ev.event_id, &ev.content.relates_to.event_id)
                    .await
            }
            Ok(other) => {
                debug!(room = %room, event_id, kind = %other.event_type(), "decrypted event of a kind not bridged");
                Ok(())
            }
            Err(error) => {
                warn!(room = %room, event_id, line = error.line(), column = error.column(), "malformed decrypted event skipped");
                Ok(())
            }
        }
    }

    /// A reaction `event` of `sender` to `target` in `room`: for a portal's user, to the contact.
    async fn handle_reaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        event: &ruma::EventId,
        target: &ruma::EventId,
    ) -> Result<(), BridgeError> {
        match self.message_target(room, sender)? {
            Target::Portal(key, portal) => {
                self.outbound_reaction(&key, &portal, sender, event, target)
                    .await
            }
            Target::Bot | Target::Nowhere => Ok(()),
        }
    }

    /// `sender` redacted `redacted` in `room`: for a portal's user, a retraction or a reaction
    /// taken back at the contact's.
    async fn handle_redaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        redaction: &ruma::EventId,
        redacted: &ruma::EventId,
    ) -> Result<(), BridgeError> {
        match self.message_target(room, sender)? {
            Target::Portal(key, portal) => {
                self.outbound_redaction(&key, &portal, sender, redaction, redacted)
                    .await
            }
            Target::Bot | Target::Nowhere => Ok(()),
        }
    }

    async fn send_as_bot(
        &self,
        room: &RoomId,
        txn_id: &OwnedTransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<(), BridgeError> {
        self.matrix
            .send_message(&self.settings.bot, room, txn_id, content)
            .await?;
        Ok(())
    }

    /// Tells `user` something in their management room, if they have one.
    async fn tell(&self, user: &UserId, txn_id: &OwnedTransactionId, reply: &commands::Reply) {
        let room = match self.store.management_room(user) {
            Ok(Some(room)) => room,
            Ok(None) => return,
            Err(error) => {
                warn!(%error, "cannot read the management room");
                return;
            }
        };
        let content = RoomMessageEventContent::notice_html(&reply.plain, &reply.html);
        if let Err(error) = self.send_as_bot(&room, txn_id, &content).await {
            warn!(user = %user, %error, "cannot tell the user");
        }
    }

    fn logins_lock(&self) -> std::sync::MutexGuard<'_, HashMap<RemoteUserId, Arc<logins::Login>>> {
        self.logins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn login_of_user(&self, user: &UserId) -> Option<Arc<logins::Login>> {
        self.logins_lock()
            .values()
            .find(|l| l.matrix_user == user)
            .cloned()
    }
}

/// Where a user's message goes (see `Bridge::message_target`).
enum Target {
    Portal(crate::ids::PortalKey, store::PortalRecord),
    Bot,
    Nowhere,
}

/// What a user whose encrypted message the bridge could not read can do.
pub(super) const UNREADABLE_ADVICE: &str = "Check that your client shares keys with unverified \
     devices (or verify the bridge's), then send it again.";

/// A transaction id derived from the event being answered, so a reprocessed event (a transaction
/// redelivered after a crash) sends nothing new: the homeserver deduplicates on it.
fn txn_for(purpose: &str, event_id: &str) -> OwnedTransactionId {
    format!("{purpose}.{event_id}").into()
}

/// The key a processed transaction is remembered by: its id and a digest of its events' ids
/// (of the raw JSON for an event without one), so a reused id with other events is not taken
/// for a redelivery.
fn transaction_key(txn_id: &str, events: &[Raw<AnyTimelineEvent>]) -> String {
    let ids: Vec<String> = events
        .iter()
        .map(|raw| {
            raw.get_field::<String>("event_id")
                .ok()
                .flatten()
                .unwrap_or_else(|| raw.json().get().to_owned())
        })
        .collect();
    let parts: Vec<&str> = ids.iter().map(String::as_str).collect();
    format!("{txn_id}.{}", derived_id(&parts))
}

/// A stable id derived from `parts` (hex SHA-1 of the parts joined with NUL bytes): the same
/// inputs give the same id after any restart, and the id reveals none of them.
fn derived_id(parts: &[&str]) -> String {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    crate::ids::hex(&hasher.finalize())
}

/// A transaction id for a notice that has no event to derive from (connection state).
fn fresh_txn(purpose: &str) -> OwnedTransactionId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{purpose}.{}.{n}", now_ms()).into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
