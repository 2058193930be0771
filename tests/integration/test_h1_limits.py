"""Downstream request limits and slowloris defences (docs/hardening.md "HTTP/1.1 limits"), per-listener connection
limits, and the HTTP/2-only listener (`protocol: h2`, h2spec 3.5's literal bad preface).

Real sockets against a real agent (2 workers) with small limits: a request head must end within
request_headers_timeout_ms of its first byte (408 and close), a target over max_request_uri_bytes is 414, a head over
max_header_bytes 431, a body over max_request_body_bytes 413 (declared or chunked), and a listener with
max_connections keeps exactly that many open across workers. Every answer is counted in
remora_downstream_limit_total{kind} / remora_downstream_connections_refused_total{reason}."""

import asyncio
import json
import select
import socket
import ssl
import subprocess
import time

import pytest

import support
from h2raw import PROTOCOL_ERROR, RawH2
from procutil import free_port

pytestmark = pytest.mark.agent_only("remora's own limits")

HEAD_TIMEOUT_MS = 2000
MAX_URI = 1024
MAX_BODY = 1000
MAX_HEADER_BYTES = 2048
MAX_CONNS = 3


class Agent:
    pass


@pytest.fixture(scope="module")
def agent(module_proxy_factory, h1_origin, certs, tmp_path_factory):
    d = tmp_path_factory.mktemp("h1limits")
    a = Agent()
    a.main, a.capped, a.h2c, a.h2tls = free_port(), free_port(), free_port(), free_port()
    health, admin = free_port(), free_port()
    route = "    routes: [{name: all, cluster: origin}]"
    text = "\n".join([
        "workers: 2",
        f"admin: 127.0.0.1:{admin}",
        f"health: 127.0.0.1:{health}",
        f"limits: {{request_headers_timeout_ms: {HEAD_TIMEOUT_MS}, max_request_uri_bytes: {MAX_URI},",
        f"         max_request_body_bytes: {MAX_BODY}, max_header_bytes: {MAX_HEADER_BYTES}}}",
        "listeners:",
        "  - name: main",
        f"    address: 127.0.0.1:{a.main}",
        route,
        "  - name: capped",
        f"    address: 127.0.0.1:{a.capped}",
        f"    max_connections: {MAX_CONNS}",
        route,
        "  - name: h2only",
        f"    address: 127.0.0.1:{a.h2c}",
        "    protocol: h2",
        route,
        "  - name: h2tls",
        f"    address: 127.0.0.1:{a.h2tls}",
        "    protocol: h2",
        f"    tls: {{certificate: {certs['cert']}, key: {certs['key']}}}",
        route,
        "clusters:",
        "  - name: origin",
        "    protocol: http1",
        f"    endpoints: [\"127.0.0.1:{h1_origin.port}\"]",
    ]) + "\n"
    path = d / "agent.yaml"
    path.write_text(text)
    a.px = module_proxy_factory(config_path=str(path), listen_port=a.main, health_port=health, admin_port=admin)
    a.origin = h1_origin
    a.certs = certs
    return a


def limit_count(px, kind, listener=None):
    labels = {"kind": kind}
    if listener:
        labels["listener"] = listener
    return support.metric(px.metrics(), "remora_downstream_limit_total", **labels) or 0


def metric(px, name, **labels):
    return support.metric(px.metrics(), name, **labels) or 0


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def header(headers, name):
    return next((v for k, v in headers if k == name), None)


