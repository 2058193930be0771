#!/usr/bin/python3
"""A small Kubernetes API server for tests: the real list-and-watch protocol over HTTPS (or HTTP).

No API server can run on the test machines, so Remora's Kubernetes mode is tested against this one.
It speaks the wire protocol of kube-apiserver for the resources Remora uses, with objects in real
clusters' shapes (see kube_objects.py):

- core v1 namespaces (cluster-scoped), services, pods, configmaps, secrets, serviceaccounts, endpoints;
  discovery.k8s.io/v1 endpointslices; coordination.k8s.io/v1 leases; remora.dev/v1 (the Remora kinds,
  any object); authentication.k8s.io/v1 tokenreviews (create only); apiextensions.k8s.io/v1
  customresourcedefinitions: a CRD (created over the API, or loaded with crds=DIR / --crds DIR, e.g.
  helm/remora/crds) makes its kinds served with its names, short names and status subresource, and
  writes of them are pruned (unknown fields dropped, a Warning header; a 400 with fieldValidation=Strict),
  defaulted and validated (422 Invalid with causes) with its openAPIV3Schema (OpenAPI value
  validations and x-kubernetes-list-type; CEL rules are not evaluated); deleting it deletes its objects.
  Built-in kinds: fieldValidation=Strict checks duplicate JSON keys and unknown top-level and metadata
  fields only (no built-in schemas here).
- Paths as Kubernetes: /api/v1/namespaces/NS/services[/NAME][/status], /api/v1/services (all namespaces),
  /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME][/status], /apis/GROUP/VERSION/PLURAL; discovery
  documents (/api, /api/v1, /apis, /apis/GROUP, /apis/GROUP/VERSION, /version, /openapi/v3) good enough
  for the real kubectl (get, get -w, create, apply, apply --server-side, patch, delete).
- One global resourceVersion counter; every object gets metadata.uid, resourceVersion,
  creationTimestamp, generation (bumped when anything outside metadata and status changes).
- LIST with limit/continue (consistent snapshots: later pages show the state of the first page's
  resourceVersion), labelSelector (=, ==, !=, in, notin, exists, !exists), fieldSelector
  (metadata.name, metadata.namespace, any dotted field; =, ==, !=), resourceVersion +
  resourceVersionMatch=Exact (410 Expired when older than the compacted point).
- WATCH (?watch=1): a chunked stream of {"type","object"} JSON lines; events after resourceVersion N;
  synthetic ADDED events of the current state when N is absent or "0" (or with sendInitialEvents=true,
  followed by the initial-events-end BOOKMARK); BOOKMARK every bookmark_interval seconds with
  allowWatchBookmarks; an ERROR event with a 410 Expired Status when N is older than the compacted
  point; ends after timeoutSeconds (default: a random 30-60 min as the API server does; capped at 1 h).
- Writes: POST (409 AlreadyExists, generateName), PUT (409 Conflict when metadata.resourceVersion is
  stale), PATCH (application/merge-patch+json RFC 7386, application/json-patch+json RFC 6902,
  application/strategic-merge-patch+json: a merge patch whose lists of known merge keys are merged by
  key with the $patch/$setElementOrder/$retainKeys/$deleteFromPrimitiveList directives,
  application/apply-patch+yaml: server-side apply: create or merge, fields a manager applied before and
  applies no more are removed, 409 Conflict for fields another Apply manager owns with another value
  unless force=true, ownership in metadata.managedFields; lists are atomic and Update operations
  (PUT/POST/other PATCHes) are not recorded as owners),
  DELETE (with preconditions; finalizers keep the object with a deletionTimestamp until removed;
  deleting a namespace deletes what is in it; objects whose ownerReferences owners are all gone are
  deleted with them, as the garbage collector does), DELETE of a collection, /status subresources (writes
  to the main resource keep status, writes to /status change only status). Errors are metav1.Status.
  Writes into a namespace that does not exist answer 404 as the real API does (srv.put creates it).
- TokenReview: tokens registered with add_token() are authenticated for the audiences they were
  registered for (status.audiences is the intersection with spec.audiences).
- Bearer-token authentication of every request except /healthz, /livez, /readyz (401 Status).

Bounds: at most MAX_HISTORY (200000) events are kept (older ones count as compacted), request bodies
up to MAX_BODY (3 MiB, the API server's own limit), MAX_CONNECTIONS (512) open connections (more are
closed at once), srv.requests keeps the last MAX_REQUEST_LOG (100000), LIST limit as given (no cap).

- Table output (Accept: ...;as=Table;g=meta.k8s.io;v=v1) for GET, LIST and WATCH: Name and Age, or a
  CRD's additionalPrinterColumns (JSONPath subset: .field, [N], [?(@.key=="value")]).

Not done: protobuf and CBOR bodies (415, as for any unknown media type: `kubectl create configmap`
and other generators send protobuf; `kubectl create/apply -f` send JSON), the built-in kinds' own
printer columns, managedFields of Update operations, RBAC, watch-cache semantics beyond the above.

Python API (tests): see KubeApiServer; ApiClient is a raw client (http.client) for tests.
Process: kube_api.py --port 0 [--http] [--objects FILE.yaml] [--crds DIR] [--state-file F] [--token T]
[--dir D] [--bookmark-interval S] prints "URL CA_FILE TOKEN_FILE" (CA_FILE "-" with --http) on its first
stdout line and serves until SIGTERM; --state-file also writes {url, ca_file, token_file, token} as JSON.
In process mode the test endpoints POST /__test/compact, /__test/close-watches, /__test/tokens
(JSON: add_token's arguments) and /__test/fail-next (JSON: {"n","status"}) do what the methods do.
"""

import argparse
import base64
import bisect
import copy
import datetime
import json
import os
import random
import re
import signal
import socket
import ssl
import string
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import yaml  # Debian python3-yaml: apply-patch+yaml bodies and --objects files
except ImportError:  # pragma: no cover
    yaml = None

MAX_HISTORY = 200000
MAX_BODY = 3 * 1024 * 1024
MAX_CONNECTIONS = 512
MAX_REQUEST_LOG = 100000
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "remora-test-apiserver",
                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                  "compiler": "gc", "platform": "linux/amd64"}
FIELD_MANAGER_DEFAULT = "unknown"


class ResourceType:
    """One resource of the API (a row of an APIResourceList)."""

    def __init__(self, group, version, kind, plural, namespaced=True, short_names=(), status=False,
                 verbs=None, crd=False, singular=None, categories=()):
        self.group, self.version, self.kind, self.plural = group, version, kind, plural
        self.namespaced, self.short_names, self.status, self.crd = namespaced, list(short_names), status, crd
        self.singular = singular or kind.lower()
        self.verbs = verbs or ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        self.categories = list(categories)
        self.schema = None  # a CRD's openAPIV3Schema: writes are pruned, defaulted and validated with it
        self.crd_name = None  # the CustomResourceDefinition that defines it
        self.columns = None  # a CRD's additionalPrinterColumns (Table output)

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self):
        """How error messages name it: `services` or `services.remora.dev`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def storable(self):
        return "get" in self.verbs


REMORA_KINDS = [("Service", "services", ["rsvc"]), ("HTTPRoute", "httproutes", ["rhr"]),
                ("GRPCRoute", "grpcroutes", ["rgr"]), ("FaultInjection", "faultinjections", ["rfi"]),
                ("BackendTrafficPolicy", "backendtrafficpolicies", ["btp"]),
                ("RateLimitPolicy", "ratelimitpolicies", ["rlp"]), ("Telemetry", "telemetries", ["rtel"]),
                ("AuthorizationPolicy", "authorizationpolicies", ["authz"]), ("MeshTLS", "meshtlses", ["mtls"]),
                ("EgressPolicy", "egresspolicies", ["egress"])]

RESOURCES = [
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, short_names=["ns"], status=True,
                 verbs=["create", "delete", "get", "list", "patch", "update", "watch"]),
    ResourceType("", "v1", "Service", "services", short_names=["svc"], status=True, categories=["all"]),
    ResourceType("", "v1", "Pod", "pods", short_names=["po"], status=True, categories=["all"]),
    ResourceType("", "v1", "ConfigMap", "configmaps", short_names=["cm"]),
    ResourceType("", "v1", "Secret", "secrets"),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", short_names=["sa"]),
    ResourceType("", "v1", "Endpoints", "endpoints", short_names=["ep"], singular="endpoints"),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases"),
    ResourceType("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, verbs=["create"]),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                 namespaced=False, short_names=["crd", "crds"], status=True, categories=["api-extensions"]),
] + [ResourceType("remora.dev", "v1", k, p, short_names=s, status=True, crd=True, categories=["remora"])
     for k, p, s in REMORA_KINDS]

BUILTIN_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"]

# Top-level fields each kind has (fieldValidation=Strict rejects others; the API's schemas go deeper).
_TOP_FIELDS = {
    "Namespace": {"spec", "status"}, "Service": {"spec", "status"}, "Pod": {"spec", "status"},
    "ConfigMap": {"data", "binaryData", "immutable"},
    "Secret": {"data", "stringData", "type", "immutable"},
    "ServiceAccount": {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "Endpoints": {"subsets"}, "EndpointSlice": {"addressType", "endpoints", "ports"}, "Lease": {"spec"},
}
_META_FIELDS = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
                "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
                "ownerReferences", "finalizers", "managedFields"}

# Strategic merge patch: the merge key of lists (by field name), as the API types declare them.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
               "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
               "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid",
               "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "tolerations": None,
               "containerStatuses": "name", "initContainerStatuses": "name", "podIPs": "ip",
               "secrets": "name"}
# "ports" is keyed by containerPort in containers and by port in Services.
_PORT_KEYS = ("containerPort", "port")


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_obj(code, reason, message, details=None):
    """A metav1.Status as the API server writes it."""
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 300 else "Success",
         "message": message, "reason": reason, "code": code}
    if code < 300:
        del s["reason"]
        del s["message"]
    if details is not None:
        s["details"] = details
    return s


class _Reply(Exception):
    """A response decided while the store's lock is held: raised out of the lock, sent by the dispatcher."""

    def __init__(self, code, obj, headers=None):
        super().__init__(code)
        self.code, self.obj, self.headers = code, copy.deepcopy(obj), headers


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details
        self.headers = headers or {}

    def status(self):
        return status_obj(self.code, self.reason, self.message, self.details)


