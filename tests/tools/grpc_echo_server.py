#!/usr/bin/python3
"""A gRPC echo server in python3-grpcio with no generated code: messages are raw bytes.

Service echo.Echo:
  Unary         returns the request (or, with x-echo-metadata, a JSON report of what the server saw)
  ClientStream  returns the concatenation of every request message; trailing metadata x-count: N
  ServerStream  sends x-count (default 3) messages: the request, or x-size bytes of a pattern
                (byte k of message i is (i + k) & 0xff), x-interval-ms apart
  Bidi          echoes each message as it arrives
Service echo.Control:
  Stats         JSON: {"calls": N, "active": [ids], "cancelled": [ids], "completed": [ids]}
                (ids are the x-call-id request metadata values; "cancelled" = the RPC terminated
                before its handler finished: client cancel, deadline, or connection loss)

Behaviour, from request metadata (all optional):
  x-call-id: ID               names the call in Stats
  x-sleep-ms: N               wait N ms before answering (ends early, and is recorded, if cancelled)
  x-fail-code: N              fail with status N (int), message x-fail-message (or UTF-8 x-fail-message-bin), trailing metadata
                              from every x-fail-trailer-NAME: VALUE (as NAME: VALUE); with x-fail-binary
                              also detail-bin: 00 01 02 ff
  x-fail-after: N             (streaming) fail as above after N response messages
  x-cancel-after: N           (ServerStream) the server cancels the RPC after N messages
  x-echo-metadata: 1          (Unary) body = JSON {"metadata": [[k, v]...], "time_remaining": s|null}
  x-custom*                   echoed back in initial metadata as initial-<key> and in trailing
                              metadata as trailing-<key> (binary -bin keys too)

With --health SERVING|NOT_SERVING, also grpc.health.v1.Health/Check (hand-decoded HealthCheckRequest,
hand-encoded HealthCheckResponse{status}: the given status for every service), plus
  echo.Control/SetHealth  body b"SERVING" or b"NOT_SERVING": the status Check answers from now on
  echo.Control/Health     JSON: {"status": "SERVING"|"NOT_SERVING", "checks": N, "services": [the last 100 asked]}
Health checks are not counted in Stats.

Usage: grpc_echo_server.py [--host 127.0.0.1] [--port 0] [--ready-file F] [--workers 64]
                           [--health SERVING|NOT_SERVING]
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procutil import write_ready_file  # noqa: E402

MAX_MSG = 64 << 20
_PATTERN = bytes(range(256)) * ((MAX_MSG // 256) + 2)


def pattern(i, size):
    off = i & 0xFF
    return _PATTERN[off:off + size]


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.active = set()
        self.cancelled = []
        self.completed = []

    def snapshot(self):
        with self.lock:
            return {"calls": self.calls, "active": sorted(self.active), "cancelled": list(self.cancelled),
                    "completed": list(self.completed)}


REG = Registry()


class Call:
    """Per-RPC bookkeeping: metadata, and whether the handler finished before the RPC terminated."""

    def __init__(self, context):
        self.context = context
        self.md = {}
        self.md_list = []
        for k, v in context.invocation_metadata():
            self.md_list.append((k, v))
            self.md.setdefault(k, v)
        self.id = self.md.get("x-call-id")
        self.finished = False
        self.terminated_early = False
        with REG.lock:
            REG.calls += 1
            if self.id:
                REG.active.add(self.id)
        context.add_callback(self._on_done)
        custom = [(k, v) for k, v in self.md_list if k.startswith("x-custom")]
        if custom:
            context.send_initial_metadata([("initial-" + k, v) for k, v in custom])
        self.trailing = [("trailing-" + k, v) for k, v in custom]

    def _on_done(self):
        # grpcio's own record of RECV_CLOSE_ON_SERVER "cancelled" (gRPC core's verdict: the call did not
        # end with our status delivered); private, but pinned by Debian's python3-grpcio 1.51
        core_cancelled = getattr(getattr(self.context, "_state", None), "client", None) == "cancelled"
        with REG.lock:
            if self.id:
                REG.active.discard(self.id)
                if self.finished and not self.terminated_early and not core_cancelled:
                    REG.completed.append(self.id)
                else:
                    REG.cancelled.append(self.id)

    def intval(self, key, default=None):
        v = self.md.get(key)
        return int(v) if v is not None else default

    def sleep(self, ms):
        """Sleeps, returning False (and recording it) as soon as the RPC is no longer active."""
        end = time.monotonic() + ms / 1000.0
        while time.monotonic() < end:
            if not self.context.is_active():
                self.terminated_early = True
                return False
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        return self.context.is_active()

    def fail(self):
        code_num = self.intval("x-fail-code")
        code = next(c for c in grpc.StatusCode if c.value[0] == code_num)
        trailers = list(self.trailing)
        for k, v in self.md_list:
            if k.startswith("x-fail-trailer-"):
                trailers.append((k[len("x-fail-trailer-"):], v))
        if self.md.get("x-fail-binary"):
            trailers.append(("detail-bin", b"\x00\x01\x02\xff"))
        self.context.set_trailing_metadata(trailers)
        self.finished = True
        message = self.md.get("x-fail-message")
        if message is None:
            message = self.md.get("x-fail-message-bin", b"").decode("utf-8")
        self.context.abort(code, message)

    def done(self):
        if self.trailing:
            self.context.set_trailing_metadata(self.trailing)
        self.finished = True


def unary(request, context):
    c = Call(context)
    if not c.sleep(c.intval("x-sleep-ms", 0)):
        return b""
    if c.md.get("x-fail-code") is not None:
        c.fail()
    if c.md.get("x-echo-metadata"):
        md = [[k, v] for k, v in c.md_list if not k.endswith("-bin")]
        remaining = context.time_remaining()
        if remaining is not None and remaining > 1e9:
            remaining = None  # grpcio reports "no deadline" as a huge number
        body = json.dumps({"metadata": md, "time_remaining": remaining,
                           "request_len": len(request)}).encode()
        c.done()
        return body
    c.done()
    return request


def client_stream(request_iterator, context):
    c = Call(context)
    parts = []
    n = 0
    for msg in request_iterator:
        parts.append(msg)
        n += 1
    if not c.sleep(c.intval("x-sleep-ms", 0)):
        return b""
    if c.md.get("x-fail-code") is not None:
        c.fail()
    c.trailing.append(("x-count", str(n)))
    c.done()
    return b"".join(parts)


def server_stream(request, context):
    c = Call(context)
    if not c.sleep(c.intval("x-sleep-ms", 0)):
        return
    count = c.intval("x-count", 3)
    size = c.intval("x-size")
    interval = c.intval("x-interval-ms", 0)
    fail_after = c.intval("x-fail-after")
    cancel_after = c.intval("x-cancel-after")
    for i in range(count):
        if fail_after is not None and i == fail_after:
            c.fail()
        if cancel_after is not None and i == cancel_after:
            c.finished = True
            context.cancel()
            return
        if i and interval and not c.sleep(interval):
            return
        if not context.is_active():
            c.terminated_early = True
            return
        yield pattern(i, size) if size is not None else request
    if fail_after is not None and fail_after >= count:
        c.fail()
    c.done()


def bidi(request_iterator, context):
    c = Call(context)
    fail_after = c.intval("x-fail-after")
    n = 0
    for msg in request_iterator:
        if fail_after is not None and n == fail_after:
            c.fail()
        n += 1
        yield msg
    if fail_after is not None and n <= fail_after:
        c.fail()
    c.done()


def stats(request, context):
    return json.dumps(REG.snapshot()).encode()


HEALTH = {"status": "SERVING", "checks": 0, "services": []}
_HEALTH_CODES = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2}


def _health_service(request):
    """HealthCheckRequest.service (field 1, length-delimited) from the raw message; "" when absent."""
    i, service = 0, ""
    while i < len(request):
        key = request[i]
        i += 1
        if key == 0x0A:
            n, shift = 0, 0
            while True:
                b = request[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            service = request[i:i + n].decode("utf-8", "replace")
            i += n
        else:
            break
    return service


def health_check(request, context):
    with REG.lock:
        HEALTH["checks"] += 1
        HEALTH["services"] = (HEALTH["services"] + [_health_service(request)])[-100:]
        code = _HEALTH_CODES[HEALTH["status"]]
    return bytes([0x08, code])  # HealthCheckResponse{status = 1: varint}


def set_health(request, context):
    with REG.lock:
        HEALTH["status"] = request.decode()
    return b""


def health_report(request, context):
    with REG.lock:
        return json.dumps(HEALTH).encode()


def build_server(host, port, workers, health=None):
    raw = dict(request_deserializer=None, response_serializer=None)
    echo = grpc.method_handlers_generic_handler("echo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **raw),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **raw),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **raw),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **raw),
    })
    control_methods = {"Stats": grpc.unary_unary_rpc_method_handler(stats, **raw)}
    handlers = [echo]
    if health is not None:
        HEALTH["status"] = health
        control_methods["SetHealth"] = grpc.unary_unary_rpc_method_handler(set_health, **raw)
        control_methods["Health"] = grpc.unary_unary_rpc_method_handler(health_report, **raw)
        handlers.append(grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health_check, **raw)}))
    control = grpc.method_handlers_generic_handler("echo.Control", control_methods)
    handlers.append(control)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[
        ("grpc.max_receive_message_length", MAX_MSG),
        ("grpc.max_send_message_length", MAX_MSG),
        ("grpc.so_reuseport", 0),
    ])
    server.add_generic_rpc_handlers(tuple(handlers))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    return server, bound


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file")
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--health", choices=["SERVING", "NOT_SERVING"])
    args = ap.parse_args()
    server, port = build_server(args.host, args.port, args.workers, args.health)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    write_ready_file(args.ready_file, port)
    print(f"grpc echo server on {args.host}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=0.5).wait(2)


if __name__ == "__main__":
    main()
