#!/usr/bin/python3
"""An origin that fails on command: HTTP/1.1, HTTP/2 cleartext (prior knowledge) and gRPC over h2c on one
port (asyncio + python3-h2). The protocol is chosen per connection by its first bytes: the HTTP/2
connection preface means h2, anything else HTTP/1.1. A request whose content-type starts with
application/grpc is gRPC (messages are raw bytes: no protobuf).

Every request is an *attempt* of a *key* (header x-fault-key, default ""). The origin counts attempts per
key when the request is complete, so one server can serve many test cases and a test can say "fail the
first N attempts, then succeed".

Behaviour, from request headers (all optional):
  x-fault-key: K           groups attempts (see /__attempts)
  x-fault: F               the fault (below); x-fault-times: N applies it to the first N attempts of the key
                           only (default: every attempt)
  x-delay-ms: N            wait N ms before the response head (after the request ended); x-delay-times: N
                           applies the delays to the first N attempts only (default: every attempt)
  x-body-delay-ms: N       wait N ms between the response head and the body (x-delay-times applies too)
  x-resp-header: a=1,b=2   extra response header fields
Faults:
  status:NNN               answer with that status (and the usual JSON body)
  rst:CODE                 h2: RST_STREAM(CODE) before any HEADERS (CODE a name, e.g. REFUSED_STREAM,
                           INTERNAL_ERROR, CANCEL, or a number); HTTP/1.1: close without a response
  grpc-trailers-only:N     HEADERS {:status 200, content-type application/grpc, grpc-status N} + END_STREAM
  grpc-trailers:N          response HEADERS, no DATA, then trailers with grpc-status N
  grpc-trailers-after-data:N  HEADERS, one DATA message (the request's, or an empty message), trailers N
  goaway                   h2: GOAWAY(NO_ERROR) with last-stream-id below this stream, then close (the
                           stream was never processed); HTTP/1.1: close without a response
  close-after-headers      send the response head (h2 HEADERS without END_STREAM; HTTP/1.1 a head with
                           Content-Length), then drop the connection
  h1-close-idle-ms:M       (HTTP/1.1) answer normally (keep-alive, no Connection: close), then close the
                           connection if no next request starts within M ms
Success: 200, application/json, header x-attempt: n, body
  {"attempt", "key", "method", "path", "authority", "scheme", "protocol": "h1"|"h2", "headers": [[k, v]...],
   "body_len", "body_sha256", "grpc_timeout": the grpc-timeout header or null, "conn_id"}
gRPC success: HEADERS (x-attempt: n), the request body echoed as is (its 5-byte-prefixed messages), trailers
grpc-status 0.

Control requests (not counted, faults ignored), over HTTP/1.1 and h2:
  GET /__attempts?key=K    {"attempts", "grpc_timeouts", "body_sha256s", "paths", "authorities", "methods",
                            "faults" (the fault applied per attempt, or null), "resets" (RST_STREAMs received
                            on this key's streams)}; lists keep the last 1000 entries, 10000 keys are kept
  GET /__stats             {"requests", "connections", "h1_connections", "h2_connections", "resets_received",
                            "active", "h1_dropped", "open_connections" (open now, this one included),
                            "peak_open_connections" (the most open at once when a counted request arrived)}

Options:
  --h1-close-after N       each HTTP/1.1 connection is closed silently after N responses (no Connection:
                           close header). --h1-close-mode next-request (default): the connection stays
                           open and looks idle, and is closed (with a reset) when the next request's bytes
                           arrive, unanswered: the keep-alive race, made deterministic. immediate: closed
                           right after the Nth response (a proxy may notice the FIN before reusing it).
  --default-delay-ms N     delay for requests without x-delay-ms (a slow shadow)
  --default-fault F        fault for requests without x-fault
  --health-path P          requests for path P (a health check) are answered with the health status (200
                           unless --health-status N or GET /__health?status=N says otherwise), not counted
                           as attempts; GET /__health returns {"status", "checks", "protocols": {"h1"|"h2": checks}}

Request bodies are hashed as they arrive; at most 16 MiB of one body is kept (for the gRPC echo).

Usage: fault_origin.py [--host 127.0.0.1] [--port 0] [--ready-file F] [--h1-close-after N]
                       [--h1-close-mode next-request|immediate] [--default-delay-ms N] [--default-fault F]
"""

import argparse
import asyncio
import collections
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procutil import write_ready_file  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_KEEP_BODY = 16 << 20
MAX_KEYS = 10000
MAX_LIST = 1000
MAX_LINE = 65536
MAX_HEADERS = 200

