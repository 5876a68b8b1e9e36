"""A WSGI app on the standard library's server; its greeting comes from a
dependency that requirements.txt names and the build installs from a
package index (PIP_INDEX_URL) into site-packages/ next to it."""
import os
import sys
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages"))
from hello_greeting import __version__, greet  # noqa: E402


def app(environ, start_response):
    name = parse_qs(environ.get("QUERY_STRING", "")).get("name", [None])[0]
    body = ("%s (hello-greeting %s)\n" % (greet(name), __version__)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    with make_server("0.0.0.0", port, app, handler_class=QuietHandler) as srv:
        print("listening on %d" % port, flush=True)
        srv.serve_forever()
