#!/bin/sh
''':'
exec /usr/bin/python3 "$0" "$@"
'''
# (The lines above make this file a Python program started from sh: sh runs `exec python3`,
# Python sees a string literal. Debian's /usr/bin/python3 with python3-yaml.)
"""scripts/compose-mesh.sh: run a docker-compose file's topology on one machine, without an engine.

    scripts/compose-mesh.sh up [-f FILE]      build the pods and start the services (default FILE:
                                              examples/compose/docker-compose.yml)
    scripts/compose-mesh.sh status            each service: running (healthy or not) or exited
    scripts/compose-mesh.sh exec SERVICE CMD...   CMD in SERVICE's pod, as its user, with its
                                              environment and volumes (as `docker-compose exec`)
    scripts/compose-mesh.sh logs SERVICE      the service's output
    scripts/compose-mesh.sh down              remove everything `up` created (also after a failed up)

What the compose file says is what runs (docs/compose.md has the full mapping):
- the file is read through `docker-compose -f FILE config` (validated and normalised by compose
  itself; `$$` unescaped as the engine would);
- a *pod* is a service that has its own network plus every service with `network_mode:
  "service:<it>"`: one network namespace each, named <prefix>-<service>; each compose network with
  an ipam subnet is a bridge in a namespace of its own (<prefix>-net-<network>) holding the gateway
  address and forwarding nothing; a pod gets its `ipv4_address` (or the next free one), a default
  route via the gateway (as docker gives), `/etc/netns/<ns>/hosts` with every service name and alias
  of the network plus its `extra_hosts`, and a DNS server of its own at docker's 127.0.0.11 answering
  the network's service names and aliases (tests/tools/dns_responder.py; NXDOMAIN for anything else);
- images: ghcr.io/remora-mesh/proxy:* and ghcr.io/remora-mesh/control:* are docker/proxy.Dockerfile
  and docker/control.Dockerfile, whose /usr/local/bin/remora-agent, remora-init, remora-control and
  remoractl are the build's binaries (REMORA_AGENT, REMORA_INIT, REMORA_CONTROL_BIN, REMORACTL); a
  service with `build:` is its context's Dockerfile; programs the image would hold otherwise (python3,
  curl, sh, bash) are the host's. From the Dockerfile's final stage come ENTRYPOINT, CMD, USER,
  WORKDIR and ENV; compose's `entrypoint` replaces the image's ENTRYPOINT and CMD, `command` its CMD;
- volumes: a named volume is <run>/volumes/<name>, created empty when its first service starts and
  owned by that service's user (what docker's copy of the image's mount point gives for the images
  here, which create their state directories owned by their USER); a bind mount is its host path.
  Without a mount namespace, container paths are rewritten in arguments, environment values and
  the working directory: the longest volume target (or image file) that prefixes a path is replaced
  by its host path. `:ro` is not enforced;
- each process runs in its pod's namespace as the service's `user` (else the image's USER) via
  setpriv, with the service's environment (plus ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS when set,
  for a sanitizer build), with the capability bounding set docker would give (its default set, plus
  `cap_add`, minus `cap_drop`), under timeout(1) (REMORA_COMPOSE_TTL), in its own session, output to
  <run>/logs/<service>.log;
- order: `depends_on` (and network_mode's implied dependency), conditions honoured:
  service_started, service_healthy (the `healthcheck` test run in the pod as the service's user,
  every `interval`, `retries` failures after `start_period` fail `up`), service_completed_successfully
  (exit status 0). `up` returns once every service with a healthcheck is healthy and no one-shot
  service failed (as `docker compose up --wait`);
- `down`: SIGTERM to each service in reverse start order, SIGKILL after REMORA_COMPOSE_STOP_TIMEOUT
  seconds (default 10), then the namespaces, /etc/netns entries and the run directory go.
Not supported (refused by name): other network modes, several networks per pod, keys the runner does
not know. `restart` is accepted and not acted on.

Environment: REMORA_AGENT, REMORA_INIT, REMORA_CONTROL_BIN, REMORACTL (as scripts/mesh.sh; default
build/), REMORA_COMPOSE_PREFIX (default remora-compose), REMORA_COMPOSE_RUN (default /run/<prefix>),
REMORA_COMPOSE_TTL (seconds every process lives at most, default 1800), REMORA_COMPOSE_WAIT (seconds
without progress while starting, and for the final healthchecks; default 90), REMORA_COMPOSE_EXEC_TIMEOUT
(default 120), REMORA_COMPOSE_STOP_TIMEOUT (default 10), REMORA_COMPOSE_LOGS_TO (a directory where
`down` copies the logs). Bounds: at most 64 services, names of [a-z0-9-] up to 31 characters.
"""

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = os.environ.get("REMORA_COMPOSE_PREFIX", "remora-compose")
RUN = os.environ.get("REMORA_COMPOSE_RUN", f"/run/{PREFIX}")
TTL = int(os.environ.get("REMORA_COMPOSE_TTL", "1800"))
WAIT = float(os.environ.get("REMORA_COMPOSE_WAIT", "90"))
EXEC_TIMEOUT = float(os.environ.get("REMORA_COMPOSE_EXEC_TIMEOUT", "120"))
STOP_TIMEOUT = float(os.environ.get("REMORA_COMPOSE_STOP_TIMEOUT", "10"))
AGENT = os.environ.get("REMORA_AGENT", os.path.join(ROOT, "build", "agent", "remora-agent"))
BUILD = os.path.dirname(os.path.dirname(AGENT))
INIT = os.environ.get("REMORA_INIT", os.path.join(ROOT, "build", "init", "remora-init"))
CONTROL_BIN = os.environ.get("REMORA_CONTROL_BIN", os.path.join(BUILD, "control", "remora-control"))
REMORACTL = os.environ.get("REMORACTL", os.path.join(BUILD, "control", "remoractl"))
DEFAULT_FILE = os.path.join(ROOT, "examples", "compose", "docker-compose.yml")
DOCKER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The image -> binary mapping: the only thing the runner knows about the images besides their Dockerfiles.
IMAGES = {
    "ghcr.io/remora-mesh/proxy": ("docker/proxy.Dockerfile", {
        "/usr/local/bin/remora-agent": AGENT, "/usr/local/bin/remora-init": INIT, "/usr/local/bin/remoractl": REMORACTL}),
    "ghcr.io/remora-mesh/control": ("docker/control.Dockerfile", {
        "/usr/local/bin/remora-control": CONTROL_BIN, "/usr/local/bin/remoractl": REMORACTL}),
}
# docker's default capability set (moby oci/caps/defaults.go)
DOCKER_CAPS = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
               "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "user", "volumes", "depends_on", "network_mode",
                "networks", "healthcheck", "cap_add", "cap_drop", "restart", "working_dir", "extra_hosts"}
