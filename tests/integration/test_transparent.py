"""Transparent interception end to end in real network namespaces (root and `ip netns`; skipped otherwise).

Two namespaces joined by a veth pair are two pods: A (10.78.0.2, fd00:78::2) and B (10.78.0.1,
fd00:78::1). Both run remora-init and a remora-agent --transparent as the proxy UID 2102. A's agent
knows four Services by virtual address (bootstrap `addresses`), all served from B:

    web   http1  10.96.0.10:80, [fd00:96::10]:80  -> B 10.78.0.1:8080 (h1_origin.py)
    grpc  h2     10.96.0.11:9090                  -> B 10.78.0.1:9090 (grpc_echo_server.py)
    db    tcp    10.96.0.12:3306, [fd00:96::12]:3306 -> B 10.78.0.1:3306 (banner_server.py)
    slow  http1  10.96.0.13:7000                  -> B 10.78.0.1:7000 (banner_server.py)

The applications in A are plain clients (curl, python3-grpcio, sockets) that dial the virtual
addresses, or a name in /etc/netns/<A>/hosts, with no proxy setting anywhere. Their connections go
A's app -> A's outbound listener (15001, original destination -> Service -> endpoint) -> B's inbound
listener (15006, original destination) -> B's app. Addresses exist only inside the namespaces, which
are deleted (with /etc/netns/<A>) in a finally even when a test fails. Every subprocess has a timeout.
"""

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(REPO, "tests", "tools")
AGENT = os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent"))
INIT = os.environ.get("REMORA_INIT", os.path.join(REPO, "build", "init", "remora-init"))
PY = "/usr/bin/python3"  # Debian's interpreter (see DESIGN.md, "The machine")
TIMEOUT = 20
PROXY_UID = 2102
DETECT_TIMEOUT_MS = 300

A4, B4 = "10.78.0.2", "10.78.0.1"
A6, B6 = "fd00:78::2", "fd00:78::1"

CONFIG_A = f"""
workers: 2
admin: 127.0.0.1:15000
health: 127.0.0.1:15020
limits: {{detect_timeout_ms: {DETECT_TIMEOUT_MS}}}
clusters:
  - name: web
    protocol: http1
    addresses: ["10.96.0.10:80", "[fd00:96::10]:80"]
    endpoints: ["{B4}:8080"]
    authorization: [{{name: web-deny, action: deny, rules: [{{to: [{{paths: [/authz-denied]}}]}}]}}]
  - name: grpc
    protocol: h2
    addresses: ["10.96.0.11:9090"]
    endpoints: ["{B4}:9090"]
  - name: db
    protocol: tcp
    addresses: ["10.96.0.12:3306", "[fd00:96::12]:3306"]
    endpoints: ["{B4}:3306"]
  - name: slow
    protocol: http1
    addresses: ["10.96.0.13:7000"]
    endpoints: ["{B4}:7000"]
  - name: limited
    protocol: http1
    addresses: ["10.96.0.14:80"]
    endpoints: ["{B4}:8082"]
    rate_limit: {{total: {{requests_per_second: 1, burst: 3}}}}
"""

# B serves web, grpc and limited: their inbound connections are detected and HTTP goes through B's
# inbound filter chain (limited's rate limit and web's authorization apply there, not at A's outbound side).
CONFIG_B = f"""
workers: 2
admin: 127.0.0.1:15000
health: 127.0.0.1:15020
clusters:
  - name: web
    protocol: http1
    endpoints: ["{B4}:8080"]
    authorization: [{{name: web-deny, action: deny, rules: [{{to: [{{paths: [/authz-denied]}}]}}]}}]
  - name: grpc
    protocol: h2
    endpoints: ["{B4}:9090"]
  - name: limited
    protocol: http1
    endpoints: ["{B4}:8082"]
    rate_limit: {{total: {{requests_per_second: 1, burst: 3}}}}
  - name: private
    protocol: tcp
    endpoints: ["{B4}:3308"]
  - name: db6
    protocol: tcp
    endpoints: ["[{B6}]:3306"]
"""

