"""HTTP/2 abuse limits (docs/hardening.md): rapid reset and MadeYouReset (premature resets), empty-frame (padding only
included),
PRIORITY and WINDOW_UPDATE floods, and peers that flood the outbound queue without reading. Each ends the
connection with GOAWAY ENHANCE_YOUR_CALM (or closes it, when the peer does not read) and counts
remora_downstream_h2_abuse_total{kind}; well-behaved connections are left alone.

Frame-level, with tests/tools/h2raw.py; the origin behind the agent counts what reached it."""

import json
import os
import socket
import time

import pytest

import support
from h2client import H2Client
from h2raw import CANCEL, ENHANCE_YOUR_CALM, NO_ERROR, PROTOCOL_ERROR, RawH2

pytestmark = pytest.mark.agent_only("remora's own abuse limits")


@pytest.fixture(scope="module")
def px(module_proxy_factory, h2_origin):
    return module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", workers=1)


def origin_requests(origin):
    return origin.stats()["requests"]


def abuse_count(px, kind):
    return support.metric(px.metrics(), "remora_downstream_h2_abuse_total", kind=kind) or 0


def still_serves(px):
    with H2Client("127.0.0.1", px.port) as c:
        return c.get("/alive", timeout=5).status == 200


def rapid_reset(c, pairs, batch=50, first_sid=1, code=CANCEL):
    """HEADERS+RST_STREAM pairs, `batch` pairs per write, until `pairs` are sent or the connection closes."""
    sid, sent = first_sid, 0
    while sent < pairs and not c.closed:
        frames = []
        for _ in range(min(batch, pairs - sent)):
            frames += [c.headers_frame(sid, c.req("/rapid"), end_stream=True), c.rst(sid, code)]
            sid += 2
            sent += 1
        c.send(*frames)
        c.read(0)
    return sent


@pytest.mark.parametrize("code", [CANCEL, NO_ERROR])
def test_rapid_reset_goaway_and_bounded_upstream(px, h2_origin, code):
    before_req, before_abuse = origin_requests(h2_origin), abuse_count(px, "premature_reset")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        sent = rapid_reset(c, 3000, code=code)
        g = c.expect_goaway(5)
        assert g is not None, f"no GOAWAY after {sent} reset streams"
        assert g.error_code == ENHANCE_YOUR_CALM, g
        # Envoy's rule: judged from the 500th closed stream on, so the connection ends there (plus what was in flight)
        assert 500 * 2 - 1 <= g.last_stream_id <= 700 * 2, g
        assert c.wait_closed(5), "connection not closed after the GOAWAY"
    time.sleep(0.2)
    assert origin_requests(h2_origin) - before_req <= 100
    assert abuse_count(px, "premature_reset") == before_abuse + 1
    assert still_serves(px)


def test_rapid_reset_opens_nothing_upstream_http1(module_proxy_factory, h1_origin):
    """Streams reset in the read that opened them are never routed: an HTTP/1.1 upstream sees no request and no
    connection for them."""
    px1 = module_proxy_factory(upstream=h1_origin.addr, upstream_protocol="http1", workers=1)
    before = h1_origin.stats()
    with RawH2("127.0.0.1", px1.port) as c:
        c.handshake()
        rapid_reset(c, 3000)
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    time.sleep(0.2)
    after = h1_origin.stats()
    # the stats requests themselves open a connection each
    assert after["connections"] - before["connections"] <= 1 + 10, (before, after)
    assert after["requests"] - before["requests"] <= 10, (before, after)


