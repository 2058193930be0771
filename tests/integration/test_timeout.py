"""Route timeouts from the bootstrap file (`timeout_ms`): a response that has not started in time
gets 504, a gRPC call a trailers-only DEADLINE_EXCEEDED, and a response that started but did not
finish is ended (gRPC: trailers with DEADLINE_EXCEEDED); the upstream request is cancelled."""

import os
import time

import grpc
import pytest

from procutil import free_port
from support import http_get, metric

pytestmark = pytest.mark.agent_only


def _config(workdir, listen, health, admin, h1_port, grpc_port):
    path = os.path.join(workdir, "timeouts.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 1
admin: 127.0.0.1:{admin}
health: 127.0.0.1:{health}
listeners:
  - name: main
    address: 127.0.0.1:{listen}
    routes:
      - name: grpc
        match: {{path: {{prefix: /echo.Echo/}}}}
        cluster: grpc
        timeout_ms: 300
      - name: web
        cluster: web
        timeout_ms: 300
clusters:
  - {{name: web, protocol: http1, endpoints: ["127.0.0.1:{h1_port}"]}}
  - {{name: grpc, protocol: h2, endpoints: ["127.0.0.1:{grpc_port}"]}}
""")
    return path


def test_route_timeout(proxy_factory, h1_origin, grpc_server, tmp_path):
    listen, health, admin = free_port(), free_port(), free_port()
    p = proxy_factory(config_path=_config(str(tmp_path), listen, health, admin, h1_origin.port, grpc_server.port),
                      listen_port=listen, health_port=health, admin_port=admin)
    assert http_get("127.0.0.1", listen, "/fast")[0] == 200
    t0 = time.monotonic()
    status, _, body = http_get("127.0.0.1", listen, "/slow", headers={"x-delay-ms": "3000"})
    assert status == 504 and b"timeout" in body, (status, body)
    assert 0.25 <= time.monotonic() - t0 < 2.0

    # a response that started but stalls is cut at the deadline rather than left hanging
    t0 = time.monotonic()
    with pytest.raises(Exception):
        http_get("127.0.0.1", listen, "/stream", headers={"x-stream-bytes": str(1 << 30)}, timeout=10)
    assert time.monotonic() - t0 < 5.0

    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        unary = ch.unary_unary("/echo.Echo/Unary")
        assert unary(b"fast", timeout=5) == b"fast"
        with pytest.raises(grpc.RpcError) as e:
            unary(b"slow", metadata=[("x-sleep-ms", "3000"), ("x-call-id", "timeout-1")], timeout=10)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stream = ch.unary_stream("/echo.Echo/ServerStream")
        got = []
        with pytest.raises(grpc.RpcError) as e:
            for m in stream(b"x", metadata=[("x-count", "100"), ("x-interval-ms", "50")], timeout=10):
                got.append(m)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0 < len(got) < 100
    # the two HTTP timeouts at least: for gRPC the agent sends the upstream the remaining deadline in
    # grpc-timeout, so the upstream may answer DEADLINE_EXCEEDED itself just before the agent would
    assert metric(p.metrics(), "remora_downstream_timeouts_total", listener="main") >= 2
