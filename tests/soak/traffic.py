#!/usr/bin/python3
"""The soak's mixed traffic (docs/soak.md), run in the client pod of the one-machine mesh as its apps
would: by Service name or virtual address, through the pod's outbound agent, no proxy settings.

    traffic.py --duration SECONDS --out FILE [--gap SECONDS] [--tools DIR]

One thread per kind, each a paced loop (--gap seconds between requests) until the deadline:

    h1          HTTP/1.1 keep-alive GETs to http://web.default.svc/ (http.client; 200 and the path echoed)
    h1_faults   the same to Service web-faults (10.96.77.30:80), whose endpoint is the fault proxy; a pause
                of 400 ms after every 5th request outlasts the pooled connection's idle timeout (250 ms,
                tests/soak/mesh-soak.yaml), so the agent keeps opening new connections through the proxy
    h2          HTTP/2 (h2c, prior knowledge) GETs to http://web.default.svc/ on one connection (python3-h2)
    grpc_unary  echo.Echo/Unary to echo.default.svc:9090 (python3-grpcio)
    grpc_stream echo.Echo/Bidi to echo.default.svc:9090: one message at a time, each echo a request;
                a stream lives 30 s, then ends and a new one starts
    tcp         opaque TCP to Service tcp-echo (10.96.77.20:7000, banner_server.py in the echo pod):
                connect and read the banner, then 20 line exchanges, then close; each is a request

Every request is one JSON line in --out: {"k": kind, "t0": start, "t1": end (unix time), "ok": bool,
"err": reason or null, "acc": whether the client's own agent accepted the connection (false only when
connecting to it was refused)}. Each client waits at most 10 s for an answer.
"""

import argparse
import http.client
import json
import os
import queue
import socket
import sys
import threading
import time

TIMEOUT = 10.0
WEB = ("web.default.svc", 80)
FAULTS = ("10.96.77.30", 80)
TCP = ("10.96.77.20", 7000)
GRPC = "echo.default.svc:9090"


class Recorder:
    def __init__(self, path):
        self.f = open(path, "w", buffering=1 << 16)
        self.lock = threading.Lock()

    def add(self, kind, t0, ok, err=None, acc=True):
        rec = {"k": kind, "t0": round(t0, 4), "t1": round(time.time(), 4), "ok": ok, "err": err, "acc": acc}
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")

    def close(self):
        with self.lock:
            self.f.close()


def refused(e):
    return isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e)


def h1_loop(rec, kind, addr, host, deadline, gap, pause_every=0, pause=0.0):
    conn, n = None, 0
    while time.monotonic() < deadline:
        n += 1
        path = f"/soak/{kind}/{n}"
        t0 = time.time()
        fresh = conn is None
        try:
            if conn is None:
                conn = http.client.HTTPConnection(*addr, timeout=TIMEOUT)
                conn.connect()
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or path.encode() not in body:
                rec.add(kind, t0, False, f"status {r.status}")
            else:
                rec.add(kind, t0, True)
            if r.will_close:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is a record
            rec.add(kind, t0, False, f"{type(e).__name__}: {e} ({'new' if fresh else 'reused'} connection)",
                    acc=not (fresh and refused(e)))
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(pause if pause_every and n % pause_every == 0 else gap)
    if conn is not None:
        conn.close()


def h2_loop(rec, deadline, gap, tools):
    sys.path.insert(0, tools)
    from h2client import H2Client

    client, n = None, 0
    while time.monotonic() < deadline:
        n += 1
        path = f"/soak/h2/{n}"
        t0 = time.time()
        fresh = client is None
        try:
            if client is None:
                client = H2Client(*WEB)
            r = client.get(path, timeout=TIMEOUT, authority="web.default.svc")
            if r.reset_code is not None:
                raise RuntimeError(f"RST_STREAM {r.reset_code}")
            if not r.ended:
                raise RuntimeError("no complete response within the timeout")
            if r.status != 200 or path.encode() not in bytes(r.data):
                rec.add("h2", t0, False, f"status {r.status}")
            else:
                rec.add("h2", t0, True)
            if client.closed or client.goaway is not None:
                client.close()  # the agent ended the connection gracefully: the next request opens a new one
                client = None
        except Exception as e:  # noqa: BLE001
            rec.add("h2", t0, False, f"{type(e).__name__}: {e} ({'new' if fresh else 'reused'} connection)",
                    acc=not (fresh and refused(e)))
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            client = None
        time.sleep(gap)
    if client is not None:
        client.close()


