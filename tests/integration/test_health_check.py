"""Active health checks (cluster `health_check`, BackendTrafficPolicy `healthCheck`) against real
origins: tests/tools/fault_origin.py with --health-path (a health status set at runtime through
/__health) and tests/tools/grpc_echo_server.py with --health (grpc.health.v1.Health/Check).

- HTTP: an endpoint whose health path answers 503 gets no traffic after one interval and /metrics and
  admin /clusters say it is unhealthy; once its health path answers 200 again it is back after
  healthy_threshold checks. HTTP/1.1 clusters are checked over HTTP/1.1, h2 clusters over h2c.
- gRPC: grpc.health.v1.Health/Check, NOT_SERVING takes the endpoint out, SERVING brings it back.
- With outlier detection on too: either can take an endpoint out, both must agree to bring it back.
- Through the control plane: a BackendTrafficPolicy with healthCheck, applied with --wait.
- Bad settings are refused with file:line."""

import os
import subprocess
import time

import grpc
import pytest

import fault_origin
import support
from control_support import control, control_factory  # noqa: F401
from procutil import free_port, start_tool
from test_mesh import mesh  # noqa: F401

pytestmark = pytest.mark.agent_only("active health checks are remora-agent's")

HC = {"interval_ms": 250, "timeout_ms": 200, "healthy_threshold": 2, "unhealthy_threshold": 2}


def start_agent(d, factory, clusters, routes, workers=1):
    listen, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(listen_port=listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, workers=workers)
    path = os.path.join(str(d), f"hc-{listen}.yaml")
    with open(path, "w") as f:
        f.write(text)
    proxy = factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
    proxy.listen = listen
    return proxy


def metric(proxy, name, **labels):
    return support.metric(proxy.metrics(), name, **labels) or 0.0


def endpoints(proxy, cluster, state):
    return metric(proxy, "remora_upstream_endpoints_health", cluster=cluster, state=state)


def checks(proxy, cluster, result):
    return metric(proxy, "remora_upstream_health_checks_total", cluster=cluster, result=result)


def wait_for(pred, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def get(proxy, path, headers=None, timeout=10):
    return support.http_get("127.0.0.1", proxy.listen, path, timeout=timeout, headers=headers or {})


def served(h):
    return h.stats()["requests"]


@pytest.mark.parametrize("protocol", ["http1", "h2"])
def test_http_unhealthy_gets_no_traffic_then_recovers(tmp_path, proxy_factory, protocol):
    good = fault_origin.start(tmp_path, "--health-path", "/healthz", name="hc-good")
    bad = fault_origin.start(tmp_path, "--health-path", "/healthz", "--health-status", "503", name="hc-bad")
    try:
        cluster = f"hc-{protocol}"
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": protocol, "endpoints": [good.target, bad.target],
                              "load_balancer": {"type": "round_robin"},
                              "health_check": dict(HC, http={"path": "/healthz"})}],
                            [{"name": "r", "prefix": "/", "cluster": cluster}], workers=2)
        # the first check of a new endpoint runs at once: an explicit 503 takes it out at once
        assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 1 and endpoints(proxy, cluster, "healthy") == 1,
                        timeout=HC["interval_ms"] / 1000 * 4), proxy.metrics()
        assert endpoints(proxy, cluster, "pending") == 0
        assert checks(proxy, cluster, "failure") >= 1
        assert checks(proxy, cluster, "success") >= 1
        b0, g0 = served(bad), served(good)
        for i in range(200):
            assert get(proxy, f"/x/{i}")[0] == 200
        assert served(bad) == b0, "an unhealthy endpoint got traffic"
        assert served(good) - g0 == 200
        status, _, body = proxy.admin("/clusters")
        assert status == 200 and f"{cluster} {bad.target}: unhealthy".encode() in body, body
        assert f"{cluster} {good.target}: healthy".encode() in body, body
        # the checks went over the cluster's protocol, with the endpoint as Host
        proto = "h1" if protocol == "http1" else "h2"
        assert set(bad.health()["protocols"]) == {proto}, bad.health()
        # it turns healthy: back after healthy_threshold checks (2 x 250 ms, +-10 %)
        t0 = time.monotonic()
        bad.health(200)
        assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 2, timeout=3), proxy.metrics()
        took = time.monotonic() - t0
        assert took >= 0.2, took  # two checks, not one
        b1 = served(bad)
        for i in range(20):
            assert get(proxy, f"/y/{i}")[0] == 200
        assert served(bad) - b1 >= 5, "the endpoint is back"
        print(f"{protocol}: back {took * 1000:.0f} ms after its health path answered 200")
    finally:
        good.proc.stop()
        bad.proc.stop()


