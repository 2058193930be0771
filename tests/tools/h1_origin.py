#!/usr/bin/python3
"""An HTTP/1.1 origin (threads, hand-written framing) that echoes requests.

Keep-alive by default. Request bodies: Content-Length or chunked (trailers kept); answers
"Expect: 100-continue" with an interim 100 before reading the body.

Default response: 200, application/json, Content-Length, body
  {"method", "target", "version", "headers": [[name, value]...] (as received: case and order kept),
   "body": latin-1 text (first 64 KiB), "body_len", "body_sha256", "chunked": bool,
   "trailers": [[name, value]...], "conn_id", "conn_request" (1 for the first request on a connection)}

Behaviour, from request headers (all optional):
  x-status: N              response status
  x-delay-ms: N            wait before responding
  x-echo-raw: 1            body = the request body
  x-chunked-response: 1    send the body chunked (in several chunks)
  x-resp-trailers: a=1,b=2 chunked response with these trailers
  x-stream-bytes: N        body = N bytes of a pattern (byte k is k & 0xff), chunked unless
                           x-stream-cl: 1; sent with blocking writes, so a slow reader slows us
  x-abort-after-bytes: N   (with x-stream-bytes) close the connection abruptly after N body bytes
  x-close: 1               Connection: close after this response
  x-resp-header: a=1,b=2   extra response header fields
GET /__stats: {"connections", "requests", "active"} (not counted in requests).

Usage: h1_origin.py [--host 127.0.0.1] [--port 0] [--ready-file F]
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procutil import write_ready_file  # noqa: E402

PATTERN = bytes(range(256)) * 256  # 64 KiB
LOCK = threading.Lock()
STATS = {"connections": 0, "requests": 0, "active": 0}
MAX_LINE = 65536


class BadRequest(Exception):
    pass


def parse_pairs(text):
    out = []
    for item in (text or "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


class Handler(socketserver.StreamRequestHandler):
    rbufsize = 65536
    conn_seq = 0

    def readline(self):
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest("line too long")
        return line

    def read_headers(self):
        fields = []
        while True:
            line = self.readline()
            if not line:
                raise ConnectionError("eof in headers")
            if line in (b"\r\n", b"\n"):
                return fields
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise BadRequest("bad header line")
            fields.append([name, value.strip()])

    def handle(self):
        with LOCK:
            Handler.conn_seq += 1
            conn_id = Handler.conn_seq
            STATS["connections"] += 1
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n = 0
        try:
            while True:
                line = self.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                n += 1
                if not self.one_request(line, conn_id, n):
                    return
        except (ConnectionError, BadRequest, OSError, ValueError):
            return

    def one_request(self, line, conn_id, n):
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        method, target, version = parts
        headers = self.read_headers()
        h = {}
        for k, v in headers:
            h.setdefault(k.lower(), v)
        stats_req = target == "/__stats"
        with LOCK:
            STATS["active"] += 1
            if not stats_req:
                STATS["requests"] += 1
        try:
            return self.respond(method, target, version, headers, h, conn_id, n, stats_req)
        finally:
            with LOCK:
                STATS["active"] -= 1

    def read_body(self, h):
        te = h.get("transfer-encoding", "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                size_line = self.readline()
                if not size_line:
                    raise ConnectionError("eof in chunk size")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                body += self.rfile.read(size)
                if self.rfile.read(2) != b"\r\n":
                    raise BadRequest("bad chunk end")
            trailers = self.read_headers()
            return bytes(body), trailers, True
        cl = h.get("content-length")
        if cl is not None:
            return self.rfile.read(int(cl)), [], False
        return b"", [], False

    def respond(self, method, target, version, headers, h, conn_id, n, stats_req):
        if stats_req:
            with LOCK:
                body = json.dumps(STATS).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
            return True
        if h.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        body, trailers, chunked = self.read_body(h)
        if h.get("x-delay-ms"):
            time.sleep(int(h["x-delay-ms"]) / 1000.0)
        status = int(h.get("x-status", "200"))
        close = bool(h.get("x-close")) or h.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        resp_trailers = parse_pairs(h.get("x-resp-trailers"))
        extra = parse_pairs(h.get("x-resp-header"))
        head = [f"HTTP/1.1 {status} Echo"]
        for k, v in extra:
            head.append(f"{k}: {v}")
        if close:
            head.append("Connection: close")

        if h.get("x-stream-bytes") is not None:
            total = int(h["x-stream-bytes"])
            head.append("Content-Type: application/octet-stream")
            use_cl = bool(h.get("x-stream-cl")) and not resp_trailers
            head.append(f"Content-Length: {total}" if use_cl else "Transfer-Encoding: chunked")
            if resp_trailers:
                head.append("Trailer: " + ", ".join(k for k, _ in resp_trailers))
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if method == "HEAD":
                return not close
            sent = 0
            abort_after = h.get("x-abort-after-bytes")
            abort_after = int(abort_after) if abort_after is not None else None
            while sent < total:
                k = min(len(PATTERN), total - sent)
                if abort_after is not None:
                    k = min(k, abort_after - sent)
                    if k <= 0:
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        self.connection.close()
                        return False
                if use_cl:
                    self.wfile.write(PATTERN[:k])
                else:
                    self.wfile.write(b"%x\r\n" % k + PATTERN[:k] + b"\r\n")
                sent += k
            if not use_cl:
                self.write_last_chunk(resp_trailers)
            self.wfile.flush()
            return not close

        if h.get("x-echo-raw"):
            out = body
            head.append("Content-Type: application/octet-stream")
        else:
            out = json.dumps({
                "method": method, "target": target, "version": version, "headers": headers,
                "body": body[:65536].decode("latin-1"), "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(), "chunked": chunked,
                "trailers": trailers, "conn_id": conn_id, "conn_request": n, "origin": "h1",
            }).encode()
            head.append("Content-Type: application/json")
        if h.get("x-chunked-response") or resp_trailers:
            head.append("Transfer-Encoding: chunked")
            if resp_trailers:
                head.append("Trailer: " + ", ".join(k for k, _ in resp_trailers))
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            step = max(1, len(out) // 3)
            for i in range(0, len(out), step):
                piece = out[i:i + step]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.write_last_chunk(resp_trailers)
        else:
            head.append(f"Content-Length: {len(out)}")
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (out if method != "HEAD" else b""))
        self.wfile.flush()
        return not close

    def write_last_chunk(self, trailers):
        self.wfile.write(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in trailers) + b"\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    write_ready_file(args.ready_file, port)
    print(f"h1 origin on {args.host}:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
