"""Circuit breakers (cluster `circuit_breakers`) and outlier detection (cluster `outlier_detection`),
against tests/tools/fault_origin.py (x-delay-ms holds requests in flight) and origins stopped and
started again on a fixed port (connect failures, then recovery).

- Breakers: with max_requests N and N requests in flight, request N+1 is answered at once (503, or a
  trailers-only UNAVAILABLE for gRPC) and counted; the limit is agent-wide: with 2 workers, N in flight
  across both. max_connections bounds the connections open at the origin (plus each worker's first per
  endpoint); HTTP/1.1 attempts wait for a pooled connection within max_pending_requests, past it they
  overflow; HTTP/2 attempts share an open connection.
- Outlier detection: an endpoint that starts failing is ejected after the configured consecutive
  failures, gets no traffic while ejected, and comes back after a successful probe; with
  max_ejection_percent 100, every endpoint ejected -> the circuit is open (fail fast, no connect
  attempts, /metrics says so), then recovery."""

import concurrent.futures
import os
import socket
import time

import grpc
import pytest

import fault_origin
import grpc_client
import support
from h2client import H2Client
from procutil import free_port

pytestmark = pytest.mark.agent_only("circuit breakers and outlier detection are remora-agent's bootstrap schema")

M = {
    "overflow": "remora_upstream_overflow_total",  # {cluster, limit}
    "breaker_active": "remora_upstream_breaker_active",  # {cluster, limit}
    "ejections": "remora_upstream_outlier_ejections_total",  # {cluster}
    "ejected": "remora_upstream_endpoints_ejected",  # {cluster}
    "circuit_open": "remora_upstream_circuit_open",  # {cluster}
    "connect_failures": "remora_upstream_connect_failures_total",  # {cluster}
    "local_replies": "remora_downstream_local_replies_total",  # {listener, cause}
}

N = 4
HOLD_MS = 2500


def start_agent(d, factory, clusters, routes, workers=1):
    listen, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(listen_port=listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, workers=workers)
    path = os.path.join(str(d), f"breakers-{listen}.yaml")
    with open(path, "w") as f:
        f.write(text)
    proxy = factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
    proxy.listen = listen
    return proxy


def value(proxy, name, **labels):
    return support.metric(proxy.metrics(), M[name], **labels) or 0.0


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def get(proxy, path, headers=None, timeout=15):
    return support.http_get("127.0.0.1", proxy.listen, path, timeout=timeout, headers=headers or {})


# ------------------------------------------------------------------------------ breakers

@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    h = fault_origin.start(tmp_path_factory.mktemp("brk-origin"))
    yield h
    h.proc.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_max_requests_fail_fast(origin, tmp_path, proxy_factory, workers):
    cluster = f"lim{workers}"
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [origin.target],
                          "circuit_breakers": {"max_requests": N, "max_pending_requests": 100,
                                               "max_connections": 100, "max_retries": 10}}],
                        [{"name": "lim", "prefix": "/", "cluster": cluster, "timeout_ms": 20000}], workers=workers)
    assert get(proxy, "/warm")[0] == 200
    before = value(proxy, "overflow", cluster=cluster, limit="requests")
    with concurrent.futures.ThreadPoolExecutor(max_workers=N + 8) as pool:
        # N requests held in flight (each on its own connection, so with 2 workers they land on both)
        held = [pool.submit(get, proxy, f"/held/{i}", {"x-delay-ms": str(HOLD_MS)}) for i in range(N)]
        assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="requests") == N), \
            proxy.metrics()
        # request N+1 (and a few more, on fresh connections: both workers) fail fast
        t0 = time.monotonic()
        extra = [pool.submit(get, proxy, f"/extra/{i}", {"x-delay-ms": str(HOLD_MS)}) for i in range(6)]
        results = [f.result() for f in extra]
        took = time.monotonic() - t0
        for status, hdrs, body in results:
            assert status == 503, (status, body)
            assert b"overflow" in body, body
        assert took < HOLD_MS / 1000.0 / 2, took
        assert all(f.result()[0] == 200 for f in held)
    after = value(proxy, "overflow", cluster=cluster, limit="requests")
    assert after - before == 6
    assert value(proxy, "local_replies", cause="overflow") >= 6
    # every slot came back: the limit admits N again
    assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="requests") == 0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=N) as pool:
        assert all(f.result()[0] == 200 for f in [pool.submit(get, proxy, f"/again/{i}", {"x-delay-ms": "200"})
                                                 for i in range(N)])
    print(f"workers={workers}: {N} held, 6 extra refused in {took * 1000:.0f} ms, overflow counter +{after - before:.0f}")


