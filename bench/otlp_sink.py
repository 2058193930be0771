#!/usr/bin/python3
"""A minimal OTLP trace receiver for the telemetry benchmark: accepts every export and discards it, as fast as
it can, so that the agent's exporter is never held up by its receiver.

Usage: /usr/bin/python3 bench/otlp_sink.py --http PORT --grpc PORT [--stats FILE]

- OTLP/HTTP (`--http`): `POST /v1/traces` (any path) -> `200`, `Content-Type: application/x-protobuf`, empty body
  (an empty ExportTraceServiceResponse is zero bytes); the body is read and dropped. Keep-alive is honoured, the
  agent closes after each batch anyway. asyncio, one thread.
- OTLP/gRPC (`--grpc`): python3-grpcio with a generic handler that answers every unary call (the agent calls
  /opentelemetry.proto.collector.trace.v1.TraceService/Export) with b"" (an empty ExportTraceServiceResponse);
  the request is never deserialised.
Both listen on 127.0.0.1 only. On SIGTERM it writes {"http_requests", "http_bytes", "grpc_requests", "grpc_bytes"}
to --stats (JSON) and exits. It is a separate process: its CPU is not in the agent's (bench/run.py reads the
agent's /proc/PID/stat only) and run.py reports it on its own.
"""
import argparse
import asyncio
import json
import signal
import sys
from concurrent import futures

import grpc

stats = {"http_requests": 0, "http_bytes": 0, "grpc_requests": 0, "grpc_bytes": 0}
MAX_BODY = 64 << 20  # far above the agent's largest batch; a bigger body closes the connection


async def http_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length > MAX_BODY:
                break
            remaining = length
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    return
                remaining -= len(chunk)
            stats["http_requests"] += 1
            stats["http_bytes"] += length
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def grpc_export(request, context):
    stats["grpc_requests"] += 1
    stats["grpc_bytes"] += len(request)
    return b""


class AnyUnary(grpc.GenericRpcHandler):
    def service(self, handler_call_details):
        return grpc.unary_unary_rpc_method_handler(grpc_export)  # no (de)serialisers: bytes in, bytes out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--grpc", type=int, required=True)
    ap.add_argument("--stats")
    opts = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", MAX_BODY)])
    server.add_generic_rpc_handlers((AnyUnary(),))
    if server.add_insecure_port("127.0.0.1:%d" % opts.grpc) == 0:
        sys.exit("otlp_sink: cannot listen on 127.0.0.1:%d" % opts.grpc)
    server.start()
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(asyncio.start_server(http_conn, "127.0.0.1", opts.http, limit=1 << 16))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("otlp_sink: http 127.0.0.1:%d grpc 127.0.0.1:%d" % (opts.http, opts.grpc), flush=True)
    loop.run_until_complete(stop.wait())
    srv.close()
    server.stop(0)
    if opts.stats:
        with open(opts.stats, "w") as f:
            json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
