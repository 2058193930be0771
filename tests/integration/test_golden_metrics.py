"""Golden request metrics (docs/metrics.md): after a known mix of traffic through two workers
(successes, 5xx, 4xx, gRPC errors carried in trailers, a retried request, local replies, a client
reset) every count of remora_requests_total / remora_responses_total / remora_request_duration_seconds
and remora_upstream_attempts_total is exact and labelled right; the text format passes Debian's
`promtool check metrics`; the OpenMetrics format (Accept negotiated) parses with
prometheus_client's OpenMetrics parser; a real Prometheus server scrapes the agent and answers a
success-rate query with the expected value; the series cap drops and counts.

Origins: tests/tools/fault_origin.py (statuses, gRPC trailers and failures on command). Clients:
http.client, the frame-level python3-h2 client, python3-grpcio."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest

import fault_origin
import grpc_client
import support
from h2client import H2Client
from control_support import control_factory  # noqa: F401  (a fixture)
from procutil import free_port

pytestmark = pytest.mark.agent_only("golden metrics are remora-agent's")

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
OM_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
             "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

# the known mix: (what, how many)
N_OK, N_503, N_404, N_RETRIED = 5, 3, 2, 2
N_GRPC_OK, N_GRPC_UNAVAILABLE, N_GRPC_NOT_FOUND = 4, 3, 1
N_NO_ROUTE, N_RESET = 2, 1


class Env:
    pass


def write_config(d, name, *, listen, health, admin, fo, workers=2, extra_top=()):
    routes = [
        {"name": "ok", "prefix": "/ok/", "cluster": "fo"},
        {"name": "retry", "prefix": "/retry/", "cluster": "fo",
         "retry": {"attempts": 2, "backoff_ms": 10, "max_backoff_ms": 20, "http_statuses": [503]}},
        {"name": "grpc", "prefix": "/echo.Echo/", "cluster": "fo-grpc", "timeout_ms": 10000},
    ]
    clusters = [{"name": "fo", "protocol": "h2", "endpoints": [fo]},
                {"name": "fo-grpc", "protocol": "h2", "endpoints": [fo]}]
    text, _ = support.render_config(listen_port=listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, workers=workers)
    if extra_top:
        text = "\n".join(extra_top) + "\n" + text
    path = os.path.join(str(d), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def scrape(port, accept=None):
    headers = {"Accept": accept} if accept else {}
    status, hdrs, body = support.http_get("127.0.0.1", port, "/metrics", headers=headers)
    assert status == 200
    return hdrs.get("content-type", ""), body.decode()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def grpc_call(listen, fault=None):
    md = [("x-fault", fault)] if fault else []
    with grpc_client.channel(f"127.0.0.1:{listen}") as ch:
        try:
            grpc_client.Echo(ch).unary(b"hello", timeout=10, metadata=md)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_proxy_factory):
    d = tmp_path_factory.mktemp("golden")
    e = Env()
    e.dir = d
    e.fo = fault_origin.start(d)
    e.listen, e.health, e.admin = free_port(), free_port(), free_port()
    path = write_config(d, "golden.yaml", listen=e.listen, health=e.health, admin=e.admin, fo=e.fo.target)
    e.proxy = module_proxy_factory(config_path=path, listen_port=e.listen, health_port=e.health, admin_port=e.admin)

    def get(path, headers=None):
        return support.http_get("127.0.0.1", e.listen, path, headers=headers or {})[0]

    for _ in range(N_OK):
        assert get("/ok/a") == 200
    for _ in range(N_503):
        assert get("/ok/a", {"x-fault": "status:503"}) == 503
    for _ in range(N_404):
        assert get("/ok/a", {"x-fault": "status:404"}) == 404
    for i in range(N_RETRIED):
        # the first attempt is answered 503 and retried; the second succeeds
        k = f"retried-{os.getpid()}-{i}-{time.monotonic_ns()}"
        assert get("/retry/a", {"x-fault": "status:503", "x-fault-times": "1", "x-fault-key": k}) == 200
        assert e.fo.attempts(k)["attempts"] == 2
    for _ in range(N_GRPC_OK):
        assert grpc_call(e.listen) == grpc.StatusCode.OK
    for _ in range(N_GRPC_UNAVAILABLE):
        # HEADERS :status 200, then trailers grpc-status 14: answered 200, a failure all the same
        assert grpc_call(e.listen, "grpc-trailers:14") == grpc.StatusCode.UNAVAILABLE
    for _ in range(N_GRPC_NOT_FOUND):
        assert grpc_call(e.listen, "grpc-trailers-after-data:5") == grpc.StatusCode.NOT_FOUND
    for _ in range(N_NO_ROUTE):
        assert get("/nowhere") == 404  # a local reply: no route matched
    for _ in range(N_RESET):
        # the client gives up before any response: no status, a failure
        with H2Client("127.0.0.1", e.listen) as c:
            sid = c.request("GET", "/ok/slow", headers=[("x-delay-ms", "3000")])
            time.sleep(0.3)
            c.reset(sid)
            c.pump(0.1)
    total = (N_OK + N_503 + N_404 + N_RETRIED + N_GRPC_OK + N_GRPC_UNAVAILABLE + N_GRPC_NOT_FOUND + N_NO_ROUTE
             + N_RESET)
    e.total = total
    # every stream has ended (the reset one once its upstream attempt is cancelled)
    wait_for(lambda: support.metric(e.proxy.metrics(), "remora_requests_total") == total, 10, f"{total} requests")
    yield e
    e.fo.proc.stop()


def value(m, name, **labels):
    """The one sample of `name` with exactly `labels` (0 if absent)."""
    want = frozenset(labels.items())
    return m.get((name, want), 0)


# ------------------------------------------------------------------------------ counts and labels

def test_responses_by_outcome(env):
    m = env.proxy.metrics()
    d = {"direction": "main"}
    R = "remora_responses_total"
    assert value(m, R, **d, route="ok", backend="fo", status_code="200", classification="success") == N_OK
    assert value(m, R, **d, route="ok", backend="fo", status_code="503", classification="failure") == N_503
    assert value(m, R, **d, route="ok", backend="fo", status_code="404", classification="success") == N_404
    assert value(m, R, **d, route="retry", backend="fo", status_code="200", classification="success") == N_RETRIED
    assert value(m, R, **d, route="grpc", backend="fo-grpc", status_code="200", grpc_status="0",
                 classification="success") == N_GRPC_OK
    assert value(m, R, **d, route="grpc", backend="fo-grpc", status_code="200", grpc_status="14",
                 classification="failure") == N_GRPC_UNAVAILABLE
    assert value(m, R, **d, route="grpc", backend="fo-grpc", status_code="200", grpc_status="5",
                 classification="success") == N_GRPC_NOT_FOUND
    # a local reply: no route, no backend
    assert value(m, R, **d, status_code="404", classification="success") == N_NO_ROUTE
    # the reset: no status_code at all
    assert value(m, R, **d, route="ok", backend="fo", classification="failure") == N_RESET
    assert support.metric(m, R) == env.total
    # no other series
    series = [ls for (n, ls) in m if n == R]
    assert len(series) == 9, series


def test_requests_total(env):
    m = env.proxy.metrics()
    Q = "remora_requests_total"
    assert value(m, Q, direction="main", route="ok", backend="fo") == N_OK + N_503 + N_404 + N_RESET
    assert value(m, Q, direction="main", route="retry", backend="fo") == N_RETRIED
    assert value(m, Q, direction="main", route="grpc", backend="fo-grpc") == (N_GRPC_OK + N_GRPC_UNAVAILABLE
                                                                             + N_GRPC_NOT_FOUND)
    assert value(m, Q, direction="main") == N_NO_ROUTE
    # the listener's own counter saw the same requests
    assert support.metric(m, "remora_downstream_requests_total", listener="main") == env.total


def test_histogram_counts_equal_response_counts(env):
    m = env.proxy.metrics()
    H = "remora_request_duration_seconds"
    responses = {ls: v for (n, ls), v in m.items() if n == "remora_responses_total"}
    counts = {ls: v for (n, ls), v in m.items() if n == H + "_count"}
    assert counts == responses
    for ls, count in counts.items():
        labels = dict(ls)
        inf = value(m, H + "_bucket", **labels, le="+Inf")
        assert inf == count
        # cumulative buckets never decrease, and the sum is positive
        buckets = sorted(((float(dict(bl)["le"]), v) for (n, bl), v in m.items()
                          if n == H + "_bucket" and {k: x for k, x in bl if k != "le"} == labels))
        assert len(buckets) == 35
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
        assert value(m, H + "_sum", **labels) > 0
    # the reset request waited for the client's reset (about 300 ms): above 0.1 s, below 3 s
    reset = dict(direction="main", route="ok", backend="fo", classification="failure")
    assert value(m, H + "_bucket", **reset, le="0.1") == 0
    assert value(m, H + "_bucket", **reset, le="3") == 1


def test_upstream_attempts(env):
    m = env.proxy.metrics()
    A = "remora_upstream_attempts_total"
    assert value(m, A, backend="fo", kind="first", outcome="2xx") == N_OK
    assert value(m, A, backend="fo", kind="first", outcome="5xx") == N_503 + N_RETRIED
    assert value(m, A, backend="fo", kind="first", outcome="4xx") == N_404
    assert value(m, A, backend="fo", kind="retry", outcome="2xx") == N_RETRIED
    assert value(m, A, backend="fo", kind="first", outcome="cancelled") == N_RESET
    assert value(m, A, backend="fo-grpc", kind="first", outcome="2xx") == N_GRPC_OK + N_GRPC_NOT_FOUND
    assert value(m, A, backend="fo-grpc", kind="first", outcome="grpc_error") == N_GRPC_UNAVAILABLE
    # the existing retry counter agrees
    assert support.metric(m, "remora_upstream_retries_total", cluster="fo", reason="http_status") == N_RETRIED


def test_process_build_and_config_families(env):
    m = env.proxy.metrics()
    assert support.metric(m, "process_cpu_seconds_total") > 0
    assert support.metric(m, "process_resident_memory_bytes") > 0
    assert support.metric(m, "process_open_fds") > 5
    assert support.metric(m, "process_max_fds") >= support.metric(m, "process_open_fds")
    assert abs(support.metric(m, "process_start_time_seconds") - time.time()) < 3600
    assert [dict(ls).get("version") for (n, ls) in m if n == "remora_build_info"] != [None]
    assert support.metric(m, "remora_build_info") == 1
    assert value(m, "remora_config_version_info", version="1") == 1
    assert abs(support.metric(m, "remora_config_last_applied_timestamp_seconds") - time.time()) < 3600
    assert value(m, "remora_config_nacks_total", source="file") == 0
    assert value(m, "remora_metrics_series_dropped_total", family="remora_request_duration_seconds") == 0


# ------------------------------------------------------------------------------ formats

def test_text_format_passes_promtool(env):
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} missing: install the Debian package prometheus (scripts/install-deps.sh)")
    ctype, text = scrape(env.health)
    assert ctype.startswith("text/plain; version=0.0.4")
    assert "# EOF" not in text and " # {" not in text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"promtool check metrics: rc {r.returncode}\n{r.stdout}\n{r.stderr}"


def test_openmetrics_negotiated_and_parsed(env):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    ctype, text = scrape(env.health, OM_ACCEPT)
    assert ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["remora_requests"].type == "counter"
    assert families["remora_responses"].type == "counter"
    assert families["remora_request_duration_seconds"].type == "histogram"
    assert families["remora_downstream_connections"].type == "counter"
    assert families["process_cpu_seconds"].type == "counter"
    samples = families["remora_responses"].samples
    assert sum(s.value for s in samples if s.name == "remora_responses_total") == env.total
    failures = sum(s.value for s in samples if s.labels.get("classification") == "failure")
    assert failures == N_503 + N_GRPC_UNAVAILABLE + N_RESET
    h = families["remora_request_duration_seconds"].samples
    assert sum(s.value for s in h if s.name.endswith("_count")) == env.total
    # an Accept without OpenMetrics (or preferring text) gets the text format
    assert scrape(env.health, "text/plain;version=0.0.4")[0].startswith("text/plain")
    assert scrape(env.health, "application/openmetrics-text;q=0.2,text/plain;q=0.9")[0].startswith("text/plain")
    assert scrape(env.health, "*/*")[0].startswith("text/plain")


# ------------------------------------------------------------------------------ a real Prometheus

class Prometheus:
    def __init__(self, workdir, target):
        self.port = free_port()
        self.dir = os.path.join(str(workdir), "prometheus")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: remora\n    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"], stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

    def query(self, q):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def test_prometheus_scrapes_and_success_rate(env):
    if SANITIZED:
        pytest.skip("timing-bound (a real Prometheus scraping every second): not under sanitizers")
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} missing: install the Debian package prometheus (scripts/install-deps.sh)")
    prom = Prometheus(env.dir, f"127.0.0.1:{env.health}")
    try:
        def ready():
            try:
                return prom.query('up{job="remora"} == 1')
            except OSError:
                return None
        wait_for(ready, 30, "Prometheus to scrape the agent")
        success = (N_OK + N_404 + N_RETRIED + N_GRPC_OK + N_GRPC_NOT_FOUND + N_NO_ROUTE)
        expect = success / env.total
        q = ('sum(remora_responses_total{job="remora",classification="success"})'
             ' / sum(remora_responses_total{job="remora"})')
        res = wait_for(lambda: prom.query(q), 15, "a success rate")
        assert abs(float(res[0]["value"][1]) - expect) < 1e-9, (res, expect)
        # the same per route, from the histogram's _count
        q = ('sum by (route) (remora_request_duration_seconds_count{classification="success",route="grpc"})'
             ' / sum by (route) (remora_request_duration_seconds_count{route="grpc"})')
        res = prom.query(q)
        assert abs(float(res[0]["value"][1]) - (N_GRPC_OK + N_GRPC_NOT_FOUND) / 8) < 1e-9, res
        # p99 of the reset request's series lies inside its bucket (0.2 s waited: the (0.2, 0.3] bucket or near)
        res = prom.query('histogram_quantile(0.99, sum by (le) (remora_request_duration_seconds_bucket'
                         '{route="ok",classification="failure"}))')
        assert 0.1 < float(res[0]["value"][1]) <= 3, res
    finally:
        prom.stop()


# ------------------------------------------------------------------------------ the series cap

def test_series_cap_drops_and_counts(tmp_path, proxy_factory):
    fo = fault_origin.start(tmp_path, name="fault-origin-cap")
    try:
        listen, health, admin = free_port(), free_port(), free_port()
        path = write_config(tmp_path, "cap.yaml", listen=listen, health=health, admin=admin, fo=fo.target,
                            workers=2, extra_top=["limits: {max_series_per_family: 3}"])
        px = proxy_factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
        dump = json.loads(px.admin("/config_dump")[2])
        assert dump["limits"]["max_series_per_family"] == 3

        def get(p, headers=None):
            return support.http_get("127.0.0.1", listen, p, headers=headers or {})[0]
        # 5 distinct outcomes on one route: 3 series fit, the other 2 are dropped on every request
        statuses = [200, 201, 202, 203, 299]
        for rep in range(2):
            for s in statuses:
                assert get("/ok/x", {"x-fault": f"status:{s}"}) == s
        m = wait_for(lambda: (lambda m: m if support.metric(m, "remora_responses_total") == 6 else None)(px.metrics()),
                     10, "6 responses recorded")
        assert len([1 for (n, ls) in m if n == "remora_responses_total"]) == 3
        assert len([1 for (n, ls) in m if n == "remora_request_duration_seconds_count"]) == 3
        for fam in ("remora_requests_total", "remora_responses_total", "remora_request_duration_seconds"):
            assert value(m, "remora_metrics_series_dropped_total", family=fam) == 4, fam
        # the listener's counters still see every request
        assert support.metric(m, "remora_downstream_requests_total", listener="main") == 10
    finally:
        fo.proc.stop()


# ------------------------------------------------------------------------------ exemplars

def test_exemplars_carry_sampled_trace_ids(tmp_path, proxy_factory):
    """With tracing on, a sampled request's trace id is its bucket's exemplar (OpenMetrics only); an
    unsampled one leaves none. The OTLP receiver is absent: spans are dropped, requests unaffected."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    fo = fault_origin.start(tmp_path, name="fault-origin-ex")
    try:
        listen, health, admin = free_port(), free_port(), free_port()
        tracing = ["telemetry:", "  tracing:", f"    otlp: {{endpoint: \"127.0.0.1:{free_port()}\", protocol: http}}",
                   "    sampling_percent: 0"]
        path = write_config(tmp_path, "ex.yaml", listen=listen, health=health, admin=admin, fo=fo.target,
                            extra_top=tracing)
        px = proxy_factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
        sampled, unsampled = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
        for tid, flags in ((unsampled, "00"), (sampled, "01")):
            status = support.http_get("127.0.0.1", listen, "/ok/x",
                                      headers={"traceparent": f"00-{tid}-00f067aa0ba902b7-{flags}"})[0]
            assert status == 200
        wait_for(lambda: support.metric(px.metrics(), "remora_requests_total") == 2, 10, "2 requests")
        _, text = scrape(health, OM_ACCEPT)
        assert f'trace_id="{unsampled}"' not in text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        ex = [s.exemplar for s in fams["remora_request_duration_seconds"].samples if s.exemplar is not None]
        assert [e.labels for e in ex] == [{"trace_id": sampled}], ex
        assert 0 < ex[0].value < 10 and abs(ex[0].timestamp.sec - time.time()) < 600
        # the 0.0.4 text carries no exemplar, and promtool still accepts it
        _, plain = scrape(health)
        assert "trace_id" not in plain
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=plain, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        fo.proc.stop()


