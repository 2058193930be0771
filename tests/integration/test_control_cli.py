"""remoractl against a real remora-control: apply / get / delete / status, validation with FILE:LINE errors,
idempotency, durability across restarts, and the messages a user sees when something is wrong."""

import json
import os
import signal

from control_support import (agents, control, control_factory, ctl, service_doc, split_route_doc,  # noqa: F401
                             status_json, write)

ECHO = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {name: echo}
spec:
  protocol: grpc                    # grpc | http2 | http1
  endpoints: ["127.0.0.1:27201"]    # or dns: "name:port"
---
apiVersion: remora.dev/v1
kind: Service
metadata: {name: echo-v2, labels: {track: canary}}
spec:
  protocol: grpc
  endpoints: ["127.0.0.1:27202", {dns: "echo-v2.internal:27202"}]
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {name: echo-split}
spec:
  parentRefs: [{kind: Service, name: echo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: echo, weight: 90}, {name: echo-v2, weight: 10}]
    timeouts: {request: 10s, backendRequest: 2s}
---
apiVersion: remora.dev/v1
kind: GRPCRoute
metadata: {name: echo-grpc}
spec:
  parentRefs: [{name: echo}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}, headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: echo-v2}]
"""


def version_of(cp):
    return status_json(cp)["version"]


def test_apply_get_delete_status(control, tmp_path):
    f = write(str(tmp_path), "echo.yaml", ECHO)
    r = control.ctl("apply", "-f", f)
    assert r.rc == 0, r
    assert r.out.splitlines() == ["service/echo created", "service/echo-v2 created", "httproute/echo-split created",
                                  "grpcroute/echo-grpc created", "version 1"]

    r = control.ctl("get", "services")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PROTOCOL", "ENDPOINTS", "POLICIES"]
    assert lines[1].split() == ["default", "echo", "grpc", "127.0.0.1:27201", "-"]
    assert lines[2].split() == ["default", "echo-v2", "grpc", "127.0.0.1:27202,dns:echo-v2.internal:27202", "-"]

    # kinds are case-insensitive, singular, plural or short, as with kubectl
    for kind in ("svc", "Service", "SERVICES", "service"):
        assert control.ctl("get", kind, "echo").rc == 0

    r = control.ctl("get", "HTTPRoute", "echo-split", "-o", "json")
    assert r.rc == 0, r
    doc = json.loads(r.out)
    assert doc["kind"] == "HTTPRoute" and doc["metadata"] == {"name": "echo-split", "namespace": "default"}
    rule = doc["spec"]["rules"][0]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("echo", 90), ("echo-v2", 10)]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["timeouts"] == {"request": "10s", "backendRequest": "2s"}
    assert doc["spec"]["parentRefs"] == [{"kind": "Service", "name": "echo", "namespace": "default"}]

    r = control.ctl("get", "all", "-o", "json")
    assert r.rc == 0, r
    assert [(i["kind"], i["metadata"]["name"]) for i in json.loads(r.out)["items"]] == [
        ("Service", "echo"), ("Service", "echo-v2"), ("HTTPRoute", "echo-split"), ("GRPCRoute", "echo-grpc")]

    # a Service that routes use cannot go; the route can
    r = control.ctl("delete", "service", "echo-v2")
    assert r.rc == 1 and "used by httproute/echo-split" in r.err and "grpcroute/echo-grpc" in r.err, r
    r = control.ctl("delete", "grpcroute", "echo-grpc")
    assert r.rc == 0 and r.out.strip() == "grpcroute/echo-grpc deleted (version 2)", r
    r = control.ctl("get", "grpcroute", "echo-grpc")
    assert r.rc == 1 and "grpcroute/echo-grpc not found in namespace default" in r.err, r
    r = control.ctl("delete", "grpcroute", "echo-grpc")
    assert r.rc == 1 and "not found" in r.err, r

    r = control.ctl("status")
    assert r.rc == 0, r
    assert "version 2, 0 agents connected" in r.out


def test_get_yaml_round_trips(control, tmp_path):
    f = write(str(tmp_path), "echo.yaml", ECHO)
    assert control.ctl("apply", "-f", f).rc == 0
    r = control.ctl("get", "all", "-o", "yaml")
    assert r.rc == 0, r
    assert r.out.count("apiVersion: remora.dev/v1") == 4
    # what get prints, apply takes back as identical content
    r2 = control.ctl("apply", "-f", "-", stdin=r.out)
    assert r2.rc == 0, r2
    assert r2.out.splitlines()[-1] == "no change (version 1)"
    assert all(line.endswith(" unchanged") for line in r2.out.splitlines()[:-1])


def test_idempotent_apply(control, tmp_path):
    f = write(str(tmp_path), "echo.yaml", ECHO)
    assert control.ctl("apply", "-f", f).out.splitlines()[-1] == "version 1"
    for _ in range(3):
        r = control.ctl("apply", "-f", f)
        assert r.rc == 0 and r.out.splitlines()[-1] == "no change (version 1)", r
    # the same content written differently (flow vs block style, defaults spelled out) is still no change
    same = service_doc("echo", ["127.0.0.1:27201"]).replace("metadata:\n  name: echo", "metadata:\n  name: echo\n  namespace: default")
    r = control.ctl("apply", "-f", "-", stdin=same)
    assert r.rc == 0 and r.out.splitlines() == ["service/echo unchanged", "no change (version 1)"], r
    # one real change: one new version, whatever the number of documents
    changed = ECHO.replace("27201", "27301")
    r = control.ctl("apply", "-f", "-", stdin=changed)
    assert r.rc == 0 and "service/echo configured" in r.out and r.out.splitlines()[-1] == "version 2", r
    assert version_of(control) == 2


def test_invalid_apply_rejected_with_file_and_line(control, tmp_path):
    good = write(str(tmp_path), "good.yaml", ECHO)
    assert control.ctl("apply", "-f", good).rc == 0
    before = control.ctl("get", "all", "-o", "yaml").out
    bad = write(str(tmp_path), "bad.yaml", """\
