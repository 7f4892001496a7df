//! The admin's offline commands, run as the binary: generate-config, generate-registration,
//! check-config; and `link`, `devices`, `safety-number`, `trust` and `untrust` when the bridge
//! is not running or their arguments are missing.

mod common;

use common::cli;

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn generate_config_prints_the_committed_example() {
    let (ok, out, _) = cli(&["generate-config"]);
    assert!(ok);
    assert_eq!(
        out,
        std::fs::read_to_string(common::repo().join("config.example.toml")).expect("example")
    );
}

#[test]
fn generate_config_rejects_bad_overrides() {
    let (ok, _, err) = cli(&["generate-config", "--set", "appservice.listen=nowhere"]);
    assert!(!ok);
    assert!(
        err.contains("key `appservice.listen`: not a socket address"),
        "{err}"
    );
    let (ok, _, err) = cli(&["generate-config", "--set", "appservice.nope=1"]);
    assert!(!ok);
    assert!(err.contains("unknown key `appservice.nope`"), "{err}");
}

#[test]
fn registration_then_check_config_then_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let (ok, text, _) = cli(&["generate-config", "--set", "homeserver.domain=hs.example"]);
    assert!(ok);
    std::fs::write(&config, &text).expect("write");

    let (ok, _, err) = cli(&["check-config", "-c", path_str(&config)]);
    assert!(!ok, "no registration yet");
    assert!(
        err.contains("key `appservice.registration`") && err.contains("generate-registration"),
        "{err}"
    );

    let (ok, _, err) = cli(&["generate-registration", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    let registration = dir.path().join("registration.yaml");
    let first = std::fs::read_to_string(&registration).expect("registration");
    assert!(
        first.contains("regex: ^@interop_.*:hs\\.example$"),
        "anchored at both ends: {first}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&registration)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let (ok, out, err) = cli(&["check-config", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    assert!(
        out.contains(": OK") && out.contains("warning: key `database.key` is not set"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("db.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("write");
    let keyed = text.replace("[database]\n", "[database]\nkey = { file = \"db.key\" }\n");
    std::fs::write(&config, &keyed).expect("write");
    let (ok, out, err) = cli(&["check-config", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    assert!(out.contains(": OK") && !out.contains("warning"), "{out}");
    std::fs::write(&config, &text).expect("write");

    // An earlier version's registration (regex not anchored at the end) still passes, warned.
    let legacy = first.replace(
        "regex: ^@interop_.*:hs\\.example$",
        "regex: '@interop_.*:hs\\.example'",
    );
    assert_ne!(legacy, first);
    std::fs::write(&registration, &legacy).expect("write");
    let (ok, out, err) = cli(&["check-config", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("warning") && out.contains("not anchored"),
        "{out}"
    );
    std::fs::write(&registration, &first).expect("write");

    // A CA file that does not exist, or holds no certificate, is named (`run` would refuse it).
    for (ca, want) in [
        ("missing-ca.pem", "key `network.ca_file`"),
        ("config.toml", "contains no PEM certificate"),
    ] {
        let with_ca = text.replace("[network]\n", &format!("[network]\nca_file = \"{ca}\"\n"));
        std::fs::write(&config, &with_ca).expect("write");
        let (ok, _, err) = cli(&["check-config", "-c", path_str(&config)]);
        assert!(!ok, "{ca} accepted");
        assert!(
            err.contains("key `network.ca_file`") && err.contains(want),
            "{err}"
        );
    }
    std::fs::write(&config, &text).expect("write");

    // Regenerating keeps the tokens the homeserver already has.
    let (ok, _, _) = cli(&["generate-registration", "-c", path_str(&config)]);
    assert!(ok);
    assert_eq!(
        std::fs::read_to_string(&registration).expect("registration"),
        first
    );

    // A config changed after registering no longer matches its registration.
    std::fs::write(
        &config,
        text.replace(
            "bot_localpart = \"interopbot\"",
            "bot_localpart = \"otherbot\"",
        ),
    )
    .expect("write");
    let (ok, _, err) = cli(&["check-config", "-c", path_str(&config)]);
    assert!(!ok);
    assert!(
        err.contains(
            "sender_localpart is \"interopbot\", appservice.bot_localpart is \"otherbot\""
        ),
        "{err}"
    );
}

/// check-config opens nothing but the database's key-check file: the right key passes, a
/// wrong or missing one is refused, a plain database is announced for encryption.
#[test]
fn check_config_checks_the_database_key() {
    use interop_bridge::store::{DatabaseKey, SledStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let (ok, text, _) = cli(&["generate-config"]);
    assert!(ok);
    let keyed = text.replace("[database]\n", "[database]\nkey = { file = \"db.key\" }\n");
    std::fs::write(&config, &keyed).expect("write");
    let (ok, _, err) = cli(&["generate-registration", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    let db = dir.path().join("interop-bridge.db");
    let check = || cli(&["check-config", "-c", path_str(&config)]);

    drop(SledStore::open(&db).expect("a plain database"));
    std::fs::write(dir.path().join("db.key"), "right key, 32 bytes of it......").expect("write");
    let (ok, out, err) = check();
    assert!(ok, "{err}");
    assert!(out.contains("encrypts it at its next start"), "{out}");

    std::fs::remove_dir_all(&db).expect("remove");
    let key = DatabaseKey::from_secret(b"right key, 32 bytes of it......").expect("key");
    drop(SledStore::open_with_key(&db, Some(&key)).expect("a sealed database"));
    let (ok, out, err) = check();
    assert!(ok, "{err}");
    assert!(!out.contains("warning") && !out.contains("note"), "{out}");

    std::fs::write(dir.path().join("db.key"), "a wrong key, also long enough..").expect("write");
    let (ok, _, err) = check();
    assert!(!ok);
    assert!(
        err.contains("key `database.key`") && err.contains("not the key"),
        "{err}"
    );
    std::fs::write(dir.path().join("db.key"), "short\n").expect("write");
    let (ok, _, err) = check();
    assert!(!ok && err.contains("at least 16"), "{err}");
    assert!(!err.contains("short"), "the key was printed: {err}");

    std::fs::write(&config, &text).expect("write");
    let (ok, _, err) = check();
    assert!(!ok);
    assert!(
        err.contains("the database is encrypted: set database.key"),
        "{err}"
    );
}

#[test]
fn check_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broken.toml");
    let cases = [
        (
            "[homeserver]\naddress = \"http://x\"\n",
            "key `homeserver`: missing field `domain`",
        ),
        (
            "[homeserver]\naddress = \"http://x\"\ndomain = \"x\"\n[appservice]\nlisten = 5\n",
            "key `appservice.listen`: invalid type: integer `5`",
        ),
        (
            "[homeserver]\naddress = \"gopher://x\"\ndomain = \"x\"\n",
            "key `homeserver.address`: expected an http://",
        ),
        ("[homeserver\n", "TOML syntax error at line 1"),
    ];
    for (text, want) in cases {
        std::fs::write(&config, text).expect("write");
        let (ok, _, err) = cli(&["check-config", "-c", path_str(&config)]);
        assert!(!ok, "{text}");
        assert!(
            err.contains(&format!("{}: ", config.display())),
            "file not named: {err}"
        );
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}

/// Every file the config names is read by check-config, and each failure names its key: the
/// CA file (present, PEM, certificates), the pins' syntax, the secret files.
#[test]
fn check_config_checks_every_file_and_the_tls_pins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let (ok, text, _) = cli(&["generate-config"]);
    assert!(ok);
    std::fs::write(&config, &text).expect("write");
    let (ok, _, err) = cli(&["generate-registration", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    let check = |body: &str| {
        std::fs::write(&config, body).expect("write");
        cli(&["check-config", "-c", path_str(&config)])
    };
    let network = |line: &str| text.replace("[network]\n", &format!("[network]\n{line}\n"));

    let missing = dir.path().join("missing-ca.pem");
    let (ok, _, err) = check(&network(&format!("ca_file = \"{}\"", missing.display())));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "key `network.ca_file`: {} does not exist",
            missing.display()
        )),
        "{err}"
    );

    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=ca",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let (ok, out, err) = check(&network("ca_file = \"ca.pem\""));
    assert!(ok, "{err}");
    assert!(out.contains("XMPP TLS: 1 CA certificate(s) from"), "{out}");

    let pin = "ab:".repeat(31) + "ab";
    let pinned = format!("{text}\n[network.tls_pins]\n\"xmpp.example\" = [\"{pin}\"]\n");
    let (ok, out, err) = check(&pinned);
    assert!(ok, "{err}");
    assert!(out.contains("pinned keys for xmpp.example"), "{out}");
    let (ok, _, err) = check(&pinned.replace(&pin, "abc"));
    assert!(!ok);
    assert!(
        err.contains("key `network.tls_pins")
            && err.contains("expected a SHA-256 as 64 hex digits (colons allowed), got \"abc\""),
        "{err}"
    );
    let (ok, _, err) = check(&pinned.replace(&format!("[\"{pin}\"]"), "[]"));
    assert!(!ok);
    assert!(
        err.contains("key `network.tls_pins.\"xmpp.example\"`: lists no pin"),
        "{err}"
    );

    for (section, line, key) in [
        (
            "[appservice]",
            "as_token = { file = \"as.token\" }",
            "appservice.as_token",
        ),
        (
            "[appservice]",
            "hs_token = { file = \"hs.token\" }",
            "appservice.hs_token",
        ),
        ("[database]", "key = { file = \"db.key\" }", "database.key"),
    ] {
        let body = text.replace(&format!("{section}\n"), &format!("{section}\n{line}\n"));
        let (ok, _, err) = check(&body);
        assert!(!ok, "{key} accepted");
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains("cannot read secret file"),
            "{err}"
        );
    }

    // Double puppeting needs its own registration file, which the registration above lacks.
    let puppets = text.replace("double_puppet = false\n", "double_puppet = true\n");
    assert_ne!(puppets, text);
    let (ok, _, err) = check(&puppets);
    assert!(!ok, "double puppeting without its registration accepted");
    assert!(
        err.contains("key `appservice.double_puppet`") && err.contains("generate-registration"),
        "{err}"
    );
    let (ok, _, err) = cli(&["generate-registration", "-c", path_str(&config)]);
    assert!(ok, "{err}");
    let (ok, _, err) = check(&puppets);
    assert!(ok, "{err}");
}

#[test]
fn link_without_a_running_bridge_or_a_password_source_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let (ok, text, _) = cli(&["generate-config"]);
    assert!(ok);
    std::fs::write(&config, text).expect("write");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret-pw-1\n").expect("write");
    let args = [
        "link",
        "-c",
        path_str(&config),
        "@a:example.org",
        "a@x.example",
    ];
    let (ok, _, err) = cli(&args);
    assert!(!ok);
    assert!(err.contains("--password-file"), "{err}");
    let mut with_pw = args.to_vec();
    with_pw.extend(["--password-file", path_str(&pw)]);
    let (ok, _, err) = cli(&with_pw);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the bridge") && err.contains("admin.socket"),
        "{err}"
    );
    assert!(
        !err.contains("secret-pw-1"),
        "the password was printed: {err}"
    );
    let mut empty = args.to_vec();
    let empty_file = dir.path().join("empty");
    std::fs::write(&empty_file, "\n").expect("write");
    empty.extend(["--password-file", path_str(&empty_file)]);
    let (ok, _, err) = cli(&empty);
    assert!(!ok && err.contains("the password is empty"), "{err}");
}

#[test]
fn device_commands_need_their_arguments_and_a_running_bridge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let (ok, text, _) = cli(&["generate-config"]);
    assert!(ok);
    std::fs::write(&config, text).expect("write");
    let c = path_str(&config);

    for (args, missing) in [
        (vec!["devices", "-c", c, "@a:example.org"], "<JID>"),
        (vec!["safety-number", "-c", c], "<USER>"),
        (
            vec!["trust", "-c", c, "@a:example.org", "b@x.example"],
            "<FINGERPRINT>",
        ),
        (
            vec!["untrust", "-c", c, "@a:example.org", "b@x.example"],
            "<FINGERPRINT>",
        ),
    ] {
        let (ok, out, err) = cli(&args);
        assert!(!ok, "{args:?} accepted");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("required arguments were not provided")
                && err.contains(missing)
                && err.contains(&format!("Usage: interop-bridge {}", args[0])),
            "{args:?}: {err}"
        );
    }
    let (ok, _, err) = cli(&["devices", "-c", c, "@a:example.org", "b@x", "extra"]);
    assert!(!ok && err.contains("unexpected argument 'extra'"), "{err}");

    for args in [
        vec!["devices", "-c", c, "@a:example.org", "b@x.example"],
        vec!["safety-number", "-c", c, "@a:example.org", "b@x.example"],
        vec![
            "trust",
            "-c",
            c,
            "@a:example.org",
            "b@x.example",
            "05ab",
            "cdef",
        ],
        vec![
            "untrust",
            "-c",
            c,
            "@a:example.org",
            "b@x.example",
            "05abcdef",
        ],
    ] {
        let (ok, out, err) = cli(&args);
        assert!(!ok, "{args:?} succeeded without a bridge");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("cannot reach the bridge") && err.contains("admin.socket"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help_lists_the_device_commands() {
    let (ok, out, _) = cli(&["--help"]);
    assert!(ok);
    for name in ["devices", "safety-number", "trust", "untrust"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "{name} missing: {out}"
        );
    }
    let (ok, out, _) = cli(&["trust", "--help"]);
    assert!(ok);
    assert!(
        out.contains("<USER> <JID> <FINGERPRINT>...") && out.contains("groups"),
        "{out}"
    );
}
