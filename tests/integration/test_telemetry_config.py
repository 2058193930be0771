"""Telemetry configuration (issue 8, section 2 and 3's settings): the bootstrap's `telemetry` block and the
control plane's Telemetry kind, as the agent's /config_dump shows them.

Bootstrap: accepted values and their defaults appear in the dump; bad values are refused with FILE:LINE.
Control plane: a Telemetry in the root namespace `remora-system` applied with `remoractl apply --wait`
reaches a real agent (and replaces the bootstrap's block); one in another namespace does not apply to an
agent (the discovery Hello does not carry the agent's namespace yet); invalid documents are refused with
FILE:LINE; a path the agent cannot create is NACKed with the reason; delete turns it off again.
What tracing and access logs do on the wire is tested in test_access_log.py and the tracing tests."""

import json
import os
import subprocess

import pytest

from control_support import control, control_factory, status_json, wait_until, write  # noqa: F401
from procutil import free_port
from support import AGENT, http_get, render_config
from test_mesh import mesh  # noqa: F401

pytestmark = pytest.mark.agent_only

TELEMETRY = """\
telemetry:
  tracing:
    otlp: {endpoint: "127.0.0.1:4317", protocol: grpc}
    sampling_percent: 12.5
    propagation: [b3]
    service_name: web
    batch_size: 128
    batch_timeout_ms: 250
    queue_size: 1024
  access_log:
    path: LOGPATH
    buffer_bytes: 65536
"""


def _bootstrap(workdir, telemetry, h1_port=9):
    text, _ = render_config(listen_port=free_port(), health_port=free_port(), admin_port=free_port(),
                            routes=[{"prefix": "/", "cluster": "web"}],
                            clusters=[{"name": "web", "protocol": "http1", "endpoints": [f"127.0.0.1:{h1_port}"]}])
    return text + telemetry


def _dump_of(port):
    status, _, body = http_get("127.0.0.1", port, "/config_dump")
    assert status == 200, body
    return json.loads(body)


def _check(path):
    r = subprocess.run([AGENT, "--config", path, "--check-config"], capture_output=True, timeout=15)
    return r.returncode, (r.stdout + r.stderr).decode()


def test_bootstrap_telemetry_in_config_dump(proxy_factory, workdir):
    log = os.path.join(workdir, "access.log")
    text = _bootstrap(workdir, TELEMETRY.replace("LOGPATH", log))
    path = write(workdir, "tel.yaml", text)
    p = proxy_factory(config_path=path)
    tel = _dump_of(p.admin_port)["telemetry"]
    lines = text.splitlines()
    assert tel["tracing"] == {"otlp": {"endpoint": "127.0.0.1:4317", "protocol": "grpc"}, "sampling_percent": 12.5,
                              "propagation": ["b3"], "service_name": "web", "batch_size": 128, "batch_timeout_ms": 250,
                              "queue_size": 1024, "line": lines.index("  tracing:") + 2}, tel
    assert tel["access_log"] == {"path": log, "buffer_bytes": 65536, "line": lines.index("  access_log:") + 2}, tel


def test_bootstrap_telemetry_defaults(proxy_factory, workdir):
    path = write(workdir, "plain.yaml", _bootstrap(workdir, ""))
    p = proxy_factory(config_path=path)
    assert _dump_of(p.admin_port)["telemetry"] == {"tracing": None, "access_log": None}

    text = _bootstrap(workdir, "telemetry:\n  tracing:\n    otlp: {endpoint: \"[::1]:4318\"}\n  access_log: {}\n")
    p = proxy_factory(config_path=write(workdir, "min.yaml", text))
    tel = _dump_of(p.admin_port)["telemetry"]
    tel["tracing"].pop("line")
    assert tel["tracing"] == {"otlp": {"endpoint": "[::1]:4318", "protocol": "grpc"}, "sampling_percent": 0,
                              "propagation": ["w3c", "b3"], "service_name": "remora-agent", "batch_size": 512,
                              "batch_timeout_ms": 1000, "queue_size": 4096}, tel
    assert tel["access_log"]["path"] == "stdout" and tel["access_log"]["buffer_bytes"] == 1048576, tel


