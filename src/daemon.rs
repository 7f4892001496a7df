//! `run`: assembles the bridge from its parts and serves until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use std::time::Duration;

use crate::admin;
use crate::config::{
    Config, OmemoChoice, RequestsChoice, TlsChoice, TrustChoice, UnencryptedChoice, host_port,
};
use crate::core::{Bridge, BridgeSettings, MatrixApi, MediaSettings, RequestPolicy};
use crate::ids::GhostNamespace;
use crate::matrix::appservice::{self, AppState};
use crate::matrix::crypto::{CryptoStores, at_rest};
use crate::matrix::{Crypto, EncryptingMatrix, MatrixClient, Registration, RetryPolicy};
use crate::media::http::{MediaHttp, MediaHttpSettings};
use crate::network::{NetworkSettings, XmppNetwork};
use crate::store::{DatabaseKey, SledStore, Store, seal};
use xmpp_omemo::omemo::{Protocols, TrustPolicy};
use xmpp_omemo::stream::{TlsMode, TlsPins};

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
    let db_key = database_key(&config)?;
    if db_key.is_none() {
        warn!(
            "database.key is not set: XMPP passwords and OMEMO private keys are stored in the clear"
        );
    }
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open_with_key(&db_path, db_key.as_ref())
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
        send_timeout: Duration::from_secs(config.network.send_timeout_secs),
        requests: RequestPolicy {
            roster_only: config.network.requests == RequestsChoice::RosterOnly,
            per_hour: config.network.max_requests_per_hour,
        },
        encryption: config.encryption.enabled,
        encrypt_portals: config.encryption.enabled && config.encryption.default,
        presence_refresh: (config.network.presence_refresh_secs > 0)
            .then(|| Duration::from_secs(config.network.presence_refresh_secs)),
        media: media_settings(&config)?,
        catch_up_limit: config.network.catch_up_limit,
        message_status: config.appservice.message_status_events,
    };
    let crypto = config.encryption.enabled.then(|| {
        let bot = settings.bot.clone();
        let ghosts = settings.ghosts.clone();
        let dir = config.path(&config.encryption.store);
        let (plain, _) = at_rest::store_counts(&dir);
        if db_key.is_some() && plain > 0 {
            warn!(
                plain,
                "crypto stores created before database.key was set stay unencrypted at rest \
                 (matrix-sdk-sqlite cannot encrypt an existing store)"
            );
        }
        let key = db_key.as_ref().map(|k| k.derive(seal::CRYPTO_STORE_INFO));
        Crypto::new(
            matrix.clone(),
            CryptoStores::new(dir, key),
            Duration::from_secs(config.encryption.key_wait_secs),
            move |user| user == bot || ghosts.contains(user),
        )
    });
    let api: Arc<dyn MatrixApi> = match &crypto {
        Some(crypto) => Arc::new(EncryptingMatrix::new(matrix.clone(), crypto.clone())),
        None => matrix.clone(),
    };
    let network = Arc::new(
        XmppNetwork::new(network_settings(&config), store.clone())
            .map_err(|e| anyhow::anyhow!("key `network.ca_file`: {e}"))?,
    );
    let bridge = Bridge::new(api, store.clone(), network, settings);
    if config.appservice.double_puppet {
        let path = crate::matrix::double_puppet::path_beside(&reg_path);
        let puppet = crate::matrix::DoublePuppetRegistration::load(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (appservice.double_puppet is on: run `interop-bridge \
                 generate-registration` and give the file to the homeserver)",
                path.display()
            )
        })?;
        let client = MatrixClient::connect(
            &config.homeserver.address,
            puppet.as_token(),
            RetryPolicy::default(),
        )
        .await
        .context("double puppeting: cannot reach the homeserver")?;
        bridge.set_double_puppet(Arc::new(client));
        info!(
            "double puppeting on: the users' messages from their other clients are posted as them"
        );
    }
    let socket_path = config.path(&config.admin.socket);
    let admin_listener = admin::bind(&socket_path).with_context(|| {
        format!(
            "cannot create the admin socket {} (key `admin.socket`)",
            socket_path.display()
        )
    })?;
    let state = Arc::new(AppState {
        bridge: bridge.clone(),
        hs_token,
        max_body_bytes: config.appservice.max_transaction_bytes,
        crypto: crypto.clone(),
    });
    if let Some(crypto) = crypto.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let dropped = crypto.drop_idle();
                if dropped > 0 {
                    tracing::debug!(
                        dropped,
                        loaded = crypto.loaded(),
                        "idle crypto machines dropped"
                    );
                }
            }
        });
    }
    bridge
        .resume_recorded()
        .context("cannot read the events recorded before the restart")?;
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
    if let Some(crypto) = &crypto {
        let missing = crypto
            .self_check(&config.bot_user_id(), Duration::from_secs(15))
            .await;
        if missing.is_empty() {
            info!(
                "end-to-bridge encryption ready (MSC4190 devices, MSC4203 to-device, MSC3202 key counts)"
            );
        } else {
            for what in &missing {
                tracing::error!("encryption turned off: {what}");
            }
            crypto.disable(missing.join("; "));
        }
    }
    let admin_task = tokio::spawn(admin::serve(admin_listener, bridge.clone()));
    info!("ready");
    server.await.context("server task")?.context("server")?;
    admin_task.abort();
    let _ = std::fs::remove_file(&socket_path);
    bridge.shutdown().await;
    let store_for_flush = store.clone();
    tokio::task::spawn_blocking(move || store_for_flush.flush()).await??;
    info!("stopped");
    Ok(())
}

