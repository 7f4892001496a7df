//! `version`: the bridge's name and version.

use super::Reply;

pub(super) fn reply() -> Reply {
    let text = format!("interop-bridge {}", env!("CARGO_PKG_VERSION"));
    Reply {
        html: text.clone(),
        plain: text,
    }
}
