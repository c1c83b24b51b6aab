#!/usr/bin/env bash
# Builds a kubectl-backup release: static binaries, the krew archives, the krew manifest generated
# for exactly the platforms built, and the multi-arch backup-webhook image.
#
#   scripts/release.sh                      # everything this machine can build, into dist/
#   scripts/release.sh --out DIR            # into DIR
#   scripts/release.sh --platforms linux_amd64,linux_arm64
#                                           # these platforms, all required: fails if one is not built
#   scripts/release.sh --no-image           # no webhook image
#   scripts/release.sh --template FILE      # the manifest template (default: krew-manifest.yaml)
#   scripts/release.sh --binary target/debug/kubectl-backup
#                                           # package an already-built binary for the platform it
#                                           # was built for (no build, no image; what the tests use)
#
# Linux (amd64, arm64) is built for musl with `cargo zigbuild` (zig as the C compiler and linker of
# aws-lc-sys and the final link): fully static binaries that run on any distribution. Each is checked
# to be static (no program interpreter, no NEEDED library) and for the right machine, and run with
# --version when this machine can run it (natively, or arm64 through qemu-aarch64 when installed).
# Darwin needs the macOS SDK's frameworks (Security, CoreFoundation) to link, which zig does not
# ship: darwin platforms are built only when SDKROOT names a macOS SDK. `tests/env/install.sh release` installs the tools
# (musl and darwin standard libraries, ziglang and cargo-zigbuild, qemu-user, skopeo).
#
# Output in DIR:
#   kubectl-backup_<version>_<os>_<arch>.tar.gz   kubectl-backup, LICENSE, README.md at the root
#                                                 (reproducible: sorted, root-owned, commit time)
#   krew-manifest.yaml   generated from the repository's krew-manifest.yaml (a template without any
#                        sha256): the release's version and URIs, and only the platforms built, each
#                        with its archive's sha256. Not written when nothing was built; never with a
#                        placeholder sha256.
#   backup-webhook_<version>_oci.tar              OCI image layout: an image index of the linux
#                                                 platforms built (skopeo copy --all oci-archive:...)
#   backup-webhook_<version>_linux_<arch>.docker.tar   one docker-archive per platform (docker load)
#   SHA256SUMS
# Exits non-zero when nothing was built, when a platform named by --platforms was not built, or when
# a check fails; the reasons for platforms not built are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-backup"

OUT="$ROOT/dist"
BINARY=""
REQUESTED=""
TEMPLATE="$ROOT/krew-manifest.yaml"
WITH_IMAGE=true
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --binary) BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
    --platforms) REQUESTED=$2; shift 2 ;;
    --platforms=*) REQUESTED=${1#--platforms=}; shift ;;
    --no-image) WITH_IMAGE=false; shift ;;
    --template) TEMPLATE=$2; shift 2 ;;
    --template=*) TEMPLATE=${1#--template=}; shift ;;
    --in-place) echo "release.sh: --in-place is gone: krew-manifest.yaml is the template; the manifest is generated into --out" >&2; exit 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "release.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
MANIFEST="$OUT/krew-manifest.yaml"
# A manifest left by an earlier run must not pass for this one's.
rm -f "$MANIFEST" "$OUT/SHA256SUMS"

log() { printf '\033[1m[release]\033[0m %s\n' "$*" >&2; }
die() { echo "release.sh: $*" >&2; exit 1; }
for tool in jq sha256sum tar gzip file readelf; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install jq coreutils tar gzip file binutils)"
done

VERSION=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
  | jq -r '.packages[] | select(.name == "kubectl-backup") | .version')
[ -n "$VERSION" ] || die "cannot read the version of package kubectl-backup"
[ -f "$TEMPLATE" ] || die "the manifest template $TEMPLATE does not exist"
grep -q 'sha256' <(grep -v '^ *#' "$TEMPLATE") \
  && die "$TEMPLATE has a sha256 field: it is the template the manifest is generated from and must have none"