STATS = {"requests": 0, "connections": 0, "h1_connections": 0, "h2_connections": 0, "resets_received": 0,
         "active": 0, "h1_dropped": 0, "open_connections": 0, "peak_open_connections": 0}
OPTS = argparse.Namespace(h1_close_after=0, h1_close_mode="next-request", default_delay_ms=0, default_fault=None,
                          health_path=None)
HEALTH = {"status": 200, "checks": 0, "protocols": {}}


# ------------------------------------------------------------------------------ per-key bookkeeping

class KeyRecord:
    __slots__ = ("attempts", "grpc_timeouts", "body_sha256s", "paths", "authorities", "methods", "faults", "resets")

    def __init__(self):
        self.attempts = 0
        self.grpc_timeouts = collections.deque(maxlen=MAX_LIST)
        self.body_sha256s = collections.deque(maxlen=MAX_LIST)
        self.paths = collections.deque(maxlen=MAX_LIST)
        self.authorities = collections.deque(maxlen=MAX_LIST)
        self.methods = collections.deque(maxlen=MAX_LIST)
        self.faults = collections.deque(maxlen=MAX_LIST)
        self.resets = 0

    def to_json(self):
        return {"attempts": self.attempts, "grpc_timeouts": list(self.grpc_timeouts),
                "body_sha256s": list(self.body_sha256s), "paths": list(self.paths),
                "authorities": list(self.authorities), "methods": list(self.methods), "faults": list(self.faults),
                "resets": self.resets}


KEYS = collections.OrderedDict()


def key_record(key):
    rec = KEYS.get(key)
    if rec is None:
        rec = KEYS[key] = KeyRecord()
        while len(KEYS) > MAX_KEYS:
            KEYS.popitem(last=False)
    else:
        KEYS.move_to_end(key)
    return rec


class Request:
    """A complete request, whichever the protocol. Header names are lower-case str, values str."""

    def __init__(self, protocol, method, path, authority, scheme, headers, conn_id):
        self.protocol = protocol
        self.method, self.path, self.authority, self.scheme = method, path, authority, scheme
        self.headers = headers  # list of (name, value), pseudo-headers included for h2
        self.conn_id = conn_id
        self.sha = hashlib.sha256()
        self.body_len = 0
        self.body = bytearray()
        self.body_truncated = False
        self.attempt = 0
        self.key = ""
        self.fault = None
        self.delay_ms = 0
        self.body_delay_ms = 0

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def add_body(self, data):
        self.sha.update(data)
        self.body_len += len(data)
        room = MAX_KEEP_BODY - len(self.body)
        if room > 0:
            self.body += data[:room]
        if len(data) > room:
            self.body_truncated = True

    @property
    def is_grpc(self):
        return (self.header("content-type") or "").startswith("application/grpc")

    @property
    def control(self):
        p = self.path.split("?", 1)[0]
        return p in ("/__attempts", "/__stats", "/__health") or (OPTS.health_path is not None and p == OPTS.health_path)

    def account(self):
        """Counts the attempt and decides the fault and delays (x-fault-times / x-delay-times)."""
        STATS["requests"] += 1
        STATS["peak_open_connections"] = max(STATS["peak_open_connections"], STATS["open_connections"])
        self.key = self.header("x-fault-key") or ""
        rec = key_record(self.key)
        rec.attempts += 1
        self.attempt = n = rec.attempts
        fault = self.header("x-fault") or OPTS.default_fault
        times = _int(self.header("x-fault-times"))
        if fault and (times is None or n <= times):
            self.fault = fault
        dtimes = _int(self.header("x-delay-times"))
        if dtimes is None or n <= dtimes:
            d = self.header("x-delay-ms")
            self.delay_ms = _int(d) if d is not None else OPTS.default_delay_ms
            self.body_delay_ms = _int(self.header("x-body-delay-ms")) or 0
        rec.grpc_timeouts.append(self.header("grpc-timeout"))
        rec.body_sha256s.append(self.sha.hexdigest())
        rec.paths.append(self.path)
        rec.authorities.append(self.authority)
        rec.methods.append(self.method)
        rec.faults.append(self.fault)

    def report(self):
        return json.dumps({
            "attempt": self.attempt, "key": self.key, "method": self.method, "path": self.path,
            "authority": self.authority, "scheme": self.scheme, "protocol": self.protocol,
            "headers": [[k, v] for k, v in self.headers], "body_len": self.body_len,
            "body_sha256": self.sha.hexdigest(), "grpc_timeout": self.header("grpc-timeout"),
            "conn_id": self.conn_id,
        }).encode()

    def extra_headers(self):
        out = []
        for item in (self.header("x-resp-header") or "").split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                out.append((k.strip().lower(), v.strip()))
        return out


