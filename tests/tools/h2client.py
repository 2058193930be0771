"""A small blocking HTTP/2 client on python3-h2, for tests that need frame-level control.

It can send header blocks that a normal client refuses to send (validation off), hold back
WINDOW_UPDATEs to read slowly, and reports RST_STREAM codes and GOAWAY per stream.
Not thread-safe: one thread per H2Client.
"""

import select
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


class _GracefulConnection(h2.connection.H2Connection):
    """h2 4.1 closes its state machine on any GOAWAY and then rejects the frames of streams the peer
    is still finishing (a graceful shutdown). Keep the connection usable for those streams."""

    def _receive_goaway_frame(self, frame):
        prev = self.state_machine.state
        pending = bytes(self._data_to_send)
        frames, events = super()._receive_goaway_frame(frame)
        if prev != h2.connection.ConnectionState.CLOSED:
            self.state_machine.state = prev
            self._data_to_send = bytearray(pending) + self._data_to_send
        return frames, events


class Response:
    def __init__(self, sid):
        self.stream_id = sid
        self.headers = None
        self.status = None
        self.data = bytearray()
        self.trailers = []
        self.ended = False
        self.reset_code = None  # error code of an RST_STREAM that cut this stream short
        self.reset_after_end = None  # an RST_STREAM after the complete response (RFC 9113 8.1: NO_ERROR, "stop sending")
        self.headers_ended = False  # the response HEADERS carried END_STREAM (e.g. gRPC trailers-only)
        self.data_frames = 0  # DATA frames received, empty ones included

    @property
    def done(self):
        return self.ended or self.reset_code is not None

    def header(self, name):
        name = name.encode() if isinstance(name, str) else name
        for k, v in self.headers or ():
            if k == name:
                return v.decode("latin-1")
        return None

    def trailer(self, name):
        name = name.encode() if isinstance(name, str) else name
        for k, v in self.trailers:
            if k == name:
                return v.decode("latin-1")
        return None


class H2Client:
    def __init__(self, host, port, *, tls=None, server_hostname=None, validate=True, auto_ack=True,
                 initial_window=None, timeout=10.0):
        """tls: an ssl.SSLContext (ALPN h2 is set on it) or None for prior-knowledge h2c."""
        self.host, self.port = host, port
        self.authority = f"{server_hostname or host}:{port}"
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
            if sock.selected_alpn_protocol() != "h2":
                raise RuntimeError(f"ALPN selected {sock.selected_alpn_protocol()!r}")
        self.sock = sock
        self.auto_ack = auto_ack
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate, validate_inbound_headers=False)
        self.conn = _GracefulConnection(cfg)
        if initial_window is not None:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.conn.initiate_connection()
        if auto_ack:
            self.conn.increment_flow_control_window(16 << 20)
        self.responses = {}
        self.goaway = None  # (last_stream_id, error_code)
        self.closed = False
        self.settings_received = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

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

    # sending
    def request(self, method="GET", path="/", headers=(), body=None, authority=None, end_stream=True, scheme="http"):
        """Opens a stream; returns its id. Bytes headers are sent as given; str are encoded."""
        hdrs = [(b":method", method.encode()), (b":scheme", scheme.encode()), (b":path", path.encode()),
                (b":authority", (authority or self.authority).encode())]
        hdrs += [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v) for k, v in headers]
        return self.send_headers(hdrs, end_stream=end_stream and body is None, body=body, end_after_body=end_stream)

    def send_headers(self, hdrs, end_stream=True, body=None, end_after_body=True):
        """Sends a header block exactly as given (validation off if constructed with validate=False)."""
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = Response(sid)
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end_stream=end_after_body)
        return sid

    def send_body(self, sid, body, end_stream=True, timeout=30.0):
        """Sends body bytes, waiting for flow-control window as needed."""
        view = memoryview(body)
        off = 0
        deadline = time.monotonic() + timeout
        while off < len(view):
            r = self.responses[sid]
            if r.done or self.closed:
                return off
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no flow-control window")
                self.pump(0.2)
                continue
            n = min(window, len(view) - off)
            self.conn.send_data(sid, bytes(view[off:off + n]), end_stream=end_stream and off + n == len(view))
            off += n
            self.flush()
        if end_stream and len(view) == 0:
            self.conn.end_stream(sid)
            self.flush()
        return off

    def end_stream(self, sid):
        self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid, code=h2.errors.ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def ack(self, sid, n):
        """Returns n bytes of window to the peer (stream and connection)."""
        try:
            self.conn.acknowledge_received_data(n, sid)
        except (h2.exceptions.StreamClosedError, KeyError):
            self.conn.increment_flow_control_window(n)
        self.flush()

    def ping(self):
        self.conn.ping(b"12345678")
        self.flush()

    # receiving
    def pump(self, timeout):
        """Reads and processes whatever arrives within `timeout` seconds (one read). Returns events."""
        if self.closed:
            return []
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                pass
            else:
                return []
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            raise
        for ev in events:
            self.on_event(ev)
        self.flush()
        return events

    def on_event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            r = self.responses[ev.stream_id]
            r.headers = ev.headers
            r.status = int(dict(ev.headers)[b":status"])
            r.headers_ended = ev.stream_ended is not None
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(ev, h2.events.DataReceived):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.data += ev.data
                r.data_frames += 1
            if self.auto_ack and ev.flow_controlled_length:
                self.ack(ev.stream_id, ev.flow_controlled_length)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.responses[ev.stream_id].trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            self.responses[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                if r.ended:
                    r.reset_after_end = ev.error_code
                else:
                    r.reset_code = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.last_stream_id, ev.error_code)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_received = True

    def wait(self, sids=None, timeout=10.0):
        """Pumps until the given streams (default: all) are done, the connection closes, or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [s for s in (sids if sids is not None else self.responses) if not self.responses[s].done]
            if not pending or self.closed:
                return not pending
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.2))

    def get(self, path="/", headers=(), timeout=10.0, **kw):
        sid = self.request("GET", path, headers, **kw)
        if not self.wait([sid], timeout):
            raise TimeoutError(f"GET {path}: no complete response in {timeout}s")
        return self.responses[sid]
