"""Authorization (AuthorizationPolicy; the bootstrap's per-route and per-cluster `authorization`) with
real clients: http.client for HTTP/1.1 and python3-grpcio for gRPC, through a real remora-agent to real
origins.

Through the bootstrap file: allow and deny by path, method and gRPC method, DENY before ALLOW, AUDIT
lets requests through and counts what it would deny, a route without policy allows everything, a
Service (cluster) target is enforced by the agent that routes to it; denied requests never reach the
origin and answer 403 or a trailers-only PERMISSION_DENIED; decisions are counted per policy in
remora_authz_decisions_total and the local reply's cause and flag show them. Bad bootstrap documents
are refused with FILE:LINE.

Through the control plane: AuthorizationPolicy documents applied with `remoractl apply --wait` to an
agent in control-plane mode, listed by `remoractl get authorizationpolicies`, printed back with
`-o yaml` unchanged, deleted; bad documents refused with FILE:LINE.

Identity and namespace rules need the caller's mTLS identity, which the agent does not have until
mesh mTLS exists: they are tested against a set peer identity by tests/unit/test_filters_authz.c."""

import http.client
import json
import os

import grpc
import pytest

import grpc_client
import support
from control_support import control, control_factory, status_json, wait_until, write  # noqa: F401
from procutil import free_port
from support import http_get
from test_mesh import mesh  # noqa: F401

pytestmark = pytest.mark.agent_only("authorization is remora-agent's")

DECISIONS = "remora_authz_decisions_total"     # {policy, decision=allow|deny|audit_deny}
LOCAL = "remora_downstream_local_replies_total"  # {listener, cause}


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_proxy_factory, h1_origin, grpc_server):
    d = tmp_path_factory.mktemp("authz")
    e = Env()
    e.h1, e.grpc = h1_origin, grpc_server
    e.listen, health, admin = free_port(), free_port(), free_port()
    clusters = [
        {"name": "web", "protocol": "http1", "endpoints": [h1_origin.target]},
        {"name": "grpc", "protocol": "h2", "endpoints": [grpc_server.target]},
        # a Service target: enforced by this agent, which routes to it (explicit listener)
        {"name": "svc", "protocol": "http1", "endpoints": [h1_origin.target],
         "authorization": [{"name": "svc-deny", "action": "deny", "rules": [{"to": [{"paths": ["/svc/secret"]}]}]}]},
    ]
    routes = [
        {"name": "api", "prefix": "/api/", "cluster": "web", "authorization": [
            {"name": "api-deny", "action": "deny", "rules": [{"to": [{"paths": ["/api/admin/*"]}]}]},
            {"name": "api-allow", "action": "allow", "rules": [
                {"to": [{"methods": ["GET"], "paths": ["/api/*"]}, {"methods": ["POST"], "paths": ["/api/admin/*"]}]}]},
        ]},
        {"name": "audit", "prefix": "/audit/", "cluster": "web", "authorization": [
            {"name": "audit-get", "action": "audit", "rules": [{"to": [{"methods": ["GET"]}]}]}]},
        {"name": "grpc", "prefix": "/echo.", "cluster": "grpc", "authorization": [
            {"name": "grpc-deny", "action": "deny", "rules": [{"to": [{"grpc_methods": ["echo.Echo/Bidi"]}]}]},
            {"name": "grpc-allow", "action": "allow", "rules": [
                {"to": [{"grpc_methods": ["echo.Echo/Unary", "echo.Control/*", "echo.Echo/Bidi"]}]}]},
        ]},
        {"name": "svc", "prefix": "/svc/", "cluster": "svc"},
        {"name": "open", "cluster": "web"},
    ]
    text, _ = support.render_config(listen_port=e.listen, health_port=health, admin_port=admin, routes=routes,
                                    clusters=clusters, workers=2)
    e.access_log = os.path.join(str(d), "access.log")
    text += f"telemetry:\n  access_log: {{path: {json.dumps(e.access_log)}}}\n"
    e.path = os.path.join(str(d), "authz.yaml")
    with open(e.path, "w") as f:
        f.write(text)
    e.proxy = module_proxy_factory(config_path=e.path, listen_port=e.listen, health_port=health, admin_port=admin)
    return e


def metric(env, name, **labels):
    return support.metric(env.proxy.metrics(), name, **labels) or 0.0


def origin_requests(env):
    return json.loads(http_get("127.0.0.1", env.h1.port, "/__stats")[2])["requests"]