def _details(rt, name):
    d = {"name": name, "kind": rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt, name):
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def namespace_not_found(ns):
    return ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})


def invalid(rt, name, field, cause_reason, msg):
    cause = {"reason": cause_reason, "message": msg, "field": field}
    d = _details(rt, name)
    d["kind"] = rt.kind
    d["causes"] = [cause]
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {field}: {msg}', d)


def conflict(rt, name):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                    _details(rt, name))


def expired(rv, oldest):
    return ApiError(410, "Expired", f"too old resource version: {rv} ({oldest})")


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


# ---------------------------------------------------------------------------------------------------------------
# Patches


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise ValueError(f"path component {p!r} not found")
            cur = cur[p]
        elif isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                raise ValueError(f"index {p!r} out of range")
            cur = cur[int(p)]
        else:
            raise ValueError(f"cannot descend into {type(cur).__name__}")
    return cur


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is an array of operations")

    def add(doc, parts, value):
        if not parts:
            return value
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif last.isdigit() and int(last) <= len(parent):
                parent.insert(int(last), value)
            else:
                raise ValueError(f"index {last!r} out of range")
        else:
            raise ValueError("parent is not a container")
        return doc

    def remove(doc, parts):
        if not parts:
            raise ValueError("cannot remove the root")
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise ValueError(f"path component {last!r} not found")
            return parent.pop(last)
        if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            return parent.pop(int(last))
        raise ValueError(f"cannot remove {last!r}")

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError("every operation needs op and path")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)
            if not parts:
                doc = copy.deepcopy(op["value"])
            else:
                remove(doc, parts)
                doc = add(doc, parts, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = _pointer(op["from"])
            value = copy.deepcopy(_walk(doc, src))
            if kind == "move":
                if parts[:len(src)] == src and len(parts) > len(src):
                    raise ValueError("cannot move a value into itself")
                remove(doc, src)
            doc = add(doc, parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unknown operation {kind!r}")
    return doc


def _list_merge_key(field, items):
    if field == "ports":
        for k in _PORT_KEYS:
            if all(isinstance(i, dict) and k in i for i in items):
                return k
        return None
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target, patch, field=None):
    """Kubernetes strategic merge patch for the lists whose merge key the API types declare."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
        elif k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            result[name] = [x for x in result.get(name, []) if x not in v]
        elif k.startswith("$"):
            continue
        elif v is None:
            result.pop(k, None)
        elif isinstance(v, list) and isinstance(result.get(k), list):
            key = _list_merge_key(k, v + result[k])
            if key is None or not all(isinstance(i, dict) for i in v):
                result[k] = [i for i in copy.deepcopy(v) if not (isinstance(i, dict) and i.get("$patch"))]
                continue
            merged = list(result[k])
            for item in v:
                idx = next((n for n, cur in enumerate(merged) if cur.get(key) == item.get(key)), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append({a: b for a, b in copy.deepcopy(item).items() if not a.startswith("$")})
                else:
                    merged[idx] = strategic_merge_patch(merged[idx], item, k)
            result[k] = merged
        elif isinstance(v, list):
            result[k] = [{a: b for a, b in i.items() if not a.startswith("$")} if isinstance(i, dict) else i
                         for i in copy.deepcopy(v) if not (isinstance(i, dict) and i.get("$patch") == "delete")]
        else:
            sub = strategic_merge_patch(result.get(k), v, k)
            if sub is None:
                result.pop(k, None)
            else:
                result[k] = sub
    for name, order in orders.items():
        cur = result.get(name)
        if not isinstance(cur, list):
            continue
        key = _list_merge_key(name, cur + [o for o in order if isinstance(o, dict)])
        if key is None:
            rank = {json.dumps(o, sort_keys=True): n for n, o in enumerate(order)}
            cur.sort(key=lambda x: rank.get(json.dumps(x, sort_keys=True), len(rank)))
        else:
            rank = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
            cur.sort(key=lambda x: rank.get(x.get(key) if isinstance(x, dict) else None, len(rank)))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


# Server-side apply: field ownership in metadata.managedFields (FieldsV1), for Apply operations. Maps are
# merged field by field; lists and scalars are owned whole (lists are atomic here, list-map keys are not used).

_SSA_UNOWNED = {("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"), ("metadata", "namespace"),
                ("metadata", "resourceVersion"), ("metadata", "managedFields"), ("metadata", "uid"),
                ("metadata", "creationTimestamp"), ("metadata", "generation")}


def applied_paths(cfg, prefix=()):
    """The field paths an apply configuration sets (leaves: scalars, lists, empty maps)."""
    out = set()
    for k, v in cfg.items():
        p = prefix + (k,)
        if isinstance(v, dict) and v:
            out |= applied_paths(v, p)
        elif p not in _SSA_UNOWNED:
            out.add(p)
    return out


def fields_v1(paths):
    root = {}
    for p in sorted(paths):
        node = root
        for part in p:
            node = node.setdefault(f"f:{part}", {})
    return root


def fields_v1_paths(fv1, prefix=()):
    out = set()
    for k, v in (fv1 or {}).items():
        if not k.startswith("f:"):
            continue
        p = prefix + (k[2:],)
        if v and any(kk.startswith("f:") for kk in v):
            out |= fields_v1_paths(v, p)
        else:
            out.add(p)
    return out


def _overlap(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _get_path(obj, p):
    for part in p:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _del_path(obj, p):
    parents = []
    for part in p[:-1]:
        if not isinstance(obj, dict) or part not in obj:
            return
        parents.append((obj, part))
        obj = obj[part]
    if isinstance(obj, dict):
        obj.pop(p[-1], None)
    for parent, part in reversed(parents):  # maps left empty by the removal go too
        if parent[part] == {}:
            del parent[part]
        else:
            break


def server_side_apply(old, cfg, manager, api_version, subresource, force):
    """(new object, managedFields) of applying cfg as manager over old; raises ApiError 409 on conflicts."""
    mf = copy.deepcopy((old.get("metadata") or {}).get("managedFields") or [])
    sub = subresource or ""
    scope = (lambda p: p[0] == "status") if sub == "status" else (lambda p: p[0] != "status")
    cfg_paths = {p for p in applied_paths(cfg) if scope(p)}
    owners = {}
    for e in mf:
        if e.get("operation") == "Apply" and e.get("subresource", "") == sub and e.get("manager") != manager:
            owners[e["manager"]] = fields_v1_paths(e.get("fieldsV1"))
    mine = set()
    for e in mf:
        if e.get("operation") == "Apply" and e.get("subresource", "") == sub and e.get("manager") == manager:
            mine = fields_v1_paths(e.get("fieldsV1"))
    conflicts = [(m, q) for m, paths in sorted(owners.items()) for q in sorted(paths)
                 if any(_overlap(p, q) and _get_path(cfg, p) != _get_path(old, p) for p in cfg_paths)]
    if conflicts and not force:
        text = "\n".join(f'conflict with "{m}": .{".".join(q)}' for m, q in conflicts)
        plural = "s" if len(conflicts) > 1 else ""
        causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": "." + ".".join(q)}
                  for m, q in conflicts]
        raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict{plural}: {text}",
                       {"causes": causes})
    for m, q in conflicts:  # forced: the fields change hands
        owners[m].discard(q)
    new = copy.deepcopy(old)
    for p in mine - cfg_paths:
        if not any(_overlap(p, q) for paths in owners.values() for q in paths) and \
                not any(_overlap(p, q) for q in cfg_paths):
            _del_path(new, p)
    new = merge_patch(new, {k: v for k, v in cfg.items() if k not in ("apiVersion", "kind")})
    entries = []
    for e in mf:
        if e.get("operation") == "Apply" and e.get("subresource", "") == sub:
            if e.get("manager") == manager:
                continue
            if e.get("manager") in owners:
                e["fieldsV1"] = fields_v1(owners[e["manager"]])
        entries.append(e)
    entry = {"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now_rfc3339(),
             "fieldsType": "FieldsV1", "fieldsV1": fields_v1(cfg_paths)}
    if sub:
        entry["subresource"] = sub
    entries.append(entry)
    return new, entries


# Table output (what kubectl get asks for): Name and Age, or a CRD's additionalPrinterColumns.

_JP_TOKEN = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_-]+)\s*==\s*["\']([^"\']*)["\']\)\]')


def json_path(obj, path):
    """The first value at a printer column's JSONPath (.a.b, [N], [?(@.k=="v")]); None when absent."""
    cur = [obj]
    pos = 0
    while pos < len(path):
        m = _JP_TOKEN.match(path, pos)
        if m is None:
            return None
        pos = m.end()
        nxt = []
        for c in cur:
            if m.group(1) is not None and isinstance(c, dict) and m.group(1) in c:
                nxt.append(c[m.group(1)])
            elif m.group(2) is not None and isinstance(c, list) and int(m.group(2)) < len(c):
                nxt.append(c[int(m.group(2))])
            elif m.group(3) is not None and isinstance(c, list):
                nxt += [i for i in c if isinstance(i, dict) and str(i.get(m.group(3))) == m.group(4)]
        cur = nxt
    return cur[0] if cur else None


def human_duration(seconds):
    """k8s.io/apimachinery duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    return f"{y}y{d % 365}d" if y < 8 and d % 365 else f"{y}y"


def _age(ts):
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())


def wants_table(accept):
    return any("as=Table" in r and "g=meta.k8s.io" in r and "v=v1" in r.replace("v=v1beta1", "")
               for r in (accept or "").split(","))


def table(rt, objs, rv, headers=True, cont=None):
    """A meta.k8s.io/v1 Table of objs; rows carry PartialObjectMetadata, as includeObject's default."""
    cols = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."}]
    custom = rt.columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    for c in custom:
        ctype = "string" if c.get("type") == "date" else c.get("type", "string")
        cols.append({"name": c.get("name", ""), "type": ctype, "format": c.get("format", ""),
                     "priority": c.get("priority", 0),
                     "description": c.get("description", "")})
    rows = []
    for o in objs:
        cells = [o["metadata"].get("name")]
        for c in custom:
            v = json_path(o, c.get("jsonPath", ""))
            if c.get("type") == "date" and v is not None:
                v = _age(v)
            elif isinstance(v, (dict, list)):
                v = json.dumps(v, separators=(",", ":"))
            cells.append(v)
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": o["metadata"]}})
    meta = {"resourceVersion": str(rv)}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": cols if headers else [], "rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# Selectors

_REQ_SPLIT = re.compile(r",(?![^()]*\))")
_SET_RE = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def parse_label_selector(sel):
    """[(key, op, values)] for equality-, set- and existence-based requirements; raises ApiError 400."""
    reqs = []
    if not sel:
        return reqs
    for part in _REQ_SPLIT.split(sel):
        if not part.strip():
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {sel!r}")
        m = _SET_RE.match(part)
        if m:
            reqs.append((m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",") if v.strip()]))
            continue
        m = _CMP_RE.match(part)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", [m.group(3)]))
            continue
        m = _EXISTS_RE.match(part)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", []))
            continue
        raise bad_request(f"unable to parse requirement: {part!r}")
    return reqs


