//! Contacts' availability, per login: every resource's last presence, folded into one state per
//! contact for the core (the most available resource speaks), and the resources' XEP-0115 caps
//! for asking what the contact's clients support.
//!
//! Bounded against a server or strangers sending presence from ever new JIDs or resources:
//! at most [`MAX_CONTACTS`] contacts of [`MAX_RESOURCES`] resources each are tracked, the rest
//! ignored; status texts are cut to [`MAX_STATUS`] characters.

use std::collections::{BTreeMap, HashMap};

use xmpp_omemo::Jid;
use xmpp_omemo::omemo::ContactPresence;
use xmpp_omemo::stanza::caps::Caps;
use xmpp_omemo::stanza::presence::Show;

use crate::core::{Availability, RemoteEvent};
use crate::ids::RemoteUserId;

pub(super) const MAX_CONTACTS: usize = 10_000;
pub(super) const MAX_RESOURCES: usize = 16;
pub(super) const MAX_STATUS: usize = 512;

/// One resource's last available presence.
#[derive(Clone, PartialEq, Eq)]
struct Resource {
    show: Option<Show>,
    status: Option<String>,
    caps: Option<Caps>,
    /// Announced before the last reconnect that did not resume, not since.
    stale: bool,
}

/// What a contact looks like from outside: the state and status shown for them.
pub(super) type Shown = (Availability, Option<String>);

#[derive(Default)]
pub(super) struct PresenceBook {
    contacts: HashMap<RemoteUserId, BTreeMap<String, Resource>>,
}

impl PresenceBook {
    /// Records `seen`; the contact's new state when it changed what is shown for them.
    pub(super) fn update(&mut self, seen: ContactPresence) -> Option<RemoteEvent> {
        let contact = RemoteUserId::parse(seen.from.bare().as_str()).ok()?;
        let resource = seen.from.to_string();
        let before = self.shown(&contact);
        if seen.available {
            if !self.contacts.contains_key(&contact) && self.contacts.len() >= MAX_CONTACTS {
                return None;
            }
            let resources = self.contacts.entry(contact.clone()).or_default();
            if !resources.contains_key(&resource) && resources.len() >= MAX_RESOURCES {
                return None;
            }
            let status = seen
                .status
                .map(|s| s.trim().chars().take(MAX_STATUS).collect::<String>())
                .filter(|s| !s.is_empty());
            resources.insert(
                resource,
                Resource {
                    show: seen.show,
                    status,
                    caps: seen.caps,
                    stale: false,
                },
            );
        } else if let Some(resources) = self.contacts.get_mut(&contact) {
            resources.remove(&resource);
            if resources.is_empty() {
                self.contacts.remove(&contact);
            }
        }
        self.changed(contact, before)
    }

    /// After a reconnect that did not resume: the server announces every available contact
    /// again, so what is not announced again by [`Self::sweep`] has gone.
    pub(super) fn mark_stale(&mut self) {
        for resource in self.contacts.values_mut().flat_map(|r| r.values_mut()) {
            resource.stale = true;
        }
    }

    /// Drops the resources not announced since [`Self::mark_stale`]; the contacts whose shown
    /// state changed by it.
    pub(super) fn sweep(&mut self) -> Vec<RemoteEvent> {
        let contacts: Vec<RemoteUserId> = self.contacts.keys().cloned().collect();
        let mut changes = Vec::new();
        for contact in contacts {
            let before = self.shown(&contact);
            if let Some(resources) = self.contacts.get_mut(&contact) {
                resources.retain(|_, r| !r.stale);
                if resources.is_empty() {
                    self.contacts.remove(&contact);
                }
            }
            changes.extend(self.changed(contact, before));
        }
        changes
    }

    /// Forgets everyone (the login ended): each contact shown before is now offline.
    pub(super) fn clear(&mut self) -> Vec<RemoteEvent> {
        self.contacts
            .drain()
            .map(|(contact, _)| RemoteEvent::Presence {
                contact,
                availability: Availability::Offline,
                status: None,
            })
            .collect()
    }

    /// What is shown for the contact now; `None` when none of their resources is online.
    pub(super) fn current(&self, contact: &RemoteUserId) -> Option<Shown> {
        self.contacts
            .contains_key(contact)
            .then(|| self.shown(contact))
    }

    /// The contact's available resources with the caps each announced.
    pub(super) fn resources(&self, contact: &RemoteUserId) -> Vec<(Jid, Option<Caps>)> {
        self.contacts
            .get(contact)
            .into_iter()
            .flatten()
            .filter_map(|(jid, r)| Some((Jid::parse(jid).ok()?, r.caps.clone())))
            .collect()
    }

