"""HTTP/1.1 Upgrade (WebSocket) tunnels, header-name case preservation, and HTTP/1.1 riding a multiplexed
HTTP/2 connection between two agents (docs/architecture.md, "Upgrade, name case and agent-to-agent HTTP/2").

Real clients and servers: the `websockets` library (python3-websockets) on both ends of the tunnel, and a
raw-socket HTTP/1.1 server that records the exact bytes of each request head it receives.

Topologies: client -> agent -> server, and client -> agent A -> agent B -> server, where A's cluster is
`protocol: h2` + `peer: agent` and B's listener is `peer: agent`.
"""

import asyncio
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import support
from procutil import free_port

websockets = pytest.importorskip("websockets")

pytestmark = pytest.mark.skipif(support.is_standin(), reason="agent-specific configuration (peer: agent)")


# ------------------------------------------------------------------------------------------ servers

class RawH1Server:
    """HTTP/1.1 server on raw sockets: records each request head byte for byte and answers with fields whose
    names are mixed-case. GET /refuse-upgrade answers 403 even to an upgrade request. Keep-alive; one thread
    per connection; `delay` seconds before each answer."""

    RESPONSE_BODY = b"ok"

    def __init__(self, delay=0.0):
        self.delay = delay
        self.heads = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            c.settimeout(30)
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self.lock:
                    self.heads.append(head + b"\r\n\r\n")
                lines = head.split(b"\r\n")
                cl = 0
                for ln in lines[1:]:
                    k, _, v = ln.partition(b":")
                    if k.strip().lower() == b"content-length":
                        cl = int(v.strip())
                while len(buf) < cl:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[cl:]
                if self.delay:
                    time.sleep(self.delay)
                path = lines[0].split(b" ")[1]
                if path == b"/half-close":
                    # a tunnel that reads to the client's FIN, then answers and closes
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    got = len(buf)
                    while True:
                        d = c.recv(65536)
                        if not d:
                            break
                        got += len(d)
                    c.sendall(b"got %d" % got)
                    return
                if path == b"/chunked":
                    c.sendall(b"HTTP/1.1 200 OK\r\nX-Resp-Legacy: yes\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"2\r\nok\r\n0\r\n\r\n")
                    continue
                if path == b"/refuse-upgrade":
                    body = b"no upgrade here"
                    c.sendall(b"HTTP/1.1 403 Forbidden\r\nX-Refused-By: Origin\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))
                    continue
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Resp-Legacy: yes\r\nContent-Type: text/plain\r\n"
                          b"x-lower-already: 1\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(self.RESPONSE_BODY), self.RESPONSE_BODY))
        except OSError:
            return
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


class WsEchoServer:
    """A websockets server on its own event loop thread: greets with b"hello" (server speaks first), then
    echoes every message; records the close code the client sent."""

    def __init__(self):
        self.port = free_port()
        self.close_codes = []
        self.request_headers = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "websocket server did not start"

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    async def _handler(self, ws, path=None):
        self.request_headers.append(dict(ws.request_headers.raw_items()))
        await ws.send(b"hello")
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        self.close_codes.append(ws.close_code)

    def _run(self, started):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await websockets.serve(self._handler, "127.0.0.1", self.port, max_size=None,
                                                 ping_interval=None)
            started.set()
            await self.server.wait_closed()

        try:
            self.loop.run_until_complete(main())
        except Exception:
            pass

    def stop(self):
        def _close():
            self.server.close()
        self.loop.call_soon_threadsafe(_close)
        self.thread.join(5)


@pytest.fixture
def raw_server():
    s = RawH1Server()
    yield s
    s.stop()


@pytest.fixture
def ws_server():
    s = WsEchoServer()
    yield s
    s.stop()


# ------------------------------------------------------------------------------------------- agents

def write_config(workdir, name, *, port, health, admin, cluster_protocol, endpoint, listener_peer=None,
                 cluster_peer=None, stream_idle_timeout_ms=None, route_timeout_ms=None):
    lines = ["workers: 1", f"admin: 127.0.0.1:{admin}", f"health: 127.0.0.1:{health}", "listeners:",
             f"  - name: {name}", f"    address: 127.0.0.1:{port}"]
    if listener_peer:
        lines.append(f"    peer: {listener_peer}")
    lines += ["    routes:", "      - name: all", "        cluster: app"]
    if route_timeout_ms is not None:
        lines.append(f"        timeout_ms: {route_timeout_ms}")
    lines += ["clusters:", "  - name: app", f"    protocol: {cluster_protocol}", f'    endpoints: ["{endpoint}"]']
    if cluster_peer:
        lines.append(f"    peer: {cluster_peer}")
    if stream_idle_timeout_ms is not None:
        lines.append(f"    stream_idle_timeout_ms: {stream_idle_timeout_ms}")
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_agent(proxy_factory, workdir, name, **kw):
    port, health, admin = free_port(), free_port(), free_port()
    path = write_config(workdir, name, port=port, health=health, admin=admin, **kw)
    return proxy_factory(config_path=path, listen_port=port, health_port=health, admin_port=admin)


def one_agent(proxy_factory, workdir, upstream, **kw):
    return start_agent(proxy_factory, workdir, "edge", cluster_protocol="http1", endpoint=upstream.addr, **kw)


def two_agents(proxy_factory, workdir, upstream, **kw):
    """client -> A (outbound: cluster h2 + peer agent) -> B (listener peer agent; cluster http1) -> upstream."""
    b = start_agent(proxy_factory, workdir, "inbound", cluster_protocol="http1", endpoint=upstream.addr,
                    listener_peer="agent", **kw)
    a = start_agent(proxy_factory, workdir, "outbound", cluster_protocol="h2", endpoint=b.addr, cluster_peer="agent", **kw)
    return a, b


# ------------------------------------------------------------------------------------------ helpers

def read_raw_response(sock, timeout=10.0):
    """One response (Content-Length framed, or chunked) from a socket, the head kept byte for byte.
    Returns (head bytes, body bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError(f"eof in response head: {buf!r}")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    fields = {}
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        fields[k.strip().lower()] = v.strip()
    if b"content-length" in fields:
        n = int(fields[b"content-length"])
        while len(rest) < n:
            d = sock.recv(65536)
            if not d:
                break
            rest += d
        return head + b"\r\n\r\n", rest[:n]
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            d = sock.recv(65536)
            if not d:
                break
            rest += d
        return head + b"\r\n\r\n", rest
    return head + b"\r\n\r\n", rest


def names_in(head):
    return [ln.partition(b":")[0] for ln in head.split(b"\r\n")[1:] if ln]


def request_with_case(port, path=b"/case"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: app.test\r\nX-Legacy-Header: 1\r\nContent-Type: text/plain\r\n"
                  b"x-already-lower: 2\r\nX-MiXeD-cAsE: 3\r\nUser-Agent: raw\r\n\r\n")
        return read_raw_response(s)


def check_case_roundtrip(server, head, body):
    assert body == b"ok"
    assert len(server.heads) >= 1
    seen = server.heads[-1]
    # the application sees the names spelled as the client sent them
    assert b"\r\nX-Legacy-Header: 1\r\n" in seen, seen
    assert b"\r\nHost: app.test\r\n" in seen, seen
    assert b"\r\nContent-Type: text/plain\r\n" in seen, seen
    assert b"\r\nx-already-lower: 2\r\n" in seen, seen
    assert b"\r\nX-MiXeD-cAsE: 3\r\n" in seen, seen
    assert b"\r\nUser-Agent: raw\r\n" in seen, seen
    # ... and never a marker field
    assert b"x-remora" not in seen.lower(), seen
    # the client sees the response's names spelled as the application sent them, and no marker either
    resp_names = names_in(head)
    assert b"X-Resp-Legacy" in resp_names, head
    assert b"Content-Type" in resp_names, head
    assert b"x-lower-already" in resp_names, head
    assert b"\r\nContent-Length: 2\r\n" in head, head
    assert b"x-remora" not in head.lower(), head


# ------------------------------------------------------------------------------------------ name case

def test_header_case_through_one_agent(proxy_factory, workdir, raw_server):
    agent = one_agent(proxy_factory, workdir, raw_server)
    head, body = request_with_case(agent.port)
    assert head.startswith(b"HTTP/1.1 200"), head
    check_case_roundtrip(raw_server, head, body)


def test_header_case_through_two_agents_over_h2(proxy_factory, workdir, raw_server):
    a, b = two_agents(proxy_factory, workdir, raw_server)
    head, body = request_with_case(a.port)
    assert head.startswith(b"HTTP/1.1 200"), head
    check_case_roundtrip(raw_server, head, body)
    # the hop between the agents was HTTP/2
    m = b.metrics()
    assert support.metric(m, "remora_downstream_connections_by_protocol_total", protocol="h2") == 1


def test_marker_from_a_client_is_not_honoured(proxy_factory, workdir, raw_server):
    """A client cannot inject markers: over HTTP/1.1 they are removed; on a listener without `peer: agent`
    an HTTP/2 client's markers are removed and not applied."""
    agent = one_agent(proxy_factory, workdir, raw_server)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"GET /m HTTP/1.1\r\nHost: app.test\r\nx-remora-h1-case: X-FOO\r\nx-remora-orig-proto: HTTP/1.1\r\n"
                  b"x-foo: 1\r\n\r\n")
        head, body = read_raw_response(s)
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = raw_server.heads[-1]
    assert b"x-remora" not in seen.lower() and b"\r\nx-foo: 1\r\n" in seen, seen

    r = support.curl(workdir, "--http2-prior-knowledge", "-H", "x-remora-h1-case: X-Foo", "-H", "x-foo: 1",
                     agent.url("/m2"))
    assert r.status == 200, r
    seen = raw_server.heads[-1]
    assert b"x-remora" not in seen.lower() and b"\r\nx-foo: 1\r\n" in seen, seen


def test_h1_over_shared_h2_connection_between_agents(proxy_factory, workdir):
    server = RawH1Server(delay=0.05)
    try:
        a, b = two_agents(proxy_factory, workdir, server)
        before = support.metric(b.metrics(), "remora_downstream_connections_total") or 0

        def client(n):
            out = []
            with socket.create_connection(("127.0.0.1", a.port), timeout=20) as s:
                for i in range(n):
                    s.sendall(b"GET /mux/%d HTTP/1.1\r\nHost: app.test\r\nX-Legacy-Header: %d\r\n\r\n" % (i, i))
                    out.append(read_raw_response(s, timeout=20))
            return out

        # 10 client connections x 5 keep-alive requests, all in flight together
        with ThreadPoolExecutor(max_workers=10) as ex:
            results = [r for f in [ex.submit(client, 5) for _ in range(10)] for r in f.result()]
        assert len(results) == 50
        for head, body in results:
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok", head
            assert b"X-Resp-Legacy" in names_in(head)
        m = b.metrics()
        # one HTTP/2 connection between the agents carried all 50
        assert (support.metric(m, "remora_downstream_connections_total") or 0) - before == 1
        assert support.metric(m, "remora_downstream_connections_by_protocol_total", protocol="h2") == 1
        assert support.metric(m, "remora_downstream_requests_total") >= 50
        # concurrency: the 10 client connections reached the app over several connections of B's pool at once
        assert server.connections >= 2
        assert all(b"\r\nX-Legacy-Header: " in h for h in server.heads), [h for h in server.heads if b"X-Legacy-Header" not in h][:3]
        assert not any(b"x-remora" in h.lower() for h in server.heads)
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ WebSocket

async def ws_session(url, sizes=(1, 1000, 70000, 1 << 20), count=3):
    async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10,
                                  extra_headers={"X-Client-Case": "kept"}) as ws:
        greeting = await asyncio.wait_for(ws.recv(), 10)
        assert greeting == b"hello"
        for n in sizes:
            for i in range(count):
                msg = os.urandom(n)
                await ws.send(msg)
                back = await asyncio.wait_for(ws.recv(), 20)
                assert back == msg, f"echo of {n} bytes differs"
        # text frames too
        await ws.send("text frame é")
        assert await asyncio.wait_for(ws.recv(), 10) == "text frame é"
        await ws.close(code=1000, reason="done")
        return ws.close_code


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def check_ws(agent, ws_server):
    code = asyncio.run(asyncio.wait_for(ws_session(f"ws://127.0.0.1:{agent.port}/chat"), 60))
    assert code == 1000
    assert wait_for(lambda: ws_server.close_codes == [1000]), ws_server.close_codes
    # the upgrade fields reached the server, and the client's name case with them
    h = ws_server.request_headers[-1]
    assert {k.lower(): v for k, v in h.items()}.get("upgrade", "").lower() == "websocket", h
    assert "X-Client-Case" in h, h
    assert not any(k.lower().startswith("x-remora") for k in h), h


