//! The appservice registration file (`generate-registration` writes it, the homeserver loads it,
//! `run` reads its tokens). Besides the spec's keys it opts into what end-to-bridge encryption
//! needs: MSC2409 ephemeral and to-device events, MSC3202 device lists and one-time-key counts,
//! and MSC4190 device management, under the names Synapse reads.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Secret};
use crate::ids::GhostNamespace;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub url: String,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: bool,
    #[serde(default)]
    pub receive_ephemeral: bool,
    #[serde(rename = "de.sorunome.msc2409.push_ephemeral", default)]
    pub msc2409_push_ephemeral: bool,
    #[serde(rename = "org.matrix.msc3202", default)]
    pub msc3202: bool,
    #[serde(rename = "io.element.msc4190", default)]
    pub msc4190: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("sender_localpart", &self.sender_localpart)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The registration for `config`, keeping the tokens of `previous` (a re-generated file must
    /// not break a homeserver that already has the old one) or making new random ones.
    pub fn for_config(config: &Config, previous: Option<&Registration>) -> Result<Self, String> {
        let ghosts = GhostNamespace::new(&config.appservice.ghost_prefix, server_name(config)?);
        let (as_token, hs_token) = match previous {
            Some(p) => (p.as_token.clone(), p.hs_token.clone()),
            None => (random_hex(32)?, random_hex(32)?),
        };
        Ok(Self {
            id: config.appservice.id.clone(),
            url: config.appservice.address.clone(),
            as_token,
            hs_token,
            sender_localpart: config.appservice.bot_localpart.clone(),
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: true,
                    regex: ghosts.regex(),
                }],
                ..Namespaces::default()
            },
            rate_limited: false,
            receive_ephemeral: true,
            msc2409_push_ephemeral: true,
            msc3202: true,
            msc4190: true,
        })
    }

    /// Reads a registration file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        // serde-saphyr's messages can quote the offending value, which may be a token.
        serde_saphyr::from_str(&text)
            .map_err(|_| "not a valid appservice registration (YAML)".to_owned())
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("a registration always serializes");
        format!(
            "# Appservice registration for interop-bridge. Give this file to the homeserver\n\
                 # (Synapse: app_service_config_files). It contains secrets: keep it private.\n{body}"
        )
    }

    /// Differences between this file and what `config` expects, as `key: reason` lines.
    pub fn mismatches(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(expected) = Self::for_config(config, Some(self)) else {
            return out;
        };
        if self.id != expected.id {
            out.push(format!(
                "id is {:?}, appservice.id is {:?}",
                self.id, expected.id
            ));
        }
        if self.url != expected.url {
            out.push(format!(
                "url is {:?}, appservice.address is {:?}",
                self.url, expected.url
            ));
        }
        if self.sender_localpart != expected.sender_localpart {
            out.push(format!(
                "sender_localpart is {:?}, appservice.bot_localpart is {:?}",
                self.sender_localpart, expected.sender_localpart
            ));
        }
        if !self
            .namespaces
            .users
            .contains(&expected.namespaces.users[0])
            && self.legacy_namespace(config).is_none()
        {
            out.push(format!(
                "namespaces.users has no exclusive regex {:?} for appservice.ghost_prefix",
                expected.namespaces.users[0].regex
            ));
        }
        out
    }

    /// What is accepted but should be changed, as `key: reason` lines.
    pub fn warnings(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(regex) = self.legacy_namespace(config) {
            out.push(format!(
                "namespaces.users regex {regex:?} is not anchored at the end, so the homeserver \
                 also routes users of other servers whose name starts like ours to the bridge; \
                 run `generate-registration` and reload the homeserver"
            ));
        }
        if config.encryption.enabled {
            for (set, key, what) in [
                (
                    self.msc4190,
                    "io.element.msc4190",
                    "devices for the bot and the ghosts",
                ),
                (
                    self.msc3202,
                    "org.matrix.msc3202",
                    "one-time-key counts and device lists",
                ),
                (
                    self.msc2409_push_ephemeral,
                    "de.sorunome.msc2409.push_ephemeral",
                    "to-device events",
                ),
            ] {
                if !set {
                    out.push(format!(
                        "{key} is not true, but encryption.enabled needs it ({what}); run \
                         `generate-registration` and reload the homeserver, or the bridge \
                         will turn encryption off at start"
                    ));
                }
            }
        }
        out
    }

    /// The unanchored exclusive regex of earlier versions, if this file has only that one.
    fn legacy_namespace(&self, config: &Config) -> Option<String> {
        let server = server_name(config).ok()?;
        let ghosts = GhostNamespace::new(&config.appservice.ghost_prefix, server);
        let anchored = ghosts.regex();
        let legacy = ghosts.legacy_regex();
        let has = |regex: &str| {
            self.namespaces
                .users
                .iter()
                .any(|n| n.exclusive && n.regex == regex)
        };
        (!has(&anchored) && has(&legacy)).then_some(legacy)
    }

    pub fn as_token(&self) -> Secret {
        Secret::new(self.as_token.clone())
    }

    pub fn hs_token(&self) -> Secret {
        Secret::new(self.hs_token.clone())
    }
}

