"""Opaque TCP on an explicit listener (`protocol: tcp`, docs/transparent.md), on loopback, no root needed.

A listener relays every connection, byte for byte and without detection, to an endpoint of its
cluster (round robin over two server-speaks-first banner servers). Checked: the banner arrives at
once, bulk data both ways with half-close, the balancer, the metrics, an unreachable upstream, and
a drain with an opaque connection open.
"""

import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

import support
from procutil import free_port

pytestmark = pytest.mark.agent_only("opaque TCP is the agent's")

HERE = os.path.dirname(os.path.abspath(__file__))
BANNER = os.path.join(os.path.dirname(HERE), "tools", "banner_server.py")


def start_banner(port):
    p = subprocess.Popen(["/usr/bin/python3", BANNER, f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    assert ready and p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def banners():
    ports = [free_port(), free_port()]
    procs = [start_banner(p) for p in ports]
    try:
        yield ports
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
            p.stdout.close()


def start(workdir, endpoints, drain_timeout_ms=None):
    port = free_port()
    cfg = os.path.join(workdir, "opaque.yaml")
    eps = ", ".join(f'"127.0.0.1:{p}"' for p in endpoints)
    with open(cfg, "w") as f:
        f.write(f"workers: 2\nlisteners:\n  - name: db\n    address: 127.0.0.1:{port}\n    protocol: tcp\n    cluster: db\n"
                f"clusters:\n  - name: db\n    protocol: tcp\n    load_balancer: {{type: round_robin}}\n"
                f"    endpoints: [{eps}]\n")
    return support.start_proxy(workdir, config_path=cfg, listen_port=port, drain_timeout_ms=drain_timeout_ms)


def exchange(port, payload):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    banner = b""
    while not banner.endswith(b"\n"):
        chunk = s.recv(1)
        assert chunk, "closed before the banner"
        banner += chunk
    banner_ms = (time.monotonic() - t0) * 1000
    got = bytearray()

    def reader():
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return
            got.extend(chunk)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)  # half-close: the echo must still come back whole
    t.join(20)
    s.close()
    return banner.decode(), banner_ms, bytes(got)


def test_opaque_listener_relays_both_ways(workdir, banners):
    p = start(workdir, banners)
    try:
        seen = set()
        for i in range(4):
            payload = os.urandom(3 << 20) if i == 0 else b"x" * 1000
            banner, banner_ms, echo = exchange(p.port, payload)
            assert banner.startswith("220 remora-banner 127.0.0.1:")
            assert banner_ms < 100, banner_ms
            assert echo == payload
            seen.add(banner.split()[-1])
        assert seen == {f"127.0.0.1:{port}" for port in banners}  # round robin over both endpoints
        m = p.metrics()
        assert support.metric(m, "remora_detect_total", listener="db", result="skipped") == 4
        assert support.metric(m, "remora_tcp_connections_total", listener="db") == 4
        assert support.metric(m, "remora_tcp_bytes_total", listener="db", direction="rx") == (3 << 20) + 3000
        assert support.metric(m, "remora_upstream_connections_total", cluster="db") == 4
        deadline = time.monotonic() + 5
        while support.metric(p.metrics(), "remora_tcp_connections_active", listener="db") != 0:
            assert time.monotonic() < deadline, "opaque connections still open after both half-closes"
            time.sleep(0.05)
    finally:
        assert p.proc.stop() == 0


def test_unreachable_upstream_closes_and_counts(workdir):
    p = start(workdir, [free_port()])  # nothing listens there
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.settimeout(10)
        assert s.recv(100) == b""  # closed: an opaque stream has no error message to send
        s.close()
        m = p.metrics()
        assert support.metric(m, "remora_tcp_connect_failures_total", listener="db") == 1
    finally:
        assert p.proc.stop() == 0


def test_drain_with_an_open_opaque_connection(workdir, banners):
    p = start(workdir, banners[:1], drain_timeout_ms=300)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.settimeout(10)
    assert s.recv(100).startswith(b"220 ")
    t0 = time.monotonic()
    assert p.proc.stop(timeout=10) == 0  # not cut at SIGTERM: closed at the drain timeout, then a clean exit
    assert time.monotonic() - t0 >= 0.25
    assert s.recv(100) == b""
    s.close()


def test_clients_that_reset_leave_no_connection_behind(workdir, banners):
    """Clients that send while not reading the echo, then reset: each relayed connection is closed at once,
    both sides. A reset makes libuv mark the client's stream unwritable, and h2o 2.2.5 drops the error of a
    write to it, so a relay that treated the reset as a FIN and went on writing the echo waited for a write
    callback that never comes: two descriptors held until the idle timeout (300 s)."""
    px = start(workdir, banners[:1])
    try:
        def fds():
            return len(os.listdir(f"/proc/{px.proc.pid}/fd"))

        before = fds()
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            sent, deadline = 0, time.monotonic() + 5
            while sent < 8 * 1024 * 1024 and time.monotonic() < deadline:  # until the echo fills every buffer
                try:
                    sent += s.send(b"x" * 65536)
                except BlockingIOError:
                    if select.select([], [s], [], 0.2)[1] == []:
                        break
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            s.close()
        deadline = time.monotonic() + 10
        while fds() > before + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fds() <= before + 2, f"descriptors: {before} before 20 reset clients, {fds()} after"
    finally:
        px.proc.stop()
