"""Sidecar injection (docs/injection.md): remora-control's HTTPS admission webhook and `remoractl inject|uninject`.

AdmissionReview requests go to the real webhook over TLS, verified against the control plane's trust anchor
and the DNS name of --webhook-dns; the returned JSONPatch is applied with `kubectl patch --local` (a real
RFC 6902 implementation, not ours) and the result is checked, type-checked with kubernetes-models
(tests/tools/kube/check_manifests.js) and compared with what `remoractl inject` makes of the same pod.
"""

import base64
import copy
import json
import os
import shutil
import socket
import ssl
import subprocess
import uuid

import pytest
import yaml

from control_support import CONTROL_BIN, ControlPlane, ctl
from procutil import free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KUBE = os.path.join(REPO, "tests", "tools", "kube")
KUBECTL = os.path.join(KUBE, "bin", "kubectl")
CHECK = os.path.join(KUBE, "check_manifests.js")
DNS = "remora-control.remora-system.svc"
DNS_LONG = "remora-control.remora-system.svc.cluster.local"

APP_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                 "annotations": {"config.remora.dev/skip-outbound-ports": "3306"}},
    "spec": {
        "serviceAccountName": "web",
        "initContainers": [{"name": "migrate", "image": "example/migrate:1"}],
        "containers": [
            {"name": "web", "image": "example/web:1", "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
             "livenessProbe": {"tcpSocket": {"port": 8080}}},
            {"name": "api", "image": "example/api:1",
             "livenessProbe": {"grpc": {"port": 9090}, "timeoutSeconds": 3}},
        ],
    },
}


def review(pod, uid=None, operation="CREATE"):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid or str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": pod["metadata"].get("namespace", "default"), "operation": operation,
                        "object": pod}}


class Webhook:
    """An HTTP/1.1 client over one TLS connection to the webhook (keep-alive), verified as the API server does."""

    def __init__(self, port, cafile, server_hostname=DNS):
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=server_hostname)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)
        return self.read_response()

    def request(self, method, path, body=b"", content_type="application/json", headers=()):
        head = f"{method} {path} HTTP/1.1\r\nHost: {DNS}\r\nContent-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        for h in headers:
            head += h + "\r\n"
        return self.send_raw(head.encode() + b"\r\n" + body)

    def read_response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response (got {self.buf!r})")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers["content-length"])
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def review(self, pod, **kw):
        rv = review(pod, **kw)
        status, _, body = self.request("POST", "/inject?timeout=10s", json.dumps(rv).encode())
        assert status == 200, body
        out = json.loads(body)
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        assert out["response"]["uid"] == rv["request"]["uid"]
        return out["response"]


@pytest.fixture
def control(tmp_path):
    port = free_port()
    cp = ControlPlane(str(tmp_path), extra=["--webhook-listen", f"127.0.0.1:{port}", "--webhook-dns", DNS,
                                           "--webhook-dns", DNS_LONG])
    cp.webhook_port = port
    cp.start()
    try:
        wait_port("127.0.0.1", port, 10, cp.proc)
        yield cp
    finally:
        rc = cp.stop()
        assert rc == 0, cp.log()


