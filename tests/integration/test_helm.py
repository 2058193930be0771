"""The Helm chart (helm/remora) and the offline checks of everything Kubernetes Remora ships.

- `helm lint --strict` with the default values and with helm/remora/ci/external-issuer-values.yaml;
- `helm template` with both, asserting that the rendered objects say what the values say;
- values.schema.json rejections (wrong enum, type, pattern, unknown key) with helm's schema error;
- every rendered manifest and every CRD type-checked with kubernetes-models
  (tests/tools/kube/check_manifests.js), which must also fail on broken manifests;
- the CRDs are what tests/tools/kube/gen_crds.js generates, and the remora.dev documents of examples/
  and docs/control-plane.md validate against their openAPIV3Schema, while wrong documents fail both
  the CRD schema and the real control plane (`remoractl apply --dry-run`);
- the identity material the chart generates (or takes from values) is accepted by the real
  remora-control, and remoractl authenticates with the admin token it generates.

Tools: tests/tools/kube/bin/helm (scripts/install-deps.sh), node, tests/tools/kube/node_modules.
"""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import yaml

from control_support import CONTROL_BIN, ControlPlane, ctl, throwaway_ca
from procutil import Proc, free_port, wait_port
from support import http_get

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(REPO, "helm", "remora")
CI_VALUES = os.path.join(CHART, "ci", "external-issuer-values.yaml")
KUBE = os.path.join(REPO, "tests", "tools", "kube")
HELM = os.path.join(KUBE, "bin", "helm")
CHECK = os.path.join(KUBE, "check_manifests.js")
GEN = os.path.join(KUBE, "gen_crds.js")
NS = "remora-system"

CRD_PLURALS = ["services", "httproutes", "grpcroutes", "faultinjections", "backendtrafficpolicies", "ratelimitpolicies",
               "telemetries", "authorizationpolicies", "meshtlses", "egresspolicies"]


def _node():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node not found: run scripts/install-deps.sh")
    return node


@pytest.fixture(scope="module", autouse=True)
def tools():
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} not found: run scripts/install-deps.sh")
    for m in ("kubernetes-models", "yaml", "ajv", "ajv-formats"):
        if not os.path.isdir(os.path.join(KUBE, "node_modules", m)):
            pytest.fail(f"tests/tools/kube/node_modules/{m} missing: run scripts/install-deps.sh")


def run(argv, stdin=None, timeout=60):
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def helm(*args, timeout=60):
    return run([HELM, *args], timeout=timeout)


def template(*args, crds=False, namespace=NS):
    argv = ["template", "remora", CHART, "--namespace", namespace, *args]
    if crds:
        argv.append("--include-crds")
    r = helm(*argv)
    assert r.returncode == 0, r.stderr
    return r.stdout, [d for d in yaml.safe_load_all(r.stdout) if d]


def check(text, *args):
    return run([_node(), CHECK, *args, "-"], stdin=text)


def find(docs, kind, name=None):
    out = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return out


def one(docs, kind, name=None):
    out = find(docs, kind, name)
    assert len(out) == 1, f"{len(out)} {kind} {name or ''} rendered"
    return out[0]


def args_of(deploy):
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    return c["args"]


def injector_config(docs):
    return yaml.safe_load(one(docs, "ConfigMap", "remora-injector")["data"]["config.yaml"])


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


# ----------------------------------------------------------------------------------- lint, CRDs


def test_chart_version_is_the_project_version():
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*remora\b[^)]*\bVERSION\s+([0-9.]+)", f.read(), re.I)
    if m is None:
        with open(os.path.join(REPO, "agent", "src", "main.c")) as f:
            m = re.search(r'#define REMORA_VERSION "([^"]+)"', f.read())
    assert m is not None, "no project version found"
    assert chart["apiVersion"] == "v2" and chart["name"] == "remora"
    assert chart["version"] == m.group(1) and chart["appVersion"] == m.group(1)


def test_crds_are_generated_and_current():
    r = run([_node(), GEN, "--check"])
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(os.path.join(CHART, "crds")))
    assert names == sorted(f"{p}.remora.dev.yaml" for p in CRD_PLURALS)


