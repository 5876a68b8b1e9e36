#!/usr/bin/env python3
"""silent-server.py - a TCP server on 127.0.0.1 that accepts and never answers.

    silent-server.py --port-file /tmp/x/port

Every connection is accepted and read from (so the client's request is
delivered), and nothing is ever written back: a git server that hangs.
Writes the port it listens on to --port-file, and the number of connections
accepted so far to <port-file>.count. Python 3 standard library only.
"""
import argparse
import os
import socket
import threading


def drain(conn):
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(tmp, a.port_file)
    n = 0
    conns = []
    while True:
        c, _ = s.accept()
        conns.append(c)  # held open: never closed, never answered
        n += 1
        with open(a.port_file + ".count", "w") as f:
            f.write(str(n))
        threading.Thread(target=drain, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
