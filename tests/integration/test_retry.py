"""Retries (route `retry`, `per_try_timeout_ms`, cluster `retry_budget`) and the HTTP/1.1 keep-alive
race, against tests/tools/fault_origin.py, which fails the first N attempts of a key on command and
reports every attempt it saw (/__attempts). For each condition: retried or not as configured, and the
origin sees exactly 1 + min(attempts, failures) attempts.

Clients: curl, http.client, the frame-level python3-h2 client, python3-grpcio, h2load."""

import hashlib
import json
import os
import re
import subprocess
import time

import grpc
import pytest

import fault_origin
import grpc_client
import support
from h2client import H2Client
from procutil import free_port

pytestmark = pytest.mark.agent_only("retry policy is remora-agent's bootstrap schema")

# Metric names and label values in one place (rename here if the agent's names change).
M = {
    "retries": "remora_upstream_retries_total",                      # {cluster, reason}
    "budget_exhausted": "remora_upstream_retry_budget_exhausted_total",  # {cluster}
    "not_replayable": "remora_upstream_retry_not_replayable_total",  # {cluster}
    "refused_resends": "remora_upstream_refused_resends_total",      # {cluster}
    "local_replies": "remora_downstream_local_replies_total",        # {listener, cause}
}
REASON = {"connect_failure": "connect_failure", "refused_stream": "refused_stream", "reset": "reset",
          "per_try_timeout": "per_try_timeout", "http_status": "http_status", "grpc_status": "grpc_status"}

RETRY = {"attempts": 2, "backoff_ms": 10, "max_backoff_ms": 50, "on": ["connect-failure", "refused-stream", "reset"],
         "http_statuses": [503], "grpc_statuses": ["UNAVAILABLE", "CANCELLED"], "max_replay_bytes": 65536}
BUDGET = {"percent": 20, "interval_ms": 2000, "min_retry_count": 2, "min_retry_interval_ms": 1000}
MiB = 1 << 20


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_proxy_factory):
    d = tmp_path_factory.mktemp("retry")
    e = Env()
    e.fo = fault_origin.start(d)
    e.ka = fault_origin.start(d, "--h1-close-after", "1", name="fault-origin-ka")
    dead = f"127.0.0.1:{free_port()}"
    e.listen, health, admin = free_port(), free_port(), free_port()
    fo = e.fo.target
    clusters = [
        {"name": "fo-h2", "protocol": "h2", "endpoints": [fo]},
        {"name": "fo-h1", "protocol": "http1", "endpoints": [fo]},
        {"name": "fo-grpc", "protocol": "h2", "endpoints": [fo]},
        {"name": "fo-ptt", "protocol": "h2", "endpoints": [fo]},
        {"name": "dead-retry", "protocol": "h2", "endpoints": [dead]},
        {"name": "dead-noretry", "protocol": "h2", "endpoints": [dead]},
        # round robin: the dead endpoint keeps its turn (peak EWMA, the h2 default, would avoid it)
        {"name": "mixed", "protocol": "h2", "endpoints": [dead, fo], "load_balancer": {"type": "round_robin"}},
        {"name": "budget", "protocol": "h2", "endpoints": [fo], "retry_budget": BUDGET},
        {"name": "ka", "protocol": "http1", "endpoints": [e.ka.target], "pool_idle_timeout_ms": 30000},
    ]
    routes = [
        {"name": "h2", "prefix": "/h2/", "cluster": "fo-h2", "timeout_ms": 10000, "retry": RETRY},
        {"name": "h1", "prefix": "/h1/", "cluster": "fo-h1", "timeout_ms": 10000, "retry": RETRY},
        {"name": "grpc", "prefix": "/echo.Echo/", "cluster": "fo-grpc", "timeout_ms": 10000, "retry": RETRY},
        {"name": "noretry", "prefix": "/noretry/", "cluster": "fo-h2"},
        {"name": "refused-only", "prefix": "/refused-only/", "cluster": "fo-h2",
         "retry": {"attempts": 2, "backoff_ms": 10, "on": ["refused-stream"]}},
        {"name": "dead-retry", "prefix": "/dead-retry/", "cluster": "dead-retry",
         "retry": {"attempts": 2, "backoff_ms": 10, "on": ["connect-failure"]}},
        {"name": "dead-noretry", "prefix": "/dead-noretry/", "cluster": "dead-noretry",
         "retry": {"attempts": 2, "backoff_ms": 10, "on": ["reset"]}},
        {"name": "mixed", "prefix": "/mixed/", "cluster": "mixed",
         "retry": {"attempts": 2, "backoff_ms": 10, "on": ["connect-failure"]}},
        # a per-try timeout is retried: the policy lists every condition it could be filed under
        {"name": "ptt", "prefix": "/ptt/", "cluster": "fo-ptt", "timeout_ms": 10000, "per_try_timeout_ms": 200,
         "retry": {"attempts": 2, "backoff_ms": 10, "max_backoff_ms": 50,
                   "on": ["connect-failure", "refused-stream", "reset"], "http_statuses": [503, 504]}},
        {"name": "budget", "prefix": "/budget/", "cluster": "budget", "timeout_ms": 10000,
         "retry": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 40, "on": ["reset"], "http_statuses": [503]}},
        {"name": "ka", "prefix": "/ka/", "cluster": "ka"},
        {"name": "ka-retry", "prefix": "/ka-retry/", "cluster": "ka",
         "retry": {"attempts": 1, "backoff_ms": 10, "on": ["reset", "refused-stream"]}},
    ]
    text, _ = support.render_config(listen_port=e.listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters)
    path = os.path.join(str(d), "retry.yaml")
    with open(path, "w") as f:
        f.write(text)
    e.proxy = module_proxy_factory(config_path=path, listen_port=e.listen, health_port=health, admin_port=admin)
    yield e
    e.fo.proc.stop()
    e.ka.proc.stop()