fn server_name(config: &Config) -> Result<&ruma::ServerName, String> {
    <&ruma::ServerName>::try_from(config.homeserver.domain.as_str())
        .map_err(|e| format!("homeserver.domain: {e}"))
}

/// `n` random bytes as hex digits (tokens are 32 bytes: 64 digits).
pub(super) fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(crate::ids::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::example();
        c.homeserver.domain = "hs.example".into();
        c
    }

    #[test]
    fn generated_registration_round_trips_and_matches_its_config() {
        let reg = Registration::for_config(&config(), None).expect("generates");
        assert_eq!(reg.as_token.len(), 64);
        assert_ne!(reg.as_token, reg.hs_token);
        assert_eq!(reg.namespaces.users[0].regex, "^@interop_.*:hs\\.example$");
        let yaml = reg.to_yaml();
        for key in [
            "de.sorunome.msc2409.push_ephemeral: true",
            "org.matrix.msc3202: true",
            "io.element.msc4190: true",
            "receive_ephemeral: true",
            "sender_localpart: interopbot",
        ] {
            assert!(yaml.contains(key), "{key} missing in\n{yaml}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, &yaml).expect("write");
        let back = Registration::load(&path).expect("loads");
        assert!(back == reg, "round trip changed the registration");
        assert!(back.mismatches(&config()).is_empty());
    }

    #[test]
    fn registration_yaml_example_is_the_generated_file() {
        let mut reg = Registration::for_config(&Config::example(), None).expect("generates");
        let placeholder = "<random, 64 hex digits: generate-registration makes them>";
        (reg.as_token, reg.hs_token) = (placeholder.into(), placeholder.into());
        assert_eq!(
            include_str!("../../registration.yaml.example"),
            reg.to_yaml()
        );
    }

    #[test]
    fn regenerating_keeps_the_tokens() {
        let first = Registration::for_config(&config(), None).expect("generates");
        let again = Registration::for_config(&config(), Some(&first)).expect("generates");
        assert_eq!(
            (first.as_token.as_str(), first.hs_token.as_str()),
            (again.as_token.as_str(), again.hs_token.as_str())
        );
        assert!(!format!("{first:?}").contains(&first.as_token));
    }

    #[test]
    fn an_unanchored_regex_of_an_earlier_version_is_accepted_with_a_warning() {
        let mut reg = Registration::for_config(&config(), None).expect("generates");
        assert!(reg.warnings(&config()).is_empty());
        reg.namespaces.users[0].regex = "@interop_.*:hs\\.example".into();
        assert!(reg.mismatches(&config()).is_empty());
        let warnings = reg.warnings(&config());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("not anchored"), "{warnings:?}");
        // Not exclusive: neither form counts.
        reg.namespaces.users[0].exclusive = false;
        assert_eq!(reg.mismatches(&config()).len(), 1);
    }

    #[test]
    fn a_registration_without_the_encryption_extensions_is_warned_about() {
        let mut reg = Registration::for_config(&config(), None).expect("generates");
        reg.msc3202 = false;
        reg.msc4190 = false;
        let warnings = reg.warnings(&config());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("io.element.msc4190 is not true"));
        assert!(warnings[1].starts_with("org.matrix.msc3202 is not true"));
        let mut plain = config();
        plain.encryption.enabled = false;
        assert!(reg.warnings(&plain).is_empty());
    }

    #[test]
    fn invalid_registration_mismatches_are_named() {
        let mut reg = Registration::for_config(&config(), None).expect("generates");
        reg.sender_localpart = "other".into();
        reg.namespaces.users.clear();
        let found = reg.mismatches(&config());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("sender_localpart is \"other\""));
        assert!(found[1].starts_with("namespaces.users has no exclusive regex"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "id: [unclosed\nas_token: secret-value\n").expect("write");
        let err = Registration::load(&path).expect_err("invalid");
        assert!(!err.contains("secret-value"));
    }
}