BAD = [
    # (replace this, with this, expected message part)
    ('endpoint: "127.0.0.1:4317"', 'endpoint: "collector:4317"', "otlp.endpoint 'collector:4317': the receiver must be an IP"),
    ('endpoint: "127.0.0.1:4317"', 'endpoint: "127.0.0.1"', "otlp.endpoint '127.0.0.1': expected HOST:PORT"),
    ("protocol: grpc", "protocol: thrift", "otlp.protocol must be grpc or http, got 'thrift'"),
    ("sampling_percent: 12.5", "sampling_percent: 100.5", "sampling_percent must be a number 0-100"),
    ("sampling_percent: 12.5", "sampling_percent: -1", "sampling_percent must be a number 0-100"),
    ("propagation: [b3]", "propagation: [b3, zipkin]", "propagation: unknown format 'zipkin'"),
    ("batch_size: 128", "batch_size: 0", "batch_size must be 1-65536, got 0"),
    ("queue_size: 1024", "queue_size: 64", "queue_size (64) must not be smaller than batch_size (128)"),
    ("service_name: web", "service_name: \"\"", "service_name must be 1-255 characters"),
    ("buffer_bytes: 65536", "buffer_bytes: 100", "buffer_bytes must be 4096-268435456, got 100"),
    ("path: LOGPATH", "path: /nonexistent-dir/x/access.log",
     "path '/nonexistent-dir/x/access.log': cannot be created: directory '/nonexistent-dir/x'"),
    ("path: LOGPATH", "path: /", "path '/': is a directory, not a file"),
    ("    batch_size: 128", "    batch_sise: 128", "unknown key 'batch_sise' in telemetry.tracing (did you mean 'batch_size'?)"),
]


@pytest.mark.parametrize("old,new,message", BAD, ids=[b[2][:40] for b in BAD])
def test_bootstrap_bad_values_file_line(workdir, old, new, message):
    text = _bootstrap(workdir, TELEMETRY.replace("LOGPATH", os.path.join(workdir, "a.log")).replace(
        "path: " + os.path.join(workdir, "a.log"), "path: LOGPATH"))
    assert old in text
    text = text.replace(old, new)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if new.strip() in s)
    path = write(workdir, "bad.yaml", text.replace("LOGPATH", os.path.join(workdir, "a.log")))
    rc, out = _check(path)
    assert rc != 0, out
    assert f"{path}:{line}: " in out and message in out, (line, out)


def test_bootstrap_tracing_needs_otlp(workdir):
    text = _bootstrap(workdir, "telemetry:\n  tracing:\n    sampling_percent: 5\n")
    path = write(workdir, "nootlp.yaml", text)
    rc, out = _check(path)
    line = text.splitlines().index("    sampling_percent: 5") + 1
    assert rc != 0 and f"{path}:{line}: telemetry.tracing: 'otlp' is required" in out, out


# ------------------------------------------------------------------------------------ control plane

SERVICE = """\
apiVersion: remora.dev/v1
kind: Service
metadata: {{name: web}}
spec: {{protocol: http1, endpoints: ["127.0.0.1:{port}"]}}
"""

MESH_TELEMETRY = """\
apiVersion: remora.dev/v1
kind: Telemetry
metadata: {{name: default, namespace: remora-system}}
spec:
  tracing:
    otlp: {{endpoint: "127.0.0.1:4317", protocol: http}}
    samplingPercent: 2.5
    propagation: [w3c]
  accessLog: {{format: json, path: {path}}}
"""


def _apply(cp, workdir, name, text, wait=True):
    args = ["apply", "-f", write(workdir, name, text)] + (["--wait", "--timeout", "10"] if wait else [])
    return cp.ctl(*args)