apiVersion: remora.dev/v1
kind: Service
metadata: {name: ok-but-rejected-with-the-rest}
spec: {protocol: http1, endpoints: ["127.0.0.1:8080"]}
---
apiVersion: remora.dev/v1
kind: Service
metadata: {name: badport}
spec:
  protocol: grpc
  endpoints: ["127.0.0.1:8080", "127.0.0.1:70000"]
---
apiVersion: remora.dev/v1
kind: Gateway
metadata: {name: gw}
spec: {}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {name: typo}
spec:
  parentRefs: [{name: echo}]
  rules:
  - backendRefs: [{name: echo}]
    timeout: {request: 1s}
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {name: dangling}
spec:
  parentRefs: [{name: echo}]
  rules:
  - backendRefs:
    - name: echo
    - name: echo-v3
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {name: negative}
spec:
  parentRefs: [{name: echo}]
  rules:
  - backendRefs: [{name: echo, weight: -5}]
---
apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {name: zeros}
spec:
  parentRefs: [{name: echo}]
  rules:
  - backendRefs: [{name: echo, weight: 0}, {name: echo-v2, weight: 0}]
---
apiVersion: remora.dev/v1
kind: Service
metadata: {name: badaddr}
spec:
  protocol: http2
  endpoints: ["10.0.0.300:80"]
