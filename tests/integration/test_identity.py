"""Workload identity (issue 10 section 1, docs/identity.md): remora-control's CA, bootstrap tokens from
`remoractl token create`, and real remora-agent processes that obtain, keep and rotate their SPIFFE
certificates. Certificates are checked with the openssl command line; refusals with a gRPC client.

Runs in about 35 s: one test rotates a 30-second certificate through a control-plane outage."""

import calendar
import os
import re
import shutil
import signal
import stat
import subprocess
import time

import grpc
import pytest

from control_support import CONTROL_BIN, ControlPlane, pb, wait_until
from procutil import Proc, free_port, wait_port
from support import AGENT, http_get

pytestmark = pytest.mark.agent_only

OPENSSL = shutil.which("openssl")


class CA(ControlPlane):
    """remora-control with identity flags."""

    def __init__(self, workdir, extra=(), **kw):
        extra = list(extra)
        if "--trust-anchor" in extra:  # clients verify the control plane with the supplied bundle
            kw["trust_anchor"] = extra[extra.index("--trust-anchor") + 1]
        super().__init__(workdir, extra=extra, **kw)


class Agent:
    def __init__(self, workdir, cp, node_id, token_file, state_dir=None):
        self.workdir, self.cp, self.node_id, self.token_file = workdir, cp, node_id, token_file
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = state_dir or os.path.join(workdir, f"{node_id}.state")
        self.proc, self.starts = None, 0

    def start(self):
        self.starts += 1
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", self.cp.addr, "--node-id", self.node_id,
                "--state-dir", self.state_dir, "--identity-token", self.token_file, "--trust-anchor", self.cp.trust_anchor,
                "--workers", "1",
                "--admin", f"127.0.0.1:{self.admin}", "--health", f"127.0.0.1:{self.health}"]
        env = None
        if os.environ.get("REMORA_SANITIZED") == "1":
            # GCC 12's LeakSanitizer crashes at exit ("Tracer caught signal 11", after "DTLS 12 at
            # 0x0000000000ea-...") on a bogus dynamic-TLS entry of the main thread that the dlopen'ed control
            # module (gRPC core) leaves when the agent stops while its control plane is down, as these tests do.
            # Not scanning TLS for roots avoids that walk; it can only report more leaks, never hide one.
            env = dict(os.environ, LSAN_OPTIONS=os.environ.get("LSAN_OPTIONS", "") + ":use_tls=0")
        self.proc = Proc(argv, os.path.join(self.workdir, f"{self.node_id}.{self.starts}.log"), env=env)
        wait_port("127.0.0.1", self.admin, 10, self.proc)
        return self

    def identity(self):
        st, _, body = http_get("127.0.0.1", self.admin, "/identity")
        assert st == 200, body
        return dict(line.split(": ", 1) for line in body.decode().splitlines() if ": " in line)

    def metric(self, name):
        body = http_get("127.0.0.1", self.health, "/metrics")[2].decode()
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", body, re.M)
        return float(m.group(1)) if m else None

    def log(self):
        return self.proc.log_text() if self.proc else ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.alive():
            return self.proc.stop(sig, timeout=10)


@pytest.fixture
def env(tmp_path, request):
    procs = []

    def control(**kw):
        cp = CA(str(tmp_path), name=f"control{len(procs)}", **kw).start()
        procs.append(cp)
        return cp

    def agent(cp, node_id, token_file, **kw):
        a = Agent(str(tmp_path), cp, node_id, token_file, **kw).start()
        procs.append(a)
        return a

    control.agent = agent
    yield control
    rep = getattr(request.node, "rep_call", None)
    problems = []
    for p in procs:
        name = getattr(p, "name", getattr(p, "node_id", "?"))
        rc = p.stop()
        # a clean SIGTERM exit is 0; a sanitizer finding or a crash is not
        if rc not in (0, None) or "Sanitizer" in p.log():
            problems.append(f"{name} exited with {rc}")
        if (rep is not None and rep.failed) or problems:
            print(f"---- {name} ----\n{p.log()[-4000:]}")
    if problems:
        pytest.fail("; ".join(problems))


def openssl(*args, stdin=None):
    cp = subprocess.run([OPENSSL] + list(args), input=stdin, capture_output=True, timeout=20)
    assert cp.returncode == 0, cp.stderr.decode()
    return cp.stdout.decode()


def token(cp, ns, sa, ttl=None):
    r = cp.ctl("token", "create", "--namespace", ns, "--service-account", sa, *(["--ttl", ttl] if ttl else []))
    assert r.rc == 0, r
    return r.out.strip()


def write_token(tmp_path, name, value):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(value + "\n")
    return path


