"""Request policy through the control plane, end to end on loopback: remora-control, a real remora-agent
in control-plane mode, remoractl and real origins.

What is checked here is the configuration path: route rules with retry, timeouts and filters
(header modifiers, a mirror, a redirect, a URL rewrite, a FaultInjection by ExtensionRef) and a
BackendTrafficPolicy are applied with `remoractl apply --wait`, and the agent's /config_dump shows the
fields they translate to; an invalid document is refused with FILE:LINE and the running config stays;
a document the agent cannot apply is NACKed with the reason and the previous snapshot stays; policy
kinds are listed and deleted like the others. Load balancing, circuit breakers, outlier detection,
endpoint weights, session persistence and RateLimitPolicy (on a Service and on a route, the most
specific winning) are checked the same way. How the data path behaves under these policies
(retries, faults, mirrors on the wire) is tested elsewhere (test_retry.py, test_request_policy.py)."""

import json
import os

import pytest

from control_support import control, control_factory, status_json, wait_until, write  # noqa: F401
from support import http_get
from test_mesh import mesh  # noqa: F401

pytestmark = pytest.mark.agent_only

POLICY = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{web}"]}}
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web-shadow}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{shadow}"]}}
---
apiVersion: remora.dev/v1
kind: FaultInjection
metadata: {{name: web-chaos}}
spec:
  delay: {{fixedDelay: 50ms, percent: 10}}
  abort: {{httpStatus: 503, percent: 0}}
