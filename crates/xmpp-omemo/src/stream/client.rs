//! The client: a cloneable handle that sends commands, one task per connection that owns the
//! socket and all state, and a bounded stream of events out. No lock is held across an await; the
//! reader runs in its own task because the quick-xml reads are not cancel-safe.
//!
//! Which task waits on which: a handle's `send`/`iq` waits for a slot in the command channel and
//! for the connection; the connection waits for a slot in the event channel, that is for the
//! owner. The owner's answers to events never wait on the connection: [`Client::ack`] and
//! [`Client::close`] go through [`Control`], which takes no channel slot (`ack` is not even
//! `async`), so an owner that reads events and acks them cannot close a cycle of waits, however
//! full both channels are. While it waits to emit, the connection still notices a close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::account;
use super::config::ClientConfig;
use super::error::Error;
use super::negotiate::{self, Negotiated, ResumeToken, SmOutcome, Writer};
use super::sm::{self, InboundCounter, InboundTag, Outbound, OutboundQueue};
use crate::jid::Jid;
use crate::stanza::blocking::BlockingCommand;
use crate::stanza::caps::Caps;
use crate::stanza::disco::{DiscoInfo, Identity};
use crate::stanza::roster::{RosterItem, RosterQuery};
use crate::stanza::{FromElement, IntoElement, Iq, ParseError, Stanza, ns};
use crate::xml::{self, Element};

/// What the connection tells its owner.
// Most events are stanzas; boxing them would cost an allocation each to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// A session is up: `resumed` when XEP-0198 continued the previous one (nothing was lost and
    /// the roster was not fetched again).
    /// `mechanism` is the SASL mechanism that authenticated us; `stream_management` whether
    /// XEP-0198 is on (acks from the server, resumption after a drop).
    Connected {
        jid: Jid,
        resumed: bool,
        mechanism: &'static str,
        stream_management: bool,
    },
    /// The connection ended. `retry_in` is when the next attempt starts; `None` means the client
    /// gave up (a fatal error such as bad credentials, or it was closed).
    Disconnected {
        reason: Error,
        retry_in: Option<Duration>,
    },
    /// A message or presence for the owner. Call [`Client::ack`] with the tag once its effect is
    /// durable (every one, presences too: the `h` reported to the server only advances over a
    /// contiguous run); until then the server keeps it and resends it after a reconnect.
    /// Inbound iqs never appear here: answers go to [`Client::iq`], requests are answered by the
    /// client (ping, disco#info, roster and blocklist pushes) or refused with
    /// `service-unavailable`.
    Stanza { tag: InboundTag, stanza: Stanza },
    /// The full roster, fetched after each new session.
    Roster(RosterQuery),
    /// A roster push from the server: one contact added, changed or removed.
    RosterPush(RosterItem),
    /// A blocklist push (XEP-0191): a block or unblock by this or another of our resources.
    /// Sent only to sessions that fetched the list ([`Client::blocklist`]).
    Blocking(BlockingCommand),
    /// The answer to an iq sent with [`Client::iq_in_order`], in its place among the stanzas:
    /// [`deliver`](OrderedAnswer::deliver) it once the stanzas before it are handled.
    Answer(OrderedAnswer),
}

/// An iq answer that travels with the stanzas ([`Event::Answer`]), so that its caller learns of
/// it only after the owner has seen every stanza the server sent before it (XEP-0313 results
/// come as messages ahead of the query's answer).
pub struct OrderedAnswer {
    reply: oneshot::Sender<Result<Element, Error>>,
    answer: Result<Element, Error>,
}

impl std::fmt::Debug for OrderedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedAnswer").finish_non_exhaustive()
    }
}

impl OrderedAnswer {
    /// Hands the answer to the waiting caller (nothing if it gave up).
    pub fn deliver(self) {
        let _ = self.reply.send(self.answer);
    }
}

enum Command {
    Send {
        element: Element,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Iq {
        id: String,
        to: Option<String>,
        element: Element,
        raw: bool,
        ordered: bool,
        reply: oneshot::Sender<Result<Element, Error>>,
    },
}

/// What handles tell the connection without a slot in a bounded channel, so that telling it
/// never waits: acknowledgements and the request to close.
///
/// Memory stays bounded by construction: an ack is applied to the shared [`InboundCounter`] at
/// once, which keeps only tags that were received and are above the contiguous `h` (at most the
/// stanzas delivered and not yet acknowledged); repeated or unknown tags are ignored.
struct Control {
    /// The inbound side of stream management, shared with the connection task. Locked only
    /// for a counter update, never across an await.
    inbound: StdMutex<InboundCounter>,
    /// Wakes the connection after an ack moved `h`, or when a close was asked for.
    wake: Notify,
    close: AtomicBool,
    /// Becomes true when the connection task has ended (set when it is dropped).
    ended: watch::Sender<bool>,
}

impl Control {
    fn new() -> Self {
        Control {
            inbound: StdMutex::new(InboundCounter::default()),
            wake: Notify::new(),
            close: AtomicBool::new(false),
            ended: watch::Sender::new(false),
        }
    }

