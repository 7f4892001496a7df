//! XEP-0363 HTTP File Upload for [`OmemoClient`](super::OmemoClient): finding the server's
//! upload service (XEP-0030 disco#items of our domain, disco#info of the domain and of each
//! item), once per client, and asking it for slots. The HTTP PUT and GET are the caller's:
//! this crate has no HTTP client.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::OnceCell;

use crate::jid::Jid;
use crate::stanza::disco::{DiscoInfo, DiscoItems};
use crate::stanza::upload::{self, FileTooLarge, SlotRequest, UploadSlot};
use crate::stanza::{
    Condition, ErrorType, FromElement, IntoElement, Iq, IqPayload, Malformed, ParseError, ns,
};
use crate::stream::{Client, Error as StreamError};

use super::client::OmemoError;

/// At most this many of the domain's disco#items are asked for their disco#info (a server
/// lists its components there: a handful).
pub const MAX_ITEMS_QUERIED: usize = 32;

/// The server's XEP-0363 upload service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadService {
    /// Where slot requests go (`upload.example.org`, or the domain itself).
    pub jid: Jid,
    /// The largest file it takes, in bytes, if its disco#info says.
    pub max_file_size: Option<u64>,
}

/// Why no upload slot was given, beside the failures of the connection itself
/// ([`OmemoError::Stream`]: [`StreamError::Timeout`] when no answer came in time,
/// [`StreamError::Closed`] when the client is closed). Carried by [`OmemoError::Upload`].
/// `Display` names the condition only, never the server's text.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The server announces no upload service (cached for the client's lifetime).
    #[error("the server has no HTTP upload service (XEP-0363)")]
    NoService,
    /// The file is larger than the service takes: its `max-file-size` (from its disco#info,
    /// checked before asking, or from its `<file-too-large/>` error), if it gave one.
    #[error("the file is too large for the upload service{}", limit(.max_file_size))]
    TooLarge { max_file_size: Option<u64> },
    /// The service refused the slot for another reason (`not-allowed`, `forbidden`, a quota's
    /// `resource-constraint`, a file type's `not-acceptable` …). `text` is the server's
    /// explanation, if any, for a user to read: never log it.
    #[error("the upload service refused the slot: {}", .condition.name())]
    Refused {
        kind: ErrorType,
        condition: Condition,
        text: Option<String>,
    },
    /// The answer was not a usable slot (no `<slot/>`, a URL that is not `http(s)`, too long,
    /// an oversized header …).
    #[error("the upload service sent an unusable slot: {0}")]
    BadSlot(Malformed),
}

fn limit(max: &Option<u64>) -> String {
    max.map(|m| format!(" (at most {m} bytes)"))
        .unwrap_or_default()
}

/// The server's text is shown as a length only.
impl std::fmt::Debug for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::NoService => f.write_str("NoService"),
            UploadError::TooLarge { max_file_size } => f
                .debug_struct("TooLarge")
                .field("max_file_size", max_file_size)
                .finish(),
            UploadError::Refused {
                kind,
                condition,
                text,
            } => f
                .debug_struct("Refused")
                .field("kind", kind)
                .field("condition", condition)
                .field("text_len", &text.as_ref().map(String::len))
                .finish(),
            UploadError::BadSlot(m) => f.debug_tuple("BadSlot").field(m).finish(),
        }
    }
}

/// A client's upload service, discovered once: concurrent callers share one discovery, and a
/// discovery that failed (no answer, the connection down) is tried again by the next caller.
#[derive(Default)]
pub(crate) struct Uploads {
    service: OnceCell<Option<UploadService>>,
}

impl Uploads {
    /// The account's upload service (see [`OmemoClient::upload_service`](super::OmemoClient::upload_service)).
    pub(crate) async fn service(
        &self,
        xmpp: &Client,
        own: &Jid,
    ) -> Result<Option<UploadService>, OmemoError> {
        self.service_with(&own.to_domain(), |iq| xmpp.iq(iq)).await
    }

