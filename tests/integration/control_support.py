"""Helpers of the control-plane tests (test_control_*.py): running remora-control and remoractl, and a
fake agent that holds the discovery stream the way remora-agent does (Hello, then ACK or NACK each
snapshot), written with python3-grpcio and Python code generated from proto/ at run time.

Binaries: REMORA_CONTROL_BIN / REMORACTL_BIN, else next to REMORA_AGENT (<build>/agent/remora-agent ->
<build>/control/), else build/control/. The scale test's C fake agents (remora-fake-agents) are taken
from the directory of remoractl.
"""

import atexit
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from procutil import Proc, free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(REPO, "proto")


def _build_dir():
    agent = os.environ.get("REMORA_AGENT")
    if agent:
        return os.path.dirname(os.path.dirname(os.path.abspath(agent)))
    return os.path.join(REPO, "build")


CONTROL_BIN = os.environ.get("REMORA_CONTROL_BIN", os.path.join(_build_dir(), "control", "remora-control"))
CTL_BIN = os.environ.get("REMORACTL_BIN", os.path.join(_build_dir(), "control", "remoractl"))
FAKE_AGENTS_BIN = os.path.join(os.path.dirname(CTL_BIN), "remora-fake-agents")

# ------------------------------------------------------------------------------- generated protobuf

_pb = None


def pb():
    """The remora.v1 Python modules, generated once per test session with protoc into a temp dir."""
    global _pb
    if _pb is not None:
        return _pb
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.fail("protoc not found: install protobuf-compiler (scripts/install-deps.sh)")
    out = tempfile.mkdtemp(prefix="remora-pb-")
    atexit.register(shutil.rmtree, out, True)
    files = sorted(os.path.join("remora", "v1", f) for f in os.listdir(os.path.join(PROTO_DIR, "remora", "v1"))
                   if f.endswith(".proto"))
    subprocess.run([protoc, f"-I{PROTO_DIR}", f"--python_out={out}"] + files, check=True, timeout=30)
    sys.path.insert(0, out)
    from remora.v1 import admin_pb2, discovery_pb2, meta_pb2, route_pb2, service_pb2  # noqa: E402

    class _NS:
        pass
    _pb = _NS()
    _pb.admin, _pb.discovery, _pb.meta, _pb.route, _pb.service = admin_pb2, discovery_pb2, meta_pb2, route_pb2, service_pb2
    from remora.v1 import policy_pb2  # noqa: E402
    _pb.policy = policy_pb2
    return _pb


# --------------------------------------------------------------------------------- the control plane

def _check_bins():
    for b in (CONTROL_BIN, CTL_BIN):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            pytest.fail(f"{b} not found or not executable (build the control/ targets, or set REMORA_CONTROL_BIN / "
                        f"REMORACTL_BIN)")


