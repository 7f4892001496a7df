//! Linked identities: `link` and `unlink`, the logins started at boot, and the one task per
//! login that handles what its connection reports, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};

use ruma::{OwnedUserId, UserId};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::catch_up::{CatchingUp, MAX_HELD};
use super::{
    Bridge, BridgeError, LoginClient, NetworkError, RemoteEvent, RemoteEvents, fresh_txn, now_ms,
};
use crate::commands::Reply;
use crate::ids::RemoteUserId;
use crate::store::LoginRecord;

/// What an unencrypted message from a contact starts with in its portal.
pub(super) const UNENCRYPTED_MARKER: &str = "🔓 (sent without encryption) ";

/// How long [`Login::stop`] waits for the connection to close (its own grace for the server's
/// acknowledgements is 5 s).
const STOP_CLOSE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running login: the connection and what the core remembers about it in memory.
pub(super) struct Login {
    pub matrix_user: OwnedUserId,
    pub jid: RemoteUserId,
    pub client: Arc<dyn LoginClient>,
    /// The roster as last reported: contact → name.
    pub roster: StdMutex<HashMap<RemoteUserId, Option<String>>>,
    /// The contacts' inbound lanes.
    pub inbound: super::inbound::Lanes,
    /// Where the next catch-up from the server's archive starts, as messages finish.
    pub archive: super::catch_up::Watermark,
    /// When the message requests of the last hour were opened (see [`Login::may_open_request`]).
    requests: StdMutex<RequestWindow>,
    task: StdMutex<Option<JoinHandle<()>>>,
}

/// The message requests a login opened in the last hour, and whether its user was told that
/// one was dropped in this hour.
#[derive(Default)]
struct RequestWindow {
    opened: std::collections::VecDeque<std::time::Instant>,
    told_at: Option<std::time::Instant>,
}

/// How far back [`Login::may_open_request`] counts.
const REQUEST_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a new message request may be opened.
pub(super) enum RequestVerdict {
    Open,
    /// Over the limit; `tell`: the first refusal in this hour (the user hears of it once).
    Refuse {
        tell: bool,
    },
}

impl Login {
    /// Counts a new message request against `per_hour`: at most that many in any hour.
    /// Whether a new message request could be opened now (`may_open_request` without taking
    /// a place).
    pub(super) fn request_place_left(&self, per_hour: u32, now: std::time::Instant) -> bool {
        let window = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = window
            .opened
            .iter()
            .filter(|t| now.duration_since(**t) < REQUEST_WINDOW)
            .count();
        open < usize::try_from(per_hour).unwrap_or(usize::MAX)
    }

    pub(super) fn may_open_request(
        &self,
        per_hour: u32,
        now: std::time::Instant,
    ) -> RequestVerdict {
        let mut window = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while window
            .opened
            .front()
            .is_some_and(|t| now.duration_since(*t) >= REQUEST_WINDOW)
        {
            window.opened.pop_front();
        }
        if window.opened.len() < usize::try_from(per_hour).unwrap_or(usize::MAX) {
            window.opened.push_back(now);
            return RequestVerdict::Open;
        }
        let tell = window
            .told_at
            .is_none_or(|t| now.duration_since(t) >= REQUEST_WINDOW);
        if tell {
            window.told_at = Some(now);
        }
        RequestVerdict::Refuse { tell }
    }

    pub fn roster_name(&self, contact: &RemoteUserId) -> Option<Option<String>> {
        self.roster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(contact)
            .cloned()
    }

    /// Takes no more inbound messages, closes the connection (acknowledging what the lanes
    /// committed until then), ends the lanes, then the event task; each step is given a
    /// bounded time.
    pub async fn stop(&self) {
        self.inbound.close();
        if tokio::time::timeout(STOP_CLOSE, self.client.close())
            .await
            .is_err()
        {
            warn!(jid = %self.jid, "the connection did not close within {STOP_CLOSE:?}");
        }
        self.inbound.abort();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // The task ends when the connection's event channel closes; do not wait forever.
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// What `link` reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub jid: RemoteUserId,
    pub device: u32,
    pub fingerprint: String,
}

/// One login as `status` and `identities` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStatus {
    pub matrix_user: OwnedUserId,
    pub jid: RemoteUserId,
    pub running: bool,
    pub connected: bool,
    pub device: Option<(u32, String)>,
    pub portals: usize,
    pub blocked: usize,
}