_seq = [0]


def key(tag):
    _seq[0] += 1
    return f"{tag}-{os.getpid()}-{_seq[0]}-{time.monotonic_ns()}"


def counter(proxy, name, **labels):
    v = support.metric(proxy.metrics(), M[name], **labels)
    return v or 0.0


def get(env, path, headers, method="GET", body=None, timeout=10):
    return support.http_get("127.0.0.1", env.listen, path, timeout=timeout, method=method, headers=headers, body=body)


# ------------------------------------------------------------------------------ HTTP statuses

@pytest.mark.parametrize("failures", [1, 2, 5])
@pytest.mark.parametrize("upstream", ["h2", "h1"])
def test_http_status_retried(env, upstream, failures):
    k = key("status")
    cluster = f"fo-{upstream}"
    before = counter(env.proxy, "retries", cluster=cluster, reason=REASON["http_status"])
    status, hdrs, body = get(env, f"/{upstream}/x", {"x-fault-key": k, "x-fault": "status:503",
                                                     "x-fault-times": str(failures)})
    expect_attempts = 1 + min(2, failures)
    assert env.fo.attempts(k)["attempts"] == expect_attempts
    if failures <= 2:
        assert status == 200 and json.loads(body)["attempt"] == expect_attempts
    else:
        # retries exhausted: the last upstream response is passed on, not a local reply
        assert status == 503 and hdrs.get("x-attempt") == "3", (status, hdrs)
    after = counter(env.proxy, "retries", cluster=cluster, reason=REASON["http_status"])
    assert after - before == min(2, failures)


def test_status_not_listed_not_retried(env):
    k = key("502")
    before = counter(env.proxy, "retries", cluster="fo-h2")
    status, hdrs, _ = get(env, "/h2/x", {"x-fault-key": k, "x-fault": "status:502", "x-fault-times": "1"})
    assert status == 502 and hdrs.get("x-attempt") == "1"
    assert env.fo.attempts(k)["attempts"] == 1
    assert counter(env.proxy, "retries", cluster="fo-h2") == before


def test_no_policy_not_retried(env):
    k = key("nopolicy")
    status, _, _ = get(env, "/noretry/x", {"x-fault-key": k, "x-fault": "status:503", "x-fault-times": "1"})
    assert status == 503
    assert env.fo.attempts(k)["attempts"] == 1


