"""HTTP/1.1 <-> HTTP/2 conversion in both directions: Host <-> :authority, connection-specific
header fields dropped, te: trailers kept, cookies, bodies without Content-Length, trailers."""

import json
import os

import pytest

from h2client import H2Client
from support import is_standin, raw_h1

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@pytest.fixture(scope="module")
def to_h2(module_proxy_factory, h2_origin):
    """HTTP/1.1 client -> proxy -> HTTP/2 origin."""
    return module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2")


@pytest.fixture(scope="module")
def to_h1(module_proxy_factory, h1_origin):
    """HTTP/2 client -> proxy -> HTTP/1.1 origin."""
    return module_proxy_factory(upstream=h1_origin.addr, upstream_protocol="http1")


def fields(echo):
    return [(k, v) for k, v in echo["headers"] if not k.startswith(":")]


def names(echo):
    return [k.lower() for k, _ in fields(echo)]


def values(echo, name):
    return [v for k, v in fields(echo) if k.lower() == name]


# ------------------------------------------------------------------------------ h1 -> h2

def test_h1_to_h2_request_headers(to_h2):
    req = (b"GET /conv?a=b HTTP/1.1\r\n"
           b"Host: svc.example:8080\r\n"
           b"Connection: keep-alive, X-Hop\r\n"
           b"Keep-Alive: timeout=5\r\n"
           b"Proxy-Connection: keep-alive\r\n"
           b"X-Hop: must-not-pass\r\n"
           b"TE: trailers\r\n"
           b"X-Keep: Yes\r\n"
           b"\r\n")
    status, _, body, _ = raw_h1(to_h2.port, req)
    assert status == 200
    echo = json.loads(body)
    pseudo = [k for k, _ in echo["headers"] if k.startswith(":")]
    assert sorted(pseudo) == [":authority", ":method", ":path", ":scheme"] or is_standin()
    if not is_standin():
        assert echo["authority"] == "svc.example:8080"
        assert "host" not in names(echo) or values(echo, "host") == ["svc.example:8080"]
    assert echo["method"] == "GET" and echo["path"] == "/conv?a=b" and echo["scheme"] == "http"
    assert all(k == k.lower() for k in names(echo)), f"upper-case field names sent over HTTP/2: {names(echo)}"
    # RFC 9110 7.6.1: fields named in Connection go too (nghttpx 1.52 does not do this)
    leaked = (HOP_BY_HOP | (set() if is_standin() else {"x-hop"})) & set(names(echo))
    assert not leaked, f"connection-specific fields forwarded to HTTP/2: {leaked}"
    assert values(echo, "te") == ["trailers"]
    assert values(echo, "x-keep") == ["Yes"]


def test_h1_to_h2_te_reduced_to_trailers(to_h2):
    status, _, body, _ = raw_h1(to_h2.port, b"GET /te HTTP/1.1\r\nHost: te.test\r\nTE: gzip, trailers\r\n\r\n")
    assert status == 200
    # RFC 9113 8.2.2: over HTTP/2 te may only carry "trailers"
    assert values(json.loads(body), "te") == ["trailers"]


def test_h1_chunked_to_h2_body(to_h2):
    data = os.urandom(70000)
    chunks = b"".join(b"%x\r\n" % len(data[i:i + 10000]) + data[i:i + 10000] + b"\r\n" for i in range(0, len(data), 10000))
    req = b"POST /chunked HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: chunked\r\nx-echo-raw: 1\r\n\r\n" + chunks + b"0\r\n\r\n"
    status, headers, body, _ = raw_h1(to_h2.port, req)
    assert status == 200
    assert body == data


def test_h2_response_trailers_to_h1_chunked(to_h2):
    status, headers, body, trailers = raw_h1(
        to_h2.port, b"GET /rt HTTP/1.1\r\nHost: rt.test\r\nTE: trailers\r\nx-resp-trailers: grpc-status=0,x-sum=42\r\n\r\n")
    assert status == 200
    assert dict(headers).get("transfer-encoding", "").lower() == "chunked"
    assert trailers == [("grpc-status", "0"), ("x-sum", "42")]


# ------------------------------------------------------------------------------ h2 -> h1

def test_h2_to_h1_request_headers(to_h1):
    with H2Client("127.0.0.1", to_h1.port) as c:
        r = c.get("/conv?x=1", authority="svc.example:8080",
                  headers=[("te", "trailers"), ("x-keep", "yes"), ("cookie", "a=1"), ("cookie", "b=2")])
    assert r.status == 200
    echo = json.loads(r.data)
    assert echo["method"] == "GET" and echo["target"] == "/conv?x=1" and echo["version"] == "HTTP/1.1"
    assert values(echo, "host") == ["svc.example:8080"], f"Host must carry :authority exactly once: {echo['headers']}"
    assert not [k for k in names(echo) if k.startswith(":")]
    assert values(echo, "te") == ["trailers"]
    assert values(echo, "x-keep") == ["yes"]
    # RFC 9113 8.2.3: split cookie fields are joined with "; " for HTTP/1.1
    assert values(echo, "cookie") == ["a=1; b=2"]


def test_h2_to_h1_body_without_content_length(to_h1):
    data = os.urandom(150000)
    with H2Client("127.0.0.1", to_h1.port) as c:
        sid = c.request("POST", "/nocl", body=data)
        assert c.wait([sid], timeout=20)
        r = c.responses[sid]
    assert r.status == 200
    echo = json.loads(r.data)
    assert echo["body_len"] == len(data)
    framing = values(echo, "transfer-encoding") + values(echo, "content-length")
    assert framing in (["chunked"], [str(len(data))]), f"HTTP/1.1 framing upstream: {framing}"


def test_h2_to_h1_response_headers_cleaned(to_h1):
    with H2Client("127.0.0.1", to_h1.port) as c:
        r = c.get("/resp", headers=[("x-resp-header", "Keep-Alive=timeout 5,X-Origin-Field=v"),
                                    ("x-chunked-response", "1")])
    assert r.status == 200
    got = [k.decode() for k, _ in r.headers]
    assert all(k == k.lower() for k in got), got
    leaked = HOP_BY_HOP & set(got)
    assert not leaked, f"connection-specific fields sent over HTTP/2: {leaked}"
    assert r.header("x-origin-field") == "v"
    assert json.loads(r.data)["target"] == "/resp"


def test_h1_chunked_trailers_to_h2_trailers(to_h1):
    with H2Client("127.0.0.1", to_h1.port) as c:
        r = c.get("/rt", headers=[("te", "trailers"), ("x-resp-trailers", "x-a=1,x-b=two")])
    assert r.status == 200 and r.reset_code is None
    assert json.loads(r.data)["target"] == "/rt"
    assert [(k.decode(), v.decode()) for k, v in r.trailers] == [("x-a", "1"), ("x-b", "two")]


def test_h2_request_trailers_to_h1_chunked(to_h1):
    with H2Client("127.0.0.1", to_h1.port) as c:
        sid = c.request("POST", "/reqtr", headers=[("te", "trailers")], body=b"payload", end_stream=False)
        c.conn.send_headers(sid, [(b"x-checksum", b"abc")], end_stream=True)
        c.flush()
        assert c.wait([sid])
        r = c.responses[sid]
    assert r.status == 200
    echo = json.loads(r.data)
    assert echo["body"] == "payload" and echo["chunked"] is True
    assert [[k.lower(), v] for k, v in echo["trailers"]] == [["x-checksum", "abc"]]
