"""Opaque TCP between agents inside mesh mTLS (ALPN remora.mesh/tcp, docs/mesh-tls.md).

Two setups, the same checks:

- loopback (no root): agents from bootstrap files with identities as files (test_mesh_tls.py's CA);
  A's `protocol: tcp` listener relays to a `peer: agent` cluster (B), through a recording relay, and B's
  `protocol: tcp` + `peer: agent` listener relays to the application;
- the network-namespace mesh of test_transparent_hop.py (control plane, bootstrap tokens, --transparent;
  root only): `protocol: tcp` Services by virtual address, the bytes between the pods captured with an
  AF_PACKET socket in B.

Checked: the hop is TLS offering remora.mesh/tcp and no application byte crosses in clear; the serving
agent counts the handshake and knows the caller (an authorization rule by SPIFFE ID); half-close both
ways (the client shuts down writing and still reads the server's answer; the server shuts down first
and still reads); a server-speaks-first protocol through the mesh; 20 MB each way intact (SHA-256); a
peer with another identity fails the connect; STRICT refuses plaintext opaque TCP from a non-mesh
client (client-first and server-first), PERMISSIVE relays it after the bounded wait for a ClientHello.
"""

import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import support
from procutil import TOOLS_DIR, free_port, wait_port
from test_mesh_tls import API, CA, OTHER, WEB, RecordingRelay, identity_dir

pytestmark = pytest.mark.agent_only("mesh mTLS is remora-agent's")

PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
BANNER = os.path.join(os.path.dirname(HERE), "tools", "banner_server.py")
HS = "remora_mesh_tls_handshakes_total"
MARKER = b"opaque-plaintext-marker-7f3a"
MESH_WAIT_MS = 500  # the default of --mesh-sniff-timeout-ms / limits.mesh_sniff_timeout_ms

# A client: modes
#   echo SIZE: (a banner server) reads the banner line, sends MARKER + SIZE random bytes while reading the echo,
#              shuts down writing, reads to the end; the server half-closes after its last echoed byte
#   server-closes SIZE: reads the server's greeting to its FIN, then sends MARKER + SIZE bytes and shuts down
#   plain-first: sends MARKER at once, reads what comes until the end or 3 s
#   silent: sends nothing, reads what comes until the end or 3 s (a server-speaks-first client)
CLIENT = r"""
import hashlib, json, os, socket, sys, threading, time
host, port, mode, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
marker = bytes.fromhex(sys.argv[5])
t0 = time.monotonic()
out = {}
try:
    s = socket.create_connection((host, port), timeout=10)
except OSError as e:
    print(json.dumps({"connect_error": str(e)})); sys.exit(0)
s.settimeout(20)
def read_all(sock, limit_s=None):
    data = bytearray()
    if limit_s is not None:
        sock.settimeout(limit_s)
    try:
        while True:
            d = sock.recv(1 << 16)
            if not d:
                return bytes(data), "eof"
            if not data:
                out.setdefault("first_ms", (time.monotonic() - t0) * 1000)
            data += d
    except socket.timeout:
        return bytes(data), "timeout"
    except OSError as e:
        return bytes(data), "error: " + str(e)
if mode == "echo":
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        line += c
    out["banner"] = line.decode(errors="replace").strip()
    out["banner_ms"] = (time.monotonic() - t0) * 1000
    payload = marker + os.urandom(size)
    got = {}
    def reader():
        got["data"], got["end"] = read_all(s)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    t.join(60)
    out["sent_sha"] = hashlib.sha256(payload).hexdigest()
    out["recv_sha"] = hashlib.sha256(got.get("data", b"")).hexdigest()
    out["recv_len"] = len(got.get("data", b""))
    out["end"] = got.get("end")
elif mode == "server-closes":
    greeting, end = read_all(s)
    out["greeting"], out["greeting_end"] = greeting.decode(errors="replace"), end
    payload = marker + os.urandom(size)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    out["sent_sha"], out["sent_len"] = hashlib.sha256(payload).hexdigest(), len(payload)
    rest, out["end"] = read_all(s, 10)
else:
    if mode == "plain-first":
        try:
            s.sendall(marker)
        except OSError as e:
            out["send_error"] = str(e)
    data, out["end"] = read_all(s, 3)
    out["received"] = data.decode(errors="replace")
    out["ms"] = (time.monotonic() - t0) * 1000
print(json.dumps(out))
"""

