//! Management-room commands: parsing and the static answers. The bot's vocabulary is the CLI's
//! (`link`, `unlink`, `identities`, `status`, `devices`, `safety-number`, `trust`, `untrust`);
//! commands that act on the bridge are run by the
//! core (`core::bot`), which owns the connections.

mod help;
mod version;

/// A command said in a management room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    /// Link an interop account; the password is asked for next.
    Link {
        jid: String,
        register: bool,
    },
    Unlink,
    Identities,
    Status,
    /// Open (or reopen) the chat with a contact.
    StartChat {
        jid: String,
    },
    Block {
        jid: String,
    },
    Unblock {
        jid: String,
    },
    /// Forget a `link` waiting for its password.
    Cancel,
    /// List a contact's OMEMO devices, their fingerprints and trust.
    Devices {
        jid: String,
    },
    /// Trust (or, with `trusted: false`, stop encrypting to) the device of `jid` whose
    /// identity key has `fingerprint` (hex; spaces allowed).
    Trust {
        jid: String,
        fingerprint: String,
        trusted: bool,
    },
    /// Show the fingerprints to compare with a contact's screen: ours and theirs.
    SafetyNumber {
        jid: String,
    },
}

/// An answer to post as an `m.notice`: plain text and its HTML rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub plain: String,
    pub html: String,
}

/// Every command with its one-line description, in the order `help` lists them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", "list the commands"),
    ("version", "show the bridge's version"),
    (
        "link <jid> [--register]",
        "link your account on the interop network; I ask for its password next \
         (--register creates the account first)",
    ),
    (
        "unlink",
        "unlink your account: closes the connection and deletes its keys",
    ),
    ("identities", "show your linked account"),
    (
        "status",
        "show the connection, the OMEMO device and your chats",
    ),
    ("start-chat <jid>", "open a chat with a contact"),
    (
        "block <jid>",
        "block a contact (on the server when it supports it)",
    ),
    ("unblock <jid>", "unblock a contact"),
    ("cancel", "forget a link waiting for its password"),
    (
        "devices <jid>",
        "list a contact's OMEMO devices with their fingerprints and trust",
    ),
    (
        "safety-number <jid>",
        "show the fingerprints to compare with the contact's screen",
    ),
    (
        "trust <jid> <fingerprint>",
        "encrypt to that device of the contact (you compared its fingerprint)",
    ),
    (
        "untrust <jid> <fingerprint>",
        "stop encrypting to that device of the contact",
    ),
];

/// Parses a message body. `Err` carries the answer to an unknown command.
pub fn parse(body: &str) -> Result<Command, Reply> {
    let word = body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut args = body.split_whitespace().skip(1);
    let mut jid_arg = |usage: &str| {
        args.next().map(str::to_owned).ok_or_else(|| Reply {
            plain: format!("Usage: {usage}"),
            html: format!("Usage: <code>{}</code>", html_escape(usage)),
        })
    };
    match word.as_str() {
        "help" => Ok(Command::Help),
        "version" => Ok(Command::Version),
        "link" => {
            let rest: Vec<&str> = body.split_whitespace().skip(1).collect();
            let register = rest.contains(&"--register");
            match rest.iter().find(|a| !a.starts_with("--")) {
                Some(jid) => Ok(Command::Link {
                    jid: (*jid).to_owned(),
                    register,
                }),
                None => {
                    jid_arg("link <jid> [--register]").map(|jid| Command::Link { jid, register })
                }
            }
        }
        "unlink" => Ok(Command::Unlink),
        "identities" => Ok(Command::Identities),
        "status" => Ok(Command::Status),
        "start-chat" => jid_arg("start-chat <jid>").map(|jid| Command::StartChat { jid }),
        "block" => jid_arg("block <jid>").map(|jid| Command::Block { jid }),
        "unblock" => jid_arg("unblock <jid>").map(|jid| Command::Unblock { jid }),
        "cancel" => Ok(Command::Cancel),
        "devices" => jid_arg("devices <jid>").map(|jid| Command::Devices { jid }),
        "safety-number" => jid_arg("safety-number <jid>").map(|jid| Command::SafetyNumber { jid }),
        "trust" | "untrust" => {
            let usage = format!("{word} <jid> <fingerprint>");
            let jid = jid_arg(&usage)?;
            // A fingerprint is often copied in its groups: the rest of the line is it.
            let fingerprint: String = args.collect::<Vec<_>>().join(" ");
            if fingerprint.is_empty() {
                return Err(Reply {
                    plain: format!("Usage: {usage}"),
                    html: format!("Usage: <code>{}</code>", html_escape(&usage)),
                });
            }
            Ok(Command::Trust {
                jid,
                fingerprint,
                trusted: word == "trust",
            })
        }
        _ => {
            let shown: String = word.chars().take(32).collect();
            Err(Reply {
                plain: format!("Unknown command \"{shown}\". Say `help` for the list of commands."),
                html: format!(
                    "Unknown command <code>{}</code>. Say <code>help</code> for the list of commands.",
                    html_escape(&shown)
                ),
            })
        }
    }
}

