//! The core against a recording fake homeserver API and the memory store. (The same flows run
//! against real Synapse in tests/e2e_appservice.rs.)

use std::sync::Mutex;

use ruma::{OwnedRoomId, owned_user_id, server_name, user_id};
use serde_json::{Value, json};

use super::*;
use crate::store::{
    LoginStore, ManagementRoomStore, MemoryStore, MessageMap, PendingEvents, PortalStore, TxnStore,
};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Register(String),
    Join(String, String),
    Send {
        user: String,
        room: String,
        txn: String,
        body: String,
        /// The event it replies to, if it is a reply.
        reply_to: Option<String>,
    },
    SetName(String, String),
    CreateRoom {
        creator: String,
        room: String,
        spec: NewRoom,
    },
    Invite {
        user: String,
        room: String,
        invitee: String,
        reason: Option<String>,
    },
    Leave(String, String),
    State {
        user: String,
        room: String,
        state: NewState,
    },
    Event {
        user: String,
        room: String,
        event_type: String,
        txn: String,
        content: Value,
    },
    Redact(String, String, String),
    Receipt(String, String, String),
    Typing(String, String, bool),
    Presence(String, crate::core::Availability, Option<String>),
}

#[derive(Default)]
struct FakeMatrix {
    calls: Mutex<Vec<Call>>,
    fail_joins: bool,
    /// Sends whose body contains the text fail with (status, errcode).
    refuse_bodies: Mutex<Option<(String, u16, String)>>,
    /// The next send whose body contains the text reaches the room, but its answer is lost (a
    /// transport error, as when the homeserver stops mid-request).
    lose_answer: Mutex<Option<String>>,
    /// What `recent_events` answers per room, oldest first.
    history: Mutex<std::collections::HashMap<OwnedRoomId, Vec<Raw<AnyTimelineEvent>>>>,
    /// How many uploads fail next as a homeserver failing for now.
    upload_failures: std::sync::atomic::AtomicUsize,
}

impl FakeMatrix {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
    fn record(&self, call: Call) {
        self.calls.lock().expect("lock").push(call);
    }
}