def request(env, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", env.listen, timeout=5)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_allow_and_deny_by_path_and_method(env):
    denied_before = metric(env, LOCAL, cause="denied")
    origin_before = origin_requests(env)

    assert request(env, "GET", "/api/items?page=2")[0] == 200        # allowed: GET /api/*
    status, body = request(env, "POST", "/api/items", b"x")            # no ALLOW rule for POST /api/items
    assert status == 403 and b"denied" in body, (status, body)
    assert request(env, "DELETE", "/api/items")[0] == 403
    # DENY before ALLOW: both are allowed by api-allow (GET /api/*, POST /api/admin/*) but denied first
    assert request(env, "GET", "/api/admin/users")[0] == 403
    assert request(env, "POST", "/api/admin/users", b"x")[0] == 403
    # no policy on the route: whatever arrives is allowed
    assert request(env, "DELETE", "/elsewhere")[0] == 200
    assert request(env, "POST", "/api", b"x")[0] == 200  # "/api" is not under the /api/ route

    # only the allowed requests reached the origin
    assert origin_requests(env) - origin_before == 3
    assert metric(env, LOCAL, cause="denied") - denied_before == 4


def test_counters_per_policy_and_decision(env):
    def snap():
        return {(p, d): metric(env, DECISIONS, policy=p, decision=d)
                for p in ("api-allow", "api-deny") for d in ("allow", "deny", "audit_deny")}

    a = snap()
    assert request(env, "GET", "/api/a")[0] == 200
    assert request(env, "GET", "/api/b")[0] == 200
    assert request(env, "PUT", "/api/c")[0] == 403
    assert request(env, "GET", "/api/admin/x")[0] == 403
    b = snap()
    delta = {k: b[k] - a[k] for k in a}
    assert delta == {("api-allow", "allow"): 2, ("api-allow", "deny"): 1, ("api-allow", "audit_deny"): 0,
                     ("api-deny", "allow"): 0, ("api-deny", "deny"): 1, ("api-deny", "audit_deny"): 0}, delta


def test_audit_lets_through_counts_and_logs(env):
    allow0 = metric(env, DECISIONS, policy="audit-get", decision="allow")
    audit0 = metric(env, DECISIONS, policy="audit-get", decision="audit_deny")
    origin_before = origin_requests(env)
    assert request(env, "GET", "/audit/x")[0] == 200
    assert request(env, "POST", "/audit/y", b"z")[0] == 200  # AUDIT would deny it: it goes through
    assert request(env, "PUT", "/audit/z", b"z")[0] == 200
    assert origin_requests(env) - origin_before == 3
    assert metric(env, DECISIONS, policy="audit-get", decision="allow") - allow0 == 1
    assert metric(env, DECISIONS, policy="audit-get", decision="audit_deny") - audit0 == 2
    wait_until(lambda: "policy 'audit-get' would deny POST /audit/y" in env.proxy.log(), timeout=5,
               what="the audit log line")


def test_service_target_enforced_by_routing_agent(env):
    d0 = metric(env, DECISIONS, policy="svc-deny", decision="deny")
    assert request(env, "GET", "/svc/ok")[0] == 200
    assert request(env, "GET", "/svc/secret")[0] == 403
    assert request(env, "GET", "/svc/secret?x=1")[0] == 403  # the query is not part of the path
    assert request(env, "GET", "/svc/secret/more")[0] == 200  # exact, not a prefix
    assert metric(env, DECISIONS, policy="svc-deny", decision="deny") - d0 == 2


def test_grpc_methods(env):
    ch = grpc_client.channel(env.proxy.addr, options=[("grpc.enable_retries", 0)])
    try:
        echo = grpc_client.Echo(ch)
        assert echo.unary(b"hello", timeout=5) == b"hello"            # allowed method
        assert isinstance(echo.stats(), dict)                          # allowed by "echo.Control/*"
        with pytest.raises(grpc.RpcError) as ei:                        # not in grpc-allow
            list(echo.server_stream(b"x", timeout=5))
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED, ei.value
        with pytest.raises(grpc.RpcError) as ei:                        # denied first, though allowed too
            list(echo.bidi(iter([b"a"]), timeout=5))
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED, ei.value
    finally:
        ch.close()
    assert metric(env, DECISIONS, policy="grpc-deny", decision="deny") >= 1
    assert metric(env, DECISIONS, policy="grpc-allow", decision="deny") >= 1
    assert metric(env, DECISIONS, policy="grpc-allow", decision="allow") >= 2


def test_grpc_denied_is_trailers_only(env):
    """The raw answer: HTTP 200, grpc-status 7 in the head, no body (h2 client, prior knowledge)."""
    from h2client import H2Client
    c = H2Client("127.0.0.1", env.listen)
    try:
        sid = c.request("POST", "/echo.Echo/ClientStream", headers=[("content-type", "application/grpc"), ("te", "trailers")],
                        body=b"\x00\x00\x00\x00\x00")
        c.wait([sid], timeout=10)
        r = c.responses[sid]
    finally:
        c.close()
    assert r.status == 200 and r.header("grpc-status") == "7", r.headers
    assert r.headers_ended and not r.data and not r.trailers, (r.headers_ended, r.data, r.trailers)


def test_access_log_shows_the_denial(env):
    """The local reply's response flag (UAEX) and status in the access log, for HTTP and gRPC."""
    assert request(env, "PATCH", "/api/logged")[0] == 403
    ch = grpc_client.channel(env.proxy.addr, options=[("grpc.enable_retries", 0)])
    try:
        with pytest.raises(grpc.RpcError):
            list(grpc_client.Echo(ch).server_stream(b"x", timeout=5))
    finally:
        ch.close()

    def lines():
        with open(env.access_log) as f:
            return [json.loads(x) for x in f if x.strip()]

    def found():
        ls = lines()
        h = [x for x in ls if x["path"] == "/api/logged"]
        g = [x for x in ls if x["path"] == "/echo.Echo/ServerStream"]
        return (h, g) if h and g else None

    h, g = wait_until(found, timeout=5, what="the access log lines")
    assert h[-1]["status"] == 403 and h[-1]["response_flag"] == "UAEX" and h[-1]["attempts"] == 0, h[-1]
    assert g[-1]["grpc_status"] == 7 and g[-1]["response_flag"] == "UAEX" and g[-1]["attempts"] == 0, g[-1]


def test_bad_bootstrap_rejected_with_line(env, tmp_path):
    bad = open(env.path).read().replace('"paths": ["/svc/secret"]', '"paths": ["svc/secret"]')
    assert bad != open(env.path).read()
    path = write(str(tmp_path), "bad.yaml", bad)
    line = [i + 1 for i, l in enumerate(bad.splitlines()) if "svc/secret" in l][0]
    import subprocess
    r = subprocess.run([support.AGENT, "--config", path, "--check-config"], capture_output=True, text=True, timeout=20)
    msg = r.stderr + r.stdout
    assert r.returncode != 0, msg
    assert f"bad.yaml:{line}:" in msg and "'svc/secret' is not a path" in msg, msg


# ---------------------------------------------------------------------------------- control plane

POLICY = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{web}"]}}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-api}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1/}}}}]
    backendRefs: [{{name: web}}]
---
apiVersion: remora.dev/v1
kind: AuthorizationPolicy
metadata: {{name: api-readers}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: web-api}}]
  action: ALLOW
  rules:
  - to: [{{methods: [GET], paths: ["/v1/*"]}}]
  - from: [{{identities: ["spiffe://remora.local/ns/default/sa/web"]}}, {{namespaces: [ops]}}]
    to: [{{methods: [POST]}}]
