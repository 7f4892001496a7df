//! Messages from the Matrix user to the contact, under the durability rule of PRODUCT.md: look
//! the event up in the message map (a redelivered transaction sends nothing again); send with a
//! stanza id and origin-id derived from the event id; write the mapping once the server has the
//! message. The transaction is answered after the flush. A send that fails is reported in the
//! room, never dropped silently.
//!
//! Bodies are never stored and never logged.

use ruma::events::room::message::{
    MessageType, Relation, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use ruma::{OwnedEventId, UserId};
use tracing::{debug, warn};

use super::capabilities::Feature;
use super::logins::Login;
use super::{
    Bridge, BridgeError, NetworkError, OutgoingMessage, OutgoingReply, derived_id, txn_for,
};
use crate::convert;
use crate::ids::PortalKey;
use crate::store::{MappedEvent, PortalRecord, PortalState};

impl Bridge {
    /// A message from the Matrix user in a portal: sent to the contact once.
    pub(super) async fn outbound_message(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        sender: &UserId,
        content: &RoomMessageEventContent,
        event_id: &str,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.logins_lock().get(&key.login).cloned() else {
            // Not running (starting, stopping, or failed): the worker keeps the event and
            // tries again once it runs; an unlinked login is reported by the worker.
            return Err(NetworkError::NotConnected.into());
        };
        if sender != login.matrix_user {
            debug!(portal = %key, "message from another member not bridged");
            return Ok(());
        }
        let Ok(event) = OwnedEventId::try_from(event_id) else {
            return Ok(());
        };
        if self.store.remote_of(&event)?.is_some() {
            debug!(portal = %key, "event already sent");
            return Ok(());
        }
        if matches!(content.msgtype, MessageType::VerificationRequest(_)) {
            return Ok(());
        }
        if portal.state == PortalState::Declined {
            return self
                .report_failure(key, portal, event_id, "you declined this chat")
                .await;
        }
        let names = |user: &UserId| {
            let remote = self.settings.ghosts.remote_of(user)?;
            let ghost = self.store.ghost(user).ok().flatten();
            let nick = ghost
                .and_then(|g| g.displayname)
                .and_then(|n| Self::nick_in(&n, &remote));
            Some(nick.unwrap_or_else(|| remote.to_string()))
        };
        // An edit of a message the contact has becomes a correction (XEP-0308) of it; an edit
        // of one they never got goes as a new message (its body starts with "* ").
        let (content, replaces) = match &content.relates_to {
            Some(Relation::Replacement(edit)) => match self.remote_in(key, &edit.event_id)? {
                Some(remote) if self.store.event_of(key, &remote)?.is_some_and(|m| m.ours) => {
                    let new: RoomMessageEventContent = edit.new_content.clone().into();
                    (std::borrow::Cow::Owned(new), Some(remote))
                }
                _ => (std::borrow::Cow::Borrowed(content), None),
            },
            _ => (std::borrow::Cow::Borrowed(content), None),
        };
        // A file goes up encrypted to the account's server; the contact gets its link.
        if replaces.is_none()
            && let Some(file) = super::media::file_of(&content.msgtype)
        {
            return self
                .outbound_file_message(&login, key, portal, event, &file)
                .await;
        }
        let text = match convert::to_xmpp(&content, &names) {
            Ok(text) => text,
            Err(unsupported) => {
                let why = format!("{} messages cannot be bridged yet", unsupported.msgtype);
                return self.report_failure(key, portal, event_id, &why).await;
            }
        };
        let reply = match &content.relates_to {
            Some(Relation::Reply(reply)) if replaces.is_none() => {
                self.outgoing_reply(&login, key, portal, &reply.in_reply_to.event_id)
                    .await?
            }
            _ => None,
        };
        let mut body = text.body;
        let reply = reply.map(|(reply, quote)| {
            let fallback = quote.map(|quote| {
                let chars = quote.chars().count();
                body.insert_str(0, &quote);
                0..chars
            });
            OutgoingReply { fallback, ..reply }
        });
        let needs = match (&reply, &replaces) {
            (_, Some(_)) => Some(Feature::Corrections),
            (Some(_), None) => Some(Feature::Replies),
            (None, None) => None,
        };
        let message = OutgoingMessage {
            id: derived_id(&["out", event_id]),
            body,
            reply,
            replaces,
        };
        if self
            .send_mapped(login.as_ref(), key, portal, event, &message)
            .await?
            && let Some(feature) = needs
        {
            self.check_support(key, &portal.room, feature);
        }
        Ok(())
    }

    /// Sends `message`, the user's `event`, and maps the event to it once the server has it:
    /// `true`. A failure is reported in the portal (`false`); not connected is an error, so
    /// the room's worker keeps the event and sends it once the login is connected again.
    async fn send_mapped(
        &self,
        login: &Login,
        key: &PortalKey,
        portal: &PortalRecord,
        event: OwnedEventId,
        message: &OutgoingMessage,
    ) -> Result<bool, BridgeError> {
        // No timeout here: a send waits for the server's acknowledgement (the room's worker
        // tells the user after `send_timeout` that it is waiting).
        match login.client.send_message(&key.contact, message).await {
            Ok(()) => {}
            Err(NetworkError::NotConnected) => return Err(NetworkError::NotConnected.into()),
            Err(error) => {
                warn!(portal = %key, %error, "message not delivered");
                self.report_failure(key, portal, event.as_str(), &error.to_string())
                    .await?;
                return Ok(false);
            }
        }
        let mapped = MappedEvent {
            event,
            placeholder: false,
            ours: true,
            markable: false,
        };
        self.store.put_message(key, &message.id, &mapped)?;
        debug!(portal = %key, "message sent");
        Ok(true)
    }

    /// A file from the user: uploaded, then its link sent (and its caption after it, as a
    /// message of its own); mapped like a text.
    async fn outbound_file_message(
        &self,
        login: &Login,
        key: &PortalKey,
        portal: &PortalRecord,
        event: OwnedEventId,
        file: &super::media::MatrixFile<'_>,
    ) -> Result<(), BridgeError> {
        if !login.client.connected() {
            return Err(NetworkError::NotConnected.into());
        }
        let ghost = self
            .settings
            .ghosts
            .ghost_of(&key.contact)
            .map_err(|e| NetworkError::Other(e.to_string()))?;
        let link = match self.outbound_file(login, &ghost, file).await {
            Ok(link) => link,
            Err(why) => {
                warn!(portal = %key, error = %why, "a file was not sent");
                let why = format!("its file was not sent: {why}");
                return self.report_failure(key, portal, event.as_str(), &why).await;
            }
        };
        let message = OutgoingMessage {
            id: derived_id(&["out", event.as_str()]),
            body: link,
            reply: None,
            replaces: None,
        };
        if !self
            .send_mapped(login, key, portal, event.clone(), &message)
            .await?
        {
            return Ok(());
        }
        if let Some(caption) = &file.caption {
            let message = OutgoingMessage {
                id: derived_id(&["out", event.as_str(), "caption"]),
                body: caption.clone(),
                reply: None,
                replaces: None,
            };
            if let Err(error) = login.client.send_message(&key.contact, &message).await {
                warn!(portal = %key, %error, "a file's caption not delivered");
            }
        }
        Ok(())
    }

    /// What a reply of the user to `target` answers on the network, and a quote of it for the
    /// contact's clients without replies (read from the homeserver, not stored; `None` if it
    /// cannot be read). `None` for a target never bridged: the reply goes as a plain message.
    async fn outgoing_reply(
        &self,
        login: &Login,
        key: &PortalKey,
        portal: &PortalRecord,
        target: &ruma::EventId,
    ) -> Result<Option<(OutgoingReply, Option<String>)>, BridgeError> {
        let Some(remote) = self.remote_in(key, target)? else {
            return Ok(None);
        };
        let Some(mapped) = self.store.event_of(key, &remote)? else {
            return Ok(None);
        };
        let author = if mapped.ours {
            login.jid.clone()
        } else {
            key.contact.clone()
        };
        let quote = match self.settings.ghosts.ghost_of(&key.contact) {
            Ok(ghost) => self.text_of(&ghost, &portal.room, target).await,
            Err(_) => None,
        };
        let reply = OutgoingReply {
            id: remote,
            author,
            fallback: None,
        };
        Ok(Some((reply, quote.map(|text| quote_of(&text)))))
    }

    /// The plain text of message `event` as `member` reads it (decrypted if need be), without
    /// its own reply fallback; `None` if it cannot be read.
    async fn text_of(
        &self,
        member: &UserId,
        room: &ruma::RoomId,
        event: &ruma::EventId,
    ) -> Option<String> {
        let raw = self.matrix.room_event(member, room, event).await.ok()?;
        let raw = match raw.get_field::<String>("type").ok().flatten().as_deref() {
            Some("m.room.encrypted") => self.matrix.decrypt(member, room, &raw).await.ok()?,
            _ => raw,
        };
        let content = raw
            .get_field::<RoomMessageEventContentWithoutRelation>("content")
            .ok()
            .flatten()?;
        let body = content.msgtype.body();
        let text = body
            .lines()
            .skip_while(|l| l.starts_with("> "))
            .skip_while(|l| l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        Some(text)
    }

    /// An end-to-end encrypted event in a portal: not readable by the bridge yet, so its sender
    /// is told that it did not go out (once per event).
    pub(super) async fn outbound_encrypted(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        sender: &UserId,
        event_id: &str,
        why: &super::DecryptError,
    ) -> Result<(), BridgeError> {
        let is_user = self
            .logins_lock()
            .get(&key.login)
            .is_some_and(|login| login.matrix_user == sender);
        if !is_user {
            return Ok(());
        }
        let why = format!(
            "the bridge could not decrypt it: {why}. {}",
            super::UNREADABLE_ADVICE
        );
        self.report_failure(key, portal, event_id, &why).await
    }

    /// Tells the user in the portal that their message `event_id` did not go out.
    pub(super) async fn report_failure(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        event_id: &str,
        why: &str,
    ) -> Result<(), BridgeError> {
        let ghost = self
            .settings
            .ghosts
            .ghost_of(&key.contact)
            .map_err(|e| NetworkError::Other(e.to_string()))?;
        let content = RoomMessageEventContent::notice_plain(format!(
            "⚠️ Your message was not delivered to {}: {why}.",
            key.contact
        ));
        self.matrix
            .send_message(&ghost, &portal.room, &txn_for("failed", event_id), &content)
            .await?;
        Ok(())
    }
}

/// The first line of a message's text, shortened, as a quote for a reply's fallback.
fn quote_of(text: &str) -> String {
    const MAX_QUOTE_CHARS: usize = 80;
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut quote: String = line.chars().take(MAX_QUOTE_CHARS).collect();
    if line.chars().count() > MAX_QUOTE_CHARS {
        quote.push('…');
    }
    format!("> {quote}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_is_the_first_line_shortened() {
        assert_eq!(quote_of("first\nsecond"), "> first\n");
        assert_eq!(
            quote_of(&"é".repeat(100)),
            format!("> {}…\n", "é".repeat(80))
        );
    }
}
