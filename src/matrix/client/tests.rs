//! Retry behaviour against an in-process fake homeserver: Synapse in the test world has its
//! rate limits raised and does not fail on purpose, so it cannot produce these cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use super::*;

/// Serves `/versions`, and answers every other request with `script` in turn (the last one
/// repeats). Returns the base URL and the hit counter (`/versions` not counted).
async fn fake(script: Vec<(u16, serde_json::Value)>) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/_matrix/client/versions",
            get(|| async { axum::Json(json!({"versions": ["v1.11"]})) }),
        )
        .fallback(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = script[n.min(script.len() - 1)].clone();
            async move {
                (
                    StatusCode::from_u16(status).expect("status"),
                    axum::Json(body),
                )
            }
        });
    (serve(app).await, hits)
}

/// Serves `app` on a free local port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    }
}

async fn join(base: &str) -> Result<(), MatrixError> {
    let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
    client
        .join_room(
            ruma::user_id!("@bot:hs.example"),
            ruma::room_id!("!r:hs.example"),
        )
        .await
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let ok = (200, json!({"room_id": "!r:hs.example"}));
    let limited = (
        429,
        json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 30}),
    );
    let (base, hits) = fake(vec![limited, (502, json!({})), ok]).await;
    join(&base).await.expect("third attempt succeeds");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[test]
fn retry_after_comes_from_the_body_then_the_header() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(
        retry_after(br#"{"retry_after_ms": 1500}"#, &headers),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(retry_after(b"{}", &headers), None);
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("3"),
    );
    assert_eq!(retry_after(b"{}", &headers), Some(Duration::from_secs(3)));
    assert_eq!(
        retry_after(b"<html>busy</html>", &headers),
        Some(Duration::from_secs(3))
    );
}

