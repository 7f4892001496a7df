//! Command-line interface: definitions (clap), the handlers of the offline commands, and the
//! admin requests the others send to the running bridge. Management-room commands use the same
//! words (see `commands`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::admin::Request;
use crate::config::{Config, apply_override, render_example};
use crate::matrix::Registration;

#[derive(Debug, Parser)]
#[command(
    name = "interop-bridge",
    version,
    about = "Matrix bridge to Signal-Protocol-encrypted interop networks (XMPP + OMEMO)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Print a fully commented example configuration.
    GenerateConfig {
        /// Set a key in the output, e.g. `--set homeserver.domain=example.org` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Write the appservice registration file for the homeserver (keeps existing tokens).
    GenerateRegistration {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Output file [default: appservice.registration from the config].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a configuration file (and its registration file) without starting anything.
    CheckConfig {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Link an interop account to a Matrix user (the bridge must be running).
    #[command(group(clap::ArgGroup::new("secret").required(true).multiple(true)
        .args(["password_file", "password_env", "register"])))]
    Link {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The Matrix user, e.g. @alice:example.org.
        user: String,
        /// The account's bare JID, e.g. alice@xmpp.example.org.
        jid: String,
        /// Read the password from this file (its first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Create the account first by in-band registration (XEP-0077). Without a password
        /// option, a random password is generated (the bridge stores it).
        #[arg(long)]
        register: bool,
    },
    /// Unlink a Matrix user's interop account: closes the connection, deletes its keys.
    Unlink {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        user: String,
    },
    /// List the linked identities.
    Identities {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Show the linked identities' connections (all, or one Matrix user's).
    Status {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        user: Option<String>,
    },
    /// List a contact's OMEMO devices with their fingerprints and trust, for a Matrix user.
    ///
    /// As the bot's `devices <jid>` for that user (the bridge must be running).
    Devices {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The Matrix user, e.g. @alice:example.org.
        user: String,
        /// The contact's bare JID, e.g. bob@xmpp.example.org.
        jid: String,
    },
    /// Show the fingerprints a Matrix user and a contact compare (the user's and theirs).
    ///
    /// As the bot's `safety-number <jid>` for that user (the bridge must be running).
    SafetyNumber {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The Matrix user, e.g. @alice:example.org.
        user: String,
        /// The contact's bare JID, e.g. bob@xmpp.example.org.
        jid: String,
    },
    /// Trust a contact's device for a Matrix user: encrypt the user's messages to it.
    ///
    /// As the bot's `trust <jid> <fingerprint>` for that user (the bridge must be running).
    Trust {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The Matrix user, e.g. @alice:example.org.
        user: String,
        /// The contact's bare JID, e.g. bob@xmpp.example.org.
        jid: String,
        /// The device's fingerprint in hex, whole or in the groups an XMPP client shows.
        #[arg(required = true, num_args = 1..)]
        fingerprint: Vec<String>,
    },
    /// Stop encrypting a Matrix user's messages to a contact's device.
    ///
    /// As the bot's `untrust <jid> <fingerprint>` for that user (the bridge must be running).
    Untrust {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The Matrix user, e.g. @alice:example.org.
        user: String,
        /// The contact's bare JID, e.g. bob@xmpp.example.org.
        jid: String,
        /// The device's fingerprint in hex, whole or in the groups an XMPP client shows.
        #[arg(required = true, num_args = 1..)]
        fingerprint: Vec<String>,
    },
}

