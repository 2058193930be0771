"""Self-test of tests/tools/fault_origin.py, driven directly (no proxy): each fault behaves as documented,
over HTTP/1.1 (curl, raw sockets), h2c (the frame-level h2client) and gRPC (python3-grpcio)."""

import hashlib
import json
import os
import socket
import struct
import time

import grpc
import h2.errors
import pytest

import fault_origin
import grpc_client
import support
from h2client import H2Client


def start_fault_origin(workdir, *args):
    return fault_origin.start(workdir, *args)


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    o = start_fault_origin(tmp_path_factory.mktemp("fault-origin"))
    yield o
    o.proc.stop()


_seq = [0]


def key(tag):
    _seq[0] += 1
    return f"{tag}-{os.getpid()}-{_seq[0]}"


def grpc_frame(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


# ------------------------------------------------------------------------------ HTTP/2

def test_h2_success_report_and_counting(fo):
    k = key("h2ok")
    with H2Client("127.0.0.1", fo.port) as c:
        sid = c.request("POST", "/a/b?q=1", headers=[("x-fault-key", k), ("x-other", "v")], body=b"hello")
        assert c.wait([sid], 5)
        r = c.responses[sid]
        assert r.status == 200 and r.header("x-attempt") == "1"
        rep = json.loads(r.data)
        assert rep["attempt"] == 1 and rep["key"] == k and rep["method"] == "POST" and rep["path"] == "/a/b?q=1"
        assert rep["authority"] == f"127.0.0.1:{fo.port}" and rep["protocol"] == "h2"
        assert ["x-other", "v"] in rep["headers"] and rep["grpc_timeout"] is None
        assert rep["body_len"] == 5 and rep["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert json.loads(c.get("/x", headers=[("x-fault-key", k)]).data)["attempt"] == 2
        a = json.loads(c.get(f"/__attempts?key={k}").data)
    assert a["attempts"] == 2 and a["paths"] == ["/a/b?q=1", "/x"]
    assert a["body_sha256s"][0] == hashlib.sha256(b"hello").hexdigest()
    assert a["grpc_timeouts"] == [None, None] and a["methods"] == ["POST", "GET"]


def test_h2_status_fault_times(fo):
    k = key("h2status")
    with H2Client("127.0.0.1", fo.port) as c:
        hs = [("x-fault-key", k), ("x-fault", "status:503"), ("x-fault-times", "2")]
        assert [c.get("/", headers=hs).status for _ in range(4)] == [503, 503, 200, 200]
    assert fo.attempts(k)["attempts"] == 4
    assert fo.attempts(k)["faults"] == ["status:503", "status:503", None, None]


@pytest.mark.parametrize("code", ["REFUSED_STREAM", "INTERNAL_ERROR", "CANCEL"])
def test_h2_rst_before_headers(fo, code):
    k = key("h2rst")
    with H2Client("127.0.0.1", fo.port) as c:
        sid = c.request("GET", "/", headers=[("x-fault-key", k), ("x-fault", f"rst:{code}"), ("x-fault-times", "1")])
        assert c.wait([sid], 5)
        r = c.responses[sid]
        assert r.headers is None and r.reset_code == h2.errors.ErrorCodes[code]
        # the connection survives, and the second attempt succeeds
        hs = [("x-fault-key", k), ("x-fault", f"rst:{code}"), ("x-fault-times", "1")]
        assert c.get("/", headers=hs).status == 200
    assert fo.attempts(k)["attempts"] == 2


def test_h2_goaway_below_stream(fo):
    k = key("h2goaway")
    with H2Client("127.0.0.1", fo.port) as c:
        assert c.get("/", headers=[("x-fault-key", k)]).status == 200  # stream 1 processed
        sid = c.request("GET", "/", headers=[("x-fault-key", k), ("x-fault", "goaway")])
        c.wait([sid], 5)
        deadline = time.monotonic() + 5
        while not c.closed and time.monotonic() < deadline:
            c.pump(0.2)
        assert c.goaway is not None, "no GOAWAY"
        last, err = c.goaway
        assert last < sid and last == sid - 2 and err == 0
        assert c.responses[sid].headers is None
        assert c.closed, "the origin did not close the connection after GOAWAY"
    assert fo.attempts(k)["attempts"] == 2


def test_h2_close_after_headers(fo):
    k = key("h2cah")
    with H2Client("127.0.0.1", fo.port) as c:
        sid = c.request("GET", "/", headers=[("x-fault-key", k), ("x-fault", "close-after-headers")])
        c.wait([sid], 5)
        r = c.responses[sid]
        assert r.status == 200 and not r.ended and c.closed


def test_h2_delay_times_and_body_delay(fo):
    k = key("h2delay")
    hs = [("x-fault-key", k), ("x-delay-ms", "400"), ("x-delay-times", "1")]
    with H2Client("127.0.0.1", fo.port) as c:
        t0 = time.monotonic()
        assert c.get("/", headers=hs).status == 200
        assert time.monotonic() - t0 >= 0.38
        t0 = time.monotonic()
        assert c.get("/", headers=hs).status == 200
        assert time.monotonic() - t0 < 0.3
        # body delay: the head comes at once, the body 400 ms later
        sid = c.request("GET", "/", headers=[("x-fault-key", key("bd")), ("x-body-delay-ms", "400")])
        t0 = time.monotonic()
        while c.responses[sid].headers is None and time.monotonic() - t0 < 5:
            c.pump(0.05)
        t_head = time.monotonic() - t0
        assert c.wait([sid], 5)
        t_end = time.monotonic() - t0
    assert t_head < 0.3 and t_end >= 0.38, (t_head, t_end)


def test_h2_reset_received_counted(fo):
    k = key("h2resetrx")
    before = fo.stats()["resets_received"]
    with H2Client("127.0.0.1", fo.port) as c:
        sid = c.request("GET", "/", headers=[("x-fault-key", k), ("x-delay-ms", "5000")])
        c.pump(0.2)
        c.reset(sid)
        c.pump(0.2)
    deadline = time.monotonic() + 5
    while fo.attempts(k)["resets"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fo.attempts(k)["resets"] == 1
    assert fo.stats()["resets_received"] >= before + 1


def test_h2_control_endpoints(fo):
    with H2Client("127.0.0.1", fo.port) as c:
        st = json.loads(c.get("/__stats").data)
        assert {"requests", "connections", "resets_received"} <= set(st)
        assert json.loads(c.get("/__attempts?key=never-used").data)["attempts"] == 0


# ------------------------------------------------------------------------------ gRPC over h2c

def _raw_grpc(fo, fault, k, msg=b"ping"):
    with H2Client("127.0.0.1", fo.port) as c:
        sid = c.request("POST", "/echo.Echo/Unary", headers=GRPC_HEADERS + [("x-fault-key", k), ("x-fault", fault)],
                        body=grpc_frame(msg))
        assert c.wait([sid], 5)
        return c.responses[sid]


def test_grpc_trailers_only(fo):
    r = _raw_grpc(fo, "grpc-trailers-only:14", key("gto"))
    assert r.status == 200 and r.headers_ended and r.data_frames == 0 and r.trailers == []
    assert r.header("grpc-status") == "14" and r.header("content-type") == "application/grpc"


def test_grpc_trailers_no_data(fo):
    r = _raw_grpc(fo, "grpc-trailers:14", key("gt"))
    assert r.status == 200 and not r.headers_ended and r.data_frames == 0 and r.header("grpc-status") is None
    assert r.trailer("grpc-status") == "14"


def test_grpc_trailers_after_data(fo):
    r = _raw_grpc(fo, "grpc-trailers-after-data:UNAVAILABLE", key("gtad"), b"msg")
    assert r.status == 200 and bytes(r.data) == grpc_frame(b"msg") and r.trailer("grpc-status") == "14"


def test_grpcio_echo_fault_times_and_timeout(fo):
    k = key("grpcio")
    with grpc_client.channel(fo.target) as ch:
        e = grpc_client.Echo(ch)
        md = [("x-fault-key", k), ("x-fault", "grpc-trailers-only:14"), ("x-fault-times", "1")]
        with pytest.raises(grpc.RpcError) as ei:
            e.unary(b"x", timeout=5, metadata=md)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        resp, call = e.unary.with_call(b"hello" * 100, timeout=5, metadata=md)
        assert resp == b"hello" * 100 and ("x-attempt", "2") in list(call.initial_metadata())
        with pytest.raises(grpc.RpcError) as ei:
            e.unary(b"x", timeout=5, metadata=[("x-fault", "grpc-trailers:UNAVAILABLE")])
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    a = fo.attempts(k)
    assert a["attempts"] == 2
    assert all(t is not None and t[-1] in "HMSmun" for t in a["grpc_timeouts"]), a["grpc_timeouts"]


# ------------------------------------------------------------------------------ HTTP/1.1

def test_h1_success_post_and_status(fo, tmp_path):
    k = key("h1")
    body = os.urandom(65536)
    f = tmp_path / "body"
    f.write_bytes(body)
    r = support.curl(str(tmp_path), "-H", f"x-fault-key: {k}", "--data-binary", f"@{f}", f"http://{fo.target}/p")
    assert r.status == 200 and r.header("x-attempt") == "1", r
    rep = r.json()
    assert rep["protocol"] == "h1" and rep["method"] == "POST" and rep["path"] == "/p"
    assert rep["body_len"] == 65536 and rep["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert rep["authority"] == fo.target
    hs = ["-H", f"x-fault-key: {k}", "-H", "x-fault: status:502", "-H", "x-fault-times: 2"]
    assert support.curl(str(tmp_path), *hs, f"http://{fo.target}/").status == 502
    assert support.curl(str(tmp_path), *hs, f"http://{fo.target}/").status == 200
    assert fo.attempts(k)["attempts"] == 3


@pytest.mark.parametrize("fault", ["rst:REFUSED_STREAM", "goaway"])
def test_h1_close_without_response(fo, tmp_path, fault):
    r = support.curl(str(tmp_path), "-H", f"x-fault: {fault}", f"http://{fo.target}/")
    assert r.rc == 52, r  # empty reply from server


def test_h1_close_after_headers(fo, tmp_path):
    with socket.create_connection(("127.0.0.1", fo.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nx-fault: close-after-headers\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b""


def test_h1_close_idle(fo):
    with socket.create_connection(("127.0.0.1", fo.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nx-fault: h1-close-idle-ms:300\r\n\r\n")
        st, hs, _, _ = support.read_h1_response(s, 5)
        assert st == 200 and ("connection", "close") not in hs
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(10) == b""  # the origin closed the idle connection
        assert 0.2 < time.monotonic() - t0 < 2
    # without the fault a connection stays open for several requests
    with socket.create_connection(("127.0.0.1", fo.port), timeout=5) as s:
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert support.read_h1_response(s, 5)[0] == 200


def test_h1_control_endpoints(fo):
    st = fo.stats()
    assert {"requests", "connections", "resets_received"} <= set(st)
    assert st["h1_connections"] >= 1 and st["h2_connections"] >= 1


# ------------------------------------------------------------------------------ options

def test_h1_close_after_next_request(tmp_path):
    o = start_fault_origin(tmp_path, "--h1-close-after", "1")
    try:
        with socket.create_connection(("127.0.0.1", o.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            st, hs, _, _ = support.read_h1_response(s, 5)
            assert st == 200 and ("connection", "close") not in hs
            time.sleep(0.2)  # the connection looks idle and open ...
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
            s.setblocking(True)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # ... until the next request: dropped
            with pytest.raises(support.NoResponse):
                support.read_h1_response(s, 5)
        assert o.stats()["h1_dropped"] == 1 and o.stats()["requests"] == 1
        # h2 is not affected
        with H2Client("127.0.0.1", o.port) as c:
            assert [c.get("/").status for _ in range(3)] == [200] * 3
    finally:
        o.proc.stop()


def test_h1_close_after_immediate_and_default_delay(tmp_path):
    o = start_fault_origin(tmp_path, "--h1-close-after", "2", "--h1-close-mode", "immediate",
                           "--default-delay-ms", "300")
    try:
        with socket.create_connection(("127.0.0.1", o.port), timeout=5) as s:
            t0 = time.monotonic()
            for _ in range(2):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert support.read_h1_response(s, 5)[0] == 200
            assert time.monotonic() - t0 >= 0.58
            s.settimeout(5)
            assert s.recv(10) == b""
        t0 = time.monotonic()
        st, _, _ = support.http_get("127.0.0.1", o.port, "/", headers={"x-delay-ms": "0"})
        assert st == 200 and time.monotonic() - t0 < 0.25
    finally:
        o.proc.stop()
