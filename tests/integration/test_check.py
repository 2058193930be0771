"""`remoractl check` (like `linkerd check`): the control plane answers over verified TLS with the admin
credential, its CA (trust anchors, issuer) is valid and not about to expire, the injection webhook's
serving certificate chains to the trust anchor and carries its name, and every agent is connected and
current. Real remora-control and remora-agent; fake agents (python3-grpcio) to NACK or lag; webhook
certificates made here with python3-cryptography and served by a TLS server of the test on loopback."""

import datetime
import json
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control_support import (agents, control, control_factory, service_doc, status_json, throwaway_ca,  # noqa: F401
                             wait_until, write)
from procutil import free_port, wait_port
from test_remoractl_proxy import mesh_agents  # noqa: F401

pytestmark = pytest.mark.agent_only

WEBHOOK_NAME = "remora-control.remora-system.svc"


def _lines(out, mark):
    return [ln.strip() for ln in out.splitlines() if ln.strip().startswith(mark)]


def _load(path, key=False):
    with open(path, "rb") as f:
        data = f.read()
    return serialization.load_pem_private_key(data, None) if key else x509.load_pem_x509_certificate(data)


def _cert(workdir, name, issuer_cert, issuer_key, *, dns=(WEBHOOK_NAME,), days=30, expired=False, ca=False,
          subject="webhook", age_days=0):
    """A certificate signed by (issuer_cert, issuer_key) (None, None: self-signed); returns (chain PEM path,
    key PEM path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    nb, na = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired else \
        (now - datetime.timedelta(days=age_days, minutes=5), now + datetime.timedelta(days=days))
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(subj)
         .issuer_name(issuer_cert.subject if issuer_cert is not None else subj)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    cert = b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    chain = cert.public_bytes(serialization.Encoding.PEM)
    if issuer_cert is not None and not ca:
        chain += issuer_cert.public_bytes(serialization.Encoding.PEM)
    cpath, kpath = os.path.join(workdir, f"{name}.pem"), os.path.join(workdir, f"{name}.key")
    with open(cpath, "wb") as f:
        f.write(chain)
    with open(kpath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath, cert, key


class TlsServer:
    """A TLS server on a loopback port that completes handshakes with one certificate chain: the webhook's
    serving side as the Kubernetes API server sees it."""

    def __init__(self, chain, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(chain, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def tls_servers():
    started = []

    def start(chain, key):
        s = TlsServer(chain, key)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_healthy_mesh_is_green(control, mesh_agents, tmp_path):
    assert control.ctl("apply", "-f", write(str(tmp_path), "s.yaml", service_doc("web", ["127.0.0.1:9"], "http1"))).rc == 0
    mesh_agents(control, "web-1")
    mesh_agents(control, "web-2")
    wait_until(lambda: sorted((x["node"], x["connected"], x["appliedVersion"]) for x in status_json(control)["agents"])
               == [("web-1", True, 1), ("web-2", True, 1)], what="both agents at version 1")
    r = control.ctl("check")
    assert r.rc == 0, r.out
    assert _lines(r.out, "[FAIL]") == [] and _lines(r.out, "[warn]") == [], r.out
    ok = "\n".join(_lines(r.out, "[ok]"))
    assert f"the control plane at {control.addr} answers over TLS verified against {control.trust_anchor}" in ok
    assert "trust anchor" in ok and "is valid until" in ok
    assert "chains to the trust bundle" in ok
    assert "serving certificate is valid until" in ok
    assert "all 2 agents connected and at the current version 1" in ok
    assert "[skip] not checked: the control plane serves none" in r.out
    assert r.out.rstrip().endswith("0 warnings, 0 failed")

    r = control.ctl("check", "-o", "json")
    assert r.rc == 0, r.out
    doc = json.loads(r.out)
    assert doc["ok"] is True and doc["failed"] == 0
    assert {c["group"] for c in doc["checks"]} == {"control plane", "certificate authority", "injection webhook", "agents"}
    assert all(c["result"] in ("ok", "skip") for c in doc["checks"]), doc


def test_stopped_nacking_and_stale_agents_are_named(control, mesh_agents, agents, tmp_path):
    assert control.ctl("apply", "-f", write(str(tmp_path), "s.yaml", service_doc("web", ["127.0.0.1:9"], "http1"))).rc == 0
    good = mesh_agents(control, "good")
    gone = mesh_agents(control, "gone")
    gone.stop()
    wait_until(lambda: any(x["node"] == "gone" and not x["connected"] for x in status_json(control)["agents"]),
               what="gone disconnected")
    nack = agents(control, "nacker", policy="nack", nack_reason="route web: unknown filter 'x'")
    nack.wait_version(1)
    lag = agents(control, "laggard", policy="ignore")
    lag.wait_version(1)
    r = control.ctl("check", "--wait", "300ms")
    assert r.rc == 1, r
    fails = _lines(r.out, "[FAIL]")
    assert any(ln.startswith("[FAIL] agent gone is not connected (last seen ") for ln in fails), fails
    assert any("agent nacker refused version 1 and serves version 0: route web: unknown filter 'x'" in ln for ln in fails), fails
    assert any("agent laggard is stale: it serves version 0, the current is 1" in ln for ln in fails), fails
    assert not any("good" in ln for ln in fails)
    assert "[ok]   1 other agent connected and at the current version 1" in r.out
    assert "3 failed" in r.out
    doc = json.loads(control.ctl("check", "--wait", "0s", "-o", "json").out)
    assert doc["ok"] is False and doc["failed"] == 3
    assert good.proc.alive()


def test_control_plane_down_or_wrong_credentials(control, tmp_path):
    r = control.ctl("check", env={"REMORA_ADMIN_TOKEN_FILE": write(str(tmp_path), "bad.token", "rma1." + "0" * 64)})
    assert r.rc == 1 and "[FAIL] the control plane at" in r.out and "refused the admin credential" in r.out, r
    other, _ = throwaway_ca(str(tmp_path))
    r = control.ctl("check", env={"REMORA_CA_FILE": other})
    assert r.rc == 1 and "cannot be verified: the TLS handshake failed" in r.out, r
    control.stop()
    control.stopped_by_test = True
    r = control.ctl("check")
    assert r.rc == 1 and "does not answer" in r.out and "[skip] not checked: the control plane did not answer" in r.out, r


def test_webhook_certificate(control, tls_servers, tmp_path):
    wd = str(tmp_path)
    ca_dir = os.path.join(control.state_dir, "ca")
    issuer, issuer_key = _load(os.path.join(ca_dir, "issuer.pem")), _load(os.path.join(ca_dir, "issuer.key"), key=True)

    good = tls_servers(*_cert(wd, "good", issuer, issuer_key)[:2])
    r = control.ctl("check", "--webhook", good.addr)
    assert r.rc == 0, r
    assert f"[ok]   the webhook at {good.addr} ({WEBHOOK_NAME}): its certificate chains to {control.trust_anchor} " \
           f"and names {WEBHOOK_NAME}" in r.out, r.out
    assert "[ok]   its certificate is valid until" in r.out

    # the name the API server asks for is not in the certificate
    r = control.ctl("check", "--webhook", good.addr, "--webhook-name", "other.remora-system.svc")
    assert r.rc == 1 and "its certificate is refused" in r.out and "ostname mismatch" in r.out, r

    expired = tls_servers(*_cert(wd, "expired", issuer, issuer_key, expired=True)[:2])
    r = control.ctl("check", "--webhook", expired.addr)
    assert r.rc == 1 and "[FAIL] its certificate expired on" in r.out, r

    # a 30-day certificate with 2 days left: its renewal is late
    soon = tls_servers(*_cert(wd, "soon", issuer, issuer_key, days=2, age_days=28)[:2])
    r = control.ctl("check", "--webhook", soon.addr)
    assert r.rc == 0 and "[warn] its certificate expires in " in r.out and "rotate it" in r.out, r.out
    # a 2-day certificate with 2 days left is young: renewed long before it expires
    young = tls_servers(*_cert(wd, "young", issuer, issuer_key, days=2)[:2])
    r = control.ctl("check", "--webhook", young.addr)
    assert r.rc == 0 and "[ok]   its certificate is valid until" in r.out, r.out

    other_ca, other_key = _cert(wd, "other-ca", None, None, ca=True, dns=(), subject="other")[2:]
    stranger = tls_servers(*_cert(wd, "stranger", other_ca, other_key)[:2])
    r = control.ctl("check", "--webhook", stranger.addr)
    assert r.rc == 1 and "its certificate is refused" in r.out and "self-signed certificate in certificate chain" in r.out, r.out

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    r = control.ctl("check", "--webhook", f"127.0.0.1:{port}")
    assert r.rc == 1 and "cannot be reached" in r.out, r
    assert control.ctl("check", "--webhook", "nocolon").rc == 2


def test_ca_expiring_soon_is_a_warning(control_factory, tmp_path):
    wd = str(tmp_path)
    anchor_pem, _, anchor, anchor_key = _cert(wd, "anchor", None, None, ca=True, dns=(), subject="short anchor", days=400)
    issuer_pem, issuer_key_pem, _, _ = _cert(wd, "issuer", anchor, anchor_key, ca=True, dns=(), subject="short issuer",
                                             days=3)
    cp = control_factory(trust_anchor=anchor_pem,
                         extra=["--trust-anchor", anchor_pem, "--issuer-cert", issuer_pem, "--issuer-key", issuer_key_pem])
    r = cp.ctl("check")
    assert r.rc == 0, r
    assert "[ok]   trust anchor /CN=short anchor is valid until" in r.out, r.out
    assert "[ok]   issuer CN=short issuer chains to the trust bundle" in r.out or \
           "[ok]   issuer /CN=short issuer chains to the trust bundle" in r.out, r.out
    assert any("short issuer expires in" in ln and "rotate it" in ln for ln in _lines(r.out, "[warn]")), r.out


def test_the_control_planes_own_webhook(control_factory, tmp_path):
    """remora-control --webhook-listen: check finds the webhook through Admin.Status and verifies the
    certificate the control plane's CA issued for it."""
    port = free_port()
    cp = control_factory(extra=["--webhook-listen", f"127.0.0.1:{port}", "--webhook-dns", "hook.remora-system.svc"])
    wait_port("127.0.0.1", port, 10, cp.proc)
    r = cp.ctl("check")
    assert r.rc == 0, r.out
    assert f"[ok]   the webhook at 127.0.0.1:{port} (hook.remora-system.svc): its certificate chains to " \
           f"{cp.trust_anchor} and names hook.remora-system.svc" in r.out, r.out
    assert "[ok]   its certificate is valid until" in r.out
    # the name Kubernetes would call it by must be in the certificate
    r = cp.ctl("check", "--webhook-name", "remora-control.remora-system.svc")
    assert r.rc == 1 and "ostname mismatch" in r.out, r.out
