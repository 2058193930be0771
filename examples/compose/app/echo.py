#!/usr/bin/python3
"""The compose mesh's gRPC service: echo.Echo/Unary returns its request, no generated code.

    python3 echo.py [--port 9090]

Messages are raw bytes (identity serializers), so any client can call it without a .proto file; the
response carries the initial metadata `x-served-by: echo`. Also grpc.health.v1.Health/Check:
SERVING (a hand-encoded HealthCheckResponse, field 1 = 1).
"""

import argparse
import os
import signal
from concurrent import futures

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402


def unary(request, context):
    context.send_initial_metadata((("x-served-by", "echo"),))
    return request


def health(request, context):
    return b"\x08\x01"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090")))
    args = ap.parse_args()
    ident = (lambda b: b)
    handlers = [
        grpc.method_handlers_generic_handler("echo.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=ident, response_serializer=ident)}),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health, request_deserializer=ident, response_serializer=ident)}),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=handlers)
    server.add_insecure_port(f"0.0.0.0:{args.port}")
    server.start()
    print(f"echo: listening on :{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(2))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
