#!/usr/bin/env python3
"""Generate a self-contained Synapse test config under STATE_DIR/synapse.

  gen_synapse.py --state-dir STATE [--server-name localhost] [--port 8008] [--appservice REG.yaml ...]

Idempotent: secrets are created once and reused (STATE_DIR/synapse/secrets.json).
Writes: homeserver.yaml (JSON, which is valid YAML), log.config, <server_name>.signing.key and
secrets.json (registration shared secret, port, base URL) for test code to read.

The appservice registrations Synapse loads are exactly the --appservice files (for example the
bridge's own registration.yaml); with none, Synapse runs without any appservice.

Only binds 127.0.0.1. SQLite. Rate limits raised. Experimental features for end-to-bridge
encryption turned on (MSC2409 to-device, MSC3202 transaction extensions / masquerading).
Needs the world venv (signedjson) only to create the signing key the first time.
"""
import argparse
import json
import os
import secrets
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--port", type=int, default=8008)
    p.add_argument("--appservice", action="append", default=[], metavar="REGISTRATION",
                   help="appservice registration file Synapse loads (repeatable)")
    args = p.parse_args()

    as_files = []
    for f in args.appservice:
        f = os.path.abspath(f)
        if not os.path.isfile(f):
            p.error("appservice registration %s does not exist" % f)
        as_files.append(f)

    d = os.path.join(os.path.abspath(args.state_dir), "synapse")
    os.makedirs(os.path.join(d, "media_store"), exist_ok=True)
    sec_path = os.path.join(d, "secrets.json")
    if os.path.exists(sec_path):
        with open(sec_path) as f:
            sec = json.load(f)
    else:
        sec = {
            "registration_shared_secret": secrets.token_hex(24),
            "macaroon_secret_key": secrets.token_hex(24),
            "form_secret": secrets.token_hex(24),
        }
    sec.update(
        server_name=args.server_name,
        port=args.port,
        base_url="http://127.0.0.1:%d" % args.port,
        app_service_config_files=as_files,
    )
    tmp = sec_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(sec, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, sec_path)

    # Signing key (same format as `generate_signing_key`).
    key_path = os.path.join(d, "%s.signing.key" % args.server_name)
    if not os.path.exists(key_path):
        from signedjson.key import generate_signing_key, write_signing_keys

        with open(key_path, "w") as f:
            write_signing_keys(f, [generate_signing_key("auto")])

    log_path = os.path.join(d, "homeserver.log")
    with open(os.path.join(d, "log.config"), "w") as f:
        f.write(
            f"""version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {json.dumps(log_path)}
    encoding: utf8
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""
        )

    rl = {"per_second": 10000, "burst_count": 100000}
    hs = {
        "server_name": args.server_name,
        "public_baseurl": "http://127.0.0.1:%d/" % args.port,
        "pid_file": os.path.join(d, "homeserver.pid"),
        "listeners": [
            {
                "port": args.port,
                "tls": False,
                "type": "http",
                "x_forwarded": False,
                "bind_addresses": ["127.0.0.1"],
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {
            "name": "sqlite3",
            "args": {"database": os.path.join(d, "homeserver.db")},
        },
        "log_config": os.path.join(d, "log.config"),
        "media_store_path": os.path.join(d, "media_store"),
        # File transfer tests send files of 20-30 MB (Synapse's default limit is 50M; explicit here).
        "max_upload_size": "50M",
        # Authenticated media (MSC3916, default on since Synapse 1.120): clients download with
        # GET /_matrix/client/v1/media/download/{server}/{id} and an access token; the legacy
        # unauthenticated /_matrix/media/v3/download only serves media uploaded before it was on.
        "enable_authenticated_media": True,
        "signing_key_path": key_path,
        "registration_shared_secret": sec["registration_shared_secret"],
        "macaroon_secret_key": sec["macaroon_secret_key"],
        "form_secret": sec["form_secret"],
        "report_stats": False,
        "enable_metrics": False,
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "url_preview_enabled": False,
        "presence": {"enabled": True},
        # Exactly the registrations passed in (up.sh: $WORLD_APPSERVICES, colon-separated).
        "app_service_config_files": as_files,
        "experimental_features": {
            # MSC2409/MSC4203: to-device messages to appservices
            "msc2409_to_device_messages_enabled": True,
            # MSC3202: OTK counts / device lists / fallback keys in AS transactions
            "msc3202_transaction_extensions": True,
            # Removed from recent Synapse (device_id masquerading is always on now,
            # see synapse/api/auth/base.py); kept for older Synapse versions,
            # unknown experimental keys are ignored.
            "msc3202_device_masquerading": True,
        },
        # Rate limits raised for tests.
        "rc_message": rl,
        "rc_registration": rl,
        "rc_login": {"address": rl, "account": rl, "failed_attempts": rl},
        "rc_joins": {"local": rl, "remote": rl},
        "rc_joins_per_room": rl,
        "rc_invites": {"per_room": rl, "per_user": rl, "per_issuer": rl},
        "rc_3pid_validation": rl,
        "rc_admin_redaction": rl,
        "rc_key_requests": rl,
        "rc_room_creation": rl,
        "rc_presence": {"per_user": rl},
        "rc_media_create": rl,
        "rc_profile": rl,
        "rc_user_directory": rl,
        "rc_reports": rl,
        "rc_delayed_event_mgmt": rl,
        "rc_third_party_invite": rl,
        "rc_registration_token_validity": rl,
    }
    hs_path = os.path.join(d, "homeserver.yaml")
    with open(hs_path + ".tmp", "w") as f:
        json.dump(hs, f, indent=2)
    os.replace(hs_path + ".tmp", hs_path)
    print(hs_path)


if __name__ == "__main__":
    sys.exit(main())
