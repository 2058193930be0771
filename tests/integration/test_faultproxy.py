"""The soak's fault proxy (tests/soak/faultproxy.py, docs/soak.md) on loopback, real sockets: each fault
does what it is configured to do, the control port changes the mix at run time, the connection bound
holds, the counters match the events, and the proxy exits by itself after --ttl with its counters as JSON.
No agent involved; runs in a few seconds.
"""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from procutil import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(os.path.dirname(HERE), "soak", "faultproxy.py")
PY = "/usr/bin/python3"


class EchoServer:
    """Echoes every byte; counts accepted connections and the ones that ended with a reset."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.resets = 0
        self.stop = False
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(10)
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except ConnectionResetError:
            self.resets += 1
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


@pytest.fixture
def echo():
    e = EchoServer()
    yield e
    e.close()


class FaultProxy:
    def __init__(self, tmp_path, upstream_port, *args, ttl=30):
        self.port, self.ctl_port = free_port(), free_port()
        self.events = tmp_path / f"events-{self.port}.jsonl"
        self.p = subprocess.Popen([PY, PROXY, "--listen", f"127.0.0.1:{self.port}", "--upstream", f"127.0.0.1:{upstream_port}",
                                   "--control", f"127.0.0.1:{self.ctl_port}", "--ttl", str(ttl), "--events", str(self.events),
                                   *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # it prints "ready" once listening (a probe connection would count as one of the test's)
        ready = []
        t = threading.Thread(target=lambda: ready.append(self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(10)
        if ready != ["ready\n"]:
            self.kill()
            raise AssertionError(f"the fault proxy did not start: {ready} {self.p.stderr.read()[-2000:]}")

    def ctl(self, line):
        with socket.create_connection(("127.0.0.1", self.ctl_port), timeout=5) as s:
            s.sendall(line.encode() + b"\n")
            return json.loads(s.makefile().readline())

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def finish(self):
        """SIGTERM; the counters it prints at exit."""
        if self.p.poll() is None:
            self.p.terminate()
        out, err = self.p.communicate(timeout=10)
        assert self.p.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def event_list(self):
        with open(self.events) as f:
            return [json.loads(line) for line in f]

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def roundtrip(s, data=b"ping"):
    t0 = time.monotonic()
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - t0


def test_plain_forwarding_and_counters(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port)
    try:
        with fp.connect() as s:
            for i in range(5):
                assert roundtrip(s, b"x%d" % i * 1000)[0] == b"x%d" % i * 1000
            s.shutdown(socket.SHUT_WR)  # a half-close passes through: the echo server ends, so does the proxy
            assert s.recv(10) == b""
        stats = fp.finish()
        assert stats["accepted"] == 1 and stats["faults"]["none"] == 1
        assert stats["bytes_down_to_up"] == stats["bytes_up_to_down"] == 5 * 2000
        assert echo.accepted == 1 and fp.event_list() == []
    finally:
        fp.kill()


def test_drop_closes_at_accept_without_dialling(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--drop", "1")
    try:
        for _ in range(3):
            with fp.connect() as s:
                s.settimeout(5)
                try:
                    assert s.recv(10) == b""
                except ConnectionResetError:
                    pass
        stats = fp.finish()
        assert stats["faults"]["drop"] == 3 and echo.accepted == 0
        assert [e["event"] for e in fp.event_list()] == ["drop"] * 3
    finally:
        fp.kill()


def test_reset_mid_stream_both_ways(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--reset", "1", "--reset-min-ms", "300", "--reset-max-ms", "300")
    try:
        with fp.connect() as s:
            t0 = time.monotonic()
            assert roundtrip(s)[0] == b"ping"  # the stream works until the reset is due
            with pytest.raises(ConnectionResetError):
                while time.monotonic() - t0 < 5:
                    if roundtrip(s)[0] == b"":
                        break
                    time.sleep(0.05)
            assert 0.25 < time.monotonic() - t0 < 2
        deadline = time.monotonic() + 5
        while echo.resets < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert echo.resets == 1  # the upstream side got a RST too
        stats = fp.finish()
        assert stats["faults"]["reset"] == 1 and stats["reset_done"] == 1
        ev = fp.event_list()
        assert [e["event"] for e in ev] == ["reset"] and ev[0]["after_ms"] == 300
    finally:
        fp.kill()


def test_reset_of_a_closed_connection_is_moot(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--reset", "1", "--reset-min-ms", "1000", "--reset-max-ms", "1000")
    try:
        with fp.connect() as s:
            assert roundtrip(s)[0] == b"ping"
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b""
        time.sleep(0.3)
        stats = fp.finish()
        assert stats["reset_done"] == 0 and stats["reset_moot"] == 1 and fp.event_list() == []
    finally:
        fp.kill()


def test_delay_per_chunk(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--delay", "1", "--delay-ms", "150")
    try:
        with fp.connect() as s:
            for _ in range(3):
                got, took = roundtrip(s)
                assert got == b"ping" and took >= 0.29, took  # 150 ms each way
        assert fp.finish()["faults"]["delay"] == 1
    finally:
        fp.kill()


def test_stall_stops_reading_for_the_configured_time(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--stall", "1", "--stall-ms", "600", "--stall-at-max-ms", "0")
    try:
        with fp.connect() as s:
            time.sleep(0.1)  # the stall starts at accept (stall-at-max-ms 0)
            got, took = roundtrip(s)
            assert got == b"ping" and 0.4 <= took < 3, took
            got, took = roundtrip(s)  # once only
            assert got == b"ping" and took < 0.3, took
        stats = fp.finish()
        assert stats["faults"]["stall"] == 1 and stats["stall_done"] == 1
        assert [e["event"] for e in fp.event_list()] == ["stall"]
    finally:
        fp.kill()


def test_control_port_changes_the_mix_at_run_time(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port)
    try:
        with fp.connect() as s:
            assert roundtrip(s)[0] == b"ping"
        assert "error" in fp.ctl("set drop=0.7 reset=0.7")  # more than 1 in all: refused, mix unchanged
        assert "error" in fp.ctl("set bogus=1")
        assert fp.ctl("get")["drop"] == 0
        assert fp.ctl("set drop=1")["drop"] == 1
        with fp.connect() as s:
            s.settimeout(5)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        stats = fp.ctl("stats")
        assert stats["faults"]["none"] == 1 and stats["faults"]["drop"] == 1 and stats["mix_changes"] == 1
        assert [e["event"] for e in fp.event_list()] == ["mix", "drop"]
        fp.finish()
    finally:
        fp.kill()


def test_probabilities_and_events_agree(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--drop", "0.3", "--delay", "0.3", "--delay-ms", "1", "--seed", "7")
    try:
        for _ in range(100):
            with fp.connect() as s:
                s.settimeout(5)
                try:
                    s.sendall(b"p")
                    s.recv(10)
                except (ConnectionResetError, BrokenPipeError):
                    pass
        stats = fp.finish()
        f = stats["faults"]
        assert sum(f.values()) == stats["accepted"] == 100
        assert 15 <= f["drop"] <= 45 and 15 <= f["delay"] <= 45 and f["reset"] == f["stall"] == 0, f
        assert sum(1 for e in fp.event_list() if e["event"] == "drop") == f["drop"]
        assert echo.accepted == 100 - f["drop"]
    finally:
        fp.kill()


def test_max_connections_and_ttl(tmp_path, echo):
    fp = FaultProxy(tmp_path, echo.port, "--max-conns", "2", ttl=2)
    try:
        held = [fp.connect() for _ in range(2)]
        for s in held:
            assert roundtrip(s)[0] == b"ping"
        try:
            with fp.connect() as s:  # the third at once: closed at accept
                s.settimeout(5)
                assert s.recv(10) == b""
        except ConnectionResetError:
            pass  # the close at accept can reset the connection before connect() or recv() returns
        t0 = time.monotonic()
        out, err = fp.p.communicate(timeout=10)  # exits by itself after --ttl
        assert fp.p.returncode == 0 and time.monotonic() - t0 < 3, err
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["accepted"] == 2 and stats["over_limit"] == 1 and stats["max_active"] == 2
        assert [e["event"] for e in fp.event_list()] == ["over_limit"]
        for s in held:
            s.close()
    finally:
        fp.kill()


def test_bad_arguments_are_refused():
    r = subprocess.run([PY, PROXY, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--drop", "0.6", "--reset", "0.6"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "more than 1" in r.stderr