@pytest.mark.parametrize("values", [None, CI_VALUES], ids=["default", "ci-values"])
def test_lint_strict(values):
    argv = ["lint", "--strict", CHART, "--namespace", NS]
    if values:
        argv += ["-f", values]
    r = helm(*argv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout


@pytest.mark.parametrize("values", [None, CI_VALUES], ids=["default", "ci-values"])
def test_every_rendered_manifest_and_crd_type_checks(values):
    text, docs = template(*(["-f", values] if values else []), crds=True)
    r = check(text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all valid" in r.stdout
    crds = find(docs, "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == sorted(f"{p}.remora.dev" for p in CRD_PLURALS)
    for c in crds:
        assert c["spec"]["scope"] == "Namespaced" and c["spec"]["group"] == "remora.dev"
        v = c["spec"]["versions"][0]
        assert v["name"] == "v1" and v["served"] and v["storage"] and v["subresources"] == {"status": {}}
        assert [col["name"] for col in v["additionalPrinterColumns"]][-2:] == ["Accepted", "Age"]
        schema = v["schema"]["openAPIV3Schema"]
        assert schema["required"] == ["spec"]
        cond = schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
        assert set(cond) == {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"}
    svc = one(crds, "CustomResourceDefinition", "services.remora.dev")
    assert svc["spec"]["names"]["kind"] == "Service" and svc["spec"]["names"]["shortNames"] == ["rsvc"]
    spec = svc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["protocol"]["enum"] == ["grpc", "http2", "http1", "tcp"] and spec["required"] == ["protocol"]


# ------------------------------------------------------------------------------------ rendering


def test_default_render():
    _, docs = template()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Secret",
                            "Secret",
                            "ConfigMap", "ConfigMap", "MutatingWebhookConfiguration", "MeshTLS"])
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"):
            assert d["metadata"]["namespace"] == NS, d["metadata"]

    dep = one(docs, "Deployment", "remora-control")
    assert dep["spec"]["replicas"] == 1
    assert not find(docs, "PodDisruptionBudget")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"]["remora.dev/inject"] == "disabled"
    assert pod["metadata"]["labels"]["remora.dev/inject"] == "disabled"
    ps = pod["spec"]
    assert ps["serviceAccountName"] == "remora-control"
    assert ps["securityContext"]["runAsNonRoot"] is True and ps["securityContext"]["runAsUser"] == 2103
    c = ps["containers"][0]
    assert c["image"] == "ghcr.io/remora-mesh/control:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 2103 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 15010, "webhook": 15017, "metrics": 15014}
    assert {k: v for k, v in pod["metadata"]["annotations"].items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "15014", "prometheus.io/path": "/metrics"}
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    assert args_of(dep) == [
        "--kubernetes", "--listen=0.0.0.0:15010", "--state-dir=/var/run/remora/state", "--trust-domain=remora.local",
        "--trust-anchor=/var/run/remora/trust/trust-anchor.pem", "--issuer-cert=/var/run/remora/identity/tls.crt",
        "--issuer-key=/var/run/remora/identity/tls.key", "--cert-lifetime=24h",
        "--admin-token-file=/var/run/remora/admin/token", "--webhook-listen=0.0.0.0:15017",
        "--webhook-dns=remora-control.remora-system.svc", "--webhook-dns=remora-control.remora-system.svc.cluster.local",
        "--injector-config=/etc/remora/injector/config.yaml", "--log-level=info", "--metrics-listen=0.0.0.0:15014"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in ps["volumes"]}
    assert vols[mounts["/var/run/remora/state"]] == {"name": "state", "emptyDir": {}}
    assert vols[mounts["/var/run/remora/identity"]]["secret"]["secretName"] == "remora-identity"
    assert vols[mounts["/var/run/remora/admin"]]["secret"]["secretName"] == "remora-admin-token"
    assert vols[mounts["/var/run/remora/trust"]]["configMap"]["name"] == "remora-trust-anchor"
    assert vols[mounts["/etc/remora/injector"]]["configMap"]["name"] == "remora-injector"
    for k in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert k not in ps

    svc = one(docs, "Service", "remora-control")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        "grpc": (15010, "grpc"), "https-webhook": (443, "webhook"), "http-metrics": (15014, "metrics")}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())

    # the generated CA: one self-signed anchor that is the issuer too, the same everywhere
    sec = one(docs, "Secret", "remora-identity")
    assert sec["type"] == "kubernetes.io/tls"
    anchor = unb64(sec["data"]["ca.crt"])
    assert anchor.startswith("-----BEGIN CERTIFICATE-----") and unb64(sec["data"]["tls.crt"]) == anchor
    assert "PRIVATE KEY-----" in unb64(sec["data"]["tls.key"])
    cm = one(docs, "ConfigMap", "remora-trust-anchor")
    assert cm["data"]["trust-anchor.pem"].strip() == anchor.strip()
    token = unb64(one(docs, "Secret", "remora-admin-token")["data"]["token"])
    assert re.fullmatch(r"rma1\.[0-9a-f]{64}", token), token

    assert injector_config(docs) == {
        "proxyImage": "ghcr.io/remora-mesh/proxy:0.1.0", "proxyImagePullPolicy": "IfNotPresent", "initImage": "",
        "controlAddress": "remora-control.remora-system.svc:15010", "proxyUID": 2102, "nativeSidecar": True,
        "outboundGraceMs": 10000, "logLevel": "info", "opaquePorts": "", "skipInboundPorts": "", "skipOutboundPorts": "",
        "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}, "limits": {"memory": "256Mi"}}}

    mwc = one(docs, "MutatingWebhookConfiguration")
    hooks = {w["name"]: w for w in mwc["webhooks"]}
    assert sorted(hooks) == ["namespace.inject.remora.dev", "object.inject.remora.dev"]
    for w in hooks.values():
        assert w["clientConfig"]["service"] == {"name": "remora-control", "namespace": NS, "path": "/inject", "port": 443}
        assert unb64(w["clientConfig"]["caBundle"]).strip() == anchor.strip()
        assert w["failurePolicy"] == "Fail" and w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"]
        assert w["timeoutSeconds"] == 10 and w["reinvocationPolicy"] == "IfNeeded"
        assert w["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                               "scope": "Namespaced"}]
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NS]} \
            in w["namespaceSelector"]["matchExpressions"]
    ns_hook = hooks["namespace.inject.remora.dev"]
    assert {"key": "remora.dev/inject", "operator": "In", "values": ["enabled"]} \
        in ns_hook["namespaceSelector"]["matchExpressions"]
    assert ns_hook["objectSelector"] == {"matchExpressions": [{"key": "remora.dev/inject", "operator": "NotIn",
                                                               "values": ["disabled"]}]}
    assert hooks["object.inject.remora.dev"]["objectSelector"] == {"matchLabels": {"remora.dev/inject": "enabled"}}

    assert one(docs, "MeshTLS", "default")["spec"] == {"mode": "PERMISSIVE"}
    assert not find(docs, "Telemetry")

    role = one(docs, "ClusterRole")
    rules = [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]]

    def allowed(group, resource, verb):
        return any(group in g and resource in res and verb in v for g, res, v in rules)
    for res in ("services", "pods", "namespaces"):
        for verb in ("get", "list", "watch"):
            assert allowed("", res, verb)
    assert allowed("discovery.k8s.io", "endpointslices", "watch")
    for p in CRD_PLURALS:
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert allowed("remora.dev", p, verb) and allowed("remora.dev", p + "/status", verb)
    for verb in ("get", "create", "update"):
        assert allowed("", "configmaps", verb)
    assert not allowed("", "configmaps", "delete") and not allowed("", "secrets", "get")
    assert allowed("authentication.k8s.io", "tokenreviews", "create")
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remora-control", "namespace": NS}]