    fn inbound(&self) -> MutexGuard<'_, InboundCounter> {
        self.inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close_requested(&self) -> bool {
        self.close.load(Ordering::Acquire)
    }
}

/// A handle to one account's connection. Cheap to clone; the connection ends when every handle is
/// dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Box<Command>>,
    control: Arc<Control>,
    /// Our server's address (the account's domain).
    pub(super) domain: Jid,
    iq_timeout: Duration,
    next_id: Arc<AtomicU64>,
}

/// Capacity of the command and event channels. Both carry boxes, like the read-ahead: tokio
/// allocates a channel's slots 32 at a time when it is made, and every idle login holds them.
const CHANNEL: usize = 64;
/// Elements read ahead of the connection task (boxed, see [`CHANNEL`]).
const READ_AHEAD: usize = 16;
/// How long `close` waits for the server to acknowledge what is still unacknowledged.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The XEP-0115 `node` of our caps: names the software, not the account.
pub const CAPS_NODE: &str = "https://github.com/interop-bridge";

/// What we answer to disco#info (XEP-0030), and so what our caps hash stands for: the one place
/// both come from, so they cannot diverge. Features are sorted and each appears once.
pub(crate) fn own_disco_info(config: &ClientConfig) -> DiscoInfo {
    let identity = Identity {
        name: Some("interop-bridge".to_owned()),
        ..Identity::new("client", "bot")
    };
    let mut features: Vec<String> = [ns::DISCO_INFO, ns::PING, ns::CARBONS, ns::CAPS]
        .map(str::to_owned)
        .to_vec();
    features.extend(config.features.iter().cloned());
    features.sort_unstable();
    features.dedup();
    DiscoInfo {
        node: None,
        identities: vec![identity],
        features,
        extensions: Vec::new(),
    }
}

/// The XEP-0115 `<c/>` for [`own_disco_info`]; it goes into every available presence we send
/// (Prosody drops our `+notify` PEP subscriptions on an available presence without it).
pub(crate) fn own_caps(config: &ClientConfig) -> Caps {
    let info = own_disco_info(config);
    let features: Vec<&str> = info.features.iter().map(String::as_str).collect();
    Caps::sha1(CAPS_NODE, &info.identities, &features)
}

/// A client's stream of [`Event`]s; it ends when the connection task has ended. The events
/// travel boxed: a channel allocates a block of 32 slots up front and an `Event` is ~400
/// bytes, so every idle client would hold 13 KB for events that rarely come.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Box<Event>>);

impl Events {
    /// The next event, or `None` once the connection task has ended and every event was taken.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await.map(|event| *event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|event| *event)
    }
}

