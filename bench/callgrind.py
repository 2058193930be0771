#!/usr/bin/python3
"""Instructions per request of Remora under callgrind: the agent with and without a retry policy on its route, or with
each of the cluster's balancers over 1 or 3 endpoints (run.py's remora-rr ... remora-ring3), and the request-body
copies it makes, as docs/BENCHMARKS.md ("Instructions per request") describes.

Usage: bench/callgrind.sh [options]    (builds the origin as bench/run.sh does, then runs this)
       /usr/bin/python3 bench/callgrind.py --origin PATH [options]

For every (repetition, mode, variant) the agent (1 worker) runs twice under `valgrind --tool=callgrind`: once with
--requests N sent by h2load, once with --idle-requests n0 and the same h2load connections, kept alive as long as the
first run was. Instructions per request = (Ir of the N run - Ir of the n0 run) / (N - n0): start-up, configuration
loading, connection set-up, shutdown and time-driven work (timers) are in both runs and cancel out.
Every load is bounded in count (h2load -n) and time (--timeout); every process is ended by its PID; loopback only.
Writes bench/results/callgrind-<timestamp>.md and .json (git-ignored).
"""
import argparse
import collections
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
import run as bench  # noqa: E402  (the harness: processes, h2load parsing, the retry policy)

VARIANTS = {
    "remora": "no retry policy (quick flags, as `remora` in run.py)",
    "remora-yaml": "no retry policy (the same configuration from a bootstrap file)",
    "remora-retry": "retry policy on the route (bootstrap file, as `remora-retry` in run.py)",
}
# The balancer variants of run.py: `remora-yaml` with the cluster's load_balancer set; "3": three endpoints, three
# origin processes on three ports (the same address three times would be one endpoint)
for _v in bench.LB_PROXIES:
    _lb, _n = bench.lb_variant(_v)
    VARIANTS[_v] = "bootstrap file, `load_balancer: {type: %s}`, %d endpoint%s" % (_lb, _n, "s" if _n > 1 else "")
# The telemetry variants of run.py (docs/BENCHMARKS.md, "Telemetry overhead"): callgrind counts every thread of the
# agent, the telemetry thread (span encoding and export, gRPC C core's threads) and the access log writer included
VARIANTS["remora-base"] = "the agent of --base-agent (e.g. commit c038777), quick flags as `remora`"
VARIANTS["remora-trace-http"] = "bootstrap file + tracing, sampling 100%, OTLP/HTTP to bench/otlp_sink.py"
VARIANTS["remora-trace-grpc"] = "bootstrap file + tracing, sampling 100%, OTLP/gRPC to bench/otlp_sink.py"
VARIANTS["remora-alog"] = "bootstrap file + JSON access log to a file on tmpfs"
# The two-hop chains of run.py (docs/BENCHMARKS.md, "Mesh mTLS"): both agents under callgrind, their instructions
# summed (and shown per hop); the agent-to-agent connection is pooled, so its handshake is in both the N and the n0
# run and cancels out: the figure is the steady state
VARIANTS["remora-2hop"] = "two agents, quick flags (as `remora-2hop` in run.py), both counted"
VARIANTS["remora-2hop-peer"] = "two agents, bootstrap files, plaintext `peer: agent` hop (as in run.py), both counted"
VARIANTS["remora-2hop-mtls"] = "two agents, bootstrap files, mesh mTLS `peer: agent` hop (as in run.py), both counted"
MESH_VARIANTS = ("remora-2hop-peer", "remora-2hop-mtls")
# The allocator variants of run.py: the agent of `remora` with its malloc replaced by LD_PRELOAD (--allocator does
# the same for every Remora variant); callgrind counts the allocator's instructions like the agent's own
VARIANTS["remora-jemalloc"] = "quick flags as `remora`, LD_PRELOAD of Debian's libjemalloc2"
VARIANTS["remora-mimalloc"] = "quick flags as `remora`, LD_PRELOAD of Debian's libmimalloc2.0"
# HAProxy (run.py's configuration, 1 thread) in the same harness: the peer's instructions per request, with the
# connection reuse of the benchmark (`http-reuse always`) and with HAProxy's default (`http-reuse safe`)
VARIANTS["haproxy"] = "HAProxy 2.6, run.py's configuration (`http-reuse always`, `nbthread 1`, h2 upstream)"
VARIANTS["haproxy-safe"] = "HAProxy 2.6, the same with its default `http-reuse safe` (bench/ before issue 12)"
# nghttpx (run.py's flags, 1 worker) in the same harness, so that Remora / nghttpx in instructions per request comes
# from one run; `--single-process`: nghttpx's worker runs in the process valgrind started (without it a forked worker
# process does the work and callgrind would count only the idle main process)
VARIANTS["nghttpx"] = "nghttpx, run.py's flags (`--workers=1`, h2 backend) plus `--single-process`"
MODES = {"h2": "h2 GET (no body)", "h1": "HTTP/1.1 GET (no body; h2load --h1, -m1)", "grpc": "gRPC unary (5+%d-byte request message)" % bench.GRPC_MESSAGE_BYTES}
# Where a request body is copied (agent/src/proxy/stream.c): into the stream's buffer as it arrives
# (rm_stream_on_request_body -> pipe_write, which memcpys), and out of it towards an upstream attempt
# (rm_stream_read_request_at -> memcpy; a call that finds nothing to read returns before copying). pipe_write also
# buffers response bodies (rm_stream_on_response_body -> pipe_write): only the request side is counted here.
MEMCPY = re.compile(r"^(__)?mem(cpy|move)(_|@|$)")
BODY_KEYS = [
    ("req-body events", "rm_stream_on_request_body calls (request body bytes arriving)"),
    ("copy-in calls", "pipe_write calls from rm_stream_on_request_body (copies into the stream's buffer)"),
    ("copy-in Ir", "Ir of those pipe_write calls (inclusive: buffer reservation + memcpy)"),
    ("read calls", "rm_stream_read_request_at calls (an upstream attempt asking for body bytes)"),
    ("copy-out calls", "memcpy calls from rm_stream_read_request_at (copies out of the stream's buffer)"),
    ("copy-out Ir", "Ir of those memcpy calls"),
    ("memcpy Ir, all", "Ir of memcpy/memmove from every caller (headers, frames, response bodies), for scale"),
]