# krew platform -> Rust target triple.
declare -A TRIPLE=(
  [linux_amd64]=x86_64-unknown-linux-musl
  [linux_arm64]=aarch64-unknown-linux-musl
  [darwin_amd64]=x86_64-apple-darwin
  [darwin_arm64]=aarch64-apple-darwin
)
PLATFORMS=(linux_amd64 linux_arm64 darwin_amd64 darwin_arm64)
declare -A SHA=()      # platform -> sha256 of its archive
declare -A SKIPPED=()  # platform -> why it was not built
declare -A WEBHOOK=()  # linux platform -> its static backup-webhook

# The platform a binary was built for, from its header ("" if none of krew's).
platform_of() {
  case "$(file -b "$1")" in
    ELF\ 64-bit*x86-64*) echo linux_amd64 ;;
    ELF\ 64-bit*ARM\ aarch64*) echo linux_arm64 ;;
    Mach-O\ 64-bit*x86_64*) echo darwin_amd64 ;;
    Mach-O\ 64-bit*arm64*) echo darwin_arm64 ;;
    *) echo "" ;;
  esac
}

is_static() { ! readelf -lW "$1" 2>/dev/null | grep -q 'program interpreter' && ! readelf -dW "$1" 2>/dev/null | grep -q '(NEEDED)'; }

# Runs BINARY --version where this machine can; prints what it said, or "" when it cannot run it.
run_version() {
  local platform=$1 bin=$2
  case "$platform" in
    linux_"$HOST_ARCH") "$bin" --version ;;
    linux_arm64) if command -v qemu-aarch64 >/dev/null; then qemu-aarch64 "$bin" --version; fi ;;
    linux_amd64) if command -v qemu-x86_64 >/dev/null; then qemu-x86_64 "$bin" --version; fi ;;
  esac
}
case "$(uname -m)" in x86_64) HOST_ARCH=amd64 ;; aarch64) HOST_ARCH=arm64 ;; *) HOST_ARCH=$(uname -m) ;; esac

# Checks a release binary: built for PLATFORM, static on linux, and says its version when it runs here.
check_binary() {
  local platform=$1 bin=$2 got
  [ "$(platform_of "$bin")" = "$platform" ] || die "$bin is not a $platform binary: $(file -b "$bin")"
  if [[ $platform == linux_* ]]; then
    is_static "$bin" || die "$bin is not statically linked: $(file -b "$bin")"
  fi
  got=$(run_version "$platform" "$bin" 2>&1) || die "$bin --version failed: $got"
  if [ -z "$got" ]; then
    log "$platform: $(basename "$bin") not run (no way to run $platform binaries here)"
  elif [ "$got" != "$(basename "$bin") $VERSION" ]; then
    die "$bin says '$got', expected '$(basename "$bin") $VERSION'"
  fi
}

# Packs one binary for one platform; records its sha256.
pack() {
  local platform=$1 bin=$2
  local name="kubectl-backup_${VERSION}_${platform}"
  local stage="$OUT/.stage-$platform"
  rm -rf "$stage" && mkdir -p "$stage"
  install -m 0755 "$bin" "$stage/kubectl-backup"
  cp LICENSE "$stage/LICENSE"
  if [ -f README.md ]; then cp README.md "$stage/README.md"; else log "README.md is missing: $name.tar.gz has none"; fi
  # Reproducible: fixed order, owner and times (the last commit's, or SOURCE_DATE_EPOCH).
  local epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
  (cd "$stage" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
     -cf - -- * | gzip -n >"$OUT/$name.tar.gz")
  rm -rf "$stage"
  SHA[$platform]=$(sha256sum "$OUT/$name.tar.gz" | cut -d' ' -f1)
  log "$name.tar.gz  sha256 ${SHA[$platform]}"
}

