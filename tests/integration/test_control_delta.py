"""Incremental updates between remora-control and agents (docs/control-plane.md, "Incremental updates"):
an agent whose Hello sets accepts_incremental gets, after a change, only what changed since the version it
ACKed; older agents keep getting full snapshots.

Real remora-control, real remora-agent (which always accepts deltas) and remora-fake-agents (--incremental
or not; each reports per snapshot how it came, its size, and a digest of its merged resource set, so a
delta-fed agent can be compared with a full-fed one). Prints the figures (run with -s).

The scale figure of docs/BENCHMARKS.md ("Scale", "Incremental updates") is test_scale_incremental: 50 agents
x 2000 Services by default; REMORA_DELTA_SCALE=AGENTSxSERVICES (e.g. 1000x10000) runs the bigger shape, which
is not part of the default command (it takes minutes and several GB on a shared machine)."""

import json
import os
import re
import signal
import statistics
import time

import pytest

from control_support import (FakeAgentFleet, agent_status, agents, control, control_factory, pb,  # noqa: F401
                             service_doc, split_route_doc, status_json, wait_until, write)
from procutil import Proc, free_port
from support import AGENT, http_get

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"


def services_doc(first, n, port=27201, prefix="svc", routes=False):
    out = []
    for i in range(first, n):
        out.append(f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: {prefix}-{i}}}\nspec:\n  protocol: http1\n"
                   f"  meshed: false\n  endpoints: [\"127.0.0.1:{port}\"]\n")
        if routes:
            out.append(f"apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {{name: route-{i}}}\nspec:\n"
                       f"  parentRefs: [{{kind: Service, name: {prefix}-{i}}}]\n  rules:\n"
                       f"  - backendRefs: [{{name: {prefix}-{i}}}]\n    timeouts: {{request: 10s}}\n")
    return "---\n".join(out)


def fleet_lines(fleet, version=None):
    """The fake agents' snapshot lines: (node, version, answer, kind, bytes, resources, digest)."""
    out = []
    for line in fleet.log().splitlines():
        f = line.split()
        if len(f) == 7 and f[1].isdigit():
            row = (f[0], int(f[1]), f[2], f[3], int(f[4]), int(f[5]), f[6])
            if version is None or row[1] == version:
                out.append(row)
    return out


def apply(cp, text, wait=True, timeout=30):
    args = ["apply", "-f", "-"] + (["--wait", "--timeout", str(max(20, timeout - 10))] if wait else [])
    r = cp.ctl(*args, stdin=text, timeout=timeout)
    assert r.rc == 0, r
    m = re.search(r"version (\d+)", r.out)
    return int(m.group(1)) if m else status_json(cp)["version"]


# --------------------------------------------------------------------------------------- fake agents

def _metrics(port):
    import support
    return support.parse_prometheus(http_get("127.0.0.1", port, "/metrics", timeout=5)[2].decode())


def _value(m, name, **labels):
    import support
    return support.metric(m, name, **labels) or 0