# ------------------------------------------------------------------------------ config families

def test_config_version_applied_and_rejected(tmp_path, proxy_factory):
    """A bootstrap reload (SIGHUP) that fails is counted in remora_config_nacks_total{source="file"} and
    changes nothing; a good one with a `version` shows it and moves the applied time."""
    fo = fault_origin.start(tmp_path, name="fault-origin-cfg")
    try:
        listen, health, admin = free_port(), free_port(), free_port()
        path = write_config(tmp_path, "cfg.yaml", listen=listen, health=health, admin=admin, fo=fo.target,
                            extra_top=['version: "v1"'])
        px = proxy_factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
        m = px.metrics()
        assert value(m, "remora_config_version_info", version="v1") == 1
        applied = support.metric(m, "remora_config_last_applied_timestamp_seconds")
        with open(path) as f:
            good = f.read()
        with open(path, "w") as f:
            f.write("workers: [not, a, number]\n")
        px.proc.popen.send_signal(signal.SIGHUP)
        m = wait_for(lambda: (lambda m: m if value(m, "remora_config_nacks_total", source="file") == 1 else None)(
            px.metrics()), 10, "the rejected reload counted")
        assert value(m, "remora_config_version_info", version="v1") == 1
        assert value(m, "remora_config_nacks_total", source="control_plane") == 0
        time.sleep(0.05)
        with open(path, "w") as f:
            f.write(good.replace('version: "v1"', 'version: "v2"'))
        px.proc.popen.send_signal(signal.SIGHUP)
        m = wait_for(lambda: (lambda m: m if value(m, "remora_config_version_info", version="v2") == 1 else None)(
            px.metrics()), 10, "version v2 in service")
        assert value(m, "remora_config_version_info", version="v1") == 0
        assert support.metric(m, "remora_config_last_applied_timestamp_seconds") > applied
        assert value(m, "remora_config_nacks_total", source="file") == 1
    finally:
        fo.proc.stop()


