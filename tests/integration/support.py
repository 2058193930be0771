"""Shared helpers of the integration suite: starting the proxy under test (remora-agent, or nghttpx
as a stand-in), curl, raw HTTP/1.1, Prometheus parsing, bootstrap YAML rendering."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import weakref

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

from procutil import Proc, free_port, wait_port  # noqa: E402  (tests/tools is on sys.path via conftest)

STANDIN = os.environ.get("REMORA_TEST_STANDIN", "")
AGENT = os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent"))
NGHTTPX = "/usr/sbin/nghttpx"


def is_standin():
    return STANDIN == "nghttpx"


class Proxy:
    """A running proxy: the agent in quick or config mode, or nghttpx standing in for it."""

    def __init__(self, proc, port, *, kind, health_port=None, admin_port=None, tls=False, config_path=None):
        self.proc = proc
        self.port = port
        self.kind = kind
        self.health_port = health_port
        self.admin_port = admin_port
        self.tls = tls
        self.config_path = config_path

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def url(self, path="/", host="127.0.0.1"):
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    # signals the contract maps to actions
    @property
    def drain_signal(self):
        # nghttpx's graceful shutdown is SIGQUIT (its SIGTERM is immediate); the agent's is SIGTERM
        return signal.SIGQUIT if self.kind == "nghttpx" else signal.SIGTERM

    def log(self):
        return self.proc.log_text()

    def alive(self):
        return self.proc.alive()

    def rss_kb(self):
        return self.proc.rss_kb()

    def health(self, path, timeout=5.0):
        return http_get("127.0.0.1", self.health_port, path, timeout)

    def admin(self, path, method="GET", timeout=5.0):
        return http_get("127.0.0.1", self.admin_port, path, timeout, method=method)

    def metrics(self):
        status, _, body = self.health("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return parse_prometheus(body.decode())


def http_get(host, port, path, timeout=5.0, method="GET", headers=None, body=None):
    """One request on a fresh connection; returns (status, headers dict lower-cased, body)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _agent_argv(port, health_port, admin_port, upstream, upstream_protocol, workers, tls, upstream_tls,
                drain_timeout_ms, config_path, log_level, extra):
    argv = [AGENT]
    if config_path:
        argv += ["--config", config_path]
    else:
        argv += ["--listen", f"127.0.0.1:{port}", "--upstream", f"{upstream[0]}:{upstream[1]}",
                 "--upstream-protocol", upstream_protocol, "--workers", str(workers)]
        if tls:
            argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        if upstream_tls:
            argv += ["--upstream-tls"]
            if upstream_tls.get("ca"):
                argv += ["--upstream-ca", upstream_tls["ca"]]
            if upstream_tls.get("server_name"):
                argv += ["--upstream-server-name", upstream_tls["server_name"]]
    argv += ["--admin", f"127.0.0.1:{admin_port}", "--health", f"127.0.0.1:{health_port}", "--log-level", log_level]
    if drain_timeout_ms is not None:
        argv += ["--drain-timeout-ms", str(drain_timeout_ms)]
    return argv + list(extra)


def _nghttpx_argv(port, upstream, upstream_protocol, workers, tls, upstream_tls, drain_timeout_ms, workdir):
    proto = "h2" if upstream_protocol == "h2" else "http/1.1"
    backend = f"{upstream[0]},{upstream[1]};;proto={proto}"
    if upstream_tls:
        backend += ";tls"
        if upstream_tls.get("server_name"):
            backend += f";sni={upstream_tls['server_name']}"
    argv = [NGHTTPX, "--conf=/dev/null", f"--workers={workers}", "--no-ocsp", "--no-via",
            f"--frontend=127.0.0.1,{port}" + ("" if tls else ";no-tls"), f"--backend={backend}",
            "--log-level=INFO", f"--pid-file={workdir}/nghttpx.pid"]
    if upstream_tls and upstream_tls.get("ca"):
        argv += [f"--cacert={upstream_tls['ca']}"]
    if tls:
        argv += [tls["key"], tls["cert"]]
    return argv