# ------------------------------------------------------------------------------ resets, GOAWAY, closes

@pytest.mark.parametrize("code,reason", [("REFUSED_STREAM", "refused_stream"), ("INTERNAL_ERROR", "reset"),
                                         ("CANCEL", "reset")])
def test_h2_reset_retried(env, code, reason):
    k = key("rst")
    before = counter(env.proxy, "retries", cluster="fo-h2", reason=REASON[reason])
    with H2Client("127.0.0.1", env.listen) as c:
        r = c.get("/h2/rst", headers=[("x-fault-key", k), ("x-fault", f"rst:{code}"), ("x-fault-times", "1")])
    assert r.reset_code is None and r.status == 200, (r.status, r.reset_code)
    assert json.loads(r.data)["attempt"] == 2
    assert env.fo.attempts(k)["attempts"] == 2
    assert counter(env.proxy, "retries", cluster="fo-h2", reason=REASON[reason]) == before + 1


def test_refused_only_policy(env):
    k = key("refonly")
    status, _, _ = get(env, "/refused-only/x", {"x-fault-key": k, "x-fault": "rst:REFUSED_STREAM",
                                                "x-fault-times": "1"})
    assert status == 200 and env.fo.attempts(k)["attempts"] == 2
    k = key("refonly-internal")
    status, _, _ = get(env, "/refused-only/x", {"x-fault-key": k, "x-fault": "rst:INTERNAL_ERROR",
                                                "x-fault-times": "1"})
    assert status == 502, "a reset other than REFUSED_STREAM is not in the policy: not retried"
    assert env.fo.attempts(k)["attempts"] == 1


def test_goaway_unprocessed_stream_retried(env, tmp_path):
    """GOAWAY with a last-stream-id below the request's stream: the request was never processed."""
    k = key("goaway")
    before = (counter(env.proxy, "retries", cluster="fo-h2", reason=REASON["refused_stream"])
              + counter(env.proxy, "refused_resends", cluster="fo-h2"))
    r = support.curl(str(tmp_path), "--http2-prior-knowledge",
                     "-H", f"x-fault-key: {k}", "-H", "x-fault: goaway", "-H", "x-fault-times: 1",
                     f"http://127.0.0.1:{env.listen}/h2/goaway")
    assert r.status == 200, r
    assert env.fo.attempts(k)["attempts"] == 2
    after = (counter(env.proxy, "retries", cluster="fo-h2", reason=REASON["refused_stream"])
             + counter(env.proxy, "refused_resends", cluster="fo-h2"))
    assert after - before == 1


def test_h1_close_before_response_retried(env):
    k = key("h1close")
    status, _, body = get(env, "/h1/close", {"x-fault-key": k, "x-fault": "rst:RESET", "x-fault-times": "1"})
    assert status == 200 and json.loads(body)["attempt"] == 2
    assert env.fo.attempts(k)["attempts"] == 2


@pytest.mark.parametrize("upstream", ["h2", "h1"])
def test_response_started_not_retried(env, tmp_path, upstream):
    """The connection drops after the response head went downstream: nothing is retried."""
    k = key("cah")
    r = support.curl(str(tmp_path), "-H", f"x-fault-key: {k}", "-H", "x-fault: close-after-headers",
                     "-H", "x-fault-times: 1", f"http://127.0.0.1:{env.listen}/{upstream}/cah")
    assert r.rc != 0, f"a cut response looked complete: {r}"
    assert env.fo.attempts(k)["attempts"] == 1


# ------------------------------------------------------------------------------ connect failures

def test_connect_failure_retried(env):
    before = counter(env.proxy, "retries", cluster="dead-retry", reason=REASON["connect_failure"])
    t0 = time.monotonic()
    status, _, _ = get(env, "/dead-retry/x", {})
    assert status == 503 and time.monotonic() - t0 < 3
    assert counter(env.proxy, "retries", cluster="dead-retry", reason=REASON["connect_failure"]) - before == 2


def test_connect_failure_not_listed(env):
    before = counter(env.proxy, "retries", cluster="dead-noretry")
    status, _, _ = get(env, "/dead-noretry/x", {})
    assert status == 503
    assert counter(env.proxy, "retries", cluster="dead-noretry") == before


