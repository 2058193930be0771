"""gRPC through the proxy with python3-grpcio on both ends (raw bytes, no generated code)."""

import json
import os
import queue
import signal
import struct
import time

import grpc
import pytest

import grpc_client
from h2client import H2Client, Response
from procutil import free_port

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gpx(module_proxy_factory, grpc_server):
    return module_proxy_factory(upstream=grpc_server.addr, upstream_protocol="h2", workers=2)


@pytest.fixture
def echo(gpx):
    ch = grpc_client.channel(gpx.addr)
    yield grpc_client.Echo(ch)
    ch.close()


@pytest.fixture(scope="module")
def server_direct(grpc_server):
    """A channel straight to the server (not through the proxy): for its Stats."""
    ch = grpc_client.channel(grpc_server.target)
    yield grpc_client.Echo(ch)
    ch.close()


def pattern(i, size):
    base = bytes(range(256)) * (size // 256 + 2)
    return base[i & 0xFF:(i & 0xFF) + size]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def call_id(tag):
    return f"{tag}-{os.getpid()}-{time.monotonic_ns()}"


# ------------------------------------------------------------------------------ the four shapes

def test_unary_with_metadata(echo):
    resp, call = echo.unary.with_call(b"hello", timeout=10,
                                      metadata=[("x-custom", "abc"), ("x-custom-bin", b"\x00\xff\x10")])
    assert resp == b"hello"
    assert call.code() == grpc.StatusCode.OK
    initial = list(call.initial_metadata())
    assert ("initial-x-custom", "abc") in initial
    assert ("initial-x-custom-bin", b"\x00\xff\x10") in initial
    trailing = list(call.trailing_metadata())
    assert ("trailing-x-custom", "abc") in trailing
    assert ("trailing-x-custom-bin", b"\x00\xff\x10") in trailing


def test_client_stream(echo):
    msgs = [b"a", b"bb", b"", b"ccc", os.urandom(100000)]
    resp, call = echo.client_stream.with_call(iter(msgs), timeout=10)
    assert resp == b"".join(msgs)
    assert dict(call.trailing_metadata())["x-count"] == "5"


def test_server_stream(echo):
    got = list(echo.server_stream(b"ping", timeout=10, metadata=[("x-count", "5")]))
    assert got == [b"ping"] * 5
    got = list(echo.server_stream(b"", timeout=10, metadata=[("x-count", "10"), ("x-size", "100000")]))
    assert got == [pattern(i, 100000) for i in range(10)]


def test_bidi_ping_pong(echo):
    """Each response must arrive before the next request is sent: nothing waits for end of stream."""
    q = queue.Queue()

    def requests():
        while True:
            m = q.get(timeout=10)
            if m is None:
                return
            yield m

    call = echo.bidi(requests(), timeout=15)
    for i in range(20):
        msg = f"msg-{i}".encode() * (i + 1)
        q.put(msg)
        assert next(call) == msg
    q.put(None)
    with pytest.raises(StopIteration):
        next(call)
    assert call.code() == grpc.StatusCode.OK


# ------------------------------------------------------------------------------ status and trailers

def test_error_status_message_and_trailing_metadata(echo):
    message = "not found: caf\u00e9 100% \u2713"
    with pytest.raises(grpc.RpcError) as ei:
        echo.unary(b"x", timeout=10, metadata=[("x-fail-code", "5"), ("x-fail-message-bin", message.encode()),
                                               ("x-fail-trailer-why", "because"), ("x-fail-binary", "1")])
    err = ei.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == message
    trailing = list(err.trailing_metadata())
    assert ("why", "because") in trailing
    assert ("detail-bin", b"\x00\x01\x02\xff") in trailing


def test_error_after_messages(echo):
    call = echo.server_stream(b"m", timeout=10, metadata=[("x-count", "5"), ("x-fail-after", "2"),
                                                         ("x-fail-code", "9"), ("x-fail-message", "stop here")])
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for m in call:
            got.append(m)
    assert got == [b"m", b"m"]
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "stop here"


def test_bidi_error_status(echo):
    with pytest.raises(grpc.RpcError) as ei:
        list(echo.bidi(iter([b"1", b"2", b"3"]), timeout=10,
                       metadata=[("x-fail-after", "1"), ("x-fail-code", "8"), ("x-fail-message", "slow down")]))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ei.value.details() == "slow down"


def test_trailers_only_error_from_upstream_raw(gpx):
    """An immediate error is a trailers-only response upstream (one HEADERS frame with END_STREAM); it
    must reach the client as one too: grpc-status in a HEADERS block that ends the stream, no DATA."""
    with H2Client("127.0.0.1", gpx.port) as c:
        sid = c.request("POST", "/echo.Echo/Unary", headers=[
            ("content-type", "application/grpc"), ("te", "trailers"), ("x-fail-code", "7"),
            ("x-fail-message", "denied")], body=b"\x00" + struct.pack(">I", 2) + b"hi")
        assert c.wait([sid])
        r = c.responses[sid]
    assert r.reset_code is None and r.status == 200
    assert r.headers_ended and r.data_frames == 0 and r.trailers == [], \
        f"not trailers-only: HEADERS END_STREAM={r.headers_ended}, {r.data_frames} DATA frames, trailers {r.trailers}"
    assert r.header("grpc-status") == "7" and r.header("grpc-message") == "denied"


def grpc_frame(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize("method,messages", [("Bidi", 3), ("Unary", 1)])
def test_status_while_client_still_sending_raw(gpx, method, messages):
    """The server ends the call (trailers, or trailers-only) while the client has not half-closed; the
    server then sends RST_STREAM(NO_ERROR) (RFC 9113 8.1). The status must still reach the client:
    final HEADERS with grpc-status first, a reset only after it."""
    with H2Client("127.0.0.1", gpx.port) as c:
        sid = c.request("POST", f"/echo.Echo/{method}", headers=[
            ("content-type", "application/grpc"), ("te", "trailers"), ("x-fail-after", "1"), ("x-fail-code", "8"),
            ("x-fail-message", "early")], body=b"".join(grpc_frame(b"m%d" % i) for i in range(messages)), end_stream=False)
        assert c.wait([sid], timeout=10)
        r = c.responses[sid]
    final = dict((k.decode(), v.decode()) for k, v in (r.trailers or (r.headers if r.headers_ended else [])))
    assert r.ended and r.reset_code is None, \
        f"stream reset ({r.reset_code}) before the status arrived; headers {r.headers}, trailers {r.trailers}"
    assert final.get("grpc-status") == "8" and final.get("grpc-message") == "early"


# ------------------------------------------------------------------------------ big messages

def test_16mib_unary_both_ways(echo):
    data = os.urandom(16 * MiB)
    assert echo.unary(data, timeout=60) == data


def test_16mib_streams(echo):
    data = os.urandom(16 * MiB)
    resp = echo.client_stream(iter([data, b"tail"]), timeout=60)
    assert resp == data + b"tail"
    got = list(echo.server_stream(b"", timeout=60, metadata=[("x-count", "2"), ("x-size", str(16 * MiB))]))
    assert len(got) == 2
    assert got[0] == pattern(0, 16 * MiB) and got[1] == pattern(1, 16 * MiB)


# ------------------------------------------------------------------------------ cancellation, deadlines

def test_completed_calls_not_counted_as_cancelled(echo, server_direct):
    """Guards the server's bookkeeping that the cancellation tests rely on."""
    u, b = call_id("done-unary"), call_id("done-bidi")
    assert echo.unary(b"x", timeout=10, metadata=[("x-call-id", u)]) == b"x"
    assert list(echo.bidi(iter([b"1", b"2"]), timeout=10, metadata=[("x-call-id", b)])) == [b"1", b"2"]
    stats = wait_for(lambda: (lambda s: s if u in s["completed"] and b in s["completed"] else None)(server_direct.stats()),
                     5, "both calls to be recorded as completed")
    assert u not in stats["cancelled"] and b not in stats["cancelled"]


def test_cancel_unary_reaches_server(echo, server_direct):
    cid = call_id("cancel-unary")
    fut = echo.unary.future(b"", timeout=30, metadata=[("x-sleep-ms", "20000"), ("x-call-id", cid)])
    wait_for(lambda: cid in server_direct.stats()["active"], 5, "the call to reach the server")
    fut.cancel()
    assert fut.cancelled()
    wait_for(lambda: cid in server_direct.stats()["cancelled"], 5, "the cancellation to reach the server")


def test_cancel_server_stream_reaches_server(echo, server_direct):
    cid = call_id("cancel-stream")
    call = echo.server_stream(b"s", timeout=30, metadata=[("x-count", "1000"), ("x-interval-ms", "50"),
                                                          ("x-call-id", cid)])
    assert next(call) == b"s" and next(call) == b"s"
    call.cancel()
    wait_for(lambda: cid in server_direct.stats()["cancelled"], 5, "the cancellation to reach the server")


def test_cancel_bidi_reaches_server(echo, server_direct):
    cid = call_id("cancel-bidi")
    q = queue.Queue()

    def requests():
        while True:
            m = q.get(timeout=15)
            if m is None:
                return
            yield m

    call = echo.bidi(requests(), timeout=30, metadata=[("x-call-id", cid)])
    q.put(b"one")
    assert next(call) == b"one"
    call.cancel()
    q.put(None)
    wait_for(lambda: cid in server_direct.stats()["cancelled"], 5, "the cancellation to reach the server")


def test_server_cancel_reaches_client(echo):
    """The server resets its stream (RST_STREAM CANCEL): the client must see CANCELLED."""
    call = echo.server_stream(b"c", timeout=10, metadata=[("x-count", "10"), ("x-cancel-after", "2")])
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for m in call:
            got.append(m)
    assert got == [b"c", b"c"]
    assert ei.value.code() == grpc.StatusCode.CANCELLED


def test_grpc_timeout_passed_through(echo):
    report = json.loads(echo.unary(b"", timeout=20, metadata=[("x-echo-metadata", "1")]))
    assert report["time_remaining"] is not None, "the server saw no grpc-timeout"
    assert 10 < report["time_remaining"] <= 20.5
    # no deadline set by the client (the future's result() bounds our wait instead)
    report = json.loads(echo.unary.future(b"", metadata=[("x-echo-metadata", "1")]).result(timeout=10))
    assert report["time_remaining"] is None, "a deadline appeared that the client did not set"


def test_deadline_exceeded(echo, server_direct):
    cid = call_id("deadline")
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        echo.unary(b"", timeout=1.0, metadata=[("x-sleep-ms", "10000"), ("x-call-id", cid)])
    elapsed = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 3.0
    # the server stops working on it too (it got the deadline, or the proxy reset the stream)
    wait_for(lambda: cid in server_direct.stats()["cancelled"], 5, "the server to abandon the call")


# ------------------------------------------------------------------------------ load

def test_200_concurrent_calls(echo):
    futs = [echo.unary.future(f"call-{i}".encode() * 50, timeout=30) for i in range(200)]
    results = [f.result(timeout=40) for f in futs]
    assert results == [f"call-{i}".encode() * 50 for i in range(200)]


def test_200_concurrent_calls_many_channels(gpx):
    chans = [grpc_client.channel(gpx.addr) for _ in range(8)]
    try:
        echos = [grpc_client.Echo(c) for c in chans]
        futs = [echos[i % 8].unary.future(f"c{i}".encode(), timeout=30, metadata=[("x-sleep-ms", "100")])
                for i in range(200)]
        assert [f.result(timeout=40) for f in futs] == [f"c{i}".encode() for i in range(200)]
    finally:
        for c in chans:
            c.close()


# ------------------------------------------------------------------------------ upstream failures

def test_upstream_down_unavailable(proxy_factory):
    px = proxy_factory(upstream=("127.0.0.1", free_port()), upstream_protocol="h2")
    with grpc_client.channel(px.addr) as ch:
        e = grpc_client.Echo(ch)
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as ei:
                e.unary(b"x", timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - t0 < 3.0


def test_upstream_down_unavailable_while_client_streams(proxy_factory):
    """The client is still sending (its request stream open) when the proxy gives up on the upstream."""
    px = proxy_factory(upstream=("127.0.0.1", free_port()), upstream_protocol="h2")
    q = queue.Queue()

    def requests():
        yield b"first"
        q.get(timeout=10)  # keep the request stream open until the test ends

    with grpc_client.channel(px.addr) as ch:
        e = grpc_client.Echo(ch)
        t0 = time.monotonic()
        call = e.bidi(requests(), timeout=10)
        with pytest.raises(grpc.RpcError) as ei:
            next(call)
        q.put(None)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
        assert time.monotonic() - t0 < 3.0


@pytest.mark.agent_only("nghttpx answers 502, not a trailers-only grpc-status 14")
@pytest.mark.parametrize("request_open", [False, True], ids=["request-complete", "request-still-open"])
def test_upstream_down_trailers_only_14(proxy_factory, request_open):
    px = proxy_factory(upstream=("127.0.0.1", free_port()), upstream_protocol="h2")
    with H2Client("127.0.0.1", px.port) as c:
        sid = c.conn.get_next_available_stream_id()
        c.responses[sid] = Response(sid)
        c.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/echo.Echo/Unary"),
                                  (b":authority", c.authority.encode()), (b"content-type", b"application/grpc"),
                                  (b"te", b"trailers")])
        c.conn.send_data(sid, grpc_frame(b""), end_stream=not request_open)
        c.flush()  # one write: the whole request, or all but END_STREAM
        assert c.wait([sid])
        r = c.responses[sid]
    assert r.ended and r.reset_code is None, f"stream reset ({r.reset_code}) instead of a trailers-only response"
    assert r.status == 200
    assert r.header("content-type").startswith("application/grpc")
    assert r.header("grpc-status") == "14", f"trailers-only response expected, headers={r.headers}"
    assert r.headers_ended and r.data_frames == 0 and r.trailers == [], \
        f"not trailers-only: HEADERS END_STREAM={r.headers_ended}, {r.data_frames} DATA frames, trailers {r.trailers}"


def test_upstream_killed_mid_stream(proxy_factory, origin_factory):
    srv = origin_factory("grpc")
    px = proxy_factory(upstream=srv.addr, upstream_protocol="h2")
    with grpc_client.channel(px.addr) as ch:
        e = grpc_client.Echo(ch)
        call = e.server_stream(b"k", timeout=30, metadata=[("x-count", "1000"), ("x-interval-ms", "50")])
        unary = e.unary.future(b"", timeout=30, metadata=[("x-sleep-ms", "20000")])
        assert [next(call) for _ in range(3)] == [b"k"] * 3
        srv.proc.stop(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            for _ in call:
                pass
        assert time.monotonic() - t0 < 5.0, "the client hung after the upstream died"
        assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), ei.value
        with pytest.raises(grpc.RpcError) as ei:
            unary.result(timeout=5)
        assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), ei.value
        # and the proxy itself is fine: a new call fails fast with UNAVAILABLE, not a hang
        with pytest.raises(grpc.RpcError) as ei:
            e.unary(b"", timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------------------ empty streams (grpc-go's empty_stream)


def _empty_stream(proxy_port):
    """HEADERS without END_STREAM, then an empty DATA frame with END_STREAM, in one write."""
    with H2Client("127.0.0.1", proxy_port) as c:
        sid = c.conn.get_next_available_stream_id()
        c.responses[sid] = Response(sid)
        c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/echo.Echo/Bidi"),
                                  (":authority", "echo"), ("content-type", "application/grpc"), ("te", "trailers")],
                            end_stream=False)
        c.conn.end_stream(sid)
        c.flush()
        c.wait([sid], timeout=5)
        r = c.responses[sid]
        assert r.ended and r.status == 200, (r.status, r.reset_code)
        assert (r.trailer("grpc-status") or r.header("grpc-status")) == "0"
        assert r.data == b""


def test_empty_stream_while_the_upstream_connection_opens(proxy_factory, origin_factory, tmp_path):
    """The half-close must reach the server whether the agent's upstream connection is already
    open, is being opened for this very request (first request), or is re-opened after the
    upstream restarted."""
    server = origin_factory("grpc")
    p = proxy_factory(upstream=server.addr, upstream_protocol="h2", workers=1)
    _empty_stream(p.port)  # first request: the upstream connection opens now
    _empty_stream(p.port)  # connection open
    port = server.port
    server.proc.stop(signal.SIGKILL, timeout=5)
    from procutil import start_tool
    proc, _ = start_tool("grpc_echo_server.py", ["--port", str(port)], str(tmp_path), name="grpc-restarted")
    try:
        for _ in range(3):  # the first one may meet the dead pooled connection
            try:
                _empty_stream(p.port)
            except AssertionError:
                continue
        _empty_stream(p.port)
    finally:
        proc.stop(signal.SIGKILL, timeout=2)
