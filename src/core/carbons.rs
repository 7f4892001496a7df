//! What the user sends from their other clients of the linked account (XEP-0280 sent carbons),
//! shown in the contact's portal so that it holds the whole conversation.
//!
//! A sent carbon comes in the contact's inbound lane (the network routes it by the
//! conversation's peer), so it keeps its place among the contact's own messages, and it is
//! finished like them: posted, mapped by its id, flushed, then acknowledged.
//!
//! - **Fallback** (always): the contact's ghost posts an `m.notice` that says it is the user's
//!   ("↗ You wrote from another device: …"). A notice, not an `m.text` with the prefix, because
//!   clients show notices apart from the conversation's own messages and the default push
//!   rules (`.m.rule.suppress_notices`) do not notify for them: the user is not notified of
//!   what they wrote themselves.
//! - **Double puppeting** (`appservice.double_puppet`): the message is posted as the Matrix user
//!   themself, through a second appservice registration whose namespace holds the homeserver's
//!   users (`?user_id=` identity assertion with its own as_token). Only in a plain portal the
//!   user has joined: the bridge has no device of the user's to encrypt with. Anything else, or
//!   a refused send, falls back to the notice. Such a post comes back in a transaction as the
//!   user's own message; its transaction-id field ([`PUPPET_TXN`]) keeps it from going to the
//!   contact ([`posted_as_user`]).
//!
//! The bridge's own sends never come back as carbons: the server copies a message to the
//! account's other resources, never to the one that sent it (XEP-0280 §6), and the OMEMO key of
//! a send is not encrypted for the sending device.

use std::sync::Arc;
use std::time::Duration;

use ruma::events::AnyTimelineEvent;
use ruma::events::room::message::{
    MessageType, NoticeMessageEventContent, RoomMessageEventContent,
};
use ruma::serde::Raw;
use ruma::{OwnedEventId, RoomId, UserId};
use tracing::{debug, info, warn};

use super::logins::Login;
use super::messages::Post;
use super::{Ack, Bridge, BridgeError, MatrixApi, TXN_FIELD, derived_id};
use crate::convert;
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::{MappedEvent, PortalRecord, PortalState};

/// What the fallback notice says before the user's text.
pub(super) const SENT_PREFIX: &str = "↗ You wrote from another device: ";
/// How the transaction ids of posts made as the user start.
pub(super) const PUPPET_TXN: &str = "sent.";
/// How the transaction ids of fallback notices start.
const NOTICE_TXN: &str = "sent-notice.";
/// The longest pause between two tries of a post.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Whether `raw` is a post the bridge made as the user (double puppeting), by its
/// transaction-id field: it must not be sent to the contact as the user's message.
pub(super) fn posted_as_user(raw: &Raw<AnyTimelineEvent>) -> bool {
    raw.get_field::<serde_json::Value>("content")
        .ok()
        .flatten()
        .and_then(|content| {
            content
                .get(TXN_FIELD)?
                .as_str()
                .map(|txn| txn.starts_with(PUPPET_TXN))
        })
        .unwrap_or(false)
}

impl Bridge {
    /// Turns double puppeting on: `api` posts as the homeserver's own users (the second
    /// registration's as_token). Set once, before logins start; later calls change nothing.
    pub fn set_double_puppet(&self, api: Arc<dyn MatrixApi>) {
        if self.double_puppet.set(api).is_err() {
            warn!("double puppeting was already set up");
        }
    }

