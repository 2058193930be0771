#!/usr/bin/python3
"""Remora's benchmark: direct (no proxy), Remora, nghttpx and HAProxy in front of the same origin, on loopback,
configurations alternated round by round, as docs/BENCHMARKS.md describes (method, options, pinning).

Usage: bench/run.sh [options]    (builds the origin, then runs this with /usr/bin/python3)
       /usr/bin/python3 bench/run.py --origin PATH [options]

Every load is bounded in time (h2load -D) and every child process is ended by its PID.
Writes bench/results/<timestamp>.md (a table to paste into docs/BENCHMARKS.md) and .json (raw runs).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

SAT_MODES = ["h2", "h1", "grpc"]
RATE_MODES = ["rate-h2", "rate-h1", "rate-grpc"]
# bulk: 100 MB (--bulk-mb) downloaded then uploaded through the proxy, over h2c (curl, the origin's /.bench/bulk/N and
# /.bench/sink) and over opaque TCP (bench/bulk_tcp.py; Remora's `protocol: tcp` listener, HAProxy `mode tcp`);
# opt-in (--modes bulk, or bulk-h2 / bulk-tcp)
BULK_MODES = ["bulk-h2", "bulk-tcp"]
DEFAULT_MODES = ["mem"] + SAT_MODES + RATE_MODES
ALL_MODES = DEFAULT_MODES + BULK_MODES
# --allocator / the allocator variants: the agent's malloc replaced by LD_PRELOAD of a Debian package's library
# (the agent's build is unchanged; its own pools sit on top of whichever malloc this is)
ALLOCATORS = {
    "glibc": None,
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",  # Debian libjemalloc2
    "mimalloc": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",  # Debian libmimalloc2.0
}
ALLOC_PROXIES = ["remora-jemalloc", "remora-mimalloc"]
# The balancer variants: the bootstrap file of remora-retry without the policy, with the cluster's load_balancer set
# explicitly; "3" = three endpoints (three origin processes on three ports), else the one origin.
LB_TYPES = {"rr": "round_robin", "ewma": "peak_ewma", "p2c": "least_request", "ring": "ring_hash"}
LB_PROXIES = ["remora-%s%s" % (k, n) for n in ("", "3") for k in LB_TYPES]
# The telemetry variants (docs/BENCHMARKS.md, "Telemetry overhead"): remora-base is the agent given by --base-agent
# (an older build, e.g. commit c038777, before golden metrics and tracing) with the quick flags of `remora`;
# remora-trace-http / remora-trace-grpc: today's agent with tracing at 100% sampling exported over OTLP/HTTP or
# OTLP/gRPC to bench/otlp_sink.py (started once per bench run); remora-alog: the JSON access log to a file on tmpfs.
TELEMETRY_PROXIES = ["remora-base", "remora-trace-http", "remora-trace-grpc", "remora-alog"]
# The mesh mTLS variants of the two-hop chain (docs/BENCHMARKS.md, "Mesh mTLS"; docs/mesh-tls.md), from bootstrap files:
# remora-2hop-peer: the plaintext agent-to-agent hop as a mesh makes it (hop 1's cluster `peer: agent`, protocol h2;
# hop 2's listener `peer: agent`); remora-2hop-mtls: the same with mesh mTLS on that hop (both agents with
# `mesh_tls.identity_dir`, the cluster's `mesh_identity`); nghttpx-2hop-tls: nghttpx hop 1 -> h2 over TLS 1.3 ->
# nghttpx hop 2, mutual and verified both ways (hop 2's frontend --verify-client against the CA; hop 1's backend
# `tls;sni=NGHTTPX_TLS_NAME` with --cacert, the chain and that name checked, and a client certificate). The identities
# (ECDSA P-256, SPIFFE URI SANs, one throw-away CA) are made in the run's temporary directory (mesh_material).
MESH_PROXIES = ["remora-2hop-peer", "remora-2hop-mtls", "nghttpx-2hop-tls"]
ALL_PROXIES = (["remora", "remora-retry"] + ALLOC_PROXIES + LB_PROXIES + TELEMETRY_PROXIES
               + ["nghttpx", "haproxy", "haproxy-safe", "remora-2hop", "remora-2hop-peer", "remora-2hop-mtls", "nghttpx-2hop",
                  "nghttpx-2hop-tls", "remora-relay", "haproxy-relay"])
# remora-relay: the agent's opaque TCP relay (a `protocol: tcp` listener and cluster) in front of the HTTP origin: the
# same event loop and sockets with no HTTP at all, so its added latency is the floor any user-space hop pays here
# (each client connection gets its own upstream connection; nothing is multiplexed); haproxy-relay: the same with
# HAProxy's `mode tcp` (the bulk-tcp mode's configuration), a relay that is not Remora's code
# remora-retry, the balancer, the telemetry and the mesh variants are opt-in (--proxies): each answers one question
# (what a retry policy costs when nothing fails; what a balancer costs against round robin; what telemetry costs;
# what mesh mTLS costs on the agent-to-agent hop)
DEFAULT_PROXIES = [p for p in ALL_PROXIES
                   if p not in ["remora-retry", "haproxy-safe", "remora-relay", "haproxy-relay"] + LB_PROXIES + TELEMETRY_PROXIES + MESH_PROXIES
                   + ALLOC_PROXIES]
# what each mode can carry: opaque TCP has no nghttpx (HTTP only) and no variant that is about HTTP routing
TCP_PROXIES = ["remora", "remora-jemalloc", "remora-mimalloc", "haproxy", "remora-2hop"]


def allocator_of(name, opts):
    """The allocator a configuration runs with: remora-jemalloc / remora-mimalloc their own, every other Remora
    configuration --allocator (default glibc), the peers always their own build's."""
    if name in ALLOC_PROXIES:
        return name.split("-", 1)[1]
    return opts.allocator if name.startswith("remora") else "glibc"


def allocator_env(allocator):
    """The environment of a process run with `allocator` (LD_PRELOAD of its library; None: inherit as is)."""
    lib = ALLOCATORS[allocator]
    if lib is None:
        return None
    env = dict(os.environ)
    env["LD_PRELOAD"] = lib + ((" " + env["LD_PRELOAD"]) if env.get("LD_PRELOAD") else "")
    return env


def two_hops(name):
    """remora-2hop, nghttpx-2hop and their mesh variants (remora-2hop-mtls, ...) are two proxies in a row."""
    return "-2hop" in name


def lb_variant(name):
    """(load_balancer type, number of endpoints) of a balancer variant (remora-rr, remora-ewma3, ...), else None."""
    m = re.match(r"remora-(%s)(3?)$" % "|".join(LB_TYPES), name)
    return (LB_TYPES[m.group(1)], 3 if m.group(2) else 1) if m else None


LABELS = {
    "direct": "direct",
    "remora": "Remora",
    "remora-retry": "Remora, retry policy",
    "remora-jemalloc": "Remora, jemalloc",
    "remora-mimalloc": "Remora, mimalloc",
    "remora-rr": "Remora, round robin",
    "remora-ewma": "Remora, peak EWMA",
    "remora-p2c": "Remora, least request",
    "remora-ring": "Remora, ring hash",
    "remora-rr3": "Remora, round robin, 3 endpoints",
    "remora-ewma3": "Remora, peak EWMA, 3 endpoints",
    "remora-p2c3": "Remora, least request, 3 endpoints",
    "remora-ring3": "Remora, ring hash, 3 endpoints",
    "remora-base": "Remora, base agent",
    "remora-trace-http": "Remora, tracing 100% OTLP/HTTP",
    "remora-trace-grpc": "Remora, tracing 100% OTLP/gRPC",
    "remora-alog": "Remora, access log",
    "nghttpx": "nghttpx",
    "haproxy": "HAProxy",
    "haproxy-safe": "HAProxy, http-reuse safe",
    "remora-2hop": "Remora, 2 hops",
    "nghttpx-2hop": "nghttpx, 2 hops",
    "remora-2hop-peer": "Remora, 2 hops, peer: agent",
    "remora-2hop-mtls": "Remora, 2 hops, mesh mTLS",
    "nghttpx-2hop-tls": "nghttpx, 2 hops, mutual TLS",
    "remora-relay": "Remora, opaque TCP relay (no HTTP)",
    "haproxy-relay": "HAProxy, mode tcp (no HTTP)",
}
MODE_LABELS = {
    "h2": "h2 saturation",
    "h1": "HTTP/1.1 saturation",
    "grpc": "gRPC unary saturation",
    "rate-h2": "h2",
    "rate-h1": "HTTP/1.1",
    "rate-grpc": "gRPC unary",
    "bulk-h2": "bulk h2c",
    "bulk-tcp": "bulk opaque TCP",
}
GRPC_PATH = "/bench.Echo/Echo"
GRPC_MESSAGE_BYTES = 64

# The route policy of the remora-retry configuration: a retry policy that never fires when nothing fails (the
# origin answers every request 200 / grpc-status 0). The grpc_statuses entry makes the agent hold gRPC response heads
# until the first DATA or the trailers, as it must to read a grpc-status it may retry on.
RETRY_POLICY = ("{attempts: 2, backoff_ms: 25, on: [connect-failure, refused-stream, reset], http_statuses: [503], "
                "grpc_statuses: [UNAVAILABLE]}")


def telemetry_yaml(variant, opts, tmpdir):
    """The bootstrap `telemetry` block of a telemetry variant (remora-trace-http, -grpc, remora-alog), else "".
    Tracing: sampling 100%, the default batching (512 spans, 1 s) and queue (4096 spans), to the sink's port.
    Access log: a file on tmpfs (/dev/shm when it exists, else tmpdir), removed after each run by the caller."""
    if variant in ("remora-trace-http", "remora-trace-grpc"):
        proto = variant.rsplit("-", 1)[1]
        return """telemetry:
  tracing:
    otlp: {endpoint: "127.0.0.1:%d", protocol: %s}
    sampling_percent: 100
""" % (opts.sink_ports[proto], proto)
    if variant == "remora-alog":
        return """telemetry:
  access_log: {path: "%s"}
""" % access_log_path(opts, tmpdir)
    return ""


