//! One worker per room. The messages of a portal (to its contact) and of a management room (bot
//! commands) are carried out by that room's own task, in order, outside the transaction
//! handler: a slow XMPP server, a `link` waiting for a login or a send waiting for the server's
//! ack holds up that one room, never another user's.
//!
//! The handoff is durable without storing content (PRODUCT.md, "Durability rule"): the
//! transaction handler records each such event as a [`PendingEvent`] (room and event id),
//! flushes, answers the homeserver, and hands the worker the event it already has. The worker
//! removes the entry once the effect is durable. After a restart every remaining entry is
//! carried out again, in order, with the event refetched by id from the homeserver (which
//! holds it); the message map makes a repeat send nothing twice.
//!
//! Memory is bounded: a queue carries the event's JSON only for its first
//! [`MAX_QUEUED_WITH_CONTENT`] jobs; beyond that a job is an id, refetched when its turn comes.
//! A worker with nothing to do for [`IDLE`] ends; the next event starts a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ruma::events::{AnyMessageLikeEvent, AnyTimelineEvent, MessageLikeEvent};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Bridge, BridgeError, MatrixError, txn_for};
use crate::store::PendingEvent;

/// How long a worker waits for its next job before it ends.
const IDLE: Duration = Duration::from_secs(60);
/// Jobs beyond this many queued in one room carry no content (see the module docs).
const MAX_QUEUED_WITH_CONTENT: usize = 256;
/// The longest pause between two tries of a job whose login is not running.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// One recorded event for a room's worker.
pub(super) struct Job {
    /// Its [`PendingEvent`] entry, removed when the job is done.
    pub position: u64,
    pub event: OwnedEventId,
    /// The event as the transaction carried it; `None`: refetch it by id.
    pub raw: Option<Raw<AnyTimelineEvent>>,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    queued: Arc<AtomicUsize>,
}

/// The running workers, by room.
#[derive(Default)]
pub(super) struct Workers {
    rooms: std::sync::Mutex<HashMap<OwnedRoomId, Worker>>,
    /// Set at shutdown: no worker starts another job (its entry stays for the restart).
    stopping: std::sync::atomic::AtomicBool,
    /// How many jobs are being carried out now.
    busy: AtomicUsize,
}