# timing-bound: whether the origin's response head beats the server-side reset decides which streams are premature,
# so the bound on the GOAWAY's stream id holds at the optimized build's speed only
@pytest.mark.skipif(os.environ.get("REMORA_SANITIZED") == "1", reason="timing-bound: runs on the optimized build only")
def test_made_you_reset_counts_as_premature(px, h2_origin):
    """CVE-2025-8671: the client makes the server reset its streams (more DATA than its content-length is a stream
    error PROTOCOL_ERROR); those resets count toward the premature-reset rule. (WINDOW_UPDATE of 0 on a stream and
    DATA on a half-closed stream, the other classic triggers, are connection errors in nghttp2 already.)"""
    before_req, before_abuse = origin_requests(h2_origin), abuse_count(px, "premature_reset")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        sid = 1
        while sid < 2 * 1200 and not c.closed:
            frames = []
            for _ in range(50):
                frames += [c.headers_frame(sid, c.req("/myr", "POST", [("content-length", "1")])),
                           c.data(sid, b"xx", end_stream=True)]
                sid += 2
            c.send(*frames)
            # paced by the agent's answers (the batch's last stream reset, or the GOAWAY): a stream the agent resets
            # stays open in nghttp2 until its RST_STREAM is written, so a client that outruns the agent's writes hits
            # SETTINGS_MAX_CONCURRENT_STREAMS (a PROTOCOL_ERROR GOAWAY) before the premature-reset rule can count
            last = sid - 2
            c.pump_until(lambda f: getattr(f, "stream_id", None) == last or type(f).__name__ == "GoAwayFrame", timeout=2)
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
        assert g.last_stream_id <= 700 * 2, g
    time.sleep(0.2)
    assert origin_requests(h2_origin) - before_req <= 100
    assert abuse_count(px, "premature_reset") == before_abuse + 1