/// The answer of a command that needs no bridge state (`help`, `version`); `None` for the
/// others, which the core runs.
pub fn static_reply(command: &Command) -> Option<Reply> {
    match command {
        Command::Help => Some(help::reply()),
        Command::Version => Some(version::reply()),
        _ => None,
    }
}

impl Reply {
    /// A reply whose HTML is the escaped plain text.
    pub fn text(plain: impl Into<String>) -> Self {
        let plain = plain.into();
        let html = html_escape(&plain).replace('\n', "<br>");
        Self { plain, html }
    }
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_case_and_space_insensitively() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  HELP  please"), Ok(Command::Help));
        assert_eq!(parse("version"), Ok(Command::Version));
        assert_eq!(
            parse("link alice@x.example --register"),
            Ok(Command::Link {
                jid: "alice@x.example".into(),
                register: true
            })
        );
        assert_eq!(
            parse("LINK --register alice@x.example"),
            Ok(Command::Link {
                jid: "alice@x.example".into(),
                register: true
            })
        );
        assert_eq!(
            parse("start-chat bob@x.example"),
            Ok(Command::StartChat {
                jid: "bob@x.example".into()
            })
        );
        assert_eq!(
            parse("block bob@x"),
            Ok(Command::Block {
                jid: "bob@x".into()
            })
        );
        assert_eq!(parse("unlink"), Ok(Command::Unlink));
        assert_eq!(
            parse("trust bob@x 05ab cdef 0123"),
            Ok(Command::Trust {
                jid: "bob@x".into(),
                fingerprint: "05ab cdef 0123".into(),
                trusted: true
            })
        );
        assert_eq!(
            parse("Untrust bob@x abcd"),
            Ok(Command::Trust {
                jid: "bob@x".into(),
                fingerprint: "abcd".into(),
                trusted: false
            })
        );
        assert_eq!(
            parse("devices bob@x"),
            Ok(Command::Devices {
                jid: "bob@x".into()
            })
        );
        assert_eq!(
            parse("safety-number bob@x"),
            Ok(Command::SafetyNumber {
                jid: "bob@x".into()
            })
        );
    }

    #[test]
    fn missing_arguments_get_the_usage() {
        assert_eq!(
            parse("link").expect_err("usage").plain,
            "Usage: link <jid> [--register]"
        );
        assert_eq!(
            parse("block").expect_err("usage").plain,
            "Usage: block <jid>"
        );
        assert_eq!(
            parse("start-chat").expect_err("usage").plain,
            "Usage: start-chat <jid>"
        );
        assert_eq!(
            parse("trust bob@x").expect_err("usage").plain,
            "Usage: trust <jid> <fingerprint>"
        );
    }

    #[test]
    fn invalid_command_gets_a_pointer_to_help_with_escaped_html() {
        let reply = parse("<b>x</b> y").expect_err("unknown");
        assert_eq!(
            reply.plain,
            "Unknown command \"<b>x</b>\". Say `help` for the list of commands."
        );
        assert!(
            reply
                .html
                .starts_with("Unknown command <code>&lt;b&gt;x&lt;/b&gt;</code>.")
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn help_lists_every_command() {
        let reply = static_reply(&Command::Help).expect("static");
        for (name, _) in COMMANDS {
            assert!(reply.plain.contains(name), "{name} missing from help");
            assert!(
                reply
                    .html
                    .contains(&format!("<code>{}</code>", html_escape(name))),
                "{name} missing"
            );
        }
    }
}
