"""Builders of Kubernetes objects in the shapes real clusters return (`kubectl get -o json`).

For tests of Remora's Kubernetes mode against kube_api.py: what the controllers of a real cluster
would have filled in (clusterIP, EndpointSlices with their labels and owner, a Running pod's status)
is filled in here, so the control plane reads the same shapes it will read in a cluster.

    namespace("shop", labels={"remora.dev/inject": "enabled"})
    service("web", "shop", ports=[svc_port("http", 80, 8080, app_protocol="http")], cluster_ip="10.96.0.10")
    pod("web-0", "shop", ip="10.244.1.5", service_account="web", labels={"app": "web"})
    endpoint_slice("web", "shop", [endpoint("10.244.1.5", pod_name="web-0")], [slice_port("http", 8080)])
    config_map("remora-trust-anchor", "shop", {"trust-anchor.pem": PEM})
    remora("HTTPRoute", "web", "shop", spec={...})
    service_with_pods("web", "shop", [("web-0", "10.244.1.5")], ports=[...])  # -> [Service, Pods..., EndpointSlice]
"""

import copy
import hashlib
import uuid

_NODE = "node-1"


def _uid(*parts):
    """A stable uid for the same (kind, namespace, name), so tests can predict targetRef uids."""
    return str(uuid.UUID(hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]))


def _suffix(*parts, n=5):
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    h = int(hashlib.sha256("/".join(parts).encode()).hexdigest(), 16)
    out = ""
    for _ in range(n):
        h, r = divmod(h, len(alphabet))
        out += alphabet[r]
    return out


def _meta(name, namespace, labels=None, annotations=None, uid=None):
    m = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    if uid:
        m["uid"] = uid
    if labels:
        m["labels"] = dict(labels)
    if annotations:
        m["annotations"] = dict(annotations)
    return m


def namespace(name, labels=None, annotations=None):
    lab = {"kubernetes.io/metadata.name": name}
    lab.update(labels or {})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, lab, annotations),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def svc_port(name, port, target_port=None, protocol="TCP", app_protocol=None):
    """A ServicePort: targetPort an int or a named container port (string); defaults to port."""
    p = {"name": name, "protocol": protocol, "port": port, "targetPort": port if target_port is None else target_port}
    if app_protocol:
        p["appProtocol"] = app_protocol
    if name is None:
        del p["name"]
    return p


def service(name, namespace="default", ports=None, cluster_ip="10.96.0.10", selector=None, labels=None,
            annotations=None, type_="ClusterIP", ipv6=None, external_name=None):
    """A core v1 Service as a cluster returns it (ClusterIP allocated; cluster_ip=None for a headless one;
    type_="ExternalName" has no cluster IP and spec.externalName, external_name or NAME.example.com)."""
    ports = ports if ports is not None else [svc_port("http", 80, 8080)]
    if type_ == "ExternalName":
        spec = {"type": type_, "externalName": external_name or f"{name}.example.com", "sessionAffinity": "None"}
        if ports:
            spec["ports"] = ports
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": _meta(name, namespace, labels, annotations, _uid("Service", namespace, name)),
                "spec": spec, "status": {"loadBalancer": {}}}
    spec = {"ports": ports, "selector": dict(selector if selector is not None else {"app": name}),
            "clusterIP": cluster_ip if cluster_ip is not None else "None",
            "clusterIPs": [cluster_ip if cluster_ip is not None else "None"] + ([ipv6] if ipv6 else []),
            "type": type_, "sessionAffinity": "None",
            "ipFamilies": ["IPv4"] + (["IPv6"] if ipv6 else []),
            "ipFamilyPolicy": "PreferDualStack" if ipv6 else "SingleStack", "internalTrafficPolicy": "Cluster"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, labels, annotations, _uid("Service", namespace, name)),
            "spec": spec, "status": {"loadBalancer": {}}}


def slice_port(name, port, protocol="TCP", app_protocol=None):
    """An EndpointSlice port: the target (container) port, named as the Service port it serves."""
    p = {"name": name, "port": port, "protocol": protocol}
    if app_protocol:
        p["appProtocol"] = app_protocol
    return p


