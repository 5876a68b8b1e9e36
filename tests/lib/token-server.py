#!/usr/bin/env python3
"""token-server.py - a Docker registry token server for tests (python3 stdlib + openssl CLI).

    token-server.py --dir D --port-file D/port --user U --password P \
        --issuer buildvm-test-issuer --service buildvm-test-registry

On start it creates D/token.key and D/token.crt (self-signed RSA) unless they
exist; the registry's `auth.token.rootcertbundle` points at D/token.crt.

GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...]
    no Authorization        -> a token granting nothing (registries then refuse)
    Basic with U:P          -> a token granting every requested action
    Basic with anything else -> 401
The token is an RS256 JWT whose header carries the certificate in `x5c`,
which distribution verifies against the root bundle. Signing is done by
`openssl dgst -sha256 -sign`.

GET /__stats__ -> {"requests": N, "scopes": [...]} for the tests.
"""
import argparse
import base64
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

lock = threading.Lock()
stats = {"requests": 0, "scopes": []}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            sys.stderr.write("token: " + (fmt % args) + "\n")

    def reply(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        o = self.server.opts
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/__stats__":
            with lock:
                return self.reply(200, stats)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        scopes = q.get("scope", [])
        with lock:
            stats["requests"] += 1
            stats["scopes"].append(" ".join(scopes))
        auth = self.headers.get("Authorization", "")
        user = None
        if auth:
            try:
                kind, cred = auth.split(" ", 1)
                u, p = base64.b64decode(cred).decode().split(":", 1)
            except Exception:
                return self.reply(400, {"error": "bad authorization header"})
            if kind.lower() != "basic" or not (hmac.compare_digest(u, o.user)
                                               and hmac.compare_digest(p, o.password)):
                return self.reply(401, {"error": "invalid credentials"},
                                  {"WWW-Authenticate": 'Basic realm="token"'})
            user = u
        if q.get("service", [""])[0] != o.service:
            return self.reply(400, {"error": "unknown service"})
        access = []
        if user is not None:
            for s in scopes:
                typ, rest = s.split(":", 1)
                name, actions = rest.rsplit(":", 1)
                access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.server.cert_b64]}
        claims = {"iss": o.issuer, "sub": user or "", "aud": o.service, "exp": now + o.ttl,
                  "nbf": now - 10, "iat": now, "jti": b64url(os.urandom(12)), "access": access}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.server.key_path],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        token = signing_input + "." + b64url(sig)
        self.reply(200, {"token": token, "access_token": token, "expires_in": o.ttl})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--issuer", default="buildvm-test-issuer")
    ap.add_argument("--service", default="buildvm-test-registry")
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--verbose", action="store_true")
    o = ap.parse_args()
    key = os.path.join(o.dir, "token.key")
    crt = os.path.join(o.dir, "token.crt")
    if not (os.path.exists(key) and os.path.exists(crt)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "2", "-subj", "/CN=buildvm-test-token"],
                       check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.opts = o
    srv.key_path = key
    srv.cert_b64 = base64.b64encode(der).decode()
    tmp = o.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, o.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
