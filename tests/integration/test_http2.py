"""HTTP/2 cleartext (prior knowledge) downstream: curl, nghttp and a python3-h2 client."""

import hashlib
import json
import os
import re
import subprocess

import pytest

from h2client import H2Client
from support import curl


@pytest.fixture(scope="module", params=["http1", "h2"])
def px(request, module_proxy_factory, h1_origin, h2_origin):
    origin = h1_origin if request.param == "http1" else h2_origin
    return module_proxy_factory(upstream=origin.addr, upstream_protocol=request.param, workers=2)


def origin_path(echo):
    return echo.get("target", echo.get("path"))


def test_curl_h2c_get(px, workdir):
    r = curl(workdir, "--http2-prior-knowledge", "-H", "x-test: h2c", px.url("/h2c?q=1"))
    assert r.rc == 0, r
    assert r.status == 200 and r.http_version == "2", r
    echo = r.json()
    assert echo["method"] == "GET" and origin_path(echo) == "/h2c?q=1"
    assert ["x-test", "h2c"] in [[k.lower(), v] for k, v in echo["headers"]]


def test_curl_h2c_post(px, workdir):
    data = os.urandom(1024 * 1024 + 3)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = curl(workdir, "--http2-prior-knowledge", "--data-binary", f"@{path}", px.url("/post"))
    assert r.status == 200 and r.http_version == "2", r
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["body_len"] == len(data) and echo["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_nghttp_concurrent_streams(px, workdir):
    har = os.path.join(workdir, "out.har")
    r = subprocess.run(["nghttp", "-n", "-t", "10", "-m", "20", "-r", har, "-H", "x-delay-ms: 50", px.url("/nghttp")],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    with open(har) as f:
        entries = json.load(f)["log"]["entries"]
    assert len(entries) == 20
    assert [e["response"]["status"] for e in entries] == [200] * 20


def test_nghttp_post_and_response_trailers(px, workdir):
    data = os.urandom(100000)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = subprocess.run(["nghttp", "-v", "-t", "10", "-d", path, "-H", "x-echo-raw: 1", "-H", "x-resp-trailers: x-t=done",
                        px.url("/nghttp-post")], capture_output=True, timeout=20)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out), out[-2000:]
    assert re.search(r"recv \(stream_id=\d+\) x-t: done", out), "response trailer not received:\n" + out[-2000:]


def test_multiplexed_streams_complete_out_of_order(px):
    with H2Client("127.0.0.1", px.port) as c:
        sids = {}
        for i in range(30):
            delay = (30 - i) * 10  # later streams answer first
            sids[c.request("GET", f"/mux/{i}", headers=[("x-delay-ms", str(delay))])] = i
        assert c.wait(timeout=15), "not every stream completed"
        for sid, i in sids.items():
            r = c.responses[sid]
            assert r.status == 200 and r.reset_code is None
            assert origin_path(json.loads(r.data)) == f"/mux/{i}"


def test_response_trailers(px):
    with H2Client("127.0.0.1", px.port) as c:
        r = c.get("/trailers", headers=[("te", "trailers"), ("x-resp-trailers", "x-a=1,x-b=two")])
    assert r.status == 200
    assert json.loads(r.data)["method"] == "GET"
    assert [(k.decode(), v.decode()) for k, v in r.trailers] == [("x-a", "1"), ("x-b", "two")]


def test_request_trailers_reach_upstream(px):
    with H2Client("127.0.0.1", px.port) as c:
        sid = c.request("POST", "/reqtrailers", headers=[("te", "trailers")], body=b"abc", end_stream=False)
        c.conn.send_headers(sid, [(b"x-checksum", b"abc123")], end_stream=True)
        c.flush()
        assert c.wait([sid])
        r = c.responses[sid]
    assert r.status == 200
    echo = json.loads(r.data)
    assert echo["body"] == "abc"
    assert [[k.lower(), v] for k, v in echo["trailers"]] == [["x-checksum", "abc123"]]


def test_large_upload_echoed_byte_identical(px):
    data = os.urandom(4 * 1024 * 1024)
    with H2Client("127.0.0.1", px.port) as c:
        sid = c.request("POST", "/echo", headers=[("x-echo-raw", "1")], body=data)
        assert c.wait([sid], timeout=30)
        r = c.responses[sid]
    assert r.status == 200 and r.reset_code is None
    assert len(r.data) == len(data) and bytes(r.data) == data


def test_client_reset_does_not_hurt_connection(px):
    with H2Client("127.0.0.1", px.port) as c:
        slow = c.request("GET", "/slow", headers=[("x-delay-ms", "300")])
        c.reset(slow)
        r = c.get("/after-reset")
        assert r.status == 200 and origin_path(json.loads(r.data)) == "/after-reset"
        assert c.goaway is None


TRUNCATE = [("x-stream-bytes", str(2 << 20)), ("x-reset-after-bytes", "100000"), ("x-abort-after-bytes", "100000")]


def test_upstream_abort_mid_body_is_not_a_complete_response_h2(px):
    """The origin resets its stream (HTTP/2) or drops its connection (HTTP/1.1) mid-body: the client
    must see its stream reset, never a clean END_STREAM on a truncated body."""
    with H2Client("127.0.0.1", px.port) as c:
        sid = c.request("GET", "/truncated", headers=TRUNCATE)
        assert c.wait([sid], timeout=10)
        r = c.responses[sid]
        assert r.reset_code is not None and not r.ended, \
            f"truncated body delivered as complete: {len(r.data)} bytes, ended={r.ended}"
        assert len(r.data) < 2 << 20
        assert c.get("/after-truncation").status == 200


def test_upstream_abort_mid_body_is_not_a_complete_response_h1(px):
    import socket

    from support import read_h1_response
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.sendall(b"GET /truncated HTTP/1.1\r\nHost: t.test\r\n" +
                  b"".join(f"{k}: {v}\r\n".encode() for k, v in TRUNCATE) + b"\r\n")
        with pytest.raises((ConnectionError, ValueError)):
            status, headers, body, _ = read_h1_response(s, timeout=10)
            pytest.fail(f"truncated body delivered as complete: status {status}, {len(body)} bytes")
