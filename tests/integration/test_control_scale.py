"""10 and 50 agents on one control plane: every apply reaches every agent and is ACKed quickly, and the
control plane stays small. The agents are remora-fake-agents (C, one thread and one connection each)
so that the figures measure the control plane rather than a Python client. Prints the figures (run
with -s to see them); REMORA_CONTROL_SCALE_OUT=FILE also writes them as JSON.

And the agent's side (test_agent_memory_per_service): one real remora-agent (2 workers, transparent
listeners and an explicit one) learns 2000 Services and 2000 HTTPRoutes; its RSS per known Service is
bounded (docs/BENCHMARKS.md, "Scale"), a Service among them still answers, and calling 10 of them
(their cluster runtimes are built on the first request) is reported. test_agent_memory_api and
test_agent_memory_addressed bound the other two shapes of docs/BENCHMARKS.md."""

import json
import os
import re
import signal
import statistics
import sys
import time

import pytest

if __name__ == "__main__":  # run as a script (_measure): the helpers conftest.py puts on the path
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from control_support import (FakeAgentFleet, agent_status, control, control_factory, service_doc,  # noqa: F401
                             split_route_doc, status_json, wait_until)
from procutil import PYTHON, TOOLS_DIR, Proc, free_port, wait_ready_file
from support import AGENT, http_get

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
APPLIES = 7
RESULTS = {}


def route(i):
    return split_route_doc("echo-split", "echo", [("echo", 100 - i), ("echo-v2", i)])