def test_old_agents_full_new_agents_delta(control_factory, tmp_path):
    """Fake agents without --incremental (older agents) get full snapshots; with it, deltas; both end with
    the same resource set (digest) at every version, deletions included; the control plane counts pushes
    and bytes by kind."""
    mport = free_port()
    control = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    v = apply(control, services_doc(0, 200, routes=True), wait=False)
    old = FakeAgentFleet(str(tmp_path), control, 3, prefix="old-")
    new = FakeAgentFleet(str(tmp_path), control, 3, prefix="new-", extra=["--incremental"])
    try:
        old.wait_ready()
        new.wait_ready()
        changes = [services_doc(7, 8, port=27299),                                   # one Service changed
                   services_doc(200, 201, routes=True),                              # a Service and a route created
                   None,                                                             # a route deleted
                   services_doc(3, 5, port=27298)]                                   # two Services changed
        for change in changes:
            if change is None:
                r = control.ctl("delete", "httproute", "route-9")
                assert r.rc == 0, r
                v += 1
            else:
                v = apply(control, change)
            wait_until(lambda: len(fleet_lines(old, v)) == 3 and len(fleet_lines(new, v)) == 3, timeout=10,
                       what=f"v{v} at every fake agent")
            rows = fleet_lines(old, v) + fleet_lines(new, v)
            assert {r[2] for r in rows} == {"ack"}, rows
            assert {r[3] for r in fleet_lines(old, v)} == {"full"}, rows
            assert {r[3] for r in fleet_lines(new, v)} == {"delta"}, rows
            assert len({(r[5], r[6]) for r in rows}) == 1, rows   # same set, delta-fed or not
            full_bytes, delta_bytes = fleet_lines(old, v)[0][4], fleet_lines(new, v)[0][4]
            assert delta_bytes * 20 < full_bytes, rows
        print(f"\n200 Services + 200 routes: full {full_bytes} B, delta {delta_bytes} B per agent for the last change")
        # the deleted route is gone from both
        assert fleet_lines(new, v)[0][5] == 201 + 200
        m = _metrics(mport)
        assert _value(m, "remora_control_pushes_total", kind="delta") == 3 * len(changes)
        assert _value(m, "remora_control_pushes_total", kind="full") == 3 + 3 * (len(changes) + 1)
        assert 0 < _value(m, "remora_control_push_bytes_total", kind="delta") < 3 * len(changes) * 400
        assert _value(m, "remora_control_answers_total", result="ack") == 6 * (len(changes) + 1)
        assert _value(m, "remora_control_agents", state="current") == 6
        assert _value(m, "remora_control_streams") == 6
    finally:
        assert old.stop() == 0, old.log()[-3000:]
        assert new.stop() == 0, new.log()[-3000:]


def test_one_service_change_with_2000_known_is_small(control, tmp_path):
    """A change to one Service among 2000 (and 2000 routes) sends that Service: bytes bounded and printed."""
    apply(control, services_doc(0, 2000, routes=True), wait=False, timeout=60)
    fleet = FakeAgentFleet(str(tmp_path), control, 2, prefix="d-", extra=["--incremental"])
    try:
        fleet.wait_ready(timeout=60)
        first = fleet_lines(fleet)
        assert {r[3] for r in first} == {"full"} and first[0][5] == 4000, first
        full_bytes = first[0][4]
        v = apply(control, services_doc(1234, 1235, port=27290))
        wait_until(lambda: len(fleet_lines(fleet, v)) == 2, timeout=10, what="the change at both agents")
        rows = fleet_lines(fleet, v)
        assert {(r[2], r[3]) for r in rows} == {("ack", "delta")}, rows
        delta_bytes = rows[0][4]
        print(f"\n2000 Services + 2000 routes: full snapshot {full_bytes} B, one-Service delta {delta_bytes} B")
        assert delta_bytes < 400, rows
        assert full_bytes > 200_000, first
    finally:
        assert fleet.stop() == 0, fleet.log()[-3000:]


# --------------------------------------------------------------------------------------- real agents

class Agent:
    """A real remora-agent on the control plane, with an admin port and a state directory."""

    def __init__(self, workdir, cp, node_id, state_dir=None):
        self.workdir, self.cp, self.node_id = workdir, cp, node_id
        self.port, self.health, self.admin = free_port(), free_port(), free_port()
        self.state_dir = state_dir or os.path.join(workdir, f"{node_id}.state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.cred = cp.agent_args(node_id)
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        argv = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--control", self.cp.addr, "--node-id", self.node_id,
                "--state-dir", self.state_dir, "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}"] + self.cred
        self.proc = Proc(argv, os.path.join(self.workdir, f"{self.node_id}.{self.starts}.log"))
        return self

    def wait_version(self, version, timeout=15):
        def at():
            assert self.proc.alive(), self.proc.log_text()[-3000:]
            return (agent_status(self.cp, self.node_id) or {}).get("appliedVersion") == version
        wait_until(at, timeout=timeout, what=f"{self.node_id} at v{version}")

    def log(self):
        return self.proc.log_text()

    def config_dump(self):
        status, _, body = http_get("127.0.0.1", self.admin, "/config_dump", timeout=5)
        assert status == 200, status
        return json.loads(body)

    def persisted(self):
        """The resource set this agent keeps as its last good snapshot (state-dir/snapshot.pb)."""
        with open(os.path.join(self.state_dir, "snapshot.pb"), "rb") as f:
            s = pb().discovery.Snapshot.FromString(f.read())
        s.nonce = ""
        return s

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            return self.proc.stop(sig, timeout=10)


