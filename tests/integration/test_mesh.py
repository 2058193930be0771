"""The mesh end to end: remora-control, real remora-agent processes in control-plane mode
(--control --node-id --listen --state-dir), remoractl, and real origins, all on loopback.

Covers issue 3's section 6 for the real agent: apply -> traffic goes where the route says (a
weighted split measured over many requests), update -> converges, invalid apply -> rejected with
traffic unaffected, an agent-side NACK visible in `status` and `apply --wait`, control plane killed
-> traffic unaffected, agent restarted while the control plane is down -> serves the persisted
snapshot, control plane restarted -> state intact and agents resync, unknown authority -> 404 /
gRPC UNIMPLEMENTED."""

import json
import os
import signal
import threading
import time

import grpc
import pytest

from control_support import (ControlPlane, control, control_factory, service_doc, split_route_doc, status_json,  # noqa: F401
                             wait_until, write)
from procutil import PYTHON, TOOLS_DIR, Proc, free_port, wait_ready_file
from support import AGENT, http_get

pytestmark = pytest.mark.agent_only


class MeshAgent:
    def __init__(self, workdir, cp, node_id, state_dir=None, workers=1, extra_args=()):
        self.workdir, self.cp, self.node_id = workdir, cp, node_id
        self.extra_args = list(extra_args)
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = state_dir or os.path.join(workdir, f"{node_id}.state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.workers = workers
        self.proc = None
        self.starts = 0
        self.cred_args = None

    def start(self):
        self.starts += 1
        if self.cred_args is None:  # once: a restart while the control plane is down keeps its token
            self.cred_args = self.cp.agent_args(self.node_id)
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", self.cp.addr, "--node-id", self.node_id,
                "--state-dir", self.state_dir, "--workers", str(self.workers), "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}"] + self.cred_args + self.extra_args
        self.proc = Proc(argv, os.path.join(self.workdir, f"{self.node_id}.{self.starts}.log"))
        wait_until(lambda: self._ready(), timeout=10, what=f"{self.node_id} ready")
        return self

    def _ready(self):
        if not self.proc.alive():
            raise AssertionError(f"agent exited: {self.proc.log_text()[-3000:]}")
        try:
            return http_get("127.0.0.1", self.health, "/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def get(self, host, path="/", timeout=5):
        return http_get("127.0.0.1", self.port, path, timeout=timeout, headers={"Host": host})

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            return self.proc.stop(sig, timeout=10)


@pytest.fixture
def mesh(tmp_path):
    started = []

    def agent(cp, node_id, **kw):
        a = MeshAgent(str(tmp_path), cp, node_id, **kw).start()
        started.append(a)
        return a

    def origin(kind="h1"):
        script = {"h1": "h1_origin.py", "grpc": "grpc_echo_server.py"}[kind]
        ready = os.path.join(str(tmp_path), f"origin{len(origins)}.port")
        p = Proc([PYTHON, os.path.join(TOOLS_DIR, script), "--port", "0", "--ready-file", ready],
                 os.path.join(str(tmp_path), f"origin{len(origins)}.log"))
        port = wait_ready_file(ready, p, 15)
        origins.append(p)
        return port

    origins = []
    agent.origin = origin
    yield agent
    for a in started:
        a.stop(signal.SIGKILL)
    for p in origins:
        p.stop(signal.SIGKILL, timeout=2)


def _requests(port):
    return json.loads(http_get("127.0.0.1", port, "/__stats")[2])["requests"]


def _apply(cp, workdir, name, text, wait=True):
    args = ["apply", "-f", write(workdir, name, text)] + (["--wait", "--timeout", "10"] if wait else [])
    return cp.ctl(*args)


def test_weighted_split_update_and_invalid_apply(control, mesh, tmp_path):
    v1, v2 = mesh.origin(), mesh.origin()
    a = mesh(control, "split-agent", workers=2)
    docs = (service_doc("web", [f"127.0.0.1:{v1}"], protocol="http1") + "---\n" +
            service_doc("web-v2", [f"127.0.0.1:{v2}"], protocol="http1") + "---\n" +
            split_route_doc("web-split", "web", [("web", 80), ("web-v2", 20)]))
    r = _apply(control, str(tmp_path), "split.yaml", docs)
    assert r.rc == 0, r

    # 1000 requests: 80/20 within +-5 points (the binomial standard deviation is 1.3 points)
    n = 1000
    for _ in range(n):
        assert a.get("web")[0] == 200
    share = _requests(v2) / n
    assert 0.15 <= share <= 0.25, f"web-v2 got {share:.1%} of the requests, expected 20% +- 5"

    # update: everything to v2, converged once --wait returns
    before_v1 = _requests(v1)
    r = _apply(control, str(tmp_path), "all-v2.yaml", split_route_doc("web-split", "web", [("web", 0), ("web-v2", 1)]))
    assert r.rc == 0, r
    for _ in range(100):
        assert a.get("web.default.svc.cluster.local:80")[0] == 200
    assert _requests(v1) == before_v1

    # invalid apply: rejected with file:line, nothing changes, traffic unaffected
    version = status_json(control)["version"]
    bad = write(str(tmp_path), "bad.yaml", service_doc("web", ["127.0.0.1:99999"], protocol="http1"))
    r = control.ctl("apply", "-f", bad)
    assert r.rc == 1 and "bad.yaml:" in r.err, r
    assert status_json(control)["version"] == version
    for _ in range(20):
        assert a.get("web")[0] == 200
    assert _requests(v1) == before_v1


def test_unknown_authority_is_404_and_grpc_unimplemented(control, mesh, tmp_path):
    port = mesh.origin("grpc")
    a = mesh(control, "authority-agent")
    assert _apply(control, str(tmp_path), "echo.yaml", service_doc("echo", [f"127.0.0.1:{port}"])).rc == 0
    status, _, body = a.get("nosuch")
    assert status == 404 and b"nosuch" in body
    with grpc.insecure_channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "echo")]) as ch:
        assert ch.unary_unary("/echo.Echo/Unary")(b"hi", timeout=5) == b"hi"
    with grpc.insecure_channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "other")]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/echo.Echo/Unary")(b"hi", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "other" in e.value.details()


