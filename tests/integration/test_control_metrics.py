"""remora-control's own metrics (docs/metrics.md, "remora-control"; docs/control-plane.md, "Metrics").

A real remora-control with --metrics-listen (and the webhook): real decisions are driven through the real
doors (remoractl apply accepted and refused, Identity.Certify with good and bad tokens over TLS, a wrong
admin credential, AdmissionReviews over HTTPS as the API server sends them, a discovery stream) and the
counters must move by exactly the right amounts; the text passes Debian's `promtool check metrics`; a real
Prometheus scrapes the port and its query API returns the series. /ready is 503 while the store is not
loaded (--kubernetes against an API server that does not answer) and 200 after; malformed, oversized and
idle requests are answered 400 / 431 or closed, and the control plane keeps serving.
"""

import copy
import os
import socket
import subprocess
import time

import grpc
import pytest

import support
from control_support import ControlPlane, FakeAgent, control_factory, pb, service_doc, wait_until, write  # noqa: F401
from kube_api import KubeApiServer
from procutil import free_port, wait_port
from test_golden_metrics import PROMETHEUS, PROMTOOL, Prometheus
from test_identity import certify, make_csr
from test_inject import APP_POD, DNS, Webhook

SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
MAX_CONNS = 32          # RM_CP_METRICS_MAX_CONNS
MAX_HEAD_BYTES = 8192   # RM_CP_METRICS_MAX_HEAD_BYTES


def scrape(port):
    status, headers, body = support.http_get("127.0.0.1", port, "/metrics")
    assert status == 200, body
    return headers, body.decode()


def metrics(port):
    return support.parse_prometheus(scrape(port)[1])


def value(m, name, **labels):
    v = support.metric(m, name, **labels)
    assert v is not None, f"{name}{labels} not exported"
    return v


class Delta:
    """Counter movements between two scrapes."""

    def __init__(self, port):
        self.port = port
        self.before = metrics(port)

    def __call__(self, name, **labels):
        after = metrics(self.port)
        return value(after, name, **labels) - (support.metric(self.before, name, **labels) or 0)


@pytest.fixture
def cp(tmp_path):
    mport, wport = free_port(), free_port()
    c = ControlPlane(str(tmp_path), extra=["--metrics-listen", f"127.0.0.1:{mport}", "--webhook-listen",
                                           f"127.0.0.1:{wport}", "--webhook-dns", DNS])
    c.metrics_port, c.webhook_port = mport, wport
    c.start()
    try:
        wait_port("127.0.0.1", wport, 10, c.proc)
        yield c
    finally:
        rc = c.stop()
        assert rc == 0, c.log()[-4000:]


# ------------------------------------------------------------------------------ the port and the format