    /// [`service`](Self::service) with `query` sending the iqs (see [`discover`]).
    async fn service_with<Q, Fut>(
        &self,
        domain: &Jid,
        query: Q,
    ) -> Result<Option<UploadService>, OmemoError>
    where
        Q: Fn(Iq) -> Fut,
        Fut: Future<Output = Result<Iq, StreamError>>,
    {
        let service = self
            .service
            .get_or_try_init(|| async {
                let found = discover(domain, query).await?;
                match &found {
                    Some(s) => tracing::debug!(
                        service = %s.jid,
                        max_file_size = ?s.max_file_size,
                        "found the HTTP upload service"
                    ),
                    None => tracing::info!(%domain, "the server has no HTTP upload service"),
                }
                Ok::<_, OmemoError>(found)
            })
            .await?;
        Ok(service.clone())
    }

    /// A slot for a file (see [`OmemoClient::upload_slot`](super::OmemoClient::upload_slot)).
    pub(crate) async fn slot(
        &self,
        xmpp: &Client,
        own: &Jid,
        filename: &str,
        size: u64,
        content_type: &str,
    ) -> Result<UploadSlot, OmemoError> {
        let service = self
            .service(xmpp, own)
            .await?
            .ok_or(UploadError::NoService)?;
        if let Some(max) = service.max_file_size
            && size > max
        {
            return Err(UploadError::TooLarge {
                max_file_size: Some(max),
            }
            .into());
        }
        let request = SlotRequest::new(filename, size, content_type);
        let answer = xmpp
            .request(Iq::get("", Some(service.jid), request.into_element()))
            .await?;
        Ok(slot_of(answer)?)
    }
}

/// The slot in an answer to a slot request, or why there is none.
pub(crate) fn slot_of(answer: Iq) -> Result<UploadSlot, UploadError> {
    match answer.payload {
        IqPayload::Result(Some(el)) => UploadSlot::from_element(el).map_err(|e| match e {
            ParseError::Malformed(m) => UploadError::BadSlot(m),
            ParseError::NotMine(_) => {
                UploadError::BadSlot(Malformed::new("iq", "slot", "is missing"))
            }
        }),
        IqPayload::Result(None) => Err(UploadError::BadSlot(Malformed::new(
            "iq",
            "slot",
            "is missing",
        ))),
        IqPayload::Error { error, .. } => Err(match FileTooLarge::find(&error) {
            Some(too_large) => UploadError::TooLarge {
                max_file_size: too_large.max_file_size,
            },
            None => UploadError::Refused {
                kind: error.kind,
                condition: error.condition,
                text: error.text,
            },
        }),
        IqPayload::Get(_) | IqPayload::Set(_) => Err(UploadError::BadSlot(Malformed::new(
            "iq",
            "type",
            "is not result or error",
        ))),
    }
}