# The same Services from the control plane (spec.addresses, protocol tcp), plus an HTTPRoute that
# sends /v2/ of `web` to another Service: the route is chosen by path among web's routes although
# the request's authority is the bare virtual address. B's agent is not under the control plane here,
# so it knows no Service: `meshed: false` keeps A's hop HTTP/1.1 and the db relay plaintext
# (test_transparent_hop.py has the meshed hop, test_mesh_tcp.py the opaque one in mesh mTLS).
DOCS = f"""
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec:
  protocol: http1
  meshed: false
  addresses: ["10.96.0.10:80"]
  endpoints: ["{B4}:8080"]
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web-v2}}
spec:
  protocol: http1
  meshed: false
  endpoints: ["{B4}:8081"]
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: db}}
spec:
  protocol: tcp
  meshed: false
  addresses: ["10.96.0.12:3306"]
  endpoints: ["{B4}:3306"]
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-v2}}
spec:
  parentRefs: [{{kind: Service, name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v2/}}}}]
    backendRefs: [{{name: web-v2}}]
"""
CONTROL_PORT = 15010


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    for tool in ("ip", "setpriv", "curl"):
        if _which(tool) is None:
            return f"needs {tool} (scripts/install-deps.sh)"
    if _which("iptables-nft-restore") is None and _which("iptables-legacy-restore") is None:
        return "needs Debian's iptables package (scripts/install-deps.sh)"
    if not os.access(AGENT, os.X_OK) or not os.access(INIT, os.X_OK):
        return f"needs the built {AGENT} and {INIT}"
    name = f"rmt-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0:
            return "`ip netns add` does not work here: " + r.stderr.decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def run(args, ns=None, input=None, check=False, timeout=TIMEOUT):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


