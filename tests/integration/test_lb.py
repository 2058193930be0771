"""Load balancing (cluster `load_balancer`, endpoint weights, route `session_persistence`) against
three or four tests/tools/fault_origin.py instances. Which endpoint served a request is read from the
origins themselves: their /__stats request counts, or /__attempts of a per-request fault key.

- Peak EWMA vs round robin, side by side in one test: three endpoints, one 50 ms slower. Peak EWMA
  sends it under 10 % of the requests and the p99 stays close to the fast endpoints'; round robin
  sends it a third and its p99 is the slow endpoint's.
- Ring hash by a session header: the same key reaches the same endpoint (>= 99 %); removing one of
  four endpoints (a reload) moves about a quarter of the keys, not all.
- sessionPersistence on a round-robin cluster: consistent by cookie, requests without it rotate."""

import concurrent.futures
import http.client
import json
import os
import re
import signal
import time

import pytest

import fault_origin
import support
from procutil import free_port

pytestmark = pytest.mark.agent_only("load balancers are remora-agent's bootstrap schema")

SLOW_MS = 50


class Env:
    pass


def _write_config(e, ring_endpoints):
    fast = [e.fast1.target, e.fast2.target]
    three = fast + [e.slow.target]
    clusters = [
        {"name": "ewma", "protocol": "h2", "endpoints": three, "load_balancer": {"type": "peak_ewma"}},
        {"name": "rr", "protocol": "h2", "endpoints": three, "load_balancer": {"type": "round_robin"}},
        {"name": "fast", "protocol": "h2", "endpoints": fast, "load_balancer": {"type": "round_robin"}},
        {"name": "ring", "protocol": "h2", "endpoints": ring_endpoints,
         "load_balancer": {"type": "ring_hash", "ring_min_size": 1024}},
        {"name": "sticky", "protocol": "h2", "endpoints": [o.target for o in e.ring_origins],
         "load_balancer": {"type": "round_robin"}},
    ]
    routes = [
        {"name": "ewma", "prefix": "/ewma/", "cluster": "ewma", "timeout_ms": 10000},
        {"name": "rr", "prefix": "/rr/", "cluster": "rr", "timeout_ms": 10000},
        {"name": "fast", "prefix": "/fast/", "cluster": "fast", "timeout_ms": 10000},
        {"name": "ring", "prefix": "/ring/", "cluster": "ring", "timeout_ms": 10000,
         "session_persistence": {"type": "header", "name": "x-user"}},
        {"name": "sticky", "prefix": "/sticky/", "cluster": "sticky", "timeout_ms": 10000,
         "session_persistence": {"type": "cookie", "name": "sid"}},
    ]
    text, _ = support.render_config(listen_port=e.listen, health_port=e.health, admin_port=e.admin, routes=routes,
                                    clusters=clusters, workers=2)
    # the ring's endpoints in the object form, with weights
    objs = ", ".join(f'{{address: "{a}", weight: 1}}' for a in ring_endpoints)
    text = re.sub(r'(- name: ring\n    protocol: h2\n    endpoints: )\[[^\]]*\]', lambda m: m.group(1) + f"[{objs}]", text)
    assert "address:" in text
    with open(e.path, "w") as f:
        f.write(text)


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_proxy_factory):
    d = tmp_path_factory.mktemp("lb")
    e = Env()
    e.fast1 = fault_origin.start(d, name="fo-fast1")
    e.fast2 = fault_origin.start(d, name="fo-fast2")
    e.slow = fault_origin.start(d, "--default-delay-ms", str(SLOW_MS), name="fo-slow")
    e.ring_origins = [fault_origin.start(d, name=f"fo-ring{i}") for i in range(4)]
    e.listen, e.health, e.admin = free_port(), free_port(), free_port()
    e.path = os.path.join(str(d), "lb.yaml")
    _write_config(e, [o.target for o in e.ring_origins])
    e.proxy = module_proxy_factory(config_path=e.path, listen_port=e.listen, health_port=e.health,
                                   admin_port=e.admin)
    yield e
    for o in [e.fast1, e.fast2, e.slow] + e.ring_origins:
        o.proc.stop()


def _requests(env, path, n, concurrency, headers_of=lambda i: {}):
    """n GETs over `concurrency` keep-alive HTTP/1.1 connections; returns the latencies in ms (all 200)."""
    per = n // concurrency

    def worker(w):
        c = http.client.HTTPConnection("127.0.0.1", env.listen, timeout=10)
        lat = []
        try:
            for k in range(per):
                t0 = time.perf_counter()
                c.request("GET", path, headers=headers_of(w * per + k))
                r = c.getresponse()
                r.read()
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status == 200, r.status
        finally:
            c.close()
        return lat

    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        out = []
        for lat in ex.map(worker, range(concurrency)):
            out += lat
    return out


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def _served(origins):
    return [o.stats()["requests"] for o in origins]


