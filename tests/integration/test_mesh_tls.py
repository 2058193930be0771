"""Mesh mTLS between agents (docs/mesh-tls.md), with real agents on loopback `peer: agent` hops.

Identities are provisioned as files (`mesh_tls.identity_dir`: identity.key, identity.crt,
trust-bundle.pem, the layout of the agent's --state-dir) made here with python3-cryptography from a
throw-away CA, so that certificates for another identity, from another CA or expired can be made on
purpose. Topology:

    curl -> agent A (cluster `peer: agent`, `mesh_identity`) -> [recording TCP relay] -> agent B
         (listener `peer: agent`) -> h1 origin

Checked: the hop's bytes are TLS (no plaintext HTTP in either direction) with the mesh ALPN id; B sees
A's SPIFFE ID (an authorization rule by identity allows A and denies another agent; the access log's
peer_identity); a peer presenting another identity, a certificate from another CA, or an expired
certificate is refused (connect failure naming the IDs, counted); STRICT refuses plaintext and
PERMISSIVE accepts it; DISABLE sends plaintext; an agent without an identity refuses mesh mTLS; a
second connection resumes the TLS session (counted); application TLS to a `peer: agent` listener with
its own certificate is still the application's (ALPN h2/http1.1); a reloaded identity is used by new
connections while the pooled one keeps its certificate; bad bootstrap keys name FILE:LINE.

In the network-namespace mesh of test_transparent_hop.py (control plane, identities from bootstrap
tokens, transparent agents): the bytes between the pods (captured with an AF_PACKET socket in B) are
TLS with the mesh ALPN id and no plaintext HTTP; B enforces an AuthorizationPolicy by A's SPIFFE ID;
a MeshTLS STRICT applied with remoractl makes B refuse A's plaintext while meshed traffic flows.
"""

import datetime
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import support
from procutil import TOOLS_DIR, free_port, wait_port

pytestmark = pytest.mark.agent_only("mesh mTLS is remora-agent's")

crypto = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TD = "remora.local"
WEB = f"spiffe://{TD}/ns/default/sa/web"
API = f"spiffe://{TD}/ns/default/sa/api"
OTHER = f"spiffe://{TD}/ns/default/sa/other"
HS = "remora_mesh_tls_handshakes_total"


# ------------------------------------------------------------------------------------- certificates

class CA:
    def __init__(self, cn):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=2)).not_valid_after(now + datetime.timedelta(days=3))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, spiffe_id, *, expired=False):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        if expired:
            nb, na = now - datetime.timedelta(days=1), now - datetime.timedelta(hours=1)
        else:
            nb, na = now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=24)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(nb).not_valid_after(na)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return key, cert


