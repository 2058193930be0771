#!/usr/bin/python3
"""The demo's gRPC client: every RPC shape through the agent, printing what came back."""
import sys

import grpc

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:15001"
authority = sys.argv[2] if len(sys.argv) > 2 else None
opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
if authority:
    opts.append(("grpc.default_authority", authority))  # the agent routes by :authority to the Service
with grpc.insecure_channel(target, options=opts) as ch:
    unary = ch.unary_unary("/echo.Echo/Unary")
    print("  unary           ->", unary(b"hello mesh", timeout=5))
    big = bytes(range(256)) * (16 * 4096 + 1)
    print("  unary 16 MiB    -> %d bytes back, identical: %s" % (len(big), unary(big, timeout=30) == big))
    ss = ch.unary_stream("/echo.Echo/ServerStream")
    print("  server stream   ->", [m for m in ss(b"tick", timeout=5)])
    cs = ch.stream_unary("/echo.Echo/ClientStream")
    print("  client stream   ->", cs(iter([b"a", b"b", b"c"]), timeout=5))
    bidi = ch.stream_stream("/echo.Echo/Bidi")
    print("  bidi stream     ->", list(bidi(iter([b"ping-1", b"ping-2", b"ping-3"]), timeout=5)))
    try:
        unary(b"x", metadata=[("x-fail-code", "5"), ("x-fail-message", "no such thing")], timeout=5)
    except grpc.RpcError as e:
        print("  error status    ->", e.code().name, repr(e.details()))
