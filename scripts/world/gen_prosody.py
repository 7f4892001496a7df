#!/usr/bin/env python3
"""Generate a self-contained Prosody (0.12, Debian) test config under STATE_DIR/prosody.

Writes prosody.cfg.lua, a test CA and a cert for the domain signed by it (+ upload subdomain),
and info.json. Everything listens on 127.0.0.1 only; s2s is disabled.
Stdlib only (uses the `openssl` CLI for the cert).

  gen_prosody.py --state-dir STATE [--domain xmpp.test] [--c2s-port 5222] [--http-port 5280]
                 [--https-port 5281] [--component-port 5347]
The XEP-0363 upload component hands out https slot URLs (https://127.0.0.1:HTTPS_PORT/file_share/...,
served with the test-CA-signed cert): XEP-0454 `aesgcm://` URLs are fetched as https. Plain http on
--http-port serves the same paths.
Then:
  prosody --config STATE/prosody/prosody.cfg.lua -F &      # foreground, own pid
  prosodyctl --config STATE/prosody/prosody.cfg.lua register alice xmpp.test secret
"""
import argparse
import json
import os
import subprocess


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--domain", default="xmpp.test")
    p.add_argument("--c2s-port", type=int, default=5222)
    p.add_argument("--c2s-direct-tls-port", type=int, default=0,
                   help="a c2s port with TLS from the first byte (XEP-0368); 0: none")
    p.add_argument("--http-port", type=int, default=5280)
    p.add_argument("--https-port", type=int, default=5281,
                   help="https (test CA cert) for the XEP-0363 upload component's slot URLs")
    p.add_argument("--component-port", type=int, default=5347,
                   help="XEP-0114 external component port (for a bridge that runs as a component)")
    p.add_argument("--component-secret", default="interop-component-secret")
    p.add_argument("--log-level", default="info")
    p.add_argument("--no-pep-open-default", action="store_true",
                   help="keep Prosody's PEP default access_model=presence (see mod_pep_open_default below)")
    a = p.parse_args()

    d = os.path.join(os.path.abspath(a.state_dir), "prosody")
    data = os.path.join(d, "data")
    certs = os.path.join(d, "certs")
    for x in (d, data, certs):
        os.makedirs(x, exist_ok=True)
    os.chmod(data, 0o750)
    upload = "upload." + a.domain
    bridge = "bridge." + a.domain

    # A test CA (ca/ca.crt, the file clients trust) and a server cert for the domain signed by it.
    # Strict verifiers (rustls/webpki) refuse a CA certificate presented as the server's own, so
    # the two must differ. The CA lives outside certs/ so Prosody never serves it as a host cert.
    ca_dir = os.path.join(d, "ca")
    os.makedirs(ca_dir, exist_ok=True)
    ca_crt = os.path.join(ca_dir, "ca.crt")
    ca_key = os.path.join(ca_dir, "ca.key")
    crt = os.path.join(certs, a.domain + ".crt")
    key = os.path.join(certs, a.domain + ".key")
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if not os.path.exists(ca_crt):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=interop-bridge test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            **quiet,
        )
        os.chmod(ca_key, 0o600)
        for stale in (crt, key):
            if os.path.lexists(stale):
                os.remove(stale)
    if not os.path.exists(crt):
        csr = os.path.join(certs, a.domain + ".csr")
        ext = os.path.join(certs, a.domain + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=DNS:%s,DNS:*.%s,DNS:localhost,IP:127.0.0.1\n" % (a.domain, a.domain))
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", csr, "-subj", "/CN=" + a.domain], **quiet)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
                        "-CAcreateserial", "-days", "3650", "-out", crt, "-extfile", ext], **quiet)
        os.remove(csr)
        os.remove(ext)
        os.chmod(key, 0o600)
    # Prosody looks up certs by host name in the `certificates` dir; the upload
    # and bridge subdomains are covered by the wildcard SAN.
    for sub in (upload, bridge):
        for ext, src in (("crt", crt), ("key", key)):
            dst = os.path.join(certs, "%s.%s" % (sub, ext))
            if not os.path.lexists(dst):
                os.symlink(os.path.basename(src), dst)

    # Test-only plugin: PEP nodes default to access_model=open. Modern OMEMO clients publish their
    # device list/bundles with publish-options access_model=open anyway; older ones (profanity 0.13)
    # do not, and then non-contacts get <forbidden/> when fetching their OMEMO keys.
    plugins = os.path.join(d, "plugins")
    os.makedirs(plugins, exist_ok=True)
    with open(os.path.join(plugins, "mod_pep_open_default.lua"), "w") as f:
        f.write(
            "-- generated by gen_prosody.py (test world only): default PEP access_model = open\n"
            "module:handle_items(\"pep-service\", function (event)\n"
            "\tevent.item.service.node_defaults.access_model = \"open\";\n"
            "end, function () end, true);\n"
        )
    extra_mods = "" if a.no_pep_open_default else '"pep_open_default"; -- test world: PEP nodes default to access_model=open'

    cfg = f"""-- Generated by gen_prosody.py: self-contained Prosody test config. 127.0.0.1 only.
run_as_root = true            -- the test world runs as whoever calls it (root on CI)
daemonize = false             -- we start it in the background ourselves (-F) and record its pid
pidfile = {lua_str(os.path.join(d, "prosody.pid"))}
data_path = {lua_str(data)}
plugin_paths = {{ {lua_str(plugins)} }}
certificates = {lua_str(certs)}
admin_socket = {lua_str(os.path.join(d, "prosody.sock"))}
log = {{
  {{ levels = {{ min = {lua_str(a.log_level)} }}, to = "file", filename = {lua_str(os.path.join(d, "prosody.log"))} }};
}}

interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {a.c2s_port} }}
c2s_direct_tls_ports = {{ {a.c2s_direct_tls_port or ""} }}
s2s_ports = {{ }}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {a.component_port} }}
http_interfaces = {{ "127.0.0.1" }}
http_ports = {{ {a.http_port} }}
-- https with the test-CA-signed cert (SAN IP:127.0.0.1, DNS:localhost): the upload component's
-- slot URLs are https (XEP-0454 aesgcm:// URLs are fetched as https://). Clients connecting to an
-- IP send no SNI, so the port's own context (https_ssl) is the one they get.
https_interfaces = {{ "127.0.0.1" }}
https_ports = {{ {a.https_port} }}
https_ssl = {{ certificate = {lua_str(crt)}; key = {lua_str(key)} }}
https_certificate = {lua_str(crt)}
proxy65_ports = {{ }}

modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "version"; "uptime";
  "private"; "vcard_legacy"; "vcard4"; "blocklist"; "bookmarks"; "register";
  "carbons";        -- XEP-0280
  "pep";            -- XEP-0163 (OMEMO devicelist + bundles; clients publish with access_model=open)
  "mam";            -- XEP-0313
  "smacks";         -- XEP-0198 (core module since 0.12)
  "csi_simple";
  "admin_shell";    -- prosodyctl shell via admin_socket
  "http";
  "posix";
  {extra_mods}
}}
modules_disabled = {{ "s2s" }}

authentication = "internal_hashed"
storage = "internal"
-- Loopback test server: TLS is offered (test CA) but not required; SCRAM works without TLS.
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true     -- XEP-0077 in-band registration, handy for tests (127.0.0.1 only)
registration_throttle_max = 1000
min_seconds_between_registrations = 0
limits = {{ c2s = {{ rate = "100mb/s" }} }}   -- inert: mod_limits (bandwidth only) is not loaded
-- Many clients from 127.0.0.1 (bulk_accounts.sh benchmarks): Prosody 0.12 has no per-IP or total c2s
-- connection limit; the epoll backend has no FD_SETSIZE cap. What bounds it is the process's open-file
-- limit (up.sh raises `ulimit -n`; on EMFILE Prosody pauses accept() for 10 s) and the listen backlog
-- (default 128) when many clients connect at once.
network_settings = {{ tcp_backlog = 1024 }}
-- Bytes a listener reads per wake-up (default 4096; strace showed 8 KiB reads). mod_http_file_share
-- gets an upload's body piece by piece through a 0-s timer (>= 1 ms in server_epoll), so uploads ran
-- at ~3-5 MB/s (a 30 MB PUT took 6-10 s); with 256 KiB they take ~0.4 s. Only an upper bound per read.
network_default_read_size = 262144

default_archive_policy = true
archive_expires_after = "never"
max_archive_query_results = 250
pep_max_items = 256
smacks_hibernation_time = 60

http_default_host = {lua_str(upload)}
http_external_url = "http://127.0.0.1:{a.http_port}/"

VirtualHost {lua_str(a.domain)}
  ssl = {{ certificate = {lua_str(crt)}; key = {lua_str(key)} }}

Component {lua_str(upload)} "http_file_share"   -- XEP-0363
  ssl = {{ certificate = {lua_str(crt)}; key = {lua_str(key)} }}
  http_file_share_size_limit = 50*1024*1024
  http_file_share_daily_quota = 1024*1024*1024
  http_file_share_expires_after = 86400
  http_file_share_access = {{ {lua_str(a.domain)} }}
  http_host = {lua_str(upload)}
  http_external_url = "https://127.0.0.1:{a.https_port}/"   -- slots' put/get URLs are https

-- XEP-0114 external component for a bridge that connects as a component.
Component {lua_str(bridge)}
  component_secret = {lua_str(a.component_secret)}
"""
    path = os.path.join(d, "prosody.cfg.lua")
    with open(path, "w") as f:
        f.write(cfg)
    info = {
        "domain": a.domain, "c2s": "127.0.0.1:%d" % a.c2s_port,
        "http": "http://127.0.0.1:%d/" % a.http_port,
        "https": "https://127.0.0.1:%d/" % a.https_port, "https_port": a.https_port,
        "upload_component": upload,
        "bridge_component": bridge, "component_port": a.component_port,
        "component_secret": a.component_secret, "ca_file": ca_crt, "config": path,
    }
    with open(os.path.join(d, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(path)


if __name__ == "__main__":
    main()