@pytest.fixture
def real_agents(tmp_path):
    started = []

    def make(cp, node_id, **kw):
        a = Agent(str(tmp_path), cp, node_id, **kw)
        started.append(a)
        return a

    yield make
    for a in started:
        if a.proc is not None and a.proc.alive():
            assert a.stop() == 0, a.log()[-3000:]


def _normalized_dump(d, agent):
    """A config dump without what differs between two agents given the same snapshot: the generation and their own ports."""
    text = json.dumps(d, sort_keys=True)
    for port in (agent.port, agent.health, agent.admin):
        text = text.replace(f":{port}", ":PORT").replace(f" {port},", " PORT,").replace(f" {port}}}", " PORT}")
    d = json.loads(text)
    d.pop("generation", None)
    return d


def _full_snapshot(cp, agents_fixture, name):
    """The control plane's full snapshot now, as an agent that never had one gets it (a python fake agent)."""
    a = agents_fixture(cp, name)
    s = a.wait_version(status_json(cp)["version"])
    s = type(s).FromString(s.SerializeToString())
    s.nonce = ""
    return s


def _origin(tmp_path):
    from procutil import PYTHON, TOOLS_DIR, wait_ready_file
    ready = os.path.join(str(tmp_path), "origin.port")
    p = Proc([PYTHON, os.path.join(TOOLS_DIR, "h1_origin.py"), "--port", "0", "--ready-file", ready],
             os.path.join(str(tmp_path), "origin.log"))
    return p, wait_ready_file(ready, p, 15)


def test_real_agent_merges_deltas_like_a_full_snapshot(control, real_agents, agents, tmp_path):
    """Services and routes added, changed and removed over several applies: after each, the agent's merged
    set equals the control plane's full snapshot, and at the end its /config_dump equals a fresh agent's
    (which got one full snapshot); traffic follows."""
    origin, oport = _origin(tmp_path)
    try:
        v = apply(control, services_doc(0, 30, port=oport, routes=True))
        a = real_agents(control, "inc").start()
        a.wait_version(v)
        steps = [
            ("add", services_doc(30, 33, port=oport, routes=True)),
            ("modify service", services_doc(5, 6, port=27999)),
            ("modify route", "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: route-3}\nspec:\n"
                             "  parentRefs: [{kind: Service, name: svc-3}]\n  rules:\n"
                             "  - backendRefs: [{name: svc-4}]\n    timeouts: {request: 5s}\n"),
            ("delete route", ("httproute", "route-7")),
            ("delete service", ("service", "svc-7")),
            ("add and modify", services_doc(33, 34, port=oport, routes=True) + "---\n" + services_doc(1, 2, port=27998)),
        ]
        for i, (what, change) in enumerate(steps):
            if isinstance(change, tuple):
                r = control.ctl("delete", *change)
                assert r.rc == 0, r
                v = status_json(control)["version"]
            else:
                v = apply(control, change)
            a.wait_version(v)
            full = _full_snapshot(control, agents, f"full-{i}")
            got = a.persisted()
            assert got.version == v
            assert got == full, f"{what}: merged set differs from the full snapshot"
        log = a.log()
        assert len(re.findall(r"in service \(incremental on \d+\)", log)) == len(steps), log[-3000:]
        # traffic follows the merged set: svc-3's route now goes to svc-4 (same origin), svc-7 is gone
        st, _, body = http_get("127.0.0.1", a.port, "/x", headers={"Host": "svc-3"}, timeout=5)
        assert st == 200, (st, body)
        st, _, _ = http_get("127.0.0.1", a.port, "/x", headers={"Host": "svc-7"}, timeout=5)
        assert st == 404, st
        # a fresh agent that got one full snapshot serves the same configuration
        b = real_agents(control, "fresh").start()
        b.wait_version(v)
        assert "incremental on" not in b.log()
        assert _normalized_dump(a.config_dump(), a) == _normalized_dump(b.config_dump(), b)
        # what each received, on its /metrics (health port)
        ma, mb = _metrics(a.health), _metrics(b.health)
        assert _value(ma, "remora_control_updates_total", kind="delta") == len(steps)
        assert _value(ma, "remora_control_updates_total", kind="full") >= 1
        assert 0 < _value(ma, "remora_control_update_bytes_total", kind="delta") < _value(ma, "remora_control_update_bytes_total", kind="full")
        assert _value(mb, "remora_control_updates_total", kind="delta") == 0
        assert _value(mb, "remora_control_updates_total", kind="full") == 1
    finally:
        origin.stop(signal.SIGKILL, timeout=2)