def test_unhealthy_by_silence_needs_threshold_and_all_down_fails_fast(tmp_path, proxy_factory):
    """A stopped endpoint (connect failures) goes only after unhealthy_threshold checks; with every
    endpoint unhealthy, requests fail fast (503 "no healthy endpoint", counted) without a connect."""
    port = free_port()
    h = fault_origin.start(tmp_path, "--port", str(port), "--health-path", "/hz", name="hc-one")
    cluster = "hc-one"
    try:
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "http1", "endpoints": [h.target],
                              "health_check": dict(HC, http={"path": "/hz"}, unhealthy_threshold=3)}],
                            [{"name": "r", "prefix": "/", "cluster": cluster}])
        assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 1), proxy.metrics()
        assert get(proxy, "/a")[0] == 200
    finally:
        h.proc.stop()
    t0 = time.monotonic()
    assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 1, timeout=4), proxy.metrics()
    took = time.monotonic() - t0
    assert took >= 0.4, f"unhealthy after {took:.2f}s: before 3 failed checks"
    assert checks(proxy, cluster, "connect_failure") >= 3
    cf = metric(proxy, "remora_upstream_connect_failures_total", cluster=cluster)
    for i in range(3):
        status, _, body = get(proxy, f"/down/{i}")
        assert status == 503 and b"no healthy endpoint" in body, (status, body)
    assert metric(proxy, "remora_upstream_connect_failures_total", cluster=cluster) == cf
    assert metric(proxy, "remora_upstream_no_healthy_endpoint_total", cluster=cluster) == 3
    # it comes back on its port
    h = fault_origin.start(tmp_path, "--port", str(port), "--health-path", "/hz", name="hc-one-back")
    try:
        assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 1, timeout=3), proxy.metrics()
        assert get(proxy, "/b")[0] == 200
    finally:
        h.proc.stop()


def check_config(tmp_path, text):
    path = os.path.join(str(tmp_path), "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([support.AGENT, "--check-config", "-c", path], capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout + r.stderr, path


BAD_BASE = """listeners:
  - name: main
    address: 127.0.0.1:1
    routes:
      - {name: r, match: {path: {prefix: /}}, cluster: c}
clusters:
  - name: c
    protocol: PROTO
    endpoints: ["127.0.0.1:2"]
    health_check:
"""


@pytest.mark.parametrize("proto,body,line,message", [
    ("http1", "      http: {path: healthz}\n", 11, "cluster 'c': health_check.http.path 'healthz' must start with '/'"),
    ("http1", "      http: {path: /h}\n      interval_ms: 50\n", 12, "health_check.interval_ms must be 100-"),
    ("http1", "      http: {path: /h}\n      interval_ms: 500\n      timeout_ms: 500\n", 13,
     "health_check.timeout_ms (500) must be below interval_ms (500)"),
    ("http1", "      http: {path: /h}\n      healthy_threshold: 0\n", 12, "health_check.healthy_threshold must be 1-"),
    ("http1", "      grpc: {service: x}\n", 11, "health_check.grpc needs an h2 or auto cluster"),
    ("h2", "      interval_ms: 500\n", 11, "health_check needs exactly one of http"),
    ("h2", "      http: {path: /h}\n      grpc: {}\n", 12, "health_check needs exactly one of http"),
    ("h2", "      http: {pth: /h}\n", 11, "unknown key 'pth' in health_check.http (did you mean 'path'?)"),
])
def test_bad_config_rejected_with_line(tmp_path, proto, body, line, message):
    rc, out, path = check_config(tmp_path, BAD_BASE.replace("PROTO", proto) + body)
    assert rc != 0, out
    assert f"{path}:{line}:" in out and message in out, out


# ------------------------------------------------------------------------------ gRPC health


class GrpcOrigin:
    def __init__(self, tmp_path, health, name):
        self.proc, self.port = start_tool("grpc_echo_server.py", ["--health", health], str(tmp_path), name=name)
        self.target = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.target)

    def call(self, method, body=b""):
        return self.channel.unary_unary(method)(body, timeout=5)

    def calls(self):
        import json
        return json.loads(self.call("/echo.Control/Stats"))["calls"]

    def health(self):
        import json
        return json.loads(self.call("/echo.Control/Health"))

    def set_health(self, status):
        self.call("/echo.Control/SetHealth", status.encode())

    def stop(self):
        self.channel.close()
        self.proc.stop()