/// The key of `database.key`, if set. The error names the key, never the secret.
pub fn database_key(config: &Config) -> anyhow::Result<Option<DatabaseKey>> {
    let Some(source) = &config.database.key else {
        return Ok(None);
    };
    let secret = zeroize::Zeroizing::new(
        source
            .resolve_bytes(&config.base_dir)
            .map_err(|e| anyhow::anyhow!("key `database.key`: {e}"))?,
    );
    DatabaseKey::from_secret(&secret)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("key `database.key`: {e}"))
}

fn network_settings(config: &Config) -> NetworkSettings {
    let n = &config.network;
    NetworkSettings {
        reject_unencrypted: n.unencrypted == UnencryptedChoice::Reject,
        server: n.server.as_deref().and_then(host_port),
        servers: n
            .servers
            .iter()
            .filter_map(|(domain, s)| Some((domain.to_ascii_lowercase(), host_port(s)?)))
            .collect(),
        // Validated by `Config::validate`.
        dns_server: n.dns_server.as_deref().and_then(|s| s.parse().ok()),
        tls: match n.tls {
            TlsChoice::Starttls => TlsMode::StartTls,
            TlsChoice::Direct => TlsMode::Direct,
        },
        ca_file: n.ca_file.as_ref().map(|p| config.path(p)),
        tls_pins: {
            let mut pins = TlsPins::default();
            for (domain, hashes) in &n.tls_pins {
                hashes.iter().for_each(|hash| pins.add(domain, *hash));
            }
            pins
        },
        resource: n.resource.clone(),
        allow_register: n.allow_register,
        allowed_domains: n.allowed_domains.clone(),
        policy: match n.trust {
            TrustChoice::TrustOnFirstUse => TrustPolicy::TrustOnFirstUseAndChange,
            TrustChoice::Strict => TrustPolicy::Strict,
        },
        protocols: match n.omemo {
            OmemoChoice::Legacy => Protocols::Legacy,
            OmemoChoice::Omemo2 => Protocols::Omemo2,
            OmemoChoice::Both => Protocols::Both,
        },
        link_timeout: Duration::from_secs(30),
        catch_up: n.catch_up_limit > 0,
        request_receipts: config.appservice.message_status_events,
    }
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

/// How files are bridged, from `[media]` (the XMPP side's CA file is trusted for uploads too).
fn media_settings(config: &Config) -> anyhow::Result<Option<MediaSettings>> {
    let m = &config.media;
    if !m.enabled {
        return Ok(None);
    }
    let ca_pem = match &config.network.ca_file {
        Some(path) => {
            let path = config.path(path);
            Some(std::fs::read(&path).with_context(|| {
                format!("key `network.ca_file`: cannot read {}", path.display())
            })?)
        }
        None => None,
    };
    let stall = Duration::from_secs(m.stall_timeout_secs);
    let web = MediaHttp::new(&MediaHttpSettings {
        allowed_private_hosts: m.allowed_private_hosts.clone(),
        ca_pem,
        stall,
    })
    .map_err(|e| anyhow::anyhow!("key `media`: {e}"))?;
    Ok(Some(MediaSettings {
        web: Arc::new(web),
        max_bytes: m.max_bytes,
        stall,
    }))
}