#[tokio::test]
async fn invalid_requests_are_not_retried_and_keep_the_error_code() {
    let (base, hits) = fake(vec![(
        403,
        json!({"errcode": "M_FORBIDDEN", "error": "not invited"}),
    )])
    .await;
    let err = join(&base).await.expect_err("forbidden");
    assert_eq!(
        err,
        MatrixError::Api {
            status: 403,
            errcode: "M_FORBIDDEN".into(),
            message: "not invited".into()
        }
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (base, hits) = fake(vec![(500, json!({"errcode": "M_UNKNOWN"}))]).await;
    let err = join(&base).await.expect_err("always failing");
    assert_eq!(err.errcode(), Some("M_UNKNOWN"));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn invalid_unreachable_homeserver_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = join(&format!("http://127.0.0.1:{port}"))
        .await
        .expect_err("unreachable");
    assert!(matches!(err, MatrixError::Transport(_)), "{err:?}");
}

fn forbidden(message: &str) -> (u16, serde_json::Value) {
    (403, json!({"errcode": "M_FORBIDDEN", "error": message}))
}

async fn invite(base: &str) -> Result<(), MatrixError> {
    let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
    let (bot, room) = (
        ruma::user_id!("@bot:hs.example"),
        ruma::room_id!("!r:hs.example"),
    );
    let invitee = ruma::user_id!("@u:hs.example");
    client.invite(bot, room, invitee, Some("why")).await
}

async fn leave(base: &str) -> Result<(), MatrixError> {
    let client = MatrixClient::connect(base, Secret::new("t"), quick()).await?;
    let (bot, room) = (
        ruma::user_id!("@bot:hs.example"),
        ruma::room_id!("!r:hs.example"),
    );
    client.leave_room(bot, room).await
}

#[tokio::test]
async fn inviting_a_member_succeeds_other_refusals_fail() {
    // Synapse's answer for a joined invitee (tests/matrix_api.rs sees it for real), and the
    // MSC3848 error code.
    for answer in [
        forbidden("@u:hs.example is already in the room."),
        (
            403,
            json!({"errcode": "M_ALREADY_JOINED", "error": "joined"}),
        ),
    ] {
        let (base, _) = fake(vec![answer]).await;
        invite(&base).await.expect("already a member is success");
    }
    for answer in [
        forbidden("You don't have permission to invite users"),
        forbidden("@bot:hs.example not in room !r:hs.example."),
        forbidden("@u:hs.example is banned from the room"),
        (
            404,
            json!({"errcode": "M_NOT_FOUND", "error": "already in the room"}),
        ),
    ] {
        let (base, hits) = fake(vec![answer.clone()]).await;
        let err = invite(&base).await.expect_err("a refusal");
        assert_eq!(err.errcode(), answer.1["errcode"].as_str(), "{answer:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn leaving_a_room_one_is_not_in_succeeds_other_refusals_fail() {
    for answer in [
        forbidden("@bot:hs.example not in room !r:hs.example."),
        (
            403,
            json!({"errcode": "M_NOT_JOINED", "error": "not joined"}),
        ),
        (
            404,
            json!({"errcode": "M_UNKNOWN", "error": "Not a known room"}),
        ),
        (
            404,
            json!({"errcode": "M_NOT_FOUND", "error": "no such room"}),
        ),
    ] {
        let (base, _) = fake(vec![answer]).await;
        leave(&base).await.expect("not a member is success");
    }
    for answer in [
        forbidden("You cannot reject this invite"),
        (400, json!({"errcode": "M_UNKNOWN", "error": "not in room"})),
    ] {
        let (base, _) = fake(vec![answer.clone()]).await;
        let err = leave(&base).await.expect_err("a refusal");
        assert_eq!(err.errcode(), answer.1["errcode"].as_str(), "{answer:?}");
    }
}

#[test]
fn power_levels_list_admins_and_the_creator_unless_creators_are_privileged() {
    let creator = ruma::owned_user_id!("@ghost:hs.example");
    let user = ruma::owned_user_id!("@user:hs.example");
    let admin = ruma::owned_user_id!("@admin:hs.example");
    let users = |room: &NewRoom, privileged| {
        power_level_users(&creator, room, privileged)
            .into_iter()
            .map(|(u, level)| (u.to_string(), i64::from(level)))
            .collect::<Vec<_>>()
    };
    let room = NewRoom {
        invite: vec![user.clone()],
        admins: vec![admin.clone(), creator.clone()],
        ..NewRoom::default()
    };
    // Up to room version 11 the creator is listed (Synapse requires it in an override).
    assert_eq!(
        users(&room, false),
        [(admin.to_string(), 100), (creator.to_string(), 100)]
    );
    // From version 12 on it must not be.
    assert_eq!(users(&room, true), [(admin.to_string(), 100)]);
    // A direct room's invitees share the creator's power, as `trusted_private_chat` says.
    let direct = NewRoom {
        is_direct: true,
        ..room.clone()
    };
    assert_eq!(
        users(&direct, false),
        [
            (admin.to_string(), 100),
            (creator.to_string(), 100),
            (user.to_string(), 100)
        ]
    );
    let direct_admin = NewRoom {
        admins: vec![user.clone()],
        ..direct.clone()
    };
    assert!(users(&direct_admin, true).is_empty());
    assert!(users(&NewRoom::default(), true).is_empty());
    assert!(privileged_creators(&RoomVersionId::V12));
    assert!(!privileged_creators(&RoomVersionId::V11));
    let future = RoomVersionId::try_from("org.example.future").expect("version");
    assert!(privileged_creators(&future));
}

/// A homeserver that creates every room it is asked for but loses the answer of the first
/// `lost` creations (502), and lists the creator's rooms with their create events.
async fn forgetful(lost: usize) -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use axum::extract::{Path, State};
    use axum::routing::post;
    type Rooms = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;
    let rooms: Rooms = Arc::default();
    let app = Router::new()
        .route(
            "/_matrix/client/versions",
            get(|| async { axum::Json(json!({"versions": ["v1.11"]})) }),
        )
        .route(
            "/_matrix/client/v3/capabilities",
            get(|| async {
                axum::Json(json!({"capabilities": {"m.room_versions":
                    {"default": "11", "available": {"11": "stable"}}}}))
            }),
        )
        .route(
            "/_matrix/client/v3/createRoom",
            post(
                move |State(rooms): State<Rooms>,
                      axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let mut rooms = rooms.lock().expect("lock");
                    rooms.push(body["creation_content"].clone());
                    let id = format!("!r{}:hs.example", rooms.len());
                    if rooms.len() <= lost {
                        (StatusCode::BAD_GATEWAY, axum::Json(json!({})))
                    } else {
                        (StatusCode::OK, axum::Json(json!({"room_id": id})))
                    }
                },
            ),
        )
        .route(
            "/_matrix/client/v3/joined_rooms",
            get(|State(rooms): State<Rooms>| async move {
                let n = rooms.lock().expect("lock").len();
                let ids: Vec<String> = (1..=n).map(|i| format!("!r{i}:hs.example")).collect();
                axum::Json(json!({"joined_rooms": ids}))
            }),
        )
        .route(
            "/_matrix/client/v3/rooms/{room}/state/m.room.create/",
            get(
                |State(rooms): State<Rooms>, Path(room): Path<String>| async move {
                    let i: usize = room
                        .trim_start_matches("!r")
                        .split(':')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("a room of ours");
                    axum::Json(rooms.lock().expect("lock")[i - 1].clone())
                },
            ),
        )
        .with_state(rooms.clone());
    (serve(app).await, rooms)
}

#[tokio::test]
async fn a_room_whose_creation_answer_was_lost_is_found_not_created_twice() {
    let (base, rooms) = forgetful(1).await;
    let client = MatrixClient::connect(&base, Secret::new("t"), quick())
        .await
        .expect("connect");
    let creator = ruma::user_id!("@interop_bob=40x.test:hs.example");
    let room = client
        .create_room(creator, &NewRoom::default())
        .await
        .expect("found");
    assert_eq!(room.as_str(), "!r1:hs.example");
    assert_eq!(rooms.lock().expect("lock").len(), 1, "created once");
    // The next creation is a room of its own, with a mark of its own.
    let second = client
        .create_room(creator, &NewRoom::default())
        .await
        .expect("created");
    assert_eq!(second.as_str(), "!r2:hs.example");
    let marks: Vec<_> = rooms
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c[CREATION_MARK].clone())
        .collect();
    assert_ne!(marks[0], marks[1], "each creation has its own mark");
}

