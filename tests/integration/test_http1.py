"""HTTP/1.1 downstream: curl and raw sockets, to an HTTP/1.1 and to an HTTP/2 upstream."""

import hashlib
import json
import os
import socket
import time

import pytest

from support import curl, is_standin, raw_h1, read_h1_response


@pytest.fixture(scope="module", params=["http1", "h2"])
def px(request, module_proxy_factory, h1_origin, h2_origin):
    origin = h1_origin if request.param == "http1" else h2_origin
    return module_proxy_factory(upstream=origin.addr, upstream_protocol=request.param, workers=2)


def origin_path(echo):
    return echo.get("target", echo.get("path"))


def origin_headers(echo):
    """Header fields the origin saw, names lower-cased, pseudo-headers left out."""
    return [(k.lower(), v) for k, v in echo["headers"] if not k.startswith(":")]


def origin_authority(echo):
    """The authority the origin saw: :authority over HTTP/2 (the issue: Host -> :authority), Host over HTTP/1.1."""
    hosts = [v for k, v in origin_headers(echo) if k == "host"]
    if echo["origin"] == "h2":
        if echo["authority"] is None and is_standin():
            return hosts[0] if len(hosts) == 1 else hosts  # nghttpx forwards Host as host, not :authority
        assert not hosts or hosts == [echo["authority"]], f"host {hosts} besides :authority {echo['authority']}"
        return echo["authority"]
    hosts = [v for k, v in origin_headers(echo) if k == "host"]
    assert len(hosts) == 1, f"origin saw Host fields {hosts}"
    return hosts[0]


def test_get(px, workdir):
    r = curl(workdir, "--http1.1", "-H", "X-Test: abc", px.url("/hello?x=1"))
    assert r.rc == 0, r
    assert r.status == 200 and r.http_version == "1.1", r
    echo = r.json()
    assert echo["method"] == "GET"
    assert origin_path(echo) == "/hello?x=1"
    assert ("x-test", "abc") in origin_headers(echo)
    assert origin_authority(echo) == f"127.0.0.1:{px.port}"
    assert echo["body_len"] == 0


def test_post_content_length(px, workdir):
    data = os.urandom(300 * 1024)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = curl(workdir, "--http1.1", "-H", "Expect:", "--data-binary", f"@{path}", px.url("/upload"))
    assert r.status == 200, r
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["body_len"] == len(data)
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_post_chunked(px, workdir):
    data = os.urandom(200 * 1024 + 7)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = curl(workdir, "--http1.1", "-H", "Transfer-Encoding: chunked", "-H", "Expect:", "--data-binary", f"@{path}",
             px.url("/chunked"))
    assert r.status == 200, r
    echo = r.json()
    assert echo["body_len"] == len(data)
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_request_trailers_reach_upstream(px):
    req = (b"POST /trailers HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n"
           b"Trailer: x-checksum\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n")
    status, _, body, _ = raw_h1(px.port, req)
    assert status == 200
    echo = json.loads(body)
    assert echo["body"] == "hello world"
    assert [[k.lower(), v] for k, v in echo["trailers"]] == [["x-checksum", "abc123"]]


def test_expect_100_continue_raw(px):
    data = os.urandom(5000)
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.sendall(b"POST /expect HTTP/1.1\r\nHost: e.test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        t0 = time.monotonic()
        status, _, _, _ = read_h1_response(s, timeout=5, head_only=True)
        assert status == 100, f"expected an interim 100 Continue before the body, got {status}"
        assert time.monotonic() - t0 < 3
        s.sendall(data)
        status, _, body, _ = read_h1_response(s, timeout=10)
    assert status == 200
    echo = json.loads(body)
    assert echo["body_len"] == 5000 and echo["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_expect_100_continue_curl(px, workdir):
    data = os.urandom(2 * 1024 * 1024)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = curl(workdir, "--http1.1", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
             "--data-binary", f"@{path}", px.url("/expect"))
    assert r.status == 200, r
    assert r.all_blocks[0].startswith("HTTP/1.1 100"), f"no 100 Continue seen by curl: {r.all_blocks[:1]}"
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_keepalive_reuses_connection(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        for i in range(3):
            s.sendall(f"GET /ka/{i} HTTP/1.1\r\nHost: ka.test\r\n\r\n".encode())
            status, headers, body, _ = read_h1_response(s)
            assert status == 200
            assert origin_path(json.loads(body)) == f"/ka/{i}"
            assert ("connection", "close") not in headers


def test_pipelined_requests_answered_in_order(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        # the first one is slower upstream: responses must still come back in request order
        s.sendall(b"GET /p/1 HTTP/1.1\r\nHost: p.test\r\nx-delay-ms: 200\r\n\r\n"
                  b"GET /p/2 HTTP/1.1\r\nHost: p.test\r\n\r\n")
        got = []
        for _ in range(2):
            status, _, body, _ = read_h1_response(s)
            assert status == 200
            got.append(origin_path(json.loads(body)))
    assert got == ["/p/1", "/p/2"]


def test_response_trailers_relayed_chunked(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.sendall(b"GET /rt HTTP/1.1\r\nHost: rt.test\r\nTE: trailers\r\nx-resp-trailers: x-a=1,x-b=two\r\n\r\n")
        status, headers, body, trailers = read_h1_response(s)
    assert status == 200
    assert dict(headers).get("transfer-encoding", "").lower() == "chunked"
    assert json.loads(body)["method"] == "GET"
    assert trailers == [("x-a", "1"), ("x-b", "two")]


def test_large_streamed_response(px, workdir):
    n = 8 * 1024 * 1024
    r = curl(workdir, "--http1.1", "-H", f"x-stream-bytes: {n}", px.url("/big"))
    assert r.status == 200, r
    assert len(r.body) == n
    assert r.body == (bytes(range(256)) * (n // 256))


@pytest.mark.parametrize("status", [201, 404, 503])
def test_status_passthrough(px, workdir, status):
    r = curl(workdir, "--http1.1", "-H", f"x-status: {status}", px.url("/status"))
    assert r.status == status, r
    assert r.json()["method"] == "GET"


def test_head_has_no_body(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: h.test\r\nx-stream-bytes: 1000\r\nx-stream-cl: 1\r\n\r\n"
                  b"GET /after HTTP/1.1\r\nHost: h.test\r\n\r\n")
        status, headers, _, _ = read_h1_response(s, head_only=True)
        assert status == 200
        # no body may follow a HEAD response: the next bytes are the second response
        status, _, body, _ = read_h1_response(s)
        assert status == 200 and origin_path(json.loads(body)) == "/after"