impl Workers {
    /// Starts no more jobs and waits (at most `limit`) for those being carried out: a send the
    /// server has but has not confirmed yet is then confirmed and mapped before the connection
    /// closes, instead of being sent again (a duplicate for the contact) after the restart.
    /// Whether every job finished in time.
    pub(super) async fn drain(&self, limit: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self.busy.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedRoomId, Worker>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The event types a room worker carries out; every other event is handled in the transaction.
pub(super) fn is_worker_type(event_type: &str) -> bool {
    matches!(
        event_type,
        "m.room.message" | "m.room.encrypted" | "m.reaction" | "m.room.redaction"
    )
}

impl Bridge {
    /// Whether `room`'s messages (of senders other than the bot and the ghosts) go to a
    /// worker: `room` is a portal or a management room.
    pub(super) fn has_worker(&self, room: &RoomId) -> Result<bool, BridgeError> {
        Ok(self.store.portal_by_room(room)?.is_some()
            || self.store.management_room_owner(room)?.is_some())
    }

    /// Records each event for its room's worker (not durable until the next flush); returns
    /// the jobs to hand over once it is. On an error nothing stays recorded.
    pub(super) fn record(
        &self,
        events: WorkerEvents,
    ) -> Result<Vec<(OwnedRoomId, Job)>, BridgeError> {
        let mut jobs = Vec::with_capacity(events.len());
        for (room, event, raw) in events {
            let pending = PendingEvent {
                room: room.clone(),
                event: event.clone(),
            };
            match self.store.push_pending(&pending) {
                Ok(position) => jobs.push((
                    room,
                    Job {
                        position,
                        event,
                        raw: Some(raw),
                    },
                )),
                Err(error) => {
                    self.forget(&jobs);
                    return Err(error.into());
                }
            }
        }
        Ok(jobs)
    }

    /// Removes the entries of jobs that will not be handed over (best effort: after a restart a
    /// stray entry is carried out and deduplicated).
    pub(super) fn forget(&self, jobs: &[(OwnedRoomId, Job)]) {
        for (_, job) in jobs {
            let _ = self.store.remove_pending(job.position);
        }
    }

    /// Records `events` for their rooms' workers, flushes, and hands them over in order.
    pub(super) async fn record_and_dispatch(
        &self,
        events: WorkerEvents,
    ) -> Result<(), BridgeError> {
        let jobs = self.record(events)?;
        if let Err(error) = self.flush().await {
            self.forget(&jobs);
            return Err(error);
        }
        for (room, job) in jobs {
            self.dispatch(&room, job);
        }
        Ok(())
    }

    /// Queues `job` on `room`'s worker, starting one if there is none.
    pub(super) fn dispatch(&self, room: &RoomId, mut job: Job) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let mut rooms = self.workers.lock();
        let worker = rooms.entry(room.to_owned()).or_insert_with(|| {
            let (jobs, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let span = info_span!("room_worker", room = %room);
            tokio::spawn(
                Arc::clone(&this)
                    .run_worker(room.to_owned(), rx, Arc::clone(&queued))
                    .instrument(span),
            );
            Worker { jobs, queued }
        });
        if worker.queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED_WITH_CONTENT {
            job.raw = None;
        }
        if worker.jobs.send(job).is_err() {
            // Cannot happen: a worker only ends after removing itself under this lock.
            warn!(room = %room, "a room worker ended early; the event waits for the next start");
        }
    }

    async fn run_worker(
        self: Arc<Self>,
        room: OwnedRoomId,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        queued: Arc<AtomicUsize>,
    ) {
        loop {
            let job = match tokio::time::timeout(IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    let mut rooms = self.workers.lock();
                    if jobs.is_empty() {
                        rooms.remove(&room);
                        debug!("room worker idle, ending");
                        return;
                    }
                    continue;
                }
            };
            queued.fetch_sub(1, Ordering::SeqCst);
            // Counted busy before looking at `stopping` (which `drain` sets before it counts),
            // so a job is either seen by the drain or never started.
            self.workers.busy.fetch_add(1, Ordering::SeqCst);
            if self.workers.stopping() {
                // Shutting down: the job's entry stays, and the restart carries it out.
                self.workers.busy.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            self.carry_out(&room, job).await;
            self.workers.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Carries out one recorded event, then removes its entry once the effect is durable.
    async fn carry_out(&self, room: &RoomId, job: Job) {
        let raw = match job.raw {
            Some(raw) => raw,
            None => match self.refetch_until_answered(room, &job.event).await {
                Ok(raw) => raw,
                Err(error) => {
                    self.tell_unreadable(room, &job.event, &error).await;
                    self.done(job.position).await;
                    return;
                }
            },
        };
        if super::carbons::posted_as_user(&raw) {
            debug!(event = %job.event, "the bridge's own post as the user (double puppeting); not sent back");
            return self.done(job.position).await;
        }
        let event = match raw.deserialize() {
            Ok(AnyTimelineEvent::MessageLike(event)) => event,
            Ok(_) => return self.done(job.position).await,
            Err(error) => {
                warn!(event = %job.event, line = error.line(), column = error.column(), "malformed event skipped");
                return self.done(job.position).await;
            }
        };
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut waiting = Waited::default();
        loop {
            if !self.wait_for_login(room, &job.event, &mut waiting).await {
                break;
            }
            let handle = async {
                match &event {
                    AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(ev)) => {
                        self.handle_message(
                            &ev.room_id,
                            &ev.sender,
                            &ev.content,
                            ev.event_id.as_str(),
                        )
                        .await
                    }
                    AnyMessageLikeEvent::RoomEncrypted(MessageLikeEvent::Original(ev)) => {
                        self.handle_encrypted(&ev.room_id, &ev.sender, ev.event_id.as_str(), &raw)
                            .await
                    }
                    AnyMessageLikeEvent::Reaction(MessageLikeEvent::Original(ev)) => {
                        self.handle_reaction(
                            &ev.room_id,
                            &ev.sender,
                            &ev.event_id,
                            &ev.content.relates_to.event_id,
                        )
                        .await
                    }
                    AnyMessageLikeEvent::RoomRedaction(redaction) => match redacted_by(&raw) {
                        Some(redacted) => {
                            self.handle_redaction(
                                redaction.room_id(),
                                redaction.sender(),
                                redaction.event_id(),
                                &redacted,
                            )
                            .await
                        }
                        None => Ok(()),
                    },
                    _ => Ok(()),
                }
            };
            tokio::pin!(handle);
            // A send waits for the server's confirmation however long it takes (the stanza is
            // queued in the stream and goes out after a reconnect): past the send timeout the
            // user is told it is waiting, once.
            let patience = self.settings.send_timeout.saturating_sub(started.elapsed());
            let result = if waiting.told {
                handle.await
            } else {
                tokio::select! {
                    result = &mut handle => result,
                    () = tokio::time::sleep(patience) => {
                        self.tell_waiting_in(room, &job.event, Waiting::Unconfirmed, &mut waiting).await;
                        handle.await
                    }
                }
            };
            match result {
                // The login stopped between the wait and the send (a shutdown, say): keep the
                // event and try again; if the process ends first, the restart carries it out.
                Err(BridgeError::Network(super::NetworkError::NotConnected)) => {
                    if self.workers.stopping() {
                        // Its entry stays: the restart sends it.
                        debug!(event = %job.event, "shutting down; the event waits for the restart");
                        return;
                    }
                    debug!(event = %job.event, "the login is not connected; the event waits");
                    if !waiting.told && started.elapsed() >= self.settings.send_timeout {
                        self.tell_waiting_in(room, &job.event, Waiting::NotConnected, &mut waiting)
                            .await;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(error) => {
                    warn!(event = %job.event, %error, "event not handled");
                    break;
                }
                Ok(()) => {
                    if let Some(notice) = &waiting.notice {
                        self.tell_went_out(room, &job.event, notice, started.elapsed())
                            .await;
                    }
                    break;
                }
            }
        }
        self.done(job.position).await;
    }

    /// The "waiting" notice of `event` becomes "went out" (an edit), once it has.
    async fn tell_went_out(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
        notice: &ruma::EventId,
        waited: Duration,
    ) {
        let Ok(Some((key, portal))) = self.store.portal_by_room(room) else {
            return;
        };
        let Ok(ghost) = self.settings.ghosts.ghost_of(&key.contact) else {
            return;
        };
        let content = ruma::events::room::message::RoomMessageEventContent::notice_plain(format!(
            "✅ Your message to {} went out (it waited {} s).",
            key.contact,
            waited.as_secs().max(1)
        ));
        let Ok(edit) = super::messages::replacement(&content, notice) else {
            return;
        };
        let txn = txn_for("went-out", event.as_str());
        if let Err(error) = self
            .matrix
            .send_event(&ghost, &portal.room, "m.room.message", &txn, &edit)
            .await
        {
            warn!(portal = %key, %error, "cannot tell the user a waiting message went out");
        }
    }

    /// Removes a finished job's entry after making its effects durable. A failed flush leaves
    /// the entry, so the event is carried out again (and deduplicated) after a restart.
    async fn done(&self, position: u64) {
        if let Err(error) = self.flush().await {
            warn!(%error, "flush failed; the event is carried out again after a restart");
            return;
        }
        if let Err(error) = self.store.remove_pending(position) {
            warn!(%error, "cannot remove a pending event; it is deduplicated after a restart");
        }
    }

    /// [`refetch`](Self::refetch), tried again with backoff while the homeserver fails
    /// (unreachable, 5xx, 429), so a later event of the room never overtakes this one; the
    /// error when the homeserver says it will not give the event (gone, or not visible to us).
    async fn refetch_until_answered(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.refetch(room, event).await {
                Ok(raw) => return Ok(raw),
                Err(error) if error.is_permanent() => {
                    warn!(event = %event, %error, "a recorded event is gone; dropping it");
                    return Err(error);
                }
                Err(error) => {
                    warn!(event = %event, %error, "cannot refetch a recorded event yet; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// The event by id, as a member of `room` sees it: the portal's ghost, else the bot.
    async fn refetch(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        let member: OwnedUserId = match self.store.portal_by_room(room) {
            Ok(Some((key, _))) => self
                .settings
                .ghosts
                .ghost_of(&key.contact)
                .unwrap_or_else(|_| self.settings.bot.clone()),
            _ => self.settings.bot.clone(),
        };
        self.matrix.room_event(&member, room, event).await
    }

    /// In a portal whose login is linked but not running (it failed to start, or the bridge is
    /// still starting it), waits until it runs, telling the user once after
    /// `network.send_timeout_secs` that the message is waiting. An unlinked login does not wait:
    /// the message is then reported as not delivered.
    /// Returns whether to go on with the event (`false`: it was reported and is done).
    async fn wait_for_login(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
        waiting: &mut Waited,
    ) -> bool {
        let Ok(Some((key, portal))) = self.store.portal_by_room(room) else {
            return true;
        };
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            if self.logins_lock().contains_key(&key.login) {
                if waiting.told {
                    info!(portal = %key, "the login is running again; sending what waited");
                }
                return true;
            }
            if !matches!(self.store.login(&key.login), Ok(Some(_))) {
                // Unlinked: nothing will ever send it. Said in the portal, then the job ends.
                let why = "your XMPP account is no longer linked";
                if let Err(error) = self
                    .report_failure(&key, &portal, event.as_str(), why)
                    .await
                {
                    warn!(portal = %key, %error, "cannot tell the user a message was not sent");
                }
                return false;
            }
            if !waiting.told && started.elapsed() >= self.settings.send_timeout {
                self.tell_waiting_in(room, event, Waiting::NotConnected, waiting)
                    .await;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Carries out, in order, every event recorded before a restart.
    pub(super) fn resume_pending(&self) -> Result<(), BridgeError> {
        let pending = self.store.pending_events()?;
        if !pending.is_empty() {
            info!(
                count = pending.len(),
                "resuming events recorded before the restart"
            );
        }
        for (position, entry) in pending {
            let job = Job {
                position,
                event: entry.event,
                raw: None,
            };
            self.dispatch(&entry.room, job);
        }
        Ok(())
    }

    /// Tells the portal's user, in the management room, that a message recorded before a
    /// restart could not be read back and so did not go out. Nothing for other rooms.
    async fn tell_unreadable(&self, room: &RoomId, event: &ruma::EventId, error: &MatrixError) {
        let Ok(Some((key, _))) = self.store.portal_by_room(room) else {
            return;
        };
        let Ok(Some(login)) = self.store.login(&key.login) else {
            return;
        };
        let reply = crate::commands::Reply::text(format!(
            "⚠️ A message you sent to {} could not be read back from the homeserver after a \
             restart ({error}), so it was not delivered.",
            key.contact
        ));
        self.tell(
            &login.matrix_user,
            &txn_for("unreadable", event.as_str()),
            &reply,
        )
        .await;
    }

    /// "Your message is waiting" in the portal `room`, once per event (the transaction id is
    /// derived from it). Failures are logged: the message itself still waits.
    async fn tell_waiting_in(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
        why: Waiting,
        waiting: &mut Waited,
    ) {
        waiting.told = true;
        let Ok(Some((key, portal))) = self.store.portal_by_room(room) else {
            return;
        };
        let Ok(ghost) = self.settings.ghosts.ghost_of(&key.contact) else {
            return;
        };
        let content = ruma::events::room::message::RoomMessageEventContent::notice_plain(format!(
            "⏳ Your message to {} is waiting: {}. It goes out as soon as {}; nothing needs to be \
             done.",
            key.contact,
            match why {
                Waiting::NotConnected => "your XMPP account is not connected right now",
                Waiting::Unconfirmed => "your XMPP server has not confirmed it yet",
            },
            match why {
                Waiting::NotConnected => "it is",
                Waiting::Unconfirmed => "the server answers",
            },
        ));
        let txn = txn_for("waiting", event.as_str());
        match self
            .matrix
            .send_message(&ghost, &portal.room, &txn, &content)
            .await
        {
            Ok(notice) => waiting.notice = Some(notice),
            Err(error) => {
                warn!(portal = %key, %error, "cannot tell the user a message is waiting")
            }
        }
    }
}

/// Whether the user was told a message is waiting, and the notice that said it.
#[derive(Default)]
struct Waited {
    told: bool,
    notice: Option<OwnedEventId>,
}

/// Why a message waits, as the "waiting" notice says it.
#[derive(Clone, Copy)]
enum Waiting {
    /// The login is not running or not connected.
    NotConnected,
    /// Sent, and the server has not acknowledged it yet (it is slow, or frozen).
    Unconfirmed,
}

/// A transaction's events for the workers: room, event id, the event.
pub(super) type WorkerEvents = Vec<(OwnedRoomId, OwnedEventId, Raw<AnyTimelineEvent>)>;

impl Bridge {
    /// Whether transaction `txn_id` skips a number after the previous one. Synapse numbers an
    /// appservice's transactions 1, 2, 3, … but its recoverer can declare the appservice
    /// recovered while a transaction stored meanwhile is still unsent; that one arrives only
    /// at the next recovery, after later ones (seen in the SIGKILL e2e test). A gap is the
    /// sign; a smaller number (the homeserver restarted) is not one.
    pub(super) fn txn_gap(&self, txn_id: &str) -> bool {
        let Ok(id) = txn_id.parse::<u64>() else {
            return false;
        };
        let mut last = self
            .last_txn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gap = last.is_some_and(|l| id > l.saturating_add(1));
        *last = Some(id);
        gap
    }

    /// After a gap: for each portal in `events`, the user's messages of the room that precede
    /// this transaction's first one and were never sent are put before it, so the contact gets
    /// them in order (the missing transaction, when it comes, then changes nothing).
    pub(super) async fn fill_gaps(&self, events: WorkerEvents) -> WorkerEvents {
        let mut filled = WorkerEvents::with_capacity(events.len());
        let mut seen_rooms = std::collections::HashSet::new();
        for (room, event, raw) in events {
            if seen_rooms.insert(room.clone()) {
                for (earlier, earlier_raw) in self.unsent_before(&room, &event).await {
                    filled.push((room.clone(), earlier, earlier_raw));
                }
            }
            filled.push((room, event, raw));
        }
        filled
    }

    /// The portal user's messages in the newest page of `room` before `event`, not yet sent.
    async fn unsent_before(
        &self,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Vec<(OwnedEventId, Raw<AnyTimelineEvent>)> {
        let Ok(Some((key, _))) = self.store.portal_by_room(room) else {
            return Vec::new();
        };
        let (Ok(ghost), Ok(Some(login))) = (
            self.settings.ghosts.ghost_of(&key.contact),
            self.store.login(&key.login),
        ) else {
            return Vec::new();
        };
        let page = match self
            .matrix
            .recent_events(&ghost, room, super::messages::BACKLOG_EVENTS)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                warn!(portal = %key, %error, "cannot read the room after a transaction gap");
                return Vec::new();
            }
        };
        let mut unsent = Vec::new();
        for raw in page {
            let field = |name: &str| raw.get_field::<String>(name).ok().flatten();
            let (Some(id), Some(sender), Some(kind)) =
                (field("event_id"), field("sender"), field("type"))
            else {
                continue;
            };
            if id == event.as_str() {
                break;
            }
            let Ok(id) = OwnedEventId::try_from(id) else {
                continue;
            };
            if is_worker_type(&kind)
                && sender == login.matrix_user.as_str()
                && matches!(self.store.remote_of(&id), Ok(None))
            {
                unsent.push((id, raw));
            }
        }
        if !unsent.is_empty() {
            info!(portal = %key, count = unsent.len(), "a transaction gap: sending the missing messages first");
        }
        unsent
    }
}

impl MatrixError {
    /// A refusal that asking again will not change: a 4xx other than 429 / `M_LIMIT_EXCEEDED`.
    pub(super) fn is_permanent(&self) -> bool {
        match self {
            MatrixError::Api {
                status, errcode, ..
            } => (400..500).contains(status) && *status != 429 && errcode != "M_LIMIT_EXCEEDED",
            _ => false,
        }
    }
}

/// The event a redaction redacts: `redacts` at the top level (room versions before 11) or in
/// the content (11 on).
fn redacted_by(raw: &Raw<AnyTimelineEvent>) -> Option<ruma::OwnedEventId> {
    raw.get_field::<ruma::OwnedEventId>("redacts")
        .ok()
        .flatten()
        .or_else(|| {
            raw.get_field::<serde_json::Value>("content")
                .ok()
                .flatten()?
                .get("redacts")?
                .as_str()
                .and_then(|r| ruma::OwnedEventId::try_from(r).ok())
        })
}
