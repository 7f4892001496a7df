//! Inbound lanes: one task per (login, contact) that carries out that contact's messages in
//! order — decrypt, post to Matrix, map, flush, acknowledge — while the login's event task goes
//! on with the next stanza. A contact whose messages wait (the homeserver retrying, a room the
//! ghost was kicked from) holds up only that contact.
//!
//! A login's lanes together hold at most [`WINDOW`] messages; the event task waits for a free
//! place before it hands over the next one. That wait is the only one between the two, and it
//! cannot close a cycle: a lane never waits for the event task, the connection or an outbound
//! send (a message's acknowledgement takes no channel slot), so places are freed whatever the
//! event task is doing.
//!
//! The directions of a portal are separate lanes (this one and the room worker of
//! `workers.rs`): a send waits for the server's acknowledgement, which arrives on the same
//! stream behind the inbound stanzas before it; if those stanzas waited behind the send, the
//! window would fill and neither would ever move.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use super::logins::{Login, UNENCRYPTED_MARKER};
use super::{Bridge, RemoteEvent};
use crate::ids::{PortalKey, RemoteUserId};

/// How many inbound messages one login's lanes hold at most (memory stays bounded whatever the
/// server sends).
pub(super) const WINDOW: usize = 64;
/// How long a lane waits for its next message before it ends.
const IDLE: Duration = Duration::from_secs(60);

struct Job {
    event: RemoteEvent,
    _place: OwnedSemaphorePermit,
}

struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    task: AbortHandle,
}

/// A login's inbound lanes, by contact.
pub(super) struct Lanes {
    window: Arc<Semaphore>,
    lanes: std::sync::Mutex<HashMap<RemoteUserId, Lane>>,
}

impl Default for Lanes {
    fn default() -> Self {
        Self {
            window: Arc::new(Semaphore::new(WINDOW)),
            lanes: std::sync::Mutex::default(),
        }
    }
}

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RemoteUserId, Lane>> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many messages the lanes hold (queued or being handled).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        WINDOW - self.window.available_permits()
    }

    /// Takes no more messages (the event task drops them unacknowledged).
    pub fn close(&self) {
        self.window.close();
    }

    /// Ends every lane now. What they held stays unacknowledged, and the server delivers it
    /// again in the next session (deduplicated by the message map).
    pub fn abort(&self) {
        self.window.close();
        for (_, lane) in self.lock().drain() {
            lane.task.abort();
        }
    }
}

/// The contact an inbound event belongs to, if it goes to a lane.
fn lane_of(event: &RemoteEvent) -> Option<&RemoteUserId> {
    match event {
        RemoteEvent::Message { contact, .. }
        | RemoteEvent::SentElsewhere { contact, .. }
        | RemoteEvent::Encrypted { contact, .. }
        | RemoteEvent::PlainRefused { contact, .. }
        | RemoteEvent::Undecryptable { contact, .. }
        | RemoteEvent::IdentityChanged { contact, .. }
        | RemoteEvent::Signals { contact, .. } => Some(contact),
        _ => None,
    }
}

impl Bridge {
    /// How many inbound messages all logins' lanes hold.
    #[cfg(test)]
    pub(super) fn inbound_in_flight(&self) -> usize {
        self.logins_lock()
            .values()
            .map(|login| login.inbound.in_flight())
            .sum::<usize>()
            + self.commits.waiting()
    }

    /// Hands `event` to its contact's lane, waiting for a place in the window.
    pub(super) async fn to_lane(&self, login: &Arc<Login>, event: RemoteEvent) {
        let Some(contact) = lane_of(&event).cloned() else {
            debug!("not a contact's event; no lane for it");
            return;
        };
        let Ok(place) = login.inbound.window.clone().acquire_owned().await else {
            // The login is stopping: the stanza stays unacknowledged.
            return;
        };
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let mut lanes = login.inbound.lock();
        let lane = lanes.entry(contact.clone()).or_insert_with(|| {
            let (jobs, rx) = mpsc::unbounded_channel();
            let span = info_span!("inbound_lane", jid = %login.jid, contact = %contact);
            let task = tokio::spawn(
                this.run_lane(login.clone(), contact.clone(), rx)
                    .instrument(span),
            );
            Lane {
                jobs,
                task: task.abort_handle(),
            }
        });
        let job = Job {
            event,
            _place: place,
        };
        debug!(jid = %login.jid, contact = %contact, "a message is waiting in its contact's lane");
        if lane.jobs.send(job).is_err() {
            // Cannot happen: a lane ends only after removing itself under this lock.
            warn!(contact = %contact, "an inbound lane ended early; the message comes again later");
        }
    }

