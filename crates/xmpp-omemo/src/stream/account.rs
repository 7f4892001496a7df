//! The account behind a [`Client`]: roster edits (RFC 6121 §2), presence subscriptions (§3),
//! the XEP-0191 blocklist <https://xmpp.org/extensions/xep-0191.html>, and the pushes by
//! which the server reports changes of the roster and the blocklist.

use super::client::{Client, Event, error_for, result_for};
use super::error::Error;
use crate::jid::Jid;
use crate::stanza::blocking::{BlockingCommand, Blocklist};
use crate::stanza::disco::DiscoInfo;
use crate::stanza::roster::{RosterItem, RosterQuery, Subscription};
use crate::stanza::{
    FromElement, IntoElement, Iq, IqPayload, ParseError, Presence, PresenceType, ns,
};
use crate::xml::Element;

impl Client {
    /// Adds `item` to the roster or updates it (name, groups). The server answers, then pushes
    /// the item as it stored it ([`Event::RosterPush`]). `subscription` (unless `Remove`) and
    /// `ask` are the server's to set and are not sent (RFC 6121 §2.1.2.5, §2.1.2.2).
    pub async fn roster_set(&self, mut item: RosterItem) -> Result<(), Error> {
        if item.subscription != Subscription::Remove {
            item.subscription = Subscription::None;
        }
        item.ask_subscribe = false;
        let query = RosterQuery {
            ver: None,
            items: vec![item],
        };
        self.iq(Iq::set("", None, query.into_element()))
            .await
            .map(drop)
    }

    /// Removes `jid` from the roster, which also cancels the subscriptions both ways
    /// (RFC 6121 §2.5).
    pub async fn roster_remove(&self, jid: &Jid) -> Result<(), Error> {
        let item = RosterItem {
            subscription: Subscription::Remove,
            ..RosterItem::new(jid.bare())
        };
        self.roster_set(item).await
    }

    /// Asks `jid` for a subscription to their presence (RFC 6121 §3.1.1).
    pub async fn subscribe(&self, jid: &Jid) -> Result<(), Error> {
        self.send(Presence::to(jid.bare(), PresenceType::Subscribe))
            .await
    }

    /// Approves `jid`'s subscription request, or pre-approves one (RFC 6121 §3.1.4, §3.4).
    pub async fn approve_subscription(&self, jid: &Jid) -> Result<(), Error> {
        self.send(Presence::to(jid.bare(), PresenceType::Subscribed))
            .await
    }

    /// Denies `jid`'s subscription request, or cancels the subscription `jid` has
    /// (RFC 6121 §3.1.4, §3.2).
    pub async fn deny_subscription(&self, jid: &Jid) -> Result<(), Error> {
        self.send(Presence::to(jid.bare(), PresenceType::Unsubscribed))
            .await
    }

    /// Whether our server supports XEP-0191 blocking (`urn:xmpp:blocking` in its disco#info).
    pub async fn supports_blocking(&self) -> Result<bool, Error> {
        let request = Iq::get(
            "",
            Some(self.domain.clone()),
            DiscoInfo::request(None).into_element(),
        );
        let info = match self.iq(request).await?.payload {
            IqPayload::Result(Some(payload)) => {
                DiscoInfo::from_element(payload).map_err(protocol)?
            }
            _ => {
                return Err(Error::Protocol(
                    "a disco#info result without a query".into(),
                ));
            }
        };
        Ok(info.has_feature(ns::BLOCKING))
    }

    /// Blocks `jid` (a bare or full JID, or a domain): the server drops their presence and
    /// bounces their messages and requests until [`unblock`](Self::unblock).
    pub async fn block(&self, jid: &Jid) -> Result<(), Error> {
        self.blocking(BlockingCommand::Block(vec![jid.clone()]))
            .await
    }

    /// Unblocks `jid`.
    pub async fn unblock(&self, jid: &Jid) -> Result<(), Error> {
        self.blocking(BlockingCommand::Unblock(vec![jid.clone()]))
            .await
    }

    /// The blocked JIDs. From then on, this session gets [`Event::Blocking`] for every change,
    /// whichever resource makes it (XEP-0191 §3.3).
    pub async fn blocklist(&self) -> Result<Vec<Jid>, Error> {
        let answer = self
            .iq(Iq::get("", None, Blocklist::request().into_element()))
            .await?;
        match answer.payload {
            IqPayload::Result(Some(payload)) => {
                Ok(Blocklist::from_element(payload).map_err(protocol)?.items)
            }
            _ => Err(Error::Protocol(
                "a blocklist result without a blocklist".into(),
            )),
        }
    }

    async fn blocking(&self, command: BlockingCommand) -> Result<(), Error> {
        self.iq(Iq::set("", None, command.into_element()))
            .await
            .map(drop)
    }
}