#[async_trait::async_trait]
impl MatrixApi for FakeMatrix {
    async fn ensure_registered(&self, localpart: &str) -> Result<(), MatrixError> {
        self.record(Call::Register(localpart.into()));
        Ok(())
    }
    async fn join_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        if self.fail_joins {
            return Err(MatrixError::Api {
                status: 403,
                errcode: "M_FORBIDDEN".into(),
                message: "no".into(),
            });
        }
        self.record(Call::Join(user.to_string(), room.to_string()));
        Ok(())
    }
    async fn send_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &ruma::TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<ruma::OwnedEventId, MatrixError> {
        let refuse = self.refuse_bodies.lock().expect("lock").clone();
        if let Some((needle, status, errcode)) = refuse
            && content.body().contains(&needle)
        {
            return Err(MatrixError::Api {
                status,
                errcode,
                message: "refused".into(),
            });
        }
        let reply_to = match &content.relates_to {
            Some(ruma::events::room::message::Relation::Reply(reply)) => {
                Some(reply.in_reply_to.event_id.to_string())
            }
            _ => None,
        };
        self.record(Call::Send {
            user: user.to_string(),
            room: room.to_string(),
            txn: txn_id.to_string(),
            body: content.body().to_owned(),
            reply_to,
        });
        let mut lose = self.lose_answer.lock().expect("lock");
        if lose
            .as_ref()
            .is_some_and(|needle| content.body().contains(needle.as_str()))
        {
            *lose = None;
            // In the room, with the transaction id every send carries (as MatrixClient's do).
            self.history
                .lock()
                .expect("history")
                .entry(room.to_owned())
                .or_default()
                .push(raw(json!({
                    "type": "m.room.message", "sender": user, "room_id": room,
                    "event_id": "$lost:hs.example", "origin_server_ts": 5,
                    "content": { "msgtype": "m.text", "body": content.body(), TXN_FIELD: txn_id.as_str() },
                })));
            return Err(MatrixError::Transport("the answer was lost".into()));
        }
        Ok(ruma::owned_event_id!("$sent:hs.example"))
    }
    async fn display_name(&self, _user: &UserId) -> Result<Option<String>, MatrixError> {
        Ok(None)
    }
    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        self.record(Call::SetName(user.to_string(), name.into()));
        Ok(())
    }
    async fn create_room(
        &self,
        creator: &UserId,
        room: &NewRoom,
    ) -> Result<ruma::OwnedRoomId, MatrixError> {
        let mut calls = self.calls.lock().expect("lock");
        let id = format!("!room{}:hs.example", calls.len());
        calls.push(Call::CreateRoom {
            creator: creator.to_string(),
            room: id.clone(),
            spec: room.clone(),
        });
        Ok(OwnedRoomId::try_from(id).expect("room id"))
    }
    async fn invite(
        &self,
        user: &UserId,
        room: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.record(Call::Invite {
            user: user.to_string(),
            room: room.to_string(),
            invitee: invitee.to_string(),
            reason: reason.map(str::to_owned),
        });
        Ok(())
    }
    async fn leave_room(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.record(Call::Leave(user.to_string(), room.to_string()));
        Ok(())
    }
    async fn send_state(
        &self,
        user: &UserId,
        room: &RoomId,
        state: &NewState,
    ) -> Result<ruma::OwnedEventId, MatrixError> {
        self.record(Call::State {
            user: user.to_string(),
            room: room.to_string(),
            state: state.clone(),
        });
        Ok(ruma::owned_event_id!("$state:hs.example"))
    }
    async fn send_event(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        txn_id: &ruma::TransactionId,
        content: &serde_json::Value,
    ) -> Result<ruma::OwnedEventId, MatrixError> {
        self.record(Call::Event {
            user: user.to_string(),
            room: room.to_string(),
            event_type: event_type.into(),
            txn: txn_id.to_string(),
            content: content.clone(),
        });
        Ok(ruma::owned_event_id!("$event:hs.example"))
    }
    async fn send_receipt(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Result<(), MatrixError> {
        self.record(Call::Receipt(
            user.to_string(),
            room.to_string(),
            event.to_string(),
        ));
        Ok(())
    }
    async fn set_typing(
        &self,
        user: &UserId,
        room: &RoomId,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), MatrixError> {
        self.record(Call::Typing(
            user.to_string(),
            room.to_string(),
            timeout.is_some(),
        ));
        Ok(())
    }
    async fn set_presence(
        &self,
        user: &UserId,
        availability: crate::core::Availability,
        status: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.record(Call::Presence(
            user.to_string(),
            availability,
            status.map(str::to_owned),
        ));
        Ok(())
    }
    /// The annotations of `event` among the room's `history`, newest first.
    async fn annotations(
        &self,
        _user: &UserId,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        let history = self.history.lock().expect("history");
        let mut found: Vec<_> = history
            .get(room)
            .into_iter()
            .flatten()
            .filter(|raw| {
                let content = raw.get_field::<Value>("content").ok().flatten();
                let relates = content.as_ref().and_then(|c| c.get("m.relates_to"));
                relates.and_then(|r| r.get("rel_type")) == Some(&json!("m.annotation"))
                    && relates.and_then(|r| r.get("event_id")) == Some(&json!(event.as_str()))
            })
            .cloned()
            .collect();
        found.reverse();
        Ok(found)
    }
    async fn redact(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &ruma::EventId,
        _txn_id: &ruma::TransactionId,
        _reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        self.record(Call::Redact(
            user.to_string(),
            room.to_string(),
            event.to_string(),
        ));
        Ok(())
    }
    async fn joined_members(
        &self,
        _user: &UserId,
        _room: &RoomId,
    ) -> Result<Vec<ruma::OwnedUserId>, MatrixError> {
        Ok(Vec::new())
    }
    async fn room_event(
        &self,
        _user: &UserId,
        room: &RoomId,
        event: &ruma::EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        let history = self.history.lock().expect("history");
        history
            .get(room)
            .and_then(|events| {
                events.iter().find(|raw| {
                    raw.get_field::<String>("event_id")
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(event.as_str())
                })
            })
            .cloned()
            .ok_or_else(|| MatrixError::Api {
                status: 404,
                errcode: "M_NOT_FOUND".into(),
                message: "no such event".into(),
            })
    }
    /// Reads the whole body (its end checks run), then fails while `upload_failures` lasts.
    async fn upload(
        &self,
        _user: &UserId,
        _filename: &str,
        _content_type: &str,
        body: crate::media::ByteStream,
    ) -> Result<ruma::OwnedMxcUri, crate::media::MediaError> {
        use futures_util::StreamExt;
        let mut chunks = body.chunks;
        while let Some(chunk) = chunks.next().await {
            chunk?;
        }
        let failing = self.upload_failures.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
        if failing.is_ok() {
            return Err(crate::media::MediaError::Homeserver("HTTP 502".into()));
        }
        Ok(ruma::owned_mxc_uri!("mxc://hs.example/uploaded"))
    }
    async fn recent_events(
        &self,
        _user: &UserId,
        room: &RoomId,
        _limit: u32,
    ) -> Result<Vec<Raw<AnyTimelineEvent>>, MatrixError> {
        let history = self.history.lock().expect("history");
        Ok(history.get(room).cloned().unwrap_or_default())
    }
    /// A fake Megolm: a ciphertext `plain:<body>` decrypts to an `m.text` with that body (as
    /// the envelope's sender, id and room); any other has no key.
    async fn decrypt(
        &self,
        _user: &UserId,
        _room: &RoomId,
        event: &Raw<AnyTimelineEvent>,
    ) -> Result<Raw<AnyTimelineEvent>, crate::core::DecryptError> {
        let json: serde_json::Value = serde_json::from_str(event.json().get()).expect("event json");
        let Some(body) = json["content"]["ciphertext"]
            .as_str()
            .and_then(|c| c.strip_prefix("plain:"))
        else {
            return Err(crate::core::DecryptError::MissingKey);
        };
        let mut plain = json.clone();
        plain["type"] = json!("m.room.message");
        plain["content"] = json!({ "msgtype": "m.text", "body": body });
        Ok(raw(plain))
    }
}