MAX_SERVICES = 64
SANITIZER_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


class Fail(Exception):
    pass


def log(msg):
    print(f"compose-mesh: {msg}", flush=True)


def tool(name):
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise Fail(f"needs {name} (scripts/install-deps.sh)")


def starttime(pid):
    """The start time of a live process (None when gone, or a zombie whose parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def ours(pid, st):
    return st is not None and starttime(pid) == st


def ns_list():
    r = subprocess.run([tool("ip"), "netns", "list"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


# ---------------------------------------------------------------------------------------------- Dockerfiles

def dockerfile_instructions(path):
    """(INSTRUCTION, argument text) of a Dockerfile: comments dropped, continuation lines joined."""
    out, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if cur and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    if cur:
        raise Fail(f"{path}: ends inside a continued line")
    return out


def image_config(path):
    """ENTRYPOINT, CMD, USER, WORKDIR and ENV of the final stage of the Dockerfile at path."""
    conf = {"entrypoint": [], "cmd": [], "user": "0:0", "workdir": "/", "env": {}}
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            conf = {"entrypoint": [], "cmd": [], "user": "0:0", "workdir": "/", "env": {}}
        elif word in ("ENTRYPOINT", "CMD"):
            val = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            conf["entrypoint" if word == "ENTRYPOINT" else "cmd"] = val
            if word == "ENTRYPOINT":
                conf["cmd"] = []  # as docker: a new ENTRYPOINT resets CMD
        elif word == "USER":
            conf["user"] = rest
        elif word == "WORKDIR":
            conf["workdir"] = os.path.join(conf["workdir"], rest)
        elif word == "ENV":
            for part in shlex.split(rest):
                k, eq, v = part.partition("=")
                if eq:
                    conf["env"][k] = v
    return conf


def resolve_image(name, svc):
    if "build" in svc:
        b = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        df = os.path.join(b["context"], b.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(df):
            raise Fail(f"service {name}: no Dockerfile at {df}")
        return df, {}
    image = svc.get("image", "")
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    if repo not in IMAGES:
        raise Fail(f"service {name}: image {image!r} is neither built here (build:) nor one of {sorted(IMAGES)}")
    df, files = IMAGES[repo]
    return os.path.join(ROOT, df), files


# ------------------------------------------------------------------------------------------------ the model

def unescape(v):
    if isinstance(v, str):
        return v.replace("$$", "$")
    if isinstance(v, list):
        return [unescape(x) for x in v]
    if isinstance(v, dict):
        return {k: unescape(x) for k, x in v.items()}
    return v


def load(compose_file):
    dc = shutil.which("docker-compose")
    if dc is None:
        raise Fail("needs docker-compose (scripts/install-deps.sh)")
    r = subprocess.run([dc, "-f", compose_file, "config"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Fail(f"docker-compose config: {r.stderr.strip()}")
    return unescape(yaml.safe_load(r.stdout))


def owner_of(name, services):
    seen = []
    while True:
        nm = services[name].get("network_mode")
        if nm is None:
            return name
        if not nm.startswith("service:"):
            raise Fail(f"service {name}: network_mode {nm!r} is not supported (only service:NAME)")
        seen.append(name)
        name = nm[len("service:"):]
        if name not in services or name in seen:
            raise Fail(f"service {seen[0]}: network_mode names {name!r}, not a service of the file (or a loop)")


def start_order(services):
    deps = {}
    for name, svc in services.items():
        d = svc.get("depends_on") or {}
        if isinstance(d, list):
            d = {x: {"condition": "service_started"} for x in d}
        nm = svc.get("network_mode", "")
        if nm.startswith("service:") and nm[8:] not in d:
            d[nm[8:]] = {"condition": "service_started"}
        for dep, c in d.items():
            if dep not in services:
                raise Fail(f"service {name}: depends_on {dep!r}, not a service of the file")
            if c.get("condition", "service_started") not in ("service_started", "service_healthy",
                                                             "service_completed_successfully"):
                raise Fail(f"service {name}: depends_on condition {c.get('condition')!r} is not known")
        deps[name] = d
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == 1:
            raise Fail(f"depends_on loop: {' -> '.join(path + [n])}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for dep in sorted(deps[n]):
            visit(dep, path + [n])
        state[n] = 2
        order.append(n)

    for n in sorted(services):
        visit(n, [])
    return order, deps


def build_model(compose_file):
    conf = load(compose_file)
    services = conf.get("services") or {}
    if not services or len(services) > MAX_SERVICES:
        raise Fail(f"{compose_file}: 1 to {MAX_SERVICES} services expected, found {len(services)}")
    for name, svc in services.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise Fail(f"service {name!r}: the runner takes names of [a-z0-9-], at most 31 characters")
        unknown = sorted(set(svc) - SERVICE_KEYS)
        if unknown:
            raise Fail(f"service {name}: {', '.join(unknown)} not supported by the one-machine runner")
        if "network_mode" in svc and ("networks" in svc or "extra_hosts" in svc):
            raise Fail(f"service {name}: network_mode together with networks/extra_hosts (docker refuses it too)")
    order, deps = start_order(services)

    # networks and pods
    networks = {}
    for net, nconf in (conf.get("networks") or {}).items():
        subnets = [c.get("subnet") for c in ((nconf or {}).get("ipam") or {}).get("config") or [] if c.get("subnet")]
        v4 = [ipaddress.ip_network(s) for s in subnets if ipaddress.ip_network(s).version == 4]
        if not v4:
            continue
        gw = next((c.get("gateway") for c in nconf["ipam"]["config"] if c.get("gateway")), None)
        gw = ipaddress.ip_address(gw) if gw else next(v4[0].hosts())
        networks[net] = {"subnet": str(v4[0]), "gateway": str(gw), "ns": f"{PREFIX}-net-{net}", "used": {str(gw)}}
    pods = {}
    for name in order:
        own = owner_of(name, services)
        if own != name:
            continue
        nets = services[name].get("networks") or {}
        if isinstance(nets, list):
            nets = {n: {} for n in nets}
        if len(nets) != 1:
            raise Fail(f"service {name}: the runner gives a pod exactly one network ({len(nets)} given; "
                       "compose's implicit default network has no subnet to take addresses from)")
        net, nconf = next(iter(nets.items()))
        nconf = nconf or {}
        if net not in networks:
            raise Fail(f"service {name}: network {net} needs an ipam subnet (IPv4) for the runner")
        addr = nconf.get("ipv4_address")
        pods[name] = {"ns": f"{PREFIX}-{name}", "network": net, "address": addr,
                      "aliases": list(nconf.get("aliases") or []), "extra_hosts": services[name].get("extra_hosts") or []}
        if addr:
            if ipaddress.ip_address(addr) not in ipaddress.ip_network(networks[net]["subnet"]) or addr in networks[net]["used"]:
                raise Fail(f"service {name}: ipv4_address {addr} is outside {networks[net]['subnet']} or taken")
            networks[net]["used"].add(addr)
    for name, pod in pods.items():
        if not pod["address"]:
            net = networks[pod["network"]]
            pod["address"] = next(str(h) for h in ipaddress.ip_network(net["subnet"]).hosts() if str(h) not in net["used"])
            net["used"].add(pod["address"])
    for n in networks.values():
        n["used"] = sorted(n["used"])
    if len({p["ns"] for p in pods.values()} | {n["ns"] for n in networks.values()}) != len(pods) + len(networks):
        raise Fail("a pod's namespace name equals a network's: rename the service or the network")

    # the launch spec of every service
    specs = {}
    for name in order:
        svc = services[name]
        df, files = resolve_image(name, svc)
        img = image_config(df)
        entry = svc.get("entrypoint")
        entry = shlex.split(entry) if isinstance(entry, str) else entry
        cmd = svc.get("command")
        cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
        argv = (entry if entry is not None else img["entrypoint"]) + (
            cmd if cmd is not None else ([] if entry is not None else img["cmd"]))
        if not argv:
            raise Fail(f"service {name}: nothing to run (no entrypoint or command, here or in {df})")
        # the build's sanitizer settings (an ASan build under test) reach its binaries as in scripts/mesh.sh
        env = {"PATH": DOCKER_PATH, **{k: v for k, v in os.environ.items() if k in SANITIZER_ENV}, **img["env"]}
        envs = svc.get("environment") or {}
        if isinstance(envs, list):
            envs = dict(e.partition("=")[::2] for e in envs)
        env.update({k: "" if v is None else str(v) for k, v in envs.items()})
        user = str(svc.get("user") or img["user"])
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise Fail(f"service {name}: user {user!r}: the runner takes numeric UID[:GID] only")
        gid = gid or uid
        env.setdefault("HOME", "/root" if uid == "0" else "/")
        caps = set(DOCKER_CAPS)
        add = {c.upper().removeprefix("CAP_") for c in svc.get("cap_add") or []}
        drop = {c.upper().removeprefix("CAP_") for c in svc.get("cap_drop") or []}
        caps = set() if "ALL" in drop else caps - drop
        caps = caps | add if "ALL" not in add else {"ALL"}
        mounts = []
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                src, tgt, kind = v.get("source"), v["target"], v.get("type")
            else:
                parts = v.split(":")
                if len(parts) == 1:
                    src, tgt = None, parts[0]
                else:
                    src, tgt = parts[0], parts[1]
                kind = "bind" if src and src.startswith("/") else "volume"
            if kind == "volume" and not src:
                raise Fail(f"service {name}: anonymous volume {tgt}: name it")
            mounts.append({"kind": kind, "source": src, "target": tgt.rstrip("/") or "/"})
        hc = svc.get("healthcheck")
        if hc and (hc.get("disable") or (isinstance(hc.get("test"), list) and hc["test"][:1] == ["NONE"])):
            hc = None
        specs[name] = {"pod": owner_of(name, services), "argv": argv, "env": env, "uid": uid, "gid": gid,
                       "caps": sorted(caps), "files": files, "mounts": mounts, "healthcheck": hc,
                       "workdir": svc.get("working_dir") or img["workdir"], "deps": deps[name]}
    return {"file": compose_file, "order": order, "networks": networks, "pods": pods, "specs": specs,
            "volumes": sorted((conf.get("volumes") or {}).keys())}


# ------------------------------------------------------------------------------------------ running things

def duration(v, default):
    if v is None:
        return default
    if isinstance(v, (int, float)):
        return float(v)
    total, m = 0.0, re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", v)
    for num, unit in m:
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total if m else default


def mapping(spec, m):
    """(container path, host path) pairs of a service, longest first."""
    pairs = [(t, h) for t, h in spec["files"].items()]
    for mt in spec["mounts"]:
        host = mt["source"] if mt["kind"] == "bind" else os.path.join(RUN, "volumes", mt["source"])
        pairs.append((mt["target"], host))
    return sorted(pairs, key=lambda p: -len(p[0]))


def rewrite(s, pairs):
    for tgt, host in pairs:
        s = re.sub(r"(?<![\w./-])" + re.escape(tgt) + r"(?=/|$|[^\w.-])", lambda _m, h=host: h, s)
    return s


def command(m, name, argv):
    """The host command line that runs argv as service name would (namespace, user, capabilities)."""
    spec = m["specs"][name]
    pairs = mapping(spec, m)
    env = {k: rewrite(v, pairs) for k, v in spec["env"].items()}
    bindir = os.path.join(RUN, "bin", name)
    env["PATH"] = bindir + ":" + env.get("PATH", DOCKER_PATH)
    args = [rewrite(a, pairs) for a in argv]
    prog = args[0]
    if "/" not in prog:
        found = shutil.which(prog, path=env["PATH"])
        if found is None:
            raise Fail(f"service {name}: {prog} is not found on the image's PATH here")
        prog = found
    if not os.access(prog, os.X_OK):
        raise Fail(f"service {name}: {argv[0]} ({prog}) is not an executable here")
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in spec["caps"] if c != "ALL"]) if "ALL" not in spec["caps"] else "+all"
    pre = [tool("ip"), "netns", "exec", m["pods"][spec["pod"]]["ns"]]
    priv = [tool("setpriv"), "--reuid", spec["uid"], "--regid", spec["gid"], "--clear-groups",
            "--bounding-set", caps, "--inh-caps", "-all", "--"]
    cwd = rewrite(spec["workdir"], pairs)
    return pre, priv, [prog] + args[1:], env, cwd if os.path.isdir(cwd) else "/"


def start(m, name):
    pre, priv, argv, env, cwd = command(m, name, m["specs"][name]["argv"])
    logf = open(os.path.join(RUN, "logs", f"{name}.log"), "ab")
    p = subprocess.Popen(pre + [tool("timeout"), "-k", "5", str(TTL)] + priv + argv, stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    logf.close()
    with open(os.path.join(RUN, "pids"), "a") as f:
        f.write(f"{p.pid} {starttime(p.pid)} {name}\n")
    return p


def health_once(m, name):
    hc = m["specs"][name]["healthcheck"]
    test = hc["test"]
    if isinstance(test, str):
        argv = ["/bin/sh", "-c", test]
    elif test[0] == "CMD":
        argv = test[1:]
    elif test[0] == "CMD-SHELL":
        argv = ["/bin/sh", "-c", test[1]]
    else:
        raise Fail(f"service {name}: healthcheck test {test!r} not understood")
    pre, priv, argv, env, cwd = command(m, name, argv)
    try:
        r = subprocess.run(pre + priv + argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=cwd,
                           timeout=duration(hc.get("timeout"), 30))
        return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace").strip()[-300:]
    except subprocess.TimeoutExpired:
        return False, "timed out"


def tail(name, n=8):
    try:
        with open(os.path.join(RUN, "logs", f"{name}.log"), errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ""


class Waiter:
    def __init__(self, m, procs):
        self.m, self.procs, self.healthy, self.hc_state = m, procs, set(), {}

    def check(self, name, cond):
        """True when cond holds for name, False while not yet; raises when it never will."""
        p = self.procs[name]
        if cond == "service_started":
            return True
        if cond == "service_completed_successfully":
            rc = p.poll()
            if rc is None:
                return False
            if rc != 0:
                raise Fail(f"service {name} exited with status {rc}:\n{tail(name)}")
            return True
        # service_healthy
        if name in self.healthy:
            return True
        hc = self.m["specs"][name]["healthcheck"]
        if hc is None:
            raise Fail(f"service {name}: a dependency waits for it to be healthy, and it has no healthcheck")
        if p.poll() is not None:
            raise Fail(f"service {name} exited with status {p.returncode} before it was healthy:\n{tail(name)}")
        st = self.hc_state.setdefault(name, {"next": 0.0, "fails": 0, "t0": time.monotonic(), "last": ""})
        now = time.monotonic()
        if now < st["next"]:
            return False
        st["next"] = now + duration(hc.get("interval"), 30)
        ok, out = health_once(self.m, name)
        if ok:
            self.healthy.add(name)
            return True
        st["last"] = out
        if now - st["t0"] >= duration(hc.get("start_period"), 0):
            st["fails"] += 1
            if st["fails"] >= int(hc.get("retries", 3)):
                raise Fail(f"service {name} is unhealthy ({st['fails']} failed checks; last: {out!r}):\n{tail(name)}")
        return False

    def wait(self, pairs, what):
        deadline = time.monotonic() + WAIT
        pending = list(pairs)
        while pending:
            pending = [(n, c) for n, c in pending if not self.check(n, c)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise Fail(f"{what}: still waiting after {WAIT:.0f} s for " +
                           ", ".join(f"{n} ({c})" for n, c in pending))
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------- commands

def require_root(cmd):
    if os.geteuid() != 0:
        raise Fail(f"must run as root (network namespaces, netfilter, /etc/netns): try sudo scripts/compose-mesh.sh {cmd}")


def save(m):
    with open(os.path.join(RUN, "model.json"), "w") as f:
        json.dump(m, f, indent=1)


def load_model():
    try:
        with open(os.path.join(RUN, "model.json")) as f:
            return json.load(f)
    except OSError:
        raise Fail(f"{RUN}/model.json is missing: the topology is not up (`up` first)")


def ip(*args, ns=None):
    cmd = [tool("ip")] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise Fail(f"{' '.join(cmd)}: {r.stderr.strip()}")


def start_dns(m, name):
    """docker's embedded DNS: in the pod, 127.0.0.11:53 answers the service names and aliases of its network
    (tests/tools/dns_responder.py, NXDOMAIN for anything else: no query leaves the pod)."""
    pod = m["pods"][name]
    records = {}
    for other_name, other in m["pods"].items():
        if other["network"] == pod["network"]:
            for n in [other_name] + other["aliases"]:
                records[n] = [other["address"]]
    dns_dir = os.path.join(RUN, "dns")
    os.makedirs(dns_dir, exist_ok=True)
    rec_file, port_file = os.path.join(dns_dir, f"{name}.json"), os.path.join(dns_dir, f"{name}.port")
    with open(rec_file, "w") as f:
        json.dump(records, f)
    logf = open(os.path.join(RUN, "logs", f"dns-{name}.log"), "ab")
    p = subprocess.Popen([tool("ip"), "netns", "exec", pod["ns"], tool("timeout"), "-k", "5", str(TTL), "/usr/bin/python3",
                          os.path.join(ROOT, "tests", "tools", "dns_responder.py"), "--listen", "127.0.0.11:53",
                          "--records-file", rec_file, "--port-file", port_file, "--no-parent-watch", "--ttl", "5"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf, start_new_session=True)
    logf.close()
    with open(os.path.join(RUN, "pids"), "a") as f:
        f.write(f"{p.pid} {starttime(p.pid)} dns-{name}\n")
    deadline = time.monotonic() + 15
    while not os.path.exists(port_file):
        if p.poll() is not None or time.monotonic() > deadline:
            raise Fail(f"the DNS server of pod {name} did not start: {tail('dns-' + name)}")
        time.sleep(0.05)


def launch(m, name, procs):
    spec = m["specs"][name]
    os.makedirs(os.path.join(RUN, "volumes"), exist_ok=True)
    os.chmod(os.path.join(RUN, "volumes"), 0o755)
    for mt in spec["mounts"]:
        if mt["kind"] == "volume":
            d = os.path.join(RUN, "volumes", mt["source"])
            if not os.path.isdir(d):
                os.makedirs(d)
                os.chown(d, int(spec["uid"]), int(spec["gid"]))
                os.chmod(d, 0o755)
        elif not os.path.exists(mt["source"]):
            os.makedirs(mt["source"])
    bindir = os.path.join(RUN, "bin", name)
    os.makedirs(bindir)
    os.chmod(os.path.join(RUN, "bin"), 0o755)
    for tgt, host in spec["files"].items():
        if os.path.dirname(tgt) in ("/usr/local/bin", "/usr/local/sbin"):
            os.symlink(os.path.abspath(host), os.path.join(bindir, os.path.basename(tgt)))
    procs[name] = start(m, name)
    log(f"   started {name} (pid {procs[name].pid}, uid {spec['uid']})")


def up(compose_file):
    require_root("up")
    for t in ("ip", "setpriv", "timeout"):
        tool(t)
    if os.path.exists(RUN):
        raise Fail(f"{RUN} exists: the topology is up (or a previous up failed): run `scripts/compose-mesh.sh down` first")
    m = build_model(os.path.abspath(compose_file))
    existing = ns_list()
    for ns in [p["ns"] for p in m["pods"].values()] + [n["ns"] for n in m["networks"].values()]:
        if ns in existing or os.path.exists(f"/etc/netns/{ns}"):
            raise Fail(f"namespace {ns} (or /etc/netns/{ns}) exists already, not ours: remove it or set REMORA_COMPOSE_PREFIX")
    for spec in m["specs"].values():
        for host in spec["files"].values():
            if not os.access(host, os.X_OK):
                raise Fail(f"{host} is not built (cmake --build build, or set REMORA_AGENT/REMORA_INIT/"
                           "REMORA_CONTROL_BIN/REMORACTL)")
    os.makedirs(os.path.join(RUN, "logs"))
    os.chmod(RUN, 0o755)
    for f in ("namespaces", "etc", "pids"):
        open(os.path.join(RUN, f), "w").close()
    save(m)
    log(f"{m['file']}: {len(m['specs'])} services in {len(m['pods'])} pods (prefix {PREFIX}, state in {RUN})")

    for net, n in m["networks"].items():
        with open(os.path.join(RUN, "namespaces"), "a") as f:
            f.write(n["ns"] + "\n")
        ip("netns", "add", n["ns"])
        plen = ipaddress.ip_network(n["subnet"]).prefixlen
        ip("link", "set", "lo", "up", ns=n["ns"])
        ip("link", "add", "br0", "type", "bridge", ns=n["ns"])
        ip("addr", "add", f"{n['gateway']}/{plen}", "dev", "br0", ns=n["ns"])
        ip("link", "set", "br0", "up", ns=n["ns"])
        subprocess.run([tool("ip"), "netns", "exec", n["ns"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"],
                       capture_output=True, timeout=30, check=True)
        log(f"   network {net:<12} {n['ns']:<28} {n['subnet']} gateway {n['gateway']} (forwards nothing)")
    for i, (name, pod) in enumerate(sorted(m["pods"].items())):
        n = m["networks"][pod["network"]]
        plen = ipaddress.ip_network(n["subnet"]).prefixlen
        with open(os.path.join(RUN, "namespaces"), "a") as f:
            f.write(pod["ns"] + "\n")
        ip("netns", "add", pod["ns"])
        ip("link", "set", "lo", "up", ns=pod["ns"])
        ip("link", "add", "eth0", "netns", pod["ns"], "type", "veth", "peer", "name", f"v{i}", "netns", n["ns"])
        ip("link", "set", f"v{i}", "master", "br0", "up", ns=n["ns"])
        ip("addr", "add", f"{pod['address']}/{plen}", "dev", "eth0", ns=pod["ns"])
        ip("link", "set", "eth0", "up", ns=pod["ns"])
        ip("route", "add", "default", "via", n["gateway"], "dev", "eth0", ns=pod["ns"])
        etc = f"/etc/netns/{pod['ns']}"
        with open(os.path.join(RUN, "etc"), "a") as f:
            f.write(etc + "\n")
        os.makedirs(etc)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for other_name, other in sorted(m["pods"].items()):
            if other["network"] == pod["network"]:
                lines.append(" ".join([other["address"], other_name] + other["aliases"]))
        for eh in pod["extra_hosts"]:
            host, _, addr = eh.rpartition(":") if isinstance(eh, str) else eh
            lines.append(f"{addr} {host}")
        with open(f"{etc}/hosts", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write("# compose-mesh: the pod's own DNS server at docker's address, answering the network's names only\n"
                    "nameserver 127.0.0.11\noptions ndots:0\n")
        start_dns(m, name)
        members = sorted(s for s, sp in m["specs"].items() if sp["pod"] == name)
        log(f"   pod {name:<16} {pod['ns']:<28} {pod['address']:<15} {', '.join(members)}")

    procs = {}
    waiter = Waiter(m, procs)
    # as docker-compose: every service whose dependencies hold is started, independent ones side by side
    pending, last = list(m["order"]), time.monotonic()
    while pending:
        ready = [n for n in pending if all(d in procs for d in m["specs"][n]["deps"]) and
                 all(waiter.check(d, c.get("condition", "service_started")) for d, c in sorted(m["specs"][n]["deps"].items()))]
        for name in ready:
            launch(m, name, procs)
            pending.remove(name)
            last = time.monotonic()
        if not ready:
            if time.monotonic() - last > WAIT:
                raise Fail(f"no progress for {WAIT:.0f} s; waiting to start: " + ", ".join(
                    f"{n} (on {', '.join(sorted(m['specs'][n]['deps']))})" for n in pending))
            time.sleep(0.1)
    # as `docker compose up --wait`: every healthcheck passes and no one-shot service failed
    waiter.wait([(n, "service_healthy") for n in m["order"] if m["specs"][n]["healthcheck"]], "up")
    for name, p in procs.items():
        if p.poll() not in (None, 0):
            raise Fail(f"service {name} exited with status {p.returncode}:\n{tail(name)}")
    log("up")


def recorded():
    path = os.path.join(RUN, "pids")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(p), st, n) for p, st, n in (line.split() for line in f if line.strip())]


def down():
    require_root("down")
    if not os.path.isdir(RUN):
        log(f"nothing to remove ({RUN} absent)")
        return
    for pid, st, name in reversed(recorded()):
        if not ours(pid, st):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while ours(pid, st) and time.monotonic() < deadline:
            time.sleep(0.05)
        if ours(pid, st):
            kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True,
                                  timeout=10).stdout.split()
            for k in kids:
                try:
                    os.kill(int(k), signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            log(f"   {name} (pid {pid}) killed after {STOP_TIMEOUT:.0f} s")
    existing = ns_list()
    path = os.path.join(RUN, "namespaces")
    names = open(path).read().split() if os.path.exists(path) else []
    for ns in reversed(names):
        if ns in existing:
            r = subprocess.run([tool("ip"), "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            for k in r.stdout.split():
                try:
                    os.kill(int(k), signal.SIGKILL)
                except OSError:
                    pass
            subprocess.run([tool("ip"), "netns", "del", ns], capture_output=True, timeout=30)
    path = os.path.join(RUN, "etc")
    for d in (open(path).read().split() if os.path.exists(path) else []):
        if d.startswith(f"/etc/netns/{PREFIX}-"):
            for f in ("hosts", "resolv.conf"):
                try:
                    os.unlink(os.path.join(d, f))
                except OSError:
                    pass
            try:
                os.rmdir(d)
            except OSError:
                pass
    logs_to = os.environ.get("REMORA_COMPOSE_LOGS_TO")
    if logs_to and os.path.isdir(os.path.join(RUN, "logs")):
        os.makedirs(logs_to, exist_ok=True)
        for f in os.listdir(os.path.join(RUN, "logs")):
            shutil.copy(os.path.join(RUN, "logs", f), logs_to)
    shutil.rmtree(RUN)
    log("down")


def status():
    require_root("status")
    if not os.path.isdir(RUN):
        log(f"down ({RUN} absent)")
        return 3
    m = load_model()
    procs = {n: (p, st) for p, st, n in recorded()}
    bad = 0
    for name in m["order"]:
        if name not in procs:
            print(f"   {name:<16} NOT STARTED")
            bad = 1
            continue
        pid, st = procs[name]
        if ours(pid, st):
            state = "running"
            if m["specs"][name]["healthcheck"]:
                ok, _ = health_once(m, name)
                state += ", healthy" if ok else ", UNHEALTHY"
                bad |= not ok
        else:
            state = "exited"
        print(f"   {name:<16} pid {pid:<8} {state}")
    return bad


def exec_(name, argv):
    require_root("exec")
    m = load_model()
    if name not in m["specs"]:
        raise Fail(f"no service {name} (services: {', '.join(m['order'])})")
    pre, priv, argv, env, cwd = command(m, name, argv)
    try:
        return subprocess.run(pre + priv + argv, env=env, cwd=cwd, timeout=EXEC_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        raise Fail(f"exec {name}: timed out after {EXEC_TIMEOUT:.0f} s")


def main(args):
    cmd = args[0] if args else ""
    try:
        if cmd == "up":
            f = DEFAULT_FILE
            if args[1:2] == ["-f"] and len(args) == 3:
                f = args[2]
            elif len(args) != 1:
                raise Fail("usage: compose-mesh.sh up [-f FILE]")
            try:
                up(f)
            except BaseException:
                if os.path.isdir(RUN):
                    print(f"compose-mesh: up failed; what it created is recorded in {RUN}: run "
                          "`scripts/compose-mesh.sh down` to remove it", file=sys.stderr)
                raise
            return 0
        if cmd == "down":
            down()
            return 0
        if cmd == "status":
            return status()
        if cmd == "exec" and len(args) >= 3:
            return exec_(args[1], args[2:])
        if cmd == "logs" and len(args) == 2:
            sys.stdout.write(tail(args[1], 10 ** 6) + "\n")
            return 0
        print("usage: scripts/compose-mesh.sh up [-f FILE] | down | status | exec SERVICE CMD... | logs SERVICE",
              file=sys.stderr)
        return 2
    except Fail as e:
        print(f"compose-mesh: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
