#!/usr/bin/python3
"""TLS handshakes per second against one server, full and resumed: an agent's `peer: agent` listener terminating mesh
mTLS, and nghttpx's TLS frontend with and without a client certificate, as docs/BENCHMARKS.md ("Mesh mTLS") describes.

Usage: /usr/bin/python3 bench/handshake.py [options]    (needs build-bench/bench/rm-tls-handshake: bench/README.md)

Servers (--servers, in this order every round, each freshly started, 1 worker, pinned to --server-cpus):
  remora-mesh   the agent (--agent): a listener `peer: agent` with `mesh_tls.identity_dir` (MESH_SERVER_ID); the client
                offers ALPN remora.mesh/h2, SNI remora.mesh and its certificate (MESH_CLIENT_ID), and verifies the
                agent's chain; the agent requires and verifies the client's (docs/mesh-tls.md)
  nghttpx-mtls  nghttpx --frontend TLS, --verify-client against the same CA; the client offers ALPN h2 and the same
                client certificate
  nghttpx-tls   nghttpx --frontend TLS, no client certificate (one-way TLS, what a TLS-terminating proxy does)
Kinds (--kinds): `full` (every handshake a full one) and `resume` (rm-tls-handshake --resume: every handshake after a process's
first offers the ticket the previous one received). The client is rm-tls-handshake (bench/tls_handshake.c): connect,
TLS 1.3 handshake, close, for --duration seconds; --clients processes in parallel, pinned to --client-cpus.
Figures per run: handshakes/s (sum over the client processes), resumed count, failures, and the server's CPU
(utime + stime of its processes from /proc/PID/stat over the run) per handshake and as a share of one CPU. The
identities are made into the run's temporary directory (run.py's mesh_material: python3-cryptography, ECDSA P-256,
SPIFFE URI SANs). No request is sent: the servers' upstream is a closed loopback port, never connected to.
Every load is bounded in time (--duration, at most 600 s); every process is ended by its PID; loopback only.
Writes bench/results/handshake-<timestamp>.md and .json (git-ignored).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the harness: processes, pinning, CPU time, the mesh identities)

SERVERS = {
    "remora-mesh": "Remora, `peer: agent` listener, mesh mTLS (ALPN remora.mesh/h2, client certificate verified)",
    "nghttpx-mtls": "nghttpx TLS frontend, --verify-client (ALPN h2, client certificate verified)",
    "nghttpx-tls": "nghttpx TLS frontend, no client certificate (ALPN h2)",
}
KINDS = ["full", "resume"]
LINE = re.compile(r"handshakes (\d+) seconds ([\d.]+) rate (\d+)/s resumed (\d+) failed (\d+)")


def start_server(name, opts, tmpdir, mesh, port, dead_port, tag):
    """Starts one server; returns (Popen, health port or None)."""
    log = os.path.join(tmpdir, "%s.log" % tag)
    if name == "remora-mesh":
        admin, health = bench.free_port(), bench.free_port()
        cfg = os.path.join(tmpdir, "%s.yaml" % tag)
        with open(cfg, "w") as f:
            f.write(bench.remora_mesh_yaml(port, dead_port, admin, health, 1, inner=True, mtls=True, mesh=mesh))
        argv = [opts.agent, "--config", cfg, "--log-level", "error"]
        return bench.spawn(bench.pinned(opts.server_cpus, argv), log), health
    argv = ["nghttpx", "--conf=/dev/null", "--frontend=127.0.0.1,%d" % port,
            "--backend=127.0.0.1,%d;;proto=h2" % dead_port, "--workers=1", "--no-ocsp", "--errorlog-file=" + log]
    if name == "nghttpx-mtls":
        argv += ["--verify-client", "--verify-client-cacert=" + mesh["ca"]]
    argv += [mesh["tls_key"], mesh["tls_crt"]]
    return bench.spawn(bench.pinned(opts.server_cpus, argv), log), None


def client_argv(name, kind, opts, mesh, port):
    argv = [opts.tool, "--connect", "127.0.0.1:%d" % port, "--ca", mesh["ca"], "--duration", str(opts.duration)]
    if name == "remora-mesh":
        argv += ["--alpn", "remora.mesh/h2", "--sni", "remora.mesh"]
    else:
        argv += ["--alpn", "h2", "--sni", bench.NGHTTPX_TLS_NAME]
    if name in ("remora-mesh", "nghttpx-mtls"):
        argv += ["--cert", mesh["client_crt"], "--key", mesh["client_key"]]
    if kind == "resume":
        argv.append("--resume")
    return bench.pinned(opts.client_cpus, argv)


def agent_handshakes(health):
    """{"inbound/success": n, "inbound/resumed": n, ...} (non-zero only) from the agent's /metrics, or None."""
    counts = bench.remora_mesh_tls_counts(health)
    return None if counts is None else {k: v for k, v in counts["handshakes"].items() if v}