def grpc_unary_loop(rec, deadline, gap, tools):
    sys.path.insert(0, tools)
    from grpc_client import Echo, channel

    with channel(GRPC) as ch:
        echo = Echo(ch)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            msg = b"u%d" % n
            t0 = time.time()
            try:
                got = echo.unary(msg, timeout=TIMEOUT)
                rec.add("grpc_unary", t0, got == msg, None if got == msg else f"echo {got!r}")
            except Exception as e:  # noqa: BLE001
                rec.add("grpc_unary", t0, False, f"{type(e).__name__}: {_grpc_err(e)}", acc=not refused(e))
            time.sleep(gap)


def _grpc_err(e):
    code = getattr(e, "code", None)
    details = getattr(e, "details", None)
    if callable(code) and callable(details):
        return f"{code().name} {details()}"
    return str(e)


def grpc_stream_loop(rec, deadline, gap, tools):
    sys.path.insert(0, tools)
    from grpc_client import Echo, channel

    with channel(GRPC) as ch:
        echo = Echo(ch)
        n = 0
        while time.monotonic() < deadline:
            q = queue.Queue()

            def requests():
                while True:
                    m = q.get()
                    if m is None:
                        return
                    yield m

            ends = min(deadline, time.monotonic() + 30)
            t0 = time.time()
            try:
                it = echo.bidi(requests(), timeout=60)
                while time.monotonic() < ends:
                    n += 1
                    msg = b"s%d" % n
                    t0 = time.time()
                    q.put(msg)
                    got = next(it)
                    rec.add("grpc_stream", t0, got == msg, None if got == msg else f"echo {got!r}")
                    time.sleep(gap)
                q.put(None)
                for extra in it:
                    rec.add("grpc_stream", time.time(), False, f"unexpected message {extra!r}")
            except Exception as e:  # noqa: BLE001
                q.put(None)
                rec.add("grpc_stream", t0, False, f"{type(e).__name__}: {_grpc_err(e)}", acc=not refused(e))
                time.sleep(gap)


def tcp_loop(rec, deadline, gap):
    while time.monotonic() < deadline:
        t0 = time.time()
        s = None
        try:
            s = socket.create_connection(TCP, timeout=TIMEOUT)
        except OSError as e:
            rec.add("tcp", t0, False, f"connect: {e}", acc=not refused(e))
            time.sleep(gap)
            continue
        try:
            f = s.makefile("rb")
            banner = f.readline()
            if not banner.startswith(b"220 remora-banner"):
                raise RuntimeError(f"banner {banner[:60]!r}")
            rec.add("tcp", t0, True)
            for i in range(20):
                if time.monotonic() >= deadline:
                    break
                time.sleep(gap)
                t0 = time.time()
                line = b"line %d %s\n" % (i, b"x" * 64)
                s.sendall(line)
                got = f.readline()
                if got != line:
                    raise RuntimeError(f"echo {got[:60]!r}")
                rec.add("tcp", t0, True)
            s.shutdown(socket.SHUT_WR)
            t0 = time.time()
            if f.read() != b"":
                raise RuntimeError("bytes after the half-close")
        except Exception as e:  # noqa: BLE001
            rec.add("tcp", t0, False, f"{type(e).__name__}: {e}")
        finally:
            s.close()
        time.sleep(gap)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--gap", type=float, default=0.05)
    p.add_argument("--tools", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
    a = p.parse_args()
    deadline = time.monotonic() + a.duration
    rec = Recorder(a.out)
    tools = os.path.abspath(a.tools)
    jobs = [(h1_loop, (rec, "h1", WEB, "web.default.svc", deadline, a.gap)),
            (h1_loop, (rec, "h1_faults", FAULTS, "web-faults.default.svc", deadline, a.gap, 5, 0.4)),
            (h2_loop, (rec, deadline, a.gap, tools)),
            (grpc_unary_loop, (rec, deadline, a.gap, tools)),
            (grpc_stream_loop, (rec, deadline, a.gap, tools)),
            (tcp_loop, (rec, deadline, a.gap))]
    threads = [threading.Thread(target=f, args=args, daemon=True) for f, args in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 90)
    rec.close()
    print(json.dumps({"threads_alive": sum(t.is_alive() for t in threads)}))


if __name__ == "__main__":
    main()