def closed_by_peer(s, timeout=3.0):
    """True once the peer's FIN (or reset) arrives; False if the connection is still open at the timeout."""
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def hang_up(s):
    """Closes for real: support.read_h1_response keeps a reader on the socket, which would keep the descriptor open."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def get_ok(port, path="/ok"):
    st, _, _, _ = support.raw_h1(port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), timeout=5)
    return st == 200


# ------------------------------------------------------------------------------------ header-read timeout

def test_slowloris_cut_at_header_timeout_with_408(agent):
    """One header byte per second: answered 408 with connection: close at request_headers_timeout_ms after the head's
    first byte, not at the idle timeout (5 minutes), and the connection is closed."""
    before = limit_count(agent.px, "header_timeout", "main")
    head = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Trickle: " + b"a" * 64
    with connect(agent.main) as s:
        start = time.monotonic()
        got = False
        for i in range(len(head)):
            if time.monotonic() - start > 10:
                break
            try:
                s.sendall(head[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            r, _, _ = select.select([s], [], [], 1.0)
            if r:
                got = True
                break
        elapsed = time.monotonic() - start
        assert got, "no answer to a trickled head within 10 s"
        st, hdrs, _, _ = support.read_h1_response(s, timeout=5)
        assert st == 408
        assert header(hdrs, "connection") == "close"
        assert closed_by_peer(s), "connection not closed after the 408"
    # timer from the first byte; 1 s select granularity plus the timer wheel's
    assert HEAD_TIMEOUT_MS / 1000 - 0.2 <= elapsed <= HEAD_TIMEOUT_MS / 1000 + 1.5, elapsed
    assert limit_count(agent.px, "header_timeout", "main") == before + 1
    assert get_ok(agent.main)


def test_slow_complete_head_within_timeout_is_served(agent):
    """A head sent in pieces over well under the timeout is served, and the keep-alive connection may then sit idle
    for longer than the header timeout: the timer starts at a head's first byte, not at the previous response."""
    before = limit_count(agent.px, "header_timeout")
    parts = [b"GET /piece", b"s HTTP/1.1\r\nHo", b"st: t\r\nX-A: 1\r\n", b"\r\n"]
    with connect(agent.main) as s:
        for p in parts:
            s.sendall(p)
            time.sleep(0.3)
        st, _, body, _ = support.read_h1_response(s, timeout=5)
        assert st == 200 and b"/pieces" in body
        time.sleep(HEAD_TIMEOUT_MS / 1000 + 0.5)
        s.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        st, _, body, _ = support.read_h1_response(s, timeout=5)
        assert st == 200 and b"/again" in body
    assert limit_count(agent.px, "header_timeout") == before


# ----------------------------------------------------------------------------------------- 414 and 431