""")
    r = control.ctl("apply", "-f", bad)
    assert r.rc == 1, r
    errors = [line for line in r.err.splitlines() if line.startswith(bad + ":")]
    want = [
        (11, "service/badport: spec.endpoints[1]: '127.0.0.1:70000': port 70000 is out of range 1-65535"),
        (14, "unknown kind 'Gateway'"),
        (25, "httproute/typo: spec.rules[0]: unknown field 'timeout' (did you mean 'timeouts'?)"),
        (35, "httproute/dangling: spec.rules[0].backendRefs[1]: Service 'echo-v3' does not exist in namespace 'default'"),
        (43, "httproute/negative: spec.rules[0].backendRefs[0].weight: must not be negative, got -5"),
        (51, "httproute/zeros: spec.rules[0].backendRefs: every weight is 0"),
        (58, "service/badaddr: spec.endpoints[0]: '10.0.0.300:80': '10.0.0.300' is not a valid IPv4 address"),
    ]
    assert len(errors) == len(want), r.err
    for line, (n, text) in zip(errors, want):
        assert line.startswith(f"{bad}:{n}: {text}"), (line, n, text)
    assert "apply rejected: 7 errors; nothing was changed (version 1)" in r.err
    # atomic: the valid first document was not stored either
    assert control.ctl("get", "all", "-o", "yaml").out == before
    assert version_of(control) == 1


def test_errors_name_each_file(control, tmp_path):
    a = write(str(tmp_path), "a.yaml", service_doc("a") + "---\n" + "apiVersion: remora.dev/v2\nkind: Service\n"
              "metadata: {name: b}\nspec: {protocol: grpc}\n")
    b = write(str(tmp_path), "b.yaml", "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: c}\n"
              "spec:\n  protocol: grpc\n  endpoints: [\"127.0.0.1:1\"]\n  endpoints: []\n")
    c = write(str(tmp_path), "c.yaml", "kind: Service\nmetadata: [\n")
    r = control.ctl("apply", "-f", a, "-f", b, "-f", c)
    assert r.rc == 1, r
    lines = r.err.splitlines()
    assert lines[0] == f"{a}:9: apiVersion: 'remora.dev/v2' is not supported: use remora.dev/v1"
    assert lines[1].startswith(f"{b}:7: service/c: spec: field 'endpoints' is given twice"), lines
    assert lines[2].startswith(f"{c}:3: YAML syntax error"), lines
    assert version_of(control) == 0
    r = control.ctl("apply", "-f", "-", stdin="")
    assert r.rc == 1 and "-: no documents to apply" in r.err, r


def test_state_survives_restart(control_factory, tmp_path):
    cp = control_factory()
    f = write(str(tmp_path), "echo.yaml", ECHO)
    assert cp.ctl("apply", "-f", f).rc == 0
    assert cp.ctl("delete", "grpcroute", "echo-grpc").rc == 0
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("extra", namespace="other")).rc == 0
    before = cp.ctl("get", "all", "-A", "-o", "yaml").out
    assert version_of(cp) == 3
    files = sorted(os.listdir(cp.state_dir))
    # no temp file left behind (ca/ holds the generated CA, admin.token the admin credential: docs/identity.md)
    assert files == ["LOCK", "admin.token", "ca", "store.pb"], files

    # a second control plane on the same state directory refuses to start
    from control_support import ControlPlane
    dup = ControlPlane(str(tmp_path), state_dir=cp.state_dir, name="dup")
    try:
        dup.start(timeout=3)
        raise AssertionError("a second remora-control started on a locked state directory")
    except (RuntimeError, TimeoutError):
        pass
    finally:
        dup.stop(signal.SIGKILL)
    assert "is in use by another remora-control" in dup.log()

    # clean restart, then a kill -9 restart: same version, same resources
    assert cp.stop() == 0
    cp.start()
    assert version_of(cp) == 3
    assert cp.ctl("get", "all", "-A", "-o", "yaml").out == before
    cp.stop(signal.SIGKILL)
    cp.stopped_by_test = True
    cp.start()
    cp.stopped_by_test = False
    assert version_of(cp) == 3
    assert cp.ctl("get", "all", "-A", "-o", "yaml").out == before
    # versions keep growing after a restart
    r = cp.ctl("apply", "-f", "-", stdin=service_doc("extra2"))
    assert r.rc == 0 and r.out.splitlines()[-1] == "version 4", r


def test_corrupt_state_refused(control_factory, tmp_path):
    cp = control_factory()
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("echo")).rc == 0
    assert cp.stop() == 0
    path = os.path.join(cp.state_dir, "store.pb")
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0xFF
    open(path, "wb").write(bytes(data))
    try:
        cp.start(timeout=3)
        raise AssertionError("remora-control started on a corrupt store")
    except (RuntimeError, TimeoutError):
        cp.stopped_by_test = True
    assert "store.pb is corrupt (checksum mismatch)" in cp.log()


def test_unreachable_control_plane(tmp_path):
    from procutil import free_port
    from control_support import client_env
    port = free_port()
    env = client_env(str(tmp_path))
    r = ctl("status", control=f"127.0.0.1:{port}", env=env)
    assert r.rc == 3, r
    assert r.err.strip() == (f"remoractl: cannot reach the control plane at 127.0.0.1:{port} (connection refused): "
                             "is remora-control running? (set --control or REMORA_CONTROL)")
    # --control wins over REMORA_CONTROL
    r = ctl("--control", f"127.0.0.1:{port}", "get", "svc", control="127.0.0.1:1", env=env)
    assert r.rc == 3 and f"127.0.0.1:{port}" in r.err, r


def test_help_and_usage_errors(control, tmp_path):
    for args in (["--help"], ["help"], ["apply", "--help"], ["get", "--help"], ["delete", "--help"], ["status", "--help"],
                 ["help", "apply"]):
        r = ctl(*args)
        assert r.rc == 0 and r.out.startswith("Usage: remoractl"), (args, r)
    r = ctl("--help")
    for cmd in ("apply", "get", "delete", "status", "REMORA_CONTROL"):
        assert cmd in r.out
    cases = [
        (["apply"], "apply needs -f FILE"),
        (["apply", "x.yaml"], "try 'remoractl apply -f x.yaml'"),
        (["apply", "-f", str(tmp_path / "missing.yaml")], "cannot read"),
        (["get"], "get needs a KIND"),
        (["get", "gateways"], "unknown kind 'gateways'"),
        (["get", "svc", "-o", "xml"], "-o takes table, yaml or json"),
        (["delete", "svc"], "delete takes KIND NAME"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["apply", "-f", "-", "--wait", "--timeout", "0"], "--timeout takes seconds"),
    ]
    for args, text in cases:
        r = control.ctl(*args, stdin="")
        assert r.rc == 2 and text in r.err, (args, r)


def test_namespaces(control, tmp_path):
    assert control.ctl("apply", "-f", "-", stdin=service_doc("echo") + "---\n" + service_doc("echo", namespace="team-a")).rc == 0
    r = control.ctl("get", "svc")
    assert [ln.split()[0] for ln in r.out.splitlines()[1:]] == ["default"], r
    r = control.ctl("get", "svc", "-A")
    assert [ln.split()[0] for ln in r.out.splitlines()[1:]] == ["default", "team-a"], r
    r = control.ctl("get", "svc", "echo", "-n", "team-a", "-o", "json")
    assert json.loads(r.out)["metadata"]["namespace"] == "team-a"
    # a route's references default to its own namespace
    route = split_route_doc("r", "echo", [("echo", 1)]).replace("metadata: {name: r}", "metadata: {name: r, namespace: team-b}")
    r = control.ctl("apply", "-f", "-", stdin=route)
    assert r.rc == 1 and "Service 'echo' does not exist in namespace 'team-b'" in r.err, r
    r = control.ctl("delete", "svc", "echo", "-n", "team-a")
    assert r.rc == 0 and "service/echo (namespace team-a) deleted" in r.out, r


POLICY = """\
apiVersion: remora.dev/v1
kind: FaultInjection
metadata: {name: echo-chaos}
spec:
  delay: {fixedDelay: 50ms, percent: 10}
  abort: {grpcStatus: UNAVAILABLE, percent: 5}
