#!/usr/bin/env bash
# The one-machine mesh: pods as network namespaces joined through a bridge namespace (docs/transparent.md,
# "The one-machine mesh").
#
#   scripts/mesh.sh up        build the namespaces, start the control plane, the apps, remora-init and
#                             the agents (as UID 2102, --transparent --control)
#   scripts/mesh.sh status    pods, processes, each agent's /ready, `remoractl status`
#   scripts/mesh.sh down      remove exactly what `up` recorded (also after a partial `up`)
#   scripts/mesh.sh exec POD CMD...   run CMD in a pod's namespace (bounded by REMORA_MESH_EXEC_TIMEOUT)
#   scripts/mesh.sh ctl ARGS...       remoractl ARGS against the mesh's control plane (with its trust
#                                     anchor and admin credential, docs/identity.md)
#   scripts/mesh.sh restart POD agent|app, restart control
#                             SIGKILL that process and start it again as `up` did (the soak's kill loops,
#                             docs/soak.md); returns once its port listens
#
# The control plane serves TLS and authenticates every caller (docs/identity.md, "The control plane's own
# doors"): its generated trust anchor is copied to <run>/trust-anchor.pem for the agents, each agent gets a
# bootstrap token for ns default / sa <pod> (client, web, web-v2, echo) in <run>/tokens/<pod>.token, and
# `ctl` passes <run>/state/control/admin.token and the anchor to remoractl.
#
# Layout (addresses exist only inside the namespaces; no pod has a route to the host's network):
#
#   namespace          address        runs
#   <prefix>-br        10.77.0.1/24   bridge br0 (every pod's veth peer), nothing else
#   <prefix>-control   10.77.0.2      remora-control :15010, the OTLP receiver :4317 (gRPC) :4318 (HTTP)
#   <prefix>-client    10.77.0.10     no server: its apps are run with `mesh.sh exec client ...`
#   <prefix>-web       10.77.0.11     h1_origin.py :8080 (web v1)
#   <prefix>-web-v2    10.77.0.12     h1_origin.py :8080 (web v2, the canary)
#   <prefix>-echo      10.77.0.13     grpc_echo_server.py :9090
#
# The Services' virtual addresses (10.96.77.0/24, examples/mesh-netns.yaml) are routed to the bridge's
# address, so connect() reaches netfilter's OUTPUT hook where remora-init's REDIRECT sends it to the
# pod's agent; the bridge namespace forwards nothing (ip_forward 0). In every pod,
# /etc/netns/<ns>/hosts maps web.default.svc, web-v2.default.svc and echo.default.svc to those addresses
# and /etc/netns/<ns>/resolv.conf names 127.0.0.1 only, so no query leaves the pod.
#
# Environment: REMORA_AGENT, REMORA_INIT, REMORA_CONTROL_BIN, REMORACTL (binaries; default build/, the
# control binaries next to the agent's build dir), REMORA_MESH_PREFIX (namespace prefix, default
# remora-mesh), REMORA_MESH_RUN (state dir, default /run/<prefix>), REMORA_MESH_TTL (seconds every
# process started lives at most, default 1800), REMORA_MESH_EXEC_TIMEOUT (default 120),
# REMORA_MESH_LOGS_TO (a directory where `down` copies the processes' logs before removing the state),
# REMORA_MESH_CERT_LIFETIME (the workload certificates' lifetime, remora-control --cert-lifetime; default 24h).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${REMORA_MESH_PREFIX:-remora-mesh}
RUN=${REMORA_MESH_RUN:-/run/$PREFIX}
TTL=${REMORA_MESH_TTL:-1800}
EXEC_TIMEOUT=${REMORA_MESH_EXEC_TIMEOUT:-120}
CERT_LIFETIME=${REMORA_MESH_CERT_LIFETIME:-24h}
AGENT=${REMORA_AGENT:-$ROOT/build/agent/remora-agent}
INIT=${REMORA_INIT:-$ROOT/build/init/remora-init}
CONTROL_BIN=${REMORA_CONTROL_BIN:-$(dirname "$(dirname "$AGENT")")/control/remora-control}
REMORACTL=${REMORACTL:-$(dirname "$(dirname "$AGENT")")/control/remoractl}
PY=/usr/bin/python3
PROXY_UID=2102
CONTROL_ADDR=10.77.0.2
CONTROL_PORT=15010
BRIDGE_ADDR=10.77.0.1
VIP_NET=10.96.77.0/24
# pod address app-kind port
PODS="control 10.77.0.2 - -
client 10.77.0.10 - -
web 10.77.0.11 http 8080
web-v2 10.77.0.12 http 8080
echo 10.77.0.13 grpc 9090"
HOSTS="10.96.77.10 web.default.svc web
10.96.77.12 web-v2.default.svc web-v2
10.96.77.11 echo.default.svc echo"