/// The admin request of a command run by the bridge over the admin socket (`link` aside, whose
/// password is read first), with the config file that names the socket; `None` for the others.
pub fn admin_request(command: &Command) -> Option<(&Path, Request)> {
    let trust = |user: &str, jid: &str, words: &[String], trusted| Request::Trust {
        user: user.to_owned(),
        jid: jid.to_owned(),
        // XMPP clients show a fingerprint in groups; any grouping is the same fingerprint.
        fingerprint: words.join(" "),
        trusted,
    };
    Some(match command {
        Command::Unlink { config, user } => (config, Request::Unlink { user: user.clone() }),
        Command::Identities { config } => (config, Request::Identities),
        Command::Status { config, user } => (config, Request::Status { user: user.clone() }),
        Command::Devices { config, user, jid } => (
            config,
            Request::Devices {
                user: user.clone(),
                jid: jid.clone(),
            },
        ),
        Command::SafetyNumber { config, user, jid } => (
            config,
            Request::SafetyNumber {
                user: user.clone(),
                jid: jid.clone(),
            },
        ),
        Command::Trust {
            config,
            user,
            jid,
            fingerprint,
        } => (config, trust(user, jid, fingerprint, true)),
        Command::Untrust {
            config,
            user,
            jid,
            fingerprint,
        } => (config, trust(user, jid, fingerprint, false)),
        Command::Run { .. }
        | Command::GenerateConfig { .. }
        | Command::GenerateRegistration { .. }
        | Command::CheckConfig { .. }
        | Command::Link { .. } => return None,
    })
}

/// The password for `link`: from the file, the variable, or (for `--register` alone) random.
pub fn link_password(
    file: Option<&Path>,
    env: Option<&str>,
    register: bool,
) -> anyhow::Result<String> {
    let password = if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file {}", file.display()))?;
        text.lines().next().unwrap_or_default().to_owned()
    } else if let Some(var) = env {
        std::env::var(var)
            .with_context(|| format!("environment variable {var} is not set or not UTF-8"))?
    } else if register {
        use rand::RngExt;
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        (0..24)
            .map(|_| {
                const ALPHABET: &[u8] =
                    b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])
            })
            .collect()
    } else {
        bail!("give --password-file, --password-env or --register");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// Sends an admin request to the running bridge configured in `config`; prints its answer.
pub fn admin_call(config: &Path, request: &Request) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let socket = config.path(&config.admin.socket);
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::admin::call(&socket, request))
        .map_err(anyhow::Error::msg)?;
    if answer.ok {
        Ok(answer.text)
    } else {
        bail!("{}", answer.text)
    }
}

/// `generate-config`: the example with the overrides applied, validated.
pub fn generate_config(set: &[String], out: &mut dyn Write) -> anyhow::Result<()> {
    let mut config = Config::example();
    for assignment in set {
        config = apply_override(&config, assignment).map_err(|e| anyhow::anyhow!("--set {e}"))?;
    }
    if let Err((key, reason)) = config.validate() {
        bail!("--set: key `{key}`: {reason}");
    }
    out.write_all(render_example(&config).as_bytes())?;
    Ok(())
}