struct Harness {
    bridge: Arc<Bridge>,
    matrix: Arc<FakeMatrix>,
    store: Arc<MemoryStore>,
    net: Arc<FakeNetwork>,
}

fn harness_with(matrix: FakeMatrix) -> Harness {
    harness_full(matrix, FakeNetwork::default())
}

fn harness_full(matrix: FakeMatrix, net: FakeNetwork) -> Harness {
    harness_with_requests(matrix, net, RequestPolicy::default())
}

fn harness_with_requests(matrix: FakeMatrix, net: FakeNetwork, requests: RequestPolicy) -> Harness {
    harness_with_media(matrix, net, requests, None)
}

fn harness_with_media(
    matrix: FakeMatrix,
    net: FakeNetwork,
    requests: RequestPolicy,
    media: Option<super::MediaSettings>,
) -> Harness {
    harness_tuned(matrix, net, |settings| {
        settings.requests = requests;
        settings.media = media;
    })
}

/// A harness whose settings `tune` changed from the tests' defaults.
fn harness_tuned(
    matrix: FakeMatrix,
    net: FakeNetwork,
    tune: impl FnOnce(&mut BridgeSettings),
) -> Harness {
    let matrix = Arc::new(matrix);
    let store = Arc::new(MemoryStore::new());
    let net = Arc::new(net);
    let mut settings = BridgeSettings {
        bot: owned_user_id!("@interopbot:hs.example"),
        bot_displayname: "Interop bridge bot".into(),
        ghosts: GhostNamespace::new("interop_", server_name!("hs.example")),
        send_timeout: std::time::Duration::from_secs(5),
        requests: RequestPolicy::default(),
        encryption: false,
        encrypt_portals: false,
        presence_refresh: Some(std::time::Duration::from_secs(20)),
        media: None,
        catch_up_limit: 200,
        message_status: false,
    };
    tune(&mut settings);
    let bridge = Bridge::new(
        matrix.clone(),
        store.clone(),
        Arc::new(NetHandle(net.clone())),
        settings,
    );
    Harness {
        bridge,
        matrix,
        store,
        net,
    }
}

impl Harness {
    /// Handles a transaction that must succeed, and waits until the room workers carried out
    /// what it recorded.
    async fn txn(&self, id: &str, events: Vec<Raw<AnyTimelineEvent>>) {
        self.bridge
            .handle_transaction(id, events)
            .await
            .expect("transaction handled");
        self.workers_done().await;
    }