def test_grpc_health_not_serving_then_serving(tmp_path, proxy_factory):
    good = GrpcOrigin(tmp_path, "SERVING", "hc-grpc-good")
    bad = GrpcOrigin(tmp_path, "NOT_SERVING", "hc-grpc-bad")
    try:
        cluster = "hc-grpc"
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "h2", "endpoints": [good.target, bad.target],
                              "load_balancer": {"type": "round_robin"},
                              "health_check": dict(HC, grpc={"service": "echo.Echo"})}],
                            [{"name": "g", "prefix": "/", "cluster": cluster}])
        assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 1 and endpoints(proxy, cluster, "healthy") == 1,
                        timeout=1.5), proxy.metrics()
        h = bad.health()
        assert h["checks"] >= 1 and set(h["services"]) == {"echo.Echo"}, h
        with grpc.insecure_channel(f"127.0.0.1:{proxy.listen}") as ch:
            unary = ch.unary_unary("/echo.Echo/Unary")
            b0, g0 = bad.calls(), good.calls()
            for i in range(50):
                assert unary(b"hi", timeout=5) == b"hi"
            assert bad.calls() == b0, "a NOT_SERVING endpoint got traffic"
            assert good.calls() - g0 == 50
            bad.set_health("SERVING")
            assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 2, timeout=3), proxy.metrics()
            b1 = bad.calls()
            for i in range(20):
                assert unary(b"hi", timeout=5) == b"hi"
            assert bad.calls() - b1 >= 5
            # every endpoint NOT_SERVING: fail fast with UNAVAILABLE
            good.set_health("NOT_SERVING")
            bad.set_health("NOT_SERVING")
            assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 2, timeout=3), proxy.metrics()
            with pytest.raises(grpc.RpcError) as ei:
                unary(b"hi", timeout=5)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
            assert "no healthy endpoint" in (ei.value.details() or ""), ei.value.details()
        assert checks(proxy, cluster, "failure") >= 3
    finally:
        good.stop()
        bad.stop()


# ------------------------------------------------------------------------------ with outlier detection