def endpoint(ip, pod_name=None, namespace="default", node=_NODE, ready=True, serving=None, terminating=False,
             zone=None, pod_uid=None):
    """One endpoint of an EndpointSlice (ip: one address or a list; targetRef is the Pod when pod_name is given)."""
    e = {"addresses": list(ip) if isinstance(ip, (list, tuple)) else [ip],
         "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}
    if pod_name:
        e["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": pod_name,
                          "uid": pod_uid or _uid("Pod", namespace, pod_name)}
    if node:
        e["nodeName"] = node
    if zone:
        e["zone"] = zone
    return e


def endpoint_slice(service_name, namespace="default", endpoints=(), ports=None, name=None, address_type="IPv4",
                   labels=None):
    """A discovery.k8s.io/v1 EndpointSlice as the endpointslice controller writes it for service_name."""
    for e in endpoints:
        if "targetRef" in e:
            e["targetRef"]["namespace"] = namespace
    lab = {"kubernetes.io/service-name": service_name,
           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    lab.update(labels or {})
    name = name or f"{service_name}-{_suffix('EndpointSlice', namespace, service_name, address_type)}"
    meta = _meta(name, namespace, lab, {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"})
    meta["generateName"] = f"{service_name}-"
    meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": service_name,
                                "uid": _uid("Service", namespace, service_name), "controller": True,
                                "blockOwnerDeletion": True}]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": address_type, "endpoints": [dict(e) for e in endpoints],
            "ports": list(ports) if ports is not None else [slice_port("http", 8080)]}


def pod(name, namespace="default", ip="10.244.0.5", service_account="default", labels=None, annotations=None,
        node=_NODE, phase="Running", ready=True, containers=None, ipv6=None, host_ip="172.18.0.2"):
    """A Pod as the kubelet reports it once started (phase, podIP/podIPs, conditions, container statuses)."""
    containers = containers or [{"name": "app", "image": "registry.example/app:1",
                                 "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]}]
    for c in containers:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
    spec = {"containers": containers, "serviceAccountName": service_account, "serviceAccount": service_account,
            "nodeName": node, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName":
            "default-scheduler", "terminationGracePeriodSeconds": 30, "securityContext": {},
            "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}]}
    ts = "2026-01-01T00:00:00Z"
    running = phase == "Running"
    cond = lambda t, s: {"type": t, "status": "True" if s else "False", "lastProbeTime": None,  # noqa: E731
                         "lastTransitionTime": ts}
    status = {"phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": ts,
              "qosClass": "BestEffort",
              "conditions": [cond("PodReadyToStartContainers", running), cond("Initialized", True),
                             cond("Ready", running and ready), cond("ContainersReady", running and ready),
                             cond("PodScheduled", True)],
              "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": running and ready,
                                     "restartCount": 0, "started": running,
                                     "containerID": "containerd://" + _uid(name, c["name"]).replace("-", ""),
                                     "state": {"running": {"startedAt": ts}} if running else
                                     {"waiting": {"reason": "ContainerCreating"}}} for c in containers]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}] + ([{"ip": ipv6}] if ipv6 else [])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(name, namespace, labels, annotations, _uid("Pod", namespace, name)),
            "spec": spec, "status": status}


def config_map(name, namespace="default", data=None, labels=None, annotations=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace, labels, annotations),
            "data": dict(data or {})}


def remora(kind, name, namespace="default", spec=None, labels=None, annotations=None):
    """A remora.dev/v1 custom resource (kind as Remora's documents name it: Service, HTTPRoute, ...)."""
    return {"apiVersion": "remora.dev/v1", "kind": kind, "metadata": _meta(name, namespace, labels, annotations),
            "spec": dict(spec or {})}


def service_with_pods(name, namespace="default", pods=(), ports=None, cluster_ip="10.96.0.10",
                      service_account=None, labels=None):
    """[Service, Pod..., EndpointSlice] for a Service whose pods (name, ip) are all ready.

    ports: ServicePorts (svc_port). The pods' container declares the target ports (a named targetPort is
    a container port of that name, numbered as the Service port); the slice carries the numbers, as the
    endpointslice controller resolves them."""
    ports = ports if ports is not None else [svc_port("http", 80, 8080)]
    sel = {"app": name}
    out = [service(name, namespace, ports, cluster_ip, selector=sel, labels=labels)]
    cports, sports = [], []
    for p in ports:
        named = isinstance(p["targetPort"], str)
        number = p["port"] if named else p["targetPort"]
        cp = {"containerPort": number, "protocol": p.get("protocol", "TCP")}
        cname = p["targetPort"] if named else p.get("name", "")
        if cname and len(cname) <= 15:
            cp["name"] = cname
        if all(c["containerPort"] != number for c in cports):
            cports.append(cp)
        sports.append(slice_port(p.get("name", ""), number, p.get("protocol", "TCP"), p.get("appProtocol")))
    eps = []
    for pname, ip in pods:
        containers = [{"name": "app", "image": "registry.example/app:1", "ports": copy.deepcopy(cports)}]
        out.append(pod(pname, namespace, ip, service_account or name, labels=sel, containers=containers))
        eps.append(endpoint(ip, pname, namespace))
    out.append(endpoint_slice(name, namespace, eps, sports))
    return out
