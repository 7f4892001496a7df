//! RFC 6120 stream negotiation, step by step: TCP, TLS (STARTTLS or direct), SASL, restart, then
//! XEP-0198 resumption or resource binding and enabling stream management.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl::client::Mechanism;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::common::ChannelBinding;
use sasl::common::scram::{Sha1, Sha256};
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::config::{ClientConfig, TlsMode};
use super::error::Error;
use super::resolver;
use super::sm;
use super::transport::{self, Transport};
use crate::jid::Jid;
use crate::stanza::ns;
use crate::xml::{self, Element, XmlReader};

pub(crate) type Reader = XmlReader<ReadHalf<Transport>>;
pub(crate) type Writer = WriteHalf<Transport>;

/// What we know of a previous stream management session that might be resumed.
#[derive(Clone, Debug)]
pub(crate) struct ResumeToken {
    pub id: String,
    pub jid: Jid,
    /// Inbound stanzas we handled, i.e. the `h` we send.
    pub handled: u32,
}

/// How stream management ended up on the new stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SmOutcome {
    /// Not offered by the server or not wanted.
    Off,
    /// A fresh SM session; `resume_id` when the server allows resumption. `failed_h` is the count
    /// a failed resumption attempt reported for the old session.
    Enabled {
        resume_id: Option<String>,
        failed_h: Option<u32>,
    },
    /// The old session continues; the server had handled `h` of our stanzas.
    Resumed { h: u32 },
}

pub(crate) struct Negotiated {
    pub reader: Reader,
    pub writer: Writer,
    pub jid: Jid,
    pub sm: SmOutcome,
    pub mechanism: &'static str,
}

/// Connects and negotiates a stream, resuming `resume` when possible.
pub(crate) async fn negotiate(
    config: &ClientConfig,
    resume: Option<&ResumeToken>,
) -> Result<Negotiated, Error> {
    let mut s = secure_stream(config).await?;
    let mechanism = s.authenticate(config).await?;
    let transport = s.into_transport()?;
    let mut s = Steps::open(transport, config).await?;

    let sm_offered = config.stream_management && s.features.get_child("sm", ns::SM).is_some();
    let mut failed_h = None;
    if let (true, Some(token)) = (sm_offered, resume) {
        s.send(&sm::resume(&token.id, token.handled)).await?;
        let answer = s.next().await?;
        if answer.is("resumed", ns::SM) {
            let h = sm::h_of(&answer)?.ok_or(Error::Protocol("<resumed/> without h".into()))?;
            return Ok(s.finish(token.jid.clone(), SmOutcome::Resumed { h }, mechanism));
        }
        if !answer.is("failed", ns::SM) {
            return Err(Error::Protocol(format!(
                "unexpected <{}/> in answer to <resume/>",
                answer.name()
            )));
        }
        failed_h = sm::h_of(&answer)?;
    }
    let jid = s.bind(config).await?;
    if let Some(session) = s.features.get_child("session", ns::SESSION)
        && session.get_child("optional", ns::SESSION).is_none()
    {
        s.iq_set("sess", Element::new("session", ns::SESSION))
            .await?;
    }
    let sm = if sm_offered {
        s.send(&sm::enable()).await?;
        let answer = s.next().await?;
        if answer.is("enabled", ns::SM) {
            let resumable = matches!(answer.get_attr("resume"), Some("true" | "1"));
            let resume_id = answer
                .get_attr("id")
                .filter(|_| resumable)
                .map(str::to_owned);
            SmOutcome::Enabled {
                resume_id,
                failed_h,
            }
        } else {
            SmOutcome::Off
        }
    } else {
        SmOutcome::Off
    };
    Ok(s.finish(jid, sm, mechanism))
}

/// TCP (to the servers `resolver::candidates` names, in order), then TLS (from the first
/// byte, or STARTTLS on a plaintext stream; a server without STARTTLS is refused; the
/// certificate is checked against the JID's domain either way): a stream opened over TLS, its
/// features read. Every stream we use starts here, the login's and the in-band registration's.
///
/// When one of several candidates fails after its TCP connection (TLS, the stream), the next
/// is tried, as RFC 6120 §3.2.1 and XEP-0368 say; a refused certificate ends the attempt
/// there (it is reported at once, not retried elsewhere as a network fault).
pub(super) async fn secure_stream(config: &ClientConfig) -> Result<Steps<'_>, Error> {
    let candidates = resolver::candidates(config).await?;
    let mut tried = Vec::new();
    for candidate in &candidates {
        let Some(tcp) = resolver::connect_to(config, candidate, &mut tried).await else {
            continue;
        };
        match secure_on(config, tcp, candidate.tls).await {
            Ok(steps) => return Ok(steps),
            Err(e @ Error::Certificate { .. }) => return Err(e),
            Err(e) if candidates.len() == 1 => return Err(e),
            Err(e) => {
                tracing::warn!(account = %config.jid, %candidate, error = %e, "this server failed; trying the next");
                tried.push(format!("{candidate}: {e}"));
            }
        }
    }
    Err(Error::Unreachable {
        domain: config.jid.domain().to_owned(),
        tried: tried.join("; "),
    })
}

