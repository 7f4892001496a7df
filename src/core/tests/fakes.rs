//! The fake network of the core's tests: logins that record what they were asked to do and
//! whose events the test injects.

use super::*;

/// What the fake network was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NetCall {
    /// An error reply to a contact's message: (contact, client, id, why).
    Refuse(String, Option<String>, Option<String>, String),
    Register(String),
    Start(String),
    Send {
        to: String,
        body: String,
        id: String,
    },
    /// What a sent message referred to (recorded right after its `Send`, when it referred to
    /// anything).
    Refers(OutgoingMessage),
    Signal {
        to: String,
        signal: Signal,
    },
    AddContact(String, Option<String>),
    Block(String),
    /// A catch-up from the archive was asked for (it answers nothing: the test injects).
    CatchUp(CatchUpFrom, u64),
    HoldPrekeys,
    ReleasePrekeys,
    Close,
}

/// A network whose logins record calls and whose events the test injects.
#[derive(Default)]
pub(super) struct FakeNetwork {
    /// Sends to this contact wait until `release` is notified (a slow server).
    pub(super) hold: Mutex<Option<String>>,
    pub(super) release: tokio::sync::Notify,
    /// While set, sends fail with `NotConnected` (the login is reconnecting).
    pub(super) disconnected: std::sync::atomic::AtomicBool,
    pub(super) calls: Mutex<Vec<NetCall>>,
    pub(super) events: Mutex<Option<tokio::sync::mpsc::Sender<Box<RemoteEvent>>>>,
    pub(super) refuse_password: Option<String>,
    pub(super) fail_sends: std::sync::atomic::AtomicBool,
    /// With a delay, `close` takes that long and records how many closes had started when it
    /// finished.
    pub(super) close_delay: Option<std::time::Duration>,
    pub(super) closes_started: std::sync::atomic::AtomicUsize,
    pub(super) started_when_a_close_finished: Mutex<Vec<usize>>,
}

impl FakeNetwork {
    pub(super) fn calls(&self) -> Vec<NetCall> {
        self.calls.lock().expect("lock").clone()
    }
    pub(super) fn sender(&self) -> FakeEvents {
        FakeEvents(
            self.events
                .lock()
                .expect("lock")
                .clone()
                .expect("a login was started"),
        )
    }
}

/// The fake login's event sender, boxing as the real network does.
pub(super) struct FakeEvents(tokio::sync::mpsc::Sender<Box<RemoteEvent>>);

impl FakeEvents {
    pub(super) async fn send(
        &self,
        event: RemoteEvent,
    ) -> Result<(), tokio::sync::mpsc::error::SendError<Box<RemoteEvent>>> {
        self.0.send(Box::new(event)).await
    }
}

pub(super) struct FakeLogin {
    pub(super) net: Arc<FakeNetwork>,
    /// The login's own copy of its event sender, dropped on `close` (as a connection ends).
    pub(super) events: Mutex<Option<tokio::sync::mpsc::Sender<Box<RemoteEvent>>>>,
}

