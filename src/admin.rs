//! The admin socket: how the CLI's `link`, `unlink`, `identities`, `status`, and `devices`,
//! `safety-number`, `trust` and `untrust` (for a Matrix user, as the bot runs them) reach the
//! running bridge, which owns the connections and the database (sled allows one process). A Unix
//! socket, readable and writable by its owner only from the moment it appears at its path
//! (it is bound inside a private directory, given mode 0600, then moved into place), and a
//! connection from a user other than the bridge's own (or root) is refused by its peer
//! credentials. One JSON request line, one JSON answer line per connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::commands::Command;
use crate::core::{Bridge, CommandError};

/// Largest request line accepted (a password and two IDs fit many times over).
const MAX_REQUEST_BYTES: u64 = 16 * 1024;

/// A request from the CLI. `Debug` hides the password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Link {
        user: String,
        jid: String,
        password: String,
        register: bool,
    },
    Unlink {
        user: String,
    },
    Identities,
    Status {
        user: Option<String>,
    },
    /// A contact's OMEMO devices, as `user`'s account knows them.
    Devices {
        user: String,
        jid: String,
    },
    /// The fingerprints `user` and the contact compare.
    SafetyNumber {
        user: String,
        jid: String,
    },
    /// Trust (or, with `trusted: false`, untrust) the contact's device with this fingerprint
    /// (hex, any grouping) for `user`.
    Trust {
        user: String,
        jid: String,
        fingerprint: String,
        trusted: bool,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link {
                user,
                jid,
                register,
                ..
            } => f
                .debug_struct("Link")
                .field("user", user)
                .field("jid", jid)
                .field("register", register)
                .finish_non_exhaustive(),
            Self::Unlink { user } => f.debug_struct("Unlink").field("user", user).finish(),
            Self::Identities => f.write_str("Identities"),
            Self::Status { user } => f.debug_struct("Status").field("user", user).finish(),
            Self::Devices { user, jid } => f
                .debug_struct("Devices")
                .field("user", user)
                .field("jid", jid)
                .finish(),
            Self::SafetyNumber { user, jid } => f
                .debug_struct("SafetyNumber")
                .field("user", user)
                .field("jid", jid)
                .finish(),
            // A fingerprint is public: it is what the two sides read to each other.
            Self::Trust {
                user,
                jid,
                fingerprint,
                trusted,
            } => f
                .debug_struct("Trust")
                .field("user", user)
                .field("jid", jid)
                .field("fingerprint", fingerprint)
                .field("trusted", trusted)
                .finish(),
        }
    }
}

/// The answer: `ok` and a text for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub text: String,
}

/// The bound admin socket and the user it belongs to.
pub struct AdminListener {
    listener: UnixListener,
    owner: u32,
}

/// Whether a peer of user id `peer` may talk to the socket of user `owner`.
fn may_use(peer: u32, owner: u32) -> bool {
    peer == owner || peer == 0
}

/// Binds the socket at `path` (replacing a stale one) with mode 0600. It is bound in a fresh
/// directory of mode 0700 next to `path` and renamed into place, so there is no moment in which
/// it exists with the umask's mode.
pub fn bind(path: &Path) -> std::io::Result<AdminListener> {
    if path.exists() {
        // A live bridge answers on it; a stale file from a killed one does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use: is another bridge running?", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "admin.socket".into());
    let private = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        let owner = std::fs::metadata(path)?.uid();
        Ok(AdminListener { listener, owner })
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// Serves requests until the task is dropped.
pub async fn serve(admin: AdminListener, bridge: Arc<Bridge>) {
    let AdminListener { listener, owner } = admin;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let peer = stream.peer_cred().map(|c| c.uid());
                if !matches!(peer, Ok(uid) if may_use(uid, owner)) {
                    warn!(
                        ?peer,
                        "admin socket: a connection from another user refused"
                    );
                    continue;
                }
                let bridge = bridge.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, &bridge).await {
                        warn!(%error, "admin request failed");
                    }
                });
            }
            Err(error) => {
                warn!(%error, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, bridge: &Bridge) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            info!(?request, "admin request");
            run(request, bridge).await
        }
        Err(e) => Answer {
            ok: false,
            // serde's message may quote input; give only the position.
            text: format!(
                "malformed request (line {}, column {})",
                e.line(),
                e.column()
            ),
        },
    };
    let mut out = serde_json::to_string(&answer).unwrap_or_default();
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

fn parse_user(user: &str) -> Result<ruma::OwnedUserId, Answer> {
    ruma::UserId::parse(user).map_err(|e| Answer {
        ok: false,
        text: format!("{user:?} is not a Matrix user ID: {e}"),
    })
}

