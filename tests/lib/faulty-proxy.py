#!/usr/bin/env python3
"""faulty-proxy.py - an HTTP reverse proxy on 127.0.0.1 that misbehaves on demand.

    faulty-proxy.py --upstream 127.0.0.1:5000 --port-file /tmp/x/port

Forwards every request to the upstream (the Host header unchanged, so a
registry builds its Location URLs for the proxy) unless a rule matches.
Rules are set at run time through the proxy itself:

    POST /__proxy__/rules   [{"method": "PUT", "path": "/blobs/uploads/",
                              "action": "status", "status": 500, "count": 2}, ...]
        method: optional, exact; path: a regular expression searched in the
        request path (with query); count: how many matching requests the rule
        hits (absent or null: all of them).
        action "status": answer `status` with a distribution error body (or
                         `body` repeated `repeat` times, as `ctype`), plus `headers`
               "drop":   read the request, close the connection, answer nothing
               "delay":  wait `seconds` (default 30), then forward it (a slow
                         upstream)
    GET  /__proxy__/log     ["PUT /v2/...", ...] every proxied request since reset
    POST /__proxy__/reset   forget rules and the log

Python 3 standard library only.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import socket
import sys
import time
import threading

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "transfer-encoding", "upgrade", "content-length"}

lock = threading.Lock()
rules = []
log = []
upstream = None


def read_body(h):
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            line = h.rfile.readline()
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


def match(method, path):
    with lock:
        for r in rules:
            if r.get("method") and r["method"] != method:
                continue
            if not re.search(r.get("path", ""), path):
                continue
            if r.get("count") is not None:
                if r["count"] <= 0:
                    continue
                r["count"] -= 1
            r["hits"] = r.get("hits", 0) + 1
            return r
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("proxy: " + (fmt % args) + "\n")

    def reply(self, status, body=b"", ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self, body):
        global rules, log
        if self.path == "/__proxy__/rules" and self.command == "POST":
            with lock:
                rules = json.loads(body or b"[]")
            return self.reply(200, b"{}")
        if self.path == "/__proxy__/reset" and self.command == "POST":
            with lock:
                rules = []
                log = []
            return self.reply(200, b"{}")
        if self.path == "/__proxy__/log":
            with lock:
                data = json.dumps(log).encode()
            return self.reply(200, data)
        if self.path == "/__proxy__/rules" and self.command == "GET":
            with lock:
                data = json.dumps(rules).encode()
            return self.reply(200, data)
        return self.reply(404, b"{}")

    def handle_any(self):
        body = read_body(self)
        if self.path.startswith("/__proxy__/"):
            return self.control(body)
        with lock:
            log.append("%s %s" % (self.command, self.path))
        rule = match(self.command, self.path)
        if rule is not None:
            action = rule.get("action", "status")
            if action == "delay":
                time.sleep(float(rule.get("seconds", 30)))
                return self.forward(body)
            if action == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            status = int(rule.get("status", 500))
            if "body" in rule:
                data = rule["body"].encode() * int(rule.get("repeat", 1))
            else:
                data = json.dumps({"errors": [{"code": rule.get("code", "UNKNOWN"),
                                               "message": rule.get("message",
                                                                   "injected by faulty-proxy")}]}).encode()
            return self.reply(status, data, ctype=rule.get("ctype", "application/json"),
                              extra=rule.get("headers"))
        self.forward(body)

    def forward(self, body):
        conn = http.client.HTTPConnection(upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            return self.reply(502, json.dumps({"errors": [{"code": "UNKNOWN", "message": str(e)}]}).encode())
        finally:
            conn.close()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in HOP:
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            cl = resp.getheader("Content-Length")
            if cl is not None:
                self.send_header("Content-Length", cl)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def main():
    global upstream
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    upstream = a.upstream
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.verbose = a.verbose
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
