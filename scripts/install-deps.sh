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
  # real clients and servers used by the integration tests and the benchmark
  curl nghttp2-client nghttp2-server nghttp2-proxy haproxy
  # bench/callgrind.sh: instructions per request
  valgrind
  python3 python3-grpcio python3-h2 python3-pytest python3-pytest-timeout python3-protobuf
  openssl procps iproute2
  # remora-init (iptables-nft/legacy-restore) and its namespace tests (setpriv)
  iptables util-linux
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