def test_health_check_and_outlier_detection_must_agree(tmp_path, proxy_factory):
    """B is healthy by its health checks but answers every request 503: outlier detection ejects it and
    the passing checks do not bring it back before its probe. Then B is back on its port, its requests
    fine but its health path 503: once the ejection time is over, no probe goes to it while it is
    unhealthy; its health path turns 200: it is healthy, probed and back."""
    good = fault_origin.start(tmp_path, "--health-path", "/healthz", name="hco-good")
    bport = free_port()
    bad = fault_origin.start(tmp_path, "--port", str(bport), "--health-path", "/healthz", "--default-fault",
                             "status:503", name="hco-bad")
    cluster = "hc-od"
    try:
        od = {"consecutive_5xx": 2, "consecutive_gateway_errors": 2, "interval_ms": 1000, "base_ejection_ms": 1000,
              "max_ejection_ms": 10000, "max_ejection_percent": 100}
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": "http1", "endpoints": [good.target, bad.target],
                              "load_balancer": {"type": "round_robin"}, "outlier_detection": od,
                              "health_check": dict(HC, http={"path": "/healthz"})}],
                            [{"name": "r", "prefix": "/", "cluster": cluster}])
        assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 2), proxy.metrics()
        for i in range(8):
            get(proxy, f"/e/{i}")
            if metric(proxy, "remora_upstream_endpoints_ejected", cluster=cluster) == 1:
                break
        assert metric(proxy, "remora_upstream_endpoints_ejected", cluster=cluster) == 1
        t_ejected = time.monotonic()
        # healthy by health check, ejected by outlier detection: out until the ejection time is over
        c0, b0 = checks(proxy, cluster, "success"), served(bad)
        while time.monotonic() - t_ejected < 0.7:
            assert get(proxy, "/ej")[0] == 200
            time.sleep(0.02)
        assert served(bad) == b0, "an ejected endpoint got traffic while its health checks passed"
        assert checks(proxy, cluster, "success") > c0
        assert endpoints(proxy, cluster, "healthy") == 2
        # B comes back with good answers but a failing health path
        bad.proc.stop()
        bad = fault_origin.start(tmp_path, "--port", str(bport), "--health-path", "/healthz", "--health-status", "503",
                                 name="hco-bad2")
        assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 1, timeout=3), proxy.metrics()
        # the ejection time is over: still no probe while the health check says unhealthy
        time.sleep(max(0.0, t_ejected + 1.2 - time.monotonic()))
        b1 = served(bad)
        for i in range(20):
            assert get(proxy, f"/u/{i}")[0] == 200
        assert served(bad) == b1, "an unhealthy endpoint was probed"
        assert metric(proxy, "remora_upstream_endpoints_ejected", cluster=cluster) == 1
        # healthy again: the next request probes it and it is back
        bad.health(200)
        assert wait_for(lambda: endpoints(proxy, cluster, "healthy") == 2, timeout=3), proxy.metrics()
        for i in range(20):
            assert get(proxy, f"/b/{i}")[0] == 200
        assert served(bad) - b1 >= 5
        assert metric(proxy, "remora_upstream_endpoints_ejected", cluster=cluster) == 0
        status, _, body = proxy.admin("/clusters")
        assert f"{cluster}: 0/2 endpoints ejected, circuit closed".encode() in body, body
    finally:
        good.proc.stop()
        bad.proc.stop()


# ------------------------------------------------------------------------------ through the control plane

BTP = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec: {{protocol: http1, endpoints: ["{good}", "{bad}"]}}
---
apiVersion: remora.dev/v1
kind: BackendTrafficPolicy
metadata: {{name: web-health}}
spec:
  targetRefs: [{{kind: Service, name: web}}]
  loadBalancer: {{type: RoundRobin}}
  healthCheck:
    http: {{path: /healthz}}
    interval: 250ms
    timeout: 200ms
    healthyThreshold: 2
    unhealthyThreshold: 2