def test_control_plane_nack_counted(tmp_path, control_factory):
    """A snapshot the agent refuses (NACK) is counted in remora_config_nacks_total{source="control_plane"};
    the version in service (remora_config_version_info) stays the control plane's previous one."""
    from control_support import service_doc, status_json, write
    from test_mesh import MeshAgent
    cp = control_factory()
    origin = fault_origin.start(tmp_path, name="fault-origin-nack")
    a = MeshAgent(str(tmp_path), cp, "nack-metrics-agent").start()
    try:
        def apply(name, text):
            return cp.ctl("apply", "-f", write(str(tmp_path), name, text), "--wait", "--timeout", "10")
        assert apply("web.yaml", service_doc("web", [origin.target], protocol="http1")).rc == 0
        good = status_json(cp)["version"]
        m = support.parse_prometheus(support.http_get("127.0.0.1", a.health, "/metrics")[2].decode())
        assert value(m, "remora_config_version_info", version=str(good)) == 1
        assert value(m, "remora_config_nacks_total", source="control_plane") == 0
        # accepted by the control plane, refused by this agent (as in test_mesh.py's NACK test)
        mirror_route = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: mx}\nspec:\n"
                        "  parentRefs: [{name: web}]\n  rules:\n"
                        "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}}}]\n"
                        "    backendRefs: [{name: web}]\n")
        assert apply("mx.yaml", mirror_route).rc == 1
        m = support.parse_prometheus(support.http_get("127.0.0.1", a.health, "/metrics")[2].decode())
        assert value(m, "remora_config_nacks_total", source="control_plane") >= 1
        assert value(m, "remora_config_version_info", version=str(good)) == 1
    finally:
        a.stop(signal.SIGKILL)
        origin.proc.stop()
