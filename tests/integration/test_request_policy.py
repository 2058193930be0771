"""Request policy of a route from the bootstrap file: header modifiers (request and response), request
mirroring, fault injection, redirects, URL rewrites, regex path/header matches, and the client's
grpc-timeout enforced by the agent. Origins are tests/tools/fault_origin.py instances (each reports
the requests it saw per x-fault-key, /__attempts).

Clients: curl (HTTP/1.1 and h2c prior knowledge), nghttp, http.client, the frame-level python3-h2
client, python3-grpcio, h2load."""

import hashlib
import http.client
import json
import math
import os
import re
import subprocess
import time

import grpc
import pytest

import fault_origin
import support
from h2client import H2Client
from procutil import free_port

pytestmark = pytest.mark.agent_only("request policy is remora-agent's bootstrap schema")

# Metric names and label values in one place (rename here if the agent's names change).
M = {
    "local_replies": "remora_downstream_local_replies_total",  # {listener, cause}
    "faults": "remora_downstream_faults_total",                # {listener, kind=delay|abort}
    "mirrors": "remora_downstream_mirrors_total",              # {listener, result=sent|body_too_large}
}
CAUSE = {"fault_abort": "fault_abort", "redirect": "redirect", "grpc_deadline": "grpc_deadline"}
LISTENER = "main"

REQ_MOD = {"set": [{"name": "x-env", "value": "prod"}], "add": [{"name": "x-a", "value": "1"}], "remove": ["x-debug"]}
RESP_MOD = {"set": [{"name": "x-resp-set", "value": "new"}], "add": [{"name": "x-resp-add", "value": "2"}],
            "remove": ["x-resp-remove"]}