@pytest.mark.parametrize("downstream", ["h1", "h2"])
def test_downstream_abort_releases_slot(origin, tmp_path, proxy_factory, downstream):
    """A client that goes away while its request is in flight gives its slot back exactly once: at once
    over HTTP/2 (the stream is reset), when the exchange ends over HTTP/1.1 (the agent does not read a
    connection whose request is complete, so it notices the close when it writes the response)."""
    cluster = f"lim-abort-{downstream}"
    hold_ms = 8000 if downstream == "h2" else 1500
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [origin.target],
                          "circuit_breakers": {"max_requests": 2}}],
                        [{"name": "a", "prefix": "/", "cluster": cluster, "timeout_ms": 20000}])
    clients = []
    for i in range(2):
        if downstream == "h2":
            c = H2Client("127.0.0.1", proxy.listen, timeout=5)
            c.request("GET", f"/abort/{i}", headers=[("x-delay-ms", str(hold_ms))])
        else:
            c = socket.create_connection(("127.0.0.1", proxy.listen), timeout=5)
            c.sendall(f"GET /abort/{i} HTTP/1.1\r\nHost: x\r\nx-delay-ms: {hold_ms}\r\n\r\n".encode())
        clients.append(c)
    assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="requests") == 2)
    assert get(proxy, "/over")[0] == 503
    t0 = time.monotonic()
    for c in clients:
        c.close()
    assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="requests") == 0, timeout=5)
    if downstream == "h2":
        assert time.monotonic() - t0 < 2
    assert get(proxy, "/after")[0] == 200
    assert value(proxy, "breaker_active", cluster=cluster, limit="requests") == 0


def test_max_requests_grpc_unavailable(origin, tmp_path, proxy_factory):
    cluster = "lim-grpc"
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [origin.target],
                          "circuit_breakers": {"max_requests": 1}}],
                        [{"name": "grpc", "prefix": "/", "cluster": cluster, "timeout_ms": 20000}])
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        held = pool.submit(get, proxy, "/held", {"x-delay-ms": str(HOLD_MS)})
        assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="requests") == 1)
        with grpc_client.channel(f"127.0.0.1:{proxy.listen}") as ch:
            with pytest.raises(grpc.RpcError) as ei:
                grpc_client.Echo(ch).unary(b"x", timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
        assert "overflow" in (ei.value.details() or ""), ei.value.details()
        assert held.result()[0] == 200
    assert value(proxy, "overflow", cluster=cluster, limit="requests") == 1


def test_max_retries_counts_overflow(origin, tmp_path, proxy_factory):
    """max_retries 0 would be 'no limit': with 1, a second request that needs a retry while one retry is in
    flight is not retried (its failure goes back) and is counted as a retries overflow."""
    cluster = "lim-retry"
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [origin.target],
                          "circuit_breakers": {"max_retries": 1}}],
                        [{"name": "r", "prefix": "/", "cluster": cluster, "timeout_ms": 20000,
                          "retry": {"attempts": 2, "backoff_ms": 10, "http_statuses": [503]}}])
    k1, k2 = f"r1-{time.monotonic_ns()}", f"r2-{time.monotonic_ns()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # the first request's first try is delayed then fails; its retry is then held in flight as long
        first = pool.submit(get, proxy, "/a", {"x-fault-key": k1, "x-fault": "status:503", "x-fault-times": "1",
                                               "x-delay-ms": str(HOLD_MS), "x-delay-times": "2"})
        assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="retries") == 1)
        status, _, _ = get(proxy, "/b", {"x-fault-key": k2, "x-fault": "status:503", "x-fault-times": "1"})
        assert status == 503
        assert origin.attempts(k2)["attempts"] == 1
        assert first.result()[0] == 200
    assert value(proxy, "overflow", cluster=cluster, limit="retries") == 1
    assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="retries") == 0)