class ControlPlane:
    """A remora-control process on a loopback port with its own state directory."""

    def __init__(self, workdir, port=None, state_dir=None, name="control"):
        _check_bins()
        self.workdir = workdir
        self.port = port or free_port()
        self.state_dir = state_dir or os.path.join(workdir, "state")
        self.name = name
        self.proc = None
        self.starts = 0

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10.0, log_level="info"):
        self.starts += 1
        log = os.path.join(self.workdir, f"{self.name}.{self.starts}.log")
        self.proc = Proc([CONTROL_BIN, "--listen", self.addr, "--state-dir", self.state_dir, "--log-level", log_level], log)
        try:
            wait_port("127.0.0.1", self.port, timeout, self.proc)
        except BaseException:
            self.proc.stop(signal.SIGKILL)
            raise
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stops it; returns the exit code (0 for a clean SIGTERM shutdown)."""
        if self.proc is None:
            return None
        rc = self.proc.stop(sig, timeout)
        return rc

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def log(self):
        return self.proc.log_text() if self.proc else ""

    def rss_kb(self):
        return self.proc.rss_kb(include_children=False)

    def ctl(self, *args, **kw):
        return ctl(*args, control=self.addr, **kw)


class CtlResult:
    def __init__(self, cp, elapsed):
        self.rc, self.out, self.err, self.elapsed = cp.returncode, cp.stdout, cp.stderr, elapsed

    def __repr__(self):
        return f"<remoractl rc={self.rc} out={self.out[-800:]!r} err={self.err[-800:]!r}>"


def ctl(*args, control=None, stdin=None, timeout=30, env=None):
    """Runs remoractl; --control is passed through REMORA_CONTROL unless None."""
    _check_bins()
    e = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    if control is not None:
        e["REMORA_CONTROL"] = control
    if env:
        e.update(env)
    t0 = time.monotonic()
    cp = subprocess.run([CTL_BIN] + [str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=timeout,
                        env=e)
    return CtlResult(cp, time.monotonic() - t0)


# ------------------------------------------------------------------------------------ the fake agent

class FakeAgent:
    """Holds a discovery stream like an agent: Hello{node_id}, then for every snapshot ACK, NACK with a
    reason, or stay silent, depending on `policy` ("ack", "nack", "ignore"; may be changed any time)."""

    def __init__(self, target, node_id, policy="ack", nack_reason="rejected by the test", applied_version=0):
        import grpc
        self.pb = pb()
        self.node_id = node_id
        self.policy = policy
        self.nack_reason = nack_reason
        self.snapshots = []          # (monotonic time received, Snapshot)
        self.answered = {}           # version -> monotonic time the ACK/NACK was queued
        self.error = None            # grpc.RpcError that ended the stream, if any
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._out = queue.Queue()
        # a private subchannel pool: every fake agent gets its own TCP connection, as real agents do
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                              ("grpc.enable_retries", 0)])
        d = self.pb.discovery
        method = self.channel.stream_stream("/remora.v1.Discovery/StreamSnapshots",
                                            request_serializer=d.AgentMessage.SerializeToString,
                                            response_deserializer=d.Snapshot.FromString)
        self._out.put(d.AgentMessage(hello=d.Hello(node_id=node_id, applied_version=applied_version)))
        self.call = method(self._requests())
        self._thread = threading.Thread(target=self._read, name=f"fake-agent-{node_id}", daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            m = self._out.get()
            if m is None:
                return
            yield m

    def send(self, msg):
        self._out.put(msg)

    def _read(self):
        import grpc
        d = self.pb.discovery
        try:
            for snap in self.call:
                now = time.monotonic()
                policy = self.policy
                if policy == "ack":
                    self._out.put(d.AgentMessage(ack=d.Ack(version=snap.version, nonce=snap.nonce)))
                elif policy == "nack":
                    self._out.put(d.AgentMessage(nack=d.Nack(version=snap.version, nonce=snap.nonce,
                                                             reason=self.nack_reason)))
                with self._cond:
                    self.snapshots.append((now, snap))
                    if policy in ("ack", "nack"):
                        self.answered[snap.version] = time.monotonic()
                    self._cond.notify_all()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    @property
    def last(self):
        with self._cond:
            return self.snapshots[-1][1] if self.snapshots else None

    def wait_version(self, version, timeout=10.0):
        """Waits for a snapshot with at least `version`; returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, s in reversed(self.snapshots):
                    if s.version >= version:
                        return s
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    raise AssertionError(f"{self.node_id}: no snapshot >= v{version} within {timeout}s "
                                         f"(got {[s.version for _, s in self.snapshots]}, error {self.error!r})")
                self._cond.wait(left)

    def wait_ended(self, timeout=10.0):
        if not self.ended.wait(timeout):
            raise AssertionError(f"{self.node_id}: stream still open after {timeout}s")
        return self.error

    def close(self):
        """Leaves like an agent that shuts down: half-close, then cancel and close the channel."""
        self._out.put(None)
        self.ended.wait(2.0)
        self.call.cancel()
        self.channel.close()
        self._thread.join(5.0)


