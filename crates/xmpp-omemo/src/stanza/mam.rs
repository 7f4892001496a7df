//! XEP-0313: Message Archive Management <https://xmpp.org/extensions/xep-0313.html>
//! (`urn:xmpp:mam:2`), paged with XEP-0059 result set management.
//!
//! We only ever query our own archive (an iq without `to`). Its results come as messages, each
//! a `<result queryid='…' id='ARCHIVE-ID'>` holding an XEP-0297 `<forwarded/>` copy; the
//! query's iq answer carries `<fin complete='…'>` with the page's `<set><last/></set>`. A
//! result is only as trustworthy as its outer `from`: anyone can send us a message holding a
//! `<result/>`, so [`Archived::from_message`] requires our own bare JID (or no `from`: the
//! server on the account's behalf) and a query id we asked with.

use super::message::Message;
use super::{FromElement, IntoElement, Malformed, ParseError, ns};
use crate::jid::Jid;
use crate::xml::Element;

/// The most results asked for in one page.
pub const MAX_PAGE: usize = 100;
/// The longest archive id or query id accepted (Prosody's are 36-character UUIDs).
pub const MAX_ID_LEN: usize = 256;

/// Which part of the archive a query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The oldest `max` messages after this archive id (`None`: from the start).
    After(Option<String>),
    /// The newest `max` messages (RSM `<before/>`, empty), oldest first.
    Last,
    /// The oldest `max` messages the server archived at or after this XEP-0082 time
    /// (`2026-12-07T04:50:00Z`): for an account whose last message we do not know yet.
    Since(String),
}

/// The `<query/>` payload of the iq set that asks for one page of our own archive.
pub fn query(queryid: &str, page: &Page, max: usize) -> Element {
    let mut set = Element::new("set", ns::RSM)
        .child(Element::new("max", ns::RSM).text(max.min(MAX_PAGE).to_string()));
    match page {
        Page::After(Some(after)) => set.push_child(Element::new("after", ns::RSM).text(after)),
        Page::After(None) => {}
        Page::Last => set.push_child(Element::new("before", ns::RSM)),
        Page::Since(_) => {}
    }
    let query = Element::new("query", ns::MAM).attr("queryid", queryid);
    let query = match page {
        Page::Since(start) => query.child(super::data_form::submit(
            ns::MAM,
            &[("start", start.as_str())],
        )),
        _ => query,
    };
    query.child(set)
}

/// `secs` after the Unix epoch as an XEP-0082 date-time in UTC (`2026-12-07T04:50:00Z`), for
/// [`Page::Since`].
pub fn timestamp(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from a day count (the proleptic Gregorian calendar, eras of 400 years).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// True when `msg` carries a `<result/>` in the MAM namespace (trusted or not).
pub fn is_result(msg: &Message) -> bool {
    msg.payload("result", ns::MAM).is_some()
}

/// One archived message, out of its `<result/>` wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The query it answers.
    pub queryid: String,
    /// Its archive id: the XEP-0359 stanza-id our server gave it.
    pub id: String,
    /// When the server archived it (XEP-0203 `stamp`), if said.
    pub stamp: Option<String>,
    /// The message as it was sent or received.
    pub message: Message,
}

impl Archived {
    /// Unwraps the result in `msg`, which must come from `own_bare` (or have no `from`) and
    /// answer a query for which `ours` says yes.
    ///
    /// - no `<result/>`: `NotMine` with `msg` as an element;
    /// - `from` another entity, or a `queryid` we did not ask with: malformed (a forgery, or
    ///   the answer to a query we gave up);
    /// - a missing or overlong `id`, no `<forwarded/>` or no inner message: malformed.
    pub fn from_message(
        mut msg: Message,
        own_bare: &Jid,
        ours: impl Fn(&str) -> bool,
    ) -> Result<Archived, ParseError> {
        let Some(at) = msg.payloads.iter().position(|p| p.is("result", ns::MAM)) else {
            return Err(ParseError::NotMine(msg.into_element()));
        };
        if msg
            .from
            .as_ref()
            .is_some_and(|from| *from != own_bare.bare())
        {
            return Err(Malformed::new("message", "from", "is not our own account").into());
        }
        let mut result = msg.payloads.remove(at);
        let queryid = result
            .get_attr("queryid")
            .ok_or(Malformed::new("result", "queryid", "is missing"))?
            .to_owned();
        if !ours(&queryid) {
            return Err(Malformed::new("result", "queryid", "is not a query of ours").into());
        }
        let id = result
            .get_attr("id")
            .ok_or(Malformed::new("result", "id", "is missing"))?
            .to_owned();
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Malformed::new("result", "id", "is empty or too long").into());
        }
        let mut forwarded = result
            .take_child("forwarded", ns::FORWARD)
            .ok_or(Malformed::new("result", "forwarded", "is missing"))?;
        let stamp = forwarded
            .get_child("delay", ns::DELAY)
            .and_then(|d| d.get_attr("stamp"))
            .map(str::to_owned);
        let inner = forwarded
            .take_child("message", ns::CLIENT)
            .ok_or(Malformed::new("forwarded", "message", "is missing"))?;
        let message = match Message::from_element(inner) {
            Ok(m) => m,
            Err(ParseError::Malformed(m)) => return Err(m.into()),
            Err(ParseError::NotMine(_)) => {
                return Err(Malformed::new("forwarded", "message", "is missing").into());
            }
        };
        Ok(Archived {
            queryid,
            id,
            stamp,
            message,
        })
    }
}

