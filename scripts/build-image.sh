#!/usr/bin/env bash
# Builds the backup-webhook container image without a Docker daemon, as a docker-archive tar:
#
#   scripts/build-image.sh OUT.tar [BINARY]
#
#   BINARY   the backup-webhook binary to package (default: target/release/backup-webhook,
#            built with `cargo build --release --locked -p backup-webhook` when missing). The
#            end-to-end tests pass target/debug/backup-webhook; a copy is stripped first.
#   IMAGE    environment: the image name (default ghcr.io/kubectl-backup/backup-webhook:<version>).
#   SOURCE_DATE_EPOCH  environment: the image's timestamps (default: the commit time of HEAD).
#
# Load the result with `ctr -n k8s.io images import OUT.tar`, `docker load -i OUT.tar`,
# `podman load -i OUT.tar` or `skopeo copy docker-archive:OUT.tar docker://REGISTRY/...`.
#
# The image has the layout of the Dockerfile's (the documented way to build with Docker):
# /usr/local/bin/backup-webhook as ENTRYPOINT, USER 65532:65532 (distroless "nonroot"), EXPOSE 8443
# (webhook, /healthz, /readyz) and 9090 (/metrics), and what gcr.io/distroless/cc-debian12 gives the
# binary: the glibc and libgcc shared libraries it links (taken from this Debian bookworm host, the
# same release distroless/cc-debian12 is built from), the CA certificates, /etc/passwd and /etc/group
# with root, nonroot and nobody, /tmp (1777) and /home/nonroot. No shell. Time zones are compiled into
# the binary (jiff's bundled tzdb), so no tzdata. The same inputs give the same image ID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -le 2 ] || { usage >&2; exit 2; }
OUT=$1
BINARY=${2:-target/release/backup-webhook}
for tool in jq sha256sum tar ldd strip; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (apt-get install jq coreutils tar libc-bin binutils)" >&2; exit 1; }
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$VERSION" ] || { echo "build-image.sh: no workspace version in Cargo.toml" >&2; exit 1; }
IMAGE=${IMAGE:-ghcr.io/kubectl-backup/backup-webhook:$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

if [ ! -e "$BINARY" ] && [ "$BINARY" = target/release/backup-webhook ]; then
  echo "build-image.sh: building $BINARY" >&2
  cargo build --release --locked -p backup-webhook
fi
[ -f "$BINARY" ] || { echo "build-image.sh: binary $BINARY does not exist" >&2; exit 1; }
file -b "$BINARY" 2>/dev/null | grep -q 'ELF 64-bit.*x86-64' || {
  echo "build-image.sh: $BINARY is not an x86-64 ELF executable (the image is linux/amd64)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot,lib64,lib/x86_64-linux-gnu}
chmod 1777 "$rootfs/tmp"
strip -o "$rootfs/usr/local/bin/backup-webhook" "$BINARY"
chmod 0755 "$rootfs/usr/local/bin/backup-webhook"

# The shared libraries the binary links, from this host (Debian bookworm, like distroless/cc-debian12),
# at the paths the dynamic loader looks in.
libs=$(ldd "$BINARY" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | sort -u) || true
[ -n "$libs" ] || { echo "build-image.sh: ldd found no shared libraries in $BINARY: expected the glibc-linked binary cargo builds (what the Dockerfile ships)" >&2; exit 1; }
for lib in $libs; do
  real=$(readlink -f "$lib")
  case "$(basename "$lib")" in
    ld-linux-x86-64.so.2) cp "$real" "$rootfs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
                          ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rootfs/lib64/ld-linux-x86-64.so.2" ;;
    *) cp "$real" "$rootfs/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
  esac
done
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
echo "home/nonroot 65532:65532" >"$rootfs.owners"
find "$rootfs" -type f -exec chmod go-w {} +

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
jq -n --arg version "$VERSION" --arg revision "$REVISION" --arg created "$created" '{
    User: "65532:65532",
    ExposedPorts: {"8443/tcp": {}, "9090/tcp": {}},
    Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
    Entrypoint: ["/usr/local/bin/backup-webhook"],
    WorkingDir: "/",
    Labels: {
      "org.opencontainers.image.title": "backup-webhook",
      "org.opencontainers.image.description": "kubectl-backup in-cluster component: admission webhook (auto-restore, ephemeral workspaces) and controllers (schedules, expiry, continuous backup)",
      "org.opencontainers.image.version": $version,
      "org.opencontainers.image.revision": $revision,
      "org.opencontainers.image.created": $created,
      "org.opencontainers.image.source": "https://github.com/kubectl-backup/kubectl-backup",
      "org.opencontainers.image.licenses": "Apache-2.0",
      "org.opencontainers.image.base.name": "scratch (distroless/cc-debian12 layout, assembled by scripts/build-image.sh)"
    }
  }' >"$work/config.json"

id=$("$ROOT/scripts/docker-archive.sh" "$rootfs" "$work/config.json" "$IMAGE" "$OUT")
echo "build-image.sh: $IMAGE ($id) -> $OUT ($(du -h "$OUT" | cut -f1))" >&2
echo "$IMAGE"
