#!/usr/bin/python3
"""The soak's driver (docs/soak.md), started by scripts/soak.sh once `mesh.sh up` has built the mesh.

It applies the Services, starts the opaque-TCP server and the fault proxy, then for --duration seconds
runs the mixed traffic (tests/soak/traffic.py in the client pod) beside bounded loops: a config push
every second, kill/restart of web-v2's agent, echo's app and the control plane (each every --period
seconds, staggered), a change of the fault proxy's mix every 60 s, and a sample of every agent's RSS and
fd count every 10 s. Then it decides which failed requests the chosen faults explain, prints the report
and writes it to --report as JSON. Exit 0 only if no failure is unexplained, every agent that lived
through the run has an RSS slope after warm-up under --rss-slope-max-kb-min, and no agent's fd count
grew by more than --fd-growth-max.

Every child process runs under timeout(1); every loop stops at the deadline.
"""

import argparse
import bisect
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MESH = os.path.join(REPO, "scripts", "mesh.sh")
PY = "/usr/bin/python3"
AGENT_PODS = ("client", "web", "web-v2", "echo")
GRACE_S = 2.0  # a kill window ends this long after the restarted process is ready again
FAULT_SLACK_S = 0.25  # a fault event explains a failed request whose [start, end] it falls in, widened by this

# Which components each kind of request passes through besides the client's agent: a kill window of one
# of them explains a failure of that kind. The fault proxy sits only on the path of h1_faults.
DEPENDS = {
    "h1": {"agent-web", "agent-web-v2", "app-web", "app-web-v2"},
    "h2": {"agent-web", "agent-web-v2", "app-web", "app-web-v2"},
    "h1_faults": {"agent-web", "app-web", "faultproxy"},
    "grpc_unary": {"agent-echo", "app-echo"},
    "grpc_stream": {"agent-echo", "app-echo"},
    "tcp": {"agent-echo", "tcp-server"},
}
for deps in DEPENDS.values():
    deps.add("agent-client")

# the fault proxy's mixes, alternated every 60 s through its control port
# (a connection through the proxy lives about 0.5-1 s: 5 requests, then the client's pause outlasts the pool's
# idle timeout; the reset and stall times fall inside that)
MIXES = [
    "drop=0.05 reset=0.15 stall=0.10 delay=0.20 delay_ms=20 stall_ms=400 stall_at_max_ms=300 reset_min_ms=20 reset_max_ms=500",
    "drop=0.10 reset=0.20 stall=0.10 delay=0.10 delay_ms=50 stall_ms=800 stall_at_max_ms=300 reset_min_ms=20 reset_max_ms=300",
]

PUSH = """apiVersion: remora.dev/v1
kind: HTTPRoute
metadata: {{name: web-canary}}
spec:
  parentRefs: [{{kind: Service, name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-soak-push, value: "{value}"}}]}}
    backendRefs: [{{name: web, weight: {w1}}}, {{name: web-v2, weight: {w2}}}]
"""


def log(msg):
    print(f"soak: {time.strftime('%H:%M:%S')} {msg}", flush=True)


