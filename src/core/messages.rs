//! Messages from contacts, under the durability rule of PRODUCT.md: look the remote id up in
//! the message map; post to Matrix with a transaction id derived from (login, contact, remote
//! id), so a repost after a crash is deduplicated by the homeserver; write the mapping; flush
//! (the group commit of `commits.rs`); and only then commit the Signal state and acknowledge
//! the stanza (`Ack::commit`). The other way is in `outbound.rs`.
//!
//! Bodies are never stored and never logged.

use ruma::events::relation::{InReplyTo, Reply};
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::events::{AnyMessageLikeEvent, AnyTimelineEvent, MessageLikeEvent};
use ruma::{OwnedEventId, UserId};
use serde_json::json;
use tracing::{debug, info, warn};

use super::logins::Login;
use super::{Ack, Bridge, BridgeError, NetworkError, PendingState, Relations, derived_id};
use crate::convert;
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::{MappedEvent, PortalRecord};

/// How many of the newest events of a portal are read back when its ghost joins (one page).
pub(super) const BACKLOG_EVENTS: u32 = 50;
/// The longest pause between two tries of posting an inbound message.
const MAX_INBOUND_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// What an inbound message shows in its portal.
#[derive(Clone, Copy)]
enum Shown<'a> {
    /// Its text, what it says about earlier messages, and the file it shares (a link).
    Text(&'a str, &'a Relations, Option<&'a str>),
    /// A placeholder saying why it could not be decrypted.
    Placeholder(&'a str),
}

/// What an inbound post sends as the contact's ghost.
#[derive(Clone, Copy)]
pub(super) enum Post<'a> {
    /// A message.
    Message(&'a RoomMessageEventContent),
    /// An edit of an earlier message (see [`replacement`]), or a message built as JSON (a
    /// file: ruma's types would drop the voice message mark).
    Edit(&'a serde_json::Value),
}

/// How an inbound message is known: the contact's id, and our server's stamp.
///
/// A message is new unless its server stamp (XEP-0359 stanza-id, `by` our own account) was
/// seen; without a stamp, unless its contact id was. A contact's client may reuse an id for a
/// different message (that once lost it): the server's stamp tells them apart. A placeholder
/// is found by the contact's id, since the copy that replaces it is a new stanza.
#[derive(Debug, Clone, Default)]
pub(super) struct InboundIds {
    /// The contact's id (origin-id, else the stanza's id).
    pub id: Option<String>,
    pub server_id: Option<String>,
    /// The full address of the contact's client that sent it, if known.
    pub client: Option<String>,
}

impl InboundIds {
    /// The server stamp's key in the message map. It starts with U+0001, which XML 1.0 does
    /// not allow in a document, so no contact id can be equal to one.
    fn server_key(&self) -> Option<String> {
        self.server_id.as_deref().map(server_key)
    }

    /// What identifies this one delivery of the message: its server stamp, else its id.
    fn dedup_key(&self) -> Option<String> {
        self.server_key().or_else(|| self.id.clone())
    }
}

/// The message map's key of a server stamp (see [`InboundIds::server_key`]).
pub(super) fn server_key(server_id: &str) -> String {
    format!("\u{1}sid:{server_id}")
}

/// What a contact's message says: its text, the nickname they claim, what it refers to.
pub(super) struct InboundText {
    pub body: String,
    pub nick: Option<String>,
    pub relations: Relations,
    /// The file it shares, if it is a file message (see `convert::file_link`).
    pub file: Option<String>,
}

impl Bridge {
    /// A decrypted message from a contact.
    pub(super) async fn inbound_message(
        &self,
        login: &Login,
        contact: RemoteUserId,
        ids: InboundIds,
        text: InboundText,
        mut ack: Box<dyn Ack>,
    ) {
        let shown = Shown::Text(&text.body, &text.relations, text.file.as_deref());
        let nick = text.nick.as_deref();
        let mut state = ack.take_state();
        let result = self
            .post_inbound_until_answered(login, &contact, &ids, shown, nick, &mut state)
            .await;
        self.finish_inbound(login, &contact, &ids, result, state, ack)
            .await;
    }

    /// [`post_inbound`](Self::post_inbound), tried again with backoff while the failure may
    /// pass (the homeserver unreachable, 5xx, 429; the store failing), here in the contact's
    /// lane: later messages of this contact wait behind it, nobody else's do. A refusal that
    /// will not change, or a bug, is returned.
    async fn post_inbound_until_answered(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        ids: &InboundIds,
        shown: Shown<'_>,
        nick: Option<&str>,
        state: &mut Option<PendingState>,
    ) -> Result<(), BridgeError> {
        let mut delay = std::time::Duration::from_millis(250);
        let mut retry = false;
        loop {
            match self
                .post_inbound(login, contact, ids, shown, nick, retry, state)
                .await
            {
                Err(BridgeError::Matrix(error)) if !error.is_permanent() => {
                    warn!(jid = %login.jid, contact = %contact, %error, "cannot post an inbound message yet; trying again");
                }
                Err(BridgeError::Store(error)) => {
                    warn!(jid = %login.jid, contact = %contact, %error, "cannot record an inbound message yet; trying again");
                }
                other => return other,
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_INBOUND_RETRY_DELAY);
            retry = true;
        }
    }

    /// On a `retry` of a post (an earlier try may have reached the homeserver, its answer
    /// lost), the event the ghost already posted in `room` with transaction id `txn`, looked
    /// for among the room's newest events ([`TXN_FIELD`](super::TXN_FIELD)). Not on a first
    /// try: the homeserver deduplicates those itself while it runs.
    async fn posted_before(
        &self,
        retry: bool,
        ghost: &UserId,
        room: &ruma::RoomId,
        txn: &str,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        if !retry {
            return Ok(None);
        }
        self.posted_by(ghost, ghost, room, txn).await
    }

    /// The event `sender` posted in `room` with transaction id `txn`, looked for among the
    /// room's newest events as `reader` sees them.
    pub(super) async fn posted_by(
        &self,
        reader: &UserId,
        sender: &UserId,
        room: &ruma::RoomId,
        txn: &str,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let page = self
            .matrix
            .recent_events(reader, room, BACKLOG_EVENTS)
            .await?;
        let found = page.iter().find_map(|raw| {
            let posted_by = raw.get_field::<String>("sender").ok().flatten()?;
            let content = raw
                .get_field::<serde_json::Value>("content")
                .ok()
                .flatten()?;
            let ours = posted_by == sender.as_str()
                && content.get(super::TXN_FIELD).and_then(|t| t.as_str()) == Some(txn);
            let id = raw.get_field::<OwnedEventId>("event_id").ok().flatten()?;
            ours.then_some(id)
        });
        if found.is_some() {
            info!(room = %room, "a post whose answer was lost is already in the room; not posting it again");
        }
        Ok(found)
    }

    /// Posts `post` as `ghost` in `room` with transaction id `txn`, unless a `retry` finds it
    /// there already ([`posted_before`](Self::posted_before)). Its event, new or found.
    pub(super) async fn post_once(
        &self,
        retry: bool,
        ghost: &UserId,
        room: &ruma::RoomId,
        txn: &str,
        post: Post<'_>,
    ) -> Result<OwnedEventId, BridgeError> {
        if let Some(event) = self.posted_before(retry, ghost, room, txn).await? {
            return Ok(event);
        }
        let event = match post {
            Post::Message(content) => {
                self.matrix
                    .send_message(ghost, room, txn.into(), content)
                    .await?
            }
            Post::Edit(edit) => {
                self.matrix
                    .send_event(ghost, room, "m.room.message", txn.into(), edit)
                    .await?
            }
        };
        Ok(event)
    }

    /// A message from a contact that did not decrypt: a placeholder, replaced if a decryptable
    /// copy with the same id arrives later. A replay of a delivered message shows nothing.
    pub(super) async fn inbound_undecryptable(
        &self,
        login: &Login,
        contact: RemoteUserId,
        ids: InboundIds,
        duplicate: bool,
        reason: &str,
        mut ack: Box<dyn Ack>,
    ) {
        let mut state = ack.take_state();
        if duplicate {
            debug!(jid = %login.jid, contact = %contact, "replayed message ignored");
            self.finish_inbound(login, &contact, &ids, Ok(()), state, ack)
                .await;
            return;
        }
        warn!(jid = %login.jid, contact = %contact, reason, "undecryptable message");
        let shown = Shown::Placeholder(reason);
        let result = self
            .post_inbound_until_answered(login, &contact, &ids, shown, None, &mut state)
            .await;
        self.finish_inbound(login, &contact, &ids, result, state, ack)
            .await;
    }

    /// Acknowledges after the next flush (group commit, `commits.rs`) after success, and after
    /// a refusal the user was told of; after any other failure the stanza stays
    /// unacknowledged, so the server delivers it again in the next session. The Signal `state`
    /// not written with a mapping (nothing was mapped) is written here, before the flush.
    async fn finish_inbound(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        ids: &InboundIds,
        result: Result<(), BridgeError>,
        state: Option<PendingState>,
        ack: Box<dyn Ack>,
    ) {
        match result {
            Ok(()) => {}
            // Asking again will not change the homeserver's answer: say so and move on, so one
            // refused message never holds up the ones after it.
            Err(BridgeError::Matrix(error)) if error.is_permanent() => {
                warn!(jid = %login.jid, contact = %contact, %error, "the homeserver refused an inbound message");
                self.tell_refused(login, contact, ids.dedup_key().as_deref(), &error)
                    .await;
            }
            Err(error) => {
                warn!(jid = %login.jid, contact = %contact, %error, "inbound message not bridged; it stays unacknowledged");
                return;
            }
        }
        if let Some(state) = state {
            let key = PortalKey {
                login: login.jid.clone(),
                contact: contact.clone(),
            };
            if let Err(error) = self.put_mapped(login, &key, &[], &mut Some(state)) {
                warn!(jid = %login.jid, %error, "cannot write the inbound message's state; it stays unacknowledged");
                return;
            }
        }
        self.ack_after_flush(&login.jid, ack).await;
    }

    /// Writes `entries` of `key`'s message map, in one atomic write with the Signal `state`
    /// the message advanced if it is still there (then taken: the write releases its lock).
    /// Not flushed: [`finish_inbound`](Self::finish_inbound) acknowledges after a flush.
    fn put_mapped(
        &self,
        login: &Login,
        key: &PortalKey,
        entries: &[(&str, &MappedEvent)],
        state: &mut Option<PendingState>,
    ) -> Result<(), BridgeError> {
        match state {
            Some(pending) => {
                let account = login.jid.as_str();
                (self.store).put_messages_with_omemo(key, entries, account, &pending.changes)?;
                *state = None;
            }
            None => {
                for (remote_id, mapped) in entries {
                    self.store.put_message(key, remote_id, mapped)?;
                }
            }
        }
        Ok(())
    }

    /// Tells the user that a message from `contact` could not be shown: in the portal (as the
    /// ghost) if it can still post there, else in the management room.
    async fn tell_refused(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        id: Option<&str>,
        error: &super::MatrixError,
    ) {
        let forbidden = error.errcode() == Some("M_FORBIDDEN");
        let why = if forbidden {
            format!(
                "{contact}'s account on this server is no longer in your chat with them; invite \
                 it back to see their messages"
            )
        } else {
            format!("the homeserver refused it ({error})")
        };
        let text = format!("⚠️ A message from {contact} could not be shown: {why}.");
        let content = RoomMessageEventContent::notice_plain(text.clone());
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        // Derived from the message, so a redelivery of it (the ack lost in a crash) tells once.
        let txn: ruma::OwnedTransactionId = match id {
            Some(id) => format!(
                "refused.{}",
                derived_id(&[key.login.as_str(), contact.as_str(), id])
            )
            .into(),
            None => super::fresh_txn("refused"),
        };
        if !forbidden
            && let (Ok(Some(portal)), Ok(ghost)) = (
                self.store.portal(&key),
                self.settings.ghosts.ghost_of(contact),
            )
            && self
                .matrix
                .send_message(&ghost, &portal.room, &txn, &content)
                .await
                .is_ok()
        {
            return;
        }
        let reply = crate::commands::Reply::text(text);
        self.tell(&login.matrix_user, &txn, &reply).await;
    }

    /// Posts `body` (or, with `None`, a placeholder) from the contact's ghost, once per
    /// message (see [`InboundIds`]), and maps it together with the Signal `state` it
    /// advanced (see [`put_mapped`](Self::put_mapped)).
    #[allow(clippy::too_many_arguments)] // the message's parts and this try's; no more
    async fn post_inbound(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        ids: &InboundIds,
        shown: Shown<'_>,
        nick: Option<&str>,
        retry: bool,
        state: &mut Option<PendingState>,
    ) -> Result<(), BridgeError> {
        let no_relations = Relations::default();
        let (body, reason, relations, file) = match shown {
            Shown::Text(body, relations, file) => (Some(body), "", relations, file),
            Shown::Placeholder(reason) => (None, reason, &no_relations, None),
        };
        if self.store.is_blocked(&login.jid, contact)? {
            debug!(jid = %login.jid, "message from a contact blocked in the bridge dropped");
            return Ok(());
        }
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        let by_server = match ids.server_key() {
            Some(server_key) => self.store.event_of(&key, &server_key)?,
            None => None,
        };
        let by_contact = match &ids.id {
            Some(id) => self.store.event_of(&key, id)?,
            None => None,
        };
        let mapped = match (by_server, by_contact) {
            (Some(seen), _) if !seen.placeholder || body.is_none() => {
                debug!(portal = %key, "message already bridged");
                return Ok(());
            }
            // Shown as a placeholder before; now it decrypts.
            (Some(placeholder), _) => Some(placeholder),
            (None, Some(placeholder)) if placeholder.placeholder && body.is_some() => {
                Some(placeholder)
            }
            // The same id, and no server stamp (or still no text): nothing to tell them apart.
            (None, Some(seen)) if ids.server_id.is_none() || seen.placeholder => {
                debug!(portal = %key, "message already bridged");
                return Ok(());
            }
            (None, Some(_)) => {
                info!(portal = %key, "the contact's client reused a message id; the server says it is a new message");
                None
            }
            (None, None) => None,
        };
        let Some(portal) = self.inbound_portal(login, &key, nick).await? else {
            debug!(portal = %key, "message in a declined request dropped");
            return Ok(());
        };
        let ghost = self.ensure_ghost(contact, nick).await?;
        // Without an id there is nothing to deduplicate on; such messages are rare (every
        // OMEMO client sends ids) and are posted once per delivery.
        let remote_key = ids
            .dedup_key()
            .unwrap_or_else(|| format!("noid.{}", super::now_ms()));
        let txn_base = derived_id(&[key.login.as_str(), key.contact.as_str(), &remote_key]);
        let correction = match (body, &mapped) {
            (Some(_), None) => self.correction_target(&key, relations)?,
            _ => None,
        };
        let event = match (body, mapped, correction) {
            (Some(body), Some(placeholder), _) => {
                // The real message for a placeholder: replace it (an edit).
                let edit = replacement(&convert::to_matrix(body), &placeholder.event)?;
                let txn = format!("in-edit.{txn_base}");
                self.post_once(retry, &ghost, &portal.room, &txn, Post::Edit(&edit))
                    .await?;
                info!(portal = %key, "placeholder replaced by the decrypted message");
                placeholder.event
            }
            (Some(body), None, Some(original)) => {
                // A correction (XEP-0308) of a message shown before: an edit of its event.
                let edit = replacement(&convert::to_matrix(body), &original)?;
                let txn = format!("in-corr.{txn_base}");
                let event = self
                    .post_once(retry, &ghost, &portal.room, &txn, Post::Edit(&edit))
                    .await?;
                debug!(portal = %key, "a correction became an edit");
                event
            }
            (Some(body), None, None) if let Some(link) = file => {
                let mut content = self
                    .inbound_file_content(login, contact, ids, &ghost, &portal.room, link)
                    .await?;
                // Shared in the clear: marked like an unencrypted text.
                if body.starts_with(super::logins::UNENCRYPTED_MARKER)
                    && let Some(name) = content["body"].as_str()
                {
                    content["body"] = format!("{}{name}", super::logins::UNENCRYPTED_MARKER).into();
                }
                let txn = format!("in.{txn_base}");
                self.post_once(retry, &ghost, &portal.room, &txn, Post::Edit(&content))
                    .await?
            }
            (Some(body), None, None) => {
                // A reply to a message shown before becomes a Matrix reply, without the quote
                // the contact's client put in for clients without replies (XEP-0428); a reply
                // to one never seen keeps its quote.
                let reply_to = match &relations.reply_to {
                    Some(id) => self.store.event_of(&key, id)?.map(|m| m.event),
                    None => None,
                };
                let stripped;
                let body = match (&reply_to, &relations.reply_fallback) {
                    (Some(_), Some(range)) => {
                        stripped = without_chars(body, range);
                        stripped.as_str()
                    }
                    _ => body,
                };
                // A body too large for one event goes whole, in several; the first is mapped.
                let mut parts = convert::to_matrix_parts(body);
                if let (Some(target), Some(first)) = (reply_to, parts.first_mut()) {
                    first.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(target))));
                }
                let mut first = None;
                for (i, content) in parts.iter().enumerate() {
                    let txn = match i {
                        0 => format!("in.{txn_base}"),
                        i => format!("in.{txn_base}.{i}"),
                    };
                    let event = self
                        .post_once(retry, &ghost, &portal.room, &txn, Post::Message(content))
                        .await?;
                    first.get_or_insert(event);
                }
                first.ok_or_else(|| NetworkError::Other("a message in no part".into()))?
            }
            (None, _, _) => {
                let content = RoomMessageEventContent::notice_plain(format!(
                    "🔒 A message from {contact} could not be decrypted ({reason}). The bridge \
                     asked their device to repair the encrypted session; if they send it again, \
                     it replaces this notice."
                ));
                let txn = format!("in.{txn_base}");
                self.post_once(retry, &ghost, &portal.room, &txn, Post::Message(&content))
                    .await?
            }
        };
        let mapped = MappedEvent {
            event,
            placeholder: body.is_none(),
            ours: false,
            markable: relations.markable,
        };
        // Mapped at once, before anything else is sent: the user may answer the event as soon
        // as it shows. The contact's id last: the event maps back to it (what
        // replies and edits refer to).
        let server_key = ids.server_key();
        let entries: Vec<(&str, &MappedEvent)> = [server_key.as_deref(), ids.id.as_deref()]
            .into_iter()
            .flatten()
            .map(|id| (id, &mapped))
            .collect();
        self.put_mapped(login, &key, &entries, state)?;
        if body.is_some() {
            self.stop_typing(&key, &portal.room, &ghost).await;
        }
        Ok(())
    }

    /// The event a contact's correction edits: the contact's own earlier message, by the id
    /// the correction names. A correction of a message never bridged (or of the user's) is
    /// shown as a new message.
    fn correction_target(
        &self,
        key: &PortalKey,
        relations: &Relations,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let Some(id) = &relations.replaces else {
            return Ok(None);
        };
        Ok(self
            .store
            .event_of(key, id)?
            .filter(|m| !m.ours)
            .map(|m| m.event))
    }

    /// What the user sent in a portal before its ghost joined, sent now, in order. Synapse
    /// pushes a room's events to the appservice only once one of its users has joined, so
    /// messages sent while the ghost was only invited (the first message of a new DM) never
    /// arrive in a transaction. One page of the newest events is read; the user's messages not
    /// sent yet go to the portal's worker (recorded first, like a transaction's), and the
    /// message map makes a later live delivery of the same event change nothing.
    pub(super) async fn bridge_backlog(
        &self,
        key: &PortalKey,
        portal: &PortalRecord,
        ghost: &UserId,
        user: &UserId,
    ) {
        let events = match self
            .matrix
            .recent_events(ghost, &portal.room, BACKLOG_EVENTS)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                warn!(portal = %key, %error, "cannot read what was sent before the ghost joined");
                return;
            }
        };
        let mut earlier = Vec::new();
        for raw in events {
            let Ok(AnyTimelineEvent::MessageLike(event)) = raw.deserialize() else {
                continue;
            };
            let (sender, event_id) = match &event {
                AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(ev)) => {
                    (&ev.sender, &ev.event_id)
                }
                AnyMessageLikeEvent::RoomEncrypted(MessageLikeEvent::Original(ev)) => {
                    (&ev.sender, &ev.event_id)
                }
                _ => continue,
            };
            let already_sent = matches!(self.store.remote_of(event_id), Ok(Some(_)));
            if sender == user && !already_sent {
                earlier.push((portal.room.clone(), event_id.clone(), raw));
            }
        }
        if earlier.is_empty() {
            return;
        }
        info!(portal = %key, count = earlier.len(), "bridging what was sent before the ghost joined");
        if let Err(error) = self.record_and_dispatch(earlier).await {
            warn!(portal = %key, %error, "cannot record what was sent before the ghost joined");
        }
    }

    /// A contact's unencrypted message was refused (`network.unencrypted = "reject"`): say so
    /// in the portal, if there is one (no portal is opened for it).
    pub(super) async fn plain_refused(&self, login: &Login, contact: &RemoteUserId) {
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        info!(portal = %key, "an unencrypted message refused");
        let (Ok(Some(portal)), Ok(ghost)) = (
            self.store.portal(&key),
            self.settings.ghosts.ghost_of(contact),
        ) else {
            return;
        };
        let content = RoomMessageEventContent::notice_plain(format!(
            "🔓 {contact} sent a message without encryption. It was refused, and {contact} was \
             told that only encrypted messages are accepted (network.unencrypted = \"reject\")."
        ));
        if let Err(error) = self
            .matrix
            .send_message(&ghost, &portal.room, &super::fresh_txn("plain"), &content)
            .await
        {
            warn!(portal = %key, %error, "cannot tell the user of a refused message");
        }
    }

    /// A contact's device presented a new identity key, or the contact has a device the
    /// bridge had not seen: say so in the portal, with what the user can do about it.
    pub(super) async fn identity_changed(
        &self,
        login: &Login,
        contact: &RemoteUserId,
        device: u32,
        fingerprint: &str,
        trusted: bool,
        new_device: bool,
    ) {
        let key = PortalKey {
            login: login.jid.clone(),
            contact: contact.clone(),
        };
        let Ok(Some(portal)) = self.store.portal(&key) else {
            return;
        };
        let Ok(ghost) = self.settings.ghosts.ghost_of(contact) else {
            return;
        };
        let policy = if trusted {
            format!(
                "The bridge encrypts to it (network.trust = \"trust-on-first-use\"); say \
                 `untrust {contact} {fingerprint}` to me (the bridge bot) if it is not theirs."
            )
        } else {
            format!(
                "The bridge will not encrypt to it until you say `trust {contact} \
                 {fingerprint}` to me (the bridge bot)."
            )
        };
        let what = if new_device {
            format!("🔑 {contact} has a new device ({device}), fingerprint {fingerprint}.")
        } else {
            format!(
                "🔑 The identity key of {contact}'s device {device} changed. New fingerprint: \
                 {fingerprint}."
            )
        };
        let content = RoomMessageEventContent::notice_plain(format!(
            "{what} {policy} Compare it with what {contact}'s device shows (`safety-number \
             {contact}`) if you did not expect this."
        ));
        let txn = format!(
            "identity.{}",
            derived_id(&[key.login.as_str(), contact.as_str(), fingerprint])
        );
        if let Err(error) = self
            .matrix
            .send_message(&ghost, &portal.room, txn.as_str().into(), &content)
            .await
        {
            warn!(portal = %key, %error, "cannot post the identity-change notice");
        }
    }
}

