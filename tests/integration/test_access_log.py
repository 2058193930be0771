"""JSON access logs (issue 8, section 3): one line per request, parsed with json.loads, for HTTP/1.1, HTTP/2 and
gRPC (an error in trailers, a local reply and its flag, a retry counted in attempts); file output and SIGUSR1
rotation with nothing lost; reconfiguration on reload (path change, off); a full buffer drops and counts
instead of slowing requests (a FIFO nobody reads); remora_access_log_lines_total."""

import json
import os
import signal
import stat
import time

import grpc
import pytest

import grpc_client
from h2client import H2Client
from procutil import free_port
from support import http_get, metric, raw_h1, render_config

pytestmark = pytest.mark.agent_only

FIELDS = ["start_time", "duration_ms", "method", "authority", "path", "protocol", "direction", "status", "grpc_status",
          "response_flag", "route", "backend", "upstream_address", "attempts", "bytes_received", "bytes_sent",
          "trace_id", "peer_identity", "downstream_address"]


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def _config(workdir, *, listen_port, h1_port, grpc_port, access_log, workers=1):
    dead = free_port()  # nothing listens there
    text, _ = render_config(
        listen_port=listen_port, health_port=free_port(), admin_port=free_port(), workers=workers,
        routes=[{"name": "grpc", "prefix": "/echo.Echo/", "cluster": "grpc"},
                {"name": "retry", "prefix": "/retry/", "cluster": "web",
                 "retry": {"attempts": 2, "backoff_ms": 1, "http_statuses": [503]}},
                {"name": "dead", "prefix": "/dead/", "cluster": "dead"},
                {"name": "web", "prefix": "/web/", "cluster": "web"}],
        clusters=[{"name": "web", "protocol": "http1", "endpoints": [f"127.0.0.1:{h1_port}"]},
                  {"name": "grpc", "protocol": "h2", "endpoints": [f"127.0.0.1:{grpc_port}"]},
                  {"name": "dead", "protocol": "http1", "endpoints": [f"127.0.0.1:{dead}"]}])
    if access_log is not None:
        text += "telemetry:\n  access_log:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in access_log.items())
    return text


def _start(proxy_factory, workdir, name="agent.yaml", **kw):
    port = free_port()
    path = _write(os.path.join(workdir, name), _config(workdir, listen_port=port, **kw))
    return proxy_factory(config_path=path, listen_port=port), path


