#!/usr/bin/python3
"""Transparent interception benchmark (docs/BENCHMARKS.md, "Transparent interception"). Needs root.

Two pods as network namespaces joined by a veth pair: C (client, 10.79.0.2) and S (server, 10.79.0.1),
each with remora-init and one remora-agent --transparent (1 worker, proxy UID 2102); rm-bench-origin
serves HTTP/1.1 on S's 0.0.0.0:8080. The same two agent processes also have explicit listeners, so the
two chains differ only by the interception:

  transparent: h2load in C -> http://10.96.0.10/ -> REDIRECT -> C outbound 15001 (SO_ORIGINAL_DST ->
               Service web, `peer: agent`, HTTP/2) -> REDIRECT -> S inbound 15006 -> HTTP/1.1 origin
  explicit:    h2load in C -> 127.0.0.1:10001 (C) -> HTTP/2 -> S 10.79.0.1:10002 (`peer: agent`, not
               captured: --exclude-inbound-ports) -> HTTP/1.1 origin

Figures: req/s (h2load --h1 -c16, count-bounded), rounds alternated (T E T E ...); instructions per request
of each agent under callgrind, by difference of two runs (--cg-requests and --cg-idle requests); opaque
TCP bulk (100 MB each way, full duplex, through S's agent on a `protocol: tcp` listener on loopback,
against a direct connection and HAProxy `mode tcp` with one thread). Namespaces and processes are
removed in a finally. Writes bench/results/transparent-<timestamp>.md and .json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
UID = 2102
C4, S4 = "10.79.0.2", "10.79.0.1"
ORIGIN_PORT, EXPLICIT_A, EXPLICIT_B, TCP_AGENT, TCP_HAPROXY, ECHO = 8080, 10001, 10002, 10003, 10004, 9000

CONFIG_C = f"""
workers: 1
admin: 127.0.0.1:15000
health: 127.0.0.1:15020
listeners:
  - name: explicit
    address: 127.0.0.1:{EXPLICIT_A}
    routes: [{{cluster: web-explicit}}]
clusters:
  - name: web
    protocol: h2
    peer: agent
    addresses: ["10.96.0.10:80"]
    endpoints: ["{S4}:{ORIGIN_PORT}"]
  - name: web-explicit
    protocol: h2
    peer: agent
    endpoints: ["{S4}:{EXPLICIT_B}"]
"""

CONFIG_S = f"""
workers: 1
admin: 127.0.0.1:15000
health: 127.0.0.1:15020
listeners:
  - name: explicit
    address: 0.0.0.0:{EXPLICIT_B}
    peer: agent
    routes: [{{cluster: web}}]
  - name: bulk
    address: 127.0.0.1:{TCP_AGENT}
    protocol: tcp
    cluster: echo
clusters:
  - name: web
    protocol: http1
    endpoints: ["{S4}:{ORIGIN_PORT}"]
  - name: echo
    protocol: tcp
    endpoints: ["127.0.0.1:{ECHO}"]
"""

HAPROXY = f"""
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend bulk
    bind 127.0.0.1:{TCP_HAPROXY}
    default_backend echo
backend echo
    server e 127.0.0.1:{ECHO}
