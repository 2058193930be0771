#!/usr/bin/python3
"""A server-speaks-first TCP server: greets, then echoes, then half-closes.

    banner_server.py ADDR:PORT [[V6]:PORT ...]

On every accepted connection it sends the banner line "220 remora-banner <ADDR:PORT>\\r\\n" at once
(as SMTP or MySQL servers do), then echoes every byte it receives; when the client half-closes it
shuts down its own write side after the last echoed byte. Prints "ready" once every address is bound.
Runs until killed (tests start it in a network namespace and stop it by PID).
"""

import selectors
import socket
import sys
import threading


def parse(spec):
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host, int(port)


def serve(conn, label):
    try:
        conn.sendall(b"220 remora-banner " + label.encode() + b"\r\n")
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def main(argv):
    sel = selectors.DefaultSelector()
    for spec in argv:
        family, host, port = parse(spec)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(128)
        sel.register(s, selectors.EVENT_READ, spec)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            threading.Thread(target=serve, args=(conn, key.data), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
