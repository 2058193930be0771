"""The test Kubernetes API server (tests/tools/kube_api.py): the list-and-watch protocol, writes,
conflicts and TokenReview with a raw client, and the real kubectl against it.

Remora's Kubernetes mode is tested against this server, so it is tested first: if it drifts from the
API server's protocol, the tests of the control plane built on it prove nothing."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import kube_objects as ko
from kube_api import ApiClient, KubeApiServer
from procutil import Proc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBECTL = os.path.join(REPO, "tests", "tools", "kube", "bin", "kubectl")
TOOLS = os.path.join(REPO, "tests", "tools")
NODE_CHECK = os.path.join(TOOLS, "kube", "check_manifests.js")


@pytest.fixture
def srv(tmp_path):
    s = KubeApiServer(tls=True, workdir=str(tmp_path / "api"), bookmark_interval=0.3)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def cli(srv):
    return ApiClient(srv.url, srv.token, srv.ca_file, timeout=5)


CM = "/api/v1/namespaces/default/configmaps"


def cm(name, data=None, labels=None, ns="default"):
    return ko.config_map(name, ns, data or {"k": name}, labels=labels)


def collect(cli, path, n, timeout=5.0, bookmarks=True):
    """The events of a watch until n of them (n not counting bookmarks if bookmarks is False) or its end."""
    out = []
    for ev in cli.watch(path, timeout=timeout):
        out.append(ev)
        if len([e for e in out if bookmarks or e["type"] != "BOOKMARK"]) >= n:
            break
    return out


# --- authentication and discovery -----------------------------------------------------------------------------


def test_auth_and_discovery(srv, cli):
    st, body = cli.request("GET", CM, token="wrong")
    assert st == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401
    st, body = cli.request("GET", CM, token="")
    assert st == 401
    st, _ = cli.request("GET", "/healthz", token="")
    assert st == 200
    st, body = cli.request("GET", "/api")
    assert st == 200 and body["versions"] == ["v1"]
    st, body = cli.request("GET", "/apis")
    names = [g["name"] for g in body["groups"]]
    assert {"remora.dev", "discovery.k8s.io", "authentication.k8s.io"} <= set(names)
    st, body = cli.request("GET", "/apis/remora.dev/v1")
    plurals = {r["name"]: r for r in body["resources"]}
    for p in ("services", "httproutes", "grpcroutes", "faultinjections", "backendtrafficpolicies",
              "ratelimitpolicies", "telemetries", "authorizationpolicies", "meshtlses", "egresspolicies"):
        assert plurals[p]["namespaced"] is True and "watch" in plurals[p]["verbs"]
        assert p + "/status" in plurals
    assert plurals["services"]["kind"] == "Service" and plurals["services"]["shortNames"] == ["rsvc"]
    st, body = cli.request("GET", "/api/v1")
    core = {r["name"]: r for r in body["resources"]}
    assert core["namespaces"]["namespaced"] is False and core["pods"]["kind"] == "Pod"
    st, body = cli.request("GET", "/apis/nope.example/v1")
    assert st == 404 and body["reason"] == "NotFound"


# --- list -----------------------------------------------------------------------------------------------------


def test_list_shape_selectors_and_objects(srv, cli):
    for o in ko.service_with_pods("web", "shop", [("web-0", "10.244.1.5"), ("web-1", "10.244.1.6")],
                                  ports=[ko.svc_port("http", 80, 8080, app_protocol="http")]):
        srv.put(o)
    srv.put(ko.remora("HTTPRoute", "r1", "shop", spec={"parentRefs": [{"name": "web"}]}))
    st, body = cli.request("GET", "/api/v1/namespaces/shop/services")
    assert st == 200 and body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
    assert isinstance(body["metadata"]["resourceVersion"], str)
    item = body["items"][0]
    assert "kind" not in item and "apiVersion" not in item  # the real API omits them in built-in lists
    assert item["spec"]["ports"][0] == {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080,
                                        "appProtocol": "http"}
    m = item["metadata"]
    assert m["namespace"] == "shop" and m["uid"] and m["creationTimestamp"].endswith("Z") and m["generation"] == 1
    # custom resources keep apiVersion/kind in list items (unstructured storage)
    st, body = cli.request("GET", "/apis/remora.dev/v1/httproutes")
    assert body["kind"] == "HTTPRouteList" and body["items"][0]["kind"] == "HTTPRoute"
    # slices by service name (label), all namespaces
    st, body = cli.request("GET", "/apis/discovery.k8s.io/v1/endpointslices"
                                  "?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
    assert st == 200 and len(body["items"]) == 1
    sl = body["items"][0]
    assert sl["addressType"] == "IPv4" and sl["endpoints"][0]["targetRef"]["kind"] == "Pod"
    assert sl["endpoints"][0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    st, body = cli.request("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dweb-1")
    assert [p["metadata"]["name"] for p in body["items"]] == ["web-1"]
    assert body["items"][0]["status"]["podIP"] == "10.244.1.6"
    assert body["items"][0]["spec"]["serviceAccountName"] == "web"
    # set-based and inequality selectors
    for name, labels in (("a", {"tier": "x"}), ("b", {"tier": "y"}), ("c", {"tier": "z"}), ("d", {})):
        srv.put(cm(name, labels=labels))
    q = lambda sel: sorted(i["metadata"]["name"] for i in cli.request(  # noqa: E731
        "GET", CM + "?labelSelector=" + sel.replace(" ", "%20").replace(",", "%2C"))[1]["items"])
    assert q("tier in (x,y)") == ["a", "b"]
    assert q("tier notin (x)") == ["b", "c", "d"]
    assert q("tier!=y") == ["a", "c", "d"]
    assert q("tier") == ["a", "b", "c"]
    assert q("!tier") == ["d"]
    assert q("tier in (x,y),tier!=x") == ["b"]
    st, body = cli.request("GET", CM + "?labelSelector=tier%20in%20(x")
    assert st == 400 and body["reason"] == "BadRequest"
    st, body = cli.request("GET", CM + "?fieldSelector=metadata.name!%3Da")
    assert "a" not in [i["metadata"]["name"] for i in body["items"]]


def test_pagination_is_a_consistent_snapshot(srv, cli):
    for i in range(7):
        srv.put(cm(f"c{i}"))
    st, p1 = cli.request("GET", CM + "?limit=3")
    assert [i["metadata"]["name"] for i in p1["items"]] == ["c0", "c1", "c2"]
    assert p1["metadata"]["remainingItemCount"] == 4 and p1["metadata"]["continue"]
    rv = p1["metadata"]["resourceVersion"]
    # changes between pages do not show: the next pages are the state at the first page's resourceVersion
    srv.put(cm("c4", {"k": "changed"}))
    srv.delete("v1", "ConfigMap", "default", "c5")
    srv.put(cm("c9"))
    st, p2 = cli.request("GET", CM + "?limit=3&continue=" + p1["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in p2["items"]] == ["c3", "c4", "c5"]
    assert p2["items"][1]["data"] == {"k": "c4"} and p2["metadata"]["resourceVersion"] == rv
    st, p3 = cli.request("GET", CM + "?limit=3&continue=" + p2["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in p3["items"]] == ["c6"] and "continue" not in p3["metadata"]
    # a fresh list sees the changes; a continue token older than the compaction answers 410
    st, p1 = cli.request("GET", CM + "?limit=2")
    srv.put(cm("c10"))
    srv.compact()
    st, body = cli.request("GET", CM + "?limit=2&continue=" + p1["metadata"]["continue"])
    assert st == 410 and body["reason"] == "Expired" and body["kind"] == "Status"
    st, full = cli.request("GET", CM)
    names = [i["metadata"]["name"] for i in full["items"]]
    assert "c5" not in names and "c9" in names and "c10" in names


# --- watch ----------------------------------------------------------------------------------------------------


def test_watch_events_in_order_with_bookmarks(srv, cli):
    srv.put(cm("before"))
    st, lst = cli.request("GET", CM)
    rv = lst["metadata"]["resourceVersion"]
    events = []
    path = f"{CM}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=10"
    t = threading.Thread(target=lambda: events.extend(collect(cli, path, 4, timeout=5, bookmarks=False)))
    t.start()
    time.sleep(0.2)
    srv.put(cm("a"))
    srv.put(cm("a", {"k": "v2"}))
    srv.put(ko.config_map("other", "kube-system"))  # another namespace: not in this watch
    srv.delete("v1", "ConfigMap", "default", "a")
    time.sleep(0.8)  # at least one bookmark interval (0.3 s)
    srv.put(cm("b"))
    t.join(10)
    types = [e["type"] for e in events]
    real = [e for e in events if e["type"] != "BOOKMARK"]
    assert [e["type"] for e in real][:4] == ["ADDED", "MODIFIED", "DELETED", "ADDED"], types
    assert [e["object"]["metadata"]["name"] for e in real[:4]] == ["a", "a", "a", "b"]
    assert real[1]["object"]["data"] == {"k": "v2"} and real[0]["object"]["kind"] == "ConfigMap"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    bm = [e for e in events if e["type"] == "BOOKMARK"]
    assert bm, types
    assert set(bm[0]["object"]["metadata"]) <= {"resourceVersion", "creationTimestamp"}
    assert bm[0]["object"]["kind"] == "ConfigMap" and bm[0]["object"]["apiVersion"] == "v1"


def test_concurrent_writers_and_watchers_see_one_history(srv, cli):
    """Three watchers and two writers at once: every watcher gets every event once, in resourceVersion order,
    and replaying its events over the first list gives the final list (what a list-watch cache relies on)."""
    for i in range(5):
        srv.put(cm(f"s{i}"))
    st, first = cli.request("GET", CM)
    rv0 = first["metadata"]["resourceVersion"]
    n_writes = 2 * 60  # a few are 409s (both writers create the same name) and no-op patches of nothing
    results = [[] for _ in range(3)]

    def watch(out):
        for ev in cli.watch(f"{CM}?watch=1&resourceVersion={rv0}&allowWatchBookmarks=true&timeoutSeconds=20",
                            timeout=10):
            if ev["type"] != "BOOKMARK":
                out.append(ev)
            if ev["object"]["metadata"].get("name") == "end":
                return

    def write(tag):
        c = ApiClient(srv.url, srv.token, srv.ca_file, timeout=5)
        for i in range(60):
            name = f"s{i % 7}"
            if i % 5 == 4:
                code = c.request("DELETE", f"{CM}/{name}")[0]
                if code == 404:
                    code = c.request("POST", CM, cm(name, {"k": tag}))[0]
            else:
                code = c.request("PATCH", f"{CM}/{name}", {"data": {"k": f"{tag}{i}"}},
                                 content_type="application/merge-patch+json")[0]
                if code == 404:
                    code = c.request("POST", CM, cm(name, {"k": f"{tag}{i}"}))[0]
            assert code in (200, 201, 409), code

    watchers = [threading.Thread(target=watch, args=(r,)) for r in results]
    for t in watchers:
        t.start()
    writers = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
    for t in writers:
        t.start()
    for t in writers:
        t.join(30)
    st, final = cli.request("GET", CM)
    last = int(final["metadata"]["resourceVersion"])
    n_events = last - int(rv0)
    srv.put(cm("end"))
    for t in watchers:
        t.join(15)
    assert n_events >= n_writes * 3 // 4
    state = {i["metadata"]["name"]: i["data"] for i in first["items"]}
    for r in results:
        got = r[:n_events]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
        assert rvs == list(range(int(rv0) + 1, last + 1))  # one global counter, no gap, no repeat
    assert results[0][:n_events] == results[1][:n_events] == results[2][:n_events]
    for e in results[0][:n_events]:
        name = e["object"]["metadata"]["name"]
        if e["type"] == "DELETED":
            state.pop(name)
        else:
            state[name] = e["object"]["data"]
    assert state == {i["metadata"]["name"]: i["data"] for i in final["items"]}


def test_watch_from_zero_starts_with_current_state_and_times_out(srv, cli):
    srv.put(cm("x"))
    srv.put(cm("y"))
    t0 = time.monotonic()
    events = list(cli.watch(f"{CM}?watch=true&timeoutSeconds=1", timeout=5))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "x"), ("ADDED", "y")]
    assert 0.9 < time.monotonic() - t0 < 3  # the stream ends after timeoutSeconds, without bookmarks
    # sendInitialEvents: the initial state, then a bookmark marking its end
    events = collect(cli, f"{CM}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                          f"&allowWatchBookmarks=true&timeoutSeconds=2", 3)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_selector_moves_are_added_and_deleted(srv, cli):
    srv.put(cm("m", labels={"app": "a"}))
    rv = cli.request("GET", CM)[1]["metadata"]["resourceVersion"]
    events = []
    path = f"{CM}?watch=1&resourceVersion={rv}&labelSelector=app%3Db&timeoutSeconds=5"
    t = threading.Thread(target=lambda: events.extend(collect(cli, path, 2, timeout=5)))
    t.start()
    time.sleep(0.2)
    srv.put(cm("m", labels={"app": "b"}))  # moves into the selector: ADDED
    srv.put(cm("m", labels={"app": "c"}))  # moves out: DELETED
    t.join(10)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


def test_410_gone_forces_a_relist(srv, cli):
    srv.put(cm("a"))
    old_rv = cli.request("GET", CM)[1]["metadata"]["resourceVersion"]
    srv.put(cm("b"))
    srv.put(cm("a", {"k": "new"}))
    srv.compact()
    # a watch from before the compaction: one ERROR event with a 410 Expired Status, then the stream ends
    events = list(cli.watch(f"{CM}?watch=1&resourceVersion={old_rv}&allowWatchBookmarks=true", timeout=5))
    assert len(events) == 1 and events[0]["type"] == "ERROR", events
    st = events[0]["object"]
    assert st["kind"] == "Status" and st["code"] == 410 and st["reason"] == "Expired"
    assert st["message"].startswith(f"too old resource version: {old_rv} (")
    # an exact list at that version: HTTP 410
    code, body = cli.request("GET", f"{CM}?resourceVersion={old_rv}&resourceVersionMatch=Exact")
    assert code == 410 and body["reason"] == "Expired"
    # the relist: current state and a resourceVersion to watch from
    code, lst = cli.request("GET", CM)
    assert {i["metadata"]["name"]: i["data"] for i in lst["items"]} == {"a": {"k": "new"}, "b": {"k": "b"}}
    new_rv = lst["metadata"]["resourceVersion"]
    events = []
    t = threading.Thread(target=lambda: events.extend(
        collect(cli, f"{CM}?watch=1&resourceVersion={new_rv}&timeoutSeconds=5", 1)))
    t.start()
    time.sleep(0.2)
    srv.put(cm("c"))
    t.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "c")]
    # an exact list of a version still known is the state at that version
    code, lst = cli.request("GET", f"{CM}?resourceVersion={new_rv}&resourceVersionMatch=Exact")
    assert code == 200 and sorted(i["metadata"]["name"] for i in lst["items"]) == ["a", "b"]


def test_close_watches_and_fail_next(srv, cli):
    done = threading.Event()
    t0 = time.monotonic()

    def run():
        try:  # the connection is closed under the stream (as when an API server restarts)
            list(cli.watch(f"{CM}?watch=1&timeoutSeconds=30", timeout=10))
        except OSError:
            pass
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    srv.close_watches()
    assert done.wait(5) and time.monotonic() - t0 < 5
    t.join(5)
    srv.fail_next(2, 503, retry_after=1)
    assert cli.request("GET", CM)[0] == 503
    code, body = cli.request("GET", CM)
    assert code == 503 and body["reason"] == "ServiceUnavailable"
    assert cli.request("GET", CM)[0] == 200
    assert ("GET", CM) in srv.requests


# --- writes ---------------------------------------------------------------------------------------------------


def test_create_replace_conflict_and_delete(srv, cli):
    st, created = cli.request("POST", CM, cm("w"))
    assert st == 201 and created["metadata"]["resourceVersion"] and created["metadata"]["uid"]
    st, body = cli.request("POST", CM, cm("w"))
    assert st == 409 and body["reason"] == "AlreadyExists" and body["details"] == {"name": "w", "kind": "configmaps"}
    # replace with the current resourceVersion works; with a stale one: 409 Conflict
    obj = dict(created, data={"k": "2"})
    st, updated = cli.request("PUT", f"{CM}/w", obj)
    assert st == 200 and int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert updated["metadata"]["uid"] == created["metadata"]["uid"] and updated["metadata"]["generation"] == 2
    st, body = cli.request("PUT", f"{CM}/w", dict(created, data={"k": "3"}))
    assert st == 409 and body["reason"] == "Conflict" and "the object has been modified" in body["message"]
    # without a resourceVersion: unconditional
    nover = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "data": {"k": "4"}}
    assert cli.request("PUT", f"{CM}/w", nover)[0] == 200
    # not found, invalid, wrong kind for the path, missing namespace
    st, body = cli.request("PUT", f"{CM}/nope", dict(nover, metadata={"name": "nope"}))
    assert st == 404 and body["reason"] == "NotFound" and body["message"] == 'configmaps "nope" not found'
    st, body = cli.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert st == 422 and body["reason"] == "Invalid" and body["details"]["causes"][0]["field"] == "metadata.name"
    st, body = cli.request("POST", CM, ko.remora("HTTPRoute", "x"))
    assert st == 422 and body["reason"] == "Invalid"
    st, body = cli.request("POST", "/api/v1/namespaces/nowhere/configmaps", cm("z", ns="nowhere"))
    assert st == 404 and body["message"] == 'namespaces "nowhere" not found'
    st, body = cli.request("POST", CM, b"\x00garbage", content_type="application/vnd.kubernetes.protobuf")
    assert st == 415
    # generateName
    st, body = cli.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"generateName": "gen-"}})
    assert st == 201 and body["metadata"]["name"].startswith("gen-") and len(body["metadata"]["name"]) == 9
    # delete: the object comes back, then 404; preconditions
    st, body = cli.request("DELETE", f"{CM}/w", {"preconditions": {"uid": "not-it"}})
    assert st == 409
    st, body = cli.request("DELETE", f"{CM}/w")
    assert st == 200 and body["metadata"]["name"] == "w"
    assert cli.request("GET", f"{CM}/w")[0] == 404
    assert cli.request("DELETE", f"{CM}/w")[0] == 404


def test_status_subresource_and_generation(srv, cli):
    base = "/apis/remora.dev/v1/namespaces/default/httproutes"
    route = ko.remora("HTTPRoute", "r", spec={"hostnames": ["a"]})
    route["status"] = {"ignored": True}
    st, obj = cli.request("POST", base, route)
    assert st == 201 and "status" not in obj and obj["metadata"]["generation"] == 1
    cond = {"parents": [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1,
                                         "reason": "Accepted", "message": "",
                                         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}
    st, obj = cli.request("PUT", f"{base}/r/status", dict(obj, status=cond, spec={"hostnames": ["ignored"]}))
    assert st == 200 and obj["status"] == cond and obj["spec"] == {"hostnames": ["a"]}
    assert obj["metadata"]["generation"] == 1  # status writes do not bump generation
    # a main-resource write keeps the status and bumps generation when the spec changes
    st, obj = cli.request("PUT", f"{base}/r", dict(obj, spec={"hostnames": ["b"]}, status={"x": 1}))
    assert obj["status"] == cond and obj["metadata"]["generation"] == 2
    # metadata-only changes do not bump generation
    st, obj = cli.request("PATCH", f"{base}/r", {"metadata": {"labels": {"l": "1"}}},
                          content_type="application/merge-patch+json")
    assert st == 200 and obj["metadata"]["generation"] == 2 and obj["metadata"]["labels"] == {"l": "1"}
    # status PATCH
    st, obj = cli.request("PATCH", f"{base}/r/status", {"status": {"parents": []}},
                          content_type="application/merge-patch+json")
    assert st == 200 and obj["status"] == {"parents": []}
    # a no-op write keeps the resourceVersion
    rv = obj["metadata"]["resourceVersion"]
    st, obj = cli.request("PATCH", f"{base}/r", {"metadata": {"labels": {"l": "1"}}},
                          content_type="application/merge-patch+json")
    assert obj["metadata"]["resourceVersion"] == rv


def test_patch_kinds(srv, cli):
    srv.put(ko.service("web", "default", ports=[ko.svc_port("http", 80, 8080), ko.svc_port("admin", 81)]))
    svc = "/api/v1/namespaces/default/services/web"
    # RFC 7386 merge patch: null deletes, objects merge, lists replace
    st, obj = cli.request("PATCH", svc, {"metadata": {"labels": {"a": "1"}}, "spec": {"selector": None}},
                          content_type="application/merge-patch+json")
    assert st == 200 and obj["metadata"]["labels"] == {"a": "1"} and "selector" not in obj["spec"]
    # the API server's defaults still apply: a port added without protocol and targetPort gets them
    st, obj = cli.request("PATCH", svc, {"spec": {"sessionAffinity": None, "ports": [{"name": "x", "port": 82}]}},
                          content_type="application/merge-patch+json")
    assert obj["spec"]["sessionAffinity"] == "None" and obj["spec"]["clusterIP"] == "10.96.0.10"
    assert obj["spec"]["ports"] == [{"name": "x", "port": 82, "protocol": "TCP", "targetPort": 82}]
    srv.put(ko.service("web", "default", ports=[ko.svc_port("http", 80, 8080), ko.svc_port("admin", 81)],
                       labels={"a": "1"}))
    # RFC 6902 JSON patch
    st, obj = cli.request("PATCH", svc, [{"op": "test", "path": "/spec/ports/0/port", "value": 80},
                                         {"op": "replace", "path": "/spec/ports/0/port", "value": 8000},
                                         {"op": "add", "path": "/metadata/labels/b", "value": "2"}],
                          content_type="application/json-patch+json")
    assert st == 200 and obj["spec"]["ports"][0]["port"] == 8000 and obj["metadata"]["labels"]["b"] == "2"
    st, body = cli.request("PATCH", svc, [{"op": "test", "path": "/spec/ports/0/port", "value": 1}],
                           content_type="application/json-patch+json")
    assert st == 422
    # strategic merge patch: ports merge by port, $patch: delete removes one
    st, obj = cli.request("PATCH", svc, {"spec": {"ports": [{"port": 81, "name": "admin2"},
                                                            {"port": 8000, "$patch": "delete"}]}},
                          content_type="application/strategic-merge-patch+json")
    assert st == 200 and [(p["name"], p["port"]) for p in obj["spec"]["ports"]] == [("admin2", 81)]
    # server-side apply: creates, then merges the given fields; needs a fieldManager
    rsvc = "/apis/remora.dev/v1/namespaces/default/services/api"
    doc = "apiVersion: remora.dev/v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  ports: [{port: 80}]\n"
    assert cli.request("PATCH", rsvc, doc, content_type="application/apply-patch+yaml")[0] == 400
    st, obj = cli.request("PATCH", rsvc + "?fieldManager=remoractl", doc, content_type="application/apply-patch+yaml")
    assert st == 201 and obj["spec"] == {"ports": [{"port": 80}]} and obj["kind"] == "Service"
    st, obj = cli.request("PATCH", rsvc + "?fieldManager=remoractl&force=true",
                          doc.replace("[{port: 80}]", "[{port: 81}]"), content_type="application/apply-patch+yaml")
    assert st == 200 and obj["spec"]["ports"] == [{"port": 81}] and obj["metadata"]["generation"] == 2
    assert cli.request("PATCH", "/apis/remora.dev/v1/namespaces/default/services/none", {"spec": {}},
                       content_type="application/merge-patch+json")[0] == 404
    # field ownership: a field its manager applies no more goes; another manager's field stays; a
    # different value for a field another manager owns is a conflict unless forced
    apply = lambda body, mgr, force=False: cli.request(  # noqa: E731
        "PATCH", f"{rsvc}?fieldManager={mgr}" + ("&force=true" if force else ""), body,
        content_type="application/apply-patch+yaml")
    base = "apiVersion: remora.dev/v1\nkind: Service\nmetadata:\n  name: api\n"
    st, obj = apply(base + "spec:\n  ports: [{port: 81}]\n  protocol: http1\n", "remoractl")
    assert st == 200 and obj["spec"] == {"ports": [{"port": 81}], "protocol": "http1"}
    st, obj = apply(base + "  labels: {team: a}\n", "other")
    assert st == 200 and obj["metadata"]["labels"] == {"team": "a"} and obj["spec"]["protocol"] == "http1"
    st, obj = apply(base + "spec:\n  ports: [{port: 81}]\n", "remoractl")
    assert st == 200 and obj["spec"] == {"ports": [{"port": 81}]} and obj["metadata"]["labels"] == {"team": "a"}
    managers = {e["manager"]: e for e in obj["metadata"]["managedFields"]}
    assert managers["remoractl"]["fieldsV1"] == {"f:spec": {"f:ports": {}}}
    assert managers["remoractl"]["operation"] == "Apply" and managers["other"]["fieldsType"] == "FieldsV1"
    st, body = apply(base + "spec:\n  ports: [{port: 82}]\n", "other")
    assert st == 409 and body["reason"] == "Conflict" and 'conflict with "remoractl": .spec.ports' in body["message"]
    st, obj = apply(base + "spec:\n  ports: [{port: 82}]\n", "other", force=True)
    assert st == 200 and obj["spec"]["ports"] == [{"port": 82}]
    st, obj = apply(base + "spec:\n  protocol: tcp\n", "remoractl")  # ports belong to "other" now: they stay
    assert obj["spec"] == {"ports": [{"port": 82}], "protocol": "tcp"}


def test_finalizers_and_namespace_deletion(srv, cli):
    srv.put(ko.namespace("shop"))
    obj = cm("f", ns="shop")
    obj["metadata"]["finalizers"] = ["remora.dev/cleanup"]
    srv.put(obj)
    srv.put(cm("g", ns="shop"))
    path = "/api/v1/namespaces/shop/configmaps/f"
    st, body = cli.request("DELETE", path)
    assert st == 200 and body["metadata"]["deletionTimestamp"]
    st, body = cli.request("GET", path)
    assert st == 200 and body["metadata"]["deletionTimestamp"]
    st, body = cli.request("PATCH", path, {"metadata": {"finalizers": None}},
                           content_type="application/merge-patch+json")
    assert st == 200
    assert cli.request("GET", path)[0] == 404
    # the garbage collector: a Service's EndpointSlice goes with it
    for o in ko.service_with_pods("web", "shop", [("web-0", "10.244.1.5")]):
        srv.put(o)
    assert len(srv.list("discovery.k8s.io/v1", "EndpointSlice", "shop")) == 1
    assert cli.request("DELETE", "/api/v1/namespaces/shop/services/web")[0] == 200
    assert srv.list("discovery.k8s.io/v1", "EndpointSlice", "shop") == []
    assert len(srv.list("v1", "Pod", "shop")) == 1
    st, _ = cli.request("DELETE", "/api/v1/namespaces/shop")
    assert st == 200
    assert srv.list("v1", "ConfigMap", "shop") == [] and srv.list("v1", "Pod", "shop") == []


# --- TokenReview ----------------------------------------------------------------------------------------------


def test_token_review(srv, cli):
    srv.add_token("tok-web", username="system:serviceaccount:shop:web", audiences=["remora"], uid="u-1",
                  pod_name="web-0", pod_uid="p-1")
    srv.add_token("tok-other", username="system:serviceaccount:shop:web", audiences=["vault"])
    srv.add_token("tok-old", username="system:serviceaccount:shop:web", expired=True)
    path = "/apis/authentication.k8s.io/v1/tokenreviews"

    def review(token, audiences=("remora",)):
        st, body = cli.request("POST", path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                              "spec": {"token": token, "audiences": list(audiences)}})
        assert st == 201 and body["kind"] == "TokenReview"
        return body["status"]

    s = review("tok-web", ["remora", "other"])
    assert s["authenticated"] is True and s["audiences"] == ["remora"]
    assert s["user"]["username"] == "system:serviceaccount:shop:web" and s["user"]["uid"] == "u-1"
    assert "system:serviceaccounts:shop" in s["user"]["groups"]
    assert s["user"]["extra"] == {"authentication.kubernetes.io/pod-name": ["web-0"],
                                  "authentication.kubernetes.io/pod-uid": ["p-1"]}
    s = review("tok-other")
    assert s["authenticated"] is False and "audiences" in s["error"]
    s = review("tok-old")
    assert s["authenticated"] is False and "expired" in s["error"]
    s = review("nobody")
    assert s["authenticated"] is False and s["error"]
    srv.remove_token("tok-web")
    assert review("tok-web")["authenticated"] is False
    assert cli.request("GET", path)[0] == 405
    st, body = cli.request("POST", path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                          "spec": {}})
    assert st == 422


# --- the real kubectl ------------------------------------------------------------------------------------------


def _kubeconfig(srv, path):
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
           "clusters": [{"name": "t", "cluster": {"server": srv.url, "certificate-authority": srv.ca_file}}],
           "users": [{"name": "t", "user": {"tokenFile": srv.token_file}}],
           "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "shop"}}]}
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def kubectl(kc, *args, input=None, check=True, timeout=20):
    p = subprocess.run([KUBECTL, "--kubeconfig", kc, *args], input=input, capture_output=True, text=True,
                       timeout=timeout, env={"PATH": "/usr/bin:/bin", "HOME": os.path.dirname(kc)})
    if check:
        assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
    return p


@pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="tests/tools/kube/bin/kubectl missing (install-deps)")
def test_real_kubectl(srv, tmp_path):
    kc = _kubeconfig(srv, str(tmp_path / "kubeconfig"))
    srv.put(ko.namespace("shop"))
    manifest = tmp_path / "m.yaml"
    manifest.write_text("""apiVersion: remora.dev/v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