SLOW_SHADOW_MS = 2000
P99_SLACK_S = 0.05  # a mirror may not add more than this to the primary's p99 latency


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_proxy_factory):
    d = tmp_path_factory.mktemp("policy")
    e = Env()
    e.workdir = str(d)
    e.fo = fault_origin.start(d, name="fo-main")
    e.sh = fault_origin.start(d, name="fo-shadow")
    e.slow = fault_origin.start(d, "--default-delay-ms", str(SLOW_SHADOW_MS), name="fo-slow")
    e.listen, health, admin = free_port(), free_port(), free_port()
    clusters = [
        {"name": "main", "protocol": "h2", "endpoints": [e.fo.target]},
        {"name": "main1", "protocol": "http1", "endpoints": [e.fo.target]},
        {"name": "shadow", "protocol": "h2", "endpoints": [e.sh.target]},
        {"name": "slow", "protocol": "h2", "endpoints": [e.slow.target]},
        {"name": "dead", "protocol": "h2", "endpoints": [f"127.0.0.1:{free_port()}"]},
    ]
    routes = [
        {"name": "regex-v", "match": {"path": {"regex": "^/v[0-9]+/.*"}}, "cluster": "shadow"},
        {"name": "regex-hdr", "match": {"path": {"prefix": "/hm/"},
                                        "headers": [{"name": "x-tenant", "value": "^acme-[0-9]+$", "regex": True}]},
         "cluster": "shadow"},
        {"name": "hdr", "prefix": "/hdr/", "cluster": "main", "request_headers": REQ_MOD, "response_headers": RESP_MOD},
        {"name": "hdr1", "prefix": "/hdr1/", "cluster": "main1", "request_headers": REQ_MOD,
         "response_headers": RESP_MOD},
        {"name": "mirror50", "prefix": "/mirror50/", "cluster": "main",
         "mirrors": [{"cluster": "shadow", "percent": 50}]},
        {"name": "mirror-all", "prefix": "/mirror-all/", "cluster": "main",
         "mirrors": [{"cluster": "shadow", "percent": 100}]},
        {"name": "mirror-dead", "prefix": "/mirror-dead/", "cluster": "main",
         "mirrors": [{"cluster": "dead", "percent": 100}]},
        {"name": "mirror-slow", "prefix": "/mirror-slow/", "cluster": "main",
         "mirrors": [{"cluster": "slow", "percent": 100}]},
        {"name": "abort30", "prefix": "/abort30/", "cluster": "main",
         "fault": {"abort_http_status": 503, "abort_percent": 30}},
        {"name": "abort-grpc", "prefix": "/abort.Grpc/", "cluster": "main",
         "fault": {"abort_grpc_status": "UNAVAILABLE", "abort_percent": 100}},
        {"name": "abort-all", "prefix": "/abort-all/", "cluster": "main",
         "fault": {"abort_http_status": 503, "abort_percent": 100}},
        {"name": "delay", "prefix": "/delay/", "cluster": "main", "fault": {"delay_ms": 100, "delay_percent": 100}},
        {"name": "redir", "prefix": "/redir/", "redirect": {"scheme": "https", "hostname": "x.example", "port": 8443,
                                                            "status_code": 301,
                                                            "path": {"type": "prefix", "value": "/new/"}}},
        {"name": "redir2", "prefix": "/redir2/", "redirect": {"scheme": "https"}},
        {"name": "redir3", "prefix": "/redir3/", "redirect": {"hostname": "other.example", "status_code": 301,
                                                              "path": {"type": "full", "value": "/full"}}},
        {"name": "rw-prefix", "prefix": "/old/", "cluster": "main",
         "url_rewrite": {"hostname": "y.example", "path": {"type": "prefix", "value": "/v2/"}}},
        {"name": "rw-prefix-h1", "prefix": "/old1/", "cluster": "main1",
         "url_rewrite": {"hostname": "y.example", "path": {"type": "prefix", "value": "/v2/"}}},
        {"name": "rw-full", "prefix": "/full/", "cluster": "main",
         "url_rewrite": {"path": {"type": "full", "value": "/replaced"}}},
        {"name": "rw-strip", "prefix": "/strip/", "cluster": "main",
         "url_rewrite": {"path": {"type": "prefix", "value": "/"}}},
        {"name": "grpc-slow", "prefix": "/grpc.Slow/", "cluster": "main", "timeout_ms": 10000},
        {"name": "default", "cluster": "main"},
    ]
    text, _ = support.render_config(listen_port=e.listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, listener_name=LISTENER)
    path = os.path.join(str(d), "policy.yaml")
    with open(path, "w") as f:
        f.write(text)
    e.proxy = module_proxy_factory(config_path=path, listen_port=e.listen, health_port=health, admin_port=admin)
    yield e
    for o in (e.fo, e.sh, e.slow):
        o.proc.stop()


_seq = [0]


def key(tag):
    _seq[0] += 1
    return f"{tag}-{os.getpid()}-{_seq[0]}-{time.monotonic_ns()}"


def counter(proxy, name, **labels):
    return support.metric(proxy.metrics(), M[name], **labels) or 0.0


def get(env, path, headers=None, method="GET", body=None, timeout=10):
    return support.http_get("127.0.0.1", env.listen, path, timeout=timeout, method=method, headers=headers or {},
                            body=body)


def values(pairs, name):
    """All values of field `name` in a list of (name, value), comma-separated lists split."""
    out = []
    for k, v in pairs:
        if k.lower() == name:
            out += [p.strip() for p in v.split(",")]
    return out


def h2load(args, timeout=60):
    r = subprocess.run(["h2load"] + args, capture_output=True, timeout=timeout)
    out = r.stdout.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert r.returncode == 0 and m and codes, out + r.stderr.decode()
    return {"done": int(m.group(3)), "2xx": int(codes.group(1)), "3xx": int(codes.group(2)),
            "4xx": int(codes.group(3)), "5xx": int(codes.group(4)), "out": out}


def binomial_bounds(n, p, sigmas=4.0):
    sd = math.sqrt(n * p * (1 - p))
    return math.ceil(n * p - sigmas * sd), math.floor(n * p + sigmas * sd)


