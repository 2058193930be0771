"""On-demand discovery, the agent's side (docs/control-plane.md, "The agent's side"): a scoped agent that meets a
name outside its scope holds the request, asks the control plane with a Discover message, and routes the request
with the snapshot that answers (found), or answers 404 / UNIMPLEMENTED once the control plane said it does not
know the name (unknown, remembered 5 s), or after --discovery-timeout-ms (timeout); at most 256 held per worker
(overflow). Real remora-control, real agents (one worker each), real upstreams, all on loopback."""

import hashlib
import os
import re
import signal
import socket
import struct
import time

import grpc
import pytest

import grpc_client
from h2client import H2Client
import support
from control_support import agent_status, control_factory, cp_metric, origin, pb, wait_until  # noqa: F401
from procutil import Proc, free_port
from support import AGENT, http_get

pytestmark = pytest.mark.agent_only("on-demand discovery is remora-agent's")

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
TIMEOUT_MS = 3000   # --discovery-timeout-ms of the scoped agent: answers must come well before it


def services_doc(names, port, protocol="http1"):
    return "---\n".join(
        f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  protocol: {protocol}\n"
        f"  meshed: false\n  serviceAccount: server\n  endpoints: [\"127.0.0.1:{port}\"]\n" for n in names)


def egress_doc(name, hosts, sas):
    return (f"apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n"
            f"  targetRefs: [{', '.join(f'{{kind: ServiceAccount, name: {s}}}' for s in sas)}]\n"
            f"  hosts: [{', '.join(repr(h) for h in hosts)}]\n")


def apply(cp, text, timeout=60):
    r = cp.ctl("apply", "-f", "-", "--wait", "--timeout", str(timeout - 10), stdin=text, timeout=timeout)
    assert r.rc == 0, r
    return int(re.search(r"version (\d+)", r.out).group(1))


class Agent:
    def __init__(self, workdir, cp, node_id, sa, extra=()):
        self.cp, self.node_id = cp, node_id
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = state_dir = os.path.join(workdir, f"{node_id}.state")
        os.makedirs(state_dir, exist_ok=True)
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", cp.addr, "--node-id", node_id,
                "--state-dir", state_dir, "--admin", f"127.0.0.1:{self.admin}", "--workers", "1",
                "--health", f"127.0.0.1:{self.health}", "--log-level", "debug"] + list(extra) + \
            cp.agent_args(node_id, service_account=sa)
        self.proc = Proc(argv, os.path.join(workdir, f"{node_id}.log"))

    def wait_ready(self, timeout=30):
        def ready():
            assert self.proc.alive(), self.proc.log_text()[-3000:]
            try:
                return http_get("127.0.0.1", self.health, "/ready", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, timeout=timeout, what=f"{self.node_id} ready")

    def metrics(self):
        return support.parse_prometheus(http_get("127.0.0.1", self.health, "/metrics", timeout=5)[2].decode())

    def ondemand(self, result):
        return support.metric(self.metrics(), "remora_ondemand_requests_total", result=result) or 0

    def held(self):
        return support.metric(self.metrics(), "remora_ondemand_held") or 0

    def get(self, host, timeout=15, **kw):
        """(status, seconds) of one request on a fresh connection."""
        t0 = time.monotonic()
        status = http_get("127.0.0.1", self.port, "/x", headers={"Host": host}, timeout=timeout, **kw)[0]
        return status, time.monotonic() - t0


@pytest.fixture
def agent_factory(tmp_path):
    started = []

    def make(cp, node_id, sa, extra=()):
        a = Agent(str(tmp_path), cp, node_id, sa, extra)
        started.append(a)
        a.wait_ready()
        return a
    yield make
    for a in started:
        if a.proc.alive():
            assert a.proc.stop(signal.SIGTERM, timeout=10) == 0, a.proc.log_text()[-3000:]


@pytest.fixture
def mesh(control_factory, origin, grpc_server):
    """A control plane with Services svc-0..9 (HTTP/1.1) and echo (gRPC), and a policy that scopes the workload
    `client` to svc-0."""
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    cp.metrics_port = mport
    apply(cp, services_doc([f"svc-{i}" for i in range(10)], origin) + "---\n" +
          services_doc(["echo"], grpc_server.port, protocol="grpc") + "---\n" + egress_doc("client", ["./svc-0"], ["client"]))
    return cp