"""


def test_control_plane_health_check(control, mesh, tmp_path):
    import json
    from control_support import write
    good = fault_origin.start(tmp_path, "--health-path", "/healthz", name="hcc-good")
    bad = fault_origin.start(tmp_path, "--health-path", "/healthz", "--health-status", "503", name="hcc-bad")
    try:
        a = mesh(control, "hc-agent")
        r = control.ctl("apply", "-f", write(str(tmp_path), "hc.yaml", BTP.format(good=good.target, bad=bad.target)),
                        "--wait", "--timeout", "10")
        assert r.rc == 0 and "applied by 1 agent" in r.out, r
        status, _, body = support.http_get("127.0.0.1", a.admin, "/config_dump")
        cl = [c for c in json.loads(body)["clusters"] if c["endpoints"] == [good.target, bad.target]][0]
        assert cl["health_check"] == {"http": {"path": "/healthz"}, "interval_ms": 250, "timeout_ms": 200,
                                      "healthy_threshold": 2, "unhealthy_threshold": 2}, cl
        name = cl["name"]

        def state(s):
            text = support.http_get("127.0.0.1", a.health, "/metrics")[2].decode()
            return support.metric(support.parse_prometheus(text), "remora_upstream_endpoints_health", cluster=name, state=s) or 0.0

        assert wait_for(lambda: state("unhealthy") == 1 and state("healthy") == 1, timeout=3)
        b0 = served(bad)
        for i in range(50):
            assert a.get("web", f"/x/{i}")[0] == 200
        assert served(bad) == b0
        g = control.ctl("get", "backendtrafficpolicy", "web-health", "-o", "yaml")
        assert g.rc == 0 and "healthCheck:" in g.out and "/healthz" in g.out, g
        # removed from the policy: the checks stop and the endpoint is back
        r = control.ctl("apply", "-f", write(str(tmp_path), "hc2.yaml",
                                             BTP.format(good=good.target, bad=bad.target).split("  healthCheck:")[0]),
                        "--wait", "--timeout", "10")
        assert r.rc == 0, r
        assert wait_for(lambda: state("unhealthy") == 0)
        for i in range(20):
            assert a.get("web", f"/y/{i}")[0] == 200
        assert served(bad) - b0 >= 5
    finally:
        good.proc.stop()
        bad.proc.stop()


def test_control_plane_rejects_bad_health_check(control, tmp_path):
    from control_support import write
    doc = BTP.format(good="127.0.0.1:1", bad="127.0.0.1:2").replace("path: /healthz", "path: healthz")
    r = control.ctl("apply", "-f", write(str(tmp_path), "bad-hc.yaml", doc))
    assert r.rc != 0, r
    assert "bad-hc.yaml:13:" in r.out + r.err and "spec.healthCheck.http.path" in r.out + r.err, r


# ------------------------------------------------------------------------------ TLS


@pytest.mark.parametrize("protocol", ["http1", "h2", "auto"])
def test_tls_cluster_checked_over_tls(tmp_path, proxy_factory, certs, protocol):
    """Endpoints are TLS fronts (remora-agent in quick mode with --tls-cert) of fault origins: the checks
    use the cluster's TLS settings (CA, server name; ALPN); with an unrelated CA the handshakes fail."""
    good = fault_origin.start(tmp_path, "--health-path", "/healthz", name="hct-good")
    bad = fault_origin.start(tmp_path, "--health-path", "/healthz", "--health-status", "503", name="hct-bad")
    try:
        fronts = [proxy_factory(upstream=("127.0.0.1", o.port), upstream_protocol="http1", tls=certs)
                  for o in (good, bad)]
        eps = [f"127.0.0.1:{f.port}" for f in fronts]
        cluster, wrong = f"hct-{protocol}", f"hct-wrong-{protocol}"
        proxy = start_agent(tmp_path, proxy_factory,
                            [{"name": cluster, "protocol": protocol, "endpoints": eps,
                              "tls": {"ca": certs["ca"], "server_name": "localhost"},
                              "health_check": dict(HC, http={"path": "/healthz"})},
                             {"name": wrong, "protocol": protocol, "endpoints": eps[:1],
                              "tls": {"ca": certs["other_ca"], "server_name": "localhost"},
                              "health_check": dict(HC, http={"path": "/healthz"})}],
                            [{"name": "r", "prefix": "/", "cluster": cluster}])
        assert wait_for(lambda: endpoints(proxy, cluster, "unhealthy") == 1 and endpoints(proxy, cluster, "healthy") == 1,
                        timeout=3), proxy.metrics()
        assert wait_for(lambda: endpoints(proxy, wrong, "unhealthy") == 1, timeout=3), proxy.metrics()
        assert checks(proxy, wrong, "connect_failure") >= 1
        assert checks(proxy, wrong, "success") == 0
        b0 = served(bad)
        for i in range(30):
            assert get(proxy, f"/t/{i}")[0] == 200
        assert served(bad) == b0
    finally:
        good.proc.stop()
        bad.proc.stop()