def cert_info(path):
    """(spiffe uri, serial, notBefore epoch, notAfter epoch, text) of the first certificate of a PEM file."""
    text = openssl("x509", "-in", path, "-noout", "-text", "-serial", "-startdate", "-enddate")
    uri = re.search(r"URI:(\S+)", text).group(1)
    serial = re.search(r"^serial=(\S+)", text, re.M).group(1)

    def epoch(tag):
        s = re.search(r"^" + tag + r"=(.+)$", text, re.M).group(1)
        return calendar.timegm(time.strptime(s, "%b %d %H:%M:%S %Y GMT"))
    return uri, serial, epoch("notBefore"), epoch("notAfter"), text


def split_chain(path, workdir):
    """Writes the certificates after the first (the issuer) to a file and returns its path."""
    pem = open(path).read()
    certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", pem, re.S)
    out = os.path.join(workdir, "untrusted.pem")
    with open(out, "w") as f:
        f.write("".join(certs[1:]))
    return out, len(certs)


def certify(cp, csr_der, tok, node_id):
    ipb = _identity_pb()
    with cp.grpc_channel() as ch:  # TLS; the token travels in the request
        m = ch.unary_unary("/remora.v1.Identity/Certify", request_serializer=ipb.CertifyRequest.SerializeToString,
                           response_deserializer=ipb.CertifyResponse.FromString)
        return m(ipb.CertifyRequest(csr_der=csr_der, token=tok, node_id=node_id), timeout=10)


def _identity_pb():
    pb()
    from remora.v1 import identity_pb2
    return identity_pb2


def make_csr(workdir, name, subject="/CN=whoever", san=None):
    key, csr = os.path.join(workdir, name + ".key"), os.path.join(workdir, name + ".csr")
    args = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj",
            subject, "-outform", "DER", "-out", csr]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    openssl(*args)
    return open(csr, "rb").read()