class Soak:
    def __init__(self, a):
        self.a = a
        self.prefix = os.environ["REMORA_MESH_PREFIX"]
        self.run_dir = os.environ["REMORA_MESH_RUN"]
        self.work = a.work
        self.deadline = None
        self.t_start = None
        self.lock = threading.Lock()
        self.windows = []  # {"what", "kill", "ready", "end", "ok"}
        self.pushes = []  # {"t0", "t1", "rc", "variant"}
        self.samples = []  # {"t", "pod", "pid", "rss_kb", "fds"}
        self.mix_changes = []
        self.children = []
        self.errors = []

    # helpers
    def mesh(self, *args, timeout=60):
        return subprocess.run(["bash", MESH, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def in_ns(self, pod, *cmd, timeout=30):
        return subprocess.run(["ip", "netns", "exec", f"{self.prefix}-{pod}", *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def spawn(self, pod, name, *cmd, seconds):
        out = open(os.path.join(self.work, f"{name}.out"), "w")
        err = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", f"{self.prefix}-{pod}", "timeout", "-k", "5", str(int(seconds)), *cmd],
                             stdout=out, stderr=err, cwd=REPO)
        self.children.append((name, p))
        return p

    def agent_pid(self, pod):
        """The running agent of a pod: the child of the newest timeout(1) recorded for agent-<pod>."""
        try:
            with open(os.path.join(self.run_dir, "pids")) as f:
                recs = [line.split() for line in f if line.split()[2:3] == [f"agent-{pod}"]]
            pid = recs[-1][0]
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except (OSError, IndexError):
            return None

    def ready(self, pod):
        r = self.in_ns(pod, "curl", "-fs", "--noproxy", "*", "--max-time", "2", "-o", "/dev/null",
                       "http://127.0.0.1:15020/ready", timeout=10)
        return r.returncode == 0

    def wait_tcp(self, pod, addr, port, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r = self.in_ns(pod, "timeout", "1", "bash", "-c", f"exec 3<>/dev/tcp/{addr}/{port}", timeout=5)
            if r.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def proxy_ctl(self, line):
        r = self.in_ns("control", "timeout", "5", PY, "-c",
                       "import socket,sys; s=socket.create_connection(('10.77.0.2',18081),3); "
                       "s.sendall(sys.argv[1].encode()+b'\\n'); print(s.makefile().readline().strip())", line, timeout=10)
        return r.stdout.strip()

    # set-up
    def setup(self):
        for path in (os.path.join(REPO, "examples", "mesh-netns.yaml"), os.path.join(HERE, "mesh-soak.yaml")):
            r = self.mesh("ctl", "apply", "-f", path, "--wait", "--timeout", "20")
            if r.returncode != 0:
                sys.exit(f"soak: remoractl apply -f {path} failed: {r.stdout}{r.stderr}")
            log(f"applied {os.path.relpath(path, REPO)}: {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''}")
        life = self.a.duration + 240
        self.spawn("echo", "tcp-server", PY, os.path.join(REPO, "tests", "tools", "banner_server.py"), "0.0.0.0:7000",
                   seconds=life)
        self.faultproxy = self.spawn("control", "faultproxy", PY, os.path.join(HERE, "faultproxy.py"),
                                     "--listen", "10.77.0.2:18080", "--upstream", "10.77.0.11:8080",
                                     "--control", "10.77.0.2:18081", "--ttl", str(life - 10),
                                     "--events", os.path.join(self.work, "faults.jsonl"),
                                     "--stats", os.path.join(self.work, "faultproxy-stats.json"), "--seed", "12",
                                     *([] if "faults" in self.a.without else
                                       [f"--{w.split('=')[0].replace('_', '-')}={w.split('=')[1]}" for w in MIXES[0].split()]),
                                     seconds=life)
        if not (self.wait_tcp("echo", "127.0.0.1", 7000, 15) and self.wait_tcp("control", "10.77.0.2", 18080, 15)):
            sys.exit("soak: the TCP server or the fault proxy did not listen within 15 s")
        # every kind answers once before the clock starts (bounded)
        probe = self.in_ns("client", "timeout", "60", PY, os.path.join(HERE, "traffic.py"), "--duration", "3",
                           "--out", os.path.join(self.work, "probe.jsonl"), "--gap", "0.2", timeout=90)
        kinds = {}
        with open(os.path.join(self.work, "probe.jsonl")) as f:
            for rec in map(json.loads, f):
                kinds.setdefault(rec["k"], []).append(rec)
        good = {k for k, v in kinds.items() if any(r["ok"] for r in v)}
        missing = set(DEPENDS) - good
        if missing:
            sys.exit(f"soak: no request of {sorted(missing)} succeeded in the 3 s probe: "
                     f"{[r for k in missing for r in kinds.get(k, [])][:6]} {probe.stderr[-800:]}")
        log(f"probe: every kind answered ({', '.join(sorted(good))})")

    # loops
    def push_loop(self):
        i = 0
        while time.monotonic() < self.deadline - 2:
            t_next = time.monotonic() + 1.0
            variant = i % 2
            path = os.path.join(self.work, f"push-{variant}.yaml")
            t0 = time.time()
            try:
                r = self.mesh("ctl", "apply", "-f", path, "--wait", "--timeout", "5", timeout=30)
                rc, out = r.returncode, (r.stdout + r.stderr).strip()[-300:]
            except subprocess.TimeoutExpired:
                rc, out = -1, "timed out after 30 s"
            with self.lock:
                self.pushes.append({"t0": t0, "t1": time.time(), "rc": rc, "variant": variant, "out": out if rc else ""})
            i += 1
            time.sleep(max(0.0, t_next - time.monotonic()))

    def kill(self, what):
        pod, kind = what
        name = "control" if pod == "control" else f"{kind}-{pod}"
        t_kill = time.time()
        r = self.mesh("restart", pod, *(() if pod == "control" else (kind,)), timeout=60)
        t_port = time.time()
        ok = r.returncode == 0
        if ok and kind == "agent":
            end = time.monotonic() + 30
            while not self.ready(pod) and time.monotonic() < end:
                time.sleep(0.1)
            ok = self.ready(pod)
        elif ok and pod == "control":
            # recovered when every agent is connected again (remoractl status)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                s = self.mesh("ctl", "status", timeout=20)
                if s.returncode == 0 and re.search(r"\b4 agents connected", s.stdout):
                    break
                time.sleep(0.2)
            else:
                ok = False
        t_ready = time.time()
        w = {"what": name, "kill": t_kill, "port": t_port, "ready": t_ready, "end": t_ready + GRACE_S, "ok": ok,
             "out": (r.stdout + r.stderr).strip()[-300:]}
        with self.lock:
            self.windows.append(w)
        log(f"killed and restarted {name}: back in {t_ready - t_kill:.2f} s{'' if ok else ' (NOT READY: ' + w['out'] + ')'}")

    def kill_loop(self):
        p = self.a.period
        plan = []
        k = 0
        while True:
            base = min(self.a.warmup / 2, self.a.duration / 10) + k * p
            items = [(base + p / 3, ("web-v2", "agent")), (base + 2 * p / 3, ("echo", "app")), (base + p, ("control", "control"))]
            items = [it for it in items if it[1][1] in self.a.kills]
            items = [it for it in items if it[0] < self.a.duration - 25]  # the last 25 s are quiet
            if not items:
                break
            plan += items
            k += 1
        for at, what in plan:
            wait = self.t_start_mono + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() >= self.deadline - 20:
                return
            try:
                self.kill(what)
            except subprocess.TimeoutExpired as e:
                self.errors.append(f"restart {what} timed out: {e}")

    def mix_loop(self):
        i = 1
        while True:
            t_next = self.t_start_mono + 60 * i
            if t_next >= self.deadline - 5:
                return
            time.sleep(max(0.0, t_next - time.monotonic()))
            out = self.proxy_ctl("set " + MIXES[i % 2])
            with self.lock:
                self.mix_changes.append({"t": time.time(), "mix": MIXES[i % 2], "answer": out})
            i += 1

    def sample_loop(self):
        while True:
            t = time.time()
            for pod in AGENT_PODS:
                pid = self.agent_pid(pod)
                if pid is None:
                    continue
                try:
                    with open(f"/proc/{pid}/status") as f:
                        rss = int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                except (OSError, AttributeError):
                    continue
                with self.lock:
                    self.samples.append({"t": t, "pod": pod, "pid": pid, "rss_kb": rss, "fds": fds})
            if time.monotonic() + 10 > self.deadline:
                return
            time.sleep(10 - (time.time() - t) % 10)

    def run(self):
        self.setup()
        for v in (0, 1):
            with open(os.path.join(self.work, f"push-{v}.yaml"), "w") as f:
                f.write(PUSH.format(value="ab"[v], w1=(90, 80)[v], w2=(10, 20)[v]))
            os.chmod(os.path.join(self.work, f"push-{v}.yaml"), 0o644)
        self.identity0 = {p: self.identity(p) for p in AGENT_PODS}
        self.t_start = time.time()
        self.t_start_mono = time.monotonic()
        self.deadline = self.t_start_mono + self.a.duration
        log(f"traffic, pushes, kills for {self.a.duration:.0f} s (until {time.strftime('%H:%M:%S', time.localtime(self.t_start + self.a.duration))})")
        traffic = self.spawn("client", "traffic", PY, os.path.join(HERE, "traffic.py"), "--duration", str(self.a.duration),
                             "--out", os.path.join(self.work, "requests.jsonl"), "--gap", str(self.a.gap),
                             seconds=self.a.duration + 120)
        loops = [self.sample_loop]
        loops += [] if "pushes" in self.a.without else [self.push_loop]
        loops += [] if "kills" in self.a.without else [self.kill_loop]
        loops += [] if "faults" in self.a.without else [self.mix_loop]
        threads = [threading.Thread(target=f, daemon=True) for f in loops]
        for t in threads:
            t.start()
        while time.monotonic() < self.deadline:
            time.sleep(min(60, max(0.1, self.deadline - time.monotonic())))
            if time.monotonic() < self.deadline:
                with self.lock:
                    log(f"{time.monotonic() - self.t_start_mono:.0f} s: {len(self.pushes)} pushes, {len(self.windows)} kills")
        try:
            traffic.wait(timeout=150)
        except subprocess.TimeoutExpired:
            self.errors.append("the traffic process did not end within 150 s of the deadline")
        for t in threads:
            t.join(timeout=90)
        self.identity1 = {p: self.identity(p) for p in AGENT_PODS}
        self.handshakes = {p: self.metric_sum(p, "remora_mesh_tls_handshakes_total") for p in AGENT_PODS}
        self.faultproxy.terminate()
        try:
            self.faultproxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.faultproxy.kill()
        return self.report()

    def identity(self, pod):
        r = self.in_ns(pod, "curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/identity", timeout=10)
        return dict(re.findall(r"^(\w+): (.*)$", r.stdout, re.M))

    def metric_sum(self, pod, name):
        r = self.in_ns(pod, "curl", "-s", "--max-time", "5", "http://127.0.0.1:15020/metrics", timeout=10)
        out = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
            if m and m.group(1) == name:
                res = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))).get("result", "")
                out[res] = out.get(res, 0) + int(float(m.group(3)))
        return out

    def stop_children(self):
        for name, p in self.children:
            if p.poll() is None:
                p.terminate()
        for name, p in self.children:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # analysis
    def report(self):
        a = self.a
        reqs = []
        with open(os.path.join(self.work, "requests.jsonl")) as f:
            for line in f:
                try:
                    reqs.append(json.loads(line))
                except ValueError:
                    pass  # a line cut short by the end
        events = []
        path = os.path.join(self.work, "faults.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                events = [e for e in map(json.loads, f) if e["event"] != "mix"]
        ev_times = sorted(e["t"] for e in events if e["event"] in ("drop", "reset", "over_limit", "upstream_failed"))
        by_kind = {}
        unexplained = []
        explained_by = {}
        for r in reqs:
            k = by_kind.setdefault(r["k"], {"ok": 0, "failed": 0, "explained": 0, "unexplained": 0, "not_accepted": 0})
            if r["ok"]:
                k["ok"] += 1
                continue
            k["failed"] += 1
            if not r["acc"]:
                k["not_accepted"] += 1
            why = None
            for w in self.windows:
                if w["what"] in DEPENDS[r["k"]] and r["t0"] <= w["end"] and r["t1"] >= w["kill"]:
                    why = f"kill {w['what']}"
                    break
            if why is None and "faultproxy" in DEPENDS[r["k"]]:
                i = bisect.bisect_left(ev_times, r["t0"] - FAULT_SLACK_S)
                if i < len(ev_times) and ev_times[i] <= r["t1"] + FAULT_SLACK_S:
                    why = "fault proxy"
            if why:
                k["explained"] += 1
                explained_by[why] = explained_by.get(why, 0) + 1
            else:
                k["unexplained"] += 1
                unexplained.append({**r, "at_s": round(r["t0"] - self.t_start, 2)})
        # RSS and fds per agent process
        agents = {}
        for s in self.samples:
            agents.setdefault((s["pod"], s["pid"]), []).append(s)
        rss = []
        slope_fail = fd_fail = False
        warm = self.t_start + a.warmup
        for (pod, pid), ss in sorted(agents.items(), key=lambda kv: kv[1][0]["t"]):
            after = [s for s in ss if s["t"] >= warm]
            entry = {"pod": pod, "pid": pid, "samples": len(ss), "first_s": round(ss[0]["t"] - self.t_start),
                     "last_s": round(ss[-1]["t"] - self.t_start), "rss_kb_first": ss[0]["rss_kb"], "rss_kb_last": ss[-1]["rss_kb"],
                     "rss_kb_max": max(s["rss_kb"] for s in ss), "fds_first": ss[0]["fds"], "fds_last": ss[-1]["fds"],
                     "fds_max": max(s["fds"] for s in ss)}
            whole = ss[0]["t"] <= self.t_start + 15 and ss[-1]["t"] >= self.t_start + a.duration - 25
            entry["whole_run"] = whole
            if whole:
                entry["series"] = [[round(s["t"] - self.t_start), s["rss_kb"], s["fds"]] for s in ss]
            if len(after) >= 3 and after[-1]["t"] - after[0]["t"] >= 60:
                entry["rss_slope_all_kb_per_min"] = lsq([(s["t"] - warm) / 60 for s in after], [s["rss_kb"] for s in after])
            # the criterion: the slope of each whole minute's highest sample after warm-up. The agents' RSS
            # drops by up to ~0.7 MB now and then (memory given back) and climbs again; a fit of every sample
            # would let such drops hide a steady climb of the peaks
            minutes = {}
            for s in after:
                minutes.setdefault(int((s["t"] - warm) // 60), []).append(s["rss_kb"])
            full = sorted(m for m, v in minutes.items() if len(v) >= 5)
            if len(full) >= 3:
                entry["rss_peaks_kb"] = [max(minutes[m]) for m in full]
                entry["rss_slope_kb_per_min"] = lsq([m + 0.5 for m in full], entry["rss_peaks_kb"])
                if whole and entry["rss_slope_kb_per_min"] > a.rss_slope_max_kb_min:
                    slope_fail = True
            if len(after) >= 2:
                entry["fds_after_warmup_first"] = after[0]["fds"]
                entry["fd_growth"] = after[-1]["fds"] - after[0]["fds"]
                if whole and entry["fd_growth"] > a.fd_growth_max:
                    fd_fail = True
            rss.append(entry)
        whole_agents = [e for e in rss if e["whole_run"] and "rss_slope_kb_per_min" in e]
        # a slope needs 60 s of samples after warm-up; a shorter run (e.g. --duration 60) does not judge RSS
        slope_measured = a.duration - a.warmup >= 200
        if slope_measured and len({e["pod"] for e in whole_agents}) < 3:
            slope_fail = True  # fewer than the three never-killed agents measured: the run cannot vouch for RSS
        fp_stats = {}
        sp = os.path.join(self.work, "faultproxy-stats.json")
        if os.path.exists(sp):
            with open(sp) as f:
                fp_stats = json.load(f)
        push_lat = sorted(p["t1"] - p["t0"] for p in self.pushes if p["rc"] == 0)
        push_fail = [p for p in self.pushes if p["rc"] != 0]
        push_unexplained = [p for p in push_fail
                            if not any(w["what"] in ("control", "agent-web-v2") and p["t0"] <= w["end"] and p["t1"] >= w["kill"]
                                       for w in self.windows)]

        def pct(xs, q):
            return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000) if xs else None

        rot = {}
        for pod in AGENT_PODS:
            i0, i1 = self.identity0.get(pod, {}), self.identity1.get(pod, {})
            rot[pod] = {"serial_changed": i0.get("serial") != i1.get("serial"), "rotations_success": i1.get("rotations_success"),
                        "rotations_failure": i1.get("rotations_failure"), "expired": i1.get("expired"),
                        "not_after": i1.get("not_after"), "handshakes": self.handshakes.get(pod)}
        total_unexplained = sum(k["unexplained"] for k in by_kind.values())
        kills = {}
        for w in self.windows:
            d = kills.setdefault(w["what"], {"count": 0, "not_ready": 0, "recovery_s_max": 0.0, "recovery_s_sum": 0.0})
            d["count"] += 1
            d["not_ready"] += 0 if w["ok"] else 1
            d["recovery_s_max"] = round(max(d["recovery_s_max"], w["ready"] - w["kill"]), 2)
            d["recovery_s_sum"] += w["ready"] - w["kill"]
        for d in kills.values():
            d["recovery_s_mean"] = round(d.pop("recovery_s_sum") / d["count"], 2)
        rep = {
            "duration_s": a.duration, "warmup_s": a.warmup, "period_s": a.period, "gap_s": a.gap,
            "without": sorted(a.without), "kill_loops": sorted(a.kills),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t_start)),
            "requests": {"total": len(reqs), "by_kind": by_kind, "explained_by": explained_by,
                         "unexplained": total_unexplained, "unexplained_examples": unexplained[:30]},
            "fault_proxy": {"stats": fp_stats, "events": {e: sum(1 for x in events if x["event"] == e)
                                                          for e in ("drop", "reset", "stall", "over_limit", "upstream_failed")},
                            "mix_changes": self.mix_changes},
            "kills": kills, "kill_windows": [{**w, "kill_s": round(w["kill"] - self.t_start, 2)} for w in self.windows],
            "config_pushes": {"total": len(self.pushes), "ok": len(push_lat), "failed": len(push_fail),
                              "failed_unexplained": len(push_unexplained),
                              "failed_examples": [{**p, "at_s": round(p["t0"] - self.t_start, 2)} for p in push_fail[:10]],
                              "wait_ms_p50": pct(push_lat, 0.5), "wait_ms_p99": pct(push_lat, 0.99),
                              "wait_ms_max": pct(push_lat, 1.0)},
            "certificates": {"lifetime": os.environ.get("REMORA_MESH_CERT_LIFETIME"), "agents": rot},
            "agents": rss,
            "bounds": {"rss_slope_max_kb_per_min": a.rss_slope_max_kb_min, "fd_growth_max": a.fd_growth_max},
            "errors": self.errors,
        }
        rep["pass"] = {"unexplained_failures": total_unexplained == 0,
                       "rss_slope": (not slope_fail) if slope_measured else "not measured (run too short)",
                       "fds": (not fd_fail) if any("fd_growth" in e for e in rss if e["whole_run"]) else "not measured (run too short)",
                       "no_errors": not self.errors}
        rep["ok"] = all(v is not False for v in rep["pass"].values())
        return rep


def lsq(xs, ys):
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx, 1) if sxx else 0.0