def test_endpoints_and_text_format(cp):
    port = cp.metrics_port
    assert support.http_get("127.0.0.1", port, "/live")[:1] == (200,)
    status, _, body = support.http_get("127.0.0.1", port, "/ready")
    assert status == 200 and body == b"ready\n"
    headers, text = scrape(port)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    # every family has HELP and TYPE, and every sample belongs to a declared family
    declared = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            declared[name] = typ
    helped = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# HELP ")}
    assert set(declared) == helped
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            base = next((f for f in (name, name.rsplit("_", 1)[0]) if f in declared), None)
            assert base is not None, f"{name} has no # TYPE"
    for name, typ in (("remora_control_streams", "gauge"), ("remora_control_pushes_total", "counter"),
                      ("remora_control_answers_total", "counter"), ("remora_control_certificates_issued_total", "counter"),
                      ("remora_control_certify_refusals_total", "counter"),
                      ("remora_control_certificate_issue_duration_seconds", "histogram"),
                      ("remora_control_auth_refusals_total", "counter"),
                      ("remora_control_certificate_expiry_seconds", "gauge"), ("remora_control_applies_total", "counter"),
                      ("remora_control_apply_refusals_total", "counter"), ("remora_control_store_writes_total", "counter"),
                      ("remora_control_webhook_reviews_total", "counter"), ("remora_control_webhook_errors_total", "counter"),
                      ("remora_control_ready", "gauge"), ("process_cpu_seconds_total", "counter")):
        assert declared.get(name) == typ, (name, declared.get(name))
    # without --kubernetes its families are left out
    assert "remora_control_kube_" not in text
    m = support.parse_prometheus(text)
    assert value(m, "remora_control_ready") == 1
    # the CA's issuer (1 year), the gRPC port's certificate (the workload lifetime, 24 h) and the webhook's
    assert 364 * 86400 < value(m, "remora_control_certificate_expiry_seconds", certificate="issuer") <= 365 * 86400
    assert 23 * 3600 < value(m, "remora_control_certificate_expiry_seconds", certificate="server") <= 86400
    assert value(m, "remora_control_certificate_expiry_seconds", certificate="webhook") > 3600
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} missing: install the Debian package prometheus (scripts/install-deps.sh)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"promtool check metrics: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    # HEAD, other methods, other paths
    status, headers, body = support.http_get("127.0.0.1", port, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    status, headers, _ = support.http_get("127.0.0.1", port, "/metrics", method="POST", body=b"x")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert support.http_get("127.0.0.1", port, "/nope")[0] == 404
    assert support.http_get("127.0.0.1", port, "/metrics?name[]=x")[0] == 200


# ------------------------------------------------------------------------------ decisions

def test_certify_and_doors_counted(cp, tmp_path):
    d = Delta(cp.metrics_port)
    csr = make_csr(str(tmp_path), "w1")
    good = open(cp.token("shop", "web", node_id="n1")).read().strip()
    resp = certify(cp, csr, good, "n1")
    assert resp.spiffe_id.endswith("/ns/shop/sa/web")
    # a token nobody made; a token bound to n1 used by another node; a CSR that is not one
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, "rmt1." + "0" * 64, "n2")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, csr, good, "n2")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    other = open(cp.token("shop", "web", node_id="n3")).read().strip()
    with pytest.raises(grpc.RpcError) as e:
        certify(cp, b"\x30\x03garbage", other, "n3")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the admin door: a wrong admin credential, and a workload token where the admin one belongs
    wrong = write(str(tmp_path), "wrong.admin.token", "rma1." + "1" * 64 + "\n")
    r = cp.ctl("status", env={"REMORA_ADMIN_TOKEN_FILE": wrong})
    assert r.rc != 0, r
    tok = write(str(tmp_path), "workload-as-admin.token", other + "\n")
    r = cp.ctl("status", env={"REMORA_ADMIN_TOKEN_FILE": tok})
    assert r.rc != 0, r
    # the discovery door: a Hello without any credential
    d_pb = pb().discovery
    with cp.grpc_channel() as ch:
        stream = ch.stream_stream("/remora.v1.Discovery/StreamSnapshots",
                                  request_serializer=d_pb.AgentMessage.SerializeToString,
                                  response_deserializer=d_pb.Snapshot.FromString)
        with pytest.raises(grpc.RpcError) as e:
            for _ in stream(iter([d_pb.AgentMessage(hello=d_pb.Hello(node_id="nobody"))]), timeout=10):
                pass
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value

    assert d("remora_control_certificates_issued_total") == 1
    assert d("remora_control_certificate_issue_duration_seconds_count") == 1
    assert d("remora_control_certificate_issue_duration_seconds_bucket", le="+Inf") == 1
    assert 0 < d("remora_control_certificate_issue_duration_seconds_sum") < 5
    assert d("remora_control_certify_refusals_total", reason="unknown_token") == 1
    assert d("remora_control_certify_refusals_total", reason="token_in_use") == 1
    assert d("remora_control_certify_refusals_total", reason="bad_csr") == 1
    assert d("remora_control_certify_refusals_total", reason="expired_token") == 0
    assert d("remora_control_tokens_created_total") == 2
    assert d("remora_control_auth_refusals_total", api="identity", code="unauthenticated") == 1
    assert d("remora_control_auth_refusals_total", api="identity", code="permission_denied") == 1
    assert d("remora_control_auth_refusals_total", api="admin", code="unauthenticated") == 1
    assert d("remora_control_auth_refusals_total", api="admin", code="permission_denied") == 1
    assert d("remora_control_auth_refusals_total", api="discovery", code="unauthenticated") == 1
    assert d("remora_control_auth_refusals_total", api="discovery", code="permission_denied") == 0
    # the same numbers as remoractl identity shows (IdentityStatus)
    r = cp.ctl("identity")
    assert r.rc == 0 and "unknown_token=1" in r.out and "token_in_use=1" in r.out, r