/// The end of a page: the query's iq answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fin {
    /// The page reached the end of what was asked (the newest message, or for
    /// [`Page::Last`] the oldest).
    pub complete: bool,
    /// The archive id of the page's last message (none for an empty page).
    pub last: Option<String>,
}

impl Fin {
    /// Reads the `<fin/>` of an iq result's payload.
    pub fn from_payload(payload: Option<&Element>) -> Result<Fin, Malformed> {
        let fin = payload
            .filter(|p| p.is("fin", ns::MAM))
            .ok_or(Malformed::new("iq", "fin", "is missing"))?;
        let complete = matches!(fin.get_attr("complete"), Some("true" | "1"));
        let last = fin
            .get_child("set", ns::RSM)
            .and_then(|s| s.get_child("last", ns::RSM))
            .map(Element::text_content)
            .filter(|l| !l.is_empty());
        if last.as_ref().is_some_and(|l| l.len() > MAX_ID_LEN) {
            return Err(Malformed::new("fin", "last", "is too long"));
        }
        Ok(Fin { complete, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{malformed, parse_xml};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    fn message(xml: &str) -> Message {
        Message::from_element(parse_xml(xml)).expect("a valid outer message")
    }

    fn result(from: Option<&str>, queryid: &str, id: &str) -> String {
        let from = from.map(|f| format!(" from='{f}'")).unwrap_or_default();
        format!(
            "<message{from} to='juliet@capulet.example/balcony'>\
               <result xmlns='urn:xmpp:mam:2' queryid='{queryid}' id='{id}'>\
                 <forwarded xmlns='urn:xmpp:forward:0'>\
                   <delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>\
                   <message xmlns='jabber:client' from='romeo@montague.example/orchard' to='juliet@capulet.example' type='chat' id='m1'>\
                     <body>Call me but love</body>\
                   </message>\
                 </forwarded>\
               </result>\
             </message>"
        )
    }

    const OWN: &str = "juliet@capulet.example";

    #[test]
    fn timestamps_are_xep_0082_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_796_615_999), "2026-12-07T03:59:59Z");
        assert_eq!(timestamp(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn a_query_after_an_id_on_the_wire() {
        let q = query("f27", &Page::After(Some("09af3-cc343-b409f".into())), 50);
        assert_eq!(
            q.to_xml(ns::CLIENT),
            "<query xmlns='urn:xmpp:mam:2' queryid='f27'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>50</max><after>09af3-cc343-b409f</after></set></query>"
        );
        let first = query("f28", &Page::After(None), 5000);
        assert_eq!(
            first.to_xml(ns::CLIENT),
            "<query xmlns='urn:xmpp:mam:2' queryid='f28'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>100</max></set></query>"
        );
        let last = query("f29", &Page::Last, 1);
        assert_eq!(
            last.to_xml(ns::CLIENT),
            "<query xmlns='urn:xmpp:mam:2' queryid='f29'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>1</max><before/></set></query>"
        );
        let since = query("f30", &Page::Since("2026-12-07T04:50:00Z".into()), 50);
        assert_eq!(
            since.to_xml(ns::CLIENT),
            "<query xmlns='urn:xmpp:mam:2' queryid='f30'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='start'><value>2026-12-07T04:50:00Z</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>50</max></set></query>"
        );
        let touch = query("f31", &Page::After(None), 0);
        assert_eq!(
            touch.to_xml(ns::CLIENT),
            "<query xmlns='urn:xmpp:mam:2' queryid='f31'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>0</max></set></query>"
        );
    }

    #[test]
    fn a_result_from_our_account_or_the_server_unwraps() {
        for from in [Some(OWN), None] {
            let msg = message(&result(from, "f27", "28482-98726-73623"));
            assert!(is_result(&msg));
            let archived = Archived::from_message(msg, &jid(OWN), |q| q == "f27").expect("ours");
            assert_eq!(archived.queryid, "f27");
            assert_eq!(archived.id, "28482-98726-73623");
            assert_eq!(archived.stamp.as_deref(), Some("2010-07-10T23:08:25Z"));
            assert_eq!(archived.message.id.as_deref(), Some("m1"));
            assert_eq!(
                archived.message.from,
                Some(jid("romeo@montague.example/orchard"))
            );
            assert_eq!(archived.message.body.as_deref(), Some("Call me but love"));
        }
    }

    #[test]
    fn invalid_result_from_another_jid_is_refused() {
        for from in [
            "romeo@montague.example",
            "juliet@capulet.example/balcony",
            "capulet.example",
        ] {
            let msg = message(&result(Some(from), "f27", "a1"));
            assert_eq!(
                malformed(Archived::from_message(msg, &jid(OWN), |_| true)),
                Malformed::new("message", "from", "is not our own account")
            );
        }
    }

    #[test]
    fn invalid_result_of_a_query_not_ours_is_refused() {
        let msg = message(&result(Some(OWN), "forged", "a1"));
        assert_eq!(
            malformed(Archived::from_message(msg, &jid(OWN), |q| q == "f27")),
            Malformed::new("result", "queryid", "is not a query of ours")
        );
    }

    #[test]
    fn invalid_result_without_id_forwarded_or_message() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let msg = message(&result(None, "f27", &long));
        assert_eq!(
            malformed(Archived::from_message(msg, &jid(OWN), |_| true)),
            Malformed::new("result", "id", "is empty or too long")
        );
        let msg =
            message("<message><result xmlns='urn:xmpp:mam:2' queryid='f27' id='a'/></message>");
        assert_eq!(
            malformed(Archived::from_message(msg, &jid(OWN), |_| true)),
            Malformed::new("result", "forwarded", "is missing")
        );
        let msg = message(
            "<message><result xmlns='urn:xmpp:mam:2' queryid='f27' id='a'>\
             <forwarded xmlns='urn:xmpp:forward:0'/></result></message>",
        );
        assert_eq!(
            malformed(Archived::from_message(msg, &jid(OWN), |_| true)),
            Malformed::new("forwarded", "message", "is missing")
        );
        let msg = message("<message><result xmlns='urn:xmpp:mam:2' id='a'/></message>");
        assert_eq!(
            malformed(Archived::from_message(msg, &jid(OWN), |_| true)),
            Malformed::new("result", "queryid", "is missing")
        );
    }

    #[test]
    fn a_message_without_result_is_not_mine() {
        let msg = message("<message from='juliet@capulet.example'><body>hi</body></message>");
        assert!(!is_result(&msg));
        assert!(matches!(
            Archived::from_message(msg, &jid(OWN), |_| true),
            Err(ParseError::NotMine(_))
        ));
    }

    #[test]
    fn fin_complete_and_last() {
        let fin = parse_xml(
            "<fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'>\
             <first index='0'>a1</first><last>a9</last></set></fin>",
        );
        assert_eq!(
            Fin::from_payload(Some(&fin)),
            Ok(Fin {
                complete: true,
                last: Some("a9".into())
            })
        );
        let open = parse_xml(
            "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'/></fin>",
        );
        assert_eq!(Fin::from_payload(Some(&open)), Ok(Fin::default()));
        assert_eq!(
            Fin::from_payload(None),
            Err(Malformed::new("iq", "fin", "is missing"))
        );
        let long = parse_xml(&format!(
            "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><last>{}</last></set></fin>",
            "x".repeat(MAX_ID_LEN + 1)
        ));
        assert_eq!(
            Fin::from_payload(Some(&long)),
            Err(Malformed::new("fin", "last", "is too long"))
        );
    }
}