/// `generate-registration`: writes the file, reusing the tokens of an existing one.
pub fn generate_registration(config_path: &Path, output: Option<&Path>) -> anyhow::Result<PathBuf> {
    let config = Config::load(config_path)?;
    let path = output.map_or_else(
        || config.path(&config.appservice.registration),
        Path::to_path_buf,
    );
    let previous = if path.exists() {
        Some(Registration::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
    } else {
        None
    };
    let registration =
        Registration::for_config(&config, previous.as_ref()).map_err(anyhow::Error::msg)?;
    write_private(&path, registration.to_yaml().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if config.appservice.double_puppet {
        use crate::matrix::{DoublePuppetRegistration, double_puppet};
        let puppet_path = double_puppet::path_beside(&path);
        let previous = match puppet_path.exists() {
            true => Some(
                DoublePuppetRegistration::load(&puppet_path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", puppet_path.display()))?,
            ),
            false => None,
        };
        let puppet = DoublePuppetRegistration::for_config(&config, previous.as_ref())
            .map_err(anyhow::Error::msg)?;
        write_private(&puppet_path, puppet.to_yaml().as_bytes())
            .with_context(|| format!("cannot write {}", puppet_path.display()))?;
        eprintln!(
            "wrote {} (appservice.double_puppet); add it to the homeserver's appservice \
             registrations too",
            puppet_path.display()
        );
    }
    Ok(path)
}

/// `check-config`: the config, then the registration file against it. Returns a summary.
pub fn check_config(config_path: &Path) -> anyhow::Result<String> {
    let config = Config::load(config_path)?;
    let reg_path = config.path(&config.appservice.registration);
    let registration = Registration::load(&reg_path).map_err(|e| {
        anyhow::anyhow!(
            "{}: key `appservice.registration`: {}: {e} (run `interop-bridge generate-registration -c {}`)",
            config_path.display(),
            reg_path.display(),
            config_path.display()
        )
    })?;
    let mismatches = registration.mismatches(&config);
    if !mismatches.is_empty() {
        bail!(
            "{}: does not match {}:\n  {}\n(run `interop-bridge generate-registration -c {}` and reload the homeserver)",
            reg_path.display(),
            config_path.display(),
            mismatches.join("\n  "),
            config_path.display()
        );
    }
    if config.appservice.double_puppet {
        let path = crate::matrix::double_puppet::path_beside(&reg_path);
        crate::matrix::DoublePuppetRegistration::load(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}: key `appservice.double_puppet`: {}: {e} (run `interop-bridge \
                 generate-registration -c {}` and give the file to the homeserver)",
                config_path.display(),
                path.display(),
                config_path.display()
            )
        })?;
    }
    let mut trust = Vec::new();
    if let Some(ca_file) = &config.network.ca_file {
        let path = config.path(ca_file);
        let named = |e: xmpp_omemo::stream::Error| {
            let reason = match e {
                xmpp_omemo::stream::Error::CaFile { reason, .. } => reason,
                other => other.to_string(),
            };
            anyhow::anyhow!(
                "{}: key `network.ca_file`: {} {reason}",
                config_path.display(),
                path.display()
            )
        };
        let certs = xmpp_omemo::stream::read_ca_file(&path).map_err(named)?;
        xmpp_omemo::stream::tls_client_config(Some(&path)).map_err(named)?;
        trust.push(format!(
            "{} CA certificate(s) from {}",
            certs.len(),
            path.display()
        ));
    }
    if !config.network.tls_pins.is_empty() {
        let domains: Vec<&str> = config.network.tls_pins.keys().map(String::as_str).collect();
        trust.push(format!("pinned keys for {}", domains.join(", ")));
    }
    for (key, source) in [
        ("appservice.as_token", &config.appservice.as_token),
        ("appservice.hs_token", &config.appservice.hs_token),
    ] {
        if let Some(source) = source {
            source
                .resolve(&config.base_dir)
                .map_err(|e| anyhow::anyhow!("{}: key `{key}`: {e}", config_path.display()))?;
        }
    }
    let mut summary = format!(
        "{}: OK (homeserver {} as {}, listening on {}, registration {})",
        config_path.display(),
        config.homeserver.address,
        config.homeserver.domain,
        config.appservice.listen,
        reg_path.display()
    );
    if !trust.is_empty() {
        summary.push_str(&format!("\nXMPP TLS: {}", trust.join("; ")));
    }
    for warning in registration.warnings(&config) {
        summary.push_str(&format!("\nwarning: {}: {warning}", reg_path.display()));
    }
    for line in
        at_rest_report(&config).map_err(|e| anyhow::anyhow!("{}: {e:#}", config_path.display()))?
    {
        summary.push('\n');
        summary.push_str(&line);
    }
    Ok(summary)
}