""")
    out = kubectl(kc, "create", "-f", str(manifest)).stdout
    assert "service.remora.dev/web created" in out and "service/web created" in out
    assert kubectl(kc, "create", "-f", str(manifest), check=False).returncode != 0  # AlreadyExists
    core = json.loads(kubectl(kc, "get", "service", "web", "-o", "json").stdout)
    assert core["spec"]["clusterIP"].startswith("10.") and core["spec"]["type"] == "ClusterIP"
    out = kubectl(kc, "get", "rsvc").stdout
    assert out.split("\n")[0].split() == ["NAME", "AGE"] and out.split("\n")[1].split()[0] == "web"
    # watch: an update made while kubectl get -w runs shows up
    w = subprocess.Popen([KUBECTL, "--kubeconfig", kc, "get", "services.remora.dev", "-w", "-o", "name",
                          "--request-timeout", "10s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    try:
        time.sleep(1.0)
        srv.put(ko.remora("Service", "late", "shop", spec={"ports": [{"port": 90}]}))
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "service.remora.dev/late" not in lines:
            line = w.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert "service.remora.dev/late" in lines, lines
    finally:
        w.kill()
        w.wait(5)
    # apply (client-side: three-way merge patches), changed, and server-side
    manifest.write_text(manifest.read_text().replace("port: 80\n", "port: 81\n", 1))
    out = kubectl(kc, "apply", "-f", str(manifest)).stdout
    assert "service.remora.dev/web configured" in out
    assert srv.get("remora.dev/v1", "Service", "shop", "web")["spec"]["ports"] == [{"port": 81}]
    out = kubectl(kc, "apply", "-f", str(manifest)).stdout
    assert "service.remora.dev/web unchanged" in out
    manifest.write_text(manifest.read_text().replace("targetPort: 8080", "targetPort: 9090"))
    kubectl(kc, "apply", "-f", str(manifest))
    assert srv.get("v1", "Service", "shop", "web")["spec"]["ports"][0]["targetPort"] == 9090
    ssa = tmp_path / "ssa.yaml"
    ssa.write_text("apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  hostnames: [a]\n")
    out = kubectl(kc, "apply", "--server-side", "-f", str(ssa)).stdout
    assert "httproute.remora.dev/r serverside-applied" in out
    assert srv.get("remora.dev/v1", "HTTPRoute", "shop", "r")["spec"] == {"hostnames": ["a"]}
    kubectl(kc, "patch", "httproute", "r", "--type=merge", "-p", '{"spec":{"hostnames":["b"]}}')
    assert srv.get("remora.dev/v1", "HTTPRoute", "shop", "r")["spec"] == {"hostnames": ["b"]}
    out = kubectl(kc, "delete", "-f", str(manifest)).stdout
    assert 'service.remora.dev "web" deleted' in out and 'service "web" deleted' in out
    assert srv.get("remora.dev/v1", "Service", "shop", "web") is None
    assert "NotFound" in kubectl(kc, "get", "rsvc", "web", check=False).stderr
    # wrong token: kubectl reports the 401
    bad = tmp_path / "badtoken"
    bad.write_text("nope")
    cfg = json.loads(open(kc).read())
    cfg["users"][0]["user"]["tokenFile"] = str(bad)
    with open(kc, "w") as f:
        json.dump(cfg, f)
    p = kubectl(kc, "get", "pods", check=False)
    assert p.returncode != 0 and "Unauthorized" in p.stderr


# --- process mode and object shapes ---------------------------------------------------------------------------


def test_process_mode(tmp_path):
    objs = tmp_path / "objs.yaml"
    objs.write_text("""apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: one, namespace: shop}
  data: {a: b}
