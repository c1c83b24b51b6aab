#!/usr/bin/env bash
# Builds the kubectl-backup release archives for krew and fills their sha256 into the krew manifest.
#
#   scripts/release.sh                          # release build for this machine, archives in dist/
#   scripts/release.sh --out DIR                # archives and the filled manifest in DIR
#   scripts/release.sh --in-place               # fill krew-manifest.yaml itself (for the release commit)
#   scripts/release.sh --binary target/debug/kubectl-backup
#                                               # package an already-built binary for this machine
#                                               # (no build; what the tests use)
#
# For each platform krew knows (linux/darwin x amd64/arm64) it builds
# `cargo build --release -p kubectl-backup --target <triple>` when that target's standard library is
# installed (rustup target add <triple>) and the build succeeds; the host is always built. Cross
# builds also need a linker for the target (e.g. osxcross for darwin), which the development
# machines do not have: there, only the host platform is built and the rest is reported.
#
# Each archive is dist/kubectl-backup_<version>_<os>_<arch>.tar.gz with kubectl-backup, LICENSE and
# README.md at its root, as krew-manifest.yaml's `files` expect. The manifest's version and URIs are
# set to the workspace version; platforms not built keep their sha256. Exits non-zero when nothing
# was built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT="$ROOT/dist"
IN_PLACE=false
BINARY=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --in-place) IN_PLACE=true; shift ;;
    --binary) BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "release.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf '\033[1m[release]\033[0m %s\n' "$*" >&2; }

VERSION=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
  | jq -r '.packages[] | select(.name == "kubectl-backup") | .version')
[ -n "$VERSION" ] || { echo "release.sh: cannot read the version of package kubectl-backup" >&2; exit 1; }
HOST=$(rustc -vV | sed -n 's/^host: //p')

# krew platform -> Rust target triple.
declare -A TRIPLE=(
  [linux_amd64]=x86_64-unknown-linux-gnu
  [linux_arm64]=aarch64-unknown-linux-gnu
  [darwin_amd64]=x86_64-apple-darwin
  [darwin_arm64]=aarch64-apple-darwin
)
PLATFORMS=(linux_amd64 linux_arm64 darwin_amd64 darwin_arm64)
installed_targets=$(rustup target list --installed 2>/dev/null || echo "$HOST")

declare -A SHA=()
declare -A SKIPPED=()

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

host_platform=""
for p in "${PLATFORMS[@]}"; do
  [ "${TRIPLE[$p]}" = "$HOST" ] && host_platform=$p
done

if [ -n "$BINARY" ]; then
  [ -x "$BINARY" ] || { echo "release.sh: --binary $BINARY is not an executable file" >&2; exit 1; }
  [ -n "$host_platform" ] || { echo "release.sh: this machine ($HOST) is no krew platform" >&2; exit 1; }
  got=$("$BINARY" --version 2>/dev/null || true)
  [ "$got" = "kubectl-backup $VERSION" ] || {
    echo "release.sh: $BINARY says '$got', expected 'kubectl-backup $VERSION'" >&2; exit 1; }
  pack "$host_platform" "$BINARY"
  for p in "${PLATFORMS[@]}"; do
    [ "$p" = "$host_platform" ] || SKIPPED[$p]="not built: --binary packages this machine's platform only"
  done
else
  for p in "${PLATFORMS[@]}"; do
    triple=${TRIPLE[$p]}
    if [ "$triple" = "$HOST" ]; then
      log "building $p ($triple, this machine)"
      cargo build --release --locked -p kubectl-backup
      pack "$p" target/release/kubectl-backup
    elif ! grep -qx "$triple" <<<"$installed_targets"; then
      SKIPPED[$p]="the $triple standard library is not installed (rustup target add $triple; it also needs a linker for it)"
    else
      log "building $p ($triple)"
      if cargo build --release --locked -p kubectl-backup --target "$triple"; then
        pack "$p" "target/$triple/release/kubectl-backup"
      else
        SKIPPED[$p]="cargo build --target $triple failed (a linker or C toolchain for it is missing?)"
      fi
    fi
  done
fi

# The manifest: version and URIs of this release, and each built platform's sha256.
manifest="$OUT/krew-manifest.yaml"
$IN_PLACE && manifest="$ROOT/krew-manifest.yaml"
shas=""
for p in "${!SHA[@]}"; do shas+="$p=${SHA[$p]} "; done
tmp=$(mktemp)
awk -v version="$VERSION" -v shas="$shas" '
  BEGIN { n = split(shas, pairs, " "); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); sha[kv[1]] = kv[2] } }
  /^  version: / { sub(/v[^ ]*$/, "v" version) }
  /^ +- selector:/ { os = ""; arch = "" }
  /^ +os: / { os = $2 }
  /^ +arch: / { arch = $2 }
  /^ +uri: / { gsub(/download\/v[^\/]*\/kubectl-backup_[^_]*_/, "download/v" version "/kubectl-backup_" version "_") }
  /^ +sha256: / { p = os "_" arch; if (p in sha) sub(/sha256: .*/, "sha256: \"" sha[p] "\"") }
  { print }
' krew-manifest.yaml >"$tmp"
cat "$tmp" >"$manifest"
rm -f "$tmp"
log "manifest: $manifest"

if [ ${#SKIPPED[@]} -gt 0 ]; then
  log "not built (their sha256 in the manifest is unchanged):"
  for p in "${PLATFORMS[@]}"; do
    [ -n "${SKIPPED[$p]:-}" ] && printf '  %s: %s\n' "$p" "${SKIPPED[$p]}" >&2
  done
fi
[ ${#SHA[@]} -gt 0 ] || { echo "release.sh: nothing was built" >&2; exit 1; }