def test_restarted_agent_gets_delta_or_full_when_too_old(control_factory, real_agents, monkeypatch):
    """An agent restarted with a persisted version gets a delta from it; when more deletions happened since
    than the control plane's removal log holds (REMORA_CONTROL_REMOVAL_LOG=2 here), a full snapshot; after
    a restart of the control plane, one full snapshot, then deltas again."""
    monkeypatch.setenv("REMORA_CONTROL_REMOVAL_LOG", "2")
    cp = control_factory()
    v = apply(cp, services_doc(0, 10))
    a = real_agents(cp, "restart").start()
    a.wait_version(v)
    assert a.stop() == 0
    # a change and one deletion while it is away: a delta on restart
    v = apply(cp, services_doc(2, 3, port=27990))
    assert cp.ctl("delete", "service", "svc-9").rc == 0
    v = status_json(cp)["version"]
    a.start()
    a.wait_version(v)
    assert re.search(rf"snapshot version {v} in service \(incremental on {v - 2}\)", a.log()), a.log()[-3000:]
    assert a.persisted().version == v and len(a.persisted().services) == 9
    assert a.stop() == 0
    # three deletions while it is away: the removal log (2) lost the first, the agent's version is too old
    for name in ("svc-8", "svc-6", "svc-5"):
        assert cp.ctl("delete", "service", name).rc == 0
    v2 = status_json(cp)["version"]
    a.start()
    a.wait_version(v2)
    assert re.search(rf"snapshot version {v2} in service \(6 services\)", a.log()), a.log()[-3000:]
    assert "incremental on" not in a.log()
    assert sorted(s.metadata.name for s in a.persisted().services) == [f"svc-{i}" for i in (0, 1, 2, 3, 4, 7)]
    # a restart at the current version: nothing to send but an empty delta
    assert a.stop() == 0
    a.start()
    a.wait_version(v2)
    wait_until(lambda: f"version {v2} confirmed (nothing changed)" in a.log(), timeout=10, what="empty delta")
    # a restarted control plane on the same state directory (the same store identity, persisted with the
    # agent's snapshot): the agent's version is trusted, and at the current version it gets an empty delta
    assert cp.stop() == 0
    n_full = len(re.findall(rf"snapshot version {v2} in service \(6 services\)", a.log()))
    n_confirmed = a.log().count(f"version {v2} confirmed (nothing changed)")
    cp.start()
    wait_until(lambda: a.log().count(f"version {v2} confirmed (nothing changed)") == n_confirmed + 1,
               timeout=20, what="an empty delta after the control plane's restart")
    assert len(re.findall(rf"snapshot version {v2} in service \(6 services\)", a.log())) == n_full
    v3 = apply(cp, services_doc(0, 1, port=27991))
    a.wait_version(v3)
    assert f"snapshot version {v3} in service (incremental on {v2})" in a.log()