    async fn run_lane(
        self: Arc<Self>,
        login: Arc<Login>,
        contact: RemoteUserId,
        mut jobs: mpsc::UnboundedReceiver<Job>,
    ) {
        loop {
            let job = match tokio::time::timeout(IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    let mut lanes = login.inbound.lock();
                    if jobs.is_empty() {
                        lanes.remove(&contact);
                        debug!("inbound lane idle, ending");
                        return;
                    }
                    continue;
                }
            };
            match job.event {
                RemoteEvent::Encrypted { contact, message } => {
                    if self.bridged_before(&login, &contact, message.server_id().as_deref()) {
                        // A redelivered or archived copy: its message keys are used up, and
                        // decrypting it would only fail.
                        debug!("a message bridged before dropped unread");
                        message.discard();
                        continue;
                    }
                    if !message.sent_by_user() && self.turned_away(&login, &contact).await {
                        // Unread: a stranger cannot make the bridge use up prekeys or store
                        // sessions and identity keys beyond what the user takes.
                        message.discard();
                        continue;
                    }
                    for event in message.decrypt().await {
                        self.carry_out_inbound(&login, event).await;
                    }
                }
                event => self.carry_out_inbound(&login, event).await,
            }
        }
    }

    /// Whether the message our server stamped `server_id` is in the message map as shown
    /// (not as a placeholder, which its decryption may still replace). A store error reads as
    /// "no": the message is decrypted, and deduplicated after.
    fn bridged_before(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        server_id: Option<&str>,
    ) -> bool {
        let Some(server_id) = server_id else {
            return false;
        };
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        matches!(
            self.store.event_of(&key, &super::messages::server_key(server_id)),
            Ok(Some(seen)) if !seen.placeholder
        )
    }

    /// Whether `contact`'s message would open no portal (a stranger under `roster-only`, or
    /// over the hour's request limit): then it is dropped before it is decrypted. A store
    /// error reads as "no": the message is decrypted and judged as before.
    async fn turned_away(&self, login: &Login, contact: &RemoteUserId) -> bool {
        if login.roster_name(contact).is_some() {
            return false;
        }
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        if !matches!(self.store.portal(&key), Ok(None)) {
            return false;
        }
        let policy = self.settings.requests;
        let refused = policy.roster_only
            || (!login.request_place_left(policy.per_hour, std::time::Instant::now())
                // Takes no place (there is none); tells the user once an hour.
                && !self.may_open_request(login, &key).await);
        if refused {
            info!(portal = %key, "a stranger's message dropped unread (no request can be opened)");
        }
        refused
    }

    /// One decrypted (or refused, or undecryptable) message of a contact, or a notice about
    /// them; finished, acknowledged or deliberately left unacknowledged, before the next.
    async fn carry_out_inbound(&self, login: &Login, event: RemoteEvent) {
        match event {
            RemoteEvent::Message {
                contact,
                id,
                server_id,
                body,
                nick,
                client,
                oob_url,
                encrypted,
                relations,
                ack,
            } => {
                let file = crate::convert::file_link(&body, oob_url.as_deref(), encrypted);
                let body = if encrypted {
                    body
                } else {
                    format!("{UNENCRYPTED_MARKER}{body}")
                };
                let ids = super::messages::InboundIds {
                    id,
                    server_id,
                    client,
                };
                let text = super::messages::InboundText {
                    body,
                    nick,
                    relations,
                    file,
                };
                self.inbound_message(login, contact, ids, text, ack).await;
            }
            RemoteEvent::SentElsewhere {
                contact,
                id,
                body,
                ack,
            } => self.sent_elsewhere(login, contact, id, body, ack).await,
            RemoteEvent::PlainRefused { contact, ack } => {
                self.plain_refused(login, &contact).await;
                if let Err(error) = ack.commit().await {
                    warn!(jid = %login.jid, %error, "cannot acknowledge a refused message");
                }
            }
            RemoteEvent::Undecryptable {
                contact,
                id,
                server_id,
                duplicate,
                reason,
                ack,
            } => {
                let ids = super::messages::InboundIds {
                    id,
                    server_id,
                    client: None,
                };
                self.inbound_undecryptable(login, contact, ids, duplicate, &reason, ack)
                    .await;
            }
            RemoteEvent::IdentityChanged {
                contact,
                device,
                fingerprint,
                trusted,
                new_device,
            } => {
                self.identity_changed(login, &contact, device, &fingerprint, trusted, new_device)
                    .await;
            }
            RemoteEvent::Signals {
                contact,
                signals,
                ack,
            } => {
                self.inbound_signals(login, contact, signals, ack).await;
            }
            RemoteEvent::Ignored { ack } => {
                if let Err(error) = ack.commit().await {
                    warn!(%error, "cannot acknowledge a stanza");
                }
            }
            _ => debug!("not an inbound message; ignored in a lane"),
        }
    }
}
