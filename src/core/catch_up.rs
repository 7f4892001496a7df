//! Catch-up after downtime: after every new session (at start too) a login asks its server's
//! archive (XEP-0313, through [`LoginClient::catch_up`](super::LoginClient::catch_up)) for
//! what came after the last message the bridge finished, and those messages take the inbound
//! path a live one takes (lanes, dedupe by the message map, blocks and declined requests).
//!
//! **Where it starts** is the login's archive position (`ArchiveStore`): the archive id of a
//! message such that it and every message before it in the archive are finished (posted,
//! mapped, flushed, committed, acknowledged; or dropped on purpose). Lanes finish messages out
//! of order, so the [`Watermark`] keeps this session's messages in archive order — archived
//! ones first, in the order they came, then the live ones — and moves the position over the
//! finished prefix only, writing it (flushed) right after the commit that completes it. Until
//! the catch-up has ended ([`RemoteEvent::CaughtUp`]) only archived messages can move it, since
//! more archived ones (older than every live one) may still come; live messages arriving
//! meanwhile are fine to interleave. A crash between a commit and the write only makes the next
//! catch-up fetch again what the message map then drops.
//!
//! A login without a position (just linked) does not catch up, which would post the account's
//! whole history: its position becomes the time of that first connection, which the next
//! session reads the archive from if no message moved it meanwhile.
//!
//! Live messages of a session wait in the login task until its catch-up has ended
//! ([`CatchingUp`]): a contact's lane posts in arrival order, and an archived message is older
//! than every live one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use tracing::{debug, info, warn};

use super::logins::Login;
use super::{Ack, Bridge, CatchUpFrom, Encrypted, LoginClient, NetworkError, RemoteEvent};
use crate::commands::Reply;
use crate::ids::RemoteUserId;
use crate::store::Store;

/// At most this many messages of a session are followed; past it the session moves the
/// position no further (the next session catches up from where it stopped).
const MAX_TRACKED: usize = 4096;

struct Entry {
    seq: u64,
    id: String,
    archived: bool,
    done: bool,
}

#[derive(Default)]
struct Marks {
    entries: VecDeque<Entry>,
    /// Where the next archived entry goes while catching up (before every live one).
    archived_end: usize,
    catching_up: bool,
    /// This session moves the position no further (a failed catch-up, too many messages).
    frozen: bool,
    next_seq: u64,
    /// The login keeps the prekeys decryptions use up until the archived messages of the
    /// catch-up are all finished ([`LoginClient::hold_used_prekeys`]).
    prekeys_held: bool,
}

impl Marks {
    /// Takes the finished prefix off; the id to store, if it moved.
    fn advance(&mut self) -> Option<String> {
        let mut last = None;
        while !self.frozen
            && let Some(front) = self.entries.front()
            && front.done
            && (front.archived || !self.catching_up)
        {
            let entry = self.entries.pop_front().expect("front exists");
            self.archived_end = self.archived_end.saturating_sub(1);
            last = Some(entry.id);
        }
        last
    }
}

/// One login's archive position as this session's messages finish (see the module docs).
#[derive(Clone)]
pub(super) struct Watermark {
    marks: Arc<StdMutex<Marks>>,
    store: Arc<dyn Store>,
    login: RemoteUserId,
    client: Option<Arc<dyn LoginClient>>,
}

impl Watermark {
    pub fn new(store: Arc<dyn Store>, login: RemoteUserId) -> Self {
        Self {
            marks: Arc::default(),
            store,
            login,
            client: None,
        }
    }