def _int(v):
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        return None


def control_response(path, protocol=None):
    """(status, body) of a control request."""
    p, _, q = path.partition("?")
    if p == "/__stats":
        return 200, json.dumps(STATS).encode()
    if OPTS.health_path is not None and p == OPTS.health_path:
        HEALTH["checks"] += 1
        HEALTH["protocols"][protocol] = HEALTH["protocols"].get(protocol, 0) + 1
        return HEALTH["status"], json.dumps({"health": HEALTH["status"]}).encode()
    if p == "/__health":
        status = urllib.parse.parse_qs(q).get("status", [None])[0]
        if status is not None:
            HEALTH["status"] = int(status)
        return 200, json.dumps(HEALTH).encode()
    key = urllib.parse.parse_qs(q, keep_blank_values=True).get("key", [""])[0]
    rec = KEYS.get(key)
    return 200, json.dumps(rec.to_json() if rec else KeyRecord().to_json()).encode()


def fault_kind(fault):
    """'status:503' -> ('status', '503'); 'goaway' -> ('goaway', '')."""
    kind, _, arg = (fault or "").partition(":")
    return kind.strip().lower(), arg.strip()


def grpc_code(arg):
    names = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
             "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
             "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
             "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
    return str(names.get(arg.upper(), _int(arg) if _int(arg) is not None else 2))


def h2_error_code(arg):
    try:
        return h2.errors.ErrorCodes[arg.upper()]
    except KeyError:
        return int(arg) if arg.isdigit() else h2.errors.ErrorCodes.INTERNAL_ERROR


def empty_grpc_message():
    return b"\x00" + struct.pack(">I", 0)


# ------------------------------------------------------------------------------ connections

CONN_SEQ = [0]


async def handle(reader, writer):
    CONN_SEQ[0] += 1
    conn_id = CONN_SEQ[0]
    STATS["connections"] += 1
    STATS["open_connections"] += 1
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    buf = b""
    try:
        while len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            buf += data
        if buf.startswith(PREFACE):
            STATS["h2_connections"] += 1
            await H2Conn(reader, writer, conn_id).run(buf)
        else:
            STATS["h1_connections"] += 1
            await H1Conn(reader, writer, conn_id, buf).run()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        STATS["open_connections"] -= 1
        if not writer.is_closing():
            writer.close()


async def graceful_close(reader, writer, linger=1.0):
    """FIN our side, read (and drop) what the peer still sends until its FIN or `linger` s, then close:
    closing with unread input would send a reset that can destroy the frames we just wrote."""
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        end = loop.time() + linger
        while True:
            left = end - loop.time()
            if left <= 0:
                break
            data = await asyncio.wait_for(reader.read(65536), left)
            if not data:
                break
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    writer.close()


def abort_with_reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


# ------------------------------------------------------------------------------ HTTP/1.1

class BadRequest(Exception):
    pass


