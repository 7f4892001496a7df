//! Catch-up after downtime: what reached the account while we were away, read back from our
//! own archive (XEP-0313, `stanza/mam.rs`) page by page, oldest first.
//!
//! Each archived message goes through the same inbound path as a live one (carbons-like for
//! what our account sent from another client), with its archive id as its server stanza-id and
//! the outer result stanza's tag in its [`Delivery`](super::Delivery), so the result is
//! acknowledged when the message is committed. The query's answer travels behind its results
//! ([`Client::iq_in_order`](crate::stream::Client::iq_in_order)), so a page is counted only
//! once every result of it went to the owner, and [`OmemoEvent::CaughtUp`] comes after them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{InboundTag, Iq, IqPayload, OmemoClient, OmemoError, OmemoEvent, Shared};
use crate::stanza::carbons::Direction;
use crate::stanza::mam::{self, Archived, Fin, Page};
use crate::stanza::message::StanzaId;
use crate::stream::Error as StreamError;

/// Results asked for in one page.
const PAGE: usize = 50;
/// At most this many queries are listened for at once (older ones are forgotten).
const MAX_OPEN_QUERIES: usize = 4;

/// What [`OmemoClient::catch_up`] fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpReport {
    /// The caller's number for this catch-up (see [`OmemoClient::catch_up`]).
    pub round: u64,
    /// Why it stopped early, if it failed (the server keeps no archive, the query timed out,
    /// the connection dropped); what was fetched before still counts.
    pub failed: Option<String>,
    /// Archived messages handed on (each as the event a live one would have been).
    pub fetched: usize,
    /// The archive had nothing more: `false` when the limit stopped the catch-up early (the
    /// rest was skipped), or when the fallback to the newest messages may have left a gap.
    pub complete: bool,
    /// The archive id of the last message fetched.
    pub last: Option<String>,
    /// The id to start after was unknown to the server (`item-not-found`): the newest
    /// messages were fetched instead, up to the limit.
    pub fell_back: bool,
}

#[derive(Debug)]
struct Query {
    id: String,
    accepted: usize,
    last: Option<String>,
}

/// The queries whose results we accept, by query id.
#[derive(Default)]
pub(super) struct Queries {
    open: std::sync::Mutex<Vec<Query>>,
    next: AtomicU64,
}

impl Queries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Query>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self) -> String {
        let id = format!("catch-up-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let mut open = self.lock();
        if open.len() >= MAX_OPEN_QUERIES {
            open.remove(0);
        }
        open.push(Query {
            id: id.clone(),
            accepted: 0,
            last: None,
        });
        id
    }

    fn is_open(&self, queryid: &str) -> bool {
        self.lock().iter().any(|q| q.id == queryid)
    }

    fn accept(&self, queryid: &str, archive_id: &str) {
        if let Some(q) = self.lock().iter_mut().find(|q| q.id == queryid) {
            q.accepted += 1;
            q.last = Some(archive_id.to_owned());
        }
    }

    /// Stops listening for `queryid`; what it accepted.
    fn close(&self, queryid: &str) -> (usize, Option<String>) {
        let mut open = self.lock();
        match open.iter().position(|q| q.id == queryid) {
            Some(at) => {
                let q = open.remove(at);
                (q.accepted, q.last)
            }
            None => (0, None),
        }
    }
}

impl OmemoClient {
    /// Fetches the messages our archive holds from `start` on ([`Page::After`] an archive id,
    /// or [`Page::Since`] a time), page by page, at most `limit`, and hands each on as a live
    /// one would be (in archive order, on the event stream; live messages may come in
    /// between). Ends with [`OmemoEvent::CaughtUp`] on the event stream, carrying `round` and
    /// whether it failed, and returns the same report (or the error). If the server does not
    /// know the archive id (`item-not-found`), the newest `limit` messages are fetched instead
    /// (`fell_back`). The owner must keep reading events meanwhile: the answers come behind
    /// the results.
    pub async fn catch_up(
        &self,
        start: Page,
        limit: usize,
        round: u64,
    ) -> Result<CatchUpReport, OmemoError> {
        let mut report = CatchUpReport {
            round,
            ..CatchUpReport::default()
        };
        let result = self.fetch_archive(start, limit, &mut report).await;
        if let Err(e) = &result {
            report.failed = Some(e.to_string());
            report.complete = false;
        }
        tracing::info!(
            fetched = report.fetched,
            complete = report.complete,
            failed = report.failed.is_some(),
            "caught up from the archive"
        );
        self.shared.emit(OmemoEvent::CaughtUp(report.clone())).await;
        result.map(|()| report)
    }

