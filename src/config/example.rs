//! `generate-config`: the commented example, rendered from [`Config`] values and a table of
//! comments. A test checks that every key has a comment and every comment a key, so the example
//! cannot drift from the struct.

use toml::{Table, Value};

use super::Config;

/// Comments per key (dotted path); a section's comment is under its name.
pub(super) const DOCS: &[(&str, &str)] = &[
    (
        "homeserver",
        "The Matrix homeserver the bridge is registered with.",
    ),
    (
        "homeserver.address",
        "Client-server API URL the bridge uses to reach the homeserver.",
    ),
    (
        "homeserver.domain",
        "The homeserver's server_name: the part after ':' in user IDs.",
    ),
    (
        "appservice",
        "The appservice: how the homeserver reaches the bridge, and who the bridge is.",
    ),
    (
        "appservice.id",
        "Registration id; must match `id` in the registration file.",
    ),
    (
        "appservice.address",
        "URL the homeserver uses to reach the bridge (the registration's `url`).",
    ),
    (
        "appservice.listen",
        "Address and port the bridge listens on (host:port).",
    ),
    (
        "appservice.bot_localpart",
        "Localpart of the bridge bot (the registration's sender_localpart).",
    ),
    (
        "appservice.bot_displayname",
        "Display name of the bridge bot.",
    ),
    (
        "appservice.ghost_prefix",
        "Localpart prefix of ghost users: bob@xmpp.example becomes @<prefix>bob=40xmpp.example.\n\
         Changing it after users have chatted orphans the existing ghosts.",
    ),
    (
        "appservice.registration",
        "Registration file written by `generate-registration`; `run` reads the as_token and\n\
         hs_token from it. Relative paths are relative to this config file.",
    ),
    (
        "appservice.max_transaction_bytes",
        "Largest transaction body (bytes) accepted from the homeserver.",
    ),
    (
        "appservice.double_puppet",
        "Double puppeting: messages the user sends from their other XMPP clients (carbons)\n\
         appear as sent by their own Matrix user, in portals without encryption. Needs a second\n\
         registration, written by `generate-registration` next to the first\n\
         (<registration>-doublepuppet.yaml), loaded by the homeserver too (see the admin guide).\n\
         Off, or where it cannot be used, the contact's ghost posts them as a notice\n\
         (\"↗ You wrote from another device: …\").",
    ),
    (
        "appservice.message_status_events",
        "A contact's delivery receipt (XEP-0184) becomes a `com.beeper.message_send_status`\n\
         event on the user's message: one more post and echo per message. Beeper's clients\n\
         show it as \"delivered\"; Element does not show it. Off by default, as in mautrix.",
    ),
    (
        "database",
        "Where the bridge keeps its state (sled): mappings, keys, processed transactions.",
    ),
    (
        "database.path",
        "Directory of the database, relative to this config file unless absolute.",
    ),
    (
        "logging",
        "Logging. Message bodies, tokens and keys are never logged.",
    ),
    (
        "logging.level",
        "A tracing filter directive (e.g. \"info\" or \"interop_bridge=debug,info\");\n\
         the RUST_LOG environment variable overrides it.",
    ),
    (
        "network",
        "The interop network (XMPP + OMEMO): how linked identities connect.",
    ),
    (
        "network.tls",
        "\"starttls\" (port 5222) or \"direct\" (TLS from the first byte, XEP-0368).",
    ),
    (
        "network.resource",
        "The XMPP resource of every linked identity. Fixed, so that after a restart the server\n\
         hands back what it held for the previous connection. Contacts can see it.",
    ),
    (
        "network.allow_register",
        "Offer `link --register`: create the account by in-band registration (XEP-0077). Off\n\
         by default: with it, any user of the homeserver can make the bridge create accounts\n\
         on (or probe port 5222 of) any XMPP server.",
    ),
    (
        "network.allowed_domains",
        "The XMPP domains whose accounts users may link, like [\"example.org\"]; [\"*\"] allows\n\
         any. Empty: the domains of `network.servers`; or any domain when `network.server` is\n\
         set (every login then connects to that one server); or none, since a user could\n\
         otherwise make the bridge connect to port 5222 of any host.",
    ),
    (
        "network.trust",
        "When a contact's device changes its identity key, or a contact who already has\n\
         devices adds one: \"trust-on-first-use\" encrypts to it and says so in the chat;\n\
         \"strict\" says so and does not encrypt to it until the user says `trust <jid>\n\
         <fingerprint>` to the bot. A contact's devices met in the first chat are trusted\n\
         either way.",
    ),
    (
        "network.omemo",
        "The OMEMO versions the bridge speaks: \"both\" writes OMEMO 2 (urn:xmpp:omemo:2) to a\n\
         contact whose client announces it and legacy OMEMO (eu.siacs.conversations.axolotl,\n\
         what Conversations and Dino speak) to the others, and reads either; \"legacy\" or\n\
         \"omemo2\" speak only that one (a contact without it cannot be written to). A device\n\
         has one fingerprint in both.",
    ),
    (
        "network.unencrypted",
        "A message a contact sends without encryption (no OMEMO): \"bridge\" shows it in the\n\
         chat marked as unencrypted; \"reject\" refuses it (the contact gets an error, the\n\
         chat a notice).",
    ),
    (
        "network.requests",
        "Who may open a message request (a chat from someone outside the user's roster):\n\
         \"anyone\", or \"roster-only\" (other contacts' messages are dropped unseen).",
    ),
    (
        "network.max_requests_per_hour",
        "At most this many new message requests per linked identity in one hour: a stranger\n\
         (or a server) cannot flood a user with chats. Later ones are dropped; the user is told.",
    ),
    (
        "network.catch_up_limit",
        "After the bridge was stopped or lost its connection, it fetches what reached the account\n\
         meanwhile from the server's archive (XEP-0313 MAM; the server must keep one, e.g.\n\
         Prosody's mod_mam), oldest first, at most this many messages per linked identity; the\n\
         user is told when more were skipped. 0: off. A newly linked account starts from its\n\
         first message after the link.",
    ),
    (
        "network.presence_refresh_secs",
        "A contact's presence (online, away with their status text, offline) is shown on their\n\
         ghost. The homeserver times a presence out (Synapse: after 30 s, its\n\
         `presence.sync_online_timeout`), so the bridge sets it again every this many seconds\n\
         for each contact who is online: one request per online contact per period. 0: presence\n\
         is not bridged. The user's own Matrix presence is never sent to contacts.",
    ),
    (
        "network.send_timeout_secs",
        "Seconds after which the user is told a message is waiting: for the XMPP server to \
         confirm it (a slow or frozen server), or for the account to connect. The message is not \
         given up: it goes out, once, when the server answers or the account is back.",
    ),
    (
        "encryption",
        "End-to-bridge encryption on the Matrix side: the bot and each ghost get their own\n\
         device, cross-signed by their own identity, and encrypted rooms are decrypted and\n\
         re-encrypted at the bridge. Needs the homeserver to give appservices MSC4190 devices,\n\
         MSC3202 key counts and MSC4203 to-device events (see docs/admin-guide.md).",
    ),
    (
        "encryption.enabled",
        "Read and write encrypted rooms. When false, encrypted messages get a notice instead.",
    ),
    (
        "encryption.default",
        "Whether the portals the bridge creates are encrypted (the user's own rooms keep theirs).",
    ),
    (
        "encryption.key_wait_secs",
        "Seconds a message waits for its room key before the sender is told it could not be read.",
    ),
    (
        "encryption.store",
        "Directory of the crypto stores (one SQLite database per device), relative to this file.",
    ),
    (
        "media",
        "Files both ways: images, video, voice messages and other files are fetched, decrypted\n\
         and re-encrypted at the bridge (XEP-0363 uploads with XEP-0454 `aesgcm://` links on\n\
         XMPP; authenticated media, encrypted attachments in encrypted rooms, on Matrix),\n\
         streamed: nothing of a file is kept beyond its transfer.",
    ),
    (
        "media.enabled",
        "Bridge files. When false, the sender is told a file was not bridged.",
    ),
    (
        "media.max_bytes",
        "The largest file bridged, in bytes. The homeserver's (`m.upload.size`) and the XMPP\n\
         server's (`max-file-size`) limits apply too; the smallest wins, and the sender is told.",
    ),
    (
        "media.allowed_private_hosts",
        "A contact's file link is never fetched from a loopback, private, link-local (cloud\n\
         metadata) or otherwise special address, unless its host name is listed here: for an\n\
         XMPP server's upload service on a private network, e.g. [\"upload.internal\"].",
    ),
    (
        "media.stall_timeout_secs",
        "Seconds a file transfer may go without a byte before it is given up.",
    ),
    (
        "admin",
        "The local admin socket used by `interop-bridge link/unlink/identities/status`.",
    ),
    (
        "admin.socket",
        "Unix socket path, relative to this config file unless absolute. Anyone who can open\n\
         it can link identities: it is created readable and writable by its owner only.",
    ),
];

