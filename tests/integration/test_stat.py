"""`remoractl stat` end to end on loopback: remora-control, two real remora-agent processes in
control-plane mode sending their golden-metrics summaries every second (--stats-interval-ms 1000) on
their discovery streams, and a fault origin that answers 5xx and delays on request.

Known traffic: 200 requests through agent A on one route and 100 through agent B on another, to one
Service, 20% of them answered 500 and 10% delayed by 60 ms, spread over about five seconds. Then:
`stat -o json` per Service shows 300 requests and a success rate of 0.8 (exact: both agents started
inside the window, so every request counts), a request rate within the bounds the timing allows, and
sane percentiles; `--by route` and `--by backend` split the same requests; the table is readable; no
traffic gives a clear message; an unknown `--by` or a window out of range is refused."""

import json
import os
import signal
import threading
import time

import grpc
import pytest

from control_support import control, control_factory, pb, wait_until, write  # noqa: F401
from procutil import PYTHON, TOOLS_DIR, Proc, free_port, wait_ready_file
from support import http_get
from test_mesh import MeshAgent

pytestmark = pytest.mark.agent_only

STATS_INTERVAL_MS = 1000

POLICY = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{port}"]}}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-api}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: web}}]
"""


class StatAgent(MeshAgent):
    """A mesh agent that sends its summary every second, with two workers (the summary merges them)."""

    def start(self):
        self.starts += 1
        if self.cred_args is None:
            self.cred_args = self.cp.agent_args(self.node_id)
        argv = [self.agent_bin, "--listen", f"127.0.0.1:{self.port}", "--control", self.cp.addr, "--node-id", self.node_id,
                "--state-dir", self.state_dir, "--workers", "2", "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}", "--stats-interval-ms", str(STATS_INTERVAL_MS)] + self.cred_args
        self.started_at = time.monotonic()
        self.proc = Proc(argv, os.path.join(self.workdir, f"{self.node_id}.{self.starts}.log"))
        wait_until(lambda: self._ready(), timeout=10, what=f"{self.node_id} ready")
        return self


@pytest.fixture
def stat_mesh(control, tmp_path):
    from support import AGENT
    workdir = str(tmp_path)
    ready = os.path.join(workdir, "origin.port")
    origin = Proc([PYTHON, os.path.join(TOOLS_DIR, "fault_origin.py"), "--port", "0", "--ready-file", ready],
                  os.path.join(workdir, "origin.log"))
    agents = []
    try:
        port = wait_ready_file(ready, origin, 15)
        for node in ("stat-a", "stat-b"):
            a = StatAgent(workdir, control, node)
            a.agent_bin = AGENT
            agents.append(a.start())
        r = control.ctl("apply", "-f", write(workdir, "web.yaml", POLICY.format(port=port)), "--wait", "--timeout", "10")
        assert r.rc == 0 and "applied by 2 agents" in r.out, r
        yield control, agents
    finally:
        for a in agents:
            rc = a.stop(signal.SIGTERM)
            assert rc == 0, a.proc.log_text()[-3000:]
        origin.stop(signal.SIGKILL, timeout=2)


def _send(agent, path, n, spacing_s, results):
    """n requests to the Service `web`: every 5th answered 500, every 10th delayed by 60 ms."""
    ok = failed = 0
    for i in range(n):
        headers = {"Host": "web"}
        if i % 5 == 4:
            headers["x-fault"] = "status:500"
        if i % 10 == 3:
            headers["x-delay-ms"] = "60"
        status, _, _ = http_get("127.0.0.1", agent.port, f"{path}/{i}", headers=headers)
        if status == 200:
            ok += 1
        elif status == 500:
            failed += 1
        time.sleep(spacing_s)
    results[agent.node_id] = (ok, failed)


def _stat(cp, *args):
    r = cp.ctl("stat", "-o", "json", *args)
    assert r.rc == 0, r
    return json.loads(r.out)


def _rows(stat):
    return {(row["name"], row.get("node", "")): row for row in stat["rows"]}


def test_stat_after_known_traffic(stat_mesh):
    cp, (a, b) = stat_mesh
    # agents connected and summarizing, no traffic yet: a clear message, and an empty JSON list
    wait_until(lambda: a.proc.alive() and b.proc.alive(), what="agents alive")
    time.sleep(1.5 * STATS_INTERVAL_MS / 1000)
    r = cp.ctl("stat")
    assert r.rc == 0 and r.out.strip() == "no traffic in the last 1m", r
    assert _stat(cp) == {"by": "service", "windowMs": 60000, "rows": []}

    results = {}
    threads = [threading.Thread(target=_send, args=(a, "/api", 200, 0.02, results)),
               threading.Thread(target=_send, args=(b, "", 100, 0.04, results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {"stat-a": (160, 40), "stat-b": (80, 20)}, results

    # both agents summarize every second: the control plane has every request within a few seconds
    def all_counted():
        rows = _stat(cp)["rows"]
        return rows if rows and rows[0]["requests"] == 300 else None
    rows = wait_until(all_counted, timeout=10, interval=0.25, what="300 requests in `remoractl stat`")
    t_query = time.monotonic()
    assert len(rows) == 1, rows
    web = rows[0]
    assert web["name"] == "web.default" and web["agents"] == 2, web
    assert web["requests"] == 300 and web["failures"] == 60, web
    assert abs(web["successRate"] - 0.8) < 1e-6, web
    # the rate is over the time each agent has been counting (both started inside the window): its newest
    # summary is at most an interval (and a little) old
    lo = sum(n / (t_query - ag.started_at + 0.5) for n, ag in ((200, a), (100, b)))
    hi = sum(n / (t_query - ag.started_at - 2.5 * STATS_INTERVAL_MS / 1000) for n, ag in ((200, a), (100, b)))
    assert lo <= web["rps"] <= hi, (lo, web["rps"], hi)
    # 10% of the requests took 60 ms or more, the rest a few ms
    assert 0 < web["p50Ms"] < 40, web
    assert web["p50Ms"] <= web["p95Ms"] <= web["p99Ms"], web
    assert 50 <= web["p99Ms"] <= 100, web

    # per route: agent A's requests matched web-api, agent B's the Service's default route
    by_route = _stat(cp, "--by", "route")
    assert by_route["by"] == "route"
    routes = {row["name"].split("/")[1]: row for row in by_route["rows"]}
    assert set(routes) == {"web-api", "default"}, by_route
    assert routes["web-api"]["requests"] == 200 and routes["web-api"]["failures"] == 40 and routes["web-api"]["agents"] == 1
    assert routes["default"]["requests"] == 100 and routes["default"]["failures"] == 20 and routes["default"]["agents"] == 1
    assert all(row["name"].startswith("web.default/") for row in by_route["rows"]), by_route

    # per backend: one row per agent
    by_backend = _rows(_stat(cp, "--by", "backend"))
    assert {k: (v["requests"], v["failures"]) for k, v in by_backend.items()} == {
        ("web.default", "stat-a"): (200, 40), ("web.default", "stat-b"): (100, 20)}, by_backend

    # a namespace filter, and a namespace without traffic
    assert _stat(cp, "-n", "default")["rows"][0]["requests"] == 300
    assert _stat(cp, "-n", "other")["rows"] == []
    r = cp.ctl("stat", "-n", "other")
    assert r.rc == 0 and r.out.strip() == "no traffic in the last 1m in namespace other", r

    # the table: a header and one aligned row
    r = cp.ctl("stat")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "AGENTS", "RPS", "SUCCESS", "P50", "P95", "P99"], r.out
    cells = lines[1].split()
    assert cells[0] == "web.default" and cells[1] == "2" and cells[3] == "80.00%", r.out
    assert all(c.endswith("ms") for c in cells[4:]), r.out
    assert lines[1].index(cells[1]) == lines[0].index("AGENTS"), r.out
    r = cp.ctl("stat", "--by", "backend")
    assert r.rc == 0 and r.out.splitlines()[0].split()[:2] == ["NODE", "BACKEND"], r
    assert [ln.split()[0] for ln in r.out.splitlines()[1:]] == ["stat-a", "stat-b"], r.out

    # a shorter window still sees the traffic that ended a moment ago
    assert _stat(cp, "--window", "30s")["windowMs"] == 30000


def test_stat_counter_reset_restarts_the_baseline(stat_mesh):
    """An agent that restarts counts from zero again: the control plane starts its history over and
    does not subtract the old process' counters."""
    cp, (a, b) = stat_mesh
    results = {}
    _send(a, "/api", 20, 0, results)
    wait_until(lambda: (_stat(cp)["rows"] or [{}])[0].get("requests") == 20, timeout=10, interval=0.25,
               what="20 requests counted")
    assert a.stop(signal.SIGTERM) == 0
    a.start()
    _send(a, "/api", 10, 0, results)
    # the old process' 20 and the new one's 10 within the window: the new history counts from the new start,
    # and the summaries of the first process are forgotten (counters went down)
    rows = wait_until(lambda: (lambda r: r if r and r[0]["requests"] == 10 else None)(_stat(cp)["rows"]), timeout=10,
                      interval=0.25, what="the restarted agent's 10 requests")
    assert rows[0]["failures"] == 2 and rows[0]["agents"] == 1, rows


