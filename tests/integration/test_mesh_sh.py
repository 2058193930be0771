"""scripts/mesh.sh, the one-machine mesh, end to end (root and `ip netns`; skipped otherwise).

`mesh.sh up` with the build under test (REMORA_AGENT, REMORA_INIT; remora-control and remoractl next to
the agent's build dir), under a prefix and a state dir of this test's own (so it never meets a demo's
mesh); examples/mesh-netns.yaml applied through `mesh.sh ctl`; requests from the client pod to
http://web.default.svc by name; `status`; `down`, after which no namespace, /etc/netns entry or
process of the mesh is left. Then an `up` that fails half-way (the agent binary is /bin/false) and the
`down` that cleans up after it. Every subprocess has a timeout; every process the mesh starts is
bounded by REMORA_MESH_TTL; the finally clauses run `down`.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MESH = os.path.join(REPO, "scripts", "mesh.sh")
AGENT = os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent"))
INIT = os.environ.get("REMORA_INIT", os.path.join(REPO, "build", "init", "remora-init"))
CONTROL_DIR = os.path.join(os.path.dirname(os.path.dirname(AGENT)), "control")
TIMEOUT = 60
PODS = ("control", "client", "web", "web-v2", "echo")


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    for tool in ("ip", "setpriv", "curl", "setsid", "timeout"):
        if _which(tool) is None:
            return f"needs {tool} (scripts/install-deps.sh)"
    if _which("iptables-nft-restore") is None and _which("iptables-legacy-restore") is None:
        return "needs Debian's iptables package (scripts/install-deps.sh)"
    for path in (AGENT, INIT, os.path.join(CONTROL_DIR, "remora-control"), os.path.join(CONTROL_DIR, "remoractl")):
        if not os.access(path, os.X_OK):
            return f"needs the built {path}"
    name = f"rmsh-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0:
            return "`ip netns add` does not work here: " + r.stderr.decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


class Mesh:
    def __init__(self, tag, agent=AGENT):
        self.prefix = f"rmsh{os.getpid() % 100000}{tag}"
        self.tmp = tempfile.mkdtemp(prefix="rmsh-")
        os.chmod(self.tmp, 0o755)  # the agents (UID 2102) reach their state dirs below it
        self.run_dir = os.path.join(self.tmp, "run")
        self.logs_to = os.path.join(self.tmp, "logs")
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "REMORA_CONTROL"}
        self.env.update(REMORA_AGENT=agent, REMORA_INIT=INIT, REMORA_CONTROL_BIN=os.path.join(CONTROL_DIR, "remora-control"),
                        REMORACTL=os.path.join(CONTROL_DIR, "remoractl"), REMORA_MESH_PREFIX=self.prefix,
                        REMORA_MESH_RUN=self.run_dir, REMORA_MESH_TTL="120", REMORA_MESH_EXEC_TIMEOUT="20",
                        REMORA_MESH_LOGS_TO=self.logs_to)
        self.pids = []

    def sh(self, *args, check=True):
        r = subprocess.run(["bash", MESH, *args], capture_output=True, text=True, timeout=TIMEOUT, env=self.env, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"mesh.sh {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}\n{self.logs()}")
        return r

    def logs(self):
        out = []
        logs = os.path.join(self.run_dir, "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-2000:]}")
        return "\n".join(out)

    def recorded_pids(self):
        """(pid, start time) of every process `up` recorded, read before `down` removes the record."""
        path = os.path.join(self.run_dir, "pids")
        if os.path.exists(path):
            with open(path) as f:
                self.pids = [(int(p), st) for p, st, *_ in (line.split() for line in f if line.strip())]
        return self.pids

    def metric(self, pod, name, **labels):
        r = self.sh("exec", pod, "curl", "-s", "--max-time", "5", "http://127.0.0.1:15020/metrics")
        total = 0.0
        for line in r.stdout.splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if m and m.group(1) == name:
                got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                if all(got.get(k) == v for k, v in labels.items()):
                    total += float(m.group(3))
        return total

    def served(self, pod):
        r = self.sh("exec", pod, "curl", "-s", "--max-time", "5", "http://127.0.0.1:8080/__stats")
        return json.loads(r.stdout)["requests"]

    def assert_gone(self):
        """No namespace, /etc/netns entry, state dir or process of this mesh is left."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT)
        left = [line.split()[0] for line in r.stdout.splitlines() if line.startswith(self.prefix + "-")]
        assert not left, f"namespaces left: {left}"
        etc = [e for e in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []) if e.startswith(self.prefix + "-")]
        assert not etc, f"/etc/netns entries left: {etc}"
        assert not os.path.exists(self.run_dir)
        for pid, st in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    alive = f.read().rsplit(")", 1)[1].split()[19] == st
            except OSError:
                alive = False
            assert not alive, f"process {pid} is still running"
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                assert self.run_dir.encode() not in cmd, f"process {entry} of the mesh is still running: {cmd!r}"

    def cleanup(self):
        self.recorded_pids()
        subprocess.run(["bash", MESH, "down"], capture_output=True, timeout=TIMEOUT, env=self.env, cwd=REPO)
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_up_request_by_name_through_two_agents_status_down():
    m = Mesh("a")
    try:
        r = m.sh("up")
        assert "mesh: up" in r.stdout
        m.recorded_pids()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT).stdout
        for pod in PODS + ("br",):
            assert f"{m.prefix}-{pod}" in names
            if pod != "br":
                with open(f"/etc/netns/{m.prefix}-{pod}/resolv.conf") as f:
                    assert "nameserver 127.0.0.1" in f.read()
        r = m.sh("ctl", "apply", "-f", os.path.join(REPO, "examples", "mesh-netns.yaml"), "--wait", "--timeout", "15")
        assert "applied by 4 agents" in r.stdout, r.stdout

        # no route to the host's network from a pod: only the mesh's two prefixes
        routes = m.sh("exec", "client", "ip", "-4", "route").stdout
        assert "default" not in routes and "10.96.77.0/24 via 10.77.0.1" in routes, routes

        out0 = m.metric("client", "remora_requests_total", direction="outbound")
        in0 = {p: m.metric(p, "remora_requests_total", direction="inbound") for p in ("web", "web-v2")}
        served0 = {p: m.served(p) for p in ("web", "web-v2")}
        n = 6
        for i in range(n):
            r = m.sh("exec", "client", "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", f"http://web.default.svc/by-name/{i}")
            body, _, code = r.stdout.rpartition("\n")
            assert code == "200", r.stdout
            seen = json.loads(body)
            assert seen["target"] == f"/by-name/{i}" and ["host", "web.default.svc"] in [[k.lower(), v] for k, v in seen["headers"]]
        served = {p: m.served(p) - served0[p] for p in ("web", "web-v2")}
        assert sum(served.values()) == n, served
        # outbound at the client's agent, inbound at the agent of the pod that served each request (the
        # 90/10 canary); a stream is counted when it ends, which may be just after curl has its answer
        want = {("client", "outbound"): out0 + n, ("web", "inbound"): in0["web"] + served["web"],
                ("web-v2", "inbound"): in0["web-v2"] + served["web-v2"]}
        deadline = time.monotonic() + 3
        while True:
            got = {(p, d): m.metric(p, "remora_requests_total", direction=d) for p, d in want}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == want
        assert m.metric("web", "remora_requests_total", direction="outbound") == 0

        r = m.sh("status")
        for pod in ("client", "web", "web-v2", "echo"):
            assert re.search(rf"^\s+{re.escape(pod)}\s+ready$", r.stdout, re.M), r.stdout
        assert "4 agents connected" in r.stdout, r.stdout

        r = m.sh("down")
        assert "mesh: down" in r.stdout
        m.assert_gone()
        # every agent drained and exited on down's SIGTERM, with nothing from the sanitizers (ASan builds)
        for pod in ("client", "web", "web-v2", "echo"):
            with open(os.path.join(m.logs_to, f"agent-{pod}.log"), errors="replace") as f:
                text = f.read()
            assert "drained; exiting" in text and "Sanitizer" not in text and "runtime error" not in text, text[-4000:]
        r = m.sh("status", check=False)
        assert r.returncode == 3 and "down" in r.stdout
    finally:
        m.cleanup()


def test_down_after_failed_up_is_clean():
    m = Mesh("f", agent="/bin/false")  # every step up to the agents succeeds, then the agents exit at once
    try:
        r = m.sh("up", check=False)
        assert r.returncode != 0
        assert "agent-client exited before listening" in r.stderr and "mesh.sh down" in r.stderr, r.stderr
        m.recorded_pids()
        assert len(m.pids) >= 5  # control, the OTLP receiver or not, three apps, the failed agent
        r = m.sh("up", check=False)  # a second up refuses while the record is there
        assert r.returncode != 0 and "run `scripts/mesh.sh down` first" in r.stderr, r.stderr
        r = m.sh("down")
        m.assert_gone()
    finally:
        m.cleanup()


def test_needs_root():
    m = Mesh("n")
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", MESH, "up"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=m.env, cwd="/")
        assert r.returncode == 1 and "must run as root" in r.stderr, r.stderr
        assert not os.path.exists(m.run_dir)
    finally:
        m.cleanup()
