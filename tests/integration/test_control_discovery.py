"""The discovery stream, exercised by fake agents (python3-grpcio, code generated from proto/) until the
agent's own control client exists: snapshots on connect and on every change, ACK / NACK reflected in
`remoractl status` and `remoractl apply --wait`, disconnects, restarts, protocol errors."""

import time

import grpc

from control_support import (agent_status, agents, control, control_factory, pb, service_doc,  # noqa: F401
                             split_route_doc, status_json, wait_until, write)

BASE = service_doc("echo", ["127.0.0.1:27201"]) + "---\n" + service_doc("echo-v2", ["127.0.0.1:27202"])


def route(w1, w2):
    return split_route_doc("echo-split", "echo", [("echo", w1), ("echo-v2", w2)])


def test_snapshot_on_connect_and_on_every_change(control, agents):
    assert control.ctl("apply", "-f", "-", stdin=BASE).rc == 0
    a = agents(control, "node-a")
    s1 = a.wait_version(1)
    assert s1.version == 1 and s1.nonce
    assert [(s.metadata.name, s.metadata.namespace) for s in s1.services] == [("echo", "default"), ("echo-v2", "default")]
    assert s1.services[0].spec.protocol == pb().service.PROTOCOL_GRPC
    assert [e.address for e in s1.services[0].spec.endpoints] == ["127.0.0.1:27201"]
    assert list(s1.http_routes) == [] and list(s1.grpc_routes) == []

    r = control.ctl("apply", "-f", "-", stdin=route(90, 10))
    assert r.rc == 0, r
    s2 = a.wait_version(2)
    assert s2.nonce != s1.nonce
    rt = s2.http_routes[0]
    assert rt.metadata.name == "echo-split"
    assert [(p.kind, p.name, p.namespace) for p in rt.spec.parent_refs] == [("Service", "echo", "default")]
    rule = rt.spec.rules[0]
    assert [(b.name, b.weight) for b in rule.backend_refs] == [("echo", 90), ("echo-v2", 10)]
    assert rule.matches[0].path.prefix == "/"

    # an apply that changes nothing sends nothing
    assert control.ctl("apply", "-f", "-", stdin=route(90, 10)).out.endswith("no change (version 2)\n")
    assert control.ctl("delete", "httproute", "echo-split").rc == 0
    s3 = a.wait_version(3)
    assert list(s3.http_routes) == []
    time.sleep(0.2)
    assert [s.version for _, s in a.snapshots] == [1, 2, 3]

    st = wait_until(lambda: (x := agent_status(control, "node-a")) and x["appliedVersion"] == 3 and x, what="ACK of v3")
    assert st["connected"] is True and st["nackReason"] == "" and st["peer"].startswith("ipv4:127.0.0.1:")


def test_ack_nack_in_status_and_wait(control, agents, tmp_path):
    assert control.ctl("apply", "-f", "-", stdin=BASE).rc == 0
    good = agents(control, "node-good")
    bad = agents(control, "node-bad", policy="nack", nack_reason="route echo-split: unknown filter 'x' (line 1)")
    good.wait_version(1)
    bad.wait_version(1)

    # --wait succeeds once every connected agent ACKed ... (node-bad NACKed v1, but v2 is waited for)
    bad.policy = "ack"
    f = write(str(tmp_path), "route.yaml", route(90, 10))
    r = control.ctl("apply", "-f", f, "--wait", "--timeout", "10")
    assert r.rc == 0, r
    assert r.out.splitlines()[-2:-1] == ["version 2"] and "version 2 applied by 2 agents in" in r.out.splitlines()[-1], r

    # ... fails with the refusing agent's reason ...
    bad.policy = "nack"
    r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "10", stdin=route(50, 50))
    assert r.rc == 1, r
    assert r.err.strip() == "remoractl: agent node-bad refused version 3: route echo-split: unknown filter 'x' (line 1)", r
    st = agent_status(control, "node-bad")
    assert st["connected"] and st["appliedVersion"] == 2 and st["nackVersion"] == 3
    assert st["nackReason"] == "route echo-split: unknown filter 'x' (line 1)"
    r = control.ctl("status")
    row = [ln for ln in r.out.splitlines() if ln.startswith("node-bad")][0]
    assert row.split()[:3] == ["node-bad", "yes", "2"] and "v3: route echo-split: unknown filter 'x' (line 1)" in row, r.out
    assert "version 3, 2 agents connected, 1 at the current version" in r.out

    # ... and times out when an agent stays silent, naming it
    bad.policy = "ignore"
    t0 = time.monotonic()
    r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "1", stdin=route(10, 90))
    took = time.monotonic() - t0
    assert r.rc == 4, r
    assert "timed out after 1s waiting for version 4; not applied yet by: node-bad (at version 2)" in r.err, r
    assert 0.9 < took < 5, took

    # waiting again for a version every agent has is immediate
    bad.policy = "ack"
    r = control.ctl("apply", "-f", "-", "--wait", stdin=route(11, 89))
    assert r.rc == 0 and "version 5 applied by 2 agents" in r.out, r