die() { echo "mesh.sh: $*" >&2; exit 1; }
ns() { echo "$PREFIX-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"; }
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
# a recorded process is ours when its PID is alive with the start time we recorded (no PID reuse)
ours() { [ -n "$2" ] && [ "$(starttime "$1")" = "$2" ]; }
pods_with_agent() { echo "$PODS" | awk '$1 != "control" {print $1}'; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, netfilter, /etc/netns): try sudo bash scripts/mesh.sh $1"
  command -v ip >/dev/null || die "needs iproute2 (ip): bash scripts/install-deps.sh"
  ip netns list >/dev/null 2>&1 || die "\`ip netns\` does not work here"
}

# start NAME POD CMD...: in the pod's namespace, bounded by timeout(1), in its own session, output to a log
# (appended: a restarted process adds to its predecessor's);
# recorded as "PID STARTTIME NAME" before anything waits on it
start() {
  local name=$1 pod=$2; shift 2
  setsid ip netns exec "$(ns "$pod")" timeout -k 5 "$TTL" "$@" </dev/null >>"$RUN/logs/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(starttime "$pid") $name" >>"$RUN/pids"
  echo "$pid"
}

wait_port() { # pod addr port what pid
  for _ in $(seq 1 150); do
    in_ns "$1" timeout 1 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
    kill -0 "$5" 2>/dev/null || die "$4 exited before listening on $2:$3: $(tail -n 5 "$RUN/logs/$4.log" 2>/dev/null)"
    sleep 0.1
  done
  die "$4 did not listen on $2:$3 within 15 s"
}

# how each process of the mesh is started, by `up` and by `restart`
start_control() {
  # with the injection webhook of a cluster's control plane (docs/injection.md), for `remoractl check`
  start control control "$CONTROL_BIN" --listen "$CONTROL_ADDR:$CONTROL_PORT" --state-dir "$RUN/state/control" \
    --cert-lifetime "$CERT_LIFETIME" --webhook-listen "$CONTROL_ADDR:15017"
}
start_app() { # POD
  local port
  port=$(echo "$PODS" | awk -v p="$1" '$1 == p {print $4}')
  case $(echo "$PODS" | awk -v p="$1" '$1 == p {print $3}') in
    http) start "app-$1" "$1" "$PY" "$ROOT/tests/tools/h1_origin.py" --host 0.0.0.0 --port "$port" ;;
    grpc) start "app-$1" "$1" "$PY" "$ROOT/tests/tools/grpc_echo_server.py" --host 0.0.0.0 --port "$port" ;;
    *) die "pod $1 has no app" ;;
  esac
}
start_agent() { # POD
  start "agent-$1" "$1" setpriv --reuid "$PROXY_UID" --regid "$PROXY_UID" --clear-groups \
    "$AGENT" --transparent --control "$CONTROL_ADDR:$CONTROL_PORT" --node-id "$1" --namespace default \
    --state-dir "$RUN/state/$1" --trust-anchor "$RUN/trust-anchor.pem" --identity-token "$RUN/tokens/$1.token" \
    --workers 1 --stats-interval-ms 1000 --drain-timeout-ms 3000
}

