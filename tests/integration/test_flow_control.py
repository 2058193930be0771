"""End-to-end flow control: a client that reads a huge streamed response very slowly must pause the
origin through the proxy; the proxy's RSS (VmRSS, plus children for the nghttpx stand-in) stays bounded."""

import socket
import time

import pytest

from h2client import H2Client

RSS_BOUND_KB = 30 * 1024  # growth allowed over the warmed-up baseline
TOTAL = 1 << 30  # what the origin would send if nothing held it back (1 GiB)
DURATION = 4.0


@pytest.fixture(params=["h2", "http1"])
def slow_px(request, proxy_factory, h1_origin, h2_origin):
    origin = h2_origin if request.param == "h2" else h1_origin
    px = proxy_factory(upstream=origin.addr, upstream_protocol=request.param, workers=1)
    # warm up (first connection, pools, buffers) before taking the baseline
    with H2Client("127.0.0.1", px.port) as c:
        for _ in range(3):
            assert c.get("/warm", headers=[("x-stream-bytes", str(1 << 20))]).status == 200
    time.sleep(0.2)
    return px


def expected(offset, n):
    base = bytes(range(256)) * ((n // 256) + 2)
    return base[offset & 0xFF:(offset & 0xFF) + n]


def test_slow_h2_reader_bounded_rss(slow_px):
    base = slow_px.rss_kb()
    peak = base
    with H2Client("127.0.0.1", slow_px.port, auto_ack=False) as c:
        sid = c.request("GET", "/huge", headers=[("x-stream-bytes", str(TOTAL))])
        r = c.responses[sid]
        acked = 0
        end = time.monotonic() + DURATION
        next_tick = time.monotonic()
        while time.monotonic() < end:
            c.pump(0.02)
            if time.monotonic() >= next_tick:
                # "read" 16 KiB per 100 ms (about 160 KiB/s): only then is window given back
                next_tick += 0.1
                unacked = len(r.data) - acked
                if unacked > 0:
                    n = min(unacked, 16384)
                    c.ack(sid, n)
                    acked += n
                peak = max(peak, slow_px.rss_kb())
        assert r.status == 200 and r.reset_code is None, f"status {r.status}, reset {r.reset_code}"
        assert not r.ended
        received = len(r.data)
        assert 16384 <= received < 8 * 1024 * 1024, f"received {received} bytes while reading slowly"
        assert bytes(r.data[:received]) == expected(0, received)
        c.reset(sid)
    assert peak - base < RSS_BOUND_KB, f"proxy RSS grew {(peak - base) // 1024} MiB (base {base // 1024} MiB)"


def test_slow_h1_reader_bounded_rss(slow_px):
    base = slow_px.rss_kb()
    peak = base
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", slow_px.port))
        s.sendall(f"GET /huge HTTP/1.1\r\nHost: slow.test\r\nx-stream-bytes: {TOTAL}\r\nx-stream-cl: 1\r\n\r\n".encode())
        received = bytearray()
        end = time.monotonic() + DURATION
        while time.monotonic() < end:
            chunk = s.recv(16384)
            assert chunk, "connection closed while reading slowly"
            received += chunk
            peak = max(peak, slow_px.rss_kb())
            time.sleep(0.1)
    finally:
        s.close()
    head, sep, body = bytes(received).partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(received) < 8 * 1024 * 1024
    if b"chunked" not in head.lower():
        assert body == expected(0, len(body))
    assert peak - base < RSS_BOUND_KB, f"proxy RSS grew {(peak - base) // 1024} MiB (base {base // 1024} MiB)"


def test_proxy_still_serves_after_slow_readers_leave(slow_px):
    with H2Client("127.0.0.1", slow_px.port, auto_ack=False) as c:
        c.request("GET", "/huge", headers=[("x-stream-bytes", str(TOTAL))])
        c.pump(0.5)
    # the abandoned stream must not wedge the upstream connection (h2) or leak the pool (h1)
    with H2Client("127.0.0.1", slow_px.port) as c:
        r = c.get("/after", headers=[("x-stream-bytes", str(4 << 20))], timeout=15)
        assert r.status == 200 and len(r.data) == 4 << 20
