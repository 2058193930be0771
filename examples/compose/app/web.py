#!/usr/bin/python3
"""The compose mesh's HTTP service: answers every GET with JSON naming itself and echoing the request.

    python3 web.py [--port 8080] [--name web]

Body: {"service": NAME, "method": ..., "path": ..., "headers": [[name, value], ...]}. /healthz answers
{"ok": true}. HTTP/1.1 with keep-alive (the standard library's server, one thread per connection).
"""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    ap.add_argument("--name", default=os.environ.get("SERVICE_NAME", "web"))
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/healthz":
                body = {"ok": True}
            else:
                body = {"service": args.name, "method": self.command, "path": self.path,
                        "headers": [[k, v] for k, v in self.headers.items()]}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *a):
            print("%s %s" % (self.address_string(), fmt % a), flush=True)

    srv = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    srv.daemon_threads = True
    print(f"{args.name}: listening on :{args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
