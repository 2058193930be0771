"""Graceful drain: SIGTERM under load (the nghttpx stand-in gets its equivalent, SIGQUIT).

Every request the proxy accepted must complete successfully; requests it never accepted (an HTTP/2
stream above the GOAWAY's last-stream-id or refused with REFUSED_STREAM, an HTTP/1.1 connection
closed before any response byte) may fail. New connections are refused, and the process exits 0.
"""

import json
import socket
import threading
import time

import h2.errors
import h2.exceptions
import pytest

from h2client import H2Client
from support import NoResponse, read_h1_response

SLOW_MS = 1500


class H1Outcome:
    def __init__(self):
        self.ok = 0
        self.not_accepted = 0
        self.failures = []


def h1_worker(port, path, delay_ms, stop, out, loop=True, deadline_s=20):
    """Requests on one keep-alive connection until stopped or the connection ends."""
    end = time.monotonic() + deadline_s
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        out.not_accepted += 1
        return
    n = 0
    with s:
        while time.monotonic() < end:
            req = f"GET {path}/{n} HTTP/1.1\r\nHost: drain.test\r\nx-delay-ms: {delay_ms}\r\n\r\n".encode()
            try:
                s.sendall(req)
            except OSError:
                out.not_accepted += 1
                return
            try:
                status, headers, body, _ = read_h1_response(s, timeout=15)
            except NoResponse:
                out.not_accepted += 1
                return
            except (OSError, ValueError) as e:
                out.failures.append(f"h1 {path}/{n}: {e!r}")
                return
            if status != 200 or json.loads(body)["path"] != f"{path}/{n}":
                out.failures.append(f"h1 {path}/{n}: status {status}")
                return
            out.ok += 1
            n += 1
            if ("connection", "close") in [(k, v.lower()) for k, v in headers] or not loop or stop.is_set():
                return


class H2Outcome:
    def __init__(self):
        self.clients = []
        self.errors = []


def h2_worker(port, path, delay_ms, concurrency, stop, out, total=None, deadline_s=20):
    """Keeps `concurrency` streams in flight on one connection until stopped, GOAWAY, or close."""
    end = time.monotonic() + deadline_s
    try:
        c = H2Client("127.0.0.1", port, timeout=5)
    except OSError as e:
        out.errors.append(f"connect: {e!r}")
        return
    out.clients.append(c)
    inflight = set()
    n = 0
    try:
        while time.monotonic() < end and not c.closed:
            may_open = c.goaway is None and not stop.is_set() and (total is None or n < total)
            if may_open and len(inflight) < concurrency:
                try:
                    inflight.add(c.request("GET", f"{path}/{n}", headers=[("x-delay-ms", str(delay_ms))]))
                except h2.exceptions.ProtocolError:
                    break
                n += 1
                continue
            c.pump(0.05)
            inflight = {sid for sid in inflight if not c.responses[sid].done}
            if not inflight and not may_open:
                break
    except Exception as e:  # noqa: BLE001 - reported as a failure below
        out.errors.append(f"h2 client: {e!r}")
    finally:
        c.close()


def h2_failures(out, path_prefix):
    """Streams that were accepted (id <= the last GOAWAY's last-stream-id, not REFUSED) but did not succeed."""
    bad = []
    for c in out.clients:
        last = c.goaway[0] if c.goaway is not None else None
        for sid, r in c.responses.items():
            if r.ended and r.status == 200:
                path = json.loads(r.data)["path"]
                if not path.startswith(path_prefix):
                    bad.append(f"stream {sid}: wrong response {path}")
                continue
            if r.reset_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                continue
            if last is not None and sid > last:
                continue
            bad.append(f"stream {sid}: status {r.status} reset {r.reset_code} ended {r.ended} (goaway {c.goaway})")
    return bad + out.errors


def h2_ok(out):
    return sum(1 for c in out.clients for r in c.responses.values() if r.ended and r.status == 200)


