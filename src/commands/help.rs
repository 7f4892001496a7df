//! `help`: lists the commands.

use super::{COMMANDS, Reply, html_escape};

pub(super) fn reply() -> Reply {
    let mut plain = String::from("Commands (say them in this room):\n");
    let mut html = String::from("<p>Commands (say them in this room):</p><ul>");
    for (name, what) in COMMANDS {
        plain.push_str(&format!("- {name}: {what}\n"));
        html.push_str(&format!(
            "<li><code>{}</code>: {}</li>",
            html_escape(name),
            html_escape(what)
        ));
    }
    html.push_str("</ul>");
    Reply { plain, html }
}