@pytest.mark.parametrize("num_agents", [10, 50])
def test_apply_to_all_ack(control, tmp_path, num_agents):
    base = service_doc("echo", ["127.0.0.1:27201"]) + "---\n" + service_doc("echo-v2", ["127.0.0.1:27202"])
    assert control.ctl("apply", "-f", "-", stdin=base).rc == 0
    rss_idle = control.rss_kb()
    fleet = FakeAgentFleet(str(tmp_path), control, num_agents)
    try:
        fleet.wait_ready()
        wait_until(lambda: sum(a["connected"] and a["appliedVersion"] == 1 for a in status_json(control)["agents"]) == num_agents,
                   timeout=20, what="every agent at v1")
        took = []
        for i in range(1, APPLIES + 1):
            r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "20", stdin=route(i))
            assert r.rc == 0, r
            m = re.search(rf"version {i + 1} applied by {num_agents} agents in (\d+) ms", r.out)
            assert m, r
            took.append(int(m.group(1)))
            wait_until(lambda: fleet.answers(i + 1) == num_agents, timeout=5, what=f"every agent logged v{i + 1}")
        rss = control.rss_kb()
        st = status_json(control)
        assert all(a["connected"] and a["appliedVersion"] == APPLIES + 1 for a in st["agents"]), st
    finally:
        assert fleet.stop() == 0, fleet.log()[-3000:]
    fig = {"agents": num_agents, "applies": APPLIES, "apply_to_all_ack_ms_median": statistics.median(took),
           "apply_to_all_ack_ms_min": min(took), "apply_to_all_ack_ms_max": max(took),
           "control_rss_kb_idle": rss_idle, "control_rss_kb_with_agents": rss, "sanitized": SANITIZED}
    RESULTS[num_agents] = fig
    print(f"\ncontrol plane scale: {json.dumps(fig)}")
    out = os.environ.get("REMORA_CONTROL_SCALE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(RESULTS, f, indent=2)
    # the target: under 100 ms for 10 agents on loopback (issue 3); 50 agents well under a second
    limit = (100 if num_agents <= 10 else 300) * (5 if SANITIZED else 1)
    assert statistics.median(took) < limit, fig
    assert rss < (150_000 if SANITIZED else 40_000), fig


# ------------------------------------------------------------------------------------- agent memory

NUM_SERVICES = 2000
# RSS per known Service (a Service and one HTTPRoute), beyond the agent's figure with one Service.
# Issue 12's target is 1 KiB (measured: 676-750 bytes, then 1128-1139 with the working tree of 06:05, where the
# control thread's malloc arena keeps more of the second snapshot's freed memory resident: 659 with fixed malloc
# thresholds); what this shape measures and where the bytes go: docs/BENCHMARKS.md, "Scale".
PER_SERVICE_BUDGET = 1280


# The agent's first stats summary to the control plane (10 s after it connects by default) adds about 2.5 MB that
# stays, whatever the number of Services: with one a second, every figure here is taken after it.
STATS_ARGS = ["--stats-interval-ms", "1000"]


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _settled_rss_kb(proc, seconds=2.5, limit=8.0):
    """RSS once the memory freed by a config change has been returned: at least `seconds` after it (the agent trims its
    heap and drops the file pages it no longer uses 2 s after a snapshot is in service, lifecycle.c), then until two
    samples 0.5 s apart agree (at most `limit` seconds in all)."""
    time.sleep(seconds)
    deadline = time.monotonic() + limit - seconds
    rss = _rss_kb(proc.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _rss_kb(proc.pid)
        if now == rss:
            break
        rss = now
    return rss


def _idle_rss_kb(control, agent, node_id, endpoint):
    """The agent's RSS knowing one Service ("base", at `endpoint`) once it is settled: after a second snapshot (base
    as gRPC), since the first one's start-up memory is partly given back at the next (docs/BENCHMARKS.md "Scale")."""
    wait_until(lambda: (agent_status(control, node_id) or {}).get("appliedVersion") == 1, timeout=15, what="the agent at v1")
    assert control.ctl("apply", "-f", "-", stdin=service_doc("base", [endpoint], protocol="grpc")).rc == 0
    wait_until(lambda: (agent_status(control, node_id) or {}).get("appliedVersion") == 2, timeout=15, what="the agent at v2")
    return _settled_rss_kb(agent)


def _shape_docs(shape, first, n, port=27201):
    """Services first..n-1 in one of docs/BENCHMARKS.md's shapes ("Scale"), each http1, `meshed: false`, with one
    HTTPRoute (`backendRefs` to it, a request timeout). route: the rule has no match (PathPrefix "/"), the endpoint
    127.0.0.1:port; api: the rule matches PathPrefix /api (the Service keeps its own catch-all route: two routes);
    addressed: as api, plus a virtual address (10.96.x.y:80) and an endpoint at a pod address of another node
    (10.244.x.y:port: not this agent's, so no inbound Service listener)."""
    out = []
    for i in range(first, n):
        ep = f"10.244.{i // 250}.{i % 250 + 1}" if shape == "addressed" else "127.0.0.1"
        addr = f"  addresses: [\"10.96.{i // 250}.{i % 250 + 1}:80\"]\n" if shape == "addressed" else ""
        match = "    matches: [{path: {type: PathPrefix, value: /api}}]\n" if shape != "route" else ""
        out.append(f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  protocol: http1\n"
                   f"  meshed: false\n{addr}  endpoints: [\"{ep}:{port}\"]\n")
        out.append(f"apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {{name: route-{i}}}\nspec:\n"
                   f"  parentRefs: [{{kind: Service, name: svc-{i}}}]\n  rules:\n  - backendRefs: [{{name: svc-{i}}}]\n"
                   f"{match}    timeouts: {{request: 10s}}\n")
    return "---\n".join(out)


def _mesh_docs(first, n, origin_port):
    """Services first..n-1 (http1, not meshed: one plain endpoint, the origin) and one HTTPRoute each (a rule without matches, the
    Gateway API's PathPrefix "/", with a request timeout)."""
    out = []
    for i in range(first, n):
        out.append(f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  protocol: http1\n  meshed: false\n"
                   f"  endpoints: [\"127.0.0.1:{origin_port}\"]\n")
        out.append(f"apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {{name: route-{i}}}\nspec:\n"
                   f"  parentRefs: [{{kind: Service, name: svc-{i}}}]\n  rules:\n"
                   f"  - backendRefs: [{{name: svc-{i}}}]\n    timeouts: {{request: 10s}}\n")
    return "---\n".join(out)


@pytest.mark.agent_only
@pytest.mark.skipif(SANITIZED, reason="RSS under the sanitizers measures their shadow memory, not the agent's")
def test_agent_memory_per_service(control, tmp_path):
    workdir = str(tmp_path)
    ready = os.path.join(workdir, "origin.port")
    origin = Proc([PYTHON, os.path.join(TOOLS_DIR, "h1_origin.py"), "--port", "0", "--ready-file", ready],
                  os.path.join(workdir, "origin.log"))
    agent = None
    try:
        origin_port = wait_ready_file(ready, origin, 15)
        assert control.ctl("apply", "-f", "-", stdin=service_doc("base", [f"127.0.0.1:{origin_port}"],
                                                                 protocol="http1")).rc == 0
        port, health, admin = free_port(), free_port(), free_port()
        state = os.path.join(workdir, "agent.state")
        os.makedirs(state)
        argv = [AGENT, "--control", control.addr, "--node-id", "mem", "--state-dir", state, "--workers", "2",
                "--listen", f"127.0.0.1:{port}", "--transparent", "--outbound-port", str(free_port()),
                "--inbound-port", str(free_port()), "--admin", f"127.0.0.1:{admin}",
                "--health", f"127.0.0.1:{health}"] + STATS_ARGS + control.agent_args("mem")
        agent = Proc(argv, os.path.join(workdir, "agent.log"))
        rss_idle = _idle_rss_kb(control, agent, "mem", f"127.0.0.1:{origin_port}")

        rss, apply_s, have = {}, {}, 0
        for n in (500, NUM_SERVICES):
            t0 = time.monotonic()
            r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "30", stdin=_mesh_docs(have, n, origin_port),
                            timeout=60)
            assert r.rc == 0, r
            apply_s[n] = round(time.monotonic() - t0, 2)
            assert agent.alive(), agent.log_text()[-3000:]
            rss[n] = _settled_rss_kb(agent)
            have = n
        rss_known = rss[NUM_SERVICES]
        per_service = (rss_known - rss_idle) * 1024 / NUM_SERVICES

        # a Service among the 2000, through the agent to the real origin
        status, _, body = http_get("127.0.0.1", port, "/hello", headers={"Host": "svc-1234"}, timeout=5)
        assert status == 200 and json.loads(body)["target"] == "/hello", (status, body)
        for i in range(10):
            status, _, _ = http_get("127.0.0.1", port, "/", headers={"Host": f"svc-{i * 97}.default"}, timeout=5)
            assert status == 200, (i, status)
        status, _, _ = http_get("127.0.0.1", port, "/", headers={"Host": "svc-99999"}, timeout=5)
        assert status == 404, status
        rss_called = _rss_kb(agent.pid)
        per_called = (rss_called - rss_known) * 1024 / 11
    finally:
        if agent is not None:
            rc = agent.stop(signal.SIGTERM, timeout=10)
            assert rc == 0, agent.log_text()[-3000:]
        origin.stop(signal.SIGKILL, timeout=2)
    fig = {"services": NUM_SERVICES, "rss_kb_one_service": rss_idle, "rss_kb_500": rss[500], "rss_kb_known": rss_known,
           "bytes_per_known_service_500": round((rss[500] - rss_idle) * 1024 / 500),
           "bytes_per_known_service": round(per_service), "rss_kb_after_calling_11": rss_called,
           "bytes_per_called_service": round(per_called), "apply_with_wait_s": apply_s}
    print(f"\nagent memory per Service: {json.dumps(fig)}")
    assert per_service <= PER_SERVICE_BUDGET, fig


# The api shape (_shape_docs): two routes per Service, the HTTPRoute's (PathPrefix /api) and the Service's own
# catch-all. Measured 1,022-1,028 bytes (docs/BENCHMARKS.md "Scale"): at issue 12's 1 KiB, so the bound leaves the
# heap's layout a margin.
API_BUDGET = 1152
# The addressed shape (_shape_docs): two routes and an outbound Service listener per Service (measured: 1,425-1,434
# bytes). An inbound Service listener and inbound cluster for each of the mesh's endpoints (about 1.3 KB more per
# Service, as before issue 12's section 5) would not fit in it.
ADDRESSED_BUDGET = 1536


def _shape_memory(control, workdir, shape, node_id):
    """One agent (as test_agent_memory_per_service's) learns NUM_SERVICES Services of `shape` (_shape_docs) after the
    base Service; returns (RSS with the base only, RSS with them all, the admin config dump)."""
    assert control.ctl("apply", "-f", "-", stdin=service_doc("base", ["127.0.0.1:27201"], protocol="http1")).rc == 0
    state = os.path.join(workdir, "agent.state")
    os.makedirs(state)
    admin = free_port()
    argv = [AGENT, "--control", control.addr, "--node-id", node_id, "--state-dir", state, "--workers", "2",
            "--listen", f"127.0.0.1:{free_port()}", "--transparent", "--outbound-port", str(free_port()),
            "--inbound-port", str(free_port()), "--admin", f"127.0.0.1:{admin}",
            "--health", f"127.0.0.1:{free_port()}"] + STATS_ARGS + control.agent_args(node_id)
    agent = Proc(argv, os.path.join(workdir, "agent.log"))
    try:
        rss_idle = _idle_rss_kb(control, agent, node_id, "127.0.0.1:27201")
        r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "30", stdin=_shape_docs(shape, 0, NUM_SERVICES),
                        timeout=60)
        assert r.rc == 0, r
        assert agent.alive(), agent.log_text()[-3000:]
        rss = _settled_rss_kb(agent)
        # the snapshot is in service (admin config dump)
        status, _, body = http_get("127.0.0.1", admin, "/config_dump", timeout=10)
        assert status == 200, status
        dump = json.loads(body)
    finally:
        rc = agent.stop(signal.SIGTERM, timeout=10)
        assert rc == 0, agent.log_text()[-3000:]
    return rss_idle, rss, dump