    /// Waits until no recorded event is left for a room worker.
    async fn workers_done(&self) {
        for _ in 0..1000 {
            if self.store.pending_events().expect("store").is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the room workers did not finish");
    }

    fn management_room(&self, user: &str) -> Option<OwnedRoomId> {
        let user = UserId::parse(user).expect("valid user id");
        self.store.management_room(&user).expect("store")
    }
}

fn harness() -> Harness {
    harness_with(FakeMatrix::default())
}

const ROOM: &str = "!dm:hs.example";

fn raw(value: Value) -> Raw<AnyTimelineEvent> {
    Raw::from_json_string(value.to_string()).expect("valid JSON")
}

fn invite(event_id: &str, sender: &str, is_direct: bool) -> Raw<AnyTimelineEvent> {
    raw(json!({
        "type": "m.room.member", "state_key": "@interopbot:hs.example", "sender": sender,
        "room_id": ROOM, "event_id": event_id, "origin_server_ts": 1,
        "content": { "membership": "invite", "is_direct": is_direct },
    }))
}

fn text(event_id: &str, sender: &str, room: &str, body: &str) -> Raw<AnyTimelineEvent> {
    raw(json!({
        "type": "m.room.message", "sender": sender, "room_id": room, "event_id": event_id,
        "origin_server_ts": 2, "content": { "msgtype": "m.text", "body": body },
    }))
}

fn leave(event_id: &str, who: &str) -> Raw<AnyTimelineEvent> {
    raw(json!({
        "type": "m.room.member", "state_key": who, "sender": who, "room_id": ROOM,
        "event_id": event_id, "origin_server_ts": 3, "content": { "membership": "leave" },
    }))
}

fn room() -> OwnedRoomId {
    ROOM.try_into().expect("valid room id")
}

#[tokio::test]
async fn direct_invite_from_a_local_user_opens_a_management_room() {
    let h = harness();
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    let calls = h.matrix.calls();
    assert_eq!(
        calls[0],
        Call::Join("@interopbot:hs.example".into(), ROOM.into())
    );
    let Call::Send { txn, body, .. } = &calls[1] else {
        panic!("no welcome: {calls:?}")
    };
    assert_eq!(txn, "welcome.$inv");
    assert!(body.contains("say `help`"));
    assert_eq!(h.management_room("@alice:hs.example"), Some(room()));
    let key = transaction_key("1", &[invite("$inv", "@alice:hs.example", true)]);
    assert!(h.store.txn_processed(&key).expect("store"));
}

#[tokio::test]
async fn invites_from_other_servers_and_non_direct_rooms() {
    let h = harness();
    h.txn("1", vec![invite("$a", "@eve:elsewhere.example", true)])
        .await;
    assert!(h.matrix.calls().is_empty(), "joined for a remote user");
    h.txn("2", vec![invite("$b", "@alice:hs.example", false)])
        .await;
    assert_eq!(
        h.matrix.calls(),
        vec![Call::Join("@interopbot:hs.example".into(), ROOM.into())]
    );
    assert_eq!(h.management_room("@alice:hs.example"), None);
}

#[tokio::test]
async fn help_in_the_management_room_is_answered_once_per_event() {
    let h = harness();
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    let help = || text("$help", "@alice:hs.example", ROOM, "help");
    h.txn("2", vec![help()]).await;
    h.bridge
        .handle_transaction("2", vec![help()])
        .await
        .expect("retry is a no-op");
    let replies: Vec<_> = h
        .matrix
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Send { txn, .. } if txn == "reply.$help"))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let Call::Send { body, user, .. } = &replies[0] else {
        unreachable!()
    };
    assert_eq!(user, "@interopbot:hs.example");
    for (name, _) in commands::COMMANDS {
        assert!(body.contains(name), "help lacks {name}");
    }
}

#[tokio::test]
async fn messages_elsewhere_or_from_the_bot_or_ghosts_are_not_commands() {
    let h = harness();
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    let before = h.matrix.calls().len();
    let events = vec![
        text("$1", "@alice:hs.example", "!other:hs.example", "help"),
        text("$2", "@interopbot:hs.example", ROOM, "help"),
        text("$3", "@interop_bob=40x.org:hs.example", ROOM, "help"),
        text("$4", "@mallory:hs.example", ROOM, "help"),
    ];
    h.txn("2", events).await;
    assert_eq!(h.matrix.calls().len(), before);
}

