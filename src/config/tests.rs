use std::path::Path;

use super::example::{DOCS, OPTIONAL};
use super::*;

const MINIMAL: &str = "[homeserver]\naddress = \"http://127.0.0.1:8008\"\ndomain = \"localhost\"\n";

fn parse_err(text: &str) -> (Option<String>, String) {
    Config::parse(text).expect_err("should not parse")
}

fn validate_err(extra: &str) -> (String, String) {
    let mut config = Config::parse(&format!("{MINIMAL}{extra}")).expect("parses");
    config.base_dir = ".".into();
    config.validate().expect_err("should not validate")
}

#[test]
fn example_round_trips_through_its_rendering() {
    let text = render_example(&Config::example());
    let mut parsed = Config::parse(&text).expect("the example parses");
    parsed.base_dir = ".".into();
    assert_eq!(parsed, Config::example());
    parsed.validate().expect("the example validates");
}

#[test]
fn config_example_toml_is_the_generated_example() {
    let committed = include_str!("../../config.example.toml");
    assert_eq!(
        committed,
        render_example(&Config::example()),
        "run: interop-bridge generate-config > config.example.toml"
    );
}

#[test]
fn every_key_is_documented_and_every_doc_is_a_key() {
    let table = toml::Table::try_from(Config::example()).expect("serializes");
    let mut keys = Vec::new();
    for (section, value) in &table {
        keys.push(section.clone());
        for field in value.as_table().expect("sections are tables").keys() {
            keys.push(format!("{section}.{field}"));
        }
    }
    for key in &keys {
        assert!(
            DOCS.iter().any(|(k, d)| k == key && !d.is_empty()),
            "no comment for `{key}`"
        );
    }
    for (key, _) in DOCS {
        assert!(
            keys.iter().any(|k| k == key),
            "comment for unknown key `{key}`"
        );
    }
    for (key, example, _) in OPTIONAL {
        let (section, field) = key.split_once('.').expect("dotted");
        let text = format!("{MINIMAL}[{section}]\n{field} = {example}\n");
        Config::parse(&text)
            .unwrap_or_else(|e| panic!("optional example `{key}` does not parse: {e:?}"));
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let config = Config::parse(MINIMAL).expect("parses");
    assert_eq!(config.appservice, AppserviceConfig::default());
    assert_eq!(config.database.path, Path::new("interop-bridge.db"));
    config.validate().expect("valid");
}

#[test]
fn network_omemo_is_both_by_default_and_takes_the_three_choices() {
    assert_eq!(
        Config::parse(MINIMAL).expect("parses").network.omemo,
        OmemoChoice::Both
    );
    for (text, choice) in [
        ("legacy", OmemoChoice::Legacy),
        ("omemo2", OmemoChoice::Omemo2),
        ("both", OmemoChoice::Both),
    ] {
        let config =
            Config::parse(&format!("{MINIMAL}[network]\nomemo = \"{text}\"\n")).expect("parses");
        assert_eq!(config.network.omemo, choice);
    }
    let (key, reason) = parse_err(&format!("{MINIMAL}[network]\nomemo = \"2\"\n"));
    assert_eq!(key.as_deref(), Some("network.omemo"));
    assert!(reason.contains("unknown variant `2`"), "{reason}");
}

#[test]
fn invalid_missing_domain_names_the_section_and_field() {
    let (key, reason) = parse_err("[homeserver]\naddress = \"http://x\"\n");
    assert_eq!(key.as_deref(), Some("homeserver"));
    assert_eq!(reason, "missing field `domain`");
}

#[test]
fn invalid_unknown_key_is_rejected() {
    let (key, reason) = parse_err(&format!("{MINIMAL}[appservice]\nprot = 1\n"));
    assert_eq!(key.as_deref(), Some("appservice.prot"));
    assert!(reason.starts_with("unknown field `prot`"), "{reason}");
}

#[test]
fn invalid_type_names_the_key() {
    let (key, reason) = parse_err(&format!(
        "{MINIMAL}[appservice]\nmax_transaction_bytes = \"big\"\n"
    ));
    assert_eq!(key.as_deref(), Some("appservice.max_transaction_bytes"));
    assert!(reason.contains("invalid type: string \"big\""), "{reason}");
}

#[test]
fn invalid_syntax_gives_line_and_column() {
    let (key, reason) = parse_err("[homeserver]\naddress = \"http://x\"\ndomain = \n");
    assert_eq!(key, None);
    assert!(
        reason.starts_with("TOML syntax error at line 3, column 10"),
        "{reason}"
    );
}

#[test]
fn invalid_values_are_caught_by_validate() {
    let cases = [
        (
            "[appservice]\nlisten = \"localhost\"\n",
            "appservice.listen",
            "not a socket address",
        ),
        (
            "[appservice]\naddress = \"ftp://x\"\n",
            "appservice.address",
            "expected an http://",
        ),
        (
            "[appservice]\nbot_localpart = \"Bot\"\n",
            "appservice.bot_localpart",
            "'B' is not allowed",
        ),
        (
            "[appservice]\nbot_localpart = \"interop_bot\"\n",
            "appservice.bot_localpart",
            "must not start with",
        ),
        (
            "[appservice]\nghost_prefix = \"\"\n",
            "appservice.ghost_prefix",
            "must not be empty",
        ),
        (
            "[appservice]\nmax_transaction_bytes = 10\n",
            "appservice.max_transaction_bytes",
            "at least",
        ),
        (
            "[network]\nserver = \"xmpp.example.org\"\n",
            "network.server",
            "expected host:port",
        ),
        (
            "[network.servers]\n\"xmpp2.test\" = \"127.0.0.1\"\n",
            "network.servers.\"xmpp2.test\"",
            "expected host:port, got \"127.0.0.1\"",
        ),
        (
            "[network.servers]\n\"xmpp2.test\" = \"host:99999\"\n",
            "network.servers.\"xmpp2.test\"",
            "expected host:port",
        ),
        (
            "[network.servers]\n\"xmpp2.test\" = \":5222\"\n",
            "network.servers.\"xmpp2.test\"",
            "expected host:port",
        ),
        (
            "[network.servers]\n\"alice@xmpp2.test\" = \"h:5222\"\n",
            "network.servers.\"alice@xmpp2.test\"",
            "must be an XMPP domain",
        ),
        (
            "[logging]\nlevel = \"a=b=c\"\n",
            "logging.level",
            "not a valid filter",
        ),
    ];
    for (extra, want_key, want_reason) in cases {
        let (key, reason) = validate_err(extra);
        assert_eq!(key, want_key, "{extra}");
        assert!(reason.contains(want_reason), "{extra}: {reason}");
    }
    let mut bad_domain = Config::parse(MINIMAL).expect("parses");
    bad_domain.homeserver.domain = "bad domain".into();
    assert_eq!(
        bad_domain.validate().expect_err("invalid").0,
        "homeserver.domain"
    );
}

#[test]
fn load_error_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{MINIMAL}[appservice]\nlisten = \"nope\"\n")).expect("write");
    let err = Config::load(&path).expect_err("invalid");
    assert_eq!(err.key.as_deref(), Some("appservice.listen"));
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: key `appservice.listen`: ", path.display())),
        "{shown}"
    );
    let missing = Config::load(&dir.path().join("absent.toml")).expect_err("missing file");
    assert_eq!(missing.key, None);
    assert!(missing.to_string().contains("cannot read"));
}