class H1Conn:
    def __init__(self, reader, writer, conn_id, initial):
        self.reader, self.writer, self.conn_id = reader, writer, conn_id
        self.buf = bytearray(initial)
        self.responses = 0

    async def fill(self, timeout=None):
        if timeout is None:
            data = await self.reader.read(65536)
        else:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            raise ConnectionError("eof")
        self.buf += data

    async def readline(self, timeout=None):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise BadRequest("line too long")
            await self.fill(timeout)

    async def readexactly(self, n):
        while len(self.buf) < n:
            await self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_headers(self):
        fields = []
        while True:
            line = await self.readline()
            if line in (b"\r\n", b"\n"):
                return fields
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or len(fields) >= MAX_HEADERS:
                raise BadRequest("bad header line")
            fields.append((name.strip().lower(), value.strip()))

    async def run(self):
        idle_ms = None
        while True:
            if OPTS.h1_close_after and self.responses >= OPTS.h1_close_after:
                # silently dead: looks idle, drops the next request unanswered
                if OPTS.h1_close_mode == "immediate" or self.buf:
                    STATS["h1_dropped"] += bool(self.buf)
                    abort_with_reset(self.writer) if self.buf else self.writer.close()
                    return
                await self.fill()
                STATS["h1_dropped"] += 1
                abort_with_reset(self.writer)
                return
            try:
                line = await self.readline(timeout=idle_ms / 1000.0 if idle_ms else None)
            except asyncio.TimeoutError:
                self.writer.close()
                return
            idle_ms = None
            if line in (b"\r\n", b"\n"):
                continue
            result = await self.one_request(line)
            if result is False:
                return
            if not isinstance(result, bool) and isinstance(result, int) and result > 0:
                idle_ms = result  # (True is an int too: it means keep serving, with no idle limit)

    async def one_request(self, line):
        """Returns False to stop serving the connection, or an idle close timeout in ms, or True."""
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            self.writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await graceful_close(self.reader, self.writer, 0.2)
            return False
        method, target, version = parts
        headers = await self.read_headers()
        req = Request("h1", method, target, None, "http", headers, self.conn_id)
        req.authority = req.header("host")
        if (req.header("expect") or "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await self.read_body(req)
        close = (req.header("connection") or "").lower() == "close" or version == "HTTP/1.0"
        if req.control:
            status, body = control_response(req.path, req.protocol)
            await self.write_head(status, [("content-type", "application/json"),
                                           ("content-length", str(len(body)))], close)
            self.writer.write(body)
            await self.writer.drain()  # control requests do not count towards --h1-close-after
            return not close
        STATS["active"] += 1
        try:
            req.account()
            return await self.respond(req, close)
        finally:
            STATS["active"] -= 1

    async def read_body(self, req):
        te = (req.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            while True:
                size = int((await self.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    break
                req.add_body(await self.readexactly(size))
                if await self.readexactly(2) != b"\r\n":
                    raise BadRequest("bad chunk end")
            await self.read_headers()  # trailers, dropped
            return
        cl = req.header("content-length")
        if cl is not None:
            left = int(cl)
            while left > 0:
                if not self.buf:
                    await self.fill()
                n = min(left, len(self.buf))
                req.add_body(bytes(self.buf[:n]))
                del self.buf[:n]
                left -= n

    async def write_head(self, status, headers, close):
        head = [f"HTTP/1.1 {status} Fault"] + [f"{k}: {v}" for k, v in headers]
        if close:
            head.append("Connection: close")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def respond(self, req, close):
        kind, arg = fault_kind(req.fault)
        if req.delay_ms:
            await asyncio.sleep(req.delay_ms / 1000.0)
        base = [("x-attempt", str(req.attempt)), ("server", "fault-origin")] + req.extra_headers()
        if kind in ("rst", "goaway"):
            STATS["h1_dropped"] += 1
            await graceful_close(self.reader, self.writer, 0.5)
            return False
        status = 200
        if kind == "status":
            status = int(arg)
        idle_close = None
        if kind == "h1-close-idle-ms":
            idle_close = int(arg)
        if kind.startswith("grpc-"):
            code = grpc_code(arg)
            hdrs = base + [("content-type", "application/grpc")]
            if kind == "grpc-trailers-only":
                await self.write_head(200, hdrs + [("grpc-status", code), ("content-length", "0")], close)
            else:
                msg = bytes(req.body) if kind == "grpc-trailers-after-data" and req.body else b""
                if kind == "grpc-trailers-after-data" and not msg:
                    msg = empty_grpc_message()
                await self.write_head(200, hdrs + [("transfer-encoding", "chunked"), ("trailer", "grpc-status")],
                                      close)
                if msg:
                    self.writer.write(b"%x\r\n" % len(msg) + msg + b"\r\n")
                self.writer.write(f"0\r\ngrpc-status: {code}\r\n\r\n".encode())
        else:
            if req.is_grpc:
                body = bytes(req.body)
                hdrs = base + [("content-type", "application/grpc"), ("transfer-encoding", "chunked"),
                               ("trailer", "grpc-status")]
            else:
                body = req.report()
                hdrs = base + [("content-type", "application/json"), ("content-length", str(len(body)))]
            if kind == "close-after-headers":
                if not req.is_grpc:
                    hdrs = [h for h in hdrs if h[0] != "content-length"] + [("content-length", str(len(body) + 1000))]
                await self.write_head(status, hdrs, close)
                await graceful_close(self.reader, self.writer, 0.5)
                return False
            await self.write_head(status, hdrs, close)
            if req.body_delay_ms:
                await asyncio.sleep(req.body_delay_ms / 1000.0)
            if req.method != "HEAD":
                if req.is_grpc:
                    if body:
                        self.writer.write(b"%x\r\n" % len(body) + body + b"\r\n")
                    self.writer.write(b"0\r\ngrpc-status: 0\r\n\r\n")
                else:
                    self.writer.write(body)
        await self.writer.drain()
        self.responses += 1
        if close:
            await graceful_close(self.reader, self.writer, 0.2)
            return False
        return idle_close if idle_close else True


# ------------------------------------------------------------------------------ HTTP/2

class H2Stream:
    def __init__(self, sid, req):
        self.id = sid
        self.req = req
        self.reset = False
        self.task = None


class H2Conn:
    def __init__(self, reader, writer, conn_id):
        self.reader, self.writer, self.conn_id = reader, writer, conn_id
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=True))
        self.streams = {}
        self.closed = False
        self.window_waiters = []

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def wake(self):
        for f in self.window_waiters:
            if not f.done():
                f.set_result(None)
        self.window_waiters = []

    async def run(self, initial):
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.flush()
        data = initial
        try:
            while data:
                if not self.closed:  # after a GOAWAY / dropped connection: read and discard until EOF
                    if not self.feed(data):
                        break
                    await self.writer.drain()
                data = await self.reader.read(65536)
        finally:
            self.closed = True
            for s in list(self.streams.values()):
                if s.task:
                    s.task.cancel()
            self.wake()

    def feed(self, data):
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.writer.close()
            return False
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                hd = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers]
                d = dict(hd)
                req = Request("h2", d.get(":method"), d.get(":path", ""), d.get(":authority"), d.get(":scheme"),
                              hd, self.conn_id)
                self.streams[ev.stream_id] = H2Stream(ev.stream_id, req)
                if not ev.stream_ended and (req.header("expect") or "").lower() == "100-continue":
                    self.conn.send_headers(ev.stream_id, [(b":status", b"100")])
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.req.add_body(ev.data)
                if ev.flow_controlled_length:
                    try:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except (h2.exceptions.StreamClosedError, KeyError):
                        self.conn.increment_flow_control_window(ev.flow_controlled_length)
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                if ev.stream_ended:
                    self.start(ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.start(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                STATS["resets_received"] += 1
                s = self.streams.pop(ev.stream_id, None)
                if s is not None:
                    s.reset = True
                    key = s.req.header("x-fault-key") or ""
                    if not s.req.control:
                        key_record(key).resets += 1
                    if s.task:
                        s.task.cancel()
                self.wake()
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self.wake()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.flush()
                self.writer.close()
                return False
        self.flush()
        return True

    def start(self, sid):
        s = self.streams.get(sid)
        if s is not None and s.task is None:
            s.task = asyncio.get_running_loop().create_task(self.respond(s))

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
                f = asyncio.get_running_loop().create_future()
                self.window_waiters.append(f)
                await f
                continue
            n = min(window, left)
            last = end_stream and n == left
            self.conn.send_data(s.id, bytes(view[off:off + n]), end_stream=last)
            off += n
            self.flush()
            await self.writer.drain()
            if last:
                return

    def half_close(self, linger=1.0):
        """Flushes, sends FIN and stops processing input (run() discards it until the peer's FIN); closes
        for good after `linger` s. Not an abortive close: unread input would turn it into a reset that can
        destroy the frames just written."""
        self.flush()
        self.closed = True
        self.wake()
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except (OSError, RuntimeError):
            pass
        for st in list(self.streams.values()):
            if st.task and st.task is not asyncio.current_task():
                st.task.cancel()
        asyncio.get_running_loop().call_later(linger, lambda: self.writer.is_closing() or self.writer.close())

    def send_headers(self, s, headers, end_stream=False):
        self.conn.send_headers(s.id, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                               end_stream=end_stream)
        self.flush()

    async def respond(self, s):
        req = s.req
        counted = not req.control
        if counted:
            STATS["active"] += 1
        try:
            if req.control:
                status, body = control_response(req.path, req.protocol)
                self.send_headers(s, [(":status", str(status)), ("content-type", "application/json"),
                                      ("content-length", str(len(body)))])
                await self.send_data(s, body, True)
                return
            req.account()
            await self._respond(s, req)
        except (ConnectionError, asyncio.CancelledError, h2.exceptions.StreamClosedError,
                h2.exceptions.ProtocolError):
            pass
        finally:
            if counted:
                STATS["active"] -= 1
            self.streams.pop(s.id, None)
            if not self.closed:
                self.flush()

    async def _respond(self, s, req):
        kind, arg = fault_kind(req.fault)
        if req.delay_ms:
            await asyncio.sleep(req.delay_ms / 1000.0)
        if s.reset or self.closed:
            return
        base = [("x-attempt", str(req.attempt)), ("server", "fault-origin")] + req.extra_headers()
        if kind == "rst":
            self.conn.reset_stream(s.id, h2_error_code(arg))
            self.flush()
            return
        if kind == "goaway":
            self.conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=max(0, s.id - 2))
            self.half_close()
            return
        if kind.startswith("grpc-"):
            code = grpc_code(arg)
            hdrs = [(":status", "200"), ("content-type", "application/grpc")] + base
            if kind == "grpc-trailers-only":
                self.send_headers(s, hdrs + [("grpc-status", code)], end_stream=True)
                return
            self.send_headers(s, hdrs)
            if kind == "grpc-trailers-after-data":
                msg = bytes(req.body) if req.body else empty_grpc_message()
                await self.send_data(s, msg, False)
            self.send_headers(s, [("grpc-status", code)], end_stream=True)
            return
        status = int(arg) if kind == "status" else 200
        if req.is_grpc and kind != "status":
            body = bytes(req.body)
            hdrs = [(":status", "200"), ("content-type", "application/grpc")] + base
        else:
            body = req.report()
            hdrs = [(":status", str(status)), ("content-type", "application/json"),
                    ("content-length", str(len(body)))] + base
        if kind == "close-after-headers":
            self.send_headers(s, hdrs)
            self.half_close()
            return
        head_only = req.method == "HEAD"
        self.send_headers(s, hdrs, end_stream=head_only)
        if head_only:
            return
        if req.body_delay_ms:
            await asyncio.sleep(req.body_delay_ms / 1000.0)
        if req.is_grpc and kind != "status":
            await self.send_data(s, body, False)
            self.send_headers(s, [("grpc-status", "0")], end_stream=True)
        else:
            await self.send_data(s, body, True)


# ------------------------------------------------------------------------------ for tests

class Handle:
    """A running fault origin, as tests see it (start() returns one). Control requests go over HTTP/1.1."""

    def __init__(self, proc, port):
        self.proc, self.port = proc, port

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def _get(self, path):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return json.loads(r.read())
        finally:
            c.close()

    def attempts(self, key):
        """The /__attempts record of `key` (see the top of this file)."""
        return self._get("/__attempts?key=" + urllib.parse.quote(key, safe=""))

    def stats(self):
        return self._get("/__stats")

    def health(self, status=None):
        """{"status", "checks"} of --health-path; sets the status it answers first if `status` is given."""
        return self._get("/__health" + (f"?status={status}" if status is not None else ""))

    def settled_attempts(self, key, quiet=0.3, timeout=5.0):
        """The attempts record of `key` once its count has not changed for `quiet` s (asynchronous
        senders such as mirrors), or after `timeout` s."""
        import time
        end = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            rec = self.attempts(key)
            now = time.monotonic()
            if rec["attempts"] != (last["attempts"] if last else None):
                last, since = rec, now
            elif now - since >= quiet or now >= end:
                return rec
            time.sleep(0.05)


def start(workdir, *args, name="fault-origin"):
    """Starts this origin with `args` (e.g. "--h1-close-after", "1") and returns a Handle; the caller stops
    handle.proc."""
    from procutil import start_tool
    proc, port = start_tool("fault_origin.py", list(args), str(workdir), name=name)
    return Handle(proc, port)


# ------------------------------------------------------------------------------ main

async def serve(host, port, ready_file):
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, host, port, reuse_address=True, backlog=1024, limit=1 << 20)
    bound = server.sockets[0].getsockname()[1]
    write_ready_file(ready_file, bound)
    print(f"fault origin on {host}:{bound}", flush=True)
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
    ap.add_argument("--h1-close-after", type=int, default=0)
    ap.add_argument("--h1-close-mode", choices=["next-request", "immediate"], default="next-request")
    ap.add_argument("--default-delay-ms", type=int, default=0)
    ap.add_argument("--default-fault")
    ap.add_argument("--health-path")
    ap.add_argument("--health-status", type=int, default=200)
    args = ap.parse_args()
    OPTS.health_path = args.health_path
    HEALTH["status"] = args.health_status
    OPTS.h1_close_after = args.h1_close_after
    OPTS.h1_close_mode = args.h1_close_mode
    OPTS.default_delay_ms = args.default_delay_ms
    OPTS.default_fault = args.default_fault
    asyncio.run(serve(args.host, args.port, args.ready_file))


if __name__ == "__main__":
    main()