def label_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=" and v != vals[0]:
            return False
        if op == "!=" and have and v == vals[0]:
            return False
        if op == "in" and (not have or v not in vals):
            return False
        if op == "notin" and have and v in vals:
            return False
        if op == "exists" and not have:
            return False
        if op == "!exists" and have:
            return False
    return True


def parse_field_selector(sel):
    reqs = []
    if not sel:
        return reqs
    for part in sel.split(","):
        m = _CMP_RE.match(part)
        if not m:
            raise bad_request(f"invalid selector: {sel!r}; can't understand {part!r}")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def field_match(reqs, obj):
    for path, op, want in reqs:
        cur = obj
        for p in path.split("."):
            cur = cur.get(p) if isinstance(cur, dict) else None
        have = "" if cur is None else (str(cur).lower() if isinstance(cur, bool) else str(cur))
        if (have == want) != (op == "="):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# CRD structural schemas: pruning, defaulting and validation as the API server does them for custom resources
# (OpenAPI v3 value validations; CEL rules (x-kubernetes-validations) are not evaluated).


def _fpath(path):
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + p)
    return out


def schema_prune(obj, schema, path=(), unknown=None):
    """Drops fields the schema does not name (and nulls of non-nullable fields); returns their paths."""
    unknown = [] if unknown is None else unknown
    if not isinstance(schema, dict):
        return unknown
    if isinstance(obj, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields") or addl is True
        for k in list(obj):
            sub = (props or {}).get(k)
            if sub is None and isinstance(addl, dict):
                sub = addl
            if not path and k in ("apiVersion", "kind"):
                continue
            if not path and k == "metadata":
                for mk in list(obj[k] or {}):
                    if mk not in _META_FIELDS:
                        unknown.append(f"metadata.{mk}")
                        del obj[k][mk]
                continue
            if sub is None:
                if not keep_all and (props is not None or addl is False or schema.get("type") == "object"):
                    unknown.append(_fpath(path + (k,)))
                    del obj[k]
                continue
            if obj[k] is None and not sub.get("nullable"):
                del obj[k]
                continue
            schema_prune(obj[k], sub, path + (k,), unknown)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(obj):
            schema_prune(v, schema["items"], path + (i,), unknown)
    return unknown


def schema_default(obj, schema):
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if k not in obj and isinstance(sub, dict) and "default" in sub:
                obj[k] = copy.deepcopy(sub["default"])
            if k in obj:
                schema_default(obj[k], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k in obj:
                if k not in (schema.get("properties") or {}):
                    schema_default(obj[k], addl)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for v in obj:
            schema_default(v, schema["items"])


_TYPES = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
          "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}


def _jv(v):
    return json.dumps(v)


def schema_validate(v, schema, path=(), errs=None):
    """[(field, reason, message)] for every violation of the schema's value validations."""
    errs = [] if errs is None else errs
    if not isinstance(schema, dict):
        return errs
    f = _fpath(path) or "<root>"

    def bad(msg, reason="FieldValueInvalid"):
        errs.append((f, reason, msg))

    if v is None:
        if not schema.get("nullable") and schema.get("type"):
            bad(f"Invalid value: \"null\": {f} in body must be of type {schema['type']}: \"null\"",
                "FieldValueTypeInvalid")
        return errs
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (_TYPES["integer"](v) or isinstance(v, str)):
            bad(f"Invalid value: {_jv(v)}: {f} in body must be of type integer,string: {_jv(v)}",
                "FieldValueTypeInvalid")
            return errs
    elif t and t in _TYPES and not _TYPES[t](v):
        kind = "object" if isinstance(v, dict) else "array" if isinstance(v, list) else \
            "boolean" if isinstance(v, bool) else "string" if isinstance(v, str) else \
            "integer" if isinstance(v, int) else "number"
        errs.append((f, "FieldValueTypeInvalid", f"Invalid value: \"{kind}\": {f} in body must be of type {t}: "
                                                 f"\"{kind}\""))
        return errs
    if "enum" in schema and v not in schema["enum"]:
        supported = ", ".join(_jv(e) for e in schema["enum"])
        errs.append((f, "FieldValueNotSupported", f"Unsupported value: {_jv(v)}: supported values: {supported}"))
    if isinstance(v, str):
        if "pattern" in schema and re.search(schema["pattern"], v) is None:
            bad(f"Invalid value: {_jv(v)}: {f} in body should match '{schema['pattern']}'")
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            errs.append((f, "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(v) < schema["minLength"]:
            bad(f"Invalid value: {_jv(v)}: {f} in body should be at least {schema['minLength']} chars long")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "maximum" in schema:
            if v > schema["maximum"] or (schema.get("exclusiveMaximum") and v == schema["maximum"]):
                op = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                bad(f"Invalid value: {_jv(v)}: {f} in body should be {op} {schema['maximum']}")
        if "minimum" in schema:
            if v < schema["minimum"] or (schema.get("exclusiveMinimum") and v == schema["minimum"]):
                op = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                bad(f"Invalid value: {_jv(v)}: {f} in body should be {op} {schema['minimum']}")
        if schema.get("format") == "int32" and isinstance(v, int) and not -2**31 <= v < 2**31:
            bad(f"Invalid value: {_jv(v)}: {f} in body must be of type int32: {_jv(v)}")
        if schema.get("multipleOf") and v % schema["multipleOf"] != 0:
            bad(f"Invalid value: {_jv(v)}: {f} in body should be a multiple of {schema['multipleOf']}")
    if isinstance(v, list):
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            errs.append((f, "FieldValueTooMany", f"Too many: {len(v)}: must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(v) < schema["minItems"]:
            bad(f"Invalid value: {len(v)}: {f} in body should have at least {schema['minItems']} items")
        lt = schema.get("x-kubernetes-list-type")
        if schema.get("uniqueItems") or lt == "set":
            seen = []
            for i, item in enumerate(v):
                if item in seen:
                    errs.append((_fpath(path + (i,)), "FieldValueDuplicate", f"Duplicate value: {_jv(item)}"))
                seen.append(item)
        if lt == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = []
            for i, item in enumerate(v):
                k = {kk: item.get(kk) for kk in keys} if isinstance(item, dict) else item
                if k in seen:
                    errs.append((_fpath(path + (i,)), "FieldValueDuplicate", f"Duplicate value: {_jv(k)}"))
                seen.append(k)
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(v):
                schema_validate(item, schema["items"], path + (i,), errs)
    if isinstance(v, dict):
        for r in schema.get("required") or []:
            if r not in v:
                errs.append((_fpath(path + (r,)), "FieldValueRequired", "Required value"))
        if "maxProperties" in schema and len(v) > schema["maxProperties"]:
            errs.append((f, "FieldValueTooMany",
                         f"Too many: {len(v)}: must have at most {schema['maxProperties']} items"))
        if "minProperties" in schema and len(v) < schema["minProperties"]:
            bad(f"Invalid value: {len(v)}: {f} in body should have at least {schema['minProperties']} properties")
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for k, item in v.items():
            if not path and k == "metadata":
                continue
            if k in props:
                schema_validate(item, props[k], path + (k,), errs)
            elif isinstance(addl, dict):
                schema_validate(item, addl, path + (k,), errs)
    for sub in schema.get("allOf") or []:
        schema_validate(v, sub, path, errs)
    if schema.get("anyOf") and not any(not schema_validate(v, s, path) for s in schema["anyOf"]):
        bad(f"Invalid value: {_jv(v)}: {f} in body must match at least one schema in anyOf")
    if schema.get("oneOf"):
        n = sum(1 for s in schema["oneOf"] if not schema_validate(v, s, path))
        if n != 1:
            bad(f"Invalid value: {_jv(v)}: {f} in body must match exactly one schema in oneOf")
    if isinstance(schema.get("not"), dict) and not schema_validate(v, schema["not"], path):
        bad(f"Invalid value: {_jv(v)}: {f} in body must not validate the schema (not)")
    return errs


# ---------------------------------------------------------------------------------------------------------------
# Storage


def _key(rt, ns, name):
    return (rt.group, rt.plural, ns or "", name)


class Event:
    __slots__ = ("rv", "type", "key", "obj", "old")

    def __init__(self, rv, type_, key, obj, old):
        self.rv, self.type, self.key, self.obj, self.old = rv, type_, key, obj, old


class Store:
    """Objects, the global resourceVersion counter and the event history, under one condition variable."""

    def __init__(self):
        self.cond = threading.Condition()
        self.objects = {}  # key -> object (with apiVersion/kind)
        self.rv = 0
        self.compacted = 0  # resourceVersions < compacted are gone for new watches and exact lists
        self.history = []  # Events in rv order
        self.history_rvs = []

    def _record(self, type_, key, obj, old):
        """Caller holds cond. Bumps rv, stamps obj, appends the event, wakes watchers."""
        self.rv += 1
        if obj is not None:
            obj["metadata"]["resourceVersion"] = str(self.rv)
        ev_obj = copy.deepcopy(obj if obj is not None else old)
        if type_ == "DELETED":
            ev_obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append(Event(self.rv, type_, key, ev_obj, old))
        self.history_rvs.append(self.rv)
        if len(self.history) > MAX_HISTORY:
            drop = len(self.history) - MAX_HISTORY
            self.compacted = max(self.compacted, self.history[drop - 1].rv)
            del self.history[:drop]
            del self.history_rvs[:drop]
        self.cond.notify_all()
        return ev_obj

    def events_after(self, rv):
        i = bisect.bisect_right(self.history_rvs, rv)
        return self.history[i:]

    def state_at(self, rv):
        """The objects as they were at resourceVersion rv (undoing later events)."""
        state = dict(self.objects)
        for ev in reversed(self.events_after(rv)):
            if ev.type == "ADDED":
                state.pop(ev.key, None)
            else:
                state[ev.key] = ev.old
        return state


def _spec_part(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _strip_for_list(rt, obj):
    if rt.crd:
        return obj
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


class KubeApiServer:
    """The test API server.

        srv = KubeApiServer(tls=True)  # HTTPS on 127.0.0.1, a free port; srv.url, srv.ca_file, srv.token_file
        srv.start(); ...; srv.stop()   # or `with KubeApiServer() as srv:`
        srv.put(obj)                   # create or replace, status included, no validation (as controllers and
                                       # the kubelet would write it); its namespace is created if missing
        srv.delete(apiVersion, kind, namespace, name); srv.get(...) -> dict | None; srv.list(apiVersion, kind, ns)
        srv.compact()                  # watches / exact lists / continue tokens from older versions get 410
        srv.close_watches()            # closes every open watch connection at once
        srv.fail_next(n, status)       # the next n API requests answer that status (a metav1.Status)
        srv.add_token(token, username="system:serviceaccount:NS:SA", audiences=["remora"], uid=..., pod_name=...,
                      pod_uid=..., expired=False); srv.remove_token(token)   # for TokenReview
        srv.requests                   # [(method, path-with-query)] seen, in order
        srv.bookmark_interval          # seconds between BOOKMARK events (default 1)
        srv.resource_version           # the current global resourceVersion (int)
    Every put/delete is one event for watches, as an API write would be.
    """

    def __init__(self, tls=True, host="127.0.0.1", port=0, token=None, workdir=None, bookmark_interval=1.0,
                 crds=None):
        self.tls, self.host, self._port = tls, host, port
        self.bookmark_interval = bookmark_interval
        self.store = Store()
        self.requests = []
        self._req_lock = threading.Lock()
        self._fail = []  # [remaining, status, retry_after]
        self._tokens = {}
        self._watches = set()
        self._conns = set()
        self._nconn = 0
        self._closing_gen = 0
        self._next_ip = 16  # ClusterIPs handed out from 10.96.0.17 on
        self._httpd = None
        self._thread = None
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="kube-api-")
        os.makedirs(self.workdir, exist_ok=True)
        self.token = token or ("remora-test-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=24)))
        self.token_file = os.path.join(self.workdir, "token")
        with open(self.token_file, "w") as f:
            f.write(self.token)
        self.ca_file = None
        self.cert_file = self.key_file = None
        if tls:
            import certs
            c = certs.make_certs(os.path.join(self.workdir, "certs"))
            self.ca_file, self.cert_file, self.key_file = c["ca"], c["cert"], c["key"]
        self.types = list(RESOURCES)
        self._rebuild_index()
        with self.store.cond:
            for ns in BUILTIN_NAMESPACES:
                self._create_locked(self.by_kind[("v1", "Namespace")], None, self._namespace_obj(ns))
        if crds:
            for path in sorted(os.listdir(crds)) if os.path.isdir(crds) else [crds]:
                full = os.path.join(crds, path) if os.path.isdir(crds) else path
                if full.endswith((".yaml", ".yml", ".json")):
                    for o in load_objects(full):
                        if o.get("kind") == "CustomResourceDefinition":
                            self.put(o)

    def _rebuild_index(self):
        self.by_path = {(rt.group, rt.version, rt.plural): rt for rt in self.types}
        self.by_kind = {(rt.api_version, rt.kind): rt for rt in self.types}

    def _crd_changed(self, name, crd):
        """Caller holds store.cond. Serves the custom resources a CRD defines (or stops serving them)."""
        old = [rt for rt in self.types if rt.crd_name == name]
        types = [rt for rt in self.types if rt.crd_name != name]
        if crd is not None:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for v in spec.get("versions") or []:
                if not v.get("served", True):
                    continue
                rt = ResourceType(spec.get("group", ""), v.get("name", "v1"), names.get("kind", ""),
                                  names.get("plural", ""), namespaced=spec.get("scope") != "Cluster",
                                  short_names=names.get("shortNames") or (), crd=True,
                                  status="status" in (v.get("subresources") or {}),
                                  singular=names.get("singular"), categories=names.get("categories") or ())
                rt.schema = (v.get("schema") or {}).get("openAPIV3Schema")
                rt.columns = v.get("additionalPrinterColumns")
                rt.crd_name = name
                types = [t for t in types if (t.group, t.version, t.plural) != (rt.group, rt.version, rt.plural)]
                types.append(rt)
        # a type the CRD no longer defines: its objects go (as when a CRD is deleted); built-in fallbacks return
        for rt in old:
            if not any((t.group, t.version, t.plural) == (rt.group, rt.version, rt.plural) for t in types):
                for k in [k for k in self.store.objects if k[0] == rt.group and k[1] == rt.plural]:
                    self.store._record("DELETED", k, None, self.store.objects.pop(k))
                types += [t for t in RESOURCES if (t.group, t.version, t.plural) == (rt.group, rt.version, rt.plural)]
        self.types = types
        self._rebuild_index()

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def port(self):
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self):
        server = self

        class Httpd(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

            def finish_request(self, request, client_address):
                raw = request
                with server._req_lock:
                    if server._nconn >= MAX_CONNECTIONS:
                        return  # closed by the caller (shutdown_request)
                    server._nconn += 1
                server._conns.add(raw)
                try:
                    if server.tls:
                        request.settimeout(10)  # a client that never finishes its handshake
                        try:
                            request = server._ssl_ctx.wrap_socket(request, server_side=True)
                        except (ssl.SSLError, OSError):
                            return
                        server._conns.add(request)  # the raw socket is detached by the wrap
                        request.settimeout(None)
                    self.RequestHandlerClass(request, client_address, self)
                finally:
                    server._conns.discard(raw)
                    server._conns.discard(request)
                    with server._req_lock:
                        server._nconn -= 1

        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert_file, self.key_file)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl_ctx = ctx
        handler = type("Handler", (_Handler,), {"api": self})
        if ":" in self.host:
            Httpd.address_family = socket.AF_INET6
        self._httpd = Httpd((self.host, self._port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self.close_watches()
        for c in list(self._conns):
            _hard_close(c)
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None
        if self._own_dir:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- test controls ----------------------------------------------------------------------------------------
    def compact(self):
        """Forget history: watches and exact lists from resourceVersions up to now get 410 Gone."""
        with self.store.cond:
            self.store.compacted = self.store.rv

    def close_watches(self):
        """Ends every open watch stream at once (the connection is closed, as on an API server restart)."""
        with self.store.cond:
            self._closing_gen += 1
            watches = list(self._watches)
            self.store.cond.notify_all()
        for sock in watches:
            _hard_close(sock)

    def fail_next(self, n, status=500, retry_after=None):
        """Answers the next n API requests (not /healthz) with a Status of that code."""
        with self._req_lock:
            self._fail = [n, status, retry_after]

    def add_token(self, token, username="system:serviceaccount:default:default", audiences=("remora",), uid=None,
                  pod_name=None, pod_uid=None, groups=None, expired=False):
        """Registers a service-account token for TokenReview."""
        parts = username.split(":")
        if groups is None:
            groups = ["system:authenticated"]
            if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
                groups = ["system:serviceaccounts", f"system:serviceaccounts:{parts[2]}", "system:authenticated"]
        extra = {}
        if pod_name is not None:
            extra["authentication.kubernetes.io/pod-name"] = [pod_name]
        if pod_uid is not None:
            extra["authentication.kubernetes.io/pod-uid"] = [pod_uid]
        with self._req_lock:
            self._tokens[token] = {"username": username, "uid": uid or str(uuid.uuid4()), "groups": list(groups),
                                   "extra": extra, "audiences": list(audiences), "expired": expired}

    def remove_token(self, token):
        with self._req_lock:
            self._tokens.pop(token, None)

    @property
    def resource_version(self):
        with self.store.cond:
            return self.store.rv

    # --- direct store access ----------------------------------------------------------------------------------
    def _rt_for(self, api_version, kind):
        rt = self.by_kind.get((api_version, kind))
        if rt is None or not rt.storable():
            raise KeyError(f"unknown kind {api_version} {kind}")
        return rt

    def _namespace_obj(self, name):
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def put(self, obj):
        """Creates or replaces obj (status included; its namespace is created if missing). Returns the stored copy."""
        obj = copy.deepcopy(obj)
        rt = self._rt_for(obj.get("apiVersion"), obj.get("kind"))
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace") or ("default" if rt.namespaced else None)
        if not rt.namespaced:
            meta.pop("namespace", None)
            ns = None
        with self.store.cond:
            if ns is not None and _key(self.by_kind[("v1", "Namespace")], None, ns) not in self.store.objects:
                self._create_locked(self.by_kind[("v1", "Namespace")], None, self._namespace_obj(ns))
            old = self.store.objects.get(_key(rt, ns, meta.get("name")))
            if old is None:
                return copy.deepcopy(self._create_locked(rt, ns, obj))
            meta.pop("resourceVersion", None)
            return copy.deepcopy(self._commit_update(rt, ns, self._merge_update(rt, obj, old, keep_status=False), old))

    def delete(self, api_version, kind, namespace, name):
        """Deletes at once (finalizers ignored; objects it owns go too). Returns the last state or None."""
        rt = self._rt_for(api_version, kind)
        with self.store.cond:
            key = _key(rt, namespace if rt.namespaced else None, name)
            old = self.store.objects.get(key)
            if old is None:
                return None
            self._remove_locked(rt, key)
            return copy.deepcopy(old)

    def get(self, api_version, kind, namespace, name):
        rt = self._rt_for(api_version, kind)
        with self.store.cond:
            o = self.store.objects.get(_key(rt, namespace if rt.namespaced else None, name))
            return copy.deepcopy(o) if o is not None else None

    def list(self, api_version, kind, namespace=None):
        rt = self._rt_for(api_version, kind)
        with self.store.cond:
            return [copy.deepcopy(o) for k, o in sorted(self.store.objects.items())
                    if k[0] == rt.group and k[1] == rt.plural and (namespace is None or k[2] == namespace)]

    # --- store operations (caller holds store.cond) -----------------------------------------------------------
    def _create_locked(self, rt, ns, obj):
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        if rt.namespaced:
            meta["namespace"] = ns
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.kind == "Service" and not rt.group:
            self._default_service(obj)
        if rt.kind == "CustomResourceDefinition" and not (obj.get("status") or {}).get("conditions"):
            # what the apiextensions controllers report once the names are accepted and the API is served
            ts = now_rfc3339()
            cond = lambda t, r, m: {"type": t, "status": "True", "lastTransitionTime": ts,  # noqa: E731
                                    "reason": r, "message": m}
            spec = obj.get("spec") or {}
            obj["status"] = {"conditions": [cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                                            cond("Established", "InitialNamesAccepted",
                                                 "the initial names have been accepted")],
                             "acceptedNames": copy.deepcopy(spec.get("names") or {}),
                             "storedVersions": [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]}
        key = _key(rt, ns, meta["name"])
        self.store.objects[key] = obj
        self.store._record("ADDED", key, obj, None)
        if rt.kind == "CustomResourceDefinition":
            self._crd_changed(key[3], obj)
        return obj

    def _default_service(self, obj):
        """What the API server fills in for a new core Service: type, a ClusterIP from 10.96.0.0/12, defaults."""
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if obj.get("status") is None:
            obj["status"] = {"loadBalancer": {}}
        if not spec.get("clusterIP") and spec["type"] != "ExternalName":
            self._next_ip += 1
            n = self._next_ip
            spec["clusterIP"] = f"10.{96 + (n >> 16) % 16}.{(n >> 8) & 255}.{n & 255}"
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv6" if ":" in spec["clusterIP"] else "IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))

    def _merge_update(self, rt, obj, old, keep_status=True, status_only=False):
        """The object an update of old with obj stores (status kept or alone changed, server fields kept)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        om = old["metadata"]
        if status_only:
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            if "managedFields" in meta:
                new["metadata"]["managedFields"] = meta["managedFields"]
            obj = new
            meta = obj["metadata"]
        else:
            if keep_status and rt.status:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            if "managedFields" not in meta and "managedFields" in om:  # kept unless the write sets them
                meta["managedFields"] = copy.deepcopy(om["managedFields"])
            for k in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in om:
                    meta[k] = om[k]
                else:
                    meta.pop(k, None)
            if rt.kind == "Service" and not rt.group:
                spec, ospec = obj.setdefault("spec", {}), old.get("spec") or {}
                for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):  # kept, as the API does
                    if k not in spec and k in ospec and spec.get("type", "ClusterIP") == ospec.get("type"):
                        spec[k] = copy.deepcopy(ospec[k])
                self._default_service(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta.pop("selfLink", None)
        return obj

    def _commit_update(self, rt, ns, obj, old):
        """Caller holds store.cond. Stores obj (from _merge_update) in place of old."""
        meta = obj["metadata"]
        if "generation" in old["metadata"]:
            meta["generation"] = old["metadata"]["generation"] + (1 if _spec_part(obj) != _spec_part(old) else 0)
        if _strip_rv(obj) == _strip_rv(old):
            return old  # a no-op update does not bump the resourceVersion (as the API server does)
        key = _key(rt, ns, meta["name"])
        self.store.objects[key] = obj
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.store.objects[key]
            ev = self.store._record("DELETED", key, None, obj)
            if rt.kind == "CustomResourceDefinition":
                self._crd_changed(key[3], None)
            self._collect_garbage(meta.get("uid"))
            return ev
        self.store._record("MODIFIED", key, obj, old)
        if rt.kind == "CustomResourceDefinition":
            self._crd_changed(key[3], obj)
        return obj

    def _remove_locked(self, rt, key):
        old = self.store.objects.pop(key)
        ev = self.store._record("DELETED", key, None, old)
        if rt.kind == "CustomResourceDefinition":
            self._crd_changed(key[3], None)
        if rt.kind == "Namespace" and not rt.group:
            name = key[3]
            for k in [k for k in self.store.objects if k[2] == name and self.by_path_plural_namespaced(k)]:
                o = self.store.objects.pop(k)
                self.store._record("DELETED", k, None, o)
        self._collect_garbage(old["metadata"].get("uid"))
        return ev

    def _collect_garbage(self, uid):
        """The garbage collector's background propagation, at once: objects whose owners are all gone go too
        (an EndpointSlice with its Service)."""
        gone = [uid] if uid else []
        while gone:
            u = gone.pop()
            live = {o["metadata"].get("uid") for o in self.store.objects.values()}
            for k, o in list(self.store.objects.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == u for r in refs) and not any(r.get("uid") in live for r in refs):
                    del self.store.objects[k]
                    self.store._record("DELETED", k, None, o)
                    gone.append(o["metadata"].get("uid"))

    def by_path_plural_namespaced(self, key):
        for rt in self.types:
            if rt.group == key[0] and rt.plural == key[1]:
                return rt.namespaced
        return False

    def _take_failure(self):
        with self._req_lock:
            if self._fail and self._fail[0] > 0:
                self._fail[0] -= 1
                return self._fail[1], self._fail[2]
        return None

    def _review(self, spec):
        token = spec.get("token") or ""
        wanted = spec.get("audiences") or [API_AUDIENCE]
        with self._req_lock:
            t = copy.deepcopy(self._tokens.get(token))
        if t is None:
            return {"authenticated": False, "user": {}, "error": "[invalid bearer token, token lookup failed]"}
        if t["expired"]:
            return {"authenticated": False, "user": {},
                    "error": "[invalid bearer token, service account token has expired]"}
        common = [a for a in wanted if a in t["audiences"]]
        if not common:
            return {"authenticated": False, "user": {},
                    "error": f"[invalid bearer token, token audiences {json.dumps(t['audiences'])} is invalid for "
                             f"the target audiences {json.dumps(wanted)}]"}
        user = {"username": t["username"], "uid": t["uid"], "groups": t["groups"]}
        if t["extra"]:
            user["extra"] = t["extra"]
        return {"authenticated": True, "user": user, "audiences": common}


def _hard_close(sock):
    """Shuts a connection down under its reader and writer threads. socket.socket.shutdown, not SSLSocket's:
    that one first drops the TLS state, so a concurrent write would go out as plaintext."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _strip_rv(obj):
    o = copy.deepcopy(obj)
    o.get("metadata", {}).pop("resourceVersion", None)
    return o


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def _encode_continue(rv, last_key):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(last_key)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(tok):
    try:
        raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
        d = json.loads(raw)
        return int(d["rv"]), tuple(d["start"])
    except (ValueError, KeyError, TypeError) as e:
        raise bad_request(f"continue key is not valid: {e}")


def _dup_check_hook(pairs):
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f'duplicate field "{k}"')
        seen.add(k)
    return dict(pairs)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "remora-test-kube-apiserver"
    api = None  # KubeApiServer, set by start()

    def log_message(self, fmt, *args):
        pass

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _send_json(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, err):
        self._send_json(err.code, err.status(), err.headers)

    def _body(self):
        self._body_read = True
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline(100)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline(100)
                    break
                data += self.rfile.read(size)
                self.rfile.readline(100)
                if len(data) > MAX_BODY:
                    raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
            return data
        if n > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
        return self.rfile.read(n) if n else b""

    def _json_body(self, strict=False):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        raw = self._body()
        if ctype in ("application/yaml", "application/x-yaml") and yaml is not None:
            try:
                return yaml.safe_load(raw.decode() or "null")
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise bad_request(f"error decoding YAML: {e}")
        if ctype not in ("application/json", "*/*", ""):
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: application/json, application/yaml (not {ctype})")
        try:
            return json.loads(raw or b"null", object_pairs_hook=_dup_check_hook if strict else None)
        except ValueError as e:
            raise bad_request(f"error decoding the request body: {e}")

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def _dispatch(self):
        api = self.api
        self._body_read = False
        with api._req_lock:
            api.requests.append((self.command, self.path))
            if len(api.requests) > MAX_REQUEST_LOG:
                del api.requests[:len(api.requests) - MAX_REQUEST_LOG]
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if path in ("/healthz", "/livez", "/readyz"):
                return self._send_text(200, "ok")
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {api.token}":
                self._body()
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path.startswith("/__test/"):
                return self._test_control(path)
            fail = api._take_failure()
            if fail is not None:
                self._body()
                code, retry_after = fail
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                          504: "Timeout"}.get(code, "InternalError")
                raise ApiError(code, reason, f"injected failure ({code})", headers=headers)
            if path == "/version":
                return self._send_json(200, SERVER_VERSION)
            if path.startswith("/openapi/"):
                return self._openapi(path)
            if path in ("/api", "/apis") or path.startswith("/api/") or path.startswith("/apis/"):
                return self._api(path, params)
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        except _Reply as r:
            self._send_json(r.code, r.obj, r.headers)
        except ApiError as e:
            if not self._body_read and (self.headers.get("Content-Length") not in (None, "0") or
                                        self.headers.get("Transfer-Encoding")):
                self.close_connection = True  # the body was not read: the connection cannot be reused
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug of this server: say so loudly, answer as the API server would
            import traceback
            traceback.print_exc()
            self.close_connection = True
            try:
                self._send_error(ApiError(500, "InternalError", f"an error on the server ({e!r}) has prevented "
                                          "the request from succeeding"))
            except OSError:
                pass

    def _send_text(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _test_control(self, path):
        api = self.api
        if self.command != "POST":
            raise ApiError(405, "MethodNotAllowed", "POST only")
        body = self._json_body() or {}
        if path == "/__test/compact":
            api.compact()
        elif path == "/__test/close-watches":
            api.close_watches()
        elif path == "/__test/tokens":
            api.add_token(**body)
        elif path == "/__test/fail-next":
            api.fail_next(body.get("n", 1), body.get("status", 500), body.get("retryAfter"))
        else:
            raise ApiError(404, "NotFound", "no such test control")
        self._send_json(200, status_obj(200, "", ""))

    # --- discovery --------------------------------------------------------------------------------------------
    def _resource_list(self, group, version):
        rows = []
        for rt in self.api.types:
            if rt.group != group or rt.version != version:
                continue
            row = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                   "verbs": rt.verbs}
            if rt.short_names:
                row["shortNames"] = rt.short_names
            if rt.categories:
                row["categories"] = rt.categories
            rows.append(row)
            if rt.status:
                rows.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced,
                             "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rows}

    def _groups(self):
        groups = {}
        for rt in self.api.types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]

    def _openapi(self, path):
        """OpenAPI v3 documents: every resource's PATCH declares fieldValidation (kubectl asks before writing)."""
        groups = {}
        for rt in self.api.types:
            groups.setdefault((rt.group, rt.version), []).append(rt)
        if path == "/openapi/v3":
            paths = {}
            for (g, v) in groups:
                p = f"api/{v}" if not g else f"apis/{g}/{v}"
                paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash=0"}
            return self._send_json(200, {"paths": paths})
        for (g, v), rts in groups.items():
            p = f"/openapi/v3/api/{v}" if not g else f"/openapi/v3/apis/{g}/{v}"
            if path != p:
                continue
            doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                   "paths": {}, "components": {"schemas": {}}}
            for rt in rts:
                gvk = {"group": g, "version": v, "kind": rt.kind}
                ops = {}
                for verb, method in (("patch", "patch"), ("update", "put"), ("create", "post")):
                    if verb in rt.verbs:
                        ops[method] = {"x-kubernetes-group-version-kind": gvk,
                                       "parameters": [{"name": "fieldValidation", "in": "query",
                                                       "schema": {"type": "string", "uniqueItems": True}},
                                                      {"name": "fieldManager", "in": "query",
                                                       "schema": {"type": "string", "uniqueItems": True}}],
                                       "responses": {"200": {"description": "OK"}}}
                base = f"/api/{v}" if not g else f"/apis/{g}/{v}"
                nspart = "/namespaces/{namespace}" if rt.namespaced else ""
                doc["paths"][f"{base}{nspart}/{rt.plural}/{{name}}"] = ops
            return self._send_json(200, doc)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # --- resources --------------------------------------------------------------------------------------------
    def _api(self, path, params):
        parts = path.strip("/").split("/")
        if parts == ["api"]:
            return self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.api.url.split("://", 1)[1]}]})
        if parts == ["apis"]:
            return self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
        if parts[0] == "api":
            group, rest = "", parts[1:]
        else:
            if len(parts) == 2:
                for g in self._groups():
                    if g["name"] == parts[1]:
                        return self._send_json(200, dict(g, kind="APIGroup", apiVersion="v1"))
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, rest = parts[1], parts[2:]
        version = rest[0]
        rest = rest[1:]
        if not rest:
            if not any(rt.group == group and rt.version == version for rt in self.api.types):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send_json(200, self._resource_list(group, version))
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        rt = self.api.by_path.get((group, version, plural))
        if rt is None or len(rest) > 3 or (len(rest) == 3 and (rest[2] != "status" or not rt.status)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if rt.namespaced is False and ns is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.kind == "TokenReview":
            if self.command != "POST" or name is not None:
                raise ApiError(405, "MethodNotAllowed", 'the server does not allow this method on the requested '
                               'resource', {"kind": "tokenreviews", "group": "authentication.k8s.io"})
            return self._token_review()
        m = self.command
        if name is None:
            if m in ("GET", "HEAD"):
                if params.get("watch") in ("1", "true"):
                    return self._watch(rt, ns, params)
                return self._list(rt, ns, params)
            if m == "POST":
                if rt.namespaced and ns is None:
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                                   "requested resource")
                return self._create(rt, ns, params)
            if m == "DELETE":
                return self._delete_collection(rt, ns, params)
        else:
            if rt.namespaced and ns is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if m in ("GET", "HEAD"):
                return self._get(rt, ns, name)
            if m == "PUT":
                return self._replace(rt, ns, name, sub, params)
            if m == "PATCH":
                return self._patch(rt, ns, name, sub, params)
            if m == "DELETE" and sub is None:
                return self._delete(rt, ns, name)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _get(self, rt, ns, name):
        with self.api.store.cond:
            o = self.api.store.objects.get(_key(rt, ns, name))
            if o is None:
                raise not_found(rt, name)
            if wants_table(self.headers.get("Accept")):
                raise _Reply(200, table(rt, [o], o["metadata"]["resourceVersion"]))
            raise _Reply(200, o)

    def _selectors(self, params):
        return parse_label_selector(params.get("labelSelector", "")), \
            parse_field_selector(params.get("fieldSelector", ""))

    def _matches(self, rt, ns, key, obj, lsel, fsel):
        return (key[0] == rt.group and key[1] == rt.plural and (ns is None or key[2] == ns)
                and label_match(lsel, obj["metadata"].get("labels")) and field_match(fsel, obj))

    def _list(self, rt, ns, params):
        store = self.api.store
        lsel, fsel = self._selectors(params)
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            raise bad_request(f"invalid limit {params.get('limit')!r}")
        if limit < 0:
            raise bad_request("limit must be non-negative")
        cont = params.get("continue")
        rv_param = params.get("resourceVersion", "")
        match = params.get("resourceVersionMatch", "")
        with store.cond:
            start = None
            if cont:
                at, start = _decode_continue(cont)
                if at < store.compacted:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue "
                                   "parameter, or use the continue token in this response to retrieve the "
                                   "remainder of the results. Continuing with the provided token results in an "
                                   "inconsistent list - objects that were created, modified, or deleted between "
                                   "the time the first chunk was returned and now may show up in the list.")
                state = store.state_at(at)
            elif match == "Exact":
                try:
                    at = int(rv_param)
                except ValueError:
                    raise bad_request("resourceVersionMatch=Exact needs a resourceVersion")
                if at > store.rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {at}, current: {store.rv}")
                if at < store.compacted:
                    raise expired(at, store.compacted)
                state = store.state_at(at)
            else:
                if match not in ("", "NotOlderThan"):
                    raise bad_request(f"resourceVersionMatch: Unsupported value: {match!r}")
                if rv_param not in ("", "0"):
                    try:
                        want = int(rv_param)
                    except ValueError:
                        raise bad_request(f"invalid resource version {rv_param!r}")
                    if want > store.rv:
                        raise ApiError(504, "Timeout", f"Too large resource version: {want}, current: {store.rv}")
                at = store.rv
                state = store.objects
            keys = sorted(k for k, o in state.items()
                          if o is not None and self._matches(rt, ns, k, o, lsel, fsel))
            if start is not None:
                keys = [k for k in keys if k > start]
            meta = {"resourceVersion": str(at)}
            if limit and len(keys) > limit:
                meta["continue"] = _encode_continue(at, keys[limit - 1])
                if not lsel and not fsel:  # as the API server: no count when a selector filters
                    meta["remainingItemCount"] = len(keys) - limit
                keys = keys[:limit]
            items = [_strip_for_list(rt, copy.deepcopy(state[k])) for k in keys]
        if wants_table(self.headers.get("Accept")):
            return self._send_json(200, table(rt, items, at, cont=meta.get("continue")))
        self._send_json(200, {"apiVersion": rt.api_version, "kind": rt.kind + "List", "metadata": meta,
                              "items": items})

    def _watch(self, rt, ns, params):
        api, store = self.api, self.api.store
        lsel, fsel = self._selectors(params)
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true")
        initial = params.get("sendInitialEvents") in ("1", "true")
        rv_param = params.get("resourceVersion", "")
        try:
            timeout = float(params.get("timeoutSeconds") or random.uniform(1800, 3600))
        except ValueError:
            raise bad_request("timeoutSeconds must be a number")
        deadline = time.monotonic() + min(timeout, 3600)
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise bad_request(f"invalid resource version {rv_param!r}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True
        sock = self.connection
        self._watch_rt = rt if wants_table(self.headers.get("Accept")) else None
        self._watch_headers = True
        with store.cond:
            gen = api._closing_gen
            api._watches.add(sock)
        try:
            self._watch_stream(rt, ns, lsel, fsel, bookmarks, initial, rv_param, deadline, gen)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, OSError, ssl.SSLError):
            pass
        finally:
            with store.cond:
                api._watches.discard(sock)

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, type_, obj):
        if self._watch_rt is not None and type_ in ("ADDED", "MODIFIED", "DELETED"):
            obj = table(self._watch_rt, [obj], obj["metadata"].get("resourceVersion"), headers=self._watch_headers)
            self._watch_headers = False  # column definitions come with the first event only
        self._chunk(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

    def _bookmark(self, rt, rv, initial_end=False):
        meta = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        self._event("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})

    def _watch_stream(self, rt, ns, lsel, fsel, bookmarks, initial, rv_param, deadline, gen):
        api, store = self.api, self.api.store
        out = []
        with store.cond:
            if rv_param in ("", "0") or initial:
                pos = store.rv
                for k in sorted(store.objects):
                    o = store.objects[k]
                    if self._matches(rt, ns, k, o, lsel, fsel):
                        out.append(("ADDED", copy.deepcopy(o)))
                if initial:
                    out.append(("BOOKMARK-END", None))
            else:
                pos = int(rv_param)
                if pos < store.compacted:
                    out.append(("ERROR", expired(pos, store.compacted).status()))
        for type_, obj in out:
            if type_ == "BOOKMARK-END":
                self._bookmark(rt, pos, initial_end=True)
            else:
                self._event(type_, obj)
            if type_ == "ERROR":
                return
        next_bookmark = time.monotonic() + api.bookmark_interval
        while True:
            with store.cond:
                while True:
                    now = time.monotonic()
                    if api._closing_gen != gen or now >= deadline:
                        return
                    if store.rv > pos:
                        break
                    if bookmarks and now >= next_bookmark:
                        break
                    store.cond.wait(timeout=max(0.01, min(deadline, next_bookmark if bookmarks else deadline)
                                                - now))
                events = []
                for ev in store.events_after(pos):
                    t = self._event_for(rt, ns, ev, lsel, fsel)
                    if t is not None:
                        events.append(t)
                pos = store.rv
            for type_, obj in events:
                self._event(type_, obj)
            if bookmarks and time.monotonic() >= next_bookmark:
                self._bookmark(rt, pos)
                next_bookmark = time.monotonic() + api.bookmark_interval

    def _event_for(self, rt, ns, ev, lsel, fsel):
        """The event a watch with these selectors sees (objects moving out of a selector are DELETED for it)."""
        k = ev.key
        if k[0] != rt.group or k[1] != rt.plural or (ns is not None and k[2] != ns):
            return None
        now_in = ev.type != "DELETED" and label_match(lsel, ev.obj["metadata"].get("labels")) and \
            field_match(fsel, ev.obj)
        was_in = ev.old is not None and label_match(lsel, ev.old["metadata"].get("labels")) and \
            field_match(fsel, ev.old)
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if was_in else None
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if now_in else None
        if now_in and was_in:
            return ("MODIFIED", ev.obj)
        if now_in:
            return ("ADDED", ev.obj)
        if was_in:
            return ("DELETED", ev.obj)
        return None

    # --- writes -----------------------------------------------------------------------------------------------
    def _check_body(self, rt, obj, name=None, params=None):
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format")
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if av != rt.api_version or kind != rt.kind:
            raise invalid(rt, (obj.get("metadata") or {}).get("name", ""), "kind", "FieldValueInvalid",
                          f"Invalid value: \"{av} {kind}\": must be {rt.api_version} {rt.kind} for this path")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if not meta.get("name") and not (name is None and meta.get("generateName")):
            raise invalid(rt, "", "metadata.name", "FieldValueRequired",
                          "Required value: name or generateName is required")
        if name is not None and meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                              f"({name})")
        if params is not None and params.get("fieldValidation") == "Strict" and rt.kind in _TOP_FIELDS:
            allowed = _TOP_FIELDS[rt.kind] | {"apiVersion", "kind", "metadata"}
            bad = [k for k in obj if k not in allowed] + [f"metadata.{k}" for k in meta if k not in _META_FIELDS]
            if bad:
                raise bad_request(f'strict decoding error: unknown field "{bad[0]}"')
        elif params is not None and params.get("fieldValidation") == "Strict":
            bad = [f"metadata.{k}" for k in meta if k not in _META_FIELDS]
            if bad:
                raise bad_request(f'strict decoding error: unknown field "{bad[0]}"')

    def _need_namespace(self, ns):
        if ns is not None and ("", "namespaces", "", ns) not in self.api.store.objects:
            raise namespace_not_found(ns)

    def _create(self, rt, ns, params):
        obj = self._json_body(strict=params.get("fieldValidation") == "Strict")
        self._check_body(rt, obj, params=params)
        meta = obj["metadata"]
        if rt.namespaced and meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        if not meta.get("name"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if rt.status and rt.crd:
            obj.pop("status", None)
        if rt.kind == "Namespace" and not rt.group:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if rt.kind == "Pod" and not rt.group:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        warnings = self._admit(rt, obj, params)
        if params.get("dryRun") == "All":
            return self._send_json(201, obj, warnings)
        store = self.api.store
        with store.cond:
            self._need_namespace(ns if rt.namespaced else None)
            key = _key(rt, ns, meta["name"])
            if key in store.objects:
                raise ApiError(409, "AlreadyExists", f'{rt.group_resource} "{meta["name"]}" already exists',
                               _details(rt, meta["name"]))
            created = copy.deepcopy(self.api._create_locked(rt, ns, obj))
        self._send_json(201, created, warnings)

    def _admit(self, rt, obj, params):
        """Prunes, defaults and validates a custom resource with its CRD's schema; returns Warning headers."""
        if rt.schema is None:
            return None
        unknown = schema_prune(obj, rt.schema)
        mode = params.get("fieldValidation") or "Warn"
        if unknown and mode == "Strict":
            raise bad_request("strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
        schema_default(obj, rt.schema)
        errs = schema_validate(obj, rt.schema)
        if errs:
            name = (obj.get("metadata") or {}).get("name", "")
            d = _details(rt, name)
            d["kind"] = rt.kind
            d["causes"] = [{"reason": r, "message": f"{m}", "field": f} for f, r, m in errs]
            text = [f"{f}: {m}" for f, _, m in errs]
            msg = text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
            raise ApiError(422, "Invalid", f'{rt.kind}.{rt.group} "{name}" is invalid: {msg}', d)
        if unknown and mode == "Warn":
            return {"Warning": ", ".join('299 - "unknown field \\"%s\\""' % u for u in unknown)}
        return None

    def _replace(self, rt, ns, name, sub, params):
        obj = self._json_body(strict=params.get("fieldValidation") == "Strict")
        self._check_body(rt, obj, name, params=params)
        store = self.api.store
        with store.cond:
            old = store.objects.get(_key(rt, ns, name))
            if old is None:
                raise not_found(rt, name)
            want = obj["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if want and old["metadata"].get("uid") and obj["metadata"].get("uid") not in (None, "",
                                                                                      old["metadata"]["uid"]):
                raise conflict(rt, name)
            new = self.api._merge_update(rt, obj, old, keep_status=True, status_only=sub == "status")
            warnings = self._admit(rt, new, params)
            if params.get("dryRun") == "All":
                raise _Reply(200, new, warnings)
            out = copy.deepcopy(self.api._commit_update(rt, ns, new, old))
        self._send_json(200, out, warnings)

    def _patch(self, rt, ns, name, sub, params):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        raw = self._body()
        try:
            if ctype == "application/apply-patch+yaml":
                if yaml is None:
                    raise ValueError("no YAML library")
                patch = yaml.safe_load(raw.decode() or "null")
            else:
                patch = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) + ((yaml.YAMLError,) if yaml else ()) as e:
            raise bad_request(f"error decoding patch: {e}")
        store = self.api.store
        with store.cond:
            old = store.objects.get(_key(rt, ns, name))
            if ctype == "application/apply-patch+yaml":
                if not params.get("fieldManager"):
                    raise bad_request("PATCH requests of content type application/apply-patch+yaml require a "
                                      "fieldManager")
                if not isinstance(patch, dict):
                    raise bad_request("the body of an apply patch must be an object")
                if patch.get("apiVersion") != rt.api_version or patch.get("kind") != rt.kind:
                    raise invalid(rt, name, "kind", "FieldValueInvalid",
                                  f"Invalid value: \"{patch.get('apiVersion')} {patch.get('kind')}\": must be "
                                  f"{rt.api_version} {rt.kind}")
                pmeta = patch.get("metadata") or {}
                if pmeta.get("name") not in (None, name):
                    raise bad_request("the name of the object does not match the name on the URL")
                if old is None:
                    if sub == "status":
                        raise not_found(rt, name)
                    obj, mf = server_side_apply({}, patch, params["fieldManager"], rt.api_version, None, True)
                    obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
                    obj.setdefault("metadata", {})["name"] = name
                    obj["metadata"]["managedFields"] = mf
                    if rt.status and rt.crd:
                        obj.pop("status", None)
                    self._need_namespace(ns if rt.namespaced else None)
                    warnings = self._admit(rt, obj, params)
                    if params.get("dryRun") == "All":
                        raise _Reply(201, obj, warnings)
                    created = copy.deepcopy(self.api._create_locked(rt, ns, obj))
                    raise _Reply(201, created, warnings)
                new, mf = server_side_apply(old, patch, params["fieldManager"], rt.api_version, sub,
                                            params.get("force") in ("true", "1"))
                new.setdefault("metadata", {})["managedFields"] = mf
            else:
                if old is None:
                    raise not_found(rt, name)
                try:
                    if ctype == "application/merge-patch+json":
                        new = merge_patch(old, patch)
                    elif ctype == "application/json-patch+json":
                        new = json_patch(old, patch)
                    elif ctype == "application/strategic-merge-patch+json":
                        if rt.crd:
                            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                           "format - accepted media types include: application/json-patch+json, "
                                           "application/merge-patch+json, application/apply-patch+yaml")
                        new = strategic_merge_patch(old, patch)
                    else:
                        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                       f"format - accepted media types include: application/json-patch+json, "
                                       f"application/merge-patch+json, application/apply-patch+yaml, "
                                       f"application/strategic-merge-patch+json (not {ctype!r})")
                except ValueError as e:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: {e}")
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise bad_request("the patch does not produce an object")
            want = new["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if new["metadata"].get("name") != name:
                raise bad_request("the patch changes metadata.name")
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            new = self.api._merge_update(rt, new, old, keep_status=True, status_only=sub == "status")
            warnings = self._admit(rt, new, params)
            if params.get("dryRun") == "All":
                raise _Reply(200, new, warnings)
            out = copy.deepcopy(self.api._commit_update(rt, ns, new, old))
        self._send_json(200, out, warnings)

    def _delete_options(self):
        try:
            body = self._json_body()
        except ApiError:
            body = None
        return body if isinstance(body, dict) else {}

    def _delete(self, rt, ns, name):
        opts = self._delete_options()
        store = self.api.store
        with store.cond:
            key = _key(rt, ns, name)
            old = store.objects.get(key)
            if old is None:
                raise not_found(rt, name)
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                               f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                               f'{old["metadata"].get("uid")}', _details(rt, name))
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                               f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                               f'ResourceVersion in object meta: {old["metadata"]["resourceVersion"]}',
                               _details(rt, name))
            if "All" in (opts.get("dryRun") or []):
                raise _Reply(200, old)
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    raise _Reply(200, old)
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                store.objects[key] = new
                out = copy.deepcopy(new)
                store._record("MODIFIED", key, new, old)
                raise _Reply(200, out)
            out = copy.deepcopy(self.api._remove_locked(rt, key))
        if rt.kind == "Namespace" and not rt.group:
            out["status"] = {"phase": "Terminating"}
        self._send_json(200, out)

    def _delete_collection(self, rt, ns, params):
        if "deletecollection" not in rt.verbs:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                           "resource")
        self._delete_options()
        lsel, fsel = self._selectors(params)
        store = self.api.store
        with store.cond:
            keys = sorted(k for k, o in store.objects.items() if self._matches(rt, ns, k, o, lsel, fsel))
            items = []
            for k in keys:
                items.append(_strip_for_list(rt, copy.deepcopy(store.objects[k])))
                self.api._remove_locked(rt, k)
            rv = store.rv
        self._send_json(200, {"apiVersion": rt.api_version, "kind": rt.kind + "List",
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    def _token_review(self):
        body = self._json_body()
        if not isinstance(body, dict) or body.get("kind") != "TokenReview" or \
                body.get("apiVersion") != "authentication.k8s.io/v1":
            raise bad_request("the body must be an authentication.k8s.io/v1 TokenReview")
        spec = body.get("spec") or {}
        if not spec.get("token"):
            rt = self.api.by_kind[("authentication.k8s.io/v1", "TokenReview")]
            raise invalid(rt, "", "spec.token", "FieldValueRequired", "Required value")
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec, "status": self.api._review(spec)}
        self._send_json(201, out)


# ---------------------------------------------------------------------------------------------------------------
# A raw client (http.client), for tests


class ApiClient:
    """Requests to the server as a Kubernetes client makes them: c.request("GET", path) -> (status, body)."""

    def __init__(self, url, token, ca_file=None, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        self.https, self.host, self.port, self.token, self.timeout = u.scheme == "https", u.hostname, u.port, \
            token, timeout
        self.ctx = ssl.create_default_context(cafile=ca_file) if self.https else None

    def _conn(self, timeout=None):
        import http.client
        t = self.timeout if timeout is None else timeout
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=t, context=self.ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=t)

    def request(self, method, path, body=None, content_type="application/json", token=None):
        """(status, decoded JSON body or text) of one request; body: a dict/list (JSON) or str/bytes."""
        conn = self._conn()
        try:
            headers = {"Accept": "application/json"}
            tok = self.token if token is None else token
            if tok:
                headers["Authorization"] = f"Bearer {tok}"
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str)
                                                             else json.dumps(body).encode())
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def watch(self, path, timeout=10.0):
        """A generator of watch events ({"type","object"}) of path (with ?watch=1...) until the stream ends.

        Raises socket.timeout when no line arrives within timeout seconds."""
        conn = self._conn(timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"watch {path}: HTTP {resp.status}: {resp.read()[:300]!r}")
            while True:
                line = resp.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------------------------