def test_uri_too_long_414(agent):
    before = limit_count(agent.px, "uri_too_long", "main")
    before_pe = metric(agent.px, "remora_downstream_protocol_errors_total", listener="main")
    before_origin = agent.origin.stats()["requests"]
    ok_path = "/" + "a" * (MAX_URI - 1)
    st, _, _, _ = support.raw_h1(agent.main, f"GET {ok_path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert st == 200
    with connect(agent.main) as s:
        s.sendall(f"GET {ok_path}b HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        st, hdrs, _, _ = support.read_h1_response(s)
        assert st == 414
        assert header(hdrs, "connection") == "close"
        assert closed_by_peer(s)
    assert limit_count(agent.px, "uri_too_long", "main") == before + 1
    # a limit, not a malformed request
    assert metric(agent.px, "remora_downstream_protocol_errors_total", listener="main") == before_pe
    assert agent.origin.stats()["requests"] == before_origin + 1


def test_uri_too_long_h2_414(agent):
    before = limit_count(agent.px, "uri_too_long", "h2only")
    with RawH2("127.0.0.1", agent.h2c) as c:
        c.handshake()
        c.send(c.headers_frame(1, c.req("/" + "a" * MAX_URI), end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head.get(":status") == "414", c.frames
        c.send(c.headers_frame(3, c.req("/fine"), end_stream=True))
        head = c.response_for(3, 5)
        assert head is not None and head.get(":status") == "200"
    assert limit_count(agent.px, "uri_too_long", "h2only") == before + 1


def test_header_fields_too_large_431(agent):
    before = limit_count(agent.px, "headers_too_large", "main")
    before_pe = metric(agent.px, "remora_downstream_protocol_errors_total", listener="main")
    st, hdrs, _, _ = support.raw_h1(agent.main, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * MAX_HEADER_BYTES +
                                    b"\r\n\r\n")
    assert st == 431
    assert header(hdrs, "connection") == "close"
    assert limit_count(agent.px, "headers_too_large", "main") == before + 1
    # 431 is still counted as a protocol error, as before this limit had its own counter
    assert metric(agent.px, "remora_downstream_protocol_errors_total", listener="main") == before_pe + 1
    assert get_ok(agent.main)


# ------------------------------------------------------------------------------------------------ 413

def test_body_too_large_by_content_length_413_nothing_upstream(agent):
    before = limit_count(agent.px, "body_too_large", "main")
    before_origin = agent.origin.stats()["requests"]
    with connect(agent.main) as s:
        # the head only: the answer must come without the body, and before anything goes upstream
        s.sendall(f"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        st, hdrs, _, _ = support.read_h1_response(s, timeout=5)
        assert st == 413
        assert header(hdrs, "connection") == "close"  # the body was not read: the connection cannot go on
        s.sendall(b"x" * (MAX_BODY + 1))  # a client that sends it anyway is read and dropped, then closed
        assert closed_by_peer(s)
    assert agent.origin.stats()["requests"] == before_origin
    assert limit_count(agent.px, "body_too_large", "main") == before + 1


def test_body_at_limit_is_served_and_keeps_alive(agent):
    with connect(agent.main) as s:
        s.sendall(f"POST /fit HTTP/1.1\r\nHost: t\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode() + b"y" * MAX_BODY)
        st, _, body, _ = support.read_h1_response(s)
        assert st == 200 and json.loads(body)["body_len"] == MAX_BODY
        s.sendall(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        st, _, _, _ = support.read_h1_response(s)
        assert st == 200


def test_body_too_large_chunked_413(agent):
    """A chunked body that grows over the limit mid-stream: 413 (no response had started), and close."""
    before = limit_count(agent.px, "body_too_large", "main")
    with connect(agent.main) as s:
        s.sendall(b"POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"z" * 600
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        time.sleep(0.2)
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        st, hdrs, _, _ = support.read_h1_response(s, timeout=5)
        assert st == 413
        assert header(hdrs, "connection") == "close"
        assert closed_by_peer(s)
    assert limit_count(agent.px, "body_too_large", "main") == before + 1
    assert get_ok(agent.main)


def test_body_too_large_h2_413(agent):
    before = limit_count(agent.px, "body_too_large", "h2only")
    with RawH2("127.0.0.1", agent.h2c) as c:
        c.handshake()
        c.send(c.headers_frame(1, c.req("/h2big", "POST", [("content-length", str(MAX_BODY + 1))])))
        head = c.response_for(1, 5)
        assert head is not None and head.get(":status") == "413", c.frames
    assert limit_count(agent.px, "body_too_large", "h2only") == before + 1


def test_websocket_tunnel_is_not_a_body(proxy_factory, tmp_path):
    """max_request_body_bytes bounds request bodies, not the bytes of an upgraded (WebSocket) tunnel."""
    pytest.importorskip("websockets")
    from test_upgrade_case import WsEchoServer, ws_session
    srv = WsEchoServer()
    try:
        port, health, admin = free_port(), free_port(), free_port()
        path = tmp_path / "ws.yaml"
        path.write_text(f"admin: 127.0.0.1:{admin}\nhealth: 127.0.0.1:{health}\n"
                        f"limits: {{max_request_body_bytes: {MAX_BODY}}}\n"
                        f"listeners:\n  - name: ws\n    address: 127.0.0.1:{port}\n    routes: [{{cluster: ws}}]\n"
                        f"clusters:\n  - name: ws\n    protocol: http1\n    endpoints: [\"{srv.addr}\"]\n")
        proxy_factory(config_path=str(path), listen_port=port, health_port=health, admin_port=admin)
        code = asyncio.run(asyncio.wait_for(ws_session(f"ws://127.0.0.1:{port}/chat", sizes=(MAX_BODY * 5,), count=2),
                                            30))
        assert code == 1000
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------- max_connections

def test_max_connections_across_two_workers(agent):
    """N + k connections at once on a listener with max_connections N, served by 2 workers: exactly N are served, k
    are closed at once and counted; once they close, new connections are served again."""
    k = 4
    before = metric(agent.px, "remora_downstream_connections_refused_total", listener="capped",
                    reason="max_connections")
    socks = [connect(agent.capped, timeout=5) for _ in range(MAX_CONNS + k)]
    try:
        time.sleep(0.5)  # every connection accepted (or refused) by one of the workers
        served = refused = 0
        for s in socks:
            try:
                s.sendall(b"GET /capped HTTP/1.1\r\nHost: t\r\n\r\n")
                st, _, _, _ = support.read_h1_response(s, timeout=5)
                assert st == 200
                served += 1
            except (support.NoResponse, ConnectionResetError, BrokenPipeError):
                refused += 1
        assert (served, refused) == (MAX_CONNS, k)
        assert metric(agent.px, "remora_downstream_connections_refused_total", listener="capped",
                      reason="max_connections") == before + k
    finally:
        for s in socks:
            hang_up(s)
    # the count goes down as connections close: the limit admits new ones (up to N again)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and metric(agent.px, "remora_downstream_connections_active",
                                                 listener="capped") != 0:
        time.sleep(0.05)
    again = [connect(agent.capped, timeout=5) for _ in range(MAX_CONNS)]
    try:
        for s in again:
            s.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
            assert support.read_h1_response(s, timeout=5)[0] == 200
    finally:
        for s in again:
            hang_up(s)


# ----------------------------------------------------------------------------- protocol: h2 (h2spec 3.5)

def tls_ctx(agent):
    return ssl.create_default_context(cafile=agent.certs["ca"])


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_h2spec_3_5_invalid_preface_h2_listener(agent, tls):
    """h2spec 3.5 sends the literal "INVALID CONNECTION PREFACE": an HTTP/2-only listener answers GOAWAY
    PROTOCOL_ERROR (nghttp2), never an HTTP/1.1 status."""
    port = agent.h2tls if tls else agent.h2c
    with RawH2("127.0.0.1", port, tls=tls_ctx(agent) if tls else None,
               server_hostname="localhost" if tls else None) as c:
        c.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
        g = c.expect_goaway(5)
        assert g is not None, f"no GOAWAY (frames {c.frames}, raw {c.raw_in[:200]!r})"
        assert g.error_code == PROTOCOL_ERROR, g
        assert c.wait_closed(5)
        assert b"HTTP/1.1" not in c.raw_in


def test_h2_listener_serves_h2_and_refuses_http1(agent):
    for tls in (False, True):
        port = agent.h2tls if tls else agent.h2c
        with RawH2("127.0.0.1", port, tls=tls_ctx(agent) if tls else None,
                   server_hostname="localhost" if tls else None) as c:
            c.handshake()
            c.send(c.headers_frame(1, c.req("/h2only"), end_stream=True))
            head = c.response_for(1, 5)
            assert head is not None and head.get(":status") == "200"
    # an HTTP/1.1 request on the cleartext HTTP/2 port is not answered by HTTP/1.1
    with RawH2("127.0.0.1", agent.h2c) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        g = c.expect_goaway(5)
        assert g is not None and g.error_code == PROTOCOL_ERROR
        assert b"HTTP/1.1" not in c.raw_in
    # over TLS the listener offers only h2: a client that offers only http/1.1 does not get it
    ctx = tls_ctx(agent)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with ctx.wrap_socket(connect(agent.h2tls), server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() != "http/1.1"
    except (ssl.SSLError, ConnectionResetError):
        pass  # refusing the handshake (no_application_protocol) is an answer too


@pytest.mark.parametrize("extra,why", [
    ("    direction: outbound\n", "explicit listeners"),
    ("    peer: agent\n", "peer: agent"),
])
def test_protocol_h2_refused_with_direction_or_peer_agent(tmp_path, extra, why):
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n"
                    "  - name: x\n"
                    f"    address: 127.0.0.1:{free_port()}\n"
                    "    protocol: h2\n" + extra +
                    "    routes: [{cluster: c}]\n"
                    "clusters:\n"
                    "  - name: c\n"
                    "    protocol: http1\n"
                    "    endpoints: [\"127.0.0.1:1\"]\n")
    r = subprocess.run([support.AGENT, "--config", str(path), "--check-config"], capture_output=True, text=True,
                       timeout=15)
    assert r.returncode != 0
    assert f"{path}:2" in r.stderr and why in r.stderr, r.stderr


def test_limits_refused_out_of_range(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("limits:\n"
                    "  max_request_uri_bytes: 10\n"
                    "listeners:\n"
                    "  - name: x\n"
                    f"    address: 127.0.0.1:{free_port()}\n"
                    "    routes: [{cluster: c}]\n"
                    "clusters:\n"
                    "  - name: c\n"
                    "    protocol: http1\n"
                    "    endpoints: [\"127.0.0.1:1\"]\n")
    r = subprocess.run([support.AGENT, "--config", str(path), "--check-config"], capture_output=True, text=True,
                       timeout=15)
    assert r.returncode != 0
    assert f"{path}:2" in r.stderr and "max_request_uri_bytes" in r.stderr, r.stderr
