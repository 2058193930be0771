#!/usr/bin/python3
"""Client helpers for grpc_echo_server.py: raw-bytes multi-callables, no generated code.

    ch = channel("127.0.0.1:PORT"); echo = Echo(ch)
    echo.unary(b"hi", timeout=5, metadata=[("x-call-id", "a")])

CLI (used by the demo): grpc_client.py TARGET unary|server-stream|client-stream|bidi|fail TEXT
"""

import json
import os
import sys

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

MAX_MSG = 64 << 20
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
    ("grpc.enable_retries", 0),
    ("grpc.enable_http_proxy", 0),
    # each channel its own connection: tests count connections and kill upstreams
    ("grpc.use_local_subchannel_pool", 1),
]


def channel(target, options=()):
    return grpc.insecure_channel(target, options=OPTIONS + list(options))


class Echo:
    """The four echo.Echo methods and echo.Control/Stats on a channel, all taking/returning bytes."""

    def __init__(self, ch):
        self.channel = ch
        self.unary = ch.unary_unary("/echo.Echo/Unary")
        self.client_stream = ch.stream_unary("/echo.Echo/ClientStream")
        self.server_stream = ch.unary_stream("/echo.Echo/ServerStream")
        self.bidi = ch.stream_stream("/echo.Echo/Bidi")
        self._stats = ch.unary_unary("/echo.Control/Stats")

    def stats(self, timeout=5):
        return json.loads(self._stats(b"", timeout=timeout))


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    target, shape, text = argv[0], argv[1], " ".join(argv[2:]).encode()
    with channel(target) as ch:
        e = Echo(ch)
        try:
            if shape == "unary":
                print("unary ->", e.unary(text, timeout=10).decode())
            elif shape == "server-stream":
                for m in e.server_stream(text, timeout=10, metadata=[("x-count", "3")]):
                    print("server-stream ->", m.decode())
            elif shape == "client-stream":
                resp, call = e.client_stream.with_call(iter([text, b"+", text]), timeout=10)
                print("client-stream ->", resp.decode(), dict(call.trailing_metadata()))
            elif shape == "bidi":
                for m in e.bidi(iter([text, text.upper()]), timeout=10):
                    print("bidi ->", m.decode())
            elif shape == "fail":
                e.unary(text, timeout=10, metadata=[("x-fail-code", "5"), ("x-fail-message", "no such thing"),
                                                    ("x-fail-trailer-why", "demo")])
            else:
                print("unknown shape", shape, file=sys.stderr)
                return 2
        except grpc.RpcError as err:
            print(f"status {err.code().name}: {err.details()!r} trailers={list(err.trailing_metadata() or ())}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