class Mesh:
    """Pods A and B, their agents and servers (stopped by PID), and A's hosts file."""

    def __init__(self, control=False, tag="", agent_b_args=()):
        self.control = control
        self.agent_b_args = list(agent_b_args)
        tag = tag or ("c" if control else "")
        self.a = f"rmt-{os.getpid()}-{tag}a"
        self.b = f"rmt-{os.getpid()}-{tag}b"
        self.procs = []
        self.agents = []
        self.logs = []
        self.tmp = tempfile.mkdtemp(prefix="rmt-")
        os.chmod(self.tmp, 0o755)
        self.etc = f"/etc/netns/{self.a}"
        self.has_v6 = True

    def up(self):
        run(["ip", "netns", "add", self.a], check=True)
        run(["ip", "netns", "add", self.b], check=True)
        run(["ip", "link", "add", "rmt0", "netns", self.a, "type", "veth", "peer", "name", "rmt0", "netns", self.b], check=True)
        for ns, a4, a6 in ((self.a, A4, A6), (self.b, B4, B6)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"], ns=ns)
            run(["ip", "-n", ns, "addr", "add", a4 + "/24", "dev", "rmt0"], check=True)
            self.has_v6 &= run(["ip", "-n", ns, "addr", "add", a6 + "/64", "dev", "rmt0", "nodad"]).returncode == 0
            run(["ip", "-n", ns, "link", "set", "rmt0", "up"], check=True)
        # the virtual addresses need a route in A for connect() to get as far as netfilter's OUTPUT hook
        run(["ip", "-n", self.a, "route", "add", "default", "via", B4], check=True)
        if self.has_v6:
            self.has_v6 = run(["ip", "-n", self.a, "-6", "route", "add", "default", "via", B6]).returncode == 0
        os.makedirs(self.etc, exist_ok=True)
        with open(os.path.join(self.etc, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n10.96.0.10 web.default.svc web\n10.96.0.11 grpc.default.svc\n")
        return self

    def down(self):
        """Stops everything; returns what the agents' logs say about sanitizer findings or unclean exits."""
        problems = []
        for name, p in self.agents:
            if p.poll() is None:
                p.terminate()  # a clean drain and exit, so that LeakSanitizer runs
                try:
                    p.wait(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    problems.append(f"{name} did not exit on SIGTERM")
            if p.returncode not in (0, None):
                problems.append(f"{name} exited {p.returncode}")
            text = self.log(name)
            if "Sanitizer" in text or "runtime error" in text:
                problems.append(f"{name}:\n{text[-6000:]}")
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        for f in self.logs:
            f.close()
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)
        shutil.rmtree(self.etc, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return problems

    def ctl_env(self, control_addr):
        """remoractl's environment for the control plane started in self.tmp/control (docs/identity.md)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["REMORA_CONTROL"] = control_addr
        env["REMORA_CA_FILE"] = os.path.join(self.tmp, "control", "ca", "trust-anchor.pem")
        env["REMORA_ADMIN_TOKEN_FILE"] = os.path.join(self.tmp, "control", "admin.token")
        return env

    def agent_creds(self, ns, control_addr, pod):
        """--trust-anchor and --identity-token for a pod's agent (run as PROXY_UID): a bootstrap token (ns
        default, sa <pod>) made with remoractl in `ns`, and copies of both files the agent's user can read."""
        # service account = the pod's name (the Services' spec.serviceAccount)
        r = subprocess.run(["ip", "netns", "exec", ns, self.ctl, "token", "create", "--namespace", "default",
                            "--service-account", pod], capture_output=True, text=True, timeout=TIMEOUT,
                           env=self.ctl_env(control_addr))
        assert r.returncode == 0, (r.stdout, r.stderr)
        anchor, token = os.path.join(self.tmp, "trust-anchor.pem"), os.path.join(self.tmp, pod + ".token")
        shutil.copyfile(os.path.join(self.tmp, "control", "ca", "trust-anchor.pem"), anchor)
        os.chmod(anchor, 0o644)
        with open(token, "w") as f:
            f.write(r.stdout)
        os.chmod(token, 0o600)
        os.chown(token, PROXY_UID, PROXY_UID)
        return ["--trust-anchor", anchor, "--identity-token", token]

    def spawn(self, ns, name, args, uid=None):
        log = open(os.path.join(self.tmp, name + ".log"), "w+")
        self.logs.append(log)
        who = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else ["setpriv"]
        # bounded in time even if the test process dies (timeout forwards SIGTERM and returns the child's status)
        p = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", "-k", "5", "300"] + who + ["--pdeathsig", "KILL"] + list(args),
                             stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        if name.startswith("agent"):
            self.agents.append((name, p))
        return p, log

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log")) as f:
            return f.read()

    def wait_for(self, name, proc, pattern):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if re.search(pattern, self.log(name)):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{name} did not start:\n{self.log(name)}")

    def wait_port(self, ns, host, port):
        probe = ("import socket, sys, time\n"
                 "for _ in range(200):\n"
                 "    try:\n"
                 "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close(); sys.exit(0)\n"
                 "    except OSError:\n"
                 "        time.sleep(0.05)\n"
                 "sys.exit(1)\n")
        # as the proxy UID: a probe must not be captured
        run(["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups", PY, "-c", probe, host, str(port)],
            ns=ns, check=True)

    def start(self):
        b = self.b
        p, _ = self.spawn(b, "h1", [PY, os.path.join(TOOLS, "h1_origin.py"), "--host", "0.0.0.0", "--port", "8080"])
        self.wait_for("h1", p, r"h1 origin on")
        for port in (8081, 8082):
            p, _ = self.spawn(b, f"h1-{port}", [PY, os.path.join(TOOLS, "h1_origin.py"), "--host", "0.0.0.0", "--port", str(port)])
            self.wait_for(f"h1-{port}", p, r"h1 origin on")
        self.spawn(b, "grpc", [PY, os.path.join(TOOLS, "grpc_echo_server.py"), "--host", "0.0.0.0", "--port", "9090"])
        # 127.0.0.1:3308 is an application bound to loopback only
        listeners = [f"{B4}:3306", f"{B4}:7000", "127.0.0.1:3308"] + ([f"[{B6}]:3306"] if self.has_v6 else [])
        p, _ = self.spawn(b, "banner", [PY, os.path.join(TOOLS, "banner_server.py")] + listeners)
        self.wait_for("banner", p, r"ready")
        self.wait_port(b, B4, 9090)
        cfg, cfg_b = os.path.join(self.tmp, "agent-a.yaml"), os.path.join(self.tmp, "agent-b.yaml")
        for path, text in ((cfg, CONFIG_A), (cfg_b, CONFIG_B)):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
        for ns in (self.a, self.b):
            run([INIT] + ([] if self.has_v6 else ["--ipv4-only"]), ns=ns, check=True)
        if self.control:
            ctl_bin = os.path.join(os.path.dirname(os.path.dirname(AGENT)), "control")
            self.ctl = os.path.join(ctl_bin, "remoractl")
            p, _ = self.spawn(self.a, "control", [os.path.join(ctl_bin, "remora-control"), "--listen", f"127.0.0.1:{CONTROL_PORT}",
                                                  "--state-dir", os.path.join(self.tmp, "control")])
            self.wait_port(self.a, "127.0.0.1", CONTROL_PORT)
            state = os.path.join(self.tmp, "state-a")
            os.makedirs(state)
            os.chown(state, PROXY_UID, PROXY_UID)
            args = ["--control", f"127.0.0.1:{CONTROL_PORT}", "--node-id", "pod-a", "--state-dir", state] + \
                self.agent_creds(self.a, f"127.0.0.1:{CONTROL_PORT}", "pod-a")
        else:
            args = ["--config", cfg]
        p, _ = self.spawn(self.a, "agent-a", [AGENT, *args, "--transparent", "--log-level", "debug"], uid=PROXY_UID)
        self.wait_for("agent-a", p, r"ready:")
        if self.control:
            docs = os.path.join(self.tmp, "mesh.yaml")
            with open(docs, "w") as f:
                f.write(DOCS)
            env = self.ctl_env(f"127.0.0.1:{CONTROL_PORT}")
            r = subprocess.run(["ip", "netns", "exec", self.a, self.ctl, "apply", "-f", docs, "--wait", "--timeout", "15"],
                               capture_output=True, text=True, timeout=TIMEOUT, env=env)
            assert r.returncode == 0, (r.stdout, r.stderr, self.log("agent-a"))
        args_b = ([] if self.control else ["--config", cfg_b]) + self.agent_b_args
        p, _ = self.spawn(self.b, "agent-b", [AGENT, *args_b, "--transparent", "--workers", "2", "--log-level", "debug"],
                          uid=PROXY_UID)
        self.wait_for("agent-b", p, r"ready:")
        return self

    def metrics(self, ns):
        r = run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:15020/metrics"], ns=ns, check=True)
        return r.stdout

    def metric(self, ns, name, **labels):
        total = 0.0
        for line in self.metrics(ns).splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total


@pytest.fixture(scope="module")
def mesh():
    m = Mesh()
    problems = []
    try:
        m.up()
        m.start()
        yield m
    finally:
        problems = m.down()
    assert not problems, "\n".join(problems)


# A client in pod A: connects, optionally sends, half-closes, reads to the end; reports timings.
TCP_CLIENT = r"""
import json, socket, sys, time
host, port, send_len, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
t0 = time.monotonic()
s = socket.create_connection((host, port), timeout=5)
s.settimeout(5)
out = {"connect_ms": (time.monotonic() - t0) * 1000}
if first:
    s.sendall(first)
else:
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        line += chunk
    out["banner"] = line.decode(errors="replace").strip()
    out["banner_ms"] = (time.monotonic() - t0) * 1000
payload = bytes(i & 0xff for i in range(send_len))
s.sendall(payload)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
out["total_ms"] = (time.monotonic() - t0) * 1000
head, _, rest = data.partition(b"\r\n")
if first:
    out["banner"] = head.decode(errors="replace")
    out["echo_ok"] = rest == first + payload
else:
    out["echo_ok"] = data == payload
out["received"] = len(data)
print(json.dumps(out))
"""


def tcp(mesh, host, port, send_len=0, first=b""):
    r = run([PY, "-c", TCP_CLIENT, host, str(port), str(send_len), first.hex()], ns=mesh.a, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def curl(mesh, *args):
    r = run(["curl", "-sS", "--max-time", "10", "--noproxy", "*", "-w", "\n%{http_code} %{http_version}"] + list(args), ns=mesh.a,
            check=True)
    body, _, status = r.stdout.rpartition("\n")
    code, version = status.split()
    return int(code), version, body


def test_http1_to_service_address(mesh):
    before = mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="http1")
    code, version, body = curl(mesh, "-H", "X-Test: one", "http://10.96.0.10/hello?x=1")
    assert (code, version) == (200, "1.1"), body
    seen = json.loads(body)
    assert seen["method"] == "GET" and seen["target"] == "/hello?x=1"
    assert ["x-test", "one"] in [[k.lower(), v] for k, v in seen["headers"]]
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="http1") == before + 1
    # the request went through A's HTTP router to the Service's cluster
    assert mesh.metric(mesh.a, "remora_upstream_requests_total", cluster="web") >= 1


def test_http1_by_name(mesh):
    code, _, body = curl(mesh, "http://web.default.svc/by-name")
    assert code == 200 and json.loads(body)["target"] == "/by-name"


def test_h2c_to_service_address(mesh):
    code, version, body = curl(mesh, "--http2-prior-knowledge", "-d", "payload", "http://10.96.0.10/h2c")
    assert (code, version) == (200, "2"), body
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["body"] == "payload"
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="h2") >= 1


def test_grpc_to_service_address(mesh):
    r = run([PY, os.path.join(TOOLS, "grpc_client.py"), "10.96.0.11:9090", "unary", "hello", "mesh"], ns=mesh.a, check=True)
    assert "unary -> hello mesh" in r.stdout
    r = run([PY, os.path.join(TOOLS, "grpc_client.py"), "10.96.0.11:9090", "bidi", "abc"], ns=mesh.a, check=True)
    assert "bidi -> abc" in r.stdout and "bidi -> ABC" in r.stdout
    assert mesh.metric(mesh.a, "remora_upstream_requests_total", cluster="grpc") >= 2


def test_inbound_http_through_the_serving_agent(mesh):
    """B serves web and grpc: A's HTTP/1.1 and HTTP/2 connections to them are detected at B's inbound
    listener and go through its filter chain to the original destination."""
    h1 = mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="http1")
    h2 = mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="h2")
    code, _, body = curl(mesh, "http://10.96.0.10/inbound")
    assert code == 200 and json.loads(body)["target"] == "/inbound"
    r = run([PY, os.path.join(TOOLS, "grpc_client.py"), "10.96.0.11:9090", "unary", "in"], ns=mesh.a, check=True)
    assert "unary -> in" in r.stdout
    # A keeps its upstream connections: at least one new one of each kind unless reused
    assert mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="http1") >= h1
    assert mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="h2") >= max(h2, 1)
    assert mesh.metric(mesh.b, "remora_upstream_requests_total", cluster="inbound/web/8080") >= 1
    assert mesh.metric(mesh.b, "remora_upstream_requests_total", cluster="inbound/grpc/9090") >= 1
    # the golden metrics say which way the request went: outbound at A, inbound at B
    out_a = mesh.metric(mesh.a, "remora_requests_total", direction="outbound")
    in_b = mesh.metric(mesh.b, "remora_requests_total", direction="inbound")
    code, _, _ = curl(mesh, "http://10.96.0.10/direction")
    assert code == 200
    assert mesh.metric(mesh.a, "remora_requests_total", direction="outbound") == out_a + 1
    assert mesh.metric(mesh.b, "remora_requests_total", direction="inbound") == in_b + 1