# Process mode


def load_objects(path):
    """The objects of a YAML (or JSON) file: several documents, List kinds expanded."""
    with open(path) as f:
        text = f.read()
    docs = list(yaml.safe_load_all(text)) if yaml is not None else [json.loads(text)]
    out = []
    for d in docs:
        if not d:
            continue
        if d.get("kind", "").endswith("List") and isinstance(d.get("items"), list):
            out.extend(d["items"])
        else:
            out.append(d)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    ap.add_argument("--objects", help="YAML file of objects to load at start")
    ap.add_argument("--token", help="the accepted bearer token (default: random)")
    ap.add_argument("--dir", help="where the token, CA and certificates go (default: a new temporary directory)")
    ap.add_argument("--state-file", help="also write {url, ca_file, token_file, token} as JSON to this file")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    ap.add_argument("--crds", help="a CRD file or directory (helm/remora/crds): custom resources are pruned, "
                    "defaulted and validated with their schemas")
    args = ap.parse_args()
    srv = KubeApiServer(tls=not args.http, host=args.host, port=args.port, token=args.token, workdir=args.dir,
                        bookmark_interval=args.bookmark_interval, crds=args.crds)
    if args.objects:
        for o in load_objects(args.objects):
            srv.put(o)
    srv.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.state_file:
        tmp = args.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"url": srv.url, "ca_file": srv.ca_file, "token_file": srv.token_file, "token": srv.token}, f)
        os.replace(tmp, args.state_file)
    print(f"{srv.url} {srv.ca_file or '-'} {srv.token_file}", flush=True)
    while not stop.wait(0.5):
        pass
    srv.stop()


if __name__ == "__main__":
    main()
