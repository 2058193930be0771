#!/usr/bin/python3
"""One real gRPC unary call through a proxy: h2load cannot read grpc-status, so after each gRPC load the
benchmark checks that a real client (python3-grpcio) still gets its message echoed with status OK.

Usage: /usr/bin/python3 bench/grpc_check.py PORT [MESSAGE_BYTES]
Exit 0 and print "ok" on success; exit 1 and print the reason otherwise.
"""
import sys

import grpc


def main():
    port = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    payload = bytes((i * 7) & 0xFF for i in range(size))
    # "ipv4:" keeps gRPC away from any resolver; proxies from the environment are not for loopback
    channel = grpc.insecure_channel("ipv4:127.0.0.1:%d" % port, options=[("grpc.enable_http_proxy", 0)])
    try:
        call = channel.unary_unary("/bench.Echo/Echo")
        reply, info = call.with_call(payload, timeout=5)
    except grpc.RpcError as e:
        print("FAIL %s: %s" % (e.code(), e.details()))
        return 1
    finally:
        channel.close()
    if info.code() != grpc.StatusCode.OK:
        print("FAIL status %s" % info.code())
        return 1
    if reply != payload:
        print("FAIL echo differs (%d bytes back, %d sent)" % (len(reply), len(payload)))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
