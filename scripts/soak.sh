#!/usr/bin/env bash
# The chaos soak (docs/soak.md): mixed traffic through the one-machine mesh (scripts/mesh.sh) for
# --duration seconds (default 600) with a fault proxy between two agents, a config push every second,
# 60 s workload certificates, and an agent, an app and the control plane SIGKILLed and restarted in
# turn; then a report: requests by kind and outcome, failures no chosen fault explains (must be 0), every
# agent's RSS slope after warm-up and fd growth. Exit 0 only when all of that holds. Needs root.
#
#   bash scripts/soak.sh [--duration SECONDS] [--report FILE] [--period SECONDS]
#                        [--kills agent,app,control] [--without pushes,kills,faults]
#
# The mesh gets its own prefix (remora-soak-<pid>) and state dir, so it never meets a demo's or a test's;
# the EXIT trap stops the soak's processes and runs `mesh.sh down`. Binaries: REMORA_AGENT and
# REMORA_INIT (remora-control and remoractl next to the agent's build dir) when set; otherwise the
# targets are built in REMORA_BUILD_DIR (default build). REMORA_SOAK_LOGS: a directory to keep the
# mesh's logs and the soak's records in (default: removed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=600
REPORT=
PERIOD=30
WITHOUT=
KILLS=agent,app,control
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=${2:?--duration SECONDS}; shift 2 ;;
    --report) REPORT=${2:?--report FILE}; shift 2 ;;
    --period) PERIOD=${2:?--period SECONDS}; shift 2 ;;
    --without) WITHOUT=${2:?--without pushes,kills,faults}; shift 2 ;;
    --kills) KILLS=${2:?--kills agent,app,control}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1 (--duration SECONDS, --report FILE, --period SECONDS, --kills LIST, --without LIST)" >&2; exit 2 ;;
  esac
done
case $DURATION in '' | *[!0-9]*) echo "soak: --duration takes whole seconds" >&2; exit 2 ;; esac
[ "$DURATION" -ge 30 ] || { echo "soak: --duration must be at least 30 s" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "soak: must run as root (network namespaces, netfilter): sudo bash scripts/soak.sh" >&2; exit 1; }
[ -z "$REPORT" ] || REPORT=$(realpath -m "$REPORT")

if [ -z "${REMORA_AGENT:-}" ]; then
  BUILD=${REMORA_BUILD_DIR:-build}
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target remora-agent remora-control remoractl remora-init >/dev/null
  export REMORA_AGENT=$ROOT/$BUILD/agent/remora-agent REMORA_INIT=$ROOT/$BUILD/init/remora-init
fi
export REMORA_MESH_PREFIX=remora-soak-$$
export REMORA_MESH_RUN=/run/$REMORA_MESH_PREFIX
export REMORA_MESH_TTL=$((DURATION + 600))  # every process of the mesh lives at most this long
# workload certificates renewed about every 40 s (REMORA_SOAK_CERT_LIFETIME: another lifetime, e.g. 24h
# to take rotation out of a run)
export REMORA_MESH_CERT_LIFETIME=${REMORA_SOAK_CERT_LIFETIME:-60s}
export REMORA_MESH_EXEC_TIMEOUT=60
WORK=$(mktemp -d /tmp/remora-soak.XXXXXX)
chmod 755 "$WORK"
UP=0
cleanup() {
  local rc=$?
  if [ $UP -eq 1 ]; then
    [ -z "${REMORA_SOAK_LOGS:-}" ] || export REMORA_MESH_LOGS_TO=$REMORA_SOAK_LOGS/mesh
    bash scripts/mesh.sh down >/dev/null 2>&1 || echo "soak: mesh.sh down failed" >&2
  fi
  if [ -n "${REMORA_SOAK_LOGS:-}" ]; then
    mkdir -p "$REMORA_SOAK_LOGS"
    cp -r "$WORK"/. "$REMORA_SOAK_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "soak: mesh.sh up (prefix $REMORA_MESH_PREFIX, certificates of $REMORA_MESH_CERT_LIFETIME)"
UP=1
bash scripts/mesh.sh up | sed 's/^/   /'
# the driver stops every loop at the deadline; timeout(1) bounds it should it hang
timeout -k 10 $((DURATION + 900)) /usr/bin/python3 tests/soak/soak.py --duration "$DURATION" --period "$PERIOD" \
  --work "$WORK" ${REPORT:+--report "$REPORT"} --kills "$KILLS" ${WITHOUT:+--without "$WITHOUT"}
