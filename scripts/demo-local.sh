#!/usr/bin/env bash
# The loopback demo (scripts/demo.sh is README's demo, over the one-machine mesh of network
# namespaces; this one needs no namespaces): one sidecar with explicit listeners on loopback.
# Builds Remora, starts the control plane (remora-control), a gRPC echo service and two versions
# of an HTTP/1.1 service, and a sidecar (remora-agent) that
# takes its routes from the control plane. `remoractl apply --wait` installs the policy
# (examples/mesh.yaml: services by name, a 90/10 canary split); then gRPC calls of every shape and
# HTTP/1.1 and HTTP/2 requests go through the agent, and the demo prints what went through, where
# the split sent it; then examples/mesh-policy.yaml adds retries, timeouts, header modifiers, a
# redirect, a mirror, fault injection, load balancing, outlier detection and a rate limit, shown at
# work with the policies in force per Service; a Telemetry (examples/mesh-telemetry.yaml) turns on
# tracing to a local OTLP receiver and a JSON access log: a trace's spans, its access log line, the
# golden metrics and `remoractl stat`; `remoractl status`, the agent's metrics, and a graceful drain. Loopback only;
# everything it starts is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target remora-agent remora-control remoractl >/dev/null
AGENT=$ROOT/build/agent/remora-agent
CONTROL=$ROOT/build/control/remora-control
WORK=$(mktemp -d)
# the control plane serves TLS and wants its admin credential (docs/identity.md, "The control plane's own doors")
CTL="$ROOT/build/control/remoractl --control 127.0.0.1:15010 --ca $WORK/control/ca/trust-anchor.pem --admin-token $WORK/control/admin.token"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "demo: $1 did not come up" >&2; exit 1
}
wait_port() { # port
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: port $1 did not open" >&2; exit 1
}
requests() { curl -s "http://127.0.0.1:$1/__stats" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

echo "== starting the mesh"
"$CONTROL" --listen 127.0.0.1:15010 --state-dir "$WORK/control" >"$WORK/control.log" 2>&1 & PIDS+=($!)
/usr/bin/python3 tests/tools/grpc_echo_server.py --port 27201 >"$WORK/grpc.log" 2>&1 & PIDS+=($!)
/usr/bin/python3 tests/tools/h1_origin.py --port 27301 >"$WORK/web.log" 2>&1 & PIDS+=($!)
/usr/bin/python3 tests/tools/h1_origin.py --port 27302 >"$WORK/web-v2.log" 2>&1 & PIDS+=($!)
wait_port 15010
# the sidecar's workload identity: a bootstrap token for ns default / sa demo, and the trust anchor it
# verifies the control plane with
$CTL token create --namespace default --service-account demo >"$WORK/demo.token"
"$AGENT" --listen 127.0.0.1:15001 --control 127.0.0.1:15010 --node-id demo-sidecar --state-dir "$WORK/agent" \
  --trust-anchor "$WORK/control/ca/trust-anchor.pem" --identity-token "$WORK/demo.token" \
  --workers 2 --stats-interval-ms 1000 >"$WORK/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=($AGENT_PID)
wait_for http://127.0.0.1:15020/ready
wait_port 27201; wait_port 27301; wait_port 27302
echo "   control plane 127.0.0.1:15010, sidecar 127.0.0.1:15001 (pid $AGENT_PID), echo :27201, web :27301, web-v2 :27302"

echo
echo "== remoractl apply -f examples/mesh.yaml --wait"
$CTL apply -f examples/mesh.yaml --wait | sed 's/^/   /'

echo
echo "== gRPC through the sidecar to Service 'echo' (client -> agent -> h2 -> echo server)"
/usr/bin/python3 examples/demo_client.py 127.0.0.1:15001 echo

echo
echo "== HTTP through the sidecar to Service 'web' (90/10 canary between web and web-v2)"
printf '   HTTP/1.1 GET    -> '; curl -s -o /dev/null -w '%{http_code} via HTTP/%{http_version}\n' -H 'Host: web' http://127.0.0.1:15001/hello
printf '   HTTP/2 (h2c)    -> '; curl -s -o /dev/null -w '%{http_code} via HTTP/%{http_version}\n' --http2-prior-knowledge -H 'Host: web' http://127.0.0.1:15001/hello
printf '   h2load 2000 req -> '; h2load -n 2000 -c 4 -m 10 -H ':authority: web' http://127.0.0.1:15001/load 2>/dev/null | grep -E '^requests:' | sed 's/^requests: //'
printf '   split           -> web %s requests, web-v2 %s requests\n' "$(requests 27301)" "$(requests 27302)"
printf '   unknown name    -> '; curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: nosuch' http://127.0.0.1:15001/

echo
echo "== policy: remoractl apply -f examples/mesh-policy.yaml --wait (retries, timeouts, filters, a mirror, faults, balancing, outlier detection, a rate limit)"
$CTL apply -f examples/mesh-policy.yaml --wait | sed 's/^/   /'
printf '   redirect        -> '; curl -s -o /dev/null -w '%{http_code} location %{redirect_url}\n' -H 'Host: web' http://127.0.0.1:15001/old-home
printf '   header modifier -> the origin saw x-mesh: '
curl -s -H 'Host: web' http://127.0.0.1:15001/hello | /usr/bin/python3 -c 'import json,sys; print(dict((k.lower(), v) for k, v in json.load(sys.stdin)["headers"]).get("x-mesh"))'
printf '   always 503      -> '; curl -s -o /dev/null -w '%{http_code} to the client after ' -H 'Host: web' -H 'x-status: 503' http://127.0.0.1:15001/flaky
curl -s http://127.0.0.1:15020/metrics | /usr/bin/python3 -c 'import sys; print(int(sum(float(l.split()[-1]) for l in sys.stdin if l.startswith("remora_upstream_retries_total") and "http_status" in l)), "retries (attempts 2, full-jitter backoff)")'
printf '   grpc deadline   -> '
/usr/bin/python3 - <<'PY'
import time
import grpc
with grpc.insecure_channel("127.0.0.1:15001", options=[("grpc.default_authority", "echo")]) as ch:
    t0 = time.monotonic()
    try:
        ch.unary_unary("/echo.Echo/Unary")(b"slow", metadata=[("x-sleep-ms", "3000")], timeout=0.2)
    except grpc.RpcError as e:
        print("%s after %.0f ms (the server would have taken 3000 ms)" % (e.code().name, (time.monotonic() - t0) * 1000))
PY
h2load -n 400 -c 4 -m 10 -H ':authority: web' http://127.0.0.1:15001/load >/dev/null 2>&1
echo "   400 more requests at full speed: mirrors, faults, redirects and the RateLimitPolicy's decisions so far:"
curl -s http://127.0.0.1:15020/metrics | grep -E '^remora_downstream_(mirrors|faults)_total|^remora_downstream_local_replies_total.*(redirect|rate_limited)|^remora_rate_limit_decisions_total' | sed 's/^/     /'
echo "   which policy is in force where (remoractl get svc):"
$CTL get svc | sed 's/^/     /'

echo
echo "== telemetry: remoractl apply -f examples/mesh-telemetry.yaml --wait (tracing to an OTLP receiver, JSON access log)"
node tests/tools/otlp_receiver/receiver.js --out "$WORK/spans.jsonl" --grpc-port 0 --http-port 0 \
  --ready-file "$WORK/otlp.ready" >"$WORK/otlp.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/otlp.ready" ] && break; sleep 0.1; done