def _lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def _wait_lines(path, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(path)
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def _one(lines, **match):
    found = [x for x in lines if all(x.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, lines)
    return found[0]


def test_lines_for_http1_h2_grpc_local_reply_retry(proxy_factory, workdir, h1_origin, grpc_server):
    log = os.path.join(workdir, "access.log")
    p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": log})

    status, _, body = http_get("127.0.0.1", p.port, "/web/one?q=1", method="POST", body=b"x" * 1000,
                               headers={"Host": "web.test"})
    assert status == 200
    with H2Client("127.0.0.1", p.port) as c:
        r = c.get("/web/two", authority="h2.test")
        assert r.status == 200
        h2_body = len(r.data)
        # bytes a JSON string must escape, and UTF-8 that it must keep
        r = c.get("/web/q\"\\\u00e9", authority="h2.test")
        assert r.status == 200
    with grpc_client.channel(f"127.0.0.1:{p.port}") as ch:
        echo = grpc_client.Echo(ch)
        assert echo.unary(b"hello", timeout=10) == b"hello"
        stream = echo.server_stream(b"m", timeout=10, metadata=[("x-count", "3"), ("x-fail-after", "1"),
                                                                ("x-fail-code", "9"), ("x-fail-message", "nope")])
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert http_get("127.0.0.1", p.port, "/nowhere")[0] == 404
    assert http_get("127.0.0.1", p.port, "/retry/", headers={"x-status": "503"})[0] == 503
    assert http_get("127.0.0.1", p.port, "/dead/")[0] == 503

    lines = _wait_lines(log, 8)
    assert len(lines) == 8, lines
    for x in lines:
        assert list(x) == FIELDS, x
        assert x["start_time"].endswith("Z") and len(x["start_time"]) == 24, x
        assert abs(time.mktime(time.strptime(x["start_time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone - time.time()) < 60
        assert isinstance(x["duration_ms"], float) and 0 <= x["duration_ms"] < 10000, x
        assert x["peer_identity"] is None and x["trace_id"] is None
        assert x["downstream_address"].startswith("127.0.0.1:"), x

    h1 = _one(lines, path="/web/one?q=1")
    assert h1["method"] == "POST" and h1["authority"] == "web.test" and h1["protocol"] == "HTTP/1.1", h1
    assert h1["status"] == 200 and h1["grpc_status"] is None and h1["response_flag"] == "-", h1
    assert h1["route"] == "web" and h1["backend"] == "web", h1
    assert h1["upstream_address"] == f"127.0.0.1:{h1_origin.port}" and h1["attempts"] == 1, h1
    assert h1["bytes_received"] == 1000 and h1["bytes_sent"] == len(body), h1

    h2 = _one(lines, path="/web/two")
    assert h2["protocol"] == "HTTP/2" and h2["authority"] == "h2.test" and h2["method"] == "GET", h2
    assert h2["status"] == 200 and h2["bytes_sent"] == h2_body and h2["bytes_received"] == 0, h2
    assert _one(lines, path="/web/q\"\\\u00e9")["status"] == 200

    ok = _one(lines, path="/echo.Echo/Unary")
    assert ok["protocol"] == "HTTP/2" and ok["status"] == 200 and ok["grpc_status"] == 0, ok
    assert ok["route"] == "grpc" and ok["backend"] == "grpc" and ok["upstream_address"] == f"127.0.0.1:{grpc_server.port}"
    failed = _one(lines, path="/echo.Echo/ServerStream")
    assert failed["status"] == 200 and failed["grpc_status"] == 9, failed  # in trailers, after a message
    assert failed["bytes_sent"] > 0, failed

    nr = _one(lines, path="/nowhere")
    assert nr["status"] == 404 and nr["response_flag"] == "NR" and nr["route"] is None and nr["attempts"] == 0, nr
    assert nr["backend"] is None and nr["upstream_address"] is None, nr
    retried = _one(lines, path="/retry/")
    assert retried["status"] == 503 and retried["attempts"] == 3 and retried["route"] == "retry", retried
    dead = _one(lines, path="/dead/")
    assert dead["status"] == 503 and dead["response_flag"] == "UF" and dead["backend"] == "dead", dead

    m = p.metrics()
    assert metric(m, "remora_access_log_lines_total", result="written") == 8
    assert metric(m, "remora_access_log_lines_total", result="dropped") == 0


def _json_reading(b):
    """What the agent's escaping decodes to: valid UTF-8 as characters, any other byte as its Latin-1 reading."""
    out, i = [], 0
    while i < len(b):
        for n in (4, 3, 2, 1):
            try:
                out.append(b[i:i + n].decode("utf-8"))
                i += n
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(chr(b[i]))
            i += 1
    return "".join(out)


def test_escaping_of_every_byte(proxy_factory, workdir, h1_origin, grpc_server):
    """Whatever bytes a client puts in a path, the line is valid JSON that decodes to them. The codecs refuse
    control bytes and DEL themselves; every other byte reaches the log: visible ASCII (quote and backslash
    included) over both protocols, and over HTTP/2 bytes 0x80-0xff, as invalid UTF-8 and as valid sequences."""
    log = os.path.join(workdir, "esc.log")
    p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": log})
    visible = bytes(b for b in range(0x21, 0x7f) if b not in b"#?")
    high = bytes(range(0x80, 0x100)) + "é€😀".encode("utf-8") + b"\xed\xa0\x80\xc0\xaf"  # a surrogate, an overlong
    status, _, _, _ = raw_h1(p.port, b"GET /web/" + visible + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status == 200
    with H2Client("127.0.0.1", p.port, validate=False) as c:
        for raw in (visible, high):
            sid = c.send_headers([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/web/" + raw),
                                  (b":authority", b"esc.test")])
            assert c.wait([sid], 10) and c.responses[sid].status == 200
    lines = _wait_lines(log, 3, timeout=5)
    assert len(lines) == 3, lines
    with open(log, "rb") as f:
        data = f.read()
    assert [x["path"] for x in lines] == ["/web/" + visible.decode(), "/web/" + visible.decode(),
                                          "/web/" + _json_reading(high)], [x["path"] for x in lines]
    data.decode("utf-8")  # the log is valid UTF-8 throughout
    assert b"\\u00ff" in data and "é€😀".encode("utf-8") in data


def test_long_values_are_cut(proxy_factory, workdir, h1_origin, grpc_server):
    log = os.path.join(workdir, "long.log")
    p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": log})
    path = "/web/" + 'a"' * 3000  # 9000 bytes once escaped
    with H2Client("127.0.0.1", p.port, validate=False) as c:
        r = c.get(path)
    lines = _wait_lines(log, 1, timeout=5)
    assert len(lines) == 1
    x = lines[0]
    with open(log, "rb") as f:
        assert len(f.read()) <= 4096
    assert x["path"].endswith("...") and x["path"].startswith('/web/a"a"'), x["path"][:40]
    assert len(x["path"]) <= 1792 and path.startswith(x["path"][:-3]), x["path"][-20:]
    assert x["status"] == r.status


def test_file_rotation_on_sigusr1_loses_nothing(proxy_factory, workdir, h1_origin, grpc_server):
    log = os.path.join(workdir, "rot.log")
    p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": log},
                  workers=2)
    for i in range(20):
        assert http_get("127.0.0.1", p.port, f"/web/before/{i}")[0] == 200
    assert len(_wait_lines(log, 20)) == 20
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o644
    os.rename(log, log + ".1")
    for i in range(10):  # written while renamed: still to the old file
        assert http_get("127.0.0.1", p.port, f"/web/renamed/{i}")[0] == 200
    os.kill(p.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not os.path.exists(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(log), "SIGUSR1 did not reopen the file"
    for i in range(20):
        assert http_get("127.0.0.1", p.port, f"/web/after/{i}")[0] == 200
    deadline = time.monotonic() + 10
    while len(_lines(log)) + len(_lines(log + ".1")) < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    new, old = [x["path"] for x in _lines(log)], [x["path"] for x in _lines(log + ".1")]
    # every line once; what was logged before the rename is in the old file, what came after the reopen in
    # the new one (a request that completed just before the signal may have its line in either)
    assert sorted(old + new) == sorted([f"/web/before/{i}" for i in range(20)] + [f"/web/renamed/{i}" for i in range(10)] +
                                       [f"/web/after/{i}" for i in range(20)]), (old, new)
    assert set(f"/web/before/{i}" for i in range(20)) <= set(old), old
    assert set(f"/web/after/{i}" for i in range(20)) <= set(new), new
    assert p.alive()
    m = p.metrics()
    assert metric(m, "remora_access_log_lines_total", result="written") == 50
    assert metric(m, "remora_access_log_lines_total", result="dropped") == 0


def test_reload_changes_path_and_turns_off(proxy_factory, workdir, h1_origin, grpc_server):
    a, b = os.path.join(workdir, "a.log"), os.path.join(workdir, "b.log")
    p, path = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": a})
    assert http_get("127.0.0.1", p.port, "/web/a")[0] == 200
    assert len(_wait_lines(a, 1)) == 1

    def reload(text):
        _write(path, text.replace(str(free_port()), str(free_port())))
        before = json.loads(p.admin("/config_dump")[2])["generation"]
        os.kill(p.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while json.loads(p.admin("/config_dump")[2])["generation"] == before and time.monotonic() < deadline:
            time.sleep(0.02)

    text = open(path).read()
    reload(text.replace(f"path: {json.dumps(a)}", f"path: {json.dumps(b)}"))
    assert http_get("127.0.0.1", p.port, "/web/b")[0] == 200
    assert [x["path"] for x in _wait_lines(b, 1)] == ["/web/b"]
    reload(text.split("telemetry:")[0])
    assert json.loads(p.admin("/config_dump")[2])["telemetry"]["access_log"] is None
    for _ in range(5):
        assert http_get("127.0.0.1", p.port, "/web/off")[0] == 200
    time.sleep(0.3)
    assert [x["path"] for x in _lines(a)] == ["/web/a"] and [x["path"] for x in _lines(b)] == ["/web/b"]


def test_full_buffer_drops_and_counts_never_blocks(proxy_factory, workdir, h1_origin, grpc_server):
    fifo = os.path.join(workdir, "log.fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read (yet)
    try:
        p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port,
                      access_log={"path": fifo, "buffer_bytes": 4096})
        n = 600
        t0 = time.monotonic()
        for i in range(n):
            assert http_get("127.0.0.1", p.port, f"/web/{i}/" + "p" * 200)[0] == 200
        elapsed = time.monotonic() - t0
        # the pipe (64 KiB) and the 4 KiB buffer hold far fewer than 600 lines of ~700 bytes
        m = p.metrics()
        dropped = metric(m, "remora_access_log_lines_total", result="dropped")
        assert dropped > 0, m
        assert elapsed < 20, f"{n} requests took {elapsed:.1f}s with a stuck log reader"

        # now read: what was kept arrives whole, and every line is either written or dropped
        data = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = os.read(reader, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                data += chunk
                deadline = max(deadline, time.monotonic() + 0.5)
                continue
            m = p.metrics()
            written = metric(m, "remora_access_log_lines_total", result="written")
            if written + metric(m, "remora_access_log_lines_total", result="dropped") == n and \
                    data.count(b"\n") == written:
                break
            time.sleep(0.05)
        m = p.metrics()
        written = metric(m, "remora_access_log_lines_total", result="written")
        dropped = metric(m, "remora_access_log_lines_total", result="dropped")
        assert written + dropped == n and written == data.count(b"\n"), (written, dropped, data.count(b"\n"))
        lines = [json.loads(x) for x in data.splitlines()]
        assert all(x["status"] == 200 for x in lines)
        assert http_get("127.0.0.1", p.port, "/web/after")[0] == 200
    finally:
        os.close(reader)


def test_stdout(proxy_factory, workdir, h1_origin, grpc_server):
    """The default path: lines go to standard output (the agent's own log is on standard error)."""
    p, _ = _start(proxy_factory, workdir, h1_port=h1_origin.port, grpc_port=grpc_server.port, access_log={"path": "stdout"})
    for i in range(3):
        assert http_get("127.0.0.1", p.port, f"/web/stdout/{i}")[0] == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in p.log().splitlines() if x.startswith("{")]
        if len(lines) == 3:
            break
        time.sleep(0.02)
    assert sorted(x["path"] for x in lines) == [f"/web/stdout/{i}" for i in range(3)], p.log()
