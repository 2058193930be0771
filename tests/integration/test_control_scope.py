"""Scoping (docs/control-plane.md, "Scoping"): an EgressPolicy limits which Services (and their routes and
policies) the agents of a workload receive, as Istio's Sidecar egress hosts do.

Real remora-control and real remora-agent processes. Each agent obtains its workload certificate with a
bootstrap token of its ServiceAccount; the control plane knows the workload from the stream's client
certificate. Prints the figures (run with -s)."""

import os
import re
import signal

import pytest

from control_support import agent_status, control_factory, cp_metric, origin, pb, status_json, wait_until, write  # noqa: F401
from procutil import Proc, free_port
from support import AGENT, http_get
import support

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
N = 2000


def services_doc(first, n, port, ns=None, prefix="svc"):
    meta = f", namespace: {ns}" if ns else ""
    return "---\n".join(
        f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: {prefix}-{i}{meta}}}\nspec:\n  protocol: http1\n"
        f"  meshed: false\n  serviceAccount: server\n  endpoints: [\"127.0.0.1:{port}\"]\n" for i in range(first, n))


def egress_doc(name, hosts, sas=None, ns="default"):
    targets = "" if sas is None else "  targetRefs: [" + ", ".join(f"{{kind: ServiceAccount, name: {s}}}" for s in sas) + "]\n"
    return (f"apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
            f"{targets}  hosts: [{', '.join(repr(h) for h in hosts)}]\n")


def apply(cp, text, timeout=60):
    r = cp.ctl("apply", "-f", "-", "--wait", "--timeout", str(timeout - 10), stdin=text, timeout=timeout)
    assert r.rc == 0, r
    return int(re.search(r"version (\d+)", r.out).group(1))


class Agent:
    def __init__(self, workdir, cp, node_id, sa):
        self.workdir, self.cp, self.node_id = workdir, cp, node_id
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = os.path.join(workdir, f"{node_id}.state")
        os.makedirs(self.state_dir, exist_ok=True)
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", cp.addr, "--node-id", node_id,
                "--state-dir", self.state_dir, "--admin", f"127.0.0.1:{self.admin}", "--workers", "1",
                "--health", f"127.0.0.1:{self.health}",
                # on-demand discovery off: these tests check what a scope holds by itself (asking for more:
                # test_control_ondemand.py, test_ondemand.py)
                "--discovery-timeout-ms", "0"] + cp.agent_args(node_id, service_account=sa)
        self.proc = Proc(argv, os.path.join(workdir, f"{node_id}.log"))

    def wait_version(self, version, timeout=30):
        def at():
            assert self.proc.alive(), self.proc.log_text()[-3000:]
            return (agent_status(self.cp, self.node_id) or {}).get("appliedVersion") == version
        wait_until(at, timeout=timeout, what=f"{self.node_id} at v{version}")

    def persisted(self):
        with open(os.path.join(self.state_dir, "snapshot.pb"), "rb") as f:
            return pb().discovery.Snapshot.FromString(f.read())

    def services(self):
        return sorted(s.metadata.name for s in self.persisted().services)

    def metrics(self):
        return support.parse_prometheus(http_get("127.0.0.1", self.health, "/metrics", timeout=5)[2].decode())

    def updates(self, kind):
        m = self.metrics()
        return (support.metric(m, "remora_control_updates_total", kind=kind) or 0,
                support.metric(m, "remora_control_update_bytes_total", kind=kind) or 0)

    def get(self, host):
        return http_get("127.0.0.1", self.port, "/x", headers={"Host": host}, timeout=5)[0]

    def rss_kb(self):
        return self.proc.rss_kb(include_children=False)


@pytest.fixture
def agent_factory(tmp_path):
    started = []

    def make(cp, node_id, sa):
        a = Agent(str(tmp_path), cp, node_id, sa)
        started.append(a)
        return a
    yield make
    for a in started:
        if a.proc.alive():
            assert a.proc.stop(signal.SIGTERM, timeout=10) == 0, a.proc.log_text()[-3000:]