async fn run(request: Request, bridge: &Bridge) -> Answer {
    let fail = |text: String| Answer { ok: false, text };
    match request {
        Request::Link {
            user,
            jid,
            password,
            register,
        } => {
            let user = match parse_user(&user) {
                Ok(u) => u,
                Err(a) => return a,
            };
            match bridge.link(&user, &jid, &password, register).await {
                Ok(info) => Answer {
                    ok: true,
                    text: format!(
                        "linked {} to {user}: OMEMO device {}, fingerprint {}",
                        info.jid, info.device, info.fingerprint
                    ),
                },
                Err(e) => fail(format!("cannot link {jid}: {e}")),
            }
        }
        Request::Unlink { user } => {
            let user = match parse_user(&user) {
                Ok(u) => u,
                Err(a) => return a,
            };
            match bridge.unlink(&user).await {
                Ok(Some(jid)) => Answer {
                    ok: true,
                    text: format!("unlinked {jid} from {user}"),
                },
                Ok(None) => fail(format!("{user} has no linked identity")),
                Err(e) => fail(format!("cannot unlink: {e}")),
            }
        }
        Request::Identities | Request::Status { user: None } => describe(bridge.statuses(None)),
        Request::Status { user: Some(user) } => match parse_user(&user) {
            Ok(user) => describe(bridge.statuses(Some(&user))),
            Err(a) => a,
        },
        Request::Devices { user, jid } => {
            user_command(bridge, &user, Command::Devices { jid }).await
        }
        Request::SafetyNumber { user, jid } => {
            user_command(bridge, &user, Command::SafetyNumber { jid }).await
        }
        Request::Trust {
            user,
            jid,
            fingerprint,
            trusted,
        } => {
            let command = Command::Trust {
                jid,
                fingerprint,
                trusted,
            };
            user_command(bridge, &user, command).await
        }
    }
}

/// Runs a device command for `user` as the bot does; its reply's text is the answer.
async fn user_command(bridge: &Bridge, user: &str, command: Command) -> Answer {
    let fail = |text: String| Answer { ok: false, text };
    let user = match parse_user(user) {
        Ok(u) => u,
        Err(a) => return a,
    };
    match bridge.run_user_command(&user, command).await {
        Ok(reply) => Answer {
            ok: true,
            text: reply.plain,
        },
        Err(CommandError::NotLinked) => fail(format!("{user} has no linked account")),
        Err(CommandError::Refused(why)) => fail(why),
        Err(CommandError::Failed(e)) => fail(format!("failed: {e}")),
    }
}

fn describe(statuses: Result<Vec<crate::core::LoginStatus>, crate::core::BridgeError>) -> Answer {
    match statuses {
        Ok(list) if list.is_empty() => Answer {
            ok: true,
            text: "no linked identities".into(),
        },
        Ok(list) => Answer {
            ok: true,
            text: list
                .iter()
                .map(|s| s.describe())
                .collect::<Vec<_>>()
                .join("\n"),
        },
        Err(e) => Answer {
            ok: false,
            text: e.to_string(),
        },
    }
}

/// The CLI side: sends `request` to the bridge at `socket` and returns its answer.
pub async fn call(socket: &PathBuf, request: &Request) -> Result<Answer, String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach the bridge at {} ({e}); is `interop-bridge run` running with this \
             config (key `admin.socket`)?",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(read.take(1024 * 1024))
        .read_line(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the bridge: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn only_the_bridges_own_user_and_root_may_use_the_socket() {
        assert!(may_use(1000, 1000));
        assert!(may_use(0, 1000));
        assert!(!may_use(1001, 1000));
        assert!(!may_use(65534, 0));
    }

    #[test]
    fn requests_travel_as_tagged_json_and_debug_hides_only_the_password() {
        let trust = Request::Trust {
            user: "@a:hs.example".into(),
            jid: "b@x.example".into(),
            fingerprint: "05ab cdef".into(),
            trusted: false,
        };
        let line = serde_json::to_string(&trust).expect("json");
        assert_eq!(
            line,
            r#"{"cmd":"trust","user":"@a:hs.example","jid":"b@x.example","fingerprint":"05ab cdef","trusted":false}"#
        );
        let back: Request = serde_json::from_str(&line).expect("parse");
        assert!(format!("{back:?}").contains(r#"fingerprint: "05ab cdef", trusted: false"#));
        let safety = serde_json::to_string(&Request::SafetyNumber {
            user: "@a:hs.example".into(),
            jid: "b@x".into(),
        })
        .expect("json");
        assert!(safety.starts_with(r#"{"cmd":"safety-number","#), "{safety}");
        let devices: Request =
            serde_json::from_str(r#"{"cmd":"devices","user":"@a:h","jid":"b@x"}"#).expect("parse");
        assert_eq!(
            format!("{devices:?}"),
            r#"Devices { user: "@a:h", jid: "b@x" }"#
        );
        let link = Request::Link {
            user: "@a:h".into(),
            jid: "a@x".into(),
            password: "hunter2-secret".into(),
            register: false,
        };
        assert!(!format!("{link:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn the_socket_appears_with_mode_0600_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.socket");
        let admin = bind(&path).expect("bind");
        let meta = std::fs::metadata(&path).expect("socket");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(admin.owner, meta.uid());
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, ["admin.socket"], "the private staging dir is gone");
        // It answers at its final path.
        let (client, accepted) = tokio::join!(UnixStream::connect(&path), admin.listener.accept());
        client.expect("connect");
        let (stream, _) = accepted.expect("accept");
        let peer = stream.peer_cred().expect("peer credentials");
        assert!(may_use(peer.uid(), admin.owner));
        // A second bridge on the same path is refused while this one listens.
        assert!(bind(&path).is_err());
    }
}