def measure(name, kind, opts, tmpdir, mesh, tag):
    r = {"server": name, "kind": kind, "errors": []}
    port, dead_port = bench.free_port(), bench.free_port()
    p, health = start_server(name, opts, tmpdir, mesh, port, dead_port, tag)
    clients = []
    try:
        if not bench.wait_port(port) or p.poll() is not None:
            r["errors"].append("%s did not start; see %s" % (name, tmpdir))
            return r
        time.sleep(0.3)  # nghttpx forks its worker after listening
        pids = bench.descendants(p.pid)
        argv = client_argv(name, kind, opts, mesh, port)
        r["argv"] = " ".join(argv)
        c0, t0 = bench.cpu_seconds(pids), time.time()
        for i in range(opts.clients):
            out = open(os.path.join(tmpdir, "%s.client%d.out" % (tag, i)), "wb")
            clients.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            bench.children.append(clients[-1])
            out.close()
        for c in clients:
            try:
                c.wait(opts.duration + 30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
                r["errors"].append("rm-tls-handshake did not end in time")
        wall, cpu = time.time() - t0, bench.cpu_seconds(pids) - c0
        totals = {"handshakes": 0, "rate": 0.0, "resumed": 0, "failed": 0}
        for i, c in enumerate(clients):
            with open(os.path.join(tmpdir, "%s.client%d.out" % (tag, i)), errors="replace") as f:
                text = f.read()
            m = LINE.search(text)
            if not m:
                r["errors"].append("client %d: no summary (%s)" % (i, text.strip()[-200:]))
                continue
            n, secs, _, resumed, failed = m.groups()
            totals["handshakes"] += int(n)
            totals["rate"] += int(n) / float(secs)
            totals["resumed"] += int(resumed)
            totals["failed"] += int(failed)
            if int(failed):
                r["errors"].append("client %d: %s failed (%s)" % (i, failed, text.strip().splitlines()[-1][:200]))
        r.update(totals)
        r["server_cpu_s"], r["wall_s"] = cpu, wall
        r["server_util"] = cpu / wall if wall else None
        r["server_cpu_us_per_hs"] = cpu * 1e6 / totals["handshakes"] if totals["handshakes"] else None
        if totals["handshakes"] == 0:
            r["errors"].append("no handshake")
        # a resumed run must resume (every handshake but each process's first); a full run must not
        if kind == "resume" and totals["resumed"] < totals["handshakes"] - opts.clients:
            r["errors"].append("only %d of %d handshakes resumed" % (totals["resumed"], totals["handshakes"]))
        if kind == "full" and totals["resumed"]:
            r["errors"].append("%d handshakes resumed in a full run" % totals["resumed"])
        if health is not None:
            r["agent_handshakes"] = agent_handshakes(health)
    finally:
        for c in clients:
            bench.stop(c)
        bench.stop(p)
    return r


def med_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, ""
    m = statistics.median(values)
    s = " ±%.0f%%" % ((max(values) - min(values)) / 2 / abs(m) * 100) if len(values) > 1 and m else ""
    return m, s


def report(results, opts, servers, env):
    def valid(name, kind):
        return [r for r in results if r["server"] == name and r["kind"] == kind and not r["errors"]]

    def cell(name, kind, key, fmt):
        runs = [r for r in results if r["server"] == name and r["kind"] == kind]
        ok = valid(name, kind)
        m, s = med_spread([r.get(key) for r in ok])
        out = "-" if m is None else (fmt % m) + s
        if len(ok) < len(runs):
            bad = [r for r in runs if r["errors"]]
            out += " **INVALID %d/%d: %s**" % (len(bad), len(runs), "; ".join(bad[0]["errors"])[:120])
        return out

    lines = [
        "## Handshake run of %s" % env["date"],
        "",
        "`%s`" % " ".join(["bench/handshake.py"] + [a for a in sys.argv[1:] if a != "--keep"]),
        "",
        "- %s, kernel %s; %s; %s; Remora git %s, agent build %s" % (
            env["cpu"], env["kernel"], env["nghttpx"], env["openssl"], env["git"], env.get("agent_build", "?")),
        "- %d round(s), servers alternated (%s), each kind on a freshly started server with 1 worker on CPU %s; "
        "%d rm-tls-handshake process(es) on CPU %s, %d s each; TLS 1.3; ECDSA P-256 certificates" % (
            opts.rounds, " / ".join(servers), opts.server_cpus or "any", opts.clients, opts.client_cpus or "any",
            opts.duration),
        "- " + "; ".join("`%s`: %s" % (s, SERVERS[s]) for s in servers),
        "- cells: median over rounds ± half the min-max spread; server CPU = utime + stime of the server's "
        "processes over the run / handshakes",
        "",
        "| server | kind | handshakes/s | server CPU per handshake, us | server CPU use | resumed / handshakes |",
        "|---|---|---|---|---|---|",
    ]
    for s in servers:
        for k in KINDS:
            ok = valid(s, k)
            res = "-"
            if ok:
                res = "%d / %d" % (statistics.median([r["resumed"] for r in ok]),
                                   statistics.median([r["handshakes"] for r in ok]))
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                s, k, cell(s, k, "rate", "%.0f"), cell(s, k, "server_cpu_us_per_hs", "%.0f"),
                cell(s, k, "server_util", "%.2f"), res))
    # ratios per round between servers, same kind
    pairs = [(a, b) for a, b in (("remora-mesh", "nghttpx-mtls"), ("remora-mesh", "nghttpx-tls"),
                                 ("nghttpx-mtls", "nghttpx-tls")) if a in servers and b in servers]
    if pairs:
        lines += ["", "| ratio (median of per-round ratios) | " + " | ".join("%s / %s" % p for p in pairs) + " |",
                  "|---" * (len(pairs) + 1) + "|"]
        for k in KINDS:
            for key, label in (("rate", "handshakes/s"), ("server_cpu_us_per_hs", "server CPU per handshake")):
                cells = []
                for a, b in pairs:
                    ra = {r["round"]: r.get(key) for r in valid(a, k)}
                    rb = {r["round"]: r.get(key) for r in valid(b, k)}
                    rs = [ra[i] / rb[i] for i in ra if i in rb and ra[i] and rb[i]]
                    cells.append("%.2f" % statistics.median(rs) if rs else "-")
                lines.append("| %s, %s | %s |" % (k, label, " | ".join(cells)))
    for k in KINDS:
        rs = [r for r in results if r["server"] == "remora-mesh" and r["kind"] == k and r.get("agent_handshakes")]
        if rs:
            lines.append("")
            lines.append("- the agent's own count (`remora_mesh_tls_handshakes_total`), %s, last round: %s" % (
                k, json.dumps(rs[-1]["agent_handshakes"])))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per client run (default 5, at most 600)")
    ap.add_argument("--clients", type=int, default=2, help="rm-tls-handshake processes in parallel (default 2)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="subset of %s" % ",".join(SERVERS))
    ap.add_argument("--kinds", default=",".join(KINDS), help="subset of %s" % ",".join(KINDS))
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list of the server (default: 0 with 2+ CPUs)")
    ap.add_argument("--client-cpus", default=None, help="taskset CPU list of the clients (default: the others)")
    ap.add_argument("--agent", default=os.environ.get("REMORA_AGENT", os.path.join(bench.REPO, "build", "agent",
                                                                                   "remora-agent")))
    ap.add_argument("--tool", default=os.path.join(bench.REPO, "build-bench", "bench", "rm-tls-handshake"))
    ap.add_argument("--out", default=os.path.join(bench.REPO, "bench", "results"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory with every log")
    opts = ap.parse_args()
    servers = [s for s in opts.servers.split(",") if s]
    if not servers or any(s not in SERVERS for s in servers):
        ap.error("unknown server in %s" % opts.servers)
    kinds = [k for k in opts.kinds.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        ap.error("unknown kind in %s" % opts.kinds)
    if not 0 < opts.duration <= 600 or not 1 <= opts.clients <= 16 or opts.rounds < 1:
        ap.error("--duration must be 1..600, --clients 1..16, --rounds >= 1")
    if not os.access(opts.tool, os.X_OK):
        sys.exit("%s not built: cmake --build build-bench --target rm-tls-handshake" % opts.tool)
    if "remora-mesh" in servers and not bench.agent_works(opts.agent):
        sys.exit("%s --help does not work" % opts.agent)
    n = os.cpu_count() or 1
    if opts.server_cpus is None:
        opts.server_cpus = "0" if n >= 2 else ""
    if opts.client_cpus is None:
        opts.client_cpus = ("1-%d" % (n - 1) if n > 2 else "1") if n >= 2 else ""

    tmpdir = tempfile.mkdtemp(prefix="remora-handshake-")
    mesh = bench.mesh_material(tmpdir)
    results = []
    t_start = time.time()
    bench.log("handshake: %s; %d round(s) of %d s runs; server on CPU %s, %d client(s) on CPU %s; logs in %s" % (
        ",".join(servers), opts.rounds, opts.duration, opts.server_cpus or "any", opts.clients,
        opts.client_cpus or "any", tmpdir))
    try:
        for rnd in range(opts.rounds):
            for kind in kinds:
                for s in servers:
                    r = measure(s, kind, opts, tmpdir, mesh, "%s.%s.%d" % (s, kind, rnd))
                    r["round"] = rnd
                    results.append(r)
                    bench.log("round %d %-12s %-6s %6.0f hs/s  server %s us/hs  util %s  resumed %d/%d%s%s" % (
                        rnd + 1, s, kind, r.get("rate", 0),
                        "%.0f" % r["server_cpu_us_per_hs"] if r.get("server_cpu_us_per_hs") else "-",
                        "%.2f" % r["server_util"] if r.get("server_util") is not None else "-",
                        r.get("resumed", 0), r.get("handshakes", 0),
                        ("  agent %s" % json.dumps(r["agent_handshakes"])) if r.get("agent_handshakes") else "",
                        ("  ERRORS: " + "; ".join(r["errors"])) if r["errors"] else ""))
    finally:
        for p in list(bench.children):
            bench.stop(p)
    env = bench.environment(opts, ["remora"] if "remora-mesh" in servers else [])
    try:
        env["openssl"] = subprocess.run(["openssl", "version"], stdout=subprocess.PIPE,
                                        timeout=5).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        env["openssl"] = "?"
    md = report(results, opts, servers, env)
    os.makedirs(opts.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    md_path = os.path.join(opts.out, "handshake-%s.md" % stamp)
    with open(md_path, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(opts.out, "handshake-%s.json" % stamp), "w") as f:
        json.dump({"env": env, "options": vars(opts), "results": results}, f, indent=1)
    bench.log("\n" + md)
    bench.log("written %s (+ .json) in %.0f s" % (md_path, time.time() - t_start))
    if not opts.keep:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    def on_term(sig, frame):
        raise KeyboardInterrupt

    bench.signal.signal(bench.signal.SIGTERM, on_term)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        for p in list(bench.children):
            bench.stop(p)
        sys.exit(130)
