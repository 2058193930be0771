"""HTTP/1.1 downstream: reading stays on across keep-alive requests (no epoll_ctl per request), which must not change
what a client sees: a client's FIN after its request still gets the answer, and a client that pipelines without reading
its responses is not buffered without bound (agent/src/http1/h1server.c, parse_input)."""

import json
import socket
import time

import pytest

from support import read_h1_response


@pytest.fixture(scope="module", params=["http1", "h2"])
def px(request, module_proxy_factory, h1_origin, h2_origin):
    origin = h1_origin if request.param == "http1" else h2_origin
    return module_proxy_factory(upstream=origin.addr, upstream_protocol=request.param, workers=1)


def read_until_eof(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_fin_after_request_still_answered_then_closed(px):
    """The client half-closes while its (slow) request is upstream: the answer comes, then the agent closes."""
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.sendall(b"GET /fin/1 HTTP/1.1\r\nHost: fin.test\r\nx-delay-ms: 300\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        status, _, body, _ = read_h1_response(s)
        assert status == 200
        assert json.loads(body).get("target", json.loads(body).get("path")) == "/fin/1"
        # the connection is not kept for another request: the agent closes after the answer
        assert read_until_eof(s) == b""


def test_keep_alive_after_slow_answer(px):
    """Reading stays on while a request is upstream: nothing arrives meanwhile, and the next request is served."""
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        for i in range(3):
            s.sendall(f"GET /ka/{i} HTTP/1.1\r\nHost: ka.test\r\nx-delay-ms: 100\r\n\r\n".encode())
            status, headers, body, _ = read_h1_response(s)
            assert status == 200
            assert ("connection", "close") not in headers


def test_pipelining_client_that_never_reads_is_bounded(px):
    """A client that sends requests without reading the answers: the agent stops reading (the rest waits in the
    socket buffers), so the client's sends block long before it has sent 64 MiB; then, reading, it gets the answers
    in order."""
    req = b"GET /pl HTTP/1.1\r\nHost: pl.test\r\nx-stream-bytes: 65536\r\n\r\n"
    total = 64 * 1024 * 1024
    sent = 0
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setblocking(False)
        chunk = req * 256
        stalled_since = None
        deadline = time.monotonic() + 20
        while sent < total and time.monotonic() < deadline:
            try:
                sent += s.send(chunk)
                stalled_since = None
            except BlockingIOError:
                if stalled_since is None:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > 1.0:
                    break  # blocked for a second: the agent is not reading
                time.sleep(0.01)
        assert sent < 8 * 1024 * 1024, f"the agent kept reading: {sent} bytes of pipelined requests taken"
        # now read: the answers come in order, each 64 KiB
        s.setblocking(True)
        for _ in range(3):
            status, _, body, _ = read_h1_response(s, timeout=10)
            assert status == 200 and len(body) == 65536