def latencies(env, path, n, headers=None):
    """n sequential GETs on one keep-alive connection: (statuses, sorted latencies in s)."""
    c = http.client.HTTPConnection("127.0.0.1", env.listen, timeout=10)
    statuses, lat = [], []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            r.read()
            lat.append(time.monotonic() - t0)
            statuses.append(r.status)
    finally:
        c.close()
    return statuses, sorted(lat)


def p99(sorted_lat):
    return sorted_lat[min(len(sorted_lat) - 1, math.ceil(0.99 * len(sorted_lat)) - 1)]


# ------------------------------------------------------------------------------ header modifiers

@pytest.mark.parametrize("downstream", ["h1", "h2"])
@pytest.mark.parametrize("route", ["hdr", "hdr1"], ids=["upstream-h2", "upstream-h1"])
def test_header_modifiers(env, tmp_path, downstream, route):
    proto = ["--http2-prior-knowledge"] if downstream == "h2" else ["--http1.1"]
    r = support.curl(str(tmp_path), *proto, "-H", f"x-fault-key: {key('hdr')}", "-H", "x-env: dev", "-H", "x-a: 0",
                     "-H", "x-debug: 1", "-H", "x-keep: yes",
                     "-H", "x-resp-header: x-resp-set=old,x-resp-add=1,x-resp-remove=1",
                     f"http://127.0.0.1:{env.listen}/{route}/x")
    assert r.status == 200, r
    seen = [(k, v) for k, v in r.json()["headers"]]
    assert values(seen, "x-env") == ["prod"], "set replaces the client's value"
    assert values(seen, "x-a") == ["0", "1"], "add appends to the client's value"
    assert values(seen, "x-debug") == [], "remove drops the field"
    assert values(seen, "x-keep") == ["yes"]
    assert r.header("x-resp-set") == "new" and values(r.headers, "x-resp-set") == ["new"]
    assert sorted(values(r.headers, "x-resp-add")) == ["1", "2"]
    assert r.header("x-resp-remove") is None
    assert r.header("x-attempt") == "1", "fields the policy does not name pass untouched"
    # set adds the field when the client did not send it
    r = support.curl(str(tmp_path), *proto, f"http://127.0.0.1:{env.listen}/{route}/y")
    assert r.status == 200 and values(r.json()["headers"], "x-env") == ["prod"]
    assert values(r.json()["headers"], "x-a") == ["1"]
    assert r.header("x-resp-set") == "new" and values(r.headers, "x-resp-add") == ["2"]


def test_header_modifiers_h2_raw(env):
    """The same modifiers on an HTTP/2 request from the frame-level client, response read frame by frame."""
    with H2Client("127.0.0.1", env.listen) as c:
        r = c.get("/hdr/raw", headers=[("x-env", "a"), ("x-env", "b"), ("x-debug", "1"),
                                       ("x-resp-header", "x-resp-remove=1,x-resp-set=old")])
    assert r.status == 200
    seen = json.loads(r.data)["headers"]
    assert values(seen, "x-env") == ["prod"] and values(seen, "x-debug") == []
    assert r.header("x-resp-set") == "new" and r.header("x-resp-remove") is None


# ------------------------------------------------------------------------------ mirroring

def test_mirror_percent(env):
    n, k = 400, key("m50")
    before = counter(env.proxy, "mirrors", listener=LISTENER, result="sent")
    res = h2load(["-n", str(n), "-c", "4", "-m", "4", "-H", f"x-fault-key: {k}",
                  f"http://127.0.0.1:{env.listen}/mirror50/x"])
    assert res["2xx"] == n, res["out"]
    assert env.fo.attempts(k)["attempts"] == n
    shadow = env.sh.settled_attempts(k, quiet=0.5, timeout=10)["attempts"]
    lo, hi = binomial_bounds(n, 0.5)
    assert lo <= shadow <= hi, f"{shadow} of {n} mirrored at 50 % (4 sigma: {lo}..{hi})"
    assert counter(env.proxy, "mirrors", listener=LISTENER, result="sent") - before == shadow


