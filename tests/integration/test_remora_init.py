"""remora-init in real network namespaces (needs root and `ip netns`; skipped otherwise).

Two namespaces joined by a veth pair stand for a pod and a remote peer: pod 10.255.0.2 and
fd00:255::2, peer 10.255.0.1 and fd00:255::1. Addresses exist only inside them; both are deleted
in a finally, even when a test fails. The host's own netfilter rules are never touched: every
iptables command runs through `ip netns exec`.

Checked: the installed rules are exactly what --dry-run prints (both backends), a second run leaves
the table identical, --remove takes out everything of ours and nothing else, REDIRECT really
captures outbound TCP to 15001 and inbound TCP to 15006 with the original destination intact
(SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), the proxy UID, loopback, the control-plane port and the
health port are not captured, --remove restores direct traffic, and CAP_NET_ADMIN is required.
"""

import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INIT = os.environ.get("REMORA_INIT", os.path.join(REPO, "build", "init", "remora-init"))
SERVER = os.path.join(REPO, "tests", "tools", "origdst_server.py")
PY = "/usr/bin/python3"  # Debian's interpreter (see DESIGN.md, "The machine")
TIMEOUT = 20
PROXY_UID = 2102

POD4, PEER4 = "10.255.0.2", "10.255.0.1"
POD6, PEER6 = "fd00:255::2", "fd00:255::1"


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    if _which("ip") is None or _which("setpriv") is None:
        return "needs iproute2 and util-linux (scripts/install-deps.sh)"
    if _which("iptables-nft-restore") is None and _which("iptables-legacy-restore") is None:
        return "needs Debian's iptables package (scripts/install-deps.sh)"
    name = f"rmi-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0:
            return "`ip netns add` does not work here: " + r.stderr.decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def run(args, ns=None, input=None, check=False, timeout=TIMEOUT):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