#[test]
fn secrets_resolve_from_each_source_and_never_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tok"), "from-file\n").expect("write");
    let file = SecretSource::File { file: "tok".into() };
    assert_eq!(
        file.resolve(dir.path()).expect("file").expose(),
        "from-file"
    );
    let inline = SecretSource::Inline("s3cret".into());
    assert_eq!(
        inline.resolve(dir.path()).expect("inline").expose(),
        "s3cret"
    );
    assert!(!format!("{inline:?}").contains("s3cret"));
    assert!(!format!("{:?}", inline.resolve(dir.path()).expect("inline")).contains("s3cret"));
    let env = SecretSource::Env {
        env: "INTEROP_BRIDGE_TEST_UNSET_VAR".into(),
    };
    assert_eq!(
        env.resolve(dir.path()).expect_err("unset"),
        "environment variable INTEROP_BRIDGE_TEST_UNSET_VAR is not set or not UTF-8"
    );
    let missing = SecretSource::File {
        file: "nope".into(),
    };
    assert!(
        missing
            .resolve(dir.path())
            .expect_err("missing")
            .starts_with("cannot read secret file")
    );
    let parsed = Config::parse(&format!(
        "{MINIMAL}[appservice]\nas_token = {{ env = \"X\" }}\n"
    ))
    .expect("parses");
    assert_eq!(
        parsed.appservice.as_token,
        Some(SecretSource::Env { env: "X".into() })
    );
}

