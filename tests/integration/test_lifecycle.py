"""Lifecycle order without native sidecars (docs/lifecycle.md), with real processes:

- SIGTERM with --outbound-grace-ms: inbound stops at once (new connections refused, /ready 503), outbound keeps
  accepting, so an application signalled together with its agent can still call out while it shuts down; without
  the grace that call is refused. POST /shutdown on the admin port ends the grace and the agent exits 0.
- `remoractl await -- CMD` runs a Job-like application once the agent is ready, then tells the agent to exit, and
  exits with the application's status; it gives up after --timeout.
- GET /app-health/<container>/<probe> on the health port performs the application's original probe
  (REMORA_APP_PROBES): HTTP status passed through, gRPC health SERVING -> 200 else 503, timeouts -> 503.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import control_support
import grpc_client
import support
from procutil import Proc, clean_env, free_port, start_tool

pytestmark = pytest.mark.agent_only("the agent's lifecycle")

REMORACTL = control_support.CTL_BIN  # REMORACTL_BIN, else next to REMORA_AGENT

# the application: on SIGTERM it waits a little (its own shutdown work), then calls out through its agent
APP = r"""
import http.client, signal, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
def on_term(sig, frame):
    time.sleep(delay)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/goodbye", headers={"Host": "lifecycle.test"})
        status = c.getresponse().status
    except OSError as e:
        print("call during shutdown failed:", repr(e), flush=True)
        sys.exit(3)
    print("call during shutdown answered", status, flush=True)
    sys.exit(0 if status == 200 else 4)
signal.signal(signal.SIGTERM, on_term)
print("app up", flush=True)
while True:
    time.sleep(0.1)
"""

# a Job: one call through the agent, then exit with the given status
JOB = r"""
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/job", headers={"Host": "lifecycle.test"})
print("job call answered", c.getresponse().status, flush=True)
sys.exit(int(sys.argv[2]))
"""


def two_listener_config(workdir, origin_port):
    """`inbound` (peer: agent: the mesh's callers) and `outbound` (the application's calls), both to the origin."""
    inbound, outbound, health, admin = free_port(), free_port(), free_port(), free_port()
    path = os.path.join(workdir, "agent.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 2
admin: 127.0.0.1:{admin}
health: 127.0.0.1:{health}
drain_timeout_ms: 5000
listeners:
  - name: inbound
    address: 127.0.0.1:{inbound}
    peer: agent
    routes: [{{cluster: origin}}]
  - name: outbound
    address: 127.0.0.1:{outbound}
    routes: [{{cluster: origin}}]
clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin_port}"]
""")
    return path, inbound, outbound, health, admin


def start_agent(workdir, args, health, admin, env=None, name="agent", wait=True):
    """Starts the agent and, with `wait`, waits for its /ready (without: the caller watches it, e.g. when
    `remoractl await` may run its command and stop the agent before this process sees it ready)."""
    proc = Proc([support.AGENT] + list(args), os.path.join(workdir, f"{name}.log"), env=clean_env(env))
    p = support.Proxy(proc, 0, kind="agent", health_port=health, admin_port=admin)
    if not wait:
        return p
    try:
        support.wait_ready(p, 10)
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return p


