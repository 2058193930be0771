"""Distributed tracing (docs/telemetry.md): W3C and B3 propagation, SERVER/CLIENT spans exported over
OTLP/gRPC and OTLP/HTTP to a real receiver that decodes with OpenTelemetry's own code
(tests/tools/otlp_receiver, Node.js), sampling, and a receiver that is down or slow.

Real clients: curl (HTTP/1.1 and h2c), Python http.client (keep-alive loops), grpcio.
"""

import http.client
import json
import os
import re
import time

import pytest

import grpc_client
import support
from control_support import control, control_factory  # noqa: F401  (fixtures)
from otlp_tool import OtlpReceiver, available
from procutil import free_port
from test_mesh import mesh  # noqa: F401  (fixture)

pytestmark = pytest.mark.agent_only("tracing is remora-agent's")

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
SERVER, CLIENT = 2, 3
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    why = available()
    if why:
        pytest.fail(why)  # scripts/test.sh installs it: a missing receiver is a broken set-up, not a skip
    rx = OtlpReceiver.start(str(tmp_path_factory.mktemp("otlp")))
    yield rx
    rx.stop()


def telemetry_yaml(endpoint, *, protocol="grpc", sampling=100, propagation=("w3c", "b3"), service="web",
                   batch_size=512, batch_timeout_ms=200, queue_size=4096):
    return (
        "telemetry:\n"
        "  tracing:\n"
        f'    otlp: {{endpoint: "{endpoint}", protocol: {protocol}}}\n'
        f"    sampling_percent: {sampling}\n"
        f"    propagation: [{', '.join(propagation)}]\n"
        f"    service_name: {service}\n"
        f"    batch_size: {batch_size}\n"
        f"    batch_timeout_ms: {batch_timeout_ms}\n"
        f"    queue_size: {queue_size}\n"
    )


def start_agent(proxy_factory, workdir, name, *, routes, clusters, tracing, workers=1):
    port, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(listen_port=port, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, workers=workers, listener_name=name)
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(text + (tracing or ""))
    return proxy_factory(config_path=path, listen_port=port, health_port=health, admin_port=admin)


def origin_headers(res):
    """The request headers the h1 origin saw (lower-case names -> value)."""
    assert res.status == 200, res
    return {k.lower(): v for k, v in res.json()["headers"]}