# ---------------------------------------------------------------------------------------------------------------
# callgrind output


def parse_callgrind(path):
    """Totals, exclusive Ir per function and (caller, callee) -> [calls, inclusive Ir] from a callgrind.out file
    (name compression, subposition compression; events: Ir only, as callgrind writes by default)."""
    names = {}
    self_ir = collections.Counter()
    calls = collections.defaultdict(lambda: [0, 0])
    total, npos = None, 1
    fn = cfn = None
    pending = None  # calls= seen: the next cost line is that call's inclusive cost

    def name(val):
        m = re.match(r"\((\d+)\)(?: (.*))?$", val)
        if not m:
            return re.sub(r"'\d+$", "", val)
        if m.group(2) is not None:
            names[m.group(1)] = re.sub(r"'\d+$", "", m.group(2))
        return names.get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[npos]) if len(parts) > npos else 0
                if pending is not None:
                    e = calls[(fn, cfn)]
                    e[0] += pending
                    e[1] += cost
                    pending = None
                else:
                    self_ir[fn] += cost
                continue
            if line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                cfn = name(line[4:])
            elif line.startswith("calls="):
                pending = int(line[6:].split()[0])
            elif line.startswith("positions:"):
                npos = len(line.split(":", 1)[1].split())
            elif line.startswith("totals:"):
                total = int(line.split()[1])
    if total is None:
        total = sum(self_ir.values())
    return {"total": total, "self": self_ir, "calls": calls}


# --threads: the thread a callgrind.out-NN file belongs to, by the function start_thread calls in it
THREAD_ENTRIES = {"worker_main": "worker", "thread_main": "telemetry (span export)", "writer_main": "access log writer"}


def thread_class(prof):
    entries = [b for (a, b) in prof["calls"] if a == "start_thread"]
    if not entries:
        return "main"
    for e in entries:
        if e in THREAD_ENTRIES:
            return THREAD_ENTRIES[e]
    return "other threads (gRPC core, ...)"


def profile_files(out):
    """The callgrind files of one run: with --separate-threads=yes out-01, out-02, ... (one per thread; `out` itself
    may exist too, without costs), else `out`."""
    per_thread = sorted(f for f in (os.path.join(os.path.dirname(out), n) for n in os.listdir(os.path.dirname(out)))
                        if re.match(re.escape(out) + r"-\d+$", f))
    return per_thread or ([out] if os.path.exists(out) else [])


def parse_profiles(paths):
    """parse_callgrind over one run's files (one per thread with --threads), merged; "threads": Ir per thread class."""
    merged = {"total": 0, "self": collections.Counter(), "calls": collections.defaultdict(lambda: [0, 0]),
              "threads": collections.Counter()}
    for path in paths:
        prof = parse_callgrind(path)
        merged["total"] += prof["total"]
        merged["self"].update(prof["self"])
        for e, v in prof["calls"].items():
            merged["calls"][e][0] += v[0]
            merged["calls"][e][1] += v[1]
        merged["threads"][thread_class(prof)] += prof["total"]
    return merged


