"""`remoractl proxy NODE stats|config|clusters|log-level [LEVEL]`: an agent's admin API reached through the
control plane's discovery stream to that agent (Admin.Proxy; docs/control-plane.md). Real remora-control,
real remora-agent processes in control-plane mode, and fake agents (python3-grpcio) where the agent side
must misbehave (never answer, an agent too old to answer)."""

import json
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

from control_support import (CTL_BIN, control, control_factory, pb, service_doc, status_json,  # noqa: F401
                             wait_until, write)
from procutil import Proc, free_port
from support import AGENT, http_get

pytestmark = pytest.mark.agent_only


class Agent:
    """remora-agent in control-plane mode, its admin and health on loopback ports of its own."""

    def __init__(self, workdir, cp, node_id):
        self.workdir, self.cp, self.node_id = workdir, cp, node_id
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = os.path.join(workdir, f"{node_id}.state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = None

    def start(self):
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", self.cp.addr, "--node-id", self.node_id,
                "--state-dir", self.state_dir, "--workers", "1", "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}"] + self.cp.agent_args(self.node_id)
        self.proc = Proc(argv, os.path.join(self.workdir, f"{self.node_id}.log"))
        wait_until(self._ready, timeout=10, what=f"{self.node_id} ready")
        return self

    def _ready(self):
        if not self.proc.alive():
            raise AssertionError(f"agent exited: {self.proc.log_text()[-3000:]}")
        try:
            return http_get("127.0.0.1", self.health, "/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def admin_get(self, path):
        status, _, body = http_get("127.0.0.1", self.admin, path, timeout=5)
        assert status == 200, (path, status, body)
        return body.decode() if isinstance(body, bytes) else body

    def log(self):
        return self.proc.log_text()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            return self.proc.stop(sig, timeout=10)


@pytest.fixture
def mesh_agents(tmp_path):
    """start(cp, node_id) -> a ready Agent. At teardown each is stopped with SIGTERM and must exit 0 (under
    the sanitizers a leak or an error fails the test), unless the test stopped it itself."""
    started = []

    def start(cp, node_id):
        a = Agent(str(tmp_path), cp, node_id).start()
        started.append(a)
        return a

    yield start
    problems = []
    for a in started:
        if a.proc.alive():
            rc = a.stop(signal.SIGTERM)
            if rc != 0:
                problems.append(f"{a.node_id} exited with {rc} on SIGTERM: {a.log()[-3000:]}")
    if problems:
        pytest.fail("; ".join(problems))


class AdminFakeAgent:
    """A discovery stream that offers admin requests (Hello.admin_requests) and answers them with
    `answer(request) -> AdminResponse | None` (None: never answers); snapshots are ACKed."""

    def __init__(self, cp, node_id, answer, admin_requests=True):
        d = pb().discovery
        self.requests, self.snapshots = [], []
        self.answer = answer
        self.ended = threading.Event()
        self._out = []
        self._cond = threading.Condition()
        self.channel = cp.grpc_channel(token=cp.fake_agent_token(), options=[("grpc.use_local_subchannel_pool", 1)])
        method = self.channel.stream_stream("/remora.v1.Discovery/StreamSnapshots",
                                            request_serializer=d.AgentMessage.SerializeToString,
                                            response_deserializer=d.Snapshot.FromString)
        self._put(d.AgentMessage(hello=d.Hello(node_id=node_id, admin_requests=admin_requests)))
        self.call = method(self._gen())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _put(self, m):
        with self._cond:
            self._out.append(m)
            self._cond.notify_all()

    def _gen(self):
        while True:
            with self._cond:
                while not self._out:
                    self._cond.wait()
                m = self._out.pop(0)
            if m is None:
                return
            yield m

    def _read(self):
        d = pb().discovery
        try:
            for msg in self.call:
                with self._cond:
                    if msg.HasField("admin_request"):
                        self.requests.append(msg)
                    else:
                        self.snapshots.append(msg)
                    self._cond.notify_all()
                if msg.HasField("admin_request"):
                    resp = self.answer(msg.admin_request)
                    if resp is not None:
                        self._put(d.AgentMessage(admin_response=resp))
                else:
                    self._put(d.AgentMessage(ack=d.Ack(version=msg.version, nonce=msg.nonce)))
        except grpc.RpcError:
            pass
        finally:
            self.ended.set()

    def close(self):
        self._put(None)
        self.ended.wait(2)
        self.call.cancel()
        self.channel.close()
        self._thread.join(5)


@pytest.fixture
def admin_fakes():
    started = []

    def start(cp, node_id, answer, **kw):
        a = AdminFakeAgent(cp, node_id, answer, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def _with_service(cp, workdir):
    r = cp.ctl("apply", "-f", write(workdir, "web.yaml", service_doc("web", ["127.0.0.1:9"], protocol="http1")))
    assert r.rc == 0, r


def test_stats_config_clusters_and_log_level_through_the_control_plane(control, mesh_agents, tmp_path):
    _with_service(control, str(tmp_path))
    a = mesh_agents(control, "web-1")
    wait_until(lambda: any(x["node"] == "web-1" and x["appliedVersion"] == 1 for x in status_json(control)["agents"]),
               what="web-1 at version 1")

    r = control.ctl("proxy", "web-1", "stats")
    assert r.rc == 0, r
    assert "# TYPE remora_build_info gauge" in r.out and "remora_build_info{version=" in r.out, r.out[:2000]
    assert r.err == ""

    r = control.ctl("proxy", "web-1", "config")
    assert r.rc == 0, r
    relayed = json.loads(r.out)
    assert relayed == json.loads(a.admin_get("/config_dump"))
    assert "web.default" in r.out

    r = control.ctl("proxy", "web-1", "clusters")
    assert r.rc == 0, r
    assert r.out == a.admin_get("/clusters")

    r = control.ctl("proxy", "web-1", "log-level")
    assert (r.rc, r.out) == (0, "info\n"), r
    r = control.ctl("proxy", "web-1", "log-level", "debug")
    assert (r.rc, r.out) == (0, "debug\n"), r
    # the agent's own admin API sees the change, and its log says where it came from
    assert a.admin_get("/logging") == "debug\n"
    wait_until(lambda: "log level set to debug (through the control plane)" in a.log(), what="log line")
    assert control.ctl("proxy", "web-1", "log-level", "warn").out == "warn\n"
    assert a.admin_get("/logging") == "warn\n"
    assert "admin request" in control.log() and "relayed" in control.log()


def test_unknown_disconnected_and_bad_requests(control, mesh_agents, tmp_path):
    _with_service(control, str(tmp_path))
    a = mesh_agents(control, "web-2")
    wait_until(lambda: any(x["node"] == "web-2" and x["connected"] for x in status_json(control)["agents"]),
               what="web-2 connected")

    r = control.ctl("proxy", "nope", "stats")
    assert r.rc == 1 and "no agent with node id 'nope'" in r.err and r.out == "", r

    # usage errors never reach the control plane
    for args, what in ((["web-2", "drain"], "unknown proxy command 'drain'"),
                       (["web-2", "log-level", "loud"], "unknown log level 'loud'"),
                       (["web-2", "stats", "extra"], "stats takes no further arguments"),
                       (["web-2"], "needs a node id and a command"),
                       (["web-2", "stats", "--timeout", "99h"], "--timeout takes a duration")):
        r = control.ctl("proxy", *args)
        assert r.rc == 2 and what in r.err, (args, r)

    a.stop()
    wait_until(lambda: any(x["node"] == "web-2" and not x["connected"] for x in status_json(control)["agents"]),
               what="web-2 disconnected")
    r = control.ctl("proxy", "web-2", "stats")
    assert r.rc == 1 and "agent web-2 is not connected" in r.err, r

    # the control plane gone: remoractl's own exit code for it
    control.stop()
    control.stopped_by_test = True
    r = control.ctl("proxy", "web-2", "stats")
    assert r.rc == 3 and "cannot reach the control plane" in r.err, r


def test_relay_timeout_bound_and_old_agents(control, admin_fakes):
    silent = admin_fakes(control, "silent", lambda req: None)
    old = admin_fakes(control, "old", lambda req: None, admin_requests=False)
    wait_until(lambda: {x["node"] for x in status_json(control)["agents"] if x["connected"]} >= {"silent", "old"},
               what="fakes connected")

    r = control.ctl("proxy", "old", "stats")
    assert r.rc == 1 and "agent old does not answer admin requests" in r.err, r
    assert old.requests == []  # nothing that an old agent would take for an empty snapshot

    t0 = time.monotonic()
    r = control.ctl("proxy", "silent", "config", "--timeout", "300ms")
    assert r.rc == 4 and "agent silent did not answer within 300 ms" in r.err, r
    assert time.monotonic() - t0 < 5
    req = silent.requests[0]
    assert req.admin_request.command == "config" and req.admin_request.id > 0
    assert req.version == 0 and req.nonce == "" and len(req.services) == 0

    # at most 8 requests wait on one agent: the 9th is refused at once
    env = dict(os.environ, **control.ctl_env())
    waiting = [subprocess.Popen([CTL_BIN, "proxy", "silent", "stats", "--timeout", "10s"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    try:
        wait_until(lambda: len(silent.requests) >= 9, timeout=10, what="8 requests at the agent")
        r = control.ctl("proxy", "silent", "stats")
        assert r.rc == 1 and "8 admin requests outstanding" in r.err, r
    finally:
        for p in waiting:
            p.kill()
            p.communicate(timeout=10)
    # once their callers are gone the agent may be asked again
    wait_until(lambda: control.ctl("proxy", "silent", "stats", "--timeout", "100ms").rc == 4, timeout=10,
               what="a slot free again")


def test_answers_are_relayed_as_the_agent_gives_them(control, admin_fakes):
    d = pb().discovery

    def answer(req):
        if req.command == "log-level":
            return d.AdminResponse(id=req.id, status=400, content_type="text/plain", body=b"bad level\n")
        return d.AdminResponse(id=req.id, status=200, content_type="text/plain", body=b"x" * 1000, truncated=True)

    admin_fakes(control, "fake", answer)
    wait_until(lambda: any(x["node"] == "fake" and x["connected"] for x in status_json(control)["agents"]),
               what="fake connected")
    r = control.ctl("proxy", "fake", "stats")
    assert r.rc == 0 and r.out == "x" * 1000, r
    assert "was cut at 1000 bytes" in r.err
    r = control.ctl("proxy", "fake", "log-level", "debug")
    assert r.rc == 1 and "agent fake answered 400: bad level" in r.err, r


def test_only_the_admin_credential_may_proxy(control, admin_fakes):
    admin_fakes(control, "fake2", lambda req: None)
    a = pb().admin
    req = a.ProxyRequest(node_id="fake2", command="stats")

    def call(channel):
        m = channel.unary_unary("/remora.v1.Admin/Proxy", request_serializer=a.ProxyRequest.SerializeToString,
                                response_deserializer=a.ProxyResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            m(req, timeout=5)
        channel.close()
        return e.value

    e = call(control.grpc_channel(token=control.fake_agent_token()))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    e = call(control.grpc_channel())
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    # with the admin credential, the control plane refuses what is not read-only before any agent sees it
    m = control.grpc_channel(token=control.admin_token())
    with pytest.raises(grpc.RpcError) as ex:
        m.unary_unary("/remora.v1.Admin/Proxy", request_serializer=a.ProxyRequest.SerializeToString,
                      response_deserializer=a.ProxyResponse.FromString)(a.ProxyRequest(node_id="fake2", command="drain"),
                                                                        timeout=5)
    assert ex.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown proxy command 'drain'" in ex.value.details()
    m.close()


def test_a_request_fails_at_once_when_the_agents_stream_ends(control, admin_fakes):
    gone = admin_fakes(control, "leaving", lambda req: None)
    wait_until(lambda: any(x["node"] == "leaving" and x["connected"] for x in status_json(control)["agents"]),
               what="leaving connected")
    env = dict(os.environ, **control.ctl_env())
    p = subprocess.Popen([CTL_BIN, "proxy", "leaving", "config", "--timeout", "30s"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(gone.requests) == 1, what="the request at the agent")
        t0 = time.monotonic()
        gone.close()
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    assert p.returncode == 1 and "agent leaving did not answer: its stream to the control plane" in err, (out, err)
    assert time.monotonic() - t0 < 5