@pytest.mark.parametrize("size", [0, 1000, 65536])
def test_mirror_copies_request(env, tmp_path, size):
    k = key("mcopy")
    body = os.urandom(size)
    args = ["-H", f"x-fault-key: {k}"]
    if size:
        (tmp_path / "b").write_bytes(body)
        args += ["--data-binary", f"@{tmp_path / 'b'}"]
    r = support.curl(str(tmp_path), *args, f"http://127.0.0.1:{env.listen}/mirror-all/copy?q=1")
    assert r.status == 200, r
    rec = env.sh.settled_attempts(k, quiet=0.3, timeout=5)
    assert rec["attempts"] == 1, rec
    assert rec["body_sha256s"] == [hashlib.sha256(body).hexdigest()]
    assert rec["paths"] == ["/mirror-all/copy?q=1"] and rec["methods"] == ["POST" if size else "GET"]


def test_mirror_body_too_large(env, tmp_path):
    k = key("mbig")
    body = os.urandom(65537)
    (tmp_path / "b").write_bytes(body)
    before = counter(env.proxy, "mirrors", listener=LISTENER, result="body_too_large")
    r = support.curl(str(tmp_path), "-H", f"x-fault-key: {k}", "--data-binary", f"@{tmp_path / 'b'}",
                     f"http://127.0.0.1:{env.listen}/mirror-all/big")
    assert r.status == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest(), r
    assert env.sh.settled_attempts(k, quiet=0.5, timeout=5)["attempts"] == 0, "a body over 64 KiB was mirrored"
    assert counter(env.proxy, "mirrors", listener=LISTENER, result="body_too_large") - before == 1


@pytest.mark.parametrize("route", ["mirror-dead", "mirror-slow"])
def test_mirror_does_not_slow_primary(env, route):
    """The shadow refuses connections (dead) or answers after 2 s (slow): the primary stays 200 and its
    p99 latency within P99_SLACK_S of the same requests without a mirror."""
    n = 100
    base_status, base = latencies(env, "/plain/x", n)
    st, lat = latencies(env, f"/{route}/x", n)
    assert base_status == [200] * n and st == [200] * n
    assert p99(lat) <= p99(base) + P99_SLACK_S, f"p99 {p99(lat) * 1000:.1f} ms vs {p99(base) * 1000:.1f} ms without"
    assert lat[-1] < SLOW_SHADOW_MS / 1000.0, "a primary waited for its mirror"


# ------------------------------------------------------------------------------ fault injection

def test_fault_abort_percent(env):
    n, k = 400, key("abort30")
    before_f = counter(env.proxy, "faults", listener=LISTENER, kind="abort")
    before_l = counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["fault_abort"])
    res = h2load(["-n", str(n), "-c", "4", "-m", "4", "-H", f"x-fault-key: {k}",
                  f"http://127.0.0.1:{env.listen}/abort30/x"])
    assert res["2xx"] + res["5xx"] == n, res["out"]
    lo, hi = binomial_bounds(n, 0.3)
    assert lo <= res["5xx"] <= hi, f"{res['5xx']} of {n} aborted at 30 % (4 sigma: {lo}..{hi})"
    assert env.fo.attempts(k)["attempts"] == res["2xx"], "an aborted request reached the upstream"
    assert counter(env.proxy, "faults", listener=LISTENER, kind="abort") - before_f == res["5xx"]
    assert counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["fault_abort"]) - before_l == res["5xx"]


def _raw_grpc(env, path, k):
    with H2Client("127.0.0.1", env.listen) as c:
        sid = c.request("POST", path, headers=[("content-type", "application/grpc"), ("te", "trailers"),
                                               ("x-fault-key", k)], body=b"\x00\x00\x00\x00\x02hi")
        assert c.wait([sid], 10)
        return c.responses[sid]