def test_websocket_echo_through_one_agent(proxy_factory, workdir, ws_server):
    agent = one_agent(proxy_factory, workdir, ws_server, route_timeout_ms=1000)
    t0 = time.monotonic()
    check_ws(agent, ws_server)
    m = agent.metrics()
    assert support.metric(m, "remora_upgrades_total", result="switched") == 1
    assert wait_for(lambda: support.metric(agent.metrics(), "remora_upgrades_active") == 0)
    assert time.monotonic() - t0 < 30


def test_websocket_outlives_route_timeout(proxy_factory, workdir, ws_server):
    """The route's request timeout does not cut a tunnel: only the stream idle timeout does."""
    agent = one_agent(proxy_factory, workdir, ws_server, route_timeout_ms=300)

    async def session():
        async with websockets.connect(f"ws://127.0.0.1:{agent.port}/slow", ping_interval=None) as ws:
            assert await ws.recv() == b"hello"
            for i in range(3):
                await asyncio.sleep(0.3)
                await ws.send(b"tick %d" % i)
                assert await ws.recv() == b"tick %d" % i
            await ws.close()
            return ws.close_code

    assert asyncio.run(asyncio.wait_for(session(), 20)) == 1000


def test_websocket_idle_timeout(proxy_factory, workdir, ws_server):
    agent = one_agent(proxy_factory, workdir, ws_server, stream_idle_timeout_ms=400)

    async def session():
        async with websockets.connect(f"ws://127.0.0.1:{agent.port}/idle", ping_interval=None) as ws:
            assert await ws.recv() == b"hello"
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - t0

    elapsed = asyncio.run(session())
    assert 0.2 < elapsed < 5, elapsed
    assert wait_for(lambda: support.metric(agent.metrics(), "remora_upgrades_active") == 0)