    /// The login whose prekeys are held during a catch-up.
    pub fn with_client(mut self, client: Arc<dyn LoginClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// Holds the prekeys decryptions use up until this catch-up's archived messages are all
    /// finished (XEP-0384: PreKey messages read back from the archive may share a prekey).
    fn hold_prekeys(&self) {
        if let Some(client) = &self.client {
            self.lock().prekeys_held = true;
            client.hold_used_prekeys();
        }
    }

    /// Releases the held prekeys once no archived message is left unfinished (or the session
    /// gave up following its messages).
    fn release_prekeys_if_done(&self) {
        let release = {
            let mut marks = self.lock();
            // Checked first: the scan below runs only while prekeys are held.
            let release = marks.prekeys_held
                && (marks.frozen
                    || (!marks.catching_up
                        && !marks.entries.iter().any(|e| e.archived && !e.done)));
            if release {
                marks.prekeys_held = false;
            }
            release
        };
        if let (true, Some(client)) = (release, self.client.clone()) {
            let login = self.login.clone();
            tokio::spawn(async move {
                if let Err(error) = client.release_used_prekeys().await {
                    warn!(jid = %login, %error, "cannot remove the prekeys used during the catch-up");
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session: the last one's messages no longer count (what of them was not finished
    /// comes again, from the archive or redelivered).
    fn reset(&self, catching_up: bool) {
        {
            let mut marks = self.lock();
            let (next_seq, prekeys_held) = (marks.next_seq, marks.prekeys_held);
            *marks = Marks {
                catching_up,
                next_seq,
                prekeys_held,
                ..Marks::default()
            };
        }
        self.release_prekeys_if_done();
    }

    fn freeze(&self) {
        self.lock().frozen = true;
        self.release_prekeys_if_done();
    }

    fn register(&self, id: String, archived: bool) -> Option<Mark> {
        let mut marks = self.lock();
        if marks.frozen {
            return None;
        }
        if marks.entries.len() >= MAX_TRACKED {
            warn!(jid = %self.login, "too many unfinished messages; the archive position waits for the next session");
            marks.frozen = true;
            return None;
        }
        let seq = marks.next_seq;
        marks.next_seq += 1;
        let entry = Entry {
            seq,
            id,
            archived,
            done: false,
        };
        if marks.catching_up && archived {
            let at = marks.archived_end;
            marks.entries.insert(at, entry);
            marks.archived_end += 1;
        } else {
            marks.entries.push_back(entry);
        }
        Some(Mark {
            watermark: self.clone(),
            seq,
        })
    }

    /// Writes the position if finished messages moved it, not flushed: the next message's
    /// flush (or sled's own, or the one at shutdown) makes it durable. A position lost in a
    /// crash is an older one, which only makes the next catch-up fetch more (deduplicated by
    /// the message map); it can never be ahead of what is durable, since it is written after
    /// the message's flush.
    async fn store_advance(&self, advanced: Option<String>) {
        let Some(id) = advanced else {
            return;
        };
        match self.store.set_archive_position(&self.login, &id) {
            Ok(()) => debug!(jid = %self.login, "archive position moved"),
            Err(error) => warn!(jid = %self.login, %error, "cannot store the archive position"),
        }
    }

    /// Follows `event` if it carries a server id: its acknowledgement (or, for an encrypted
    /// message, the one of what it decrypts to) then finishes it here.
    pub fn track(&self, event: RemoteEvent) -> RemoteEvent {
        match event {
            RemoteEvent::Encrypted { contact, message } => {
                let mark = message
                    .server_id()
                    .and_then(|id| self.register(id, message.archived()));
                let message = match mark {
                    Some(mark) => Box::new(Marked {
                        inner: message,
                        mark,
                    }) as Box<dyn Encrypted>,
                    None => message,
                };
                RemoteEvent::Encrypted { contact, message }
            }
            RemoteEvent::Message {
                server_id: Some(ref id),
                ..
            }
            | RemoteEvent::Undecryptable {
                server_id: Some(ref id),
                ..
            } => match self.register(id.clone(), false) {
                Some(mark) => attach(event, mark),
                None => event,
            },
            other => other,
        }
    }
}

/// One followed message; finished when its acknowledgement is committed.
struct Mark {
    watermark: Watermark,
    seq: u64,
}

impl Mark {
    async fn finish(self) {
        let advanced = {
            let mut marks = self.watermark.lock();
            if let Some(entry) = marks.entries.iter_mut().find(|e| e.seq == self.seq) {
                entry.done = true;
            }
            marks.advance()
        };
        self.watermark.store_advance(advanced).await;
        self.watermark.release_prekeys_if_done();
    }
}

/// The acknowledgement `event` carries, if any.
fn ack_of(event: &mut RemoteEvent) -> Option<&mut Box<dyn Ack>> {
    match event {
        RemoteEvent::Message { ack, .. }
        | RemoteEvent::SentElsewhere { ack, .. }
        | RemoteEvent::Undecryptable { ack, .. }
        | RemoteEvent::PlainRefused { ack, .. }
        | RemoteEvent::Signals { ack, .. }
        | RemoteEvent::Ignored { ack } => Some(ack),
        _ => None,
    }
}

/// Stands in for an acknowledgement for the moment it is moved into its [`MarkedAck`].
struct Moved;

#[async_trait]
impl Ack for Moved {
    async fn commit(self: Box<Self>) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// Puts `mark` on the acknowledgement of `event`; gives the mark back when it has none.
fn attach_or_return(mut event: RemoteEvent, mark: Mark) -> (RemoteEvent, Option<Mark>) {
    match ack_of(&mut event) {
        Some(slot) => {
            let ack = std::mem::replace(slot, Box::new(Moved));
            *slot = Box::new(MarkedAck { ack, mark });
            (event, None)
        }
        None => (event, Some(mark)),
    }
}

fn attach(event: RemoteEvent, mark: Mark) -> RemoteEvent {
    attach_or_return(event, mark).0
}

struct MarkedAck {
    ack: Box<dyn Ack>,
    mark: Mark,
}

#[async_trait]
impl Ack for MarkedAck {
    async fn commit(self: Box<Self>) -> Result<(), NetworkError> {
        let Self { ack, mark } = *self;
        ack.commit().await?;
        mark.finish().await;
        Ok(())
    }

    fn take_state(&mut self) -> Option<super::PendingState> {
        self.ack.take_state()
    }
}

struct Marked {
    inner: Box<dyn Encrypted>,
    mark: Mark,
}

#[async_trait]
impl Encrypted for Marked {
    async fn decrypt(self: Box<Self>) -> Vec<RemoteEvent> {
        let Self { inner, mark } = *self;
        let mut mark = Some(mark);
        let mut events = Vec::new();
        for event in inner.decrypt().await {
            let event = match mark.take() {
                Some(m) => {
                    let (event, back) = attach_or_return(event, m);
                    mark = back;
                    event
                }
                None => event,
            };
            events.push(event);
        }
        // Nothing to show (a key-transport message, committed when it decrypted).
        if let Some(mark) = mark {
            mark.finish().await;
        }
        events
    }

    fn discard(self: Box<Self>) {
        let Self { inner, mark } = *self;
        inner.discard();
        tokio::spawn(mark.finish());
    }

    fn sent_by_user(&self) -> bool {
        self.inner.sent_by_user()
    }

    fn server_id(&self) -> Option<String> {
        self.inner.server_id()
    }

    fn archived(&self) -> bool {
        self.inner.archived()
    }
}

/// Where an account's archive is read from when the bridge has finished none of its
/// messages yet: the time it was first seen connected, less this margin for the clocks of
/// the bridge's machine and the server's.
const SINCE_MARGIN: std::time::Duration = std::time::Duration::from_secs(120);

/// How the position reads in the store when it is a time, not an archive id (U+0001 cannot
/// start a server's id: XML does not allow it).
const SINCE_PREFIX: &str = "\u{1}since:";

fn decode_position(stored: &str) -> CatchUpFrom {
    match stored.strip_prefix(SINCE_PREFIX).map(str::parse::<u64>) {
        Some(Ok(secs)) => {
            CatchUpFrom::Since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        }
        _ => CatchUpFrom::After(stored.to_owned()),
    }
}

fn encode_since(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{SINCE_PREFIX}{secs}")
}

/// Live messages that came while a catch-up was under way, held back so that nothing older
/// from the archive is posted after them (see `Bridge::login_events`).
pub(super) struct CatchingUp {
    pub round: u64,
    pub held: VecDeque<RemoteEvent>,
    /// Too many came: they go straight on (order against the archive is no longer kept).
    pub overflowed: bool,
}

/// At most this many live messages are held back during a catch-up.
pub(super) const MAX_HELD: usize = 512;

impl CatchingUp {
    /// Whether `event` waits for the catch-up to end (a live message while it runs).
    pub fn holds(&self, event: &RemoteEvent) -> bool {
        let archived =
            matches!(event, RemoteEvent::Encrypted { message, .. } if message.archived());
        !archived && !self.overflowed
    }
}

impl Bridge {
    /// After a new session: asks for what the archive holds after the login's position, in a
    /// task of its own (the login's event task must go on reading: the results come on it).
    /// Returns the round the [`RemoteEvent::CaughtUp`] will carry, `None` when there is
    /// nothing to catch up (catch-up is off, or the login has no position yet: it gets one
    /// now, the time it was first seen connected).
    pub(super) fn start_catch_up(&self, login: &Arc<Login>, round: u64) -> Option<u64> {
        let limit = self.settings.catch_up_limit;
        if limit == 0 {
            login.archive.reset(false);
            return None;
        }
        let position = match self.store.archive_position(&login.jid) {
            Ok(position) => position,
            Err(error) => {
                warn!(jid = %login.jid, %error, "cannot read the archive position; no catch-up");
                login.archive.reset(false);
                return None;
            }
        };
        let Some(stored) = position else {
            // Nothing was missed yet; should the bridge stop before a first message moves
            // the position, the next start reads the archive from about now.
            let since = std::time::SystemTime::now()
                .checked_sub(SINCE_MARGIN)
                .unwrap_or(std::time::UNIX_EPOCH);
            let written = self
                .store
                .set_archive_position(&login.jid, &encode_since(since))
                .and_then(|()| self.store.flush());
            if let Err(error) = written {
                warn!(jid = %login.jid, %error, "cannot store the archive position");
            }
            login.archive.reset(false);
            return None;
        };
        login.archive.reset(true);
        login.archive.hold_prekeys();
        let (client, jid) = (login.client.clone(), login.jid.clone());
        let start = decode_position(&stored);
        debug!(%jid, round, since = matches!(start, CatchUpFrom::Since(_)), "catching up from the archive");
        tokio::spawn(async move {
            // A failure comes as `CaughtUp { failed: true }` too.
            if let Err(error) = client.catch_up(start, limit, round).await {
                warn!(%jid, %error, "catching up from the archive failed");
            }
        });
        Some(round)
    }

    /// The catch-up ended: live messages may move the position again; the user hears of
    /// what was skipped. After a failure this session moves the position no further.
    pub(super) async fn caught_up(
        &self,
        login: &Login,
        fetched: usize,
        complete: bool,
        failed: bool,
    ) {
        info!(jid = %login.jid, fetched, complete, failed, "caught up from the archive");
        if failed {
            login.archive.freeze();
            return;
        }
        let advanced = {
            let mut marks = login.archive.lock();
            marks.catching_up = false;
            marks.advance()
        };
        login.archive.store_advance(advanced).await;
        login.archive.release_prekeys_if_done();
        if !complete {
            let text = format!(
                "While the bridge was away, more messages reached {} than it fetches afterwards \
                 (network.catch_up_limit): {fetched} were brought over, the others were skipped. \
                 Read them in another client of the account.",
                login.jid
            );
            let txn = super::fresh_txn("catch-up");
            self.tell(&login.matrix_user, &txn, &Reply::text(text))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Relations;
    use crate::store::{ArchiveStore as _, MemoryStore};

    struct NoAck;

    #[async_trait]
    impl Ack for NoAck {
        async fn commit(self: Box<Self>) -> Result<(), NetworkError> {
            Ok(())
        }
    }

    struct Sealed {
        id: String,
        archived: bool,
    }

    #[async_trait]
    impl Encrypted for Sealed {
        async fn decrypt(self: Box<Self>) -> Vec<RemoteEvent> {
            vec![message(None)]
        }
        fn discard(self: Box<Self>) {}
        fn server_id(&self) -> Option<String> {
            Some(self.id.clone())
        }
        fn archived(&self) -> bool {
            self.archived
        }
    }

    fn jid(s: &str) -> RemoteUserId {
        RemoteUserId::parse(s).expect("jid")
    }

    fn message(server_id: Option<&str>) -> RemoteEvent {
        RemoteEvent::Message {
            contact: jid("bob@x"),
            id: None,
            server_id: server_id.map(str::to_owned),
            body: String::new(),
            nick: None,
            client: None,
            oob_url: None,
            encrypted: true,
            relations: Relations::default(),
            ack: Box::new(NoAck),
        }
    }

    fn encrypted(id: &str, archived: bool) -> RemoteEvent {
        RemoteEvent::Encrypted {
            contact: jid("bob@x"),
            message: Box::new(Sealed {
                id: id.into(),
                archived,
            }),
        }
    }

    /// Decrypts (if need be) and commits what `event` became.
    async fn finish(event: RemoteEvent) {
        let events = match event {
            RemoteEvent::Encrypted { message, .. } => message.decrypt().await,
            other => vec![other],
        };
        for event in events {
            if let RemoteEvent::Message { ack, .. } = event {
                ack.commit().await.expect("commit");
            }
        }
    }

    fn fixture() -> (Arc<MemoryStore>, Watermark) {
        let store = Arc::new(MemoryStore::new());
        let watermark = Watermark::new(store.clone(), jid("alice@x"));
        (store, watermark)
    }

    fn position(store: &MemoryStore) -> Option<String> {
        store.archive_position(&jid("alice@x")).expect("read")
    }

    #[tokio::test]
    async fn the_position_moves_over_the_finished_prefix_only() {
        let (store, watermark) = fixture();
        watermark.reset(false);
        let a = watermark.track(message(Some("a")));
        let b = watermark.track(encrypted("b", false));
        let c = watermark.track(message(Some("c")));
        let no_id = watermark.track(message(None));
        finish(no_id).await;
        finish(b).await;
        finish(c).await;
        assert_eq!(
            position(&store),
            None,
            "a is not finished: nothing after it counts"
        );
        finish(a).await;
        assert_eq!(position(&store).as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn while_catching_up_archived_messages_go_before_live_ones() {
        let (store, watermark) = fixture();
        watermark.reset(true);
        let live = watermark.track(encrypted("live-9", false));
        let old1 = watermark.track(encrypted("old-1", true));
        let old2 = watermark.track(encrypted("old-2", true));
        finish(live).await;
        assert_eq!(position(&store), None, "a live one waits for the catch-up");
        finish(old1).await;
        assert_eq!(position(&store).as_deref(), Some("old-1"));
        finish(old2).await;
        assert_eq!(position(&store).as_deref(), Some("old-2"));
        let advanced = {
            let mut marks = watermark.lock();
            marks.catching_up = false;
            marks.advance()
        };
        watermark.store_advance(advanced).await;
        assert_eq!(position(&store).as_deref(), Some("live-9"));
    }

    #[tokio::test]
    async fn a_new_session_forgets_the_last_and_a_frozen_one_stores_nothing() {
        let (store, watermark) = fixture();
        watermark.reset(false);
        let old = watermark.track(message(Some("old")));
        watermark.reset(false);
        let new = watermark.track(message(Some("new")));
        finish(new).await;
        assert_eq!(position(&store).as_deref(), Some("new"));
        finish(old).await;
        assert_eq!(
            position(&store).as_deref(),
            Some("new"),
            "the old session's is ignored"
        );
        watermark.reset(true);
        watermark.freeze();
        finish(watermark.track(encrypted("later", true))).await;
        assert_eq!(position(&store).as_deref(), Some("new"));
    }
}