def test_agent_certificate_token_binding_and_refusals(env, tmp_path):
    cp = env(extra=["--trust-domain", "mesh.test"])
    # the generated CA: keys 0600 in the state dir
    for f in ("trust-anchor.key", "issuer.key"):
        assert stat.S_IMODE(os.stat(os.path.join(cp.state_dir, "ca", f)).st_mode) == 0o600
    bundle = os.path.join(str(tmp_path), "bundle.pem")
    r = cp.ctl("trust-anchor")
    assert r.rc == 0 and "BEGIN CERTIFICATE" in r.out, r
    open(bundle, "w").write(r.out)

    tok = token(cp, "shop", "web")
    assert re.fullmatch(r"rmt1\.[0-9a-f]{64}", tok)
    # only the hash is stored
    assert tok not in open(os.path.join(cp.state_dir, "tokens.db")).read()
    a = env.agent(cp, "web-1", write_token(tmp_path, "web.token", tok))
    crt = os.path.join(a.state_dir, "identity.crt")
    wait_until(lambda: os.path.exists(crt), timeout=10, what="the agent's certificate")
    uri, serial, nb, na, text = cert_info(crt)
    assert uri == "spiffe://mesh.test/ns/shop/sa/web"
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert re.search(r"Key Usage: critical\s+Digital Signature\n", text)
    assert 86400 - 5 <= na - time.time() <= 86400 + 5  # 24 h by default
    untrusted, n = split_chain(crt, str(tmp_path))
    assert n == 2
    assert "identity.crt: OK" in openssl("verify", "-CAfile", bundle, "-untrusted", untrusted, crt)
    for f in ("identity.key", "identity.crt", "trust-bundle.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(a.state_dir, f)).st_mode) == 0o600, f
    # the key on disk is the certificate's
    assert openssl("pkey", "-in", os.path.join(a.state_dir, "identity.key"), "-pubout") == \
        openssl("x509", "-in", crt, "-noout", "-pubkey")
    ident = a.identity()
    assert ident["identity"] == uri and ident["serial"] == serial and ident["expired"] == "no"
    assert a.metric("remora_identity_cert_expiry_timestamp_seconds") == na
    assert a.metric('remora_identity_rotations_total{result="success"}') == 1

    # the same token from another node: refused, counted, and that agent has no identity
    b = env.agent(cp, "web-2", write_token(tmp_path, "web2.token", tok))
    wait_until(lambda: (b.metric('remora_identity_rotations_total{result="failure"}') or 0) >= 1, timeout=10,
               what="the second agent's refusal")
    assert b.identity()["identity"] == "none"
    assert "PERMISSION_DENIED" in b.log() and "already bound to another node (web-1)" in b.log()

    # gRPC statuses of the refusals; the identity comes from the token, never from the CSR
    csr = make_csr(str(tmp_path), "evil", "/O=kube-system/CN=admin",
                   "URI:spiffe://mesh.test/ns/kube-system/sa/admin")
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, "rmt1." + "0" * 64, "n3")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "not known" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, tok, "n3")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    t2 = token(cp, "shop", "batch")
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, b"\x30\x03garbage", t2, "n3")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "PKCS#10" in e.value.details()
    resp = certify(cp, csr, t2, "n3")
    leaf = os.path.join(str(tmp_path), "leaf.der")
    open(leaf, "wb").write(resp.cert_chain_der[0])
    leaf_text = openssl("x509", "-inform", "DER", "-in", leaf, "-noout", "-text")
    assert "URI:spiffe://mesh.test/ns/shop/sa/batch" in leaf_text and "kube-system" not in leaf_text
    assert resp.spiffe_id == "spiffe://mesh.test/ns/shop/sa/batch"
    # an expired unused token
    t3 = token(cp, "shop", "late", ttl="1s")
    time.sleep(1.2)
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, t3, "n4")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in e.value.details()
    r = cp.ctl("identity")
    assert r.rc == 0, r
    assert "trust domain:          mesh.test" in r.out
    for reason, at_least in (("unknown_token", 1), ("token_in_use", 2), ("bad_csr", 1), ("expired_token", 1)):
        assert int(re.search(reason + r"=(\d+)", r.out).group(1)) >= at_least, r.out
    # usage errors are the CLI's own
    r = cp.ctl("token", "create", "--namespace", "Shop", "--service-account", "web")
    assert r.rc == 2 and "DNS-1123" in r.err, r

    # tokens are durable: the bound token still refuses another node after a restart
    assert cp.stop() == 0
    cp.start()
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, tok, "n5")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rotation_survives_control_plane_outage(env, tmp_path):
    cp = env(extra=["--cert-lifetime", "30s"])
    a = env.agent(cp, "rot-1", write_token(tmp_path, "rot.token", token(cp, "default", "rot")))
    wait_until(lambda: a.identity().get("identity", "none") != "none", timeout=10, what="the first certificate")
    first = a.identity()
    na1 = a.metric("remora_identity_cert_expiry_timestamp_seconds")

    # the control plane goes away; the agent restarts meanwhile and serves its kept identity
    assert cp.stop() == 0
    assert a.stop() == 0
    a.start()
    wait_until(lambda: a.identity().get("serial") == first["serial"], timeout=5, what="the kept identity")
    assert a.identity()["expired"] == "no"
    assert a.metric("remora_identity_cert_expiry_timestamp_seconds") == na1
    # its renewal (due at about 70% of the lifetime) fails and is retried; the certificate still serves
    wait_until(lambda: (a.metric('remora_identity_rotations_total{result="failure"}') or 0) >= 1, timeout=30,
               interval=0.1, what="a failed renewal")
    assert time.time() < na1 - 3, "the renewal started too late"
    assert a.identity()["serial"] == first["serial"] and a.identity()["expired"] == "no"
    assert "retrying in" in a.log()

    # the control plane returns: rotation resumes, a new serial before the first certificate expires
    cp.start()
    wait_until(lambda: a.identity()["serial"] != first["serial"], timeout=max(1.0, na1 - time.time()), interval=0.1,
               what="the rotation after the control plane returned")
    assert time.time() < na1
    second = a.identity()
    assert second["expired"] == "no" and second["identity"] == first["identity"]
    na2 = a.metric("remora_identity_cert_expiry_timestamp_seconds")
    assert na2 > na1
    assert a.metric('remora_identity_rotations_total{result="success"}') == 1  # counted since the restart
    # the rotated identity is the one kept on disk
    uri, serial, nb, na, _ = cert_info(os.path.join(a.state_dir, "identity.crt"))
    assert serial.upper() == second["serial"].upper() and na == na2 and nb < na1


def test_not_ready_without_certificate(env, tmp_path):
    """A snapshot in service is not enough: with --identity-token, /ready waits for the workload certificate,
    which mesh mTLS needs both ways (inbound STRICT refuses, outbound cannot connect without it)."""
    cp = env()
    a = env.agent(cp, "nocert-1", write_token(tmp_path, "nocert.token", token(cp, "default", "nocert")))
    wait_until(lambda: http_get("127.0.0.1", a.health, "/ready")[0] == 200, timeout=10, what="ready")
    assert a.identity()["identity"] != "none"
    # restarted with its snapshot kept but its certificate gone, while the control plane is away
    assert cp.stop() == 0
    assert a.stop() == 0
    for f in ("identity.crt", "identity.key"):
        os.unlink(os.path.join(a.state_dir, f))
    a.start()
    wait_until(lambda: "serving persisted snapshot version" in a.log(), timeout=10, what="the kept snapshot in service")
    time.sleep(0.5)
    assert a.identity()["identity"] == "none"
    assert http_get("127.0.0.1", a.health, "/ready")[0] == 503
    # the control plane returns: the certificate comes, and with it readiness
    cp.start()
    wait_until(lambda: http_get("127.0.0.1", a.health, "/ready")[0] == 200, timeout=15, what="ready with a certificate")
    assert a.identity()["identity"] == "spiffe://remora.local/ns/default/sa/nocert"