/// TLS and the stream on one server's TCP connection. Direct TLS offers the ALPN protocol
/// `xmpp-client` (XEP-0368), so a TLS front end shared with other services can route it.
async fn secure_on(
    config: &ClientConfig,
    tcp: TcpStream,
    tls: TlsMode,
) -> Result<Steps<'_>, Error> {
    let domain = config.jid.domain();
    let timeout = config.timeouts.connect;
    let transport = match tls {
        TlsMode::Direct => {
            let mut direct = (*config.tls_config).clone();
            direct.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
            transport::start_tls(tcp, domain, Arc::new(direct), timeout).await?
        }
        TlsMode::StartTls => Transport::Plain(tcp),
    };
    let mut s = Steps::open(transport, config).await?;
    if !s.is_tls() {
        if s.features.get_child("starttls", ns::TLS).is_none() {
            return Err(Error::TlsUnavailable);
        }
        s.send(&Element::new("starttls", ns::TLS)).await?;
        let answer = s.next().await?;
        if !answer.is("proceed", ns::TLS) {
            return Err(Error::Tls("the server refused STARTTLS".into()));
        }
        let Transport::Plain(tcp) = s.into_transport()? else {
            return Err(Error::Protocol("STARTTLS on a TLS stream".into()));
        };
        let tls = transport::start_tls(tcp, domain, config.tls_config.clone(), timeout).await?;
        s = Steps::open(tls, config).await?;
    }
    Ok(s)
}

/// The ALPN protocol id of XMPP client connections over direct TLS (XEP-0368).
pub(crate) const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// One stream during negotiation: the reader, the writer and the last features.
pub(super) struct Steps<'c> {
    reader: Reader,
    writer: Writer,
    pub(super) features: Element,
    config: &'c ClientConfig,
    tls: bool,
}