#[async_trait::async_trait]
impl LoginClient for FakeLogin {
    async fn send_message(
        &self,
        to: &RemoteUserId,
        message: &OutgoingMessage,
    ) -> Result<(), NetworkError> {
        let (body, id) = (message.body.as_str(), message.id.as_str());
        if self
            .net
            .fail_sends
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(NetworkError::Encrypt("no OMEMO device".into()));
        }
        if self
            .net
            .disconnected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(NetworkError::NotConnected);
        }
        let held = self.net.hold.lock().expect("lock").as_deref() == Some(to.as_str());
        if held {
            self.net.release.notified().await;
        }
        let mut calls = self.net.calls.lock().expect("lock");
        calls.push(NetCall::Send {
            to: to.to_string(),
            body: body.into(),
            id: id.into(),
        });
        if message.reply.is_some() || message.replaces.is_some() {
            calls.push(NetCall::Refers(message.clone()));
        }
        Ok(())
    }
    async fn upload_limit(&self) -> Result<Option<u64>, NetworkError> {
        Ok(Some(50_000_000))
    }
    async fn refuse(
        &self,
        contact: &RemoteUserId,
        client: Option<&str>,
        id: Option<&str>,
        why: &str,
    ) -> Result<(), NetworkError> {
        self.net.calls.lock().expect("lock").push(NetCall::Refuse(
            contact.to_string(),
            client.map(str::to_owned),
            id.map(str::to_owned),
            why.to_owned(),
        ));
        Ok(())
    }
    async fn send_signal(
        &self,
        to: &RemoteUserId,
        _id: &str,
        signal: &Signal,
    ) -> Result<(), NetworkError> {
        self.net.calls.lock().expect("lock").push(NetCall::Signal {
            to: to.to_string(),
            signal: signal.clone(),
        });
        Ok(())
    }
    async fn add_contact(&self, c: &RemoteUserId, name: Option<&str>) -> Result<(), NetworkError> {
        let call = NetCall::AddContact(c.to_string(), name.map(str::to_owned));
        self.net.calls.lock().expect("lock").push(call);
        Ok(())
    }
    async fn approve(&self, _contact: &RemoteUserId) -> Result<(), NetworkError> {
        Ok(())
    }
    async fn block(&self, contact: &RemoteUserId) -> Result<BlockedAt, NetworkError> {
        self.net
            .calls
            .lock()
            .expect("lock")
            .push(NetCall::Block(contact.to_string()));
        Ok(BlockedAt::Bridge)
    }
    async fn unblock(&self, _contact: &RemoteUserId) -> Result<(), NetworkError> {
        Ok(())
    }
    fn connected(&self) -> bool {
        true
    }
    async fn catch_up(
        &self,
        start: CatchUpFrom,
        _limit: usize,
        round: u64,
    ) -> Result<(), NetworkError> {
        let call = NetCall::CatchUp(start, round);
        self.net.calls.lock().expect("lock").push(call);
        Ok(())
    }
    fn hold_used_prekeys(&self) {
        self.net
            .calls
            .lock()
            .expect("lock")
            .push(NetCall::HoldPrekeys);
    }
    async fn release_used_prekeys(&self) -> Result<(), NetworkError> {
        let call = NetCall::ReleasePrekeys;
        self.net.calls.lock().expect("lock").push(call);
        Ok(())
    }
    fn device(&self) -> (u32, String) {
        (1234, "aabbccdd".into())
    }
    async fn close(&self) {
        self.net.calls.lock().expect("lock").push(NetCall::Close);
        if let Some(delay) = self.net.close_delay {
            use std::sync::atomic::Ordering::SeqCst;
            self.net.closes_started.fetch_add(1, SeqCst);
            tokio::time::sleep(delay).await;
            let started = self.net.closes_started.load(SeqCst);
            self.net
                .started_when_a_close_finished
                .lock()
                .expect("lock")
                .push(started);
        }
        self.events.lock().expect("lock").take();
    }
}

/// A network handle the bridge owns, pointing at the shared fake.
pub(super) struct NetHandle(pub(super) Arc<FakeNetwork>);

#[async_trait::async_trait]
impl Network for NetHandle {
    async fn register(&self, jid: &RemoteUserId, _password: &str) -> Result<(), NetworkError> {
        self.0
            .calls
            .lock()
            .expect("lock")
            .push(NetCall::Register(jid.to_string()));
        Ok(())
    }
    async fn start(
        &self,
        jid: &RemoteUserId,
        password: &str,
        _wait: bool,
    ) -> Result<(Arc<dyn LoginClient>, crate::core::RemoteEvents), NetworkError> {
        if self.0.refuse_password.as_deref() == Some(password) {
            return Err(NetworkError::Auth("not-authorized".into()));
        }
        self.0
            .calls
            .lock()
            .expect("lock")
            .push(NetCall::Start(jid.to_string()));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        *self.0.events.lock().expect("lock") = Some(tx.clone());
        Ok((
            Arc::new(FakeLogin {
                net: self.0.clone(),
                events: Mutex::new(Some(tx)),
            }),
            rx,
        ))
    }
    fn can_register(&self) -> bool {
        true
    }
}

/// An `Ack` that records its commit.
pub(super) struct FakeAck(pub(super) Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl Ack for FakeAck {
    async fn commit(self: Box<Self>) -> Result<(), NetworkError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}
