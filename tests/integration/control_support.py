"""Helpers of the control-plane tests (test_control_*.py): running remora-control and remoractl, and a
fake agent that holds the discovery stream the way remora-agent does (Hello, then ACK or NACK each
snapshot), written with python3-grpcio and Python code generated from proto/ at run time.

Binaries: REMORA_CONTROL_BIN / REMORACTL_BIN, else next to REMORA_AGENT (<build>/agent/remora-agent ->
<build>/control/), else build/control/. The scale test's C fake agents (remora-fake-agents) are taken
from the directory of remoractl.

The control plane's doors (docs/identity.md, "The control plane's own doors") are set up here for every
test: remora-control serves TLS and writes <state-dir>/admin.token; `ControlPlane.ctl` passes the trust
anchor and the admin credential to remoractl (REMORA_CA_FILE, REMORA_ADMIN_TOKEN_FILE); an agent gets its
--trust-anchor and a bootstrap token from `ControlPlane.agent_args(node_id)`; fake agents present a
workload token over TLS.
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
# the DNS name in remora-control's certificate (RM_RPC_CONTROL_SERVER_NAME): clients connect by IP
CONTROL_SERVER_NAME = "remora-control.remora-system.svc"


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
    from remora.v1 import identity_pb2  # noqa: E402
    _pb.identity = identity_pb2
    return _pb


# --------------------------------------------------------------------------------- the control plane

def _check_bins():
    for b in (CONTROL_BIN, CTL_BIN):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            pytest.fail(f"{b} not found or not executable (build the control/ targets, or set REMORA_CONTROL_BIN / "
                        f"REMORACTL_BIN)")


class ControlPlane:
    """A remora-control process on a loopback port with its own state directory."""

    def __init__(self, workdir, port=None, state_dir=None, name="control", trust_anchor=None, extra=()):
        _check_bins()
        self.workdir = workdir
        self.port = port or free_port()
        self.state_dir = state_dir or os.path.join(workdir, "state")
        self.name = name
        self.proc = None
        self.starts = 0
        self.extra = list(extra)
        # what clients verify the control plane with: the generated anchor unless one is supplied
        self.trust_anchor = trust_anchor or os.path.join(self.state_dir, "ca", "trust-anchor.pem")
        self._tokens = 0
        self._fake_token = None

    @property
    def admin_token_file(self):
        return os.path.join(self.state_dir, "admin.token")

    def admin_token(self):
        with open(self.admin_token_file) as f:
            return f.read().strip()

    def ctl_env(self):
        """The environment remoractl needs for this control plane."""
        return {"REMORA_CONTROL": self.addr, "REMORA_CA_FILE": self.trust_anchor,
                "REMORA_ADMIN_TOKEN_FILE": self.admin_token_file}

    def token(self, namespace="default", service_account="default", ttl="1h", node_id="agent"):
        """A new bootstrap token (remoractl token create) written to a file of its own; returns the path."""
        sa = service_account
        r = self.ctl("token", "create", "--namespace", namespace, "--service-account", sa, "--ttl", ttl)
        assert r.rc == 0, r
        self._tokens += 1
        path = os.path.join(self.workdir, f"{self.name}-{node_id}-{self._tokens}.token")
        with open(path, "w") as f:
            f.write(r.out)
        return path

    def agent_args(self, node_id, namespace="default", service_account="default"):
        """What remora-agent --control needs besides the address: the trust anchor and a bootstrap token."""
        return ["--trust-anchor", self.trust_anchor,
                "--identity-token", self.token(namespace, service_account, node_id=node_id)]

    def fake_agent_token(self):
        """One unbound workload token shared by the fake agents (an unused token serves any node on discovery)."""
        if self._fake_token is None:
            with open(self.token(service_account="fake-agent", ttl="24h", node_id="fake")) as f:
                self._fake_token = f.read().strip()
        return self._fake_token

    def root_pem(self):
        with open(self.trust_anchor, "rb") as f:
            return f.read()

    def grpc_channel(self, token=None, cert_chain=None, key=None, root=None, options=()):
        """A python3-grpcio channel to this control plane over TLS (verified against `root`, default the
        trust anchor), with `authorization: Bearer token` on every call when a token is given."""
        import grpc
        creds = grpc.ssl_channel_credentials(root_certificates=root or self.root_pem(), private_key=key,
                                             certificate_chain=cert_chain)
        if token is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(self.addr, creds, options=[("grpc.ssl_target_name_override", CONTROL_SERVER_NAME),
                                                              ("grpc.enable_retries", 0)] + list(options))

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10.0, log_level="info"):
        self.starts += 1
        log = os.path.join(self.workdir, f"{self.name}.{self.starts}.log")
        self.proc = Proc([CONTROL_BIN, "--listen", self.addr, "--state-dir", self.state_dir, "--log-level", log_level]
                         + self.extra, log)
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

    def ctl(self, *args, env=None, **kw):
        e = self.ctl_env()
        e.update(env or {})
        return ctl(*args, control=self.addr, env=e, **kw)


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


def throwaway_ca(workdir, name="other-ca"):
    """A self-signed CA certificate and key made with the openssl CLI (no control plane trusts it).
    Returns (cert path, key path)."""
    cert, key = os.path.join(workdir, f"{name}.pem"), os.path.join(workdir, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={name}", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def client_env(workdir):
    """remoractl's credentials for a control plane that is not there (a throwaway CA, a well-formed admin
    token): for tests of what remoractl says when it cannot connect."""
    cert, _ = throwaway_ca(workdir, "client-env-ca")
    token = write(workdir, "client-env.admin.token", "rma1." + "0" * 64 + "\n")
    return {"REMORA_CA_FILE": cert, "REMORA_ADMIN_TOKEN_FILE": token}


# ------------------------------------------------------------------------------------ the fake agent

class FakeAgent:
    """Holds a discovery stream like an agent: Hello{node_id}, then for every snapshot ACK, NACK with a
    reason, or stay silent, depending on `policy` ("ack", "nack", "ignore"; may be changed any time)."""

    def __init__(self, target, node_id, policy="ack", nack_reason="rejected by the test", applied_version=0):
        """target: a ControlPlane (TLS, with a shared workload token), or "IP:PORT" for plaintext."""
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
        if isinstance(target, ControlPlane):
            self.channel = target.grpc_channel(token=target.fake_agent_token(),
                                               options=[("grpc.use_local_subchannel_pool", 1)])
        else:
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

    def __init__(self, workdir, cp, count, prefix="fake-", extra=()):
        """cp: the ControlPlane (TLS; the fleet shares one workload token)."""
        if not (os.path.isfile(FAKE_AGENTS_BIN) and os.access(FAKE_AGENTS_BIN, os.X_OK)):
            pytest.fail(f"{FAKE_AGENTS_BIN} not found (build the remora-fake-agents target)")
        self.count = count
        token = os.path.join(workdir, f"fake-agents-{prefix}.token")
        with open(token, "w") as f:
            f.write(cp.fake_agent_token())
        self.proc = Proc([FAKE_AGENTS_BIN, "--control", cp.addr, "--trust-anchor", cp.trust_anchor, "--token", token,
                          "--count", str(count), "--prefix", prefix] + list(extra),
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
        a = FakeAgent(cp, node_id, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()

# ------------------------------------------------------------------ shared by the scoping tests (test_control_scope.py,
# test_ondemand.py)

@pytest.fixture
def origin(tmp_path):
    """An HTTP/1.1 origin (tests/tools/h1_origin.py) on a free port: its port."""
    from procutil import PYTHON, TOOLS_DIR, wait_ready_file
    ready = os.path.join(str(tmp_path), "origin.port")
    p = Proc([PYTHON, os.path.join(TOOLS_DIR, "h1_origin.py"), "--port", "0", "--ready-file", ready],
             os.path.join(str(tmp_path), "origin.log"))
    yield wait_ready_file(ready, p, 15)
    p.stop(signal.SIGKILL, timeout=2)


def cp_metric(port, name, **labels):
    """One sample of remora-control's /metrics on `port` (0 when absent)."""
    import support
    m = support.parse_prometheus(support.http_get("127.0.0.1", port, "/metrics", timeout=5)[2].decode())
    return support.metric(m, name, **labels) or 0