class FakeAgentFleet:
    """remora-fake-agents: `count` agents' streams in one C process (one thread and one TCP connection
    each, on the same rpc glue as the agent's control client)."""

    def __init__(self, workdir, target, count, prefix="fake-", extra=()):
        if not (os.path.isfile(FAKE_AGENTS_BIN) and os.access(FAKE_AGENTS_BIN, os.X_OK)):
            pytest.fail(f"{FAKE_AGENTS_BIN} not found (build the remora-fake-agents target)")
        self.count = count
        self.proc = Proc([FAKE_AGENTS_BIN, "--control", target, "--count", str(count), "--prefix", prefix] + list(extra),
                         os.path.join(workdir, f"fake-agents-{prefix}{count}.log"))

    def log(self):
        return self.proc.log_text()

    def wait_ready(self, timeout=20.0):
        wait_until(lambda: f"ready {self.count}" in self.log() or not self.proc.alive(), timeout, what="fake agents ready")
        assert self.proc.alive(), self.log()[-3000:]

    def answers(self, version):
        """How many agents answered `version`."""
        return sum(1 for line in self.log().splitlines() if line.split()[1:2] == [str(version)])

    def stop(self):
        return self.proc.stop(signal.SIGTERM, timeout=10)


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def status_json(cp):
    import json
    r = cp.ctl("status", "-o", "json")
    assert r.rc == 0, r
    return json.loads(r.out)


def agent_status(cp, node_id):
    for a in status_json(cp)["agents"]:
        if a["node"] == node_id:
            return a
    return None


# ----------------------------------------------------------------------------------------- documents

def service_doc(name, endpoints=("127.0.0.1:27201",), protocol="grpc", namespace=None):
    ns = f"\n  namespace: {namespace}" if namespace else ""
    eps = ", ".join(f'"{e}"' for e in endpoints)
    return (f"apiVersion: remora.dev/v1\nkind: Service\nmetadata:\n  name: {name}{ns}\n"
            f"spec:\n  protocol: {protocol}\n  endpoints: [{eps}]\n")


def split_route_doc(name, parent, backends):
    """backends: [(service, weight), ...]"""
    refs = ", ".join(f"{{name: {b}, weight: {w}}}" for b, w in backends)
    return (f"apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n"
            f"  parentRefs: [{{kind: Service, name: {parent}}}]\n  rules:\n"
            f"  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{refs}]\n")


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------------------------------ fixtures
# Test modules import these names (`from control_support import control, control_factory, agents`).

@pytest.fixture
def control_factory(tmp_path, request):
    """start(**kw) -> a started ControlPlane (kw: port, state_dir, name). Every one is stopped with SIGTERM
    at teardown and must exit 0 (a sanitizer finding or a crash fails the test); its log is printed when
    the test failed."""
    started = []

    def start(**kw):
        kw.setdefault("name", f"control{len(started)}")
        cp = ControlPlane(str(tmp_path), **kw)
        started.append(cp)
        return cp.start()

    yield start
    rep = getattr(request.node, "rep_call", None)
    failed = rep is not None and rep.failed
    problems = []
    for cp in started:
        crashed = cp.proc is not None and not cp.alive() and cp.proc.popen.returncode not in (0, None) \
            and not getattr(cp, "stopped_by_test", False)
        rc = cp.stop()
        if crashed:
            problems.append(f"remora-control ({cp.name}) died during the test with exit code {cp.proc.popen.returncode}")
        elif rc not in (0, None) and not getattr(cp, "stopped_by_test", False):
            problems.append(f"remora-control ({cp.name}) exited with {rc} on SIGTERM")
        if failed or problems:
            sys.stderr.write(f"\n---- {cp.name} log ----\n{cp.log()[-6000:]}\n")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def control(control_factory):
    return control_factory()


@pytest.fixture
def agents():
    """start(cp, node_id, **kw) -> FakeAgent; every one is closed at teardown."""
    started = []

    def start(cp, node_id, **kw):
        a = FakeAgent(cp.addr, node_id, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()
