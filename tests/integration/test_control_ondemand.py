"""On-demand discovery, the control plane's side (docs/control-plane.md, "On-demand discovery"): an agent in a scope
(an EgressPolicy applies to its workload) asks with AgentMessage.discover for names it met and does not know; the
Services they mean join the scope's discovered set and every stream of the scope gets the widened set whole at the
same version; names that add nothing are answered by an empty delta; bounds (32 names per message, 253 bytes per
name, 256 discovered Services per scope) refuse without ending the stream; the set is gone after a restart.

Real remora-control over TLS; the streams are python3-grpcio clients that hold the discovery stream as the agent
does (Hello with accepts_incremental, ACK every snapshot) and present a workload certificate obtained with
Identity.Certify, which is how the control plane knows the workload (docs/control-plane.md, "Scoping")."""

import os
import queue
import re
import subprocess
import threading
import time

import pytest

from control_support import control_factory, pb, wait_until  # noqa: F401
from procutil import free_port
from support import http_get
import support

pytestmark = pytest.mark.agent_only

SERVICES = 300


def services_doc(names, port=1):
    return "---\n".join(
        f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  protocol: http1\n"
        f"  meshed: false\n  serviceAccount: server\n  endpoints: [\"127.0.0.1:{port}\"]\n" for n in names)


def state_doc():
    route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: far}\nspec:\n"
             "  parentRefs: [{name: far}]\n  rules:\n  - backendRefs: [{name: far-v2}]\n")
    btp = ("apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: far-v2}\nspec:\n"
           "  targetRefs: [{kind: Service, name: far-v2}]\n  connectionPool: {connectTimeout: 2s}\n")
    other_ns = services_doc(["api"]).replace("metadata: {name: api}", "metadata: {name: api, namespace: shop}")
    egress = ("apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: client}\nspec:\n"
              "  targetRefs: [{kind: ServiceAccount, name: client}]\n  hosts: [\"./near\"]\n")
    return "---\n".join([services_doc(["near", "far", "far-v2"] + [f"svc-{i}" for i in range(SERVICES)]), other_ns,
                         route, btp, egress])


def apply(cp, text):
    r = cp.ctl("apply", "-f", "-", stdin=text, timeout=60)
    assert r.rc == 0, r
    return int(re.search(r"version (\d+)", r.out).group(1))


def workload_cert(cp, workdir, sa):
    """A workload certificate of (default, sa) from Identity.Certify: (chain PEM, key PEM)."""
    ipb = pb().identity
    r = cp.ctl("token", "create", "--namespace", "default", "--service-account", sa)
    assert r.rc == 0, r
    key, csr = os.path.join(workdir, sa + ".key"), os.path.join(workdir, sa + ".csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-subj", "/CN=x", "-outform", "DER", "-out", csr],
                   check=True, capture_output=True, timeout=30)
    with cp.grpc_channel() as ch:
        m = ch.unary_unary("/remora.v1.Identity/Certify", request_serializer=ipb.CertifyRequest.SerializeToString,
                           response_deserializer=ipb.CertifyResponse.FromString)
        with open(csr, "rb") as f:
            req = ipb.CertifyRequest(csr_der=f.read(), token=r.out.strip(), node_id=f"{sa}-node")
        resp = m(req, timeout=10)
    pem = b""
    for der in resp.cert_chain_der:
        pem += subprocess.run(["openssl", "x509", "-inform", "DER"], input=der, capture_output=True, check=True,
                              timeout=30).stdout
    with open(key, "rb") as f:
        return pem, f.read()