def test_agent_nack_visible_in_status_and_apply_wait(control, mesh, tmp_path):
    port = mesh.origin()
    a = mesh(control, "nack-agent")
    assert _apply(control, str(tmp_path), "web.yaml", service_doc("web", [f"127.0.0.1:{port}"], protocol="http1")).rc == 0
    good = status_json(control)["version"]
    # the control plane accepts a mirror to a Service port; this agent refuses it (it mirrors to a Service's
    # cluster, which has no per-port variant)
    mirror_route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: mx}\nspec:\n"
                    "  parentRefs: [{name: web}]\n  rules:\n"
                    "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}}}]\n"
                    "    backendRefs: [{name: web}]\n")
    r = _apply(control, str(tmp_path), "mx.yaml", mirror_route)
    assert r.rc == 1, r
    assert "nack-agent" in r.err and "not supported by this agent" in r.err, r
    st = [x for x in status_json(control)["agents"] if x["node"] == "nack-agent"][0]
    assert st["appliedVersion"] == good and "not supported by this agent" in st["nackReason"], st
    # the previous snapshot stays in service
    assert a.get("web")[0] == 200


def test_control_plane_down_agent_restart_and_resync(control_factory, mesh, tmp_path):
    cp = control_factory()
    port = mesh.origin()
    a = mesh(cp, "durable-agent")
    assert _apply(cp, str(tmp_path), "web.yaml", service_doc("web", [f"127.0.0.1:{port}"], protocol="http1")).rc == 0
    version = status_json(cp)["version"]

    cp.stop()
    cp.stopped_by_test = True
    for _ in range(20):
        assert a.get("web")[0] == 200, "traffic must not depend on the control plane"

    # restart the agent while the control plane is down: it serves the persisted snapshot
    a.stop()
    a.start()
    for _ in range(20):
        assert a.get("web")[0] == 200

    # the control plane comes back with its state; the agent reconnects and reports the version
    cp.start()
    cp.stopped_by_test = False
    assert status_json(cp)["version"] == version
    wait_until(lambda: any(x["node"] == "durable-agent" and x["connected"] and x["appliedVersion"] == version
                           for x in status_json(cp)["agents"]), timeout=15, what="agent resynced")
    r = cp.ctl("get", "service", "web", "-o", "json")
    assert r.rc == 0 and str(port) in r.out, r


def test_route_timeout_from_the_control_plane(control, mesh, tmp_path):
    web, echo = mesh.origin(), mesh.origin("grpc")
    a = mesh(control, "timeout-agent")
    docs = (service_doc("web", [f"127.0.0.1:{web}"], protocol="http1") + "---\n" +
            service_doc("echo", [f"127.0.0.1:{echo}"]) + "---\n" +
            "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: web-timeout}\nspec:\n"
            "  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: web}]\n    timeouts: {request: 300ms}\n---\n"
            "apiVersion: remora.dev/v1\nkind: GRPCRoute\nmetadata: {name: echo-timeout}\nspec:\n"
            "  parentRefs: [{name: echo}]\n  rules:\n  - matches: [{method: {service: echo.Echo}}]\n"
            "    backendRefs: [{name: echo}]\n    timeouts: {request: 300ms}\n")
    r = _apply(control, str(tmp_path), "timeouts.yaml", docs)
    assert r.rc == 0, r
    assert a.get("web")[0] == 200
    t0 = time.monotonic()
    status, _, body = http_get("127.0.0.1", a.port, "/slow", headers={"Host": "web", "x-delay-ms": "3000"})
    elapsed = time.monotonic() - t0
    assert status == 504 and b"timeout" in body, (status, body)
    assert 0.25 <= elapsed < 2.0, elapsed
    with grpc.insecure_channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "echo")]) as ch:
        unary = ch.unary_unary("/echo.Echo/Unary")
        assert unary(b"fast", timeout=5) == b"fast"
        with pytest.raises(grpc.RpcError) as e:
            unary(b"slow", metadata=[("x-sleep-ms", "3000")], timeout=10)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the agent sends the upstream the remaining deadline in grpc-timeout, so either side may
        # answer DEADLINE_EXCEEDED first
        assert "timeout" in e.value.details() or e.value.details() == "Deadline Exceeded"


