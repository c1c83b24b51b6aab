# syntax=docker/dockerfile:1
# The backup-webhook image: the admission webhook and controllers that `kubectl backup install` and
# the Helm chart deploy (ghcr.io/kubectl-backup/backup-webhook:<version>).
#
#   docker build -t ghcr.io/kubectl-backup/backup-webhook:0.1.0 .
#
# It runs as user 65532 (distroless "nonroot"), which the Deployment's securityContext requires.
# This is the glibc build on distroless/cc, for linux/amd64. The released image is built without
# Docker by scripts/release.sh: static (musl) binaries, linux/amd64 and linux/arm64 in one OCI
# image index, the same layout and org.opencontainers.image.* labels (docs/install.md).

FROM rust:1.95-bookworm AS build
# etcd-client generates its gRPC code with protoc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p backup-webhook \
 && install -m 0755 target/release/backup-webhook /usr/local/bin/backup-webhook

# glibc, libgcc and CA certificates (for https object stores); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/backup-webhook /usr/local/bin/backup-webhook
USER 65532:65532
# 8443: admission webhook, /healthz, /readyz (HTTPS); 9090: Prometheus /metrics.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/backup-webhook"]