def timed_get(proxy, path, headers=None):
    t0 = time.monotonic()
    status, hdrs, body = get(proxy, path, headers, timeout=20)
    return status, body, time.monotonic() - t0


def test_max_connections_h1_queue_and_overflow(tmp_path, proxy_factory):
    """max_connections 2 on an HTTP/1.1 cluster, 2 workers, 1 endpoint: at most 2 + 2 x 1 - 1 = 3
    connections are ever open at the origin (each worker's first connection to an endpoint is always
    allowed, counted anyway; a further one needs a free slot). Requests that find no connection wait
    on their worker's pool within max_pending_requests (3); past it they are refused at once with 503
    "overflow", counted under limit="connections". Afterwards the connections gauge equals the pooled
    connections, and 0 once they idle out."""
    origin = fault_origin.start(tmp_path, name="fo-maxconn")
    try:
        cluster, max_conns, max_pending, workers, hold = "mc-h1", 2, 3, 2, 1500
        bound = max_conns + workers * 1 - 1
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "http1", "endpoints": [origin.target],
                              "pool_idle_timeout_ms": 2500,
                              "circuit_breakers": {"max_connections": max_conns, "max_pending_requests": max_pending,
                                                   "max_requests": 1000, "max_retries": 10}}],
                            [{"name": "mc", "prefix": "/", "cluster": cluster, "timeout_ms": 20000}], workers=workers)
        n = 16
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            futs = [pool.submit(timed_get, proxy, f"/mc/{i}", {"x-delay-ms": str(hold)}) for i in range(n)]
            # while the load runs the agent-wide gauges stay within the bounds
            peak_gauge = 0
            while not all(f.done() for f in futs):
                peak_gauge = max(peak_gauge, value(proxy, "breaker_active", cluster=cluster, limit="connections"))
                assert value(proxy, "breaker_active", cluster=cluster, limit="pending") <= max_pending
                time.sleep(0.05)
            results = [f.result() for f in futs]
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] != 200]
        for status, body, took in refused:
            assert status == 503 and b"overflow" in body, (status, body)
            assert took < hold / 1000.0 / 2, took  # at once, not after waiting
        stats = origin.stats()
        # every request served went through at most `bound` connections: at most bound + max_pending served
        assert 2 <= stats["peak_open_connections"] <= bound, stats
        assert stats["connections"] <= bound + 1, stats  # connections are reused, not churned (+1: this query)
        assert peak_gauge <= bound, peak_gauge
        assert len(ok) == stats["requests"], (len(ok), stats)
        assert n - bound - max_pending <= len(refused) <= n - max_conns, [r[:1] for r in results]
        # counters agree: one overflow per refusal, under "connections"; none elsewhere
        assert value(proxy, "overflow", cluster=cluster, limit="connections") == len(refused)
        assert value(proxy, "overflow", cluster=cluster, limit="pending") == 0
        assert value(proxy, "local_replies", cause="overflow") == len(refused)
        # after the load: slots = pooled connections = connections open at the origin (minus the query's)
        assert value(proxy, "breaker_active", cluster=cluster, limit="pending") == 0
        pooled = value(proxy, "breaker_active", cluster=cluster, limit="connections")
        assert 1 <= pooled <= bound, pooled
        assert pooled == support.metric(proxy.metrics(), "remora_upstream_connections_active", cluster=cluster)
        assert wait_for(lambda: origin.stats()["open_connections"] - 1 == pooled, timeout=3), origin.stats()
        # they idle out: every slot comes back
        assert wait_for(lambda: value(proxy, "breaker_active", cluster=cluster, limit="connections") == 0, timeout=8)
        assert wait_for(lambda: origin.stats()["open_connections"] == 1, timeout=3), origin.stats()
        assert get(proxy, "/after")[0] == 200
        print(f"max_connections {max_conns}, {workers} workers: peak {stats['peak_open_connections']} open at the "
              f"origin (bound {bound}), {len(ok)} served, {len(refused)} refused at once, {pooled:.0f} pooled after")
    finally:
        origin.proc.stop()