def connect_refused(port):
    """True if a new connection is refused, or accepted and closed without an answer to a request."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return True
    except OSError:
        return True
    with s:
        try:
            s.sendall(b"GET /late HTTP/1.1\r\nHost: late.test\r\n\r\n")
            read_h1_response(s, timeout=3)
        except NoResponse:
            return True
        except OSError:
            return True
        return False


def test_drain_under_load(proxy_factory, h2_origin):
    px = proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", workers=2, drain_timeout_ms=8000)
    stop = threading.Event()
    threads = []

    def spawn(fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        threads.append(t)

    base_active = h2_origin.stats()["active"]
    # slow requests first: they are in the origin, i.e. accepted, before the signal
    slow_h1 = [H1Outcome() for _ in range(4)]
    for i, o in enumerate(slow_h1):
        spawn(h1_worker, px.port, f"/slow-h1-{i}", SLOW_MS, stop, o, False)
    slow_h2 = H2Outcome()
    spawn(h2_worker, px.port, "/slow-h2", SLOW_MS, 4, stop, slow_h2, 4)
    deadline = time.monotonic() + 5
    while h2_origin.stats()["active"] - base_active < 8:
        assert time.monotonic() < deadline, "slow requests did not reach the origin"
        time.sleep(0.02)

    # then load: HTTP/1.1 keep-alive loops and HTTP/2 connections with 4 streams in flight each
    load_h1 = [H1Outcome() for _ in range(3)]
    for i, o in enumerate(load_h1):
        spawn(h1_worker, px.port, f"/load-h1-{i}", 20, stop, o, True)
    load_h2 = H2Outcome()
    for i in range(3):
        spawn(h2_worker, px.port, f"/load-h2-{i}", 20, 4, stop, load_h2)
    time.sleep(0.4)

    t0 = time.monotonic()
    px.proc.send_signal(px.drain_signal)
    px.stopped_by_test = True
    time.sleep(0.3)
    assert connect_refused(px.port), "a new connection was served after the drain signal"
    if px.kind == "agent":
        try:
            status = px.health("/ready", timeout=2)[0]
        except OSError:
            status = None
        assert status != 200, "/ready still answers 200 while draining"

    for t in threads:
        t.join(timeout=20)
    stop.set()
    assert not any(t.is_alive() for t in threads), "a client is stuck"
    rc = px.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0

    failures = []
    for o in slow_h1 + load_h1:
        failures += o.failures
    failures += h2_failures(slow_h2, "/slow-h2") + h2_failures(load_h2, "/load-h2")
    assert not failures, "accepted requests failed during the drain:\n" + "\n".join(failures[:20])
    assert [o.ok for o in slow_h1] == [1, 1, 1, 1], "a slow HTTP/1.1 request did not complete"
    assert h2_ok(slow_h2) == 4, "a slow HTTP/2 request did not complete"
    assert sum(o.ok for o in load_h1) + h2_ok(load_h2) >= 20, "there was hardly any load"
    for c in slow_h2.clients + load_h2.clients:
        assert c.goaway is not None, "an HTTP/2 client never got GOAWAY"
    assert rc == 0, f"exit code {rc} after the drain signal\n{px.log()[-3000:]}"
    assert elapsed < 8, f"drain took {elapsed:.1f}s"


@pytest.mark.agent_only("nghttpx keeps idle HTTP/1.1 connections open during its graceful shutdown")
def test_drain_closes_idle_connections_promptly(proxy_factory, h2_origin):
    px = proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", drain_timeout_ms=8000)
    s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
    s.sendall(b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n")
    assert read_h1_response(s)[0] == 200
    c = H2Client("127.0.0.1", px.port)
    assert c.get("/idle-h2").status == 200
    t0 = time.monotonic()
    px.proc.send_signal(px.drain_signal)
    px.stopped_by_test = True
    try:
        s.settimeout(5)
        try:
            assert s.recv(1) == b"", "idle HTTP/1.1 connection got data instead of a close"
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 3, "idle HTTP/1.1 connection not closed promptly"
        deadline = time.monotonic() + 3
        while c.goaway is None and not c.closed and time.monotonic() < deadline:
            c.pump(0.1)
        assert c.goaway is not None, "idle HTTP/2 connection got no GOAWAY"
        assert c.goaway[1] == h2.errors.ErrorCodes.NO_ERROR
    finally:
        s.close()
        c.close()
    rc = px.proc.wait(timeout=5)
    assert rc == 0, f"exit code {rc}"
    assert time.monotonic() - t0 < 5


@pytest.mark.agent_only("nghttpx has no drain timeout option")
def test_drain_timeout_bounds_exit(proxy_factory, h2_origin):
    px = proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", drain_timeout_ms=1000)
    c = H2Client("127.0.0.1", px.port)
    sid = c.request("GET", "/too-slow", headers=[("x-delay-ms", "20000")])
    c.pump(0.3)
    t0 = time.monotonic()
    px.proc.send_signal(px.drain_signal)
    px.stopped_by_test = True
    rc = px.proc.wait(timeout=6)
    elapsed = time.monotonic() - t0
    c.close()
    assert rc == 0, f"exit code {rc} (None: still running 6 s after SIGTERM with a 1 s drain timeout)"
    assert elapsed < 3.5, f"exit took {elapsed:.1f}s with drain_timeout_ms=1000"
    assert not c.responses[sid].ended


@pytest.mark.agent_only("nghttpx exits on SIGINT at once")
def test_sigint_drains_too(proxy_factory, h2_origin):
    import signal
    px = proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", drain_timeout_ms=5000)
    c = H2Client("127.0.0.1", px.port)
    sid = c.request("GET", "/sigint", headers=[("x-delay-ms", "800")])
    c.pump(0.2)
    px.proc.send_signal(signal.SIGINT)
    px.stopped_by_test = True
    assert c.wait([sid], timeout=5)
    r = c.responses[sid]
    c.close()
    assert r.status == 200 and json.loads(r.data)["path"] == "/sigint"
    assert px.proc.wait(timeout=5) == 0