/// Optional keys, absent from the defaults, shown commented out under their section.
pub(super) const OPTIONAL: &[(&str, &str, &str)] = &[
    (
        "appservice.as_token",
        r#"{ env = "INTEROP_BRIDGE_AS_TOKEN" }"#,
        "Optional: take the as_token from elsewhere than the registration file:\n\
         a literal \"...\", { file = \"path\" } or { env = \"VARIABLE\" }.",
    ),
    (
        "appservice.hs_token",
        r#"{ file = "/run/secrets/hs_token" }"#,
        "Optional: the hs_token, likewise.",
    ),
    (
        "database.key",
        r#"{ file = "/run/secrets/interop-bridge-db-key" }"#,
        "Optional: encrypt the bridge's secrets at rest (XMPP passwords, OMEMO private keys and\n\
         sessions, queued events, and new Matrix crypto stores) with this key: a random key file\n\
         (e.g. `openssl rand -base64 32`), { env = \"VARIABLE\" } or a literal \"...\" of at\n\
         least 16 bytes. Unset, they are stored in the clear (check-config warns). Setting it on\n\
         an existing database encrypts it at the next start. Keep a copy: without it the\n\
         database cannot be opened and every identity must be linked again.",
    ),
    (
        "network.server",
        r#""xmpp.example.org:5222""#,
        "Optional: host:port every login connects to. Unset, a login finds its domain's server\n\
         through DNS SRV records (_xmpps-client._tcp with direct TLS, _xmpp-client._tcp with\n\
         STARTTLS, RFC 6120 and XEP-0368), and else connects to the domain on port 5222.",
    ),
    (
        "network.servers",
        r#"{ "xmpp.example.net" = "c2s.example.net:5222" }"#,
        "Optional: per XMPP domain, the host:port its accounts connect to. A JID whose domain\n\
         is listed connects there; any other uses `server` above, or else DNS SRV discovery.\n\
         Also written as a table: [network.servers] then \"xmpp.example.net\" = \"host:port\".",
    ),
    (
        "network.dns_server",
        r#""127.0.0.53:53""#,
        "Optional: a nameserver (ip:port) asked for the SRV records and addresses of XMPP\n\
         servers instead of the system's (/etc/resolv.conf), e.g. for split DNS.",
    ),
    (
        "network.ca_file",
        r#""/etc/ssl/private-ca.pem""#,
        "Optional: extra CA certificates (PEM, one file, several allowed) to trust, for\n\
         private XMPP servers.",
    ),
    (
        "network.tls_pins",
        r#"{ "xmpp.example.net" = ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"] }"#,
        "Optional: per XMPP domain, the public keys its server's certificate may have, for a\n\
         self-signed certificate (a CA's goes in ca_file): the SHA-256 of the certificate's\n\
         SubjectPublicKeyInfo in hex (colons allowed), as printed by\n\
         openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256\n\
         A pinned domain accepts exactly these keys and no CA's. A refused certificate's error\n\
         shows its hash. Also written as a table: [network.tls_pins] then \"domain\" = [\"...\"].",
    ),
];