# restart POD agent|app, or restart control: SIGKILL the process (and its timeout(1)) that the last record
# of that name holds, if it still runs, then start it again as `up` did and wait for its port (bounded)
restart() {
  require_root restart
  [ -f "$RUN/pids" ] || die "the mesh is not up ($RUN/pids absent)"
  local pod=${1:-} what=${2:-} name pid st c addr port
  case "$pod:$what" in
    control: | control:control) name=control ;;
    *:agent) name=agent-$pod ;;
    *:app) name=app-$pod ;;
    *) die "usage: mesh.sh restart POD agent|app, or mesh.sh restart control" ;;
  esac
  [ "$name" = control ] || echo "$PODS" | awk -v p="$pod" '$1 == p && p != "control" {f = 1} END {exit !f}' || die "no pod $pod"
  read -r pid st < <(awk -v n="$name" '$3 == n {p = $1; s = $2} END {print p, s}' "$RUN/pids")
  if ours "$pid" "$st"; then
    # the process itself is timeout(1)'s child: kill it first, as a crash would end it
    for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill -KILL "$c" 2>/dev/null || true; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do ours "$pid" "$st" || break; sleep 0.1; done
    ! ours "$pid" "$st" || die "$name (pid $pid) did not exit after SIGKILL within 5 s"
  fi
  case $name in
    control) pid=$(start_control); addr=$CONTROL_ADDR; port=$CONTROL_PORT; pod=control ;;
    agent-*) pid=$(start_agent "$pod"); addr=127.0.0.1; port=15020 ;;
    app-*) pid=$(start_app "$pod"); addr=127.0.0.1; port=$(echo "$PODS" | awk -v p="$pod" '$1 == p {print $4}') ;;
  esac
  wait_port "$pod" "$addr" "$port" "$name" "$pid"
  echo "$name restarted: pid $pid"
}

ready() { in_ns "$1" curl -fs --noproxy '*' --max-time 2 -o /dev/null "http://127.0.0.1:15020/ready"; }

