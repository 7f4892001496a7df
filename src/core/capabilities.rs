//! Visible degradation: when the user replies, edits, reacts or deletes and none of the
//! contact's online clients announces support for it, the portal is told once (per portal and
//! feature, while the bridge runs) that the contact may not see it. What was sent stays sent:
//! the stanza carries a readable fallback where the XEP has one.

use std::collections::HashSet;
use std::sync::Mutex as StdMutex;

use ruma::OwnedRoomId;
use ruma::events::room::message::RoomMessageEventContent;
use tracing::{debug, warn};

use super::{Bridge, Capabilities, derived_id};
use crate::ids::PortalKey;

/// At most this many notices are remembered; beyond it the memory starts again (a notice may
/// then be repeated once).
const MAX_NOTICED: usize = 10_000;

/// Something the user did that the contact's client has to understand to show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Feature {
    Replies,
    Corrections,
    Reactions,
    Retractions,
}

impl Feature {
    fn supported(self, by: &Capabilities) -> bool {
        match self {
            Feature::Replies => by.replies,
            Feature::Corrections => by.corrections,
            Feature::Reactions => by.reactions,
            Feature::Retractions => by.retractions,
        }
    }

    fn notice(self, contact: &str) -> String {
        let what = match self {
            Feature::Replies => "replies (XEP-0461): they see your reply as a quote",
            Feature::Corrections => {
                "message corrections (XEP-0308): they may see your edit as a new message"
            }
            Feature::Reactions => "reactions (XEP-0444): they may not see your reactions",
            Feature::Retractions => {
                "message retraction (XEP-0424): they may still see the message you deleted"
            }
        };
        format!("ℹ️ {contact}'s client does not support {what}.")
    }
}

/// The (portal, feature) pairs already told about.
#[derive(Default)]
pub(super) struct Noticed(StdMutex<HashSet<(PortalKey, Feature)>>);

impl Noticed {
    /// Marks the pair told; `false` if it was already.
    fn first(&self, key: &PortalKey, feature: Feature) -> bool {
        let mut told = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if told.len() >= MAX_NOTICED {
            told.clear();
        }
        told.insert((key.clone(), feature))
    }

    fn forget(&self, key: &PortalKey, feature: Feature) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(key.clone(), feature));
    }
}

impl Bridge {
    /// After the user's `feature` went to the contact of `key`: in a task of its own (asking a
    /// client what it supports can take a round trip), tells the portal once if none of the
    /// contact's online clients supports it. Unknown support (offline contact, no answer) says
    /// nothing.
    pub(super) fn check_support(&self, key: &PortalKey, room: &OwnedRoomId, feature: Feature) {
        if !self.noticed.first(key, feature) {
            return;
        }
        let login = self.logins_lock().get(&key.login).cloned();
        let (Some(bridge), Some(login)) = (self.this.upgrade(), login) else {
            self.noticed.forget(key, feature);
            return;
        };
        let (key, room) = (key.clone(), room.clone());
        tokio::spawn(async move {
            let supported = match login.client.capabilities(&key.contact).await {
                Some(capabilities) => feature.supported(&capabilities),
                None => {
                    // Not known now: ask again next time.
                    bridge.noticed.forget(&key, feature);
                    return;
                }
            };
            if supported {
                return;
            }
            debug!(portal = %key, ?feature, "the contact's clients lack a feature");
            let Ok(ghost) = bridge.settings.ghosts.ghost_of(&key.contact) else {
                return;
            };
            let content =
                RoomMessageEventContent::notice_plain(feature.notice(key.contact.as_str()));
            let txn = format!(
                "unsupported.{}",
                derived_id(&[
                    key.login.as_str(),
                    key.contact.as_str(),
                    &format!("{feature:?}")
                ])
            );
            if let Err(error) = bridge
                .matrix
                .send_message(&ghost, &room, txn.as_str().into(), &content)
                .await
            {
                warn!(portal = %key, %error, "cannot post the unsupported-feature notice");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_portal_and_feature_is_told_once() {
        let noticed = Noticed::default();
        let key = PortalKey {
            login: crate::ids::RemoteUserId::parse("alice@x.test").expect("jid"),
            contact: crate::ids::RemoteUserId::parse("bob@x.test").expect("jid"),
        };
        assert!(noticed.first(&key, Feature::Reactions));
        assert!(!noticed.first(&key, Feature::Reactions));
        assert!(noticed.first(&key, Feature::Replies));
        noticed.forget(&key, Feature::Reactions);
        assert!(noticed.first(&key, Feature::Reactions));
    }

    #[test]
    fn support_is_read_per_feature() {
        let caps = Capabilities {
            reactions: true,
            ..Capabilities::default()
        };
        assert!(Feature::Reactions.supported(&caps));
        assert!(!Feature::Retractions.supported(&caps));
        assert!(
            Feature::Corrections
                .notice("bob@x.test")
                .starts_with("ℹ️ bob@x.test's client")
        );
    }
}