def _new_state_dir(old, new):
    """A new store for the same mesh: the CA, the admin credential and the tokens of `old`, not its store.pb
    (so a new store identity, versions counted from 1 again), as after a lost store."""
    import shutil
    shutil.copytree(old, new, ignore=shutil.ignore_patterns("store.pb", "store.pb.tmp", "LOCK"))


def test_control_plane_restart_sends_deltas_same_store_only(control_factory, real_agents, tmp_path):
    """remora-control restarted on the same state directory with agents connected (real agents and fake
    agents with --incremental --reconnect): each agent names the store identity and version it serves,
    and gets an empty delta, not the full snapshot, then deltas; a control plane on a NEW state directory
    (another store identity, whose version numbers mean other content) gives each a full snapshot."""
    mport = free_port()
    cp = control_factory(extra=["--metrics-listen", f"127.0.0.1:{mport}"])
    v = apply(cp, services_doc(0, 300, routes=True), timeout=60)
    reals = [real_agents(cp, f"real-{i}").start() for i in range(2)]
    fleet = FakeAgentFleet(str(tmp_path), cp, 3, prefix="rc-", extra=["--incremental", "--reconnect"])
    try:
        fleet.wait_ready()
        for a in reals:
            a.wait_version(v)
        store_id = reals[0].persisted().store_id
        assert len(store_id) == 16 and reals[1].persisted().store_id == store_id
        before = [_metrics(a.health) for a in reals]
        for restart in range(2):
            assert cp.stop() == 0
            cp.start()
            wait_until(lambda: sum(x["connected"] and x["appliedVersion"] == v for x in status_json(cp)["agents"]) == 5,
                       timeout=20, what="every agent back at the same version")
            wait_until(lambda: _value(_metrics(mport), "remora_control_answers_total", result="ack") == 5, timeout=10,
                       what="5 ACKs after the restart")
            m = _metrics(mport)
            assert _value(m, "remora_control_pushes_total", kind="delta") == 5, m
            assert _value(m, "remora_control_pushes_total", kind="full") == 0, m
            assert _value(m, "remora_control_push_bytes_total", kind="delta") < 5 * 100
        # the fake agents: one full snapshot at the start, then an empty delta per restart
        rows = fleet_lines(fleet, v)
        assert sorted(r[3] for r in rows) == ["delta"] * 6 + ["full"] * 3, rows
        assert len({(r[5], r[6]) for r in rows}) == 1, rows
        for a, b in zip(reals, before):
            m = _metrics(a.health)
            assert _value(m, "remora_control_updates_total", kind="full") == \
                _value(b, "remora_control_updates_total", kind="full")
            assert _value(m, "remora_control_updates_total", kind="delta") == \
                _value(b, "remora_control_updates_total", kind="delta") + 2
            assert a.log().count(f"version {v} confirmed (nothing changed)") == 2
        # a change after the restart is a delta to everyone
        v = apply(cp, services_doc(5, 6, port=27999))
        wait_until(lambda: len(fleet_lines(fleet, v)) == 3, timeout=10, what=f"v{v} at the fake agents")
        assert {r[3] for r in fleet_lines(fleet, v)} == {"delta"}
        for a in reals:
            a.wait_version(v)
            assert f"snapshot version {v} in service (incremental on {v - 1})" in a.log()

        # a new state directory: another identity; its version 1 is not the old version 1
        assert cp.stop() == 0
        cp.stopped_by_test = True
        new_dir = os.path.join(str(tmp_path), "state-new")
        _new_state_dir(cp.state_dir, new_dir)
        mport2 = free_port()
        cp2 = control_factory(state_dir=new_dir, name="control-new", extra=["--metrics-listen", f"127.0.0.1:{mport2}"])
        # built on another port first, so that the agents see it only once it holds the new content
        v2 = apply(cp2, services_doc(0, 300, routes=True) + "---\n" + services_doc(300, 302), wait=False, timeout=60)
        assert cp2.stop() == 0
        cp2.port = cp.port
        cp2.start()
        wait_until(lambda: sum(x["connected"] and x["appliedVersion"] == v2 for x in status_json(cp2)["agents"]) == 5,
                   timeout=20, what="every agent at the new store's version")
        m = _metrics(mport2)
        assert _value(m, "remora_control_pushes_total", kind="full") == 5, m
        assert _value(m, "remora_control_pushes_total", kind="delta") == 0, m
        rows = fleet_lines(fleet, v2)
        assert [r[3] for r in rows].count("full") >= 3 and rows[-1][5] == 602, rows
        for a in reals:
            p = a.persisted()
            assert p.store_id != store_id and len(p.store_id) == 16 and len(p.services) == 302
        # and deltas again from there
        v2 = apply(cp2, services_doc(7, 8, port=27998))
        for a in reals:
            a.wait_version(v2)
            assert f"snapshot version {v2} in service (incremental on {v2 - 1})" in a.log()
    finally:
        assert fleet.stop() == 0, fleet.log()[-3000:]