def test_max_connections_h2_shares_connection(tmp_path, proxy_factory):
    """HTTP/2 with max_connections 1 and h2_connections 4: no second connection is opened; every request
    goes on the one connection (over its preferred stream count) and succeeds; nothing overflows."""
    origin = fault_origin.start(tmp_path, name="fo-maxconn-h2")
    try:
        cluster = "mc-h2"
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "h2", "endpoints": [origin.target], "h2_connections": 4,
                              "circuit_breakers": {"max_connections": 1, "max_pending_requests": 100}}],
                            [{"name": "mc2", "prefix": "/", "cluster": cluster, "timeout_ms": 20000}])
        assert get(proxy, "/warm")[0] == 200
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = [f.result() for f in [pool.submit(get, proxy, f"/h2/{i}", {"x-delay-ms": "500"}) for i in range(8)]]
        assert all(r[0] == 200 for r in results), [r[0] for r in results]
        stats = origin.stats()
        assert stats["h2_connections"] == 1 and stats["peak_open_connections"] == 1, stats
        assert value(proxy, "breaker_active", cluster=cluster, limit="connections") == 1
        assert value(proxy, "breaker_active", cluster=cluster, limit="pending") == 0
        assert value(proxy, "overflow", cluster=cluster, limit="connections") == 0
    finally:
        origin.proc.stop()


# ------------------------------------------------------------------------------ outlier detection

def served(h):
    return h.stats()["requests"]


def test_outlier_ejection_and_probe(tmp_path, proxy_factory):
    good = fault_origin.start(tmp_path, name="fo-good")
    bad_port = free_port()
    bad = fault_origin.start(tmp_path, "--port", str(bad_port), name="fo-bad")
    try:
        cluster = "od"
        od = {"consecutive_5xx": 3, "consecutive_gateway_errors": 3, "interval_ms": 1000, "base_ejection_ms": 1500,
              "max_ejection_ms": 10000, "max_ejection_percent": 50}
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "h2", "endpoints": [good.target, bad.target],
                              "load_balancer": {"type": "round_robin"}, "outlier_detection": od}],
                            [{"name": "od", "prefix": "/", "cluster": cluster}])
        for i in range(4):
            assert get(proxy, f"/ok/{i}")[0] == 200
        assert served(bad) >= 1
        # the endpoint starts failing (stopped): 3 consecutive gateway errors eject it
        bad.proc.stop()
        failures = 0
        for i in range(12):
            status = get(proxy, f"/f/{i}")[0]
            failures += status != 200
            if value(proxy, "ejections", cluster=cluster) >= 1:
                break
        assert value(proxy, "ejections", cluster=cluster) == 1
        # 3 failures; 2 requests if a refused stream on the dead connection was re-sent once (2 reports)
        assert 2 <= failures <= 3, failures
        assert value(proxy, "ejected", cluster=cluster) == 1
        assert value(proxy, "circuit_open", cluster=cluster) == 0
        # no traffic while ejected: every request succeeds on the good endpoint, no connect attempt
        cf = value(proxy, "connect_failures", cluster=cluster)
        g0 = served(good)
        for i in range(10):
            assert get(proxy, f"/ej/{i}")[0] == 200
        assert served(good) - g0 == 10
        assert value(proxy, "connect_failures", cluster=cluster) == cf
        # it comes back (started again on its port); after the ejection time one request probes it
        bad = fault_origin.start(tmp_path, "--port", str(bad_port), name="fo-bad2")
        time.sleep(1.7)
        for i in range(6):
            assert get(proxy, f"/back/{i}")[0] == 200
        assert served(bad) >= 2, "the probe and the traffic after it"
        assert value(proxy, "ejected", cluster=cluster) == 0
    finally:
        good.proc.stop()
        bad.proc.stop()


