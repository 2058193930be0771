"""remora-control --kubernetes (docs/kubernetes-mode.md): the control plane's state read from the
Kubernetes API, against tests/tools/kube_api.py (the real list-and-watch protocol over HTTPS, objects in
real clusters' shapes from kube_objects.py).

What is checked: core Services + EndpointSlices + Pods become Remora Services pushed to agents (one per
port, protocol from appProtocol or the port name, identity and meshed from the pods); changes are pushed;
a 410 Gone forces a relist and nothing is lost; a broken watch recovers; custom resources get Accepted and
ResolvedRefs conditions through /status; `remoractl apply`/`delete` write through the API; Certify checks
projected service-account tokens with a TokenReview; two replicas give agents the same bytes and version;
an EgressPolicy from the API (Accepted only) scopes a real agent's snapshot.
"""

import json
import os
import subprocess
import time

import grpc
import pytest

import kube_objects as ko
from control_support import FakeAgent, control_factory, pb, wait_until, write  # noqa: F401
from kube_api import KubeApiServer

INJECTED = {"remora.dev/injected": "0.1.0"}
# the chart's CRDs: the test server then validates custom resources against their OpenAPI schemas, as a cluster
CRDS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "helm", "remora", "crds")


def chart_crds(fn):
    fn.chart_crds = True
    return fn


@pytest.fixture
def kube(tmp_path, request):
    """The test API server; for tests decorated with @chart_crds it serves the chart's CRDs and validates writes
    against them (srv.put stores objects as they are, so the tests of invalid documents run without)."""
    crds = CRDS if getattr(request.function, "chart_crds", False) else None
    if crds is not None and not os.path.isdir(crds):
        pytest.fail(f"{crds}: the chart's CRDs are missing")
    srv = KubeApiServer(tls=True, workdir=str(tmp_path / "kube-api"), bookmark_interval=0.5, crds=crds)
    srv.start()
    yield srv
    srv.stop()


def kube_args(srv):
    return ["--kubernetes", "--kube-api", srv.url, "--kube-token-file", srv.token_file, "--kube-ca-file", srv.ca_file]


@pytest.fixture
def start_control(control_factory, kube):  # noqa: F811
    def start(name="control"):
        return control_factory(name=name, extra=kube_args(kube))
    return start


@pytest.fixture
def fake_agents():
    started = []

    def start(cp, node_id):
        a = FakeAgent(cp, node_id)
        started.append(a)
        return a
    yield start
    for a in started:
        a.close()


def put_all(srv, objs):
    for o in objs:
        srv.put(o)


def services_of(snap):
    """{ns/name: Service message} of a Snapshot."""
    return {f"{s.metadata.namespace}/{s.metadata.name}": s for s in snap.services}


def wait_snapshot(agent, pred, timeout=10.0, what="snapshot"):
    """The newest snapshot once pred(snapshot) holds."""
    def check():
        s = agent.last
        return s if s is not None and pred(s) else None
    return wait_until(check, timeout, interval=0.05, what=what)


def endpoints(svc):
    return sorted(e.address for e in svc.spec.endpoints)


