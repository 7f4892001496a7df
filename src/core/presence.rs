//! Contacts' presence on their ghosts. Each login reports what it sees of a contact (the
//! network folds the contact's clients into one [`Availability`]); the ghost shows the most
//! available report of any login, and a keeper task sets it on the homeserver — at once when
//! it changes, and again every `presence_refresh` while it is not offline, because the
//! homeserver times presence out. Only contacts with a portal are shown: a presence is visible
//! only to those who share a room with the ghost. The user's own presence is never sent to
//! contacts.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use ruma::OwnedUserId;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::logins::Login;
use super::{Availability, Bridge};
use crate::ids::{PortalKey, RemoteUserId};
use crate::store::PortalState;

/// At most this many ghosts are tracked (each login's network side bounds its own contacts).
const MAX_GHOSTS: usize = 50_000;

/// What one login sees of a contact.
type Report = (Availability, Option<String>);

/// The ghosts' presence as reported, and as last set on the homeserver.
#[derive(Default)]
pub(super) struct Presences {
    ghosts: StdMutex<HashMap<OwnedUserId, Shown>>,
    wake: Notify,
}

#[derive(Default)]
struct Shown {
    /// Per login that sees the contact online or away.
    reports: HashMap<RemoteUserId, Report>,
    /// What was last set, and when.
    sent: Option<(Report, Instant)>,
}

impl Shown {
    /// The most available report (on a tie, one with a status text).
    fn wanted(&self) -> Report {
        self.reports
            .values()
            .min_by_key(|(availability, status)| (rank(*availability), status.is_none()))
            .cloned()
            .unwrap_or((Availability::Offline, None))
    }

    /// What to set now, if anything: a change, or a refresh of a presence that is not offline.
    fn due(&self, now: Instant, refresh: Duration) -> Option<Report> {
        let wanted = self.wanted();
        match &self.sent {
            Some((sent, at)) if *sent == wanted => (wanted.0 != Availability::Offline
                && now.duration_since(*at) >= refresh)
                .then_some(wanted),
            _ => Some(wanted),
        }
    }
}

fn rank(availability: Availability) -> u8 {
    match availability {
        Availability::Online => 0,
        Availability::Away => 1,
        Availability::Offline => 2,
    }
}

impl Presences {
    /// Records `login`'s view of the ghost's contact; whether the keeper has work.
    fn report(
        &self,
        ghost: OwnedUserId,
        login: &RemoteUserId,
        availability: Availability,
        status: Option<String>,
    ) -> bool {
        let mut ghosts = self
            .ghosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Offline is what an untracked ghost already shows: nothing to set.
        if !ghosts.contains_key(&ghost)
            && (availability == Availability::Offline || ghosts.len() >= MAX_GHOSTS)
        {
            return false;
        }
        let shown = ghosts.entry(ghost).or_default();
        let before = shown.wanted();
        match availability {
            Availability::Offline => shown.reports.remove(login),
            _ => shown.reports.insert(login.clone(), (availability, status)),
        };
        shown.wanted() != before
    }

    /// `login` ended: it sees nobody any more.
    fn forget_login(&self, login: &RemoteUserId) -> bool {
        let mut ghosts = self
            .ghosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = false;
        for shown in ghosts.values_mut() {
            changed |= shown.reports.remove(login).is_some();
        }
        changed
    }

    /// The presences to set now; each counts as set (a failure marks it unsent again).
    fn take_due(&self, refresh: Duration) -> Vec<(OwnedUserId, Report)> {
        let now = Instant::now();
        let mut ghosts = self
            .ghosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut due = Vec::new();
        for (ghost, shown) in ghosts.iter_mut() {
            if let Some(report) = shown.due(now, refresh) {
                shown.sent = Some((report.clone(), now));
                due.push((ghost.clone(), report));
            }
        }
        // Offline and set: nothing more to do for them.
        ghosts.retain(|_, shown| {
            !(shown.reports.is_empty()
                && matches!(&shown.sent, Some(((Availability::Offline, _), _))))
        });
        due
    }

    fn unsent(&self, ghost: &OwnedUserId) {
        if let Some(shown) = self
            .ghosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(ghost)
        {
            shown.sent = None;
        }
    }
}