def test_state_dir_is_created_or_refused(control, mesh, tmp_path):
    """A missing --state-dir is created (0700) and the snapshot persisted there; a state directory
    that cannot be created stops the start with a clear error instead of never persisting."""
    port = mesh.origin()
    state = os.path.join(str(tmp_path), "deep", "missing", "state")
    a = MeshAgent(str(tmp_path), control, "fresh-dir-agent", state_dir=state)
    os.rmdir(state)  # MeshAgent creates it; this test wants it missing
    os.rmdir(os.path.dirname(state))
    a.start()
    try:
        assert os.path.isdir(state) and (os.stat(state).st_mode & 0o777) == 0o700
        assert _apply(control, str(tmp_path), "web.yaml", service_doc("web", [f"127.0.0.1:{port}"], protocol="http1")).rc == 0
        wait_until(lambda: os.listdir(state), timeout=10, what="snapshot persisted")
    finally:
        a.stop()

    blocker = os.path.join(str(tmp_path), "a-file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    argv = [AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", control.addr, "--node-id", "bad-dir-agent",
            "--state-dir", os.path.join(blocker, "state"), "--health", f"127.0.0.1:{free_port()}",
            "--admin", f"127.0.0.1:{free_port()}"] + control.agent_args("bad-dir-agent")
    p = Proc(argv, os.path.join(str(tmp_path), "bad-dir-agent.log"))
    rc = p.wait(timeout=10)
    assert rc != 0
    assert "--state-dir" in p.log_text() and "cannot create" in p.log_text(), p.log_text()


def test_requests_wait_for_the_first_snapshot(mesh, tmp_path):
    """Control-plane mode without a persisted snapshot and without a control plane: /ready says 503,
    and a request that arrives meanwhile is held (at most 10 s) instead of being answered from a
    configuration that is not one yet; when the first snapshot comes it is routed by it."""
    port = mesh.origin()
    state = os.path.join(str(tmp_path), "cp-state")
    seed = ControlPlane(str(tmp_path), state_dir=state, name="seed-control")  # another port: the agent never sees it
    seed.start()
    route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: web-headers}\nspec:\n"
             "  parentRefs: [{name: web}]\n  rules:\n"
             "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-first, value: snapshot}]}}]\n"
             "    backendRefs: [{name: web}]\n")
    docs = service_doc("web", [f"127.0.0.1:{port}"], protocol="http1") + "---\n" + route
    assert _apply(seed, str(tmp_path), "web.yaml", docs, wait=False).rc == 0
    cred_args = seed.agent_args("early-agent")  # the token is in the state the late control plane opens
    seed.stop()
    cp = ControlPlane(str(tmp_path), state_dir=state, name="late-control")  # same state, not started yet
    a = MeshAgent(str(tmp_path), cp, "early-agent")
    argv = [AGENT, "--listen", f"127.0.0.1:{a.port}", "--control", cp.addr, "--node-id", a.node_id,
            "--state-dir", a.state_dir, "--admin", f"127.0.0.1:{a.admin}", "--health", f"127.0.0.1:{a.health}"] + cred_args
    a.proc = Proc(argv, os.path.join(str(tmp_path), "early-agent.log"))
    try:
        def health_up():
            try:
                return http_get("127.0.0.1", a.health, "/ready", timeout=1)[0]
            except OSError:
                return None
        wait_until(lambda: health_up() is not None, timeout=10, what="health port up")
        assert health_up() == 503
        result = {}
        t = threading.Thread(target=lambda: result.update(r=a.get("web", "/early", timeout=15)))
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), f"the request was answered before any snapshot: {result}"
        cp.start()
        t.join(15)
        status, _, body = result["r"]
        assert status == 200 and b"/early" in body, (status, body)
        # routed by the first snapshot, with the filters its route needs
        assert ["x-first", "snapshot"] in [[k.lower(), v] for k, v in json.loads(body)["headers"]], body
        wait_until(lambda: health_up() == 200, timeout=15, what="ready after the first snapshot")
    finally:
        a.stop(signal.SIGKILL)
        cp.stop(signal.SIGKILL)
