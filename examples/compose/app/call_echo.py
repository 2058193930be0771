#!/usr/bin/python3
"""Calls the compose mesh's gRPC service once: echo.Echo/Unary with MESSAGE, prints the answer.

    python3 call_echo.py [--target echo:9090] [--timeout 10] MESSAGE

Prints the response bytes (UTF-8) on the first line and the response's initial metadata as JSON on
the second; exits 1 with the gRPC status on failure.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# names come from /etc/hosts (docker's service names, extra_hosts): the system resolver, not c-ares
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
import grpc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="echo:9090")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("message")
    args = ap.parse_args()
    with grpc.insecure_channel(args.target) as ch:
        call = ch.unary_unary("/echo.Echo/Unary", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            resp, c = call.with_call(args.message.encode(), timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"call_echo: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(resp.decode(errors="replace"))
    print(json.dumps([[k, v] for k, v in c.initial_metadata()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
