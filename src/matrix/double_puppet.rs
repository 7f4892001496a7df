//! The double-puppeting registration (`appservice.double_puppet`): a second appservice
//! registration, next to the main one, that lets the bridge post as the homeserver's own users
//! with `?user_id=` (identity assertion), the "double puppeting via appservice" setup of the
//! mautrix bridges. Its user namespace holds every local user, not exclusively (the users keep
//! their accounts), and it has no `url`, so the homeserver pushes it nothing; its `as_token` is
//! its own, and only `MatrixClient`s made with it ever send as a real user.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::registration::{Namespace, Namespaces, random_hex};
use crate::config::{Config, Secret};
use crate::ids::GhostNamespace;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DoublePuppetRegistration {
    pub id: String,
    /// Always empty (`null`): the homeserver sends this registration no transactions.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: bool,
}

impl std::fmt::Debug for DoublePuppetRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoublePuppetRegistration")
            .field("id", &self.id)
            .field("sender_localpart", &self.sender_localpart)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// Where the double-puppeting registration lives: beside `main`, named after it
/// (`registration.yaml` → `registration-doublepuppet.yaml`).
pub fn path_beside(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map_or_else(|| "registration".into(), |s| s.to_string_lossy());
    main.with_file_name(format!("{stem}-doublepuppet.yaml"))
}

impl DoublePuppetRegistration {
    /// The registration for `config`, keeping the tokens and sender of `previous`.
    pub fn for_config(config: &Config, previous: Option<&Self>) -> Result<Self, String> {
        let server = <&ruma::ServerName>::try_from(config.homeserver.domain.as_str())
            .map_err(|e| format!("homeserver.domain: {e}"))?;
        let (as_token, hs_token, sender_localpart) = match previous {
            Some(p) => (
                p.as_token.clone(),
                p.hs_token.clone(),
                p.sender_localpart.clone(),
            ),
            None => (
                random_hex(32)?,
                random_hex(32)?,
                // Random, so that it names no real user of the homeserver.
                format!("doublepuppet_{}", random_hex(8)?),
            ),
        };
        Ok(Self {
            id: format!("{}-doublepuppet", config.appservice.id),
            url: None,
            as_token,
            hs_token,
            sender_localpart,
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: false,
                    regex: GhostNamespace::new("", server).regex(),
                }],
                ..Namespaces::default()
            },
            rate_limited: false,
        })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        // serde-saphyr's messages can quote the offending value, which may be a token.
        serde_saphyr::from_str(&text)
            .map_err(|_| "not a valid double-puppeting registration (YAML)".to_owned())
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("a registration always serializes");
        format!(
            "# Double-puppeting registration for interop-bridge (appservice.double_puppet): lets\n\
             # the bridge post as this homeserver's users what they send from their other XMPP\n\
             # clients. Give it to the homeserver next to the main registration (Synapse:\n\
             # app_service_config_files). It contains secrets: keep it private.\n{body}"
        )
    }

    pub fn as_token(&self) -> Secret {
        Secret::new(self.as_token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_covers_every_local_user_not_exclusively_and_has_no_url() {
        let mut config = Config::example();
        config.homeserver.domain = "hs.example".into();
        let reg = DoublePuppetRegistration::for_config(&config, None).expect("generates");
        assert_eq!(reg.id, "interop-doublepuppet");
        assert_eq!(reg.namespaces.users.len(), 1);
        assert!(!reg.namespaces.users[0].exclusive);
        assert_eq!(reg.namespaces.users[0].regex, "^@.*:hs\\.example$");
        assert_eq!(reg.as_token.len(), 64);
        let yaml = reg.to_yaml();
        assert!(yaml.contains("url: null"), "{yaml}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_beside(&dir.path().join("registration.yaml"));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("registration-doublepuppet.yaml")
        );
        std::fs::write(&path, &yaml).expect("write");
        let back = DoublePuppetRegistration::load(&path).expect("loads");
        assert!(back == reg, "round trip changed it");
        let again = DoublePuppetRegistration::for_config(&config, Some(&back)).expect("again");
        assert!(again == reg, "regenerating keeps the tokens");
        assert!(!format!("{reg:?}").contains(&reg.as_token));
    }
}
