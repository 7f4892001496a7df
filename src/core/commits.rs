//! The durability point (`flush`), and group commit of inbound messages. A lane that has posted a message and written its mapping
//! (and the Signal state it advanced) hands the message's acknowledgement here and goes on with
//! its next message; one task flushes once for every acknowledgement waiting, then sends them
//! in the order they came. Nothing is acknowledged before a flush that began after its writes,
//! so the durability rule holds; the flush no longer sits between one post and the next, and
//! messages finishing together share it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{Instrument, info_span, warn};

use super::network_api::Ack;
use super::{Bridge, BridgeError};
use crate::ids::RemoteUserId;

/// How many acknowledgements wait at most (all logins together); a lane waits for a place.
const QUEUE: usize = 256;
/// How many acknowledgements one flush covers at most.
const BATCH: usize = 64;

struct Waiting {
    jid: RemoteUserId,
    ack: Box<dyn Ack>,
}

/// The queue of acknowledgements waiting for their flush, and how many there are.
#[derive(Default)]
pub(super) struct Commits {
    queue: OnceLock<mpsc::Sender<Waiting>>,
    /// Handed over and not yet sent (or dropped after a failed flush).
    waiting: Arc<AtomicUsize>,
}

impl Commits {
    /// How many acknowledgements wait for their flush.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits until none waits, for at most `limit`; whether none does.
    pub(super) async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.waiting() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Bridge {
    /// The durability point. A failure is remembered (and reported by `/health`) until a later
    /// flush succeeds.
    pub(super) async fn flush(&self) -> Result<(), BridgeError> {
        let store = Arc::clone(&self.store);
        let result = tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| BridgeError::Join(e.to_string()))?;
        let mut failure = self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => {
                *failure = None;
                Ok(())
            }
            Err(error) => {
                *failure = Some(error.to_string());
                Err(error.into())
            }
        }
    }

    /// Why the store cannot make writes durable, while it cannot (the last flush failed).
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Acknowledges `ack` (of a message of `jid`'s) after the next flush; its effects must be
    /// written already. Returns once it is queued.
    pub(super) async fn ack_after_flush(&self, jid: &RemoteUserId, ack: Box<dyn Ack>) {
        let queue = self.commits.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(
                commit_task(self.this.clone(), rx, self.commits.waiting.clone())
                    .instrument(info_span!("group_commit")),
            );
            tx
        });
        self.commits.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting {
            jid: jid.clone(),
            ack,
        };
        if queue.send(waiting).await.is_err() {
            // Cannot happen while the bridge lives: the task ends only when the queue closes.
            self.commits.waiting.fetch_sub(1, Ordering::SeqCst);
            warn!(jid = %jid, "the commit task ended; the message stays unacknowledged");
        }
    }
}

/// Takes what waits (up to [`BATCH`]), flushes once, acknowledges each in turn. Ends when the
/// bridge is gone (its sender with it).
async fn commit_task(
    bridge: Weak<Bridge>,
    mut queue: mpsc::Receiver<Waiting>,
    waiting: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let count = batch.len();
        let flushed = match bridge.upgrade() {
            Some(bridge) => bridge.flush().await,
            None => return,
        };
        match flushed {
            Ok(()) => {
                for Waiting { jid, ack } in batch.drain(..) {
                    if let Err(error) = ack.commit().await {
                        warn!(jid = %jid, %error, "cannot commit the inbound message's state");
                    }
                }
            }
            Err(error) => {
                warn!(%error, count, "flush failed; the messages stay unacknowledged");
                batch.clear();
            }
        }
        waiting.fetch_sub(count, Ordering::SeqCst);
    }
}