def start_proxy(workdir, *, upstream=None, upstream_protocol="h2", workers=1, tls=None, upstream_tls=None,
                drain_timeout_ms=None, config_path=None, listen_port=None, log_level="info", extra=(),
                ready_timeout=10.0, name="proxy", health_port=None, admin_port=None):
    """Starts the proxy under test and waits until it serves. The caller stops it (fixtures do)."""
    port = listen_port or free_port()
    log = os.path.join(workdir, f"{name}.log")
    if is_standin():
        if config_path:
            pytest.skip("nghttpx stand-in cannot run a remora bootstrap file")
        proc = Proc(_nghttpx_argv(port, upstream, upstream_protocol, workers, tls, upstream_tls, drain_timeout_ms,
                                  workdir), log)
        p = Proxy(proc, port, kind="nghttpx", tls=bool(tls))
        try:
            wait_port("127.0.0.1", port, ready_timeout, proc)
        except Exception:
            proc.stop(signal.SIGKILL)
            raise
        return p
    if not (os.path.isfile(AGENT) and os.access(AGENT, os.X_OK)):
        pytest.fail(f"remora-agent not found or not executable at {AGENT} (set REMORA_AGENT)")
    health_port, admin_port = health_port or free_port(), admin_port or free_port()
    proc = Proc(_agent_argv(port, health_port, admin_port, upstream, upstream_protocol, workers, tls, upstream_tls,
                            drain_timeout_ms, config_path, log_level, extra), log)
    p = Proxy(proc, port, kind="agent", health_port=health_port, admin_port=admin_port, tls=bool(tls),
              config_path=config_path)
    try:
        wait_ready(p, ready_timeout)
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return p


def tsan_report(log_text):
    """The first line of a ThreadSanitizer report in a process's output ("WARNING: ThreadSanitizer: data
    race ..." or its SUMMARY line), or None. The TSan pass (scripts/test.sh) runs with halt_on_error=1, so a
    report also ends the process with exit code 66; this finds one made while it drained after SIGTERM."""
    m = re.search(r"^(?:WARNING|SUMMARY|ERROR): ThreadSanitizer: .*$", log_text, re.MULTILINE)
    return m.group(0) if m else None