---
apiVersion: remora.dev/v1
kind: MeshTLS
metadata: {name: default, namespace: shop}
spec: {mode: STRICT}
""")
    state = tmp_path / "state.json"
    p = Proc(["/usr/bin/python3", os.path.join(TOOLS, "kube_api.py"), "--port", "0", "--http", "--objects",
              str(objs), "--state-file", str(state), "--dir", str(tmp_path / "d")], str(tmp_path / "api.log"))
    try:
        deadline = time.monotonic() + 10
        while not state.exists() and time.monotonic() < deadline and p.alive():
            time.sleep(0.05)
        info = json.loads(state.read_text())
        assert info["url"].startswith("http://127.0.0.1:") and info["ca_file"] is None
        deadline = time.monotonic() + 5
        line = ""
        while time.monotonic() < deadline and not line.endswith("\n"):
            line = open(str(tmp_path / "api.log")).read()
            time.sleep(0.05)
        url, ca, tokf = line.split("\n")[0].split()
        assert url == info["url"] and ca == "-" and tokf == info["token_file"]
        c = ApiClient(url, open(tokf).read())
        st, body = c.request("GET", "/apis/remora.dev/v1/namespaces/shop/meshtlses/default")
        assert st == 200 and body["spec"] == {"mode": "STRICT"}
        assert c.request("GET", "/api/v1/namespaces/shop/configmaps/one")[1]["data"] == {"a": "b"}
        assert c.request("POST", "/__test/compact", {})[0] == 200
        tok = {"token": "t1", "username": "system:serviceaccount:shop:a"}
        assert c.request("POST", "/__test/tokens", tok)[0] == 200
        st, body = c.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "spec": {"token": "t1", "audiences": ["remora"]}})
        assert body["status"]["authenticated"] is True
        p.popen.send_signal(signal.SIGTERM)
        assert p.popen.wait(10) == 0
    finally:
        if p.alive():
            p.popen.kill()
            p.popen.wait(5)


@pytest.mark.skipif(not os.path.exists(NODE_CHECK), reason="tests/tools/kube/check_manifests.js missing")
def test_object_builders_match_the_kubernetes_schemas(tmp_path):
    objs = [ko.namespace("shop", {"remora.dev/inject": "enabled"}), ko.config_map("c", "shop", {"a": "b"}),
            ko.service("headless", "shop", cluster_ip=None), ko.service("ext", "shop", type_="ExternalName"),
            ko.service("dual", "shop", ipv6="fd00:10:96::a"), ko.pod("p6", "shop", ipv6="fd00::5"),
            ko.endpoint_slice("v6", "shop", [ko.endpoint("fd00::5", "p6", zone="z1", ready=False, terminating=True)],
                              address_type="IPv6")]
    objs += ko.service_with_pods("web", "shop", [("web-0", "10.244.1.5")],
                                 ports=[ko.svc_port("http", 80, 8080, app_protocol="http"),
                                        ko.svc_port("grpc", 9090, app_protocol="kubernetes.io/h2c"),
                                        ko.svc_port("admin", 81, "admin-port")])
    sl = objs[-1]
    assert sl["kind"] == "EndpointSlice" and [(p["name"], p["port"]) for p in sl["ports"]] == [
        ("http", 8080), ("grpc", 9090), ("admin", 81)]
    assert {"name": "admin-port", "containerPort": 81, "protocol": "TCP"} in objs[-2]["spec"]["containers"][0]["ports"]
    f = tmp_path / "objs.json"
    f.write_text("\n---\n".join(json.dumps(o) for o in objs))
    p = subprocess.run(["node", NODE_CHECK, "--crds", str(tmp_path), str(f)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


# --- CustomResourceDefinitions: the schemas a real API server enforces ------------------------------------------

WIDGET_CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget, shortNames: [wd]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue], default: red}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""


@pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="tests/tools/kube/bin/kubectl missing (install-deps)")
def test_crd_defines_served_and_validated_resources(srv, cli, tmp_path):
    kc = _kubeconfig(srv, str(tmp_path / "kubeconfig"))
    srv.put(ko.namespace("shop"))
    crd = tmp_path / "crd.yaml"
    crd.write_text(WIDGET_CRD)
    kubectl(kc, "apply", "-f", str(crd))
    assert "widgets.example.com" in kubectl(kc, "get", "crd").stdout
    kubectl(kc, "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
    st, body = cli.request("GET", "/apis/example.com/v1")
    assert st == 200 and body["resources"][0]["shortNames"] == ["wd"]
    w = tmp_path / "w.yaml"
    w.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, tags: [a, b]}\n")
    kubectl(kc, "create", "-f", str(w))
    got = srv.get("example.com/v1", "Widget", "shop", "w1")
    assert got["spec"] == {"size": 3, "tags": ["a", "b"], "color": "red"}  # defaulted from the schema
    # kubectl get prints the CRD's columns (a Table from the server)
    got["status"] = {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}
    srv.put(got)
    lines = kubectl(kc, "get", "wd").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "READY", "AGE"] and lines[1].split()[:3] == ["w1", "3", "True"]
    # kubectl's strict field validation: an unknown field is an error; the schema's rules: 422 Invalid
    w.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 3, shape: round}\n")
    p = kubectl(kc, "create", "-f", str(w), check=False)
    assert p.returncode != 0 and 'unknown field "spec.shape"' in p.stderr
    base = "/apis/example.com/v1/namespaces/shop/widgets"
    st, body = cli.request("POST", base, {"apiVersion": "example.com/v1", "kind": "Widget",
                                          "metadata": {"name": "w3"}, "spec": {"size": 11, "tags": ["a", "a"]}})
    assert st == 422 and body["reason"] == "Invalid"
    fields = sorted(c["field"] for c in body["details"]["causes"])
    assert fields == ["spec.size", "spec.tags[1]"], body
    st, body = cli.request("POST", base, {"apiVersion": "example.com/v1", "kind": "Widget",
                                          "metadata": {"name": "w4"}, "spec": {}})
    assert st == 422 and body["details"]["causes"][0] == {"reason": "FieldValueRequired", "message": "Required value",
                                                          "field": "spec.size"}
    # without Strict the unknown field is dropped (pruned) with a warning, as the API server does
    st, body = cli.request("POST", base, {"apiVersion": "example.com/v1", "kind": "Widget",
                                          "metadata": {"name": "w5"}, "spec": {"size": 1, "shape": "x"}})
    assert st == 201 and "shape" not in body["spec"]
    # deleting the CRD deletes its objects and the resource is no longer served
    kubectl(kc, "delete", "-f", str(crd))
    assert cli.request("GET", base)[0] == 404
    assert srv.get("v1", "Namespace", None, "shop") is not None


CHART_CRDS = os.path.join(REPO, "helm", "remora", "crds")


@pytest.mark.skipif(not os.path.isdir(CHART_CRDS), reason="helm/remora/crds not there")
def test_chart_crds_loaded(tmp_path):
    with KubeApiServer(tls=False, workdir=str(tmp_path / "api"), crds=CHART_CRDS) as s:
        c = ApiClient(s.url, s.token)
        st, body = c.request("GET", "/apis/remora.dev/v1")
        assert {r["name"] for r in body["resources"] if "/" not in r["name"]} >= {
            "services", "httproutes", "grpcroutes", "faultinjections", "backendtrafficpolicies", "ratelimitpolicies",
            "telemetries", "authorizationpolicies", "meshtlses", "egresspolicies"}
        st, body = c.request("POST", "/apis/remora.dev/v1/namespaces/default/services?fieldValidation=Strict",
                             ko.remora("Service", "s", spec={"no-such-field": 1}))
        assert st == 400 and 'unknown field "spec.no-such-field"' in body["message"]
        st, body = c.request("POST", "/apis/remora.dev/v1/namespaces/default/services",
                             ko.remora("Service", "s", spec={"protocol": 5}))
        assert st == 422 and body["details"]["causes"][0]["field"] == "spec.protocol"


@pytest.mark.skipif(not os.path.isdir(CHART_CRDS), reason="helm/remora/crds not there")
def test_chart_crd_egress_policies(tmp_path):
    """egresspolicies.remora.dev: served with its short name and category, writes validated against its schema."""
    with KubeApiServer(tls=False, workdir=str(tmp_path / "api"), crds=CHART_CRDS) as s:
        c = ApiClient(s.url, s.token)
        st, body = c.request("GET", "/apis/remora.dev/v1")
        ep = {r["name"]: r for r in body["resources"]}["egresspolicies"]
        assert ep["kind"] == "EgressPolicy" and ep["shortNames"] == ["egress"] and ep["categories"] == ["remora"]
        path = "/apis/remora.dev/v1/namespaces/default/egresspolicies"
        good = ko.remora("EgressPolicy", "web", spec={"targetRefs": [{"kind": "ServiceAccount", "name": "web"}],
                                                      "hosts": ["./*", "*/echo", "shop/api"]})
        st, body = c.request("POST", path + "?fieldValidation=Strict", good)
        assert st == 201, body
        for spec, field in (({"hosts": ["shop"]}, "spec.hosts[0]"), ({"hosts": []}, "spec.hosts"),
                            ({"hosts": ["./*"], "targetRefs": [{"kind": "Deployment", "name": "w"}]},
                             "spec.targetRefs[0].kind")):
            st, body = c.request("POST", path, ko.remora("EgressPolicy", "bad", spec=spec))
            assert st == 422 and body["details"]["causes"][0]["field"] == field, (spec, body)
        st, body = c.request("GET", path)
        assert st == 200 and [o["metadata"]["name"] for o in body["items"]] == ["web"], body
        assert body["items"][0]["spec"]["hosts"] == ["./*", "*/echo", "shop/api"]