impl Client {
    /// Starts the connection task. It connects, and reconnects with backoff, until closed.
    pub fn spawn(config: ClientConfig) -> (Client, Events) {
        let (commands_tx, commands) = mpsc::channel(CHANNEL);
        let (events, events_rx) = mpsc::channel(CHANNEL);
        let control = Arc::new(Control::new());
        let client = Client {
            commands: commands_tx,
            control: control.clone(),
            domain: config.jid.to_domain(),
            iq_timeout: config.timeouts.iq,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        tokio::spawn(Connection::new(config, commands, events, control).run());
        (client, Events(events_rx))
    }

    /// Queues a stanza; the returned receiver completes when the server has acknowledged it
    /// (XEP-0198), or when it was written if the server has no stream management.
    pub async fn submit(
        &self,
        stanza: impl IntoElement,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Box::new(Command::Send {
                element: stanza.into_element(),
                done,
            }))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// Sends a stanza and waits until the server has it (see [`Client::submit`]).
    pub async fn send(&self, stanza: impl IntoElement) -> Result<(), Error> {
        self.submit(stanza)
            .await?
            .await
            .map_err(|_| Error::Closed)?
    }

    /// Sends an iq get/set and waits for its result or error (with the configured timeout). An id
    /// is assigned when `iq.id` is empty. Returns the result; an error answer is
    /// `Err(Error::IqError)`.
    pub async fn iq(&self, iq: Iq) -> Result<Iq, Error> {
        self.exchange(iq, false, false).await
    }

    /// Like [`Client::iq`], but the answer comes through the event stream as
    /// [`Event::Answer`], behind the stanzas the server sent before it; the call returns once
    /// the owner delivered it. The owner must read its events (and deliver answers), or this
    /// waits until the timeout.
    pub async fn iq_in_order(&self, iq: Iq) -> Result<Iq, Error> {
        self.exchange(iq, false, true).await
    }

    /// Like [`Client::iq`], but an error answer is returned as an `Ok` iq with
    /// [`IqPayload::Error`](crate::stanza::IqPayload::Error), so the caller can read its application-specific condition (such as
    /// XEP-0060 `precondition-not-met`, see `stanza::pubsub::is_precondition_not_met`).
    pub async fn request(&self, iq: Iq) -> Result<Iq, Error> {
        self.exchange(iq, true, false).await
    }

    async fn exchange(&self, mut iq: Iq, raw: bool, ordered: bool) -> Result<Iq, Error> {
        if iq.id.is_empty() {
            iq.id = format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        }
        let id = iq.id.clone();
        let to = iq.to.as_ref().map(ToString::to_string);
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Box::new(Command::Iq {
                id,
                to,
                element: iq.into_element(),
                raw,
                ordered,
                reply,
            }))
            .await
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.iq_timeout, rx).await {
            Ok(Ok(answer)) => answer.and_then(|el| {
                Iq::from_element(el).map_err(|e| match e {
                    ParseError::Malformed(m) => Error::Malformed(m),
                    ParseError::NotMine(_) => {
                        Error::Protocol("an iq answer that is not an iq".into())
                    }
                })
            }),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout("an iq answer")),
        }
    }

    /// Marks an inbound stanza handled, so the server may forget it. Never waits: it updates the
    /// counter the connection reports from and wakes the connection (see [`Control`]).
    pub fn ack(&self, tag: InboundTag) {
        if self.control.inbound().handle(tag) {
            self.control.wake.notify_one();
        }
    }

    /// Sends what is queued, waits briefly for acknowledgements (ours and the server's), closes
    /// the stream and ends the connection task; returns when it has ended. Needs no free slot in
    /// a channel, and a connection waiting for its owner to take an event gives up that event
    /// (its stanza stays unacknowledged, so the server delivers it again).
    pub async fn close(&self) {
        let mut ended = self.control.ended.subscribe();
        self.control.close.store(true, Ordering::Release);
        self.control.wake.notify_one();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

/// Who waits for an iq answer.
enum Pending {
    /// `raw`: an error answer is handed over as it is, not turned into `Error::IqError`.
    Caller {
        to: Option<String>,
        raw: bool,
        /// Deliver the answer through the event stream ([`Event::Answer`]).
        ordered: bool,
        reply: oneshot::Sender<Result<Element, Error>>,
    },
    Roster,
    Ping,
    Ignore,
}

struct Connection {
    config: ClientConfig,
    /// [`own_caps`] of `config`.
    caps: Caps,
    commands: mpsc::Receiver<Box<Command>>,
    events: mpsc::Sender<Box<Event>>,
    control: Arc<Control>,
    queue: OutboundQueue,
    pending: HashMap<String, Pending>,
    resume: Option<ResumeToken>,
    /// A close was asked for, or every handle is gone.
    closing: bool,
    ping_seq: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.control.ended.send_replace(true);
    }
}

/// How a session ended.
enum End {
    Lost(Error),
    Closed,
}

