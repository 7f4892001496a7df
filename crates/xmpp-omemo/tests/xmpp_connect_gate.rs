//! `ClientConfig::connect_gate`: clients sharing a gate have at most its permits' worth of
//! connection attempts in flight; a finished attempt hands its permit on. Against a local TCP
//! listener that accepts and then says nothing, so every attempt stays in flight until the
//! test ends it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use xmpp_omemo::Jid;
use xmpp_omemo::stream::{Client, ClientConfig, Timeouts, tls_client_config};

/// Waits (up to 10 s) until `accepted` holds at least `n` connections.
async fn wait_accepted(accepted: &Mutex<Vec<TcpStream>>, n: usize) {
    for _ in 0..200 {
        if accepted.lock().expect("lock").len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "only {} of {n} connections accepted",
        accepted.lock().expect("lock").len()
    );
}

#[tokio::test]
async fn a_shared_gate_bounds_the_connection_attempts_in_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            held.lock().expect("lock").push(stream);
        }
    });

    let gate = Arc::new(Semaphore::new(2));
    let tls = tls_client_config(None).expect("TLS config");
    let mut clients = Vec::new();
    for n in 0..5 {
        let jid = Jid::parse(&format!("user{n}@example.test")).expect("jid");
        let mut config = ClientConfig::new(jid, "password", tls.clone());
        config.server = Some(("127.0.0.1".to_owned(), port));
        config.timeouts = Timeouts {
            negotiate: Duration::from_secs(120),
            ..Timeouts::default()
        };
        config.connect_gate = Some(gate.clone());
        clients.push(Client::spawn(config));
    }

    wait_accepted(&accepted, 2).await;
    // Five clients, two permits: the other three wait, however long they are given.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        accepted.lock().expect("lock").len(),
        2,
        "attempts beyond the gate's permits"
    );

    // The server drops one connection: that attempt fails and its permit goes to a waiting client.
    drop(accepted.lock().expect("lock").remove(0));
    wait_accepted(&accepted, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted.lock().expect("lock").len(), 2, "one out, one in");

    for (client, _events) in &clients {
        client.close().await;
    }
    server.abort();
}