def test_inbound_rate_limit_applies_at_the_serving_agent(mesh):
    codes = [curl(mesh, "http://10.96.0.14/rl")[0] for _ in range(8)]
    assert codes[:3] == [200, 200, 200] and 429 in codes, codes
    assert mesh.metric(mesh.b, "remora_downstream_local_replies_total", listener="inbound", cause="rate_limited") >= 1
    assert mesh.metric(mesh.a, "remora_downstream_local_replies_total", listener="outbound", cause="rate_limited") == 0


def test_inbound_authorization_applies_at_the_serving_agent(mesh):
    """A Service's authorization policy is enforced by the agent that serves it (B's inbound listener);
    A's outbound side, which has the same cluster, does not decide."""
    assert curl(mesh, "http://10.96.0.10/authz-ok")[0] == 200
    assert curl(mesh, "http://10.96.0.10/authz-denied")[0] == 403
    assert mesh.metric(mesh.b, "remora_authz_decisions_total", policy="web-deny", decision="deny") == 1
    assert mesh.metric(mesh.b, "remora_downstream_local_replies_total", listener="inbound", cause="denied") == 1
    assert mesh.metric(mesh.a, "remora_authz_decisions_total", policy="web-deny") == 0
    assert mesh.metric(mesh.a, "remora_downstream_local_replies_total", listener="outbound", cause="denied") == 0


