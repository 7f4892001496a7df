//! `run`: assembles the bridge from its parts and serves until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::core::{Bridge, BridgeSettings};
use crate::ids::GhostNamespace;
use crate::matrix::appservice::{self, AppState};
use crate::matrix::{MatrixClient, Registration, RetryPolicy};
use crate::store::{SledStore, Store};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let reg_path = config.path(&config.appservice.registration);
    let registration = Registration::load(&reg_path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (key `appservice.registration`)",
            reg_path.display()
        )
    })?;
    let resolve = |source: &Option<crate::config::SecretSource>, key: &str, fallback| match source {
        Some(s) => s
            .resolve(&config.base_dir)
            .map_err(|e| anyhow::anyhow!("key `{key}`: {e}")),
        None => Ok(fallback),
    };
    let as_token = resolve(
        &config.appservice.as_token,
        "appservice.as_token",
        registration.as_token(),
    )?;
    let hs_token = resolve(
        &config.appservice.hs_token,
        "appservice.hs_token",
        registration.hs_token(),
    )?;

    let db_path = config.path(&config.database.path);
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&db_path)
            .with_context(|| format!("cannot open the database {}", db_path.display()))?,
    );
    let listener = TcpListener::bind(&config.appservice.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (key `appservice.listen`)",
                config.appservice.listen
            )
        })?;
    info!(listen = %config.appservice.listen, homeserver = %config.homeserver.address, "starting");

    let matrix = Arc::new(
        MatrixClient::connect(&config.homeserver.address, as_token, RetryPolicy::default())
            .await
            .with_context(|| {
                format!(
                    "cannot reach the homeserver at {}",
                    config.homeserver.address
                )
            })?,
    );
    let domain = <&ruma::ServerName>::try_from(config.homeserver.domain.as_str())
        .context("homeserver.domain")?;
    let settings = BridgeSettings {
        bot: config.bot_user_id(),
        bot_displayname: config.appservice.bot_displayname.clone(),
        ghosts: GhostNamespace::new(&config.appservice.ghost_prefix, domain),
    };
    let bridge = Arc::new(Bridge::new(matrix.clone(), store.clone(), settings));
    let state = Arc::new(AppState {
        bridge: bridge.clone(),
        hs_token,
        max_body_bytes: config.appservice.max_transaction_bytes,
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, appservice::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    bridge
        .start()
        .await
        .context("cannot set up the bridge bot")?;
    match matrix.ping_appservice(&config.appservice.id).await {
        Ok(ms) => info!(round_trip_ms = ms, "homeserver reaches the bridge"),
        Err(e) => {
            warn!(error = %e, "the homeserver could not ping the bridge; check appservice.address and the registration")
        }
    }
    info!("ready");
    server.await.context("server task")?.context("server")?;
    let store_for_flush = store.clone();
    tokio::task::spawn_blocking(move || store_for_flush.flush()).await??;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}