def test_non_default_render():
    _, docs = template("-f", CI_VALUES)
    ci = yaml.safe_load(open(CI_VALUES))
    dep = one(docs, "Deployment", "remora-control")
    assert dep["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget", "remora-control")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"] == dep["spec"]["selector"]
    ps = dep["spec"]["template"]["spec"]
    c = ps["containers"][0]
    assert c["image"] == "registry.example.com/remora/control:0.1.0-rc1" and c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    a = args_of(dep)
    for want in ("--log-level=debug", "--trust-domain=prod.example.com", "--cert-lifetime=12h"):
        assert want in a
    assert ps["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert ps["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert ps["tolerations"] == ci["tolerations"] and ps["affinity"] == ci["affinity"]
    meta = dep["spec"]["template"]["metadata"]
    assert meta["annotations"]["example.com/team"] == "mesh" and meta["annotations"]["remora.dev/inject"] == "disabled"
    assert meta["labels"]["example.com/tier"] == "control"

    # an external issuer: no Secret rendered, the pods mount the one named, the anchor comes from values
    assert not find(docs, "Secret", "remora-identity")
    vols = {v["name"]: v for v in ps["volumes"]}
    assert vols["identity"]["secret"]["secretName"] == "remora-issuer-from-cert-manager"
    anchor = ci["identity"]["trustAnchorPEM"]
    assert one(docs, "ConfigMap", "remora-trust-anchor")["data"]["trust-anchor.pem"].strip() == anchor.strip()

    hooks = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert [w["name"] for w in hooks] == ["namespace.inject.remora.dev"]
    w = hooks[0]
    assert w["failurePolicy"] == "Ignore" and w["timeoutSeconds"] == 5 and w["reinvocationPolicy"] == "Never"
    assert unb64(w["clientConfig"]["caBundle"]).strip() == anchor.strip()
    assert w["namespaceSelector"]["matchLabels"] == {"mesh": "remora"}
    assert w["namespaceSelector"]["matchExpressions"] == [
        {"key": "remora.dev/inject", "operator": "NotIn", "values": ["disabled"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NS]}]
    assert w["objectSelector"] == {"matchExpressions": [{"key": "example.com/no-mesh", "operator": "DoesNotExist"}]}

    assert injector_config(docs) == {
        "proxyImage": "registry.example.com/remora/proxy:0.1.0-rc1", "proxyImagePullPolicy": "Always",
        "initImage": "registry.example.com/remora/proxy-init:0.1.0-rc1",
        "controlAddress": "remora-control.remora-system.svc:15010", "proxyUID": 2202, "nativeSidecar": False,
        "outboundGraceMs": 15000, "logLevel": "debug", "opaquePorts": "25,3306,5432-5433", "skipInboundPorts": "9901",
        "skipOutboundPorts": "443,8443",
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}}

    assert one(docs, "MeshTLS", "default")["spec"] == {"mode": "STRICT"}
    tel = one(docs, "Telemetry", "default")
    assert tel["metadata"]["namespace"] == NS
    assert tel["spec"] == {"tracing": {"otlp": {"endpoint": "10.0.0.7:4318", "protocol": "http"}, "samplingPercent": 2.5}}


