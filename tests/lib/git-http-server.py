#!/usr/bin/env python3
"""git-http-server.py ROOT PORTFILE LOGFILE: serve the repositories under ROOT
over git's smart HTTP protocol on 127.0.0.1, for tests.

Each request runs `git http-backend` as a CGI (the real server side of git, no
mock). The chosen port is written to PORTFILE once the server listens; every
request is appended to LOGFILE as "METHOD PATH", so a test can prove that a
fetch did or did not touch the network.

A path starting with /slow/ is served like the rest of the path, but the
response is held back for 400 ms first: a client deadline can pass mid-fetch.
A path starting with /moved/ answers with a redirect to the rest of the path
on another host name (localhost instead of 127.0.0.1).
"""
import http.server
import os
import subprocess
import sys
import time

ROOT, PORTFILE, LOGFILE = sys.argv[1], sys.argv[2], sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n else b""

    def _serve(self):
        path, _, query = self.path.partition("?")
        with open(LOGFILE, "a") as log:
            log.write("%s %s\n" % (self.command, self.path))
        if path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", "http://localhost:%d%s%s" % (
                self.server.server_address[1], path[len("/moved"):],
                "?" + query if query else ""))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        slow = path.startswith("/slow/")
        if slow:
            path = path[len("/slow"):]
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": ROOT,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        if slow:
            time.sleep(0.4)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
