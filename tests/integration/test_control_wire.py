"""The agent's own gRPC client (agent/src/config/h2rpc.c: nghttp2 + OpenSSL, no gRPC core) against the
real remora-control, for what the other control tests do not reach: the control plane named by a DNS
name, a server certificate for another name (refused, and said so), the control plane killed in the
middle of the stream and restarted (the agent reconnects and resumes), a snapshot larger than HTTP/2's
default 64 KiB window, the idle memory of an agent with --control, and, from a fake HTTP/2 server
(python3-h2, cleartext), the answers remora-control never gives: an HTTP error status, a trailers-only
status, a compressed, oversized or unparsable message, a response that is not gRPC."""

import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from control_support import agent_status, control_factory, service_doc, throwaway_ca, wait_until  # noqa: F401
from procutil import Proc, free_port, wait_port
from support import AGENT, http_get

SANITIZED = bool(os.environ.get("REMORA_SANITIZED"))


class _Agent:
    """A real remora-agent with --control ADDR (one worker), its admin and health ports."""

    def __init__(self, workdir, control_addr, node_id, args, state_dir=None):
        self.admin, self.health = free_port(), free_port()
        self.state_dir = state_dir or os.path.join(workdir, node_id + ".state")
        argv = [AGENT, "--listen", f"127.0.0.1:{free_port()}", "--control", control_addr, "--node-id", node_id,
                "--state-dir", self.state_dir, "--workers", "1", "--admin", f"127.0.0.1:{self.admin}",
                "--health", f"127.0.0.1:{self.health}"] + list(args)
        self.proc = Proc(argv, os.path.join(workdir, f"{node_id}.{time.monotonic_ns()}.log"))
        wait_port("127.0.0.1", self.health, 10, self.proc)

    def log(self):
        return self.proc.log_text()

    def in_service(self, version):
        return f"snapshot version {version} in service" in self.log()

    def ready(self):
        try:
            return http_get("127.0.0.1", self.health, "/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self):
        return self.proc.stop(timeout=10)


@pytest.fixture
def agent_factory(tmp_path, request):
    started = []

    def start(*a, **kw):
        ag = _Agent(str(tmp_path), *a, **kw)
        started.append(ag)
        return ag

    yield start
    rcs = [a.stop() for a in started]
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for a in started:
            print(f"---- agent log ----\n{a.log()[-4000:]}")
    assert all(rc == 0 for rc in rcs), f"an agent did not exit 0 on SIGTERM: {rcs}"


def _services(n):
    # names padded so that the snapshot is comfortably over 64 KiB
    return "---\n".join(service_doc(f"svc-{i:04d}-{'x' * 40}", [f"127.0.0.1:{20000 + i}", f"127.0.0.2:{20000 + i}"])
                        for i in range(n))


def test_dns_name_and_a_snapshot_over_the_default_window(control_factory, agent_factory, tmp_path):
    cp = control_factory()
    r = cp.ctl("apply", "-f", "-", stdin=_services(1500))
    assert r.rc == 0, r
    a = agent_factory(f"localhost:{cp.port}", "dns-node", cp.agent_args("dns-node"))
    wait_until(lambda: a.in_service(1), timeout=15, what="the snapshot in service")
    assert "snapshot version 1 in service (1500 services)" in a.log()
    size = os.path.getsize(os.path.join(a.state_dir, "snapshot.pb"))
    assert size > 2 * 65535, f"the snapshot is {size} bytes: the test must exceed the default 64 KiB window"
    st = wait_until(lambda: (x := agent_status(cp, "dns-node")) and x["appliedVersion"] == 1 and x, what="the ACK")
    assert st["connected"] and st["nackReason"] == ""
    wait_until(lambda: os.path.exists(os.path.join(a.state_dir, "identity.crt")), timeout=10, what="its certificate")


def _tls_server(cert, key, stop):
    """A TLS listener on loopback with ALPN h2 that completes handshakes and sends nothing: what an agent
    sees of a server whose certificate is for another name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.2)
    handshakes = []

    def run():
        while not stop.is_set():
            try:
                conn, _ = ls.accept()
            except socket.timeout:
                continue
            conn.settimeout(2)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    handshakes.append("done")
            except (ssl.SSLError, OSError) as e:
                handshakes.append(str(e))
            finally:
                conn.close()
        ls.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return ls.getsockname()[1], handshakes, t


def test_server_certificate_for_another_name_is_refused(agent_factory, tmp_path):
    w = str(tmp_path)
    ca, ca_key = throwaway_ca(w, "wire-ca")
    key, csr, cert = (os.path.join(w, f) for f in ("srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(w, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:wrong.example.test\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                    "/CN=wrong.example.test", "-keyout", key, "-out", csr], check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
                    "-extfile", ext, "-out", cert], check=True, capture_output=True, timeout=30)
    token = os.path.join(w, "token")
    with open(token, "w") as f:
        f.write("rmb1.not-a-real-token\n")
    stop = threading.Event()
    port, handshakes, t = _tls_server(cert, key, stop)
    try:
        a = agent_factory(f"127.0.0.1:{port}", "fooled", ["--trust-anchor", ca, "--identity-token", token])
        wait_until(lambda: "cannot verify the control plane" in a.log(), timeout=10, what="the agent's TLS refusal")
        line = [ln for ln in a.log().splitlines() if "cannot verify the control plane" in ln][0]
        assert f"127.0.0.1:{port}" in line and ca in line and "hostname mismatch" in line and \
            "remora-control.remora-system.svc" in line, line
        # the identity client refuses the same server, with the same reason
        wait_until(lambda: "Certify at" in a.log() and "hostname mismatch" in a.log(), timeout=10, what="Certify refused")
        assert not a.ready()
        assert handshakes, "the agent never reached the server"
    finally:
        stop.set()
        t.join(5)


class _FakeControl:
    """A cleartext HTTP/2 server (python3-h2) that answers every discovery stream, once the agent's
    Hello has arrived, with `answer(conn, stream_id)`: what remora-control never sends but a broken
    or foreign server might."""

    def __init__(self, answer):
        self.answer = answer
        self.stop = threading.Event()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.requests = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                sock, _ = self.ls.accept()
            except socket.timeout:
                continue
            sock.settimeout(0.5)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            answered = set()
            try:
                sock.sendall(conn.data_to_send())
                deadline = time.monotonic() + 5
                while not self.stop.is_set() and time.monotonic() < deadline:
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.RequestReceived):
                            self.requests.append(dict(ev.headers))
                        elif isinstance(ev, h2.events.DataReceived):
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                            if ev.stream_id not in answered:
                                answered.add(ev.stream_id)
                                self.answer(conn, ev.stream_id)
                    sock.sendall(conn.data_to_send())
            except OSError:
                pass
            finally:
                sock.close()
        self.ls.close()

    def close(self):
        self.stop.set()
        self.t.join(5)


def _grpc_head(conn, sid, extra=()):
    conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")] + list(extra))


WRONG_ANSWERS = {
    "http-503": (lambda c, s: c.send_headers(s, [(":status", "503")], end_stream=True),
                 "ended: UNAVAILABLE the control plane at {addr} answered HTTP status 503"),
    "trailers-only": (lambda c, s: c.send_headers(s, [(":status", "200"), ("content-type", "application/grpc"),
                                                      ("grpc-status", "16"), ("grpc-message", "no%20entry%21")],
                                                  end_stream=True),
                      "ended: UNAUTHENTICATED no entry!"),
    "compressed": (lambda c, s: (_grpc_head(c, s, [("grpc-encoding", "gzip")]), c.send_data(s, b"\x01\x00\x00\x00\x03abc")),
                   "ended: INTERNAL the server sent a compressed message (flag 1): this client does not accept compression"),
    "oversized": (lambda c, s: (_grpc_head(c, s), c.send_data(s, b"\x00" + (17 << 20).to_bytes(4, "big"))),
                  "ended: RESOURCE_EXHAUSTED the server sent a message of 17825792 bytes, over the bound of 16777216 bytes"),
    "not-grpc": (lambda c, s: (c.send_headers(s, [(":status", "200"), ("content-type", "text/html")]),
                               c.send_data(s, b"<html>", end_stream=True)),
                 "ended: UNKNOWN the server at {addr} is not a gRPC server (content-type 'text/html')"),
    "unparsable": (lambda c, s: (_grpc_head(c, s), c.send_data(s, b"\x00\x00\x00\x00\x02\xff\xff")),
                   "ended: INTERNAL the server sent a message that does not parse"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_wrong_answers_are_refused_with_the_reason(agent_factory, case):
    answer, expected = WRONG_ANSWERS[case]
    srv = _FakeControl(answer)
    try:
        addr = f"127.0.0.1:{srv.port}"
        a = agent_factory(addr, f"wire-{case}", ["--control-insecure"])
        want = expected.format(addr=addr)
        wait_until(lambda: want in a.log(), timeout=10, what=want)
        req = srv.requests[0]
        assert req[":method"] == "POST" and req[":path"] == "/remora.v1.Discovery/StreamSnapshots" and \
            req[":scheme"] == "http" and req[":authority"] == addr and req["content-type"] == "application/grpc" and \
            req["te"] == "trailers" and "authorization" not in req, req
        assert not a.ready()
    finally:
        srv.close()


def test_control_plane_killed_mid_stream_and_restarted(control_factory, agent_factory, tmp_path):
    cp = control_factory()
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("echo")).rc == 0
    a = agent_factory(cp.addr, "survivor", cp.agent_args("survivor"))
    wait_until(lambda: a.in_service(1), timeout=15, what="v1 in service")
    wait_until(lambda: agent_status(cp, "survivor")["appliedVersion"] == 1, what="the ACK of v1")
    cp.stop(signal.SIGKILL)
    cp.stopped_by_test = True
    wait_until(lambda: "stream to the control plane at" in a.log() and "ended: UNAVAILABLE" in a.log(), timeout=10,
               what="the agent noticing the loss")
    assert a.ready(), "the agent keeps serving its last good configuration"
    time.sleep(0.5)
    cp.start()
    cp.stopped_by_test = False
    wait_until(lambda: (x := agent_status(cp, "survivor")) and x["connected"], timeout=20, what="the reconnect")
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("echo") + "---\n" + service_doc("echo2")).rc == 0
    wait_until(lambda: a.in_service(2), timeout=10, what="v2 in service after the restart")
    wait_until(lambda: agent_status(cp, "survivor")["appliedVersion"] == 2, what="the ACK of v2")
    # the stats summaries flow on the new stream too (every 10 s by default: not waited for here)
    assert a.proc.alive()


@pytest.mark.skipif(SANITIZED, reason="sanitizer builds map shadow memory: RSS is not comparable")
def test_idle_memory_with_control(control_factory, agent_factory):
    cp = control_factory()
    assert cp.ctl("apply", "-f", "-", stdin=service_doc("echo")).rc == 0
    a = agent_factory(cp.addr, "idle", cp.agent_args("idle"))
    wait_until(lambda: a.in_service(1) and a.ready(), timeout=15, what="the agent ready")
    time.sleep(3)
    pid = a.proc.popen.pid
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    assert "libgrpc" not in maps and "libstdc++" not in maps, "the agent must not map gRPC core or libstdc++"
    with open(f"/proc/{pid}/smaps_rollup") as f:
        roll = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split()[-1] == "kB"}
    anon = roll["Anonymous"]
    # measured (docs/BENCHMARKS.md "Idle memory"): VmRSS about 9.9 MB, most of it shared library text
    # (libcrypto, libc), Pss about 2.7 MB, anonymous about 1.9 MB; with gRPC core: 19.3 MB, 4.8 MB, 3.1 MB
    # Pss is not bounded: it divides the shared libraries' pages by the processes mapping them, so it depends on what
    # else runs on the machine (5.2 MB on a machine with few other OpenSSL users); the agent's own pages are `anon`
    assert roll["Rss"] < 12 * 1024, roll
    assert anon < 2560, roll
    assert roll["Private_Dirty"] < 3 * 1024, roll