up() {
  require_root up
  local f
  for f in "$AGENT" "$INIT" "$CONTROL_BIN" "$REMORACTL"; do
    [ -x "$f" ] || die "$f is not built (cmake --build build, or set REMORA_AGENT/REMORA_INIT/REMORA_CONTROL_BIN/REMORACTL)"
  done
  for f in setpriv timeout setsid curl; do command -v "$f" >/dev/null || die "needs $f: bash scripts/install-deps.sh"; done
  command -v iptables-nft-restore >/dev/null || command -v iptables-legacy-restore >/dev/null ||
    die "needs Debian's iptables package: bash scripts/install-deps.sh"
  [ ! -e "$RUN" ] || die "$RUN exists: the mesh is up (or a previous up failed): run \`scripts/mesh.sh down\` first"
  local pod addr kind port
  for pod in br $(echo "$PODS" | awk '{print $1}'); do
    ! ns_exists "$(ns "$pod")" || die "namespace $(ns "$pod") exists already (not ours: $RUN is absent); remove it or set REMORA_MESH_PREFIX"
    [ ! -e "/etc/netns/$(ns "$pod")" ] || die "/etc/netns/$(ns "$pod") exists already (not ours); remove it or set REMORA_MESH_PREFIX"
  done
  mkdir -p "$RUN/logs" "$RUN/state"
  : >"$RUN/namespaces"; : >"$RUN/etc"; : >"$RUN/pids"
  UP_DONE=0
  trap '[ "$UP_DONE" = 1 ] || echo "mesh.sh: up failed; what it created is recorded in $RUN: run \`scripts/mesh.sh down\` to remove it" >&2' EXIT

  echo "mesh: namespaces (prefix $PREFIX, state in $RUN)"
  ns br >>"$RUN/namespaces"
  ip netns add "$(ns br)"
  ip -n "$(ns br)" link set lo up
  ip -n "$(ns br)" link add br0 type bridge
  ip -n "$(ns br)" addr add "$BRIDGE_ADDR/24" dev br0
  ip -n "$(ns br)" link set br0 up
  ip netns exec "$(ns br)" sysctl -q -w net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 >/dev/null
  printf '   %-20s %-11s %s\n' "$(ns br)" "$BRIDGE_ADDR" "bridge br0"
  while read -r pod addr kind port; do
    local n; n=$(ns "$pod")
    echo "$n" >>"$RUN/namespaces"
    ip netns add "$n"
    ip -n "$n" link set lo up
    ip link add eth0 netns "$n" type veth peer name "v-$pod" netns "$(ns br)"
    ip -n "$(ns br)" link set "v-$pod" master br0 up
    ip -n "$n" addr add "$addr/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" route add "$VIP_NET" via "$BRIDGE_ADDR" dev eth0
    echo "/etc/netns/$n" >>"$RUN/etc"
    mkdir -p "/etc/netns/$n"
    { printf '127.0.0.1 localhost\n::1 localhost\n%s %s\n' "$addr" "$pod"; echo "$HOSTS"; } >"/etc/netns/$n/hosts"
    printf '# the one-machine mesh: no resolver is reachable, names come from /etc/hosts\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n' \
      >"/etc/netns/$n/resolv.conf"
    printf '   %-20s %-11s %s\n' "$n" "$addr" "$([ "$kind" = - ] || echo "$kind :$port")"
  done <<<"$PODS"

  echo "mesh: control plane in $(ns control) at $CONTROL_ADDR:$CONTROL_PORT (injection webhook :15017), OTLP receiver at $CONTROL_ADDR:4317 (gRPC), :4318 (HTTP)"
  local cpid opid
  cpid=$(start_control)
  if command -v node >/dev/null && [ -d "$ROOT/tests/tools/otlp_receiver/node_modules" ]; then
    opid=$(start otlp control node "$ROOT/tests/tools/otlp_receiver/receiver.js" --host "$CONTROL_ADDR" \
      --grpc-port 4317 --http-port 4318 --out "$RUN/spans.jsonl")
    wait_port control "$CONTROL_ADDR" 4318 otlp "$opid"
  else
    echo "   (no OTLP receiver: node or tests/tools/otlp_receiver/node_modules missing; scripts/install-deps.sh)"
  fi
  wait_port control "$CONTROL_ADDR" "$CONTROL_PORT" control "$cpid"
  # the trust anchor the agents verify the control plane with (readable by their UID)
  install -m 644 "$RUN/state/control/ca/trust-anchor.pem" "$RUN/trust-anchor.pem"
  mkdir -p "$RUN/tokens"
  chmod 755 "$RUN/tokens"

  echo "mesh: apps"
  local pids=()
  while read -r pod addr kind port; do
    [ "$kind" = - ] || pids+=("$pod:$port:$(start_app "$pod")")
  done <<<"$PODS"
  local p
  for p in "${pids[@]}"; do
    IFS=: read -r pod port pid <<<"$p"
    wait_port "$pod" 127.0.0.1 "$port" "app-$pod" "$pid"
    printf '   %-8s %s:%s\n' "$pod" "$(echo "$PODS" | awk -v p="$pod" '$1 == p {print $2}')" "$port"
  done

  echo "mesh: remora-init and agents (UID $PROXY_UID, --transparent --control $CONTROL_ADDR:$CONTROL_PORT)"
  mkdir -p "$RUN/log"
  chown "$PROXY_UID:$PROXY_UID" "$RUN/log"  # the access log of the demo's Telemetry
  chmod 755 "$RUN" "$RUN/state" "$RUN/log"
  pids=()
  for pod in $(pods_with_agent); do
    in_ns "$pod" timeout 30 "$INIT" --control-port "$CONTROL_PORT" >"$RUN/logs/init-$pod.log" 2>&1 ||
      die "remora-init failed in $(ns "$pod"): $(cat "$RUN/logs/init-$pod.log")"
    mkdir -p "$RUN/state/$pod"
    chown "$PROXY_UID:$PROXY_UID" "$RUN/state/$pod"
    chmod 700 "$RUN/state/$pod"
    # the pod's workload identity: ns default, service account = the app's name
    ctl token create --namespace default --service-account "$pod" --ttl 1h >"$RUN/tokens/$pod.token" ||
      die "cannot create the bootstrap token of $pod: $(tail -n 5 "$RUN/logs/control.log")"
    chown "$PROXY_UID:$PROXY_UID" "$RUN/tokens/$pod.token"
    chmod 600 "$RUN/tokens/$pod.token"
    pids+=("$pod:$(start_agent "$pod")")
  done
  # an agent is up when its process runs and its health port answers; /ready waits for a first snapshot
  for p in "${pids[@]}"; do
    IFS=: read -r pod pid <<<"$p"
    wait_port "$pod" 127.0.0.1 15020 "agent-$pod" "$pid"
    printf '   %-8s agent pid %s\n' "$pod" "$pid"
  done
  UP_DONE=1
  echo "mesh: up; try: scripts/mesh.sh exec client curl -s http://web.default.svc/hello"
}

