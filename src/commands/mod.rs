//! Management-room commands: parsing and the answers. One file per command; the bot's vocabulary
//! is the CLI's (`help`, `version`, and later `link`, `unlink`, `identities`, `status`).

mod help;
mod version;

/// A command said in a management room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
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
];

/// Parses a message body. `Err` carries the answer to an unknown command.
pub fn parse(body: &str) -> Result<Command, Reply> {
    let word = body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match word.as_str() {
        "help" => Ok(Command::Help),
        "version" => Ok(Command::Version),
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

/// Runs a parsed command.
pub fn run(command: &Command) -> Reply {
    match command {
        Command::Help => help::reply(),
        Command::Version => version::reply(),
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
        let reply = run(&Command::Help);
        for (name, _) in COMMANDS {
            assert!(reply.plain.contains(name), "{name} missing from help");
            assert!(
                reply.html.contains(&format!("<code>{name}</code>")),
                "{name} missing"
            );
        }
    }
}