#[test]
fn database_key_parses_from_each_source_and_a_key_file_may_be_binary() {
    let parsed = Config::parse(&format!(
        "{MINIMAL}[database]\nkey = {{ file = \"db.key\" }}\n"
    ))
    .expect("parses");
    assert_eq!(
        parsed.database.key,
        Some(SecretSource::File {
            file: "db.key".into()
        })
    );
    assert_eq!(Config::parse(MINIMAL).expect("parses").database.key, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = [0xFF, 0x00, 0x80, b'k', 0xC3];
    std::fs::write(dir.path().join("db.key"), [&binary[..], b"\n"].concat()).expect("write");
    let key = parsed.database.key.as_ref().expect("set");
    assert_eq!(key.resolve_bytes(dir.path()).expect("bytes"), binary);
    assert!(key.resolve(dir.path()).is_err(), "not UTF-8 for resolve");
    let inline = SecretSource::Inline("passphrase".into());
    assert_eq!(
        inline.resolve_bytes(dir.path()).expect("inline"),
        b"passphrase"
    );
    std::fs::write(dir.path().join("empty"), "\n").expect("write");
    let empty = SecretSource::File {
        file: "empty".into(),
    };
    assert_eq!(
        empty.resolve_bytes(dir.path()).expect_err("empty"),
        "the secret is empty"
    );
}

#[test]
fn overrides_set_typed_and_string_values() {
    let base = Config::example();
    let c = apply_override(&base, "homeserver.address=http://127.0.0.1:8008").expect("string");
    assert_eq!(c.homeserver.address, "http://127.0.0.1:8008");
    let c = apply_override(&c, "appservice.listen=127.0.0.1:29999").expect("string");
    assert_eq!(c.appservice.listen, "127.0.0.1:29999");
    let c = apply_override(&c, "appservice.max_transaction_bytes=100000").expect("int");
    assert_eq!(c.appservice.max_transaction_bytes, 100_000);
    let c = apply_override(&c, "appservice.as_token={ env = \"T\" }").expect("table");
    assert_eq!(
        c.appservice.as_token,
        Some(SecretSource::Env { env: "T".into() })
    );
    assert!(render_example(&c).contains("as_token = { env = \"T\" }"));
    assert_eq!(
        apply_override(&base, "nope.x=1").expect_err("unknown"),
        "unknown key `nope.x`"
    );
    assert_eq!(
        apply_override(&base, "justakey").expect_err("no ="),
        "\"justakey\": expected KEY=VALUE"
    );
    let err = apply_override(&base, "appservice.max_transaction_bytes=\"x\"").expect_err("type");
    assert!(
        err.starts_with("`appservice.max_transaction_bytes`: invalid type"),
        "{err}"
    );
}

#[test]
fn network_servers_parse_as_a_table_or_inline() {
    let table = "[network]\nserver = \"a.example:5222\"\n[network.servers]\n\"xmpp2.test\" = \"127.0.0.1:5223\"\n";
    let inline = "[network]\nservers = { \"xmpp2.test\" = \"127.0.0.1:5223\" }\nserver = \"a.example:5222\"\n";
    for extra in [table, inline] {
        let config = Config::parse(&format!("{MINIMAL}{extra}")).expect("parses");
        config.validate().expect("valid");
        assert_eq!(
            config.network.servers.get("xmpp2.test").map(String::as_str),
            Some("127.0.0.1:5223")
        );
        assert_eq!(config.network.server.as_deref(), Some("a.example:5222"));
    }
    // A configured map survives generate-config's rendering.
    let config = apply_override(
        &Config::example(),
        "network.servers={ \"xmpp2.test\" = \"127.0.0.1:5223\" }",
    )
    .expect("override");
    let mut again = Config::parse(&render_example(&config)).expect("rendered parses");
    again.base_dir = config.base_dir.clone();
    assert_eq!(again, config);
}

#[test]
fn network_dns_server_is_an_ip_and_port() {
    let config = Config::parse(&format!(
        "{MINIMAL}[network]\ndns_server = \"127.0.0.53:53\"\n"
    ))
    .expect("parses");
    config.validate().expect("valid");
    assert_eq!(config.network.dns_server.as_deref(), Some("127.0.0.53:53"));
    let v6 = Config::parse(&format!(
        "{MINIMAL}[network]\ndns_server = \"[::1]:5353\"\n"
    ))
    .expect("parses");
    v6.validate().expect("an IPv6 nameserver is valid");
    for bad in ["ns1.example.org:53", "127.0.0.53", "127.0.0.53:99999", ""] {
        let (key, reason) = validate_err(&format!("[network]\ndns_server = \"{bad}\"\n"));
        assert_eq!(key, "network.dns_server", "{bad}");
        assert!(
            reason.contains("expected an IP address and port"),
            "{bad}: {reason}"
        );
    }
    assert_eq!(
        Config::parse(MINIMAL).expect("parses").network.dns_server,
        None
    );
}

#[test]
fn media_settings_are_checked() {
    let good = "[media]\nmax_bytes = 1000\nallowed_private_hosts = [\"upload.internal\", \"127.0.0.1\", \"::1\", \"[fd00::1]\"]\n";
    let config = Config::parse(&format!("{MINIMAL}{good}")).expect("parses");
    config.validate().expect("valid");
    for (bad, key) in [
        ("max_bytes = 0", "media.max_bytes"),
        ("stall_timeout_secs = 0", "media.stall_timeout_secs"),
        (
            "allowed_private_hosts = [\"https://upload.internal\"]",
            "media.allowed_private_hosts",
        ),
        (
            "allowed_private_hosts = [\"upload.internal:5281\"]",
            "media.allowed_private_hosts",
        ),
        (
            "allowed_private_hosts = [\"\"]",
            "media.allowed_private_hosts",
        ),
    ] {
        let config = Config::parse(&format!("{MINIMAL}[media]\n{bad}\n")).expect("parses");
        let (got, reason) = config.validate().expect_err(bad);
        assert_eq!(got, key, "{bad}: {reason}");
    }
    assert!(
        Config::example().media.enabled,
        "files are bridged by default"
    );
}

#[test]
fn network_tls_pins_parse_per_domain_and_name_a_bad_one() {
    let pin = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let colons = pin
        .as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).expect("ascii").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let config = Config::parse(&format!(
        "{MINIMAL}[network.tls_pins]\n\"xmpp.test\" = [\"{pin}\", \"{colons}\"]\n"
    ))
    .expect("parses");
    config.validate().expect("valid");
    let pins = &config.network.tls_pins["xmpp.test"];
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[0], pins[1]);
    assert_eq!(pins[0].to_string(), pin);
    assert!(
        Config::parse(MINIMAL)
            .expect("parses")
            .network
            .tls_pins
            .is_empty()
    );

    let (key, reason) = parse_err(&format!(
        "{MINIMAL}[network.tls_pins]\n\"xmpp.test\" = [\"{pin}\", \"beef\"]\n"
    ));
    assert_eq!(key.as_deref(), Some("network.tls_pins.xmpp.test[1]"));
    assert_eq!(
        reason,
        "expected a SHA-256 as 64 hex digits (colons allowed), got \"beef\""
    );
    let (key, reason) = validate_err("[network.tls_pins]\n\"xmpp.test\" = []\n");
    assert_eq!(key, "network.tls_pins.\"xmpp.test\"");
    assert_eq!(reason, "lists no pin (remove the domain instead)");
    let (key, _) = validate_err(&format!("[network.tls_pins]\n\"a@b\" = [\"{pin}\"]\n"));
    assert_eq!(key, "network.tls_pins.\"a@b\"");

    // A configured map survives generate-config's rendering.
    let config = apply_override(
        &Config::example(),
        &format!("network.tls_pins={{ \"xmpp.test\" = [\"{pin}\"] }}"),
    )
    .expect("override");
    let mut again = Config::parse(&render_example(&config)).expect("rendered parses");
    again.base_dir = config.base_dir.clone();
    assert_eq!(again, config);
}