def test_nacked_delta_keeps_last_good_and_next_push_is_full(control, real_agents, tmp_path):
    """A delta the agent refuses is NACKed, the previous configuration stays in service, the control plane
    follows with the full snapshot of that version (refused too), and the next change comes full."""
    origin, oport = _origin(tmp_path)
    try:
        good = apply(control, service_doc("web", [f"127.0.0.1:{oport}"], protocol="http1"))
        a = real_agents(control, "nacker").start()
        a.wait_version(good)
        good = apply(control, service_doc("web2", [f"127.0.0.1:{oport}"], protocol="http1"))
        a.wait_version(good)
        assert f"snapshot version {good} in service (incremental on {good - 1})" in a.log()
        # accepted by the control plane, refused by the agent (as test_golden_metrics.py's NACK test)
        mirror_route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: mx}\nspec:\n"
                        "  parentRefs: [{name: web}]\n  rules:\n"
                        "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}}}]\n"
                        "    backendRefs: [{name: web}]\n")
        r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "10", stdin=mirror_route)
        assert r.rc == 1 and "refused version" in r.err, r
        bad = good + 1
        wait_until(lambda: "(a delta; the full snapshot follows)" in control.log(), timeout=10, what="delta NACK logged")
        # the full snapshot of the same version is sent and refused as well
        wait_until(lambda: len(re.findall(rf"snapshot version {bad} refused", a.log())) >= 2, timeout=10,
                   what="the full snapshot refused too")
        assert re.search(rf"incremental snapshot version {bad} refused", a.log()) is None  # merged fine, translation refused
        st = agent_status(control, "nacker")
        assert st["appliedVersion"] == good and st["nackVersion"] == bad
        # last good stays in service
        assert a.config_dump()["version"] == str(good)
        status, _, _ = http_get("127.0.0.1", a.port, "/", headers={"Host": "web2"}, timeout=5)
        assert status == 200
        # the fix comes as a full snapshot (the agent's last answer was a NACK)
        r = control.ctl("delete", "httproute", "mx")
        assert r.rc == 0, r
        fixed = status_json(control)["version"]
        a.wait_version(fixed)
        assert re.search(rf"snapshot version {fixed} in service \(2 services\)", a.log()), a.log()[-3000:]
        # and the one after is a delta again
        v = apply(control, service_doc("web3", [f"127.0.0.1:{oport}"], protocol="http1"))
        a.wait_version(v)
        assert f"snapshot version {v} in service (incremental on {fixed})" in a.log()
    finally:
        origin.stop(signal.SIGKILL, timeout=2)


# ------------------------------------------------------------------------------------------- scale