def test_unknown_destination_passes_through(mesh):
    """A destination outside the Service table is reached unchanged (opaque, no detection)."""
    before = mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="skipped")
    b_http1 = mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="http1")
    code, _, body = curl(mesh, "http://10.78.0.1:8080/direct")
    assert code == 200 and json.loads(body)["target"] == "/direct"
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="skipped") == before + 1
    # A relayed the bytes as they were; B, which serves 10.78.0.1:8080, saw HTTP/1.1 arrive
    assert mesh.metric(mesh.b, "remora_detect_total", listener="inbound", result="http1") == b_http1 + 1
    # a destination B does not serve (7000 is no Service of B's) is relayed by B's inbound side too
    b_tcp = mesh.metric(mesh.b, "remora_tcp_connections_total", listener="inbound")
    out = tcp(mesh, B4, 7000, send_len=10, first=b"\x00binary")
    assert out["echo_ok"], out
    assert mesh.metric(mesh.b, "remora_tcp_connections_total", listener="inbound") == b_tcp + 1


def test_server_speaks_first_on_opaque_port(mesh):
    """3306 is a default opaque port: no detection, the banner comes at once through both agents."""
    for host in ("10.96.0.12", B4):  # the tcp Service, and an address outside the table
        out = tcp(mesh, host, 3306, send_len=1000)
        assert out["banner"].startswith("220 remora-banner"), out
        assert out["banner_ms"] < 100, out
        assert out["echo_ok"], out