def test_disconnect_and_reconnect(control, agents):
    assert control.ctl("apply", "-f", "-", stdin=BASE).rc == 0
    a = agents(control, "node-a")
    a.wait_version(1)
    wait_until(lambda: agent_status(control, "node-a")["appliedVersion"] == 1, what="ACK")
    a.close()
    st = wait_until(lambda: (x := agent_status(control, "node-a")) and not x["connected"] and x, what="disconnect")
    assert st["appliedVersion"] == 1
    # a disconnected agent does not hold up --wait
    r = control.ctl("apply", "-f", "-", "--wait", "--timeout", "5", stdin=route(1, 1))
    assert r.rc == 0 and "version 2 stored; no agent is connected" in r.out, r
    # it comes back, says what it serves, and gets the current version
    b = agents(control, "node-a", applied_version=1)
    assert b.wait_version(2).version == 2
    st = wait_until(lambda: (x := agent_status(control, "node-a")) and x["appliedVersion"] == 2 and x, what="ACK v2")
    assert st["connected"]
    assert len(status_json(control)["agents"]) == 1


def test_same_node_id_replaces_old_stream(control, agents):
    old = agents(control, "node-x")
    old.wait_version(0)
    new = agents(control, "node-x")
    new.wait_version(0)
    err = old.wait_ended(5)
    assert err is not None and err.code() == grpc.StatusCode.ABORTED and "newer stream" in err.details()
    assert control.ctl("apply", "-f", "-", stdin=BASE).rc == 0
    assert new.wait_version(1).version == 1
    assert [a["node"] for a in status_json(control)["agents"]] == ["node-x"]


def test_protocol_errors(control, agents):
    d = pb().discovery
    a2 = agents(control, "node-b")
    a2.wait_version(0)
    # a stream whose first message is an ACK is refused
    import queue
    ch = control.grpc_channel(token=control.fake_agent_token(), options=[("grpc.use_local_subchannel_pool", 1)])
    admin_ch = control.grpc_channel(token=control.admin_token())
    try:
        method = ch.stream_stream("/remora.v1.Discovery/StreamSnapshots", request_serializer=d.AgentMessage.SerializeToString,
                                  response_deserializer=d.Snapshot.FromString)
        q = queue.Queue()
        q.put(d.AgentMessage(ack=d.Ack(version=1, nonce="x")))

        def reqs():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m
        call = method(reqs(), timeout=5)
        try:
            list(call)
            raise AssertionError("the stream did not fail")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "first message must be a Hello" in e.details()
        finally:
            q.put(None)
        # a bad node id
        bad = agents(control, "has space")
        err = bad.wait_ended(5)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "node_id" in err.details()
        # garbage bytes
        raw = ch.stream_stream("/remora.v1.Discovery/StreamSnapshots")
        try:
            list(raw(iter([b"\xff\xff\xff"]), timeout=5))
            raise AssertionError("garbage accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the admin API refuses garbage too, and the server still works afterwards
        try:
            admin_ch.unary_unary("/remora.v1.Admin/Apply")(b"\xff\xff\xff", timeout=5)
            raise AssertionError("garbage accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        ch.close()
        admin_ch.close()
    assert control.ctl("apply", "-f", "-", stdin=BASE).rc == 0
    assert a2.wait_version(1).version == 1


def test_control_restart_agents_resync(control_factory, agents, tmp_path):
    cp = control_factory()
    assert cp.ctl("apply", "-f", "-", stdin=BASE + "---\n" + route(90, 10)).rc == 0
    a = agents(cp, "node-a")
    s = a.wait_version(1)
    wait_until(lambda: agent_status(cp, "node-a")["appliedVersion"] == 1, what="ACK")
    assert cp.stop() == 0
    err = a.wait_ended(5)
    assert err is not None and err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    cp.start()
    # the agent reconnects saying which version it serves; same version, same content
    b = agents(cp, "node-a", applied_version=1)
    s2 = b.wait_version(1)
    assert s2.version == 1
    assert s2.services == s.services and s2.http_routes == s.http_routes
    st = agent_status(cp, "node-a")
    assert st["connected"] and st["appliedVersion"] == 1
    r = cp.ctl("apply", "-f", "-", "--wait", stdin=route(80, 20))
    assert r.rc == 0 and "version 2 applied by 1 agent in" in r.out, r