    async fn fetch_archive(
        &self,
        start: Page,
        limit: usize,
        report: &mut CatchUpReport,
    ) -> Result<(), OmemoError> {
        let shared = &self.shared;
        let mut page = start;
        while report.fetched < limit {
            let max = (limit - report.fetched).min(PAGE);
            let queryid = shared.queries.open();
            let iq = Iq::set("", None, mam::query(&queryid, &page, max));
            let answer = shared.xmpp.iq_in_order(iq).await;
            let (accepted, last) = shared.queries.close(&queryid);
            report.fetched += accepted;
            if last.is_some() {
                report.last = last;
            }
            let answer = match answer {
                Err(StreamError::IqError { condition })
                    if condition == "item-not-found"
                        && matches!(page, Page::After(Some(_)))
                        && report.fetched == 0 =>
                {
                    tracing::info!(
                        "the archive does not know where we stopped; fetching its newest messages"
                    );
                    report.fell_back = true;
                    page = Page::Last;
                    continue;
                }
                other => other?,
            };
            let payload = match &answer.payload {
                IqPayload::Result(payload) => payload.as_ref(),
                _ => None,
            };
            let fin = Fin::from_payload(payload)
                .map_err(|m| OmemoError::Malformed(format!("archive answer: {m}")))?;
            report.complete = fin.complete && !report.fell_back;
            let next = fin.last.or_else(|| report.last.clone());
            match (&page, next) {
                (Page::After(_) | Page::Since(_), Some(next)) if !fin.complete && accepted > 0 => {
                    page = Page::After(Some(next));
                }
                _ => {
                    report.complete = fin.complete && !report.fell_back;
                    break;
                }
            }
        }
        Ok(())
    }
}

impl OmemoClient {
    /// Keeps the one-time prekeys that decryptions use up from now on (see
    /// [`Account::hold_used_prekeys`](super::Account::hold_used_prekeys)), until
    /// [`release_used_prekeys`](Self::release_used_prekeys). The owner holds them across a
    /// catch-up: its archived messages are decrypted later, in the owner's time.
    pub fn hold_used_prekeys(&self) {
        self.shared.account.hold_used_prekeys();
    }

    /// Removes the prekeys held since [`hold_used_prekeys`](Self::hold_used_prekeys) (flushed),
    /// then refills and republishes the bundle; how many were removed.
    pub async fn release_used_prekeys(&self) -> Result<usize, OmemoError> {
        let shared = &self.shared;
        let used = shared.account.release_used_prekeys();
        if used.is_empty() {
            return Ok(0);
        }
        let count = used.len();
        let guard = shared.account.lock_prekeys().await;
        let changes = super::Changes {
            remove_prekeys: used,
            ..super::Changes::default()
        };
        shared.account.update(guard, changes).commit().await?;
        tracing::info!(count, "prekeys used during the catch-up removed");
        let followup = super::Followup {
            republish: true,
            key_transport: None,
        };
        shared.clone().run_followup(followup).await;
        Ok(count)
    }
}

impl Shared {
    /// A `<result/>` of one of our archive queries: its message goes the way a live one goes,
    /// acknowledged with it. A result from anyone else, or of a query we are not making, is
    /// acknowledged and dropped.
    pub(super) async fn on_archived(self: &Arc<Self>, tag: InboundTag, msg: super::Message) {
        let archived = match Archived::from_message(msg, &self.own, |q| self.queries.is_open(q)) {
            Ok(archived) => archived,
            Err(e) => {
                tracing::warn!(error = %super::describe(&e), "dropping an archive result that is not ours");
                self.xmpp.ack(tag);
                return;
            }
        };
        self.queries.accept(&archived.queryid, &archived.id);
        let mut message = archived.message;
        // What our account sent (from the bridge, or another client of it): like a sent
        // carbon. The bridge's own sends are not encrypted to itself and end quietly.
        let carbon = message
            .from
            .as_ref()
            .is_some_and(|from| from.bare() == self.own)
            .then_some(Direction::Sent);
        message.stanza_ids = vec![StanzaId {
            by: self.own.clone(),
            id: archived.id.clone(),
        }];
        self.on_chat_message(tag, message, carbon, Some(archived.id), true)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_queries_count_and_at_most_a_few_are_open() {
        let queries = Queries::default();
        let first = queries.open();
        assert!(queries.is_open(&first));
        assert!(!queries.is_open("catch-up-forged"));
        queries.accept(&first, "a1");
        queries.accept(&first, "a2");
        queries.accept("catch-up-forged", "x");
        assert_eq!(queries.close(&first), (2, Some("a2".into())));
        assert!(
            !queries.is_open(&first),
            "closed: its late results are refused"
        );
        assert_eq!(queries.close(&first), (0, None));
        let ids: Vec<String> = (0..=MAX_OPEN_QUERIES).map(|_| queries.open()).collect();
        assert!(!queries.is_open(&ids[0]), "the oldest is forgotten");
        assert!(ids[1..].iter().all(|id| queries.is_open(id)));
    }
}