class Stream:
    """A discovery stream held as remora-agent holds it: Hello (accepts_incremental; applied_version and store_id of
    a kept set), an ACK for every snapshot; discover() sends an AgentMessage.discover."""

    def __init__(self, cp, node_id, cert=None, token=None, applied_version=0, store_id=b"", incremental=True):
        d = pb().discovery
        self.node_id = node_id
        self.snapshots = []
        self.error = None
        self._closed = False
        self.nack_next = 0   # NACK this many of the next snapshots instead of ACKing them
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._out = queue.Queue()
        chain, key = cert if cert is not None else (None, None)
        self.channel = cp.grpc_channel(token=token, cert_chain=chain, key=key,
                                       options=[("grpc.use_local_subchannel_pool", 1)])
        method = self.channel.stream_stream("/remora.v1.Discovery/StreamSnapshots",
                                            request_serializer=d.AgentMessage.SerializeToString,
                                            response_deserializer=d.Snapshot.FromString)
        self._out.put(d.AgentMessage(hello=d.Hello(node_id=node_id, applied_version=applied_version,
                                                   accepts_incremental=incremental, store_id=store_id)))
        self.call = method(self._requests())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            m = self._out.get()
            if m is None:
                return
            yield m

    def _read(self):
        import grpc
        d = pb().discovery
        try:
            for snap in self.call:
                if self.nack_next > 0:
                    self.nack_next -= 1
                    self._out.put(d.AgentMessage(nack=d.Nack(version=snap.version, nonce=snap.nonce, reason="test")))
                else:
                    self._out.put(d.AgentMessage(ack=d.Ack(version=snap.version, nonce=snap.nonce)))
                with self._cond:
                    self.snapshots.append(snap)
                    self._cond.notify_all()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def discover(self, *names):
        d = pb().discovery
        self._out.put(d.AgentMessage(discover=d.Discover(names=list(names))))

    def nth(self, n, timeout=10.0):
        """The n-th snapshot received (1-based), waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.snapshots) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    raise AssertionError(f"{self.node_id}: {len(self.snapshots)} snapshots, not {n}, within {timeout}s "
                                         f"(error {self.error!r})")
                self._cond.wait(left)
            return self.snapshots[n - 1]

    def count(self):
        with self._cond:
            return len(self.snapshots)

    def ask(self, *names, timeout=10.0):
        """Sends a Discover and returns the next snapshot."""
        n = self.count()
        self.discover(*names)
        return self.nth(n + 1, timeout)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._out.put(None)
        self.ended.wait(2.0)
        self.call.cancel()
        self.channel.close()
        self._thread.join(5.0)


@pytest.fixture
def streams():
    opened = []

    def open_(*a, **kw):
        s = Stream(*a, **kw)
        opened.append(s)
        return s
    yield open_
    for s in opened:
        s.close()


def names(items):
    return sorted(f"{x.metadata.namespace or 'default'}/{x.metadata.name}" for x in items)


def discovery_counts(mport):
    m = support.parse_prometheus(http_get("127.0.0.1", mport, "/metrics", timeout=5)[2].decode())
    return {r: support.metric(m, "remora_control_discovery_names_total", result=r)
            for r in ("found", "unknown", "over_limit", "unscoped")}


def test_on_demand_discovery(control_factory, streams, tmp_path):
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    cp.stop()
    cp.start(log_level="debug")
    v = apply(cp, state_doc())
    cert = workload_cert(cp, str(tmp_path), "client")
    a = streams(cp, "client-a", cert=cert)
    b = streams(cp, "client-b", cert=cert)
    first = a.nth(1)
    assert first.version == v and not first.incremental and first.scoped and list(first.discovered) == []
    assert names(first.services) == ["default/near"] and len(first.http_routes) == 0
    assert b.nth(1).scoped and names(b.nth(1).services) == ["default/near"]
    assert discovery_counts(mport) == {"found": 0, "unknown": 0, "over_limit": 0, "unscoped": 0}

    # a Service outside the scope, asked by one of its authorities: the scope's new set whole at the same version,
    # with its route, the route's backend and the policy on it; a new store_id (the set is another one)
    s = a.ask("far.default.svc.cluster.local")
    assert (s.version, s.incremental, s.scoped) == (v, False, True), s
    assert list(s.discovered) == ["far.default.svc.cluster.local"]
    assert names(s.services) == ["default/far", "default/far-v2", "default/near"]
    assert [r.metadata.name for r in s.http_routes] == ["far"]
    assert [p.metadata.name for p in s.backend_traffic_policies] == ["far-v2"]
    assert s.store_id != first.store_id and len(s.store_id) == 16
    # the other stream of the workload gets the widened set too, whole, without `discovered`
    sb = b.nth(2)
    assert (sb.version, sb.incremental, sb.scoped, list(sb.discovered)) == (v, False, True, []), sb
    assert names(sb.services) == names(s.services) and sb.store_id == s.store_id

    # names that add nothing: unknown ones, and a Service in the set already (any authority form): an empty delta
    # on the version served, carrying the names
    e = a.ask("nosuch", "far", "near.default.svc", "api.nosuch", "near.default.svc.cluster.local.")
    assert (e.version, e.incremental, e.base_version, e.scoped) == (v, True, v, True), e
    assert sorted(e.discovered) == ["api.nosuch", "far", "near.default.svc", "near.default.svc.cluster.local.",
                                    "nosuch"]
    assert len(e.services) == 0 and len(e.removed) == 0 and e.store_id == s.store_id
    assert discovery_counts(mport) == {"found": 4, "unknown": 2, "over_limit": 0, "unscoped": 0}
    time.sleep(0.3)
    assert b.count() == 2   # nothing for the other stream
    # another namespace's Service: only with its namespace ("api" alone would be default/api)
    s = a.ask("api.shop")
    assert not s.incremental and list(s.discovered) == ["api.shop"] and "shop/api" in names(s.services)

    # bounds: 33 names in a message (the 33rd dropped, not answered), a name over 253 bytes; the stream goes on
    before = discovery_counts(mport)
    s = a.ask(*[f"svc-{i}" for i in range(33)])
    assert not s.incremental and sorted(s.discovered) == sorted(f"svc-{i}" for i in range(32))
    assert "default/svc-31" in names(s.services) and "default/svc-32" not in names(s.services)
    e = a.ask("x" * 254, "svc-0")
    assert e.incremental and list(e.discovered) == ["svc-0"]
    after = discovery_counts(mport)
    assert (after["found"] - before["found"], after["over_limit"] - before["over_limit"]) == (33, 2), (before, after)
    assert a.error is None and not a.ended.is_set()
    assert cp.log().count("Discover refused in part") == 1, cp.log()[-3000:]

    # the discovered set holds 256 Services: far, api and svc-0..31 are 34; 222 more fill it, the next is refused
    # (answered, not added)
    wanted = [f"svc-{i}" for i in range(32, 32 + 222)]
    for i in range(0, len(wanted), 32):
        s = a.ask(*wanted[i:i + 32])
        assert not s.incremental and sorted(s.discovered) == sorted(wanted[i:i + 32])
    assert len([x for x in s.services if x.metadata.name.startswith("svc-")]) == 254
    before = discovery_counts(mport)
    e = a.ask("svc-254")
    assert e.incremental and list(e.discovered) == ["svc-254"] and len(e.services) == 0
    assert discovery_counts(mport)["over_limit"] == before["over_limit"] + 1
    assert "holds 256 discovered Services already" in cp.log()
    grown = a.snapshots[-2]
    wait_until(lambda: b.snapshots[-1].store_id == grown.store_id, timeout=10, what="b at the full set")
    assert names(b.snapshots[-1].services) == names(grown.services)

    # a stream in no scope (a workload no EgressPolicy applies to): every name unknown, an empty delta
    u = streams(cp, "unscoped", token=open(cp.token(service_account="web", node_id="u")).read().strip())
    full = u.nth(1)
    assert not full.scoped and len(full.services) == SERVICES + 4
    before = discovery_counts(mport)
    e = u.ask("far", "nosuch")
    assert (e.version, e.incremental, e.base_version, e.scoped) == (v, True, v, False), e
    assert sorted(e.discovered) == ["far", "nosuch"] and len(e.services) == 0
    assert discovery_counts(mport)["unscoped"] == before["unscoped"] + 2

    # a change of the store: the scope's deltas carry the discovered Services' changes as the hosts' ones
    n = a.count()
    v2 = apply(cp, services_doc(["far-v2"], port=2))
    s = a.nth(n + 1)
    assert (s.version, s.incremental, s.scoped) == (v2, True, True), s
    assert names(s.services) == ["default/far-v2"]
    assert cp_answers(mport)["nack"] == 0

    # while the scope lives (b holds it), an agent back with the grown set's store_id gets an empty delta
    kept = a.snapshots[-1]
    grown_id = grown.store_id
    assert kept.store_id == grown_id
    a.close()
    a = streams(cp, "client-a", cert=cert, applied_version=kept.version, store_id=grown_id)
    s = a.nth(1)
    assert (s.version, s.incremental, s.base_version, s.scoped) == (v2, True, v2, True) and len(s.services) == 0, s

    # restart on the same state directory: the discovered set is gone; an agent back with the grown set's store_id
    # gets its scope's set whole (it will ask again), one with the plain scope's id an empty delta
    for x in (a, b, u):
        x.close()
    cp.stop()
    cp.start(log_level="debug")
    c = streams(cp, "client-a", cert=cert, applied_version=kept.version, store_id=grown_id)
    s = c.nth(1)
    assert (s.version, s.incremental, s.scoped) == (v2, False, True), s
    assert names(s.services) == ["default/near"] and s.store_id == first.store_id
    d = streams(cp, "client-d", cert=cert, applied_version=v2, store_id=first.store_id)
    s = d.nth(1)
    assert (s.version, s.incremental, s.base_version) == (v2, True, v2) and len(s.services) == 0, s
    # and it asks again
    s = c.ask("far")
    assert not s.incremental and "default/far" in names(s.services)
    assert discovery_counts(mport) == {"found": 1, "unknown": 0, "over_limit": 0, "unscoped": 0}


def cp_answers(mport):
    m = support.parse_prometheus(http_get("127.0.0.1", mport, "/metrics", timeout=5)[2].decode())
    return {r: support.metric(m, "remora_control_answers_total", result=r) for r in ("ack", "nack")}


def test_answers_without_a_base(control_factory, streams, tmp_path):
    """An agent that takes no deltas gets its answer with the set whole; a NACKed empty delta is followed by the set
    whole (last-good semantics as for any delta), and the stream goes on."""
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    v = apply(cp, state_doc())
    cert = workload_cert(cp, str(tmp_path), "client")
    old = streams(cp, "no-deltas", cert=cert, incremental=False)
    assert old.nth(1).scoped
    s = old.ask("nosuch")
    assert (s.version, s.incremental, s.scoped, list(s.discovered)) == (v, False, True, ["nosuch"]), s
    assert names(s.services) == ["default/near"]
    s = old.ask("far")
    assert not s.incremental and list(s.discovered) == ["far"] and "default/far" in names(s.services)

    k = streams(cp, "nacks", cert=cert)
    first = k.nth(1)
    assert names(first.services) == names(s.services)   # the scope's set, grown by the other stream
    k.nack_next = 1
    e = k.ask("nosuch")
    assert e.incremental and list(e.discovered) == ["nosuch"]
    again = k.nth(3)
    assert (again.version, again.incremental, list(again.discovered)) == (v, False, []), again
    assert names(again.services) == names(first.services)
    assert cp_answers(mport)["nack"] == 1
    # the stream goes on: the next answer is an empty delta again
    e = k.ask("nosuch-2")
    assert e.incremental and list(e.discovered) == ["nosuch-2"]
    assert discovery_counts(mport) == {"found": 1, "unknown": 3, "over_limit": 0, "unscoped": 0}