@pytest.mark.agent_only
@pytest.mark.skipif(SANITIZED, reason="RSS under the sanitizers measures their shadow memory, not the agent's")
def test_agent_memory_api(control, tmp_path):
    """2000 Services whose HTTPRoute matches PathPrefix /api: each keeps its own catch-all route too."""
    rss_idle, rss, dump = _shape_memory(control, str(tmp_path), "api", "api")
    routes = dump["listeners"][0]["routes"]
    assert len(routes) == 2 * NUM_SERVICES + 1, len(routes)
    per_service = (rss - rss_idle) * 1024 / NUM_SERVICES
    fig = {"rss_kb_one_service": rss_idle, "rss_kb_known": rss, "bytes_per_known_service": round(per_service)}
    print(f"\nagent memory per Service, api shape: {json.dumps(fig)}")
    assert per_service <= API_BUDGET, fig


@pytest.mark.agent_only
@pytest.mark.skipif(SANITIZED, reason="RSS under the sanitizers measures their shadow memory, not the agent's")
def test_agent_memory_addressed(control, tmp_path):
    """2000 Services with a virtual address each and an endpoint on another node: the agent builds outbound
    Service listeners for the addresses, and inbound ones only for its own addresses (none of these)."""
    rss_idle, rss, dump = _shape_memory(control, str(tmp_path), "addressed", "addr")
    # an inbound cluster (and Service listener) for the endpoint on this agent's own address (base's, 127.0.0.1, on
    # the IPv4 inbound listener), none for the other nodes'
    names = [c["name"] for c in dump["clusters"]]
    assert len(names) == NUM_SERVICES + 2, (len(names), names[:5])
    assert [n for n in names if n.startswith("inbound")] == ["inbound/base.default/27201"], names[-5:]
    per_service = (rss - rss_idle) * 1024 / NUM_SERVICES
    fig = {"rss_kb_one_service": rss_idle, "rss_kb_known": rss, "bytes_per_known_service": round(per_service)}
    print(f"\nagent memory per Service, addressed shape: {json.dumps(fig)}")
    assert per_service <= ADDRESSED_BUDGET, fig


