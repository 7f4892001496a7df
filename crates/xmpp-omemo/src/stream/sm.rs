//! XEP-0198: Stream Management <https://xmpp.org/extensions/xep-0198.html> — the counting, kept
//! free of I/O so it can be tested on its own.
//!
//! Outbound: every stanza written is kept until the server's `<a h/>` covers it; after a drop it is
//! written again (on resume after the server's `h`, on a new session all that is left). Inbound:
//! the caller decides when a stanza counts as handled (the bridge: once its effect is durable), so
//! `h` only advances over a contiguous run of stanzas the caller acknowledged.

use std::collections::{BTreeSet, VecDeque};

use tokio::sync::oneshot;

use super::error::Error;
use crate::stanza::ns;
use crate::xml::Element;

/// Identifies one inbound stanza for [`crate::stream::Client::ack`]: the stream
/// management session it arrived in and its number there. Unique within one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundTag {
    pub(crate) epoch: u64,
    pub(crate) n: u32,
}

/// A stanza on its way out, and who wants to know when the server has it.
pub(crate) struct Outbound {
    pub element: Element,
    pub done: Option<oneshot::Sender<Result<(), Error>>>,
}

impl Outbound {
    pub fn finish(mut self, result: Result<(), Error>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

/// Outbound side: stanzas not yet written, and those written but not yet acknowledged.
#[derive(Default)]
pub(crate) struct OutboundQueue {
    pub unsent: VecDeque<Outbound>,
    pub unacked: VecDeque<Outbound>,
    /// Stanzas written in this SM session (mod 2^32), i.e. the `h` we expect eventually.
    pub sent: u32,
    /// The server's last `h`.
    pub acked: u32,
}

impl OutboundQueue {
    pub fn len(&self) -> usize {
        self.unsent.len() + self.unacked.len()
    }

    /// Applies the server's `h`: completes everything it covers.
    pub fn ack(&mut self, h: u32) -> Result<(), Error> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(Error::Protocol(format!(
                "the server acknowledged {newly} stanzas but only {} were unacknowledged",
                self.unacked.len()
            )));
        }
        for out in self.unacked.drain(..newly) {
            out.finish(Ok(()));
        }
        self.acked = h;
        Ok(())
    }

    /// After a resumption (`h` = the server's count) or a new session (`h` = what a failed resume
    /// still told us, if anything): everything unacknowledged goes back in front of the unsent
    /// queue, in order, to be written again. `fresh` starts the counters of a new SM session.
    pub fn rewind(&mut self, h: Option<u32>, fresh: bool) -> Result<(), Error> {
        if let Some(h) = h {
            self.ack(h)?;
        }
        while let Some(out) = self.unacked.pop_back() {
            self.unsent.push_front(out);
        }
        if fresh {
            self.sent = 0;
            self.acked = 0;
        } else {
            self.sent = self.acked;
        }
        Ok(())
    }

    /// Without stream management a written stanza is as delivered as we can know.
    pub fn complete_written(&mut self) {
        for out in self.unacked.drain(..) {
            out.finish(Ok(()));
        }
        self.sent = 0;
        self.acked = 0;
    }

    /// Fails everything (the client is closing).
    pub fn fail_all(&mut self, error: &Error) {
        for out in self.unacked.drain(..).chain(self.unsent.drain(..)) {
            out.finish(Err(error.clone()));
        }
    }
}

/// Inbound side: what arrived, what the caller has handled.
#[derive(Debug, Default)]
pub(crate) struct InboundCounter {
    pub epoch: u64,
    /// Stanzas received in this SM session.
    pub received: u32,
    /// Contiguously handled: the `h` we report.
    pub handled: u32,
    /// Handled out of order, above `handled`.
    ahead: BTreeSet<u32>,
}

impl InboundCounter {
    /// Counts a received stanza and returns its tag.
    pub fn receive(&mut self) -> InboundTag {
        self.received = self.received.wrapping_add(1);
        InboundTag {
            epoch: self.epoch,
            n: self.received,
        }
    }

    /// Marks a stanza handled. Tags of an earlier SM session, or not yet received, are ignored.
    /// Returns true when `handled` advanced.
    pub fn handle(&mut self, tag: InboundTag) -> bool {
        if tag.epoch != self.epoch
            || tag.n.wrapping_sub(self.handled) as i32 <= 0
            || tag.n.wrapping_sub(self.received) as i32 > 0
        {
            return false;
        }
        self.ahead.insert(tag.n);
        let before = self.handled;
        while self.ahead.remove(&self.handled.wrapping_add(1)) {
            self.handled = self.handled.wrapping_add(1);
        }
        self.handled != before
    }