def test_stat_usage_errors(control):
    r = control.ctl("stat", "--by", "pod")
    assert r.rc == 2 and "--by takes service, route or backend; got 'pod'" in r.err, r
    for w in ("5s", "11m", "soon"):
        r = control.ctl("stat", "--window", w)
        assert r.rc == 2 and "--window takes a duration from 10s to 10m" in r.err, r
    r = control.ctl("stat", "-o", "yaml")
    assert r.rc == 2 and "-o takes table or json" in r.err, r
    r = control.ctl("stat", "extra")
    assert r.rc == 2 and "unexpected 'extra'" in r.err, r
    r = control.ctl("help", "stat")
    assert r.rc == 0 and "--by GROUP" in r.out and "--window DURATION" in r.out, r
    assert "stat [--by GROUP] [--window 1m]" in control.ctl("--help").out

    # the server checks too (another client may send anything)
    p = pb()
    with control.grpc_channel(token=control.admin_token()) as ch:
        stat = ch.unary_unary("/remora.v1.Admin/Stat", request_serializer=p.admin.StatRequest.SerializeToString,
                              response_deserializer=p.admin.StatResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            stat(p.admin.StatRequest(by="pod"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "service, route or backend" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stat(p.admin.StatRequest(window_ms=5000), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "10s to 10m" in e.value.details()
        resp = stat(p.admin.StatRequest(), timeout=10)
        assert resp.window_ms == 60000 and list(resp.rows) == []


def test_malformed_stats_are_ignored_and_the_stream_stays(control):
    """A summary whose buckets do not match its bounds is dropped with a warning; the stream goes on."""
    from control_support import FakeAgent
    p = pb()
    d = p.discovery
    agent = FakeAgent(control, "fake-stats")
    try:
        wait_until(lambda: agent.snapshots, timeout=10, what="first snapshot")
        bad = d.Stats(monotonic_ms=1000, uptime_ms=1000, bounds_us=[500, 1000],
                      series=[d.StatSeries(backend="web.default", requests=5, buckets=[1, 2])])
        agent.send(d.AgentMessage(stats=bad))
        good = d.Stats(monotonic_ms=1000, uptime_ms=1000, bounds_us=[500, 1000],
                       series=[d.StatSeries(backend="web.default", route="r", requests=4, failures=1, buckets=[1, 2, 1],
                                            sum_us=3000)])
        agent.send(d.AgentMessage(stats=good))
        rows = wait_until(lambda: _stat(control)["rows"], timeout=10, what="the good summary counted")
        assert rows == [{"name": "web.default", "agents": 1, "requests": 4, "failures": 1, "rps": 4, "successRate": 0.75,
                         "p50Ms": 0.75, "p95Ms": 1, "p99Ms": 1}], rows
        assert "stats summary ignored" in control.log()
    finally:
        agent.close()