def test_set_values_render_as_given():
    """Values given with --set (integers, not floats) and a few single changes."""
    _, docs = template("--set", "proxy.outboundGraceMs=3600000", "--set", "controlPlane.replicas=2",
                       "--set", "proxy.image.tag=9.9.9", "--set", "webhook.timeoutSeconds=30")
    cfg = injector_config(docs)
    assert cfg["outboundGraceMs"] == 3600000 and cfg["proxyImage"] == "ghcr.io/remora-mesh/proxy:9.9.9"
    assert one(docs, "Deployment")["spec"]["replicas"] == 2 and find(docs, "PodDisruptionBudget")
    assert all(w["timeoutSeconds"] == 30 for w in one(docs, "MutatingWebhookConfiguration")["webhooks"])
    _, docs = template("-f", CI_VALUES, "--set", "proxy.outboundGraceMs=1000000",
                       "--set-json", "tracing.samplingPercent=0.0001")
    assert injector_config(docs)["outboundGraceMs"] == 1000000
    assert one(docs, "Telemetry")["spec"]["tracing"]["samplingPercent"] == 0.0001


def test_an_upgrade_keeps_the_generated_ca_and_admin_token(tmp_path):
    """Without a cluster, lookup finds nothing: two renders give two CAs. Against an API server (the test
    server, through a kubeconfig: `helm template --dry-run=server` looks up as `helm upgrade` does) that
    holds the Secrets of the first render, the second render keeps them, and the trust-anchor ConfigMap
    and the webhook's caBundle follow the kept anchor."""
    from kube_api import KubeApiServer
    _, first = template()
    _, other = template()
    ca = [one(d, "Secret", "remora-identity")["data"]["ca.crt"] for d in (first, other)]
    assert ca[0] != ca[1]
    assert one(first, "Secret", "remora-admin-token")["data"] != one(other, "Secret", "remora-admin-token")["data"]

    srv = KubeApiServer(tls=True, workdir=str(tmp_path / "api"))
    srv.start()
    try:
        for d in first:
            if d["kind"] in ("Secret", "ConfigMap"):
                srv.put(d)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": srv.url, "certificate-authority": srv.ca_file}}],
            "users": [{"name": "test", "user": {"token": srv.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), HELM_CACHE_HOME=str(tmp_path / "helm-cache"),
                   HELM_CONFIG_HOME=str(tmp_path / "helm-config"), HELM_DATA_HOME=str(tmp_path / "helm-data"))
        r = subprocess.run([HELM, "template", "remora", CHART, "--namespace", NS, "--dry-run=server",
                            "--set", "controlPlane.replicas=2"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert ("GET", f"/api/v1/namespaces/{NS}/secrets/remora-identity") in srv.requests
    finally:
        srv.stop()
    second = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert one(second, "Deployment")["spec"]["replicas"] == 2
    for name in ("remora-identity", "remora-admin-token"):
        assert one(second, "Secret", name)["data"] == one(first, "Secret", name)["data"], name
    anchor = unb64(one(first, "Secret", "remora-identity")["data"]["ca.crt"])
    assert one(second, "ConfigMap", "remora-trust-anchor")["data"]["trust-anchor.pem"].strip() == anchor.strip()
    for w in one(second, "MutatingWebhookConfiguration")["webhooks"]:
        assert unb64(w["clientConfig"]["caBundle"]).strip() == anchor.strip()


def test_notes(tmp_path):
    """NOTES.txt (rendered only by install, which needs a cluster): rendered here from a copy of the chart
    in which it is an ordinary template."""
    chart = str(tmp_path / "remora")
    shutil.copytree(CHART, chart)
    with open(os.path.join(chart, "templates", "NOTES.txt")) as f:
        notes = f.read()
    with open(os.path.join(chart, "templates", "notes-as-yaml.yaml"), "w") as f:
        f.write("notes: |\n" + "".join("  " + ln + "\n" for ln in notes.splitlines()))
    r = helm("template", "remora", chart, "--namespace", NS, "--show-only", "templates/notes-as-yaml.yaml",
             "--set", "controlPlane.replicas=2", "--set", "tracing.collector=10.0.0.7:4317")
    assert r.returncode == 0, r.stderr
    text = yaml.safe_load(r.stdout)["notes"]
    assert "remora-control (2 replicas)" in text and "MeshTLS PERMISSIVE, tracing to 10.0.0.7:4317" in text
    assert "kubectl label namespace NAMESPACE remora.dev/inject=enabled" in text
    assert "remoractl --ca trust-anchor.pem --admin-token admin.token status" in text


# --------------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("setting,field", [
    ("meshTLS.mode=strict", "meshTLS.mode"),
    ("controlPlane.replicas=three", "controlPlane.replicas"),
    ("controlPlane.replicas=0", "controlPlane.replicas"),
    ("webhook.failurePolicy=Sometimes", "webhook.failurePolicy"),
    ("webhook.timeoutSeconds=31", "webhook.timeoutSeconds"),
    ("proxy.opaquePorts=mysql", "proxy.opaquePorts"),
    ("proxy.logLevel=verbose", "proxy.logLevel"),
    ("proxy.nativeSidecar=maybe", "proxy.nativeSidecar"),
    ("proxy.image.pullPolicy=Sometimes", "proxy.image.pullPolicy"),
    ("tracing.collector=otel.example.com:4317", "tracing.collector"),
    ("tracing.samplingPercent=101", "tracing.samplingPercent"),
    ("identity.certLifetime=1 day", "identity.certLifetime"),
    ("proxy.resourcs.requests.cpu=1", "proxy"),
    ("replicas=3", "(root)"),
])
def test_schema_rejects(setting, field):
    r = helm("template", "remora", CHART, "--namespace", NS, "--set", setting)
    assert r.returncode != 0, r.stdout[:500]
    assert "values don't meet the specifications of the schema" in r.stderr, r.stderr
    assert f"- {field}" in r.stderr, r.stderr


def test_template_errors_say_what_to_fix(tmp_path):
    r = helm("template", "remora", CHART, "--namespace", "default")
    assert r.returncode != 0 and "remora must be installed in the namespace remora-system" in r.stderr
    r = helm("template", "remora", CHART, "--namespace", NS, "--set", "identity.issuer.existingSecret=issuer")
    assert r.returncode != 0 and "identity.trustAnchorPEM is required" in r.stderr
    cert, key = throwaway_ca(str(tmp_path))
    r = helm("template", "remora", CHART, "--namespace", NS, "--set-file", f"identity.trustAnchorPEM={cert}",
             "--set-file", f"identity.issuer.certPEM={cert}")
    assert r.returncode != 0 and "must be given together" in r.stderr
    r = helm("template", "remora", CHART, "--namespace", NS, "--set-file", f"identity.trustAnchorPEM={cert}")
    assert r.returncode != 0 and "needs its issuer" in r.stderr


# ------------------------------------------------------------------- the CA works with remora-control


def _issuer(tmp_path):
    """An anchor and an intermediate issuer (pathlen:0) signed by it, made with openssl."""
    d = str(tmp_path)
    anchor, anchor_key = throwaway_ca(d, "anchor")
    key, csr, cert = (os.path.join(d, n) for n in ("issuer.key", "issuer.csr", "issuer.pem"))
    ext = os.path.join(d, "issuer.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=remora issuer", "-keyout", key, "-out", csr], check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", anchor, "-CAkey", anchor_key, "-CAcreateserial",
                    "-days", "2", "-extfile", ext, "-out", cert], check=True, capture_output=True, timeout=30)
    return anchor, cert, key


