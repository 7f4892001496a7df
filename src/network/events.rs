//! What the OMEMO client reports, turned into the core's events (`RemoteEvent`), and the
//! core's messages and signals turned into XMPP extensions.

use super::*;

/// An encrypted message for the core to decrypt in its contact's lane.
pub(super) fn encrypted_event(message: EncryptedMessage) -> Option<RemoteEvent> {
    match RemoteUserId::parse(message.peer().bare().as_str()) {
        Ok(contact) => Some(RemoteEvent::Encrypted {
            contact,
            message: Box::new(Sealed(message)),
        }),
        // No contact to show it for: decrypted (so the session advances) and acknowledged.
        Err(_) => {
            tokio::spawn(async move {
                let (_, event) = message.open().await;
                if let Some(
                    RemoteEvent::Message { ack, .. }
                    | RemoteEvent::SentElsewhere { ack, .. }
                    | RemoteEvent::Undecryptable { ack, .. }
                    | RemoteEvent::Ignored { ack },
                ) = event.and_then(convert_opened)
                    && let Err(error) = ack.commit().await
                {
                    warn!(%error, "cannot acknowledge a message");
                }
            });
            None
        }
    }
}

/// An [`EncryptedMessage`] as the core's [`Encrypted`].
pub(super) struct Sealed(pub(super) EncryptedMessage);

#[async_trait]
impl Encrypted for Sealed {
    fn discard(self: Box<Self>) {
        self.0.discard();
    }

    fn sent_by_user(&self) -> bool {
        self.0.carbon() == Some(Direction::Sent)
    }

    fn server_id(&self) -> Option<String> {
        self.0.stanza_id().map(str::to_owned)
    }

    fn archived(&self) -> bool {
        self.0.archived()
    }

    async fn decrypt(self: Box<Self>) -> Vec<RemoteEvent> {
        let (changes, event) = self.0.open().await;
        changes
            .into_iter()
            .map(OmemoEvent::IdentityChanged)
            .chain(event)
            .filter_map(convert_opened)
            .collect()
    }
}

/// What a decryption gave, as the core's event.
pub(super) fn convert_opened(event: OmemoEvent) -> Option<RemoteEvent> {
    convert_event(event, &AtomicBool::new(false))
}

/// The core's view of one event; `None` for what the core does not need.
pub(super) fn convert_event(event: OmemoEvent, connected: &AtomicBool) -> Option<RemoteEvent> {
    match event {
        OmemoEvent::Encrypted(message) => encrypted_event(message),
        OmemoEvent::Connected { resumed, .. } => {
            connected.store(true, Ordering::Relaxed);
            Some(RemoteEvent::Connected { resumed })
        }
        OmemoEvent::CaughtUp(report) => Some(RemoteEvent::CaughtUp {
            round: report.round,
            fetched: report.fetched,
            complete: report.complete,
            failed: report.failed.is_some(),
        }),
        OmemoEvent::Disconnected { reason, retry_in } => {
            connected.store(false, Ordering::Relaxed);
            Some(RemoteEvent::Disconnected {
                reason: failure_text(&reason),
                retry_in,
            })
        }
        OmemoEvent::Published { device } => {
            info!(device = device.get(), "OMEMO device and bundle published");
            None
        }
        OmemoEvent::PublishFailed { reason } => {
            warn!(%reason, "publishing the OMEMO device failed");
            None
        }
        OmemoEvent::Message(message) => {
            let nick = message.nick.clone();
            let ack = Box::new(DeliveryAck(message.delivery));
            let Ok(contact) = RemoteUserId::parse(message.peer.bare().as_str()) else {
                return Some(RemoteEvent::Ignored { ack });
            };
            // What the user sent from another client of the account (its peer is the
            // recipient): shown in that contact's portal as the user's.
            if message.carbon == Some(Direction::Sent) {
                return Some(RemoteEvent::SentElsewhere {
                    contact,
                    id: message.origin_id.or(message.id),
                    body: message.body,
                    ack,
                });
            }
            Some(RemoteEvent::Message {
                contact,
                relations: relations_of(&message.extensions),
                id: message.origin_id.or(message.id),
                server_id: message.stanza_id,
                oob_url: message.extensions.oob_url.clone(),
                client: Some(message.from.to_string()),
                body: message.body,
                nick,
                encrypted: true,
                ack,
            })
        }
        OmemoEvent::Meta(meta) => Some(meta_event(meta)),
        OmemoEvent::Undecryptable(failed) => {
            let ack = Box::new(DeliveryAck(failed.delivery));
            let quiet = matches!(failed.carbon, Some(Direction::Sent))
                || (!failed.has_payload && matches!(failed.error, DecryptError::NotForThisDevice));
            let contact = RemoteUserId::parse(failed.from.bare().as_str());
            let (false, Ok(contact)) = (quiet, contact) else {
                return Some(RemoteEvent::Ignored { ack });
            };
            Some(RemoteEvent::Undecryptable {
                contact,
                id: failed.id,
                server_id: failed.stanza_id,
                duplicate: matches!(failed.error, DecryptError::Duplicate),
                reason: failed.error.to_string(),
                ack,
            })
        }
        // Handled by `PlainPolicy` in `pump`, which can answer the sender.
        OmemoEvent::Plain(plain) => Some(RemoteEvent::Ignored {
            ack: Box::new(DeliveryAck(plain.delivery)),
        }),
        OmemoEvent::IdentityChanged(change) => {
            let contact = RemoteUserId::parse(&change.device.jid).ok()?;
            Some(RemoteEvent::IdentityChanged {
                contact,
                device: change.device.device.get(),
                fingerprint: fingerprint(&change.new_key),
                trusted: change.trusted,
                new_device: change.old_key.is_none(),
            })
        }
        OmemoEvent::DeviceList { .. } => None,
        OmemoEvent::Roster(Event::Roster(query)) => {
            debug!(contacts = query.items.len(), "roster received");
            Some(RemoteEvent::Contacts(
                query.items.into_iter().filter_map(contact_update).collect(),
            ))
        }
        OmemoEvent::Roster(Event::RosterPush(item)) => {
            contact_update(item).map(|update| RemoteEvent::Contacts(vec![update]))
        }
        OmemoEvent::Roster(_) => None,
        OmemoEvent::Subscription { from, kind, nick } => match kind {
            PresenceType::Subscribe => Some(RemoteEvent::SubscriptionRequest {
                contact: RemoteUserId::parse(from.bare().as_str()).ok()?,
                nick,
            }),
            _ => None,
        },
        OmemoEvent::Blocklist(_) => None,
        // Kept by the pump's presence book.
        OmemoEvent::Presence(_) => None,
    }
}