impl Connection {
    fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Box<Command>>,
        events: mpsc::Sender<Box<Event>>,
        control: Arc<Control>,
    ) -> Self {
        Connection {
            caps: own_caps(&config),
            config,
            commands,
            events,
            control,
            queue: OutboundQueue::default(),
            pending: HashMap::new(),
            resume: None,
            closing: false,
            ping_seq: 0,
        }
    }

    fn inbound(&self) -> MutexGuard<'_, InboundCounter> {
        self.control.inbound()
    }

    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                if !self.absorb(Some(cmd)) {
                    self.finish_close();
                    return;
                }
            }
            if self.control.close_requested() {
                self.finish_close();
                return;
            }
            // Acks the owner already gave count for the `h` of a resumption.
            let handled = self.inbound().handled;
            if let Some(token) = &mut self.resume {
                token.handled = handled;
            }
            let control = self.control.clone();
            let result = {
                let (config, resume) = (self.config.clone(), self.resume.clone());
                // Boxed, like the handling of each inbound element below: a task's future is as
                // large as its largest await, and an idle login's task waits in the session.
                let mut attempt = Box::pin(async {
                    // Waiting for a permit, the client still takes commands and a close.
                    let _permit = match &config.connect_gate {
                        Some(gate) => gate.clone().acquire_owned().await.ok(),
                        None => None,
                    };
                    negotiate::negotiate(&config, resume.as_ref()).await
                });
                loop {
                    tokio::select! {
                        result = &mut attempt => break Some(result),
                        cmd = self.commands.recv() => {
                            if !self.absorb(cmd) {
                                break None;
                            }
                        }
                        () = control.wake.notified() => {
                            if control.close_requested() {
                                break None;
                            }
                        }
                    }
                }
            };
            let reason = match result {
                None => break,
                Some(Ok(negotiated)) => {
                    failures = 0;
                    match self.session(negotiated).await {
                        End::Closed => break,
                        End::Lost(reason) => reason,
                    }
                }
                Some(Err(reason)) => reason,
            };
            if reason.is_fatal() {
                tracing::warn!(account = %self.config.jid, %reason, "XMPP connection failed for good");
                self.emit(Event::Disconnected {
                    reason: reason.clone(),
                    retry_in: None,
                })
                .await;
                self.fail_everything(&reason);
                return;
            }
            failures = failures.saturating_add(1);
            let delay = backoff_delay(&self.config.backoff, failures);
            tracing::info!(account = %self.config.jid, %reason, retry_in_ms = delay.as_millis() as u64, "XMPP connection lost");
            self.emit(Event::Disconnected {
                reason,
                retry_in: Some(delay),
            })
            .await;
            let wake = Instant::now() + delay;
            loop {
                if self.control.close_requested() {
                    self.finish_close();
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = self.commands.recv() => {
                        if !self.absorb(cmd) {
                            self.finish_close();
                            return;
                        }
                    }
                    () = control.wake.notified() => {}
                }
            }
        }
        self.finish_close();
    }

    /// Takes a command while no session is up. Returns false when the client is to stop.
    fn absorb(&mut self, cmd: Option<Box<Command>>) -> bool {
        match cmd {
            None => false,
            Some(cmd) => {
                self.enqueue(*cmd);
                true
            }
        }
    }

    fn enqueue(&mut self, cmd: Command) {
        match cmd {
            Command::Send { element, done } => {
                if self.queue.len() >= self.config.max_queue {
                    let _ = done.send(Err(Error::QueueFull(self.config.max_queue)));
                } else {
                    let element = self.with_caps(element);
                    self.queue.unsent.push_back(Outbound {
                        element,
                        done: Some(done),
                    });
                }
            }
            Command::Iq {
                id,
                to,
                element,
                raw,
                ordered,
                reply,
            } => {
                if self.queue.len() >= self.config.max_queue {
                    let _ = reply.send(Err(Error::QueueFull(self.config.max_queue)));
                } else {
                    self.pending.insert(
                        id,
                        Pending::Caller {
                            to,
                            raw,
                            ordered,
                            reply,
                        },
                    );
                    self.queue.unsent.push_back(Outbound {
                        element,
                        done: None,
                    });
                }
            }
        }
    }

    fn fail_everything(&mut self, reason: &Error) {
        self.queue.fail_all(reason);
        for (_, pending) in self.pending.drain() {
            if let Pending::Caller { reply, .. } = pending {
                let _ = reply.send(Err(reason.clone()));
            }
        }
    }

    /// Fails what is left; dropping the connection then tells `close` it has ended.
    fn finish_close(&mut self) {
        self.fail_everything(&Error::Closed);
    }

    /// Hands an event to the owner, waiting for a slot. The owner never waits on this task
    /// (acks and close take no slot), so the wait ends; a close given meanwhile drops the event
    /// (a stanza in it stays unacknowledged and comes again).
    async fn emit(&mut self, event: Event) {
        let control = self.control.clone();
        loop {
            if control.close_requested() {
                self.closing = true;
                return;
            }
            tokio::select! {
                permit = self.events.reserve() => {
                    if let Ok(permit) = permit {
                        permit.send(Box::new(event));
                    }
                    return;
                }
                () = control.wake.notified() => {}
            }
        }
    }

    async fn session(&mut self, negotiated: Negotiated) -> End {
        let Negotiated {
            mut reader,
            writer,
            jid,
            sm,
            mechanism,
        } = negotiated;
        let resumed = matches!(sm, SmOutcome::Resumed { .. });
        let sm_on = !matches!(sm, SmOutcome::Off);
        let rewound = match sm {
            SmOutcome::Resumed { h } => {
                self.inbound().resume();
                self.queue.rewind(Some(h), false)
            }
            SmOutcome::Enabled {
                resume_id,
                failed_h,
            } => {
                self.inbound().restart();
                self.resume = resume_id.map(|id| ResumeToken {
                    id,
                    jid: jid.clone(),
                    handled: 0,
                });
                self.queue.rewind(failed_h, true)
            }
            SmOutcome::Off => {
                self.inbound().restart();
                self.resume = None;
                self.queue.rewind(None, true)
            }
        };
        if let Err(e) = rewound {
            return End::Lost(e);
        }
        if !resumed {
            self.start_of_session();
        }
        tracing::info!(account = %self.config.jid, resumed, mechanism, stream_management = sm_on, "XMPP session up");
        self.emit(Event::Connected {
            jid: jid.clone(),
            resumed,
            mechanism,
            stream_management: sm_on,
        })
        .await;

        let (tx, mut elements) = mpsc::channel(READ_AHEAD);
        let reader_task = tokio::spawn(async move {
            loop {
                let next = reader.next_element().await.map_err(Error::from);
                let stop = next.is_err();
                if tx.send(Box::new(next)).await.is_err() || stop {
                    break;
                }
            }
        });
        let mut session = Session {
            writer,
            jid,
            sm_on,
            r_outstanding: false,
            last_a: 0,
            last_rx: Instant::now(),
            ping_sent: None,
        };
        let end = self.drive(&mut session, &mut elements).await;
        reader_task.abort();
        if let End::Closed = end {
            // What the owner committed until now, acknowledged before the stream ends.
            let handled = self.inbound().handled;
            if sm_on && handled != session.last_a {
                let _ = session.write(&sm::answer(handled), &self.config).await;
            }
            let _ = session.write_raw(xml::STREAM_CLOSE, &self.config).await;
            let _ = session.writer.shutdown().await;
        }
        if !sm_on {
            self.queue.complete_written();
        }
        end
    }

    /// Queues, in front of everything else, what a new session starts with: roster, carbons,
    /// the archive touch (`archive_first`), presence (in that order, RFC 6121 §2.2 and §4.2).
    fn start_of_session(&mut self) {
        let mut first = Vec::new();
        let roster_id = "roster-get".to_owned();
        self.pending.insert(roster_id.clone(), Pending::Roster);
        first.push(
            Element::new("iq", ns::CLIENT)
                .attr("type", "get")
                .attr("id", roster_id)
                .child(Element::new("query", ns::ROSTER)),
        );
        if self.config.carbons {
            self.pending
                .insert("carbons-enable".into(), Pending::Ignore);
            first.push(
                Element::new("iq", ns::CLIENT)
                    .attr("type", "set")
                    .attr("id", "carbons-enable")
                    .child(Element::new("enable", ns::CARBONS)),
            );
        }
        if self.config.archive_first {
            self.pending.insert("archive-first".into(), Pending::Ignore);
            first.push(
                Element::new("iq", ns::CLIENT)
                    .attr("type", "set")
                    .attr("id", "archive-first")
                    .child(crate::stanza::mam::query(
                        "archive-first",
                        &crate::stanza::mam::Page::After(None),
                        0,
                    )),
            );
        }
        if self.config.initial_presence {
            first.push(self.with_caps(Element::new("presence", ns::CLIENT)));
        }
        for element in first.into_iter().rev() {
            self.queue.unsent.push_front(Outbound {
                element,
                done: None,
            });
        }
    }

    async fn drive(
        &mut self,
        s: &mut Session,
        elements: &mut mpsc::Receiver<Box<Result<Element, Error>>>,
    ) -> End {
        let control = self.control.clone();
        loop {
            if let Err(e) = self.flush(s).await {
                return End::Lost(e);
            }
            if self.control.close_requested() {
                self.closing = true;
            }
            if self.closing {
                return self.close_gracefully(s, elements).await;
            }
            let ping_at = match s.ping_sent {
                Some(sent) => sent + self.config.timeouts.ping_timeout,
                None => s.last_rx + self.config.timeouts.ping_interval,
            };
            tokio::select! {
                next = elements.recv() => {
                    let element = match next.map(|boxed| *boxed) {
                        Some(Ok(el)) => el,
                        Some(Err(e)) => return End::Lost(e),
                        None => return End::Lost(Error::Io("the reader stopped".into())),
                    };
                    s.last_rx = Instant::now();
                    s.ping_sent = None;
                    if let Err(e) = Box::pin(self.inbound_element(s, element)).await {
                        return End::Lost(e);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => self.closing = true,
                    Some(cmd) => self.enqueue(*cmd),
                },
                // An ack moved `h` (reported by the flush above) or a close was asked for.
                () = control.wake.notified() => {}
                _ = tokio::time::sleep_until(ping_at) => {
                    if s.ping_sent.is_some() {
                        return End::Lost(Error::Timeout("the answer to a ping"));
                    }
                    self.ping_seq += 1;
                    let id = format!("ping-{}", self.ping_seq);
                    // Forget callers that gave up and pings of earlier sessions that never came back.
                    self.pending.retain(|_, p| match p {
                        Pending::Caller { reply, .. } => !reply.is_closed(),
                        Pending::Ping => false,
                        Pending::Roster | Pending::Ignore => true,
                    });
                    self.pending.insert(id.clone(), Pending::Ping);
                    let ping = Element::new("iq", ns::CLIENT).attr("type", "get").attr("id", id).attr("to", s.jid.domain()).child(Element::new("ping", ns::PING));
                    self.queue.unsent.push_back(Outbound { element: ping, done: None });
                    s.ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Writes everything unsent; asks for an ack; reports our own `h` when it moved.
    async fn flush(&mut self, s: &mut Session) -> Result<(), Error> {
        while let Some(out) = self.queue.unsent.pop_front() {
            if let Err(e) = s.write(&out.element, &self.config).await {
                self.queue.unsent.push_front(out);
                return Err(e);
            }
            self.queue.sent = self.queue.sent.wrapping_add(1);
            if s.sm_on {
                self.queue.unacked.push_back(out);
            } else {
                out.finish(Ok(()));
            }
        }
        if s.sm_on {
            if !self.queue.unacked.is_empty() && !s.r_outstanding {
                s.write(&sm::request(), &self.config).await?;
                s.r_outstanding = true;
            }
            let handled = self.inbound().handled;
            if handled != s.last_a {
                s.last_a = handled;
                s.write(&sm::answer(s.last_a), &self.config).await?;
            }
            if let Some(token) = &mut self.resume {
                token.handled = handled;
            }
        }
        Ok(())
    }

    async fn close_gracefully(
        &mut self,
        s: &mut Session,
        elements: &mut mpsc::Receiver<Box<Result<Element, Error>>>,
    ) -> End {
        let deadline = Instant::now() + CLOSE_GRACE;
        let control = self.control.clone();
        while s.sm_on && !self.queue.unacked.is_empty() {
            tokio::select! {
                // The owner's acks during the grace period are reported too.
                () = control.wake.notified() => {
                    if self.flush(s).await.is_err() {
                        break;
                    }
                }
                next = elements.recv() => match next.map(|boxed| *boxed) {
                    Some(Ok(el)) => {
                        if Box::pin(self.inbound_element(s, el)).await.is_err() {
                            break;
                        }
                        if self.flush(s).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        End::Closed
    }

    async fn inbound_element(&mut self, s: &mut Session, el: Element) -> Result<(), Error> {
        if el.ns() == ns::SM {
            match el.name() {
                "r" => {
                    s.last_a = self.inbound().handled;
                    s.write(&sm::answer(s.last_a), &self.config).await?;
                }
                "a" => {
                    let h = sm::h_of(&el)?.ok_or(Error::Protocol("<a/> without h".into()))?;
                    self.queue.ack(h)?;
                    s.r_outstanding = false;
                }
                _ => tracing::debug!(name = el.name(), "ignoring a stream management element"),
            }
            return Ok(());
        }
        if el.is("error", ns::STREAM) {
            return Err(negotiate::stream_error(&el));
        }
        if el.ns() != ns::CLIENT || !matches!(el.name(), "message" | "presence" | "iq") {
            tracing::debug!(
                name = el.name(),
                ns = el.ns(),
                "ignoring an unknown top-level element"
            );
            return Ok(());
        }
        let tag = self.inbound().receive();
        if el.name() == "iq" {
            self.inbound_iq(s, el).await?;
            self.inbound().handle(tag);
            return Ok(());
        }
        let name = el.name().to_owned();
        match Stanza::from_element(el) {
            Ok(stanza) => self.emit(Event::Stanza { tag, stanza }).await,
            Err(e) => {
                // Counted as handled: the server must not send it again, it will not get better.
                self.inbound().handle(tag);
                if let ParseError::Malformed(m) = e {
                    tracing::warn!(stanza = %name, error = %m, "dropping a malformed stanza from the server");
                }
            }
        }
        Ok(())
    }

    async fn inbound_iq(&mut self, s: &mut Session, iq: Element) -> Result<(), Error> {
        let kind = iq.get_attr("type").unwrap_or("");
        let id = iq.get_attr("id").unwrap_or("").to_owned();
        if matches!(kind, "result" | "error") {
            let Some(pending) = self.pending.remove(&id) else {
                tracing::debug!("ignoring an iq answer nobody waits for");
                return Ok(());
            };
            let from_ok = |expected: Option<&str>| match (iq.get_attr("from"), expected) {
                (None, _) => true,
                (Some(from), Some(to)) => from == to,
                (Some(from), None) => {
                    from == s.jid.domain()
                        || from == s.jid.bare().as_str()
                        || from == s.jid.as_str()
                }
            };
            match pending {
                Pending::Caller {
                    to,
                    raw,
                    ordered,
                    reply,
                } => {
                    if !from_ok(to.as_deref()) {
                        tracing::warn!("dropping an iq answer from an unexpected sender");
                        self.pending.insert(
                            id,
                            Pending::Caller {
                                to,
                                raw,
                                ordered,
                                reply,
                            },
                        );
                        return Ok(());
                    }
                    let answer = if kind == "result" || raw {
                        Ok(iq)
                    } else {
                        Err(Error::IqError {
                            condition: negotiate::error_condition(&iq),
                        })
                    };
                    if ordered {
                        self.emit(Event::Answer(OrderedAnswer { reply, answer }))
                            .await;
                    } else {
                        let _ = reply.send(answer);
                    }
                }
                Pending::Roster if from_ok(None) && kind == "result" => {
                    let query = match iq
                        .get_child("query", ns::ROSTER)
                        .cloned()
                        .map(RosterQuery::from_element)
                    {
                        None => Ok(RosterQuery::default()),
                        Some(Ok(query)) => Ok(query),
                        Some(Err(ParseError::Malformed(m))) => Err(m),
                        Some(Err(ParseError::NotMine(_))) => Ok(RosterQuery::default()),
                    };
                    match query {
                        Ok(query) => self.emit(Event::Roster(query)).await,
                        Err(m) => tracing::warn!(error = %m, "the server sent a malformed roster"),
                    }
                }
                Pending::Roster => {
                    tracing::warn!(condition = %negotiate::error_condition(&iq), "the roster could not be fetched")
                }
                Pending::Ping | Pending::Ignore => {}
            }
            return Ok(());
        }
        let payload = iq.children().next();
        let answer = match (kind, payload) {
            ("get", Some(p)) if p.is("ping", ns::PING) => result_for(&iq),
            ("get", Some(p)) if p.is("query", ns::DISCO_INFO) => {
                match self.disco_info(p.get_attr("node")) {
                    Some(query) => result_for(&iq).child(query),
                    None => error_for(&iq, "cancel", "item-not-found"),
                }
            }
            ("set", Some(p)) if account::is_push(p) => {
                let (event, answer) = account::push(&iq, p, &s.jid);
                if let Some(event) = event {
                    self.emit(event).await;
                }
                answer
            }
            ("get" | "set", _) => error_for(&iq, "cancel", "service-unavailable"),
            _ => return Ok(()),
        };
        self.queue.unsent.push_back(Outbound {
            element: answer,
            done: None,
        });
        Ok(())
    }

    /// Our disco#info answer: for the entity itself or for our caps node (`<node>#<ver>`, echoed
    /// back, XEP-0115 §6.2); `None` (item-not-found) for any other node.
    fn disco_info(&self, node: Option<&str>) -> Option<Element> {
        if node.is_some_and(|n| n != self.caps.disco_node()) {
            return None;
        }
        let info = DiscoInfo {
            node: node.map(str::to_owned),
            ..own_disco_info(&self.config)
        };
        Some(info.into_element())
    }

    /// Puts our caps into an available presence (no `type`) that has none.
    fn with_caps(&self, mut el: Element) -> Element {
        if el.is("presence", ns::CLIENT)
            && el.get_attr("type").is_none()
            && el.get_child("c", ns::CAPS).is_none()
        {
            el.push_child(self.caps.clone().into_element());
        }
        el
    }
}

struct Session {
    writer: Writer,
    jid: Jid,
    sm_on: bool,
    r_outstanding: bool,
    /// The last `h` we reported.
    last_a: u32,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

impl Session {
    async fn write(&mut self, el: &Element, config: &ClientConfig) -> Result<(), Error> {
        self.write_raw(&el.to_xml(ns::CLIENT), config).await
    }

    async fn write_raw(&mut self, text: &str, config: &ClientConfig) -> Result<(), Error> {
        let writer = &mut self.writer;
        let write = async {
            writer.write_all(text.as_bytes()).await?;
            writer.flush().await
        };
        tokio::time::timeout(config.timeouts.ping_timeout, write)
            .await
            .map_err(|_| Error::Timeout("a write to the server"))??;
        Ok(())
    }
}

pub(super) fn result_for(iq: &Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "result")
        .attr_opt("id", iq.get_attr("id"))
        .attr_opt("to", iq.get_attr("from"))
}

pub(super) fn error_for(iq: &Element, kind: &str, condition: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "error")
        .attr_opt("id", iq.get_attr("id"))
        .attr_opt("to", iq.get_attr("from"))
        .child(
            Element::new("error", ns::CLIENT)
                .attr("type", kind)
                .child(Element::new(condition, ns::STANZAS_ERR)),
        )
}

/// `initial · 2^(n-1)`, capped at `max`, then ±25 % jitter so that many clients dropped together
/// do not come back together.
pub(crate) fn backoff_delay(backoff: &super::config::Backoff, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = backoff.initial.saturating_mul(1u32 << exp).min(backoff.max);
    let mut byte = [0u8; 1];
    let spread = if getrandom::fill(&mut byte).is_ok() {
        f64::from(byte[0]) / 255.0
    } else {
        0.5
    };
    base.mul_f64(0.75 + spread * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::caps::verification_string;
    use crate::stream::config::Backoff;

    fn connection(features: &[&str]) -> Connection {
        let tls = super::super::tls_client_config(None).expect("built-in roots");
        let mut config = ClientConfig::new(
            Jid::parse("alice@example.org").expect("valid JID"),
            "pw",
            tls,
        );
        config.features = features.iter().map(|f| f.to_string()).collect();
        let (_, commands) = mpsc::channel(1);
        let (events, _) = mpsc::channel(1);
        Connection::new(config, commands, events, Arc::new(Control::new()))
    }

    fn caps_of(presence: &Element) -> Caps {
        let c = presence
            .get_child("c", ns::CAPS)
            .cloned()
            .expect("a <c/> in the presence");
        Caps::from_element(c).expect("valid caps")
    }

    #[test]
    fn a_new_session_touches_the_archive_before_its_presence_when_asked() {
        let firsts = |archive_first: bool| {
            let mut conn = connection(&[]);
            conn.config.archive_first = archive_first;
            conn.start_of_session();
            conn.queue
                .unsent
                .iter()
                .map(|o| {
                    let e = &o.element;
                    let child = e.children().next().map_or("", |c| c.name());
                    format!("{}:{child}", e.name())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            firsts(true),
            ["iq:query", "iq:enable", "iq:query", "presence:c"],
            "roster, carbons, the archive (mam), presence"
        );
        assert_eq!(firsts(false), ["iq:query", "iq:enable", "presence:c"]);
    }

    #[test]
    fn initial_presence_caps_hash_our_disco_info_answer() {
        let mut conn = connection(&["eu.siacs.conversations.axolotl.devicelist+notify", ns::PING]);
        conn.start_of_session();
        let presence = conn
            .queue
            .unsent
            .iter()
            .map(|o| &o.element)
            .find(|e| e.name() == "presence")
            .expect("the initial presence");
        let caps = caps_of(presence);
        assert_eq!(
            (caps.hash.as_str(), caps.node.as_str()),
            ("sha-1", CAPS_NODE)
        );

        for node in [None, Some(caps.disco_node())] {
            let answer = conn.disco_info(node.as_deref()).expect("an answer");
            let info = DiscoInfo::from_element(answer).expect("a valid disco#info answer");
            assert_eq!(info.node, node, "the caps node is echoed");
            let features: Vec<&str> = info.features.iter().map(String::as_str).collect();
            assert_eq!(verification_string(&info.identities, &features), caps.ver);
            assert!(info.has_feature("eu.siacs.conversations.axolotl.devicelist+notify"));
            assert_eq!(
                features.iter().filter(|f| **f == ns::PING).count(),
                1,
                "each feature once"
            );
        }
        assert_eq!(
            conn.disco_info(Some("https://github.com/interop-bridge#other")),
            None
        );
        assert_ne!(
            caps,
            own_caps(&connection(&[]).config),
            "the features are in the hash"
        );
    }

    #[test]
    fn caps_go_into_available_presences_only() {
        let conn = connection(&[]);
        let available =
            conn.with_caps(Element::new("presence", ns::CLIENT).attr("to", "bob@example.org"));
        assert_eq!(caps_of(&available), conn.caps);
        let again = conn.with_caps(available.clone());
        assert_eq!(again.children().filter(|c| c.is("c", ns::CAPS)).count(), 1);
        for el in [
            Element::new("presence", ns::CLIENT).attr("type", "unavailable"),
            Element::new("message", ns::CLIENT),
        ] {
            assert_eq!(conn.with_caps(el.clone()), el);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (40, 60.0)] {
            let d = backoff_delay(&b, n).as_secs_f64();
            assert!(
                d >= base * 0.75 - 1e-9 && d <= base * 1.25 + 1e-9,
                "failure {n}: {d}"
            );
        }
    }
}