@pytest.mark.parametrize("path", ["/abort.Grpc/Call", "/abort-all/grpc.Svc/Call"],
                         ids=["abort_grpc_status", "abort_http_status-mapped"])
def test_fault_abort_grpc_trailers_only(env, path):
    k = key("gabort")
    r = _raw_grpc(env, path, k)
    assert r.reset_code is None and r.status == 200, (r.status, r.reset_code)
    assert r.header("content-type").startswith("application/grpc")
    assert r.header("grpc-status") == "14", r.headers
    assert r.headers_ended and r.data_frames == 0 and r.trailers == [], "not a trailers-only response"
    with grpc.insecure_channel(f"127.0.0.1:{env.listen}", options=[("grpc.enable_retries", 0)]) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary(path)(b"x", timeout=5, metadata=[("x-fault-key", k)])
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert env.fo.attempts(k)["attempts"] == 0


def test_fault_abort_http(env):
    k = key("habort")
    status, _, _ = get(env, "/abort-all/x", {"x-fault-key": k})
    assert status == 503 and env.fo.attempts(k)["attempts"] == 0


def test_fault_delay(env):
    k = key("delay")
    before = counter(env.proxy, "faults", listener=LISTENER, kind="delay")
    for _ in range(5):
        t0 = time.monotonic()
        status, _, _ = get(env, "/delay/x", {"x-fault-key": k})
        elapsed = time.monotonic() - t0
        assert status == 200 and 0.099 <= elapsed < 1.0, elapsed
    assert env.fo.attempts(k)["attempts"] == 5
    assert counter(env.proxy, "faults", listener=LISTENER, kind="delay") - before == 5


@pytest.mark.parametrize("downstream", ["h1", "h2"])
def test_fault_delay_holds_body(env, tmp_path, downstream):
    """A request body larger than one flow-control window waits in the agent during the delay and is
    forwarded intact afterwards."""
    k = key("delay-body")
    body = os.urandom(600 * 1024)
    (tmp_path / "b").write_bytes(body)
    proto = ["--http2-prior-knowledge"] if downstream == "h2" else ["--http1.1"]
    t0 = time.monotonic()
    r = support.curl(str(tmp_path), *proto, "-H", f"x-fault-key: {k}", "--data-binary", f"@{tmp_path / 'b'}",
                     f"http://127.0.0.1:{env.listen}/delay/body")
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert elapsed >= 0.099, elapsed
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert env.fo.attempts(k)["attempts"] == 1


def test_fault_delay_client_gone(env):
    """A client that resets its stream during the delay: the delay is cancelled, nothing reaches the
    upstream, and the agent carries on."""
    k = key("delay-gone")
    with H2Client("127.0.0.1", env.listen) as c:
        sid = c.request("GET", "/delay/gone", headers=[("x-fault-key", k)])
        c.pump(0.03)
        c.reset(sid)
        c.pump(0.3)
        # the connection still serves requests
        r = c.get("/delay/after", headers=[("x-fault-key", k)])
        assert r.status == 200
    assert env.fo.attempts(k)["paths"] == ["/delay/after"], "a request reset during its delay was forwarded"
    # the same over HTTP/1.1: the connection closes mid-delay. Whether the request is still forwarded
    # depends on the HTTP/1.1 server noticing the FIN while it is not reading (it stops reading
    # while a request is in progress), so only the agent's health is checked here.
    k = key("delay-gone1")
    c = http.client.HTTPConnection("127.0.0.1", env.listen, timeout=5)
    c.request("GET", "/delay/gone1", headers={"x-fault-key": k})
    time.sleep(0.03)
    c.sock.shutdown(2)
    c.close()
    time.sleep(0.3)
    assert env.proxy.alive()
    assert get(env, "/delay/x", {"x-fault-key": k})[0] == 200


# ------------------------------------------------------------------------------ redirects