@pytest.mark.parametrize("source", ["generated", "values"])
def test_rendered_identity_is_accepted_by_remora_control(tmp_path, source):
    extra = []
    if source == "values":
        anchor, cert, key = _issuer(tmp_path)
        extra = ["--set-file", f"identity.trustAnchorPEM={anchor}", "--set-file", f"identity.issuer.certPEM={cert}",
                 "--set-file", f"identity.issuer.keyPEM={key}"]
    _, docs = template(*extra, "--set", "identity.trustDomain=mesh.example.com")
    sec = one(docs, "Secret", "remora-identity")["data"]
    if source == "values":
        assert unb64(sec["tls.crt"]) == open(cert).read() and unb64(sec["tls.key"]) == open(key).read()
        assert unb64(sec["ca.crt"]) == open(anchor).read()
    # the files as the pod sees them: the ConfigMap's anchor, the Secret's issuer, the admin token
    files = {"trust-anchor.pem": one(docs, "ConfigMap", "remora-trust-anchor")["data"]["trust-anchor.pem"],
             "tls.crt": unb64(sec["tls.crt"]), "tls.key": unb64(sec["tls.key"]),
             "token": unb64(one(docs, "Secret", "remora-admin-token")["data"]["token"])}
    for name, text in files.items():
        with open(tmp_path / name, "w") as f:
            f.write(text)
    if source == "generated":
        x = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-text"], capture_output=True,
                           text=True, timeout=30, check=True).stdout
        assert "CA:TRUE" in x and ("prime256v1" in x or "P-256" in x), x
    dep_args = args_of(one(docs, "Deployment"))
    assert "--trust-domain=mesh.example.com" in dep_args
    cp = ControlPlane(str(tmp_path), trust_anchor=str(tmp_path / "trust-anchor.pem"), extra=[
        "--trust-anchor", str(tmp_path / "trust-anchor.pem"), "--issuer-cert", str(tmp_path / "tls.crt"),
        "--issuer-key", str(tmp_path / "tls.key"), "--admin-token-file", str(tmp_path / "token"),
        "--trust-domain", "mesh.example.com", "--cert-lifetime", "24h"])
    cp.start()
    try:
        r = cp.ctl("identity", env={"REMORA_ADMIN_TOKEN_FILE": str(tmp_path / "token")})
        assert r.rc == 0, r
        assert "mesh.example.com" in r.out, r.out
        r = cp.ctl("trust-anchor", env={"REMORA_ADMIN_TOKEN_FILE": str(tmp_path / "token")})
        assert r.rc == 0 and r.out.strip() == files["trust-anchor.pem"].strip(), r
    finally:
        rc = cp.stop()
    assert rc == 0, cp.log()


