#!/usr/bin/env node
// Writes helm/remora/crds/*.yaml: one CustomResourceDefinition per remora.dev/v1 kind, with an
// openAPIV3Schema that mirrors the structure control/src/document.c accepts (types, enums, required
// fields, the ranges it enforces). Rules that need more than one field's value (a ReplacePrefixMatch
// with its rule's matches, a backendRequest longer than request, a MeshTLS outside remora-system) and
// references between objects stay the control plane's job; it reports them in status conditions.
//
//   node gen_crds.js            rewrite the files
//   node gen_crds.js --check    exit 1 when a file differs from what would be written (tests run this)
//
// The schemas are structural (Kubernetes' rules for CRDs): every node has a type, value validations
// (anyOf/oneOf/not) only say which fields are required. The one open shape is a Service endpoint,
// which is a string ("IP:PORT") or a mapping ({address|dns, weight, serviceAccount}): structural
// schemas cannot say "string or object", so that item keeps x-kubernetes-preserve-unknown-fields and
// the control plane checks it.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const OUT = path.resolve(__dirname, "../../../helm/remora/crds");
const GROUP = "remora.dev";

// ------------------------------------------------------------------------------------ building blocks

const str = (description, extra = {}) => ({ type: "string", description, ...extra });
const int = (description, minimum, maximum, extra = {}) => ({ type: "integer", format: "int32", minimum, maximum, description, ...extra });
const obj = (description, properties, required, extra = {}) => {
  const o = { type: "object", description, properties };
  if (required && required.length) o.required = required;
  return { ...o, ...extra };
};
const arr = (description, items, extra = {}) => ({ type: "array", description, items, ...extra });

const DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const name = (description) => str(description, { minLength: 1, maxLength: 63, pattern: DNS_LABEL });
// document.c's rm_document_parse_duration: 1-4 parts of 1-5 digits with h, m, s or ms
const duration = (description) => str(description + " (units h, m, s, ms: 10s, 500ms, 1m30s)", { pattern: "^([0-9]{1,5}(h|ms|m|s)){1,4}$" });
// IP literal and port; IPv6 in brackets. The exact address syntax (inet_pton) is checked by the control plane.
const IP_PORT = "^(([0-9]{1,3}\\.){3}[0-9]{1,3}|\\[[0-9a-fA-F:.]+\\]):[0-9]{1,5}$";
// RFC 9110 token
const TOKEN = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
const port = (description) => int(description, 1, 65535);
const percent = (description) => int(description, 0, 100);
const GRPC_ERROR_CODES = ["CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
  "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

const serviceRefProps = () => ({
  group: str('"" (or "core"): references name a Service', { enum: ["", "core"] }),
  kind: str("Service (the default)", { enum: ["Service"] }),
  name: name("the Service's name"),
  namespace: name("the Service's namespace; default: the referring resource's"),
  port: port("the Service port"),
});
const parentRef = () => obj("a Service whose requests this route takes", serviceRefProps(), ["name"]);
const backendRef = () => obj("a Service the matched requests go to", {
  ...serviceRefProps(),
  weight: int("share of the rule's requests; default 1", 0, 1000000),
}, ["name"]);

const headerMatch = () => obj("a header the request must carry", {
  type: str("Exact (default) or RegularExpression (PCRE2, anchored, at most 4096 bytes)", { enum: ["Exact", "RegularExpression"] }),
  name: str("the header name", { pattern: "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$", maxLength: 256 }),
  value: str("the value, or the regular expression"),
}, ["name", "value"]);

const timeouts = () => obj("request timeouts; 0s: none", {
  request: duration("the whole exchange, retries included"),
  backendRequest: duration("each try; not longer than request"),
});

const headerFilter = (what) => obj(what, {
  set: arr("replace or add", obj("a header", {
    name: str("the header name (stored lower-case)", { pattern: TOKEN, maxLength: 256 }),
    value: str("the value", { minLength: 1, maxLength: 4096 }),
  }, ["name", "value"]), { maxItems: 16 }),
  add: arr("append", obj("a header", {
    name: str("the header name (stored lower-case)", { pattern: TOKEN, maxLength: 256 }),
    value: str("the value", { minLength: 1, maxLength: 4096 }),
  }, ["name", "value"]), { maxItems: 16 }),
  remove: arr("header names to remove", str("a header name", { pattern: TOKEN, maxLength: 256 }), { maxItems: 16 }),
});

const mirror = () => obj("a copy of the requests to another Service, its answers discarded", {
  backendRef: obj("the Service", serviceRefProps(), ["name"]),
  percent: percent("share of the requests mirrored; default 100"),
  fraction: obj("share of the requests mirrored", {
    numerator: int("numerator", 0, 1000000),
    denominator: int("denominator; default 100", 1, 1000000),
  }, ["numerator"]),
}, ["backendRef"], { not: { required: ["percent", "fraction"] } });

const pathModifier = () => obj("how the path is replaced", {
  type: str("ReplaceFullPath or ReplacePrefixMatch", { enum: ["ReplaceFullPath", "ReplacePrefixMatch"] }),
  replaceFullPath: str("the new path (type ReplaceFullPath)", { maxLength: 1024, pattern: "^/[^?# \\t\\r\\n]*$" }),
  replacePrefixMatch: str("replaces the matched prefix; empty removes it (type ReplacePrefixMatch)",
    { maxLength: 1024, pattern: "^(/[^?# \\t\\r\\n]*)?$" }),
}, ["type"], { not: { required: ["replaceFullPath", "replacePrefixMatch"] } });

const HOSTNAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

const extensionRef = () => obj("a Remora filter resource in the route's namespace (a FaultInjection)", {
  group: str("remora.dev", { enum: [GROUP] }),
  kind: str("FaultInjection", { enum: ["FaultInjection"] }),
  name: name("the FaultInjection's name"),
}, ["name"]);

const filter = (grpc) => {
  const types = grpc
    ? ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"]
    : ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect", "URLRewrite", "ExtensionRef"];
  const props = {
    type: str("the filter type; the field of that name (lower camel case) holds its settings", { enum: types }),
    requestHeaderModifier: headerFilter("headers of the request"),
    responseHeaderModifier: headerFilter("headers of the response"),
    requestMirror: mirror(),
  };
  const fields = { RequestHeaderModifier: "requestHeaderModifier", ResponseHeaderModifier: "responseHeaderModifier",
    RequestMirror: "requestMirror", RequestRedirect: "requestRedirect", URLRewrite: "urlRewrite", ExtensionRef: "extensionRef" };
  if (!grpc) {
    props.requestRedirect = obj("answer with a redirect (the rule then has no backendRefs)", {
      scheme: str("http or https", { enum: ["http", "https"] }),
      hostname: str("the new host", { maxLength: 253, pattern: HOSTNAME }),
      port: port("the new port"),
      statusCode: { type: "integer", format: "int32", enum: [301, 302, 303, 307, 308], description: "default 302" },
      path: pathModifier(),
    });
    props.urlRewrite = obj("rewrite the host and/or path before forwarding", {
      hostname: str("the new host", { maxLength: 253, pattern: HOSTNAME }),
      path: pathModifier(),
    }, [], { minProperties: 1 });
  }
  props.extensionRef = extensionRef();
  // one settings field; that it is the field of the type is checked by the control plane (a structural
  // schema has no if/then)
  return obj("a filter applied to the requests of the rule, in order", props, ["type"], {
    oneOf: types.map((t) => ({ required: [fields[t]] })),
  });
};

const sessionPersistence = () => obj("requests carrying the header or cookie go to the endpoint its value hashes to (GEP-1619)", {
  type: str("Cookie (default) or Header", { enum: ["Cookie", "Header"] }),
  sessionName: str("the header or cookie name", { pattern: TOKEN, maxLength: 128 }),
}, ["sessionName"]);

const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

const httpMatch = () => obj("a request the rule takes; every field given must match", {
  path: obj("the path; default PathPrefix /", {
    type: str("PathPrefix (default), Exact or RegularExpression", { enum: ["Exact", "PathPrefix", "RegularExpression"] }),
    value: str("the path (starting with /), or the regular expression", { maxLength: 4096 }),
  }),
  headers: arr("headers", headerMatch()),
  method: str("the HTTP method", { enum: HTTP_METHODS }),
});

const grpcMatch = () => obj("a call the rule takes", {
  method: obj("the gRPC service and/or method", {
    type: str("Exact (default) or RegularExpression", { enum: ["Exact", "RegularExpression"] }),
    service: str("pkg.Service (Exact: letters, digits, '_' and '.')", { maxLength: 4080 }),
    method: str("Method (Exact: letters, digits, '_')", { maxLength: 4080 }),
  }),
  headers: arr("headers", headerMatch()),
});

const retry = (grpc) => obj("retries of the rule's requests (GEP-1731); absent: none", {
  attempts: int("retries after the first try; default 1", 0, 10),
  backoff: duration("base of the full-jitter exponential backoff, 1ms-1m; default 25ms"),
  codes: grpc
    ? arr("gRPC statuses that are retried; default [UNAVAILABLE]", str("a gRPC status name", { enum: GRPC_ERROR_CODES }),
      { "x-kubernetes-list-type": "set" })
    : arr("HTTP statuses that are retried; default [503]", int("an HTTP status", 400, 599), { "x-kubernetes-list-type": "set" }),
  conditions: arr("failures that are retried; default [connect-failure, refused-stream]",
    str("a condition", { enum: ["connect-failure", "refused-stream", "reset"] }), { "x-kubernetes-list-type": "set" }),
});

const routeSpec = (grpc) => obj(`the ${grpc ? "GRPCRoute" : "HTTPRoute"}'s parents and rules`, {
  parentRefs: arr("the Services whose requests this route takes", parentRef(), { minItems: 1 }),
  rules: arr("in order; the first rule with a matching match wins", obj("a rule", {
    matches: arr("any one matches (OR); none: every request", grpc ? grpcMatch() : httpMatch()),
    backendRefs: arr("where the matched requests go (weights not all 0)", backendRef(), { minItems: 1 }),
    timeouts: timeouts(),
    filters: arr("filters, in order", filter(grpc), { maxItems: 16 }),
    retry: retry(grpc),
    sessionPersistence: sessionPersistence(),
  }), { minItems: 1 }),
}, ["parentRefs", "rules"]);

const targetRefs = (routes) => arr(routes ? "the Services, HTTPRoutes and GRPCRoutes of the policy's namespace it applies to"
  : "the Services of the policy's namespace it applies to", obj("a target (GEP-713, local)", {
  group: str(routes ? '"" for a Service; "gateway.networking.k8s.io" (or "") for a route' : '"" (or "core")',
    { enum: routes ? ["", "core", "gateway.networking.k8s.io"] : ["", "core"] }),
  kind: str(routes ? "Service (default), HTTPRoute or GRPCRoute" : "Service (default)",
    { enum: routes ? ["Service", "HTTPRoute", "GRPCRoute"] : ["Service"] }),
  name: name("the target's name"),
}, ["name"]), { minItems: 1, maxItems: 16 });

const rate = (description) => obj(description, {
  requestsPerSecond: int("the sustained rate", 1, 10000000),
  burst: int("requests above the rate allowed at once; absent or 0: requestsPerSecond", 0, 10000000),
}, ["requestsPerSecond"]);

const authzValues = (description, item) => arr(description, item, { minItems: 1, maxItems: 32, "x-kubernetes-list-type": "set" });

// ------------------------------------------------------------------------------------------------ specs

const specs = {
  Service: obj("a Service: its protocol and endpoints", {
    protocol: str("what the endpoints speak", { enum: ["grpc", "http2", "http1", "tcp"] }),
    endpoints: arr("IP:PORT strings, or {address: IP:PORT | dns: NAME:PORT, weight: 1-1000000, serviceAccount: NAME}; "
      + "empty: no endpoint", { "x-kubernetes-preserve-unknown-fields": true }),
    addresses: arr("virtual addresses IP:PORT: intercepted connections to them go to this Service",
      str("IP:PORT, IPv6 as [V6]:PORT", { pattern: IP_PORT }), { "x-kubernetes-list-type": "set" }),
    meshed: { type: "boolean", description: "the endpoints run an agent (default true)" },
    serviceAccount: name("the service account of the endpoints' workloads (default \"default\")"),
  }, ["protocol"]),
  HTTPRoute: routeSpec(false),
  GRPCRoute: routeSpec(true),
  FaultInjection: obj("delays and aborts of the requests of the rules whose ExtensionRef names it", {
    delay: obj("a fixed delay", {
      fixedDelay: duration("1ms-1h"),
      percent: percent("share of the requests delayed; default 100"),
    }, ["fixedDelay"]),
    abort: obj("an answer with an error status (exactly one of httpStatus and grpcStatus)", {
      httpStatus: int("the HTTP status", 200, 599),
      grpcStatus: str("the gRPC status name (not OK)", { enum: GRPC_ERROR_CODES }),
      percent: percent("share of the requests aborted; default 100"),
    }, [], { oneOf: [{ required: ["httpStatus"] }, { required: ["grpcStatus"] }] }),
  }, [], { anyOf: [{ required: ["delay"] }, { required: ["abort"] }] }),
  BackendTrafficPolicy: obj("settings of the traffic to Services (GEP-713 attachment)", {
    targetRefs: targetRefs(false),
    retryConstraint: obj("the retry budget (GEP-3388)", {
      budget: obj("retries may add this share of the requests of the interval", {
        percent: percent("default 20"),
        interval: duration("1s-1h; default 10s"),
      }),
      minRetryRate: obj("and at least this many retries per interval", {
        count: int("default 10", 0, 1000000),
        interval: duration("1s-1h; default 1s"),
      }),
    }),
    connectionPool: obj("connections and circuit breakers; absent fields keep the agent's defaults", {
      connectTimeout: duration("1ms-1h"),
      idleTimeout: duration("1ms-24h: a pooled connection unused this long is closed"),
      streamIdleTimeout: duration("at most 24h; 0s: never"),
      maxConnections: int("circuit breaker, agent-wide", 1, 1000000),
      maxPendingRequests: int("circuit breaker, agent-wide", 1, 1000000),
      maxRequests: int("circuit breaker, agent-wide", 1, 1000000),
      maxRetries: int("circuit breaker, agent-wide", 1, 1000000),
    }),
    loadBalancer: obj("the balancer", {
      type: str("the algorithm", { enum: ["RoundRobin", "LeastRequest", "PeakEWMA", "RingHash"] }),
      ringHash: obj("RingHash only", { minimumRingSize: int("default 1024", 1, 8388608) }),
    }, ["type"]),
    outlierDetection: obj("passive health checking (Envoy's defaults)", {
      consecutive5xxErrors: int("default 5; 0: not by 5xx", 0, 1000000),
      consecutiveGatewayErrors: int("default 5; 0: off", 0, 1000000),
      interval: duration("1ms-1h; default 10s"),
      baseEjectionTime: duration("1ms-1h; default 30s"),
      maxEjectionTime: duration("1ms-24h, not below baseEjectionTime; default 300s"),
      maxEjectionPercent: percent("default 50"),
    }),
    healthCheck: obj("active health checks of every endpoint (exactly one of http and grpc)", {
      http: obj("GET, 2xx healthy", { path: str("the path", { pattern: "^/[^\\x00-\\x20\\x7f]*$" }) }, ["path"]),
      grpc: obj("grpc.health.v1, SERVING healthy", { service: str("the service; empty: the whole server") }),
      interval: duration("100ms-1h; default 5s"),
      timeout: duration("1ms-1h, below interval; default 1s"),
      healthyThreshold: int("default 2", 1, 1000000),
      unhealthyThreshold: int("default 3", 1, 1000000),
    }, [], { oneOf: [{ required: ["http"] }, { required: ["grpc"] }] }),
  }, ["targetRefs"]),
  RateLimitPolicy: obj("local rate limits (GCRA, agent-wide) of Services and routes (at least one of total and perClient)", {
    targetRefs: targetRefs(true),
    total: rate("every client together"),
    perClient: rate("each client"),
    clientKey: obj("what a client is (needs perClient)", {
      type: str("Identity (default), SourceAddress or Header", { enum: ["Identity", "SourceAddress", "Header"] }),
      header: str("the header (type Header only)", { pattern: TOKEN, maxLength: 256 }),
    }),
    overrides: arr("per-client limits of the clients named (needs perClient)", obj("an override", {
      requestsPerSecond: int("the sustained rate", 1, 10000000),
      burst: int("absent or 0: requestsPerSecond", 0, 10000000),
      clients: arr("SPIFFE IDs or addresses", str("a client", { minLength: 1 }), { minItems: 1 }),
    }, ["requestsPerSecond", "clients"])),
  }, ["targetRefs"], { anyOf: [{ required: ["total"] }, { required: ["perClient"] }] }),
  Telemetry: obj("tracing and access logs of the agents (at least one of tracing and accessLog)", {
    tracing: obj("OTLP tracing; absent: none", {
      otlp: obj("the collector", {
        endpoint: str("IP:PORT of the OTLP collector", { pattern: IP_PORT }),
        protocol: str("grpc (default) or http", { enum: ["grpc", "http"] }),
      }, ["endpoint"]),
      samplingPercent: { type: "number", minimum: 0, maximum: 100, description: "0-100, at most 4 decimals; default 0" },
      propagation: arr("trace context formats; default both", str("a format", { enum: ["w3c", "b3"] }),
        { minItems: 1, maxItems: 2, "x-kubernetes-list-type": "set" }),
    }, ["otlp"]),
    accessLog: obj("JSON access log; absent: none", {
      format: str("json (default)", { enum: ["json"] }),
      path: str("stdout (default) or an absolute path", { maxLength: 4000, pattern: "^(stdout|/.*)$" }),
    }),
  }, [], { anyOf: [{ required: ["tracing"] }, { required: ["accessLog"] }] }),
  AuthorizationPolicy: obj("who may call a Service or route", {
    targetRefs: targetRefs(true),
    action: str("ALLOW, DENY or AUDIT", { enum: ["ALLOW", "DENY", "AUDIT"] }),
    rules: arr("a policy without rules matches no request", obj("a rule: a from entry matches the caller and a to entry the request", {
      from: arr("absent: any caller", obj("exactly one of identities and namespaces", {
        identities: authzValues("SPIFFE IDs, exact or a prefix ending in '*'",
          str("spiffe://...", { maxLength: 512, pattern: "^spiffe://[^\\x00-\\x20*\\x7f]+\\*?$" })),
        namespaces: authzValues("the ns segment of the caller's SPIFFE ID", name("a namespace")),
      }, [], { oneOf: [{ required: ["identities"] }, { required: ["namespaces"] }] }), { minItems: 1, maxItems: 16 }),
      to: arr("absent: any request", obj("each list given must match (at least one; paths and grpcMethods not together)", {
        methods: authzValues("upper-case HTTP methods", str("a method", { maxLength: 512, pattern: "^[-!#$%&'*+.^_`|~0-9A-Z]+$" })),
        paths: authzValues("exact, or a prefix ending in '*'; no query",
          str("a path", { maxLength: 512, pattern: "^/[^\\x00-\\x20*?#\\x7f]*\\*?$" })),
        grpcMethods: authzValues("pkg.Service/Method or pkg.Service/*",
          str("a gRPC method", { maxLength: 512, pattern: "^[A-Za-z0-9_.]+/([A-Za-z0-9_]+|\\*)$" })),
      }, [], {
        anyOf: [{ required: ["methods"] }, { required: ["paths"] }, { required: ["grpcMethods"] }],
        not: { required: ["paths", "grpcMethods"] },
      }), { minItems: 1, maxItems: 16 }),
    }), { maxItems: 32 }),
  }, ["targetRefs", "action"]),
  MeshTLS: obj("mesh mTLS between agents: mesh-wide, in the root namespace remora-system only", {
    mode: str("STRICT, PERMISSIVE or DISABLE", { enum: ["STRICT", "PERMISSIVE", "DISABLE"] }),
  }, ["mode"]),
  // document.c's parse_egress_policy_spec; a name listed twice is the control plane's to refuse (a set of
  // maps cannot say "unique by name" without x-kubernetes-list-map-keys, which would change apply's merge)
  EgressPolicy: obj("which Services the agents of the targeted workloads receive (Istio's Sidecar egress hosts)", {
    targetRefs: arr("ServiceAccounts of the policy's namespace; absent: every workload of the namespace", obj("a ServiceAccount (local)", {
      group: str('"" (or "core")', { enum: ["", "core"] }),
      kind: str("ServiceAccount (the default)", { enum: ["ServiceAccount"] }),
      name: name("the ServiceAccount's name"),
    }, ["name"]), { maxItems: 16 }),
    hosts: arr("NAMESPACE/NAME: '.' for the policy's namespace, '*' for any namespace or name (\"./*\", \"shop/api\", \"*/echo\")",
      str("NAMESPACE/NAME", { maxLength: 127, pattern: "^(\\.|\\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(\\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$" }),
      { minItems: 1, maxItems: 64, "x-kubernetes-list-type": "set" }),
  }, ["hosts"]),
};

// Gateway API's metav1.Condition
const status = () => obj("what the control plane found (Accepted, ResolvedRefs)", {
  observedGeneration: { type: "integer", format: "int64", minimum: 0, description: "the generation the control plane last looked at" },
  conditions: arr("the latest observations of the resource's state", obj("a condition (metav1.Condition)", {
    type: str("Accepted or ResolvedRefs", { maxLength: 316, pattern: "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$" }),
    status: str("True, False or Unknown", { enum: ["True", "False", "Unknown"] }),
    reason: str("CamelCase reason", { minLength: 1, maxLength: 1024, pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$" }),
    message: str("for people", { maxLength: 32768 }),
    observedGeneration: { type: "integer", format: "int64", minimum: 0, description: "the generation this condition is about" },
    lastTransitionTime: str("when the status last changed", { format: "date-time" }),
  }, ["type", "status", "reason", "message", "lastTransitionTime"]), {
    maxItems: 8, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
  }),
});

const kinds = [
  { kind: "Service", plural: "services", short: ["rsvc"], columns: [["Protocol", "string", ".spec.protocol"]] },
  { kind: "HTTPRoute", plural: "httproutes", short: [], columns: [] },
  { kind: "GRPCRoute", plural: "grpcroutes", short: [], columns: [] },
  { kind: "FaultInjection", plural: "faultinjections", short: [], columns: [] },
  { kind: "BackendTrafficPolicy", plural: "backendtrafficpolicies", short: ["btp"], columns: [] },
  { kind: "RateLimitPolicy", plural: "ratelimitpolicies", short: ["rlp"], columns: [] },
  { kind: "Telemetry", plural: "telemetries", short: [], columns: [] },
  { kind: "AuthorizationPolicy", plural: "authorizationpolicies", short: ["authz"], columns: [["Action", "string", ".spec.action"]] },
  { kind: "MeshTLS", plural: "meshtlses", short: [], columns: [["Mode", "string", ".spec.mode"]] },
  { kind: "EgressPolicy", plural: "egresspolicies", short: ["egress"], columns: [["Hosts", "string", ".spec.hosts"]] },
];

function crd(k) {
  const names = { kind: k.kind, listKind: k.kind + "List", plural: k.plural, singular: k.kind.toLowerCase(), categories: ["remora"] };
  if (k.short.length) names.shortNames = k.short;
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${k.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/part-of": "remora" },
    },
    spec: {
      group: GROUP,
      names,
      scope: "Namespaced",
      versions: [{
        name: "v1",
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          ...k.columns.map(([n, t, p]) => ({ name: n, type: t, jsonPath: p })),
          { name: "Accepted", type: "string", jsonPath: '.status.conditions[?(@.type=="Accepted")].status' },
          { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
        ],
        schema: {
          openAPIV3Schema: obj(`Remora ${k.kind} (docs/control-plane.md)`, {
            apiVersion: { type: "string" },
            kind: { type: "string" },
            metadata: { type: "object" },
            spec: specs[k.kind],
            status: status(),
          }, ["spec"]),
        },
      }],
    },
  };
}

function main() {
  const check = process.argv.includes("--check");
  let stale = 0;
  for (const k of kinds) {
    const file = path.join(OUT, `${k.plural}.${GROUP}.yaml`);
    const text = "# Generated by tests/tools/kube/gen_crds.js from control/src/document.c's rules: do not edit by hand.\n"
      + YAML.stringify(crd(k), { lineWidth: 0 });
    const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : null;
    if (old === text) continue;
    if (check) {
      console.error(`${path.relative(process.cwd(), file)} is out of date: run node tests/tools/kube/gen_crds.js`);
      stale++;
    } else {
      fs.mkdirSync(OUT, { recursive: true });
      fs.writeFileSync(file, text);
      console.log(`wrote ${file}`);
    }
  }
  process.exit(stale ? 1 : 0);
}

if (require.main === module) main();
module.exports = { kinds, specs };