@pytest.mark.parametrize("downstream", ["h1", "h2"])
def test_redirect_scheme_host_port_prefix(env, tmp_path, downstream):
    k = key("redir")
    before = counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["redirect"])
    proto = ["--http2-prior-knowledge"] if downstream == "h2" else []
    r = support.curl(str(tmp_path), *proto, "-H", f"x-fault-key: {k}", f"http://127.0.0.1:{env.listen}/redir/a/b?q=1")
    assert r.status == 301, r
    assert r.header("location") == "https://x.example:8443/new/a/b?q=1"
    assert env.fo.attempts(k)["attempts"] == 0
    assert counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["redirect"]) - before == 1


def test_redirect_scheme_only_default_port(env, tmp_path):
    """Gateway API: a scheme without a port redirects to the scheme's well-known port, left out of Location."""
    r = support.curl(str(tmp_path), "-H", "Host: app.test:8080", f"http://127.0.0.1:{env.listen}/redir2/x?y=2")
    assert r.status == 302, r  # the default status code
    assert r.header("location") == "https://app.test/redir2/x?y=2"


def test_redirect_hostname_full_path(env, tmp_path):
    """Gateway API: without a scheme the port is the listener's; ReplaceFullPath replaces the whole path."""
    r = support.curl(str(tmp_path), f"http://127.0.0.1:{env.listen}/redir3/deep/er")
    assert r.status == 301, r
    assert r.header("location") == f"http://other.example:{env.listen}/full"


# ------------------------------------------------------------------------------ URL rewrite

@pytest.mark.parametrize("path,route_path,authority", [
    ("/old/a/b?x=1", "/v2/a/b?x=1", "y.example"),
    ("/old/", "/v2/", "y.example"),
    ("/old1/a/b?x=1", "/v2/a/b?x=1", "y.example"),   # HTTP/1.1 upstream: Host rewritten
    ("/full/a/b", "/replaced", None),
    ("/strip/a/b", "/a/b", None),
])
def test_url_rewrite(env, tmp_path, path, route_path, authority):
    k = key("rw")
    r = support.curl(str(tmp_path), "-H", f"x-fault-key: {k}", f"http://127.0.0.1:{env.listen}{path}")
    assert r.status == 200, r
    rep = r.json()
    assert rep["path"] == route_path
    assert rep["authority"] == (authority or f"127.0.0.1:{env.listen}")


