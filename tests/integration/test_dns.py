"""Host-name endpoints: resolved by the agent with c-ares (never the system resolver: the bootstrap
file points it at tests/tools/dns_responder.py on loopback) and re-resolved when the TTL runs out.

The two origins listen on the same port of two different loopback addresses, so only the DNS
answer decides which one gets a request."""

import json
import os
import signal
import time

import pytest

from procutil import PYTHON, TOOLS_DIR, Proc, free_port, wait_port, wait_ready_file
from support import http_get, metric

pytestmark = pytest.mark.agent_only


def _origin(workdir, host, port, name):
    ready = os.path.join(workdir, f"{name}.port")
    proc = Proc([PYTHON, os.path.join(TOOLS_DIR, "h1_origin.py"), "--host", host, "--port", str(port),
                 "--ready-file", ready], os.path.join(workdir, f"{name}.log"))
    wait_ready_file(ready, proc, 15)
    return proc


def _requests_seen(host, port):
    _, _, body = http_get(host, port, "/__stats")
    return json.loads(body)["requests"]


def _write_records(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(records, f)
    os.replace(tmp, path)  # the responder re-reads the file when its inode changes


@pytest.fixture
def dns_env(tmp_path):
    workdir = str(tmp_path)
    port = free_port()
    origins = [_origin(workdir, "127.0.0.2", port, "origin-a"), _origin(workdir, "127.0.0.3", port, "origin-b")]
    records = os.path.join(workdir, "records.json")
    _write_records(records, {"svc.test": {"addrs": ["127.0.0.2"], "ttl": 1}})
    port_file = os.path.join(workdir, "dns.port")
    dns = Proc([PYTHON, os.path.join(TOOLS_DIR, "dns_responder.py"), "--listen", "127.0.0.1:0", "--records-file", records,
                "--port-file", port_file], os.path.join(workdir, "dns.log"))
    dns_port = wait_ready_file(port_file, dns, 15)
    yield {"workdir": workdir, "origin_port": port, "records": records, "dns_port": dns_port}
    for p in origins + [dns]:
        p.stop(signal.SIGKILL, timeout=2)


def _config(env, listen_port, health_port, admin_port, name="svc.test"):
    path = os.path.join(env["workdir"], "agent.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 2
admin: 127.0.0.1:{admin_port}
health: 127.0.0.1:{health_port}
dns: {{servers: ["127.0.0.1:{env['dns_port']}"]}}
listeners:
  - name: main
    address: 127.0.0.1:{listen_port}
    routes:
      - cluster: svc
clusters:
  - name: svc
    protocol: http1
    endpoints: ["{name}:{env['origin_port']}"]
    dns: {{min_refresh_ms: 200, max_refresh_ms: 1000}}
""")
    return path


def test_host_name_endpoint_follows_dns_changes(dns_env, proxy_factory):
    listen, health, admin = free_port(), free_port(), free_port()
    p = proxy_factory(config_path=_config(dns_env, listen, health, admin), listen_port=listen, health_port=health,
                      admin_port=admin)
    port = dns_env["origin_port"]
    for _ in range(10):
        status, _, _ = http_get("127.0.0.1", listen, "/a")
        assert status == 200
    assert _requests_seen("127.0.0.2", port) == 10
    assert _requests_seen("127.0.0.3", port) == 0

    # the record moves; after its 1 s TTL the agent resolves again and new requests follow it
    _write_records(dns_env["records"], {"svc.test": {"addrs": ["127.0.0.3"], "ttl": 1}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _, _ = http_get("127.0.0.1", listen, "/probe")
        assert status == 200
        if _requests_seen("127.0.0.3", port) > 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("requests never moved to the new address")
    before_a = _requests_seen("127.0.0.2", port)
    for _ in range(10):
        status, _, _ = http_get("127.0.0.1", listen, "/b")
        assert status == 200
    assert _requests_seen("127.0.0.2", port) == before_a, "the old address still gets requests"
    assert metric(p.metrics(), "remora_upstream_requests_total", cluster="svc") >= 20


def test_unknown_host_name_is_503_with_reason(dns_env, proxy_factory):
    listen, health, admin = free_port(), free_port(), free_port()
    proxy_factory(config_path=_config(dns_env, listen, health, admin, name="missing.test"), listen_port=listen,
                  health_port=health, admin_port=admin)
    status, _, body = http_get("127.0.0.1", listen, "/")
    assert status == 503
    assert b"svc" in body and (b"not found" in body.lower() or b"nxdomain" in body.lower()), body
    # the agent keeps serving, and keeps trying
    status, _, _ = http_get("127.0.0.1", listen, "/")
    assert status == 503