---
apiVersion: remora.dev/v1
kind: AuthorizationPolicy
metadata: {{name: no-secrets}}
spec:
  targetRefs: [{{name: web}}]
  action: DENY
  rules:
  - to: [{{paths: ["/v1/secret"]}}]
---
apiVersion: remora.dev/v1
kind: AuthorizationPolicy
metadata: {{name: watch}}
spec:
  targetRefs: [{{name: web}}]
  action: AUDIT
  rules:
  - to: [{{methods: [GET]}}]
"""


def _apply(cp, workdir, name, text):
    return cp.ctl("apply", "-f", write(workdir, name, text), "--wait", "--timeout", "10")


def _metric(agent, name, **labels):
    status, _, body = http_get("127.0.0.1", agent.health, "/metrics")
    assert status == 200
    return support.metric(support.parse_prometheus(body.decode()), name, **labels) or 0.0


def test_control_plane_policies(control, mesh, tmp_path):
    web = mesh.origin()
    a = mesh(control, "authz-agent")
    r = _apply(control, str(tmp_path), "authz.yaml", POLICY.format(web=web))
    assert r.rc == 0 and "applied by 1 agent" in r.out, r
    for n in ("api-readers", "no-secrets", "watch"):
        assert f"authorizationpolicy/{n} created" in r.out, r

    dump = json.loads(http_get("127.0.0.1", a.admin, "/config_dump")[2])
    [route] = [x for x in dump["listeners"][0]["routes"] if x["name"].startswith("web.default/web-api/")]
    assert [p["name"] for p in route["authorization"]] == ["default/api-readers"], route["authorization"]
    assert route["authorization"][0]["action"] == "allow"
    [cl] = [c for c in dump["clusters"] if c["name"] == "web.default"]
    assert [(p["name"], p["action"]) for p in cl["authorization"]] == [("default/no-secrets", "deny"),
                                                                        ("default/watch", "audit")], cl["authorization"]

    assert a.get("web", "/v1/items")[0] == 200
    status, _, body = http_get("127.0.0.1", a.port, "/v1/items", method="DELETE", headers={"Host": "web"})
    assert status == 403, (status, body)
    # the POST rule needs an identity: a plaintext caller has none
    status, _, _ = http_get("127.0.0.1", a.port, "/v1/items", method="POST", headers={"Host": "web"}, body=b"x")
    assert status == 403
    # the Service's DENY applies even where the route allows
    assert a.get("web", "/v1/secret")[0] == 403
    # the route's policies run first: what they refuse never reaches the Service's (the audit saw one GET)
    assert _metric(a, DECISIONS, policy="default/watch", decision="allow") == 1
    assert _metric(a, DECISIONS, policy="default/watch", decision="audit_deny") == 0
    assert _metric(a, DECISIONS, policy="default/api-readers", decision="allow") == 2
    assert _metric(a, DECISIONS, policy="default/api-readers", decision="deny") == 2
    assert _metric(a, DECISIONS, policy="default/no-secrets", decision="deny") == 1

    r = control.ctl("get", "authorizationpolicies")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TARGETS", "ACTION", "RULES"], r.out
    assert any(l.split() == ["default", "api-readers", "httproute/web-api", "ALLOW", "2"] for l in lines), r.out
    assert any(l.split() == ["default", "no-secrets", "web", "DENY", "1"] for l in lines), r.out
    r = control.ctl("get", "authz", "api-readers", "-o", "yaml")
    assert r.rc == 0 and "grpcMethods" not in r.out and "identities:" in r.out, r
    assert control.ctl("apply", "-f", "-", stdin=r.out).out.splitlines()[-1].startswith("no change"), r

    # deleting the ALLOW policy: no ALLOW policy left on the route, so anything goes (but the Service's DENY)
    r = control.ctl("delete", "authorizationpolicy", "api-readers")
    assert r.rc == 0, r
    version = status_json(control)["version"]
    wait_until(lambda: json.loads(http_get("127.0.0.1", a.admin, "/config_dump")[2])["version"] == str(version),
               timeout=10, what="the agent on the new version")
    status, _, _ = http_get("127.0.0.1", a.port, "/v1/items", method="DELETE", headers={"Host": "web"})
    assert status == 200
    # the Service's AUDIT counted what it would deny, and let it through
    assert _metric(a, DECISIONS, policy="default/watch", decision="audit_deny") == 1
    assert a.get("web", "/v1/secret")[0] == 403


def test_control_plane_errors(control, mesh, tmp_path):
    web = mesh.origin()
    mesh(control, "authz-err-agent")
    base = ("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: web}\n"
            f"spec: {{protocol: http1, endpoints: [\"127.0.0.1:{web}\"]}}\n")
    assert _apply(control, str(tmp_path), "base.yaml", base).rc == 0
    version = status_json(control)["version"]
    head = "apiVersion: remora.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n"
    cases = [
        ("  targetRefs: [{name: web}]\n", 5, "authorizationpolicy/p: spec.action: is required"),
        ("  targetRefs: [{name: web}]\n  action: PERMIT\n", 6,
         'spec.action: Unsupported value: "PERMIT": supported values: "ALLOW", "DENY", "AUDIT"'),
        ("  targetRefs: [{name: web}]\n  action: ALLOW\n  rules:\n  - from: [{identities: [web]}]\n", 8,
         "spec.rules[0].from[0].identities[0]: 'web' is not a SPIFFE ID"),
        ("  targetRefs: [{name: web}]\n  action: DENY\n  rules:\n  - to: [{paths: [v1]}]\n", 8,
         "spec.rules[0].to[0].paths[0]: 'v1' is not a path"),
        ("  targetRefs: [{name: web}]\n  action: DENY\n  rules:\n  - to: [{grpcMethods: [Echo]}]\n", 8,
         "spec.rules[0].to[0].grpcMethods[0]: 'Echo' is not a gRPC method"),
        ("  targetRefs: [{name: web}]\n  action: DENY\n  rules:\n  - to: [{methods: [get]}]\n", 8,
         "spec.rules[0].to[0].methods[0]: 'get': methods are upper case"),
        ("  targetRefs: [{name: web}]\n  action: DENY\n  rules:\n  - from: [{namespaces: [a], identities: [\"spiffe://t/x\"]}]\n",
         8, "spec.rules[0].from[0]: needs exactly one of 'identities' and 'namespaces'"),
        ("  targetRefs: [{kind: GRPCRoute, name: nope}]\n  action: DENY\n", 5,
         "authorizationpolicy/p: spec.targetRefs[0]: GRPCRoute 'nope' does not exist in namespace 'default'"),
    ]
    for i, (spec, line, text) in enumerate(cases):
        r = control.ctl("apply", "-f", write(str(tmp_path), f"az{i}.yaml", head + spec))
        assert r.rc == 1 and f"az{i}.yaml:{line}: " in r.err and text in r.err, (i, r)
    assert status_json(control)["version"] == version
