"""The agent-to-agent hop of transparent interception, with Services from the control plane.

Two pods as network namespaces (see test_transparent.py for the helpers): A (10.78.0.2) runs the
control plane on 10.78.0.2:15010 and a client; B (10.78.0.1) runs the applications. Both agents run
`--control ... --transparent` and get the same Services from `remoractl apply --wait`; the Services are
meshed (`spec.meshed` defaults to true), so A's agent reaches B's endpoints over HTTP/2 with the
`peer: agent` markers, and B's inbound listener restores HTTP/1.1 for the applications that speak it:

    app A -> http://raw (10.96.0.17:80) -> A outbound 15001 -> h2 -> B inbound 15006 -> HTTP/1.1 app B

Everything is removed in a finally, even when a test fails; every subprocess has a timeout.
"""

import json
import os
import subprocess

import pytest

from test_transparent import A4, B4, PROXY_UID, PY, TIMEOUT, TOOLS, Mesh, _REASON, curl, run

pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
websockets_missing = subprocess.run([PY, "-c", "import websockets"], capture_output=True).returncode != 0

CONTROL = f"{A4}:15010"

# B's applications. raw: a raw-socket HTTP/1.1 server whose answer's body is the exact request head it
# read (with mixed-case response names), after `delay` seconds; keep-alive.
RAW_SERVER = r"""
import socket, sys, threading, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
def serve(c):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close(); return
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        head += b"\r\n\r\n"
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(buf) < n:
            buf += c.recv(65536)
        buf = buf[n:]
        time.sleep(delay)
        c.sendall(b"HTTP/1.1 200 OK\r\nX-Resp-Legacy: yes\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(head) + head)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(256)
print("raw ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

WS_SERVER = r"""
import asyncio, sys
import websockets
async def echo(ws, path=None):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "0.0.0.0", int(sys.argv[1])):
        print("ws ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""

WS_CLIENT = r"""
import asyncio, sys
import websockets
async def main():
    async with websockets.connect(sys.argv[1], open_timeout=5, close_timeout=2) as ws:
        for m in ("hello", "x" * 100000, "bye"):
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == m, (len(got), len(m))
    print("ws echo ok")
asyncio.run(main())
"""

# The exact bytes a client in A sends, and what B's application must see: the same less the
# hop-by-hop fields (Connection and the fields it names, Keep-Alive, Proxy-Connection, TE). The framing
# field is the agents' own (body length travels as a number), spelt as the client spelt it (the case marker).
RAW_REQUEST = (b"POST /exact?q=1 HTTP/1.1\r\nHost: raw.default.svc\r\nX-Legacy-Header: One\r\nConnection: keep-alive, X-Hop\r\n"
               b"X-Hop: drop me\r\nKeep-Alive: timeout=5\r\nContent-Type: text/plain\r\nx-already-lower: 2\r\n"
               b"X-MiXeD-cAsE: 3\r\nUser-Agent: raw-client/1.0\r\nContent-Length: 5\r\n\r\nhello")
RAW_SEEN = (b"POST /exact?q=1 HTTP/1.1\r\nHost: raw.default.svc\r\nX-Legacy-Header: One\r\nContent-Type: text/plain\r\n"
            b"x-already-lower: 2\r\nX-MiXeD-cAsE: 3\r\nUser-Agent: raw-client/1.0\r\nContent-Length: 5\r\n\r\n")

RAW_CLIENT = r"""
import json, socket, sys
req = bytes.fromhex(sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(req)
data = b""
while b"\r\n\r\n" not in data:
    d = s.recv(65536)
    if not d:
        break
    data += d
head, _, body = data.partition(b"\r\n\r\n")
n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
while len(body) < n:
    body += s.recv(65536)
print(json.dumps({"head": head.decode(), "body": body.decode()}))
"""

# 20 concurrent HTTP/1.1 client connections, each holding its request open on the server for 300 ms.
PARALLEL_CLIENT = r"""
import json, socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
def one(i):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"GET /p%d HTTP/1.1\r\nHost: par\r\nX-Client: %d\r\n\r\n" % (i, i))
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
        head, _, body = data.partition(b"\r\n\r\n")
        if b"\r\n\r\n" in data and b"X-Client: %d" % i in body:
            ok.append(i)
            break
    s.close()
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in ts]
[t.join(15) for t in ts]
print(json.dumps({"ok": len(ok)}))
"""


def docs():
    return f"""
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec:
  protocol: http1
  addresses: ["10.96.0.10:80"]
  endpoints: ["{B4}:8080"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: grpc}}
spec:
  protocol: grpc
  addresses: ["10.96.0.11:9090"]
  endpoints: ["{B4}:9090"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: h2web}}
spec:
  protocol: http2
  addresses: ["10.96.0.15:80"]
  endpoints: ["{B4}:8443"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: ws}}
spec:
  protocol: http1
  addresses: ["10.96.0.16:80"]
  endpoints: ["{B4}:8765"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: raw}}
spec:
  protocol: http1
  addresses: ["10.96.0.17:80"]
  endpoints: ["{B4}:8090"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: par}}
spec:
  protocol: http1
  addresses: ["10.96.0.18:80"]
  endpoints: ["{B4}:8091"]
  serviceAccount: pod-b
"""


class HopMesh(Mesh):
    """Both agents under the control plane (which runs in A on its pod address)."""

    def start(self):
        b = self.b
        p, _ = self.spawn(b, "h1", [PY, os.path.join(TOOLS, "h1_origin.py"), "--host", "0.0.0.0", "--port", "8080"])
        self.wait_for("h1", p, r"h1 origin on")
        p, _ = self.spawn(b, "h2", [PY, os.path.join(TOOLS, "h2_origin.py"), "--host", "0.0.0.0", "--port", "8443"])
        self.wait_for("h2", p, r"h2 origin on")
        self.spawn(b, "grpc", [PY, os.path.join(TOOLS, "grpc_echo_server.py"), "--host", "0.0.0.0", "--port", "9090"])
        p, _ = self.spawn(b, "raw", [PY, "-c", RAW_SERVER, "8090", "0"])
        self.wait_for("raw", p, r"raw ready")
        p, _ = self.spawn(b, "par", [PY, "-c", RAW_SERVER, "8091", "0.3"])
        self.wait_for("par", p, r"raw ready")
        if not websockets_missing:
            p, _ = self.spawn(b, "ws", [PY, "-c", WS_SERVER, "8765"])
            self.wait_for("ws", p, r"ws ready")
        self.wait_port(b, B4, 9090)
        # the control plane's port is not captured inbound in A (B's agent dials it)
        run([self.init_bin, "--ipv4-only", "--exclude-inbound-ports", "15010"], ns=self.a, check=True)
        run([self.init_bin, "--ipv4-only"], ns=b, check=True)
        ctl_bin = os.path.join(os.path.dirname(os.path.dirname(self.agent_bin)), "control")
        self.ctl = os.path.join(ctl_bin, "remoractl")
        p, _ = self.spawn(self.a, "control", [os.path.join(ctl_bin, "remora-control"), "--listen", CONTROL,
                                              "--state-dir", os.path.join(self.tmp, "control")])
        self.wait_port(self.a, A4, 15010)
        for ns, pod, workers in ((self.a, "pod-a", "1"), (b, "pod-b", "2")):
            state = os.path.join(self.tmp, "state-" + pod)
            os.makedirs(state)
            os.chown(state, PROXY_UID, PROXY_UID)
            # A has one worker: its HTTP/2 pool to B is then one connection per endpoint
            creds = self.agent_creds(self.a, CONTROL, pod)
            p, _ = self.spawn(ns, "agent-" + pod, [self.agent_bin, "--control", CONTROL, "--node-id", pod, "--state-dir", state,
                                                  "--transparent", "--workers", workers, "--log-level", "debug"] + creds,
                              uid=PROXY_UID)
            self.wait_for("agent-" + pod, p, r"ready:")
        path = os.path.join(self.tmp, "mesh.yaml")
        with open(path, "w") as f:
            f.write(docs())
        env = self.ctl_env(CONTROL)
        r = subprocess.run(["ip", "netns", "exec", self.a, self.ctl, "apply", "-f", path, "--wait", "--timeout", "15"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=env)
        assert r.returncode == 0, (r.stdout, r.stderr, self.log("agent-pod-a"), self.log("agent-pod-b"))
        return self


@pytest.fixture(scope="module")
def mesh():
    import test_transparent as tt
    m = HopMesh(tag="h")
    m.agent_bin, m.init_bin = tt.AGENT, tt.INIT
    problems = []
    try:
        m.up()
        m.start()
        yield m
    finally:
        for name in ("agent-pod-a", "agent-pod-b", "control"):
            try:
                print(f"--- {name}\n" + m.log(name)[-4000:])
            except OSError:
                pass
        problems = m.down()
    assert not problems, "\n".join(problems)


def inbound_h2(mesh):
    return mesh.metric(mesh.b, "remora_downstream_connections_by_protocol_total", listener="inbound", protocol="h2")


def test_http1_exact_bytes_over_the_h2_hop(mesh):
    """The HTTP/1.1 application in B sees the request as sent, less hop-by-hop fields, names spelt as sent;
    the client sees the response's names as the application spelt them; the hop between agents is HTTP/2."""
    h1_before = mesh.metric(mesh.b, "remora_downstream_connections_by_protocol_total", listener="inbound", protocol="http1")
    r = run([PY, "-c", RAW_CLIENT, "10.96.0.17", "80", RAW_REQUEST.hex()], ns=mesh.a, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["body"].encode() == RAW_SEEN, out["body"]
    head = out["head"]
    assert head.startswith("HTTP/1.1 200"), head
    names = [ln.partition(":")[0] for ln in head.split("\r\n")[1:]]
    assert "X-Resp-Legacy" in names and "Content-Type" in names and "Content-Length" in names, head
    assert "x-remora" not in head.lower(), head
    # A sent it over HTTP/2 as a meshed Service (peer: agent); B took HTTP/2 on its inbound listener
    assert inbound_h2(mesh) >= 1
    assert mesh.metric(mesh.b, "remora_downstream_connections_by_protocol_total", listener="inbound",
                       protocol="http1") == h1_before
    assert mesh.metric(mesh.b, "remora_upstream_requests_total", cluster="inbound/raw.default/8090") >= 1
    dump = run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/config_dump"], ns=mesh.a).stdout
    dump = dump.replace(" ", "")
    assert '"name":"raw.default","protocol":"http1","meshed":true,"agent_hop":true' in dump, dump[:3000]


def test_h2c_over_the_hop(mesh):
    # h2c client to an HTTP/1.1 application, and to an HTTP/2 application
    code, version, body = curl(mesh, "--http2-prior-knowledge", "-d", "payload", "http://web.default.svc/h2c")
    assert (code, version) == (200, "2"), body
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["body"] == "payload" and seen["target"] == "/h2c"
    code, version, body = curl(mesh, "--http2-prior-knowledge", "http://10.96.0.15/h2app")
    assert (code, version) == (200, "2"), body
    # an HTTP/1.1 client to the HTTP/2 application
    code, version, body = curl(mesh, "http://10.96.0.15/h1-to-h2")
    assert (code, version) == (200, "1.1"), body
    assert mesh.metric(mesh.b, "remora_upstream_requests_total", cluster="inbound/h2web.default/8443") >= 2


def test_grpc_four_shapes(mesh):
    client = os.path.join(TOOLS, "grpc_client.py")
    expect = {"unary": "unary -> hello mesh", "server-stream": "server-stream -> ", "client-stream": "client-stream -> ",
              "bidi": "bidi -> "}
    for shape, want in expect.items():
        r = run([PY, client, "10.96.0.11:9090", shape, "hello", "mesh"], ns=mesh.a, check=True)
        assert want in r.stdout and "status" not in r.stdout, (shape, r.stdout, r.stderr)
    r = run([PY, client, "10.96.0.11:9090", "bidi", "abc"], ns=mesh.a, check=True)
    assert "bidi -> abc" in r.stdout and "bidi -> ABC" in r.stdout, r.stdout
    assert mesh.metric(mesh.b, "remora_upstream_requests_total", cluster="inbound/grpc.default/9090") >= 5


@pytest.mark.skipif(websockets_missing, reason="needs python3-websockets")
def test_websocket_through_both_agents(mesh):
    """An Upgrade keeps an HTTP/1.1 hop between the agents (docs/architecture.md)."""
    before = mesh.metric(mesh.b, "remora_upgrades_total", result="switched")
    r = run([PY, "-c", WS_CLIENT, "ws://10.96.0.16/echo"], ns=mesh.a, check=True)
    assert "ws echo ok" in r.stdout
    assert mesh.metric(mesh.a, "remora_upgrades_total", result="switched") >= 1
    assert mesh.metric(mesh.b, "remora_upgrades_total", result="switched") == before + 1


def test_http1_clients_share_one_h2_connection(mesh):
    """20 concurrent HTTP/1.1 client connections from A: one HTTP/2 connection on B's inbound listener."""
    conns = mesh.metric(mesh.b, "remora_downstream_connections_total", listener="inbound")
    up = mesh.metric(mesh.a, "remora_upstream_connections_total", cluster="par.default")
    r = run([PY, "-c", PARALLEL_CLIENT, "10.96.0.18", "80", "20"], ns=mesh.a, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1])["ok"] == 20, r.stdout
    assert mesh.metric(mesh.a, "remora_upstream_connections_total", cluster="par.default") == up + 1
    assert mesh.metric(mesh.b, "remora_downstream_connections_total", listener="inbound") == conns + 1
    # B opened HTTP/1.1 connections to its application for the concurrent requests
    assert mesh.metric(mesh.b, "remora_upstream_connections_total", cluster="inbound/par.default/8091") >= 2


def test_agent_connections_not_looped(mesh):
    before = mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound")
    before_b = mesh.metric(mesh.b, "remora_downstream_connections_total", listener="outbound")
    code, _, _ = curl(mesh, "http://web.default.svc/once")
    assert code == 200
    assert mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound") == before + 1
    # B's agent dialled its application as the proxy UID: not captured by B's outbound rules
    assert mesh.metric(mesh.b, "remora_downstream_connections_total", listener="outbound") == before_b
    for name in ("agent-pod-a", "agent-pod-b"):
        assert "without an original destination" not in mesh.log(name)


def test_remove_restores_direct_traffic(mesh):
    """Last: `remora-init --remove` in both pods; A's app then reaches B's app directly."""
    out_a = mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound")
    in_b = mesh.metric(mesh.b, "remora_downstream_connections_total", listener="inbound")
    for ns in (mesh.a, mesh.b):
        run([mesh.init_bin, "--ipv4-only", "--remove"], ns=ns, check=True)
    code, version, body = curl(mesh, f"http://{B4}:8080/direct")
    assert (code, version) == (200, "1.1") and json.loads(body)["target"] == "/direct"
    assert mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound") == out_a
    assert mesh.metric(mesh.b, "remora_downstream_connections_total", listener="inbound") == in_b
    # the virtual addresses mean nothing without interception
    r = run(["curl", "-sS", "--max-time", "2", "--noproxy", "*", "http://10.96.0.10/"], ns=mesh.a)
    assert r.returncode != 0