def get(port, path="/", headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def by_kind(spans, service=None):
    out = {SERVER: [], CLIENT: []}
    for s in spans:
        if service is None or s["service_name"] == service:
            out.setdefault(s["kind"], []).append(s)
    return out


def parse_traceparent(v):
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", v or "")
    assert m, f"not a version-00 traceparent: {v!r}"
    return m.group(1), m.group(2), m.group(3)


def trace_metrics(agent):
    m = agent.metrics()
    return {
        "exported": support.metric(m, "remora_trace_spans_total", result="exported") or 0,
        "dropped": support.metric(m, "remora_trace_spans_total", result="dropped_queue_full") or 0,
        "failed": support.metric(m, "remora_trace_spans_total", result="export_failed") or 0,
        "invalid_w3c": support.metric(m, "remora_trace_context_invalid_total", format="w3c") or 0,
        "invalid_b3": support.metric(m, "remora_trace_context_invalid_total", format="b3") or 0,
    }


def wait_metric(agent, key, at_least, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        v = trace_metrics(agent)
        if v[key] >= at_least or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- two hops

def test_two_hops_one_trace(proxy_factory, workdir, receiver, h1_origin):
    """traceparent in -> A (server, client) -> B (server, client) -> origin: four spans, one trace, linked."""
    b = start_agent(proxy_factory, workdir, "hopb", routes=[{"name": "to-origin", "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, service="svc-b"))
    a = start_agent(proxy_factory, workdir, "hopa", routes=[{"name": "to-b", "prefix": "/", "cluster": "agent-b"}],
                    clusters=[{"name": "agent-b", "protocol": "h2", "endpoints": [b.addr]}],
                    tracing=telemetry_yaml(receiver.http_endpoint, protocol="http", service="svc-a"))
    tid = "0af7651916cd43dd8448eb211c80319c"
    res = support.curl(workdir, "-H", f"traceparent: 00-{tid}-b7ad6b7169203331-01", "-H", "tracestate: congo=t61rcWkgMzE",
                       a.url("/hello?x=1"))
    seen = origin_headers(res)
    spans = receiver.trace(tid, 4, timeout=15)
    assert len(spans) == 4, json.dumps(spans, indent=1)
    sa, sb = by_kind(spans, "svc-a"), by_kind(spans, "svc-b")
    assert len(sa[SERVER]) == len(sa[CLIENT]) == len(sb[SERVER]) == len(sb[CLIENT]) == 1, json.dumps(spans, indent=1)
    server_a, client_a, server_b, client_b = sa[SERVER][0], sa[CLIENT][0], sb[SERVER][0], sb[CLIENT][0]
    # the chain: caller -> server A -> client A -> server B -> client B -> origin
    assert server_a["parent_span_id"] == "b7ad6b7169203331"
    assert client_a["parent_span_id"] == server_a["span_id"]
    assert server_b["parent_span_id"] == client_a["span_id"]
    assert client_b["parent_span_id"] == server_b["span_id"]
    t, parent, flags = parse_traceparent(seen.get("traceparent"))
    assert (t, parent, flags) == (tid, client_b["span_id"], "01")
    assert seen.get("tracestate") == "congo=t61rcWkgMzE"
    assert all(s["trace_state"] == "congo=t61rcWkgMzE" for s in spans)
    # one transport each: A exports over OTLP/HTTP, B over OTLP/gRPC
    assert {s["transport"] for s in sa[SERVER] + sa[CLIENT]} == {"http"}
    assert {s["transport"] for s in sb[SERVER] + sb[CLIENT]} == {"grpc"}
    # semantic-convention attributes
    attrs = server_a["attributes"]
    assert server_a["name"] == "GET"
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == "/hello"
    assert attrs["url.query"] == "x=1"
    assert attrs["http.response.status_code"] == 200
    assert attrs["remora.route"] == "to-b"
    assert attrs["remora.backend"] == "agent-b"
    assert server_b["attributes"]["remora.backend"] == "origin"
    # curl spoke HTTP/1.1 to A, A speaks HTTP/2 to B
    assert attrs["network.protocol.version"] == "1.1"
    assert server_b["attributes"]["network.protocol.version"] == "2"
    ca = client_b["attributes"]
    assert ca["http.response.status_code"] == 200
    host, port = h1_origin.target.split(":")
    assert ca["server.address"] == host and ca["server.port"] == int(port)
    assert ca["remora.attempt"] == 0
    for s in spans:
        assert int(s["end_ns"]) >= int(s["start_ns"]) > 0
        # (Span.flags, field 16, is newer than otlp-transformer 0.57.2's decoder: not checked here)
    # the server span contains its client span in time
    assert int(server_a["start_ns"]) <= int(client_a["start_ns"]) <= int(client_a["end_ns"]) <= int(server_a["end_ns"])
    m = wait_metric(a, "exported", 2)
    assert m["exported"] >= 2 and m["dropped"] == 0 and m["failed"] == 0


# ------------------------------------------------------------------------------------------ propagation

@pytest.fixture(scope="module")
def prop_env(tmp_path_factory, module_proxy_factory, receiver, h1_origin):
    """Three agents in front of the same origin: propagation w3c only, b3 only, and both."""
    d = str(tmp_path_factory.mktemp("prop"))

    def start(name, propagation):
        return start_agent(module_proxy_factory, d, name, routes=[{"name": name, "prefix": "/", "cluster": "origin"}],
                           clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                           tracing=telemetry_yaml(receiver.grpc_endpoint, propagation=propagation, service=name))

    class Env:
        pass

    e = Env()
    e.w3c = start("w3conly", ("w3c",))
    e.b3 = start("b3only", ("b3",))
    e.both = start("both", ("w3c", "b3"))
    e.dir = d
    return e


def test_b3_in_w3c_out(prop_env, receiver):
    tid, sid = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
    res = support.curl(prop_env.dir, "-H", f"X-B3-TraceId: {tid}", "-H", f"X-B3-SpanId: {sid}", "-H", "X-B3-Sampled: 1",
                       prop_env.w3c.url("/b3in"))
    seen = origin_headers(res)
    t, parent, flags = parse_traceparent(seen.get("traceparent"))
    assert t == tid and flags == "01"
    spans = receiver.trace(tid, 2)
    kinds = by_kind(spans, "w3conly")
    assert kinds[SERVER][0]["parent_span_id"] == sid
    assert kinds[CLIENT][0]["parent_span_id"] == kinds[SERVER][0]["span_id"]
    assert parent == kinds[CLIENT][0]["span_id"]
    # the caller's B3 fields are rewritten to the same context (no stale parent passes through)
    assert seen.get("x-b3-traceid") == tid
    assert seen.get("x-b3-spanid") == parent
    assert seen.get("x-b3-parentspanid") == kinds[SERVER][0]["span_id"]


def test_w3c_in_b3_out(prop_env, receiver):
    tid = "5bf92f3577b34da6a3ce929d0e0e4737"
    res = support.curl(prop_env.dir, "-H", f"traceparent: 00-{tid}-{PID}-01", prop_env.b3.url("/w3cin"))
    seen = origin_headers(res)
    assert seen.get("x-b3-traceid") == tid
    assert seen.get("x-b3-sampled") == "1"
    spans = receiver.trace(tid, 2)
    kinds = by_kind(spans, "b3only")
    assert kinds[SERVER][0]["parent_span_id"] == PID
    assert seen.get("x-b3-spanid") == kinds[CLIENT][0]["span_id"]
    assert seen.get("x-b3-parentspanid") == kinds[SERVER][0]["span_id"]
    # the caller's traceparent is rewritten consistently, not passed through stale
    t, parent, _ = parse_traceparent(seen.get("traceparent"))
    assert (t, parent) == (tid, kinds[CLIENT][0]["span_id"])


def test_b3_single_in_and_out(prop_env, receiver):
    tid, sid = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
    res = support.curl(prop_env.dir, "-H", f"b3: {tid}-{sid}-1-05e3ac9a4f6e3b90", prop_env.both.url("/b3single"))
    seen = origin_headers(res)
    spans = receiver.trace(tid, 2)
    kinds = by_kind(spans, "both")
    client = kinds[CLIENT][0]
    assert seen.get("b3") == f"{tid}-{client['span_id']}-1-{kinds[SERVER][0]['span_id']}"
    t, parent, flags = parse_traceparent(seen.get("traceparent"))
    assert (t, parent, flags) == (tid, client["span_id"], "01")
    assert kinds[SERVER][0]["parent_span_id"] == sid


def test_w3c_wins_over_b3(prop_env, receiver):
    tid = "6bf92f3577b34da6a3ce929d0e0e4738"
    res = support.curl(prop_env.dir, "-H", f"traceparent: 00-{tid}-{PID}-01", "-H",
                       "b3: 80f198ee56343ba864fe8b2a57d3eff8-e457b5a2e4d86bd1-1", prop_env.both.url("/both"))
    seen = origin_headers(res)
    assert parse_traceparent(seen.get("traceparent"))[0] == tid
    assert seen.get("b3").startswith(tid + "-")
    assert by_kind(receiver.trace(tid, 2), "both")[SERVER][0]["parent_span_id"] == PID


def test_unsampled_caller_propagates_without_spans(prop_env, receiver):
    tid = "7bf92f3577b34da6a3ce929d0e0e4739"
    res = support.curl(prop_env.dir, "-H", f"traceparent: 00-{tid}-{PID}-00", prop_env.both.url("/unsampled"))
    seen = origin_headers(res)
    t, parent, flags = parse_traceparent(seen.get("traceparent"))
    assert t == tid and flags == "00" and parent != PID
    assert seen.get("x-b3-sampled") == "0"
    # b3 deny without ids: a new trace, not sampled
    res = support.curl(prop_env.dir, "-H", "b3: 0", prop_env.both.url("/deny"))
    seen = origin_headers(res)
    assert parse_traceparent(seen.get("traceparent"))[2] == "00"
    assert seen.get("b3", "").split("-")[2:3] == ["0"], seen.get("b3")
    time.sleep(0.8)  # two batch timeouts
    assert receiver.trace(tid, 1, timeout=0.1) == []


def test_malformed_context_starts_new_trace_and_is_counted(prop_env, receiver):
    before = trace_metrics(prop_env.both)
    bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    res = support.curl(prop_env.dir, "-H", f"traceparent: {bad}", "-H", "X-B3-TraceId: xyz", prop_env.both.url("/bad"))
    seen = origin_headers(res)
    t, _, flags = parse_traceparent(seen.get("traceparent"))
    assert t != "0" * 32
    after = trace_metrics(prop_env.both)
    assert after["invalid_w3c"] == before["invalid_w3c"] + 1
    assert after["invalid_b3"] == before["invalid_b3"] + 1
    # sampled at 100 %: a root span of a new trace
    spans = receiver.trace(t, 2)
    assert by_kind(spans, "both")[SERVER][0]["parent_span_id"] == ""


# --------------------------------------------------------------------------------------------- retries

def test_retry_is_two_client_spans(proxy_factory, workdir, receiver, h1_origin):
    a = start_agent(proxy_factory, workdir, "retry",
                    routes=[{"name": "retry", "prefix": "/", "cluster": "origin",
                             "retry": {"attempts": 1, "backoff_ms": 10, "http_statuses": [503]}}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, service="retry"))
    tid = "8bf92f3577b34da6a3ce929d0e0e4740"
    status, _, _ = get(a.port, "/retry", {"traceparent": f"00-{tid}-{PID}-01", "x-status": "503"})
    assert status == 503
    spans = receiver.trace(tid, 3)
    kinds = by_kind(spans, "retry")
    assert len(kinds[SERVER]) == 1 and len(kinds[CLIENT]) == 2, json.dumps(spans, indent=1)
    server = kinds[SERVER][0]
    assert sorted(c["attributes"]["remora.attempt"] for c in kinds[CLIENT]) == [0, 1]
    for c in kinds[CLIENT]:
        assert c["parent_span_id"] == server["span_id"]
        assert c["attributes"]["http.response.status_code"] == 503
        assert c["status_code"] == 2  # ERROR
    assert len({c["span_id"] for c in kinds[CLIENT]}) == 2
    assert server["attributes"]["http.response.status_code"] == 503
    assert server["attributes"]["remora.attempts"] == 2
    assert server["status_code"] == 2


# ------------------------------------------------------------------------------------------------ gRPC

def test_grpc_spans(proxy_factory, workdir, receiver, grpc_server):
    a = start_agent(proxy_factory, workdir, "grpc", routes=[{"name": "echo", "prefix": "/", "cluster": "echo"}],
                    clusters=[{"name": "echo", "protocol": "h2", "endpoints": [grpc_server.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, service="grpcsvc"))
    tid = "9bf92f3577b34da6a3ce929d0e0e4741"
    import grpc
    with grpc_client.channel(a.addr) as ch:
        echo = grpc_client.Echo(ch)
        assert echo.unary(b"hi", timeout=10, metadata=[("traceparent", f"00-{tid}-{PID}-01")]) == b"hi"
        with pytest.raises(grpc.RpcError) as ei:
            echo.unary(b"x", timeout=10, metadata=[("traceparent", f"00-{tid}-{PID}-01"), ("x-fail-code", "14")])
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    spans = receiver.trace(tid, 4)
    kinds = by_kind(spans, "grpcsvc")
    assert len(kinds[SERVER]) == 2 and len(kinds[CLIENT]) == 2
    for s in spans:
        at = s["attributes"]
        assert s["name"] == "echo.Echo/Unary"
        assert at["rpc.system"] == "grpc" and at["rpc.service"] == "echo.Echo" and at["rpc.method"] == "Unary"
        assert at["network.protocol.version"] == "2"
    codes = sorted(s["attributes"]["rpc.grpc.status_code"] for s in kinds[SERVER])
    assert codes == [0, 14]
    failed = [s for s in kinds[SERVER] if s["attributes"]["rpc.grpc.status_code"] == 14][0]
    assert failed["status_code"] == 2


# -------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("percent,low,high", [(0, 0, 0), (100, 400, 400), (30, 75, 165)])
def test_sampling_percent(proxy_factory, workdir, receiver, h1_origin, percent, low, high):
    """400 requests without a sampling decision: about `percent` % of them get spans (binomial: 30 % of 400
    is 120 +- 9.2, the bounds are about 5 standard deviations)."""
    name = f"sample{percent}"
    a = start_agent(proxy_factory, workdir, name, routes=[{"name": name, "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, sampling=percent, service=name))
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    sampled_seen = 0
    for i in range(400):
        c.request("GET", f"/s/{i}")
        r = c.getresponse()
        body = json.loads(r.read())
        assert r.status == 200
        tp = {k.lower(): v for k, v in body["headers"]}.get("traceparent")
        sampled_seen += parse_traceparent(tp)[2] == "01"
    c.close()
    # every request carries a context upstream; its sampled flag matches what is exported
    if high == 0:
        time.sleep(1.0)
    want = sampled_seen
    servers = receiver.wait_spans(want, timeout=15, pred=lambda s: s["service_name"] == name and s["kind"] == SERVER)
    if high == 0:
        time.sleep(0.5)
        servers = [s for s in receiver.spans() if s["service_name"] == name]
    assert low <= len(servers) <= high, (percent, len(servers))
    assert len(servers) == sampled_seen


# --------------------------------------------------------------------------------- receiver down / slow

def _latencies(port, n, path="/lat"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for i in range(n):
        t0 = time.monotonic()
        c.request("GET", f"{path}/{i}")
        r = c.getresponse()
        r.read()
        out.append(time.monotonic() - t0)
        assert r.status == 200
    c.close()
    out.sort()
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_receiver_down_counts_failures(proxy_factory, workdir, h1_origin, protocol):
    dead = f"127.0.0.1:{free_port()}"
    name = f"down{protocol}"
    a = start_agent(proxy_factory, workdir, name, routes=[{"name": name, "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                    tracing=telemetry_yaml(dead, protocol=protocol, service=name, batch_size=16,
                                           batch_timeout_ms=100))
    lat = _latencies(a.port, 200)
    m = wait_metric(a, "failed", 1)
    assert m["failed"] >= 1 and m["exported"] == 0
    assert m["failed"] + m["dropped"] <= 400
    if not SANITIZED:
        assert lat[len(lat) // 2] < 0.05, lat[len(lat) // 2]
    assert a.alive()


def test_slow_receiver_drops_and_never_slows_requests(proxy_factory, workdir, h1_origin):
    why = available()
    if why:
        pytest.fail(why)
    slow = OtlpReceiver.start(workdir, delay_ms=3000, name="slowrx")
    try:
        # baseline: the same agent shape without tracing
        base = start_agent(proxy_factory, workdir, "notrace", routes=[{"name": "b", "prefix": "/", "cluster": "origin"}],
                           clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                           tracing=None)
        a = start_agent(proxy_factory, workdir, "slow", routes=[{"name": "s", "prefix": "/", "cluster": "origin"}],
                        clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                        tracing=telemetry_yaml(slow.grpc_endpoint, service="slow", batch_size=8, batch_timeout_ms=50,
                                               queue_size=32))
        base_lat = _latencies(base.port, 300)
        lat = _latencies(a.port, 300)
        m = wait_metric(a, "dropped", 1, timeout=5)
        # 600 spans, a queue of 32 and one 8-span export per 3 s: most are dropped, and counted
        assert m["dropped"] >= 400, m
        if not SANITIZED:
            p50, base_p50 = lat[len(lat) // 2], base_lat[len(base_lat) // 2]
            p99, base_p99 = lat[int(len(lat) * 0.99)], base_lat[int(len(base_lat) * 0.99)]
            assert p50 < base_p50 * 3 + 0.002, (p50, base_p50)
            assert p99 < max(base_p99 * 5, 0.05), (p99, base_p99)
    finally:
        slow.stop()


def test_tracing_off_starts_nothing(proxy_factory, workdir, h1_origin):
    """No telemetry section: no context is injected, no exporter thread, no OTLP module mapped."""
    a = start_agent(proxy_factory, workdir, "off", routes=[{"name": "off", "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}], tracing=None)
    res = support.curl(workdir, "-H", f"traceparent: 00-{TID}-{PID}-01", a.url("/off"))
    seen = origin_headers(res)
    assert seen.get("traceparent") == f"00-{TID}-{PID}-01"  # passed through untouched
    assert "x-b3-traceid" not in seen
    with open(f"/proc/{a.pid}/maps") as f:
        maps = f.read()
    assert "remora-agent-otlp" not in maps and "libgrpc" not in maps
    m = trace_metrics(a)
    assert m["exported"] == m["dropped"] == m["failed"] == 0


# ------------------------------------------------------------------------------- mirrors, reload, stop

def test_mirror_is_its_own_client_span(proxy_factory, workdir, receiver, h1_origin, origin_factory):
    shadow = origin_factory("h1")
    a = start_agent(proxy_factory, workdir, "mirror",
                    routes=[{"name": "m", "prefix": "/", "cluster": "origin",
                             "mirrors": [{"cluster": "shadow", "percent": 100}]}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]},
                              {"name": "shadow", "protocol": "http1", "endpoints": [shadow.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, service="mirror"))
    tid = "abf92f3577b34da6a3ce929d0e0e4742"
    status, _, _ = get(a.port, "/mirrored", {"traceparent": f"00-{tid}-{PID}-01"})
    assert status == 200
    spans = receiver.trace(tid, 3)
    kinds = by_kind(spans, "mirror")
    assert len(kinds[SERVER]) == 1 and len(kinds[CLIENT]) == 2, json.dumps(spans, indent=1)
    mirrors = [c for c in kinds[CLIENT] if c["attributes"].get("remora.mirror")]
    assert len(mirrors) == 1
    assert mirrors[0]["attributes"]["remora.backend"] == "shadow"
    assert all(c["parent_span_id"] == kinds[SERVER][0]["span_id"] for c in kinds[CLIENT])


def test_reload_switches_endpoint_and_protocol(proxy_factory, workdir, h1_origin):
    why = available()
    if why:
        pytest.fail(why)
    rx1 = OtlpReceiver.start(workdir, name="rx1")
    rx2 = OtlpReceiver.start(workdir, name="rx2")
    try:
        routes = [{"name": "r", "prefix": "/", "cluster": "origin"}]
        clusters = [{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}]
        a = start_agent(proxy_factory, workdir, "reload", routes=routes, clusters=clusters,
                        tracing=telemetry_yaml(rx1.grpc_endpoint, service="before"))
        t1, t2 = "bbf92f3577b34da6a3ce929d0e0e4743", "cbf92f3577b34da6a3ce929d0e0e4744"
        assert get(a.port, "/one", {"traceparent": f"00-{t1}-{PID}-01"})[0] == 200
        assert len(rx1.trace(t1, 2)) == 2
        text, _ = support.render_config(listen_port=a.port, health_port=a.health_port, admin_port=a.admin_port,
                                        routes=routes, clusters=clusters, listener_name="reload")
        with open(a.config_path, "w") as f:
            f.write(text + telemetry_yaml(rx2.http_endpoint, protocol="http", service="after"))
        gen = support.metric(a.metrics(), "remora_config_generation")
        a.proc.send_signal(__import__("signal").SIGHUP)
        deadline = time.monotonic() + 10
        while support.metric(a.metrics(), "remora_config_generation") == gen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(a.port, "/two", {"traceparent": f"00-{t2}-{PID}-01"})[0] == 200
        spans = rx2.trace(t2, 2)
        assert len(spans) == 2 and {s["transport"] for s in spans} == {"http"}
        assert {s["service_name"] for s in spans} == {"after"}
        assert rx1.trace(t2, 1, timeout=0.5) == []
    finally:
        rx1.stop()
        rx2.stop()


def test_shutdown_flushes_queued_spans(proxy_factory, workdir, receiver, h1_origin):
    """A long batch timeout keeps spans queued; SIGTERM (drain) exports them before the agent exits."""
    a = start_agent(proxy_factory, workdir, "flush", routes=[{"name": "f", "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}],
                    tracing=telemetry_yaml(receiver.grpc_endpoint, service="flush", batch_timeout_ms=60000))
    tid = "dbf92f3577b34da6a3ce929d0e0e4745"
    for i in range(5):
        assert get(a.port, f"/f/{i}", {"traceparent": f"00-{tid}-{PID}-01"})[0] == 200
    time.sleep(0.3)
    assert receiver.trace(tid, 1, timeout=0.1) == []  # still queued
    a.stopped_by_test = True
    t0 = time.monotonic()
    a.proc.stop(a.drain_signal, timeout=15)
    assert time.monotonic() - t0 < 10
    assert len(receiver.trace(tid, 10, timeout=5)) == 10


# ------------------------------------------------------------------------------------ control plane

TELEMETRY_DOC = """\
apiVersion: remora.dev/v1
kind: Telemetry
metadata: {{name: default, namespace: remora-system}}
spec:
  tracing:
    otlp: {{endpoint: "{endpoint}", protocol: {protocol}}}
    samplingPercent: 100
    propagation: [w3c]
"""


def test_telemetry_kind_from_control_plane(control, mesh, tmp_path, receiver):
    """The Telemetry kind, applied with remoractl, turns tracing on in a control-plane agent; a new
    Telemetry moves the export to another protocol without a restart."""
    from control_support import service_doc, write

    web = mesh.origin()
    a = mesh(control, "trace-agent")
    docs = (service_doc("web", [f"127.0.0.1:{web}"], protocol="http1") + "---\n" +
            TELEMETRY_DOC.format(endpoint=receiver.grpc_endpoint, protocol="grpc"))
    r = control.ctl("apply", "-f", write(str(tmp_path), "t.yaml", docs), "--wait", "--timeout", "10")
    assert r.rc == 0, r
    for n, (tid, protocol) in enumerate([("ebf92f3577b34da6a3ce929d0e0e4746", "grpc"),
                                         ("fbf92f3577b34da6a3ce929d0e0e4747", "http")]):
        if n == 1:
            r = control.ctl("apply", "-f", write(str(tmp_path), "t2.yaml",
                                                 TELEMETRY_DOC.format(endpoint=receiver.http_endpoint, protocol="http")),
                            "--wait", "--timeout", "10")
            assert r.rc == 0, r
        status, _, body = support.http_get("127.0.0.1", a.port, "/x", headers={"Host": "web", "traceparent":
                                                                               f"00-{tid}-{PID}-01"})
        assert status == 200, body
        seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert parse_traceparent(seen["traceparent"])[0] == tid
        assert "x-b3-traceid" not in seen  # propagation: [w3c]
        spans = receiver.trace(tid, 2)
        assert len(spans) == 2 and {s["transport"] for s in spans} == {protocol}, spans


# ------------------------------------------------------------------------------------------ access log

def test_access_log_carries_the_exported_trace_id(proxy_factory, workdir, receiver, h1_origin):
    """The JSON access log line of a traced request names the trace of the spans the receiver got."""
    log = os.path.join(workdir, "traced-access.log")
    tracing = telemetry_yaml(receiver.grpc_endpoint, service="logged") + f"  access_log:\n    path: {log}\n"
    a = start_agent(proxy_factory, workdir, "logged", routes=[{"name": "logged", "prefix": "/", "cluster": "origin"}],
                    clusters=[{"name": "origin", "protocol": "http1", "endpoints": [h1_origin.target]}], tracing=tracing)
    # no caller context: the agent starts the trace (sampling 100 %)
    status, _, _ = get(a.port, "/access-logged")
    assert status == 200
    deadline = time.monotonic() + 10
    line = None
    while line is None and time.monotonic() < deadline:
        if os.path.exists(log):
            lines = [json.loads(x) for x in open(log) if x.strip()]
            line = next((x for x in lines if x["path"] == "/access-logged"), None)
        if line is None:
            time.sleep(0.05)
    assert line is not None, "no access log line"
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"] or ""), line
    spans = receiver.trace(line["trace_id"], 2, timeout=15)
    kinds = sorted(s["kind"] for s in spans if s["service_name"] == "logged")
    assert kinds == [SERVER, CLIENT], json.dumps(spans, indent=1)
    server = next(s for s in spans if s["kind"] == SERVER)
    assert server["attributes"]["url.path"] == "/access-logged"