def kubectl_patch(tmp_path, pod, patch):
    pod_file, patch_file = tmp_path / "pod.json", tmp_path / "patch.json"
    pod_file.write_text(json.dumps(pod))
    patch_file.write_text(json.dumps(patch))
    r = subprocess.run([KUBECTL, "patch", "--local", "-f", str(pod_file), "--type=json", "--patch-file", str(patch_file),
                        "-o", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def type_check(path):
    if not os.path.exists(CHECK):
        pytest.skip("tests/tools/kube/check_manifests.js is not there")
    node = shutil.which("node")
    assert node, "node not found"
    r = subprocess.run([node, CHECK, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_webhook_patch_through_kubectl_matches_cli(control, tmp_path):
    wh = Webhook(control.webhook_port, control.trust_anchor)
    try:
        assert wh.sock.selected_alpn_protocol() == "http/1.1"
        resp = wh.review(APP_POD)
    finally:
        wh.close()
    assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(resp["patch"]))
    pod = kubectl_patch(tmp_path, APP_POD, patch)

    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["remora-init", "remora-proxy", "migrate"]
    ri, proxy = init[0], init[1]
    assert ri["command"] == ["/usr/local/bin/remora-init"]
    assert ri["args"] == ["--proxy-uid", "2102", "--control-port", "15010", "--exclude-outbound-ports", "3306"]
    assert ri["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert ri["securityContext"]["runAsUser"] == 0
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 15020, "scheme": "HTTP"}
    assert proxy["startupProbe"]["periodSeconds"] == 1 and proxy["startupProbe"]["failureThreshold"] == 120
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/live"
    sc = proxy["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"], sc["allowPrivilegeEscalation"],
            sc["readOnlyRootFilesystem"]) == (2102, 2102, True, False, True)
    e = env(proxy)
    assert list(e)[:4] == ["POD_NAME", "POD_NAMESPACE", "POD_IP", "SERVICE_ACCOUNT"]
    assert e["REMORA_CONTROL"] == "remora-control.remora-system.svc:15010"
    assert e["REMORA_NODE_ID"] == "$(POD_NAME).$(POD_NAMESPACE)"
    assert e["REMORA_NAMESPACE"] == "$(POD_NAMESPACE)"
    assert e["REMORA_TRANSPARENT"] == "1"
    assert e["REMORA_STATE_DIR"] == "/var/run/remora/state"
    assert e["REMORA_IDENTITY_TOKEN_FILE"] == "/var/run/remora/tokens/token"
    assert e["REMORA_TRUST_ANCHOR_FILE"] == "/var/run/remora/trust/trust-anchor.pem"
    assert "REMORA_OUTBOUND_GRACE_MS" not in e
    assert json.loads(e["REMORA_APP_PROBES"]) == {
        "/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}},
        "/app-health/api/livez": {"grpc": {"port": 9090, "service": ""}, "timeoutSeconds": 3}}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["remora-token"]["projected"]["sources"][0]["serviceAccountToken"] == {
        "audience": "remora", "expirationSeconds": 3600, "path": "token"}
    assert vols["remora-trust"]["configMap"]["name"] == "remora-trust-anchor"
    assert "emptyDir" in vols["remora-state"]

    web, api = pod["spec"]["containers"]
    assert web["readinessProbe"] == {"httpGet": {"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"},
                                     "periodSeconds": 5}
    assert web["livenessProbe"] == {"tcpSocket": {"port": 8080}}  # TCP probes stay
    assert api["livenessProbe"]["httpGet"]["path"] == "/app-health/api/livez"
    ann = pod["metadata"]["annotations"]
    assert ann["remora.dev/injected"] == "0.1.0"
    assert json.loads(ann["remora.dev/original-probes"])["web"]["readinessProbe"] == APP_POD["spec"]["containers"][0][
        "readinessProbe"]
    assert pod["metadata"]["labels"] == {"app": "web"}

    # the CLI makes the same pod
    src = tmp_path / "app.json"
    src.write_text(json.dumps(APP_POD))
    r = ctl("inject", "-f", str(src))
    assert r.rc == 0, r
    assert json.loads(r.out) == pod
    assert "Pod/web-1: injected" in r.err

    out = tmp_path / "injected.json"
    out.write_text(json.dumps(pod))
    type_check(out)

    # injecting an injected pod gives no patch
    wh = Webhook(control.webhook_port, control.trust_anchor)
    try:
        again = wh.review(pod)
    finally:
        wh.close()
    assert "patch" not in again and again["allowed"] is True
    assert any("already injected" in w for w in again["warnings"])
    assert "pod shop/web-1: injected" in control.log()


def test_webhook_certificate(control, tmp_path):
    # both DNS names verify against the trust anchor; another name and another CA do not
    for name in (DNS, DNS_LONG):
        wh = Webhook(control.webhook_port, control.trust_anchor, server_hostname=name)
        status, _, body = wh.request("GET", "/healthz", content_type=None)
        assert (status, body) == (200, b"ok\n")
        cert = wh.sock.getpeercert()
        wh.close()
    sans = {v for k, v in cert["subjectAltName"] if k == "DNS"}
    assert sans == {DNS, DNS_LONG}
    with pytest.raises(ssl.SSLCertVerificationError):
        Webhook(control.webhook_port, control.trust_anchor, server_hostname="evil.example")
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                    "/CN=other", "-days", "1", "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
                   check=True, capture_output=True, timeout=30)
    with pytest.raises(ssl.SSLCertVerificationError):
        Webhook(control.webhook_port, str(other))


def test_webhook_skips_and_bad_requests(control):
    wh = Webhook(control.webhook_port, control.trust_anchor)
    try:
        host = copy.deepcopy(APP_POD)
        host["spec"]["hostNetwork"] = True
        resp = wh.review(host)
        assert resp["allowed"] is True and "patch" not in resp
        assert any("hostNetwork" in w for w in resp["warnings"])

        off = copy.deepcopy(APP_POD)
        off["metadata"]["annotations"]["remora.dev/inject"] = "disabled"
        resp = wh.review(off)
        assert "patch" not in resp and any("disabled" in w for w in resp["warnings"])

        upd = wh.review(APP_POD, operation="UPDATE")
        assert upd["allowed"] is True and "patch" not in upd

        bad = copy.deepcopy(APP_POD)
        bad["metadata"]["annotations"]["config.remora.dev/proxy-memory-limit"] = "lots"
        resp = wh.review(bad)
        assert resp["allowed"] is False and "proxy-memory-limit" in resp["status"]["message"]

        # malformed JSON, not an AdmissionReview, no object: 400, and the same connection serves the next request
        for body, msg in ((b"{not json", b"malformed JSON"), (b'{"kind": "Pod"}', b"not an AdmissionReview"),
                          (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                       "request": {"uid": "x"}}).encode(), b"no object")):
            status, _, rbody = wh.request("POST", "/inject", body)
            assert status == 400 and msg in rbody, rbody
        assert wh.review(APP_POD)["patchType"] == "JSONPatch"

        assert wh.request("POST", "/inject", b"{}", content_type="text/plain")[0] == 415
        assert wh.request("GET", "/inject", content_type=None)[0] == 405
        assert wh.request("GET", "/nope", content_type=None)[0] == 404
        # a body over the bound: refused from its Content-Length, connection closed
        status, headers, _ = wh.send_raw(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: 99999999\r\n\r\n{")
        assert status == 413 and headers.get("connection") == "close"
    finally:
        wh.close()

    # malformed HTTP: 400 and closed; plaintext on the TLS port: dropped; the webhook keeps serving
    wh = Webhook(control.webhook_port, control.trust_anchor)
    status, headers, _ = wh.send_raw(b"POST /inject HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
    assert status == 400 and headers.get("connection") == "close"
    wh.close()
    with socket.create_connection(("127.0.0.1", control.webhook_port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    wh = Webhook(control.webhook_port, control.trust_anchor)
    try:
        assert wh.review(APP_POD)["allowed"] is True
    finally:
        wh.close()
    assert control.alive()


MULTI = """\
# a Deployment, a Service, a CronJob and a List
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:1
        ports: [{containerPort: 8080}]
        livenessProbe:
          httpGet: {path: /live, port: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {config.remora.dev/proxy-log-level: debug}
        spec:
          restartPolicy: Never
          containers:
          - name: report
            image: example/report:1
            args: ["--yes", "on"]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: solo}
  spec:
    containers: [{name: solo, image: busybox, command: [sleep, "3600"]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
  data: {enabled: "true", port: "8080"}
- apiVersion: v1
  kind: Pod
  metadata: {name: node-agent}
  spec:
    hostNetwork: true
    containers: [{name: a, image: busybox}]
"""


def test_cli_multidoc_roundtrip(tmp_path):
    src = tmp_path / "app.yaml"
    src.write_text(MULTI)
    r = ctl("inject", "-f", str(src))
    assert r.rc == 0, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 6, r.err
    assert lines[0].startswith(f"{src}:2: ")
    assert "Deployment/web: injected" in lines[0]
    assert "Service/web: passed through" in lines[1]
    assert "CronJob/report: injected" in lines[2]
    assert "items[0]: Pod/solo: injected" in lines[3]
    assert "items[1]: ConfigMap/settings: passed through" in lines[4]
    assert "items[2]: Pod/node-agent: skipped: hostNetwork" in lines[5]
    docs = list(yaml.safe_load_all(r.out))
    orig = list(yaml.safe_load_all(MULTI))
    assert len(docs) == 4
    dep, svc, cron, lst = docs
    assert svc == orig[1]
    assert dep["spec"]["replicas"] == 2
    tpl = dep["spec"]["template"]
    assert [c["name"] for c in tpl["spec"]["initContainers"]] == ["remora-init", "remora-proxy"]
    assert tpl["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/app-health/web/livez"
    assert tpl["metadata"]["annotations"]["remora.dev/injected"] == "0.1.0"
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    proxy = job_pod["spec"]["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"  # a native sidecar: the Job completes when its container exits
    assert env(proxy)["REMORA_LOG_LEVEL"] == "debug"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert job_pod["spec"]["containers"][0]["args"] == ["--yes", "on"]  # strings that look like booleans stay strings
    assert lst["items"][1] == orig[3]["items"][1]
    assert lst["items"][2] == orig[3]["items"][2]

    # the type checker knows no v1 List: its items are checked one by one
    out = tmp_path / "injected.yaml"
    out.write_text(yaml.safe_dump_all(docs[:3] + lst["items"]))
    type_check(out)

    # inject is idempotent; uninject gives back the original documents
    again = ctl("inject", "-f", "-", stdin=r.out)
    assert again.rc == 0, again
    assert list(yaml.safe_load_all(again.out)) == docs
    assert "already injected" in again.err
    un = ctl("uninject", "-f", "-", stdin=r.out)
    assert un.rc == 0, un
    assert list(yaml.safe_load_all(un.out)) == orig
    assert "Deployment/web: uninjected" in un.err


def test_cli_config_and_errors(tmp_path):
    cfg = tmp_path / "injector.yaml"
    cfg.write_text("proxyImage: registry.local/remora/proxy:9\nnativeSidecar: false\noutboundGraceMs: 2500\n"
                   "controlAddress: control.mesh.svc:9010\n")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "app", "image": "x"}]}}
    r = ctl("inject", "--config", str(cfg), stdin=json.dumps(pod))
    assert r.rc == 0, r
    out = json.loads(r.out)  # JSON in, JSON out
    proxy = out["spec"]["containers"][0]
    assert proxy["name"] == "remora-proxy" and proxy["image"] == "registry.local/remora/proxy:9"
    assert proxy["lifecycle"]["postStart"]["exec"]["command"] == ["/usr/local/bin/remoractl", "await"]
    assert "restartPolicy" not in proxy
    assert env(proxy)["REMORA_OUTBOUND_GRACE_MS"] == "2500"
    assert env(proxy)["REMORA_CONTROL"] == "control.mesh.svc:9010"
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["remora-init"]
    assert "--control-port" in out["spec"]["initContainers"][0]["args"]
    p = tmp_path / "regular.json"
    p.write_text(r.out)
    type_check(p)

    bad = tmp_path / "bad.yaml"
    bad.write_text("proxyImage: x\nnativeSidecar: sometimes\n")
    r = ctl("inject", "--config", str(bad), stdin=json.dumps(pod))
    assert r.rc == 2 and f"{bad}:2: nativeSidecar must be true or false" in r.err, r
    r = ctl("inject", stdin="a: [1,\n")
    assert r.rc == 2 and "<stdin>:" in r.err, r
    pod["metadata"]["annotations"] = {"config.remora.dev/skip-inbound-ports": "http"}
    r = ctl("inject", stdin=json.dumps(pod))
    assert r.rc == 1 and r.out == "" and '"http" is not a port' in r.err, r

    # remora-control refuses a bad --injector-config with FILE:LINE
    cp = subprocess.run([CONTROL_BIN, "--state-dir", str(tmp_path / "st"), "--listen", f"127.0.0.1:{free_port()}",
                         "--webhook-listen", f"127.0.0.1:{free_port()}", "--injector-config", str(bad)],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 2 and f"{bad}:2:" in cp.stderr, cp.stderr


def test_webhook_uses_injector_config(tmp_path):
    cfg = tmp_path / "injector.yaml"
    cfg.write_text("nativeSidecar: false\nlogLevel: debug\nopaquePorts: \"5432, 6379\"\n")
    port = free_port()
    cp = ControlPlane(str(tmp_path), extra=["--webhook-listen", f"127.0.0.1:{port}", "--injector-config", str(cfg)])
    cp.start()
    try:
        wait_port("127.0.0.1", port, 10, cp.proc)
        wh = Webhook(port, cp.trust_anchor)  # default DNS name
        try:
            resp = wh.review(APP_POD)
        finally:
            wh.close()
        pod = kubectl_patch(tmp_path, APP_POD, json.loads(base64.b64decode(resp["patch"])))
        proxy = pod["spec"]["containers"][0]
        assert proxy["name"] == "remora-proxy" and "lifecycle" in proxy
        assert env(proxy)["REMORA_LOG_LEVEL"] == "debug"
        assert env(proxy)["REMORA_OPAQUE_PORTS"] == "5432,6379"
        assert env(proxy)["REMORA_OUTBOUND_GRACE_MS"] == "10000"
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["remora-init", "migrate"]
    finally:
        assert cp.stop() == 0, cp.log()


def test_chart_injector_config_is_accepted(tmp_path):
    """The chart's ConfigMap remora-injector (helm template) is a configuration remoractl and remora-control take."""
    chart = os.path.join(REPO, "helm", "remora")
    helm = os.path.join(KUBE, "bin", "helm")
    if not os.path.exists(os.path.join(chart, "templates", "injector-configmap.yaml")):
        pytest.skip("the chart has no injector ConfigMap")
    r = subprocess.run([helm, "template", "r", chart, "-n", "remora-system", "--show-only",
                        "templates/injector-configmap.yaml", "--set", "proxy.nativeSidecar=false"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_load(r.stdout)["data"]["config.yaml"])
    out = ctl("inject", "--config", str(cfg), stdin=json.dumps(APP_POD))
    assert out.rc == 0, out
    proxy = json.loads(out.out)["spec"]["containers"][0]
    assert proxy["name"] == "remora-proxy" and "REMORA_OUTBOUND_GRACE_MS" in env(proxy)
    cp = ControlPlane(str(tmp_path), extra=["--webhook-listen", f"127.0.0.1:{free_port()}", "--injector-config", str(cfg)])
    cp.start()
    assert cp.stop() == 0, cp.log()


def test_webhook_certificate_renewed_without_restart(tmp_path):
    """With 10 s certificates the webhook re-issues its own at half-life; open connections keep theirs."""
    import time
    port = free_port()
    cp = ControlPlane(str(tmp_path), extra=["--webhook-listen", f"127.0.0.1:{port}", "--cert-lifetime", "10s"])
    cp.start()
    try:
        wait_port("127.0.0.1", port, 10, cp.proc)
        old = Webhook(port, cp.trust_anchor)
        first = old.sock.getpeercert(binary_form=True)
        deadline = time.monotonic() + 15
        while True:
            wh = Webhook(port, cp.trust_anchor)
            cert = wh.sock.getpeercert(binary_form=True)
            status = wh.request("GET", "/healthz", content_type=None)[0]
            wh.close()
            assert status == 200
            if cert != first:
                break
            assert time.monotonic() < deadline, "the certificate was not renewed"
            time.sleep(0.5)
        assert old.review(APP_POD)["patchType"] == "JSONPatch"  # the old connection still serves
        old.close()
        assert cp.alive()
    finally:
        assert cp.stop() == 0, cp.log()


def test_rewritten_probes_answered_by_the_agent(tmp_path, h1_origin):
    """What the kubelet probes after injection (the rewritten path on port 15020's server) is answered by a real
    remora-agent started with the injected REMORA_APP_PROBES: the original probe, performed against the app."""
    import signal
    import support
    from procutil import Proc, clean_env
    if support.is_standin() or not os.path.exists(support.AGENT):
        pytest.skip("needs remora-agent")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
           "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": h1_origin.port}],
                                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                                    "livenessProbe": {"httpGet": {"path": "/live", "port": h1_origin.port,
                                                                  "httpHeaders": [{"name": "x-status", "value": "500"}]}},
                                    "startupProbe": {"tcpSocket": {"port": h1_origin.port}}}]}}
    r = ctl("inject", stdin=json.dumps(pod))
    assert r.rc == 0, r
    out = json.loads(r.out)
    app = out["spec"]["containers"][0]
    proxy = out["spec"]["initContainers"][1]
    probes = env(proxy)["REMORA_APP_PROBES"]
    health, admin = free_port(), free_port()
    proc = Proc([support.AGENT, "--listen", f"127.0.0.1:{free_port()}", "--upstream", h1_origin.target,
                 "--health", f"127.0.0.1:{health}", "--admin", f"127.0.0.1:{admin}", "--workers", "1"],
                str(tmp_path / "agent.log"), env=clean_env({"REMORA_APP_PROBES": probes}))
    p = support.Proxy(proc, 0, kind="agent", health_port=health, admin_port=admin)
    try:
        support.wait_ready(p, 10)
        ready = app["readinessProbe"]["httpGet"]
        assert ready["port"] == 15020
        assert p.health(ready["path"])[0] == 200
        live = app["livenessProbe"]["httpGet"]
        assert p.health(live["path"])[0] == 500  # the app's answer, through the agent
        assert "tcpSocket" in app["startupProbe"]
    finally:
        proc.stop(signal.SIGTERM)


def test_webhook_connection_bound(control):
    """At most 128 connections: more are closed at once; once some close, new ones are served again."""
    import time
    held = []
    try:
        for _ in range(128):
            held.append(socket.create_connection(("127.0.0.1", control.webhook_port), timeout=5))
        # the webhook's thread accepts them in turn: wait until one more is closed on arrival
        deadline = time.monotonic() + 10
        while True:
            extra = socket.create_connection(("127.0.0.1", control.webhook_port), timeout=5)
            extra.settimeout(2)
            try:
                closed = extra.recv(1) == b""
            except socket.timeout:
                closed = False
            except ConnectionResetError:
                closed = True
            extra.close()
            if closed:
                break
            assert time.monotonic() < deadline, "a connection over the bound was not closed"
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            wh = Webhook(control.webhook_port, control.trust_anchor)
            break
        except (ConnectionError, ssl.SSLError, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    try:
        assert wh.review(APP_POD)["patchType"] == "JSONPatch"
    finally:
        wh.close()
    assert "connections open: closing a new one" in control.log()