def body_copies(prof):
    """The request-body copies of one profile (BODY_KEYS): calls and Ir, whole run."""
    calls = prof["calls"]

    def edge(caller, callee_ok, i):
        return sum(v[i] for (a, b), v in calls.items() if a == caller and callee_ok(b or ""))

    return {
        "req-body events": sum(v[0] for (a, b), v in calls.items() if b == "rm_stream_on_request_body"),
        "copy-in calls": edge("rm_stream_on_request_body", lambda b: b == "pipe_write", 0),
        "copy-in Ir": edge("rm_stream_on_request_body", lambda b: b == "pipe_write", 1),
        "read calls": sum(v[0] for (a, b), v in calls.items() if b == "rm_stream_read_request_at"),
        "copy-out calls": edge("rm_stream_read_request_at", MEMCPY.match, 0),
        "copy-out Ir": edge("rm_stream_read_request_at", MEMCPY.match, 1),
        "memcpy Ir, all": sum(v for k, v in prof["self"].items() if MEMCPY.match(k or "")),
    }


# ---------------------------------------------------------------------------------------------------------------
# runs


def agent_argv(variant, opts, port, upstream, admin, health, tmpdir, hop=0):
    """upstream: the origin ports, the first being the one origin of the 1-endpoint variants (for the outer agent of
    a two-hop variant, hop 1: the inner agent's port)."""
    lb = bench.lb_variant(variant)
    upstream = upstream if lb and lb[1] == 3 else upstream[0]
    if variant.startswith("haproxy"):
        cfg = os.path.join(tmpdir, "%s.cfg" % variant)
        text = bench.HAPROXY_CFG
        if variant == "haproxy-safe":
            text = text.replace("    http-reuse always\n", "    http-reuse safe\n")
        with open(cfg, "w") as f:
            f.write(text % {"threads": 1, "port": port, "upstream": upstream})
        return ["haproxy", "-f", cfg, "-db"]
    if variant == "nghttpx":
        # --conf=/dev/null: never pick up /etc/nghttpx/nghttpx.conf; no access log is nghttpx's default
        return ["nghttpx", "--conf=/dev/null", "--frontend=127.0.0.1,%d;no-tls" % port,
                "--backend=127.0.0.1,%d;;proto=h2" % upstream, "--workers=1", "--single-process",
                "--errorlog-file=" + os.path.join(tmpdir, "nghttpx-error.log")]
    if variant in MESH_VARIANTS:
        cfg = os.path.join(tmpdir, "%s-hop%d.yaml" % (variant, hop))
        with open(cfg, "w") as f:
            f.write(bench.remora_mesh_yaml(port, upstream, admin, health, 1, inner=(hop == 0),
                                           mtls=variant.endswith("-mtls"), mesh=opts.mesh))
        return [opts.agent, "--config", cfg, "--log-level", "error"]
    if variant in ("remora", "remora-base", "remora-2hop") or variant in bench.ALLOC_PROXIES:
        agent = opts.base_agent if variant == "remora-base" else opts.agent
        return [agent, "--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % upstream,
                "--upstream-protocol", "h2", "--workers", "1", "--admin", "127.0.0.1:%d" % admin,
                "--health", "127.0.0.1:%d" % health, "--log-level", "error", "--drain-timeout-ms", "500"]
    cfg = os.path.join(tmpdir, "%s.yaml" % variant)
    with open(cfg, "w") as f:
        f.write(bench.remora_yaml(port, upstream, admin, health, 1, retry=(variant == "remora-retry"),
                                  lb=lb[0] if lb else None, telemetry=bench.telemetry_yaml(variant, opts, tmpdir)))
    return [opts.agent, "--config", cfg, "--log-level", "error"]