def test_peak_ewma_avoids_slow_endpoint_round_robin_does_not(env):
    origins = [env.fast1, env.fast2, env.slow]
    n, conc = 1200, 4
    # the fast endpoints alone: the reference p99
    fast_lat = _requests(env, "/fast/x", 600, conc)
    results = {}
    for name in ("ewma", "rr"):
        before = _served(origins)
        lat = _requests(env, f"/{name}/x", n, conc)
        after = _served(origins)
        served = [a - b for a, b in zip(after, before)]
        assert sum(served) == n, served
        results[name] = {"slow_share": served[2] / n, "served": served, "p50": _pct(lat, 50), "p99": _pct(lat, 99)}
    fast = {"p50": _pct(fast_lat, 50), "p99": _pct(fast_lat, 99)}
    print(f"\nfast endpoints only: p50 {fast['p50']:.1f} ms p99 {fast['p99']:.1f} ms")
    for name, r in results.items():
        print(f"{name}: served (fast1, fast2, slow) = {r['served']}, slow share {100 * r['slow_share']:.1f} %, "
              f"p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms")
    ewma, rr = results["ewma"], results["rr"]
    assert ewma["slow_share"] < 0.10
    assert ewma["p99"] < fast["p99"] + 15 and ewma["p99"] < SLOW_MS, (ewma, fast)
    # round robin, side by side: a third to the slow endpoint, and its p99 is the slow one's
    assert 0.30 <= rr["slow_share"] <= 0.37
    assert rr["p99"] >= SLOW_MS


def _ring_owner(env, prefix, users):
    """For each user: {origin index: requests} from the origins' per-key attempt counts."""
    out = []
    for u in users:
        out.append({i: o.attempts(f"{prefix}-{u}")["attempts"] for i, o in enumerate(env.ring_origins)})
    return [{i: c for i, c in d.items() if c} for d in out]


def test_ring_hash_session_header_consistent_and_stable(env):
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    users = [f"user-{k}" for k in range(400)]
    per_user = 3
    _requests(env, "/ring/x", len(users) * per_user, 4,
              lambda i: {"x-user": users[i % len(users)], "x-fault-key": f"a{tag}-{users[i % len(users)]}"})
    owners = _ring_owner(env, f"a{tag}", users)
    same = sum(max(d.values()) for d in owners)
    total = sum(sum(d.values()) for d in owners)
    assert total == len(users) * per_user
    print(f"\nring: {same}/{total} requests reached their key's endpoint ({100 * same / total:.2f} %)")
    assert same / total >= 0.99
    first = [max(d, key=d.get) for d in owners]
    spread = [first.count(i) for i in range(4)]
    print(f"ring: keys per endpoint {spread}")
    assert min(spread) >= len(users) // 10, spread

    # one of the four endpoints leaves (a reload): only its keys move
    gen = json.loads(env.proxy.admin("/config_dump")[2])["generation"]
    removed = 2
    _write_config(env, [o.target for i, o in enumerate(env.ring_origins) if i != removed])
    env.proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while json.loads(env.proxy.admin("/config_dump")[2])["generation"] == gen:
        assert time.monotonic() < deadline, "the reload was not applied"
        time.sleep(0.05)
    try:
        _requests(env, "/ring/x", len(users) * 2, 4,
                  lambda i: {"x-user": users[i % len(users)], "x-fault-key": f"b{tag}-{users[i % len(users)]}"})
        owners2 = _ring_owner(env, f"b{tag}", users)
        second = [max(d, key=d.get) for d in owners2]
        moved = sum(1 for a, b in zip(first, second) if a != b)
        moved_other = sum(1 for a, b in zip(first, second) if a != b and a != removed)
        print(f"ring: removing 1 of 4 endpoints moved {moved}/{len(users)} keys ({100 * moved / len(users):.1f} %), "
              f"{moved_other} of them not from the removed endpoint; the removed one had {spread[removed]}")
        assert all(b != removed for b in second)
        assert moved == spread[removed] + moved_other
        assert 0.12 <= moved / len(users) <= 0.38, moved  # the removed endpoint's share of the ring
        assert moved_other <= len(users) * 0.02
    finally:
        _write_config(env, [o.target for o in env.ring_origins])
        env.proxy.proc.send_signal(signal.SIGHUP)


def test_session_cookie_on_round_robin_cluster(env):
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    users = [f"s{k}" for k in range(40)]
    _requests(env, "/sticky/x", len(users) * 4, 4,
              lambda i: {"cookie": f"a=1; sid={users[i % len(users)]}; z=2",
                         "x-fault-key": f"c{tag}-{users[i % len(users)]}"})
    owners = []
    for u in users:
        d = {i: o.attempts(f"c{tag}-{u}")["attempts"] for i, o in enumerate(env.ring_origins)}
        owners.append({i: c for i, c in d.items() if c})
    assert all(len(d) == 1 for d in owners), owners
    # without the cookie: the cluster's balancer (round robin) spreads one key over all four
    k = f"nocookie{tag}"
    _requests(env, "/sticky/x", 8, 1, lambda i: {"x-fault-key": k})
    assert all(o.attempts(k)["attempts"] == 2 for o in env.ring_origins)