fn protocol(e: ParseError) -> Error {
    match e {
        ParseError::Malformed(m) => Error::Malformed(m),
        ParseError::NotMine(el) => {
            Error::Protocol(format!("unexpected <{}/> in an answer", el.name()))
        }
    }
}

/// True for the payload of a push this module answers: roster or blocklist.
pub(super) fn is_push(payload: &Element) -> bool {
    payload.is("query", ns::ROSTER) || payload.ns() == ns::BLOCKING
}

/// A roster or blocklist push (an iq set whose payload [`is_push`]): the event for the owner,
/// if any, and our answer. Only our own account may push (no `from`, or our bare JID).
pub(super) fn push(iq: &Element, payload: &Element, own: &Jid) -> (Option<Event>, Element) {
    if iq
        .get_attr("from")
        .is_some_and(|f| f != own.bare().as_str())
    {
        return (None, error_for(iq, "cancel", "forbidden"));
    }
    let event = if payload.is("query", ns::ROSTER) {
        match RosterQuery::from_element(payload.clone()) {
            // RFC 6121 §2.1.6: a push carries exactly one item.
            Ok(mut query) if query.items.len() == 1 => query.items.pop().map(Event::RosterPush),
            Ok(_) => None,
            Err(e) => malformed("roster push", e),
        }
    } else {
        match BlockingCommand::from_element(payload.clone()) {
            Ok(command) => Some(Event::Blocking(command)),
            Err(e) => malformed("blocklist push", e),
        }
    };
    match event {
        Some(event) => (Some(event), result_for(iq)),
        None => (None, error_for(iq, "modify", "bad-request")),
    }
}

fn malformed(what: &str, e: ParseError) -> Option<Event> {
    if let ParseError::Malformed(m) = e {
        tracing::warn!(error = %m, "the server sent a malformed {what}");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::parse_xml;

    fn own() -> Jid {
        Jid::parse("juliet@capulet.com/chamber").expect("valid JID")
    }

    fn answer_to(xml: &str) -> (Option<Event>, Element) {
        let iq = parse_xml(xml);
        let payload = iq.children().next().cloned().expect("a payload");
        assert!(is_push(&payload), "{xml}");
        push(&iq, &payload, &own())
    }

    fn condition(answer: &Element) -> Option<&str> {
        let error = answer.get_child("error", ns::CLIENT)?;
        error.children().next().map(Element::name)
    }

    #[test]
    fn roster_and_blocking_pushes_become_events_and_are_answered() {
        let (event, answer) = answer_to(
            "<iq id='a78b4q6ha463' to='juliet@capulet.com/chamber' type='set'>\
               <query xmlns='jabber:iq:roster' ver='ver14'><item jid='nurse@example.com'/></query>\
             </iq>",
        );
        assert!(
            matches!(event, Some(Event::RosterPush(i)) if i.jid.as_str() == "nurse@example.com")
        );
        assert_eq!(
            (answer.get_attr("type"), answer.get_attr("id")),
            (Some("result"), Some("a78b4q6ha463"))
        );

        let (event, answer) = answer_to(
            "<iq from='juliet@capulet.com' id='push1' type='set'>\
               <block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>\
             </iq>",
        );
        let Some(Event::Blocking(BlockingCommand::Block(jids))) = event else {
            panic!("a block push")
        };
        assert_eq!(jids, [Jid::parse("romeo@montague.net").expect("valid JID")]);
        assert_eq!(answer.get_attr("type"), Some("result"));
        assert_eq!(answer.get_attr("to"), Some("juliet@capulet.com"));

        let (event, _) =
            answer_to("<iq id='push5' type='set'><unblock xmlns='urn:xmpp:blocking'/></iq>");
        assert!(
            matches!(event, Some(Event::Blocking(BlockingCommand::Unblock(j))) if j.is_empty())
        );
    }

    #[test]
    fn invalid_pushes_are_refused() {
        let cases = [
            // RFC 6121 §2.1.6: a push from anyone but our account is forbidden.
            (
                "<iq from='mallory@evil.example' id='p' type='set'>\
                   <block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block></iq>",
                "forbidden",
            ),
            (
                "<iq id='p' type='set'><block xmlns='urn:xmpp:blocking'/></iq>",
                "bad-request",
            ),
            (
                "<iq id='p' type='set'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
                "bad-request",
            ),
            (
                "<iq id='p' type='set'><query xmlns='jabber:iq:roster'>\
                   <item jid='a@example.com'/><item jid='b@example.com'/></query></iq>",
                "bad-request",
            ),
            (
                "<iq id='p' type='set'><query xmlns='jabber:iq:roster'><item/></query></iq>",
                "bad-request",
            ),
        ];
        for (xml, want) in cases {
            let (event, answer) = answer_to(xml);
            assert!(event.is_none(), "{xml}");
            assert_eq!(
                (answer.get_attr("type"), condition(&answer)),
                (Some("error"), Some(want)),
                "{xml}"
            );
        }
    }
}