class Pod:
    """The pod and peer namespaces, and the servers started in them (stopped by PID)."""

    _seq = 0

    def __init__(self):
        Pod._seq += 1
        self.ns = f"rmi-{os.getpid()}-{Pod._seq}"
        self.peer = self.ns + "-peer"
        self.procs = []

    def up(self):
        run(["ip", "netns", "add", self.ns], check=True)
        run(["ip", "netns", "add", self.peer], check=True)
        run(["ip", "link", "add", "rmi0", "netns", self.ns, "type", "veth", "peer", "name", "rmi0", "netns", self.peer],
            check=True)
        for ns, a4, a6 in ((self.ns, POD4, POD6), (self.peer, PEER4, PEER6)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"], ns=ns)
            run(["ip", "-n", ns, "addr", "add", a4 + "/24", "dev", "rmi0"], check=True)
            v6 = run(["ip", "-n", ns, "addr", "add", a6 + "/64", "dev", "rmi0", "nodad"]).returncode == 0
            self.has_v6 = v6 and getattr(self, "has_v6", True)
            run(["ip", "-n", ns, "link", "set", "rmi0", "up"], check=True)
        return self

    def down(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            if p.stdout:
                p.stdout.close()
        for ns in (self.ns, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)

    def serve(self, ns, *listeners):
        """Starts origdst_server.py in `ns` with NAME=ADDR:PORT listeners; returns once it is bound."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, "setpriv", "--pdeathsig", "KILL", PY, SERVER, *listeners],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 0.2)
            if ready:
                line = p.stdout.readline()
                if line.strip() == "ready":
                    return p
                if line == "":
                    break
        raise AssertionError(f"origdst_server {listeners} did not start in {ns}")

    def connect(self, ns, host, port, uid=None):
        """Connects from `ns` (as `uid` if given) and returns what the server that answered says."""
        client = (
            "import json, socket, sys\n"
            "try:\n"
            "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
            "    s.settimeout(3)\n"
            "    data = b''\n"
            "    while not data.endswith(b'\\n'):\n"
            "        chunk = s.recv(4096)\n"
            "        if not chunk:\n"
            "            break\n"
            "        data += chunk\n"
            "    print(data.decode().strip() or json.dumps({'error': 'closed without an answer'}))\n"
            "except OSError as e:\n"
            "    print(json.dumps({'error': type(e).__name__ + ': ' + str(e)}))\n")
        who = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
        r = run(who + [PY, "-c", client, host, str(port)], ns=ns, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def init(self, *args, check=True):
        return run([INIT, *args], ns=self.ns, check=check)


@pytest.fixture
def pod():
    p = Pod()
    try:
        yield p.up()
    finally:
        p.down()


# -- comparing --dry-run batches with iptables-save ------------------------------------------------

def split_dry_run(text):
    """{"IPv4": batch, "IPv6": batch} from --dry-run output ("# IPv4: TOOL --noflush" headers)."""
    out, cur = {}, None
    for line in text.splitlines(keepends=True):
        m = re.match(r"# (IPv[46]): \S+ --noflush$", line.rstrip("\n"))
        if m:
            cur = m.group(1)
            out[cur] = ""
        elif cur is not None:
            out[cur] += line
    return out


def ours(text):
    """Own chains and, per chain, the ordered rules of ours (in own chains, or jumping to one)."""
    chains, rules = set(), {}
    for line in text.splitlines():
        m = re.match(r":(REMORA_\S+) ", line)
        if m:
            chains.add(m.group(1))
            continue
        m = re.match(r"-A (\S+) (.*)$", line)
        if m and (m.group(1).startswith("REMORA_") or re.search(r" -[jg] REMORA_", " " + m.group(2))):
            rules.setdefault(m.group(1), []).append(m.group(2))
    return chains, rules


def normalized(save_text):
    """iptables-save output without its comment lines and packet counters."""
    return "".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) + "\n" for line in save_text.splitlines()
                   if not line.startswith("#"))


FOREIGN = {
    "IPv4": "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p udp -m udp --dport 5353 -j RETURN\n"
            "-A PREROUTING -p udp -j FOREIGN\n-A OUTPUT -d 192.0.2.0/24 -j RETURN\nCOMMIT\n",
    "IPv6": "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p udp -m udp --dport 5353 -j RETURN\n"
            "-A PREROUTING -p udp -j FOREIGN\n-A OUTPUT -d 2001:db8::/32 -j RETURN\nCOMMIT\n",
}
FOREIGN_LINES = {
    "IPv4": ["-A FOREIGN -p udp -m udp --dport 5353 -j RETURN", "-A PREROUTING -p udp -j FOREIGN",
             "-A OUTPUT -d 192.0.2.0/24 -j RETURN"],
    "IPv6": ["-A FOREIGN -p udp -m udp --dport 5353 -j RETURN", "-A PREROUTING -p udp -j FOREIGN",
             "-A OUTPUT -d 2001:db8::/32 -j RETURN"],
}


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_dry_run_matches_installed_and_rerun_is_exact(pod, backend):
    if _which(f"iptables-{backend}-restore") is None:
        pytest.skip(f"iptables-{backend}-restore not installed")
    families = ["IPv4"] + (["IPv6"] if pod.has_v6 else [])
    tools = {"IPv4": f"iptables-{backend}", "IPv6": f"ip6tables-{backend}"}
    opts = ["--backend", backend, "--exclude-inbound-ports", "22,8443", "--exclude-outbound-ports", "5432",
            "--exclude-outbound-cidrs", "10.96.0.0/12,fd00:96::/64", "--exclude-inbound-cidrs", "192.168.7.0/24"]
    if not pod.has_v6:
        opts.append("--ipv4-only")

    def save(fam):
        return normalized(run([tools[fam] + "-save", "-t", "nat"], ns=pod.ns, check=True).stdout)

    # someone else's rules, which must survive everything below
    for fam in families:
        run([tools[fam] + "-restore", "--noflush"], ns=pod.ns, input=FOREIGN[fam], check=True)

    dry = split_dry_run(pod.init(*opts, "--dry-run").stdout)
    assert sorted(dry) == sorted(families)
    for fam in families:
        assert "\n-D " not in dry[fam], "a table without our rules needs no deletions"

    first = pod.init(*opts)
    assert "rules installed" in first.stdout
    saved = {fam: save(fam) for fam in families}
    for fam in families:
        assert ours(saved[fam]) == ours(dry[fam]), f"{fam}: installed rules differ from --dry-run:\n{saved[fam]}\n{dry[fam]}"
        for line in FOREIGN_LINES[fam]:
            assert line in saved[fam].splitlines()
    assert "-A REMORA_OUTPUT -m owner --uid-owner 2102 -j RETURN" in saved["IPv4"]
    assert "-A REMORA_OUTPUT -d 10.96.0.0/12 -j RETURN" in saved["IPv4"]
    assert "fd00:96::" not in saved["IPv4"]
    if "IPv6" in saved:
        assert "-A REMORA_OUTPUT -d fd00:96::/64 -j RETURN" in saved["IPv6"]
        assert "192.168.7.0" not in saved["IPv6"]

    # a re-run: the same table, one copy of everything
    redo = split_dry_run(pod.init(*opts, "--dry-run").stdout)
    for fam in families:
        assert re.findall(r"^-D .*$", redo[fam], re.M) == ["-D PREROUTING -p tcp -j REMORA_INBOUND",
                                                           "-D OUTPUT -p tcp -j REMORA_OUTPUT"]
    pod.init(*opts)
    for fam in families:
        assert save(fam) == saved[fam], f"{fam}: a second run changed the table"

    # other options: the chains are rebuilt, not appended to
    pod.init("--backend", backend, "--ipv4-only", "--exclude-outbound-ports", "6379")
    after = save("IPv4")
    assert "--dport 6379" in after and "--dport 5432" not in after and "--dport 8443" not in after
    assert after.count("-j REMORA_INBOUND") == 1 and after.count("-j REMORA_OUTPUT") == 1

    removed = pod.init("--backend", backend, "--remove")
    assert "removed" in removed.stdout
    for fam in families:
        left = save(fam)
        assert "REMORA_" not in left, left
        for line in FOREIGN_LINES[fam]:
            assert line in left.splitlines()
    again = pod.init("--backend", backend, "--remove")
    assert "nothing of ours" in again.stdout


def test_redirect_ipv4(pod):
    pod.serve(pod.ns, "outbound=127.0.0.1:15001", "inbound=0.0.0.0:15006", "health=0.0.0.0:15020",
              f"app={POD4}:8080")
    pod.serve(pod.peer, f"direct={PEER4}:8080", f"control={PEER4}:15010", f"remote={PEER4}:9000")

    # before: nothing is captured
    assert pod.connect(pod.ns, PEER4, 8080)["listener"] == "direct"
    pod.init("--ipv4-only")

    # outbound TCP of the application lands on 15001 with the original destination
    r = pod.connect(pod.ns, PEER4, 8080)
    assert r["listener"] == "outbound" and r["orig"] == f"{PEER4}:8080", r
    r = pod.connect(pod.ns, PEER4, 9000)
    assert r["listener"] == "outbound" and r["orig"] == f"{PEER4}:9000", r
    # the proxy's own connections go where they were sent
    r = pod.connect(pod.ns, PEER4, 8080, uid=PROXY_UID)
    assert r["listener"] == "direct", r
    # the control plane's port is not captured
    assert pod.connect(pod.ns, PEER4, 15010)["listener"] == "control"
    # loopback, including the pod's own address, is not captured
    assert pod.connect(pod.ns, "127.0.0.1", 15020)["listener"] == "health"
    assert pod.connect(pod.ns, POD4, 8080)["listener"] == "app"

    # inbound TCP lands on 15006 with the pod's address as original destination
    r = pod.connect(pod.peer, POD4, 8080)
    assert r["listener"] == "inbound" and r["orig"] == f"{POD4}:8080" and r["peer"].startswith(PEER4 + ":"), r
    # the health port is not captured
    assert pod.connect(pod.peer, POD4, 15020)["listener"] == "health"

    pod.init("--ipv4-only", "--exclude-outbound-ports", "9000", "--exclude-inbound-ports", "8080")
    assert pod.connect(pod.ns, PEER4, 9000)["listener"] == "remote"
    assert pod.connect(pod.peer, POD4, 8080)["listener"] == "app"

    # --remove restores direct traffic both ways
    pod.init("--remove")
    assert pod.connect(pod.ns, PEER4, 8080)["listener"] == "direct"
    assert pod.connect(pod.peer, POD4, 8080)["listener"] == "app"


def test_redirect_ipv6(pod):
    if not pod.has_v6 or run(["ip6tables-save", "-t", "nat"], ns=pod.ns).returncode != 0:
        pytest.skip("IPv6 or ip6tables does not work in a network namespace here")
    # outbound REDIRECT of IPv6 lands on ::1
    pod.serve(pod.ns, "outbound=[::1]:15001", "inbound=[::]:15006", "health=[::]:15020", f"app=[{POD6}]:8080")
    pod.serve(pod.peer, f"direct=[{PEER6}]:8080")
    pod.init("--ipv6-only")

    r = pod.connect(pod.ns, PEER6, 8080)
    assert r.get("listener") == "outbound" and r["orig"] == f"[{PEER6}]:8080", r
    assert pod.connect(pod.ns, PEER6, 8080, uid=PROXY_UID)["listener"] == "direct"
    assert pod.connect(pod.ns, POD6, 8080)["listener"] == "app"
    assert pod.connect(pod.ns, "::1", 15020)["listener"] == "health"
    r = pod.connect(pod.peer, POD6, 8080)
    assert r["listener"] == "inbound" and r["orig"] == f"[{POD6}]:8080", r
    assert pod.connect(pod.peer, POD6, 15020)["listener"] == "health"

    pod.init("--remove")
    assert pod.connect(pod.ns, PEER6, 8080)["listener"] == "direct"
    assert pod.connect(pod.peer, POD6, 8080)["listener"] == "app"


def test_needs_cap_net_admin(pod):
    # root without CAP_NET_ADMIN in its bounding set (so not in its effective set after exec)
    r = run(["setpriv", "--bounding-set=-net_admin", INIT], ns=pod.ns)
    assert r.returncode == 2, r
    assert "CAP_NET_ADMIN" in r.stderr
    assert "REMORA_" not in run(["iptables-save", "-t", "nat"], ns=pod.ns, check=True).stdout
    # the legacy tools talk to the kernel over a raw socket: CAP_NET_RAW too
    if _which("iptables-legacy-restore") is not None:
        r = run(["setpriv", "--bounding-set=-all,+net_admin", INIT, "--backend", "legacy"], ns=pod.ns)
        assert r.returncode == 2 and "CAP_NET_RAW" in r.stderr, r
        r = run(["setpriv", "--bounding-set=-all,+net_admin", INIT, "--backend", "nft", "--ipv4-only"], ns=pod.ns)
        assert r.returncode == 0, r
        pod.init("--remove")
    # --dry-run needs no capability; it shows the batch for an empty table
    r = run(["setpriv", "--bounding-set=-net_admin", INIT, "--dry-run", "--ipv4-only"], ns=pod.ns)
    assert r.returncode == 0 and "-A OUTPUT -p tcp -j REMORA_OUTPUT" in r.stdout, r


@pytest.mark.parametrize("args, message", [
    (["--inbound-port", "0"], "--inbound-port: \"0\" is not a port (1..65535)"),
    (["--exclude-outbound-ports", "80,,443"], "empty element"),
    (["--exclude-outbound-cidrs", "10.0.0.0/40"], "prefix length must be 0..32"),
    (["--exclude-outbound-cidrs", "not-an-ip"], "is not an IPv4 or IPv6 address"),
    (["--proxy-uid", "proxy"], "is not a numeric UID"),
    (["--backend", "ebpf"], "is not one of nft, legacy, auto"),
    (["--ipv4-only", "--ipv6-only"], "exclude each other"),
    (["--no-such-flag"], "unknown option --no-such-flag"),
])
def test_bad_options(pod, args, message):
    r = pod.init(*args, check=False)
    assert r.returncode == 2 and message in r.stderr, r
    assert "REMORA_" not in run(["iptables-save", "-t", "nat"], ns=pod.ns, check=True).stdout


def test_help():
    r = run([INIT, "--help"], check=True)
    assert "--exclude-outbound-ports" in r.stdout and "CAP_NET_ADMIN" in r.stdout