def test_connect_failure_then_live_endpoint(env):
    """A cluster of a dead and a live endpoint: every request succeeds, the dead one costs retries."""
    k = key("mixed")
    before = counter(env.proxy, "retries", cluster="mixed", reason=REASON["connect_failure"])
    statuses = [get(env, "/mixed/x", {"x-fault-key": k})[0] for _ in range(10)]
    assert statuses == [200] * 10
    assert env.fo.attempts(k)["attempts"] == 10
    assert counter(env.proxy, "retries", cluster="mixed", reason=REASON["connect_failure"]) - before >= 1


# ------------------------------------------------------------------------------ gRPC

GRPC_CASES = [
    # fault, times, expected code (None: OK), attempts
    ("grpc-trailers-only:14", 1, None, 2),
    ("grpc-trailers-only:14", 2, None, 3),
    ("grpc-trailers-only:14", 5, grpc.StatusCode.UNAVAILABLE, 3),
    ("grpc-trailers-only:1", 1, None, 2),             # CANCELLED is listed too
    ("grpc-trailers:14", 1, None, 2),                 # HEADERS, no DATA, trailers: nothing went downstream yet
    ("grpc-trailers-after-data:14", 1, grpc.StatusCode.UNAVAILABLE, 1),  # a message went downstream
    ("grpc-trailers-only:13", 1, grpc.StatusCode.INTERNAL, 1),  # INTERNAL is not listed
    ("status:503", 1, None, 2),                       # an HTTP status of the policy, on a gRPC request
    ("rst:REFUSED_STREAM", 1, None, 2),
]


@pytest.mark.parametrize("fault,times,code,attempts", GRPC_CASES, ids=[f"{c[0]}x{c[1]}" for c in GRPC_CASES])
def test_grpc_retry(env, fault, times, code, attempts):
    k = key("grpc")
    md = [("x-fault-key", k), ("x-fault", fault), ("x-fault-times", str(times))]
    before = counter(env.proxy, "retries", cluster="fo-grpc")
    with grpc_client.channel(f"127.0.0.1:{env.listen}") as ch:
        e = grpc_client.Echo(ch)
        if code is None:
            assert e.unary(b"payload", timeout=10, metadata=md) == b"payload"
        else:
            with pytest.raises(grpc.RpcError) as ei:
                e.unary(b"payload", timeout=10, metadata=md)
            assert ei.value.code() == code, ei.value
    assert env.fo.attempts(k)["attempts"] == attempts
    assert counter(env.proxy, "retries", cluster="fo-grpc") - before == attempts - 1
    if fault.startswith("grpc-") and attempts > 1:
        assert counter(env.proxy, "retries", cluster="fo-grpc", reason=REASON["grpc_status"]) >= attempts - 1


def test_grpc_statuses_as_numbers(proxy_factory, tmp_path, env):
    listen, health, admin = free_port(), free_port(), free_port()
    text, _ = support.render_config(
        listen_port=listen, health_port=health, admin_port=admin, clusters=[
            {"name": "g", "protocol": "h2", "endpoints": [env.fo.target]}],
        routes=[{"name": "g", "cluster": "g", "retry": {"attempts": 1, "grpc_statuses": [14, 1]}}])
    path = tmp_path / "numbers.yaml"
    path.write_text(text)
    proxy_factory(config_path=str(path), listen_port=listen, health_port=health, admin_port=admin)
    k = key("grpcnum")
    with grpc_client.channel(f"127.0.0.1:{listen}") as ch:
        md = [("x-fault-key", k), ("x-fault", "grpc-trailers-only:14"), ("x-fault-times", "1")]
        assert grpc_client.Echo(ch).unary(b"n", timeout=10, metadata=md) == b"n"
    assert env.fo.attempts(k)["attempts"] == 2


# ------------------------------------------------------------------------------ request body replay