fn doc(key: &str) -> &'static str {
    DOCS.iter().find(|(k, _)| *k == key).map_or("", |(_, d)| d)
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

fn key_line(key: &str, value: &Value) -> String {
    // `Value`'s Display writes the inline form (`{ env = "V" }` for tables); our keys are bare.
    format!("{key} = {value}\n")
}

/// Renders `config` as a commented TOML file.
pub fn render_example(config: &Config) -> String {
    let table = Table::try_from(config).expect("Config always serializes to a table");
    let mut out = String::from(
        "# interop-bridge configuration. Generated by `interop-bridge generate-config`.\n\
         # Check it with `interop-bridge check-config -c <file>`.\n",
    );
    for (section, value) in &table {
        let Value::Table(fields) = value else {
            continue;
        };
        out.push('\n');
        comment(&mut out, doc(section));
        out.push_str(&format!("[{section}]\n"));
        for (key, value) in fields {
            comment(&mut out, doc(&format!("{section}.{key}")));
            out.push_str(&key_line(key, value));
        }
        for (path, example, text) in OPTIONAL {
            if let Some(key) = path.strip_prefix(&format!("{section}."))
                && !fields.contains_key(key)
            {
                comment(&mut out, text);
                out.push_str(&format!("# {key} = {example}\n"));
            }
        }
    }
    out
}

/// Applies one `KEY=VALUE` override (dotted key) to `config`. The value is read as TOML when it
/// parses as a TOML value (`true`, `8`, `"x"`, `{ env = "V" }`), otherwise as a string.
pub fn apply_override(config: &Config, assignment: &str) -> Result<Config, String> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("{assignment:?}: expected KEY=VALUE"))?;
    let key = key.trim();
    let value = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()));
    let mut table = Table::try_from(config).expect("Config always serializes to a table");
    let known = DOCS.iter().any(|(k, _)| *k == key) || OPTIONAL.iter().any(|(k, ..)| *k == key);
    let Some((section, field)) = key.split_once('.').filter(|_| known) else {
        return Err(format!("unknown key `{key}`"));
    };
    match table.get_mut(section) {
        Some(Value::Table(fields)) => fields.insert(field.to_owned(), value),
        _ => return Err(format!("unknown section `{section}`")),
    };
    let text = toml::to_string(&table).map_err(|e| format!("`{key}`: {e}"))?;
    let mut updated = Config::parse(&text)
        .map_err(|(k, reason)| format!("`{}`: {reason}", k.as_deref().unwrap_or(key)))?;
    updated.base_dir = config.base_dir.clone();
    Ok(updated)
}