/// The content of an edit (`m.replace`) that makes `original` read `content`: the new content,
/// and a "* "-prefixed body for clients without edits.
pub(super) fn replacement(
    content: &RoomMessageEventContent,
    original: &ruma::EventId,
) -> Result<serde_json::Value, NetworkError> {
    let new_content = serde_json::to_value(content)
        .map_err(|e| NetworkError::Other(format!("cannot encode an edit: {e}")))?;
    let mut edit = new_content.clone();
    if let Some(obj) = edit.as_object_mut() {
        obj.insert("m.new_content".into(), new_content);
        obj.insert(
            "m.relates_to".into(),
            json!({ "rel_type": "m.replace", "event_id": original }),
        );
        let fallback = obj.get("body").and_then(|b| b.as_str()).unwrap_or_default();
        obj.insert("body".into(), json!(format!("* {fallback}")));
    }
    Ok(edit)
}

/// `body` without the characters (Unicode scalar values, as XEP-0426 counts) in `range`; an
/// out-of-range or inverted range leaves it whole. Not `xmpp_omemo::strip_fallback`, which
/// clamps: a range past the end was miscounted (in bytes or UTF-16 units, say), and clamping
/// it would cut the reply's own text too, where this keeps the body whole, quote and all.
fn without_chars(body: &str, range: &std::ops::Range<usize>) -> String {
    let count = body.chars().count();
    if range.start >= range.end || range.end > count {
        return body.to_owned();
    }
    body.chars()
        .enumerate()
        .filter(|(i, _)| !range.contains(i))
        .map(|(_, c)| c)
        .collect()
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn a_fallback_is_cut_by_characters_not_bytes() {
        let body = "> héllo 👋\nhi";
        assert_eq!(without_chars(body, &(0..10)), "hi");
        assert_eq!(
            without_chars(body, &(0..99)),
            body,
            "out of range: kept whole"
        );
        assert_eq!(without_chars(body, &(3..3)), body);
    }
}