def print_report(rep):
    r = rep["requests"]
    print(f"\n== soak report ({rep['duration_s']:.0f} s from {rep['started']}, warm-up {rep['warmup_s']:.0f} s"
          f"{', without ' + ', '.join(rep['without']) if rep['without'] else ''})")
    print(f"requests: {r['total']}")
    print(f"   {'kind':<12} {'ok':>8} {'failed':>7} {'explained':>9} {'unexplained':>11} {'not accepted':>12}")
    for k, v in sorted(r["by_kind"].items()):
        print(f"   {k:<12} {v['ok']:>8} {v['failed']:>7} {v['explained']:>9} {v['unexplained']:>11} {v['not_accepted']:>12}")
    print(f"   explained by: {r['explained_by']}")
    for u in r["unexplained_examples"][:10]:
        print(f"   UNEXPLAINED at {u['at_s']} s: {u['k']} {u['err']}")
    fp = rep["fault_proxy"]
    st = fp["stats"]
    print(f"fault proxy: {st.get('accepted')} connections, faults {st.get('faults')}, resets done {st.get('reset_done')} "
          f"(moot {st.get('reset_moot')}), stalls done {st.get('stall_done')}, over limit {st.get('over_limit')}, "
          f"upstream failed {st.get('upstream_failed')}, mix changes {st.get('mix_changes')}")
    print("kills (SIGKILL, restart, ready again):")
    for what, d in sorted(rep["kills"].items()):
        print(f"   {what:<14} {d['count']:>3} times, back in {d['recovery_s_mean']} s mean, {d['recovery_s_max']} s max, "
              f"{d['not_ready']} not ready")
    c = rep["config_pushes"]
    print(f"config pushes (apply --wait): {c['total']}, ok {c['ok']}, failed {c['failed']} ({c['failed_unexplained']} with no "
          f"kill window), --wait p50 {c['wait_ms_p50']} ms, p99 {c['wait_ms_p99']} ms, max {c['wait_ms_max']} ms")
    print(f"certificates (lifetime {rep['certificates']['lifetime']}):")
    for pod, d in rep["certificates"]["agents"].items():
        print(f"   {pod:<7} rotations ok {d['rotations_success']}, failed {d['rotations_failure']}, expired {d['expired']}, "
              f"handshakes {d['handshakes']}")
    print(f"agents (RSS KB, fds; slopes by least squares after warm-up; bounds {rep['bounds']}):")
    for e in rep["agents"]:
        print(f"   {e['pod']:<7} pid {e['pid']:<8} {e['first_s']:>4}-{e['last_s']:<4} s  RSS {e['rss_kb_first']} -> "
              f"{e['rss_kb_last']} (max {e['rss_kb_max']}), slope of the minute peaks {e.get('rss_slope_kb_per_min', '-')} "
              f"KB/min (of every sample {e.get('rss_slope_all_kb_per_min', '-')}), fds "
              f"{e['fds_first']} -> {e['fds_last']} (growth after warm-up {e.get('fd_growth', '-')}){'' if e['whole_run'] else ' [restarted]'}")
    for err in rep["errors"]:
        print(f"ERROR: {err}")
    print(f"result: {'PASS' if rep['ok'] else 'FAIL'} {rep['pass']}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--report")
    p.add_argument("--work", required=True)
    p.add_argument("--period", type=float, default=30, help="seconds between two kills of the same component")
    p.add_argument("--warmup", type=float)
    p.add_argument("--gap", type=float, default=0.05, help="seconds between two requests of one traffic thread")
    p.add_argument("--rss-slope-max-kb-min", dest="rss_slope_max_kb_min", type=float, default=100)
    p.add_argument("--fd-growth-max", dest="fd_growth_max", type=int, default=16)
    p.add_argument("--kills", default="agent,app,control",
                   help="which kill loops run: agent (web-v2's), app (echo's), control (default: all three)")
    p.add_argument("--without", default="", help="comma-separated: pushes, kills, faults (to find which stressor "
                   "moves a figure; the report says what was left out)")
    a = p.parse_args()
    a.without = {w for w in a.without.split(",") if w}
    a.kills = {w for w in a.kills.split(",") if w}
    if a.kills - {"agent", "app", "control"}:
        p.error("--kills takes agent, app, control")
    if a.without - {"pushes", "kills", "faults"}:
        p.error("--without takes pushes, kills, faults")
    if a.warmup is None:
        # the client's agent climbs for about two minutes before it levels off (docs/soak.md)
        a.warmup = 120.0
    s = Soak(a)
    try:
        rep = s.run()
    finally:
        s.stop_children()
    print_report(rep)
    if a.report:
        with open(a.report, "w") as f:
            json.dump(rep, f, indent=1)
        print(f"report: {a.report}")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