def test_telemetry_applied_reaches_agent(control, mesh, tmp_path):
    workdir = str(tmp_path)
    a = mesh(control, "tel-agent")
    assert _dump_of(a.admin)["telemetry"] == {"tracing": None, "access_log": None}
    log = os.path.join(workdir, "mesh-access.log")
    r = _apply(control, workdir, "tel.yaml", SERVICE.format(port=9) + "---\n" + MESH_TELEMETRY.format(path=log))
    assert r.rc == 0 and "telemetry/default (namespace remora-system) created" in r.out and "applied by 1 agent" in r.out, r
    dump = _dump_of(a.admin)
    assert dump["version"] == str(status_json(control)["version"])
    tel = dump["telemetry"]
    assert tel["tracing"] == {"otlp": {"endpoint": "127.0.0.1:4317", "protocol": "http"}, "sampling_percent": 2.5,
                              "propagation": ["w3c"], "service_name": "remora-agent", "batch_size": 512,
                              "batch_timeout_ms": 1000, "queue_size": 4096, "line": 0}, tel
    assert tel["access_log"] == {"path": log, "buffer_bytes": 1048576, "line": 0}, tel
    # and the agent logs (the Service's endpoint is closed: a 503 with its flag)
    assert a.get("web.default", "/logged")[0] == 503
    wait_until(lambda: os.path.exists(log) and open(log).read().count("\n") >= 1, timeout=5, what="an access log line")
    line = json.loads(open(log).readline())
    assert line["path"] == "/logged" and line["authority"] == "web.default" and line["response_flag"] == "UF", line
    assert line["backend"] == "web.default", line

    # listed and rendered like the other kinds; the yaml output applies back unchanged
    r = control.ctl("get", "telemetry", "-A")
    assert r.rc == 0, r
    rows = [line.split() for line in r.out.splitlines()]
    assert rows[0][:3] == ["NAMESPACE", "NAME", "SCOPE"], r.out
    assert rows[1][:5] == ["remora-system", "default", "mesh", "otlp/http", "127.0.0.1:4317"], r.out
    r = control.ctl("get", "telemetry", "default", "-n", "remora-system", "-o", "yaml")
    assert r.rc == 0 and "samplingPercent: 2.5" in r.out and "path: " + log in r.out, r
    again = control.ctl("apply", "-f", "-", stdin=r.out)
    assert again.rc == 0 and "unchanged" in again.out, again

    # a Telemetry of another namespace does not apply to this agent (started without --namespace)
    other = MESH_TELEMETRY.format(path="stdout").replace("namespace: remora-system", "namespace: shop").replace(
        "samplingPercent: 2.5", "samplingPercent: 50")
    r = _apply(control, workdir, "shop.yaml", other)
    assert r.rc == 0, r
    assert _dump_of(a.admin)["telemetry"]["tracing"]["sampling_percent"] == 2.5

    # deleting the mesh-wide one turns telemetry off again (the agent has no bootstrap block)
    r = control.ctl("delete", "telemetry", "default", "-n", "remora-system")
    assert r.rc == 0, r
    # (a delete does not wait; an apply --wait of the next version does)
    r = _apply(control, workdir, "svc.yaml", SERVICE.format(port=10))
    assert r.rc == 0, r
    assert _dump_of(a.admin)["telemetry"] == {"tracing": None, "access_log": None}


