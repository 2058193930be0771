#!/usr/bin/python3
"""An HTTP/2 cleartext (prior knowledge) origin on python3-h2 + asyncio that echoes requests.

Default response: 200, content-type application/json, body
  {"method", "path", "authority", "scheme", "headers": [[name, value]...] (every field as received,
   pseudo-headers included, in order), "body": latin-1 text (first 64 KiB), "body_len",
   "body_sha256", "trailers": [[name, value]...], "conn_id", "stream_id"}

Behaviour, from request headers (all optional):
  x-status: N              response status
  x-delay-ms: N            wait before responding (after the request ended)
  x-echo-raw: 1            body = the request body, byte for byte
  x-stream-bytes: N        body = N bytes of a pattern (byte k is k & 0xff), sent as fast as flow
                           control allows, never held in memory whole
  x-resp-trailers: a=1,b=2 send these response trailers after the body
  x-reset-after-bytes: N   (with x-stream-bytes) RST_STREAM(INTERNAL_ERROR) after N body bytes
  x-resp-header: a=1,b=2   extra response header fields
Answers "expect: 100-continue" with an interim 100.
GET /__stats: {"connections", "requests", "active", "resets_received"} (not counted in requests).

Usage: h2_origin.py [--host 127.0.0.1] [--port 0] [--ready-file F]
"""

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procutil import write_ready_file  # noqa: E402

PATTERN = bytes(range(256)) * 1024  # 256 KiB, a multiple of 256
STATS = {"connections": 0, "requests": 0, "active": 0, "resets_received": 0}


def parse_pairs(text):
    out = []
    for item in text.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out.append((k.strip().encode(), v.strip().encode()))
    return out


class Stream:
    def __init__(self, sid, headers):
        self.id = sid
        self.headers = headers
        self.body = bytearray()
        self.trailers = []
        self.reset = False
        self.task = None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