# The tools of a cross build: cargo-zigbuild and zig, from PATH or install.sh's venv.
zigbuild_ready() {
  [ -x "$CACHE/venv/bin/cargo-zigbuild" ] && PATH="$CACHE/venv/bin:$PATH"
  command -v cargo-zigbuild >/dev/null && cargo-zigbuild --version >/dev/null 2>&1
}

# Builds kubectl-backup (and, for linux, backup-webhook) for PLATFORM; records why when it cannot.
build() {
  local platform=$1 triple=${TRIPLE[$1]} target_dir
  if [[ $platform == darwin_* ]] && [ -z "${SDKROOT:-}" ]; then
    SKIPPED[$platform]="no macOS SDK (set SDKROOT): linking needs its Security and CoreFoundation frameworks, which zig does not ship"; return
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    SKIPPED[$platform]="the $triple standard library is not installed (tests/env/install.sh release)"; return
  fi
  if ! zigbuild_ready; then
    SKIPPED[$platform]="cargo-zigbuild is missing (tests/env/install.sh release)"; return
  fi
  local packages=(-p kubectl-backup)
  [[ $platform == linux_* ]] && $WITH_IMAGE && packages+=(-p backup-webhook)
  log "building $platform ($triple): ${packages[*]}"
  local started=$SECONDS
  if ! cargo zigbuild --release --locked "${packages[@]}" --target "$triple"; then
    SKIPPED[$platform]="cargo zigbuild --target $triple failed (its output is above)"; return
  fi
  log "$platform built in $((SECONDS - started)) s"
  target_dir=$(cargo metadata --format-version 1 --no-deps --offline | jq -r .target_directory)
  check_binary "$platform" "$target_dir/$triple/release/kubectl-backup"
  pack "$platform" "$target_dir/$triple/release/kubectl-backup"
  if [[ $platform == linux_* ]] && $WITH_IMAGE; then
    check_binary "$platform" "$target_dir/$triple/release/backup-webhook"
    WEBHOOK[$platform]="$target_dir/$triple/release/backup-webhook"
  fi
}

if [ -n "$BINARY" ]; then
  [ -f "$BINARY" ] && [ -x "$BINARY" ] || die "--binary $BINARY is not an executable file"
  platform=$(platform_of "$BINARY")
  [ -n "$platform" ] || die "--binary $BINARY is no binary for a krew platform: $(file -b "$BINARY")"
  got=$("$BINARY" --version 2>/dev/null | head -n1 || true)
  [ "$got" = "kubectl-backup $VERSION" ] || die "$BINARY says '$got', expected 'kubectl-backup $VERSION'"
  [[ $platform == linux_* ]] && ! is_static "$BINARY" \
    && log "note: $BINARY is dynamically linked (a release builds static ones)"
  pack "$platform" "$BINARY"
  for p in "${PLATFORMS[@]}"; do
    [ "$p" = "$platform" ] || SKIPPED[$p]="not built: --binary packages one binary"
  done
  WITH_IMAGE=false
else
  wanted=("${PLATFORMS[@]}")
  if [ -n "$REQUESTED" ]; then
    IFS=, read -r -a wanted <<<"$REQUESTED"
    for p in "${wanted[@]}"; do [ -n "${TRIPLE[$p]:-}" ] || die "--platforms: unknown platform '$p' (one of ${PLATFORMS[*]})"; done
  fi
  for p in "${PLATFORMS[@]}"; do
    if [[ " ${wanted[*]} " == *" $p "* ]]; then build "$p"; else SKIPPED[$p]="not asked for (--platforms)"; fi
  done
fi