def conditions(srv, kind, name, ns="default"):
    obj = srv.get("remora.dev/v1", kind, ns, name)
    return {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", [])}


def test_services_from_kubernetes_and_changes(kube, start_control, fake_agents):
    p = pb()
    objs = ko.service_with_pods("web", pods=[("web-1", "10.244.0.5"), ("web-2", "10.244.0.6")],
                                cluster_ip="10.96.0.20")
    for o in objs:
        if o["kind"] == "Pod":
            o["metadata"]["annotations"] = dict(INJECTED)
    put_all(kube, objs)
    # several ports: one Remora Service per port, named <name>-<port name>; protocol from appProtocol or the name
    put_all(kube, ko.service_with_pods("api", pods=[("api-1", "10.244.1.5")], cluster_ip="10.96.0.21",
                                       ports=[ko.svc_port("grpc-main", 9090, 9090),
                                              ko.svc_port("metrics", 9100, 9100, app_protocol="http")]))
    # headless and ExternalName Services are skipped
    kube.put(ko.service("db", cluster_ip=None))
    kube.put(ko.service("ext", type_="ExternalName", cluster_ip=""))
    cp = start_control()
    agent = fake_agents(cp, "web-1.default")
    snap = wait_snapshot(agent, lambda s: {"default/web", "default/api-grpc-main", "default/api-metrics"}
                         <= set(services_of(s)), what="the derived services")
    svcs = services_of(snap)
    web = svcs["default/web"]
    assert list(web.spec.addresses) == ["10.96.0.20:80"]
    assert endpoints(web) == ["10.244.0.5:8080", "10.244.0.6:8080"]
    assert web.spec.protocol == p.service.PROTOCOL_HTTP1
    assert web.spec.service_account == "web" and web.spec.meshed
    grpc_svc, metrics = svcs["default/api-grpc-main"], svcs["default/api-metrics"]
    assert grpc_svc.spec.protocol == p.service.PROTOCOL_GRPC and list(grpc_svc.spec.addresses) == ["10.96.0.21:9090"]
    assert metrics.spec.protocol == p.service.PROTOCOL_HTTP1 and endpoints(metrics) == ["10.244.1.5:9100"]
    assert not metrics.spec.meshed  # its pod is not injected
    assert "default/db" not in svcs and "default/ext" not in svcs
    first = snap.version
    assert first != 0

    # an endpoint added: pushed; remoractl sees the same state
    slice_ = [o for o in objs if o["kind"] == "EndpointSlice"][0]
    # (its pod runs as another service account: the endpoint carries its own identity)
    kube.put(ko.pod("web-3", ip="10.244.0.7", service_account="web-canary", annotations=INJECTED, labels={"app": "web"}))
    slice_["endpoints"].append(ko.endpoint("10.244.0.7", "web-3"))
    kube.put(slice_)
    snap = wait_snapshot(agent, lambda s: len(services_of(s)["default/web"].spec.endpoints) == 3, what="web-3 added")
    assert snap.version != first
    web = services_of(snap)["default/web"]
    assert web.spec.service_account == "web"
    assert {e.address: e.service_account for e in web.spec.endpoints} == {
        "10.244.0.5:8080": "", "10.244.0.6:8080": "", "10.244.0.7:8080": "web-canary"}
    r = cp.ctl("get", "service", "web", "-o", "json")
    assert r.rc == 0 and "10.244.0.7:8080" in r.out, r
    # a pod gone (its endpoint leaves the slice, the pod is deleted): pushed
    slice_["endpoints"] = [e for e in slice_["endpoints"] if e["targetRef"]["name"] != "web-1"]
    kube.put(slice_)
    kube.delete("v1", "Pod", "default", "web-1")
    wait_snapshot(agent, lambda s: endpoints(services_of(s)["default/web"]) == ["10.244.0.6:8080", "10.244.0.7:8080"],
                  what="web-1 removed")
    # a not-ready endpoint is not served
    slice_["endpoints"][0]["conditions"]["ready"] = False
    kube.put(slice_)
    wait_snapshot(agent, lambda s: endpoints(services_of(s)["default/web"]) == ["10.244.0.7:8080"], what="not ready")
    # the trust anchor ConfigMap in the namespace of injected pods
    cm = wait_until(lambda: kube.get("v1", "ConfigMap", "default", "remora-trust-anchor"), 10, what="trust anchor")
    with open(cp.trust_anchor) as f:
        assert cm["data"]["trust-anchor.pem"] == f.read()


def test_relist_after_410_and_broken_watches(kube, start_control, fake_agents):
    put_all(kube, ko.service_with_pods("web", pods=[("web-1", "10.244.0.5")]))
    cp = start_control()
    agent = fake_agents(cp, "a.default")
    wait_snapshot(agent, lambda s: "default/web" in services_of(s))
    # the watches break while the API answers nothing; meanwhile things change and history is compacted:
    # the watch from the old resourceVersion gets 410 Gone, the kinds are relisted, nothing is lost
    kube.fail_next(100000, status=503)
    kube.close_watches()
    put_all(kube, ko.service_with_pods("shop", pods=[("shop-1", "10.244.2.5")], cluster_ip="10.96.0.30"))
    kube.delete("v1", "Service", "default", "web")
    kube.compact()
    kube.fail_next(0)
    wait_snapshot(agent, lambda s: "default/shop" in services_of(s) and "default/web" not in services_of(s),
                  timeout=15, what="the state after the relist")
    wait_until(lambda: "410 Gone" in cp.log() and "relisted" in cp.log(), 5, what="a relist after 410")
    # a watch broken with nothing missed: the watch resumes from its resourceVersion, changes still arrive
    kube.close_watches()
    kube.put(ko.service("late", cluster_ip="10.96.0.31"))
    wait_snapshot(agent, lambda s: "default/late" in services_of(s), timeout=15, what="a change after a broken watch")


def test_status_conditions(kube, start_control, fake_agents):
    put_all(kube, ko.service_with_pods("web", pods=[("web-1", "10.244.0.5")]))
    kube.put(ko.remora("HTTPRoute", "good", spec={"parentRefs": [{"kind": "Service", "name": "web"}],
                                                  "rules": [{"backendRefs": [{"name": "web"}]}]}))
    kube.put(ko.remora("HTTPRoute", "dangling", spec={"parentRefs": [{"kind": "Service", "name": "web"}],
                                                      "rules": [{"backendRefs": [{"name": "nope"}]}]}))
    kube.put(ko.remora("Service", "broken", spec={"protocol": "carrier-pigeon"}))
    # two Services claiming one virtual address: the first (by name) keeps it
    for name in ("vip-a", "vip-b"):
        kube.put(ko.remora("Service", name, spec={"protocol": "tcp", "addresses": ["10.99.0.1:5432"]}))
    # for workload web only: the fake agent (a bootstrap token of service account fake-agent) stays unscoped and
    # receives the policies themselves
    kube.put(ko.remora("EgressPolicy", "egress", spec={"targetRefs": [{"kind": "ServiceAccount", "name": "web"}],
                                                       "hosts": ["./*"]}))
    kube.put(ko.remora("EgressPolicy", "broken-egress", spec={"hosts": ["web"]}))
    cp = start_control()
    agent = fake_agents(cp, "a.default")
    snap = wait_snapshot(agent, lambda s: len(s.http_routes) == 1)
    assert [r.metadata.name for r in snap.http_routes] == ["good"]  # the dangling route is not served
    c = wait_until(lambda: conditions(kube, "HTTPRoute", "dangling").get("ResolvedRefs"), 10, what="status written")
    assert c["status"] == "False" and c["reason"] == "BackendNotFound" and "nope" in c["message"], c
    assert c["observedGeneration"] == kube.get("remora.dev/v1", "HTTPRoute", "default", "dangling")["metadata"]["generation"]
    assert conditions(kube, "HTTPRoute", "dangling")["Accepted"]["status"] == "True"
    good = wait_until(lambda: conditions(kube, "HTTPRoute", "good").get("ResolvedRefs"), 10, what="good's status")
    assert good["status"] == "True"
    bad = wait_until(lambda: conditions(kube, "Service", "broken").get("Accepted"), 10, what="broken's status")
    assert bad["status"] == "False" and "carrier-pigeon" in bad["message"], bad
    vip = wait_until(lambda: conditions(kube, "Service", "vip-b").get("Accepted"), 10, what="vip-b's status")
    assert vip["status"] == "False" and "10.99.0.1:5432" in vip["message"] and "vip-a" in vip["message"], vip
    assert conditions(kube, "Service", "vip-a")["Accepted"]["status"] == "True"
    assert "default/vip-a" in services_of(agent.last) and "default/vip-b" not in services_of(agent.last)
    # an EgressPolicy: Accepted only (it refers to nothing the store holds), False with the document's error
    eg = wait_until(lambda: conditions(kube, "EgressPolicy", "broken-egress") or None, 10,
                    what="broken-egress's status")
    assert list(eg) == ["Accepted"] and eg["Accepted"]["status"] == "False", eg
    assert "'web' must be NAMESPACE/NAME" in eg["Accepted"]["message"], eg
    assert [p.metadata.name for p in agent.last.egress_policies] == ["egress"]
    ok = wait_until(lambda: conditions(kube, "EgressPolicy", "egress") or None, 10, what="egress's status")
    assert list(ok) == ["Accepted"] and ok["Accepted"]["status"] == "True", ok
    # the missing Service appears: the route resolves and is served
    kube.put(ko.remora("Service", "nope", spec={"protocol": "http1", "endpoints": ["10.244.9.9:80"]}))
    wait_snapshot(agent, lambda s: len(s.http_routes) == 2, what="the route once resolved")
    wait_until(lambda: conditions(kube, "HTTPRoute", "dangling")["ResolvedRefs"]["status"] == "True", 10,
               what="ResolvedRefs True")
    # status is written only when it changes: no further writes once settled
    n = len([r for r in kube.requests if r[0] == "PATCH"])
    kube.put(ko.pod("unrelated", ip="10.244.7.7"))
    wait_snapshot(agent, lambda s: True)
    time.sleep(0.5)
    assert len([r for r in kube.requests if r[0] == "PATCH"]) == n


@chart_crds
def test_apply_and_delete_write_through_the_api(kube, start_control, fake_agents, tmp_path):
    kube.put(ko.namespace("shop"))  # as in a cluster, custom resources go into a namespace that exists
    cp = start_control()
    agent = fake_agents(cp, "a.default")
    doc = ("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\n"
           "spec: {protocol: http1, endpoints: [\"10.244.3.3:8080\"]}\n---\n"
           "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: echo-route, namespace: shop}\n"
           "spec:\n  parentRefs: [{kind: Service, name: echo}]\n  rules: [{backendRefs: [{name: echo}]}]\n")
    f = write(str(tmp_path), "echo.yaml", doc)
    r = cp.ctl("apply", "-f", f, "--dry-run")
    assert r.rc == 0, r
    assert kube.get("remora.dev/v1", "Service", "shop", "echo") is None  # a dry run writes nothing
    r = cp.ctl("apply", "-f", f, "--wait", "--timeout", "10")
    assert r.rc == 0, r
    assert "applied by 1 agent" in r.out, r
    obj = kube.get("remora.dev/v1", "Service", "shop", "echo")
    assert obj is not None and obj["spec"]["protocol"] == "http1"
    assert kube.get("remora.dev/v1", "HTTPRoute", "shop", "echo-route") is not None
    snap = wait_snapshot(agent, lambda s: "shop/echo" in services_of(s))
    assert len(snap.http_routes) == 1
    # applying the same again changes nothing; a change replaces the object
    r = cp.ctl("apply", "-f", f)
    assert r.rc == 0 and "no change" in r.out, r
    r = cp.ctl("apply", "-f", write(str(tmp_path), "echo2.yaml", doc.replace("10.244.3.3", "10.244.3.4").split("---")[0]))
    assert r.rc == 0, r
    assert kube.get("remora.dev/v1", "Service", "shop", "echo")["spec"]["endpoints"] == ["10.244.3.4:8080"]
    # the API server validated every write against the chart's CRD schemas; the status too
    c = wait_until(lambda: conditions(kube, "Service", "echo", "shop").get("Accepted"), 10, what="echo's status")
    assert c["status"] == "True", c
    # validation happens before anything is written
    r = cp.ctl("apply", "-f", write(str(tmp_path), "bad.yaml", doc.replace("http1", "smoke-signals")))
    assert r.rc != 0 and "smoke-signals" in r.err, r
    # delete: refused while in use, then through the API
    r = cp.ctl("delete", "service", "echo", "-n", "shop")
    assert r.rc != 0 and "used by" in r.err, r
    r = cp.ctl("delete", "httproute", "echo-route", "-n", "shop")
    assert r.rc == 0, r
    assert kube.get("remora.dev/v1", "HTTPRoute", "shop", "echo-route") is None
    wait_snapshot(agent, lambda s: len(s.http_routes) == 0)
    r = cp.ctl("delete", "httproute", "echo-route", "-n", "shop")
    assert r.rc != 0 and "not found" in r.err, r


@chart_crds
def test_egress_policy_through_the_api(kube, start_control, fake_agents, tmp_path):
    """EgressPolicy (egresspolicies.remora.dev): list-watched, translated, its status Accepted (only: it refers to
    nothing the store holds), written and deleted by remoractl through the API (validated by the chart's CRD)."""
    kube.put(ko.namespace("shop"))
    cp = start_control()
    agent = fake_agents(cp, "a.default")
    doc = ("apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: web, namespace: shop}\n"
           "spec:\n  targetRefs: [{kind: ServiceAccount, name: web}]\n  hosts: [\"./*\", \"*/echo\"]\n")
    f = write(str(tmp_path), "egress.yaml", doc)
    r = cp.ctl("apply", "-f", f, "--dry-run")
    assert r.rc == 0, r
    assert kube.get("remora.dev/v1", "EgressPolicy", "shop", "web") is None
    r = cp.ctl("apply", "-f", f, "--wait", "--timeout", "10")
    assert r.rc == 0 and "not served with --kubernetes" not in r.err, r
    obj = kube.get("remora.dev/v1", "EgressPolicy", "shop", "web")
    assert obj is not None and obj["spec"]["hosts"] == ["./*", "*/echo"], obj
    snap = wait_snapshot(agent, lambda s: [p.metadata.name for p in s.egress_policies] == ["web"])
    assert list(snap.egress_policies[0].spec.hosts) == ["./*", "*/echo"]
    conds = wait_until(lambda: conditions(kube, "EgressPolicy", "web", "shop") or None, 10, what="web's status")
    assert list(conds) == ["Accepted"] and conds["Accepted"]["status"] == "True", conds
    assert conds["Accepted"]["observedGeneration"] == obj["metadata"]["generation"]
    r = cp.ctl("get", "egresspolicies", "-n", "shop")
    assert r.rc == 0 and "web" in r.out and "./*" in r.out, r
    r = cp.ctl("apply", "-f", f)
    assert r.rc == 0 and "no change" in r.out, r
    # the CRD schema refuses what the control plane would (the dry run is the control plane's own check)
    r = cp.ctl("apply", "-f", write(str(tmp_path), "bad.yaml", doc.replace("*/echo", "echo")))
    assert r.rc != 0 and "'echo' must be NAMESPACE/NAME" in r.err, r
    r = cp.ctl("delete", "egresspolicy", "web", "-n", "shop")
    assert r.rc == 0, r
    assert kube.get("remora.dev/v1", "EgressPolicy", "shop", "web") is None
    wait_snapshot(agent, lambda s: len(s.egress_policies) == 0, what="the policy gone")
    r = cp.ctl("delete", "egresspolicy", "web", "-n", "shop")
    assert r.rc != 0 and "not found" in r.err, r


def _csr(workdir):
    key, csr = os.path.join(workdir, "w.key"), os.path.join(workdir, "w.csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    key, "-subj", "/CN=x", "-outform", "DER", "-out", csr], check=True, capture_output=True, timeout=30)
    with open(csr, "rb") as f:
        return f.read()


def test_certify_with_token_review(kube, start_control, tmp_path):
    ipb = pb().identity
    cp = start_control()
    kube.add_token("projected-good", username="system:serviceaccount:shop:cart", pod_name="cart-7d9f")
    kube.add_token("other-audience", username="system:serviceaccount:shop:cart", audiences=["vault"])
    csr = _csr(str(tmp_path))

    def certify(token, node):
        with cp.grpc_channel() as ch:
            m = ch.unary_unary("/remora.v1.Identity/Certify", request_serializer=ipb.CertifyRequest.SerializeToString,
                               response_deserializer=ipb.CertifyResponse.FromString)
            try:
                return m(ipb.CertifyRequest(csr_der=csr, token=token, node_id=node), timeout=10), None
            except grpc.RpcError as e:
                return None, e

    resp, err = certify("projected-good", "cart-7d9f.shop")
    assert err is None, err
    assert resp.spiffe_id == "spiffe://remora.local/ns/shop/sa/cart"
    assert ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") in [tuple(r[:2]) for r in kube.requests]
    _, err = certify("not-a-token", "cart-7d9f.shop")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    _, err = certify("other-audience", "cart-7d9f.shop")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    # a pod's token certifies that pod's node id only
    _, err = certify("projected-good", "someone-else.shop")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "cart-7d9f" in err.details(), err


@chart_crds
def test_two_replicas_serve_identical_snapshots(kube, start_control, fake_agents):
    put_all(kube, ko.service_with_pods("web", pods=[("web-1", "10.244.0.5"), ("web-2", "10.244.0.6")]))
    put_all(kube, ko.service_with_pods("api", pods=[("api-1", "10.244.1.5")], cluster_ip="10.96.0.21",
                                       ports=[ko.svc_port("grpc", 9090), ko.svc_port("http", 8080)]))
    kube.put(ko.remora("HTTPRoute", "r", spec={"parentRefs": [{"kind": "Service", "name": "web"}],
                                               "rules": [{"backendRefs": [{"name": "web"}]}]}))
    one, two = start_control("replica-a"), start_control("replica-b")
    a, b = fake_agents(one, "a.default"), fake_agents(two, "b.default")

    def settled(agent):
        return wait_snapshot(agent, lambda s: len(s.services) == 3 and len(s.http_routes) == 1)

    def same():
        sa, sb = settled(a), settled(b)
        sa2, sb2 = type(sa)(), type(sb)()
        sa2.CopyFrom(sa)
        sb2.CopyFrom(sb)
        sa2.nonce = sb2.nonce = ""
        return sa2.SerializeToString() == sb2.SerializeToString() and sa.version == sb.version and sa.version

    v1 = wait_until(same, 10, what="identical snapshots")
    kube.put(ko.remora("Service", "extra", spec={"protocol": "tcp", "endpoints": ["10.244.5.5:5432"]}))
    wait_snapshot(a, lambda s: len(s.services) == 4)
    wait_snapshot(b, lambda s: len(s.services) == 4)
    v2 = wait_until(lambda: services_of(a.last).keys() == services_of(b.last).keys() and a.last.version == b.last.version
                    and a.last.version, 10, what="the same new version")
    assert v2 != v1
    # `remoractl status` of each replica reports its agent at the current version
    for cp, node in ((one, "a.default"), (two, "b.default")):
        st = json.loads(cp.ctl("status", "-o", "json").out)
        assert st["version"] == v2
        wait_until(lambda: [x for x in json.loads(cp.ctl("status", "-o", "json").out)["agents"]
                            if x["node"] == node and x["appliedVersion"] == v2], 10, what="ACK recorded")


@pytest.mark.agent_only("a real remora-agent")
def test_real_agent_with_a_projected_token(kube, start_control, tmp_path):
    """The path of an injected pod: the agent certifies with its projected service-account token (TokenReview),
    then serves the Services derived from the cluster's state."""
    from procutil import Proc, free_port, wait_port
    from support import AGENT, http_get
    objs = ko.service_with_pods("web", pods=[("web-1", "10.244.0.5")], cluster_ip="10.96.0.40")
    for o in objs:
        if o["kind"] == "Pod":
            o["metadata"]["annotations"] = dict(INJECTED)
    put_all(kube, objs)
    cp = start_control()
    kube.add_token("projected-web-1", username="system:serviceaccount:default:web", pod_name="web-1")
    token = write(str(tmp_path), "token", "projected-web-1\n")
    admin, listen = free_port(), free_port()
    argv = [AGENT, "--listen", f"127.0.0.1:{listen}", "--control", cp.addr, "--node-id", "web-1.default",
            "--state-dir", str(tmp_path / "agent-state"), "--identity-token", token, "--trust-anchor", cp.trust_anchor,
            "--workers", "1", "--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{free_port()}"]
    env = None
    if os.environ.get("REMORA_SANITIZED") == "1":  # as test_identity.py: see the comment there
        env = dict(os.environ, LSAN_OPTIONS=os.environ.get("LSAN_OPTIONS", "") + ":use_tls=0")
    proc = Proc(argv, str(tmp_path / "agent.log"), env=env)
    try:
        wait_port("127.0.0.1", admin, 10, proc)

        def identity():
            st, _, body = http_get("127.0.0.1", admin, "/identity")
            return st == 200 and "spiffe://remora.local/ns/default/sa/web" in body.decode()
        wait_until(identity, 15, what="the agent's certificate from a TokenReview")

        def served():
            st, _, body = http_get("127.0.0.1", admin, "/config_dump")
            return st == 200 and "10.96.0.40:80" in body.decode() and "10.244.0.5:8080" in body.decode()
        wait_until(served, 15, what="the derived Service in the agent's config")
        wait_until(lambda: [a for a in json.loads(cp.ctl("status", "-o", "json").out)["agents"]
                            if a["node"] == "web-1.default" and a["appliedVersion"] != 0], 10, what="the agent's ACK")
    finally:
        rc = proc.stop(timeout=10)
        if rc not in (0, None):
            print(proc.log_text()[-4000:])
        assert rc in (0, None), f"remora-agent exited with {rc}"


@pytest.mark.agent_only("a real remora-agent")
def test_egress_policy_scopes_a_real_agent(kube, start_control, tmp_path):
    """An EgressPolicy from the API limits what a real agent (its workload known from its certificate, issued
    after a TokenReview of its projected token) receives; changing the policy in the API changes the scope."""
    from procutil import Proc, free_port, wait_port
    from support import AGENT
    objs = ko.service_with_pods("web", pods=[("web-1", "10.244.0.5")], cluster_ip="10.96.0.40")
    for o in objs:
        if o["kind"] == "Pod":
            o["metadata"]["annotations"] = dict(INJECTED)
    put_all(kube, objs)
    kube.put(ko.namespace("shop"))
    kube.put(ko.remora("Service", "api", spec={"protocol": "http1", "endpoints": ["10.244.1.1:80"]}))
    kube.put(ko.remora("Service", "far", "shop", spec={"protocol": "http1", "endpoints": ["10.244.2.2:80"]}))
    kube.put(ko.remora("EgressPolicy", "web", spec={"targetRefs": [{"kind": "ServiceAccount", "name": "web"}],
                                                    "hosts": ["./*"]}))
    cp = start_control()
    kube.add_token("projected-web-1", username="system:serviceaccount:default:web", pod_name="web-1")
    token = write(str(tmp_path), "token", "projected-web-1\n")
    admin, state = free_port(), tmp_path / "agent-state"
    argv = [AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", cp.addr, "--node-id", "web-1.default",
            "--state-dir", str(state), "--identity-token", token, "--trust-anchor", cp.trust_anchor,
            "--workers", "1", "--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{free_port()}"]
    env = None
    if os.environ.get("REMORA_SANITIZED") == "1":  # as test_identity.py: see the comment there
        env = dict(os.environ, LSAN_OPTIONS=os.environ.get("LSAN_OPTIONS", "") + ":use_tls=0")
    proc = Proc(argv, str(tmp_path / "agent.log"), env=env)

    def services():
        """The Services of the snapshot the agent applied and persisted ({ns/name}), once it ACKed it."""
        assert proc.alive(), proc.log_text()[-3000:]
        st = [a for a in json.loads(cp.ctl("status", "-o", "json").out)["agents"] if a["node"] == "web-1.default"]
        path = state / "snapshot.pb"
        if not st or st[0]["appliedVersion"] == 0 or not path.exists():
            return None
        return set(services_of(pb().discovery.Snapshot.FromString(path.read_bytes())))

    try:
        wait_port("127.0.0.1", admin, 10, proc)
        # scoped to its own namespace: shop/far is left out
        wait_until(lambda: services() == {"default/api", "default/web"}, 15, what="the scoped snapshot")
        # the policy changes in the API: the agent gets the Service it now may call
        kube.put(ko.remora("EgressPolicy", "web", spec={"targetRefs": [{"kind": "ServiceAccount", "name": "web"}],
                                                        "hosts": ["./*", "shop/far"]}))
        wait_until(lambda: services() == {"default/api", "default/web", "shop/far"}, 15, what="shop/far in scope")
        # and without a policy every Service
        kube.delete("remora.dev/v1", "EgressPolicy", "default", "web")
        kube.put(ko.remora("Service", "more", "shop", spec={"protocol": "http1", "endpoints": ["10.244.2.3:80"]}))
        wait_until(lambda: services() == {"default/api", "default/web", "shop/far", "shop/more"}, 15,
                   what="the unscoped snapshot")
    finally:
        rc = proc.stop(timeout=10)
        if rc not in (0, None):
            print(proc.log_text()[-4000:])
        assert rc in (0, None), f"remora-agent exited with {rc}"