def wait_ready(p, timeout):
    """Polls the health port's /ready until 200 (the contract: 200 once listeners accept)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not p.alive():
            pytest.fail(f"agent exited with {p.proc.popen.returncode} before ready; argv={p.proc.argv}\n"
                        f"log:\n{p.log()[-4000:]}")
        try:
            status, _, _ = p.health("/ready", timeout=1.0)
            last = status
            if status == 200:
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    pytest.fail(f"agent not ready after {timeout}s (last /ready: {last!r}); argv={p.proc.argv}\nlog:\n{p.log()[-4000:]}")


# ---------------------------------------------------------------------------------------------- curl

class CurlResult:
    def __init__(self, rc, stdout, stderr, headers_raw, body):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.body = body
        # the last header block (after any 1xx); a list of (lower-case name, value)
        blocks = [b for b in re.split(r"\r?\n\r?\n", headers_raw) if b.strip()]
        self.all_blocks = blocks
        last = blocks[-1].splitlines() if blocks else []
        self.status_line = last[0] if last else ""
        self.headers = []
        for line in last[1:]:
            k, _, v = line.partition(":")
            self.headers.append((k.strip().lower(), v.strip()))
        parts = stdout.split()
        self.status = int(parts[0]) if parts and parts[0].isdigit() else None
        self.http_version = parts[1] if len(parts) > 1 else None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<curl rc={self.rc} status={self.status} v={self.http_version} stderr={self.stderr[-500:]!r}>"


def curl(workdir, *args, timeout=20):
    hdr = os.path.join(workdir, f"curl.{time.monotonic_ns()}.hdr")
    body = hdr[:-4] + ".body"
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout - 5), "-D", hdr, "-o", body,
           "-w", "%{http_code} %{http_version}"] + list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    try:
        with open(hdr, "rb") as f:
            headers_raw = f.read().decode("latin-1")
    except FileNotFoundError:
        headers_raw = ""
    try:
        with open(body, "rb") as f:
            b = f.read()
    except FileNotFoundError:
        b = b""
    return CurlResult(r.returncode, r.stdout.decode(), r.stderr.decode("utf-8", "replace"), headers_raw, b)


# ----------------------------------------------------------------------------------- raw HTTP/1.1

_READERS = weakref.WeakKeyDictionary()


class NoResponse(ConnectionError):
    """The connection ended (EOF or reset) before a single byte of a response arrived."""


def forget_reader(sock):
    """Closes the buffered reader read_h1_response keeps for `sock`. The reader holds the socket (and so its key in
    _READERS) alive and keeps its descriptor open after sock.close(): a test that opens many sockets calls this
    before closing each one."""
    f = _READERS.pop(sock, None)
    if f is not None:
        f.close()


def read_h1_response(sock, timeout=10.0, head_only=False):
    """Reads one HTTP/1.1 response (skipping 1xx unless head_only) from a blocking socket. One buffered
    reader per socket is kept, so pipelined responses are not lost between calls.
    head_only: return after the first header block (an interim 1xx, or the head of a HEAD response).
    Returns (status, headers list of (lower name, value), body bytes, trailers list) or raises on EOF."""
    sock.settimeout(timeout)
    f = _READERS.get(sock)
    if f is None:
        f = _READERS[sock] = sock.makefile("rb")
    first = True
    while True:
        try:
            line = f.readline(65537)
        except ConnectionResetError:
            if first:
                raise NoResponse("connection reset before a response")
            raise
        if not line:
            if first:
                raise NoResponse("connection closed before a response")
            raise ConnectionError("connection closed after an interim response")
        first = False
        status = int(line.split()[1])
        headers = []
        while True:
            h = f.readline(65537)
            if not h:
                raise ConnectionError("eof in response headers")
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        if 100 <= status < 200:
            if head_only:
                return status, headers, b"", []
            continue
        break
    hd = {}
    for k, v in headers:
        hd.setdefault(k, v)
    body, trailers = b"", []
    if head_only:
        return status, headers, b"", []
    if "chunked" in hd.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int(f.readline().split(b";")[0].strip(), 16)
            if size == 0:
                break
            parts.append(f.read(size))
            f.read(2)
        while True:
            t = f.readline()
            if t in (b"\r\n", b"\n", b""):
                break
            k, _, v = t.decode("latin-1").partition(":")
            trailers.append((k.strip().lower(), v.strip()))
        body = b"".join(parts)
    elif "content-length" in hd:
        body = f.read(int(hd["content-length"]))
        if len(body) != int(hd["content-length"]):
            raise ConnectionError(f"body cut short: {len(body)} of {hd['content-length']} bytes")
    elif status not in (204, 304):
        body = f.read()
    return status, headers, body, trailers


def raw_h1(port, data, timeout=10.0):
    """Sends raw bytes on a new connection; returns (status, headers, body, trailers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_h1_response(s, timeout)


def h1_roundtrip_ok(port, timeout=5.0):
    """A plain GET on a fresh connection; True if a 200 came back (used after malformed input)."""
    st, _, _, _ = raw_h1(port, b"GET /ok HTTP/1.1\r\nHost: ok.test\r\n\r\n", timeout)
    return st == 200


# ----------------------------------------------------------------------------------- Prometheus

_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Returns {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (None if there is none)."""
    want = set(labels.items())
    vals = [v for (n, ls), v in metrics.items() if n == name and want <= set(ls)]
    return sum(vals) if vals else None


# ------------------------------------------------------------------------------- bootstrap YAML

def render_config(*, listen_port, health_port, admin_port, routes, clusters, workers=1, drain_timeout_ms=None,
                  listener_name="main"):
    """Renders a bootstrap file in the format of docs/configuration.md.

    routes: list of dicts with optional "name", "prefix" or "exact", "authority" (list), and "cluster";
      or "match": a whole match mapping (e.g. {"path": {"regex": "^/v[0-9]+/"}}) instead of prefix/exact/authority.
      Any other key (timeout_ms, retry, request_headers, mirrors, fault, redirect, url_rewrite, ...) is written
      as given, in YAML flow style (JSON); a route without "cluster" gets no `cluster:` line (redirects).
    clusters: list of dicts {"name", "protocol", "endpoints": ["127.0.0.1:N", ...]}, plus any other key
      (pool_idle_timeout_ms, retry_budget, ...) written the same way.
    Returns (text, {route index: line number of that route's `cluster:` key}).
    """
    lines = [
        "# generated by tests/integration",
        f"workers: {workers}",
        f"admin: 127.0.0.1:{admin_port}",
        f"health: 127.0.0.1:{health_port}",
    ]
    if drain_timeout_ms is not None:
        lines.append(f"drain_timeout_ms: {drain_timeout_ms}")
    lines += ["listeners:", f"  - name: {listener_name}", f"    address: 127.0.0.1:{listen_port}", "    routes:"]
    cluster_lines = {}
    for i, r in enumerate(routes):
        lines.append(f"      - name: {r.get('name', f'r{i}')}")
        match = []
        if "prefix" in r:
            match.append(f"          path: {{prefix: {r['prefix']}}}")
        if "exact" in r:
            match.append(f"          path: {{exact: {r['exact']}}}")
        if "authority" in r:
            match.append("          authority: [" + ", ".join(f'"{a}"' for a in r["authority"]) + "]")
        if "match" in r:
            lines.append(f"        match: {json.dumps(r['match'])}")
        elif match:
            lines.append("        match:")
            lines += match
        if "cluster" in r:
            lines.append(f"        cluster: {r['cluster']}")
            cluster_lines[i] = len(lines)
        for k, v in r.items():
            if k not in _ROUTE_KEYS:
                lines.append(f"        {k}: {json.dumps(v)}")
    lines.append("clusters:")
    for c in clusters:
        lines += [f"  - name: {c['name']}", f"    protocol: {c['protocol']}",
                  "    endpoints: [" + ", ".join(f'"{e}"' for e in c["endpoints"]) + "]"]
        lines += [f"    {k}: {json.dumps(v)}" for k, v in c.items() if k not in ("name", "protocol", "endpoints")]
    return "\n".join(lines) + "\n", cluster_lines


# route keys render_config writes itself; the others are passed through
_ROUTE_KEYS = ("name", "prefix", "exact", "authority", "match", "cluster")
