"""A frame-level HTTP/2 client for conformance and abuse tests (hyperframe + hpack, no h2 state
machine): it sends exactly the frames a test builds, including invalid ones, and records what the
server sends back.

    c = RawH2("127.0.0.1", port)            # or tls=ssl context (ALPN h2)
    c.handshake()                           # preface + SETTINGS, waits for the server's SETTINGS
    c.send(c.headers_frame(1, c.req("/x"), end_stream=True))
    ev = c.expect_goaway()                  # -> GoAway(error_code, last_stream_id) or None if closed
"""

import select
import socket
import ssl
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xb


class GoAway:
    def __init__(self, error_code, last_stream_id, debug):
        self.error_code, self.last_stream_id, self.debug = error_code, last_stream_id, debug

    def __repr__(self):
        return f"GOAWAY(error={self.error_code:#x}, last={self.last_stream_id}, debug={self.debug!r})"


class RawH2:
    def __init__(self, host, port, *, tls=None, server_hostname=None, timeout=10.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
            if sock.selected_alpn_protocol() != "h2":
                raise RuntimeError(f"ALPN selected {sock.selected_alpn_protocol()!r}")
        self.sock = sock
        self.authority = f"{server_hostname or host}:{port}".encode()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 1 << 16
        self.buf = b""
        self.frames = []  # every frame received, in order
        self.closed = False
        self.server_settings = {}
        self.raw_in = b""  # everything received (for tests of non-HTTP/2 answers)

    # ------------------------------------------------------------------ sending
    def send(self, *items):
        """Sends frames (hyperframe objects) and/or raw bytes in one write."""
        out = b"".join(i if isinstance(i, (bytes, bytearray)) else i.serialize() for i in items)
        try:
            self.sock.sendall(out)
        except OSError:
            self.closed = True

    def handshake(self, settings=None, timeout=5.0):
        s = SettingsFrame(0)
        for k, v in (settings or {}).items():
            s.settings[k] = v
        self.send(PREFACE, s)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for f in self.read(0.2):
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    self.server_settings = dict(f.settings)
                    ack = SettingsFrame(0)
                    ack.flags.add("ACK")
                    self.send(ack)
                    return f
            if self.closed:
                break
        raise AssertionError("no SETTINGS from the server")

    def req(self, path="/", method="GET", extra=()):
        return [(":method", method), (":scheme", "http"), (":path", path), (":authority", self.authority.decode())] + \
            list(extra)

    def block(self, hdrs):
        return self.enc.encode(hdrs)

    def headers_frame(self, sid, hdrs, end_stream=False, end_headers=True, block=None):
        f = HeadersFrame(sid)
        f.data = block if block is not None else self.block(hdrs)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def continuation(self, sid, data, end_headers=True):
        f = ContinuationFrame(sid)
        f.data = data
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def data(self, sid, payload=b"", end_stream=False):
        f = DataFrame(sid)
        f.data = payload
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def rst(self, sid, code=CANCEL):
        f = RstStreamFrame(sid)
        f.error_code = code
        return f

    def window_update(self, sid, inc):
        f = WindowUpdateFrame(sid)
        f.window_increment = inc
        return f

    def priority(self, sid, depends_on=0, weight=16, exclusive=False):
        f = PriorityFrame(sid)
        f.depends_on, f.stream_weight, f.exclusive = depends_on, weight, exclusive
        return f

    def ping(self, payload=b"12345678", ack=False):
        f = PingFrame(0)
        f.opaque_data = payload
        if ack:
            f.flags.add("ACK")
        return f

    def settings(self, values=None, ack=False):
        f = SettingsFrame(0)
        if ack:
            f.flags.add("ACK")
        for k, v in (values or {}).items():
            f.settings[k] = v
        return f

    @staticmethod
    def raw_frame(ftype, flags, sid, payload):
        """A frame from its parts (for frames hyperframe refuses to build)."""
        n = len(payload)
        return bytes([n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff, ftype, flags]) + (sid & 0x7fffffff).to_bytes(4, "big") + \
            payload

    # ------------------------------------------------------------------ receiving
    def read(self, timeout):
        """One read (waiting at most `timeout`); returns the complete frames it brought."""
        if self.closed:
            return []
        if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return []
        try:
            data = self.sock.recv(1 << 16)
        except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.raw_in += data
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            f.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            if isinstance(f, (HeadersFrame,)):
                try:
                    f.decoded = self.dec.decode(f.data, raw=True)
                except Exception as e:  # noqa: BLE001 (kept for the test to see)
                    f.decoded = e
            out.append(f)
        self.frames += out
        return out

    def pump_until(self, pred, timeout=5.0):
        """Reads until pred(frame) is true for a received frame (returns it) or the connection closes / times out
        (returns None)."""
        deadline = time.monotonic() + timeout
        for f in self.frames:
            if pred(f):
                return f
        while time.monotonic() < deadline and not self.closed:
            for f in self.read(min(0.2, max(0.0, deadline - time.monotonic()))):
                if pred(f):
                    return f
        return None

    def expect_goaway(self, timeout=5.0):
        """The server's GOAWAY (GoAway) if one arrives before the connection closes or `timeout`; else None."""
        f = self.pump_until(lambda f: isinstance(f, GoAwayFrame), timeout)
        if f is None:
            return None
        return GoAway(f.error_code, f.last_stream_id, bytes(f.additional_data))

    def wait_closed(self, timeout=5.0):
        """True once the server has closed the connection (reads and drops frames meanwhile)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.read(0.2)
        return self.closed

    def rst_for(self, sid, timeout=5.0):
        """The error code of the server's RST_STREAM on `sid`, or None."""
        f = self.pump_until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == sid, timeout)
        return None if f is None else f.error_code

    def response_for(self, sid, timeout=5.0):
        """The decoded response HEADERS on `sid` as a dict (first block), or None."""
        f = self.pump_until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == sid, timeout)
        if f is None or isinstance(f.decoded, Exception):
            return None
        return {k.decode(): v.decode() for k, v in f.decoded}

    def goaway_seen(self):
        for f in self.frames:
            if isinstance(f, GoAwayFrame):
                return GoAway(f.error_code, f.last_stream_id, bytes(f.additional_data))
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