down() {
  require_root down
  [ -d "$RUN" ] || { echo "mesh: nothing to remove ($RUN absent)"; return 0; }
  local pid st name left d
  if [ -f "$RUN/pids" ]; then
    # SIGTERM to each timeout(1), which passes it on (the agents drain); then SIGKILL what is left,
    # the recorded process and its descendants
    while read -r pid st name; do
      if ours "$pid" "$st"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done <"$RUN/pids"
    for _ in $(seq 1 50); do
      left=0
      while read -r pid st name; do ours "$pid" "$st" && left=1; done <"$RUN/pids"
      [ $left -eq 0 ] && break
      sleep 0.1
    done
    while read -r pid st name; do
      if ours "$pid" "$st"; then
        for d in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill -KILL "$d" 2>/dev/null || true; done
        kill -KILL "$pid" 2>/dev/null || true
        echo "   $name (pid $pid) killed after 5 s"
      fi
    done <"$RUN/pids"
  fi
  if [ -f "$RUN/namespaces" ]; then
    # the pods first, the bridge last
    for name in $(tac "$RUN/namespaces"); do
      if ns_exists "$name"; then
        # any process still inside (none expected) would keep the namespace alive unseen
        for d in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$d" 2>/dev/null || true; done
        ip netns del "$name"
      fi
    done
  fi
  if [ -f "$RUN/etc" ]; then
    while read -r d; do
      case $d in /etc/netns/"$PREFIX"-*) rm -f "$d/hosts" "$d/resolv.conf"; rmdir "$d" 2>/dev/null || true ;; esac
    done <"$RUN/etc"
  fi
  if [ -n "${REMORA_MESH_LOGS_TO:-}" ] && [ -d "$RUN/logs" ]; then
    mkdir -p "$REMORA_MESH_LOGS_TO"
    cp "$RUN"/logs/*.log "$REMORA_MESH_LOGS_TO"/ 2>/dev/null || true
  fi
  rm -rf "$RUN"
  echo "mesh: down"
}

status() {
  require_root status
  [ -d "$RUN" ] || { echo "mesh: down ($RUN absent)"; return 3; }
  local bad=0 pid st name pod
  echo "namespaces:"
  while read -r name; do
    if ns_exists "$name"; then
      printf '   %-20s %s\n' "$name" "$(ip -n "$name" -4 -o addr show 2>/dev/null | awk '$2 != "lo" {print $4}' | paste -sd' ')"
    else
      printf '   %-20s MISSING\n' "$name"; bad=1
    fi
  done <"$RUN/namespaces"
  echo "processes:"
  while read -r pid st name; do
    if ours "$pid" "$st"; then printf '   %-14s pid %-8s running\n' "$name" "$pid"; else printf '   %-14s pid %-8s EXITED\n' "$name" "$pid"; bad=1; fi
  done <"$RUN/pids"
  echo "agents (/ready):"
  for pod in $(pods_with_agent); do
    if ready "$pod"; then printf '   %-8s ready\n' "$pod"; else printf '   %-8s NOT READY\n' "$pod"; bad=1; fi
  done
  echo "remoractl status:"
  ctl status | sed 's/^/   /' || bad=1
  return $bad
}

ctl() {
  in_ns control timeout "$EXEC_TIMEOUT" "$REMORACTL" --control "$CONTROL_ADDR:$CONTROL_PORT" \
    --ca "$RUN/state/control/ca/trust-anchor.pem" --admin-token "$RUN/state/control/admin.token" "$@"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  exec)
    require_root exec
    [ $# -ge 2 ] || die "usage: mesh.sh exec POD CMD..."
    pod=$1; shift
    ns_exists "$(ns "$pod")" || die "no pod $pod (namespace $(ns "$pod"))"
    in_ns "$pod" timeout "$EXEC_TIMEOUT" "$@"
    ;;
  ctl) require_root ctl; ctl "$@" ;;
  restart) restart "$@" ;;
  *) echo "usage: scripts/mesh.sh up|down|status | exec POD CMD... | ctl REMORACTL-ARGS... | restart POD agent|app | restart control" >&2; exit 2 ;;
esac
