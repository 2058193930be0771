# Remora's proxy image, ghcr.io/remora-mesh/proxy:<version> (docs/images.md):
#   /usr/local/bin/remora-agent   the sidecar (ENTRYPOINT), runs as the proxy UID 2102
#   /usr/local/bin/remora-init    the init container's iptables step (run as root with NET_ADMIN and
#                                 NET_RAW only: command ["/usr/local/bin/remora-init", ...])
#   /usr/local/bin/remoractl      for `remoractl await -- CMD` (wait for the agent, then stop it)
#   /usr/local/lib/remora/        the agent's modules (control-plane client, OTLP exporter), loaded
#                                 from ../lib/remora relative to the executable
#
#   docker build -f docker/proxy.Dockerfile -t ghcr.io/remora-mesh/proxy:0.1.0 .
#
# Build arguments (all optional):
#   VERSION          the image's version label (default 0.1.0, the project version)
#   BUILD_TYPE       CMAKE_BUILD_TYPE of the build stage (default Release)
#   DEBIAN_SNAPSHOT  a snapshot.debian.org timestamp (e.g. 20240601T000000Z): both stages install
#                    their packages from that snapshot, for a reproducible package set (default:
#                    the live Debian 12 archive)
#   BUILD_IMAGE      the build stage's base (default debian:12)
#   RUNTIME_IMAGE    the runtime stage's base (default debian:12-slim)
ARG BUILD_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12-slim

FROM ${BUILD_IMAGE} AS build
ARG BUILD_TYPE=Release
ARG DEBIAN_SNAPSHOT=
RUN if [ -n "$DEBIAN_SNAPSHOT" ]; then \
      sed -i -e "s|http://deb.debian.org/debian-security|http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT|" \
             -e "s|http://deb.debian.org/debian|http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT|" \
             /etc/apt/sources.list.d/debian.sources && \
      echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99snapshot; \
    fi
# the libraries of CMakeLists.txt (pkg-config names in parentheses): libuv (libuv), h2o (libh2o),
# nghttp2, http-parser, OpenSSL 3, c-ares (libcares), libyaml (yaml-0.1), PCRE2 (libpcre2-8),
# protobuf-c and protoc-c, gRPC (grpc, gpr), jansson, libcurl
RUN apt-get update && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libuv1-dev libh2o-dev libnghttp2-dev libhttp-parser-dev libssl-dev libc-ares-dev libyaml-dev libpcre2-dev \
      libprotobuf-c-dev protobuf-c-compiler libgrpc-dev libjansson-dev libcurl4-openssl-dev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DBUILD_TESTING=OFF && \
    cmake --build /build --target remora-agent remora-agent-control remora-agent-otlp remora-init remora-control remoractl
RUN DESTDIR=/out cmake --install /build --prefix /usr/local --strip

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG DEBIAN_SNAPSHOT=
LABEL org.opencontainers.image.title="remora-proxy" \
      org.opencontainers.image.description="Remora's sidecar (remora-agent), its init step (remora-init) and remoractl" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/remora-mesh/remora"
RUN if [ -n "$DEBIAN_SNAPSHOT" ]; then \
      sed -i -e "s|http://deb.debian.org/debian-security|http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT|" \
             -e "s|http://deb.debian.org/debian|http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT|" \
             /etc/apt/sources.list.d/debian.sources && \
      echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99snapshot; \
    fi
# what `ldd` says the binaries and modules need, beyond debian:12-slim's own packages (libc6,
# libstdc++6, libgcc-s1, zlib1g, libpcre2-8-0: tests/integration/test_images.py checks this list);
# iptables (iptables-nft-restore, iptables-legacy-restore) for remora-init
RUN apt-get update && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libh2o0.13 libnghttp2-14 libhttp-parser2.9 libwslay1 libssl3 libc-ares2 libyaml-0-2 \
      libgrpc29 libprotobuf-c1 libjansson4 libcurl4 \
      iptables && \
    rm -rf /var/lib/apt/lists/*
# the proxy user (remora-init never captures its traffic) and the agent's state directory (a named
# volume or emptyDir mounted here starts with this owner)
RUN groupadd --system --gid 2102 remora-proxy && \
    useradd --system --uid 2102 --gid 2102 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin remora-proxy && \
    install -d -o 2102 -g 2102 -m 0755 /var/run/remora && \
    install -d -o 2102 -g 2102 -m 0700 /var/run/remora/state
COPY --from=build /out/usr/local/bin/remora-agent /out/usr/local/bin/remora-init /out/usr/local/bin/remoractl /usr/local/bin/
COPY --from=build /out/usr/local/lib/remora/ /usr/local/lib/remora/
USER 2102:2102
# outbound 15001, inbound 15006, health and metrics 15020 (the admin API, 15000, is loopback only)
EXPOSE 15001 15006 15020
ENTRYPOINT ["/usr/local/bin/remora-agent"]