def identity_dir(workdir, name, ca, spiffe_id, *, bundle=None):
    """Writes an identity directory (the --state-dir layout) and returns its path."""
    d = os.path.join(workdir, f"id-{name}")
    os.makedirs(d, exist_ok=True)
    key, cert = ca.leaf(spiffe_id)
    with open(os.path.join(d, "identity.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(d, "identity.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(d, "trust-bundle.pem"), "wb") as f:
        f.write(bundle if bundle is not None else ca.pem())
    for n in ("identity.key", "identity.crt", "trust-bundle.pem"):
        os.chmod(os.path.join(d, n), 0o600)
    return d


# -------------------------------------------------------------------------------------- the relay

class RecordingRelay:
    """A TCP relay that keeps every byte it passes, per direction (client->server, server->client)."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.up = bytearray()
        self.down = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(c, s, self.up), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, self.down), daemon=True).start()

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
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopped = True
        self.sock.close()


# ------------------------------------------------------------------------------------------ agents

def write_config(workdir, name, *, port, health, admin, lines_extra=(), cluster, listener_peer=False, mesh=None,
                 authz_identity=None, access_log=None, listener_tls=None):
    lines = ["workers: 1", f"admin: 127.0.0.1:{admin}", f"health: 127.0.0.1:{health}"]
    if mesh is not None:
        lines.append("mesh_tls:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in mesh.items()]
    if access_log is not None:
        lines += ["telemetry:", "  access_log:", f"    path: {json.dumps(access_log)}"]
    lines += ["listeners:", f"  - name: {name}", f"    address: 127.0.0.1:{port}"]
    if listener_peer:
        lines.append("    peer: agent")
    if listener_tls is not None:
        lines += ["    tls:", f"      certificate: {listener_tls['cert']}", f"      key: {listener_tls['key']}"]
    lines += ["    routes:", "      - name: all", "        cluster: app"]
    if authz_identity is not None:
        lines += ["        authorization:", "          - name: only-web", "            action: allow",
                  "            rules:", f"              - from: [{{identities: [{json.dumps(authz_identity)}]}}]"]
    lines += ["clusters:", "  - name: app"] + [f"    {ln}" for ln in cluster]
    lines += list(lines_extra)
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_agent(proxy_factory, workdir, name, **kw):
    port, health, admin = free_port(), free_port(), free_port()
    path = write_config(workdir, name, port=port, health=health, admin=admin, **kw)
    return proxy_factory(config_path=path, listen_port=port, health_port=health, admin_port=admin)


def server_agent(proxy_factory, workdir, origin, name="inbound", **kw):
    """B: a `peer: agent` listener to the h1 origin."""
    return start_agent(proxy_factory, workdir, name, listener_peer=True,
                       cluster=["protocol: http1", f'endpoints: ["127.0.0.1:{origin.port}"]'], **kw)


def client_agent(proxy_factory, workdir, target_port, expected, name="outbound", protocol="h2", cluster_extra=(), **kw):
    """A: a plain listener whose cluster is the peer agent at target_port, expecting `expected`."""
    cluster = [f"protocol: {protocol}", f'endpoints: ["127.0.0.1:{target_port}"]', "peer: agent"] + list(cluster_extra)
    if expected is not None:
        cluster.append(f"mesh_identity: {json.dumps(expected)}")
    return start_agent(proxy_factory, workdir, name, cluster=cluster, **kw)


def hs(agent, direction, result):
    return support.metric(agent.metrics(), HS, direction=direction, result=result) or 0


def get(agent, path="/", **kw):
    return support.http_get("127.0.0.1", agent.port, path, **kw)


@pytest.fixture
def ca():
    return CA("Remora Mesh Test CA")


# ------------------------------------------------------------------------------------------- tests

def test_hop_is_mtls_and_inbound_sees_caller_identity(proxy_factory, workdir, h1_origin, ca):
    log = os.path.join(workdir, "b-access.log")
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)},
                     authz_identity=WEB, access_log=log)
    relay = RecordingRelay(b.port)
    try:
        a = client_agent(proxy_factory, workdir, relay.port, API,
                         mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
        for i in range(3):
            status, _, body = get(a, f"/secret-path-{i}?q=plaintext-marker")
            assert status == 200, body
            assert json.loads(body)["target"] == f"/secret-path-{i}?q=plaintext-marker"
        with relay.lock:
            up, down = bytes(relay.up), bytes(relay.down)
        # TLS records both ways, the mesh ALPN id in the ClientHello, and nothing of the requests in clear
        assert up[:2] == b"\x16\x03" and down[:2] == b"\x16\x03", (up[:16], down[:16])
        assert b"remora.mesh/h2" in up
        for needle in (b"secret-path", b"plaintext-marker", b"PRI * HTTP/2.0", b"HTTP/1.1", b"content-type"):
            assert needle not in up and needle not in down, needle
        assert hs(a, "outbound", "success") + hs(a, "outbound", "resumed") >= 1
        assert hs(b, "inbound", "success") + hs(b, "inbound", "resumed") >= 1
        assert (support.metric(b.metrics(), "remora_mesh_tls_connections_total", direction="inbound", tls="true") or 0) >= 1
        # B's access log names A's identity
        deadline = time.monotonic() + 10
        lines = []
        while time.monotonic() < deadline:
            if os.path.exists(log):
                lines = [json.loads(x) for x in open(log).read().splitlines() if x.strip()]
                if len(lines) >= 3:
                    break
            time.sleep(0.1)
        assert lines and all(x["peer_identity"] == WEB for x in lines), lines
        # and its golden metrics count them under the caller's identity (client_id), nothing without one
        assert support.metric(b.metrics(), "remora_requests_total", client_id=WEB) == 3
        assert (support.metric(b.metrics(), "remora_responses_total", client_id=WEB, status_code="200") or 0) == 3
        assert support.metric(b.metrics(), "remora_requests_total") == 3  # no series without the identity
    finally:
        relay.stop()

    # another agent of the same mesh but another identity is authenticated, then denied by the ALLOW rule
    c = client_agent(proxy_factory, workdir, b.port, API, name="intruder",
                     mesh={"identity_dir": identity_dir(workdir, "c", ca, OTHER)})
    status, _, _ = get(c, "/x")
    assert status == 403
    # and a plaintext caller (PERMISSIVE) has no identity: denied too
    status, _, _ = get(b, "/x")
    assert status == 403


def test_peer_with_another_identity_is_refused(proxy_factory, workdir, h1_origin, ca):
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, OTHER)})
    a = client_agent(proxy_factory, workdir, b.port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    status, _, body = get(a, "/")
    assert status in (502, 503), (status, body)
    assert hs(a, "outbound", "peer_identity_mismatch") >= 1
    log = a.log()
    assert OTHER in log and API in log, log[-2000:]


def test_peer_from_another_ca_is_refused(proxy_factory, workdir, h1_origin, ca):
    other = CA("Some Other CA")
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", other, API)})
    a = client_agent(proxy_factory, workdir, b.port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    status, _, body = get(a, "/")
    assert status in (502, 503), (status, body)
    assert hs(a, "outbound", "untrusted") >= 1
    assert "not trusted" in a.log()


def test_expired_peer_certificate_is_refused(proxy_factory, workdir, ca):
    # the agent will not serve an expired identity, so the expired peer is openssl s_server with the mesh ALPN id
    key, cert = ca.leaf(API, expired=True)
    kp, cp = os.path.join(workdir, "exp.key"), os.path.join(workdir, "exp.crt")
    with open(kp, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cp, "-key", kp,
                            "-tls1_3", "-alpn", "remora.mesh/h2", "-quiet"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 10)
        a = client_agent(proxy_factory, workdir, port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
        status, _, body = get(a, "/")
        assert status in (502, 503), (status, body)
        assert hs(a, "outbound", "untrusted") >= 1
        assert "expired" in a.log()
    finally:
        srv.kill()
        srv.wait(timeout=10)


def test_strict_refuses_plaintext_permissive_accepts(proxy_factory, workdir, h1_origin, ca):
    bdir = identity_dir(workdir, "b", ca, API)
    strict = server_agent(proxy_factory, workdir, h1_origin, name="strict", mesh={"mode": "STRICT", "identity_dir": bdir})
    with pytest.raises((ConnectionError, OSError, http_client_errors())):
        get(strict, "/plain")
    assert (support.metric(strict.metrics(), "remora_mesh_tls_plaintext_refused_total") or 0) >= 1
    # mesh mTLS is accepted in STRICT
    a = client_agent(proxy_factory, workdir, strict.port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    status, _, _ = get(a, "/via-mesh")
    assert status == 200
    permissive = server_agent(proxy_factory, workdir, h1_origin, name="permissive", mesh={"identity_dir": bdir})
    status, _, _ = get(permissive, "/plain")
    assert status == 200
    assert (support.metric(permissive.metrics(), "remora_mesh_tls_plaintext_refused_total") or 0) == 0
    # the mode is in /config_dump
    dump = json.loads(strict.admin("/config_dump")[2])
    assert dump["mesh_tls"]["mode"] == "STRICT"


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_disable_sends_plaintext(proxy_factory, workdir, h1_origin, ca):
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)})
    relay = RecordingRelay(b.port)
    try:
        a = client_agent(proxy_factory, workdir, relay.port, API,
                         mesh={"mode": "DISABLE", "identity_dir": identity_dir(workdir, "a", ca, WEB)})
        status, _, _ = get(a, "/in-clear")
        assert status == 200
        with relay.lock:
            assert bytes(relay.up).startswith(b"PRI * HTTP/2.0")
    finally:
        relay.stop()


def test_agent_without_identity_refuses_mesh_mtls(proxy_factory, workdir, h1_origin, ca):
    b = server_agent(proxy_factory, workdir, h1_origin)  # no identity
    a = client_agent(proxy_factory, workdir, b.port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    status, _, _ = get(a, "/")
    assert status in (502, 503)
    assert hs(b, "inbound", "no_identity") >= 1
    assert "no identity" in b.log()


def test_session_resumption(proxy_factory, workdir, h1_origin, ca):
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)})
    # the hop's pooled connection is closed after 100 ms idle: a new mesh connection per request
    a = client_agent(proxy_factory, workdir, b.port, API, cluster_extra=["pool_idle_timeout_ms: 100"],
                     mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    for i in range(4):
        status, _, _ = get(a, f"/r{i}")
        assert status == 200
        time.sleep(0.4)
    assert hs(a, "outbound", "success") >= 1
    assert hs(a, "outbound", "resumed") >= 1, a.metrics()
    assert hs(b, "inbound", "resumed") >= 1


def test_application_tls_is_not_terminated_as_mesh(proxy_factory, workdir, h1_origin, ca, certs):
    # a `peer: agent` listener with its own certificate: a client offering h2/http1.1 gets the application TLS
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)},
                     listener_tls=certs)
    r = support.curl(workdir, "--cacert", certs["ca"], f"https://localhost:{b.port}/app-tls")
    assert r.status == 200, r
    assert hs(b, "inbound", "success") == 0
    # a mesh ClientHello on the same port is the mesh's
    a = client_agent(proxy_factory, workdir, b.port, API, mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    status, _, _ = get(a, "/mesh")
    assert status == 200
    assert hs(b, "inbound", "success") >= 1


def test_bad_bootstrap_keys_name_the_line(workdir):
    agent = os.environ.get("REMORA_AGENT", "build/agent/remora-agent")
    cases = [("mesh_tls:\n  mode: LOOSE\n", "mesh_tls.mode 'LOOSE' must be STRICT, PERMISSIVE or DISABLE", 2),
             ("clusters:\n  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n    peer: agent\n    mesh_identity: api\n",
              "must be a SPIFFE ID", 5),
             ("clusters:\n  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n    mesh_identity: spiffe://x/ns/a/sa/b\n",
              "needs 'peer: agent'", 4)]
    for i, (text, message, line) in enumerate(cases):
        path = os.path.join(workdir, f"bad{i}.yaml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([agent, "--config", path, "--check-config"], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        assert f"{path}:{line}:" in r.stderr and message in r.stderr, r.stderr


# ------------------------------------------------------------------- the network-namespace mesh

SNIFF = os.path.join(TOOLS_DIR, "sniff.py")  # the TCP payloads on the veth, as root inside the namespace

AUTHZ = """apiVersion: remora.dev/v1
kind: AuthorizationPolicy
metadata: {{name: web-callers}}
spec:
  targetRefs: [{{kind: Service, name: web}}]
  action: ALLOW
  rules:
  - from: [{{identities: ["{identity}"]}}]
"""


@pytest.fixture(scope="module")
def ns_mesh():
    """test_transparent_hop's two pods as network namespaces; both agents hold control-plane identities
    (pod-a, pod-b) and the Services say `serviceAccount: pod-b`."""
    import test_transparent as tt
    if tt._REASON is not None:
        pytest.skip(tt._REASON)
    import test_transparent_hop as hop
    m = hop.HopMesh(tag="m")
    m.agent_bin, m.init_bin = tt.AGENT, tt.INIT
    problems = []
    try:
        m.up()
        m.start()
        yield m
    finally:
        for name in ("agent-pod-a", "agent-pod-b"):
            try:
                print(f"--- {name}\n" + m.log(name)[-4000:])
            except OSError:
                pass
        problems = m.down()
    assert not problems, "\n".join(problems)


def test_namespace_mesh_hop_is_mtls_with_the_callers_identity(ns_mesh):
    from test_transparent import A4, PY, curl
    m = ns_mesh
    cap = os.path.join(m.tmp, "hop.cap")
    p, _ = m.spawn(m.b, "sniff", [PY, SNIFF, "rmt0", cap, "4"])
    m.wait_for("sniff", p, r"sniffing")
    code, _, body = curl(m, "http://web.default.svc/mtls-marker-path?k=plaintext-marker")
    assert code == 200, body
    p.wait(timeout=20)
    data = open(cap, "rb").read()
    hop, i = bytearray(), 0
    while i + 8 <= len(data):
        sport, dport, n = struct.unpack("!HHI", data[i:i + 8])
        if 8080 in (sport, dport):
            hop += data[i + 8:i + 8 + n]
        i += 8 + n
    assert hop, "no bytes to or from the web endpoint were captured"
    assert b"\x16\x03" in hop and b"remora.mesh/h2" in hop
    for needle in (b"mtls-marker-path", b"plaintext-marker", b"PRI * HTTP/2.0", b"HTTP/1.1"):
        assert needle not in hop, needle
    assert m.metric(m.b, HS, direction="inbound", result="success") + \
        m.metric(m.b, HS, direction="inbound", result="resumed") >= 1
    assert m.metric(m.a, HS, direction="outbound", result="success") + \
        m.metric(m.a, HS, direction="outbound", result="resumed") >= 1
    # the serving agent counts the request under the caller's SPIFFE ID; the calling agent's outbound side has none
    caller = "spiffe://remora.local/ns/default/sa/pod-a"
    deadline = time.monotonic() + 5
    while m.metric(m.b, "remora_requests_total", direction="inbound", client_id=caller) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.metric(m.b, "remora_requests_total", direction="inbound", client_id=caller) >= 1
    assert m.metric(m.a, "remora_requests_total", direction="outbound", client_id=caller) == 0

    # B enforces an AuthorizationPolicy by A's SPIFFE ID: allowed for pod-a, denied for anyone else
    env = m.ctl_env(f"{A4}:15010")
    for identity, want in (("spiffe://remora.local/ns/default/sa/pod-a", 200),
                           ("spiffe://remora.local/ns/default/sa/someone-else", 403)):
        path = os.path.join(m.tmp, "authz.yaml")
        with open(path, "w") as f:
            f.write(AUTHZ.format(identity=identity))
        r = subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "apply", "-f", path, "--wait", "--timeout", "15"],
                           capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)
        code, _, body = curl(m, "http://web.default.svc/authz")
        assert code == want, (identity, code, body)
    subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "delete", "authorizationpolicy", "web-callers"],
                   capture_output=True, text=True, timeout=30, env=env)


MESH_TLS = """apiVersion: remora.dev/v1
kind: MeshTLS
metadata: {{name: default, namespace: remora-system}}
spec: {{mode: {mode}}}
"""


def test_namespace_mesh_strict_from_the_control_plane(ns_mesh):
    """MeshTLS STRICT applied with remoractl: B refuses A's plaintext to its endpoint (not a Service address,
    so A's agent passes it through as sent) while meshed traffic still flows; `get meshtls` lists it; deleting
    it restores PERMISSIVE."""
    from test_transparent import A4, B4, curl, run
    m = ns_mesh
    env = m.ctl_env(f"{A4}:15010")

    def ctl(*args):
        r = subprocess.run(["ip", "netns", "exec", m.a, m.ctl, *args], capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def direct():
        return run(["curl", "-sS", "--max-time", "5", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                    f"http://{B4}:8080/direct"], ns=m.a)

    assert direct().stdout == "200"
    path = os.path.join(m.tmp, "meshtls.yaml")
    with open(path, "w") as f:
        f.write(MESH_TLS.format(mode="STRICT"))
    ctl("apply", "-f", path, "--wait", "--timeout", "15")
    assert "STRICT" in ctl("get", "meshtls", "-A")
    dump = run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/config_dump"], ns=m.b).stdout
    assert json.loads(dump)["mesh_tls"]["mode"] == "STRICT"
    refused = m.metric(m.b, "remora_mesh_tls_plaintext_refused_total")
    r = direct()
    assert r.stdout != "200", (r.stdout, r.stderr)
    assert m.metric(m.b, "remora_mesh_tls_plaintext_refused_total") > refused
    code, _, body = curl(m, "http://web.default.svc/strict-but-meshed")
    assert code == 200, body
    ctl("delete", "meshtls", "default", "-n", "remora-system")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and direct().stdout != "200":
        time.sleep(0.2)
    assert direct().stdout == "200"


def test_identity_rotation_new_connections_use_the_new_certificate(proxy_factory, workdir, h1_origin, ca):
    """A's identity files are replaced (a certificate from a CA that B does not trust) and A reloads: the pooled
    mesh connection made with the old certificate keeps serving; a new connection presents the new one and B
    refuses it."""
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)})
    adir = identity_dir(workdir, "a", ca, WEB)
    a = client_agent(proxy_factory, workdir, b.port, API, cluster_extra=["pool_idle_timeout_ms: 3000"],
                     mesh={"identity_dir": adir})
    assert get(a, "/before")[0] == 200
    other = CA("A CA that B does not trust")
    identity_dir(workdir, "a", other, WEB, bundle=other.pem() + ca.pem())  # rewrites A's files in place
    os.kill(a.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "reloaded" not in a.log():
        time.sleep(0.05)
    assert a.log().count("serving " + WEB) == 2, a.log()[-2000:]
    assert get(a, "/pooled")[0] == 200  # the connection made with the old certificate
    untrusted = hs(b, "inbound", "untrusted")
    time.sleep(3.5)  # the pooled connection idles out; the next one is new
    status, _, _ = get(a, "/fresh")
    assert status in (502, 503)
    assert hs(b, "inbound", "untrusted") > untrusted


def test_health_checks_of_a_strict_peer_use_mesh_mtls(proxy_factory, workdir, h1_origin, ca):
    b = server_agent(proxy_factory, workdir, h1_origin,
                     mesh={"mode": "STRICT", "identity_dir": identity_dir(workdir, "b", ca, API)})
    a = client_agent(proxy_factory, workdir, b.port, API, protocol="http1",
                     cluster_extra=["health_check: {http: {path: /healthz}, interval_ms: 200, timeout_ms: 150}"],
                     mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    deadline = time.monotonic() + 10
    ok = 0
    while time.monotonic() < deadline and ok < 3:
        ok = support.metric(a.metrics(), "remora_upstream_health_checks_total", cluster="app", result="success") or 0
        time.sleep(0.1)
    assert ok >= 3, a.metrics()
    assert (support.metric(a.metrics(), "remora_upstream_health_checks_total", cluster="app",
                           result="connect_failure") or 0) == 0
    assert (support.metric(b.metrics(), "remora_mesh_tls_plaintext_refused_total") or 0) == 0
    assert get(a, "/after-checks")[0] == 200


WEB_ENDPOINT_SA = """apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec:
  protocol: http1
  addresses: ["10.96.0.10:80"]
  endpoints: [{{address: "{B4}:8080", serviceAccount: {endpoint_sa}}}]
  serviceAccount: {service_sa}
"""


def test_namespace_mesh_endpoint_identity_overrides_the_services(ns_mesh):
    """An endpoint with its own `serviceAccount` (a Kubernetes Service whose pods run as several service
    accounts) is expected to present that identity, not the Service's: B's agent (pod-b) is accepted when its
    endpoint says pod-b although the Service says another account, and refused when the endpoint says
    another one although the Service says pod-b."""
    from test_transparent import A4, B4, curl, run
    m = ns_mesh
    env = m.ctl_env(f"{A4}:15010")
    path = os.path.join(m.tmp, "web-endpoint-sa.yaml")

    def apply(endpoint_sa, service_sa):
        with open(path, "w") as f:
            f.write(WEB_ENDPOINT_SA.format(B4=B4, endpoint_sa=endpoint_sa, service_sa=service_sa))
        r = subprocess.run(["ip", "netns", "exec", m.a, m.ctl, "apply", "-f", path, "--wait", "--timeout", "15"],
                           capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)

    try:
        apply("pod-b", "someone-else")
        dump = json.loads(run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/config_dump"], ns=m.a).stdout)
        web = [c for c in dump["clusters"] if c["name"] == "web.default"][0]
        assert web["mesh_identity"] == "/ns/default/sa/someone-else", web
        assert web["endpoints"] == [{"address": f"{B4}:8080", "mesh_identity": "/ns/default/sa/pod-b"}], web
        code, _, body = curl(m, "http://web.default.svc/endpoint-identity")
        assert code == 200, body

        mismatches = m.metric(m.a, HS, direction="outbound", result="peer_identity_mismatch")
        apply("not-pod-b", "pod-b")
        code, _, body = curl(m, "http://web.default.svc/endpoint-identity-wrong")
        assert code == 503, (code, body)
        assert m.metric(m.a, HS, direction="outbound", result="peer_identity_mismatch") > mismatches
    finally:
        apply("pod-b", "pod-b")
    code, _, body = curl(m, "http://web.default.svc/endpoint-identity-restored")
    assert code == 200, body