OTLP_HTTP_PORT=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WORK/otlp.ready")
sed -e "s|OTLP_HTTP_PORT|$OTLP_HTTP_PORT|" -e "s|ACCESS_LOG_PATH|$WORK/access.log|" examples/mesh-telemetry.yaml >"$WORK/telemetry.yaml"
$CTL apply -f "$WORK/telemetry.yaml" --wait | sed 's/^/   /'
TRACE=4bf92f3577b34da6a3ce929d0e0e4736
curl -s -o /dev/null -H 'Host: web' -H "traceparent: 00-$TRACE-00f067aa0ba902b7-01" http://127.0.0.1:15001/traced
/usr/bin/python3 examples/demo_client.py 127.0.0.1:15001 echo >/dev/null
h2load -n 300 -c 2 -m 5 -H ':authority: web' -H 'x-status: 500' http://127.0.0.1:15001/errors >/dev/null 2>&1 || true
h2load -n 700 -c 2 -m 5 -H ':authority: web' http://127.0.0.1:15001/ok >/dev/null 2>&1
echo "   the spans of trace $TRACE (client -> sidecar -> web), as the OTLP receiver decoded them:"
/usr/bin/python3 - "$WORK/spans.jsonl" "$TRACE" <<'PY'
import json, sys, time
path, trace = sys.argv[1], sys.argv[2]
spans = []
for _ in range(50):
    try:
        spans = [s for s in map(json.loads, open(path)) if s["trace_id"] == trace]
    except (OSError, ValueError):
        spans = []
    if len(spans) >= 2:
        break
    time.sleep(0.1)
kinds = {2: "SERVER", 3: "CLIENT"}
for s in sorted(spans, key=lambda s: s["start_ns"]):
    a = s["attributes"]
    print("     %-6s span %s parent %-16s %s %s -> %s (%s)" % (kinds.get(s["kind"], s["kind"]), s["span_id"], s["parent_span_id"] or "-",
          a.get("http.request.method", ""), a.get("url.path", ""), a.get("http.response.status_code", ""),
          a.get("remora.backend") or a.get("server.address", "")))
PY
echo "   the access log line of that request ($WORK/access.log):"
grep "$TRACE" "$WORK/access.log" | head -n 1 | sed 's/^/     /'
echo "   golden metrics: success rate by route over what went through (remora_responses_total):"
curl -s http://127.0.0.1:15020/metrics | /usr/bin/python3 -c '
import re, sys, collections
tot, ok = collections.Counter(), collections.Counter()
for line in sys.stdin:
    if not line.startswith("remora_responses_total{"):
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", line))
    n = float(line.rsplit(" ", 1)[1])
    key = (labels.get("route", ""), labels.get("backend", ""))
    tot[key] += n
    ok[key] += n if labels.get("classification") == "success" else 0
for (route, backend), n in sorted(tot.items()):
    print("     route %-22s backend %-16s %6d responses, success %5.1f%%" % (route or "-", backend or "-", n, 100 * ok[(route, backend)] / n))
'
sleep 2  # the agent sends its summary every second (--stats-interval-ms 1000)
echo "   remoractl stat (the control plane's view over the last minute, from every agent's histograms):"
$CTL stat | sed 's/^/     /'
$CTL stat --by route | sed 's/^/     /'

echo
echo "== remoractl status"
$CTL status | sed 's/^/   /'

echo
echo "== sidecar metrics (http://127.0.0.1:15020/metrics, non-zero request counters)"
curl -s http://127.0.0.1:15020/metrics | grep -E '^remora_(downstream|upstream)_(requests|responses|retries)_total|^remora_config_generation' | grep -v ' 0$' | sed 's/^/   /'

echo
echo "== SIGTERM: graceful drain"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" && echo "   agent exited 0"
tail -n 2 "$WORK/agent.log" | sed 's/^/   /'