impl<'c> Steps<'c> {
    /// Opens a stream on `transport` (first time or restart) and reads its features.
    async fn open(transport: Transport, config: &'c ClientConfig) -> Result<Self, Error> {
        let tls = transport.is_tls();
        let (read, mut writer) = tokio::io::split(transport);
        let header = xml::stream_header(config.jid.domain(), "en");
        write_all(&mut writer, header.as_bytes(), config).await?;
        let mut reader = XmlReader::new(read, config.limits.clone());
        let root = tokio::time::timeout(config.timeouts.negotiate, reader.read_header())
            .await
            .map_err(|_| Error::Timeout("the server's stream header"))??;
        if !root.is("stream", ns::STREAM) {
            return Err(Error::Protocol(
                "the server did not open an XMPP stream".into(),
            ));
        }
        let mut s = Self {
            reader,
            writer,
            features: Element::new("features", ns::STREAM),
            config,
            tls,
        };
        let features = s.next().await?;
        if !features.is("features", ns::STREAM) {
            return Err(Error::Protocol(format!(
                "expected stream features, got <{}/>",
                features.name()
            )));
        }
        s.features = features;
        Ok(s)
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    /// The next element, with stream errors turned into `Error::Stream`.
    pub(super) async fn next(&mut self) -> Result<Element, Error> {
        let el = tokio::time::timeout(self.config.timeouts.negotiate, self.reader.next_element())
            .await
            .map_err(|_| Error::Timeout("the server during stream negotiation"))??;
        if el.is("error", ns::STREAM) {
            return Err(stream_error(&el));
        }
        Ok(el)
    }

    pub(super) async fn send(&mut self, el: &Element) -> Result<(), Error> {
        write_all(
            &mut self.writer,
            el.to_xml(ns::CLIENT).as_bytes(),
            self.config,
        )
        .await
    }

    fn into_transport(self) -> Result<Transport, Error> {
        let read = self.reader.into_inner()?;
        Ok(read.unsplit(self.writer))
    }

    fn finish(self, jid: Jid, sm: SmOutcome, mechanism: &'static str) -> Negotiated {
        Negotiated {
            reader: self.reader,
            writer: self.writer,
            jid,
            sm,
            mechanism,
        }
    }

    /// SASL: SCRAM-SHA-256, then SCRAM-SHA-1, then PLAIN (always inside TLS here).
    async fn authenticate(&mut self, config: &ClientConfig) -> Result<&'static str, Error> {
        let offered: Vec<String> = self
            .features
            .get_child("mechanisms", ns::SASL)
            .map(|m| {
                m.children()
                    .filter(|c| c.is("mechanism", ns::SASL))
                    .map(Element::text_content)
                    .collect()
            })
            .unwrap_or_default();
        let has = |name: &str| offered.iter().any(|m| m.trim() == name);
        let user = config
            .jid
            .local()
            .ok_or(Error::Sasl("the account JID has no localpart".into()))?;
        let sasl_err = |e: sasl::Error| Error::Sasl(format!("{e:?}"));
        let (name, mut mech): (&'static str, Box<dyn Mechanism + Send>) = if has("SCRAM-SHA-256") {
            (
                "SCRAM-SHA-256",
                Box::new(
                    Scram::<Sha256>::new(user, config.password.as_str(), ChannelBinding::None)
                        .map_err(sasl_err)?,
                ),
            )
        } else if has("SCRAM-SHA-1") {
            (
                "SCRAM-SHA-1",
                Box::new(
                    Scram::<Sha1>::new(user, config.password.as_str(), ChannelBinding::None)
                        .map_err(sasl_err)?,
                ),
            )
        } else if has("PLAIN") && self.tls {
            (
                "PLAIN",
                Box::new(Plain::new(user, config.password.as_str())),
            )
        } else {
            return Err(Error::NoMechanism);
        };
        let initial = mech.initial();
        let auth = Element::new("auth", ns::SASL)
            .attr("mechanism", mech.name())
            .text(encode(&initial));
        self.send(&auth).await?;
        loop {
            let el = self.next().await?;
            if el.ns() != ns::SASL {
                return Err(Error::Protocol(format!(
                    "unexpected <{}/> during SASL",
                    el.name()
                )));
            }
            match el.name() {
                "challenge" => {
                    let challenge = decode(&el.text_content())?;
                    let response = mech
                        .response(&challenge)
                        .map_err(|e| Error::Sasl(format!("{e:?}")))?;
                    self.send(&Element::new("response", ns::SASL).text(encode(&response)))
                        .await?;
                }
                "success" => {
                    let data = decode(&el.text_content())?;
                    // For SCRAM this checks the server's signature: a server that does not know the
                    // password is refused here.
                    mech.success(&data)
                        .map_err(|e| Error::Sasl(format!("the server's proof is wrong: {e:?}")))?;
                    return Ok(name);
                }
                "failure" => {
                    let condition = el
                        .children()
                        .next()
                        .map_or("unknown", Element::name)
                        .to_owned();
                    return Err(Error::AuthFailed { condition });
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected <{other}/> during SASL"
                    )));
                }
            }
        }
    }

    /// RFC 6120 §7: binds our resource (or lets the server pick), returns the full JID.
    async fn bind(&mut self, config: &ClientConfig) -> Result<Jid, Error> {
        if self.features.get_child("bind", ns::BIND).is_none() {
            return Err(Error::Protocol(
                "the server does not offer resource binding".into(),
            ));
        }
        let mut bind = Element::new("bind", ns::BIND);
        if let Some(resource) = &config.resource {
            bind.push_child(Element::new("resource", ns::BIND).text(resource.clone()));
        }
        let result = self.iq_set("bind", bind).await?;
        let jid = result
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text_content)
            .ok_or(Error::Protocol("the bind result has no JID".into()))?;
        let jid = Jid::parse(jid.trim())
            .map_err(|_| Error::Protocol("the bound JID is not valid".into()))?;
        if !jid.same_bare(&config.jid) {
            return Err(Error::Protocol(
                "the server bound a JID of another account".into(),
            ));
        }
        Ok(jid)
    }

    /// Sends an iq set and waits for its result (nothing else is expected during negotiation).
    async fn iq_set(&mut self, id: &str, payload: Element) -> Result<Element, Error> {
        let iq = Element::new("iq", ns::CLIENT)
            .attr("type", "set")
            .attr("id", id)
            .child(payload);
        let answer = self.request(iq).await?;
        match answer.get_attr("type") {
            Some("result") => Ok(answer),
            _ => Err(Error::IqError {
                condition: error_condition(&answer),
            }),
        }
    }

    /// Sends an iq and returns the answer with its id, a result or an error.
    pub(super) async fn request(&mut self, iq: Element) -> Result<Element, Error> {
        let id = iq.get_attr("id").unwrap_or_default().to_owned();
        self.send(&iq).await?;
        let answer = self.next().await?;
        if !answer.is("iq", ns::CLIENT) || answer.get_attr("id") != Some(id.as_str()) {
            return Err(Error::Protocol(format!(
                "expected the answer to iq {id}, got <{}/>",
                answer.name()
            )));
        }
        Ok(answer)
    }

    /// Ends the stream: our `</stream:stream>`, then TLS's close_notify. Best effort.
    pub(super) async fn close(mut self) {
        let _ = write_all(&mut self.writer, xml::STREAM_CLOSE.as_bytes(), self.config).await;
        let _ = self.writer.shutdown().await;
    }
}

async fn write_all(writer: &mut Writer, bytes: &[u8], config: &ClientConfig) -> Result<(), Error> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    tokio::time::timeout(config.timeouts.ping_timeout, write)
        .await
        .map_err(|_| Error::Timeout("a write to the server"))??;
    Ok(())
}

fn encode(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(bytes)
    }
}

fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| Error::Sasl("the server sent invalid base64".into()))
}

/// The defined condition of a `<stream:error/>`.
pub(crate) fn stream_error(el: &Element) -> Error {
    let condition = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
        .map_or("undefined-condition", Element::name);
    Error::Stream {
        condition: condition.to_owned(),
    }
}

/// The defined condition of an iq error, for messages.
pub(crate) fn error_condition(iq: &Element) -> String {
    iq.get_child("error", ns::CLIENT)
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::STANZAS_ERR && c.name() != "text")
        })
        .map_or("undefined-condition", Element::name)
        .to_owned()
}