/// Finds the upload service of `domain`: the first of the domain itself and its disco#items
/// (at most [`MAX_ITEMS_QUERIED`], items naming a node left out) whose disco#info has the
/// feature `urn:xmpp:http:upload:0`. `query` sends an iq and waits for its result (an error
/// answer is [`StreamError::IqError`]); the disco#info queries go out together.
///
/// An entity that answers with an error, or with something that is not disco#info, is not
/// the service. `Ok(None)` when every candidate answered and none is; when none is but one of
/// them gave no answer (a timeout, the connection lost), that failure, so that the caller asks
/// again later instead of taking "none" for good.
pub(crate) async fn discover<Q, Fut>(
    domain: &Jid,
    query: Q,
) -> Result<Option<UploadService>, StreamError>
where
    Q: Fn(Iq) -> Fut,
    Fut: Future<Output = Result<Iq, StreamError>>,
{
    let items_request = Iq::get(
        "",
        Some(domain.clone()),
        DiscoItems::request(None).into_element(),
    );
    let items = match query(items_request).await {
        Ok(answer) => items_of(answer),
        Err(StreamError::IqError { condition }) => {
            tracing::debug!(%condition, "our server answered disco#items with an error");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut candidates = vec![domain.clone()];
    for jid in items {
        if candidates.len() > MAX_ITEMS_QUERIED {
            break;
        }
        if !candidates.contains(&jid) {
            candidates.push(jid);
        }
    }
    let infos = join_all(candidates.iter().map(|jid| {
        query(Iq::get(
            "",
            Some(jid.clone()),
            DiscoInfo::request(None).into_element(),
        ))
    }))
    .await;
    let mut unanswered = None;
    for (jid, answer) in candidates.into_iter().zip(infos) {
        let info = match answer {
            Ok(Iq {
                payload: IqPayload::Result(Some(el)),
                ..
            }) => DiscoInfo::from_element(el).ok(),
            Ok(_) | Err(StreamError::IqError { .. }) => None,
            Err(e) => {
                unanswered.get_or_insert(e);
                None
            }
        };
        if let Some(info) = info.filter(|i| i.has_feature(ns::HTTP_UPLOAD)) {
            return Ok(Some(UploadService {
                jid,
                max_file_size: upload::max_file_size(&info),
            }));
        }
    }
    match unanswered {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The entities a disco#items answer lists (not their nodes), in order. A malformed answer
/// lists none.
fn items_of(answer: Iq) -> Vec<Jid> {
    let IqPayload::Result(Some(el)) = answer.payload else {
        return Vec::new();
    };
    match DiscoItems::from_element(el) {
        Ok(items) => items
            .items
            .into_iter()
            .filter(|i| i.node.is_none())
            .map(|i| i.jid)
            .collect(),
        Err(e) => {
            tracing::debug!(error = ?e, "ignoring a malformed disco#items answer");
            Vec::new()
        }
    }
}

/// Runs `futures` together; their outputs in the same order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in running.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(out) => *output = Some(out),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::stanza::parse_xml;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("a JID")
    }

    /// An answer as our client would hand it over: parsed from the XML the server sent.
    fn result(xml: &str) -> Result<Iq, StreamError> {
        Ok(Iq::from_element(parse_xml(xml)).expect("an iq"))
    }

    fn refused(condition: &str) -> Result<Iq, StreamError> {
        Err(StreamError::IqError {
            condition: condition.into(),
        })
    }

    fn items(jids: &[&str]) -> Result<Iq, StreamError> {
        let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
        result(&format!(
            "<iq type='result' id='q'><query xmlns='http://jabber.org/protocol/disco#items'>{items}</query></iq>"
        ))
    }

    fn info(features: &[&str], form: &str) -> Result<Iq, StreamError> {
        let features: String = features
            .iter()
            .map(|f| format!("<feature var='{f}'/>"))
            .collect();
        result(&format!(
            "<iq type='result' id='q'><query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='x' type='y'/>{features}{form}</query></iq>"
        ))
    }

    /// Prosody's mod_http_file_share: the feature and its form.
    fn upload_info(max: u64) -> Result<Iq, StreamError> {
        info(
            &["http://jabber.org/protocol/disco#info", ns::HTTP_UPLOAD],
            &format!(
                "<x xmlns='jabber:x:data' type='result'>\
                   <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
                   <field var='max-file-size' type='text-single'><value>{max}</value></field>\
                 </x>"
            ),
        )
    }

    /// A server that answers disco#items at the domain and disco#info per JID from tables,
    /// counts the queries, and notes whom the disco#info queries went to.
    #[derive(Clone, Default)]
    struct Server {
        items: Arc<Mutex<Option<Result<Iq, StreamError>>>>,
        infos: Arc<Mutex<HashMap<String, Result<Iq, StreamError>>>>,
        asked: Arc<Mutex<Vec<String>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Server {
        fn new(items: Result<Iq, StreamError>) -> Self {
            let server = Self::default();
            *server.items.lock().expect("lock") = Some(items);
            server
        }

        fn info(self, jid: &str, answer: Result<Iq, StreamError>) -> Self {
            self.infos.lock().expect("lock").insert(jid.into(), answer);
            self
        }

        /// The `query` for [`discover`]: answers after a few scheduler turns.
        fn query(
            &self,
        ) -> impl Fn(Iq) -> Pin<Box<dyn Future<Output = Result<Iq, StreamError>>>> + use<> {
            let server = self.clone();
            move |iq: Iq| {
                server.calls.fetch_add(1, Ordering::SeqCst);
                let to = iq.to.as_ref().map(Jid::to_string).unwrap_or_default();
                let IqPayload::Get(payload) = &iq.payload else {
                    panic!("a get");
                };
                let answer = if payload.is("query", ns::DISCO_ITEMS) {
                    server
                        .items
                        .lock()
                        .expect("lock")
                        .clone()
                        .unwrap_or_else(|| refused("item-not-found"))
                } else {
                    assert!(payload.is("query", ns::DISCO_INFO), "{payload:?}");
                    server.asked.lock().expect("lock").push(to.clone());
                    server
                        .infos
                        .lock()
                        .expect("lock")
                        .get(&to)
                        .cloned()
                        .unwrap_or_else(|| refused("service-unavailable"))
                };
                Box::pin(async move {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    answer
                })
            }
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().expect("lock").clone()
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    const DOMAIN: &str = "montague.tld";

    /// Runs `f` to completion (the fixtures are parsed outside a runtime: see `parse_xml`).
    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }

    #[test]
    fn finds_prosodys_upload_component() {
        let server = Server::new(items(&[
            "conference.montague.tld",
            "bridge.montague.tld",
            "upload.montague.tld",
        ]))
        .info(
            DOMAIN,
            info(
                &["http://jabber.org/protocol/disco#info", "urn:xmpp:blocking"],
                "",
            ),
        )
        .info(
            "conference.montague.tld",
            info(&["http://jabber.org/protocol/muc"], ""),
        )
        .info("upload.montague.tld", upload_info(52_428_800));
        let found = run(discover(&jid(DOMAIN), server.query())).expect("answers");
        assert_eq!(
            found,
            Some(UploadService {
                jid: jid("upload.montague.tld"),
                max_file_size: Some(52_428_800),
            })
        );
        // The domain and every item, asked together.
        assert_eq!(
            server.asked(),
            [
                DOMAIN,
                "conference.montague.tld",
                "bridge.montague.tld",
                "upload.montague.tld"
            ]
        );
    }

    #[test]
    fn the_domain_itself_comes_first_and_a_limit_is_optional() {
        let server = Server::new(items(&["upload.montague.tld"]))
            .info(DOMAIN, info(&[ns::HTTP_UPLOAD], ""))
            .info("upload.montague.tld", upload_info(1));
        let found = run(discover(&jid(DOMAIN), server.query())).expect("answers");
        assert_eq!(
            found,
            Some(UploadService {
                jid: jid(DOMAIN),
                max_file_size: None,
            })
        );
        // The disco#items answer refused: the domain alone is asked.
        let server = Server::new(refused("service-unavailable")).info(DOMAIN, upload_info(7));
        let found = run(discover(&jid(DOMAIN), server.query())).expect("answers");
        assert_eq!(
            found.map(|s| (s.jid, s.max_file_size)),
            Some((jid(DOMAIN), Some(7)))
        );
        assert_eq!(server.asked(), [DOMAIN]);
    }

    #[test]
    fn no_service_is_none() {
        let server = Server::new(items(&["conference.montague.tld"]))
            .info(DOMAIN, info(&["urn:xmpp:blocking"], ""))
            .info(
                "conference.montague.tld",
                info(&["http://jabber.org/protocol/muc"], ""),
            );
        assert_eq!(run(discover(&jid(DOMAIN), server.query())), Ok(None));
        // The old namespace (urn:xmpp:http:upload) is not ours, nor is a malformed answer.
        let server = Server::new(items(&["old.montague.tld", "bad.montague.tld"]))
            .info("old.montague.tld", info(&["urn:xmpp:http:upload"], ""))
            .info(
                "bad.montague.tld",
                result("<iq type='result' id='q'><query xmlns='http://jabber.org/protocol/disco#info'><feature/></query></iq>"),
            );
        assert_eq!(run(discover(&jid(DOMAIN), server.query())), Ok(None));
        // Nor a malformed disco#items answer: only the domain is asked.
        let server = Server::new(result(
            "<iq type='result' id='q'><query xmlns='http://jabber.org/protocol/disco#items'>\
               <item jid='upload.montague.tld'/><item/></query></iq>",
        ))
        .info("upload.montague.tld", upload_info(1));
        assert_eq!(run(discover(&jid(DOMAIN), server.query())), Ok(None));
        assert_eq!(server.asked(), [DOMAIN]);
    }

    #[test]
    fn a_missing_answer_is_an_error_unless_the_service_is_found() {
        let timeout = || Err(StreamError::Timeout("an iq answer"));
        let server = Server::new(items(&["slow.montague.tld", "upload.montague.tld"]))
            .info("slow.montague.tld", timeout())
            .info("upload.montague.tld", upload_info(10));
        let found = run(discover(&jid(DOMAIN), server.query())).expect("found");
        assert_eq!(found.map(|s| s.jid), Some(jid("upload.montague.tld")));

        let server =
            Server::new(items(&["slow.montague.tld"])).info("slow.montague.tld", timeout());
        assert_eq!(
            run(discover(&jid(DOMAIN), server.query())),
            Err(StreamError::Timeout("an iq answer"))
        );

        let server = Server::new(Err(StreamError::Closed));
        assert_eq!(
            run(discover(&jid(DOMAIN), server.query())),
            Err(StreamError::Closed)
        );
        assert!(server.asked().is_empty());
    }

    #[test]
    fn items_are_bounded_and_nodes_and_duplicates_skipped() {
        let many: Vec<String> = (0..200).map(|i| format!("c{i}.montague.tld")).collect();
        let mut names: Vec<&str> = vec!["c0.montague.tld", DOMAIN];
        names.extend(many.iter().map(String::as_str));
        let server = Server::new(items(&names)).info("c150.montague.tld", upload_info(1));
        assert_eq!(run(discover(&jid(DOMAIN), server.query())), Ok(None));
        let asked = server.asked();
        assert_eq!(asked.len(), 1 + MAX_ITEMS_QUERIED);
        assert_eq!(asked[..3], [DOMAIN, "c0.montague.tld", "c1.montague.tld"]);
        assert_eq!(server.calls(), 2 + MAX_ITEMS_QUERIED);

        let server = Server::new(result(
            "<iq type='result' id='q'><query xmlns='http://jabber.org/protocol/disco#items'>\
               <item jid='montague.tld' node='announcements'/><item jid='pubsub.montague.tld'/></query></iq>",
        ));
        assert_eq!(run(discover(&jid(DOMAIN), server.query())), Ok(None));
        assert_eq!(server.asked(), [DOMAIN, "pubsub.montague.tld"]);
    }

    #[test]
    fn one_discovery_is_shared_and_kept_but_a_failed_one_is_not() {
        let uploads = Uploads::default();
        let server = Server::new(items(&["upload.montague.tld"]))
            .info("upload.montague.tld", upload_info(5));
        let domain = jid(DOMAIN);
        let (a, b) = run(async {
            tokio::join!(
                uploads.service_with(&domain, server.query()),
                uploads.service_with(&domain, server.query()),
            )
        });
        let want = Some(UploadService {
            jid: jid("upload.montague.tld"),
            max_file_size: Some(5),
        });
        assert_eq!(a.expect("found"), want);
        assert_eq!(b.expect("found"), want);
        assert_eq!(server.calls(), 3, "one disco#items, two disco#info");
        assert_eq!(
            run(uploads.service_with(&domain, server.query())).expect("kept"),
            want
        );
        assert_eq!(server.calls(), 3);

        // No answer: not kept. "None" is.
        let uploads = Uploads::default();
        let down = Server::new(Err(StreamError::Closed));
        assert!(matches!(
            run(uploads.service_with(&domain, down.query())),
            Err(OmemoError::Stream(StreamError::Closed))
        ));
        let none = Server::new(items(&[]));
        assert_eq!(
            run(uploads.service_with(&domain, none.query())).expect("answered"),
            None
        );
        assert_eq!(
            run(uploads.service_with(&domain, server.query())).expect("kept"),
            None
        );
        assert_eq!(none.calls(), 2);
    }

    fn answer(xml: &str) -> Iq {
        Iq::from_element(parse_xml(xml)).expect("an iq")
    }

    #[test]
    fn slot_answers() {
        let slot = slot_of(answer(
            "<iq type='result' id='s' from='upload.montague.tld'><slot xmlns='urn:xmpp:http:upload:0'>\
               <put url='https://u.montague.tld/s/a.jpg'><header name='Authorization'>Bearer t</header></put>\
               <get url='https://u.montague.tld/s/a.jpg'/></slot></iq>",
        ))
        .expect("a slot");
        assert_eq!(
            slot.put_headers,
            [("Authorization".to_owned(), "Bearer t".to_owned())]
        );
        assert_eq!(slot.get_url, "https://u.montague.tld/s/a.jpg");

        // XEP-0363 §4.1, example 6.
        let too_large = slot_of(answer(
            "<iq type='error' id='s' from='upload.montague.tld'>\
               <request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456' content-type='image/jpeg'/>\
               <error type='modify'>\
                 <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large. The maximum file size is 20000 bytes</text>\
                 <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large>\
               </error></iq>",
        ));
        assert_eq!(
            too_large,
            Err(UploadError::TooLarge {
                max_file_size: Some(20000)
            })
        );

        // XEP-0363 §4.1, examples 7 and 8; Prosody's refused file type.
        for (xml, kind, condition, text) in [
            (
                "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                   <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Quota reached. You can only upload 5 files in 5 minutes</text>\
                   <retry xmlns='urn:xmpp:http:upload:0' stamp='2017-12-03T23:42:05Z'/></error>",
                ErrorType::Wait,
                Condition::ResourceConstraint,
                Some("Quota reached. You can only upload 5 files in 5 minutes"),
            ),
            (
                "<error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                   <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Only premium members are allowed to upload files</text></error>",
                ErrorType::Cancel,
                Condition::NotAllowed,
                Some("Only premium members are allowed to upload files"),
            ),
            (
                "<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                   <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File type not allowed</text></error>",
                ErrorType::Modify,
                Condition::NotAcceptable,
                Some("File type not allowed"),
            ),
            (
                "<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                ErrorType::Auth,
                Condition::Forbidden,
                None,
            ),
        ] {
            let got = slot_of(answer(&format!("<iq type='error' id='s'>{xml}</iq>")));
            assert_eq!(
                got,
                Err(UploadError::Refused {
                    kind,
                    condition,
                    text: text.map(str::to_owned),
                }),
                "{xml}"
            );
        }

        for (xml, want) in [
            (
                "<iq type='result' id='s'/>",
                Malformed::new("iq", "slot", "is missing"),
            ),
            (
                "<iq type='result' id='s'><query xmlns='urn:example'/></iq>",
                Malformed::new("iq", "slot", "is missing"),
            ),
            (
                "<iq type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'><put url='file:///etc/passwd'/><get url='https://a/'/></slot></iq>",
                Malformed::new("put", "url", "is not an http or https URL"),
            ),
        ] {
            assert_eq!(
                slot_of(answer(xml)),
                Err(UploadError::BadSlot(want)),
                "{xml}"
            );
        }
    }

    #[test]
    fn errors_show_no_server_text() {
        let refused = UploadError::Refused {
            kind: ErrorType::Cancel,
            condition: Condition::NotAllowed,
            text: Some("secret words".into()),
        };
        for shown in [
            refused.to_string(),
            format!("{refused:?}"),
            OmemoError::from(refused.clone()).to_string(),
        ] {
            assert!(!shown.contains("secret"), "{shown}");
            assert!(
                shown.contains("not-allowed") || shown.contains("NotAllowed"),
                "{shown}"
            );
        }
        assert_eq!(
            UploadError::TooLarge {
                max_file_size: Some(52_428_800)
            }
            .to_string(),
            "the file is too large for the upload service (at most 52428800 bytes)"
        );
        assert_eq!(
            UploadError::TooLarge {
                max_file_size: None
            }
            .to_string(),
            "the file is too large for the upload service"
        );
    }
}