---
apiVersion: remora.dev/v1
kind: BackendTrafficPolicy
metadata: {{name: web-backend}}
spec:
  targetRefs: [{{kind: Service, name: web}}]
  retryConstraint:
    budget: {{percent: 30, interval: 20s}}
    minRetryRate: {{count: 5, interval: 2s}}
  connectionPool: {{connectTimeout: 2s, idleTimeout: 30s, streamIdleTimeout: 1m}}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-api}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Env, value: prod}}]
        add: [{{name: x-via, value: remora}}]
        remove: [x-debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{remove: [server]}}
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: web-shadow}}, percent: 25}}
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}
    - type: ExtensionRef
      extensionRef: {{group: remora.dev, kind: FaultInjection, name: web-chaos}}
    backendRefs: [{{name: web}}]
    timeouts: {{request: 5s, backendRequest: 1s}}
    retry:
      attempts: 2
      backoff: 50ms
      codes: [502, 503]
      conditions: [connect-failure, refused-stream, reset]
  - matches: [{{path: {{type: RegularExpression, value: "/old/[a-z]+"}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{hostname: web.example, statusCode: 301, path: {{type: ReplaceFullPath, replaceFullPath: /new}}}}
  - matches: [{{headers: [{{type: RegularExpression, name: x-canary, value: "yes|true"}}]}}]
    backendRefs: [{{name: web-shadow}}]
"""


def _apply(cp, workdir, name, text):
    return cp.ctl("apply", "-f", write(workdir, name, text), "--wait", "--timeout", "10")


def _dump(agent):
    status, _, body = http_get("127.0.0.1", agent.admin, "/config_dump")
    assert status == 200, body
    return json.loads(body)


def _route(dump, prefix, nth=0):
    routes = [r for r in dump["listeners"][0]["routes"] if r["name"].startswith(prefix)]
    assert len(routes) > nth, [r["name"] for r in dump["listeners"][0]["routes"]]
    return routes[nth]


def _cluster(dump, name):
    return [c for c in dump["clusters"] if c["name"] == name][0]


def _applied(cp, workdir, mesh):
    web, shadow = mesh.origin(), mesh.origin()
    a = mesh(cp, "policy-agent")
    r = _apply(cp, workdir, "policy.yaml", POLICY.format(web=web, shadow=shadow))
    assert r.rc == 0 and "applied by 1 agent" in r.out, r
    return a, r


def test_policy_applied_and_in_config_dump(control, mesh, tmp_path):
    a, r = _applied(control, str(tmp_path), mesh)
    assert r.out.splitlines()[:5] == ["service/web created", "service/web-shadow created", "faultinjection/web-chaos created",
                                      "backendtrafficpolicy/web-backend created", "httproute/web-api created"], r
    version = status_json(control)["version"]
    dump = _dump(a)
    assert dump["source"] == "control plane" and dump["version"] == str(version)

    api = _route(dump, "web.default/web-api/")
    assert api["match"]["path"] == {"prefix": "/api"}, api["match"]
    assert api["timeout_ms"] == 5000 and api["per_try_timeout_ms"] == 1000
    assert api["retry"] == {"attempts": 2, "backoff_ms": 50, "max_backoff_ms": 500,
                            "on": ["connect-failure", "refused-stream", "reset"], "http_statuses": [502, 503],
                            "grpc_statuses": [], "max_replay_bytes": 65536}, api["retry"]
    assert api["request_headers"] == {"set": [{"name": "x-env", "value": "prod"}],
                                      "add": [{"name": "x-via", "value": "remora"}], "remove": ["x-debug"]}
    assert api["response_headers"] == {"set": [], "add": [], "remove": ["server"]}
    assert api["mirrors"] == [{"cluster": "web-shadow.default", "percent": 25}]
    assert api["url_rewrite"] == {"hostname": None, "path": {"type": "prefix", "value": "/v2"}}
    assert api["redirect"] is None
    assert api["fault"] == {"delay_ms": 50, "delay_percent": 10, "abort_http_status": 503, "abort_grpc_status": None,
                            "abort_percent": 0}, api["fault"]

    moved = _route(dump, "web.default/web-api/", 1)
    assert moved["match"]["path"] == {"regex": "/old/[a-z]+"}, moved["match"]
    assert moved["redirect"] == {"scheme": None, "hostname": "web.example", "port": None, "status_code": 301,
                                 "path": {"type": "full", "value": "/new"}}, moved["redirect"]
    assert moved["retry"] is None and moved["fault"] is None and moved["cluster"] is None

    canary = _route(dump, "web.default/web-api/", 2)
    assert canary["match"]["headers"] == [{"name": "x-canary", "value": "yes|true", "regex": True}], canary["match"]
    assert canary["backends"] == [{"cluster": "web-shadow.default", "weight": 1}], canary

    web = _cluster(dump, "web.default")
    assert web["connect_timeout_ms"] == 2000
    assert web["pool_idle_timeout_ms"] == 30000 and web["stream_idle_timeout_ms"] == 60000
    assert web["retry_budget"] == {"percent": 30, "interval_ms": 20000, "min_retry_count": 5, "min_retry_interval_ms": 2000}
    # a Service no policy targets keeps the agent's defaults
    shadow = _cluster(dump, "web-shadow.default")
    assert shadow["retry_budget"] == {"percent": 20, "interval_ms": 10000, "min_retry_count": 10, "min_retry_interval_ms": 1000}
    assert shadow["pool_idle_timeout_ms"] == 4000

    # the snapshot is in service, and the rule's filters act on the wire (the data path's own tests cover
    # each filter in depth: test_request_policy.py, test_retry.py)
    status, _, body = a.get("web", "/api/x")
    assert status == 200, (status, body)
    seen = json.loads(body)
    assert seen["target"] == "/v2/x", seen
    assert ["x-env", "prod"] in [[k.lower(), v] for k, v in seen["headers"]], seen["headers"]
    status, headers, _ = a.get("web", "/old/abc")
    assert status == 301 and headers.get("location") == "http://web.example/new", (status, headers)


def test_invalid_document_rejected_running_config_stays(control, mesh, tmp_path):
    a, _ = _applied(control, str(tmp_path), mesh)
    version = status_json(control)["version"]
    before = _dump(a)
    bad = POLICY.format(web=1, shadow=2).replace("attempts: 2", "attempts: -1").replace("percent: 25", "percent: 250")
    r = control.ctl("apply", "-f", write(str(tmp_path), "bad.yaml", bad))
    assert r.rc == 1, r
    lines = POLICY.splitlines()
    attempts_line = next(i for i, line in enumerate(lines, 1) if "attempts: 2" in line)
    percent_line = next(i for i, line in enumerate(lines, 1) if "percent: 25}" in line)
    # the first error of the document, with its file and line, in the Gateway API's terms
    assert f"bad.yaml:{percent_line}: httproute/web-api: spec.rules[0].filters[2].requestMirror.percent: must be from 0 to " \
           f"100, got 250" in r.err, (attempts_line, r)
    assert f"nothing was changed (version {version})" in r.err, r

    bad_policy = ("apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: hc}\nspec:\n"
                  "  targetRefs: [{name: web}]\n  healthCheck: {interval: 5s}\n")
    r = control.ctl("apply", "-f", write(str(tmp_path), "hc.yaml", bad_policy))
    assert r.rc == 1 and "hc.yaml:6: backendtrafficpolicy/hc: spec.healthCheck: needs exactly one of http" in r.err, r

    dangling = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: web-api}\nspec:\n  parentRefs: [{name: web}]\n"
                "  rules:\n  - backendRefs: [{name: web}]\n"
                "    filters: [{type: ExtensionRef, extensionRef: {name: no-such-fault}}]\n")
    r = control.ctl("apply", "-f", write(str(tmp_path), "dangling.yaml", dangling))
    assert r.rc == 1 and "dangling.yaml:8: httproute/web-api: spec.rules[0].filters[0].extensionRef: FaultInjection " \
                         "'no-such-fault' does not exist in namespace 'default'" in r.err, r

    assert status_json(control)["version"] == version
    after = _dump(a)
    assert after["version"] == before["version"] and after["generation"] == before["generation"]
    assert _route(after, "web.default/web-api/")["retry"]["attempts"] == 2


def test_agent_nack_keeps_previous_snapshot(control, mesh, tmp_path):
    a, _ = _applied(control, str(tmp_path), mesh)
    good = status_json(control)["version"]
    # valid for the control plane, but this agent mirrors to a Service's own endpoints only
    doc = ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: web-mirror-port}\nspec:\n"
           "  parentRefs: [{name: web}]\n  rules:\n  - backendRefs: [{name: web}]\n"
           "    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web-shadow, port: 8080}}}]\n")
    r = _apply(control, str(tmp_path), "port.yaml", doc)
    assert r.rc == 1 and "policy-agent" in r.err and "port is not supported by this agent" in r.err, r
    st = [x for x in status_json(control)["agents"] if x["node"] == "policy-agent"][0]
    assert st["appliedVersion"] == good and "HTTPRoute default/web-mirror-port" in st["nackReason"], st
    assert _dump(a)["version"] == str(good)


def test_get_and_delete_policy_kinds(control, mesh, tmp_path):
    a, _ = _applied(control, str(tmp_path), mesh)
    r = control.ctl("get", "faultinjections")
    assert r.rc == 0, r
    assert r.out.splitlines()[0].split() == ["NAMESPACE", "NAME", "DELAY", "ABORT"]
    assert r.out.splitlines()[1].split() == ["default", "web-chaos", "50ms", "(10%)", "503", "(0%)"]
    r = control.ctl("get", "btp", "web-backend", "-o", "json")
    assert r.rc == 0, r
    doc = json.loads(r.out)
    assert doc["kind"] == "BackendTrafficPolicy"
    assert doc["spec"]["retryConstraint"] == {"budget": {"percent": 30, "interval": "20s"},
                                              "minRetryRate": {"count": 5, "interval": "2s"}}
    r = control.ctl("get", "faultinjection", "web-chaos", "-o", "yaml")
    assert r.rc == 0 and "fixedDelay: \"50ms\"" in r.out, r
    assert control.ctl("apply", "-f", "-", stdin=r.out).out.splitlines()[-1].startswith("no change"), r

    # in use: refused, as for a Service
    r = control.ctl("delete", "faultinjection", "web-chaos")
    assert r.rc == 1 and "faultinjection/web-chaos is used by httproute/web-api" in r.err, r
    r = control.ctl("delete", "service", "web-shadow")
    assert r.rc == 1 and "used by httproute/web-api" in r.err, r
    # a BackendTrafficPolicy can go; the agent's cluster returns to its defaults
    r = control.ctl("delete", "backendtrafficpolicy", "web-backend")
    assert r.rc == 0 and r.out.startswith("backendtrafficpolicy/web-backend deleted"), r
    version = status_json(control)["version"]
    dump = wait_until(lambda: (lambda d: d if d["version"] == str(version) else None)(_dump(a)), timeout=10,
                      what="the agent serves the version without the policy")
    assert _cluster(dump, "web.default")["retry_budget"]["percent"] == 20
    assert _cluster(dump, "web.default")["connect_timeout_ms"] == 1000


def test_example_policy_served_by_an_agent(control, mesh, tmp_path):
    """examples/mesh-policy.yaml is valid for the control plane and applied by the agent (no NACK)."""
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
    a = mesh(control, "example-agent")
    assert control.ctl("apply", "-f", os.path.join(examples, "mesh.yaml"), "--wait", "--timeout", "10").rc == 0
    r = control.ctl("apply", "-f", os.path.join(examples, "mesh-policy.yaml"), "--wait", "--timeout", "10")
    assert r.rc == 0 and "applied by 1 agent" in r.out, r
    dump = _dump(a)
    assert _route(dump, "echo.default/echo-retry/")["retry"]["grpc_statuses"] == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    assert _cluster(dump, "web-v2.default")["connect_timeout_ms"] == 1000
    assert _cluster(dump, "web-v2.default")["load_balancer"]["type"] == "least_request"
    assert _cluster(dump, "web.default")["outlier_detection"]["consecutive_5xx"] == 5
    assert _cluster(dump, "web.default")["rate_limit"]["name"] == "default/web-limits"
    assert _route(dump, "echo.default/echo-retry/")["session_persistence"] == {"type": "header", "name": "x-user"}


BALANCING = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec:
  protocol: http1
  endpoints: ["127.0.0.1:{web}", {{address: "127.0.0.1:{web2}", weight: 3}}]
---
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web-shadow}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{shadow}"]}}
---
apiVersion: remora.dev/v1
kind: BackendTrafficPolicy
metadata: {{name: web-backend}}
spec:
  targetRefs: [{{kind: Service, name: web}}]
  loadBalancer:
    type: RingHash
    ringHash: {{minimumRingSize: 2048}}
  connectionPool: {{connectTimeout: 2s, maxConnections: 100, maxPendingRequests: 50, maxRequests: 200, maxRetries: 5}}
  outlierDetection: {{consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 10s}}
---
apiVersion: remora.dev/v1
kind: BackendTrafficPolicy
metadata: {{name: z-later}}
spec:
  targetRefs: [{{name: web}}, {{name: web-shadow}}]
  loadBalancer: {{type: LeastRequest}}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-api}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: web}}]
    sessionPersistence: {{type: Header, sessionName: X-User}}
  - matches: [{{path: {{type: PathPrefix, value: /ui}}}}]
    backendRefs: [{{name: web}}]
    sessionPersistence: {{type: Cookie, sessionName: sid}}
---
apiVersion: remora.dev/v1
kind: RateLimitPolicy
metadata: {{name: web-limits}}
spec:
  targetRefs: [{{kind: Service, name: web}}]
  total: {{requestsPerSecond: 1000, burst: 200}}
  perClient: {{requestsPerSecond: 20}}
  clientKey: {{type: Identity}}
  overrides:
  - {{requestsPerSecond: 200, clients: ["spiffe://remora.local/ns/default/sa/batch", "10.0.0.7"]}}
---
apiVersion: remora.dev/v1
kind: RateLimitPolicy
metadata: {{name: api-limits}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-api}}]
  perClient: {{requestsPerSecond: 5, burst: 10}}
  clientKey: {{type: Header, header: x-client-id}}
"""


def test_balancing_breakers_outlier_session_and_rate_limits(control, mesh, tmp_path):
    web, web2, shadow = mesh.origin(), mesh.origin(), mesh.origin()
    a = mesh(control, "balance-agent")
    r = _apply(control, str(tmp_path), "balancing.yaml", BALANCING.format(web=web, web2=web2, shadow=shadow))
    assert r.rc == 0 and "applied by 1 agent" in r.out, r
    assert "ratelimitpolicy/web-limits created" in r.out and "ratelimitpolicy/api-limits created" in r.out, r
    version = status_json(control)["version"]
    dump = _dump(a)
    assert dump["version"] == str(version)

    cl = _cluster(dump, "web.default")
    assert cl["endpoints"] == [f"127.0.0.1:{web}", {"address": f"127.0.0.1:{web2}", "weight": 3}], cl["endpoints"]
    # web-backend is first by name: its balancer wins over z-later's on web
    assert cl["load_balancer"] == {"type": "ring_hash", "ring_min_size": 2048}, cl["load_balancer"]
    assert cl["connect_timeout_ms"] == 2000
    assert cl["circuit_breakers"] == {"max_connections": 100, "max_pending_requests": 50, "max_requests": 200,
                                      "max_retries": 5}, cl["circuit_breakers"]
    assert cl["outlier_detection"] == {"consecutive_5xx": 3, "consecutive_gateway_errors": 5, "interval_ms": 5000,
                                       "base_ejection_ms": 10000, "max_ejection_ms": 300000,
                                       "max_ejection_percent": 50}, cl["outlier_detection"]
    assert cl["health_check"] is None
    assert cl["rate_limit"]["name"] == "default/web-limits", cl["rate_limit"]
    assert cl["rate_limit"]["total"] == {"requests_per_second": 1000, "burst": 200}, cl["rate_limit"]
    assert cl["rate_limit"]["per_client"] == {"requests_per_second": 20, "burst": 20}, cl["rate_limit"]
    assert cl["rate_limit"]["client_key"] == {"type": "identity", "header": None}, cl["rate_limit"]
    [o] = cl["rate_limit"]["overrides"]
    assert o["requests_per_second"] == 200 and o["clients"] == ["spiffe://remora.local/ns/default/sa/batch", "10.0.0.7"], o
    # z-later applies where it is the only one
    sh = _cluster(dump, "web-shadow.default")
    assert sh["load_balancer"]["type"] == "least_request" and sh["outlier_detection"] is None and sh["rate_limit"] is None, sh

    api = _route(dump, "web.default/web-api/")
    assert api["session_persistence"] == {"type": "header", "name": "x-user"}, api["session_persistence"]
    # the route's own policy: the most specific attachment wins for the requests it matches
    assert api["rate_limit"]["name"] == "default/api-limits", api["rate_limit"]
    assert api["rate_limit"]["client_key"] == {"type": "header", "header": "x-client-id"}, api["rate_limit"]
    assert api["rate_limit"]["per_client"] == {"requests_per_second": 5, "burst": 10}
    ui = _route(dump, "web.default/web-api/", 1)
    assert ui["session_persistence"] == {"type": "cookie", "name": "sid"}, ui["session_persistence"]
    assert ui["rate_limit"]["name"] == "default/api-limits"

    # the snapshot is in service
    status, _, body = a.get("web", "/api/x")
    assert status == 200, (status, body)

    # which policy is in force where
    r = control.ctl("get", "btp")
    assert r.rc == 0, r
    rows = {line.split()[1]: line for line in r.out.splitlines()[1:]}
    assert "web (overridden by web-backend), web-shadow" in rows["z-later"], r.out
    assert "overridden" not in rows["web-backend"] and "RingHash" in rows["web-backend"], r.out
    r = control.ctl("get", "ratelimitpolicies")
    assert r.rc == 0 and r.out.splitlines()[0].split() == ["NAMESPACE", "NAME", "TARGETS", "TOTAL", "PER", "CLIENT"], r
    rows = {line.split()[1]: line for line in r.out.splitlines()[1:]}
    assert "httproute/web-api" in rows["api-limits"] and "5/s burst 10 by Header x-client-id" in rows["api-limits"], r.out
    assert "1000/s burst 200" in rows["web-limits"] and "1 override" in rows["web-limits"], r.out
    r = control.ctl("get", "services")
    assert r.rc == 0 and r.out.splitlines()[0].split()[-1] == "POLICIES", r
    rows = {line.split()[1]: line for line in r.out.splitlines()[1:]}
    assert rows["web"].split()[-2:] == ["backendtrafficpolicy/web-backend,", "ratelimitpolicy/web-limits"], r.out
    assert rows["web-shadow"].split()[-1] == "backendtrafficpolicy/z-later", r.out
    r = control.ctl("get", "httproute")
    assert r.rc == 0 and r.out.splitlines()[1].split()[-1] == "ratelimitpolicy/api-limits", r
    r = control.ctl("get", "rlp", "web-limits", "-o", "yaml")
    assert r.rc == 0 and "requestsPerSecond: 1000" in r.out, r
    assert control.ctl("apply", "-f", "-", stdin=r.out).out.splitlines()[-1].startswith("no change"), r
    r = control.ctl("get", "svc", "web", "-o", "yaml")
    assert r.rc == 0 and "weight: 3" in r.out, r
    assert control.ctl("apply", "-f", "-", stdin=r.out).out.splitlines()[-1].startswith("no change"), r
    r = control.ctl("get", "httproute", "web-api", "-o", "yaml")
    assert r.rc == 0 and "sessionPersistence" in r.out and "x-user" in r.out, r
    assert control.ctl("apply", "-f", "-", stdin=r.out).out.splitlines()[-1].startswith("no change"), r

    # a route a policy targets cannot be deleted; the policy can, and the route falls back to its Service's
    r = control.ctl("delete", "httproute", "web-api")
    assert r.rc == 1 and "httproute/web-api is used by ratelimitpolicy/api-limits" in r.err, r
    r = control.ctl("delete", "service", "web-shadow")
    assert r.rc == 1 and "backendtrafficpolicy/z-later" in r.err, r
    r = control.ctl("delete", "ratelimitpolicy", "api-limits")
    assert r.rc == 0, r
    version = status_json(control)["version"]
    dump = wait_until(lambda: (lambda d: d if d["version"] == str(version) else None)(_dump(a)), timeout=10,
                      what="the agent serves the version without the route's policy")
    assert _route(dump, "web.default/web-api/")["rate_limit"] is None
    assert _cluster(dump, "web.default")["rate_limit"]["name"] == "default/web-limits"


def test_rate_limit_policy_errors(control, mesh, tmp_path):
    web = mesh.origin()
    a = mesh(control, "rl-agent")
    base = ("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: web}\n"
            f"spec: {{protocol: http1, endpoints: [\"127.0.0.1:{web}\"]}}\n")
    assert _apply(control, str(tmp_path), "base.yaml", base).rc == 0
    version = status_json(control)["version"]
    head = "apiVersion: remora.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: l}\nspec:\n"
    cases = [
        ("  targetRefs: [{name: web}]\n  perClient: {requestsPerSecond: 0}\n", 6,
         "ratelimitpolicy/l: spec.perClient.requestsPerSecond: must be from 1 to 10000000, got 0"),
        ("  targetRefs: [{name: web}]\n", 5, "ratelimitpolicy/l: spec: needs at least one of 'total' and 'perClient'"),
        ("  targetRefs: [{name: web}]\n  perClient: {requestsPerSecond: 5}\n  clientKey: {type: Header}\n", 7,
         "spec.clientKey.header: is required with type Header"),
        ("  targetRefs: [{name: web}]\n  total: {requestsPerSecond: 5}\n  overrides: [{requestsPerSecond: 9, clients: [a]}]\n",
         7, "spec.overrides: override per-client limits: they need 'perClient'"),
        ("  targetRefs: [{kind: HTTPRoute, name: nope}]\n  total: {requestsPerSecond: 5}\n", 5,
         "ratelimitpolicy/l: spec.targetRefs[0]: HTTPRoute 'nope' does not exist in namespace 'default'"),
        ("  targetRefs: [{name: web}]\n  total: {requestsPerSecond: 5, burst: -1}\n", 6, "spec.total.burst: must not be negative"),
    ]
    for i, (spec, line, text) in enumerate(cases):
        r = control.ctl("apply", "-f", write(str(tmp_path), f"rl{i}.yaml", head + spec))
        assert r.rc == 1 and f"rl{i}.yaml:{line}: " in r.err and text in r.err, (i, r)
    assert status_json(control)["version"] == version
    assert _dump(a)["version"] == str(version)