/// A homeserver that stores every event sent to it but answers the first one 502 (as when it
/// restarts mid-request: the new process no longer knows the transaction id), and lists the
/// room's events newest first.
async fn forgetful_room() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use axum::extract::{Path, State};
    use axum::routing::put;
    type Events = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;
    let events: Events = Arc::default();
    let app = Router::new()
        .route(
            "/_matrix/client/versions",
            get(|| async { axum::Json(json!({"versions": ["v1.11"]})) }),
        )
        .route(
            "/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}",
            put(
                |State(events): State<Events>,
                 Path((_room, kind, _txn)): Path<(String, String, String)>,
                 axum::Json(content): axum::Json<serde_json::Value>| async move {
                    let mut events = events.lock().expect("lock");
                    let id = format!("$e{}", events.len() + 1);
                    events.push(json!({
                        "type": kind, "event_id": id, "content": content, "room_id": "!r:hs.example",
                        "sender": "@interop_bob=40x.test:hs.example", "origin_server_ts": 1,
                    }));
                    if events.len() == 1 {
                        (StatusCode::BAD_GATEWAY, axum::Json(json!({})))
                    } else {
                        (StatusCode::OK, axum::Json(json!({"event_id": id})))
                    }
                },
            ),
        )
        .route(
            "/_matrix/client/v3/rooms/{room}/messages",
            get(|State(events): State<Events>| async move {
                let mut chunk = events.lock().expect("lock").clone();
                chunk.reverse();
                axum::Json(json!({"chunk": chunk, "start": "s"}))
            }),
        )
        .with_state(events.clone());
    (serve(app).await, events)
}

#[tokio::test]
async fn an_event_whose_answer_was_lost_is_found_not_posted_twice() {
    let (base, events) = forgetful_room().await;
    let client = MatrixClient::connect(&base, Secret::new("t"), quick())
        .await
        .expect("connect");
    let ghost = ruma::user_id!("@interop_bob=40x.test:hs.example");
    let room = ruma::room_id!("!r:hs.example");
    let content = RoomMessageEventContent::text_plain("once");
    let first = client
        .send_message(ghost, room, "in.t1".into(), &content)
        .await
        .expect("found");
    assert_eq!(first.as_str(), "$e1");
    assert_eq!(events.lock().expect("lock").len(), 1, "posted once");
    let second = client
        .send_message(ghost, room, "in.t2".into(), &content)
        .await
        .expect("sent");
    assert_eq!(
        second.as_str(),
        "$e2",
        "another transaction is another event"
    );
}