    /// A message the user sent to `contact` from another client: posted in the portal, mapped,
    /// flushed, then acknowledged. A failure that may pass is tried again here, in the lane;
    /// a refusal is logged and acknowledged (the message is on the client that sent it).
    pub(super) async fn sent_elsewhere(
        &self,
        login: &Login,
        contact: RemoteUserId,
        id: Option<String>,
        body: String,
        ack: Box<dyn Ack>,
    ) {
        let mut delay = Duration::from_millis(250);
        let mut retry = false;
        let result = loop {
            match self
                .post_sent(login, &contact, id.as_deref(), &body, retry)
                .await
            {
                Err(BridgeError::Matrix(error)) if !error.is_permanent() => {
                    warn!(jid = %login.jid, contact = %contact, %error, "cannot post the user's message from another client yet; trying again");
                }
                Err(BridgeError::Store(error)) => {
                    warn!(jid = %login.jid, contact = %contact, %error, "cannot record the user's message from another client yet; trying again");
                }
                other => break other,
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            retry = true;
        };
        match result {
            Ok(()) => {}
            Err(BridgeError::Matrix(error)) => {
                warn!(jid = %login.jid, contact = %contact, %error, "the homeserver refused the user's message from another client; acknowledged");
            }
            Err(error) => {
                warn!(jid = %login.jid, contact = %contact, %error, "the user's message from another client not bridged; it stays unacknowledged");
                return;
            }
        }
        self.ack_after_flush(&login.jid, ack).await;
    }

    /// Posts the user's message once (by its id in the message map; the transaction ids are
    /// derived from it) and maps it as the user's (`ours`).
    async fn post_sent(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        id: Option<&str>,
        body: &str,
        retry: bool,
    ) -> Result<(), BridgeError> {
        if self.store.is_blocked(&login.jid, contact)? {
            debug!(jid = %login.jid, "the user's message to a contact blocked in the bridge not shown");
            return Ok(());
        }
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        if let Some(id) = id
            && self.store.event_of(&key, id)?.is_some()
        {
            debug!(portal = %key, "the user's message from another client already bridged");
            return Ok(());
        }
        let Some(portal) = self.portal_for_sent(login, &key).await? else {
            debug!(portal = %key, "the user's message in a declined chat not shown");
            return Ok(());
        };
        let ghost = self.ensure_ghost(contact, None).await?;
        let remote = id.map_or_else(|| format!("noid.{}", super::now_ms()), str::to_owned);
        let base = derived_id(&[key.login.as_str(), key.contact.as_str(), &remote]);
        let notice_txn = format!("{NOTICE_TXN}{base}");
        let found = match retry {
            true => {
                self.posted_by(&ghost, &ghost, &portal.room, &notice_txn)
                    .await?
            }
            false => None,
        };
        let event = match found {
            Some(event) => event,
            None => match self
                .post_as_user(login, &ghost, &portal.room, &base, body, retry)
                .await?
            {
                Some(event) => event,
                None => {
                    self.post_notice(&ghost, &portal.room, &notice_txn, body, retry)
                        .await?
                }
            },
        };
        if let Some(id) = id {
            let mapped = MappedEvent {
                event,
                placeholder: false,
                ours: true,
                markable: false,
            };
            self.store.put_message(&key, id, &mapped)?;
        }
        Ok(())
    }

    /// The portal for the user's message: the existing one (none if the user declined it), or
    /// a new one, accepted, since the user started the chat elsewhere.
    async fn portal_for_sent(
        &self,
        login: &Login,
        key: &PortalKey,
    ) -> Result<Option<PortalRecord>, BridgeError> {
        let _serial = self.portal_lock.lock().await;
        match self.store.portal(key)? {
            Some(portal) if portal.state == PortalState::Declined => Ok(None),
            Some(portal) => Ok(Some(portal)),
            None => {
                info!(portal = %key, "the user wrote to a contact from another client: a portal for them");
                self.create_portal(login, key, PortalState::Accepted, None)
                    .await
                    .map(Some)
            }
        }
    }

    /// The fallback: the ghost's notice, in as many parts as the text needs (the first is
    /// mapped).
    async fn post_notice(
        &self,
        ghost: &UserId,
        room: &RoomId,
        txn: &str,
        body: &str,
        retry: bool,
    ) -> Result<OwnedEventId, BridgeError> {
        let mut first = None;
        for (i, part) in convert::to_matrix_parts(&format!("{SENT_PREFIX}{body}"))
            .into_iter()
            .enumerate()
        {
            let content = as_notice(part);
            let txn = part_txn(txn, i);
            let event = self
                .post_once(retry, ghost, room, &txn, Post::Message(&content))
                .await?;
            first.get_or_insert(event);
        }
        first.ok_or_else(|| super::NetworkError::Other("a message in no part".into()).into())
    }

    /// Posts the text as the user themself, if double puppeting is set up and the portal is
    /// plain; `None` when it is not, or the homeserver refused (the user not joined, the
    /// second registration not loaded): the caller posts the fallback.
    async fn post_as_user(
        &self,
        login: &Login,
        ghost: &UserId,
        room: &RoomId,
        base: &str,
        body: &str,
        retry: bool,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let Some(puppet) = self.double_puppet.get() else {
            return Ok(None);
        };
        let user = &login.matrix_user;
        let txn = format!("{PUPPET_TXN}{base}");
        if retry && let Some(event) = self.posted_by(ghost, user, room, &txn).await? {
            return Ok(Some(event));
        }
        if !matches!(self.matrix.is_encrypted(ghost, room).await, Ok(false)) {
            debug!(%room, "an encrypted portal: the user's message from another client posted by the ghost");
            return Ok(None);
        }
        let mut first = None;
        for (i, content) in convert::to_matrix_parts(body).iter().enumerate() {
            let txn = part_txn(&txn, i);
            match puppet
                .send_message(user, room, txn.as_str().into(), content)
                .await
            {
                Ok(event) => {
                    first.get_or_insert(event);
                }
                Err(error) if i == 0 && error.is_permanent() => {
                    warn!(%room, %error, "cannot post as the user (double puppeting); the ghost posts it");
                    return Ok(None);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(first)
    }
}

/// The transaction id of part `i` of a post.
fn part_txn(txn: &str, i: usize) -> String {
    match i {
        0 => txn.to_owned(),
        i => format!("{txn}.{i}"),
    }
}

/// A text (or emote) as a notice with the same body and formatting.
fn as_notice(content: RoomMessageEventContent) -> RoomMessageEventContent {
    let (body, formatted) = match content.msgtype {
        MessageType::Text(text) => (text.body, text.formatted),
        MessageType::Emote(emote) => (emote.body, emote.formatted),
        MessageType::Notice(notice) => (notice.body, notice.formatted),
        other => return RoomMessageEventContent::new(other),
    };
    let mut notice = NoticeMessageEventContent::plain(body);
    notice.formatted = formatted;
    RoomMessageEventContent::new(MessageType::Notice(notice))
}