# The identities of the mesh variants and of bench/handshake.py: the SPIFFE IDs of the calling agent (hop 1) and of
# the serving agent (hop 2), under one trust domain.
MESH_TRUST_DOMAIN = "remora.local"
MESH_CLIENT_ID = "spiffe://%s/ns/bench/sa/client" % MESH_TRUST_DOMAIN
MESH_SERVER_ID = "spiffe://%s/ns/bench/sa/server" % MESH_TRUST_DOMAIN
# nghttpx hop 1 sends this SNI to hop 2 and checks hop 2's certificate against it (nghttpx 1.52 does not match a
# backend given by IP address against an IP SAN: "Certificate verification failed: hostname does not match")
NGHTTPX_TLS_NAME = "server.bench.remora.local"


def mesh_material(tmpdir):
    """Makes, with python3-cryptography (nothing downloaded), a throw-away CA and ECDSA P-256 leaf certificates valid
    for one day, written under tmpdir/mesh/: two identity directories in the layout of `mesh_tls.identity_dir`
    (identity.key, identity.crt, trust-bundle.pem; 0600): client/ (MESH_CLIENT_ID) and server/ (MESH_SERVER_ID),
    each leaf with exactly one URI SAN, clientAuth + serverAuth; and tls-server.{key,crt}, nghttpx's server
    certificate, MESH_SERVER_ID plus DNS SAN NGHTTPX_TLS_NAME (what nghttpx's backend verification checks) and IP
    SAN 127.0.0.1. Returns a dict of paths: ca, client_dir, server_dir, client_key, client_crt,
    server_key, server_crt, tls_key, tls_crt."""
    import datetime as dt
    import ipaddress

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        sys.exit("the mesh variants and bench/handshake.py need python3-cryptography (Debian: python3-cryptography)")

    d = os.path.join(tmpdir, "mesh")
    os.makedirs(d, exist_ok=True)
    now = dt.datetime.utcnow()

    def write(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remora bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    def leaf(sans):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    out = {"ca": write(os.path.join(d, "ca.pem"), ca_pem)}
    for role, spiffe in (("client", MESH_CLIENT_ID), ("server", MESH_SERVER_ID)):
        idd = os.path.join(d, role)
        os.makedirs(idd, exist_ok=True)
        k, c = leaf([x509.UniformResourceIdentifier(spiffe)])
        out[role + "_dir"] = idd
        out[role + "_key"] = write(os.path.join(idd, "identity.key"), k)
        out[role + "_crt"] = write(os.path.join(idd, "identity.crt"), c)
        write(os.path.join(idd, "trust-bundle.pem"), ca_pem)
    k, c = leaf([x509.UniformResourceIdentifier(MESH_SERVER_ID), x509.DNSName(NGHTTPX_TLS_NAME),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    out["tls_key"] = write(os.path.join(d, "tls-server.key"), k)
    out["tls_crt"] = write(os.path.join(d, "tls-server.crt"), c)
    return out


def remora_mesh_yaml(port, upstream, admin, health, workers, inner, mtls, mesh):
    """The bootstrap file of one agent of remora-2hop-peer / remora-2hop-mtls. inner (hop 2, in front of the origin):
    listener `peer: agent`, an h2 cluster to the origin. Outer (hop 1, where the client connects): a plain listener,
    an h2 cluster `peer: agent` to hop 2, with `mesh_identity: MESH_SERVER_ID` when mtls. With mtls both agents have
    `mesh_tls.identity_dir` (mode left at its default, PERMISSIVE: the hop is mTLS because the cluster asks for it)."""
    lines = ["workers: %d" % workers, "admin: 127.0.0.1:%d" % admin, "health: 127.0.0.1:%d" % health,
             "drain_timeout_ms: 500"]
    if mtls:
        lines += ["mesh_tls:", "  identity_dir: \"%s\"" % mesh["server_dir" if inner else "client_dir"]]
    lines += ["listeners:", "  - name: main", "    address: 127.0.0.1:%d" % port]
    if inner:
        lines.append("    peer: agent")
    lines += ["    routes:", "      - name: default", "        cluster: upstream",
              "clusters:", "  - name: upstream", "    protocol: h2", "    endpoints: [\"127.0.0.1:%d\"]" % upstream]
    if not inner:
        lines.append("    peer: agent")
        if mtls:
            lines.append("    mesh_identity: %s" % MESH_SERVER_ID)
    return "\n".join(lines) + "\n"


def remora_mesh_tls_counts(health_port):
    """{"handshakes": {(direction, result): n}, "connections": {(direction, tls): n}} from one agent's /metrics."""
    text = http_get_body(health_port, "/metrics")
    if text is None:
        return None
    out = {"handshakes": {}, "connections": {}}
    for line in text.splitlines():
        m = re.match(r'remora_mesh_tls_handshakes_total\{direction="(\w+)",result="(\w+)"\} (\d+)', line)
        if m:
            out["handshakes"]["%s/%s" % m.group(1, 2)] = int(m.group(3))
        m = re.match(r'remora_mesh_tls_connections_total\{direction="(\w+)",tls="(\w+)"\} (\d+)', line)
        if m:
            out["connections"]["%s/tls=%s" % m.group(1, 2)] = int(m.group(3))
    return out


def access_log_path(opts, tmpdir):
    d = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmpdir
    return os.path.join(d, "remora-bench-access-%d.log" % os.getpid())


def start_sink(opts, tmpdir):
    """bench/otlp_sink.py on two free ports (OTLP/HTTP, OTLP/gRPC), pinned to --sink-cpus (default: the client's
    CPUs, so that it does not take the agent's CPU); sets opts.sink_ports and returns the Popen."""
    opts.sink_ports = {"http": free_port(), "grpc": free_port()}
    opts.sink_stats = os.path.join(tmpdir, "otlp-sink-stats.json")
    argv = ["/usr/bin/python3", os.path.join(REPO, "bench", "otlp_sink.py"), "--http", str(opts.sink_ports["http"]),
            "--grpc", str(opts.sink_ports["grpc"]), "--stats", opts.sink_stats]
    p = spawn(pinned(opts.sink_cpus, argv), os.path.join(tmpdir, "otlp-sink.log"))
    if not wait_port(opts.sink_ports["http"]) or not wait_port(opts.sink_ports["grpc"]) or p.poll() is not None:
        raise RuntimeError("bench/otlp_sink.py did not start; see %s/otlp-sink.log" % tmpdir)
    return p


def sink_totals(opts):
    try:
        with open(opts.sink_stats) as f:
            return json.load(f)
    except (OSError, ValueError, AttributeError):
        return None


def remora_telemetry(health_port):
    """Agent-wide telemetry counters from one agent's /metrics: {"spans": {result: n}, "batches": {result: n},
    "access_log": {result: n}}, or None."""
    text = http_get_body(health_port, "/metrics")
    if text is None:
        return None
    out = {"spans": {}, "batches": {}, "access_log": {}}
    for line in text.splitlines():
        m = re.match(r'remora_(trace_spans|trace_export_batches|access_log_lines)_total\{result="(\w+)"\} (\d+)', line)
        if m:
            key = {"trace_spans": "spans", "trace_export_batches": "batches", "access_log_lines": "access_log"}
            out[key[m.group(1)]][m.group(2)] = int(m.group(3))
    return out


def remora_yaml(port, upstream, admin, health, workers, retry, lb=None, telemetry=""):
    """A bootstrap file equal to what the quick flags (--listen/--upstream --upstream-protocol h2) build: one listener
    "main", one catch-all route "default" to one h2 cluster "upstream"; with `retry`, the route carries RETRY_POLICY.
    The admin config dump of the two differs only in the route's retry (and the source and line fields).
    `upstream` is a port or a list of ports (one endpoint each); `lb` sets the cluster's load_balancer type (unset:
    the default of an h2 cluster, peak_ewma)."""
    ports = upstream if isinstance(upstream, (list, tuple)) else [upstream]
    return """workers: %(workers)d
admin: 127.0.0.1:%(admin)d
health: 127.0.0.1:%(health)d
drain_timeout_ms: 500
listeners:
  - name: main
    address: 127.0.0.1:%(port)d
    routes:
      - name: default
        cluster: upstream%(retry)s
clusters:
  - name: upstream
    protocol: h2
    endpoints: [%(endpoints)s]%(lb)s
""" % {"workers": workers, "admin": admin, "health": health, "port": port,
       "endpoints": ", ".join('"127.0.0.1:%d"' % p for p in ports),
       "lb": ("\n    load_balancer: {type: %s}" % lb) if lb else "",
       "retry": ("\n        retry: " + RETRY_POLICY) if retry else ""} + telemetry


children = []  # every Popen we started and have not reaped, so that a crash or ^C still ends them


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# processes


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pinned(cpus, argv):
    return (["taskset", "-c", cpus] if cpus else []) + argv


def spawn(argv, logpath, env=None):
    f = open(logpath, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                         env=env)
    f.close()
    children.append(p)
    return p


def descendants(pid):
    """pid and every process below it, from /proc (nghttpx forks a worker process)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
                parent[int(d)] = int(s[s.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def stop(p, grace=3.0):
    """Ends one of our children and the processes it forked, by PID."""
    if p.poll() is None:
        tree = descendants(p.pid)
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for q in tree[1:]:
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if p in children:
        children.remove(p)


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                s = f.read()
            fields = s[s.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


def memory_kib(pids):
    """Sum over the process tree of Rss, Pss (smaps_rollup) and VmHWM (peak RSS), in KiB."""
    rss = pss = hwm = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return {"rss_kib": rss, "pss_kib": pss, "hwm_kib": hwm}


def established(port):
    """Established TCP connections whose local port is `port` (the proxy's accepted downstream connections)."""
    n, hexport = 0, "%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(":" + hexport) and parts[3] == "01":
                        n += 1
        except OSError:
            pass
    return n


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http1_get_ok(port, timeout=5.0):
    """One HTTP/1.1 GET on a raw socket (no resolver involved); the status line on a 200, else None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            if data.startswith(b"HTTP/1.1 200"):
                return data.split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError:
            pass
        time.sleep(0.1)
    return None


def http_get_body(port, path, timeout=3.0):
    """The body of one HTTP/1.1 GET (Connection: close) to 127.0.0.1:port, or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return body.decode(errors="replace")


def remora_retries(health_port):
    """(retries, refused re-sends) from one agent's /metrics (every cluster and reason), or None."""
    text = http_get_body(health_port, "/metrics")
    if text is None:
        return None
    total = [0, 0]
    for line in text.splitlines():
        m = re.match(r"remora_upstream_(retries|refused_resends)_total\{[^}]*\} (\d+)", line)
        if m:
            total[0 if m.group(1) == "retries" else 1] += int(m.group(2))
    return tuple(total)


def write_grpc_body(path):
    """The gRPC-framed request body of the gRPC modes: 5-byte frame header + GRPC_MESSAGE_BYTES of message."""
    with open(path, "wb") as f:
        msg = bytes((i * 13) & 0xFF for i in range(GRPC_MESSAGE_BYTES))
        f.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)


class OriginProgress(threading.Thread):
    """Samples the origin's response counter (GET /.bench/count, on one kept-alive HTTP/1.1 connection) while a load
    runs, to tell a proxy that stalled from one that is slow: h2load does not count requests never answered."""

    def __init__(self, ports, interval=0.25):
        super().__init__(daemon=True)
        # several ports (the origins of a 3-endpoint cluster): the sum of their counters
        self.ports = list(ports) if isinstance(ports, (list, tuple)) else [ports]
        self.interval, self.samples, self.done = interval, [], threading.Event()

    def run(self):
        socks = {}
        while not self.done.wait(self.interval):
            try:
                total = 0
                for port in self.ports:
                    if port not in socks:
                        socks[port] = socket.create_connection(("127.0.0.1", port), timeout=1)
                    sock = socks[port]
                    sock.sendall(b"GET /.bench/count HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    data = b""
                    while True:
                        head, sep, body = data.partition(b"\r\n\r\n")
                        if sep:
                            m = re.search(rb"Content-Length: (\d+)", head)
                            if m and len(body) >= int(m.group(1)):
                                break
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise OSError("closed")
                        data += chunk
                    total += int(body.split()[0])
                self.samples.append((time.time(), total))
            except (OSError, ValueError, IndexError):
                for sock in socks.values():
                    sock.close()
                socks = {}

    def stop(self):
        self.done.set()
        self.join()

    def longest_stall(self, t_from, t_to):
        """Longest time in [t_from, t_to] during which only our own counter requests reached the origin."""
        pts = [(t, n) for t, n in self.samples if t_from <= t <= t_to]
        longest, start = 0.0, 0
        for j in range(1, len(pts)):
            # each counter request counts itself once, after answering: n grows by exactly 1 per port per idle sample
            if pts[j][1] - pts[start][1] > (j - start) * len(self.ports):
                start = j
            longest = max(longest, pts[j][0] - pts[start][0])
        return longest


# ---------------------------------------------------------------------------------------------------------------
# proxies


class Chain:
    """Zero, one or two proxies in front of the origin. front_port is where the client connects."""

    def __init__(self, name, opts, tmpdir, origin_port, tcp=False):
        self.name, self.opts, self.tmpdir, self.origin_port = name, opts, tmpdir, origin_port
        # tcp: opaque TCP in front of bench/bulk_tcp.py (the bulk-tcp mode), not HTTP in front of rm-bench-origin
        self.tcp = tcp
        self.kind = name.split("-")[0]
        self.hops = 0 if name == "direct" else (2 if two_hops(name) else 1)
        self.procs = []
        self.front_port = origin_port
        self.health_ports = []  # Remora's health/metrics listeners, one per hop
        self.lb = lb_variant(name)  # (load_balancer type, endpoints) of a balancer variant, else None
        # the origins this chain sends to: the one origin, or three for a 3-endpoint balancer variant
        self.origin_ports = [origin_port] + (list(opts.extra_origin_ports) if self.lb and self.lb[1] == 3 else [])

    def start(self):
        upstream = self.origin_port
        for hop in range(self.hops):  # innermost first, so that each proxy's upstream is already listening
            port = free_port()
            p = getattr(self, "_start_" + self.kind)(port, upstream, hop)
            self.procs.append(p)
            if not wait_port(port) or p.poll() is not None:
                raise RuntimeError("%s (hop %d) did not start; see %s" % (self.name, hop, self.tmpdir))
            upstream = port
        self.front_port = upstream
        if self.tcp:
            self.status_line = ""
            time.sleep(0.2)
            return
        self.status_line = http1_get_ok(self.front_port)
        if not self.status_line:
            raise RuntimeError("%s does not answer a GET; see %s" % (self.name, self.tmpdir))
        time.sleep(0.2)

    def pids(self):
        out = []
        for p in self.procs:
            out.extend(descendants(p.pid))
        return out

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        self.procs = []

    def _log(self, hop):
        return os.path.join(self.tmpdir, "%s-hop%d.log" % (self.name, hop))

    def _start_remora(self, port, upstream, hop):
        admin, health = free_port(), free_port()
        self.health_ports.append(health)
        telemetry = telemetry_yaml(self.name, self.opts, self.tmpdir)
        env = allocator_env(allocator_of(self.name, self.opts))
        if self.tcp or self.name == "remora-relay":
            cfg = os.path.join(self.tmpdir, "remora-%s-tcp-hop%d.yaml" % (self.name, hop))
            with open(cfg, "w") as f:
                f.write(REMORA_TCP_YAML % {"workers": self.opts.workers, "admin": admin, "health": health, "port": port,
                                           "upstream": upstream})
            argv = [self.opts.agent, "--config", cfg, "--log-level", "error"]
        elif self.name in ("remora-2hop-peer", "remora-2hop-mtls"):
            cfg = os.path.join(self.tmpdir, "remora-%s-hop%d.yaml" % (self.name, hop))
            with open(cfg, "w") as f:
                f.write(remora_mesh_yaml(port, upstream, admin, health, self.opts.workers, inner=(hop == 0),
                                         mtls=self.name.endswith("-mtls"), mesh=self.opts.mesh))
            argv = [self.opts.agent, "--config", cfg, "--log-level", "error"]
        elif self.name == "remora-retry" or self.lb or telemetry:
            cfg = os.path.join(self.tmpdir, "remora-%s-hop%d.yaml" % (self.name, hop))
            upstreams = self.origin_ports if self.lb and hop == 0 else upstream
            with open(cfg, "w") as f:
                f.write(remora_yaml(port, upstreams, admin, health, self.opts.workers, retry=(self.name == "remora-retry"),
                                    lb=self.lb[0] if self.lb else None, telemetry=telemetry))
            argv = [self.opts.agent, "--config", cfg, "--log-level", "error"]
        else:
            agent = self.opts.base_agent if self.name == "remora-base" else self.opts.agent
            argv = [agent, "--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % upstream,
                    "--upstream-protocol", "h2", "--workers", str(self.opts.workers),
                    "--admin", "127.0.0.1:%d" % admin, "--health", "127.0.0.1:%d" % health,
                    "--log-level", "error", "--drain-timeout-ms", "500"]
        return spawn(pinned(self.opts.cpus_proxy, argv), self._log(hop), env=env)

    def retries(self):
        """(retries, refused re-sends) summed over the hops' /metrics; None if not Remora or unreadable."""
        if self.kind != "remora":
            return None
        counts = [remora_retries(port) for port in self.health_ports]
        if None in counts:
            return None
        return tuple(sum(c[i] for c in counts) for i in (0, 1))

    def telemetry(self):
        """Telemetry counters summed over the hops' /metrics (remora_telemetry), None if not Remora or unreadable.
        A tracing variant first waits for the exporter's partial batch (batch_timeout_ms, 1 s by default)."""
        if self.kind != "remora" or self.name == "remora-base":
            return None
        if self.name.startswith("remora-trace"):
            time.sleep(1.5)
        out = {"spans": {}, "batches": {}, "access_log": {}}
        for port in self.health_ports:
            t = remora_telemetry(port)
            if t is None:
                return None
            for k, d in t.items():
                for res, n in d.items():
                    out[k][res] = out[k].get(res, 0) + n
        return out

    def mesh_tls(self):
        """The mesh mTLS counters summed over the hops of remora-2hop-peer / -mtls (remora_mesh_tls_counts), else
        None."""
        if self.name not in ("remora-2hop-peer", "remora-2hop-mtls"):
            return None
        out = {"handshakes": {}, "connections": {}}
        for port in self.health_ports:
            t = remora_mesh_tls_counts(port)
            if t is None:
                return None
            for k, d in t.items():
                for key, n in d.items():
                    out[k][key] = out[k].get(key, 0) + n
        return out

    def _start_nghttpx(self, port, upstream, hop):
        # --conf=/dev/null: never pick up /etc/nghttpx/nghttpx.conf; no access log is nghttpx's default
        frontend, backend, extra = "127.0.0.1,%d;no-tls" % port, "127.0.0.1,%d;;proto=h2" % upstream, []
        if self.name == "nghttpx-2hop-tls":
            m = self.opts.mesh
            if hop == 0:  # hop 2: TLS frontend, client certificate required and verified against the CA
                frontend = "127.0.0.1,%d" % port
                extra = ["--verify-client", "--verify-client-cacert=" + m["ca"], "--no-ocsp", m["tls_key"],
                         m["tls_crt"]]
            else:  # hop 1: h2 over TLS to hop 2, its certificate verified (chain + IP SAN), with a client certificate
                backend += ";tls;sni=" + NGHTTPX_TLS_NAME
                extra = ["--cacert=" + m["ca"], "--client-private-key-file=" + m["client_key"],
                         "--client-cert-file=" + m["client_crt"]]
        argv = ["nghttpx", "--conf=/dev/null", "--frontend=" + frontend, "--backend=" + backend,
                "--workers=%d" % self.opts.workers, "--errorlog-file=%s" % self._log(hop)] + extra
        return spawn(pinned(self.opts.cpus_proxy, argv), self._log(hop))

    def _start_haproxy(self, port, upstream, hop):
        cfg = os.path.join(self.tmpdir, "haproxy-%s-hop%d.cfg" % (self.name, hop))
        with open(cfg, "w") as f:
            cfg_text = HAPROXY_TCP_CFG if self.tcp or self.name == "haproxy-relay" else HAPROXY_CFG
            if self.name == "haproxy-safe":  # the set-up before issue 12: HAProxy's default connection reuse
                cfg_text = cfg_text.replace("    http-reuse always\n", "    http-reuse safe\n")
            f.write(cfg_text % {"threads": self.opts.workers, "port": port, "upstream": upstream})
        argv = ["haproxy", "-f", cfg, "-db"]
        return spawn(pinned(self.opts.cpus_proxy, argv), self._log(hop))


# A cleartext bind accepts HTTP/1.1 and h2c prior knowledge; "proto h2" makes the upstream HTTP/2. No logging (no
# `log` line anywhere). The conditions every proxy gets (docs/BENCHMARKS.md, "HTTP/1.1 and HAProxy"): --workers
# threads, keep-alive on both sides, an HTTP/2 upstream whose connections are shared by every client connection.
# `http-reuse always` is what makes HAProxy do the last: with its default (`safe`) a request that is the first of
# its client connection or stream never goes onto an idle server connection, and with an h2 frontend every stream
# is such a first request, so `h2load -c16 -m10` kept 160 upstream connections open (one per stream) and HTTP/1.1
# -c16 kept 16, where Remora and nghttpx keep one per worker; HAProxy paid the extra origin connections in CPU
# per request (and the origin with it, on the CPU it shares with the proxy).
HAPROXY_CFG = """global
    nbthread %(threads)d
    maxconn 5000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:%(port)d
    default_backend be
backend be
    http-reuse always
    # h2load counts an HTTP/1.1 response without a reason phrase as failed, and HAProxy has none to give when the
    # upstream is HTTP/2: name it (200s only, so that errors still show as errors)
    http-response set-status 200 reason OK if { status 200 }
    server origin 127.0.0.1:%(upstream)d proto h2
"""
# The bulk-tcp mode: opaque TCP, no splicing (HAProxy's `option splice-auto` is off by default; Remora copies too)
HAPROXY_TCP_CFG = """global
    nbthread %(threads)d
    maxconn 5000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:%(port)d
    default_backend be
backend be
    server origin 127.0.0.1:%(upstream)d
"""
# The bulk-tcp mode's agent: one opaque TCP listener to one `protocol: tcp` cluster
REMORA_TCP_YAML = """workers: %(workers)d
admin: 127.0.0.1:%(admin)d
health: 127.0.0.1:%(health)d
drain_timeout_ms: 500
listeners:
  - name: main
    address: 127.0.0.1:%(port)d
    protocol: tcp
    cluster: upstream
clusters:
  - name: upstream
    protocol: tcp
    endpoints: ["127.0.0.1:%(upstream)d"]
"""


def agent_works(path):
    try:
        r = subprocess.run([path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and b"--listen" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# load


def parse_time(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]  # in ms


def parse_h2load(text):
    r = {}
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", text)
    if m:
        for k, v in zip(["total", "started", "done", "succeeded", "failed", "errored", "timeout"], m.groups()):
            r[k] = int(v)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["2xx"], r["3xx"], r["4xx"], r["5xx"] = (int(x) for x in m.groups())
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["lat_min_ms"], r["lat_max_ms"], r["lat_mean_ms"], r["lat_sd_ms"] = (parse_time(x) for x in m.groups())
    errors = []
    if "succeeded" not in r:
        errors.append("no h2load summary")
    else:
        for k in ("failed", "errored", "timeout"):
            if r.get(k):
                errors.append("%d %s" % (r[k], k))
        non2xx = r.get("3xx", 0) + r.get("4xx", 0) + r.get("5xx", 0) + max(0, r["succeeded"] - r.get("2xx", 0))
        if non2xx:
            errors.append("%d non-2xx" % non2xx)
        if r["succeeded"] == 0:
            errors.append("0 succeeded")
    r["errors"] = errors
    return r


def percentiles_from_log(path, skip_s):
    """p50/p90/p99/max (ms) of h2load's --log-file, without requests started in the first skip_s seconds."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    if not rows:
        return {}
    t0 = min(r[0] for r in rows) + skip_s * 1e6
    lat = sorted(r[2] / 1000.0 for r in rows if r[0] >= t0 and 200 <= r[1] < 300)
    if not lat:
        return {}

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": lat[-1], "samples": len(lat)}


def h2load_argv(mode, port, opts, files, connections=None, rps=None, duration=None):
    grpc = mode.endswith("grpc")
    h1 = mode.endswith("h1")
    url = "http://127.0.0.1:%d%s" % (port, GRPC_PATH if grpc else "/")
    argv = ["h2load", "-D", str(duration or opts.duration)]
    if h1:
        argv.append("--h1")
    if mode in SAT_MODES:
        argv += ["-c16"] + ([] if h1 else ["-m10"])
    else:
        argv += ["-c%d" % connections, "--rps=%d" % rps] + ([] if h1 else ["-m10"])
    if grpc:
        argv += ["-d", files["grpc_body"], "-H", "content-type: application/grpc", "-H", "te: trailers"]
    return argv + [url]


def run_h2load(argv, opts, tmpdir, chain_pids, origin_pids, timeout, origin_port=None):
    """Runs one bounded h2load, measuring CPU of proxies, origin and client over exactly that run."""
    out_path = os.path.join(tmpdir, "h2load.out")
    progress = OriginProgress(origin_port) if origin_port else None
    if progress:
        progress.start()
    t0 = time.time()
    c0, o0 = cpu_seconds(chain_pids), cpu_seconds(origin_pids)
    with open(out_path, "wb") as f:
        p = subprocess.Popen(pinned(opts.cpus_client, argv), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    children.append(p)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    children.remove(p)
    t1 = time.time()
    wall = t1 - t0
    c1, o1 = cpu_seconds(chain_pids), cpu_seconds(origin_pids)
    stall = None
    if progress:
        progress.stop()
        # the first half second is connection setup; the end is h2load winding down
        stall = progress.longest_stall(t0 + 0.5, t1 - 0.3)
    with open(out_path, errors="replace") as f:
        text = f.read()
    r = parse_h2load(text)
    if p.returncode not in (0, None):
        r["errors"].append("h2load exit %s" % p.returncode)
    r["wall_s"] = wall
    r["proxy_cpu_s"] = c1 - c0
    r["origin_cpu_s"] = o1 - o0
    r["origin_util"] = (o1 - o0) / wall
    done = r.get("succeeded", 0)
    r["proxy_cpu_us_per_req"] = (c1 - c0) * 1e6 / done if done and chain_pids else None
    r["argv"] = " ".join(argv)
    if stall is not None:
        r["longest_stall_s"] = stall
        if stall >= 1.0:
            r["errors"].append("no request reached the origin for %.1f s of the run (stalled)" % stall)
    return r


def run_mode(mode, chain, opts, files, tmpdir, origin_pids):
    pids = chain.pids()
    sink_pids = [opts.sink.pid] if getattr(opts, "sink", None) and chain.name.startswith("remora-trace") else []
    s0 = cpu_seconds(sink_pids)
    timeout = opts.duration + 30
    if mode in SAT_MODES:
        r = run_h2load(h2load_argv(mode, chain.front_port, opts, files), opts, tmpdir, pids, origin_pids, timeout,
                       chain.origin_ports)
    elif mode in RATE_MODES:
        logf = os.path.join(tmpdir, "h2load-requests.log")
        if os.path.exists(logf):
            os.unlink(logf)
        argv = h2load_argv(mode, chain.front_port, opts, files, connections=opts.rate_connections,
                           rps=max(1, opts.rate // opts.rate_connections))
        argv[1:1] = ["--log-file=%s" % logf]
        r = run_h2load(argv, opts, tmpdir, pids, origin_pids, timeout,
                       chain.origin_ports)
        # connection setup and the first burst are not the steady state this mode is about
        r.update(percentiles_from_log(logf, skip_s=min(1.0, opts.duration / 4)))
        if "p50_ms" not in r:
            r["errors"].append("no latency samples")
    elif mode == "mem":
        r = run_mem(chain, opts, tmpdir)
    elif mode in BULK_MODES:
        r = run_bulk(mode, chain, opts, files, tmpdir, origin_pids)
    else:
        raise ValueError(mode)
    # h2load does not count requests that a stalled proxy never answers: ask it once more after every run
    if not chain.tcp and not http1_get_ok(chain.front_port, timeout=3.0):
        r["errors"].append("no answer to a GET after the run (stalled?)")
    tel = chain.telemetry()
    if tel is not None and mode != "mem":
        r["telemetry"] = tel
        if sink_pids and r.get("succeeded"):
            r["sink_cpu_us_per_req"] = (cpu_seconds(sink_pids) - s0) * 1e6 / r["succeeded"]
    if chain.name == "remora-alog":
        try:
            os.unlink(access_log_path(opts, tmpdir))
        except OSError:
            pass
    mt = chain.mesh_tls()
    if mt is not None:
        # the hop must be what the variant says: one pooled connection per worker, mTLS or plaintext
        r["mesh_tls"] = mt
        want = "true" if chain.name.endswith("-mtls") else "false"
        if not mt["connections"].get("outbound/tls=%s" % want) or not mt["connections"].get("inbound/tls=%s" % want):
            r["errors"].append("the agent-to-agent hop was not tls=%s: %s" % (want, json.dumps(mt["connections"])))
        unwanted = [k for k in mt["connections"] if mt["connections"][k] and not k.endswith("tls=" + want)]
        if unwanted:
            r["errors"].append("agent-to-agent connections with %s" % ", ".join(unwanted))
    counts = chain.retries()
    if counts is not None:
        # the retry comparison is about a policy that never fires: a retry means an attempt failed
        r["upstream_retries"], r["refused_resends"] = counts
        if counts[0]:
            r["errors"].append("%d upstream retries (an attempt failed)" % counts[0])
    if mode.endswith("h1") and r["errors"] and chain.status_line.rstrip() == "HTTP/1.1 200":
        r["errors"].append("the proxy's HTTP/1.1 status line has no reason phrase, which h2load counts as failed")
    if mode.endswith("grpc"):
        g = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "bench", "grpc_check.py"), str(chain.front_port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        r["grpc_check"] = g.stdout.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        r["grpc_check"] = r["grpc_check"][0]
        if g.returncode != 0:
            r["errors"].append("grpc client: " + r["grpc_check"])
    return r


def run_bulk(mode, chain, opts, files, tmpdir, origin_pids):
    """--bulk-mb MB (10^6 bytes) downloaded, then uploaded, on one connection through the chain: over h2c with curl
    (GET /.bench/bulk/N; POST -T of a file on tmpfs to /.bench/sink, whose answer is the byte count it received), or
    over opaque TCP with bench/bulk_tcp.py. Per direction: MB/s, and the proxy's CPU seconds per GB; the proxy's RSS
    before the load (rss_before_kib); the caller adds the peak RSS (VmHWM) over both directions."""
    r = {"errors": []}
    pids = chain.pids()
    n = opts.bulk_mb * 1000 * 1000
    r["rss_before_kib"] = memory_kib(pids)["rss_kib"] if pids else None
    for direction in ("down", "up"):
        if mode == "bulk-h2":
            url = "http://127.0.0.1:%d/.bench/%s" % (chain.front_port, "bulk/%d" % n if direction == "down" else "sink")
            out = os.path.join(tmpdir, "bulk-h2-%s.out" % direction)
            argv = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", str(opts.bulk_timeout), "-o", out,
                    "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
            argv += ["-X", "POST", "-T", files["bulk_upload"], url] if direction == "up" else [url]
        else:
            argv = ["/usr/bin/python3", os.path.join(REPO, "bench", "bulk_tcp.py"), direction, "--connect",
                    "127.0.0.1:%d" % chain.front_port, "--bytes", str(n), "--timeout", str(opts.bulk_timeout)]
        c0, o0, t0 = cpu_seconds(pids), cpu_seconds(origin_pids), time.time()
        try:
            res = subprocess.run(pinned(opts.cpus_client, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, timeout=opts.bulk_timeout + 10)
            text, err, rc = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"), res.returncode
        except subprocess.TimeoutExpired:
            text, err, rc = "", "timed out after %d s" % (opts.bulk_timeout + 10), -1
        wall = time.time() - t0
        cpu = cpu_seconds(pids) - c0
        r["%s_origin_util" % direction] = (cpu_seconds(origin_pids) - o0) / wall if wall else None
        moved, seconds = None, None
        if rc != 0:
            r["errors"].append("%s %s: exit %s %s" % (mode, direction, rc, (err or text).strip()[:200]))
        elif mode == "bulk-h2":
            f = text.split()
            code, size = (f[0], int(f[1] if direction == "down" else f[2])) if len(f) == 4 else ("?", 0)
            body = ""
            try:
                with open(out, errors="replace") as fh:
                    body = fh.read(64) if direction == "up" else ""
                os.unlink(out)
            except OSError:
                pass
            if code != "200" or size != n or (direction == "up" and body.strip() != str(n)):
                r["errors"].append("%s %s: status %s, %d of %d bytes%s" % (
                    mode, direction, code, size, n, (", the sink counted %s" % body.strip()) if direction == "up" else ""))
            else:
                moved, seconds = size, float(f[3])
        else:
            try:
                j = json.loads(text.strip().splitlines()[-1])
                moved, seconds = j["bytes"], j["seconds"]
            except (ValueError, IndexError, KeyError):
                r["errors"].append("%s %s: no result (%s)" % (mode, direction, (err or text).strip()[:200]))
        if moved:
            r["%s_mb_s" % direction] = moved / seconds / 1e6
            r["%s_proxy_cpu_s_per_gb" % direction] = cpu * 1e9 / moved if pids else None
    return r


def run_mem(chain, opts, tmpdir):
    """RSS and PSS of the proxies after one request, then with 10 and 1000 h2 connections each doing 1 req/s."""
    pids = chain.pids()
    r = {"errors": []}
    m = memory_kib(pids)
    r["idle_rss_kib"], r["idle_pss_kib"] = m["rss_kib"], m["pss_kib"]
    for n in (10, 1000):
        out_path = os.path.join(tmpdir, "h2load-mem%d.out" % n)
        argv = ["h2load", "-D", str(opts.mem_hold), "-c%d" % n, "-m1", "--rps=1", "http://127.0.0.1:%d/" % chain.front_port]
        with open(out_path, "wb") as f:
            p = subprocess.Popen(pinned(opts.cpus_client, argv), stdout=f, stderr=subprocess.STDOUT)
        children.append(p)
        # sample once every connection is open and has been used, well before h2load starts closing them
        deadline = time.time() + opts.mem_hold * 0.7
        conns = 0
        while time.time() < deadline:
            time.sleep(0.25)
            conns = established(chain.front_port)
            if conns >= n and time.time() > deadline - opts.mem_hold * 0.3:
                break
        m = memory_kib(chain.pids())
        conns = established(chain.front_port)
        try:
            p.wait(opts.mem_hold + 30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        children.remove(p)
        with open(out_path, errors="replace") as f:
            h = parse_h2load(f.read())
        r["c%d_rss_kib" % n], r["c%d_pss_kib" % n], r["c%d_conns" % n] = m["rss_kib"], m["pss_kib"], conns
        r["errors"] += ["%d conns: %s" % (n, e) for e in h["errors"]]
        if conns < n:
            r["errors"].append("only %d of %d connections open when sampled" % (conns, n))
    r["rss_per_conn_bytes"] = (r["c1000_rss_kib"] - r["c10_rss_kib"]) * 1024 / 990
    r["pss_per_conn_bytes"] = (r["c1000_pss_kib"] - r["c10_pss_kib"]) * 1024 / 990
    return r


# ---------------------------------------------------------------------------------------------------------------
# statistics and report


def med_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / abs(med) * 100 if len(values) > 1 and med else None
    return med, spread


def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if unit == "k":
        return "%.1fk" % (v / 1000)
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_cell(values, unit="", ratio=None):
    med, spread = med_spread(values)
    if med is None:
        return "-"
    s = fmt_num(med, unit)
    if spread is not None:
        s += " ±%.0f%%" % spread
    if ratio is not None:
        s += " (%.2f)" % ratio
    return s


class Report:
    def __init__(self, results, configs, modes, opts):
        self.res, self.configs, self.modes, self.opts = results, configs, modes, opts

    def runs(self, config, mode):
        return self.res.get(config, {}).get(mode, [])

    def valid(self, config, mode):
        return [r for r in self.runs(config, mode) if not r["errors"]]

    def values(self, config, mode, key):
        return [r.get(key) for r in self.valid(config, mode)]

    def paired(self, a, b, mode, key, fn):
        """Per-round fn(a, b) for rounds where both runs are valid: pairs share the round's drift."""
        out = []
        ra, rb = self.runs(a, mode), self.runs(b, mode)
        for x, y in zip(ra, rb):
            if not x["errors"] and not y["errors"] and x.get(key) is not None and y.get(key) is not None:
                v = fn(x[key], y[key])
                if v is not None:
                    out.append(v)
        return out

    def flag(self, config, mode):
        bad = [r for r in self.runs(config, mode) if r["errors"]]
        if not bad:
            return ""
        return " **INVALID %d/%d: %s**" % (len(bad), len(self.runs(config, mode)), "; ".join(bad[0]["errors"])[:120])

    def cell(self, config, mode, key, unit="", ratio_to=None):
        vals = self.values(config, mode, key)
        ratio = None
        if ratio_to and config != ratio_to:
            rs = self.paired(config, ratio_to, mode, key, lambda x, y: x / y if y else None)
            ratio = statistics.median(rs) if rs else None
        if not self.runs(config, mode):
            return "-"
        return fmt_cell(vals, unit, ratio) + self.flag(config, mode)

    def table(self):
        cols = self.configs
        lines = ["| mode | " + " | ".join(LABELS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]

        def row(label, fn):
            lines.append("| " + label + " | " + " | ".join(fn(c) for c in cols) + " |")

        proxies = [c for c in cols if c != "direct"]
        for mode in [m for m in SAT_MODES if m in self.modes]:
            row(MODE_LABELS[mode] + ", req/s (ratio to direct)", lambda c: self.cell(c, mode, "rps", "k", "direct"))
        for mode in [m for m in SAT_MODES if m in self.modes]:
            row("proxy CPU per %s request, us" % mode.replace("h1", "HTTP/1.1").replace("grpc", "gRPC"),
                lambda c: "-" if c == "direct" else self.cell(c, mode, "proxy_cpu_us_per_req"))
        for mode in [m for m in SAT_MODES if m in self.modes]:
            row(MODE_LABELS[mode] + ", mean / sd latency, ms", lambda c: self.mean_sd(c, mode))
        for mode in [m for m in RATE_MODES if m in self.modes]:
            row("%s at %d req/s: p50 / p90 / p99 / max, ms" % (MODE_LABELS[mode], self.opts.rate),
                lambda c: self.pcts(c, mode, added=False))
            row("%s at %d req/s: added per hop vs direct, p50 / p90 / p99 / max, ms" % (MODE_LABELS[mode], self.opts.rate),
                lambda c: "-" if c == "direct" else self.pcts(c, mode, added=True))
            row("proxy CPU per %s request at %d req/s, us" % (MODE_LABELS[mode], self.opts.rate),
                lambda c: "-" if c == "direct" else self.cell(c, mode, "proxy_cpu_us_per_req"))
        if "mem" in self.modes and proxies:
            for key, label in [("idle", "after one request"), ("c10", "10 h2 connections"), ("c1000", "1000 h2 connections")]:
                row("RSS / PSS, %s, MB" % label, lambda c: self.mem_pair(c, key))
            row("RSS / PSS per extra idle h2 connection (10 -> 1000), KiB", lambda c: self.per_conn(c))
        for mode in [m for m in BULK_MODES if m in self.modes]:
            for d, label in (("down", "download"), ("up", "upload")):
                row("%s, %s %d MB, MB/s (ratio to direct)" % (MODE_LABELS[mode], label, self.opts.bulk_mb),
                    lambda c: self.cell(c, mode, d + "_mb_s", "", "direct"))
            row("%s: proxy CPU per GB, download / upload, s" % MODE_LABELS[mode],
                lambda c: "-" if c == "direct" else self.pair(c, mode, "down_proxy_cpu_s_per_gb", "up_proxy_cpu_s_per_gb"))
            row("%s: proxy RSS before the load / peak RSS (VmHWM) over both directions, MB" % MODE_LABELS[mode],
                lambda c: "-" if c == "direct" else self.pair(c, mode, "rss_before_kib", "hwm_kib", 1 / 1024))
        sat = [m for m in SAT_MODES if m in self.modes]
        if sat and proxies:
            row("peak RSS (VmHWM) of a saturation run, MB", lambda c: "-" if c == "direct" else self.peak(c, sat))
        if any(c.startswith("remora-trace") or c == "remora-alog" for c in cols):
            for mode in [m for m in SAT_MODES + RATE_MODES if m in self.modes]:
                row("%s: spans exported / dropped (queue full) / export failed, per run (median); access log lines "
                    "written / dropped" % MODE_LABELS[mode], lambda c: self.telemetry_counts(c, mode))
                if any(c.startswith("remora-trace") for c in cols):
                    row("%s: OTLP sink CPU per request, us (its own process, not in the proxy's figure)"
                        % MODE_LABELS[mode], lambda c: self.cell(c, mode, "sink_cpu_us_per_req")
                        if c.startswith("remora-trace") else "-")
        grpc_modes = [m for m in ("grpc", "rate-grpc") if m in self.modes]
        if grpc_modes:
            row("real gRPC client call after each gRPC run", lambda c: self.grpc_checks(c, grpc_modes))
        return "\n".join(lines)

    def pair(self, c, mode, k1, k2, scale=1.0):
        """"median k1 / median k2" over the valid runs, scaled; "-" when the configuration did not run the mode."""
        if not self.runs(c, mode):
            return "-"
        a, _ = med_spread([v * scale for v in self.values(c, mode, k1) if v is not None])
        b, _ = med_spread([v * scale for v in self.values(c, mode, k2) if v is not None])
        return "%s / %s" % (fmt_num(a), fmt_num(b)) + self.flag(c, mode)

    def telemetry_counts(self, c, mode):
        runs = [r for r in self.runs(c, mode) if r.get("telemetry")]
        if c.startswith("remora-trace"):
            keys, part = ("exported", "dropped_queue_full", "export_failed"), "spans"
        elif c == "remora-alog":
            keys, part = ("written", "dropped"), "access_log"
        else:
            return "-"
        if not runs:
            return "-"
        return " / ".join(fmt_num(statistics.median([r["telemetry"][part].get(k, 0) for r in runs])) for k in keys)

    def peak(self, c, modes):
        """Per round, the largest peak RSS over the saturation modes; then the median over rounds."""
        per_round = {}
        for m in modes:
            for r in self.valid(c, m):
                if r.get("hwm_kib"):
                    per_round[r["round"]] = max(per_round.get(r["round"], 0), r["hwm_kib"] / 1024)
        return fmt_cell(list(per_round.values()))

    def mean_sd(self, c, mode):
        if not self.runs(c, mode):
            return "-"
        m, _ = med_spread(self.values(c, mode, "lat_mean_ms"))
        s, _ = med_spread(self.values(c, mode, "lat_sd_ms"))
        return ("%s / %s" % (fmt_num(m), fmt_num(s))) + self.flag(c, mode)

    def pcts(self, c, mode, added):
        if not self.runs(c, mode):
            return "-"
        hops = 2 if two_hops(c) else 1
        parts = []
        for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            if added:
                v, _ = med_spread(self.paired(c, "direct", mode, k, lambda x, y: (x - y) / hops))
            else:
                v, _ = med_spread(self.values(c, mode, k))
            parts.append(fmt_num(v))
        return " / ".join(parts) + self.flag(c, mode)

    def mem_pair(self, c, key):
        if c == "direct" or not self.runs(c, "mem"):
            return "-"
        r, _ = med_spread([v / 1024 for v in self.values(c, "mem", key + "_rss_kib")])
        p, _ = med_spread([v / 1024 for v in self.values(c, "mem", key + "_pss_kib")])
        return "%s / %s" % (fmt_num(r), fmt_num(p)) + self.flag(c, "mem")

    def per_conn(self, c):
        if c == "direct" or not self.runs(c, "mem"):
            return "-"
        r, _ = med_spread([v / 1024 for v in self.values(c, "mem", "rss_per_conn_bytes")])
        p, _ = med_spread([v / 1024 for v in self.values(c, "mem", "pss_per_conn_bytes")])
        return "%s / %s" % (fmt_num(r), fmt_num(p)) + self.flag(c, "mem")

    def grpc_checks(self, c, modes):
        runs = [r for m in modes for r in self.runs(c, m)]
        ok = sum(1 for r in runs if r.get("grpc_check") == "ok")
        if not runs:
            return "-"
        if ok == len(runs):
            return "ok %d/%d" % (ok, len(runs))
        bad = [r.get("grpc_check") for r in runs if r.get("grpc_check") != "ok"]
        return "**FAILED %d/%d: %s**" % (len(runs) - ok, len(runs), bad[0])

    def peer_pairs(self):
        one = [c for c in self.configs if c in ("remora", "nghttpx", "haproxy", "haproxy-safe")]
        two = [c for c in self.configs if c.endswith("-2hop")]
        pairs = [("remora-retry", "remora")] if "remora-retry" in self.configs and "remora" in self.configs else []
        # the allocator variants against the agent with glibc's malloc (or --allocator's)
        pairs += [(c, "remora") for c in ALLOC_PROXIES if c in self.configs and "remora" in self.configs]
        # the telemetry variants against today's agent with its defaults, and today's agent against the base agent
        pairs += [(c, "remora") for c in TELEMETRY_PROXIES if c in self.configs and "remora" in self.configs]
        if "remora-base" in self.configs and "remora" in self.configs:
            pairs[pairs.index(("remora-base", "remora"))] = ("remora", "remora-base")
        for n in ("", "3"):  # every balancer against round robin with as many endpoints
            pairs += [("remora-%s%s" % (k, n), "remora-rr" + n) for k in LB_TYPES
                      if k != "rr" and "remora-%s%s" % (k, n) in self.configs and "remora-rr" + n in self.configs]
        pairs += [(a, b) for i, a in enumerate(one) for b in one[i + 1 :]]
        if any(c in MESH_PROXIES for c in self.configs):
            # the mesh comparison: each TLS hop against its plaintext self, the mesh hop's plaintext against the quick
            # flags' chain, and Remora against nghttpx with and without TLS (instead of every pair of 2-hop chains)
            mesh_pairs = [("remora-2hop-mtls", "remora-2hop-peer"), ("remora-2hop-peer", "remora-2hop"),
                          ("nghttpx-2hop-tls", "nghttpx-2hop"), ("remora-2hop-mtls", "nghttpx-2hop-tls"),
                          ("remora-2hop-peer", "nghttpx-2hop"), ("remora-2hop", "nghttpx-2hop")]
            pairs += [(a, b) for a, b in mesh_pairs if a in self.configs and b in self.configs]
            two = []
        pairs += [(a, b) for i, a in enumerate(two) for b in two[i + 1 :]]
        return pairs

    def peer_table(self):
        pairs = self.peer_pairs()
        if not pairs:
            return ""
        lines = ["| metric (median of per-round ratios) | " + " | ".join("%s / %s" % (LABELS[a], LABELS[b]) for a, b in pairs)
                 + " |", "|---" * (len(pairs) + 1) + "|"]

        def ratio(a, b, mode, key):
            rs = self.paired(a, b, mode, key, lambda x, y: x / y if y else None)
            return "%.2f" % statistics.median(rs) if rs else "-"

        for mode in [m for m in SAT_MODES if m in self.modes]:
            lines.append("| %s req/s (higher is better) | " % MODE_LABELS[mode]
                         + " | ".join(ratio(a, b, mode, "rps") for a, b in pairs) + " |")
            lines.append("| proxy CPU per %s request (lower is better) | " % MODE_LABELS[mode].replace(" saturation", "")
                         + " | ".join(ratio(a, b, mode, "proxy_cpu_us_per_req") for a, b in pairs) + " |")
        for mode in [m for m in RATE_MODES if m in self.modes]:
            for k in ("p50_ms", "p99_ms"):
                lines.append("| %s at %d req/s, %s (lower is better) | " % (MODE_LABELS[mode], self.opts.rate, k[:3])
                             + " | ".join(ratio(a, b, mode, k) for a, b in pairs) + " |")
        for mode in [m for m in BULK_MODES if m in self.modes]:
            for k, label in (("down_mb_s", "download MB/s (higher is better)"), ("up_mb_s", "upload MB/s (higher is better)"),
                             ("down_proxy_cpu_s_per_gb", "proxy CPU per GB downloaded (lower is better)"),
                             ("up_proxy_cpu_s_per_gb", "proxy CPU per GB uploaded (lower is better)"),
                             ("hwm_kib", "peak RSS (lower is better)")):
                lines.append("| %s, %s | " % (MODE_LABELS[mode], label) + " | ".join(ratio(a, b, mode, k) for a, b in pairs)
                             + " |")
        if "mem" in self.modes:
            for k, label in [("idle_rss_kib", "RSS after one request"), ("c1000_rss_kib", "RSS with 1000 connections"),
                             ("rss_per_conn_bytes", "RSS per extra connection")]:
                lines.append("| %s (lower is better) | " % label + " | ".join(ratio(a, b, "mem", k) for a, b in pairs) + " |")
        return "\n".join(lines)

    def diagnostics(self):
        """Origin CPU utilisation during saturation: near 100%% would mean the origin, not the proxy, is the limit."""
        out = []
        for mode in [m for m in SAT_MODES if m in self.modes]:
            parts = []
            for c in self.configs:
                v, _ = med_spread([r.get("origin_util") for r in self.runs(c, mode)])
                if v is not None:
                    parts.append("%s %.0f%%" % (LABELS[c], v * 100))
            out.append("- origin CPU during %s: %s" % (MODE_LABELS[mode], ", ".join(parts)))
        return "\n".join(out)


def environment(opts, configs):
    def first_line(argv):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=5)
            return r.stdout.decode(errors="replace").strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kernel": os.uname().release,
        "cpu": "%s x %d" % (cpu, os.cpu_count()),
        "h2load": first_line(["h2load", "--version"]),
        "nghttpx": first_line(["nghttpx", "--version"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "git": first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    if any(c.startswith("remora") for c in configs):
        env["agent"] = opts.agent
        cache = os.path.join(os.path.dirname(os.path.dirname(opts.agent)), "CMakeCache.txt")
        try:
            with open(cache) as f:
                txt = f.read()
            bt = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", txt, re.M)
            san = re.search(r"^REMORA_SANITIZE:\w+=(.*)$", txt, re.M)
            env["agent_build"] = "%s%s" % (bt.group(1) if bt else "?", ", SANITIZERS ON" if san and san.group(1) == "ON" else "")
        except OSError:
            env["agent_build"] = "unknown"
    return env


def markdown(report, env, opts, skipped):
    o = opts
    pin = "origin on CPU %s, proxies on CPU %s, client (h2load) on CPU %s" % (
        o.cpus_origin or "any", o.cpus_proxy or "any", o.cpus_client or "any")
    head = [
        "## Run of %s" % env["date"],
        "",
        "`%s`" % " ".join(["bench/run.sh"] + [a for a in sys.argv[1:] if a != "--keep"]),
        "",
        "- %s, kernel %s; %s; %s; %s; Remora git %s%s" % (
            env["cpu"], env["kernel"], env["h2load"], env["nghttpx"], env["haproxy"].split(" - ")[0], env["git"],
            (", agent build %s" % env.get("agent_build")) if "agent_build" in env else ""),
        "- %d round(s); in each, every mode runs %s back to back%s, each on freshly started processes; "
        "%d worker(s)/thread(s) per proxy; HTTP/2 upstream shared by the client connections (HAProxy `http-reuse "
        "always`); `--pin %s`: %s; Remora's malloc: %s%s; load average (1/5/15 min) %s" % (
            o.rounds, " / ".join(LABELS[c] for c in report.configs),
            " (in reverse order in even-numbered rounds)" if o.order == "abba" else "", o.workers, o.pin, pin,
            o.allocator, ", remora-jemalloc / remora-mimalloc: LD_PRELOAD of Debian's libjemalloc2 / libmimalloc2.0"
            if any(c in ALLOC_PROXIES for c in report.configs) else "", env.get("loadavg", "?")),
        "- saturation: h2load -c16 (-m10 for h2 and gRPC) -D %s; fixed rate: %d req/s over %d connections; "
        "memory: 10 and 1000 h2 connections at 1 req/s each, sampled after %.0f s" % (
            o.duration, o.rate, o.rate_connections, o.mem_hold * 0.4),
        "- cells: median over rounds, ±half the min-max spread in %, (ratio to direct, median of per-round ratios); "
        "**INVALID** marks runs with failed, errored, timed-out or non-2xx requests, a stall (no request reaching the "
        "origin for 1 s), no answer to a GET after the run, or a failed real gRPC call; their figures are left out",
    ]
    if env.get("base_agent"):
        head.append("- Remora, base agent: %s (quick flags of `remora`)" % env["base_agent"])
    if any(c.startswith("remora-trace") or c == "remora-alog" for c in report.configs):
        head.append("- telemetry variants: tracing at sampling_percent 100, default batching (512 spans / 1 s) and "
                    "queue (4096), to bench/otlp_sink.py (its own process, on CPU %s; not in the proxy's CPU); "
                    "access log to a file on tmpfs; span and log counts from the agent's /metrics after each run" %
                    (o.sink_cpus or "any"))
    if skipped:
        head.append("- not run: " + "; ".join(skipped))
    body = ["", report.table(), ""]
    peers = report.peer_table()
    if peers:
        body += ["Ratios between proxies (same rounds):", "", peers, ""]
    body += [report.diagnostics(), ""]
    return "\n".join(head + body)


# ---------------------------------------------------------------------------------------------------------------
# main


def auto_pinning(opts):
    """(origin, proxy, client) CPU lists for taskset; "" leaves a process unpinned. Why these: docs/BENCHMARKS.md."""
    n = os.cpu_count() or 1
    if opts.pin == "none" or n < 2:
        return "", "", ""
    if opts.pin == "proxy-alone":
        # the proxy alone on its CPU(s), the client and the origin elsewhere (together on the other CPU of a 2-CPU
        # machine, for direct as for every proxy): the placement of the independent HAProxy run of issue 12
        if n == 2:
            return "1", "0", "1"
        if n == 3:
            return "1", "0", "2"
        return str(n - 2), "0-%d" % (n - 3), str(n - 1)
    if opts.pin != "auto":
        spec = dict(kv.split("=", 1) for kv in opts.pin.split(","))
        return spec.get("origin", ""), spec.get("proxy", ""), spec.get("client", "")
    if n >= 4:
        return "0", "2-%d" % (n - 1), "1"
    if opts.workers > 1:
        return "", "", ""  # not enough CPUs to pin several workers apart from the client
    if n == 3:
        return "0", "2", "1"
    # Two CPUs: the client, the most expensive of the three per request, gets CPU 1 to itself; the proxy shares
    # CPU 0 with the origin, the cheapest.
    return "0", "0", "1"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per h2load run (default 6)")
    ap.add_argument("--workers", type=int, default=1, help="workers/threads per proxy (default 1)")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help="subset of %s (default: all but the bulk modes); 'rate' means all three fixed-rate modes, "
                         "'bulk' both bulk modes" % ",".join(ALL_MODES))
    ap.add_argument("--allocator", choices=sorted(ALLOCATORS), default="glibc",
                    help="malloc of every Remora configuration but remora-jemalloc / remora-mimalloc (LD_PRELOAD of "
                         "the Debian package's library; default glibc: the agent as built)")
    ap.add_argument("--bulk-mb", type=int, default=100, help="MB (10^6 bytes) each way of the bulk modes (default 100)")
    ap.add_argument("--bulk-timeout", type=int, default=30, help="bound in seconds on each bulk transfer (default 30)")
    ap.add_argument("--proxies", default=",".join(DEFAULT_PROXIES),
                    help="subset of %s (default: all but remora-retry; direct always runs)" % ",".join(ALL_PROXIES))
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s runs (unless --rounds/--duration given)")
    ap.add_argument("--rate", type=int, default=2000, help="total req/s of the fixed-rate modes (default 2000)")
    ap.add_argument("--rate-connections", type=int, default=10)
    ap.add_argument("--mem-hold", type=int, default=None, help="seconds each memory load lasts (default 8, quick 4)")
    ap.add_argument("--order", choices=["fixed", "abba"], default="fixed",
                    help="fixed: the same order every round (default); abba: every other round in reverse order")
    ap.add_argument("--pin", default="auto",
                    help="auto | proxy-alone | none | origin=CPUS,proxy=CPUS,client=CPUS (taskset lists)")
    ap.add_argument("--agent", default=os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent")))
    ap.add_argument("--base-agent", default=os.environ.get("REMORA_BASE_AGENT"),
                    help="the agent of the remora-base variant (an older build, e.g. of commit c038777), run with the "
                         "quick flags of `remora`")
    ap.add_argument("--sink-cpus", default=None,
                    help="taskset CPU list of the OTLP sink of the tracing variants (default: the client's CPUs)")
    ap.add_argument("--origin", default=os.environ.get("REMORA_BENCH_ORIGIN",
                                                       os.path.join(REPO, "build-bench", "bench", "rm-bench-origin")))
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory with every log")
    opts = ap.parse_args()
    argv_given = " ".join(sys.argv[1:])
    if opts.quick:
        if "--rounds" not in argv_given:
            opts.rounds = 1
        if "--duration" not in argv_given:
            opts.duration = 2
    if opts.mem_hold is None:
        opts.mem_hold = 4 if opts.quick else 8
    modes = []
    for m in opts.modes.split(","):
        m = m.strip()
        modes += RATE_MODES if m == "rate" else BULK_MODES if m == "bulk" else [m]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad:
        ap.error("unknown mode(s) %s" % bad)
    modes = [m for m in ALL_MODES if m in modes]
    proxies = [p.strip() for p in opts.proxies.split(",") if p.strip() and p.strip() != "direct"]
    bad = [p for p in proxies if p not in ALL_PROXIES]
    if bad:
        ap.error("unknown proxy %s" % bad)
    opts.cpus_origin, opts.cpus_proxy, opts.cpus_client = auto_pinning(opts)
    if opts.sink_cpus is None:
        opts.sink_cpus = opts.cpus_client
    if "remora-base" in proxies and not (opts.base_agent and agent_works(opts.base_agent)):
        ap.error("remora-base needs --base-agent PATH (or $REMORA_BASE_AGENT) of an agent that answers --help")
    for name in set([opts.allocator] + [allocator_of(p, opts) for p in proxies]):
        if ALLOCATORS[name] and not os.path.exists(ALLOCATORS[name]):
            ap.error("allocator %s: %s is not installed (scripts/install-deps.sh installs it)" % (name, ALLOCATORS[name]))

    skipped = []
    if any(p.startswith("remora") for p in proxies) and not agent_works(opts.agent):
        skipped.append("Remora (%s --help does not work)" % opts.agent)
        log("note: %s --help does not work: Remora is left out of this run" % opts.agent)
        proxies = [p for p in proxies if not p.startswith("remora")]
    configs = ["direct"] + [p for p in ALL_PROXIES if p in proxies]
    if not os.access(opts.origin, os.X_OK):
        sys.exit("origin %s not built: run bench/run.sh, which builds it" % opts.origin)

    tmpdir = tempfile.mkdtemp(prefix="remora-bench-")
    files = {"grpc_body": os.path.join(tmpdir, "grpc-body.bin")}
    write_grpc_body(files["grpc_body"])
    if "bulk-h2" in modes:
        # the upload's source, on tmpfs when there is one (the disk must not be what limits the upload)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmpdir
        files["bulk_upload"] = os.path.join(shm, "remora-bench-upload-%d.bin" % os.getpid())
        with open(files["bulk_upload"], "wb") as f:
            chunk = bytes(i & 0xFF for i in range(256)) * 4096
            left = opts.bulk_mb * 1000 * 1000
            while left:
                left -= f.write(chunk[: min(len(chunk), left)])
    # the mesh variants' CA and identities, made for this run (removed with tmpdir)
    opts.mesh = mesh_material(tmpdir) if any(c in MESH_PROXIES for c in configs) else None

    origin_port = free_port()
    origin = spawn(pinned(opts.cpus_origin, [opts.origin, "--listen", "127.0.0.1:%d" % origin_port]),
                   os.path.join(tmpdir, "origin.log"))
    # a 3-endpoint balancer variant needs two more origin processes (the same origin, other ports)
    extra = []
    if any(lb_variant(c) and lb_variant(c)[1] == 3 for c in configs):
        for i in (1, 2):
            port = free_port()
            extra.append((port, spawn(pinned(opts.cpus_origin, [opts.origin, "--listen", "127.0.0.1:%d" % port]),
                                      os.path.join(tmpdir, "origin%d.log" % i))))
    opts.extra_origin_ports = [port for port, _ in extra]
    # the opaque TCP source and sink of the bulk-tcp mode (bench/bulk_tcp.py), pinned as the origin
    tcp_origin = None
    if "bulk-tcp" in modes:
        tcp_origin_port = free_port()
        tcp_origin = spawn(pinned(opts.cpus_origin, ["/usr/bin/python3", os.path.join(REPO, "bench", "bulk_tcp.py"),
                                                     "serve", "--listen", "127.0.0.1:%d" % tcp_origin_port]),
                           os.path.join(tmpdir, "bulk-tcp-origin.log"))
    results = {c: {} for c in configs}
    t_start = time.time()
    load0 = " ".join(open("/proc/loadavg").read().split()[:3])
    opts.sink = None
    try:
        if any(c.startswith("remora-trace") for c in configs):
            opts.sink = start_sink(opts, tmpdir)
        if not wait_port(origin_port) or not http1_get_ok(origin_port):
            raise RuntimeError("origin did not start; see %s" % tmpdir)
        for port, _ in extra:
            if not wait_port(port) or not http1_get_ok(port):
                raise RuntimeError("origin on port %d did not start; see %s" % (port, tmpdir))
        if tcp_origin and not wait_port(tcp_origin_port):
            raise RuntimeError("bench/bulk_tcp.py did not start; see %s" % tmpdir)
        origin_pids = [origin.pid] + [p.pid for _, p in extra]
        log("bench: %s; modes %s; %d round(s); pinning origin=%s proxy=%s client=%s; logs in %s" % (
            ", ".join(configs), ",".join(modes), opts.rounds, opts.cpus_origin or "any", opts.cpus_proxy or "any",
            opts.cpus_client or "any", tmpdir))
        # Every (mode, configuration) run gets freshly started proxies, and a round runs every configuration for one
        # mode back to back before the next mode: runs compared with each other are seconds apart, not minutes, on a
        # machine whose speed drifts. With --order abba, every second round runs the configurations in reverse order,
        # so that a drift within a round does not always favour the same one.
        for rnd in range(opts.rounds):
            order = configs[::-1] if opts.order == "abba" and rnd % 2 == 1 else configs
            for mode in modes:
                for c in order:
                    if mode == "mem" and c == "direct":
                        continue
                    if mode == "bulk-tcp" and c != "direct" and c not in TCP_PROXIES:
                        continue  # an HTTP-only proxy (nghttpx) or a variant about HTTP routing
                    tcp = mode == "bulk-tcp"
                    chain = Chain(c, opts, tmpdir, tcp_origin_port if tcp else origin_port, tcp=tcp)
                    try:
                        chain.start()
                        r = run_mode(mode, chain, opts, files, tmpdir, [tcp_origin.pid] if tcp else origin_pids)
                        if chain.hops:
                            r.update({k: v for k, v in memory_kib(chain.pids()).items() if k == "hwm_kib"})
                    except RuntimeError as e:
                        r = {"errors": [str(e)]}
                    finally:
                        chain.stop()
                    r["round"] = rnd
                    results[c].setdefault(mode, []).append(r)
                    log("round %d %-13s %-9s %s" % (rnd + 1, c, mode, summary(mode, r)))
    finally:
        stop(origin)
        for _, p in extra:
            stop(p)
        if tcp_origin:
            stop(tcp_origin)
        if files.get("bulk_upload"):
            try:
                os.unlink(files["bulk_upload"])
            except OSError:
                pass
        if opts.sink:
            stop(opts.sink)
        for p in list(children):
            stop(p)
    sink = sink_totals(opts) if opts.sink else None
    opts.sink = None  # a Popen: not for the .json
    report = Report(results, configs, modes, opts)
    env = environment(opts, configs)
    env["loadavg"] = "%s at the start, %s at the end" % (load0, env["loadavg"])
    if opts.base_agent and "remora-base" in configs:
        env["base_agent"] = opts.base_agent
    md = markdown(report, env, opts, skipped)
    if sink:
        md += "\nOTLP sink totals over the run (all tracing runs): %s\n" % json.dumps(sink)
    os.makedirs(opts.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    md_path = os.path.join(opts.out, stamp + ".md")
    with open(md_path, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(opts.out, stamp + ".json"), "w") as f:
        json.dump({"env": env, "options": vars(opts), "configs": configs, "results": results}, f, indent=1)
    log("\n" + md)
    log("written %s (+ .json) in %.0f s" % (md_path, time.time() - t_start))
    if not opts.keep:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


def summary(mode, r):
    err = ("  ERRORS: " + "; ".join(r["errors"])) if r["errors"] else ""
    if mode in BULK_MODES:
        return "down %s MB/s, up %s MB/s, proxy CPU %s / %s s/GB, peak RSS %.1f MB%s" % (tuple(
            fmt_num(r.get(k)) for k in ("down_mb_s", "up_mb_s", "down_proxy_cpu_s_per_gb", "up_proxy_cpu_s_per_gb"))
            + (r.get("hwm_kib", 0) / 1024, err))
    if mode == "mem":
        return "RSS idle %.1f MB, 10c %.1f MB, 1000c %.1f MB, %.1f KiB/conn%s" % (
            r.get("idle_rss_kib", 0) / 1024, r.get("c10_rss_kib", 0) / 1024, r.get("c1000_rss_kib", 0) / 1024,
            r.get("rss_per_conn_bytes", 0) / 1024, err)
    cpu = r.get("proxy_cpu_us_per_req")
    s = "%9.0f req/s  proxy %s us/req  origin %3.0f%%" % (r.get("rps", 0), "%.1f" % cpu if cpu is not None else "-",
                                                        r.get("origin_util", 0) * 100)
    if "p50_ms" in r:
        s += "  p50 %.3f p90 %.3f p99 %.3f max %.3f ms" % (r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"])
    if "grpc_check" in r:
        s += "  grpc-client %s" % r["grpc_check"]
    if r.get("upstream_retries") is not None:
        s += "  retries %d re-sends %d" % (r["upstream_retries"], r["refused_resends"])
    t = r.get("telemetry")
    if t and (t["spans"].get("exported") or t["spans"].get("dropped_queue_full") or t["spans"].get("export_failed")):
        s += "  spans exported %d dropped %d failed %d" % (t["spans"].get("exported", 0),
                                                          t["spans"].get("dropped_queue_full", 0),
                                                          t["spans"].get("export_failed", 0))
    if t and (t["access_log"].get("written") or t["access_log"].get("dropped")):
        s += "  log lines %d dropped %d" % (t["access_log"].get("written", 0), t["access_log"].get("dropped", 0))
    if r.get("sink_cpu_us_per_req") is not None:
        s += "  sink %.1f us/req" % r["sink_cpu_us_per_req"]
    if r.get("mesh_tls"):
        s += "  mesh %s" % " ".join("%s %d" % kv for d in r["mesh_tls"].values() for kv in sorted(d.items()) if kv[1])
    return s + err


if __name__ == "__main__":
    def on_term(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        for p in list(children):
            stop(p)
        sys.exit(130)
