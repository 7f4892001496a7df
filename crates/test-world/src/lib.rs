//! The workspace's real test world, for e2e tests of every crate in it (dev-only, never shipped).
//!
//! [`World::start`] runs `scripts/world/up.sh` at the workspace root: Prosody, and Synapse when
//! asked, on free loopback ports in a temp dir, stopped on drop (and by the world's watcher if the
//! test process dies). The peers are independent implementations driven as child processes:
//! [`omemo_peer`] (python-omemo), [`xmpp_peer`] (slixmpp), [`profanity`] (libsignal-protocol-c) and,
//! on the Matrix side, [`matrix_peer`] (matrix-nio with vodozemac, an E2EE Matrix user) and,
//! in-process, [`sdk_peer`] (matrix-sdk-crypto set up like Element excluding insecure devices).
//! `scripts/world/install.sh` installs them (`scripts/test.sh` runs it).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod line_peer;
pub mod matrix_peer;
pub mod omemo_peer;
pub mod profanity;
pub mod sdk_peer;
pub mod xmpp_peer;

pub use matrix_peer::MatrixPeer;

/// The workspace root (where `scripts/world/` lives): the nearest ancestor of the package
/// under test (cargo sets `CARGO_MANIFEST_DIR` when it runs a test) that has `scripts/world`.
/// Read at run time, not baked in: checkouts of the project that share one target directory
/// share this crate's build too, and each must run its own scripts.
pub fn repo() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    start
        .ancestors()
        .find(|dir| dir.join("scripts/world").is_dir())
        .unwrap_or_else(|| panic!("no scripts/world above {}", start.display()))
        .canonicalize()
        .expect("workspace root")
}

/// A port no other caller in this process got and nothing listens on, below Linux's ephemeral
/// range (32768 and up). A port the kernel hands out for `bind(0)` is an ephemeral one, which the
/// many client sockets of a test run may take again before our server binds it; a server then
/// fails to start (seen with eight worlds and their OMEMO peers starting at once).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 400) * 30;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (offset + n) % 12_000).expect("port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running test world.
pub struct World {
    pub state: tempfile::TempDir,
    pub env: HashMap<String, String>,
    pub synapse_port: u16,
}

impl World {
    /// Picks ports, lets `prepare` write files that need Synapse's port (the bridge's registration),
    /// then starts `services` with those registrations loaded.
    pub fn start(services: &str, prepare: impl FnOnce(&Path, u16) -> Vec<PathBuf>) -> Self {
        Self::start_with_env(services, &[], prepare)
    }

    /// [`World::start`] with extra variables for `up.sh` (see its header), for example
    /// `XMPP_DOMAIN` and `WORLD_XMPP_USERS` for a second Prosody serving another domain.
    pub fn start_with_env(
        services: &str,
        extra_env: &[(&str, &str)],
        prepare: impl FnOnce(&Path, u16) -> Vec<PathBuf>,
    ) -> Self {
        // WORLD_KEEP=1 keeps the state dir (logs, configs) after the test, to read a failure.
        let state = tempfile::Builder::new()
            .prefix("interop-e2e-")
            .disable_cleanup(std::env::var_os("WORLD_KEEP").is_some())
            .tempdir()
            .expect("tempdir");
        let synapse_port = free_port();
        let appservices = prepare(state.path(), synapse_port);
        let joined: Vec<String> = appservices
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let venv = std::env::var("WORLD_VENV")
            .unwrap_or_else(|_| repo().join(".world/venv").display().to_string());
        // One retry: under heavy load (several worlds starting at once next to a build) Prosody
        // was seen to exit during start-up (twice, in full-suite runs next to a benchmark); a second attempt with fresh
        // ports starts it. A second failure fails the test with both services' log tails.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log = state.path().join(format!("up-{attempt}.log"));
            let status = Command::new("bash")
                .arg(repo().join("scripts/world/up.sh"))
                .arg(state.path())
                .env("WORLD_VENV", &venv)
                .env("WORLD_SERVICES", services)
                .env("WORLD_APPSERVICES", joined.join(":"))
                .env("WORLD_WATCH_PID", std::process::id().to_string())
                .env("SYNAPSE_PORT", synapse_port.to_string())
                .env("XMPP_C2S_PORT", free_port().to_string())
                .env("XMPP_HTTP_PORT", free_port().to_string())
                .env("XMPP_HTTPS_PORT", free_port().to_string())
                .env("XMPP_COMPONENT_PORT", free_port().to_string())
                .envs(extra_env.iter().copied())
                .stdout(File::create(&log).expect("log"))
                .stderr(File::create(state.path().join("up.err")).expect("log"))
                .status()
                .expect("run up.sh");
            if status.success() {
                break;
            }
            let err = std::fs::read_to_string(state.path().join("up.err")).unwrap_or_default();
            let logs: String = ["logs/prosody.log", "logs/synapse.log"]
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(state.path().join(f)).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {f} (tail) ---\n{}\n",
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    )
                })
                .collect();
            if attempt >= 2 {
                panic!(
                    "scripts/world/up.sh failed twice (did scripts/world/install.sh run?):\n{err}\n{logs}"
                );
            }
            eprintln!("[world] up.sh failed, retrying once:\n{err}\n{logs}");
        }
        let env_text = std::fs::read_to_string(state.path().join("world.env")).expect("world.env");
        let env = env_text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.split(" #")
                        .next()
                        .unwrap_or(v)
                        .trim()
                        .trim_matches('\'')
                        .to_owned(),
                )
            })
            .collect();
        Self {
            state,
            env,
            synapse_port,
        }
    }

    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in world.env"))
    }

    /// Registers the XMPP account `user` with the password `pw-<user>` on this world's Prosody
    /// (`World::start` only creates alice and bob). Idempotent.
    pub fn add_xmpp_user(&self, user: &str) {
        let out = Command::new("prosodyctl")
            .args(["--config", self.var("PROSODY_CONFIG"), "register", user])
            .arg(self.var("XMPP_DOMAIN"))
            .arg(format!("pw-{user}"))
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl");
        assert!(
            out.status.success(),
            "prosodyctl register {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, …) to this world's Prosody.
    pub fn signal_prosody(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.state.path().join("pids/prosody.pid"))
            .expect("prosody pid");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.trim())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} prosody");
    }

    pub fn synapse_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.synapse_port)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/world/down.sh"))
            .arg(self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
