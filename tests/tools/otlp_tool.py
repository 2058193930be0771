"""Starts the test OTLP receiver (tests/tools/otlp_receiver/receiver.js, Node.js, decoding with
OpenTelemetry's own code) and reads the spans it recorded.

    rx = OtlpReceiver.start(workdir)               # gRPC and HTTP on free ports
    rx.grpc_endpoint, rx.http_endpoint             # "127.0.0.1:PORT"
    spans = rx.wait_spans(4, timeout=10)           # list of dicts, one per span (see receiver.js)
    rx.stop()

Every process is started by us and stopped by PID (procutil.Proc).
"""

import json
import os
import shutil
import signal
import time

from procutil import Proc

HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVER_DIR = os.path.join(HERE, "otlp_receiver")
NODE = shutil.which("node") or shutil.which("nodejs") or "/usr/bin/node"


def available():
    """None if the receiver can run, else why not (node or its npm packages missing)."""
    if not os.path.exists(NODE):
        return "node is not installed (scripts/install-deps.sh)"
    for pkg in ("@grpc/grpc-js", "@opentelemetry/otlp-transformer"):
        if not os.path.isdir(os.path.join(RECEIVER_DIR, "node_modules", *pkg.split("/"))):
            return f"{pkg} is not installed: run `npm ci` in {RECEIVER_DIR} (scripts/install-deps.sh does)"
    return None


class OtlpReceiver:
    def __init__(self, proc, out, ports):
        self.proc = proc
        self.out = out
        self.grpc_port = ports.get("grpc")
        self.http_port = ports.get("http")

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self):
        return f"127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, workdir, *, grpc_port=0, http_port=0, delay_ms=0, fail=False, name="otlp_receiver", timeout=20.0):
        """Starts a receiver; grpc_port / http_port None leaves that protocol out, 0 picks a free port."""
        stamp = time.monotonic_ns()
        out = os.path.join(workdir, f"{name}.{stamp}.jsonl")
        ready = os.path.join(workdir, f"{name}.{stamp}.ready")
        argv = [NODE, os.path.join(RECEIVER_DIR, "receiver.js"), "--out", out, "--ready-file", ready]
        if grpc_port is not None:
            argv += ["--grpc-port", str(grpc_port)]
        if http_port is not None:
            argv += ["--http-port", str(http_port)]
        if delay_ms:
            argv += ["--delay-ms", str(delay_ms)]
        if fail:
            argv.append("--fail")
        proc = Proc(argv, os.path.join(workdir, f"{name}.log"), cwd=RECEIVER_DIR)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(ready) as f:
                    ports = json.load(f)
                break
            except (FileNotFoundError, ValueError):
                pass
            if not proc.alive():
                raise RuntimeError(f"otlp receiver exited with {proc.popen.returncode}:\n{proc.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                proc.stop(signal.SIGKILL)
                raise TimeoutError(f"otlp receiver not ready after {timeout}s:\n{proc.log_text()[-3000:]}")
            time.sleep(0.05)
        return cls(proc, out, ports)

    def spans(self):
        """Every span recorded so far (a list of dicts)."""
        try:
            with open(self.out) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def wait_spans(self, n, timeout=10.0, pred=None):
        """Waits until at least n spans (matching pred, if given) were recorded; returns them (all matching)."""
        deadline = time.monotonic() + timeout
        while True:
            got = [s for s in self.spans() if pred is None or pred(s)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def trace(self, trace_id, n, timeout=10.0):
        """The spans of one trace, waiting for n of them."""
        return self.wait_spans(n, timeout, lambda s: s["trace_id"] == trace_id)

    def alive(self):
        return self.proc.alive()

    def stop(self):
        if self.proc.alive():
            self.proc.stop(signal.SIGTERM, timeout=5.0)
