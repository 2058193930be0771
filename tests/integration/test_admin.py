"""Health and admin ports (/live, /ready, /metrics, /config_dump), --check-config, and SIGHUP reload
of the bootstrap file. All agent-only: nghttpx has none of these."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from h2client import H2Client
from procutil import free_port
from support import AGENT, http_get, metric, read_h1_response, render_config

pytestmark = pytest.mark.agent_only("admin API, metrics and bootstrap files are remora-agent's")


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------------------ health, metrics

@pytest.fixture(scope="module")
def px(module_proxy_factory, h2_origin):
    return module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", workers=2)


def test_live_and_ready(px):
    assert px.health("/live")[0] == 200
    assert px.health("/ready")[0] == 200
    assert px.health("/no-such-thing")[0] == 404


def test_config_dump_quick_mode(px, h2_origin):
    status, headers, body = px.admin("/config_dump")
    assert status == 200
    assert headers.get("content-type", "").startswith("application/json")
    dump = json.loads(body)
    assert dump["source"] == "command line"
    assert [listener["name"] for listener in dump["listeners"]] == ["main"]
    assert dump["listeners"][0]["address"] == f"127.0.0.1:{px.port}"
    assert [c["name"] for c in dump["clusters"]] == ["upstream"]
    assert dump["clusters"][0]["protocol"] == "h2"
    assert dump["clusters"][0]["endpoints"] == [f"127.0.0.1:{h2_origin.port}"]
    assert dump["workers"] == 2


def test_admin_not_on_health_port(px):
    """/config_dump belongs to the loopback admin port only."""
    assert px.health("/config_dump")[0] == 404


def scrape(px):
    return px.metrics()


def test_metrics_count_requests(px, workdir):
    before = scrape(px)

    def value(m, name, **labels):
        return metric(m, name, **labels) or 0

    # 4 over HTTP/1.1, 3 over HTTP/2, one of them answered 404 by the origin
    for i in range(4):
        status, _, _ = http_get("127.0.0.1", px.port, f"/m/{i}")
        assert status == 200
    with H2Client("127.0.0.1", px.port) as c:
        assert c.get("/m/h2a").status == 200
        assert c.get("/m/h2b").status == 200
        assert c.get("/m/h2c", headers=[("x-status", "404")]).status == 404

    def deltas():
        m = scrape(px)
        return (value(m, "remora_downstream_requests_total", listener="main")
                - value(before, "remora_downstream_requests_total", listener="main"),
                value(m, "remora_downstream_responses_total", listener="main", status_class="2xx")
                - value(before, "remora_downstream_responses_total", listener="main", status_class="2xx"),
                value(m, "remora_downstream_responses_total", listener="main", status_class="4xx")
                - value(before, "remora_downstream_responses_total", listener="main", status_class="4xx"),
                value(m, "remora_upstream_requests_total", cluster="upstream")
                - value(before, "remora_upstream_requests_total", cluster="upstream"))

    got = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        got = deltas()
        if got == (7, 6, 1, 7):
            break
        time.sleep(0.1)
    assert got == (7, 6, 1, 7), ("(downstream requests, 2xx, 4xx, upstream requests) went up by "
                                 f"{got}, expected (7, 6, 1, 7)")


def test_metrics_format_and_gauges(px):
    status, headers, body = px.health("/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain")
    text = body.decode()
    assert "# TYPE remora_downstream_requests_total counter" in text
    m = px.metrics()
    with H2Client("127.0.0.1", px.port) as c:
        assert c.get("/gauge").status == 200
        during = px.metrics()
    active = metric(during, "remora_downstream_connections_active")
    assert active is not None and active >= 1, "remora_downstream_connections_active missing or 0 with a client connected"
    assert m  # parsed


def test_metrics_upstream_connect_failures(proxy_factory):
    px = proxy_factory(upstream=("127.0.0.1", free_port()), upstream_protocol="h2")
    before = metric(px.metrics(), "remora_upstream_connect_failures_total", cluster="upstream") or 0
    status, _, _ = http_get("127.0.0.1", px.port, "/down")
    assert status in (502, 503)
    after = wait_until(lambda: (metric(px.metrics(), "remora_upstream_connect_failures_total", cluster="upstream") or 0)
                       > before and px.metrics(), 3, "remora_upstream_connect_failures_total to increase")
    assert metric(after, "remora_downstream_responses_total", listener="main", status_class="5xx") >= 1


# ------------------------------------------------------------------------------ --check-config

def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def check_config(path):
    return subprocess.run([AGENT, "--config", path, "--check-config"], capture_output=True, timeout=15)


def good_config(workdir, listen_port, h1_port, h2_port, **kw):
    text, lines = render_config(listen_port=listen_port, health_port=free_port(), admin_port=free_port(),
                                routes=kw.pop("routes", [{"prefix": "/a", "cluster": "alpha"}]),
                                clusters=[{"name": "alpha", "protocol": "http1", "endpoints": [f"127.0.0.1:{h1_port}"]},
                                          {"name": "beta", "protocol": "h2", "endpoints": [f"127.0.0.1:{h2_port}"]}],
                                **kw)
    return text, lines


def test_check_config_good(workdir, h1_origin, h2_origin):
    port = free_port()
    text, _ = good_config(workdir, port, h1_origin.port, h2_origin.port)
    path = write(os.path.join(workdir, "good.yaml"), text)
    r = check_config(path)
    assert r.returncode == 0, r.stderr.decode()
    # it only checks: nothing may be listening afterwards
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_check_config_undefined_cluster_names_file_and_line(workdir, h1_origin, h2_origin):
    text, lines = good_config(workdir, free_port(), h1_origin.port, h2_origin.port,
                              routes=[{"prefix": "/a", "cluster": "alpha"}, {"prefix": "/b", "cluster": "nosuch"}])
    path = write(os.path.join(workdir, "bad.yaml"), text)
    r = check_config(path)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0, out
    assert f"{path}:{lines[1]}:" in out, f"expected '{path}:{lines[1]}:' in:\n{out}"
    assert "nosuch" in out


def test_check_config_unknown_key(workdir, h1_origin, h2_origin):
    text, _ = good_config(workdir, free_port(), h1_origin.port, h2_origin.port)
    text = text.replace("workers: 1", "wrkers: 1")
    line = text.splitlines().index("wrkers: 1") + 1
    path = write(os.path.join(workdir, "typo.yaml"), text)
    r = check_config(path)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert f"{path}:{line}:" in out and "wrkers" in out, out


def test_check_config_yaml_syntax_error(workdir):
    path = write(os.path.join(workdir, "syntax.yaml"), "workers: 1\nlisteners:\n  - name: [unclosed\n")
    r = check_config(path)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert f"{path}:" in out, out


def test_check_config_missing_file(workdir):
    path = os.path.join(workdir, "does-not-exist.yaml")
    r = check_config(path)
    assert r.returncode != 0
    assert path in (r.stdout + r.stderr).decode()


def test_check_config_unreadable_certificate(workdir, h1_origin, h2_origin):
    text, _ = good_config(workdir, free_port(), h1_origin.port, h2_origin.port)
    text = text.replace("    routes:\n", "    tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n    routes:\n", 1)
    line = text.splitlines().index("    tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}") + 1
    path = write(os.path.join(workdir, "nocert.yaml"), text)
    r = check_config(path)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert f"{path}:{line}:" in out and "/nonexistent/cert.pem" in out, out


# ------------------------------------------------------------------------------ SIGHUP reload

class Reloadable:
    def __init__(self, workdir, proxy_factory, h1_origin, h2_origin):
        self.listen_port, self.health_port, self.admin_port = free_port(), free_port(), free_port()
        self.path = os.path.join(workdir, "agent.yaml")
        self.clusters = [{"name": "alpha", "protocol": "http1", "endpoints": [f"127.0.0.1:{h1_origin.port}"]},
                         {"name": "beta", "protocol": "h2", "endpoints": [f"127.0.0.1:{h2_origin.port}"]}]
        self.write([{"prefix": "/a", "cluster": "alpha"}])
        self.px = proxy_factory(config_path=self.path, listen_port=self.listen_port, health_port=self.health_port,
                                admin_port=self.admin_port)

    def write(self, routes):
        text, lines = render_config(listen_port=self.listen_port, health_port=self.health_port,
                                    admin_port=self.admin_port, routes=routes, clusters=self.clusters,
                                    drain_timeout_ms=3000)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)
        return lines

    def generation(self):
        return json.loads(self.px.admin("/config_dump")[2])["generation"]

    def get(self, path):
        status, _, body = http_get("127.0.0.1", self.listen_port, path)
        return status, body


@pytest.fixture
def reloadable(workdir, proxy_factory, h1_origin, h2_origin):
    return Reloadable(workdir, proxy_factory, h1_origin, h2_origin)


def origin_of(body):
    return json.loads(body)["origin"]


def test_sighup_good_file(reloadable):
    r = reloadable
    status, body = r.get("/a/1")
    assert status == 200 and origin_of(body) == "h1"
    assert r.get("/b/1")[0] == 404, "no route for /b yet"
    gen = r.generation()

    # connections open across the reload: an HTTP/1.1 keep-alive one and an HTTP/2 one with a stream in flight
    s = socket.create_connection(("127.0.0.1", r.listen_port), timeout=10)
    s.sendall(b"GET /a/before HTTP/1.1\r\nHost: r.test\r\n\r\n")
    assert read_h1_response(s)[0] == 200
    c = H2Client("127.0.0.1", r.listen_port)
    slow = c.request("GET", "/a/slow", headers=[("x-delay-ms", "1000")])
    c.pump(0.2)

    r.write([{"prefix": "/a", "cluster": "alpha"}, {"prefix": "/b", "cluster": "beta"}])
    r.px.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: r.get("/b/new")[0] == 200, 5, "the new route to serve")
    assert origin_of(r.get("/b/new")[1]) == "h2"
    assert r.generation() > gen

    try:
        assert c.wait([slow], timeout=5)
        assert c.responses[slow].status == 200, "the in-flight stream did not survive the reload"
        assert c.goaway is None, f"the HTTP/2 connection got GOAWAY {c.goaway} on reload"
        rb = c.get("/b/on-old-h2-connection")
        assert rb.status == 200 and origin_of(rb.data) == "h2"
        s.sendall(b"GET /b/on-old-h1-connection HTTP/1.1\r\nHost: r.test\r\n\r\n")
        status, _, body, _ = read_h1_response(s)
        assert status == 200 and origin_of(body) == "h2", "the keep-alive connection was dropped or kept the old routes"
    finally:
        s.close()
        c.close()
    assert r.px.alive()


def test_sighup_bad_file_keeps_old_config(reloadable):
    r = reloadable
    assert r.get("/a/1")[0] == 200
    gen = r.generation()
    lines = r.write([{"prefix": "/a", "cluster": "alpha"}, {"prefix": "/b", "cluster": "gamma"}])
    r.px.proc.send_signal(signal.SIGHUP)
    where = f"{r.path}:{lines[1]}"
    wait_until(lambda: where in r.px.log(), 5, f"the log to name {where}")
    assert "gamma" in [ln for ln in r.px.log().splitlines() if where in ln][0]
    assert r.px.alive()
    status, body = r.get("/a/2")
    assert status == 200 and origin_of(body) == "h1", "the old configuration stopped serving"
    assert r.get("/b/1")[0] == 404
    assert r.generation() == gen

    # a fixed file is taken on the next SIGHUP
    r.write([{"prefix": "/a", "cluster": "alpha"}, {"prefix": "/b", "cluster": "beta"}])
    r.px.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: r.get("/b/2")[0] == 200, 5, "the fixed file to be loaded")
    assert r.generation() > gen


def test_sighup_unparsable_file(reloadable):
    r = reloadable
    with open(r.path, "a") as f:
        f.write("listeners: [this is: not: valid\n")
    r.px.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: f"{r.path}:" in r.px.log(), 5, "the log to name the file")
    assert r.px.alive()
    assert r.get("/a/3")[0] == 200