def _post_h1(env, workdir, path, hdrs, body):
    f = os.path.join(workdir, f"body.{time.monotonic_ns()}")
    with open(f, "wb") as fh:
        fh.write(body)
    args = []
    for k, v in hdrs:
        args += ["-H", f"{k}: {v}"]
    return support.curl(workdir, *args, "--data-binary", f"@{f}", f"http://127.0.0.1:{env.listen}{path}")


@pytest.mark.parametrize("downstream", ["h1", "h2"])
@pytest.mark.parametrize("upstream", ["h2", "h1"])
def test_body_replayed_byte_identical(env, tmp_path, downstream, upstream):
    body = os.urandom(65536)
    sha = hashlib.sha256(body).hexdigest()
    k = key("replay")
    hdrs = [("x-fault-key", k), ("x-fault", "status:503"), ("x-fault-times", "2"),
            ("content-type", "application/octet-stream")]
    if downstream == "h1":
        r = _post_h1(env, str(tmp_path), f"/{upstream}/replay", hdrs, body)
        assert r.status == 200, r
        rep = r.json()
    else:
        with H2Client("127.0.0.1", env.listen) as c:
            sid = c.request("POST", f"/{upstream}/replay", headers=hdrs, body=body)
            assert c.wait([sid], 15)
            resp = c.responses[sid]
        assert resp.status == 200, (resp.status, resp.reset_code)
        rep = json.loads(resp.data)
    assert rep["attempt"] == 3 and rep["body_len"] == 65536 and rep["body_sha256"] == sha
    a = env.fo.attempts(k)
    assert a["attempts"] == 3 and a["body_sha256s"] == [sha] * 3


@pytest.mark.parametrize("upstream", ["h2", "h1"])
def test_body_over_replay_limit_not_retried(env, tmp_path, upstream):
    body = os.urandom(65537)
    sha = hashlib.sha256(body).hexdigest()
    k = key("noreplay")
    cluster = f"fo-{upstream}"
    before = counter(env.proxy, "not_replayable", cluster=cluster)
    r = _post_h1(env, str(tmp_path), f"/{upstream}/noreplay",
                 [("x-fault-key", k), ("x-fault", "status:503"), ("x-fault-times", "1")], body)
    assert r.status == 503, r
    a = env.fo.attempts(k)
    assert a["attempts"] == 1 and a["body_sha256s"] == [sha], "the first try must still get the whole body"
    assert counter(env.proxy, "not_replayable", cluster=cluster) - before == 1


# ------------------------------------------------------------------------------ per-try timeout

def test_per_try_timeout_then_success(env):
    k = key("ptt")
    before = counter(env.proxy, "retries", cluster="fo-ptt", reason=REASON["per_try_timeout"])
    t0 = time.monotonic()
    status, hdrs, body = get(env, "/ptt/x", {"x-fault-key": k, "x-delay-ms": "3000", "x-delay-times": "1"})
    elapsed = time.monotonic() - t0
    assert status == 200 and json.loads(body)["attempt"] == 2, (status, body[:200])
    assert 0.18 <= elapsed < 1.0, f"took {elapsed:.3f}s: the first try (3 s) was waited for"
    assert env.fo.attempts(k)["attempts"] == 2
    assert counter(env.proxy, "retries", cluster="fo-ptt", reason=REASON["per_try_timeout"]) - before == 1


def test_per_try_timeout_every_try(env):
    k = key("ptt-all")
    t0 = time.monotonic()
    status, _, _ = get(env, "/ptt/x", {"x-fault-key": k, "x-delay-ms": "3000"})
    elapsed = time.monotonic() - t0
    assert status == 504
    assert 0.55 <= elapsed < 2.0, f"3 tries of 200 ms took {elapsed:.3f}s"
    assert env.fo.attempts(k)["attempts"] == 3


# ------------------------------------------------------------------------------ keep-alive race

def _warm(env):
    """One GET through cluster `ka`: afterwards the agent's pool holds a connection the origin has
    answered once and will drop unanswered on the next request."""
    status, _, _ = get(env, "/ka/warm", {"x-fault-key": key("warm")})
    assert status == 200


