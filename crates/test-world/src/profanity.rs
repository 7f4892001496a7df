//! profanity (Debian 0.13.1: legacy OMEMO through libsignal-protocol-c) driven in tmux by
//! `scripts/world/profanity_peer.sh`: a third, independent OMEMO implementation for cross-checks.
//! Needs `WORLD_WITH_PROFANITY=1 scripts/world/install.sh` (scripts/test.sh does that).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::{World, repo};

pub struct Profanity {
    /// Bare JID of the account (its resource is `profanity`).
    pub jid: String,
    /// profanity's own OMEMO device id.
    pub device_id: u32,
    env: Vec<(String, String)>,
    /// profanity's data dir (`chatlogs/`, `omemo/`, ...).
    pub data: PathBuf,
    stopped: bool,
}

/// Whether the profanity binary is installed.
pub fn installed() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "command -v profanity && command -v tmux"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Profanity {
    async fn script(&self, args: &[&str]) -> (bool, String, String) {
        run_script(&self.env, args).await
    }

    /// Starts profanity for `user` (password `pw-<user>`, which must exist, see
    /// `World::add_xmpp_user`): logs in (`tls.policy=trust`), generates its OMEMO keys, blind trust,
    /// chat logging on. Takes ~5 s.
    pub async fn start(world: &World, user: &str) -> Self {
        assert!(
            installed(),
            "profanity/tmux not installed: run WORLD_WITH_PROFANITY=1 bash scripts/world/install.sh (scripts/test.sh does)"
        );
        let jid = format!("{user}@{}", world.var("XMPP_DOMAIN"));
        let env: Vec<(String, String)> = world
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (ok, out, err) = run_script(&env, &["start", &jid]).await;
        assert!(ok, "profanity_peer.sh start {jid} failed:\n{out}\n{err}");
        let data = world
            .state
            .path()
            .join("profanity")
            .join(&jid)
            .join("data/profanity");
        let device_id = device_id_of(&data, &jid)
            .or_else(|| {
                out.split("Device ID is ")
                    .nth(1)
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or_else(|| panic!("no OMEMO device id of profanity {jid}:\n{out}\n{err}"));
        Self {
            jid,
            device_id,
            env,
            data,
            stopped: false,
        }
    }

    /// Opens the chat with `to`, `/omemo start`, sends `text` (~3.5 s: the script waits for the
    /// device list and bundles to be fetched).
    pub async fn send(&self, to: &str, text: &str) {
        let (ok, out, err) = self.script(&["send", &self.jid, to, text]).await;
        assert!(
            ok,
            "profanity {} send to {to} failed:\n{out}\n{err}",
            self.jid
        );
    }

    /// Waits until profanity's chat log has `text` in a line from `from` (bare JID; decrypted
    /// messages only land there as text). Returns that log line.
    pub async fn wait_text(&self, from: &str, text: &str, limit: Duration) -> String {
        let secs = limit.as_secs().max(1).to_string();
        let (ok, out, err) = self.script(&["wait", &self.jid, from, text, &secs]).await;
        assert!(
            ok,
            "profanity {} did not show {text:?} from {from} within {limit:?}:\n{out}\n{err}\n--- screen ---\n{}",
            self.jid,
            self.screen().await
        );
        out.trim().to_owned()
    }

    /// The current tmux screen (for failure messages).
    pub async fn screen(&self) -> String {
        self.script(&["screen", &self.jid]).await.1
    }

    /// `/quit`, then its pid if it is still there.
    pub async fn stop(mut self) {
        let (ok, out, err) = self.script(&["stop", &self.jid]).await;
        self.stopped = true;
        assert!(
            ok,
            "profanity_peer.sh stop {} failed:\n{out}\n{err}",
            self.jid
        );
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = std::process::Command::new("bash")
                .arg(repo().join("scripts/world/profanity_peer.sh"))
                .args(["stop", &self.jid])
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn run_script(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/world/profanity_peer.sh"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run profanity_peer.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `device_id=` from profanity's `omemo/<user>_at_<domain>/identity.txt`.
fn device_id_of(data: &std::path::Path, jid: &str) -> Option<u32> {
    let file = data
        .join("omemo")
        .join(jid.replace('@', "_at_"))
        .join("identity.txt");
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("device_id="))
        .and_then(|v| v.trim().parse().ok())
}