def measure(variant, mode, n, opts, tmpdir, origin_ports, files, tag, hold_s=None):
    """One agent lifetime under callgrind with n requests; with hold_s, kept alive (idle) until hold_s after its
    start. Returns the run's figures, with "errors"."""
    r = {"variant": variant, "mode": mode, "requests": n, "errors": []}
    t0 = time.time()
    # one agent, or two in a row (the inner one, hop 0, first): each under its own callgrind
    procs, outs, healths, upstream, started = [], [], [], origin_ports, True
    for hop in range(2 if bench.two_hops(variant) else 1):
        port, admin, health = bench.free_port(), bench.free_port(), bench.free_port()
        out = os.path.join(tmpdir, "callgrind.%s.hop%d.out" % (tag, hop))
        argv = ["valgrind", "--tool=callgrind", "--vgdb=no", "--callgrind-out-file=" + out] + \
            (["--separate-threads=yes"] if opts.threads else []) + \
            agent_argv(variant, opts, port, upstream, admin, health, tmpdir, hop)
        p = bench.spawn(bench.pinned(opts.cpus_proxy, argv), os.path.join(tmpdir, "agent.%s.hop%d.log" % (tag, hop)),
                        env=bench.allocator_env(bench.allocator_of(variant, opts)))
        procs.append(p)
        outs.append(out)
        healths.append(health)
        upstream = [port]
        if not bench.wait_port(port, timeout=60) or p.poll() is not None:
            started = False
            break
    health = healths[-1]
    try:
        if not started:
            r["errors"].append("the agent did not start under valgrind; see %s" % tmpdir)
            return r
        url = "http://127.0.0.1:%d%s" % (port, bench.GRPC_PATH if mode == "grpc" else "/")
        h2 = ["h2load", "-n", str(n), "-c", str(opts.connections), "-m", "1" if mode == "h1" else str(opts.streams)]
        if mode == "h1":
            h2.append("--h1")
        if mode == "grpc":
            h2 += ["-d", files["grpc_body"], "-H", "content-type: application/grpc", "-H", "te: trailers"]
        h2.append(url)
        r["h2load"] = " ".join(h2)
        try:
            res = subprocess.run(bench.pinned(opts.cpus_client, h2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=opts.timeout)
            h = bench.parse_h2load(res.stdout.decode(errors="replace"))
        except subprocess.TimeoutExpired:
            h = {"errors": ["h2load did not finish in %d s" % opts.timeout]}
        r["errors"] += h["errors"]
        if h.get("succeeded") != n:
            r["errors"].append("%s of %d requests succeeded" % (h.get("succeeded"), n))
        counts = bench.remora_retries(health)
        r["upstream_retries"], r["refused_resends"] = counts if counts else (None, None)
        if variant in MESH_VARIANTS:
            # the hop must be what the variant says (counted by both agents)
            want = "true" if variant.endswith("-mtls") else "false"
            conns = {}
            for h in healths:
                for k, v in ((bench.remora_mesh_tls_counts(h) or {}).get("connections") or {}).items():
                    conns[k] = conns.get(k, 0) + v
            r["mesh_connections"] = conns
            if not conns.get("outbound/tls=" + want) or not conns.get("inbound/tls=" + want) or any(
                    v for k, v in conns.items() if not k.endswith("tls=" + want)):
                r["errors"].append("the agent-to-agent hop was not tls=%s: %s" % (want, json.dumps(conns)))
        if counts and counts[0]:
            r["errors"].append("%d upstream retries (an attempt failed)" % counts[0])
        if variant.startswith("remora-trace") or variant == "remora-alog":
            if variant.startswith("remora-trace"):
                time.sleep(2.0)  # the exporter's partial batch (batch_timeout_ms 1 s, slower under valgrind)
            r["telemetry"] = bench.remora_telemetry(health)
        r["load_s"] = time.time() - t0
        if hold_s is not None and time.time() < t0 + hold_s:
            time.sleep(t0 + hold_s - time.time())
    finally:
        for q in reversed(procs):  # the outer agent first
            bench.stop(q, grace=opts.timeout)  # SIGTERM: the agent drains, exits, and callgrind writes its file
        if variant == "remora-alog":
            try:
                os.unlink(bench.access_log_path(opts, tmpdir))
            except OSError:
                pass
    r["lifetime_s"] = time.time() - t0
    for q in procs:
        # HAProxy's (and nghttpx's) hard stop on SIGTERM ends it by the signal (after callgrind has written its file)
        if q.returncode != 0 and not (variant.startswith(("haproxy", "nghttpx")) and q.returncode in (143, -15)):
            r["errors"].append("the agent exited with %s" % q.returncode)
    per_hop = [profile_files(out) for out in outs]
    if not all(per_hop):
        r["errors"].append("no callgrind output")
        return r
    r["profile"] = [f for fs in per_hop for f in fs]
    if len(per_hop) > 1:
        r["profile_hops"] = per_hop
    return r


def differential(big, small, opts_threads=False):
    """Per-request figures from an N-request run and an n0-request run of the same variant and mode."""
    pb, ps = parse_profiles(big["profile"]), parse_profiles(small["profile"])
    dn = big["requests"] - small["requests"]
    d = {"ir_total_n": pb["total"], "ir_total_n0": ps["total"], "ir_per_req": (pb["total"] - ps["total"]) / dn}
    fns = set(pb["self"]) | set(ps["self"])
    d["self_per_req"] = {f: (pb["self"].get(f, 0) - ps["self"].get(f, 0)) / dn for f in fns}
    edges = set(pb["calls"]) | set(ps["calls"])
    d["calls_per_req"] = {e: (pb["calls"].get(e, [0])[0] - ps["calls"].get(e, [0])[0]) / dn for e in edges}
    cb, cs = body_copies(pb), body_copies(ps)
    d["body"] = {k: (cb[k] - cs[k]) / dn for k in cb}
    d["body_n"] = cb
    if big.get("profile_hops") and small.get("profile_hops"):
        # per agent of a two-hop variant: hop 0 is the inner agent (in front of the origin), hop 1 the outer one
        d["hops_per_req"] = [(parse_profiles(b)["total"] - parse_profiles(s)["total"]) / dn
                             for b, s in zip(big["profile_hops"], small["profile_hops"])]
    if opts_threads:
        d["threads_per_req"] = {t: (pb["threads"].get(t, 0) - ps["threads"].get(t, 0)) / dn
                                for t in set(pb["threads"]) | set(ps["threads"])}
    return d


# ---------------------------------------------------------------------------------------------------------------
# report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    m = med(values)
    if len(values) < 2 or not m:
        return ""
    return " ±%.1f%%" % ((max(values) - min(values)) / 2 / abs(m) * 100)


def base_of(v, variants):
    """The reference of variant v: the first variant, except that a 3-endpoint balancer variant is compared with
    round robin over the same 3 endpoints (remora-rr3), and a tracing or access-log variant with `remora`, when that
    is measured too."""
    lb = bench.lb_variant(v)
    if lb and lb[1] == 3 and "remora-rr3" in variants and v != "remora-rr3":
        return "remora-rr3"
    if (v.startswith("remora-trace") or v == "remora-alog") and "remora" in variants:
        return "remora"  # a telemetry feature against today's agent at its defaults
    if v == "remora-2hop-mtls" and "remora-2hop-peer" in variants:
        return "remora-2hop-peer"  # mesh mTLS against the same hop in plaintext
    return variants[0]


def report(diffs, opts, variants, modes, env, telemetry=None):
    others = [v for v in variants[1:]]
    lines = [
        "## Callgrind run of %s" % env["date"],
        "",
        "`%s`" % " ".join(["bench/callgrind.sh"] + sys.argv[1:]),
        "",
        "- %s; %s; Remora git %s, agent build %s; %s" % (env["cpu"], env["valgrind"], env["git"], env["agent_build"],
                                                          env["h2load"]),
        "- Remora's malloc: %s (remora-jemalloc / remora-mimalloc: LD_PRELOAD of Debian's libjemalloc2 / "
        "libmimalloc2.0); load average (1/5/15 min) %s" % (opts.allocator, env.get("loadavg", "?")),
        "- agent with 1 worker under `valgrind --tool=callgrind`; h2load -c%d -m%d; per request = (Ir with %d requests "
        "- Ir with %d requests, the same connections, the agent kept alive as long) / %d; %d repetition(s), variants "
        "alternated; cells: median over repetitions ± half the min-max spread" % (
            opts.connections, opts.streams, opts.requests, opts.idle_requests, opts.requests - opts.idle_requests,
            opts.reps),
        "- variants: " + "; ".join("`%s`: %s" % (v, VARIANTS[v]) for v in variants),
    ] + (["- `remora-base` agent: %s" % env.get("base_agent")] if "remora-base" in variants else []) + (
        ["- callgrind counts the instructions of every thread of the agent: the worker, and with tracing the "
         "telemetry thread (span encoding, OTLP export, gRPC C core's own threads) and with the access log its writer "
         "thread; the OTLP sink is another process and is not counted"]
        if any(v.startswith("remora-trace") or v == "remora-alog" for v in variants) else []) + [
        "- retry policy of `remora-retry`: `retry: %s`" % bench.RETRY_POLICY,
        "",
        "| mode | " + " | ".join("%s, Ir/request" % v for v in variants)
        + "".join(" | %s / %s" % (v, base_of(v, variants)) for v in others) + " |",
        "|---" * (1 + 2 * len(variants) - 1) + "|",
    ]
    for mode in modes:
        cells = []
        for v in variants:
            vals = [d["ir_per_req"] for d in diffs.get((v, mode), [])]
            cells.append("-" if not vals else "%.0f%s" % (med(vals), spread(vals)))
        for v in others:
            base = base_of(v, variants)
            rs = [a["ir_per_req"] / b["ir_per_req"] for a, b in zip(diffs.get((v, mode), []), diffs.get((base, mode), []))]
            cells.append("-" if not rs else "%.3f%s" % (med(rs), spread(rs)))
        lines.append("| %s | %s |" % (MODES[mode], " | ".join(cells)))
    hop_rows = [(mode, v) for mode in modes for v in variants
                if any("hops_per_req" in d for d in diffs.get((v, mode), []))]
    if hop_rows:
        lines += ["", "Ir/request of each agent of the two-hop variants (medians over repetitions): outer = where the "
                  "client connects (calls the other agent), inner = in front of the origin:", "",
                  "| mode | variant | outer agent | inner agent |", "|---|---|---|---|"]
        for mode, v in hop_rows:
            ds = [d for d in diffs[(v, mode)] if "hops_per_req" in d]
            lines.append("| %s | %s | %.0f | %.0f |" % (mode, v, med([d["hops_per_req"][1] for d in ds]),
                                                        med([d["hops_per_req"][0] for d in ds])))
    if opts.threads:
        classes = sorted(set().union(*[d.get("threads_per_req", {}) for ds in diffs.values() for d in ds] or [set()]))
        lines += ["", "Ir/request by thread (--threads; medians over repetitions):", "",
                  "| mode | variant | " + " | ".join(classes) + " |", "|---" * (2 + len(classes)) + "|"]
        for mode in modes:
            for v in variants:
                ds = diffs.get((v, mode), [])
                if ds:
                    lines.append("| %s | %s | %s |" % (mode, v, " | ".join(
                        "%.0f" % med([d.get("threads_per_req", {}).get(c, 0) for d in ds]) for c in classes)))
    tel = [(v, mode) for mode in modes for v in variants if v.startswith("remora-trace") or v == "remora-alog"]
    if tel:
        lines += ["", "Telemetry counters of the N-request runs (the agent's /metrics after the load, medians over "
                  "repetitions): spans exported / dropped (queue full) / export failed; access log lines written / "
                  "dropped:", "", "| mode | variant | spans exported | dropped | export failed | log lines written "
                  "| log lines dropped |", "|---|---|---|---|---|---|---|"]
        for v, mode in tel:
            ts = [t for t in telemetry.get((v, mode), []) if t]
            if not ts:
                continue

            def m(part, k):
                return "%.0f" % med([t[part].get(k, 0) for t in ts])

            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                mode, v, m("spans", "exported"), m("spans", "dropped_queue_full"), m("spans", "export_failed"),
                m("access_log", "written"), m("access_log", "dropped")))
    lines += ["", "Request-body copies per request (medians; columns: %s):" % "; ".join(
        "*%s*: %s" % kv for kv in BODY_KEYS), "",
        "| mode | variant | " + " | ".join(k for k, _ in BODY_KEYS) + " |", "|---" * (2 + len(BODY_KEYS)) + "|"]
    for mode in modes:
        for v in variants:
            ds = diffs.get((v, mode), [])
            if not ds:
                continue
            lines.append("| %s | %s | %s |" % (mode, v, " | ".join(
                "%.2f" % med([d["body"][k] for d in ds]) for k, _ in BODY_KEYS)))
    for mode in modes:
        for v in others:
            base = base_of(v, variants)
            a, b = diffs.get((v, mode), []), diffs.get((base, mode), [])
            if not a or not b:
                continue
            fns = set().union(*[d["self_per_req"] for d in a + b])
            delta = []
            for f in fns:
                x = med([d["self_per_req"].get(f, 0) for d in a])
                y = med([d["self_per_req"].get(f, 0) for d in b])
                delta.append((x - y, f, x, y))
            delta.sort(key=lambda t: -abs(t[0]))
            total = med([d["ir_per_req"] for d in a]) - med([d["ir_per_req"] for d in b])
            lines += ["", "%s: functions whose exclusive Ir/request differs most, %s vs %s (difference of the totals: "
                      "%+.0f Ir/request):" % (MODES[mode], v, base, total), "",
                      "| function | %s | %s | difference |" % (base, v), "|---|---|---|---|"]
            for dlt, f, x, y in delta[: opts.top]:
                if abs(dlt) < 0.5:
                    break
                lines.append("| `%s` | %.1f | %.1f | %+.1f |" % (f, y, x, dlt))
            edges = set().union(*[d["calls_per_req"] for d in a + b])
            delta = []
            for e in edges:
                x = med([d["calls_per_req"].get(e, 0) for d in a])
                y = med([d["calls_per_req"].get(e, 0) for d in b])
                delta.append((x - y, e, x, y))
            delta.sort(key=lambda t: -abs(t[0]))
            lines += ["", "%s: calls per request that differ most, %s vs %s:" % (MODES[mode], v, base), "",
                      "| caller -> callee | %s | %s | difference |" % (base, v), "|---|---|---|---|"]
            for dlt, e, x, y in delta[: opts.top]:
                if abs(dlt) < 0.01:
                    break
                lines.append("| `%s` -> `%s` | %.2f | %.2f | %+.2f |" % (e[0], e[1], y, x, dlt))
    return "\n".join(lines)