def test_keepalive_race_idempotent_resent(env, tmp_path):
    k = key("ka-get")
    before = counter(env.proxy, "refused_resends", cluster="ka")
    dropped = env.ka.stats()["h1_dropped"]
    for i in range(10):
        r = support.curl(str(tmp_path), "-H", f"x-fault-key: {k}", f"http://127.0.0.1:{env.listen}/ka/{i}")
        assert r.status == 200, (i, r)
    assert env.ka.attempts(k)["attempts"] == 10, "each GET must reach the origin exactly once"
    assert env.ka.stats()["h1_dropped"] > dropped, "the agent never reused a pooled connection"
    assert counter(env.proxy, "refused_resends", cluster="ka") - before > 0


def test_keepalive_race_post_not_resent(env):
    _warm(env)
    k = key("ka-post")
    before = counter(env.proxy, "refused_resends", cluster="ka")
    dropped = env.ka.stats()["h1_dropped"]
    status, _, _ = get(env, "/ka/post", {"x-fault-key": k, "content-type": "text/plain"}, method="POST",
                       body=b"not idempotent")
    assert env.ka.stats()["h1_dropped"] == dropped + 1, "the POST did not go out on the reused connection"
    assert status in (502, 503), status
    assert env.ka.attempts(k)["attempts"] == 0
    assert counter(env.proxy, "refused_resends", cluster="ka") == before


def test_keepalive_race_post_retried_by_policy(env):
    _warm(env)
    k = key("ka-post-retry")
    before = (counter(env.proxy, "retries", cluster="ka", reason=REASON["reset"])
              + counter(env.proxy, "retries", cluster="ka", reason=REASON["refused_stream"]))
    status, _, body = get(env, "/ka-retry/post", {"x-fault-key": k, "content-type": "text/plain"}, method="POST",
                          body=b"retry me")
    assert status == 200, (status, body[:300])
    assert env.ka.attempts(k)["attempts"] == 1
    after = (counter(env.proxy, "retries", cluster="ka", reason=REASON["reset"])
             + counter(env.proxy, "retries", cluster="ka", reason=REASON["refused_stream"]))
    assert after - before == 1


def test_idle_close_by_origin_is_harmless(env):
    """The origin closes an idle keep-alive connection after 50 ms: the next request must not fail."""
    k = key("idle")
    for _ in range(3):
        status, _, _ = get(env, "/h1/idle", {"x-fault-key": k, "x-fault": "h1-close-idle-ms:50"})
        assert status == 200
        time.sleep(0.2)
    assert env.fo.attempts(k)["attempts"] == 3


# ------------------------------------------------------------------------------ retry budget

def _h2load(args, timeout=60):
    r = subprocess.run(["h2load"] + args, capture_output=True, timeout=timeout)
    out = r.stdout.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert r.returncode == 0 and m and codes, out + r.stderr.decode()
    return {"total": int(m.group(1)), "started": int(m.group(2)), "done": int(m.group(3)),
            "2xx": int(codes.group(1)), "5xx": int(codes.group(4)), "out": out}


def test_retry_budget_caps_retries(env):
    """attempts 3 to an origin that always answers 503, at 50 requests/s for 4 s (h2load: 5 clients x
    10/s): without a budget the origin would see 4x the requests; the budget allows ~20 % more plus
    min_retry_count per second."""
    k = key("budget")
    before = counter(env.proxy, "budget_exhausted", cluster="budget")
    duration_s, n = 4, 200
    res = _h2load(["-n", str(n), "-c", "5", "-m", "10", "--rps", "10", "-H", f"x-fault-key: {k}",
                   "-H", "x-fault: status:503", f"http://127.0.0.1:{env.listen}/budget/x"])
    assert res["done"] == n and res["5xx"] == n, res["out"]
    attempts = env.fo.settled_attempts(k, quiet=0.3, timeout=5)["attempts"]
    slack = BUDGET["min_retry_count"] * (duration_s * 1000 // BUDGET["min_retry_interval_ms"] + 2) + 5
    assert n <= attempts <= 1.2 * n + slack, f"{attempts} upstream attempts for {n} requests"
    assert attempts > n, "the budget allows at least min_retry_count retries"
    assert counter(env.proxy, "budget_exhausted", cluster="budget") > before
