#!/usr/bin/python3
"""Regenerates the seed inputs of the fuzz corpora added for issue 12 (corpus/<target>/seed_*) from examples/ and
the shapes the integration tests use. Inputs found by fuzzing (regress_*) are kept by hand, not generated here.

    /usr/bin/python3 tests/fuzz/make_seeds.py BUILD_DIR   # BUILD_DIR holds tests/fuzz/fuzz_gen_snapshot
"""

import base64
import copy
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EX = os.path.join(ROOT, "examples")


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


APP_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                 "annotations": {"config.remora.dev/skip-outbound-ports": "3306"}},
    "spec": {
        "serviceAccountName": "web",
        "initContainers": [{"name": "migrate", "image": "example/migrate:1"}],
        "containers": [
            {"name": "web", "image": "example/web:1", "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
             "livenessProbe": {"tcpSocket": {"port": 8080}}},
            {"name": "api", "image": "example/api:1", "livenessProbe": {"grpc": {"port": 9090}, "timeoutSeconds": 3}},
        ],
    },
}
PLAIN_POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
HOSTNET_POD = {"metadata": {"name": "h"}, "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "i"}]}}
OPTOUT_POD = {"metadata": {"name": "o", "annotations": {"remora.dev/inject": "false"}},
              "spec": {"containers": [{"name": "c", "image": "i"}]}}
OVERRIDE_POD = {"metadata": {"name": "v", "annotations": {"config.remora.dev/opaque-ports": "5432,6379",
                                                          "config.remora.dev/skip-inbound-ports": "9090",
                                                          "config.remora.dev/proxy-uid": "1337"}},
                "spec": {"containers": [{"name": "c", "image": "i",
                                         "startupProbe": {"httpGet": {"path": "/s", "port": 80, "scheme": "HTTP",
                                                                      "httpHeaders": [{"name": "a", "value": "b"}]}}}]}}


def review(pod, operation="CREATE"):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": pod["metadata"].get("namespace", "default"), "operation": operation, "object": pod}}


def webhook():
    put("webhook", "app_pod", json.dumps(review(APP_POD)))
    put("webhook", "plain_pod", json.dumps(review(PLAIN_POD)))
    put("webhook", "host_network", json.dumps(review(HOSTNET_POD)))
    put("webhook", "opt_out", json.dumps(review(OPTOUT_POD)))
    put("webhook", "override", json.dumps(review(OVERRIDE_POD)))
    put("webhook", "update", json.dumps(review(PLAIN_POD, "UPDATE")))
    r = review(PLAIN_POD)
    del r["request"]["object"]
    put("webhook", "no_object", json.dumps(r))
    put("webhook", "not_json", "{\"apiVersion\": ")


def inject():
    for name, pod in (("app_pod", APP_POD), ("plain_pod", PLAIN_POD), ("host_network", HOSTNET_POD),
                      ("opt_out", OPTOUT_POD), ("override", OVERRIDE_POD)):
        put("inject", name, json.dumps(pod))
    template = {"metadata": {"labels": {"app": "t"}}, "spec": copy.deepcopy(APP_POD["spec"])}
    put("inject", "template", json.dumps(template))
    doc = {"a": {"b": [1, 2, 3]}, "c~d": {"e/f": "x"}}
    patch = [{"op": "add", "path": "/a/b/-", "value": 4}, {"op": "remove", "path": "/a/b/0"},
             {"op": "replace", "path": "/c~0d/e~1f", "value": "y"}, {"op": "move", "from": "/a/b", "path": "/g"},
             {"op": "copy", "from": "/g", "path": "/h"}, {"op": "test", "path": "/h/0", "value": 2}]
    put("inject", "patch_all_ops", json.dumps([doc, patch]))
    put("inject", "patch_bad_pointer", json.dumps([doc, [{"op": "remove", "path": "/a/b/01"}, {"op": "add", "path": "a"}]]))


def manifest():
    put("manifest", "pod_yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\n"
        "spec:\n  containers:\n  - name: web\n    image: example/web:1\n    ports:\n    - containerPort: 8080\n"
        "    args: [\"--flag\", 'yes', \"1.0\", null, ~, true]\n")
    put("manifest", "deployment_yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
        "  replicas: 2\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n"
        "      - {name: c, image: i, env: [{name: X, value: \"0x10\"}, {name: Y, value: \"on\"}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec: {ports: [{port: 80}]}\n---\n")
    put("manifest", "list_json", json.dumps({"apiVersion": "v1", "kind": "List", "items": [APP_POD, PLAIN_POD]}, indent=2))
    put("manifest", "stream_json", json.dumps(APP_POD) + "\n" + json.dumps(HOSTNET_POD))
    put("manifest", "anchors_yaml", "a: &x {k: [1, 2.5, -3, 'q']}\nb: *x\nc: |\n  multi\n  line\nd: >-\n  folded\n")
    put("manifest", "scalars_yaml", "- 1e3\n- .inf\n- 0o17\n- \"\\u00e9\"\n- 2026-01-01\n- 12345678901234567890\n- ''\n")


def copy_example(target, path, name):
    with open(path, "rb") as f:
        put(target, name, f.read())


def documents():
    for n in ("mesh.yaml", "mesh-policy.yaml", "mesh-telemetry.yaml", "mesh-netns.yaml"):
        copy_example("document", os.path.join(EX, n), n.replace(".yaml", "").replace("-", "_"))
    copy_example("document", os.path.join(EX, "compose", "policy", "mesh.yaml"), "compose_mesh")
    put("document", "errors", "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: Bad_Name}\n"
        "spec: {ports: [{port: 70000}]}\n---\nkind: Nope\n---\n[1, 2]\n---\nkey: [unclosed\n")


def bootstrap():
    for n in ("agent.yaml", "agent-backend.yaml", "agent-policy.yaml", "agent-tls.yaml", "demo.yaml"):
        copy_example("bootstrap", os.path.join(EX, n), n.replace(".yaml", "").replace("-", "_"))


def snapshot(build):
    gen = os.path.join(build, "tests", "fuzz", "fuzz_gen_snapshot")
    with tempfile.TemporaryDirectory() as tmp:
        telemetry = os.path.join(tmp, "telemetry.yaml")
        with open(os.path.join(EX, "mesh-telemetry.yaml")) as f, open(telemetry, "w") as t:
            t.write(f.read().replace("OTLP_HTTP_PORT", "4318").replace("OTLP_GRPC_PORT", "4317")
                    .replace("ACCESS_LOG_PATH", "/tmp/access.log"))
        sets = {"mesh": ["mesh.yaml"], "mesh_policy": ["mesh.yaml", "mesh-policy.yaml"], "mesh_telemetry": ["mesh.yaml", telemetry],
                "mesh_netns": ["mesh-netns.yaml"]}
        for name, files in sets.items():
            out = os.path.join(tmp, name)
            r = subprocess.run([gen, out] + [os.path.join(EX, f) for f in files], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"snapshot {name}: {r.stderr.strip()}", file=sys.stderr)
                continue
            with open(out, "rb") as f:
                put("snapshot", name, f.read())
        out = os.path.join(tmp, "compose")
        if subprocess.run([gen, out, os.path.join(EX, "compose", "policy", "mesh.yaml")]).returncode == 0:
            with open(out, "rb") as f:
                put("snapshot", "compose", f.read())


def grpc_timeout():
    for i, v in enumerate(["1S", "100m", "99999999H", "0u", "1n", "12345678M", "00000001u", "123456789m", "1s", " 1S", "-1S", ""]):
        put("grpc_timeout", f"{i:02d}", v)


def app_probes():
    probes = {"/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP",
                                                     "httpHeaders": [{"name": "X", "value": "y"}]}, "timeoutSeconds": 2},
              "/app-health/api/livez": {"grpc": {"port": 9090, "service": ""}},
              "/app-health/web/startupz": {"httpGet": {"path": "/", "port": "8080"}},
              "/app-health/tls/readyz": {"httpGet": {"path": "/", "port": 443, "scheme": "HTTPS"}}}
    put("app_probes", "all", json.dumps(probes))
    put("app_probes", "bad_port", '{"/app-health/x/readyz": {"httpGet": {"port": 0}}}')
    put("app_probes", "empty", "{}")
    put("app_probes", "not_object", "[1]")


