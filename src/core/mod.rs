//! The bridge core: what happens to each Matrix event and remote event. It knows the store
//! traits, the ID types and the [`MatrixApi`] trait — never HTTP, sled or XMPP.

mod matrix_api;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::room::message::{MessageType, RoomMessageEventContent};
use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
};
use ruma::serde::Raw;
use ruma::{OwnedTransactionId, OwnedUserId, RoomId, UserId};
use tracing::{debug, info, warn};

pub use matrix_api::{MatrixApi, MatrixError, NewRoom, NewState};

use crate::commands;
use crate::ids::GhostNamespace;
use crate::store::{self, GhostRecord, Store};

/// A failure that stops a transaction or request from being acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error("store task failed: {0}")]
    Join(String),
}

/// What the core needs to know about its own identity.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    pub bot: OwnedUserId,
    pub bot_displayname: String,
    pub ghosts: GhostNamespace,
}

/// How long a processed transaction id is remembered. The homeserver retries a transaction only
/// until it is acknowledged (a lost 200 makes it retry within minutes), so a week is ample.
const TXN_MEMORY_MS: u64 = 7 * 24 * 3600 * 1000;

/// The bridge core. One per process, shared behind an `Arc`.
pub struct Bridge {
    matrix: Arc<dyn MatrixApi>,
    store: Arc<dyn Store>,
    settings: BridgeSettings,
    /// Serialises transactions: a retry of a transaction still being processed waits for it and
    /// then finds it marked processed.
    txn_lock: tokio::sync::Mutex<()>,
}

impl Bridge {
    pub fn new(
        matrix: Arc<dyn MatrixApi>,
        store: Arc<dyn Store>,
        settings: BridgeSettings,
    ) -> Self {
        Self {
            matrix,
            store,
            settings,
            txn_lock: tokio::sync::Mutex::new(()),
        }
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
        info!(bot = %bot, "bridge bot ready");
        Ok(())
    }

    /// Handles one appservice transaction, exactly once across retries and restarts: events are
    /// processed, then the transaction id is recorded and flushed before the caller answers 200.
    /// An event that fails to parse or to process is logged (without content) and skipped.
    pub async fn handle_transaction(
        &self,
        txn_id: &str,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), BridgeError> {
        let _serial = self.txn_lock.lock().await;
        if self.store.txn_processed(txn_id)? {
            debug!(txn_id, "transaction already processed");
            return Ok(());
        }
        debug!(txn_id, events = events.len(), "transaction");
        for raw in events {
            let event_id = raw.get_field::<String>("event_id").ok().flatten();
            match raw.deserialize() {
                Ok(event) => {
                    if let Err(error) = self.handle_event(event).await {
                        warn!(txn_id, event_id, %error, "event not handled");
                    }
                }
                Err(error) => {
                    let kind = raw.get_field::<String>("type").ok().flatten();
                    // serde's message may quote the content; report only where it failed.
                    warn!(
                        txn_id,
                        event_id,
                        kind,
                        line = error.line(),
                        column = error.column(),
                        "malformed event skipped"
                    );
                }
            }
        }
        self.store.mark_txn_processed(txn_id, now_ms())?;
        self.flush().await
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
        self.matrix.ensure_registered(user.localpart()).await?;
        self.matrix.set_display_name(user, remote.as_str()).await?;
        let record = GhostRecord {
            registered: true,
            displayname: Some(remote.to_string()),
        };
        self.store.put_ghost(user, &record)?;
        self.flush().await?;
        info!(ghost = %user, "ghost registered");
        Ok(true)
    }

    async fn flush(&self) -> Result<(), BridgeError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| BridgeError::Join(e.to_string()))??;
        Ok(())
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

    async fn handle_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        content: &RoomMessageEventContent,
        event_id: &str,
    ) -> Result<(), BridgeError> {
        if sender == self.settings.bot || self.settings.ghosts.contains(sender) {
            return Ok(());
        }
        if self.store.management_room_owner(room)?.as_deref() != Some(sender) {
            return Ok(());
        }
        let MessageType::Text(text) = &content.msgtype else {
            return Ok(());
        };
        let reply =
            commands::parse(&text.body).map_or_else(|unknown| unknown, |c| commands::run(&c));
        let content = RoomMessageEventContent::notice_html(reply.plain, reply.html);
        self.send_as_bot(room, &txn_for("reply", event_id), &content)
            .await
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
}

/// A transaction id derived from the event being answered, so a reprocessed event (a transaction
/// redelivered after a crash) sends nothing new: the homeserver deduplicates on it.
fn txn_for(purpose: &str, event_id: &str) -> OwnedTransactionId {
    format!("{purpose}.{event_id}").into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