    fn changed(&self, contact: RemoteUserId, before: Shown) -> Option<RemoteEvent> {
        let (availability, status) = self.shown(&contact);
        (before != (availability, status.clone())).then_some(RemoteEvent::Presence {
            contact,
            availability,
            status,
        })
    }

    /// The most available resource's state and status (on a tie, the first by JID).
    fn shown(&self, contact: &RemoteUserId) -> Shown {
        let best = self
            .contacts
            .get(contact)
            .into_iter()
            .flatten()
            .min_by_key(|(_, r)| rank(r.show));
        match best {
            None => (Availability::Offline, None),
            Some((_, r)) => {
                let availability = match r.show {
                    None | Some(Show::Chat) => Availability::Online,
                    Some(Show::Away | Show::Xa | Show::Dnd) => Availability::Away,
                };
                (availability, r.status.clone())
            }
        }
    }
}

/// RFC 6121 §4.7.2.1's sub-states, most available first.
fn rank(show: Option<Show>) -> u8 {
    match show {
        Some(Show::Chat) => 0,
        None => 1,
        Some(Show::Away) => 2,
        Some(Show::Dnd) => 3,
        Some(Show::Xa) => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        from: &str,
        available: bool,
        show: Option<Show>,
        status: Option<&str>,
    ) -> ContactPresence {
        ContactPresence {
            from: Jid::parse(from).expect("jid"),
            available,
            show,
            status: status.map(str::to_owned),
            caps: None,
        }
    }

    fn shown(event: Option<RemoteEvent>) -> Option<(String, Availability, Option<String>)> {
        match event? {
            RemoteEvent::Presence {
                contact,
                availability,
                status,
            } => Some((contact.to_string(), availability, status)),
            _ => None,
        }
    }

    #[test]
    fn the_most_available_resource_speaks_and_repeats_are_not_reported() {
        let mut book = PresenceBook::default();
        let phone = "bob@x.test/phone";
        let laptop = "bob@x.test/laptop";
        assert_eq!(
            shown(book.update(seen(phone, true, Some(Show::Away), Some("out")))),
            Some(("bob@x.test".into(), Availability::Away, Some("out".into())))
        );
        assert_eq!(
            shown(book.update(seen(laptop, true, None, Some(" at my desk ")))),
            Some((
                "bob@x.test".into(),
                Availability::Online,
                Some("at my desk".into())
            ))
        );
        // The phone's change does not change what is shown.
        assert_eq!(
            shown(book.update(seen(phone, true, Some(Show::Xa), None))),
            None
        );
        assert_eq!(
            shown(book.update(seen(laptop, false, None, None))),
            Some(("bob@x.test".into(), Availability::Away, None))
        );
        assert_eq!(
            shown(book.update(seen(phone, false, None, None))),
            Some(("bob@x.test".into(), Availability::Offline, None))
        );
        assert!(book.contacts.is_empty());
    }

    #[test]
    fn after_a_fresh_session_what_is_not_announced_again_goes_offline() {
        let mut book = PresenceBook::default();
        book.update(seen("bob@x.test/a", true, None, None));
        book.update(seen("eve@x.test/a", true, None, None));
        book.mark_stale();
        assert_eq!(
            shown(book.update(seen("bob@x.test/a", true, None, None))),
            None
        );
        let gone: Vec<_> = book
            .sweep()
            .into_iter()
            .filter_map(|e| shown(Some(e)))
            .collect();
        assert_eq!(
            gone,
            vec![("eve@x.test".into(), Availability::Offline, None)]
        );
        assert_eq!(
            book.resources(&RemoteUserId::parse("bob@x.test").expect("jid"))
                .len(),
            1
        );
        assert_eq!(book.clear().len(), 1);
    }

    #[test]
    fn strangers_cannot_grow_the_book_without_bound() {
        let mut book = PresenceBook::default();
        for i in 0..MAX_RESOURCES + 5 {
            book.update(seen(&format!("bob@x.test/r{i}"), true, None, None));
        }
        assert_eq!(
            book.contacts.values().next().map(BTreeMap::len),
            Some(MAX_RESOURCES)
        );
        let long = "ü".repeat(MAX_STATUS * 4);
        let event = book.update(seen("eve@x.test/a", true, None, Some(&long)));
        let status = shown(event).and_then(|(_, _, s)| s).expect("a status");
        assert_eq!(status.chars().count(), MAX_STATUS);
    }
}