def _pod_files(docs, root):
    """Writes what the control plane's pod mounts (ConfigMaps, Secrets) under root, at the pod's paths."""
    def data(kind, name):
        return one(docs, kind, name)["data"]
    files = {
        "/var/run/remora/trust/trust-anchor.pem": data("ConfigMap", "remora-trust-anchor")["trust-anchor.pem"],
        "/var/run/remora/identity/tls.crt": unb64(data("Secret", "remora-identity")["tls.crt"]),
        "/var/run/remora/identity/tls.key": unb64(data("Secret", "remora-identity")["tls.key"]),
        "/var/run/remora/admin/token": unb64(data("Secret", "remora-admin-token")["token"]),
        "/etc/remora/injector/config.yaml": data("ConfigMap", "remora-injector")["config.yaml"],
    }
    for path, text in files.items():
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        with open(root + path, "w") as f:
            f.write(text)
    os.makedirs(root + "/var/run/remora/state", exist_ok=True)


def test_the_deployment_runs_the_real_control_plane_against_the_test_api_server(tmp_path):
    """remora-control with the Deployment's own arguments (paths under a temp root, ports on loopback, the
    test API server in place of the in-cluster one) serves remoractl with the chart's identity and admin
    token, answers the webhook with a certificate that verifies against the MutatingWebhookConfiguration's
    caBundle for the Service's DNS name, injects with the chart's injector configuration, and accepts the
    chart's mesh defaults (their status conditions)."""
    from kube_api import KubeApiServer
    _, docs = template("--set", "proxy.image.tag=9.9.9", "--set", "proxy.nativeSidecar=false",
                       "--set", "tracing.collector=10.0.0.7:4317")
    root = str(tmp_path / "root")
    _pod_files(docs, root)
    srv = KubeApiServer(tls=True, workdir=str(tmp_path / "api"), crds=os.path.join(CHART, "crds"))
    srv.start()
    proc = None
    try:
        # what helm would create, where the test server knows the kind (CRs are checked against the CRDs)
        for d in docs:
            if (d["apiVersion"], d["kind"]) in srv.by_kind:
                srv.put(d)
        grpc_port, webhook_port, metrics_port = free_port(), free_port(), free_port()
        argv = []
        for a in args_of(one(docs, "Deployment")):
            a = a.replace("=/", "=" + root + "/")
            a = a.replace("--listen=0.0.0.0:15010", f"--listen=127.0.0.1:{grpc_port}")
            a = a.replace("--webhook-listen=0.0.0.0:15017", f"--webhook-listen=127.0.0.1:{webhook_port}")
            a = a.replace("--metrics-listen=0.0.0.0:15014", f"--metrics-listen=127.0.0.1:{metrics_port}")
            argv.append(a)
        argv += ["--kube-api", srv.url, "--kube-token-file", srv.token_file, "--kube-ca-file", srv.ca_file]
        proc = Proc([CONTROL_BIN] + argv, str(tmp_path / "control.log"))
        wait_port("127.0.0.1", grpc_port, 15, proc)
        wait_port("127.0.0.1", webhook_port, 15, proc)
        # the probes' endpoints: ready once every watched kind is listed
        ready_by = time.monotonic() + 15
        while http_get("127.0.0.1", metrics_port, "/ready")[0] != 200 and time.monotonic() < ready_by:
            time.sleep(0.1)
        assert http_get("127.0.0.1", metrics_port, "/ready")[0] == 200
        assert http_get("127.0.0.1", metrics_port, "/live")[0] == 200

        r = ctl("status", control=f"127.0.0.1:{grpc_port}",
                env={"REMORA_CA_FILE": root + "/var/run/remora/trust/trust-anchor.pem",
                     "REMORA_ADMIN_TOKEN_FILE": root + "/var/run/remora/admin/token"})
        assert r.rc == 0, r

        hooks = one(docs, "MutatingWebhookConfiguration")["webhooks"]
        ctx = ssl.create_default_context(cadata=unb64(hooks[0]["clientConfig"]["caBundle"]))
        sock = socket.create_connection(("127.0.0.1", webhook_port), timeout=10)
        conn = http.client.HTTPSConnection("127.0.0.1", webhook_port, timeout=10)
        conn.sock = ctx.wrap_socket(sock, server_hostname="remora-control.remora-system.svc")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "3b1f", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default",
            "operation": "CREATE", "object": pod}}
        conn.request("POST", hooks[0]["clientConfig"]["service"]["path"], body=json.dumps(review),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["response"]["uid"] == "3b1f" and body["response"]["allowed"] is True, body
        patch = json.loads(base64.b64decode(body["response"]["patch"]))
        added = {}
        for op in patch:
            if op["op"] == "add" and isinstance(op["value"], dict) and "name" in op["value"]:
                added[op["value"]["name"]] = op["value"]
            elif op["op"] == "add" and isinstance(op["value"], list):
                added.update({v["name"]: v for v in op["value"] if isinstance(v, dict) and "name" in v})
        proxy = added.get("remora-proxy")
        assert proxy is not None, patch
        assert proxy["image"] == "ghcr.io/remora-mesh/proxy:9.9.9" and "restartPolicy" not in proxy, proxy
        env = {e["name"]: e.get("value") for e in proxy.get("env", [])}
        assert env.get("REMORA_CONTROL") == "remora-control.remora-system.svc:15010", env
        assert env.get("REMORA_OUTBOUND_GRACE_MS") == "10000", env

        deadline = time.monotonic() + 10
        while True:
            states = {}
            for kind in ("MeshTLS", "Telemetry"):
                obj = srv.get("remora.dev/v1", kind, NS, "default") or {}
                conds = (obj.get("status") or {}).get("conditions") or []
                states[kind] = {c["type"]: c["status"] for c in conds}
            if all(s.get("Accepted") == "True" for s in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(s.get("Accepted") == "True" for s in states.values()), states
    finally:
        rc = proc.stop() if proc is not None else 0
        srv.stop()
        if proc is not None and rc != 0:
            print(proc.log_text()[-4000:])
    assert rc == 0


# ------------------------------------------------------------------------------ check_manifests.js


def test_check_manifests_fails_on_broken_manifests():
    text, docs = template()
    dep = one(docs, "Deployment")
    dep["spec"]["replicas"] = "3"
    del dep["spec"]["template"]["spec"]["containers"][0]["name"]
    svc = one(docs, "Service", "remora-control")
    svc["spec"]["ports"][0]["port"] = "grpc"
    r = check(yaml.safe_dump_all([dep, svc]))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Deployment/remora-control: /spec/replicas must be integer" in r.stderr
    assert "/spec/template/spec/containers/0 must have required property name" in r.stderr
    assert "Service/remora-control: /spec/ports/0/port must be integer" in r.stderr
    assert "2 with errors" in r.stdout
    # an unknown kind, a CRD whose schema is not structural
    r = check("apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n")
    assert r.returncode == 1 and "unknown apiVersion/kind example.com/v1 Gizmo" in r.stderr
    with open(os.path.join(CHART, "crds", "meshtlses.remora.dev.yaml")) as f:
        crd = yaml.safe_load(f)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mode"].pop("type")
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["anyOf"] = [{"type": "object"}]
    r = check(yaml.safe_dump(crd))
    assert r.returncode == 1
    assert "properties.spec.properties.mode: no type" in r.stderr and '"type" is not allowed inside' in r.stderr
    # and the good ones pass
    assert check(text).returncode == 0


def _examples():
    """The remora.dev documents of examples/ (placeholders filled) and of docs/control-plane.md."""
    out = []
    for name in ("mesh.yaml", "mesh-netns.yaml", "mesh-policy.yaml", "mesh-telemetry.yaml"):
        with open(os.path.join(REPO, "examples", name)) as f:
            text = f.read().replace("OTLP_HTTP_PORT", "4318").replace("ACCESS_LOG_PATH", "/var/log/remora/access.log")
        out.append((name, text))
    with open(os.path.join(REPO, "docs", "control-plane.md")) as f:
        blocks = [b for b in re.findall(r"```yaml\n(.*?)```", f.read(), re.S) if "apiVersion: remora.dev/v1" in b]
    assert len(blocks) >= 8
    out.append(("docs/control-plane.md", "\n---\n".join(blocks)))
    return out


def test_examples_validate_against_the_crds(tmp_path):
    kinds = set()
    files = []
    for name, text in _examples():
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert docs and all(d["apiVersion"] == "remora.dev/v1" for d in docs), name
        kinds |= {d["kind"] for d in docs}
        path = os.path.join(str(tmp_path), os.path.basename(name))
        with open(path, "w") as f:
            f.write(text)
        files.append(path)
    r = run([_node(), CHECK, *files])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all valid" in r.stdout
    assert kinds == {"Service", "HTTPRoute", "GRPCRoute", "FaultInjection", "BackendTrafficPolicy", "RateLimitPolicy",
                     "Telemetry", "AuthorizationPolicy", "MeshTLS", "EgressPolicy"}


# Wrong documents: each must fail the CRD schema and the real control plane, each with its error:
# (kind, spec, the CRD schema's error, remora-control's error).
BAD = [
    ("Service", "spec: {protocol: quic}", "/spec/protocol must be equal to one of the allowed values",
     "unknown protocol 'quic'"),
    ("Service", "spec: {protocol: grpc, prtocol: grpc}", '/spec unknown field "prtocol"', "unknown field 'prtocol'"),
    ("Service", "spec: {protocol: grpc, serviceAccount: Bad_SA}", "/spec/serviceAccount must match pattern",
     "spec.serviceAccount: 'Bad_SA' is not a valid name"),
    ("Service", "spec: {protocol: grpc, meshed: 'yes'}", "/spec/meshed must be boolean",
     "spec.meshed: 'yes' must be true or false"),
    ("Service", "spec: {protocol: grpc, addresses: [echo.internal:80]}", "/spec/addresses/0 must match pattern",
     "'echo.internal' is not an IP address"),
    ("FaultInjection", "spec: {abort: {httpStatus: 700}}", "/spec/abort/httpStatus must be <= 599",
     "spec.abort.httpStatus: must be from 200 to 599"),
    ("FaultInjection", "spec: {delay: {fixedDelay: 5 seconds}}", "/spec/delay/fixedDelay must match pattern",
     "'5 seconds' is not a duration"),
    ("FaultInjection", "spec: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}", "/spec/abort must match exactly one",
     "give exactly one of httpStatus or grpcStatus"),
    ("FaultInjection", "spec: {abort: {grpcStatus: OK}}", "/spec/abort/grpcStatus must be equal to one of",
     "OK is not an error status"),
    ("FaultInjection", "spec: {}", "/spec must have required property 'delay'", "give a delay, an abort, or both"),
    ("Telemetry", "spec: {tracing: {otlp: {endpoint: '127.0.0.1:4317'}, samplingPercent: 150}}",
     "/spec/tracing/samplingPercent must be <= 100", "spec.tracing.samplingPercent: must be from 0 to 100"),
    ("Telemetry", "spec: {tracing: {otlp: {endpoint: '127.0.0.1:4317'}, propagation: [w3c, w3c]}}",
     "/spec/tracing/propagation must NOT have duplicate items", "'w3c' is listed twice"),
    ("Telemetry", "spec: {accessLog: {format: text}}", "/spec/accessLog/format must be equal to one of",
     "spec.accessLog.format: must be json"),
    ("MeshTLS", "spec: {mode: strict}", "/spec/mode must be equal to one of the allowed values",
     "spec.mode: 'strict' must be STRICT"),
    ("MeshTLS", "spec: {}", "/spec must have required property 'mode'", "spec.mode: is required"),
    ("EgressPolicy", "spec: {hosts: [shop]}", "/spec/hosts/0 must match pattern", "'shop' must be NAMESPACE/NAME"),
    ("EgressPolicy", "spec: {hosts: ['Shop/*']}", "/spec/hosts/0 must match pattern",
     "the namespace must be a namespace name"),
    ("EgressPolicy", "spec: {hosts: []}", "/spec/hosts must NOT have fewer than 1 items", "needs at least one host"),
    ("EgressPolicy", "spec: {}", "/spec must have required property 'hosts'", "spec.hosts: is required"),
    ("EgressPolicy", "spec: {targetRefs: [{kind: Service, name: web}], hosts: ['./*']}",
     "/spec/targetRefs/0/kind must be equal to one of the allowed values", "an EgressPolicy targets a ServiceAccount"),
]


def test_wrong_documents_fail_the_crd_schema_and_the_control_plane(tmp_path):
    docs = [f"apiVersion: remora.dev/v1\nkind: {kind}\nmetadata: {{name: bad, namespace: {NS}}}\n{spec}\n"
            for kind, spec, _, _ in BAD]
    # one run of the checker: each document is reported under its own number
    r = check("---\n".join(docs))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{len(BAD)} with errors" in r.stdout, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    for i, (doc, (_, _, want, _)) in enumerate(zip(docs, BAD), start=1):
        mine = [ln for ln in lines if ln.startswith(f"<stdin>#{i} ")]
        assert any(want in ln for ln in mine), f"{doc}: {mine}"
    cp = ControlPlane(str(tmp_path))
    cp.start()
    try:
        for doc, (_, _, _, said) in zip(docs, BAD):
            path = tmp_path / "bad.yaml"
            path.write_text(doc)
            c = cp.ctl("apply", "-f", str(path), "--dry-run")
            assert c.rc == 1 and said in c.err + c.out, f"{doc}: {c}"
        # the same kind made right passes both
        good = (f"apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {{name: good, namespace: {NS}}}\n"
                "spec: {mode: STRICT}\n")
        assert check(good).returncode == 0
        (tmp_path / "good.yaml").write_text(good)
        c = cp.ctl("apply", "-f", str(tmp_path / "good.yaml"), "--dry-run")
        assert c.rc == 0, c
    finally:
        rc = cp.stop()
    assert rc == 0, cp.log()


def test_check_manifests_usage_and_unreadable_input(tmp_path):
    r = run([_node(), CHECK, "--bogus"])
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = run([_node(), CHECK, str(tmp_path / "missing.yaml")])
    assert r.returncode == 2
    r = check("a: [\n")
    assert r.returncode == 2 and "<stdin>#1" in r.stderr
    r = check(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}}))
    assert r.returncode == 0 and "1 ConfigMap" in r.stdout
