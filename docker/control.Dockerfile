# Remora's control-plane image, ghcr.io/remora-mesh/control:<version> (docs/images.md):
#   /usr/local/bin/remora-control   the control plane (ENTRYPOINT), runs as UID 2103
#   /usr/local/bin/remoractl        the CLI (setup jobs: tokens, `remoractl apply`)
#   /var/lib/remora-control         the default state directory (store, CA, admin.token), owned by
#                                   2103: a named volume mounted here starts with that owner
#
#   docker build -f docker/control.Dockerfile -t ghcr.io/remora-mesh/control:0.1.0 .
#
# Build arguments (all optional): VERSION (label, default 0.1.0), BUILD_TYPE (default Release),
# DEBIAN_SNAPSHOT (a snapshot.debian.org timestamp for both stages' packages; default: the live
# archive), BUILD_IMAGE (default debian:12), RUNTIME_IMAGE (default debian:12-slim); as in
# docker/proxy.Dockerfile.
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
LABEL org.opencontainers.image.title="remora-control" \
      org.opencontainers.image.description="Remora's control plane (remora-control) and CLI (remoractl)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/remora-mesh/remora"
RUN if [ -n "$DEBIAN_SNAPSHOT" ]; then \
      sed -i -e "s|http://deb.debian.org/debian-security|http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT|" \
             -e "s|http://deb.debian.org/debian|http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT|" \
             /etc/apt/sources.list.d/debian.sources && \
      echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99snapshot; \
    fi
# what `ldd` says remora-control and remoractl need beyond debian:12-slim's own packages
# (tests/integration/test_images.py checks this list)
RUN apt-get update && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc29 libprotobuf-c1 libssl3 libc-ares2 libyaml-0-2 libhttp-parser2.9 libjansson4 libcurl4 && \
    rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 2103 remora-control && \
    useradd --system --uid 2103 --gid 2103 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin remora-control && \
    install -d -o 2103 -g 2103 -m 0700 /var/lib/remora-control
COPY --from=build /out/usr/local/bin/remora-control /out/usr/local/bin/remoractl /usr/local/bin/
USER 2103:2103
# gRPC for agents and remoractl 15010, the injection webhook 15017 (when --webhook-listen is given)
EXPOSE 15010 15017
ENTRYPOINT ["/usr/local/bin/remora-control"]
CMD ["--listen", "0.0.0.0:15010", "--state-dir", "/var/lib/remora-control"]
