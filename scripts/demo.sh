#!/usr/bin/env bash
# The demo: builds Remora, starts a gRPC echo server and an HTTP/1.1 origin, puts remora-agent in
# front of both (examples/demo.yaml), sends gRPC calls of every shape and HTTP/1.1 and HTTP/2
# requests through it, and prints what went through and the agent's metrics. Loopback only;
# everything it starts is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target remora-agent >/dev/null
AGENT=$ROOT/build/agent/remora-agent
WORK=$(mktemp -d)
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

echo "== starting services"
/usr/bin/python3 tests/tools/grpc_echo_server.py --port 27201 >"$WORK/grpc.log" 2>&1 & PIDS+=($!)
/usr/bin/python3 tests/tools/h1_origin.py --port 27301 >"$WORK/web.log" 2>&1 & PIDS+=($!)
"$AGENT" --config examples/demo.yaml >"$WORK/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=($AGENT_PID)
wait_for http://127.0.0.1:15020/ready
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/27201) 2>/dev/null && break; sleep 0.1; done
echo "   grpc echo server 127.0.0.1:27201, http origin 127.0.0.1:27301, agent 127.0.0.1:15001 (pid $AGENT_PID)"

echo
echo "== gRPC through the agent (client -> agent -> h2 -> echo server)"
/usr/bin/python3 examples/demo_client.py 127.0.0.1:15001

echo
echo "== HTTP through the agent (client -> agent -> HTTP/1.1 -> origin)"
printf '  HTTP/1.1 GET    -> '; curl -s -o /dev/null -w '%{http_code} via HTTP/%{http_version}\n' http://127.0.0.1:15001/hello
printf '  HTTP/2 (h2c)    -> '; curl -s -o /dev/null -w '%{http_code} via HTTP/%{http_version}\n' --http2-prior-knowledge http://127.0.0.1:15001/hello
printf '  chunked POST    -> '; curl -s -H 'transfer-encoding: chunked' --data-binary 'streamed body' http://127.0.0.1:15001/upload | \
  /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print("origin saw %s %s, %d body bytes, host %s" % (d["method"], d["target"], d["body_len"], dict((k.lower(),v) for k,v in d["headers"]).get("host")))'
printf '  h2load 2000 req -> '; h2load -n 2000 -c 4 -m 10 http://127.0.0.1:15001/load 2>/dev/null | grep -E '^requests:' | sed 's/^requests: //'

echo
echo "== agent metrics (http://127.0.0.1:15020/metrics, non-zero request counters)"
curl -s http://127.0.0.1:15020/metrics | grep -E '^remora_(downstream|upstream)_(requests|responses|connections)_total' | grep -v ' 0$' | sed 's/^/  /'

echo
echo "== config dump (http://127.0.0.1:15000/config_dump): $(curl -s http://127.0.0.1:15000/config_dump | wc -c) bytes of JSON"
echo "== SIGTERM: graceful drain"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" && echo "   agent exited 0"
tail -n 2 "$WORK/agent.log" | sed 's/^/   /'