impl LoginStatus {
    pub fn describe(&self) -> String {
        let state = match (self.running, self.connected) {
            (false, _) => "not running",
            (true, true) => "connected",
            (true, false) => "connecting",
        };
        let mut text = format!("{} → {}: {state}", self.matrix_user, self.jid);
        if let Some((device, fingerprint)) = &self.device {
            text.push_str(&format!(
                ", OMEMO device {device}, fingerprint {fingerprint}"
            ));
        }
        text.push_str(&format!(
            ", {} chats, {} blocked",
            self.portals, self.blocked
        ));
        text
    }
}

/// Why a link was refused; `Display` is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
}

impl From<crate::store::Error> for LinkError {
    fn from(e: crate::store::Error) -> Self {
        Self::Bridge(e.into())
    }
}

impl From<NetworkError> for LinkError {
    fn from(e: NetworkError) -> Self {
        Self::Refused(e.to_string())
    }
}

impl Bridge {
    /// Links `jid` to the local Matrix user `user`: registers the account first when asked,
    /// logs in (creating the OMEMO identity and publishing it), stores the login and keeps the
    /// connection running. Relinking the same pair replaces the password.
    pub async fn link(
        &self,
        user: &UserId,
        jid: &str,
        password: &str,
        register: bool,
    ) -> Result<LinkInfo, LinkError> {
        let _serial = self.link_lock.lock().await;
        if user.server_name() != self.settings.bot.server_name() || self.settings.is_ours(user) {
            return Err(LinkError::Refused(format!(
                "{user} is not a user of this homeserver"
            )));
        }
        let jid = normalise_jid(jid)?;
        self.network
            .may_link(jid.domain())
            .map_err(LinkError::Refused)?;
        if password.is_empty() {
            return Err(LinkError::Refused("the password is empty".into()));
        }
        if let Some(existing) = self.store.login(&jid)?
            && existing.matrix_user != user
        {
            return Err(LinkError::Refused(format!(
                "{jid} is already linked to another Matrix user"
            )));
        }
        if let Some(existing) = self.store.login_of(user)?
            && existing.jid != jid
        {
            return Err(LinkError::Refused(format!(
                "you already linked {}; say `unlink` first",
                existing.jid
            )));
        }
        if register {
            if !self.network.can_register() {
                return Err(LinkError::Refused(
                    "registration is disabled on this bridge (network.allow_register)".into(),
                ));
            }
            self.network.register(&jid, password).await?;
            info!(jid = %jid, "account registered");
        }
        let old = self.logins_lock().remove(&jid);
        if let Some(old) = old {
            old.stop().await;
        }
        let (client, events) = self.network.start(&jid, password, true).await?;
        let previous = self.store.login(&jid)?;
        let record = LoginRecord {
            matrix_user: user.to_owned(),
            jid: jid.clone(),
            password: password.to_owned(),
            space: previous.and_then(|p| p.space),
            linked_ms: now_ms(),
        };
        self.store.put_login(&record)?;
        self.flush().await.map_err(LinkError::Bridge)?;
        let (device, fingerprint) = client.device();
        self.run_login(&record, client, events);
        info!(user = %user, jid = %jid, device, "linked");
        Ok(LinkInfo {
            jid,
            device,
            fingerprint,
        })
    }

    /// Unlinks `user`'s account: closes the connection and deletes the login with its keys,
    /// portals' mappings and block list. Returns the JID that was linked.
    pub async fn unlink(&self, user: &UserId) -> Result<Option<RemoteUserId>, BridgeError> {
        let _serial = self.link_lock.lock().await;
        let Some(record) = self.store.login_of(user)? else {
            return Ok(None);
        };
        let login = self.logins_lock().remove(&record.jid);
        if let Some(login) = login {
            login.stop().await;
        }
        self.store.remove_login(&record.jid)?;
        self.flush().await?;
        info!(user = %user, jid = %record.jid, "unlinked");
        let reply = Reply::text(format!(
            "Unlinked {}: the connection is closed and its keys are deleted. Existing chats \
             stay as they are but no longer carry messages.",
            record.jid
        ));
        self.tell(user, &fresh_txn("unlinked"), &reply).await;
        Ok(Some(record.jid))
    }