def test_detection_timeout_then_opaque(mesh):
    """A server-speaks-first protocol on a port that is not opaque waits for the detection timeout, is counted, then flows."""
    before = mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="timeout")
    out = tcp(mesh, "10.96.0.13", 7000, send_len=10)
    assert out["banner"].startswith("220 remora-banner"), out
    assert DETECT_TIMEOUT_MS * 0.8 <= out["banner_ms"] < DETECT_TIMEOUT_MS + 2000, out
    assert out["echo_ok"], out
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="timeout") == before + 1


def test_unknown_protocol_is_opaque_at_once(mesh):
    before = mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="opaque")
    out = tcp(mesh, "10.96.0.13", 7000, send_len=100, first=b"\x00\x01binary-hello")
    assert out["echo_ok"], out
    assert out["total_ms"] < DETECT_TIMEOUT_MS, out
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="opaque") == before + 1
    # the application's own TLS is not ours to end: relayed as it is, counted as tls
    before = mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="tls")
    out = tcp(mesh, "10.96.0.13", 7000, send_len=100, first=b"\x16\x03\x01\x00\x05hello")
    assert out["echo_ok"] and out["total_ms"] < DETECT_TIMEOUT_MS, out
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound", result="tls") == before + 1


def test_opaque_bulk_both_ways_with_half_close(mesh):
    before = mesh.metric(mesh.a, "remora_tcp_bytes_total", listener="outbound", direction="rx")
    size = 8 << 20
    out = tcp(mesh, "10.96.0.12", 3306, send_len=size)
    assert out["echo_ok"] and out["received"] == size, {k: v for k, v in out.items() if k != "banner"}
    assert mesh.metric(mesh.a, "remora_tcp_bytes_total", listener="outbound", direction="rx") >= before + size
    # everything closed after both half-closes
    deadline = time.monotonic() + 5
    while mesh.metric(mesh.a, "remora_tcp_connections_active", listener="outbound") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mesh.metric(mesh.a, "remora_tcp_connections_active", listener="outbound") == 0