# Reasons first: a failed release says what is missing.
if [ ${#SKIPPED[@]} -gt 0 ]; then
  log "not built:"
  for p in "${PLATFORMS[@]}"; do
    [ -n "${SKIPPED[$p]:-}" ] && printf '  %s: %s\n' "$p" "${SKIPPED[$p]}" >&2
  done
fi
[ ${#SHA[@]} -gt 0 ] || die "nothing was built: no archive and no krew manifest"
if [ -n "$REQUESTED" ]; then
  IFS=, read -r -a wanted <<<"$REQUESTED"
  for p in "${wanted[@]}"; do [ -n "${SHA[$p]:-}" ] || die "$p was asked for (--platforms) but not built: no krew manifest"; done
fi

# The manifest: the template's fields with this version, and the platforms built, each with its
# archive's sha256 after its uri.
shas=""
for p in "${!SHA[@]}"; do
  [[ ${SHA[$p]} =~ ^[0-9a-f]{64}$ ]] && [[ ! ${SHA[$p]} =~ ^0+$ ]] || die "$p: '${SHA[$p]}' is no sha256"
  shas+="$p=${SHA[$p]} "
done
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
awk -v version="$VERSION" -v shas="$shas" '
  BEGIN { n = split(shas, pairs, " "); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); sha[kv[1]] = kv[2] } }
  function flush(   i, p) {
    p = os "_" arch
    if (nblock > 0 && (p in sha)) {
      for (i = 1; i <= nblock; i++) {
        print block[i]
        if (block[i] ~ /^ +uri: /) { print "      sha256: \"" sha[p] "\""; written++ }
      }
    }
    nblock = 0; os = ""; arch = ""
  }
  /^  version: / { sub(/v[^ ]*$/, "v" version) }
  /^ +uri: / { gsub(/download\/v[^\/]*\/kubectl-backup_[^_]*_/, "download/v" version "/kubectl-backup_" version "_") }
  /^    - selector:/ { flush(); inblock = 1 }
  inblock && /^ +os: / { os = $2 }
  inblock && /^ +arch: / { arch = $2 }
  inblock && /^    [^ -]|^  [^ ]|^[^ ]/ { flush(); inblock = 0 }
  inblock { block[++nblock] = $0; next }
  { print }
  END { flush(); if (written != n) { print "release.sh: wrote " written + 0 " sha256, expected " n > "/dev/stderr"; exit 1 } }
 ' "$TEMPLATE" >"$tmp" || die "generating the krew manifest failed"
# Every sha256 in it is a built archive's.
listed=$(grep -c '^      sha256: "[0-9a-f]\{64\}"$' "$tmp" || true)
[ "$listed" = "${#SHA[@]}" ] || die "the generated manifest lists $listed sha256, ${#SHA[@]} platforms were built"
for p in "${!SHA[@]}"; do
  [ "$(sha256sum "$OUT/kubectl-backup_${VERSION}_$p.tar.gz" | cut -d' ' -f1)" = "${SHA[$p]}" ] \
    || die "kubectl-backup_${VERSION}_$p.tar.gz changed after it was packed"
done
mv "$tmp" "$MANIFEST"
log "manifest: $MANIFEST (${!SHA[*]})"

if $WITH_IMAGE && [ ${#WEBHOOK[@]} -gt 0 ]; then
  archives=()
  for p in linux_amd64 linux_arm64; do
    [ -n "${WEBHOOK[$p]:-}" ] || continue
    IMAGE=${IMAGE_NAME:-ghcr.io/kubectl-backup/backup-webhook:$VERSION} \
      "$ROOT/scripts/build-image.sh" "$OUT/backup-webhook_${VERSION}_$p.docker.tar" "${WEBHOOK[$p]}" >/dev/null
    archives+=("$OUT/backup-webhook_${VERSION}_$p.docker.tar")
  done
  "$ROOT/scripts/oci-index.sh" "$OUT/backup-webhook_${VERSION}_oci.tar" "${archives[@]}" >/dev/null
  log "image: $OUT/backup-webhook_${VERSION}_oci.tar (index of ${!WEBHOOK[*]})"
fi

(cd "$OUT" && sha256sum -- kubectl-backup_"${VERSION}"_*.tar.gz $(ls backup-webhook_"${VERSION}"_* 2>/dev/null) >SHA256SUMS)
log "done: $OUT"