def test_completed_streams_are_not_premature(px):
    """Streams that get their response, even when the client resets some of them early, do not close the connection:
    600 streams, a third reset right after their HEADERS."""
    with H2Client("127.0.0.1", px.port) as c:
        for i in range(600):
            sid = c.request("GET", f"/ok{i}")
            if i % 3 == 0:
                c.reset(sid)
            if i % 50 == 49:
                c.wait([s for s, r in c.responses.items() if r.reset_code is None and s % 6 != 1], timeout=10)
        assert c.wait([s for s in c.responses if (s - 1) // 2 % 3 != 0], timeout=20)
        assert c.goaway is None and not c.closed
        assert c.get("/after", timeout=5).status == 200


def test_empty_data_frames(px):
    before = abuse_count(px, "empty_frames")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        c.send(c.headers_frame(1, c.req("/empty", "POST"), end_stream=False), c.data(1, b""), c.data(1, b""))
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
        assert c.wait_closed(5)
    assert abuse_count(px, "empty_frames") == before + 1


def test_padding_only_data_frames(px):
    """DATA frames with nothing but padding are empty frames too."""
    before = abuse_count(px, "empty_frames")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        padded = c.raw_frame(0x0, 0x8, 1, bytes([20]) + b"\0" * 20)  # PADDED, 20 bytes of padding, no data
        c.send(c.headers_frame(1, c.req("/pad", "POST"), end_stream=False), padded, padded)
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    assert abuse_count(px, "empty_frames") == before + 1


def test_padded_data_with_payload_is_fine(px):
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        padded = c.raw_frame(0x0, 0x8, 1, bytes([20]) + b"abc" + b"\0" * 20)
        c.send(c.headers_frame(1, c.req("/pad", "POST"), end_stream=False), padded, padded, padded,
               c.data(1, b"", end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200", c.frames
        assert c.goaway_seen() is None


def test_one_empty_data_frame_is_fine(px):
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        c.send(c.headers_frame(1, c.req("/one-empty", "POST"), end_stream=False), c.data(1, b""),
               c.data(1, b"body", end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200", c.frames
        assert c.goaway_seen() is None


def test_empty_continuation_frames(px):
    before = abuse_count(px, "empty_frames")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        block = c.block(c.req("/cont"))
        c.send(c.headers_frame(1, None, end_stream=True, end_headers=False, block=block[:3]),
               c.continuation(1, b"", end_headers=False), c.continuation(1, b"", end_headers=False),
               c.continuation(1, block[3:], end_headers=True))
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    assert abuse_count(px, "empty_frames") == before + 1


def test_priority_flood(px):
    before = abuse_count(px, "priority")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        # no stream opened: at most 100 x (1 + 0)
        c.send(*[c.priority(2 * i + 1) for i in range(101)])
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    assert abuse_count(px, "priority") == before + 1


def test_priority_within_limit(px):
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        c.send(*[c.priority(2 * i + 101) for i in range(100)])
        c.send(c.headers_frame(1, c.req("/prio"), end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200"
        assert c.goaway_seen() is None


def test_window_update_flood(px):
    before = abuse_count(px, "window_update")
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        # nothing was sent to this client: 5 + 2 x (0 + 10 x 0) WINDOW_UPDATEs at most
        c.send(*[c.window_update(0, 1) for _ in range(6)])
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    assert abuse_count(px, "window_update") == before + 1


def test_window_updates_for_a_large_download_are_fine(px):
    """A client that acknowledges every DATA frame stays within the limit."""
    with H2Client("127.0.0.1", px.port) as c:  # acknowledges each DATA frame (stream and connection)
        r = c.get("/big", headers=[("x-stream-bytes", str(2 << 20))], timeout=20)
        assert r.status == 200 and len(r.data) == 2 << 20
        assert c.goaway is None
        assert c.get("/after", timeout=5).status == 200


def flood_without_reading(px, frame_bytes, limit_bytes=64 << 20):
    """Sends `frame_bytes` repeatedly on a connection whose receive buffer is tiny, never reading, until the agent
    stops reading or closes; returns the socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", px.port))
    s.setblocking(False)
    from h2raw import PREFACE
    from hyperframe.frame import SettingsFrame
    pending = PREFACE + SettingsFrame(0).serialize()
    chunk = frame_bytes * (65536 // len(frame_bytes))
    sent, stalled_since = 0, None
    deadline = time.monotonic() + 30
    while sent < limit_bytes and time.monotonic() < deadline:
        data = pending or chunk
        try:
            n = s.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            break  # reset by the agent
        pending = data[n:] if pending else b""
        sent += n
        if n == 0:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 2:
                break  # the agent no longer reads
            time.sleep(0.01)
        else:
            stalled_since = None
    return s


def drained_to_eof(s, timeout=10):
    s.setblocking(True)
    s.settimeout(timeout)
    try:
        while s.recv(1 << 16):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_flood_peer_not_reading(px, kind):
    before = abuse_count(px, "outbound_control") + abuse_count(px, "outbound_frames")
    c = RawH2.__new__(RawH2)  # only for the frame builders
    frame = (c.ping() if kind == "ping" else c.settings()).serialize()
    s = flood_without_reading(px, frame)
    try:
        assert drained_to_eof(s), "the agent kept the connection of a flooding peer open"
    finally:
        s.close()
    after = abuse_count(px, "outbound_control") + abuse_count(px, "outbound_frames")
    assert after == before + 1
    assert still_serves(px)


def test_limits_are_configurable(proxy_factory, h2_origin, workdir):
    """Lower limits from the bootstrap's `limits:` apply (and are in --print-config's JSON)."""
    from procutil import free_port
    port, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(listen_port=port, health_port=health, admin_port=admin,
                                    routes=[{"prefix": "/", "cluster": "o"}],
                                    clusters=[{"name": "o", "protocol": "h2", "endpoints": [h2_origin.target]}])
    text += ("limits: {h2_premature_reset_min_streams: 20, h2_max_priority_frames_per_stream: 2,"
             " h2_max_consecutive_empty_frames: 3}\n")
    path = os.path.join(workdir, "agent.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = proxy_factory(config_path=path, listen_port=port, health_port=health, admin_port=admin)
    status, _, body = p.admin("/config_dump")
    assert status == 200
    limits = json.loads(body)["limits"]
    assert limits["h2_premature_reset_min_streams"] == 20
    assert limits["h2_max_outbound_control_frames"] == 1000  # a default
    with RawH2("127.0.0.1", port) as c:
        c.handshake()
        sent = rapid_reset(c, 200, batch=5)
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM and g.last_stream_id <= 2 * 40, (sent, g)
    with RawH2("127.0.0.1", port) as c:
        c.handshake()
        c.send(c.headers_frame(1, c.req("/e", "POST")), c.data(1), c.data(1), c.data(1), c.data(1, b"x", True))
        assert c.response_for(1, 5)[":status"] == "200"
        assert c.goaway_seen() is None
    with RawH2("127.0.0.1", port) as c:
        c.handshake()
        c.send(*[c.priority(2 * i + 1) for i in range(3)])
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM, g
    # logged once per connection (two connections were closed for abuse, after many frames over the limit)
    deadline = time.monotonic() + 5
    while p.log().count("closing a downstream HTTP/2 connection") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    log = p.log()
    assert log.count("closing a downstream HTTP/2 connection") == 2, log[-3000:]
    assert "premature_reset over its limit" in log and "priority over its limit" in log


def test_protocol_error_is_not_abuse(px):
    """A plain protocol error keeps its own code (the abuse counters are not a catch-all)."""
    with RawH2("127.0.0.1", px.port) as c:
        c.handshake()
        c.send(c.raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))  # WINDOW_UPDATE of 0 on the connection
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == PROTOCOL_ERROR, g