def test_webhook_reviews_counted(cp):
    d = Delta(cp.metrics_port)
    wh = Webhook(cp.webhook_port, cp.trust_anchor)
    try:
        assert wh.review(APP_POD)["patchType"] == "JSONPatch"
        assert wh.review(APP_POD)["patchType"] == "JSONPatch"
        host = copy.deepcopy(APP_POD)
        host["spec"]["hostNetwork"] = True
        assert "patch" not in wh.review(host)
        off = copy.deepcopy(APP_POD)
        off["metadata"]["annotations"]["remora.dev/inject"] = "disabled"
        assert "patch" not in wh.review(off)
        assert "patch" not in wh.review(APP_POD, operation="UPDATE")
        bad = copy.deepcopy(APP_POD)
        bad["metadata"]["annotations"]["config.remora.dev/proxy-memory-limit"] = "lots"
        assert wh.review(bad)["allowed"] is False
        assert wh.request("POST", "/inject", b"{not json")[0] == 400
        assert wh.request("POST", "/inject", b"{}", content_type="text/plain")[0] == 415
        assert wh.request("GET", "/nope", content_type=None)[0] == 404
    finally:
        wh.close()
    assert d("remora_control_webhook_reviews_total", result="injected") == 2
    assert d("remora_control_webhook_reviews_total", result="skipped") == 3
    assert d("remora_control_webhook_reviews_total", result="refused") == 1
    assert d("remora_control_webhook_skips_total", reason="host_network") == 1
    assert d("remora_control_webhook_skips_total", reason="disabled") == 1
    assert d("remora_control_webhook_skips_total", reason="not_create") == 1
    assert d("remora_control_webhook_skips_total", reason="other") == 0
    assert d("remora_control_webhook_errors_total", reason="bad_review") == 1
    assert d("remora_control_webhook_errors_total", reason="bad_content_type") == 1
    assert d("remora_control_webhook_errors_total", reason="not_found") == 1


def test_discovery_counted(cp):
    """The discovery series (reported by server.c): a stream, its pushes and the agent's answers."""
    token = cp.fake_agent_token()  # before the scrape: it is a CreateToken
    assert token
    d = Delta(cp.metrics_port)
    agent = FakeAgent(cp, "metrics-agent")
    try:
        wait_until(lambda: agent.answered, 10, what="the first snapshot ACKed")
        wait_until(lambda: value(metrics(cp.metrics_port), "remora_control_agents", state="current") == 1, 10,
                   what="the agent counted as current")
        m = metrics(cp.metrics_port)
        assert value(m, "remora_control_streams") == 1
        assert value(m, "remora_control_agents", state="behind") == 0
        assert value(m, "remora_control_agents", state="nacked") == 0
        assert d("remora_control_pushes_total") >= 1
        assert d("remora_control_push_bytes_total") > 0
        assert d("remora_control_answers_total", result="ack") >= 1
        assert d("remora_control_answers_total", result="nack") == 0
    finally:
        agent.close()
    wait_until(lambda: value(metrics(cp.metrics_port), "remora_control_streams") == 0, 10, what="the stream counted closed")