def refused(port):
    """1 when nothing accepts on `port` any more: refused, or reset because the listener closed while this
    connection waited in its accept queue."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def get(port, path="/"):
    return support.http_get("127.0.0.1", port, path, headers={"Host": "lifecycle.test"})[0]


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def test_grace_drains_inbound_keeps_outbound_until_shutdown(workdir, h1_origin):
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    p = start_agent(workdir, ["--config", cfg, "--outbound-grace-ms", "20000"], health, admin)
    try:
        assert get(inbound) == 200 and get(outbound) == 200
        # an inbound keep-alive connection open before the signal: its in-flight request finishes
        c = socket.create_connection(("127.0.0.1", inbound), timeout=5)
        c.sendall(b"GET /slow HTTP/1.1\r\nHost: lifecycle.test\r\nx-delay-ms: 700\r\n\r\n")
        time.sleep(0.1)
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: refused(inbound), 2), "inbound still accepts during the grace"
        assert p.health("/ready")[0] == 503
        status, headers, _, _ = support.read_h1_response(c, timeout=5)
        assert status == 200 and ("connection", "close") in [(k, v.lower()) for k, v in headers]
        c.close()
        # outbound keeps accepting new connections for the grace
        for _ in range(3):
            assert get(outbound) == 200
            time.sleep(0.3)
        assert p.alive()
        m = p.metrics()
        assert support.metric(m, "remora_shutdown_requests_total", source="signal") == 1
        assert support.metric(m, "remora_shutdown_requests_total", source="admin") == 0
        # GET is not how one ends it
        assert p.admin("/shutdown")[0] == 405
        status, _, body = p.admin("/shutdown", method="POST")
        assert status == 200, body
        assert p.proc.wait(5) == 0, p.log()[-3000:]
        assert time.monotonic() - t0 < 10, "POST /shutdown did not end the 20 s grace"
        assert refused(outbound)
        log = p.log()
        assert "outbound accepted for 20000 ms more" in log and "POST /shutdown: outbound grace ended" in log
    finally:
        p.proc.stop(signal.SIGKILL)


def test_grace_ends_by_itself(workdir, h1_origin):
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    p = start_agent(workdir, ["--config", cfg], health, admin, env={"REMORA_OUTBOUND_GRACE_MS": "800"})
    try:
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(8) == 0, p.log()[-3000:]
        assert 0.7 < time.monotonic() - t0 < 6
        assert "outbound grace of 800 ms over" in p.log()
    finally:
        p.proc.stop(signal.SIGKILL)


@pytest.mark.parametrize("grace_ms,app_rc", [(5000, 0), (0, 3)])
def test_application_calls_out_during_its_shutdown(workdir, h1_origin, grace_ms, app_rc):
    """Kubernetes without native sidecars signals the application and its agent at once: the application's call
    during its own shutdown succeeds with the outbound grace and is refused without it."""
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    p = start_agent(workdir, ["--config", cfg, "--outbound-grace-ms", str(grace_ms)], health, admin)
    app = Proc([sys.executable, "-c", APP, str(outbound), "0.4"], os.path.join(workdir, "app.log"))
    try:
        assert wait_until(lambda: "app up" in app.log_text(), 5)
        p.proc.send_signal(signal.SIGTERM)
        app.send_signal(signal.SIGTERM)
        assert app.wait(10) == app_rc, app.log_text()
        if grace_ms:
            assert "call during shutdown answered 200" in app.log_text()
            assert p.alive()  # still in its grace: the application's wrapper (remoractl await) ends it
            assert p.admin("/shutdown", method="POST")[0] == 200
        assert p.proc.wait(8) == 0, p.log()[-3000:]
    finally:
        app.stop(signal.SIGKILL)
        p.proc.stop(signal.SIGKILL)


def run_await(args, timeout=30):
    t0 = time.monotonic()
    r = subprocess.run([REMORACTL, "await"] + list(args), capture_output=True, text=True, timeout=timeout,
                       env=clean_env())
    return r, time.monotonic() - t0


def test_await_runs_the_job_then_the_agent_exits(workdir, h1_origin):
    """A Job: remoractl await waits for the agent, runs the job (which calls out through it), propagates its exit
    status, and the agent, told by POST /shutdown, exits after it (no signal needed)."""
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    p = start_agent(workdir, ["--config", cfg, "--outbound-grace-ms", "30000"], health, admin)
    try:
        r, _ = run_await(["--ready-url", f"http://127.0.0.1:{health}/ready",
                          "--shutdown-url", f"http://127.0.0.1:{admin}/shutdown",
                          "--", sys.executable, "-c", JOB, str(outbound), "7"])
        assert r.returncode == 7, (r.stdout, r.stderr)
        assert "job call answered 200" in r.stdout
        assert p.proc.wait(8) == 0, p.log()[-3000:]
        assert "POST /shutdown" in p.log()
    finally:
        p.proc.stop(signal.SIGKILL)


def test_await_waits_for_readiness(workdir, h1_origin):
    """The command starts only after the agent is ready, however late the agent comes up."""
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    marker = os.path.join(workdir, "ran")
    waiter = subprocess.Popen([REMORACTL, "await", "--timeout", "20s",
                               "--ready-url", f"http://127.0.0.1:{health}/ready",
                               "--shutdown-url", f"http://127.0.0.1:{admin}/shutdown",
                               "--", sys.executable, "-c", JOB, str(outbound), "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    p = None
    try:
        time.sleep(1.0)
        assert waiter.poll() is None and not os.path.exists(marker)
        # not waited for here: await may see it ready, run the job and stop it before this test polls /ready
        p = start_agent(workdir, ["--config", cfg, "--outbound-grace-ms", "30000"], health, admin, wait=False)
        out, err = waiter.communicate(timeout=20)
        assert waiter.returncode == 0, (out, err)
        assert "job call answered 200" in out
        assert p.proc.wait(8) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(5)
        if p is not None:
            p.proc.stop(signal.SIGKILL)


def test_await_times_out_without_running_the_command(workdir):
    marker = os.path.join(workdir, "ran")
    port = free_port()
    r, took = run_await(["--timeout", "700ms", "--ready-url", f"http://127.0.0.1:{port}/ready",
                         "--", "touch", marker])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"http://127.0.0.1:{port}/ready did not answer 200 within 700 ms" in r.stderr
    assert 0.6 < took < 5
    assert not os.path.exists(marker)
    r, _ = run_await(["--timeout", "soon"])
    assert r.returncode == 2 and "--timeout 'soon'" in r.stderr


def test_await_without_command_and_with_a_killed_command(workdir, h1_origin):
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    p = start_agent(workdir, ["--config", cfg, "--outbound-grace-ms", "30000"], health, admin)
    try:
        # a postStart hook: only waits
        r, _ = run_await(["--ready-url", f"http://127.0.0.1:{health}/ready"])
        assert r.returncode == 0, r.stderr
        assert p.alive()
        # a command ended by a signal passed on to it: 128 + 15, and the agent is told to exit
        waiter = subprocess.Popen([REMORACTL, "await", "--ready-url", f"http://127.0.0.1:{health}/ready",
                                   "--shutdown-url", f"http://127.0.0.1:{admin}/shutdown",
                                   "--", sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(30)"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        try:
            assert waiter.stdout.readline().strip() == "sleeping"
            waiter.send_signal(signal.SIGTERM)
            waiter.wait(10)
            assert waiter.returncode == 128 + signal.SIGTERM, waiter.stderr.read()
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait(5)
        assert p.proc.wait(8) == 0, p.log()[-3000:]
    finally:
        p.proc.stop(signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ app probes

class SilentServer:
    """Accepts connections and never answers (a hung application)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def test_app_probes(workdir, h1_origin, tmp_path):
    grpc_proc, grpc_port = start_tool("grpc_echo_server.py", ["--health", "SERVING"], str(tmp_path), name="grpc-health")
    silent = SilentServer()
    closed = free_port()
    probes = {
        "/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": h1_origin.port, "scheme": "HTTP"}},
        "/app-health/web/livez": {"httpGet": {"path": "/live", "port": str(h1_origin.port),
                                              "httpHeaders": [{"name": "x-status", "value": "500"}]}},
        "/app-health/web/startupz": {"httpGet": {"path": "/", "port": closed}},
        "/app-health/hung/readyz": {"httpGet": {"path": "/", "port": silent.port}, "timeoutSeconds": 1},
        "/app-health/api/readyz": {"grpc": {"port": grpc_port, "service": "echo"}},
        "/app-health/tls/readyz": {"httpGet": {"path": "/", "port": h1_origin.port, "scheme": "HTTPS"}},
    }
    health, admin = free_port(), free_port()
    p = start_agent(workdir, ["--listen", f"127.0.0.1:{free_port()}", "--upstream", h1_origin.target,
                              "--health", f"127.0.0.1:{health}", "--admin", f"127.0.0.1:{admin}", "--workers", "1"],
                    health, admin, env={"REMORA_APP_PROBES": json.dumps(probes)})
    try:
        assert p.health("/app-health/web/readyz")[0] == 200
        status, _, body = p.health("/app-health/web/livez")
        assert status == 500 and b"application answered 500" in body
        status, _, body = p.health("/app-health/web/startupz")
        assert status == 503 and b"cannot connect" in body
        t0 = time.monotonic()
        status, _, body = p.health("/app-health/hung/readyz")
        assert status == 503 and b"timed out after 1000 ms" in body
        assert 0.9 < time.monotonic() - t0 < 3
        assert p.health("/app-health/tls/readyz")[0] == 501
        assert p.health("/app-health/nope/readyz")[0] == 404
        assert support.http_get("127.0.0.1", health, "/app-health/web/readyz", method="POST")[0] == 405

        status, _, body = p.health("/app-health/api/readyz")
        assert status == 200 and body == b"SERVING\n", body
        with grpc_client.channel(f"127.0.0.1:{grpc_port}") as ch:
            ch.unary_unary("/echo.Control/SetHealth", request_serializer=None, response_deserializer=None)(
                b"NOT_SERVING", timeout=5)
            status, _, body = p.health("/app-health/api/readyz")
            assert status == 503 and b"not serving" in body, body
            health_state = json.loads(ch.unary_unary("/echo.Control/Health", request_serializer=None,
                                                     response_deserializer=None)(b"", timeout=5))
        assert "echo" in health_state["services"]  # the probe asked for the configured service
        # the agent keeps serving its own endpoints and many probes at once do not block it
        assert p.health("/ready")[0] == 200
        # a probe still running at exit is answered and released (the sanitizer builds check the release)
        hung = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                                 f"http://127.0.0.1:{health}/app-health/hung/readyz"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        assert p.proc.stop(signal.SIGTERM, timeout=10) == 0, p.log()[-3000:]
        assert hung.communicate(timeout=10)[0] in ("503", "000")
    finally:
        p.proc.stop(signal.SIGKILL)
        silent.close()
        grpc_proc.stop()


