#!/usr/bin/env python3
"""A logging reverse proxy between the homeserver and the bridge's appservice listener.

Benchmark tool (scripts/bench/txn_latency.sh, tests/bench_txn_latency.rs): it forwards every
request unchanged and, for each appservice transaction (PUT .../transactions/<id>), appends one
JSON line to LOG:

  {"txn": "42", "events": 17, "tagged": 17, "status": 200, "t_recv": <unix s>, "ms": 3.1}

`t_recv` is when the proxy had read the whole request from the homeserver, `ms` how long the
bridge took from then until the proxy had its whole answer (the proxy's own forwarding on
loopback is in it: well under a millisecond). `tagged` counts the events whose body contains
TAG. While the file named by $AS_PROXY_HOLD exists, transactions are held back (not yet
forwarded): the homeserver, which has one transaction in flight per appservice, queues the
events behind it. `t_recv` and `ms` then start when the hold ends (`held_ms` is how long it
lasted). The bridge is measured from outside, so any build of it can be measured unchanged.

Usage: as_proxy.py LISTEN_PORT UPSTREAM_PORT LOG [TAG]
"""
import http.client
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, UPSTREAM, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
TAG = sys.argv[4] if len(sys.argv) > 4 else None
HOLD = os.environ.get("AS_PROXY_HOLD")
TXN = re.compile(r"/transactions/([^/?]+)")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
lock = threading.Lock()
local = threading.local()


def upstream():
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=600)
    return conn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        is_txn = self.command == "PUT" and TXN.search(self.path)
        held = time.perf_counter()
        while is_txn and HOLD and os.path.exists(HOLD):
            time.sleep(0.01)
        held_ms = (time.perf_counter() - held) * 1000.0
        t_recv = time.time()
        start = time.perf_counter()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        for attempt in (0, 1):
            conn = upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt:
                    self.send_error(502)
                    return
        ms = (time.perf_counter() - start) * 1000.0
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        m = TXN.search(self.path)
        if self.command == "PUT" and m:
            try:
                events = json.loads(body or b"{}").get("events", [])
            except ValueError:
                events = []
            tagged = 0
            if TAG:
                tagged = sum(
                    1 for e in events if TAG in str((e.get("content") or {}).get("body", ""))
                )
            line = {"txn": m.group(1), "events": len(events), "tagged": tagged,
                    "status": resp.status, "t_recv": t_recv, "ms": round(ms, 3),
                    "held_ms": round(held_ms, 3)}
            with lock, open(LOG, "a") as f:
                f.write(json.dumps(line) + "\n")

    do_GET = do_PUT = do_POST = do_DELETE = forward


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