impl Bridge {
    /// What `login` sees of `contact` changed; shown on the contact's ghost if they have a
    /// portal with this login (or were shown before).
    pub(super) fn presence_seen(
        &self,
        login: &Login,
        contact: RemoteUserId,
        availability: Availability,
        status: Option<String>,
    ) {
        if self.settings.presence_refresh.is_none() {
            return;
        }
        let Ok(ghost) = self.settings.ghosts.ghost_of(&contact) else {
            return;
        };
        let key = PortalKey {
            login: login.jid.clone(),
            contact,
        };
        let in_portal = matches!(
            self.store.portal(&key),
            Ok(Some(p)) if p.state != PortalState::Declined
        );
        let known = self
            .presences
            .ghosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&ghost);
        if !in_portal && !known {
            return;
        }
        if self
            .presences
            .report(ghost, &login.jid, availability, status)
        {
            self.presences.wake.notify_one();
        }
    }

    /// `login` ended: the contacts only it saw go offline.
    pub(super) fn presence_login_ended(&self, login: &RemoteUserId) {
        if self.presences.forget_login(login) {
            self.presences.wake.notify_one();
        }
    }

    /// Starts the keeper task (once, from `start`), unless presence is not bridged.
    pub(super) fn start_presence_keeper(&self) {
        let Some(refresh) = self.settings.presence_refresh else {
            return;
        };
        let this = self.this.clone();
        tokio::spawn(async move {
            // Checked a few times per refresh period; changes wake it at once, after a short
            // pause that lets a flap (offline and back, in a reconnect) cancel out.
            let tick = (refresh / 4).max(Duration::from_millis(250));
            loop {
                let Some(bridge) = this.upgrade() else {
                    return;
                };
                let woken = tokio::select! {
                    () = bridge.presences.wake.notified() => true,
                    () = tokio::time::sleep(tick) => false,
                };
                if woken {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for (ghost, (availability, status)) in bridge.presences.take_due(refresh) {
                    debug!(ghost = %ghost, ?availability, "presence");
                    if let Err(error) = bridge
                        .matrix
                        .set_presence(&ghost, availability, status.as_deref())
                        .await
                    {
                        warn!(ghost = %ghost, %error, "cannot set a ghost's presence");
                        bridge.presences.unsent(&ghost);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(name: &str) -> RemoteUserId {
        RemoteUserId::parse(&format!("{name}@x.test")).expect("jid")
    }

    #[test]
    fn the_most_available_login_speaks_and_set_presence_is_refreshed_until_offline() {
        let presences = Presences::default();
        let ghost: OwnedUserId = "@interop_bob=40x.test:hs".try_into().expect("user id");
        let refresh = Duration::from_secs(20);
        assert!(presences.report(
            ghost.clone(),
            &login("a"),
            Availability::Away,
            Some("out".into())
        ));
        assert!(presences.report(ghost.clone(), &login("b"), Availability::Online, None));
        let due = presences.take_due(refresh);
        assert_eq!(due, vec![(ghost.clone(), (Availability::Online, None))]);
        // Nothing new within the period; a refresh after it.
        assert!(presences.take_due(refresh).is_empty());
        assert_eq!(presences.take_due(Duration::ZERO).len(), 1);
        // B ends: A's view shows; then A sees bob go offline.
        assert!(presences.forget_login(&login("b")));
        assert_eq!(
            presences.take_due(refresh),
            vec![(ghost.clone(), (Availability::Away, Some("out".into())))]
        );
        assert!(presences.report(ghost.clone(), &login("a"), Availability::Offline, None));
        assert_eq!(
            presences.take_due(refresh),
            vec![(ghost.clone(), (Availability::Offline, None))]
        );
        // Offline is set once, then forgotten.
        assert!(presences.take_due(Duration::ZERO).is_empty());
        assert!(presences.ghosts.lock().expect("lock").is_empty());
    }

    #[test]
    fn offline_for_a_ghost_never_shown_sets_nothing() {
        let presences = Presences::default();
        let ghost: OwnedUserId = "@interop_bob=40x.test:hs".try_into().expect("user id");
        assert!(!presences.report(ghost, &login("a"), Availability::Offline, None));
        assert!(presences.take_due(Duration::ZERO).is_empty());
    }

    #[test]
    fn a_failed_setting_is_tried_again() {
        let presences = Presences::default();
        let ghost: OwnedUserId = "@interop_bob=40x.test:hs".try_into().expect("user id");
        presences.report(ghost.clone(), &login("a"), Availability::Online, None);
        assert_eq!(presences.take_due(Duration::from_secs(20)).len(), 1);
        presences.unsent(&ghost);
        assert_eq!(presences.take_due(Duration::from_secs(20)).len(), 1);
    }
}