def test_bad_app_probes_stop_the_start(workdir):
    r = subprocess.run([support.AGENT, "--transparent", "--outbound-port", str(free_port()), "--inbound-port",
                        str(free_port()), "--health", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}"],
                       env=clean_env({"REMORA_APP_PROBES": '{"/app-health/x/readyz": {"httpGet": {"port": 0}}}'}),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "REMORA_APP_PROBES: \"/app-health/x/readyz\": httpGet.port must be a port number" in r.stderr + r.stdout


def test_late_signals_do_not_kill_the_exit(workdir, h1_origin):
    """SIGTERM and SIGINT sent without pause until the agent is gone (as `timeout` and supervisors send the
    child's signal and then the process group's): it drains and exits 0 every time. The default action of
    a signal that lands while the exit closes its signal handles would end it with -15 instead."""
    cfg, inbound, outbound, health, admin = two_listener_config(workdir, h1_origin.port)
    for i in range(8):
        p = start_agent(workdir, ["--config", cfg], health, admin, name=f"agent{i}")
        try:
            assert get(outbound) == 200
            pid, sent, deadline = p.proc.popen.pid, 0, time.monotonic() + 10
            while p.proc.popen.poll() is None and time.monotonic() < deadline:
                try:
                    os.kill(pid, signal.SIGTERM if sent % 2 == 0 else signal.SIGINT)
                except ProcessLookupError:
                    break
                sent += 1
            assert p.proc.wait(10) == 0, f"run {i}: {sent} signals; " + p.log()[-3000:]
        finally:
            p.proc.stop(signal.SIGKILL)
