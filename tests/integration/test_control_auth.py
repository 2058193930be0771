"""The control plane's own doors (issue 10 section 4, docs/identity.md "The control plane's own doors"):
remora-control serves TLS with a certificate from its own CA; agents and remoractl verify it against
the trust anchor; the discovery and identity APIs want a workload identity (a bootstrap token or a
workload certificate), the admin API the admin credential; refusals are UNAUTHENTICATED or
PERMISSION_DENIED with a clear message, counted in `remoractl identity` and logged once per caller.

Real processes on loopback: remora-control, remoractl, remora-agent, and python3-grpcio clients with
and without TLS credentials and metadata."""

import os
import queue
import re
import stat
import subprocess
import time

import grpc
import pytest

from control_support import (CONTROL_BIN, ControlPlane, agents, control, control_factory, ctl, pb, service_doc,  # noqa: F401
                             status_json, throwaway_ca, wait_until, write)
from procutil import Proc, free_port, wait_port
from support import AGENT, http_get

pytestmark = pytest.mark.agent_only


def _stream(channel, node_id, timeout=5.0):
    """Opens StreamSnapshots with Hello{node_id}; returns ("snapshot", version) or (StatusCode, details)."""
    d = pb().discovery
    q = queue.Queue()
    q.put(d.AgentMessage(hello=d.Hello(node_id=node_id)))

    def reqs():
        while True:
            m = q.get()
            if m is None:
                return
            yield m
    call = channel.stream_stream("/remora.v1.Discovery/StreamSnapshots", request_serializer=d.AgentMessage.SerializeToString,
                                 response_deserializer=d.Snapshot.FromString)(reqs(), timeout=timeout)
    try:
        for snap in call:
            return ("snapshot", snap.version)
        return (grpc.StatusCode.OK, "")
    except grpc.RpcError as e:
        return (e.code(), e.details())
    finally:
        q.put(None)
        call.cancel()


def _unary(channel, method, req, resp_type, timeout=5.0):
    m = channel.unary_unary(method, request_serializer=type(req).SerializeToString, response_deserializer=resp_type.FromString)
    return m(req, timeout=timeout)


def _code(fn):
    try:
        fn()
        return (grpc.StatusCode.OK, "")
    except grpc.RpcError as e:
        return (e.code(), e.details())


def _status(channel):
    p = pb()
    return _unary(channel, "/remora.v1.Admin/Status", p.admin.StatusRequest(), p.admin.StatusResponse)