# ------------------------------------------------------------------------------ host-name endpoints


def test_host_name_endpoint_checked_per_address(tmp_path, proxy_factory):
    """A host name resolving to two addresses (tests/tools/dns_responder.py): one checker per address,
    resolved on the main thread; an address that leaves the answer stops being checked."""
    import json
    from procutil import PYTHON, TOOLS_DIR, Proc, wait_ready_file
    port = free_port()
    a = fault_origin.start(tmp_path, "--host", "127.0.0.2", "--port", str(port), "--health-path", "/hz", name="hcd-a")
    b = fault_origin.start(tmp_path, "--host", "127.0.0.3", "--port", str(port), "--health-path", "/hz",
                           "--health-status", "503", name="hcd-b")
    records = os.path.join(str(tmp_path), "records.json")

    def write_records(addrs):
        with open(records + ".tmp", "w") as f:
            json.dump({"svc.test": {"addrs": addrs, "ttl": 1}}, f)
        os.replace(records + ".tmp", records)

    write_records(["127.0.0.2", "127.0.0.3"])
    port_file = os.path.join(str(tmp_path), "dns.port")
    dns = Proc([PYTHON, os.path.join(TOOLS_DIR, "dns_responder.py"), "--listen", "127.0.0.1:0", "--records-file", records,
                "--port-file", port_file], os.path.join(str(tmp_path), "dns.log"))
    try:
        dns_port = wait_ready_file(port_file, dns, 15)
        listen, health, admin = free_port(), free_port(), free_port()
        path = os.path.join(str(tmp_path), "dns.yaml")
        with open(path, "w") as f:
            f.write(f"""workers: 1
admin: 127.0.0.1:{admin}
health: 127.0.0.1:{health}
dns: {{servers: ["127.0.0.1:{dns_port}"]}}
listeners:
  - name: main
    address: 127.0.0.1:{listen}
    routes:
      - cluster: hcd
clusters:
  - name: hcd
    protocol: http1
    endpoints: ["svc.test:{port}"]
    dns: {{min_refresh_ms: 200, max_refresh_ms: 500}}
    health_check: {{http: {{path: /hz}}, interval_ms: 250, timeout_ms: 200}}
""")
        proxy = proxy_factory(config_path=path, listen_port=listen, health_port=health, admin_port=admin)
        proxy.listen = listen
        assert wait_for(lambda: endpoints(proxy, "hcd", "healthy") == 1 and endpoints(proxy, "hcd", "unhealthy") == 1,
                        timeout=3), proxy.metrics()
        body = proxy.admin("/clusters")[2]
        assert f"hcd 127.0.0.3:{port}: unhealthy".encode() in body and f"hcd 127.0.0.2:{port}: healthy".encode() in body, body
        # the checks reach that address
        checked = json.loads(support.http_get("127.0.0.3", port, "/__health")[2])
        assert checked["checks"] >= 1, checked
        for i in range(10):
            assert get(proxy, f"/d/{i}")[0] == 200
        # the unhealthy address leaves the answer: its checker stops
        write_records(["127.0.0.2"])
        assert wait_for(lambda: endpoints(proxy, "hcd", "unhealthy") == 0, timeout=4), proxy.metrics()
        assert endpoints(proxy, "hcd", "healthy") == 1
        n = json.loads(support.http_get("127.0.0.3", port, "/__health")[2])["checks"]
        time.sleep(0.6)
        assert json.loads(support.http_get("127.0.0.3", port, "/__health")[2])["checks"] == n
    finally:
        dns.stop()
        a.proc.stop()
        b.proc.stop()
