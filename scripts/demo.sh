#!/usr/bin/env bash
# The demo: a mesh of pods on one machine (scripts/mesh.sh: network namespaces joined through a bridge
# namespace, each pod with remora-init and a transparent remora-agent as UID 2102, the control plane in
# its own namespace). Builds Remora, `mesh.sh up`, `remoractl apply --wait` of the Services (with
# virtual addresses) and a 90/10 canary route (examples/mesh-netns.yaml); then the client pod's apps
# (curl, h2load, examples/demo_client.py: no proxy address anywhere, only service names) call
# http://web.default.svc over HTTP/1.1 and HTTP/2 (h2c) and echo.default.svc:9090 with gRPC calls of
# every shape, through the client's outbound agent and the serving pod's inbound agent; the canary
# split; each pod's workload identity and the mesh mTLS between the agents (the caller's SPIFFE ID at the
# serving agent; MeshTLS STRICT refusing plaintext); examples/mesh-policy.yaml (retries, a redirect, header modifiers, a mirror, faults, a rate
# limit enforced by the serving agent); a Telemetry (examples/mesh-telemetry.yaml) sending traces to
# the OTLP receiver in the control namespace and a JSON access log: a trace crossing two agents, its
# access log lines, golden metrics by direction, `remoractl stat`, `remoractl status`, `remoractl check`
# and `remoractl proxy` (an agent's admin API through the control plane), a graceful
# drain, and `mesh.sh down` (also from the EXIT trap on failure). Needs root. Exit 0 only when every
# step succeeded. The loopback single-sidecar demo is scripts/demo-local.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "$(id -u)" -eq 0 ] || { echo "demo: must run as root (network namespaces, netfilter): sudo bash scripts/demo.sh" >&2; exit 1; }
bash scripts/install-deps.sh
BUILD=${REMORA_BUILD_DIR:-build}  # another build directory: REMORA_BUILD_DIR=build-x bash scripts/demo.sh
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target remora-agent remora-control remoractl remora-init >/dev/null
export REMORA_AGENT=$ROOT/$BUILD/agent/remora-agent REMORA_INIT=$ROOT/$BUILD/init/remora-init
export REMORA_MESH_PREFIX=${REMORA_MESH_PREFIX:-remora-mesh}
export REMORA_MESH_RUN=${REMORA_MESH_RUN:-/run/$REMORA_MESH_PREFIX}
export REMORA_MESH_TTL=${REMORA_MESH_TTL:-600}  # every process of the mesh lives at most 10 minutes
RUN=$REMORA_MESH_RUN
MESH="bash $ROOT/scripts/mesh.sh"
CTL="$MESH ctl"
WORK=$(mktemp -d)
PY=/usr/bin/python3
UP=0

cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -d "$RUN/logs" ]; then
    echo "demo: FAILED (exit $rc); the last lines of the mesh's logs:" >&2
    for f in "$RUN"/logs/*.log; do echo "--- $f" >&2; tail -n 5 "$f" >&2; done
  fi
  [ $UP -eq 0 ] || $MESH down >/dev/null 2>&1 || echo "demo: mesh.sh down failed" >&2
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "demo: this step failed (line $LINENO): $BASH_COMMAND" >&2' ERR
fail() { echo "demo: $*" >&2; exit 1; }
client() { $MESH exec client "$@"; }
metrics() { $MESH exec "$1" curl -s --max-time 5 http://127.0.0.1:15020/metrics; }
metric() { # pod name label-regex...: the sum of the matching samples
  local pod=$1 name=$2; shift 2
  metrics "$pod" | $PY -c '
import re, sys
name, pats = sys.argv[1], sys.argv[2:]
t = 0.0
for line in sys.stdin:
    if line.startswith(name + "{") or line.startswith(name + " "):
        if all(re.search(p, line) for p in pats):
            t += float(line.rsplit(" ", 1)[1])
print(int(t))' "$name" "$@"
}
served() { $MESH exec "$1" curl -s --max-time 5 http://127.0.0.1:8080/__stats | $PY -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

echo "== scripts/mesh.sh up"
[ ! -e "$RUN" ] || fail "a mesh is up already ($RUN exists; \`bash scripts/mesh.sh down\` removes it), or set REMORA_MESH_PREFIX"
UP=1
$MESH up | sed 's/^/   /'

echo
echo "== remoractl apply -f examples/mesh-netns.yaml --wait (Services with virtual addresses, a 90/10 canary)"
$CTL apply -f examples/mesh-netns.yaml --wait | sed 's/^/   /'
echo "   the client pod's /etc/hosts (mounted by ip netns exec from /etc/netns/$REMORA_MESH_PREFIX-client/hosts):"
client grep svc /etc/hosts | sed 's/^/     /'

echo
echo "== from the client pod, by service name: app -> outbound agent (client) -> inbound agent (server pod) -> app"
code() { # expected-code curl-args...: prints what came back, fails on another status
  local want=$1 got; shift
  got=$(client curl -sS --max-time 10 -o /dev/null -w '%{http_code} via HTTP/%{http_version}' "$@")
  echo "$got"
  [ "${got%% *}" = "$want" ] || fail "expected $want from curl $*, got $got"
}
printf '   HTTP/1.1 GET http://web.default.svc/hello           -> '; code 200 http://web.default.svc/hello
printf '   HTTP/2 (h2c) GET http://web.default.svc/hello       -> '; code 200 --http2-prior-knowledge http://web.default.svc/hello
echo "   gRPC to echo.default.svc:9090 (examples/demo_client.py):"
client $PY examples/demo_client.py echo.default.svc:9090 | sed 's/^/   /'
W1=$(served web); W2=$(served web-v2)
printf '   h2load 2000 requests to web     -> '
client h2load -n 2000 -c 4 -m 10 http://web.default.svc/load 2>/dev/null | grep -E '^requests:' | sed 's/^requests: //'
W1=$(($(served web) - W1)); W2=$(($(served web-v2) - W2))
printf '   canary split                    -> web (pod %s) %s requests, web-v2 (pod %s) %s requests\n' 10.77.0.11 "$W1" 10.77.0.12 "$W2"
if [ "$W1" -le "$W2" ] || [ "$W2" -eq 0 ]; then fail "the 90/10 split did not happen"; fi

echo
echo "== workload identities and mesh mTLS between the agents (docs/identity.md, docs/mesh-tls.md)"
for pod in client web web-v2 echo; do
  printf '   %-7s %s\n' "$pod" "$($MESH exec "$pod" curl -s --max-time 5 http://127.0.0.1:15000/identity |
    awk '/^identity:/ {id = $2} /^not_after:/ {na = $2} END {print id, "valid until", na}')"
done
HS=$(metric web remora_mesh_tls_handshakes_total 'direction="inbound"' 'result="(success|resumed)"')
echo "   web's agent terminated $HS mesh mTLS handshakes; its inbound requests by caller (client_id):"
metrics web | grep -E '^remora_requests_total\{direction="inbound".*client_id=' | sed 's/^/     /'
[ "$HS" -ge 1 ] || fail "no mesh mTLS handshake at web's agent"
# (not `metrics web | grep -q`: grep would stop reading at the first match and, with pipefail, curl's
# failed write of the rest would fail the step)
WEB_METRICS=$(metrics web)
grep -qE '^remora_requests_total\{direction="inbound".*client_id="spiffe://remora.local/ns/default/sa/client"' <<<"$WEB_METRICS" ||
  fail "web's agent did not see the client's SPIFFE ID"
plain() { # the status of a plaintext GET straight to web's pod, or "refused" (the connection closed without an answer)
  local c
  if c=$($MESH exec control curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://10.77.0.11:8080/plain 2>/dev/null); then
    echo "$c"
  else
    echo "refused (curl: connection closed, status ${c:-none})"
  fi
}
GOT=$(plain)
printf '   plaintext to web'"'"'s pod from the control namespace (no agent there), MeshTLS PERMISSIVE (default) -> %s\n' "$GOT"
[ "$GOT" = 200 ] || fail "PERMISSIVE refused plaintext ($GOT)"
printf 'apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {name: default, namespace: remora-system}\nspec: {mode: STRICT}\n' >"$WORK/strict.yaml"
$CTL apply -f "$WORK/strict.yaml" --wait >/dev/null
GOT=$(plain)
printf '   the same under MeshTLS STRICT                                                        -> %s\n' "$GOT"
case $GOT in refused*) ;; *) fail "STRICT let plaintext through ($GOT)" ;; esac
printf '   the client pod through its agent (mesh mTLS) under STRICT -> '; code 200 http://web.default.svc/strict
$CTL delete meshtls default -n remora-system >/dev/null

echo
echo "== policy: remoractl apply -f examples/mesh-policy.yaml --wait (retries, timeouts, filters, a mirror, faults, balancing, outlier detection, a rate limit)"
$CTL apply -f examples/mesh-policy.yaml --wait | sed 's/^/   /'
printf '   redirect        -> '; client curl -s -o /dev/null -w '%{http_code} location %{redirect_url}\n' http://web.default.svc/old-home
printf '   header modifier -> the origin saw x-mesh: '
XMESH=$(client curl -s http://web.default.svc/hello | $PY -c 'import json,sys; print(dict((k.lower(), v) for k, v in json.load(sys.stdin)["headers"]).get("x-mesh"))')
echo "$XMESH"; [ "$XMESH" = remora ] || fail "the RequestHeaderModifier did not apply"
R0=$(metric client remora_upstream_retries_total http_status)
printf '   always 503      -> '; code 503 -H 'x-status: 503' http://web.default.svc/flaky
R1=$(metric client remora_upstream_retries_total http_status)
echo "     the client's agent retried $((R1 - R0)) time(s) (attempts 2, full-jitter backoff)"
[ $((R1 - R0)) -ge 1 ] || fail "no retry"
printf '   grpc deadline   -> '
client $PY - <<'PY'
import sys, time
import grpc
with grpc.insecure_channel("echo.default.svc:9090") as ch:
    t0 = time.monotonic()
    try:
        ch.unary_unary("/echo.Echo/Unary")(b"slow", metadata=[("x-sleep-ms", "3000")], timeout=0.2)
        sys.exit("the call did not time out")
    except grpc.RpcError as e:
        print("%s after %.0f ms (the server would have taken 3000 ms)" % (e.code().name, (time.monotonic() - t0) * 1000))
PY
client h2load -n 400 -c 4 -m 10 http://web.default.svc/load >/dev/null 2>&1
echo "   400 more requests at full speed: at the client's agent (outbound), mirrors and faults:"
metrics client | grep -E '^remora_downstream_(mirrors|faults)_total\{listener="outbound"' | sed 's/^/     /'
echo "   at web's agent (inbound, where a Service's RateLimitPolicy is enforced), the rate limiter's decisions:"
metrics web | grep -E '^remora_rate_limit_decisions_total|^remora_downstream_local_replies_total\{listener="inbound",cause="rate_limited"' | sed 's/^/     /'
LIMITED=$(metric web remora_downstream_local_replies_total 'listener="inbound"' rate_limited)
[ "$LIMITED" -ge 1 ] || fail "web's agent rate-limited nothing"
[ "$(metric client remora_downstream_local_replies_total rate_limited)" -eq 0 ] || fail "the client's agent rate-limited (should be web's)"
echo "   which policy is in force where (remoractl get svc):"
$CTL get svc | sed 's/^/     /'

echo
echo "== telemetry: remoractl apply of examples/mesh-telemetry.yaml (OTLP/HTTP to the receiver in the control namespace, JSON access log)"
sed -e "s|127.0.0.1:OTLP_HTTP_PORT|10.77.0.2:4318|" -e "s|ACCESS_LOG_PATH|$RUN/log/access.log|" examples/mesh-telemetry.yaml >"$WORK/telemetry.yaml"
chmod 644 "$WORK/telemetry.yaml"; chmod 755 "$WORK"
$CTL apply -f "$WORK/telemetry.yaml" --wait | sed 's/^/   /'
TRACE=4bf92f3577b34da6a3ce929d0e0e4736
code 200 -H "traceparent: 00-$TRACE-00f067aa0ba902b7-01" http://web.default.svc/traced >/dev/null
client $PY examples/demo_client.py echo.default.svc:9090 >/dev/null
client h2load -n 300 -c 2 -m 5 -H 'x-status: 500' http://web.default.svc/errors >/dev/null 2>&1 || true
client h2load -n 700 -c 2 -m 5 http://web.default.svc/ok >/dev/null 2>&1
echo "   the spans of trace $TRACE (curl -> client's agent -> web's agent -> web), as the OTLP receiver decoded them:"
$PY - "$RUN/spans.jsonl" "$TRACE" <<'PY'
import json, sys, time
path, trace = sys.argv[1], sys.argv[2]
spans = []
for _ in range(50):
    try:
        spans = [s for s in map(json.loads, open(path)) if s["trace_id"] == trace]
    except (OSError, ValueError):
        spans = []
    if len({s["attributes"].get("remora.listener") for s in spans if s["kind"] == 2}) >= 2 and len(spans) >= 4:
        break
    time.sleep(0.1)
kinds = {2: "SERVER", 3: "CLIENT"}
for s in sorted(spans, key=lambda s: s["start_ns"]):
    a = s["attributes"]
    print("     %-6s span %s parent %-16s %-8s %s %s -> %s (%s)" % (kinds.get(s["kind"], s["kind"]), s["span_id"], s["parent_span_id"] or "-",
          a.get("remora.listener", ""), a.get("http.request.method", ""), a.get("url.path", ""), a.get("http.response.status_code", ""),
          a.get("remora.backend") or a.get("server.address", "")))
ids = {s["span_id"]: s for s in spans}
# the serving agent's SERVER span is a child of the client agent's CLIENT span: one trace across two agents
crossing = [s for s in spans if s["kind"] == 2 and s["attributes"].get("remora.listener") == "inbound"
            and ids.get(s["parent_span_id"], {}).get("kind") == 3]
if not crossing:
    sys.exit("demo: no inbound SERVER span whose parent is the outbound agent's CLIENT span")
print("     -> one trace across two agents: the inbound SERVER span %s is the child of the outbound CLIENT span %s"
      % (crossing[0]["span_id"], crossing[0]["parent_span_id"]))
PY
echo "   the access log lines of that request ($RUN/log/access.log, written by both agents):"
for _ in $(seq 1 30); do [ "$(grep -c "$TRACE" "$RUN/log/access.log" 2>/dev/null)" -ge 2 ] && break; sleep 0.1; done
grep "$TRACE" "$RUN/log/access.log" | sed 's/^/     /'
[ "$(grep -c "$TRACE" "$RUN/log/access.log")" -ge 2 ] || fail "expected an access log line from each agent"
echo "   golden metrics (remora_responses_total): outbound at the client's agent, inbound at the servers' agents:"
for pod in client web web-v2 echo; do metrics "$pod" | sed "s/^/$pod /"; done | $PY -c '
import re, sys, collections
tot, ok = collections.Counter(), collections.Counter()
for line in sys.stdin:
    pod, _, line = line.partition(" ")
    if not line.startswith("remora_responses_total{"):
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", line))
    n = float(line.rsplit(" ", 1)[1])
    key = (pod, labels.get("direction", ""), labels.get("route", ""), labels.get("backend", ""))
    tot[key] += n
    ok[key] += n if labels.get("classification") == "success" else 0
dirs = set()
for (pod, d, route, backend), n in sorted(tot.items()):
    dirs.add(d)
    print("     %-7s %-8s route %-26s backend %-24s %6d responses, success %5.1f%%" % (pod, d, route or "-", backend or "-", n, 100 * ok[(pod, d, route, backend)] / n))
if not {"outbound", "inbound"} <= dirs:
    sys.exit("demo: golden metrics lack a direction")
'
sleep 2  # each agent sends its summary every second (--stats-interval-ms 1000)
echo "   remoractl stat (the control plane's view over the last minute, from every agent's histograms):"
$CTL stat | sed 's/^/     /'
$CTL stat --by route | sed 's/^/     /'

echo
echo "== remoractl status"
$CTL status | sed 's/^/   /'
echo
echo "== operating the mesh from the control plane (docs/control-plane.md): remoractl check, remoractl proxy"
$CTL check | sed 's/^/   /'
echo "   what injection adds to a pod (remoractl inject: the same patch as the control plane's webhook):"
printf '%s\n' 'apiVersion: v1' 'kind: Pod' 'metadata: {name: shop, namespace: default}' \
  'spec: {containers: [{name: shop, image: example/shop, readinessProbe: {httpGet: {path: /ready, port: 8080}}}]}' |
  $CTL inject -f - 2>&1 | grep -E 'injected|^  (initContainers|containers):|^  - (image|name)|restartPolicy|path: /app-health' | sed 's/^/     /'
echo "   web's agent, through its stream to the control plane (its admin port stays on the pod's loopback):"
$CTL proxy web stats | grep -E '^remora_(build_info|mesh_tls_connections_total)' | sed 's/^/     /'
[ "$($CTL proxy web log-level debug)" = debug ] || fail "remoractl proxy web log-level debug did not answer debug"
echo "     log level: $($CTL proxy web log-level info) (set to debug and back through the control plane)"
echo
echo "== scripts/mesh.sh status"
$MESH status | sed 's/^/   /'

echo
echo "== SIGTERM to web's agent: graceful drain"
read -r APID AST < <(awk '$3 == "agent-web" {print $1, $2}' "$RUN/pids")
kill -TERM "$APID"
for _ in $(seq 1 100); do [ "$(awk '{print $22}' "/proc/$APID/stat" 2>/dev/null)" = "$AST" ] || break; sleep 0.1; done
[ "$(awk '{print $22}' "/proc/$APID/stat" 2>/dev/null)" != "$AST" ] || fail "web's agent did not exit within 10 s"
tail -n 2 "$RUN/logs/agent-web.log" | sed 's/^/   /'

echo
echo "== scripts/mesh.sh down"
$MESH down | sed 's/^/   /'
UP=0
echo
echo "demo: every step succeeded"