def _workload_cert(cp, workdir, node_id, sa):
    """A workload certificate from Certify (key made with openssl): (chain PEM bytes, key PEM bytes, token)."""
    ipb = pb().identity
    r = cp.ctl("token", "create", "--namespace", "default", "--service-account", sa)
    assert r.rc == 0, r
    tok = r.out.strip()
    key, csr = os.path.join(workdir, sa + ".key"), os.path.join(workdir, sa + ".csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    key, "-subj", "/CN=x", "-outform", "DER", "-out", csr], check=True, capture_output=True, timeout=30)
    with cp.grpc_channel() as ch:
        resp = _unary(ch, "/remora.v1.Identity/Certify", ipb.CertifyRequest(csr_der=open(csr, "rb").read(), token=tok,
                                                                            node_id=node_id), ipb.CertifyResponse)
    pem = b""
    for der in resp.cert_chain_der:
        pem += subprocess.run(["openssl", "x509", "-inform", "DER"], input=der, capture_output=True, check=True,
                              timeout=30).stdout
    return pem, open(key, "rb").read(), tok


def _refusals(cp):
    r = cp.ctl("identity")
    assert r.rc == 0, r
    line = [ln for ln in r.out.splitlines() if ln.startswith("auth refusals:")][0]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_admin_credential_file_and_remoractl(control, tmp_path):
    cp = control
    # created at first start: 0600, "rma1." and 64 hex digits, distinct from a workload token
    path = cp.admin_token_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert re.fullmatch(r"rma1\.[0-9a-f]{64}\n", open(path).read())
    # remoractl with the credential (environment, or flags before or after the command)
    assert cp.ctl("status").rc == 0
    r = ctl("status", control=cp.addr)
    assert r.rc == 2 and r.err.count("\n") == 1 and "no trust anchor" in r.err and "--ca FILE" in r.err, r
    r = ctl("status", control=cp.addr, env={"REMORA_CA_FILE": cp.trust_anchor})
    assert r.rc == 2 and r.err.count("\n") == 1 and "no admin credential" in r.err and "--admin-token FILE" in r.err, r
    r = ctl("--ca", cp.trust_anchor, "status", "--admin-token", path, control=cp.addr)
    assert r.rc == 0 and "version 0" in r.out, r
    r = ctl("status", f"--ca={cp.trust_anchor}", f"--admin-token={path}", control=cp.addr)
    assert r.rc == 0, r
    # a wrong admin credential and a workload token: refused with one clear line
    wrong = write(str(tmp_path), "wrong.token", "rma1." + "1" * 64 + "\n")
    r = cp.ctl("status", env={"REMORA_ADMIN_TOKEN_FILE": wrong})
    assert r.rc == 1 and r.err.count("\n") == 1 and "UNAUTHENTICATED" in r.err and "not this control plane's" in r.err, r
    workload = cp.token(node_id="cli")
    r = cp.ctl("apply", "-f", "-", stdin=service_doc("echo"), env={"REMORA_ADMIN_TOKEN_FILE": workload})
    assert r.rc == 1 and r.err.count("\n") == 1 and "PERMISSION_DENIED" in r.err and "bootstrap token cannot be used" in r.err, r
    r = cp.ctl("token", "create", "--namespace", "default", "--service-account", "x",
               env={"REMORA_ADMIN_TOKEN_FILE": workload})
    assert r.rc == 1 and "PERMISSION_DENIED" in r.err, r
    assert cp.ctl("get", "svc").out.strip() == "", "nothing was applied"
    r = cp.ctl("status", env={"REMORA_ADMIN_TOKEN_FILE": os.path.join(str(tmp_path), "missing")})
    assert r.rc == 2 and "missing" in r.err, r
    counts = _refusals(cp)
    assert counts["admin_unauthenticated"] >= 1 and counts["admin_permission_denied"] >= 2, counts
    # logged once per caller and status, however often refused
    assert cp.log().count("admin API: refused ipv4:127.0.0.1 with PERMISSION_DENIED") == 1, cp.log()
    # the help names the flags
    assert all(f in ctl("--help").out for f in ("--admin-token FILE", "--ca FILE", "REMORA_ADMIN_TOKEN_FILE",
                                                "REMORA_CA_FILE", "--insecure"))


def test_admin_token_file_flag(control_factory, tmp_path):
    w = str(tmp_path)
    supplied = write(w, "admin.tok", "rma1." + "ab" * 32 + "\n")
    cp = control_factory(extra=["--admin-token-file", supplied])
    assert not os.path.exists(cp.admin_token_file)
    assert cp.ctl("status", env={"REMORA_ADMIN_TOKEN_FILE": supplied}).rc == 0
    # a file that is not an admin credential stops remora-control with a message naming it
    bad = write(w, "bad.tok", "rmt1." + "0" * 64 + "\n")
    r = subprocess.run([CONTROL_BIN, "--listen", "127.0.0.1:0", "--state-dir", os.path.join(w, "s2"), "--admin-token-file", bad],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "bad.tok: not an admin credential" in r.stderr, r.stderr
    r = subprocess.run([CONTROL_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert "--admin-token-file FILE" in r.stdout and "--insecure" in r.stdout


def test_apis_refuse_unauthenticated_callers(control, tmp_path):
    cp = control
    p = pb()
    w = str(tmp_path)
    # plaintext to the TLS port: no connection at all
    with grpc.insecure_channel(cp.addr) as ch:
        code, _ = _code(lambda: _status(ch))
        assert code == grpc.StatusCode.UNAVAILABLE
    # TLS, no credential
    with cp.grpc_channel() as ch:
        code, details = _code(lambda: _status(ch))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "admin credential" in details, details
        code, details = _stream(ch, "anon")
        assert code == grpc.StatusCode.UNAUTHENTICATED and "workload identity" in details, details
        code, details = _code(lambda: _unary(ch, "/remora.v1.Identity/GetTrustBundle", p.identity.GetTrustBundleRequest(),
                                             p.identity.GetTrustBundleResponse))
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        code, details = _code(lambda: _unary(ch, "/remora.v1.Admin/CreateToken",
                                             p.identity.CreateTokenRequest(namespace="default", service_account="x"),
                                             p.identity.CreateTokenResponse))
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
    # a token nobody issued
    with cp.grpc_channel(token="rmt1." + "0" * 64) as ch:
        code, details = _stream(ch, "n0")
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not known" in details, details
    # the admin credential: the admin API, not discovery
    with cp.grpc_channel(token=cp.admin_token()) as ch:
        assert _status(ch).version == 0
        code, details = _stream(ch, "admin-as-agent")
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not a workload identity" in details, details
        # remoractl trust-anchor reads the bundle with the admin credential
        assert "BEGIN CERTIFICATE" in _unary(ch, "/remora.v1.Identity/GetTrustBundle", p.identity.GetTrustBundleRequest(),
                                             p.identity.GetTrustBundleResponse).trust_bundle_pem
    # a workload token: discovery and the trust bundle, not the admin API
    tok = open(cp.token(node_id="wl")).read().strip()
    with cp.grpc_channel(token=tok) as ch:
        assert _stream(ch, "wl-1") == ("snapshot", 0)
        assert _unary(ch, "/remora.v1.Identity/GetTrustBundle", p.identity.GetTrustBundleRequest(),
                      p.identity.GetTrustBundleResponse).trust_domain == "remora.local"
        code, details = _code(lambda: _status(ch))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "bootstrap token cannot be used" in details, details
    # a workload certificate as TLS client certificate: discovery yes, admin no
    chain, key, bound = _workload_cert(cp, w, "cert-node", "certified")
    with cp.grpc_channel(cert_chain=chain, key=key) as ch:
        assert _stream(ch, "any-node-with-a-cert") == ("snapshot", 0)
        code, details = _code(lambda: _status(ch))
        assert code == grpc.StatusCode.PERMISSION_DENIED and \
            "workload certificate (spiffe://remora.local/ns/default/sa/certified)" in details, details
    # ... nor when it comes with a workload token; on discovery the certificate is enough, whatever token
    with cp.grpc_channel(cert_chain=chain, key=key, token=tok) as ch:
        assert _code(lambda: _status(ch))[0] == grpc.StatusCode.PERMISSION_DENIED
    with cp.grpc_channel(cert_chain=chain, key=key, token="rmt1." + "9" * 64) as ch:
        assert _stream(ch, "cert-and-stale-token") == ("snapshot", 0)
    # a certificate from another CA does not even get through the handshake
    other_cert, other_key = throwaway_ca(w)
    with cp.grpc_channel(cert_chain=open(other_cert, "rb").read(), key=open(other_key, "rb").read()) as ch:
        assert _code(lambda: _status(ch))[0] == grpc.StatusCode.UNAVAILABLE
    # a bound token serves its node only (the Certify above bound `bound` to cert-node)
    with cp.grpc_channel(token=bound) as ch:
        code, details = _stream(ch, "another-node")
        assert code == grpc.StatusCode.PERMISSION_DENIED and "already bound to another node (cert-node)" in details, details
        assert _stream(ch, "cert-node") == ("snapshot", 0)
    counts = _refusals(cp)
    assert counts["discovery_unauthenticated"] >= 2 and counts["discovery_permission_denied"] >= 2, counts
    assert counts["identity_unauthenticated"] >= 1 and counts["admin_unauthenticated"] >= 2, counts
    assert counts["admin_permission_denied"] >= 3, counts
    # each refusal of a node is logged once
    assert cp.log().count("discovery API: refused another-node with PERMISSION_DENIED") == 1, cp.log()
    r = cp.ctl("identity")
    assert re.search(r"serving certificate: +expires \S+ \(issued 1 times", r.out), r.out


class _Agent:
    def __init__(self, workdir, cp_addr, node_id, args, state_dir=None):
        self.admin, self.health = free_port(), free_port()
        self.state_dir = state_dir or os.path.join(workdir, node_id + ".state")
        argv = [AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", cp_addr, "--node-id", node_id,
                "--state-dir", self.state_dir, "--workers", "1", "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}"] + list(args)
        self.proc = Proc(argv, os.path.join(workdir, f"{node_id}.{time.monotonic_ns()}.log"))
        wait_port("127.0.0.1", self.health, 10, self.proc)

    def ready(self):
        try:
            return http_get("127.0.0.1", self.health, "/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def log(self):
        return self.proc.log_text()

    def stop(self):
        return self.proc.stop(timeout=10)


def test_agents_and_remoractl_verify_the_control_plane(control_factory, tmp_path):
    w = str(tmp_path)
    good = control_factory(name="good")
    evil = control_factory(name="evil", state_dir=os.path.join(w, "evil-state"))  # another CA
    # remoractl with the good anchor against the other control plane: one clear line, exit 3
    r = ctl("status", control=evil.addr, env={"REMORA_CA_FILE": good.trust_anchor,
                                              "REMORA_ADMIN_TOKEN_FILE": evil.admin_token_file})
    assert r.rc == 3 and r.err.count("\n") == 1 and "cannot verify the control plane" in r.err and \
        good.trust_anchor in r.err, r
    # an agent with the good anchor and a token of the other: refuses to talk to it, says why
    bad = _Agent(w, evil.addr, "fooled", ["--trust-anchor", good.trust_anchor, "--identity-token", evil.token(node_id="fooled")])
    try:
        wait_until(lambda: "cannot verify the control plane" in bad.log(), timeout=10, what="the agent's TLS refusal")
        assert not bad.ready()
        assert status_json(evil)["agents"] == [], "the agent must not have spoken to the other control plane"
    finally:
        assert bad.stop() == 0
    # --control without a trust anchor or a credential: refused at start
    r = subprocess.run([AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", good.addr, "--node-id", "x",
                        "--state-dir", os.path.join(w, "x.state")], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--control needs the trust anchor" in r.stderr, r.stderr
    r = subprocess.run([AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", good.addr, "--node-id", "x",
                        "--state-dir", os.path.join(w, "x.state"), "--trust-anchor", good.trust_anchor],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--control needs a workload identity" in r.stderr, r.stderr
    r = subprocess.run([AGENT, "--help"], capture_output=True, text=True, timeout=10)
    assert "--trust-anchor FILE" in r.stdout and "REMORA_TRUST_ANCHOR_FILE" in r.stdout and "--control-insecure" in r.stdout

    # the right anchor (from the environment): the agent connects, gets its certificate and the snapshot
    env_anchor = dict(os.environ, REMORA_TRUST_ANCHOR_FILE=good.trust_anchor)
    ok = _Agent.__new__(_Agent)
    ok.admin, ok.health, ok.state_dir = free_port(), free_port(), os.path.join(w, "honest.state")
    ok.proc = Proc([AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", good.addr, "--node-id", "honest",
                    "--state-dir", ok.state_dir, "--workers", "1", "--admin", f"127.0.0.1:{ok.admin}",
                    "--health", f"127.0.0.1:{ok.health}", "--identity-token", good.token(node_id="honest")],
                   os.path.join(w, "honest.log"), env=env_anchor)
    wait_until(ok.ready, timeout=10, what="the agent ready")
    wait_until(lambda: os.path.exists(os.path.join(ok.state_dir, "identity.crt")), timeout=10, what="its certificate")
    assert ok.stop() == 0
    # restarted with neither token nor anchor: the kept bundle verifies the control plane and the kept
    # certificate authenticates the agent
    again = _Agent(w, good.addr, "honest", [], state_dir=ok.state_dir)
    try:
        wait_until(again.ready, timeout=10, what="the agent ready on its kept identity")
        assert [a["node"] for a in status_json(good)["agents"] if a["connected"]] == ["honest"]
    finally:
        assert again.stop() == 0


def test_insecure_is_explicit(control_factory, tmp_path):
    cp = control_factory(extra=["--insecure"])
    assert "PLAINTEXT and UNAUTHENTICATED" in cp.log()
    assert not os.path.exists(cp.admin_token_file)
    r = ctl("--insecure", "status", control=cp.addr)
    assert r.rc == 0, r
    # a client that expects TLS does not fall back to plaintext
    r = ctl("status", control=cp.addr, env={"REMORA_CA_FILE": throwaway_ca(str(tmp_path))[0],
                                            "REMORA_ADMIN_TOKEN_FILE": write(str(tmp_path), "a.tok", "rma1." + "0" * 64)})
    assert r.rc == 3 and "TLS handshake failed" in r.err, r
    a = _Agent(str(tmp_path), cp.addr, "dev", ["--control-insecure"])
    try:
        wait_until(a.ready, timeout=10, what="the insecure agent ready")
    finally:
        assert a.stop() == 0


def _served_cert(cp):
    """The control plane's serving certificate as openssl s_client sees it (text)."""
    r = subprocess.run(["openssl", "s_client", "-connect", cp.addr, "-servername", "remora-control.remora-system.svc",
                        "-CAfile", cp.trust_anchor, "-verify_return_error", "-alpn", "h2"],
                       input=b"", capture_output=True, timeout=20)
    assert r.returncode == 0 and b"Verify return code: 0 (ok)" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", r.stdout, re.S).group(0)
    return subprocess.run(["openssl", "x509", "-noout", "-text", "-serial"], input=pem, capture_output=True, check=True,
                          timeout=20).stdout.decode()


def test_serving_certificate_names_and_rotation(control_factory, agents):
    """The serving certificate names the control plane (DNS and SPIFFE SANs) and is re-issued at half its
    lifetime without a restart; streams opened before keep going, new connections get the new one."""
    cp = control_factory(extra=["--cert-lifetime", "10s"])
    text = _served_cert(cp)
    assert "DNS:remora-control.remora-system.svc" in text and "DNS:localhost" in text, text
    assert "URI:spiffe://remora.local/ns/remora-system/sa/remora-control" in text, text
    assert "TLS Web Server Authentication" in text
    serial = re.search(r"serial=(\S+)", text).group(1)
    a = agents(cp, "early")
    a.wait_version(0)
    wait_until(lambda: re.search(r"issued (\d+) times", cp.ctl("identity").out) and
               int(re.search(r"issued (\d+) times", cp.ctl("identity").out).group(1)) >= 2, timeout=15, interval=0.5,
               what="the serving certificate re-issued")
    assert re.search(r"serial=(\S+)", _served_cert(cp)).group(1) != serial
    # the stream opened with the first certificate is still there and still gets versions
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("echo")).rc == 0
    assert a.wait_version(1).version == 1
    assert cp.alive()
