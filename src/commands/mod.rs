//! Management-room commands: parsing and the static answers. The bot's vocabulary is the CLI's
//! (`link`, `unlink`, `identities`, `status`); commands that act on the bridge are run by the
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
