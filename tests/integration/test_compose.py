"""examples/compose: the docker-compose mesh, validated by docker-compose and run by scripts/compose-mesh.sh.

No Docker engine runs here, so scripts/compose-mesh.sh runs the compose file's own topology in network
namespaces (docs/compose.md): what the file says (services, images' entrypoints and users, commands,
environment, volumes, network_mode pods, addresses, depends_on conditions, healthchecks, capabilities) is
what runs, with the build under test as the images' binaries (REMORA_AGENT, REMORA_INIT; remora-control and
remoractl next to the agent's build dir).

- `docker-compose config -q` accepts the file (no root needed);
- `up`: every service of the file runs, as the user the file or its image names; the client reaches web
  over HTTP and echo over gRPC by their compose names, through both pods' agents over mesh mTLS (the
  serving agents count inbound handshakes and label the requests with the client's SPIFFE ID); the policy
  the `policy` job applied is in force (the route's header modifiers; MeshTLS STRICT refuses plaintext
  from a pod without an agent); `down` leaves no namespace, /etc/netns entry, state or process;
- a one-shot job that fails (a policy file the control plane refuses) fails `up` naming it, and `down`
  cleans up after it;
- keys the runner cannot honour are refused by name.
Root and `ip netns` are needed for all but the first (skipped otherwise). Every subprocess has a timeout;
every process the runner starts is bounded by REMORA_COMPOSE_TTL; the finally clauses run `down`.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RUNNER = os.path.join(REPO, "scripts", "compose-mesh.sh")
COMPOSE_DIR = os.path.join(REPO, "examples", "compose")
COMPOSE = os.path.join(COMPOSE_DIR, "docker-compose.yml")
AGENT = os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent"))
INIT = os.environ.get("REMORA_INIT", os.path.join(REPO, "build", "init", "remora-init"))
CONTROL_DIR = os.path.join(os.path.dirname(os.path.dirname(AGENT)), "control")
TIMEOUT = 90
CLIENT_ID = "spiffe://remora.local/ns/default/sa/client"


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    for tool in ("ip", "setpriv", "curl", "timeout", "docker-compose"):
        if _which(tool) is None:
            return f"needs {tool} (scripts/install-deps.sh)"
    if _which("iptables-nft-restore") is None and _which("iptables-legacy-restore") is None:
        return "needs Debian's iptables package (scripts/install-deps.sh)"
    for path in (AGENT, INIT, os.path.join(CONTROL_DIR, "remora-control"), os.path.join(CONTROL_DIR, "remoractl")):
        if not os.access(path, os.X_OK):
            return f"needs the built {path}"
    name = f"rccp-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0:
            return "`ip netns add` does not work here: " + r.stderr.decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
    return None


_REASON = _skip_reason()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def compose_config(path=COMPOSE):
    yaml = pytest.importorskip("yaml")
    r = subprocess.run(["docker-compose", "-f", path, "config"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


class Topology:
    def __init__(self, tag, compose=COMPOSE):
        self.prefix = f"rcmp{os.getpid() % 100000}{tag}"
        self.compose = compose
        self.tmp = tempfile.mkdtemp(prefix="rcmp-")
        os.chmod(self.tmp, 0o755)  # the services' users reach their volumes below it
        self.run_dir = os.path.join(self.tmp, "run")
        self.logs_to = os.path.join(self.tmp, "logs")
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "REMORA_CONTROL"}
        self.env.update(REMORA_AGENT=AGENT, REMORA_INIT=INIT, REMORA_CONTROL_BIN=os.path.join(CONTROL_DIR, "remora-control"),
                        REMORACTL=os.path.join(CONTROL_DIR, "remoractl"), REMORA_COMPOSE_PREFIX=self.prefix,
                        REMORA_COMPOSE_RUN=self.run_dir, REMORA_COMPOSE_TTL="180", REMORA_COMPOSE_WAIT="40",
                        REMORA_COMPOSE_EXEC_TIMEOUT="20", REMORA_COMPOSE_STOP_TIMEOUT="5",
                        REMORA_COMPOSE_LOGS_TO=self.logs_to)
        self.pids = []

    def sh(self, *args, check=True):
        r = subprocess.run([RUNNER, *args], capture_output=True, text=True, timeout=TIMEOUT, env=self.env, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"compose-mesh.sh {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}\n{self.logs()}")
        return r

    def logs(self):
        out = []
        logs = os.path.join(self.run_dir, "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-1500:]}")
        return "\n".join(out)

    def recorded(self):
        """{name: (pid, start time)} of every process `up` recorded, read before `down` removes the record."""
        path = os.path.join(self.run_dir, "pids")
        if os.path.exists(path):
            with open(path) as f:
                rows = [line.split() for line in f if line.strip()]
            self.pids = [(int(p), st) for p, st, _ in rows]
            return {n: (int(p), st) for p, st, n in rows}
        return {}

    def metric(self, service, name, **labels):
        r = self.sh("exec", service, "curl", "-s", "--max-time", "5", "http://127.0.0.1:15020/metrics")
        total = 0.0
        for line in r.stdout.splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if m and m.group(1) == name:
                got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                if all(got.get(k) == v for k, v in labels.items()):
                    total += float(m.group(3))
        return total

    def assert_gone(self):
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT)
        left = [line.split()[0] for line in r.stdout.splitlines() if line.startswith(self.prefix + "-")]
        assert not left, f"namespaces left: {left}"
        etc = [e for e in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []) if e.startswith(self.prefix + "-")]
        assert not etc, f"/etc/netns entries left: {etc}"
        assert not os.path.exists(self.run_dir)
        for pid, st in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                alive = fields[19] == st and fields[0] not in ("Z", "X")
            except OSError:
                alive = False
            assert not alive, f"process {pid} is still running"

    def cleanup(self):
        self.recorded()
        subprocess.run([RUNNER, "down"], capture_output=True, timeout=TIMEOUT, env=self.env, cwd=REPO)
        shutil.rmtree(self.tmp, ignore_errors=True)


def child_uid(pid):
    """The real UID of the program a recorded timeout(1) runs (its only child)."""
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, timeout=10).stdout.split()
    assert len(kids) == 1, (pid, kids)
    with open(f"/proc/{kids[0]}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_compose_file_is_valid():
    r = subprocess.run(["docker-compose", "-f", COMPOSE, "config", "-q"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    conf = compose_config()
    svc = conf["services"]
    # each workload is a pod of three: the agent owns the network, init and app join it
    for app in ("client", "web", "echo"):
        assert svc[f"{app}-init"]["network_mode"] == f"service:{app}-proxy"
        assert svc[app]["network_mode"] == f"service:{app}-proxy"
        assert svc[f"{app}-init"]["cap_drop"] == ["ALL"] and sorted(svc[f"{app}-init"]["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
        assert svc[app]["depends_on"] == {f"{app}-init": {"condition": "service_completed_successfully"},
                                          f"{app}-proxy": {"condition": "service_healthy"}}
        assert svc[f"{app}-proxy"]["image"].startswith("ghcr.io/remora-mesh/proxy:")


@needs_netns
def test_compose_topology_runs_meshed_with_its_policy():
    t = Topology("a")
    try:
        r = t.sh("up")
        assert "compose-mesh: up" in r.stdout, r.stdout
        procs = t.recorded()
        # what the compose file says is what runs: each of its services, and nothing else but the pods' DNS
        services = compose_config()["services"]
        assert {n for n in procs if not n.startswith("dns-")} == set(services)
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT).stdout
        for pod in ("control", "client-proxy", "web-proxy", "echo-proxy", "net-mesh"):
            assert f"{t.prefix}-{pod}" in names
        # each long-running service as its user: the image's USER, or the file's (apps: the app image's 1000)
        for name, uid in (("control", 2103), ("web-proxy", 2102), ("echo-proxy", 2102), ("client-proxy", 2102),
                          ("web", 1000), ("echo", 1000), ("client", 1000)):
            assert child_uid(procs[name][0]) == uid, name
        # remora-init ran in each pod as root with NET_ADMIN/NET_RAW only and left its chains
        rules = subprocess.run(["ip", "netns", "exec", f"{t.prefix}-web-proxy", "iptables-save", "-t", "nat"],
                               capture_output=True, text=True, timeout=TIMEOUT).stdout
        assert "REMORA" in rules, rules

        in0 = {s: t.metric(s, "remora_mesh_tls_handshakes_total", direction="inbound", result="success") for s in ("web", "echo")}
        n = 4
        for i in range(n):
            r = t.sh("exec", "client", "curl", "-sS", "-i", "--max-time", "10", f"http://web:8080/compose/{i}")
            head, _, body = r.stdout.partition("\n\n")  # text mode: CRLF read as LF
            assert head.startswith("HTTP/1.1 200"), r.stdout + "\n" + t.logs()
            seen = json.loads(body)
            assert seen["service"] == "web" and seen["path"] == f"/compose/{i}"
            hdrs = {k.lower(): v for k, v in seen["headers"]}
            assert hdrs.get("x-mesh") == "remora-compose", seen  # the HTTPRoute's RequestHeaderModifier
            assert not re.search(r"^server:", head, re.I | re.M), head  # its ResponseHeaderModifier
        r = t.sh("exec", "client", "python3", "/app/call_echo.py", "--target", "echo:9090", "hello over grpc")
        lines = r.stdout.splitlines()
        assert lines[0] == "hello over grpc" and ["x-served-by", "echo"] in json.loads(lines[1]), r.stdout

        # over mesh mTLS: the serving agents terminated it and name the caller's identity
        assert t.metric("web", "remora_mesh_tls_handshakes_total", direction="inbound", result="success") >= in0["web"]
        assert t.metric("web", "remora_requests_total", direction="inbound", client_id=CLIENT_ID) >= n
        assert t.metric("echo", "remora_requests_total", direction="inbound", client_id=CLIENT_ID) >= 1
        assert t.metric("web", "remora_mesh_tls_handshakes_total", direction="inbound", result="success") + \
            t.metric("echo", "remora_mesh_tls_handshakes_total", direction="inbound", result="success") >= 1
        # MeshTLS STRICT from policy/mesh.yaml: plaintext from the control plane's pod (no agent) is refused
        r = subprocess.run(["ip", "netns", "exec", f"{t.prefix}-control", "curl", "-sS", "--max-time", "5",
                            "http://10.78.0.11:8080/plain"], capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode != 0, r.stdout
        assert t.metric("web", "remora_mesh_tls_plaintext_refused_total") >= 1

        r = t.sh("status")
        for name in ("control", "web-proxy", "echo-proxy", "client-proxy", "web"):
            assert re.search(rf"^\s+{re.escape(name)}\s+pid \d+\s+running, healthy$", r.stdout, re.M), r.stdout
        for name in ("setup", "policy", "web-init"):
            assert re.search(rf"^\s+{re.escape(name)}\s+pid \d+\s+exited$", r.stdout, re.M), r.stdout

        r = t.sh("down")
        assert "compose-mesh: down" in r.stdout
        t.assert_gone()
        for name in ("web-proxy", "echo-proxy", "client-proxy"):
            with open(os.path.join(t.logs_to, f"{name}.log"), errors="replace") as f:
                text = f.read()
            assert "drained; exiting" in text and "Sanitizer" not in text and "runtime error" not in text, text[-3000:]
        r = t.sh("status", check=False)
        assert r.returncode == 3 and "down" in r.stdout
    finally:
        t.cleanup()


@needs_netns
def test_failed_one_shot_fails_up_and_down_cleans():
    tmp = tempfile.mkdtemp(prefix="rcmp-file-")
    try:
        os.chmod(tmp, 0o755)
        copy = os.path.join(tmp, "compose")
        shutil.copytree(COMPOSE_DIR, copy)
        with open(os.path.join(copy, "policy", "mesh.yaml"), "a") as f:
            f.write("---\napiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: broken}\n"
                    "spec: {protocol: carrier-pigeon, addresses: [\"10.78.0.99:80\"]}\n")
        t = Topology("f", compose=os.path.join(copy, "docker-compose.yml"))
        try:
            r = t.sh("up", "-f", t.compose, check=False)
            assert r.returncode == 1, r.stdout + r.stderr
            assert "service policy exited with status" in r.stderr and "compose-mesh.sh down" in r.stderr, r.stderr
            procs = t.recorded()
            # the pods never started
            assert "policy" in procs and not any(n.endswith("-proxy") and not n.startswith("dns-") for n in procs), procs
            r = t.sh("up", check=False)  # a second up refuses while the record is there
            assert r.returncode == 1 and "run `scripts/compose-mesh.sh down` first" in r.stderr, r.stderr
            t.sh("down")
            t.assert_gone()
        finally:
            t.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@needs_netns
def test_keys_the_runner_cannot_honour_are_refused():
    tmp = tempfile.mkdtemp(prefix="rcmp-file-")
    try:
        copy = os.path.join(tmp, "compose")
        shutil.copytree(COMPOSE_DIR, copy)
        path = os.path.join(copy, "docker-compose.yml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("  control:\n    image:", "  control:\n    privileged: true\n    image:", 1))
        t = Topology("k", compose=path)
        try:
            r = t.sh("up", "-f", path, check=False)
            assert r.returncode == 1 and "service control: privileged not supported" in r.stderr, r.stderr
            assert not os.path.exists(t.run_dir)
        finally:
            t.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@needs_netns
def test_needs_root():
    t = Topology("n")
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", RUNNER, "up"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=t.env, cwd="/")
        assert r.returncode == 1 and "must run as root" in r.stderr, r.stderr
        assert not os.path.exists(t.run_dir)
    finally:
        t.cleanup()