def _gen_ca(workdir, name, signer=None, ca=True):
    key, crt = os.path.join(workdir, name + ".key"), os.path.join(workdir, name + ".pem")
    ext = os.path.join(workdir, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n" if ca else
                "basicConstraints=critical,CA:FALSE\n")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    if signer is None:
        openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", "30", "-out", crt,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    else:
        csr = os.path.join(workdir, name + ".csr")
        openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", signer[1], "-CAkey", signer[0], "-CAcreateserial", "-days", "20",
                "-extfile", ext, "-out", crt)
    return key, crt


def test_supplied_ca_files(env, tmp_path):
    w = str(tmp_path)
    old_root, new_root = _gen_ca(w, "old-root"), _gen_ca(w, "new-root")
    issuer = _gen_ca(w, "issuer", signer=new_root)
    bundle = os.path.join(w, "bundle.pem")
    open(bundle, "w").write(open(old_root[1]).read() + open(new_root[1]).read())

    def run(*args):
        cp = subprocess.run([CONTROL_BIN, "--listen", "127.0.0.1:0", "--state-dir", os.path.join(w, "bad.state")]
                            + list(args), capture_output=True, text=True, timeout=10)
        return cp.returncode, cp.stdout + cp.stderr

    # wrong files: clear errors, no start
    rc, out = run("--trust-anchor", old_root[1], "--issuer-cert", issuer[1], "--issuer-key", issuer[0])
    assert rc == 1 and "does not verify against --trust-anchor" in out, out
    rc, out = run("--trust-anchor", bundle, "--issuer-cert", issuer[1], "--issuer-key", old_root[0])
    assert rc == 1 and "is not the key of --issuer-cert" in out, out
    leaf = _gen_ca(w, "leaf", signer=new_root, ca=False)
    rc, out = run("--trust-anchor", bundle, "--issuer-cert", leaf[1], "--issuer-key", leaf[0])
    assert rc == 1 and "not a CA certificate" in out, out
    rc, out = run("--trust-anchor", os.path.join(w, "missing.pem"), "--issuer-cert", issuer[1], "--issuer-key", issuer[0])
    assert rc == 1 and "cannot read" in out, out
    rc, out = run("--trust-anchor", bundle, "--issuer-cert", issuer[1])
    assert rc == 1 and "go together" in out, out
    rc, out = run("--cert-lifetime", "5s")
    assert rc == 2 and "--cert-lifetime" in out, out

    # the right files, with two anchors in the bundle (an anchor rotation in progress)
    cp = env(extra=["--trust-anchor", bundle, "--issuer-cert", issuer[1], "--issuer-key", issuer[0]])
    r = cp.ctl("trust-anchor")
    assert r.rc == 0 and r.out.count("BEGIN CERTIFICATE") == 2, r
    assert not os.path.exists(os.path.join(cp.state_dir, "ca")), "supplied material must not be copied"
    resp = certify(cp, make_csr(w, "wl"), token(cp, "default", "wl"), "wl-1")
    leaf_der, issuer_der = os.path.join(w, "wl.der"), os.path.join(w, "wl-issuer.der")
    open(leaf_der, "wb").write(resp.cert_chain_der[0])
    open(issuer_der, "wb").write(resp.cert_chain_der[1])
    leaf_pem = openssl("x509", "-inform", "DER", "-in", leaf_der)
    issuer_pem = openssl("x509", "-inform", "DER", "-in", issuer_der)
    open(os.path.join(w, "wl.pem"), "w").write(leaf_pem)
    open(os.path.join(w, "wl-issuer.pem"), "w").write(issuer_pem)
    assert issuer_pem == openssl("x509", "-in", issuer[1])
    assert "OK" in openssl("verify", "-CAfile", new_root[1], "-untrusted", os.path.join(w, "wl-issuer.pem"),
                           os.path.join(w, "wl.pem"))
    assert cp.ctl("trust-anchor").out == resp.trust_bundle_pem
