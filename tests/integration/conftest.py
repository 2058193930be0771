"""Fixtures of the black-box integration suite (see README.md)."""

import json
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(os.path.dirname(HERE), "tools")
sys.path.insert(0, TOOLS)
sys.path.insert(0, HERE)

# The test process itself talks only to loopback: no proxy variables, no gRPC fork handlers.
for _k in list(os.environ):
    if "proxy" in _k.lower():
        del os.environ[_k]
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import pytest  # noqa: E402

import certs as certs_mod  # noqa: E402
import grpc_client  # noqa: E402
import support  # noqa: E402
from h2client import H2Client  # noqa: E402
from procutil import start_tool  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "agent_only(reason): needs remora-agent; skipped under REMORA_TEST_STANDIN=nghttpx")


def pytest_report_header(config):
    if support.is_standin():
        return "proxy under test: nghttpx stand-in (REMORA_TEST_STANDIN=nghttpx)"
    return f"proxy under test: {support.AGENT}"


def pytest_collection_modifyitems(config, items):
    if not support.is_standin():
        return
    for item in items:
        m = item.get_closest_marker("agent_only")
        if m is not None:
            item.add_marker(pytest.mark.skip(reason="nghttpx stand-in: " + (m.args[0] if m.args else "agent only")))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Server:
    """An origin started from tests/tools."""

    def __init__(self, kind, proc, port):
        self.kind, self.proc, self.port = kind, proc, port

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def stats(self):
        if self.kind == "h1":
            _, _, body = support.http_get("127.0.0.1", self.port, "/__stats")
            return json.loads(body)
        if self.kind == "h2":
            with H2Client("127.0.0.1", self.port, timeout=5) as c:
                return json.loads(c.get("/__stats", timeout=5).data)
        with grpc_client.channel(self.target) as ch:
            return grpc_client.Echo(ch).stats()


_SCRIPTS = {"h1": "h1_origin.py", "h2": "h2_origin.py", "grpc": "grpc_echo_server.py"}


def _start_server(kind, workdir):
    proc, port = start_tool(_SCRIPTS[kind], [], str(workdir), name=f"{kind}-origin")
    return Server(kind, proc, port)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return certs_mod.make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def h1_origin(tmp_path_factory):
    s = _start_server("h1", tmp_path_factory.mktemp("h1origin"))
    yield s
    s.proc.stop()


@pytest.fixture(scope="module")
def h2_origin(tmp_path_factory):
    s = _start_server("h2", tmp_path_factory.mktemp("h2origin"))
    yield s
    s.proc.stop()


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory):
    s = _start_server("grpc", tmp_path_factory.mktemp("grpcserver"))
    yield s
    s.proc.stop()


@pytest.fixture
def origin_factory(tmp_path):
    """Starts private origins (for tests that kill them); all stopped at teardown."""
    started = []

    def start(kind):
        s = _start_server(kind, tmp_path)
        started.append(s)
        return s

    yield start
    for s in started:
        s.proc.stop(signal.SIGKILL, timeout=2)


def _proxy_teardown(proxies, failed):
    problems = []
    for p in proxies:
        crashed = not p.alive() and not getattr(p, "stopped_by_test", False)
        if failed or crashed:
            sys.stderr.write(f"\n---- {p.kind} log (pid {p.pid}, argv {p.proc.argv}) ----\n{p.log()[-6000:]}\n")
        if crashed:
            problems.append(f"{p.kind} pid {p.pid} died during the test with exit code {p.proc.popen.returncode}")
        p.proc.stop(signal.SIGTERM, timeout=5)
        # a ThreadSanitizer report, also one from the drain after SIGTERM or one the test stopped it after
        report = support.tsan_report(p.log())
        if report:
            if not (failed or crashed):
                sys.stderr.write(f"\n---- {p.kind} log (pid {p.pid}, argv {p.proc.argv}) ----\n{p.log()[-6000:]}\n")
            problems.append(f"{p.kind} pid {p.pid}: {report}")
    return problems


@pytest.fixture
def proxy_factory(tmp_path, request):
    """start(**kw) -> support.Proxy (see support.start_proxy); stopped by PID at teardown.
    Teardown fails the test if a proxy died without the test stopping it (a crash)."""
    proxies = []

    def start(**kw):
        p = support.start_proxy(str(tmp_path), name=f"proxy{len(proxies)}", **kw)
        proxies.append(p)
        return p

    yield start
    rep = getattr(request.node, "rep_call", None)
    problems = _proxy_teardown(proxies, rep is not None and rep.failed)
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture(scope="module")
def module_proxy_factory(tmp_path_factory, request):
    """Like proxy_factory, shared by a module's tests (read-only uses)."""
    proxies = []
    d = tmp_path_factory.mktemp("proxy")

    def start(**kw):
        p = support.start_proxy(str(d), name=f"mproxy{len(proxies)}", **kw)
        proxies.append(p)
        _MODULE_PROXIES.append(p)
        return p

    yield start
    for p in proxies:
        _MODULE_PROXIES.remove(p)
    problems = _proxy_teardown(proxies, False)
    if problems:
        pytest.fail("; ".join(problems))


_MODULE_PROXIES = []


@pytest.fixture(autouse=True)
def _module_proxies_survive():
    """A shared proxy that dies during a test fails that test (with its log), not a later one."""
    yield
    dead = [p for p in _MODULE_PROXIES if not p.alive() and not getattr(p, "stopped_by_test", False)]
    for p in dead:
        p.stopped_by_test = True  # report once
        sys.stderr.write(f"\n---- {p.kind} log (pid {p.pid}) ----\n{p.log()[-6000:]}\n")
    if dead:
        pytest.fail("; ".join(f"{p.kind} pid {p.pid} died during this test, exit code {p.proc.popen.returncode}"
                              for p in dead))


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)