/// A contact's stanza that is not a message (reactions, a retraction, a marker, a receipt, a
/// chat state) as the core's signals; one with none the core knows is only acknowledged.
pub(super) fn meta_event(meta: MetaMessage) -> RemoteEvent {
    let ack = Box::new(DeliveryAck(meta.delivery));
    let signals = signals_of(&meta.extensions);
    match RemoteUserId::parse(meta.from.bare().as_str()) {
        Ok(contact) if !signals.is_empty() => RemoteEvent::Signals {
            contact,
            signals,
            ack,
        },
        _ => RemoteEvent::Ignored { ack },
    }
}

/// What a message's extensions say about earlier messages.
pub(super) fn relations_of(extensions: &Extensions) -> Relations {
    Relations {
        reply_to: extensions.reply.as_ref().map(|r| r.id.clone()),
        reply_fallback: extensions.reply_fallback.clone(),
        replaces: extensions.replace.clone(),
        markable: extensions.markable,
    }
}

/// The signals among a stanza's extensions, in a fixed order.
pub(super) fn signals_of(extensions: &Extensions) -> Vec<Signal> {
    let mut signals = Vec::new();
    if let Some(reactions) = &extensions.reactions {
        signals.push(Signal::Reactions {
            to: reactions.id.clone(),
            keys: reactions.emojis.clone(),
        });
    }
    if let Some(id) = &extensions.retract {
        signals.push(Signal::Retract { id: id.clone() });
    }
    if let Some(id) = &extensions.displayed {
        signals.push(Signal::Displayed { id: id.clone() });
    }
    if let Some(id) = &extensions.received {
        signals.push(Signal::Received { id: id.clone() });
    }
    if let Some(state) = extensions.chat_state {
        signals.push(Signal::Typing(match state {
            ChatState::Composing => Typing::Composing,
            ChatState::Paused => Typing::Paused,
            ChatState::Active | ChatState::Inactive | ChatState::Gone => Typing::Stopped,
        }));
    }
    signals
}

/// The extensions of an outgoing message: what it refers to, and the requests every message
/// of ours carries (a read marker, the `active` chat state and, when `request_receipt`, a
/// delivery receipt).
pub(super) fn message_extensions(message: &OutgoingMessage, request_receipt: bool) -> Extensions {
    Extensions {
        reply: message.reply.as_ref().map(|r| Reply {
            to: Some(r.author.to_string()),
            id: r.id.clone(),
        }),
        reply_fallback: message.reply.as_ref().and_then(|r| r.fallback.clone()),
        replace: message.replaces.clone(),
        chat_state: Some(ChatState::Active),
        markable: true,
        request_receipt,
        ..Extensions::default()
    }
}

/// One signal as the extensions of a stanza of its own.
pub(super) fn signal_extensions(signal: &Signal) -> Extensions {
    let mut extensions = Extensions::default();
    match signal {
        Signal::Reactions { to, keys } => {
            extensions.reactions = Some(Reactions {
                id: to.clone(),
                emojis: keys.clone(),
            });
        }
        Signal::Retract { id } => extensions.retract = Some(id.clone()),
        Signal::Displayed { id } => extensions.displayed = Some(id.clone()),
        Signal::Received { id } => extensions.received = Some(id.clone()),
        Signal::Typing(typing) => {
            extensions.chat_state = Some(match typing {
                Typing::Composing => ChatState::Composing,
                Typing::Paused => ChatState::Paused,
                Typing::Stopped => ChatState::Active,
            });
        }
    }
    extensions
}

pub(super) fn contact_update(item: RosterItem) -> Option<ContactUpdate> {
    let contact = RemoteUserId::parse(item.jid.bare().as_str()).ok()?;
    Some(ContactUpdate {
        contact,
        name: item.name,
        removed: item.subscription == Subscription::Remove,
    })
}

/// A message's [`Delivery`] as the core's [`Ack`].
pub(super) struct DeliveryAck(pub(super) Delivery);

#[async_trait]
impl Ack for DeliveryAck {
    async fn commit(self: Box<Self>) -> Result<(), NetworkError> {
        self.0
            .commit()
            .await
            .map_err(|e| NetworkError::Other(e.to_string()))
    }

    fn take_state(&mut self) -> Option<PendingState> {
        let (changes, guard) = self.0.take_state()?.into_parts();
        Some(PendingState {
            changes,
            guard: Box::new(guard),
        })
    }
}