def _measure(argv):
    """The figures of docs/BENCHMARKS.md ("Scale") outside pytest: one agent (2 workers) on a control plane,
    RSS after each count of Services. `--shape route` is the test's (one HTTPRoute per Service, no match:
    PathPrefix "/"); `api` gives each HTTPRoute a PathPrefix /api match (the Service keeps its own route
    too); `addressed` adds a virtual address and an endpoint at another node's pod address to each Service
    (an outbound Service listener each; no inbound one: the endpoint is not this agent's). `--transparent`
    adds the four transparent listeners."""
    import argparse
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("counts", type=int, nargs="+")
    ap.add_argument("--shape", choices=("route", "api", "addressed"), default="route")
    ap.add_argument("--transparent", action="store_true")
    args = ap.parse_args(argv)
    from control_support import ControlPlane

    def docs(first, n):
        return _shape_docs(args.shape, first, n)

    work = tempfile.mkdtemp(prefix="remora-scale-")
    cp = ControlPlane(work).start()
    agent = None
    try:
        assert cp.ctl("apply", "-f", "-", stdin=service_doc("base", ["127.0.0.1:27201"], protocol="http1")).rc == 0
        state = os.path.join(work, "agent.state")
        os.makedirs(state)
        argv = [AGENT, "--control", cp.addr, "--node-id", "scale", "--state-dir", state, "--workers", "2",
                "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
                "--health", f"127.0.0.1:{free_port()}"] + STATS_ARGS + cp.agent_args("scale")
        if args.transparent:
            argv += ["--transparent", "--outbound-port", str(free_port()), "--inbound-port", str(free_port())]
        agent = Proc(argv, os.path.join(work, "agent.log"))
        base = _idle_rss_kb(cp, agent, "scale", "127.0.0.1:27201")
        print(f"services 1: VmRSS {base} kB", flush=True)
        have = 0
        for n in args.counts:
            r = cp.ctl("apply", "-f", "-", "--wait", "--timeout", "60", stdin=docs(have, n), timeout=90)
            assert r.rc == 0, r
            have = n
            rss = _settled_rss_kb(agent)
            print(f"services {n}: VmRSS {rss} kB, {(rss - base) * 1024 / n:.0f} B per Service", flush=True)
    finally:
        if agent is not None:
            agent.stop(signal.SIGTERM, timeout=30)
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_measure(sys.argv[1:]))