def test_apply_counted(cp, tmp_path):
    """Apply decisions (server.c) and the store's writes (store.c)."""
    good = write(str(tmp_path), "svc.yaml", service_doc("web"))
    invalid = write(str(tmp_path), "invalid.yaml", service_doc("web").replace("protocol: grpc", "protocol: carrier-pigeon"))
    dangling = write(str(tmp_path), "route.yaml",
                     "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n"
                     "  parentRefs: [{kind: Service, name: nothere}]\n  rules:\n"
                     "  - backendRefs: [{name: nothere}]\n")
    d = Delta(cp.metrics_port)
    assert cp.ctl("apply", "-f", good).rc == 0
    assert cp.ctl("apply", "-f", good).rc == 0
    assert cp.ctl("apply", "-f", good, "--dry-run").rc == 0
    r = cp.ctl("apply", "-f", invalid)
    assert r.rc != 0 and "carrier-pigeon" in (r.out + r.err), r
    r = cp.ctl("apply", "-f", dangling)
    assert r.rc != 0 and "nothere" in (r.out + r.err), r
    empty = write(str(tmp_path), "empty.yaml", "")
    assert cp.ctl("apply", "-f", empty).rc != 0
    assert d("remora_control_applies_total", result="changed") == 1
    assert d("remora_control_applies_total", result="unchanged") == 1
    assert d("remora_control_applies_total", result="dry_run") == 1
    assert d("remora_control_apply_refusals_total", reason="invalid") == 1
    assert d("remora_control_apply_refusals_total", reason="reference") == 1
    assert d("remora_control_apply_refusals_total", reason="empty") == 1
    assert d("remora_control_apply_refusals_total", reason="store_error") == 0
    # one new version: one write of the state file
    assert d("remora_control_store_writes_total", result="ok") == 1
    assert d("remora_control_store_writes_total", result="error") == 0
    assert value(metrics(cp.metrics_port), "remora_control_store_state_bytes") > 0


