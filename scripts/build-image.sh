#!/usr/bin/env bash
# Builds the backup-webhook container image without a Docker daemon, as a docker-archive tar:
#
#   scripts/build-image.sh OUT.tar [BINARY]
#
#   BINARY   the backup-webhook binary to package (default: target/release/backup-webhook,
#            built with `cargo build --release --locked -p backup-webhook` when missing). The
#            end-to-end tests pass target/debug/backup-webhook; a copy is stripped first. The
#            image's platform is the binary's: linux/amd64 or linux/arm64 (read from its ELF header).
#   IMAGE    environment: the image name (default ghcr.io/kubectl-backup/backup-webhook:<version>).
#   SOURCE_DATE_EPOCH  environment: the image's timestamps (default: the commit time of HEAD).
#
# Load the result with `ctr -n k8s.io images import OUT.tar`, `docker load -i OUT.tar`,
# `podman load -i OUT.tar` or `skopeo copy docker-archive:OUT.tar docker://REGISTRY/...`.
# scripts/release.sh builds one per linux platform from the static (musl) binaries and joins them
# into a multi-arch OCI image index with scripts/oci-index.sh.
#
# The image has the layout of the Dockerfile's (the documented way to build with Docker):
# /usr/local/bin/backup-webhook as ENTRYPOINT, USER 65532:65532 (distroless "nonroot"), EXPOSE 8443
# (webhook, /healthz, /readyz) and 9090 (/metrics), the CA certificates, /etc/passwd and /etc/group
# with root, nonroot and nobody, /tmp (1777) and /home/nonroot. No shell. Time zones are compiled into
# the binary (jiff's bundled tzdb), so no tzdata. A static binary (the release's) gets nothing else,
# like gcr.io/distroless/static-debian12; a dynamically linked one (cargo's default glibc build, what
# the tests pass) also gets the glibc and libgcc shared libraries it links, taken from this Debian
# bookworm host (the release distroless/cc-debian12 is built from). The image config carries the
# org.opencontainers.image.* labels (title, description, version, revision, created, source,
# licenses). The same inputs give the same image ID.
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
for tool in jq sha256sum tar ldd strip readelf file; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (apt-get install jq coreutils tar libc-bin binutils file)" >&2; exit 1; }
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
case "$(file -b "$BINARY" 2>/dev/null)" in
  ELF\ 64-bit*x86-64*) ARCH=amd64 ;;
  ELF\ 64-bit*ARM\ aarch64*) ARCH=arm64 ;;
  *) echo "build-image.sh: $BINARY is no x86-64 or aarch64 ELF executable (the image is linux/amd64 or linux/arm64)" >&2; exit 1 ;;
esac
# Static: no program interpreter and no NEEDED library.
STATIC=true
if readelf -lW "$BINARY" | grep -q 'program interpreter' || readelf -dW "$BINARY" | grep -q '(NEEDED)'; then
  STATIC=false
  [ "$ARCH" = amd64 ] && [ "$(uname -m)" = x86_64 ] || {
    echo "build-image.sh: $BINARY is dynamically linked and not for this machine: give a static (musl) build" >&2; exit 1; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
chmod 1777 "$rootfs/tmp"
if [ "$ARCH" = amd64 ]; then strip -o "$rootfs/usr/local/bin/backup-webhook" "$BINARY"
else cp "$BINARY" "$rootfs/usr/local/bin/backup-webhook"; fi  # the release's are stripped by cargo
chmod 0755 "$rootfs/usr/local/bin/backup-webhook"

# A dynamically linked binary: the shared libraries it links, from this host (Debian bookworm, like
# distroless/cc-debian12), at the paths the dynamic loader looks in.
if ! $STATIC; then
  mkdir -p "$rootfs"/{lib64,lib/x86_64-linux-gnu}
  libs=$(ldd "$BINARY" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | sort -u) || true
  [ -n "$libs" ] || { echo "build-image.sh: ldd found no shared libraries in the dynamically linked $BINARY" >&2; exit 1; }
  for lib in $libs; do
    real=$(readlink -f "$lib")
    case "$(basename "$lib")" in
      ld-linux-x86-64.so.2) cp "$real" "$rootfs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
                            ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rootfs/lib64/ld-linux-x86-64.so.2" ;;
      *) cp "$real" "$rootfs/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
    esac
  done
fi
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
echo "home/nonroot 65532:65532" >"$rootfs.owners"
find "$rootfs" -type f -exec chmod go-w {} +

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
if $STATIC; then base="distroless/static-debian12"; else base="distroless/cc-debian12"; fi
jq -n --arg version "$VERSION" --arg revision "$REVISION" --arg created "$created" --arg base "$base" '{
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
      "org.opencontainers.image.base.name": "scratch (\($base) layout, assembled by scripts/build-image.sh)"
    }
  }' >"$work/config.json"

id=$(ARCH=$ARCH "$ROOT/scripts/docker-archive.sh" "$rootfs" "$work/config.json" "$IMAGE" "$OUT")
echo "build-image.sh: $IMAGE linux/$ARCH ($id) -> $OUT ($(du -h "$OUT" | cut -f1))" >&2
echo "$IMAGE"