def csr():
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "k.pem")
        variants = {"p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                    "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
                    "ed25519": ["-newkey", "ed25519"]}
        for name, args in variants.items():
            out = os.path.join(tmp, name + ".der")
            subprocess.run(["openssl", "req", "-new", "-nodes", "-keyout", key, "-subj", "/O=remora", "-outform", "DER",
                            "-out", out] + args, check=True, capture_output=True)
            with open(out, "rb") as f:
                data = f.read()
            put("csr", name, data)
            if name == "p256":
                bad = bytearray(data)
                bad[-1] ^= 1  # the self-signature no longer verifies
                put("csr", "p256_bad_signature", bytes(bad))
                put("csr", "p256_trailing", data + b"\0")


def clienthello():
    for name, alpn in (("mesh", ["remora.mesh/1", "h2"]), ("h2", ["h2", "http/1.1"]), ("no_alpn", None)):
        for tls in ("tls12", "tls13"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if tls == "tls13":
                ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            else:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            if alpn:
                ctx.set_alpn_protocols(alpn)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            s = ctx.wrap_bio(inc, out, server_hostname="svc.example")
            try:
                s.do_handshake()
            except ssl.SSLWantReadError:
                pass
            put("clienthello", f"{name}_{tls}", out.read())


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    webhook()
    inject()
    manifest()
    documents()
    bootstrap()
    snapshot(build)
    grpc_timeout()
    app_probes()
    csr()
    clienthello()


if __name__ == "__main__":
    main()