"""

ECHO_SERVER = r"""
import socket, sys, threading
def serve(c):
    buf = bytearray(1 << 20)
    while True:
        n = c.recv_into(buf)
        if n == 0:
            break
        c.sendall(memoryview(buf)[:n])
    c.shutdown(socket.SHUT_WR)
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("echo ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

BULK_CLIENT = r"""
import socket, sys, threading, time
port, size = int(sys.argv[1]), int(sys.argv[2])
chunk = bytes(1 << 20)
s = socket.create_connection(("127.0.0.1", port), timeout=60)
got = [0]
def reader():
    buf = bytearray(1 << 20)
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        got[0] += n
t0 = time.monotonic()
r = threading.Thread(target=reader)
r.start()
sent = 0
while sent < size:
    n = min(len(chunk), size - sent)
    s.sendall(chunk[:n])
    sent += n
s.shutdown(socket.SHUT_WR)
r.join(120)
dt = time.monotonic() - t0
print(f"{got[0]} {dt}")
"""


def run(args, ns=None, check=True, timeout=60, **kw):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.c = f"rmb-{os.getpid()}-c"
        self.s = f"rmb-{os.getpid()}-s"
        self.tmp = tempfile.mkdtemp(prefix="rmb-")
        os.chmod(self.tmp, 0o777)
        self.procs = []

    def up(self):
        run(["ip", "netns", "add", self.c])
        run(["ip", "netns", "add", self.s])
        run(["ip", "link", "add", "rmb0", "netns", self.c, "type", "veth", "peer", "name", "rmb0", "netns", self.s])
        for ns, a in ((self.c, C4), (self.s, S4)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", a + "/24", "dev", "rmb0"])
            run(["ip", "-n", ns, "link", "set", "rmb0", "up"])
        run(["ip", "-n", self.c, "route", "add", "default", "via", S4])
        run([self.o.init, "--ipv4-only"], ns=self.c)
        run([self.o.init, "--ipv4-only", "--exclude-inbound-ports", str(EXPLICIT_B)], ns=self.s)
        for name, text in (("c.yaml", CONFIG_C), ("s.yaml", CONFIG_S), ("haproxy.cfg", HAPROXY)):
            with open(os.path.join(self.tmp, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(self.tmp, name), 0o644)
        self.spawn(self.s, "origin", [self.o.origin, "--listen", f"0.0.0.0:{ORIGIN_PORT}"])
        self.spawn(self.s, "echo", [PY, "-c", ECHO_SERVER, str(ECHO)])
        self.spawn(self.s, "haproxy", ["haproxy", "-db", "-f", os.path.join(self.tmp, "haproxy.cfg")])

    def down(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in (self.c, self.s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, ns, name, args, uid=None):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        who = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else ["setpriv"]
        p = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", "-k", "5", str(self.o.timeout)] + who +
                             ["--pdeathsig", "KILL"] + list(args), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
            return f.read()

    def wait_log(self, name, pattern, p, limit=60):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if re.search(pattern, self.log(name)):
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start:\n{self.log(name)[-3000:]}")

    def agents(self, callgrind=None):
        """Starts both agents (under callgrind when `callgrind` is a tag); returns their processes."""
        out = []
        for ns, name in ((self.c, "c"), (self.s, "s")):
            args = [self.o.agent, "--config", os.path.join(self.tmp, name + ".yaml"), "--transparent", "--log-level", "warn"]
            if callgrind:
                # valgrind's own temporary files: /tmp may not be writable by the proxy UID
                out_file = f"--callgrind-out-file={self.tmp}/cg-{callgrind}-{name}.out"
                args = ["env", f"TMPDIR={self.tmp}", "valgrind", "--tool=callgrind", out_file] + args
            tag = f"agent-{name}-{callgrind or 'plain'}"
            p = self.spawn(ns, tag, args, uid=UID)
            out.append((tag, p))
        for tag, p in out:
            self.wait_health(self.c if "-c-" in tag else self.s, p, tag)
        return out

    def wait_health(self, ns, p, tag):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:15020/ready"],
                    ns=ns, check=False)
            if r.stdout.strip() == "200":
                return
            if p.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{tag} not ready:\n{self.log(tag)[-3000:]}")

    def stop(self, agents):
        for tag, p in agents:
            p.send_signal(signal.SIGTERM)
        for tag, p in agents:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)

    def h2load(self, mode, n):
        url = "http://10.96.0.10/" if mode == "transparent" else f"http://127.0.0.1:{EXPLICIT_A}/"
        r = run(["h2load", "--h1", "-c", str(self.o.connections), "-n", str(n), url], ns=self.c, timeout=self.o.timeout)
        m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", r.stdout)
        ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", r.stdout)
        if not m or not ok or int(ok.group(1)) != n:
            raise RuntimeError(f"h2load {mode}: not every request succeeded:\n{r.stdout[-2000:]}")
        return float(m.group(1))

    def bulk(self, port):
        r = run([PY, "-c", BULK_CLIENT, str(port), str(self.o.bulk_bytes)], ns=self.s, timeout=self.o.timeout)
        got, dt = r.stdout.split()
        if int(got) != self.o.bulk_bytes:
            raise RuntimeError(f"bulk through port {port}: {got} of {self.o.bulk_bytes} bytes came back")
        return self.o.bulk_bytes / float(dt) / 1e6  # MB/s each way


def totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def med(v):
    return statistics.median(v) if v else float("nan")


def spread(v):
    m = med(v)
    return (max(v) - min(v)) / m * 100 if v and m else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build = os.environ.get("REMORA_BUILD", os.path.join(REPO, "build"))
    ap.add_argument("--agent", default=os.environ.get("REMORA_AGENT", os.path.join(build, "agent", "remora-agent")))
    ap.add_argument("--init", default=os.environ.get("REMORA_INIT", os.path.join(build, "init", "remora-init")))
    ap.add_argument("--origin", default=os.environ.get("REMORA_BENCH_ORIGIN", os.path.join(REPO, "build-bench", "bench",
                                                                                            "rm-bench-origin")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000, help="h2load -n per round (default 100000)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--cg-requests", type=int, default=5000, help="requests of the measured callgrind run (default 5000)")
    ap.add_argument("--cg-idle", type=int, default=500, help="requests of the baseline callgrind run (default 500)")
    ap.add_argument("--bulk-bytes", type=int, default=100_000_000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: rps,callgrind,bulk")
    ap.add_argument("--timeout", type=int, default=600, help="bound in seconds on every process")
    o = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("transparent.py: needs root (network namespaces, netfilter)")
    skip = set(filter(None, o.skip.split(",")))
    b = Bench(o)
    res = {"machine": {"nproc": os.cpu_count(), "loadavg_before": open("/proc/loadavg").read().split()[:3]},
           "requests": o.requests, "connections": o.connections}
    try:
        b.up()
        if "rps" not in skip or "bulk" not in skip:
            ag = b.agents()
            if "rps" not in skip:
                rps = {"transparent": [], "explicit": []}
                for _ in range(o.rounds):
                    for mode in ("transparent", "explicit"):
                        rps[mode].append(b.h2load(mode, o.requests))
                res["rps"] = rps
            if "bulk" not in skip:
                bulk = {"direct": [], "remora": [], "haproxy": []}
                for _ in range(o.rounds):
                    for name, port in (("direct", ECHO), ("remora", TCP_AGENT), ("haproxy", TCP_HAPROXY)):
                        bulk[name].append(b.bulk(port))
                res["bulk_mb_s"] = bulk
            b.stop(ag)
        if "callgrind" not in skip:
            cg = {"transparent": {"c": [], "s": []}, "explicit": {"c": [], "s": []}}
            for rep in range(o.rounds):
                for mode in ("transparent", "explicit"):
                    got = {}
                    for n in (o.cg_idle, o.cg_requests):
                        tag = f"{mode}-{n}-{rep}"
                        ag = b.agents(callgrind=tag)
                        b.h2load(mode, n)
                        b.stop(ag)
                        got[n] = {x: totals(f"{b.tmp}/cg-{tag}-{x}.out") for x in ("c", "s")}
                    for x in ("c", "s"):
                        cg[mode][x].append((got[o.cg_requests][x] - got[o.cg_idle][x]) / (o.cg_requests - o.cg_idle))
            res["instr_per_request"] = cg
        res["machine"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    finally:
        b.down()
    lines = [f"# Transparent interception benchmark ({time.strftime('%Y-%m-%d %H:%M:%S')})", "",
             f"machine: {res['machine']}", ""]
    if "rps" in res:
        t, e = res["rps"]["transparent"], res["rps"]["explicit"]
        lines += ["| chain (h2load --h1 -c%d -n%d) | req/s median | spread | rounds |" % (o.connections, o.requests),
                  "|---|---|---|---|",
                  f"| transparent (interception) | {med(t):.0f} | {spread(t):.1f}% | {', '.join('%.0f' % x for x in t)} |",
                  f"| explicit ports | {med(e):.0f} | {spread(e):.1f}% | {', '.join('%.0f' % x for x in e)} |",
                  f"| ratio transparent / explicit | {med(t) / med(e):.3f} | | |"]
        paired = [x / y for x, y in zip(t, e)]
        lines += [f"| same ratio per round (T and E back to back), median | {med(paired):.3f} | {spread(paired):.1f}% | "
                  f"{', '.join('%.2f' % x for x in paired)} |", ""]
    if "instr_per_request" in res:
        cg = res["instr_per_request"]
        lines += ["| agent | transparent instr/req | explicit instr/req | ratio |", "|---|---|---|---|"]
        for x, label in (("c", "client-side agent (outbound)"), ("s", "server-side agent (inbound)")):
            t, e = med(cg["transparent"][x]), med(cg["explicit"][x])
            lines.append(f"| {label} | {t:.0f} (spread {spread(cg['transparent'][x]):.1f}%) | "
                         f"{e:.0f} (spread {spread(cg['explicit'][x]):.1f}%) | {t / e:.3f} |")
        tt = med([a + b_ for a, b_ in zip(cg["transparent"]["c"], cg["transparent"]["s"])])
        ee = med([a + b_ for a, b_ in zip(cg["explicit"]["c"], cg["explicit"]["s"])])
        lines += [f"| both agents | {tt:.0f} | {ee:.0f} | {tt / ee:.3f} |", ""]
    if "bulk_mb_s" in res:
        bk = res["bulk_mb_s"]
        d = med(bk["direct"])
        lines += ["| opaque TCP, %d MB each way | MB/s each way, median | spread | ratio to direct |" % (o.bulk_bytes // 1_000_000),
                  "|---|---|---|---|"]
        for name in ("direct", "remora", "haproxy"):
            lines.append(f"| {name} | {med(bk[name]):.0f} | {spread(bk[name]):.1f}% | {med(bk[name]) / d:.3f} |")
        lines.append(f"| remora / haproxy | {med(bk['remora']) / med(bk['haproxy']):.3f} | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(REPO, "bench", "results", f"transparent-{stamp}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(REPO, "bench", "results", f"transparent-{stamp}.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
