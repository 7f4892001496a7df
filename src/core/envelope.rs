//! The top-level fields of a transaction's event that decide where it goes, read in one pass
//! over its JSON (each `Raw::get_field` is a pass of its own, and the loop asked for seven).

use ruma::UserId;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::BridgeSettings as Settings;

/// Where an event comes from and what it is, without its content. An event whose envelope
/// fields have the wrong JSON types reads as all `None`: it is no echo and no worker event,
/// and the full parse after reports it as malformed.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Envelope {
    pub event_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub room_id: Option<String>,
    pub sender: Option<String>,
    /// Present (not null) on state events only.
    state_key: Option<IgnoredAny>,
}

impl Envelope {
    pub fn of<T>(raw: &ruma::serde::Raw<T>) -> Self {
        serde_json::from_str(raw.json().get()).unwrap_or_default()
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Whether the sender is the bot or one of the ghosts.
    pub fn sent_by_us(&self, settings: &Settings) -> bool {
        self.sender
            .as_deref()
            .is_some_and(|sender| UserId::parse(sender).is_ok_and(|s| settings.is_ours(&s)))
    }

    /// One of the bridge's own posts coming back (a message-like event of the bot or a
    /// ghost). The transaction loop does nothing with one (`handle_event` acts on memberships
    /// and on messages of other senders only), so it is skipped before it is parsed. A state
    /// event never is one: memberships of our own users move portals.
    pub fn is_echo(&self, settings: &Settings) -> bool {
        !self.is_state() && self.sent_by_us(settings)
    }
}

/// The event ids of a transaction for a log line, formatted only when the line is written.
pub(super) struct EventIds<'a>(pub &'a [Envelope]);

impl std::fmt::Debug for EventIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().filter_map(|e| e.event_id.as_deref()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::events::AnyTimelineEvent;
    use ruma::serde::Raw;

    fn envelope(json: serde_json::Value) -> Envelope {
        let raw: Raw<AnyTimelineEvent> = Raw::new(&json).expect("raw").cast_unchecked();
        Envelope::of(&raw)
    }

    #[test]
    fn reads_the_routing_fields_and_whether_it_is_state() {
        let message = envelope(serde_json::json!({
            "type": "m.room.message", "event_id": "$m", "room_id": "!r:hs", "sender": "@a:hs",
            "origin_server_ts": 1, "content": {"body": "not read", "nested": {"state_key": "x"}},
        }));
        assert_eq!(message.kind.as_deref(), Some("m.room.message"));
        assert_eq!(message.event_id.as_deref(), Some("$m"));
        assert_eq!(message.room_id.as_deref(), Some("!r:hs"));
        assert_eq!(message.sender.as_deref(), Some("@a:hs"));
        assert!(
            !message.is_state(),
            "a state_key inside the content is not the event's"
        );
        let member = envelope(serde_json::json!({
            "type": "m.room.member", "state_key": "", "sender": "@a:hs", "content": {},
        }));
        assert!(
            member.is_state(),
            "an empty state_key is still a state event"
        );
    }

    #[test]
    fn wrong_types_read_as_nothing() {
        let odd = envelope(serde_json::json!({"type": 5, "sender": "@a:hs", "state_key": "s"}));
        assert!(odd.kind.is_none() && odd.sender.is_none() && !odd.is_state());
        assert_eq!(
            format!(
                "{:?}",
                EventIds(&[envelope(serde_json::json!({"event_id": "$x"})), odd])
            ),
            r#"["$x"]"#
        );
    }
}