# A server that greets, shuts down its write side at once, then reads to the end and records what it got.
HALFCLOSE_SERVER = r"""
import hashlib, json, socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def serve(c):
    try:
        c.sendall(b"bye-first\n")
        c.shutdown(socket.SHUT_WR)
        data = bytearray()
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            data += d
        with open(path, "a") as f:
            f.write(json.dumps({"len": len(data), "sha": hashlib.sha256(data).hexdigest()}) + "\n")
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(64)
print("halfclose ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class Recorder(RecordingRelay):
    """test_mesh_tls's recording relay, passing a half-close on as one (its own closes both ways at the first end)."""

    def _pump(self, src, dst, buf):
        try:
            src.settimeout(60)
            while True:
                d = src.recv(65536)
                if not d:
                    break
                with self.lock:
                    buf.extend(d)
                dst.sendall(d)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def run_client(host, port, mode, size=0, ns=None, uid=None, timeout=90):
    cmd = []
    if ns is not None:
        cmd += ["ip", "netns", "exec", ns]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    cmd += [PY, "-c", CLIENT, host, str(port), mode, str(size), MARKER.hex()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_echo(out, size):
    assert out.get("banner", "").startswith("220 remora-banner"), out
    assert out["end"] == "eof", out
    assert out["recv_len"] == len(MARKER) + size and out["recv_sha"] == out["sent_sha"], out


def read_records(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            lines = [json.loads(x) for x in open(path).read().splitlines() if x.strip()]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} records")


def assert_tls_hop(up, down):
    """The hop's bytes: TLS records both ways, remora.mesh/tcp offered, no application byte in clear."""
    assert up[:2] == b"\x16\x03" and down[:2] == b"\x16\x03", (up[:16], down[:16])
    assert b"remora.mesh/tcp" in up
    for needle in (MARKER, b"remora-banner", b"bye-first"):
        assert needle not in up and needle not in down, needle


# ------------------------------------------------------------------------------------ loopback

class Servers:
    def __init__(self, workdir):
        self.procs = []
        self.banner_port, self.half_port = free_port(), free_port()
        self.half_log = os.path.join(workdir, "halfclose.jsonl")
        self.procs.append(subprocess.Popen([PY, BANNER, f"127.0.0.1:{self.banner_port}"], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen([PY, "-c", HALFCLOSE_SERVER, "127.0.0.1", str(self.half_port), self.half_log],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port("127.0.0.1", self.banner_port, 10)
        wait_port("127.0.0.1", self.half_port, 10)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture
def servers(workdir):
    s = Servers(workdir)
    yield s
    s.stop()


@pytest.fixture
def ca():
    return CA("Remora Mesh TCP Test CA")


def agent(proxy_factory, workdir, name, *, listener, clusters, mesh=None, limits=None, extra=()):
    port, health, admin = free_port(), free_port(), free_port()
    lines = ["workers: 1", f"admin: 127.0.0.1:{admin}", f"health: 127.0.0.1:{health}"]
    if limits is not None:
        lines.append("limits:")
        lines += [f"  {k}: {v}" for k, v in limits.items()]
    if mesh is not None:
        lines.append("mesh_tls:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in mesh.items()]
    lines += ["listeners:", f"  - name: {name}", f"    address: 127.0.0.1:{port}", "    protocol: tcp"]
    lines += [f"    {ln}" for ln in listener]
    lines.append("clusters:")
    for cname, body in clusters.items():
        lines.append(f"  - name: {cname}")
        lines += [f"    {ln}" for ln in body]
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return proxy_factory(config_path=path, listen_port=port, health_port=health, admin_port=admin, extra=tuple(extra))


def server_agent(proxy_factory, workdir, ca, app_port, name="in", mode=None, allow=None, authorization=None, **kw):
    mesh = {"identity_dir": identity_dir(workdir, name, ca, API)}
    if mode is not None:
        mesh["mode"] = mode
    app = ["protocol: tcp", f'endpoints: ["127.0.0.1:{app_port}"]']
    if allow is not None:
        app.append(f"authorization: [{{name: only-web, action: allow, rules: [{{from: [{{identities: [{json.dumps(allow)}]}}]}}]}}]")
    if authorization is not None:
        app.append(f"authorization: {json.dumps(authorization)}")
    return agent(proxy_factory, workdir, name, listener=["peer: agent", "cluster: app"], clusters={"app": app}, mesh=mesh,
                 **kw)


def client_agent(proxy_factory, workdir, ca, target_port, expected=API, identity=WEB, name="out"):
    peer = ["protocol: tcp", f'endpoints: ["127.0.0.1:{target_port}"]', "peer: agent", f"mesh_identity: {json.dumps(expected)}"]
    return agent(proxy_factory, workdir, name, listener=["cluster: b"], clusters={"b": peer},
                 mesh={"identity_dir": identity_dir(workdir, name, ca, identity)})


def hs(a, direction, result):
    return support.metric(a.metrics(), HS, direction=direction, result=result) or 0


def decisions(a, policy, decision):
    return support.metric(a.metrics(), "remora_authz_decisions_total", policy=policy, decision=decision) or 0


def test_loopback_relay_is_mtls_with_half_close_both_ways(proxy_factory, workdir, ca, servers):
    b = server_agent(proxy_factory, workdir, ca, servers.banner_port, allow=WEB)
    b2 = server_agent(proxy_factory, workdir, ca, servers.half_port, name="in2")
    relay, relay2 = Recorder(b.port), Recorder(b2.port)
    try:
        a = client_agent(proxy_factory, workdir, ca, relay.port)
        a2 = client_agent(proxy_factory, workdir, ca, relay2.port, name="out2")
        # server speaks first; the client shuts down writing and still reads the whole echo
        out = run_client("127.0.0.1", a.port, "echo", 200000)
        assert_echo(out, 200000)
        # the server shuts down first (after its greeting) and still reads what the client sends
        out = run_client("127.0.0.1", a2.port, "server-closes", 300000)
        assert out["greeting"] == "bye-first\n" and out["greeting_end"] == "eof", out
        rec = read_records(servers.half_log, 1)[-1]
        assert rec == {"len": out["sent_len"], "sha": out["sent_sha"]}, (rec, out)
        with relay.lock, relay2.lock:
            assert_tls_hop(bytes(relay.up), bytes(relay.down))
            assert_tls_hop(bytes(relay2.up), bytes(relay2.down))
        for x in (b, b2):
            assert hs(x, "inbound", "success") + hs(x, "inbound", "resumed") >= 1
            assert (support.metric(x.metrics(), "remora_mesh_tls_connections_total", direction="inbound", tls="true") or 0) >= 1
        assert hs(a, "outbound", "success") + hs(a, "outbound", "resumed") >= 1
        assert (support.metric(a.metrics(), "remora_mesh_tls_connections_total", direction="outbound", tls="true") or 0) >= 1
        assert support.metric(a.metrics(), "remora_tcp_bytes_total", listener="out", direction="rx") >= 200000
    finally:
        relay.stop()
        relay2.stop()
    # the rule by SPIFFE ID: another identity of the mesh is authenticated, then refused before any upstream connect
    c = client_agent(proxy_factory, workdir, ca, b.port, identity=OTHER, name="intruder")
    out = run_client("127.0.0.1", c.port, "silent")
    assert out["received"] == "" and out["end"] != "timeout", out
    assert (support.metric(b.metrics(), "remora_tcp_authz_denied_total") or 0) >= 1
    assert OTHER in b.log()
    # the connection decisions are in the HTTP filter's family, with its labels
    assert decisions(b, "only-web", "allow") >= 1 and decisions(b, "only-web", "deny") >= 1
    # a second connection of A resumes its TLS session
    out = run_client("127.0.0.1", client_agent(proxy_factory, workdir, ca, b.port, name="again").port, "echo", 10)
    assert_echo(out, 10)


def test_loopback_authz_decisions_allow_deny_audit(proxy_factory, workdir, ca, servers):
    """Every decision on an opaque connection is counted in remora_authz_decisions_total{policy,decision}, as a
    request's: DENY stops at the matching policy, AUDIT counts what it would deny and lets it through, ALLOW."""
    policies = [
        {"name": "no-other", "action": "deny", "rules": [{"from": [{"identities": [OTHER]}]}]},
        # with `to` conditions an AUDIT rule matches no connection: audit_deny for every caller that gets this far
        {"name": "audit-get", "action": "audit", "rules": [{"to": [{"methods": ["GET"]}]}]},
        {"name": "web-or-api", "action": "allow", "rules": [{"from": [{"identities": [WEB, API]}]}]},
    ]
    b = server_agent(proxy_factory, workdir, ca, servers.banner_port, authorization=policies)
    web = client_agent(proxy_factory, workdir, ca, b.port, name="web")
    other = client_agent(proxy_factory, workdir, ca, b.port, identity=OTHER, name="other")
    for _ in range(2):
        assert_echo(run_client("127.0.0.1", web.port, "echo", 100), 100)
    out = run_client("127.0.0.1", other.port, "silent")
    assert out["received"] == "" and out["end"] != "timeout", out
    # a plaintext caller (PERMISSIVE) has no identity: not denied by `no-other`, audited, then refused by the ALLOW
    out = run_client("127.0.0.1", b.port, "plain-first")
    assert "remora-banner" not in out["received"] and out["end"] != "timeout", out
    got = {(p, d): decisions(b, p, d) for p in ("no-other", "audit-get", "web-or-api") for d in ("allow", "deny", "audit_deny")}
    assert got == {("no-other", "allow"): 0, ("no-other", "deny"): 1, ("no-other", "audit_deny"): 0,
                   ("audit-get", "allow"): 0, ("audit-get", "deny"): 0, ("audit-get", "audit_deny"): 3,
                   ("web-or-api", "allow"): 2, ("web-or-api", "deny"): 1, ("web-or-api", "audit_deny"): 0}, got
    assert support.metric(b.metrics(), "remora_tcp_authz_denied_total") == 2
    log = b.log()
    assert "audit: policy 'audit-get' would deny opaque TCP from" in log and WEB in log, log[-3000:]


def test_loopback_bulk_20mb_each_way(proxy_factory, workdir, ca, servers):
    b = server_agent(proxy_factory, workdir, ca, servers.banner_port)
    a = client_agent(proxy_factory, workdir, ca, b.port)
    size = 20 << 20
    t0 = time.monotonic()
    out = run_client("127.0.0.1", a.port, "echo", size)
    assert_echo(out, size)
    assert time.monotonic() - t0 < 60
    assert support.metric(b.metrics(), "remora_tcp_bytes_total", listener="in", direction="tx") >= size


def test_loopback_wrong_peer_identity_fails_the_connect(proxy_factory, workdir, ca, servers):
    b = server_agent(proxy_factory, workdir, ca, servers.banner_port)
    a = client_agent(proxy_factory, workdir, ca, b.port, expected=OTHER)
    out = run_client("127.0.0.1", a.port, "silent")
    assert out["received"] == "" and out["end"] != "timeout", out
    assert hs(a, "outbound", "peer_identity_mismatch") >= 1
    assert (support.metric(a.metrics(), "remora_tcp_connect_failures_total", listener="out") or 0) >= 1
    log = a.log()
    assert OTHER in log and API in log, log[-2000:]


def test_loopback_strict_refuses_plaintext_permissive_waits(proxy_factory, workdir, ca, servers):
    strict = server_agent(proxy_factory, workdir, ca, servers.banner_port, name="strict", mode="STRICT")
    for mode in ("plain-first", "silent"):
        out = run_client("127.0.0.1", strict.port, mode)
        assert "remora-banner" not in out["received"] and out["end"] != "timeout", (mode, out)
    assert (support.metric(strict.metrics(), "remora_mesh_tls_plaintext_refused_total") or 0) >= 2
    # mesh callers still get through
    a = client_agent(proxy_factory, workdir, ca, strict.port)
    assert_echo(run_client("127.0.0.1", a.port, "echo", 1000), 1000)
    # PERMISSIVE: a server-first plaintext client gets its banner after the bounded wait for a ClientHello
    perm = server_agent(proxy_factory, workdir, ca, servers.banner_port, name="perm")
    out = run_client("127.0.0.1", perm.port, "silent")
    assert out["received"].startswith("220 remora-banner"), out
    assert MESH_WAIT_MS * 0.8 <= out["ms"], out
    out = run_client("127.0.0.1", perm.port, "plain-first")
    assert out["received"].startswith("220 remora-banner") and MARKER.decode() in out["received"], out
    assert support.metric(perm.metrics(), "remora_detect_total", listener="perm", result="timeout") >= 1


def test_loopback_mesh_sniff_timeout_flag_and_file(proxy_factory, workdir, ca, servers):
    """--mesh-sniff-timeout-ms (and limits.mesh_sniff_timeout_ms) bound the wait for a mesh ClientHello: a
    server-first plaintext client gets its banner after that wait instead of 500 ms; mesh callers still get through."""
    fast = server_agent(proxy_factory, workdir, ca, servers.banner_port, name="fast", extra=("--mesh-sniff-timeout-ms", "60"))
    out = run_client("127.0.0.1", fast.port, "silent")
    assert out["received"].startswith("220 remora-banner"), out
    assert 60 * 0.8 <= out["first_ms"] < MESH_WAIT_MS * 0.8, out
    a = client_agent(proxy_factory, workdir, ca, fast.port)
    assert_echo(run_client("127.0.0.1", a.port, "echo", 1000), 1000)
    assert hs(fast, "inbound", "success") + hs(fast, "inbound", "resumed") >= 1
    # the file's key, and the flag over it (defaults < file < environment < flags)
    filed = server_agent(proxy_factory, workdir, ca, servers.banner_port, name="filed", limits={"mesh_sniff_timeout_ms": 1500})
    out = run_client("127.0.0.1", filed.port, "silent")
    assert out["received"].startswith("220 remora-banner") and 1500 * 0.8 <= out["first_ms"], out
    both = server_agent(proxy_factory, workdir, ca, servers.banner_port, name="both", limits={"mesh_sniff_timeout_ms": 1500},
                        extra=("--mesh-sniff-timeout-ms", "60"))
    out = run_client("127.0.0.1", both.port, "silent")
    assert out["received"].startswith("220 remora-banner") and out["first_ms"] < MESH_WAIT_MS * 0.8, out
    dump = json.loads(both.admin("/config_dump")[2])
    assert dump["limits"]["mesh_sniff_timeout_ms"] == 60, dump["limits"]


@pytest.mark.parametrize("value", ["0", "60001", "-5", "5ms", ""])
def test_mesh_sniff_timeout_out_of_range_is_refused(workdir, value):
    argv = [support.AGENT, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:1", "--check-config"]
    r = subprocess.run(argv + ["--mesh-sniff-timeout-ms", value], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"--mesh-sniff-timeout-ms must be a number of milliseconds from 1 to 60000, got '{value}'" in r.stderr, r.stderr
    if value:
        env = dict(os.environ, REMORA_MESH_SNIFF_TIMEOUT_MS=value)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == 2 and "REMORA_MESH_SNIFF_TIMEOUT_MS must be" in r.stderr, (r.returncode, r.stderr)


def test_mesh_sniff_timeout_file_range_names_the_line(workdir):
    path = os.path.join(workdir, "sniff.yaml")
    with open(path, "w") as f:
        f.write("listeners: []\nlimits:\n  detect_timeout_ms: 1000\n  mesh_sniff_timeout_ms: 0\n")
    r = subprocess.run([support.AGENT, "--config", path, "--check-config"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, r
    assert f"{path}:4" in r.stderr and "mesh_sniff_timeout_ms" in r.stderr, r.stderr


# -------------------------------------------------------------------- the network-namespace mesh

SNIFF = os.path.join(TOOLS_DIR, "sniff.py")  # the TCP payloads on the veth, as root inside the namespace

MESH_TLS = """apiVersion: remora.dev/v1
kind: MeshTLS
metadata: {{name: default, namespace: remora-system}}
spec: {{mode: {mode}}}
"""


def ns_docs(b4):
    return f"""
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: db}}
spec:
  protocol: tcp
  addresses: ["10.96.0.30:3306"]
  endpoints: ["{b4}:3306"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: half}}
spec:
  protocol: tcp
  addresses: ["10.96.0.31:4000"]
  endpoints: ["{b4}:4000"]
  serviceAccount: pod-b
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: wrongid}}
spec:
  protocol: tcp
  addresses: ["10.96.0.32:3307"]
  endpoints: ["{b4}:3307"]
  serviceAccount: somebody-else
---
apiVersion: remora.dev/v1
kind: AuthorizationPolicy
metadata: {{name: db-callers}}
spec:
  targetRefs: [{{kind: Service, name: db}}]
  action: ALLOW
  rules:
  - from: [{{identities: ["spiffe://remora.local/ns/default/sa/pod-a"]}}]
"""


@pytest.fixture(scope="module")
def ns_mesh():
    import test_transparent as tt
    if tt._REASON is not None:
        pytest.skip(tt._REASON)
    import test_transparent_hop as hop
    m = hop.HopMesh(tag="t")
    m.agent_bin, m.init_bin = tt.AGENT, tt.INIT
    problems = []
    try:
        m.up()
        b4 = tt.B4
        p, _ = m.spawn(m.b, "banner", [PY, BANNER, f"{b4}:3306", f"{b4}:3307"])
        m.wait_for("banner", p, r"ready")
        m.half_log = os.path.join(m.tmp, "half.jsonl")
        p, _ = m.spawn(m.b, "half", [PY, "-c", HALFCLOSE_SERVER, b4, "4000", m.half_log])
        m.wait_for("half", p, r"halfclose ready")
        m.start()
        path = os.path.join(m.tmp, "tcp.yaml")
        with open(path, "w") as f:
            f.write(ns_docs(b4))
        r = subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "apply", "-f", path, "--wait", "--timeout", "15"],
                           capture_output=True, text=True, timeout=30, env=m.ctl_env(f"{tt.A4}:15010"))
        assert r.returncode == 0, (r.stdout, r.stderr)
        yield m
    finally:
        for name in ("agent-pod-a", "agent-pod-b"):
            try:
                print(f"--- {name}\n" + m.log(name)[-4000:])
            except OSError:
                pass
        problems = m.down()
    assert not problems, "\n".join(problems)


def captured(path):
    data = open(path, "rb").read()
    up, down, i = bytearray(), bytearray(), 0
    while i + 8 <= len(data):
        sport, dport, n = struct.unpack("!HHI", data[i:i + 8])
        (up if dport in (3306, 4000) else down).extend(data[i + 8:i + 8 + n])
        i += 8 + n
    return bytes(up), bytes(down)


def test_namespace_tcp_service_is_mtls_with_half_close_both_ways(ns_mesh):
    m = ns_mesh
    cap = os.path.join(m.tmp, "tcp.cap")
    p, _ = m.spawn(m.b, "sniff", [PY, SNIFF, "rmt0", cap, "6", "3306,4000"])
    m.wait_for("sniff", p, r"sniffing")
    hs_before = m.metric(m.b, HS, direction="inbound", result="success") + m.metric(m.b, HS, direction="inbound", result="resumed")
    out = run_client("10.96.0.30", 3306, "echo", 100000, ns=m.a)
    assert_echo(out, 100000)
    assert out["banner_ms"] < 2000, out  # server-first through the mesh: no wait, the caller's ClientHello comes first
    out = run_client("10.96.0.31", 4000, "server-closes", 200000, ns=m.a)
    assert out["greeting"] == "bye-first\n" and out["greeting_end"] == "eof", out
    rec = read_records(m.half_log, 1)[-1]
    assert rec == {"len": out["sent_len"], "sha": out["sent_sha"]}, (rec, out)
    p.wait(timeout=30)
    up, down = captured(cap)
    assert up and down, "nothing captured between the pods"
    assert_tls_hop(up, down)
    assert m.metric(m.b, HS, direction="inbound", result="success") + \
        m.metric(m.b, HS, direction="inbound", result="resumed") >= hs_before + 2
    assert m.metric(m.b, "remora_mesh_tls_connections_total", direction="inbound", tls="true") >= 2
    assert m.metric(m.a, "remora_mesh_tls_connections_total", direction="outbound", tls="true") >= 2
    # B's AuthorizationPolicy on db allows pod-a by its SPIFFE ID (it would refuse a caller without one)
    assert m.metric(m.b, "remora_tcp_authz_denied_total") == 0
    assert "opaque TCP over mesh mTLS from spiffe://remora.local/ns/default/sa/pod-a" in m.log("agent-pod-b")


def test_namespace_bulk_20mb_each_way(ns_mesh):
    size = 20 << 20
    out = run_client("10.96.0.30", 3306, "echo", size, ns=ns_mesh.a)
    assert_echo(out, size)


def test_namespace_wrong_peer_identity_fails_the_connect(ns_mesh):
    m = ns_mesh
    before = m.metric(m.a, HS, direction="outbound", result="peer_identity_mismatch")
    out = run_client("10.96.0.32", 3307, "silent", ns=m.a)
    assert out["received"] == "" and out["end"] != "timeout", out
    assert m.metric(m.a, HS, direction="outbound", result="peer_identity_mismatch") == before + 1
    assert "sa/somebody-else" in m.log("agent-pod-a")


def test_namespace_strict_refuses_plaintext_opaque(ns_mesh):
    """A non-mesh client (A's proxy UID is not intercepted) to B's endpoint: PERMISSIVE relays it after the wait
    (the authorization policy of db refuses a caller without identity, so `half` is used), STRICT refuses it."""
    from test_transparent import A4, B4, PROXY_UID
    m = ns_mesh
    env = m.ctl_env(f"{A4}:15010")
    out = run_client(B4, 4000, "silent", ns=m.a, uid=PROXY_UID)
    assert out["received"] == "bye-first\n", out
    assert out["ms"] >= MESH_WAIT_MS * 0.8, out
    # and the db Service's ALLOW rule by SPIFFE ID refuses the plaintext caller
    denied = m.metric(m.b, "remora_tcp_authz_denied_total")
    out = run_client(B4, 3306, "plain-first", ns=m.a, uid=PROXY_UID)
    assert "remora-banner" not in out["received"], out
    assert m.metric(m.b, "remora_tcp_authz_denied_total") == denied + 1
    path = os.path.join(m.tmp, "meshtls.yaml")
    with open(path, "w") as f:
        f.write(MESH_TLS.format(mode="STRICT"))
    r = subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "apply", "-f", path, "--wait", "--timeout", "15"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    try:
        refused = m.metric(m.b, "remora_mesh_tls_plaintext_refused_total")
        for mode in ("plain-first", "silent"):
            out = run_client(B4, 4000, mode, ns=m.a, uid=PROXY_UID)
            assert "bye-first" not in out["received"] and out["end"] != "timeout", (mode, out)
        assert m.metric(m.b, "remora_mesh_tls_plaintext_refused_total") == refused + 2
        # meshed opaque TCP still flows
        assert_echo(run_client("10.96.0.30", 3306, "echo", 1000, ns=m.a), 1000)
    finally:
        subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "delete", "meshtls", "default", "-n", "remora-system"],
                       capture_output=True, text=True, timeout=30, env=env)