def environment(opts):
    def first_line(argv):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=5)
            return r.stdout.decode(errors="replace").strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"

    env = bench.environment(opts, ["remora"])
    env["valgrind"] = first_line(["valgrind", "--version"])
    return env


# ---------------------------------------------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000, help="requests of the measured run (default 20000)")
    ap.add_argument("--idle-requests", type=int, default=400,
                    help="requests of the reference run (default 400; at least connections x streams)")
    ap.add_argument("--connections", type=int, default=16, help="h2load -c (default 16)")
    ap.add_argument("--streams", type=int, default=10, help="h2load -m (default 10)")
    ap.add_argument("--modes", default="h2,grpc", help="subset of %s (default h2,grpc)" % ",".join(MODES))
    ap.add_argument("--variants", default="remora,remora-retry",
                    help="the first is the reference; from %s (default remora,remora-retry)" % ",".join(VARIANTS))
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--top", type=int, default=25, help="rows of each difference table (default 25)")
    ap.add_argument("--timeout", type=int, default=300, help="bound in seconds on each load and each agent's exit")
    ap.add_argument("--pin", default="auto", help="as in run.py")
    ap.add_argument("--allocator", choices=sorted(bench.ALLOCATORS), default="glibc",
                    help="malloc of every Remora variant but remora-jemalloc / remora-mimalloc (as in run.py)")
    ap.add_argument("--agent", default=os.environ.get("REMORA_AGENT", os.path.join(bench.REPO, "build", "agent",
                                                                                   "remora-agent")))
    ap.add_argument("--base-agent", default=os.environ.get("REMORA_BASE_AGENT"),
                    help="the agent of the remora-base variant (e.g. a build of commit c038777)")
    ap.add_argument("--sink-cpus", default=None, help="taskset CPU list of the OTLP sink (default: the client's)")
    ap.add_argument("--origin", default=os.environ.get("REMORA_BENCH_ORIGIN",
                                                       os.path.join(bench.REPO, "build-bench", "bench", "rm-bench-origin")))
    ap.add_argument("--out", default=os.path.join(bench.REPO, "bench", "results"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (callgrind.*.out files, logs)")
    ap.add_argument("--threads", action="store_true",
                    help="callgrind --separate-threads=yes: also split Ir/request by thread (worker, telemetry, "
                         "access log writer, main, other); the total is the same sum")
    opts = ap.parse_args()
    modes = [m for m in opts.modes.split(",") if m]
    variants = [v for v in opts.variants.split(",") if v]
    if any(m not in MODES for m in modes) or any(v not in VARIANTS for v in variants) or len(variants) < 1:
        ap.error("unknown mode or variant")
    if opts.idle_requests >= opts.requests:
        ap.error("--idle-requests must be below --requests")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (scripts/install-deps.sh lists the bench's needs)")
    if not bench.agent_works(opts.agent):
        sys.exit("%s --help does not work" % opts.agent)
    if "remora-base" in variants and not (opts.base_agent and bench.agent_works(opts.base_agent)):
        ap.error("remora-base needs --base-agent PATH (or $REMORA_BASE_AGENT) of an agent that answers --help")
    if not os.access(opts.origin, os.X_OK):
        sys.exit("origin %s not built: run bench/callgrind.sh, which builds it" % opts.origin)
    opts.workers = 1
    opts.cpus_origin, opts.cpus_proxy, opts.cpus_client = bench.auto_pinning(opts)
    if opts.sink_cpus is None:
        opts.sink_cpus = opts.cpus_client

    tmpdir = tempfile.mkdtemp(prefix="remora-callgrind-")
    # the CA and identities of the mesh variants, made for this run (removed with tmpdir)
    opts.mesh = bench.mesh_material(tmpdir) if any(v in MESH_VARIANTS for v in variants) else None
    files = {"grpc_body": os.path.join(tmpdir, "grpc-body.bin")}
    bench.write_grpc_body(files["grpc_body"])
    # one origin, or three (three ports, three processes) when a 3-endpoint balancer variant is measured
    n_origins = 3 if any(bench.lb_variant(v) and bench.lb_variant(v)[1] == 3 for v in variants) else 1
    origin_ports, origins = [], []
    for i in range(n_origins):
        port = bench.free_port()
        origin_ports.append(port)
        origins.append(bench.spawn(bench.pinned(opts.cpus_origin, [opts.origin, "--listen", "127.0.0.1:%d" % port]),
                                   os.path.join(tmpdir, "origin%s.log" % (i or ""))))
    origin_port = origin_ports[0]
    diffs, raw, failed, telemetry = {}, [], 0, {}
    t_start = time.time()
    sink = None
    try:
        if any(v.startswith("remora-trace") for v in variants):
            sink = bench.start_sink(opts, tmpdir)
        for port in origin_ports:
            if not bench.wait_port(port) or not bench.http1_get_ok(port):
                raise RuntimeError("origin on port %d did not start; see %s" % (port, tmpdir))
        bench.log("callgrind: variants %s; modes %s; %d + %d requests; %d repetition(s); logs in %s" % (
            ",".join(variants), ",".join(modes), opts.requests, opts.idle_requests, opts.reps, tmpdir))
        for rep in range(opts.reps):
            for mode in modes:
                for v in variants:
                    tag = "%s.%s.%d" % (v, mode, rep)
                    big = measure(v, mode, opts.requests, opts, tmpdir, origin_ports, files, tag + ".n")
                    small = measure(v, mode, opts.idle_requests, opts, tmpdir, origin_ports, files, tag + ".n0",
                                    hold_s=big.get("lifetime_s"))
                    errors = big["errors"] + small["errors"]
                    entry = {"rep": rep, "mode": mode, "variant": v, "errors": errors,
                             "n_run": {k: x for k, x in big.items() if k != "profile"},
                             "n0_run": {k: x for k, x in small.items() if k != "profile"}}
                    if not errors:
                        d = differential(big, small, opts.threads)
                        diffs.setdefault((v, mode), []).append(d)
                        entry.update({k: d[k] for k in ("ir_total_n", "ir_total_n0", "ir_per_req", "hops_per_req",
                                                        "body", "body_n", "threads_per_req") if k in d})
                        bench.log("rep %d %-5s %-13s %8.0f Ir/request  (N run %.1f s, n0 run held %.1f s)  body copies "
                                  "%s" % (rep + 1, mode, v, d["ir_per_req"], big["load_s"], small["lifetime_s"],
                                          ", ".join("%s %.2f" % (k, x) for k, x in d["body"].items() if x)
                                          or "none"))
                    else:
                        failed += 1
                        bench.log("rep %d %-5s %-13s ERRORS: %s" % (rep + 1, mode, v, "; ".join(errors)))
                    if "telemetry" in big:
                        entry["telemetry_n"], entry["telemetry_n0"] = big["telemetry"], small.get("telemetry")
                        telemetry.setdefault((v, mode), []).append(big["telemetry"])
                        t = big["telemetry"] or {"spans": {}, "access_log": {}}
                        bench.log("      spans exported %d dropped %d failed %d; log lines %d dropped %d" % (
                            t["spans"].get("exported", 0), t["spans"].get("dropped_queue_full", 0),
                            t["spans"].get("export_failed", 0), t["access_log"].get("written", 0),
                            t["access_log"].get("dropped", 0)))
                    raw.append(entry)
                    for r in (big, small):
                        if r.get("profile") and not opts.keep:
                            for path in r["profile"]:
                                os.unlink(path)
    finally:
        for origin in origins:
            bench.stop(origin)
        if sink:
            bench.stop(sink)
        for p in list(bench.children):
            bench.stop(p)
    env = environment(opts)
    if "remora-base" in variants:
        env["base_agent"] = opts.base_agent
    md = report(diffs, opts, variants, modes, env, telemetry)
    if sink:
        md += "\nOTLP sink totals (all runs): %s\n" % json.dumps(bench.sink_totals(opts))
    os.makedirs(opts.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    md_path = os.path.join(opts.out, "callgrind-%s.md" % stamp)
    with open(md_path, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(opts.out, "callgrind-%s.json" % stamp), "w") as f:
        json.dump({"env": env, "options": vars(opts), "runs": raw}, f, indent=1)
    bench.log("\n" + md)
    bench.log("written %s (+ .json) in %.0f s%s" % (md_path, time.time() - t_start,
                                                    "; callgrind files kept in " + tmpdir if opts.keep else ""))
    if not opts.keep:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 1 if failed else 0


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