def test_found_unknown_and_grpc(mesh, agent_factory):
    """Outside the scope: 200 on the first request (held, then proxied), a POST body included; an unknown
    name: 404 once the control plane answered (well before the timeout), then at once for 5 s without asking
    again; gRPC outside the scope: OK. An unscoped agent and a scoped one with --discovery-timeout-ms 0 behave
    as before (404 at once, nothing counted)."""
    cp = mesh
    a = agent_factory(cp, "client-0", "client", ["--discovery-timeout-ms", str(TIMEOUT_MS)])
    assert a.get("svc-0")[0] == 200
    assert a.ondemand("found") == 0 and a.held() == 0

    # found: held, asked, routed by the new set (the whole scope again, with svc-1 in it)
    status, took = a.get("svc-1")
    assert status == 200, a.proc.log_text()[-3000:]
    assert took < TIMEOUT_MS / 1000 * 0.8, took
    assert a.ondemand("found") == 1 and a.held() == 0
    assert a.get("svc-1.default.svc.cluster.local:80")[0] == 200   # in the scope now: not held, not counted
    assert a.ondemand("found") == 1
    # a request with a body waits with it, and the body arrives whole
    body = bytes(range(256)) * 200
    st, _, resp = http_get("127.0.0.1", a.port, "/post", method="POST", body=body,
                           headers={"Host": "svc-2.default", "Content-Length": str(len(body))}, timeout=15)
    assert st == 200 and b'"body_len": %d' % len(body) in resp, resp[:300]
    assert a.ondemand("found") == 2
    # a body bigger than the stream window waits under flow control (the client is not read), then flows whole
    big = os.urandom(3 << 20)
    st, _, resp = http_get("127.0.0.1", a.port, "/post", method="POST", body=big,
                           headers={"Host": "svc-7", "Content-Length": str(len(big))}, timeout=30)
    assert st == 200 and b'"body_sha256": "%s"' % hashlib.sha256(big).hexdigest().encode() in resp, resp[-300:]
    assert a.ondemand("found") == 3

    # unknown: answered after the control plane's answer, then at once (not asked again) for 5 s
    asked = cp_metric(cp.metrics_port, "remora_control_discovery_names_total", result="unknown")
    status, took = a.get("nosuch")
    assert status == 404 and took < TIMEOUT_MS / 1000 * 0.8, (status, took)
    assert a.ondemand("unknown") == 1
    for _ in range(3):
        status, took = a.get("nosuch.default")   # another name: asked once
        assert status == 404
    assert a.ondemand("unknown") == 4
    t0 = time.monotonic()
    for _ in range(5):
        status, took = a.get("nosuch")
        assert status == 404 and took < 0.5, took
    assert a.ondemand("unknown") == 9
    if time.monotonic() - t0 < 4:
        assert cp_metric(cp.metrics_port, "remora_control_discovery_names_total", result="unknown") == asked + 2
    assert a.held() == 0

    # gRPC outside the scope: held, then proxied
    ch = grpc_client.channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "echo")])
    try:
        assert grpc_client.Echo(ch).unary(b"ping", timeout=10) == b"ping"
    finally:
        ch.close()
    assert a.ondemand("found") == 4
    # an unknown gRPC authority: UNIMPLEMENTED after the answer
    ch = grpc_client.channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "nogrpc")])
    try:
        with pytest.raises(grpc.RpcError) as e:
            grpc_client.Echo(ch).unary(b"ping", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value
    finally:
        ch.close()
    assert a.ondemand("unknown") == 10 and a.ondemand("timeout") == 0 and a.ondemand("overflow") == 0
    # a change inside the scope comes as a delta; the merged set the agent keeps still says it is a scope's
    deltas = support.metric(a.metrics(), "remora_control_updates_total", kind="delta") or 0
    v = apply(cp, services_doc(["svc-0"], 1))
    wait_until(lambda: (agent_status(cp, a.node_id) or {}).get("appliedVersion") == v, timeout=20, what="the delta")
    assert support.metric(a.metrics(), "remora_control_updates_total", kind="delta") == deltas + 1
    with open(os.path.join(a.state_dir, "snapshot.pb"), "rb") as f:
        kept = pb().discovery.Snapshot.FromString(f.read())
    assert kept.scoped and kept.version == v and sorted(x.metadata.name for x in kept.services) == \
        ["echo", "svc-0", "svc-1", "svc-2", "svc-7"]

    # no on-demand discovery: an agent in no scope, and a scoped one with the timeout 0
    everything = agent_factory(cp, "web-0", "web")
    off = agent_factory(cp, "client-off", "client", ["--discovery-timeout-ms", "0"])
    assert everything.get("svc-5")[0] == 200
    for agent in (everything, off):
        status, took = agent.get("nosuch-either")
        assert status == 404 and took < 0.5, took
        assert agent.ondemand("unknown") == 0 and agent.ondemand("found") == 0
    assert off.get("svc-6")[0] == 404 and off.ondemand("found") == 0


def sigstop(pid):
    """Stops `pid` and waits until every thread of it is stopped (kill returns before they are)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "T":
                    return False
        return True
    wait_until(stopped, timeout=5, what="the control plane stopped")


def raw_request(port, host):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return s


def status_of(s, timeout):
    s.settimeout(timeout)
    try:
        data = s.recv(4096)
    except socket.timeout:
        return None
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    return int(m.group(1)) if m else -1


def test_timeout_overflow_and_clients_that_leave(mesh, agent_factory):
    """The control plane stopped (SIGSTOP) while the stream stays open: held requests are answered 404 after
    about the timeout (counted timeout); HTTP/2 clients that leave while held are released at once (the gauge
    falls); the 257th request held on a worker is answered at once (overflow); once the control plane runs
    again, a name is found as before."""
    cp = mesh
    timeout_ms = 2000
    a = agent_factory(cp, "client-1", "client", ["--discovery-timeout-ms", str(timeout_ms)])
    assert a.get("svc-0")[0] == 200
    socks = []
    try:
        sigstop(cp.proc.popen.pid)
        # one held request, answered after the timeout
        status, took = a.get("svc-3")
        assert status == 404 and timeout_ms / 1000 * 0.9 <= took < timeout_ms / 1000 + 1.5, took
        assert a.ondemand("timeout") == 1

        # clients that leave while held (HTTP/2: a reset stream, a closed connection) are released at once;
        # an HTTP/1.1 client's FIN (or reset, which libuv reports alike) is a half-close: answered at the timeout
        h2 = H2Client("127.0.0.1", a.port)
        try:
            sids = [h2.request(path="/x", authority="svc-4") for _ in range(10)]
            h2.flush()
            wait_until(lambda: a.held() == 10, timeout=5, what="10 requests held")
            for sid in sids[:4]:
                h2.reset(sid)
            h2.flush()
            wait_until(lambda: a.held() == 6, timeout=5, what="6 requests held")
        finally:
            h2.close()
        wait_until(lambda: a.held() == 0, timeout=5, what="no request held")

        # 256 held on the worker, the next ones answered at once
        t0 = time.monotonic()
        socks = [raw_request(a.port, "svc-4") for _ in range(256)]
        wait_until(lambda: a.held() == 256, timeout=5, what="256 requests held")
        extra = [raw_request(a.port, "svc-4") for _ in range(4)]
        assert [status_of(s, 2) for s in extra] == [404] * 4
        for s in extra:
            s.close()
        assert a.ondemand("overflow") == 4
        statuses = [status_of(s, timeout_ms / 1000 + 5) for s in socks]
        took = time.monotonic() - t0
        assert statuses == [404] * len(socks), statuses
        assert took < timeout_ms / 1000 + (10 if SANITIZED else 4), took
        assert a.ondemand("timeout") == 1 + len(socks) and a.held() == 0
        assert a.ondemand("found") == 0
    finally:
        os.kill(cp.proc.popen.pid, signal.SIGCONT)
        for s in socks:
            s.close()
    # the control plane runs again (and answers what it was asked meanwhile): found as usual
    assert a.get("svc-5")[0] == 200
    wait_until(lambda: a.get("svc-4")[0] == 200, timeout=10, what="svc-4 through the agent")
    assert a.proc.alive()