def test_all_ejected_circuit_open_then_recovery(tmp_path, proxy_factory):
    port = free_port()
    cluster = "od-all"
    od = {"consecutive_5xx": 2, "consecutive_gateway_errors": 2, "interval_ms": 1000, "base_ejection_ms": 1500,
          "max_ejection_ms": 10000, "max_ejection_percent": 100}
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [f"127.0.0.1:{port}"], "outlier_detection": od}],
                        [{"name": "all", "prefix": "/", "cluster": cluster}])
    # nothing listens: 2 connect failures eject the only endpoint
    for i in range(2):
        assert get(proxy, f"/dead/{i}")[0] == 503
    assert value(proxy, "ejections", cluster=cluster) == 1
    assert value(proxy, "circuit_open", cluster=cluster) == 1
    # the circuit is open: fail fast, no connect attempts
    cf = value(proxy, "connect_failures", cluster=cluster)
    t0 = time.monotonic()
    for i in range(5):
        status, _, body = get(proxy, f"/open/{i}")
        assert status == 503 and b"circuit open" in body, (status, body)
    took = time.monotonic() - t0
    assert value(proxy, "connect_failures", cluster=cluster) == cf
    # the admin API says so too
    status, _, body = proxy.admin("/clusters")
    assert status == 200 and f"{cluster}: 1/1 endpoints ejected, circuit open".encode() in body, (status, body)
    # the origin comes up; after the ejection time a probe succeeds and the circuit closes
    h = fault_origin.start(tmp_path, "--port", str(port), name="fo-all")
    try:
        time.sleep(1.6)
        assert get(proxy, "/probe")[0] == 200
        assert value(proxy, "circuit_open", cluster=cluster) == 0
        assert value(proxy, "ejected", cluster=cluster) == 0
        assert f"{cluster}: 0/1 endpoints ejected, circuit closed".encode() in proxy.admin("/clusters")[2]
        for i in range(3):
            assert get(proxy, f"/after/{i}")[0] == 200
    finally:
        h.proc.stop()
    print(f"circuit open: 5 requests refused in {took * 1000:.0f} ms without a connect attempt")


def test_grpc_unavailable_in_trailers_ejects(tmp_path, proxy_factory, grpc_server):
    """A gRPC response that starts well (200, messages) and ends with grpc-status 14 UNAVAILABLE in its
    trailers is a gateway error for outlier detection, as a trailers-only UNAVAILABLE is; other
    statuses in trailers are not."""
    cluster = "od-grpc"
    od = {"consecutive_5xx": 100, "consecutive_gateway_errors": 3, "interval_ms": 1000, "base_ejection_ms": 30000,
          "max_ejection_ms": 60000, "max_ejection_percent": 100}
    proxy = start_agent(tmp_path, proxy_factory,
                        [{"name": cluster, "protocol": "h2", "endpoints": [f"127.0.0.1:{grpc_server.port}"],
                          "outlier_detection": od}],
                        [{"name": "grpc", "prefix": "/", "cluster": cluster}])

    def stream_failing(code):
        md = [("x-count", "3"), ("x-fail-after", "1"), ("x-fail-code", str(code)), ("x-fail-message", "late")]
        got = []
        with pytest.raises(grpc.RpcError) as ei:
            for m in echo.server_stream(b"m", timeout=10, metadata=md):
                got.append(m)
        assert got == [b"m"], got  # the head and a message went downstream before the status
        return ei.value.code()

    with grpc_client.channel(f"127.0.0.1:{proxy.listen}") as ch:
        echo = grpc_client.Echo(ch)
        # FAILED_PRECONDITION in trailers says nothing about the endpoint: no ejection however many
        for _ in range(4):
            assert stream_failing(9) == grpc.StatusCode.FAILED_PRECONDITION
        assert value(proxy, "ejections", cluster=cluster) == 0
        # UNAVAILABLE in trailers three times in a row: ejected (the only endpoint: the circuit opens)
        for _ in range(3):
            assert stream_failing(14) == grpc.StatusCode.UNAVAILABLE
        assert value(proxy, "ejections", cluster=cluster) == 1
        assert value(proxy, "circuit_open", cluster=cluster) == 1
        with pytest.raises(grpc.RpcError) as ei:
            echo.unary(b"x", timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and "circuit open" in (ei.value.details() or "")