#[tokio::test]
async fn our_own_posts_coming_back_are_skipped_and_their_transaction_not_recorded() {
    let h = harness();
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    let before = h.matrix.calls().len();
    let echoes = || {
        vec![
            text("$1", "@interopbot:hs.example", ROOM, "help"),
            text("$2", "@interop_bob=40x.org:hs.example", ROOM, "help"),
            // Content a full parse would refuse: skipped all the same, before any parse.
            raw(json!({
                "type": "m.room.message", "event_id": "$3", "room_id": ROOM,
                "sender": "@interop_bob=40x.org:hs.example", "content": "not an object",
            })),
        ]
    };
    h.txn("2", echoes()).await;
    assert_eq!(h.matrix.calls().len(), before);
    let key = transaction_key("2", &echoes());
    assert!(
        !h.store.txn_processed(&key).expect("store"),
        "nothing to remember"
    );
    // Among other events they are skipped too, and the transaction is recorded as before.
    let mut mixed = echoes();
    mixed.push(text("$4", "@alice:hs.example", ROOM, "help"));
    let key = transaction_key("3", &mixed);
    h.txn("3", mixed).await;
    let replies = h.matrix.calls().len() - before;
    assert_eq!(replies, 1, "{:?}", h.matrix.calls());
    assert!(h.store.txn_processed(&key).expect("store"));
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_rest_processed() {
    let h = harness();
    let broken =
        raw(json!({ "type": "m.room.member", "event_id": "$bad", "content": "not an object" }));
    let events = vec![
        broken,
        invite("$inv", "@alice:hs.example", true),
        raw(json!([1, 2])),
    ];
    let key = transaction_key("1", &events);
    h.txn("1", events).await;
    assert_eq!(
        h.matrix.calls()[0],
        Call::Join("@interopbot:hs.example".into(), ROOM.into())
    );
    assert!(h.store.txn_processed(&key).expect("store"));
}

#[tokio::test]
async fn a_failing_homeserver_call_does_not_fail_the_transaction() {
    let h = harness_with(FakeMatrix {
        fail_joins: true,
        ..FakeMatrix::default()
    });
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    let key = transaction_key("1", &[invite("$inv", "@alice:hs.example", true)]);
    assert!(h.store.txn_processed(&key).expect("store"));
    assert_eq!(h.management_room("@alice:hs.example"), None);
}

#[tokio::test]
async fn leaving_closes_the_management_room() {
    let h = harness();
    h.txn("1", vec![invite("$inv", "@alice:hs.example", true)])
        .await;
    h.txn("2", vec![leave("$l", "@alice:hs.example")]).await;
    assert_eq!(h.management_room("@alice:hs.example"), None);
    assert_eq!(h.store.management_room_owner(&room()).expect("store"), None);
}

#[tokio::test]
async fn ghosts_are_provisioned_once_and_only_in_the_namespace() {
    let h = harness();
    let ghost = user_id!("@interop_bob=40xmpp.example:hs.example");
    assert!(h.bridge.provision_ghost(ghost).await.expect("ok"));
    assert!(h.bridge.provision_ghost(ghost).await.expect("ok"));
    assert_eq!(
        h.matrix.calls(),
        vec![
            Call::Register("interop_bob=40xmpp.example".into()),
            Call::SetName(ghost.to_string(), "bob@xmpp.example".into()),
        ]
    );
    for outside in [
        "@bob:hs.example",
        "@interop_bob=40x:other.example",
        "@interop_=zz:hs.example",
    ] {
        let user = UserId::parse(outside).expect("valid user id");
        assert!(
            !h.bridge.provision_ghost(&user).await.expect("ok"),
            "{outside}"
        );
    }
    assert_eq!(h.matrix.calls().len(), 2);
}

#[tokio::test]
async fn start_registers_the_bot_and_sets_its_name_and_forgets_old_transactions() {
    let h = harness();
    h.store.mark_txn_processed("ancient", 1).expect("store");
    h.store
        .mark_txn_processed("recent", now_ms())
        .expect("store");
    h.bridge.start().await.expect("ok");
    assert_eq!(
        h.matrix.calls(),
        vec![
            Call::Register("interopbot".into()),
            Call::SetName("@interopbot:hs.example".into(), "Interop bridge bot".into()),
        ]
    );
    assert!(!h.store.txn_processed("ancient").expect("store"));
    assert!(h.store.txn_processed("recent").expect("store"));
}

mod bridge;
mod carbons;
mod catch_up;
mod fakes;
mod user_commands;
use fakes::*;
mod media;
mod relations;
mod requests;
mod workers;