def test_telemetry_invalid_documents_file_line(control, tmp_path):
    workdir = str(tmp_path)
    doc = MESH_TELEMETRY.format(path="stdout")
    lines = doc.splitlines()
    cases = [
        ("samplingPercent: 2.5", "samplingPercent: 101",
         "spec.tracing.samplingPercent: must be from 0 to 100, got 101"),
        ("samplingPercent: 2.5", "samplingPercent: 0.123456",
         "spec.tracing.samplingPercent: must be a number from 0 to 100 with at most 4 decimals"),
        ("protocol: http", "protocol: zipkin", "spec.tracing.otlp.protocol: must be grpc or http, got 'zipkin'"),
        ('endpoint: "127.0.0.1:4317"', 'endpoint: "collector:4317"',
         "spec.tracing.otlp.endpoint: 'collector:4317': 'collector' is not an IP address"),
        ("propagation: [w3c]", "propagation: [w3c, jaeger]", "spec.tracing.propagation[1]: unknown propagation 'jaeger'"),
        ("format: json", "format: text", "spec.accessLog.format: must be json, got 'text'"),
        ("path: stdout", "path: logs/a.log", "spec.accessLog.path: must be stdout or an absolute file path"),
        ("    samplingPercent: 2.5", "    sampling: 2.5", "spec.tracing: unknown field 'sampling'"),
    ]
    for old, new, message in cases:
        assert old in doc, old
        line = next(i for i, s in enumerate(lines, 1) if old.strip() in s)
        r = control.ctl("apply", "-f", write(workdir, "bad.yaml", doc.replace(old, new)))
        assert r.rc == 1 and f"bad.yaml:{line}: telemetry/default: {message}" in r.err, (message, r)
    r = control.ctl("apply", "-f", write(workdir, "empty.yaml", doc.split("spec:")[0] + "spec: {}\n"))
    assert r.rc == 1 and "telemetry/default: spec: give tracing, accessLog, or both" in r.err, r


def test_telemetry_agent_cannot_create_log_nacks(control, mesh, tmp_path):
    workdir = str(tmp_path)
    a = mesh(control, "nack-agent")
    r = _apply(control, workdir, "svc.yaml", SERVICE.format(port=9))
    assert r.rc == 0, r
    before = _dump_of(a.admin)
    r = _apply(control, workdir, "tel.yaml", MESH_TELEMETRY.format(path="/nonexistent-remora-dir/access.log"))
    assert r.rc != 0, r
    assert "nack-agent" in r.err and "telemetry.access_log.path '/nonexistent-remora-dir/access.log': cannot be created" \
        in r.err, r
    after = _dump_of(a.admin)
    assert after["version"] == before["version"] and after["telemetry"]["access_log"] is None


def test_telemetry_of_the_agents_namespace_overrides_the_mesh_wide_one(control, mesh, tmp_path):
    workdir = str(tmp_path)
    plain = mesh(control, "tel-plain")
    shop = mesh(control, "tel-shop", extra_args=["--namespace", "shop"])
    r = _apply(control, workdir, "mesh.yaml", SERVICE.format(port=9) + "---\n" + MESH_TELEMETRY.format(path="stdout"))
    assert r.rc == 0 and "applied by 2 agents" in r.out, r
    assert _dump_of(plain.admin)["telemetry"]["tracing"]["sampling_percent"] == 2.5
    assert _dump_of(shop.admin)["telemetry"]["tracing"]["sampling_percent"] == 2.5
    # shop's own Telemetry replaces the mesh-wide one for the agent of that namespace only
    other = MESH_TELEMETRY.format(path="stdout").replace("namespace: remora-system", "namespace: shop").replace(
        "samplingPercent: 2.5", "samplingPercent: 50")
    r = _apply(control, workdir, "shop.yaml", other)
    assert r.rc == 0, r
    assert _dump_of(shop.admin)["telemetry"]["tracing"]["sampling_percent"] == 50
    assert _dump_of(plain.admin)["telemetry"]["tracing"]["sampling_percent"] == 2.5
    # without it, the mesh-wide one again
    assert control.ctl("delete", "telemetry", "default", "-n", "shop").rc == 0
    assert _apply(control, workdir, "svc.yaml", SERVICE.format(port=10)).rc == 0
    assert _dump_of(shop.admin)["telemetry"]["tracing"]["sampling_percent"] == 2.5


def test_agent_namespace_flag_is_checked(tmp_path):
    r = subprocess.run([AGENT, "--namespace", "Bad_NS", "--control", "127.0.0.1:1", "--node-id", "x", "--listen",
                        "127.0.0.1:1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--namespace 'Bad_NS': must be a DNS-1123 label" in r.stderr, r.stderr