---
apiVersion: remora.dev/v1
kind: BackendTrafficPolicy
metadata: {name: echo}
spec:
  targetRefs: [{kind: Service, name: echo}]
  retryConstraint: {budget: {percent: 25}}
  connectionPool: {connectTimeout: 500ms}
---
apiVersion: remora.dev/v1
kind: GRPCRoute
metadata: {name: echo-grpc}
spec:
  parentRefs: [{name: echo}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}, headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: echo-v2}]
    filters:
    - {type: ExtensionRef, extensionRef: {name: echo-chaos}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: echo}, fraction: {numerator: 1, denominator: 1000}}}
    retry: {attempts: 2, codes: [UNAVAILABLE, RESOURCE_EXHAUSTED]}
    timeouts: {request: 3s, backendRequest: 1s}
"""


def test_policy_kinds(control, agents, tmp_path):
    assert control.ctl("apply", "-f", write(str(tmp_path), "echo.yaml", ECHO)).rc == 0
    r = control.ctl("apply", "-f", write(str(tmp_path), "policy.yaml", POLICY))
    assert r.rc == 0, r
    assert r.out.splitlines() == ["faultinjection/echo-chaos created", "backendtrafficpolicy/echo created",
                                  "grpcroute/echo-grpc configured", "version 2"], r

    # the kinds are in the snapshot agents receive, in their own fields
    snap = agents(control, "policy-fake").wait_version(2)
    assert [f.metadata.name for f in snap.fault_injections] == ["echo-chaos"]
    assert snap.backend_traffic_policies[0].spec.retry_constraint.budget.percent == 25
    rule = snap.grpc_routes[0].spec.rules[0]
    assert rule.retry.attempts == 2 and rule.timeouts.backend_request.seconds == 1
    assert [f.WhichOneof("filter") for f in rule.filters] == ["extension_ref", "request_mirror"]

    r = control.ctl("get", "all")
    assert r.rc == 0, r
    assert "faultinjection/echo-chaos" in r.out and "backendtrafficpolicy/echo" in r.out
    assert "TARGETS" in r.out and "25%/10s, min 10/1s" in r.out and "connect 500ms" in r.out, r
    assert "UNAVAILABLE (5%)" in r.out, r
    r = control.ctl("get", "all", "-o", "yaml")
    assert r.rc == 0 and r.out.count("apiVersion: remora.dev/v1") == 6, r
    r2 = control.ctl("apply", "-f", "-", stdin=r.out)
    assert r2.rc == 0 and r2.out.splitlines()[-1] == "no change (version 2)", r2
    for kind in ("FaultInjection", "faultinjections", "backendtrafficpolicies", "btp", "BackendTrafficPolicy"):
        assert control.ctl("get", kind).rc == 0, kind

    # references are kept whole: in use -> refused; absent -> refused at apply
    r = control.ctl("delete", "faultinjection", "echo-chaos")
    assert r.rc == 1 and "faultinjection/echo-chaos is used by grpcroute/echo-grpc" in r.err, r
    r = control.ctl("delete", "service", "echo")
    assert r.rc == 1 and "backendtrafficpolicy/echo" in r.err, r
    r = control.ctl("apply", "-f", "-", stdin="apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: x}\n"
                                                "spec: {targetRefs: [{name: nope}]}\n")
    assert r.rc == 1 and "-:4: backendtrafficpolicy/x: spec.targetRefs[0]: Service 'nope' does not exist" in r.err, r
    r = control.ctl("delete", "btp", "echo")
    assert r.rc == 0 and r.out.strip() == "backendtrafficpolicy/echo deleted (version 3)", r


def test_get_help_lists_policy_kinds(control):
    r = control.ctl("get", "--help")
    assert r.rc == 0 and "faultinjection" in r.out and "backendtrafficpolicy" in r.out and "btp" in r.out, r
    assert "ratelimitpolicy" in r.out and "rlp" in r.out and "in force" in r.out, r
    assert "authorizationpolicy (authorizationpolicies, authz)" in r.out, r
    r = control.ctl("get")
    assert r.rc == 2 and "faultinjection, backendtrafficpolicy, ratelimitpolicy, telemetry, authorizationpolicy or all" in r.err, r
    r = control.ctl("get", "gateways")
    assert r.rc == 2 and "FaultInjection (faultinjections)" in r.err and "BackendTrafficPolicy" in r.err, r
    assert "RateLimitPolicy (ratelimitpolicies, rlp)" in r.err and "AuthorizationPolicy (authorizationpolicies, authz)" in r.err, r


def test_example_policy_documents_apply(control):
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
    assert control.ctl("apply", "-f", os.path.join(examples, "mesh.yaml")).rc == 0
    r = control.ctl("apply", "-f", os.path.join(examples, "mesh-policy.yaml"))
    assert r.rc == 0 and "httproute/web-canary configured" in r.out, r