def test_ipv6(mesh):
    if not mesh.has_v6:
        pytest.skip("IPv6 is disabled in this kernel")
    code, _, body = curl(mesh, "-g", "http://[fd00:96::10]/v6")
    assert code == 200 and json.loads(body)["target"] == "/v6"
    assert mesh.metric(mesh.a, "remora_detect_total", listener="outbound-ipv6", result="http1") >= 1
    out = tcp(mesh, "fd00:96::12", 3306, send_len=1000)
    assert out["banner"].startswith("220 remora-banner") and out["echo_ok"], out
    before = mesh.metric(mesh.b, "remora_upstream_connections_total", cluster="inbound/db6/3306")
    out = tcp(mesh, B6, 3306, send_len=1000)  # outside A's table: to the original IPv6 destination
    assert out["banner"].startswith(f"220 remora-banner [{B6}]:3306") and out["echo_ok"], out
    # B serves it (db6): its inbound-ipv6 listener relayed it through the Service's inbound cluster
    assert mesh.metric(mesh.b, "remora_upstream_connections_total", cluster="inbound/db6/3306") == before + 1


def test_agent_connections_not_captured_again(mesh):
    """The agents' own upstream connections leave as the proxy UID: A's outbound listener sees only the app's."""
    before = mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound")
    curl(mesh, "http://10.96.0.10/once")
    assert mesh.metric(mesh.a, "remora_downstream_connections_total", listener="outbound") == before + 1
    assert "without an original destination" not in mesh.log("agent-a")


def test_control_plane_service_addresses():
    """Service addresses and protocol tcp from the control plane; the Service's HTTPRoute picks by path."""
    m = Mesh(control=True)
    try:
        m.up()
        m.start()

        def served(port):
            r = run(["curl", "-sS", "--max-time", "5", f"http://{B4}:{port}/__stats"], ns=m.b, check=True)
            return json.loads(r.stdout)["requests"]

        v1, v2 = served(8080), served(8081)
        code, _, body = curl(m, "http://10.96.0.10/v2/thing")
        assert code == 200 and json.loads(body)["target"] == "/v2/thing"
        assert (served(8080), served(8081)) == (v1, v2 + 1)
        code, _, body = curl(m, "http://10.96.0.10/other")
        assert code == 200 and json.loads(body)["target"] == "/other"
        assert (served(8080), served(8081)) == (v1 + 1, v2 + 1)
        out = tcp(m, "10.96.0.12", 3306, send_len=1000)
        assert out["banner"].startswith("220 remora-banner") and out["banner_ms"] < 100 and out["echo_ok"], out
        assert m.metric(m.a, "remora_upstream_connections_total", cluster="db.default") >= 1
    finally:
        for name in ("agent-a", "agent-b", "control"):
            try:
                print(f"--- {name}\n" + m.log(name)[-4000:])  # shown by pytest when the test fails
            except OSError:
                pass
        problems = m.down()
    assert not problems, "\n".join(problems)


def test_inbound_keeps_loopback_apps_private(mesh):
    """Inbound goes to the original destination (the pod address): an app bound to 127.0.0.1 is not reachable."""
    r = run([PY, "-c", TCP_CLIENT, B4, "3308", "0", ""], ns=mesh.a)
    assert r.returncode != 0 or "remora-banner" not in r.stdout, r.stdout


def test_inbound_to_localhost():
    """--inbound-to-localhost: inbound goes to 127.0.0.1 at the original port, for apps bound to loopback."""
    m = Mesh(tag="l", agent_b_args=["--inbound-to-localhost"])
    problems = []
    try:
        m.up()
        m.start()
        out = tcp(m, B4, 3308, send_len=100)  # a Service of B (private, tcp) whose app listens on loopback only
        assert out["banner"].startswith("220 remora-banner 127.0.0.1:3308") and out["echo_ok"], out
        code, _, body = curl(m, "http://10.96.0.10/local")  # HTTP through B's inbound cluster, to 127.0.0.1:8080
        assert code == 200 and json.loads(body)["target"] == "/local"
        assert m.metric(m.b, "remora_upstream_requests_total", cluster="inbound-local/web/8080") >= 1
    finally:
        problems = m.down()
    assert not problems, "\n".join(problems)