    /// The server will resend what came after `handled`, under the same numbers.
    pub fn resume(&mut self) {
        self.received = self.handled;
        self.ahead.clear();
    }

    /// A new SM session: new numbers, old tags become void.
    pub fn restart(&mut self) {
        self.epoch += 1;
        self.received = 0;
        self.handled = 0;
        self.ahead.clear();
    }
}

pub(crate) fn enable() -> Element {
    Element::new("enable", ns::SM).attr("resume", "true")
}

pub(crate) fn resume(previd: &str, h: u32) -> Element {
    Element::new("resume", ns::SM)
        .attr("previd", previd)
        .attr("h", h.to_string())
}

pub(crate) fn request() -> Element {
    Element::new("r", ns::SM)
}

pub(crate) fn answer(h: u32) -> Element {
    Element::new("a", ns::SM).attr("h", h.to_string())
}

/// Reads the `h` attribute of `<a/>`, `<resumed/>` or `<failed/>`.
pub(crate) fn h_of(el: &Element) -> Result<Option<u32>, Error> {
    match el.get_attr("h") {
        None => Ok(None),
        Some(h) => h
            .parse()
            .map(Some)
            .map_err(|_| Error::Protocol(format!("<{}/> has a non-numeric h", el.name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_with(n: usize) -> (OutboundQueue, Vec<oneshot::Receiver<Result<(), Error>>>) {
        let mut q = OutboundQueue::default();
        let mut rxs = Vec::new();
        for i in 0..n {
            let (tx, rx) = oneshot::channel();
            q.unacked.push_back(Outbound {
                element: Element::new("message", "jabber:client").attr("id", i.to_string()),
                done: Some(tx),
            });
            q.sent += 1;
            rxs.push(rx);
        }
        (q, rxs)
    }

    #[test]
    fn ack_completes_in_order() {
        let (mut q, mut rxs) = queue_with(3);
        q.ack(2).expect("valid ack");
        assert!(matches!(rxs[0].try_recv(), Ok(Ok(()))));
        assert!(matches!(rxs[1].try_recv(), Ok(Ok(()))));
        assert!(rxs[2].try_recv().is_err());
        assert_eq!(q.unacked.len(), 1);
    }

    #[test]
    fn invalid_ack_beyond_what_was_sent() {
        let (mut q, _rxs) = queue_with(2);
        assert!(matches!(q.ack(3), Err(Error::Protocol(_))));
    }

    #[test]
    fn rewind_after_resume_resends_only_the_unacked() {
        let (mut q, _rxs) = queue_with(4);
        q.unsent.push_back(Outbound {
            element: Element::new("message", "jabber:client").attr("id", "later"),
            done: None,
        });
        q.rewind(Some(1), false).expect("valid");
        let ids: Vec<_> = q
            .unsent
            .iter()
            .filter_map(|o| o.element.get_attr("id"))
            .collect();
        assert_eq!(ids, ["1", "2", "3", "later"]);
        assert_eq!((q.sent, q.acked), (1, 1));
        q.rewind(None, true).expect("valid");
        assert_eq!((q.sent, q.acked, q.unsent.len()), (0, 0, 4));
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let (mut q, _rxs) = queue_with(2);
        q.acked = u32::MAX;
        q.sent = 1;
        q.ack(0).expect("wraps");
        assert_eq!(q.unacked.len(), 1);
    }

    #[test]
    fn inbound_h_advances_only_over_contiguous_handled() {
        let mut c = InboundCounter::default();
        let t: Vec<_> = (0..4).map(|_| c.receive()).collect();
        assert!(!c.handle(t[1]));
        assert_eq!(c.handled, 0);
        assert!(c.handle(t[0]));
        assert_eq!(c.handled, 2);
        assert!(!c.handle(t[0]), "a second ack changes nothing");
        assert!(!c.handle(t[3]) && c.handled == 2);
        assert!(c.handle(t[2]));
        assert_eq!(c.handled, 4);
    }

    #[test]
    fn inbound_resume_renumbers_after_h_and_restart_voids_old_tags() {
        let mut c = InboundCounter::default();
        let a = c.receive();
        let b = c.receive();
        c.handle(a);
        c.resume();
        assert_eq!(c.received, 1);
        let b2 = c.receive();
        assert_eq!(b, b2, "the resent stanza gets the same tag");
        c.restart();
        assert!(!c.handle(b2), "a tag from the previous session is void");
        assert!(
            !c.handle(InboundTag {
                epoch: c.epoch,
                n: 1
            }),
            "not yet received"
        );
    }
}