def _scale(control, tmp_path, num_agents, num_services, incremental, changes=3):
    """apply-to-all-ACK (ms) and bytes per agent for one-Service changes with `num_services` Services known.
    Agents that take deltas join first and follow the mesh's growth (applies of 1000 Services and 1000
    routes, each a delta); the others join once it is built and get it whole."""
    extra = ["--incremental"] if incremental else []

    def grow():
        for first in range(0, num_services, 1000):  # applies of at most 2000 documents
            apply(control, services_doc(first, min(first + 1000, num_services), routes=True), wait=incremental,
                  timeout=600)
    if not incremental:
        grow()
    fleet = FakeAgentFleet(str(tmp_path), control, num_agents, prefix="inc-" if incremental else "full-", extra=extra)
    took, sizes = [], []
    try:
        fleet.wait_ready(timeout=600)
        if incremental:
            grow()
        v0 = status_json(control)["version"]
        wait_until(lambda: sum(a["connected"] and a["appliedVersion"] == v0 for a in status_json(control)["agents"])
                   == num_agents, timeout=120, what="every agent at the first version")
        cpu0 = _cpu_ms(control.proc.pid)
        for i in range(changes):
            r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "120", stdin=services_doc(i, i + 1, port=27300 + i),
                            timeout=180)
            assert r.rc == 0, r
            m = re.search(r"version (\d+) applied by (\d+) agents in (\d+) ms", r.out)
            assert m and int(m.group(2)) == num_agents, r
            took.append(int(m.group(3)))
            v = int(m.group(1))
            wait_until(lambda: len(fleet_lines(fleet, v)) == num_agents, timeout=60, what=f"v{v} logged")
            rows = fleet_lines(fleet, v)
            assert {r[3] for r in rows} == {"delta" if incremental else "full"}, rows[:3]
            assert len({r[6] for r in rows}) == 1, "agents disagree on the resource set"
            sizes.append(rows[0][4])
        cpu_ms = (_cpu_ms(control.proc.pid) - cpu0) / changes
    finally:
        assert fleet.stop() == 0, fleet.log()[-3000:]
    return {"agents": num_agents, "services": num_services, "incremental": incremental,
            "apply_to_all_ack_ms_median": statistics.median(took), "apply_to_all_ack_ms_max": max(took),
            "bytes_per_agent_per_change": statistics.median(sizes),
            "bytes_per_change_all_agents": statistics.median(sizes) * num_agents,
            "control_cpu_ms_per_change": round(cpu_ms, 1), "sanitized": SANITIZED}


def _cpu_ms(pid):
    """CPU time (user + system) of a process so far, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _shape():
    env = os.environ.get("REMORA_DELTA_SCALE", "")
    m = re.fullmatch(r"(\d+)x(\d+)", env)
    return (int(m.group(1)), int(m.group(2))) if m else (20 if SANITIZED else 50, 2000)


@pytest.mark.timeout(1800 if os.environ.get("REMORA_DELTA_SCALE") else 90)
@pytest.mark.parametrize("incremental", [False, True], ids=["full", "delta"])
def test_scale_incremental(control, tmp_path, incremental):
    """N fake agents x M Services (and M routes): apply-to-all-ACK and bytes per one-Service change, full
    snapshots (older agents) against deltas. The issue's target is <= 200 ms for 1000 agents x 10k
    Services (REMORA_DELTA_SCALE=1000x10000); the default shape is what fits in the test budget."""
    num_agents, num_services = _shape()
    fig = _scale(control, tmp_path, num_agents, num_services, incremental)
    print(f"\nincremental updates scale: {json.dumps(fig)}")
    out = os.environ.get("REMORA_DELTA_SCALE_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(fig) + "\n")
    if incremental:
        assert fig["bytes_per_agent_per_change"] < 400, fig
        if not SANITIZED and (num_agents, num_services) == (50, 2000):
            assert fig["apply_to_all_ack_ms_median"] < 300, fig
