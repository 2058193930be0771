"""TLS: downstream with ALPN h2 and http/1.1 (curl --cacert, nghttp, python ssl); upstream TLS with
the peer verified (nghttpd as a TLS origin)."""

import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

from h2client import H2Client
from procutil import Proc, free_port, wait_port
from support import curl


@pytest.fixture(scope="module")
def tls_px(module_proxy_factory, h2_origin, certs):
    return module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", tls=certs, workers=2)


@pytest.mark.parametrize("flag,version", [("--http2", "2"), ("--http1.1", "1.1")])
def test_curl_alpn(tls_px, certs, workdir, flag, version):
    r = curl(workdir, flag, "--cacert", certs["ca"], "-H", "x-test: tls", tls_px.url("/tls"))
    assert r.rc == 0, r
    assert r.status == 200 and r.http_version == version, r
    echo = r.json()
    assert echo["path"] == "/tls"
    assert ["x-test", "tls"] in echo["headers"]


def test_curl_verifies_name_localhost(tls_px, certs, workdir):
    r = curl(workdir, "--http2", "--cacert", certs["ca"], "--resolve", f"localhost:{tls_px.port}:127.0.0.1",
             tls_px.url("/byname", host="localhost"))
    assert r.rc == 0 and r.status == 200 and r.http_version == "2", r


def test_curl_rejects_unknown_ca(tls_px, certs, workdir):
    # guards the test itself: the listener really presents the test CA's certificate
    r = curl(workdir, "--http2", "--cacert", certs["other_ca"], tls_px.url("/x"))
    assert r.rc == 60, r


def test_nghttp_over_tls(tls_px, workdir):
    r = subprocess.run(["nghttp", "-v", "-n", "-t", "10", tls_px.url("/nghttp-tls")], capture_output=True, timeout=20)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, r.stderr.decode()
    assert "negotiated protocol: h2" in out
    assert ":status: 200" in out


def test_python_h2_over_tls(tls_px, certs):
    ctx = ssl.create_default_context(cafile=certs["ca"])
    with H2Client("127.0.0.1", tls_px.port, tls=ctx) as c:
        sids = [c.request("GET", f"/py/{i}", scheme="https") for i in range(5)]
        assert c.wait(sids)
        for i, sid in enumerate(sids):
            r = c.responses[sid]
            assert r.status == 200 and json.loads(r.data)["path"] == f"/py/{i}"


@pytest.fixture
def tls_origin(tmp_path, certs):
    """nghttpd serving a static file over TLS (h2)."""
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    content = os.urandom(50000)
    (docroot / "file.bin").write_bytes(content)
    port = free_port()
    proc = Proc(["nghttpd", "-a", "127.0.0.1", "-d", str(docroot), str(port), certs["key"], certs["cert"]],
                str(tmp_path / "nghttpd.log"))
    try:
        wait_port("127.0.0.1", port, 10, proc)
        yield port, content
    finally:
        proc.stop()


def test_upstream_tls_verified(proxy_factory, tls_origin, certs, workdir):
    port, content = tls_origin
    px = proxy_factory(upstream=("127.0.0.1", port), upstream_protocol="h2",
                       upstream_tls={"ca": certs["ca"], "server_name": "localhost"})
    r = curl(workdir, "--http2-prior-knowledge", px.url("/file.bin"))
    assert r.status == 200, r
    assert r.body == content


@pytest.mark.parametrize("case", ["unknown-ca", "wrong-name"])
def test_upstream_tls_bad_peer_refused(proxy_factory, tls_origin, certs, workdir, case):
    port, _ = tls_origin
    upstream_tls = {"ca": certs["other_ca"], "server_name": "localhost"} if case == "unknown-ca" else \
        {"ca": certs["ca"], "server_name": "not-the-server.example"}
    px = proxy_factory(upstream=("127.0.0.1", port), upstream_protocol="h2", upstream_tls=upstream_tls)
    r = curl(workdir, "--http2-prior-knowledge", px.url("/file.bin"))
    assert r.rc == 0, r
    assert r.status in (502, 503), f"a peer that fails verification ({case}) must not be used: {r}"


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
def test_clients_that_reset_mid_response_leave_no_socket_behind(proxy_factory, h1_origin, certs, alpn):
    """TLS clients that reset their connection while a large response is being written: every socket is
    released. With h2o 2.2.5 the close after a read error tries to flush close_notify on a stream libuv
    already marks unwritable; the write's error is dropped and, without rm_socket_close's second close,
    the socket (descriptor, SSL object, buffers) stayed open for the life of the agent."""
    px = proxy_factory(upstream=h1_origin.addr, upstream_protocol="http1", tls=certs)
    ctx = ssl.create_default_context(cafile=certs["ca"])
    big = [("x-stream-bytes", "5000000"), ("x-stream-cl", "1")]

    def fds():
        return len(os.listdir(f"/proc/{px.proc.pid}/fd"))

    def reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        sock.close()

    def one_reset_client(i):
        if alpn == "h2":
            c = H2Client("127.0.0.1", px.port, tls=ctx, server_hostname="localhost", timeout=5)
            c.request("GET", f"/big/{i}", headers=big, scheme="https")
            t_end = time.monotonic() + 0.05  # the response is under way
            while time.monotonic() < t_end and not c.closed:
                c.pump(0.02)
            reset(c.sock)
            return
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=5), server_hostname="localhost")
        s.sendall(f"GET /big/{i} HTTP/1.1\r\nHost: localhost\r\n".encode()
                  + b"".join(f"{k}: {v}\r\n".encode() for k, v in big) + b"\r\n")
        got = 0
        while got < 64 * 1024:  # the response is under way
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        reset(s)

    before = fds()
    for i in range(40):
        one_reset_client(i)
    # the agent notices each reset on its next write or read; give it time, bounded
    deadline = time.monotonic() + 10
    while fds() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() <= before + 2, f"descriptors: {before} before 40 reset TLS clients, {fds()} after"