def test_scoped_agent_gets_its_services_only(control_factory, agent_factory, origin, tmp_path):
    """2 of 2000 Services: the scoped agent holds and routes those 2 (the others are unknown authorities: 404),
    its RSS is close to an agent whose scope is empty and far below an unscoped one's; a change outside its
    scope sends it an empty delta; a scope change sends it the new set whole; a change inside, a delta. Two
    agents of the same workload share the scope's encodings (one per version)."""
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    cp.stop()
    cp.start(log_level="debug")
    apply(cp, services_doc(0, N, origin), timeout=120)
    v = apply(cp, egress_doc("client", ["./svc-1", "./svc-2"], sas=["client"]) + "---\n" +
              egress_doc("nothing", ["elsewhere/*"], sas=["idle"]))
    scoped = [agent_factory(cp, f"client-{i}", "client") for i in range(2)]
    idle = agent_factory(cp, "idle", "idle")
    everything = agent_factory(cp, "everything", "web")
    agents = scoped + [idle, everything]
    for a in agents:
        a.wait_version(v)
    assert scoped[0].services() == ["svc-1", "svc-2"] and scoped[1].services() == ["svc-1", "svc-2"]
    assert idle.services() == []
    assert len(everything.services()) == N and len(everything.persisted().egress_policies) == 2
    assert len(scoped[0].persisted().egress_policies) == 0
    # routing: in scope, through the agent; out of scope, an unknown authority as for a name nobody defines
    assert scoped[0].get("svc-1") == 200 and scoped[0].get("svc-2") == 200
    assert scoped[0].get("svc-3") == 404 and scoped[0].get("svc-1999") == 404 and scoped[0].get("nosuch") == 404
    assert everything.get("svc-3") == 200
    # memory: the scoped agent is about as big as the one that knows nothing
    rss = {a.node_id: a.rss_kb() for a in agents}
    print(f"\nRSS (KB) with {N} Services: scoped to 2 {rss['client-0']}, empty scope {rss['idle']}, "
          f"unscoped {rss['everything']}")
    assert rss["client-0"] - rss["idle"] < 1024, rss
    assert rss["everything"] - rss["client-0"] > 1200, rss   # about 1 KB per Service (BENCHMARKS.md)
    # one encoding per scope and version, shared by both agents of the workload
    assert len(re.findall(rf"scope default/client/client at version {v}:", cp.log())) == 1, cp.log()[-3000:]

    # a change outside the scope: an empty delta (a few bytes) to the scoped agents, the Service to the others
    d0, b0 = scoped[0].updates("delta")
    f0, _ = scoped[0].updates("full")
    v = apply(cp, services_doc(1500, 1501, 1))
    for a in agents:
        a.wait_version(v)
    d1, b1 = scoped[0].updates("delta")
    assert (d1 - d0, scoped[0].updates("full")[0] - f0) == (1, 0)
    print(f"change outside the scope: {b1 - b0} bytes to the scoped agent")
    assert b1 - b0 < 80, (b0, b1)
    assert scoped[0].services() == ["svc-1", "svc-2"]
    assert everything.get("svc-1500") in (502, 503)   # its new endpoint refuses connections

    # the scope grows: the new set, whole (svc-3 did not change, so no delta could carry it)
    v = apply(cp, egress_doc("client", ["./svc-1", "./svc-2", "./svc-3"], sas=["client"]))
    for a in scoped:
        a.wait_version(v)
        assert a.services() == ["svc-1", "svc-2", "svc-3"]
        assert a.get("svc-3") == 200
    assert scoped[0].updates("full")[0] == f0 + 1
    # a change inside the scope: a delta carrying it
    v = apply(cp, services_doc(2, 3, origin).replace("serviceAccount: server", "serviceAccount: server2"))
    scoped[0].wait_version(v)
    assert scoped[0].updates("delta")[0] == d1 + 1
    assert [s.spec.service_account for s in scoped[0].persisted().services if s.metadata.name == "svc-2"] == ["server2"]
    # the scope shrinks: svc-3 leaves (still stored), whole again
    v = apply(cp, egress_doc("client", ["./svc-1"], sas=["client"]))
    scoped[0].wait_version(v)
    assert scoped[0].services() == ["svc-1"] and scoped[0].get("svc-2") == 404
    assert scoped[0].updates("full")[0] == f0 + 2
    # the policy deleted: the workload is in no scope any more and gets everything
    assert cp.ctl("delete", "egresspolicy", "client").rc == 0
    v = status_json(cp)["version"]
    scoped[0].wait_version(v)
    assert len(scoped[0].services()) == N and scoped[0].get("svc-1999") == 200
    assert cp_metric(mport, "remora_control_answers_total", result="nack") == 0


