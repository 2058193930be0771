#!/usr/bin/python3
"""Opaque TCP bulk source and sink of the benchmark's bulk mode (docs/BENCHMARKS.md, "Bulk").

Server: /usr/bin/python3 bench/bulk_tcp.py serve --listen 127.0.0.1:PORT
    Each connection sends one line, "UP N\\n" or "DOWN N\\n" (N bytes, at most MAX_BYTES). UP: the server reads and
    discards N bytes, then answers "OK N\\n". DOWN: the server sends N bytes (one 1 MiB pattern buffer, repeated),
    then closes. One thread per connection; nothing is kept but one 1 MiB buffer per connection.
Client: /usr/bin/python3 bench/bulk_tcp.py up|down --connect 127.0.0.1:PORT --bytes N [--timeout S]
    Prints one JSON line: {"direction", "bytes", "seconds", "mb_per_s"} (MB = 10^6 bytes), exit 0; or exit 1 with
    the error. The clock runs from the connect to the last byte (DOWN) or to the server's "OK" (UP: every byte has
    crossed the proxy and reached the sink).
Loopback only: the addresses are the caller's.
"""
import argparse
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 20
MAX_BYTES = 16 << 30


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def serve_one(c):
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            b = c.recv(1)
            if not b:
                return
            line += b
        verb, _, n = line.strip().partition(b" ")
        n = int(n)
        if n < 0 or n > MAX_BYTES:
            return
        if verb == b"UP":
            buf = bytearray(CHUNK)
            got = 0
            while got < n:
                k = c.recv_into(buf, min(CHUNK, n - got))
                if k == 0:
                    return
                got += k
            c.sendall(b"OK %d\n" % got)
        elif verb == b"DOWN":
            view = memoryview(bytes(i & 0xFF for i in range(256)) * (CHUNK // 256))
            left = n
            while left:
                k = c.send(view[: min(CHUNK, left)])
                left -= k
            c.shutdown(socket.SHUT_WR)
            c.settimeout(10)
            c.recv(1)  # wait for the client's close, so that the last bytes are not reset away
    except (OSError, ValueError):
        pass
    finally:
        c.close()


def serve(listen):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr(listen))
    s.listen(64)
    print("listening %s" % listen, flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()


def client(direction, connect, n, timeout):
    t0 = time.monotonic()
    c = socket.create_connection(addr(connect), timeout=timeout)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if direction == "up":
        c.sendall(b"UP %d\n" % n)
        view = memoryview(bytes(i & 0xFF for i in range(256)) * (CHUNK // 256))
        left = n
        while left:
            left -= c.send(view[: min(CHUNK, left)])
        reply = b""
        while not reply.endswith(b"\n"):
            b = c.recv(64)
            if not b:
                break
            reply += b
        if reply.strip() != b"OK %d" % n:
            raise OSError("the sink answered %r, expected OK %d" % (reply, n))
        got = n
    else:
        c.sendall(b"DOWN %d\n" % n)
        buf = bytearray(CHUNK)
        got = 0
        while got < n:
            k = c.recv_into(buf)
            if k == 0:
                break
            got += k
        if got != n:
            raise OSError("received %d of %d bytes" % (got, n))
    dt = time.monotonic() - t0
    c.close()
    return {"direction": direction, "bytes": got, "seconds": dt, "mb_per_s": got / dt / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=["serve", "up", "down"])
    ap.add_argument("--listen", default="127.0.0.1:9000")
    ap.add_argument("--connect", default="127.0.0.1:9000")
    ap.add_argument("--bytes", type=int, default=100 * 1000 * 1000)
    ap.add_argument("--timeout", type=float, default=60.0, help="socket timeout of the client, seconds (default 60)")
    a = ap.parse_args()
    if a.role == "serve":
        serve(a.listen)
        return 0
    try:
        print(json.dumps(client(a.role, a.connect, a.bytes, a.timeout)), flush=True)
    except OSError as e:
        print("bulk_tcp: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