def test_delete_counted(cp, tmp_path):
    """remoractl delete (Admin.Delete) outcomes: deleted, not_found, in_use, invalid."""
    docs = service_doc("web") + "---\n" + ("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n"
                                         "  parentRefs: [{kind: Service, name: web}]\n  rules:\n"
                                         "  - backendRefs: [{name: web}]\n")
    assert cp.ctl("apply", "-f", write(str(tmp_path), "web.yaml", docs)).rc == 0
    d = Delta(cp.metrics_port)
    r = cp.ctl("delete", "service", "web")
    assert r.rc != 0 and "r" in r.err, r            # the route still refers to it
    assert cp.ctl("delete", "httproute", "nothere").rc != 0
    assert cp.ctl("delete", "httproute", "r").rc == 0
    assert cp.ctl("delete", "service", "web").rc == 0
    # no name: refused by the server (remoractl checks its arguments, so the call is made directly)
    apb = pb().admin
    with cp.grpc_channel(token=cp.admin_token()) as ch:
        m = ch.unary_unary("/remora.v1.Admin/Delete", request_serializer=apb.DeleteRequest.SerializeToString,
                           response_deserializer=apb.DeleteResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            m(apb.DeleteRequest(resource=apb.ResourceRef(kind=pb().meta.RESOURCE_KIND_SERVICE)), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    got = {r: d("remora_control_deletes_total", result=r)
           for r in ("deleted", "invalid", "not_found", "in_use", "store_error", "kubernetes_error")}
    assert got == {"deleted": 2, "invalid": 1, "not_found": 1, "in_use": 1, "store_error": 0, "kubernetes_error": 0}, got
    assert d("remora_control_store_writes_total", result="ok") == 2


def test_token_reviews_counted(control_factory, tmp_path):  # noqa: F811
    """--kubernetes: each TokenReview of a projected token (Identity.Certify) by result."""
    kube = KubeApiServer(tls=True, workdir=str(tmp_path / "kube-api"), bookmark_interval=0.5)
    kube.start()
    try:
        kube.add_token("projected-good", username="system:serviceaccount:shop:cart", pod_name="cart-1")
        kube.add_token("other-audience", username="system:serviceaccount:shop:cart", audiences=["vault"])
        mport = free_port()
        cp = control_factory(extra=["--kubernetes", "--kube-api", kube.url, "--kube-token-file", kube.token_file,
                                    "--kube-ca-file", kube.ca_file, "--metrics-listen", f"127.0.0.1:{mport}"])
        wait_until(lambda: support.http_get("127.0.0.1", mport, "/ready")[0] == 200, 15, what="ready")
        csr = make_csr(str(tmp_path), "w")
        d = Delta(mport)

        def code(token, node="cart-1.shop"):
            try:
                certify(cp, csr, token, node)
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                return e.code()
        assert code("projected-good") == grpc.StatusCode.OK
        # authenticated, but the pod's token names another node id: still an authenticated review
        assert code("projected-good", "someone-else.shop") == grpc.StatusCode.PERMISSION_DENIED
        assert code("not-a-token") == grpc.StatusCode.UNAUTHENTICATED
        assert code("other-audience") == grpc.StatusCode.UNAUTHENTICATED
        kube.fail_next(100, status=503)
        assert code("projected-good") == grpc.StatusCode.UNAVAILABLE
        kube.fail_next(0)
        got = {r: d("remora_control_token_reviews_total", result=r) for r in ("authenticated", "rejected", "error")}
        assert got == {"authenticated": 2, "rejected": 2, "error": 1}, got
        # a bootstrap token is not reviewed
        tok = open(cp.token("shop", "cart", node_id="boot-1")).read().strip()
        assert code(tok, "boot-1") == grpc.StatusCode.OK
        assert d("remora_control_token_reviews_total", result="authenticated") == 2
    finally:
        kube.stop()


# ------------------------------------------------------------------------------ a real Prometheus

def test_prometheus_scrapes_the_control_plane(cp, tmp_path):
    if SANITIZED:
        pytest.skip("timing-bound (a real Prometheus scraping every second): not under sanitizers")
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} missing: install the Debian package prometheus (scripts/install-deps.sh)")
    csr = make_csr(str(tmp_path), "w1")
    certify(cp, csr, open(cp.token("shop", "web", node_id="p1")).read().strip(), "p1")
    prom = Prometheus(tmp_path, f"127.0.0.1:{cp.metrics_port}")
    try:
        def up():
            try:
                return prom.query('up{job="remora"} == 1')
            except OSError:
                return None
        wait_until(up, 30, interval=0.2, what="Prometheus to scrape the control plane")
        res = wait_until(lambda: prom.query('remora_control_certificates_issued_total{job="remora"}'), 15, interval=0.2,
                         what="the issued counter in Prometheus")
        assert float(res[0]["value"][1]) == 1, res
        res = prom.query('sum(remora_control_certify_refusals_total{job="remora"})')
        assert float(res[0]["value"][1]) == 0, res
        res = prom.query('remora_control_ready{job="remora"}')
        assert float(res[0]["value"][1]) == 1, res
        res = prom.query('remora_control_certificate_expiry_seconds{job="remora",certificate="issuer"} > 86400 * 300')
        assert len(res) == 1, res
        res = prom.query('histogram_quantile(0.99, sum by (le) (remora_control_certificate_issue_duration_seconds_bucket))')
        assert 0 < float(res[0]["value"][1]) <= 1, res
    finally:
        prom.stop()


# ------------------------------------------------------------------------------ robustness

def raw(port, data, timeout=5.0):
    """Sends `data` on a new connection; returns (status, headers, body) of the first response and whether the
    server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            status, headers, body, _ = support.read_h1_response(s, timeout=timeout)
            s.settimeout(timeout)
            try:
                closed = s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                closed = True
        finally:
            support.forget_reader(s)
        return status, dict(headers), body, closed


def test_malformed_oversized_and_slow_clients(cp):
    port = cp.metrics_port
    status, headers, body, closed = raw(port, b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
    assert status == 400 and closed, body
    status, _, body, closed = raw(port, b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
    assert status == 400 and closed, body
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 100) + b"\r\n\r\n"
    status, _, body, closed = raw(port, big)
    assert status == 431 and closed and b"8192" in body, body
    long_target = b"GET /" + b"m" * (MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\n\r\n"
    assert raw(port, long_target)[0] == 431
    # keep-alive: two requests in one write are answered in order on the same connection
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert support.read_h1_response(s)[0] == 200
            st, _, body, _ = support.read_h1_response(s)
            assert st == 200 and body == b"ready\n"
        finally:
            support.forget_reader(s)

    # idle clients fill every slot: a new connection is closed at once, the gRPC port is unaffected; once they
    # leave, scrapes work again
    idle = []
    try:
        for _ in range(MAX_CONNS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # a slow client holding a half-sent request
        idle[0].sendall(b"GET /metr")
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /live HTTP/1.1\r\n\r\n")
            s.settimeout(5)
            try:
                assert s.recv(100) == b"", "a connection over the bound was served"
            except ConnectionResetError:
                pass
        assert cp.ctl("status").rc == 0
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: _live(port), 10, interval=0.1, what="the metrics port serving again")
    assert cp.alive()
    assert value(metrics(port), "remora_control_ready") == 1
    assert cp.ctl("status").rc == 0


def _live(port):
    try:
        return support.http_get("127.0.0.1", port, "/live", timeout=2)[0] == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------ readiness and --kubernetes

def test_not_ready_until_the_store_is_loaded(control_factory, tmp_path):  # noqa: F811
    """--kubernetes against an API server that does not answer: alive, discovery listening, not ready (the store
    is not loaded); the failed lists are counted."""
    closed = free_port()  # nothing listens there
    token = write(str(tmp_path), "kube.token", "not-a-real-token\n")
    ca = os.path.join(str(tmp_path), "kube-ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=kube-ca", "-days", "2", "-keyout", ca + ".key", "-out", ca],
                   check=True, capture_output=True, timeout=30)
    mport = free_port()
    control_factory(extra=["--kubernetes", "--kube-api", f"https://127.0.0.1:{closed}", "--kube-token-file", token,
                           "--kube-ca-file", ca, "--metrics-listen", f"127.0.0.1:{mport}"])
    assert support.http_get("127.0.0.1", mport, "/live")[0] == 200
    status, _, body = support.http_get("127.0.0.1", mport, "/ready")
    assert status == 503 and b"store is not loaded" in body, body
    wait_until(lambda: value(metrics(mport), "remora_control_kube_list_errors_total") >= 1, 10,
               what="a failed list counted")
    m = metrics(mport)
    assert value(m, "remora_control_ready") == 0
    assert value(m, "remora_control_kube_requests_total", verb="GET", code="error") >= 1
    assert value(m, "remora_control_kube_states_built_total") == 0


def test_kubernetes_watch_relist_and_ready(control_factory, tmp_path):  # noqa: F811
    import kube_objects as ko
    kube = KubeApiServer(tls=True, workdir=str(tmp_path / "kube-api"), bookmark_interval=0.5)
    kube.start()
    try:
        for o in ko.service_with_pods("web", pods=[("web-1", "10.244.0.5")]):
            kube.put(o)
        mport = free_port()
        control_factory(extra=["--kubernetes", "--kube-api", kube.url, "--kube-token-file", kube.token_file,
                               "--kube-ca-file", kube.ca_file, "--metrics-listen", f"127.0.0.1:{mport}"])
        wait_until(lambda: support.http_get("127.0.0.1", mport, "/ready")[0] == 200, 15, what="ready")
        m = metrics(mport)
        assert value(m, "remora_control_kube_states_built_total") >= 1
        # 12 kinds listed (9 custom resources, Services, EndpointSlices, Pods)
        assert value(m, "remora_control_kube_requests_total", verb="GET", code="2xx") >= 12
        d = Delta(mport)
        kube.put(ko.service("late", cluster_ip="10.96.0.31"))
        wait_until(lambda: d("remora_control_kube_watch_events_total", type="added") >= 1, 10, what="an ADDED event")
        # the watches closed while the API answers 503: each new watch breaks (counted) and is retried
        kube.fail_next(100000, status=503)
        kube.close_watches()
        wait_until(lambda: d("remora_control_kube_watch_errors_total") >= 1, 10, what="a broken watch counted")
        assert support.http_get("127.0.0.1", mport, "/ready")[0] == 200  # the cache it has still serves
        # history compacted meanwhile: the watch from the old resourceVersion gets 410 Gone, then a relist
        kube.put(ko.service("later", cluster_ip="10.96.0.32"))
        kube.compact()
        kube.fail_next(0)
        wait_until(lambda: d("remora_control_kube_relists_total", reason="gone") >= 1, 20, what="a relist after 410 Gone")
        assert d("remora_control_kube_watch_events_total", type="error") >= 1
        assert support.http_get("127.0.0.1", mport, "/ready")[0] == 200
    finally:
        kube.stop()