def test_websocket_echo_through_two_agents(proxy_factory, workdir, ws_server):
    a, b = two_agents(proxy_factory, workdir, ws_server)
    check_ws(a, ws_server)
    for agent in (a, b):
        assert support.metric(agent.metrics(), "remora_upgrades_total", result="switched") == 1
    # the upgraded hop between the agents stayed HTTP/1.1
    assert support.metric(b.metrics(), "remora_downstream_connections_by_protocol_total", protocol="http1") == 1


def test_websocket_many_concurrent_through_two_agents(proxy_factory, workdir, ws_server):
    a, b = two_agents(proxy_factory, workdir, ws_server)

    async def many():
        return await asyncio.gather(*[ws_session(f"ws://127.0.0.1:{a.port}/c{i}", sizes=(10, 100000), count=2)
                                      for i in range(8)])

    assert asyncio.run(asyncio.wait_for(many(), 60)) == [1000] * 8


def upgrade_refused(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /refuse-upgrade HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head, body = read_raw_response(s)
        # not switched: the connection goes on as HTTP/1.1
        s.sendall(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
        head2, body2 = read_raw_response(s)
    return head, body, head2, body2


@pytest.mark.parametrize("hops", [1, 2])
def test_upgrade_refused_is_an_ordinary_response(proxy_factory, workdir, raw_server, hops):
    if hops == 1:
        edge = one_agent(proxy_factory, workdir, raw_server)
        agents = [edge]
    else:
        edge, b = two_agents(proxy_factory, workdir, raw_server)
        agents = [edge, b]
    head, body, head2, body2 = upgrade_refused(edge.port)
    assert head.startswith(b"HTTP/1.1 403"), head
    assert body == b"no upgrade here"
    assert b"X-Refused-By" in names_in(head)
    assert head2.startswith(b"HTTP/1.1 200") and body2 == b"ok", head2
    # the upgrade request reached the server with its upgrade fields
    seen = [h for h in raw_server.heads if h.startswith(b"GET /refuse-upgrade")][0]
    assert b"\r\nupgrade: websocket\r\n" in seen.lower() and b"\r\nconnection: upgrade\r\n" in seen.lower(), seen
    for agent in agents:
        assert support.metric(agent.metrics(), "remora_upgrades_total", result="refused") == 1


def test_other_upgrade_tokens_are_stripped(proxy_factory, workdir, raw_server):
    agent = one_agent(proxy_factory, workdir, raw_server)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"GET /h2c HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        head, body = read_raw_response(s)
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = raw_server.heads[-1].lower()
    assert b"upgrade" not in seen and b"http2-settings" not in seen, seen


@pytest.mark.parametrize("hops", [1, 2])
def test_tunnel_half_close(proxy_factory, workdir, raw_server, hops):
    """The client's FIN reaches the server as a half-close; the server's answer still comes back after it."""
    edge = one_agent(proxy_factory, workdir, raw_server) if hops == 1 else two_agents(proxy_factory, workdir, raw_server)[0]
    payload = os.urandom(300000)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        s.sendall(b"GET /half-close HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            assert d, head
            head += d
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
    assert rest == b"got %d" % len(payload)


def test_websocket_backpressure_bounds_memory(proxy_factory, workdir):
    """A client that stops reading: the agent stops reading the server instead of buffering the flood."""
    port = free_port()
    total = 64 << 20
    state = {}

    async def flood(ws, path=None):
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            while sent < total:
                await ws.send(chunk)
                sent += len(chunk)
                state["sent"] = sent
        except websockets.ConnectionClosed:
            pass

    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            state["server"] = await websockets.serve(flood, "127.0.0.1", port, max_size=None, ping_interval=None)
            ready.set()
            await state["server"].wait_closed()
        loop.run_until_complete(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        class Up:
            addr = f"127.0.0.1:{port}"
        agent = one_agent(proxy_factory, workdir, Up)
        rss0 = agent.rss_kb()

        # a raw client: the websockets client library keeps reading whatever its queue says
        with socket.create_connection(("127.0.0.1", agent.port), timeout=20) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.sendall(b"GET /flood HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            time.sleep(1.5)  # read nothing: the buffers in between fill up and the server is held back
            stalled_at = state.get("sent", 0)
            grown_kb = agent.rss_kb() - rss0
            want = (total >> 20) * ((1 << 20) + 10)  # 1 MiB binary frames with a 10-byte header
            got = 0
            while got < want:
                d = c.recv(1 << 20)
                assert d, got
                got += len(d)
        assert got >= want  # (and the close frame that follows the last message)
        assert (stalled_at, grown_kb) < (total / 2, 16 * 1024), (stalled_at, grown_kb)
    finally:
        loop.call_soon_threadsafe(state["server"].close)
        t.join(5)


def test_header_case_with_body_through_two_agents(proxy_factory, workdir, raw_server):
    a, _ = two_agents(proxy_factory, workdir, raw_server)
    body = b"x" * 100000
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        for i in range(3):  # keep-alive: each request carries its own case marker
            s.sendall(b"POST /post HTTP/1.1\r\nHOST: app.test\r\nX-Request-Number: %d\r\nContent-Length: %d\r\n\r\n%s"
                      % (i, len(body), body))
            head, rbody = read_raw_response(s)
            assert head.startswith(b"HTTP/1.1 200") and rbody == b"ok", head
    posts = [h for h in raw_server.heads if h.startswith(b"POST /post")]
    assert len(posts) == 3
    for i, h in enumerate(posts):
        assert b"\r\nHOST: app.test\r\n" in h and b"\r\nX-Request-Number: %d\r\n" % i in h, h
        assert b"\r\nContent-Length: 100000\r\n" in h and b"x-remora" not in h.lower(), h


@pytest.mark.parametrize("hops", [1, 2])
def test_framing_field_case_kept(proxy_factory, workdir, raw_server, hops):
    """Content-Length and Transfer-Encoding are the agents' own to write (the framing is regenerated), yet they are
    spelt as the peer spelt them: the request's as the client did, the response's as the application did; a
    lower-case spelling stays lower case."""
    edge = one_agent(proxy_factory, workdir, raw_server) if hops == 1 else two_agents(proxy_factory, workdir, raw_server)[0]
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        s.sendall(b"POST /cl HTTP/1.1\r\nHost: app.test\r\nX-Legacy-Header: 1\r\nContent-Length: 5\r\n\r\nhello")
        head, body = read_raw_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok", head
        assert b"\r\nContent-Length: 2\r\n" in head and b"x-remora" not in head.lower(), head
        s.sendall(b"POST /lower HTTP/1.1\r\nhost: app.test\r\ncontent-length: 3\r\n\r\nabc")
        head, body = read_raw_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok", head
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n")
        head, body = read_raw_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"2\r\nok\r\n0\r\n\r\n", (head, body)
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head and b"x-remora" not in head.lower(), head
    seen = {h.split(b" ")[1]: h for h in raw_server.heads}
    assert seen[b"/cl"] == (b"POST /cl HTTP/1.1\r\nHost: app.test\r\nX-Legacy-Header: 1\r\nContent-Length: 5\r\n\r\n"), seen
    assert seen[b"/lower"] == b"POST /lower HTTP/1.1\r\nhost: app.test\r\ncontent-length: 3\r\n\r\n", seen