def test_url_rewrite_nghttp(env):
    k = key("rw-nghttp")
    r = subprocess.run(["nghttp", "-H", f"x-fault-key: {k}", f"http://127.0.0.1:{env.listen}/old/c/d"],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["path"] == "/v2/c/d" and rep["authority"] == "y.example" and rep["protocol"] == "h2"


# ------------------------------------------------------------------------------ regex matches

@pytest.mark.parametrize("path,to_shadow", [
    ("/v1/foo", True), ("/v12/x/y", True), ("/v3/a?z=1", True),
    ("/vx/foo", False), ("/v1", False), ("/x/v1/foo", False),
])
def test_regex_path_match(env, path, to_shadow):
    k = key("rx")
    status, _, _ = get(env, path, {"x-fault-key": k})
    assert status == 200
    assert (env.sh.attempts(k)["attempts"], env.fo.attempts(k)["attempts"]) == ((1, 0) if to_shadow else (0, 1))


@pytest.mark.parametrize("tenant,to_shadow", [
    ("acme-42", True), ("acme-x", False), ("xacme-1", False), ("acme-1 trailing", False), (None, False),
])
def test_regex_header_match(env, tenant, to_shadow):
    k = key("rxh")
    hdrs = {"x-fault-key": k}
    if tenant is not None:
        hdrs["x-tenant"] = tenant
    status, _, _ = get(env, "/hm/x", hdrs)
    assert status == 200
    assert (env.sh.attempts(k)["attempts"], env.fo.attempts(k)["attempts"]) == ((1, 0) if to_shadow else (0, 1))


def test_catastrophic_regex_does_not_hang(proxy_factory, env, tmp_path):
    """`^(a+)+$` against 4096 a's and a '!' backtracks exponentially in a naive engine."""
    listen, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(
        listen_port=listen, health_port=health, admin_port=admin,
        clusters=[{"name": "main", "protocol": "h2", "endpoints": [env.fo.target]},
                  {"name": "shadow", "protocol": "h2", "endpoints": [env.sh.target]}],
        routes=[{"name": "evil-path", "match": {"path": {"regex": "^/(a+)+$"}}, "cluster": "shadow"},
                {"name": "evil-header", "match": {"path": {"prefix": "/h/"},
                                                  "headers": [{"name": "x-evil", "value": "^(a+)+$", "regex": True}]},
                 "cluster": "shadow"},
                {"name": "default", "cluster": "main"}])
    (tmp_path / "evil.yaml").write_text(text)
    p = proxy_factory(config_path=str(tmp_path / "evil.yaml"), listen_port=listen, health_port=health,
                      admin_port=admin)
    evil = "a" * 4096 + "!"
    for path, hdrs in [("/" + evil, {}), ("/h/x", {"x-evil": evil})]:
        t0 = time.monotonic()
        status, _, _ = support.http_get("127.0.0.1", listen, path, timeout=5, headers=hdrs)
        assert time.monotonic() - t0 < 1.0, f"{path[:20]}...: {time.monotonic() - t0:.2f}s"
        assert status in (200, 400, 404, 414, 431, 503), status
    assert p.alive()
    # and the regexes still match what they should
    k = key("rx-ok")
    assert support.http_get("127.0.0.1", listen, "/aaaa", headers={"x-fault-key": k})[0] == 200
    assert support.http_get("127.0.0.1", listen, "/h/x", headers={"x-fault-key": k, "x-evil": "aaa"})[0] == 200
    assert env.sh.attempts(k)["attempts"] == 2


# ------------------------------------------------------------------------------ grpc-timeout

_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout_seconds(v):
    m = re.fullmatch(r"(\d{1,8})([HMSmun])", v or "")
    assert m, f"not a grpc-timeout value: {v!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def test_grpc_timeout_enforced_by_agent(env):
    """The client sends grpc-timeout: 100m and does not enforce it; the origin ignores it and takes 5 s. The
    agent answers DEADLINE_EXCEEDED (trailers-only) at ~100 ms, resets the upstream stream, and passed the
    remaining time (less than 100 ms) upstream."""
    k = key("gto")
    before = counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["grpc_deadline"])
    with H2Client("127.0.0.1", env.listen) as c:
        t0 = time.monotonic()
        sid = c.request("POST", "/grpc.Slow/Call", headers=[
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "100m"),
            ("x-fault-key", k), ("x-delay-ms", "5000")], body=b"\x00\x00\x00\x00\x02hi")
        assert c.wait([sid], 6)
        elapsed = time.monotonic() - t0
        r = c.responses[sid]
    assert elapsed < 0.5, f"DEADLINE_EXCEEDED after {elapsed:.3f}s"
    assert elapsed >= 0.09
    assert r.reset_code is None and r.status == 200, (r.status, r.reset_code)
    assert r.header("grpc-status") == "4", r.headers
    assert r.headers_ended and r.data_frames == 0, "not a trailers-only response"
    deadline = time.monotonic() + 3
    rec = env.fo.attempts(k)
    while rec["resets"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        rec = env.fo.attempts(k)
    assert rec["attempts"] == 1
    assert rec["resets"] >= 1, "the origin's stream was not reset"
    sent = grpc_timeout_seconds(rec["grpc_timeouts"][0])
    assert 0 < sent < 0.1, f"upstream grpc-timeout {rec['grpc_timeouts'][0]} is not below 100m"
    assert counter(env.proxy, "local_replies", listener=LISTENER, cause=CAUSE["grpc_deadline"]) - before == 1