/// `check-config` on encryption at rest: the key resolves and opens the database (reading its
/// key-check file only), or a warning that secrets are stored in the clear.
fn at_rest_report(config: &Config) -> anyhow::Result<Vec<String>> {
    use crate::store::{AtRest, at_rest_state};
    let key = crate::daemon::database_key(config)?;
    let db_path = config.path(&config.database.path);
    let state = at_rest_state(&db_path, key.as_ref())
        .map_err(|e| anyhow::anyhow!("key `database.key`: {}: {e}", db_path.display()))?;
    let mut lines = Vec::new();
    if key.is_none() {
        lines.push(
            "warning: key `database.key` is not set: the XMPP passwords, OMEMO private keys and \
             Matrix crypto stores are stored in the clear (docs/threat-model.md)"
                .to_owned(),
        );
    } else if state == AtRest::Plain {
        lines.push(format!(
            "note: the database {} is not encrypted yet: the bridge encrypts it at its next start",
            db_path.display()
        ));
    }
    let crypto_dir = config.path(&config.encryption.store);
    let (plain, _) = crate::matrix::crypto::at_rest::store_counts(&crypto_dir);
    if key.is_some() && plain > 0 {
        lines.push(format!(
            "warning: {plain} Matrix crypto store(s) in {} were created before database.key was \
             set and stay unencrypted at rest (docs/threat-model.md)",
            crypto_dir.display()
        ));
    }
    Ok(lines)
}

/// Writes a file readable by its owner only (it holds tokens).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[&str]) -> Request {
        let cli =
            Cli::try_parse_from(std::iter::once("interop-bridge").chain(args.iter().copied()))
                .expect("parses");
        let (config, request) = admin_request(&cli.command).expect("an admin request");
        assert_eq!(config, Path::new("c.toml"));
        request
    }

    fn usage_error(args: &[&str]) -> clap::error::ErrorKind {
        Cli::try_parse_from(std::iter::once("interop-bridge").chain(args.iter().copied()))
            .expect_err("a usage error")
            .kind()
    }

    #[test]
    fn trust_joins_the_fingerprint_groups_and_untrust_says_so() {
        let Request::Trust {
            user,
            jid,
            fingerprint,
            trusted,
        } = request(&[
            "trust",
            "@a:hs.example",
            "b@x.example",
            "05ab",
            "CDEF",
            "0123",
            "-c",
            "c.toml",
        ])
        else {
            panic!("not a trust request");
        };
        assert_eq!(
            (user.as_str(), jid.as_str(), fingerprint.as_str(), trusted),
            ("@a:hs.example", "b@x.example", "05ab CDEF 0123", true)
        );
        let Request::Trust {
            fingerprint,
            trusted,
            ..
        } = request(&[
            "untrust",
            "-c",
            "c.toml",
            "@a:hs.example",
            "b@x",
            "05abcdef",
        ])
        else {
            panic!("not a trust request");
        };
        assert_eq!((fingerprint.as_str(), trusted), ("05abcdef", false));
    }

    #[test]
    fn devices_and_safety_number_name_the_user_and_the_contact() {
        assert!(matches!(
            request(&["devices", "-c", "c.toml", "@a:hs.example", "b@x"]),
            Request::Devices { user, jid } if user == "@a:hs.example" && jid == "b@x"
        ));
        assert!(matches!(
            request(&["safety-number", "-c", "c.toml", "@a:hs.example", "b@x"]),
            Request::SafetyNumber { user, jid } if user == "@a:hs.example" && jid == "b@x"
        ));
    }

    #[test]
    fn invalid_device_commands_without_their_arguments_are_usage_errors() {
        use clap::error::ErrorKind::MissingRequiredArgument;
        assert_eq!(
            usage_error(&["devices", "@a:hs.example"]),
            MissingRequiredArgument
        );
        assert_eq!(usage_error(&["safety-number"]), MissingRequiredArgument);
        assert_eq!(
            usage_error(&["trust", "@a:hs.example", "b@x"]),
            MissingRequiredArgument
        );
        assert_eq!(
            usage_error(&["untrust", "@a:hs.example", "b@x"]),
            MissingRequiredArgument
        );
        assert_eq!(
            usage_error(&["devices", "@a:hs.example", "b@x", "extra"]),
            clap::error::ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn offline_commands_and_link_are_no_plain_admin_requests() {
        let cli = Cli::try_parse_from(["interop-bridge", "check-config"]).expect("parses");
        assert!(admin_request(&cli.command).is_none());
        let cli = Cli::try_parse_from(["interop-bridge", "link", "@a:h", "a@x", "--register"])
            .expect("parses");
        assert!(
            admin_request(&cli.command).is_none(),
            "link reads its password first"
        );
    }
}
