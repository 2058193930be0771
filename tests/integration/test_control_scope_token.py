"""Scoping of agents authenticated by their bootstrap token alone (docs/control-plane.md, "Scoping").

A bootstrap token names the namespace and service account it was made for (`remoractl token create
--namespace NS --service-account SA`) and remora-control checks it against its own tokens.db, so a discovery
stream that presents only the token (no client certificate) is that workload, scoped like an agent with a
certificate. Real remora-control; the agents are discovery streams over TLS with `authorization: Bearer
<token>` and no client certificate (control_support.FakeAgent with a token of its own), whose snapshots are
read as they arrive. Nothing the agent says makes the workload (the node ids here name no workload), and a
stream that presents a workload certificate of the trust domain as well is the certificate's workload.
"""

import os
import subprocess

import pytest

from control_support import ControlPlane, FakeAgent, control_factory, pb, status_json  # noqa: F401
from test_control_scope import apply, egress_doc, services_doc


class TokenAgent(FakeAgent):
    """A FakeAgent whose stream presents the bootstrap token of (namespace, service account) and nothing else."""

    def __init__(self, cp, node_id, namespace, service_account, cert=None):
        with open(cp.token(namespace, service_account, node_id=node_id)) as f:
            token = f.read().strip()
        FakeAgent.__init__(self, _TokenTarget(cp, token, cert), node_id)

    def services(self, version):
        return sorted(f"{s.metadata.namespace or 'default'}/{s.metadata.name}"
                      for s in self.wait_version(version).services)


class _TokenTarget(ControlPlane):
    """The control plane `cp` as FakeAgent sees it, with this agent's token instead of the shared one."""

    def __init__(self, cp, token, cert=None):  # noqa: super().__init__ not called: everything else is cp's
        self.__dict__.update(_cp=cp, _token=token, _cert=cert)

    def __getattr__(self, name):
        return getattr(self.__dict__["_cp"], name)

    def grpc_channel(self, token=None, **kw):
        if self._cert is not None:
            kw.update(cert_chain=self._cert[0], key=self._cert[1])
        return ControlPlane.grpc_channel(self, token=token, **kw)

    def fake_agent_token(self):
        return self._token


def workload_cert(cp, workdir, ns, sa, node_id):
    """A workload certificate of (ns, sa) from Identity.Certify with a bootstrap token: (chain PEM, key PEM)."""
    ipb = pb().identity
    with open(cp.token(ns, sa, node_id=node_id)) as f:
        token = f.read().strip()
    key, csr = os.path.join(workdir, node_id + ".key"), os.path.join(workdir, node_id + ".csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-subj", "/CN=x", "-outform", "DER", "-out", csr], check=True, capture_output=True, timeout=30)
    with cp.grpc_channel() as ch:
        m = ch.unary_unary("/remora.v1.Identity/Certify", request_serializer=ipb.CertifyRequest.SerializeToString,
                           response_deserializer=ipb.CertifyResponse.FromString)
        with open(csr, "rb") as f:
            resp = m(ipb.CertifyRequest(csr_der=f.read(), token=token, node_id=node_id), timeout=10)
    pem = b"".join(subprocess.run(["openssl", "x509", "-inform", "DER"], input=der, capture_output=True, check=True,
                                  timeout=30).stdout for der in resp.cert_chain_der)
    with open(key, "rb") as f:
        return pem, f.read()


@pytest.fixture
def agents():
    started = []

    def make(cp, node_id, ns, sa, cert=None):
        a = TokenAgent(cp, node_id, ns, sa, cert)
        started.append(a)
        return a
    yield make
    for a in started:
        a.close()


def test_token_only_stream_is_scoped_by_its_tokens_workload(control_factory, agents, tmp_path):  # noqa: F811
    cp = control_factory()
    apply(cp, services_doc(0, 20, 1) + "---\n" + services_doc(0, 3, 1, ns="shop"))
    v = apply(cp, egress_doc("client", ["./svc-1", "./svc-2"], sas=["client"]) + "---\n" +
              egress_doc("cart", ["./svc-0", "default/svc-7"], sas=["cart"], ns="shop"))
    client = agents(cp, "client-0", "default", "client")
    cart = agents(cp, "cart-0", "shop", "cart")
    # same service account name, another namespace: the default namespace's policy does not apply
    other_ns = agents(cp, "client-shop", "shop", "client")
    web = agents(cp, "web-0", "default", "web")
    assert client.services(v) == ["default/svc-1", "default/svc-2"]
    assert cart.services(v) == ["default/svc-7", "shop/svc-0"]
    assert len(other_ns.services(v)) == 23 and len(web.services(v)) == 23
    # a certificate of (default, web) and the token of (default, client) on one stream: the certificate's workload
    both = agents(cp, "both-0", "default", "client", cert=workload_cert(cp, str(tmp_path), "default", "web", "web-cert"))
    assert len(both.services(v)) == 23
    snap = client.wait_version(v)
    assert len(snap.egress_policies) == 0
    # the scope follows the policy: it grows, and a policy deleted puts the workload in no scope
    v = apply(cp, egress_doc("client", ["./svc-1", "./svc-2", "./svc-3"], sas=["client"]))
    assert client.services(v) == ["default/svc-1", "default/svc-2", "default/svc-3"]
    assert cp.ctl("delete", "egresspolicy", "client").rc == 0
    v = status_json(cp)["version"]
    assert len(client.services(v)) == 23
    assert cart.services(v) == ["default/svc-7", "shop/svc-0"]
