#!/usr/bin/python3
"""Regenerates the seed inputs of the fuzz corpora added for issue 12 (corpus/<target>/seed_*) from examples/ and
the shapes the integration tests use. Inputs found by fuzzing (regress_*) are kept by hand, not generated here.

    /usr/bin/python3 tests/fuzz/make_seeds.py BUILD_DIR [TARGET...]   # BUILD_DIR holds tests/fuzz/fuzz_gen_snapshot
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


# ---- HTTP/2 (fuzz_h2.c): raw frame sequences, made with hyperframe and hpack ----

def h2_frames(*frames):
    return b"".join(f if isinstance(f, (bytes, bytearray)) else f.serialize() for f in frames)


def h2_server():
    """The client's frames after the preface (the harness adds the preface and a final GOAWAY); the shapes of
    tests/integration/test_h2_abuse.py and test_h2_conformance.py."""
    from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, PriorityFrame,
                                  RstStreamFrame, SettingsFrame, WindowUpdateFrame)
    import hpack

    class C:
        def __init__(self):
            self.enc = hpack.Encoder()

        def req(self, path="/", method="GET", extra=()):
            return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "origin")] + list(extra)

        def headers(self, sid, hdrs, end_stream=True, end_headers=True, block=None, flags=()):
            f = HeadersFrame(sid)
            f.data = block if block is not None else self.enc.encode(hdrs)
            for fl in flags:
                f.flags.add(fl)
            if end_stream:
                f.flags.add("END_STREAM")
            if end_headers:
                f.flags.add("END_HEADERS")
            return f

    def settings(values=None, ack=False):
        f = SettingsFrame(0)
        if ack:
            f.flags.add("ACK")
        for k, v in (values or {}).items():
            f.settings[k] = v
        return f

    def data(sid, payload=b"", end_stream=False):
        f = DataFrame(sid)
        f.data = payload
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def cont(sid, payload, end_headers=True):
        f = ContinuationFrame(sid)
        f.data = payload
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def rst(sid, code=8):
        f = RstStreamFrame(sid)
        f.error_code = code
        return f

    def wu(sid, inc):
        f = WindowUpdateFrame(sid)
        f.window_increment = inc
        return f

    def prio(sid, dep=0, weight=16, exclusive=False):
        f = PriorityFrame(sid)
        f.depends_on, f.stream_weight, f.exclusive = dep, weight, exclusive
        return f

    def ping(payload=b"12345678", ack=False):
        f = PingFrame(0)
        f.opaque_data = payload
        if ack:
            f.flags.add("ACK")
        return f

    def goaway(last=0, code=0):
        f = GoAwayFrame(0)
        f.last_stream_id, f.error_code = last, code
        return f

    def raw(ftype, flags, sid, payload):
        n = len(payload)
        return bytes([n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff, ftype, flags]) + (sid & 0x7fffffff).to_bytes(4, "big") + \
            payload

    def put_h2(name, *frames):
        put("h2_server", name, h2_frames(*frames))

    c = C()
    put_h2("get", settings(), c.headers(1, c.req("/a")), settings(ack=True))
    c = C()
    put_h2("get_three", settings({4: 1 << 20, 5: 1 << 20}), c.headers(1, c.req("/a")), c.headers(3, c.req("/b")),
           c.headers(5, c.req("/c", extra=[("user-agent", "fuzz"), ("accept", "*/*")])), ping(), wu(0, 1 << 20))
    c = C()
    put_h2("post_body", settings(), c.headers(1, c.req("/p", "POST", [("content-length", "5")]), end_stream=False),
           data(1, b"hel"), data(1, b"lo", end_stream=True))
    c = C()
    put_h2("post_trailers", settings(), c.headers(1, c.req("/t", "POST", [("te", "trailers")]), end_stream=False),
           data(1, b"body"), c.headers(1, [("grpc-status", "0"), ("x-trailer", "v")], end_stream=True))
    c = C()
    block = c.enc.encode(c.req("/cont", extra=[("x-long", "v" * 300)]))
    put_h2("continuation", settings(), c.headers(1, None, end_headers=False, block=block[:7]),
           cont(1, block[7:100], end_headers=False), cont(1, block[100:]))
    c = C()
    put_h2("priority_headers", settings(), c.headers(3, c.req("/pr"), flags=("PRIORITY",)), prio(5, 3, 200), prio(7, 0, 1, True))
    c = C()
    put_h2("padded", settings(), c.headers(1, c.req("/pad", "POST"), end_stream=False),
           raw(0x0, 0x8, 1, bytes([20]) + b"abc" + b"\0" * 20), data(1, b"", end_stream=True))
    # a stream reset in the read that opened it, next to one that is not (distinct paths: the harness checks that only
    # /keep reaches the origin)
    c = C()
    put_h2("rst_same_read", settings(), c.headers(1, c.req("/reset1")), rst(1), c.headers(3, c.req("/keep")),
           c.headers(5, c.req("/reset5", "POST"), end_stream=False), data(5, b"x"), rst(5, 0))
    c = C()
    frames = [settings()]
    for i in range(40):
        frames += [c.headers(2 * i + 1, c.req(f"/r{i}")), rst(2 * i + 1)]
    put_h2("rapid_reset_small", *frames)
    c = C()
    frames = [settings()]
    for i in range(600):
        frames += [c.headers(2 * i + 1, c.req("/rapid")), rst(2 * i + 1)]
    put_h2("rapid_reset", *frames)
    c = C()
    frames = [settings()]
    for i in range(550):
        frames += [c.headers(2 * i + 1, c.req("/myr", "POST", [("content-length", "1")]), end_stream=False),
                   data(2 * i + 1, b"xx", end_stream=True)]
    put_h2("made_you_reset", *frames)
    c = C()
    put_h2("empty_data", settings(), c.headers(1, c.req("/empty", "POST"), end_stream=False), data(1), data(1), data(1))
    c = C()
    padded = raw(0x0, 0x8, 1, bytes([20]) + b"\0" * 20)
    put_h2("padding_only", settings(), c.headers(1, c.req("/pad", "POST"), end_stream=False), padded, padded)
    c = C()
    block = c.enc.encode(c.req("/ec"))
    put_h2("empty_continuation", settings(), c.headers(1, None, end_headers=False, block=block[:3]),
           cont(1, b"", end_headers=False), cont(1, b"", end_headers=False), cont(1, block[3:]))
    put_h2("priority_flood", settings(), *[prio(2 * i + 1) for i in range(101)])
    put_h2("window_update_flood", settings(), *[wu(0, 1) for _ in range(6)])
    put_h2("ping_flood", settings(), *[ping() for _ in range(1100)])
    put_h2("settings_flood", *[settings() for _ in range(1100)])
    c = C()
    put_h2("stream_id_gap", settings(), c.headers(5, c.req("/five")), c.headers(3, c.req("/three")))
    # served: 1 and 7; refused: 3 (skipped when 7 opened) and 9 (after it); the harness checks the origin's requests
    c = C()
    put_h2("stream_id_gap_paths", settings(), c.headers(1, c.req("/one")), c.headers(7, c.req("/seven")),
           c.headers(3, c.req("/three")), c.headers(9, c.req("/nine")))
    c = C()
    put_h2("stream_id_even", settings(), c.headers(2, c.req("/even")))
    c = C()
    put_h2("window_zero", settings({4: 0}), c.headers(1, c.req("/w")), wu(1, 100), wu(0, 100))
    put_h2("window_update_zero", settings(), raw(0x8, 0, 0, b"\0\0\0\0"))
    put_h2("unknown_frame", settings(), raw(0xfa, 0x3, 0, b"whatever"), ping(ack=True))
    c = C()
    put_h2("client_goaway", settings(), c.headers(1, c.req("/g")), goaway(0, 0))
    c = C()
    put_h2("bad_headers", settings(), c.headers(1, [(":method", "GET"), (":path", "/u"), ("Upper", "x")]),
           c.headers(3, c.req("/conn", extra=[("connection", "close")])), c.headers(5, [(":path", "/nomethod")]))
    c = C()
    put_h2("many_headers", settings({1: 0}), c.headers(1, c.req("/m", extra=[(f"x-h{i}", "v" * 20) for i in range(150)])))
    c = C()
    put_h2("max_frame_size", settings({5: 65536}), c.headers(1, c.req("/big", "POST"), end_stream=False),
           data(1, b"x" * 100, end_stream=True))


def h2_client():
    """The first byte picks the downstream request (0: GET, 1: POST 5 bytes, 2: POST 70000 bytes); the rest is what the
    origin sends once the agent's request is in (its SETTINGS first)."""
    from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, PushPromiseFrame,
                                  RstStreamFrame, SettingsFrame, WindowUpdateFrame)
    import hpack

    def settings(values=None, ack=False):
        f = SettingsFrame(0)
        if ack:
            f.flags.add("ACK")
        for k, v in (values or {}).items():
            f.settings[k] = v
        return f

    def headers(enc, sid, hdrs, end_stream=False, end_headers=True, block=None):
        f = HeadersFrame(sid)
        f.data = block if block is not None else enc.encode(hdrs)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def data(sid, payload=b"", end_stream=False):
        f = DataFrame(sid)
        f.data = payload
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def wu(sid, inc):
        f = WindowUpdateFrame(sid)
        f.window_increment = inc
        return f

    def rst(sid, code):
        f = RstStreamFrame(sid)
        f.error_code = code
        return f

    def goaway(last, code=0):
        f = GoAwayFrame(0)
        f.last_stream_id, f.error_code = last, code
        return f

    def put_c(name, shape, *frames):
        put("h2_client", name, bytes([shape]) + h2_frames(*frames))

    ok = [(":status", "200"), ("content-type", "text/plain"), ("content-length", "2")]
    for shape in (0, 1, 2):
        e = hpack.Encoder()
        put_c(f"ok_{shape}", shape, settings(), settings(ack=True), wu(0, 1 << 20), wu(1, 1 << 20), headers(e, 1, ok),
              data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    put_c("chunks", 0, settings({5: 32768, 3: 100}), headers(e, 1, [(":status", "200")]),
          *[data(1, b"x" * 1000) for _ in range(20)], data(1, b"", end_stream=True))
    e = hpack.Encoder()
    put_c("trailers", 1, settings(), headers(e, 1, [(":status", "200"), ("content-type", "application/grpc")]),
          data(1, b"\0\0\0\0\0"), headers(e, 1, [("grpc-status", "0"), ("grpc-message", "ok")], end_stream=True))
    e = hpack.Encoder()
    put_c("informational", 1, settings(), headers(e, 1, [(":status", "100")]), headers(e, 1, [(":status", "103"), ("link", "</s>")]),
          headers(e, 1, ok), data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    block = e.encode([(":status", "200"), ("x-long", "y" * 400)])
    c1, c2 = ContinuationFrame(1), ContinuationFrame(1)
    c1.data, c2.data = block[5:200], block[200:]
    c2.flags.add("END_HEADERS")
    put_c("continuation", 0, settings(), headers(e, 1, None, end_stream=True, end_headers=False, block=block[:5]), c1, c2)
    put_c("refused", 0, settings(), rst(1, 7))
    put_c("goaway_zero", 0, settings(), goaway(0, 0))
    e = hpack.Encoder()
    put_c("goaway_after", 1, settings(), headers(e, 1, ok), goaway(1, 0), data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    pp = PushPromiseFrame(1)
    pp.promised_stream_id = 2
    pp.data = e.encode([(":method", "GET"), (":path", "/pushed"), (":scheme", "http"), (":authority", "origin")])
    pp.flags.add("END_HEADERS")
    put_c("push_promise", 0, settings(), pp, headers(e, 1, ok), data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    ping = PingFrame(0)
    ping.opaque_data = b"abcdefgh"
    put_c("ping_window", 2, settings({4: 10}), ping, wu(1, 70000), wu(0, 70000), headers(e, 1, ok),
          data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    put_c("bad_status", 0, settings(), headers(e, 1, [(":status", "abc")], end_stream=True))
    e = hpack.Encoder()
    put_c("no_status", 0, settings(), headers(e, 1, [("content-length", "0")], end_stream=True))
    e = hpack.Encoder()
    put_c("length_mismatch", 0, settings(), headers(e, 1, ok), data(1, b"toolong", end_stream=True))
    e = hpack.Encoder()
    put_c("early_response", 2, settings(), headers(e, 1, ok), data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    put_c("no_settings", 0, headers(e, 1, ok), data(1, b"ok", end_stream=True))
    e = hpack.Encoder()
    put_c("table_size", 0, settings({1: 0, 2: 0}), headers(e, 1, ok), data(1, b"ok", end_stream=True))


# ---- incremental snapshots (fuzz_delta.c): fuzz_gen_snapshot --delta, as the control plane encodes them ----

def delta(build):
    gen = os.path.join(build, "tests", "fuzz", "fuzz_gen_snapshot")
    mesh, policy = os.path.join(EX, "mesh.yaml"), os.path.join(EX, "mesh-policy.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        telemetry = os.path.join(tmp, "telemetry.yaml")
        with open(os.path.join(EX, "mesh-telemetry.yaml")) as f, open(telemetry, "w") as t:
            t.write(f.read().replace("OTLP_HTTP_PORT", "4318").replace("OTLP_GRPC_PORT", "4317")
                    .replace("ACCESS_LOG_PATH", "/tmp/access.log"))
        egress = os.path.join(tmp, "egress.yaml")
        with open(egress, "w") as f:
            f.write("apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: web}\nspec:\n"
                    "  targetRefs: [{kind: ServiceAccount, name: web}]\n  hosts: [\"./echo\", \"*/web\"]\n---\n"
                    "apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {name: default, namespace: remora-system}\n"
                    "spec: {mode: STRICT}\n")
        sets = {
            "policy_added": (1, [mesh, policy]),
            "policies_removed": (2, [mesh, policy, "-rlp/default/web-limits", "-btp/default/web"]),
            "route_and_service_removed": (1, [mesh, "-httproute/default/web-canary", "-service/default/web-v2"]),
            "changed_and_removed": (2, [mesh, telemetry, policy, "-telemetry/remora-system/default", egress]),
            "egress_and_meshtls": (1, [mesh, egress]),
            "empty": (2, [mesh, policy]),
            "compose": (1, [os.path.join(EX, "compose", "policy", "mesh.yaml"), egress]),
        }
        for name, (n, steps) in sets.items():
            out = os.path.join(tmp, "out_" + name)
            r = subprocess.run([gen, "--delta", out, str(n)] + steps, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"delta {name}: {r.stderr.strip()}", file=sys.stderr)
                continue
            with open(out, "rb") as f:
                put("delta", name, f.read())


# ---- scoping (fuzz_scope.c): policy YAML with EgressPolicies; "#discover HOST" lines are on-demand names ----

def egress(name, hosts, sas=None, ns="default"):
    targets = "" if sas is None else "  targetRefs: [" + ", ".join(f"{{kind: ServiceAccount, name: {s}}}" for s in sas) + "]\n"
    return (f"apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
            f"{targets}  hosts: [{', '.join(repr(h) for h in hosts)}]\n")


def scope():
    def read(n):
        with open(os.path.join(EX, n)) as f:
            return f.read()
    mesh, policy = read("mesh.yaml"), read("mesh-policy.yaml")
    put("scope", "mesh_egress", mesh + "---\n" + egress("client", ["./web"], ["client"]) + "---\n" +
        egress("wide", ["./echo"]) + "#discover echo\n#discover web-v2.default.svc\n")
    # mesh-policy.yaml's route replaces mesh.yaml's: a duplicate in one batch (an error: the --kubernetes path)
    put("scope", "mesh_policy_egress", mesh + "---\n" + policy + "---\n" + egress("web", ["*/web"], ["web", "other"]) +
        "#discover echo.default.svc.cluster.local\n#discover default/missing\n")
    put("scope", "mesh_policy_valid", mesh + "---\n" + policy.replace("name: web-canary}", "name: web-canary-2}") + "---\n" +
        egress("web", ["./echo"], ["web"]) + "---\n" + egress("all", ["default/*"]) + "#discover WEB\n")

    def svc(name, ns, sa="default", eps=()):
        e = "".join(f"\n  - {{address: \"127.0.0.1:{p}\", serviceAccount: {a}}}" for p, a in eps) or " []"
        return (f"apiVersion: remora.dev/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
                f"  protocol: http1\n  serviceAccount: {sa}\n  endpoints:{e}\n")
    docs = [svc("web", "shop", "web"), svc("api", "payments", "api", [(9001, "api"), (9002, "batch")]),
            svc("echo", "default"), svc("echo", "tools"), svc("ledger", "payments", "ledger"),
            "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: api, namespace: payments}\nspec:\n"
            "  parentRefs: [{name: api, namespace: payments}]\n  rules:\n  - backendRefs: [{name: api, namespace: payments}, "
            "{name: ledger, namespace: payments}]\n",
            "apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: ledger, namespace: payments}\nspec:\n"
            "  targetRefs: [{kind: Service, name: ledger}]\n  loadBalancer: {type: RoundRobin}\n",
            "apiVersion: remora.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-readers, namespace: payments}\nspec:\n"
            "  targetRefs: [{kind: Service, name: api}, {kind: HTTPRoute, name: api}]\n  action: ALLOW\n"
            "  rules:\n  - from: [{namespaces: [shop]}]\n",
            "apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {name: default, namespace: remora-system}\nspec: {mode: STRICT}\n",
            egress("web", ["./*", "payments/api", "*/echo"], ["web"], ns="shop"),
            egress("rest", ["tools/*"], ns="shop"),
            egress("batch", ["./ledger"], ["batch"], ns="payments")]
    put("scope", "namespaces", "---\n".join(docs) + "#discover api.payments\n#discover echo.tools.svc\n"
        "#discover ledger.payments.svc.cluster.local\n#discover nope.payments\n#discover api.payments:8080\n")
    # a route to a Service nobody applied: refused by the check; the harness stores it anyway (replaced store)
    put("scope", "dangling", svc("web", "default") + "---\n" +
        "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: web}]\n"
        "  rules:\n  - backendRefs: [{name: gone}]\n---\n" + egress("e", ["./web"]) + "#discover gone\n")
    put("scope", "errors", "apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: x}\nspec:\n"
        "  targetRefs: [{kind: Deployment, name: web}]\n  hosts: [\"./a\"]\n---\n" + egress("y", ["no-slash", "./ok"]))


# ---- the opaque relay's mesh mTLS (fuzz_mesh_relay.c): scripts of wire operations, and a peer's bytes alone ----

def mesh_relay():
    SERVER, CLIENT = 0, 8
    STEP, CARRY, CORRUPT, PREFIX, INJECT, WRITE, CLOSE, REPLAY = range(8)

    def op(kind, side, arg=0, *extra):
        return bytes([kind | side | arg << 4]) + bytes(extra)

    def step(side):
        return op(STEP, side, 15)

    def hs(server_flight=None, client_flight=None):
        """A handshake: the client's hello, the server's flight, the client's flight, the server's ticket."""
        return (step(CLIENT) + op(CARRY, CLIENT) + step(SERVER) + (server_flight or op(CARRY, SERVER)) + step(CLIENT) +
                (client_flight or op(CARRY, CLIENT)) + step(SERVER) + op(CARRY, SERVER))

    def wire(name, script):
        put("mesh_relay", name, bytes([2]) + script)

    exchange = (op(WRITE, CLIENT, 3) + op(CARRY, CLIENT) + step(SERVER) + op(WRITE, SERVER, 15) + op(CARRY, SERVER) +
                step(CLIENT))
    close_both = (op(CLOSE, CLIENT) + op(CARRY, CLIENT) + step(SERVER) + op(WRITE, SERVER, 1) + op(CARRY, SERVER) +
                  step(CLIENT) + op(CLOSE, SERVER) + op(CARRY, SERVER) + step(CLIENT))
    wire("honest", hs() + exchange + close_both)
    wire("small_reads", hs() + op(WRITE, SERVER, 15) + op(CARRY, SERVER) + op(STEP, CLIENT, 0) * 6 + step(CLIENT))
    for off in (3, 60, 200, 700):
        wire(f"corrupt_server_flight_{off}", hs(server_flight=op(CORRUPT, SERVER, 0, off >> 8, off & 255, 0x40)))
    for off in (4, 100, 400, 900):
        wire(f"corrupt_client_flight_{off}", hs(client_flight=op(CORRUPT, CLIENT, 0, off >> 8, off & 255, 0x01)))
    wire("corrupt_record", hs() + op(WRITE, CLIENT, 2) + op(CORRUPT, CLIENT, 0, 0, 30, 0x80) + step(SERVER))
    wire("replay_record", hs() + op(WRITE, CLIENT, 2) + op(CARRY, CLIENT) + step(SERVER) + op(REPLAY, CLIENT) + step(SERVER))
    wire("truncated_flight", hs(server_flight=op(PREFIX, SERVER, 0, 0, 90)) + step(CLIENT))
    wire("truncated_record", hs() + op(WRITE, CLIENT, 2) + op(PREFIX, CLIENT, 0, 0, 100) + step(SERVER) + op(CLOSE, CLIENT) +
         op(CARRY, CLIENT) + step(SERVER))
    http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    wire("plaintext_hello", op(INJECT, CLIENT, 0, len(http)) + http + step(SERVER) + op(CARRY, SERVER) + step(CLIENT))
    alert = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00])
    wire("alert_after_handshake", hs() + op(INJECT, CLIENT, 0, len(alert)) + alert + step(SERVER))
    wire("alert_in_handshake", step(CLIENT) + op(CARRY, CLIENT) + op(INJECT, CLIENT, 0, len(alert)) + alert + step(SERVER))
    wire("write_before_handshake", op(WRITE, SERVER, 0) + op(WRITE, CLIENT, 0) + op(CARRY, CLIENT) + step(SERVER) +
         op(WRITE, SERVER, 0) + op(CARRY, SERVER) + step(CLIENT) + op(CARRY, CLIENT) + step(SERVER) + exchange)
    wire("replayed_hello", step(CLIENT) + op(CARRY, CLIENT) + op(REPLAY, CLIENT) + step(SERVER) + op(CARRY, SERVER) +
         step(CLIENT))

    def alone(name, side, data, flag_every=0):
        out, i, n = bytearray([side]), 0, 0
        while i < len(data):
            chunk = data[i:i + 127]
            out.append(len(chunk) | (0x80 if flag_every and n % flag_every == 0 else 0))
            out += chunk
            i += len(chunk)
            n += 1
        put("mesh_relay", name, bytes(out))

    # the peer's bytes: a ClientHello offering remora.mesh/tcp (TLS 1.3), and a server's answer to one (from Python's
    # ssl with a throwaway certificate: keys that do not match, so the relay refuses it, past the record layer)
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-keyout", key, "-out", crt, "-subj", "/O=remora", "-days", "1",
                        "-addext", "subjectAltName=URI:spiffe://remora.local/ns/shop/sa/web"],
                       check=True, capture_output=True)
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        cctx.minimum_version = ssl.TLSVersion.TLSv1_3
        cctx.set_alpn_protocols(["remora.mesh/tcp"])
        cctx.load_cert_chain(crt, key)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_3
        sctx.set_alpn_protocols(["remora.mesh/tcp"])
        sctx.load_cert_chain(crt, key)
        sctx.verify_mode = ssl.CERT_OPTIONAL
        sctx.load_verify_locations(crt)
        ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        c = cctx.wrap_bio(ci, co, server_hostname="remora.mesh")
        sv = sctx.wrap_bio(si, so, server_side=True)
        try:
            c.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = co.read()
        si.write(hello)
        try:
            sv.do_handshake()
        except ssl.SSLWantReadError:
            pass
        flight = so.read()
        ci.write(flight)
        try:
            c.do_handshake()
        except ssl.SSLError:
            pass
        client_flight = co.read()
    alone("server_hello_only", 0, hello)
    alone("server_hello_flagged", 0, hello, flag_every=1)
    alone("server_whole_client", 0, hello + client_flight)
    alone("server_plaintext", 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", flag_every=1)
    alone("client_server_flight", 1, flight)
    alone("client_server_flight_flagged", 1, flight, flag_every=2)
    alone("client_alert", 1, bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]), flag_every=1)


def main():
    """make_seeds.py [BUILD_DIR [TARGET...]]: every corpus, or only the TARGETs' (e.g. delta scope mesh_relay)."""
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    makers = {"webhook": webhook, "inject": inject, "manifest": manifest, "document": documents, "bootstrap": bootstrap,
              "snapshot": lambda: snapshot(build), "grpc_timeout": grpc_timeout, "app_probes": app_probes, "csr": csr,
              "clienthello": clienthello, "h2_server": h2_server, "h2_client": h2_client, "delta": lambda: delta(build),
              "scope": scope, "mesh_relay": mesh_relay}
    for name in sys.argv[2:] or list(makers):
        makers[name]()


if __name__ == "__main__":
    main()
