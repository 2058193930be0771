"""The client's mesh mTLS session cache across identity rotations (agent/src/tls/mesh.c, docs/mesh-tls.md
"Session resumption").

The cache keys a session by endpoint address, expected SPIFFE ID and the serial of the agent's own
certificate, so a rotation makes every kept session unreachable. They used to stay in their slots until a
colliding key replaced them: one more session (with its peer's parsed certificates, several KB) per
endpoint and rotation, up to the 1024 slots. In the 10-minute chaos soak (60 s certificates, five mesh
endpoints) that was the client agent's RSS climb of 87-118 KB/min. Now a rotation drops them, and a
handshake finished on a context of the previous certificate stores nothing.

Topology (loopback, identities as files from a throw-away CA, as in test_mesh_tls.py):

    http client -> agent A (cluster `peer: agent`, pool idle 100 ms) -> agent B (`peer: agent`) -> h1 origin

A's identity is replaced and reloaded (SIGHUP) ROTATIONS times; each time two requests on new mesh
connections: the first a full handshake with the new certificate, the second resumes it. Checked after
each rotation: remora_mesh_tls_client_sessions (the sessions A keeps) stays 1, not 1 + rotations, and
resumption still works.
"""

import os
import signal
import time

import pytest

import support

pytestmark = pytest.mark.agent_only("mesh mTLS is remora-agent's")

pytest.importorskip("cryptography")
from test_mesh_tls import API, CA, WEB, client_agent, get, hs, identity_dir, server_agent  # noqa: E402

ROTATIONS = 6
SESSIONS = "remora_mesh_tls_client_sessions"


def kept_sessions(agent):
    return support.metric(agent.metrics(), SESSIONS)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_rotation_drops_the_sessions_of_the_old_certificate(proxy_factory, workdir, h1_origin):
    ca = CA("Remora Mesh Session Cache Test CA")
    b = server_agent(proxy_factory, workdir, h1_origin, mesh={"identity_dir": identity_dir(workdir, "b", ca, API)})
    # the hop's pooled connection closes after 100 ms idle: every request below opens a new mesh connection
    a = client_agent(proxy_factory, workdir, b.port, API, cluster_extra=["pool_idle_timeout_ms: 100"],
                     mesh={"identity_dir": identity_dir(workdir, "a", ca, WEB)})
    assert kept_sessions(a) == 0
    assert get(a, "/first")[0] == 200
    wait_for(lambda: kept_sessions(a) == 1, 5, "the first session to be kept")

    for i in range(ROTATIONS):
        identity_dir(workdir, "a", ca, WEB)  # a new key and certificate (new serial), same identity
        os.kill(a.pid, signal.SIGHUP)
        wait_for(lambda: a.log().count("serving " + WEB) == i + 2, 10, f"A's reload {i + 1}")
        time.sleep(0.3)  # the pooled connection (old certificate) idles out
        full, resumed = hs(a, "outbound", "success"), hs(a, "outbound", "resumed")
        assert get(a, f"/rotation{i}/full")[0] == 200
        assert hs(a, "outbound", "success") == full + 1  # the new certificate: no session to resume
        time.sleep(0.3)
        assert get(a, f"/rotation{i}/resumed")[0] == 200
        assert hs(a, "outbound", "resumed") == resumed + 1, "the new certificate's session was not kept"
        # one endpoint: one session, whatever the number of rotations (1 + i + 1 before the fix)
        assert kept_sessions(a) == 1, f"after rotation {i + 1}: {kept_sessions(a)} sessions kept"