    /// Every login (for the admin), or only `user`'s.
    pub fn statuses(&self, user: Option<&UserId>) -> Result<Vec<LoginStatus>, BridgeError> {
        let mut out = Vec::new();
        for record in self.store.logins()? {
            if user.is_some_and(|u| u != record.matrix_user) {
                continue;
            }
            let running = self.logins_lock().get(&record.jid).cloned();
            out.push(LoginStatus {
                portals: self.store.portals_of(&record.jid)?.len(),
                blocked: self.store.blocked_of(&record.jid)?.len(),
                matrix_user: record.matrix_user,
                jid: record.jid,
                running: running.is_some(),
                connected: running.as_ref().is_some_and(|l| l.client.connected()),
                device: running.map(|l| l.client.device()),
            });
        }
        Ok(out)
    }

    /// Starts every stored login without waiting for the connections.
    pub(super) async fn start_logins(&self) {
        let records = match self.store.logins() {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "cannot list the logins");
                return;
            }
        };
        for record in records {
            match self
                .network
                .start(&record.jid, &record.password, false)
                .await
            {
                Ok((client, events)) => self.run_login(&record, client, events),
                Err(error) => warn!(jid = %record.jid, %error, "cannot start the login"),
            }
        }
    }

    /// Registers the login and spawns its event task.
    fn run_login(&self, record: &LoginRecord, client: Arc<dyn LoginClient>, events: RemoteEvents) {
        let login = Arc::new(Login {
            matrix_user: record.matrix_user.clone(),
            jid: record.jid.clone(),
            client: client.clone(),
            roster: StdMutex::new(HashMap::new()),
            inbound: super::inbound::Lanes::default(),
            archive: super::catch_up::Watermark::new(self.store.clone(), record.jid.clone())
                .with_client(client),
            requests: StdMutex::default(),
            task: StdMutex::new(None),
        });
        let Some(bridge) = self.this.upgrade() else {
            return;
        };
        let task = tokio::spawn(bridge.login_events(login.clone(), events));
        *login
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        self.logins_lock().insert(record.jid.clone(), login);
    }

    /// Handles one login's events in order; a contact's messages go to that contact's inbound
    /// lane (`inbound.rs`), where each is finished — posted to Matrix, mapped, flushed,
    /// acknowledged — before the next of that contact.
    async fn login_events(self: Arc<Self>, login: Arc<Login>, mut events: RemoteEvents) {
        let mut was_down = false;
        // A catch-up under way, and the live messages held back until it ends (see
        // `catch_up.rs`): an archived message is older than every live one, and a contact's
        // messages are posted in the order they reach their lane.
        let mut catching_up: Option<CatchingUp> = None;
        let mut rounds = 0_u64;
        while let Some(event) = events.recv().await {
            match *event {
                RemoteEvent::Connected { resumed } => {
                    info!(jid = %login.jid, resumed, "login connected");
                    if !resumed {
                        // What an earlier session held was never acknowledged: the server
                        // has it for the next catch-up.
                        rounds += 1;
                        catching_up = self.start_catch_up(&login, rounds).map(|round| CatchingUp {
                            round,
                            held: VecDeque::new(),
                            overflowed: false,
                        });
                    }
                    if was_down {
                        was_down = false;
                        let reply =
                            Reply::text(format!("Reconnected: {} is online again.", login.jid));
                        self.tell(&login.matrix_user, &fresh_txn("reconnected"), &reply)
                            .await;
                    }
                }
                RemoteEvent::Disconnected { reason, retry_in } => {
                    warn!(jid = %login.jid, %reason, ?retry_in, "login disconnected");
                    let text = match retry_in {
                        Some(delay) if !was_down => format!(
                            "Disconnected: {} lost its connection ({reason}). Retrying in {} s; \
                             messages wait on the server meanwhile.",
                            login.jid,
                            delay.as_secs().max(1)
                        ),
                        Some(_) => continue,
                        None => format!(
                            "Login failed: {} cannot connect ({reason}) and will not retry. \
                             Link it again with `link {}` once the account works.",
                            login.jid, login.jid
                        ),
                    };
                    was_down = true;
                    self.tell(
                        &login.matrix_user,
                        &fresh_txn("disconnected"),
                        &Reply::text(text),
                    )
                    .await;
                }
                RemoteEvent::Ignored { ack } => {
                    if let Err(error) = ack.commit().await {
                        warn!(%error, "cannot acknowledge a stanza");
                    }
                }
                RemoteEvent::CaughtUp {
                    round,
                    fetched,
                    complete,
                    failed,
                } => {
                    let Some(ended) = catching_up.take_if(|c| c.round == round) else {
                        debug!(jid = %login.jid, round, "an earlier session's catch-up ended");
                        continue;
                    };
                    self.caught_up(&login, fetched, complete, failed).await;
                    for event in ended.held {
                        let event = login.archive.track(event);
                        self.to_lane(&login, event).await;
                    }
                }
                RemoteEvent::Contacts(updates) => {
                    let mut added = Vec::new();
                    {
                        let mut roster = login
                            .roster
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for update in updates {
                            if update.removed {
                                roster.remove(&update.contact);
                            } else {
                                if !roster.contains_key(&update.contact) {
                                    added.push(update.contact.clone());
                                }
                                roster.insert(update.contact, update.name);
                            }
                        }
                    }
                    self.prepare_ghosts(added);
                }
                RemoteEvent::SubscriptionRequest { contact, .. } => {
                    // A contact whose chat the user accepted is approved at once; others are
                    // answered when the user accepts their message request. In a task of its
                    // own: this task must keep reading events while the server answers.
                    debug!(jid = %login.jid, contact = %contact, "subscription request");
                    let key = crate::ids::PortalKey {
                        login: login.jid.clone(),
                        contact,
                    };
                    let accepted = matches!(
                        self.store.portal(&key),
                        Ok(Some(p)) if p.state == crate::store::PortalState::Accepted
                    );
                    if accepted {
                        let client = login.client.clone();
                        tokio::spawn(async move {
                            if let Err(error) = client.approve(&key.contact).await {
                                warn!(%error, "cannot approve a subscription request");
                            }
                        });
                    }
                }
                // A contact's message (or a notice about them): carried out in their lane.
                event @ (RemoteEvent::Message { .. }
                | RemoteEvent::SentElsewhere { .. }
                | RemoteEvent::Encrypted { .. }
                | RemoteEvent::PlainRefused { .. }
                | RemoteEvent::Undecryptable { .. }
                | RemoteEvent::IdentityChanged { .. }
                | RemoteEvent::Signals { .. }) => {
                    if let Some(catching) = catching_up.as_mut()
                        && catching.holds(&event)
                    {
                        catching.held.push_back(event);
                        if catching.held.len() >= MAX_HELD {
                            warn!(jid = %login.jid, "many live messages during a catch-up; they go on without waiting for it");
                            catching.overflowed = true;
                            for event in std::mem::take(&mut catching.held) {
                                let event = login.archive.track(event);
                                self.to_lane(&login, event).await;
                            }
                        }
                        continue;
                    }
                    let event = login.archive.track(event);
                    self.to_lane(&login, event).await
                }
                RemoteEvent::Presence {
                    contact,
                    availability,
                    status,
                } => self.presence_seen(&login, contact, availability, status),
            }
        }
        self.presence_login_ended(&login.jid);
        debug!(jid = %login.jid, "login event task ends");
    }
}

/// A bare JID as we store it: parsed, lower-cased (XMPP compares localparts and domains
/// case-insensitively), without a resource.
pub(super) fn normalise_jid(jid: &str) -> Result<RemoteUserId, LinkError> {
    RemoteUserId::parse(&jid.trim().to_lowercase())
        .map_err(|e| LinkError::Refused(format!("{jid:?} is not a bare JID: {e}")))
}