class Origin(asyncio.Protocol):
    conn_seq = 0

    def __init__(self):
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=True))
        self.streams = {}
        self.transport = None
        self.waiters = []
        self.write_ok = asyncio.Event()
        self.write_ok.set()
        self.closed = False

    # asyncio plumbing
    def connection_made(self, transport):
        Origin.conn_seq += 1
        self.conn_id = Origin.conn_seq
        STATS["connections"] += 1
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.flush()

    def connection_lost(self, exc):
        self.closed = True
        for s in self.streams.values():
            if s.task:
                s.task.cancel()
        self.wake()
        self.write_ok.set()

    def pause_writing(self):
        self.write_ok.clear()

    def resume_writing(self):
        self.write_ok.set()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def wake(self):
        for f in self.waiters:
            if not f.done():
                f.set_result(None)
        self.waiters = []

    async def wait_window(self):
        f = asyncio.get_running_loop().create_future()
        self.waiters.append(f)
        await f

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                st = self.streams[ev.stream_id] = Stream(ev.stream_id, ev.headers)
                if not ev.stream_ended and (st.header(b"expect") or "").lower() == "100-continue":
                    self.conn.send_headers(ev.stream_id, [(b":status", b"100")])
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.body += ev.data
                if ev.flow_controlled_length:
                    try:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except h2.exceptions.StreamClosedError:
                        pass
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.trailers = ev.headers
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.start(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                STATS["resets_received"] += 1
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.reset = True
                    if s.task:
                        s.task.cancel()
                self.wake()
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self.wake()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.flush()
                self.transport.close()
                return
        self.flush()

    def start(self, sid):
        s = self.streams.get(sid)
        if s is not None and s.task is None:
            s.task = asyncio.get_running_loop().create_task(self.respond(s))

    # responses
    async def send_data(self, s, data, end_stream):
        view = memoryview(data)
        off = 0
        while True:
            if s.reset or self.closed:
                raise ConnectionError("stream gone")
            left = len(view) - off
            if left == 0:
                if end_stream:
                    self.conn.send_data(s.id, b"", end_stream=True)
                    self.flush()
                return
            window = min(self.conn.local_flow_control_window(s.id), self.conn.max_outbound_frame_size)
            if window <= 0:
                await self.wait_window()
                continue
            n = min(window, left)
            last = end_stream and n == left
            self.conn.send_data(s.id, bytes(view[off:off + n]), end_stream=last)
            off += n
            self.flush()
            if not self.write_ok.is_set():
                await self.write_ok.wait()
            if last:
                return

    async def respond(self, s):
        STATS["requests"] += 0 if s.header(b":path") == "/__stats" else 1
        STATS["active"] += 1
        try:
            await self._respond(s)
        except (ConnectionError, asyncio.CancelledError, h2.exceptions.StreamClosedError):
            pass
        except h2.exceptions.ProtocolError:
            pass
        finally:
            STATS["active"] -= 1
            self.streams.pop(s.id, None)
            if not self.closed:
                self.flush()

    async def _respond(self, s):
        path = s.header(b":path") or ""
        if path == "/__stats":
            body = json.dumps(STATS).encode()
            self.conn.send_headers(s.id, [(b":status", b"200"), (b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())])
            await self.send_data(s, body, True)
            return
        delay = s.header(b"x-delay-ms")
        if delay:
            await asyncio.sleep(int(delay) / 1000.0)
        status = (s.header(b"x-status") or "200").encode()
        trailers = parse_pairs(s.header(b"x-resp-trailers") or "")
        extra = parse_pairs(s.header(b"x-resp-header") or "")
        stream_bytes = s.header(b"x-stream-bytes")
        if stream_bytes is not None:
            total = int(stream_bytes)
            reset_after = s.header(b"x-reset-after-bytes")
            reset_after = int(reset_after) if reset_after is not None else None
            hdrs = [(b":status", status), (b"content-type", b"application/octet-stream")] + extra
            if not trailers and reset_after is None:
                hdrs.append((b"content-length", str(total).encode()))
            head = s.header(b":method") == "HEAD"
            self.conn.send_headers(s.id, hdrs, end_stream=head)
            self.flush()
            if head:
                return
            sent = 0
            while sent < total:
                n = min(len(PATTERN), total - sent)
                if reset_after is not None:
                    n = min(n, reset_after - sent)
                    if n <= 0:
                        self.conn.reset_stream(s.id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                        self.flush()
                        return
                await self.send_data(s, PATTERN[:n], end_stream=(sent + n == total and not trailers))
                sent += n
            if total == 0 and not trailers:
                await self.send_data(s, b"", True)
            if trailers:
                self.conn.send_headers(s.id, trailers, end_stream=True)
            return
        if s.header(b"x-echo-raw"):
            body = bytes(s.body)
            ctype = b"application/octet-stream"
        else:
            body = json.dumps({
                "method": s.header(b":method"), "path": path, "authority": s.header(b":authority"),
                "scheme": s.header(b":scheme"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s.headers],
                "body": bytes(s.body[:65536]).decode("latin-1"), "body_len": len(s.body),
                "body_sha256": hashlib.sha256(s.body).hexdigest(),
                "trailers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s.trailers],
                "conn_id": self.conn_id, "stream_id": s.id, "origin": "h2",
            }).encode()
            ctype = b"application/json"
        hdrs = [(b":status", status), (b"content-type", ctype)] + extra
        if not trailers:
            hdrs.append((b"content-length", str(len(body)).encode()))
        if s.header(b":method") == "HEAD":
            self.conn.send_headers(s.id, hdrs, end_stream=True)
            return
        self.conn.send_headers(s.id, hdrs)
        await self.send_data(s, body, end_stream=not trailers)
        if trailers:
            self.conn.send_headers(s.id, trailers, end_stream=True)


async def serve(host, port, ready_file):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Origin, host, port, reuse_address=True, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    write_ready_file(ready_file, bound)
    print(f"h2 origin on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port, args.ready_file))


if __name__ == "__main__":
    main()