def test_scope_survives_a_control_plane_restart_and_follows_routes(control_factory, agent_factory, origin, tmp_path):
    """A scope's routes bring their backends (and the policies attached to them); a namespace-wide policy (no
    targetRefs) applies to every workload of its namespace but one a targeted policy names; the workload's
    own Services are always in; after a restart of the control plane the scoped agent gets an empty delta."""
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: api}\nspec:\n"
             "  parentRefs: [{name: api}]\n  rules:\n  - backendRefs: [{name: api-v2}]\n")
    btp = ("apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: api-v2}\nspec:\n"
           "  targetRefs: [{kind: Service, name: api-v2}]\n  connectionPool: {connectTimeout: 2s}\n")
    own = ("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: mine}\nspec:\n  protocol: http1\n"
           "  meshed: false\n  serviceAccount: worker\n  endpoints: [\"127.0.0.1:1\"]\n")
    v = apply(cp, "---\n".join([services_doc(0, 50, origin), services_doc(0, 1, origin, prefix="api").replace("api-0", "api"),
                                services_doc(0, 1, origin, prefix="api").replace("api-0", "api-v2"), route, btp, own,
                                egress_doc("wide", ["./api"]), egress_doc("special", ["*/svc-7"], sas=["special"])]))
    worker = agent_factory(cp, "worker", "worker")
    special = agent_factory(cp, "special", "special")
    worker.wait_version(v)
    special.wait_version(v)
    p = worker.persisted()
    assert worker.services() == ["api", "api-v2", "mine"]
    assert [r.metadata.name for r in p.http_routes] == ["api"]
    assert [b.metadata.name for b in p.backend_traffic_policies] == ["api-v2"]
    assert worker.get("api") == 200 and worker.get("svc-7") == 404
    assert special.services() == ["svc-7"]
    # restart on the same state directory: the same store identity, an empty delta to both
    full = [a.updates("full")[0] for a in (worker, special)]
    cp.stop()
    cp.start()
    wait_until(lambda: sum(x["connected"] and x["appliedVersion"] == v for x in status_json(cp)["agents"]) == 2,
               timeout=20, what="both agents back")
    wait_until(lambda: cp_metric(mport, "remora_control_answers_total", result="ack") == 2, timeout=10, what="2 ACKs")
    assert cp_metric(mport, "remora_control_pushes_total", kind="full") == 0
    assert cp_metric(mport, "remora_control_pushes_total", kind="delta") == 2
    assert [a.updates("full")[0] for a in (worker, special)] == full
    assert worker.services() == ["api", "api-v2", "mine"]
    # the same node and state directory back under another service account at the same version: the set it kept
    # is the old scope's, and its Hello says so (a scope's encodings carry a store_id of their own): it gets the
    # new scope's set whole, not an empty confirmation
    assert worker.proc.stop(signal.SIGTERM, timeout=10) == 0
    for f in os.listdir(worker.state_dir):  # its workload certificate goes, its snapshot stays
        if f != "snapshot.pb":
            os.unlink(os.path.join(worker.state_dir, f))
    moved = agent_factory(cp, "worker", "special")
    moved.wait_version(v)
    wait_until(lambda: moved.services() == ["svc-7"], timeout=10, what="the new scope's set")
    assert moved.updates("full")[0] == 1 and moved.get("svc-7") == 200 and moved.get("api") == 404


def test_egress_policy_validation(control_factory, tmp_path):
    """Errors name FILE:LINE and the field."""
    cp = control_factory()
    bad = write(str(tmp_path), "bad.yaml",
                "apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: x}\nspec:\n"
                "  targetRefs: [{kind: Deployment, name: web}]\n  hosts: [\"./a\"]\n"
                "---\napiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: y}\nspec:\n"
                "  hosts:\n  - ./ok\n  - no-slash\n"
                "---\napiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: z}\nspec:\n  hosts: []\n")
    r = cp.ctl("apply", "-f", bad)
    assert r.rc != 0, r
    assert f"{bad}:5: egresspolicy/x: spec.targetRefs[0].kind: kind 'Deployment' is not supported" in r.err, r.err
    assert f"{bad}:14: egresspolicy/y: spec.hosts[1]: 'no-slash' must be NAMESPACE/NAME" in r.err, r.err
    assert f"{bad}:20: egresspolicy/z: spec.hosts: needs at least one host" in r.err, r.err
    ok = write(str(tmp_path), "ok.yaml", egress_doc("web", ["./*", "*/echo", "shop/api"], sas=["web"]))
    r = cp.ctl("apply", "-f", ok)
    assert r.rc == 0, r
    st = status_json(cp)
    assert st["version"] >= 1
    # remoractl get lists it (table and YAML), and delete removes it
    r = cp.ctl("get", "egresspolicies")
    assert r.rc == 0 and re.search(r"^NAMESPACE\s+NAME\s+WORKLOADS\s+HOSTS$", r.out, re.M), r
    assert re.search(r"^default\s+web\s+sa/web\s+\./\*,\*/echo,shop/api$", r.out, re.M), r.out
    r = cp.ctl("get", "egresspolicy", "web", "-o", "yaml")
    assert r.rc == 0 and "kind: EgressPolicy" in r.out and "shop/api" in r.out, r
    assert cp.ctl("delete", "egresspolicy", "web").rc == 0
    r = cp.ctl("get", "egresspolicies")
    assert r.rc == 0 and "web" not in r.out, r
